//! Connection sync's data-plane half: new connections, state changes and
//! new persistence templates go to the agent through a ring buffer, which
//! batches them into IPVS sync messages for the other balancers. Nothing
//! here runs on a plain flow-table hit, nor at all without GLOBAL_FLAG_SYNC.

use lb_common::{FlowKey, GLOBAL_FLAG_SYNC, LbGlobals, SyncEvent, counters};

use crate::maps::{SYNC_EVENTS, count};

/// Tells the agent about a connection (or template, `kind`) in `state`.
#[inline(always)]
pub fn announce(
    globals: &LbGlobals,
    key: FlowKey,
    (service_id, real_id): (u32, u32),
    state: u8,
    kind: u8,
) {
    if globals.flags & GLOBAL_FLAG_SYNC == 0 {
        return;
    }
    let event = SyncEvent {
        key,
        service_id,
        real_id,
        state,
        kind,
        _pad: [0; 2],
    };
    if SYNC_EVENTS.output(&event, 0).is_err() {
        count(counters::SYNC_EVENT_LOST);
    }
}
