//! IPVS connection states and their transitions, shared by the data plane
//! (which moves flows through them) and the agent (which expires flows and
//! counts ActiveConn / InActConn from them).
//!
//! The balancer sees only client -> server packets in DR and TUN (and in
//! NAT it takes the same view), so the table is IPVS's "INPUT-ONLY" one
//! (net/netfilter/ipvs/ip_vs_proto_tcp.c, tcp_states).

/// IPVS TCP states, in IPVS's order (ip_vs.h IP_VS_TCP_S_*).
pub const S_NONE: u8 = 0;
pub const S_ESTABLISHED: u8 = 1;
pub const S_SYN_SENT: u8 = 2;
pub const S_SYN_RECV: u8 = 3;
pub const S_FIN_WAIT: u8 = 4;
pub const S_TIME_WAIT: u8 = 5;
pub const S_CLOSE: u8 = 6;
pub const S_CLOSE_WAIT: u8 = 7;
pub const S_LAST_ACK: u8 = 8;
pub const S_LISTEN: u8 = 9;
pub const S_SYNACK: u8 = 10;
/// Not an IPVS TCP state: a UDP flow (IPVS's UDP "NORMAL").
pub const S_UDP: u8 = 11;
pub const STATE_COUNT: usize = 12;

/// ipvsadm -L -c's names.
pub const STATE_NAMES: [&str; STATE_COUNT] = [
    "NONE",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "SYNACK",
    "UDP",
];

/// IPVS's default timeouts, seconds, per state (ipvsadm --set changes
/// ESTABLISHED (tcp), FIN_WAIT (tcpfin) and UDP (udp)).
pub const DEFAULT_TIMEOUTS_S: [u32; STATE_COUNT] =
    [2, 900, 120, 60, 120, 120, 10, 60, 30, 120, 120, 300];

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// Rows: syn, fin, ack, rst. Columns: the current state (sNO..sSA).
const INPUT_ONLY: [[u8; 11]; 4] = [
    // syn
    [
        S_SYN_RECV,
        S_ESTABLISHED,
        S_ESTABLISHED,
        S_SYN_RECV,
        S_SYN_RECV,
        S_SYN_RECV,
        S_SYN_RECV,
        S_SYN_RECV,
        S_SYN_RECV,
        S_SYN_RECV,
        S_SYN_RECV,
    ],
    // fin
    [
        S_CLOSE,
        S_FIN_WAIT,
        S_SYN_SENT,
        S_TIME_WAIT,
        S_FIN_WAIT,
        S_TIME_WAIT,
        S_CLOSE,
        S_CLOSE_WAIT,
        S_LAST_ACK,
        S_LISTEN,
        S_TIME_WAIT,
    ],
    // ack
    [
        S_CLOSE,
        S_ESTABLISHED,
        S_SYN_SENT,
        S_ESTABLISHED,
        S_FIN_WAIT,
        S_TIME_WAIT,
        S_CLOSE,
        S_CLOSE_WAIT,
        S_CLOSE,
        S_LISTEN,
        S_ESTABLISHED,
    ],
    // rst
    [
        S_CLOSE, S_CLOSE, S_CLOSE, S_SYN_RECV, S_CLOSE, S_CLOSE, S_CLOSE, S_CLOSE, S_LAST_ACK,
        S_LISTEN, S_CLOSE,
    ],
];

/// The state after a client -> server TCP segment with `flags` (IPVS:
/// RST wins, then SYN, then FIN, then ACK; none of them: no change).
#[inline(always)]
pub fn tcp_next(state: u8, flags: u8) -> u8 {
    let row = if flags & TCP_RST != 0 {
        3
    } else if flags & TCP_SYN != 0 {
        0
    } else if flags & TCP_FIN != 0 {
        1
    } else if flags & TCP_ACK != 0 {
        2
    } else {
        return state;
    };
    match INPUT_ONLY[row].get(state as usize) {
        Some(next) => *next,
        None => state,
    }
}

/// ipvsadm's ActiveConn counts ESTABLISHED connections; every other state
/// (UDP included) is InActConn.
pub const fn is_active(state: u8) -> bool {
    state == S_ESTABLISHED
}

