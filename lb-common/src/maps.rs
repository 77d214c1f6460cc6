//! Keys and values of every BPF map. The maps themselves are declared in
//! `lb-ebpf/src/maps.rs`; the pin names below are the files under the pin
//! directory (`/sys/fs/bpf/lb/` by default).

use crate::consts::MAX_BACKENDS_PER_SERVICE;

/// An IPv4 address as its four octets, in packet order. An array rather
/// than a u32: `bpftool map dump` prints it as [172,16,122,100] instead of
/// a host-order integer, and neither side converts byte order (the data
/// plane copies it from the header as it is).
pub type Ipv4Octets = [u8; 4];

/// An IPv6 address as its sixteen octets, in packet order (bpftool prints
/// the array; `list` and status show it as text).
pub type Ipv6Octets = [u8; 16];

/// Names of the rs_decap program's objects (ELF) and pins.
pub mod rs_decap_names {
    pub const PROGRAM: &str = "rs_decap";
    pub const RS_VIPS: &str = "RS_VIPS";
    pub const COUNTERS: &str = "RS_DECAP_COUNTERS";
    /// Under the real server's pin directory.
    pub const LINK_PIN: &str = "link";
    pub const RS_VIPS_PIN: &str = "rs_vips";
    pub const RS_VIPS6: &str = "RS_VIPS6";
    pub const RS_VIPS6_PIN: &str = "rs_vips6";
}

/// Pin file names, one per map, in the order the agent pins them.
pub mod pin_names {
    pub const SERVICES: &str = "services";
    pub const BACKEND_SETS: &str = "backend_sets";
    pub const REALS: &str = "reals";
    pub const FLOW_TABLE: &str = "flow_table";
    pub const SCHED_STATE: &str = "sched_state";
    pub const SERVICE_STATS: &str = "service_stats";
    pub const REAL_STATS: &str = "real_stats";
    pub const COUNTERS: &str = "counters";
    pub const LB_GLOBALS: &str = "lb_globals";
    pub const NAT_REVERSE: &str = "nat_reverse";
    pub const TX_PORTS: &str = "tx_ports";
    pub const REAL_CONNS: &str = "real_conns";
    pub const LOOKUP_TABLES: &str = "lookup_tables";
    pub const WEIGHT_TABLES: &str = "weight_tables";
    pub const LOCALITY: &str = "locality";
    pub const PERSIST: &str = "persist";
    pub const LOCAL_CONNS: &str = "local_conns";
    pub const SERVICES6: &str = "services6";
    pub const FLOW_TABLE6: &str = "flow_table6";
    pub const REAL_ADDRS6: &str = "real_addrs6";
    pub const FAMILY_PROGRAMS: &str = "family_programs";
    pub const LOCALITY6: &str = "locality6";
    pub const PERSIST6: &str = "persist6";
    pub const LB_GLOBALS6: &str = "lb_globals6";
    pub const FORWARD6_PROGRAMS: &str = "forward6_programs";
    pub const FORWARD6_FLOW: &str = "forward6_flow";
    pub const NAT6_PROGRAMS: &str = "nat6_programs";
    pub const NAT_REVERSE6: &str = "nat_reverse6";
    pub const LOCAL_CONNS6: &str = "local_conns6";
}

/// Object names of the maps in the ELF file (the statics in lb-ebpf).
pub mod map_names {
    pub const SERVICES: &str = "SERVICES";
    pub const BACKEND_SETS: &str = "BACKEND_SETS";
    pub const REALS: &str = "REALS";
    pub const FLOW_TABLE: &str = "FLOW_TABLE";
    pub const SCHED_STATE: &str = "SCHED_STATE";
    pub const SERVICE_STATS: &str = "SERVICE_STATS";
    pub const REAL_STATS: &str = "REAL_STATS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const LB_GLOBALS: &str = "LB_GLOBALS";
    pub const NAT_REVERSE: &str = "NAT_REVERSE";
    pub const TX_PORTS: &str = "TX_PORTS";
    pub const REAL_CONNS: &str = "REAL_CONNS";
    pub const LOOKUP_TABLES: &str = "LOOKUP_TABLES";
    pub const WEIGHT_TABLES: &str = "WEIGHT_TABLES";
    /// Not pinned: derived from the services each agent writes (an
    /// adopting agent rewrites them all before its program goes live).
    pub const SERVICE_FILTER: &str = "SERVICE_FILTER";
    /// Not pinned, for the same reason; mapped by the agent (service_hit.rs).
    pub const SERVICE_HITS: &str = "SERVICE_HITS";
    /// Not pinned either: the agent builds each tree when it writes the
    /// slot's set, and an adopting agent writes every set (least.rs).
    pub const LEAST_TREES: &str = "LEAST_TREES";
    /// Not pinned: written with the trees.
    pub const REAL_LEAVES: &str = "REAL_LEAVES";
    pub const LOCALITY: &str = "LOCALITY";
    pub const PERSIST: &str = "PERSIST";
    pub const LOCAL_CONNS: &str = "LOCAL_CONNS";
    pub const SERVICES6: &str = "SERVICES6";
    pub const FLOW_TABLE6: &str = "FLOW_TABLE6";
    pub const REAL_ADDRS6: &str = "REAL_ADDRS6";
    pub const FAMILY_PROGRAMS: &str = "FAMILY_PROGRAMS";
    pub const LOCALITY6: &str = "LOCALITY6";
    pub const PERSIST6: &str = "PERSIST6";
    pub const LB_GLOBALS6: &str = "LB_GLOBALS6";
    pub const FORWARD6_PROGRAMS: &str = "FORWARD6_PROGRAMS";
    pub const FORWARD6_FLOW: &str = "FORWARD6_FLOW";
    pub const NAT6_PROGRAMS: &str = "NAT6_PROGRAMS";
    pub const NAT_REVERSE6: &str = "NAT_REVERSE6";
    pub const LOCAL_CONNS6: &str = "LOCAL_CONNS6";
    /// Not pinned: events are transient, each program has its own ring.
    pub const SYNC_EVENTS: &str = "SYNC_EVENTS";

