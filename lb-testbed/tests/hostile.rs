//! Hostile packets through the real XDP program (BPF_PROG_TEST_RUN, needs
//! root): more than 100,000 generated frames per run — truncated at every
//! offset past the Ethernet header (no NIC hands XDP less), bad IHL, IP options, fragments, bad total lengths, TCP data
//! offsets out of range, VLAN stacks, IPv6 extension headers, every TCP
//! flag combination to the VIP — in DR, TUN and NAT; and IPv6 frames to an
//! IPv6 DR, an IPv6 TUN and an IPv6 NAT service (extension header chains, fragments,
//! bad payload lengths, truncations, flipped bytes). On every frame one of:
//! PASS with the frame unmodified; DROP with a drop-reason counter counted;
//! or a forward whose output is well-formed, its checksums verified here,
//! independently of the data plane (valid wherever the input's were).
//!
//! The policy for fragments and IP options (tested here and in
//! tests/dataplane.rs; end to end in e2e.rs): they are passed to the kernel
//! untouched, never forwarded. Katran drops them; IPVS reassembles
//! fragments in netfilter before it schedules. An XDP program sees one
//! fragment at a time and cannot reassemble; passing leaves the decision
//! to the kernel's own stack and firewall, and is counted (pass_fragment,
//! pass_ip_options) so an operator sees it.

use std::cell::RefCell;

use lb_common::{ForwardKind, counters};
use lb_testbed::{packet::*, progtest::*};
use proptest::{
    prelude::*,
    test_runner::{Config, TestRunner},
};

/// Frames per forwarding mode: three modes, over 100,000 in all.
const FRAMES_PER_MODE: u32 = 34_000;
const XDP_REDIRECT: u32 = 4;
const ETH_HEADER_LEN: usize = 14;
const VLAN_TAG_LEN: usize = 4;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_IPIP: u8 = 4;
const IPPROTO_IPV6_HOP: u8 = 0;
const IPPROTO_IPV6_ROUTING: u8 = 43;
const IPPROTO_IPV6_FRAGMENT: u8 = 44;
const IPPROTO_IPV6_DSTOPTS: u8 = 60;
const IPV6_HEADER_LEN: usize = 40;
const MAX_IP_OPTIONS: usize = 40;
const MAX_PAYLOAD: usize = 64;

/// Where the IPv4 (or IPv6) header starts, after Ethernet and up to two
/// VLAN tags.
fn l3_offset(frame: &[u8]) -> Option<usize> {
    let mut off = ETH_HEADER_LEN - 2;
    for _ in 0..3 {
        let ethertype = u16::from_be_bytes(frame.get(off..off + 2)?.try_into().ok()?);
        match ethertype {
            ETH_P_IP | ETH_P_IPV6 => return Some(off + 2),
            ETH_P_8021Q | ETH_P_8021AD => off += VLAN_TAG_LEN,
            _ => return None,
        }
    }
    None
}

/// A well-formed IPv4 packet at the start of `ip`: (protocol, header
/// length, total length, is a fragment). Err says what is wrong.
fn ipv4_header(ip: &[u8]) -> Result<(u8, usize, usize, bool), String> {
    let first = *ip.first().ok_or("no IPv4 header")?;
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < 20 || ip.len() < ihl {
        return Err(format!("bad version/IHL byte {first:#x}"));
    }
    let tot_len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if tot_len < ihl || tot_len > ip.len() {
        return Err(format!("total length {tot_len} with {} bytes", ip.len()));
    }
    let frags = u16::from_be_bytes([ip[6], ip[7]]);
    Ok((ip[9], ihl, tot_len, frags & 0x3fff != 0))
}

fn ip_checksum_ok(ip: &[u8], ihl: usize) -> bool {
    csum(&ip[..ihl], 0) == 0
}

