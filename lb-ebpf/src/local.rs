//! The balancer's own clients (IPVS's LOCAL_OUT hook, Cilium's socket-LB):
//! cgroup sock_addr programs point a connect() or sendto() to VIP:port at
//! the real server the service's scheduler picks (same maps, same scheduler
//! state as the XDP path), and show the VIP again to getpeername() and
//! recvfrom(). Only sockets of the agent's own network namespace are
//! touched; everything else is left as it is.

use aya_ebpf::{
    EbpfContext as _,
    helpers::generated::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    programs::SockAddrContext,
};
use lb_common::{
    FlowKey, IPPROTO_TCP, LocalConn,
    conntrack::{S_SYN_RECV, S_UDP},
    counters,
};

use crate::{
    find_service, local_conns,
    maps::{LB_GLOBALS, LOCAL_CONNS, REALS, count},
    persist::{self, Template},
    sched,
};

/// The verdict of sock_addr and sock programs that lets the call go on.
pub const ALLOW: i32 = 1;
/// What a sock_ops program returns when it sets no reply.
pub const SOCK_OPS_DONE: u32 = 1;

/// connect4 and sendmsg4: VIP:port -> the chosen real server.
#[inline(always)]
pub fn to_real(ctx: &SockAddrContext) -> i32 {
    let Some(globals) = LB_GLOBALS.get(0) else {
        return ALLOW;
    };
    // SAFETY: the helper reads the context it is given.
    if unsafe { bpf_get_netns_cookie(ctx.as_ptr()) } != globals.netns_cookie {
        return ALLOW;
    }
    // SAFETY: the kernel's bpf_sock_addr for this call, valid while we run.
    let sa = unsafe { &mut *ctx.sock_addr };
    let vip = sa.user_ip4.to_ne_bytes();
    let vport = sa.user_port as u16;
    // The client's address is not chosen yet: hashing schedulers and
    // persistence see every local client as 0.0.0.0 (one client).
    let flow = FlowKey {
        src: [0; 4],
        dst: vip,
        sport: 0,
        dport: vport,
        proto: sa.protocol as u8,
        _pad: [0; 3],
    };
    let Some((svc, key)) = find_service(&flow, globals) else {
        return ALLOW;
    };
    // SAFETY: the helper reads the context it is given.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // A socket already pointed at this VIP:port keeps its server (IPVS
    // keeps the connection of its client port): a UDP socket's next
    // sendto(), a connect() again.
    // SAFETY: entries are replaced whole or changed by the socket's own
    // callbacks, never by another socket's.
    if let Some(known) = unsafe { LOCAL_CONNS.get(&cookie) }
        && known.vip == vip
        && known.vport == vport
        && known.proto == flow.proto
    {
        sa.user_ip4 = u32::from_ne_bytes(known.real);
        sa.user_port = u32::from(known.rport);
        count(counters::LOCAL_BALANCED);
        return ALLOW;
    }
    let template = persist::lookup(svc, key.port, &flow);
    let chosen = match template {
        Template::Valid(real_id) => Some(real_id),
        _ => sched::schedule(svc, &flow),
    };
    let Some(real_id) = chosen else {
        count(counters::LOCAL_NO_REAL);
        return ALLOW;
    };
    let (real_id, _) = persist::remember(svc, template, real_id);
    let Some(real) = REALS.get(real_id) else {
        count(counters::LOCAL_NO_REAL);
        return ALLOW;
    };
    let rport = if real.port == 0 { vport } else { real.port };
    sa.user_ip4 = u32::from_ne_bytes(real.ip);
    sa.user_port = u32::from(rport);
    let mut conn = LocalConn {
        vip,
        real: real.ip,
        vport,
        rport,
        service_id: svc.service_id,
        real_id,
        proto: flow.proto,
        state: if flow.proto == IPPROTO_TCP {
            S_SYN_RECV
        } else {
            S_UDP
        },
        ..LocalConn::default()
    };
    // The socket's own address as far as it is chosen (a UDP socket's port
    // is, at its first sendto(); TCP's comes at its connect callback).
    // SAFETY: for sock_addr programs ctx->sk is the calling socket, never
    // null (the verifier types it PTR_TO_SOCKET).
    let sk = unsafe { &*sa.__bindgen_anon_1.sk };
    conn.client = sk.src_ip4.to_ne_bytes();
    conn.cport = (sk.src_port as u16).to_be();
    local_conns::track(cookie, &conn);
    count(counters::LOCAL_BALANCED);
    ALLOW
}

/// getpeername4 and recvmsg4: the real server's address -> the VIP.
#[inline(always)]
pub fn to_vip(ctx: &SockAddrContext) -> i32 {
    // SAFETY: the helper reads the context it is given.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: as in to_real.
    let Some(peer) = (unsafe { LOCAL_CONNS.get(&cookie) }) else {
        return ALLOW;
    };
    // SAFETY: the kernel's bpf_sock_addr for this call, valid while we run.
    let sa = unsafe { &mut *ctx.sock_addr };
    if sa.user_ip4 == u32::from_ne_bytes(peer.real) && sa.user_port as u16 == peer.rport {
        sa.user_ip4 = u32::from_ne_bytes(peer.vip);
        sa.user_port = u32::from(peer.vport);
    }
    ALLOW
}
