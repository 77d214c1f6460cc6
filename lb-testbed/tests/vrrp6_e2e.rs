//! VRRPv3 over IPv6 end to end, as root, in namespaces: an IPv6 VIP
//! (2001:db8:122::100) governed by a vrrp_instance, adverts from the
//! link-local address to ff02::12, the VIP taken over nodad and announced
//! with unsolicited neighbour advertisements. Interop with Debian's real
//! keepalived (each side MASTER in turn) and failover between two of our
//! balancers: long-lived keep-alive connections that keep asking through
//! the master's clean stop, its return (preemption) and its death (SIGKILL,
//! cable pulled), each answered by its first server every time: rr, which
//! would send a connection the new master never saw elsewhere, with
//! connection sync carrying the IPv6 connections (IPVS's 72-byte records).

use std::{
    thread,
    time::{Duration, Instant},
};

use lb_testbed::{
    keepalive,
    topology::{Host, LB_IP6, LB2_IP6, Topology, VIP6, wait_until},
};

/// Master_Down_Interval of a backup with priority 90: 3 x 1 s + (256 - 90) / 256 s.
const BACKUP_MASTER_DOWN: Duration = Duration::from_millis(3000 + 166 * 1000 / 256);
/// Slack for process start-up, the 100 ms polling and scheduling.
const SLACK: Duration = Duration::from_secs(2);
const ELECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// A returning master that follows sync waits for its catch-up, then
/// preempts.
const PREEMPT_TIMEOUT: Duration = Duration::from_secs(25);
/// Until the backup holds every connection.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);
const SAMPLES: usize = 10;
const VRID: u8 = 61;
/// Keep-alive connections through the failover.
const CONNECTIONS: usize = 8;

fn keepalived_conf(state: &str, priority: u8) -> String {
    format!(
        "global_defs {{\n  router_id KEEPALIVED_PEER6\n}}\n\
         vrrp_instance VI_6 {{\n  state {state}\n  interface eth0\n  virtual_router_id {VRID}\n  priority {priority}\n  advert_int 1\n  version 3\n\
           virtual_ipaddress {{\n    {VIP6}/128\n  }}\n}}\n"
    )
}

/// The dual-stack config, its IPv6 VIP governed by a VRRPv3 instance
/// (the IPv4 service stays, not governed: always balanced).
fn our_config(topo: &Topology, state: &str, priority: u8) -> String {
    format!(
        "[[vrrp_instance]]\nname = \"VI_6\"\nstate = \"{state}\"\ninterface = \"eth0\"\n\
         virtual_router_id = {VRID}\npriority = {priority}\nadvert_int = 1\nversion = 3\n\
         virtual_ipaddress = [\"{VIP6}\"]\n\n{}",
        topo.config_from("dual-stack.toml")
    )
}

fn topology(tag: &str) -> Topology {
    let mut topo = Topology::create(&format!("lbw{}{tag}", std::process::id())).unwrap();
    topo.start_nginx(Host::Rs1, "hello rs1").unwrap();
    topo.start_nginx(Host::Rs2, "hello rs2").unwrap();
    for rs in [Host::Rs1, Host::Rs2] {
        topo.realserver(rs, &["start", "--vip", &VIP6.to_string()])
            .unwrap();
    }
    topo
}

fn curl6(topo: &Topology) -> Option<String> {
    topo.curl_on(Host::Client, &format!("[{VIP6}]")).ok()
}

/// Asserts exactly `holder` holds the VIP, SAMPLES times.
fn assert_only_holder(topo: &Topology, holder: Host, other: Host) {
    topo.assert_only_holder(Topology::holds_vip6, holder, other, SAMPLES);
}

#[test]
fn ours_master_with_keepalived_backup_over_ipv6() {
    let mut topo = topology("a");
    topo.start_agent_with(Host::Lb, &our_config(&topo, "MASTER", 100))
        .unwrap();
    assert!(
        topo.wait_for_vrrp_state(Host::Lb, "MASTER", ELECTION_TIMEOUT)
            && wait_until(ELECTION_TIMEOUT, || topo.holds_vip6(Host::Lb)).is_some(),
        "{}",
        topo.agent_log()
    );
    topo.start_keepalived(Host::Lb2, &keepalived_conf("BACKUP", 90))
        .unwrap();
    assert_only_holder(&topo, Host::Lb, Host::Lb2);
    let klog = topo.keepalived_log(Host::Lb2);
    assert!(klog.contains("Entering BACKUP STATE"), "{klog}");
    assert!(
        !klog.contains("Entering MASTER STATE"),
        "keepalived must accept our VRRPv3 adverts over IPv6:\n{klog}"
    );
    // The VIP is balanced here: curl -6 reaches the servers.
    assert!(curl6(&topo).is_some_and(|a| a.starts_with("hello rs")));

    // A clean stop sends priority 0: keepalived takes over after its skew.
    assert!(topo.stop_agent().unwrap());
    let took = wait_until(BACKUP_MASTER_DOWN + SLACK, || topo.holds_vip6(Host::Lb2));
    assert!(
        took.is_some(),
        "keepalived did not take the IPv6 VIP:\n{}",
        topo.keepalived_log(Host::Lb2)
    );
    assert!(!topo.holds_vip6(Host::Lb), "we must give the VIP up");
}

