//! Numbers of the kernel's BPF interface that aya-ebpf does not name with
//! the types the map calls take.

use aya_ebpf::bindings;

/// Map update flag: create or replace.
pub const BPF_ANY: u64 = bindings::BPF_ANY as u64;
/// Map update flag: create only (fails with EEXIST when the key is there).
pub const BPF_NOEXIST: u64 = bindings::BPF_NOEXIST as u64;
/// errno of a BPF_NOEXIST insert that found the key (another CPU won).
pub const EEXIST: i32 = 17;
/// errno of an insert into a full preallocated hash map.
pub const E2BIG: i32 = 7;
