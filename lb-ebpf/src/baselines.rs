//! The no-op programs xdp-bench runs, as the limit our balancer is measured
//! against in the same run: drop, pass, and tx with a MAC swap. And a traffic
//! generator for floods and live benchmarks (xdp-trafficgen's way: run in
//! BPF_PROG_TEST_RUN's live-frames mode on a veth, each frame gets a new
//! source address).
//! `xdp_pass` also serves the veth peers of a test topology: a veth delivers
//! XDP_TX frames only if its peer runs an XDP program in native mode.
#![no_std]
#![no_main]
#![warn(clippy::undocumented_unsafe_blocks)]

use aya_ebpf::{
    bindings::xdp_action,
    btf_maps::HashMap,
    helpers::generated::bpf_get_prandom_u32,
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use lb_common::{FlowEntry, FlowKey, IPPROTO_TCP, IPPROTO_UDP};
use lb_ebpf::{csum, parse};

lb_ebpf::license!();

/// Destination + source MAC, the bytes the tx baseline swaps.
const ETH_ADDRS_LEN: usize = 12;
const ETH_ALEN: usize = 6;

#[xdp]
pub fn xdp_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// xdp-bench tx: swap the MAC addresses and bounce the frame.
#[xdp]
pub fn xdp_tx(ctx: XdpContext) -> u32 {
    swap_macs_and_tx(&ctx)
}

#[inline(always)]
fn swap_macs_and_tx(ctx: &XdpContext) -> u32 {
    let start = ctx.data();
    if start + ETH_ADDRS_LEN > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    let macs = start as *mut [u8; ETH_ADDRS_LEN];
    // SAFETY: bounds checked above.
    unsafe {
        let orig = *macs;
        let mut swapped = [0u8; ETH_ADDRS_LEN];
        swapped[..ETH_ALEN].copy_from_slice(&orig[ETH_ALEN..]);
        swapped[ETH_ALEN..].copy_from_slice(&orig[..ETH_ALEN]);
        *macs = swapped;
    }
    xdp_action::XDP_TX
}

/// The flow table of `xdp_flow_lookup`: lb's key and value types and
/// map kind (preallocated). One entry unless the loader sizes it as the
/// balancer's under measure: every other load of this object (the veth
/// peers' xdp_pass, the traffic generator) would otherwise pin a whole
/// flow table's memory for nothing.
#[btf_map]
static BASELINE_FLOWS: HashMap<FlowKey, FlowEntry, 1> = HashMap::new();

/// What no balancer can skip of a flow-table hit: lb's parse of the frame
/// and one lookup in a flow table like lb's, then xdp_tx's MAC swap. Next
/// to lb in the same pipeline it tells the table's share of a hit (cache
/// and TLB misses over a large table) from the rest of lb's work.
#[xdp]
pub fn xdp_flow_lookup(ctx: XdpContext) -> u32 {
    let Ok(pkt) = parse::parse_l4(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: a read of a value nothing writes while the program runs.
    if unsafe { BASELINE_FLOWS.get(pkt.flow) }.is_none() {
        return xdp_action::XDP_DROP;
    }
    swap_macs_and_tx(&ctx)
}

/// Where the IPv4 header starts (Ethernet, no VLAN tag).
const ETH_HLEN: usize = 14;
/// Offsets in the IPv4 header (no options) and the TCP / UDP header after it.
const IP_PROTO_OFF: usize = 9;
const IP_CHECK_OFF: usize = 10;
const IP_SADDR_OFF: usize = 12;
const IPV4_HLEN: usize = 20;
const TCP_CHECK_OFF: usize = 16;
const UDP_CHECK_OFF: usize = 6;
/// A UDP checksum of zero means "none"; a computed zero is sent as this.
const UDP_CHECK_ZERO: u16 = 0xffff;
/// Flood sources: 198.18.0.0/15, the benchmarking range (RFC 2544).
const FLOOD_NET: u32 = 0xc612_0000;
const FLOOD_HOST_MASK: u32 = 0x0001_ffff;

/// Where the generator's sources come from: SOURCE_NET | (random &
/// SOURCE_MASK). The loader may set both (read-only data, folded by the
/// verifier): the bench's established-flows pipeline sends from exactly
/// the clients it put in the flow table.
#[unsafe(no_mangle)]
static SOURCE_NET: u32 = FLOOD_NET;
#[unsafe(no_mangle)]
static SOURCE_MASK: u32 = FLOOD_HOST_MASK;

/// The traffic generator: the frame is TCP or UDP in IPv4 (no options);
/// each run gives it a random source (SOURCE_NET, SOURCE_MASK), fixes the checksums
/// incrementally and sends it out (XDP_TX): a SYN frame makes a SYN flood,
/// a new connection every frame; a UDP frame, datagrams from many clients.
#[xdp]
pub fn xdp_flood_gen(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    // The TCP checksum is the furthest field written (UDP's is before it).
    if start + ETH_HLEN + IPV4_HLEN + TCP_CHECK_OFF + 2 > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    let ip = start + ETH_HLEN;
    // SAFETY: every access is inside the bounds checked above.
    unsafe {
        let proto = *((ip + IP_PROTO_OFF) as *const u8);
        let saddr = (ip + IP_SADDR_OFF) as *mut u32;
        let ip_check = (ip + IP_CHECK_OFF) as *mut u16;
        let old = saddr.read_unaligned();
        // SAFETY: plain reads of the loader's constants.
        let (net, mask) = (
            core::ptr::read_volatile(&SOURCE_NET),
            core::ptr::read_volatile(&SOURCE_MASK),
        );
        let new = (net | (bpf_get_prandom_u32() & mask)).to_be();
        saddr.write_unaligned(new);
        ip_check.write_unaligned(csum::replace4(ip_check.read_unaligned(), old, new));
        // The L4 checksum covers the source address (pseudo-header).
        if proto == IPPROTO_TCP {
            let check = (ip + IPV4_HLEN + TCP_CHECK_OFF) as *mut u16;
            check.write_unaligned(csum::replace4(check.read_unaligned(), old, new));
        } else if proto == IPPROTO_UDP {
            let check = (ip + IPV4_HLEN + UDP_CHECK_OFF) as *mut u16;
            let stored = check.read_unaligned();
            if stored != 0 {
                let fixed = csum::replace4(stored, old, new);
                check.write_unaligned(if fixed == 0 { UDP_CHECK_ZERO } else { fixed });
            }
        } else {
            return xdp_action::XDP_ABORTED;
        }
    }
    xdp_action::XDP_TX
}
