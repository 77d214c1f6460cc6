//! Hitless restart: what an agent leaving with `--keep-dataplane` tells the
//! next one, besides the pinned maps and links. The ids are the key: flows
//! and counters name servers by id, so the next agent gives every service
//! and server that is still configured the id it had (stable_ids.rs, as a
//! reload does). The VIPs it was VRRP master for are served on from the
//! first moment, and their instances resume as master.

use std::{collections::HashSet, net::IpAddr, path::Path};

use anyhow::{Context as _, Result, anyhow};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::{
    config::Protocol,
    dataplane::{Dataplane, LoadOptions},
    planning::{
        plan::{Plan, PlannedReal, PlannedService},
        stable_ids,
    },
    runtime_files,
    vrrp::instance::InstanceConfig,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Handover {
    pub flow_table_size: u32,
    pub services: Vec<HandedService>,
    pub master_vips: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandedService {
    /// Written as text: the files of agents before IPv6 read the same.
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub service_id: u32,
    pub reals: Vec<HandedReal>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandedReal {
    pub ip: IpAddr,
    pub port: u16,
    pub sorry: bool,
    pub real_id: u32,
}

impl Handover {
    pub fn of(plan: &Plan, flow_table_size: u32, master_vips: Vec<IpAddr>) -> Self {
        let real = |r: &PlannedReal, sorry| HandedReal {
            ip: r.ip,
            port: r.port,
            sorry,
            real_id: r.real_id,
        };
        Self {
            flow_table_size,
            master_vips,
            services: plan
                .services
                .iter()
                .map(|s| HandedService {
                    vip: s.vip,
                    port: s.port,
                    protocol: s.protocol,
                    service_id: s.service_id,
                    reals: s
                        .reals
                        .iter()
                        .map(|r| real(r, false))
                        .chain(s.sorry.iter().map(|r| real(r, true)))
                        .collect(),
                })
                .collect(),
        }
    }

    /// The ids of the previous agent's plan, as a plan (for keep_ids: only
    /// services' keys and servers' identities and ids are meaningful).
    pub fn id_plan(&self) -> Plan {
        let real = |r: &HandedReal| PlannedReal {
            real_id: r.real_id,
            rs_index: (!r.sorry).then_some(0),
            ip: r.ip,
            port: r.port,
            weight: 0,
        };
        Plan {
            services: self
                .services
                .iter()
                .map(|s| PlannedService {
                    service_id: s.service_id,
                    vip: s.vip,
                    port: s.port,
                    protocol: s.protocol,
                    forward: lb_common::ForwardKind::Dr,
                    scheduler: lb_common::SchedulerKind::Rr,
                    sched_flags: 0,
                    persistence: None,
                    reals: s.reals.iter().filter(|r| !r.sorry).map(real).collect(),
                    inhibit_on_failure: false,
                    alpha: false,
                    quorum: 1,
                    sorry: s.reals.iter().find(|r| r.sorry).map(real),
                })
                .collect(),
        }
    }

    pub fn write(&self, pin_dir: &Path) -> Result<()> {
        runtime_files::write_handover(pin_dir, &serde_json::to_vec_pretty(self)?)
    }

    /// The handover left for `pin_dir`, if any (it stays until `done`, so a
    /// failed adoption can be retried).
    pub fn read(pin_dir: &Path) -> Result<Option<Self>> {
        runtime_files::read_handover(pin_dir)?
            .map(|text| serde_json::from_slice(&text).context("parsing the handover file"))
            .transpose()
    }

    /// The data plane is adopted: the handover is spent.
    pub fn done(pin_dir: &Path) -> Result<()> {
        runtime_files::remove_handover(pin_dir)
    }
}

/// Loads the data plane: fresh, or, when a previous agent left it running
/// with --keep-dataplane, on its pinned maps. Returns it with the plan (ids
/// kept when adopting) and the VIPs to go on serving as master; their
/// instances resume as master.
pub(super) fn load_or_adopt(
    opts: &super::AgentOptions,
    fresh_plan: Plan,
    governed_vips: &HashSet<IpAddr>,
    instances: &mut [InstanceConfig],
) -> Result<(Dataplane, Plan, HashSet<IpAddr>)> {
    let handover = Handover::read(&opts.pin_dir)?.filter(|_| opts.pin_dir.exists());
    if let Some(h) = &handover {
        info!(
            "adopting the data plane the previous agent left running ({} services, flows and counters kept)",
            h.services.len()
        );
    }
    info!("loading the XDP program");
    let dp = Dataplane::load(&LoadOptions {
        log_level: opts.log_level,
        flow_table_size: opts.flow_table_size,
        adopt_pins: handover.as_ref().map(|_| opts.pin_dir.clone()),
    })?;
    let Some(handover) = handover else {
        return Ok((dp, fresh_plan, HashSet::new()));
    };
    // Every service and server still configured keeps its id.
    let plan = stable_ids::keep_ids(fresh_plan, &handover.id_plan(), |id| dp.real_busy(id))
        .map_err(|e| anyhow!("{}: {e}", opts.config_path.display()))?;
    let resumed: HashSet<IpAddr> = handover
        .master_vips
        .iter()
        .copied()
        .filter(|v| governed_vips.contains(v))
        .collect();
    for instance in instances {
        if !instance.vips.is_empty() && instance.vips.iter().all(|(v, _)| resumed.contains(v)) {
            instance.params.start_as_master = true;
        }
    }
    Ok((dp, plan, resumed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::parse,
        planning::{plan::plan, stable_ids},
    };

    #[test]
    fn the_next_agent_gives_every_server_its_id_back() {
        let seed = include_str!("../../../configs/seed-dr.toml");
        let old = plan(&parse("seed", seed).unwrap());
        let handover = Handover::of(
            &old,
            65536,
            vec![std::net::Ipv4Addr::new(172, 16, 122, 100).into()],
        );
        let json = serde_json::to_string(&handover).unwrap();
        let back: Handover = serde_json::from_str(&json).unwrap();
        assert_eq!(back, handover);
        // The same file, its servers in the other order: ids follow servers.
        let first = seed.find("  [[virtual_server.real_server]]").unwrap();
        let second = first
            + 1
            + seed[first + 1..]
                .find("  [[virtual_server.real_server]]")
                .unwrap();
        let swapped = format!(
            "{}{}{}",
            &seed[..first],
            &seed[second..],
            &seed[first..second]
        );
        let new = plan(&parse("swapped", &swapped).unwrap());
        let kept = stable_ids::keep_ids(new, &back.id_plan(), |_| false).unwrap();
        let ids = |p: &Plan| -> Vec<(IpAddr, u32)> {
            let mut v: Vec<_> = p.reals().map(|r| (r.ip, r.real_id)).collect();
            v.sort();
            v
        };
        assert_eq!(ids(&kept), ids(&old));
        assert_eq!(kept.services[0].service_id, old.services[0].service_id);
    }
}
