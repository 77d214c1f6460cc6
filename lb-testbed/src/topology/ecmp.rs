//! Scale-out: the seed's segment behind a router that speaks BGP (BIRD 2)
//! and spreads the VIP's flows over the balancers that announce it (kernel
//! ECMP, hashing ports too: fib_multipath_hash_policy=1). The client moves
//! to its own subnet behind the router; the real servers answer it
//! directly through the router (DR).
//!
//! ```text
//!   {p}-client 10.0.0.50 ── eth1 10.0.0.1 {p}-router 172.16.122.1 ─┐
//!   {p}-lb 172.16.122.188, {p}-lb2 .189, {p}-lb3 .190 ──────────── br0
//!   {p}-rs1 .193, {p}-rs2 .195 (VIP on lo) ─────────────────────── ┘
//! ```
//!
//! IPv6 beside it: the client's 2001:db8:10::50 behind the router's
//! 2001:db8:10::1 and 2001:db8:122::1, the balancers announcing IPv6 VIPs
//! in an ipv6 channel of the same sessions.

use super::*;

pub const ROUTER_IP: Ipv4Addr = Ipv4Addr::new(172, 16, 122, 1);
pub const LB3_IP: Ipv4Addr = Ipv4Addr::new(172, 16, 122, 190);
pub const ROUTER_IP6: Ipv6Addr = crate::seed::seed6(0x1);
pub const LB3_IP6: Ipv6Addr = crate::seed::seed6(0x190);
/// The client's own IPv6 subnet, behind the router.
pub const OUTSIDE_CLIENT_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 0, 0, 0x50);
const OUTSIDE_ROUTER6: &str = "2001:db8:10::1";
const OUTSIDE_NET6: &str = "2001:db8:10::/64";
/// The client's own subnet, behind the router.
pub const OUTSIDE_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 50);
const OUTSIDE_ROUTER: &str = "10.0.0.1";
const OUTSIDE_NET: &str = "10.0.0.0/24";
const OUTSIDE_PREFIX: u8 = 24;
const OUTSIDE_IFACE: &str = "eth1";
pub const ROUTER_AS: u32 = 65000;
/// Every balancer speaks for one AS (Katran's way): its routes differ only
/// in the next hop, so the router merges them into one multipath route.
pub const BALANCERS_AS: u32 = 65010;
/// BGP hold time of the sessions (BIRD's smallest).
pub const HOLD_TIME_S: u32 = 3;

impl Topology {
    /// Adds the router (running BIRD) and the third balancer, moves the
    /// client behind the router, and takes the VIP off the balancer (BGP
    /// decides who gets its packets). `bfd`: the router runs BFD too.
    pub fn make_scale_out(&mut self, bfd: bool) -> Result<()> {
        self.add_host(Host::Router)?;
        self.add_host(Host::Lb3)?;
        self.attach_xdp_pass_on_switch_port(Host::Lb3)?;
        let (router, client) = (self.ns(Host::Router), self.ns(Host::Client));
        ip(&[
            "-n",
            &router,
            "link",
            "add",
            OUTSIDE_IFACE,
            "type",
            "veth",
            "peer",
            "name",
            OUTSIDE_IFACE,
            "netns",
            &client,
        ])?;
        ip(&[
            "-n",
            &router,
            "addr",
            "add",
            &format!("{OUTSIDE_ROUTER}/{OUTSIDE_PREFIX}"),
            "dev",
            OUTSIDE_IFACE,
        ])?;
        add6(&router, &format!("{OUTSIDE_ROUTER6}/{SUBNET6_PREFIX}"))?;
        ip(&["-n", &router, "link", "set", OUTSIDE_IFACE, "up"])?;
        // The client leaves the seed's segment: everything via the router.
        ip(&["-n", &client, "link", "set", HOST_IFACE, "down"])?;
        ip(&[
            "-n",
            &client,
            "addr",
            "add",
            &format!("{OUTSIDE_CLIENT_IP}/{OUTSIDE_PREFIX}"),
            "dev",
            OUTSIDE_IFACE,
        ])?;
        add6(&client, &format!("{OUTSIDE_CLIENT_IP6}/{SUBNET6_PREFIX}"))?;
        ip(&["-n", &client, "link", "set", OUTSIDE_IFACE, "up"])?;
        default_route(&client, OUTSIDE_ROUTER)?;
        default_route(&client, OUTSIDE_ROUTER6)?;
        for ns in [&router, &client] {
            exec_in(ns, &["ethtool", "-K", OUTSIDE_IFACE, "tx", "off"])?;
        }
        for (key, value) in [
            ("net.ipv4.ip_forward", "1"),
            // Flows spread by ports too: one client, many connections.
            ("net.ipv4.fib_multipath_hash_policy", "1"),
            ("net.ipv4.conf.all.send_redirects", "0"),
            ("net.ipv6.conf.all.forwarding", "1"),
            ("net.ipv6.fib_multipath_hash_policy", "1"),
        ] {
            exec_in(&router, &["sysctl", "-q", "-w", &format!("{key}={value}")])?;
        }
        // Direct return: the real servers answer the client via the router.
        for rs in Host::REAL_SERVERS {
            for (net, router_ip) in [
                (OUTSIDE_NET, ROUTER_IP.to_string()),
                (OUTSIDE_NET6, ROUTER_IP6.to_string()),
            ] {
                ip(&["-n", &self.ns(rs), "route", "add", net, "via", &router_ip])?;
            }
        }
        // Gone already when a VRRP agent ran and stopped.
        let _ = ip(&[
            "-n",
            &self.ns(Host::Lb),
            "addr",
            "del",
            &format!("{VIP}/32"),
            "dev",
            HOST_IFACE,
        ]);
        self.start_router_bird(bfd)
    }

