//! SIGHUP: re-read lb.toml and apply only the difference. Everything that
//! can fail (parsing, validation, planning, ids, interfaces, mail settings)
//! is done before the first map write, so a bad file changes nothing. The
//! flow table is never flushed: connections to servers that stay keep
//! their server; connections to removed servers move on their next packet
//! (IPVS expire_nodest_conn).

use std::fmt;

use anyhow::{Context as _, Result, anyhow};
use tracing::{info, warn};

use super::{
    Agent, conn_timeouts, resolve_vrrp_instances, service_index, sync_link, tunnel_source_of,
    vip_gate, vrrp_set::VrrpSet,
};
use crate::{
    config, netlink,
    notify::SmtpAlerts,
    planning::{
        plan::{self, PlannedReal},
        stable_ids::{self, PlanDiff},
    },
};

/// What a reload changed, for the log.
pub struct ReloadSummary(PlanDiff);

impl fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.0;
        if d.is_empty() {
            return write!(f, "no virtual server changed");
        }
        write!(
            f,
            "{} virtual servers added or changed, {} removed; {} real servers added, {} removed",
            d.changed_services.len(),
            d.removed_services.len(),
            d.added_reals.len(),
            d.removed_reals.len()
        )
    }
}

impl Agent {
    pub(super) async fn reload(&mut self, vrrp: &mut VrrpSet) -> Result<ReloadSummary> {
        // 1. Everything that can refuse the new file.
        let config = config::load(&self.config_path).map_err(|e| anyhow!("{e}"))?;
        let fresh = plan::plan(&config);
        let dp = &self.dp;
        let new_plan = stable_ids::keep_ids(fresh, &self.plan, |id| dp.real_busy(id))
            .map_err(|e| anyhow!("{}: {e}", self.config_path.display()))?;
        let mut instances = resolve_vrrp_instances(&config, &self.nl, &self.iface).await?;
        let sync_config = config.global.lvs_sync_daemon.as_ref().map(|s| s.get_ref());
        if sync_config.is_some() != self.sync.is_some() {
            warn!("lvs_sync_daemon added or removed: connection sync changes at the next start");
        }
        if config.bgp.is_some() != self.bgp.is_some() {
            warn!("[bgp] added or removed: BGP starts or stops at the next start");
        }
        sync_link::hold_preemption(&mut instances, sync_config);
        let governed_vips = vip_gate::governed_by(&instances);
        let tun_src =
            tunnel_source_of(&config, &self.nl, &self.link, &new_plan, &governed_vips).await?;
        let alerts = SmtpAlerts::from_config(&config.global).context("[global] mail settings")?;
        let diff = stable_ids::diff(&self.plan, &new_plan);

        // 2. VRRP: unchanged instances keep running; the others restart or stop.
        let stopped = vrrp.sync(instances).await;
        self.vips.reload(governed_vips, &stopped);
        self.alerts = alerts;

        // 3. The data plane. Globals first with the flags of both plans
        // (NAT replies and port-0 lookups of either), the final ones last.
        let timeouts = conn_timeouts(&config);
        let old_plan = std::mem::replace(&mut self.plan, new_plan);
        let both = plan::global_flags(old_plan.services.iter().chain(&self.plan.services));
        let (link, inside) = (self.link, self.inside);
        let sync_flag = self.sync_flag;
        let set_globals = |dp: &mut crate::dataplane::Dataplane, flags| {
            dp.set_globals(&link, inside.as_ref(), tun_src, flags | sync_flag, timeouts)
        };
        set_globals(&mut self.dp, both)?;
        self.timeouts = timeouts;
        self.dp
            .reset_stats(&diff.added_services, &diff.added_reals)?;
        for svc in old_plan
            .services
            .iter()
            .filter(|s| diff.removed_services.contains(&s.service_id))
        {
            self.dp.remove_service(svc)?;
            self.applied.remove(&svc.service_id);
            info!("virtual server {} removed", svc.endpoint());
        }
        self.macs
            .retrack(self.plan.reals().map(|r| (r.real_id, r.ip)));
        let neighbours = self.nl.neighbours(self.reals_ifindex()).await?;
        self.macs.update(&neighbours);
        for ip in self.macs.unresolved() {
            let _ = netlink::probe(ip);
        }
        self.checkers.sync(&config, &self.plan, &mut self.health);
        self.service_of = service_index(&self.plan);
        for real in self
            .plan
            .reals()
            .filter(|r| diff.added_reals.contains(&r.real_id))
        {
            self.dp
                .write_real(real, self.macs.mac(real.real_id), false)?;
        }
        for index in 0..self.plan.services.len() {
            let changed = diff
                .changed_services
                .contains(&self.plan.services[index].service_id);
            self.apply_service(index, changed)?;
        }
        // Servers that left: out of every set now, so their flows move.
        let removed: Vec<&PlannedReal> = old_plan
            .reals()
            .filter(|r| diff.removed_reals.contains(&r.real_id))
            .collect();
        for real in removed {
            self.dp.write_real(real, None, false)?;
        }
        set_globals(&mut self.dp, plan::global_flags(&self.plan.services))?;
        if let (Some(bgp), Some(new)) = (&mut self.bgp, &config.bgp) {
            bgp.reconfigure(new.get_ref()).await;
        }
        Ok(ReloadSummary(diff))
    }
}
