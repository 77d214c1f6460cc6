//! The running agent: config -> maps, attach, then react to health-check
//! transitions and neighbour (MAC) changes until SIGINT/SIGTERM, when it
//! detaches and removes the pins.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};
use aya::programs::XdpMode;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{mpsc, watch},
    task::JoinSet,
};
use tracing::{debug, info, warn};

use crate::{
    backends::{RealStatus, ServiceState, service_state},
    config::{self, Config, Protocol},
    dataplane::{
        ConnTimeouts, Dataplane, LoadOptions,
        plan::{self, Plan, PlannedReal, PlannedService},
        preflight,
    },
    health::{self, runner::HealthEvent, state::Transition},
    neighbours::MacTracker,
    netlink::{self, Netlink},
    notify::SmtpAlerts,
    vrrp::instance::{self as vrrp_instance, InstanceConfig, StateChange},
    vrrp::state::State as VrrpRunState,
};

/// How long start-up waits for real servers' MACs before attaching anyway
/// (unresolved servers get no traffic until their MAC is known).
const INITIAL_RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the neighbour table is polled while waiting at start-up.
const INITIAL_RESOLVE_POLL: Duration = Duration::from_millis(100);
/// How often the neighbour table is re-read while running (MAC changes,
/// late-resolving servers).
const NEIGHBOUR_REFRESH: Duration = Duration::from_secs(1);
/// Health events waiting for the agent; checkers wait when it is full.
const HEALTH_EVENT_QUEUE: usize = 1024;
/// How often flows past their state's timeout are deleted.
const FLOW_SWEEP: Duration = Duration::from_secs(1);
/// The expiry sweep may use at most one tenth of the agent's time.
const SWEEP_DUTY_DIVISOR: u32 = 10;
/// VRRP state changes waiting for the agent.
const VRRP_EVENT_QUEUE: usize = 64;
/// How long VRRP instances get at shutdown to send priority 0 and remove
/// their VIPs.
const VRRP_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

pub struct AgentOptions {
    /// The interface clients reach the VIPs on.
    pub iface: String,
    /// Two-armed: the interface towards the real servers.
    pub inside_iface: Option<String>,
    pub config_path: PathBuf,
    pub xdp_mode: XdpMode,
    pub pin_dir: PathBuf,
    pub log_level: log::LevelFilter,
    /// Connections the flow table holds (IPVS's connection table size).
    pub flow_table_size: u32,
}

