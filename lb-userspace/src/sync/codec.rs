//! IPVS connection-synchronization messages (net/netfilter/ipvs/ip_vs_sync.c)
//! byte for byte: version 1 (what the kernel sends since Linux 2.6.39, and
//! what keepalived's lvs_sync_daemon makes it send) encoded and decoded,
//! version 0 decoded. Pure: no sockets, no maps.
//!
//! Version 1 message: an 8-byte header (reserved 0, syncid, size, count,
//! version 1, spare 0) then `count` connection records, each padded to 4
//! bytes. An IPv4 record is 36 bytes (type 0, protocol, version/size, flags,
//! state, cport, vport, dport, fwmark, timeout in seconds, caddr, vaddr,
//! daddr) followed by optional parameters (type, length, data); an IPv6
//! record (type STYPE_F_INET6) is the same with 16-byte addresses, 72 bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The kernel's defaults (IP_VS_SYNC_GROUP, IP_VS_SYNC_PORT).
pub const SYNC_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);
pub const SYNC_PORT: u16 = 8848;

/// struct ip_vs_sync_mesg (version 1).
pub const HEADER_LEN: usize = 8;
/// struct ip_vs_sync_mesg_v0.
const V0_HEADER_LEN: usize = 4;
/// struct ip_vs_sync_v4.
pub const V4_CONN_LEN: usize = 36;
/// struct ip_vs_sync_v6.
pub const V6_CONN_LEN: usize = 72;
/// struct ip_vs_sync_conn_v0 (SIMPLE_CONN_SIZE).
const V0_CONN_LEN: usize = 24;
/// struct ip_vs_sync_conn_options: two struct ip_vs_seq of three u32.
const SEQ_OPTIONS_LEN: usize = 24;
/// SYNC_PROTO_VER.
const VERSION_1: u8 = 1;
/// ver_size: the record format's version sits in the top 4 bits.
const SVER_SHIFT: u16 = 12;
const SVER_MASK: u16 = 0x0fff;
/// Record type bit: IPv6 addresses.
const STYPE_F_INET6: u8 = 1;
/// Optional parameters (IPVS_OPT_*): the high bit marks one a receiver may
/// skip when it does not know it.
const OPT_SEQ_DATA: u8 = 1;
const OPT_PE_DATA: u8 = 2;
const OPT_PE_NAME: u8 = 3;
const OPT_F_PARAM: u8 = 1 << (7 - 1);
/// IP_VS_PEDATA_MAXLEN, IP_VS_PENAME_MAXLEN.
const PE_DATA_MAX: usize = 255;
const PE_NAME_MAX: usize = 16;
/// nr_conns is one byte.
pub const MAX_CONNS_PER_MESSAGE: usize = u8::MAX as usize;

/// Connection flags (include/uapi/linux/ip_vs.h IP_VS_CONN_F_*).
pub mod conn_flags {
    pub const FWD_MASK: u32 = 0x0007;
    pub const MASQ: u32 = 0x0000;
    pub const TUNNEL: u32 = 0x0002;
    pub const DROUTE: u32 = 0x0003;
    pub const NOOUTPUT: u32 = 0x0080;
    pub const INACTIVE: u32 = 0x0100;
    pub const SEQ_MASK: u32 = 0x0600;
    pub const NO_CPORT: u32 = 0x0800;
    pub const TEMPLATE: u32 = 0x1000;
    /// IP_VS_CONN_F_BACKUP_MASK: what a backup keeps of a record's flags.
    pub const BACKUP_MASK: u32 = FWD_MASK | NOOUTPUT | INACTIVE | SEQ_MASK | NO_CPORT | TEMPLATE;
}

/// One connection (or persistence template) as a sync record carries it.
/// Ports in host order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncConn {
    pub protocol: u8,
    /// IP_VS_CONN_F_*: forwarding method, INACTIVE, TEMPLATE.
    pub flags: u32,
    /// IPVS state (lb_common::conntrack's numbering is IPVS's).
    pub state: u16,
    pub cport: u16,
    pub vport: u16,
    pub dport: u16,
    pub fwmark: u32,
    /// Seconds left; 0: the receiver's default for the state.
    pub timeout_s: u32,
    /// Client, virtual and real server addresses, of one family (the
    /// VIP's decides the record's; an address of the other family is
    /// encoded IPv4-mapped, or as 0.0.0.0 when it has no IPv4 form).
    pub caddr: IpAddr,
    pub vaddr: IpAddr,
    pub daddr: IpAddr,
}

