//! Reference models of the IPVS schedulers in plain Rust, transcribed from
//! net/netfilter/ipvs/ip_vs_*.c loop for loop (no bounds, no shortcuts),
//! for differential tests against the XDP program. They know nothing of
//! maps or tables' encodings: each takes the destinations (weights and
//! connection counts) and returns the index IPVS would choose.

/// ip_vs_wrr.c.
pub struct WrrModel {
    weights: Vec<u32>,
    /// mark->cl: None is the list head.
    cl: Option<usize>,
    cw: i64,
    mw: i64,
    di: i64,
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl WrrModel {
    /// ip_vs_wrr_init_svc.
    pub fn new(weights: &[u32]) -> Self {
        let w: Vec<i64> = weights.iter().map(|w| i64::from(*w)).collect();
        // ip_vs_wrr_gcd_weight: gcd over weights > 0, 1 if none.
        let di = w
            .iter()
            .copied()
            .filter(|w| *w > 0)
            .reduce(gcd)
            .unwrap_or(1);
        let max = w.iter().copied().max().unwrap_or(0);
        let mw = max - (di - 1);
        Self {
            weights: weights.to_vec(),
            cl: None,
            cw: mw,
            mw,
            di,
        }
    }

    /// ip_vs_wrr_schedule: the index chosen, or None.
    pub fn pick(&mut self) -> Option<usize> {
        let n = self.weights.len();
        if self.mw <= 0 {
            return None;
        }
        let last = self.cl;
        let mut stop: Option<usize> = None;
        let mut last_pass = false;
        let mut pos = self.cl;
        loop {
            let begin = pos.map_or(0, |i| i + 1);
            for i in begin..n {
                if i64::from(self.weights[i]) >= self.cw {
                    self.cl = Some(i);
                    return Some(i);
                }
                if Some(i) == stop {
                    return None;
                }
            }
            pos = None;
            self.cw -= self.di;
            if self.cw <= 0 {
                self.cw = self.mw;
                if last_pass || last.is_none() {
                    stop = n.checked_sub(1);
                }
            }
            last_pass = self.cw <= self.di;
        }
    }
}

/// A destination as IPVS's schedulers see it (ip_vs_dest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dest {
    pub ip: std::net::IpAddr,
    pub port: u16,
    pub weight: u32,
    /// The last non-zero weight (mh).
    pub last_weight: u32,
    pub active: i64,
    pub inactive: i64,
}

impl Dest {
    pub fn new(ip: std::net::IpAddr, port: u16, weight: u32) -> Self {
        Self {
            ip,
            port,
            weight,
            last_weight: weight,
            active: 0,
            inactive: 0,
        }
    }

    /// ip_vs_dest_conn_overhead.
    fn overhead(&self) -> i64 {
        (self.active << 8) + self.inactive
    }

    fn w(&self) -> i64 {
        i64::from(self.weight)
    }
}

/// ip_vs_rr.c.
#[derive(Default)]
pub struct RrModel {
    /// The last dest chosen (None: the list head).
    last: Option<usize>,
}

impl RrModel {
    pub fn pick(&mut self, dests: &[Dest]) -> Option<usize> {
        let n = dests.len();
        let start = self.last.map_or(0, |l| l + 1);
        for k in 0..n {
            let i = (start + k) % n;
            if dests[i].weight > 0 {
                self.last = Some(i);
                return Some(i);
            }
        }
        None
    }
}

/// ip_vs_lc.c.
pub fn lc(dests: &[Dest]) -> Option<usize> {
    let mut least: Option<usize> = None;
    for (i, d) in dests.iter().enumerate() {
        if d.weight == 0 {
            continue;
        }
        if least.is_none_or(|l| d.overhead() < dests[l].overhead()) {
            least = Some(i);
        }
    }
    least
}

/// The weighted-least loop shared by wlc, sed (and nq's fallback): the
/// first dest with weight > 0, then any later one with loh * w > doh * wl.
fn weighted_least(dests: &[Dest], overhead: impl Fn(&Dest) -> i64) -> Option<usize> {
    let first = dests.iter().position(|d| d.weight > 0)?;
    let mut least = first;
    let mut loh = overhead(&dests[first]);
    for (i, d) in dests.iter().enumerate().skip(first + 1) {
        let doh = overhead(d);
        if loh * d.w() > doh * dests[least].w() {
            least = i;
            loh = doh;
        }
    }
    Some(least)
}

/// ip_vs_wlc.c.
pub fn wlc(dests: &[Dest]) -> Option<usize> {
    weighted_least(dests, Dest::overhead)
}

/// ip_vs_sed.c.
pub fn sed(dests: &[Dest]) -> Option<usize> {
    weighted_least(dests, |d| d.active + 1)
}

