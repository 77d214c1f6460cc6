//! lb-userspace: the agent and CLI of the lb XDP load balancer.

pub mod agent;
pub mod bgp;
pub mod config;
pub mod dataplane;
pub mod drain;
pub mod health;
pub mod neighbours;
pub mod netlink;
pub mod notify;
pub mod planning;
pub mod privileges;
pub mod realserver;
pub mod runtime_files;
pub mod stats;
pub mod status;
pub mod sync;
pub mod vrrp;
