//! Ids across reloads. Flows, counters and backend-set slots refer to
//! services and real servers by id, so a reload must give every service and
//! real server that stays the id it had (whatever its place in the new
//! file), and a new one an id nothing still refers to. Pure: tested without
//! root.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use lb_common::{MAX_REALS, MAX_SERVICES};

use super::plan::{Plan, PlannedReal, PlannedService, ServiceMapKey};

/// What makes a real server "the same" across reloads: its service, its
/// address and whether it is the sorry server (IPVS: a destination is its
/// service + address + port).
type RealIdentity = (ServiceMapKey, IpAddr, u16, bool);

fn identities(svc: &PlannedService) -> impl Iterator<Item = (RealIdentity, &PlannedReal)> {
    let key = svc.key();
    svc.reals
        .iter()
        .map(move |r| ((key, r.ip, r.port, false), r))
        .chain(
            svc.sorry
                .iter()
                .map(move |r| ((key, r.ip, r.port, true), r)),
        )
}

/// The lowest id in `first..limit` that is not taken and not busy.
fn allocate(
    first: u32,
    limit: u32,
    taken: &HashSet<u32>,
    busy: &impl Fn(u32) -> bool,
) -> Option<u32> {
    (first..limit).find(|id| !taken.contains(id) && !busy(*id))
}

/// Gives `new` (a freshly planned config) the ids of `old` for everything
/// that stays. New services and servers get the lowest id that neither plan
/// uses (the old plan's ids are not reused in the same reload: their flows
/// and statistics still belong to what was removed) and, for real servers,
/// that `real_busy` says no flow or template refers to any more.
pub fn keep_ids(
    mut new: Plan,
    old: &Plan,
    real_busy: impl Fn(u32) -> bool,
) -> Result<Plan, String> {
    let old_services: HashMap<ServiceMapKey, u32> = old
        .services
        .iter()
        .map(|s| (s.key(), s.service_id))
        .collect();
    let old_reals: HashMap<RealIdentity, u32> = old
        .services
        .iter()
        .flat_map(identities)
        .map(|(identity, r)| (identity, r.real_id))
        .collect();
    let mut taken_services: HashSet<u32> = old_services.values().copied().collect();
    let mut taken_reals: HashSet<u32> = old_reals.values().copied().collect();
    let never_busy = |_| false;
    for svc in &mut new.services {
        let key = svc.key();
        svc.service_id = match old_services.get(&key) {
            Some(&id) => id,
            None => allocate(0, MAX_SERVICES, &taken_services, &never_busy)
                .ok_or_else(|| format!("more than {MAX_SERVICES} virtual services"))?,
        };
        taken_services.insert(svc.service_id);
        let sorry = svc.sorry.iter_mut().map(|r| (r, true));
        for (real, is_sorry) in svc.reals.iter_mut().map(|r| (r, false)).chain(sorry) {
            real.real_id = match old_reals.get(&(key, real.ip, real.port, is_sorry)) {
                Some(&id) => id,
                // Id 0 means "none" in the maps.
                None => allocate(1, MAX_REALS, &taken_reals, &real_busy)
                    .ok_or_else(|| format!("more than {} real servers", MAX_REALS - 1))?,
            };
            taken_reals.insert(real.real_id);
        }
    }
    Ok(new)
}

/// What a reload changes, by id.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PlanDiff {
    /// Services of the old plan that the new one does not have.
    pub removed_services: Vec<u32>,
    /// Services that are new or whose settings changed (to be rewritten).
    pub changed_services: Vec<u32>,
    /// Of those, the new ones (their statistics start from zero).
    pub added_services: Vec<u32>,
    /// Real servers (of services that stay or go) no longer in the plan.
    pub removed_reals: Vec<u32>,
    /// Real servers that are new in the plan.
    pub added_reals: Vec<u32>,
}

