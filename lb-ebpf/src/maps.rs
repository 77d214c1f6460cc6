//! Every map of the data plane, in one place (Katran's balancer_maps.h).
//! Keys and values come from lb-common; sizes from lb-common's constants.
//! All are BTF maps, so `bpftool map dump` prints field names.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{cty::c_void, helpers::generated::bpf_loop};

use aya_ebpf::{
    btf_maps::{Array, DevMapHash, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
    macros::btf_map,
};
use lb_common::{
    BPF_F_MMAPABLE, BPF_F_NO_PREALLOC, BackendSet, FAMILY_PROGRAM_SLOTS, FLOW_TABLE_DEFAULT_SIZE,
    FORWARD6_PROGRAM_SLOTS, FlowEntry, FlowKey, FlowKey6, Forward6Flow, Ipv6Octets,
    LOCAL_CONNS_SIZE, LOCALITY_CACHE_SIZE, LbGlobals, LbGlobals6, LocalConn, LocalConn6,
    LocalityEntry, LocalityKey, LocalityKey6, LookupTable, MAX_BACKEND_SETS, MAX_REALS,
    MAX_SERVICES, MAX_TX_PORTS, NAT6_PROGRAM_SLOTS, NatReverse, NatReverse6, PERSIST_TABLE_SIZE,
    PersistEntry, PersistKey, PersistKey6, RealConns, RealServer, SYNC_EVENTS_BYTES, SchedState,
    ServiceFilter, ServiceInfo, ServiceKey, ServiceKey6, SyncEvent, TrafficStats, WeightTable,
    counters::COUNTER_COUNT,
    least::{self, LeastCost, LeastTree, REAL_LEAF_PRESENT, RealLeaf},
    service_hit::{self, ServiceHit},
};

/// (VIP, port, protocol) -> service.
#[btf_map]
pub static SERVICES: HashMap<ServiceKey, ServiceInfo, { MAX_SERVICES as usize }> = HashMap::new();

/// Single entry: a bit per service key (lb-common's service_filter.rs),
/// tested before SERVICES / SERVICES6 are.
#[btf_map]
pub static SERVICE_FILTER: Array<ServiceFilter, 1> = Array::new();

/// service id -> the word a flow-table hit needs of its service
/// (lb-common's service_hit.rs). Mappable: the agent stores each word
/// atomically.
#[btf_map]
pub static SERVICE_HITS: Array<u64, { MAX_SERVICES as usize }, BPF_F_MMAPABLE> = Array::new();

/// FAMILY_PROGRAM_* -> the program for frames that are not IPv4 (`lb6`),
/// written by the agent after it loaded both.
#[btf_map]
pub static FAMILY_PROGRAMS: ProgramArray<{ FAMILY_PROGRAM_SLOTS as usize }> = ProgramArray::new();

/// FORWARD6_PROGRAM_* -> a forwarding method of `lb6` in a program of its
/// own (`lb6_tun`), written by the agent after it loaded them.
#[btf_map]
pub static FORWARD6_PROGRAMS: ProgramArray<{ FORWARD6_PROGRAM_SLOTS as usize }> =
    ProgramArray::new();

/// What `lb6` decided (server, service, new flow), for the forwarding
/// program it tail-calls (a tail call carries no arguments; per CPU, and
/// the frame's run never leaves its CPU).
#[btf_map]
pub static FORWARD6_FLOW: PerCpuArray<Forward6Flow, 1> = PerCpuArray::new();

/// NAT6_PROGRAM_* -> NAT66's programs (`lb6_nat`, `lb6_nat_reply`),
/// written by the agent after it loaded them.
#[btf_map]
pub static NAT6_PROGRAMS: ProgramArray<{ NAT6_PROGRAM_SLOTS as usize }> = ProgramArray::new();

/// (IPv6 VIP, port, protocol) -> service: the same ServiceInfo, ids and
/// backend sets as IPv4 services.
#[btf_map]
pub static SERVICES6: HashMap<ServiceKey6, ServiceInfo, { MAX_SERVICES as usize }> = HashMap::new();

/// real id -> the address of an IPv6 real server (REAL_FLAG_IPV6); unused
/// slots stay zero.
#[btf_map]
pub static REAL_ADDRS6: Array<Ipv6Octets, { MAX_REALS as usize }> = Array::new();

/// Two slots per service: the destinations of a service (see ServiceInfo::backend_set).
#[btf_map]
pub static BACKEND_SETS: Array<BackendSet, { MAX_BACKEND_SETS as usize }> = Array::new();

/// backend-set slot -> fo's, ovf's and twos' view of its weights (written
/// by the agent before the set; see WeightTable).
#[btf_map]
pub static WEIGHT_TABLES: HashMap<
    u32,
    WeightTable,
    { MAX_BACKEND_SETS as usize },
    BPF_F_NO_PREALLOC,
> = HashMap::new();

/// backend-set slot -> the tournament tree of an lc, wlc or sed set
/// (lb-common's least.rs), built by the agent before the set is used.
/// Mappable: the agent recomputes nodes when it changes a count.
#[btf_map]
pub static LEAST_TREES: Array<LeastTree, { MAX_BACKEND_SETS as usize }, BPF_F_MMAPABLE> =
    Array::new();

/// real id -> its tree and leaf, for a server of an lc, wlc or sed service
/// (written by the agent with the tree).
#[btf_map]
pub static REAL_LEAVES: Array<RealLeaf, { MAX_REALS as usize }> = Array::new();

/// real id -> real server address and MAC. Slot 0 is never used.
#[btf_map]
pub static REALS: Array<RealServer, { MAX_REALS as usize }> = Array::new();

/// 5-tuple -> real server of the connection. A plain hash, not an LRU, as
/// IPVS's connection table: entries go only when the agent expires them, so
/// the per-server counters (REAL_CONNS) never lose track of one. When it is
/// full, new connections are still forwarded, untracked (counted). The agent
/// may resize it at load time.
#[btf_map]
pub static FLOW_TABLE: HashMap<FlowKey, FlowEntry, { FLOW_TABLE_DEFAULT_SIZE as usize }> =
    HashMap::new();

/// The flow table of IPv6 connections: as FLOW_TABLE, sized with it, but
/// allocated on use (a preallocated IPv6 table would pin ~100 bytes per
/// entry on balancers that serve no IPv6).
#[btf_map]
pub static FLOW_TABLE6: HashMap<
    FlowKey6,
    FlowEntry,
    { FLOW_TABLE_DEFAULT_SIZE as usize },
    BPF_F_NO_PREALLOC,
> = HashMap::new();

/// real id -> active / inactive connections (IPVS's dest counters). Mappable:
/// the agent subtracts the flows it expires with atomic operations on the
/// same memory.
#[btf_map]
pub static REAL_CONNS: Array<RealConns, { MAX_REALS as usize }, BPF_F_MMAPABLE> = Array::new();

/// backend-set slot -> dh / sh / mh lookup table (built by the agent).
/// Allocated on use: only hashing services have one.
#[btf_map]
pub static LOOKUP_TABLES: HashMap<
    u32,
    LookupTable,
    { MAX_BACKEND_SETS as usize },
    BPF_F_NO_PREALLOC,
> = HashMap::new();

/// (service, destination address) -> lblc server / lblcr server set.
#[btf_map]
pub static LOCALITY: LruHashMap<LocalityKey, LocalityEntry, { LOCALITY_CACHE_SIZE as usize }> =
    LruHashMap::new();

/// Single entry, per CPU: where a new locality entry is built before it
/// is inserted (too big for the stack beside IPv6's keys). Not pinned.
#[btf_map]
pub static LOCALITY_SCRATCH: PerCpuArray<LocalityEntry, 1> = PerCpuArray::new();

/// Single entry, per CPU: where lb6 builds a persistence template's key
/// (family.rs ScratchKey6). Not pinned.
#[btf_map]
pub static TEMPLATE6_SCRATCH: PerCpuArray<PersistKey6, 1> = PerCpuArray::new();

/// LOCALITY's IPv6 twin: (service, destination address) -> server(s).
#[btf_map]
pub static LOCALITY6: LruHashMap<LocalityKey6, LocalityEntry, { LOCALITY_CACHE_SIZE as usize }> =
    LruHashMap::new();

/// Persistence templates: (client network, service) -> real server.
#[btf_map]
pub static PERSIST: HashMap<PersistKey, PersistEntry, { PERSIST_TABLE_SIZE as usize }> =
    HashMap::new();

/// PERSIST's IPv6 twin. Allocated on use: most balancers have no
/// persistent IPv6 service.
#[btf_map]
pub static PERSIST6: HashMap<
    PersistKey6,
    PersistEntry,
    { PERSIST_TABLE_SIZE as usize },
    BPF_F_NO_PREALLOC,
> = HashMap::new();

/// service id -> scheduler state (rr cursor...).
#[btf_map]
pub static SCHED_STATE: Array<SchedState, { MAX_SERVICES as usize }> = Array::new();

/// service id -> traffic counters, per CPU.
#[btf_map]
pub static SERVICE_STATS: PerCpuArray<TrafficStats, { MAX_SERVICES as usize }> = PerCpuArray::new();

/// real id -> traffic counters, per CPU.
#[btf_map]
pub static REAL_STATS: PerCpuArray<TrafficStats, { MAX_REALS as usize }> = PerCpuArray::new();

/// Why packets were passed, dropped or forwarded (lb_common::counters), per CPU.
#[btf_map]
pub static COUNTERS: PerCpuArray<u64, { COUNTER_COUNT as usize }> = PerCpuArray::new();

/// Reply 5-tuple (real server -> client) -> what NAT must restore.
#[btf_map]
pub static NAT_REVERSE: LruHashMap<FlowKey, NatReverse, { FLOW_TABLE_DEFAULT_SIZE as usize }> =
    LruHashMap::new();

/// IPv6 reply 5-tuple (real server -> client) -> what NAT66 must restore.
#[btf_map]
pub static NAT_REVERSE6: LruHashMap<FlowKey6, NatReverse6, { FLOW_TABLE_DEFAULT_SIZE as usize }> =
    LruHashMap::new();

/// ifindex -> interface, for redirects between the balancer's interfaces
/// (two-armed NAT).
#[btf_map]
pub static TX_PORTS: DevMapHash<{ MAX_TX_PORTS as usize }> = DevMapHash::new();

/// Single entry, per CPU: until when (data-plane clock) this CPU tries no
/// flow insert, the table having been full (conntrack::insert). Not
/// pinned: a hint, lost harmlessly with the program.
#[btf_map]
pub static FLOW_TABLE_FULL_UNTIL: PerCpuArray<u64, 1> = PerCpuArray::new();

/// New connections, state changes and new templates, for the agent's
/// connection sync (only while GLOBAL_FLAG_SYNC is set).
#[btf_map]
pub static SYNC_EVENTS: RingBuf<SyncEvent, { SYNC_EVENTS_BYTES as usize }> = RingBuf::new();

/// Socket cookie -> a local client's socket pointed at a real server
/// (local.rs, local_conns.rs). Entries go when the socket closes.
/// Allocated on use: a balancer has few local clients, and 64k
/// preallocated entries would pin 6.5 MiB for them.
#[btf_map]
pub static LOCAL_CONNS: HashMap<u64, LocalConn, { LOCAL_CONNS_SIZE as usize }, BPF_F_NO_PREALLOC> =
    HashMap::new();

/// The same for sockets pointed at IPv6 real servers (local.rs's
/// connect6 side).
#[btf_map]
pub static LOCAL_CONNS6: HashMap<
    u64,
    LocalConn6,
    { LOCAL_CONNS_SIZE as usize },
    BPF_F_NO_PREALLOC,
> = HashMap::new();

/// Single entry: facts about the interface (its MAC).
#[btf_map]
pub static LB_GLOBALS: Array<LbGlobals, 1> = Array::new();

/// Single entry: what IPv6 forwarding needs beside LB_GLOBALS (the TUN
/// source address).
#[btf_map]
pub static LB_GLOBALS6: Array<LbGlobals6, 1> = Array::new();

/// `action`, with the TX counter bumped when it is XDP_TX (what every
/// forwarding path returns through).
#[inline(always)]
pub fn counted_tx(action: u32) -> u32 {
    if action == aya_ebpf::bindings::xdp_action::XDP_TX {
        count(lb_common::counters::TX);
    }
    action
}

/// Bumps one of the lb_common::counters.
#[inline(always)]
pub fn count(counter: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(counter) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe { *c += 1 };
    }
}

