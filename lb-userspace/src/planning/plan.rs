//! Pure translation of a validated config into the entries the data plane
//! needs: services with ids, real servers with ids. No I/O, so it is tested
//! without root.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use lb_common::{
    ForwardKind, GLOBAL_FLAG_NAT, GLOBAL_FLAG_NAT6, GLOBAL_FLAG_PORT0, IPPROTO_TCP, IPPROTO_UDP,
    SCHED_FLAG_FALLBACK, SCHED_FLAG_HASH_PORT, SchedulerKind, ServiceKey, ServiceKey6,
};

use crate::config::{Config, Granularity, LbAlgo, LbKind, Protocol};

/// One real server of one service (IPVS's ip_vs_dest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedReal {
    /// Index into the reals map; ids start at 1 (0 = none).
    pub real_id: u32,
    /// Index in the virtual_server's real_server list; None for the sorry server.
    pub rs_index: Option<usize>,
    /// Of the service's family.
    pub ip: IpAddr,
    pub port: u16,
    pub weight: u32,
}

/// ipvsadm -p / -M.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Persistence {
    pub timeout_s: u32,
    /// IPv4 services: a client network is the address & this.
    pub netmask: Ipv4Addr,
    /// IPv6 services: a client network is the address's first this-many bits.
    pub prefix6: u8,
}

/// A single IPv6 client address.
pub const IPV6_HOST_PREFIX: u8 = 128;

impl Persistence {
    /// ServiceInfo::persist_mask: the netmask in network byte order, or
    /// for an IPv6 service the prefix length (as IPVS keeps svc->netmask).
    pub fn map_mask(&self, ipv6: bool) -> u32 {
        if ipv6 {
            u32::from(self.prefix6)
        } else {
            u32::from_ne_bytes(self.netmask.octets())
        }
    }
}

/// One virtual service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedService {
    pub service_id: u32,
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub forward: ForwardKind,
    pub scheduler: SchedulerKind,
    /// lb_common::SCHED_FLAG_* (sh-port, sh-fallback, mh-port).
    pub sched_flags: u8,
    /// persistence_timeout and persistence_granularity, when set.
    pub persistence: Option<Persistence>,
    pub reals: Vec<PlannedReal>,
    /// Failed servers stay with weight 0 instead of being removed.
    pub inhibit_on_failure: bool,
    /// Servers with a checker start down until a check passes.
    pub alpha: bool,
    /// Minimum total weight of live servers; below it the sorry server (if
    /// any) takes all traffic.
    pub quorum: u32,
    pub sorry: Option<PlannedReal>,
}

/// A service's key in the services map of its family (`services` or
/// `services6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceMapKey {
    V4(ServiceKey),
    V6(ServiceKey6),
}

impl PlannedService {
    /// The services-map key, in network byte order as the packet has it.
    pub fn key(&self) -> ServiceMapKey {
        let port = self.port.to_be();
        let proto = self.protocol.number();
        match self.vip {
            IpAddr::V4(vip) => ServiceMapKey::V4(ServiceKey {
                vip: vip.octets(),
                port,
                proto,
                _pad: 0,
            }),
            IpAddr::V6(vip) => ServiceMapKey::V6(ServiceKey6 {
                vip: vip.octets(),
                port,
                proto,
                _pad: 0,
            }),
        }
    }

    /// VIP:port as ipvsadm writes it ([2001:db8::100]:80 for IPv6).
    pub fn endpoint(&self) -> SocketAddr {
        SocketAddr::new(self.vip, self.port)
    }
}

impl Protocol {
    /// IPPROTO_TCP / IPPROTO_UDP.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => IPPROTO_TCP,
            Protocol::Udp => IPPROTO_UDP,
        }
    }
}

/// The IPv4 addresses among `addrs` (for what deals with IPv4 only: the
/// sync daemon's and BGP's source, IPv4 TUN's, VRRPv2/v3-over-IPv4's).
pub fn ipv4_only<'a>(
    addrs: impl IntoIterator<Item = &'a IpAddr>,
) -> impl Iterator<Item = Ipv4Addr> {
    addrs.into_iter().filter_map(|a| match a {
        IpAddr::V4(v4) => Some(*v4),
        IpAddr::V6(_) => None,
    })
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub services: Vec<PlannedService>,
}

impl Plan {
    /// The IPv4 VIPs of the services (what VRRP, BGP and the TUN source
    /// deal with so far), with repeats.
    pub fn ipv4_vips(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        ipv4_only(self.services.iter().map(|s| &s.vip))
    }

    /// Every real server of every service, sorry servers included.
    pub fn reals(&self) -> impl Iterator<Item = &PlannedReal> {
        self.services
            .iter()
            .flat_map(|s| s.reals.iter().chain(s.sorry.iter()))
    }
}

/// LbGlobals::flags for these services: NAT replies to look for, port-0
/// services to fall back to.
pub fn global_flags<'a>(services: impl IntoIterator<Item = &'a PlannedService>) -> u32 {
    services.into_iter().fold(0, |flags, s| {
        flags
            | match (s.forward, s.vip) {
                (ForwardKind::Nat, IpAddr::V4(_)) => GLOBAL_FLAG_NAT,
                (ForwardKind::Nat, IpAddr::V6(_)) => GLOBAL_FLAG_NAT6,
                _ => 0,
            }
            | if s.port == 0 { GLOBAL_FLAG_PORT0 } else { 0 }
    })
}

pub fn forward_kind(kind: LbKind) -> ForwardKind {
    match kind {
        LbKind::Dr => ForwardKind::Dr,
        LbKind::Tun => ForwardKind::Tun,
        LbKind::Nat => ForwardKind::Nat,
    }
}

