//! What the XDP objects of this crate share (`lb`, `lb-baselines`,
//! `lb-rs-decap`): each binary is an entry point over these modules.
//!
//! Built for the BPF target only: on the host this library is empty. It
//! exists there as lb-userspace's build-dependency, so that cargo rebuilds
//! the objects when this crate changes (aya-template does the same).
#![no_std]
#![warn(clippy::undocumented_unsafe_blocks)]

#[cfg(target_arch = "bpf")]
pub mod csum;
#[cfg(target_arch = "bpf")]
pub mod header;
#[cfg(target_arch = "bpf")]
pub mod kernel;
#[cfg(target_arch = "bpf")]
pub mod parse;
#[cfg(target_arch = "bpf")]
pub mod runtime;
