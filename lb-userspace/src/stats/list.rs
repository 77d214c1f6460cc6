//! ipvsadm -L -n layout (ipvsadm.c print_service_entry / list_all), pure.

use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
};

use lb_common::ForwardKind;

use serde::Serialize;

use super::traffic::Traffic;

/// ForwardKind in JSON: ipvsadm's name for it.
fn forward_json<S: serde::Serializer>(kind: &ForwardKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(forward_name(*kind))
}

/// ipvsadm's version line: we print what ipvsadm 1.2.1 prints, so scripts
/// that parse it keep working.
pub const IPVS_VERSION: &str = "1.2.1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DestView {
    pub ip: IpAddr,
    pub port: u16,
    /// Route, Masq or Tunnel, as ipvsadm's Forward column.
    #[serde(serialize_with = "forward_json")]
    pub forward: ForwardKind,
    pub weight: u32,
    pub active_conns: u64,
    pub inactive_conns: u64,
    /// Totals (or rates) for --stats / --rate.
    pub traffic: Traffic,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceView {
    /// "TCP" or "UDP".
    pub protocol: &'static str,
    pub vip: IpAddr,
    pub port: u16,
    pub scheduler: &'static str,
    /// The scheduler's flags by ipvsadm's names (sh-port, mh-fallback...).
    pub sched_flags: Vec<&'static str>,
    /// persistence_timeout, when set.
    pub persistent: Option<u32>,
    /// persistence_granularity: a netmask, or an IPv6 service's prefix
    /// length (printed when not a single address: HOST_MASKS).
    pub mask: String,
    pub dests: Vec<DestView>,
    pub traffic: Traffic,
}

impl ServiceView {
    /// " persistent N[ mask M]" (ipvsadm -L) or " -p N[ -M M]" (-S): empty
    /// without persistence; the mask only when not a single address.
    pub fn persistence_words(&self, timeout_word: &str, mask_word: &str) -> String {
        let Some(timeout) = self.persistent else {
            return String::new();
        };
        let mut out = format!(" {timeout_word} {timeout}");
        if !HOST_MASKS.contains(&self.mask.as_str()) {
            let _ = write!(out, " {mask_word} {}", self.mask);
        }
        out
    }
}

/// Granularities of one client address, IPv4's and IPv6's: not printed.
pub const HOST_MASKS: [&str; 2] = ["255.255.255.255", "128"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableView {
    /// Size of the connection (flow) table, ipvsadm's "size=".
    pub conn_table_size: u32,
    pub services: Vec<ServiceView>,
}

/// One line of `ipvsadm -L -c -n`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnView {
    pub protocol: &'static str,
    /// Seconds until the connection expires.
    pub expire_s: u64,
    pub state: &'static str,
    pub client: (IpAddr, u16),
    pub virt: (IpAddr, u16),
    pub dest: (IpAddr, u16),
}

/// `ipvsadm -L -c -n` (ipvsadm.c print_conn).
pub fn format_connections(conns: &[ConnView]) -> String {
    let mut out = String::from("IPVS connection entries\n");
    out.push_str("pro expire state       source             virtual            destination\n");
    let addr = |(ip, port): (IpAddr, u16)| SocketAddr::new(ip, port).to_string();
    for c in conns {
        let _ = writeln!(
            out,
            "{:<3} {:02}:{:02}  {:<11} {:<18} {:<18} {}",
            c.protocol,
            c.expire_s / 60,
            c.expire_s % 60,
            c.state,
            addr(c.client),
            addr(c.virt),
            addr(c.dest)
        );
    }
    out
}

/// ipvsadm's Forward column.
pub fn forward_name(kind: ForwardKind) -> &'static str {
    match kind {
        ForwardKind::Dr => "Route",
        ForwardKind::Tun => "Tunnel",
        ForwardKind::Nat => "Masq",
    }
}

