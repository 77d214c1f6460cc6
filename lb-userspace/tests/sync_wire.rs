//! Our IPVS sync messages, decoded by a decoder nobody here wrote:
//! Wireshark's IPVS sync dissector (tshark, `-d udp.port==8848,ipvs`) must
//! read every field as we meant it. No root needed; tshark comes with
//! `cargo xtask setup`.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    process::Command,
};

use lb_userspace::sync::codec::{
    SYNC_GROUP, SYNC_PORT, SyncConn, conn_flags, encode, encode_pass_end,
};

const ETHERTYPE_IPV4: u16 = 0x0800;
const IPPROTO_UDP: u8 = 17;
/// pcap's LINKTYPE_ETHERNET.
const LINKTYPE_ETHERNET: u32 = 1;
/// pcap's magic number (microsecond timestamps).
const PCAP_MAGIC: u32 = 0xa1b2_c3d4;
const SENDER: Ipv4Addr = Ipv4Addr::new(172, 16, 122, 188);

/// An Ethernet/IPv4/UDP frame from SENDER to the sync group carrying `payload`.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0x01, 0x00, 0x5e, 0x00, 0x00, 0x51]); // 224.0.0.81's MAC
    f.extend_from_slice(&[0x02, 0x1b, 0, 0, 0, 0x88]);
    f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 1, IPPROTO_UDP, 0, 0]);
    ip.extend_from_slice(&SENDER.octets());
    ip.extend_from_slice(&SYNC_GROUP.octets());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&SYNC_PORT.to_be_bytes());
    f.extend_from_slice(&SYNC_PORT.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]); // no UDP checksum
    f.extend_from_slice(payload);
    f
}

/// A pcap file holding one frame per payload.
fn write_pcap(path: &Path, payloads: &[Vec<u8>]) {
    let mut out = Vec::new();
    out.extend_from_slice(&PCAP_MAGIC.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes()); // version 2.4
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes()); // thiszone
    out.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
    out.extend_from_slice(&65535u32.to_le_bytes()); // snaplen
    out.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    for (i, p) in payloads.iter().enumerate() {
        let f = frame(p);
        out.extend_from_slice(&(i as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&f);
    }
    std::fs::write(path, out).unwrap();
}

/// tshark's reading of `fields`, one line per frame, values of repeated
/// fields joined by commas.
fn tshark_fields(pcap: &Path, fields: &[&str]) -> Vec<Vec<String>> {
    let mut args = vec![
        "-r".to_string(),
        pcap.display().to_string(),
        "-d".into(),
        format!("udp.port=={SYNC_PORT},ipvs"),
        "-T".into(),
        "fields".into(),
        "-E".into(),
        "separator=/t".into(),
        "-E".into(),
        "occurrence=a".into(),
    ];
    for f in fields {
        args.push("-e".into());
        args.push(f.to_string());
    }
    let out = Command::new("tshark")
        .args(&args)
        .output()
        .expect("tshark not found: run `cargo xtask setup`");
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

fn conn(i: u16, flags: u32, state: u16, timeout_s: u32) -> SyncConn {
    SyncConn {
        protocol: if i.is_multiple_of(2) { 6 } else { 17 },
        flags,
        state,
        cport: 40000 + i,
        vport: 80,
        dport: 8080,
        fwmark: u32::from(i),
        timeout_s,
        caddr: Ipv4Addr::new(198, 18, 0, i as u8).into(),
        vaddr: Ipv4Addr::new(172, 16, 122, 100).into(),
        daddr: Ipv4Addr::new(172, 16, 122, 193 + (i % 2) as u8).into(),
    }
}

/// `conn` on IPv6 addresses (a 72-byte record).
fn conn6(i: u16, flags: u32, state: u16, timeout_s: u32) -> SyncConn {
    let ip6 = |net: u16, last: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, net, 0, 0, 0, 0, last));
    SyncConn {
        caddr: ip6(0x50, i),
        vaddr: ip6(0x122, 0x100),
        daddr: ip6(0x122, 0x193 + i % 2),
        ..conn(i, flags, state, timeout_s)
    }
}

