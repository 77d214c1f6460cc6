//! `--metrics-listen ADDR:PORT`: Prometheus metrics at GET /metrics, encoded
//! by prometheus-client (OpenMetrics text, which Prometheus scrapes). Each
//! scrape reads the pinned maps (the same snapshot `list` prints) and the
//! agent's published status; `render` is pure and tested without root.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context as _, Result};
use lb_common::counters::{COUNTER_COUNT, COUNTER_NAMES};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tracing::{debug, warn};

use super::{list::TableView, snapshot, traffic::Traffic};
use crate::status::AgentStatus;

/// The path Prometheus scrapes.
const METRICS_PATH: &str = "/metrics";
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// A request larger than this is not a scrape.
const MAX_REQUEST: usize = 8 * 1024;
/// A client that sends nothing for this long is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, String)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// Registers a family under `name` and returns it for filling.
fn family<M>(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, M>
where
    M: prometheus_client::encoding::EncodeMetric
        + prometheus_client::metrics::TypedMetric
        + Clone
        + Default
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let f = Family::<Labels, M>::default();
    registry.register(name, help, f.clone());
    f
}

/// Packets and bytes (by direction) and connections of one kind of thing
/// (virtual services, real servers): `lb_<kind>_packets` and so on.
struct TrafficFamilies {
    packets: Family<Labels, Counter>,
    bytes: Family<Labels, Counter>,
    conns: Family<Labels, Counter>,
}

impl TrafficFamilies {
    fn register(r: &mut Registry, kind: &str, what: &str) -> Self {
        Self {
            packets: family(
                r,
                &format!("{kind}_packets"),
                &format!("Packets per {what} and direction"),
            ),
            bytes: family(
                r,
                &format!("{kind}_bytes"),
                &format!("Bytes per {what} and direction"),
            ),
            conns: family(
                r,
                &format!("{kind}_connections"),
                &format!("Connections scheduled per {what}"),
            ),
        }
    }

    /// One thing's traffic under `base` labels (+ direction).
    fn record(&self, base: &Labels, t: &Traffic) {
        for (dir, packets, bytes) in [
            ("in", t.in_packets, t.in_bytes),
            ("out", t.out_packets, t.out_bytes),
        ] {
            let mut l = base.clone();
            l.push(("direction".into(), dir.into()));
            self.packets.get_or_create(&l).inc_by(packets);
            self.bytes.get_or_create(&l).inc_by(bytes);
        }
        self.conns.get_or_create(base).inc_by(t.conns);
    }
}