/// Is the TCP/UDP/ICMP checksum of this IPv4 packet right? (UDP checksum 0
/// = none.) None for other protocols and fragments.
fn l4_checksum_ok(ip: &[u8]) -> Option<bool> {
    let (proto, ihl, tot_len, fragment) = ipv4_header(ip).ok()?;
    if fragment {
        return None;
    }
    let l4 = &ip[ihl..tot_len];
    let src = std::net::Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = std::net::Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    match proto {
        IPPROTO_TCP if l4.len() >= 20 => Some(l4_checksum(src, dst, proto, l4) == 0),
        IPPROTO_UDP if l4.len() >= 8 => {
            Some(l4[6..8] == [0, 0] || l4_checksum(src, dst, proto, l4) == 0)
        }
        IPPROTO_ICMP if l4.len() >= 8 => Some(csum(l4, 0) == 0),
        _ => None,
    }
}

/// The forwarded frame is well-formed and its checksums are right wherever
/// the input's were.
fn check_forwarded(input: &[u8], out: &[u8]) -> Result<(), String> {
    let l3 = l3_offset(out).ok_or("forwarded frame is not IPv4")?;
    let ip = &out[l3..];
    let (proto, ihl, tot_len, _) = ipv4_header(ip)?;
    let in_ip = &input[l3_offset(input).ok_or("input not IPv4")?..];
    let (_, in_ihl, _, _) =
        ipv4_header(in_ip).map_err(|e| format!("forwarded a bad input: {e}"))?;
    // A header checksum the input got wrong is the real server's to drop
    // (the data plane does not spend a sum on every packet); TUN's outer
    // header is the program's own and must always be right.
    if (proto == IPPROTO_IPIP || ip_checksum_ok(in_ip, in_ihl)) && !ip_checksum_ok(ip, ihl) {
        return Err("IPv4 header checksum wrong".into());
    }
    let input_l4_ok = l4_checksum_ok(in_ip);
    // TUN: the inner packet is the input's, whole.
    let inner = if proto == IPPROTO_IPIP {
        let inner = &ip[ihl..tot_len];
        let (_, inner_ihl, _, _) = ipv4_header(inner).map_err(|e| format!("inner: {e}"))?;
        if ip_checksum_ok(in_ip, inner_ihl) && !ip_checksum_ok(inner, inner_ihl) {
            return Err("inner IPv4 checksum broken".into());
        }
        inner
    } else {
        &ip[..tot_len]
    };
    match (input_l4_ok, l4_checksum_ok(inner)) {
        (Some(true), Some(false)) => Err("L4 checksum broken by the forward".into()),
        // An ICMP error the program built (fragmentation needed).
        (_, Some(false)) if proto == IPPROTO_ICMP => Err("ICMP checksum wrong".into()),
        _ => Ok(()),
    }
}

/// The sum of the counters whose names `matches` accepts.
fn counted(t: &ProgTest, matches: fn(&str) -> bool) -> u64 {
    let c = t.counters().unwrap();
    counters::COUNTER_NAMES
        .iter()
        .zip(c)
        .filter(|(name, _)| matches(name))
        .map(|(_, n)| n)
        .sum()
}

fn is_pass(name: &str) -> bool {
    name.starts_with("pass_")
}

fn is_drop(name: &str) -> bool {
    name.starts_with("drop_")
}

/// A frame sent on: XDP_TX and redirects, NAT's rewritten replies.
fn is_sent(name: &str) -> bool {
    matches!(name, "tx" | "redirect" | "nat_reply" | "nat_icmp")
}

/// Runs one frame and checks the invariant: PASS leaves the frame as it
/// was, a forward is well formed, and every verdict bumps a counter that
/// says why (pass_*, drop_*, tx/redirect/nat_*).
fn check_frame(t: &mut ProgTest, frame: &[u8]) -> Result<(), String> {
    check_frame_with(t, frame, check_forwarded)
}

