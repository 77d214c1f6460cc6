//! Every IPVS scheduler in the real XDP program (BPF_PROG_TEST_RUN, needs
//! root) against its reference model (lb_testbed::sched_model): scripted
//! new flows, establishments, closes, expiries and weight changes; each
//! choice must equal the model's, and the data plane's per-server
//! connection counters must equal the model's after every step.

use std::net::Ipv4Addr;

use lb_common::{
    SchedulerKind,
    conntrack::{S_NONE, is_active, tcp_next},
};
use lb_testbed::{packet::*, progtest::*, sched_model::*};

const TCP_RST: u8 = 0x04;
/// The id of `service_with`'s service (seed_service's).
const SERVICE_ID: u32 = 0;

/// A flow the test opened: its client and the server (index) it went to.
struct Flow {
    src: Ipv4Addr,
    sport: u16,
    server: usize,
    /// Its IPVS state (the table itself is checked in lb-common).
    state: u8,
}

/// The program with one service, and what IPVS would hold: the dests with
/// their weights and connection counts.
struct Harness {
    t: ProgTest,
    dests: Vec<Dest>,
    flows: Vec<Flow>,
}

impl Harness {
    fn new(scheduler: SchedulerKind, weights: &[u32]) -> Self {
        Self::with_service(service_with(scheduler, weights))
    }

    fn with_service(service: lb_userspace::planning::plan::PlannedService) -> Self {
        let dests = service
            .reals
            .iter()
            .map(|r| Dest::new(r.ip, r.port, r.weight))
            .collect();
        let t = ProgTest::with_service(service).unwrap();
        Self {
            t,
            dests,
            flows: Vec::new(),
        }
    }

    fn send(&mut self, src: Ipv4Addr, sport: u16, flags: u8) -> (u32, Option<usize>) {
        let frame = Ipv4Packet::tcp(src, sport, VIP, PORT, flags, b"").frame();
        let (verdict, out) = self.t.run(&frame).unwrap();
        let server = (verdict == XDP_TX).then(|| {
            (0..self.dests.len())
                .find(|&i| real_mac(i) == out[0..6])
                .expect("forwarded to a known server")
        });
        (verdict, server)
    }

    /// Opens a connection (SYN); returns the server the program chose.
    fn open(&mut self, src: Ipv4Addr, sport: u16) -> Option<usize> {
        let (verdict, server) = self.send(src, sport, TCP_SYN);
        match server {
            Some(s) => {
                self.dests[s].inactive += 1;
                self.flows.push(Flow {
                    src,
                    sport,
                    server: s,
                    state: tcp_next(S_NONE, TCP_SYN),
                });
            }
            None => assert_eq!(verdict, XDP_DROP, "no server: the packet is dropped"),
        }
        server
    }

    /// A segment with `flags` on an open flow: it keeps its server and
    /// moves between active and inactive as its state does.
    fn segment(&mut self, i: usize, flags: u8) {
        let (src, sport) = (self.flows[i].src, self.flows[i].sport);
        let (_, server) = self.send(src, sport, flags);
        assert_eq!(
            server,
            Some(self.flows[i].server),
            "a flow keeps its server"
        );
        let next = tcp_next(self.flows[i].state, flags);
        let d = &mut self.dests[self.flows[i].server];
        match (is_active(self.flows[i].state), is_active(next)) {
            (false, true) => {
                d.inactive -= 1;
                d.active += 1;
            }
            (true, false) => {
                d.active -= 1;
                d.inactive += 1;
            }
            _ => {}
        }
        self.flows[i].state = next;
    }

    /// The flow expires (the agent's sweep removes it).
    fn expire(&mut self, i: usize) {
        let f = self.flows.swap_remove(i);
        assert!(
            self.t
                .dp
                .remove_flow(&tcp_flow_key(f.src, f.sport))
                .unwrap()
        );
        let d = &mut self.dests[f.server];
        if is_active(f.state) {
            d.active -= 1;
        } else {
            d.inactive -= 1;
        }
    }