/// The metrics text for one scrape.
pub fn render(
    table: &TableView,
    counters: &[u64; COUNTER_COUNT as usize],
    status: &AgentStatus,
) -> Result<String> {
    let mut r = Registry::with_prefix("lb");
    let services = TrafficFamilies::register(&mut r, "service", "virtual service");
    let reals = TrafficFamilies::register(&mut r, "real", "real server");
    let active = family::<Gauge>(
        &mut r,
        "real_active_connections",
        "ActiveConn (ipvsadm -L -n)",
    );
    let inactive = family::<Gauge>(
        &mut r,
        "real_inactive_connections",
        "InActConn (ipvsadm -L -n)",
    );
    let weight = family::<Gauge>(&mut r, "real_weight", "Weight in the backend set");
    for svc in &table.services {
        let service = labels(&[
            ("protocol", svc.protocol.to_string()),
            ("vip", svc.vip.to_string()),
            ("port", svc.port.to_string()),
        ]);
        services.record(&service, &svc.traffic);
        for d in &svc.dests {
            let mut l = service.clone();
            l.push(("real".into(), d.ip.to_string()));
            l.push(("real_port".into(), d.port.to_string()));
            reals.record(&l, &d.traffic);
            active.get_or_create(&l).set(d.active_conns as i64);
            inactive.get_or_create(&l).set(d.inactive_conns as i64);
            weight.get_or_create(&l).set(i64::from(d.weight));
        }
    }
    let healthy = family::<Gauge>(
        &mut r,
        "real_healthy",
        "1 when the real server's checker says UP",
    );
    let serving = family::<Gauge>(
        &mut r,
        "real_serving",
        "1 when the real server is in its service's backend set",
    );
    let changes = family::<Counter>(
        &mut r,
        "real_health_transitions",
        "UP/DOWN transitions of the real server's checker",
    );
    for c in &status.checks {
        let (protocol, service) = c.service.split_once(' ').unwrap_or(("", &c.service));
        let l = labels(&[
            ("protocol", protocol.to_string()),
            ("service", service.to_string()),
            ("real", c.real.to_string()),
            ("real_port", c.port.to_string()),
            ("checker", c.checker.clone()),
        ]);
        healthy.get_or_create(&l).set(i64::from(c.healthy));
        serving.get_or_create(&l).set(i64::from(c.active));
        changes.get_or_create(&l).inc_by(c.transitions);
    }
    let vrrp_state = family::<Gauge>(
        &mut r,
        "vrrp_state",
        "1 for the VRRP instance's current state, 0 for the others",
    );
    let vrrp_changes = family::<Counter>(
        &mut r,
        "vrrp_transitions",
        "VRRP state changes of the instance",
    );
    for v in &status.vrrp {
        for state in ["INIT", "BACKUP", "MASTER", "FAULT"] {
            let l = labels(&[("instance", v.name.clone()), ("state", state.to_string())]);
            vrrp_state
                .get_or_create(&l)
                .set(i64::from(v.state == state));
        }
        vrrp_changes
            .get_or_create(&labels(&[("instance", v.name.clone())]))
            .inc_by(v.transitions);
    }
    let dataplane = family::<Counter>(
        &mut r,
        "dataplane_packets",
        "Packets by what the XDP program did with them (pass_*/drop_* give the reason)",
    );
    for (name, value) in COUNTER_NAMES.iter().zip(counters) {
        dataplane
            .get_or_create(&labels(&[("reason", name.to_string())]))
            .inc_by(*value);
    }
    if let Some(sync) = &status.sync {
        let role = family::<Gauge>(
            &mut r,
            "sync_role",
            "1 for connection sync's current role (master, backup, both, idle)",
        );
        for name in ["master", "backup", "both", "idle"] {
            role.get_or_create(&labels(&[("role", name.to_string())]))
                .set(i64::from(sync.role == name));
        }
        let messages = family::<Counter>(&mut r, "sync_messages", "IPVS sync messages");
        let conns = family::<Counter>(
            &mut r,
            "sync_connections",
            "Connection records in sync messages",
        );
        for (direction, m, c) in [
            ("sent", sync.sent_messages, sync.sent_conns),
            ("received", sync.received_messages, sync.received_conns),
        ] {
            let l = labels(&[("direction", direction.to_string())]);
            messages.get_or_create(&l).inc_by(m);
            conns.get_or_create(&l).inc_by(c);
        }
        let applied = Counter::<u64>::default();
        applied.inc_by(sync.applied_conns);
        r.register(
            "sync_applied_connections",
            "Received records written into this balancer's tables",
            applied,
        );
        let drops = family::<Counter>(
            &mut r,
            "sync_drops",
            "Sync datagrams or records dropped, by reason",
        );
        for (reason, n) in &sync.drops {
            drops
                .get_or_create(&labels(&[("reason", reason.clone())]))
                .inc_by(*n);
        }
        let peers = Gauge::<i64>::default();
        peers.set(sync.peers.len() as i64);
        r.register("sync_peers", "Balancers heard from", peers);
        let passes = family::<Counter>(
            &mut r,
            "sync_full_tables",
            "Full announcements of a connection table (catch-up), sent or heard ended",
        );
        passes
            .get_or_create(&labels(&[("direction", "sent".to_string())]))
            .inc_by(sync.full_passes_sent);
        passes
            .get_or_create(&labels(&[("direction", "received".to_string())]))
            .inc_by(sync.peers.values().map(|p| p.full_passes).sum());
        let catching_up = Gauge::<i64>::default();
        catching_up.set(i64::from(sync.catch_up == "running"));
        r.register(
            "sync_catching_up",
            "1 while this balancer catches up on its peers' connection tables",
            catching_up,
        );
    }
    if let Some(bgp) = &status.bgp {
        let announced = family::<Gauge>(
            &mut r,
            "bgp_announced",
            "1 for each VIP this balancer announces over BGP",
        );
        for vip in &bgp.announced {
            announced
                .get_or_create(&labels(&[("vip", vip.to_string())]))
                .set(1);
        }
        let sessions = family::<Gauge>(
            &mut r,
            "bgp_session_established",
            "1 while the BGP session to the neighbor is Established",
        );
        for s in &bgp.sessions {
            sessions
                .get_or_create(&labels(&[("neighbor", s.neighbor.to_string())]))
                .set(i64::from(s.established()));
        }
        let draining = Gauge::<i64>::default();
        draining.set(i64::from(bgp.drain.is_some()));
        r.register(
            "draining",
            "1 while `lb-userspace drain` holds the VIPs withdrawn",
            draining,
        );
    }
    let fill = family::<Gauge>(&mut r, "map_entries", "Entries in use per map");
    let capacity = family::<Gauge>(&mut r, "map_capacity", "Entries each map holds");
    let f = &status.fill;
    for (map, used, cap) in [
        ("flow_table", f.flows, u64::from(f.flow_capacity)),
        (
            "services",
            u64::from(f.services),
            u64::from(f.service_capacity),
        ),
        ("reals", u64::from(f.reals), u64::from(f.real_capacity)),
    ] {
        let l = labels(&[("map", map.to_string())]);
        fill.get_or_create(&l).set(used as i64);
        capacity.get_or_create(&l).set(cap as i64);
    }
    let reloads = family::<Counter>(&mut r, "reloads", "Config reloads by result");
    for (result, n) in [
        ("ok", status.reloads.ok),
        ("refused", status.reloads.failed),
    ] {
        reloads
            .get_or_create(&labels(&[("result", result.to_string())]))
            .inc_by(n);
    }
    let mut out = String::new();
    encode(&mut out, &r).context("encoding the metrics")?;
    Ok(out)
}

pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("--metrics-listen {addr}: cannot listen there"))
}

/// Serves scrapes until the agent stops.
pub async fn serve(listener: TcpListener, pin_dir: PathBuf, status: watch::Receiver<AgentStatus>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!("metrics: accept failed: {e}");
                continue;
            }
        };
        let (pin_dir, status) = (pin_dir.clone(), status.clone());
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &pin_dir, &status).await {
                debug!("metrics: {peer}: {e:#}");
            }
        });
    }
}

/// One HTTP/1.x exchange, then close (Prometheus reconnects per scrape).
async fn answer(
    mut stream: TcpStream,
    pin_dir: &std::path::Path,
    status: &watch::Receiver<AgentStatus>,
) -> Result<()> {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(REQUEST_TIMEOUT, stream.read(&mut buf))
            .await
            .context("request timed out")??;
        if n == 0 || request.len() + n > MAX_REQUEST {
            anyhow::bail!("incomplete or oversized request");
        }
        request.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&request);
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (code, content_type, body) = if method != "GET" {
        (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_string(),
        )
    } else if path != METRICS_PATH {
        (
            "404 Not Found",
            "text/plain",
            format!("metrics are at {METRICS_PATH}\n"),
        )
    } else {
        let scrape = (|| {
            let table = snapshot::read_table(pin_dir)?;
            let counters = snapshot::read_counters(pin_dir)?;
            render(&table, &counters, &status.borrow())
        })();
        match scrape {
            Ok(text) => ("200 OK", CONTENT_TYPE, text),
            Err(e) => (
                "500 Internal Server Error",
                "text/plain",
                format!("{e:#}\n"),
            ),
        }
    };
    let head = format!(
        "HTTP/1.1 {code}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use lb_common::ForwardKind;

    use super::*;
    use crate::{
        stats::{
            list::{DestView, ServiceView},
            traffic::Traffic,
        },
        status::{CheckStatus, VrrpStatus},
    };

    #[test]
    fn renders_traffic_health_vrrp_reasons_and_fill() {
        let traffic = Traffic {
            conns: 7,
            in_packets: 70,
            out_packets: 0,
            in_bytes: 7000,
            out_bytes: 0,
        };
        let table = TableView {
            conn_table_size: 65536,
            services: vec![ServiceView {
                protocol: "TCP",
                vip: Ipv4Addr::new(10, 0, 0, 100).into(),
                port: 80,
                scheduler: "rr",
                sched_flags: vec![],
                persistent: None,
                mask: crate::stats::list::HOST_MASKS[0].to_string(),
                dests: vec![DestView {
                    ip: Ipv4Addr::new(10, 0, 0, 1).into(),
                    port: 80,
                    forward: ForwardKind::Dr,
                    weight: 3,
                    active_conns: 2,
                    inactive_conns: 1,
                    traffic,
                }],
                traffic,
            }],
        };
        let mut counters = [0u64; COUNTER_COUNT as usize];
        counters[lb_common::counters::DROP_NO_REAL as usize] = 5;
        let status = AgentStatus {
            vrrp: vec![VrrpStatus {
                name: "VI_1".into(),
                state: "MASTER".into(),
                vrid: 51,
                priority: 100,
                vips: vec![],
                transitions: 2,
            }],
            checks: vec![CheckStatus {
                service: "TCP 10.0.0.100:80".into(),
                real: Ipv4Addr::new(10, 0, 0, 1).into(),
                port: 80,
                checker: "TCP_CHECK".into(),
                healthy: true,
                active: true,
                weight: 3,
                transitions: 1,
                sorry_server: false,
            }],
            sync: Some(crate::sync::daemon::SyncStats {
                role: "backup".into(),
                syncid: 51,
                sent_messages: 0,
                sent_conns: 0,
                received_messages: 4,
                received_conns: 40,
                applied_conns: 38,
                full_passes_sent: 0,
                peers: [(
                    Ipv4Addr::new(10, 0, 0, 2),
                    crate::sync::daemon::PeerHeard {
                        messages: 4,
                        full_passes: 3,
                    },
                )]
                .into(),
                catch_up: "running".into(),
                drops: [("unknown_service".to_string(), 2)].into(),
            }),
            bgp: Some(crate::status::BgpStatus {
                announced: vec![Ipv4Addr::new(10, 0, 0, 100).into()],
                sessions: vec![crate::bgp::birdc::Session {
                    neighbor: Ipv4Addr::new(10, 0, 0, 254),
                    state: "up".into(),
                    since: "10:26:31.700".into(),
                    info: "Established".into(),
                }],
                drain: None,
                catching_up: false,
            }),
            ..AgentStatus::default()
        };
        let text = render(&table, &counters, &status).unwrap();
        for expected in [
            "# TYPE lb_service_packets counter",
            r#"lb_service_packets_total{protocol="TCP",vip="10.0.0.100",port="80",direction="in"} 70"#,
            r#"lb_real_active_connections{protocol="TCP",vip="10.0.0.100",port="80",real="10.0.0.1",real_port="80"} 2"#,
            r#"lb_real_weight{protocol="TCP",vip="10.0.0.100",port="80",real="10.0.0.1",real_port="80"} 3"#,
            r#"lb_real_healthy{protocol="TCP",service="10.0.0.100:80",real="10.0.0.1",real_port="80",checker="TCP_CHECK"} 1"#,
            r#"lb_vrrp_state{instance="VI_1",state="MASTER"} 1"#,
            r#"lb_vrrp_state{instance="VI_1",state="BACKUP"} 0"#,
            r#"lb_dataplane_packets_total{reason="drop_no_real"} 5"#,
            r#"lb_map_capacity{map="flow_table"} 0"#,
            r#"lb_sync_role{role="backup"} 1"#,
            r#"lb_sync_messages_total{direction="received"} 4"#,
            r#"lb_sync_connections_total{direction="received"} 40"#,
            r#"lb_sync_applied_connections_total 38"#,
            r#"lb_sync_drops_total{reason="unknown_service"} 2"#,
            r#"lb_sync_peers 1"#,
            r#"lb_sync_full_tables_total{direction="received"} 3"#,
            r#"lb_sync_catching_up 1"#,
            r#"lb_bgp_announced{vip="10.0.0.100"} 1"#,
            r#"lb_bgp_session_established{neighbor="10.0.0.254"} 1"#,
            r#"lb_draining 0"#,
            "# EOF",
        ] {
            assert!(text.contains(expected), "missing {expected} in\n{text}");
        }
    }
}
