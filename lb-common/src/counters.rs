//! Indices of the data plane's global counters (`counters` per-CPU array).
//!
//! Every exit of the XDP program bumps one of these, so an operator can see
//! why a packet was passed, dropped, forwarded or aborted (Katran's lesson).
//! Index, name and count come from the one list below.

/// Declares each counter's index constant (in list order), its name in
/// `COUNTER_NAMES` and `COUNTER_COUNT`: adding a counter is one line.
macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident => $label:literal,)*) => {
        /// List order, for the constants' values.
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        #[repr(u32)]
        enum Index {
            $($name,)*
            __Count,
        }
        $($(#[doc = $doc])* pub const $name: u32 = Index::$name as u32;)*
        /// Number of counters; size of the `counters` map.
        pub const COUNTER_COUNT: u32 = Index::__Count as u32;
        /// Names in index order, for `list --stats`, metrics and logs.
        pub const COUNTER_NAMES: [&str; COUNTER_COUNT as usize] = [$($label),*];
    };
}

counters! {
    /// Neither IPv4 nor IPv6 (ARP, LLDP...): passed to the kernel. (The
    /// name is from before IPv6 was balanced; kept, as indices and names
    /// never move.)
    PASS_NOT_IPV4 => "pass_not_ipv4",
    /// IPv4 but neither TCP nor UDP (ICMP, VRRP...): passed.
    PASS_NOT_TCP_UDP => "pass_not_tcp_udp",
    /// TCP/UDP to an address/port/protocol that is no virtual service: passed.
    PASS_NO_SERVICE => "pass_no_service",
    /// Frame too short for the headers it announces, or header fields out of
    /// range: passed unmodified, the kernel drops or answers it as it would.
    PASS_MALFORMED => "pass_malformed",
    /// IPv4 with options (IHL > 5): passed unmodified (not balanced yet).
    PASS_IP_OPTIONS => "pass_ip_options",
    /// IPv4 fragment: passed unmodified (not balanced yet).
    PASS_FRAGMENT => "pass_fragment",
    /// New flow to a service whose backend set has no server with weight > 0.
    DROP_NO_REAL => "drop_no_real",
    /// The chosen real server's MAC address is not known yet (neighbour entry
    /// still being resolved by the agent).
    DROP_NO_REAL_MAC => "drop_no_real_mac",
    /// Flow-table hit: the packet went to the server of its connection.
    FLOW_HIT => "flow_hit",
    /// Flow-table miss: the scheduler chose a server and a flow was inserted.
    FLOW_NEW => "flow_new",
    /// The flow table refused an insert, or was full a moment ago on this CPU
    /// and none was tried (the packet is still forwarded, untracked).
    FLOW_INSERT_FAILED => "flow_insert_failed",
    /// Packets forwarded with XDP_TX.
    TX => "tx",
    /// A flow's real server is no longer valid (slot freed or reused):
    /// the flow is rescheduled.
    FLOW_STALE => "flow_stale",
    /// A service whose VIP this balancer is not VRRP master for: passed.
    PASS_STANDBY => "pass_standby",
    /// TUN: the encapsulated packet would exceed the interface MTU.
    DROP_TUN_TOO_BIG => "drop_tun_too_big",
    /// TUN: sent to another interface (bpf_fib_lookup's next hop) by redirect.
    REDIRECT => "redirect",
    /// NAT: a real server's reply rewritten back to the VIP and sent on
    /// (IPv4 and IPv6).
    NAT_REPLY => "nat_reply",
    /// TUN: an ICMP fragmentation-needed error was sent back to the client.
    ICMP_FRAG_NEEDED => "icmp_frag_needed",
    /// NAT: an ICMP or ICMPv6 error about a NAT'ed flow, translated back
    /// to the VIP.
    NAT_ICMP => "nat_icmp",
    /// A service entry names a forwarding method this program does not know
    /// (an agent newer than the program): passed untouched.
    PASS_UNKNOWN_FORWARD => "pass_unknown_forward",
    /// XDP_ABORTED: a header the parser had accepted was out of the frame's
    /// bounds on a second look (the verifier demands the check).
    ABORT_BOUNDS => "abort_bounds",
    /// XDP_ABORTED: bpf_xdp_adjust_head/tail refused to grow or cut the frame
    /// (no headroom for the tunnel header, say).
    ABORT_ADJUST => "abort_adjust",
    /// XDP_ABORTED: a map entry that always exists was missing (the globals,
    /// the chosen real server's slot).
    ABORT_MAP => "abort_map",
    /// Connection sync: the ring buffer to the agent was full, an event was
    /// lost (the connection is announced again at the next full-table pass).
    SYNC_EVENT_LOST => "sync_event_lost",
    /// A process on the balancer connected (or sent a datagram) to a VIP:
    /// the socket was pointed at the real server the scheduler chose.
    LOCAL_BALANCED => "local_balanced",
    /// The same, but the service had no real server to give: left as it was.
    LOCAL_NO_REAL => "local_no_real",
    /// A local socket was balanced but the local_conns table was full: not
    /// counted in ActiveConn/InActConn, getpeername() shows the server.
    LOCAL_UNTRACKED => "local_untracked",
    /// A TCP packet without SYN of a connection the flow table does not
    /// hold (another balancer's, moved here by ECMP or a failover, not
    /// synced yet): scheduled anyway. sh/dh/mh pick by the hash, the server
    /// every balancer with the same servers picks; the other schedulers
    /// pick afresh and may choose another server than the connection's.
    FLOW_MIDSTREAM => "flow_midstream",
    /// IPv6 whose next header is not TCP or UDP: ICMPv6 (neighbour
    /// discovery, MLD, router advertisements), VRRPv3...: passed.
    PASS_IPV6_NOT_TCP_UDP => "pass_ipv6_not_tcp_udp",
    /// IPv6 with an extension header (hop-by-hop, routing, destination
    /// options, fragment...) before TCP/UDP: passed unmodified, never
    /// balanced (the policy: docs in the README's IPv6 section).
    PASS_IPV6_EXT_HEADER => "pass_ipv6_ext_header",
    /// IPv6 TCP/UDP to a service whose forwarding method this program does
    /// not know (an agent newer than the program wrote it): passed. (Until
    /// NAT66, IPv6 NAT services too.)
    PASS_IPV6_UNSUPPORTED_FORWARD => "pass_ipv6_unsupported_forward",
    /// IPv6 TUN: an ICMPv6 Packet Too Big was sent back to the client (the
    /// encapsulated packet would exceed the MTU; IPv6 never fragments on
    /// the way, so it is always sent, with DROP_TUN_TOO_BIG).
    ICMP6_PACKET_TOO_BIG => "icmp6_packet_too_big",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_follow_the_list_and_names_match() {
        assert_eq!(PASS_NOT_IPV4, 0);
        assert_eq!(NAT_ICMP, 18, "indices of existing counters never move");
        assert_eq!(COUNTER_COUNT as usize, COUNTER_NAMES.len());
        assert_eq!(COUNTER_NAMES[ABORT_MAP as usize], "abort_map");
        assert_eq!(COUNTER_NAMES[TX as usize], "tx");
        let mut names = COUNTER_NAMES.to_vec();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), COUNTER_NAMES.len(), "names are unique");
    }
}
