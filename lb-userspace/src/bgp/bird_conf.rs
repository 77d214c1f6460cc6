//! The BIRD 2 configuration the agent runs BIRD with, pure: one static
//! protocol holding the announced VIPs (blackhole routes in BIRD's own
//! table; no kernel protocol, so nothing is installed on this host) and one
//! BGP session per neighbor that exports exactly those, next hop self.

use std::{fmt::Write as _, net::Ipv4Addr};

/// The static protocol's name: BGP exports only its routes.
pub const VIPS_PROTOCOL: &str = "lb_vips";
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

/// The whole file, for `vips` announced.
pub fn render(s: &BirdSettings, vips: &[Ipv4Addr]) -> String {
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
    for vip in vips {
        let _ = writeln!(out, "  route {vip}/32 blackhole;");
    }
    out.push_str("}\n\n");
    if s.bfd {
        out.push_str("protocol bfd { }\n\n");
    }
    for n in &s.neighbors {
        let _ = writeln!(
            out,
            "protocol bgp {} {{\n  local {} as {};\n  neighbor {} as {};\n  hold time {};\n  \
             keepalive time {};\n  connect retry time {CONNECT_RETRY_S};\n{}  ipv4 {{\n    \
             import none;\n    export where proto = \"{VIPS_PROTOCOL}\";\n    next hop self;\n  }};\n}}\n",
            protocol_name(n.address),
            s.source,
            s.local_as,
            n.address,
            n.remote_as,
            s.hold_time_s,
            (s.hold_time_s / KEEPALIVES_PER_HOLD).max(1),
            if s.bfd { "  bfd on;\n" } else { "" },
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
        }
    }

    #[test]
    fn announces_exactly_the_vips_to_every_neighbor() {
        let text = render(&settings(false), &[Ipv4Addr::new(172, 16, 122, 100)]);
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
