//! Least privilege: once the program is loaded and attached and the maps
//! are pinned, the agent keeps only the capabilities it still uses.
//!
//! Kept: CAP_NET_ADMIN (VIPs on and off the interface, neighbour probes,
//! detaching at shutdown) and CAP_NET_RAW (VRRP and gratuitous-ARP sockets,
//! which a reload may open); CAP_BPF only where the kernel refuses bpf() on
//! maps the agent already has open without it (older kernels with
//! kernel.unprivileged_bpf_disabled), found out by a probe in a scratch
//! thread. With [bgp], CAP_NET_BIND_SERVICE too: the BIRD the agent runs
//! (a root process: it gets the bounding set) binds BGP's port 179.
//! Everything else goes from the permitted, effective, inheritable
//! and ambient sets, and from the bounding set when the agent may change it,
//! so no script it runs (MISC_CHECK, notify) gets it back.
//!
//! Capabilities belong to threads: the agent runs on one runtime thread,
//! and any thread started later lowers itself first (`on_thread_start`).

use std::sync::OnceLock;

use anyhow::{Context as _, Result};
use caps::{CapSet, Capability, CapsHashSet};
use tracing::info;

/// What the running agent needs on every kernel (see the module comment).
const ALWAYS_KEPT: [Capability; 2] = [Capability::CAP_NET_ADMIN, Capability::CAP_NET_RAW];

/// The set threads are lowered to, once dropped.
static LOWERED_TO: OnceLock<CapsHashSet> = OnceLock::new();

/// Lowers the calling thread to `keep` (what it has of it).
fn lower_this_thread(keep: &CapsHashSet) -> Result<()> {
    let permitted = caps::read(None, CapSet::Permitted).context("reading capabilities")?;
    // The bounding set first: that needs CAP_SETPCAP, which a systemd
    // unit's bounding set may already lack (then it is already small).
    if permitted.contains(&Capability::CAP_SETPCAP) {
        for cap in caps::read(None, CapSet::Bounding)
            .context("reading the bounding set")?
            .difference(keep)
        {
            caps::drop(None, CapSet::Bounding, *cap)
                .with_context(|| format!("dropping {cap} from the bounding set"))?;
        }
    }
    caps::clear(None, CapSet::Ambient).context("clearing the ambient set")?;
    let remaining: CapsHashSet = permitted.intersection(keep).copied().collect();
    for set in [CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
        caps::set(None, set, &remaining)
            .with_context(|| format!("lowering the {set:?} capabilities"))?;
    }
    Ok(())
}

/// For tokio's on_thread_start: a thread started after the drop starts low.
pub fn on_thread_start() {
    if let Some(keep) = LOWERED_TO.get()
        && let Err(e) = lower_this_thread(keep)
    {
        tracing::error!("lowering a new thread's capabilities failed: {e:#}");
    }
}

/// Drops every capability the agent no longer needs. `bpf_works` tries a
/// bpf() call on an open map; it runs in a scratch thread without CAP_BPF
/// (and CAP_SYS_ADMIN) to learn whether this kernel allows that. Returns
/// the names kept. `for_children`: capabilities a supervised child needs
/// when it is started again (BIRD binds BGP's port 179), kept in the
/// bounding set so the child gets them (they stay in ours too).
pub fn drop_unneeded(
    for_children: &[Capability],
    bpf_works: impl FnOnce() -> bool + Send,
) -> Result<Vec<String>> {
    let mut keep: CapsHashSet = ALWAYS_KEPT
        .into_iter()
        .chain(for_children.iter().copied())
        .collect();
    let without_bpf_ok = std::thread::scope(|s| {
        s.spawn(|| lower_this_thread(&keep).is_ok() && bpf_works())
            .join()
            .unwrap_or(false)
    });
    if !without_bpf_ok {
        keep.insert(Capability::CAP_BPF);
    }
    lower_this_thread(&keep)?;
    let _ = LOWERED_TO.set(keep.clone());
    let mut names: Vec<String> = keep.iter().map(|c| c.to_string()).collect();
    names.sort();
    info!("capabilities dropped; kept {}", names.join(" "));
    Ok(names)
}
