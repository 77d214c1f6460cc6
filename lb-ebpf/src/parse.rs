//! Bounds-checked packet parsing (Katran's pckt_parsing.h).
//!
//! Every header access goes through `header`, which proves to the verifier
//! that the bytes lie inside the frame. Parsing never modifies the packet.

use aya_ebpf::programs::XdpContext;
use lb_common::{
    FlowKey, FlowKey6, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, Ipv6Octets, counters,
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr, tcp::TcpHdr, udp::UdpHdr, vlan::VlanHdr};

use crate::header::{Header, OutOfBounds, header};

/// EtherTypes as they sit in the frame (network byte order).
pub const ETH_P_IP: u16 = 0x0800u16.to_be();
pub const ETH_P_8021Q: u16 = 0x8100u16.to_be();
pub const ETH_P_IPV6: u16 = 0x86DDu16.to_be();
/// Offset of the L3 header behind Ethernet and one 802.1Q tag.
pub const VLAN_TAGGED_L3_OFF: usize = EthHdr::LEN + VlanHdr::LEN;
/// Minimum IPv4 header length, in 32-bit words.
pub const IPV4_MIN_IHL_WORDS: u8 = 5;
/// The first byte of an IPv4 header without options.
pub const IPV4_VERSION_IHL: u8 = 0x40 | IPV4_MIN_IHL_WORDS;
/// Fragment offset mask plus the More-Fragments bit of `frags`.
pub const IPV4_FRAG_MASK: u16 = 0x3fff;
/// Don't Fragment bit of `frags`.
pub const IPV4_DF: u16 = 0x4000;
/// Type, code, checksum and 4 bytes of an ICMP header.
pub const ICMP_HEADER_LEN: usize = 8;
/// Offset of the flags byte in the TCP header.
const TCP_FLAGS_OFFSET: usize = 13;
/// Minimum TCP header length, in 32-bit words.
const TCP_MIN_DOFF_WORDS: u16 = 5;

/// Ethernet with at most one 802.1Q tag: (EtherType, offset of the L3
/// header). Err when the frame is too short for what it announces.
#[inline(always)]
pub fn parse_l2(ctx: &XdpContext) -> Result<(u16, usize), OutOfBounds> {
    let ether_type = header::<EthHdr>(ctx, 0)?.ether_type;
    if ether_type != ETH_P_8021Q {
        return Ok((ether_type, EthHdr::LEN));
    }
    let vlan: &VlanHdr = header(ctx, EthHdr::LEN)?;
    Ok((vlan.ether_type, VLAN_TAGGED_L3_OFF))
}

/// What the balancer needs from a TCP/UDP-over-IPv4 frame.
pub struct L4Packet {
    /// Client -> VIP 5-tuple.
    pub flow: FlowKey,
    /// Offset of the IPv4 header (after Ethernet and an optional VLAN tag).
    pub l3_off: usize,
    /// IPv4 total length.
    pub ip_len: u16,
    /// IPv4 TOS byte.
    pub tos: u8,
    /// IPv4 Don't Fragment flag set.
    pub dont_fragment: bool,
    /// Offset of the TCP/UDP header.
    pub l4_off: usize,
    /// TCP flags byte (0 for UDP).
    pub tcp_flags: u8,
}

