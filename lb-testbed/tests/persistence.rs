//! Persistence (ipvsadm -p / -M) in the real XDP program (needs root):
//! templates keep a client network on its server across connections, are
//! counted per server, re-armed while they control a connection and
//! released persistence_timeout after the last one.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    thread::sleep,
    time::Duration,
};

use lb_common::SchedulerKind;
use lb_testbed::{packet::*, progtest::*};
use lb_userspace::{
    dataplane::ConnTimeouts,
    planning::plan::{IPV6_HOST_PREFIX, Persistence},
};

fn persistent(timeout_s: u32, netmask: Ipv4Addr) -> ProgTest {
    let mut svc = service_with(SchedulerKind::Rr, &[1, 1]);
    svc.persistence = Some(Persistence {
        timeout_s,
        netmask,
        prefix6: IPV6_HOST_PREFIX,
    });
    ProgTest::with_service(svc).unwrap()
}

/// The server (index) a SYN from src:sport to VIP:dport went to.
fn connect(t: &mut ProgTest, src: Ipv4Addr, sport: u16, dport: u16) -> usize {
    let frame = Ipv4Packet::tcp(src, sport, VIP, dport, TCP_SYN, b"").frame();
    let (verdict, out) = t.run(&frame).unwrap();
    assert_eq!(verdict, XDP_TX, "{src}:{sport} -> VIP:{dport}");
    (0..2).find(|&i| real_mac(i) == out[0..6]).unwrap()
}

const A: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 7);
const A_NEIGHBOUR: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 8);
const B: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 7);
const HOST: Ipv4Addr = Ipv4Addr::BROADCAST;

#[test]
fn a_client_keeps_its_server_across_connections() {
    let mut t = persistent(300, HOST);
    let first = connect(&mut t, A, 40_000, PORT);
    for sport in 40_001..40_010 {
        assert_eq!(
            connect(&mut t, A, sport, PORT),
            first,
            "rr alone would alternate"
        );
    }
    // The next client gets the next server from rr; one template each.
    let other = connect(&mut t, B, 40_000, PORT);
    assert_ne!(other, first);
    assert_eq!(t.dp.real_templates(first as u32 + 1), 1);
    assert_eq!(t.dp.real_templates(other as u32 + 1), 1);
    // ActiveConn/InActConn still count connections, not templates.
    assert_eq!(t.dp.real_conns(first as u32 + 1), (0, 10));
}

#[test]
fn granularity_groups_a_client_network() {
    let mut t = persistent(300, Ipv4Addr::new(255, 255, 255, 0));
    let a = connect(&mut t, A, 40_000, PORT);
    assert_eq!(connect(&mut t, A_NEIGHBOUR, 40_000, PORT), a, "same /24");
    assert_ne!(connect(&mut t, B, 40_000, PORT), a, "another /24");
}

#[test]
fn a_template_lives_while_it_has_connections_then_timeout_seconds() {
    let mut t = persistent(1, HOST);
    let first = connect(&mut t, A, 40_000, PORT);
    sleep(Duration::from_millis(1100));
    // Past its timeout, but the connection it made is alive: re-armed.
    t.dp.sweep_expired(ConnTimeouts::default()).unwrap();
    assert_eq!(connect(&mut t, A, 40_001, PORT), first);
    // Both connections end; a timeout later the template goes.
    assert!(t.dp.remove_flow(&tcp_flow_key(A, 40_000)).unwrap());
    assert!(t.dp.remove_flow(&tcp_flow_key(A, 40_001)).unwrap());
    sleep(Duration::from_millis(1100));
    t.dp.sweep_expired(ConnTimeouts::default()).unwrap();
    assert_eq!(t.dp.real_templates(first as u32 + 1), 0);
    // Released: the client is scheduled anew (rr moves on).
    assert_ne!(connect(&mut t, A, 40_002, PORT), first);
}

#[test]
fn a_template_whose_server_failed_is_rescheduled() {
    let mut t = persistent(300, HOST);
    let first = connect(&mut t, A, 40_000, PORT);
    t.set_health(first as u32 + 1, false).unwrap();
    let now = connect(&mut t, A, 40_001, PORT);
    assert_ne!(now, first);
    assert_eq!(t.dp.real_templates(first as u32 + 1), 0);
    assert_eq!(t.dp.real_templates(now as u32 + 1), 1);
    // A quiesced (weight 0) server keeps its persistent clients, as IPVS.
    t.set_weight(now, 0).unwrap();
    assert_eq!(connect(&mut t, A, 40_002, PORT), now);
}

