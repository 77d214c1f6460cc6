//! Kernel network state over rtnetlink: the interface (index, MAC, local
//! addresses) and the neighbour tables that give real servers' MACs.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use anyhow::{Context as _, Result, anyhow};
use futures::TryStreamExt as _;
use rtnetlink::packet_route::{
    address::{AddressAttribute, AddressFlags, CacheInfo},
    link::{LinkAttribute, LinkFlags, LinkMessage},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState},
};

/// UDP "discard" port: a datagram to it makes the kernel resolve the
/// destination's MAC (ARP) without needing anything to listen there.
const PROBE_PORT: u16 = 9;
/// An IPv6 VIP's prefix length on the balancer: the host alone.
const IPV6_HOST_PREFIX: u8 = 128;
/// The kernel's "forever" for an address lifetime.
const INFINITY_LIFE_TIME: u32 = u32::MAX;
/// Assumed when the kernel does not report an MTU.
const ETHERNET_MTU: u32 = 1500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub mac: [u8; 6],
    pub mtu: u32,
}

/// SO_NETNS_COOKIE of a socket in this network namespace (Linux 5.14+).
pub fn netns_cookie() -> Option<u64> {
    use std::os::fd::AsRawFd as _;
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).ok()?;
    let mut cookie: u64 = 0;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: cookie and len are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(cookie)
}

#[derive(Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
}

