//! The flow table: every packet of a connection goes to the same real
//! server, and every flow is counted in its server's REAL_CONNS (active or
//! inactive, by its IPVS state) from the moment it is created.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use lb_common::{
    FlowEntry, FlowKey, IPPROTO_TCP, REAL_FLAG_ACTIVE, RealServer,
    conntrack::{S_NONE, S_UDP, is_active, tcp_next},
    counters,
};

use crate::maps::{FLOW_TABLE, REALS, conns_add, count};

/// BPF_NOEXIST: create only. The caller knows the key is absent; if another
/// CPU created it meanwhile, that CPU counted it.
const BPF_NOEXIST: u64 = 1;

/// What the flow table knows of a packet's connection.
pub enum Lookup {
    /// A live connection: its real server.
    Hit(u32, &'static RealServer),
    /// No entry: a new connection.
    Miss,
    /// An entry whose server was removed since (config or failed health
    /// check), or of another service: the connection is rescheduled into
    /// this entry (IPVS's expire_nodest_conn).
    Stale(*mut FlowEntry),
}

/// The (active, inactive) counts a flow in `state` contributes.
#[inline(always)]
fn weight_of(state: u8) -> (i64, i64) {
    if is_active(state) { (1, 0) } else { (0, 1) }
}

/// The state a new flow starts in.
#[inline(always)]
fn first_state(flow: &FlowKey, tcp_flags: u8) -> u8 {
    if flow.proto == IPPROTO_TCP {
        tcp_next(S_NONE, tcp_flags)
    } else {
        S_UDP
    }
}

/// Looks the packet's connection up, refreshing its last-seen time and TCP
/// state (moving it between its server's active and inactive counts).
#[inline(always)]
pub fn lookup(flow: &FlowKey, service_id: u32, tcp_flags: u8) -> Lookup {
    let Some(ptr) = FLOW_TABLE.get_ptr_mut(flow) else {
        return Lookup::Miss;
    };
    // SAFETY: the pointer comes from the map lookup; only the agent deletes
    // entries, and only ones idle for their whole timeout.
    let entry = unsafe { &mut *ptr };
    let real = match REALS.get(entry.real_id) {
        Some(real) if entry.service_id == service_id && real.flags & REAL_FLAG_ACTIVE != 0 => real,
        _ => {
            count(counters::FLOW_STALE);
            return Lookup::Stale(ptr);
        }
    };
    entry.last_seen_ns = unsafe { bpf_ktime_get_ns() };
    if flow.proto == IPPROTO_TCP {
        let next = tcp_next(entry.state, tcp_flags);
        if is_active(next) != is_active(entry.state) {
            let (a0, i0) = weight_of(entry.state);
            let (a1, i1) = weight_of(next);
            conns_add(entry.real_id, a1 - a0, i1 - i0);
        }
        entry.state = next;
    }
    count(counters::FLOW_HIT);
    Lookup::Hit(entry.real_id, real)
}

/// Remembers the server chosen for a new connection and counts it.
#[inline(always)]
pub fn insert(flow: &FlowKey, service_id: u32, real_id: u32, tcp_flags: u8) {
    let state = first_state(flow, tcp_flags);
    let entry = FlowEntry {
        real_id,
        service_id,
        last_seen_ns: unsafe { bpf_ktime_get_ns() },
        state,
        _pad: [0; 7],
    };
    count(counters::FLOW_NEW);
    if FLOW_TABLE.insert(flow, entry, BPF_NOEXIST).is_err() {
        // Full (or created by another CPU this instant): forwarded untracked.
        count(counters::FLOW_INSERT_FAILED);
        return;
    }
    let (a, i) = weight_of(state);
    conns_add(real_id, a, i);
}

/// Reschedules a stale entry in place onto `real_id`: its old server's
/// count goes down, the new one's up.
#[inline(always)]
pub fn reuse(ptr: *mut FlowEntry, flow: &FlowKey, service_id: u32, real_id: u32, tcp_flags: u8) {
    // SAFETY: the pointer came from the lookup of this packet.
    let entry = unsafe { &mut *ptr };
    let (a0, i0) = weight_of(entry.state);
    conns_add(entry.real_id, -a0, -i0);
    let state = first_state(flow, tcp_flags);
    entry.real_id = real_id;
    entry.service_id = service_id;
    entry.state = state;
    entry.last_seen_ns = unsafe { bpf_ktime_get_ns() };
    count(counters::FLOW_NEW);
    let (a, i) = weight_of(state);
    conns_add(real_id, a, i);
}
