//! The real XDP program through BPF_PROG_TEST_RUN (needs root): exact output
//! bytes and verdicts, Katran-tester style.

use std::net::Ipv4Addr;

use lb_common::counters;
use lb_testbed::{packet::*, progtest::*};

fn syn(sport: u16) -> Ipv4Packet {
    Ipv4Packet::tcp(CLIENT, sport, VIP, PORT, TCP_SYN, b"")
}

/// The destination MAC the program chose for `frame`, asserting XDP_TX.
fn forwarded_to(t: &mut ProgTest, frame: &[u8]) -> [u8; 6] {
    let (verdict, out) = t.run(frame).unwrap();
    assert_eq!(verdict, XDP_TX, "expected XDP_TX");
    out[0..6].try_into().unwrap()
}

fn assert_passes_unmodified(t: &mut ProgTest, what: &str, frame: &[u8]) {
    let (verdict, out) = t.run(frame).unwrap();
    assert_eq!(verdict, XDP_PASS, "{what}: verdict");
    assert_eq!(out, frame, "{what}: the frame must pass unmodified");
}

#[test]
fn dr_rewrites_exactly_the_two_macs() {
    let mut t = ProgTest::seed().unwrap();
    let input = Ipv4Packet::tcp(CLIENT, 40000, VIP, PORT, TCP_SYN, b"").frame();
    let (verdict, out) = t.run(&input).unwrap();
    assert_eq!(verdict, XDP_TX);
    let mut expected = input.clone();
    expected[0..6].copy_from_slice(&RS1_MAC);
    expected[6..12].copy_from_slice(&LB_MAC);
    assert_eq!(out, expected);
    let c = t.counters().unwrap();
    assert_eq!(c[counters::FLOW_NEW as usize], 1);
    assert_eq!(c[counters::TX as usize], 1);
}

#[test]
fn dr_keeps_the_vlan_tag() {
    let mut t = ProgTest::seed().unwrap();
    let mut p = syn(40001);
    p.vlan = Some(42);
    let input = p.frame();
    let (verdict, out) = t.run(&input).unwrap();
    assert_eq!(verdict, XDP_TX);
    let mut expected = input.clone();
    expected[0..6].copy_from_slice(&RS1_MAC);
    expected[6..12].copy_from_slice(&LB_MAC);
    assert_eq!(out, expected);
}

#[test]
fn every_packet_of_a_flow_goes_to_the_same_server() {
    let mut t = ProgTest::seed().unwrap();
    let first = forwarded_to(&mut t, &syn(40000).frame());
    // Other flows in between move the rr cursor...
    forwarded_to(&mut t, &syn(40001).frame());
    forwarded_to(&mut t, &syn(40002).frame());
    // ...but the first connection's packets stay where they started.
    for payload in [&b""[..], b"GET / HTTP/1.1\r\n\r\n", b"more"] {
        let p = Ipv4Packet::tcp(CLIENT, 40000, VIP, PORT, TCP_ACK, payload);
        assert_eq!(forwarded_to(&mut t, &p.frame()), first);
    }
    let c = t.counters().unwrap();
    assert_eq!(c[counters::FLOW_HIT as usize], 3);
    assert_eq!(c[counters::FLOW_NEW as usize], 3);
}

#[test]
fn round_robin_alternates_over_new_flows() {
    let mut t = ProgTest::seed().unwrap();
    let chosen: Vec<[u8; 6]> = (0..10)
        .map(|i| forwarded_to(&mut t, &syn(41000 + i).frame()))
        .collect();
    let expected: Vec<[u8; 6]> = (0..10)
        .map(|i| if i % 2 == 0 { RS1_MAC } else { RS2_MAC })
        .collect();
    assert_eq!(chosen, expected);
}

#[test]
fn weight_zero_server_gets_no_new_flows() {
    let mut t = ProgTest::with_service(seed_service([0, 1])).unwrap();
    for i in 0..6 {
        assert_eq!(forwarded_to(&mut t, &syn(42000 + i).frame()), RS2_MAC);
    }
}

#[test]
fn no_server_with_weight_drops_and_counts() {
    let mut t = ProgTest::with_service(seed_service([0, 0])).unwrap();
    let (verdict, _) = t.run(&syn(43000).frame()).unwrap();
    assert_eq!(verdict, XDP_DROP);
    assert_eq!(t.counters().unwrap()[counters::DROP_NO_REAL as usize], 1);
}

#[test]
fn udp_to_the_vip() {
    // The seed's service is TCP: UDP to the same port is not for us.
    let mut t = ProgTest::seed().unwrap();
    let p = Ipv4Packet::udp(CLIENT, 5000, VIP, PORT, b"x");
    assert_passes_unmodified(&mut t, "UDP to a TCP-only VIP port", &p.frame());
    let mut svc = seed_service([1, 1]);
    svc.protocol = lb_userspace::config::Protocol::Udp;
    let mut t = ProgTest::with_service(svc).unwrap();
    assert_eq!(forwarded_to(&mut t, &p.frame()), RS1_MAC);
}