/// Whether a service may be under the key of filter bit `bit`: false
/// means none is, and the service maps need not be asked.
#[inline(always)]
pub fn may_be_service(bit: u32) -> bool {
    SERVICE_FILTER.get(0).is_none_or(|f| f.holds(bit))
}

/// What the flow's service `service_id` is, if it is the service of the
/// key bytes `key` (service_hit::key_word of the packet).
#[inline(always)]
pub fn service_hit(service_id: u32, key: u64) -> Option<ServiceHit> {
    // read_volatile: one 8-byte load (the agent stores the word whole).
    let word = SERVICE_HITS
        .get_ptr(service_id)
        // SAFETY: a pointer to a map value, aligned, read once.
        .map(|w| unsafe { core::ptr::read_volatile(w) })?;
    service_hit::decode(word, key)
}

/// Adds `active` and `inactive` to a real server's connection counters,
/// atomically (other CPUs and the agent change them too), and recomputes
/// its path in its service's least-connection tree if it has one.
#[inline(always)]
pub fn conns_add(real_id: u32, active: i64, inactive: i64) {
    add_to_conns(real_id, active, inactive);
    least_tree_changed(real_id);
}

#[inline(always)]
fn add_to_conns(real_id: u32, active: i64, inactive: i64) {
    if let Some(c) = REAL_CONNS.get_ptr_mut(real_id) {
        // The BPF target has no atomic types with read-modify-write in
        // core; the intrinsic compiles to the BPF atomic add instruction.
        // SAFETY: a map value pointer, valid and aligned for the program's run.
        unsafe {
            if active != 0 {
                atomic_xadd::<i64, i64, { AtomicOrdering::Relaxed }>(&raw mut (*c).active, active);
            }
            if inactive != 0 {
                atomic_xadd::<i64, i64, { AtomicOrdering::Relaxed }>(
                    &raw mut (*c).inactive,
                    inactive,
                );
            }
        }
    }
}

