//! Connection sync's map side: what other balancers announced goes into
//! the flow table and the persistence templates (with the per-server
//! counts moved along, so ActiveConn/InActConn stay exact), and this
//! balancer's whole table is read for the periodic full announcement.

use std::os::fd::AsFd as _;

use anyhow::{Context as _, Result};
use aya::Pod;
use lb_common::{FlowEntry, FlowKey, FlowKey6, PersistEntry, PersistKey, PersistKey6, map_names};

use super::{Dataplane, bpf_sys, map_data};
use crate::sync::records::SyncedEntry;

/// Map update flag: create or replace.
const BPF_ANY: u64 = 0;

/// One connection or template of this balancer, as the tables hold it.
pub enum LiveEntry {
    Flow(FlowKey, FlowEntry),
    Template(PersistKey, PersistEntry),
    Flow6(FlowKey6, FlowEntry),
    Template6(PersistKey6, PersistEntry),
}

impl Dataplane {
    /// Writes announced connections and templates over ours (the sender
    /// saw the newest packet of them); the counts of a replaced entry's
    /// server go down, the new one's up. Returns how many went in (a full
    /// flow table takes no more; the data plane then hashes them as it
    /// does untracked connections).
    pub fn apply_synced(&mut self, entries: &[SyncedEntry]) -> Result<u64> {
        let mut applied = 0;
        for entry in entries {
            let written = match entry {
                SyncedEntry::Flow(key, flow) => {
                    self.write_synced(map_names::FLOW_TABLE, key, flow, flow_count)?
                }
                SyncedEntry::Template(key, template) => {
                    self.write_synced(map_names::PERSIST, key, template, template_count)?
                }
                SyncedEntry::Flow6(key, flow) => {
                    self.write_synced(map_names::FLOW_TABLE6, key, flow, flow_count)?
                }
                SyncedEntry::Template6(key, template) => {
                    self.write_synced(map_names::PERSIST6, key, template, template_count)?
                }
            };
            applied += u64::from(written);
        }
        Ok(applied)
    }

    /// Replaces `key`'s entry in hash map `map` with `value`; the count
    /// (`counted`: server and which count) of the old entry goes down, the
    /// new one's up. False when the map took no more.
    fn write_synced<K: Pod, V: Pod>(
        &mut self,
        map: &str,
        key: &K,
        value: &V,
        counted: impl Fn(&V) -> (u32, bpf_sys::Counter),
    ) -> Result<bool> {
        let mut entries = self.hash_map_mut::<K, V>(map)?;
        let old = entries.get(key, 0).ok();
        if entries.insert(key, value, BPF_ANY).is_err() {
            return Ok(false);
        }
        if let Some(old) = old {
            let (real_id, which) = counted(&old);
            self.add_to_count(real_id, which, -1);
        }
        let (real_id, which) = counted(value);
        self.add_to_count(real_id, which, 1);
        Ok(true)
    }

    /// Every connection and template in the tables, batch by batch.
    pub fn for_each_live(&self, mut visit: impl FnMut(LiveEntry)) -> Result<()> {
        self.visit_flows(map_names::FLOW_TABLE, &mut visit, LiveEntry::Flow)?;
        self.visit_templates(map_names::PERSIST, &mut visit, LiveEntry::Template)?;
        self.visit_flows(map_names::FLOW_TABLE6, &mut visit, LiveEntry::Flow6)?;
        self.visit_templates(map_names::PERSIST6, &mut visit, LiveEntry::Template6)
    }

    /// Every entry of flow table `map`, batch by batch, as `entry`.
    fn visit_flows<K: Copy + Default>(
        &self,
        map: &str,
        visit: &mut impl FnMut(LiveEntry),
        entry: fn(K, FlowEntry) -> LiveEntry,
    ) -> Result<()> {
        let fd = map_data(&self.ebpf, map)?.fd().as_fd();
        bpf_sys::for_each_batch(fd, |keys: &[K], values: &[FlowEntry]| {
            for (k, v) in keys.iter().zip(values) {
                visit(entry(*k, *v));
            }
            Ok::<(), anyhow::Error>(())
        })
        .with_context(|| format!("reading {map} for connection sync"))
    }

    /// Every template of `map`, as `entry`.
    fn visit_templates<K: Copy + Default>(
        &self,
        map: &str,
        visit: &mut impl FnMut(LiveEntry),
        entry: fn(K, PersistEntry) -> LiveEntry,
    ) -> Result<()> {
        let fd = map_data(&self.ebpf, map)?.fd().as_fd();
        for (k, v) in bpf_sys::lookup_all::<K, PersistEntry>(fd)
            .with_context(|| format!("reading {map} for connection sync"))?
        {
            visit(entry(k, v));
        }
        Ok(())
    }
}

/// Which count a flow entry is in: its server's ActiveConn or InActConn.
fn flow_count(f: &FlowEntry) -> (u32, bpf_sys::Counter) {
    (f.real_id, bpf_sys::Counter::of_state(f.state))
}

/// A template counts in its server's persistent count.
fn template_count(t: &PersistEntry) -> (u32, bpf_sys::Counter) {
    (t.real_id, bpf_sys::Counter::Persistent)
}
