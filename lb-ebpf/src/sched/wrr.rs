//! Weighted round robin (ip_vs_wrr.c): servers take turns in proportion to
//! their weights, interleaved. IPVS keeps a current weight `cw` that steps
//! down by the weights' gcd each time the list wraps, and picks the next
//! server (after the last one chosen) whose weight is at least `cw`.
//!
//! IPVS loops until it finds one; here the search is two passes at most:
//! the rest of the list at the current weight, then, after one step down,
//! the whole list, where the heaviest server always qualifies
//! (cw <= max - (gcd - 1) <= max). Same choices, bounded work.

use lb_common::{BackendSet, SchedState, WRR_AT_HEAD};

use super::scan::{Visit, scan};
use crate::maps::SCHED_STATE;

#[inline(always)]
pub fn pick(service_id: u32, set: &BackendSet) -> Option<u32> {
    let state = SCHED_STATE.get_ptr_mut(service_id)?;
    // SAFETY: map value pointer from a successful lookup.
    let st: &mut SchedState = unsafe { &mut *state };
    let count = set.count;
    if st.wrr_mw <= 0 || count == 0 {
        return None;
    }
    let start = if st.wrr_last == WRR_AT_HEAD {
        0
    } else {
        st.wrr_last + 1
    };
    if let Some(found) = first_at_least(set, start, count, st.wrr_cw) {
        st.wrr_last = found;
        return Some(set.backends.get(found as usize)?.real_id);
    }
    st.wrr_cw -= st.wrr_di;
    if st.wrr_cw <= 0 {
        st.wrr_cw = st.wrr_mw;
    }
    let found = first_at_least(set, 0, count, st.wrr_cw)?;
    st.wrr_last = found;
    Some(set.backends.get(found as usize)?.real_id)
}

/// The first index in start..count whose weight is at least `cw`.
struct AtLeast<'a> {
    set: &'a BackendSet,
    start: u32,
    cw: i32,
    found: Option<u32>,
}

impl Visit for AtLeast<'_> {
    #[inline(always)]
    fn visit(&mut self, i: u32) -> bool {
        // black_box: without it the compiler folds the two bounds checks
        // into one the verifier cannot follow.
        let idx = core::hint::black_box(self.start + i);
        if idx >= self.set.count {
            return false;
        }
        match self.set.backends.get(idx as usize) {
            Some(b) if b.weight > 0 && b.weight as i64 >= self.cw as i64 => {
                self.found = Some(idx);
                false
            }
            Some(_) => true,
            None => false,
        }
    }
}

#[inline(always)]
fn first_at_least(set: &BackendSet, start: u32, count: u32, cw: i32) -> Option<u32> {
    let mut v = AtLeast {
        set,
        start,
        cw,
        found: None,
    };
    scan(count.saturating_sub(start), &mut v);
    v.found
}