    /// (ELF object name, pin file name) of every map the agent pins.
    pub const PINNED: [(&str, &str); 29] = [
        (SERVICES, super::pin_names::SERVICES),
        (BACKEND_SETS, super::pin_names::BACKEND_SETS),
        (REALS, super::pin_names::REALS),
        (FLOW_TABLE, super::pin_names::FLOW_TABLE),
        (SCHED_STATE, super::pin_names::SCHED_STATE),
        (SERVICE_STATS, super::pin_names::SERVICE_STATS),
        (REAL_STATS, super::pin_names::REAL_STATS),
        (COUNTERS, super::pin_names::COUNTERS),
        (LB_GLOBALS, super::pin_names::LB_GLOBALS),
        (NAT_REVERSE, super::pin_names::NAT_REVERSE),
        (TX_PORTS, super::pin_names::TX_PORTS),
        (REAL_CONNS, super::pin_names::REAL_CONNS),
        (LOOKUP_TABLES, super::pin_names::LOOKUP_TABLES),
        (LOCALITY, super::pin_names::LOCALITY),
        (PERSIST, super::pin_names::PERSIST),
        (LOCAL_CONNS, super::pin_names::LOCAL_CONNS),
        (SERVICES6, super::pin_names::SERVICES6),
        (FLOW_TABLE6, super::pin_names::FLOW_TABLE6),
        (REAL_ADDRS6, super::pin_names::REAL_ADDRS6),
        // Pinned so its entry outlives the agent with the data plane
        // (--keep-dataplane): the kernel empties a program array when its
        // last user reference goes.
        (FAMILY_PROGRAMS, super::pin_names::FAMILY_PROGRAMS),
        (LOCALITY6, super::pin_names::LOCALITY6),
        (PERSIST6, super::pin_names::PERSIST6),
        (LB_GLOBALS6, super::pin_names::LB_GLOBALS6),
        // Pinned for the reason family_programs is.
        (FORWARD6_PROGRAMS, super::pin_names::FORWARD6_PROGRAMS),
        // Shared by the lb6 that writes it and the program it tail-calls,
        // also while a restarted agent's programs replace the old ones.
        (FORWARD6_FLOW, super::pin_names::FORWARD6_FLOW),
        (NAT6_PROGRAMS, super::pin_names::NAT6_PROGRAMS),
        (NAT_REVERSE6, super::pin_names::NAT_REVERSE6),
        (LOCAL_CONNS6, super::pin_names::LOCAL_CONNS6),
        (WEIGHT_TABLES, super::pin_names::WEIGHT_TABLES),
    ];
}

/// `services` key: a virtual service (ipvsadm -t/-u VIP:port).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    /// Virtual IPv4 address.
    pub vip: Ipv4Octets,
    /// Virtual port, network byte order.
    pub port: u16,
    /// IPPROTO_TCP or IPPROTO_UDP.
    pub proto: u8,
    pub _pad: u8,
}

/// `services6` key: a virtual service on an IPv6 address
/// (ipvsadm -t [VIP6]:port). The value is a `ServiceInfo`, as for IPv4:
/// service ids, backend sets, servers and statistics are shared.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceKey6 {
    pub vip: Ipv6Octets,
    /// Network byte order.
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// `services` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceInfo {
    /// Index into `sched_state` and `service_stats`; also names the
    /// service's two backend-set slots.
    pub service_id: u32,
    /// The backend-set slot in use (index into `backend_sets`).
    pub backend_set: u32,
    /// `ForwardKind` as u8.
    pub forward: u8,
    /// `SchedulerKind` as u8.
    pub sched: u8,
    /// SCHED_FLAG_* bits (sh-port, sh-fallback, mh-port).
    pub sched_flags: u8,
    pub _pad: u8,
    /// SERVICE_FLAG_* bits.
    pub flags: u32,
    /// ipvsadm -p: seconds a client's template outlives its last
    /// connection; 0 = no persistence.
    pub persist_timeout_s: u32,
    /// ipvsadm -M: the client network of a template is `saddr & mask`
    /// (network byte order). For an IPv6 service the prefix length of the
    /// client network, 0..=128, as IPVS keeps it (svc->netmask).
    pub persist_mask: u32,
}

