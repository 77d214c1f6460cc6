//! The forwarding methods end to end, as root, in namespaces: real nginx,
//! real curl, the real agent. Each: ten sequential curls alternate exactly,
//! 200 concurrent curls all succeed, and a 10 MB download through the VIP
//! arrives intact (sha256), which exercises the MTU and segmentation paths.

use std::{fs, process::Command, time::Duration};

use lb_testbed::topology::{
    Host, RS1_IP6, RS2_IP6, TWO_ARMED_GATEWAY6, Topology, VIP, agent_binary,
};

const SEQUENTIAL: usize = 10;
const CONCURRENT: usize = 200;
const BIG_FILE: &str = "/10m.bin";
const BIG_FILE_BYTES: usize = 10 * 1024 * 1024;
const UDP_PORT: u16 = 5353;
/// Bytes per second of the download that stays open.
const SLOW_RATE: u32 = 100_000;
/// A NAT UDP service whose real servers have no listener.
const UDP_SERVICE_WITHOUT_LISTENER: &str = r#"
[[virtual_server]]
vip = "172.16.122.188"
port = 5353
protocol = "UDP"
lb_algo = "rr"
lb_kind = "NAT"

  [[virtual_server.real_server]]
  ip = "172.16.122.193"
  port = 5353

  [[virtual_server.real_server]]
  ip = "172.16.122.195"
  port = 5353
"#;