    fn set_weight(&mut self, i: usize, weight: u32) {
        self.t.set_weight(i, weight).unwrap();
        self.dests[i].weight = weight;
        if weight > 0 {
            self.dests[i].last_weight = weight;
        }
    }

    /// The data plane's counters equal the model's.
    fn assert_counters(&self, step: &str) {
        for (i, d) in self.dests.iter().enumerate() {
            let (active, inactive) = self.t.dp.real_conns(i as u32 + 1);
            assert_eq!(
                (active, inactive),
                (d.active, d.inactive),
                "{step}: counters of server {i}"
            );
        }
    }
}

/// A small deterministic generator (the scripts must replay identically).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        ((self.0 >> 33) % n as u64) as usize
    }
}

fn client(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, (i / 250) as u8, (i % 250) as u8 + 1, 7)
}

/// Runs a script of `steps` random operations; before each new flow the
/// model says which server IPVS would choose and the program must agree.
fn differential(
    scheduler: SchedulerKind,
    weights: &[u32],
    steps: usize,
    mut model: impl FnMut(&[Dest], Ipv4Addr, u16) -> Option<usize>,
) {
    differential_any(scheduler, weights, steps, |d, src, sport| {
        vec![model(d, src, sport)]
    });
}

/// As `differential`, the model naming every answer IPVS could give.
fn differential_any(
    scheduler: SchedulerKind,
    weights: &[u32],
    steps: usize,
    mut model: impl FnMut(&[Dest], Ipv4Addr, u16) -> Vec<Option<usize>>,
) {
    let mut h = Harness::new(scheduler, weights);
    let mut rng = Lcg(weights.iter().map(|w| u64::from(*w)).sum::<u64>() + steps as u64);
    let mut opened = 0usize;
    for step in 0..steps {
        let op = rng.next(20);
        if op < 10 || h.flows.is_empty() {
            let src = client(opened);
            let sport = 20_000 + (opened % 40_000) as u16;
            opened += 1;
            let expected = model(&h.dests, src, sport);
            let dests = h.dests.clone();
            let got = h.open(src, sport);
            assert!(
                expected.contains(&got),
                "{} step {step}: new flow from {src}:{sport} went to {got:?}, IPVS: {expected:?}, dests {dests:?}",
                scheduler.name(),
            );
        } else if op < 15 {
            let i = rng.next(h.flows.len());
            h.segment(i, TCP_ACK);
        } else if op < 17 {
            let i = rng.next(h.flows.len());
            h.segment(i, TCP_RST);
        } else if op < 19 {
            let i = rng.next(h.flows.len());
            h.expire(i);
        } else {
            let i = rng.next(weights.len());
            let w = [0, 1, 2, 3, 5][rng.next(5)];
            h.set_weight(i, w);
        }
        h.assert_counters(&format!("{} step {step}", scheduler.name()));
    }
}

const WEIGHT_SETS: [&[u32]; 4] = [&[1, 1], &[3, 1, 2], &[5, 0, 2, 2], &[1, 4, 4, 2, 1]];
const STEPS: usize = 150;

#[test]
fn lc_matches_ipvs() {
    for w in WEIGHT_SETS {
        differential(SchedulerKind::Lc, w, STEPS, |d, _, _| lc(d));
    }
}

#[test]
fn wlc_matches_ipvs() {
    for w in WEIGHT_SETS {
        differential(SchedulerKind::Wlc, w, STEPS, |d, _, _| wlc(d));
    }
}

#[test]
fn sed_matches_ipvs() {
    for w in WEIGHT_SETS {
        differential(SchedulerKind::Sed, w, STEPS, |d, _, _| sed(d));
    }
}