impl Netlink {
    /// Opens a route netlink socket; its I/O runs as a tokio task.
    pub fn connect() -> Result<Self> {
        let (connection, handle, _) =
            rtnetlink::new_connection().context("opening a netlink socket")?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// The kernel's description of `name`, or None if there is no such interface.
    async fn link_message(&self, name: &str) -> Result<Option<LinkMessage>> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(msg) => Ok(msg),
            // The kernel answers ENODEV for an unknown name.
            Err(rtnetlink::Error::NetlinkError(_)) => Ok(None),
            Err(e) => Err(anyhow!(e)).context(format!("looking up interface {name}")),
        }
    }

    /// Index, MAC and MTU of `name`, or None if there is no such interface.
    pub async fn link(&self, name: &str) -> Result<Option<LinkInfo>> {
        let Some(msg) = self.link_message(name).await? else {
            return Ok(None);
        };
        let mac = msg
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Address(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
                _ => None,
            })
            .ok_or_else(|| anyhow!("interface {name} has no Ethernet address"))?;
        let mtu = msg
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Mtu(m) => Some(*m),
                _ => None,
            })
            .unwrap_or(ETHERNET_MTU);
        Ok(Some(LinkInfo {
            index: msg.header.index,
            mac,
            mtu,
        }))
    }

    /// Adds `addr/prefix` to interface `index`; already present is fine.
    pub async fn add_address(&self, index: u32, addr: IpAddr, prefix: u8) -> Result<()> {
        match self
            .handle
            .address()
            .add(index, addr, prefix)
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
            Err(e) => Err(anyhow!(e)).context(format!("adding {addr}/{prefix}")),
        }
    }

    /// Adds IPv6 VIP `vip` to interface `index` as a /128 the way a VRRP
    /// master takes it over: without duplicate address detection (the
    /// backup just gave it up: waiting a second for DAD would be a second
    /// without the VIP; keepalived adds it nodad too), and deprecated
    /// (preferred lifetime 0, valid forever): it answers neighbour
    /// solicitations and receives, but the balancer's own connections
    /// (health checks, BGP) never take it as their source. Present is fine.
    pub async fn add_vip6(&self, index: u32, vip: Ipv6Addr) -> Result<()> {
        let mut request = self
            .handle
            .address()
            .add(index, vip.into(), IPV6_HOST_PREFIX);
        let mut lifetimes = CacheInfo::default();
        lifetimes.ifa_preferred = 0;
        lifetimes.ifa_valid = INFINITY_LIFE_TIME;
        let attributes = &mut request.message_mut().attributes;
        attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        attributes.push(AddressAttribute::CacheInfo(lifetimes));
        match request.execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
            Err(e) => Err(anyhow!(e)).context(format!("adding {vip}/{IPV6_HOST_PREFIX}")),
        }
    }

    /// The interface's IPv6 link-local address (VRRPv3 over IPv6 sends from
    /// it), if it has one.
    pub async fn link_local6(&self, index: u32) -> Result<Option<Ipv6Addr>> {
        Ok(self
            .addresses(index)
            .await?
            .into_iter()
            .find_map(|a| match a {
                IpAddr::V6(a) if a.is_unicast_link_local() => Some(a),
                _ => None,
            }))
    }

    /// Removes `addr` from interface `index`; absent is fine.
    pub async fn del_address(&self, index: u32, addr: IpAddr) -> Result<()> {
        let mut addrs = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(addr)
            .execute();
        while let Some(msg) = addrs.try_next().await.context("listing addresses")? {
            self.handle
                .address()
                .del(msg)
                .execute()
                .await
                .with_context(|| format!("removing {addr}"))?;
        }
        Ok(())
    }

    /// Whether `name` is up with its carrier (IFF_RUNNING); None if it does
    /// not exist.
    pub async fn link_running(&self, name: &str) -> Result<Option<bool>> {
        Ok(self
            .link_message(name)
            .await?
            .map(|msg| msg.header.flags.contains(LinkFlags::Running)))
    }

    /// Addresses of both families configured on the interface.
    pub async fn addresses(&self, index: u32) -> Result<Vec<IpAddr>> {
        let mut out = Vec::new();
        let mut addrs = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        while let Some(msg) = addrs.try_next().await.context("listing addresses")? {
            for attr in &msg.attributes {
                if let AddressAttribute::Address(a) = attr {
                    out.push(*a);
                }
            }
        }
        Ok(out)
    }

    /// IPv4 addresses configured on the interface.
    pub async fn ipv4_addresses(&self, index: u32) -> Result<Vec<Ipv4Addr>> {
        Ok(self
            .addresses(index)
            .await?
            .into_iter()
            .filter_map(|a| match a {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(_) => None,
            })
            .collect())
    }

    /// IPv4 and IPv6 neighbours of interface `index` with a usable MAC.
    pub async fn neighbours(&self, index: u32) -> Result<HashMap<IpAddr, [u8; 6]>> {
        let mut out = HashMap::new();
        for family in [rtnetlink::IpVersion::V4, rtnetlink::IpVersion::V6] {
            self.neighbours_of(family, index, &mut out).await?;
        }
        Ok(out)
    }

    async fn neighbours_of(
        &self,
        family: rtnetlink::IpVersion,
        index: u32,
        out: &mut HashMap<IpAddr, [u8; 6]>,
    ) -> Result<()> {
        let mut neighs = self.handle.neighbours().get().set_family(family).execute();
        while let Some(msg) = neighs
            .try_next()
            .await
            .context("reading the neighbour table")?
        {
            if msg.header.ifindex != index || !usable_state(msg.header.state) {
                continue;
            }
            let mut ip = None;
            let mut mac = None;
            for attr in &msg.attributes {
                match attr {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                        ip = Some(IpAddr::V4(*a))
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                        ip = Some(IpAddr::V6(*a))
                    }
                    NeighbourAttribute::LinkLocalAddress(b) => {
                        mac = <[u8; 6]>::try_from(b.as_slice()).ok()
                    }
                    _ => {}
                }
            }
            if let (Some(ip), Some(mac)) = (ip, mac) {
                out.insert(ip, mac);
            }
        }
        Ok(())
    }
}

/// States in which the neighbour entry's MAC is valid.
fn usable_state(state: NeighbourState) -> bool {
    matches!(
        state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
            | NeighbourState::Noarp
    )
}

/// Makes the kernel resolve `ip` (ARP, or neighbour solicitation for IPv6)
/// by sending it one empty UDP datagram to the discard port. Best effort:
/// errors (no route...) are returned for logging only.
pub fn probe(ip: IpAddr) -> std::io::Result<()> {
    let any: IpAddr = match ip {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = std::net::UdpSocket::bind((any, 0))?;
    socket.send_to(&[], (ip, PROBE_PORT)).map(|_| ())
}
