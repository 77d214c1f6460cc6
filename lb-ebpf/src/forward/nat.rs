//! Masquerading (LVS-NAT, ipvsadm -m): the client's packet gets the real
//! server's address and port as destination; the real server answers
//! through the balancer (its gateway), and the reply gets the VIP and
//! virtual port back as source. Checksums are updated incrementally.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::{FlowKey, IPPROTO_TCP, Ipv4Octets, LbGlobals, NatReverse, RealServer, counters};
use network_types::{eth::EthHdr, ip::Ipv4Hdr, tcp::TcpHdr, udp::UdpHdr};

use crate::{
    csum,
    forward::nexthop,
    header::{Abort, header, header_mut},
    kernel::BPF_ANY,
    maps::{NAT_REVERSE, REAL_STATS, SERVICE_STATS, account_out, count},
    parse::{IcmpError, L4Packet},
};

/// UDP: a zero checksum means "none" and stays zero; a computed zero is sent
/// as all ones.
const UDP_NO_CHECKSUM: [u8; 2] = [0; 2];

/// Which end of the packet is rewritten.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    Source,
    Destination,
}

/// Rewrites one end's address and port, fixing the IPv4 and L4 checksums.
#[inline(always)]
fn rewrite(
    ctx: &XdpContext,
    pkt: &L4Packet,
    end: End,
    addr: Ipv4Octets,
    port: u16,
) -> Result<(), Abort> {
    let ip: &mut Ipv4Hdr = header_mut(ctx, pkt.l3_off)?;
    let field = if end == End::Source {
        &mut ip.src_addr
    } else {
        &mut ip.dst_addr
    };
    let old_addr = *field;
    *field = addr;
    ip.check = csum::replace_addr(u16::from_ne_bytes(ip.check), old_addr, addr).to_ne_bytes();
    rewrite_l4(ctx, (pkt.l4_off, pkt.flow.proto), end, port, |check| {
        csum::replace_addr(check, old_addr, addr)
    })
}

/// Rewrites one end's port of the TCP/UDP header at `l4_off` and updates
/// its checksum for the port and, through `addr_changed`, for the address
/// the pseudo-header covers (either family's).
#[inline(always)]
pub(super) fn rewrite_l4(
    ctx: &XdpContext,
    (l4_off, proto): (usize, u8),
    end: End,
    port: u16,
    addr_changed: impl Fn(u16) -> u16,
) -> Result<(), Abort> {
    if proto == IPPROTO_TCP {
        let tcp: &mut TcpHdr = header_mut(ctx, l4_off)?;
        let field = if end == End::Source {
            &mut tcp.source
        } else {
            &mut tcp.dest
        };
        let old_port = u16::from_ne_bytes(*field);
        *field = port.to_ne_bytes();
        let check = addr_changed(u16::from_ne_bytes(tcp.check));
        tcp.check = csum::replace2(check, old_port, port).to_ne_bytes();
    } else {
        let udp: &mut UdpHdr = header_mut(ctx, l4_off)?;
        let field = if end == End::Source {
            &mut udp.src
        } else {
            &mut udp.dst
        };
        let old_port = u16::from_ne_bytes(*field);
        *field = port.to_ne_bytes();
        if udp.check != UDP_NO_CHECKSUM {
            let check = addr_changed(u16::from_ne_bytes(udp.check));
            let check = csum::replace2(check, old_port, port);
            udp.check = if check == 0 {
                [0xff; 2]
            } else {
                check.to_ne_bytes()
            };
        }
    }
    Ok(())
}

/// Sets the frame's MACs and sends it out of `ifindex`.
#[inline(always)]
pub(super) fn send(
    ctx: &XdpContext,
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    ifindex: u32,
    globals: &LbGlobals,
) -> Result<u32, Abort> {
    let eth: &mut EthHdr = header_mut(ctx, 0)?;
    eth.dst_addr = dst_mac;
    eth.src_addr = src_mac;
    Ok(nexthop::transmit(ctx, ifindex, globals))
}

/// Sends a rewritten reply back out where the client's packets came in
/// (two-armed: the outside interface), to the client's next hop.
/// (`client`: the client's MAC and the interface its packets came in on.)
#[inline(always)]
pub(super) fn to_client(
    ctx: &XdpContext,
    (client_mac, client_ifindex): ([u8; 6], u32),
    globals: &LbGlobals,
) -> Result<u32, Abort> {
    let src_mac = if client_ifindex == globals.inside_ifindex {
        globals.inside_mac
    } else {
        globals.iface_mac
    };
    send(ctx, client_mac, src_mac, client_ifindex, globals)
}

