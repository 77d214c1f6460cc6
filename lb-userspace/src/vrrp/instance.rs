//! One vrrp_instance as a tokio task: receives and validates adverts, drives
//! the state machine, and carries out its actions (send adverts, add or
//! remove the VIPs, gratuitous ARPs, notify scripts). Reports each state it
//! enters to the agent, which gates the data plane on it.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use super::{
    garp,
    notify::{self, NotifyScripts},
    packet::{AUTH_NONE, AUTH_PASS, Advert, VRRP_MCAST_GROUP, VRRP_MCAST_GROUP6, VRRP_TTL},
    socket::{Received, VrrpSocket},
    state::{Action, Event, Machine, Params, State},
};
use crate::{
    config::{AuthType, VrrpInstance, VrrpState},
    netlink::{LinkInfo, Netlink},
};

/// How often track_interface links (and our own) are polled.
const LINK_POLL: Duration = Duration::from_secs(1);
/// How long a state change waits for the agent to apply it to the data
/// plane before the VIPs are added or removed anyway.
const DATA_PLANE_APPLY_TIMEOUT: Duration = Duration::from_secs(1);
/// Dropped-packet logs: at most one per reason per this interval.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);
const CENTIS_PER_SEC: f64 = 100.0;

/// Everything an instance needs, resolved from lb.toml and the kernel.
#[derive(Debug, Clone)]
pub struct InstanceConfig {
    pub name: String,
    pub iface: String,
    pub link: LinkInfo,
    /// Our address on the link, of the VIPs' family (IPv6: link-local).
    pub local_addr: IpAddr,
    pub vrid: u8,
    pub params: Params,
    /// v2 PASS password, zero-padded.
    pub auth: Option<[u8; 8]>,
    /// (VIP, prefix length), all of local_addr's family.
    pub vips: Vec<(IpAddr, u8)>,
    pub unicast_peers: Vec<IpAddr>,
    pub notify: NotifyScripts,
    pub track_interfaces: Vec<String>,
    /// Connection sync follows this instance: it starts as BACKUP and does
    /// not preempt while sync's catch-up runs (run's `sync_hold`).
    pub waits_for_sync: bool,
}

impl InstanceConfig {
    /// `local_addr`: our address of the instance's family on the link
    /// (instance_family says which).
    pub fn from_config(
        vi: &VrrpInstance,
        iface: &str,
        link: LinkInfo,
        local_addr: IpAddr,
    ) -> Result<Self> {
        let ipv6 = instance_is_ipv6(vi)?;
        if ipv6 != local_addr.is_ipv6() {
            return Err(anyhow!(
                "vrrp_instance {}: our address {local_addr} is not of the VIPs' family",
                vi.name
            ));
        }
        let vips: Vec<(IpAddr, u8)> = vi
            .virtual_ipaddress
            .iter()
            .map(|v| (v.addr, v.prefix))
            .collect();
        if let Some(peer) = vi.unicast_peer.iter().find(|p| p.is_ipv6() != ipv6) {
            return Err(anyhow!(
                "vrrp_instance {}: unicast_peer {peer} is not of the VIPs' family",
                vi.name
            ));
        }
        let peers = vi.unicast_peer.clone();
        let auth = match &vi.authentication {
            None => None,
            Some(a) if a.auth_type == AuthType::Pass => Some(Advert::auth_data_from(&a.auth_pass)),
            Some(_) => {
                return Err(anyhow!(
                    "vrrp_instance {}: auth_type AH is not implemented (keepalived deprecates it)",
                    vi.name
                ));
            }
        };
        Ok(Self {
            name: vi.name.clone(),
            iface: iface.to_string(),
            link,
            local_addr,
            vrid: vi.virtual_router_id.0 as u8,
            params: Params {
                version: vi.version.0 as u8,
                priority: vi.priority.0 as u8,
                advert_int: vi.advert_int.as_duration(),
                preempt: !vi.nopreempt,
                preempt_delay: vi.preempt_delay.as_duration(),
                start_as_master: vi.state == VrrpState::Master,
                local_addr,
            },
            auth,
            vips,
            unicast_peers: peers,
            notify: NotifyScripts {
                master: vi.notify_master.clone(),
                backup: vi.notify_backup.clone(),
                fault: vi.notify_fault.clone(),
                any: vi.notify.clone(),
            },
            track_interfaces: vi.track_interface.clone(),
            waits_for_sync: false,
        })
    }

