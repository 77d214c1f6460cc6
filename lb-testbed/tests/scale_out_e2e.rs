//! Scale-out end to end, as root in namespaces: a router running BIRD 2
//! with kernel ECMP (ports hashed) in front of balancers that announce the
//! VIP over BGP through the BIRD their agent runs; the client on its own
//! subnet behind the router; the seed's two nginx answering it directly
//! (DR). 32 keep-alive connections each ask every 0.2 s while a third
//! balancer joins, one is drained, and one is SIGKILLed and unplugged:
//! every connection keeps its server and gets every answer — with mh
//! (identical tables on every balancer) and with rr plus connection sync
//! in both directions. An IPv6 VIP beside the IPv4 one is announced in the
//! sessions' ipv6 channel and spread the same way; IPv6 keep-alive
//! connections keep their servers through a drain.

use std::{thread, time::Duration, time::Instant};

use lb_testbed::{
    keepalive::{self, broken, kept_their_servers},
    topology::{Host, Topology, VIP, VIP6, agent_binary},
};

const CONNECTIONS: usize = 32;
/// BGP sessions up and routes in the router's table.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests every connection makes between two events.
const BETWEEN_EVENTS: Duration = Duration::from_secs(2);
/// Every 0.2 s through three events: well over 20 answers each.
const MIN_ANSWERS: usize = 20;
/// `drain --timeout`: the router's withdrawal plus DRAIN_QUIET, with room.
const DRAIN_TIMEOUT_S: &str = "20";

fn tx_packets(topo: &Topology, host: Host) -> u64 {
    topo.counters(host)
        .map_or(0, |c| c[lb_common::counters::TX as usize])
}

/// What the events measured.
#[derive(Debug, Default)]
struct Events {
    joined: Option<Duration>,
    drained: Option<Duration>,
    drain_output: String,
    drain_ok: bool,
    /// From the SIGKILL to the router's withdrawal.
    death_to_withdrawal: Option<Duration>,
    /// The agent's BIRD ran before the kill, and went with it.
    bird_ran: bool,
    bird_died_with_agent: bool,
    both_carried: bool,
}

/// The three agents' logs and the router's BIRD's.
fn logs_of(topo: &Topology) -> String {
    format!(
        "--- lb ---\n{}\n--- lb2 ---\n{}\n--- lb3 ---\n{}\n--- router ---\n{}",
        topo.agent_log(),
        topo.agent_log_on(Host::Lb2),
        topo.agent_log_on(Host::Lb3),
        topo.router_log()
    )
}