/// 37 servers: a tree of 64 leaves, six levels from a leaf to the root
/// (the sets above are one to three).
#[test]
fn lc_wlc_and_sed_match_ipvs_over_37_servers() {
    let weights: Vec<u32> = (0..37u32).map(|i| (i * 7) % 5).collect();
    differential(SchedulerKind::Lc, &weights, 300, |d, _, _| lc(d));
    differential(SchedulerKind::Wlc, &weights, 300, |d, _, _| wlc(d));
    differential(SchedulerKind::Sed, &weights, 300, |d, _, _| sed(d));
}

/// A tree node that racing updates left stale is right again after the
/// agent's sweep: the next connection goes where IPVS's scan would send it.
#[test]
fn the_sweep_repairs_a_stale_least_connection_tree() {
    let mut h = Harness::new(SchedulerKind::Lc, &[1, 1, 1]);
    for i in 0..4 {
        h.open(client(i), 20_000);
    }
    // Counts 2, 1, 1: lc's next is server 1. A stale root names server 2,
    // and the program follows it (the tree, not a scan, decides).
    assert_eq!(lc(&h.dests), Some(1));
    assert!(h.t.dp.stale_least_tree_root(SERVICE_ID, 2));
    assert_eq!(h.open(client(4), 20_000), Some(2));
    // Counts 2, 1, 2 and the root named server 2 again: the sweep (no
    // flow old enough to expire) rebuilds the tree from the counts.
    assert!(h.t.dp.stale_least_tree_root(SERVICE_ID, 2));
    h.t.dp
        .sweep_expired(lb_userspace::dataplane::ConnTimeouts::default())
        .unwrap();
    assert_eq!(lc(&h.dests), Some(1));
    assert_eq!(h.open(client(5), 20_000), Some(1));
}

#[test]
fn nq_matches_ipvs() {
    for w in WEIGHT_SETS {
        differential(SchedulerKind::Nq, w, STEPS, |d, _, _| nq(d));
    }
}

#[test]
fn fo_matches_ipvs() {
    for w in WEIGHT_SETS {
        differential(SchedulerKind::Fo, w, STEPS, |d, _, _| fo(d));
    }
}

#[test]
fn ovf_matches_ipvs() {
    for w in WEIGHT_SETS {
        differential(SchedulerKind::Ovf, w, STEPS, |d, _, _| ovf(d));
    }
}

#[test]
fn rr_matches_ipvs() {
    for w in WEIGHT_SETS {
        let mut m = RrModel::default();
        differential(SchedulerKind::Rr, w, STEPS, |d, _, _| m.pick(d));
    }
}

#[test]
fn sh_matches_ipvs() {
    for w in WEIGHT_SETS {
        differential(SchedulerKind::Sh, w, STEPS, |d, src, _| {
            sh(d, src, 0, false)
        });
    }
}

#[test]
fn dh_matches_ipvs() {
    for w in WEIGHT_SETS {
        differential(SchedulerKind::Dh, w, STEPS, |d, _, _| dh(d, VIP));
    }
}

#[test]
fn mh_matches_ipvs() {
    // Weight changes to 0 keep mh's last weight in IPVS; the agent takes the
    // configured weight, so this script uses non-zero weights only.
    for w in [&[1u32, 1][..], &[3, 1, 2], &[1, 4, 4, 2, 1]] {
        let mut h = Harness::new(SchedulerKind::Mh, w);
        for i in 0..200 {
            let src = client(i);
            let expected = mh(&h.dests, src, 0, false);
            assert_eq!(h.open(src, 40_000), expected, "mh {w:?}: client {src}");
        }
        h.assert_counters("mh");
    }
}

#[test]
fn lblc_matches_ipvs() {
    for w in WEIGHT_SETS {
        let mut m = LblcModel::default();
        differential(SchedulerKind::Lblc, w, STEPS, |d, _, _| m.pick(d, VIP));
    }
}

