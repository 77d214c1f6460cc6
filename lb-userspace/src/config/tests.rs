use super::*;

const SEED: &str = include_str!("../../../configs/seed-dr.toml");

fn errors_of(text: &str) -> Vec<ConfigError> {
    match parse("test.toml", text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(ConfigErrors(e)) => e,
    }
}

/// Asserts one error at `line` whose message contains `needle`.
fn assert_error(text: &str, line: usize, needle: &str) {
    let errors = errors_of(text);
    assert!(
        errors
            .iter()
            .any(|e| e.line == line && e.message.contains(needle)),
        "wanted an error at line {line} containing {needle:?}, got {errors:#?}"
    );
}

const MINIMAL_VS: &str = r#"
[[virtual_server]]
vip = "10.0.0.1"
port = 80
protocol = "TCP"
lb_algo = "rr"
lb_kind = "DR"
"#;

#[test]
fn seed_config_parses_with_keepalived_values() {
    let c = parse("seed-dr.toml", SEED).unwrap();
    assert_eq!(c.global.router_id.as_deref(), Some("LVS_DEVEL"));
    assert_eq!(c.global.notification_email.len(), 3);
    let vi = c.vrrp_instance[0].get_ref();
    assert_eq!(vi.name, "VI_1");
    assert_eq!(vi.state, VrrpState::Master);
    assert_eq!(vi.virtual_router_id.0, 51);
    assert_eq!(vi.priority.0, 100);
    assert_eq!(vi.authentication.as_ref().unwrap().auth_pass, "1111");
    assert_eq!(vi.virtual_ipaddress[0].to_string(), "172.16.122.100/32");
    let vs = c.virtual_server[0].get_ref();
    assert_eq!(vs.vip.to_string(), "172.16.122.100");
    assert_eq!(vs.port.0, 80);
    assert_eq!(vs.lb_algo, LbAlgo::Rr);
    assert_eq!(vs.lb_kind, LbKind::Dr);
    assert_eq!(vs.delay_loop.as_secs_f64(), 6.0);
    assert_eq!(vs.real_server.len(), 2);
    let rs = vs.real_server[1].get_ref();
    assert_eq!(rs.ip.to_string(), "172.16.122.195");
    assert_eq!(rs.weight.0, 1);
    let tc = rs.tcp_check.as_ref().unwrap();
    // nb_get_retry is the deprecated alias of retry.
    assert_eq!(tc.retry, Some(3));
    assert_eq!(tc.connect_timeout.unwrap().as_secs_f64(), 3.0);
    assert_eq!(tc.connect_port, Some(Port(80)));
}

#[test]
fn defaults_are_keepalived_ones() {
    let c = parse(
        "t",
        &format!("{MINIMAL_VS}[[virtual_server.real_server]]\nip = \"10.0.0.2\"\nport = 80\n"),
    )
    .unwrap();
    let vs = c.virtual_server[0].get_ref();
    assert_eq!(vs.delay_loop, DEFAULT_DELAY_LOOP);
    assert_eq!(vs.persistence_timeout, 0);
    assert_eq!(vs.quorum.0, 1);
    assert_eq!(vs.real_server[0].get_ref().weight.0, 1);
    assert!(c.vrrp_instance.is_empty());
}

#[test]
fn fractional_durations_are_accepted() {
    let c = parse(
        "t",
        &MINIMAL_VS.replace("lb_kind = \"DR\"", "lb_kind = \"DR\"\ndelay_loop = 0.5"),
    )
    .unwrap();
    assert_eq!(c.virtual_server[0].get_ref().delay_loop.as_secs_f64(), 0.5);
}

#[test]
fn unknown_key_is_an_error_naming_key_and_line() {
    let text = format!("{MINIMAL_VS}lb_algorithm = \"rr\"\n");
    assert_error(&text, 8, "lb_algorithm");
}

#[test]
fn unknown_section_is_an_error() {
    assert_error("[globals]\nrouter_id = \"x\"\n", 1, "globals");
}

#[test]
fn weight_above_65535_is_an_error() {
    let text = format!(
        "{MINIMAL_VS}[[virtual_server.real_server]]\nip = \"10.0.0.2\"\nport = 80\nweight = 70000\n"
    );
    assert_error(&text, 11, "0..=65535");
}

