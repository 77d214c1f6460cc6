//! Operating the agent end to end, as root, in namespaces (the seed's DR
//! topology, real nginx, real curl, the real agent): a reload that adds a
//! server and changes weights while a long download runs through the VIP
//! (the download must arrive whole: no connection dropped, no flow moved),
//! VRRP must not flap, a bad file must change nothing and be reported with
//! its line:column, `status` must show it all, and the metrics endpoint
//! must answer a real scrape. The agent runs with only the capabilities the
//! packaged systemd unit gives it.

use std::{
    fs,
    path::Path,
    process::{Command, Output},
    time::Duration,
};

use lb_testbed::{
    download::{BIG_FILE, serve_big_file, slow_download, wait_until_listed_active},
    netns,
    netns::exec_in,
    topology::{AGENT_KEPT_CAPS, Host, LB_IP, Topology, VIP, agent_binary, wait_until},
};

const WAIT: Duration = Duration::from_secs(10);
/// wrr at 3:1 after the reload: exactly 30:10 over 40 requests.
const WRR_REQUESTS: usize = 40;
const METRICS_PORT: u16 = 9100;

fn cli(binary: &Path, topo: &Topology, args: &[&str]) -> Output {
    Command::new(binary)
        .args(args)
        .arg("--pin-path")
        .arg(topo.pin_dir())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The seed's lb.toml with wrr and the given real servers (ip, weight).
fn config(topo: &Topology, reals: &[(&str, u32)]) -> String {
    let seed = topo.seed_config();
    let head_end = seed.find("  [[virtual_server.real_server]]").unwrap();
    let mut out = seed[..head_end].replace("lb_algo = \"rr\"", "lb_algo = \"wrr\"");
    for (ip, weight) in reals {
        out += &format!(
            "  [[virtual_server.real_server]]\n  ip = \"{ip}\"\n  port = 80\n  weight = {weight}\n\
             \x20   [virtual_server.real_server.tcp_check]\n    connect_timeout = 3\n\n"
        );
    }
    out
}

/// The capabilities the packaged systemd unit leaves the agent
/// (CapabilityBoundingSet), in setpriv's spelling: "-all,+bpf,...".
fn unit_bounding_set() -> String {
    let unit = fs::read_to_string(
        lb_testbed::topology::configs_dir().join("../packaging/lb-userspace.service"),
    )
    .unwrap();
    let caps = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("no CapabilityBoundingSet in the unit");
    std::iter::once("-all".to_string())
        .chain(
            caps.split_whitespace()
                .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_ascii_lowercase())),
        )
        .collect::<Vec<_>>()
        .join(",")
}

