//! Reads the running agent's pinned maps into a TableView.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use anyhow::{Context as _, Result, anyhow};

use aya::maps::{Array, HashMap, Map, MapData, MapInfo, PerCpuArray};
use lb_common::{
    BackendSet, FlowEntry, FlowKey, FlowKey6, ForwardKind, IPPROTO_TCP, Ipv6Octets, LbGlobals,
    LocalConn, LocalConn6, PersistEntry, PersistKey, PersistKey6, REAL_FLAG_IPV6, RealConns,
    RealServer, SCHED_FLAG_FALLBACK, SCHED_FLAG_HASH_PORT, SchedulerKind, ServiceInfo, ServiceKey,
    ServiceKey6, TrafficStats,
    conntrack::{S_NONE, STATE_NAMES},
    pin_names,
};

use super::{
    list::{ConnView, DestView, ServiceView, TableView},
    traffic::Traffic,
};
use crate::dataplane::monotonic_ns;

/// A live flow of either family: protocol, client, VIP (addresses with
/// ports in host order), its entry and nanoseconds left.
struct LiveFlow {
    proto: u8,
    client: (IpAddr, u16),
    virt: (IpAddr, u16),
    entry: FlowEntry,
    left_ns: u64,
}

/// Every flow not yet expired (the sweep may not have run yet), IPv4's
/// then IPv6's.
fn live_flows(pin_dir: &Path, globals: &LbGlobals) -> Result<Vec<LiveFlow>> {
    let now = monotonic_ns();
    let live = |e: &FlowEntry| e.remaining_ns(globals.timeout_s(e.state), now);
    let flows: HashMap<MapData, FlowKey, FlowEntry> =
        HashMap::try_from(open_pinned(pin_dir, pin_names::FLOW_TABLE)?)?;
    let mut out: Vec<LiveFlow> = flows
        .iter()
        .filter_map(|item| item.ok())
        .filter_map(|(k, e)| {
            Some(LiveFlow {
                proto: k.proto,
                client: (ipv4(k.src).into(), u16::from_be(k.sport)),
                virt: (ipv4(k.dst).into(), u16::from_be(k.dport)),
                left_ns: live(&e)?,
                entry: e,
            })
        })
        .collect();
    if let Some(map) = open_pinned_if_there(pin_dir, pin_names::FLOW_TABLE6)? {
        let flows: HashMap<MapData, FlowKey6, FlowEntry> = HashMap::try_from(map)?;
        out.extend(
            flows
                .iter()
                .filter_map(|item| item.ok())
                .filter_map(|(k, e)| {
                    Some(LiveFlow {
                        proto: k.proto,
                        client: (Ipv6Addr::from(k.src).into(), u16::from_be(k.sport)),
                        virt: (Ipv6Addr::from(k.dst).into(), u16::from_be(k.dport)),
                        left_ns: live(&e)?,
                        entry: e,
                    })
                }),
        );
    }
    Ok(out)
}

fn ipv4(addr: lb_common::Ipv4Octets) -> Ipv4Addr {
    Ipv4Addr::from(addr)
}

/// The reals map and the IPv6 addresses beside it: a server's address and
/// port, of either family.
struct RealsReader {
    reals: Array<MapData, RealServer>,
    addrs6: Option<Array<MapData, Ipv6Octets>>,
}

impl RealsReader {
    fn open(pin_dir: &Path) -> Result<Self> {
        Ok(Self {
            reals: Array::try_from(open_pinned(pin_dir, pin_names::REALS)?)?,
            addrs6: open_pinned_if_there(pin_dir, pin_names::REAL_ADDRS6)?
                .map(Array::try_from)
                .transpose()?,
        })
    }

    fn endpoint(&self, real_id: u32) -> Result<(IpAddr, u16)> {
        let real = self
            .reals
            .get(&real_id, 0)
            .context("reading a real server")?;
        let ip = match &self.addrs6 {
            Some(addrs6) if real.flags & REAL_FLAG_IPV6 != 0 => Ipv6Addr::from(
                addrs6
                    .get(&real_id, 0)
                    .context("reading a real server's IPv6 address")?,
            )
            .into(),
            _ => ipv4(real.ip).into(),
        };
        Ok((ip, u16::from_be(real.port)))
    }
}

/// ipvsadm's name of an IP protocol number.
fn protocol_name(proto: u8) -> &'static str {
    if proto == IPPROTO_TCP { "TCP" } else { "UDP" }
}

