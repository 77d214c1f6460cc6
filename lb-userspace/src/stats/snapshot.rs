//! Reads the running agent's pinned maps into a TableView.

use std::{net::Ipv4Addr, path::Path};

use anyhow::{Context as _, Result, anyhow};
use aya::maps::{Array, HashMap, Map, MapData, MapInfo};
use lb_common::{
    BackendSet, ForwardKind, IPPROTO_TCP, RealServer, SchedulerKind, ServiceInfo, ServiceKey,
    pin_names,
};

use super::list::{DestView, ServiceView, TableView};

fn open(pin_dir: &Path, name: &str) -> Result<Map> {
    let path = pin_dir.join(name);
    let data = MapData::from_pin(&path).with_context(|| {
        format!(
            "cannot open {}: is lb-userspace running (and are you root)?",
            path.display()
        )
    })?;
    Ok(Map::from_map_data(data)?)
}

/// Services in config order, each with the destinations of its active set.
pub fn read_table(pin_dir: &Path) -> Result<TableView> {
    let services: HashMap<MapData, ServiceKey, ServiceInfo> =
        HashMap::try_from(open(pin_dir, pin_names::SERVICES)?)?;
    let sets: Array<MapData, BackendSet> =
        Array::try_from(open(pin_dir, pin_names::BACKEND_SETS)?)?;
    let reals: Array<MapData, RealServer> = Array::try_from(open(pin_dir, pin_names::REALS)?)?;
    let conn_table_size = MapInfo::from_pin(pin_dir.join(pin_names::FLOW_TABLE))
        .map(|i| i.max_entries())
        .context("reading the flow table's size")?;

    let mut entries = Vec::new();
    for item in services.iter() {
        let (key, info) = item.context("reading services")?;
        entries.push((key, info));
    }
    entries.sort_by_key(|(_, info)| info.service_id);

    let mut out = Vec::new();
    for (key, info) in entries {
        let set = sets
            .get(&info.backend_set, 0)
            .context("reading a backend set")?;
        let forward = ForwardKind::from_u8(info.forward)
            .ok_or_else(|| anyhow!("unknown forward kind {}", info.forward))?;
        let scheduler = SchedulerKind::from_u8(info.sched)
            .ok_or_else(|| anyhow!("unknown scheduler {}", info.sched))?;
        let mut dests = Vec::new();
        for backend in set.backends.iter().take(set.count as usize) {
            let real = reals
                .get(&backend.real_id, 0)
                .context("reading a real server")?;
            dests.push(DestView {
                ip: Ipv4Addr::from(real.ip.to_ne_bytes()),
                port: u16::from_be(real.port),
                forward,
                weight: backend.weight,
                active_conns: 0,
                inactive_conns: 0,
            });
        }
        out.push(ServiceView {
            protocol: if key.proto == IPPROTO_TCP {
                "TCP"
            } else {
                "UDP"
            },
            vip: Ipv4Addr::from(key.vip.to_ne_bytes()),
            port: u16::from_be(key.port),
            scheduler: scheduler.name(),
            persistent: None,
            dests,
        });
    }
    Ok(TableView {
        conn_table_size,
        services: out,
    })
}
