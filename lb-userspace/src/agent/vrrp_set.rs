//! The running VRRP instances, by name. A reload leaves an instance whose
//! settings did not change alone (no flap: it keeps its state and timers),
//! restarts a changed one and stops a removed one (priority 0 first, as
//! keepalived does when an instance goes away).

use std::{collections::HashMap, net::IpAddr, time::Duration};

use anyhow::{Result, anyhow};
use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
};
use tracing::info;

use crate::{
    netlink::Netlink,
    vrrp::instance::{self as vrrp_instance, InstanceConfig, StateChange},
};

/// How long an instance gets to send priority 0 and remove its VIPs.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

struct Running {
    /// The resolved settings, to tell whether a reload changed them.
    settings: String,
    vrid: u8,
    priority: u8,
    vips: Vec<IpAddr>,
    stop: watch::Sender<bool>,
    /// Tells a restarted instance's task from its predecessor's.
    generation: u64,
}

pub struct VrrpSet {
    nl: Netlink,
    states: mpsc::Sender<StateChange>,
    running: HashMap<String, Running>,
    /// Each task returns its instance's name and generation with its result.
    tasks: JoinSet<(String, u64, Result<()>)>,
    next_generation: u64,
    /// Connection sync's catch-up (true: running), for instances that
    /// wait for it.
    sync_hold: Option<watch::Receiver<bool>>,
}

impl VrrpSet {
    pub fn new(
        nl: Netlink,
        states: mpsc::Sender<StateChange>,
        sync_hold: Option<watch::Receiver<bool>>,
    ) -> Self {
        Self {
            nl,
            states,
            running: HashMap::new(),
            tasks: JoinSet::new(),
            next_generation: 0,
            sync_hold,
        }
    }

    /// Makes the running instances `wanted`. Returns the VIPs of instances
    /// that were stopped (they are no longer served as master here).
    pub async fn sync(&mut self, wanted: Vec<InstanceConfig>) -> Vec<IpAddr> {
        let mut released = Vec::new();
        let names: Vec<&str> = wanted.iter().map(|c| c.name.as_str()).collect();
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|n| !names.contains(&n.as_str()))
            .cloned()
            .collect();
        for name in gone {
            info!("vrrp_instance {name}: removed from the configuration; stopping it");
            released.extend(self.stop(&name).await);
        }
        for cfg in wanted {
            // The initial state is for starting only (a resumed master has
            // it forced): a reload that only differs there changes nothing.
            let mut comparable = cfg.clone();
            comparable.params.start_as_master = false;
            let settings = format!("{comparable:?}");
            match self.running.get(&cfg.name) {
                Some(r) if r.settings == settings => continue,
                Some(_) => {
                    info!(
                        "vrrp_instance {}: settings changed; restarting it",
                        cfg.name
                    );
                    released.extend(self.stop(&cfg.name).await);
                }
                None => {}
            }
            self.start(cfg, settings);
        }
        released
    }

    fn start(&mut self, cfg: InstanceConfig, settings: String) {
        info!(
            "vrrp_instance {}: vrid {} priority {} on {} ({})",
            cfg.name, cfg.vrid, cfg.params.priority, cfg.iface, cfg.local_addr
        );
        let (stop, stop_rx) = watch::channel(false);
        let name = cfg.name.clone();
        let generation = self.next_generation;
        self.next_generation += 1;
        self.running.insert(
            name.clone(),
            Running {
                settings,
                vrid: cfg.vrid,
                priority: cfg.params.priority,
                vips: cfg.vips.iter().map(|(a, _)| *a).collect(),
                stop,
                generation,
            },
        );
        let (nl, states, hold) = (self.nl.clone(), self.states.clone(), self.sync_hold.clone());
        self.tasks.spawn(async move {
            let result = vrrp_instance::run(cfg, nl, states, stop_rx, hold).await;
            (name, generation, result)
        });
    }

    /// Stops one instance and waits (bounded) for it to leave cleanly.
    async fn stop(&mut self, name: &str) -> Vec<IpAddr> {
        let Some(running) = self.running.remove(name) else {
            return Vec::new();
        };
        let _ = running.stop.send(true);
        let _ = tokio::time::timeout(STOP_TIMEOUT, running.stop.closed()).await;
        running.vips
    }

    /// The running instances: (name, vrid, priority, VIPs), by name.
    pub fn instances(&self) -> Vec<(&str, u8, u8, &[IpAddr])> {
        let mut out: Vec<_> = self
            .running
            .iter()
            .map(|(name, r)| (name.as_str(), r.vrid, r.priority, r.vips.as_slice()))
            .collect();
        out.sort_by_key(|(name, ..)| *name);
        out
    }

    /// Ends every instance without a word (hitless restart): no priority
    /// 0, the VIPs stay where they are for the next agent.
    pub fn abandon(&mut self) {
        self.tasks.abort_all();
        self.running.clear();
    }

    /// Stops every instance (shutdown).
    pub async fn stop_all(&mut self) {
        for running in self.running.values() {
            let _ = running.stop.send(true);
        }
        let _ = tokio::time::timeout(STOP_TIMEOUT, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.running.clear();
    }

    /// Waits for an instance that ended by itself (only a start-up error
    /// ends one); instances stopped on purpose are skipped. Pending forever
    /// when none runs.
    pub async fn failed(&mut self) -> anyhow::Error {
        loop {
            match self.tasks.join_next().await {
                Some(Ok((name, generation, result))) => {
                    if self
                        .running
                        .get(&name)
                        .is_some_and(|r| r.generation == generation)
                    {
                        return match result {
                            Err(e) => e,
                            Ok(()) => anyhow!("vrrp_instance {name} stopped by itself"),
                        };
                    }
                }
                Some(Err(e)) => return anyhow!("a VRRP instance task failed: {e}"),
                None => std::future::pending::<()>().await,
            }
        }
    }
}
