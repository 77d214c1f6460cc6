//! `cargo xtask demo`: the seed's walk-through, replayed on this machine.
//! Builds the seed's network in namespaces, starts nginx on the two real
//! servers, runs lb-userspace with configs/seed-dr.toml in place of
//! ipvsadm + keepalived, and prints what the seed prints: the curl answers
//! (section 5.4), the table (5.3), and the health-check failover of
//! section 5.5. Then what the seed cannot do: its service on an IPv6 VIP
//! too (curl -6 alternating between the servers), and three balancers behind a
//! router, announcing the VIP over BGP, with connections that keep their
//! servers while one joins, one is drained and one dies. Everything is
//! torn down at the end, on failure, and on Ctrl-C.

use std::time::Duration;

use anyhow::{Result, bail};
use lb_testbed::{
    keepalive,
    topology::{self, Host, RS2_IP, Topology, VIP, VIP6, agent_binary, configs_dir, wait_until},
};

const PREFIX: &str = "lbdemo";
/// The seed's nginx pages.
const RS1_BODY: &str = "hello local-master";
const RS2_BODY: &str = "hello local-slave2";
const CURLS: usize = 6;
/// With the seed's TCP_CHECK (delay_loop 6, connect_timeout 3, retry 3,
/// delay_before_retry 3) keepalived needs up to 6 + 3 + 3 x (3 + 3) = 27 s.
const DETECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Scale-out: keep-alive connections through the events.
const SCALE_OUT_CONNECTIONS: usize = 8;
/// BGP sessions up and the router's route changed.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests each connection makes between two events.
const BETWEEN_EVENTS: Duration = Duration::from_secs(2);

fn main() {
    // Ctrl-C / SIGTERM: remove what the demo made, then leave.
    if let Err(e) = ctrlc::set_handler(|| {
        eprintln!("\ninterrupted: tearing the demo down");
        topology::destroy(PREFIX);
        std::process::exit(130);
    }) {
        eprintln!("warning: cannot catch Ctrl-C ({e}); `ip netns del lbdemo-*` cleans up by hand");
    }
    let result = run();
    topology::destroy(PREFIX);
    if let Err(e) = result {
        eprintln!("demo failed: {e:#}");
        std::process::exit(1);
    }
}

fn say(prompt: &str, cmd: &str) {
    println!("[root@{prompt} /]# {cmd}");
}

fn list(topo: &Topology, binary: &std::path::Path) -> Result<()> {
    say("lb", "lb-userspace list -n");
    print!("{}", topo.list(binary)?);
    Ok(())
}

/// Sections 3 and 4: LVS-NAT with ipvsadm, as configs/seed-nat.toml.
fn seed_sections_3_4_nat(topo: &mut Topology, binary: &std::path::Path) -> Result<()> {
    println!(
        "-- 3: LVS-NAT; instead of `ipvsadm -A -t 172.16.122.188:80 -s rr` and two `ipvsadm -a ... -m`:"
    );
    println!("   (client on 192.168.100.0/24 behind the balancer; real servers route through it)");
    topo.make_nat_one_armed()?;
    let config = topo.write_config("seed-nat.toml", &topo.config_from("seed-nat.toml"))?;
    say("lb", "lb-userspace --iface eth0 --config seed-nat.toml");
    topo.start_agent(binary, &config, &[])?;
    list(topo, binary)?;
    println!("-- 4: load balancing through NAT");
    for _ in 0..4 {
        say("client", "curl 172.16.122.188:80");
        println!("{}", topo.curl_vip()?);
    }
    println!("   typed on the director itself, as the seed does (balanced at the socket):");
    for _ in 0..2 {
        say("lb", "curl 172.16.122.188:80");
        println!("{}", topo.curl_on(Host::Lb, "172.16.122.188:80")?);
    }
    topo.stop_agent()?;
    topo.undo_nat_one_armed()?;
    Ok(())
}

/// Echoes the agent's log lines containing `word`.
fn print_agent_lines(topo: &Topology, word: &str) {
    for line in topo.agent_log().lines().filter(|l| l.contains(word)) {
        let event = line.find("vrrp_instance").map_or(line, |i| &line[i..]);
        println!("   agent: {event}");
    }
}

/// Echoes the agent's log lines about health transitions.
fn print_agent_events(topo: &Topology, word: &str) {
    for line in topo
        .agent_log()
        .lines()
        .filter(|l| l.contains(&format!(": {word} (")))
    {
        let event = line.find("real server").map_or(line, |i| &line[i..]);
        println!("   agent: {event}");
    }
}

/// The router's next hops for the VIP, printed as `ip route` would list them.
fn show_route(topo: &Topology) {
    say("router", &format!("ip route show {VIP}"));
    let hops: Vec<String> = topo
        .router_next_hops()
        .iter()
        .map(|h| h.to_string())
        .collect();
    println!("   {VIP} via {}", hops.join(", "));
}