/// ipvsadm -L -c's name of a connection state.
fn state_name(state: u8) -> &'static str {
    STATE_NAMES
        .get(state as usize)
        .copied()
        .unwrap_or("UNKNOWN")
}

/// `ipvsadm -L -c -n`: the connection table.
pub fn read_connections(pin_dir: &Path) -> Result<Vec<ConnView>> {
    let reals = RealsReader::open(pin_dir)?;
    let globals = globals_of(pin_dir)?;
    let mut out = Vec::new();
    for flow in live_flows(pin_dir, &globals)? {
        out.push(ConnView {
            protocol: protocol_name(flow.proto),
            expire_s: flow.left_ns / 1_000_000_000,
            state: state_name(flow.entry.state),
            client: flow.client,
            virt: flow.virt,
            dest: reals.endpoint(flow.entry.real_id)?,
        });
    }
    // Persistence templates, as ipvsadm -L -c lists them: state NONE,
    // client port 0, expiring persistence_timeout after their last use.
    let services: HashMap<MapData, ServiceKey, ServiceInfo> =
        HashMap::try_from(open_pinned(pin_dir, pin_names::SERVICES)?)?;
    let mut timeouts: Vec<(u32, u32)> = services
        .iter()
        .filter_map(|item| item.ok())
        .map(|(_, info)| (info.service_id, info.persist_timeout_s))
        .collect();
    if let Some(map) = open_pinned_if_there(pin_dir, pin_names::SERVICES6)? {
        let services6: HashMap<MapData, ServiceKey6, ServiceInfo> = HashMap::try_from(map)?;
        timeouts.extend(
            services6
                .iter()
                .filter_map(|item| item.ok())
                .map(|(_, info)| (info.service_id, info.persist_timeout_s)),
        );
    }
    // (protocol, client network, VIP, VIP's port, template) of both families.
    let mut all: Vec<(u8, IpAddr, IpAddr, u16, PersistEntry)> = Vec::new();
    let templates: HashMap<MapData, PersistKey, PersistEntry> =
        HashMap::try_from(open_pinned(pin_dir, pin_names::PERSIST)?)?;
    for (key, t) in templates.iter().filter_map(|item| item.ok()) {
        let (net, vip) = (ipv4(key.client_net).into(), ipv4(key.vip).into());
        all.push((key.proto, net, vip, key.vport, t));
    }
    if let Some(map) = open_pinned_if_there(pin_dir, pin_names::PERSIST6)? {
        let templates6: HashMap<MapData, PersistKey6, PersistEntry> = HashMap::try_from(map)?;
        for (key, t) in templates6.iter().filter_map(|item| item.ok()) {
            let net = Ipv6Addr::from(key.client_net).into();
            all.push((key.proto, net, Ipv6Addr::from(key.vip).into(), key.vport, t));
        }
    }
    let now = monotonic_ns();
    for (proto, net, vip, vport, t) in all {
        let timeout_s = timeouts
            .iter()
            .find(|(id, _)| *id == t.service_id)
            .map_or(0, |(_, s)| *s);
        let deadline = t.last_seen_ns + u64::from(timeout_s) * 1_000_000_000;
        out.push(ConnView {
            protocol: protocol_name(proto),
            expire_s: deadline.saturating_sub(now) / 1_000_000_000,
            state: STATE_NAMES[S_NONE as usize],
            client: (net, 0),
            virt: (vip, u16::from_be(vport)),
            dest: reals.endpoint(t.real_id)?,
        });
    }
    out.extend(local_connections(pin_dir, &globals)?);
    out.sort_by_key(|c| (c.virt, c.client));
    Ok(out)
}

fn globals_of(pin_dir: &Path) -> Result<LbGlobals> {
    let globals: Array<MapData, LbGlobals> =
        Array::try_from(open_pinned(pin_dir, pin_names::LB_GLOBALS)?)?;
    globals.get(&0, 0).context("reading lb_globals")
}

