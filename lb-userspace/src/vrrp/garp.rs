//! Gratuitous ARP (IPv4 VIPs) and unsolicited neighbour advertisements
//! (IPv6 VIPs, RFC 4861 7.2.6) on becoming master, so switches and hosts
//! learn at once that the VIP moved (keepalived: garp_master_repeat 5, then
//! 5 more after garp_master_delay 5 s; the same counts for both).

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use socket2::{Domain, Protocol, SockAddr, SockAddrStorage, Socket, Type};

use super::packet;

/// keepalived's garp_master_repeat.
pub const GARP_REPEAT: usize = 5;
/// keepalived's garp_master_delay: the second burst.
pub const GARP_SECOND_BURST_DELAY: Duration = Duration::from_secs(5);
const ETH_P_ARP: u16 = 0x0806;
const ARPHRD_ETHER: u16 = 1;
const ETH_P_IP: u16 = 0x0800;
const ARPOP_REQUEST: u16 = 1;
const BROADCAST: [u8; 6] = [0xff; 6];
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_ICMPV6: u8 = 58;
/// ICMPv6 neighbour advertisement.
const ND_NEIGHBOR_ADVERT: u8 = 136;
/// The advertisement's Override flag: replace what caches hold.
const NA_FLAG_OVERRIDE: u8 = 0x20;
/// The target link-layer address option (type 2, length 1 = 8 bytes).
const ND_OPT_TARGET_LL_ADDR: [u8; 2] = [2, 1];
/// Neighbour discovery is sent, and accepted only, with hop limit 255.
const ND_HOP_LIMIT: u8 = 255;
/// ff02::1, all nodes, and its Ethernet multicast address.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];
const ETH_HEADER_LEN: usize = 14;

/// An ARP request for `vip` from `vip` at `mac`, broadcast: every host that
/// caches the VIP updates it to `mac`.
pub fn garp_frame(mac: [u8; 6], vip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&BROADCAST);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&ARPHRD_ETHER.to_be_bytes());
    f.extend_from_slice(&ETH_P_IP.to_be_bytes());
    f.extend_from_slice(&[6, 4]);
    f.extend_from_slice(&ARPOP_REQUEST.to_be_bytes());
    f.extend_from_slice(&mac);
    f.extend_from_slice(&vip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&vip.octets());
    f
}

/// An unsolicited neighbour advertisement for `vip` from `vip` at `mac`
/// to all nodes, Override set: every host that caches the VIP updates it
/// to `mac` (keepalived's ndisc; Router flag clear: the VIP is a host's).
pub fn unsolicited_na_frame(mac: [u8; 6], vip: Ipv6Addr) -> Vec<u8> {
    let mut icmp = vec![ND_NEIGHBOR_ADVERT, 0, 0, 0, NA_FLAG_OVERRIDE, 0, 0, 0];
    icmp.extend_from_slice(&vip.octets());
    icmp.extend_from_slice(&ND_OPT_TARGET_LL_ADDR);
    icmp.extend_from_slice(&mac);
    let check = icmpv6_checksum(vip, ALL_NODES, &icmp);
    icmp[2..4].copy_from_slice(&check.to_be_bytes());

    let mut f = Vec::with_capacity(ETH_HEADER_LEN + 40 + icmp.len());
    f.extend_from_slice(&ALL_NODES_MAC);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[IPPROTO_ICMPV6, ND_HOP_LIMIT]);
    f.extend_from_slice(&vip.octets());
    f.extend_from_slice(&ALL_NODES.octets());
    f.extend_from_slice(&icmp);
    f
}

/// ICMPv6's checksum: the IPv6 pseudo-header, then the message.
fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, icmp: &[u8]) -> u16 {
    let pseudo = packet::pseudo_header6(src, dst, icmp.len(), IPPROTO_ICMPV6);
    packet::checksum(&[&pseudo, icmp])
}

/// The announcement of `vip`: a gratuitous ARP or an unsolicited NA.
pub fn announcement(mac: [u8; 6], vip: IpAddr) -> Vec<u8> {
    match vip {
        IpAddr::V4(v4) => garp_frame(mac, v4),
        IpAddr::V6(v6) => unsolicited_na_frame(mac, v6),
    }
}

/// The link-layer destination of `frame` (sockaddr_ll): its own
/// destination MAC and EtherType.
fn link_addr(ifindex: u32, frame: &[u8]) -> SockAddr {
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: sockaddr_ll fits in the storage and is plain data; the fields
    // not set are valid as zero.
    unsafe {
        let ll = storage.view_as::<libc::sockaddr_ll>();
        ll.sll_family = libc::AF_PACKET as u16;
        ll.sll_protocol = u16::from_ne_bytes([frame[12], frame[13]]);
        ll.sll_ifindex = ifindex as i32;
        ll.sll_halen = 6;
        ll.sll_addr[..6].copy_from_slice(&frame[..6]);
        SockAddr::new(
            storage,
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    }
}

/// Sends one burst: GARP_REPEAT announcements per VIP.
pub fn send_burst(ifindex: u32, mac: [u8; 6], vips: &[IpAddr]) -> io::Result<()> {
    // Protocol 0: a socket that sends and never receives.
    let socket = Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(0)))?;
    let frames: Vec<Vec<u8>> = vips.iter().map(|vip| announcement(mac, *vip)).collect();
    for _ in 0..GARP_REPEAT {
        for frame in &frames {
            socket.send_to(frame, &link_addr(ifindex, frame))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_layout() {
        let mac = [2, 0, 0, 0, 0, 0x88];
        let vip = Ipv4Addr::new(172, 16, 122, 100);
        let f = garp_frame(mac, vip);
        assert_eq!(f.len(), 42);
        assert_eq!(&f[0..6], &BROADCAST);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1]); // request
        assert_eq!(&f[22..28], &mac); // sender MAC
        assert_eq!(&f[28..32], &vip.octets()); // sender IP = VIP
        assert_eq!(&f[38..42], &vip.octets()); // target IP = VIP
    }

    #[test]
    fn unsolicited_na_layout() {
        let mac = [2, 0, 0, 0, 0, 0x88];
        let vip = Ipv6Addr::new(0x2001, 0xdb8, 0x122, 0, 0, 0, 0, 0x100);
        let f = unsolicited_na_frame(mac, vip);
        assert_eq!(f.len(), 14 + 40 + 32);
        assert_eq!(&f[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(&f[6..12], &mac);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!(&f[18..20], &[0, 32]); // payload length
        assert_eq!(&f[20..22], &[58, 255]); // ICMPv6, hop limit 255
        assert_eq!(&f[22..38], &vip.octets()); // from the VIP
        assert_eq!(&f[38..54], &ALL_NODES.octets());
        assert_eq!(&f[54..56], &[136, 0]);
        assert_eq!(f[58], 0x20); // Override only
        assert_eq!(&f[62..78], &vip.octets()); // target
        assert_eq!(&f[78..80], &[2, 1]);
        assert_eq!(&f[80..86], &mac);
        // The checksum verifies: summed with it, the message gives zero.
        assert_eq!(icmpv6_checksum(vip, ALL_NODES, &f[54..]), 0);
    }
}
