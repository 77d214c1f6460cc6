//! Inspection: `lb-userspace list` reads the pinned maps of the running
//! agent (snapshot.rs) and prints them in ipvsadm's layout (list.rs).

pub mod list;
pub mod snapshot;
