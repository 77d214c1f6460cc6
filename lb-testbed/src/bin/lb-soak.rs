//! `cargo xtask soak --minutes N`: rounds of every fault (soak.rs) for N
//! minutes under a steady client load; prints the report and fails when a
//! request failed outside the windows keepalived's timings allow.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// How long to soak (at least one round of every fault).
    #[arg(long, default_value_t = 10)]
    minutes: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    eprintln!(
        "soaking for {} min: rounds of real server down, master killed, link down, reload",
        args.minutes
    );
    let prefix = format!("lbsk{}", std::process::id());
    // Namespaces go even on Ctrl-C.
    let cleanup = prefix.clone();
    ctrlc::set_handler(move || {
        lb_testbed::topology::destroy(&cleanup);
        std::process::exit(130);
    })?;
    let report = lb_testbed::soak::run(&prefix, Duration::from_secs(args.minutes * 60))?;
    print!("{}", report.render());
    if !report.unexplained.is_empty() {
        bail!(
            "{} requests failed outside the fault windows, at {:?}",
            report.unexplained.len(),
            report.unexplained
        );
    }
    Ok(())
}
