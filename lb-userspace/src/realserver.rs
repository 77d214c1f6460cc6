//! `lb-userspace realserver start|stop`: the seed's rs.sh, plus LVS-TUN
//! decapsulation. `start` records every value it changes; `stop` restores
//! exactly those and is idempotent.
//!
//! dr: VIP/32 on lo; arp_ignore=1 and arp_announce=2 on lo and all, so the
//! server accepts VIP traffic but never answers ARP for the VIP.
//! tun: the same, rp_filter off (decapsulated packets carry the client's
//! source), and the `rs_decap` XDP program on --iface, pinned so it stays
//! after this command exits (it strips IPIP, and IPv6-in-IPv6 for IPv6
//! VIPs). An IPv6 VIP goes on lo as a /128 without sysctls: neighbour
//! discovery never answers for lo's addresses on another interface.

use std::{
    collections::BTreeMap,
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf,
    maps::HashMap as BpfHashMap,
    programs::{Xdp, XdpMode, links::FdLink, links::PinnedLink},
};
use lb_common::rs_decap_names;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::{dataplane::preflight, netlink::Netlink};

/// The rs_decap object (lb-ebpf's `lb-rs-decap` binary).
pub static RS_DECAP_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-rs-decap"));
const SYSCTL_ROOT: &str = "/proc/sys";
const STATE_DIR: &str = "/run/lb-userspace";
const BPFFS: &str = "/sys/fs/bpf";
/// rs.sh's values.
const ARP_IGNORE: &str = "1";
const ARP_ANNOUNCE: &str = "2";
const RP_FILTER_OFF: &str = "0";
const VIP_PREFIX: u8 = 32;
const VIP6_PREFIX: u8 = 128;
const LOOPBACK: &str = "lo";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Dr,
    Tun,
}

/// What `start` changed, saved for `stop`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedState {
    /// Text: files written before IPv6 read the same.
    pub vip: IpAddr,
    pub mode: Mode,
    pub iface: Option<String>,
    /// The VIP was not on lo before start.
    pub vip_added: bool,
    /// sysctl key (path under /proc/sys) -> value before start.
    pub sysctls: BTreeMap<String, String>,
    /// The network namespace's cookie (unique while the host runs, never
    /// reused, unlike the inode number in the file's name). None in files
    /// written before it was recorded.
    #[serde(default)]
    pub netns_cookie: Option<u64>,
}

/// Whose is a state file that `start` finds under this namespace's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leftover {
    /// This namespace started the VIP and has not stopped it.
    StartedHere,
    /// Written in a network namespace that is gone and whose inode number
    /// this one reuses: its cookie differs from ours.
    GoneNamespace,
    /// An older file without a cookie whose VIP is no longer on lo.
    Stale,
}

impl Leftover {
    /// Two live namespaces never share an inode number, and a cookie is
    /// never reused: a different cookie is proof the writer is gone.
    pub fn classify(saved_cookie: Option<u64>, our_cookie: Option<u64>, vip_on_lo: bool) -> Self {
        match (saved_cookie, our_cookie) {
            (Some(saved), Some(ours)) if saved == ours => Self::StartedHere,
            (Some(_), Some(_)) => Self::GoneNamespace,
            _ if vip_on_lo => Self::StartedHere,
            _ => Self::Stale,
        }
    }
}

/// The sysctls (path under /proc/sys, value) `start` sets for `mode`.
pub fn sysctls_for(mode: Mode, iface: Option<&str>) -> Vec<(String, &'static str)> {
    let mut v = vec![
        ("net/ipv4/conf/lo/arp_ignore".to_string(), ARP_IGNORE),
        ("net/ipv4/conf/lo/arp_announce".to_string(), ARP_ANNOUNCE),
        ("net/ipv4/conf/all/arp_ignore".to_string(), ARP_IGNORE),
        ("net/ipv4/conf/all/arp_announce".to_string(), ARP_ANNOUNCE),
    ];
    if mode == Mode::Tun {
        v.push(("net/ipv4/conf/all/rp_filter".to_string(), RP_FILTER_OFF));
        if let Some(i) = iface {
            v.push((format!("net/ipv4/conf/{i}/rp_filter"), RP_FILTER_OFF));
        }
    }
    v
}

/// Reads and writes sysctls under a root (/proc/sys, or a directory in tests).
pub struct Sysctls {
    root: PathBuf,
}

impl Sysctls {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn get(&self, key: &str) -> Result<String> {
        let path = self.root.join(key);
        Ok(fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .trim()
            .to_string())
    }

