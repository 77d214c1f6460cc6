//! Schedulers: choose a real server for a new connection, as IPVS's
//! ip_vs_*.c would. State lives in maps; work is bounded by
//! MAX_BACKENDS_PER_SERVICE. A flow-table hit never gets here.

mod hashed;
mod least;
mod locality;
mod rr;
mod scan;
mod twos;
mod weight;
mod wrr;

use lb_common::{FlowKey, SchedulerKind, ServiceInfo};

use crate::maps::BACKEND_SETS;
use hashed::Hash;
use least::Cost;

/// The real id chosen for a new connection of `svc`, or None when no server
/// may take it (empty set, all weights 0, unknown scheduler).
#[inline(always)]
pub fn schedule(svc: &ServiceInfo, flow: &FlowKey) -> Option<u32> {
    let set = BACKEND_SETS.get(svc.backend_set)?;
    match SchedulerKind::from_u8(svc.sched)? {
        SchedulerKind::Rr => rr::pick(svc.service_id, set),
        SchedulerKind::Wrr => wrr::pick(svc.service_id, set),
        SchedulerKind::Lc => least::pick(set, Cost::Overhead),
        SchedulerKind::Wlc => least::pick(set, Cost::OverheadPerWeight),
        SchedulerKind::Sed => least::pick(set, Cost::ExpectedDelay),
        SchedulerKind::Nq => least::pick(set, Cost::NeverQueue),
        SchedulerKind::Fo => weight::pick(set, false),
        SchedulerKind::Ovf => weight::pick(set, true),
        SchedulerKind::Twos => twos::pick(set),
        SchedulerKind::Dh => hashed::pick(svc, set, flow, Hash::Destination),
        SchedulerKind::Sh => hashed::pick(svc, set, flow, Hash::Source),
        SchedulerKind::Mh => hashed::pick(svc, set, flow, Hash::Maglev),
        SchedulerKind::Lblc => locality::pick(svc, set, flow, false),
        SchedulerKind::Lblcr => locality::pick(svc, set, flow, true),
    }
}