/// `ipvsadm -L -n`, byte for byte (including ipvsadm's trailing spaces).
pub fn format_list(table: &TableView) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "IP Virtual Server version {IPVS_VERSION} (size={})",
        table.conn_table_size
    );
    out.push_str("Prot LocalAddress:Port Scheduler Flags\n");
    out.push_str("  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n");
    for svc in &table.services {
        // ipvsadm brackets IPv6 addresses: TCP  [2001:db8::100]:80 rr.
        let _ = write!(
            out,
            "{}  {} {}",
            svc.protocol,
            SocketAddr::new(svc.vip, svc.port),
            svc.scheduler
        );
        if !svc.sched_flags.is_empty() {
            let _ = write!(out, " ({})", svc.sched_flags.join(","));
        }
        out.push_str(&svc.persistence_words("persistent", "mask"));
        out.push('\n');
        for d in &svc.dests {
            let _ = writeln!(
                out,
                "  -> {:<28} {:<7} {:<6} {:<10} {:<10}",
                SocketAddr::new(d.ip, d.port).to_string(),
                forward_name(d.forward),
                d.weight,
                d.active_conns,
                d.inactive_conns
            );
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    pub(crate) fn seed_table() -> TableView {
        let dest = |last: u8| DestView {
            ip: Ipv4Addr::new(172, 16, 122, last).into(),
            port: 80,
            forward: ForwardKind::Dr,
            weight: 1,
            active_conns: 0,
            inactive_conns: 0,
            traffic: Traffic::default(),
        };
        TableView {
            conn_table_size: 4096,
            services: vec![ServiceView {
                protocol: "TCP",
                vip: Ipv4Addr::new(172, 16, 122, 100).into(),
                port: 80,
                scheduler: "rr",
                sched_flags: Vec::new(),
                persistent: None,
                mask: HOST_MASKS[0].to_string(),
                dests: vec![dest(193), dest(195)],
                traffic: Traffic::default(),
            }],
        }
    }

    #[test]
    fn matches_the_seeds_ipvsadm_output() {
        // Section 5.3 of the seed, with -n (numeric) and ipvsadm's padding.
        let expected = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  172.16.122.100:80 rr
  -> 172.16.122.193:80            Route   1      0          0         
  -> 172.16.122.195:80            Route   1      0          0         
";
        assert_eq!(format_list(&seed_table()), expected);
    }

    #[test]
    fn persistent_flag_and_forward_names() {
        let mut t = seed_table();
        t.services[0].persistent = Some(300);
        t.services[0].mask = "255.255.255.0".to_string();
        t.services[0].dests[0].forward = ForwardKind::Nat;
        t.services[0].dests[1].forward = ForwardKind::Tun;
        let out = format_list(&t);
        assert!(
            out.contains("TCP  172.16.122.100:80 rr persistent 300 mask 255.255.255.0\n"),
            "{out}"
        );
        assert!(out.contains(" Masq    1 "), "{out}");
        assert!(out.contains(" Tunnel  1 "), "{out}");
    }

    #[test]
    fn connection_table_in_ipvsadm_layout() {
        let c = ConnView {
            protocol: "TCP",
            expire_s: 899,
            state: "ESTABLISHED",
            client: (Ipv4Addr::new(172, 16, 122, 50).into(), 40000),
            virt: (Ipv4Addr::new(172, 16, 122, 100).into(), 80),
            dest: (Ipv4Addr::new(172, 16, 122, 193).into(), 80),
        };
        assert_eq!(
            format_connections(&[c]),
            "IPVS connection entries\n\
             pro expire state       source             virtual            destination\n\
             TCP 14:59  ESTABLISHED 172.16.122.50:40000 172.16.122.100:80  172.16.122.193:80\n"
        );
    }

    #[test]
    fn json_for_tooling() {
        let json = serde_json::to_value(seed_table()).unwrap();
        let svc = &json["services"][0];
        assert_eq!(svc["vip"], "172.16.122.100");
        assert_eq!(svc["scheduler"], "rr");
        assert_eq!(svc["dests"][1]["ip"], "172.16.122.195");
        assert_eq!(svc["dests"][1]["forward"], "Route");
        assert_eq!(svc["dests"][1]["active_conns"], 0);
        assert_eq!(json["conn_table_size"], 4096);
    }

    #[test]
    fn ipv6_addresses_in_brackets_as_ipvsadm_prints_them() {
        let v6 = |last: u16| {
            IpAddr::from(std::net::Ipv6Addr::new(
                0x2001, 0xdb8, 0x122, 0, 0, 0, 0, last,
            ))
        };
        let mut t = seed_table();
        t.services[0].vip = v6(0x100);
        t.services[0].dests[0].ip = v6(0x193);
        t.services[0].dests.pop();
        let out = format_list(&t);
        assert!(out.contains("\nTCP  [2001:db8:122::100]:80 rr\n"), "{out}");
        // ipvsadm prints an IPv6 service's granularity as its prefix length.
        t.services[0].persistent = Some(300);
        t.services[0].mask = "64".to_string();
        assert!(format_list(&t).contains("rr persistent 300 mask 64\n"));
        t.services[0].mask = "128".to_string();
        assert!(format_list(&t).contains("rr persistent 300\n"));
        assert!(
            out.contains("  -> [2001:db8:122::193]:80       Route   1 "),
            "{out}"
        );
        let c = ConnView {
            protocol: "TCP",
            expire_s: 59,
            state: "SYN_RECV",
            client: (v6(0x50), 40000),
            virt: (v6(0x100), 80),
            dest: (v6(0x193), 80),
        };
        assert!(
            format_connections(&[c]).ends_with(
                "TCP 00:59  SYN_RECV    [2001:db8:122::50]:40000 [2001:db8:122::100]:80 [2001:db8:122::193]:80\n"
            )
        );
    }

    #[test]
    fn a_removed_server_disappears() {
        // Seed section 5.5: .195 stopped -> only .193 listed.
        let mut t = seed_table();
        t.services[0].dests.pop();
        let out = format_list(&t);
        assert!(out.contains("172.16.122.193:80"));
        assert!(!out.contains("172.16.122.195:80"));
    }
}