/// The servers of a backend set as a least-connection tree compares them.
pub struct SetServers<'a>(pub &'a BackendSet);

impl least::Servers for SetServers<'_> {
    #[inline(always)]
    fn server(&self, index: u32) -> Option<(i64, RealConns)> {
        // black_box: a plain bounds-checked scalar for the verifier.
        let b = crate::sched::backend_at(self.0, core::hint::black_box(index))?;
        (b.weight > 0).then(|| (i64::from(b.weight), conns_of(b.real_id)))
    }
}

/// The tree of backend-set slot `set` if it is kept for `cost` and covers
/// the set (None: the scheduler scans).
#[inline(always)]
pub fn least_tree(set: u32, cost: LeastCost, count: u32) -> Option<&'static LeastTree> {
    let tree = LEAST_TREES.get(set)?;
    (tree.cost == cost as u8 && tree.leaves >= count).then_some(tree)
}

/// Recomputes real server `real_id`'s path in its tree after its count
/// changed (nothing when its service keeps none).
#[inline(never)]
fn least_tree_changed(real_id: u32) {
    let Some(leaf) = REAL_LEAVES.get(real_id) else {
        return;
    };
    if leaf.flags & REAL_LEAF_PRESENT == 0 {
        return;
    }
    let (Some(tree), Some(set)) = (
        LEAST_TREES.get_ptr_mut(leaf.set),
        BACKEND_SETS.get(leaf.set),
    ) else {
        return;
    };
    // SAFETY: a map value pointer, valid for the program's run; nodes are
    // written with single 2-byte stores (least.rs says why races are fine).
    let tree = unsafe { &mut *tree };
    let Some(cost) = LeastCost::from_u8(tree.cost) else {
        return;
    };
    let leaves = tree.leaves;
    if leaves > lb_common::MAX_BACKENDS_PER_SERVICE {
        return;
    }
    let mut walk = TreeWalk {
        tree,
        cost,
        leaves,
        set,
        index: leaf.index.into(),
        n: least::parent_of_leaf(leaves, leaf.index.into()),
    };
    // A bpf_loop: its callback is verified once, where a plain loop's
    // levels were each walked on every path, over the verifier's budget.
    // SAFETY: the callback only casts the context back to the TreeWalk.
    unsafe {
        bpf_loop(
            least::LEAST_TREE_DEPTH,
            tree_level as *mut c_void,
            &mut walk as *mut TreeWalk as *mut c_void,
            0,
        );
    }
}

