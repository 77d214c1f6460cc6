//! VRRP advertisement codec: VRRPv2 (RFC 3768, with simple-text "PASS"
//! authentication) and VRRPv3 (RFC 5798, IPv4 and IPv6: the family of the
//! packet's source decides the addresses' width and the pseudo-header). Decoding validates every
//! field it can on its own; what depends on the instance (vrid, auth,
//! interval) is checked by the caller.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use thiserror::Error;

/// IP protocol number of VRRP.
pub const IPPROTO_VRRP: u8 = 112;
/// VRRP's IPv4 multicast group.
pub const VRRP_MCAST_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// VRRP's IPv6 multicast group (RFC 5798 5.1.2.2).
pub const VRRP_MCAST_GROUP6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// Adverts are sent, and must be received, with TTL 255.
pub const VRRP_TTL: u8 = 255;
/// The only packet type: ADVERTISEMENT.
const TYPE_ADVERTISEMENT: u8 = 1;
const HEADER_LEN: usize = 8;
const V2_AUTH_DATA_LEN: usize = 8;
pub const AUTH_NONE: u8 = 0;
pub const AUTH_PASS: u8 = 1;
/// Largest VRRPv3 Max Advert Interval: 12 bits of centiseconds.
const V3_MAX_ADVERT_CS: u16 = 0x0fff;
/// Bytes of the IPv4 pseudo-header VRRPv3's checksum covers.
const PSEUDO_HEADER_LEN: usize = 12;
/// The same over IPv6 (RFC 8200 8.1).
const PSEUDO_HEADER6_LEN: usize = 40;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    /// 2 or 3.
    pub version: u8,
    pub vrid: u8,
    pub priority: u8,
    /// v2: AUTH_NONE or AUTH_PASS; v3: always AUTH_NONE.
    pub auth_type: u8,
    /// The advertisement interval in centiseconds (v2 carries whole
    /// seconds; they are stored here as seconds x 100).
    pub advert_int_cs: u16,
    /// Of the family the advert is sent over.
    pub addresses: Vec<IpAddr>,
    /// v2 PASS authentication: the password, zero-padded to 8 bytes.
    pub auth_data: [u8; V2_AUTH_DATA_LEN],
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("packet too short ({0} bytes)")]
    TooShort(usize),
    #[error("unsupported VRRP version {0}")]
    BadVersion(u8),
    #[error("not an advertisement (type {0})")]
    BadType(u8),
    #[error("address count {count} does not match the packet length {len}")]
    LengthMismatch { count: u8, len: usize },
    #[error("bad checksum")]
    BadChecksum,
    #[error("advertisement interval 0")]
    ZeroInterval,
    #[error("source and destination of different families")]
    MixedFamilies,
}