/// The agent as the systemd unit runs it: root, but only the unit's
/// capabilities (setpriv drops the rest from the bounding set).
fn agent_with_unit_capabilities(topo: &Topology) -> std::path::PathBuf {
    let wrapper = topo.workdir().join("lb-userspace-unit-caps");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec setpriv --bounding-set {} -- {} \"$@\"\n",
            unit_bounding_set(),
            agent_binary().unwrap().display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

#[test]
fn reload_status_and_metrics_end_to_end() {
    let mut topo = Topology::create(&format!("lbo{}", std::process::id())).unwrap();
    let binary = agent_with_unit_capabilities(&topo);
    let data = serve_big_file(&topo);
    topo.start_nginx(Host::Rs1, "hello rs1").unwrap();
    topo.start_nginx(Host::Rs2, "hello rs2").unwrap();
    let path = topo
        .write_config("lb.toml", &config(&topo, &[("172.16.122.193", 1)]))
        .unwrap();
    let metrics = format!("{LB_IP}:{METRICS_PORT}");
    topo.start_agent(&binary, &path, &["--metrics-listen", &metrics])
        .unwrap();
    topo.wait_for_master(Host::Lb).unwrap();
    assert_eq!(topo.curl_vip().unwrap(), "hello rs1");
    // Attached: every thread of the agent is down to what it still uses
    // (the bounding set is the unit's; the agent lacks CAP_SETPCAP there).
    for field in ["CapPrm", "CapEff", "CapInh", "CapAmb"] {
        for mask in topo.agent_thread_caps(Host::Lb, field).unwrap() {
            assert_eq!(mask & !AGENT_KEPT_CAPS, 0, "{field} {mask:#x}");
        }
    }

    // A long download through the VIP, established before the reload.
    let download = slow_download(&topo, BIG_FILE);
    let established = wait_until(WAIT, || {
        topo.list(&binary)
            .unwrap()
            .contains("172.16.122.193:80            Route   1      1 ")
    });
    assert!(established.is_some(), "{}", topo.list(&binary).unwrap());

    // The balancer knows rs2's MAC already (as after any earlier traffic),
    // so rs2 serves from the moment the reload adds it.
    exec_in(
        &topo.ns(Host::Lb),
        &["ping", "-c", "1", "-W", "2", "172.16.122.195"],
    )
    .unwrap();
    // Reload: rs2 joins, weights become 3:1. rs2 comes first in the new
    // file: ids by position would hand rs1's connection to rs2.
    fs::write(
        &path,
        config(&topo, &[("172.16.122.195", 1), ("172.16.122.193", 3)]),
    )
    .unwrap();
    let out = cli(&binary, &topo, &["reload"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("1 real servers added"),
        "{}",
        text(&out.stdout)
    );
    let body = download
        .join()
        .expect("the download through the VIP failed");
    assert_eq!(body.len(), data.len(), "the download was cut short");
    assert!(body == data, "the download arrived corrupted");

    // The new weights are in force: wrr 3:1.
    let answers: Vec<String> = (0..WRR_REQUESTS)
        .map(|_| topo.curl_vip().unwrap())
        .collect();
    let rs1 = answers.iter().filter(|a| *a == "hello rs1").count();
    assert_eq!((rs1, WRR_REQUESTS - rs1), (30, 10), "{answers:?}");
    // VRRP did not flap: still master, entered MASTER once.
    let log = topo.agent_log();
    assert_eq!(log.matches("entering MASTER state").count(), 1, "{log}");
    assert!(topo.holds_vip(Host::Lb));

    // A bad file changes nothing and says where it is wrong.
    fs::write(&path, "[[virtual_server]]\nvip = \"not an address\"\n").unwrap();
    let out = cli(&binary, &topo, &["reload"]);
    assert!(!out.status.success(), "a bad file was accepted");
    assert!(
        text(&out.stderr).contains("lb.toml:2:7"),
        "no line:column in: {}",
        text(&out.stderr)
    );
    let list = topo.list(&binary).unwrap();
    assert!(
        list.contains("172.16.122.193:80            Route   3 "),
        "{list}"
    );
    assert!(
        list.contains("172.16.122.195:80            Route   1 "),
        "{list}"
    );
    assert_eq!(topo.curl_vip_parallel(10).unwrap(), vec!["200"; 10]);

    // status: VRRP, checkers, reloads, fill.
    let out = cli(&binary, &topo, &["status"]);
    let status = text(&out.stdout);
    assert!(out.status.success(), "{status}{}", text(&out.stderr));
    for expected in [
        "reloads: 1 ok, 1 refused",
        "VI_1         MASTER  vrid 51 ",
        "172.16.122.195:80     TCP_CHECK  UP   serving  weight 1 ",
        "flows",
    ] {
        assert!(
            status.contains(expected),
            "missing {expected:?} in\n{status}"
        );
    }

    // A real scrape from the client.
    let url = format!("http://{metrics}/metrics");
    let scrape = exec_in(
        &topo.ns(Host::Client),
        &["curl", "-sf", "--max-time", "5", &url],
    )
    .unwrap();
    let scraped = text(&scrape.stdout);
    for expected in [
        r#"lb_reloads_total{result="ok"} 1"#,
        r#"lb_reloads_total{result="refused"} 1"#,
        r#"lb_vrrp_state{instance="VI_1",state="MASTER"} 1"#,
        r#"lb_real_weight{protocol="TCP",vip="172.16.122.100",port="80",real="172.16.122.193",real_port="80"} 3"#,
        r#"lb_real_healthy{protocol="TCP",service="172.16.122.100:80",real="172.16.122.195",real_port="80",checker="TCP_CHECK"} 1"#,
        r#"lb_dataplane_packets_total{reason="flow_new"}"#,
        r#"lb_map_capacity{map="flow_table"} 65536"#,
    ] {
        assert!(
            scraped.contains(expected),
            "missing {expected} in\n{scraped}"
        );
    }
    let conns: u64 = scraped
        .lines()
        .find(|l| l.starts_with("lb_service_connections_total{"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0);
    assert!(conns > WRR_REQUESTS as u64, "{scraped}");
    assert!(topo.stop_agent().unwrap(), "{}", topo.agent_log());
}

/// Hitless restart: an agent stopped with --keep-dataplane leaves the
/// program forwarding and the maps pinned; the next agent adopts them
/// (bpf_link_update swaps its program in). A download through the VIP
/// that runs across the restart arrives whole, the counters go on, and a
/// plain SIGTERM afterwards still removes everything. The socket-level
/// programs for the director's own clients are kept and adopted the same
/// way: a local connection open across the restart is followed to its end.
#[test]
fn hitless_restart_keeps_connections_and_counters() {
    use lb_common::counters::FLOW_NEW;
    let mut topo = Topology::create(&format!("lbh{}", std::process::id())).unwrap();
    let binary = agent_binary().unwrap();
    let data = serve_big_file(&topo);
    topo.start_nginx(Host::Rs1, "hello rs1").unwrap();
    topo.start_nginx(Host::Rs2, "hello rs2").unwrap();
    let path = topo.write_config("lb.toml", &topo.seed_config()).unwrap();
    topo.start_agent(&binary, &path, &["--keep-dataplane"])
        .unwrap();
    topo.wait_for_master(Host::Lb).unwrap();
    assert!(topo.curl_vip().unwrap().starts_with("hello rs"));

    let download = slow_download(&topo, BIG_FILE);
    wait_until_listed_active(&topo, &binary);
    let new_flows = topo.counters(Host::Lb).unwrap()[FLOW_NEW as usize];
    let lb = topo.ns(Host::Lb);
    let local = std::thread::spawn(move || {
        netns::enter(&lb).unwrap();
        std::net::TcpStream::connect((VIP, 80)).unwrap()
    })
    .join()
    .unwrap();
    // The download and the local connection.
    assert_eq!(topo.conn_counts(Host::Lb).unwrap().0, 2);

    assert!(topo.stop_agent().unwrap(), "{}", topo.agent_log());
    let kept_local_link = topo.pin_dir().join("local_local_connect4");
    assert!(kept_local_link.exists(), "the local programs were not kept");
    assert!(
        topo.curl_on(Host::Lb, &VIP.to_string())
            .unwrap()
            .starts_with("hello rs"),
        "local clients are not balanced between the agents"
    );
    // Nobody at the wheel: the program still balances, the maps stay.
    assert!(
        topo.lb_has_xdp().unwrap(),
        "the program left with the agent"
    );
    assert!(topo.pin_dir().join("flow_table").exists());
    assert!(topo.curl_vip().unwrap().starts_with("hello rs"));
    assert!(topo.holds_vip(Host::Lb), "the VIP left with the agent");

    // An agent that cannot adopt (another flow-table size) refuses to
    // start and changes nothing: the program still forwards.
    let refused = topo.start_agent(&binary, &path, &["--flow-table-size", "1024"]);
    assert!(refused.is_err(), "a mismatched flow table was adopted");
    assert!(
        topo.agent_log()
            .contains("restart with --flow-table-size 65536")
    );
    assert!(
        topo.lb_has_xdp().unwrap(),
        "a refused adoption removed the program"
    );
    assert!(topo.pin_dir().join("flow_table").exists());
    assert!(topo.curl_vip().unwrap().starts_with("hello rs"));

    topo.start_agent(&binary, &path, &[]).unwrap();
    let log = topo.agent_log();
    assert!(log.contains("adopting the data plane"), "{log}");
    assert!(log.contains("replaced in place"), "{log}");
    let body = download
        .join()
        .expect("the download broke across the restart");
    assert_eq!(body.len(), data.len(), "the download was cut short");
    assert!(body == data, "the download arrived corrupted");
    // The counters went on from where they were.
    assert!(topo.counters(Host::Lb).unwrap()[FLOW_NEW as usize] > new_flows);
    assert!(topo.curl_vip().unwrap().starts_with("hello rs"));
    assert!(topo.holds_vip(Host::Lb));
    // The new agent's socket programs replaced the kept ones.
    assert!(!kept_local_link.exists(), "the kept local programs stayed");
    assert!(topo.status(Host::Lb).unwrap().local_clients.is_some());
    assert!(
        topo.curl_on(Host::Lb, &VIP.to_string())
            .unwrap()
            .starts_with("hello rs")
    );
    // The local connection, still counted, leaves the count when it closes.
    assert!(
        wait_until(WAIT, || topo.conn_counts(Host::Lb).unwrap().0 == 1).is_some(),
        "{:#?}",
        topo.connections(Host::Lb)
    );
    drop(local);
    assert!(
        wait_until(WAIT, || topo.conn_counts(Host::Lb).unwrap().0 == 0).is_some(),
        "{:#?}",
        topo.connections(Host::Lb)
    );

    // Without --keep-dataplane a stop still removes everything.
    assert!(topo.stop_agent().unwrap(), "{}", topo.agent_log());
    assert!(
        !topo.lb_has_xdp().unwrap(),
        "the program outlived a plain stop"
    );
    assert!(!topo.pin_dir().exists(), "pins outlived a plain stop");
}
