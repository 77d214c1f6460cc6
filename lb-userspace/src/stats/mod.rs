//! Inspection: `lb-userspace list` reads the pinned maps of the running
//! agent (snapshot.rs) and prints them in ipvsadm's layouts: -L (list.rs),
//! --stats / --rate (traffic.rs), -S (save.rs).

pub mod list;
pub mod metrics;
pub mod save;
pub mod snapshot;
pub mod traffic;
