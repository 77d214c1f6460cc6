//! The lb XDP program. `process_packet` reads as the packet's story:
//! parse, find the service, find or schedule the connection's real server,
//! forward. Everything that is not for a virtual service is XDP_PASS,
//! untouched.
#![no_std]
#![no_main]
// atomic_xadd: per-server connection counters shared by all CPUs.
#![allow(internal_features)]
#![feature(core_intrinsics)]
#![warn(clippy::undocumented_unsafe_blocks)]
// Map keys go by reference: the helper takes a pointer to the key on the
// stack; a by-value key (what the lint asks for) is one more copy.
#![allow(clippy::needless_borrows_for_generic_args)]

mod clock;
mod conntrack;
mod family;
mod forward;
mod icmp;
mod local;
mod local_conns;
mod maps;
mod persist;
mod sched;
mod sync;
mod v6;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{cgroup_sock, cgroup_sock_addr, sock_ops, xdp},
    programs::{SockAddrContext, SockContext, SockOpsContext, XdpContext},
};
use aya_log_ebpf::debug;
use lb_common::{
    FlowEntry, FlowKey, ForwardKind, GLOBAL_FLAG_NAT, GLOBAL_FLAG_PORT0, LbGlobals, RealServer,
    SERVICE_FLAG_STANDBY, SYNC_EVENT_FLOW, SYNC_EVENT_TEMPLATE, ServiceFilter, ServiceInfo,
    ServiceKey, counters,
    service_hit::{self, ServiceHit},
};
// The shared modules, under the names the modules of this binary use.
use lb_ebpf::{csum, header, header::Abort, kernel, parse};

use conntrack::Lookup;
use family::Flow as _;
use maps::{LB_GLOBALS, REAL_STATS, REALS, SERVICE_STATS, SERVICES, account, count};
use persist::Template;

lb_ebpf::license!();

// inline(always): the macro's entry point calls this function; left to
// LLVM it stays a BPF-to-BPF call (a call, a return and a stack frame per
// packet).
#[xdp]
#[inline(always)]
pub fn lb(ctx: XdpContext) -> u32 {
    verdict(process_packet(&ctx))
}

/// The action, or XDP_ABORTED with the abort's counter bumped.
#[inline(always)]
fn verdict(result: Result<u32, Abort>) -> u32 {
    result.unwrap_or_else(|Abort(reason)| {
        count(reason);
        xdp_action::XDP_ABORTED
    })
}

/// Frames that are not IPv4, by tail call from `lb`: IPv6 services (v6.rs);
/// everything else passed and counted.
#[xdp]
#[inline(always)]
pub fn lb6(ctx: XdpContext) -> u32 {
    verdict(v6::process_packet(&ctx))
}

/// IPv6 TUN, by tail call from `lb6` once it chose the server (v6.rs).
#[xdp]
#[inline(always)]
pub fn lb6_tun(ctx: XdpContext) -> u32 {
    verdict(v6::tunnel(&ctx))
}

/// NAT66 towards the real server, by tail call from `lb6` (v6.rs).
#[xdp]
#[inline(always)]
pub fn lb6_nat(ctx: XdpContext) -> u32 {
    verdict(v6::nat(&ctx))
}

/// NAT66 replies and ICMPv6 errors, by tail call from `lb6` (v6.rs).
#[xdp]
#[inline(always)]
pub fn lb6_nat_reply(ctx: XdpContext) -> u32 {
    verdict(v6::nat_reply(&ctx))
}

/// A connect() of a process on the balancer (local.rs).
#[cgroup_sock_addr(connect4)]
pub fn local_connect4(ctx: SockAddrContext) -> i32 {
    local::to_real(&ctx)
}

/// A sendto() on an unconnected UDP socket of a process on the balancer.
#[cgroup_sock_addr(sendmsg4)]
pub fn local_sendmsg4(ctx: SockAddrContext) -> i32 {
    local::to_real(&ctx)
}