impl PlanDiff {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The difference between two plans whose ids were kept (`keep_ids`).
pub fn diff(old: &Plan, new: &Plan) -> PlanDiff {
    let old_by_id: HashMap<u32, &PlannedService> =
        old.services.iter().map(|s| (s.service_id, s)).collect();
    let new_ids: HashSet<u32> = new.services.iter().map(|s| s.service_id).collect();
    let old_reals: HashSet<u32> = old.reals().map(|r| r.real_id).collect();
    let new_reals: HashSet<u32> = new.reals().map(|r| r.real_id).collect();
    let sorted = |mut v: Vec<u32>| {
        v.sort_unstable();
        v
    };
    PlanDiff {
        removed_services: sorted(
            old.services
                .iter()
                .map(|s| s.service_id)
                .filter(|id| !new_ids.contains(id))
                .collect(),
        ),
        changed_services: sorted(
            new.services
                .iter()
                .filter(|s| old_by_id.get(&s.service_id) != Some(s))
                .map(|s| s.service_id)
                .collect(),
        ),
        added_services: sorted(
            new.services
                .iter()
                .map(|s| s.service_id)
                .filter(|id| !old_by_id.contains_key(id))
                .collect(),
        ),
        removed_reals: sorted(old_reals.difference(&new_reals).copied().collect()),
        added_reals: sorted(new_reals.difference(&old_reals).copied().collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::parse, planning::plan::plan};
    use std::net::Ipv4Addr;

    const SEED: &str = include_str!("../../../configs/seed-dr.toml");

    fn planned(text: &str) -> Plan {
        plan(&parse("test", text).unwrap())
    }

    fn ids(p: &Plan) -> Vec<(IpAddr, u32)> {
        p.reals().map(|r| (r.ip, r.real_id)).collect()
    }

    /// The seed with a third real server before the others and the second
    /// one's weight changed.
    fn seed_with_new_first_server() -> String {
        SEED.replacen(
            "[[virtual_server.real_server]]",
            "[[virtual_server.real_server]]\nip = \"172.16.122.50\"\nport = 80\nweight = 1\n\n[[virtual_server.real_server]]",
            1,
        )
        .replace("weight = 1\n", "weight = 3\n")
    }

    #[test]
    fn servers_that_stay_keep_their_ids_wherever_they_are_in_the_file() {
        let old = planned(SEED);
        let new = keep_ids(planned(&seed_with_new_first_server()), &old, |_| false).unwrap();
        let old_ids = ids(&old);
        assert_eq!(old_ids.len(), 2);
        for (ip, id) in &old_ids {
            assert!(ids(&new).contains(&(*ip, *id)), "{ip} lost id {id}");
        }
        // The newcomer gets the lowest id neither plan uses.
        let newcomer = ids(&new)
            .into_iter()
            .find(|(ip, _)| *ip == IpAddr::from(Ipv4Addr::new(172, 16, 122, 50)))
            .unwrap();
        assert_eq!(newcomer.1, 3);
        assert_eq!(new.services[0].service_id, old.services[0].service_id);
    }

    #[test]
    fn diff_names_added_and_changed_but_not_what_stays_alike() {
        let old = planned(SEED);
        let same = keep_ids(planned(SEED), &old, |_| false).unwrap();
        assert!(diff(&old, &same).is_empty());
        let new = keep_ids(planned(&seed_with_new_first_server()), &old, |_| false).unwrap();
        let d = diff(&old, &new);
        assert_eq!(d.added_reals, vec![3]);
        assert!(d.removed_reals.is_empty());
        assert_eq!(d.changed_services, vec![0]);
        assert!(d.added_services.is_empty());
        assert!(d.removed_services.is_empty());
    }

    #[test]
    fn ids_still_referred_to_are_not_reused() {
        let old = planned(SEED);
        // Remove the first real server: its id leaves the plan...
        let first = SEED.find("[[virtual_server.real_server]]").unwrap();
        let second = first
            + 1
            + SEED[first + 1..]
                .find("[[virtual_server.real_server]]")
                .unwrap();
        let without_first = format!("{}{}", &SEED[..first], &SEED[second..]);
        let mid = keep_ids(planned(&without_first), &old, |_| false).unwrap();
        let d = diff(&old, &mid);
        assert_eq!(d.removed_reals, vec![1]);
        assert_eq!(
            ids(&mid),
            vec![(Ipv4Addr::new(172, 16, 122, 195).into(), 2)]
        );
        // ...and comes back as a new server: id 1 is free unless flows of
        // the removed server still hold it.
        let back = keep_ids(planned(SEED), &mid, |_| false).unwrap();
        assert_eq!(ids(&back)[0].1, 1);
        let back = keep_ids(planned(SEED), &mid, |id| id == 1).unwrap();
        assert_eq!(ids(&back)[0].1, 3);
    }

    #[test]
    fn removed_services_are_named_and_new_ones_take_a_free_id() {
        let old = planned(SEED);
        let moved = SEED.replace("port = 80\n", "port = 8080\n");
        assert_ne!(moved, SEED, "the seed's service port line moved");
        let new = keep_ids(planned(&moved), &old, |_| false).unwrap();
        let d = diff(&old, &new);
        assert_eq!(d.removed_services, vec![0]);
        assert_eq!(d.changed_services, vec![1]);
        assert_eq!(d.added_services, vec![1]);
        assert_eq!(new.services[0].service_id, 1);
        // A new service is a new destination for each of its servers.
        assert_eq!(d.removed_reals, vec![1, 2]);
        assert_eq!(d.added_reals, vec![3, 4]);
    }
}