pub fn scheduler_kind(algo: LbAlgo) -> SchedulerKind {
    match algo {
        LbAlgo::Rr => SchedulerKind::Rr,
        LbAlgo::Wrr => SchedulerKind::Wrr,
        LbAlgo::Lc => SchedulerKind::Lc,
        LbAlgo::Wlc => SchedulerKind::Wlc,
        LbAlgo::Lblc => SchedulerKind::Lblc,
        LbAlgo::Lblcr => SchedulerKind::Lblcr,
        LbAlgo::Dh => SchedulerKind::Dh,
        LbAlgo::Sh => SchedulerKind::Sh,
        LbAlgo::Sed => SchedulerKind::Sed,
        LbAlgo::Nq => SchedulerKind::Nq,
        LbAlgo::Mh => SchedulerKind::Mh,
        LbAlgo::Fo => SchedulerKind::Fo,
        LbAlgo::Ovf => SchedulerKind::Ovf,
        LbAlgo::Twos => SchedulerKind::Twos,
    }
}

/// The flags of the service's scheduler (the others' flags mean nothing).
fn sched_flags(vs: &crate::config::VirtualServer) -> u8 {
    let (port, fallback) = match vs.lb_algo {
        LbAlgo::Sh => (vs.sh_port, vs.sh_fallback),
        LbAlgo::Mh => (vs.mh_port, vs.mh_fallback),
        _ => (false, false),
    };
    (if port { SCHED_FLAG_HASH_PORT } else { 0 }) | if fallback { SCHED_FLAG_FALLBACK } else { 0 }
}

/// Builds the plan of a valid config (every virtual service is served,
/// both families, every forwarding method).
pub fn plan(config: &Config) -> Plan {
    let mut services = Vec::new();
    let mut next_real_id = 1u32;
    for (service_id, vs) in config.virtual_server.iter().enumerate() {
        let vs = vs.get_ref();
        let vip = vs.vip;
        let mut reals = Vec::new();
        for (rs_index, rs) in vs.real_server.iter().enumerate() {
            let rs = rs.get_ref();
            // validate() refused servers of another family than the VIP's.
            if rs.ip.is_ipv6() != vip.is_ipv6() {
                continue;
            }
            reals.push(PlannedReal {
                real_id: next_real_id,
                rs_index: Some(rs_index),
                ip: rs.ip,
                port: rs.port.0,
                weight: rs.weight.0,
            });
            next_real_id += 1;
        }
        let sorry = vs.sorry_server.as_ref().and_then(|s| {
            if s.ip.is_ipv6() != vip.is_ipv6() {
                return None;
            }
            let real = PlannedReal {
                real_id: next_real_id,
                rs_index: None,
                ip: s.ip,
                port: s.port.0,
                weight: 1,
            };
            next_real_id += 1;
            Some(real)
        });
        services.push(PlannedService {
            service_id: service_id as u32,
            vip,
            port: vs.port.0,
            protocol: vs.protocol,
            forward: forward_kind(vs.lb_kind),
            scheduler: scheduler_kind(vs.lb_algo),
            sched_flags: sched_flags(vs),
            persistence: (vs.persistence_timeout > 0).then_some(Persistence {
                timeout_s: vs.persistence_timeout,
                netmask: match vs.persistence_granularity {
                    Some(Granularity::Netmask(mask)) => mask,
                    _ => Ipv4Addr::BROADCAST,
                },
                prefix6: match vs.persistence_granularity {
                    Some(Granularity::Prefix(prefix)) => prefix,
                    _ => IPV6_HOST_PREFIX,
                },
            }),
            reals,
            inhibit_on_failure: vs.inhibit_on_failure,
            alpha: vs.alpha,
            quorum: vs.quorum.0 as u32,
            sorry,
        });
    }
    Plan { services }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    #[test]
    fn seed_plan_has_one_service_two_reals_with_ids_from_1() {
        let c = parse("seed", include_str!("../../../configs/seed-dr.toml")).unwrap();
        let p = plan(&c);
        assert_eq!(p.services.len(), 1);
        let s = &p.services[0];
        assert_eq!(s.service_id, 0);
        assert_eq!(s.forward, ForwardKind::Dr);
        assert_eq!(s.scheduler, SchedulerKind::Rr);
        let ids: Vec<u32> = s.reals.iter().map(|r| r.real_id).collect();
        assert_eq!(ids, [1, 2]);
        assert_eq!(s.reals[0].ip, Ipv4Addr::new(172, 16, 122, 193));
        let ServiceMapKey::V4(key) = s.key() else {
            panic!("an IPv4 service's key is an IPv4 key")
        };
        assert_eq!(key.vip, [172, 16, 122, 100]);
        assert_eq!(key.port.to_ne_bytes(), [0, 80]);
        assert_eq!(key.proto, IPPROTO_TCP);
    }

    #[test]
    fn hashing_flags_go_to_their_scheduler_only() {
        let text = include_str!("../../../configs/seed-dr.toml").replace(
            "lb_algo = \"rr\"",
            "lb_algo = \"mh\"\nmh-fallback = true\nsh-port = true",
        );
        let p = plan(&parse("seed", &text).unwrap());
        assert_eq!(p.services[0].sched_flags, SCHED_FLAG_FALLBACK);
        let text = text.replace("lb_algo = \"mh\"", "lb_algo = \"sh\"");
        let p = plan(&parse("seed", &text).unwrap());
        assert_eq!(p.services[0].sched_flags, SCHED_FLAG_HASH_PORT);
    }
}
