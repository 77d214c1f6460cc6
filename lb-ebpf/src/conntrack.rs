//! The flow table: every packet of a connection goes to the same real
//! server, and every flow is counted in its server's REAL_CONNS (active or
//! inactive, by its IPVS state) from the moment it is created.

use lb_common::{
    FlowEntry, IPPROTO_TCP, REAL_FLAG_ACTIVE, RealServer,
    conntrack::{S_NONE, S_UDP, is_active, tcp_next},
    counters,
};

use core::intrinsics::{AtomicOrdering, atomic_cxchg};

use crate::{
    family::Flow,
    kernel::{E2BIG, EEXIST},
    maps::{FLOW_TABLE_FULL_UNTIL, REALS, conns_add, count},
};

/// The low byte of FlowEntry's state word.
const STATE_MASK: u64 = 0xff;
/// Compare-and-swap attempts before a state change is given up (another
/// CPU moving the same flow each time).
const CAS_ATTEMPTS: u32 = 3;
/// Not an IPVS state: an entry being rescheduled by one CPU.
const STATE_CLAIMED: u8 = 0xff;

// Inserts are BPF_NOEXIST: the caller knows the key is absent; if another
// CPU created it meanwhile, that CPU counted it.

/// What the flow table knows of a packet's connection.
pub enum Lookup {
    /// A live connection: its real server, and the state this packet moved
    /// it to if it moved (what connection sync announces).
    Hit(u32, &'static RealServer, Option<u8>),
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
fn first_state<F: Flow>(flow: &F, tcp_flags: u8) -> u8 {
    if flow.proto() == IPPROTO_TCP {
        tcp_next(S_NONE, tcp_flags)
    } else {
        S_UDP
    }
}

/// Looks the packet's connection up, refreshing its last-seen time and TCP
/// state (moving it between its server's active and inactive counts).
#[inline(always)]
pub fn lookup<F: Flow>(flow: &F, service_id: u32, tcp_flags: u8) -> Lookup {
    classify(flow, flow.entry(), service_id, tcp_flags)
}

/// As `lookup`, with the flow's entry already looked up (`entry`).
#[inline(always)]
pub fn classify<F: Flow>(
    flow: &F,
    entry: Option<*mut FlowEntry>,
    service_id: u32,
    tcp_flags: u8,
) -> Lookup {
    let Some(ptr) = entry else {
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
    entry.last_seen_ns = crate::clock::now_ns();
    let mut moved = None;
    if flow.proto() == IPPROTO_TCP {
        // Packets of one flow may be processed on two CPUs at once (veth
        // and multi-queue NICs without flow steering): the state moves by
        // compare-and-swap, so one transition is counted once.
        for _ in 0..CAS_ATTEMPTS {
            // black_box: keeps the table index a plain bounds-checked
            // scalar (the compiler's masking of it loses the verifier).
            let Some((from, to)) =
                swap_state(ptr, |s| tcp_next(core::hint::black_box(s), tcp_flags))
            else {
                continue;
            };
            if is_active(to) != is_active(from) {
                let (a0, i0) = weight_of(from);
                let (a1, i1) = weight_of(to);
                conns_add(entry.real_id, a1 - a0, i1 - i0);
            }
            if to != from {
                moved = Some(to);
            }
            break;
        }
    }
    count(counters::FLOW_HIT);
    Lookup::Hit(entry.real_id, real, moved)
}

/// Tries to move the entry's state to `next(state)` atomically. The state
/// byte shares an aligned 8-byte word with the padding after it; the word
/// is swapped whole. Some((from, to)) when this CPU made the change (or
/// there was none to make: from == to), None when another CPU changed the
/// word first.
#[inline(always)]
fn swap_state(ptr: *mut FlowEntry, next: impl Fn(u8) -> u8) -> Option<(u8, u8)> {
    // SAFETY: `state` is at offset 16 of the 8-aligned FlowEntry, followed by
    // 7 padding bytes: the word is inside the value. Little-endian: the
    // state is its low byte.
    let word = unsafe { &raw mut (*ptr).state } as *mut u64;
    // SAFETY: `word` is inside the map value (above).
    let current = unsafe { core::ptr::read_volatile(word) };
    let from = (current & STATE_MASK) as u8;
    let to = next(from);
    if to == from {
        return Some((from, to));
    }
    let wanted = (current & !STATE_MASK) | to as u64;
    // SAFETY: as above; BPF has an atomic compare-and-exchange of 8 bytes.
    let (_, swapped) = unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(
            word, current, wanted,
        )
    };
    swapped.then_some((from, to))
}

/// What became of a new connection's entry.
pub enum Inserted {
    /// Remembered with the server chosen, in this state.
    Tracked(u8),
    /// Another CPU created it this instant: its server is the connection's.
    Raced(u32),
    /// The table is full: the connection goes untracked.
    Full,
}

/// After an insert found the table full, this CPU tries none for this
/// long. A failed insert is the costliest step of a new connection (the
/// preallocated table searches every CPU's free list before it gives up:
/// a third of a new flow's time here), and in a flood against a full table
/// it would be every SYN's. Entries only go in the agent's sweep (once a
/// second), so the table stays full meanwhile anyway. The coarse clock
/// moves by ticks: in effect one attempt per CPU per tick.
const FULL_BACKOFF_NS: u64 = 1_000_000;

/// Whether this CPU saw the table full less than FULL_BACKOFF_NS ago.
#[inline(always)]
fn recently_full(now: u64) -> bool {
    FLOW_TABLE_FULL_UNTIL
        .get(0)
        .is_some_and(|until| now < *until)
}

#[inline(always)]
fn note_full(now: u64) {
    if let Some(until) = FLOW_TABLE_FULL_UNTIL.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe { *until = now + FULL_BACKOFF_NS };
    }
}

/// Remembers the server chosen for a new connection and counts it.
#[inline(always)]
pub fn insert<F: Flow>(flow: &F, service_id: u32, real_id: u32, tcp_flags: u8) -> Inserted {
    let state = first_state(flow, tcp_flags);
    let now = crate::clock::now_ns();
    count(counters::FLOW_NEW);
    if recently_full(now) {
        count(counters::FLOW_INSERT_FAILED);
        return Inserted::Full;
    }
    let entry = FlowEntry {
        real_id,
        service_id,
        last_seen_ns: now,
        state,
        _pad: [0; 7],
    };
    match flow.create(&entry) {
        Ok(()) => {
            let (a, i) = weight_of(state);
            conns_add(real_id, a, i);
            Inserted::Tracked(state)
        }
        Err(e) if e == -EEXIST => match flow.entry() {
            // SAFETY: a map value pointer, read once.
            Some(ptr) => Inserted::Raced(unsafe { (*ptr).real_id }),
            None => Inserted::Full,
        },
        Err(e) => {
            if e == -E2BIG {
                note_full(now);
            }
            count(counters::FLOW_INSERT_FAILED);
            Inserted::Full
        }
    }
}

/// Reschedules a stale entry in place onto `real_id`: its old server's
/// count goes down, the new one's up. The state it starts in, unless
/// another CPU rescheduled it this instant.
#[inline(always)]
pub fn reuse<F: Flow>(
    ptr: *mut FlowEntry,
    flow: &F,
    service_id: u32,
    real_id: u32,
    tcp_flags: u8,
) -> Option<u8> {
    // SAFETY: the pointer came from the lookup of this packet.
    let entry = unsafe { &mut *ptr };
    let old_real = entry.real_id;
    let state = first_state(flow, tcp_flags);
    // Claim the entry by swapping its state: if another CPU reschedules
    // it at the same instant, only one of them moves the counts (the
    // other's packet goes to its choice untracked).
    let (old_state, _) = swap_state(ptr, |s| if s == STATE_CLAIMED { s } else { STATE_CLAIMED })?;
    if old_state == STATE_CLAIMED {
        return None;
    }
    let (a0, i0) = weight_of(old_state);
    conns_add(old_real, -a0, -i0);
    entry.real_id = real_id;
    entry.service_id = service_id;
    entry.last_seen_ns = crate::clock::now_ns();
    entry.state = state;
    count(counters::FLOW_NEW);
    let (a, i) = weight_of(state);
    conns_add(real_id, a, i);
    Some(state)
}
