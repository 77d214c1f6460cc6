//! Connection synchronization between balancers (keepalived's
//! lvs_sync_daemon, IPVS's sync protocol): codec.rs is the wire format.

pub mod codec;
