//! The one way to reach packet bytes: bounds-checked header access.
//!
//! Every header the programs read or write is obtained here, so the one
//! safety argument below covers them all and the callers need no `unsafe`.

use aya_ebpf::programs::XdpContext;
use core::mem::size_of;
use lb_common::counters;

/// The frame is shorter than the header asked for.
#[derive(Clone, Copy)]
pub struct OutOfBounds;

/// Why the program gives up on a frame: XDP_ABORTED, after bumping this
/// counter (one of lb_common::counters' ABORT_*). Every `?` of the data
/// plane carries one, so no abort goes uncounted.
#[derive(Clone, Copy)]
pub struct Abort(pub u32);

impl From<OutOfBounds> for Abort {
    fn from(_: OutOfBounds) -> Self {
        Abort(counters::ABORT_BOUNDS)
    }
}

/// Types that are headers: plain bytes, any bit pattern valid, alignment
/// at most 2 (every header offset used is even, frames start aligned).
///
/// # Safety
/// Implement only for `#[repr(C)]` types of integers and byte arrays.
pub unsafe trait Header {}

// SAFETY: all are #[repr(C)] structs of integers and byte arrays.
unsafe impl Header for network_types::eth::EthHdr {}
// SAFETY: as above.
unsafe impl Header for network_types::vlan::VlanHdr {}
// SAFETY: as above.
unsafe impl Header for network_types::ip::Ipv4Hdr {}
// SAFETY: as above.
unsafe impl Header for network_types::tcp::TcpHdr {}
// SAFETY: as above.
unsafe impl Header for network_types::udp::UdpHdr {}
// SAFETY: bytes.
unsafe impl Header for u8 {}
// SAFETY: bytes.
unsafe impl<const N: usize> Header for [u8; N] {}

/// A pointer to a `T` at `offset` bytes into the frame, or OutOfBounds when
/// the frame is too short. The only place where packet pointers are
/// computed: the comparison is what the verifier needs to see.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, OutOfBounds> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return Err(OutOfBounds);
    }
    Ok((start + offset) as *mut T)
}

/// The header `T` at `offset`, to read.
#[inline(always)]
pub fn header<T: Header>(ctx: &XdpContext, offset: usize) -> Result<&T, OutOfBounds> {
    let ptr = ptr_at::<T>(ctx, offset)?;
    // SAFETY: see `header_mut`; a shared reference needs no more.
    Ok(unsafe { &*ptr })
}

/// The header `T` at `offset`, to rewrite in place.
#[inline(always)]
#[allow(clippy::mut_from_ref)] // the frame is not owned by ctx; see below
pub fn header_mut<T: Header>(ctx: &XdpContext, offset: usize) -> Result<&mut T, OutOfBounds> {
    let ptr = ptr_at::<T>(ctx, offset)?;
    // SAFETY: ptr_at proved the bytes lie inside the frame, which this
    // program owns for its run; `T: Header` makes any byte pattern a valid
    // T and its alignment holds at the even offsets headers sit at. Callers
    // keep at most one reference per header and take them anew after
    // bpf_xdp_adjust_head/tail (which move the frame), never reusing one
    // from before.
    Ok(unsafe { &mut *ptr })
}
