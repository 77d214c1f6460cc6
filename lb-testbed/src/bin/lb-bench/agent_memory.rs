//! The agent's resident memory with a full flow table: the real agent
//! (target/release/lb-userspace, next to the bench) runs in a namespace of our own with a
//! 1M-entry flow table; the bench fills the pinned table with 1M live
//! connections and reads the agent's VmRSS / VmHWM once its expiry sweeps
//! have walked them (its status reports the flows).

use super::*;
use lb_common::{FlowEntry, FlowKey, conntrack::S_ESTABLISHED};
use lb_testbed::{
    netns,
    topology::{agent_binary, wait_until},
};
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

const FLOWS: u32 = 1 << 20;
const IFACE: &str = "lbm0";
const PEER: &str = "lbm1";
/// One service, one real server, no checker: the agent idles but for its
/// sweeps. Addresses of TEST-NET-2, inside the namespace only.
const CONFIG: &str = r#"
[[virtual_server]]
vip = "198.51.100.100"
port = 80
protocol = "TCP"
lb_algo = "rr"
lb_kind = "DR"
  [[virtual_server.real_server]]
  ip = "198.51.100.2"
  port = 80
  weight = 1
"#;
const IFACE_ADDR: &str = "198.51.100.1/24";
/// Bounds of the waits: the agent's start, its sweeps of 1M flows, its exit.
const START_WAIT: Duration = Duration::from_secs(20);
const SWEEP_WAIT: Duration = Duration::from_secs(60);
const EXIT_WAIT: Duration = Duration::from_secs(10);
/// Sweeps to let pass once the agent counts every flow (the sweep's own
/// memory is the peak).
const SWEEPS_SEEN: u32 = 2;

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Flows the agent last counted (its status file), if it published one.
fn flows_counted(pin: &Path) -> Option<u64> {
    lb_userspace::runtime_files::read_status(pin)
        .ok()
        .map(|s| s.fill.flows)
}

fn wait_for(what: &str, limit: Duration, done: impl FnMut() -> bool) -> Result<()> {
    wait_until(limit, done)
        .map(|_| ())
        .ok_or_else(|| anyhow!("{what}: not within {limit:?}"))
}

pub fn bench(results: &mut bench_report::Results) -> Result<()> {
    let agent_path = agent_binary()?;
    if !agent_path.exists() {
        return Err(anyhow!(
            "{} is not built (cargo xtask bench builds it)",
            agent_path.display()
        ));
    }
    let ns = format!("lbam{}", std::process::id());
    let pin = PathBuf::from(format!("/sys/fs/bpf/lbam{}", std::process::id()));
    let config = std::env::temp_dir().join(format!("lbam{}.toml", std::process::id()));
    std::fs::write(&config, CONFIG)?;
    let mut agent: Option<Child> = None;
    let measured = (|| -> Result<()> {
        netns::create_with_veth(&ns, IFACE, PEER)?;
        netns::ip(&["-n", &ns, "addr", "add", IFACE_ADDR, "dev", IFACE])?;
        // nsenter, not ip netns exec: the agent pins in the host's bpffs.
        let child = agent.insert(
            Command::new("nsenter")
                .arg(netns::nsenter_net(&ns))
                .arg(&agent_path)
                .args(["--iface", IFACE, "--log-level", "warn", "--config"])
                .arg(&config)
                .arg("--pin-path")
                .arg(&pin)
                .args(["--flow-table-size", &FLOWS.to_string()])
                .stdout(Stdio::null())
                .spawn()?,
        );
        let pid = child.id();
        wait_for("the agent's status", START_WAIT, || {
            flows_counted(&pin).is_some()
        })?;
        let idle = status_kib(&pid.to_string(), "VmRSS:");
        eprintln!("  agent running (pid {pid}); filling its flow table with {FLOWS} flows");
        let filled = Instant::now();
        fill(&pin)?;
        let fill_took = filled.elapsed();
        // The agent counts every flow in a sweep; wait for that, then for
        // more sweeps: the peak is the sweep's.
        for _ in 0..SWEEPS_SEEN {
            wait_for("a sweep counting every flow", SWEEP_WAIT, || {
                flows_counted(&pin).is_some_and(|n| n >= u64::from(FLOWS))
            })?;
            // The next sweep publishes again; forget this one's count.
            std::thread::sleep(Duration::from_secs(1));
        }
        let (rss, hwm) = (
            status_kib(&pid.to_string(), "VmRSS:"),
            status_kib(&pid.to_string(), "VmHWM:"),
        );
        results.agent_memory = Some(bench_report::AgentMemory {
            flows: FLOWS,
            idle_rss_kib: idle,
            rss_kib: rss,
            peak_kib: hwm,
        });
        results.notes.push(format!(
            "agent with {FLOWS} flows: resident {:.1} MiB (peak {:.1} MiB, idle with no flow {:.1} MiB); \
             the flows themselves are kernel memory (FLOW_TABLE below). Filling the table from \
             user space took {:.1} s",
            mib(rss),
            mib(hwm),
            mib(idle),
            fill_took.as_secs_f64(),
        ));
        Ok(())
    })();
    if let Some(mut child) = agent {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let exited = wait_for("the agent's exit", EXIT_WAIT, || {
            child.try_wait().ok().flatten().is_some()
        });
        if exited.is_err() {
            let _ = child.kill();
            let _ = child.wait();
            lb_userspace::runtime_files::remove_leftovers(&pin);
        }
    }
    netns::destroy_namespace(&ns);
    let _ = std::fs::remove_dir_all(&pin);
    let _ = std::fs::remove_file(&config);
    measured
}

/// FLOWS established connections, last seen now, in the agent's pinned
/// flow table.
fn fill(pin: &Path) -> Result<()> {
    let mut table: aya::maps::HashMap<_, FlowKey, FlowEntry> = aya::maps::HashMap::try_from(
        lb_userspace::stats::snapshot::open_pinned(pin, lb_common::pin_names::FLOW_TABLE)?,
    )?;
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)?;
    // The config's one service and real server get ids 0 and 1, as the seed's.
    let entry = seed_flow_entry(
        S_ESTABLISHED,
        now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64,
    );
    for i in 0..FLOWS {
        table.insert(filler_flow_key(i), entry, 0)?;
    }
    Ok(())
}
