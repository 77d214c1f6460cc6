//! The no-op programs xdp-bench runs, as the limit our balancer is measured
//! against in the same run: drop, pass, and tx with a MAC swap.
//! `xdp_pass` also serves the veth peers of a test topology: a veth delivers
//! XDP_TX frames only if its peer runs an XDP program in native mode.
#![no_std]
#![no_main]

#[path = "runtime.rs"]
mod runtime;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

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
