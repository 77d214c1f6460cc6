//! VRRP advertisements off the wire: decoding never panics, and what
//! decodes encodes back to an advert that decodes the same.
#![no_main]

use std::net::Ipv4Addr;

use lb_userspace::vrrp::packet::Advert;
use libfuzzer_sys::fuzz_target;

const SRC: Ipv4Addr = Ipv4Addr::new(172, 16, 122, 189);
const DST: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);

fuzz_target!(|data: &[u8]| {
    if let Ok(advert) = Advert::decode(data, SRC, DST) {
        let again = Advert::decode(&advert.encode(SRC, DST), SRC, DST)
            .expect("a re-encoded advert must decode");
        assert_eq!(again, advert);
    }
});
