//! The BIRD 2 configuration the agent runs BIRD with, pure: one static
//! protocol per family holding the announced VIPs (blackhole routes in
//! BIRD's own tables; no kernel protocol, so nothing is installed on this
//! host) and one BGP session per neighbor that exports exactly those: IPv4
//! VIPs next hop self, IPv6 VIPs in an ipv6 channel of the same session
//! (multiprotocol BGP, RFC 4760) with the interface's global IPv6 address
//! as next hop.

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// The static protocols' names: BGP exports only their routes.
pub const VIPS_PROTOCOL: &str = "lb_vips";
pub const VIPS6_PROTOCOL: &str = "lb_vips6";
/// BGP keepalives every hold_time / KEEPALIVES_PER_HOLD (RFC 4271's
/// suggested third).
const KEEPALIVES_PER_HOLD: u32 = 3;
/// Seconds between attempts to reach a neighbor that is not up (BIRD's
/// default is 120: a returning balancer would wait two minutes).
const CONNECT_RETRY_S: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbor {
    pub address: Ipv4Addr,
    pub remote_as: u32,
}

/// What BIRD is told besides the VIPs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirdSettings {
    pub router_id: Ipv4Addr,
    /// The balancer's address the sessions come from (and next hop self).
    pub source: Ipv4Addr,
    pub local_as: u32,
    pub hold_time_s: u32,
    pub bfd: bool,
    pub neighbors: Vec<Neighbor>,
    /// Next hop of the IPv6 VIPs (the interface's global IPv6 address);
    /// None: no ipv6 channel, IPv6 VIPs are not announced.
    pub next_hop6: Option<Ipv6Addr>,
}

/// BIRD's protocol name for a neighbor: this + its address with `_` for
/// `.` ("n_172_16_122_1"); birdc.rs reads the address back from it.
pub const NEIGHBOR_PROTOCOL_PREFIX: &str = "n_";

pub fn protocol_name(address: Ipv4Addr) -> String {
    format!(
        "{NEIGHBOR_PROTOCOL_PREFIX}{}",
        address.to_string().replace('.', "_")
    )
}

/// The neighbor of one of our protocol names.
pub fn neighbor_of(protocol: &str) -> Option<Ipv4Addr> {
    protocol
        .strip_prefix(NEIGHBOR_PROTOCOL_PREFIX)?
        .replace('_', ".")
        .parse()
        .ok()
}

