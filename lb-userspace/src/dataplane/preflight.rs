//! Checks before touching the kernel, each with an error that says what to do.

use std::path::Path;

use anyhow::{Result, bail};
use nix::sys::statfs::{BPF_FS_MAGIC, statfs};

/// Capability numbers (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// Root, or the capabilities loading and attaching XDP needs.
pub fn check_privileges() -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| cap_eff & (1u64 << cap) != 0;
    if (has(CAP_BPF) || has(CAP_SYS_ADMIN)) && has(CAP_NET_ADMIN) {
        return Ok(());
    }
    bail!(
        "not root and no CAP_BPF + CAP_NET_ADMIN: loading XDP programs needs them — run with sudo"
    )
}

/// The BPF filesystem is mounted where the pins go.
pub fn check_bpffs(pin_dir: &Path) -> Result<()> {
    let parent = pin_dir.parent().unwrap_or(Path::new("/"));
    match statfs(parent) {
        Ok(fs) if fs.filesystem_type() == BPF_FS_MAGIC => Ok(()),
        _ => bail!(
            "{} is not a BPF filesystem (bpffs): mount it with `mount -t bpf bpf {}`",
            parent.display(),
            parent.display()
        ),
    }
}