/// Parses Ethernet (at most one 802.1Q tag), IPv4, TCP/UDP.
/// `Err(counter)` names why the frame is not for the balancer; the caller
/// passes it to the kernel unmodified and bumps that counter.
#[inline(always)]
pub fn parse_l4(ctx: &XdpContext) -> Result<L4Packet, u32> {
    let (ether_type, l3_off) = parse_l2(ctx).map_err(|_| counters::PASS_MALFORMED)?;
    if ether_type != ETH_P_IP {
        return Err(counters::PASS_NOT_IPV4);
    }

    let ip: &Ipv4Hdr = header(ctx, l3_off).map_err(|_| counters::PASS_MALFORMED)?;
    if ip.version() != 4 || ip.ihl() < IPV4_MIN_IHL_WORDS * 4 {
        return Err(counters::PASS_MALFORMED);
    }
    let frame_len = ctx.data_end() - ctx.data();
    let tot_len = ip.tot_len() as usize;
    if tot_len < ip.ihl() as usize || l3_off + tot_len > frame_len {
        return Err(counters::PASS_MALFORMED);
    }
    if ip.ihl() != IPV4_MIN_IHL_WORDS * 4 {
        return Err(counters::PASS_IP_OPTIONS);
    }
    if u16::from_be_bytes(ip.frags) & IPV4_FRAG_MASK != 0 {
        return Err(counters::PASS_FRAGMENT);
    }

    let l4_off = l3_off + Ipv4Hdr::LEN;
    let ports = parse_ports(ctx, ip.proto, l4_off, l3_off + tot_len)
        .map_err(|e| e.unwrap_or(counters::PASS_NOT_TCP_UDP))?;

    Ok(L4Packet {
        flow: FlowKey {
            src: ip.src_addr,
            dst: ip.dst_addr,
            sport: ports.sport,
            dport: ports.dport,
            proto: ip.proto,
            _pad: [0; 3],
        },
        l3_off,
        ip_len: tot_len as u16,
        tos: ip.tos,
        dont_fragment: u16::from_be_bytes(ip.frags) & IPV4_DF != 0,
        l4_off,
        tcp_flags: ports.tcp_flags,
    })
}

/// The ports and TCP flags of a TCP/UDP header at `l4_off`.
struct Ports {
    /// Network byte order.
    sport: u16,
    dport: u16,
    /// 0 for UDP.
    tcp_flags: u8,
}

/// Reads the TCP/UDP header at `l4_off` of an IP packet ending at `l3_end`.
/// Err(None): not TCP or UDP; Err(Some(counter)): malformed.
#[inline(always)]
fn parse_ports(
    ctx: &XdpContext,
    proto: u8,
    l4_off: usize,
    l3_end: usize,
) -> Result<Ports, Option<u32>> {
    const MALFORMED: Option<u32> = Some(counters::PASS_MALFORMED);
    match proto {
        IPPROTO_TCP => {
            let tcp: &TcpHdr = header(ctx, l4_off).map_err(|_| MALFORMED)?;
            let doff = tcp.doff();
            if doff < TCP_MIN_DOFF_WORDS || l4_off + doff as usize * 4 > l3_end {
                return Err(MALFORMED);
            }
            let tcp_flags = *header::<u8>(ctx, l4_off + TCP_FLAGS_OFFSET).map_err(|_| MALFORMED)?;
            Ok(Ports {
                sport: u16::from_ne_bytes(tcp.source),
                dport: u16::from_ne_bytes(tcp.dest),
                tcp_flags,
            })
        }
        IPPROTO_UDP => {
            let udp: &UdpHdr = header(ctx, l4_off).map_err(|_| MALFORMED)?;
            Ok(Ports {
                sport: u16::from_ne_bytes(udp.src),
                dport: u16::from_ne_bytes(udp.dst),
                tcp_flags: 0,
            })
        }
        _ => Err(None),
    }
}

/// The fixed IPv6 header (RFC 8200 section 3), as it sits in the frame.
#[repr(C)]
pub struct Ipv6Header {
    /// Version (4 bits), traffic class, flow label.
    pub vtc_flow: [u8; 4],
    /// Bytes after this header, network byte order.
    pub payload_len: [u8; 2],
    pub next_header: u8,
    pub hop_limit: u8,
    pub src: Ipv6Octets,
    pub dst: Ipv6Octets,
}

impl Ipv6Header {
    pub const LEN: usize = 40;
}

/// `vtc_flow` of a header the balancer writes itself: version 6, traffic
/// class and flow label zero.
pub const IPV6_VERSION_WORD: [u8; 4] = [0x60, 0, 0, 0];

