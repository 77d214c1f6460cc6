//! Connection sync in the agent: the data plane's events become records
//! for the sync daemon while this balancer sends (MASTER of the instance
//! the daemon follows, or always without one); what the daemon hears goes
//! into the tables while it receives (BACKUP, or always). Beyond IPVS, the
//! whole table is announced again every FULL_PASS_PERIOD, so a balancer
//! that starts, restarts or becomes BACKUP catches up on every live
//! connection, and an instance that follows sync waits for that before
//! it takes mastership back.

use std::{collections::HashMap, net::Ipv4Addr, time::Duration};

use anyhow::{Result, anyhow};
use aya::maps::{MapData, RingBuf};
use lb_common::{LbGlobals, SYNC_EVENT_FLOW, SYNC_EVENT_TEMPLATE, SyncEvent, SyncEvent6};
use tokio::io::unix::AsyncFd;
use tracing::info;

use crate::{
    config::LvsSyncDaemon,
    dataplane::{Dataplane, LiveEntry, monotonic_ns},
    netlink::Netlink,
    planning::plan::{Plan, ipv4_only},
    sync::{
        codec::{self, SyncConn},
        daemon::{Settings, SyncDaemon},
        records::{self, Local, SyncedEntry, Tuple},
        socket::Endpoint,
    },
    vrrp::{instance::InstanceConfig, state::State as VrrpRunState},
};

/// How often a sending balancer announces its whole table again.
pub const FULL_PASS_PERIOD: Duration = Duration::from_secs(2);
/// How long an instance that sync follows waits, as BACKUP, before it
/// takes mastership back: two full passes and a flush.
pub const CATCHUP_WAIT: Duration = Duration::from_secs(5);
/// IPv4 and UDP headers: maxlen defaults to the MTU less these (keepalived).
const IP_UDP_HEADERS: u32 = 28;
/// Records handed to the daemon at once during a full pass.
const PASS_CHUNK: usize = 4096;

/// What woke the agent up.
pub enum Activity {
    /// The data plane reported connections (SyncLink::take_events).
    Reported,
    /// The daemon heard these from another balancer.
    Heard(Vec<SyncConn>),
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

/// An instance that sync follows starts as BACKUP and waits CATCHUP_WAIT
/// (or its own longer preempt_delay) before preempting: a returning master
/// must hold the connections the others accepted meanwhile before it takes
/// their packets.
pub fn hold_preemption(instances: &mut [InstanceConfig], config: Option<&LvsSyncDaemon>) {
    let Some(name) = config.and_then(|c| c.vrrp_instance.as_deref()) else {
        return;
    };
    for instance in instances.iter_mut().filter(|i| i.name == name) {
        instance.params.start_as_master = false;
        instance.params.preempt_delay = instance.params.preempt_delay.max(CATCHUP_WAIT);
        info!(
            "vrrp_instance {name}: starts as BACKUP and waits {:?} for connection sync's catch-up before it takes mastership",
            instance.params.preempt_delay
        );
    }
}

/// The running sync: the daemon, the data plane's events, the role.
pub struct SyncLink {
    pub daemon: SyncDaemon,
    instance: Option<String>,
    events: AsyncFd<RingBuf<MapData>>,
    pub role: Role,
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
        Ok(Self {
            daemon,
            instance: config.vrrp_instance.clone(),
            events,
            role,
        })
    }

    /// Follows the VRRP state of the instance (if any).
    pub fn update_role(&mut self, states: &HashMap<String, (VrrpRunState, u64)>) {
        let role = Role::of(self.instance.as_deref(), states);
        if role != self.role {
            info!("connection sync: {} -> {}", self.role.name(), role.name());
            self.role = role;
            self.daemon.set_role(role.name());
        }
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

/// Announces every live connection and template of this balancer.
pub fn full_pass(link: &SyncLink, dp: &Dataplane, plan: &Plan, timeouts: &LbGlobals) -> Result<()> {
    let mut chunk = Vec::with_capacity(PASS_CHUNK);
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
        chunk.extend(records::record_of(plan, timeouts, &local));
        if chunk.len() >= PASS_CHUNK {
            link.daemon.send(std::mem::take(&mut chunk));
        }
    })?;
    link.daemon.send(chunk);
    Ok(())
}

/// Writes what the daemon heard into the tables (counted by outcome).
pub fn apply(link: &SyncLink, dp: &mut Dataplane, plan: &Plan, conns: &[SyncConn]) -> Result<()> {
    if !link.role.receives() {
        link.daemon
            .count_applied(0, &vec!["not_receiving"; conns.len()]);
        return Ok(());
    }
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
