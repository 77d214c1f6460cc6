//! The real XDP program through BPF_PROG_TEST_RUN (needs root): exact output
//! bytes and verdicts, Katran-tester style. LVS-TUN: the exact IPIP header, DF and VLAN, the MTU and ICMP
//! fragmentation-needed; rs_decap on the real server undoing it. The same
//! over IPv6: IPv6-in-IPv6 (next header 41), ICMPv6 Packet Too Big.

use std::net::{IpAddr, Ipv4Addr};

use lb_common::counters;
use lb_testbed::{packet::*, progtest::*};
use lb_userspace::planning::plan::PlannedService;

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
    let mut t = ProgTest::with_service(seed_service_in(lb_common::ForwardKind::Tun)).unwrap();
    let input = Ipv4Packet::tcp(CLIENT_IP, 40000, VIP, PORT, TCP_SYN, b"").frame();
    let (verdict, out) = t.run(&input).unwrap();
    assert_eq!(verdict, XDP_TX);
    let inner = &input[14..];
    let mut expected = Vec::new();
    expected.extend_from_slice(&RS1_MAC);
    expected.extend_from_slice(&LB_MAC);
    expected.extend_from_slice(&[0x08, 0x00]);
    expected.extend_from_slice(&expected_outer(inner, RS1_IP, false));
    expected.extend_from_slice(inner);
    assert_eq!(out, expected);
    // The outer header verifies on its own.
    assert_eq!(csum(&out[14..34], 0), 0);
    // The inner packet is untouched, its checksums still valid.
    assert_eq!(&out[34..], inner);
}

#[test]
fn tun_keeps_df_and_the_vlan_tag() {
    let mut t = ProgTest::with_service(seed_service_in(lb_common::ForwardKind::Tun)).unwrap();
    let mut p = Ipv4Packet::tcp(CLIENT_IP, 40001, VIP, PORT, TCP_SYN, b"");
    p.vlan = Some(7);
    p.frags = 0x4000; // DF
    let input = p.frame();
    let (verdict, out) = t.run(&input).unwrap();
    assert_eq!(verdict, XDP_TX);
    assert_eq!(&out[12..18], &input[12..18], "802.1Q tag kept");
    let inner = &input[18..];
    assert_eq!(&out[18..38], expected_outer(inner, RS1_IP, true).as_slice());
    assert_eq!(&out[38..], inner);
}

#[test]
fn tun_never_sends_more_than_the_mtu() {
    let mut t = ProgTest::with_service(seed_service_in(lb_common::ForwardKind::Tun)).unwrap();
    // 1500 bytes of IP: + 20 outer = 1520 > MTU 1500.
    let big = Ipv4Packet::tcp(CLIENT_IP, 40002, VIP, PORT, TCP_ACK, &[0u8; 1460]).frame();
    let (verdict, _) = t.run(&big).unwrap();
    assert_eq!(verdict, XDP_DROP);
    assert_eq!(
        t.counters().unwrap()[counters::DROP_TUN_TOO_BIG as usize],
        1
    );
    // 1480 bytes of IP fit exactly.
    let fits = Ipv4Packet::tcp(CLIENT_IP, 40003, VIP, PORT, TCP_ACK, &[0u8; 1440]).frame();
    assert_eq!(t.run(&fits).unwrap().0, XDP_TX);
}