/// A decoded message: its sync id and the records it could read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    pub syncid: u8,
    pub version: u8,
    pub conns: Vec<SyncConn>,
    /// Records the kernel too would skip one by one (an unknown mandatory
    /// parameter).
    pub skipped: usize,
}

impl Message {
    /// encode_pass_end's message: version 1 and no record at all.
    pub fn is_pass_end(&self) -> bool {
        self.version == VERSION_1 && self.conns.is_empty() && self.skipped == 0
    }
}

/// Why a whole datagram was dropped (the kernel drops it the same way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("shorter than a message header")]
    TooShort,
    #[error("size field {claimed} differs from the datagram's {actual} bytes")]
    SizeMismatch { claimed: usize, actual: usize },
    #[error("a connection record runs past the end")]
    Truncated,
    #[error("unknown connection record version {0}")]
    RecordVersion(u16),
    #[error("unknown connection record type {0}")]
    RecordType(u8),
    #[error("a malformed option")]
    BadOption,
}

impl DecodeError {
    /// The drop reason's name, for counters and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::TooShort | DecodeError::Truncated => "truncated",
            DecodeError::SizeMismatch { .. } => "size_mismatch",
            DecodeError::RecordVersion(_) | DecodeError::RecordType(_) => "version",
            DecodeError::BadOption => "bad_option",
        }
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn addr(b: &[u8], at: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]))
}

fn addr6(b: &[u8], at: usize) -> IpAddr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&b[at..at + 16]);
    IpAddr::V6(Ipv6Addr::from(octets))
}

/// Reads the address of a record's family at an offset.
type AddrReader = fn(&[u8], usize) -> IpAddr;

/// Where the addresses of a record start (the fixed fields before them
/// are the same for both families).
const ADDRS_OFFSET: usize = 24;

/// Decodes a datagram as the kernel's ip_vs_process_message does.
pub fn decode(buf: &[u8]) -> Result<Message, DecodeError> {
    if buf.len() < V0_HEADER_LEN {
        return Err(DecodeError::TooShort);
    }
    let claimed = usize::from(be16(buf, 2));
    if claimed != buf.len() {
        return Err(DecodeError::SizeMismatch {
            claimed,
            actual: buf.len(),
        });
    }
    let is_v1 = buf.len() >= HEADER_LEN && buf[0] == 0 && buf[5] == VERSION_1 && be16(buf, 6) == 0;
    if !is_v1 {
        return decode_v0(buf);
    }
    let mut msg = Message {
        syncid: buf[1],
        version: VERSION_1,
        ..Message::default()
    };
    let mut at = HEADER_LEN;
    for _ in 0..buf[4] {
        if at + V4_CONN_LEN > buf.len() {
            return Err(DecodeError::Truncated);
        }
        let ver_size = be16(buf, at + 2);
        let size = usize::from(ver_size & SVER_MASK);
        let end = at + size;
        // A record shorter than its fixed part is refused as the kernel
        // does (ip_vs_proc_sync_conn: -20), and never read past its size.
        if end > buf.len() || size < V4_CONN_LEN {
            return Err(DecodeError::Truncated);
        }
        if ver_size >> SVER_SHIFT != 0 {
            return Err(DecodeError::RecordVersion(ver_size >> SVER_SHIFT));
        }
        match decode_record(&buf[at..end])? {
            Some(conn) => msg.conns.push(conn),
            None => msg.skipped += 1,
        }
        // Records are padded to 32 bits.
        at += (size + 3) & !3;
    }
    Ok(msg)
}

