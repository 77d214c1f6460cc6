//! `service_hits`: per service id, the one word a flow-table hit needs of
//! its service (its key, whether it is standby, how it forwards). The data
//! plane looks the flow up first and, when the flow's service is the one
//! whose key the packet carries, takes the hit without the service's hash
//! lookup. One 8-byte word, which the agent stores atomically through a
//! mapping of the array: a packet never reads half of an update. IPv4
//! services on a port only: a port-0 (all ports) service or an IPv6 one
//! has no word (0) and its packets take the service lookup as before.

use crate::maps::ServiceKey;

/// The word holds a service (a zero word holds none).
pub const SERVICE_HIT_PRESENT: u8 = 1 << 7;
/// The service is standby (SERVICE_FLAG_STANDBY).
pub const SERVICE_HIT_STANDBY: u8 = 1 << 6;
/// The low bits of the flags byte: the ForwardKind.
const FORWARD_MASK: u8 = 0x0f;
/// Bytes 0-3 the VIP, 4-5 the port (network order), 6 the protocol, 7 the
/// flags above.
const FLAGS_BYTE: usize = 7;
/// The word's key bytes (all but the flags).
const KEY_MASK: u64 = u64::from_ne_bytes([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0]);

/// What a hit needs of its service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceHit {
    /// ForwardKind as u8.
    pub forward: u8,
    pub standby: bool,
}

/// A flow's (VIP, port, protocol) as the key bytes of a word.
#[inline(always)]
pub fn key_word(vip: [u8; 4], port: u16, proto: u8) -> u64 {
    let [p0, p1] = port.to_ne_bytes();
    u64::from_ne_bytes([vip[0], vip[1], vip[2], vip[3], p0, p1, proto, 0])
}

/// The word of the service under `key`.
pub fn word_of(key: &ServiceKey, hit: ServiceHit) -> u64 {
    if key.port == 0 {
        return 0;
    }
    let flags = SERVICE_HIT_PRESENT
        | if hit.standby { SERVICE_HIT_STANDBY } else { 0 }
        | hit.forward & FORWARD_MASK;
    key_word(key.vip, key.port, key.proto) | u64::from_ne_bytes(flags_only(flags))
}

#[inline(always)]
fn flags_only(flags: u8) -> [u8; 8] {
    let mut bytes = [0; 8];
    bytes[FLAGS_BYTE] = flags;
    bytes
}

/// What `word` says of a flow whose key bytes are `key`: None unless it
/// holds the service of exactly that key.
#[inline(always)]
pub fn decode(word: u64, key: u64) -> Option<ServiceHit> {
    let flags = word.to_ne_bytes()[FLAGS_BYTE];
    if flags & SERVICE_HIT_PRESENT == 0 || word & KEY_MASK != key {
        return None;
    }
    Some(ServiceHit {
        forward: flags & FORWARD_MASK,
        standby: flags & SERVICE_HIT_STANDBY != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: ServiceKey = ServiceKey {
        vip: [172, 16, 122, 100],
        port: 80u16.to_be(),
        proto: crate::IPPROTO_TCP,
        _pad: 0,
    };

    #[test]
    fn a_word_answers_for_its_key_only() {
        let hit = ServiceHit {
            forward: 2,
            standby: true,
        };
        let word = word_of(&KEY, hit);
        assert_eq!(
            decode(word, key_word(KEY.vip, KEY.port, KEY.proto)),
            Some(hit)
        );
        for other in [
            key_word([172, 16, 122, 101], KEY.port, KEY.proto),
            key_word(KEY.vip, 443u16.to_be(), KEY.proto),
            key_word(KEY.vip, KEY.port, crate::IPPROTO_UDP),
        ] {
            assert_eq!(decode(word, other), None);
        }
        let plain = ServiceHit {
            forward: 0,
            standby: false,
        };
        assert_eq!(
            decode(word_of(&KEY, plain), key_word(KEY.vip, KEY.port, KEY.proto)),
            Some(plain)
        );
    }

    #[test]
    fn no_word_holds_a_service_unless_written_or_of_port_0() {
        let k = key_word(KEY.vip, KEY.port, KEY.proto);
        assert_eq!(decode(0, k), None);
        let all_ports = ServiceKey { port: 0, ..KEY };
        let hit = ServiceHit {
            forward: 0,
            standby: false,
        };
        assert_eq!(word_of(&all_ports, hit), 0);
        // A flow to port 0 never matches an empty word's zero key either.
        assert_eq!(decode(0, key_word([0; 4], 0, 0)), None);
    }
}