/// ip_vs_nq.c.
pub fn nq(dests: &[Dest]) -> Option<usize> {
    let mut least: Option<(usize, i64)> = None;
    for (i, d) in dests.iter().enumerate() {
        if d.weight == 0 {
            continue;
        }
        let doh = d.active + 1;
        if d.active == 0 {
            return Some(i);
        }
        if least.is_none_or(|(l, loh)| loh * d.w() > doh * dests[l].w()) {
            least = Some((i, doh));
        }
    }
    least.map(|(i, _)| i)
}

/// ip_vs_fo.c.
pub fn fo(dests: &[Dest]) -> Option<usize> {
    let mut best: Option<usize> = None;
    let mut hw = 0;
    for (i, d) in dests.iter().enumerate() {
        if d.weight > hw {
            best = Some(i);
            hw = d.weight;
        }
    }
    best
}

/// ip_vs_ovf.c.
pub fn ovf(dests: &[Dest]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, d) in dests.iter().enumerate() {
        if d.active > d.w() || d.weight == 0 {
            continue;
        }
        if best.is_none_or(|b| d.weight > dests[b].weight) {
            best = Some(i);
        }
    }
    best
}

/// ip_vs_twos.c with its two random numbers given.
pub fn twos(dests: &[Dest], rand1: u32, rand2: u32) -> Option<usize> {
    let total: u32 = dests.iter().map(|d| d.weight).sum();
    if total == 0 {
        return None;
    }
    let total = total + 1;
    let (mut r1, mut r2) = (i64::from(rand1 % total), i64::from(rand2 % total));
    let (mut c1, mut c2): (Option<usize>, Option<usize>) = (None, None);
    for (i, d) in dests.iter().enumerate() {
        if d.weight == 0 {
            continue;
        }
        r1 -= d.w();
        r2 -= d.w();
        if r1 <= 0 && c1.is_none() {
            c1 = Some(i);
        }
        if r2 <= 0 && c2.is_none() {
            c2 = Some(i);
        }
        if c1.is_some() && c2.is_some() {
            break;
        }
    }
    let c1 = c1?;
    match c2 {
        Some(c2) if dests[c2].w() * dests[c1].overhead() > dests[c1].w() * dests[c2].overhead() => {
            Some(c2)
        }
        _ => Some(c1),
    }
}

/// Every dest twos can choose, over all random draws.
pub fn twos_reachable(dests: &[Dest]) -> Vec<usize> {
    let total: u32 = dests.iter().map(|d| d.weight).sum();
    let mut out = Vec::new();
    for r1 in 0..=total {
        for r2 in 0..=total {
            if let Some(i) = twos(dests, r1, r2)
                && !out.contains(&i)
            {
                out.push(i);
            }
        }
    }
    out.sort();
    out
}

const HASH_TAB_SIZE: usize = 256;

/// ip_vs_dh.c: the table (ip_vs_dh_reassign) and the lookup.
pub fn dh(dests: &[Dest], daddr: impl Into<std::net::IpAddr>) -> Option<usize> {
    if dests.is_empty() {
        return None;
    }
    // Bucket i holds dest i mod n.
    let hash =
        (u64::from(addr_fold(daddr.into())) * 2_654_435_761u64) as usize & (HASH_TAB_SIZE - 1);
    let i = hash % dests.len();
    (dests[i].weight > 0).then_some(i)
}

/// ip_vs_sh.c's table (ip_vs_sh_reassign).
pub fn sh_table(dests: &[Dest]) -> Vec<usize> {
    let mut table = Vec::new();
    if dests.is_empty() {
        return table;
    }
    let (mut p, mut d_count) = (0usize, 0u32);
    for _ in 0..HASH_TAB_SIZE {
        table.push(p);
        d_count += 1;
        if d_count >= dests[p].weight {
            p = (p + 1) % dests.len();
            d_count = 0;
        }
    }
    table
}

fn sh_hashkey(addr: u32, port: u16, offset: u32) -> usize {
    let v = u32::from(port).wrapping_add(addr);
    let h = v.wrapping_mul(0x61C8_8647) >> (32 - 8);
    (offset.wrapping_add(h) as usize) & (HASH_TAB_SIZE - 1)
}

/// ip_vs_sh_schedule (with or without the sh-fallback flag).
pub fn sh(
    dests: &[Dest],
    saddr: impl Into<std::net::IpAddr>,
    sport: u16,
    fallback: bool,
) -> Option<usize> {
    let saddr = addr_fold(saddr.into());
    let table = sh_table(dests);
    if table.is_empty() {
        return None;
    }
    let ihash = sh_hashkey(saddr, sport, 0);
    let usable = |i: usize| dests[i].weight > 0;
    if usable(table[ihash]) {
        return Some(table[ihash]);
    }
    if !fallback {
        return None;
    }
    for offset in 0..HASH_TAB_SIZE as u32 {
        let roffset = (offset + ihash as u32) % HASH_TAB_SIZE as u32;
        let d = table[sh_hashkey(saddr, sport, roffset)];
        if usable(d) {
            return Some(d);
        }
    }
    None
}

