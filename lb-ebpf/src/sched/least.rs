//! The least-connection family: lc (ip_vs_lc.c), wlc (ip_vs_wlc.c), sed
//! (ip_vs_sed.c), nq (ip_vs_nq.c), with lb-common's costs (least.rs).
//! lc, wlc and sed read the root of their set's tree; nq, lblc/lblcr and a
//! set without a tree scan it. Servers with weight 0 are skipped; ties go
//! to the first in list order, as IPVS's strict comparisons do.

use lb_common::{BackendSet, least::LeastCost};

use super::scan::{Visit, backend_at, scan};
use crate::maps::{conns_of, least_tree};

/// No server chosen yet.
const NONE: u32 = u32::MAX;

struct Least<'a> {
    set: &'a BackendSet,
    cost: LeastCost,
    /// Index, cost and weight of the best server so far.
    best: u32,
    best_cost: i64,
    best_weight: i64,
}

impl Visit for Least<'_> {
    #[inline(always)]
    fn visit(&mut self, idx: u32) -> bool {
        let Some(backend) = backend_at(self.set, idx) else {
            return false;
        };
        if backend.weight == 0 {
            return true;
        }
        let conns = conns_of(backend.real_id);
        if self.cost == LeastCost::NeverQueue && conns.active == 0 {
            self.best = idx;
            return false;
        }
        let doh = self.cost.of_conns(&conns);
        let weight = backend.weight as i64;
        if self.best == NONE
            || self
                .cost
                .beats(doh, weight, self.best_cost, self.best_weight)
        {
            self.best = idx;
            self.best_cost = doh;
            self.best_weight = weight;
        }
        true
    }
}

/// The real id of the least loaded server by `cost` of the set in
/// backend-set slot `slot`.
#[inline(always)]
pub fn pick(slot: u32, set: &BackendSet, cost: LeastCost) -> Option<u32> {
    let idx = tree_pick(slot, set, cost).or_else(|| pick_index(set, cost))?;
    Some(set.backends.get(idx as usize)?.real_id)
}

/// The root of the slot's tree, if it has one and it names a server that
/// may be chosen (else the caller scans: an empty answer is rare, and a
/// tree whose set was just replaced may name one that went).
#[inline(always)]
fn tree_pick(slot: u32, set: &BackendSet, cost: LeastCost) -> Option<u32> {
    if !cost.has_tree() {
        return None;
    }
    let idx = lb_common::least::best(least_tree(slot, cost, set.count)?)?;
    // black_box: a plain bounds-checked scalar for the verifier.
    let b = backend_at(set, core::hint::black_box(idx))?;
    (b.weight > 0).then_some(idx)
}

/// The index in the set of the least loaded server by `cost`, by a scan.
#[inline(always)]
pub fn pick_index(set: &BackendSet, cost: LeastCost) -> Option<u32> {
    let mut v = Least {
        set,
        cost,
        best: NONE,
        best_cost: 0,
        best_weight: 0,
    };
    scan(set.count, &mut v);
    (v.best != NONE).then_some(v.best)
}
