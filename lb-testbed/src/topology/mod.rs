//! The seed's network in namespaces: a bridge joining a client, the
//! balancer and two real servers, all addresses as in the seed. Nothing is
//! routed to the host: the namespaces only see each other.
//!
//! ```text
//!   {p}-client 172.16.122.50 ─┐
//!   {p}-lb     172.16.122.188 ┼─ br0 in {p}-sw
//!   {p}-rs1    172.16.122.193 ┤   (VIP 172.16.122.100 on lo, rs.sh)
//!   {p}-rs2    172.16.122.195 ┘
//! ```
//!
//! Dropping the Topology kills what it started and deletes the namespaces;
//! `destroy(prefix)` does the same for leftovers of a killed run.

mod agent;
mod clients;
pub mod ecmp;
mod nat;
mod servers;

use std::{
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{Ebpf, programs::Xdp};
use lb_userspace::dataplane::BASELINES_OBJECT;

use crate::netns::{self, destroy_namespace, exec_in, ip, namespaces_with_prefix, nsenter_net};

pub use crate::seed::{
    CLIENT_IP, CLIENT_IP6, LB_IP, LB_IP6, LB2_IP, LB2_IP6, RS1_IP, RS1_IP6, RS2_IP, RS2_IP6,
    SORRY_IP, SORRY_IP6, SUBNET_PREFIX, SUBNET6_PREFIX, VIP, VIP6,
};
/// The NAT client's subnet (one-armed: same wire, another subnet).
const NAT_OUTSIDE_LB: &str = "192.168.100.1/24";
const NAT_OUTSIDE_GATEWAY: &str = "192.168.100.1";
const NAT_OUTSIDE_CLIENT: &str = "192.168.100.50/24";
/// NAT66's outside subnet, beside NAT_OUTSIDE_*'s.
const NAT66_OUTSIDE_LB: &str = "2001:db8:100::1/64";
const NAT66_OUTSIDE_GATEWAY: &str = "2001:db8:100::1";
const NAT66_OUTSIDE_CLIENT: &str = "2001:db8:100::50/64";
/// Two-armed NAT: the outside network.
const OUTSIDE_BRIDGE: &str = "br1";
const OUTSIDE_IFACE: &str = "eth1";
const TWO_ARMED_LB: &str = "192.168.200.1/24";
const TWO_ARMED_GATEWAY: &str = "192.168.200.1";
const TWO_ARMED_CLIENT: &str = "192.168.200.50/24";
const TWO_ARMED_LB6: &str = "2001:db8:200::1/64";
/// The balancer's outside IPv6 address: the two-armed NAT66 VIP.
pub const TWO_ARMED_GATEWAY6: &str = "2001:db8:200::1";
const TWO_ARMED_CLIENT6: &str = "2001:db8:200::50/64";
/// Interface name inside every host namespace.
pub const HOST_IFACE: &str = "eth0";
/// How often assert_only_holder looks at who holds a VIP.
const VIP_SAMPLE_PERIOD: std::time::Duration = std::time::Duration::from_millis(200);
const BRIDGE: &str = "br0";
/// Bounds of the waits for servers and the agent.
const NGINX_START_TIMEOUT: Duration = Duration::from_secs(10);
const AGENT_START_TIMEOUT: Duration = Duration::from_secs(30);
const AGENT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(100);
/// Longest election in our configs: 3 x advert_int 1 s + skew, with slack.
const VRRP_MASTER_TIMEOUT: Duration = Duration::from_secs(10);
/// Capabilities the agent keeps after attaching (privileges.rs):
/// CAP_NET_ADMIN, CAP_NET_RAW, and CAP_BPF where the kernel needs it.
pub const AGENT_KEPT_CAPS: u64 = 1 << 12 | 1 << 13 | 1 << 39;
/// curl's own limit per request.
pub const CURL_MAX_TIME_SECS: &str = "5";

/// One host of the topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    Client,
    Lb,
    Lb2,
    Rs1,
    Rs2,
    Sorry,
    /// Scale-out only (ecmp.rs): a third balancer and the clients' router.
    Lb3,
    Router,
}

