//! Persistence (ipvsadm -p / -M, ip_vs_sched_persist): a client network
//! keeps its server across connections. The template (client network,
//! service) -> server is consulted before the scheduler; it stays valid
//! while its server is in the service (a quiesced server keeps its clients,
//! as IPVS with expire_quiescent_template = 0). The agent expires templates
//! persistence_timeout after their last connection.

use lb_common::{PersistEntry, REAL_FLAG_ACTIVE, ServiceInfo};

use crate::{
    family::{Flow, TemplateKey},
    maps::{REALS, persistent_add},
};

/// What the client's template says (`K`: PersistKey or PersistKey6).
pub enum Template<K> {
    /// Not a persistent service.
    None,
    /// A valid template: its server.
    Valid(u32),
    /// No template yet for the client network.
    Missing(K),
    /// A template whose server left the service: to be rescheduled.
    Invalid(*mut PersistEntry, K),
}

/// The client's template for `svc`, found under the service's port
/// `vport` (0 for an all-ports service).
#[inline(always)]
pub fn lookup<F: Flow>(svc: &ServiceInfo, vport: u16, flow: &F) -> Template<F::Template> {
    if svc.persist_timeout_s == 0 {
        return Template::None;
    }
    let Some(key) = flow.template_key(svc, vport) else {
        return Template::None;
    };
    let Some(ptr) = key.entry() else {
        return Template::Missing(key);
    };
    // SAFETY: map value pointer of this lookup.
    let template = unsafe { &mut *ptr };
    if template.service_id == svc.service_id
        && REALS
            .get(template.real_id)
            .is_some_and(|r| r.flags & REAL_FLAG_ACTIVE != 0)
    {
        template.last_seen_ns = crate::clock::now_ns();
        return Template::Valid(template.real_id);
    }
    Template::Invalid(ptr, key)
}

/// Records the scheduler's choice in the client's template. Returns the
/// server to use (another CPU may have made the template this instant) and
/// the template's key when this packet made or moved it (for sync).
#[inline(always)]
pub fn remember<K: TemplateKey>(
    svc: &ServiceInfo,
    template: Template<K>,
    real_id: u32,
) -> (u32, Option<K>) {
    let now = crate::clock::now_ns();
    match template {
        Template::None | Template::Valid(_) => (real_id, None),
        Template::Invalid(ptr, key) => {
            // SAFETY: the pointer came from this packet's lookup.
            let t = unsafe { &mut *ptr };
            persistent_add(t.real_id, -1);
            persistent_add(real_id, 1);
            t.real_id = real_id;
            t.service_id = svc.service_id;
            t.last_seen_ns = now;
            (real_id, Some(key))
        }
        Template::Missing(key) => {
            let t = PersistEntry {
                real_id,
                service_id: svc.service_id,
                mask: svc.persist_mask,
                _pad: 0,
                last_seen_ns: now,
            };
            if key.create(&t).is_ok() {
                persistent_add(real_id, 1);
                return (real_id, Some(key));
            }
            // SAFETY: entries are replaced whole or updated by field; read once.
            let theirs = key
                .entry()
                .map_or(real_id, |other| unsafe { (*other).real_id });
            (theirs, None)
        }
    }
}