#[test]
fn lblcr_matches_ipvs() {
    for w in WEIGHT_SETS {
        let mut m = LblcrModel::default();
        // The default expiration (24 h) never passes during the test.
        differential(SchedulerKind::Lblcr, w, STEPS, |d, _, _| {
            m.pick(
                d,
                VIP,
                0,
                u64::from(lb_common::LOCALITY_DEFAULT_EXPIRATION_S),
            )
        });
    }
}

#[test]
fn twos_chooses_only_what_ipvs_could() {
    for w in WEIGHT_SETS {
        // Random draws: the program's choice must be one IPVS could make.
        differential_any(SchedulerKind::Twos, w, STEPS, |d, _, _| {
            let reachable = twos_reachable(d);
            if reachable.is_empty() {
                vec![None]
            } else {
                reachable.into_iter().map(Some).collect()
            }
        });
    }
}

// ---- Distribution tests: the rules IPVS's users rely on, by name. ----

/// Which server each of `n` clients' first connection goes to.
fn first_choices(h: &mut Harness, n: usize) -> Vec<Option<usize>> {
    (0..n).map(|i| h.open(client(i), 33_000)).collect()
}

#[test]
fn sh_and_dh_map_an_address_to_the_same_server_across_restarts() {
    for scheduler in [SchedulerKind::Sh, SchedulerKind::Dh, SchedulerKind::Mh] {
        let weights = [2, 1, 3];
        let a = first_choices(&mut Harness::new(scheduler, &weights), 300);
        // A new program and maps: what a restarted (or second) balancer has.
        let b = first_choices(&mut Harness::new(scheduler, &weights), 300);
        assert_eq!(a, b, "{}", scheduler.name());
        assert!(a.iter().all(Option::is_some));
        if scheduler != SchedulerKind::Dh {
            // Hashing the source spreads clients over every server.
            for s in 0..weights.len() {
                assert!(
                    a.contains(&Some(s)),
                    "{}: server {s} unused",
                    scheduler.name()
                );
            }
        }
    }
}

#[test]
fn sh_weights_are_bucket_shares() {
    // sh gives each server `weight` buckets in turn: 3:1 -> 192:64 buckets.
    let mut h = Harness::new(SchedulerKind::Sh, &[3, 1]);
    let picks = first_choices(&mut h, 2000);
    let heavy = picks.iter().filter(|p| **p == Some(0)).count();
    assert!(
        (1350..1650).contains(&heavy),
        "server 0 got {heavy} of 2000"
    );
}

#[test]
fn mh_only_moves_the_flows_of_a_removed_server() {
    let weights = [1, 1, 1, 1, 1];
    let mut h = Harness::new(SchedulerKind::Mh, &weights);
    let before = first_choices(&mut h, 1000);
    // Server 2 fails its health check: removed from the set, table rebuilt.
    let mut h2 = Harness::new(SchedulerKind::Mh, &weights);
    h2.t.set_health(3, false).unwrap();
    let after: Vec<Option<usize>> = (0..1000).map(|i| h2.open(client(i), 33_000)).collect();
    let mut moved_others = 0;
    for (b, a) in before.iter().zip(&after) {
        assert_ne!(*a, Some(2), "no flow goes to the removed server");
        if *b != Some(2) && a != b {
            moved_others += 1;
        }
    }
    let others = before.iter().filter(|b| **b != Some(2)).count();
    // Maglev: near-minimal disruption (the paper's bound is a few percent).
    assert!(
        moved_others * 100 <= others * 3,
        "{moved_others} of {others} flows of live servers moved"
    );
}

#[test]
fn nq_picks_an_idle_server_first_and_sed_does_not() {
    for (scheduler, second) in [(SchedulerKind::Nq, 1), (SchedulerKind::Sed, 0)] {
        let mut h = Harness::new(scheduler, &[5, 1]);
        assert_eq!(h.open(client(0), 1000), Some(0));
        h.segment(0, TCP_ACK);
        // Server 0 has one active connection: nq takes idle server 1; sed
        // compares (1+1)/5 with (0+1)/1 and stays on server 0.
        assert_eq!(
            h.open(client(1), 1000),
            Some(second),
            "{}",
            scheduler.name()
        );
    }
}