/// Logs what the maps cost at their configured sizes (kernel memlock).
fn report_memory(dp: &Dataplane) {
    let maps = dp.map_memory();
    let total: u64 = maps.iter().map(|(_, _, bytes)| bytes).sum();
    if let Some((_, entries, bytes)) = maps
        .iter()
        .find(|(name, _, _)| name == lb_common::map_names::FLOW_TABLE)
    {
        info!(
            "flow table: {entries} connections, {:.1} MiB; all maps: {:.1} MiB",
            *bytes as f64 / MIB,
            total as f64 / MIB
        );
    }
    for (name, entries, bytes) in &maps {
        debug!("map {name}: {entries} entries, {bytes} bytes");
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// Health as the checkers last reported it.
#[derive(Debug, Clone, Copy)]
struct Health {
    healthy: bool,
    weight: Option<u32>,
    /// TCP_CHECK, HTTP_GET, MISC_CHECK, or "none".
    checker: &'static str,
}

/// What the agent owns while running.
struct Agent {
    plan: Plan,
    macs: MacTracker,
    health: HashMap<u32, Health>,
    /// real id -> index of its service in plan.services
    service_of: HashMap<u32, usize>,
    /// service id -> the state last written to the maps
    applied: HashMap<u32, ServiceState>,
    dp: Dataplane,
    alerts: Option<SmtpAlerts>,
    /// Connection timeouts, for the expiry sweep.
    timeouts: ConnTimeouts,
    /// VIPs some vrrp_instance governs: served only while it is MASTER.
    governed_vips: HashSet<Ipv4Addr>,
    /// VIPs of the instances that are MASTER here now.
    master_vips: HashSet<Ipv4Addr>,
    /// service id -> standby flag last written
    applied_standby: HashMap<u32, bool>,
}

pub async fn run(opts: AgentOptions) -> Result<()> {
    let config = config::load(&opts.config_path).map_err(|e| anyhow!("{e}"))?;
    let plan = plan::plan(&config).map_err(|e| {
        anyhow!(
            "{}: this version cannot serve it:\n  {}",
            opts.config_path.display(),
            e.join("\n  ")
        )
    })?;
    for note in config::not_acted_on(&config) {
        warn!("not acted on yet: {note}");
    }
    let alerts = SmtpAlerts::from_config(&config.global).context("[global] mail settings")?;
    preflight::check_privileges()?;
    preflight::check_bpffs(&opts.pin_dir)?;

    let nl = Netlink::connect()?;
    let link = nl
        .link(&opts.iface)
        .await?
        .ok_or_else(|| anyhow!("interface {} not found (see `ip link`)", opts.iface))?;
    let inside = match &opts.inside_iface {
        Some(name) => Some(
            nl.link(name)
                .await?
                .ok_or_else(|| anyhow!("interface {name} not found (see `ip link`)"))?,
        ),
        None => None,
    };
    // The real servers live behind the inside interface when there is one.
    let reals_link = inside.unwrap_or(link);
    let instances = resolve_vrrp_instances(&config, &nl, &opts.iface).await?;
    let governed_vips: HashSet<Ipv4Addr> = instances
        .iter()
        .flat_map(|i| i.vips.iter().map(|(a, _)| *a))
        .collect();
    warn_about_missing_vips(&nl, link.index, &opts.iface, &plan, &governed_vips).await;

    let mut macs = MacTracker::new(plan.reals().map(|r| (r.real_id, r.ip)));
    resolve_initial_macs(&nl, reals_link.index, &mut macs).await?;

    info!("loading the XDP program");
    let mut dp = Dataplane::load(&LoadOptions {
        log_level: opts.log_level,
        flow_table_size: opts.flow_table_size,
    })?;
    report_memory(&dp);
    dp.start_logger();
    dp.pin_maps(&opts.pin_dir)?;
    let tun_src = match config.global.tunnel_source {
        Some(configured) => configured,
        None => tunnel_source(&nl, &link, &plan, &governed_vips).await?,
    };
    let flags = crate::dataplane::plan::global_flags(&plan.services);
    let timeouts = config
        .timeouts
        .as_ref()
        .map_or_else(ConnTimeouts::default, |t| ConnTimeouts {
            tcp: t.tcp.0 as u32,
            tcpfin: t.tcpfin.0 as u32,
            udp: t.udp.0 as u32,
            ..ConnTimeouts::default()
        });
    dp.set_globals(&link, inside.as_ref(), tun_src, flags, timeouts)?;
    let ports: Vec<u32> = std::iter::once(link.index)
        .chain(inside.map(|l| l.index))
        .collect();
    dp.set_tx_ports(&ports)?;

    let (events_tx, mut events) = mpsc::channel(HEALTH_EVENT_QUEUE);
    let health = start_checkers(&config, &plan, &events_tx);
    drop(events_tx);
    let service_of = plan
        .services
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            s.reals
                .iter()
                .chain(s.sorry.iter())
                .map(move |r| (r.real_id, i))
        })
        .collect();
    let mut agent = Agent {
        plan,
        macs,
        health,
        service_of,
        applied: HashMap::new(),
        dp,
        alerts,
        timeouts,
        governed_vips,
        master_vips: HashSet::new(),
        applied_standby: HashMap::new(),
    };
    for real in agent.plan.reals() {
        agent
            .dp
            .write_real(real, agent.macs.mac(real.real_id), false)?;
    }
    for i in 0..agent.plan.services.len() {
        agent.apply_service(i)?;
    }
    // Attach last: the first packet already sees the whole configuration.
    for iface in std::iter::once(&opts.iface).chain(&opts.inside_iface) {
        agent.dp.attach(iface, opts.xdp_mode)?;
    }
    for svc in &agent.plan.services {
        info!(
            "serving {:?} {}:{} ({} real servers, {})",
            svc.protocol,
            svc.vip,
            svc.port,
            svc.reals.len(),
            svc.scheduler.name()
        );
    }
    info!("maps pinned in {}; ready", opts.pin_dir.display());

    let (vrrp_tx, mut vrrp_states) = mpsc::channel(VRRP_EVENT_QUEUE);
    let (stop_vrrp, stop_rx) = watch::channel(false);
    let mut vrrp_tasks = JoinSet::new();
    for cfg in instances {
        info!(
            "vrrp_instance {}: vrid {} priority {} on {} ({})",
            cfg.name, cfg.vrid, cfg.params.priority, cfg.iface, cfg.local_addr
        );
        vrrp_tasks.spawn(vrrp_instance::run(
            cfg,
            nl.clone(),
            vrrp_tx.clone(),
            stop_rx.clone(),
        ));
    }
    drop(vrrp_tx);

    let result = agent
        .serve(
            &nl,
            reals_link.index,
            &mut events,
            &mut vrrp_states,
            &mut vrrp_tasks,
        )
        .await;
    // Leave VRRP cleanly (priority 0, VIPs removed) before the data plane goes.
    let _ = stop_vrrp.send(true);
    let _ = tokio::time::timeout(VRRP_SHUTDOWN_TIMEOUT, async {
        while vrrp_tasks.join_next().await.is_some() {}
    })
    .await;
    agent.dp.detach().context("detaching the XDP program")?;
    drop(agent);
    info!(
        "stopped: XDP program detached from {}, pins removed",
        opts.iface
    );
    result
}