    fn advert(&self, priority: u8) -> Advert {
        Advert {
            version: self.params.version,
            vrid: self.vrid,
            priority,
            auth_type: if self.auth.is_some() {
                AUTH_PASS
            } else {
                AUTH_NONE
            },
            advert_int_cs: (self.params.advert_int.as_secs_f64() * CENTIS_PER_SEC).round() as u16,
            addresses: self.vip_addrs(),
            auth_data: self.auth.unwrap_or_default(),
        }
    }

    pub fn vip_addrs(&self) -> Vec<IpAddr> {
        self.vips.iter().map(|(a, _)| *a).collect()
    }

    /// Where adverts go when there are no unicast peers.
    fn multicast_group(&self) -> IpAddr {
        if self.local_addr.is_ipv6() {
            VRRP_MCAST_GROUP6.into()
        } else {
            VRRP_MCAST_GROUP.into()
        }
    }
}

/// Whether the instance's VIPs are IPv6 (all of them; one family per
/// instance, as keepalived has it). IPv6 is VRRPv3 only.
pub fn instance_is_ipv6(vi: &VrrpInstance) -> Result<bool> {
    let ipv6 = vi
        .virtual_ipaddress
        .first()
        .is_some_and(|v| v.addr.is_ipv6());
    if vi
        .virtual_ipaddress
        .iter()
        .any(|v| v.addr.is_ipv6() != ipv6)
    {
        return Err(anyhow!(
            "vrrp_instance {}: IPv4 and IPv6 VIPs in one instance: an instance is of one \
             family (as keepalived's): put each family in an instance of its own",
            vi.name
        ));
    }
    if ipv6 && vi.version.0 != 3 {
        return Err(anyhow!(
            "vrrp_instance {}: IPv6 VIPs need version = 3 (VRRPv2 is IPv4 only)",
            vi.name
        ));
    }
    Ok(ipv6)
}

/// Why a received packet was dropped (counted, logged at a rate limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    NotVrrp,
    BadTtl,
    Malformed,
    WrongVersion,
    AuthMismatch,
    IntervalMismatch,
    NotAPeer,
}

/// Whether an advert from `src` is a unicast peer's: from an address the
/// instance lists or, over IPv6, from a link-local one. RFC 5798 sends
/// from the link-local address, which a peer list of global addresses (as
/// keepalived's unicast_peer is mostly written) does not hold; the hop
/// limit of 255, checked before, proves it came from the link.
fn from_a_peer(cfg: &InstanceConfig, src: IpAddr) -> bool {
    cfg.unicast_peers.contains(&src) || matches!(src, IpAddr::V6(a) if a.is_unicast_link_local())
}

/// Checks a received packet against the instance. Ok(None): valid but not
/// for us (another vrid, or our own). Pure: tested without sockets.
pub fn validate(
    cfg: &InstanceConfig,
    received: Option<&Received>,
) -> Result<Option<(IpAddr, Advert)>, DropReason> {
    let r = received.ok_or(DropReason::NotVrrp)?;
    if r.src == cfg.local_addr {
        return Ok(None);
    }
    if r.ttl != VRRP_TTL {
        return Err(DropReason::BadTtl);
    }
    let adv = Advert::decode(&r.payload, r.src, r.dst).map_err(|_| DropReason::Malformed)?;
    if adv.vrid != cfg.vrid {
        return Ok(None);
    }
    if !cfg.unicast_peers.is_empty() && !from_a_peer(cfg, r.src) {
        return Err(DropReason::NotAPeer);
    }
    if adv.version != cfg.params.version {
        return Err(DropReason::WrongVersion);
    }
    if adv.version == 2 {
        let ours = cfg.advert(0);
        if adv.auth_type != ours.auth_type
            || (cfg.auth.is_some() && adv.auth_data != ours.auth_data)
        {
            return Err(DropReason::AuthMismatch);
        }
        if adv.advert_int_cs != ours.advert_int_cs {
            return Err(DropReason::IntervalMismatch);
        }
    }
    Ok(Some((r.src, adv)))
}

