//! The lb.toml schema (../shared/docs/lb-toml.md): keepalived.conf's keywords
//! in TOML. Unknown keys are errors; values validate themselves (values.rs);
//! rules that span several keys are in validate.rs.

use serde::Deserialize;
use std::net::IpAddr;
use toml::Spanned;

use super::values::{Bounded, Granularity, IpWithPrefix, Port, Seconds, Weight};

/// keepalived's checker defaults (keepalived.conf(5)).
pub const DEFAULT_CONNECT_TIMEOUT: Seconds = Seconds::from_secs(5);
pub const DEFAULT_RETRY: u32 = 1;
pub const DEFAULT_DELAY_BEFORE_RETRY: Seconds = Seconds::from_secs(1);
pub const DEFAULT_HTTP_DELAY_BEFORE_RETRY: Seconds = Seconds::from_secs(3);
pub const DEFAULT_DELAY_LOOP: Seconds = Seconds::from_secs(60);
/// ipvsadm -p without a value.
pub const DEFAULT_PERSISTENCE_TIMEOUT: u32 = 300;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub global: Global,
    #[serde(default)]
    pub vrrp_instance: Vec<Spanned<VrrpInstance>>,
    #[serde(default)]
    pub virtual_server: Vec<Spanned<VirtualServer>>,
    pub timeouts: Option<Timeouts>,
    /// lb extension: announce the VIPs over BGP (through BIRD) for
    /// active-active balancers behind ECMP.
    pub bgp: Option<Spanned<Bgp>>,
}

/// `[bgp]`: what BIRD, run by the agent, says to the routers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bgp {
    pub local_as: u32,
    /// Default: the interface's address.
    pub router_id: Option<std::net::Ipv4Addr>,
    /// Seconds; default 3 (BIRD's minimum).
    #[serde(default = "default_bgp_hold_time")]
    pub hold_time: Bounded<3, 65535>,
    /// BFD to every neighbor (BIRD's bfd protocol).
    #[serde(default)]
    pub bfd: bool,
    /// Empty is an error (validate.rs says so, by name).
    #[serde(default)]
    pub neighbor: Vec<BgpNeighbor>,
}

/// The hold time a new [bgp] gets: BIRD's smallest (3 s), a dead
/// balancer's VIPs leave the routers within it.
pub const DEFAULT_BGP_HOLD_TIME: i64 = 3;

fn default_bgp_hold_time() -> Bounded<3, 65535> {
    Bounded(DEFAULT_BGP_HOLD_TIME)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpNeighbor {
    pub address: std::net::Ipv4Addr,
    pub remote_as: u32,
}

/// keepalived's global_defs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Global {
    pub router_id: Option<String>,
    #[serde(default)]
    pub notification_email: Vec<String>,
    pub notification_email_from: Option<String>,
    /// host or host:port
    pub smtp_server: Option<String>,
    pub smtp_connect_timeout: Option<Seconds>,
    /// lb extension: outer source address of LVS-TUN packets (default: the
    /// interface's own address).
    pub tunnel_source: Option<std::net::Ipv4Addr>,
    /// lb extension: the same for IPv6 TUN services (default: the
    /// interface's own global IPv6 address).
    pub tunnel_source6: Option<std::net::Ipv6Addr>,
    /// keepalived's lvs_sync_daemon: connection sync with the other
    /// balancers (IPVS's sync protocol).
    pub lvs_sync_daemon: Option<Spanned<LvsSyncDaemon>>,
}

