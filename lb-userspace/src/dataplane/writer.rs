//! Writing config into the maps so that a packet never sees a half-written
//! state: real servers first, then each service's backend set into the slot
//! not in use, then the service entry flipped to that slot in one update.

use anyhow::{Context as _, Result};
use aya::maps::{DevMapHash, PerCpuArray, PerCpuValues};
use lb_common::{
    BACKEND_SET_SLOTS_PER_SERVICE, Backend, BackendSet, LbGlobals, LbGlobals6, LookupTable,
    REAL_FLAG_ACTIVE, REAL_FLAG_IPV6, REAL_FLAG_MAC_VALID, RealServer, SERVICE_FLAG_STANDBY,
    SchedState, SchedulerKind, ServiceFilter, ServiceInfo, TrafficStats, WeightTable,
    least::{LeastCost, RealLeaf},
    map_names,
    service_hit::{self, ServiceHit},
};

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::netlink::LinkInfo;

/// Outer source addresses of TUN packets, one per family (unspecified:
/// none, no TUN service of that family).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunnelSources {
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

/// ipvsadm --set tcp tcpfin udp, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnTimeouts {
    pub tcp: u32,
    pub tcpfin: u32,
    pub udp: u32,
    /// lblc/lblcr expiration (net.ipv4.vs.lblc_expiration).
    pub locality_expiration: u32,
}

impl ConnTimeouts {
    /// The timeout fields of LbGlobals (LbGlobals::timeout_s reads them).
    pub fn as_globals(&self) -> LbGlobals {
        LbGlobals {
            timeout_tcp_s: self.tcp,
            timeout_tcpfin_s: self.tcpfin,
            timeout_udp_s: self.udp,
            locality_expiration_s: self.locality_expiration,
            ..LbGlobals::default()
        }
    }
}

impl Default for ConnTimeouts {
    fn default() -> Self {
        use lb_common::conntrack::{DEFAULT_TIMEOUTS_S, S_ESTABLISHED, S_FIN_WAIT, S_UDP};
        Self {
            tcp: DEFAULT_TIMEOUTS_S[S_ESTABLISHED as usize],
            tcpfin: DEFAULT_TIMEOUTS_S[S_FIN_WAIT as usize],
            udp: DEFAULT_TIMEOUTS_S[S_UDP as usize],
            locality_expiration: lb_common::LOCALITY_DEFAULT_EXPIRATION_S,
        }
    }
}

use super::Dataplane;
use crate::planning::{
    plan::{PlannedReal, PlannedService, ServiceMapKey},
    sched_tables::{MhServer, dh_table, mh_table, sh_table},
};

/// The dh / sh / mh table of a backend set (None for other schedulers);
/// `weights`: the set's, in its order.
fn lookup_table(
    svc: &PlannedService,
    backends: &[Backend],
    weights: &[u32],
) -> Option<LookupTable> {
    match svc.scheduler {
        SchedulerKind::Dh => Some(dh_table(backends.len())),
        // sh fills by the current weights (ip_vs_sh_reassign).
        SchedulerKind::Sh => Some(sh_table(weights)),
        // mh by the last non-zero weights: the configured ones.
        SchedulerKind::Mh => Some(mh_table(
            &backends
                .iter()
                .filter_map(|b| {
                    let real = svc
                        .reals
                        .iter()
                        .chain(svc.sorry.iter())
                        .find(|r| r.real_id == b.real_id)?;
                    Some(MhServer {
                        ip: real.ip,
                        port: real.port,
                        last_weight: real.weight,
                    })
                })
                .collect::<Vec<_>>(),
        )),
        _ => None,
    }
}

impl Dataplane {
    /// Facts about the interfaces the data plane needs: the (outside)
    /// interface's MAC (source of forwarded frames), MTU and index; the
    /// inside interface when two-armed; the TUN outer source address; and
    /// the GLOBAL_FLAG_* bits of the plan (plan::global_flags).
    pub fn set_globals(
        &mut self,
        link: &LinkInfo,
        inside: Option<&LinkInfo>,
        tun_src: TunnelSources,
        flags: u32,
        timeouts: ConnTimeouts,
    ) -> Result<()> {
        // IPv6's first: a TUN service of either family finds its source
        // written once the flags (through lb_globals) announce the plan.
        self.maps()?
            .globals6
            .set(
                0,
                LbGlobals6 {
                    tun_src: tun_src.v6.octets(),
                },
                0,
            )
            .context("writing lb_globals6")?;
        let globals = LbGlobals {
            iface_mac: link.mac,
            mtu: u16::try_from(link.mtu).unwrap_or(u16::MAX),
            tun_src: tun_src.v4.octets(),
            ifindex: link.index,
            flags,
            inside_ifindex: inside.map_or(0, |l| l.index),
            inside_mac: inside.map_or([0; 6], |l| l.mac),
            _pad: [0; 2],
            timeout_tcp_s: timeouts.tcp,
            timeout_tcpfin_s: timeouts.tcpfin,
            timeout_udp_s: timeouts.udp,
            locality_expiration_s: timeouts.locality_expiration,
            netns_cookie: crate::netlink::netns_cookie().unwrap_or(0),
        };
        self.maps()?
            .globals
            .set(0, globals, 0)
            .context("writing lb_globals")
    }

