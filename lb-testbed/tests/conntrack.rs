//! The real XDP program through BPF_PROG_TEST_RUN (needs root): exact output
//! bytes and verdicts, Katran-tester style. The flow table: IPVS's TCP states, the agent's sweep, and a full table
//! (nothing evicted, untracked connections kept together).

use lb_common::counters;
use lb_testbed::{packet::*, progtest::*};

#[test]
fn tcp_states_follow_ipvs_input_only_table() {
    use lb_common::conntrack::*;
    let mut t = ProgTest::seed().unwrap();
    let key = lb_common::FlowKey {
        src: CLIENT_IP.octets(),
        dst: VIP.octets(),
        sport: 49000u16.to_be(),
        dport: PORT.to_be(),
        proto: IPPROTO_TCP,
        _pad: [0; 3],
    };
    let state = |t: &ProgTest| t.dp.flow_entry(&key).unwrap().unwrap().state;
    let send = |t: &mut ProgTest, flags: u8| {
        let (verdict, _) = t
            .run(&Ipv4Packet::tcp(CLIENT_IP, 49000, VIP, PORT, flags, b"").frame())
            .unwrap();
        assert_eq!(verdict, XDP_TX);
    };
    // (ActiveConn, InActConn) over both servers follow the flow's state.
    let conns = |t: &ProgTest| {
        let (a1, i1) = t.dp.real_conns(1);
        let (a2, i2) = t.dp.real_conns(2);
        (a1 + a2, i1 + i2)
    };
    send(&mut t, TCP_SYN);
    assert_eq!(state(&t), S_SYN_RECV);
    assert_eq!(conns(&t), (0, 1));
    send(&mut t, TCP_ACK);
    assert_eq!(state(&t), S_ESTABLISHED);
    assert_eq!(conns(&t), (1, 0));
    send(&mut t, TCP_ACK | 0x01); // FIN|ACK
    assert_eq!(state(&t), S_FIN_WAIT);
    assert_eq!(conns(&t), (0, 1));
    // The sweep leaves it until FIN_WAIT's timeout (tcpfin) has passed.
    let timeouts = lb_userspace::dataplane::ConnTimeouts {
        tcpfin: 1,
        ..Default::default()
    };
    assert_eq!(t.dp.sweep_expired(timeouts).unwrap(), 0);
    assert_eq!(conns(&t), (0, 1));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(t.dp.sweep_expired(timeouts).unwrap(), 1);
    assert_eq!(t.dp.flow_entry(&key).unwrap(), None);
    assert_eq!(conns(&t), (0, 0));
    // A new connection on the same 5-tuple; RST closes it (inactive).
    send(&mut t, TCP_SYN);
    send(&mut t, TCP_ACK);
    send(&mut t, 0x04); // RST
    assert_eq!(state(&t), S_CLOSE);
    assert_eq!(conns(&t), (0, 1));
    // UDP flows are in the UDP state.
    let mut u = ProgTest::with_service({
        let mut s = seed_service([1, 1]);
        s.protocol = lb_userspace::config::Protocol::Udp;
        s
    })
    .unwrap();
    u.run(&Ipv4Packet::udp(CLIENT_IP, 5000, VIP, PORT, b"x").frame())
        .unwrap();
    let ukey = lb_common::FlowKey {
        sport: 5000u16.to_be(),
        proto: IPPROTO_UDP,
        ..key
    };
    assert_eq!(u.dp.flow_entry(&ukey).unwrap().unwrap().state, S_UDP);
}

#[test]
fn the_sweep_reads_a_table_in_batches_and_removes_every_expired_flow() {
    use lb_common::conntrack::S_CLOSE;
    // More flows than one BPF_MAP_LOOKUP_BATCH call returns.
    const FLOWS: u32 = 10_000;
    let mut t = ProgTest::seed().unwrap();
    let key = filler_flow_key;
    // CLOSE, last seen at boot: expired (CLOSE lives 10 s).
    let stale = seed_flow_entry(S_CLOSE, 0);
    t.dp.insert_flows((0..FLOWS).map(|i| (key(i), stale)))
        .unwrap();
    // One live flow stays.
    t.run(&syn(40_000).frame()).unwrap();
    let removed =
        t.dp.sweep_expired(lb_userspace::dataplane::ConnTimeouts::default())
            .unwrap();
    assert_eq!(removed, FLOWS as usize);
    assert!(t.dp.flow_entry(&key(0)).unwrap().is_none());
    assert!(t.dp.flow_entry(&key(FLOWS - 1)).unwrap().is_none());
    assert!(
        t.dp.flow_entry(&tcp_flow_key(CLIENT_IP, 40_000))
            .unwrap()
            .is_some()
    );
}

/// Connections the flow table holds in the pressure tests.
const SMALL_TABLE: u32 = 8;

/// A data plane whose SMALL_TABLE flow table is full of established-to-be
/// connections from ports 50000...
fn full_flow_table() -> ProgTest {
    let opts = lb_userspace::dataplane::LoadOptions {
        flow_table_size: SMALL_TABLE,
        ..Default::default()
    };
    let mut t = ProgTest::with_service_and(seed_service([1, 1]), &opts).unwrap();
    for i in 0..SMALL_TABLE as u16 {
        forwarded_to(&mut t, &syn(50000 + i).frame());
    }
    t
}

/// The data plane's clock (bpf_ktime_get_coarse_ns) as user space reads it.
fn coarse_now() -> std::time::Duration {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE).unwrap();
    std::time::Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32)
}

