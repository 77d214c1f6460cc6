//! Schedulers: choose a real server for a new connection. State lives in
//! maps; work is bounded by MAX_BACKENDS_PER_SERVICE.

mod rr;
mod wrr;

use lb_common::{SchedulerKind, ServiceInfo};

use crate::maps::BACKEND_SETS;

/// The real id chosen for a new connection of `svc`, or None when no server
/// may take it (empty set, all weights 0, unknown scheduler).
#[inline(always)]
pub fn schedule(svc: &ServiceInfo) -> Option<u32> {
    let set = BACKEND_SETS.get(svc.backend_set)?;
    match SchedulerKind::from_u8(svc.sched)? {
        SchedulerKind::Rr => rr::pick(svc.service_id, set),
        SchedulerKind::Wrr => wrr::pick(svc.service_id, set),
        // The agent refuses to load the other schedulers until they exist here.
        _ => None,
    }
}
