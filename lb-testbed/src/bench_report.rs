//! What `cargo xtask bench` leaves behind: target/bench/results.json (every
//! measurement), report.md (the tables), chart.png (ratios to the no-op
//! XDP_TX baseline), and the regression check against bench/baseline.json.

use std::{fmt::Write as _, path::Path};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

/// One row of a table: a path's cost, next to its baseline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Measurement {
    /// The table it belongs to.
    pub section: String,
    pub name: String,
    /// ns/packet (median of the rounds).
    pub ns: f64,
    /// The baseline it is compared with, and the ratio.
    pub baseline: Option<String>,
    pub ratio: Option<f64>,
}

/// Kernel memory of one map at the sizes the bench loaded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MapMemory {
    pub name: String,
    pub max_entries: u32,
    pub bytes: u64,
}

/// The running agent's resident memory with a full flow table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AgentMemory {
    pub flows: u32,
    /// VmRSS before any flow.
    pub idle_rss_kib: u64,
    /// VmRSS and VmHWM after sweeps over every flow.
    pub rss_kib: u64,
    pub peak_kib: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Results {
    /// uname -r and the CPU model: ratios travel, absolute times do not.
    pub kernel: String,
    pub cpu: String,
    pub quick: bool,
    pub measurements: Vec<Measurement>,
    pub maps: Vec<MapMemory>,
    #[serde(default)]
    pub agent_memory: Option<AgentMemory>,
    /// What running the real xdp-bench gave (or why it could not run).
    pub xdp_bench: Vec<String>,
    pub notes: Vec<String>,
}

impl Results {
    pub fn push(&mut self, section: &str, name: &str, ns: f64, baseline: Option<(&str, f64)>) {
        self.measurements.push(Measurement {
            section: section.to_string(),
            name: name.to_string(),
            ns,
            baseline: baseline.map(|(label, _)| label.to_string()),
            ratio: baseline.map(|(_, base)| ns / base),
        });
    }

    fn sections(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for m in &self.measurements {
            if !out.contains(&m.section.as_str()) {
                out.push(&m.section);
            }
        }
        out
    }
}

const KIB_PER_MIB: f64 = 1024.0;
/// Mpps = packets per microsecond = NS_PER_US / (ns per packet).
const NS_PER_US: f64 = 1e3;

/// The tables, as markdown (also what the bench prints).
pub fn markdown(r: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# lb benchmark\n");
    let _ = writeln!(
        out,
        "kernel {}, CPU {}{}. ns/packet are medians of interleaved rounds \
         (BPF_PROG_TEST_RUN's timing; wall time for the live pipeline); only the \
         ratios compare across machines.\n",
        r.kernel,
        r.cpu,
        if r.quick { ", quick run" } else { "" }
    );
    for section in r.sections() {
        let _ = writeln!(out, "## {section}\n");
        let _ = writeln!(out, "| path | ns/packet | Mpps, one core | ratio |");
        let _ = writeln!(out, "|---|---:|---:|---:|");
        for m in r.measurements.iter().filter(|m| m.section == section) {
            let ratio = match (&m.baseline, m.ratio) {
                (Some(b), Some(x)) => format!("{x:.2}x {b}"),
                _ => "-".to_string(),
            };
            let _ = writeln!(
                out,
                "| {} | {:.1} | {:.2} | {ratio} |",
                m.name,
                m.ns,
                NS_PER_US / m.ns
            );
        }
        out.push('\n');
    }
    if !r.maps.is_empty() {
        let _ = writeln!(out, "## Map memory (kernel memlock at the default sizes)\n");
        let _ = writeln!(out, "| map | entries | bytes |");
        let _ = writeln!(out, "|---|---:|---:|");
        for m in &r.maps {
            let _ = writeln!(out, "| {} | {} | {} |", m.name, m.max_entries, m.bytes);
        }
        let total: u64 = r.maps.iter().map(|m| m.bytes).sum();
        let _ = writeln!(out, "| total | | {total} |\n");
    }
    if let Some(a) = &r.agent_memory {
        let _ = writeln!(out, "## Agent memory (lb-userspace, resident)\n");
        let _ = writeln!(out, "| flows | resident MiB | peak MiB |");
        let _ = writeln!(out, "|---:|---:|---:|");
        let _ = writeln!(out, "| 0 | {:.1} | |", a.idle_rss_kib as f64 / KIB_PER_MIB);
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.1} |\n",
            a.flows,
            a.rss_kib as f64 / KIB_PER_MIB,
            a.peak_kib as f64 / KIB_PER_MIB
        );
    }
    let _ = writeln!(out, "## xdp-bench\n");
    for line in &r.xdp_bench {
        let _ = writeln!(out, "{line}  ");
    }
    out.push('\n');
    for note in &r.notes {
        let _ = writeln!(out, "- {note}");
    }
    out
}