    fn start_router_bird(&mut self, bfd: bool) -> Result<()> {
        let conf = self.workdir.join("router-bird.conf");
        let ctl = self.workdir.join("router-bird.ctl");
        let bfd_on = if bfd { "  bfd on;\n" } else { "" };
        fs::write(
            &conf,
            format!(
                "router id {ROUTER_IP};\n\
                 log stderr {{ info, remote, warning, error, auth, fatal, bug }};\n\
                 protocol device {{ }}\n\
                 protocol kernel {{\n  ipv4 {{ import none; export all; }};\n  merge paths on;\n}}\n\
                 protocol kernel {{\n  ipv6 {{ import none; export all; }};\n  merge paths on;\n}}\n\
                 {}\
                 protocol bgp balancers {{\n  local {ROUTER_IP} as {ROUTER_AS};\n  \
                 neighbor range {}.0/{SUBNET_PREFIX} as {BALANCERS_AS};\n  hold time {HOLD_TIME_S};\n  \
                 keepalive time 1;\n{bfd_on}  ipv4 {{ import all; export none; }};\n  \
                 ipv6 {{ import all; export none; }};\n}}\n",
                if bfd { "protocol bfd { }\n" } else { "" },
                subnet_base()
            ),
        )?;
        let log = fs::File::create(self.workdir.join("router-bird.log"))?;
        let child = Command::new("nsenter")
            .arg(nsenter_net(&self.ns(Host::Router)))
            .args(["bird", "-f", "-c"])
            .arg(&conf)
            .arg("-s")
            .arg(&ctl)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting BIRD on the router (apt install bird2)")?;
        self.daemons.push((Host::Router, child));
        Ok(())
    }

