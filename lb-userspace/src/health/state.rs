//! keepalived's checker state rules (check_tcp.c tcp_epilog and friends),
//! as a pure function of (state, result) -> (state, transition, next delay).
//!
//! A server is declared down after the first attempt plus `retry` retries
//! all fail, each retry `delay_before_retry` after the previous failure; it
//! is declared up again on the first success. While down, it is checked
//! every `delay_loop` without retries.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CheckTiming {
    pub delay_loop: Duration,
    pub retry: u32,
    pub delay_before_retry: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Up,
    Down,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthState {
    pub up: bool,
    /// Failed retries since the last success while up.
    retries_done: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub transition: Option<Transition>,
    /// When the next check runs.
    pub next_in: Duration,
    /// The delay is a retry (no jitter added).
    pub is_retry: bool,
}

impl HealthState {
    /// `alpha`: start down until a check passes.
    pub fn new(alpha: bool) -> Self {
        Self {
            up: !alpha,
            retries_done: 0,
        }
    }

    pub fn on_result(&mut self, success: bool, timing: &CheckTiming) -> Step {
        let regular = |transition| Step {
            transition,
            next_in: timing.delay_loop,
            is_retry: false,
        };
        if success {
            self.retries_done = 0;
            let was_up = std::mem::replace(&mut self.up, true);
            return regular((!was_up).then_some(Transition::Up));
        }
        if !self.up {
            return regular(None);
        }
        if self.retries_done < timing.retry {
            self.retries_done += 1;
            return Step {
                transition: None,
                next_in: timing.delay_before_retry,
                is_retry: true,
            };
        }
        self.retries_done = 0;
        self.up = false;
        regular(Some(Transition::Down))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: CheckTiming = CheckTiming {
        delay_loop: Duration::from_secs(6),
        retry: 3,
        delay_before_retry: Duration::from_secs(3),
    };

    #[test]
    fn down_after_first_attempt_plus_retry_failures() {
        let mut s = HealthState::new(false);
        for _ in 0..3 {
            let step = s.on_result(false, &T);
            assert_eq!(step.transition, None);
            assert_eq!(step.next_in, T.delay_before_retry);
            assert!(s.up);
        }
        let step = s.on_result(false, &T);
        assert_eq!(step.transition, Some(Transition::Down));
        assert_eq!(step.next_in, T.delay_loop);
        // Down: no more retries, one check per delay_loop.
        let step = s.on_result(false, &T);
        assert_eq!((step.transition, step.next_in), (None, T.delay_loop));
    }

    #[test]
    fn up_on_first_success_and_retries_reset() {
        let mut s = HealthState::new(false);
        s.on_result(false, &T);
        s.on_result(false, &T);
        // A success in between resets the retry count.
        assert_eq!(s.on_result(true, &T).transition, None);
        for _ in 0..3 {
            assert_eq!(s.on_result(false, &T).transition, None);
        }
        assert_eq!(s.on_result(false, &T).transition, Some(Transition::Down));
        assert_eq!(s.on_result(true, &T).transition, Some(Transition::Up));
    }

    #[test]
    fn alpha_starts_down_and_comes_up_on_success() {
        let mut s = HealthState::new(true);
        assert!(!s.up);
        assert_eq!(s.on_result(false, &T).transition, None);
        assert_eq!(s.on_result(true, &T).transition, Some(Transition::Up));
    }

    #[test]
    fn retry_zero_fails_at_once() {
        let t = CheckTiming { retry: 0, ..T };
        let mut s = HealthState::new(false);
        assert_eq!(s.on_result(false, &t).transition, Some(Transition::Down));
    }
}
