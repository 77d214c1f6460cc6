//! cargo xtask setup|build|test|demo|bench
//!
//! This crate must build on a fresh machine before anything else is there:
//! it depends on std, anyhow and clap only, and installs the rest (`setup`).

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
    /// setup, then measure ns/packet of the balancer next to no-op XDP programs.
    Bench {
        /// Fewer and shorter rounds.
        #[arg(long)]
        quick: bool,
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
            // The end-to-end tests run the real lb-userspace binary.
            cargo(&["build", "--bins"])?;
            cargo(&["test"])
        }
        Cmd::Demo => {
            setup::run()?;
            cargo(&["build", "--bins"])?;
            cargo(&["run", "--quiet", "-p", "lb-testbed", "--bin", "lb-demo"])
        }
        Cmd::Bench { quick } => {
            setup::run()?;
            let mut args = vec![
                "run",
                "--quiet",
                "--release",
                "-p",
                "lb-testbed",
                "--bin",
                "lb-bench",
            ];
            if quick {
                args.extend(["--", "--quick"]);
            }
            cargo(&args)
        }
    }
}
