//! New-flow cost per scheduler and backend count.

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
/// with another flow, so each run misses, schedules, finds the table full
/// (after the first failed insert this CPU tries none until the clock's
/// next tick) and takes the flow-hash fallback (counted, forwarded
/// untracked): the path of a SYN flood against a full table. Connection
/// counters stay put, so the scheduler sees the same state every run.
fn new_flow_program(kind: SchedulerKind, backends: usize) -> Result<ProgTest> {
    let mut t = ProgTest::with_service_and(
        service_with(kind, &vec![1; backends]),
        &LoadOptions {
            flow_table_size: 1,
            ..LoadOptions::default()
        },
    )?;
    let filler = Ipv4Packet::tcp(CLIENT_IP, 1, VIP, PORT, TCP_SYN, b"").frame();
    t.run(&filler)?;
    Ok(t)
}

/// Schedulers of the counted rows: rr, whose count change is the bare
/// atomic add, and the three that keep a least-connection tree.
const COUNTED: [SchedulerKind; 4] = [
    SchedulerKind::Rr,
    SchedulerKind::Lc,
    SchedulerKind::Wlc,
    SchedulerKind::Sed,
];
/// New connections per round of the counted rows.
const COUNTED_CALLS: usize = 20_000;
const QUICK_COUNTED_CALLS: usize = 5_000;

/// A SYN of connection `i`: a source address and port no other has.
fn syn_of(i: usize) -> Vec<u8> {
    let src = std::net::Ipv4Addr::from(0x0a00_0000 | (i as u32 >> 8));
    Ipv4Packet::tcp(src, 1024 + (i & 0xff) as u16, VIP, PORT, TCP_SYN, b"").frame()
}

/// Mean ns of one run of `prog` per frame, each frame once (repeat 1).
fn each_once(prog: &mut Xdp, frames: &[Vec<u8>]) -> Result<f64> {
    let mut total = 0.0;
    for f in frames {
        total += time_xdp(prog, f, 1, Mode::Repeat)?;
    }
    Ok(total / frames.len() as f64)
}

/// New connections that are tracked and counted, one SYN of a new
/// connection per run: scheduling, the flow insert, the count and, for
/// lc / wlc / sed, the recompute of the server's path in the tree (the
/// rows above never count: their table is full). Next to XDP_TX on the
/// same frames, and rr (no tree) on the same path.
fn counted(budget: &Budget, xdp_tx: &mut Xdp, results: &mut bench_report::Results) -> Result<()> {
    const SECTION: &str = "New connections tracked and counted, 256 backends (repeat 1, a new connection's SYN each run)";
    let calls = if budget.rounds < FULL.rounds {
        QUICK_COUNTED_CALLS
    } else {
        COUNTED_CALLS
    };
    let mut programs = COUNTED
        .iter()
        .map(|&kind| {
            ProgTest::with_service_and(
                service_with(kind, &[1; 256]),
                &LoadOptions {
                    // Every connection of every round fits.
                    flow_table_size: (budget.rounds * calls).next_power_of_two() as u32,
                    ..LoadOptions::default()
                },
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let mut samples = vec![Vec::new(); COUNTED.len()];
    let mut base = Vec::new();
    for round in 0..budget.rounds {
        let frames: Vec<Vec<u8>> = (round * calls..(round + 1) * calls).map(syn_of).collect();
        base.push(each_once(xdp_tx, &frames)?);
        for (t, s) in programs.iter_mut().zip(&mut samples) {
            s.push(each_once(t.dp.program()?, &frames)?);
        }
    }
    let base = median(&mut base);
    results.push(SECTION, "baseline XDP_TX, MAC swap", base, None);
    for (kind, mut s) in COUNTED.iter().zip(samples) {
        results.push(
            SECTION,
            &format!("{} new connection, counted", kind.name()),
            median(&mut s),
            Some(("XDP_TX fresh", base)),
        );
    }
    Ok(())
}

pub fn bench(
    budget: &Budget,
    xdp_tx: &mut Xdp,
    frame: &[u8],
    results: &mut bench_report::Results,
) -> Result<()> {
    counted(budget, xdp_tx, results)?;
    eprintln!("  counted new connections measured");
    const SECTION: &str =
        "New flows per scheduler (scheduling + flow insert attempt; baseline XDP_TX, same rounds)";
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
         full-table path: scheduling, the table-full check and the flow-hash fallback, what \
         each SYN of a flood against a full table costs)",
        worst.1, worst.2, worst.0
    ));
    Ok(())
}
