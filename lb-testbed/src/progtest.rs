//! The real XDP program, loaded but not attached, with the seed's service in
//! its maps, run on single frames through BPF_PROG_TEST_RUN.

use std::net::Ipv4Addr;

use anyhow::{Context as _, Result};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use lb_common::{ForwardKind, SchedulerKind, counters::COUNTER_COUNT};

use crate::packet::{Ipv4Packet, TCP_SYN};
use lb_userspace::{
    config::Protocol,
    dataplane::{AppliedService, ConnTimeouts, Dataplane, LoadOptions, TunnelSources},
    netlink::LinkInfo,
    planning::{
        backends::{RealStatus, service_state},
        plan::{PlannedReal, PlannedService},
    },
};

pub use crate::seed::{
    CLIENT_IP, CLIENT_IP6, LB_IP, LB_IP6, PORT, RS1_IP, RS1_IP6, RS2_IP, RS2_IP6, VIP, VIP6,
};
pub const LB_MAC: [u8; 6] = [0x02, 0x1b, 0, 0, 0, 0x88];
pub const RS1_MAC: [u8; 6] = [0x02, 0x15, 0, 0, 0, 0x93];
pub const RS2_MAC: [u8; 6] = [0x02, 0x15, 0, 0, 0, 0x95];
pub const LB_MTU: u32 = 1500;
/// No interface has this index: bpf_fib_lookup fails whatever the test
/// machine's routes are, and the agent's MAC is used, as for a real server
/// on the balancer's link.
const LB_IFINDEX: u32 = 0x7fff_0000;
/// Room for what the program may add in front (encapsulation) and behind.
const OUT_HEADROOM: usize = 256;

/// The MAC of the `index`-th real server of a test service (RS1_IP, RS2_IP, then more).
pub fn real_mac(index: usize) -> [u8; 6] {
    match index {
        0 => RS1_MAC,
        1 => RS2_MAC,
        i => [0x02, 0x15, 0, 0, 1, i as u8],
    }
}

/// XDP verdicts (uapi/linux/bpf.h).
pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

pub struct ProgTest {
    pub dp: Dataplane,
    pub service: PlannedService,
    /// (real id, healthy) as last set.
    health: Vec<(u32, bool)>,
    /// Not VRRP master for the VIP (packets passed to the kernel).
    standby: bool,
    /// What the maps hold for the service, as the agent would track it.
    applied: Option<AppliedService>,
    /// Connection sync on (GLOBAL_FLAG_SYNC), and the timeouts last set.
    sync: bool,
    timeouts: ConnTimeouts,
}

/// The seed's virtual service: VIP:80 TCP rr DR over RS1_IP, RS2_IP (weights given).
pub fn seed_service(weights: [u32; 2]) -> PlannedService {
    PlannedService {
        service_id: 0,
        vip: VIP.into(),
        port: PORT,
        protocol: Protocol::Tcp,
        forward: ForwardKind::Dr,
        scheduler: SchedulerKind::Rr,
        sched_flags: 0,
        persistence: None,
        reals: vec![
            PlannedReal {
                real_id: 1,
                rs_index: Some(0),
                ip: RS1_IP.into(),
                port: PORT,
                weight: weights[0],
            },
            PlannedReal {
                real_id: 2,
                rs_index: Some(1),
                ip: RS2_IP.into(),
                port: PORT,
                weight: weights[1],
            },
        ],
        inhibit_on_failure: false,
        alpha: false,
        quorum: 1,
        sorry: None,
    }
}

/// The seed's virtual service on its IPv6 addresses: [VIP6]:80 TCP rr DR
/// over RS1_IP6, RS2_IP6 (real ids 1 and 2).
pub fn seed_service6() -> PlannedService {
    on_ipv6(seed_service([1, 1]))
}

/// `svc` moved to the seed's IPv6 addresses (its two servers' too).
fn on_ipv6(mut svc: PlannedService) -> PlannedService {
    svc.vip = VIP6.into();
    svc.reals[0].ip = RS1_IP6.into();
    svc.reals[1].ip = RS2_IP6.into();
    svc
}

/// The seed's service forwarded by `forward` (DR, TUN or NAT without port
/// mapping).
pub fn seed_service_in(forward: ForwardKind) -> PlannedService {
    PlannedService {
        forward,
        ..seed_service([1, 1])
    }
}

/// The seed's first step (ipvsadm -m): NAT, with port mapping 80 -> `rs_port`.
pub fn nat_service(rs_port: u16, protocol: Protocol) -> PlannedService {
    let mut svc = seed_service_in(ForwardKind::Nat);
    svc.protocol = protocol;
    for r in svc.reals.iter_mut() {
        r.port = rs_port;
    }
    svc
}

