//! VRRP advertisements off the wire, over IPv4 and IPv6 (the first byte
//! picks the family): decoding never panics, and what decodes encodes back
//! to an advert that decodes the same.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_userspace::vrrp::packet::Advert;
use libfuzzer_sys::fuzz_target;

const SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(172, 16, 122, 189));
const DST: IpAddr = IpAddr::V4(Ipv4Addr::new(224, 0, 0, 18));
const SRC6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x189));
const DST6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12));

fuzz_target!(|data: &[u8]| {
    let Some((family, payload)) = data.split_first() else {
        return;
    };
    let (src, dst) = if family & 1 == 0 {
        (SRC, DST)
    } else {
        (SRC6, DST6)
    };
    if let Ok(advert) = Advert::decode(payload, src, dst) {
        let again = Advert::decode(&advert.encode(src, dst), src, dst)
            .expect("a re-encoded advert must decode");
        assert_eq!(again, advert);
    }
});