/// Spawns one checker task per real server that has a checker; returns the
/// initial health of every real server (alpha: checked ones start down).
fn start_checkers(
    config: &Config,
    plan: &Plan,
    events: &mpsc::Sender<HealthEvent>,
) -> HashMap<u32, Health> {
    let mut health = HashMap::new();
    for (svc, vs) in plan.services.iter().zip(&config.virtual_server) {
        let vs = vs.get_ref();
        for real in svc.reals.iter().chain(svc.sorry.iter()) {
            let checker = real
                .rs_index
                .and_then(|i| health::checker_for(vs, vs.real_server[i].get_ref()));
            let (healthy, kind) = match checker {
                Some((checker, timing)) => {
                    let kind = checker.kind();
                    info!(
                        "{} of {}: {} every {:?}",
                        label(real),
                        service_label(svc),
                        checker.kind(),
                        timing.delay_loop
                    );
                    tokio::spawn(health::runner::run(
                        real.real_id,
                        checker,
                        timing,
                        vs.alpha,
                        events.clone(),
                    ));
                    (!vs.alpha, kind)
                }
                // keepalived: a real server without checker is always up.
                None => (true, "none"),
            };
            health.insert(
                real.real_id,
                Health {
                    healthy,
                    weight: None,
                    checker: kind,
                },
            );
        }
    }
    health
}

impl Agent {
    fn status(&self, real_id: u32) -> RealStatus {
        let h = self.health.get(&real_id).copied().unwrap_or(Health {
            healthy: true,
            weight: None,
            checker: "none",
        });
        RealStatus {
            mac_known: self.macs.mac(real_id).is_some(),
            healthy: h.healthy,
            weight_override: h.weight,
        }
    }