/// check_frame with `forwarded` judging what was sent.
fn check_frame_with(
    t: &mut ProgTest,
    frame: &[u8],
    forwarded: fn(&[u8], &[u8]) -> Result<(), String>,
) -> Result<(), String> {
    let before = [is_pass, is_drop, is_sent].map(|class| counted(t, class));
    let (verdict, out) = t.run(frame).map_err(|e| format!("test run failed: {e}"))?;
    let bumped = |i: usize, class: fn(&str) -> bool| counted(t, class) > before[i];
    match verdict {
        XDP_PASS if out != frame => Err("PASS with a modified frame".into()),
        XDP_PASS if bumped(0, is_pass) => Ok(()),
        XDP_PASS => Err("PASS without a pass-reason counter".into()),
        XDP_DROP if bumped(1, is_drop) => Ok(()),
        XDP_DROP => Err("DROP without a drop-reason counter".into()),
        XDP_TX | XDP_REDIRECT if bumped(2, is_sent) => forwarded(frame, &out),
        XDP_TX | XDP_REDIRECT => Err("forwarded without a counter".into()),
        other => Err(format!("verdict {other}")),
    }
}

/// One generated frame: a packet, then the damage done to it.
#[derive(Debug, Clone)]
struct Hostile {
    to_vip: bool,
    proto: u8,
    sport: u16,
    dport_is_service: bool,
    other_port: u16,
    src: [u8; 4],
    tcp_flags: u8,
    payload: Vec<u8>,
    vlans: Vec<u16>,
    ip_options: Vec<u8>,
    frags: u16,
    ipv6_ext: Option<Vec<u8>>,
    ihl: Option<u8>,
    tot_len: Option<u16>,
    tcp_doff: Option<u8>,
    truncate_at: Option<prop::sample::Index>,
    flip: Option<(prop::sample::Index, u8)>,
}

fn hostile() -> impl Strategy<Value = Hostile> {
    let packet = (
        prop::bool::weighted(0.85),
        prop_oneof![4 => Just(IPPROTO_TCP), 3 => Just(IPPROTO_UDP), 1 => Just(IPPROTO_ICMP), 1 => any::<u8>()],
        any::<u16>(),
        prop::bool::weighted(0.8),
        any::<u16>(),
        any::<[u8; 4]>(),
        any::<u8>(),
        prop::collection::vec(any::<u8>(), 0..MAX_PAYLOAD),
    );
    let layers = (
        prop::collection::vec(any::<u16>(), 0..=2),
        prop_oneof![3 => Just(Vec::new()), 1 => (1..=MAX_IP_OPTIONS / 4).prop_flat_map(|words| prop::collection::vec(any::<u8>(), words * 4))],
        prop_oneof![6 => Just(0u16), 1 => Just(IP_MF), 1 => 1..0x1fffu16, 1 => (1..0x1fffu16).prop_map(|o| o | IP_MF)],
        prop::option::weighted(
            0.1,
            prop::collection::vec(
                prop_oneof![
                    Just(IPPROTO_IPV6_HOP),
                    Just(IPPROTO_IPV6_ROUTING),
                    Just(IPPROTO_IPV6_FRAGMENT),
                    Just(IPPROTO_IPV6_DSTOPTS)
                ],
                0..4,
            ),
        ),
    );
    let damage = (
        prop::option::weighted(0.1, 0u8..16),
        prop::option::weighted(0.1, any::<u16>()),
        prop::option::weighted(0.1, 0u8..16),
        prop::option::weighted(0.2, any::<prop::sample::Index>()),
        prop::option::weighted(0.1, (any::<prop::sample::Index>(), 1u8..=255)),
    );
    (packet, layers, damage).prop_map(
        |(
            (to_vip, proto, sport, dport_is_service, other_port, src, tcp_flags, payload),
            (vlans, ip_options, frags, ipv6_ext),
            (ihl, tot_len, tcp_doff, truncate_at, flip),
        )| Hostile {
            to_vip,
            proto,
            sport,
            dport_is_service,
            other_port,
            src,
            tcp_flags,
            payload,
            vlans,
            ip_options,
            frags,
            ipv6_ext,
            ihl,
            tot_len,
            tcp_doff,
            truncate_at,
            flip,
        },
    )
}

