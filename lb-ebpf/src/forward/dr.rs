//! Direct routing (LVS-DR, ipvsadm -g): the frame goes to the real server's
//! MAC unchanged above layer 2; the real server has the VIP on lo and answers
//! the client directly.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::{LbGlobals, REAL_FLAG_MAC_VALID, RealServer, counters};
use network_types::eth::EthHdr;

use crate::{
    header::{Abort, header_mut},
    maps::count,
};

/// Destination MAC := the real server's, source MAC := the interface's;
/// XDP_TX. Dropped (counted) while the server's MAC is not resolved yet.
#[inline(always)]
pub fn forward(ctx: &XdpContext, real: &RealServer, globals: &LbGlobals) -> Result<u32, Abort> {
    if real.flags & REAL_FLAG_MAC_VALID == 0 {
        count(counters::DROP_NO_REAL_MAC);
        return Ok(xdp_action::XDP_DROP);
    }
    let eth: &mut EthHdr = header_mut(ctx, 0)?;
    eth.dst_addr = real.mac;
    eth.src_addr = globals.iface_mac;
    Ok(xdp_action::XDP_TX)
}