    /// Writes service `index`'s new state in an order that never lets a
    /// packet meet a half-done change: servers that join are activated
    /// before the set flips to include them; servers that leave are
    /// deactivated (their flows rescheduled) only after it flipped.
    fn apply_service(&mut self, index: usize) -> Result<()> {
        let svc = self.plan.services[index].clone();
        let new = service_state(&svc, |id| self.status(id));
        let old = self
            .applied
            .get(&svc.service_id)
            .cloned()
            .unwrap_or_default();
        let reals: Vec<&PlannedReal> = svc.reals.iter().chain(svc.sorry.iter()).collect();
        for real in reals
            .iter()
            .filter(|r| new.is_active(r.real_id) && !old.is_active(r.real_id))
        {
            self.dp
                .write_real(real, self.macs.mac(real.real_id), true)?;
        }
        let standby = self.governed_vips.contains(&svc.vip) && !self.master_vips.contains(&svc.vip);
        if new.backends != old.backends
            || !self.applied.contains_key(&svc.service_id)
            || self.applied_standby.get(&svc.service_id) != Some(&standby)
        {
            self.dp.write_service(&svc, &new.backends, standby)?;
            self.applied_standby.insert(svc.service_id, standby);
        }
        for real in reals
            .iter()
            .filter(|r| !new.is_active(r.real_id) && old.is_active(r.real_id))
        {
            self.dp
                .write_real(real, self.macs.mac(real.real_id), false)?;
        }
        if new.quorum_lost != old.quorum_lost && self.applied.contains_key(&svc.service_id) {
            if new.quorum_lost {
                warn!(
                    "{}: quorum {} lost{}",
                    service_label(&svc),
                    svc.quorum,
                    if svc.sorry.is_some() {
                        ": all traffic to the sorry server"
                    } else {
                        ""
                    }
                );
            } else {
                info!("{}: quorum {} regained", service_label(&svc), svc.quorum);
            }
        }
        self.applied.insert(svc.service_id, new);
        Ok(())
    }

