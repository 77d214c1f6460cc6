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

use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{Ebpf, programs::Xdp};
use lb_userspace::dataplane::BASELINES_OBJECT;

use crate::netns::{self, destroy_namespace, exec_in, ip, namespaces_with_prefix, nsenter_net};

pub const SUBNET_PREFIX: u8 = 24;
pub const VIP: Ipv4Addr = Ipv4Addr::new(172, 16, 122, 100);
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(172, 16, 122, 50);
pub const LB_IP: Ipv4Addr = Ipv4Addr::new(172, 16, 122, 188);
/// The seed's backup balancer.
pub const LB2_IP: Ipv4Addr = Ipv4Addr::new(172, 16, 122, 189);
pub const RS1_IP: Ipv4Addr = Ipv4Addr::new(172, 16, 122, 193);
pub const RS2_IP: Ipv4Addr = Ipv4Addr::new(172, 16, 122, 195);
/// The NAT client's subnet (one-armed: same wire, another subnet).
const NAT_OUTSIDE_LB: &str = "192.168.100.1/24";
const NAT_OUTSIDE_GATEWAY: &str = "192.168.100.1";
const NAT_OUTSIDE_CLIENT: &str = "192.168.100.50/24";
/// Two-armed NAT: the outside network.
const OUTSIDE_BRIDGE: &str = "br1";
const OUTSIDE_IFACE: &str = "eth1";
const TWO_ARMED_LB: &str = "192.168.200.1/24";
const TWO_ARMED_GATEWAY: &str = "192.168.200.1";
const TWO_ARMED_CLIENT: &str = "192.168.200.50/24";
/// A third web server, for sorry_server scenarios.
pub const SORRY_IP: Ipv4Addr = Ipv4Addr::new(172, 16, 122, 197);
/// Interface name inside every host namespace.
pub const HOST_IFACE: &str = "eth0";
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
        }
    }
    pub fn ip(self) -> Ipv4Addr {
        match self {
            Host::Client => CLIENT_IP,
            Host::Lb => LB_IP,
            Host::Lb2 => LB2_IP,
            Host::Rs1 => RS1_IP,
            Host::Rs2 => RS2_IP,
            Host::Sorry => SORRY_IP,
        }
    }
}

pub struct Topology {
    prefix: String,
    workdir: PathBuf,
    nginx: Vec<(Host, Child)>,
    agents: Vec<(Host, Child)>,
    keepalived: Vec<(Host, Child)>,
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
    for host in [Host::Lb, Host::Lb2] {
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
            let ns = self.ns(host);
            let port = format!("v-{}", host.short());
            ip(&["netns", "add", &ns])?;
            ip(&[
                "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", HOST_IFACE,
                "netns", &ns,
            ])?;
            ip(&["-n", &sw, "link", "set", &port, "master", BRIDGE, "up"])?;
            let addr = format!("{}/{SUBNET_PREFIX}", host.ip());
            ip(&["-n", &ns, "addr", "add", &addr, "dev", HOST_IFACE])?;
            ip(&["-n", &ns, "link", "set", HOST_IFACE, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            // Forwarded TCP would carry partial checksums from veth offload.
            exec_in(&ns, &["ethtool", "-K", HOST_IFACE, "tx", "off"])?;
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

    /// Starts nginx in `host` answering every request with `body`.
    pub fn start_nginx(&mut self, host: Host, body: &str) -> Result<()> {
        let name = host.short();
        let dir = self.workdir.join(format!("nginx-{name}"));
        fs::create_dir_all(&dir)?;
        let d = dir.display();
        let files = self.files_dir().display().to_string();
        let conf = format!(
            "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_max_body_size 0;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               server {{\n    listen 80;\n    listen 8080;\n    location = / {{ default_type text/plain; return 200 \"{body}\\n\"; }}\n\
                 location / {{ root {files}; }}\n  }}\n}}\n"
        );
        let conf_path = dir.join("nginx.conf");
        fs::write(&conf_path, conf)?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(host), "nginx", "-e"])
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nginx (installed by `cargo xtask setup`)")?;
        self.nginx.push((host, child));
        // Ready when it answers on its own address.
        let url = format!("http://{}/", host.ip());
        let deadline = Instant::now() + NGINX_START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(out) = exec_in(&self.ns(host), &["curl", "-s", "--max-time", "1", &url])
                && String::from_utf8_lossy(&out.stdout).trim() == body
            {
                return Ok(());
            }
            sleep(POLL);
        }
        bail!(
            "nginx in {} did not answer within {NGINX_START_TIMEOUT:?}",
            self.ns(host)
        )
    }