/// The balancer's own clients' sockets (ipvsadm -L -c lists what IPVS's
/// LOCAL_OUT hook made). A socket does not expire: its state's whole
/// timeout is shown, as IPVS shows it after each packet.
fn local_connections(pin_dir: &Path, globals: &LbGlobals) -> Result<Vec<ConnView>> {
    let conns: HashMap<MapData, u64, LocalConn> =
        HashMap::try_from(open_pinned(pin_dir, pin_names::LOCAL_CONNS)?)?;
    let view = |c: &LocalConn, [client, vip, real]: [IpAddr; 3]| ConnView {
        protocol: protocol_name(c.proto),
        expire_s: u64::from(globals.timeout_s(c.state)),
        state: state_name(c.state),
        client: (client, u16::from_be(c.cport)),
        virt: (vip, u16::from_be(c.vport)),
        dest: (real, u16::from_be(c.rport)),
    };
    let mut views: Vec<ConnView> = conns
        .iter()
        .filter_map(|item| item.ok())
        .map(|(_, c)| view(&c, [c.client, c.vip, c.real].map(|a| ipv4(a).into())))
        .collect();
    let conns6: HashMap<MapData, u64, LocalConn6> =
        HashMap::try_from(open_pinned(pin_dir, pin_names::LOCAL_CONNS6)?)?;
    views.extend(conns6.iter().filter_map(|item| item.ok()).map(|(_, c)| {
        view(
            &c.conn,
            [c.client, c.vip, c.real].map(|a| Ipv6Addr::from(a).into()),
        )
    }));
    Ok(views)
}

/// A stats slot summed over CPUs.
fn traffic(map: &PerCpuArray<MapData, TrafficStats>, id: u32) -> Result<Traffic> {
    let per_cpu = map.get(&id, 0).context("reading traffic statistics")?;
    Ok(per_cpu.iter().fold(Traffic::default(), |t, s| Traffic {
        conns: t.conns + s.conns,
        in_packets: t.in_packets + s.in_packets,
        out_packets: t.out_packets + s.out_packets,
        in_bytes: t.in_bytes + s.in_bytes,
        out_bytes: t.out_bytes + s.out_bytes,
    }))
}

/// ipvsadm's names of the scheduler flags (print_sched_flags order).
fn sched_flag_names(scheduler: SchedulerKind, flags: u8) -> Vec<&'static str> {
    let (fallback, port) = match scheduler {
        SchedulerKind::Sh => ("sh-fallback", "sh-port"),
        SchedulerKind::Mh => ("mh-fallback", "mh-port"),
        _ => return Vec::new(),
    };
    let mut names = Vec::new();
    if flags & SCHED_FLAG_FALLBACK != 0 {
        names.push(fallback);
    }
    if flags & SCHED_FLAG_HASH_PORT != 0 {
        names.push(port);
    }
    names
}

/// The table with per-second rates in place of totals, from two readings
/// `interval` apart (IPVS keeps an estimator in the kernel; here `list
/// --rate` measures).
pub fn read_rates(pin_dir: &Path, interval: std::time::Duration) -> Result<TableView> {
    let before = read_table(pin_dir)?;
    std::thread::sleep(interval);
    let mut after = read_table(pin_dir)?;
    let secs = interval.as_secs_f64();
    for svc in &mut after.services {
        let old = before
            .services
            .iter()
            .find(|s| (s.protocol, s.vip, s.port) == (svc.protocol, svc.vip, svc.port));
        svc.traffic = Traffic::rate(&old.map_or(svc.traffic, |o| o.traffic), &svc.traffic, secs);
        for d in &mut svc.dests {
            let old = old.and_then(|o| o.dests.iter().find(|x| (x.ip, x.port) == (d.ip, d.port)));
            d.traffic = Traffic::rate(&old.map_or(d.traffic, |o| o.traffic), &d.traffic, secs);
        }
    }
    Ok(after)
}

/// The data plane's counters (what it did with packets, and why), summed
/// over CPUs.
pub fn read_counters(pin_dir: &Path) -> Result<[u64; lb_common::counters::COUNTER_COUNT as usize]> {
    let counters: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(open_pinned(pin_dir, pin_names::COUNTERS)?)?;
    crate::dataplane::sum_counters(&counters).context("reading the counters")
}

/// Opens the running agent's pinned map `name` (a pin_names entry): the
/// one way into the pins from outside the agent (list, status, metrics'
/// readers, tests, the bench).
pub fn open_pinned(pin_dir: &Path, name: &str) -> Result<Map> {
    let path = pin_dir.join(name);
    let data = MapData::from_pin(&path).with_context(|| {
        format!(
            "cannot open {}: is lb-userspace running (and are you root)?",
            path.display()
        )
    })?;
    Ok(Map::from_map_data(data)?)
}