/// sh / mh: hash the client's port too, not only its address
/// (IP_VS_SVC_F_SCHED_SH_PORT, ..._MH_PORT).
pub const SCHED_FLAG_HASH_PORT: u8 = 1 << 0;
/// sh: when the hashed server is unavailable, try the next buckets
/// (IP_VS_SVC_F_SCHED_SH_FALLBACK).
pub const SCHED_FLAG_FALLBACK: u8 = 1 << 1;

/// The VIP belongs to a vrrp_instance that is not MASTER here: the data
/// plane passes the service's packets to the kernel instead of balancing.
pub const SERVICE_FLAG_STANDBY: u32 = 1 << 0;

/// One destination of a service: IPVS's `ip_vs_dest` as seen by the scheduler.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    /// Index into `reals` and `real_stats` (never 0 for a used entry).
    pub real_id: u32,
    /// IPVS weight; 0 = quiesced: no new connections.
    pub weight: u32,
}

/// `backend_sets` value: the destinations of one service, in config order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendSet {
    /// Number of used entries at the front of `backends`.
    pub count: u32,
    pub _pad: u32,
    pub backends: [Backend; MAX_BACKENDS_PER_SERVICE as usize],
}

impl LbGlobals {
    /// Seconds a flow in `state` lives after its last packet.
    pub fn timeout_s(&self, state: u8) -> u32 {
        use crate::conntrack::*;
        match state {
            S_ESTABLISHED => self.timeout_tcp_s,
            S_FIN_WAIT => self.timeout_tcpfin_s,
            S_UDP => self.timeout_udp_s,
            s => DEFAULT_TIMEOUTS_S.get(s as usize).copied().unwrap_or(0),
        }
    }
}

impl Default for BackendSet {
    fn default() -> Self {
        Self {
            count: 0,
            _pad: 0,
            backends: [Backend::default(); MAX_BACKENDS_PER_SERVICE as usize],
        }
    }
}

/// `reals` value: where a real server is and how to reach it on the wire.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RealServer {
    /// IPv4 address.
    pub ip: Ipv4Octets,
    /// Port, network byte order (NAT may map to another port than the VIP's).
    pub port: u16,
    /// REAL_FLAG_* bits.
    pub flags: u16,
    /// Link-layer address for DR (from the neighbour table).
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// The real server may receive packets: it is configured and not removed by
/// a health check. A flow whose real server is not active is rescheduled on
/// its next packet (IPVS's expire_nodest_conn), so clients reconnect to a
/// live server instead of hanging.
pub const REAL_FLAG_ACTIVE: u16 = 1 << 0;
/// `mac` is resolved and may be used.
pub const REAL_FLAG_MAC_VALID: u16 = 1 << 1;
/// An IPv6 server: `ip` is unused, its address is in `real_addrs6` under
/// the same id (RealServer keeps its size, so pinned maps of earlier
/// versions stay adoptable).
pub const REAL_FLAG_IPV6: u16 = 1 << 2;

/// `flow_table` key: the 5-tuple of a client -> VIP packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Source IPv4.
    pub src: Ipv4Octets,
    /// Destination IPv4 (the VIP).
    pub dst: Ipv4Octets,
    /// Source port, network byte order.
    pub sport: u16,
    /// Destination port, network byte order.
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// `flow_table6` key: the 5-tuple of a client -> VIP packet over IPv6.
/// The value is a `FlowEntry`, as for IPv4.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey6 {
    pub src: Ipv6Octets,
    pub dst: Ipv6Octets,
    /// Network byte order.
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// `flow_table` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEntry {
    /// The real server this connection is pinned to.
    pub real_id: u32,
    /// The service it belongs to.
    pub service_id: u32,
    /// CLOCK_MONOTONIC (coarse, lb-ebpf clock.rs) of the last packet, for the expiry sweep.
    pub last_seen_ns: u64,
    /// IPVS connection state (conntrack::S_*).
    pub state: u8,
    pub _pad: [u8; 7],
}

impl FlowEntry {
    /// Nanoseconds left before the flow expires, or None once it has:
    /// `timeout_s` after its last packet (CLOCK_MONOTONIC, as
    /// the data plane's clock).
    pub fn remaining_ns(&self, timeout_s: u32, now_ns: u64) -> Option<u64> {
        let deadline = self
            .last_seen_ns
            .saturating_add(u64::from(timeout_s) * 1_000_000_000);
        deadline.checked_sub(now_ns).filter(|left| *left > 0)
    }
}

