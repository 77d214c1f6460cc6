//! The real XDP program through BPF_PROG_TEST_RUN (needs root): exact output
//! bytes and verdicts, Katran-tester style. LVS-NAT: forward and reply rewritten with port mapping, UDP with and
//! without checksum, ICMP errors about NAT'ed flows translated back; the
//! same over IPv6 (NAT66, ICMPv6 errors).

use std::net::Ipv6Addr;

use lb_common::counters;
use lb_testbed::{packet::*, progtest::*};

/// `p` with the given MACs, rendered.
fn with_macs(mut p: Ipv4Packet, dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    p.dst_mac = dst;
    p.src_mac = src;
    p.frame()
}

#[test]
fn nat_tcp_forward_and_reply_with_port_mapping() {
    use lb_userspace::config::Protocol;
    let mut t = ProgTest::with_service(nat_service(8080, Protocol::Tcp)).unwrap();
    // Client -> VIP:80 leaves as client -> RS1_IP:8080, checksums recomputed
    // from scratch by the test's own builder.
    let input = Ipv4Packet::tcp(CLIENT_IP, 40000, VIP, 80, TCP_SYN, b"");
    let (verdict, out) = t.run(&input.frame()).unwrap();
    assert_eq!(verdict, XDP_TX);
    let expected = with_macs(
        Ipv4Packet::tcp(CLIENT_IP, 40000, RS1_IP, 8080, TCP_SYN, b""),
        RS1_MAC,
        LB_MAC,
    );
    assert_eq!(out, expected);
    assert_eq!(csum(&out[14..34], 0), 0);
    assert_eq!(l4_checksum(CLIENT_IP, RS1_IP, IPPROTO_TCP, &out[34..]), 0);

    // RS1_IP:8080 -> client comes back as VIP:80 -> client, to the client's MAC.
    let reply = with_macs(
        Ipv4Packet::tcp(RS1_IP, 8080, CLIENT_IP, 40000, TCP_SYN | TCP_ACK, b"hi"),
        LB_MAC,
        RS1_MAC,
    );
    let (verdict, out) = t.run(&reply).unwrap();
    assert_eq!(verdict, XDP_TX);
    let expected = with_macs(
        Ipv4Packet::tcp(VIP, 80, CLIENT_IP, 40000, TCP_SYN | TCP_ACK, b"hi"),
        CLIENT_MAC,
        LB_MAC,
    );
    assert_eq!(out, expected);
    assert_eq!(t.counters().unwrap()[counters::NAT_REPLY as usize], 1);

    // Later packets of the flow keep their server and mapping.
    let ack = Ipv4Packet::tcp(CLIENT_IP, 40000, VIP, 80, TCP_ACK, b"GET /");
    let (_, out) = t.run(&ack.frame()).unwrap();
    assert_eq!(
        out,
        with_macs(
            Ipv4Packet::tcp(CLIENT_IP, 40000, RS1_IP, 8080, TCP_ACK, b"GET /"),
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
        .run(&Ipv4Packet::udp(CLIENT_IP, 5000, VIP, 80, b"query").frame())
        .unwrap();
    assert_eq!(verdict, XDP_TX);
    assert_eq!(
        out,
        with_macs(
            Ipv4Packet::udp(CLIENT_IP, 5000, RS1_IP, 5353, b"query"),
            RS1_MAC,
            LB_MAC
        )
    );
    assert_eq!(l4_checksum(CLIENT_IP, RS1_IP, IPPROTO_UDP, &out[34..]), 0);
    let reply = with_macs(
        Ipv4Packet::udp(RS1_IP, 5353, CLIENT_IP, 5000, b"answer"),
        LB_MAC,
        RS1_MAC,
    );
    let (verdict, out) = t.run(&reply).unwrap();
    assert_eq!(verdict, XDP_TX);
    assert_eq!(
        out,
        with_macs(
            Ipv4Packet::udp(VIP, 80, CLIENT_IP, 5000, b"answer"),
            CLIENT_MAC,
            LB_MAC
        )
    );
}

#[test]
fn nat_udp_without_checksum_keeps_none() {
    use lb_userspace::config::Protocol;
    let mut t = ProgTest::with_service(nat_service(80, Protocol::Udp)).unwrap();
    let mut p = Ipv4Packet::udp(CLIENT_IP, 5001, VIP, 80, b"x");
    p.l4[6..8].copy_from_slice(&[0, 0]);
    let (verdict, out) = t.run(&p.frame()).unwrap();
    assert_eq!(verdict, XDP_TX);
    assert_eq!(
        &out[34 + 6..34 + 8],
        &[0, 0],
        "a zero UDP checksum means none and stays zero"
    );
    assert_eq!(&out[30..34], &RS1_IP.octets());
    assert_eq!(csum(&out[14..34], 0), 0);
}

#[test]
fn traffic_that_is_no_nat_reply_passes() {
    use lb_userspace::config::Protocol;
    let mut t = ProgTest::with_service(nat_service(8080, Protocol::Tcp)).unwrap();
    // RS1_IP talking to the client on a connection the balancer never saw.
    let stray = with_macs(
        Ipv4Packet::tcp(RS1_IP, 8080, CLIENT_IP, 41000, TCP_ACK, b""),
        LB_MAC,
        RS1_MAC,
    );
    assert_passes_unmodified(&mut t, "unknown reply", &stray);
    assert_eq!(t.counters().unwrap()[counters::NAT_REPLY as usize], 0);
}

#[test]
fn nat_translates_icmp_errors_about_its_flows() {
    use lb_userspace::config::Protocol;
    let mut t = ProgTest::with_service(nat_service(5353, Protocol::Udp)).unwrap();
    let client_packet = Ipv4Packet::udp(CLIENT_IP, 5000, VIP, 80, b"query").frame();
    let (_, at_rs) = t.run(&client_packet).unwrap();

    // RS1_IP has nothing on 5353: port unreachable, quoting what it received.
    let icmp_from_rs = |quoted: &[u8]| {
        let mut icmp = vec![3u8, 3, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(quoted);
        let check = csum(&icmp, 0);
        icmp[2..4].copy_from_slice(&check.to_be_bytes());
        icmp
    };
    let error = Ipv4Packet::new(
        RS1_IP,
        CLIENT_IP,
        IPPROTO_ICMP,
        icmp_from_rs(&at_rs[14..14 + 28]),
    );
    let (verdict, out) = t.run(&with_macs(error, LB_MAC, RS1_MAC)).unwrap();
    assert_eq!(verdict, XDP_TX);

    // What the client must get: from the VIP, quoting its own packet to
    // VIP:80 (the quoted UDP checksum stays the one the real server saw).
    let mut quoted = client_packet[14..14 + 28].to_vec();
    quoted[26..28].copy_from_slice(&at_rs[14 + 26..14 + 28]);
    let expected = with_macs(
        Ipv4Packet::new(VIP, CLIENT_IP, IPPROTO_ICMP, icmp_from_rs(&quoted)),
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
        Ipv4Packet::new(RS1_IP, CLIENT_IP, IPPROTO_ICMP, icmp_from_rs(&stray_quote)),
        LB_MAC,
        RS1_MAC,
    );
    assert_passes_unmodified(&mut t, "ICMP about an unknown flow", &stray);
}

/// NAT66: `p` with the given MACs, rendered.
fn with_macs6(mut p: Ipv6Packet, dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    p.dst_mac = dst;
    p.src_mac = src;
    p.frame()
}

/// Offset of the TCP/UDP header in an untagged IPv6 frame.
const L4_OFF6: usize = 14 + IPV6_HEADER_LEN;

#[test]
fn nat66_tcp_forward_and_reply_with_port_mapping() {
    use lb_userspace::config::Protocol;
    let mut t = ProgTest::with_service(nat_service6(8080, Protocol::Tcp)).unwrap();
    // Client -> [VIP6]:80 leaves as client -> [RS1_IP6]:8080; the expected
    // frame's checksum is computed from scratch by the test's builder.
    let input = Ipv6Packet::tcp(CLIENT_IP6, 40000, VIP6, 80, TCP_SYN, b"");
    let (verdict, out) = t.run(&input.frame()).unwrap();
    assert_eq!(verdict, XDP_TX);
    let expected = with_macs6(
        Ipv6Packet::tcp(CLIENT_IP6, 40000, RS1_IP6, 8080, TCP_SYN, b""),
        RS1_MAC,
        LB_MAC,
    );
    assert_eq!(out, expected);
    assert_eq!(
        l4_checksum6(CLIENT_IP6, RS1_IP6, IPPROTO_TCP, &out[L4_OFF6..]),
        0
    );

    // [RS1_IP6]:8080 -> client comes back as [VIP6]:80 -> client, to the
    // client's MAC.
    let reply = Ipv6Packet::tcp(RS1_IP6, 8080, CLIENT_IP6, 40000, TCP_SYN | TCP_ACK, b"hi");
    let (verdict, out) = t.run(&with_macs6(reply, LB_MAC, RS1_MAC)).unwrap();
    assert_eq!(verdict, XDP_TX);
    let expected = with_macs6(
        Ipv6Packet::tcp(VIP6, 80, CLIENT_IP6, 40000, TCP_SYN | TCP_ACK, b"hi"),
        CLIENT_MAC,
        LB_MAC,
    );
    assert_eq!(out, expected);

    // Later packets keep their server and mapping; rr gives the next
    // connection the other server.
    let ack = Ipv6Packet::tcp(CLIENT_IP6, 40000, VIP6, 80, TCP_ACK, b"GET /");
    let (_, out) = t.run(&ack.frame()).unwrap();
    let expected = Ipv6Packet::tcp(CLIENT_IP6, 40000, RS1_IP6, 8080, TCP_ACK, b"GET /");
    assert_eq!(out, with_macs6(expected, RS1_MAC, LB_MAC));
    let other = Ipv6Packet::tcp(CLIENT_IP6, 40001, VIP6, 80, TCP_SYN, b"");
    let (_, out) = t.run(&other.frame()).unwrap();
    let expected = Ipv6Packet::tcp(CLIENT_IP6, 40001, RS2_IP6, 8080, TCP_SYN, b"");
    assert_eq!(out, with_macs6(expected, RS2_MAC, LB_MAC));

    let c = t.counters().unwrap();
    assert_eq!(c[counters::NAT_REPLY as usize], 1);
    assert_eq!(c[counters::FLOW_NEW as usize], 2);
    assert_eq!(c[counters::TX as usize], 3, "the replies are NAT_REPLY's");
    assert_eq!(t.dp.real_conns(1), (1, 0), "ESTABLISHED after the ACK");
}

#[test]
fn nat66_udp_forward_and_reply() {
    use lb_userspace::config::Protocol;
    let mut t = ProgTest::with_service(nat_service6(5353, Protocol::Udp)).unwrap();
    let input = Ipv6Packet::udp(CLIENT_IP6, 5000, VIP6, 80, b"query");
    let (verdict, out) = t.run(&input.frame()).unwrap();
    assert_eq!(verdict, XDP_TX);
    let expected = Ipv6Packet::udp(CLIENT_IP6, 5000, RS1_IP6, 5353, b"query");
    assert_eq!(out, with_macs6(expected, RS1_MAC, LB_MAC));
    let reply = Ipv6Packet::udp(RS1_IP6, 5353, CLIENT_IP6, 5000, b"answer");
    let (verdict, out) = t.run(&with_macs6(reply, LB_MAC, RS1_MAC)).unwrap();
    assert_eq!(verdict, XDP_TX);
    let expected = Ipv6Packet::udp(VIP6, 80, CLIENT_IP6, 5000, b"answer");
    assert_eq!(out, with_macs6(expected, CLIENT_MAC, LB_MAC));
}

/// ICMPv6 Packet Too Big (type 2, code 0, the MTU) quoting `quoted`,
/// checksummed for `src` -> `dst`.
fn packet_too_big6(src: Ipv6Addr, dst: Ipv6Addr, mtu: u32, quoted: &[u8]) -> Ipv6Packet {
    let mut icmp = vec![2u8, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(quoted);
    let check = l4_checksum6(src, dst, IPPROTO_ICMPV6, &icmp);
    icmp[2..4].copy_from_slice(&check.to_be_bytes());
    Ipv6Packet::new(src, dst, IPPROTO_ICMPV6, icmp)
}

#[test]
fn nat66_translates_icmpv6_errors_about_its_flows() {
    use lb_userspace::config::Protocol;
    let mut t = ProgTest::with_service(nat_service6(8080, Protocol::Tcp)).unwrap();
    let client_packet = Ipv6Packet::tcp(CLIENT_IP6, 40000, VIP6, 80, TCP_ACK, b"data").frame();
    let (_, at_rs) = t.run(&client_packet).unwrap();
    const MTU: u32 = 1280;

    // RS1 says its path is too small, quoting what it received; the client
    // must get it from the VIP, quoting its own packet to [VIP6]:80 (the
    // quoted TCP checksum stays the one the real server saw).
    let error = packet_too_big6(RS1_IP6, CLIENT_IP6, MTU, &at_rs[14..]);
    let (verdict, out) = t.run(&with_macs6(error, LB_MAC, RS1_MAC)).unwrap();
    assert_eq!(verdict, XDP_TX);
    let mut quoted = client_packet[14..].to_vec();
    let check_off = IPV6_HEADER_LEN + 16;
    quoted[check_off..check_off + 2].copy_from_slice(&at_rs[14 + check_off..14 + check_off + 2]);
    let expected = packet_too_big6(VIP6, CLIENT_IP6, MTU, &quoted);
    assert_eq!(out, with_macs6(expected, CLIENT_MAC, LB_MAC));
    assert_eq!(
        l4_checksum6(VIP6, CLIENT_IP6, IPPROTO_ICMPV6, &out[L4_OFF6..]),
        0
    );

    // From a router between (not the real server): only the quote changes.
    let router: Ipv6Addr = "2001:db8:122::1".parse().unwrap();
    let error = packet_too_big6(router, CLIENT_IP6, MTU, &at_rs[14..]);
    let (verdict, out) = t.run(&with_macs6(error, LB_MAC, RS1_MAC)).unwrap();
    assert_eq!(verdict, XDP_TX);
    let expected = packet_too_big6(router, CLIENT_IP6, MTU, &quoted);
    assert_eq!(out, with_macs6(expected, CLIENT_MAC, LB_MAC));
    assert_eq!(t.counters().unwrap()[counters::NAT_ICMP as usize], 2);

    // About a flow the balancer never saw: untouched.
    let mut stray_quote = at_rs[14..].to_vec();
    stray_quote[IPV6_HEADER_LEN..IPV6_HEADER_LEN + 2].copy_from_slice(&6000u16.to_be_bytes());
    let stray = packet_too_big6(RS1_IP6, CLIENT_IP6, MTU, &stray_quote);
    assert_passes_unmodified(
        &mut t,
        "ICMPv6 about an unknown flow",
        &with_macs6(stray, LB_MAC, RS1_MAC),
    );
}

#[test]
fn with_nat66_what_is_no_reply_passes_counted() {
    use lb_userspace::config::Protocol;
    let mut t = ProgTest::with_service(nat_service6(8080, Protocol::Tcp)).unwrap();
    let stray = Ipv6Packet::tcp(RS1_IP6, 8080, CLIENT_IP6, 41000, TCP_ACK, b"");
    assert_passes_unmodified(
        &mut t,
        "unknown IPv6 reply",
        &with_macs6(stray, LB_MAC, RS1_MAC),
    );
    let ns = neighbour_solicitation(CLIENT_IP6, RS1_IP6);
    assert_passes_unmodified(&mut t, "neighbour solicitation", &ns);
    let c = t.counters().unwrap();
    assert_eq!(c[counters::PASS_NO_SERVICE as usize], 1);
    assert_eq!(c[counters::PASS_IPV6_NOT_TCP_UDP as usize], 1);
    assert_eq!(c[counters::NAT_REPLY as usize], 0);
    // IPv4 NAT replies are not looked for: no IPv4 NAT service.
    let v4 = Ipv4Packet::tcp(RS1_IP, 8080, CLIENT_IP, 41000, TCP_ACK, b"");
    assert_passes_unmodified(&mut t, "IPv4", &with_macs(v4, LB_MAC, RS1_MAC));
}