/// The same on the seed's IPv6 addresses (NAT66): [VIP6]:80 -> RS1_IP6,
/// RS2_IP6 on `rs_port`.
pub fn nat_service6(rs_port: u16, protocol: Protocol) -> PlannedService {
    on_ipv6(nat_service(rs_port, protocol))
}

/// A TCP service on VIP:PORT (DR) with `scheduler` over as many real
/// servers as `weights` (172.16.122.193, .194, ...; real ids from 1).
pub fn service_with(scheduler: SchedulerKind, weights: &[u32]) -> PlannedService {
    let mut svc = seed_service([1, 1]);
    svc.scheduler = scheduler;
    svc.reals = weights
        .iter()
        .enumerate()
        .map(|(i, w)| PlannedReal {
            real_id: i as u32 + 1,
            rs_index: Some(i),
            ip: real_ip(i).into(),
            port: PORT,
            weight: *w,
        })
        .collect();
    svc
}

/// The address of the `index`-th real server of `service_with`.
pub fn real_ip(index: usize) -> Ipv4Addr {
    let n = 193 + index as u32;
    Ipv4Addr::new(172, 16, 122 + (n / 256) as u8, (n % 256) as u8)
}

/// The flow-table key of a client -> VIP:PORT TCP packet.
pub fn tcp_flow_key(src: Ipv4Addr, sport: u16) -> lb_common::FlowKey {
    lb_common::FlowKey {
        src: src.octets(),
        dst: VIP.octets(),
        sport: sport.to_be(),
        dport: PORT.to_be(),
        proto: lb_common::IPPROTO_TCP,
        _pad: [0; 3],
    }
}

/// Filler clients: 10.0.0.0 + i, port FILLER_PORT.
pub const FILLER_NET: u32 = 0x0a00_0000;
pub const FILLER_PORT: u16 = 1000;

/// The flow of the `i`-th filler client: distinct connections to fill a
/// flow table with, none of them the test's own (CLIENT_IP).
pub fn filler_flow_key(i: u32) -> lb_common::FlowKey {
    tcp_flow_key(Ipv4Addr::from(FILLER_NET + i), FILLER_PORT)
}

/// A flow of the seed service (id 0; any config's first service) on its
/// first real server (id 1) in TCP `state`, last seen at `last_seen_ns` (the data plane's clock).
pub fn seed_flow_entry(state: u8, last_seen_ns: u64) -> lb_common::FlowEntry {
    lb_common::FlowEntry {
        real_id: 1,
        service_id: 0,
        last_seen_ns,
        state,
        _pad: [0; 7],
    }
}

/// Runs `frame` once through `prog` (BPF_PROG_TEST_RUN, not live):
/// (verdict, output frame), with `room` bytes more than the input for what
/// the program may add.
pub fn run_once(prog: &mut Xdp, frame: &[u8], room: usize) -> Result<(u32, Vec<u8>)> {
    let mut out = vec![0u8; frame.len() + room];
    let result = prog.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ..TestRunOptions::default()
    })?;
    out.truncate(result.data_size_out as usize);
    Ok((result.return_value, out))
}

/// Runs `f` on this thread pinned to the CPU it is on (its argument); the
/// old affinity comes back afterwards. BPF_PROG_TEST_RUN runs on the
/// calling CPU: per-CPU state and timings stay on one.
pub fn on_one_core<T>(f: impl FnOnce(usize) -> Result<T>) -> Result<T> {
    use nix::{
        sched::{CpuSet, sched_getaffinity, sched_getcpu, sched_setaffinity},
        unistd::Pid,
    };
    let me = Pid::from_raw(0);
    let before = sched_getaffinity(me)?;
    let cpu = sched_getcpu()?;
    let mut one = CpuSet::new();
    one.set(cpu)?;
    sched_setaffinity(me, &one)?;
    let out = f(cpu);
    sched_setaffinity(me, &before)?;
    out
}

impl ProgTest {
    /// Writes the globals (the test interface, the service's flags) with
    /// these timeouts (ipvsadm --set, lblc(r) expiration).
    pub fn set_timeouts(&mut self, timeouts: ConnTimeouts) -> Result<()> {
        self.timeouts = timeouts;
        let sync = if self.sync {
            lb_common::GLOBAL_FLAG_SYNC
        } else {
            0
        };
        self.dp.set_globals(
            &LinkInfo {
                index: LB_IFINDEX,
                mac: LB_MAC,
                mtu: LB_MTU,
            },
            None,
            TunnelSources {
                v4: LB_IP,
                v6: LB_IP6,
            },
            lb_userspace::planning::plan::global_flags([&self.service]) | sync,
            timeouts,
        )
    }