/// `real_conns` value: IPVS's per-destination connection counters
/// (ip_vs_dest activeconns / inactconns), which lc, wlc, sed, nq, ovf, twos,
/// lblc and lblcr schedule by.
///
/// Kept exact by construction: every change is an atomic add by whoever
/// changes the flow table. The data plane adds when it creates a flow or
/// moves one between active and inactive (the state itself moves by
/// compare-and-swap, so two CPUs seeing one flow count a change once); the
/// agent subtracts, through a
/// shared mmap of this array, the flow it removed (it removes flows with
/// BPF_MAP_LOOKUP_AND_DELETE_ELEM, so it subtracts exactly the state the
/// flow had when it went). The flow table is a plain hash, not an LRU: the
/// kernel never evicts an entry behind the counters' back.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RealConns {
    /// Connections in ESTABLISHED. (64-bit: the BPF target's only atomic width.)
    pub active: i64,
    /// Connections in any other state (UDP included).
    pub inactive: i64,
    /// Persistence templates pointing at this server.
    pub persistent: i64,
    pub _pad: i64,
}

impl RealConns {
    /// IPVS's ip_vs_dest_conn_overhead: active * 256 + inactive.
    #[inline(always)]
    pub fn overhead(&self) -> i64 {
        (self.active << 8) + self.inactive
    }
}

/// `lookup_tables` value, one per backend-set slot of a dh, sh or mh
/// service: bucket -> index in the backend set. Built by the agent.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LookupTable {
    /// Buckets in use: DH_SH_TABLE_SIZE or MH_TABLE_SIZE; 0 = no server.
    pub len: u32,
    pub _pad: u32,
    pub buckets: [u8; crate::consts::LOOKUP_TABLE_MAX as usize],
}

impl Default for LookupTable {
    fn default() -> Self {
        Self {
            len: 0,
            _pad: 0,
            buckets: [0; crate::consts::LOOKUP_TABLE_MAX as usize],
        }
    }
}

/// `weight_tables` value, one per backend-set slot of a fo, ovf or twos
/// service: what those schedulers would otherwise add up or search for in
/// a scan of the set on every new connection. Built by the agent from the
/// set's weights (planning/sched_tables.rs), written before the set.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightTable {
    /// The sum of the set's weights.
    pub total: u32,
    /// Servers with a weight above 0: the used part of `by_weight`.
    pub live: u32,
    /// Running sum of the weights up to and including each index.
    pub cumulative: [u32; MAX_BACKENDS_PER_SERVICE as usize],
    /// Indexes of the servers with a weight, heaviest first, in set order
    /// among equals (MAX_BACKENDS_PER_SERVICE <= 256: an index fits a u8).
    pub by_weight: [u8; MAX_BACKENDS_PER_SERVICE as usize],
}

impl Default for WeightTable {
    fn default() -> Self {
        Self {
            total: 0,
            live: 0,
            cumulative: [0; MAX_BACKENDS_PER_SERVICE as usize],
            by_weight: [0; MAX_BACKENDS_PER_SERVICE as usize],
        }
    }
}

/// Halvings of a binary search over all MAX_BACKENDS_PER_SERVICE entries.
const DRAW_STEPS: u32 = MAX_BACKENDS_PER_SERVICE.trailing_zeros();
const _: () = assert!(MAX_BACKENDS_PER_SERVICE.is_power_of_two());

/// 1 when `value` < `target`, else 0, without a branch: the sign of the
/// 64-bit difference of two 32-bit values. The black_boxes keep the
/// compiler from turning the difference back into a comparison, or the
/// bit's use into a select: BPF does both with a branch, and a branch per
/// step doubles the verifier's paths at every step.
#[inline(always)]
fn below(value: u32, target: u64) -> usize {
    let difference = core::hint::black_box(u64::from(value).wrapping_sub(target));
    core::hint::black_box((difference >> 63) as usize)
}

impl WeightTable {
    /// The table of a set whose first `weights.len()` servers have these
    /// weights (in set order).
    pub fn of(weights: &[u32]) -> Self {
        // Past the set the running sum is "unreachable": draw's search
        // runs over every entry and never stops there.
        let mut table = Self {
            cumulative: [u32::MAX; MAX_BACKENDS_PER_SERVICE as usize],
            ..Self::default()
        };
        let mut sum = 0u32;
        for (slot, weight) in table.cumulative.iter_mut().zip(weights) {
            sum = sum.saturating_add(*weight);
            *slot = sum;
        }
        table.total = sum;
        let mut live = 0usize;
        for (index, weight) in weights.iter().enumerate().take(table.by_weight.len()) {
            if *weight == 0 {
                continue;
            }
            // Insertion after every heavier-or-equal one: heaviest first,
            // set order among equals.
            let at = table.by_weight[..live]
                .iter()
                .position(|&i| weights[usize::from(i)] < *weight)
                .unwrap_or(live);
            table.by_weight.copy_within(at..live, at + 1);
            table.by_weight[at] = index as u8;
            live += 1;
        }
        table.live = live as u32;
        table
    }