/// Client -> VIP:vport becomes client -> real:port; the reply path is
/// remembered in nat_reverse.
#[inline(always)]
pub fn forward(
    ctx: &XdpContext,
    pkt: &L4Packet,
    real: &RealServer,
    globals: &LbGlobals,
    new_flow: bool,
    (service_id, real_id): (u32, u32),
) -> Result<u32, Abort> {
    let Some(hop) = nexthop::lookup(ctx, globals, pkt.flow.src, real, pkt.ip_len) else {
        count(counters::DROP_NO_REAL_MAC);
        return Ok(xdp_action::XDP_DROP);
    };
    // A real server of an all-ports service has port 0: keep the client's.
    let rport = if real.port == 0 {
        pkt.flow.dport
    } else {
        real.port
    };
    if new_flow {
        let client_mac = header::<EthHdr>(ctx, 0)?.src_addr;
        let reply = FlowKey {
            src: real.ip,
            dst: pkt.flow.src,
            sport: rport,
            dport: pkt.flow.sport,
            proto: pkt.flow.proto,
            _pad: [0; 3],
        };
        let back = NatReverse {
            vip: pkt.flow.dst,
            vport: pkt.flow.dport,
            _pad: 0,
            client_mac,
            _pad2: [0; 2],
            client_ifindex: nexthop::ingress(ctx, globals),
            real_id,
            service_id,
            _pad3: 0,
        };
        let _ = NAT_REVERSE.insert(reply, back, BPF_ANY);
    }
    rewrite(ctx, pkt, End::Destination, real.ip, rport)?;
    send(ctx, hop.dst_mac, hop.src_mac, hop.ifindex, globals)
}

/// A real server's reply: real:port -> client becomes VIP:vport -> client.
/// None when the packet is no NAT reply (it is then passed).
#[inline(always)]
pub fn reply(ctx: &XdpContext, pkt: &L4Packet, globals: &LbGlobals) -> Result<Option<u32>, Abort> {
    // SAFETY: entries are replaced whole, never written in place.
    let Some(back) = (unsafe { NAT_REVERSE.get(&pkt.flow) }) else {
        return Ok(None);
    };
    let back = *back;
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    account_out(&SERVICE_STATS, back.service_id, bytes);
    account_out(&REAL_STATS, back.real_id, bytes);
    rewrite(ctx, pkt, End::Source, back.vip, back.vport)?;
    count(counters::NAT_REPLY);
    send(
        ctx,
        back.client_mac,
        globals.iface_mac,
        globals.ifindex,
        globals,
    )
    .map(Some)
}

/// An ICMP error a real server (or a router near it) sends about a NAT'ed
/// flow: the quoted packet is client -> real:port; the client must see it
/// about client -> VIP:vport, from the VIP (IPVS's ip_vs_nat_icmp). None
/// when it is about no NAT flow.
#[inline(always)]
pub fn icmp_reply(
    ctx: &XdpContext,
    err: &IcmpError,
    globals: &LbGlobals,
) -> Result<Option<u32>, Abort> {
    // The reply direction of the quoted packet is the nat_reverse key.
    let key = FlowKey {
        src: err.inner.dst,
        dst: err.inner.src,
        sport: err.inner.dport,
        dport: err.inner.sport,
        proto: err.inner.proto,
        _pad: [0; 3],
    };
    // SAFETY: entries are replaced whole, never written in place.
    let Some(back) = (unsafe { NAT_REVERSE.get(&key) }) else {
        return Ok(None);
    };
    let back = *back;

    // The quoted header: destination and port back to VIP:vport.
    let inner: &mut Ipv4Hdr = header_mut(ctx, err.inner_off)?;
    let old_inner_check = u16::from_ne_bytes(inner.check);
    let new_inner_check = csum::replace_addr(old_inner_check, err.inner.dst, back.vip);
    inner.dst_addr = back.vip;
    inner.check = new_inner_check.to_ne_bytes();
    *header_mut::<[u8; 2]>(ctx, err.inner_off + Ipv4Hdr::LEN + 2)? = back.vport.to_ne_bytes();

    // The ICMP checksum covers the quoted bytes just changed.
    let icmp_check: &mut [u8; 2] = header_mut(ctx, err.icmp_off + 2)?;
    let mut check = u16::from_ne_bytes(*icmp_check);
    check = csum::replace_addr(check, err.inner.dst, back.vip);
    check = csum::replace2(check, old_inner_check, new_inner_check);
    check = csum::replace2(check, err.inner.dport, back.vport);
    *icmp_check = check.to_ne_bytes();

    // From the real server, the error now comes from the VIP.
    let outer: &mut Ipv4Hdr = header_mut(ctx, err.l3_off)?;
    let outer_src = outer.src_addr;
    if outer_src == err.inner.dst {
        outer.check =
            csum::replace_addr(u16::from_ne_bytes(outer.check), outer_src, back.vip).to_ne_bytes();
        outer.src_addr = back.vip;
    }
    count(counters::NAT_ICMP);
    to_client(ctx, (back.client_mac, back.client_ifindex), globals).map(Some)
}
