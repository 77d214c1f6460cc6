//! The agent's side of the least-connection trees (lb-common's least.rs).
//! It builds a slot's tree when it writes the slot's set, points each
//! server at its leaf once its service uses the slot, recomputes a
//! server's path whenever it changes the server's count (expiry, sync),
//! and rebuilds every tree on each sweep: a node that racing updates left
//! stale is right again within a sweep.

use std::collections::HashMap;

use lb_common::{
    Backend, RealConns,
    least::{self, LeastCost, REAL_LEAF_PRESENT, RealLeaf, Servers, leaves_for},
};

use super::bpf_sys::{SharedConns, SharedTrees};

/// The trees of the slots that have one, and where each server's leaf is.
pub(super) struct LeastTrees {
    mapping: SharedTrees,
    /// backend-set slot -> its tree's cost and servers (real id, weight),
    /// in set order.
    sets: HashMap<u32, (LeastCost, Vec<(u32, u32)>)>,
    /// real id -> (slot, index) of the servers of trees in use.
    leaves: HashMap<u32, (u32, u16)>,
}

/// A set's servers with their live counts.
struct Counted<'a> {
    servers: &'a [(u32, u32)],
    conns: &'a SharedConns,
}

impl Servers for Counted<'_> {
    fn server(&self, index: u32) -> Option<(i64, RealConns)> {
        let &(real_id, weight) = self.servers.get(index as usize)?;
        (weight > 0).then(|| {
            let (active, inactive) = self.conns.get(real_id);
            (
                i64::from(weight),
                RealConns {
                    active,
                    inactive,
                    ..RealConns::default()
                },
            )
        })
    }
}

impl LeastTrees {
    pub fn new(mapping: SharedTrees) -> Self {
        Self {
            mapping,
            sets: HashMap::new(),
            leaves: HashMap::new(),
        }
    }

    /// Builds slot `slot`'s tree over `backends` from the current counts,
    /// before the set goes live; a slot whose scheduler keeps no tree
    /// (`cost` None, or nq) gets none and its packets scan.
    pub fn build(
        &mut self,
        slot: u32,
        cost: Option<LeastCost>,
        backends: &[Backend],
        conns: &SharedConns,
    ) {
        let Some(mut tree) = self.mapping.at(slot) else {
            return;
        };
        tree.set_header(0, 0);
        self.sets.remove(&slot);
        let Some(cost) = cost.filter(|c| c.has_tree()) else {
            return;
        };
        let servers: Vec<(u32, u32)> = backends.iter().map(|b| (b.real_id, b.weight)).collect();
        let leaves = leaves_for(servers.len() as u32);
        let counted = Counted {
            servers: &servers,
            conns,
        };
        least::rebuild(&mut tree, cost, leaves, &counted);
        tree.set_header(cost as u8, leaves);
        self.sets.insert(slot, (cost, servers));
    }

    /// Once a service uses `slot` instead of `old` (None: a new service):
    /// the real_leaves entries to write, those of `old`'s servers cleared,
    /// then those of `slot`'s set. Counts changed since the build went to
    /// the old tree: the caller rebuilds `slot` after writing these.
    pub fn use_slot(&mut self, slot: u32, old: Option<u32>) -> Vec<(u32, RealLeaf)> {
        let mut writes = Vec::new();
        if let Some(old) = old.filter(|&o| o != slot) {
            writes.extend(self.forget(old));
        }
        if let Some((_, servers)) = self.sets.get(&slot) {
            for (index, &(real_id, _)) in servers.iter().enumerate() {
                self.leaves.insert(real_id, (slot, index as u16));
                let leaf = RealLeaf {
                    set: slot,
                    index: index as u16,
                    flags: REAL_LEAF_PRESENT,
                };
                writes.push((real_id, leaf));
            }
        }
        writes
    }

    /// Drops slot `slot`'s tree (its service went, or moved to the other
    /// slot): the real_leaves entries to clear.
    pub fn forget(&mut self, slot: u32) -> Vec<(u32, RealLeaf)> {
        if let Some(mut tree) = self.mapping.at(slot) {
            tree.set_header(0, 0);
        }
        let Some((_, servers)) = self.sets.remove(&slot) else {
            return Vec::new();
        };
        let mut cleared = Vec::new();
        for (real_id, _) in servers {
            if self.leaves.get(&real_id).is_some_and(|&(s, _)| s == slot) {
                self.leaves.remove(&real_id);
                cleared.push((real_id, RealLeaf::default()));
            }
        }
        cleared
    }

    /// Recomputes slot `slot`'s whole tree from the current counts.
    pub fn rebuild(&self, slot: u32, conns: &SharedConns) {
        let (Some((cost, servers)), Some(mut tree)) = (self.sets.get(&slot), self.mapping.at(slot))
        else {
            return;
        };
        let leaves = leaves_for(servers.len() as u32);
        least::rebuild(&mut tree, *cost, leaves, &Counted { servers, conns });
    }

    /// Recomputes every tree (each sweep).
    pub fn rebuild_all(&self, conns: &SharedConns) {
        for &slot in self.sets.keys() {
            self.rebuild(slot, conns);
        }
    }

    /// Recomputes server `real_id`'s path after its count changed.
    pub fn changed(&self, real_id: u32, conns: &SharedConns) {
        let Some(&(slot, index)) = self.leaves.get(&real_id) else {
            return;
        };
        let (Some((cost, servers)), Some(mut tree)) = (self.sets.get(&slot), self.mapping.at(slot))
        else {
            return;
        };
        let leaves = leaves_for(servers.len() as u32);
        least::update(
            &mut tree,
            *cost,
            leaves,
            &Counted { servers, conns },
            index.into(),
        );
    }

    /// Overwrites slot `slot`'s root (dataplane/testing.rs); false when
    /// the slot has no tree.
    #[cfg(feature = "testing")]
    pub fn set_root(&self, slot: u32, index: u16) -> bool {
        use lb_common::least::Nodes as _;
        let (true, Some(mut tree)) = (self.sets.contains_key(&slot), self.mapping.at(slot)) else {
            return false;
        };
        tree.set_node(1, index);
        true
    }
}