#[test]
fn fo_takes_the_heaviest_and_ovf_overflows_by_weight() {
    let mut fo = Harness::new(SchedulerKind::Fo, &[1, 3, 2]);
    for i in 0..10 {
        assert_eq!(fo.open(client(i), 1000), Some(1));
    }
    let mut ovf = Harness::new(SchedulerKind::Ovf, &[1, 3, 2]);
    let mut got = Vec::new();
    for i in 0..7 {
        got.push(ovf.open(client(i), 1000).unwrap());
        ovf.segment(i, TCP_ACK);
    }
    // Server 1 (weight 3) until it has 4 active (> 3), then server 2 until
    // it has 3 (> 2), then server 0.
    assert_eq!(got, [1, 1, 1, 1, 2, 2, 2]);
}

#[test]
fn lblc_leaves_an_overloaded_server_only_when_another_has_room() {
    let mut h = Harness::new(SchedulerKind::Lblc, &[1, 4]);
    assert_eq!(h.open(client(0), 1000), Some(0)); // wlc: first of equals
    h.segment(0, TCP_ACK);
    // 1 active, weight 1: not overloaded (active > weight is needed).
    assert_eq!(h.open(client(1), 1000), Some(0));
    h.segment(1, TCP_ACK);
    // 2 active > 1 and server 1 has 0 * 2 < 4: overloaded, wlc picks 1.
    assert_eq!(h.open(client(2), 1000), Some(1));
    // The cache now names server 1 for the VIP.
    assert_eq!(h.open(client(3), 1000), Some(1));
}

#[test]
fn lblcr_grows_its_set_when_overloaded() {
    let mut h = Harness::new(SchedulerKind::Lblcr, &[1, 1, 4]);
    let mut m = LblcrModel::default();
    let expiration = u64::from(lb_common::LOCALITY_DEFAULT_EXPIRATION_S);
    let mut servers = Vec::new();
    for i in 0..8 {
        let expected = m.pick(&h.dests, VIP, 0, expiration);
        let got = h.open(client(i), 1000);
        assert_eq!(got, expected, "flow {i}");
        servers.push(got.unwrap());
        h.segment(i, TCP_ACK);
    }
    // The set grew beyond its first server once it was overloaded.
    assert!(servers.iter().any(|s| *s != servers[0]), "{servers:?}");
}

#[test]
fn sh_and_mh_fallback_skip_an_inhibited_server_and_match_ipvs() {
    use lb_common::{SCHED_FLAG_FALLBACK, SCHED_FLAG_HASH_PORT};
    for scheduler in [SchedulerKind::Sh, SchedulerKind::Mh] {
        for flags in [
            0,
            SCHED_FLAG_FALLBACK,
            SCHED_FLAG_FALLBACK | SCHED_FLAG_HASH_PORT,
        ] {
            let weights = [1, 2, 1];
            let mut svc = service_with(scheduler, &weights);
            svc.sched_flags = flags;
            // inhibit_on_failure: a failed server stays with weight 0 (and
            // keeps its last weight: its buckets do not move).
            svc.inhibit_on_failure = true;
            let mut h = Harness::with_service(svc);
            h.t.set_health(2, false).unwrap();
            h.dests[1].weight = 0;
            let fallback = flags & SCHED_FLAG_FALLBACK != 0;
            let mut dropped = 0;
            for i in 0..300 {
                let (src, sport) = (client(i), 20_000 + i as u16);
                let port = if flags & SCHED_FLAG_HASH_PORT != 0 {
                    sport
                } else {
                    0
                };
                let expected = match scheduler {
                    SchedulerKind::Sh => sh(&h.dests, src, port, fallback),
                    _ => mh(&h.dests, src, port, fallback),
                };
                let got = h.open(src, sport);
                assert_eq!(
                    got,
                    expected,
                    "{} flags {flags}: {src}:{sport}",
                    scheduler.name()
                );
                dropped += usize::from(got.is_none());
            }
            // Without fallback the inhibited server's share is dropped; with
            // it, nobody is.
            assert_eq!(dropped == 0, fallback, "{} flags {flags}", scheduler.name());
        }
    }
}