impl Host {
    pub const ALL: [Host; 6] = [
        Host::Client,
        Host::Lb,
        Host::Lb2,
        Host::Rs1,
        Host::Rs2,
        Host::Sorry,
    ];
    /// The hosts that run rs.sh (VIP on lo) and may serve the VIP.
    pub const REAL_SERVERS: [Host; 3] = [Host::Rs1, Host::Rs2, Host::Sorry];
    fn short(self) -> &'static str {
        match self {
            Host::Client => "client",
            Host::Lb => "lb",
            Host::Lb2 => "lb2",
            Host::Rs1 => "rs1",
            Host::Rs2 => "rs2",
            Host::Sorry => "sorry",
            Host::Lb3 => "lb3",
            Host::Router => "router",
        }
    }
    /// The host's IPv6 address beside its IPv4 one.
    pub fn ip6(self) -> Option<Ipv6Addr> {
        Some(match self {
            Host::Client => CLIENT_IP6,
            Host::Lb => LB_IP6,
            Host::Lb2 => LB2_IP6,
            Host::Rs1 => RS1_IP6,
            Host::Rs2 => RS2_IP6,
            Host::Sorry => SORRY_IP6,
            Host::Lb3 => ecmp::LB3_IP6,
            Host::Router => ecmp::ROUTER_IP6,
        })
    }

    pub fn ip(self) -> Ipv4Addr {
        match self {
            Host::Client => CLIENT_IP,
            Host::Lb => LB_IP,
            Host::Lb2 => LB2_IP,
            Host::Rs1 => RS1_IP,
            Host::Rs2 => RS2_IP,
            Host::Sorry => SORRY_IP,
            Host::Lb3 => ecmp::LB3_IP,
            Host::Router => ecmp::ROUTER_IP,
        }
    }
}

pub struct Topology {
    prefix: String,
    workdir: PathBuf,
    nginx: Vec<(Host, Child)>,
    agents: Vec<(Host, Child)>,
    keepalived: Vec<(Host, Child)>,
    /// Other daemons (the scale-out router's BIRD).
    daemons: Vec<(Host, Child)>,
    /// Where the client's curls go: the seed's VIP unless set otherwise.
    service_addr: Ipv4Addr,
    /// The --iface arguments of the agent on the balancer.
    agent_ifaces: Vec<String>,
}