/// getpeername() of a socket local_connect4 pointed elsewhere: the VIP.
#[cgroup_sock_addr(getpeername4)]
pub fn local_getpeername4(ctx: SockAddrContext) -> i32 {
    local::to_vip(&ctx)
}

/// TCP events of the balancer's sockets: follows the states of those
/// local_connect4 pointed at a real server (local_conns.rs).
#[sock_ops]
pub fn local_sock_ops(ctx: SockOpsContext) -> u32 {
    local_conns::on_sock_op(&ctx);
    local::SOCK_OPS_DONE
}

/// A socket of the balancer closed: its entry, if no TCP callback ends it.
#[cgroup_sock(sock_release)]
pub fn local_release(ctx: SockContext) -> i32 {
    local_conns::on_release(&ctx);
    local::ALLOW
}

/// recvfrom() of a datagram from the real server local_sendmsg4 chose.
#[cgroup_sock_addr(recvmsg4)]
pub fn local_recvmsg4(ctx: SockAddrContext) -> i32 {
    local::to_vip(&ctx)
}

/// The same four for IPv6 VIPs (local.rs).
#[cgroup_sock_addr(connect6)]
pub fn local_connect6(ctx: SockAddrContext) -> i32 {
    local::to_real6(&ctx)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn local_sendmsg6(ctx: SockAddrContext) -> i32 {
    local::to_real6(&ctx)
}

#[cgroup_sock_addr(getpeername6)]
pub fn local_getpeername6(ctx: SockAddrContext) -> i32 {
    local::to_vip6(&ctx)
}

#[cgroup_sock_addr(recvmsg6)]
pub fn local_recvmsg6(ctx: SockAddrContext) -> i32 {
    local::to_vip6(&ctx)
}

#[inline(always)]
fn process_packet(ctx: &XdpContext) -> Result<u32, Abort> {
    let pkt = match parse::parse_l4(ctx) {
        Ok(pkt) => pkt,
        // Not IPv4: lb6's turn (only such frames pay for IPv6).
        Err(counters::PASS_NOT_IPV4) => {
            // SAFETY: on success the kernel runs lb6 on this frame instead
            // of returning here; nothing of this run is pending (no map
            // value held, no counter bumped yet).
            unsafe { maps::FAMILY_PROGRAMS.tail_call(ctx, lb_common::FAMILY_PROGRAM_IPV6) };
            // No lb6 installed (an agent before IPv6 left the array empty).
            count(counters::PASS_NOT_IPV4);
            return Ok(xdp_action::XDP_PASS);
        }
        Err(reason) => {
            // With NAT services, an ICMP error may be about a NAT'ed flow.
            if reason == counters::PASS_NOT_TCP_UDP
                && let Some(globals) = LB_GLOBALS.get(0)
                && globals.flags & GLOBAL_FLAG_NAT != 0
                && let Some(err) = parse::parse_icmp_error(ctx)
                && let Some(action) = forward::nat::icmp_reply(ctx, &err, globals)?
            {
                return Ok(action);
            }
            count(reason);
            return Ok(xdp_action::XDP_PASS);
        }
    };
    let flow = &pkt.flow;
    let globals = LB_GLOBALS.get(0).ok_or(Abort(counters::ABORT_MAP))?;
    let Some(found) = find_service(flow, globals) else {
        // Not for a service; with NAT services it may be a real server's reply.
        if globals.flags & GLOBAL_FLAG_NAT != 0
            && let Some(action) = forward::nat::reply(ctx, &pkt, globals)?
        {
            return Ok(action);
        }
        count(counters::PASS_NO_SERVICE);
        return Ok(xdp_action::XDP_PASS);
    };
    if found.hit.standby {
        count(counters::PASS_STANDBY);
        return Ok(xdp_action::XDP_PASS);
    }
    let (mut service_id, mut forward) = (found.service_id, found.hit.forward);

    let (real_id, real, new_conn) =
        match conntrack::classify(flow, found.entry, service_id, pkt.tcp_flags) {
            Lookup::Hit(real_id, real, moved) => {
                if let Some(state) = moved {
                    sync::announce(
                        globals,
                        *flow,
                        (service_id, real_id),
                        state,
                        SYNC_EVENT_FLOW,
                    );
                }
                (real_id, real, false)
            }
            found_flow => {
                // Scheduling needs the service's entry: a hit taken without
                // it (service_hit) whose server went looks it up now.
                let Some((svc, service_key)) = found.info.or_else(|| lookup_service(flow, globals))
                else {
                    count(counters::PASS_NO_SERVICE);
                    return Ok(xdp_action::XDP_PASS);
                };
                (service_id, forward) = (svc.service_id, svc.forward);
                match schedule_new_flow(
                    ctx,
                    globals,
                    svc,
                    &service_key,
                    flow,
                    pkt.tcp_flags,
                    found_flow,
                )? {
                    Some((real_id, real)) => (real_id, real, true),
                    None => {
                        count(counters::DROP_NO_REAL);
                        return Ok(xdp_action::XDP_DROP);
                    }
                }
            }
        };

    let bytes = (ctx.data_end() - ctx.data()) as u64;
    account(&SERVICE_STATS, service_id, bytes, new_conn);
    account(&REAL_STATS, real_id, bytes, new_conn);

    let action = match ForwardKind::from_u8(forward) {
        Some(ForwardKind::Dr) => forward::dr::forward(ctx, real, globals)?,
        Some(ForwardKind::Tun) => forward::tun::forward(ctx, &pkt, real, globals)?,
        Some(ForwardKind::Nat) => {
            forward::nat::forward(ctx, &pkt, real, globals, new_conn, (service_id, real_id))?
        }
        None => {
            count(counters::PASS_UNKNOWN_FORWARD);
            return Ok(xdp_action::XDP_PASS);
        }
    };
    Ok(maps::counted_tx(action))
}

/// A packet's service, as `find_service` found it.
struct FoundService {
    service_id: u32,
    hit: ServiceHit,
    /// Its entry and the key it is under; None when the flow's entry and
    /// service_hits told all a hit needs (no service lookup made).
    info: Option<(&'static ServiceInfo, ServiceKey)>,
    /// The flow's entry in the flow table, if it has one.
    entry: Option<*mut FlowEntry>,
}

/// The packet's service, and its flow's entry. The service filter first:
/// a packet for no service costs no lookup. Then the flow table: a flow
/// whose service is the one of the packet's (VIP, port, protocol) by
/// service_hits is a hit without the service's hash lookup (a flow-table
/// hit's other lookup); anything else looks the service up.
#[inline(always)]
fn find_service(flow: &FlowKey, globals: &LbGlobals) -> Option<FoundService> {
    let keys = FilteredKeys::of(flow, globals);
    if !keys.exact && !keys.any_port {
        return None;
    }
    let entry = flow.entry();
    if keys.exact
        && let Some(ptr) = entry
    {
        // SAFETY: a flow-table value pointer; the id is read once.
        let service_id = unsafe { (*ptr).service_id };
        let key_bytes = service_hit::key_word(flow.dst, flow.dport, flow.proto);
        if let Some(hit) = maps::service_hit(service_id, key_bytes) {
            return Some(FoundService {
                service_id,
                hit,
                info: None,
                entry,
            });
        }
    }
    let (svc, key) = keys.lookup(flow)?;
    Some(FoundService {
        service_id: svc.service_id,
        hit: ServiceHit {
            forward: svc.forward,
            standby: svc.flags & SERVICE_FLAG_STANDBY != 0,
        },
        info: Some((svc, key)),
        entry,
    })
}

/// Which of a packet's two service keys the service filter lets through:
/// its (VIP, port, protocol), and (VIP, 0, protocol) when some service is
/// on all ports.
struct FilteredKeys {
    exact: bool,
    any_port: bool,
}

impl FilteredKeys {
    #[inline(always)]
    fn of(flow: &FlowKey, globals: &LbGlobals) -> Self {
        let may_be = |port| maps::may_be_service(ServiceFilter::bit_v4(&service_key(flow, port)));
        Self {
            exact: may_be(flow.dport),
            any_port: globals.flags & GLOBAL_FLAG_PORT0 != 0 && may_be(0),
        }
    }

    /// The service under the first key let through that has one, with
    /// that key.
    #[inline(always)]
    fn lookup(&self, flow: &FlowKey) -> Option<(&'static ServiceInfo, ServiceKey)> {
        let mut key = service_key(flow, flow.dport);
        if self.exact {
            // SAFETY: the agent replaces service entries whole (map update), never in place.
            if let Some(svc) = unsafe { SERVICES.get(&key) } {
                return Some((svc, key));
            }
        }
        if !self.any_port {
            return None;
        }
        key.port = 0;
        // SAFETY: as above.
        unsafe { SERVICES.get(&key) }.map(|svc| (svc, key))
    }
}

/// The service key of the packet's VIP and protocol on `port`.
#[inline(always)]
fn service_key(flow: &FlowKey, port: u16) -> ServiceKey {
    ServiceKey {
        vip: flow.dst,
        port,
        proto: flow.proto,
        _pad: 0,
    }
}

/// The service of the packet's (VIP, port, protocol), else the VIP's
/// all-ports (port 0) persistent service; with the key it was found under.
/// A key whose filter bit is clear is not looked up (no service has it).
#[inline(always)]
fn lookup_service(
    flow: &FlowKey,
    globals: &LbGlobals,
) -> Option<(&'static ServiceInfo, ServiceKey)> {
    FilteredKeys::of(flow, globals).lookup(flow)
}

/// A packet whose connection the flow table does not hold (or holds for a
/// server that is gone): its persistence template or the scheduler picks
/// the server, and the connection goes into the table. None when the
/// service has no server to give.
#[inline(always)]
fn schedule_new_flow(
    ctx: &XdpContext,
    globals: &LbGlobals,
    svc: &ServiceInfo,
    service_key: &ServiceKey,
    flow: &FlowKey,
    tcp_flags: u8,
    found: Lookup,
) -> Result<Option<(u32, &'static RealServer)>, Abort> {
    if matches!(found, Lookup::Miss) && lb_common::conntrack::is_midstream(flow.proto, tcp_flags) {
        count(counters::FLOW_MIDSTREAM);
    }
    let template = persist::lookup(svc, service_key.port, flow);
    let chosen = match template {
        Template::Valid(real_id) => Some(real_id),
        _ => sched::schedule(svc, flow),
    };
    let Some(real_id) = chosen else {
        debug!(ctx, "service {}: no real server available", svc.service_id);
        return Ok(None);
    };
    let (mut real_id, new_template) = persist::remember(svc, template, real_id);
    if let Some(key) = new_template {
        let ids = (svc.service_id, real_id);
        sync::announce(globals, key.as_flow_key(), ids, 0, SYNC_EVENT_TEMPLATE);
    }
    let tracked = match found {
        Lookup::Stale(entry) => conntrack::reuse(entry, flow, svc.service_id, real_id, tcp_flags),
        _ => match conntrack::insert(flow, svc.service_id, real_id, tcp_flags) {
            conntrack::Inserted::Tracked(state) => Some(state),
            conntrack::Inserted::Raced(theirs) => {
                real_id = theirs;
                None
            }
            // Full table: every packet of an untracked connection is "new",
            // so it must land where the others did: the flow's hash picks
            // the server (a persistent service's template already pins it).
            // Established flows are never evicted for it.
            conntrack::Inserted::Full if svc.persist_timeout_s == 0 => {
                real_id = sched::by_flow_hash(svc, flow).unwrap_or(real_id);
                None
            }
            conntrack::Inserted::Full => None,
        },
    };
    if let Some(state) = tracked {
        sync::announce(
            globals,
            *flow,
            (svc.service_id, real_id),
            state,
            SYNC_EVENT_FLOW,
        );
    }
    let real = REALS.get(real_id).ok_or(Abort(counters::ABORT_MAP))?;
    debug!(
        ctx,
        "service {}: new flow -> real {}", svc.service_id, real_id
    );
    Ok(Some((real_id, real)))
}
