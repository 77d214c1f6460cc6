//! Thin wrappers over ip(8), nsenter(1) and friends for building test
//! topologies in network namespaces. Every command is bounded in time by
//! the tool itself (no loops here); errors carry the command and its stderr.

use std::process::{Command, Output};

use anyhow::{Context as _, Result, bail};

/// Runs a command, failing with its stderr when it exits non-zero.
pub fn run(program: &str, args: &[&str]) -> Result<Output> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program} (is it installed? `cargo xtask setup`)"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// `ip ARGS` in the root namespace (with -n NS to act inside one).
pub fn ip(args: &[&str]) -> Result<Output> {
    run("ip", args)
}

/// A new namespace `ns` holding a veth pair `a` <-> `b`, both up. On error
/// the namespace may exist: the caller deletes it (destroy_namespace).
pub fn create_with_veth(ns: &str, a: &str, b: &str) -> Result<()> {
    ip(&["netns", "add", ns])?;
    ip(&[
        "-n", ns, "link", "add", a, "type", "veth", "peer", "name", b,
    ])?;
    for dev in [a, b] {
        ip(&["-n", ns, "link", "set", dev, "up"])?;
    }
    Ok(())
}

/// Runs `args` inside namespace `ns` with `ip netns exec` (own /sys view).
pub fn exec_in(ns: &str, args: &[&str]) -> Result<Output> {
    let mut full = vec!["netns", "exec", ns];
    full.extend_from_slice(args);
    run("ip", &full)
}

/// Moves the calling thread into network namespace `ns` (for sockets a
/// test opens from inside a host of the topology; run it on a thread of
/// its own: the thread stays there).
pub fn enter(ns: &str) -> Result<()> {
    let path = format!("/var/run/netns/{ns}");
    let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering {ns}"))
}

/// The nsenter arguments that enter `ns`'s network namespace only, keeping
/// the host's /sys (and so its bpffs), unlike `ip netns exec`.
pub fn nsenter_net(ns: &str) -> String {
    format!("--net=/var/run/netns/{ns}")
}

/// Namespaces whose names start with `prefix`.
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// Kills every process in `ns` and deletes it. Best effort, idempotent.
pub fn destroy_namespace(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
    let _ = Command::new("ip").args(["netns", "del", ns]).status();
}
