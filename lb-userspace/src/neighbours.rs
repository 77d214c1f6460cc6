//! Which real servers have a known MAC, tracked from the kernel's neighbour
//! table. Pure: the agent feeds it neighbour dumps and writes what changed.

use std::{collections::HashMap, net::IpAddr};

#[derive(Debug, Default)]
pub struct MacTracker {
    /// real id -> (address, MAC if resolved)
    reals: HashMap<u32, (IpAddr, Option<[u8; 6]>)>,
}

impl MacTracker {
    pub fn new(reals: impl IntoIterator<Item = (u32, IpAddr)>) -> Self {
        Self {
            reals: reals.into_iter().map(|(id, ip)| (id, (ip, None))).collect(),
        }
    }

    /// Tracks exactly `reals` (after a reload): ids that stay with the same
    /// address keep their MAC, new ones start unresolved.
    pub fn retrack(&mut self, reals: impl IntoIterator<Item = (u32, IpAddr)>) {
        let mut old = std::mem::take(&mut self.reals);
        self.reals = reals
            .into_iter()
            .map(|(id, ip)| {
                let mac = old.remove(&id).filter(|(old_ip, _)| *old_ip == ip);
                (id, (ip, mac.and_then(|(_, mac)| mac)))
            })
            .collect();
    }

    pub fn mac(&self, real_id: u32) -> Option<[u8; 6]> {
        self.reals.get(&real_id).and_then(|(_, mac)| *mac)
    }

    /// Addresses still without a MAC (to probe).
    pub fn unresolved(&self) -> Vec<IpAddr> {
        let mut v: Vec<_> = self
            .reals
            .values()
            .filter(|(_, mac)| mac.is_none())
            .map(|(ip, _)| *ip)
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Applies a neighbour dump; returns the real ids whose MAC changed
    /// (learned or different). An entry that vanished from the table keeps
    /// its last MAC: the kernel garbage-collects idle entries, which does not
    /// mean the server moved.
    pub fn update(&mut self, neighbours: &HashMap<IpAddr, [u8; 6]>) -> Vec<u32> {
        let mut changed = Vec::new();
        for (id, (ip, mac)) in self.reals.iter_mut() {
            if let Some(new) = neighbours.get(ip)
                && *mac != Some(*new)
            {
                *mac = Some(*new);
                changed.push(*id);
            }
        }
        changed.sort();
        changed
    }
}

/// A MAC as `ip` prints it (aa:bb:cc:dd:ee:ff).
pub fn fmt_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const RS1: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const RS2: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    const RS6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));

    #[test]
    fn ipv6_servers_resolve_from_the_same_dump() {
        let mut t = MacTracker::new([(1, RS1), (2, RS6)]);
        let table = HashMap::from([(RS6, [6; 6])]);
        assert_eq!(t.update(&table), vec![2]);
        assert_eq!(t.unresolved(), vec![RS1]);
    }

    #[test]
    fn learns_changes_and_keeps_vanished_entries() {
        let mut t = MacTracker::new([(1, RS1), (2, RS2)]);
        assert_eq!(t.unresolved(), vec![RS1, RS2]);
        let mut table = HashMap::from([(RS1, [1; 6])]);
        assert_eq!(t.update(&table), vec![1]);
        assert_eq!(t.mac(1), Some([1; 6]));
        assert_eq!(t.unresolved(), vec![RS2]);
        // Same dump again: nothing changed.
        assert!(t.update(&table).is_empty());
        // RS1 got a new MAC (e.g. replaced hardware): picked up.
        table.insert(RS1, [7; 6]);
        table.insert(RS2, [2; 6]);
        assert_eq!(t.update(&table), vec![1, 2]);
        assert_eq!(t.mac(1), Some([7; 6]));
        // Entries aged out of the kernel table keep their MAC.
        assert!(t.update(&HashMap::new()).is_empty());
        assert_eq!(t.mac(2), Some([2; 6]));
        // A reload keeps what it can: id 1 stays, id 2 now names another
        // address, id 3 is new.
        t.retrack([(1, RS1), (2, RS1), (3, RS2)]);
        assert_eq!(t.mac(1), Some([7; 6]));
        assert_eq!(t.mac(2), None);
        assert_eq!(t.mac(3), None);
        assert_eq!(t.unresolved(), vec![RS1, RS2]);
    }
}
