//! Reference models of the IPVS schedulers in plain Rust, transcribed from
//! net/netfilter/ipvs/ip_vs_*.c loop for loop (no bounds, no shortcuts),
//! for differential tests against the XDP program.

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
    fn wrr_all_zero_picks_nothing() {
        assert_eq!(WrrModel::new(&[0, 0]).pick(), None);
    }
}
