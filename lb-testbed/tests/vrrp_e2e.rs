//! VRRP end to end, as root, in namespaces: interop with Debian's real
//! keepalived (each side MASTER in turn, PASS auth, wrong password), and
//! failover between two of our balancers in front of two nginx servers
//! (the seed's MASTER 100 / BACKUP 90 pair) with a client curling the VIP.

use std::{
    thread,
    time::{Duration, Instant},
};

use lb_testbed::topology::{Host, Topology, VIP, wait_until};
use lb_userspace::vrrp::{
    packet::{AUTH_PASS, Advert},
    socket::split_ipv4,
};

/// Master_Down_Interval of the seed's backup: 3 x 1 s + (256 - 90) / 256 s.
const BACKUP_MASTER_DOWN: Duration = Duration::from_millis(3000 + 166 * 1000 / 256);
/// Slack for process start-up, the 100 ms polling and scheduling.
const SLACK: Duration = Duration::from_secs(2);
const ELECTION_TIMEOUT: Duration = Duration::from_secs(10);
const SAMPLES: usize = 15;

fn keepalived_conf(state: &str, priority: u8, pass: &str) -> String {
    format!(
        "global_defs {{\n  router_id KEEPALIVED_PEER\n}}\n\
         vrrp_instance VI_1 {{\n  state {state}\n  interface eth0\n  virtual_router_id 51\n  priority {priority}\n  advert_int 1\n\
           authentication {{\n    auth_type PASS\n    auth_pass {pass}\n  }}\n\
           virtual_ipaddress {{\n    {VIP}\n  }}\n}}\n"
    )
}

/// The seed's lb.toml with the vrrp_instance as given.
fn our_config(topo: &Topology, state: &str, priority: u8, pass: &str) -> String {
    topo.seed_config()
        .replace("state = \"MASTER\"", &format!("state = \"{state}\""))
        .replace("priority = 100", &format!("priority = {priority}"))
        .replace("auth_pass = \"1111\"", &format!("auth_pass = \"{pass}\""))
}

/// Asserts exactly `holder` holds the VIP, SAMPLES times.
fn assert_only_holder(topo: &Topology, holder: Host, other: Host) {
    topo.assert_only_holder(Topology::holds_vip, holder, other, SAMPLES);
}

fn topology(tag: &str) -> Topology {
    let mut topo = Topology::create(&format!("lbv{}{tag}", std::process::id())).unwrap();
    topo.start_nginx(Host::Rs1, "hello rs1").unwrap();
    topo.start_nginx(Host::Rs2, "hello rs2").unwrap();
    topo
}

#[test]
fn ours_master_with_keepalived_backup() {
    let mut topo = topology("a");
    let config = topo.seed_config();
    topo.start_agent_with(Host::Lb, &config).unwrap();
    topo.wait_for_master(Host::Lb).unwrap();
    topo.start_keepalived(Host::Lb2, &keepalived_conf("BACKUP", 90, "1111"))
        .unwrap();
    assert_only_holder(&topo, Host::Lb, Host::Lb2);
    let klog = topo.keepalived_log(Host::Lb2);
    assert!(klog.contains("Entering BACKUP STATE"), "{klog}");
    assert!(
        !klog.contains("Entering MASTER STATE"),
        "keepalived must accept our adverts:\n{klog}"
    );
    assert!(topo.curl_vip().unwrap().starts_with("hello rs"));

    // A clean stop sends priority 0: keepalived takes over after its skew.
    let stopped = Instant::now();
    assert!(topo.stop_agent().unwrap());
    let took = wait_until(BACKUP_MASTER_DOWN + SLACK, || topo.holds_vip(Host::Lb2));
    assert!(
        took.is_some(),
        "keepalived did not take the VIP:\n{}",
        topo.keepalived_log(Host::Lb2)
    );
    eprintln!(
        "keepalived took the VIP {:?} after our agent stopped",
        stopped.elapsed()
    );
    assert!(!topo.holds_vip(Host::Lb));
}