#[test]
fn non_service_traffic_passes_unmodified() {
    let mut t = ProgTest::seed().unwrap();
    let other = Ipv4Addr::new(172, 16, 122, 188);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "ARP who-has VIP",
            arp_request([2, 0, 0, 0, 0, 2], CLIENT, VIP),
        ),
        (
            "VRRP advert",
            Ipv4Packet::new(
                other,
                Ipv4Addr::new(224, 0, 0, 18),
                IPPROTO_VRRP,
                vec![0x21, 51, 100, 1, 1, 1, 0, 0],
            )
            .frame(),
        ),
        (
            "ICMP echo to VIP",
            Ipv4Packet::new(
                CLIENT,
                VIP,
                IPPROTO_ICMP,
                vec![8, 0, 0xf7, 0xff, 0, 0, 0, 0],
            )
            .frame(),
        ),
        ("IPv6 TCP", ipv6_tcp_frame()),
        (
            "SSH to the VIP",
            Ipv4Packet::tcp(CLIENT, 40000, VIP, 22, TCP_SYN, b"").frame(),
        ),
        (
            "HTTP to another address",
            Ipv4Packet::tcp(CLIENT, 40000, other, PORT, TCP_SYN, b"").frame(),
        ),
    ];
    for (what, frame) in &cases {
        assert_passes_unmodified(&mut t, what, frame);
    }
    let c = t.counters().unwrap();
    assert_eq!(c[counters::PASS_NOT_IPV4 as usize], 2);
    assert_eq!(c[counters::PASS_NOT_TCP_UDP as usize], 2);
    assert_eq!(c[counters::PASS_NO_SERVICE as usize], 2);
    assert_eq!(c[counters::TX as usize], 0);
}

#[test]
fn truncated_frames_pass_unmodified() {
    let mut t = ProgTest::seed().unwrap();
    let full = syn(44000).frame();
    // Every cut shorter than Ethernet + IPv4 + TCP headers. (The kernel's
    // test run needs at least an Ethernet header.)
    for len in 14..full.len() {
        assert_passes_unmodified(&mut t, &format!("cut at {len}"), &full[..len]);
    }
    assert_eq!(t.counters().unwrap()[counters::TX as usize], 0);
}

#[test]
fn malformed_headers_pass_unmodified() {
    let mut t = ProgTest::seed().unwrap();
    let base = syn(45000).frame();
    let ihl = |v: u8| {
        let mut f = base.clone();
        f[14] = 0x40 | v;
        f
    };
    let mut bad_version = base.clone();
    bad_version[14] = 0x65;
    let mut long_tot_len = base.clone();
    long_tot_len[16..18].copy_from_slice(&2000u16.to_be_bytes());
    let doff = |words: u8| {
        let mut f = base.clone();
        f[14 + 20 + 12] = words << 4;
        f
    };
    let cases = [
        ("IHL 4", ihl(4)),
        ("IHL 0", ihl(0)),
        ("IHL 15 beyond the packet", ihl(15)),
        ("IP version 6 in an IPv4 frame", bad_version),
        ("total length beyond the frame", long_tot_len),
        ("TCP data offset 4", doff(4)),
        ("TCP data offset beyond the packet", doff(15)),
    ];
    for (what, frame) in &cases {
        assert_passes_unmodified(&mut t, what, frame);
    }
    assert_eq!(
        t.counters().unwrap()[counters::PASS_MALFORMED as usize],
        cases.len() as u64
    );
}

#[test]
fn ip_options_and_fragments_pass_unmodified() {
    let mut t = ProgTest::seed().unwrap();
    let mut with_options = syn(46000);
    with_options.ip_options = vec![1, 1, 1, 0]; // NOP NOP NOP EOL
    assert_passes_unmodified(&mut t, "IP options", &with_options.frame());
    let mut first_fragment = syn(46001);
    first_fragment.frags = IP_MF;
    assert_passes_unmodified(&mut t, "first fragment", &first_fragment.frame());
    let mut last_fragment = syn(46002);
    last_fragment.frags = 100;
    assert_passes_unmodified(&mut t, "last fragment", &last_fragment.frame());
    let c = t.counters().unwrap();
    assert_eq!(c[counters::PASS_IP_OPTIONS as usize], 1);
    assert_eq!(c[counters::PASS_FRAGMENT as usize], 2);
}

