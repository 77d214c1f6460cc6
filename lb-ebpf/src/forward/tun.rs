//! IP-in-IP tunnelling (LVS-TUN, ipvsadm -i): an outer IPv4 header (protocol
//! 4) from the balancer to the real server is pushed in front of the
//! client's packet; the real server decapsulates it and answers the client
//! directly.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_xdp_adjust_head, programs::XdpContext};
use lb_common::{IPPROTO_IPIP, LbGlobals, RealServer, counters};
use network_types::{eth::EthHdr, ip::Ipv4Hdr, vlan::VlanHdr};

use crate::{
    csum,
    forward::nexthop,
    header::{Abort, header, header_mut},
    icmp,
    maps::count,
    parse::{IPV4_DF, IPV4_VERSION_IHL, L4Packet, VLAN_TAGGED_L3_OFF},
};

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
    // Keep the L2 headers that are there now, to write them again in front.
    let ether_type = header::<EthHdr>(ctx, 0)?.ether_type;
    let vlan = if pkt.l3_off == VLAN_TAGGED_L3_OFF {
        Some(*header::<VlanHdr>(ctx, EthHdr::LEN)?)
    } else {
        None
    };

    // SAFETY: the helper only moves the packet's start; headers are taken anew.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(Ipv4Hdr::LEN as i32)) } != 0 {
        return Err(Abort(counters::ABORT_ADJUST));
    }
    let new_eth: &mut EthHdr = header_mut(ctx, 0)?;
    new_eth.dst_addr = hop.dst_mac;
    new_eth.src_addr = hop.src_mac;
    new_eth.ether_type = ether_type;
    let l3_off = match vlan {
        Some(v) => {
            *header_mut::<VlanHdr>(ctx, EthHdr::LEN)? = v;
            VLAN_TAGGED_L3_OFF
        }
        None => EthHdr::LEN,
    };
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
