//! `rs_decap`: on a real server in LVS-TUN mode, turns an IPIP packet whose
//! inner destination is a local VIP back into the inner packet (strips the
//! outer IPv4 header) and passes it to the kernel, as the ipip module would;
//! the same for IPv6-in-IPv6 to a local IPv6 VIP (as ip6_tunnel would).
//! Everything else passes untouched.
#![no_std]
#![no_main]
#![warn(clippy::undocumented_unsafe_blocks)]
// Map keys go by reference: the helper takes a pointer to the key on the
// stack; a by-value key (what the lint asks for) is one more copy.
#![allow(clippy::needless_borrows_for_generic_args)]

use aya_ebpf::{
    bindings::xdp_action,
    btf_maps::{HashMap, PerCpuArray},
    helpers::bpf_xdp_adjust_head,
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use lb_common::{IPPROTO_IPIP, IPPROTO_IPV6, Ipv4Octets, Ipv6Octets, MAX_RS_VIPS, RsDecapCounter};
use lb_ebpf::{
    header::{OutOfBounds, header, header_mut},
    parse::{
        ETH_P_IP, ETH_P_IPV6, IPV4_FRAG_MASK, IPV4_MIN_IHL_WORDS, Ipv6Header, VLAN_TAGGED_L3_OFF,
        parse_l2,
    },
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr, vlan::VlanHdr};

lb_ebpf::license!();

/// VIP -> 1: the VIPs this real server serves.
#[btf_map]
static RS_VIPS: HashMap<Ipv4Octets, u8, { MAX_RS_VIPS as usize }> = HashMap::new();

/// IPv6 VIP -> 1: the IPv6 VIPs this real server serves.
#[btf_map]
static RS_VIPS6: HashMap<Ipv6Octets, u8, { MAX_RS_VIPS as usize }> = HashMap::new();

/// Packets decapsulated / IPIP packets passed because not for a local VIP.
#[btf_map]
static RS_DECAP_COUNTERS: PerCpuArray<u64, { RsDecapCounter::COUNT as usize }> = PerCpuArray::new();

#[inline(always)]
fn count(c: RsDecapCounter) {
    if let Some(v) = RS_DECAP_COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: per-CPU slot.
        unsafe { *v += 1 };
    }
}

#[xdp]
pub fn rs_decap(ctx: XdpContext) -> u32 {
    try_decap(&ctx).unwrap_or(xdp_action::XDP_PASS)
}

#[inline(always)]
fn try_decap(ctx: &XdpContext) -> Result<u32, OutOfBounds> {
    let (ether_type, l3_off) = parse_l2(ctx)?;
    // Whether the inner destination is a local VIP, and the outer header's length.
    let (local, outer_len) = if ether_type == ETH_P_IP {
        let outer: &Ipv4Hdr = header(ctx, l3_off)?;
        if outer.proto != IPPROTO_IPIP
            || outer.ihl() != IPV4_MIN_IHL_WORDS * 4
            || u16::from_be_bytes(outer.frags) & IPV4_FRAG_MASK != 0
        {
            return Ok(xdp_action::XDP_PASS);
        }
        let inner: &Ipv4Hdr = header(ctx, l3_off + Ipv4Hdr::LEN)?;
        let inner_dst = inner.dst_addr;
        // SAFETY: read-only lookup of a plain value.
        (unsafe { RS_VIPS.get(&inner_dst) }.is_some(), Ipv4Hdr::LEN)
    } else if ether_type == ETH_P_IPV6 {
        // Extension headers in front of the inner packet are not walked: such
        // a packet goes to the kernel as it is.
        let outer: &Ipv6Header = header(ctx, l3_off)?;
        if outer.next_header != IPPROTO_IPV6 {
            return Ok(xdp_action::XDP_PASS);
        }
        let inner: &Ipv6Header = header(ctx, l3_off + Ipv6Header::LEN)?;
        let inner_dst = inner.dst;
        // SAFETY: read-only lookup of a plain value.
        (
            unsafe { RS_VIPS6.get(&inner_dst) }.is_some(),
            Ipv6Header::LEN,
        )
    } else {
        return Ok(xdp_action::XDP_PASS);
    };
    if !local {
        count(RsDecapCounter::NotLocalVip);
        return Ok(xdp_action::XDP_PASS);
    }
    // Drop the outer header: move the start forward by its length and write
    // the (unchanged) Ethernet and VLAN headers again in front of the inner one.
    let eth_copy = *header::<EthHdr>(ctx, 0)?;
    let vlan_copy = if l3_off == VLAN_TAGGED_L3_OFF {
        Some(*header::<VlanHdr>(ctx, EthHdr::LEN)?)
    } else {
        None
    };
    // SAFETY: the helper only moves the packet's start; headers are taken anew.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, outer_len as i32) } != 0 {
        return Ok(xdp_action::XDP_PASS);
    }
    *header_mut::<EthHdr>(ctx, 0)? = eth_copy;
    if let Some(v) = vlan_copy {
        *header_mut::<VlanHdr>(ctx, EthHdr::LEN)? = v;
    }
    count(RsDecapCounter::Decapsulated);
    Ok(xdp_action::XDP_PASS)
}
