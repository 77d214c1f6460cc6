//! Round robin (ip_vs_rr.c): the next server after the last one chosen,
//! skipping servers with weight 0.
//!
//! The cursor is read and written without a lock: two CPUs scheduling at the
//! same instant may pick the same server once. IPVS takes a spinlock here; a
//! per-packet lock in XDP costs more than the rare repeat.

use lb_common::BackendSet;

use super::scan::{Visit, scan};
use crate::maps::SCHED_STATE;

/// The first server with weight > 0 from `start`, wrapping around.
struct NextUp<'a> {
    set: &'a BackendSet,
    start: u32,
    found: Option<u32>,
}

impl Visit for NextUp<'_> {
    #[inline(always)]
    fn visit(&mut self, i: u32) -> bool {
        // checked_rem: the verifier rejects the panic path of a plain `%`.
        let Some(idx) = (self.start + i).checked_rem(self.set.count) else {
            return false;
        };
        match self.set.backends.get(idx as usize) {
            Some(b) if b.weight > 0 => {
                self.found = Some(idx);
                false
            }
            Some(_) => true,
            None => false,
        }
    }
}

#[inline(always)]
pub fn pick(service_id: u32, set: &BackendSet) -> Option<u32> {
    let state = SCHED_STATE.get_ptr_mut(service_id)?;
    let count = set.count;
    // SAFETY: map value pointer from a successful lookup.
    let start = unsafe { (*state).rr_next }.checked_rem(count)?;
    let mut v = NextUp {
        set,
        start,
        found: None,
    };
    scan(count, &mut v);
    let idx = v.found?;
    // SAFETY: the same map value pointer, still valid.
    unsafe { (*state).rr_next = (idx + 1).checked_rem(count)? };
    Some(set.backends.get(idx as usize)?.real_id)
}
