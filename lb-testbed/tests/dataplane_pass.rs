//! The real XDP program through BPF_PROG_TEST_RUN (needs root): exact output
//! bytes and verdicts, Katran-tester style. What is not for a service, or not parseable, passes to the kernel
//! byte for byte.

use std::net::Ipv4Addr;

use lb_common::counters;
use lb_testbed::{packet::*, progtest::*};

#[test]
fn non_service_traffic_passes_unmodified() {
    let mut t = ProgTest::seed().unwrap();
    let other = Ipv4Addr::new(172, 16, 122, 188);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "ARP who-has VIP",
            arp_request([2, 0, 0, 0, 0, 2], CLIENT_IP, VIP),
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
                CLIENT_IP,
                VIP,
                IPPROTO_ICMP,
                vec![8, 0, 0xf7, 0xff, 0, 0, 0, 0],
            )
            .frame(),
        ),
        ("IPv6 TCP", ipv6_tcp_frame()),
        (
            "SSH to the VIP",
            Ipv4Packet::tcp(CLIENT_IP, 40000, VIP, 22, TCP_SYN, b"").frame(),
        ),
        (
            "HTTP to another address",
            Ipv4Packet::tcp(CLIENT_IP, 40000, other, PORT, TCP_SYN, b"").frame(),
        ),
    ];
    for (what, frame) in &cases {
        assert_passes_unmodified(&mut t, what, frame);
    }
    let c = t.counters().unwrap();
    // ARP; the IPv6 frame is lb6's, which has no service for it.
    assert_eq!(c[counters::PASS_NOT_IPV4 as usize], 1);
    assert_eq!(c[counters::PASS_NOT_TCP_UDP as usize], 2);
    assert_eq!(c[counters::PASS_NO_SERVICE as usize], 3);
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

/// The service filter (service_filter) and service_hits follow the
/// services: a removed service's packets pass, those of the connections
/// the table still holds too (a hit no longer finds its service's word),
/// and once it is written again they are balanced at once (its bit was set
/// before its entry reappeared, not left clear by the removal).
#[test]
fn a_removed_service_passes_and_a_rewritten_one_is_balanced_again() {
    let mut t = ProgTest::seed().unwrap();
    let known = syn(40001).frame();
    forwarded_to(&mut t, &known);
    let service = t.service.clone();
    t.dp.remove_service(&service).unwrap();
    assert_passes_unmodified(&mut t, "SYN to a removed service", &syn(40002).frame());
    assert_passes_unmodified(&mut t, "a known flow of a removed service", &known);
    // A reload that brings it back (ProgTest rewrites it whole).
    t.set_weight(0, 1).unwrap();
    forwarded_to(&mut t, &syn(40003).frame());
    forwarded_to(&mut t, &known);
    let c = t.counters().unwrap();
    assert_eq!(c[counters::PASS_NO_SERVICE as usize], 2);
    assert_eq!(c[counters::TX as usize], 3);
}
