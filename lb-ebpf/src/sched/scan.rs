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

/// Indexes one bpf_loop turn visits. Each turn is a call of the callback
/// subprogram, which cost as much as the visit itself (a profile of lc over
/// 256 backends spent half its time in the loop and the call): two visits
/// per turn halve that. Four or eight exceed the verifier's budget (the
/// visitor's best-so-far differs on every path, so no state is pruned).
const VISITS_PER_TURN: u32 = 2;

/// What the callback needs: the visitor and where to stop.
struct Batch<'a, V> {
    v: &'a mut V,
    n: u32,
}

/// Calls `v.visit(i)` for i in 0..n until it returns false.
#[inline(always)]
pub fn scan<V: Visit>(n: u32, v: &mut V) {
    let mut batch = Batch { v, n };
    // SAFETY: the callback only casts the context back to the Batch it is.
    unsafe {
        bpf_loop(
            n.div_ceil(VISITS_PER_TURN),
            callback::<V> as *mut c_void,
            &mut batch as *mut Batch<V> as *mut c_void,
            0,
        );
    }
}

/// # Safety
/// `ctx` must be the `Batch<V>` that `scan` handed to bpf_loop.
unsafe extern "C" fn callback<V: Visit>(turn: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: ctx is the Batch `scan` passed, alive for the whole loop.
    let batch = unsafe { &mut *(ctx as *mut Batch<V>) };
    let first = turn as u32 * VISITS_PER_TURN;
    for offset in 0..VISITS_PER_TURN {
        // black_box: the visit bounds-checks a plain scalar (left alone,
        // the compiler turns `first` into a pointer offset the verifier
        // cannot bound).
        let index = core::hint::black_box(first + offset);
        if index >= batch.n || !batch.v.visit(index) {
            return 1;
        }
    }
    0
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
