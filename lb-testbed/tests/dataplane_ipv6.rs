//! IPv6 through the real XDP programs (BPF_PROG_TEST_RUN, needs root): `lb`
//! hands every frame that is not IPv4 to `lb6` by tail call. DR over IPv6
//! (exact output bytes), every scheduler, the flow table and its counters, the expiry
//! sweep, and the written policy for what is not balanced: ICMPv6
//! (neighbour discovery), extension headers and fragments pass untouched,
//! each counted.

use std::net::Ipv6Addr;

use lb_common::{
    IPPROTO_TCP, LOCALITY_DEFAULT_EXPIRATION_S, SchedulerKind,
    conntrack::{S_ESTABLISHED, S_SYN_RECV},
    counters,
};
use lb_testbed::{packet::*, progtest::*, sched_model::*};
use lb_userspace::{dataplane::ConnTimeouts, planning::plan::PlannedService};

fn syn6(sport: u16) -> Ipv6Packet {
    Ipv6Packet::tcp(CLIENT_IP6, sport, VIP6, PORT, TCP_SYN, b"")
}

fn ipv6_service() -> ProgTest {
    ProgTest::with_service(seed_service6()).unwrap()
}

#[test]
fn dr_over_ipv6_rewrites_exactly_the_two_macs() {
    let mut t = ipv6_service();
    for vlan in [None, Some(42)] {
        let mut p = syn6(40000 + vlan.unwrap_or(0));
        p.vlan = vlan;
        let input = p.frame();
        let (verdict, out) = t.run(&input).unwrap();
        assert_eq!(verdict, XDP_TX, "vlan {vlan:?}");
        let mut expected = input.clone();
        expected[0..6].copy_from_slice(&out[0..6]);
        expected[6..12].copy_from_slice(&LB_MAC);
        assert_eq!(out, expected, "only the MACs change (vlan {vlan:?})");
        assert!([RS1_MAC, RS2_MAC].contains(&out[0..6].try_into().unwrap()));
    }
    let c = t.counters().unwrap();
    assert_eq!(c[counters::FLOW_NEW as usize], 2);
    assert_eq!(c[counters::TX as usize], 2);
}

#[test]
fn ipv6_flows_keep_their_server_and_rr_alternates() {
    let mut t = ipv6_service();
    let chosen: Vec<[u8; 6]> = (0..6)
        .map(|i| forwarded_to(&mut t, &syn6(41000 + i).frame()))
        .collect();
    let expected: Vec<[u8; 6]> = (0..6)
        .map(|i| if i % 2 == 0 { RS1_MAC } else { RS2_MAC })
        .collect();
    assert_eq!(chosen, expected, "rr over IPv6 flows");
    for payload in [&b""[..], b"GET / HTTP/1.1\r\n\r\n"] {
        let p = Ipv6Packet::tcp(CLIENT_IP6, 41001, VIP6, PORT, TCP_ACK, payload);
        assert_eq!(forwarded_to(&mut t, &p.frame()), RS2_MAC);
    }
    let c = t.counters().unwrap();
    assert_eq!(c[counters::FLOW_HIT as usize], 2);
    assert_eq!(c[counters::FLOW_NEW as usize], 6);
}

#[test]
fn ipv6_connections_are_counted_and_expire() {
    let mut t = ipv6_service();
    let send = |t: &mut ProgTest, flags| {
        let p = Ipv6Packet::tcp(CLIENT_IP6, 40000, VIP6, PORT, flags, b"");
        assert_eq!(t.run(&p.frame()).unwrap().0, XDP_TX);
    };
    send(&mut t, TCP_SYN);
    assert_eq!(t.dp.real_conns(1), (0, 1), "SYN_RECV is inactive");
    send(&mut t, TCP_ACK);
    assert_eq!(t.dp.real_conns(1), (1, 0), "ESTABLISHED is active");
    assert_eq!(t.dp.real_conns(2), (0, 0));
    let flows = t.dp.ipv6_flows().unwrap();
    assert_eq!(flows.len(), 1);
    let (key, entry) = flows[0];
    assert_eq!(key.src, CLIENT_IP6.octets());
    assert_eq!(key.dst, VIP6.octets());
    assert_eq!(key.proto, IPPROTO_TCP);
    assert_eq!((entry.real_id, entry.state), (1, S_ESTABLISHED));
    assert_ne!(S_ESTABLISHED, S_SYN_RECV);
    // The sweep expires IPv6 flows as IPv4 ones, and uncounts them.
    let short = ConnTimeouts {
        tcp: 1,
        ..Default::default()
    };
    assert_eq!(t.dp.sweep_expired(short).unwrap(), 0);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(t.dp.sweep_expired(short).unwrap(), 1);
    assert!(t.dp.ipv6_flows().unwrap().is_empty());
    assert_eq!(t.dp.real_conns(1), (0, 0));
}