/// The whole file, for `vips` announced (IPv6 ones only with next_hop6).
pub fn render(s: &BirdSettings, vips: &[IpAddr]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Written by lb-userspace; rewritten on every change of the announced VIPs.\n\
         log stderr {{ info, remote, warning, error, auth, fatal, bug }};\n\
         router id {};\n\
         protocol device {{ }}\n",
        s.router_id
    );
    let _ = writeln!(out, "protocol static {VIPS_PROTOCOL} {{\n  ipv4;");
    for vip in vips.iter().filter(|v| v.is_ipv4()) {
        let _ = writeln!(out, "  route {vip}/32 blackhole;");
    }
    out.push_str("}\n\n");
    if s.next_hop6.is_some() {
        let _ = writeln!(out, "protocol static {VIPS6_PROTOCOL} {{\n  ipv6;");
        for vip in vips.iter().filter(|v| v.is_ipv6()) {
            let _ = writeln!(out, "  route {vip}/128 blackhole;");
        }
        out.push_str("}\n\n");
    }
    if s.bfd {
        out.push_str("protocol bfd { }\n\n");
    }
    for n in &s.neighbors {
        let _ = writeln!(
            out,
            "protocol bgp {} {{\n  local {} as {};\n  neighbor {} as {};\n  hold time {};\n  \
             keepalive time {};\n  connect retry time {CONNECT_RETRY_S};\n{}  ipv4 {{\n    \
             import none;\n    export where proto = \"{VIPS_PROTOCOL}\";\n    next hop self;\n  }};\n{}}}\n",
            protocol_name(n.address),
            s.source,
            s.local_as,
            n.address,
            n.remote_as,
            s.hold_time_s,
            (s.hold_time_s / KEEPALIVES_PER_HOLD).max(1),
            if s.bfd { "  bfd on;\n" } else { "" },
            s.next_hop6
                .map(|hop| format!(
                    "  ipv6 {{\n    import none;\n    export where proto = \"{VIPS6_PROTOCOL}\";\n    \
                     next hop address {hop};\n  }};\n"
                ))
                .unwrap_or_default(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(bfd: bool) -> BirdSettings {
        BirdSettings {
            router_id: Ipv4Addr::new(172, 16, 122, 188),
            source: Ipv4Addr::new(172, 16, 122, 188),
            local_as: 65010,
            hold_time_s: 3,
            bfd,
            neighbors: vec![Neighbor {
                address: Ipv4Addr::new(172, 16, 122, 1),
                remote_as: 65000,
            }],
            next_hop6: None,
        }
    }

    #[test]
    fn announces_exactly_the_vips_to_every_neighbor() {
        let text = render(&settings(false), &[Ipv4Addr::new(172, 16, 122, 100).into()]);
        assert_eq!(
            text,
            "# Written by lb-userspace; rewritten on every change of the announced VIPs.\n\
             log stderr { info, remote, warning, error, auth, fatal, bug };\n\
             router id 172.16.122.188;\n\
             protocol device { }\n\n\
             protocol static lb_vips {\n  ipv4;\n  route 172.16.122.100/32 blackhole;\n}\n\n\
             protocol bgp n_172_16_122_1 {\n  local 172.16.122.188 as 65010;\n  \
             neighbor 172.16.122.1 as 65000;\n  hold time 3;\n  keepalive time 1;\n  \
             connect retry time 2;\n  ipv4 {\n    import none;\n    \
             export where proto = \"lb_vips\";\n    next hop self;\n  };\n}\n\n"
        );
    }

    #[test]
    fn ipv6_vips_go_in_an_ipv6_channel_of_the_same_session() {
        let vips: [IpAddr; 2] = [
            Ipv4Addr::new(172, 16, 122, 100).into(),
            "2001:db8:122::100".parse().unwrap(),
        ];
        // Without an IPv6 next hop: no ipv6 channel, the IPv6 VIP left out.
        let text = render(&settings(false), &vips);
        assert!(
            !text.contains("ipv6") && !text.contains("2001:db8"),
            "{text}"
        );
        let with6 = BirdSettings {
            next_hop6: Some("2001:db8:122::188".parse().unwrap()),
            ..settings(false)
        };
        let text = render(&with6, &vips);
        assert!(
            text.contains(
                "protocol static lb_vips6 {\n  ipv6;\n  route 2001:db8:122::100/128 blackhole;\n}\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "  };\n  ipv6 {\n    import none;\n    export where proto = \"lb_vips6\";\n    \
                 next hop address 2001:db8:122::188;\n  };\n}\n"
            ),
            "{text}"
        );
        assert!(text.contains("  route 172.16.122.100/32 blackhole;\n"));
    }

    #[test]
    fn a_protocol_name_gives_its_neighbor_back() {
        let router = Ipv4Addr::new(172, 16, 122, 1);
        assert_eq!(neighbor_of(&protocol_name(router)), Some(router));
        assert_eq!(neighbor_of("device1"), None);
    }

    #[test]
    fn nothing_to_announce_keeps_the_sessions_and_bfd_is_per_session() {
        let text = render(&settings(true), &[]);
        assert!(text.contains("protocol static lb_vips {\n  ipv4;\n}\n"));
        assert!(text.contains("protocol bfd { }"));
        assert!(text.contains("  bfd on;\n"));
        assert!(text.contains("protocol bgp n_172_16_122_1"));
    }
}
