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
    // Only root may open the pinned maps.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = fs::metadata(topo.pin_dir()).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode,
        lb_userspace::dataplane::PIN_DIR_MODE,
        "pin dir mode {mode:o}"
    );
    // Started as full root; once attached every thread keeps only what it
    // still uses, the bounding set included (no script gets more back).
    for field in ["CapPrm", "CapEff", "CapInh", "CapAmb", "CapBnd"] {
        for mask in topo.agent_thread_caps(Host::Lb, field).unwrap() {
            assert_eq!(
                mask & !lb_testbed::topology::AGENT_KEPT_CAPS,
                0,
                "{field} {mask:#x}"
            );
        }
    }

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
    // Addresses read as addresses: four octets, not a host-order integer.
    let compact: String = dump.split_whitespace().collect();
    assert!(compact.contains("\"vip\":[172,16,122,100]"), "{dump}");

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

/// Bytes of the UDP datagram the client's kernel must fragment (MTU 1500).
const FRAGMENTED_DATAGRAM: usize = 3000;
/// NOP NOP NOP EOL: the smallest IP options field.
const IP_OPTIONS_NOPS: [u8; 4] = [1, 1, 1, 0];

/// The data plane's policy for fragments and IP options (documented in
/// tests/hostile.rs): passed to the balancer's own kernel, never forwarded.
/// A SYN with IP options to the VIP is answered by the balancer's kernel
/// (which owns the VIP and has no listener: refused), not by nginx on a
/// real server; a datagram the client fragments is counted fragment by
/// fragment and never creates a flow.
#[test]
fn fragments_and_ip_options_go_to_the_balancers_kernel() {
    use std::net::{SocketAddr, UdpSocket};
    let mut topo = Topology::create(&format!("lbfr{}", std::process::id())).unwrap();
    topo.start_nginx(Host::Rs1, "hello rs1").unwrap();
    topo.start_nginx(Host::Rs2, "hello rs2").unwrap();
    let binary = agent_binary().unwrap();
    let udp = "\n[[virtual_server]]\nvip = \"172.16.122.100\"\nport = 53\nprotocol = \"UDP\"\n\
               lb_algo = \"rr\"\nlb_kind = \"DR\"\n  [[virtual_server.real_server]]\n  ip = \"172.16.122.193\"\n  port = 53\n";
    let config = topo
        .write_config("lb.toml", &(topo.seed_config() + udp))
        .unwrap();
    topo.start_agent(&binary, &config, &[]).unwrap();
    topo.wait_for_master(Host::Lb).unwrap();
    assert_eq!(topo.curl_vip().unwrap(), "hello rs1");
    let before = topo.counters(Host::Lb).unwrap();

    let ns = topo.ns(Host::Client);
    let vip = lb_testbed::topology::VIP;
    let syn_with_options = std::thread::spawn(move || {
        use std::os::fd::AsRawFd as _;
        lb_testbed::netns::enter(&ns).unwrap();
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .unwrap();
        // SAFETY: a plain setsockopt on our own socket with a live buffer.
        let rc = unsafe {
            nix::libc::setsockopt(
                socket.as_raw_fd(),
                nix::libc::IPPROTO_IP,
                nix::libc::IP_OPTIONS,
                IP_OPTIONS_NOPS.as_ptr().cast(),
                IP_OPTIONS_NOPS.len() as nix::libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "setsockopt IP_OPTIONS");
        let connected =
            socket.connect_timeout(&SocketAddr::from((vip, 80)).into(), Duration::from_secs(3));
        let refused =
            matches!(&connected, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused);
        let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
        udp.send_to(&[0u8; FRAGMENTED_DATAGRAM], (vip, 53)).unwrap();
        (refused, connected.is_ok())
    });
    let (refused, connected) = syn_with_options.join().unwrap();
    assert!(
        refused && !connected,
        "a SYN with IP options must reach the balancer's kernel (refused), not a real server"
    );
    let counted = wait_until(Duration::from_secs(5), || {
        let now = topo.counters(Host::Lb).unwrap();
        let delta = |i: u32| now[i as usize] - before[i as usize];
        delta(lb_common::counters::PASS_IP_OPTIONS) >= 1
            && delta(lb_common::counters::PASS_FRAGMENT) >= 2
    });
    let now = topo.counters(Host::Lb).unwrap();
    assert!(counted.is_some(), "before {before:?}\nafter {now:?}");
    assert_eq!(
        now[lb_common::counters::FLOW_NEW as usize],
        before[lb_common::counters::FLOW_NEW as usize],
        "fragments or options created a flow"
    );
    assert!(topo.stop_agent().unwrap(), "{}", topo.agent_log());
}