    /// Runs until SIGINT/SIGTERM.
    async fn serve(
        &mut self,
        nl: &Netlink,
        ifindex: u32,
        events: &mut mpsc::Receiver<HealthEvent>,
        vrrp_states: &mut mpsc::Receiver<StateChange>,
        vrrp_tasks: &mut JoinSet<Result<()>>,
    ) -> Result<()> {
        let mut sigterm =
            signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut refresh = tokio::time::interval(NEIGHBOUR_REFRESH);
        let mut sweep = tokio::time::interval(FLOW_SWEEP);
        // A sweep of a very large table may take a good part of a second:
        // the next one waits until the agent spent at most 1/SWEEP_DUTY_DIVISOR
        // of its time sweeping.
        let mut next_sweep = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => { info!("SIGINT: stopping"); return Ok(()) }
                _ = sigterm.recv() => { info!("SIGTERM: stopping"); return Ok(()) }
                Some(event) = events.recv() => {
                    if let Err(e) = self.on_health_event(event) {
                        warn!("applying a health change failed: {e:#}");
                    }
                }
                Some(change) = vrrp_states.recv() => {
                    if let Err(e) = self.on_vrrp_change(change) {
                        warn!("applying a VRRP state change failed: {e:#}");
                    }
                }
                Some(done) = vrrp_tasks.join_next() => {
                    // An instance only ends by itself on a start-up error.
                    return match done {
                        Ok(Err(e)) => Err(e),
                        Ok(Ok(())) => Ok(()),
                        Err(e) => Err(anyhow!("a VRRP instance task failed: {e}")),
                    };
                }
                _ = sweep.tick(), if tokio::time::Instant::now() >= next_sweep => {
                    let started = tokio::time::Instant::now();
                    match self.dp.sweep_expired(self.timeouts) {
                        Ok(0) => {}
                        Ok(n) => debug!("expired {n} flows"),
                        Err(e) => warn!("flow expiry sweep failed: {e:#}"),
                    }
                    next_sweep = started + started.elapsed() * SWEEP_DUTY_DIVISOR;
                }
                _ = refresh.tick() => {
                    if let Err(e) = self.refresh_macs(nl, ifindex).await {
                        warn!("neighbour refresh failed: {e:#}");
                    }
                }
            }
        }
    }

    /// MASTER: serve the instance's VIPs; any other state: pass them.
    fn on_vrrp_change(&mut self, change: StateChange) -> Result<()> {
        let master = change.state == VrrpRunState::Master;
        for vip in &change.vips {
            if master {
                self.master_vips.insert(*vip);
            } else {
                self.master_vips.remove(vip);
            }
        }
        if let Some(alerts) = &self.alerts {
            alerts.vrrp_alert(&change.instance, change.state.name());
        }
        let what = if master {
            "balancing"
        } else {
            "standing by, passing its packets"
        };
        info!(
            "VIPs {:?}: {what} (vrrp_instance {} is {})",
            change.vips,
            change.instance,
            change.state.name()
        );
        let affected: Vec<usize> = (0..self.plan.services.len())
            .filter(|&i| change.vips.contains(&self.plan.services[i].vip))
            .collect();
        for index in affected {
            self.apply_service(index)?;
        }
        Ok(())
    }

    fn on_health_event(&mut self, event: HealthEvent) -> Result<()> {
        let Some(&index) = self.service_of.get(&event.real_id) else {
            return Ok(());
        };
        let svc = &self.plan.services[index];
        let Some(real) = svc.reals.iter().find(|r| r.real_id == event.real_id) else {
            return Ok(());
        };
        let (real_label, svc_label) = (label(real), service_label(svc));
        let h = self.health.entry(event.real_id).or_insert(Health {
            healthy: true,
            weight: None,
            checker: "none",
        });
        let checker = h.checker;
        match event.transition {
            Some(Transition::Down) => {
                h.healthy = false;
                let action = if svc.inhibit_on_failure {
                    "setting its weight to 0"
                } else {
                    "removing it"
                };
                warn!(
                    "{real_label} of {svc_label}: DOWN ({}); {action}",
                    event.reason
                );
            }
            Some(Transition::Up) => {
                h.healthy = true;
                info!(
                    "{real_label} of {svc_label}: UP ({}); adding it back",
                    event.reason
                );
            }
            None => {}
        }
        if let (Some(alerts), Some(transition)) = (&self.alerts, event.transition) {
            alerts.realserver_alert(
                &keepalived_name(real.ip, svc.protocol, real.port),
                &keepalived_name(svc.vip, svc.protocol, svc.port),
                transition == Transition::Up,
                checker,
                &event.reason,
            );
        }
        if let Some(weight) = event.weight {
            h.weight = Some(weight);
            info!("{real_label} of {svc_label}: weight {weight} (misc_dynamic)");
        }
        self.apply_service(index)
    }

    /// Re-reads the neighbour table; rewrites reals whose MAC changed and
    /// the state of their services (a newly resolved server starts getting
    /// traffic). Unresolved servers are probed again.
    async fn refresh_macs(&mut self, nl: &Netlink, ifindex: u32) -> Result<()> {
        for ip in self.macs.unresolved() {
            let _ = netlink::probe(ip);
        }
        let changed = self.macs.update(&nl.ipv4_neighbours(ifindex).await?);
        if changed.is_empty() {
            return Ok(());
        }
        let reals: Vec<PlannedReal> = self
            .plan
            .reals()
            .filter(|r| changed.contains(&r.real_id))
            .cloned()
            .collect();
        let mut services: Vec<usize> = Vec::new();
        for real in &reals {
            let mac = self.macs.mac(real.real_id);
            info!(
                "real server {}: MAC {}",
                real.ip,
                fmt_mac(mac.unwrap_or_default())
            );
            let index = self.service_of[&real.real_id];
            let active = self
                .applied
                .get(&self.plan.services[index].service_id)
                .is_some_and(|s| s.is_active(real.real_id));
            self.dp.write_real(real, mac, active)?;
            if !services.contains(&index) {
                services.push(index);
            }
        }
        for index in services {
            self.apply_service(index)?;
        }
        Ok(())
    }
}

/// The outer source of TUN packets: the interface's own address (not a VIP).
/// Only services with lb_kind TUN need one.
async fn tunnel_source(
    nl: &Netlink,
    link: &crate::netlink::LinkInfo,
    plan: &Plan,
    governed: &HashSet<Ipv4Addr>,
) -> Result<Ipv4Addr> {
    let vips: HashSet<Ipv4Addr> = plan.services.iter().map(|s| s.vip).collect();
    let own = nl
        .ipv4_addresses(link.index)
        .await?
        .into_iter()
        .find(|a| !vips.contains(a) && !governed.contains(a));
    let needs_tun = plan
        .services
        .iter()
        .any(|s| s.forward == lb_common::ForwardKind::Tun);
    match own {
        Some(a) => Ok(a),
        None if needs_tun => Err(anyhow!(
            "lb_kind TUN needs an IPv4 address of the interface's own (not a VIP) as the tunnel source"
        )),
        None => Ok(Ipv4Addr::UNSPECIFIED),
    }
}

