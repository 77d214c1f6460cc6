//! The running agent: config -> maps, attach, then react to health-check
//! transitions and neighbour (MAC) changes until SIGINT/SIGTERM, when it
//! detaches and removes the pins.

use std::{collections::HashMap, net::IpAddr, path::PathBuf, time::Duration};

use anyhow::{Context as _, Result, anyhow};
use aya::programs::XdpMode;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{mpsc, watch},
};
use tracing::{debug, info, warn};

mod bgp_link;
mod checkers;
mod discovery;
mod handover;
mod publish;
mod reload;
mod sync_link;
mod vip_gate;
mod vrrp_set;

use bgp_link::BgpLink;
use checkers::{Checkers, Health, label, service_label};
use discovery::{
    resolve_initial_macs, resolve_vrrp_instances, tunnel_source_of, warn_about_missing_vips,
};
use handover::Handover;
use sync_link::SyncLink;
use vip_gate::VipGate;
use vrrp_set::VrrpSet;

use crate::{
    bgp::announce::ServiceReadiness,
    config::{self, Config},
    dataplane::{AppliedService, ConnTimeouts, Dataplane, preflight},
    health::{runner::HealthEvent, state::Transition},
    neighbours::MacTracker,
    netlink::{self, LinkInfo, Netlink},
    notify::SmtpAlerts,
    planning::{
        backends::{RealStatus, service_state},
        plan::{self, Plan, PlannedReal},
    },
    stats::metrics,
    status::{AgentStatus, Reloads},
    vrrp::instance::StateChange,
    vrrp::state::State as VrrpRunState,
};

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
    /// Where to serve Prometheus metrics (GET /metrics), if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// At SIGTERM/SIGINT leave the program attached and the maps pinned
    /// for the next agent (hitless restart).
    pub keep_dataplane: bool,
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

/// What the agent owns while running.
struct Agent {
    config_path: PathBuf,
    pin_dir: PathBuf,
    /// The interface VRRP instances default to.
    iface: String,
    link: LinkInfo,
    inside: Option<LinkInfo>,
    nl: Netlink,
    plan: Plan,
    macs: MacTracker,
    health: HashMap<u32, Health>,
    checkers: Checkers,
    /// real id -> index of its service in plan.services
    service_of: HashMap<u32, usize>,
    /// service id -> what the maps hold for it (backend set, active
    /// servers, standby)
    applied: HashMap<u32, AppliedService>,
    dp: Dataplane,
    alerts: Option<SmtpAlerts>,
    /// Connection timeouts, for the expiry sweep.
    timeouts: ConnTimeouts,
    /// Which VIPs are balanced now (VRRP MASTER) and which passed.
    vips: VipGate,
    /// Reloads done and refused.
    reloads: Reloads,
    /// vrrp_instance name -> (state, transitions) as last reported.
    vrrp_states: HashMap<String, (VrrpRunState, u64)>,
    /// Serving (status: ready): set once privileges are dropped.
    ready: bool,
    /// Connection sync, when lb.toml asks for it.
    sync: Option<SyncLink>,
    /// GLOBAL_FLAG_SYNC while it runs (the data plane then reports).
    sync_flag: u32,
    /// Scale-out over BGP, when lb.toml has [bgp].
    bgp: Option<BgpLink>,
    /// The status last published, and where it goes.
    published: Option<AgentStatus>,
    status_tx: watch::Sender<AgentStatus>,
}

/// The connection timeouts of a config (ipvsadm's defaults where unset).
fn conn_timeouts(config: &Config) -> ConnTimeouts {
    config
        .timeouts
        .as_ref()
        .map_or_else(ConnTimeouts::default, |t| ConnTimeouts {
            tcp: t.tcp.0 as u32,
            tcpfin: t.tcpfin.0 as u32,
            udp: t.udp.0 as u32,
            ..ConnTimeouts::default()
        })
}