/// A CPU whose insert found the table full tries none until the coarse
/// clock's next tick (a failed insert is a new flow's costliest step, and
/// only the agent's sweep frees room): a slot freed meanwhile stays free
/// for that tick, then the next new connection takes it.
#[test]
fn a_cpu_that_found_the_table_full_tries_no_insert_until_the_next_tick() {
    // Fresh tables until both packets fall within one tick.
    const ATTEMPTS: usize = 10;
    // Longer than the backoff (1 ms) plus a tick at any HZ.
    const PAST_THE_BACKOFF: std::time::Duration = std::time::Duration::from_millis(30);
    let tracked = |t: &ProgTest, sport| {
        t.dp.flow_entry(&tcp_flow_key(CLIENT_IP, sport))
            .unwrap()
            .is_some()
    };
    // The backoff is per CPU: every packet runs on this one.
    on_one_core(|_| {
        for _ in 0..ATTEMPTS {
            let mut t = full_flow_table();
            let tick = coarse_now();
            forwarded_to(&mut t, &syn(51000).frame());
            assert!(!tracked(&t, 51000), "the table was full");
            assert!(t.dp.remove_flow(&tcp_flow_key(CLIENT_IP, 50000)).unwrap());
            forwarded_to(&mut t, &syn(52000).frame());
            if coarse_now() != tick {
                continue;
            }
            assert!(!tracked(&t, 52000), "an insert was tried within the tick");
            let c = t.counters().unwrap();
            assert_eq!(c[counters::FLOW_INSERT_FAILED as usize], 2);
            std::thread::sleep(PAST_THE_BACKOFF);
            forwarded_to(&mut t, &syn(53000).frame());
            assert!(tracked(&t, 53000), "the freed slot stayed unused");
            return Ok(());
        }
        panic!("the coarse clock ticked within each of {ATTEMPTS} attempts");
    })
    .unwrap();
}

/// A full flow table (a SYN flood, or more connections than configured):
/// established flows keep their servers (nothing is evicted), and a
/// connection that finds no room is forwarded untracked to the server its
/// flow hashes to, every packet alike, even with rr (which would otherwise
/// alternate per packet). The counters say so.
#[test]
fn a_full_flow_table_evicts_nothing_and_keeps_untracked_connections_together() {
    let opts = lb_userspace::dataplane::LoadOptions {
        flow_table_size: SMALL_TABLE,
        ..Default::default()
    };
    let mut t = ProgTest::with_service_and(seed_service([1, 1]), &opts).unwrap();
    let established: Vec<(u16, [u8; 6])> = (0..SMALL_TABLE as u16)
        .map(|i| (50000 + i, forwarded_to(&mut t, &syn(50000 + i).frame())))
        .collect();
    assert_eq!(
        t.counters().unwrap()[counters::FLOW_INSERT_FAILED as usize],
        0
    );
    // Full now. Untracked connections: each packet goes where the first did.
    let mut seen = std::collections::HashSet::new();
    for sport in 51000..51032u16 {
        let first = forwarded_to(&mut t, &syn(sport).frame());
        seen.insert(first);
        for _ in 0..4 {
            let ack = Ipv4Packet::tcp(CLIENT_IP, sport, VIP, PORT, TCP_ACK, b"x").frame();
            assert_eq!(
                forwarded_to(&mut t, &ack),
                first,
                "untracked flow {sport} moved"
            );
        }
    }
    assert_eq!(seen.len(), 2, "the flow hash spreads over both servers");
    // The established flows kept their servers.
    for (sport, mac) in &established {
        let ack = Ipv4Packet::tcp(CLIENT_IP, *sport, VIP, PORT, TCP_ACK, b"x").frame();
        assert_eq!(
            forwarded_to(&mut t, &ack),
            *mac,
            "established flow {sport} moved"
        );
    }
    let c = t.counters().unwrap();
    assert_eq!(c[counters::FLOW_INSERT_FAILED as usize], 32 * 5);
    // A quiesced server gets no untracked connection either.
    t.set_weight(0, 0).unwrap();
    for sport in 52000..52016u16 {
        assert_eq!(forwarded_to(&mut t, &syn(sport).frame()), RS2_MAC);
    }
}

/// Scale-out: a connection ECMP moves to a balancer that never saw it
/// arrives mid-stream (no SYN). With mh (ports hashed) two balancers
/// loaded separately send every such packet where the other sends it:
/// the hash decides, not a fresh pick. Counted as flow_midstream; a SYN
/// is not.
#[test]
fn a_mid_connection_packet_goes_where_the_hash_says_on_every_balancer() {
    const FLOWS: u16 = 64;
    let mh = || {
        let mut svc = service_with(lb_common::SchedulerKind::Mh, &[1, 1, 1, 1]);
        svc.sched_flags = lb_common::SCHED_FLAG_HASH_PORT;
        ProgTest::with_service(svc).unwrap()
    };
    let (mut first, mut second) = (mh(), mh());
    // The first balancer saw the connections open; the second sees only
    // their later packets.
    let mut servers = std::collections::HashSet::new();
    for sport in 40000..40000 + FLOWS {
        let opened = forwarded_to(&mut first, &syn(sport).frame());
        let ack = Ipv4Packet::tcp(CLIENT_IP, sport, VIP, PORT, TCP_ACK, b"x").frame();
        assert_eq!(forwarded_to(&mut second, &ack), opened, "port {sport}");
        servers.insert(opened);
    }
    // The ports spread over the servers (the hash is not constant).
    assert!(servers.len() > 1, "{servers:?}");
    let midstream = |t: &ProgTest| t.counters().unwrap()[counters::FLOW_MIDSTREAM as usize];
    assert_eq!(midstream(&first), 0);
    assert_eq!(midstream(&second), u64::from(FLOWS));
}
