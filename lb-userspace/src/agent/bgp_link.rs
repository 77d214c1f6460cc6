//! The agent's side of scale-out: the BIRD it supervises, what it
//! announces (bgp::announce decides; this writes BIRD's file and says
//! `birdc configure` when the set changes), the sessions BIRD reports, and
//! the drain an operator asked for (`lb-userspace drain`: SIGUSR1 withdraws
//! everything and keeps forwarding; SIGUSR2 ends it).

use std::{
    collections::HashSet,
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};
use tracing::{info, warn};

use super::discovery::{own_address, own_address6};
use crate::{
    bgp::{
        announce::{self, Holds, ServiceReadiness},
        bird_conf::{self, BirdSettings, Neighbor},
        birdc::{self, Session},
        supervisor::Bird,
    },
    config::Bgp,
    netlink::{LinkInfo, Netlink},
    runtime_files,
    status::{BgpStatus, DrainStatus},
};

/// How often the sessions are read back from BIRD.
pub const SESSION_REFRESH: Duration = Duration::from_secs(1);

pub struct BgpLink {
    bird: Bird,
    settings: BirdSettings,
    /// What BIRD's file holds now.
    announced: Vec<IpAddr>,
    sessions: Vec<Session>,
    /// Since when a drain runs.
    draining: Option<Instant>,
    /// (packets forwarded, when that count last moved), while draining.
    forwarded: Option<(u64, Instant)>,
    /// Connection sync's catch-up runs: announcements are held back.
    catching_up: bool,
}

