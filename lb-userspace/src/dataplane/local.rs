//! The socket-level programs for the balancer's own clients (lb-ebpf's
//! local.rs and local_conns.rs): attached to the root of the cgroup v2
//! hierarchy so every process's connect(), sendto(), getpeername(),
//! recvfrom() (IPv4 and IPv6), TCP state changes and socket release pass
//! them; they act
//! only in the agent's network namespace (its cookie is in lb_globals) and
//! on the sockets they balanced. Shared with other programs there
//! (bpf_links, held as FdLinks: dropping one detaches it). `--keep-dataplane`
//! pins them next to the maps; the next agent attaches its own, then
//! lets the pinned ones go.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf,
    programs::{
        CgroupAttachMode, Program, ProgramError,
        links::{FdLink, PinnedLink},
    },
};
use tracing::{info, warn};

use super::Dataplane;

/// The programs, as named in the object: the sock_ops and release ones
/// first, so no balanced socket is ever left unfollowed.
pub const LOCAL_PROGRAMS: [&str; 10] = [
    "local_sock_ops",
    "local_release",
    "local_connect4",
    "local_sendmsg4",
    "local_getpeername4",
    "local_recvmsg4",
    "local_connect6",
    "local_sendmsg6",
    "local_getpeername6",
    "local_recvmsg6",
];

/// Pinned links of the socket-level programs are named this + the program.
pub const LOCAL_LINK_PIN_PREFIX: &str = "local_";

/// Where cgroup v2 is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified
/// on hybrid hosts), from the mount table.
pub fn cgroup2_root(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_, dir, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(dir))
    })
}

/// A load that found the program loaded already (attached before) is fine.
fn loaded(result: Result<(), ProgramError>) -> Result<(), ProgramError> {
    match result {
        Err(ProgramError::AlreadyLoaded) => Ok(()),
        other => other,
    }
}

/// Loads `name` and attaches it to `cgroup` as a bpf_link we hold.
fn attach_one(ebpf: &mut Ebpf, name: &str, cgroup: &fs::File) -> Result<FdLink> {
    // A bpf_link (what aya makes on Linux 5.7+) always joins the cgroup's
    // other programs; its flags must be 0 (Single).
    let mode = CgroupAttachMode::Single;
    let program = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the object"))?;
    let link = match program {
        Program::CgroupSockAddr(p) => {
            loaded(p.load())?;
            let id = p.attach(cgroup, mode)?;
            FdLink::try_from(p.take_link(id)?)
        }
        Program::SockOps(p) => {
            loaded(p.load())?;
            let id = p.attach(cgroup, mode)?;
            FdLink::try_from(p.take_link(id)?)
        }
        Program::CgroupSock(p) => {
            loaded(p.load())?;
            let id = p.attach(cgroup, mode)?;
            FdLink::try_from(p.take_link(id)?)
        }
        _ => bail!("program {name} is not a socket-level program"),
    };
    link.map_err(|_| anyhow!("{name}: attached without bpf_link (Linux 5.7+ needed)"))
}

impl Dataplane {
    /// Loads and attaches the socket-level programs, all or none; returns
    /// the cgroup. Adopting, the previous agent's pinned ones go once ours
    /// are in (meanwhile both run: the second sees a real server's address,
    /// no VIP, and leaves it).
    pub fn attach_local(&mut self) -> Result<PathBuf> {
        let mounts = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
        let root = cgroup2_root(&mounts)
            .ok_or_else(|| anyhow!("no cgroup v2 hierarchy is mounted (see /proc/mounts)"))?;
        let cgroup =
            fs::File::open(&root).with_context(|| format!("opening {}", root.display()))?;
        let mut links = Vec::with_capacity(LOCAL_PROGRAMS.len());
        for name in LOCAL_PROGRAMS {
            // On an error the links made so far drop: detached.
            let link = attach_one(&mut self.ebpf, name, &cgroup)
                .with_context(|| format!("attaching {name} to {}", root.display()))?;
            links.push((name, link));
        }
        self.local_links = links;
        if let Some(dir) = self.pin_dir() {
            release_pinned_local_links(&dir);
        }
        info!(
            "local clients balanced: socket programs attached to {}",
            root.display()
        );
        self.local_cgroup = Some(root.clone());
        Ok(root)
    }

    /// Detaches the socket-level programs (they stay loaded).
    pub fn detach_local(&mut self) {
        self.local_links.clear();
        self.local_cgroup = None;
    }

    /// The cgroup the socket-level programs are attached to, if they are.
    pub fn local_cgroup(&self) -> Option<&Path> {
        self.local_cgroup.as_deref()
    }

    /// `--keep-dataplane`: pins the socket-level links next to the maps.
    pub(super) fn pin_local_links(&mut self, dir: &Path) -> Result<()> {
        for (name, link) in std::mem::take(&mut self.local_links) {
            let path = dir.join(format!("{LOCAL_LINK_PIN_PREFIX}{name}"));
            link.pin(&path)
                .with_context(|| format!("pinning the {name} link at {}", path.display()))?;
        }
        Ok(())
    }
}

/// Detaches the socket-level programs a previous agent left pinned in `dir`.
fn release_pinned_local_links(dir: &Path) {
    for name in LOCAL_PROGRAMS {
        let path = dir.join(format!("{LOCAL_LINK_PIN_PREFIX}{name}"));
        if !path.exists() {
            continue;
        }
        let unpinned = PinnedLink::from_pin(&path)
            .map_err(anyhow::Error::from)
            .and_then(|p| Ok(p.unpin()?));
        match unpinned {
            // Dropped: the last reference, so it detaches.
            Ok(link) => drop(link),
            Err(e) => warn!(
                "could not release the previous agent's {name} link ({}): {e:#}",
                path.display()
            ),
        }
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
