//! Connection sync in the agent: the data plane's events become records
//! for the sync daemon while this balancer sends (MASTER of the instance
//! the daemon follows, or always without one); what the daemon hears goes
//! into the tables while it receives (BACKUP, or always). Beyond IPVS, the
//! whole table is announced again and again (a new announcement at most
//! FULL_PASS_PERIOD after the last one ended, each paced by the daemon
//! and closed by an empty message), so a balancer that starts, restarts or
//! becomes BACKUP catches up on every live connection (sync/catch_up.rs
//! tells when), and an instance that follows sync does not take mastership
//! back before that.

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{Result, anyhow};
use aya::maps::{MapData, RingBuf};
use lb_common::{LbGlobals, SYNC_EVENT_FLOW, SYNC_EVENT_TEMPLATE, SyncEvent, SyncEvent6};
use tokio::{io::unix::AsyncFd, sync::watch};
use tracing::{info, warn};

use crate::{
    config::LvsSyncDaemon,
    dataplane::{Dataplane, LiveEntry, monotonic_ns},
    netlink::Netlink,
    planning::plan::{Plan, ipv4_only},
    sync::{
        catch_up::{CatchUp, Outcome},
        codec::{self, SyncConn},
        daemon::{Inbound, Settings, SyncDaemon},
        records::{self, Local, SyncedEntry, Tuple},
        socket::Endpoint,
    },
    vrrp::{instance::InstanceConfig, state::State as VrrpRunState},
};

/// How often a sending balancer looks whether to announce its whole table
/// again (it does when the last announcement has gone out).
pub const FULL_PASS_PERIOD: Duration = Duration::from_secs(2);
/// A catch-up that heard nobody for this long is over (nobody sends: two
/// periods and a margin, since a sender with an empty table still ends an
/// announcement every period).
pub const CATCHUP_SILENCE: Duration = Duration::from_secs(5);
/// A catch-up ends at the latest after this (a peer that never ends an
/// announcement, as the kernel's daemon): two announcements of a million
/// connections at the daemon's PASS_RATE take 20 s.
pub const CATCHUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a running catch-up is looked at.
pub const CATCHUP_POLL: Duration = Duration::from_millis(250);
/// IPv4 and UDP headers: maxlen defaults to the MTU less these (keepalived).
const IP_UDP_HEADERS: u32 = 28;

/// What woke the agent up.
pub enum Activity {
    /// The data plane reported connections (SyncLink::take_events).
    Reported,
    /// The daemon heard this from another balancer.
    Heard(Inbound),
}

/// What this balancer does with sync now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sends (the instance it follows is MASTER here).
    Master,
    /// Receives (the instance is BACKUP here).
    Backup,
    /// Both at once: no instance followed (active-active).
    Both,
    /// Neither (the instance is starting or in FAULT).
    Idle,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Backup => "backup",
            Role::Both => "both",
            Role::Idle => "idle",
        }
    }

    pub fn sends(self) -> bool {
        matches!(self, Role::Master | Role::Both)
    }

    pub fn receives(self) -> bool {
        matches!(self, Role::Backup | Role::Both)
    }

    /// keepalived's switch of the kernel's daemons: the followed instance's
    /// state decides; without one, both run.
    pub fn of(instance: Option<&str>, states: &HashMap<String, (VrrpRunState, u64)>) -> Role {
        let Some(name) = instance else {
            return Role::Both;
        };
        match states.get(name).map(|(s, _)| *s) {
            Some(VrrpRunState::Master) => Role::Master,
            Some(VrrpRunState::Backup) => Role::Backup,
            _ => Role::Idle,
        }
    }
}

/// An instance that sync follows starts as BACKUP and does not preempt
/// before its catch-up ends (SyncLink::hold): a returning master must hold
/// the connections the others accepted meanwhile before it takes their
/// packets.
pub fn hold_preemption(instances: &mut [InstanceConfig], config: Option<&LvsSyncDaemon>) {
    let Some(name) = config.and_then(|c| c.vrrp_instance.as_deref()) else {
        return;
    };
    for instance in instances.iter_mut().filter(|i| i.name == name) {
        instance.params.start_as_master = false;
        instance.waits_for_sync = true;
        info!(
            "vrrp_instance {name}: starts as BACKUP and takes mastership only once connection sync caught up (at most {CATCHUP_TIMEOUT:?})"
        );
    }
}

/// The running sync: the daemon, the data plane's events, the role.
pub struct SyncLink {
    pub daemon: SyncDaemon,
    instance: Option<String>,
    events: AsyncFd<RingBuf<MapData>>,
    pub role: Role,
    /// While receiving: the catch-up on the peers' tables.
    catch_up: Option<CatchUp>,
    /// true until a receiving role's catch-up ended: holds back the
    /// preemption of an instance that waits_for_sync.
    pub hold: watch::Sender<bool>,
}

