//! The agent's data plane: load the XDP program, pin its maps, attach it,
//! and write service / real-server entries (the only writer of its maps;
//! apply.rs holds the order of a service's change). Outside the agent the
//! pins are read through stats::snapshot::open_pinned; realserver.rs owns
//! the rs_decap program of a real server, a separate object.

mod apply;
pub mod bpf_sys;
mod inspect;
mod least_trees;
mod local;
pub mod preflight;
mod sweep;
mod synced;
#[cfg(feature = "testing")]
mod testing;
mod writer;

pub use apply::AppliedService;
pub use inspect::sum_counters;
pub use synced::LiveEntry;
pub use writer::{ConnTimeouts, TunnelSources};

use std::{
    collections::HashMap as StdHashMap,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader, Pod,
    maps::{Array, HashMap, MapData},
    programs::{
        ProgramError, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
};
use lb_common::{
    BackendSet, FLOW_TABLE_DEFAULT_SIZE, LbGlobals, RealServer, ServiceInfo, ServiceKey, map_names,
};
use std::os::fd::AsFd as _;
use tracing::{info, warn};

/// The balancer object (lb-ebpf's `lb` binary), built by build.rs.
pub static LB_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb"));
/// xdp-bench's no-op programs (lb-ebpf's `lb-baselines` binary).
pub static BASELINES_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-baselines"));
/// The XDP entry point in LB_OBJECT.
pub const PROGRAM_NAME: &str = "lb";
/// The IPv6 program, reached from `lb` by tail call (family_programs).
pub const IPV6_PROGRAM_NAME: &str = "lb6";
/// The programs reached by tail call, each in its program array's slot,
/// in install order: lb6 last, so that what it hands frames to is in place
/// before the first frame reaches it.
const TAIL_CALLED: [(&str, &str, u32); 4] = [
    // lb6's TUN (IPv6-in-IPv6).
    (
        "lb6_tun",
        map_names::FORWARD6_PROGRAMS,
        lb_common::FORWARD6_PROGRAM_TUN,
    ),
    // NAT66, both directions.
    (
        "lb6_nat",
        map_names::NAT6_PROGRAMS,
        lb_common::NAT6_PROGRAM_FORWARD,
    ),
    (
        "lb6_nat_reply",
        map_names::NAT6_PROGRAMS,
        lb_common::NAT6_PROGRAM_REPLY,
    ),
    (
        IPV6_PROGRAM_NAME,
        map_names::FAMILY_PROGRAMS,
        lb_common::FAMILY_PROGRAM_IPV6,
    ),
];
/// Where the running agent pins its maps (lb-toml.md).
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/lb";
/// Pinned XDP links (hitless restart) are named this + the interface.
pub const LINK_PIN_PREFIX: &str = "link_";
/// Mode of the pin directory: owner only.
pub const PIN_DIR_MODE: u32 = 0o700;
/// aya-log's level knob inside the object (aya_log_ebpf::macro_support).
const AYA_LOG_LEVEL_GLOBAL: &str = "AYA_LOG_LEVEL";

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Data-plane log statements above this level are removed by the verifier.
    pub log_level: log::LevelFilter,
    /// Entries of the flow table.
    pub flow_table_size: u32,
    /// Hitless restart: use the maps a previous agent left pinned in this
    /// directory (flows, counters, everything) instead of new ones.
    pub adopt_pins: Option<PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            log_level: log::LevelFilter::Info,
            flow_table_size: FLOW_TABLE_DEFAULT_SIZE,
            adopt_pins: None,
        }
    }
}

/// A pinned map directory that removes itself when dropped, so no exit path
/// (error, signal) leaves pins behind.
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.0) {
            warn!(
                "could not remove the pin directory {}: {e}",
                self.0.display()
            );
        }
    }
}

/// The maps the agent writes, owned (taken out of the Ebpf object).
struct WritableMaps {
    services: HashMap<MapData, ServiceKey, ServiceInfo>,
    services6: HashMap<MapData, lb_common::ServiceKey6, ServiceInfo>,
    real_addrs6: Array<MapData, lb_common::Ipv6Octets>,
    backend_sets: Array<MapData, BackendSet>,
    reals: Array<MapData, RealServer>,
    globals: Array<MapData, LbGlobals>,
    globals6: Array<MapData, lb_common::LbGlobals6>,
    sched_state: Array<MapData, lb_common::SchedState>,
    lookup_tables: HashMap<MapData, u32, lb_common::LookupTable>,
    weight_tables: HashMap<MapData, u32, lb_common::WeightTable>,
    service_filter: Array<MapData, lb_common::ServiceFilter>,
    real_leaves: Array<MapData, lb_common::least::RealLeaf>,
}