/// A tree update under way after server `index`'s count changed: the
/// next node to recompute (0: done).
struct TreeWalk<'a> {
    tree: &'a mut LeastTree,
    cost: LeastCost,
    leaves: u32,
    set: &'a BackendSet,
    index: u32,
    n: u32,
}

/// # Safety
/// `ctx` must be the `TreeWalk` that least_tree_changed handed to bpf_loop.
unsafe extern "C" fn tree_level(_level: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: ctx is that TreeWalk, alive for the whole loop.
    let walk = unsafe { &mut *(ctx as *mut TreeWalk) };
    if walk.n == 0 {
        return 1;
    }
    let above = least::update_level(
        walk.tree,
        walk.cost,
        walk.leaves,
        &SetServers(walk.set),
        walk.n,
        walk.index,
    );
    walk.n >>= 1;
    if above { 0 } else { 1 }
}

/// Adds to a real server's count of persistence templates.
#[inline(always)]
pub fn persistent_add(real_id: u32, delta: i64) {
    if let Some(c) = REAL_CONNS.get_ptr_mut(real_id) {
        // SAFETY: as conns_add.
        unsafe {
            atomic_xadd::<i64, i64, { AtomicOrdering::Relaxed }>(&raw mut (*c).persistent, delta);
        }
    }
}

