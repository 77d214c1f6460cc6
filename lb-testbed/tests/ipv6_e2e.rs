//! End to end, as root: the seed's topology with its IPv6 addresses
//! (2001:db8:122::/64 beside 172.16.122.0/24), one agent serving the seed's
//! DR service on an IPv4 and an IPv6 VIP at once (configs/dual-stack.toml),
//! real nginx and curl -6; the IPv6 server stopped and restarted is removed
//! and added back by its check; persistence by an IPv6 prefix, turned on by
//! a reload; curl -6 typed on the director, balanced by connect6. TUN over
//! IPv6: IPv6-in-IPv6 to servers that run rs_decap (`realserver start
//! --mode tun`), an upload that needs the balancer's ICMPv6 Packet Too Big. NAT66, one-armed with port mapping: the client on
//! another IPv6 subnet, the real servers routing through the balancer. The
//! namespaces go when the test ends.

use std::{
    net::{IpAddr, SocketAddr, TcpStream},
    time::Duration,
};

use lb_common::counters::LOCAL_BALANCED;

use lb_testbed::{
    netns::ip,
    topology::{Host, LB_IP6, RS1_IP6, RS2_IP6, Topology, VIP, VIP6, agent_binary, wait_until},
};

const CURLS: usize = 6;
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
const COUNT_TIMEOUT: Duration = Duration::from_secs(3);

fn curl6(topo: &Topology) -> String {
    topo.curl_on(Host::Client, &format!("[{VIP6}]")).unwrap()
}

/// Whether the agent's status has `real` of the IPv6 service in its set.
fn in_set(topo: &Topology, real: std::net::Ipv6Addr) -> Option<bool> {
    let status = topo.status(Host::Lb).ok()?;
    status
        .checks
        .iter()
        .find(|c| c.real == IpAddr::V6(real))
        .map(|c| c.active)
}

fn both_in(topo: &Topology) -> bool {
    in_set(topo, RS1_IP6) == Some(true) && in_set(topo, RS2_IP6) == Some(true)
}

/// configs/dual-stack.toml with its IPv6 service forwarded by `kind`
/// (the IPv4 one stays DR), started on the balancer once both IPv6
/// servers passed their checks.
fn start_dual_stack_with_ipv6_kind(
    topo: &mut Topology,
    kind: &str,
    edit: impl Fn(String) -> String,
) {
    let config = edit(topo.config_from("dual-stack.toml")).replace(
        "lb_algo = \"rr\"\nlb_kind = \"DR\"\n\n  [[virtual_server.real_server]]\n  ip = \"2001",
        &format!("lb_algo = \"rr\"\nlb_kind = \"{kind}\"\n\n  [[virtual_server.real_server]]\n  ip = \"2001"),
    );
    let line = format!("lb_kind = \"{kind}\"");
    assert_eq!(config.matches(&line).count(), 1, "{config}");
    let path = topo.write_config("lb.toml", &config).unwrap();
    topo.start_agent(&agent_binary().unwrap(), &path, &[])
        .unwrap();
    assert!(
        wait_until(CHECK_TIMEOUT, || both_in(topo)).is_some(),
        "{}",
        topo.agent_log()
    );
}

fn assert_alternate(answers: &[String], what: &str) {
    for a in answers {
        assert!(a == "hello rs1" || a == "hello rs2", "{what}: {answers:?}");
    }
    for pair in answers.windows(2) {
        assert_ne!(pair[0], pair[1], "{what}: rr alternates: {answers:?}");
    }
}

