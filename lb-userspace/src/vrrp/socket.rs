//! The VRRP socket: raw IPv4 protocol 112, multicast 224.0.0.18 (or unicast
//! peers) with TTL 255, bound to the instance's interface.

use std::{
    io::{self, Read as _},
    net::{Ipv4Addr, SocketAddrV4},
};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::packet::{IPPROTO_VRRP, VRRP_MCAST_GROUP, VRRP_TTL};

/// Big enough for any VRRP packet with its IP header (255 addresses).
const RECV_BUFFER: usize = 2048;
const IPV4_MIN_HEADER: usize = 20;

/// One received IPv4 packet of protocol 112.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    /// The VRRP payload.
    pub payload: Vec<u8>,
}

/// Splits a raw IPv4 packet (as a raw socket delivers it) into its header
/// fields and payload.
pub fn split_ipv4(packet: &[u8]) -> Option<Received> {
    if packet.len() < IPV4_MIN_HEADER || packet[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    if ihl < IPV4_MIN_HEADER || packet.len() < ihl || packet[9] != IPPROTO_VRRP {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]])).min(packet.len());
    if total < ihl {
        return None;
    }
    Some(Received {
        ttl: packet[8],
        src: Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]),
        dst: Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]),
        payload: packet[ihl..total].to_vec(),
    })
}

pub struct VrrpSocket {
    fd: AsyncFd<Socket>,
}

impl VrrpSocket {
    /// Opens the socket on `iface` (index `ifindex`, our address
    /// `local_addr`); joins the VRRP group unless `multicast` is false.
    pub fn open(
        iface: &str,
        ifindex: u32,
        local_addr: Ipv4Addr,
        multicast: bool,
    ) -> io::Result<Self> {
        let socket = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(i32::from(IPPROTO_VRRP))),
        )?;
        socket.bind_device(Some(iface.as_bytes()))?;
        socket.set_ttl_v4(u32::from(VRRP_TTL))?;
        socket.set_multicast_ttl_v4(u32::from(VRRP_TTL))?;
        socket.set_multicast_if_v4(&local_addr)?;
        // Our own adverts must not come back to us.
        socket.set_multicast_loop_v4(false)?;
        if multicast {
            socket
                .join_multicast_v4_n(&VRRP_MCAST_GROUP, &InterfaceIndexOrAddress::Index(ifindex))?;
        }
        socket.set_nonblocking(true)?;
        // SAFETY: the socket is owned by the AsyncFd for its whole life, so
        // the registered fd stays open while registered.
        let fd = unsafe { AsyncFd::register(socket) }.map_err(io::Error::from)?;
        Ok(Self { fd })
    }

    pub async fn recv(&self) -> io::Result<Vec<u8>> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut buf = vec![0u8; RECV_BUFFER];
            match guard.try_io(|s| s.get_ref().read(&mut buf)) {
                Ok(Ok(n)) => {
                    buf.truncate(n);
                    return Ok(buf);
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    pub fn send(&self, payload: &[u8], dst: Ipv4Addr) -> io::Result<()> {
        let addr = SocketAddrV4::new(dst, 0).into();
        self.fd.get_ref().send_to(payload, &addr).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_an_ipv4_packet() {
        let mut p = vec![
            0x45, 0, 0, 40, 0, 0, 0, 0, 255, 112, 0, 0, 172, 16, 122, 188, 224, 0, 0, 18,
        ];
        p.extend_from_slice(&[0x21; 20]);
        let r = split_ipv4(&p).unwrap();
        assert_eq!(r.ttl, 255);
        assert_eq!(r.src, Ipv4Addr::new(172, 16, 122, 188));
        assert_eq!(r.dst, VRRP_MCAST_GROUP);
        assert_eq!(r.payload, vec![0x21; 20]);
        assert!(split_ipv4(&p[..10]).is_none());
        let mut not_vrrp = p.clone();
        not_vrrp[9] = 6;
        assert!(split_ipv4(&not_vrrp).is_none());
    }
}
