//! `ipvsadm -L -n --stats` and `--rate` (ipvsadm.c print_title /
//! print_service_entry / print_largenum), pure.

use std::fmt::Write as _;

use super::list::{IPVS_VERSION, TableView};

/// What ipvsadm --stats shows of a service or destination; the same
/// fields per second for --rate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Traffic {
    pub conns: u64,
    pub in_packets: u64,
    pub out_packets: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
}

impl Traffic {
    /// Per second between two readings `secs` apart (counters only grow;
    /// a restart in between reads as 0).
    pub fn rate(before: &Self, after: &Self, secs: f64) -> Self {
        let per_s = |a: u64, b: u64| (b.saturating_sub(a) as f64 / secs).round() as u64;
        Self {
            conns: per_s(before.conns, after.conns),
            in_packets: per_s(before.in_packets, after.in_packets),
            out_packets: per_s(before.out_packets, after.out_packets),
            in_bytes: per_s(before.in_bytes, after.in_bytes),
            out_bytes: per_s(before.out_bytes, after.out_bytes),
        }
    }
}

/// ipvsadm's print_largenum: 9 columns, K/M/G/T beyond 100 million unless
/// --exact.
pub fn largenum(out: &mut String, n: u64, exact: bool) {
    if exact {
        let len = n.to_string().len();
        let width = if len <= 8 { 9 } else { len + 1 };
        let _ = write!(out, "{n:>width$}");
        return;
    }
    let _ = match n {
        0..100_000_000 => write!(out, "{n:>9}"),
        100_000_000..1_000_000_000 => write!(out, "{:>8}K", n / 1_000),
        1_000_000_000..100_000_000_000 => write!(out, "{:>8}M", n / 1_000_000),
        100_000_000_000..100_000_000_000_000 => write!(out, "{:>8}G", n / 1_000_000_000),
        _ => write!(out, "{:>8}T", n / 1_000_000_000_000),
    };
}

/// Which of the two views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Totals: Conns InPkts OutPkts InBytes OutBytes.
    Stats,
    /// Per second: CPS InPPS OutPPS InBPS OutBPS.
    Rate,
}

/// `ipvsadm -L -n --stats` / `--rate` of `table` (whose `traffic` fields
/// hold totals or rates accordingly).
pub fn format_traffic(table: &TableView, kind: Kind, exact: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "IP Virtual Server version {IPVS_VERSION} (size={})",
        table.conn_table_size
    );
    let titles = match kind {
        Kind::Stats => ["Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"],
        Kind::Rate => ["CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"],
    };
    let _ = writeln!(
        out,
        "{:<33} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "Prot LocalAddress:Port", titles[0], titles[1], titles[2], titles[3], titles[4]
    );
    out.push_str("  -> RemoteAddress:Port\n");
    for svc in &table.services {
        let name = format!(
            "{}  {}",
            svc.protocol,
            std::net::SocketAddr::new(svc.vip, svc.port)
        );
        let _ = write!(out, "{name:<33}");
        let t = &svc.traffic;
        for n in [
            t.conns,
            t.in_packets,
            t.out_packets,
            t.in_bytes,
            t.out_bytes,
        ] {
            largenum(&mut out, n, exact);
        }
        out.push('\n');
        for d in &svc.dests {
            let name = std::net::SocketAddr::new(d.ip, d.port).to_string();
            let _ = write!(out, "  -> {name:<28}");
            let t = &d.traffic;
            match kind {
                Kind::Stats => {
                    for n in [t.conns, t.in_packets, t.out_packets] {
                        largenum(&mut out, n, exact);
                    }
                }
                // ipvsadm prints a destination's rates as plain %8u.
                Kind::Rate => {
                    let _ = write!(
                        out,
                        " {:>8} {:>8} {:>8}",
                        t.conns, t.in_packets, t.out_packets
                    );
                }
            }
            largenum(&mut out, t.in_bytes, exact);
            largenum(&mut out, t.out_bytes, exact);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::list::tests::seed_table;

    #[test]
    fn largenum_matches_ipvsadm() {
        let f = |n, exact| {
            let mut s = String::new();
            largenum(&mut s, n, exact);
            s
        };
        assert_eq!(f(0, false), "        0");
        assert_eq!(f(99_999_999, false), " 99999999");
        assert_eq!(f(123_456_789, false), "  123456K");
        assert_eq!(f(12_345_678_901, false), "   12345M");
        assert_eq!(f(123_456_789, true), " 123456789");
        assert_eq!(f(5, true), "        5");
    }

    #[test]
    fn stats_layout_column_for_column() {
        let mut t = seed_table();
        t.services[0].traffic = Traffic {
            conns: 2,
            in_packets: 12,
            out_packets: 0,
            in_bytes: 792,
            out_bytes: 0,
        };
        t.services[0].dests[0].traffic = Traffic {
            conns: 1,
            in_packets: 6,
            out_packets: 0,
            in_bytes: 396,
            out_bytes: 0,
        };
        let expected = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
  -> RemoteAddress:Port
TCP  172.16.122.100:80                   2       12        0      792        0
  -> 172.16.122.193:80                   1        6        0      396        0
  -> 172.16.122.195:80                   0        0        0        0        0
";
        assert_eq!(format_traffic(&t, Kind::Stats, false), expected);
        let rate = format_traffic(&t, Kind::Rate, false);
        assert!(rate.contains(
            "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n"
        ));
        assert!(rate.contains(
            "  -> 172.16.122.193:80                   1        6        0      396        0\n"
        ));
    }

    #[test]
    fn rate_is_the_difference_per_second() {
        let a = Traffic {
            conns: 10,
            in_packets: 100,
            ..Traffic::default()
        };
        let b = Traffic {
            conns: 30,
            in_packets: 500,
            ..Traffic::default()
        };
        let r = Traffic::rate(&a, &b, 2.0);
        assert_eq!((r.conns, r.in_packets), (10, 200));
        assert_eq!(Traffic::rate(&b, &a, 1.0).conns, 0);
    }
}
