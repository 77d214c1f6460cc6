use std::path::PathBuf;

use super::import;
use crate::{config::parse, planning::plan::plan};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keepalived")
        .join(name)
}

#[test]
fn the_seeds_keepalived_conf_becomes_the_seeds_lb_toml() {
    let imported = import(&fixture("seed.conf")).unwrap();
    let ours =
        parse("imported", &imported.toml).unwrap_or_else(|e| panic!("{e}\n{}", imported.toml));
    let seed = parse(
        "seed-dr.toml",
        include_str!("../../../../configs/seed-dr.toml"),
    )
    .unwrap();
    // The same services, servers, checkers and VRRP instance.
    assert_eq!(plan(&ours), plan(&seed));
    assert_eq!(
        format!("{:?}", ours.vrrp_instance[0].get_ref()),
        format!("{:?}", seed.vrrp_instance[0].get_ref())
    );
    assert_eq!(format!("{:?}", ours.global), format!("{:?}", seed.global));
    for (a, b) in ours.virtual_server[0]
        .get_ref()
        .real_server
        .iter()
        .zip(&seed.virtual_server[0].get_ref().real_server)
    {
        assert_eq!(
            format!("{:?}", a.get_ref().tcp_check),
            format!("{:?}", b.get_ref().tcp_check)
        );
    }
    // Only nat_mask has no place in lb.toml.
    assert_eq!(imported.warnings.len(), 1, "{:?}", imported.warnings);
    assert!(
        imported.warnings[0].contains("seed.conf:34: `nat_mask`"),
        "{:?}",
        imported.warnings
    );
}

#[test]
fn the_man_page_examples_import_with_a_warning_per_keyword_left_behind() {
    let imported = import(&fixture("sample.conf")).unwrap();
    let config =
        parse("imported", &imported.toml).unwrap_or_else(|e| panic!("{e}\n{}", imported.toml));
    let p = plan(&config);
    // 443 and 1358 from the file, 53/UDP from the include; fwmark skipped.
    let services: Vec<(String, u16)> = p
        .services
        .iter()
        .map(|s| (s.vip.to_string(), s.port))
        .collect();
    assert_eq!(
        services,
        [
            ("192.168.200.100".to_string(), 443),
            ("10.10.10.2".to_string(), 1358),
            ("10.10.10.3".to_string(), 53)
        ]
    );
    let dns = config.virtual_server[2].get_ref();
    assert!(dns.sh_port && dns.alpha && dns.quorum.0 == 2);
    let jsp = config.virtual_server[1].get_ref();
    assert!(jsp.inhibit_on_failure && jsp.sorry_server.is_some());
    assert_eq!(
        jsp.real_server[0]
            .get_ref()
            .http_get
            .as_ref()
            .unwrap()
            .url
            .len(),
        2
    );
    assert!(
        jsp.real_server[1]
            .get_ref()
            .misc_check
            .as_ref()
            .unwrap()
            .misc_dynamic
    );
    let vi2 = config.vrrp_instance[1].get_ref();
    assert!(vi2.nopreempt && vi2.version.0 == 3 && vi2.unicast_peer.len() == 2);
    assert_eq!(
        config.global.smtp_server.as_deref(),
        Some("192.168.200.1:25")
    );
    let warnings = imported.warnings.join("\n");
    for expected in [
        "sample.conf:16: `enable_script_security` in global_defs",
        "sample.conf:19: `vrrp_script` in the top level",
        "sample.conf:24: `vrrp_sync_group` in the top level",
        "sample.conf:37: `garp_master_delay` in vrrp_instance VI_1",
        "sample.conf:45: `dev eth0 label eth0:1` after 192.168.200.17/24",
        "sample.conf:50: track_interface eth2: `weight 10`",
        "sample.conf:52: `track_script` in vrrp_instance VI_1",
        "sample.conf:67: `unicast_src_ip` in vrrp_instance VI_2",
        "sample.conf:81: `nat_mask`",
        "sample.conf:87: SSL_GET is not supported",
        "sample.conf:99: inhibit_on_failure is set on some real servers only",
        "sample.conf:137: `virtual_server fwmark 1`",
    ] {
        assert!(
            warnings.contains(expected),
            "missing {expected:?} in\n{warnings}"
        );
    }
}

