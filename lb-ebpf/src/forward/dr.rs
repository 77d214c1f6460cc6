//! Direct routing (LVS-DR, ipvsadm -g): the frame goes to the real server's
//! MAC unchanged above layer 2; the real server has the VIP on lo and answers
//! the client directly.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::{LbGlobals, RealServer};
use network_types::eth::EthHdr;

use crate::parse::ptr_at;

/// Destination MAC := the real server's, source MAC := the interface's; XDP_TX.
#[inline(always)]
pub fn forward(ctx: &XdpContext, real: &RealServer, globals: &LbGlobals) -> Result<u32, ()> {
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: ptr_at checked the bounds.
    unsafe {
        (*eth).dst_addr = real.mac;
        (*eth).src_addr = globals.iface_mac;
    }
    Ok(xdp_action::XDP_TX)
}