#[test]
fn keepalived_master_with_ours_backup() {
    let mut topo = topology("b");
    topo.start_keepalived(Host::Lb2, &keepalived_conf("MASTER", 100, "1111"))
        .unwrap();
    assert!(
        wait_until(ELECTION_TIMEOUT, || topo.holds_vip(Host::Lb2)).is_some(),
        "{}",
        topo.keepalived_log(Host::Lb2)
    );

    // keepalived's advert on the wire, decoded by our codec and rebuilt by
    // our encoder byte for byte; kept as a fixture for inspection.
    let raw = topo.capture_vrrp(Host::Lb, Duration::from_secs(5)).unwrap();
    if let Some(dir) = option_env!("CARGO_TARGET_TMPDIR") {
        let _ = std::fs::write(format!("{dir}/keepalived-vrrpv2-advert.bin"), &raw);
    }
    let pkt = split_ipv4(&raw).expect("an IPv4 VRRP packet");
    assert_eq!(pkt.ttl, 255);
    assert_eq!(pkt.src, Host::Lb2.ip());
    let adv = Advert::decode(&pkt.payload, pkt.src, pkt.dst).unwrap();
    assert_eq!((adv.version, adv.vrid, adv.priority), (2, 51, 100));
    assert_eq!(
        (adv.auth_type, adv.auth_data),
        (AUTH_PASS, Advert::auth_data_from("1111"))
    );
    assert_eq!(adv.advert_int_cs, 100);
    assert_eq!(adv.addresses, vec![VIP]);
    assert_eq!(
        adv.encode(pkt.src, pkt.dst),
        pkt.payload,
        "our encoder must match keepalived's bytes"
    );

    let config = our_config(&topo, "BACKUP", 90, "1111");
    topo.start_agent_with(Host::Lb, &config).unwrap();
    assert!(
        topo.wait_for_vrrp_state(Host::Lb, "BACKUP", ELECTION_TIMEOUT),
        "{}",
        topo.agent_log()
    );
    assert_only_holder(&topo, Host::Lb2, Host::Lb);

    // Clients have been talking to the VIP (their ARP caches point at
    // keepalived's host): our gratuitous ARPs must move them. Without this a
    // fresh client's ARP query would also be answered by the killed
    // keepalived's host, which still holds the VIP, as with keepalived alone.
    lb_testbed::netns::exec_in(
        &topo.ns(Host::Client),
        &["ping", "-c", "1", "-W", "2", &VIP.to_string()],
    )
    .unwrap();

    // keepalived dies without a word: we take over after Master_Down_Interval.
    let killed = Instant::now();
    topo.signal_keepalived(Host::Lb2, "KILL").unwrap();
    let took = wait_until(BACKUP_MASTER_DOWN + SLACK, || topo.holds_vip(Host::Lb));
    assert!(
        took.is_some(),
        "we did not take the VIP:\n{}",
        topo.agent_log()
    );
    eprintln!(
        "we took the VIP {:?} after keepalived was killed (Master_Down_Interval {BACKUP_MASTER_DOWN:?})",
        killed.elapsed()
    );
    topo.wait_for_master(Host::Lb).unwrap();
    assert!(topo.curl_vip().unwrap().starts_with("hello rs"));
}

#[test]
fn wrong_auth_pass_is_ignored_by_both_sides() {
    let mut topo = topology("c");
    let config = topo.seed_config();
    topo.start_agent_with(Host::Lb, &config).unwrap();
    topo.wait_for_master(Host::Lb).unwrap();
    topo.start_keepalived(Host::Lb2, &keepalived_conf("BACKUP", 90, "2222"))
        .unwrap();
    // keepalived drops our adverts (bad password), misses a master, and
    // takes the VIP too: the split brain an operator would see with keepalived.
    let both = wait_until(BACKUP_MASTER_DOWN + SLACK * 2, || topo.holds_vip(Host::Lb2));
    assert!(
        both.is_some(),
        "keepalived should become master:\n{}",
        topo.keepalived_log(Host::Lb2)
    );
    assert!(
        topo.keepalived_log(Host::Lb2)
            .contains("Entering MASTER STATE")
    );
    // We drop keepalived's adverts the same way and stay master.
    assert!(
        wait_until(SLACK, || topo.agent_log().contains("AuthMismatch")).is_some(),
        "{}",
        topo.agent_log()
    );
    assert!(topo.holds_vip(Host::Lb));
    assert_eq!(
        topo.vrrp_states(Host::Lb),
        ["MASTER"],
        "{}",
        topo.agent_log()
    );
}

/// A client curling the VIP every 100 ms (1 s limit each) for `duration`:
/// (time since start, answered) per request.
fn curl_loop(topo: &Topology, duration: Duration) -> Vec<(Duration, bool)> {
    let start = Instant::now();
    let mut results = Vec::new();
    while start.elapsed() < duration {
        let ok = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &topo.ns(Host::Client),
                "curl",
                "-s",
                "--max-time",
                "1",
            ])
            .arg(format!("http://{VIP}/"))
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).starts_with("hello rs"));
        results.push((start.elapsed(), ok));
        thread::sleep(Duration::from_millis(100));
    }
    results
}

fn kill(pid: &str, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), pid])
        .status();
    assert!(status.is_ok_and(|s| s.success()), "kill -{signal} {pid}");
}

/// (outage from the first failure to the next success, failed requests).
fn outage(results: &[(Duration, bool)]) -> (Duration, usize) {
    let failed = results.iter().filter(|(_, ok)| !ok).count();
    let Some(first_fail) = results.iter().position(|(_, ok)| !ok) else {
        return (Duration::ZERO, 0);
    };
    let recovered = results[first_fail..]
        .iter()
        .find(|(_, ok)| *ok)
        .map(|(t, _)| *t);
    (
        recovered.unwrap_or(results.last().unwrap().0) - results[first_fail].0,
        failed,
    )
}

