//! Which VIPs this balancer announces, pure: a VIP is announced while the
//! balancer can serve it — the agent up and its data plane attached (it
//! announces nothing before), not draining, connection sync caught up
//! (a balancer that just joined would otherwise schedule connections its
//! peers own), and one of the VIP's services can serve: its quorum of
//! healthy real servers holds (keepalived's quorum) and, where a
//! vrrp_instance governs the VIP, this balancer is its MASTER.

use std::{collections::BTreeSet, net::IpAddr};

/// One virtual service as the announcement sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceReadiness {
    pub vip: IpAddr,
    /// `quorum` real servers are healthy.
    pub quorum_holds: bool,
    /// Passed, not balanced (a vrrp_instance governing the VIP is not MASTER).
    pub standby: bool,
}

/// What holds every announcement back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Holds {
    pub draining: bool,
    /// Connection sync has not had its catch-up time yet.
    pub catching_up: bool,
}

/// The VIPs to announce, sorted (IPv4 before IPv6).
pub fn announced(services: &[ServiceReadiness], holds: Holds) -> Vec<IpAddr> {
    if holds.draining || holds.catching_up {
        return Vec::new();
    }
    let vips: BTreeSet<IpAddr> = services
        .iter()
        .filter(|s| s.quorum_holds && !s.standby)
        .map(|s| s.vip)
        .collect();
    vips.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(172, 16, 122, 100));
    const VIP2: IpAddr = IpAddr::V4(Ipv4Addr::new(172, 16, 122, 101));

    fn svc(vip: IpAddr, quorum_holds: bool, standby: bool) -> ServiceReadiness {
        ServiceReadiness {
            vip,
            quorum_holds,
            standby,
        }
    }

    #[test]
    fn a_vip_is_announced_while_one_of_its_services_can_serve() {
        let none = Holds::default();
        assert_eq!(announced(&[svc(VIP, true, false)], none), vec![VIP]);
        // Quorum lost (only a sorry server, or nobody): withdrawn.
        assert!(announced(&[svc(VIP, false, false)], none).is_empty());
        // BACKUP of the instance that governs it: withdrawn.
        assert!(announced(&[svc(VIP, true, true)], none).is_empty());
        // Two ports of one VIP: one that can serve is enough; once.
        assert_eq!(
            announced(
                &[
                    svc(VIP, false, false),
                    svc(VIP, true, false),
                    svc(VIP2, true, false)
                ],
                none
            ),
            vec![VIP, VIP2]
        );
        // An IPv6 VIP beside them: after IPv4's.
        let vip6: IpAddr = "2001:db8:122::100".parse().unwrap();
        assert_eq!(
            announced(&[svc(vip6, true, false), svc(VIP, true, false)], none),
            vec![VIP, vip6]
        );
    }

    #[test]
    fn draining_and_catching_up_withdraw_everything() {
        let services = [svc(VIP, true, false)];
        for holds in [
            Holds {
                draining: true,
                catching_up: false,
            },
            Holds {
                draining: false,
                catching_up: true,
            },
        ] {
            assert!(announced(&services, holds).is_empty(), "{holds:?}");
        }
    }
}