/// One version-1 record (exactly its `size` bytes); None when it is to be
/// skipped on its own.
fn decode_record(r: &[u8]) -> Result<Option<SyncConn>, DecodeError> {
    let record_type = r[0];
    let inet6 = record_type == STYPE_F_INET6;
    let fixed = if inet6 {
        V6_CONN_LEN
    } else if record_type == 0 {
        V4_CONN_LEN
    } else {
        return Err(DecodeError::RecordType(record_type));
    };
    if r.len() < fixed {
        return Err(DecodeError::Truncated);
    }
    let mut skip = false;
    let mut seen = 0u8;
    let mut at = fixed;
    while at < r.len() {
        if at + 2 > r.len() {
            return Err(DecodeError::BadOption);
        }
        let (ptype, plen) = (r[at], usize::from(r[at + 1]));
        at += 2;
        if plen == 0 || at + plen > r.len() {
            return Err(DecodeError::BadOption);
        }
        let kind = ptype & !OPT_F_PARAM;
        let limit = match kind {
            OPT_SEQ_DATA => Some(SEQ_OPTIONS_LEN),
            OPT_PE_DATA => Some(PE_DATA_MAX),
            OPT_PE_NAME => Some(PE_NAME_MAX),
            _ => None,
        };
        match limit {
            Some(max) => {
                let exact = kind == OPT_SEQ_DATA && plen != max;
                if exact || plen > max || seen & (1 << kind) != 0 {
                    return Err(DecodeError::BadOption);
                }
                seen |= 1 << kind;
            }
            // Unknown and mandatory: this record is skipped.
            None if ptype & OPT_F_PARAM == 0 => skip = true,
            None => {}
        }
        at += plen;
    }
    if skip {
        return Ok(None);
    }
    let (read, len): (AddrReader, usize) = if inet6 {
        (addr6, IPV6_LEN)
    } else {
        (addr, IPV4_LEN)
    };
    Ok(Some(SyncConn {
        protocol: r[1],
        flags: be32(r, 4),
        state: be16(r, 8),
        cport: be16(r, 10),
        vport: be16(r, 12),
        dport: be16(r, 14),
        fwmark: be32(r, 16),
        timeout_s: be32(r, 20),
        caddr: read(r, ADDRS_OFFSET),
        vaddr: read(r, ADDRS_OFFSET + len),
        daddr: read(r, ADDRS_OFFSET + 2 * len),
    }))
}

/// Version 0: a 4-byte header (count, syncid, size) and 24-byte records,
/// 24 bytes of sequence options behind those whose flags say so; no
/// timeouts (the receiver uses its own).
fn decode_v0(buf: &[u8]) -> Result<Message, DecodeError> {
    let mut msg = Message {
        syncid: buf[1],
        version: 0,
        ..Message::default()
    };
    let mut at = V0_HEADER_LEN;
    for _ in 0..buf[0] {
        if at + V0_CONN_LEN > buf.len() {
            return Err(DecodeError::Truncated);
        }
        let r = &buf[at..at + V0_CONN_LEN];
        let flags = u32::from(be16(r, 20));
        at += V0_CONN_LEN;
        if flags & conn_flags::SEQ_MASK != 0 {
            at += SEQ_OPTIONS_LEN;
            if at > buf.len() {
                return Err(DecodeError::Truncated);
            }
        }
        msg.conns.push(SyncConn {
            protocol: r[1],
            flags,
            state: be16(r, 22),
            cport: be16(r, 2),
            vport: be16(r, 4),
            dport: be16(r, 6),
            fwmark: 0,
            timeout_s: 0,
            caddr: addr(r, 8),
            vaddr: addr(r, 12),
            daddr: addr(r, 16),
        });
    }
    Ok(msg)
}

/// Version-1 datagrams carrying `conns`, each at most `maxlen` bytes and
/// MAX_CONNS_PER_MESSAGE records (the kernel's sync buffer rules); a
/// datagram holds at least one record whatever maxlen says.
pub fn encode(syncid: u8, conns: &[SyncConn], maxlen: usize) -> Vec<Vec<u8>> {
    let mut datagrams = Vec::new();
    let (mut start, mut len) = (0, HEADER_LEN);
    for (i, conn) in conns.iter().enumerate() {
        let size = record_len(conn);
        if i > start && (len + size > maxlen || i - start == MAX_CONNS_PER_MESSAGE) {
            datagrams.push(encode_one(syncid, &conns[start..i]));
            (start, len) = (i, HEADER_LEN);
        }
        len += size;
    }
    if start < conns.len() {
        datagrams.push(encode_one(syncid, &conns[start..]));
    }
    datagrams
}

/// The end of a full announcement (an lb extension inside IPVS's format):
/// a version-1 message with no records. The kernel reads it and does
/// nothing (ip_vs_process_message loops over nr_conns = 0), so a kernel
/// backup is unaffected; a balancer of ours counts it to know when it has
/// heard a peer's whole table.
pub fn encode_pass_end(syncid: u8) -> Vec<u8> {
    encode_one(syncid, &[])
}

