//! Connections survive failover (keepalived's lvs_sync_daemon, IPVS's sync
//! protocol), end to end as root in namespaces: the seed's two balancers
//! (MASTER 100 / BACKUP 90) with connection sync, the seed's two nginx, and
//! 16 keep-alive HTTP connections from the client, each sending a request
//! every 0.2 s through the events: the master stops cleanly, comes back and
//! preempts, then is SIGKILLed and unplugged. Every connection must keep
//! its server and get an answer to every request.

use std::{thread, time::Duration};

use lb_testbed::{
    keepalive::{self, broken, kept_their_servers},
    netns,
    topology::{Host, Topology, VIP, wait_until},
};

const CONNECTIONS: usize = 16;
/// A returning master waits for sync's catch-up, then Master_Down_Interval.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(25);
/// Requests every connection makes between two events.
const BETWEEN_EVENTS: Duration = Duration::from_secs(2);
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);
/// Every 0.2 s through four events: well over 20 answers each.
const MIN_ANSWERS: usize = 20;

fn sync_config(topo: &Topology, state: &str, priority: u8, extra: &str) -> String {
    let config = topo
        .seed_config()
        .replace("state = \"MASTER\"", &format!("state = \"{state}\""))
        .replace("priority = 100", &format!("priority = {priority}"))
        .replacen(
            "[global]\n",
            "[global]\nlvs_sync_daemon = { interface = \"eth0\", vrrp_instance = \"VI_1\" }\n",
            1,
        )
        .replacen("persistence_timeout = 0", extra, 1);
    assert!(config.contains("lvs_sync_daemon"), "{config}");
    config
}

