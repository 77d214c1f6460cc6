//! The sync daemon's sockets, as the kernel's (ip_vs_sync.c) sets them up:
//! the sender bound to the interface's address, multicast out of that
//! interface with the configured TTL, its own messages not looped back; the
//! receiver bound to the sync port, a member of the group on the interface.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use anyhow::{Context as _, Result};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tokio::net::UdpSocket;

/// Where sync messages go and come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub ifindex: u32,
    /// The interface's own address: the sender's source.
    pub local: Ipv4Addr,
    pub group: Ipv4Addr,
    pub port: u16,
    pub ttl: u8,
}

fn udp() -> Result<Socket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .context("creating a UDP socket for connection sync")?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// The sending socket.
pub fn sender(at: &Endpoint) -> Result<UdpSocket> {
    let socket = udp()?;
    socket
        .bind(&SocketAddr::from(SocketAddrV4::new(at.local, 0)).into())
        .with_context(|| format!("binding the sync sender to {}", at.local))?;
    socket.set_multicast_if_v4(&at.local)?;
    socket.set_multicast_ttl_v4(u32::from(at.ttl))?;
    socket.set_multicast_loop_v4(false)?;
    Ok(UdpSocket::from_std(socket.into())?)
}

/// The receiving socket.
pub fn receiver(at: &Endpoint) -> Result<UdpSocket> {
    let socket = udp()?;
    socket.set_reuse_address(true)?;
    socket
        .bind(&SocketAddr::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, at.port)).into())
        .with_context(|| format!("binding the sync receiver to port {}", at.port))?;
    socket
        .join_multicast_v4_n(&at.group, &InterfaceIndexOrAddress::Index(at.ifindex))
        .with_context(|| format!("joining {} for connection sync", at.group))?;
    Ok(UdpSocket::from_std(socket.into())?)
}