/// An IPv6 frame with this chain of extension headers before TCP.
fn ipv6_frame(exts: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
    let mut body = Vec::new();
    for (i, _) in exts.iter().enumerate() {
        let next = exts.get(i + 1).copied().unwrap_or(IPPROTO_TCP);
        // 8-byte extension header: next header, length 0, padding.
        body.extend_from_slice(&[next, 0, 0, 0, 0, 0, 0, 0]);
    }
    body.extend_from_slice(&Ipv4Packet::tcp(CLIENT_IP, 1, VIP, PORT, TCP_SYN, payload).l4);
    let mut ip = vec![0u8; IPV6_HEADER_LEN];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&(body.len() as u16).to_be_bytes());
    ip[6] = exts.first().copied().unwrap_or(IPPROTO_TCP);
    ip[7] = 64;
    f.extend_from_slice(&ip);
    f.extend_from_slice(&body);
    f
}

impl Hostile {
    fn frame(&self) -> Vec<u8> {
        if let Some(exts) = &self.ipv6_ext {
            return self.damage(ipv6_frame(exts, &self.payload));
        }
        let src = std::net::Ipv4Addr::from(self.src);
        let dst = if self.to_vip {
            VIP
        } else {
            std::net::Ipv4Addr::new(10, self.src[1], self.src[2], self.src[3])
        };
        let dport = if self.dport_is_service {
            PORT
        } else {
            self.other_port
        };
        let mut p = match self.proto {
            IPPROTO_TCP => {
                Ipv4Packet::tcp(src, self.sport, dst, dport, self.tcp_flags, &self.payload)
            }
            IPPROTO_UDP => Ipv4Packet::udp(src, self.sport, dst, dport, &self.payload),
            proto => Ipv4Packet::new(src, dst, proto, self.payload.clone()),
        };
        p.ip_options = self.ip_options.clone();
        p.frags = self.frags;
        let mut f = p.frame();
        // Stack VLAN tags (802.1Q / 802.1ad) in front of the IPv4 ethertype.
        for (i, tci) in self.vlans.iter().enumerate() {
            let tpid = if i == 0 { ETH_P_8021Q } else { ETH_P_8021AD };
            let mut tag = tpid.to_be_bytes().to_vec();
            tag.extend_from_slice(&tci.to_be_bytes());
            f.splice(12..12, tag);
        }
        self.damage(f)
    }

    fn damage(&self, mut f: Vec<u8>) -> Vec<u8> {
        if let Some(l3) = l3_offset(&f) {
            if let Some(ihl) = self.ihl {
                f[l3] = 0x40 | ihl;
            }
            if let Some(tot_len) = self.tot_len {
                f[l3 + 2..l3 + 4].copy_from_slice(&tot_len.to_be_bytes());
            }
            let l4 = l3 + 20 + self.ip_options.len();
            if let (Some(doff), IPPROTO_TCP) = (self.tcp_doff, self.proto)
                && l4 + 12 < f.len()
            {
                f[l4 + 12] = doff << 4;
            }
        }
        if let Some((at, xor)) = &self.flip {
            let i = at.index(f.len());
            f[i] ^= xor;
        }
        if let Some(at) = &self.truncate_at {
            // No NIC hands XDP less than an Ethernet header (and the
            // kernel's test run refuses it).
            f.truncate(ETH_HEADER_LEN + at.index(f.len() - ETH_HEADER_LEN + 1));
        }
        f
    }
}

fn mode(forward: ForwardKind) -> ProgTest {
    ProgTest::with_service(seed_service_in(forward)).unwrap()
}

#[test]
fn generated_hostile_frames_keep_the_invariant() {
    for forward in [ForwardKind::Dr, ForwardKind::Tun, ForwardKind::Nat] {
        let mut t = mode(forward);
        run_generated(
            &mut t,
            hostile(),
            Hostile::frame,
            check_forwarded,
            &format!("{forward:?}"),
        );
    }
}