/// rs_decap loaded with `vips` in its maps.
fn rs_decap(vips: &[IpAddr]) -> aya::Ebpf {
    use lb_common::rs_decap_names::{RS_VIPS, RS_VIPS6};
    let mut ebpf = aya::Ebpf::load(lb_userspace::realserver::RS_DECAP_OBJECT).unwrap();
    let prog: &mut aya::programs::Xdp = ebpf.program_mut("rs_decap").unwrap().try_into().unwrap();
    prog.load().unwrap();
    for vip in vips {
        match vip {
            IpAddr::V4(v4) => {
                let mut map: aya::maps::HashMap<_, lb_common::Ipv4Octets, u8> =
                    aya::maps::HashMap::try_from(ebpf.map_mut(RS_VIPS).unwrap()).unwrap();
                map.insert(v4.octets(), 1, 0).unwrap();
            }
            IpAddr::V6(v6) => {
                let mut map: aya::maps::HashMap<_, lb_common::Ipv6Octets, u8> =
                    aya::maps::HashMap::try_from(ebpf.map_mut(RS_VIPS6).unwrap()).unwrap();
                map.insert(v6.octets(), 1, 0).unwrap();
            }
        }
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
    let mut lb = ProgTest::with_service(seed_service_in(lb_common::ForwardKind::Tun)).unwrap();
    let client_frame = Ipv4Packet::tcp(CLIENT_IP, 40010, VIP, PORT, TCP_SYN, b"").frame();
    let (_, tunnelled) = lb.run(&client_frame).unwrap();

    let mut rs = rs_decap(&[VIP.into()]);
    let (verdict, out) = run_decap(&mut rs, &tunnelled);
    assert_eq!(verdict, XDP_PASS);
    // The frame as the kernel sees it: the tunnel's Ethernet header, then
    // the client's packet exactly as it left the client.
    assert_eq!(&out[..14], &tunnelled[..14]);
    assert_eq!(&out[14..], &client_frame[14..]);
}

#[test]
fn rs_decap_leaves_everything_else_alone() {
    let mut lb = ProgTest::with_service(seed_service_in(lb_common::ForwardKind::Tun)).unwrap();
    let (_, tunnelled) = lb
        .run(&Ipv4Packet::tcp(CLIENT_IP, 40011, VIP, PORT, TCP_SYN, b"").frame())
        .unwrap();
    // Not one of this server's VIPs.
    let mut rs = rs_decap(&[Ipv4Addr::new(10, 9, 9, 9).into()]);
    assert_eq!(
        run_decap(&mut rs, &tunnelled),
        (XDP_PASS, tunnelled.clone())
    );
    // Plain traffic.
    let plain = Ipv4Packet::tcp(CLIENT_IP, 40012, VIP, PORT, TCP_SYN, b"").frame();
    assert_eq!(run_decap(&mut rs, &plain), (XDP_PASS, plain.clone()));
    assert_eq!(
        run_decap(&mut rs, &arp_request([2; 6], CLIENT_IP, VIP)).1,
        arp_request([2; 6], CLIENT_IP, VIP)
    );
    // Truncated IPIP: untouched.
    assert_eq!(
        run_decap(&mut rs, &tunnelled[..40]),
        (XDP_PASS, tunnelled[..40].to_vec())
    );
}

#[test]
fn tun_too_big_with_df_answers_icmp_frag_needed() {
    let mut t = ProgTest::with_service(seed_service_in(lb_common::ForwardKind::Tun)).unwrap();
    let mut big = Ipv4Packet::tcp(CLIENT_IP, 40004, VIP, PORT, TCP_ACK, &[7u8; 1460]);
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
    ip.extend_from_slice(&CLIENT_IP.octets());
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

fn tun6() -> ProgTest {
    ProgTest::with_service(PlannedService {
        forward: lb_common::ForwardKind::Tun,
        ..seed_service6()
    })
    .unwrap()
}

/// The outer IPv6 header TUN must push in front of `inner` (an IPv6
/// packet), built here independently of the data plane.
fn expected_outer6(inner: &[u8], dst: std::net::Ipv6Addr) -> Vec<u8> {
    let mut ip = vec![0u8; IPV6_HEADER_LEN];
    // Version, traffic class and flow label as the client sent them.
    ip[0..4].copy_from_slice(&inner[0..4]);
    ip[4..6].copy_from_slice(&(inner.len() as u16).to_be_bytes());
    ip[6] = 41; // IPv6-in-IPv6
    ip[7] = 64;
    ip[8..24].copy_from_slice(&LB_IP6.octets());
    ip[24..40].copy_from_slice(&dst.octets());
    ip
}

#[test]
fn tun6_pushes_an_exact_ipv6_header_and_keeps_the_vlan_tag() {
    let mut t = tun6();
    for (i, vlan) in [None, Some(7)].into_iter().enumerate() {
        let mut p = Ipv6Packet::tcp(CLIENT_IP6, 40100 + i as u16, VIP6, PORT, TCP_SYN, b"");
        p.vlan = vlan;
        let mut input = p.frame();
        let l3 = input.len() - IPV6_HEADER_LEN - p.l4.len();
        // Traffic class 0xab, flow label 0x12345: carried to the outer header.
        input[l3..l3 + 4].copy_from_slice(&[0x6a, 0xb1, 0x23, 0x45]);
        let (verdict, out) = t.run(&input).unwrap();
        assert_eq!(verdict, XDP_TX, "vlan {vlan:?}");
        let inner = &input[l3..];
        // rr: the first flow goes to the first server, the second to the second.
        let (mac, ip) = if i == 0 {
            (RS1_MAC, RS1_IP6)
        } else {
            (RS2_MAC, RS2_IP6)
        };
        let mut expected = Vec::new();
        expected.extend_from_slice(&mac);
        expected.extend_from_slice(&LB_MAC);
        expected.extend_from_slice(&input[12..l3]);
        expected.extend_from_slice(&expected_outer6(inner, ip));
        expected.extend_from_slice(inner);
        assert_eq!(out, expected, "vlan {vlan:?}");
    }
    let c = t.counters().unwrap();
    assert_eq!(c[counters::FLOW_NEW as usize], 2);
    assert_eq!(c[counters::PASS_IPV6_UNSUPPORTED_FORWARD as usize], 0);
}

#[test]
fn tun6_too_big_answers_icmpv6_packet_too_big() {
    let mut t = tun6();
    // 40 + 20 + 1401 = 1461 bytes of IPv6: + 40 outer = 1501 > MTU 1500.
    let input = Ipv6Packet::tcp(CLIENT_IP6, 40101, VIP6, PORT, TCP_ACK, &[7u8; 1401]).frame();
    let (verdict, out) = t.run(&input).unwrap();
    assert_eq!(verdict, XDP_TX);
    // Built here independently: Ethernet back to the sender, IPv6 VIP ->
    // client, ICMPv6 2/0 announcing 1500 - 40, quoting the IPv6 header and
    // 8 bytes.
    let mut icmp = vec![2u8, 0, 0, 0];
    icmp.extend_from_slice(&(LB_MTU - 40).to_be_bytes());
    icmp.extend_from_slice(&input[14..14 + IPV6_HEADER_LEN + 8]);
    let check = l4_checksum6(VIP6, CLIENT_IP6, IPPROTO_ICMPV6, &icmp);
    icmp[2..4].copy_from_slice(&check.to_be_bytes());
    let mut expected = Vec::new();
    expected.extend_from_slice(&input[6..12]);
    expected.extend_from_slice(&input[0..6]);
    expected.extend_from_slice(&[0x86, 0xdd]);
    expected.extend_from_slice(&[0x60, 0, 0, 0]);
    expected.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    expected.extend_from_slice(&[IPPROTO_ICMPV6, 64]);
    expected.extend_from_slice(&VIP6.octets());
    expected.extend_from_slice(&CLIENT_IP6.octets());
    expected.extend_from_slice(&icmp);
    assert_eq!(out, expected);
    let c = t.counters().unwrap();

    assert_eq!(c[counters::DROP_TUN_TOO_BIG as usize], 1);
    // One byte less fits exactly.
    let fits = Ipv6Packet::tcp(CLIENT_IP6, 40102, VIP6, PORT, TCP_ACK, &[7u8; 1400]).frame();
    let (verdict, out) = t.run(&fits).unwrap();
    assert_eq!(verdict, XDP_TX);
    assert_eq!(out.len(), fits.len() + IPV6_HEADER_LEN);
    assert_eq!(out.len() - 14, LB_MTU as usize);
}

#[test]
fn rs_decap_undoes_exactly_what_tun6_did_and_nothing_else() {
    let mut lb = tun6();
    let client_frame = Ipv6Packet::tcp(CLIENT_IP6, 40110, VIP6, PORT, TCP_SYN, b"").frame();
    let (_, tunnelled) = lb.run(&client_frame).unwrap();

    let mut rs = rs_decap(&[VIP6.into()]);
    let (verdict, out) = run_decap(&mut rs, &tunnelled);
    assert_eq!(verdict, XDP_PASS);
    assert_eq!(&out[..14], &tunnelled[..14]);
    assert_eq!(&out[14..], &client_frame[14..]);

    // An IPv4 VIP with the same server does not open the IPv6 door; plain
    // IPv6 and a truncated tunnel pass untouched.
    let mut other = rs_decap(&[VIP.into()]);
    assert_eq!(
        run_decap(&mut other, &tunnelled),
        (XDP_PASS, tunnelled.clone())
    );
    assert_eq!(
        run_decap(&mut rs, &client_frame),
        (XDP_PASS, client_frame.clone())
    );
    assert_eq!(
        run_decap(&mut rs, &tunnelled[..60]),
        (XDP_PASS, tunnelled[..60].to_vec())
    );
}