/// The loaded (verified) balancer with its maps.
pub struct Dataplane {
    ebpf: Ebpf,
    maps: Option<WritableMaps>,
    /// service id -> backend-set slot in use.
    active_slots: StdHashMap<u32, u32>,
    /// service id -> its key's bit in service_filter, and the filter as
    /// last written (writer.rs).
    filter_bits: StdHashMap<u32, u32>,
    filter_written: lb_common::ServiceFilter,
    /// (interface, link) of each attachment.
    links: Vec<(String, XdpLinkId)>,
    /// The maps are a previous agent's (hitless restart).
    adopted: bool,
    /// Their directory, until the adoption is complete.
    adopting_dir: Option<PathBuf>,
    /// The per-server connection counters, shared with the data plane.
    conns: bpf_sys::SharedConns,
    /// service_hits' words (writer.rs); the map is the new program's own,
    /// as service_filter.
    service_hits: bpf_sys::SharedServiceHits,
    /// The lc / wlc / sed trees (least_trees.rs); the maps are the new
    /// program's own, as service_filter.
    least_trees: least_trees::LeastTrees,
    /// Connections the flow table holds.
    flow_capacity: u32,
    /// Flows left after the last expiry sweep.
    flows_at_sweep: u64,
    /// The socket-level programs' links (local.rs), and their cgroup.
    local_links: Vec<(&'static str, FdLink)>,
    local_cgroup: Option<PathBuf>,
    // Declared last: dropped after the maps and the link.
    pins: Option<PinDir>,
    lock: Option<crate::runtime_files::AgentLock>,
}

impl Dataplane {
    /// Loads the object and the `lb` program into the kernel (the verifier
    /// runs here). Nothing is attached or pinned yet.
    pub fn load(opts: &LoadOptions) -> Result<Self> {
        if LB_OBJECT.is_empty() {
            bail!(
                "this binary was built without its XDP programs (LB_SKIP_EBPF, for fuzzing): rebuild without it"
            );
        }
        let level = aya_log_level(opts.log_level);
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(map_names::FLOW_TABLE, opts.flow_table_size)
            .override_global(AYA_LOG_LEVEL_GLOBAL, &level, true);
        if let Some(dir) = &opts.adopt_pins {
            for (object_name, pin_name) in map_names::PINNED {
                loader.map_pin_path(object_name, dir.join(pin_name));
            }
        }
        let mut ebpf = loader
            .load(LB_OBJECT)
            .context("loading the lb BPF object (maps) into the kernel")?;
        if opts.adopt_pins.is_some() {
            let pinned = map_data(&ebpf, map_names::FLOW_TABLE)?
                .info()
                .context("reading the pinned flow table")?
                .max_entries();
            if pinned != opts.flow_table_size {
                bail!(
                    "the running data plane's flow table holds {pinned} connections: restart with \
                     --flow-table-size {pinned} to keep its connections (or stop it without \
                     --keep-dataplane first)"
                );
            }
        }
        program_of(&mut ebpf)?
            .load()
            .context("loading the lb XDP program (verifier)")?;
        install_ipv6_program(&mut ebpf)?;
        let conns = bpf_sys::SharedConns::map(map_data(&ebpf, map_names::REAL_CONNS)?.fd().as_fd())
            .context("mapping the real_conns counters")?;
        let service_hits =
            bpf_sys::SharedServiceHits::map(map_data(&ebpf, map_names::SERVICE_HITS)?.fd().as_fd())
                .context("mapping service_hits")?;
        let least_trees =
            bpf_sys::SharedTrees::map(map_data(&ebpf, map_names::LEAST_TREES)?.fd().as_fd())
                .context("mapping least_trees")?;
        // The backend-set slots in use: a write goes to the other one.
        let active_slots = if opts.adopt_pins.is_some() {
            let services: HashMap<&MapData, ServiceKey, ServiceInfo> = HashMap::try_from(
                ebpf.map(map_names::SERVICES)
                    .ok_or_else(|| anyhow!("no services map"))?,
            )?;
            services
                .iter()
                .filter_map(|item| item.ok())
                .map(|(_, info)| (info.service_id, info.backend_set))
                .collect()
        } else {
            StdHashMap::new()
        };
        Ok(Self {
            ebpf,
            maps: None,
            active_slots,
            // The filter map is the new program's own (not pinned): empty
            // until the services are written, all of them on adoption.
            filter_bits: StdHashMap::new(),
            filter_written: lb_common::ServiceFilter::default(),
            adopted: opts.adopt_pins.is_some(),
            adopting_dir: None,
            links: Vec::new(),
            conns,
            service_hits,
            least_trees: least_trees::LeastTrees::new(least_trees),
            flow_capacity: opts.flow_table_size,
            flows_at_sweep: 0,
            local_links: Vec::new(),
            local_cgroup: None,
            pins: None,
            lock: None,
        })
    }