#[test]
fn flows_of_a_removed_server_move_to_a_live_one() {
    // IPVS expire_nodest_conn: after a failed health check removes RS1, the
    // next packet of a connection pinned to it is scheduled anew.
    let mut t = ProgTest::seed().unwrap();
    let ack = |sport| Ipv4Packet::tcp(CLIENT, sport, VIP, PORT, TCP_ACK, b"x").frame();
    assert_eq!(forwarded_to(&mut t, &ack(47000)), RS1_MAC);
    assert_eq!(forwarded_to(&mut t, &ack(47001)), RS2_MAC);
    t.set_health(1, false).unwrap();
    assert_eq!(
        forwarded_to(&mut t, &ack(47000)),
        RS2_MAC,
        "moved off the dead server"
    );
    assert_eq!(
        forwarded_to(&mut t, &ack(47001)),
        RS2_MAC,
        "healthy flow undisturbed"
    );
    // New flows only go to RS2 now.
    for sport in 47002..47006 {
        assert_eq!(forwarded_to(&mut t, &ack(sport)), RS2_MAC);
    }
    assert_eq!(t.counters().unwrap()[counters::FLOW_STALE as usize], 1);
    // RS1 back: the rescheduled flow stays where it is now; new flows use both.
    t.set_health(1, true).unwrap();
    assert_eq!(forwarded_to(&mut t, &ack(47000)), RS2_MAC);
    let new: Vec<[u8; 6]> = (47010..47014)
        .map(|p| forwarded_to(&mut t, &ack(p)))
        .collect();
    assert!(new.contains(&RS1_MAC) && new.contains(&RS2_MAC), "{new:?}");
}

#[test]
fn a_standby_service_is_passed_to_the_kernel() {
    // Not VRRP master for the VIP: the packets go to the kernel untouched.
    let mut t = ProgTest::seed().unwrap();
    t.set_standby(true).unwrap();
    assert_passes_unmodified(&mut t, "SYN to a standby VIP", &syn(48000).frame());
    assert_eq!(t.counters().unwrap()[counters::PASS_STANDBY as usize], 1);
    // Master again: balanced (rr: the first server).
    t.set_standby(false).unwrap();
    assert_eq!(forwarded_to(&mut t, &syn(48001).frame()), RS1_MAC);
}

/// The seed's service in TUN mode.
fn tun_service() -> lb_userspace::planning::plan::PlannedService {
    let mut svc = seed_service([1, 1]);
    svc.forward = lb_common::ForwardKind::Tun;
    svc
}

/// The outer header TUN must push, built here independently of the data
/// plane (checksum by packet::csum).
fn expected_outer(inner: &[u8], dst: Ipv4Addr, df: bool) -> Vec<u8> {
    let mut ip = vec![0u8; 20];
    ip[0] = 0x45;
    ip[1] = inner[1];
    ip[2..4].copy_from_slice(&((inner.len() + 20) as u16).to_be_bytes());
    if df {
        ip[6] = 0x40;
    }
    ip[8] = 64;
    ip[9] = 4; // IPIP
    ip[12..16].copy_from_slice(&LB_IP.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let check = csum(&ip, 0);
    ip[10..12].copy_from_slice(&check.to_be_bytes());
    ip
}

#[test]
fn tun_pushes_an_exact_ipip_header() {
    let mut t = ProgTest::with_service(tun_service()).unwrap();
    let input = Ipv4Packet::tcp(CLIENT, 40000, VIP, PORT, TCP_SYN, b"").frame();
    let (verdict, out) = t.run(&input).unwrap();
    assert_eq!(verdict, XDP_TX);
    let inner = &input[14..];
    let mut expected = Vec::new();
    expected.extend_from_slice(&RS1_MAC);
    expected.extend_from_slice(&LB_MAC);
    expected.extend_from_slice(&[0x08, 0x00]);
    expected.extend_from_slice(&expected_outer(inner, RS1, false));
    expected.extend_from_slice(inner);
    assert_eq!(out, expected);
    // The outer header verifies on its own.
    assert_eq!(csum(&out[14..34], 0), 0);
    // The inner packet is untouched, its checksums still valid.
    assert_eq!(&out[34..], inner);
}

#[test]
fn tun_keeps_df_and_the_vlan_tag() {
    let mut t = ProgTest::with_service(tun_service()).unwrap();
    let mut p = Ipv4Packet::tcp(CLIENT, 40001, VIP, PORT, TCP_SYN, b"");
    p.vlan = Some(7);
    p.frags = 0x4000; // DF
    let input = p.frame();
    let (verdict, out) = t.run(&input).unwrap();
    assert_eq!(verdict, XDP_TX);
    assert_eq!(&out[12..18], &input[12..18], "802.1Q tag kept");
    let inner = &input[18..];
    assert_eq!(&out[18..38], expected_outer(inner, RS1, true).as_slice());
    assert_eq!(&out[38..], inner);
}

#[test]
fn tun_never_sends_more_than_the_mtu() {
    let mut t = ProgTest::with_service(tun_service()).unwrap();
    // 1500 bytes of IP: + 20 outer = 1520 > MTU 1500.
    let big = Ipv4Packet::tcp(CLIENT, 40002, VIP, PORT, TCP_ACK, &[0u8; 1460]).frame();
    let (verdict, _) = t.run(&big).unwrap();
    assert_eq!(verdict, XDP_DROP);
    assert_eq!(
        t.counters().unwrap()[counters::DROP_TUN_TOO_BIG as usize],
        1
    );
    // 1480 bytes of IP fit exactly.
    let fits = Ipv4Packet::tcp(CLIENT, 40003, VIP, PORT, TCP_ACK, &[0u8; 1440]).frame();
    assert_eq!(t.run(&fits).unwrap().0, XDP_TX);
}

/// rs_decap loaded with `vips` in its map.
fn rs_decap(vips: &[Ipv4Addr]) -> aya::Ebpf {
    let mut ebpf = aya::Ebpf::load(lb_userspace::realserver::RS_DECAP_OBJECT).unwrap();
    let prog: &mut aya::programs::Xdp = ebpf.program_mut("rs_decap").unwrap().try_into().unwrap();
    prog.load().unwrap();
    let mut map: aya::maps::HashMap<_, lb_common::Ipv4Octets, u8> =
        aya::maps::HashMap::try_from(ebpf.map_mut("RS_VIPS").unwrap()).unwrap();
    for vip in vips {
        map.insert(vip.octets(), 1, 0).unwrap();
    }
    ebpf
}

fn run_decap(ebpf: &mut aya::Ebpf, frame: &[u8]) -> (u32, Vec<u8>) {
    use aya::programs::{TestRun, TestRunOptions};
    let prog: &mut aya::programs::Xdp = ebpf.program_mut("rs_decap").unwrap().try_into().unwrap();
    let mut out = vec![0u8; frame.len() + 64];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::default()
        })
        .unwrap();
    out.truncate(r.data_size_out as usize);
    (r.return_value, out)
}