pub async fn run(opts: AgentOptions) -> Result<()> {
    let config = config::load(&opts.config_path).map_err(|e| anyhow!("{e}"))?;
    let fresh_plan = plan::plan(&config);
    for note in config::not_acted_on(&config) {
        warn!("not acted on yet: {note}");
    }
    let alerts = SmtpAlerts::from_config(&config.global).context("[global] mail settings")?;
    preflight::check_privileges()?;
    preflight::check_bpffs(&opts.pin_dir)?;
    if config.bgp.is_some() {
        crate::bgp::supervisor::check_installed()?;
    }

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
    let mut instances = resolve_vrrp_instances(&config, &nl, &opts.iface).await?;
    let sync_config = config.global.lvs_sync_daemon.as_ref().map(|s| s.get_ref());
    sync_link::hold_preemption(&mut instances, sync_config);
    let governed_vips = vip_gate::governed_by(&instances);

    let (mut dp, plan, resumed) =
        handover::load_or_adopt(&opts, fresh_plan, &governed_vips, &mut instances)?;
    // Behind ECMP the routers send the VIP's packets to us by BGP, not ARP.
    if config.bgp.is_none() {
        warn_about_missing_vips(&nl, link.index, &opts.iface, &plan, &governed_vips).await;
    }

    let mut macs = MacTracker::new(plan.reals().map(|r| (r.real_id, r.ip)));
    // The real servers live behind the inside interface when there is one.
    resolve_initial_macs(&nl, inside.unwrap_or(link).index, &mut macs).await?;
    report_memory(&dp);
    dp.start_logger();
    dp.pin_maps(&opts.pin_dir)?;
    let tun_src = tunnel_source_of(&config, &nl, &link, &plan, &governed_vips).await?;
    let timeouts = conn_timeouts(&config);
    let sync = match sync_config {
        Some(sd) => Some(SyncLink::start(sd, &instances, &nl, &mut dp).await?),
        None => None,
    };
    let sync_flag = if sync.is_some() {
        lb_common::GLOBAL_FLAG_SYNC
    } else {
        0
    };
    dp.set_globals(
        &link,
        inside.as_ref(),
        tun_src,
        plan::global_flags(&plan.services) | sync_flag,
        timeouts,
    )?;
    let ports: Vec<u32> = std::iter::once(link.index)
        .chain(inside.map(|l| l.index))
        .collect();
    dp.set_tx_ports(&ports)?;

    let (events_tx, mut events) = mpsc::channel(HEALTH_EVENT_QUEUE);
    let mut checkers = Checkers::new(events_tx);
    let mut health = HashMap::new();
    checkers.sync(&config, &plan, &mut health);
    let (status_tx, status_rx) = watch::channel(AgentStatus::default());
    let mut agent = Agent {
        config_path: opts.config_path.clone(),
        pin_dir: opts.pin_dir.clone(),
        iface: opts.iface.clone(),
        link,
        inside,
        nl: nl.clone(),
        service_of: service_index(&plan),
        plan,
        macs,
        health,
        checkers,
        applied: HashMap::new(),
        dp,
        alerts,
        timeouts,
        vips: VipGate::new(&instances, resumed),
        reloads: Reloads::default(),
        vrrp_states: HashMap::new(),
        published: None,
        status_tx,
        ready: false,
        sync,
        sync_flag,
        bgp: None,
    };
    agent.go_live(&opts)?;
    let (vrrp_tx, mut vrrp_states) = mpsc::channel(VRRP_EVENT_QUEUE);
    let sync_hold = agent.sync.as_ref().map(|l| l.hold.subscribe());
    let mut vrrp = VrrpSet::new(nl, vrrp_tx, sync_hold);
    vrrp.sync(instances).await;
    agent.publish(&vrrp);
    if let Some(addr) = opts.metrics_listen {
        let listener = metrics::bind(addr).await?;
        info!("metrics on http://{addr}/metrics");
        tokio::spawn(metrics::serve(listener, opts.pin_dir.clone(), status_rx));
    }
    // Loaded, attached, pinned, listening: the rest needs far less.
    let probe_fd = agent.dp.map_fd(lb_common::map_names::REAL_CONNS)?;
    // BIRD, started after the drop (and again if it exits), binds BGP's port 179.
    let for_children = if config.bgp.is_some() {
        vec![caps::Capability::CAP_NET_BIND_SERVICE]
    } else {
        Vec::new()
    };
    crate::privileges::drop_unneeded(&for_children, move || {
        // SAFETY: the map (and its fd) lives as long as the agent.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(probe_fd) };
        crate::dataplane::bpf_sys::lookup_all::<u32, lb_common::RealConns>(fd).is_ok()
    })?;
    // After go_live (nothing is announced before the data plane serves)
    // and after the drop: BIRD starts with the capabilities kept for it.
    if let Some(bgp) = &config.bgp {
        let vips: std::collections::HashSet<IpAddr> = agent
            .plan
            .services
            .iter()
            .map(|s| s.vip)
            .chain(governed_vips.iter().copied())
            .collect();
        agent.bgp =
            Some(BgpLink::start(bgp.get_ref(), &agent.nl, &link, &vips, &opts.pin_dir).await?);
        agent.announce().await;
    }
    agent.ready = true;
    agent.publish(&vrrp);

    let result = agent.serve(&mut events, &mut vrrp_states, &mut vrrp).await;
    // Nobody applies state changes any more: instances leaving must not
    // wait for an answer.
    drop(vrrp_states);
    agent.leave(vrrp, &opts).await?;
    result
}

