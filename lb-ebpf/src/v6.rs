//! IPv6 services: the same story as `process_packet`, over IPv6. Services,
//! backend sets, servers, schedulers, conntrack and statistics are the
//! IPv4 ones (generic over family.rs); the differences are the maps keyed
//! by address (SERVICES6, FLOW_TABLE6, PERSIST6, LOCALITY6, NAT_REVERSE6)
//! and the connection-sync events (SyncEvent6, sync::announce6). TUN and NAT
//! run in programs of their own (`lb6_tun`, `lb6_nat`), tail-called once
//! the server is chosen, and so do NAT replies (`lb6_nat_reply`): one
//! program with all of them exceeds the verifier's budget.

use aya_ebpf::{bindings::xdp_action, btf_maps::ProgramArray, programs::XdpContext};
use lb_common::{
    FORWARD6_PROGRAM_TUN, FlowKey6, Forward6Flow, ForwardKind, GLOBAL_FLAG_NAT6, GLOBAL_FLAG_PORT0,
    LbGlobals, NAT6_PROGRAM_FORWARD, NAT6_PROGRAM_REPLY, SERVICE_FLAG_STANDBY, SYNC_EVENT_FLOW,
    SYNC_EVENT_TEMPLATE, ServiceFilter, ServiceInfo, ServiceKey6, counters,
};

use crate::{
    conntrack::{self, Lookup},
    forward,
    header::Abort,
    maps::{
        FORWARD6_FLOW, FORWARD6_PROGRAMS, LB_GLOBALS, NAT6_PROGRAMS, REAL_STATS, REALS,
        SERVICE_STATS, SERVICES6, account, count, counted_tx, may_be_service,
    },
    parse,
    persist::{self, Template},
    sched, sync,
};

/// An IPv6 frame (the IPv4 parser found another EtherType): balanced if
/// it is TCP/UDP to an IPv6 service, else passed untouched and counted
/// (neighbour discovery, MLD and router advertisements are ICMPv6) unless
/// it is a NAT66 reply.
#[inline(always)]
pub fn process_packet(ctx: &XdpContext) -> Result<u32, Abort> {
    let pkt = match parse::parse_l4_v6(ctx) {
        Ok(pkt) => pkt,
        Err(reason) => {
            // With NAT66 services, an ICMPv6 error may be about a NAT'ed flow.
            if reason == counters::PASS_IPV6_NOT_TCP_UDP && nat6_replies_possible() {
                nat_reply_tail_call(ctx);
            }
            count(reason);
            return Ok(xdp_action::XDP_PASS);
        }
    };
    let flow = &pkt.flow;
    let globals = LB_GLOBALS.get(0).ok_or(Abort(counters::ABORT_MAP))?;
    let Some((svc, vport)) = find_service(flow, globals) else {
        // Not for a service; with NAT66 services it may be a real server's reply.
        if globals.flags & GLOBAL_FLAG_NAT6 != 0 {
            nat_reply_tail_call(ctx);
        }
        count(counters::PASS_NO_SERVICE);
        return Ok(xdp_action::XDP_PASS);
    };
    if svc.flags & SERVICE_FLAG_STANDBY != 0 {
        count(counters::PASS_STANDBY);
        return Ok(xdp_action::XDP_PASS);
    }
    let Some(kind) = ForwardKind::from_u8(svc.forward) else {
        count(counters::PASS_IPV6_UNSUPPORTED_FORWARD);
        return Ok(xdp_action::XDP_PASS);
    };
    let (real_id, new_conn) = match conntrack::lookup(flow, svc.service_id, pkt.tcp_flags) {
        Lookup::Hit(real_id, _, moved) => {
            if let Some(state) = moved {
                let ids = (svc.service_id, real_id);
                sync::announce6(globals, key6(flow), ids, state, SYNC_EVENT_FLOW);
            }
            (real_id, false)
        }
        found => match schedule_new_flow(globals, svc, vport, &pkt, found) {
            Some(real_id) => (real_id, true),
            None => {
                count(counters::DROP_NO_REAL);
                return Ok(xdp_action::XDP_DROP);
            }
        },
    };
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    account(&SERVICE_STATS, svc.service_id, bytes, new_conn);
    account(&REAL_STATS, real_id, bytes, new_conn);

    let decided = Forward6Flow {
        real_id,
        service_id: svc.service_id,
        new_flow: new_conn as u8,
        _pad: [0; 3],
    };
    match kind {
        ForwardKind::Tun => tail_call(ctx, &FORWARD6_PROGRAMS, FORWARD6_PROGRAM_TUN, decided),
        ForwardKind::Nat => tail_call(ctx, &NAT6_PROGRAMS, NAT6_PROGRAM_FORWARD, decided),
        ForwardKind::Dr => {
            let real = REALS.get(real_id).ok_or(Abort(counters::ABORT_MAP))?;
            Ok(counted_tx(forward::dr::forward(ctx, real, globals)?))
        }
    }
}

