//! The running agent: config -> maps, attach, keep real-server MACs fresh,
//! and on SIGINT/SIGTERM detach and remove the pins.

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};
use aya::programs::XdpMode;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::{
    config,
    dataplane::{
        Dataplane, LoadOptions,
        plan::{self, Plan},
        preflight,
    },
    neighbours::MacTracker,
    netlink::{self, Netlink},
};

/// How long start-up waits for real servers' MACs before attaching anyway
/// (unresolved servers get no traffic until their MAC is known).
const INITIAL_RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the neighbour table is polled while waiting at start-up.
const INITIAL_RESOLVE_POLL: Duration = Duration::from_millis(100);
/// How often the neighbour table is re-read while running (MAC changes,
/// late-resolving servers).
const NEIGHBOUR_REFRESH: Duration = Duration::from_secs(1);

pub struct AgentOptions {
    pub iface: String,
    pub config_path: PathBuf,
    pub xdp_mode: XdpMode,
    pub pin_dir: PathBuf,
    pub log_level: log::LevelFilter,
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
    preflight::check_privileges()?;
    preflight::check_bpffs(&opts.pin_dir)?;

    let nl = Netlink::connect()?;
    let link = nl
        .link(&opts.iface)
        .await?
        .ok_or_else(|| anyhow!("interface {} not found (see `ip link`)", opts.iface))?;
    warn_about_missing_vips(&nl, link.index, &opts.iface, &plan).await;

    let mut macs = MacTracker::new(plan.reals().map(|r| (r.real_id, r.ip)));
    resolve_initial_macs(&nl, link.index, &mut macs).await?;

    info!("loading the XDP program");
    let mut dp = Dataplane::load(&LoadOptions {
        log_level: opts.log_level,
        ..LoadOptions::default()
    })?;
    dp.start_logger();
    dp.pin_maps(&opts.pin_dir)?;
    dp.set_iface_mac(link.mac)?;
    for real in plan.reals() {
        dp.write_real(real, macs.mac(real.real_id))?;
    }
    for svc in &plan.services {
        dp.write_service(svc, |id| macs.mac(id).is_some())?;
    }
    // Attach last: the first packet already sees the whole configuration.
    dp.attach(&opts.iface, opts.xdp_mode)?;
    for svc in &plan.services {
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

    let result = serve(&nl, link.index, &plan, &mut macs, &mut dp).await;
    dp.detach().context("detaching the XDP program")?;
    drop(dp);
    info!(
        "stopped: XDP program detached from {}, pins removed",
        opts.iface
    );
    result
}

/// Runs until SIGINT/SIGTERM, keeping MACs fresh.
async fn serve(
    nl: &Netlink,
    ifindex: u32,
    plan: &Plan,
    macs: &mut MacTracker,
    dp: &mut Dataplane,
) -> Result<()> {
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut refresh = tokio::time::interval(NEIGHBOUR_REFRESH);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => { info!("SIGINT: stopping"); return Ok(()) }
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); return Ok(()) }
            _ = refresh.tick() => {
                if let Err(e) = refresh_macs(nl, ifindex, plan, macs, dp).await {
                    warn!("neighbour refresh failed: {e:#}");
                }
            }
        }
    }
}

/// Re-reads the neighbour table; rewrites reals whose MAC changed and the
/// backend sets of their services (a newly resolved server starts getting
/// traffic). Unresolved servers are probed again.
async fn refresh_macs(
    nl: &Netlink,
    ifindex: u32,
    plan: &Plan,
    macs: &mut MacTracker,
    dp: &mut Dataplane,
) -> Result<()> {
    for ip in macs.unresolved() {
        let _ = netlink::probe(ip);
    }
    let changed = macs.update(&nl.ipv4_neighbours(ifindex).await?);
    if changed.is_empty() {
        return Ok(());
    }
    for real in plan.reals().filter(|r| changed.contains(&r.real_id)) {
        let mac = macs.mac(real.real_id);
        info!(
            "real server {}: MAC {}",
            real.ip,
            fmt_mac(mac.unwrap_or_default())
        );
        dp.write_real(real, mac)?;
    }
    for svc in plan
        .services
        .iter()
        .filter(|s| s.reals.iter().any(|r| changed.contains(&r.real_id)))
    {
        dp.write_service(svc, |id| macs.mac(id).is_some())?;
    }
    Ok(())
}

async fn resolve_initial_macs(nl: &Netlink, ifindex: u32, macs: &mut MacTracker) -> Result<()> {
    let deadline = Instant::now() + INITIAL_RESOLVE_TIMEOUT;
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
            if let Err(e) = netlink::probe(*ip) {
                warn!("real server {ip}: cannot probe: {e}");
            }
        }
        tokio::time::sleep(INITIAL_RESOLVE_POLL).await;
    }
}

/// In DR the balancer must own the VIP on the link (answer ARP for it). Until
/// VRRP lands that is the operator's job: say so when it is missing.
async fn warn_about_missing_vips(nl: &Netlink, ifindex: u32, iface: &str, plan: &Plan) {
    let Ok(addrs) = nl.ipv4_addresses(ifindex).await else {
        return;
    };
    let mut vips: Vec<Ipv4Addr> = plan.services.iter().map(|s| s.vip).collect();
    vips.dedup();
    for vip in vips.into_iter().filter(|v| !addrs.contains(v)) {
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