#[test]
fn rs_decap_undoes_exactly_what_tun_did() {
    let mut lb = ProgTest::with_service(tun_service()).unwrap();
    let client_frame = Ipv4Packet::tcp(CLIENT, 40010, VIP, PORT, TCP_SYN, b"").frame();
    let (_, tunnelled) = lb.run(&client_frame).unwrap();

    let mut rs = rs_decap(&[VIP]);
    let (verdict, out) = run_decap(&mut rs, &tunnelled);
    assert_eq!(verdict, XDP_PASS);
    // The frame as the kernel sees it: the tunnel's Ethernet header, then
    // the client's packet exactly as it left the client.
    assert_eq!(&out[..14], &tunnelled[..14]);
    assert_eq!(&out[14..], &client_frame[14..]);
}

#[test]
fn rs_decap_leaves_everything_else_alone() {
    let mut lb = ProgTest::with_service(tun_service()).unwrap();
    let (_, tunnelled) = lb
        .run(&Ipv4Packet::tcp(CLIENT, 40011, VIP, PORT, TCP_SYN, b"").frame())
        .unwrap();
    // Not one of this server's VIPs.
    let mut rs = rs_decap(&[Ipv4Addr::new(10, 9, 9, 9)]);
    assert_eq!(
        run_decap(&mut rs, &tunnelled),
        (XDP_PASS, tunnelled.clone())
    );
    // Plain traffic.
    let plain = Ipv4Packet::tcp(CLIENT, 40012, VIP, PORT, TCP_SYN, b"").frame();
    assert_eq!(run_decap(&mut rs, &plain), (XDP_PASS, plain.clone()));
    assert_eq!(
        run_decap(&mut rs, &arp_request([2; 6], CLIENT, VIP)).1,
        arp_request([2; 6], CLIENT, VIP)
    );
    // Truncated IPIP: untouched.
    assert_eq!(
        run_decap(&mut rs, &tunnelled[..40]),
        (XDP_PASS, tunnelled[..40].to_vec())
    );
}

/// The seed's first step (ipvsadm -m): NAT, here with port mapping 80 -> `rs_port`.
fn nat_service(
    rs_port: u16,
    protocol: lb_userspace::config::Protocol,
) -> lb_userspace::planning::plan::PlannedService {
    let mut svc = seed_service([1, 1]);
    svc.forward = lb_common::ForwardKind::Nat;
    svc.protocol = protocol;
    for r in svc.reals.iter_mut() {
        r.port = rs_port;
    }
    svc
}

/// `p` with the given MACs, rendered.
fn with_macs(mut p: Ipv4Packet, dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    p.dst_mac = dst;
    p.src_mac = src;
    p.frame()
}

/// The client's MAC in frames built by Ipv4Packet.
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

