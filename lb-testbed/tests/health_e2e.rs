//! End to end, as root: the seed's section 5.5 — stop nginx on a real
//! server, watch it leave the table and the traffic, start it again, watch
//! it come back — plus inhibit_on_failure and quorum with a sorry server.
//! Real agent, real nginx, real curl, in namespaces deleted at the end.

use std::time::Duration;

use lb_testbed::{
    smtp_sink::SmtpSink,
    topology::{Host, Topology, agent_binary, wait_until},
};

/// keepalived timing used by these tests (issue: delay_loop 1,
/// connect_timeout 1, retry 1, delay_before_retry 1).
const FAST_CHECKS: [(&str, &str); 4] = [
    ("delay_loop = 6", "delay_loop = 1"),
    ("connect_timeout = 3", "connect_timeout = 1"),
    ("nb_get_retry = 3", "nb_get_retry = 1"),
    ("delay_before_retry = 3", "delay_before_retry = 1"),
];
/// Worst case keepalived allows from failure to removal with FAST_CHECKS:
/// wait for the next check (delay_loop) + first attempt (connect_timeout)
/// + retry x (delay_before_retry + connect_timeout).
const KEEPALIVED_BOUND: Duration = Duration::from_secs(1 + 1 + (1 + 1));
/// Slack for the 5% jitter, the 100 ms polling and process scheduling.
const SLACK: Duration = Duration::from_secs(2);
const RETURN_TIMEOUT: Duration = Duration::from_secs(15);
const CURLS: usize = 20;
const MAIL_TIMEOUT: Duration = Duration::from_secs(10);

const RS1_LINE: &str = "  -> 172.16.122.193:80            Route   1      ";
const RS2_LINE: &str = "  -> 172.16.122.195:80            Route   1      ";
const RS2_WEIGHT0_LINE: &str = "  -> 172.16.122.195:80            Route   0      ";
const SORRY_LINE: &str = "  -> 172.16.122.197:80            Route   1      ";

fn seed_with(topo: &Topology, extra_vs_keys: &str) -> String {
    let mut text = topo.seed_config();
    for (from, to) in FAST_CHECKS {
        text = text.replace(from, to);
    }
    text.replace(
        "persistence_timeout = 0",
        &format!("persistence_timeout = 0\n{extra_vs_keys}"),
    )
}

fn setup(tag: &str, extra_vs_keys: &str, sorry: bool) -> (Topology, std::path::PathBuf) {
    let topo = Topology::create(&format!("lbh{}{tag}", std::process::id())).unwrap();
    let config = seed_with(&topo, extra_vs_keys);
    start(topo, &config, sorry)
}

fn start(mut topo: Topology, config: &str, sorry: bool) -> (Topology, std::path::PathBuf) {
    topo.start_nginx(Host::Rs1, "hello rs1").unwrap();
    topo.start_nginx(Host::Rs2, "hello rs2").unwrap();
    if sorry {
        topo.start_nginx(Host::Sorry, "hello sorry").unwrap();
    }
    let config = topo.write_config("lb.toml", config).unwrap();
    let binary = agent_binary().unwrap();
    topo.start_agent(&binary, &config, &[]).unwrap();
    topo.wait_for_master(Host::Lb).unwrap();
    (topo, binary)
}

fn answers(topo: &Topology, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            topo.curl_vip()
                .unwrap_or_else(|e| format!("curl failed: {e}"))
        })
        .collect()
}

