//! The soak: the seed's two balancers (ours, MASTER 100 / BACKUP 90) in
//! front of two nginx servers, a client requesting the VIP every 100 ms,
//! and faults injected on a schedule, round after round: a real server
//! stops and returns, the master balancer is killed and returns, the
//! master's link goes down and up, the master's config is reloaded. Each
//! fault opens a window in which failed requests are allowed — as long as
//! keepalived's timings say the failure may last; a failed request outside
//! every window is a defect. Reports requests, failures and the longest
//! outage per fault kind.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    netns::{exec_in, ip},
    topology::{HOST_IFACE, Host, Topology, VIP, agent_binary},
};

/// Health checks fast enough to soak quickly (keepalived's keywords).
const DELAY_LOOP_S: u64 = 1;
const CONNECT_TIMEOUT_S: u64 = 1;
const RETRY: u64 = 1;
const DELAY_BEFORE_RETRY_S: u64 = 1;
/// The backup's Master_Down_Interval: 3 x advert_int + (256 - 90) / 256 s.
const MASTER_DOWN: Duration = Duration::from_millis(3000 + 166 * 1000 / 256);
/// Process start-up, polling, scheduling.
const SLACK: Duration = Duration::from_secs(3);
/// How long a returning master or link may disturb (preemption, GARPs).
const RETURN_WINDOW: Duration = Duration::from_secs(3);
const REQUEST_PERIOD: Duration = Duration::from_millis(100);
/// curl's limit per request (seconds): a failure shows within it.
const REQUEST_TIMEOUT_S: u64 = 1;
/// How long each fault lasts, and the quiet time after it.
const FAULT_HOLD: Duration = Duration::from_secs(6);
const SETTLE: Duration = Duration::from_secs(5);
const START_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    RealServerDown,
    MasterKilled,
    LinkDown,
    Reload,
}

impl Fault {
    pub const ALL: [Fault; 4] = [
        Fault::RealServerDown,
        Fault::MasterKilled,
        Fault::LinkDown,
        Fault::Reload,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::RealServerDown => "real server stops and returns",
            Fault::MasterKilled => "master balancer killed and restarted",
            Fault::LinkDown => "master's link down and up",
            Fault::Reload => "config reload on the master",
        }
    }

    /// How long after the fault failures may go on: the checker's
    /// detection (delay_loop + tries x (connect_timeout + delay_before_retry)),
    /// the backup's Master_Down_Interval, or nothing for a reload.
    fn window(self) -> Duration {
        match self {
            Fault::RealServerDown => {
                Duration::from_secs(
                    DELAY_LOOP_S + (RETRY + 1) * (CONNECT_TIMEOUT_S + DELAY_BEFORE_RETRY_S),
                ) + SLACK
            }
            Fault::MasterKilled | Fault::LinkDown => MASTER_DOWN + SLACK,
            Fault::Reload => Duration::ZERO,
        }
    }
}

/// A span of time in which failures are allowed, and what caused it.
#[derive(Clone, Copy, Debug)]
struct Window {
    fault: Fault,
    from: Duration,
    to: Duration,
}

#[derive(Debug, Default)]
pub struct FaultStats {
    pub injected: u32,
    pub failed: usize,
    pub longest_outage: Duration,
}

#[derive(Debug, Default)]
pub struct SoakReport {
    pub requests: usize,
    pub failed: usize,
    /// Start times of failed requests outside every window.
    pub unexplained: Vec<Duration>,
    pub per_fault: Vec<(Fault, FaultStats)>,
    pub elapsed: Duration,
}

impl SoakReport {
    pub fn render(&self) -> String {
        let mut out = format!(
            "soak: {:.0} s, {} requests, {} failed, {} outside the fault windows\n",
            self.elapsed.as_secs_f64(),
            self.requests,
            self.failed,
            self.unexplained.len()
        );
        for (fault, s) in &self.per_fault {
            out += &format!(
                "  {:<40} injected {:>3}  failed requests {:>4}  longest outage {:>5.1} s (allowed {:.1} s)\n",
                fault.name(),
                s.injected,
                s.failed,
                s.longest_outage.as_secs_f64(),
                fault.window().as_secs_f64()
            );
        }
        out
    }
}