/// A state the instance entered, for the agent.
#[derive(Debug)]
pub struct StateChange {
    pub instance: String,
    pub state: State,
    pub vips: Vec<IpAddr>,
    /// Fired by the agent once the data plane serves (or stops serving)
    /// the VIPs: the instance waits for it before it touches the addresses.
    pub applied: Option<oneshot::Sender<()>>,
}

struct Runner {
    cfg: InstanceConfig,
    nl: Netlink,
    socket: VrrpSocket,
    machine: Machine,
    states: mpsc::Sender<StateChange>,
    drops: HashMap<DropReason, (u64, Option<Instant>)>,
    /// Cancels the second gratuitous-ARP burst when we leave MASTER.
    master_epoch: watch::Sender<u64>,
}

/// Runs the instance until `shutdown` turns true; then, if master, sends
/// priority 0 and removes the VIPs. `sync_hold` (true: catch-up running)
/// holds preemption back when the instance waits_for_sync.
pub async fn run(
    cfg: InstanceConfig,
    nl: Netlink,
    states: mpsc::Sender<StateChange>,
    mut shutdown: watch::Receiver<bool>,
    sync_hold: Option<watch::Receiver<bool>>,
) -> Result<()> {
    let mut sync_hold = sync_hold.filter(|_| cfg.waits_for_sync);
    let socket = VrrpSocket::open(
        &cfg.iface,
        cfg.link.index,
        cfg.local_addr,
        cfg.unicast_peers.is_empty(),
    )
    .with_context(|| {
        format!(
            "vrrp_instance {}: opening the VRRP socket on {}",
            cfg.name, cfg.iface
        )
    })?;
    let mut r = Runner {
        machine: Machine::new(cfg.params.clone()),
        cfg,
        nl,
        socket,
        states,
        drops: HashMap::new(),
        master_epoch: watch::channel(0).0,
    };
    // Like keepalived at start: we hold no VIP until we are master.
    for (vip, _) in r.cfg.vips.clone() {
        r.nl.del_address(r.cfg.link.index, vip).await?;
    }
    if let Some(hold) = &mut sync_hold {
        let held = *hold.borrow_and_update();
        r.machine.hold_preemption(held);
    }
    r.apply(Event::Start).await;
    let mut link_poll = tokio::time::interval(LINK_POLL);
    loop {
        let deadline = r.machine.deadline().map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    r.apply(Event::Shutdown).await;
                    return Ok(());
                }
            }
            _ = async { tokio::time::sleep_until(deadline.unwrap()).await }, if deadline.is_some() => {
                r.apply(Event::Timeout).await;
            }
            packet = r.socket.recv() => match packet {
                Ok(received) => r.on_packet(received.as_ref()).await,
                Err(e) => warn!("vrrp_instance {}: receive failed: {e}", r.cfg.name),
            },
            _ = link_poll.tick() => r.check_links().await,
            changed = async { sync_hold.as_mut().unwrap().changed().await }, if sync_hold.is_some() => {
                match changed {
                    Ok(()) => {
                        let held = sync_hold.as_mut().is_some_and(|h| *h.borrow_and_update());
                        r.machine.hold_preemption(held);
                    }
                    // The agent is gone: nothing holds us any more.
                    Err(_) => {
                        sync_hold = None;
                        r.machine.hold_preemption(false);
                    }
                }
            }
        }
    }
}

impl Runner {
    async fn on_packet(&mut self, received: Option<&Received>) {
        match validate(&self.cfg, received) {
            Ok(Some((src, adv))) => {
                let advert_int = Duration::from_millis(u64::from(adv.advert_int_cs) * 10);
                self.apply(Event::Advert {
                    priority: adv.priority,
                    src,
                    advert_int,
                })
                .await;
            }
            Ok(None) => {}
            Err(reason) => self.count_drop(reason),
        }
    }

    fn count_drop(&mut self, reason: DropReason) {
        let now = Instant::now();
        let (count, last_log) = self.drops.entry(reason).or_insert((0, None));
        *count += 1;
        if last_log.is_none_or(|t| now.duration_since(t) >= DROP_LOG_INTERVAL) {
            *last_log = Some(now);
            warn!(
                "vrrp_instance {}: dropped advert ({reason:?}), {count} so far",
                self.cfg.name
            );
        }
    }

