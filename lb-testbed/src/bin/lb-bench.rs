//! `cargo xtask bench`: nanoseconds per packet through BPF_PROG_TEST_RUN, of
//! the balancer's paths next to xdp-bench's no-op programs, measured side by
//! side in the same run (rounds interleaved, median reported), with the
//! ratio to the matching baseline. Machines differ: only the ratios travel.
//!
//! Two kernel modes: plain repeat (the program reruns on the buffer the last
//! run left, fine for paths that leave the frame as they found it: DR only
//! rewrites MACs to fixed values) and live frames (every frame starts from
//! the original bytes, needed for TUN, which grows the frame).

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf,
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp},
};
use lb_testbed::{bench_report, packet::*, progtest::*};
use lb_userspace::dataplane::BASELINES_OBJECT;

struct Budget {
    rounds: usize,
    repeat: u32,
}

const FULL: Budget = Budget {
    rounds: 9,
    repeat: 1_000_000,
};
const QUICK: Budget = Budget {
    rounds: 3,
    repeat: 100_000,
};
/// Frames per batch in live-frames mode (xdp-trafficgen's default is 64).
const LIVE_BATCH: u32 = 64;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Repeat,
    LiveFrames,
}

fn time_xdp(prog: &mut Xdp, frame: &[u8], repeat: u32, mode: Mode) -> Result<f64> {
    time_xdp_ctx(prog, frame, repeat, mode, None)
}

/// As `time_xdp`, with an xdp_md context (e.g. the ingress interface).
fn time_xdp_ctx(
    prog: &mut Xdp,
    frame: &[u8],
    repeat: u32,
    mode: Mode,
    ctx_in: Option<&[u8]>,
) -> Result<f64> {
    let attrs = match mode {
        Mode::Repeat => TestRunAttrs::new(),
        Mode::LiveFrames => TestRunAttrs::new().xdp_live_frames(LIVE_BATCH),
    };
    let r = prog.test_run(TestRunOptions {
        data_in: Some(frame),
        ctx_in,
        repeat,
        attrs,
        ..TestRunOptions::default()
    })?;
    // The kernel reports the mean duration of one run.
    Ok(r.duration.as_nanos() as f64)
}

/// Medians of `rounds` interleaved timings of `prog` and its `baseline` on
/// `frame` (plain repeat): (program ns, baseline ns).
fn time_pair(
    budget: &Budget,
    baseline: &mut Xdp,
    prog: &mut ProgTest,
    frame: &[u8],
) -> Result<(f64, f64)> {
    let (mut lb, mut base) = (Vec::new(), Vec::new());
    for _ in 0..budget.rounds {
        base.push(time_xdp(baseline, frame, budget.repeat, Mode::Repeat)?);
        lb.push(time_xdp(
            prog.dp.program()?,
            frame,
            budget.repeat,
            Mode::Repeat,
        )?);
    }
    Ok((median(&mut lb), median(&mut base)))
}

struct Baselines(Ebpf);

impl Baselines {
    fn load() -> Result<Self> {
        let mut ebpf =
            Ebpf::load(BASELINES_OBJECT).context("loading the baselines (needs root)")?;
        for name in ["xdp_drop", "xdp_pass", "xdp_tx"] {
            let p: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("no {name}"))?
                .try_into()?;
            p.load()?;
        }
        Ok(Self(ebpf))
    }
    fn prog(&mut self, name: &str) -> Result<&mut Xdp> {
        Ok(self
            .0
            .program_mut(name)
            .ok_or_else(|| anyhow!("no {name}"))?
            .try_into()?)
    }
}