#[test]
fn lvs_sync_daemon_is_carried_over() {
    let dir = std::env::temp_dir().join(format!("lb-import-sync-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("keepalived.conf");
    std::fs::write(
        &conf,
        "global_defs {\n  lvs_sync_daemon eth0 VI_1 id 51 maxlen 1472 port 8848 ttl 1 group 224.0.0.81\n}\n\
         vrrp_instance VI_1 {\n  state MASTER\n  interface eth0\n  virtual_router_id 51\n  priority 100\n  virtual_ipaddress {\n    10.0.0.1\n  }\n}\n",
    )
    .unwrap();
    let imported = import(&conf).unwrap();
    assert!(imported.warnings.is_empty(), "{:?}", imported.warnings);
    let config =
        parse("imported", &imported.toml).unwrap_or_else(|e| panic!("{e}\n{}", imported.toml));
    let sd = config.global.lvs_sync_daemon.as_ref().unwrap().get_ref();
    assert_eq!(sd.interface, "eth0");
    assert_eq!(sd.vrrp_instance.as_deref(), Some("VI_1"));
    assert_eq!(
        (sd.id, sd.maxlen, sd.port, sd.ttl),
        (Some(51), Some(1472), Some(8848), Some(1))
    );
    assert_eq!(sd.group, Some(std::net::Ipv4Addr::new(224, 0, 0, 81)));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ipv6_virtual_servers_are_carried_over() {
    let dir = std::env::temp_dir().join(format!("lb-import-v6-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("keepalived.conf");
    std::fs::write(
        &conf,
        "virtual_server 2001:db8:122::100 80 {\n  delay_loop 6\n  lb_algo wlc\n  lb_kind DR\n  protocol TCP\n\
           real_server 2001:db8:122::193 80 {\n    weight 3\n    TCP_CHECK {\n      connect_timeout 3\n    }\n  }\n\
           real_server 2001:db8:122::195 80 {\n    weight 1\n  }\n}\n",
    )
    .unwrap();
    let imported = import(&conf).unwrap();
    assert!(imported.warnings.is_empty(), "{:?}", imported.warnings);
    let config =
        parse("imported", &imported.toml).unwrap_or_else(|e| panic!("{e}\n{}", imported.toml));
    let planned = plan(&config);
    let svc = &planned.services[0];
    assert_eq!(svc.endpoint().to_string(), "[2001:db8:122::100]:80");
    let reals: Vec<(String, u32)> = svc
        .reals
        .iter()
        .map(|r| (r.ip.to_string(), r.weight))
        .collect();
    assert_eq!(
        reals,
        [
            ("2001:db8:122::193".to_string(), 3),
            ("2001:db8:122::195".to_string(), 1)
        ]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_ipv6_vrrp_instance_is_carried_over_as_vrrpv3() {
    let dir = std::env::temp_dir().join(format!("lb-import-vrrp6-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("keepalived.conf");
    std::fs::write(
        &conf,
        "vrrp_instance VI_6 {\n  state BACKUP\n  interface eth0\n  virtual_router_id 61\n  priority 90\n  advert_int 1\n\
           virtual_ipaddress {\n    2001:db8:122::100/128\n  }\n}\n",
    )
    .unwrap();
    let imported = import(&conf).unwrap();
    let config =
        parse("imported", &imported.toml).unwrap_or_else(|e| panic!("{e}\n{}", imported.toml));
    let vi = config.vrrp_instance[0].get_ref();
    assert_eq!(vi.version.0, 3, "{}", imported.toml);
    assert_eq!(vi.virtual_ipaddress[0].to_string(), "2001:db8:122::100/128");
    std::fs::remove_dir_all(&dir).unwrap();
}