#[test]
fn lblcr_drops_its_most_loaded_server_when_unchanged_for_the_expiration() {
    use lb_userspace::dataplane::ConnTimeouts;
    const EXPIRATION_S: u32 = 1;
    let mut h = Harness::new(SchedulerKind::Lblcr, &[1, 1, 4]);
    h.t.set_timeouts(ConnTimeouts {
        locality_expiration: EXPIRATION_S,
        ..ConnTimeouts::default()
    })
    .unwrap();
    let mut m = LblcrModel::default();
    let expiration = u64::from(EXPIRATION_S);
    // Grow the set past one server (overload), at model time 0.
    let mut i = 0;
    while i < 8 {
        let expected = m.pick(&h.dests, VIP, 0, expiration);
        assert_eq!(h.open(client(i), 1000), expected, "flow {i}");
        h.segment(i, TCP_ACK);
        i += 1;
    }
    // Unchanged for longer than the expiration: the next pick shrinks the
    // set in both, and they keep agreeing afterwards.
    std::thread::sleep(std::time::Duration::from_millis(
        1100 * u64::from(EXPIRATION_S),
    ));
    for j in 0..6 {
        let expected = m.pick(&h.dests, VIP, 2 * expiration, expiration);
        assert_eq!(
            h.open(client(i + j), 1000),
            expected,
            "after expiry, flow {j}"
        );
        h.segment(i + j, TCP_ACK);
    }
}

/// Which real server (index) each of `n` new flows went to.
fn new_flow_choices(t: &mut ProgTest, n: u16, servers: usize) -> Vec<usize> {
    (0..n)
        .map(|i| {
            let mac = forwarded_to(t, &syn(50000 + i).frame());
            (0..servers)
                .find(|&s| real_mac(s) == mac)
                .expect("a known server")
        })
        .collect()
}

#[test]
fn wrr_matches_the_ipvs_model_choice_for_choice() {
    use lb_testbed::sched_model::WrrModel;
    for weights in [
        &[3u32, 1][..],
        &[5, 2, 2],
        &[4, 0, 2],
        &[2, 4, 6],
        &[1, 1, 1],
        &[7, 3, 5, 1],
    ] {
        let mut t =
            ProgTest::with_service(service_with(lb_common::SchedulerKind::Wrr, weights)).unwrap();
        let got = new_flow_choices(&mut t, 60, weights.len());
        let mut model = WrrModel::new(weights);
        let expected: Vec<usize> = (0..60).map(|_| model.pick().unwrap()).collect();
        assert_eq!(got, expected, "weights {weights:?}");
    }
}

#[test]
fn wrr_three_to_one_over_400_flows_is_300_to_100() {
    let mut t =
        ProgTest::with_service(service_with(lb_common::SchedulerKind::Wrr, &[3, 1])).unwrap();
    let got = new_flow_choices(&mut t, 400, 2);
    assert_eq!(got.iter().filter(|&&s| s == 0).count(), 300);
    assert_eq!(got.iter().filter(|&&s| s == 1).count(), 100);
}

#[test]
fn wrr_with_every_weight_zero_drops() {
    let mut t =
        ProgTest::with_service(service_with(lb_common::SchedulerKind::Wrr, &[0, 0])).unwrap();
    assert_eq!(t.run(&syn(51000).frame()).unwrap().0, XDP_DROP);
}