#[test]
fn a_port_zero_service_takes_every_port_of_the_vip() {
    let mut svc = service_with(SchedulerKind::Rr, &[1, 1]);
    svc.port = 0;
    svc.reals.iter_mut().for_each(|r| r.port = 0);
    svc.persistence = Some(Persistence {
        timeout_s: 300,
        netmask: HOST,
        prefix6: IPV6_HOST_PREFIX,
    });
    let mut t = ProgTest::with_service(svc).unwrap();
    let first = connect(&mut t, A, 40_000, 443);
    assert_eq!(connect(&mut t, A, 40_001, 80), first);
    assert_eq!(connect(&mut t, A, 40_002, 22), first);
    // UDP is another service (none here): passed.
    let udp = Ipv4Packet::udp(A, 5000, VIP, 53, b"q").frame();
    assert_eq!(t.run(&udp).unwrap().0, XDP_PASS);
}

/// An IPv6 client network (persistence_granularity as a prefix length, as
/// ipvsadm -M takes it for IPv6) keeps its server; its template lives
/// while a connection under it does, then goes.
#[test]
fn ipv6_clients_keep_their_server_by_prefix() {
    let mut svc = service_with(SchedulerKind::Rr, &[1, 1]);
    svc.vip = VIP6.into();
    for (i, r) in svc.reals.iter_mut().enumerate() {
        r.ip = Ipv6Addr::new(0x2001, 0xdb8, 0x122, 0, 0, 0, 0, 0x193 + 2 * i as u16).into();
    }
    svc.persistence = Some(Persistence {
        timeout_s: 1,
        netmask: HOST,
        prefix6: 64,
    });
    let mut t = ProgTest::with_service(svc).unwrap();
    let client = |net: u16, host: u16| Ipv6Addr::new(0x2001, 0xdb8, 0x50, net, 0, 0, 0, host);
    let connect6 = |t: &mut ProgTest, src: Ipv6Addr, sport: u16| {
        let frame = Ipv6Packet::tcp(src, sport, VIP6, PORT, TCP_SYN, b"").frame();
        let (verdict, out) = t.run(&frame).unwrap();
        assert_eq!(verdict, XDP_TX, "[{src}]:{sport}");
        // Established: its timeout is the one `short` shortens below.
        let ack = Ipv6Packet::tcp(src, sport, VIP6, PORT, TCP_ACK, b"").frame();
        assert_eq!(t.run(&ack).unwrap().0, XDP_TX);
        (0..2).find(|&i| real_mac(i) == out[0..6]).unwrap()
    };
    let first = connect6(&mut t, client(1, 7), 40_000);
    for (host, sport) in [(7, 40_001), (8, 40_000), (0xffff, 40_002)] {
        assert_eq!(connect6(&mut t, client(1, host), sport), first, "same /64");
    }
    assert_ne!(connect6(&mut t, client(2, 7), 40_000), first, "another /64");
    assert_eq!(t.dp.real_templates(first as u32 + 1), 1);
    // Past its timeout with connections alive: re-armed, still used.
    sleep(Duration::from_millis(1100));
    t.dp.sweep_expired(ConnTimeouts::default()).unwrap();
    assert_eq!(t.dp.real_templates(first as u32 + 1), 1);
    assert_eq!(connect6(&mut t, client(1, 9), 40_000), first);
    // Its connections expire (1 s timeouts), then the template.
    let short = ConnTimeouts {
        tcp: 1,
        tcpfin: 1,
        udp: 1,
        ..Default::default()
    };
    sleep(Duration::from_millis(1100));
    t.dp.sweep_expired(short).unwrap();
    assert!(t.dp.ipv6_flows().unwrap().is_empty());
    sleep(Duration::from_millis(1100));
    t.dp.sweep_expired(short).unwrap();
    assert_eq!(t.dp.real_templates(first as u32 + 1), 0);
}