#[test]
fn negative_weight_is_an_error() {
    let text = format!(
        "{MINIMAL_VS}[[virtual_server.real_server]]\nip = \"10.0.0.2\"\nport = 80\nweight = -1\n"
    );
    assert_error(&text, 11, "0..=65535");
}

#[test]
fn vip_that_is_not_an_address_is_an_error() {
    assert_error(
        &MINIMAL_VS.replace("10.0.0.1", "10.0.0.300"),
        3,
        "IP address",
    );
}

#[test]
fn port_out_of_range_is_an_error() {
    assert_error(
        &MINIMAL_VS.replace("port = 80", "port = 65536"),
        4,
        "0..=65535",
    );
}

#[test]
fn port_zero_without_persistence_is_an_error() {
    assert_error(
        &MINIMAL_VS.replace("port = 80", "port = 0"),
        2,
        "persistence_timeout",
    );
}

#[test]
fn port_zero_with_persistence_is_accepted() {
    let text = MINIMAL_VS.replace("port = 80", "port = 0\npersistence_timeout = 300");
    parse("t", &text).unwrap();
}

#[test]
fn duplicate_real_server_is_an_error() {
    let rs = "[[virtual_server.real_server]]\nip = \"10.0.0.2\"\nport = 80\n";
    assert_error(
        &format!("{MINIMAL_VS}{rs}{rs}"),
        11,
        "duplicate real_server 10.0.0.2:80",
    );
}

#[test]
fn duplicate_virtual_server_is_an_error() {
    assert_error(
        &format!("{MINIMAL_VS}{MINIMAL_VS}"),
        9,
        "duplicate virtual_server",
    );
}

#[test]
fn vrrp_priority_outside_1_to_255_is_an_error() {
    let bad = SEED.replace("priority = 100", "priority = 256");
    let line = SEED
        .lines()
        .position(|l| l.starts_with("priority"))
        .unwrap()
        + 1;
    assert_error(&bad, line, "1..=255");
    let bad = SEED.replace("priority = 100", "priority = 0");
    assert_error(&bad, line, "1..=255");
}

#[test]
fn bad_enum_values_name_the_choices() {
    assert_error(&MINIMAL_VS.replace("\"DR\"", "\"ROUTE\""), 7, "NAT");
    assert_error(&MINIMAL_VS.replace("\"rr\"", "\"roundrobin\""), 6, "wlc");
    assert_error(&MINIMAL_VS.replace("\"TCP\"", "\"SCTP\""), 5, "UDP");
}

#[test]
fn dr_real_server_must_keep_the_port() {
    let text =
        format!("{MINIMAL_VS}[[virtual_server.real_server]]\nip = \"10.0.0.2\"\nport = 8080\n");
    assert_error(&text, 8, "must equal the virtual port");
    // NAT may map ports.
    parse("t", &text.replace("\"DR\"", "\"NAT\"")).unwrap();
}

#[test]
fn two_checkers_on_one_real_server_is_an_error() {
    let text = format!(
        "{MINIMAL_VS}[[virtual_server.real_server]]\nip = \"10.0.0.2\"\nport = 80\n[virtual_server.real_server.tcp_check]\n[virtual_server.real_server.misc_check]\nmisc_path = \"/bin/true\"\n"
    );
    assert_error(&text, 8, "only one of");
}

#[test]
fn retry_and_its_alias_together_is_an_error() {
    let text = format!(
        "{MINIMAL_VS}[[virtual_server.real_server]]\nip = \"10.0.0.2\"\nport = 80\n[virtual_server.real_server.tcp_check]\nretry = 1\nnb_get_retry = 2\n"
    );
    assert!(!errors_of(&text).is_empty());
}

#[test]
fn nopreempt_on_master_is_an_error() {
    let bad = SEED.replace("priority = 100", "priority = 100\nnopreempt = true");
    let line = SEED.lines().position(|l| l == "[[vrrp_instance]]").unwrap() + 1;
    assert_error(&bad, line, "nopreempt");
}

#[test]
fn vrrp_v3_with_authentication_is_an_error() {
    let bad = SEED.replace("advert_int = 1", "advert_int = 1\nversion = 3");
    assert!(errors_of(&bad).iter().any(|e| e.message.contains("VRRPv3")));
}

#[test]
fn negative_duration_is_an_error() {
    assert_error(
        &MINIMAL_VS.replace("lb_kind = \"DR\"", "lb_kind = \"DR\"\ndelay_loop = -6"),
        8,
        ">= 0",
    );
}

