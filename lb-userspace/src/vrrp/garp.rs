//! Gratuitous ARP on becoming master, so switches and hosts learn at once
//! that the VIP moved (keepalived: garp_master_repeat 5, then 5 more after
//! garp_master_delay 5 s).

use std::{io, net::Ipv4Addr, time::Duration};

use socket2::{Domain, Protocol, SockAddr, SockAddrStorage, Socket, Type};

/// keepalived's garp_master_repeat.
pub const GARP_REPEAT: usize = 5;
/// keepalived's garp_master_delay: the second burst.
pub const GARP_SECOND_BURST_DELAY: Duration = Duration::from_secs(5);
const ETH_P_ARP: u16 = 0x0806;
const ARPHRD_ETHER: u16 = 1;
const ETH_P_IP: u16 = 0x0800;
const ARPOP_REQUEST: u16 = 1;
const BROADCAST: [u8; 6] = [0xff; 6];

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

/// The link-layer destination of the frames (sockaddr_ll).
fn link_addr(ifindex: u32) -> SockAddr {
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: sockaddr_ll fits in the storage and is plain data; the fields
    // not set are valid as zero.
    unsafe {
        let ll = storage.view_as::<libc::sockaddr_ll>();
        ll.sll_family = libc::AF_PACKET as u16;
        ll.sll_protocol = ETH_P_ARP.to_be();
        ll.sll_ifindex = ifindex as i32;
        ll.sll_halen = 6;
        ll.sll_addr[..6].copy_from_slice(&BROADCAST);
        SockAddr::new(
            storage,
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    }
}

/// Sends one burst: GARP_REPEAT frames per VIP.
pub fn send_burst(ifindex: u32, mac: [u8; 6], vips: &[Ipv4Addr]) -> io::Result<()> {
    let socket = Socket::new(
        Domain::PACKET,
        Type::RAW,
        Some(Protocol::from(i32::from(ETH_P_ARP.to_be()))),
    )?;
    let dst = link_addr(ifindex);
    for _ in 0..GARP_REPEAT {
        for vip in vips {
            socket.send_to(&garp_frame(mac, *vip), &dst)?;
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
}