#[test]
fn nat_tcp_forward_and_reply_with_port_mapping() {
    use lb_userspace::config::Protocol;
    let mut t = ProgTest::with_service(nat_service(8080, Protocol::Tcp)).unwrap();
    // Client -> VIP:80 leaves as client -> RS1:8080, checksums recomputed
    // from scratch by the test's own builder.
    let input = Ipv4Packet::tcp(CLIENT, 40000, VIP, 80, TCP_SYN, b"");
    let (verdict, out) = t.run(&input.frame()).unwrap();
    assert_eq!(verdict, XDP_TX);
    let expected = with_macs(
        Ipv4Packet::tcp(CLIENT, 40000, RS1, 8080, TCP_SYN, b""),
        RS1_MAC,
        LB_MAC,
    );
    assert_eq!(out, expected);
    assert_eq!(csum(&out[14..34], 0), 0);
    assert_eq!(l4_checksum(CLIENT, RS1, IPPROTO_TCP, &out[34..]), 0);

    // RS1:8080 -> client comes back as VIP:80 -> client, to the client's MAC.
    let reply = with_macs(
        Ipv4Packet::tcp(RS1, 8080, CLIENT, 40000, TCP_SYN | TCP_ACK, b"hi"),
        LB_MAC,
        RS1_MAC,
    );
    let (verdict, out) = t.run(&reply).unwrap();
    assert_eq!(verdict, XDP_TX);
    let expected = with_macs(
        Ipv4Packet::tcp(VIP, 80, CLIENT, 40000, TCP_SYN | TCP_ACK, b"hi"),
        CLIENT_MAC,
        LB_MAC,
    );
    assert_eq!(out, expected);
    assert_eq!(t.counters().unwrap()[counters::NAT_REPLY as usize], 1);

    // Later packets of the flow keep their server and mapping.
    let ack = Ipv4Packet::tcp(CLIENT, 40000, VIP, 80, TCP_ACK, b"GET /");
    let (_, out) = t.run(&ack.frame()).unwrap();
    assert_eq!(
        out,
        with_macs(
            Ipv4Packet::tcp(CLIENT, 40000, RS1, 8080, TCP_ACK, b"GET /"),
            RS1_MAC,
            LB_MAC
        )
    );
}

#[test]
fn nat_udp_forward_and_reply() {
    use lb_userspace::config::Protocol;
    let mut t = ProgTest::with_service(nat_service(5353, Protocol::Udp)).unwrap();
    let (verdict, out) = t
        .run(&Ipv4Packet::udp(CLIENT, 5000, VIP, 80, b"query").frame())
        .unwrap();
    assert_eq!(verdict, XDP_TX);
    assert_eq!(
        out,
        with_macs(
            Ipv4Packet::udp(CLIENT, 5000, RS1, 5353, b"query"),
            RS1_MAC,
            LB_MAC
        )
    );
    assert_eq!(l4_checksum(CLIENT, RS1, IPPROTO_UDP, &out[34..]), 0);
    let reply = with_macs(
        Ipv4Packet::udp(RS1, 5353, CLIENT, 5000, b"answer"),
        LB_MAC,
        RS1_MAC,
    );
    let (verdict, out) = t.run(&reply).unwrap();
    assert_eq!(verdict, XDP_TX);
    assert_eq!(
        out,
        with_macs(
            Ipv4Packet::udp(VIP, 80, CLIENT, 5000, b"answer"),
            CLIENT_MAC,
            LB_MAC
        )
    );
}

#[test]
fn nat_udp_without_checksum_keeps_none() {
    use lb_userspace::config::Protocol;
    let mut t = ProgTest::with_service(nat_service(80, Protocol::Udp)).unwrap();
    let mut p = Ipv4Packet::udp(CLIENT, 5001, VIP, 80, b"x");
    p.l4[6..8].copy_from_slice(&[0, 0]);
    let (verdict, out) = t.run(&p.frame()).unwrap();
    assert_eq!(verdict, XDP_TX);
    assert_eq!(
        &out[34 + 6..34 + 8],
        &[0, 0],
        "a zero UDP checksum means none and stays zero"
    );
    assert_eq!(&out[30..34], &RS1.octets());
    assert_eq!(csum(&out[14..34], 0), 0);
}

#[test]
fn traffic_that_is_no_nat_reply_passes() {
    use lb_userspace::config::Protocol;
    let mut t = ProgTest::with_service(nat_service(8080, Protocol::Tcp)).unwrap();
    // RS1 talking to the client on a connection the balancer never saw.
    let stray = with_macs(
        Ipv4Packet::tcp(RS1, 8080, CLIENT, 41000, TCP_ACK, b""),
        LB_MAC,
        RS1_MAC,
    );
    assert_passes_unmodified(&mut t, "unknown reply", &stray);
    assert_eq!(t.counters().unwrap()[counters::NAT_REPLY as usize], 0);
}

