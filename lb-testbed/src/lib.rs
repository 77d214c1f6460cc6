//! Test support for lb: frames for BPF_PROG_TEST_RUN, the data plane set up
//! like the seed for such runs, and the seed's topology in network
//! namespaces (demo and end-to-end tests).

pub mod bench_report;
pub mod bench_targets;
pub mod download;
pub mod keepalive;
pub mod netns;
pub mod packet;
pub mod progtest;
pub mod sched_model;
pub mod seed;
pub mod smtp_sink;
pub mod soak;
pub mod topology;
pub mod trafficgen;
