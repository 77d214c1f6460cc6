//! Where to send a packet addressed to `dst`: bpf_fib_lookup (routes and
//! neighbours of the kernel), falling back to the MAC the agent resolved.

use aya_ebpf::{
    bindings::{BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibParams, xdp_action},
    helpers::{bpf_fib_lookup, bpf_redirect},
    programs::XdpContext,
};
use lb_common::{Ipv4Octets, Ipv6Octets, LbGlobals, REAL_FLAG_MAC_VALID, RealServer, counters};

use crate::{
    kernel::{AF_INET, AF_INET6, ipv6_words},
    maps::{TX_PORTS, count},
};

pub struct NextHop {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    /// Egress interface; the ingress one means XDP_TX.
    pub ifindex: u32,
}

/// `tot_len`: the IPv4 length of the packet as it will be sent.
#[inline(always)]
pub fn lookup(
    ctx: &XdpContext,
    globals: &LbGlobals,
    src: Ipv4Octets,
    real: &RealServer,
    tot_len: u16,
) -> Option<NextHop> {
    // SAFETY: bpf_fib_lookup is plain integers and arrays: all zeroes is valid.
    let mut p: FibParams = unsafe { core::mem::zeroed() };
    init(&mut p, AF_INET, globals, tot_len);
    p.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(src);
    p.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(real.ip);
    resolve(ctx, globals, &mut p, real)
}

/// The same for an IPv6 packet from `src` to `dst` (the IPv6 real
/// server's address); `tot_len` counts the IPv6 header too.
#[inline(always)]
pub fn lookup6(
    ctx: &XdpContext,
    globals: &LbGlobals,
    addrs: (&Ipv6Octets, &Ipv6Octets),
    real: &RealServer,
    tot_len: u16,
) -> Option<NextHop> {
    // SAFETY: as above.
    let mut p: FibParams = unsafe { core::mem::zeroed() };
    init(&mut p, AF_INET6, globals, tot_len);
    p.__bindgen_anon_3.ipv6_src = ipv6_words(addrs.0);
    p.__bindgen_anon_4.ipv6_dst = ipv6_words(addrs.1);
    resolve(ctx, globals, &mut p, real)
}

/// The fields both families fill alike (in place: a FibParams returned by
/// value is one more 64-byte copy on a stack that has no room for it).
#[inline(always)]
fn init(p: &mut FibParams, family: u8, globals: &LbGlobals, tot_len: u16) {
    p.family = family;
    p.ifindex = globals.ifindex;
    p.__bindgen_anon_1.tot_len = tot_len;
}

/// bpf_fib_lookup's next hop, else the MAC the agent resolved for `real`.
#[inline(always)]
fn resolve(
    ctx: &XdpContext,
    globals: &LbGlobals,
    p: &mut FibParams,
    real: &RealServer,
) -> Option<NextHop> {
    // SAFETY: p is a valid, initialized bpf_fib_lookup on our stack.
    let ret = unsafe {
        bpf_fib_lookup(
            ctx.ctx.cast(),
            p,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    if ret == i64::from(BPF_FIB_LKUP_RET_SUCCESS) {
        return Some(NextHop {
            dst_mac: p.dmac,
            src_mac: p.smac,
            ifindex: p.ifindex,
        });
    }
    // No route/neighbour in the kernel (or forwarding off): a real server on
    // our link (the inside one when two-armed) is reachable at the MAC the
    // agent resolved.
    if real.flags & REAL_FLAG_MAC_VALID != 0 {
        let (src_mac, ifindex) = if globals.inside_ifindex != 0 {
            (globals.inside_mac, globals.inside_ifindex)
        } else {
            (globals.iface_mac, globals.ifindex)
        };
        return Some(NextHop {
            dst_mac: real.mac,
            src_mac,
            ifindex,
        });
    }
    None
}

/// The interface the frame came in on. One-armed it is ours by definition
/// (BPF_PROG_TEST_RUN reports loopback); two-armed the kernel says which.
#[inline(always)]
pub fn ingress(ctx: &XdpContext, globals: &LbGlobals) -> u32 {
    // Read unconditionally (volatile): a load the compiler merged over the
    // context and a map value is refused by the verifier ("same insn cannot
    // be used with different pointers").
    // SAFETY: ctx.ctx is the program's valid xdp_md.
    let from_kernel = unsafe { core::ptr::read_volatile(&(*ctx.ctx).ingress_ifindex) };
    if globals.inside_ifindex == 0 {
        globals.ifindex
    } else {
        from_kernel
    }
}

/// The verdict that sends the (rewritten) frame out of `ifindex`: XDP_TX
/// back out of the interface it came in on, else a redirect through the
/// tx_ports devmap (bpf_redirect for interfaces the agent did not list).
#[inline(always)]
pub fn transmit(ctx: &XdpContext, ifindex: u32, globals: &LbGlobals) -> u32 {
    if ifindex == ingress(ctx, globals) {
        return xdp_action::XDP_TX;
    }
    count(counters::REDIRECT);
    match TX_PORTS.redirect(ifindex, 0) {
        Ok(action) => action,
        // SAFETY: plain helper call.
        Err(_) => unsafe { bpf_redirect(ifindex, 0) as u32 },
    }
}