/// IPv4 and IPv6 address lengths in records.
const IPV4_LEN: usize = 4;
const IPV6_LEN: usize = 16;

/// The record's length: the VIP's family decides.
fn record_len(conn: &SyncConn) -> usize {
    if conn.vaddr.is_ipv6() {
        V6_CONN_LEN
    } else {
        V4_CONN_LEN
    }
}

/// IPv4 records one datagram of at most `maxlen` bytes holds (at least one).
pub fn records_per_message(maxlen: usize) -> usize {
    ((maxlen.max(HEADER_LEN + V4_CONN_LEN) - HEADER_LEN) / V4_CONN_LEN).min(MAX_CONNS_PER_MESSAGE)
}

fn encode_one(syncid: u8, conns: &[SyncConn]) -> Vec<u8> {
    let len = HEADER_LEN + conns.iter().map(record_len).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.push(0);
    out.push(syncid);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.push(conns.len() as u8);
    out.push(VERSION_1);
    out.extend_from_slice(&[0, 0]);
    for c in conns {
        let inet6 = c.vaddr.is_ipv6();
        out.push(if inet6 { STYPE_F_INET6 } else { 0 });
        out.push(c.protocol);
        out.extend_from_slice(&(record_len(c) as u16).to_be_bytes());
        out.extend_from_slice(&c.flags.to_be_bytes());
        out.extend_from_slice(&c.state.to_be_bytes());
        out.extend_from_slice(&c.cport.to_be_bytes());
        out.extend_from_slice(&c.vport.to_be_bytes());
        out.extend_from_slice(&c.dport.to_be_bytes());
        out.extend_from_slice(&c.fwmark.to_be_bytes());
        out.extend_from_slice(&c.timeout_s.to_be_bytes());
        for a in [c.caddr, c.vaddr, c.daddr] {
            if inet6 {
                out.extend_from_slice(&v6_octets(a));
            } else {
                out.extend_from_slice(&v4_octets(a));
            }
        }
    }
    out
}

/// `a` in an IPv6 record (an IPv4 address IPv4-mapped).
fn v6_octets(a: IpAddr) -> [u8; IPV6_LEN] {
    match a {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
    }
}

/// `a` in an IPv4 record (0.0.0.0 for an IPv6 address without an IPv4 form).
fn v4_octets(a: IpAddr) -> [u8; IPV4_LEN] {
    match a {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(a) => a.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED).octets(),
    }
}

/// The seed's client on the DR service, established on RS1 (tests).
#[cfg(test)]
pub(crate) fn seed_conn(cport: u16) -> SyncConn {
    SyncConn {
        protocol: 6,
        flags: conn_flags::DROUTE,
        state: 1,
        cport,
        vport: 80,
        dport: 80,
        fwmark: 0,
        timeout_s: 900,
        caddr: Ipv4Addr::new(172, 16, 122, 50).into(),
        vaddr: Ipv4Addr::new(172, 16, 122, 100).into(),
        daddr: Ipv4Addr::new(172, 16, 122, 193).into(),
    }
}