/// Removes everything a topology with `prefix` may have left behind.
pub fn destroy(prefix: &str) {
    for ns in namespaces_with_prefix(&format!("{prefix}-")) {
        destroy_namespace(&ns);
    }
    for host in [Host::Lb, Host::Lb2, Host::Lb3] {
        let _ = fs::remove_dir_all(pin_dir_of(prefix, host));
    }
    let _ = fs::remove_file(pass_pin_of(prefix));
    // What agents left in the runtime directory (a handover after a failed
    // test, a lock or status after a kill).
    let tag = format!("_{prefix}-");
    if let Ok(entries) = fs::read_dir(lb_userspace::runtime_files::RUN_DIR) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().contains(&tag) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

fn pin_dir_of(prefix: &str, host: Host) -> PathBuf {
    PathBuf::from(format!("/sys/fs/bpf/{prefix}-{}", host.short()))
}

fn pass_pin_of(prefix: &str) -> PathBuf {
    PathBuf::from(format!("/sys/fs/bpf/{prefix}-xdp-pass"))
}

impl Topology {
    /// Builds the namespaces, links and addresses, with rs.sh applied on the
    /// real servers and the VIP on the balancer (as keepalived's VRRP would).
    pub fn create(prefix: &str) -> Result<Self> {
        destroy(prefix);
        let workdir = std::env::temp_dir().join(format!("{prefix}-work"));
        let _ = fs::remove_dir_all(&workdir);
        fs::create_dir_all(workdir.join("www")).context("creating the work directory")?;
        let topo = Self {
            prefix: prefix.to_string(),
            workdir,
            nginx: Vec::new(),
            agents: Vec::new(),
            keepalived: Vec::new(),
            daemons: Vec::new(),
            service_addr: VIP,
            agent_ifaces: vec![HOST_IFACE.to_string()],
        };
        topo.build().context("building the namespace topology")?;
        Ok(topo)
    }

    pub fn ns(&self, host: Host) -> String {
        format!("{}-{}", self.prefix, host.short())
    }

    fn switch_ns(&self) -> String {
        format!("{}-sw", self.prefix)
    }

    /// Where the balancer's agent pins its maps.
    pub fn pin_dir(&self) -> PathBuf {
        self.pin_dir_on(Host::Lb)
    }

    pub fn pin_dir_on(&self, host: Host) -> PathBuf {
        pin_dir_of(&self.prefix, host)
    }

    /// The seed's lb.toml for this topology: its vrrp_instance's interface
    /// (the seed's eno16777736) becomes the namespace's eth0.
    pub fn seed_config(&self) -> String {
        self.config_from("seed-dr.toml")
    }

    /// configs/NAME adapted to this topology (interface eth0).
    pub fn config_from(&self, name: &str) -> String {
        let text = fs::read_to_string(configs_dir().join(name)).unwrap_or_default();
        text.replace(
            "interface = \"eno16777736\"",
            &format!("interface = \"{HOST_IFACE}\""),
        )
    }

    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    fn build(&self) -> Result<()> {
        let sw = self.switch_ns();
        ip(&["netns", "add", &sw])?;
        ip(&["-n", &sw, "link", "add", BRIDGE, "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", BRIDGE, "up"])?;
        for host in Host::ALL {
            self.add_host(host)?;
        }
        // The balancer holds the VIP, as keepalived's vrrp_instance would.
        ip(&[
            "-n",
            &self.ns(Host::Lb),
            "addr",
            "add",
            &format!("{VIP}/32"),
            "dev",
            HOST_IFACE,
        ])?;
        // The seed's rs.sh, done by `lb-userspace realserver start`.
        let binary = agent_binary()?;
        let binary = binary.to_string_lossy();
        for rs in Host::REAL_SERVERS {
            exec_in(
                &self.ns(rs),
                &[&binary, "realserver", "start", "--vip", &VIP.to_string()],
            )?;
        }
        for lb in [Host::Lb, Host::Lb2] {
            self.attach_xdp_pass_on_switch_port(lb)?;
        }
        Ok(())
    }

    /// `host`'s namespace, its eth0 on the switch with its address.
    fn add_host(&self, host: Host) -> Result<()> {
        let ns = self.ns(host);
        let port = format!("v-{}", host.short());
        ip(&["netns", "add", &ns])?;
        ip(&[
            "-n",
            &self.switch_ns(),
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            HOST_IFACE,
            "netns",
            &ns,
        ])?;
        ip(&[
            "-n",
            &self.switch_ns(),
            "link",
            "set",
            &port,
            "master",
            BRIDGE,
            "up",
        ])?;
        let addr = format!("{}/{SUBNET_PREFIX}", host.ip());
        ip(&["-n", &ns, "addr", "add", &addr, "dev", HOST_IFACE])?;
        if let Some(ip6) = host.ip6() {
            // nodad: usable at once, not tentative for a second.
            let addr = format!("{ip6}/{SUBNET6_PREFIX}");
            ip(&["-n", &ns, "addr", "add", &addr, "dev", HOST_IFACE, "nodad"])?;
        }
        ip(&["-n", &ns, "link", "set", HOST_IFACE, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        // Forwarded TCP would carry partial checksums from veth offload.
        exec_in(&ns, &["ethtool", "-K", HOST_IFACE, "tx", "off"])?;
        Ok(())
    }

    /// Adds the IPv6 VIP to `host`'s interface, as the operator does while
    /// no vrrp_instance governs IPv6: deprecated (preferred_lft 0), so that
    /// it is never the source of the host's own connections (as a /128 it
    /// would win source selection's longest-prefix rule, and health checks'
    /// answers would go to the real servers' own copy of the VIP).
    pub fn add_vip6(&self, host: Host) -> Result<()> {
        let vip6 = format!("{VIP6}/128");
        let ns = self.ns(host);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &vip6,
            "dev",
            HOST_IFACE,
            "nodad",
            "preferred_lft",
            "0",
        ])
        .map(|_| ())
    }

    /// Pulls `host`'s cable: its link to the switch is deleted (for good).
    pub fn unplug(&self, host: Host) -> Result<()> {
        ip(&[
            "-n",
            &self.switch_ns(),
            "link",
            "del",
            &format!("v-{}", host.short()),
        ])
        .map(|_| ())
    }

    /// A veth delivers XDP_TX frames only if its peer runs a native XDP
    /// program: give the switch side of `host`'s link an xdp_pass (done
    /// for the balancers; a traffic generator on the client needs it too).
    pub fn attach_xdp_pass_on_switch_port(&self, host: Host) -> Result<()> {
        self.attach_xdp_pass(&format!("v-{}", host.short()))
    }

    fn attach_xdp_pass(&self, port: &str) -> Result<()> {
        let pin = pass_pin_of(&self.prefix);
        let _ = fs::remove_file(&pin);
        let mut ebpf = Ebpf::load(BASELINES_OBJECT).context("loading the baselines object")?;
        let prog: &mut Xdp = ebpf
            .program_mut("xdp_pass")
            .ok_or_else(|| anyhow!("no xdp_pass program"))?
            .try_into()?;
        prog.load()?;
        prog.pin(&pin).context("pinning xdp_pass")?;
        let pin_str = pin.to_string_lossy().to_string();
        let attached = netns::run(
            "nsenter",
            &[
                &nsenter_net(&self.switch_ns()),
                "ip",
                "link",
                "set",
                "dev",
                port,
                "xdpdrv",
                "pinned",
                &pin_str,
            ],
        );
        let _ = fs::remove_file(&pin);
        attached.map(|_| ())
    }

    /// The MAC address of `host`'s interface.
    pub fn mac(&self, host: Host) -> Result<[u8; 6]> {
        let out = ip(&["-n", &self.ns(host), "link", "show", HOST_IFACE])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let word = text
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .context("no link/ether in `ip link show`")?;
        let mut mac = [0u8; 6];
        for (byte, hex) in mac.iter_mut().zip(word.split(':')) {
            *byte = u8::from_str_radix(hex, 16)?;
        }
        Ok(mac)
    }

    /// The next VRRP packet seen on `host`'s interface (IPv4 header
    /// included), from a raw socket opened inside its namespace.
    pub fn capture_vrrp(&self, host: Host, timeout: Duration) -> Result<Vec<u8>> {
        let ns_path = format!("/var/run/netns/{}", self.ns(host));
        std::thread::spawn(move || -> Result<Vec<u8>> {
            use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
            let ns = fs::File::open(&ns_path).with_context(|| format!("opening {ns_path}"))?;
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
            let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(112)))?;
            let index = nix::net::if_::if_nametoindex(HOST_IFACE)?;
            socket.join_multicast_v4_n(
                &Ipv4Addr::new(224, 0, 0, 18),
                &InterfaceIndexOrAddress::Index(index),
            )?;
            socket.set_read_timeout(Some(timeout))?;
            let mut buf = vec![0u8; 2048];
            let n = std::io::Read::read(&mut &socket, &mut buf).context("no VRRP packet")?;
            buf.truncate(n);
            Ok(buf)
        })
        .join()
        .map_err(|_| anyhow!("the capture thread panicked"))?
    }

    /// Does `host` hold the VIP on its interface?
    pub fn holds_vip(&self, host: Host) -> bool {
        self.lists_address(host, &format!("inet {VIP}/"))
    }

    /// Does `host`'s interface hold the IPv6 VIP (a VRRPv3 master's)?
    pub fn holds_vip6(&self, host: Host) -> bool {
        self.lists_address(host, &format!("inet6 {VIP6}/128"))
    }

    /// Whether `ip addr show` of `host`'s interface has `needle` ("inet
    /// ADDR/" or "inet6 ADDR/PREFIX").
    fn lists_address(&self, host: Host, needle: &str) -> bool {
        ip(&["-n", &self.ns(host), "addr", "show", "dev", HOST_IFACE])
            .map(|o| String::from_utf8_lossy(&o.stdout).contains(needle))
            .unwrap_or(false)
    }

    /// Samples who holds a VIP (`holds`: Topology::holds_vip or
    /// holds_vip6) `samples` times, VIP_SAMPLE_PERIOD apart; panics unless
    /// exactly `holder` does every time.
    pub fn assert_only_holder(
        &self,
        holds: fn(&Self, Host) -> bool,
        holder: Host,
        other: Host,
        samples: usize,
    ) {
        for _ in 0..samples {
            assert!(holds(self, holder), "{holder:?} lost the VIP");
            assert!(!holds(self, other), "{other:?} holds the VIP too");
            std::thread::sleep(VIP_SAMPLE_PERIOD);
        }
    }

    /// Does the balancer's interface still carry an XDP program?
    pub fn lb_has_xdp(&self) -> Result<bool> {
        self.has_xdp(Host::Lb)
    }

    pub fn has_xdp(&self, host: Host) -> Result<bool> {
        let out = ip(&["-n", &self.ns(host), "link", "show", "dev", HOST_IFACE])?;
        Ok(String::from_utf8_lossy(&out.stdout).contains("xdp"))
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for (_, mut agent) in self.agents.drain(..) {
            let _ = stop_child(&mut agent, "TERM", AGENT_STOP_TIMEOUT);
        }
        // realserver stop, so no state file or pin outlives its namespace.
        if let Ok(binary) = agent_binary() {
            for rs in Host::REAL_SERVERS {
                let _ = Command::new("nsenter")
                    .arg(nsenter_net(&self.ns(rs)))
                    .arg(&binary)
                    .args(["realserver", "stop", "--vip", &VIP.to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        for (_, mut child) in self.keepalived.drain(..).chain(self.daemons.drain(..)) {
            let _ = child.kill();
            let _ = child.wait();
        }
        for (_, mut child) in self.nginx.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        destroy(&self.prefix);
        let _ = fs::remove_dir_all(&self.workdir);
    }
}

/// Sends `signal` (TERM, KILL...) to `child` and waits up to `timeout` for
/// it to exit, then SIGKILLs it. Its exit status if it exited in time; Err
/// if the signal could not be sent (the child is reaped all the same).
fn stop_child(child: &mut Child, signal: &str, timeout: Duration) -> Result<Option<ExitStatus>> {
    let sent = netns::run("kill", &[&format!("-{signal}"), &child.id().to_string()]);
    let deadline = Instant::now() + timeout;
    let mut status = None;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            status = Some(s);
            break;
        }
        sleep(POLL);
    }
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    sent.map(|_| status)
}

/// Sets `ns`'s default route via `gateway`.
fn default_route(ns: &str, gateway: &str) -> Result<()> {
    ip(&["-n", ns, "route", "add", "default", "via", gateway]).map(|_| ())
}

/// Polls `done` every 100 ms until it holds or `timeout` passes; returns
/// the time it took, or None on timeout.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if done() {
            return Some(start.elapsed());
        }
        sleep(POLL);
    }
    None
}

/// The lb-userspace binary next to the running executable (target/<profile>/),
/// or $LB_USERSPACE_BIN.
pub fn agent_binary() -> Result<PathBuf> {
    if let Ok(path) = std::env::var("LB_USERSPACE_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join("lb-userspace");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "lb-userspace binary not found next to {}: run `cargo build -p lb-userspace` first",
        exe.display()
    )
}

/// configs/ of the workspace.
pub fn configs_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    dir.canonicalize().unwrap_or(dir)
}