/// Internet checksum (RFC 1071) over `chunks`, as if concatenated.
pub(super) fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for byte in chunks.iter().flat_map(|c| c.iter().copied()) {
        match odd.take() {
            None => odd = Some(byte),
            Some(hi) => sum += u32::from(u16::from_be_bytes([hi, byte])),
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// VRRPv3's pseudo-header for a message of `len` bytes from `src` to `dst`.
fn pseudo_header(src: IpAddr, dst: IpAddr, len: usize) -> Result<Vec<u8>, DecodeError> {
    match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let mut p = vec![0u8; PSEUDO_HEADER_LEN];
            p[0..4].copy_from_slice(&src.octets());
            p[4..8].copy_from_slice(&dst.octets());
            p[9] = IPPROTO_VRRP;
            p[10..12].copy_from_slice(&(len as u16).to_be_bytes());
            Ok(p)
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => Ok(pseudo_header6(src, dst, len, IPPROTO_VRRP)),
        _ => Err(DecodeError::MixedFamilies),
    }
}

/// The IPv6 pseudo-header (RFC 8200 8.1) of an upper-layer message of
/// `len` bytes and protocol `next_header` (VRRP, ICMPv6) from `src` to `dst`.
pub(super) fn pseudo_header6(src: Ipv6Addr, dst: Ipv6Addr, len: usize, next_header: u8) -> Vec<u8> {
    let mut p = vec![0u8; PSEUDO_HEADER6_LEN];
    p[0..16].copy_from_slice(&src.octets());
    p[16..32].copy_from_slice(&dst.octets());
    p[32..36].copy_from_slice(&(len as u32).to_be_bytes());
    p[39] = next_header;
    p
}

/// An address's bytes as the advert carries it.
fn address_octets(a: &IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

impl Advert {
    /// The password as keepalived uses it: first 8 bytes, zero-padded.
    pub fn auth_data_from(pass: &str) -> [u8; V2_AUTH_DATA_LEN] {
        let mut data = [0u8; V2_AUTH_DATA_LEN];
        for (d, s) in data.iter_mut().zip(pass.bytes()) {
            *d = s;
        }
        data
    }

    /// The VRRP payload (what follows the IP header). `src`/`dst` are the IP
    /// addresses it will be sent with (VRRPv3's checksum covers them; both
    /// of the addresses' family).
    pub fn encode(&self, src: IpAddr, dst: IpAddr) -> Vec<u8> {
        let mut p = vec![0u8; HEADER_LEN];
        p[0] = (self.version << 4) | TYPE_ADVERTISEMENT;
        p[1] = self.vrid;
        p[2] = self.priority;
        p[3] = self.addresses.len() as u8;
        if self.version == 2 {
            p[4] = self.auth_type;
            p[5] = (self.advert_int_cs / 100) as u8;
        } else {
            p[4..6].copy_from_slice(&(self.advert_int_cs & V3_MAX_ADVERT_CS).to_be_bytes());
        }
        for a in &self.addresses {
            p.extend_from_slice(&address_octets(a));
        }
        if self.version == 2 {
            p.extend_from_slice(&self.auth_data);
        }
        let sum = if self.version == 2 {
            checksum(&[&p])
        } else {
            // Mixed families have no pseudo-header: the checksum is then
            // over the message alone, and a receiver rejects it.
            let pseudo = pseudo_header(src, dst, p.len()).unwrap_or_default();
            checksum(&[&pseudo, &p])
        };
        p[6..8].copy_from_slice(&sum.to_be_bytes());
        p
    }

    /// Parses and validates a VRRP payload received from `src` to `dst`
    /// (VRRPv2 is IPv4 only).
    pub fn decode(p: &[u8], src: IpAddr, dst: IpAddr) -> Result<Self, DecodeError> {
        if p.len() < HEADER_LEN {
            return Err(DecodeError::TooShort(p.len()));
        }
        let version = p[0] >> 4;
        if !(version == 3 || version == 2 && src.is_ipv4()) {
            return Err(DecodeError::BadVersion(version));
        }
        let width = if src.is_ipv4() { 4 } else { 16 };
        if p[0] & 0x0f != TYPE_ADVERTISEMENT {
            return Err(DecodeError::BadType(p[0] & 0x0f));
        }
        let count = p[3];
        let trailer = if version == 2 { V2_AUTH_DATA_LEN } else { 0 };
        let expected = HEADER_LEN + width * count as usize + trailer;
        if p.len() != expected {
            return Err(DecodeError::LengthMismatch {
                count,
                len: p.len(),
            });
        }
        let sum = if version == 2 {
            checksum(&[p])
        } else {
            checksum(&[&pseudo_header(src, dst, p.len())?, p])
        };
        if sum != 0 {
            return Err(DecodeError::BadChecksum);
        }
        let (auth_type, advert_int_cs) = if version == 2 {
            (p[4], u16::from(p[5]) * 100)
        } else {
            (
                AUTH_NONE,
                u16::from_be_bytes([p[4], p[5]]) & V3_MAX_ADVERT_CS,
            )
        };
        if advert_int_cs == 0 {
            return Err(DecodeError::ZeroInterval);
        }
        let addresses = p[HEADER_LEN..HEADER_LEN + width * count as usize]
            .chunks(width)
            .map(|c| match <[u8; 16]>::try_from(c) {
                Ok(v6) => IpAddr::from(v6),
                Err(_) => IpAddr::from([c[0], c[1], c[2], c[3]]),
            })
            .collect();
        let mut auth_data = [0u8; V2_AUTH_DATA_LEN];
        if version == 2 {
            auth_data.copy_from_slice(&p[expected - V2_AUTH_DATA_LEN..]);
        }
        Ok(Self {
            version,
            vrid: p[1],
            priority: p[2],
            auth_type,
            advert_int_cs,
            addresses,
            auth_data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(172, 16, 122, 188));
    const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(172, 16, 122, 100));
    const GROUP: IpAddr = IpAddr::V4(VRRP_MCAST_GROUP);
    const GROUP6: IpAddr = IpAddr::V6(VRRP_MCAST_GROUP6);
    const LINK_LOCAL: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x188));
    const VIP6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x122, 0, 0, 0, 0, 0x100));

    fn seed_v2() -> Advert {
        Advert {
            version: 2,
            vrid: 51,
            priority: 100,
            auth_type: AUTH_PASS,
            advert_int_cs: 100,
            addresses: vec![VIP],
            auth_data: Advert::auth_data_from("1111"),
        }
    }

    #[test]
    fn v2_golden_bytes_of_the_seeds_instance() {
        // vrid 51, prio 100, 1 address, auth PASS, 1 s, VIP, "1111".
        // Checksum 0xf0f2 computed independently (Python, RFC 1071).
        let bytes = seed_v2().encode(SRC, GROUP);
        let expected: [u8; 20] = [
            0x21, 51, 100, 1, 1, 1, 0xf0, 0xf2, 172, 16, 122, 100, b'1', b'1', b'1', b'1', 0, 0, 0,
            0,
        ];
        assert_eq!(bytes, expected);
        assert_eq!(checksum(&[&bytes]), 0);
    }

    #[test]
    fn v2_and_v3_round_trip() {
        let v2 = seed_v2();
        let bytes = v2.encode(SRC, GROUP);
        assert_eq!(Advert::decode(&bytes, SRC, GROUP), Ok(v2));
        let v3 = Advert {
            version: 3,
            auth_type: AUTH_NONE,
            advert_int_cs: 50,
            auth_data: [0; 8],
            addresses: vec![VIP, Ipv4Addr::new(10, 0, 0, 1).into()],
            ..seed_v2()
        };
        let bytes = v3.encode(SRC, GROUP);
        assert_eq!(bytes.len(), 8 + 8);
        assert_eq!(Advert::decode(&bytes, SRC, GROUP), Ok(v3));
    }

    #[test]
    fn v3_checksum_covers_the_pseudo_header() {
        let v3 = Advert {
            version: 3,
            auth_type: AUTH_NONE,
            auth_data: [0; 8],
            ..seed_v2()
        };
        let bytes = v3.encode(SRC, GROUP);
        let other_src = Ipv4Addr::new(172, 16, 122, 189).into();
        assert_eq!(
            Advert::decode(&bytes, other_src, GROUP),
            Err(DecodeError::BadChecksum)
        );
    }

    #[test]
    fn bad_packets_are_rejected_with_the_reason() {
        let good = seed_v2().encode(SRC, GROUP);
        let decode = |p: &[u8]| Advert::decode(p, SRC, GROUP);
        assert_eq!(decode(&good[..7]), Err(DecodeError::TooShort(7)));
        let mut v = good.clone();
        v[0] = 0x41;
        assert_eq!(decode(&v), Err(DecodeError::BadVersion(4)));
        let mut v = good.clone();
        v[0] = 0x22;
        assert_eq!(decode(&v), Err(DecodeError::BadType(2)));
        let mut v = good.clone();
        v[3] = 2;
        assert_eq!(
            decode(&v),
            Err(DecodeError::LengthMismatch { count: 2, len: 20 })
        );
        let mut v = good.clone();
        v[2] = 99;
        assert_eq!(decode(&v), Err(DecodeError::BadChecksum));
        let mut oversized = good.clone();
        oversized.extend_from_slice(&[0; 4]);
        assert!(matches!(
            decode(&oversized),
            Err(DecodeError::LengthMismatch { .. })
        ));
    }

    fn seed_v3_over_ipv6() -> Advert {
        Advert {
            version: 3,
            auth_type: AUTH_NONE,
            auth_data: [0; 8],
            addresses: vec![VIP6],
            ..seed_v2()
        }
    }

    #[test]
    fn v3_over_ipv6_golden_bytes() {
        // vrid 51, prio 100, 1 address, 1 s (100 cs), 2001:db8:122::100.
        // Checksum over the IPv6 pseudo-header (fe80::188 -> ff02::12,
        // length 24, next header 112) computed independently (Python, RFC
        // 1071): 0x3ae6.
        let bytes = seed_v3_over_ipv6().encode(LINK_LOCAL, GROUP6);
        let mut expected = vec![0x31, 51, 100, 1, 0, 100, 0x3a, 0xe6];
        expected.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0x01, 0x22, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&[0, 0, 0x01, 0x00]);
        assert_eq!(bytes, expected);
        assert_eq!(
            Advert::decode(&bytes, LINK_LOCAL, GROUP6),
            Ok(seed_v3_over_ipv6())
        );
    }

    #[test]
    fn ipv6_adverts_check_their_family() {
        let bytes = seed_v3_over_ipv6().encode(LINK_LOCAL, GROUP6);
        // Another source: the pseudo-header differs.
        let other: IpAddr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x189).into();
        assert_eq!(
            Advert::decode(&bytes, other, GROUP6),
            Err(DecodeError::BadChecksum)
        );
        // Read as IPv4, the 16-byte address does not fit the count.
        assert!(matches!(
            Advert::decode(&bytes, SRC, GROUP),
            Err(DecodeError::LengthMismatch { .. })
        ));
        assert_eq!(
            Advert::decode(&bytes, LINK_LOCAL, GROUP),
            Err(DecodeError::MixedFamilies)
        );
        // VRRPv2 is IPv4 only.
        let v2 = seed_v2().encode(SRC, GROUP);
        assert_eq!(
            Advert::decode(&v2, LINK_LOCAL, GROUP6),
            Err(DecodeError::BadVersion(2))
        );
    }

    #[test]
    fn password_is_cut_to_8_bytes() {
        assert_eq!(&Advert::auth_data_from("123456789"), b"12345678");
        assert_eq!(&Advert::auth_data_from("1111"), b"1111\0\0\0\0");
    }
}
