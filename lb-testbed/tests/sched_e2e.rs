//! Schedulers, persistence and the ipvsadm views end to end, as root, in
//! namespaces: the seed's DR topology with real nginx, real curl and the
//! real agent, restarted with each config. The topology is deleted when
//! the test ends, pass or fail.

use std::{
    net::{SocketAddr, TcpStream},
    process::Command,
    time::Duration,
};

use lb_testbed::topology::{Host, Topology, VIP, agent_binary, wait_until};

const RS1: &str = "hello rs1";
const RS2: &str = "hello rs2";
/// The seed's section 4 count, scaled: 40 requests at wrr 3:1.
const WRR_REQUESTS: usize = 40;
const STICKY_REQUESTS: usize = 10;
/// Connections held open while `list -n` is read.
const OPEN_CONNECTIONS: usize = 3;
/// Persistence short enough to watch a template go.
const PERSISTENCE_S: u32 = 2;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound of every wait for the agent's sweeps.
const SWEEP_WAIT: Duration = Duration::from_secs(20);

/// The seed's lb.toml with another scheduler, weights and persistence.
fn config(topo: &Topology, algo: &str, weights: [u32; 2], persistence: u32, extra: &str) -> String {
    let seed = topo.seed_config();
    assert!(seed.contains("lb_algo = \"rr\"") && seed.matches("weight = 1").count() == 2);
    seed.replace("lb_algo = \"rr\"", &format!("lb_algo = \"{algo}\""))
        .replace(
            "persistence_timeout = 0",
            &format!("persistence_timeout = {persistence}"),
        )
        .replacen("weight = 1", &format!("weight = {}", weights[0]), 1)
        .replacen("weight = 1", &format!("weight = {}", weights[1]), 1)
        + extra
}

/// Restarts the agent on the balancer with `text` as lb.toml.
fn run_agent(topo: &mut Topology, binary: &std::path::Path, name: &str, text: &str) {
    let _ = topo.stop_agent();
    let path = topo.write_config(name, text).unwrap();
    topo.start_agent(binary, &path, &[]).unwrap();
    topo.wait_for_master(Host::Lb).unwrap();
}