#[test]
fn tun_too_big_with_df_answers_icmp_frag_needed() {
    let mut t = ProgTest::with_service(tun_service()).unwrap();
    let mut big = Ipv4Packet::tcp(CLIENT, 40004, VIP, PORT, TCP_ACK, &[7u8; 1460]);
    big.frags = 0x4000; // DF
    let input = big.frame();
    let (verdict, out) = t.run(&input).unwrap();
    assert_eq!(verdict, XDP_TX);
    // Built here independently: Ethernet back to the sender, IPv4 VIP ->
    // client, ICMP 3/4 with next-hop MTU 1500 - 20, quoting 28 bytes.
    let mut icmp = vec![3u8, 4, 0, 0, 0, 0];
    icmp.extend_from_slice(&((LB_MTU - 20) as u16).to_be_bytes());
    icmp.extend_from_slice(&input[14..14 + 28]);
    let icmp_check = csum(&icmp, 0);
    icmp[2..4].copy_from_slice(&icmp_check.to_be_bytes());
    let mut ip = vec![0x45, 0, 0, 56, 0, 0, 0, 0, 64, 1, 0, 0];
    ip.extend_from_slice(&VIP.octets());
    ip.extend_from_slice(&CLIENT.octets());
    let ip_check = csum(&ip, 0);
    ip[10..12].copy_from_slice(&ip_check.to_be_bytes());
    let mut expected = Vec::new();
    expected.extend_from_slice(&input[6..12]);
    expected.extend_from_slice(&input[0..6]);
    expected.extend_from_slice(&[0x08, 0x00]);
    expected.extend_from_slice(&ip);
    expected.extend_from_slice(&icmp);
    assert_eq!(out, expected);
    let c = t.counters().unwrap();
    assert_eq!(c[counters::ICMP_FRAG_NEEDED as usize], 1);
}

