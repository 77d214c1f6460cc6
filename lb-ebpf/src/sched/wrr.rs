//! Weighted round robin (ip_vs_wrr.c): servers take turns in proportion to
//! their weights, interleaved. IPVS keeps a current weight `cw` that steps
//! down by the weights' gcd each time the list wraps, and picks the next
//! server (after the last one chosen) whose weight is at least `cw`.
//!
//! IPVS loops until it finds one; here the search is two passes at most:
//! the rest of the list at the current weight, then, after one step down,
//! the whole list, where the heaviest server always qualifies
//! (cw <= max - (gcd - 1) <= max). Same choices, bounded work.

use lb_common::{BackendSet, MAX_BACKENDS_PER_SERVICE, SchedState, WRR_AT_HEAD};

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
#[inline(always)]
fn first_at_least(set: &BackendSet, start: u32, count: u32, cw: i32) -> Option<u32> {
    for i in 0..MAX_BACKENDS_PER_SERVICE {
        // black_box: without it the compiler turns the index into a pointer
        // stepped by 8, which the verifier cannot bound.
        let idx = core::hint::black_box(start + i);
        if idx >= count {
            break;
        }
        let backend = set.backends.get(idx as usize)?;
        if backend.weight as i64 >= cw as i64 && backend.weight > 0 {
            return Some(idx);
        }
    }
    None
}
