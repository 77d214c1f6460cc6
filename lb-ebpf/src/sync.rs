//! Connection sync's data-plane half: new connections, state changes and
//! new persistence templates go to the agent through a ring buffer, which
//! batches them into IPVS sync messages for the other balancers. Nothing
//! here runs on a plain flow-table hit, nor at all without GLOBAL_FLAG_SYNC.

use lb_common::{
    FlowKey, GLOBAL_FLAG_SYNC, Ipv6Octets, LbGlobals, SyncEvent, SyncEvent6, counters,
};

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

/// An IPv6 connection or template as announce6 takes it: source (a
/// template's client network), destination, ports (network order),
/// protocol.
pub type Key6<'a> = (&'a Ipv6Octets, &'a Ipv6Octets, u16, u16, u8);

/// `announce` for IPv6: the event is written straight into the ring (lb6's
/// stack has no room for its 52 bytes beside the flow's key).
#[inline(always)]
pub fn announce6(
    globals: &LbGlobals,
    (src, dst, sport, dport, proto): Key6<'_>,
    (service_id, real_id): (u32, u32),
    state: u8,
    kind: u8,
) {
    if globals.flags & GLOBAL_FLAG_SYNC == 0 {
        return;
    }
    let Some(mut entry) = SYNC_EVENTS.reserve_untyped::<SyncEvent6>(0) else {
        count(counters::SYNC_EVENT_LOST);
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: the reservation is SyncEvent6's size and alignment (8 is a
    // multiple of its 4), ours until submitted; every field is written
    // before the submit, by field (no event on the stack).
    unsafe {
        (*event).key.src = *src;
        (*event).key.dst = *dst;
        (*event).key.sport = sport;
        (*event).key.dport = dport;
        (*event).key.proto = proto;
        (*event).key._pad = [0; 3];
        (*event).service_id = service_id;
        (*event).real_id = real_id;
        (*event).state = state;
        (*event).kind = kind;
        (*event)._pad = [0; 2];
    }
    entry.submit(0);
}