    /// ip_vs_twos_schedule's draw: walking the set in order, the remainder
    /// `r` less each server's weight reaches 0 or below first at the index
    /// returned (servers of weight 0 skipped); None when none reaches (r
    /// above the total, or no weight). That is the first index whose
    /// running sum is at least r, and at least 1 (r = 0 lands on the first
    /// server with a weight): a branchless binary search (lower bound) over
    /// all entries, DRAW_STEPS fixed halvings.
    #[inline(always)]
    pub fn draw(&self, count: u32, r: u32) -> Option<u32> {
        let target = u64::from(r.max(1));
        let mut base = 0usize;
        for step in 1..=DRAW_STEPS {
            let half = (MAX_BACKENDS_PER_SERVICE >> step) as usize;
            base += below(*self.cumulative.get(base + half)?, target) * half;
        }
        let index = (base + below(*self.cumulative.get(base)?, target)) as u32;
        (index < count).then_some(index)
    }
}

/// `locality` key: lblc / lblcr remember servers per destination address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LocalityKey {
    pub service_id: u32,
    /// The packet's destination address.
    pub daddr: Ipv4Octets,
}

/// `locality6` key: lblc / lblcr over IPv6 (the value is a LocalityEntry).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LocalityKey6 {
    pub service_id: u32,
    pub daddr: Ipv6Octets,
}

/// One server of a locality entry: its real id, and where it was in the
/// backend set (a hint: the set may have changed since).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalityMember {
    pub real_id: u32,
    pub index: u32,
}

/// `locality` value: lblc's server (count 1) or lblcr's server set, newest
/// first as IPVS's list_add.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalityEntry {
    /// Last time a new connection used the entry (ns, monotonic).
    pub lastuse_ns: u64,
    /// lblcr: last time the set changed.
    pub lastmod_ns: u64,
    pub count: u32,
    pub _pad: u32,
    pub members: [LocalityMember; crate::consts::LBLCR_SET_MAX as usize],
}

/// `persist` key: a persistence template (ip_vs_conn with
/// IP_VS_CONN_F_TEMPLATE): client network -> the service.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PersistKey {
    /// saddr & persistence_granularity.
    pub client_net: Ipv4Octets,
    pub vip: Ipv4Octets,
    /// The service's port (0 for an all-ports service), network order.
    pub vport: u16,
    pub proto: u8,
    pub _pad: u8,
}

impl PersistKey {
    /// The template as a flow key, as sync events and records carry it:
    /// client network -> VIP:port, no client port.
    pub fn as_flow_key(&self) -> FlowKey {
        FlowKey {
            src: self.client_net,
            dst: self.vip,
            sport: 0,
            dport: self.vport,
            proto: self.proto,
            _pad: [0; 3],
        }
    }
}

/// `persist6` key: a persistence template of an IPv6 service (the value
/// is a PersistEntry, its `mask` the prefix length).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PersistKey6 {
    /// The client address cut to the service's prefix length.
    pub client_net: Ipv6Octets,
    pub vip: Ipv6Octets,
    /// Network order.
    pub vport: u16,
    pub proto: u8,
    pub _pad: u8,
}

impl PersistKey6 {
    /// The template as a flow key, as sync events and records carry it
    /// (PersistKey::as_flow_key).
    #[inline(always)]
    pub fn as_flow_key(&self) -> FlowKey6 {
        FlowKey6 {
            src: self.client_net,
            dst: self.vip,
            sport: 0,
            dport: self.vport,
            proto: self.proto,
            _pad: [0; 3],
        }
    }

    /// `addr` cut to its first `prefix` bits (ipv6_addr_prefix): the client
    /// network of a template.
    #[inline(always)]
    pub fn client_net_of(addr: &Ipv6Octets, prefix: u32) -> Ipv6Octets {
        let mut out = *addr;
        for (i, byte) in out.iter_mut().enumerate() {
            let keep = prefix.saturating_sub(i as u32 * 8).min(8);
            // keep 0 -> 0x00, 1 -> 0x80, ... 8 -> 0xff.
            *byte &= (0xff00u32 >> keep) as u8;
        }
        out
    }
}

/// `persist` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PersistEntry {
    pub real_id: u32,
    pub service_id: u32,
    /// The service's persistence_granularity (network byte order): which
    /// flows the template controls.
    pub mask: u32,
    pub _pad: u32,
    /// Last new connection through the template (the agent re-arms it
    /// while connections it made still exist).
    pub last_seen_ns: u64,
}

/// `sched_state` value: per-service scheduler state.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedState {
    /// rr: index in the backend set where the next search starts.
    pub rr_next: u32,
    /// wrr (ip_vs_wrr.c mark): index of the last server chosen
    /// (WRR_AT_HEAD before the first).
    pub wrr_last: u32,
    /// wrr: current weight.
    pub wrr_cw: i32,
    /// wrr: max weight - (gcd - 1), written by the agent with the set.
    pub wrr_mw: i32,
    /// wrr: gcd of the weights, written by the agent with the set.
    pub wrr_di: i32,
    pub _pad: u32,
}

/// SchedState::wrr_last before any server was chosen (IPVS: the list head).
pub const WRR_AT_HEAD: u32 = u32::MAX;

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl SchedState {
    /// The state IPVS's wrr starts a (new or changed) backend set with.
    pub fn wrr_for(weights: &[u32]) -> Self {
        let di = weights
            .iter()
            .copied()
            .filter(|w| *w > 0)
            .fold(0, gcd)
            .max(1);
        let max = weights.iter().copied().max().unwrap_or(0);
        let mw = if max == 0 { 0 } else { max - (di - 1) };
        Self {
            rr_next: 0,
            wrr_last: WRR_AT_HEAD,
            wrr_cw: mw as i32,
            wrr_mw: mw as i32,
            wrr_di: di as i32,
            _pad: 0,
        }
    }
}