/// `lvs_sync_daemon IF [VRRP_INSTANCE] [id N] [maxlen N] [port N] [ttl N]
/// [group IP]`, keepalived's arguments as keys; defaults as keepalived's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LvsSyncDaemon {
    /// Where sync messages go out and come in.
    pub interface: String,
    /// Send while this instance is MASTER, receive while BACKUP; without
    /// one, both at once (active-active).
    pub vrrp_instance: Option<String>,
    /// The sync id (0..=255; a receiver with id 0 accepts every id).
    /// Default: the instance's virtual_router_id, else 0.
    pub id: Option<u8>,
    /// Largest sync datagram payload; default the interface's MTU - 28.
    pub maxlen: Option<u16>,
    /// Default 8848.
    pub port: Option<u16>,
    /// Multicast TTL, default 1.
    pub ttl: Option<u8>,
    /// Multicast group, default 224.0.0.81.
    pub group: Option<std::net::Ipv4Addr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum VrrpState {
    #[serde(rename = "MASTER")]
    Master,
    #[serde(rename = "BACKUP")]
    Backup,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum AuthType {
    #[serde(rename = "PASS")]
    Pass,
    #[serde(rename = "AH")]
    Ah,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authentication {
    pub auth_type: AuthType,
    /// keepalived uses the first 8 characters.
    pub auth_pass: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VrrpInstance {
    pub name: String,
    pub state: VrrpState,
    /// Defaults to --iface.
    pub interface: Option<String>,
    pub virtual_router_id: Bounded<1, 255>,
    /// 255 = address owner.
    pub priority: Bounded<1, 255>,
    #[serde(default = "default_advert_int")]
    pub advert_int: Seconds,
    #[serde(default = "default_vrrp_version")]
    pub version: Bounded<2, 3>,
    #[serde(default)]
    pub nopreempt: bool,
    #[serde(default = "zero_seconds")]
    pub preempt_delay: Seconds,
    pub authentication: Option<Authentication>,
    pub virtual_ipaddress: Vec<IpWithPrefix>,
    #[serde(default)]
    pub unicast_peer: Vec<IpAddr>,
    pub notify_master: Option<String>,
    pub notify_backup: Option<String>,
    pub notify_fault: Option<String>,
    pub notify: Option<String>,
    #[serde(default)]
    pub track_interface: Vec<String>,
}

fn default_advert_int() -> Seconds {
    Seconds::from_secs(1)
}
fn default_vrrp_version() -> Bounded<2, 3> {
    Bounded(2)
}
fn zero_seconds() -> Seconds {
    Seconds::from_secs(0)
}
fn default_delay_loop() -> Seconds {
    DEFAULT_DELAY_LOOP
}
fn default_quorum() -> Bounded<1, 65535> {
    Bounded(1)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
pub enum Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
}

impl Protocol {
    /// ipvsadm's column.
    pub fn ipvsadm_name(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
        }
    }
}

/// lb_kind: the LVS forwarding method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum LbKind {
    #[serde(rename = "NAT")]
    Nat,
    #[serde(rename = "DR")]
    Dr,
    #[serde(rename = "TUN")]
    Tun,
}

/// lb_algo: the IPVS scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LbAlgo {
    Rr,
    Wrr,
    Lc,
    Wlc,
    Lblc,
    Lblcr,
    Dh,
    Sh,
    Sed,
    Nq,
    Mh,
    Fo,
    Ovf,
    Twos,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SorryServer {
    pub ip: IpAddr,
    pub port: Port,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualServer {
    pub vip: IpAddr,
    /// 0 = all ports (only with persistence).
    pub port: Port,
    pub protocol: Protocol,
    #[serde(default = "default_delay_loop")]
    pub delay_loop: Seconds,
    pub lb_algo: LbAlgo,
    pub lb_kind: LbKind,
    /// Seconds, 0 = off.
    #[serde(default)]
    pub persistence_timeout: u32,
    /// None: a single client address (255.255.255.255, or 128 for IPv6).
    #[serde(default)]
    pub persistence_granularity: Option<Granularity>,
    /// keepalived's sh-port / mh-port: sh and mh hash the client's port too.
    #[serde(default, rename = "sh-port", alias = "sh_port")]
    pub sh_port: bool,
    /// keepalived's sh-fallback: sh tries other buckets when the hashed
    /// server is unavailable.
    #[serde(default, rename = "sh-fallback", alias = "sh_fallback")]
    pub sh_fallback: bool,
    #[serde(default, rename = "mh-port", alias = "mh_port")]
    pub mh_port: bool,
    #[serde(default, rename = "mh-fallback", alias = "mh_fallback")]
    pub mh_fallback: bool,
    #[serde(default)]
    pub inhibit_on_failure: bool,
    #[serde(default)]
    pub alpha: bool,
    #[serde(default = "default_quorum")]
    pub quorum: Bounded<1, 65535>,
    pub sorry_server: Option<SorryServer>,
    #[serde(default)]
    pub real_server: Vec<Spanned<RealServer>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealServer {
    pub ip: IpAddr,
    pub port: Port,
    #[serde(default)]
    pub weight: Weight,
    pub tcp_check: Option<TcpCheck>,
    pub http_get: Option<HttpGet>,
    pub misc_check: Option<MiscCheck>,
}

impl RealServer {
    /// How many checkers are configured (at most one is allowed).
    pub fn checker_count(&self) -> usize {
        [
            self.tcp_check.is_some(),
            self.http_get.is_some(),
            self.misc_check.is_some(),
        ]
        .into_iter()
        .filter(|c| *c)
        .count()
    }
}

/// keepalived TCP_CHECK.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpCheck {
    pub connect_timeout: Option<Seconds>,
    #[serde(alias = "nb_get_retry")]
    pub retry: Option<u32>,
    pub delay_before_retry: Option<Seconds>,
    pub connect_port: Option<Port>,
    pub connect_ip: Option<IpAddr>,
    pub bindto: Option<IpAddr>,
}

/// One url block of HTTP_GET.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpUrl {
    pub path: String,
    pub status_code: Option<Bounded<100, 599>>,
    /// MD5 of the body, 32 hex digits.
    pub digest: Option<String>,
}

/// keepalived HTTP_GET.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpGet {
    pub url: Vec<HttpUrl>,
    pub connect_timeout: Option<Seconds>,
    #[serde(alias = "nb_get_retry")]
    pub retry: Option<u32>,
    pub delay_before_retry: Option<Seconds>,
    pub connect_port: Option<Port>,
    pub connect_ip: Option<IpAddr>,
    pub bindto: Option<IpAddr>,
}

/// keepalived MISC_CHECK.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MiscCheck {
    pub misc_path: String,
    pub misc_timeout: Option<Seconds>,
    #[serde(default)]
    pub misc_dynamic: bool,
}

/// ipvsadm --set tcp tcpfin udp (seconds).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    #[serde(default = "default_tcp_timeout")]
    pub tcp: Bounded<1, { u32::MAX as i64 }>,
    #[serde(default = "default_tcpfin_timeout")]
    pub tcpfin: Bounded<1, { u32::MAX as i64 }>,
    #[serde(default = "default_udp_timeout")]
    pub udp: Bounded<1, { u32::MAX as i64 }>,
}

fn default_tcp_timeout() -> Bounded<1, { u32::MAX as i64 }> {
    Bounded(900)
}
fn default_tcpfin_timeout() -> Bounded<1, { u32::MAX as i64 }> {
    Bounded(120)
}
fn default_udp_timeout() -> Bounded<1, { u32::MAX as i64 }> {
    Bounded(300)
}
