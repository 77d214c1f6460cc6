//! The lookup tables of the hashing schedulers, built as IPVS builds them
//! (ip_vs_dh_reassign, ip_vs_sh_reassign, ip_vs_mh_populate): bucket ->
//! index of a server in the backend set. Pure, so tested without root; the
//! data plane only hashes a packet and reads one bucket.

use std::net::IpAddr;

use lb_common::{
    DH_SH_TABLE_SIZE, LookupTable, MH_HASH1_KEY, MH_HASH2_KEY, MH_TABLE_BITS, MH_TABLE_SIZE,
    sched_hash::mh_hash,
};

/// What mh needs of a server: its address, port and last non-zero weight
/// (IPVS's last_weight: a quiesced server keeps its place in the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MhServer {
    pub ip: IpAddr,
    pub port: u16,
    pub last_weight: u32,
}

/// IPVS's addr_fold (ip_vs_mh_hashkey): an IPv4 address as a host-order
/// word; an IPv6 address as the XOR of its four words. The data plane folds
/// packet addresses the same way (lb-ebpf family.rs).
pub fn addr_fold(ip: IpAddr) -> u32 {
    match ip {
        IpAddr::V4(a) => u32::from(a),
        IpAddr::V6(a) => a
            .octets()
            .chunks_exact(4)
            .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
            .fold(0, |acc, w| acc ^ w),
    }
}

fn table(len: u32, buckets: impl IntoIterator<Item = u8>) -> LookupTable {
    let mut t = LookupTable {
        len,
        ..LookupTable::default()
    };
    for (slot, b) in t.buckets.iter_mut().zip(buckets) {
        *slot = b;
    }
    t
}

/// dh: bucket i -> server i mod n, weights ignored.
pub fn dh_table(servers: usize) -> LookupTable {
    if servers == 0 {
        return LookupTable::default();
    }
    table(
        DH_SH_TABLE_SIZE,
        (0..DH_SH_TABLE_SIZE as usize).map(|i| (i % servers) as u8),
    )
}

/// sh: each server fills as many consecutive buckets as its weight (one
/// if its weight is 0), cycling until all buckets are full.
pub fn sh_table(weights: &[u32]) -> LookupTable {
    if weights.is_empty() {
        return LookupTable::default();
    }
    let mut buckets = Vec::with_capacity(DH_SH_TABLE_SIZE as usize);
    let (mut server, mut turns) = (0usize, 0u32);
    while buckets.len() < DH_SH_TABLE_SIZE as usize {
        buckets.push(server as u8);
        turns += 1;
        if turns >= weights[server] {
            server = (server + 1) % weights.len();
            turns = 0;
        }
    }
    table(DH_SH_TABLE_SIZE, buckets)
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// mh: Maglev population. Each server walks its own permutation of the
/// table (offset and skip from hsiphash of its address and port) and takes
/// the next free bucket, `turns` times per round (weight / gcd, shifted so
/// the largest keeps MH_TABLE_BITS bits). Servers with last weight 0 take
/// none. Equal inputs give equal tables on every balancer.
pub fn mh_table(servers: &[MhServer]) -> LookupTable {
    let g = servers
        .iter()
        .map(|s| s.last_weight)
        .filter(|w| *w > 0)
        .fold(0, gcd);
    if g == 0 {
        return LookupTable::default();
    }
    let max = servers.iter().map(|s| s.last_weight).max().unwrap_or(0) / g;
    // fls(mw) - MH_TABLE_BITS, not below 0.
    let shift = (u32::BITS - max.leading_zeros()).saturating_sub(MH_TABLE_BITS);
    let size = MH_TABLE_SIZE;
    struct Setup {
        perm: u32,
        skip: u32,
        turns: u32,
    }
    let mut setup: Vec<Setup> = servers
        .iter()
        .map(|s| {
            let addr = addr_fold(s.ip);
            let offset = mh_hash(addr, s.port, MH_HASH1_KEY, 0) % size;
            let skip = mh_hash(addr, s.port, MH_HASH2_KEY, 0) % (size - 1) + 1;
            let lw = s.last_weight;
            let turns = match (lw / g) >> shift {
                0 => u32::from(lw != 0),
                t => t,
            };
            Setup {
                perm: offset,
                skip,
                turns,
            }
        })
        .collect();
    let mut taken = vec![false; size as usize];
    let mut buckets = vec![0u8; size as usize];
    let mut filled = 0u32;
    'fill: loop {
        for (index, ds) in setup.iter_mut().enumerate() {
            for _ in 0..ds.turns {
                while taken[ds.perm as usize] {
                    ds.perm = (ds.perm + ds.skip) % size;
                }
                taken[ds.perm as usize] = true;
                buckets[ds.perm as usize] = index as u8;
                filled += 1;
                if filled == size {
                    break 'fill;
                }
            }
        }
    }
    table(size, buckets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dh_cycles_over_the_servers() {
        let t = dh_table(3);
        assert_eq!(&t.buckets[..7], &[0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(t.len, 256);
        assert_eq!(dh_table(0).len, 0);
    }

    #[test]
    fn sh_repeats_each_server_by_weight() {
        let t = sh_table(&[2, 0, 1]);
        assert_eq!(&t.buckets[..8], &[0, 0, 1, 2, 0, 0, 1, 2]);
    }

    fn servers(n: u8) -> Vec<MhServer> {
        (0..n)
            .map(|i| MhServer {
                ip: std::net::Ipv4Addr::new(10, 0, 0, 10 + i).into(),
                port: 80,
                last_weight: 1,
            })
            .collect()
    }

    #[test]
    fn mh_fills_evenly_and_only_moves_a_removed_servers_buckets() {
        let all = servers(5);
        let t = mh_table(&all);
        assert_eq!(t.len, MH_TABLE_SIZE);
        let mut per = [0usize; 5];
        for b in &t.buckets[..MH_TABLE_SIZE as usize] {
            per[*b as usize] += 1;
        }
        // Maglev's balance: within a few buckets of size / n each.
        for n in per {
            assert!(n.abs_diff(MH_TABLE_SIZE as usize / 5) < 40, "{per:?}");
        }
        // Remove server 2: buckets of the others mostly stay.
        let rest: Vec<MhServer> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 2)
            .map(|(_, s)| *s)
            .collect();
        let t2 = mh_table(&rest);
        let old_index = |i: u8| if i >= 2 { i + 1 } else { i };
        let kept = (0..MH_TABLE_SIZE as usize)
            .filter(|&b| t.buckets[b] != 2)
            .filter(|&b| old_index(t2.buckets[b]) == t.buckets[b])
            .count();
        let others = (0..MH_TABLE_SIZE as usize)
            .filter(|&b| t.buckets[b] != 2)
            .count();
        assert!(kept * 100 >= others * 95, "kept {kept} of {others}");
    }

    #[test]
    fn mh_with_every_weight_zero_has_no_server() {
        let mut s = servers(2);
        s.iter_mut().for_each(|s| s.last_weight = 0);
        assert_eq!(mh_table(&s).len, 0);
    }
}