/// `service_stats` / `real_stats` value (per CPU): what ipvsadm --stats shows.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficStats {
    /// Connections scheduled (new flows).
    pub conns: u64,
    /// Packets client -> server.
    pub in_packets: u64,
    /// Bytes client -> server (whole frames as received).
    pub in_bytes: u64,
    /// Packets server -> client (NAT replies; DR and TUN replies bypass
    /// the balancer, as with IPVS).
    pub out_packets: u64,
    pub out_bytes: u64,
}

/// `lb_globals` value (single entry): what the data plane must know about
/// the interface it runs on.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbGlobals {
    /// MAC address of the interface: source MAC of forwarded frames.
    pub iface_mac: [u8; 6],
    /// The interface's MTU: TUN packets that would exceed it are not sent.
    pub mtu: u16,
    /// Outer source address of TUN packets.
    pub tun_src: Ipv4Octets,
    /// The interface's index (for bpf_fib_lookup).
    pub ifindex: u32,
    /// GLOBAL_FLAG_* bits.
    pub flags: u32,
    /// Two-armed: the interface towards the real servers (0 = one-armed).
    pub inside_ifindex: u32,
    pub inside_mac: [u8; 6],
    pub _pad: [u8; 2],
    /// Connection timeouts (ipvsadm --set), seconds: ESTABLISHED, FIN_WAIT,
    /// UDP. Read by `list` and the agent's expiry sweep.
    pub timeout_tcp_s: u32,
    pub timeout_tcpfin_s: u32,
    pub timeout_udp_s: u32,
    /// lblc/lblcr: seconds before an unused locality entry goes, and before
    /// an unchanged lblcr set drops its most loaded server
    /// (net.ipv4.vs.lblc_expiration / lblcr_expiration).
    pub locality_expiration_s: u32,
    /// The agent's network namespace (SO_NETNS_COOKIE): the socket-level
    /// programs balance only connections made in it.
    pub netns_cookie: u64,
}

/// `lb_globals6` value (single entry): what IPv6 forwarding needs beside
/// `lb_globals` (its own map, so lb_globals keeps its size and the pinned
/// maps of earlier versions stay adoptable).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbGlobals6 {
    /// Outer source address of IPv6 TUN packets (all zero: none; the
    /// agent refuses IPv6 TUN services without one).
    pub tun_src: Ipv6Octets,
}

/// `local_conns` value, keyed by socket cookie: a socket of a process on
/// the balancer that connected or sent to a VIP, the real server it was
/// pointed at (getpeername/recvmsg show the VIP again) and its IPVS state,
/// counted in the server's ActiveConn/InActConn while the socket lives.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalConn {
    pub vip: Ipv4Octets,
    pub real: Ipv4Octets,
    /// Network byte order.
    pub vport: u16,
    pub rport: u16,
    pub service_id: u32,
    pub real_id: u32,
    /// The socket's own address and port (network order), once known.
    pub client: Ipv4Octets,
    pub cport: u16,
    /// IPPROTO_TCP or IPPROTO_UDP.
    pub proto: u8,
    /// IPVS state (conntrack::S_*): ESTABLISHED counts as active.
    pub state: u8,
    /// 1 once TCP state callbacks follow the socket (they end the entry at
    /// TCP_CLOSE); 0: the socket's release ends it.
    pub followed: u8,
    pub _pad: [u8; 3],
}

/// `local_conns6` value, keyed by socket cookie: a local client's socket
/// pointed at an IPv6 real server. The family-independent part is a
/// LocalConn (its IPv4 addresses zero), so the socket callbacks follow
/// both kinds alike; its own map, so local_conns keeps its size.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalConn6 {
    pub conn: LocalConn,
    pub vip: Ipv6Octets,
    pub real: Ipv6Octets,
    /// The socket's own address, once known.
    pub client: Ipv6Octets,
}

/// Some service uses NAT: packets that are no service's are looked up in
/// `nat_reverse` (they may be replies of real servers).
pub const GLOBAL_FLAG_NAT: u32 = 1 << 0;
/// Some service has port 0 (all ports, with persistence): a packet that
/// matches no (vip, port) service is looked up again with port 0.
pub const GLOBAL_FLAG_PORT0: u32 = 1 << 1;
/// Some IPv6 service uses NAT: IPv6 packets that are no service's (and
/// ICMPv6 errors) are looked up in `nat_reverse6`.
pub const GLOBAL_FLAG_NAT6: u32 = 1 << 3;
/// Connection sync runs: new connections, state changes and new
/// persistence templates go to the agent through `sync_events`.
pub const GLOBAL_FLAG_SYNC: u32 = 1 << 2;