/// A packet that cannot open a connection (TCP without SYN): one found
/// without an entry is the middle of a connection this balancer missed.
#[inline(always)]
pub fn is_midstream(proto: u8, tcp_flags: u8) -> bool {
    proto == crate::IPPROTO_TCP && tcp_flags & TCP_SYN == 0
}

/// Linux's TCP socket states (include/net/tcp_states.h), as sock_ops'
/// state callbacks report them.
pub mod socket_state {
    pub const TCP_ESTABLISHED: u32 = 1;
    pub const TCP_SYN_SENT: u32 = 2;
    pub const TCP_SYN_RECV: u32 = 3;
    pub const TCP_FIN_WAIT1: u32 = 4;
    pub const TCP_FIN_WAIT2: u32 = 5;
    pub const TCP_TIME_WAIT: u32 = 6;
    pub const TCP_CLOSE: u32 = 7;
    pub const TCP_CLOSE_WAIT: u32 = 8;
    pub const TCP_LAST_ACK: u32 = 9;
    pub const TCP_CLOSING: u32 = 11;
}

/// The IPVS state a local client's TCP socket in `tcp_state` is listed
/// in: what IPVS's LOCAL_OUT hook would have moved its connection to
/// (the client's SYN makes SYN_RECV, as for a remote client).
#[inline(always)]
pub fn state_of_socket(tcp_state: u32) -> u8 {
    use socket_state::*;
    match tcp_state {
        TCP_ESTABLISHED => S_ESTABLISHED,
        TCP_SYN_SENT | TCP_SYN_RECV => S_SYN_RECV,
        TCP_FIN_WAIT1 | TCP_FIN_WAIT2 | TCP_CLOSING => S_FIN_WAIT,
        TCP_TIME_WAIT => S_TIME_WAIT,
        TCP_CLOSE_WAIT => S_CLOSE_WAIT,
        TCP_LAST_ACK => S_LAST_ACK,
        _ => S_CLOSE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_connection_as_the_balancer_sees_it() {
        let mut s = tcp_next(S_NONE, TCP_SYN);
        assert_eq!(s, S_SYN_RECV);
        s = tcp_next(s, TCP_ACK);
        assert_eq!(s, S_ESTABLISHED);
        assert!(is_active(s));
        s = tcp_next(s, TCP_ACK | 0x08); // PSH|ACK
        assert_eq!(s, S_ESTABLISHED);
        s = tcp_next(s, TCP_FIN | TCP_ACK);
        assert_eq!(s, S_FIN_WAIT);
        s = tcp_next(s, TCP_ACK);
        assert_eq!(s, S_FIN_WAIT);
        assert!(!is_active(s));
    }

    #[test]
    fn rst_closes_and_midstream_pickup_is_close() {
        assert_eq!(tcp_next(S_ESTABLISHED, TCP_RST | TCP_ACK), S_CLOSE);
        assert_eq!(tcp_next(S_SYN_RECV, TCP_RST), S_SYN_RECV);
        // A flow first seen mid-stream (e.g. after a failover) is CLOSE.
        assert_eq!(tcp_next(S_NONE, TCP_ACK), S_CLOSE);
        // No flag we look at: unchanged.
        assert_eq!(tcp_next(S_ESTABLISHED, 0), S_ESTABLISHED);
        assert_eq!(tcp_next(S_UDP, TCP_ACK), S_UDP);
    }

    #[test]
    fn local_sockets_are_listed_in_ipvs_states() {
        use socket_state::*;
        assert_eq!(state_of_socket(TCP_SYN_SENT), S_SYN_RECV);
        assert_eq!(state_of_socket(TCP_ESTABLISHED), S_ESTABLISHED);
        assert_eq!(state_of_socket(TCP_FIN_WAIT2), S_FIN_WAIT);
        assert_eq!(state_of_socket(TCP_CLOSING), S_FIN_WAIT);
        assert_eq!(state_of_socket(TCP_CLOSE_WAIT), S_CLOSE_WAIT);
        assert_eq!(state_of_socket(TCP_CLOSE), S_CLOSE);
        // Only ESTABLISHED is active, as for the XDP path's flows.
        for s in 0..16 {
            assert_eq!(state_of_socket(s) == S_ESTABLISHED, s == TCP_ESTABLISHED);
        }
    }
}
