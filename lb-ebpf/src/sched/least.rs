//! The least-connection family, one scan of the backend set each:
//! lc (ip_vs_lc.c), wlc (ip_vs_wlc.c), sed (ip_vs_sed.c), nq (ip_vs_nq.c).
//! Servers with weight 0 are skipped (quiesced); ties go to the first in
//! list order, as IPVS's strict comparisons do.

use lb_common::{BackendSet, RealConns};

use super::scan::{Visit, backend_at, scan};
use crate::maps::conns_of;

/// How a scan weighs a server.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Cost {
    /// lc: least overhead (active * 256 + inactive), weights ignored.
    Overhead,
    /// wlc: least overhead / weight.
    OverheadPerWeight,
    /// sed: least (active + 1) / weight.
    ExpectedDelay,
    /// nq: the first server with no active connection, else as sed.
    NeverQueue,
}

impl Cost {
    /// The cost of a least-connection scheduler (the others: lc's).
    #[inline(always)]
    pub fn of(kind: lb_common::SchedulerKind) -> Self {
        use lb_common::SchedulerKind;
        match kind {
            SchedulerKind::Wlc => Self::OverheadPerWeight,
            SchedulerKind::Sed => Self::ExpectedDelay,
            SchedulerKind::Nq => Self::NeverQueue,
            _ => Self::Overhead,
        }
    }
}

/// No server chosen yet.
const NONE: u32 = u32::MAX;

struct Least<'a> {
    set: &'a BackendSet,
    cost: Cost,
    /// Index, cost and weight of the best server so far.
    best: u32,
    best_cost: i64,
    best_weight: i64,
}

#[inline(always)]
fn cost_of(cost: Cost, c: &RealConns) -> i64 {
    match cost {
        Cost::Overhead | Cost::OverheadPerWeight => c.overhead(),
        Cost::ExpectedDelay | Cost::NeverQueue => c.active + 1,
    }
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
        if self.cost == Cost::NeverQueue && conns.active == 0 {
            self.best = idx;
            return false;
        }
        let doh = cost_of(self.cost, &conns);
        let weight = backend.weight as i64;
        let better = self.best == NONE
            || match self.cost {
                Cost::Overhead => doh < self.best_cost,
                // best_cost / best_weight > doh / weight, without division.
                _ => self.best_cost * weight > doh * self.best_weight,
            };
        if better {
            self.best = idx;
            self.best_cost = doh;
            self.best_weight = weight;
        }
        true
    }
}

/// The real id of the least loaded server by `cost`.
#[inline(always)]
pub fn pick(set: &BackendSet, cost: Cost) -> Option<u32> {
    let idx = pick_index(set, cost)?;
    Some(set.backends.get(idx as usize)?.real_id)
}

/// As `pick`, the server's index in the set.
#[inline(always)]
pub fn pick_index(set: &BackendSet, cost: Cost) -> Option<u32> {
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
