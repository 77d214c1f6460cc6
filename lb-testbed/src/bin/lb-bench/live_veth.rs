//! Live forwarding through a veth pair, in a namespace of our own, on one
//! core: the bench thread is pinned to the CPU it runs on, and the veths'
//! receive work (NAPI) runs in that CPU's softirqs.
//!
//! One flow: the program itself runs in BPF_PROG_TEST_RUN's live-frames
//! mode as if each frame arrived on `lbv0` (what xdp-trafficgen does);
//! XDP_TX sends it out of lbv0 to its peer `lbv1`, where an XDP_DROP program
//! (native mode: veth delivers XDP_TX only to a peer with an XDP program) is
//! the sink. Mpps = 1000 / ns per packet.
//!
//! Many sources: the traffic generator (lb_testbed::trafficgen) sends TCP
//! SYNs or UDP datagrams from 131,072 source addresses out of lbv0; the
//! program under test, attached to lbv1, forwards them (XDP_TX) back to
//! lbv0, whose XDP_DROP is the sink. The same pipeline with the no-op
//! XDP_TX in the balancer's place is the limit; ns per forwarded frame =
//! the run's wall time / frames that reached the sink.

use super::*;
use aya::programs::XdpMode;
use lb_testbed::{
    netns,
    progtest::on_one_core,
    trafficgen::{TrafficGen, xdp_md},
};
use lb_userspace::{config::Protocol, dataplane::LoadOptions};
use std::{fs::File, process::Command};

const GEN: &str = "lbv0";
const SINK: &str = "lbv1";
/// Distinct sources the generator draws from (198.18.0.0/15).
const SOURCES: u32 = 1 << 17;
/// Room for every generated flow: the pipeline measures forwarding, not
/// the full-table path.
const PIPELINE_FLOW_TABLE: u32 = 2 * SOURCES;
/// Frames per pipeline run, --quick or not: each run of the generator
/// sets up its page pool, which shorter runs do not amortise (100,000
/// frames measured twice the per-frame time of 1M).
const PIPELINE_FRAMES: u32 = 1_000_000;
/// An UDP payload that makes the frame as long as the TCP ones (60 bytes,
/// 64 on the wire).
const UDP_PAYLOAD: [u8; 18] = [0; 18];

/// Frames an XDP_DROP program on `iface` consumed (ethtool -S: veth's
/// rx_queue_N_xdp_drops), summed over queues.
fn xdp_drops(iface: &str) -> u64 {
    Command::new("ethtool")
        .args(["-S", iface])
        .output()
        .map_or(0, |out| {
            sum_xdp_drops(&String::from_utf8_lossy(&out.stdout))
        })
}

/// The sum of the rx_queue_N_xdp_drops lines of `ethtool -S` output.
pub fn sum_xdp_drops(ethtool_stats: &str) -> u64 {
    ethtool_stats
        .lines()
        .filter(|l| l.contains("xdp_drops"))
        .filter_map(|l| l.split(':').nth(1)?.trim().parse::<u64>().ok())
        .sum()
}

fn time(prog: &mut Xdp, frame: &[u8], ifindex: u32, repeat: u32) -> Result<f64> {
    let ctx = xdp_md(frame.len(), ifindex);
    time_xdp_ctx(prog, frame, repeat, Mode::LiveFrames, Some(&ctx))
}

pub fn bench(
    budget: &Budget,
    baselines: &mut Baselines,
    dr: &mut ProgTest,
    hit: &[u8],
    miss: &[u8],
    results: &mut bench_report::Results,
) -> Result<()> {
    let ns = format!("lbtp{}", std::process::id());
    let outcome = (|| -> Result<()> {
        netns::create_with_veth(&ns, GEN, SINK)?;
        // This thread enters the namespace: interface indexes, the
        // attach and the live frames all resolve in it.
        let netns = File::open(format!("/var/run/netns/{ns}"))?;
        let host = File::open("/proc/self/ns/net")?;
        nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)?;
        let measured = on_one_core(|cpu| {
            results.notes.push(format!(
                "live forwarding: the bench thread pinned to CPU {cpu}; the veths' receive work runs in its softirqs: every Mpps figure is one core's"
            ));
            one_flow(budget, baselines, dr, hit, miss, results)?;
            many_sources(budget, baselines, results)?;
            established_flows(budget, baselines, results)
        });
        nix::sched::setns(&host, nix::sched::CloneFlags::CLONE_NEWNET)?;
        measured
    })();
    netns::destroy_namespace(&ns);
    outcome
}