/// The seed's lb.toml with fast checks, for `state`/`priority`.
fn config(topo: &Topology, state: &str, priority: u8, weight: u32) -> String {
    let seed = topo.seed_config();
    seed.replace("state = \"MASTER\"", &format!("state = \"{state}\""))
        .replace("priority = 100", &format!("priority = {priority}"))
        .replace("delay_loop = 6", &format!("delay_loop = {DELAY_LOOP_S}"))
        .replace(
            "connect_timeout = 3",
            &format!("connect_timeout = {CONNECT_TIMEOUT_S}"),
        )
        .replace("nb_get_retry = 3", &format!("nb_get_retry = {RETRY}"))
        .replace(
            "delay_before_retry = 3",
            &format!("delay_before_retry = {DELAY_BEFORE_RETRY_S}"),
        )
        .replacen("weight = 1", &format!("weight = {weight}"), 1)
}

/// One request from the client's namespace: answered by a real server?
fn request(client_ns: &str) -> bool {
    exec_in(
        client_ns,
        &[
            "curl",
            "-s",
            "--max-time",
            &REQUEST_TIMEOUT_S.to_string(),
            &format!("http://{VIP}/"),
        ],
    )
    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).starts_with("hello rs"))
}

struct Soak {
    topo: Topology,
    started: Instant,
    windows: Vec<Window>,
    master_config: std::path::PathBuf,
    backup_config: std::path::PathBuf,
    reloads: u32,
    /// Every fault injected, in order.
    injected: Vec<Fault>,
}

impl Soak {
    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn open_window(&mut self, fault: Fault, length: Duration) {
        let from = self.now();
        self.windows.push(Window {
            fault,
            from,
            to: from + length,
        });
    }

    fn start_agent(&mut self, host: Host) -> Result<()> {
        let path = if host == Host::Lb {
            self.master_config.clone()
        } else {
            self.backup_config.clone()
        };
        self.topo.start_agent_on(host, &agent_binary()?, &path, &[])
    }

    fn inject(&mut self, fault: Fault) -> Result<()> {
        self.injected.push(fault);
        match fault {
            Fault::RealServerDown => {
                self.open_window(fault, fault.window());
                self.topo.stop_nginx(Host::Rs1);
                thread::sleep(FAULT_HOLD);
                self.open_window(fault, RETURN_WINDOW);
                self.topo.start_nginx(Host::Rs1, "hello rs1")?;
            }
            Fault::MasterKilled => {
                self.open_window(fault, fault.window());
                self.topo.signal_agent(Host::Lb, "KILL")?;
                thread::sleep(FAULT_HOLD);
                self.open_window(fault, RETURN_WINDOW + SLACK);
                self.start_agent(Host::Lb)?;
            }
            Fault::LinkDown => {
                let ns = self.topo.ns(Host::Lb);
                self.open_window(fault, fault.window());
                ip(&["-n", &ns, "link", "set", HOST_IFACE, "down"])?;
                thread::sleep(FAULT_HOLD);
                self.open_window(fault, RETURN_WINDOW);
                ip(&["-n", &ns, "link", "set", HOST_IFACE, "up"])?;
            }
            Fault::Reload => {
                // A weight change on the master, applied without a flush.
                self.reloads += 1;
                let weight = 1 + self.reloads % 3;
                std::fs::write(
                    &self.master_config,
                    config(&self.topo, "MASTER", 100, weight),
                )?;
                let out = std::process::Command::new(agent_binary()?)
                    .args(["reload", "--pin-path"])
                    .arg(self.topo.pin_dir_on(Host::Lb))
                    .output()
                    .context("running lb-userspace reload")?;
                if !out.status.success() {
                    bail!("reload failed: {}", String::from_utf8_lossy(&out.stderr));
                }
            }
        }
        thread::sleep(SETTLE);
        Ok(())
    }
}