#[test]
fn seed_5_5_failed_server_leaves_and_comes_back() {
    // The seed's smtp_server is 127.0.0.1: run a sink there, in the
    // balancer's namespace, and expect keepalived's alert mails.
    let topo = Topology::create(&format!("lbh{}a", std::process::id())).unwrap();
    let sink = SmtpSink::serve(topo.listen_in(Host::Lb, "127.0.0.1:0").unwrap());
    let config = seed_with(&topo, "").replace(
        "smtp_server = \"127.0.0.1\"",
        &format!("smtp_server = \"127.0.0.1:{}\"", sink.port()),
    );
    let (mut topo, binary) = start(topo, &config, false);
    let list = topo.list(&binary).unwrap();
    assert!(list.contains(RS1_LINE) && list.contains(RS2_LINE), "{list}");

    topo.stop_nginx(Host::Rs2);
    let removed_after = wait_until(KEEPALIVED_BOUND + SLACK, || {
        !topo.list(&binary).unwrap().contains("172.16.122.195")
    });
    let log = topo.agent_log();
    let removed_after = removed_after.unwrap_or_else(|| {
        panic!(
            "rs2 not removed within {:?}:\n{log}",
            KEEPALIVED_BOUND + SLACK
        )
    });
    eprintln!(
        "rs2 removed {removed_after:?} after nginx stopped (keepalived bound {KEEPALIVED_BOUND:?})"
    );
    assert!(
        log.contains("172.16.122.195:80 of virtual server 172.16.122.100:80: DOWN"),
        "{log}"
    );
    assert!(
        log.contains("connection refused"),
        "the reason is logged:\n{log}"
    );

    let got = answers(&topo, CURLS);
    assert!(
        got.iter().all(|a| a == "hello rs1"),
        "only rs1 may answer, no failures: {got:?}"
    );
    let mailed = wait_until(MAIL_TIMEOUT, || {
        sink.mails().iter().any(|m| {
            m.contains(
                "Subject: [LVS_DEVEL] Realserver [172.16.122.195]:tcp:80 of [172.16.122.100]:tcp:80 - DOWN",
            )
        })
    });
    assert!(
        mailed.is_some(),
        "no DOWN mail: {:?}\n{}",
        sink.mails(),
        topo.agent_log()
    );

    topo.start_nginx(Host::Rs2, "hello rs2").unwrap();
    let back_after = wait_until(RETURN_TIMEOUT, || {
        topo.list(&binary).unwrap().contains(RS2_LINE)
    });
    assert!(
        back_after.is_some(),
        "rs2 did not come back:\n{}",
        topo.agent_log()
    );
    eprintln!("rs2 back {:?} after nginx started", back_after.unwrap());
    let got = answers(&topo, 6);
    for pair in got.windows(2) {
        assert_ne!(pair[0], pair[1], "alternation resumes: {got:?}");
    }
}

#[test]
fn inhibit_on_failure_keeps_the_server_with_weight_zero() {
    let (mut topo, binary) = setup("b", "inhibit_on_failure = true", false);
    topo.stop_nginx(Host::Rs2);
    let inhibited = wait_until(KEEPALIVED_BOUND + SLACK, || {
        topo.list(&binary).unwrap().contains(RS2_WEIGHT0_LINE)
    });
    assert!(
        inhibited.is_some(),
        "{}\n{}",
        topo.list(&binary).unwrap(),
        topo.agent_log()
    );
    let got = answers(&topo, CURLS);
    assert!(got.iter().all(|a| a == "hello rs1"), "{got:?}");
}

#[test]
fn quorum_lost_sends_everything_to_the_sorry_server() {
    let (mut topo, binary) = setup(
        "c",
        "quorum = 2\nsorry_server = { ip = \"172.16.122.197\", port = 80 }",
        true,
    );
    let got = answers(&topo, 4);
    assert!(
        !got.contains(&"hello sorry".to_string()),
        "quorum holds: {got:?}"
    );
    topo.stop_nginx(Host::Rs2);
    let sorry = wait_until(KEEPALIVED_BOUND + SLACK, || {
        let list = topo.list(&binary).unwrap();
        list.contains(SORRY_LINE) && !list.contains("172.16.122.193")
    });
    assert!(
        sorry.is_some(),
        "{}\n{}",
        topo.list(&binary).unwrap(),
        topo.agent_log()
    );
    let got = answers(&topo, CURLS);
    assert!(got.iter().all(|a| a == "hello sorry"), "{got:?}");
    // rs2 back: quorum regained, the sorry server leaves.
    topo.start_nginx(Host::Rs2, "hello rs2").unwrap();
    let regained = wait_until(RETURN_TIMEOUT, || {
        let list = topo.list(&binary).unwrap();
        list.contains(RS1_LINE) && list.contains(RS2_LINE) && !list.contains("172.16.122.197")
    });
    assert!(
        regained.is_some(),
        "{}\n{}",
        topo.list(&binary).unwrap(),
        topo.agent_log()
    );
}
