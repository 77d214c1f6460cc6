//! The bench's targets and whether a run met them: each is a limit on the
//! ratio of one or more report rows (the worst row decides), with where it
//! was set, so the report says met / missed instead of leaving it to the
//! reader.

use crate::bench_report::Results;

/// How a target bounds its rows' ratios to their baselines.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// Cost at most this many times the baseline's.
    AtMostTimes(f64),
    /// Packet rate at least this share (0..1) of the baseline's: the ratio
    /// of costs at most its inverse.
    AtLeastShare(f64),
}

/// Which report rows a target bounds.
#[derive(Debug, Clone, Copy)]
pub enum Rows {
    /// Rows by name.
    Named(&'static [&'static str]),
    /// These schedulers' new-flow rows with 256 backends.
    NewFlow256(&'static [&'static str]),
}

impl Rows {
    pub fn names(&self) -> Vec<String> {
        match self {
            Rows::Named(rows) => rows.iter().map(|r| r.to_string()).collect(),
            Rows::NewFlow256(schedulers) => schedulers
                .iter()
                .map(|s| format!("{s} new flow, 256 backends"))
                .collect(),
        }
    }
}

/// One target of the bench.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// What it bounds, as the report line says it.
    pub what: &'static str,
    /// The report rows it bounds; the worst one decides.
    pub rows: Rows,
    pub limit: Limit,
    /// Where it was set.
    pub source: &'static str,
}

/// The least-connection family and its relatives, which scanned the set
/// before issue #20.
const SCANNING_SCHEDULERS: &[&str] = &["lc", "wlc", "sed", "nq", "fo", "ovf", "twos"];

/// Every scheduler.
const EVERY_SCHEDULER: &[&str] = &[
    "rr", "wrr", "lc", "wlc", "sed", "nq", "fo", "ovf", "twos", "dh", "sh", "mh", "lblc", "lblcr",
];

const DR_HIT: Rows = Rows::Named(&["lb: DR, flow-table hit"]);
const NOT_A_SERVICE: Rows = Rows::Named(&["lb: not a service (XDP_PASS)"]);
const TUN_HIT_FRESH: Rows = Rows::Named(&["lb: TUN hit (IPIP)"]);

/// Katran's IPIP hit with a fresh frame each run, measured on this machine
/// kind next to ours (issue #20).
const KATRAN_TUN_HIT_FRESH: f64 = 3.3;

pub const TARGETS: &[Target] = &[
    Target {
        what: "DR flow-table hit",
        rows: DR_HIT,
        limit: Limit::AtMostTimes(1.5),
        source: "reference.md, issue #7",
    },
    Target {
        what: "DR flow-table hit",
        rows: DR_HIT,
        limit: Limit::AtMostTimes(2.5),
        source: "issue #20",
    },
    Target {
        what: "not a service",
        rows: NOT_A_SERVICE,
        limit: Limit::AtMostTimes(1.3),
        source: "reference.md",
    },
    Target {
        what: "not a service",
        rows: NOT_A_SERVICE,
        limit: Limit::AtMostTimes(1.5),
        source: "issue #20",
    },
    Target {
        what: "TUN hit, a fresh frame each run",
        rows: TUN_HIT_FRESH,
        limit: Limit::AtMostTimes(2.5),
        source: "reference.md",
    },
    Target {
        what: "TUN hit, a fresh frame each run, Katran's IPIP ratio",
        rows: TUN_HIT_FRESH,
        limit: Limit::AtMostTimes(KATRAN_TUN_HIT_FRESH),
        source: "issue #20",
    },
    Target {
        what: "every scheduler's new flow, 256 backends",
        rows: Rows::NewFlow256(EVERY_SCHEDULER),
        limit: Limit::AtMostTimes(5.0),
        source: "issue #7",
    },
    Target {
        what: "lc, wlc, sed, nq, fo, ovf and twos new flow, 256 backends",
        rows: Rows::NewFlow256(SCANNING_SCHEDULERS),
        limit: Limit::AtMostTimes(20.0),
        source: "issue #20",
    },
    Target {
        what: "live DR forwarding, one flow, of the no-op's rate",
        rows: Rows::Named(&["lb: DR forward out of the veth"]),
        limit: Limit::AtLeastShare(0.7),
        source: "issue #7",
    },
    Target {
        what: "live DR hits over 1M established flows, of the no-op's rate",
        rows: Rows::Named(&["lb: DR hit, 1048576 established flows"]),
        limit: Limit::AtLeastShare(0.5),
        source: "issue #20",
    },
];