#[test]
fn bad_netmask_is_an_error() {
    let text = MINIMAL_VS.replace(
        "lb_kind = \"DR\"",
        "lb_kind = \"DR\"\npersistence_granularity = \"255.0.255.0\"",
    );
    assert_error(&text, 8, "contiguous");
}

#[test]
fn toml_syntax_error_is_located() {
    assert_error("[global]\nrouter_id = \n", 2, "");
}

#[test]
fn all_errors_are_reported_at_once() {
    let rs = "[[virtual_server.real_server]]\nip = \"10.0.0.2\"\nport = 81\n";
    let errors = errors_of(&format!("{MINIMAL_VS}{rs}{rs}"));
    // port mismatch twice + duplicate once
    assert_eq!(errors.len(), 3, "{errors:#?}");
}

#[test]
fn error_display_has_file_line_column() {
    let e = errors_of(&format!("{MINIMAL_VS}bogus = 1\n")).remove(0);
    let shown = e.to_string();
    assert!(shown.starts_with("test.toml:8:1: "), "{shown}");
}

#[test]
fn everything_in_the_seed_is_acted_on() {
    let c = parse("seed", SEED).unwrap();
    assert!(not_acted_on(&c).is_empty());
}

#[test]
fn tunnel_source_is_an_optional_global_address() {
    let c = parse(
        "t",
        &format!("[global]\ntunnel_source = \"10.0.0.9\"\n{MINIMAL_VS}"),
    )
    .unwrap();
    assert_eq!(
        c.global.tunnel_source,
        Some(std::net::Ipv4Addr::new(10, 0, 0, 9))
    );
    assert_error(
        &format!("[global]\ntunnel_source = \"nope\"\n{MINIMAL_VS}"),
        2,
        "IPv4",
    );
    let c = parse(
        "t",
        &format!("[global]\ntunnel_source6 = \"2001:db8::9\"\n{MINIMAL_VS}"),
    )
    .unwrap();
    assert_eq!(
        c.global.tunnel_source6,
        Some("2001:db8::9".parse().unwrap())
    );
    assert_error(
        &format!("[global]\ntunnel_source6 = \"10.0.0.9\"\n{MINIMAL_VS}"),
        2,
        "IPv6",
    );
}

