//! Schedulers that pick by weight alone: fo (ip_vs_fo.c, the first server
//! of highest weight) and ovf (ip_vs_ovf.c, the same among servers whose
//! active connections do not exceed their weight).

use lb_common::BackendSet;

use super::scan::{Visit, backend_at, scan};
use crate::maps::conns_of;

struct Heaviest<'a> {
    set: &'a BackendSet,
    overflow: bool,
    real_id: u32,
    /// 0 = none yet (weight-0 servers never qualify).
    weight: u32,
}

impl Visit for Heaviest<'_> {
    #[inline(always)]
    fn visit(&mut self, idx: u32) -> bool {
        let Some(backend) = backend_at(self.set, idx) else {
            return false;
        };
        let weight = backend.weight;
        if weight == 0 || weight <= self.weight {
            return true;
        }
        if self.overflow && conns_of(backend.real_id).active > weight as i64 {
            return true;
        }
        self.real_id = backend.real_id;
        self.weight = weight;
        true
    }
}

/// `overflow`: ovf's rule (skip servers with more active connections than
/// weight); otherwise fo's.
#[inline(always)]
pub fn pick(set: &BackendSet, overflow: bool) -> Option<u32> {
    let mut v = Heaviest {
        set,
        overflow,
        real_id: 0,
        weight: 0,
    };
    scan(set.count, &mut v);
    (v.weight > 0).then_some(v.real_id)
}
