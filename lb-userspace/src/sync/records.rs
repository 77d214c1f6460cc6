//! Between our maps and IPVS sync records, both ways, against the plan
//! (pure): a connection or template of this balancer becomes a record as
//! the kernel would send it; a record from another balancer becomes a
//! flow-table or template entry of the matching service and real server
//! here, or is refused with a reason.

use std::net::IpAddr;

use lb_common::{
    FlowEntry, FlowKey, FlowKey6, ForwardKind, IPPROTO_TCP, IPPROTO_UDP, LbGlobals, PersistEntry,
    PersistKey, PersistKey6,
    conntrack::{S_ESTABLISHED, S_UDP},
};

use super::codec::{SyncConn, conn_flags};
use crate::planning::plan::{Plan, PlannedReal, PlannedService};

/// IPVS's TCP states, IP_VS_TCP_S_NONE..IP_VS_TCP_S_LAST (ours share its
/// numbering up to SYNACK).
const IPVS_TCP_STATES: u16 = 11;
/// IPVS's one UDP state (IP_VS_UDP_S_NORMAL), and templates' (IP_VS_CTPL_S_NONE).
const IPVS_UDP_NORMAL: u16 = 0;

/// A record turned into an entry of our maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncedEntry {
    Flow(FlowKey, FlowEntry),
    Template(PersistKey, PersistEntry),
    Flow6(FlowKey6, FlowEntry),
    Template6(PersistKey6, PersistEntry),
}

/// Why a record was not applied (counted by reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No service of ours has the record's VIP, port and protocol.
    UnknownService,
    /// The service has no real server at the record's address and port.
    UnknownServer,
    /// A protocol or state we do not keep.
    BadState,
    /// The client's address is of another family than the VIP's.
    MixedFamilies,
}

impl Refused {
    pub fn reason(self) -> &'static str {
        match self {
            Refused::UnknownService => "unknown_service",
            Refused::UnknownServer => "unknown_server",
            Refused::BadState => "bad_state",
            Refused::MixedFamilies => "mixed_families",
        }
    }
}

/// A connection's addresses, ports (network order, as the data plane
/// keeps them) and protocol, of either family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

impl From<&FlowKey> for Tuple {
    fn from(k: &FlowKey) -> Self {
        Tuple {
            src: k.src.into(),
            dst: k.dst.into(),
            sport: k.sport,
            dport: k.dport,
            proto: k.proto,
        }
    }
}

impl From<&FlowKey6> for Tuple {
    fn from(k: &FlowKey6) -> Self {
        Tuple {
            src: k.src.into(),
            dst: k.dst.into(),
            sport: k.sport,
            dport: k.dport,
            proto: k.proto,
        }
    }
}

/// What a connection or template of ours is, as a record: the key as the
/// data plane keeps it (a template's: client network -> VIP:port, sport 0).
pub struct Local {
    pub key: Tuple,
    pub service_id: u32,
    pub real_id: u32,
    /// Our state (conntrack::S_*); ignored for templates.
    pub state: u8,
    pub template: bool,
}

fn service_by_id(plan: &Plan, service_id: u32) -> Option<&PlannedService> {
    plan.services.iter().find(|s| s.service_id == service_id)
}

fn real_by_id(svc: &PlannedService, real_id: u32) -> Option<&PlannedReal> {
    svc.reals
        .iter()
        .chain(svc.sorry.iter())
        .find(|r| r.real_id == real_id)
}

fn forward_flags(forward: ForwardKind) -> u32 {
    match forward {
        ForwardKind::Dr => conn_flags::DROUTE,
        ForwardKind::Tun => conn_flags::TUNNEL,
        ForwardKind::Nat => conn_flags::MASQ,
    }
}

/// The record the kernel would send for `local` (timeouts: the connection
/// timeouts in force here). None when the plan no longer has its service
/// or server (a reload removed it).
pub fn record_of(plan: &Plan, timeouts: &LbGlobals, local: &Local) -> Option<SyncConn> {
    let svc = service_by_id(plan, local.service_id)?;
    let real = real_by_id(svc, local.real_id)?;
    let vport = u16::from_be(local.key.dport);
    // A real server of an all-ports service has port 0: the client's port.
    let dport = if real.port == 0 { vport } else { real.port };
    let (flags, state, timeout_s) = if local.template {
        (
            conn_flags::TEMPLATE,
            0,
            svc.persistence.as_ref().map_or(0, |p| p.timeout_s),
        )
    } else {
        let inactive = if local.state == S_ESTABLISHED {
            0
        } else {
            conn_flags::INACTIVE
        };
        let wire_state = if local.state == S_UDP {
            IPVS_UDP_NORMAL
        } else {
            u16::from(local.state)
        };
        (inactive, wire_state, timeouts.timeout_s(local.state))
    };
    Some(SyncConn {
        protocol: local.key.proto,
        flags: flags | forward_flags(svc.forward),
        state,
        cport: u16::from_be(local.key.sport),
        vport,
        dport,
        fwmark: 0,
        timeout_s,
        caddr: local.key.src,
        vaddr: local.key.dst,
        daddr: real.ip,
    })
}