#[test]
fn config_files_others_may_write_are_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = std::env::temp_dir().join(format!("lb-perm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.join("lb.toml");
    std::fs::write(&path, include_str!("../../../configs/seed-dr.toml")).unwrap();
    let with_mode = |mode| {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        super::load(&path).map(|_| ()).map_err(|e| e.to_string())
    };
    assert_eq!(with_mode(0o644), Ok(()));
    assert_eq!(with_mode(0o600), Ok(()));
    let err = with_mode(0o666).unwrap_err();
    assert!(
        err.contains("refused: writable by others (mode 666); run chmod go-w"),
        "{err}"
    );
    // A directory anyone may write into (and replace the file in).
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = super::load(&path).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("is writable by everyone"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

const SYNC_INSTANCE: &str = r#"
[[vrrp_instance]]
name = "VI_1"
state = "MASTER"
virtual_router_id = 51
priority = 100
virtual_ipaddress = ["10.0.0.1"]
"#;

#[test]
fn lvs_sync_daemon_takes_keepalived_arguments() {
    let c = parse(
        "t",
        &format!(
            "[global]\nlvs_sync_daemon = {{ interface = \"eth0\", vrrp_instance = \"VI_1\", id = 51, maxlen = 1472, port = 8848, ttl = 1, group = \"224.0.0.81\" }}\n{SYNC_INSTANCE}{MINIMAL_VS}"
        ),
    )
    .unwrap();
    let sd = c.global.lvs_sync_daemon.as_ref().unwrap().get_ref();
    assert_eq!(sd.interface, "eth0");
    assert_eq!(sd.vrrp_instance.as_deref(), Some("VI_1"));
    assert_eq!(
        (sd.id, sd.maxlen, sd.port, sd.ttl),
        (Some(51), Some(1472), Some(8848), Some(1))
    );
    assert_eq!(sd.group, Some(std::net::Ipv4Addr::new(224, 0, 0, 81)));
    // Only the interface is required.
    let minimal = parse(
        "t",
        &format!("[global]\nlvs_sync_daemon = {{ interface = \"eth0\" }}\n{MINIMAL_VS}"),
    )
    .unwrap();
    let sd = minimal.global.lvs_sync_daemon.as_ref().unwrap().get_ref();
    assert_eq!((sd.vrrp_instance.as_ref(), sd.id), (None, None));
}

#[test]
fn lvs_sync_daemon_mistakes_are_named() {
    let with = |args: &str| {
        format!("[global]\nlvs_sync_daemon = {{ {args} }}\n{SYNC_INSTANCE}{MINIMAL_VS}")
    };
    assert_error(
        &with("interface = \"eth0\", vrrp_instance = \"VI_9\""),
        2,
        "no vrrp_instance named \"VI_9\"",
    );
    assert_error(
        &with("interface = \"eth0\", group = \"10.0.0.81\""),
        2,
        "must be a multicast address",
    );
    assert_error(
        &with("interface = \"eth0\", maxlen = 20"),
        2,
        "maxlen must be 44..=65507",
    );
    assert_error(
        &with("interface = \"eth0\", ttl = 0"),
        2,
        "ttl must be 1..=255",
    );
    assert_error(&with("interface = \"eth0\", port = 0"), 2, "port must be");
    assert_error(&with("interface = \"eth0\", id = 256"), 2, "");
    assert_error(
        &with("interface = \"eth0\", sync_period = 1"),
        2,
        "unknown field",
    );
    assert_error(
        &with("vrrp_instance = \"VI_1\""),
        2,
        "missing field `interface`",
    );
}

const BGP: &str = r#"
[bgp]
local_as = 65010
router_id = "172.16.122.188"
hold_time = 9
bfd = true
[[bgp.neighbor]]
address = "172.16.122.1"
remote_as = 65000
"#;

#[test]
fn bgp_section_as_lb_toml_documents_it() {
    let c = parse("t", &format!("{MINIMAL_VS}{BGP}")).unwrap();
    let bgp = c.bgp.as_ref().unwrap().get_ref();
    assert_eq!(bgp.local_as, 65010);
    assert_eq!(
        bgp.router_id,
        Some(std::net::Ipv4Addr::new(172, 16, 122, 188))
    );
    assert_eq!((bgp.hold_time.0, bgp.bfd), (9, true));
    assert_eq!(bgp.neighbor.len(), 1);
    assert_eq!(bgp.neighbor[0].remote_as, 65000);
    // Defaults: hold time 3 s, no BFD, the router id from the interface.
    let minimal = parse(
        "t",
        &format!(
            "{MINIMAL_VS}[bgp]\nlocal_as = 65010\n[[bgp.neighbor]]\naddress = \"172.16.122.1\"\nremote_as = 65000\n"
        ),
    )
    .unwrap();
    let bgp = minimal.bgp.as_ref().unwrap().get_ref();
    assert_eq!((bgp.hold_time.0, bgp.bfd, bgp.router_id), (3, false, None));
}

#[test]
fn bgp_mistakes_are_named() {
    let vs_lines = MINIMAL_VS.lines().count();
    let bgp = |body: &str| format!("{MINIMAL_VS}[bgp]\n{body}");
    assert_error(
        &bgp("local_as = 0\n[[bgp.neighbor]]\naddress = \"10.0.0.254\"\nremote_as = 65000\n"),
        vs_lines + 1,
        "local_as 0 is reserved",
    );
    assert_error(
        &bgp("local_as = 65010\n"),
        vs_lines + 1,
        "at least one [[bgp.neighbor]]",
    );
    assert_error(
        &bgp(
            "local_as = 65010\n[[bgp.neighbor]]\naddress = \"10.0.0.254\"\nremote_as = 65000\n\
             [[bgp.neighbor]]\naddress = \"10.0.0.254\"\nremote_as = 65001\n",
        ),
        vs_lines + 1,
        "neighbor 10.0.0.254 is listed twice",
    );
    assert_error(
        &bgp(
            "local_as = 65010\nhold_time = 1\n[[bgp.neighbor]]\naddress = \"10.0.0.254\"\nremote_as = 65000\n",
        ),
        vs_lines + 3,
        "expected an integer 3..=65535",
    );
    assert_error(
        &bgp("local_as = 65010\npeers = 1\n"),
        vs_lines + 3,
        "unknown field",
    );
}

#[test]
fn a_dual_stack_config_plans_both_families() {
    let c = parse(
        "dual-stack.toml",
        include_str!("../../../configs/dual-stack.toml"),
    )
    .unwrap();
    let plan = crate::planning::plan::plan(&c);
    let vips: Vec<String> = plan
        .services
        .iter()
        .map(|s| s.endpoint().to_string())
        .collect();
    assert_eq!(vips, ["172.16.122.100:80", "[2001:db8:122::100]:80"]);
    assert!(plan.services[1].reals.iter().all(|r| r.ip.is_ipv6()));
    assert!(matches!(
        plan.services[1].key(),
        crate::planning::plan::ServiceMapKey::V6(_)
    ));
}

#[test]
fn what_ipv6_does_not_do_yet_is_refused_with_its_line() {
    let v6 = MINIMAL_VS.replace("10.0.0.1", "2001:db8::1");
    parse("v6.toml", &v6).unwrap();
    // TUN over IPv6 is IPv6-in-IPv6.
    parse(
        "v6.toml",
        &v6.replace("lb_kind = \"DR\"", "lb_kind = \"TUN\""),
    )
    .unwrap();
    // NAT66.
    parse(
        "v6.toml",
        &v6.replace("lb_kind = \"DR\"", "lb_kind = \"NAT\""),
    )
    .unwrap();
    // A server of the other family than its VIP's.
    let mixed = format!("{v6}[[virtual_server.real_server]]\nip = \"10.0.0.2\"\nport = 80\n");
    assert_error(&mixed, 8, "not of the VIP's address family");
}

#[test]
fn persistence_granularity_follows_the_vips_family() {
    let with = |vip: &str, granularity: &str| {
        MINIMAL_VS.replace("10.0.0.1", vip).replace(
            "lb_kind = \"DR\"",
            &format!("lb_kind = \"DR\"\npersistence_timeout = 300\npersistence_granularity = {granularity}"),
        )
    };
    let plan_of = |text: &str| crate::planning::plan::plan(&parse("p.toml", text).unwrap());
    let v6 = plan_of(&with("2001:db8::1", "64"));
    let p = v6.services[0].persistence.unwrap();
    assert_eq!((p.timeout_s, p.prefix6, p.map_mask(true)), (300, 64, 64));
    // As keepalived.conf carries it over: a string.
    assert_eq!(
        plan_of(&with("2001:db8::1", "\"48\"")).services[0]
            .persistence
            .unwrap()
            .prefix6,
        48
    );
    let v4 = plan_of(&with("10.0.0.1", "\"255.255.255.0\""));
    assert_eq!(
        v4.services[0].persistence.unwrap().map_mask(false),
        u32::from_ne_bytes([255, 255, 255, 0])
    );
    assert_error(
        &with("10.0.0.1", "24"),
        2,
        "of an IPv4 service is a netmask",
    );
    assert_error(
        &with("2001:db8::1", "\"255.255.255.0\""),
        2,
        "of an IPv6 service is a prefix length",
    );
    assert_error(&with("2001:db8::1", "129"), 9, "prefix length 0..=128");
}

#[test]
fn an_ipv6_vrrp_instance_is_vrrpv3_and_of_one_family() {
    let v6 = SYNC_INSTANCE
        .replace("\"10.0.0.1\"", "\"2001:db8::100\"")
        .replace("priority = 100", "priority = 100\nversion = 3");
    let c = parse("t", &format!("{v6}{MINIMAL_VS}")).unwrap();
    assert_eq!(
        c.vrrp_instance[0].get_ref().virtual_ipaddress[0].to_string(),
        "2001:db8::100/128"
    );
    // The same vrid for an IPv4 instance on the same interface: another
    // protocol on the wire, allowed (keepalived allows it too).
    let both = format!("{SYNC_INSTANCE}{}{MINIMAL_VS}", v6.replace("VI_1", "VI_6"));
    parse("t", &both).unwrap();
    let line = 2;
    assert_error(
        &format!("{}{MINIMAL_VS}", v6.replace("version = 3", "version = 2")),
        line,
        "IPv6 VIPs need version = 3",
    );
    assert_error(
        &format!(
            "{}{MINIMAL_VS}",
            v6.replace("\"2001:db8::100\"", "\"2001:db8::100\", \"10.0.0.1\"")
        ),
        line,
        "IPv4 and IPv6 VIPs in one instance",
    );
}
