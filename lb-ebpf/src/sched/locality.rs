//! Locality-based schedulers: lblc (ip_vs_lblc.c) remembers one server per
//! destination address, lblcr (ip_vs_lblcr.c) a set of servers. A
//! remembered server keeps the address unless it is gone, quiesced or
//! overloaded; then wlc picks (and lblcr adds the pick to the set). An lblcr
//! set unchanged for the expiration time drops its most loaded server.

use lb_common::{
    BackendSet, LBLCR_SET_MAX, LocalityEntry, LocalityMember, ServiceInfo, least::LeastCost,
};

use super::{
    least,
    scan::{Visit, backend_at, scan},
};
use crate::{
    family::Flow,
    maps::{LB_GLOBALS, LOCALITY_SCRATCH, conns_of},
};

const NS_PER_S: u64 = 1_000_000_000;
/// Not found / none yet.
const NONE: u32 = u32::MAX;

/// Scan for a real id in the set.
struct Find<'a> {
    set: &'a BackendSet,
    real_id: u32,
    found: u32,
}

impl Visit for Find<'_> {
    #[inline(always)]
    fn visit(&mut self, idx: u32) -> bool {
        let Some(b) = backend_at(self.set, idx) else {
            return false;
        };
        if b.real_id == self.real_id {
            self.found = idx;
            return false;
        }
        true
    }
}

/// Where `member` is in the current set: its remembered index if the set
/// did not change, else found by a scan; None once it left the set
/// (IPVS: the dest is no longer IP_VS_DEST_F_AVAILABLE).
#[inline(always)]
fn find(set: &BackendSet, member: &LocalityMember) -> Option<u32> {
    if let Some(b) = set.backends.get(member.index as usize)
        && member.index < set.count
        && b.real_id == member.real_id
    {
        return Some(member.index);
    }
    let mut f = Find {
        set,
        real_id: member.real_id,
        found: NONE,
    };
    scan(set.count, &mut f);
    (f.found != NONE).then_some(f.found)
}

/// Scan for a server with less than half its weight in active connections.
struct Underloaded<'a> {
    set: &'a BackendSet,
    found: bool,
}

impl Visit for Underloaded<'_> {
    #[inline(always)]
    fn visit(&mut self, idx: u32) -> bool {
        let Some(b) = backend_at(self.set, idx) else {
            return false;
        };
        self.found = conns_of(b.real_id).active * 2 < b.weight as i64;
        !self.found
    }
}

/// is_overloaded: more active connections than weight while some server
/// has less than half its weight.
#[inline(always)]
fn overloaded(set: &BackendSet, idx: u32) -> bool {
    let Some(backend) = set.backends.get(idx as usize) else {
        return true;
    };
    if conns_of(backend.real_id).active <= backend.weight as i64 {
        return false;
    }
    let mut u = Underloaded { set, found: false };
    scan(set.count, &mut u);
    u.found
}

#[inline(always)]
fn member(set: &BackendSet, idx: u32) -> Option<LocalityMember> {
    Some(LocalityMember {
        real_id: set.backends.get(idx as usize)?.real_id,
        index: idx,
    })
}

#[inline(always)]
fn real_id(set: &BackendSet, idx: u32) -> Option<u32> {
    Some(set.backends.get(idx as usize)?.real_id)
}

#[inline(always)]
pub fn pick<F: Flow>(
    svc: &ServiceInfo,
    set: &BackendSet,
    flow: &F,
    replicated: bool,
) -> Option<u32> {
    let now = crate::clock::now_ns();
    match flow.locality(svc.service_id) {
        Some(entry) => {
            // SAFETY: map value pointer; racing CPUs may both update an entry,
            // as IPVS's lockless lastuse update.
            let entry = unsafe { &mut *entry };
            entry.lastuse_ns = now;
            if replicated {
                lblcr_cached(set, entry, now)
            } else {
                lblc_cached(set, entry)
            }
        }
        None => {
            let idx = least::pick_index(set, LeastCost::OverheadPerWeight)?;
            // Built in this CPU's scratch slot, not on the stack: 152
            // bytes that IPv6's larger keys leave no room for.
            let slot = LOCALITY_SCRATCH.get_ptr_mut(0)?;
            // SAFETY: per-CPU slot, only this CPU uses it while we run.
            let entry = unsafe { &mut *slot };
            *entry = LocalityEntry {
                lastuse_ns: now,
                lastmod_ns: now,
                count: 1,
                ..LocalityEntry::default()
            };
            entry.members[0] = member(set, idx)?;
            flow.set_locality(svc.service_id, entry);
            real_id(set, idx)
        }
    }
}

