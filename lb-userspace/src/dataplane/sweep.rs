//! The agent's expiry sweep (IPVS's connection timers): flows past their
//! state's timeout leave the flow table and their servers' counts,
//! persistence templates past persistence_timeout with no connection left,
//! lblc/lblcr entries unused for the expiration time.

use std::collections::{HashMap as StdHashMap, HashSet};
use std::os::fd::AsFd as _;

use anyhow::{Context as _, Result};
use aya::Pod;
use lb_common::{
    FlowEntry, FlowKey, FlowKey6, Ipv6Octets, LbGlobals, LocalityEntry, LocalityKey, LocalityKey6,
    PersistEntry, PersistKey, PersistKey6, map_names,
};

use super::{ConnTimeouts, Dataplane, bpf_sys, map_data, monotonic_ns};

/// (service id, client network) of the live IPv6 connections under a
/// persistence template.
type ControlledNets6 = HashSet<(u32, Ipv6Octets)>;

/// BPF_NOEXIST: create only.
const BPF_NOEXIST: u64 = 1;
/// BPF_EXIST: update only.
const BPF_EXIST: u64 = 2;

impl Dataplane {
    /// Removes the flows whose state's timeout has passed and takes them
    /// off their servers' counts; then the persistence templates and
    /// locality entries that have expired. Returns how many flows went.
    ///
    /// Each flow goes with BPF_MAP_LOOKUP_AND_DELETE_ELEM, which returns the
    /// entry as it was when it left: the count subtracted is the state it
    /// really had, even if a packet moved it since the scan. If that packet
    /// made it live again, the entry is put back (and nothing subtracted),
    /// unless the data plane already created a new one for the next packet.
    pub fn sweep_expired(&mut self, timeouts: ConnTimeouts) -> Result<usize> {
        let globals = timeouts.as_globals();
        let now = monotonic_ns();
        let templates: Vec<(PersistKey, PersistEntry)> =
            bpf_sys::lookup_all(map_data(&self.ebpf, map_names::PERSIST)?.fd().as_fd())
                .context("reading the persistence templates")?;
        // (service, client network mask) of every template: the live
        // connections under one keep it.
        let masks: HashSet<(u32, u32)> = templates
            .iter()
            .map(|(_, t)| (t.service_id, t.mask))
            .collect();
        let mut controlled: HashSet<(u32, lb_common::Ipv4Octets)> = HashSet::new();
        let (mut removed, mut live) = (0, 0u64);
        // The flows are walked batch by batch, never held whole (a million
        // would be 40 MB): an fd of its own, as expiring flows needs self.
        let flow_table = map_data(&self.ebpf, map_names::FLOW_TABLE)?
            .fd()
            .as_fd()
            .try_clone_to_owned()?;
        bpf_sys::for_each_batch(
            flow_table.as_fd(),
            |keys: &[FlowKey], entries: &[FlowEntry]| -> Result<()> {
                for (key, entry) in keys.iter().zip(entries) {
                    if entry
                        .remaining_ns(globals.timeout_s(entry.state), now)
                        .is_none()
                        && self.expire_flow(map_names::FLOW_TABLE, key, &globals, now)?
                    {
                        removed += 1;
                        continue;
                    }
                    live += 1;
                    for (service, mask) in masks.iter().filter(|(s, _)| *s == entry.service_id) {
                        controlled
                            .insert((*service, (u32::from_ne_bytes(key.src) & mask).to_ne_bytes()));
                    }
                }
                Ok(())
            },
        )
        .context("sweeping the flow table")?;
        let templates6: Vec<(PersistKey6, PersistEntry)> =
            bpf_sys::lookup_all(map_data(&self.ebpf, map_names::PERSIST6)?.fd().as_fd())
                .context("reading the IPv6 persistence templates")?;
        let (removed6, live6, controlled6) = self.sweep_ipv6_flows(&templates6, &globals, now)?;
        removed += removed6;
        self.flows_at_sweep = live + live6;
        self.sweep_templates(map_names::PERSIST, templates, now, |k, t| {
            controlled.contains(&(t.service_id, k.client_net))
        })?;
        self.sweep_templates(map_names::PERSIST6, templates6, now, |k, t| {
            controlled6.contains(&(t.service_id, k.client_net))
        })?;
        self.sweep_locality(timeouts.locality_expiration, now)?;
        // Heals any node that racing updates left stale (least.rs).
        self.least_trees.rebuild_all(&self.conns);
        Ok(removed)
    }

    /// The IPv6 flow table's expiry: (removed, live, the (service, client
    /// network) of every live flow under one of `templates`).
    fn sweep_ipv6_flows(
        &mut self,
        templates: &[(PersistKey6, PersistEntry)],
        globals: &LbGlobals,
        now: u64,
    ) -> Result<(usize, u64, ControlledNets6)> {
        // (service, prefix length) of every template.
        let prefixes: HashSet<(u32, u32)> = templates
            .iter()
            .map(|(_, t)| (t.service_id, t.mask))
            .collect();
        let mut controlled = HashSet::new();
        let (mut removed, mut live) = (0, 0u64);
        let table = map_data(&self.ebpf, map_names::FLOW_TABLE6)?
            .fd()
            .as_fd()
            .try_clone_to_owned()?;
        bpf_sys::for_each_batch(
            table.as_fd(),
            |keys: &[FlowKey6], entries: &[FlowEntry]| -> Result<()> {
                for (key, entry) in keys.iter().zip(entries) {
                    let expired = entry
                        .remaining_ns(globals.timeout_s(entry.state), now)
                        .is_none();
                    if expired && self.expire_flow(map_names::FLOW_TABLE6, key, globals, now)? {
                        removed += 1;
                        continue;
                    }
                    live += 1;
                    for (service, prefix) in prefixes.iter().filter(|(s, _)| *s == entry.service_id)
                    {
                        controlled
                            .insert((*service, PersistKey6::client_net_of(&key.src, *prefix)));
                    }
                }
                Ok(())
            },
        )
        .context("sweeping the IPv6 flow table")?;
        Ok((removed, live, controlled))
    }