// SAFETY: #[repr(C)] of byte arrays and bytes: no padding, any bit pattern
// valid, alignment 1.
unsafe impl Header for Ipv6Header {}

/// Next-header values that are IPv6 extension headers (RFC 8200 section
/// 4, and the IANA list of them): hop-by-hop, routing, fragment, ESP, AH,
/// destination options, mobility, HIP, shim6, experimental.
const IPV6_EXTENSION_HEADERS: [u8; 11] = [0, 43, 44, 50, 51, 60, 135, 139, 140, 253, 254];

/// What the balancer needs from a TCP/UDP-over-IPv6 frame.
pub struct L4Packet6 {
    /// Client -> VIP 5-tuple.
    pub flow: FlowKey6,
    /// Offset of the IPv6 header.
    pub l3_off: usize,
    /// Offset of the TCP/UDP header.
    pub l4_off: usize,
    /// TCP flags byte (0 for UDP).
    pub tcp_flags: u8,
}

/// Parses Ethernet (at most one 802.1Q tag), IPv6 with TCP/UDP directly
/// behind the fixed header. Extension headers are not walked: a packet
/// with any is passed (PASS_IPV6_EXT_HEADER), as IPv4 with options is.
/// `Err(counter)` as parse_l4.
#[inline(always)]
pub fn parse_l4_v6(ctx: &XdpContext) -> Result<L4Packet6, u32> {
    let (ether_type, l3_off) = parse_l2(ctx).map_err(|_| counters::PASS_MALFORMED)?;
    if ether_type != ETH_P_IPV6 {
        return Err(counters::PASS_NOT_IPV4);
    }
    let ip: &Ipv6Header = header(ctx, l3_off).map_err(|_| counters::PASS_MALFORMED)?;
    let payload_len = u16::from_be_bytes(ip.payload_len) as usize;
    let l4_off = l3_off + Ipv6Header::LEN;
    let frame_len = ctx.data_end() - ctx.data();
    // Payload length 0 is a jumbogram (hop-by-hop option): not on Ethernet.
    if ip.vtc_flow[0] >> 4 != 6 || payload_len == 0 || l4_off + payload_len > frame_len {
        return Err(counters::PASS_MALFORMED);
    }
    let ports = parse_ports(ctx, ip.next_header, l4_off, l4_off + payload_len).map_err(|e| {
        e.unwrap_or(if IPV6_EXTENSION_HEADERS.contains(&ip.next_header) {
            counters::PASS_IPV6_EXT_HEADER
        } else {
            counters::PASS_IPV6_NOT_TCP_UDP
        })
    })?;
    Ok(L4Packet6 {
        flow: FlowKey6 {
            src: ip.src,
            dst: ip.dst,
            sport: ports.sport,
            dport: ports.dport,
            proto: ip.next_header,
            _pad: [0; 3],
        },
        l3_off,
        l4_off,
        tcp_flags: ports.tcp_flags,
    })
}

/// An ICMP error (destination unreachable, time exceeded, parameter
/// problem) quoting a TCP/UDP packet: what NAT needs to translate it.
pub struct IcmpError {
    pub l3_off: usize,
    /// Offset of the ICMP header.
    pub icmp_off: usize,
    /// Offset of the quoted IPv4 header.
    pub inner_off: usize,
    /// The quoted packet's 5-tuple (client -> real server for a NAT flow).
    pub inner: FlowKey,
}

const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETER_PROBLEM: u8 = 12;
/// Ports: the first 4 bytes of the quoted TCP/UDP header.
const QUOTED_PORTS_LEN: usize = 4;