#[test]
fn dual_stack_dr_with_ipv6_checks_end_to_end() {
    let prefix = format!("lbv6{}", std::process::id());
    let mut topo = Topology::create(&prefix).expect("topology");
    topo.start_nginx(Host::Rs1, "hello rs1").unwrap();
    topo.start_nginx(Host::Rs2, "hello rs2").unwrap();
    // The IPv6 VIP on the balancer (the operator's job while no VRRP
    // instance governs IPv6), and rs.sh's IPv6 equivalent on the servers.
    topo.add_vip6(Host::Lb).unwrap();
    for rs in [Host::Rs1, Host::Rs2] {
        topo.realserver(rs, &["start", "--vip", &VIP6.to_string()])
            .unwrap();
    }
    let binary = agent_binary().unwrap();
    let config = topo
        .write_config("lb.toml", &topo.config_from("dual-stack.toml"))
        .unwrap();
    topo.start_agent(&binary, &config, &[]).unwrap();
    assert!(
        wait_until(CHECK_TIMEOUT, || both_in(&topo)).is_some(),
        "{}",
        topo.agent_log()
    );

    // curl -6 through the IPv6 VIP alternates between the servers.
    let answers: Vec<String> = (0..CURLS).map(|_| curl6(&topo)).collect();
    assert_alternate(&answers, "IPv6 VIP");
    // Both VIPs at once: IPv4 and IPv6 requests interleaved, each family
    // alternating on its own service.
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for _ in 0..CURLS {
        v4.push(topo.curl(VIP).unwrap());
        v6.push(curl6(&topo));
    }
    assert_alternate(&v4, "IPv4 VIP beside IPv6");
    assert_alternate(&v6, "IPv6 VIP beside IPv4");

    // ipvsadm's IPv6 layout, each server with its closed connections
    // (2 * CURLS over two servers: CURLS each, all InActConn).
    let inact = CURLS.to_string();
    let counted = wait_until(COUNT_TIMEOUT, || {
        let list = topo.list(&binary).unwrap_or_default();
        list.contains("TCP  [2001:db8:122::100]:80 rr\n")
            && [RS1_IP6, RS2_IP6].iter().all(|rs| {
                list.contains(&format!(
                    "  -> {:<28} Route   1      0          {inact:<10}",
                    format!("[{rs}]:80")
                ))
            })
    });
    assert!(counted.is_some(), "{}", topo.list(&binary).unwrap());
    let conns = std::process::Command::new(&binary)
        .args(["list", "-c", "--pin-path"])
        .arg(topo.pin_dir())
        .output()
        .unwrap();
    let conns = String::from_utf8_lossy(&conns.stdout);
    assert!(
        conns.contains("[2001:db8:122::50]:") && conns.contains(" [2001:db8:122::100]:80 "),
        "{conns}"
    );

    on_the_director(&topo);

    // The IPv6 server stopped: its TCP_CHECK over IPv6 takes it out...
    topo.stop_nginx(Host::Rs2);
    assert!(
        wait_until(CHECK_TIMEOUT, || in_set(&topo, RS2_IP6) == Some(false)).is_some(),
        "{}",
        topo.agent_log()
    );
    let only: Vec<String> = (0..CURLS).map(|_| curl6(&topo)).collect();
    assert!(only.iter().all(|a| a == "hello rs1"), "{only:?}");
    let list = topo.list(&binary).unwrap();
    assert!(!list.contains("[2001:db8:122::195]:80"), "{list}");
    // ...and back when it serves again.
    topo.start_nginx(Host::Rs2, "hello rs2").unwrap();
    assert!(
        wait_until(CHECK_TIMEOUT, || both_in(&topo)).is_some(),
        "{}",
        topo.agent_log()
    );
    let back: Vec<String> = (0..CURLS).map(|_| curl6(&topo)).collect();
    assert_alternate(&back, "IPv6 server back");

    // Persistence over IPv6, by reload: a client's /64 keeps its server.
    let persistent = topo.config_from("dual-stack.toml").replace(
        "delay_loop = 1\nlb_algo = \"rr\"",
        "delay_loop = 1\nlb_algo = \"rr\"\npersistence_timeout = 300\npersistence_granularity = 64",
    );
    std::fs::write(&config, persistent).unwrap();
    let reload = std::process::Command::new(&binary)
        .args(["reload", "--pin-path"])
        .arg(topo.pin_dir())
        .output()
        .unwrap();
    assert!(reload.status.success(), "{reload:?}");
    let list = topo.list(&binary).unwrap();
    assert!(
        list.contains("TCP  [2001:db8:122::100]:80 rr persistent 300 mask 64\n"),
        "{list}"
    );
    let sticky: Vec<String> = (0..CURLS).map(|_| curl6(&topo)).collect();
    assert!(sticky.iter().all(|a| *a == sticky[0]), "{sticky:?}");

    // realserver stop takes the IPv6 VIP off lo again.
    topo.realserver(Host::Rs1, &["stop", "--vip", &VIP6.to_string()])
        .unwrap();
    let lo = ip(&["-n", &topo.ns(Host::Rs1), "-6", "addr", "show", "dev", "lo"]).unwrap();
    assert!(
        !String::from_utf8_lossy(&lo.stdout).contains(&VIP6.to_string()),
        "VIP still on lo"
    );
    assert!(topo.stop_agent().unwrap(), "{}", topo.agent_log());
}

