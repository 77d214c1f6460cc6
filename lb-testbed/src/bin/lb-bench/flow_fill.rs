//! Flow-table hits with the table filled to 1K, 100K and 1M flows.

use super::*;
use lb_common::conntrack::S_ESTABLISHED;
use lb_userspace::dataplane::LoadOptions;

const FILLS: [u32; 3] = [1_000, 100_000, 1_000_000];

pub fn bench(
    budget: &Budget,
    xdp_tx: &mut Xdp,
    frame: &[u8],
    results: &mut bench_report::Results,
) -> Result<()> {
    const SECTION: &str =
        "DR flow-table hit, table filled (the same flow each run: hash depth, not cache misses)";
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
        let entry = seed_flow_entry(S_ESTABLISHED, 0);
        t.dp.insert_flows((1..fill).map(|i| (filler_flow_key(i), entry)))?;
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
