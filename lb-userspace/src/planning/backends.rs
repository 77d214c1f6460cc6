//! Which real servers a service's backend set holds, from health and MAC
//! state, with keepalived's rules: a failed server is removed (or kept with
//! weight 0 under inhibit_on_failure); below `quorum` total live weight the
//! sorry server, when configured, takes all traffic. Pure: tested without root.

use lb_common::Backend;

use crate::planning::plan::{PlannedReal, PlannedService};

/// What the agent knows about one real server now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RealStatus {
    /// The MAC is resolved: frames can be addressed to it.
    pub mac_known: bool,
    /// The health check (if any) says up.
    pub healthy: bool,
    /// MISC_CHECK misc_dynamic's weight, replacing the configured one.
    pub weight_override: Option<u32>,
}

/// The data-plane state of one service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceState {
    /// The backend set, in scheduling (config) order.
    pub backends: Vec<Backend>,
    /// Real ids that may receive packets (REAL_FLAG_ACTIVE); flows to the
    /// others are rescheduled.
    pub active: Vec<u32>,
    /// Live weight is below quorum.
    pub quorum_lost: bool,
}

impl ServiceState {
    pub fn is_active(&self, real_id: u32) -> bool {
        self.active.contains(&real_id)
    }
}

pub fn service_state(svc: &PlannedService, status: impl Fn(u32) -> RealStatus) -> ServiceState {
    let weight_of = |r: &PlannedReal, st: RealStatus| st.weight_override.unwrap_or(r.weight);
    let live_weight: u64 = svc
        .reals
        .iter()
        .map(|r| (r, status(r.real_id)))
        .filter(|(_, st)| st.healthy)
        .map(|(r, st)| u64::from(weight_of(r, st)))
        .sum();
    let quorum_lost = live_weight < u64::from(svc.quorum);
    if quorum_lost && let Some(sorry) = &svc.sorry {
        // keepalived removes the live servers and adds the sorry server.
        let mut state = ServiceState {
            quorum_lost,
            ..ServiceState::default()
        };
        if status(sorry.real_id).mac_known {
            state.backends.push(Backend {
                real_id: sorry.real_id,
                weight: sorry.weight,
            });
            state.active.push(sorry.real_id);
        }
        return state;
    }
    let mut state = ServiceState {
        quorum_lost,
        ..ServiceState::default()
    };
    for r in &svc.reals {
        let st = status(r.real_id);
        if !st.mac_known {
            continue;
        }
        if st.healthy {
            state.backends.push(Backend {
                real_id: r.real_id,
                weight: weight_of(r, st),
            });
            state.active.push(r.real_id);
        } else if svc.inhibit_on_failure {
            // Listed with weight 0: no new connections; existing ones stay,
            // as with IPVS's quiesced servers.
            state.backends.push(Backend {
                real_id: r.real_id,
                weight: 0,
            });
            state.active.push(r.real_id);
        }
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::planning::plan::plan;

    const UP: RealStatus = RealStatus {
        mac_known: true,
        healthy: true,
        weight_override: None,
    };
    const DOWN: RealStatus = RealStatus {
        mac_known: true,
        healthy: false,
        weight_override: None,
    };

    fn seed_service(extra: &str) -> PlannedService {
        let text = include_str!("../../../configs/seed-dr.toml").replace(
            "persistence_timeout = 0",
            &format!("persistence_timeout = 0\n{extra}"),
        );
        plan(&parse("seed", &text).unwrap()).services.remove(0)
    }

    fn ids(backends: &[Backend]) -> Vec<(u32, u32)> {
        backends.iter().map(|b| (b.real_id, b.weight)).collect()
    }

    #[test]
    fn all_up_gives_every_server_in_config_order() {
        let s = service_state(&seed_service(""), |_| UP);
        assert_eq!(ids(&s.backends), [(1, 1), (2, 1)]);
        assert_eq!(s.active, [1, 2]);
        assert!(!s.quorum_lost);
    }

    #[test]
    fn a_failed_server_is_removed_and_deactivated() {
        let s = service_state(&seed_service(""), |id| if id == 2 { DOWN } else { UP });
        assert_eq!(ids(&s.backends), [(1, 1)]);
        assert!(!s.is_active(2), "its flows must be rescheduled");
    }

    #[test]
    fn inhibit_on_failure_keeps_it_with_weight_zero() {
        let s = service_state(&seed_service("inhibit_on_failure = true"), |id| {
            if id == 2 { DOWN } else { UP }
        });
        assert_eq!(ids(&s.backends), [(1, 1), (2, 0)]);
        assert!(s.is_active(2));
    }

    #[test]
    fn unresolved_mac_keeps_a_server_out() {
        let s = service_state(&seed_service(""), |id| RealStatus {
            mac_known: id == 1,
            ..UP
        });
        assert_eq!(ids(&s.backends), [(1, 1)]);
    }

    #[test]
    fn misc_dynamic_weight_replaces_the_configured_one() {
        let s = service_state(&seed_service(""), |id| RealStatus {
            weight_override: (id == 1).then_some(5),
            ..UP
        });
        assert_eq!(ids(&s.backends), [(1, 5), (2, 1)]);
    }

    #[test]
    fn quorum_lost_sends_everything_to_the_sorry_server() {
        let svc = seed_service("quorum = 2\nsorry_server = { ip = \"172.16.122.197\", port = 80 }");
        let sorry = svc.sorry.clone().unwrap();
        assert_eq!(sorry.real_id, 3);
        let s = service_state(&svc, |_| UP);
        assert_eq!(ids(&s.backends), [(1, 1), (2, 1)]);
        let s = service_state(&svc, |id| if id == 2 { DOWN } else { UP });
        assert!(s.quorum_lost);
        assert_eq!(ids(&s.backends), [(3, 1)]);
        assert_eq!(s.active, [3]);
    }

    #[test]
    fn quorum_lost_without_sorry_server_keeps_the_live_ones() {
        let s = service_state(
            &seed_service("quorum = 2"),
            |id| if id == 2 { DOWN } else { UP },
        );
        assert!(s.quorum_lost);
        assert_eq!(ids(&s.backends), [(1, 1)]);
    }
}