/// Which program a row runs.
#[derive(Clone, Copy)]
enum Target {
    Baseline(&'static str),
    Dr,
    Tun,
    Nat,
}

struct Row {
    name: &'static str,
    /// How a ratio names this row when it is the baseline.
    label: &'static str,
    target: Target,
    mode: Mode,
    frame: Frame,
    /// Index of the baseline row this one is compared with.
    baseline: Option<usize>,
    samples: Vec<f64>,
}

#[derive(Clone, Copy)]
enum Frame {
    /// An ACK of an established flow to the VIP.
    Hit,
    /// TCP to the VIP's SSH port: not a service.
    Miss,
    /// A real server's reply to a NAT'ed flow.
    NatReply,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn row(
    name: &'static str,
    label: &'static str,
    target: Target,
    mode: Mode,
    frame: Frame,
    baseline: Option<usize>,
) -> Row {
    Row {
        name,
        label,
        target,
        mode,
        frame,
        baseline,
        samples: Vec::new(),
    }
}

/// Where the report goes (relative to the workspace root, where xtask runs us).
const OUT_DIR: &str = "target/bench";
/// The committed results `--check` compares with.
const BASELINE: &str = "bench/baseline.json";
/// `--check` fails when a ratio got this much worse.
const TOLERANCE: f64 = 0.25;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let budget = if quick { QUICK } else { FULL };
    let mut results = bench_report::Results {
        kernel: read_trimmed("/proc/sys/kernel/osrelease"),
        cpu: cpu_model(),
        quick,
        ..Default::default()
    };
    let mut baselines = Baselines::load()?;
    let mut dr = ProgTest::seed()?;
    let mut tun_service = seed_service([1, 1]);
    tun_service.forward = lb_common::ForwardKind::Tun;
    let mut tun = ProgTest::with_service(tun_service)?;
    let mut nat_service = seed_service([1, 1]);
    nat_service.forward = lb_common::ForwardKind::Nat;
    let mut nat = ProgTest::with_service(nat_service)?;

    let hit = Ipv4Packet::tcp(CLIENT, 40000, VIP, PORT, TCP_ACK, &[0u8; 6]).frame();
    let miss = Ipv4Packet::tcp(CLIENT, 40000, VIP, 22, TCP_ACK, &[0u8; 6]).frame();
    let mut nat_reply = Ipv4Packet::tcp(RS1, PORT, CLIENT, 40000, TCP_ACK, &[0u8; 6]);
    nat_reply.dst_mac = LB_MAC;
    let nat_reply = nat_reply.frame();
    // Prime the flow in every flow table: the rows time flow-table hits
    // (and, for NAT, the reply of a known flow).
    for t in [&mut dr, &mut tun, &mut nat] {
        let (verdict, _) = t.run(&hit)?;
        if verdict != XDP_TX {
            return Err(anyhow!("priming the flow failed: verdict {verdict}"));
        }
    }