/// seed_conn on the seed's IPv6 addresses (tests).
#[cfg(test)]
pub(crate) fn seed_conn6(cport: u16) -> SyncConn {
    let seed6 = |last: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x122, 0, 0, 0, 0, last));
    SyncConn {
        caddr: seed6(0x50),
        vaddr: seed6(0x100),
        daddr: seed6(0x193),
        ..seed_conn(cport)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(cport: u16) -> SyncConn {
        seed_conn(cport)
    }

    #[test]
    fn a_v1_message_is_byte_for_byte_the_kernels() {
        let msg = encode(51, &[conn(40000)], 1472);
        assert_eq!(msg.len(), 1);
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            // header: reserved, syncid 51, size 44, 1 conn, version 1, spare
            0, 51, 0, 44, 1, 1, 0, 0,
            // type 0, TCP, ver 0 / size 36, flags DROUTE
            0, 6, 0, 36, 0, 0, 0, 3,
            // state ESTABLISHED, cport 40000, vport 80, dport 80
            0, 1, 0x9c, 0x40, 0, 80, 0, 80,
            // fwmark 0, timeout 900
            0, 0, 0, 0, 0, 0, 3, 0x84,
            172, 16, 122, 50, 172, 16, 122, 100, 172, 16, 122, 193,
        ];
        assert_eq!(msg[0], expected);
        let back = decode(&msg[0]).unwrap();
        assert_eq!(back.syncid, 51);
        assert_eq!(back.conns, [conn(40000)]);
    }

    #[test]
    fn the_end_of_a_full_announcement_is_an_empty_v1_message() {
        let end = encode_pass_end(51);
        // reserved, syncid 51, size 8, no records, version 1, spare
        assert_eq!(end, [0, 51, 0, 8, 0, 1, 0, 0]);
        let back = decode(&end).unwrap();
        assert!(back.is_pass_end() && back.syncid == 51);
        // A message with records, or one whose records were all skipped,
        // or a version-0 one, is no end marker.
        assert!(
            !decode(&encode(51, &[conn(1)], 1472)[0])
                .unwrap()
                .is_pass_end()
        );
        let skipped = Message {
            version: VERSION_1,
            skipped: 1,
            ..Message::default()
        };
        assert!(!skipped.is_pass_end());
        assert!(!decode(&[0, 0, 0, 4]).unwrap().is_pass_end());
    }

    #[test]
    fn an_ipv6_record_is_byte_for_byte_the_kernels() {
        let msg = encode(51, &[seed_conn6(40000)], 1472);
        #[rustfmt::skip]
        let mut expected: Vec<u8> = vec![
            // header: reserved, syncid 51, size 80, 1 conn, version 1, spare
            0, 51, 0, 80, 1, 1, 0, 0,
            // type STYPE_F_INET6, TCP, ver 0 / size 72, flags DROUTE
            1, 6, 0, 72, 0, 0, 0, 3,
            // state ESTABLISHED, cport 40000, vport 80, dport 80
            0, 1, 0x9c, 0x40, 0, 80, 0, 80,
            // fwmark 0, timeout 900
            0, 0, 0, 0, 0, 0, 3, 0x84,
        ];
        // caddr 2001:db8:122::50, vaddr ::100, daddr ::193.
        for last in [[0x00, 0x50], [0x01, 0x00], [0x01, 0x93]] {
            expected.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0x01, 0x22, 0, 0]);
            expected.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            expected.extend_from_slice(&last);
        }
        assert_eq!(msg, [expected]);
        let back = decode(&msg[0]).unwrap();
        assert_eq!(
            (back.conns.as_slice(), back.skipped),
            (&[seed_conn6(40000)][..], 0)
        );
    }

    #[test]
    fn both_families_share_datagrams_by_their_sizes() {
        // 20 IPv4 (720 bytes) and 20 IPv6 (1440) records: 1464 bytes of
        // records fit 1472 once; the rest spills into a second datagram.
        let conns: Vec<SyncConn> = (0..40)
            .map(|i| if i % 2 == 0 { conn(i) } else { seed_conn6(i) })
            .collect();
        let msgs = encode(1, &conns, 1472);
        assert!(
            msgs.iter().all(|m| m.len() <= 1472),
            "{:?}",
            msgs.iter().map(Vec::len).collect::<Vec<_>>()
        );
        assert_eq!(msgs.len(), 2);
        let decoded: Vec<SyncConn> = msgs.iter().flat_map(|m| decode(m).unwrap().conns).collect();
        assert_eq!(decoded, conns);
        // One record always goes, whatever maxlen says.
        assert_eq!(encode(1, &[seed_conn6(1)], 10).len(), 1);
    }

    #[test]
    fn messages_split_at_maxlen_and_255_records() {
        let conns: Vec<SyncConn> = (0..300).map(conn).collect();
        let msgs = encode(1, &conns, 1472);
        // (1472 - 8) / 36 = 40 records per datagram.
        assert_eq!(msgs.len(), 8);
        assert!(msgs.iter().all(|m| m.len() <= 1472));
        let decoded: Vec<SyncConn> = msgs.iter().flat_map(|m| decode(m).unwrap().conns).collect();
        assert_eq!(decoded, conns);
        let big = encode(1, &conns, 65_000);
        assert_eq!(big[0][4], 255, "nr_conns is one byte");
    }

    #[test]
    fn bad_datagrams_are_refused_with_a_reason() {
        let good = encode(7, &[conn(1), conn(2)], 1472).remove(0);
        assert_eq!(decode(&good[..3]), Err(DecodeError::TooShort));
        // The size field must equal the datagram's length.
        assert!(matches!(
            decode(&good[..good.len() - 1]),
            Err(DecodeError::SizeMismatch { .. })
        ));
        // Size field fixed up, a record cut: truncated.
        let mut cut = good[..good.len() - 10].to_vec();
        let len = cut.len() as u16;
        cut[2..4].copy_from_slice(&len.to_be_bytes());
        assert_eq!(decode(&cut), Err(DecodeError::Truncated));
        // A record whose size field is 0, or less than its fixed part
        // (found by the fuzzer: it was read past its size).
        for size in [0u16, 20, 35] {
            let mut short = good.clone();
            short[HEADER_LEN + 2..HEADER_LEN + 4].copy_from_slice(&size.to_be_bytes());
            assert_eq!(decode(&short), Err(DecodeError::Truncated), "size {size}");
        }
        // A record format version other than 0.
        let mut v = good.clone();
        v[HEADER_LEN + 2] |= 0x10;
        assert_eq!(decode(&v), Err(DecodeError::RecordVersion(1)));
        // An unknown record type.
        let mut t = good.clone();
        t[HEADER_LEN] = 4;
        assert_eq!(decode(&t), Err(DecodeError::RecordType(4)));
        assert_eq!(DecodeError::TooShort.reason(), "truncated");
    }

    /// A record with options: the kernel pads to 32 bits and parses them.
    fn with_option(option: &[u8]) -> Vec<u8> {
        let mut m = encode(1, &[conn(9)], 1472).remove(0);
        m.extend_from_slice(option);
        let size = (V4_CONN_LEN + option.len()) as u16;
        m[HEADER_LEN + 2..HEADER_LEN + 4].copy_from_slice(&size.to_be_bytes());
        m.resize(HEADER_LEN + usize::from(size).div_ceil(4) * 4, 0);
        let len = m.len() as u16;
        m[2..4].copy_from_slice(&len.to_be_bytes());
        m
    }

    #[test]
    fn options_are_parsed_and_skipped() {
        let mut seq = vec![OPT_SEQ_DATA, SEQ_OPTIONS_LEN as u8];
        seq.extend_from_slice(&[0; SEQ_OPTIONS_LEN]);
        assert_eq!(decode(&with_option(&seq)).unwrap().conns, [conn(9)]);
        let pe_name = [OPT_PE_NAME, 3, b's', b'i', b'p'];
        assert_eq!(decode(&with_option(&pe_name)).unwrap().conns, [conn(9)]);
        // Sequence data of the wrong length, a zero length: refused.
        assert_eq!(
            decode(&with_option(&[OPT_SEQ_DATA, 4, 0, 0, 0, 0])),
            Err(DecodeError::BadOption)
        );
        assert_eq!(
            decode(&with_option(&[OPT_PE_DATA, 0])),
            Err(DecodeError::BadOption)
        );
        // An unknown mandatory parameter: only that record is skipped.
        let skipped = decode(&with_option(&[5, 2, 0, 0])).unwrap();
        assert_eq!((skipped.conns.len(), skipped.skipped), (0, 1));
        // Unknown but optional (IPVS_OPT_F_PARAM): the record counts.
        let optional = decode(&with_option(&[5 | OPT_F_PARAM, 2, 0, 0])).unwrap();
        assert_eq!(optional.conns, [conn(9)]);
    }

    #[test]
    fn version_0_messages_decode_without_timeouts() {
        #[rustfmt::skip]
        let v0: Vec<u8> = vec![
            // count 1, syncid 3, size 28
            1, 3, 0, 28,
            // reserved, UDP, cport 5353, vport 53, dport 53
            0, 17, 0x14, 0xe9, 0, 53, 0, 53,
            10, 0, 0, 1, 10, 0, 0, 100, 10, 0, 0, 7,
            // flags MASQ, state 0
            0, 0, 0, 0,
        ];
        let m = decode(&v0).unwrap();
        assert_eq!((m.version, m.syncid), (0, 3));
        assert_eq!(m.conns[0].protocol, 17);
        assert_eq!(m.conns[0].cport, 5353);
        assert_eq!(m.conns[0].daddr, IpAddr::from([10, 0, 0, 7]));
        assert_eq!(m.conns[0].timeout_s, 0);
    }
}