    /// The interfaces the program runs on, which it may redirect to.
    pub fn set_tx_ports(&mut self, ifindexes: &[u32]) -> Result<()> {
        let mut ports: DevMapHash<_> = DevMapHash::try_from(
            self.ebpf
                .map_mut(lb_common::map_names::TX_PORTS)
                .ok_or_else(|| anyhow::anyhow!("no tx_ports map"))?,
        )?;
        for &index in ifindexes {
            ports
                .insert(index, index, None, 0)
                .with_context(|| format!("adding interface {index} to tx_ports"))?;
        }
        Ok(())
    }

    /// Writes one real server. `active` = it may receive packets (flows to
    /// an inactive one are rescheduled). Without a MAC it must be kept out of
    /// backend sets.
    ///
    /// An array slot is updated in place: a packet racing with a MAC change
    /// may see a mix of the two MACs once. MAC changes are rare and TCP
    /// retransmits; a double-buffered slot is not worth a lookup per packet.
    pub fn write_real(
        &mut self,
        real: &PlannedReal,
        mac: Option<[u8; 6]>,
        active: bool,
    ) -> Result<()> {
        let (ip, family) = match real.ip {
            IpAddr::V4(ip) => (ip.octets(), 0),
            IpAddr::V6(_) => ([0; 4], REAL_FLAG_IPV6),
        };
        let entry = RealServer {
            ip,
            port: real.port.to_be(),
            flags: family
                | if active { REAL_FLAG_ACTIVE } else { 0 }
                | if mac.is_some() {
                    REAL_FLAG_MAC_VALID
                } else {
                    0
                },
            mac: mac.unwrap_or_default(),
            _pad: [0; 2],
        };
        let context = || format!("writing real server {} (id {})", real.ip, real.real_id);
        let maps = self.maps()?;
        // The address before the entry that says where it is.
        if let IpAddr::V6(ip) = real.ip {
            maps.real_addrs6
                .set(real.real_id, ip.octets(), 0)
                .with_context(context)?;
        }
        maps.reals.set(real.real_id, entry, 0).with_context(context)
    }

    /// Removes a service: its packets go to the kernel from now on (IPVS:
    /// ipvsadm -D). Its flows are not looked at again and expire.
    pub fn remove_service(&mut self, svc: &PlannedService) -> Result<()> {
        // Before the entry goes: no hit is taken for a service that is gone.
        self.service_hits.store(svc.service_id, 0);
        let maps = self.maps()?;
        let removed = match svc.key() {
            ServiceMapKey::V4(key) => maps.services.remove(&key),
            ServiceMapKey::V6(key) => maps.services6.remove(&key),
        };
        match removed {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => {
                return Err(e).with_context(|| format!("removing service {}", svc.endpoint()));
            }
        }
        if let Some(slot) = self.active_slots.remove(&svc.service_id) {
            let leaves = self.least_trees.forget(slot);
            self.write_real_leaves(&leaves)?;
        }
        // After the entry went: its bit never clears under a live service.
        self.filter_bits.remove(&svc.service_id);
        self.write_filter()
    }

    /// Writes service_filter if the services' bits changed since the last
    /// write.
    fn write_filter(&mut self) -> Result<()> {
        let filter = ServiceFilter::of(self.filter_bits.values().copied());
        if filter == self.filter_written {
            return Ok(());
        }
        self.maps()?
            .service_filter
            .set(0, filter, 0)
            .context("writing service_filter")?;
        self.filter_written = filter;
        Ok(())
    }

    /// Zeroes the traffic statistics of ids given to new services and real
    /// servers (an id may have served something removed earlier).
    pub fn reset_stats(&mut self, service_ids: &[u32], real_ids: &[u32]) -> Result<()> {
        let cpus = aya::util::nr_cpus()
            .map_err(|(_, e)| e)
            .context("counting CPUs")?;
        let zero = || PerCpuValues::try_from(vec![TrafficStats::default(); cpus]);
        for (name, ids) in [
            (map_names::SERVICE_STATS, service_ids),
            (map_names::REAL_STATS, real_ids),
        ] {
            let mut stats: PerCpuArray<_, TrafficStats> = PerCpuArray::try_from(
                self.ebpf
                    .map_mut(name)
                    .ok_or_else(|| anyhow::anyhow!("no {name} map"))?,
            )?;
            for &id in ids {
                stats
                    .set(id, zero()?, 0)
                    .with_context(|| format!("zeroing {name}[{id}]"))?;
            }
        }
        Ok(())
    }

