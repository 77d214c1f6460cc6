//! Connection synchronization between balancers (keepalived's
//! lvs_sync_daemon, IPVS's sync protocol): codec.rs is the wire format,
//! records.rs maps records to and from our tables (pure), catch_up.rs
//! tells when a receiver holds its peers' tables (pure), socket.rs and
//! daemon.rs send and receive; the agent (agent/sync_link.rs) feeds the
//! daemon from the data plane and applies what it hears.

pub mod catch_up;
pub mod codec;
pub mod daemon;
pub mod records;
pub mod socket;