/// One line per target: met or missed with the deciding row's figure, or
/// not measured when none of its rows has a ratio in `results` (a quick
/// run, or a row renamed: either way the report shows it).
pub fn verdicts(results: &Results, targets: &[Target]) -> Vec<String> {
    targets
        .iter()
        .map(|t| {
            let names = t.rows.names();
            let worst = names
                .iter()
                .filter_map(|row| {
                    let m = results.measurements.iter().find(|m| m.name == *row)?;
                    Some((m, m.ratio?))
                })
                .max_by(|a, b| a.1.total_cmp(&b.1));
            let (bound, how) = match t.limit {
                Limit::AtMostTimes(x) => (x, format!("at most {x}x")),
                Limit::AtLeastShare(s) => (1.0 / s, format!("at least {:.0}%", s * 100.0)),
            };
            let head = format!("target ({}): {} {how}", t.source, t.what);
            let Some((m, ratio)) = worst else {
                return format!("{head}: not measured");
            };
            let verdict = if ratio <= bound { "met" } else { "missed" };
            let figure = match t.limit {
                Limit::AtMostTimes(_) => format!(
                    "{ratio:.2}x {}",
                    m.baseline.as_deref().unwrap_or("the baseline")
                ),
                Limit::AtLeastShare(_) => format!("{:.0}%", 100.0 / ratio),
            };
            if names.len() > 1 {
                format!("{head}: {verdict}, worst: {}, {figure}", m.name)
            } else {
                format!("{head}: {verdict}, {figure}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(a: f64, b: f64) -> Results {
        let mut r = Results::default();
        r.push("s", "a", a * 10.0, Some(("XDP_TX", 10.0)));
        r.push("s", "b", b * 10.0, Some(("XDP_TX", 10.0)));
        r
    }

    #[test]
    fn the_worst_row_decides_and_shares_invert_the_ratio() {
        let targets = [
            Target {
                what: "both",
                rows: Rows::Named(&["a", "b"]),
                limit: Limit::AtMostTimes(2.5),
                source: "t",
            },
            Target {
                what: "a's rate",
                rows: Rows::Named(&["a"]),
                limit: Limit::AtLeastShare(0.5),
                source: "t",
            },
            Target {
                what: "gone",
                rows: Rows::Named(&["c"]),
                limit: Limit::AtMostTimes(1.0),
                source: "t",
            },
        ];
        assert_eq!(
            verdicts(&run(2.0, 3.0), &targets),
            [
                "target (t): both at most 2.5x: missed, worst: b, 3.00x XDP_TX",
                "target (t): a's rate at least 50%: met, 50%",
                "target (t): gone at most 1x: not measured",
            ]
        );
        let met = verdicts(&run(2.0, 2.5), &targets);
        assert_eq!(
            met[0],
            "target (t): both at most 2.5x: met, worst: b, 2.50x XDP_TX"
        );
        assert_eq!(
            verdicts(&run(2.1, 1.0), &targets)[1],
            "target (t): a's rate at least 50%: missed, 48%"
        );
    }

    /// A target whose rows the bench no longer makes would say "not
    /// measured" forever: every row of every target is in the committed
    /// baseline (a full run).
    #[test]
    fn every_target_row_is_in_the_committed_baseline() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/baseline.json");
        let baseline = crate::bench_report::read_json(&path).unwrap();
        for t in TARGETS {
            for row in t.rows.names() {
                assert!(
                    baseline
                        .measurements
                        .iter()
                        .any(|m| m.name == row && m.ratio.is_some()),
                    "{row:?} ({}) is not a row of {}",
                    t.what,
                    path.display()
                );
            }
        }
    }
}