/// Ratios that got worse than `baseline`'s by more than `tolerance`
/// (0.25 = 25 %), one line each; rows missing on either side are skipped.
pub fn regressions(current: &Results, baseline: &Results, tolerance: f64) -> Vec<String> {
    let mut out = Vec::new();
    for m in &current.measurements {
        let Some(now) = m.ratio else { continue };
        let Some(then) = baseline
            .measurements
            .iter()
            .find(|b| b.section == m.section && b.name == m.name)
            .and_then(|b| b.ratio)
        else {
            continue;
        };
        if now > then * (1.0 + tolerance) {
            out.push(format!(
                "{} / {}: {now:.2}x, was {then:.2}x (+{:.0}%)",
                m.section,
                m.name,
                (now / then - 1.0) * 100.0
            ));
        }
    }
    out
}

pub fn write_json(r: &Results, path: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(r)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

pub fn read_json(path: &Path) -> Result<Results> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// A horizontal bar chart of every measurement with a ratio: how many
/// no-op XDP programs each path costs. A black line marks 1x.
pub fn draw_chart(r: &Results, path: &Path) -> Result<()> {
    use plotters::prelude::*;
    let rows: Vec<(&str, f64)> = r
        .measurements
        .iter()
        .filter_map(|m| Some((m.name.as_str(), m.ratio?)))
        .collect();
    let max = rows.iter().map(|(_, x)| *x).fold(1.0, f64::max) * 1.1;
    let n = rows.len();
    let height = 80 + 18 * n as u32;
    let root = BitMapBackend::new(path, (1100, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "lb: cost per packet / no-op XDP baseline (log scale)",
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(420)
        .build_cartesian_2d((0.5f64..max).log_scale(), -0.5f64..n as f64 - 0.5)?;
    // Row i is drawn at y = n - 1 - i: the first measurement on top, each
    // bar centred on its label.
    let y_of = |i: usize| (n - 1 - i) as f64;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&|y| {
            let i = n as f64 - 1.0 - y.round();
            rows.get(i as usize)
                .map_or(String::new(), |(name, _)| name.to_string())
        })
        .y_label_style(("sans-serif", 12))
        .x_desc("ratio (green <= 1.5x, blue <= 5x, red above)")
        .draw()?;
    chart.draw_series(rows.iter().enumerate().map(|(i, (_, x))| {
        let color = if *x <= 1.5 {
            GREEN
        } else if *x <= 5.0 {
            BLUE
        } else {
            RED
        };
        Rectangle::new(
            [(0.5, y_of(i) - 0.35), (*x, y_of(i) + 0.35)],
            color.mix(0.6).filled(),
        )
    }))?;
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(1.0, -0.5), (1.0, n as f64 - 0.5)],
        BLACK.stroke_width(1),
    )))?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results(ratio: f64) -> Results {
        let mut r = Results::default();
        r.push("hits", "DR", ratio * 10.0, Some(("XDP_TX", 10.0)));
        r.push("hits", "baseline", 10.0, None);
        r
    }

    #[test]
    fn a_ratio_25_percent_worse_is_a_regression() {
        assert!(regressions(&results(1.2), &results(1.0), 0.25).is_empty());
        let bad = regressions(&results(1.3), &results(1.0), 0.25);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].starts_with("hits / DR: 1.30x, was 1.00x"), "{bad:?}");
    }

    #[test]
    fn markdown_has_a_table_per_section_and_json_round_trips() {
        let r = results(2.0);
        let md = markdown(&r);
        assert!(md.contains("## hits\n"), "{md}");
        // 20 ns per packet: 50 Mpps on one core.
        assert!(md.contains("| DR | 20.0 | 50.00 | 2.00x XDP_TX |"), "{md}");
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Results>(&text).unwrap(), r);
    }
}