/// `sync_events` record (a BPF ring buffer): a connection this balancer
/// made or whose state moved, or a persistence template it made, for the
/// agent to announce to the other balancers (IPVS's sync daemon).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncEvent {
    /// The flow; for a template: client network -> VIP:port (sport 0).
    pub key: FlowKey,
    pub service_id: u32,
    pub real_id: u32,
    /// IPVS state (conntrack::S_*); S_NONE for a template.
    pub state: u8,
    /// SYNC_EVENT_*.
    pub kind: u8,
    pub _pad: [u8; 2],
}

/// `sync_events` record of an IPv6 connection or template: SyncEvent with
/// an IPv6 key (its own size, so the agent tells the two apart by length).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncEvent6 {
    /// The flow; for a template: client network -> VIP:port (sport 0).
    pub key: FlowKey6,
    pub service_id: u32,
    pub real_id: u32,
    pub state: u8,
    pub kind: u8,
    pub _pad: [u8; 2],
}

/// SyncEvent::kind: a connection.
pub const SYNC_EVENT_FLOW: u8 = 0;
/// SyncEvent::kind: a persistence template.
pub const SYNC_EVENT_TEMPLATE: u8 = 1;

/// `nat_reverse` value, keyed by a reply's 5-tuple (real server -> client):
/// what to write back into the reply so the client sees the VIP answer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatReverse {
    /// The virtual address and port the client talked to (port in network order).
    pub vip: Ipv4Octets,
    pub vport: u16,
    pub _pad: u16,
    /// Link-layer source of the client's packets: the next hop back to it.
    pub client_mac: [u8; 6],
    pub _pad2: [u8; 2],
    /// The interface the client's packets came in on (two-armed: the
    /// outside one, where replies must leave).
    pub client_ifindex: u32,
    /// Whose reply it is (for the OutPkts/OutBytes statistics).
    pub real_id: u32,
    pub service_id: u32,
    pub _pad3: u32,
}

/// `nat_reverse6` value, keyed by an IPv6 reply's 5-tuple (real server ->
/// client): `NatReverse` for IPv6 (its own type, so NatReverse keeps the
/// size pinned maps of earlier versions have).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatReverse6 {
    pub vip: Ipv6Octets,
    /// Network byte order.
    pub vport: u16,
    pub _pad: u16,
    pub client_mac: [u8; 6],
    pub _pad2: [u8; 2],
    pub client_ifindex: u32,
    pub real_id: u32,
    pub service_id: u32,
}