/// Hands the frame to forwarding program `index` of `programs` with what
/// lb6 `decided` (its TX is counted there).
#[inline(always)]
fn tail_call<const SLOTS: usize>(
    ctx: &XdpContext,
    programs: &ProgramArray<SLOTS>,
    index: u32,
    decided: Forward6Flow,
) -> Result<u32, Abort> {
    let slot = FORWARD6_FLOW
        .get_ptr_mut(0)
        .ok_or(Abort(counters::ABORT_MAP))?;
    // SAFETY: this CPU's slot; nothing else runs on this CPU until the
    // tail-called program has read it.
    unsafe { *slot = decided };
    // SAFETY: on success the kernel runs the program on this frame instead
    // of returning here; nothing of this run is pending (accounting is
    // done, no map value is held past this point).
    unsafe { programs.tail_call(ctx, index) };
    // The agent installs the programs before it attaches: never empty.
    Err(Abort(counters::ABORT_MAP))
}

/// Whether some IPv6 service uses NAT (lb_globals' flag).
#[inline(always)]
fn nat6_replies_possible() -> bool {
    LB_GLOBALS
        .get(0)
        .is_some_and(|globals| globals.flags & GLOBAL_FLAG_NAT6 != 0)
}

/// Hands a frame that is no service's to `lb6_nat_reply`, which counts
/// it. Returns only when the program is missing (the caller counts).
#[inline(always)]
fn nat_reply_tail_call(ctx: &XdpContext) {
    // SAFETY: as in tail_call; nothing was counted or held yet.
    unsafe { NAT6_PROGRAMS.tail_call(ctx, NAT6_PROGRAM_REPLY) };
}

/// What lb6 decided for the frame a forwarding program got by tail call,
/// the frame parsed again (the tail call kept nothing else) and the
/// server's entry.
#[inline(always)]
fn decided(
    ctx: &XdpContext,
) -> Result<
    (
        parse::L4Packet6,
        Forward6Flow,
        &'static lb_common::RealServer,
    ),
    Abort,
> {
    let pkt = parse::parse_l4_v6(ctx).map_err(|_| Abort(counters::ABORT_BOUNDS))?;
    let decided = *FORWARD6_FLOW.get(0).ok_or(Abort(counters::ABORT_MAP))?;
    let real = REALS
        .get(decided.real_id)
        .ok_or(Abort(counters::ABORT_MAP))?;
    Ok((pkt, decided, real))
}

/// `lb6_tun`: the frame `lb6` scheduled, IPv6-in-IPv6 to its server.
#[inline(always)]
pub fn tunnel(ctx: &XdpContext) -> Result<u32, Abort> {
    let (pkt, decided, real) = decided(ctx)?;
    let globals = LB_GLOBALS.get(0).ok_or(Abort(counters::ABORT_MAP))?;
    Ok(counted_tx(forward::tun::forward6(
        ctx,
        &pkt,
        decided.real_id,
        real,
        globals,
    )?))
}

/// `lb6_nat`: the frame `lb6` scheduled, NAT'ed to its server.
#[inline(always)]
pub fn nat(ctx: &XdpContext) -> Result<u32, Abort> {
    let (pkt, decided, real) = decided(ctx)?;
    let globals = LB_GLOBALS.get(0).ok_or(Abort(counters::ABORT_MAP))?;
    Ok(counted_tx(forward::nat6::forward(
        ctx, &pkt, real, &decided, globals,
    )?))
}