    /// The names (comm) of the processes running in `host`'s namespace.
    pub fn processes_in(&self, host: Host) -> Vec<String> {
        let Ok(out) = ip(&["netns", "pids", &self.ns(host)]) else {
            return Vec::new();
        };
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|pid| fs::read_to_string(format!("/proc/{pid}/comm")).ok())
            .map(|comm| comm.trim().to_string())
            .collect()
    }

    /// The effective capabilities of the first process called `name` in
    /// `host`'s namespace.
    pub fn effective_caps_of(&self, host: Host, name: &str) -> Option<u64> {
        let out = ip(&["netns", "pids", &self.ns(host)]).ok()?;
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .find(|pid| {
                fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
            })
            .and_then(|pid| fs::read_to_string(format!("/proc/{pid}/status")).ok())
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| u64::from_str_radix(l.strip_prefix("CapEff:")?.trim(), 16).ok())
            })
    }

    /// The router's BIRD log.
    pub fn router_log(&self) -> String {
        fs::read_to_string(self.workdir.join("router-bird.log")).unwrap_or_default()
    }

    /// The next hops of the router's route to the VIP (the balancers ECMP
    /// spreads its flows over), sorted.
    pub fn router_next_hops(&self) -> Vec<Ipv4Addr> {
        self.next_hops_of("-4", &format!("{VIP}/32"))
    }

    /// The same for the IPv6 VIP.
    pub fn router_next_hops6(&self) -> Vec<Ipv6Addr> {
        self.next_hops_of("-6", &format!("{VIP6}/128"))
    }

    /// The `via` addresses of `ip FAMILY route show ROUTE` on the router,
    /// sorted.
    fn next_hops_of<A: std::str::FromStr + Ord>(&self, family: &str, route: &str) -> Vec<A> {
        let Ok(out) = ip(&["-n", &self.ns(Host::Router), family, "route", "show", route]) else {
            return Vec::new();
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let mut hops: Vec<A> = text
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] == "via")
            .filter_map(|w| w[1].parse().ok())
            .collect();
        hops.sort();
        hops
    }

    /// Waits until the router spreads the IPv6 VIP over exactly `hosts`.
    pub fn wait_for_next_hops6(&self, hosts: &[Host], timeout: Duration) -> Option<Duration> {
        let mut want: Vec<Ipv6Addr> = hosts.iter().filter_map(|h| h.ip6()).collect();
        want.sort();
        wait_until(timeout, || self.router_next_hops6() == want)
    }

    /// Waits until the router spreads the VIP over exactly `hosts`;
    /// how long it took.
    pub fn wait_for_next_hops(&self, hosts: &[Host], timeout: Duration) -> Option<Duration> {
        let mut want: Vec<Ipv4Addr> = hosts.iter().map(|h| h.ip()).collect();
        want.sort();
        wait_until(timeout, || self.router_next_hops() == want)
    }

    /// A balancer's lb.toml here: the seed's service (two nginx, DR,
    /// TCP_CHECK) without a vrrp_instance (every balancer serves),
    /// `scheduler` lines for it, connection sync in both directions or not,
    /// and [bgp] to the router.
    pub fn scale_out_config(&self, scheduler: &str, sync: bool, bfd: bool) -> String {
        let sync_line = if sync {
            format!("lvs_sync_daemon = {{ interface = \"{HOST_IFACE}\" }}\n")
        } else {
            String::new()
        };
        format!(
            "[global]\nrouter_id = \"LVS_DEVEL\"\n{sync_line}\n{}\
             [bgp]\nlocal_as = {BALANCERS_AS}\nhold_time = {HOLD_TIME_S}\nbfd = {bfd}\n\
             [[bgp.neighbor]]\naddress = \"{ROUTER_IP}\"\nremote_as = {ROUTER_AS}\n",
            dr_service(&VIP.into(), &[RS1_IP.into(), RS2_IP.into()], scheduler)
        )
    }
}

/// A DR virtual_server on `vip` over `reals` (port 80, TCP_CHECK) with
/// `scheduler` lines.
fn dr_service(vip: &IpAddr, reals: &[IpAddr], scheduler: &str) -> String {
    let reals: String = reals
        .iter()
        .map(|ip| {
            format!(
                "[[virtual_server.real_server]]\nip = \"{ip}\"\nport = 80\nweight = 1\n\
                 [virtual_server.real_server.tcp_check]\nconnect_timeout = 3\n"
            )
        })
        .collect();
    format!(
        "[[virtual_server]]\nvip = \"{vip}\"\nport = 80\nprotocol = \"TCP\"\ndelay_loop = 2\n\
         {scheduler}\nlb_kind = \"DR\"\n{reals}\n"
    )
}

impl Topology {
    /// scale_out_config with the same service on the IPv6 VIP too (its
    /// servers' IPv6 addresses; announced in the sessions' ipv6 channel).
    pub fn scale_out_config6(&self, scheduler: &str) -> String {
        let config = self.scale_out_config(scheduler, false, false);
        let service6 = dr_service(&VIP6.into(), &[RS1_IP6.into(), RS2_IP6.into()], scheduler);
        // Before [bgp]: a table header ends the virtual_server before it.
        config.replacen("[bgp]\n", &format!("{service6}[bgp]\n"), 1)
    }
}

/// Adds an IPv6 address to `ns`'s outside interface, usable at once.
fn add6(ns: &str, addr: &str) -> Result<()> {
    ip(&["-n", ns, "addr", "add", addr, "dev", OUTSIDE_IFACE, "nodad"]).map(|_| ())
}

/// "172.16.122" of the seed's /24.
fn subnet_base() -> String {
    let [a, b, c, _] = VIP.octets();
    format!("{a}.{b}.{c}")
}
