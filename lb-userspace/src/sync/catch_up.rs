//! When a receiving balancer holds its peers' whole tables (pure; the
//! clock is the caller's). Each sending balancer of ours announces its
//! whole table again and again and ends every announcement with an empty
//! message (codec::encode_pass_end). The first end a receiver hears may
//! close an announcement that began before it listened; the second closes
//! one it heard from its first record: after two ends from every peer it
//! heard, it holds everything those peers had.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

/// Announcement ends to hear from each peer (see the module's comment).
pub const ENDS_NEEDED: u32 = 2;

/// How the catch-up ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every peer heard announced its whole table.
    Complete,
    /// Nobody spoke for `silence`: there is nothing to catch up on.
    Alone,
    /// `timeout` passed first (a peer that sends no ends, as the kernel's
    /// daemon, or one too slow): going on without the rest.
    TimedOut,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::Alone => "alone",
            Outcome::TimedOut => "timed_out",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CatchUp {
    started: Instant,
    /// Without a word from anyone for this long: Alone.
    silence: Duration,
    /// At the latest this long after the start: TimedOut.
    timeout: Duration,
    /// Announcement ends heard from each peer heard since the start.
    ends: BTreeMap<Ipv4Addr, u32>,
    outcome: Option<Outcome>,
}

impl CatchUp {
    pub fn begin(now: Instant, silence: Duration, timeout: Duration) -> Self {
        Self {
            started: now,
            silence,
            timeout,
            ends: BTreeMap::new(),
            outcome: None,
        }
    }

    /// A message from `peer` (applied before this is called), an
    /// announcement's end or not.
    pub fn heard(&mut self, peer: Ipv4Addr, pass_end: bool) {
        let ends = self.ends.entry(peer).or_default();
        if pass_end {
            *ends += 1;
        }
    }

    /// The outcome once there is one (it does not change afterwards).
    pub fn poll(&mut self, now: Instant) -> Option<Outcome> {
        if self.outcome.is_none() {
            let waited = now.saturating_duration_since(self.started);
            self.outcome = if !self.ends.is_empty() && self.ends.values().all(|&n| n >= ENDS_NEEDED)
            {
                Some(Outcome::Complete)
            } else if self.ends.is_empty() && waited >= self.silence {
                Some(Outcome::Alone)
            } else if waited >= self.timeout {
                Some(Outcome::TimedOut)
            } else {
                None
            };
        }
        self.outcome
    }

    /// Peers still short of ENDS_NEEDED (for the log of a timeout).
    pub fn missing(&self) -> Vec<Ipv4Addr> {
        self.ends
            .iter()
            .filter(|(_, n)| **n < ENDS_NEEDED)
            .map(|(peer, _)| *peer)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SILENCE: Duration = Duration::from_secs(5);
    const TIMEOUT: Duration = Duration::from_secs(60);
    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn complete_after_two_ends_from_every_peer_heard() {
        let t0 = Instant::now();
        let mut c = CatchUp::begin(t0, SILENCE, TIMEOUT);
        c.heard(A, false);
        c.heard(B, false);
        assert_eq!(c.poll(t0 + secs(1)), None);
        // One end each: the announcements they close may have begun
        // before we listened.
        c.heard(A, true);
        c.heard(B, true);
        assert_eq!(c.poll(t0 + secs(3)), None);
        c.heard(A, true);
        assert_eq!(c.poll(t0 + secs(5)), None, "B's second end is missing");
        assert_eq!(c.missing(), [B]);
        c.heard(B, true);
        assert_eq!(c.poll(t0 + secs(6)), Some(Outcome::Complete));
        // Decided once: later time changes nothing.
        assert_eq!(c.poll(t0 + secs(100)), Some(Outcome::Complete));
    }

    #[test]
    fn alone_when_nobody_speaks() {
        let t0 = Instant::now();
        let mut c = CatchUp::begin(t0, SILENCE, TIMEOUT);
        assert_eq!(c.poll(t0 + secs(4)), None);
        assert_eq!(c.poll(t0 + SILENCE), Some(Outcome::Alone));
    }

    #[test]
    fn a_peer_heard_is_waited_for_until_the_timeout() {
        let t0 = Instant::now();
        let mut c = CatchUp::begin(t0, SILENCE, TIMEOUT);
        // A large table: records for a long time, no end yet.
        c.heard(A, false);
        assert_eq!(c.poll(t0 + secs(30)), None);
        // A kernel's daemon never ends an announcement.
        assert_eq!(c.poll(t0 + TIMEOUT), Some(Outcome::TimedOut));
        assert_eq!(c.missing(), [A]);
    }
}