    /// Stops the nginx of `host` (the seed's `docker stop nginx`): SIGTERM
    /// to the master, which stops its workers; SIGKILL if it lingers.
    pub fn stop_nginx(&mut self, host: Host) {
        self.nginx.retain_mut(|(h, child)| {
            if *h != host {
                return true;
            }
            let _ = stop_child(child, "TERM", NGINX_START_TIMEOUT);
            false
        });
    }

    /// Runs Debian's keepalived, VRRP only, in `host` with `conf`
    /// (keepalived.conf syntax), logging to the work directory.
    pub fn start_keepalived(&mut self, host: Host, conf: &str) -> Result<()> {
        let name = host.short();
        let conf_path = self.write_config(&format!("keepalived-{name}.conf"), conf)?;
        let log = fs::File::create(self.workdir.join(format!("keepalived-{name}.log")))?;
        let pid = self.workdir.join(format!("keepalived-{name}.pid"));
        let vrrp_pid = self.workdir.join(format!("keepalived-{name}-vrrp.pid"));
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns(host),
                "keepalived",
                "--vrrp",
                "-n",
                "-l",
                "-D",
                "-f",
            ])
            .arg(&conf_path)
            .arg("-p")
            .arg(&pid)
            .arg("-r")
            .arg(&vrrp_pid)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting keepalived (installed by `cargo xtask setup`)")?;
        self.keepalived.push((host, child));
        Ok(())
    }

    /// keepalived's log in `host`.
    pub fn keepalived_log(&self, host: Host) -> String {
        fs::read_to_string(
            self.workdir
                .join(format!("keepalived-{}.log", host.short())),
        )
        .unwrap_or_default()
    }

    /// Sends `signal` to keepalived in `host` and waits until it is gone.
    /// Its VRRP child first: killed after its parent it would get SIGTERM
    /// and leave cleanly (priority 0), which is not what KILL means.
    pub fn signal_keepalived(&mut self, host: Host, signal: &str) -> Result<()> {
        let Some(pos) = self.keepalived.iter().position(|(h, _)| *h == host) else {
            return Ok(());
        };
        let (_, mut child) = self.keepalived.remove(pos);
        let vrrp_pid = self
            .workdir
            .join(format!("keepalived-{}-vrrp.pid", host.short()));
        if let Ok(pid) = fs::read_to_string(vrrp_pid) {
            let _ = Command::new("kill")
                .args([&format!("-{signal}"), pid.trim()])
                .status();
        }
        stop_child(&mut child, signal, AGENT_STOP_TIMEOUT).map(|_| ())
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

    /// The pid of the agent running on `host`.
    pub fn agent_pid(&self, host: Host) -> Option<u32> {
        self.agents
            .iter()
            .find(|(h, _)| *h == host)
            .map(|(_, c)| c.id())
    }

    /// A capability field ("CapEff", "CapPrm", "CapBnd"...) of every thread
    /// of the agent on `host`, as masks.
    pub fn agent_thread_caps(&self, host: Host, field: &str) -> Result<Vec<u64>> {
        let pid = self.agent_pid(host).context("no agent running")?;
        let mut out = Vec::new();
        for task in fs::read_dir(format!("/proc/{pid}/task"))? {
            let status = fs::read_to_string(task?.path().join("status"))?;
            let mask = status
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{field}:")))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                .with_context(|| format!("no {field} in /proc/{pid}/task/*/status"))?;
            out.push(mask);
        }
        Ok(out)
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

    /// Files every nginx serves besides "/" (same content on every server).
    pub fn files_dir(&self) -> PathBuf {
        self.workdir.join("www")
    }

    /// Runs `lb-userspace realserver ARGS` in `host`, keeping the host's
    /// bpffs (tun mode pins its decapsulation program there).
    pub fn realserver(&self, host: Host, args: &[&str]) -> Result<()> {
        let binary = agent_binary()?;
        let mut full = vec![
            nsenter_net(&self.ns(host)),
            binary.to_string_lossy().into_owned(),
            "realserver".into(),
        ];
        full.extend(args.iter().map(|a| a.to_string()));
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        netns::run("nsenter", &refs).map(|_| ())
    }

    /// Downloads `path` from the VIP on the client; returns the SHA-256 of
    /// what arrived.
    pub fn download_sha256(&self, path: &str) -> Result<String> {
        let url = format!("http://{}{path}", self.service_addr);
        let out = exec_in(
            &self.ns(Host::Client),
            &[
                "sh",
                "-c",
                &format!("curl -sf --max-time 30 {url} | sha256sum"),
            ],
        )?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string())
    }

    /// The data plane's global counters (lb_common::counters) on `host`,
    /// read from its pinned map.
    pub fn counters(&self, host: Host) -> Result<Vec<u64>> {
        Ok(lb_userspace::stats::snapshot::read_counters(&self.pin_dir_on(host))?.to_vec())
    }

    /// Starts a slow download of `path` from the service on the client (an
    /// established connection that lasts); kill the child to end it.
    pub fn slow_download(&self, path: &str, bytes_per_s: u32) -> Result<Child> {
        let url = format!("http://{}{path}", self.service_addr);
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns(Host::Client),
                "curl",
                "-s",
                "-o",
                "/dev/null",
            ])
            .args([
                "--max-time",
                "60",
                "--limit-rate",
                &bytes_per_s.to_string(),
                &url,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting curl")
    }

    /// POSTs the file at `path` to the service from the client; returns the
    /// answer's body (full-sized client segments: the path-MTU case).
    pub fn upload(&self, path: &Path) -> Result<String> {
        let url = format!("http://{}/", self.service_addr);
        let data = format!("@{}", path.display());
        let out = exec_in(
            &self.ns(Host::Client),
            &[
                "curl",
                "-sf",
                "--max-time",
                "30",
                "-X",
                "POST",
                "--data-binary",
                &data,
                &url,
            ],
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Writes a config file into the work directory.
    pub fn write_config(&self, name: &str, text: &str) -> Result<PathBuf> {
        let path = self.workdir.join(name);
        fs::write(&path, text)?;
        Ok(path)
    }

    /// `lb-userspace list -n` of the running agent.
    pub fn list(&self, binary: &Path) -> Result<String> {
        let out = Command::new(binary)
            .args(["list", "-n", "--pin-path"])
            .arg(self.pin_dir())
            .output()
            .context("running lb-userspace list")?;
        if !out.status.success() {
            bail!("list failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs the real agent on the balancer with `config`; returns once its
    /// maps are pinned and it logged that it is ready.
    pub fn start_agent(&mut self, binary: &Path, config: &Path, extra_args: &[&str]) -> Result<()> {
        self.start_agent_on(Host::Lb, binary, config, extra_args)
    }

    pub fn start_agent_on(
        &mut self,
        host: Host,
        binary: &Path,
        config: &Path,
        extra_args: &[&str],
    ) -> Result<()> {
        let log_path = self.agent_log_path(host);
        let log = fs::File::options()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let start_len = fs::metadata(&log_path)
            .map(|m| m.len() as usize)
            .unwrap_or(0);
        let child = Command::new("nsenter")
            .arg(nsenter_net(&self.ns(host)))
            .arg(binary)
            .args(
                self.agent_ifaces
                    .iter()
                    .flat_map(|i| ["--iface", i.as_str()]),
            )
            .arg("--config")
            .arg(config)
            .arg("--pin-path")
            .arg(self.pin_dir_on(host))
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        self.agents.push((host, child));
        let deadline = Instant::now() + AGENT_START_TIMEOUT;
        while Instant::now() < deadline {
            let log = self.agent_log_on(host);
            if log
                .get(start_len..)
                .is_some_and(|new| new.contains("ready"))
            {
                return Ok(());
            }
            if let Some((_, child)) = self.agents.iter_mut().rev().find(|(h, _)| *h == host)
                && let Ok(Some(status)) = child.try_wait()
            {
                // Gone: not the agent of `host` any more.
                if let Some(pos) = self.agents.iter().rposition(|(h, _)| *h == host) {
                    self.agents.remove(pos);
                }
                bail!("the agent exited ({status}) during start-up:\n{log}");
            }
            sleep(POLL);
        }
        bail!(
            "the agent was not ready within {AGENT_START_TIMEOUT:?}:\n{}",
            self.agent_log_on(host)
        )
    }

    /// Sends SIGTERM to the agent and waits for it; returns whether it
    /// exited successfully.
    pub fn stop_agent(&mut self) -> Result<bool> {
        self.signal_agent(Host::Lb, "TERM")
    }

    /// Sends `signal` (TERM, KILL...) to the agent on `host` and waits for
    /// it to end; returns whether it exited successfully.
    pub fn signal_agent(&mut self, host: Host, signal: &str) -> Result<bool> {
        let Some(pos) = self.agents.iter().position(|(h, _)| *h == host) else {
            return Ok(true);
        };
        let (_, mut child) = self.agents.remove(pos);
        match stop_child(&mut child, signal, AGENT_STOP_TIMEOUT)? {
            Some(status) => Ok(status.success()),
            None => bail!("the agent did not stop within {AGENT_STOP_TIMEOUT:?} of SIG{signal}"),
        }
    }

    fn agent_log_path(&self, host: Host) -> PathBuf {
        self.workdir.join(format!("agent-{}.log", host.short()))
    }

    pub fn agent_log(&self) -> String {
        self.agent_log_on(Host::Lb)
    }

    pub fn agent_log_on(&self, host: Host) -> String {
        fs::read_to_string(self.agent_log_path(host)).unwrap_or_default()
    }

    /// Waits until the agent on `host` is VRRP master and balancing the VIP.
    pub fn wait_for_master(&self, host: Host) -> Result<()> {
        let done = wait_until(VRRP_MASTER_TIMEOUT, || {
            self.holds_vip(host) && self.agent_log_on(host).contains("balancing (vrrp_instance")
        });
        if done.is_none() {
            bail!(
                "{} did not become VRRP master within {VRRP_MASTER_TIMEOUT:?}:\n{}",
                self.ns(host),
                self.agent_log_on(host)
            );
        }
        Ok(())
    }

    /// Does `host` hold the VIP on its interface?
    pub fn holds_vip(&self, host: Host) -> bool {
        ip(&[
            "-n",
            &self.ns(host),
            "-4",
            "addr",
            "show",
            "dev",
            HOST_IFACE,
        ])
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("inet {VIP}/")))
        .unwrap_or(false)
    }

    /// The seed's LVS-NAT network, one-armed: the client moves to another
    /// subnet (192.168.100.0/24) behind the balancer's second address, the
    /// real servers route through the balancer, and the client's curls go to
    /// the NAT VIP, the balancer's own 172.16.122.188.
    pub fn make_nat_one_armed(&mut self) -> Result<()> {
        let (client, lb) = (self.ns(Host::Client), self.ns(Host::Lb));
        ip(&["-n", &lb, "addr", "add", NAT_OUTSIDE_LB, "dev", HOST_IFACE])?;
        ip(&["-n", &client, "addr", "flush", "dev", HOST_IFACE])?;
        ip(&[
            "-n",
            &client,
            "addr",
            "add",
            NAT_OUTSIDE_CLIENT,
            "dev",
            HOST_IFACE,
        ])?;
        default_route(&client, NAT_OUTSIDE_GATEWAY)?;
        self.route_real_servers_through_lb()?;
        self.service_addr = LB_IP;
        Ok(())
    }

    /// LVS-NAT: the real servers answer through the balancer.
    fn route_real_servers_through_lb(&self) -> Result<()> {
        for rs in [Host::Rs1, Host::Rs2] {
            default_route(&self.ns(rs), &LB_IP.to_string())?;
        }
        Ok(())
    }

    /// LVS-NAT two-armed: a second network (192.168.200.0/24, bridge br1)
    /// joins the client's new interface and the balancer's eth1; the real
    /// servers stay inside (br0) and route through the balancer's eth0. The
    /// agent then runs with --iface eth1 --iface eth0, and the service
    /// address is the balancer's outside one.
    pub fn make_nat_two_armed(&mut self) -> Result<()> {
        let (sw, client, lb) = (self.switch_ns(), self.ns(Host::Client), self.ns(Host::Lb));
        ip(&["-n", &sw, "link", "add", OUTSIDE_BRIDGE, "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", OUTSIDE_BRIDGE, "up"])?;
        for (port, ns, addr) in [
            ("v-lbo", &lb, TWO_ARMED_LB),
            ("v-clo", &client, TWO_ARMED_CLIENT),
        ] {
            ip(&[
                "-n",
                &sw,
                "link",
                "add",
                port,
                "type",
                "veth",
                "peer",
                "name",
                OUTSIDE_IFACE,
                "netns",
                ns,
            ])?;
            ip(&[
                "-n",
                &sw,
                "link",
                "set",
                port,
                "master",
                OUTSIDE_BRIDGE,
                "up",
            ])?;
            ip(&["-n", ns, "addr", "add", addr, "dev", OUTSIDE_IFACE])?;
            ip(&["-n", ns, "link", "set", OUTSIDE_IFACE, "up"])?;
            exec_in(ns, &["ethtool", "-K", OUTSIDE_IFACE, "tx", "off"])?;
        }
        // Redirected frames leave the balancer through eth1: its peer needs XDP.
        self.attach_xdp_pass("v-lbo")?;
        ip(&["-n", &client, "link", "set", HOST_IFACE, "down"])?;
        default_route(&client, TWO_ARMED_GATEWAY)?;
        self.route_real_servers_through_lb()?;
        self.service_addr = TWO_ARMED_GATEWAY.parse()?;
        self.agent_ifaces = vec![OUTSIDE_IFACE.to_string(), HOST_IFACE.to_string()];
        Ok(())
    }

    /// Undoes make_nat_one_armed: back to the seed's DR network.
    pub fn undo_nat_one_armed(&mut self) -> Result<()> {
        let (client, lb) = (self.ns(Host::Client), self.ns(Host::Lb));
        ip(&["-n", &lb, "addr", "del", NAT_OUTSIDE_LB, "dev", HOST_IFACE])?;
        ip(&["-n", &client, "addr", "flush", "dev", HOST_IFACE])?;
        ip(&[
            "-n",
            &client,
            "addr",
            "add",
            &format!("{CLIENT_IP}/{SUBNET_PREFIX}"),
            "dev",
            HOST_IFACE,
        ])?;
        for rs in [Host::Rs1, Host::Rs2] {
            ip(&["-n", &self.ns(rs), "route", "del", "default"])?;
        }
        self.service_addr = VIP;
        Ok(())
    }

    /// Makes the client's curls go to `addr` (e.g. the seed's NAT VIP).
    pub fn set_service_addr(&mut self, addr: Ipv4Addr) {
        self.service_addr = addr;
    }

    /// `curl http://VIP/` from the client: the body, trimmed.
    pub fn curl_vip(&self) -> Result<String> {
        self.curl(self.service_addr)
    }

    /// `curl http://ADDR/` from the client: the body, trimmed.
    pub fn curl(&self, addr: Ipv4Addr) -> Result<String> {
        let url = format!("http://{addr}/");
        let out = exec_in(
            &self.ns(Host::Client),
            &["curl", "-s", "--max-time", CURL_MAX_TIME_SECS, &url],
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// `n` requests at once from the client (curl --parallel, each its own
    /// connection); returns the HTTP status of each.
    pub fn curl_vip_parallel(&self, n: usize) -> Result<Vec<String>> {
        let url = format!("http://{}/", self.service_addr);
        let n_str = n.to_string();
        let mut args = vec![
            "curl",
            "-s",
            "--parallel",
            "--parallel-immediate",
            "--parallel-max",
            &n_str,
            "--max-time",
            CURL_MAX_TIME_SECS,
            "-w",
            "%{http_code}\\n",
        ];
        for _ in 0..n {
            args.extend(["-o", "/dev/null", url.as_str()]);
        }
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns(Host::Client)])
            .args(&args)
            .output()
            .context("running curl --parallel")?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// From the client: a connected UDP socket sends one datagram to
    /// `addr:port` and waits up to `timeout` for an answer; returns what
    /// the kernel said (an ICMP port unreachable shows as ConnectionRefused).
    pub fn udp_exchange(
        &self,
        addr: Ipv4Addr,
        port: u16,
        timeout: Duration,
    ) -> Result<std::io::Result<usize>> {
        let ns_path = format!("/var/run/netns/{}", self.ns(Host::Client));
        std::thread::spawn(move || -> Result<std::io::Result<usize>> {
            let ns = fs::File::open(&ns_path).with_context(|| format!("opening {ns_path}"))?;
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
            let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
            socket.connect((addr, port))?;
            socket.set_read_timeout(Some(timeout))?;
            socket.send(b"query")?;
            let mut buf = [0u8; 512];
            Ok(socket.recv(&mut buf))
        })
        .join()
        .map_err(|_| anyhow!("the UDP thread panicked"))?
    }

    /// A TCP listener inside `host`'s namespace: bound from a thread that
    /// joined the namespace; the socket stays there, usable from anywhere.
    pub fn listen_in(&self, host: Host, addr: &str) -> Result<std::net::TcpListener> {
        let ns_path = format!("/var/run/netns/{}", self.ns(host));
        let addr = addr.to_string();
        std::thread::spawn(move || -> Result<std::net::TcpListener> {
            let ns = fs::File::open(&ns_path).with_context(|| format!("opening {ns_path}"))?;
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
            Ok(std::net::TcpListener::bind(&addr)?)
        })
        .join()
        .map_err(|_| anyhow!("the setns thread panicked"))?
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
        for (_, mut child) in self.keepalived.drain(..) {
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
