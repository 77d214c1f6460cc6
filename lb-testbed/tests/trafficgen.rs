//! The traffic generator's frames (floods in the end-to-end tests, the
//! bench's live pipeline): each has a new source in 198.18.0.0/15 and
//! checksums a receiving stack accepts, for TCP and for UDP (with and
//! without a checksum). Needs root, as every BPF_PROG_TEST_RUN test.

use std::{collections::HashSet, net::Ipv4Addr};

use lb_testbed::{packet::*, progtest::*, trafficgen::TrafficGen};

const ETH_HLEN: usize = 14;
const IP_HLEN: usize = 20;
/// 198.18.0.0/15 (RFC 2544's benchmarking range).
const FLOOD_NET: u32 = 0xc612_0000;
const FLOOD_PREFIX_MASK: u32 = 0xfffe_0000;
const RUNS: usize = 64;
const UDP_CHECK: std::ops::Range<usize> = 6..8;

/// (source, IP header valid, L4 checksum valid or absent) of a frame.
fn inspect(frame: &[u8]) -> (Ipv4Addr, bool, bool) {
    let ip = &frame[ETH_HLEN..ETH_HLEN + IP_HLEN];
    let l4 = &frame[ETH_HLEN + IP_HLEN..];
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let no_udp_checksum = ip[9] == IPPROTO_UDP && l4[UDP_CHECK] == [0, 0];
    // A valid checksum makes the sum over the data, checksum included, zero.
    (
        src,
        csum(ip, 0) == 0,
        no_udp_checksum || l4_checksum(src, dst, ip[9], l4) == 0,
    )
}

#[test]
fn every_frame_gets_a_new_source_and_valid_checksums() {
    let mut generator = TrafficGen::load().unwrap();
    let mut udp_without_checksum = Ipv4Packet::udp(CLIENT_IP, 40000, VIP, PORT, &[7; 18]);
    udp_without_checksum.l4[UDP_CHECK].fill(0);
    let frames = [
        (
            "TCP SYN",
            Ipv4Packet::tcp(CLIENT_IP, 40000, VIP, PORT, TCP_SYN, &[0; 6]).frame(),
        ),
        (
            "UDP",
            Ipv4Packet::udp(CLIENT_IP, 40000, VIP, PORT, &[7; 18]).frame(),
        ),
        ("UDP without checksum", udp_without_checksum.frame()),
    ];
    for (name, frame) in frames {
        let mut sources = HashSet::new();
        for _ in 0..RUNS {
            let (verdict, out) = generator.run_once(&frame).unwrap();
            assert_eq!(verdict, XDP_TX, "{name}");
            assert_eq!(out.len(), frame.len(), "{name}");
            let (src, ip_ok, l4_ok) = inspect(&out);
            assert_eq!(
                u32::from(src) & FLOOD_PREFIX_MASK,
                FLOOD_NET,
                "{name}: {src}"
            );
            assert!(ip_ok, "{name}: IP header checksum wrong for {src}");
            assert!(l4_ok, "{name}: L4 checksum wrong for {src}");
            if name == "UDP without checksum" {
                assert_eq!(out[ETH_HLEN + IP_HLEN..][UDP_CHECK], [0, 0], "stays absent");
            }
            // Only the source address and checksums change.
            let (mut a, mut b) = (frame.clone(), out.clone());
            for f in [&mut a, &mut b] {
                f[ETH_HLEN + 10..ETH_HLEN + 16].fill(0);
                let l4_check = if name == "TCP SYN" { 16..18 } else { UDP_CHECK };
                f[ETH_HLEN + IP_HLEN..][l4_check].fill(0);
            }
            assert_eq!(a, b, "{name}");
            sources.insert(src);
        }
        // 64 draws from 131,072 addresses: a repeat is possible, many are not.
        assert!(
            sources.len() > RUNS / 2,
            "{name}: {} sources",
            sources.len()
        );
    }
}

#[test]
fn a_frame_that_is_not_tcp_or_udp_is_refused() {
    let mut generator = TrafficGen::load().unwrap();
    let frame = Ipv4Packet::new(
        CLIENT_IP,
        VIP,
        IPPROTO_ICMP,
        vec![8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    )
    .frame();
    let (verdict, _) = generator.run_once(&frame).unwrap();
    assert_eq!(verdict, XDP_ABORTED);
}

/// The bench's established flows: a generator told its clients sends
/// from exactly those (net + 0..=mask), checksums still valid.
#[test]
fn a_generator_for_given_clients_sends_from_them_only() {
    const NET: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 0);
    const MASK: u32 = 15;
    let mut generator = TrafficGen::from_clients(NET, MASK).unwrap();
    let frame = Ipv4Packet::tcp(CLIENT_IP, 1000, VIP, PORT, TCP_ACK, &[0; 6]).frame();
    let mut sources = HashSet::new();
    for _ in 0..RUNS {
        let (verdict, out) = generator.run_once(&frame).unwrap();
        assert_eq!(verdict, XDP_TX);
        let (src, ip_ok, l4_ok) = inspect(&out);
        assert!(u32::from(src) - u32::from(NET) <= MASK, "{src}");
        assert!(ip_ok && l4_ok, "{src}");
        sources.insert(src);
    }
    // 64 draws from 16 clients: most of them seen.
    assert!(sources.len() > 8, "{sources:?}");
}