/// Our service for a record: its VIP, port and protocol, else the VIP's
/// all-ports service.
fn service_of<'a>(plan: &'a Plan, conn: &SyncConn) -> Option<&'a PlannedService> {
    let matches = |s: &&PlannedService, port: u16| {
        s.vip == conn.vaddr && s.port == port && s.protocol.number() == conn.protocol
    };
    plan.services
        .iter()
        .find(|s| matches(s, conn.vport))
        .or_else(|| plan.services.iter().find(|s| matches(s, 0)))
}

/// The entry of our maps a record stands for, `now_ns` its last-seen time
/// (the record's arrival: IPVS restarts a synced connection's timer too).
pub fn entry_of(plan: &Plan, conn: &SyncConn, now_ns: u64) -> Result<SyncedEntry, Refused> {
    if conn.protocol != IPPROTO_TCP && conn.protocol != IPPROTO_UDP {
        return Err(Refused::BadState);
    }
    let svc = service_of(plan, conn).ok_or(Refused::UnknownService)?;
    let real = svc
        .reals
        .iter()
        .chain(svc.sorry.iter())
        .find(|r| r.ip == conn.daddr && (r.port == 0 || r.port == conn.dport))
        .ok_or(Refused::UnknownServer)?;
    if conn.flags & conn_flags::TEMPLATE != 0 {
        let persistence = svc.persistence.as_ref().ok_or(Refused::UnknownService)?;
        let template = PersistEntry {
            real_id: real.real_id,
            service_id: svc.service_id,
            mask: persistence.map_mask(svc.vip.is_ipv6()),
            _pad: 0,
            last_seen_ns: now_ns,
        };
        let vport = svc.port.to_be();
        return Ok(match (conn.caddr, conn.vaddr) {
            (IpAddr::V4(client_net), IpAddr::V4(vip)) => SyncedEntry::Template(
                PersistKey {
                    client_net: client_net.octets(),
                    vip: vip.octets(),
                    vport,
                    proto: conn.protocol,
                    _pad: 0,
                },
                template,
            ),
            (IpAddr::V6(client_net), IpAddr::V6(vip)) => SyncedEntry::Template6(
                PersistKey6 {
                    client_net: client_net.octets(),
                    vip: vip.octets(),
                    vport,
                    proto: conn.protocol,
                    _pad: 0,
                },
                template,
            ),
            _ => return Err(Refused::MixedFamilies),
        });
    }
    let state = match conn.protocol {
        IPPROTO_TCP if conn.state < IPVS_TCP_STATES => conn.state as u8,
        IPPROTO_UDP if conn.state == IPVS_UDP_NORMAL => S_UDP,
        _ => return Err(Refused::BadState),
    };
    let flow = FlowEntry {
        real_id: real.real_id,
        service_id: svc.service_id,
        last_seen_ns: now_ns,
        state,
        _pad: [0; 7],
    };
    let (sport, dport) = (conn.cport.to_be(), conn.vport.to_be());
    Ok(match (conn.caddr, conn.vaddr) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => SyncedEntry::Flow(
            FlowKey {
                src: src.octets(),
                dst: dst.octets(),
                sport,
                dport,
                proto: conn.protocol,
                _pad: [0; 3],
            },
            flow,
        ),
        (IpAddr::V6(src), IpAddr::V6(dst)) => SyncedEntry::Flow6(
            FlowKey6 {
                src: src.octets(),
                dst: dst.octets(),
                sport,
                dport,
                proto: conn.protocol,
                _pad: [0; 3],
            },
            flow,
        ),
        _ => return Err(Refused::MixedFamilies),
    })
}

#[cfg(test)]
mod tests {
    use lb_common::conntrack::{S_FIN_WAIT, S_SYN_RECV};

    use super::*;
    use crate::{config::parse, planning::plan::plan};

    const SEED: &str = include_str!("../../../configs/seed-dr.toml");

    fn seed() -> Plan {
        plan(&parse("seed", SEED).unwrap())
    }

    fn key(sport: u16) -> FlowKey {
        FlowKey {
            src: [172, 16, 122, 50],
            dst: [172, 16, 122, 100],
            sport: sport.to_be(),
            dport: 80u16.to_be(),
            proto: IPPROTO_TCP,
            _pad: [0; 3],
        }
    }

