//! Test and benchmark access to the data plane (feature `testing`, which
//! lb-testbed turns on): running the program on a frame, reading its
//! counters and flows, expiring or planting flows. Never used to serve.

use anyhow::{Context as _, Result, anyhow};
use aya::{
    maps::{HashMap, PerCpuArray},
    programs::Xdp,
};
use lb_common::{FlowEntry, FlowKey, LbGlobals, counters::COUNTER_COUNT, map_names};

use super::{Dataplane, program_of, sum_counters};

impl Dataplane {
    /// The program, e.g. for BPF_PROG_TEST_RUN.
    pub fn program(&mut self) -> Result<&mut Xdp> {
        program_of(&mut self.ebpf)
    }

    /// Sums the per-CPU global counters (lb_common::counters).
    pub fn counters(&self) -> Result<[u64; COUNTER_COUNT as usize]> {
        let map = self
            .ebpf
            .map(map_names::COUNTERS)
            .ok_or_else(|| anyhow!("no counters map"))?;
        sum_counters(&PerCpuArray::try_from(map)?)
    }

    /// The flow table's entry for `key` (tests, inspection).
    pub fn flow_entry(&self, key: &lb_common::FlowKey) -> Result<Option<lb_common::FlowEntry>> {
        let map = self
            .ebpf
            .map(map_names::FLOW_TABLE)
            .ok_or_else(|| anyhow!("no flow table"))?;
        let flows: HashMap<_, lb_common::FlowKey, lb_common::FlowEntry> = HashMap::try_from(map)?;
        match flows.get(key, 0) {
            Ok(e) => Ok(Some(e)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Every entry of the IPv6 flow table.
    pub fn ipv6_flows(&self) -> Result<Vec<(lb_common::FlowKey6, lb_common::FlowEntry)>> {
        let map = self
            .ebpf
            .map(map_names::FLOW_TABLE6)
            .ok_or_else(|| anyhow!("no IPv6 flow table"))?;
        let flows: HashMap<_, lb_common::FlowKey6, lb_common::FlowEntry> = HashMap::try_from(map)?;
        Ok(flows.iter().collect::<Result<_, _>>()?)
    }

    /// Removes one flow as the sweep does (tests use it to expire a flow
    /// without waiting). Returns whether it went.
    pub fn remove_flow(&mut self, key: &FlowKey) -> Result<bool> {
        // Timeouts of zero: whatever its state, the flow has expired.
        let globals = LbGlobals::default();
        self.expire_flow(lb_common::map_names::FLOW_TABLE, key, &globals, u64::MAX)
    }

    /// Writes flow-table entries directly, bypassing the counters: for
    /// benchmarks that need a table of a given fill, never for serving.
    pub fn insert_flows(
        &mut self,
        flows: impl IntoIterator<Item = (FlowKey, FlowEntry)>,
    ) -> Result<()> {
        let mut map = self.hash_map_mut::<FlowKey, FlowEntry>(map_names::FLOW_TABLE)?;
        for (key, entry) in flows {
            map.insert(key, entry, 0)
                .context("filling the flow table")?;
        }
        Ok(())
    }

    /// Points the root of service `service_id`'s least-connection tree at
    /// server `index`, as a node left stale by racing updates would be
    /// (tests of the sweep's repair). False when it keeps no tree.
    pub fn stale_least_tree_root(&mut self, service_id: u32, index: u16) -> bool {
        let Some(&slot) = self.active_slots.get(&service_id) else {
            return false;
        };
        self.least_trees.set_root(slot, index)
    }
}