/// Each vrrp_instance with its interface and our address on it.
async fn resolve_vrrp_instances(
    config: &Config,
    nl: &Netlink,
    default_iface: &str,
) -> Result<Vec<InstanceConfig>> {
    let mut out = Vec::new();
    for vi in &config.vrrp_instance {
        let vi = vi.get_ref();
        let iface = vi.interface.as_deref().unwrap_or(default_iface);
        let link = nl.link(iface).await?.ok_or_else(|| {
            anyhow!(
                "vrrp_instance {}: interface {iface} not found (see `ip link`)",
                vi.name
            )
        })?;
        let vips: Vec<IpAddr> = vi.virtual_ipaddress.iter().map(|v| v.addr).collect();
        let local = nl
            .ipv4_addresses(link.index)
            .await?
            .into_iter()
            .find(|a| !vips.contains(&IpAddr::V4(*a)))
            .ok_or_else(|| {
                anyhow!(
                    "vrrp_instance {}: {iface} has no IPv4 address of its own to send adverts from",
                    vi.name
                )
            })?;
        out.push(InstanceConfig::from_config(vi, iface, link, local)?);
    }
    Ok(out)
}

fn label(real: &PlannedReal) -> String {
    match real.rs_index {
        Some(_) => format!("real server {}:{}", real.ip, real.port),
        None => format!("sorry server {}:{}", real.ip, real.port),
    }
}

/// keepalived's way of naming a server in mails: [ip]:tcp:port.
fn keepalived_name(ip: Ipv4Addr, protocol: Protocol, port: u16) -> String {
    format!(
        "[{ip}]:{}:{port}",
        protocol.ipvsadm_name().to_ascii_lowercase()
    )
}

fn service_label(svc: &PlannedService) -> String {
    format!("virtual server {}:{}", svc.vip, svc.port)
}

async fn resolve_initial_macs(nl: &Netlink, ifindex: u32, macs: &mut MacTracker) -> Result<()> {
    let deadline = Instant::now() + INITIAL_RESOLVE_TIMEOUT;
    let mut probe_failed = HashSet::new();
    loop {
        macs.update(&nl.ipv4_neighbours(ifindex).await?);
        let missing = macs.unresolved();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            for ip in missing {
                warn!(
                    "real server {ip}: no MAC address yet (not answering ARP on this link?); \
                     it gets no traffic until it resolves"
                );
            }
            return Ok(());
        }
        for ip in &missing {
            if let Err(e) = netlink::probe(*ip)
                && probe_failed.insert(*ip)
            {
                warn!("real server {ip}: cannot probe: {e}");
            }
        }
        tokio::time::sleep(INITIAL_RESOLVE_POLL).await;
    }
}

/// In DR the balancer must own the VIP on the link (answer ARP for it). For
/// a VIP no vrrp_instance manages that is the operator's job: say so when it
/// is missing.
async fn warn_about_missing_vips(
    nl: &Netlink,
    ifindex: u32,
    iface: &str,
    plan: &Plan,
    governed: &HashSet<Ipv4Addr>,
) {
    let Ok(addrs) = nl.ipv4_addresses(ifindex).await else {
        return;
    };
    let mut vips: Vec<Ipv4Addr> = plan.services.iter().map(|s| s.vip).collect();
    vips.dedup();
    for vip in vips
        .into_iter()
        .filter(|v| !addrs.contains(v) && !governed.contains(v))
    {
        warn!(
            "VIP {vip} is not an address of {iface}: nobody answers ARP for it (ip addr add {vip}/32 dev {iface})"
        );
    }
}

pub fn fmt_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