/// The master stops, returns and preempts, then dies unplugged, while 16
/// keep-alive connections keep asking. `persistence`: the service line
/// that replaces `persistence_timeout = 0`.
fn connections_survive_every_failover(tag: &str, persistence: &str) {
    let mut topo = Topology::create(&format!("lby{}{tag}", std::process::id())).unwrap();
    topo.start_nginx(Host::Rs1, "hello rs1").unwrap();
    topo.start_nginx(Host::Rs2, "hello rs2").unwrap();
    // VRRP decides who holds the VIP (the topology gave it to the master).
    netns::ip(&[
        "-n",
        &topo.ns(Host::Lb),
        "addr",
        "del",
        &format!("{VIP}/32"),
        "dev",
        "eth0",
    ])
    .unwrap();
    let master = sync_config(&topo, "MASTER", 100, persistence);
    let backup = sync_config(&topo, "BACKUP", 90, persistence);
    topo.start_agent_with(Host::Lb, &master).unwrap();
    assert!(
        topo.wait_for_vrrp_state(Host::Lb, "MASTER", TAKEOVER_TIMEOUT),
        "{}",
        topo.agent_log()
    );
    topo.start_agent_with(Host::Lb2, &backup).unwrap();
    assert!(
        topo.wait_for_vrrp_state(Host::Lb2, "BACKUP", TAKEOVER_TIMEOUT),
        "{}",
        topo.agent_log_on(Host::Lb2)
    );

    // The backup balances its own clients too (IPVS has its rules on both).
    let local = topo.curl_on(Host::Lb2, &VIP.to_string());
    assert!(
        local
            .as_ref()
            .is_ok_and(|body| body.starts_with("hello rs")),
        "curl on the backup: {local:?}"
    );

    let client = topo.ns(Host::Client);
    let (seen, ()) = keepalive::through(&client, VIP.into(), CONNECTIONS, || {
        // The backup holds every connection before anything happens.
        let synced = wait_until(SYNC_TIMEOUT, || {
            topo.sync_applied(Host::Lb2) >= CONNECTIONS as u64
        });
        thread::sleep(BETWEEN_EVENTS);

        // (b) The master stops cleanly (priority 0): the backup takes over.
        let stopped = topo.signal_agent(Host::Lb, "TERM");
        let b_took = topo.wait_for_vrrp_state(Host::Lb2, "MASTER", TAKEOVER_TIMEOUT);
        thread::sleep(BETWEEN_EVENTS);

        // (c) It comes back and preempts once it caught up.
        topo.start_agent_with(Host::Lb, &master).unwrap();
        let a_back = topo.wait_for_vrrp_state(Host::Lb, "MASTER", TAKEOVER_TIMEOUT);
        let b_yielded = topo.wait_for_vrrp_state(Host::Lb2, "BACKUP", TAKEOVER_TIMEOUT);
        // It took over once it had heard lb2's whole table, not by a timer.
        let a_caught_up = topo.status(Host::Lb).ok().and_then(|s| s.sync);
        thread::sleep(BETWEEN_EVENTS);
        let active_a = topo.conn_counts(Host::Lb).map_or(0, |c| c.0);

        // (a) It dies without a word and its link is gone, as a machine
        // that loses power. (The link first: a killed agent's kernel, VIP
        // still configured and the XDP program gone with the process,
        // would answer the connections' packets with RSTs meanwhile.)
        topo.unplug(Host::Lb).unwrap();
        let killed = topo.signal_agent(Host::Lb, "KILL");
        let b_again = topo.wait_for_vrrp_state(Host::Lb2, "MASTER", TAKEOVER_TIMEOUT);
        thread::sleep(BETWEEN_EVENTS);
        let active_b = topo.conn_counts(Host::Lb2).map_or(0, |c| c.0);

        let log = || {
            format!(
                "{}\n--- lb2 ---\n{}",
                topo.agent_log(),
                topo.agent_log_on(Host::Lb2)
            )
        };
        assert!(
            synced.is_some(),
            "the backup never held the connections:\n{}",
            log()
        );
        assert!(stopped.is_ok_and(|ok| ok), "{}", log());
        assert!(b_took && b_yielded && a_back && b_again, "{}", log());
        let a_caught_up = a_caught_up.expect("lb's status has no sync");
        assert_eq!(
            a_caught_up.catch_up,
            "complete",
            "{a_caught_up:?}\n{}",
            log()
        );
        assert!(
            a_caught_up.peers.values().any(|p| p.full_passes >= 2),
            "{a_caught_up:?}"
        );
        assert!(killed.is_ok(), "{}", log());
        // ActiveConn on both balancers: the open connections.
        assert_eq!(active_a, CONNECTIONS as u64, "{}", log());
        assert_eq!(active_b, CONNECTIONS as u64, "{}", log());
    });
    let broken = broken(&seen);
    assert!(
        broken.is_empty(),
        "{broken:#?}\nstatus lb2: {:?}\ncounters lb2: {:?}\nconnections lb2:\n{:#?}\n{}\n--- lb2 ---\n{}",
        topo.status(Host::Lb2).ok().and_then(|s| s.sync),
        topo.counters(Host::Lb2)
            .map(|c| lb_common::counters::COUNTER_NAMES
                .iter()
                .zip(c)
                .filter(|(_, n)| *n > 0)
                .map(|(name, n)| format!("{name}={n}"))
                .collect::<Vec<_>>()),
        topo.connections(Host::Lb2),
        topo.agent_log(),
        topo.agent_log_on(Host::Lb2)
    );
    let servers = kept_their_servers(&seen, MIN_ANSWERS).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "{CONNECTIONS} connections, {} answers, servers {:?}",
        seen.iter().map(|s| s.answers.len()).sum::<usize>(),
        servers
    );
}

/// One after the other (each topology runs four agents and two nginx: in
/// parallel they would starve each other on a small machine).
#[test]
fn connections_survive_failover_with_rr_and_with_persistence() {
    connections_survive_every_failover("rr", "persistence_timeout = 0");
    connections_survive_every_failover(
        "p",
        "persistence_timeout = 300\npersistence_granularity = \"255.255.255.0\"",
    );
}

