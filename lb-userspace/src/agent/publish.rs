//! The agent's status (status.rs), built from what it holds and published
//! whenever it changes: to the status file (`status`, `reload`) and to the
//! metrics endpoint.

use lb_common::{MAX_REALS, MAX_SERVICES};
use tracing::warn;

use super::{Agent, checkers::Health, vrrp_set::VrrpSet};
use crate::{
    runtime_files,
    status::{AgentStatus, CheckStatus, MapFill, VrrpStatus},
};

impl Agent {
    fn build_status(&self, vrrp: &VrrpSet) -> AgentStatus {
        let mut checks = Vec::new();
        for svc in &self.plan.services {
            let service = format!("{} {}", svc.protocol.ipvsadm_name(), svc.endpoint());
            let applied = self.applied.get(&svc.service_id);
            for real in svc.reals.iter().chain(svc.sorry.iter()) {
                let h = self
                    .health
                    .get(&real.real_id)
                    .copied()
                    .unwrap_or(Health::UNCHECKED);
                checks.push(CheckStatus {
                    service: service.clone(),
                    real: real.ip,
                    port: real.port,
                    checker: h.checker.to_string(),
                    healthy: h.healthy,
                    active: applied.is_some_and(|a| a.state.is_active(real.real_id)),
                    weight: h.weight.unwrap_or(real.weight),
                    transitions: h.transitions,
                    sorry_server: real.rs_index.is_none(),
                });
            }
        }
        let vrrp = vrrp
            .instances()
            .into_iter()
            .map(|(name, vrid, priority, vips)| {
                let (state, transitions) = self
                    .vrrp_states
                    .get(name)
                    .map_or(("INIT", 0), |(s, n)| (s.name(), *n));
                VrrpStatus {
                    name: name.to_string(),
                    state: state.to_string(),
                    vrid,
                    priority,
                    vips: vips.to_vec(),
                    transitions,
                }
            })
            .collect();
        let (flows, flow_capacity) = self.dp.flow_fill();
        AgentStatus {
            pid: std::process::id(),
            ready: self.ready,
            sync: self.sync.as_ref().map(|link| link.daemon.stats()),
            bgp: self.bgp.as_ref().map(|b| b.status(self.active_conns())),
            local_clients: self.dp.local_cgroup().map(|c| c.display().to_string()),
            config: self.config_path.display().to_string(),
            reloads: self.reloads.clone(),
            vrrp,
            checks,
            fill: MapFill {
                flows,
                flow_capacity,
                services: self.plan.services.len() as u32,
                service_capacity: MAX_SERVICES,
                reals: self.plan.reals().count() as u32,
                // Id 0 is "none".
                real_capacity: MAX_REALS - 1,
            },
        }
    }

    /// Publishes the status if it changed.
    pub(super) fn publish(&mut self, vrrp: &VrrpSet) {
        let status = self.build_status(vrrp);
        if self.published.as_ref() == Some(&status) {
            return;
        }
        if let Err(e) = runtime_files::write_status(&self.pin_dir, &status) {
            warn!("publishing the status failed: {e:#}");
        }
        self.status_tx.send_replace(status.clone());
        self.published = Some(status);
    }
}
