//! Pure planning, no I/O: what the maps should hold for a config. The
//! plan (services and real servers with ids), ids kept across reloads and
//! restarts, which servers a service's backend set holds given health, and
//! the dh / sh / mh lookup tables. Tested without root; the dataplane
//! writes what these compute.

pub mod backends;
pub mod plan;
pub mod sched_tables;
pub mod stable_ids;