#[test]
fn keepalived_master_with_ours_backup_over_ipv6() {
    let mut topo = topology("b");
    topo.start_keepalived(Host::Lb2, &keepalived_conf("MASTER", 100))
        .unwrap();
    assert!(
        wait_until(ELECTION_TIMEOUT, || topo.holds_vip6(Host::Lb2)).is_some(),
        "{}",
        topo.keepalived_log(Host::Lb2)
    );
    topo.start_agent_with(Host::Lb, &our_config(&topo, "BACKUP", 90))
        .unwrap();
    assert!(
        topo.wait_for_vrrp_state(Host::Lb, "BACKUP", ELECTION_TIMEOUT),
        "{}",
        topo.agent_log()
    );
    assert_only_holder(&topo, Host::Lb2, Host::Lb);

    // The client learns the VIP at keepalived's host (its neighbour cache):
    // our unsolicited advertisements must move it after the takeover.
    lb_testbed::netns::exec_in(
        &topo.ns(Host::Client),
        &["ping", "-6", "-c", "1", "-W", "2", &VIP6.to_string()],
    )
    .unwrap();

    // keepalived dies without a word: we take over after Master_Down_Interval.
    let killed = Instant::now();
    topo.signal_keepalived(Host::Lb2, "KILL").unwrap();
    let took = wait_until(BACKUP_MASTER_DOWN + SLACK, || topo.holds_vip6(Host::Lb));
    assert!(
        took.is_some(),
        "we did not take the IPv6 VIP:\n{}",
        topo.agent_log()
    );
    eprintln!(
        "we took the IPv6 VIP {:?} after keepalived was killed",
        killed.elapsed()
    );
    assert!(
        topo.wait_for_vrrp_state(Host::Lb, "MASTER", ELECTION_TIMEOUT),
        "{}",
        topo.agent_log()
    );
    // The killed keepalived's host still holds the VIP (nobody removed it)
    // and would answer a solicitation too: the client's cache must point
    // at us because we announced.
    let answers: Vec<Option<String>> = (0..4).map(|_| curl6(&topo)).collect();
    assert!(
        answers
            .iter()
            .all(|a| a.as_deref().is_some_and(|a| a.starts_with("hello rs"))),
        "{answers:?}"
    );
}