#[test]
fn failover_between_two_balancers() {
    let mut topo = topology("d");
    let master_conf = topo.seed_config();
    let backup_conf = our_config(&topo, "BACKUP", 90, "1111");
    topo.start_agent_with(Host::Lb, &master_conf).unwrap();
    topo.wait_for_master(Host::Lb).unwrap();
    topo.start_agent_with(Host::Lb2, &backup_conf).unwrap();
    assert!(
        topo.wait_for_vrrp_state(Host::Lb2, "BACKUP", ELECTION_TIMEOUT),
        "{}",
        topo.agent_log_on(Host::Lb2)
    );

    // SIGKILL: no priority 0, the backup waits out Master_Down_Interval.
    let topo_ref = &topo;
    let master = topo.agent_pid(Host::Lb).unwrap().to_string();
    let results = thread::scope(|s| {
        let client = s.spawn(|| curl_loop(topo_ref, Duration::from_secs(8)));
        thread::sleep(Duration::from_secs(1));
        kill(&master, "KILL");
        client.join().unwrap()
    });
    let (kill_outage, kill_failed) = outage(&results);
    eprintln!(
        "SIGKILL of the master: outage {kill_outage:?}, {kill_failed} of {} requests failed",
        results.len()
    );
    assert!(
        topo.holds_vip(Host::Lb2),
        "{}",
        topo.agent_log_on(Host::Lb2)
    );
    assert!(
        results.last().unwrap().1,
        "the backup must answer at the end: {results:?}"
    );
    assert!(kill_outage <= BACKUP_MASTER_DOWN + SLACK, "{kill_outage:?}");

    // The master comes back and preempts (state MASTER, priority 100).
    let _ = topo.signal_agent(Host::Lb, "KILL");
    topo.start_agent_with(Host::Lb, &master_conf).unwrap();
    topo.wait_for_master(Host::Lb).unwrap();
    assert!(
        wait_until(ELECTION_TIMEOUT, || !topo.holds_vip(Host::Lb2)).is_some(),
        "the backup must yield:\n{}",
        topo.agent_log_on(Host::Lb2)
    );
    assert!(topo.curl_vip().unwrap().starts_with("hello rs"));

    // Clean stop: priority 0, the backup takes over after its skew only.
    let topo_ref = &topo;
    let master = topo.agent_pid(Host::Lb).unwrap().to_string();
    let results = thread::scope(|s| {
        let client = s.spawn(|| curl_loop(topo_ref, Duration::from_secs(5)));
        thread::sleep(Duration::from_secs(1));
        kill(&master, "TERM");
        client.join().unwrap()
    });
    let (stop_outage, stop_failed) = outage(&results);
    eprintln!(
        "clean stop of the master: outage {stop_outage:?}, {stop_failed} of {} requests failed",
        results.len()
    );
    assert!(topo.holds_vip(Host::Lb2));
    assert!(results.last().unwrap().1, "{results:?}");
    assert!(stop_outage <= BACKUP_MASTER_DOWN, "{stop_outage:?}");
}

#[test]
fn track_interface_down_is_fault_and_up_is_master_again() {
    let mut topo = topology("e");
    // A tracked link inside the balancer: a veth pair, so its carrier can be
    // cut by setting the peer down.
    let ns = topo.ns(Host::Lb);
    let ip = |args: &[&str]| lb_testbed::netns::ip(&[&["-n", &ns], args].concat()).unwrap();
    ip(&[
        "link", "add", "trk0", "type", "veth", "peer", "name", "trk1",
    ]);
    ip(&["link", "set", "trk0", "up"]);
    ip(&["link", "set", "trk1", "up"]);
    let config = topo.seed_config().replace(
        "virtual_ipaddress = [\"172.16.122.100\"]",
        "virtual_ipaddress = [\"172.16.122.100\"]\ntrack_interface = [\"trk0\"]",
    );
    topo.start_agent_with(Host::Lb, &config).unwrap();
    topo.wait_for_master(Host::Lb).unwrap();

    ip(&["link", "set", "trk1", "down"]);
    assert!(
        wait_until(ELECTION_TIMEOUT, || !topo.holds_vip(Host::Lb)).is_some(),
        "the VIP must go in FAULT:\n{}",
        topo.agent_log()
    );
    assert!(
        topo.wait_for_vrrp_state(Host::Lb, "FAULT", ELECTION_TIMEOUT),
        "{}",
        topo.agent_log()
    );

    ip(&["link", "set", "trk1", "up"]);
    // FAULT -> BACKUP -> no master heard -> MASTER after Master_Down_Interval.
    assert!(
        wait_until(ELECTION_TIMEOUT, || topo.holds_vip(Host::Lb)).is_some(),
        "{}",
        topo.agent_log()
    );
    assert!(topo.agent_log().contains("entering BACKUP state"));
    topo.wait_for_master(Host::Lb).unwrap();
    assert!(topo.curl_vip().unwrap().starts_with("hello rs"));
}
