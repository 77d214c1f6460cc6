//! Builds test frames byte by byte (Ethernet, optional 802.1Q, IPv4 with
//! options, TCP/UDP), with correct checksums, for BPF_PROG_TEST_RUN tests
//! and benchmarks. Katran's tester is the model: exact bytes in, exact out.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub use lb_common::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};
pub const IPPROTO_VRRP: u8 = 112;
/// IPv6 extension headers: hop-by-hop options, fragment.
pub const IPV6_HOP_BY_HOP: u8 = 0;
pub const IPV6_FRAGMENT: u8 = 44;
pub const IPV6_HEADER_LEN: usize = 40;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;
/// IPv4 "More Fragments" flag in the frags field.
pub const IP_MF: u16 = 0x2000;
const IPV4_HEADER_LEN: usize = 20;
const TCP_HEADER_LEN: usize = 20;
const UDP_HEADER_LEN: usize = 8;
const DEFAULT_TTL: u8 = 64;

/// The source MAC of frames built here: the client's.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// Internet checksum (RFC 1071) of `data`, starting from `initial`.
pub fn csum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet under construction; `frame()` renders it.
#[derive(Clone, Debug)]
pub struct Ipv4Packet {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub vlan: Option<u16>,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    /// Raw IP options (padded to 4 bytes by the caller).
    pub ip_options: Vec<u8>,
    /// The frags field (flags + offset).
    pub frags: u16,
    /// Layer-4 header and payload, already built.
    pub l4: Vec<u8>,
}

impl Ipv4Packet {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: Vec<u8>) -> Self {
        Self {
            dst_mac: [0x02, 0, 0, 0, 0, 0x01],
            src_mac: CLIENT_MAC,
            vlan: None,
            src,
            dst,
            proto,
            ip_options: Vec::new(),
            frags: 0,
            l4,
        }
    }

    /// TCP segment with `flags` and `payload`.
    pub fn tcp(
        src: Ipv4Addr,
        sport: u16,
        dst: Ipv4Addr,
        dport: u16,
        flags: u8,
        payload: &[u8],
    ) -> Self {
        let mut l4 = tcp_segment(sport, dport, flags, payload);
        let check = l4_checksum(src, dst, IPPROTO_TCP, &l4);
        l4[TCP_CHECK_OFF..TCP_CHECK_OFF + 2].copy_from_slice(&check.to_be_bytes());
        Self::new(src, dst, IPPROTO_TCP, l4)
    }

    /// UDP datagram with `payload`.
    pub fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Self {
        let mut l4 = udp_datagram(sport, dport, payload);
        let check = l4_checksum(src, dst, IPPROTO_UDP, &l4);
        l4[UDP_CHECK_OFF..UDP_CHECK_OFF + 2].copy_from_slice(&check.to_be_bytes());
        Self::new(src, dst, IPPROTO_UDP, l4)
    }

    pub fn frame(&self) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        if let Some(tci) = self.vlan {
            f.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&ETH_P_IP.to_be_bytes());
        let ihl_bytes = IPV4_HEADER_LEN + self.ip_options.len();
        let tot_len = (ihl_bytes + self.l4.len()) as u16;
        let mut ip = vec![0u8; IPV4_HEADER_LEN];
        ip[0] = 0x40 | (ihl_bytes / 4) as u8;
        ip[2..4].copy_from_slice(&tot_len.to_be_bytes());
        ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        ip[6..8].copy_from_slice(&self.frags.to_be_bytes());
        ip[8] = DEFAULT_TTL;
        ip[9] = self.proto;
        ip[12..16].copy_from_slice(&self.src.octets());
        ip[16..20].copy_from_slice(&self.dst.octets());
        ip.extend_from_slice(&self.ip_options);
        let check = csum(&ip, 0);
        ip[10..12].copy_from_slice(&check.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&self.l4);
        f
    }
}

/// Offsets of the checksum in a TCP and a UDP header.
const TCP_CHECK_OFF: usize = 16;
const UDP_CHECK_OFF: usize = 6;

/// A TCP segment (header, then `payload`), its checksum left 0 for the
/// family's pseudo-header sum.
fn tcp_segment(sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut l4 = vec![0u8; TCP_HEADER_LEN];
    l4[0..2].copy_from_slice(&sport.to_be_bytes());
    l4[2..4].copy_from_slice(&dport.to_be_bytes());
    l4[4..8].copy_from_slice(&1u32.to_be_bytes()); // seq
    l4[12] = ((TCP_HEADER_LEN / 4) as u8) << 4;
    l4[13] = flags;
    l4[14..16].copy_from_slice(&65535u16.to_be_bytes()); // window
    l4.extend_from_slice(payload);
    l4
}

/// A UDP datagram, its checksum left 0 as tcp_segment's.
fn udp_datagram(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = (UDP_HEADER_LEN + payload.len()) as u16;
    let mut l4 = Vec::with_capacity(len as usize);
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&len.to_be_bytes());
    l4.extend_from_slice(&[0, 0]);
    l4.extend_from_slice(payload);
    l4
}

/// TCP/UDP checksum with the IPv4 pseudo-header.
pub fn l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    let partial = !csum(&pseudo, 0) as u32;
    csum(l4, partial)
}