fn scale_out(tag: &str, scheduler: &str, sync: bool, bfd: bool) {
    let mut topo = Topology::create(&format!("lbs{}{tag}", std::process::id())).unwrap();
    topo.start_nginx(Host::Rs1, "hello rs1").unwrap();
    topo.start_nginx(Host::Rs2, "hello rs2").unwrap();
    topo.make_scale_out(bfd).unwrap();
    let config = topo.scale_out_config(scheduler, sync, bfd);
    topo.start_agent_with(Host::Lb, &config).unwrap();
    topo.start_agent_with(Host::Lb2, &config).unwrap();
    let logs = logs_of;
    assert!(
        topo.wait_for_next_hops(&[Host::Lb, Host::Lb2], ROUTE_TIMEOUT)
            .is_some(),
        "the router never spread the VIP over both balancers: {:?}\n{}",
        topo.router_next_hops(),
        logs(&topo)
    );
    let status = topo.status(Host::Lb).unwrap();
    let bgp = status.bgp.expect("bgp in the status");
    assert_eq!(bgp.announced, vec![VIP]);
    // BIRD runs with what the agent kept: BGP's port, not CAP_SYS_ADMIN.
    const CAP_NET_BIND_SERVICE: u64 = 1 << 10;
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    let caps = topo.effective_caps_of(Host::Lb, "bird").unwrap_or(0);
    assert!(
        caps & CAP_NET_BIND_SERVICE != 0 && caps & CAP_SYS_ADMIN == 0,
        "BIRD's capabilities: {caps:#x}"
    );

    if !sync {
        neighbor_added_by_reload(&mut topo, &config);
    }

    let client = topo.ns(Host::Client);
    let before = (tx_packets(&topo, Host::Lb), tx_packets(&topo, Host::Lb2));
    let (seen, events) = keepalive::through(&client, VIP.into(), CONNECTIONS, || {
        let mut events = Events::default();
        thread::sleep(BETWEEN_EVENTS);
        // ECMP gave both balancers some of the connections.
        events.both_carried =
            tx_packets(&topo, Host::Lb) > before.0 && tx_packets(&topo, Host::Lb2) > before.1;

        // (c) A third balancer joins: the router rehashes, connections
        // move to it mid-stream.
        topo.start_agent_with(Host::Lb3, &config).unwrap();
        events.joined = topo.wait_for_next_hops(&[Host::Lb, Host::Lb2, Host::Lb3], ROUTE_TIMEOUT);
        thread::sleep(BETWEEN_EVENTS);

        // (b) One is drained: withdrawn, its connections go to the others;
        // `drain` returns once nothing reaches it any more.
        let drain = std::process::Command::new(agent_binary().unwrap())
            .args(["drain", "--timeout", DRAIN_TIMEOUT_S, "--pin-path"])
            .arg(topo.pin_dir_on(Host::Lb2))
            .output()
            .unwrap();
        events.drain_ok = drain.status.success();
        events.drain_output = format!(
            "{}{}",
            String::from_utf8_lossy(&drain.stdout),
            String::from_utf8_lossy(&drain.stderr)
        );
        events.drained = topo.wait_for_next_hops(&[Host::Lb, Host::Lb3], ROUTE_TIMEOUT);
        thread::sleep(BETWEEN_EVENTS);

        // (a) One dies without a word and its link is gone.
        events.bird_ran = topo.processes_in(Host::Lb).iter().any(|p| p == "bird");
        topo.unplug(Host::Lb).unwrap();
        let killed = Instant::now();
        topo.signal_agent(Host::Lb, "KILL").unwrap();
        events.death_to_withdrawal = topo
            .wait_for_next_hops(&[Host::Lb3], ROUTE_TIMEOUT)
            .map(|_| killed.elapsed());
        events.bird_died_with_agent = lb_testbed::topology::wait_until(ROUTE_TIMEOUT, || {
            !topo.processes_in(Host::Lb).iter().any(|p| p == "bird")
        })
        .is_some();
        thread::sleep(BETWEEN_EVENTS);
        events
    });
    eprintln!("{tag}: {events:?}");
    assert!(events.both_carried, "{events:?}\n{}", logs(&topo));
    assert!(
        events.joined.is_some(),
        "lb3 never joined: {:?}\n{}",
        topo.router_next_hops(),
        logs(&topo)
    );
    assert!(
        events.drained.is_some(),
        "lb2 was not withdrawn: {:?} {events:?}\n{}",
        topo.router_next_hops(),
        logs(&topo)
    );
    assert!(
        events.drain_ok && events.drain_output.contains("drained in"),
        "{events:?}"
    );
    assert!(
        events.death_to_withdrawal.is_some(),
        "the dead balancer was never withdrawn: {:?}\n{}",
        topo.router_next_hops(),
        logs(&topo)
    );
    assert!(
        events.bird_ran && events.bird_died_with_agent,
        "BIRD outlived its SIGKILLed agent: {:?}",
        topo.processes_in(Host::Lb)
    );
    let broken = broken(&seen);
    assert!(broken.is_empty(), "{broken:#?}\n{}", logs(&topo));
    let servers = kept_their_servers(&seen, MIN_ANSWERS).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        servers.iter().any(|s| s == "hello rs1") && servers.iter().any(|s| s == "hello rs2"),
        "{servers:?}"
    );
    eprintln!(
        "{tag}: {CONNECTIONS} connections, {} answers; death to withdrawal {:?} (BFD {bfd})",
        seen.iter().map(|s| s.answers.len()).sum::<usize>(),
        events.death_to_withdrawal
    );
}

