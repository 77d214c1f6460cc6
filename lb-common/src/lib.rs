//! Types shared by the XDP data plane (`lb-ebpf`) and the agent (`lb-userspace`).
//!
//! Every BPF map key and value is defined here, once, as `#[repr(C)]` with
//! explicit padding so both sides agree byte for byte and bpftool prints the
//! field names from BTF. Addresses and ports are kept in network byte order,
//! exactly as they sit in the packet, so the data plane never swaps bytes.
#![cfg_attr(not(test), no_std)]

pub mod conntrack;
pub mod consts;
pub mod counters;
pub mod least;
pub mod maps;
pub mod sched_hash;
pub mod service_filter;
pub mod service_hit;

pub use consts::*;
pub use maps::*;
pub use service_filter::ServiceFilter;