    /// Starts forwarding aya-log records of the program to `log`/tracing.
    /// Must be called from within a tokio runtime.
    pub fn start_logger(&mut self) {
        match aya_log::EbpfLogger::init(&mut self.ebpf) {
            Err(e) => warn!("data-plane logs are not available: {e}"),
            Ok(logger) => {
                // SAFETY: the logger owns its ring-buffer fd and lives inside
                // the AsyncFd until the task ends, so the fd stays valid while
                // registered.
                let logger = unsafe {
                    tokio::io::unix::AsyncFd::register_with_interest(
                        logger,
                        tokio::io::Interest::READABLE,
                    )
                };
                match logger {
                    Err(e) => warn!("data-plane logs are not available: {e}"),
                    Ok(mut logger) => {
                        tokio::spawn(async move {
                            loop {
                                let Ok(mut guard) = logger.readable_mut().await else {
                                    return;
                                };
                                guard.get_inner_mut().flush();
                                guard.clear_ready();
                            }
                        });
                    }
                }
            }
        }
    }

    /// Pins every map under `dir`, so `list` and bpftool can read them. The
    /// directory is removed when self is dropped. A lock file tells a
    /// running agent (refused) from pins a killed one left (removed).
    pub fn pin_maps(&mut self, dir: &Path) -> Result<()> {
        self.lock = Some(crate::runtime_files::AgentLock::acquire(dir)?);
        if self.adopted {
            // The loader opened the pinned maps; they stay where they are,
            // and nobody removes them until the adoption is complete: a
            // failed start leaves the previous program forwarding.
            self.adopting_dir = Some(dir.to_path_buf());
            return Ok(());
        }
        if dir.exists() {
            warn!(
                "removing {}: left by an agent that did not stop cleanly",
                dir.display()
            );
            fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        // 0700: the maps steer traffic; only root may open them.
        std::os::unix::fs::DirBuilderExt::mode(&mut fs::DirBuilder::new(), PIN_DIR_MODE)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        self.pins = Some(PinDir(dir.to_path_buf()));
        for (object_name, pin_name) in map_names::PINNED {
            let map = self
                .ebpf
                .map(object_name)
                .ok_or_else(|| anyhow!("map {object_name} missing from the object"))?;
            map.pin(dir.join(pin_name))
                .with_context(|| format!("pinning map {object_name} in {}", dir.display()))?;
        }
        Ok(())
    }

    /// Attaches the program to `iface`. Errors say what to do.
    pub fn attach(&mut self, iface: &str, mode: XdpMode) -> Result<()> {
        let program = program_of(&mut self.ebpf)?;
        let link = program
            .attach(iface, mode)
            .map_err(|e| attach_error(iface, mode, e))?;
        self.links.push((iface.to_string(), link));
        info!("XDP program attached to {iface} ({})", mode_name(mode));
        Ok(())
    }

    /// Hitless restart: takes over the link a previous agent left pinned on
    /// `iface` and swaps this program in atomically (bpf_link_update): no
    /// packet meets no program.
    pub fn adopt_link(&mut self, iface: &str) -> Result<()> {
        let path = self.link_pin(iface)?;
        let pinned = PinnedLink::from_pin(&path)
            .with_context(|| format!("opening the pinned XDP link {}", path.display()))?;
        let fd_link = pinned
            .unpin()
            .with_context(|| format!("unpinning {}", path.display()))?;
        let link = XdpLink::try_from(fd_link).context("the pinned link is not an XDP link")?;
        let id = program_of(&mut self.ebpf)?
            .attach_to_link(link)
            .with_context(|| format!("replacing the program on {iface} (bpf_link_update)"))?;
        self.links.push((iface.to_string(), id));
        info!("XDP program on {iface} replaced in place (hitless restart)");
        Ok(())
    }

    /// Whether this data plane adopted a previous agent's maps.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// Where the maps are pinned (ours, or the ones being adopted).
    fn pin_dir(&self) -> Option<PathBuf> {
        self.pins
            .as_ref()
            .map(|p| p.0.clone())
            .or_else(|| self.adopting_dir.clone())
    }

    fn link_pin(&self, iface: &str) -> Result<PathBuf> {
        let dir = self.pin_dir().ok_or_else(|| anyhow!("maps not pinned"))?;
        Ok(dir.join(format!("{LINK_PIN_PREFIX}{iface}")))
    }

    /// Every link adopted: from now on the pins are this agent's (removed
    /// at a plain stop, as always).
    pub fn adoption_complete(&mut self) {
        if let Some(dir) = self.adopting_dir.take() {
            self.pins = Some(PinDir(dir));
        }
    }

    /// `--keep-dataplane` at exit: pins each XDP link next to the maps and
    /// leaves the maps pinned, so the program keeps forwarding with the
    /// last state until the next agent adopts it. Needs bpf_link (Linux
    /// 5.9+; netlink attachments cannot be handed over).
    pub fn keep_running_after_exit(&mut self) -> Result<()> {
        for (iface, id) in std::mem::take(&mut self.links) {
            let path = self.link_pin(&iface)?;
            let link = program_of(&mut self.ebpf)?.take_link(id)?;
            let fd_link = FdLink::try_from(link).map_err(|_| {
                anyhow!(
                    "{iface}: attached through netlink, not bpf_link: cannot be kept after exit"
                )
            })?;
            fd_link
                .pin(&path)
                .with_context(|| format!("pinning the XDP link at {}", path.display()))?;
        }
        if let Some(dir) = self.pin_dir() {
            self.pin_local_links(&dir)?;
        }
        // Keep the pins: the directory is the next agent's to adopt.
        if let Some(pins) = self.pins.take() {
            std::mem::forget(pins);
        }
        Ok(())
    }

    /// A hash map still in the object, for writing.
    fn hash_map_mut<K: Pod, V: Pod>(&mut self, name: &str) -> Result<HashMap<&mut MapData, K, V>> {
        Ok(HashMap::try_from(self.ebpf.map_mut(name).ok_or_else(
            || anyhow!("map {name} missing from the object"),
        )?)?)
    }

    /// The ring buffer the program reports connections into while
    /// GLOBAL_FLAG_SYNC is set (taken out of the object: one reader).
    pub fn take_sync_events(&mut self) -> Result<aya::maps::RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map(map_names::SYNC_EVENTS)
            .ok_or_else(|| anyhow!("map {} missing from the object", map_names::SYNC_EVENTS))?;
        Ok(aya::maps::RingBuf::try_from(map)?)
    }

