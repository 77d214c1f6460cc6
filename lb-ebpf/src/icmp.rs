//! ICMP the balancer sends itself (Katran's handle_icmp.h): "fragmentation
//! needed" when a TUN packet with DF set would exceed the MTU once
//! encapsulated, as IPVS does, so the client lowers its path MTU instead of
//! retransmitting into a black hole.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_xdp_adjust_tail, programs::XdpContext};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use lb_common::{IPPROTO_ICMP, counters};

use crate::{
    csum,
    header::{Abort, header, header_mut},
    parse::{ICMP_HEADER_LEN, IPV4_VERSION_IHL, L4Packet},
};

const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
/// RFC 792: the original IP header plus the first 8 bytes of its payload.
const QUOTED_LEN: usize = Ipv4Hdr::LEN + 8;
const TTL: u8 = 64;

/// Turns the frame into an ICMP fragmentation-needed error back to its
/// sender, from the address it was sent to, announcing `mtu`; XDP_TX.
#[inline(always)]
pub fn frag_needed(ctx: &XdpContext, pkt: &L4Packet, mtu: u16) -> Result<u32, Abort> {
    // What the error quotes, saved before the frame is cut.
    let quoted: [u8; QUOTED_LEN] = *header(ctx, pkt.l3_off)?;
    let new_len = pkt.l3_off + Ipv4Hdr::LEN + ICMP_HEADER_LEN + QUOTED_LEN;
    let cur_len = ctx.data_end() - ctx.data();
    // SAFETY: the helper only moves the frame's end; headers are taken anew.
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, new_len as i32 - cur_len as i32) } != 0 {
        return Err(Abort(counters::ABORT_ADJUST));
    }

    let eth: &mut EthHdr = header_mut(ctx, 0)?;
    core::mem::swap(&mut eth.src_addr, &mut eth.dst_addr);
    let ip: &mut Ipv4Hdr = header_mut(ctx, pkt.l3_off)?;
    let (client, vip) = (ip.src_addr, ip.dst_addr);
    ip.vihl = IPV4_VERSION_IHL;
    ip.tos = 0;
    ip.tot_len = ((Ipv4Hdr::LEN + ICMP_HEADER_LEN + QUOTED_LEN) as u16).to_be_bytes();
    ip.id = [0; 2];
    ip.frags = [0; 2];
    ip.ttl = TTL;
    ip.proto = IPPROTO_ICMP;
    ip.check = [0; 2];
    ip.src_addr = vip;
    ip.dst_addr = client;
    ip.check = csum::ipv4_header(ip).to_be_bytes();

    let icmp: &mut [u8; ICMP_HEADER_LEN + QUOTED_LEN] = header_mut(ctx, pkt.l3_off + Ipv4Hdr::LEN)?;
    icmp[0] = ICMP_DEST_UNREACH;
    icmp[1] = ICMP_FRAG_NEEDED;
    icmp[2] = 0;
    icmp[3] = 0;
    icmp[4] = 0;
    icmp[5] = 0;
    icmp[6..8].copy_from_slice(&mtu.to_be_bytes());
    icmp[ICMP_HEADER_LEN..].copy_from_slice(&quoted);
    let check = csum::of(icmp);
    icmp[2..4].copy_from_slice(&check.to_be_bytes());
    Ok(xdp_action::XDP_TX)
}
