//! `cargo xtask demo`: the seed's walk-through, replayed on this machine.
//! Builds the seed's network in namespaces, starts nginx on the two real
//! servers, runs lb-userspace with configs/seed-dr.toml in place of
//! ipvsadm + keepalived, and prints what the seed prints: the curl answers
//! (section 5.4), the table (5.3), and the failover of section 5.5 as far as
//! this version goes. Everything is torn down at the end, on failure, and on
//! Ctrl-C.

use std::{process::Command, time::Duration};

use anyhow::{Context as _, Result};
use lb_testbed::topology::{self, Host, Topology, VIP, agent_binary, configs_dir};

const PREFIX: &str = "lbdemo";
/// The seed's nginx pages.
const RS1_BODY: &str = "hello local-master";
const RS2_BODY: &str = "hello local-slave2";
const CURLS: usize = 6;

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
    let out = Command::new(binary)
        .args(["list", "-n", "--pin-path"])
        .arg(topo.pin_dir())
        .output()
        .context("running lb-userspace list")?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    Ok(())
}

fn run() -> Result<()> {
    println!("== lb demo: the seed's LVS-DR + keepalived cluster, served by XDP ==");
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
        "-- 5.2: rs.sh start on both real servers (VIP on lo, arp_ignore=1, arp_announce=2); nginx up"
    );
    topo.start_nginx(Host::Rs1, RS1_BODY)?;
    topo.start_nginx(Host::Rs2, RS2_BODY)?;
    let binary = agent_binary()?;
    let config = configs_dir().join("seed-dr.toml");
    println!("-- 5.3: instead of `systemctl start keepalived`:");
    say(
        "lb",
        &format!("lb-userspace --iface eth0 --config {}", config.display()),
    );
    topo.start_agent(&binary, &config, &[])?;
    list(&topo, &binary)?;

    println!("-- 5.4: load balancing");
    for _ in 0..CURLS {
        say("client", &format!("curl {VIP}"));
        println!("{}", topo.curl_vip()?);
    }

    println!("-- 5.5: stop nginx on local-slave2");
    topo.stop_nginx(Host::Rs2);
    std::thread::sleep(Duration::from_millis(500));
    list(&topo, &binary)?;
    println!(
        "   (this version does not run TCP_CHECK yet, so 172.16.122.195 stays listed; \
         health checking is the next step)"
    );

    println!("-- stopping the agent (SIGTERM): XDP detached, pins removed");
    topo.stop_agent()?;
    println!(
        "   XDP still attached: {}; pins left: {}",
        topo.lb_has_xdp()?,
        topo.pin_dir().exists()
    );
    drop(topo);
    println!("== demo done; namespaces removed ==");
    Ok(())
}