    use Frame::*;
    use Mode::*;
    use Target::*;
    let mut rows = [
        row(
            "baseline XDP_DROP (xdp-bench drop)",
            "XDP_DROP",
            Baseline("xdp_drop"),
            Repeat,
            Hit,
            None,
        ),
        row(
            "baseline XDP_PASS",
            "XDP_PASS",
            Baseline("xdp_pass"),
            Repeat,
            Hit,
            None,
        ),
        row(
            "baseline XDP_TX, MAC swap (xdp-bench tx)",
            "XDP_TX",
            Baseline("xdp_tx"),
            Repeat,
            Hit,
            None,
        ),
        row("lb: DR, flow-table hit", "DR", Dr, Repeat, Hit, Some(2)),
        row(
            "lb: not a service (XDP_PASS)",
            "lb pass",
            Dr,
            Repeat,
            Miss,
            Some(1),
        ),
        row(
            "baseline XDP_TX, live frames",
            "XDP_TX live",
            Baseline("xdp_tx"),
            LiveFrames,
            Hit,
            None,
        ),
        row(
            "lb: DR, flow-table hit, live frames",
            "DR live",
            Dr,
            LiveFrames,
            Hit,
            Some(5),
        ),
        row(
            "lb: TUN, flow-table hit, live frames",
            "TUN live",
            Tun,
            LiveFrames,
            Hit,
            Some(5),
        ),
        row(
            "lb: NAT forward, flow-table hit, live frames",
            "NAT live",
            Nat,
            LiveFrames,
            Hit,
            Some(5),
        ),
        row(
            "lb: NAT reply, live frames",
            "NAT reply live",
            Nat,
            LiveFrames,
            NatReply,
            Some(5),
        ),
    ];
    println!(
        "measuring {} rounds x {} runs per path (BPF_PROG_TEST_RUN, rounds interleaved)",
        budget.rounds, budget.repeat
    );
    for round in 0..budget.rounds {
        for r in rows.iter_mut() {
            let frame = match r.frame {
                Hit => &hit,
                Miss => &miss,
                NatReply => &nat_reply,
            };
            let prog = match r.target {
                Baseline(name) => baselines.prog(name)?,
                Dr => dr.dp.program()?,
                Tun => tun.dp.program()?,
                Nat => nat.dp.program()?,
            };
            match time_xdp(prog, frame, budget.repeat, r.mode) {
                Ok(ns) => r.samples.push(ns),
                Err(e) if r.mode == LiveFrames => {
                    if round == 0 {
                        eprintln!("  {}: live frames not available here ({e})", r.name);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        eprintln!("  round {}/{} done", round + 1, budget.rounds);
    }
    let medians: Vec<Option<f64>> = rows
        .iter_mut()
        .map(|r| (!r.samples.is_empty()).then(|| median(&mut r.samples)))
        .collect();
    const HITS: &str = "Flow-table hits and baselines";
    for (r, m) in rows.iter().zip(&medians) {
        let Some(m) = m else {
            results.notes.push(format!(
                "{}: not measured (live frames unavailable)",
                r.name
            ));
            continue;
        };
        let base = r
            .baseline
            .and_then(|b| medians[b].map(|bm| (rows[b].label, bm)));
        results.push(HITS, r.name, *m, base);
    }
    results.notes.push(
        "targets: DR flow hit <= 1.5x XDP_TX; every scheduler's new flow with 256 backends <= 5x XDP_TX"
            .to_string(),
    );
    schedulers::bench(&budget, baselines.prog("xdp_tx")?, &hit, &mut results)?;
    flow_fill::bench(&budget, baselines.prog("xdp_tx")?, &hit, &mut results)?;
    if let Err(e) = live_veth::bench(&budget, &mut baselines, &mut dr, &hit, &miss, &mut results) {
        results
            .notes
            .push(format!("live forwarding through veth not measured: {e:#}"));
    }
    // A fresh load: every map is still in the object (the agent takes some
    // out once it writes them).
    results.maps = lb_userspace::dataplane::Dataplane::load(&Default::default())?
        .map_memory()
        .into_iter()
        .map(|(name, max_entries, bytes)| bench_report::MapMemory {
            name,
            max_entries,
            bytes,
        })
        .collect();
    results.xdp_bench = xdp_bench::run();
    write_outputs(&results, &args)
}

/// report.md, results.json and chart.png under OUT_DIR; then the baseline
/// update or check the flags ask for.
fn write_outputs(results: &bench_report::Results, args: &[String]) -> Result<()> {
    let flag = |f: &str| args.iter().any(|a| a == f);
    let out = std::path::Path::new(OUT_DIR);
    std::fs::create_dir_all(out)?;
    let report = bench_report::markdown(results);
    std::fs::write(out.join("report.md"), &report)?;
    bench_report::write_json(results, &out.join("results.json"))?;
    if let Err(e) = bench_report::draw_chart(results, &out.join("chart.png")) {
        eprintln!("chart.png not drawn: {e:#}");
    }
    println!("\n{report}");
    println!("written: {OUT_DIR}/report.md, results.json, chart.png");
    let baseline = std::path::Path::new(BASELINE);
    if flag("--update-baseline") {
        std::fs::create_dir_all("bench")?;
        bench_report::write_json(results, baseline)?;
        println!("baseline updated: {BASELINE} (commit it)");
    }
    if flag("--check") {
        let then = bench_report::read_json(baseline)?;
        let worse = bench_report::regressions(results, &then, TOLERANCE);
        if !worse.is_empty() {
            return Err(anyhow!(
                "ratios more than {:.0}% worse than {BASELINE}:\n  {}",
                TOLERANCE * 100.0,
                worse.join("\n  ")
            ));
        }
        println!(
            "check: no ratio more than {:.0}% worse than {BASELINE}",
            TOLERANCE * 100.0
        );
    }
    Ok(())
}

/// A /proc/self/status field in KiB.
fn vm_kib(field: &str) -> u64 {
    read_trimmed("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn cpu_model() -> String {
    read_trimmed("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default()
}

/// The real xdp-bench, when the kernel lets it run: `xdp-bench drop` and
/// `tx` for a few seconds on one end of a veth pair in a namespace of our
/// own. Debian's 1.3.1 needs tracepoints this kernel lacks; then the
/// report says so instead of failing.
mod xdp_bench {
    use std::process::{Command, Output};

    const SECONDS: &str = "3";
    const LIBXDP_DIR: &str = "/sys/fs/bpf/xdp";

    fn run_cmd(args: &[&str]) -> Option<Output> {
        Command::new(args[0]).args(&args[1..]).output().ok()
    }

    pub fn run() -> Vec<String> {
        if run_cmd(&["xdp-bench", "--help"]).is_none() {
            return vec!["xdp-bench is not installed (xdp-tools)".to_string()];
        }
        // libxdp makes its lock directory in bpffs; leave none behind.
        let libxdp_dir = std::path::Path::new(LIBXDP_DIR);
        let had_libxdp_dir = libxdp_dir.exists();
        let ns = format!("lbxb{}", std::process::id());
        let setup: [&[&str]; 4] = [
            &["ip", "netns", "add", &ns],
            &[
                "ip", "-n", &ns, "link", "add", "xb0", "type", "veth", "peer", "name", "xb1",
            ],
            &["ip", "-n", &ns, "link", "set", "xb0", "up"],
            &["ip", "-n", &ns, "link", "set", "xb1", "up"],
        ];
        let mut out = Vec::new();
        if setup
            .iter()
            .all(|c| run_cmd(c).is_some_and(|o| o.status.success()))
        {
            for mode in ["drop", "tx"] {
                // nsenter, not ip netns exec: libxdp needs the host's bpffs.
                let net = format!("--net=/var/run/netns/{ns}");
                let text = run_cmd(&[
                    "nsenter",
                    &net,
                    "timeout",
                    SECONDS,
                    "xdp-bench",
                    mode,
                    "xb0",
                ])
                .map(|o| {
                    format!(
                        "{}{}",
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    )
                })
                .unwrap_or_default();
                let first = text
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("no output");
                let summary = text
                    .lines()
                    .rfind(|l| l.contains("rx/s") || l.contains("pkt/s"));
                out.push(match summary {
                    Some(line) => format!(
                        "xdp-bench {mode} ran (idle veth, no traffic generator): {}",
                        line.trim()
                    ),
                    None => format!("xdp-bench {mode} could not run here: {}", first.trim()),
                });
            }
        } else {
            out.push("xdp-bench not run: no namespace with a veth pair could be made".to_string());
        }
        let _ = run_cmd(&["ip", "netns", "del", &ns]);
        if !had_libxdp_dir {
            // Only when empty: then it is the one xdp-bench just made.
            let _ = std::fs::remove_dir(libxdp_dir);
        }
        out
    }
}

/// New-flow cost per scheduler and backend count.
mod schedulers {
    use super::*;
    use lb_common::SchedulerKind;
    use lb_userspace::dataplane::LoadOptions;

    const BACKENDS: [usize; 3] = [2, 16, 256];
    const ALL: [SchedulerKind; 14] = [
        SchedulerKind::Rr,
        SchedulerKind::Wrr,
        SchedulerKind::Lc,
        SchedulerKind::Wlc,
        SchedulerKind::Sed,
        SchedulerKind::Nq,
        SchedulerKind::Fo,
        SchedulerKind::Ovf,
        SchedulerKind::Twos,
        SchedulerKind::Dh,
        SchedulerKind::Sh,
        SchedulerKind::Mh,
        SchedulerKind::Lblc,
        SchedulerKind::Lblcr,
    ];

    /// Every packet a new flow: the flow table holds one entry and is full
    /// with another flow, so each run misses, schedules, fails to insert
    /// and takes the flow-hash fallback (counted, forwarded untracked): the
    /// path of a SYN flood, an upper bound of a new flow's cost. Connection
    /// counters stay put, so the scheduler sees the same state every run.
    fn new_flow_program(kind: SchedulerKind, backends: usize) -> Result<ProgTest> {
        let mut t = ProgTest::with_service_and(
            service_with(kind, &vec![1; backends]),
            &LoadOptions {
                flow_table_size: 1,
                ..LoadOptions::default()
            },
        )?;
        let filler = Ipv4Packet::tcp(CLIENT, 1, VIP, PORT, TCP_SYN, b"").frame();
        t.run(&filler)?;
        Ok(t)
    }

    pub fn bench(
        budget: &Budget,
        xdp_tx: &mut Xdp,
        frame: &[u8],
        results: &mut bench_report::Results,
    ) -> Result<()> {
        const SECTION: &str = "New flows per scheduler (scheduling + flow insert attempt; baseline XDP_TX, same rounds)";
        let mut worst: (f64, &str, usize) = (0.0, "", 0);
        for kind in ALL {
            for n in BACKENDS {
                let mut t = new_flow_program(kind, n)?;
                let (lb, base) = time_pair(budget, xdp_tx, &mut t, frame)?;
                let ratio = lb / base;
                if ratio > worst.0 {
                    worst = (ratio, kind.name(), n);
                }
                results.push(
                    SECTION,
                    &format!("{} new flow, {n} backends", kind.name()),
                    lb,
                    Some(("XDP_TX", base)),
                );
            }
            eprintln!("  {} measured", kind.name());
        }
        results.notes.push(format!(
            "costliest new flow: {} with {} backends, {:.1}x XDP_TX (every new-flow row is the \
             full-table path: scheduling, a failed insert and the flow-hash fallback, what each \
             SYN of a flood costs)",
            worst.1, worst.2, worst.0
        ));
        Ok(())
    }
}

/// Flow-table hits with the table filled to 1K, 100K and 1M flows.
mod flow_fill {
    use super::*;
    use lb_common::{FlowEntry, conntrack::S_ESTABLISHED};
    use lb_userspace::dataplane::LoadOptions;

    const FILLS: [u32; 3] = [1_000, 100_000, 1_000_000];

    pub fn bench(
        budget: &Budget,
        xdp_tx: &mut Xdp,
        frame: &[u8],
        results: &mut bench_report::Results,
    ) -> Result<()> {
        const SECTION: &str = "DR flow-table hit, table filled (the same flow each run: hash depth, not cache misses)";
        for fill in FILLS {
            eprintln!("  filling {fill} flows");
            let mut t = ProgTest::with_service_and(
                seed_service([1, 1]),
                &LoadOptions {
                    flow_table_size: fill,
                    ..LoadOptions::default()
                },
            )?;
            // The measured flow, then fill - 1 others.
            t.run(frame)?;
            let entry = FlowEntry {
                real_id: 1,
                service_id: 0,
                last_seen_ns: 0,
                state: S_ESTABLISHED,
                _pad: [0; 7],
            };
            t.dp.insert_flows((1..fill).map(|i| {
                (
                    tcp_flow_key(std::net::Ipv4Addr::from(0x0a00_0000 + i), 1000),
                    entry,
                )
            }))?;
            let (lb, base) = time_pair(budget, xdp_tx, &mut t, frame)?;
            results.push(
                SECTION,
                &format!("DR hit, {fill} flows in the table"),
                lb,
                Some(("XDP_TX", base)),
            );
            // The agent's work per second at this fill: one expiry sweep
            // (none expire: the time it takes and the memory it needs).
            let hwm_before = vm_kib("VmHWM:");
            let started = std::time::Instant::now();
            t.dp.sweep_expired(lb_userspace::dataplane::ConnTimeouts {
                tcp: u32::MAX,
                ..Default::default()
            })?;
            let took = started.elapsed();
            results.notes.push(format!(
                "agent expiry sweep over {fill} flows: {:.0} ms, peak resident memory +{:.1} MiB (process now {:.1} MiB)",
                took.as_secs_f64() * 1e3,
                vm_kib("VmHWM:").saturating_sub(hwm_before) as f64 / 1024.0,
                vm_kib("VmRSS:") as f64 / 1024.0,
            ));
        }
        Ok(())
    }
}

/// Live forwarding through a veth pair, in a namespace of our own: the
/// program runs in BPF_PROG_TEST_RUN's live-frames mode as if each frame
/// arrived on `lbv0` (what xdp-trafficgen does); XDP_TX sends it out of
/// lbv0 to its peer `lbv1`, where an XDP_DROP program (native mode: veth
/// delivers XDP_TX only to a peer with an XDP program) is the sink. One
/// core; Mpps = 1000 / ns per packet. One flow repeated: the generator
/// cannot vary source addresses per frame.
mod live_veth {
    use super::*;
    use aya::programs::XdpMode;
    use std::{fs::File, process::Command};

    const GEN: &str = "lbv0";
    const SINK: &str = "lbv1";

    /// Frames the sink's XDP_DROP program consumed (ethtool -S: veth's
    /// rx_queue_N_xdp_drops), summed over queues.
    fn sink_drops() -> u64 {
        let Ok(out) = Command::new("ethtool").args(["-S", SINK]).output() else {
            return 0;
        };
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("xdp_drops"))
            .filter_map(|l| l.split(':').nth(1)?.trim().parse::<u64>().ok())
            .sum()
    }

    fn ip(args: &[&str]) -> Result<()> {
        let status = Command::new("ip").args(args).status()?;
        if !status.success() {
            return Err(anyhow!("ip {} failed", args.join(" ")));
        }
        Ok(())
    }

    /// xdp_md as BPF_PROG_TEST_RUN takes it: data_end = the frame's length,
    /// ingress_ifindex = the generator veth.
    fn ctx(frame: &[u8], ifindex: u32) -> Vec<u8> {
        [0u32, frame.len() as u32, 0, ifindex, 0, 0]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect()
    }

    fn time(prog: &mut Xdp, frame: &[u8], ifindex: u32, repeat: u32) -> Result<f64> {
        let ctx = ctx(frame, ifindex);
        time_xdp_ctx(prog, frame, repeat, Mode::LiveFrames, Some(&ctx))
    }

    pub fn bench(
        budget: &Budget,
        baselines: &mut Baselines,
        dr: &mut ProgTest,
        hit: &[u8],
        miss: &[u8],
        results: &mut bench_report::Results,
    ) -> Result<()> {
        let ns = format!("lbtp{}", std::process::id());
        ip(&["netns", "add", &ns])?;
        let outcome = (|| -> Result<()> {
            ip(&[
                "-n", &ns, "link", "add", GEN, "type", "veth", "peer", "name", SINK,
            ])?;
            ip(&["-n", &ns, "link", "set", GEN, "up"])?;
            ip(&["-n", &ns, "link", "set", SINK, "up"])?;
            // This thread enters the namespace: interface indexes, the
            // attach and the live frames all resolve in it.
            let netns = File::open(format!("/var/run/netns/{ns}"))?;
            let host = File::open("/proc/self/ns/net")?;
            nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)?;
            let measured = measure(budget, baselines, dr, hit, miss, results);
            nix::sched::setns(&host, nix::sched::CloneFlags::CLONE_NEWNET)?;
            measured
        })();
        let _ = ip(&["netns", "del", &ns]);
        outcome
    }

    fn measure(
        budget: &Budget,
        baselines: &mut Baselines,
        dr: &mut ProgTest,
        hit: &[u8],
        miss: &[u8],
        results: &mut bench_report::Results,
    ) -> Result<()> {
        const SECTION: &str = "Live forwarding through a veth pair (one core, live frames)";
        let gen_index = nix::net::if_::if_nametoindex(GEN)?;
        let sink = baselines.prog("xdp_drop")?;
        let link = sink.attach(SINK, XdpMode::Driver)?;
        let (mut tx, mut pass, mut lb_hit, mut lb_miss) = (vec![], vec![], vec![], vec![]);
        let sunk_before = sink_drops();
        for _ in 0..budget.rounds {
            tx.push(time(
                baselines.prog("xdp_tx")?,
                hit,
                gen_index,
                budget.repeat,
            )?);
            pass.push(time(
                baselines.prog("xdp_pass")?,
                miss,
                gen_index,
                budget.repeat,
            )?);
            lb_hit.push(time(dr.dp.program()?, hit, gen_index, budget.repeat)?);
            lb_miss.push(time(dr.dp.program()?, miss, gen_index, budget.repeat)?);
        }
        // What XDP_TX sent (the baseline's and the balancer's) reached the sink.
        let sent = 2 * budget.rounds as u64 * u64::from(budget.repeat);
        let sunk = sink_drops().saturating_sub(sunk_before);
        baselines.prog("xdp_drop")?.detach(link)?;
        let (tx, pass) = (median(&mut tx), median(&mut pass));
        let (lb_hit, lb_miss) = (median(&mut lb_hit), median(&mut lb_miss));
        results.push(SECTION, "baseline XDP_TX out of the veth", tx, None);
        results.push(
            SECTION,
            "lb: DR forward out of the veth",
            lb_hit,
            Some(("XDP_TX veth", tx)),
        );
        results.push(SECTION, "baseline XDP_PASS to the stack", pass, None);
        results.push(
            SECTION,
            "lb: not a service, to the stack",
            lb_miss,
            Some(("XDP_PASS veth", pass)),
        );
        results.notes.push(format!(
            "live forwarding: the sink veth's XDP program received {sunk} of the {sent} frames sent with XDP_TX"
        ));
        results.notes.push(format!(
            "live forwarding, one core: lb DR {:.2} Mpps vs no-op XDP_TX {:.2} Mpps ({:.0}% of the limit); \
             non-service traffic {:.2} Mpps vs XDP_PASS {:.2} Mpps",
            1e3 / lb_hit,
            1e3 / tx,
            100.0 * tx / lb_hit,
            1e3 / lb_miss,
            1e3 / pass,
        ));
        Ok(())
    }
}