    async fn check_links(&mut self) {
        let mut up = true;
        for name in std::iter::once(&self.cfg.iface).chain(&self.cfg.track_interfaces) {
            if self.nl.link_running(name).await.ok().flatten() != Some(true) {
                up = false;
            }
        }
        let event = match (up, self.machine.state()) {
            (false, State::Master | State::Backup) => Event::LinkDown,
            (true, State::Fault) => Event::LinkUp,
            _ => return,
        };
        self.apply(event).await;
    }

    async fn apply(&mut self, event: Event) {
        let before = self.machine.state();
        let actions = self.machine.handle(event, Instant::now());
        for action in actions {
            if let Err(e) = self.act(action).await {
                warn!("vrrp_instance {}: {action:?} failed: {e:#}", self.cfg.name);
            }
        }
        let after = self.machine.state();
        if after != before && after != State::Init {
            info!(
                "vrrp_instance {}: entering {} state (priority {})",
                self.cfg.name,
                after.name(),
                self.machine.priority()
            );
        }
    }

    async fn act(&mut self, action: Action) -> Result<()> {
        match action {
            Action::SendAdvert { priority } => self.send_advert(priority),
            Action::BecomeMaster => {
                // The data plane first, so the VIP's first packets are balanced.
                self.report(State::Master).await;
                for (vip, prefix) in &self.cfg.vips {
                    match vip {
                        IpAddr::V4(_) => {
                            self.nl
                                .add_address(self.cfg.link.index, *vip, *prefix)
                                .await?
                        }
                        IpAddr::V6(v6) => self.nl.add_vip6(self.cfg.link.index, *v6).await?,
                    }
                }
                self.gratuitous_arps();
                Ok(())
            }
            Action::BecomeBackup | Action::BecomeFault => {
                self.master_epoch.send_modify(|e| *e += 1);
                let state = if action == Action::BecomeFault {
                    State::Fault
                } else {
                    State::Backup
                };
                // The VIPs first, then the data plane: the other way round, a
                // packet that still reaches us (a stale ARP cache) would be
                // passed to a kernel that holds the VIP and has no socket for
                // the connection, which answers with an RST.
                let mut removed = Ok(());
                for (vip, _) in &self.cfg.vips {
                    if let Err(e) = self.nl.del_address(self.cfg.link.index, *vip).await {
                        removed = Err(e);
                    }
                }
                self.report(state).await;
                removed
            }
        }
    }

    fn send_advert(&self, priority: u8) -> Result<()> {
        let adv = self.cfg.advert(priority);
        let dsts = if self.cfg.unicast_peers.is_empty() {
            vec![self.cfg.multicast_group()]
        } else {
            self.cfg.unicast_peers.clone()
        };
        for dst in dsts {
            self.socket
                .send(&adv.encode(self.cfg.local_addr, dst), dst)
                .with_context(|| format!("sending an advert to {dst}"))?;
        }
        Ok(())
    }

    /// keepalived: a burst now, another garp_master_delay later if still
    /// master (gratuitous ARPs, unsolicited NAs for IPv6 VIPs).
    fn gratuitous_arps(&self) {
        let (index, mac) = (self.cfg.link.index, self.cfg.link.mac);
        let vips = self.cfg.vip_addrs();
        let name = self.cfg.name.clone();
        let mut epoch = self.master_epoch.subscribe();
        let started = *epoch.borrow_and_update();
        tokio::spawn(async move {
            if let Err(e) = garp::send_burst(index, mac, &vips) {
                warn!("vrrp_instance {name}: gratuitous ARP / unsolicited NA failed: {e}");
            }
            tokio::time::sleep(garp::GARP_SECOND_BURST_DELAY).await;
            if *epoch.borrow() == started {
                let _ = garp::send_burst(index, mac, &vips);
            }
        });
    }

