//! `cargo xtask fuzz --seconds N`: each cargo-fuzz target (fuzz/) for N
//! seconds, starting from the seed corpus in fuzz/corpus/<target> (read
//! only; what the fuzzer finds goes to target/fuzz/corpus/<target>, crashes
//! to target/fuzz/artifacts/<target>/). Fails when a target finds a crash.

use std::{fs, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::workspace_root;

/// The targets, as named in fuzz/Cargo.toml.
pub const TARGETS: [&str; 4] = ["lb_toml", "keepalived_conf", "vrrp_advert", "sync_message"];
/// Seconds per target when `cargo xtask test` runs them.
pub const CI_SECONDS: u64 = 10;

pub fn run(seconds: u64) -> Result<()> {
    let root = workspace_root();
    for target in TARGETS {
        let corpus = root.join("target/fuzz/corpus").join(target);
        let artifacts = root.join("target/fuzz/artifacts").join(target);
        fs::create_dir_all(&corpus)?;
        fs::create_dir_all(&artifacts)?;
        println!("==> fuzz {target}: {seconds} s (first build takes a few minutes)");
        let status = Command::new("rustup")
            .args(["run", "nightly", "cargo", "fuzz", "run", target])
            .arg(&corpus)
            .arg(root.join("fuzz/corpus").join(target))
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            // Parsers only: no BPF build under sanitizer flags.
            .env("LB_SKIP_EBPF", "1")
            .current_dir(&root)
            .status()
            .context("running cargo fuzz (installed by setup)")?;
        if !status.success() {
            bail!(
                "fuzz target {target} failed ({status}): the input is in {}",
                artifacts.display()
            );
        }
    }
    Ok(())
}
