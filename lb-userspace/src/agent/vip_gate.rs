//! Which VIPs this balancer balances now. A VIP that some vrrp_instance
//! governs is balanced only while that instance is MASTER here (standby:
//! its packets go to the kernel untouched); every other VIP always.

use std::{collections::HashSet, net::IpAddr};

use crate::vrrp::instance::InstanceConfig;

#[derive(Debug, Default)]
pub struct VipGate {
    /// VIPs some vrrp_instance governs.
    governed: HashSet<IpAddr>,
    /// VIPs of the instances that are MASTER here now.
    master: HashSet<IpAddr>,
}

impl VipGate {
    /// The instances' VIPs; `master`: those a previous agent was MASTER for
    /// (hitless restart), balanced from the start.
    pub fn new(instances: &[InstanceConfig], master: HashSet<IpAddr>) -> Self {
        Self {
            governed: governed_by(instances),
            master,
        }
    }

    /// Packets to `vip` go to the kernel: governed, and not MASTER for it.
    pub fn standby(&self, vip: IpAddr) -> bool {
        self.governed.contains(&vip) && !self.master.contains(&vip)
    }

    /// An instance of `vips` became MASTER (`master`) or left MASTER.
    pub fn set_master(&mut self, vips: &[IpAddr], master: bool) {
        for vip in vips {
            if master {
                self.master.insert(*vip);
            } else {
                self.master.remove(vip);
            }
        }
    }

    /// A reload: `governed`, the new instances' VIPs (governed_by);
    /// `stopped`, the VIPs of instances that stopped or restarted, are
    /// MASTER no more.
    pub fn reload(&mut self, governed: HashSet<IpAddr>, stopped: &[IpAddr]) {
        self.set_master(stopped, false);
        self.governed = governed;
    }

    /// The VIPs this balancer is MASTER for (for the next agent's handover).
    pub fn master_vips(&self) -> Vec<IpAddr> {
        self.master.iter().copied().collect()
    }
}

/// The VIPs the instances govern.
pub fn governed_by(instances: &[InstanceConfig]) -> HashSet<IpAddr> {
    instances
        .iter()
        .flat_map(|i| i.vips.iter().map(|(a, _)| *a))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const GOVERNED: IpAddr = IpAddr::V4(Ipv4Addr::new(172, 16, 122, 100));
    const FREE: Ipv4Addr = Ipv4Addr::new(172, 16, 122, 188);

    fn gate() -> VipGate {
        VipGate {
            governed: HashSet::from([GOVERNED]),
            master: HashSet::new(),
        }
    }

    #[test]
    fn a_governed_vip_is_balanced_only_while_master() {
        let mut g = gate();
        assert!(g.standby(GOVERNED));
        assert!(
            !g.standby(FREE.into()),
            "no instance governs it: always balanced"
        );
        g.set_master(&[GOVERNED], true);
        assert!(!g.standby(GOVERNED));
        assert_eq!(g.master_vips(), [GOVERNED]);
        g.set_master(&[GOVERNED], false);
        assert!(g.standby(GOVERNED));
    }

    #[test]
    fn an_ipv6_vip_is_gated_like_an_ipv4_one() {
        let vip6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x122, 0, 0, 0, 0, 0x100));
        let mut g = VipGate {
            governed: HashSet::from([GOVERNED, vip6]),
            master: HashSet::new(),
        };
        assert!(g.standby(vip6));
        g.set_master(&[vip6], true);
        assert!(!g.standby(vip6));
        assert!(g.standby(GOVERNED), "the other instance is still BACKUP");
    }

    #[test]
    fn a_reload_forgets_mastership_of_stopped_instances() {
        let mut g = gate();
        g.set_master(&[GOVERNED], true);
        g.reload(HashSet::new(), &[GOVERNED]);
        assert!(g.master_vips().is_empty());
        assert!(!g.standby(GOVERNED), "no longer governed: balanced");
    }
}
