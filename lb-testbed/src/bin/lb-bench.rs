//! `cargo xtask bench`: nanoseconds per packet through BPF_PROG_TEST_RUN, of
//! the balancer's paths next to xdp-bench's no-op programs, measured side by
//! side in the same run (rounds interleaved, median reported), with the
//! ratio to the matching baseline. Machines differ: only the ratios travel.

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf,
    programs::{TestRun, TestRunOptions, Xdp},
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

fn time_xdp(prog: &mut Xdp, frame: &[u8], repeat: u32) -> Result<f64> {
    let r = prog.test_run(TestRunOptions {
        data_in: Some(frame),
        repeat,
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

struct Row {
    name: &'static str,
    /// How a ratio names this row when it is the baseline.
    label: &'static str,
    samples: Vec<f64>,
    /// Index of the baseline row this one is compared with.
    baseline: Option<usize>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let budget = if quick { QUICK } else { FULL };
    let mut baselines = Baselines::load()?;
    let mut lb = ProgTest::seed()?;

    // Flow-hit frame: an ACK of an established flow (primed once). DR only
    // rewrites MACs to fixed values, so rerunning on the modified buffer
    // measures the same path every time.
    let hit = Ipv4Packet::tcp(CLIENT, 40000, VIP, PORT, TCP_ACK, &[0u8; 6]).frame();
    let (verdict, _) = lb.run(&hit)?;
    if verdict != XDP_TX {
        return Err(anyhow!("priming the flow failed: verdict {verdict}"));
    }
    // Not for a service: same VIP, SSH port. Unmodified, so reruns are identical.
    let miss = Ipv4Packet::tcp(CLIENT, 40000, VIP, 22, TCP_ACK, &[0u8; 6]).frame();

    let mut rows = [
        Row {
            name: "baseline XDP_DROP (xdp-bench drop)",
            label: "XDP_DROP",
            samples: vec![],
            baseline: None,
        },
        Row {
            name: "baseline XDP_PASS",
            label: "XDP_PASS",
            samples: vec![],
            baseline: None,
        },
        Row {
            name: "baseline XDP_TX, MAC swap (xdp-bench tx)",
            label: "XDP_TX",
            samples: vec![],
            baseline: None,
        },
        Row {
            name: "lb: DR, flow-table hit",
            label: "DR hit",
            samples: vec![],
            baseline: Some(2),
        },
        Row {
            name: "lb: not a service (XDP_PASS)",
            label: "lb pass",
            samples: vec![],
            baseline: Some(1),
        },
    ];
    println!(
        "measuring {} rounds x {} runs per path (BPF_PROG_TEST_RUN, rounds interleaved)",
        budget.rounds, budget.repeat
    );
    for round in 0..budget.rounds {
        rows[0]
            .samples
            .push(time_xdp(baselines.prog("xdp_drop")?, &hit, budget.repeat)?);
        rows[1]
            .samples
            .push(time_xdp(baselines.prog("xdp_pass")?, &hit, budget.repeat)?);
        rows[2]
            .samples
            .push(time_xdp(baselines.prog("xdp_tx")?, &hit, budget.repeat)?);
        rows[3]
            .samples
            .push(time_xdp(lb.dp.program()?, &hit, budget.repeat)?);
        rows[4]
            .samples
            .push(time_xdp(lb.dp.program()?, &miss, budget.repeat)?);
        eprintln!("  round {}/{} done", round + 1, budget.rounds);
    }
    let medians: Vec<f64> = rows.iter_mut().map(|r| median(&mut r.samples)).collect();
    println!();
    println!("| path | ns/packet (median) | ratio to baseline |");
    println!("|---|---:|---:|");
    for (row, m) in rows.iter().zip(&medians) {
        let ratio = match row.baseline {
            Some(b) => format!("{:.2}x {}", m / medians[b], rows[b].label),
            None => "-".to_string(),
        };
        println!("| {} | {:.1} | {} |", row.name, m, ratio);
    }
    println!();
    println!(
        "targets (docs/reference.md): DR flow hit <= 1.5x XDP_TX, non-service pass <= 1.3x XDP_PASS"
    );
    Ok(())
}
