//! The running health checkers, one task per checked real server, kept in
//! step with the plan: on a reload a checker whose settings did not change
//! keeps running (and its server keeps its health), a changed one restarts,
//! a removed server's stops.

use std::{collections::HashMap, net::SocketAddr};

use tokio::{sync::mpsc, task::AbortHandle};
use tracing::info;

use crate::{
    config::Config,
    health::{self, runner::HealthEvent},
    planning::plan::{Plan, PlannedReal, PlannedService},
};

/// Health as the checkers last reported it.
#[derive(Debug, Clone, Copy)]
pub struct Health {
    pub healthy: bool,
    /// misc_dynamic's weight, when it set one.
    pub weight: Option<u32>,
    /// TCP_CHECK, HTTP_GET, MISC_CHECK, or "none".
    pub checker: &'static str,
    /// Up/down transitions so far (kept when its checker is replaced).
    pub transitions: u64,
}

impl Health {
    /// keepalived: a real server without checker is always up.
    pub const UNCHECKED: Health = Health {
        healthy: true,
        weight: None,
        checker: "none",
        transitions: 0,
    };
}

struct Running {
    /// The checker's settings, to tell whether a reload changed them.
    settings: String,
    task: AbortHandle,
}

pub struct Checkers {
    events: mpsc::Sender<HealthEvent>,
    running: HashMap<u32, Running>,
}

impl Drop for Checkers {
    fn drop(&mut self) {
        for running in self.running.values() {
            running.task.abort();
        }
    }
}

impl Checkers {
    pub fn new(events: mpsc::Sender<HealthEvent>) -> Self {
        Self {
            events,
            running: HashMap::new(),
        }
    }

    /// Makes the running checkers those of `plan`; `health` holds every real
    /// server's health afterwards: kept for servers whose checker kept
    /// running, initial (alpha: checked ones start down) for the others.
    pub fn sync(&mut self, config: &Config, plan: &Plan, health: &mut HashMap<u32, Health>) {
        let mut wanted: HashMap<u32, Health> = HashMap::new();
        let transitions = |id: u32| health.get(&id).map_or(0, |h| h.transitions);
        for (svc, vs) in plan.services.iter().zip(&config.virtual_server) {
            let vs = vs.get_ref();
            for real in svc.reals.iter().chain(svc.sorry.iter()) {
                let checker = real
                    .rs_index
                    .and_then(|i| health::checker_for(vs, vs.real_server[i].get_ref()));
                let Some((checker, timing)) = checker else {
                    if let Some(old) = self.running.remove(&real.real_id) {
                        old.task.abort();
                    }
                    wanted.insert(
                        real.real_id,
                        Health {
                            transitions: transitions(real.real_id),
                            ..Health::UNCHECKED
                        },
                    );
                    continue;
                };
                let settings = format!("{checker:?} {timing:?} alpha={}", vs.alpha);
                let kept = self
                    .running
                    .get(&real.real_id)
                    .is_some_and(|r| r.settings == settings);
                if let (true, Some(h)) = (kept, health.get(&real.real_id)) {
                    wanted.insert(real.real_id, *h);
                    continue;
                }
                info!(
                    "{} of {}: {} every {:?}",
                    label(real),
                    service_label(svc),
                    checker.kind(),
                    timing.delay_loop
                );
                let kind = checker.kind();
                let task = tokio::spawn(health::runner::run(
                    real.real_id,
                    checker,
                    timing,
                    vs.alpha,
                    self.events.clone(),
                ))
                .abort_handle();
                if let Some(old) = self
                    .running
                    .insert(real.real_id, Running { settings, task })
                {
                    old.task.abort();
                }
                wanted.insert(
                    real.real_id,
                    Health {
                        healthy: !vs.alpha,
                        weight: None,
                        checker: kind,
                        transitions: transitions(real.real_id),
                    },
                );
            }
        }
        self.running.retain(|id, running| {
            let keep = wanted.contains_key(id);
            if !keep {
                running.task.abort();
            }
            keep
        });
        *health = wanted;
    }
}

pub fn label(real: &PlannedReal) -> String {
    match real.rs_index {
        Some(_) => format!("real server {}", SocketAddr::new(real.ip, real.port)),
        None => format!("sorry server {}", SocketAddr::new(real.ip, real.port)),
    }
}

pub fn service_label(svc: &PlannedService) -> String {
    format!("virtual server {}", svc.endpoint())
}
