//! Weighted random of two choices (ip_vs_twos.c): two servers drawn at
//! random in proportion to their weights; the one with the lower
//! overhead / weight wins (the first draw on a tie).

use aya_ebpf::helpers::bpf_get_prandom_u32;
use lb_common::BackendSet;

use super::scan::{Visit, backend_at, scan};
use crate::maps::conns_of;

struct TotalWeight<'a> {
    set: &'a BackendSet,
    total: u32,
}

impl Visit for TotalWeight<'_> {
    #[inline(always)]
    fn visit(&mut self, idx: u32) -> bool {
        let Some(backend) = backend_at(self.set, idx) else {
            return false;
        };
        self.total = self.total.wrapping_add(backend.weight);
        true
    }
}

/// No draw has landed yet.
const NONE: u32 = u32::MAX;

/// ip_vs_twos_schedule's second loop: each draw lands on the first server
/// where its running remainder reaches 0.
struct Draws<'a> {
    set: &'a BackendSet,
    r1: i64,
    r2: i64,
    first: u32,
    first_weight: i64,
    first_overhead: i64,
    second: u32,
    second_weight: i64,
    second_overhead: i64,
}

impl Visit for Draws<'_> {
    #[inline(always)]
    fn visit(&mut self, idx: u32) -> bool {
        let Some(backend) = backend_at(self.set, idx) else {
            return false;
        };
        let weight = backend.weight as i64;
        if weight == 0 {
            return true;
        }
        self.r1 -= weight;
        self.r2 -= weight;
        if self.r1 <= 0 && self.first == NONE {
            self.first = backend.real_id;
            self.first_weight = weight;
            self.first_overhead = conns_of(backend.real_id).overhead();
        }
        if self.r2 <= 0 && self.second == NONE {
            self.second = backend.real_id;
            self.second_weight = weight;
            self.second_overhead = conns_of(backend.real_id).overhead();
        }
        self.first == NONE || self.second == NONE
    }
}

#[inline(always)]
pub fn pick(set: &BackendSet) -> Option<u32> {
    let mut total = TotalWeight { set, total: 0 };
    scan(set.count, &mut total);
    if total.total == 0 {
        return None;
    }
    // IPVS draws in [0, total] inclusive (total + 1 values), unsigned as
    // its get_random_u32() % total_weight. (checked_rem: the verifier
    // rejects the panic path of a plain `%`.)
    let span = total.total.wrapping_add(1);
    // SAFETY: helper calls without arguments.
    let (r1, r2) = unsafe { (bpf_get_prandom_u32(), bpf_get_prandom_u32()) };
    let mut d = Draws {
        set,
        r1: r1.checked_rem(span)? as i64,
        r2: r2.checked_rem(span)? as i64,
        first: NONE,
        first_weight: 0,
        first_overhead: 0,
        second: NONE,
        second_weight: 0,
        second_overhead: 0,
    };
    scan(set.count, &mut d);
    if d.first == NONE {
        return None;
    }
    if d.second != NONE && d.second_weight * d.first_overhead > d.first_weight * d.second_overhead {
        Some(d.second)
    } else {
        Some(d.first)
    }
}