    pub fn set(&self, key: &str, value: &str) -> Result<()> {
        let path = self.root.join(key);
        fs::write(&path, value).with_context(|| format!("writing {value} to {}", path.display()))
    }

    /// Sets every (key, value), returning the previous values.
    pub fn apply(&self, wanted: &[(String, &str)]) -> Result<BTreeMap<String, String>> {
        let mut saved = BTreeMap::new();
        for (key, value) in wanted {
            let step = self.get(key).and_then(|old| {
                self.set(key, value)?;
                Ok(old)
            });
            match step {
                Ok(old) => {
                    saved.insert(key.clone(), old);
                }
                Err(e) => {
                    // Leave nothing half-done.
                    self.restore(&saved);
                    return Err(e);
                }
            }
        }
        Ok(saved)
    }

    /// Puts the saved values back (best effort: every key is tried).
    pub fn restore(&self, saved: &BTreeMap<String, String>) -> Vec<String> {
        let mut failed = Vec::new();
        for (key, value) in saved {
            if self.set(key, value).is_err() {
                failed.push(key.clone());
            }
        }
        failed
    }
}

/// This network namespace's identity, so state files and pins of real
/// servers in different namespaces on one host never collide.
fn netns_id() -> String {
    fs::read_link("/proc/self/ns/net")
        .ok()
        .and_then(|p| {
            p.to_string_lossy()
                .trim_start_matches("net:[")
                .trim_end_matches(']')
                .parse::<u64>()
                .ok()
        })
        .map_or_else(|| "0".to_string(), |n| n.to_string())
}

fn state_path(vip: IpAddr) -> PathBuf {
    Path::new(STATE_DIR).join(format!("realserver-{}-{vip}.toml", netns_id()))
}

fn decap_pin_dir(iface: &str) -> PathBuf {
    Path::new(BPFFS).join(format!("lb-rs-{}-{iface}", netns_id()))
}

pub async fn start(vip: IpAddr, mode: Mode, iface: Option<&str>) -> Result<()> {
    preflight::check_privileges()?;
    let state_file = state_path(vip);
    let nl = Netlink::connect()?;
    let link = match iface {
        Some(name) => Some(
            nl.link(name)
                .await?
                .ok_or_else(|| anyhow!("interface {name} not found (see `ip link`)"))?,
        ),
        None if mode == Mode::Tun => {
            bail!("--mode tun needs --iface: the interface the tunnelled packets arrive on")
        }
        None => None,
    };
    let lo = nl
        .link(LOOPBACK)
        .await?
        .ok_or_else(|| anyhow!("no loopback interface"))?;
    let cookie = crate::netlink::netns_cookie();
    if let Ok(text) = fs::read_to_string(&state_file) {
        let saved_cookie = toml::from_str::<SavedState>(&text)
            .ok()
            .and_then(|s| s.netns_cookie);
        let vip_on_lo = nl.addresses(lo.index).await?.contains(&vip);
        match Leftover::classify(saved_cookie, cookie, vip_on_lo) {
            Leftover::StartedHere => bail!(
                "realserver already started for {vip} ({}): run `lb-userspace realserver stop --vip {vip}` first",
                state_file.display()
            ),
            Leftover::GoneNamespace => warn!(
                "ignoring {}: left by a network namespace that is gone (this one reuses its inode number)",
                state_file.display()
            ),
            Leftover::Stale => warn!(
                "ignoring {}: left by an earlier start whose VIP {vip} is no longer on lo",
                state_file.display()
            ),
        }
        fs::remove_file(&state_file)
            .with_context(|| format!("removing {}", state_file.display()))?;
    }
    fs::create_dir_all(STATE_DIR).with_context(|| format!("creating {STATE_DIR}"))?;

    let sysctls = Sysctls::new(SYSCTL_ROOT);
    // IPv6 has no ARP: a VIP on lo is never answered for on another
    // interface (neighbour discovery answers for the receiving interface's
    // own addresses), so no sysctl is needed.
    let saved = if vip.is_ipv4() {
        sysctls.apply(&sysctls_for(mode, iface))?
    } else {
        BTreeMap::new()
    };
    let had_vip = nl.addresses(lo.index).await?.contains(&vip);
    let state = SavedState {
        vip,
        mode,
        iface: iface.map(str::to_string),
        vip_added: !had_vip,
        sysctls: saved,
        netns_cookie: cookie,
    };
    let undo = |state: &SavedState| {
        sysctls.restore(&state.sysctls);
    };
    let prefix = if vip.is_ipv4() {
        VIP_PREFIX
    } else {
        VIP6_PREFIX
    };
    if !had_vip && let Err(e) = nl.add_address(lo.index, vip, prefix).await {
        undo(&state);
        return Err(e);
    }
    if mode == Mode::Tun
        && let (Some(name), Some(link)) = (iface, link)
        && let Err(e) = attach_decap(name, link.index, vip)
    {
        if state.vip_added {
            let _ = nl.del_address(lo.index, vip).await;
        }
        undo(&state);
        return Err(e);
    }
    fs::write(&state_file, toml::to_string(&state)?)
        .with_context(|| format!("writing {}", state_file.display()))?;
    println!("RealServer Start OK ({vip}, {})", mode_name(mode));
    Ok(())
}