/// A reload that adds a neighbor reaches BIRD (`birdc configure`) without
/// resetting the session that is up: the router keeps both next hops.
fn neighbor_added_by_reload(topo: &mut Topology, config: &str) {
    const ABSENT_ROUTER: &str = "172.16.122.2";
    let more = config.replacen(
        "[[bgp.neighbor]]",
        &format!(
            "[[bgp.neighbor]]\naddress = \"{ABSENT_ROUTER}\"\nremote_as = 65001\n[[bgp.neighbor]]"
        ),
        1,
    );
    let sessions = |topo: &Topology| {
        topo.status(Host::Lb)
            .ok()
            .and_then(|s| s.bgp)
            .map(|b| b.sessions)
            .unwrap_or_default()
    };
    let up_since = sessions(topo)
        .first()
        .map(|s| s.since.clone())
        .unwrap_or_default();
    assert!(!up_since.is_empty(), "{:?}", sessions(topo));
    std::fs::write(topo.agent_config_path(Host::Lb), &more).unwrap();
    let reload = std::process::Command::new(agent_binary().unwrap())
        .args(["reload", "--pin-path"])
        .arg(topo.pin_dir())
        .output()
        .unwrap();
    assert!(reload.status.success(), "{reload:?}");
    let both = lb_testbed::topology::wait_until(ROUTE_TIMEOUT, || sessions(topo).len() == 2);
    assert!(both.is_some(), "{:?}\n{}", sessions(topo), topo.agent_log());
    let to_router = sessions(topo)
        .into_iter()
        .find(|s| s.neighbor.to_string() != ABSENT_ROUTER)
        .unwrap();
    assert!(to_router.established(), "{to_router:?}");
    assert_eq!(
        topo.router_next_hops(),
        vec![Host::Lb.ip(), Host::Lb2.ip()],
        "{}",
        topo.router_log()
    );
    // The session was not reset: up since the same moment.
    assert_eq!(to_router.since, up_since, "{to_router:?}");
}

/// mh (ports hashed): every balancer has the same table, so a connection
/// that ECMP moves lands on the same server without any sync.
#[test]
fn connections_keep_their_servers_with_mh_through_join_drain_and_death() {
    scale_out("mh", "lb_algo = \"mh\"\nmh_port = true", false, false);
}

/// rr: the balancers tell each other every connection (sync in both
/// directions, a joining balancer waits for the catch-up before it is
/// announced), with BFD to the router.
#[test]
fn connections_keep_their_servers_with_rr_and_sync_and_bfd() {
    scale_out("rr", "lb_algo = \"rr\"", true, true);
}

/// keepalived's quorum decides the announcement: a balancer whose real
/// servers all fail their checks withdraws the VIP (the router stops
/// sending to it) and announces it again once one is back.
#[test]
fn a_vip_without_its_quorum_of_servers_is_withdrawn() {
    /// TCP_CHECK every 2 s, connect timeout 3 s, no retry: a few seconds.
    const CHECK_TIMEOUT: Duration = Duration::from_secs(20);
    let mut topo = Topology::create(&format!("lbq{}", std::process::id())).unwrap();
    topo.start_nginx(Host::Rs1, "hello rs1").unwrap();
    topo.start_nginx(Host::Rs2, "hello rs2").unwrap();
    topo.make_scale_out(false).unwrap();
    let config = topo.scale_out_config("lb_algo = \"rr\"", false, false);
    topo.start_agent_with(Host::Lb, &config).unwrap();
    assert!(
        topo.wait_for_next_hops(&[Host::Lb], ROUTE_TIMEOUT)
            .is_some(),
        "{}",
        topo.router_log()
    );
    topo.stop_nginx(Host::Rs1);
    // One server left: quorum 1 still holds.
    thread::sleep(BETWEEN_EVENTS);
    topo.stop_nginx(Host::Rs2);
    let withdrawn = topo.wait_for_next_hops(&[], CHECK_TIMEOUT);
    assert!(
        withdrawn.is_some(),
        "still announced without servers: {:?}\n{}",
        topo.router_next_hops(),
        topo.agent_log()
    );
    let bgp = topo.status(Host::Lb).unwrap().bgp.unwrap();
    assert!(bgp.announced.is_empty(), "{bgp:?}");
    topo.start_nginx(Host::Rs2, "hello rs2").unwrap();
    assert!(
        topo.wait_for_next_hops(&[Host::Lb], CHECK_TIMEOUT)
            .is_some(),
        "not announced again: {}",
        topo.agent_log()
    );
    assert_eq!(topo.curl_vip().unwrap(), "hello rs2");
}

