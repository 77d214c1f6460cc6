//! Indices of the data plane's global counters (`counters` per-CPU array).
//!
//! Every early exit of the XDP program bumps one of these, so an operator can
//! see why a packet was passed or dropped (Katran's lesson).

/// Not IPv4 (ARP, IPv6, LLDP...): passed to the kernel.
pub const PASS_NOT_IPV4: u32 = 0;
/// IPv4 but neither TCP nor UDP (ICMP, VRRP...): passed.
pub const PASS_NOT_TCP_UDP: u32 = 1;
/// TCP/UDP to an address/port/protocol that is no virtual service: passed.
pub const PASS_NO_SERVICE: u32 = 2;
/// Frame too short for the headers it announces, or header fields out of
/// range: passed unmodified, the kernel drops or answers it as it would.
pub const PASS_MALFORMED: u32 = 3;
/// IPv4 with options (IHL > 5): passed unmodified (not balanced yet).
pub const PASS_IP_OPTIONS: u32 = 4;
/// IPv4 fragment: passed unmodified (not balanced yet).
pub const PASS_FRAGMENT: u32 = 5;
/// New flow to a service whose backend set has no server with weight > 0.
pub const DROP_NO_REAL: u32 = 6;
/// The chosen real server's MAC address is not known yet (neighbour entry
/// still being resolved by the agent).
pub const DROP_NO_REAL_MAC: u32 = 7;
/// Flow-table hit: the packet went to the server of its connection.
pub const FLOW_HIT: u32 = 8;
/// Flow-table miss: the scheduler chose a server and a flow was inserted.
pub const FLOW_NEW: u32 = 9;
/// The flow table refused an insert, or was full a moment ago on this CPU
/// and none was tried (the packet is still forwarded, untracked).
pub const FLOW_INSERT_FAILED: u32 = 10;
/// Packets forwarded with XDP_TX.
pub const TX: u32 = 11;
/// A flow's real server is no longer valid (slot freed or reused):
/// the flow is rescheduled.
pub const FLOW_STALE: u32 = 12;

/// A service whose VIP this balancer is not VRRP master for: passed.
pub const PASS_STANDBY: u32 = 13;

/// TUN: the encapsulated packet would exceed the interface MTU.
pub const DROP_TUN_TOO_BIG: u32 = 14;
/// TUN: sent to another interface (bpf_fib_lookup's next hop) by redirect.
pub const REDIRECT: u32 = 15;

/// NAT: a real server's reply rewritten back to the VIP and sent on.
pub const NAT_REPLY: u32 = 16;

/// TUN: an ICMP fragmentation-needed error was sent back to the client.
pub const ICMP_FRAG_NEEDED: u32 = 17;

/// NAT: an ICMP error about a NAT'ed flow, translated back to the VIP.
pub const NAT_ICMP: u32 = 18;

/// Number of counters; size of the `counters` map.
pub const COUNTER_COUNT: u32 = 19;

/// Names in index order, for `list --stats` and logs.
pub const COUNTER_NAMES: [&str; COUNTER_COUNT as usize] = [
    "pass_not_ipv4",
    "pass_not_tcp_udp",
    "pass_no_service",
    "pass_malformed",
    "pass_ip_options",
    "pass_fragment",
    "drop_no_real",
    "drop_no_real_mac",
    "flow_hit",
    "flow_new",
    "flow_insert_failed",
    "tx",
    "flow_stale",
    "pass_standby",
    "drop_tun_too_big",
    "redirect",
    "nat_reply",
    "icmp_frag_needed",
    "nat_icmp",
];
