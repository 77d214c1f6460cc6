//! The socket-level programs for the balancer's own clients (lb-ebpf's
//! local.rs): attached to the root of the cgroup v2 hierarchy so every
//! process's connect(), sendto(), getpeername() and recvfrom() passes
//! them; they act only in the agent's network namespace (its cookie is in
//! lb_globals). Shared with other programs there (bpf_links); detached
//! when the agent stops.

use std::{fs, path::PathBuf};

use anyhow::{Context as _, Result, anyhow};
use aya::programs::{CgroupAttachMode, CgroupSockAddr};
use tracing::info;

use super::Dataplane;

/// The programs, as named in the object.
pub const LOCAL_PROGRAMS: [&str; 4] = [
    "local_connect4",
    "local_sendmsg4",
    "local_getpeername4",
    "local_recvmsg4",
];

/// Where cgroup v2 is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified
/// on hybrid hosts), from the mount table.
pub fn cgroup2_root(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_, dir, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(dir))
    })
}

impl Dataplane {
    /// Loads and attaches the socket-level programs; returns the cgroup.
    pub fn attach_local(&mut self) -> Result<PathBuf> {
        let mounts = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
        let root = cgroup2_root(&mounts)
            .ok_or_else(|| anyhow!("no cgroup v2 hierarchy is mounted (see /proc/mounts)"))?;
        let cgroup =
            fs::File::open(&root).with_context(|| format!("opening {}", root.display()))?;
        for name in LOCAL_PROGRAMS {
            let program: &mut CgroupSockAddr = self
                .ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing from the object"))?
                .try_into()?;
            program
                .load()
                .with_context(|| format!("loading {name} (verifier)"))?;
            // A bpf_link (what aya makes on Linux 5.7+) always joins the
            // cgroup's other programs; its flags must be 0 (Single).
            program
                .attach(&cgroup, CgroupAttachMode::Single)
                .with_context(|| format!("attaching {name} to {}", root.display()))?;
        }
        info!(
            "local clients balanced: socket programs attached to {}",
            root.display()
        );
        Ok(root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup2_mount_is_found_on_plain_and_hybrid_hosts() {
        let hybrid = "sysfs /sys sysfs rw 0 0\n\
                      tmpfs /sys/fs/cgroup tmpfs ro 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nsdelegate 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n";
        assert_eq!(
            cgroup2_root(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let plain = "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n";
        assert_eq!(cgroup2_root(plain), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(cgroup2_root("proc /proc proc rw 0 0\n"), None);
    }
}