/// IPv6 connections through the scale-out.
const CONNECTIONS6: usize = 16;

#[test]
fn ipv6_vips_are_announced_and_spread_over_the_balancers() {
    let mut topo = Topology::create(&format!("lbs{}v6", std::process::id())).unwrap();
    topo.start_nginx(Host::Rs1, "hello rs1").unwrap();
    topo.start_nginx(Host::Rs2, "hello rs2").unwrap();
    for rs in [Host::Rs1, Host::Rs2] {
        topo.realserver(rs, &["start", "--vip", &VIP6.to_string()])
            .unwrap();
    }
    topo.make_scale_out(false).unwrap();
    let config = topo.scale_out_config6("lb_algo = \"mh\"\nmh_port = true");
    topo.start_agent_with(Host::Lb, &config).unwrap();
    topo.start_agent_with(Host::Lb2, &config).unwrap();
    let logs = logs_of;
    assert!(
        topo.wait_for_next_hops6(&[Host::Lb, Host::Lb2], ROUTE_TIMEOUT)
            .is_some(),
        "the router never spread the IPv6 VIP over both balancers: {:?}\n{}",
        topo.router_next_hops6(),
        logs(&topo)
    );
    assert_eq!(
        topo.router_next_hops(),
        [Host::Lb, Host::Lb2].map(|h| h.ip()),
        "the IPv4 VIP beside it"
    );
    let bgp = topo
        .status(Host::Lb)
        .unwrap()
        .bgp
        .expect("bgp in the status");
    assert_eq!(bgp.announced, vec![VIP.into(), std::net::IpAddr::V6(VIP6)]);

    let client = topo.ns(Host::Client);
    let before = (tx_packets(&topo, Host::Lb), tx_packets(&topo, Host::Lb2));
    let (seen, (both_carried, drained)) =
        keepalive::through(&client, VIP6.into(), CONNECTIONS6, || {
            thread::sleep(BETWEEN_EVENTS);
            let both_carried =
                tx_packets(&topo, Host::Lb) > before.0 && tx_packets(&topo, Host::Lb2) > before.1;
            // lb2 is drained: the IPv6 route (and the IPv4 one) withdrawn,
            // its connections move to lb mid-stream; mh keeps their servers.
            let drain = std::process::Command::new(agent_binary().unwrap())
                .args(["drain", "--timeout", DRAIN_TIMEOUT_S, "--pin-path"])
                .arg(topo.pin_dir_on(Host::Lb2))
                .output()
                .unwrap();
            let drained = drain.status.success()
                && topo
                    .wait_for_next_hops6(&[Host::Lb], ROUTE_TIMEOUT)
                    .is_some();
            thread::sleep(BETWEEN_EVENTS);
            (both_carried, drained)
        });
    assert!(
        both_carried,
        "ECMP gave both balancers IPv6 connections\n{}",
        logs(&topo)
    );
    assert!(drained, "{:?}\n{}", topo.router_next_hops6(), logs(&topo));
    let broken = broken(&seen);
    assert!(broken.is_empty(), "{broken:#?}\n{}", logs(&topo));
    let servers = kept_their_servers(&seen, MIN_ANSWERS / 2).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{CONNECTIONS6} IPv6 connections kept their servers through the drain: {servers:?}");
}