#[test]
fn ipv4_traffic_is_unchanged_beside_an_ipv6_service() {
    let mut t = ipv6_service();
    // No IPv4 service: the seed's VIP passes.
    let v4 = Ipv4Packet::tcp(CLIENT_IP, 40000, VIP, PORT, TCP_SYN, b"").frame();
    assert_passes_unmodified(&mut t, "IPv4 to a VIP that is no service here", &v4);
    // An IPv4-only data plane passes IPv6 to the same address untouched.
    let mut v4only = ProgTest::seed().unwrap();
    assert_passes_unmodified(
        &mut v4only,
        "IPv6 with no IPv6 service",
        &syn6(40000).frame(),
    );
    let c = v4only.counters().unwrap();
    assert_eq!(c[counters::PASS_NO_SERVICE as usize], 1);
}

#[test]
fn what_is_not_balanced_over_ipv6_passes_untouched_and_counted() {
    let mut t = ipv6_service();
    let other = Ipv6Addr::new(0x2001, 0xdb8, 0x122, 0, 0, 0, 0, 0x188);
    let mut truncated = syn6(40004).frame();
    truncated.truncate(truncated.len() - 4);
    let cases: Vec<(&str, Vec<u8>, u32)> = vec![
        (
            "neighbour solicitation for the VIP",
            neighbour_solicitation(CLIENT_IP6, VIP6),
            counters::PASS_IPV6_NOT_TCP_UDP,
        ),
        (
            "hop-by-hop options before TCP",
            syn6(40001).with_extension(IPV6_HOP_BY_HOP).frame(),
            counters::PASS_IPV6_EXT_HEADER,
        ),
        (
            "first fragment of a TCP segment",
            syn6(40002).with_extension(IPV6_FRAGMENT).frame(),
            counters::PASS_IPV6_EXT_HEADER,
        ),
        (
            "SSH to the VIP",
            Ipv6Packet::tcp(CLIENT_IP6, 40003, VIP6, 22, TCP_SYN, b"").frame(),
            counters::PASS_NO_SERVICE,
        ),
        (
            "HTTP to another address",
            Ipv6Packet::tcp(CLIENT_IP6, 40003, other, PORT, TCP_SYN, b"").frame(),
            counters::PASS_NO_SERVICE,
        ),
        (
            "payload length beyond the frame",
            truncated,
            counters::PASS_MALFORMED,
        ),
        (
            "UDP to the TCP service's port",
            Ipv6Packet::udp(CLIENT_IP6, 40005, VIP6, PORT, b"x").frame(),
            counters::PASS_NO_SERVICE,
        ),
    ];
    for (what, frame, counter) in &cases {
        let before = t.counters().unwrap()[*counter as usize];
        assert_passes_unmodified(&mut t, what, frame);
        let after = t.counters().unwrap()[*counter as usize];
        assert_eq!(after, before + 1, "{what}: counted");
    }
    assert_eq!(t.counters().unwrap()[counters::TX as usize], 0);
}

