//! The hashing schedulers: dh (ip_vs_dh.c, destination address), sh
//! (ip_vs_sh.c, source address [and port]) and mh (ip_vs_mh.c, Maglev over
//! source address [and port]). The agent builds each backend set's table
//! (bucket -> index in the set) exactly as IPVS fills its own; the packet
//! only hashes and reads one bucket. A bucket whose server has weight 0 gives
//! no server (IPVS's is_unavailable), unless sh-fallback / mh-fallback
//! probe further.

use lb_common::{
    BackendSet, DH_SH_TABLE_SIZE, MH_HASH1_KEY, MH_TABLE_SIZE, SCHED_FLAG_FALLBACK,
    SCHED_FLAG_HASH_PORT, ServiceInfo,
    sched_hash::{dh_bucket, mh_hash, sh_bucket},
};

use super::scan::{Visit, scan};
use crate::{family::Flow, maps::LOOKUP_TABLES};

/// ip_vs_sh_get_fallback's / ip_vs_mh_get_fallback's probe: the bucket
/// the hash gives for each offset from the first bucket.
struct Fallback<'a> {
    set: &'a BackendSet,
    buckets: &'a [u8],
    hash: Hash,
    saddr: u32,
    sport: u16,
    first: u32,
    found: Option<u32>,
}

impl Visit for Fallback<'_> {
    #[inline(always)]
    fn visit(&mut self, offset: u32) -> bool {
        let bucket = if self.hash == Hash::Maglev {
            let roffset = (offset + self.first) % MH_TABLE_SIZE;
            mh_hash(self.saddr, self.sport, MH_HASH1_KEY, roffset) % MH_TABLE_SIZE
        } else {
            let roffset = (offset + self.first) % DH_SH_TABLE_SIZE;
            sh_bucket(self.saddr, self.sport, roffset)
        };
        self.found = available(self.set, self.buckets, bucket);
        self.found.is_none()
    }
}

#[inline(always)]
fn fallback(
    set: &BackendSet,
    buckets: &[u8],
    hash: Hash,
    saddr: u32,
    sport: u16,
    first: u32,
    table_size: u32,
) -> Option<u32> {
    let mut probe = Fallback {
        set,
        buckets,
        hash,
        saddr,
        sport,
        first,
        found: None,
    };
    scan(table_size, &mut probe);
    probe.found
}

/// Which hash.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Destination,
    Source,
    Maglev,
}

/// The server in `bucket`, if it may take new connections.
#[inline(always)]
fn available(set: &BackendSet, buckets: &[u8], bucket: u32) -> Option<u32> {
    // black_box: the compiler knows `hash % size` is in range and drops the
    // bounds check; the verifier, blind to `%`, needs it.
    let bucket = core::hint::black_box(bucket);
    let idx = *buckets.get(bucket as usize)? as u32;
    if idx >= set.count {
        return None;
    }
    let backend = set.backends.get(idx as usize)?;
    (backend.weight > 0).then_some(backend.real_id)
}

#[inline(always)]
pub fn pick<F: Flow>(svc: &ServiceInfo, set: &BackendSet, flow: &F, hash: Hash) -> Option<u32> {
    // SAFETY: the agent writes a slot's table before the service points at
    // the slot, and never rewrites the table of the slot in use.
    let table = unsafe { LOOKUP_TABLES.get(&svc.backend_set) }?;
    if table.len == 0 {
        return None;
    }
    let saddr = flow.src_fold();
    let sport = if svc.sched_flags & SCHED_FLAG_HASH_PORT != 0 {
        u16::from_be(flow.sport())
    } else {
        0
    };
    match hash {
        Hash::Destination => available(set, &table.buckets, dh_bucket(flow.dst_fold())),
        Hash::Maglev | Hash::Source => {
            let (first, size) = if hash == Hash::Maglev {
                (
                    mh_hash(saddr, sport, MH_HASH1_KEY, 0) % MH_TABLE_SIZE,
                    MH_TABLE_SIZE,
                )
            } else {
                (sh_bucket(saddr, sport, 0), DH_SH_TABLE_SIZE)
            };
            let found = available(set, &table.buckets, first);
            if found.is_some() || svc.sched_flags & SCHED_FLAG_FALLBACK == 0 {
                return found;
            }
            // ip_vs_sh_get_fallback / ip_vs_mh_get_fallback: rehash with
            // every offset from the first bucket until a server is available.
            fallback(set, &table.buckets, hash, saddr, sport, first, size)
        }
    }
}