#[test]
fn nat_translates_icmp_errors_about_its_flows() {
    use lb_userspace::config::Protocol;
    let mut t = ProgTest::with_service(nat_service(5353, Protocol::Udp)).unwrap();
    let client_packet = Ipv4Packet::udp(CLIENT, 5000, VIP, 80, b"query").frame();
    let (_, at_rs) = t.run(&client_packet).unwrap();

    // RS1 has nothing on 5353: port unreachable, quoting what it received.
    let icmp_from_rs = |quoted: &[u8]| {
        let mut icmp = vec![3u8, 3, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(quoted);
        let check = csum(&icmp, 0);
        icmp[2..4].copy_from_slice(&check.to_be_bytes());
        icmp
    };
    let error = Ipv4Packet::new(RS1, CLIENT, IPPROTO_ICMP, icmp_from_rs(&at_rs[14..14 + 28]));
    let (verdict, out) = t.run(&with_macs(error, LB_MAC, RS1_MAC)).unwrap();
    assert_eq!(verdict, XDP_TX);

    // What the client must get: from the VIP, quoting its own packet to
    // VIP:80 (the quoted UDP checksum stays the one the real server saw).
    let mut quoted = client_packet[14..14 + 28].to_vec();
    quoted[26..28].copy_from_slice(&at_rs[14 + 26..14 + 28]);
    let expected = with_macs(
        Ipv4Packet::new(VIP, CLIENT, IPPROTO_ICMP, icmp_from_rs(&quoted)),
        CLIENT_MAC,
        LB_MAC,
    );
    assert_eq!(out, expected);
    assert_eq!(csum(&out[34..], 0), 0, "ICMP checksum");
    assert_eq!(t.counters().unwrap()[counters::NAT_ICMP as usize], 1);

    // An ICMP error about a flow the balancer never saw passes untouched.
    let mut stray_quote = at_rs[14..14 + 28].to_vec();
    stray_quote[20..22].copy_from_slice(&6000u16.to_be_bytes());
    let stray = with_macs(
        Ipv4Packet::new(RS1, CLIENT, IPPROTO_ICMP, icmp_from_rs(&stray_quote)),
        LB_MAC,
        RS1_MAC,
    );
    assert_passes_unmodified(&mut t, "ICMP about an unknown flow", &stray);
}

#[test]
fn tcp_states_follow_ipvs_input_only_table() {
    use lb_common::conntrack::*;
    let mut t = ProgTest::seed().unwrap();
    let key = lb_common::FlowKey {
        src: CLIENT.octets(),
        dst: VIP.octets(),
        sport: 49000u16.to_be(),
        dport: PORT.to_be(),
        proto: IPPROTO_TCP,
        _pad: [0; 3],
    };
    let state = |t: &ProgTest| t.dp.flow_entry(&key).unwrap().unwrap().state;
    let send = |t: &mut ProgTest, flags: u8| {
        let (verdict, _) = t
            .run(&Ipv4Packet::tcp(CLIENT, 49000, VIP, PORT, flags, b"").frame())
            .unwrap();
        assert_eq!(verdict, XDP_TX);
    };
    // (ActiveConn, InActConn) over both servers follow the flow's state.
    let conns = |t: &ProgTest| {
        let (a1, i1) = t.dp.real_conns(1);
        let (a2, i2) = t.dp.real_conns(2);
        (a1 + a2, i1 + i2)
    };
    send(&mut t, TCP_SYN);
    assert_eq!(state(&t), S_SYN_RECV);
    assert_eq!(conns(&t), (0, 1));
    send(&mut t, TCP_ACK);
    assert_eq!(state(&t), S_ESTABLISHED);
    assert_eq!(conns(&t), (1, 0));
    send(&mut t, TCP_ACK | 0x01); // FIN|ACK
    assert_eq!(state(&t), S_FIN_WAIT);
    assert_eq!(conns(&t), (0, 1));
    // The sweep leaves it until FIN_WAIT's timeout (tcpfin) has passed.
    let timeouts = lb_userspace::dataplane::ConnTimeouts {
        tcpfin: 1,
        ..Default::default()
    };
    assert_eq!(t.dp.sweep_expired(timeouts).unwrap(), 0);
    assert_eq!(conns(&t), (0, 1));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(t.dp.sweep_expired(timeouts).unwrap(), 1);
    assert_eq!(t.dp.flow_entry(&key).unwrap(), None);
    assert_eq!(conns(&t), (0, 0));
    // A new connection on the same 5-tuple; RST closes it (inactive).
    send(&mut t, TCP_SYN);
    send(&mut t, TCP_ACK);
    send(&mut t, 0x04); // RST
    assert_eq!(state(&t), S_CLOSE);
    assert_eq!(conns(&t), (0, 1));
    // UDP flows are in the UDP state.
    let mut u = ProgTest::with_service({
        let mut s = seed_service([1, 1]);
        s.protocol = lb_userspace::config::Protocol::Udp;
        s
    })
    .unwrap();
    u.run(&Ipv4Packet::udp(CLIENT, 5000, VIP, PORT, b"x").frame())
        .unwrap();
    let ukey = lb_common::FlowKey {
        sport: 5000u16.to_be(),
        proto: IPPROTO_UDP,
        ..key
    };
    assert_eq!(u.dp.flow_entry(&ukey).unwrap().unwrap().state, S_UDP);
}

/// A wrr service over as many real servers as `weights`.
fn wrr_service(weights: &[u32]) -> lb_userspace::planning::plan::PlannedService {
    let mut svc = seed_service([1, 1]);
    svc.scheduler = lb_common::SchedulerKind::Wrr;
    svc.reals = weights
        .iter()
        .enumerate()
        .map(|(i, w)| lb_userspace::planning::plan::PlannedReal {
            real_id: i as u32 + 1,
            rs_index: Some(i),
            ip: Ipv4Addr::new(172, 16, 122, 193 + i as u8),
            port: PORT,
            weight: *w,
        })
        .collect();
    svc
}

/// Which real server (index) each of `n` new flows went to.
fn new_flow_choices(t: &mut ProgTest, n: u16, servers: usize) -> Vec<usize> {
    (0..n)
        .map(|i| {
            let mac = forwarded_to(t, &syn(50000 + i).frame());
            (0..servers)
                .find(|&s| real_mac(s) == mac)
                .expect("a known server")
        })
        .collect()
}

#[test]
fn wrr_matches_the_ipvs_model_choice_for_choice() {
    use lb_testbed::sched_model::WrrModel;
    for weights in [
        &[3u32, 1][..],
        &[5, 2, 2],
        &[4, 0, 2],
        &[2, 4, 6],
        &[1, 1, 1],
        &[7, 3, 5, 1],
    ] {
        let mut t = ProgTest::with_service(wrr_service(weights)).unwrap();
        let got = new_flow_choices(&mut t, 60, weights.len());
        let mut model = WrrModel::new(weights);
        let expected: Vec<usize> = (0..60).map(|_| model.pick().unwrap()).collect();
        assert_eq!(got, expected, "weights {weights:?}");
    }
}

#[test]
fn wrr_three_to_one_over_400_flows_is_300_to_100() {
    let mut t = ProgTest::with_service(wrr_service(&[3, 1])).unwrap();
    let got = new_flow_choices(&mut t, 400, 2);
    assert_eq!(got.iter().filter(|&&s| s == 0).count(), 300);
    assert_eq!(got.iter().filter(|&&s| s == 1).count(), 100);
}

#[test]
fn wrr_with_every_weight_zero_drops() {
    let mut t = ProgTest::with_service(wrr_service(&[0, 0])).unwrap();
    assert_eq!(t.run(&syn(51000).frame()).unwrap().0, XDP_DROP);
}

#[test]
fn the_sweep_reads_a_table_in_batches_and_removes_every_expired_flow() {
    use lb_common::conntrack::S_CLOSE;
    // More flows than one BPF_MAP_LOOKUP_BATCH call returns.
    const FLOWS: u32 = 10_000;
    let mut t = ProgTest::seed().unwrap();
    let key = filler_flow_key;
    // CLOSE, last seen at boot: expired (CLOSE lives 10 s).
    let stale = seed_flow_entry(S_CLOSE, 0);
    t.dp.insert_flows((0..FLOWS).map(|i| (key(i), stale)))
        .unwrap();
    // One live flow stays.
    t.run(&syn(40_000).frame()).unwrap();
    let removed =
        t.dp.sweep_expired(lb_userspace::dataplane::ConnTimeouts::default())
            .unwrap();
    assert_eq!(removed, FLOWS as usize);
    assert!(t.dp.flow_entry(&key(0)).unwrap().is_none());
    assert!(t.dp.flow_entry(&key(FLOWS - 1)).unwrap().is_none());
    assert!(
        t.dp.flow_entry(&tcp_flow_key(CLIENT, 40_000))
            .unwrap()
            .is_some()
    );
}

/// Connections the flow table holds in the pressure tests.
const SMALL_TABLE: u32 = 8;

/// A data plane whose SMALL_TABLE flow table is full of established-to-be
/// connections from ports 50000...
fn full_flow_table() -> ProgTest {
    let opts = lb_userspace::dataplane::LoadOptions {
        flow_table_size: SMALL_TABLE,
        ..Default::default()
    };
    let mut t = ProgTest::with_service_and(seed_service([1, 1]), &opts).unwrap();
    for i in 0..SMALL_TABLE as u16 {
        forwarded_to(&mut t, &syn(50000 + i).frame());
    }
    t
}

/// The data plane's clock (bpf_ktime_get_coarse_ns) as user space reads it.
fn coarse_now() -> std::time::Duration {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE).unwrap();
    std::time::Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32)
}