/// Connection sync's next activity (never, without sync).
async fn sync_activity(link: &mut Option<SyncLink>) -> sync_link::Activity {
    match link {
        Some(link) => link.next().await,
        None => std::future::pending().await,
    }
}

/// real id -> index of its service in plan.services.
fn service_index(plan: &Plan) -> HashMap<u32, usize> {
    plan.services
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            s.reals
                .iter()
                .chain(s.sorry.iter())
                .map(move |r| (r.real_id, i))
        })
        .collect()
}

impl Agent {
    /// Writes the configuration into the maps, then attaches (or, adopting,
    /// swaps the program into the previous agent's links): the first packet
    /// already sees the whole configuration.
    fn go_live(&mut self, opts: &AgentOptions) -> Result<()> {
        let adopting = self.dp.adopted();
        if !adopting {
            for real in self.plan.reals() {
                self.dp
                    .write_real(real, self.macs.mac(real.real_id), false)?;
            }
        }
        // Adopting, the maps are live: every server and service is
        // rewritten in place, servers activated before any set names them
        // (no flow of a server that stays is ever sent elsewhere).
        for i in 0..self.plan.services.len() {
            self.apply_service(i, adopting)?;
        }
        for iface in std::iter::once(&opts.iface).chain(&opts.inside_iface) {
            if adopting {
                self.dp.adopt_link(iface)?;
            } else {
                self.dp.attach(iface, opts.xdp_mode)?;
            }
        }
        self.dp.adoption_complete();
        // The balancer's own clients (curl on the director, as the seed
        // types it): balanced at the socket, as IPVS's LOCAL_OUT does. The
        // XDP path serves without them.
        if let Err(e) = self.dp.attach_local() {
            warn!("local clients are not balanced (connect() to a VIP from this host): {e:#}");
        }
        // Adopted, or stale (its pins were gone): the handover is spent.
        Handover::done(&opts.pin_dir)?;
        for svc in &self.plan.services {
            info!(
                "serving {:?} {} ({} real servers, {})",
                svc.protocol,
                svc.endpoint(),
                svc.reals.len(),
                svc.scheduler.name()
            );
        }
        info!("maps pinned in {}; ready", opts.pin_dir.display());
        Ok(())
    }

    /// At SIGTERM/SIGINT. `--keep-dataplane`: VRRP goes silent without
    /// giving up (no priority 0, VIPs stay), program and maps stay, and a
    /// handover tells the next agent the ids. Otherwise VRRP leaves cleanly
    /// (priority 0, VIPs removed) before the program is detached and the
    /// pins go.
    async fn leave(mut self, mut vrrp: VrrpSet, opts: &AgentOptions) -> Result<()> {
        if opts.keep_dataplane {
            vrrp.abandon();
            self.dp
                .keep_running_after_exit()
                .context("keeping the data plane for the next agent")?;
            Handover::of(&self.plan, opts.flow_table_size, self.vips.master_vips())
                .write(&opts.pin_dir)?;
            drop(self);
            info!(
                "stopped (--keep-dataplane): the XDP program keeps forwarding on {}; the next agent adopts it",
                opts.iface
            );
            return Ok(());
        }
        vrrp.stop_all().await;
        self.dp.detach().context("detaching the XDP program")?;
        drop(self);
        info!(
            "stopped: XDP program detached from {}, pins removed",
            opts.iface
        );
        Ok(())
    }

    fn real_status(&self, real_id: u32) -> RealStatus {
        let h = self
            .health
            .get(&real_id)
            .copied()
            .unwrap_or(Health::UNCHECKED);
        RealStatus {
            mac_known: self.macs.mac(real_id).is_some(),
            healthy: h.healthy,
            weight_override: h.weight,
        }
    }

    /// The interface the real servers are reached on.
    fn reals_ifindex(&self) -> u32 {
        self.inside.unwrap_or(self.link).index
    }