/// A pin that agents before IPv6 did not make: None when it is not there.
fn open_pinned_if_there(pin_dir: &Path, name: &str) -> Result<Option<Map>> {
    if pin_dir.join(name).exists() {
        open_pinned(pin_dir, name).map(Some)
    } else {
        Ok(None)
    }
}

/// Services in config order, each with the destinations of its active set.
pub fn read_table(pin_dir: &Path) -> Result<TableView> {
    let services: HashMap<MapData, ServiceKey, ServiceInfo> =
        HashMap::try_from(open_pinned(pin_dir, pin_names::SERVICES)?)?;
    let sets: Array<MapData, BackendSet> =
        Array::try_from(open_pinned(pin_dir, pin_names::BACKEND_SETS)?)?;
    let reals = RealsReader::open(pin_dir)?;
    let service_stats: PerCpuArray<MapData, TrafficStats> =
        PerCpuArray::try_from(open_pinned(pin_dir, pin_names::SERVICE_STATS)?)?;
    let real_stats: PerCpuArray<MapData, TrafficStats> =
        PerCpuArray::try_from(open_pinned(pin_dir, pin_names::REAL_STATS)?)?;
    let conn_table_size = MapInfo::from_pin(pin_dir.join(pin_names::FLOW_TABLE))
        .map(|i| i.max_entries())
        .context("reading the flow table's size")?;

    // (protocol, VIP, port in network order, service) of both families.
    let mut entries: Vec<(u8, IpAddr, u16, ServiceInfo)> = Vec::new();
    for item in services.iter() {
        let (key, info) = item.context("reading services")?;
        entries.push((key.proto, ipv4(key.vip).into(), key.port, info));
    }
    if let Some(map) = open_pinned_if_there(pin_dir, pin_names::SERVICES6)? {
        let services6: HashMap<MapData, ServiceKey6, ServiceInfo> = HashMap::try_from(map)?;
        for item in services6.iter() {
            let (key, info) = item.context("reading IPv6 services")?;
            entries.push((key.proto, Ipv6Addr::from(key.vip).into(), key.port, info));
        }
    }
    entries.sort_by_key(|(_, _, _, info)| info.service_id);

    // The data plane's per-server counters: what its schedulers see.
    let real_conns: Array<MapData, RealConns> =
        Array::try_from(open_pinned(pin_dir, pin_names::REAL_CONNS)?)?;
    let conns = |real_id: u32| -> Result<(u64, u64)> {
        let c = real_conns.get(&real_id, 0).context("reading real_conns")?;
        Ok((c.active.max(0) as u64, c.inactive.max(0) as u64))
    };
    let mut out = Vec::new();
    for (proto, vip, port, info) in entries {
        let set = sets
            .get(&info.backend_set, 0)
            .context("reading a backend set")?;
        let forward = ForwardKind::from_u8(info.forward)
            .ok_or_else(|| anyhow!("unknown forward kind {}", info.forward))?;
        let scheduler = SchedulerKind::from_u8(info.sched)
            .ok_or_else(|| anyhow!("unknown scheduler {}", info.sched))?;
        let mut dests = Vec::new();
        for backend in set.backends.iter().take(set.count as usize) {
            let (ip, port) = reals.endpoint(backend.real_id)?;
            dests.push(DestView {
                ip,
                port,
                forward,
                weight: backend.weight,
                active_conns: conns(backend.real_id)?.0,
                inactive_conns: conns(backend.real_id)?.1,
                traffic: traffic(&real_stats, backend.real_id)?,
            });
        }
        out.push(ServiceView {
            protocol: protocol_name(proto),
            vip,
            port: u16::from_be(port),
            scheduler: scheduler.name(),
            sched_flags: sched_flag_names(scheduler, info.sched_flags),
            persistent: (info.persist_timeout_s != 0).then_some(info.persist_timeout_s),
            // IPv6 services keep the prefix length there (as IPVS).
            mask: if vip.is_ipv6() {
                info.persist_mask.to_string()
            } else {
                ipv4(info.persist_mask.to_ne_bytes()).to_string()
            },
            dests,
            traffic: traffic(&service_stats, info.service_id)?,
        });
    }
    Ok(TableView {
        conn_table_size,
        services: out,
    })
}