/// Parses an IPv4 ICMP error quoting TCP/UDP; None for anything else
/// (then passed as it is).
#[inline(always)]
pub fn parse_icmp_error(ctx: &XdpContext) -> Option<IcmpError> {
    let (ether_type, l3_off) = parse_l2(ctx).ok()?;
    if ether_type != ETH_P_IP {
        return None;
    }
    let ip: &Ipv4Hdr = header(ctx, l3_off).ok()?;
    if ip.proto != IPPROTO_ICMP
        || ip.ihl() != IPV4_MIN_IHL_WORDS * 4
        || u16::from_be_bytes(ip.frags) & IPV4_FRAG_MASK != 0
    {
        return None;
    }
    let icmp_off = l3_off + Ipv4Hdr::LEN;
    let icmp_type: &u8 = header(ctx, icmp_off).ok()?;
    if !matches!(
        *icmp_type,
        ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM
    ) {
        return None;
    }
    let inner_off = icmp_off + ICMP_HEADER_LEN;
    let inner: &Ipv4Hdr = header(ctx, inner_off).ok()?;
    if inner.ihl() != IPV4_MIN_IHL_WORDS * 4
        || (inner.proto != IPPROTO_TCP && inner.proto != IPPROTO_UDP)
    {
        return None;
    }
    let ports: [u8; QUOTED_PORTS_LEN] = *header(ctx, inner_off + Ipv4Hdr::LEN).ok()?;
    Some(IcmpError {
        l3_off,
        icmp_off,
        inner_off,
        inner: FlowKey {
            src: inner.src_addr,
            dst: inner.dst_addr,
            sport: u16::from_ne_bytes([ports[0], ports[1]]),
            dport: u16::from_ne_bytes([ports[2], ports[3]]),
            proto: inner.proto,
            _pad: [0; 3],
        },
    })
}

/// An ICMPv6 error quoting a TCP/UDP packet: IcmpError over IPv6.
pub struct Icmp6Error {
    pub l3_off: usize,
    /// Offset of the ICMPv6 header.
    pub icmp_off: usize,
    /// Offset of the quoted IPv6 header.
    pub inner_off: usize,
    /// The quoted packet's 5-tuple (client -> real server for a NAT flow).
    pub inner: FlowKey6,
}

/// ICMPv6 error messages (RFC 4443 section 3): destination unreachable,
/// packet too big, time exceeded, parameter problem.
const ICMPV6_ERROR_TYPES: core::ops::RangeInclusive<u8> = 1..=4;

/// Parses an ICMPv6 error directly behind the fixed IPv6 header, quoting
/// TCP/UDP directly behind the quoted fixed header; None for anything else
/// (then passed as it is).
#[inline(always)]
pub fn parse_icmp6_error(ctx: &XdpContext) -> Option<Icmp6Error> {
    let (ether_type, l3_off) = parse_l2(ctx).ok()?;
    if ether_type != ETH_P_IPV6 {
        return None;
    }
    let ip: &Ipv6Header = header(ctx, l3_off).ok()?;
    if ip.next_header != IPPROTO_ICMPV6 {
        return None;
    }
    let icmp_off = l3_off + Ipv6Header::LEN;
    let icmp_type: &u8 = header(ctx, icmp_off).ok()?;
    if !ICMPV6_ERROR_TYPES.contains(icmp_type) {
        return None;
    }
    let inner_off = icmp_off + ICMP_HEADER_LEN;
    let inner: &Ipv6Header = header(ctx, inner_off).ok()?;
    if inner.next_header != IPPROTO_TCP && inner.next_header != IPPROTO_UDP {
        return None;
    }
    let ports: [u8; QUOTED_PORTS_LEN] = *header(ctx, inner_off + Ipv6Header::LEN).ok()?;
    Some(Icmp6Error {
        l3_off,
        icmp_off,
        inner_off,
        inner: FlowKey6 {
            src: inner.src,
            dst: inner.dst,
            sport: u16::from_ne_bytes([ports[0], ports[1]]),
            dport: u16::from_ne_bytes([ports[2], ports[3]]),
            proto: inner.next_header,
            _pad: [0; 3],
        },
    })
}
