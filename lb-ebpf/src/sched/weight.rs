//! Schedulers that pick by weight alone: fo (ip_vs_fo.c, the first server
//! of highest weight) and ovf (ip_vs_ovf.c, the same among servers whose
//! active connections do not exceed their weight). The agent's WeightTable
//! lists the set's servers heaviest first (set order among equals): fo
//! takes its first entry, ovf the first that has not overflowed, instead
//! of a scan of the whole set for the heaviest.

use lb_common::{BackendSet, WeightTable};

use super::scan::{Visit, backend_at, scan};
use crate::maps::conns_of;

/// ovf's walk down the heaviest-first list.
struct FirstNotOverflowed<'a> {
    set: &'a BackendSet,
    table: &'a WeightTable,
    real_id: Option<u32>,
}

impl Visit for FirstNotOverflowed<'_> {
    #[inline(always)]
    fn visit(&mut self, rank: u32) -> bool {
        let Some(&idx) = self.table.by_weight.get(rank as usize) else {
            return false;
        };
        let Some(backend) = backend_at(self.set, u32::from(idx)) else {
            return false;
        };
        if conns_of(backend.real_id).active > backend.weight as i64 {
            return true;
        }
        self.real_id = Some(backend.real_id);
        false
    }
}

/// `overflow`: ovf's rule (skip servers with more active connections than
/// weight); otherwise fo's.
#[inline(always)]
pub fn pick(set: &BackendSet, table: &WeightTable, overflow: bool) -> Option<u32> {
    if !overflow {
        if table.live == 0 {
            return None;
        }
        let idx = *table.by_weight.first()?;
        return Some(backend_at(set, u32::from(idx))?.real_id);
    }
    let mut v = FirstNotOverflowed {
        set,
        table,
        real_id: None,
    };
    scan(table.live, &mut v);
    v.real_id
}