/// Writes the same pseudo-random 10 MB file for every nginx; its sha256.
fn big_file(topo: &Topology) -> String {
    let mut data = Vec::with_capacity(BIG_FILE_BYTES);
    let mut x: u32 = 0x1234_5678;
    while data.len() < BIG_FILE_BYTES {
        // xorshift: incompressible enough, reproducible.
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        data.extend_from_slice(&x.to_le_bytes());
    }
    let path = topo.files_dir().join(BIG_FILE.trim_start_matches('/'));
    fs::write(&path, &data).unwrap();
    let out = Command::new("sha256sum").arg(&path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The checks every mode must pass.
fn assert_balances(topo: &Topology, expected_sha: &str) {
    let answers: Vec<String> = (0..SEQUENTIAL).map(|_| topo.curl_vip().unwrap()).collect();
    for pair in answers.windows(2) {
        assert_ne!(
            pair[0],
            pair[1],
            "rr must alternate: {answers:?}\n{}",
            topo.agent_log()
        );
    }
    assert!(
        answers.iter().all(|a| a.starts_with("hello rs")),
        "{answers:?}"
    );
    let codes = topo.curl_vip_parallel(CONCURRENT).unwrap();
    assert_eq!(codes.len(), CONCURRENT);
    assert!(codes.iter().all(|c| c == "200"), "{codes:?}");
    assert_eq!(
        topo.download_sha256(BIG_FILE).unwrap(),
        expected_sha,
        "10 MB download through {VIP}"
    );
}

fn start(topo: &mut Topology, config: &str) {
    topo.start_nginx(Host::Rs1, "hello rs1").unwrap();
    topo.start_nginx(Host::Rs2, "hello rs2").unwrap();
    topo.start_agent_with(Host::Lb, config).unwrap();
    topo.wait_for_master(Host::Lb).unwrap();
}

#[test]
fn dr_via_realserver_dr() {
    let mut topo = Topology::create(&format!("lbm{}dr", std::process::id())).unwrap();
    let sha = big_file(&topo);
    let config = topo.seed_config();
    start(&mut topo, &config);
    assert_balances(&topo, &sha);
    // A download in progress is one ESTABLISHED connection: ActiveConn 1.
    let mut download = topo.slow_download(BIG_FILE, SLOW_RATE).unwrap();
    let binary = agent_binary().unwrap();
    let active = lb_testbed::topology::wait_until(Duration::from_secs(5), || {
        let list = topo.list(&binary).unwrap();
        list.lines()
            .filter(|l| l.contains("Route   1      1 "))
            .count()
            == 1
    });
    let _ = download.kill();
    let _ = download.wait();
    assert!(active.is_some(), "{}", topo.list(&binary).unwrap());
}

#[test]
fn tun_via_realserver_tun() {
    let mut topo = Topology::create(&format!("lbm{}tun", std::process::id())).unwrap();
    let sha = big_file(&topo);
    let vip = VIP.to_string();
    for rs in [Host::Rs1, Host::Rs2] {
        topo.realserver(rs, &["stop", "--vip", &vip]).unwrap();
        topo.realserver(
            rs,
            &["start", "--vip", &vip, "--mode", "tun", "--iface", "eth0"],
        )
        .unwrap();
    }
    // Forwarding on: the data plane's bpf_fib_lookup finds the next hop
    // (without it, it falls back to the agent's neighbour entry).
    lb_testbed::netns::exec_in(
        &topo.ns(Host::Lb),
        &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
    )
    .unwrap();
    let config = topo.config_from("tun.toml");
    start(&mut topo, &config);
    let list = topo.list(&agent_binary().unwrap()).unwrap();
    assert!(
        list.contains("  -> 172.16.122.193:80            Tunnel  1 "),
        "{list}"
    );
    assert_balances(&topo, &sha);
    // An upload: full-sized client segments do not fit the tunnel; the
    // balancer's ICMP fragmentation-needed must shrink the client's path MTU.
    let big = topo.files_dir().join(BIG_FILE.trim_start_matches('/'));
    let answer = topo.upload(&big).unwrap();
    assert!(answer.starts_with("hello rs"), "{answer:?}");
    let counters = topo.counters(Host::Lb).unwrap();
    assert!(
        counters[lb_common::counters::ICMP_FRAG_NEEDED as usize] > 0,
        "the upload must have needed ICMP fragmentation-needed: {counters:?}"
    );
}

/// The seed's first step: LVS-NAT, one-armed. The VIP is the balancer's own
/// 172.16.122.188; the client sits on another subnet on the same wire, and
/// the real servers' default route is the balancer, so their replies come
/// back through it. Here with port mapping 80 -> 8080 as well.
#[test]
fn nat_one_armed_with_port_mapping() {
    let mut topo = Topology::create(&format!("lbm{}nat", std::process::id())).unwrap();
    let sha = big_file(&topo);
    topo.make_nat_one_armed().unwrap();
    let config = topo
        .config_from("seed-nat.toml")
        .replace("port = 80\n  weight", "port = 8080\n  weight")
        + UDP_SERVICE_WITHOUT_LISTENER;
    assert_eq!(config.matches("port = 8080").count(), 2, "{config}");
    start_plain(&mut topo, &config);
    let list = topo.list(&agent_binary().unwrap()).unwrap();
    assert!(list.contains("TCP  172.16.122.188:80 rr\n"), "{list}");
    assert!(
        list.contains("  -> 172.16.122.193:8080          Masq    1 "),
        "{list}"
    );
    assert_balances(&topo, &sha);
    // Nothing listens on the real servers' UDP port: their ICMP port
    // unreachable must reach the client translated (from and about the VIP),
    // or its connected socket would never hear of it.
    let answer = topo
        .udp_exchange(
            lb_testbed::topology::LB_IP,
            UDP_PORT,
            Duration::from_secs(3),
        )
        .unwrap();
    assert_eq!(
        answer.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionRefused)
    );
    let counters = topo.counters(Host::Lb).unwrap();
    assert!(
        counters[lb_common::counters::NAT_ICMP as usize] > 0,
        "{counters:?}"
    );
}

/// Two-armed LVS-NAT: clients outside (eth1), real servers inside (eth0),
/// frames redirected between the two through the tx_ports devmap; with
/// port mapping 80 -> 8080. NAT66 beside it, the same way.
#[test]
fn nat_two_armed_with_port_mapping() {
    let mut topo = Topology::create(&format!("lbm{}nat2", std::process::id())).unwrap();
    let sha = big_file(&topo);
    topo.make_nat_two_armed().unwrap();
    let nat66: String = [RS1_IP6, RS2_IP6]
        .iter()
        .map(|ip| format!("  [[virtual_server.real_server]]\n  ip = \"{ip}\"\n  port = 8080\n"))
        .collect();
    let config = topo
        .config_from("seed-nat.toml")
        .replace("vip = \"172.16.122.188\"", "vip = \"192.168.200.1\"")
        .replace("port = 80\n  weight", "port = 8080\n  weight")
        + &format!(
            "\n[[virtual_server]]\nvip = \"{TWO_ARMED_GATEWAY6}\"\nport = 80\nprotocol = \"TCP\"\n\
             lb_algo = \"rr\"\nlb_kind = \"NAT\"\n\n{nat66}"
        );
    start_plain(&mut topo, &config);
    let log = topo.agent_log();
    assert!(
        log.contains("attached to eth1") && log.contains("attached to eth0"),
        "{log}"
    );
    let list = topo.list(&agent_binary().unwrap()).unwrap();
    assert!(list.contains("TCP  192.168.200.1:80 rr\n"), "{list}");
    assert_balances(&topo, &sha);
    let counters = topo.counters(Host::Lb).unwrap();
    assert!(
        counters[lb_common::counters::REDIRECT as usize] > 0,
        "{counters:?}"
    );
    // NAT66 between the same two interfaces: curl -6 alternates.
    let answers: Vec<String> = (0..SEQUENTIAL)
        .map(|_| {
            topo.curl_on(Host::Client, &format!("[{TWO_ARMED_GATEWAY6}]"))
                .unwrap()
        })
        .collect();
    assert!(
        answers.iter().all(|a| a.starts_with("hello rs")),
        "{answers:?}\n{}",
        topo.agent_log()
    );
    for pair in answers.windows(2) {
        assert_ne!(pair[0], pair[1], "rr must alternate over IPv6: {answers:?}");
    }
    let after = topo.counters(Host::Lb).unwrap();
    let replies = lb_common::counters::NAT_REPLY as usize;
    assert!(after[replies] > counters[replies], "{after:?}");
}

/// Like `start`, for configs without a vrrp_instance (the VIP is fixed).
fn start_plain(topo: &mut Topology, config: &str) {
    topo.start_nginx(Host::Rs1, "hello rs1").unwrap();
    topo.start_nginx(Host::Rs2, "hello rs2").unwrap();
    let path = topo.write_config("lb.toml", config).unwrap();
    topo.start_agent(&agent_binary().unwrap(), &path, &[])
        .unwrap();
}
