//! `service_filter`: one bit per (VIP, port, protocol) hash of every
//! service, IPv4 and IPv6 alike. The data plane tests a packet's bit before
//! it looks the service up: most traffic that reaches a director for
//! something else (its own SSH, BGP, the VIP's other ports) then skips a
//! hash-map lookup, which is most of what passing it costs. A set bit only
//! says "maybe": two keys may share one; the lookup decides. The agent sets
//! a key's bit before the service entry appears and clears it only after
//! the entry went, so no packet of a service is passed for a clear bit.

use crate::maps::{ServiceKey, ServiceKey6};

/// log2 of the filter's bits: 8192 bits (1 KiB) keep the share of false
/// "maybe"s below 1 in 16 with all MAX_SERVICES services.
pub const SERVICE_FILTER_BITS_LOG2: u32 = 13;
/// The filter in 64-bit words.
pub const SERVICE_FILTER_WORDS: usize = (1 << SERVICE_FILTER_BITS_LOG2) / 64;
const WORD_BITS_LOG2: u32 = 6;
const BIT_IN_WORD: u32 = 63;

/// Fibonacci hashing's multiplier (2^64 / golden ratio): the top bits of the
/// product depend on every bit of the key.
const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

/// `service_filter` value (a single entry).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceFilter {
    pub words: [u64; SERVICE_FILTER_WORDS],
}

impl Default for ServiceFilter {
    fn default() -> Self {
        Self {
            words: [0; SERVICE_FILTER_WORDS],
        }
    }
}

/// Port and protocol beside 32 bits of address, as one 64-bit word.
#[inline(always)]
fn with_port(addr: u32, port: u16, proto: u8) -> u64 {
    u64::from(addr) | (u64::from(port) << 32) | (u64::from(proto) << 48)
}

#[inline(always)]
fn bit_of(word: u64) -> u32 {
    (word.wrapping_mul(MULTIPLIER) >> (u64::BITS - SERVICE_FILTER_BITS_LOG2)) as u32
}

impl ServiceFilter {
    /// The bit of an IPv4 service key.
    #[inline(always)]
    pub fn bit_v4(key: &ServiceKey) -> u32 {
        bit_of(with_port(u32::from_ne_bytes(key.vip), key.port, key.proto))
    }

    /// The bit of an IPv6 service key: the address folded to 32 bits first.
    #[inline(always)]
    pub fn bit_v6(key: &ServiceKey6) -> u32 {
        let v = &key.vip;
        let mut folded = 0u32;
        for i in 0..4 {
            let o = i * 4;
            folded ^= u32::from_ne_bytes([v[o], v[o + 1], v[o + 2], v[o + 3]]);
        }
        // Rotated: an IPv6 key never lands on the bit of the IPv4 key its
        // fold happens to equal by construction (a bit shared by chance is
        // still only a "maybe").
        bit_of(with_port(folded, key.port, key.proto).rotate_left(8))
    }

    /// Whether `bit` is set.
    #[inline(always)]
    pub fn holds(&self, bit: u32) -> bool {
        let word = (bit >> WORD_BITS_LOG2) as usize % SERVICE_FILTER_WORDS;
        self.words[word] >> (bit & BIT_IN_WORD) & 1 != 0
    }

    /// Sets `bit`.
    pub fn set(&mut self, bit: u32) {
        let word = (bit >> WORD_BITS_LOG2) as usize % SERVICE_FILTER_WORDS;
        self.words[word] |= 1 << (bit & BIT_IN_WORD);
    }

    /// The filter with the given bits set.
    pub fn of(bits: impl IntoIterator<Item = u32>) -> Self {
        let mut filter = Self::default();
        for bit in bits {
            filter.set(bit);
        }
        filter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(last: u8, port: u16) -> ServiceKey {
        ServiceKey {
            vip: [172, 16, 122, last],
            port: port.to_be(),
            proto: crate::IPPROTO_TCP,
            _pad: 0,
        }
    }

    #[test]
    fn a_filter_holds_the_bits_it_was_built_of_and_few_others() {
        let services: Vec<ServiceKey> = (0..=255).flat_map(|l| [key(l, 80), key(l, 443)]).collect();
        let filter = ServiceFilter::of(services.iter().map(ServiceFilter::bit_v4));
        assert!(
            services
                .iter()
                .all(|k| filter.holds(ServiceFilter::bit_v4(k)))
        );
        // 512 keys (MAX_SERVICES) in 8192 bits: about 6% of other keys pass.
        let others: Vec<ServiceKey> = (0..=255).flat_map(|l| [key(l, 22), key(l, 8080)]).collect();
        let passed = others
            .iter()
            .filter(|k| filter.holds(ServiceFilter::bit_v4(k)))
            .count();
        assert!(
            passed < others.len() / 8,
            "{passed} of {} others pass",
            others.len()
        );
    }

    #[test]
    fn an_empty_filter_holds_nothing_and_ipv6_keys_spread() {
        let empty = ServiceFilter::default();
        assert!(!empty.holds(ServiceFilter::bit_v4(&key(100, 80))));
        let bits: std::collections::BTreeSet<u32> = (0..64u16)
            .map(|p| {
                let mut vip = [0u8; 16];
                vip[0] = 0xfd;
                vip[15] = p as u8;
                ServiceFilter::bit_v6(&ServiceKey6 {
                    vip,
                    port: 80u16.to_be(),
                    proto: crate::IPPROTO_TCP,
                    _pad: 0,
                })
            })
            .collect();
        assert!(bits.len() > 56, "64 VIPs on {} bits", bits.len());
        assert!(bits.iter().all(|&b| b < 1 << SERVICE_FILTER_BITS_LOG2));
    }
}
