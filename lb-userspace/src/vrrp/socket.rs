//! The VRRP socket: raw IP protocol 112 with TTL / hop limit 255, bound to
//! the instance's interface; multicast 224.0.0.18 (or unicast peers) over
//! IPv4, ff02::12 from the link-local address over IPv6 (RFC 5798).

use std::{
    io::{self, IoSliceMut, Read as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6},
    os::fd::AsRawFd as _,
};

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrIn6, recvmsg, setsockopt,
    sockopt::{Ipv6RecvHopLimit, Ipv6RecvPacketInfo},
};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::packet::{IPPROTO_VRRP, VRRP_MCAST_GROUP, VRRP_MCAST_GROUP6, VRRP_TTL};

/// Big enough for any VRRP packet with its IP header (255 addresses).
const RECV_BUFFER: usize = 2048;
const IPV4_MIN_HEADER: usize = 20;

/// One received VRRP packet (protocol 112) and what the IP header said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TTL, or IPv6's hop limit.
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
        src: Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]).into(),
        dst: Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]).into(),
        payload: packet[ihl..total].to_vec(),
    })
}

pub struct VrrpSocket {
    fd: AsyncFd<Socket>,
    ipv6: bool,
}

impl VrrpSocket {
    /// Opens the socket on `iface` (index `ifindex`, our address
    /// `local_addr`: IPv6's is the link-local one); joins the VRRP group
    /// unless `multicast` is false.
    pub fn open(
        iface: &str,
        ifindex: u32,
        local_addr: IpAddr,
        multicast: bool,
    ) -> io::Result<Self> {
        let domain = if local_addr.is_ipv4() {
            Domain::IPV4
        } else {
            Domain::IPV6
        };
        let socket = Socket::new(
            domain,
            Type::RAW,
            Some(Protocol::from(i32::from(IPPROTO_VRRP))),
        )?;
        socket.bind_device(Some(iface.as_bytes()))?;
        match local_addr {
            IpAddr::V4(local) => {
                socket.set_ttl_v4(u32::from(VRRP_TTL))?;
                socket.set_multicast_ttl_v4(u32::from(VRRP_TTL))?;
                socket.set_multicast_if_v4(&local)?;
                // Our own adverts must not come back to us.
                socket.set_multicast_loop_v4(false)?;
                if multicast {
                    socket.join_multicast_v4_n(
                        &VRRP_MCAST_GROUP,
                        &InterfaceIndexOrAddress::Index(ifindex),
                    )?;
                }
            }
            IpAddr::V6(local) => {
                // Adverts leave from the link-local address (RFC 5798
                // 5.1.2.1), also while it is still tentative at boot.
                socket.set_freebind_v6(true)?;
                socket.bind(&SocketAddrV6::new(local, 0, 0, ifindex).into())?;
                socket.set_unicast_hops_v6(u32::from(VRRP_TTL))?;
                socket.set_multicast_hops_v6(u32::from(VRRP_TTL))?;
                socket.set_multicast_if_v6(ifindex)?;
                socket.set_multicast_loop_v6(false)?;
                if multicast {
                    socket.join_multicast_v6(&VRRP_MCAST_GROUP6, ifindex)?;
                }
                // A raw IPv6 socket gets no IP header: the hop limit and the
                // destination come as control messages.
                setsockopt(&socket, Ipv6RecvHopLimit, &true)?;
                setsockopt(&socket, Ipv6RecvPacketInfo, &true)?;
            }
        }
        socket.set_nonblocking(true)?;
        // SAFETY: the socket is owned by the AsyncFd for its whole life, so
        // the registered fd stays open while registered.
        let fd = unsafe { AsyncFd::register(socket) }.map_err(io::Error::from)?;
        Ok(Self {
            fd,
            ipv6: local_addr.is_ipv6(),
        })
    }

    /// The next packet; None when it was no VRRP packet one can read.
    pub async fn recv(&self) -> io::Result<Option<Received>> {
        loop {
            let mut guard = self.fd.readable().await?;
            let read = if self.ipv6 {
                guard.try_io(|s| recv6(s.get_ref()))
            } else {
                guard.try_io(|s| recv4(s.get_ref()))
            };
            match read {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    pub fn send(&self, payload: &[u8], dst: IpAddr) -> io::Result<()> {
        let addr = SocketAddr::new(dst, 0).into();
        self.fd.get_ref().send_to(payload, &addr).map(|_| ())
    }
}

/// An IPv4 raw socket delivers the IP header with the payload.
fn recv4(socket: &Socket) -> io::Result<Option<Received>> {
    let mut buf = vec![0u8; RECV_BUFFER];
    let n = (&*socket).read(&mut buf)?;
    Ok(split_ipv4(&buf[..n]))
}

/// An IPv6 raw socket delivers the payload; the source comes as the
/// peer address, hop limit and destination as control messages.
fn recv6(socket: &Socket) -> io::Result<Option<Received>> {
    let mut buf = vec![0u8; RECV_BUFFER];
    let mut cmsgs = nix::cmsg_space!(libc::c_int, libc::in6_pktinfo);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<SockaddrIn6>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsgs),
        MsgFlags::empty(),
    )
    .map_err(io::Error::from)?;
    let (mut hops, mut dst) = (None, None);
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        match cmsg {
            ControlMessageOwned::Ipv6HopLimit(h) => hops = u8::try_from(h).ok(),
            ControlMessageOwned::Ipv6PacketInfo(info) => {
                dst = Some(Ipv6Addr::from(info.ipi6_addr.s6_addr));
            }
            _ => {}
        }
    }
    let (n, src) = (msg.bytes, msg.address.map(|a| a.ip()));
    Ok(match (src, dst, hops) {
        (Some(src), Some(dst), Some(ttl)) => Some(Received {
            src: src.into(),
            dst: dst.into(),
            ttl,
            payload: buf[..n].to_vec(),
        }),
        _ => None,
    })
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
        assert_eq!(r.src, IpAddr::from(Ipv4Addr::new(172, 16, 122, 188)));
        assert_eq!(r.dst, IpAddr::from(VRRP_MCAST_GROUP));
        assert_eq!(r.payload, vec![0x21; 20]);
        assert!(split_ipv4(&p[..10]).is_none());
        let mut not_vrrp = p.clone();
        not_vrrp[9] = 6;
        assert!(split_ipv4(&not_vrrp).is_none());
    }
}
