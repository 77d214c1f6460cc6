//! Checksum helpers (Katran's csum_helpers.h).

use lb_common::{Ipv4Octets, Ipv6Octets};
use network_types::ip::Ipv4Hdr;

/// Folds a 32-bit one's-complement sum to 16 bits.
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    // Two folds are always enough for a sum of 16-bit words below 2^32.
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The one's-complement sum of `bytes` as 16-bit words, not folded (a
/// u32 holds the sum of 65,536 words: far more than any header here).
#[inline(always)]
pub fn sum<const N: usize>(bytes: &[u8; N]) -> u32 {
    let mut sum = 0u32;
    let mut i = 0;
    while i + 1 < N {
        sum += u32::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
        i += 2;
    }
    sum
}

/// The Internet checksum of `bytes` (even length, checksum field zero).
#[inline(always)]
pub fn of<const N: usize>(bytes: &[u8; N]) -> u16 {
    !fold(sum(bytes))
}

/// The sum of the IPv6 pseudo-header (RFC 8200 section 8.1) that TCP,
/// UDP and ICMPv6 checksums cover: addresses, upper-layer length, next
/// header.
#[inline(always)]
pub fn ipv6_pseudo_header(src: &Ipv6Octets, dst: &Ipv6Octets, len: u16, next_header: u8) -> u32 {
    sum(src) + sum(dst) + u32::from(len) + u32::from(next_header)
}

/// The header checksum of `ip` (its check field must be zero).
#[inline(always)]
pub fn ipv4_header(ip: &Ipv4Hdr) -> u16 {
    // SAFETY: Ipv4Hdr is 20 plain bytes.
    of(unsafe { &*(ip as *const Ipv4Hdr).cast::<[u8; Ipv4Hdr::LEN]>() })
}

/// RFC 1624 incremental update of a stored checksum `check` when a 16-bit
/// word changes from `old` to `new` (all as stored, network order).
#[inline(always)]
pub fn replace2(check: u16, old: u16, new: u16) -> u16 {
    let sum = u32::from(!u16::from_be(check))
        + u32::from(!u16::from_be(old))
        + u32::from(u16::from_be(new));
    (!fold(sum)).to_be()
}

/// The same for a 32-bit field (an IPv4 address), as two 16-bit words.
#[inline(always)]
pub fn replace4(check: u16, old: u32, new: u32) -> u16 {
    let check = replace2(check, old as u16, new as u16);
    replace2(check, (old >> 16) as u16, (new >> 16) as u16)
}

/// `replace4` for an IPv4 address as it sits in the packet.
#[inline(always)]
pub fn replace_addr(check: u16, old: Ipv4Octets, new: Ipv4Octets) -> u16 {
    replace4(check, u32::from_ne_bytes(old), u32::from_ne_bytes(new))
}

/// The same for an IPv6 address as it sits in the packet: its eight
/// words at once (one's complement of a word w is 0xffff - w, so the old
/// address's sum is taken from eight times 0xffff).
#[inline(always)]
pub fn replace_addr6(check: u16, old: &Ipv6Octets, new: &Ipv6Octets) -> u16 {
    const WORDS: u32 = 8;
    let sum = u32::from(!u16::from_be(check)) + (WORDS * 0xffff - sum(old)) + sum(new);
    (!fold(sum)).to_be()
}