    fn flow(plan: &Plan, sport: u16, real: usize, state: u8) -> Local {
        Local {
            key: (&key(sport)).into(),
            service_id: plan.services[0].service_id,
            real_id: plan.services[0].reals[real].real_id,
            state,
            template: false,
        }
    }

    #[test]
    fn a_connection_goes_out_as_the_kernel_would_send_it_and_comes_back_the_same() {
        let plan = seed();
        let globals = lb_userspace_timeouts();
        let local = flow(&plan, 40000, 1, S_ESTABLISHED);
        let rec = record_of(&plan, &globals, &local).unwrap();
        assert_eq!(rec.flags, conn_flags::DROUTE, "established: active, DR");
        assert_eq!((rec.state, rec.timeout_s), (1, 900));
        assert_eq!((rec.cport, rec.vport, rec.dport), (40000, 80, 80));
        assert_eq!(rec.daddr, IpAddr::from([172, 16, 122, 195]));
        let SyncedEntry::Flow(k, e) = entry_of(&plan, &rec, 7).unwrap() else {
            panic!("a flow")
        };
        assert_eq!(Tuple::from(&k), local.key);
        assert_eq!(
            (e.real_id, e.service_id, e.state),
            (local.real_id, 0, S_ESTABLISHED)
        );
        assert_eq!(e.last_seen_ns, 7);
        // Not established: INACTIVE, the state's own timeout.
        let fin = record_of(&plan, &globals, &flow(&plan, 40001, 0, S_FIN_WAIT)).unwrap();
        assert_eq!(fin.flags, conn_flags::DROUTE | conn_flags::INACTIVE);
        assert_eq!(fin.timeout_s, 120);
        let syn = record_of(&plan, &globals, &flow(&plan, 40002, 0, S_SYN_RECV)).unwrap();
        assert_eq!(syn.state, 3);
    }

    fn lb_userspace_timeouts() -> LbGlobals {
        crate::dataplane::ConnTimeouts::default().as_globals()
    }

    #[test]
    fn records_for_what_we_do_not_serve_are_refused() {
        let plan = seed();
        let globals = lb_userspace_timeouts();
        let good = record_of(&plan, &globals, &flow(&plan, 40000, 0, S_ESTABLISHED)).unwrap();
        let other_vip = SyncConn {
            vaddr: IpAddr::from([10, 9, 9, 9]),
            ..good
        };
        assert_eq!(entry_of(&plan, &other_vip, 0), Err(Refused::UnknownService));
        let other_port = SyncConn { vport: 443, ..good };
        assert_eq!(
            entry_of(&plan, &other_port, 0),
            Err(Refused::UnknownService)
        );
        let other_real = SyncConn {
            daddr: IpAddr::from([172, 16, 122, 77]),
            ..good
        };
        assert_eq!(entry_of(&plan, &other_real, 0), Err(Refused::UnknownServer));
        let bad_state = SyncConn { state: 11, ..good };
        assert_eq!(entry_of(&plan, &bad_state, 0), Err(Refused::BadState));
        let icmp = SyncConn {
            protocol: 1,
            ..good
        };
        assert_eq!(entry_of(&plan, &icmp, 0), Err(Refused::BadState));
        // A template for a service without persistence: no such service.
        let template = SyncConn {
            flags: conn_flags::TEMPLATE,
            ..good
        };
        assert_eq!(entry_of(&plan, &template, 0), Err(Refused::UnknownService));
        assert_eq!(Refused::UnknownServer.reason(), "unknown_server");
        // A record for a service or server a reload removed: not sent.
        let gone = Local {
            service_id: 99,
            ..flow(&plan, 1, 0, S_ESTABLISHED)
        };
        assert_eq!(record_of(&plan, &globals, &gone), None);
    }

