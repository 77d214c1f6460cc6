//! What the agent finds out about the host at start-up and on reload: the
//! interfaces' addresses (tunnel source, VRRP sources), the real servers'
//! MACs, VIPs nobody answers ARP for.

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use anyhow::{Result, anyhow};
use tracing::warn;

use crate::{
    config::Config,
    dataplane::TunnelSources,
    neighbours::MacTracker,
    netlink::{self, LinkInfo, Netlink},
    planning::plan::{Plan, ipv4_only},
    vrrp::instance::InstanceConfig,
};

/// How long start-up waits for real servers' MACs before attaching anyway
/// (unresolved servers get no traffic until their MAC is known).
const INITIAL_RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the neighbour table is polled while waiting at start-up.
const INITIAL_RESOLVE_POLL: Duration = Duration::from_millis(100);

/// The first IPv4 address of interface `ifindex` that is none of `vips`:
/// the balancer's own (what VRRP adverts, sync datagrams, TUN packets and
/// BGP sessions come from).
pub async fn own_address(
    nl: &Netlink,
    ifindex: u32,
    vips: &HashSet<Ipv4Addr>,
) -> Result<Option<Ipv4Addr>> {
    Ok(nl
        .ipv4_addresses(ifindex)
        .await?
        .into_iter()
        .find(|a| !vips.contains(a)))
}

/// `[global] tunnel_source` / `tunnel_source6`, or the interface's own
/// address of each family.
pub async fn tunnel_source_of(
    config: &Config,
    nl: &Netlink,
    link: &LinkInfo,
    plan: &Plan,
    governed: &HashSet<IpAddr>,
) -> Result<TunnelSources> {
    let v4 = match config.global.tunnel_source {
        Some(configured) => configured,
        None => tunnel_source(nl, link, plan, governed).await?,
    };
    let v6 = match config.global.tunnel_source6 {
        Some(configured) => configured,
        None => tunnel_source6(nl, link, plan, governed).await?,
    };
    Ok(TunnelSources { v4, v6 })
}

/// Whether any service of `plan` tunnels to its servers over `ipv6` or IPv4.
fn needs_tun(plan: &Plan, ipv6: bool) -> bool {
    plan.services
        .iter()
        .any(|s| s.forward == lb_common::ForwardKind::Tun && s.vip.is_ipv6() == ipv6)
}

/// The outer source of TUN packets: the interface's own address (not a VIP).
/// Only services with lb_kind TUN need one.
async fn tunnel_source(
    nl: &Netlink,
    link: &LinkInfo,
    plan: &Plan,
    governed: &HashSet<IpAddr>,
) -> Result<Ipv4Addr> {
    let vips: HashSet<Ipv4Addr> = plan.ipv4_vips().chain(ipv4_only(governed)).collect();
    let own = own_address(nl, link.index, &vips).await?;
    match own {
        Some(a) => Ok(a),
        None if needs_tun(plan, false) => Err(anyhow!(
            "lb_kind TUN needs an IPv4 address of the interface's own (not a VIP) as the tunnel source"
        )),
        None => Ok(Ipv4Addr::UNSPECIFIED),
    }
}

/// The same over IPv6: the interface's first global IPv6 address that is
/// no VIP (a link-local one cannot reach a routed real server).
async fn tunnel_source6(
    nl: &Netlink,
    link: &LinkInfo,
    plan: &Plan,
    governed: &HashSet<IpAddr>,
) -> Result<Ipv6Addr> {
    let vips: HashSet<IpAddr> = plan
        .services
        .iter()
        .map(|s| s.vip)
        .chain(governed.iter().copied())
        .collect();
    match own_address6(nl, link.index, &vips).await? {
        Some(a) => Ok(a),
        None if needs_tun(plan, true) => Err(anyhow!(
            "lb_kind TUN over IPv6 needs a global IPv6 address of the interface's own (not a VIP, \
             not link-local) as the tunnel source: add one, or set [global] tunnel_source6"
        )),
        None => Ok(Ipv6Addr::UNSPECIFIED),
    }
}

/// The interface's first global IPv6 address that is none of `vips` (a
/// link-local one reaches no routed peer): TUN's outer source, BGP's next
/// hop of IPv6 VIPs.
pub async fn own_address6(
    nl: &Netlink,
    ifindex: u32,
    vips: &HashSet<IpAddr>,
) -> Result<Option<Ipv6Addr>> {
    Ok(nl
        .addresses(ifindex)
        .await?
        .into_iter()
        .find_map(|a| match a {
            IpAddr::V6(a) if !vips.contains(&a.into()) && !a.is_unicast_link_local() => Some(a),
            _ => None,
        }))
}