/// Bad input: a balancer that sends and receives (no vrrp_instance
/// followed) is fed truncated, oversized and mis-sized datagrams, wrong
/// versions, a stranger's sync id, records for services and servers it
/// does not have, and a flood. Each is counted by reason; only the one
/// good record is applied; the agent serves on.
#[test]
fn bad_sync_datagrams_are_counted_and_change_nothing() {
    use lb_userspace::sync::codec::{SyncConn, conn_flags, encode};
    let mut topo = Topology::create(&format!("lbz{}", std::process::id())).unwrap();
    let config = topo.seed_config().replacen(
        "[global]\n",
        "[global]\nlvs_sync_daemon = { interface = \"eth0\", id = 51 }\n",
        1,
    );
    topo.start_agent_with(Host::Lb, &config).unwrap();
    let good = SyncConn {
        protocol: 6,
        flags: conn_flags::DROUTE,
        state: 1,
        cport: 45000,
        vport: 80,
        dport: 80,
        fwmark: 0,
        timeout_s: 900,
        caddr: std::net::Ipv4Addr::new(198, 18, 0, 7).into(),
        vaddr: VIP.into(),
        daddr: lb_testbed::topology::RS2_IP.into(),
    };
    let unknown_service = SyncConn {
        vport: 8080,
        ..good
    };
    let unknown_server = SyncConn {
        daddr: std::net::Ipv4Addr::new(172, 16, 122, 77).into(),
        cport: 45001,
        ..good
    };
    let valid = encode(51, &[good, unknown_service, unknown_server], 1472).remove(0);
    let stranger = encode(
        52,
        &[SyncConn {
            cport: 45002,
            ..good
        }],
        1472,
    )
    .remove(0);
    let mut oversized = valid.clone();
    oversized.extend_from_slice(&[0; 64]);
    let mut wrong_version = valid.clone();
    wrong_version[8 + 2] |= 0x30;
    let datagrams: Vec<Vec<u8>> = vec![
        valid.clone(),
        stranger,
        valid[..20].to_vec(),
        oversized,
        wrong_version,
        vec![0xff; 3],
    ];
    let lb = (lb_testbed::topology::LB_IP, 8848);
    let client = topo.ns(Host::Client);
    thread::scope(|s| {
        s.spawn(|| {
            netns::enter(&client).unwrap();
            let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            for d in &datagrams {
                socket.send_to(d, lb).unwrap();
            }
            // A flood: 20,000 datagrams of every kind, as fast as they go.
            for i in 0..20_000 {
                let _ = socket.send_to(&datagrams[1 + i % (datagrams.len() - 1)], lb);
            }
        })
        .join()
        .unwrap();
    });
    let counted = wait_until(SYNC_TIMEOUT, || {
        topo.status(Host::Lb)
            .ok()
            .and_then(|s| s.sync)
            .is_some_and(|s| s.drops.get("syncid").copied().unwrap_or(0) > 1000)
    });
    let status = topo.status(Host::Lb).unwrap();
    let sync = status.sync.clone().unwrap();
    assert!(counted.is_some(), "{sync:?}");
    assert!(status.ready, "the agent serves on");
    for reason in [
        "syncid",
        "truncated",
        "size_mismatch",
        "version",
        "unknown_service",
        "unknown_server",
    ] {
        assert!(
            sync.drops.get(reason).copied().unwrap_or(0) > 0,
            "{reason}: {sync:?}"
        );
    }
    // Exactly the good record went in.
    assert_eq!(sync.applied_conns, 1, "{sync:?}");
    let conns = topo.connections(Host::Lb).unwrap();
    let from_record: Vec<_> = conns
        .iter()
        .filter(|c| c.client.0 == std::net::Ipv4Addr::new(198, 18, 0, 7))
        .collect();
    assert_eq!(from_record.len(), 1, "{conns:#?}");
    assert_eq!(from_record[0].client.1, 45000, "{conns:#?}");
    assert!(topo.stop_agent().unwrap(), "{}", topo.agent_log());
}
