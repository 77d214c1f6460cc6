//! Sizes, limits and enumerations shared by both sides.

/// Virtual services the data plane can hold (IPVS has no fixed limit; 512 is
/// far above what one keepalived.conf usually carries).
pub const MAX_SERVICES: u32 = 512;
/// Real servers one virtual service may have. Bounds every new-flow scan.
pub const MAX_BACKENDS_PER_SERVICE: u32 = 256;
/// Real server slots over all services. Real ids start from 1: id 0 means
/// "no real server", so a zeroed flow entry never points at a live server.
pub const MAX_REALS: u32 = 4096;
/// Default size of the LRU flow table (5-tuple -> real server).
pub const FLOW_TABLE_DEFAULT_SIZE: u32 = 65_536;
/// Interfaces the balancer may send out of by redirect (tx_ports devmap).
pub const MAX_TX_PORTS: u32 = 8;
/// Each service has two backend-set slots: the agent writes the one not in
/// use, then flips the service entry to it, so a packet never sees a
/// half-written set.
pub const BACKEND_SET_SLOTS_PER_SERVICE: u32 = 2;
/// Total slots of the backend_sets array.
pub const MAX_BACKEND_SETS: u32 = MAX_SERVICES * BACKEND_SET_SLOTS_PER_SERVICE;

/// Backend-set indices are stored in one byte (lookup tables).
const _: () = assert!(MAX_BACKENDS_PER_SERVICE <= 256);

/// dh and sh: buckets of the hash table (IP_VS_DH_TAB_SIZE, IP_VS_SH_TAB_SIZE).
pub const DH_SH_TABLE_SIZE: u32 = 256;
/// mh: Maglev lookup table size, a prime (IPVS's default,
/// CONFIG_IP_VS_MH_TAB_INDEX 12).
pub const MH_TABLE_SIZE: u32 = 4093;
/// mh: bits of weight/gcd kept before shifting (IP_VS_MH_TAB_BITS).
pub const MH_TABLE_BITS: u32 = 6;
/// mh: the hsiphash keys IPVS uses (generate_hash_secret): fixed, so every
/// balancer with the same servers builds the same table.
pub const MH_HASH1_KEY: [u64; 2] = [2_654_435_761, 2_654_435_761];
pub const MH_HASH2_KEY: [u64; 2] = [2_654_446_892, 2_654_446_892];
/// Room in a lookup table value (at least MH_TABLE_SIZE).
pub const LOOKUP_TABLE_MAX: u32 = 4096;
const _: () = assert!(MH_TABLE_SIZE <= LOOKUP_TABLE_MAX && DH_SH_TABLE_SIZE <= LOOKUP_TABLE_MAX);
/// lblcr: servers one locality entry may hold (IPVS: unbounded).
pub const LBLCR_SET_MAX: u32 = 16;
/// lblc/lblcr: entries of the locality cache (LRU; a lost entry is only
/// rescheduled). IPVS's table gc starts at the same 16 * 1024 entries.
pub const LOCALITY_CACHE_SIZE: u32 = 16 * 1024;
/// lblc/lblcr expiration: IPVS's sysctl default, 24 hours.
pub const LOCALITY_DEFAULT_EXPIRATION_S: u32 = 24 * 60 * 60;
/// Persistence templates the data plane can hold.
pub const PERSIST_TABLE_SIZE: u32 = 65_536;
/// Bytes of the sync_events ring buffer (a power of two, pages): about
/// 29,000 events of 36 bytes (8 of ring-buffer header each) between two
/// reads of the agent.
pub const SYNC_EVENTS_BYTES: u32 = 1 << 20;
/// Sockets of the balancer's own clients tracked at once (a hash, not an
/// LRU: an entry goes when its socket closes, so the counts stay exact).
/// A socket beyond it is still balanced, untracked (counted).
pub const LOCAL_CONNS_SIZE: u32 = 65_536;
/// Map flags (uapi/linux/bpf.h).
pub const BPF_F_NO_PREALLOC: usize = 1 << 0;
pub const BPF_F_MMAPABLE: usize = 1 << 10;