/// Beyond the seed: active-active balancers behind ECMP.
fn scale_out(topo: &mut Topology, binary: &std::path::Path) -> Result<()> {
    println!(
        "-- scale-out (not in the seed): lb, lb2 and then lb3 announce the VIP over BGP to a router \
         running BIRD with ECMP; the client moves behind it (10.0.0.50)"
    );
    topo.make_scale_out(false)?;
    let config = topo.write_config(
        "lb-bgp.toml",
        &topo.scale_out_config("lb_algo = \"mh\"\nmh_port = true", false, false),
    )?;
    println!(
        "   lb-bgp.toml: the seed's service with mh (ports hashed) and [bgp] (AS 65010 -> router AS 65000)"
    );
    for host in [Host::Lb, Host::Lb2] {
        say(
            &format!("{host:?}").to_lowercase(),
            "lb-userspace --iface eth0 --config lb-bgp.toml",
        );
        topo.start_agent_on(host, binary, &config, &[])?;
    }
    if topo
        .wait_for_next_hops(&[Host::Lb, Host::Lb2], ROUTE_TIMEOUT)
        .is_none()
    {
        bail!(
            "the router did not learn the VIP from lb and lb2:\n{}",
            topo.router_log()
        );
    }
    show_route(topo);
    println!(
        "   {SCALE_OUT_CONNECTIONS} keep-alive connections from the client, a request each every 0.2 s, while:"
    );
    let client = topo.ns(Host::Client);
    let (seen, outcome) = keepalive::through(
        &client,
        VIP.into(),
        SCALE_OUT_CONNECTIONS,
        || -> Result<()> {
            std::thread::sleep(BETWEEN_EVENTS);
            say("lb3", "lb-userspace --iface eth0 --config lb-bgp.toml");
            topo.start_agent_on(Host::Lb3, binary, &config, &[])?;
            topo.wait_for_next_hops(&[Host::Lb, Host::Lb2, Host::Lb3], ROUTE_TIMEOUT);
            show_route(topo);
            std::thread::sleep(BETWEEN_EVENTS);
            say("lb2", "lb-userspace drain");
            let drain = std::process::Command::new(binary)
                .args(["drain", "--pin-path"])
                .arg(topo.pin_dir_on(Host::Lb2))
                .output()?;
            print!("{}", String::from_utf8_lossy(&drain.stdout));
            show_route(topo);
            std::thread::sleep(BETWEEN_EVENTS);
            println!("   lb loses power (SIGKILL, link gone)");
            topo.unplug(Host::Lb)?;
            let killed = std::time::Instant::now();
            topo.signal_agent(Host::Lb, "KILL")?;
            topo.wait_for_next_hops(&[Host::Lb3], ROUTE_TIMEOUT);
            println!(
                "   the router withdrew lb {:.1} s later (BGP hold time 3 s; with bfd = true, about 0.5 s)",
                killed.elapsed().as_secs_f64()
            );
            show_route(topo);
            std::thread::sleep(BETWEEN_EVENTS);
            Ok(())
        },
    );
    outcome?;
    let broken = keepalive::broken(&seen);
    if !broken.is_empty() {
        bail!("connections broke: {broken:#?}");
    }
    let servers = keepalive::kept_their_servers(&seen, 0).map_err(anyhow::Error::msg)?;
    println!(
        "   {} connections, {} answers, each from its first server ({} on rs1, {} on rs2)",
        seen.len(),
        seen.iter().map(|s| s.answers.len()).sum::<usize>(),
        servers.iter().filter(|s| s.as_str() == RS1_BODY).count(),
        servers.iter().filter(|s| s.as_str() == RS2_BODY).count()
    );
    Ok(())
}

/// Beyond the seed: its DR service on an IPv6 VIP beside the IPv4 one.
fn dual_stack(topo: &mut Topology, binary: &std::path::Path) -> Result<()> {
    println!(
        "-- beyond the seed: the same service on an IPv6 VIP too (configs/dual-stack.toml; 2001:db8:122::/64 beside the seed's subnet)"
    );
    say(
        "lb",
        &format!("ip -6 addr add {VIP6}/128 dev eth0 nodad preferred_lft 0"),
    );
    topo.add_vip6(Host::Lb)?;
    for rs in [Host::Rs1, Host::Rs2] {
        say(
            &rs.ip().to_string(),
            &format!("lb-userspace realserver start --vip {VIP6}"),
        );
        topo.realserver(rs, &["start", "--vip", &VIP6.to_string()])?;
    }
    let config = topo.write_config("dual-stack.toml", &topo.config_from("dual-stack.toml"))?;
    say("lb", "lb-userspace --iface eth0 --config dual-stack.toml");
    topo.start_agent(binary, &config, &[])?;
    list(topo, binary)?;
    for _ in 0..CURLS {
        say("client", &format!("curl -g http://[{VIP6}]/"));
        println!("{}", topo.curl_on(Host::Client, &format!("[{VIP6}]"))?);
    }
    // As the seed types its curls on the director too.
    for _ in 0..2 {
        say("lb", &format!("curl -g http://[{VIP6}]/"));
        println!("{}", topo.curl_on(Host::Lb, &format!("[{VIP6}]"))?);
    }
    topo.stop_agent()?;
    for rs in [Host::Rs1, Host::Rs2] {
        topo.realserver(rs, &["stop", "--vip", &VIP6.to_string()])?;
    }
    Ok(())
}