/// Sends FRAMES_PER_MODE frames made by `frame` from `strategy`'s values
/// through `t`, each checked by check_frame_with(`forwarded`); panics with
/// the first frame that breaks the invariant (`label` says which run).
fn run_generated<H: std::fmt::Debug>(
    t: &mut ProgTest,
    strategy: impl Strategy<Value = H>,
    frame: fn(&H) -> Vec<u8>,
    forwarded: fn(&[u8], &[u8]) -> Result<(), String>,
    label: &str,
) {
    let t = RefCell::new(t);
    let mut runner = TestRunner::new(Config {
        cases: FRAMES_PER_MODE,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&strategy, |h| {
        let frame = frame(&h);
        check_frame_with(&mut t.borrow_mut(), &frame, forwarded)
            .map_err(|e| TestCaseError::fail(format!("{label}: {e}\nframe {frame:02x?}")))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// DR over IPv6 changes the two MACs and nothing else: the frame above
/// layer 2 is the input's, byte for byte, so its checksums are too.
fn check_forwarded6(input: &[u8], out: &[u8]) -> Result<(), String> {
    if out.len() != input.len() || out[12..] != input[12..] {
        return Err("DR over IPv6 changed more than the MACs".into());
    }
    if out[6..12] != LB_MAC || ![RS1_MAC, RS2_MAC].iter().any(|m| out[0..6] == m[..]) {
        return Err("DR over IPv6: unexpected MACs".into());
    }
    Ok(())
}

/// TUN over IPv6 pushes one IPv6 header (next header 41, from the
/// balancer to the server whose MAC the frame goes to) between the L2
/// headers and the input's packet, which follows byte for byte.
fn check_forwarded6_tun(input: &[u8], out: &[u8]) -> Result<(), String> {
    let l3 = l3_offset(input).ok_or("forwarded a frame without an L3 header")?;
    if out.len() != input.len() + IPV6_HEADER_LEN || out[l3 + IPV6_HEADER_LEN..] != input[l3..] {
        return Err("TUN over IPv6 changed the inner packet".into());
    }
    if out[12..l3] != input[12..l3] || out[6..12] != LB_MAC {
        return Err("TUN over IPv6: L2 headers not kept".into());
    }
    let outer = &out[l3..l3 + IPV6_HEADER_LEN];
    let server = server6_of(out, "TUN over IPv6")?;
    // The inner packet's own length (its payload length field), not the
    // frame's: bytes past it are a trailer that rides along uncounted, as
    // Ethernet padding would.
    let inner_len = IPV6_HEADER_LEN as u16 + u16::from_be_bytes([input[l3 + 4], input[l3 + 5]]);
    if outer[0..4] != input[l3..l3 + 4]
        || outer[4..6] != inner_len.to_be_bytes()
        || outer[6] != 41
        || outer[8..24] != LB_IP6.octets()
        || outer[24..40] != server.octets()
    {
        return Err(format!("TUN over IPv6: outer header {outer:02x?}"));
    }
    Ok(())
}

/// The IPv6 address of the server whose MAC the forwarded frame `out` is
/// sent to (`mode` names the check in the error).
fn server6_of(out: &[u8], mode: &str) -> Result<std::net::Ipv6Addr, String> {
    if out[0..6] == RS1_MAC {
        Ok(RS1_IP6)
    } else if out[0..6] == RS2_MAC {
        Ok(RS2_IP6)
    } else {
        Err(format!("{mode}: unexpected MAC"))
    }
}

/// Whether the TCP/UDP checksum of the IPv6 packet at `l3` (transport
/// header right behind the fixed header) is right over its payload length.
fn l4_checksum6_ok(frame: &[u8], l3: usize) -> bool {
    let ip = &frame[l3..];
    let len = u16::from_be_bytes([ip[4], ip[5]]) as usize;
    let addr =
        |at: usize| std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&ip[at..at + 16]).unwrap());
    let l4 = &ip[IPV6_HEADER_LEN..IPV6_HEADER_LEN + len];
    l4_checksum6(addr(8), addr(24), ip[6], l4) == 0
}

/// NAT66 (no port mapping) rewrites the MACs, the destination address to
/// the server the frame goes to, and the checksum, which stays right
/// wherever the input's was; every other byte is the input's.
fn check_forwarded6_nat(input: &[u8], out: &[u8]) -> Result<(), String> {
    let l3 = l3_offset(input).ok_or("forwarded a frame without an L3 header")?;
    let server = server6_of(out, "NAT66")?;
    let dst = l3 + 24..l3 + 40;
    if out.len() != input.len() || out[6..12] != LB_MAC || out[dst.clone()] != server.octets() {
        return Err("NAT66: MACs, length or destination wrong".into());
    }
    if l4_checksum6_ok(input, l3) && !l4_checksum6_ok(out, l3) {
        return Err("NAT66: L4 checksum broken".into());
    }
    let check = l3 + IPV6_HEADER_LEN + if input[l3 + 6] == IPPROTO_TCP { 16 } else { 6 };
    let unchanged = |i: &usize| !dst.contains(i) && !(check..check + 2).contains(i);
    if (12..out.len())
        .filter(unchanged)
        .any(|i| out[i] != input[i])
    {
        return Err("NAT66 changed more than the address and checksum".into());
    }
    Ok(())
}

/// One generated IPv6 frame: a packet (chains of extension headers
/// before its transport header), then the damage done to it.
#[derive(Debug, Clone)]
struct Hostile6 {
    to_vip: bool,
    proto: u8,
    sport: u16,
    dport_is_service: bool,
    other_port: u16,
    src_last: u16,
    tcp_flags: u8,
    payload: Vec<u8>,
    vlan: Option<u16>,
    exts: Vec<u8>,
    payload_len: Option<u16>,
    truncate_at: Option<prop::sample::Index>,
    flip: Option<(prop::sample::Index, u8)>,
}

fn hostile6() -> impl Strategy<Value = Hostile6> {
    let ext = prop_oneof![
        Just(IPPROTO_IPV6_HOP),
        Just(IPPROTO_IPV6_ROUTING),
        Just(IPPROTO_IPV6_FRAGMENT),
        Just(IPPROTO_IPV6_DSTOPTS)
    ];
    let packet = (
        prop::bool::weighted(0.85),
        prop_oneof![4 => Just(IPPROTO_TCP), 3 => Just(IPPROTO_UDP), 1 => Just(IPPROTO_ICMPV6), 1 => any::<u8>()],
        any::<u16>(),
        prop::bool::weighted(0.85),
        any::<u16>(),
        any::<u16>(),
        any::<u8>(),
        prop::collection::vec(any::<u8>(), 0..MAX_PAYLOAD),
    );
    let damage = (
        prop::option::weighted(0.1, any::<u16>()),
        prop::option::weighted(0.2, prop::collection::vec(ext, 1..4)),
        prop::option::weighted(0.1, any::<u16>()),
        prop::option::weighted(0.15, any::<prop::sample::Index>()),
        prop::option::weighted(0.15, (any::<prop::sample::Index>(), 1..=u8::MAX)),
    );
    (packet, damage).prop_map(
        |(
            (to_vip, proto, sport, dport_is_service, other_port, src_last, tcp_flags, payload),
            (vlan, exts, payload_len, truncate_at, flip),
        )| Hostile6 {
            to_vip,
            proto,
            sport,
            dport_is_service,
            other_port,
            src_last,
            tcp_flags,
            payload,
            vlan,
            exts: exts.unwrap_or_default(),
            payload_len,
            truncate_at,
            flip,
        },
    )
}

impl Hostile6 {
    fn frame(&self) -> Vec<u8> {
        let src = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0x50, 0, 0, 0, 0, self.src_last);
        let dst = if self.to_vip { VIP6 } else { src };
        let dport = if self.dport_is_service {
            PORT
        } else {
            self.other_port
        };
        let mut p = match self.proto {
            IPPROTO_TCP => {
                Ipv6Packet::tcp(src, self.sport, dst, dport, self.tcp_flags, &self.payload)
            }
            IPPROTO_UDP => Ipv6Packet::udp(src, self.sport, dst, dport, &self.payload),
            proto => Ipv6Packet::new(src, dst, proto, self.payload.clone()),
        };
        // The chain: each 8-byte header names the next; the last names the
        // transport protocol.
        for (i, kind) in self.exts.iter().enumerate() {
            let next = self.exts.get(i + 1).copied().unwrap_or(p.next_header);
            p.ext.extend_from_slice(&[next, 0, 0, 0, 0, 0, 0, 0]);
            if i == 0 {
                p.next_header = *kind;
            }
        }
        p.vlan = self.vlan;
        let mut f = p.frame();
        let l3 = ETH_HEADER_LEN + if self.vlan.is_some() { VLAN_TAG_LEN } else { 0 };
        if let Some(len) = self.payload_len {
            f[l3 + 4..l3 + 6].copy_from_slice(&len.to_be_bytes());
        }
        if let Some((at, xor)) = &self.flip {
            let i = at.index(f.len());
            f[i] ^= xor;
        }
        if let Some(at) = &self.truncate_at {
            f.truncate(ETH_HEADER_LEN + at.index(f.len() - ETH_HEADER_LEN + 1));
        }
        f
    }
}

#[test]
fn generated_hostile_ipv6_frames_keep_the_invariant() {
    type Check = fn(&[u8], &[u8]) -> Result<(), String>;
    let modes: [(ForwardKind, Check); 3] = [
        (ForwardKind::Dr, check_forwarded6),
        (ForwardKind::Tun, check_forwarded6_tun),
        (ForwardKind::Nat, check_forwarded6_nat),
    ];
    for (forward, check) in modes {
        let service = lb_userspace::planning::plan::PlannedService {
            forward,
            ..seed_service6()
        };
        let mut t = ProgTest::with_service(service).unwrap();
        run_generated(
            &mut t,
            hostile6(),
            Hostile6::frame,
            check,
            &format!("IPv6 {forward:?}"),
        );
        // The generator reached the balanced path, not only the passes.
        assert!(counted(&t, is_sent) > 0, "{forward:?}");
    }
}

#[test]
fn every_tcp_flag_combination_and_every_truncation_to_the_vip() {
    for forward in [ForwardKind::Dr, ForwardKind::Tun, ForwardKind::Nat] {
        let mut t = mode(forward);
        for flags in 0..=u8::MAX {
            let frame =
                Ipv4Packet::tcp(CLIENT_IP, 20000 + u16::from(flags), VIP, PORT, flags, b"x")
                    .frame();
            check_frame(&mut t, &frame)
                .unwrap_or_else(|e| panic!("{forward:?} flags {flags:#x}: {e}"));
        }
        let frame = Ipv4Packet::tcp(CLIENT_IP, 30000, VIP, PORT, TCP_SYN, b"payload").frame();
        assert_every_truncation_passes(&mut t, &frame, check_forwarded, &format!("{forward:?}"));
    }
    let mut t = ProgTest::with_service(seed_service6()).unwrap();
    for flags in 0..=u8::MAX {
        let frame = Ipv6Packet::tcp(
            CLIENT_IP6,
            20000 + u16::from(flags),
            VIP6,
            PORT,
            flags,
            b"x",
        )
        .frame();
        check_frame_with(&mut t, &frame, check_forwarded6)
            .unwrap_or_else(|e| panic!("IPv6 flags {flags:#x}: {e}"));
    }
    let frame = Ipv6Packet::tcp(CLIENT_IP6, 30000, VIP6, PORT, TCP_SYN, b"payload").frame();
    assert_every_truncation_passes(&mut t, &frame, check_forwarded6, "IPv6 DR");
}

/// Every prefix of `frame` keeps the invariant, and none but the whole
/// frame is forwarded.
fn assert_every_truncation_passes(
    t: &mut ProgTest,
    frame: &[u8],
    forwarded: fn(&[u8], &[u8]) -> Result<(), String>,
    what: &str,
) {
    for len in ETH_HEADER_LEN..=frame.len() {
        check_frame_with(t, &frame[..len], forwarded)
            .unwrap_or_else(|e| panic!("{what} truncated to {len}: {e}"));
        // A truncated packet is never forwarded.
        if len < frame.len() {
            let (verdict, _) = t.run(&frame[..len]).unwrap();
            assert_ne!(
                verdict, XDP_TX,
                "{what}: forwarded a frame truncated to {len}"
            );
        }
    }
}