/// lblc with a cache entry: its server if still usable, else wlc's pick,
/// which replaces it.
#[inline(always)]
fn lblc_cached(set: &BackendSet, entry: &mut LocalityEntry) -> Option<u32> {
    if let Some(idx) = find(set, &entry.members[0])
        && set.backends.get(idx as usize)?.weight > 0
        && !overloaded(set, idx)
    {
        entry.members[0].index = idx;
        return real_id(set, idx);
    }
    let idx = least::pick_index(set, LeastCost::OverheadPerWeight)?;
    entry.members[0] = member(set, idx)?;
    real_id(set, idx)
}

/// ip_vs_dest_set_min (least overhead / weight among members still in the
/// set with weight > 0; result: backend index) or ip_vs_dest_set_max (most
/// overhead / weight, weight > 0; result: position in the entry).
struct Members<'a> {
    set: &'a BackendSet,
    entry: &'a LocalityEntry,
    most: bool,
    best: u32,
    best_cost: i64,
    best_weight: i64,
}

impl Visit for Members<'_> {
    #[inline(always)]
    fn visit(&mut self, pos: u32) -> bool {
        let Some(m) = self.entry.members.get(pos as usize) else {
            return false;
        };
        // A member that left the service is skipped (weight 0 for max).
        let Some(idx) = find(self.set, m) else {
            return true;
        };
        let Some(backend) = self.set.backends.get(idx as usize) else {
            return false;
        };
        let weight = backend.weight as i64;
        if self.best == NONE && weight == 0 {
            return true;
        }
        if self.most && weight == 0 {
            return true;
        }
        let doh = conns_of(backend.real_id).overhead();
        let better = self.best == NONE
            || if self.most {
                self.best_cost * weight < doh * self.best_weight
            } else {
                self.best_cost * weight > doh * self.best_weight
            };
        if better {
            self.best = if self.most { pos } else { idx };
            self.best_cost = doh;
            self.best_weight = weight;
        }
        true
    }
}

#[inline(always)]
fn members_best(set: &BackendSet, entry: &LocalityEntry, count: u32, most: bool) -> Option<u32> {
    let mut v = Members {
        set,
        entry,
        most,
        best: NONE,
        best_cost: 0,
        best_weight: 0,
    };
    scan(count, &mut v);
    (v.best != NONE).then_some(v.best)
}

/// lblcr with a cache entry (ip_vs_lblcr_schedule).
#[inline(always)]
fn lblcr_cached(set: &BackendSet, entry: &mut LocalityEntry, now: u64) -> Option<u32> {
    let count = entry.count.min(LBLCR_SET_MAX);
    let dest = members_best(set, entry, count, false);
    let expiration_s = LB_GLOBALS.get(0).map_or(0, |g| g.locality_expiration_s);
    if count > 1
        && now > entry.lastmod_ns + expiration_s as u64 * NS_PER_S
        && let Some(pos) = members_best(set, entry, count, true)
    {
        erase(entry, pos, count);
        entry.lastmod_ns = now;
    }
    if let Some(idx) = dest
        && !overloaded(set, idx)
    {
        return real_id(set, idx);
    }
    let idx = least::pick_index(set, LeastCost::OverheadPerWeight)?;
    insert(entry, member(set, idx)?, now);
    real_id(set, idx)
}

/// ip_vs_dest_set_insert: at the front (list_add), unless already in; a
/// full set loses its oldest member.
#[inline(always)]
fn insert(entry: &mut LocalityEntry, new: LocalityMember, now: u64) {
    let count = entry.count.min(LBLCR_SET_MAX);
    let mut pos = 0;
    while pos < LBLCR_SET_MAX {
        if pos >= count {
            break;
        }
        if entry.members[pos as usize].real_id == new.real_id {
            return;
        }
        pos += 1;
    }
    // Shift right by one (no copy_within: its panic path fails the verifier).
    // black_box: keeps the index a bounds-checked scalar; stepped pointers
    // lose their bounds in the verifier.
    for step in 1..LBLCR_SET_MAX as usize {
        let i = core::hint::black_box(LBLCR_SET_MAX as usize - step);
        if let Some(&prev) = entry.members.get(i - 1)
            && let Some(slot) = entry.members.get_mut(i)
        {
            *slot = prev;
        }
    }
    entry.members[0] = new;
    entry.count = (count + 1).min(LBLCR_SET_MAX);
    entry.lastmod_ns = now;
}

/// Removes the member at `pos`, keeping the others in order.
#[inline(always)]
fn erase(entry: &mut LocalityEntry, pos: u32, count: u32) {
    if pos >= LBLCR_SET_MAX {
        return;
    }
    for step in pos as usize..LBLCR_SET_MAX as usize - 1 {
        let i = core::hint::black_box(step);
        if let Some(&next) = entry.members.get(i + 1)
            && let Some(slot) = entry.members.get_mut(i)
        {
            *slot = next;
        }
    }
    entry.count = count - 1;
}