/// tshark's reading of `fields` in `messages` (through a pcap file named
/// by `tag`).
fn decoded(messages: &[Vec<u8>], tag: &str, fields: &[&str]) -> Vec<Vec<String>> {
    let dir = std::env::temp_dir().join(format!("lb-sync-wire-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("sync.pcap");
    write_pcap(&pcap, messages);
    let rows = tshark_fields(&pcap, fields);
    std::fs::remove_dir_all(&dir).unwrap();
    rows
}

fn joined(values: impl Iterator<Item = String>) -> String {
    values.collect::<Vec<_>>().join(",")
}

#[test]
fn wiresharks_dissector_reads_every_field_as_we_meant_it() {
    let conns = [
        conn(0, conn_flags::DROUTE, 1, 900),
        conn(1, conn_flags::MASQ | conn_flags::INACTIVE, 11, 300),
        conn(2, conn_flags::TUNNEL | conn_flags::TEMPLATE, 0, 360),
    ];
    let messages = encode(51, &conns, 1472);
    assert_eq!(messages.len(), 1);
    let fields = [
        "ipvs.syncid",
        "ipvs.conncount",
        "ipvs.size",
        "ipvs.version",
        "ipvs.type",
        "ipvs.proto",
        "ipvs.size.v1",
        "ipvs.flags.v1",
        "ipvs.state",
        "ipvs.cport",
        "ipvs.vport",
        "ipvs.dport",
        "ipvs.fwmark",
        "ipvs.timeout",
        "ipvs.caddr",
        "ipvs.vaddr",
        "ipvs.daddr",
    ];
    let rows = decoded(&messages, "v4", &fields);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    let got = |name: &str| row[fields.iter().position(|f| *f == name).unwrap()].clone();
    let size = messages[0].len().to_string();
    assert_eq!(got("ipvs.syncid"), "51");
    assert_eq!(got("ipvs.conncount"), "3");
    assert_eq!(got("ipvs.size"), size);
    assert_eq!(got("ipvs.version"), "1");
    assert_eq!(got("ipvs.type"), "0,0,0");
    assert_eq!(got("ipvs.proto"), "0x06,0x11,0x06", "{row:?}");
    assert_eq!(got("ipvs.size.v1"), "36,36,36");
    // Wireshark prints 32-bit flags in hex.
    let flags = joined(conns.iter().map(|c| format!("0x{:08x}", c.flags)));
    assert_eq!(got("ipvs.flags.v1"), flags);
    assert_eq!(
        got("ipvs.state"),
        joined(conns.iter().map(|c| format!("0x{:04x}", c.state)))
    );
    for (field, value) in [
        (
            "ipvs.cport",
            joined(conns.iter().map(|c| c.cport.to_string())),
        ),
        (
            "ipvs.vport",
            joined(conns.iter().map(|c| c.vport.to_string())),
        ),
        (
            "ipvs.dport",
            joined(conns.iter().map(|c| c.dport.to_string())),
        ),
        (
            "ipvs.fwmark",
            joined(conns.iter().map(|c| format!("0x{:08x}", c.fwmark))),
        ),
        (
            "ipvs.timeout",
            joined(conns.iter().map(|c| c.timeout_s.to_string())),
        ),
        (
            "ipvs.caddr",
            joined(conns.iter().map(|c| c.caddr.to_string())),
        ),
        (
            "ipvs.vaddr",
            joined(conns.iter().map(|c| c.vaddr.to_string())),
        ),
        (
            "ipvs.daddr",
            joined(conns.iter().map(|c| c.daddr.to_string())),
        ),
    ] {
        assert_eq!(got(field), value, "{field}");
    }
}

#[test]
fn wiresharks_dissector_reads_ipv6_records_beside_ipv4_ones() {
    let conns = [
        conn6(0, conn_flags::DROUTE, 1, 900),
        conn(1, conn_flags::DROUTE, 1, 900),
        conn6(3, conn_flags::TUNNEL | conn_flags::TEMPLATE, 0, 360),
    ];
    let messages = encode(51, &conns, 1472);
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].len(), 8 + 72 + 36 + 72);
    let fields = [
        "ipvs.conncount",
        "ipvs.size",
        "ipvs.type",
        "ipvs.size.v1",
        "ipvs.flags.v1",
        "ipvs.cport",
        "ipvs.timeout",
        "ipvs.caddr",
        "ipvs.daddr",
        "ipvs.caddr6",
        "ipvs.vaddr6",
        "ipvs.daddr6",
    ];
    let rows = decoded(&messages, "v6", &fields);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    let got = |name: &str| row[fields.iter().position(|f| *f == name).unwrap()].clone();
    assert_eq!(got("ipvs.conncount"), "3");
    assert_eq!(got("ipvs.size"), messages[0].len().to_string());
    // STYPE_F_INET6 = 1 marks the IPv6 records.
    assert_eq!(got("ipvs.type"), "1,0,1", "{row:?}");
    assert_eq!(got("ipvs.size.v1"), "72,36,72");
    let flags = joined(conns.iter().map(|c| format!("0x{:08x}", c.flags)));
    assert_eq!(got("ipvs.flags.v1"), flags);
    assert_eq!(got("ipvs.cport"), "40000,40001,40003");
    assert_eq!(got("ipvs.timeout"), "900,900,360");
    // The IPv4 record's addresses, and the IPv6 records' in their fields.
    assert_eq!(got("ipvs.caddr"), conns[1].caddr.to_string());
    assert_eq!(got("ipvs.daddr"), conns[1].daddr.to_string());
    let v6 = |pick: fn(&SyncConn) -> IpAddr| {
        joined(
            [&conns[0], &conns[2]]
                .into_iter()
                .map(|c| pick(c).to_string()),
        )
    };
    assert_eq!(got("ipvs.caddr6"), v6(|c| c.caddr));
    assert_eq!(got("ipvs.vaddr6"), v6(|c| c.vaddr));
    assert_eq!(got("ipvs.daddr6"), v6(|c| c.daddr));
}

#[test]
fn wiresharks_dissector_reads_the_end_of_an_announcement_as_an_empty_message() {
    // The end of a full announcement (catch-up) is a plain version-1
    // message with no records: Wireshark (and the kernel) read it as such.
    let end = encode_pass_end(51);
    let fields = ["ipvs.syncid", "ipvs.conncount", "ipvs.size", "ipvs.version"];
    let rows = decoded(&[end], "end", &fields);
    assert_eq!(rows, [["51", "0", "8", "1"]], "{rows:?}");
}