/// hsiphash of one u32 on 64-bit Linux: SipHash-1-3 (the siphasher crate).
pub fn hsiphash_u32(v: u32, key: [u64; 2]) -> u32 {
    use std::hash::Hasher as _;
    let mut h = siphasher::sip::SipHasher13::new_with_keys(key[0], key[1]);
    h.write(&v.to_le_bytes());
    h.finish() as u32
}

const MH_SIZE: usize = 4093;
const MH_KEY1: [u64; 2] = [2_654_435_761, 2_654_435_761];
const MH_KEY2: [u64; 2] = [2_654_446_892, 2_654_446_892];

/// ip_vs_mh_hashkey's addr_fold: an IPv6 address is the XOR of its four
/// 32-bit words.
fn addr_fold(addr: std::net::IpAddr) -> u32 {
    match addr {
        std::net::IpAddr::V4(a) => u32::from(a),
        std::net::IpAddr::V6(a) => {
            let bits = u128::from(a);
            (0..4).fold(0, |acc, i| acc ^ (bits >> (32 * i)) as u32)
        }
    }
}

fn mh_hashkey(addr: std::net::IpAddr, port: u16, key: [u64; 2]) -> u32 {
    hsiphash_u32(u32::from(port).wrapping_add(addr_fold(addr)), key)
}

/// ip_vs_mh.c's lookup table (ip_vs_mh_permutate + ip_vs_mh_populate).
pub fn mh_table(dests: &[Dest]) -> Vec<Option<usize>> {
    let g = dests
        .iter()
        .map(|d| d.last_weight)
        .filter(|w| *w > 0)
        .fold(0u32, |g, w| {
            if g > 0 {
                gcd(i64::from(w), i64::from(g)) as u32
            } else {
                w
            }
        });
    let mut lookup = vec![None; MH_SIZE];
    if g < 1 {
        return lookup;
    }
    let mw = dests.iter().map(|d| d.last_weight).max().unwrap_or(0) / g;
    let fls = 32 - mw.leading_zeros() as i32;
    let rshift = (fls - 6).max(0);
    let mut setup: Vec<(usize, usize, u32)> = dests
        .iter()
        .map(|d| {
            let offset = mh_hashkey(d.ip, d.port, MH_KEY1) as usize % MH_SIZE;
            let skip = mh_hashkey(d.ip, d.port, MH_KEY2) as usize % (MH_SIZE - 1) + 1;
            let t = (d.last_weight / g) >> rshift;
            let turns = if t != 0 {
                t
            } else {
                u32::from(d.last_weight != 0)
            };
            (offset, skip, turns)
        })
        .collect();
    let mut taken = vec![false; MH_SIZE];
    let mut n = 0;
    let mut dt_count = 0;
    loop {
        let mut p = 0;
        while p < dests.len() {
            let (perm, skip, turns) = &mut setup[p];
            if *turns < 1 {
                p += 1;
                continue;
            }
            let mut c = *perm;
            while taken[c] {
                *perm += *skip;
                if *perm >= MH_SIZE {
                    *perm -= MH_SIZE;
                }
                c = *perm;
            }
            taken[c] = true;
            lookup[c] = Some(p);
            n += 1;
            if n == MH_SIZE {
                return lookup;
            }
            dt_count += 1;
            if dt_count >= *turns {
                dt_count = 0;
                p += 1;
            }
        }
    }
}

/// ip_vs_mh_schedule (with or without the mh-fallback flag).
pub fn mh(
    dests: &[Dest],
    saddr: impl Into<std::net::IpAddr>,
    sport: u16,
    fallback: bool,
) -> Option<usize> {
    let saddr = saddr.into();
    let table = mh_table(dests);
    let ihash = mh_hashkey(saddr, sport, MH_KEY1) as usize % MH_SIZE;
    let i = table[ihash]?;
    if dests[i].weight > 0 {
        return Some(i);
    }
    if !fallback {
        return None;
    }
    for offset in 0..MH_SIZE {
        let roffset = ((offset + ihash) % MH_SIZE) as u32;
        let v = u32::from(sport)
            .wrapping_add(addr_fold(saddr))
            .wrapping_add(roffset);
        let d = table[hsiphash_u32(v, MH_KEY1) as usize % MH_SIZE]?;
        if dests[d].weight > 0 {
            return Some(d);
        }
    }
    None
}

/// lblc/lblcr's is_overloaded.
fn is_overloaded(dests: &[Dest], i: usize) -> bool {
    dests[i].active > dests[i].w() && dests.iter().any(|d| d.active * 2 < d.w())
}