/// `mode` and `iface` are what the operator typed (the same flags as
/// start); what start recorded decides. Without a record, `--mode tun
/// --iface IF` still removes the VIP from rs_decap on IF (a leftover).
pub async fn stop(vip: IpAddr, mode: Option<Mode>, iface: Option<&str>) -> Result<()> {
    preflight::check_privileges()?;
    let state_file = state_path(vip);
    let Ok(text) = fs::read_to_string(&state_file) else {
        if mode == Some(Mode::Tun)
            && let Some(iface) = iface
        {
            detach_decap(iface, vip)?;
        }
        println!("RealServer {vip} not started: nothing to stop");
        return Ok(());
    };
    let state: SavedState =
        toml::from_str(&text).with_context(|| format!("reading {}", state_file.display()))?;
    if mode.is_some_and(|m| m != state.mode)
        || iface.is_some_and(|i| state.iface.as_deref() != Some(i))
    {
        warn!(
            "{vip} was started with --mode {}{}: stopping what start did",
            mode_name(state.mode),
            state
                .iface
                .as_deref()
                .map(|i| format!(" --iface {i}"))
                .unwrap_or_default()
        );
    }
    if state.mode == Mode::Tun
        && let Some(iface) = &state.iface
    {
        detach_decap(iface, vip)?;
    }
    let nl = Netlink::connect()?;
    if state.vip_added
        && let Some(lo) = nl.link(LOOPBACK).await?
    {
        nl.del_address(lo.index, vip).await?;
    }
    let failed = Sysctls::new(SYSCTL_ROOT).restore(&state.sysctls);
    if !failed.is_empty() {
        bail!("could not restore {}", failed.join(", "));
    }
    fs::remove_file(&state_file).with_context(|| format!("removing {}", state_file.display()))?;
    println!("RealServer Stopped ({vip})");
    Ok(())
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Dr => "dr",
        Mode::Tun => "tun",
    }
}

/// Whether the rs_decap link pinned in `dir` is attached to interface
/// `ifindex`. A pin left by a deleted namespace whose inode number this
/// one reuses, or by an interface deleted and created again, holds a
/// defunct link (attached nowhere): taking it for an attachment would
/// leave the interface without decapsulation.
fn decap_attached(dir: &Path, ifindex: u32) -> bool {
    crate::dataplane::bpf_sys::pinned_xdp_link_ifindex(&dir.join(rs_decap_names::LINK_PIN))
        .is_ok_and(|attached| attached == ifindex)
}

