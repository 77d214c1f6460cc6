//! IP-in-IP tunnelling (LVS-TUN, ipvsadm -i): an outer header from the
//! balancer to the real server is pushed in front of the client's packet,
//! IPv4 (protocol 4) for an IPv4 service, IPv6 (next header 41, RFC 2473)
//! for an IPv6 one; the real server decapsulates it and answers the client
//! directly.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_xdp_adjust_head, programs::XdpContext};
use lb_common::{IPPROTO_IPIP, IPPROTO_IPV6, LbGlobals, RealServer, counters};
use network_types::{eth::EthHdr, ip::Ipv4Hdr, vlan::VlanHdr};

use crate::{
    csum,
    forward::nexthop::{self, NextHop},
    header::{Abort, header, header_mut},
    icmp,
    maps::{LB_GLOBALS6, REAL_ADDRS6, count},
    parse::{IPV4_DF, IPV4_VERSION_IHL, Ipv6Header, L4Packet, L4Packet6, VLAN_TAGGED_L3_OFF},
};

/// TTL / hop limit of the outer header.
const OUTER_TTL: u8 = 64;

#[inline(always)]
pub fn forward(
    ctx: &XdpContext,
    pkt: &L4Packet,
    real: &RealServer,
    globals: &LbGlobals,
) -> Result<u32, Abort> {
    let outer_len = pkt.ip_len as usize + Ipv4Hdr::LEN;
    if outer_len > globals.mtu as usize {
        // Never send what the next hop must drop. With DF, tell the client
        // the path MTU inside the tunnel, as IPVS does; without, IPVS would
        // fragment, which XDP cannot: drop and count.
        count(counters::DROP_TUN_TOO_BIG);
        if pkt.dont_fragment {
            count(counters::ICMP_FRAG_NEEDED);
            return icmp::frag_needed(ctx, pkt, globals.mtu - Ipv4Hdr::LEN as u16);
        }
        return Ok(xdp_action::XDP_DROP);
    }
    let Some(hop) = nexthop::lookup(ctx, globals, globals.tun_src, real, outer_len as u16) else {
        count(counters::DROP_NO_REAL_MAC);
        return Ok(xdp_action::XDP_DROP);
    };
    let l3_off = push_outer_header(ctx, pkt.l3_off, Ipv4Hdr::LEN, &hop)?;
    let outer: &mut Ipv4Hdr = header_mut(ctx, l3_off)?;
    outer.vihl = IPV4_VERSION_IHL;
    outer.tos = pkt.tos;
    outer.tot_len = (outer_len as u16).to_be_bytes();
    outer.id = [0; 2];
    outer.frags = if pkt.dont_fragment {
        IPV4_DF.to_be_bytes()
    } else {
        [0; 2]
    };
    outer.ttl = OUTER_TTL;
    outer.proto = IPPROTO_IPIP;
    outer.check = [0; 2];
    outer.src_addr = globals.tun_src;
    outer.dst_addr = real.ip;
    outer.check = csum::ipv4_header(outer).to_be_bytes();

    Ok(nexthop::transmit(ctx, hop.ifindex, globals))
}

/// IPv6-in-IPv6 to the IPv6 real server `real_id`. Too big once
/// encapsulated: ICMPv6 Packet Too Big to the client (IPv6 routers never
/// fragment, so there is no DF to look at), as IPVS does.
#[inline(always)]
pub fn forward6(
    ctx: &XdpContext,
    pkt: &L4Packet6,
    real_id: u32,
    real: &RealServer,
    globals: &LbGlobals,
) -> Result<u32, Abort> {
    let inner: &Ipv6Header = header(ctx, pkt.l3_off)?;
    let (vtc_flow, payload_len) = (inner.vtc_flow, inner.payload_len);
    let inner_len = Ipv6Header::LEN + u16::from_be_bytes(payload_len) as usize;
    let outer_len = inner_len + Ipv6Header::LEN;
    if outer_len > globals.mtu as usize {
        count(counters::DROP_TUN_TOO_BIG);
        count(counters::ICMP6_PACKET_TOO_BIG);
        return icmp::packet_too_big6(ctx, pkt.l3_off, globals.mtu - Ipv6Header::LEN as u16);
    }
    let dst = REAL_ADDRS6.get(real_id).ok_or(Abort(counters::ABORT_MAP))?;
    let src = &LB_GLOBALS6
        .get(0)
        .ok_or(Abort(counters::ABORT_MAP))?
        .tun_src;
    let Some(hop) = nexthop::lookup6(ctx, globals, (src, dst), real, outer_len as u16) else {
        count(counters::DROP_NO_REAL_MAC);
        return Ok(xdp_action::XDP_DROP);
    };
    let l3_off = push_outer_header(ctx, pkt.l3_off, Ipv6Header::LEN, &hop)?;
    let outer: &mut Ipv6Header = header_mut(ctx, l3_off)?;
    // Traffic class and flow label as the client set them (IPVS copies
    // them too): the flow label keeps its entropy for ECMP on the way.
    outer.vtc_flow = vtc_flow;
    outer.payload_len = (inner_len as u16).to_be_bytes();
    outer.next_header = IPPROTO_IPV6;
    outer.hop_limit = OUTER_TTL;
    outer.src = *src;
    outer.dst = *dst;

    Ok(nexthop::transmit(ctx, hop.ifindex, globals))
}

/// Makes room for an outer L3 header of `len` bytes between the L2
/// headers (the Ethernet header, rewritten for `hop`, and the 802.1Q tag
/// that is there now) and the packet at `l3_off`. Returns where the outer
/// header goes (the same offset).
#[inline(always)]
fn push_outer_header(
    ctx: &XdpContext,
    l3_off: usize,
    len: usize,
    hop: &NextHop,
) -> Result<usize, Abort> {
    // Keep the L2 headers that are there now, to write them again in front.
    let ether_type = header::<EthHdr>(ctx, 0)?.ether_type;
    let vlan = if l3_off == VLAN_TAGGED_L3_OFF {
        Some(*header::<VlanHdr>(ctx, EthHdr::LEN)?)
    } else {
        None
    };
    // SAFETY: the helper only moves the packet's start; headers are taken anew.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(len as i32)) } != 0 {
        return Err(Abort(counters::ABORT_ADJUST));
    }
    let new_eth: &mut EthHdr = header_mut(ctx, 0)?;
    new_eth.dst_addr = hop.dst_mac;
    new_eth.src_addr = hop.src_mac;
    new_eth.ether_type = ether_type;
    Ok(match vlan {
        Some(v) => {
            *header_mut::<VlanHdr>(ctx, EthHdr::LEN)? = v;
            VLAN_TAGGED_L3_OFF
        }
        None => EthHdr::LEN,
    })
}