fn list(binary: &std::path::Path, topo: &Topology, args: &[&str]) -> String {
    let out = Command::new(binary)
        .arg("list")
        .args(args)
        .arg("--pin-path")
        .arg(topo.pin_dir())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// ActiveConn summed over the destinations of `list -n`.
fn active_conns(list_n: &str) -> u64 {
    list_n
        .lines()
        .filter(|l| l.starts_with("  -> ") && !l.contains("RemoteAddress"))
        .filter_map(|l| l.split_whitespace().nth(4)?.parse::<u64>().ok())
        .sum()
}

/// `n` TCP connections to the VIP opened from the client's namespace (a
/// thread of ours enters it to connect); they stay ESTABLISHED until dropped.
fn hold_connections(topo: &Topology, n: usize) -> Vec<TcpStream> {
    let ns = topo.ns(Host::Client);
    std::thread::scope(|s| {
        s.spawn(|| {
            lb_testbed::netns::enter(&ns).unwrap();
            (0..n)
                .map(|_| {
                    TcpStream::connect_timeout(&SocketAddr::from((VIP, 80)), CONNECT_TIMEOUT)
                        .unwrap()
                })
                .collect()
        })
        .join()
        .unwrap()
    })
}

fn curls(topo: &Topology, n: usize) -> Vec<String> {
    (0..n).map(|_| topo.curl_vip().unwrap()).collect()
}

#[test]
fn schedulers_persistence_and_listing_end_to_end() {
    let prefix = format!("lbsch{}", std::process::id());
    let mut topo = Topology::create(&prefix).expect("topology");
    topo.start_nginx(Host::Rs1, RS1).unwrap();
    topo.start_nginx(Host::Rs2, RS2).unwrap();
    let binary = agent_binary().unwrap();

    // wrr 3:1: exactly 30 and 10 of 40 sequential requests.
    let text = config(&topo, "wrr", [3, 1], 0, "");
    run_agent(&mut topo, &binary, "wrr.toml", &text);
    // The flow table's size and memory are reported at start.
    assert!(
        topo.agent_log().contains("flow table: 65536 connections, "),
        "{}",
        topo.agent_log()
    );
    let answers = curls(&topo, WRR_REQUESTS);
    let rs1 = answers.iter().filter(|a| *a == RS1).count();
    let rs2 = answers.iter().filter(|a| *a == RS2).count();
    assert_eq!((rs1, rs2), (30, 10), "{answers:?}\n{}", topo.agent_log());

    // list -n counts the connections open at this moment: TCP connections
    // the client holds open (ESTABLISHED), then closes (FIN: inactive).
    let held = hold_connections(&topo, OPEN_CONNECTIONS);
    let open = wait_until(SWEEP_WAIT, || {
        active_conns(&list(&binary, &topo, &["-n"])) == OPEN_CONNECTIONS as u64
    });
    assert!(
        open.is_some(),
        "{}\n{}",
        list(&binary, &topo, &["-n"]),
        list(&binary, &topo, &["-c"])
    );
    drop(held);
    let closed = wait_until(SWEEP_WAIT, || {
        active_conns(&list(&binary, &topo, &["-n"])) == 0
    });
    assert!(
        closed.is_some(),
        "{}\n{}",
        list(&binary, &topo, &["-n"]),
        list(&binary, &topo, &["-c"])
    );

    // --stats: the service saw every connection; --save: ipvsadm -S lines.
    let stats = list(&binary, &topo, &["-n", "--stats"]);
    assert!(
        stats.contains(
            "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes"
        ),
        "{stats}"
    );
    let service_conns: u64 = stats
        .lines()
        .find(|l| l.starts_with("TCP  172.16.122.100:80"))
        .and_then(|l| l.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(0);
    assert_eq!(
        service_conns,
        (WRR_REQUESTS + OPEN_CONNECTIONS) as u64,
        "{stats}"
    );
    let save = list(&binary, &topo, &["--save"]);
    assert!(
        save.contains("-A -t 172.16.122.100:80 -s wrr\n")
            && save.contains("-a -t 172.16.122.100:80 -r 172.16.122.193:80 -g -w 3\n")
            && save.contains("-a -t 172.16.122.100:80 -r 172.16.122.195:80 -g -w 1\n"),
        "{save}"
    );

    // --json: the same table for tooling.
    let json: serde_json::Value =
        serde_json::from_str(&list(&binary, &topo, &["--json"])).expect("list --json is JSON");
    assert_eq!(json["services"][0]["scheduler"], "wrr", "{json}");
    assert_eq!(json["services"][0]["dests"][0]["weight"], 3, "{json}");
    assert_eq!(
        json["services"][0]["traffic"]["conns"],
        (WRR_REQUESTS + OPEN_CONNECTIONS) as u64,
        "{json}"
    );

    // sh: one client, one server, whatever the connection.
    let text = config(&topo, "sh", [1, 1], 0, "");
    run_agent(&mut topo, &binary, "sh.toml", &text);
    let answers = curls(&topo, STICKY_REQUESTS);
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    assert!(answers[0] == RS1 || answers[0] == RS2, "{answers:?}");

    // Persistence (the seed's persistence_timeout, shortened): rr alone
    // would alternate; the template keeps the client on its server, then
    // lets it go persistence_timeout after its connections ended.
    let timeouts = "\n[timeouts]\ntcp = 900\ntcpfin = 1\nudp = 300\n";
    let text = config(&topo, "rr", [1, 1], PERSISTENCE_S, timeouts);
    run_agent(&mut topo, &binary, "persist.toml", &text);
    let answers = curls(&topo, STICKY_REQUESTS);
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    let conns = list(&binary, &topo, &["-c"]);
    assert!(
        conns.contains("NONE        172.16.122.50:0"),
        "the template is listed as ipvsadm does:\n{conns}"
    );
    let released = wait_until(SWEEP_WAIT, || {
        list(&binary, &topo, &["-c"]).lines().count() == 2
    });
    assert!(released.is_some(), "{}", list(&binary, &topo, &["-c"]));
    let after = topo.curl_vip().unwrap();
    assert_ne!(after, answers[0], "released: rr moves to the other server");

    assert!(topo.stop_agent().unwrap(), "{}", topo.agent_log());
}
