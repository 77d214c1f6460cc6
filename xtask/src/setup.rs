//! `cargo xtask setup`: everything a fresh machine of this kind lacks, each
//! step idempotent (checks first, installs only what is missing) and named
//! in its error when it cannot succeed.

use std::{fs, path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

/// Debian packages: bpf-linker links against LLVM 22 (+ Polly); bpftool and
/// xdp-tools for inspection; iproute2/ethtool/util-linux/procps for the
/// namespace topologies; nginx and curl are the seed's web servers and client;
/// keepalived is the VRRP peer of the interop tests; tshark (Wireshark's
/// dissectors) checks our IPVS sync messages; bird2 is the BGP speaker the
/// agent runs for scale-out (and the router of its tests); fontconfig, freetype,
/// pkg-config and a font for the benchmark's chart (plotters' ttf text); gcc
/// builds the bench's LD_PRELOAD shim that lets Debian's xdp-bench run here.
const DEBIAN_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "bpftool",
    "xdp-tools",
    "iproute2",
    "ethtool",
    "util-linux",
    "procps",
    "iputils-ping",
    "nginx",
    "curl",
    "keepalived",
    "tshark",
    "bird2",
    "pkg-config",
    "libfontconfig-dev",
    "libfreetype-dev",
    "fonts-dejavu-core",
    "gcc",
];
pub const NIGHTLY: &str = "nightly";
/// What the BPF build (rust-src) and the data plane's lint run (clippy) need.
const NIGHTLY_COMPONENTS: [&str; 2] = ["rust-src", "clippy"];
const BPF_LINKER_LLVM_FEATURE: &str = "llvm-22";
const LLVM_BIN_DIR: &str = "/usr/lib/llvm-22/bin";
const BPFFS_DIR: &str = "/sys/fs/bpf";
/// Keeps package post-install scripts from starting services (nginx would
/// otherwise listen on the host's port 80).
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

struct Step(&'static str);

impl Step {
    fn start(name: &'static str) -> Self {
        println!("==> setup: {name}");
        Self(name)
    }
    fn ok(&self, what: &str) {
        println!("    {}: {what}", self.0);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn run_ok(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn run_checked(step: &Step, cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("setup step '{}': cannot run {cmd:?}", step.0))?;
    if !status.success() {
        bail!(
            "setup step '{}': {cmd:?} failed ({status}); without network access to the package registries this step cannot succeed",
            step.0
        );
    }
    Ok(())
}

pub fn run() -> Result<()> {
    debian_packages()?;
    nightly_rust_src()?;
    bpf_linker()?;
    bpffs()?;
    println!("==> setup: done");
    Ok(())
}

fn package_installed(name: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", name])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout) == "install ok installed")
        .unwrap_or(false)
}

fn debian_packages() -> Result<()> {
    let step = Step::start("Debian packages");
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| !package_installed(p))
        .collect();
    if missing.is_empty() {
        step.ok("all present");
        return Ok(());
    }
    if !is_root() {
        bail!(
            "setup step 'Debian packages': {} missing and not root: run `sudo cargo xtask setup`",
            missing.join(" ")
        );
    }
    step.ok(&format!("installing {}", missing.join(" ")));
    let own_policy = !Path::new(POLICY_RC_D).exists();
    if own_policy {
        fs::write(POLICY_RC_D, "#!/bin/sh\nexit 101\n")
            .and_then(|_| {
                use std::os::unix::fs::PermissionsExt as _;
                fs::set_permissions(POLICY_RC_D, fs::Permissions::from_mode(0o755))
            })
            .context("setup step 'Debian packages': writing policy-rc.d")?;
    }
    let result = (|| {
        run_checked(&step, Command::new("apt-get").args(["update", "-q"]))?;
        run_checked(
            &step,
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    })();
    if own_policy {
        let _ = fs::remove_file(POLICY_RC_D);
    }
    result
}

fn nightly_rust_src() -> Result<()> {
    let step = Step::start("nightly toolchain with rust-src and clippy");
    let has_nightly = run_ok(Command::new("rustup").args(["run", NIGHTLY, "rustc", "--version"]));
    if !has_nightly {
        step.ok("installing the nightly toolchain");
        // Never let rustup replace itself under us.
        run_checked(
            &step,
            Command::new("rustup").args(["set", "auto-self-update", "disable"]),
        )?;
        run_checked(
            &step,
            Command::new("rustup").args(["toolchain", "install", NIGHTLY, "--profile", "minimal"]),
        )?;
    }
    // rust-src: build-std for the BPF target; clippy: the data plane's lints.
    let installed = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", NIGHTLY])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let missing: Vec<&str> = NIGHTLY_COMPONENTS
        .into_iter()
        .filter(|c| !installed.lines().any(|l| l.starts_with(c)))
        .collect();
    if missing.is_empty() {
        step.ok("present");
        return Ok(());
    }
    step.ok(&format!("adding {}", missing.join(", ")));
    let mut args = vec!["component", "add"];
    args.extend(&missing);
    args.extend(["--toolchain", NIGHTLY]);
    run_checked(&step, Command::new("rustup").args(args))
}

fn bpf_linker() -> Result<()> {
    let step = Step::start("bpf-linker");
    if run_ok(Command::new("bpf-linker").arg("--version")) {
        step.ok("present");
        return Ok(());
    }
    step.ok("cargo install bpf-linker (about 90 s)");
    let path = format!(
        "{LLVM_BIN_DIR}:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    run_checked(
        &step,
        Command::new(cargo)
            .args([
                "install",
                "--locked",
                "bpf-linker",
                "--no-default-features",
                "--features",
                BPF_LINKER_LLVM_FEATURE,
            ])
            .env("PATH", path),
    )?;
    if !run_ok(Command::new("bpf-linker").arg("--version")) {
        bail!("setup step 'bpf-linker': installed but not on PATH: add ~/.cargo/bin to PATH");
    }
    Ok(())
}

fn bpffs() -> Result<()> {
    let step = Step::start("BPF filesystem");
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    if mounts.lines().any(|l| {
        l.split_whitespace().nth(1) == Some(BPFFS_DIR) && l.split_whitespace().nth(2) == Some("bpf")
    }) {
        step.ok(&format!("mounted on {BPFFS_DIR}"));
        return Ok(());
    }
    if !is_root() {
        bail!(
            "setup step 'BPF filesystem': {BPFFS_DIR} is not mounted and not root: run `sudo mount -t bpf bpf {BPFFS_DIR}`"
        );
    }
    step.ok(&format!("mounting on {BPFFS_DIR}"));
    run_checked(
        &step,
        Command::new("mount").args(["-t", "bpf", "bpf", BPFFS_DIR]),
    )
}

/// cargo-fuzz (libFuzzer driver) for `cargo xtask fuzz`; runs on nightly.
pub fn cargo_fuzz() -> Result<()> {
    let step = Step::start("cargo-fuzz");
    if run_ok(Command::new("cargo-fuzz").arg("--version")) {
        step.ok("present");
        return Ok(());
    }
    step.ok("cargo install cargo-fuzz (about a minute)");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    run_checked(
        &step,
        Command::new(cargo).args(["install", "--locked", "cargo-fuzz"]),
    )?;
    if !run_ok(Command::new("cargo-fuzz").arg("--version")) {
        bail!("setup step 'cargo-fuzz': installed but not on PATH: add ~/.cargo/bin to PATH");
    }
    Ok(())
}
