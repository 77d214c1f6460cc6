//! Connection sync's costs: what reporting a new connection adds to the
//! data plane's new-flow path, and how many records one agent encodes and
//! sends, and another decodes and applies, per second (one core each).

use std::{net::UdpSocket, time::Instant};

use lb_userspace::sync::{
    codec::{SyncConn, conn_flags, decode, encode},
    records::entry_of,
};

use lb_common::FLOW_TABLE_DEFAULT_SIZE;

use super::*;

/// Connections per measurement: each a new source, so every run is a new
/// tracked flow (scheduled, inserted, and with sync on, reported).
const FLOWS: u32 = 20_000;
const QUICK_FLOWS: u32 = 5_000;
/// The first address of the sources (RFC 2544's benchmarking range).
const SOURCES: u32 = 0xc612_0000;
/// A datagram as the defaults make it (MTU 1500 - 28).
const MAXLEN: usize = 1472;

fn syn_from(i: u32) -> Vec<u8> {
    Ipv4Packet::tcp(
        std::net::Ipv4Addr::from(SOURCES + i),
        40000,
        VIP,
        PORT,
        TCP_SYN,
        b"",
    )
    .frame()
}

/// ns per new tracked flow (one BPF_PROG_TEST_RUN each), sync off or on.
fn new_flows(frames: &[Vec<u8>], sync: bool) -> Result<f64> {
    let mut t = ProgTest::seed()?;
    let mut ring = if sync { Some(t.enable_sync()?) } else { None };
    let prog = t.dp.program()?;
    let start = Instant::now();
    for f in frames {
        run_once(prog, f, 0)?;
    }
    let ns = start.elapsed().as_nanos() as f64 / frames.len() as f64;
    if let Some(ring) = ring.as_mut() {
        let mut reported = 0;
        while ring.next().is_some() {
            reported += 1;
        }
        if reported != frames.len() {
            return Err(anyhow!("{reported} of {} new flows reported", frames.len()));
        }
    }
    Ok(ns)
}

fn record(i: u32) -> SyncConn {
    SyncConn {
        protocol: lb_common::IPPROTO_TCP,
        flags: conn_flags::DROUTE,
        state: 1,
        cport: 40000,
        vport: PORT,
        dport: PORT,
        fwmark: 0,
        timeout_s: 900,
        caddr: std::net::Ipv4Addr::from(SOURCES + i).into(),
        vaddr: VIP.into(),
        daddr: RS1_IP.into(),
    }
}

pub fn bench(budget: &Budget, results: &mut bench_report::Results) -> Result<()> {
    const SECTION: &str = "Connection sync (new tracked flows through BPF_PROG_TEST_RUN, one run each; the agent's records per second, one core)";
    let n = if budget.rounds < FULL.rounds {
        QUICK_FLOWS
    } else {
        FLOWS
    };
    let frames: Vec<Vec<u8>> = (0..n).map(syn_from).collect();
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for _ in 0..budget.rounds {
        off.push(new_flows(&frames, false)?);
        on.push(new_flows(&frames, true)?);
    }
    let (off, on) = (median(&mut off), median(&mut on));
    results.push(SECTION, "new tracked flow, sync off", off, None);
    results.push(
        SECTION,
        "new tracked flow, sync on (reported to the agent)",
        on,
        Some(("sync off", off)),
    );

    // Sending: records encoded into datagrams and sent (loopback UDP).
    let records: Vec<SyncConn> = (0..n * 10).map(record).collect();
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    let sink = UdpSocket::bind("127.0.0.1:0")?;
    sink.set_nonblocking(true)?;
    let to = sink.local_addr()?;
    let start = Instant::now();
    let datagrams = encode(51, &records, MAXLEN);
    for d in &datagrams {
        socket.send_to(d, to)?;
    }
    let send_ns = start.elapsed().as_nanos() as f64 / records.len() as f64;
    results.push(SECTION, "send a record (encode + sendto)", send_ns, None);

    // Applying: datagrams decoded, mapped to entries, written (into a
    // table that holds them all: a full run's 200,000 exceed the default).
    let mut t = ProgTest::with_service_and(
        seed_service([1, 1]),
        &lb_userspace::dataplane::LoadOptions {
            flow_table_size: u32::try_from(records.len())?.max(FLOW_TABLE_DEFAULT_SIZE),
            ..Default::default()
        },
    )?;
    let plan = lb_userspace::planning::plan::Plan {
        services: vec![t.service.clone()],
    };
    let start = Instant::now();
    let mut applied = 0;
    for d in &datagrams {
        let msg = decode(d).map_err(|e| anyhow!("{e}"))?;
        let entries: Vec<_> = msg
            .conns
            .iter()
            .filter_map(|c| entry_of(&plan, c, 0).ok())
            .collect();
        applied += t.dp.apply_synced(&entries)?;
    }
    let apply_ns = start.elapsed().as_nanos() as f64 / records.len() as f64;
    if applied != records.len() as u64 {
        return Err(anyhow!("{applied} of {} records applied", records.len()));
    }
    results.push(
        SECTION,
        "apply a received record (decode + flow-table write)",
        apply_ns,
        None,
    );
    results.notes.push(format!(
        "connection sync: reporting a new connection adds {:.0} ns to its first packet; one agent \
         sends {:.0}k records/s and another applies {:.0}k records/s (one core each)",
        on - off,
        1e6 / send_ns,
        1e6 / apply_ns
    ));
    Ok(())
}