    /// Whether any flow or persistence template still refers to a real
    /// server (so its id must not go to a new one).
    pub fn real_busy(&self, real_id: u32) -> bool {
        self.real_conns(real_id) != (0, 0) || self.real_templates(real_id) != 0
    }

    /// Writes the service with `backends` (in scheduling order) into the
    /// slot not in use, then flips the service entry to it. `standby`: not
    /// VRRP master for its VIP; packets are passed to the kernel.
    pub(super) fn write_service(
        &mut self,
        svc: &PlannedService,
        backends: &[Backend],
        standby: bool,
    ) -> Result<()> {
        let mut set = BackendSet::default();
        for (slot, backend) in set.backends.iter_mut().zip(backends) {
            *slot = *backend;
        }
        set.count = backends.len().min(set.backends.len()) as u32;
        let first_slot = svc.service_id * BACKEND_SET_SLOTS_PER_SERVICE;
        let slot = match self.active_slots.get(&svc.service_id) {
            Some(&active) if active == first_slot => first_slot + 1,
            _ => first_slot,
        };
        let info = ServiceInfo {
            service_id: svc.service_id,
            backend_set: slot,
            forward: svc.forward as u8,
            sched: svc.scheduler as u8,
            sched_flags: svc.sched_flags,
            _pad: 0,
            flags: if standby { SERVICE_FLAG_STANDBY } else { 0 },
            persist_timeout_s: svc.persistence.map_or(0, |p| p.timeout_s),
            persist_mask: svc.persistence.map_or(0, |p| p.map_mask(svc.vip.is_ipv6())),
        };
        let weights: Vec<u32> = backends.iter().map(|b| b.weight).collect();
        let table = lookup_table(svc, backends, &weights);
        let maps = self.maps()?;
        if let Some(table) = table {
            // Before the flip: a packet never sees the new set without it.
            maps.lookup_tables
                .insert(slot, table, 0)
                .context("writing the scheduler's lookup table")?;
        }
        if matches!(
            svc.scheduler,
            SchedulerKind::Fo | SchedulerKind::Ovf | SchedulerKind::Twos
        ) {
            // Before the flip, as the lookup table.
            maps.weight_tables
                .insert(slot, WeightTable::of(&weights), 0)
                .context("writing the scheduler's weight table")?;
        }
        if svc.scheduler == SchedulerKind::Wrr {
            // IPVS resets wrr's mark whenever the destinations change.
            maps.sched_state
                .set(svc.service_id, SchedState::wrr_for(&weights), 0)
                .context("writing the wrr state")?;
        }
        // Before the flip, as the tables above.
        self.least_trees.build(
            slot,
            LeastCost::of(svc.scheduler),
            &set.backends[..set.count as usize],
            &self.conns,
        );
        let maps = self.maps()?;
        maps.backend_sets
            .set(slot, set, 0)
            .with_context(|| format!("writing the backend set of {}", svc.endpoint()))?;
        let hit = ServiceHit {
            forward: info.forward,
            standby,
        };
        let (bit, word) = match svc.key() {
            ServiceMapKey::V4(key) => {
                (ServiceFilter::bit_v4(&key), service_hit::word_of(&key, hit))
            }
            ServiceMapKey::V6(key) => (ServiceFilter::bit_v6(&key), 0),
        };
        // Before the entry: a packet of the service always finds its bit.
        self.filter_bits.insert(svc.service_id, bit);
        self.write_filter()?;
        let maps = self.maps()?;
        match svc.key() {
            ServiceMapKey::V4(key) => maps.services.insert(key, info, 0),
            ServiceMapKey::V6(key) => maps.services6.insert(key, info, 0),
        }
        .with_context(|| format!("writing service {}", svc.endpoint()))?;
        // After the entry: hits see what the entry says (a later id's word
        // replaces a removed service's whole).
        self.service_hits.store(svc.service_id, word);
        let old = self.active_slots.insert(svc.service_id, slot);
        let leaves = self.least_trees.use_slot(slot, old);
        self.write_real_leaves(&leaves)?;
        // Counts that changed between the build and the leaves went to the
        // old tree.
        self.least_trees.rebuild(slot, &self.conns);
        Ok(())
    }

    /// Writes real_leaves entries (least_trees.rs says which).
    fn write_real_leaves(&mut self, leaves: &[(u32, RealLeaf)]) -> Result<()> {
        let maps = self.maps()?;
        for &(real_id, leaf) in leaves {
            maps.real_leaves
                .set(real_id, leaf, 0)
                .with_context(|| format!("writing the tree leaf of real server id {real_id}"))?;
        }
        Ok(())
    }
}
