//! End to end, as root: the seed's LVS-DR walk-through (sections 5.2-5.4)
//! replayed in network namespaces with the real agent, real nginx and real
//! curl. The topology is deleted when the test ends, pass or fail.

use std::{fs, process::Command};

use std::time::Duration;

use lb_testbed::topology::{Host, Topology, agent_binary, wait_until};

/// `lb-userspace list -n` of the topology's balancer.
fn list_n(binary: &std::path::Path, topo: &Topology) -> String {
    topo.list(binary).unwrap()
}

const SEQUENTIAL_CURLS: usize = 10;
const CONCURRENT_CURLS: usize = 200;

#[test]
fn seed_dr_round_robin_end_to_end() {
    let prefix = format!("lbe2e{}", std::process::id());
    let mut topo = Topology::create(&prefix).expect("topology");
    topo.start_nginx(Host::Rs1, "hello rs1").unwrap();
    topo.start_nginx(Host::Rs2, "hello rs2").unwrap();
    let binary = agent_binary().unwrap();
    let config = topo.write_config("lb.toml", &topo.seed_config()).unwrap();
    topo.start_agent(&binary, &config, &[]).unwrap();
    // The seed's vrrp_instance is MASTER: the agent takes the VIP itself.
    topo.wait_for_master(Host::Lb).unwrap();

    // Section 5.4: successive curls alternate between the two servers.
    let answers: Vec<String> = (0..SEQUENTIAL_CURLS)
        .map(|_| topo.curl_vip().unwrap())
        .collect();
    eprintln!("sequential answers: {answers:?}");
    let log = topo.agent_log();
    for pair in answers.windows(2) {
        assert_ne!(
            pair[0], pair[1],
            "rr must alternate: {answers:?}\nagent log:\n{log}"
        );
    }
    for a in &answers {
        assert!(
            a == "hello rs1" || a == "hello rs2",
            "unexpected answer {a:?}: {answers:?}"
        );
    }

    // Those ten connections are closed (FIN seen): InActConn 5 + 5, no
    // ActiveConn, exactly as ipvsadm counts them.
    let counted = wait_until(Duration::from_secs(3), || {
        let list = list_n(&binary, &topo);
        list.contains("  -> 172.16.122.193:80            Route   1      0          5")
            && list.contains("  -> 172.16.122.195:80            Route   1      0          5")
    });
    assert!(counted.is_some(), "{}", list_n(&binary, &topo));
    let conns = Command::new(&binary)
        .args(["list", "-c", "--pin-path"])
        .arg(topo.pin_dir())
        .output()
        .unwrap();
    let conns = String::from_utf8_lossy(&conns.stdout);
    assert_eq!(
        conns.lines().filter(|l| l.contains("FIN_WAIT")).count(),
        SEQUENTIAL_CURLS,
        "{conns}"
    );

    // Many clients at once: every one served.
    let codes = topo.curl_vip_parallel(CONCURRENT_CURLS).unwrap();
    assert_eq!(codes.len(), CONCURRENT_CURLS, "{codes:?}");
    assert!(codes.iter().all(|c| c == "200"), "{codes:?}");

    // Section 5.3: the table, as ipvsadm -L -n prints it.
    let list = Command::new(&binary)
        .args(["list", "-n", "--pin-path"])
        .arg(topo.pin_dir())
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(list.contains("TCP  172.16.122.100:80 rr\n"), "{list}");
    assert!(
        list.contains("  -> 172.16.122.193:80            Route   1      "),
        "{list}"
    );
    assert!(
        list.contains("  -> 172.16.122.195:80            Route   1      "),
        "{list}"
    );

    // The pinned maps carry BTF: bpftool prints field names.
    let dump = Command::new("bpftool")
        .args(["map", "dump", "pinned"])
        .arg(topo.pin_dir().join("services"))
        .output()
        .unwrap();
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.contains("\"backend_set\"") && dump.contains("\"vip\""),
        "{dump}"
    );

    // Stop: the interface is clean and the pins are gone.
    assert!(
        topo.lb_has_xdp().unwrap(),
        "XDP should be attached while running"
    );
    assert!(
        topo.stop_agent().unwrap(),
        "the agent should exit 0 on SIGTERM:\n{}",
        topo.agent_log()
    );
    assert!(!topo.lb_has_xdp().unwrap(), "XDP program left attached");
    assert!(
        !topo.holds_vip(Host::Lb),
        "the VIP must leave with the agent"
    );
    assert!(
        fs::metadata(topo.pin_dir()).is_err(),
        "pins left in {}",
        topo.pin_dir().display()
    );
}