    /// Writes service `index`'s new state (Dataplane::apply_service keeps
    /// the order that never lets a packet meet a half-done change).
    /// `settings_changed`: a reload changed the service itself (scheduler,
    /// mode, persistence, weights): rewrite it even if its set did not change.
    fn apply_service(&mut self, index: usize, settings_changed: bool) -> Result<()> {
        let svc = self.plan.services[index].clone();
        let new = AppliedService {
            state: service_state(&svc, |id| self.real_status(id)),
            standby: self.vips.standby(svc.vip),
        };
        let old = self.applied.get(&svc.service_id);
        let macs = &self.macs;
        self.dp
            .apply_service(&svc, old, &new, settings_changed, |id| macs.mac(id))?;
        if let Some(old) = old
            && new.state.quorum_lost != old.state.quorum_lost
        {
            let new = &new.state;
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

    /// Runs until SIGINT/SIGTERM; SIGHUP reloads the config.
    async fn serve(
        &mut self,
        events: &mut mpsc::Receiver<HealthEvent>,
        vrrp_states: &mut mpsc::Receiver<StateChange>,
        vrrp: &mut VrrpSet,
    ) -> Result<()> {
        let mut sigterm =
            signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        // `lb-userspace drain` / `drain --cancel`.
        let mut sigusr1 =
            signal(SignalKind::user_defined1()).context("installing the SIGUSR1 handler")?;
        let mut sigusr2 =
            signal(SignalKind::user_defined2()).context("installing the SIGUSR2 handler")?;
        let mut bgp_refresh = tokio::time::interval(bgp_link::SESSION_REFRESH);
        let mut refresh = tokio::time::interval(NEIGHBOUR_REFRESH);
        let mut sweep = tokio::time::interval(FLOW_SWEEP);
        // A sweep of a very large table may take a good part of a second:
        // the next one waits until the agent spent at most 1/SWEEP_DUTY_DIVISOR
        // of its time sweeping.
        let mut next_sweep = tokio::time::Instant::now();
        let mut full_pass = tokio::time::interval(sync_link::FULL_PASS_PERIOD);
        let mut catch_up = tokio::time::interval(sync_link::CATCHUP_POLL);
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => { info!("SIGINT: stopping"); return Ok(()) }
                _ = sigterm.recv() => { info!("SIGTERM: stopping"); return Ok(()) }
                _ = sighup.recv() => {
                    info!("SIGHUP: reloading {}", self.config_path.display());
                    match self.reload(vrrp).await {
                        Ok(summary) => {
                            info!("reloaded {}: {summary}", self.config_path.display());
                            self.reloads.ok += 1;
                            self.reloads.last = Some(format!("ok: {summary}"));
                        }
                        Err(e) => {
                            warn!("reload refused, still running the previous configuration: {e:#}");
                            self.reloads.failed += 1;
                            self.reloads.last = Some(format!("refused: {e:#}"));
                        }
                    }
                }
                _ = sigusr1.recv() => match &mut self.bgp {
                    Some(bgp) => bgp.drain(),
                    None => warn!("SIGUSR1 (drain): no [bgp] in the config, nothing to withdraw"),
                },
                _ = sigusr2.recv() => {
                    if let Some(bgp) = &mut self.bgp {
                        bgp.undrain();
                    }
                }
                _ = bgp_refresh.tick(), if self.bgp.is_some() => {
                    if let Some(bgp) = &mut self.bgp {
                        if bgp.draining() {
                            bgp.note_forwarded(self.dp.forwarded_packets().unwrap_or(0));
                        }
                        bgp.refresh_sessions().await;
                    }
                }
                Some(event) = events.recv() => {
                    if let Err(e) = self.on_health_event(event) {
                        warn!("applying a health change failed: {e:#}");
                    }
                }
                Some(mut change) = vrrp_states.recv() => {
                    let applied = change.applied.take();
                    if let Err(e) = self.on_vrrp_change(change) {
                        warn!("applying a VRRP state change failed: {e:#}");
                    }
                    if let Some(link) = &mut self.sync {
                        link.update_role(&self.vrrp_states);
                    }
                    // Applied (or failed): the instance may move the VIPs now.
                    if let Some(applied) = applied {
                        let _ = applied.send(());
                    }
                }
                e = vrrp.failed() => return Err(e),
                activity = sync_activity(&mut self.sync) => {
                    if let Some(link) = &mut self.sync {
                        match activity {
                            sync_link::Activity::Reported => {
                                let records = link.take_events(&self.plan, &self.timeouts.as_globals());
                                link.daemon.send(records);
                            }
                            sync_link::Activity::Heard(heard) => {
                                if let Err(e) = sync_link::apply(link, &mut self.dp, &self.plan, heard) {
                                    warn!("applying synced connections failed: {e:#}");
                                }
                            }
                        }
                    }
                }
                _ = full_pass.tick(), if self.sync.as_ref().is_some_and(|l| l.role.sends()) => {
                    if let Some(link) = &self.sync
                        && let Err(e) = sync_link::full_pass(link, &self.dp, &self.plan, &self.timeouts.as_globals())
                    {
                        warn!("announcing the connection table failed: {e:#}");
                    }
                }
                _ = catch_up.tick(), if self.sync.as_ref().is_some_and(SyncLink::catching_up) => {
                    if let Some(link) = &mut self.sync {
                        link.poll_catch_up(std::time::Instant::now());
                    }
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
                    if let Err(e) = self.refresh_macs().await {
                        warn!("neighbour refresh failed: {e:#}");
                    }
                }
            }
            self.announce().await;
            self.publish(vrrp);
        }
    }

