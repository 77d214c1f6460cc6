//! cargo xtask setup|build|test|demo|bench|package|fuzz|soak
//!
//! This crate must build on a fresh machine before anything else is there:
//! it depends on std, anyhow and clap only, and installs the rest (`setup`).

mod fuzz;
mod package;
mod setup;

use std::process::Command;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Build, test, demo and bench lb")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install every package and tool the project needs (idempotent).
    Setup,
    /// setup, then build everything (release).
    Build,
    /// setup, then formatting, clippy, and every test (unit, BPF_PROG_TEST_RUN,
    /// end-to-end in network namespaces). Needs root.
    Test,
    /// setup, build, then replay the seed's walk-through in network namespaces.
    Demo,
    /// setup, build, then the two-balancer topology under load with faults
    /// injected on a schedule for N minutes (the test runs one round).
    Soak {
        #[arg(long, default_value_t = 10)]
        minutes: u64,
    },
    /// setup, then each fuzz target (lb.toml, keepalived.conf, VRRP
    /// adverts) for a while, from the seed corpus in fuzz/corpus.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// setup, then a Debian package of the agent (target/package/*.deb):
    /// binary, systemd unit, /etc/lb/lb.toml, man page.
    Package {
        /// Also install it with dpkg -i into a scratch root and check it.
        #[arg(long)]
        verify: bool,
    },
    /// setup, then measure ns/packet of the balancer next to no-op XDP programs;
    /// writes target/bench/{report.md,results.json,chart.png}.
    Bench {
        /// Fewer and shorter rounds.
        #[arg(long)]
        quick: bool,
        /// Fail when a ratio is more than 25% worse than bench/baseline.json.
        #[arg(long)]
        check: bool,
        /// Write this run's results to bench/baseline.json (to commit).
        #[arg(long)]
        update_baseline: bool,
    },
}

/// Runs `cargo ARGS` from the workspace root, failing on a non-zero exit.
/// Never pass --workspace: that would build lb-ebpf for the host; the
/// default members exclude it (lb-userspace's build.rs builds it for BPF).
pub fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    println!("==> cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("running {cargo}"))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// `cargo test`, echoing its output, then one closing line with the totals
/// of every test binary ("N passed, N failed"): cargo's own last line is
/// that of whichever binary ran last, often a doc-test run with no tests.
fn cargo_test() -> Result<()> {
    use std::io::{BufRead as _, BufReader};
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    println!("==> cargo test");
    let mut child = Command::new(&cargo)
        .arg("test")
        .current_dir(workspace_root())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cargo}"))?;
    let (mut passed, mut failed) = (0u64, 0u64);
    let stdout = child.stdout.take().context("cargo test stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            passed += count_before(rest, " passed");
            failed += count_before(rest, " failed");
        }
    }
    let status = child.wait()?;
    println!("tests: {passed} passed, {failed} failed");
    if !status.success() {
        bail!("`cargo test` failed ({status})");
    }
    Ok(())
}

/// The number just before `label` in "ok. 3 passed; 0 failed; ...".
fn count_before(text: &str, label: &str) -> u64 {
    text.split(';')
        .find_map(|part| {
            part.trim()
                .trim_start_matches("ok. ")
                .trim_start_matches("FAILED. ")
                .strip_suffix(label.trim_start())
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// clippy over the data plane (lb-ebpf, not a default member): nightly,
/// for the BPF target, its own target directory so the host build's cache
/// stays warm. Among its lints: every unsafe block says why it is sound.
fn clippy_ebpf() -> Result<()> {
    let target_dir = workspace_root().join("target").join("ebpf-clippy");
    let target_dir = target_dir.to_str().context("non-UTF-8 target directory")?;
    println!("==> cargo clippy (lb-ebpf, bpfel-unknown-none)");
    let status = Command::new("rustup")
        .args([
            "run",
            setup::NIGHTLY,
            "cargo",
            "clippy",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--lib",
            "--bins",
            "--target-dir",
            target_dir,
            "--",
            "-D",
            "warnings",
        ])
        .current_dir(workspace_root().join("lb-ebpf"))
        .status()
        .context("running cargo clippy for lb-ebpf")?;
    if !status.success() {
        bail!("clippy found problems in lb-ebpf ({status})");
    }
    Ok(())
}

fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Setup => setup::run(),
        Cmd::Build => {
            setup::run()?;
            cargo(&["build", "--release"])
        }
        Cmd::Test => {
            setup::run()?;
            cargo(&["fmt", "--all", "--check"])?;
            cargo(&["clippy", "--all-targets", "--", "-D", "warnings"])?;
            clippy_ebpf()?;
            // The end-to-end tests run the real lb-userspace binary.
            cargo(&["build", "--bins"])?;
            cargo_test()?;
            // The package: built, installed with dpkg -i (scratch root), checked.
            package::verify(&package::build()?)?;
            // Each parser of untrusted input, fuzzed briefly.
            setup::cargo_fuzz()?;
            fuzz::run(fuzz::CI_SECONDS)
        }
        Cmd::Soak { minutes } => {
            setup::run()?;
            cargo(&["build", "--bins"])?;
            let minutes = minutes.to_string();
            cargo(&[
                "run",
                "--quiet",
                "-p",
                "lb-testbed",
                "--bin",
                "lb-soak",
                "--",
                "--minutes",
                &minutes,
            ])
        }
        Cmd::Fuzz { seconds } => {
            setup::run()?;
            setup::cargo_fuzz()?;
            fuzz::run(seconds)
        }
        Cmd::Package { verify } => {
            setup::run()?;
            let deb = package::build()?;
            if verify {
                package::verify(&deb)?;
            }
            Ok(())
        }
        Cmd::Demo => {
            setup::run()?;
            cargo(&["build", "--bins"])?;
            cargo(&["run", "--quiet", "-p", "lb-testbed", "--bin", "lb-demo"])
        }
        Cmd::Bench {
            quick,
            check,
            update_baseline,
        } => {
            setup::run()?;
            // The agent whose memory the bench measures with 1M flows.
            cargo(&[
                "build",
                "--release",
                "-p",
                "lb-userspace",
                "--bin",
                "lb-userspace",
            ])?;
            let mut args = vec![
                "run",
                "--quiet",
                "--release",
                "-p",
                "lb-testbed",
                "--bin",
                "lb-bench",
            ];
            args.push("--");
            for (on, flag) in [
                (quick, "--quick"),
                (check, "--check"),
                (update_baseline, "--update-baseline"),
            ] {
                if on {
                    args.push(flag);
                }
            }
            cargo(&args)
        }
    }
}
