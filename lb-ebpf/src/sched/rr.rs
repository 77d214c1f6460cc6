//! Round robin (ip_vs_rr.c): the next server after the last one chosen,
//! skipping servers with weight 0.
//!
//! The cursor is read and written without a lock: two CPUs scheduling at the
//! same instant may pick the same server once. IPVS takes a spinlock here; a
//! per-packet lock in XDP costs more than the rare repeat.

use lb_common::{BackendSet, MAX_BACKENDS_PER_SERVICE};

use crate::maps::SCHED_STATE;

#[inline(always)]
pub fn pick(service_id: u32, set: &BackendSet) -> Option<u32> {
    let state = SCHED_STATE.get_ptr_mut(service_id)?;
    let count = set.count;
    // No `count <= MAX_BACKENDS_PER_SERVICE` check here on purpose: with it
    // the compiler proves the index in range and drops the bounds check of
    // `get` below, which the verifier (blind to `%`) needs.
    if count == 0 {
        return None;
    }
    // SAFETY: map value pointer from a successful lookup.
    let start = unsafe { (*state).rr_next } % count;
    for i in 0..MAX_BACKENDS_PER_SERVICE {
        if i >= count {
            break;
        }
        let idx = (start + i) % count;
        let backend = set.backends.get(idx as usize)?;
        if backend.weight > 0 {
            unsafe { (*state).rr_next = (idx + 1) % count };
            return Some(backend.real_id);
        }
    }
    None
}
