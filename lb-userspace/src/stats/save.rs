//! `ipvsadm -S -n` (ipvsadm.c print_service_entry with FMT_RULE): the
//! table as the ipvsadm commands that rebuild it, pure.

use std::fmt::Write as _;

use lb_common::ForwardKind;

use super::list::TableView;

/// ipvsadm's forwarding switch.
fn forward_switch(kind: ForwardKind) -> &'static str {
    match kind {
        ForwardKind::Dr => "-g",
        ForwardKind::Tun => "-i",
        ForwardKind::Nat => "-m",
    }
}

pub fn format_save(table: &TableView) -> String {
    let mut out = String::new();
    for svc in &table.services {
        let proto = if svc.protocol == "TCP" { "-t" } else { "-u" };
        let name = format!("{proto} {}", std::net::SocketAddr::new(svc.vip, svc.port));
        let _ = write!(out, "-A {name} -s {}", svc.scheduler);
        if !svc.sched_flags.is_empty() {
            let _ = write!(out, " -b {}", svc.sched_flags.join(","));
        }
        out.push_str(&svc.persistence_words("-p", "-M"));
        out.push('\n');
        for d in &svc.dests {
            let _ = writeln!(
                out,
                "-a {name} -r {} {} -w {}",
                std::net::SocketAddr::new(d.ip, d.port),
                forward_switch(d.forward),
                d.weight
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::list::tests::seed_table;

    #[test]
    fn the_seeds_table_as_ipvsadm_commands() {
        let mut t = seed_table();
        t.services[0].persistent = Some(50);
        assert_eq!(
            format_save(&t),
            "-A -t 172.16.122.100:80 -s rr -p 50\n\
             -a -t 172.16.122.100:80 -r 172.16.122.193:80 -g -w 1\n\
             -a -t 172.16.122.100:80 -r 172.16.122.195:80 -g -w 1\n"
        );
        t.services[0].scheduler = "sh";
        t.services[0].sched_flags = vec!["sh-fallback", "sh-port"];
        t.services[0].mask = "255.255.255.0".to_string();
        t.services[0].dests[0].forward = ForwardKind::Nat;
        let out = format_save(&t);
        assert!(
            out.starts_with(
                "-A -t 172.16.122.100:80 -s sh -b sh-fallback,sh-port -p 50 -M 255.255.255.0\n"
            ),
            "{out}"
        );
        assert!(out.contains("-r 172.16.122.193:80 -m -w 1\n"), "{out}");
    }
}