fn run() -> Result<()> {
    println!("== lb demo: the seed's LVS + keepalived walk-through, served by XDP ==");
    println!(
        "client {}, balancer {} holding VIP {VIP}, real servers {} (local-master) and {} (local-slave2)",
        Host::Client.ip(),
        Host::Lb.ip(),
        Host::Rs1.ip(),
        Host::Rs2.ip()
    );
    println!("-- building the network namespaces ({PREFIX}-*)");
    let mut topo = Topology::create(PREFIX)?;
    println!(
        "-- real servers prepared with `lb-userspace realserver start --vip {VIP}` (the seed's rs.sh, 5.2); nginx up"
    );
    topo.start_nginx(Host::Rs1, RS1_BODY)?;
    topo.start_nginx(Host::Rs2, RS2_BODY)?;
    let binary = agent_binary()?;
    seed_sections_3_4_nat(&mut topo, &binary)?;

    let seed = configs_dir().join("seed-dr.toml");
    println!(
        "-- 5.1: {} is the seed's keepalived.conf as lb.toml (interface eno16777736 -> eth0 here)",
        seed.display()
    );
    let config = topo.write_config("lb.toml", &topo.seed_config())?;
    println!("-- 5.3: instead of `systemctl start keepalived`:");
    say("lb", "lb-userspace --iface eth0 --config lb.toml");
    topo.start_agent(&binary, &config, &[])?;
    topo.wait_for_master(Host::Lb)?;
    print_agent_lines(&topo, "entering");
    list(&topo, &binary)?;

    println!("-- 5.4: load balancing");
    for _ in 0..CURLS {
        say("client", &format!("curl {VIP}"));
        println!("{}", topo.curl_vip()?);
    }
    println!("   typed on the director itself, as the seed does (balanced at the socket):");
    for _ in 0..2 {
        say("lb", &format!("curl {VIP}"));
        println!("{}", topo.curl_on(Host::Lb, &VIP.to_string())?);
    }

    println!("-- 5.5: health checks; stop nginx on local-slave2");
    say("local-slave2", "docker stop nginx");
    topo.stop_nginx(Host::Rs2);
    println!("   (waiting for TCP_CHECK: delay_loop 6, nb_get_retry 3, delay_before_retry 3)");
    let Some(after) = wait_until(DETECTION_TIMEOUT, || {
        topo.list(&binary)
            .is_ok_and(|l| !l.contains(&RS2_IP.to_string()))
    }) else {
        bail!("172.16.122.195 was not removed within {DETECTION_TIMEOUT:?}");
    };
    print_agent_events(&topo, "DOWN");
    println!(
        "   removed {:.1} s after nginx stopped",
        after.as_secs_f64()
    );
    list(&topo, &binary)?;
    for _ in 0..2 {
        say("client", &format!("curl {VIP}"));
        println!("{}", topo.curl_vip()?);
    }

    println!("-- 5.5: start nginx on local-slave2 again");
    say("local-slave2", "docker start nginx");
    topo.start_nginx(Host::Rs2, RS2_BODY)?;
    let Some(after) = wait_until(DETECTION_TIMEOUT, || {
        topo.list(&binary)
            .is_ok_and(|l| l.contains(&RS2_IP.to_string()))
    }) else {
        bail!("172.16.122.195 did not come back within {DETECTION_TIMEOUT:?}");
    };
    print_agent_events(&topo, "UP");
    println!("   back {:.1} s after nginx started", after.as_secs_f64());
    list(&topo, &binary)?;

    println!("-- stopping the agent (SIGTERM): XDP detached, pins removed");
    topo.stop_agent()?;
    println!(
        "   XDP still attached: {}; pins left: {}",
        topo.lb_has_xdp()?,
        topo.pin_dir().exists()
    );
    dual_stack(&mut topo, &binary)?;
    scale_out(&mut topo, &binary)?;
    drop(topo);
    println!("== demo done; namespaces removed ==");
    Ok(())
}
