//! IPv6 services: the same story as `process_packet`, over IPv6. Services,
//! backend sets, servers, schedulers, conntrack and statistics are the
//! IPv4 ones (generic over family.rs); the differences are the maps keyed
//! by address (SERVICES6, FLOW_TABLE6, PERSIST6, LOCALITY6) and what is not
//! done over IPv6 yet: DR and TUN only (the agent refuses NAT), no
//! connection-sync events. TUN runs in `lb6_tun`, tail-called once the
//! server is chosen.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::{
    FORWARD6_PROGRAM_TUN, FlowKey6, ForwardKind, GLOBAL_FLAG_PORT0, LbGlobals,
    SERVICE_FLAG_STANDBY, ServiceInfo, ServiceKey6, counters,
};

use crate::{
    conntrack::{self, Lookup},
    forward,
    header::Abort,
    maps::{
        FORWARD6_PROGRAMS, FORWARD6_REAL, LB_GLOBALS, REAL_STATS, REALS, SERVICE_STATS, SERVICES6,
        account, count, counted_tx,
    },
    parse,
    persist::{self, Template},
    sched,
};

/// An IPv6 frame (the IPv4 parser found another EtherType): balanced if
/// it is TCP/UDP to an IPv6 service, else passed untouched and counted
/// (neighbour discovery, MLD and router advertisements are ICMPv6).
#[inline(always)]
pub fn process_packet(ctx: &XdpContext) -> Result<u32, Abort> {
    let pkt = match parse::parse_l4_v6(ctx) {
        Ok(pkt) => pkt,
        Err(reason) => {
            count(reason);
            return Ok(xdp_action::XDP_PASS);
        }
    };
    let flow = &pkt.flow;
    let globals = LB_GLOBALS.get(0).ok_or(Abort(counters::ABORT_MAP))?;
    let Some((svc, vport)) = find_service(flow, globals) else {
        count(counters::PASS_NO_SERVICE);
        return Ok(xdp_action::XDP_PASS);
    };
    if svc.flags & SERVICE_FLAG_STANDBY != 0 {
        count(counters::PASS_STANDBY);
        return Ok(xdp_action::XDP_PASS);
    }
    let kind = ForwardKind::from_u8(svc.forward);
    if !matches!(kind, Some(ForwardKind::Dr | ForwardKind::Tun)) {
        count(counters::PASS_IPV6_UNSUPPORTED_FORWARD);
        return Ok(xdp_action::XDP_PASS);
    }
    let (real_id, new_conn) = match conntrack::lookup(flow, svc.service_id, pkt.tcp_flags) {
        Lookup::Hit(real_id, _, _) => (real_id, false),
        found => match schedule_new_flow(svc, vport, &pkt, found) {
            Some(real_id) => (real_id, true),
            None => {
                count(counters::DROP_NO_REAL);
                return Ok(xdp_action::XDP_DROP);
            }
        },
    };
    let real = REALS.get(real_id).ok_or(Abort(counters::ABORT_MAP))?;

    let bytes = (ctx.data_end() - ctx.data()) as u64;
    account(&SERVICE_STATS, svc.service_id, bytes, new_conn);
    account(&REAL_STATS, real_id, bytes, new_conn);

    if kind == Some(ForwardKind::Tun) {
        return tail_call_tunnel(ctx, real_id);
    }
    Ok(counted_tx(forward::dr::forward(ctx, real, globals)?))
}

/// Hands the frame to `lb6_tun` with `real_id` (its TX is counted there).
#[inline(always)]
fn tail_call_tunnel(ctx: &XdpContext, real_id: u32) -> Result<u32, Abort> {
    let slot = FORWARD6_REAL
        .get_ptr_mut(0)
        .ok_or(Abort(counters::ABORT_MAP))?;
    // SAFETY: this CPU's slot; nothing else runs on this CPU until the
    // tail-called program has read it.
    unsafe { *slot = real_id };
    // SAFETY: on success the kernel runs lb6_tun on this frame instead of
    // returning here; nothing of this run is pending (accounting is done,
    // no map value is held past this point).
    unsafe { FORWARD6_PROGRAMS.tail_call(ctx, FORWARD6_PROGRAM_TUN) };
    // The agent installs lb6_tun before it attaches: never empty.
    Err(Abort(counters::ABORT_MAP))
}

/// `lb6_tun`: the frame `lb6` scheduled to real server FORWARD6_REAL,
/// IPv6-in-IPv6 to it. Parsed again (the tail call kept nothing else).
#[inline(always)]
pub fn tunnel(ctx: &XdpContext) -> Result<u32, Abort> {
    let pkt = parse::parse_l4_v6(ctx).map_err(|_| Abort(counters::ABORT_BOUNDS))?;
    let globals = LB_GLOBALS.get(0).ok_or(Abort(counters::ABORT_MAP))?;
    let real_id = *FORWARD6_REAL.get(0).ok_or(Abort(counters::ABORT_MAP))?;
    let real = REALS.get(real_id).ok_or(Abort(counters::ABORT_MAP))?;
    Ok(counted_tx(forward::tun::forward6(
        ctx, &pkt, real_id, real, globals,
    )?))
}

/// The service of the packet's (VIP, port, protocol), else the VIP's
/// all-ports (port 0) persistent service; with the port it was found
/// under (as main.rs's find_service).
#[inline(always)]
fn find_service(flow: &FlowKey6, globals: &LbGlobals) -> Option<(&'static ServiceInfo, u16)> {
    let mut key = ServiceKey6 {
        vip: flow.dst,
        port: flow.dport,
        proto: flow.proto,
        _pad: 0,
    };
    // SAFETY: the agent replaces service entries whole (map update), never in place.
    if let Some(svc) = unsafe { SERVICES6.get(&key) } {
        return Some((svc, key.port));
    }
    if globals.flags & GLOBAL_FLAG_PORT0 == 0 {
        return None;
    }
    key.port = 0;
    // SAFETY: as above.
    unsafe { SERVICES6.get(&key) }.map(|svc| (svc, 0))
}

/// The server for a connection the flow table does not hold: its
/// persistence template's or the scheduler's, remembered in FLOW_TABLE6
/// (as main.rs's schedule_new_flow, without sync events: connection sync
/// carries no IPv6 records yet).
#[inline(always)]
fn schedule_new_flow(
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
    let (mut real_id, _) = persist::remember(svc, template, chosen);
    match found {
        Lookup::Stale(entry) => {
            conntrack::reuse(entry, flow, svc.service_id, real_id, tcp_flags);
        }
        _ => match conntrack::insert(flow, svc.service_id, real_id, tcp_flags) {
            conntrack::Inserted::Tracked(_) => {}
            conntrack::Inserted::Raced(theirs) => real_id = theirs,
            // Full table: the flow's hash keeps every packet of the
            // untracked connection on one server (as IPv4; a persistent
            // service's template already pins it).
            conntrack::Inserted::Full if svc.persist_timeout_s == 0 => {
                real_id = sched::by_flow_hash(svc, flow).unwrap_or(real_id);
            }
            conntrack::Inserted::Full => {}
        },
    }
    Some(real_id)
}
