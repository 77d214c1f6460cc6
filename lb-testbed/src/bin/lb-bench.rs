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
use lb_testbed::{packet::*, progtest::*};
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
    let attrs = match mode {
        Mode::Repeat => TestRunAttrs::new(),
        Mode::LiveFrames => TestRunAttrs::new().xdp_live_frames(LIVE_BATCH),
    };
    let r = prog.test_run(TestRunOptions {
        data_in: Some(frame),
        repeat,
        attrs,
        ..TestRunOptions::default()
    })?;
    // The kernel reports the mean duration of one run.
    Ok(r.duration.as_nanos() as f64)
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

fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let budget = if quick { QUICK } else { FULL };
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
    println!();
    println!("| path | ns/packet (median) | ratio to baseline |");
    println!("|---|---:|---:|");
    for (r, m) in rows.iter().zip(&medians) {
        let Some(m) = m else {
            println!("| {} | n/a | - |", r.name);
            continue;
        };
        let ratio = match r.baseline.and_then(|b| medians[b].map(|bm| (b, bm))) {
            Some((b, bm)) => format!("{:.2}x {}", m / bm, rows[b].label),
            None => "-".to_string(),
        };
        println!("| {} | {:.1} | {} |", r.name, m, ratio);
    }
    println!();
    println!(
        "targets (docs/reference.md): DR flow hit <= 1.5x XDP_TX, TUN <= 2.5x, non-service pass <= 1.3x XDP_PASS"
    );
    Ok(())
}