/// ip_vs_lblc.c: destination address -> dest.
#[derive(Default)]
pub struct LblcModel {
    cache: std::collections::HashMap<std::net::Ipv4Addr, usize>,
}

impl LblcModel {
    pub fn pick(&mut self, dests: &[Dest], daddr: std::net::Ipv4Addr) -> Option<usize> {
        if let Some(&d) = self.cache.get(&daddr)
            && dests[d].weight > 0
            && !is_overloaded(dests, d)
        {
            return Some(d);
        }
        let d = wlc(dests)?;
        self.cache.insert(daddr, d);
        Some(d)
    }
}

/// ip_vs_lblcr.c: destination address -> set of dests (newest first).
#[derive(Default)]
pub struct LblcrModel {
    /// daddr -> (members, lastmod in seconds).
    cache: std::collections::HashMap<std::net::Ipv4Addr, (Vec<usize>, u64)>,
}

impl LblcrModel {
    /// `now_s` and `expiration_s`: the set shrinks when unchanged longer.
    pub fn pick(
        &mut self,
        dests: &[Dest],
        daddr: std::net::Ipv4Addr,
        now_s: u64,
        expiration_s: u64,
    ) -> Option<usize> {
        let Some((set, lastmod)) = self.cache.get_mut(&daddr) else {
            let d = wlc(dests)?;
            self.cache.insert(daddr, (vec![d], now_s));
            return Some(d);
        };
        // ip_vs_dest_set_min.
        let mut min: Option<usize> = None;
        for &d in set.iter() {
            match min {
                None if dests[d].weight > 0 => min = Some(d),
                Some(l)
                    if dests[l].overhead() * dests[d].w() > dests[d].overhead() * dests[l].w() =>
                {
                    min = Some(d)
                }
                _ => {}
            }
        }
        if set.len() > 1 && now_s > *lastmod + expiration_s {
            // ip_vs_dest_set_max.
            let mut max: Option<usize> = None;
            for &d in set.iter() {
                if dests[d].weight == 0 {
                    continue;
                }
                match max {
                    None => max = Some(d),
                    Some(m)
                        if dests[m].overhead() * dests[d].w()
                            < dests[d].overhead() * dests[m].w() =>
                    {
                        max = Some(d)
                    }
                    _ => {}
                }
            }
            if let Some(m) = max {
                set.retain(|&d| d != m);
                *lastmod = now_s;
            }
        }
        if let Some(d) = min
            && !is_overloaded(dests, d)
        {
            return Some(d);
        }
        let d = wlc(dests)?;
        if !set.contains(&d) {
            set.insert(0, d);
            *lastmod = now_s;
        }
        Some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrr_three_to_one_interleaves_as_ipvs() {
        let mut m = WrrModel::new(&[3, 1]);
        let picks: Vec<usize> = (0..8).filter_map(|_| m.pick()).collect();
        assert_eq!(picks, [0, 0, 0, 1, 0, 0, 0, 1]);
    }

    #[test]
    fn the_data_planes_hsiphash_is_siphash13() {
        use lb_common::sched_hash::hsiphash_u32 as ours;
        for (v, key) in [
            (0u32, [0u64, 0]),
            (0xac10_7ac1, lb_common::MH_HASH1_KEY),
            (12345, lb_common::MH_HASH2_KEY),
            (u32::MAX, [u64::MAX, 7]),
        ] {
            assert_eq!(ours(v, key), hsiphash_u32(v, key), "v {v:#x}");
        }
    }

    fn dests(weights: &[u32]) -> Vec<Dest> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                Dest::new(
                    std::net::Ipv4Addr::new(10, 1, 0, i as u8 + 1).into(),
                    80,
                    *w,
                )
            })
            .collect()
    }

    #[test]
    fn the_agents_tables_are_ipvs_tables() {
        use lb_userspace::planning::sched_tables;
        for weights in [&[1u32, 1][..], &[3, 0, 2], &[7, 1, 1, 4], &[100, 3, 9]] {
            let d = dests(weights);
            let sh = sched_tables::sh_table(weights);
            let model: Vec<u8> = sh_table(&d).iter().map(|i| *i as u8).collect();
            assert_eq!(&sh.buckets[..256], &model[..], "sh {weights:?}");
            let mh = sched_tables::mh_table(
                &d.iter()
                    .map(|d| sched_tables::MhServer {
                        ip: d.ip,
                        port: d.port,
                        last_weight: d.last_weight,
                    })
                    .collect::<Vec<_>>(),
            );
            let model: Vec<u8> = mh_table(&d).iter().map(|i| i.unwrap() as u8).collect();
            assert_eq!(&mh.buckets[..MH_SIZE], &model[..], "mh {weights:?}");
        }
    }

    #[test]
    fn wrr_all_zero_picks_nothing() {
        assert_eq!(WrrModel::new(&[0, 0]).pick(), None);
    }
}