/// curl -6 typed on the director itself (the seed's curls of sections 4
/// and 5.4, over IPv6): the connect6 program points each at the server
/// rr picks; the application sees the VIP as its peer.
fn on_the_director(topo: &Topology) {
    let before = topo.counters(Host::Lb).unwrap()[LOCAL_BALANCED as usize];
    let answers: Vec<String> = (0..CURLS)
        .map(|_| topo.curl_on(Host::Lb, &format!("[{VIP6}]")).unwrap())
        .collect();
    assert_alternate(&answers, "curl -6 on the director");
    let lb = topo.ns(Host::Lb);
    let (peer, body) = topo.http_get_on(Host::Lb, (VIP6, 80).into()).unwrap();
    assert_eq!(peer, SocketAddr::from((VIP6, 80)));
    assert!(body.contains("hello rs"), "{body}");
    let after = topo.counters(Host::Lb).unwrap()[LOCAL_BALANCED as usize];
    assert_eq!(after - before, CURLS as u64 + 1);

    // Open local connections are listed (list -c) and counted as their
    // TCP states go; closed, they leave.
    const OPEN: usize = 2;
    let streams: Vec<TcpStream> = std::thread::scope(|s| {
        s.spawn(|| {
            lb_testbed::netns::enter(&lb).unwrap();
            (0..OPEN)
                .map(|_| TcpStream::connect((VIP6, 80)).unwrap())
                .collect()
        })
        .join()
        .unwrap()
    });
    let local6 = |topo: &Topology| {
        topo.connections(Host::Lb)
            .unwrap()
            .into_iter()
            .filter(|c| c.virt == (IpAddr::V6(VIP6), 80))
            .filter(|c| c.client.0 == IpAddr::V6(LB_IP6))
            .collect::<Vec<_>>()
    };
    let ports: Vec<u16> = streams
        .iter()
        .map(|s| s.local_addr().unwrap().port())
        .collect();
    let listed = local6(topo);
    assert_eq!(listed.len(), OPEN, "{listed:#?}");
    for entry in &listed {
        assert!(ports.contains(&entry.client.1), "{entry:?} {ports:?}");
        assert_eq!(entry.state, "ESTABLISHED", "{entry:?}");
        assert!(
            [RS1_IP6, RS2_IP6].map(IpAddr::V6).contains(&entry.dest.0),
            "{entry:?}"
        );
    }
    drop(streams);
    assert!(
        wait_until(COUNT_TIMEOUT, || local6(topo).is_empty()).is_some(),
        "{:#?}",
        local6(topo)
    );
}

/// Bytes of the upload: many full-sized segments, each too big for the
/// tunnel until the client heard the balancer's Packet Too Big.
const UPLOAD_BYTES: usize = 256 * 1024;

