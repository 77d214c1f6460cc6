//! The flow table: every packet of a connection goes to the same real server.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use lb_common::{
    FlowEntry, FlowKey, IPPROTO_TCP, REAL_FLAG_ACTIVE, RealServer,
    conntrack::{S_NONE, S_UDP, tcp_next},
    counters,
};

use crate::maps::{FLOW_TABLE, REALS, count};

/// BPF_ANY: create or replace.
const BPF_ANY: u64 = 0;

/// The real server of an existing connection of `service_id`, refreshing its
/// last-seen time. None when the flow is unknown, or when its server was
/// removed since, by the config or a failed health check (the flow is then
/// rescheduled, as IPVS does with expire_nodest_conn).
#[inline(always)]
pub fn lookup(
    flow: &FlowKey,
    service_id: u32,
    tcp_flags: u8,
) -> Option<(u32, &'static RealServer)> {
    let entry = FLOW_TABLE.get_ptr_mut(flow)?;
    // SAFETY: the pointer comes from the map lookup; a concurrent update of
    // the same key may race, which at worst sends one packet to the new server.
    let entry = unsafe { &mut *entry };
    if entry.service_id != service_id {
        count(counters::FLOW_STALE);
        return None;
    }
    let real = REALS.get(entry.real_id)?;
    if real.flags & REAL_FLAG_ACTIVE == 0 {
        count(counters::FLOW_STALE);
        return None;
    }
    entry.last_seen_ns = unsafe { bpf_ktime_get_ns() };
    if flow.proto == IPPROTO_TCP {
        entry.state = tcp_next(entry.state, tcp_flags);
    }
    count(counters::FLOW_HIT);
    Some((entry.real_id, real))
}

/// Remembers the server chosen for a new connection.
#[inline(always)]
pub fn insert(flow: &FlowKey, service_id: u32, real_id: u32, tcp_flags: u8) {
    let entry = FlowEntry {
        real_id,
        service_id,
        last_seen_ns: unsafe { bpf_ktime_get_ns() },
        state: if flow.proto == IPPROTO_TCP {
            tcp_next(S_NONE, tcp_flags)
        } else {
            S_UDP
        },
        _pad: [0; 7],
    };
    count(counters::FLOW_NEW);
    if FLOW_TABLE.insert(flow, entry, BPF_ANY).is_err() {
        count(counters::FLOW_INSERT_FAILED);
    }
}