    #[test]
    fn templates_and_udp_flows_round_trip() {
        let text = SEED.replace(
            "persistence_timeout = 0",
            "persistence_timeout = 360\npersistence_granularity = \"255.255.255.0\"",
        );
        assert_ne!(text, SEED);
        let plan = plan(&parse("p", &text).unwrap());
        let globals = lb_userspace_timeouts();
        let net = FlowKey {
            src: [172, 16, 122, 0],
            sport: 0,
            ..key(0)
        };
        let local = Local {
            key: (&net).into(),
            service_id: 0,
            real_id: plan.services[0].reals[0].real_id,
            state: 0,
            template: true,
        };
        let rec = record_of(&plan, &globals, &local).unwrap();
        assert_eq!(rec.flags, conn_flags::TEMPLATE | conn_flags::DROUTE);
        assert_eq!((rec.timeout_s, rec.cport), (360, 0));
        let SyncedEntry::Template(k, e) = entry_of(&plan, &rec, 5).unwrap() else {
            panic!("a template")
        };
        assert_eq!(k.client_net, [172, 16, 122, 0]);
        assert_eq!(k.vport, 80u16.to_be());
        assert_eq!(e.real_id, local.real_id);
        assert_eq!(e.mask, u32::from_ne_bytes([255, 255, 255, 0]));
        // UDP: IPVS's one state 0 on the wire, ours S_UDP.
        let udp_text = SEED.replace("protocol = \"TCP\"", "protocol = \"UDP\"");
        let udp_plan = plan_of(&udp_text);
        let udp_key = FlowKey {
            proto: IPPROTO_UDP,
            ..key(5000)
        };
        let udp = Local {
            key: (&udp_key).into(),
            service_id: 0,
            real_id: udp_plan.services[0].reals[0].real_id,
            state: S_UDP,
            template: false,
        };
        let rec = record_of(&udp_plan, &globals, &udp).unwrap();
        assert_eq!((rec.state, rec.timeout_s), (0, 300));
        let SyncedEntry::Flow(_, e) = entry_of(&udp_plan, &rec, 0).unwrap() else {
            panic!("a flow")
        };
        assert_eq!(e.state, S_UDP);
    }

    fn plan_of(text: &str) -> Plan {
        plan(&parse("x", text).unwrap())
    }

    const DUAL_STACK: &str = include_str!("../../../configs/dual-stack.toml");

    #[test]
    fn ipv6_connections_and_templates_round_trip() {
        let text = DUAL_STACK.replace(
            "lb_algo = \"rr\"\nlb_kind = \"DR\"\n\n  [[virtual_server.real_server]]\n  ip = \"2001",
            "lb_algo = \"rr\"\nlb_kind = \"DR\"\npersistence_timeout = 300\npersistence_granularity = 64\n\n  [[virtual_server.real_server]]\n  ip = \"2001",
        );
        assert_ne!(text, DUAL_STACK);
        let plan = plan_of(&text);
        let svc = &plan.services[1];
        assert!(svc.vip.is_ipv6());
        let globals = lb_userspace_timeouts();
        let ip6 = |last: u16| std::net::Ipv6Addr::new(0x2001, 0xdb8, 0x122, 0, 0, 0, 0, last);
        let key = FlowKey6 {
            src: ip6(0x50).octets(),
            dst: ip6(0x100).octets(),
            sport: 40000u16.to_be(),
            dport: 80u16.to_be(),
            proto: IPPROTO_TCP,
            _pad: [0; 3],
        };
        let local = Local {
            key: (&key).into(),
            service_id: svc.service_id,
            real_id: svc.reals[1].real_id,
            state: S_ESTABLISHED,
            template: false,
        };
        let rec = record_of(&plan, &globals, &local).unwrap();
        assert_eq!(rec.daddr, IpAddr::V6(ip6(0x195)));
        assert_eq!(
            (rec.flags, rec.cport, rec.timeout_s),
            (conn_flags::DROUTE, 40000, 900)
        );
        let entry = entry_of(&plan, &rec, 3).unwrap();
        let SyncedEntry::Flow6(k, e) = entry else {
            panic!("an IPv6 flow: {entry:?}")
        };
        assert_eq!(k, key);
        assert_eq!(
            (e.real_id, e.service_id, e.state),
            (local.real_id, svc.service_id, S_ESTABLISHED)
        );

        // A template: the client's /64 -> the service, its prefix length kept.
        let net = PersistKey6 {
            client_net: PersistKey6::client_net_of(&ip6(0x50).octets(), 64),
            vip: ip6(0x100).octets(),
            vport: 80u16.to_be(),
            proto: IPPROTO_TCP,
            _pad: 0,
        };
        let template = Local {
            key: (&net.as_flow_key()).into(),
            state: 0,
            template: true,
            ..local
        };
        let rec = record_of(&plan, &globals, &template).unwrap();
        assert_eq!(rec.flags, conn_flags::TEMPLATE | conn_flags::DROUTE);
        let entry = entry_of(&plan, &rec, 3).unwrap();
        let SyncedEntry::Template6(k, e) = entry else {
            panic!("an IPv6 template: {entry:?}")
        };
        assert_eq!(k, net);
        assert_eq!((e.real_id, e.mask), (local.real_id, 64));

        // A client of the other family than the VIP's: refused.
        let mixed = SyncConn {
            caddr: IpAddr::from([172, 16, 122, 50]),
            ..record_of(&plan, &globals, &local).unwrap()
        };
        assert_eq!(entry_of(&plan, &mixed, 0), Err(Refused::MixedFamilies));
    }
}
