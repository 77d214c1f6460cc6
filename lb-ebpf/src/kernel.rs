//! Numbers of the kernel's BPF interface that aya-ebpf does not name with
//! the types the map calls take.

use aya_ebpf::bindings;
use lb_common::Ipv6Octets;

/// Map update flag: create or replace.
pub const BPF_ANY: u64 = bindings::BPF_ANY as u64;
/// Map update flag: create only (fails with EEXIST when the key is there).
pub const BPF_NOEXIST: u64 = bindings::BPF_NOEXIST as u64;
/// errno of a BPF_NOEXIST insert that found the key (another CPU won).
pub const EEXIST: i32 = 17;
/// errno of an insert into a full preallocated hash map.
pub const E2BIG: i32 = 7;

/// Address families, as bpf_fib_lookup takes them.
pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;

/// An IPv6 address as the kernel's BPF structs hold it (bpf_fib_lookup,
/// bpf_sock_addr, bpf_sock, bpf_sock_ops): four 32-bit words in packet
/// order.
#[inline(always)]
pub fn ipv6_words(addr: &Ipv6Octets) -> [u32; 4] {
    let word = |i: usize| u32::from_ne_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]]);
    [word(0), word(4), word(8), word(12)]
}

/// The inverse of `ipv6_words`.
#[inline(always)]
pub fn ipv6_octets(words: &[u32; 4]) -> Ipv6Octets {
    let mut out = [0u8; 16];
    for (i, word) in words.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
    }
    out
}