impl BgpLink {
    /// Resolves [bgp] on this host and starts BIRD announcing nothing yet.
    pub async fn start(
        config: &Bgp,
        nl: &Netlink,
        link: &LinkInfo,
        vips: &HashSet<IpAddr>,
        pin_dir: &Path,
    ) -> Result<Self> {
        let vips4: HashSet<Ipv4Addr> = crate::planning::plan::ipv4_only(vips).collect();
        let source = own_address(nl, link.index, &vips4).await?.ok_or_else(|| {
            anyhow!("[bgp]: the interface has no IPv4 address of its own to peer from")
        })?;
        let next_hop6 = own_address6(nl, link.index, vips).await?;
        if next_hop6.is_none() && vips.iter().any(IpAddr::is_ipv6) {
            warn!(
                "[bgp]: the interface has no global IPv6 address of its own: IPv6 VIPs are not \
                 announced (their next hop)"
            );
        }
        let settings = settings_of(config, source, next_hop6);
        let (conf, ctl) = runtime_files::bird_paths(pin_dir);
        write_atomically(&conf, &bird_conf::render(&settings, &[]))?;
        let bird = Bird::start(conf, ctl);
        info!(
            "BGP: AS {} from {source} to {}",
            settings.local_as,
            settings
                .neighbors
                .iter()
                .map(|n| format!("{} (AS {})", n.address, n.remote_as))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(Self {
            bird,
            settings,
            announced: Vec::new(),
            sessions: Vec::new(),
            draining: None,
            forwarded: None,
            catching_up: false,
        })
    }

    /// Connection sync's catch-up runs (a joining balancer must know its
    /// peers' connections before ECMP hands it some) or not.
    pub fn set_catching_up(&mut self, catching_up: bool) {
        self.catching_up = catching_up;
    }

    fn holds(&self) -> Holds {
        Holds {
            draining: self.draining.is_some(),
            catching_up: self.catching_up,
        }
    }

    /// A reload: new [bgp] settings (neighbors, AS, timers, BFD) go to
    /// BIRD with `birdc configure`, which restarts only the sessions whose
    /// settings changed.
    pub async fn reconfigure(&mut self, config: &Bgp) {
        let settings = settings_of(config, self.settings.source, self.settings.next_hop6);
        if settings == self.settings {
            return;
        }
        self.settings = settings;
        let announced = self.announced.clone();
        if self.write_and_configure(&announced).await {
            info!("BGP: settings reloaded");
        }
    }

    /// BIRD's file for `vips`, then `birdc configure`; false if the file
    /// could not be written.
    async fn write_and_configure(&self, vips: &[IpAddr]) -> bool {
        if let Err(e) = write_atomically(self.bird.conf(), &bird_conf::render(&self.settings, vips))
        {
            warn!("BGP: {e:#}");
            return false;
        }
        // A BIRD that is (re)starting reads the file anyway.
        if let Err(e) = birdc::configure(self.bird.ctl()).await {
            warn!("BGP: {e:#}");
        }
        true
    }

    /// Announces what `services` allow (BIRD reconfigured only on change).
    pub async fn update(&mut self, services: &[ServiceReadiness]) {
        let mut wanted = announce::announced(services, self.holds());
        // IPv6 VIPs need an IPv6 next hop (warned about at start).
        if self.settings.next_hop6.is_none() {
            wanted.retain(IpAddr::is_ipv4);
        }
        if wanted == self.announced {
            return;
        }
        let (added, removed): (Vec<_>, Vec<_>) = (
            wanted
                .iter()
                .filter(|v| !self.announced.contains(v))
                .collect(),
            self.announced
                .iter()
                .filter(|v| !wanted.contains(v))
                .collect(),
        );
        if !self.write_and_configure(&wanted).await {
            return;
        }
        if !added.is_empty() {
            info!("BGP: announcing {added:?}");
        }
        if !removed.is_empty() {
            info!("BGP: withdrawing {removed:?}");
        }
        self.announced = wanted;
    }

    /// Whether a drain runs (only then is forwarding watched).
    pub fn draining(&self) -> bool {
        self.draining.is_some()
    }

    /// While draining: notes whether the data plane forwarded anything
    /// since the last call (`forwarded`: its running count).
    pub fn note_forwarded(&mut self, forwarded: u64) {
        match self.forwarded {
            Some((count, _)) if count == forwarded => {}
            _ => self.forwarded = Some((forwarded, Instant::now())),
        }
    }

    /// Reads the sessions back from BIRD.
    pub async fn refresh_sessions(&mut self) {
        match birdc::sessions(self.bird.ctl()).await {
            Ok(sessions) => {
                for s in &sessions {
                    let was = self.sessions.iter().find(|o| o.neighbor == s.neighbor);
                    if was.map(Session::established) != Some(s.established()) {
                        info!("BGP: neighbor {} {} ({})", s.neighbor, s.state, s.info);
                    }
                }
                self.sessions = sessions;
            }
            Err(e) => tracing::debug!("BGP: sessions not read: {e:#}"),
        }
    }

    /// SIGUSR1: withdraw everything, keep forwarding.
    pub fn drain(&mut self) {
        if self.draining.is_none() {
            info!("drain: withdrawing every VIP; connections already here are still forwarded");
            self.draining = Some(Instant::now());
        }
    }

    /// SIGUSR2: announce again what can be served.
    pub fn undrain(&mut self) {
        if self.draining.take().is_some() {
            self.forwarded = None;
            info!("drain cancelled: announcing again");
        }
    }

    pub fn status(&self, active_conns: u64) -> BgpStatus {
        BgpStatus {
            announced: self.announced.clone(),
            sessions: self.sessions.clone(),
            drain: self.draining.map(|since| DrainStatus {
                for_s: since.elapsed().as_secs(),
                active_conns,
                quiet_s: self
                    .forwarded
                    .map_or(0, |(_, moved)| moved.elapsed().as_secs()),
            }),
            catching_up: self.holds().catching_up,
        }
    }
}

/// What BIRD is told, from [bgp] and our addresses.
fn settings_of(config: &Bgp, source: Ipv4Addr, next_hop6: Option<Ipv6Addr>) -> BirdSettings {
    BirdSettings {
        next_hop6,
        router_id: config.router_id.unwrap_or(source),
        source,
        local_as: config.local_as,
        hold_time_s: config.hold_time.0 as u32,
        bfd: config.bfd,
        neighbors: config
            .neighbor
            .iter()
            .map(|n| Neighbor {
                address: n.address,
                remote_as: n.remote_as,
            })
            .collect(),
    }
}

/// Written whole, then renamed: BIRD never reads half a file.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    fs::create_dir_all(runtime_files::RUN_DIR)
        .with_context(|| format!("creating {}", runtime_files::RUN_DIR))?;
    fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}
