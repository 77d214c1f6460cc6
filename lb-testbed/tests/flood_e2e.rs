//! A SYN flood from many sources end to end, as root, in namespaces: the
//! balancer runs with a small flow table (the flood fills it within
//! milliseconds) while a long download runs through the VIP. Spoofed SYNs
//! from 65,536 sources are sent from the client's namespace through a raw
//! socket (they stay inside the topology: no namespace routes them out).
//! The download must arrive whole (established flows are never evicted),
//! new connections during the flood must still work (a connection that
//! finds the table full goes to the server its flow hashes to), and the
//! counters must show the table was full. Then a flood at full speed from
//! a live-frames generator (xdp-trafficgen's way) while another download
//! runs: the rates are printed (figures for the report, not assertions).

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use lb_common::counters::{FLOW_INSERT_FAILED, FLOW_NEW};
use lb_testbed::{
    download::{BIG_FILE, serve_big_file, slow_download, wait_until_listed_active},
    packet::{Ipv4Packet, TCP_SYN},
    topology::{Host, Topology, VIP, agent_binary, wait_until},
};

/// Connections the balancer's flow table holds here.
const FLOW_TABLE_SIZE: &str = "1024";
/// Distinct spoofed sources (198.18.0.0/16, the benchmarking range).
const FLOOD_SOURCES: u32 = 65_536;
const FLOOD_TIME: Duration = Duration::from_secs(3);
const ETH_HEADER_LEN: usize = 14;
/// IPPROTO_RAW: the socket takes whole IPv4 packets (IP_HDRINCL).
const IPPROTO_RAW: i32 = 255;
/// New connections made while the table is full.
const CURLS_DURING_FLOOD: usize = 10;
const WAIT: Duration = Duration::from_secs(10);

/// SYNs to the VIP from every flood source, as IPv4 packets.
fn flood_packets() -> Vec<Vec<u8>> {
    (0..FLOOD_SOURCES)
        .map(|i| {
            let src = Ipv4Addr::new(198, 18, (i >> 8) as u8, i as u8);
            let frame =
                Ipv4Packet::tcp(src, 1024 + (i % 60000) as u16, VIP, 80, TCP_SYN, b"").frame();
            frame[ETH_HEADER_LEN..].to_vec()
        })
        .collect()
}

/// Floods from the client's namespace for FLOOD_TIME; (SYNs sent, seconds).
fn flood(topo: &Topology) -> std::thread::JoinHandle<(u64, f64)> {
    let ns = topo.ns(Host::Client);
    let packets = flood_packets();
    std::thread::spawn(move || {
        lb_testbed::netns::enter(&ns).unwrap();
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::RAW,
            Some(socket2::Protocol::from(IPPROTO_RAW)),
        )
        .unwrap();
        let to = SocketAddr::from((VIP, 0)).into();
        let started = Instant::now();
        let mut sent = 0u64;
        'flood: while started.elapsed() < FLOOD_TIME {
            for p in &packets {
                if socket.send_to(p, &to).is_ok() {
                    sent += 1;
                }
                if sent.is_multiple_of(4096) && started.elapsed() >= FLOOD_TIME {
                    break 'flood;
                }
            }
        }
        (sent, started.elapsed().as_secs_f64())
    })
}