    /// Turns connection sync on: the program reports new connections,
    /// state moves and templates into the returned ring buffer.
    pub fn enable_sync(&mut self) -> Result<aya::maps::RingBuf<aya::maps::MapData>> {
        self.sync = true;
        self.set_timeouts(self.timeouts)?;
        self.dp.take_sync_events()
    }

    /// Changes a real server's configured weight, as a config reload would.
    pub fn set_weight(&mut self, index: usize, weight: u32) -> Result<()> {
        self.service.reals[index].weight = weight;
        self.write_service(true)
    }

    /// Makes the service standby (this balancer not VRRP master for its
    /// VIP) or not, as the agent does on a VRRP transition.
    pub fn set_standby(&mut self, standby: bool) -> Result<()> {
        self.standby = standby;
        self.write_service(false)
    }

    /// Loads the program with `service` written, both reals resolved.
    pub fn with_service(service: PlannedService) -> Result<Self> {
        Self::with_service_and(service, &LoadOptions::default())
    }

    /// As `with_service`, with load options (e.g. the flow table's size).
    pub fn with_service_and(service: PlannedService, opts: &LoadOptions) -> Result<Self> {
        let dp = Dataplane::load(opts)
            .context("loading the XDP program (BPF_PROG_TEST_RUN tests need root)")?;
        let mut t = Self {
            dp,
            service,
            health: Vec::new(),
            standby: false,
            applied: None,
            sync: false,
            timeouts: ConnTimeouts::default(),
        };
        t.set_timeouts(ConnTimeouts::default())?;
        t.write_service(true)?;
        Ok(t)
    }

    /// Marks a real server up or down as the agent would after a health
    /// check: recomputes the backend set, activates or deactivates the real.
    pub fn set_health(&mut self, real_id: u32, healthy: bool) -> Result<()> {
        self.health.retain(|(id, _)| *id != real_id);
        self.health.push((real_id, healthy));
        self.write_service(false)
    }

    /// Writes the service and its reals through the agent's own write order
    /// (Dataplane::apply_service) for the health last set (a real never set
    /// is healthy). `settings_changed`: the service itself changed.
    fn write_service(&mut self, settings_changed: bool) -> Result<()> {
        let health = &self.health;
        let new = AppliedService {
            state: service_state(&self.service, |id| RealStatus {
                mac_known: true,
                healthy: health
                    .iter()
                    .find(|(i, _)| *i == id)
                    .is_none_or(|(_, h)| *h),
                weight_override: None,
            }),
            standby: self.standby,
        };
        let reals = &self.service.reals;
        let mac_of = |id: u32| reals.iter().position(|r| r.real_id == id).map(real_mac);
        self.dp.apply_service(
            &self.service,
            self.applied.as_ref(),
            &new,
            settings_changed,
            mac_of,
        )?;
        self.applied = Some(new);
        Ok(())
    }

    pub fn seed() -> Result<Self> {
        Self::with_service(seed_service([1, 1]))
    }

    /// Runs one frame: (verdict, output frame).
    pub fn run(&mut self, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        run_once(self.dp.program()?, frame, OUT_HEADROOM)
    }

    pub fn counters(&self) -> Result<[u64; COUNTER_COUNT as usize]> {
        self.dp.counters()
    }
}

/// A SYN from the seed's client to VIP:PORT from `sport`.
pub fn syn(sport: u16) -> Ipv4Packet {
    Ipv4Packet::tcp(CLIENT_IP, sport, VIP, PORT, TCP_SYN, b"")
}

/// The destination MAC the program chose for `frame`, asserting XDP_TX.
pub fn forwarded_to(t: &mut ProgTest, frame: &[u8]) -> [u8; 6] {
    let (verdict, out) = t.run(frame).unwrap();
    assert_eq!(verdict, XDP_TX, "expected XDP_TX");
    out[0..6].try_into().unwrap()
}

/// Asserts that `frame` is passed to the kernel untouched.
pub fn assert_passes_unmodified(t: &mut ProgTest, what: &str, frame: &[u8]) {
    let (verdict, out) = t.run(frame).unwrap();
    assert_eq!(verdict, XDP_PASS, "{what}: verdict");
    assert_eq!(out, frame, "{what}: the frame must pass unmodified");
}