/// `forward6_flow` value (single entry, per CPU): what `lb6` decided about
/// the frame it hands to a forwarding program by tail call (which carries
/// no arguments; the frame's run never leaves its CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Forward6Flow {
    pub real_id: u32,
    pub service_id: u32,
    /// 1: the packet opened the connection (NAT remembers its reply path).
    pub new_flow: u8,
    pub _pad: [u8; 3],
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are repr(C), Copy, with explicit padding fields
    // and no implicit padding, so any byte pattern is a valid value.
    unsafe impl aya::Pod for ServiceKey {}
    unsafe impl aya::Pod for crate::least::LeastTree {}
    unsafe impl aya::Pod for crate::least::RealLeaf {}
    unsafe impl aya::Pod for ServiceKey6 {}
    unsafe impl aya::Pod for FlowKey6 {}
    unsafe impl aya::Pod for ServiceInfo {}
    unsafe impl aya::Pod for Backend {}
    unsafe impl aya::Pod for BackendSet {}
    unsafe impl aya::Pod for RealServer {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FlowEntry {}
    unsafe impl aya::Pod for SchedState {}
    unsafe impl aya::Pod for TrafficStats {}
    unsafe impl aya::Pod for LbGlobals {}
    unsafe impl aya::Pod for LbGlobals6 {}
    unsafe impl aya::Pod for LocalConn {}
    unsafe impl aya::Pod for NatReverse {}
    unsafe impl aya::Pod for NatReverse6 {}
    unsafe impl aya::Pod for Forward6Flow {}
    unsafe impl aya::Pod for SyncEvent6 {}
    unsafe impl aya::Pod for LocalConn6 {}
    unsafe impl aya::Pod for RealConns {}
    unsafe impl aya::Pod for LookupTable {}
    unsafe impl aya::Pod for WeightTable {}
    unsafe impl aya::Pod for crate::ServiceFilter {}
    unsafe impl aya::Pod for LocalityKey {}
    unsafe impl aya::Pod for LocalityKey6 {}
    unsafe impl aya::Pod for LocalityMember {}
    unsafe impl aya::Pod for LocalityEntry {}
    unsafe impl aya::Pod for PersistKey {}
    unsafe impl aya::Pod for PersistKey6 {}
    unsafe impl aya::Pod for PersistEntry {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn an_ipv6_client_network_is_its_prefix() {
        let addr = [0xffu8; 16];
        let net = PersistKey6::client_net_of(&addr, 64);
        assert_eq!(net[..8], [0xff; 8]);
        assert_eq!(net[8..], [0; 8]);
        let net = PersistKey6::client_net_of(&addr, 60);
        assert_eq!(net[7], 0xf0);
        assert_eq!(PersistKey6::client_net_of(&addr, 128), addr);
        assert_eq!(PersistKey6::client_net_of(&addr, 0), [0; 16]);
        assert_eq!(PersistKey6::client_net_of(&addr, 200), addr);
    }

    /// ip_vs_twos_schedule's walk, as the scan did it.
    fn walk_draw(weights: &[u32], r: u32) -> Option<u32> {
        let mut left = i64::from(r);
        for (i, w) in weights.iter().enumerate() {
            if *w == 0 {
                continue;
            }
            left -= i64::from(*w);
            if left <= 0 {
                return Some(i as u32);
            }
        }
        None
    }

    /// fo's and ovf's pass: the first heaviest among those that qualify.
    fn heaviest(weights: &[u32], qualifies: impl Fn(usize) -> bool) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (i, w) in weights.iter().enumerate() {
            if *w > 0 && qualifies(i) && best.is_none_or(|b| *w > weights[b]) {
                best = Some(i);
            }
        }
        best
    }

    #[test]
    fn a_weight_table_draws_and_orders_as_the_scans_did() {
        // A small deterministic generator: weights with zeros and ties.
        let mut seed = 0x2545_f491_u32;
        let mut next = move |n: u32| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed % n
        };
        let mut sets: Vec<Vec<u32>> = vec![vec![], vec![0], vec![0, 0], vec![1], vec![0, 3, 0, 4]];
        for _ in 0..200 {
            let len = 1 + next(MAX_BACKENDS_PER_SERVICE) as usize;
            let max = [2, 5, 100, 65_535][next(4) as usize];
            sets.push((0..len).map(|_| next(max)).collect());
        }
        sets.push(vec![65_535; MAX_BACKENDS_PER_SERVICE as usize]);
        for weights in &sets {
            let t = WeightTable::of(weights);
            let count = weights.len() as u32;
            assert_eq!(t.total, weights.iter().sum::<u32>());
            // Every draw twos can make, and one past the total.
            let draws: Vec<u32> = if t.total <= 2_000 {
                (0..=t.total + 1).collect()
            } else {
                (0..2_000).map(|_| next(t.total + 2)).collect()
            };
            for r in draws {
                assert_eq!(t.draw(count, r), walk_draw(weights, r), "{weights:?} r={r}");
            }
            // fo: the first entry; ovf: the first that qualifies.
            let order: Vec<usize> = t.by_weight[..t.live as usize]
                .iter()
                .map(|&i| usize::from(i))
                .collect();
            assert_eq!(order.first().copied(), heaviest(weights, |_| true));
            let overflowed = |i: usize| i % 3 == 1;
            assert_eq!(
                order.iter().copied().find(|&i| !overflowed(i)),
                heaviest(weights, |i| !overflowed(i)),
                "{weights:?}"
            );
            assert_eq!(t.live as usize, weights.iter().filter(|w| **w > 0).count());
        }
    }

    // The layouts are an ABI between the object file and the agent: pin them.
    #[test]
    fn map_value_layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<ServiceKey>(), 8);
        assert_eq!(size_of::<ServiceInfo>(), 24);
        assert_eq!(size_of::<Backend>(), 8);
        assert_eq!(
            size_of::<BackendSet>(),
            8 + 8 * MAX_BACKENDS_PER_SERVICE as usize
        );
        assert_eq!(size_of::<RealServer>(), 16);
        assert_eq!(size_of::<FlowKey>(), 16);
        assert_eq!(size_of::<FlowKey6>(), 40);
        assert_eq!(size_of::<ServiceKey6>(), 20);
        assert_eq!(size_of::<FlowEntry>(), 24);
        assert_eq!(size_of::<SchedState>(), 24);
        assert_eq!(size_of::<TrafficStats>(), 40);
        assert_eq!(size_of::<LbGlobals>(), 56);
        assert_eq!(size_of::<LbGlobals6>(), 16);
        assert_eq!(size_of::<LocalConn>(), 32);
        assert_eq!(size_of::<NatReverse>(), 32);
        assert_eq!(size_of::<NatReverse6>(), 40);
        assert_eq!(size_of::<Forward6Flow>(), 12);
        assert_eq!(size_of::<SyncEvent6>(), 52);
        assert_eq!(size_of::<LocalConn6>(), 80);
        assert_eq!(size_of::<RealConns>(), 32);
        assert_eq!(
            size_of::<LookupTable>(),
            8 + crate::consts::LOOKUP_TABLE_MAX as usize
        );
        assert_eq!(size_of::<LocalityKey>(), 8);
        assert_eq!(size_of::<LocalityKey6>(), 20);
        assert_eq!(
            size_of::<LocalityEntry>(),
            24 + 8 * crate::consts::LBLCR_SET_MAX as usize
        );
        assert_eq!(size_of::<PersistKey>(), 12);
        assert_eq!(size_of::<PersistKey6>(), 36);
        assert_eq!(size_of::<PersistEntry>(), 24);
        assert_eq!(size_of::<SyncEvent>(), 28);
    }
}