/// A CPU whose insert found the table full tries none until the coarse
/// clock's next tick (a failed insert is a new flow's costliest step, and
/// only the agent's sweep frees room): a slot freed meanwhile stays free
/// for that tick, then the next new connection takes it.
#[test]
fn a_cpu_that_found_the_table_full_tries_no_insert_until_the_next_tick() {
    // Fresh tables until both packets fall within one tick.
    const ATTEMPTS: usize = 10;
    // Longer than the backoff (1 ms) plus a tick at any HZ.
    const PAST_THE_BACKOFF: std::time::Duration = std::time::Duration::from_millis(30);
    let tracked = |t: &ProgTest, sport| {
        t.dp.flow_entry(&tcp_flow_key(CLIENT, sport))
            .unwrap()
            .is_some()
    };
    // The backoff is per CPU: every packet runs on this one.
    on_one_core(|_| {
        for _ in 0..ATTEMPTS {
            let mut t = full_flow_table();
            let tick = coarse_now();
            forwarded_to(&mut t, &syn(51000).frame());
            assert!(!tracked(&t, 51000), "the table was full");
            assert!(t.dp.remove_flow(&tcp_flow_key(CLIENT, 50000)).unwrap());
            forwarded_to(&mut t, &syn(52000).frame());
            if coarse_now() != tick {
                continue;
            }
            assert!(!tracked(&t, 52000), "an insert was tried within the tick");
            let c = t.counters().unwrap();
            assert_eq!(c[counters::FLOW_INSERT_FAILED as usize], 2);
            std::thread::sleep(PAST_THE_BACKOFF);
            forwarded_to(&mut t, &syn(53000).frame());
            assert!(tracked(&t, 53000), "the freed slot stayed unused");
            return Ok(());
        }
        panic!("the coarse clock ticked within each of {ATTEMPTS} attempts");
    })
    .unwrap();
}

/// A full flow table (a SYN flood, or more connections than configured):
/// established flows keep their servers (nothing is evicted), and a
/// connection that finds no room is forwarded untracked to the server its
/// flow hashes to, every packet alike, even with rr (which would otherwise
/// alternate per packet). The counters say so.
#[test]
fn a_full_flow_table_evicts_nothing_and_keeps_untracked_connections_together() {
    let opts = lb_userspace::dataplane::LoadOptions {
        flow_table_size: SMALL_TABLE,
        ..Default::default()
    };
    let mut t = ProgTest::with_service_and(seed_service([1, 1]), &opts).unwrap();
    let established: Vec<(u16, [u8; 6])> = (0..SMALL_TABLE as u16)
        .map(|i| (50000 + i, forwarded_to(&mut t, &syn(50000 + i).frame())))
        .collect();
    assert_eq!(
        t.counters().unwrap()[counters::FLOW_INSERT_FAILED as usize],
        0
    );
    // Full now. Untracked connections: each packet goes where the first did.
    let mut seen = std::collections::HashSet::new();
    for sport in 51000..51032u16 {
        let first = forwarded_to(&mut t, &syn(sport).frame());
        seen.insert(first);
        for _ in 0..4 {
            let ack = Ipv4Packet::tcp(CLIENT, sport, VIP, PORT, TCP_ACK, b"x").frame();
            assert_eq!(
                forwarded_to(&mut t, &ack),
                first,
                "untracked flow {sport} moved"
            );
        }
    }
    assert_eq!(seen.len(), 2, "the flow hash spreads over both servers");
    // The established flows kept their servers.
    for (sport, mac) in &established {
        let ack = Ipv4Packet::tcp(CLIENT, *sport, VIP, PORT, TCP_ACK, b"x").frame();
        assert_eq!(
            forwarded_to(&mut t, &ack),
            *mac,
            "established flow {sport} moved"
        );
    }
    let c = t.counters().unwrap();
    assert_eq!(c[counters::FLOW_INSERT_FAILED as usize], 32 * 5);
    // A quiesced server gets no untracked connection either.
    t.set_weight(0, 0).unwrap();
    for sport in 52000..52016u16 {
        assert_eq!(forwarded_to(&mut t, &syn(sport).frame()), RS2_MAC);
    }
}