impl SyncLink {
    /// Resolves lb.toml's lvs_sync_daemon on this host and starts it.
    pub async fn start(
        config: &LvsSyncDaemon,
        instances: &[InstanceConfig],
        nl: &Netlink,
        dp: &mut Dataplane,
    ) -> Result<Self> {
        let link = nl.link(&config.interface).await?.ok_or_else(|| {
            anyhow!(
                "lvs_sync_daemon: interface {} not found (see `ip link`)",
                config.interface
            )
        })?;
        let vips: std::collections::HashSet<Ipv4Addr> =
            ipv4_only(instances.iter().flat_map(|i| i.vips.iter().map(|(a, _)| a))).collect();
        let local = super::discovery::own_address(nl, link.index, &vips)
            .await?
            .ok_or_else(|| {
                anyhow!(
                    "lvs_sync_daemon: {} has no IPv4 address of its own to send from",
                    config.interface
                )
            })?;
        let followed = config
            .vrrp_instance
            .as_ref()
            .and_then(|name| instances.iter().find(|i| &i.name == name));
        let settings = Settings {
            endpoint: Endpoint {
                ifindex: link.index,
                local,
                group: config.group.unwrap_or(codec::SYNC_GROUP),
                port: config.port.unwrap_or(codec::SYNC_PORT),
                ttl: config.ttl.unwrap_or(1),
            },
            syncid: config.id.or(followed.map(|i| i.vrid)).unwrap_or(0),
            maxlen: usize::from(config.maxlen.unwrap_or_else(|| {
                u16::try_from(link.mtu.saturating_sub(IP_UDP_HEADERS)).unwrap_or(u16::MAX)
            })),
        };
        let ring = dp.take_sync_events()?;
        // SAFETY: the AsyncFd owns the ring buffer, whose fd stays open and
        // the same for as long as the ring (and so the AsyncFd) lives.
        let events = unsafe { AsyncFd::register(ring) }
            .map_err(|e| anyhow!("watching the data plane's sync events: {e}"))?;
        let daemon = SyncDaemon::start(settings)?;
        info!(
            "connection sync on {} ({local} -> {}:{}, syncid {}, maxlen {}){}",
            config.interface,
            settings.endpoint.group,
            settings.endpoint.port,
            settings.syncid,
            settings.maxlen,
            config
                .vrrp_instance
                .as_ref()
                .map(|n| format!(", following vrrp_instance {n}"))
                .unwrap_or_else(|| ", sending and receiving (no vrrp_instance)".into())
        );
        let role = if config.vrrp_instance.is_some() {
            Role::Idle
        } else {
            Role::Both
        };
        daemon.set_role(role.name());
        let mut link = Self {
            daemon,
            instance: config.vrrp_instance.clone(),
            events,
            role: Role::Idle,
            catch_up: None,
            hold: watch::channel(true).0,
        };
        link.set_role(role, Instant::now());
        Ok(link)
    }

    /// Follows the VRRP state of the instance (if any).
    pub fn update_role(&mut self, states: &HashMap<String, (VrrpRunState, u64)>) {
        let role = Role::of(self.instance.as_deref(), states);
        if role != self.role {
            info!("connection sync: {} -> {}", self.role.name(), role.name());
            self.set_role(role, Instant::now());
        }
    }

    /// A role that starts receiving starts a catch-up; any other holds
    /// preemption until the next one ended.
    fn set_role(&mut self, role: Role, now: Instant) {
        if role.receives() && !self.role.receives() {
            self.catch_up = Some(CatchUp::begin(now, CATCHUP_SILENCE, CATCHUP_TIMEOUT));
            self.daemon.set_catch_up("running");
            self.hold.send_replace(true);
        } else if !role.receives() {
            // The last outcome stays on show; one cut short says so.
            if self.catching_up() {
                self.daemon.set_catch_up("interrupted");
            }
            self.catch_up = None;
            self.hold.send_replace(true);
        }
        self.role = role;
        self.daemon.set_role(role.name());
    }

    /// A catch-up is running.
    pub fn catching_up(&self) -> bool {
        self.catch_up.is_some() && *self.hold.borrow()
    }

    /// Ends the catch-up when it is over (logged once), releasing the hold.
    pub fn poll_catch_up(&mut self, now: Instant) {
        if !self.catching_up() {
            return;
        }
        let Some(catch_up) = &mut self.catch_up else {
            return;
        };
        let Some(outcome) = catch_up.poll(now) else {
            return;
        };
        match outcome {
            Outcome::Complete => {
                info!("connection sync: caught up (every peer announced its whole table)")
            }
            Outcome::Alone => {
                info!("connection sync: nobody sends, nothing to catch up on")
            }
            Outcome::TimedOut => warn!(
                "connection sync: catch-up given up after {CATCHUP_TIMEOUT:?}; no end of a whole table from {:?}",
                catch_up.missing()
            ),
        }
        self.daemon.set_catch_up(outcome.name());
        self.hold.send_replace(false);
    }

    /// Waits until the data plane reported connections or the daemon
    /// heard some.
    pub async fn next(&mut self) -> Activity {
        tokio::select! {
            ready = self.events.readable_mut() => {
                if let Ok(mut guard) = ready {
                    guard.clear_ready();
                }
                Activity::Reported
            }
            heard = self.daemon.received.recv() => match heard {
                Some(conns) => Activity::Heard(conns),
                None => std::future::pending().await,
            },
        }
    }