    /// BGP: announce the VIPs that can be served now, withdraw the others.
    async fn announce(&mut self) {
        let Some(bgp) = &mut self.bgp else {
            return;
        };
        let services: Vec<ServiceReadiness> = self
            .plan
            .services
            .iter()
            .map(|svc| {
                let applied = self.applied.get(&svc.service_id);
                ServiceReadiness {
                    vip: svc.vip,
                    quorum_holds: applied.is_some_and(|a| !a.state.quorum_lost),
                    standby: applied.is_none_or(|a| a.standby),
                }
            })
            .collect();
        bgp.set_catching_up(self.sync.as_ref().is_some_and(SyncLink::catching_up));
        bgp.update(&services).await;
    }

    /// Connections ESTABLISHED through this balancer (ActiveConn, summed).
    fn active_conns(&self) -> u64 {
        self.plan
            .reals()
            .map(|r| self.dp.real_conns(r.real_id).0.max(0) as u64)
            .sum()
    }

    /// MASTER: serve the instance's VIPs; any other state: pass them.
    fn on_vrrp_change(&mut self, change: StateChange) -> Result<()> {
        let master = change.state == VrrpRunState::Master;
        let entry = self
            .vrrp_states
            .entry(change.instance.clone())
            .or_insert((change.state, 0));
        *entry = (change.state, entry.1 + 1);
        self.vips.set_master(&change.vips, master);
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
            .filter(|&i| change.vips.iter().any(|v| *v == self.plan.services[i].vip))
            .collect();
        for index in affected {
            self.apply_service(index, false)?;
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
        let h = self
            .health
            .entry(event.real_id)
            .or_insert(Health::UNCHECKED);
        let checker = h.checker;
        if event.transition.is_some() {
            h.transitions += 1;
        }
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
                &crate::notify::keepalived_name(real.ip, svc.protocol, real.port),
                &crate::notify::keepalived_name(svc.vip, svc.protocol, svc.port),
                transition == Transition::Up,
                checker,
                &event.reason,
            );
        }
        if let Some(weight) = event.weight {
            h.weight = Some(weight);
            info!("{real_label} of {svc_label}: weight {weight} (misc_dynamic)");
        }
        self.apply_service(index, false)
    }

    /// Re-reads the neighbour table; rewrites reals whose MAC changed and
    /// the state of their services (a newly resolved server starts getting
    /// traffic). Unresolved servers are probed again.
    async fn refresh_macs(&mut self) -> Result<()> {
        for ip in self.macs.unresolved() {
            let _ = netlink::probe(ip);
        }
        let neighbours = self.nl.neighbours(self.reals_ifindex()).await?;
        let changed = self.macs.update(&neighbours);
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
                crate::neighbours::fmt_mac(mac.unwrap_or_default())
            );
            let index = self.service_of[&real.real_id];
            let active = self
                .applied
                .get(&self.plan.services[index].service_id)
                .is_some_and(|s| s.state.is_active(real.real_id));
            self.dp.write_real(real, mac, active)?;
            if !services.contains(&index) {
                services.push(index);
            }
        }
        for index in services {
            self.apply_service(index, false)?;
        }
        Ok(())
    }
}
