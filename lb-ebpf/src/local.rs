//! The balancer's own clients (IPVS's LOCAL_OUT hook, Cilium's socket-LB):
//! cgroup sock_addr programs point a connect() or sendto() to VIP:port at
//! the real server the service's scheduler picks (same maps, same scheduler
//! state as the XDP path), and show the VIP again to getpeername() and
//! recvfrom(), over IPv4 (connect4...) and IPv6 (connect6...: IPv6 VIPs,
//! the socket's entry in LOCAL_CONNS6). Only sockets of the agent's own
//! network namespace are touched; everything else is left as it is.

use aya_ebpf::{
    EbpfContext as _,
    helpers::generated::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    programs::SockAddrContext,
};
use lb_common::{
    FlowKey, FlowKey6, IPPROTO_TCP, Ipv6Octets, LbGlobals, LocalConn, LocalConn6, RealServer,
    ServiceInfo,
    conntrack::{S_SYN_RECV, S_UDP},
    counters,
};

use crate::{
    family::Flow,
    kernel::{ipv6_octets, ipv6_words},
    local_conns, lookup_service,
    maps::{LB_GLOBALS, LOCAL_CONNS, LOCAL_CONNS6, REAL_ADDRS6, REALS, count},
    persist::{self, Template},
    sched, v6,
};

/// The verdict of sock_addr and sock programs that lets the call go on.
pub const ALLOW: i32 = 1;
/// What a sock_ops program returns when it sets no reply.
pub const SOCK_OPS_DONE: u32 = 1;

/// lb_globals, when the calling socket is of the agent's network
/// namespace (the only one balanced).
#[inline(always)]
fn agents_globals(ctx: &SockAddrContext) -> Option<&'static LbGlobals> {
    let globals = LB_GLOBALS.get(0)?;
    // SAFETY: the helper reads the context it is given.
    (unsafe { bpf_get_netns_cookie(ctx.as_ptr()) } == globals.netns_cookie).then_some(globals)
}

/// The server the service's template or scheduler gives a local client's
/// `flow` (`vport`: the port the service was found under), counted
/// LOCAL_NO_REAL when there is none.
#[inline(always)]
fn choose<F: Flow>(svc: &ServiceInfo, vport: u16, flow: &F) -> Option<(u32, &'static RealServer)> {
    let template = persist::lookup(svc, vport, flow);
    let chosen = match template {
        Template::Valid(real_id) => Some(real_id),
        _ => sched::schedule(svc, flow),
    };
    let real = chosen.and_then(|real_id| {
        let (real_id, _) = persist::remember(svc, template, real_id);
        REALS.get(real_id).map(|real| (real_id, real))
    });
    if real.is_none() {
        count(counters::LOCAL_NO_REAL);
    }
    real
}

/// The state a socket just pointed at a server starts in.
#[inline(always)]
fn first_state(proto: u8) -> u8 {
    if proto == IPPROTO_TCP {
        S_SYN_RECV
    } else {
        S_UDP
    }
}

/// connect4 and sendmsg4: VIP:port -> the chosen real server.
#[inline(always)]
pub fn to_real(ctx: &SockAddrContext) -> i32 {
    let Some(globals) = agents_globals(ctx) else {
        return ALLOW;
    };
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
    let Some((svc, key)) = lookup_service(&flow, globals) else {
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
    let Some((real_id, real)) = choose(svc, key.port, &flow) else {
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
        state: first_state(flow.proto),
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

/// Writes `addr` into user_ip6 one 32-bit word at a time (the widest
/// store the verifier allows into that field).
#[inline(always)]
fn set_user_ip6(words: &mut [u32; 4], addr: &Ipv6Octets) {
    for (word, value) in words.iter_mut().zip(ipv6_words(addr)) {
        // SAFETY: a field of the kernel's bpf_sock_addr for this call.
        unsafe { core::ptr::write_volatile(word, value) };
    }
}

/// connect6 and sendmsg6: [VIP]:port -> the chosen IPv6 real server.
#[inline(always)]
pub fn to_real6(ctx: &SockAddrContext) -> i32 {
    let Some(globals) = agents_globals(ctx) else {
        return ALLOW;
    };
    // SAFETY: the kernel's bpf_sock_addr for this call, valid while we run.
    let sa = unsafe { &mut *ctx.sock_addr };
    let vip = ipv6_octets(&sa.user_ip6);
    let vport = sa.user_port as u16;
    // As over IPv4: every local client is one client, ::.
    let flow = FlowKey6 {
        src: [0; 16],
        dst: vip,
        sport: 0,
        dport: vport,
        proto: sa.protocol as u8,
        _pad: [0; 3],
    };
    let Some((svc, key_port)) = v6::find_service(&flow, globals) else {
        return ALLOW;
    };
    // SAFETY: the helper reads the context it is given.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: as in to_real.
    if let Some(known) = unsafe { LOCAL_CONNS6.get(&cookie) }
        && known.vip == vip
        && known.conn.vport == vport
        && known.conn.proto == flow.proto
    {
        set_user_ip6(&mut sa.user_ip6, &known.real);
        sa.user_port = u32::from(known.conn.rport);
        count(counters::LOCAL_BALANCED);
        return ALLOW;
    }
    let Some((real_id, real)) = choose(svc, key_port, &flow) else {
        return ALLOW;
    };
    let Some(addr) = REAL_ADDRS6.get(real_id) else {
        count(counters::LOCAL_NO_REAL);
        return ALLOW;
    };
    let rport = if real.port == 0 { vport } else { real.port };
    set_user_ip6(&mut sa.user_ip6, addr);
    sa.user_port = u32::from(rport);
    // SAFETY: as in to_real.
    let sk = unsafe { &*sa.__bindgen_anon_1.sk };
    let conn = LocalConn6 {
        conn: LocalConn {
            vport,
            rport,
            service_id: svc.service_id,
            real_id,
            cport: (sk.src_port as u16).to_be(),
            proto: flow.proto,
            state: first_state(flow.proto),
            ..LocalConn::default()
        },
        vip,
        real: *addr,
        client: ipv6_octets(&sk.src_ip6),
    };
    local_conns::track6(cookie, &conn);
    count(counters::LOCAL_BALANCED);
    ALLOW
}

/// getpeername6 and recvmsg6: the IPv6 real server's address -> the VIP.
#[inline(always)]
pub fn to_vip6(ctx: &SockAddrContext) -> i32 {
    // SAFETY: the helper reads the context it is given.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: as in to_real.
    let Some(peer) = (unsafe { LOCAL_CONNS6.get(&cookie) }) else {
        return ALLOW;
    };
    // SAFETY: the kernel's bpf_sock_addr for this call, valid while we run.
    let sa = unsafe { &mut *ctx.sock_addr };
    if ipv6_octets(&sa.user_ip6) == peer.real && sa.user_port as u16 == peer.conn.rport {
        set_user_ip6(&mut sa.user_ip6, &peer.vip);
        sa.user_port = u32::from(peer.conn.vport);
    }
    ALLOW
}
