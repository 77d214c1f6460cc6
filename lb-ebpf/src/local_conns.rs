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
    LocalConn,
    conntrack::{is_active, socket_state::TCP_CLOSE, state_of_socket},
    counters,
};

use crate::{
    kernel::BPF_ANY,
    maps::{LOCAL_CONNS, REAL_STATS, SERVICE_STATS, account_conn, conns_add, count},
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
    conns_add(conn.real_id, 0, 1);
    account_conn(&SERVICE_STATS, conn.service_id);
    account_conn(&REAL_STATS, conn.real_id);
    true
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

/// Removes the entry of `cookie` and uncounts it (once: the removal that
/// succeeds does it).
#[inline(always)]
fn forget(cookie: u64, conn: &LocalConn) {
    if LOCAL_CONNS.remove(&cookie).is_ok() {
        uncount(conn);
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
    let Some(entry) = LOCAL_CONNS.get_ptr_mut(&cookie) else {
        return;
    };
    // SAFETY: a map value pointer, valid for this run; this socket's
    // callbacks run under its lock, so nobody else writes the entry now.
    let conn = unsafe { &mut *entry };
    if op == BPF_SOCK_OPS_TCP_CONNECT_CB {
        if ctx
            .set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32)
            .is_ok()
        {
            conn.followed = 1;
        }
        conn.client = ctx.local_ip4().to_ne_bytes();
        // sock_ops gives the local port in host order.
        conn.cport = (ctx.local_port() as u16).to_be();
        return;
    }
    let new = ctx.arg(STATE_CB_NEW_STATE);
    if new == TCP_CLOSE {
        let last = *conn;
        forget(cookie, &last);
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
    // SAFETY: as in track.
    let Some(conn) = (unsafe { LOCAL_CONNS.get(&cookie) }).copied() else {
        return;
    };
    if conn.followed == 0 {
        forget(cookie, &conn);
    }
}