/// An ARP request "who has `target`".
pub fn arp_request(sender_mac: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&sender_mac);
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&sender_mac);
    f.extend_from_slice(&sender.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

/// An IPv6 packet under construction; `frame()` renders it.
#[derive(Clone, Debug)]
pub struct Ipv6Packet {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub vlan: Option<u16>,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    /// The fixed header's next header (the first extension header's type
    /// when `ext` is not empty).
    pub next_header: u8,
    /// Extension headers, already built, between the fixed header and `l4`.
    pub ext: Vec<u8>,
    /// Layer-4 header and payload, already built.
    pub l4: Vec<u8>,
}

impl Ipv6Packet {
    pub fn new(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, l4: Vec<u8>) -> Self {
        Self {
            dst_mac: [0x02, 0, 0, 0, 0, 0x01],
            src_mac: CLIENT_MAC,
            vlan: None,
            src,
            dst,
            next_header,
            ext: Vec::new(),
            l4,
        }
    }

    /// TCP segment with `flags` and `payload`.
    pub fn tcp(
        src: Ipv6Addr,
        sport: u16,
        dst: Ipv6Addr,
        dport: u16,
        flags: u8,
        payload: &[u8],
    ) -> Self {
        let mut l4 = tcp_segment(sport, dport, flags, payload);
        let check = l4_checksum6(src, dst, IPPROTO_TCP, &l4);
        l4[TCP_CHECK_OFF..TCP_CHECK_OFF + 2].copy_from_slice(&check.to_be_bytes());
        Self::new(src, dst, IPPROTO_TCP, l4)
    }

    /// UDP datagram with `payload`.
    pub fn udp(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, payload: &[u8]) -> Self {
        let mut l4 = udp_datagram(sport, dport, payload);
        let check = l4_checksum6(src, dst, IPPROTO_UDP, &l4);
        l4[UDP_CHECK_OFF..UDP_CHECK_OFF + 2].copy_from_slice(&check.to_be_bytes());
        Self::new(src, dst, IPPROTO_UDP, l4)
    }

    /// The same packet behind one 8-byte extension header of type `kind`
    /// (hop-by-hop with padding, or a first fragment).
    pub fn with_extension(mut self, kind: u8) -> Self {
        let mut ext = vec![0u8; 8];
        ext[0] = self.next_header;
        if kind == IPV6_FRAGMENT {
            // Offset 0, More Fragments: a first fragment.
            ext[3] = 1;
        } else {
            // PadN over the six option bytes.
            ext[2] = 1;
            ext[3] = 4;
        }
        self.ext = ext;
        self.next_header = kind;
        self
    }

    pub fn frame(&self) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        if let Some(tci) = self.vlan {
            f.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
        let payload_len = (self.ext.len() + self.l4.len()) as u16;
        let mut ip = vec![0u8; IPV6_HEADER_LEN];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&payload_len.to_be_bytes());
        ip[6] = self.next_header;
        ip[7] = DEFAULT_TTL;
        ip[8..24].copy_from_slice(&self.src.octets());
        ip[24..40].copy_from_slice(&self.dst.octets());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&self.ext);
        f.extend_from_slice(&self.l4);
        f
    }
}

/// TCP/UDP/ICMPv6 checksum with the IPv6 pseudo-header (RFC 8200 8.1).
pub fn l4_checksum6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, l4: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(40);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(l4.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, proto]);
    let partial = !csum(&pseudo, 0) as u32;
    csum(l4, partial)
}

/// An ICMPv6 neighbour solicitation for `target` from `src`.
pub fn neighbour_solicitation(src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    // Type 135, code 0, checksum, reserved, target address.
    let mut icmp = vec![135, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&target.octets());
    let t = target.octets();
    // Solicited-node multicast ff02::1:ffXX:XXXX.
    let dst = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(t[13]),
        u16::from_be_bytes([t[14], t[15]]),
    );
    let check = l4_checksum6(src, dst, IPPROTO_ICMPV6, &icmp);
    icmp[2..4].copy_from_slice(&check.to_be_bytes());
    Ipv6Packet::new(src, dst, IPPROTO_ICMPV6, icmp).frame()
}

/// An IPv6 TCP SYN to a host that is no service.
pub fn ipv6_tcp_frame() -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02]);
    f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
    let mut ip = vec![0u8; 40];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&(TCP_HEADER_LEN as u16).to_be_bytes());
    ip[6] = IPPROTO_TCP;
    ip[7] = DEFAULT_TTL;
    ip[23] = 1;
    ip[39] = 2;
    f.extend_from_slice(&ip);
    let mut tcp = vec![0u8; TCP_HEADER_LEN];
    tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
    tcp[12] = 0x50;
    tcp[13] = TCP_SYN;
    f.extend_from_slice(&tcp);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_header_checksum_verifies_to_zero() {
        let p = Ipv4Packet::tcp(
            Ipv4Addr::new(10, 0, 0, 1),
            1234,
            Ipv4Addr::new(10, 0, 0, 2),
            80,
            TCP_SYN,
            b"",
        );
        let f = p.frame();
        assert_eq!(csum(&f[14..34], 0), 0);
    }

    #[test]
    fn tcp_checksum_verifies_to_zero() {
        let src = Ipv4Addr::new(10, 0, 0, 1);
        let dst = Ipv4Addr::new(10, 0, 0, 2);
        let p = Ipv4Packet::tcp(src, 1234, dst, 80, TCP_ACK, b"hello");
        assert_eq!(l4_checksum(src, dst, IPPROTO_TCP, &p.l4), 0);
    }
}
