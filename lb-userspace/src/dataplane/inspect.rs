//! What the agent reads back from its own data plane: connection counts,
//! map memory and fill.

use std::{
    fs,
    os::fd::{AsFd as _, AsRawFd as _},
};

use anyhow::Result;
use aya::maps::{MapData, PerCpuArray};
use lb_common::counters::COUNTER_COUNT;

use super::{Dataplane, bpf_sys, map_data};

impl Dataplane {
    /// A real server's (active, inactive) connection counts, as the
    /// schedulers see them.
    pub fn real_conns(&self, real_id: u32) -> (i64, i64) {
        self.conns.get(real_id)
    }

    /// Adds `delta` to one of a server's counts and recomputes its path in
    /// its service's least-connection tree: every count the agent changes
    /// goes through here.
    pub(super) fn add_to_count(&self, real_id: u32, which: bpf_sys::Counter, delta: i64) {
        self.conns.add(real_id, which, delta);
        if which != bpf_sys::Counter::Persistent {
            self.least_trees.changed(real_id, &self.conns);
        }
    }

    /// Kernel memory of each map (name, max entries, bytes), from
    /// /proc/self/fdinfo's memlock: what the configured sizes cost.
    pub fn map_memory(&self) -> Vec<(String, u32, u64)> {
        let mut out = Vec::new();
        for (name, _) in self.ebpf.maps() {
            let Ok(data) = map_data(&self.ebpf, name) else {
                continue;
            };
            let fd = data.fd().as_fd().as_raw_fd();
            let info = fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap_or_default();
            let field = |key: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            };
            if let (Some(bytes), Some(entries)) = (field("memlock:"), field("max_entries:")) {
                out.push((name.to_string(), entries as u32, bytes));
            }
        }
        out
    }

    /// Instructions the verifier processed for each loaded XDP program
    /// (bpf_prog_info's verified_insns), by name: how close each is to the
    /// kernel's budget of a million.
    pub fn verified_insns(&self) -> Vec<(String, u32)> {
        let mut out: Vec<(String, u32)> = self
            .ebpf
            .programs()
            .filter_map(|(name, program)| {
                let count = program.info().ok()?.verified_instruction_count()?;
                Some((name.to_string(), count))
            })
            .collect();
        out.sort();
        out
    }

    /// The raw fd of one of the program's maps (for a probe that must run
    /// on another thread; valid while the Dataplane lives).
    pub fn map_fd(&self, name: &str) -> Result<std::os::fd::RawFd> {
        Ok(map_data(&self.ebpf, name)?.fd().as_fd().as_raw_fd())
    }

    /// (flows after the last sweep, flow-table capacity).
    pub fn flow_fill(&self) -> (u64, u32) {
        (self.flows_at_sweep, self.flow_capacity)
    }

    /// Packets the program has sent on to a real server (TX and redirect),
    /// since it was loaded.
    pub fn forwarded_packets(&self) -> Result<u64> {
        let map = self
            .ebpf
            .map(lb_common::map_names::COUNTERS)
            .ok_or_else(|| anyhow::anyhow!("no counters map"))?;
        let counters = sum_counters(&PerCpuArray::<_, u64>::try_from(map)?)?;
        Ok(counters[lb_common::counters::TX as usize]
            + counters[lb_common::counters::REDIRECT as usize])
    }

    /// A real server's count of persistence templates.
    pub fn real_templates(&self, real_id: u32) -> i64 {
        self.conns.load(real_id, bpf_sys::Counter::Persistent)
    }
}

/// Sums a per-CPU u64 counter array, any borrow of the map.
pub fn sum_counters<T: std::borrow::Borrow<MapData>>(
    map: &PerCpuArray<T, u64>,
) -> Result<[u64; COUNTER_COUNT as usize]> {
    let mut out = [0u64; COUNTER_COUNT as usize];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = map.get(&(i as u32), 0)?.iter().sum();
    }
    Ok(out)
}