#[test]
fn a_syn_flood_from_many_sources_breaks_no_established_connection() {
    let mut topo = Topology::create(&format!("lbf{}", std::process::id())).unwrap();
    let binary = agent_binary().unwrap();
    let data = serve_big_file(&topo);
    topo.start_nginx(Host::Rs1, "hello rs1").unwrap();
    topo.start_nginx(Host::Rs2, "hello rs2").unwrap();
    let path = topo.write_config("lb.toml", &topo.seed_config()).unwrap();
    topo.start_agent(&binary, &path, &["--flow-table-size", FLOW_TABLE_SIZE])
        .unwrap();
    topo.wait_for_master(Host::Lb).unwrap();

    let download = slow_download(&topo, BIG_FILE);
    wait_until_listed_active(&topo, &binary);
    let before = topo.counters(Host::Lb).unwrap();

    let flooding = flood(&topo);
    // Let the flood fill the table, then connect anew while it goes on.
    let full = wait_until(WAIT, || {
        topo.counters(Host::Lb).unwrap()[FLOW_INSERT_FAILED as usize] > 0
    });
    assert!(full.is_some(), "the flood never filled the flow table");
    let answers: Vec<String> = (0..CURLS_DURING_FLOOD)
        .map(|_| topo.curl_vip().unwrap_or_else(|e| format!("failed: {e}")))
        .collect();
    let (sent, secs) = flooding.join().unwrap();
    let body = download
        .join()
        .expect("the download broke during the flood");
    assert_eq!(body.len(), data.len(), "the download was cut short");
    assert!(body == data, "the download arrived corrupted");
    assert!(
        answers.iter().all(|a| a.starts_with("hello rs")),
        "new connections during the flood: {answers:?}"
    );
    let after = topo.counters(Host::Lb).unwrap();
    let delta = |i: u32| after[i as usize] - before[i as usize];
    eprintln!(
        "SYN flood: {sent} SYNs from {FLOOD_SOURCES} sources in {secs:.1} s ({:.0} kpps, one sending core); \
         {} new flows, {} found the {FLOW_TABLE_SIZE}-entry table full; the established download and \
         {CURLS_DURING_FLOOD} new connections all completed",
        sent as f64 / secs / 1e3,
        delta(FLOW_NEW),
        delta(FLOW_INSERT_FAILED),
    );
    assert!(delta(FLOW_INSERT_FAILED) > 0);

    // At full speed: xdp-trafficgen's way, a generator program run in
    // live-frames mode on the client's interface, a new source every frame,
    // while another download runs. The rate the balancer handled is the
    // figure; the download must still arrive whole.
    topo.attach_xdp_pass_on_switch_port(Host::Client).unwrap();
    let download = slow_download(&topo, BIG_FILE);
    // The table is still full of the first flood's SYNs: this download goes
    // untracked (by flow hash), so the client's own socket table shows it.
    let established = wait_until(WAIT, || {
        lb_testbed::netns::exec_in(
            &topo.ns(Host::Client),
            &[
                "ss",
                "-Htn",
                "state",
                "established",
                "dst",
                &format!("{VIP}:80"),
            ],
        )
        .is_ok_and(|o| !o.stdout.is_empty())
    });
    assert!(established.is_some(), "the second download did not connect");
    let before = topo.counters(Host::Lb).unwrap();
    let (frames, secs) = live_flood(&topo);
    let after = topo.counters(Host::Lb).unwrap();
    let handled = after[FLOW_NEW as usize] - before[FLOW_NEW as usize];
    let body = download
        .join()
        .expect("the download broke during the full-speed flood");
    assert!(body == data, "the download arrived corrupted or short");
    eprintln!(
        "full-speed SYN flood (live frames, 131,072 sources): {frames} SYNs generated in {secs:.2} s \
         ({:.2} Mpps), the balancer scheduled {handled} of them ({:.2} Mpps); the established \
         download completed",
        frames as f64 / secs / 1e6,
        handled as f64 / secs / 1e6,
    );
    assert!(handled > 0, "the flood never reached the balancer");
    assert!(topo.stop_agent().unwrap(), "{}", topo.agent_log());
}

/// SYNs the live-frames generator sends.
const LIVE_FLOOD_FRAMES: u32 = 2_000_000;

/// Runs the traffic generator on a SYN in live-frames mode on the client's
/// interface: (frames, seconds).
fn live_flood(topo: &Topology) -> (u64, f64) {
    let ns = topo.ns(Host::Client);
    let mut frame = Ipv4Packet::tcp(Host::Client.ip(), 1024, VIP, 80, TCP_SYN, b"");
    frame.dst_mac = topo.mac(Host::Lb).unwrap();
    frame.src_mac = topo.mac(Host::Client).unwrap();
    let frame = frame.frame();
    std::thread::spawn(move || {
        lb_testbed::netns::enter(&ns).unwrap();
        let ifindex = nix::net::if_::if_nametoindex(lb_testbed::topology::HOST_IFACE).unwrap();
        let took = lb_testbed::trafficgen::TrafficGen::load()
            .unwrap()
            .send(ifindex, &frame, LIVE_FLOOD_FRAMES)
            .unwrap();
        (u64::from(LIVE_FLOOD_FRAMES), took.as_secs_f64())
    })
    .join()
    .unwrap()
}
