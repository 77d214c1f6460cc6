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

pub fn bench(
    budget: &Budget,
    xdp_tx: &mut Xdp,
    frame: &[u8],
    results: &mut bench_report::Results,
) -> Result<()> {
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