/// Runs rounds of every fault for about `duration` (at least one round).
pub fn run(prefix: &str, duration: Duration) -> Result<SoakReport> {
    let mut topo = Topology::create(prefix)?;
    topo.start_nginx(Host::Rs1, "hello rs1")?;
    topo.start_nginx(Host::Rs2, "hello rs2")?;
    let master_config = topo.write_config("lb-master.toml", &config(&topo, "MASTER", 100, 1))?;
    let backup_config = topo.write_config("lb-backup.toml", &config(&topo, "BACKUP", 90, 1))?;
    let mut soak = Soak {
        topo,
        started: Instant::now(),
        windows: Vec::new(),
        master_config,
        backup_config,
        reloads: 0,
        injected: Vec::new(),
    };
    soak.start_agent(Host::Lb)?;
    soak.topo.wait_for_master(Host::Lb)?;
    soak.start_agent(Host::Lb2)?;
    if !soak
        .topo
        .wait_for_vrrp_state(Host::Lb2, "BACKUP", START_TIMEOUT)
    {
        bail!(
            "the backup balancer did not start:\n{}",
            soak.topo.agent_log_on(Host::Lb2)
        );
    }
    soak.started = Instant::now();

    // The client needs only its namespace's name: the injector owns the
    // topology meanwhile.
    let client_ns = soak.topo.ns(Host::Client);
    let started = soak.started;
    let stop = Arc::new(AtomicBool::new(false));
    let stop_client = Arc::clone(&stop);
    let client = thread::spawn(move || {
        let mut results = Vec::new();
        while !stop_client.load(Ordering::Relaxed) {
            let at = started.elapsed();
            results.push((at, request(&client_ns)));
            thread::sleep(REQUEST_PERIOD);
        }
        results
    });
    let outcome = (|| -> Result<()> {
        loop {
            for fault in Fault::ALL {
                soak.inject(fault)?;
            }
            if soak.now() >= duration {
                return Ok(());
            }
        }
    })();
    stop.store(true, Ordering::Relaxed);
    let results = client.join().expect("the client thread panicked");
    outcome?;
    let mut report = report(&soak.windows, &soak.injected, &results);
    report.elapsed = soak.now();
    Ok(report)
}

/// Sorts every request into the window that explains it, if any.
fn report(windows: &[Window], injected: &[Fault], results: &[(Duration, bool)]) -> SoakReport {
    // A request counts from its start; it may fail up to curl's limit later.
    let request_time = Duration::from_secs(REQUEST_TIMEOUT_S);
    let window_of = |at: Duration| {
        windows
            .iter()
            .find(|w| at + request_time >= w.from && at <= w.to)
    };
    let mut per_fault: Vec<(Fault, FaultStats)> = Fault::ALL
        .iter()
        .map(|f| {
            let injected = injected.iter().filter(|i| *i == f).count() as u32;
            (
                *f,
                FaultStats {
                    injected,
                    ..FaultStats::default()
                },
            )
        })
        .collect();
    let mut report = SoakReport {
        requests: results.len(),
        ..SoakReport::default()
    };
    // Consecutive failures: one outage, from the first failed request to
    // the next answered one.
    let mut outage_start: Option<(Duration, Option<Fault>)> = None;
    for (at, ok) in results {
        if *ok {
            if let Some((from, Some(fault))) = outage_start.take() {
                let stats = &mut per_fault.iter_mut().find(|(f, _)| *f == fault).unwrap().1;
                stats.longest_outage = stats.longest_outage.max(*at - from);
            }
            continue;
        }
        report.failed += 1;
        let window = window_of(*at);
        match window {
            Some(w) => {
                per_fault
                    .iter_mut()
                    .find(|(f, _)| *f == w.fault)
                    .unwrap()
                    .1
                    .failed += 1
            }
            None => report.unexplained.push(*at),
        }
        if outage_start.is_none() {
            outage_start = Some((*at, window.map(|w| w.fault)));
        }
    }
    report.per_fault = per_fault;
    report
}
