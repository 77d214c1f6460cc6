//! One task per checked real server: check, apply keepalived's rules, sleep,
//! repeat; report transitions (and misc_dynamic weight changes) on a channel.
//! Generic over the check so the timing is tested with a fake check and a
//! paused tokio clock.

use std::{
    hash::{BuildHasher as _, RandomState},
    time::Duration,
};

use tokio::sync::mpsc;

use super::{
    CheckResult,
    state::{CheckTiming, HealthState, Transition},
};

/// Checks start and repeat with up to this fraction of delay_loop added, so
/// the checks of many servers do not all fire together.
const JITTER_FRACTION: f64 = 0.05;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthEvent {
    pub real_id: u32,
    /// Some on an up/down transition.
    pub transition: Option<Transition>,
    /// misc_dynamic's weight, when it changed.
    pub weight: Option<u32>,
    /// Why: the failure reason, or "check succeeded".
    pub reason: String,
}

/// Something that can be checked (a Checker, or a fake in tests).
pub trait Check: Send + Sync + 'static {
    fn check(&self) -> impl std::future::Future<Output = CheckResult> + Send;
}

impl Check for super::Checker {
    fn check(&self) -> impl std::future::Future<Output = CheckResult> + Send {
        super::Checker::check(self)
    }
}

/// A random duration in [0, max), from the std hasher's random keys (no
/// dependency for a jitter).
fn jitter(max: Duration) -> Duration {
    let r = RandomState::new().hash_one(0u8);
    max.mul_f64((r % 1_000_000) as f64 / 1_000_000.0)
}

/// Runs until the receiver is dropped.
pub async fn run<C: Check>(
    real_id: u32,
    check: C,
    timing: CheckTiming,
    alpha: bool,
    events: mpsc::Sender<HealthEvent>,
) {
    let max_jitter = timing.delay_loop.mul_f64(JITTER_FRACTION);
    let mut state = HealthState::new(alpha);
    let mut weight: Option<u32> = None;
    let mut next = jitter(max_jitter);
    loop {
        tokio::time::sleep(next).await;
        let result = check.check().await;
        let (success, reason, new_weight) = match result {
            CheckResult::Success { weight } => (true, "check succeeded".to_string(), weight),
            CheckResult::Failure(reason) => (false, reason, weight),
        };
        let step = state.on_result(success, &timing);
        let weight_changed = success && new_weight.is_some() && new_weight != weight;
        if weight_changed {
            weight = new_weight;
        }
        if step.transition.is_some() || weight_changed {
            let event = HealthEvent {
                real_id,
                transition: step.transition,
                weight: if weight_changed { weight } else { None },
                reason,
            };
            if events.send(event).await.is_err() {
                return;
            }
        }
        next = if step.is_retry {
            step.next_in
        } else {
            step.next_in + jitter(max_jitter)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::time::Instant;

    /// Returns scripted results and records when it was called.
    struct Scripted {
        results: Mutex<Vec<bool>>,
        calls: Arc<Mutex<Vec<Instant>>>,
    }

    impl Check for Scripted {
        fn check(&self) -> impl std::future::Future<Output = CheckResult> + Send {
            self.calls.lock().unwrap().push(Instant::now());
            let ok = {
                let mut r = self.results.lock().unwrap();
                if r.is_empty() { true } else { r.remove(0) }
            };
            async move {
                if ok {
                    CheckResult::Success { weight: None }
                } else {
                    CheckResult::Failure("connection refused".into())
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_spaced_by_delay_before_retry_and_down_is_reported_once() {
        let timing = CheckTiming {
            delay_loop: Duration::from_secs(6),
            retry: 3,
            delay_before_retry: Duration::from_secs(3),
        };
        let calls = Arc::new(Mutex::new(Vec::new()));
        // up, then 4 failures (first attempt + 3 retries) -> down, then up.
        let check = Scripted {
            results: Mutex::new(vec![true, false, false, false, false, true]),
            calls: calls.clone(),
        };
        let (tx, mut rx) = mpsc::channel(8);
        let start = Instant::now();
        tokio::spawn(run(7, check, timing, false, tx));
        let down = rx.recv().await.unwrap();
        assert_eq!(down.transition, Some(Transition::Down));
        assert_eq!(down.real_id, 7);
        assert!(down.reason.contains("refused"));
        let up = rx.recv().await.unwrap();
        assert_eq!(up.transition, Some(Transition::Up));

        let calls = calls.lock().unwrap();
        let at: Vec<Duration> = calls.iter().map(|t| *t - start).collect();
        assert_eq!(at.len(), 6, "{at:?}");
        let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
        let jitter_max = timing.delay_loop.mul_f64(JITTER_FRACTION);
        let is_loop = |g: Duration| g >= timing.delay_loop && g <= timing.delay_loop + jitter_max;
        // success -> first failure: delay_loop (+ jitter)
        assert!(is_loop(gaps[0]), "{gaps:?}");
        // the three retries: exactly delay_before_retry apart
        assert_eq!(&gaps[1..4], &[timing.delay_before_retry; 3], "{gaps:?}");
        // declared down -> next check: delay_loop (+ jitter)
        assert!(is_loop(gaps[4]), "{gaps:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn alpha_reports_up_on_first_success() {
        let timing = CheckTiming {
            delay_loop: Duration::from_secs(1),
            retry: 1,
            delay_before_retry: Duration::from_secs(1),
        };
        let check = Scripted {
            results: Mutex::new(vec![false, true]),
            calls: Arc::new(Mutex::new(Vec::new())),
        };
        let (tx, mut rx) = mpsc::channel(8);
        tokio::spawn(run(1, check, timing, true, tx));
        assert_eq!(rx.recv().await.unwrap().transition, Some(Transition::Up));
    }
}