/// IP protocol numbers (IANA), as stored in `ServiceKey::proto`.
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
/// IPv4-in-IPv4 (LVS-TUN).
pub const IPPROTO_IPIP: u8 = 4;
/// IPv6-in-IPv6 (LVS-TUN over IPv6, RFC 2473).
pub const IPPROTO_IPV6: u8 = 41;
/// ICMPv6's next-header value.
pub const IPPROTO_ICMPV6: u8 = 58;
/// VIPs one real server's rs_decap program can serve.
pub const MAX_RS_VIPS: u32 = 256;

/// Counters of the real server's rs_decap program.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RsDecapCounter {
    /// IPIP (or IPv6-in-IPv6) to a local VIP: outer header stripped.
    Decapsulated = 0,
    /// IPIP (or IPv6-in-IPv6) whose inner destination is no local VIP:
    /// passed as is.
    NotLocalVip = 1,
}

impl RsDecapCounter {
    pub const COUNT: u32 = 2;
}

/// How a virtual service forwards to its real servers (ipvsadm -g / -i / -m).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardKind {
    /// Direct routing: rewrite the MAC addresses only (ipvsadm -g, "Route").
    Dr = 0,
    /// IP-in-IP tunnel (ipvsadm -i, "Tunnel").
    Tun = 1,
    /// Masquerading (ipvsadm -m, "Masq").
    Nat = 2,
}

impl ForwardKind {
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Dr),
            1 => Some(Self::Tun),
            2 => Some(Self::Nat),
            _ => None,
        }
    }
}

/// Scheduler of a virtual service (`lb_algo`), as stored in `ServiceInfo::sched`.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedulerKind {
    Rr = 0,
    Wrr = 1,
    Lc = 2,
    Wlc = 3,
    Lblc = 4,
    Lblcr = 5,
    Dh = 6,
    Sh = 7,
    Sed = 8,
    Nq = 9,
    Mh = 10,
    Fo = 11,
    Ovf = 12,
    Twos = 13,
}

impl SchedulerKind {
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Rr),
            1 => Some(Self::Wrr),
            2 => Some(Self::Lc),
            3 => Some(Self::Wlc),
            4 => Some(Self::Lblc),
            5 => Some(Self::Lblcr),
            6 => Some(Self::Dh),
            7 => Some(Self::Sh),
            8 => Some(Self::Sed),
            9 => Some(Self::Nq),
            10 => Some(Self::Mh),
            11 => Some(Self::Fo),
            12 => Some(Self::Ovf),
            13 => Some(Self::Twos),
            _ => None,
        }
    }

    /// The name ipvsadm and keepalived use.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Rr => "rr",
            Self::Wrr => "wrr",
            Self::Lc => "lc",
            Self::Wlc => "wlc",
            Self::Lblc => "lblc",
            Self::Lblcr => "lblcr",
            Self::Dh => "dh",
            Self::Sh => "sh",
            Self::Sed => "sed",
            Self::Nq => "nq",
            Self::Mh => "mh",
            Self::Fo => "fo",
            Self::Ovf => "ovf",
            Self::Twos => "twos",
        }
    }
}

/// `family_programs` slots: the programs `lb` hands frames of another
/// family to by tail call (Cilium's per-family tail calls), so IPv4's
/// program is verified and runs as it did before IPv6.
pub const FAMILY_PROGRAM_SLOTS: u32 = 1;
/// The slot of `lb6`, the IPv6 program.
pub const FAMILY_PROGRAM_IPV6: u32 = 0;

/// `forward6_programs` slots: forwarding methods `lb6` hands a scheduled
/// frame to by tail call, each verified on its own (lb6's scheduling
/// paths times a tunnel's code exceed the verifier's budget in one
/// program). What lb6 decided travels in `forward6_flow`.
pub const FORWARD6_PROGRAM_SLOTS: u32 = 1;
/// The slot of `lb6_tun` (IPv6-in-IPv6).
pub const FORWARD6_PROGRAM_TUN: u32 = 0;

/// `nat6_programs` slots: NAT66's two directions, each a program of its
/// own (an array beside forward6_programs, whose pinned size earlier
/// agents fixed at one slot).
pub const NAT6_PROGRAM_SLOTS: u32 = 2;
/// `lb6_nat`: client -> VIP becomes client -> real server.
pub const NAT6_PROGRAM_FORWARD: u32 = 0;
/// `lb6_nat_reply`: a real server's reply (or an ICMPv6 error about a
/// NAT'ed flow) back to the client as from the VIP.
pub const NAT6_PROGRAM_REPLY: u32 = 1;