#[test]
fn failover_between_two_balancers_over_ipv6() {
    let mut topo = topology("c");
    // rr over the IPv6 service, connection sync following the instance:
    // the backup holds every connection before it takes over.
    let config = |topo: &Topology, state, priority| {
        format!(
            "[global]\nlvs_sync_daemon = {{ interface = \"eth0\", vrrp_instance = \"VI_6\" }}\n\n{}",
            our_config(topo, state, priority)
        )
    };
    let master_conf = config(&topo, "MASTER", 100);
    assert_eq!(
        master_conf.matches("lb_algo = \"rr\"").count(),
        2,
        "{master_conf}"
    );
    topo.start_agent_with(Host::Lb, &master_conf).unwrap();
    assert!(topo.wait_for_vrrp_state(Host::Lb, "MASTER", PREEMPT_TIMEOUT));
    topo.start_agent_with(Host::Lb2, &config(&topo, "BACKUP", 90))
        .unwrap();
    assert!(
        topo.wait_for_vrrp_state(Host::Lb2, "BACKUP", ELECTION_TIMEOUT),
        "{}",
        topo.agent_log_on(Host::Lb2)
    );
    assert_only_holder(&topo, Host::Lb, Host::Lb2);

    // While the connections keep asking: (a) the master stops cleanly
    // (priority 0: the backup takes over after its skew), (b) it comes
    // back and preempts, (c) it dies (SIGKILL) and its cable goes with it
    // (a dead machine answers nothing, its VIP included): the backup takes
    // over after Master_Down_Interval.
    let client = topo.ns(Host::Client);
    let topo_ref = &mut topo;
    let (seen, ()) = keepalive::through(&client, VIP6.into(), CONNECTIONS, || {
        let holder_is = |topo: &Topology, holder: Host, other: Host, timeout| {
            wait_until(timeout, || {
                topo.holds_vip6(holder) && !topo.holds_vip6(other)
            })
            .is_some()
        };
        assert!(
            wait_until(SYNC_TIMEOUT, || topo_ref.sync_applied(Host::Lb2)
                >= CONNECTIONS as u64)
            .is_some(),
            "the backup never held the IPv6 connections: {:?}\n{}",
            topo_ref.status(Host::Lb2).ok().and_then(|s| s.sync),
            topo_ref.agent_log_on(Host::Lb2)
        );
        assert!(topo_ref.stop_agent().unwrap());
        assert!(
            holder_is(topo_ref, Host::Lb2, Host::Lb, ELECTION_TIMEOUT),
            "{}",
            topo_ref.agent_log_on(Host::Lb2)
        );
        thread::sleep(keepalive::REQUEST_PERIOD * 5);
        topo_ref.start_agent_with(Host::Lb, &master_conf).unwrap();
        assert!(
            holder_is(topo_ref, Host::Lb, Host::Lb2, PREEMPT_TIMEOUT),
            "the backup must yield:\n{}",
            topo_ref.agent_log_on(Host::Lb2)
        );
        thread::sleep(keepalive::REQUEST_PERIOD * 5);
        // The cable first, as sync_e2e does: the other way round, the
        // killed agent's kernel (VIP still configured, XDP program gone
        // with the process) answers whatever arrives in between with an
        // RST (seen once in CI: two connections reset).
        let master = topo_ref.agent_pid(Host::Lb).unwrap().to_string();
        topo_ref.unplug(Host::Lb).unwrap();
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &master])
            .status();
        assert!(killed.is_ok_and(|s| s.success()));
        let died = Instant::now();
        assert!(
            wait_until(BACKUP_MASTER_DOWN + SLACK, || topo_ref
                .holds_vip6(Host::Lb2))
            .is_some(),
            "{}",
            topo_ref.agent_log_on(Host::Lb2)
        );
        eprintln!(
            "the backup took the IPv6 VIP {:?} after the master died",
            died.elapsed()
        );
        // A few more requests on each connection through the survivor.
        thread::sleep(keepalive::REQUEST_PERIOD * 5);
        // ActiveConn on the survivor: the open IPv6 connections, synced.
        assert_eq!(
            topo_ref.conn_counts(Host::Lb2).map_or(0, |c| c.0),
            CONNECTIONS as u64,
            "{}",
            topo_ref.agent_log_on(Host::Lb2)
        );
    });
    let broken = keepalive::broken(&seen);
    assert!(broken.is_empty(), "{broken:?}");
    let servers = keepalive::kept_their_servers(&seen, 15).unwrap();
    eprintln!("{CONNECTIONS} keep-alive connections kept their servers: {servers:?}");
    assert!(curl6(&topo).is_some_and(|a| a.starts_with("hello rs")));
}

/// unicast_peer over IPv6: adverts leave from the link-local address to
/// the peer's global one, and are heard although the peer list holds
/// global addresses (a backup that heard nothing would be MASTER after
/// Master_Down_Interval: both would hold the VIP).
#[test]
fn unicast_peers_over_ipv6() {
    let mut topo = topology("u");
    let config = |topo: &Topology, state, priority, peer: std::net::Ipv6Addr| {
        our_config(topo, state, priority).replacen(
            "virtual_ipaddress = ",
            &format!("unicast_peer = [\"{peer}\"]\nvirtual_ipaddress = "),
            1,
        )
    };
    let master = config(&topo, "MASTER", 100, LB2_IP6);
    assert!(master.contains("unicast_peer"), "{master}");
    topo.start_agent_with(Host::Lb, &master).unwrap();
    assert!(topo.wait_for_vrrp_state(Host::Lb, "MASTER", ELECTION_TIMEOUT));
    topo.start_agent_with(Host::Lb2, &config(&topo, "BACKUP", 90, LB_IP6))
        .unwrap();
    assert!(
        topo.wait_for_vrrp_state(Host::Lb2, "BACKUP", ELECTION_TIMEOUT),
        "{}",
        topo.agent_log_on(Host::Lb2)
    );
    thread::sleep(BACKUP_MASTER_DOWN + SLACK);
    assert_eq!(
        topo.vrrp_states(Host::Lb2),
        ["BACKUP"],
        "the backup must hear the master's unicast adverts:\n{}\n--- master ---\n{}\n{:?}",
        topo.agent_log_on(Host::Lb2),
        topo.agent_log(),
        topo.status(Host::Lb2).map(|s| s.vrrp)
    );
    assert_only_holder(&topo, Host::Lb, Host::Lb2);
    // The master stops: its priority-0 advert, unicast, hands over.
    assert!(topo.stop_agent().unwrap());
    assert!(
        wait_until(ELECTION_TIMEOUT, || topo.holds_vip6(Host::Lb2)).is_some(),
        "{}",
        topo.agent_log_on(Host::Lb2)
    );
    assert!(curl6(&topo).is_some_and(|a| a.starts_with("hello rs")));
}