/// Each vrrp_instance with its interface and our address on it.
pub async fn resolve_vrrp_instances(
    config: &Config,
    nl: &Netlink,
    default_iface: &str,
) -> Result<Vec<InstanceConfig>> {
    let mut out = Vec::new();
    for vi in &config.vrrp_instance {
        let vi = vi.get_ref();
        let iface = vi.interface.as_deref().unwrap_or(default_iface);
        let link = nl.link(iface).await?.ok_or_else(|| {
            anyhow!(
                "vrrp_instance {}: interface {iface} not found (see `ip link`)",
                vi.name
            )
        })?;
        let local: IpAddr = if crate::vrrp::instance::instance_is_ipv6(vi)? {
            // Unicast to global peer addresses goes from our global
            // address: the peers' sockets are bound to theirs, and ours
            // receives what is sent to it.
            let global_peers = vi.unicast_peer.iter().any(|p| match p {
                IpAddr::V6(a) => !a.is_unicast_link_local(),
                IpAddr::V4(_) => false,
            });
            let vips: HashSet<IpAddr> = vi.virtual_ipaddress.iter().map(|v| v.addr).collect();
            let global = if global_peers {
                own_address6(nl, link.index, &vips).await?
            } else {
                None
            };
            match global {
                Some(a) => a.into(),
                // VRRPv3 over IPv6 sends from the link-local address.
                None => nl
                    .link_local6(link.index)
                    .await?
                    .ok_or_else(|| {
                        anyhow!(
                            "vrrp_instance {}: {iface} has no IPv6 link-local address to send \
                             adverts from (is IPv6 disabled on it?)",
                            vi.name
                        )
                    })?
                    .into(),
            }
        } else {
            let vips: HashSet<Ipv4Addr> =
                ipv4_only(vi.virtual_ipaddress.iter().map(|v| &v.addr)).collect();
            own_address(nl, link.index, &vips)
                .await?
                .ok_or_else(|| {
                    anyhow!(
                        "vrrp_instance {}: {iface} has no IPv4 address of its own to send adverts from",
                        vi.name
                    )
                })?
                .into()
        };
        out.push(InstanceConfig::from_config(vi, iface, link, local)?);
    }
    Ok(out)
}

pub async fn resolve_initial_macs(nl: &Netlink, ifindex: u32, macs: &mut MacTracker) -> Result<()> {
    let deadline = Instant::now() + INITIAL_RESOLVE_TIMEOUT;
    let mut probe_failed = HashSet::new();
    loop {
        macs.update(&nl.neighbours(ifindex).await?);
        let missing = macs.unresolved();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            for ip in missing {
                warn!(
                    "real server {ip}: no MAC address yet (not answering ARP on this link?); \
                     it gets no traffic until it resolves"
                );
            }
            return Ok(());
        }
        for ip in &missing {
            if let Err(e) = netlink::probe(*ip)
                && probe_failed.insert(*ip)
            {
                warn!("real server {ip}: cannot probe: {e}");
            }
        }
        tokio::time::sleep(INITIAL_RESOLVE_POLL).await;
    }
}

/// In DR the balancer must own the VIP on the link (answer ARP for it). For
/// a VIP no vrrp_instance manages that is the operator's job: say so when it
/// is missing.
pub async fn warn_about_missing_vips(
    nl: &Netlink,
    ifindex: u32,
    iface: &str,
    plan: &Plan,
    governed: &HashSet<IpAddr>,
) {
    let Ok(addrs) = nl.addresses(ifindex).await else {
        return;
    };
    for vip in unowned_vips(plan, &addrs, governed) {
        if vip.is_ipv4() {
            warn!(
                "VIP {vip} is not an address of {iface}: nobody answers ARP for it (ip addr add {vip}/32 dev {iface})"
            );
        } else {
            // Deprecated: never the source of the balancer's own
            // connections (health checks would be answered to the servers'
            // own copy of the VIP).
            warn!(
                "VIP {vip} is not an address of {iface}: nobody answers neighbour solicitations for it \
                 (ip -6 addr add {vip}/128 dev {iface} nodad preferred_lft 0)"
            );
        }
    }
}

/// The services' VIPs, each once, that are neither an address of the
/// interface nor managed by a vrrp_instance.
fn unowned_vips(plan: &Plan, addrs: &[IpAddr], governed: &HashSet<IpAddr>) -> Vec<IpAddr> {
    let vips: std::collections::BTreeSet<IpAddr> = plan.services.iter().map(|s| s.vip).collect();
    vips.into_iter()
        .filter(|v| !addrs.contains(v) && !governed.contains(v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::parse, planning::plan::plan};

    #[test]
    fn a_vip_of_several_services_is_warned_about_once() {
        // Two VIPs, the first one's services not adjacent in the plan.
        let service = |vip: &str, port: u16| {
            format!(
                "[[virtual_server]]\nvip = \"{vip}\"\nport = {port}\nprotocol = \"TCP\"\n\
                 lb_algo = \"rr\"\nlb_kind = \"DR\"\n\
                 [[virtual_server.real_server]]\nip = \"10.0.1.1\"\nport = {port}\n"
            )
        };
        let text = [("10.0.0.1", 80), ("10.0.0.2", 80), ("10.0.0.1", 443)]
            .map(|(vip, port)| service(vip, port))
            .concat();
        let plan = plan(&parse("vips", &text).unwrap());
        let (a, b) = (
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        );
        assert_eq!(unowned_vips(&plan, &[], &HashSet::new()), [a, b]);
        assert_eq!(unowned_vips(&plan, &[b], &HashSet::new()), [a]);
        assert_eq!(unowned_vips(&plan, &[], &HashSet::from([a])), [b]);
        // An IPv6 VIP is warned about too, unless an instance governs it.
        let v6 = service("10.0.0.1", 80)
            + &service("2001:db8::2", 80).replace("10.0.1.1", "2001:db8::1:1");
        let plan = crate::planning::plan::plan(&parse("v6", &v6).unwrap());
        let c: IpAddr = "2001:db8::2".parse().unwrap();
        assert_eq!(unowned_vips(&plan, &[a], &HashSet::new()), [c]);
        assert!(unowned_vips(&plan, &[a], &HashSet::from([c])).is_empty());
    }
}
