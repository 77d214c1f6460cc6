//! The hash functions of IPVS's hashing schedulers, shared by the data plane
//! (which hashes packets) and the agent (which builds the tables), so both
//! sides agree bit for bit with each other and with IPVS.

use crate::consts::DH_SH_TABLE_SIZE;

/// The kernel's GOLDEN_RATIO_32 (linux/hash.h).
const GOLDEN_RATIO_32: u32 = 0x61C8_8647;
/// ip_vs_dh_hashkey's multiplier (Knuth's multiplicative hash).
const DH_MULTIPLIER: u32 = 2_654_435_761;
/// log2(DH_SH_TABLE_SIZE).
const DH_SH_TABLE_BITS: u32 = DH_SH_TABLE_SIZE.trailing_zeros();
const DH_SH_TABLE_MASK: u32 = DH_SH_TABLE_SIZE - 1;

/// linux/hash.h hash_32.
#[inline(always)]
pub const fn hash_32(val: u32, bits: u32) -> u32 {
    val.wrapping_mul(GOLDEN_RATIO_32) >> (32 - bits)
}

/// ip_vs_dh_hashkey: bucket of a destination address (host byte order).
#[inline(always)]
pub const fn dh_bucket(addr: u32) -> u32 {
    addr.wrapping_mul(DH_MULTIPLIER) & DH_SH_TABLE_MASK
}

/// ip_vs_sh_hashkey: bucket of a source address and port (host byte order;
/// port 0 unless sh-port), probing `offset` buckets further (sh-fallback).
#[inline(always)]
pub const fn sh_bucket(addr: u32, port: u16, offset: u32) -> u32 {
    offset.wrapping_add(hash_32((port as u32).wrapping_add(addr), DH_SH_TABLE_BITS))
        & DH_SH_TABLE_MASK
}

/// The SipHash initialisation constants ("somepseudorandomlygeneratedbytes").
const SIP_V0: u64 = 0x736f_6d65_7073_6575;
const SIP_V1: u64 = 0x646f_7261_6e64_6f6d;
const SIP_V2: u64 = 0x6c79_6765_6e65_7261;
const SIP_V3: u64 = 0x7465_6462_7974_6573;

#[inline(always)]
fn sipround(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

/// The kernel's hsiphash of one u32 on a 64-bit machine: SipHash-1-3 of its
/// four little-endian bytes, truncated to 32 bits (lib/siphash.c).
#[inline(always)]
pub fn hsiphash_u32(value: u32, key: [u64; 2]) -> u32 {
    let mut v = [
        SIP_V0 ^ key[0],
        SIP_V1 ^ key[1],
        SIP_V2 ^ key[0],
        SIP_V3 ^ key[1],
    ];
    // No whole 8-byte block: the tail word carries the length in its top byte.
    let b = (4u64 << 56) | value as u64;
    v[3] ^= b;
    sipround(&mut v);
    v[0] ^= b;
    v[2] ^= 0xff;
    sipround(&mut v);
    sipround(&mut v);
    sipround(&mut v);
    (v[0] ^ v[1] ^ v[2] ^ v[3]) as u32
}

/// ip_vs_mh_hashkey: hsiphash of offset + port + address (host byte order).
#[inline(always)]
pub fn mh_hash(addr: u32, port: u16, key: [u64; 2], offset: u32) -> u32 {
    hsiphash_u32(offset.wrapping_add(port as u32).wrapping_add(addr), key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_32_is_the_kernels() {
        // hash_32(1, 8) = (0x61C88647 >> 24).
        assert_eq!(hash_32(1, 8), 0x61);
        assert_eq!(sh_bucket(0, 0, 0), 0);
        assert_eq!(sh_bucket(0, 0, 300), 300 & 255);
        assert_eq!(dh_bucket(1), 2_654_435_761 & 255);
    }
}