    async fn report(&self, state: State) {
        notify::run(
            &self.cfg.notify,
            &self.cfg.name,
            state,
            self.machine.priority(),
        );
        let (applied, done) = oneshot::channel();
        let change = StateChange {
            instance: self.cfg.name.clone(),
            state,
            vips: self.cfg.vip_addrs(),
            applied: Some(applied),
        };
        if self.states.send(change).await.is_ok() {
            // Bounded: a busy agent must not hold VRRP's timers hostage.
            let _ = tokio::time::timeout(DATA_PLANE_APPLY_TIMEOUT, done).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::parse, vrrp::socket::split_ipv4};
    use std::net::{Ipv4Addr, Ipv6Addr};

    const PEER: Ipv4Addr = Ipv4Addr::new(172, 16, 122, 189);
    const LOCAL: Ipv4Addr = Ipv4Addr::new(172, 16, 122, 188);
    const LINK: LinkInfo = LinkInfo {
        index: 2,
        mac: [2, 0, 0, 0, 0, 1],
        mtu: 1500,
    };
    const LOCAL6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x188);
    const PEER6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x189);
    const SEED_V6: &str = "[[vrrp_instance]]\nname = \"VI_6\"\nstate = \"BACKUP\"\n\
        virtual_router_id = 61\npriority = 100\nadvert_int = 1\nversion = 3\n\
        virtual_ipaddress = [\"2001:db8:122::100\"]\n";

    fn seed_instance() -> InstanceConfig {
        let c = parse("seed", include_str!("../../../configs/seed-dr.toml")).unwrap();
        InstanceConfig::from_config(c.vrrp_instance[0].get_ref(), "eth0", LINK, LOCAL.into())
            .unwrap()
    }

    fn instance_of(toml: &str, local: IpAddr) -> Result<InstanceConfig> {
        let c = parse("vrrp", toml).unwrap();
        InstanceConfig::from_config(c.vrrp_instance[0].get_ref(), "eth0", LINK, local)
    }

    /// What the IPv4 socket hands over for raw bytes.
    fn check(cfg: &InstanceConfig, raw: &[u8]) -> Result<Option<(IpAddr, Advert)>, DropReason> {
        validate(cfg, split_ipv4(raw).as_ref())
    }

    /// An IPv4 packet carrying `payload`, from `src` with `ttl`.
    fn ip_packet(src: Ipv4Addr, ttl: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, ttl, 112, 0, 0];
        p[2..4].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&VRRP_MCAST_GROUP.octets());
        p.extend_from_slice(payload);
        p
    }

    fn advert_from_peer(cfg: &InstanceConfig, edit: impl FnOnce(&mut Advert)) -> Vec<u8> {
        let mut adv = cfg.advert(90);
        edit(&mut adv);
        ip_packet(
            PEER,
            VRRP_TTL,
            &adv.encode(PEER.into(), VRRP_MCAST_GROUP.into()),
        )
    }

    #[test]
    fn a_valid_advert_passes() {
        let cfg = seed_instance();
        let (src, adv) = check(&cfg, &advert_from_peer(&cfg, |_| {}))
            .unwrap()
            .unwrap();
        assert_eq!(src, IpAddr::from(PEER));
        assert_eq!(adv.priority, 90);
    }

    #[test]
    fn bad_adverts_are_dropped_with_the_reason() {
        let cfg = seed_instance();
        let good = cfg.advert(90).encode(PEER.into(), VRRP_MCAST_GROUP.into());
        assert_eq!(
            check(&cfg, &ip_packet(PEER, 254, &good)),
            Err(DropReason::BadTtl)
        );
        let mut bad_sum = good.clone();
        bad_sum[6] ^= 0xff;
        assert_eq!(
            check(&cfg, &ip_packet(PEER, 255, &bad_sum)),
            Err(DropReason::Malformed)
        );
        assert_eq!(
            check(&cfg, &ip_packet(PEER, 255, &good[..5])),
            Err(DropReason::Malformed)
        );
        let wrong_pass = advert_from_peer(&cfg, |a| a.auth_data = Advert::auth_data_from("2222"));
        assert_eq!(check(&cfg, &wrong_pass), Err(DropReason::AuthMismatch));
        let no_auth = advert_from_peer(&cfg, |a| a.auth_type = AUTH_NONE);
        assert_eq!(check(&cfg, &no_auth), Err(DropReason::AuthMismatch));
        let slow = advert_from_peer(&cfg, |a| a.advert_int_cs = 200);
        assert_eq!(check(&cfg, &slow), Err(DropReason::IntervalMismatch));
        assert_eq!(check(&cfg, &[1, 2, 3]), Err(DropReason::NotVrrp));
    }

    #[test]
    fn other_routers_and_our_own_packets_are_ignored() {
        let cfg = seed_instance();
        let other_vrid = advert_from_peer(&cfg, |a| a.vrid = 52);
        assert_eq!(check(&cfg, &other_vrid), Ok(None));
        let own = ip_packet(
            LOCAL,
            VRRP_TTL,
            &cfg.advert(100)
                .encode(LOCAL.into(), VRRP_MCAST_GROUP.into()),
        );
        assert_eq!(check(&cfg, &own), Ok(None));
    }

    #[test]
    fn the_seeds_instance_resolves() {
        let cfg = seed_instance();
        assert_eq!(cfg.vrid, 51);
        assert_eq!(cfg.params.priority, 100);
        assert!(cfg.params.start_as_master);
        assert_eq!(
            cfg.vips,
            vec![(Ipv4Addr::new(172, 16, 122, 100).into(), 32)]
        );
        assert_eq!(cfg.auth, Some(*b"1111\0\0\0\0"));
    }

    #[test]
    fn an_ipv6_instance_resolves_and_validates_vrrpv3_over_ipv6() {
        let cfg = instance_of(SEED_V6, LOCAL6.into()).unwrap();
        let vip: IpAddr = "2001:db8:122::100".parse().unwrap();
        assert_eq!(cfg.vips, vec![(vip, 128)]);
        assert_eq!(cfg.multicast_group(), IpAddr::from(VRRP_MCAST_GROUP6));
        let received = |src: Ipv6Addr, ttl: u8, edit: &dyn Fn(&mut Advert)| {
            let mut adv = cfg.advert(90);
            edit(&mut adv);
            Received {
                src: src.into(),
                dst: VRRP_MCAST_GROUP6.into(),
                ttl,
                payload: adv.encode(src.into(), VRRP_MCAST_GROUP6.into()),
            }
        };
        let good = received(PEER6, VRRP_TTL, &|_| {});
        let (src, adv) = validate(&cfg, Some(&good)).unwrap().unwrap();
        assert_eq!(
            (src, adv.priority, adv.addresses),
            (PEER6.into(), 90, vec![vip])
        );
        // RFC 5798: a hop limit other than 255 came from off the link.
        let far = received(PEER6, 254, &|_| {});
        assert_eq!(validate(&cfg, Some(&far)), Err(DropReason::BadTtl));
        // Our own advert, and another router's vrid: not for us.
        let own = received(LOCAL6, VRRP_TTL, &|_| {});
        assert_eq!(validate(&cfg, Some(&own)), Ok(None));
        let other = received(PEER6, VRRP_TTL, &|a| a.vrid = 62);
        assert_eq!(validate(&cfg, Some(&other)), Ok(None));
        // A payload whose checksum was made for another source.
        let mut forged = good.clone();
        forged.src = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x190).into();
        assert_eq!(validate(&cfg, Some(&forged)), Err(DropReason::Malformed));
    }

    #[test]
    fn ipv6_unicast_peers_are_heard_from_their_link_local_addresses() {
        let unicast = format!("{SEED_V6}unicast_peer = [\"2001:db8:122::189\"]\n");
        let cfg = instance_of(&unicast, LOCAL6.into()).unwrap();
        let from = |src: IpAddr| Received {
            src,
            dst: LOCAL6.into(),
            ttl: VRRP_TTL,
            payload: cfg.advert(90).encode(src, LOCAL6.into()),
        };
        // The peer's adverts leave from its link-local address.
        assert!(validate(&cfg, Some(&from(PEER6.into()))).unwrap().is_some());
        // From its listed global address too.
        let listed: IpAddr = "2001:db8:122::189".parse().unwrap();
        assert!(validate(&cfg, Some(&from(listed))).unwrap().is_some());
        // A global address nobody listed: not a peer.
        let stranger: IpAddr = "2001:db8:122::77".parse().unwrap();
        assert_eq!(
            validate(&cfg, Some(&from(stranger))),
            Err(DropReason::NotAPeer)
        );
    }

    /// (Mixed families and IPv6 over VRRPv2 are refused by the config's
    /// validation, with the line: config/tests.rs.)
    #[test]
    fn an_ipv6_instance_needs_an_ipv6_local_address() {
        let err = instance_of(SEED_V6, LOCAL.into()).unwrap_err().to_string();
        assert!(err.contains("not of the VIPs' family"), "{err}");
    }
}
