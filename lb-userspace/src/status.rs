//! What the running agent knows that the maps do not: VRRP states, checker
//! states, reloads, flow-table fill. The agent publishes it (a JSON file in
//! the runtime directory, read by `lb-userspace status` and `reload`; the
//! metrics endpoint); rendering it is pure and tested without root.

use std::{fmt::Write as _, net::IpAddr};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub pid: u32,
    /// Serving: attached, privileges dropped, handling events. What a
    /// supervisor or a test waits for after starting the agent.
    #[serde(default)]
    pub ready: bool,
    pub config: String,
    pub reloads: Reloads,
    pub vrrp: Vec<VrrpStatus>,
    pub checks: Vec<CheckStatus>,
    pub fill: MapFill,
    /// Connection sync, when it runs.
    #[serde(default)]
    pub sync: Option<crate::sync::daemon::SyncStats>,
    /// The cgroup the socket-level programs for the balancer's own
    /// clients are attached to; None: local clients are not balanced.
    #[serde(default)]
    pub local_clients: Option<String>,
    /// Scale-out over BGP, when [bgp] is configured.
    #[serde(default)]
    pub bgp: Option<BgpStatus>,
}

/// What the agent announces and how its BGP sessions are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BgpStatus {
    /// VIPs announced now.
    pub announced: Vec<IpAddr>,
    /// The sessions as BIRD last reported them.
    pub sessions: Vec<crate::bgp::birdc::Session>,
    /// `lb-userspace drain`: withdrawn on purpose.
    pub drain: Option<DrainStatus>,
    /// Connection sync's catch-up holds the announcements back.
    pub catching_up: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DrainStatus {
    /// Seconds since the drain began.
    pub for_s: u64,
    /// Connections still ESTABLISHED in this balancer's table (ActiveConn;
    /// those ECMP moved elsewhere stay until they expire).
    pub active_conns: u64,
    /// Seconds since the last packet this balancer forwarded: the routers
    /// have stopped sending here once it stays up.
    pub quiet_s: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reloads {
    pub ok: u64,
    pub failed: u64,
    /// "ok: what changed" or the reason the last one was refused.
    pub last: Option<String>,
}

impl Reloads {
    pub fn attempts(&self) -> u64 {
        self.ok + self.failed
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VrrpStatus {
    pub name: String,
    /// INIT, BACKUP, MASTER, FAULT.
    pub state: String,
    pub vrid: u8,
    pub priority: u8,
    pub vips: Vec<IpAddr>,
    pub transitions: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckStatus {
    /// "TCP 172.16.122.100:80", as ipvsadm names a service.
    pub service: String,
    pub real: std::net::IpAddr,
    pub port: u16,
    /// TCP_CHECK, HTTP_GET, MISC_CHECK or none.
    pub checker: String,
    pub healthy: bool,
    /// In the service's backend set now.
    pub active: bool,
    pub weight: u32,
    /// Up/down transitions since the checker started.
    pub transitions: u64,
    pub sorry_server: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MapFill {
    /// Flows at the last expiry sweep.
    pub flows: u64,
    pub flow_capacity: u32,
    pub services: u32,
    pub service_capacity: u32,
    pub reals: u32,
    pub real_capacity: u32,
}

fn percent(used: u64, capacity: u64) -> f64 {
    if capacity == 0 {
        0.0
    } else {
        used as f64 * 100.0 / capacity as f64
    }
}

impl AgentStatus {
    /// `lb-userspace status`: one view of VRRP, checkers and map fill.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "lb-userspace pid {}, config {}", self.pid, self.config);
        let r = &self.reloads;
        let _ = writeln!(
            out,
            "reloads: {} ok, {} refused{}",
            r.ok,
            r.failed,
            r.last
                .as_ref()
                .map_or(String::new(), |l| format!("; last: {l}"))
        );
        let _ = writeln!(out, "\nVRRP");
        if self.vrrp.is_empty() {
            let _ = writeln!(out, "  (no vrrp_instance: every VIP is served)");
        }
        for v in &self.vrrp {
            let vips: Vec<String> = v.vips.iter().map(|a| a.to_string()).collect();
            let _ = writeln!(
                out,
                "  {:<12} {:<7} vrid {:<3} priority {:<3} transitions {:<4} VIPs {}",
                v.name,
                v.state,
                v.vrid,
                v.priority,
                v.transitions,
                vips.join(" ")
            );
        }
        let _ = writeln!(out, "\nCheckers");
        let mut last_service = "";
        for c in &self.checks {
            if c.service != last_service {
                let _ = writeln!(out, "  {}", c.service);
                last_service = &c.service;
            }
            let _ = writeln!(
                out,
                "    {:<21} {:<10} {:<4} {:<8} weight {:<5} transitions {}{}",
                std::net::SocketAddr::new(c.real, c.port).to_string(),
                c.checker,
                if c.healthy { "UP" } else { "DOWN" },
                if c.active { "serving" } else { "out" },
                c.weight,
                c.transitions,
                if c.sorry_server {
                    " (sorry server)"
                } else {
                    ""
                }
            );
        }
        if let Some(sync) = &self.sync {
            let _ = writeln!(out, "\nConnection sync (syncid {})", sync.syncid);
            let peers: Vec<String> = sync
                .peers
                .iter()
                .map(|(p, heard)| format!("{p} ({} whole tables)", heard.full_passes))
                .collect();
            let drops: Vec<String> = sync.drops.iter().map(|(r, n)| format!("{r} {n}")).collect();
            let _ = writeln!(
                out,
                "  role {}{}; sent {} messages ({} connections, {} whole tables); received {} messages ({} connections), {} applied",
                sync.role,
                if sync.catch_up.is_empty() {
                    String::new()
                } else {
                    format!(", catch-up {}", sync.catch_up)
                },
                sync.sent_messages,
                sync.sent_conns,
                sync.full_passes_sent,
                sync.received_messages,
                sync.received_conns,
                sync.applied_conns
            );
            let _ = writeln!(
                out,
                "  peers {}; dropped {}",
                if peers.is_empty() {
                    "none".into()
                } else {
                    peers.join(" ")
                },
                if drops.is_empty() {
                    "nothing".into()
                } else {
                    drops.join(", ")
                }
            );
        }
        if let Some(bgp) = &self.bgp {
            let vips: Vec<String> = bgp.announced.iter().map(|v| v.to_string()).collect();
            let _ = writeln!(
                out,
                "\nBGP: announcing {}{}",
                if vips.is_empty() {
                    "nothing".to_string()
                } else {
                    vips.join(" ")
                },
                match (&bgp.drain, bgp.catching_up) {
                    (Some(d), _) => format!(
                        " (draining for {} s; nothing forwarded for {} s; ActiveConn {})",
                        d.for_s, d.quiet_s, d.active_conns
                    ),
                    (None, true) => " (waiting for connection sync's catch-up)".to_string(),
                    (None, false) => String::new(),
                }
            );
            for s in &bgp.sessions {
                let _ = writeln!(
                    out,
                    "  neighbor {:<15} {:<6} {}",
                    s.neighbor, s.state, s.info
                );
            }
        }
        let _ = writeln!(
            out,
            "\nLocal clients: {}",
            self.local_clients.as_ref().map_or(
                "not balanced (no socket programs attached)".to_string(),
                |cgroup| format!("balanced at connect()/sendto() (socket programs on {cgroup})")
            )
        );
        let f = &self.fill;
        let _ = writeln!(out, "\nMaps");
        for (name, used, capacity) in [
            ("flows", f.flows, u64::from(f.flow_capacity)),
            (
                "services",
                u64::from(f.services),
                u64::from(f.service_capacity),
            ),
            (
                "real servers",
                u64::from(f.reals),
                u64::from(f.real_capacity),
            ),
        ] {
            let _ = writeln!(
                out,
                "  {name:<13} {used:>9} of {capacity:<9} ({:.1}%)",
                percent(used, capacity)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn renders_vrrp_checkers_and_fill() {
        let status = AgentStatus {
            pid: 42,
            ready: true,
            sync: None,
            config: "/etc/lb/lb.toml".into(),
            reloads: Reloads {
                ok: 2,
                failed: 1,
                last: Some("ok: no virtual server changed".into()),
            },
            vrrp: vec![VrrpStatus {
                name: "VI_1".into(),
                state: "MASTER".into(),
                vrid: 51,
                priority: 100,
                vips: vec![Ipv4Addr::new(172, 16, 122, 100).into()],
                transitions: 1,
            }],
            checks: vec![CheckStatus {
                service: "TCP 172.16.122.100:80".into(),
                real: Ipv4Addr::new(172, 16, 122, 193).into(),
                port: 80,
                checker: "TCP_CHECK".into(),
                healthy: false,
                active: false,
                weight: 1,
                transitions: 3,
                sorry_server: false,
            }],
            fill: MapFill {
                flows: 16384,
                flow_capacity: 65536,
                services: 1,
                service_capacity: 512,
                reals: 2,
                real_capacity: 4095,
            },
            local_clients: Some("/sys/fs/cgroup/unified".into()),
            bgp: Some(BgpStatus {
                announced: vec![Ipv4Addr::new(172, 16, 122, 100).into()],
                sessions: vec![crate::bgp::birdc::Session {
                    neighbor: Ipv4Addr::new(172, 16, 122, 1),
                    state: "up".into(),
                    since: "10:26:31.700".into(),
                    info: "Established".into(),
                }],
                drain: Some(DrainStatus {
                    for_s: 12,
                    active_conns: 3,
                    quiet_s: 4,
                }),
                catching_up: false,
            }),
        };
        let text = status.render();
        for expected in [
            "Local clients: balanced at connect()/sendto() (socket programs on /sys/fs/cgroup/unified)",
            "BGP: announcing 172.16.122.100 (draining for 12 s; nothing forwarded for 4 s; ActiveConn 3)\n  neighbor 172.16.122.1    up     Established",
            "reloads: 2 ok, 1 refused; last: ok: no virtual server changed",
            "VI_1         MASTER  vrid 51  priority 100 transitions 1    VIPs 172.16.122.100",
            "  TCP 172.16.122.100:80\n    172.16.122.193:80     TCP_CHECK  DOWN out      weight 1     transitions 3",
            "flows             16384 of 65536     (25.0%)",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        let json = serde_json::to_string(&status).unwrap();
        assert_eq!(serde_json::from_str::<AgentStatus>(&json).unwrap(), status);
    }
}
