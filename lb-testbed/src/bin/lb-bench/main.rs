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
use lb_testbed::{bench_report, bench_targets, packet::*, progtest::*, trafficgen::LIVE_BATCH};
use lb_userspace::dataplane::BASELINES_OBJECT;

mod agent_memory;
mod flow_fill;
mod live_veth;
mod local_connect;
mod schedulers;
mod sync_costs;
mod xdp_bench;

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
    /// The seed's service on its IPv6 addresses, DR (lb hands the frame to
    /// lb6 by tail call).
    Dr6,
    /// The same in TUN (lb6 hands the frame on to lb6_tun by tail call).
    Tun6,
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
    /// Hit and Miss over IPv6.
    Hit6,
    Miss6,
}

/// Calls per measurement of the fresh-frame rows.
const FRESH_CALLS: u32 = 20_000;
const QUICK_FRESH_CALLS: u32 = 5_000;

/// Mean ns of `calls` runs of `prog`, each on a fresh copy of `frame`
/// (repeat 1: what a TUN encapsulation needs, and how Katran's tester runs).
fn fresh_runs(prog: &mut Xdp, frame: &[u8], calls: u32) -> Result<f64> {
    let mut total = 0.0;
    for _ in 0..calls {
        total += time_xdp(prog, frame, 1, Mode::Repeat)?;
    }
    Ok(total / f64::from(calls))
}