/// `lb6_nat_reply`: an IPv6 frame that is no service's while NAT66
/// services exist: a real server's reply or an ICMPv6 error about a
/// NAT'ed flow is sent on to the client; anything else passes, counted
/// as lb6 would have.
#[inline(always)]
pub fn nat_reply(ctx: &XdpContext) -> Result<u32, Abort> {
    let globals = LB_GLOBALS.get(0).ok_or(Abort(counters::ABORT_MAP))?;
    // (Replies are counted by NAT_REPLY / NAT_ICMP, as over IPv4.)
    let passed = match parse::parse_l4_v6(ctx) {
        Ok(pkt) => {
            if let Some(action) = forward::nat6::reply(ctx, &pkt, globals)? {
                return Ok(action);
            }
            counters::PASS_NO_SERVICE
        }
        Err(reason) => {
            if let Some(err) = parse::parse_icmp6_error(ctx)
                && let Some(action) = forward::nat6::icmp_reply(ctx, &err, globals)?
            {
                return Ok(action);
            }
            reason
        }
    };
    count(passed);
    Ok(xdp_action::XDP_PASS)
}

/// The service of the packet's (VIP, port, protocol), else the VIP's
/// all-ports (port 0) persistent service; with the port it was found
/// under (as main.rs's find_service).
#[inline(always)]
pub fn find_service(flow: &FlowKey6, globals: &LbGlobals) -> Option<(&'static ServiceInfo, u16)> {
    let mut key = ServiceKey6 {
        vip: flow.dst,
        port: flow.dport,
        proto: flow.proto,
        _pad: 0,
    };
    if may_be_service(ServiceFilter::bit_v6(&key)) {
        // SAFETY: the agent replaces service entries whole (map update), never in place.
        if let Some(svc) = unsafe { SERVICES6.get(&key) } {
            return Some((svc, key.port));
        }
    }
    if globals.flags & GLOBAL_FLAG_PORT0 == 0 {
        return None;
    }
    key.port = 0;
    if !may_be_service(ServiceFilter::bit_v6(&key)) {
        return None;
    }
    // SAFETY: as above.
    unsafe { SERVICES6.get(&key) }.map(|svc| (svc, 0))
}

/// A flow as sync::announce6 takes it.
#[inline(always)]
fn key6(flow: &FlowKey6) -> sync::Key6<'_> {
    (&flow.src, &flow.dst, flow.sport, flow.dport, flow.proto)
}

/// The server for a connection the flow table does not hold: its
/// persistence template's or the scheduler's, remembered in FLOW_TABLE6,
/// announced to connection sync (as main.rs's schedule_new_flow).
#[inline(always)]
fn schedule_new_flow(
    globals: &LbGlobals,
    svc: &ServiceInfo,
    vport: u16,
    pkt: &parse::L4Packet6,
    found: Lookup,
) -> Option<u32> {
    // (BPF calls take at most five arguments: the flow comes in its packet.)
    let (flow, tcp_flags) = (&pkt.flow, pkt.tcp_flags);
    if matches!(found, Lookup::Miss) && lb_common::conntrack::is_midstream(flow.proto, tcp_flags) {
        count(counters::FLOW_MIDSTREAM);
    }
    let template = persist::lookup(svc, vport, flow);
    let chosen = match template {
        Template::Valid(real_id) => real_id,
        _ => sched::schedule(svc, flow)?,
    };
    let (mut real_id, new_template) = persist::remember(svc, template, chosen);
    if let Some(template) = new_template {
        let k = template.key();
        let key = (&k.client_net, &k.vip, 0, k.vport, k.proto);
        sync::announce6(
            globals,
            key,
            (svc.service_id, real_id),
            0,
            SYNC_EVENT_TEMPLATE,
        );
    }
    let tracked = match found {
        Lookup::Stale(entry) => conntrack::reuse(entry, flow, svc.service_id, real_id, tcp_flags),
        _ => match conntrack::insert(flow, svc.service_id, real_id, tcp_flags) {
            conntrack::Inserted::Tracked(state) => Some(state),
            conntrack::Inserted::Raced(theirs) => {
                real_id = theirs;
                None
            }
            // Full table: the flow's hash keeps every packet of the
            // untracked connection on one server (as IPv4; a persistent
            // service's template already pins it).
            conntrack::Inserted::Full if svc.persist_timeout_s == 0 => {
                real_id = sched::by_flow_hash(svc, flow).unwrap_or(real_id);
                None
            }
            conntrack::Inserted::Full => None,
        },
    };
    if let Some(state) = tracked {
        let ids = (svc.service_id, real_id);
        sync::announce6(globals, key6(flow), ids, state, SYNC_EVENT_FLOW);
    }
    Some(real_id)
}