fn one_flow(
    budget: &Budget,
    baselines: &mut Baselines,
    dr: &mut ProgTest,
    hit: &[u8],
    miss: &[u8],
    results: &mut bench_report::Results,
) -> Result<()> {
    const SECTION: &str = "Live forwarding through a veth pair, one flow (one core, live frames)";
    let gen_index = nix::net::if_::if_nametoindex(GEN)?;
    let sink = baselines.prog("xdp_drop")?;
    let link = sink.attach(SINK, XdpMode::Driver)?;
    let (mut tx, mut pass, mut lb_hit, mut lb_miss) = (vec![], vec![], vec![], vec![]);
    let sunk_before = xdp_drops(SINK);
    for _ in 0..budget.rounds {
        tx.push(time(
            baselines.prog("xdp_tx")?,
            hit,
            gen_index,
            budget.repeat,
        )?);
        pass.push(time(
            baselines.prog("xdp_pass")?,
            miss,
            gen_index,
            budget.repeat,
        )?);
        lb_hit.push(time(dr.dp.program()?, hit, gen_index, budget.repeat)?);
        lb_miss.push(time(dr.dp.program()?, miss, gen_index, budget.repeat)?);
    }
    // What XDP_TX sent (the baseline's and the balancer's) reached the sink.
    let sent = 2 * budget.rounds as u64 * u64::from(budget.repeat);
    let sunk = xdp_drops(SINK).saturating_sub(sunk_before);
    baselines.prog("xdp_drop")?.detach(link)?;
    let (tx, pass) = (median(&mut tx), median(&mut pass));
    let (lb_hit, lb_miss) = (median(&mut lb_hit), median(&mut lb_miss));
    results.push(SECTION, "baseline XDP_TX out of the veth", tx, None);
    results.push(
        SECTION,
        "lb: DR forward out of the veth",
        lb_hit,
        Some(("XDP_TX veth", tx)),
    );
    results.push(SECTION, "baseline XDP_PASS to the stack", pass, None);
    results.push(
        SECTION,
        "lb: not a service, to the stack",
        lb_miss,
        Some(("XDP_PASS veth", pass)),
    );
    results.notes.push(format!(
        "live forwarding, one flow: the sink veth's XDP program received {sunk} of the {sent} frames sent with XDP_TX"
    ));
    results.notes.push(format!(
        "live forwarding, one flow, one core: lb DR {:.2} Mpps vs no-op XDP_TX {:.2} Mpps ({:.0}% of the limit); \
         non-service traffic {:.2} Mpps vs XDP_PASS {:.2} Mpps",
        1e3 / lb_hit,
        1e3 / tx,
        100.0 * tx / lb_hit,
        1e3 / lb_miss,
        1e3 / pass,
    ));
    Ok(())
}

/// One run of the many-sources pipeline with `prog` on lbv1: (wall ns,
/// frames that reached the sink on lbv0).
fn pipeline(
    traffic: &mut TrafficGen,
    prog: &mut Xdp,
    frame: &[u8],
    count: u32,
) -> Result<(f64, u64)> {
    let gen_index = nix::net::if_::if_nametoindex(GEN)?;
    let link = prog.attach(SINK, XdpMode::Driver)?;
    let before = xdp_drops(GEN);
    let took = traffic.send(gen_index, frame, count);
    let sunk = xdp_drops(GEN).saturating_sub(before);
    prog.detach(link)?;
    Ok((took?.as_nanos() as f64, sunk))
}

/// A balancer with the seed's service over `protocol`, its flow table big
/// enough for every source.
fn pipeline_balancer(protocol: Protocol) -> Result<ProgTest> {
    let mut service = seed_service([1, 1]);
    service.protocol = protocol;
    ProgTest::with_service_and(
        service,
        &LoadOptions {
            flow_table_size: PIPELINE_FLOW_TABLE,
            ..LoadOptions::default()
        },
    )
}

/// A many-sources case: the frame the generator varies and what the
/// balancer does with it.
struct Case<'a> {
    name: &'a str,
    frame: &'a [u8],
    /// The no-op program in the balancer's place.
    baseline: &'static str,
    udp: bool,
    /// Forwarded to the sink (else passed to lbv1's stack, which drops it:
    /// then ns are per frame sent).
    forwarded: bool,
}

/// ns per frame of one pipeline run.
fn per_frame(case: &Case, wall_ns: f64, sunk: u64, sent: u32) -> Result<f64> {
    if !case.forwarded {
        return Ok(wall_ns / f64::from(sent));
    }
    if sunk == 0 {
        return Err(anyhow!("{}: no frame reached the sink", case.name));
    }
    Ok(wall_ns / sunk as f64)
}

/// What interleaved pipeline rounds of one case measured.
struct Rounds {
    /// Median ns per frame with the no-op in the balancer's place.
    base: f64,
    /// Median ns per frame with the balancer.
    ours: f64,
    /// Frames the balancer's runs sent, and how many reached the sink.
    sent: u64,
    sunk: u64,
}