/// Hits with a fresh frame each run, DR and TUN next to XDP_TX measured the
/// same way: TUN comparable with Katran's IPIP hit.
fn fresh_frames(
    budget: &Budget,
    baselines: &mut Baselines,
    dr: &mut ProgTest,
    tun: &mut ProgTest,
    tun6: &mut ProgTest,
    hits: (&[u8], &[u8]),
    results: &mut bench_report::Results,
) -> Result<()> {
    let (hit, hit6) = hits;
    const SECTION: &str = "Flow-table hits, a fresh frame each run (repeat 1, mean of many calls: Katran's tester's way)";
    let calls = if budget.rounds < FULL.rounds {
        QUICK_FRESH_CALLS
    } else {
        FRESH_CALLS
    };
    let (mut base, mut d, mut t, mut t6) = (vec![], vec![], vec![], vec![]);
    for _ in 0..budget.rounds {
        base.push(fresh_runs(baselines.prog("xdp_tx")?, hit, calls)?);
        d.push(fresh_runs(dr.dp.program()?, hit, calls)?);
        t.push(fresh_runs(tun.dp.program()?, hit, calls)?);
        t6.push(fresh_runs(tun6.dp.program()?, hit6, calls)?);
    }
    let (base, d, t, t6) = (
        median(&mut base),
        median(&mut d),
        median(&mut t),
        median(&mut t6),
    );
    results.push(SECTION, "baseline XDP_TX, MAC swap", base, None);
    results.push(SECTION, "lb: DR hit", d, Some(("XDP_TX fresh", base)));
    results.push(
        SECTION,
        "lb: TUN hit (IPIP)",
        t,
        Some(("XDP_TX fresh", base)),
    );
    results.push(
        SECTION,
        "lb: TUN over IPv6 hit (IPv6-in-IPv6)",
        t6,
        Some(("XDP_TX fresh", base)),
    );
    Ok(())
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

/// The kernel's limit on instructions processed per program
/// (BPF_COMPLEXITY_LIMIT_INSNS).
const VERIFIER_BUDGET: u32 = 1_000_000;

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

    let hit = Ipv4Packet::tcp(CLIENT_IP, 40000, VIP, PORT, TCP_ACK, &[0u8; 6]).frame();
    let miss = Ipv4Packet::tcp(CLIENT_IP, 40000, VIP, 22, TCP_ACK, &[0u8; 6]).frame();
    let mut nat_reply = Ipv4Packet::tcp(RS1_IP, PORT, CLIENT_IP, 40000, TCP_ACK, &[0u8; 6]);
    nat_reply.dst_mac = LB_MAC;
    let nat_reply = nat_reply.frame();
    // Prime the flow in every flow table: the rows time flow-table hits
    // (and, for NAT, the reply of a known flow).
    let mut dr6 = ProgTest::with_service(seed_service6())?;
    let mut tun6 = ProgTest::with_service(lb_userspace::planning::plan::PlannedService {
        forward: lb_common::ForwardKind::Tun,
        ..seed_service6()
    })?;
    let hit6 = Ipv6Packet::tcp(CLIENT_IP6, 40000, VIP6, PORT, TCP_ACK, &[0u8; 6]).frame();
    let miss6 = Ipv6Packet::tcp(CLIENT_IP6, 40000, VIP6, 22, TCP_ACK, &[0u8; 6]).frame();
    for (t, frame) in [
        (&mut dr, &hit),
        (&mut tun, &hit),
        (&mut nat, &hit),
        (&mut dr6, &hit6),
        (&mut tun6, &hit6),
    ] {
        let (verdict, _) = t.run(frame)?;
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
        row(
            "lb: DR over IPv6, flow-table hit",
            "DR6",
            Dr6,
            Repeat,
            Hit6,
            Some(2),
        ),
        row(
            "lb: IPv6, not a service (XDP_PASS)",
            "lb pass6",
            Dr6,
            Repeat,
            Miss6,
            Some(1),
        ),
        row(
            "lb: TUN over IPv6, flow-table hit, live frames",
            "TUN6 live",
            Tun6,
            LiveFrames,
            Hit6,
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
                Hit6 => &hit6,
                Miss6 => &miss6,
            };
            let prog = match r.target {
                Baseline(name) => baselines.prog(name)?,
                Dr => dr.dp.program()?,
                Tun => tun.dp.program()?,
                Nat => nat.dp.program()?,
                Dr6 => dr6.dp.program()?,
                Tun6 => tun6.dp.program()?,
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
    fresh_frames(
        &budget,
        &mut baselines,
        &mut dr,
        &mut tun,
        &mut tun6,
        (&hit, &hit6),
        &mut results,
    )?;
    schedulers::bench(&budget, baselines.prog("xdp_tx")?, &hit, &mut results)?;
    flow_fill::bench(&budget, baselines.prog("xdp_tx")?, &hit, &mut results)?;
    if let Err(e) = sync_costs::bench(&budget, &mut results) {
        results
            .notes
            .push(format!("connection sync costs not measured: {e:#}"));
    }
    if let Err(e) = local_connect::bench(&budget, &mut results) {
        results
            .notes
            .push(format!("local clients' connect hook not measured: {e:#}"));
    }
    if let Err(e) = live_veth::bench(&budget, &mut baselines, &mut dr, &hit, &miss, &mut results) {
        results
            .notes
            .push(format!("live forwarding through veth not measured: {e:#}"));
    }
    // A fresh load: every map is still in the object (the agent takes some
    // out once it writes them).
    let fresh = lb_userspace::dataplane::Dataplane::load(&Default::default())?;
    // How close each program is to the verifier's budget: what any further
    // code in it has to fit into.
    for (program, insns) in fresh.verified_insns() {
        results.notes.push(format!(
            "verifier: {program} processed {insns} instructions of its budget of {VERIFIER_BUDGET} ({:.1}%)",
            100.0 * f64::from(insns) / f64::from(VERIFIER_BUDGET)
        ));
    }
    results.maps = fresh
        .map_memory()
        .into_iter()
        .map(|(name, max_entries, bytes)| bench_report::MapMemory {
            name,
            max_entries,
            bytes,
        })
        .collect();
    if let Err(e) = agent_memory::bench(&mut results) {
        results.notes.push(format!(
            "agent memory with a full flow table not measured: {e:#}"
        ));
    }
    results.xdp_bench = xdp_bench::run(&mut baselines);
    let verdicts = bench_targets::verdicts(&results, bench_targets::TARGETS);
    results.notes.extend(verdicts);
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
    status_kib("self", field)
}

/// A /proc/PROCESS/status field ("VmRSS:", "VmHWM:") in KiB (0 if absent).
fn status_kib(process: &str, field: &str) -> u64 {
    read_trimmed(&format!("/proc/{process}/status"))
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