    /// Detaches the program from every interface (the pins stay until drop).
    pub fn detach(&mut self) -> Result<()> {
        for (_, link) in std::mem::take(&mut self.links) {
            program_of(&mut self.ebpf)?.detach(link)?;
        }
        Ok(())
    }

    fn maps(&mut self) -> Result<&mut WritableMaps> {
        if self.maps.is_none() {
            let mut take = |name: &str| {
                self.ebpf
                    .take_map(name)
                    .ok_or_else(|| anyhow!("map {name} missing from the object"))
            };
            self.maps = Some(WritableMaps {
                services: HashMap::try_from(take(map_names::SERVICES)?)?,
                services6: HashMap::try_from(take(map_names::SERVICES6)?)?,
                real_addrs6: Array::try_from(take(map_names::REAL_ADDRS6)?)?,
                backend_sets: Array::try_from(take(map_names::BACKEND_SETS)?)?,
                reals: Array::try_from(take(map_names::REALS)?)?,
                globals: Array::try_from(take(map_names::LB_GLOBALS)?)?,
                globals6: Array::try_from(take(map_names::LB_GLOBALS6)?)?,
                sched_state: Array::try_from(take(map_names::SCHED_STATE)?)?,
                lookup_tables: HashMap::try_from(take(map_names::LOOKUP_TABLES)?)?,
                weight_tables: HashMap::try_from(take(map_names::WEIGHT_TABLES)?)?,
                service_filter: Array::try_from(take(map_names::SERVICE_FILTER)?)?,
                real_leaves: Array::try_from(take(map_names::REAL_LEAVES)?)?,
            });
        }
        self.maps
            .as_mut()
            .ok_or_else(|| anyhow!("maps not available"))
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock the data plane stamps entries with
/// (at tick resolution there, so its stamps lag this by at most a tick).
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// The map object `name` of the loaded program (maps not taken out).
fn map_data<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a MapData> {
    use aya::maps::Map;
    match ebpf.map(name) {
        Some(
            Map::Array(data)
            | Map::HashMap(data)
            | Map::LruHashMap(data)
            | Map::PerCpuArray(data)
            | Map::DevMapHash(data),
        ) => Ok(data),
        Some(_) => Err(anyhow!("map {name} has an unexpected type")),
        None => Err(anyhow!("map {name} missing from the object")),
    }
}

/// Loads the tail-called programs (TAIL_CALLED) and puts each in its
/// slot. Before any attach: a frame never finds a slot half-written.
fn install_ipv6_program(ebpf: &mut Ebpf) -> Result<()> {
    for (name, map, slot) in TAIL_CALLED {
        install_tail_call(ebpf, name, map, slot)?;
    }
    Ok(())
}

/// Loads program `name` and puts it in slot `slot` of program array `map`.
fn install_tail_call(ebpf: &mut Ebpf, name: &str, map: &str, slot: u32) -> Result<()> {
    let program: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the object"))?
        .try_into()?;
    program
        .load()
        .with_context(|| format!("loading the {name} XDP program (verifier)"))?;
    let fd = program
        .fd()
        .with_context(|| format!("the {name} program's fd"))?
        .try_clone()
        .with_context(|| format!("duplicating the {name} program's fd"))?;
    let map_data = ebpf.map_mut(map).ok_or_else(|| anyhow!("no {map} map"))?;
    let mut slots: aya::maps::ProgramArray<&mut MapData> =
        aya::maps::ProgramArray::try_from(map_data)?;
    slots
        .set(slot, &fd, 0)
        .with_context(|| format!("installing {name} in {map}"))
}

fn program_of(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    Ok(ebpf
        .program_mut(PROGRAM_NAME)
        .ok_or_else(|| anyhow!("program {PROGRAM_NAME} missing from the object"))?
        .try_into()?)
}

/// aya-log's numeric levels: Error=1 .. Trace=5; 0 disables.
fn aya_log_level(level: log::LevelFilter) -> u8 {
    match level {
        log::LevelFilter::Off => 0,
        log::LevelFilter::Error => 1,
        log::LevelFilter::Warn => 2,
        log::LevelFilter::Info => 3,
        log::LevelFilter::Debug => 4,
        log::LevelFilter::Trace => 5,
    }
}

pub fn mode_name(mode: XdpMode) -> &'static str {
    match mode {
        XdpMode::Skb => "skb",
        XdpMode::Driver => "native",
        XdpMode::Hardware => "offload",
        _ => "default",
    }
}

fn attach_error(iface: &str, mode: XdpMode, e: ProgramError) -> anyhow::Error {
    let errno = match &e {
        ProgramError::SyscallError(s) => s.io_error.raw_os_error(),
        _ => None,
    };
    let hint = match errno {
        Some(libc_errno::EOPNOTSUPP) | Some(libc_errno::EINVAL) if mode != XdpMode::Skb => {
            " — the driver refuses native XDP: try --xdp-mode skb"
        }
        Some(libc_errno::EBUSY) | Some(libc_errno::EEXIST) => {
            " — another XDP program is attached (see `ip link show`): detach it first"
        }
        Some(libc_errno::EPERM) => " — permission denied: run as root",
        _ => "",
    };
    anyhow!(e).context(format!(
        "attaching XDP to {iface} in {} mode failed{hint}",
        mode_name(mode)
    ))
}

/// The few errno values attach errors are matched on.
mod libc_errno {
    pub const EPERM: i32 = nix::errno::Errno::EPERM as i32;
    pub const EINVAL: i32 = nix::errno::Errno::EINVAL as i32;
    pub const EBUSY: i32 = nix::errno::Errno::EBUSY as i32;
    pub const EEXIST: i32 = nix::errno::Errno::EEXIST as i32;
    pub const EOPNOTSUPP: i32 = nix::errno::Errno::EOPNOTSUPP as i32;
}
