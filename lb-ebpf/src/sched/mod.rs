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

/// The in-set check every visit of a set starts with (least-connection
/// trees use it too).
pub(crate) use scan::backend_at;

use lb_common::{SchedulerKind, ServiceInfo, WeightTable};

use crate::{
    family::Flow,
    maps::{BACKEND_SETS, WEIGHT_TABLES},
};
use hashed::Hash;
use lb_common::least::LeastCost;

/// The real id chosen for a new connection of `svc`, or None when no server
/// may take it (empty set, all weights 0, unknown scheduler).
#[inline(always)]
pub fn schedule<F: Flow>(svc: &ServiceInfo, flow: &F) -> Option<u32> {
    let set = BACKEND_SETS.get(svc.backend_set)?;
    match SchedulerKind::from_u8(svc.sched)? {
        SchedulerKind::Rr => rr::pick(svc.service_id, set),
        SchedulerKind::Wrr => wrr::pick(svc.service_id, set),
        // One call site for the four (the cost a value, not a constant
        // per arm): the verifier walks the scan's callback once per call
        // site, and four of them left no room in its budget.
        kind
        @ (SchedulerKind::Lc | SchedulerKind::Wlc | SchedulerKind::Sed | SchedulerKind::Nq) => {
            least::pick(
                svc.backend_set,
                set,
                core::hint::black_box(LeastCost::of(kind)?),
            )
        }
        SchedulerKind::Fo => weight::pick(set, weight_table(svc)?, false),
        SchedulerKind::Ovf => weight::pick(set, weight_table(svc)?, true),
        SchedulerKind::Twos => twos::pick(set, weight_table(svc)?),
        SchedulerKind::Dh => hashed::pick(svc, set, flow, Hash::Destination),
        SchedulerKind::Sh => hashed::pick(svc, set, flow, Hash::Source),
        SchedulerKind::Mh => hashed::pick(svc, set, flow, Hash::Maglev),
        SchedulerKind::Lblc => locality::pick(svc, set, flow, false),
        SchedulerKind::Lblcr => locality::pick(svc, set, flow, true),
    }
}

/// The agent's WeightTable of the service's current backend set.
#[inline(always)]
fn weight_table(svc: &ServiceInfo) -> Option<&'static WeightTable> {
    // SAFETY: the agent writes a slot's table whole before the service
    // names the slot, and never in place while it does.
    unsafe { WEIGHT_TABLES.get(&svc.backend_set) }
}

/// A stable choice for a connection the flow table cannot hold: the flow's
/// hash over the set, skipping quiesced (weight 0) servers. The same flow
/// gets the same server while the set stays the same.
#[inline(always)]
pub fn by_flow_hash<F: Flow>(svc: &ServiceInfo, flow: &F) -> Option<u32> {
    let set = BACKEND_SETS.get(svc.backend_set)?;
    if set.count == 0 {
        return None;
    }
    let hash = lb_common::sched_hash::mh_hash(
        flow.src_fold() ^ flow.dst_fold().rotate_left(16),
        u16::from_be(flow.sport()) ^ u16::from_be(flow.dport()),
        lb_common::MH_HASH1_KEY,
        u32::from(flow.proto()),
    );
    let mut probe = FirstLive {
        set,
        start: hash.checked_rem(set.count)?,
        found: None,
    };
    scan::scan(set.count, &mut probe);
    probe.found
}

/// The first server with a weight at or after `start`, wrapping around.
struct FirstLive<'a> {
    set: &'a lb_common::BackendSet,
    start: u32,
    found: Option<u32>,
}

impl scan::Visit for FirstLive<'_> {
    #[inline(always)]
    fn visit(&mut self, offset: u32) -> bool {
        let mut idx = self.start + offset;
        if idx >= self.set.count {
            idx -= self.set.count;
        }
        // black_box: keeps the index a plain bounds-checked scalar (the
        // compiler's merged range checks lose the verifier).
        if let Some(b) = scan::backend_at(self.set, core::hint::black_box(idx))
            && b.weight > 0
        {
            self.found = Some(b.real_id);
            return false;
        }
        true
    }
}