#[test]
fn tun_over_ipv6_end_to_end() {
    let prefix = format!("lbv6t{}", std::process::id());
    let mut topo = Topology::create(&prefix).expect("topology");
    topo.start_nginx(Host::Rs1, "hello rs1").unwrap();
    topo.start_nginx(Host::Rs2, "hello rs2").unwrap();
    topo.add_vip6(Host::Lb).unwrap();
    let vip6 = VIP6.to_string();
    for rs in [Host::Rs1, Host::Rs2] {
        topo.realserver(
            rs,
            &["start", "--vip", &vip6, "--mode", "tun", "--iface", "eth0"],
        )
        .unwrap();
    }
    let binary = agent_binary().unwrap();
    start_dual_stack_with_ipv6_kind(&mut topo, "TUN", |c| c);
    let list = topo.list(&binary).unwrap();
    assert!(
        list.contains(&format!("  -> {:<28} Tunnel  1 ", "[2001:db8:122::193]:80")),
        "{list}"
    );

    // The servers answer only what rs_decap unwrapped (the VIP is on their
    // lo; nothing else decapsulates): rr alternates through the tunnel.
    let answers: Vec<String> = (0..CURLS).map(|_| curl6(&topo)).collect();
    assert_alternate(&answers, "IPv6 TUN");
    // IPv4 beside it is still DR.
    assert_alternate(
        &(0..CURLS)
            .map(|_| topo.curl(VIP).unwrap())
            .collect::<Vec<_>>(),
        "IPv4 DR beside IPv6 TUN",
    );

    // An upload: full-sized segments do not fit the tunnel; the client
    // must learn the path MTU from the balancer's ICMPv6 Packet Too Big.
    let upload = topo.files_dir().join("upload6.bin");
    std::fs::write(&upload, vec![0x5a; UPLOAD_BYTES]).unwrap();
    let answer = topo.upload_to(&format!("[{VIP6}]"), &upload).unwrap();
    assert!(answer.starts_with("hello rs"), "{answer:?}");
    let counters = topo.counters(Host::Lb).unwrap();
    assert!(
        counters[lb_common::counters::ICMP6_PACKET_TOO_BIG as usize] > 0,
        "the upload must have needed ICMPv6 Packet Too Big: {counters:?}"
    );

    for rs in [Host::Rs1, Host::Rs2] {
        topo.realserver(rs, &["stop", "--vip", &vip6]).unwrap();
    }
    assert!(topo.stop_agent().unwrap(), "{}", topo.agent_log());
}

/// The NAT66 service's port: the real servers listen on 80 (port mapping).
const NAT66_PORT: u16 = 8080;

#[test]
fn nat66_one_armed_with_port_mapping_end_to_end() {
    let prefix = format!("lbv6n{}", std::process::id());
    let mut topo = Topology::create(&prefix).expect("topology");
    topo.start_nginx(Host::Rs1, "hello rs1").unwrap();
    topo.start_nginx(Host::Rs2, "hello rs2").unwrap();
    topo.make_nat66_one_armed().unwrap();
    let binary = agent_binary().unwrap();
    // The dual-stack config with its IPv6 service made the seed's NAT one
    // over IPv6: the balancer's own address, port 8080 mapped to 80.
    start_dual_stack_with_ipv6_kind(&mut topo, "NAT", |config| {
        let nat = config.replace(
            &format!("vip = \"{VIP6}\"\nport = 80\n"),
            &format!("vip = \"{LB_IP6}\"\nport = {NAT66_PORT}\n"),
        );
        assert!(nat.contains(&format!("port = {NAT66_PORT}")), "{nat}");
        nat
    });
    let list = topo.list(&binary).unwrap();
    assert!(
        list.contains(&format!("  -> {:<28} Masq    1 ", "[2001:db8:122::193]:80")),
        "{list}"
    );

    // The servers answer the client's address (it is not theirs to reach
    // but through the balancer): rr alternates, the reply from the VIP.
    let vip = format!("[{LB_IP6}]:{NAT66_PORT}");
    let answers: Vec<String> = (0..CURLS)
        .map(|_| topo.curl_on(Host::Client, &vip).unwrap())
        .collect();
    assert_alternate(&answers, "NAT66");
    // A request of many segments each way keeps its mapping.
    let upload = topo.files_dir().join("upload66.bin");
    std::fs::write(&upload, vec![0x5a; UPLOAD_BYTES]).unwrap();
    let answer = topo.upload_to(&vip, &upload).unwrap();
    assert!(answer.starts_with("hello rs"), "{answer:?}");
    let counters = topo.counters(Host::Lb).unwrap();
    assert!(
        counters[lb_common::counters::NAT_REPLY as usize] > 0,
        "replies came back through the balancer: {counters:?}"
    );
    assert!(topo.stop_agent().unwrap(), "{}", topo.agent_log());
}