/// A real server's connection counters (zero if the id is out of range).
#[inline(always)]
pub fn conns_of(real_id: u32) -> RealConns {
    REAL_CONNS.get(real_id).copied().unwrap_or_default()
}

/// Adds one packet server -> client to a stats slot.
#[inline(always)]
pub fn account_out<const N: usize>(stats: &PerCpuArray<TrafficStats, N>, id: u32, bytes: u64) {
    if let Some(s) = stats.get_ptr_mut(id) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe {
            (*s).out_packets += 1;
            (*s).out_bytes += bytes;
        }
    }
}

/// Adds one connection (no packet: a local client's) to a stats slot.
#[inline(always)]
pub fn account_conn<const N: usize>(stats: &PerCpuArray<TrafficStats, N>, id: u32) {
    if let Some(s) = stats.get_ptr_mut(id) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe { (*s).conns += 1 };
    }
}

/// Adds one packet (and a connection if `new_conn`) to a stats slot.
#[inline(always)]
pub fn account<const N: usize>(
    stats: &PerCpuArray<TrafficStats, N>,
    id: u32,
    bytes: u64,
    new_conn: bool,
) {
    if let Some(s) = stats.get_ptr_mut(id) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe {
            (*s).in_packets += 1;
            (*s).in_bytes += bytes;
            if new_conn {
                (*s).conns += 1;
            }
        }
    }
}