/// The seed's IPv6 service with `scheduler` over three servers of weights
/// 1, 2, 3 (2001:db8:122::193, ::194, ::195; real ids 1-3).
fn ipv6_service_with(scheduler: SchedulerKind) -> PlannedService {
    let mut svc = service_with(scheduler, &[1, 2, 3]);
    svc.vip = VIP6.into();
    for (i, r) in svc.reals.iter_mut().enumerate() {
        r.ip = Ipv6Addr::new(0x2001, 0xdb8, 0x122, 0, 0, 0, 0, 0x193 + i as u16).into();
    }
    svc
}

/// Every IPVS scheduler over IPv6 flows, against the reference model of
/// its ip_vs_*.c where its choice is deterministic (the hashing ones fed
/// IPVS's fold of the IPv6 address); every flow counted on its server and
/// kept there.
#[test]
fn every_scheduler_places_ipv6_flows_as_ipvs_would() {
    use SchedulerKind::*;
    const FLOWS: u16 = 12;
    for kind in [
        Rr, Wrr, Lc, Wlc, Sed, Nq, Fo, Ovf, Twos, Dh, Sh, Mh, Lblc, Lblcr,
    ] {
        let svc = ipv6_service_with(kind);
        let mut dests: Vec<Dest> = svc
            .reals
            .iter()
            .map(|r| Dest::new(r.ip, r.port, r.weight))
            .collect();
        let mut t = ProgTest::with_service(svc).unwrap();
        let (mut rr, mut wrr) = (RrModel::default(), WrrModel::new(&[1, 2, 3]));
        let (mut lblc, mut lblcr) = (LblcModel::default(), LblcrModel::default());
        for i in 0..FLOWS {
            let src = Ipv6Addr::new(0x2001, 0xdb8, 0x50, i, 0x17, 0, i * 7, 0x50 + i);
            let sport = 40000 + i;
            let frame = Ipv6Packet::tcp(src, sport, VIP6, PORT, TCP_SYN, b"").frame();
            // The model's choice from the counts before this flow (None:
            // twos, random by design).
            let model = match kind {
                Rr => Some(rr.pick(&dests)),
                Wrr => Some(wrr.pick()),
                Lc => Some(lc(&dests)),
                Wlc => Some(wlc(&dests)),
                Sed => Some(sed(&dests)),
                Nq => Some(nq(&dests)),
                Fo => Some(fo(&dests)),
                Ovf => Some(ovf(&dests)),
                Dh => Some(dh(&dests, VIP6)),
                // Without sh-port / mh-port the port is not hashed.
                Sh => Some(sh(&dests, src, 0, false)),
                Mh => Some(mh(&dests, src, 0, false)),
                // One destination (the models key it by any one address).
                Lblc => Some(lblc.pick(&dests, VIP)),
                Lblcr => Some(lblcr.pick(&dests, VIP, 0, LOCALITY_DEFAULT_EXPIRATION_S.into())),
                Twos => None,
            };
            let (verdict, out) = t.run(&frame).unwrap();
            if model == Some(None) {
                // ovf once every server has its weight in active connections.
                assert_eq!(verdict, XDP_DROP, "{kind:?}, flow {i}: no server");
                continue;
            }
            assert_eq!(verdict, XDP_TX, "{kind:?}, flow {i}");
            let mac: [u8; 6] = out[0..6].try_into().unwrap();
            let server = (0..dests.len())
                .find(|&s| real_mac(s) == mac)
                .unwrap_or_else(|| panic!("{kind:?}: forwarded to an unknown MAC"));
            if let Some(expected) = model {
                assert_eq!(Some(server), expected, "{kind:?}, flow {i}");
            }
            dests[server].inactive += 1;
            // The flow's next packet stays on its server.
            let ack = Ipv6Packet::tcp(src, sport, VIP6, PORT, TCP_ACK, b"x").frame();
            assert_eq!(forwarded_to(&mut t, &ack), mac, "{kind:?}: flow {i} moved");
            dests[server].inactive -= 1;
            dests[server].active += 1;
        }
        for (s, d) in dests.iter().enumerate() {
            let id = s as u32 + 1;
            assert_eq!(
                t.dp.real_conns(id),
                (d.active, d.inactive),
                "{kind:?}: server {s}'s counts"
            );
        }
    }
}
