//! Scans over a backend set through the bpf_loop helper. A plain loop of
//! MAX_BACKENDS_PER_SERVICE iterations whose state changes every round (the
//! best server so far) makes the verifier walk every iteration of every
//! scan and exceed its instruction budget; bpf_loop's callback is verified
//! once. Work stays bounded: at most `n` calls.

use aya_ebpf::{cty::c_void, helpers::generated::bpf_loop};
use lb_common::{Backend, BackendSet};

/// One step of a scan; returns whether to go on.
pub trait Visit {
    fn visit(&mut self, index: u32) -> bool;
}

/// Calls `v.visit(i)` for i in 0..n until it returns false.
#[inline(always)]
pub fn scan<V: Visit>(n: u32, v: &mut V) {
    // SAFETY: the callback only casts the context back to the V it is.
    unsafe {
        bpf_loop(
            n,
            callback::<V> as *mut c_void,
            v as *mut V as *mut c_void,
            0,
        );
    }
}

unsafe extern "C" fn callback<V: Visit>(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: ctx is the &mut V `scan` passed, alive for the whole loop.
    let v = unsafe { &mut *(ctx as *mut V) };
    if v.visit(index as u32) { 0 } else { 1 }
}

/// The backend at `idx` if it is one of the set's used entries (the check
/// every visit starts with).
#[inline(always)]
pub fn backend_at(set: &BackendSet, idx: u32) -> Option<&Backend> {
    if idx >= set.count {
        return None;
    }
    set.backends.get(idx as usize)
}
