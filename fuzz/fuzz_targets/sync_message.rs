//! IPVS sync datagrams off the wire: decoding never panics, and the
//! records a version-1 message yields encode back to a message that
//! decodes to the same records.
#![no_main]

use lb_userspace::sync::codec::{decode, encode};
use libfuzzer_sys::fuzz_target;

/// A datagram as large as any sync datagram may be.
const MAXLEN: usize = 65507;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = decode(data) {
        let again: Vec<_> = encode(msg.syncid, &msg.conns, MAXLEN)
            .iter()
            .flat_map(|m| decode(m).expect("a re-encoded message must decode").conns)
            .collect();
        assert_eq!(again, msg.conns);
    }
});
