//! The live-frames traffic generator (xdp-trafficgen's way): the baselines
//! object's `xdp_flood_gen` runs in BPF_PROG_TEST_RUN's live-frames mode as
//! if each frame had arrived on an interface, gives every frame a new
//! random source address in 198.18.0.0/15 and sends it out of that
//! interface (XDP_TX), to its veth peer. One core: the calling thread's.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp},
};
use lb_userspace::dataplane::BASELINES_OBJECT;

/// Frames per live-frames batch (xdp-trafficgen's default).
pub const LIVE_BATCH: u32 = 64;
const PROGRAM: &str = "xdp_flood_gen";
/// Its globals (lb-ebpf's baselines.rs).
const SOURCE_NET: &str = "SOURCE_NET";
const SOURCE_MASK: &str = "SOURCE_MASK";

/// xdp_md as BPF_PROG_TEST_RUN takes it: data_end = the frame's length,
/// ingress_ifindex = the interface the frame "arrived" on.
pub fn xdp_md(frame_len: usize, ifindex: u32) -> Vec<u8> {
    [0u32, frame_len as u32, 0, ifindex, 0, 0]
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect()
}

pub struct TrafficGen(Ebpf);

impl TrafficGen {
    /// Loads the generator (needs root, as every BPF load): sources in
    /// 198.18.0.0/15.
    pub fn load() -> Result<Self> {
        Self::load_with(EbpfLoader::new())
    }

    /// A generator whose sources are `net` + a random number masked with
    /// `mask` (a power of two minus one): exactly `mask + 1` clients.
    pub fn from_clients(net: std::net::Ipv4Addr, mask: u32) -> Result<Self> {
        let net = u32::from(net);
        let mut loader = EbpfLoader::new();
        loader
            .override_global(SOURCE_NET, &net, true)
            .override_global(SOURCE_MASK, &mask, true);
        Self::load_with(loader)
    }

    fn load_with(mut loader: EbpfLoader) -> Result<Self> {
        let mut ebpf = loader
            .load(BASELINES_OBJECT)
            .context("loading the traffic generator")?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| anyhow!("no {PROGRAM} in the baselines object"))?
            .try_into()?;
        prog.load()?;
        Ok(Self(ebpf))
    }

    /// Runs the generator once on `frame`, not live: (verdict, the frame
    /// it would send). For tests of what it makes.
    pub fn run_once(&mut self, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        // The generator rewrites in place: no room needed.
        crate::progtest::run_once(self.program()?, frame, 0)
    }

    fn program(&mut self) -> Result<&mut Xdp> {
        Ok(self
            .0
            .program_mut(PROGRAM)
            .ok_or_else(|| anyhow!("no {PROGRAM}"))?
            .try_into()?)
    }

    /// Sends `count` frames made from `frame` (IPv4 TCP or UDP, the source
    /// address varied) out of the interface `ifindex` of the calling
    /// thread's network namespace; how long it took.
    pub fn send(&mut self, ifindex: u32, frame: &[u8], count: u32) -> Result<Duration> {
        let ctx = xdp_md(frame.len(), ifindex);
        let prog = self.program()?;
        let started = Instant::now();
        prog.test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx),
            repeat: count,
            attrs: TestRunAttrs::new().xdp_live_frames(LIVE_BATCH),
            ..TestRunOptions::default()
        })
        .context("running the traffic generator (live frames)")?;
        Ok(started.elapsed())
    }
}
