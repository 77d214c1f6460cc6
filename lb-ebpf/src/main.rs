//! The lb XDP program. `process_packet` reads as the packet's story:
//! parse, find the service, find or schedule the connection's real server,
//! forward. Everything that is not for a virtual service is XDP_PASS,
//! untouched.
#![no_std]
#![no_main]
// atomic_xadd: per-server connection counters shared by all CPUs.
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod clock;
mod conntrack;
mod csum;
mod forward;
mod icmp;
mod maps;
mod parse;
mod persist;
mod runtime;
mod sched;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use aya_log_ebpf::debug;
use lb_common::{
    ForwardKind, GLOBAL_FLAG_NAT, GLOBAL_FLAG_PORT0, REAL_FLAG_MAC_VALID, SERVICE_FLAG_STANDBY,
    ServiceKey, counters,
};

use conntrack::Lookup;
use maps::{LB_GLOBALS, REAL_STATS, REALS, SERVICE_STATS, SERVICES, account, count};
use persist::Template;

// inline(always): the macro's entry point calls this function; left to
// LLVM it stays a BPF-to-BPF call (a call, a return and a stack frame per
// packet).
#[xdp]
#[inline(always)]
pub fn lb(ctx: XdpContext) -> u32 {
    match process_packet(&ctx) {
        Ok(action) => action,
        Err(()) => xdp_action::XDP_ABORTED,
    }
}

#[inline(always)]
fn process_packet(ctx: &XdpContext) -> Result<u32, ()> {
    let pkt = match parse::parse_l4(ctx) {
        Ok(pkt) => pkt,
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
    let globals = LB_GLOBALS.get(0).ok_or(())?;
    let service_key = ServiceKey {
        vip: flow.dst,
        port: flow.dport,
        proto: flow.proto,
        _pad: 0,
    };
    // SAFETY: the agent replaces service entries whole (map update), never in place.
    let mut found = unsafe { SERVICES.get(&service_key) };
    let mut service_key = service_key;
    if found.is_none() && globals.flags & GLOBAL_FLAG_PORT0 != 0 {
        // An all-ports (port 0) persistent service of this VIP.
        service_key.port = 0;
        found = unsafe { SERVICES.get(&service_key) };
    }
    let Some(svc) = found else {
        // Not for a service; with NAT services it may be a real server's reply.
        if globals.flags & GLOBAL_FLAG_NAT != 0
            && let Some(action) = forward::nat::reply(ctx, &pkt, globals)?
        {
            return Ok(action);
        }
        count(counters::PASS_NO_SERVICE);
        return Ok(xdp_action::XDP_PASS);
    };
    if svc.flags & SERVICE_FLAG_STANDBY != 0 {
        count(counters::PASS_STANDBY);
        return Ok(xdp_action::XDP_PASS);
    }

    let (real_id, real, new_conn) = match conntrack::lookup(flow, svc.service_id, pkt.tcp_flags) {
        Lookup::Hit(real_id, real) => (real_id, real, false),
        found => {
            let template = persist::lookup(svc, &service_key, flow);
            let chosen = match template {
                Template::Valid(real_id) => Some(real_id),
                _ => sched::schedule(svc, flow),
            };
            let Some(real_id) = chosen else {
                debug!(ctx, "service {}: no real server available", svc.service_id);
                count(counters::DROP_NO_REAL);
                return Ok(xdp_action::XDP_DROP);
            };
            let mut real_id = persist::remember(svc, template, real_id);
            match found {
                Lookup::Stale(entry) => {
                    conntrack::reuse(entry, flow, svc.service_id, real_id, pkt.tcp_flags)
                }
                _ => match conntrack::insert(flow, svc.service_id, real_id, pkt.tcp_flags) {
                    conntrack::Inserted::Tracked => {}
                    conntrack::Inserted::Raced(theirs) => real_id = theirs,
                    // Full table: every packet of an untracked connection
                    // is "new", so it must land where the others did: the
                    // flow's hash picks the server (a persistent service's
                    // template already pins it). Established flows are
                    // never evicted for it.
                    conntrack::Inserted::Full if svc.persist_timeout_s == 0 => {
                        real_id = sched::by_flow_hash(svc, flow).unwrap_or(real_id)
                    }
                    conntrack::Inserted::Full => {}
                },
            }
            let real = REALS.get(real_id).ok_or(())?;
            debug!(
                ctx,
                "service {}: new flow -> real {}", svc.service_id, real_id
            );
            (real_id, real, true)
        }
    };

    let bytes = (ctx.data_end() - ctx.data()) as u64;
    account(&SERVICE_STATS, svc.service_id, bytes, new_conn);
    account(&REAL_STATS, real_id, bytes, new_conn);

    let action = match ForwardKind::from_u8(svc.forward) {
        Some(ForwardKind::Dr) => {
            if real.flags & REAL_FLAG_MAC_VALID == 0 {
                count(counters::DROP_NO_REAL_MAC);
                return Ok(xdp_action::XDP_DROP);
            }
            forward::dr::forward(ctx, real, globals)?
        }
        Some(ForwardKind::Tun) => forward::tun::forward(ctx, &pkt, real, globals)?,
        Some(ForwardKind::Nat) => forward::nat::forward(
            ctx,
            &pkt,
            real,
            globals,
            new_conn,
            (svc.service_id, real_id),
        )?,
        None => xdp_action::XDP_PASS,
    };
    if action == xdp_action::XDP_TX {
        count(counters::TX);
    }
    Ok(action)
}