/// `budget.rounds` pipeline runs of `case`, the no-op then `lb`, interleaved.
fn rounds(
    budget: &Budget,
    traffic: &mut TrafficGen,
    baselines: &mut Baselines,
    lb: &mut ProgTest,
    case: &Case,
) -> Result<Rounds> {
    let (mut base, mut ours) = (vec![], vec![]);
    let (mut sent, mut sunk) = (0u64, 0u64);
    for _ in 0..budget.rounds {
        let prog = baselines.prog(case.baseline)?;
        let (ns, n) = pipeline(traffic, prog, case.frame, PIPELINE_FRAMES)?;
        base.push(per_frame(case, ns, n, PIPELINE_FRAMES)?);
        let (ns, n) = pipeline(traffic, lb.dp.program()?, case.frame, PIPELINE_FRAMES)?;
        ours.push(per_frame(case, ns, n, PIPELINE_FRAMES)?);
        sent += u64::from(PIPELINE_FRAMES);
        sunk += n;
    }
    Ok(Rounds {
        base: median(&mut base),
        ours: median(&mut ours),
        sent,
        sunk,
    })
}

/// Runs `measure` with the sink (XDP_DROP) on the generator's veth, and
/// takes the sink off again whatever happened.
fn with_sink(
    baselines: &mut Baselines,
    measure: impl FnOnce(&mut Baselines) -> Result<()>,
) -> Result<()> {
    let sink = baselines.prog("xdp_drop")?.attach(GEN, XdpMode::Driver)?;
    let measured = measure(baselines);
    baselines.prog("xdp_drop")?.detach(sink)?;
    measured
}

fn many_sources(
    budget: &Budget,
    baselines: &mut Baselines,
    results: &mut bench_report::Results,
) -> Result<()> {
    const SECTION: &str = "Live forwarding, 131,072 sources (generator -> veth -> program -> veth -> sink, all on one core)";
    let mut traffic = TrafficGen::load()?;
    let mut tcp_lb = pipeline_balancer(Protocol::Tcp)?;
    let mut udp_lb = pipeline_balancer(Protocol::Udp)?;
    let syn = Ipv4Packet::tcp(CLIENT_IP, 40000, VIP, PORT, TCP_SYN, &[0u8; 6]).frame();
    let udp = Ipv4Packet::udp(CLIENT_IP, 40000, VIP, PORT, &UDP_PAYLOAD).frame();
    let not_service = Ipv4Packet::tcp(CLIENT_IP, 40000, VIP, 22, TCP_SYN, &[0u8; 6]).frame();
    let cases = [
        Case {
            name: "TCP SYN",
            frame: &syn,
            baseline: "xdp_tx",
            udp: false,
            forwarded: true,
        },
        Case {
            name: "UDP",
            frame: &udp,
            baseline: "xdp_tx",
            udp: true,
            forwarded: true,
        },
        Case {
            name: "not a service, to the stack",
            frame: &not_service,
            baseline: "xdp_pass",
            udp: false,
            forwarded: false,
        },
    ];
    with_sink(baselines, |baselines| {
        for case in &cases {
            let lb = if case.udp { &mut udp_lb } else { &mut tcp_lb };
            let Rounds {
                base,
                ours,
                sent,
                sunk,
            } = rounds(budget, &mut traffic, baselines, lb, case)?;
            let label = format!("{} pipeline", case.baseline);
            results.push(
                SECTION,
                &format!("{} in the balancer's place, {}", case.baseline, case.name),
                base,
                None,
            );
            results.push(
                SECTION,
                &format!("lb, {}", case.name),
                ours,
                Some((&label, base)),
            );
            let delivered = if case.forwarded {
                format!(
                    "; {:.1}% of the frames lb forwarded reached the sink",
                    100.0 * sunk as f64 / sent as f64
                )
            } else {
                String::new()
            };
            results.notes.push(format!(
                "many sources, {}: lb's own cost in the pipeline {:.0} ns/frame (pipeline {:.2} Mpps vs {:.2} Mpps \
                 with {} in its place){delivered}",
                case.name,
                ours - base,
                1e3 / ours,
                1e3 / base,
                case.baseline,
            ));
            eprintln!("  live, many sources: {} measured", case.name);
        }
        Ok(())
    })
}

/// Established flows the pipeline spreads its frames over (powers of two:
/// the generator masks a random number): 16K, 128K, 1M.
const ESTABLISHED: [u32; 3] = [1 << 14, 1 << 17, 1 << 20];

/// What production sees: every frame an ACK of another of N established
/// flows (filler clients 10.0.0.0 + i, all in the flow table), so the
/// flow-table lookup misses the caches as N grows; next to xdp_tx in the
/// balancer's place on the same pipeline.
/// xdp_flow_lookup (lb-ebpf's baselines) with its table sized and filled
/// as the balancer's under measure.
struct FlowLookup(aya::Ebpf);