    /// Persistence templates live while a connection they made lives, and
    /// persistence_timeout after the last one (IPVS re-arms a template whose
    /// timer fires while it still controls connections). `controlled`:
    /// whether a live connection is under a template. `name`: PERSIST or
    /// PERSIST6.
    fn sweep_templates<K: Pod + Default>(
        &mut self,
        name: &str,
        templates: Vec<(K, PersistEntry)>,
        now: u64,
        controlled: impl Fn(&K, &PersistEntry) -> bool,
    ) -> Result<()> {
        if templates.is_empty() {
            return Ok(());
        }
        let maps = self.maps()?;
        let v4 = maps
            .services
            .iter()
            .filter_map(|item| item.ok())
            .map(|(_, i)| i);
        let v6 = maps
            .services6
            .iter()
            .filter_map(|item| item.ok())
            .map(|(_, i)| i);
        let timeouts: StdHashMap<u32, u32> = v4
            .chain(v6)
            .map(|info| (info.service_id, info.persist_timeout_s))
            .collect();
        let mut rearm = Vec::new();
        for (key, t) in templates {
            let timeout_ns =
                u64::from(timeouts.get(&t.service_id).copied().unwrap_or(0)) * 1_000_000_000;
            let expired = |t: &PersistEntry| t.last_seen_ns.saturating_add(timeout_ns) <= now;
            if !expired(&t) {
                continue;
            }
            if controlled(&key, &t) {
                rearm.push((
                    key,
                    PersistEntry {
                        last_seen_ns: now,
                        ..t
                    },
                ));
                continue;
            }
            // A new connection may use it meanwhile: then it stays.
            if let Some(gone) = self.remove_unless_live(name, &key, |t| !expired(t))? {
                self.add_to_count(gone.real_id, bpf_sys::Counter::Persistent, -1);
            }
        }
        let mut map = self.hash_map_mut::<K, PersistEntry>(name)?;
        for (key, t) in rearm {
            // BPF_EXIST: re-arm only a template the data plane still has.
            let _ = map.insert(key, t, BPF_EXIST);
        }
        Ok(())
    }

    /// lblc/lblcr entries unused for the expiration time go (IPVS's
    /// lblc_full_check), IPv4's and IPv6's.
    fn sweep_locality(&mut self, expiration_s: u32, now: u64) -> Result<()> {
        self.sweep_locality_of::<LocalityKey>(map_names::LOCALITY, expiration_s, now)?;
        self.sweep_locality_of::<LocalityKey6>(map_names::LOCALITY6, expiration_s, now)
    }

    fn sweep_locality_of<K: Pod + Default>(
        &mut self,
        name: &str,
        expiration_s: u32,
        now: u64,
    ) -> Result<()> {
        let entries: Vec<(K, LocalityEntry)> =
            bpf_sys::lookup_all(map_data(&self.ebpf, name)?.fd().as_fd())
                .with_context(|| format!("reading the locality cache {name}"))?;
        let stale: Vec<K> = entries
            .into_iter()
            .filter(|(_, e)| {
                e.lastuse_ns
                    .saturating_add(u64::from(expiration_s) * 1_000_000_000)
                    <= now
            })
            .map(|(k, _)| k)
            .collect();
        let mut map = self.hash_map_mut::<K, LocalityEntry>(name)?;
        for key in &stale {
            let _ = map.remove(key);
        }
        Ok(())
    }

    /// Removes the flow `key` of flow table `table` (FLOW_TABLE or
    /// FLOW_TABLE6) if it has expired, and takes it off its server's count.
    pub(super) fn expire_flow<K: Pod + Default>(
        &mut self,
        table: &str,
        key: &K,
        globals: &LbGlobals,
        now: u64,
    ) -> Result<bool> {
        let gone = self.remove_unless_live(table, key, |e: &FlowEntry| {
            e.remaining_ns(globals.timeout_s(e.state), now).is_some()
        })?;
        let Some(entry) = gone else {
            return Ok(false);
        };
        self.add_to_count(entry.real_id, bpf_sys::Counter::of_state(entry.state), -1);
        Ok(true)
    }

    /// Removes an expired entry with BPF_MAP_LOOKUP_AND_DELETE_ELEM and
    /// returns it as it was when it went, to be taken off the counters.
    /// None when it was gone already, or when `live` says a packet
    /// refreshed it between the scan and the delete: it is then put back
    /// (BPF_NOEXIST: if the data plane made a new entry meanwhile, that one
    /// stays and the old one counts as gone).
    fn remove_unless_live<K: Pod + Default, V: Pod + Default>(
        &mut self,
        name: &str,
        key: &K,
        live: impl Fn(&V) -> bool,
    ) -> Result<Option<V>> {
        let fd = map_data(&self.ebpf, name)?.fd().as_fd();
        let Some(gone): Option<V> = bpf_sys::lookup_and_delete(fd, key)
            .with_context(|| format!("removing an expired entry of {name}"))?
        else {
            return Ok(None);
        };
        if live(&gone)
            && self
                .hash_map_mut::<K, V>(name)?
                .insert(key, gone, BPF_NOEXIST)
                .is_ok()
        {
            return Ok(None);
        }
        Ok(Some(gone))
    }
}
