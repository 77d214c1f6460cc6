//! Connection sync's data-plane half through BPF_PROG_TEST_RUN (needs
//! root): what the program reports to the agent, and what it does not (a
//! plain flow-table hit, anything while sync is off).

use aya::maps::{MapData, RingBuf};
use lb_common::{
    FlowKey, FlowKey6, SYNC_EVENT_FLOW, SYNC_EVENT_TEMPLATE, SyncEvent, SyncEvent6,
    conntrack::{S_ESTABLISHED, S_FIN_WAIT, S_NONE, S_SYN_RECV},
    counters,
};
use lb_testbed::{packet::*, progtest::*};
use lb_userspace::planning::plan::Persistence;

const TCP_FIN_ACK: u8 = 0x11;

/// Every event waiting in the ring, each a `T` (SyncEvent, SyncEvent6:
/// the agent tells the families apart by length).
fn drain_as<T: Copy>(ring: &mut RingBuf<MapData>) -> Vec<T> {
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        assert_eq!(item.len(), size_of::<T>());
        // SAFETY: T is SyncEvent or SyncEvent6 (repr(C), plain integers),
        // the program writes them whole, and the length was checked.
        out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<T>()) });
    }
    out
}

fn drain(ring: &mut RingBuf<MapData>) -> Vec<SyncEvent> {
    drain_as(ring)
}

fn packet(sport: u16, flags: u8) -> Vec<u8> {
    Ipv4Packet::tcp(CLIENT_IP, sport, VIP, PORT, flags, b"").frame()
}

#[test]
fn new_connections_and_state_moves_are_reported_hits_are_not() {
    let mut t = ProgTest::seed().unwrap();
    // Sync off: the ring stays empty.
    let mut ring = {
        forwarded_to(&mut t, &packet(41000, TCP_SYN));
        t.enable_sync().unwrap()
    };
    assert_eq!(drain(&mut ring), []);

    forwarded_to(&mut t, &packet(41001, TCP_SYN));
    let events = drain(&mut ring);
    assert_eq!(events.len(), 1, "{events:?}");
    let e = events[0];
    assert_eq!(e.key, tcp_flow_key(CLIENT_IP, 41001));
    assert_eq!(
        (e.kind, e.state, e.service_id),
        (SYNC_EVENT_FLOW, S_SYN_RECV, 0)
    );
    let server = e.real_id;
    assert!(server == 1 || server == 2);

    // The handshake's ACK moves it to ESTABLISHED: reported.
    forwarded_to(&mut t, &packet(41001, TCP_ACK));
    let moved = drain(&mut ring);
    assert_eq!(
        moved
            .iter()
            .map(|e| (e.state, e.real_id))
            .collect::<Vec<_>>(),
        [(S_ESTABLISHED, server)]
    );
    // Plain hits: nothing.
    for _ in 0..5 {
        forwarded_to(&mut t, &packet(41001, TCP_ACK));
    }
    assert_eq!(drain(&mut ring), []);
    // FIN: FIN_WAIT, reported.
    forwarded_to(&mut t, &packet(41001, TCP_FIN_ACK));
    assert_eq!(
        drain(&mut ring).iter().map(|e| e.state).collect::<Vec<_>>(),
        [S_FIN_WAIT]
    );
    assert_eq!(t.counters().unwrap()[counters::SYNC_EVENT_LOST as usize], 0);
}

#[test]
fn a_new_persistence_template_is_reported_once() {
    let mut service = seed_service([1, 1]);
    service.persistence = Some(Persistence {
        timeout_s: 300,
        netmask: std::net::Ipv4Addr::new(255, 255, 255, 0),
        prefix6: lb_userspace::planning::plan::IPV6_HOST_PREFIX,
    });
    let mut t = ProgTest::with_service(service).unwrap();
    let mut ring = t.enable_sync().unwrap();
    forwarded_to(&mut t, &packet(42000, TCP_SYN));
    let first = drain(&mut ring);
    let kinds: Vec<u8> = first.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [SYNC_EVENT_TEMPLATE, SYNC_EVENT_FLOW], "{first:?}");
    let template = first[0];
    // Client network (/24) -> VIP:PORT, no client port.
    let mut net = CLIENT_IP.octets();
    net[3] = 0;
    assert_eq!(
        template.key,
        FlowKey {
            src: net,
            sport: 0,
            ..tcp_flow_key(CLIENT_IP, 42000)
        }
    );
    assert_eq!(template.state, S_NONE);
    assert_eq!(template.real_id, first[1].real_id);
    // The next connection of the client uses the template: a flow event only.
    forwarded_to(&mut t, &packet(42001, TCP_SYN));
    let second = drain(&mut ring);
    assert_eq!(
        second
            .iter()
            .map(|e| (e.kind, e.real_id))
            .collect::<Vec<_>>(),
        [(SYNC_EVENT_FLOW, template.real_id)]
    );
}

fn drain6(ring: &mut RingBuf<MapData>) -> Vec<SyncEvent6> {
    drain_as(ring)
}

#[test]
fn ipv6_connections_and_templates_are_reported_as_ipv6_events() {
    let mut service = seed_service6();
    service.persistence = Some(Persistence {
        timeout_s: 300,
        netmask: std::net::Ipv4Addr::BROADCAST,
        prefix6: 64,
    });
    let mut t = ProgTest::with_service(service).unwrap();
    let mut ring = t.enable_sync().unwrap();
    let packet6 = |flags| Ipv6Packet::tcp(CLIENT_IP6, 43000, VIP6, PORT, flags, b"").frame();
    forwarded_to(&mut t, &packet6(TCP_SYN));
    let first = drain6(&mut ring);
    let kinds: Vec<(u8, u8)> = first.iter().map(|e| (e.kind, e.state)).collect();
    assert_eq!(
        kinds,
        [(SYNC_EVENT_TEMPLATE, S_NONE), (SYNC_EVENT_FLOW, S_SYN_RECV)],
        "{first:?}"
    );
    let flow = FlowKey6 {
        src: CLIENT_IP6.octets(),
        dst: VIP6.octets(),
        sport: 43000u16.to_be(),
        dport: PORT.to_be(),
        proto: lb_common::IPPROTO_TCP,
        _pad: [0; 3],
    };
    assert_eq!(first[1].key, flow);
    // The template: the client's /64 -> [VIP6]:PORT, no client port.
    let mut net = CLIENT_IP6.octets();
    net[8..].fill(0);
    assert_eq!(
        first[0].key,
        FlowKey6 {
            src: net,
            sport: 0,
            ..flow
        }
    );
    assert_eq!(first[0].real_id, first[1].real_id);
    // ESTABLISHED is reported; plain hits are not.
    forwarded_to(&mut t, &packet6(TCP_ACK));
    forwarded_to(&mut t, &packet6(TCP_ACK));
    let moved: Vec<(u8, u32)> = drain6(&mut ring)
        .iter()
        .map(|e| (e.state, e.real_id))
        .collect();
    assert_eq!(moved, [(S_ESTABLISHED, first[1].real_id)]);
}