impl FlowLookup {
    const PROGRAM: &str = "xdp_flow_lookup";
    const MAP: &str = "BASELINE_FLOWS";

    fn load(
        size: u32,
        flows: impl Iterator<Item = (lb_common::FlowKey, lb_common::FlowEntry)>,
    ) -> Result<Self> {
        let mut ebpf = aya::EbpfLoader::new()
            .map_max_entries(Self::MAP, size)
            .load(lb_userspace::dataplane::BASELINES_OBJECT)
            .context("loading xdp_flow_lookup")?;
        let program: &mut Xdp = ebpf
            .program_mut(Self::PROGRAM)
            .ok_or_else(|| anyhow!("no {}", Self::PROGRAM))?
            .try_into()?;
        program.load()?;
        let mut table: aya::maps::HashMap<_, lb_common::FlowKey, lb_common::FlowEntry> =
            aya::maps::HashMap::try_from(
                ebpf.map_mut(Self::MAP)
                    .ok_or_else(|| anyhow!("no {}", Self::MAP))?,
            )?;
        for (key, entry) in flows {
            table.insert(key, entry, 0)?;
        }
        Ok(Self(ebpf))
    }

    fn program(&mut self) -> Result<&mut Xdp> {
        Ok(self
            .0
            .program_mut(Self::PROGRAM)
            .ok_or_else(|| anyhow!("no {}", Self::PROGRAM))?
            .try_into()?)
    }
}

fn established_flows(
    budget: &Budget,
    baselines: &mut Baselines,
    results: &mut bench_report::Results,
) -> Result<()> {
    const SECTION: &str = "Live forwarding, each frame an ACK of a random one of N established flows (generator -> veth -> program -> veth -> sink, one core)";
    let frame = Ipv4Packet::tcp(CLIENT_IP, FILLER_PORT, VIP, PORT, TCP_ACK, &[0u8; 6]).frame();
    let case = Case {
        name: "established flows",
        frame: &frame,
        baseline: "xdp_tx",
        udp: false,
        forwarded: true,
    };
    with_sink(baselines, |baselines| {
        for n in ESTABLISHED {
            eprintln!("  live, established flows: filling {n}");
            let mut traffic =
                TrafficGen::from_clients(std::net::Ipv4Addr::from(FILLER_NET), n - 1)?;
            let mut lb = ProgTest::with_service_and(
                seed_service([1, 1]),
                &LoadOptions {
                    flow_table_size: n,
                    ..LoadOptions::default()
                },
            )?;
            let entry = seed_flow_entry(lb_common::conntrack::S_ESTABLISHED, 0);
            lb.dp
                .insert_flows((0..n).map(|i| (filler_flow_key(i), entry)))?;
            let mut lookup = FlowLookup::load(n, (0..n).map(|i| (filler_flow_key(i), entry)))?;
            let Rounds { base, ours, .. } =
                rounds(budget, &mut traffic, baselines, &mut lb, &case)?;
            let mut bare = Vec::new();
            for _ in 0..budget.rounds {
                let (ns, sunk) =
                    pipeline(&mut traffic, lookup.program()?, case.frame, PIPELINE_FRAMES)?;
                bare.push(per_frame(&case, ns, sunk, PIPELINE_FRAMES)?);
            }
            let bare = median(&mut bare);
            // Every frame was a hit: none made a new flow.
            let counters = lb.counters()?;
            let new = counters[lb_common::counters::FLOW_NEW as usize];
            if new != 0 {
                return Err(anyhow!(
                    "{n} established flows: {new} frames made a new flow"
                ));
            }
            let label = format!("{} pipeline", case.baseline);
            results.push(
                SECTION,
                &format!("xdp_tx in the balancer's place, {n} flows"),
                base,
                None,
            );
            results.push(
                SECTION,
                &format!("parse + one flow-table lookup (xdp_flow_lookup), {n} flows"),
                bare,
                Some((&label, base)),
            );
            results.push(
                SECTION,
                &format!("lb: DR hit, {n} established flows"),
                ours,
                Some((&label, base)),
            );
            let percent = 100.0 * base / ours;
            results.notes.push(format!(
                "{n} established flows, a random one per frame: lb {:.2} Mpps vs {:.2} Mpps with xdp_tx in its place, \
                 {percent:.0}% of the no-op's rate; a bare parse and lookup in a table of the same size \
                 {:.2} Mpps ({:.0}%): of lb's {:.0} ns over xdp_tx, {:.0} ns are that lookup",
                1e3 / ours,
                1e3 / base,
                1e3 / bare,
                100.0 * base / bare,
                ours - base,
                bare - base,
            ));
        }
        Ok(())
    })
}
