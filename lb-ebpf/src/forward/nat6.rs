//! NAT66 (LVS-NAT over IPv6): nat.rs's story with IPv6 addresses. The
//! client's packet gets the real server's address and port as
//! destination; the reply, which comes back through the balancer, gets
//! the VIP and virtual port as source. IPv6 has no header checksum: only
//! the TCP/UDP (or ICMPv6) checksum, whose pseudo-header holds the
//! addresses, is updated, incrementally.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::{FlowKey6, Forward6Flow, Ipv6Octets, LbGlobals, NatReverse6, RealServer, counters};
use network_types::eth::EthHdr;

use super::nat::{End, rewrite_l4, send, to_client};
use crate::{
    csum,
    forward::nexthop,
    header::{Abort, header, header_mut},
    kernel::BPF_ANY,
    maps::{NAT_REVERSE6, REAL_ADDRS6, REAL_STATS, SERVICE_STATS, account_out, count},
    parse::{Icmp6Error, Ipv6Header, L4Packet6},
};

/// Offset of the destination port in a TCP or UDP header.
const DPORT_OFFSET: usize = 2;

/// Rewrites one end's address and port, fixing the L4 checksum.
#[inline(always)]
fn rewrite(
    ctx: &XdpContext,
    pkt: &L4Packet6,
    end: End,
    addr: &Ipv6Octets,
    port: u16,
) -> Result<(), Abort> {
    let ip: &mut Ipv6Header = header_mut(ctx, pkt.l3_off)?;
    let field = if end == End::Source {
        &mut ip.src
    } else {
        &mut ip.dst
    };
    let old_addr = *field;
    *field = *addr;
    rewrite_l4(ctx, (pkt.l4_off, pkt.flow.proto), end, port, |check| {
        csum::replace_addr6(check, &old_addr, addr)
    })
}

/// Client -> VIP:vport becomes client -> real:port (lb6 chose the server:
/// `decided`); a new flow's reply path is remembered in nat_reverse6.
#[inline(always)]
pub fn forward(
    ctx: &XdpContext,
    pkt: &L4Packet6,
    real: &RealServer,
    decided: &Forward6Flow,
    globals: &LbGlobals,
) -> Result<u32, Abort> {
    let dst = REAL_ADDRS6
        .get(decided.real_id)
        .ok_or(Abort(counters::ABORT_MAP))?;
    let payload_len = header::<Ipv6Header>(ctx, pkt.l3_off)?.payload_len;
    let tot_len = Ipv6Header::LEN as u16 + u16::from_be_bytes(payload_len);
    let Some(hop) = nexthop::lookup6(ctx, globals, (&pkt.flow.src, dst), real, tot_len) else {
        count(counters::DROP_NO_REAL_MAC);
        return Ok(xdp_action::XDP_DROP);
    };
    // A real server of an all-ports service has port 0: keep the client's.
    let rport = if real.port == 0 {
        pkt.flow.dport
    } else {
        real.port
    };
    if decided.new_flow != 0 {
        let reply = FlowKey6 {
            src: *dst,
            dst: pkt.flow.src,
            sport: rport,
            dport: pkt.flow.sport,
            proto: pkt.flow.proto,
            _pad: [0; 3],
        };
        let back = NatReverse6 {
            vip: pkt.flow.dst,
            vport: pkt.flow.dport,
            _pad: 0,
            client_mac: header::<EthHdr>(ctx, 0)?.src_addr,
            _pad2: [0; 2],
            client_ifindex: nexthop::ingress(ctx, globals),
            real_id: decided.real_id,
            service_id: decided.service_id,
        };
        let _ = NAT_REVERSE6.insert(&reply, &back, BPF_ANY);
    }
    rewrite(ctx, pkt, End::Destination, dst, rport)?;
    send(ctx, hop.dst_mac, hop.src_mac, hop.ifindex, globals)
}

/// A real server's reply: real:port -> client becomes VIP:vport -> client.
/// None when the packet is no NAT66 reply.
#[inline(always)]
pub fn reply(ctx: &XdpContext, pkt: &L4Packet6, globals: &LbGlobals) -> Result<Option<u32>, Abort> {
    // SAFETY: entries are replaced whole, never written in place.
    let Some(back) = (unsafe { NAT_REVERSE6.get(&pkt.flow) }) else {
        return Ok(None);
    };
    let back = *back;
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    account_out(&SERVICE_STATS, back.service_id, bytes);
    account_out(&REAL_STATS, back.real_id, bytes);
    rewrite(ctx, pkt, End::Source, &back.vip, back.vport)?;
    count(counters::NAT_REPLY);
    to_client(ctx, (back.client_mac, back.client_ifindex), globals).map(Some)
}

/// An ICMPv6 error about a NAT66 flow (a Packet Too Big from a real
/// server or a router near it): the quoted client -> real:port becomes
/// client -> VIP:vport, and an error the real server sent itself comes
/// from the VIP (IPVS's ip_vs_nat_icmp_v6). None when it is about no NAT
/// flow.
#[inline(always)]
pub fn icmp_reply(
    ctx: &XdpContext,
    err: &Icmp6Error,
    globals: &LbGlobals,
) -> Result<Option<u32>, Abort> {
    // The reply direction of the quoted packet is the nat_reverse6 key.
    let key = FlowKey6 {
        src: err.inner.dst,
        dst: err.inner.src,
        sport: err.inner.dport,
        dport: err.inner.sport,
        proto: err.inner.proto,
        _pad: [0; 3],
    };
    // SAFETY: entries are replaced whole, never written in place.
    let Some(back) = (unsafe { NAT_REVERSE6.get(&key) }) else {
        return Ok(None);
    };
    let back = *back;

    header_mut::<Ipv6Header>(ctx, err.inner_off)?.dst = back.vip;
    *header_mut::<[u8; 2]>(ctx, err.inner_off + Ipv6Header::LEN + DPORT_OFFSET)? =
        back.vport.to_ne_bytes();
    let outer: &mut Ipv6Header = header_mut(ctx, err.l3_off)?;
    let from_real = outer.src == err.inner.dst;
    if from_real {
        outer.src = back.vip;
    }

    // The ICMPv6 checksum covers the quoted bytes just changed and, in
    // its pseudo-header, the outer source.
    let icmp_check: &mut [u8; 2] = header_mut(ctx, err.icmp_off + 2)?;
    let mut check = u16::from_ne_bytes(*icmp_check);
    check = csum::replace_addr6(check, &err.inner.dst, &back.vip);
    check = csum::replace2(check, err.inner.dport, back.vport);
    if from_real {
        check = csum::replace_addr6(check, &err.inner.dst, &back.vip);
    }
    *icmp_check = check.to_ne_bytes();
    count(counters::NAT_ICMP);
    to_client(ctx, (back.client_mac, back.client_ifindex), globals).map(Some)
}
