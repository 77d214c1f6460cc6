//! Weighted random of two choices (ip_vs_twos.c): two servers drawn at
//! random in proportion to their weights; the one with the lower
//! overhead / weight wins (the first draw on a tie).

use aya_ebpf::helpers::bpf_get_prandom_u32;
use lb_common::{BackendSet, WeightTable};

use super::scan::backend_at;
use crate::maps::conns_of;

/// The total weight and each draw's landing place come from the agent's
/// WeightTable (its running sums, binary-searched) instead of two scans of
/// the set per new connection.
#[inline(always)]
pub fn pick(set: &BackendSet, table: &WeightTable) -> Option<u32> {
    // IPVS draws in [0, total] inclusive (total + 1 values), unsigned as
    // its get_random_u32() % total_weight. (checked_rem: the verifier
    // rejects the panic path of a plain `%`.) No weight at all: no draw
    // lands.
    let span = table.total.wrapping_add(1);
    // SAFETY: helper calls without arguments.
    let (r1, r2) = unsafe { (bpf_get_prandom_u32(), bpf_get_prandom_u32()) };
    let first = table.draw(set.count, r1.checked_rem(span)?)?;
    let second = table
        .draw(set.count, r2.checked_rem(span)?)
        .unwrap_or(first);
    // black_box: each index stays a plain bounds-checked scalar (the
    // compiler's merged range checks lose the verifier).
    let a = *backend_at(set, core::hint::black_box(first))?;
    let b = *backend_at(set, core::hint::black_box(second))?;
    let (a_overhead, b_overhead) = (
        conns_of(a.real_id).overhead(),
        conns_of(b.real_id).overhead(),
    );
    // The second only when its overhead per weight is strictly lower.
    let second_wins = b.weight as i64 * a_overhead > a.weight as i64 * b_overhead;
    Some(if second_wins { b.real_id } else { a.real_id })
}
