//! ICMP the balancer sends itself (Katran's handle_icmp.h): "fragmentation
//! needed" when a TUN packet with DF set would exceed the MTU once
//! encapsulated, and ICMPv6 "packet too big" for an IPv6 one, as IPVS
//! does, so the client lowers its path MTU instead of retransmitting into
//! a black hole.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_xdp_adjust_tail, programs::XdpContext};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use lb_common::{IPPROTO_ICMP, IPPROTO_ICMPV6, counters};

use crate::{
    csum,
    header::{Abort, header, header_mut},
    parse::{ICMP_HEADER_LEN, IPV4_VERSION_IHL, IPV6_VERSION_WORD, Ipv6Header, L4Packet},
};

const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
/// RFC 792: the original IP header plus the first 8 bytes of its payload.
const QUOTED_LEN: usize = Ipv4Hdr::LEN + 8;
const TTL: u8 = 64;
const ICMP6_PACKET_TOO_BIG: u8 = 2;
/// The invoking packet's IPv6 header and the first 8 bytes behind it: what
/// the receiving stack needs to find the connection (Linux's icmpv6_notify
/// reads no more). RFC 4443 allows up to 1280 bytes; a fixed quote keeps
/// the checksum a fixed sum.
const QUOTED6_LEN: usize = Ipv6Header::LEN + 8;
const ICMP6_LEN: usize = ICMP_HEADER_LEN + QUOTED6_LEN;

/// Turns the frame into an ICMP fragmentation-needed error back to its
/// sender, from the address it was sent to, announcing `mtu`; XDP_TX.
#[inline(always)]
pub fn frag_needed(ctx: &XdpContext, pkt: &L4Packet, mtu: u16) -> Result<u32, Abort> {
    // What the error quotes, saved before the frame is cut.
    let quoted: [u8; QUOTED_LEN] = *header(ctx, pkt.l3_off)?;
    reply_frame(
        ctx,
        pkt.l3_off + Ipv4Hdr::LEN + ICMP_HEADER_LEN + QUOTED_LEN,
    )?;
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

/// Turns the IPv6 frame whose header is at `l3_off` into an ICMPv6 Packet
/// Too Big back to its sender, from the address it was sent to,
/// announcing `mtu`; XDP_TX.
#[inline(always)]
pub fn packet_too_big6(ctx: &XdpContext, l3_off: usize, mtu: u16) -> Result<u32, Abort> {
    let quoted: [u8; QUOTED6_LEN] = *header(ctx, l3_off)?;
    reply_frame(ctx, l3_off + Ipv6Header::LEN + ICMP6_LEN)?;

    let ip: &mut Ipv6Header = header_mut(ctx, l3_off)?;
    let (client, vip) = (ip.src, ip.dst);
    ip.vtc_flow = IPV6_VERSION_WORD;
    ip.payload_len = (ICMP6_LEN as u16).to_be_bytes();
    ip.next_header = IPPROTO_ICMPV6;
    ip.hop_limit = TTL;
    ip.src = vip;
    ip.dst = client;

    let icmp: &mut [u8; ICMP6_LEN] = header_mut(ctx, l3_off + Ipv6Header::LEN)?;
    icmp[0] = ICMP6_PACKET_TOO_BIG;
    icmp[1] = 0;
    icmp[2] = 0;
    icmp[3] = 0;
    icmp[4..8].copy_from_slice(&u32::from(mtu).to_be_bytes());
    icmp[ICMP_HEADER_LEN..].copy_from_slice(&quoted);
    let pseudo = csum::ipv6_pseudo_header(&vip, &client, ICMP6_LEN as u16, IPPROTO_ICMPV6);
    let check = !csum::fold(pseudo + csum::sum(icmp));
    icmp[2..4].copy_from_slice(&check.to_be_bytes());
    Ok(xdp_action::XDP_TX)
}

/// Cuts the frame to `new_len` bytes and swaps its MACs: the start of an
/// error back to the sender.
#[inline(always)]
fn reply_frame(ctx: &XdpContext, new_len: usize) -> Result<(), Abort> {
    let cur_len = ctx.data_end() - ctx.data();
    // SAFETY: the helper only moves the frame's end; headers are taken anew.
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, new_len as i32 - cur_len as i32) } != 0 {
        return Err(Abort(counters::ABORT_ADJUST));
    }
    let eth: &mut EthHdr = header_mut(ctx, 0)?;
    core::mem::swap(&mut eth.src_addr, &mut eth.dst_addr);
    Ok(())
}
