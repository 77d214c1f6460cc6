//! The balancer's own clients, counted as IPVS counts them (its LOCAL_OUT
//! hook makes a connection entry for each): every socket local.rs pointed
//! at a real server has an entry in LOCAL_CONNS, counted in the server's
//! ActiveConn/InActConn and in the connection statistics. TCP sockets are
//! followed through their states by sock_ops state callbacks (ESTABLISHED
//! is active, every other state inactive) until TCP_CLOSE; other sockets
//! (UDP, or TCP that never reached the wire) end at their release.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG, BPF_SOCK_OPS_TCP_CONNECT_CB},
    helpers::generated::bpf_get_socket_cookie,
    programs::{SockContext, SockOpsContext},
};
use lb_common::{
    LocalConn, LocalConn6,
    conntrack::{is_active, socket_state::TCP_CLOSE, state_of_socket},
    counters,
};

use crate::{
    kernel::{BPF_ANY, ipv6_octets},
    maps::{LOCAL_CONNS, LOCAL_CONNS6, REAL_STATS, SERVICE_STATS, account_conn, conns_add, count},
};

/// sock_ops' argument that holds the new state in a state callback.
const STATE_CB_NEW_STATE: usize = 1;

/// Counts a socket just pointed at `conn.real_id` (inactive: no handshake
/// yet). A socket that had an entry (a UDP socket sending to another VIP)
/// is uncounted from its old server first. False when the table is full.
#[inline(always)]
pub fn track(cookie: u64, conn: &LocalConn) -> bool {
    // SAFETY: entries of this map are replaced whole or changed only by the
    // socket's own callbacks, which the socket lock serializes.
    if let Some(old) = unsafe { LOCAL_CONNS.get(&cookie) }.copied() {
        uncount(&old);
    }
    if LOCAL_CONNS.insert(&cookie, conn, BPF_ANY).is_err() {
        // An old entry, uncounted above, must not be uncounted again.
        let _ = LOCAL_CONNS.remove(&cookie);
        count(counters::LOCAL_UNTRACKED);
        return false;
    }
    count_new(conn);
    true
}

/// `track` for a socket pointed at an IPv6 server (LOCAL_CONNS6).
#[inline(always)]
pub fn track6(cookie: u64, conn: &LocalConn6) -> bool {
    // SAFETY: as in track.
    if let Some(old) = unsafe { LOCAL_CONNS6.get(&cookie) }.copied() {
        uncount(&old.conn);
    }
    if LOCAL_CONNS6.insert(&cookie, conn, BPF_ANY).is_err() {
        let _ = LOCAL_CONNS6.remove(&cookie);
        count(counters::LOCAL_UNTRACKED);
        return false;
    }
    count_new(&conn.conn);
    true
}

/// A new entry in its server's InActConn and the connection statistics.
#[inline(always)]
fn count_new(conn: &LocalConn) {
    conns_add(conn.real_id, 0, 1);
    account_conn(&SERVICE_STATS, conn.service_id);
    account_conn(&REAL_STATS, conn.real_id);
}

/// A socket's entry, in the map of its server's family.
#[derive(Clone, Copy)]
enum Tracked {
    V4(*mut LocalConn),
    V6(*mut LocalConn6),
}

impl Tracked {
    #[inline(always)]
    fn of(cookie: &u64) -> Option<Self> {
        LOCAL_CONNS
            .get_ptr_mut(cookie)
            .map(Tracked::V4)
            .or_else(|| LOCAL_CONNS6.get_ptr_mut(cookie).map(Tracked::V6))
    }

    /// The family-independent part.
    #[inline(always)]
    fn conn(self) -> *mut LocalConn {
        match self {
            Tracked::V4(conn) => conn,
            // SAFETY: a map value pointer of this run (Tracked::of).
            Tracked::V6(conn) => unsafe { &raw mut (*conn).conn },
        }
    }

    /// Removes the entry and uncounts `last` (once: the removal that
    /// succeeds does it).
    #[inline(always)]
    fn forget(self, cookie: &u64, last: &LocalConn) {
        let removed = match self {
            Tracked::V4(_) => LOCAL_CONNS.remove(cookie).is_ok(),
            Tracked::V6(_) => LOCAL_CONNS6.remove(cookie).is_ok(),
        };
        if removed {
            uncount(last);
        }
    }
}

/// Takes a socket's entry out of its server's counters.
#[inline(always)]
fn uncount(conn: &LocalConn) {
    if is_active(conn.state) {
        conns_add(conn.real_id, -1, 0);
    } else {
        conns_add(conn.real_id, 0, -1);
    }
}

/// sock_ops: at a tracked socket's connect, ask for its state changes and
/// note its own address; at each change, move its count.
#[inline(always)]
pub fn on_sock_op(ctx: &SockOpsContext) {
    let op = ctx.op();
    if op != BPF_SOCK_OPS_TCP_CONNECT_CB && op != BPF_SOCK_OPS_STATE_CB {
        return;
    }
    // SAFETY: the helper reads the context it is given.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let Some(entry) = Tracked::of(&cookie) else {
        return;
    };
    // SAFETY: a map value pointer, valid for this run; this socket's
    // callbacks run under its lock, so nobody else writes the entry now.
    let conn = unsafe { &mut *entry.conn() };
    if op == BPF_SOCK_OPS_TCP_CONNECT_CB {
        if ctx
            .set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32)
            .is_ok()
        {
            conn.followed = 1;
        }
        match entry {
            Tracked::V4(_) => conn.client = ctx.local_ip4().to_ne_bytes(),
            // SAFETY: as above.
            Tracked::V6(conn6) => unsafe { (*conn6).client = ipv6_octets(&ctx.local_ip6()) },
        }
        // sock_ops gives the local port in host order.
        conn.cport = (ctx.local_port() as u16).to_be();
        return;
    }
    let new = ctx.arg(STATE_CB_NEW_STATE);
    if new == TCP_CLOSE {
        let last = *conn;
        entry.forget(&cookie, &last);
        return;
    }
    let state = state_of_socket(new);
    match (is_active(conn.state), is_active(state)) {
        (false, true) => conns_add(conn.real_id, 1, -1),
        (true, false) => conns_add(conn.real_id, -1, 1),
        _ => {}
    }
    conn.state = state;
}

/// A socket's release: the end of an entry no state callback follows.
#[inline(always)]
pub fn on_release(ctx: &SockContext) {
    // SAFETY: the helper reads the context it is given.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let Some(entry) = Tracked::of(&cookie) else {
        return;
    };
    // SAFETY: as in on_sock_op.
    let conn = unsafe { *entry.conn() };
    if conn.followed == 0 {
        entry.forget(&cookie, &conn);
    }
}