/// Loads rs_decap on `iface` (once per interface) and adds `vip` to its map.
fn attach_decap(iface: &str, ifindex: u32, vip: IpAddr) -> Result<()> {
    preflight::check_bpffs(&decap_pin_dir(iface))?;
    let dir = decap_pin_dir(iface);
    // VIPs started here (state files with our cookie) whose decapsulation
    // a defunct pin held: they go into the new maps too.
    let mut carried = Vec::new();
    if dir.exists() && !decap_attached(&dir, ifindex) {
        warn!(
            "{}: a defunct rs_decap pin (its interface or namespace is gone); replacing it",
            dir.display()
        );
        if let Ok(old) = DecapVips::open(&dir) {
            carried = old
                .all()
                .into_iter()
                .filter(|old_vip| *old_vip != vip && tun_started_here(*old_vip, iface))
                .collect();
        }
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    if !dir.join(rs_decap_names::RS_VIPS_PIN).exists() {
        let mut ebpf = Ebpf::load(RS_DECAP_OBJECT).context("loading rs_decap")?;
        let prog: &mut Xdp = ebpf
            .program_mut(rs_decap_names::PROGRAM)
            .ok_or_else(|| anyhow!("no rs_decap program"))?
            .try_into()?;
        prog.load().context("loading rs_decap (verifier)")?;
        let id = prog
            .attach(iface, XdpMode::Driver)
            .or_else(|_| prog.attach(iface, XdpMode::Skb))
            .with_context(|| format!("attaching rs_decap to {iface}"))?;
        let link = FdLink::try_from(prog.take_link(id)?).context("rs_decap link")?;
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        link.pin(dir.join(rs_decap_names::LINK_PIN))
            .context("pinning the rs_decap link")?;
        for (map, pin) in [
            (rs_decap_names::RS_VIPS, rs_decap_names::RS_VIPS_PIN),
            (rs_decap_names::RS_VIPS6, rs_decap_names::RS_VIPS6_PIN),
        ] {
            ebpf.map(map)
                .ok_or_else(|| anyhow!("no {map} map"))?
                .pin(dir.join(pin))
                .with_context(|| format!("pinning {map}"))?;
        }
        info!("rs_decap attached to {iface}");
    }
    let mut vips = DecapVips::open(&dir)?;
    for vip in carried.into_iter().chain([vip]) {
        vips.insert(vip)?;
    }
    Ok(())
}

/// rs_decap's VIP maps (IPv4 and IPv6), from their pins.
struct DecapVips {
    v4: BpfHashMap<aya::maps::MapData, lb_common::Ipv4Octets, u8>,
    /// None: pinned by a version before IPv6 decapsulation.
    v6: Option<BpfHashMap<aya::maps::MapData, lb_common::Ipv6Octets, u8>>,
}

impl DecapVips {
    fn open(dir: &Path) -> Result<Self> {
        let v6_pin = dir.join(rs_decap_names::RS_VIPS6_PIN);
        Ok(Self {
            v4: open_pinned_map(&dir.join(rs_decap_names::RS_VIPS_PIN))?,
            v6: if v6_pin.exists() {
                Some(open_pinned_map(&v6_pin)?)
            } else {
                None
            },
        })
    }

    fn insert(&mut self, vip: IpAddr) -> Result<()> {
        match vip {
            IpAddr::V4(v4) => self.v4.insert(v4.octets(), 1, 0)?,
            IpAddr::V6(v6) => self
                .v6
                .as_mut()
                .ok_or_else(|| {
                    anyhow!(
                        "the rs_decap attached here predates IPv6: stop this interface's tun VIPs \
                         (`realserver stop`) and start them again"
                    )
                })?
                .insert(v6.octets(), 1, 0)?,
        }
        Ok(())
    }

    fn remove(&mut self, vip: IpAddr) {
        let _ = match vip {
            IpAddr::V4(v4) => self.v4.remove(&v4.octets()),
            IpAddr::V6(v6) => match self.v6.as_mut() {
                Some(map) => map.remove(&v6.octets()),
                None => Ok(()),
            },
        };
    }

    fn all(&self) -> Vec<IpAddr> {
        let v4 = self.v4.keys().filter_map(Result::ok).map(IpAddr::from);
        let v6 = self
            .v6
            .iter()
            .flat_map(|map| map.keys().filter_map(Result::ok).map(IpAddr::from));
        v4.chain(v6).collect()
    }
}

/// A pinned map of rs_decap's.
fn open_pinned_map<K: aya::Pod>(map_pin: &Path) -> Result<BpfHashMap<aya::maps::MapData, K, u8>> {
    let data = aya::maps::MapData::from_pin(map_pin)
        .with_context(|| format!("opening {}", map_pin.display()))?;
    Ok(BpfHashMap::try_from(aya::maps::Map::from_map_data(data)?)?)
}

/// `vip` was started here (this namespace's cookie) in tun mode on `iface`.
fn tun_started_here(vip: IpAddr, iface: &str) -> bool {
    fs::read_to_string(state_path(vip))
        .ok()
        .and_then(|text| toml::from_str::<SavedState>(&text).ok())
        .is_some_and(|state| {
            state.mode == Mode::Tun
                && state.iface.as_deref() == Some(iface)
                && state.netns_cookie.is_some()
                && state.netns_cookie == crate::netlink::netns_cookie()
        })
}

/// Removes `vip` from rs_decap's maps; detaches it when no VIP is left.
fn detach_decap(iface: &str, vip: IpAddr) -> Result<()> {
    let dir = decap_pin_dir(iface);
    if !dir.join(rs_decap_names::RS_VIPS_PIN).exists() {
        return Ok(());
    }
    let mut vips = DecapVips::open(&dir)?;
    vips.remove(vip);
    if vips.all().is_empty() {
        let link_pin = dir.join(rs_decap_names::LINK_PIN);
        if link_pin.exists() {
            // Unpinning drops the last reference: the program detaches.
            PinnedLink::from_pin(&link_pin)?.unpin()?;
        }
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        info!("rs_decap detached from {iface}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn fake_proc(values: &[(&str, &str)]) -> (PathBuf, Sysctls) {
        let root =
            std::env::temp_dir().join(format!("lb-sysctl-{}-{}", std::process::id(), values.len()));
        let _ = fs::remove_dir_all(&root);
        for (k, v) in values {
            let p = root.join(k);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, format!("{v}\n")).unwrap();
        }
        (root.clone(), Sysctls::new(root))
    }

    #[test]
    fn dr_sets_what_rs_sh_sets() {
        let keys: Vec<String> = sysctls_for(Mode::Dr, None)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(
            keys,
            [
                "net/ipv4/conf/lo/arp_ignore=1",
                "net/ipv4/conf/lo/arp_announce=2",
                "net/ipv4/conf/all/arp_ignore=1",
                "net/ipv4/conf/all/arp_announce=2"
            ]
        );
        let tun = sysctls_for(Mode::Tun, Some("eth0"));
        assert!(tun.contains(&("net/ipv4/conf/eth0/rp_filter".to_string(), "0")));
    }

    #[test]
    fn stop_restores_exactly_the_previous_values() {
        let before = [
            ("net/ipv4/conf/lo/arp_ignore", "0"),
            ("net/ipv4/conf/lo/arp_announce", "0"),
            ("net/ipv4/conf/all/arp_ignore", "2"),
            ("net/ipv4/conf/all/arp_announce", "1"),
        ];
        let (root, s) = fake_proc(&before);
        let saved = s.apply(&sysctls_for(Mode::Dr, None)).unwrap();
        assert_eq!(s.get("net/ipv4/conf/all/arp_ignore").unwrap(), "1");
        assert_eq!(s.get("net/ipv4/conf/all/arp_announce").unwrap(), "2");
        assert!(s.restore(&saved).is_empty());
        for (k, v) in before {
            assert_eq!(s.get(k).unwrap(), v, "{k}");
        }
        let _ = fs::remove_dir_all(root);
    }

    #[test]
    fn a_failing_key_undoes_the_ones_already_set() {
        // all/arp_announce is missing: apply fails, lo/* are put back.
        let (root, s) = fake_proc(&[
            ("net/ipv4/conf/lo/arp_ignore", "0"),
            ("net/ipv4/conf/lo/arp_announce", "0"),
            ("net/ipv4/conf/all/arp_ignore", "0"),
        ]);
        assert!(s.apply(&sysctls_for(Mode::Dr, None)).is_err());
        assert_eq!(s.get("net/ipv4/conf/lo/arp_ignore").unwrap(), "0");
        assert_eq!(s.get("net/ipv4/conf/all/arp_ignore").unwrap(), "0");
        let _ = fs::remove_dir_all(root);
    }

    #[test]
    fn saved_state_round_trips_through_toml() {
        let state = SavedState {
            vip: Ipv4Addr::new(172, 16, 122, 100).into(),
            mode: Mode::Tun,
            iface: Some("eth0".into()),
            vip_added: true,
            sysctls: BTreeMap::from([("net/ipv4/conf/lo/arp_ignore".to_string(), "0".to_string())]),
            netns_cookie: Some(4097),
        };
        let text = toml::to_string(&state).unwrap();
        assert_eq!(toml::from_str::<SavedState>(&text).unwrap(), state);
    }

    #[test]
    fn a_state_file_is_ours_only_when_the_cookies_agree() {
        use Leftover::*;
        // Same cookie: this namespace started it, even if the VIP was taken off lo.
        assert_eq!(Leftover::classify(Some(9), Some(9), false), StartedHere);
        assert_eq!(Leftover::classify(Some(9), Some(9), true), StartedHere);
        // Another cookie under our inode number: its namespace is gone.
        assert_eq!(Leftover::classify(Some(9), Some(10), true), GoneNamespace);
        assert_eq!(Leftover::classify(Some(9), Some(10), false), GoneNamespace);
        // Files without a cookie: the VIP on lo is all there is to go by.
        assert_eq!(Leftover::classify(None, Some(10), true), StartedHere);
        assert_eq!(Leftover::classify(None, Some(10), false), Stale);
    }

    #[test]
    fn a_file_without_a_cookie_still_reads() {
        let text = "vip = \"172.16.122.100\"\nmode = \"dr\"\nvip_added = true\n[sysctls]\n";
        let state: SavedState = toml::from_str(text).unwrap();
        assert_eq!(state.netns_cookie, None);
    }
}
