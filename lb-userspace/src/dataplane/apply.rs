//! The one order in which a service's change reaches the maps, for the
//! agent and the BPF_PROG_TEST_RUN tests alike: servers that join are
//! activated before the backend set flips to include them; the set and the
//! service entry flip in one update (writer.rs); servers that leave are
//! deactivated (their flows rescheduled) only after it flipped. A packet
//! never meets a half-done change.

use anyhow::Result;

use super::Dataplane;
use crate::planning::{
    backends::ServiceState,
    plan::{PlannedReal, PlannedService},
};

/// What the maps hold for one service, as last written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppliedService {
    /// Its backend set and active servers.
    pub state: ServiceState,
    /// Passed to the kernel: not VRRP master for its VIP.
    pub standby: bool,
}

impl Dataplane {
    /// Moves service `svc` from `old` (None: never written) to `new`.
    /// `settings_changed`: the service itself changed (scheduler, mode,
    /// persistence, weights, or maps adopted from a previous agent):
    /// everything is rewritten even where the set did not change.
    /// `mac_of`: each real server's MAC, if resolved.
    pub fn apply_service(
        &mut self,
        svc: &PlannedService,
        old: Option<&AppliedService>,
        new: &AppliedService,
        settings_changed: bool,
        mac_of: impl Fn(u32) -> Option<[u8; 6]>,
    ) -> Result<()> {
        let was_active = |id: u32| old.is_some_and(|o| o.state.is_active(id));
        let reals: Vec<&PlannedReal> = svc.reals.iter().chain(svc.sorry.iter()).collect();
        for real in reals.iter().filter(|r| {
            new.state.is_active(r.real_id) && (settings_changed || !was_active(r.real_id))
        }) {
            self.write_real(real, mac_of(real.real_id), true)?;
        }
        let set_changed =
            old.is_none_or(|o| o.state.backends != new.state.backends || o.standby != new.standby);
        if settings_changed || set_changed {
            self.write_service(svc, &new.state.backends, new.standby)?;
        }
        for real in reals.iter().filter(|r| {
            !new.state.is_active(r.real_id) && (settings_changed || was_active(r.real_id))
        }) {
            self.write_real(real, mac_of(real.real_id), false)?;
        }
        Ok(())
    }
}