    /// The records of what the data plane reported, if this balancer sends;
    /// drained either way.
    pub fn take_events(&mut self, plan: &Plan, timeouts: &LbGlobals) -> Vec<SyncConn> {
        let sends = self.role.sends();
        let ring = self.events.get_mut();
        let mut out = Vec::new();
        while let Some(item) = ring.next() {
            if !sends {
                continue;
            }
            // The family by the record's length: the data plane writes whole
            // SyncEvents (IPv4) or SyncEvent6s, repr(C) plain integers of
            // two different sizes.
            let local = match item.len() {
                len if len == size_of::<SyncEvent>() => {
                    // SAFETY: a whole SyncEvent, its length checked.
                    let e = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<SyncEvent>()) };
                    local_of((&e.key).into(), e.service_id, e.real_id, e.state, e.kind)
                }
                len if len == size_of::<SyncEvent6>() => {
                    // SAFETY: a whole SyncEvent6, its length checked.
                    let e = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<SyncEvent6>()) };
                    local_of((&e.key).into(), e.service_id, e.real_id, e.state, e.kind)
                }
                _ => continue,
            };
            out.extend(records::record_of(plan, timeouts, &local));
        }
        out
    }
}

/// A data-plane event as what to announce.
fn local_of(key: Tuple, service_id: u32, real_id: u32, state: u8, kind: u8) -> Local {
    Local {
        key,
        service_id,
        real_id,
        state,
        template: kind == SYNC_EVENT_TEMPLATE,
    }
}

/// Announces every live connection and template of this balancer (the
/// daemon paces it), unless the last announcement is still going out.
pub fn full_pass(link: &SyncLink, dp: &Dataplane, plan: &Plan, timeouts: &LbGlobals) -> Result<()> {
    if link.daemon.announcing() {
        return Ok(());
    }
    let mut all = Vec::new();
    dp.for_each_live(|entry| {
        let local = match entry {
            LiveEntry::Flow(k, f) => local_of(
                (&k).into(),
                f.service_id,
                f.real_id,
                f.state,
                SYNC_EVENT_FLOW,
            ),
            LiveEntry::Flow6(k, f) => local_of(
                (&k).into(),
                f.service_id,
                f.real_id,
                f.state,
                SYNC_EVENT_FLOW,
            ),
            LiveEntry::Template(k, t) => {
                let key = (&k.as_flow_key()).into();
                local_of(key, t.service_id, t.real_id, 0, SYNC_EVENT_TEMPLATE)
            }
            LiveEntry::Template6(k, t) => {
                let key = (&k.as_flow_key()).into();
                local_of(key, t.service_id, t.real_id, 0, SYNC_EVENT_TEMPLATE)
            }
        };
        all.extend(records::record_of(plan, timeouts, &local));
    })?;
    link.daemon.announce(all);
    Ok(())
}

/// Writes what the daemon heard into the tables (counted by outcome); a
/// running catch-up hears of it afterwards.
pub fn apply(link: &mut SyncLink, dp: &mut Dataplane, plan: &Plan, heard: Inbound) -> Result<()> {
    let conns = &heard.conns;
    if !link.role.receives() {
        link.daemon
            .count_applied(0, &vec!["not_receiving"; conns.len()]);
        return Ok(());
    }
    let written = write(link, dp, plan, conns);
    if let Some(catch_up) = &mut link.catch_up {
        catch_up.heard(heard.from, heard.pass_end);
    }
    written
}

fn write(link: &SyncLink, dp: &mut Dataplane, plan: &Plan, conns: &[SyncConn]) -> Result<()> {
    let now = monotonic_ns();
    let mut entries: Vec<SyncedEntry> = Vec::with_capacity(conns.len());
    let mut refused = Vec::new();
    for conn in conns {
        match records::entry_of(plan, conn, now) {
            Ok(entry) => entries.push(entry),
            Err(why) => refused.push(why.reason()),
        }
    }
    let applied = dp.apply_synced(&entries)?;
    let full = entries.len() as u64 - applied;
    refused.extend(std::iter::repeat_n("table_full", full as usize));
    link.daemon.count_applied(applied, &refused);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_follows_the_instance_as_keepalived_switches_the_daemons() {
        let mut states = HashMap::new();
        assert_eq!(Role::of(None, &states), Role::Both);
        assert_eq!(Role::of(Some("VI_1"), &states), Role::Idle);
        states.insert("VI_1".to_string(), (VrrpRunState::Backup, 1));
        assert_eq!(Role::of(Some("VI_1"), &states), Role::Backup);
        states.insert("VI_1".to_string(), (VrrpRunState::Master, 2));
        let master = Role::of(Some("VI_1"), &states);
        assert_eq!(master, Role::Master);
        assert!(master.sends() && !master.receives());
        assert!(Role::Backup.receives() && !Role::Backup.sends());
        assert!(Role::Both.sends() && Role::Both.receives());
        states.insert("VI_1".to_string(), (VrrpRunState::Fault, 3));
        assert_eq!(Role::of(Some("VI_1"), &states), Role::Idle);
    }
}
