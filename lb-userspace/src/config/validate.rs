//! Rules that involve several keys. Each returns every problem it finds, so
//! one `check` run lists them all.

use std::collections::HashSet;

use lb_common::{MAX_BACKENDS_PER_SERVICE, MAX_REALS, MAX_SERVICES};

use super::{ConfigError, Locator, schema::*, values::Granularity};

/// VRRPv2 advert_int is whole seconds in one byte.
const VRRP_V2_MAX_ADVERT_INT: f64 = 255.0;
/// VRRPv3 max advert interval: 12 bits of centiseconds.
const VRRP_V3_MAX_ADVERT_INT: f64 = 40.95;
/// keepalived's auth_pass length for PASS.
const VRRP_AUTH_PASS_MAX_LEN: usize = 8;
/// Length of an MD5 digest in hex.
const MD5_HEX_LEN: usize = 32;

pub(super) fn validate(config: &Config, at: &Locator<'_>) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    validate_vrrp(config, at, &mut errors);
    validate_virtual_servers(config, at, &mut errors);
    validate_sync_daemon(config, at, &mut errors);
    validate_bgp(config, at, &mut errors);
    errors
}

/// RFC 6793: AS 0 is reserved, 65535 and 4294967295 too (AS_TRANS 23456
/// is allowed by BIRD but means "a 4-byte AS": refused as a local AS).
const RESERVED_AS: [u32; 4] = [0, 23_456, 65_535, u32::MAX];

fn validate_bgp(config: &Config, at: &Locator<'_>, errors: &mut Vec<ConfigError>) {
    let Some(spanned) = &config.bgp else {
        return;
    };
    let span = Some(spanned.span());
    let bgp = spanned.get_ref();
    let mut err = |msg: String| errors.push(at.error(span.clone(), msg));
    if RESERVED_AS.contains(&bgp.local_as) {
        err(format!("bgp: local_as {} is reserved", bgp.local_as));
    }
    if bgp.neighbor.is_empty() {
        err("bgp: at least one [[bgp.neighbor]] is needed (address, remote_as)".into());
    }
    let mut seen = HashSet::new();
    for n in &bgp.neighbor {
        if RESERVED_AS.contains(&n.remote_as) {
            err(format!(
                "bgp: neighbor {}: remote_as {} is reserved",
                n.address, n.remote_as
            ));
        }
        if !seen.insert(n.address) {
            err(format!("bgp: neighbor {} is listed twice", n.address));
        }
        if n.address.is_unspecified() || n.address.is_multicast() || n.address.is_broadcast() {
            err(format!(
                "bgp: neighbor {} is not a router's address",
                n.address
            ));
        }
    }
}

/// A sync datagram holds at least its header and one IPv4 record
/// (sync::codec); at most what one UDP datagram carries over IPv4.
const SYNC_MAXLEN: std::ops::RangeInclusive<u16> = 44..=65507;

fn validate_sync_daemon(config: &Config, at: &Locator<'_>, errors: &mut Vec<ConfigError>) {
    let Some(spanned) = &config.global.lvs_sync_daemon else {
        return;
    };
    let span = Some(spanned.span());
    let sd = spanned.get_ref();
    let mut err = |msg: String| errors.push(at.error(span.clone(), msg));
    if let Some(name) = &sd.vrrp_instance
        && !config
            .vrrp_instance
            .iter()
            .any(|vi| &vi.get_ref().name == name)
    {
        err(format!(
            "lvs_sync_daemon: no vrrp_instance named {name:?} (sync follows that instance's state)"
        ));
    }
    if let Some(maxlen) = sd.maxlen
        && !SYNC_MAXLEN.contains(&maxlen)
    {
        err(format!(
            "lvs_sync_daemon: maxlen must be {}..={} bytes, got {maxlen}",
            SYNC_MAXLEN.start(),
            SYNC_MAXLEN.end()
        ));
    }
    if sd.port == Some(0) {
        err("lvs_sync_daemon: port must be 1..=65535".into());
    }
    if sd.ttl == Some(0) {
        err("lvs_sync_daemon: ttl must be 1..=255".into());
    }
    if let Some(group) = sd.group
        && !group.is_multicast()
    {
        err(format!(
            "lvs_sync_daemon: group must be a multicast address (224.0.0.0/4), got {group}"
        ));
    }
    if sd.interface.is_empty() {
        err("lvs_sync_daemon: interface is empty".into());
    }
}

fn validate_vrrp(config: &Config, at: &Locator<'_>, errors: &mut Vec<ConfigError>) {
    let mut names = HashSet::new();
    let mut vrids = HashSet::new();
    for spanned in &config.vrrp_instance {
        let span = Some(spanned.span());
        let vi = spanned.get_ref();
        let mut err = |msg: String| errors.push(at.error(span.clone(), msg));
        if !names.insert(vi.name.as_str()) {
            err(format!("duplicate vrrp_instance name {:?}", vi.name));
        }
        // One family per instance, IPv6 over VRRPv3; a vrid is unique per
        // interface and family (IPv4 and IPv6 adverts never meet).
        let ipv6 = match crate::vrrp::instance::instance_is_ipv6(vi) {
            Ok(ipv6) => ipv6,
            Err(e) => {
                err(e.to_string());
                false
            }
        };
        if !vrids.insert((vi.interface.clone(), ipv6, vi.virtual_router_id.0)) {
            err(format!(
                "vrrp_instance {}: virtual_router_id {} is already used on this interface",
                vi.name, vi.virtual_router_id.0
            ));
        }
        if vi.nopreempt && vi.state == VrrpState::Master {
            err(format!(
                "vrrp_instance {}: nopreempt needs state = \"BACKUP\" (keepalived ignores it on a MASTER)",
                vi.name
            ));
        }
        if vi.virtual_ipaddress.is_empty() {
            err(format!(
                "vrrp_instance {}: virtual_ipaddress is empty",
                vi.name
            ));
        }
        let advert = vi.advert_int.as_secs_f64();
        match vi.version.0 {
            2 => {
                if !(1.0..=VRRP_V2_MAX_ADVERT_INT).contains(&advert) || advert.fract() != 0.0 {
                    err(format!(
                        "vrrp_instance {}: advert_int must be whole seconds 1..=255 with version 2 (use version = 3 for sub-second), got {advert}",
                        vi.name
                    ));
                }
            }
            _ => {
                if !(0.01..=VRRP_V3_MAX_ADVERT_INT).contains(&advert) {
                    err(format!(
                        "vrrp_instance {}: advert_int must be 0.01..=40.95 seconds with version 3, got {advert}",
                        vi.name
                    ));
                }
                if vi.authentication.is_some() {
                    err(format!(
                        "vrrp_instance {}: VRRPv3 has no authentication (RFC 5798): remove it or use version = 2",
                        vi.name
                    ));
                }
            }
        }
        if let Some(auth) = &vi.authentication
            && (auth.auth_pass.is_empty() || auth.auth_pass.len() > VRRP_AUTH_PASS_MAX_LEN)
        {
            err(format!(
                "vrrp_instance {}: auth_pass must be 1..=8 characters (keepalived would cut it)",
                vi.name
            ));
        }
    }
}

fn validate_virtual_servers(config: &Config, at: &Locator<'_>, errors: &mut Vec<ConfigError>) {
    if config.virtual_server.len() > MAX_SERVICES as usize {
        errors.push(at.error(
            None,
            format!(
                "{} virtual_server blocks, at most {MAX_SERVICES} are supported",
                config.virtual_server.len()
            ),
        ));
    }
    let mut services = HashSet::new();
    let mut total_reals = 0usize;
    for spanned in &config.virtual_server {
        let span = Some(spanned.span());
        let vs = spanned.get_ref();
        let name = format!(
            "virtual_server {}",
            std::net::SocketAddr::new(vs.vip, vs.port.0)
        );
        let mut err = |msg: String| errors.push(at.error(span.clone(), msg));
        match (vs.persistence_granularity, vs.vip.is_ipv6()) {
            (Some(Granularity::Prefix(_)), false) => err(format!(
                "{name}: persistence_granularity of an IPv4 service is a netmask like \"255.255.255.0\""
            )),
            (Some(Granularity::Netmask(_)), true) => err(format!(
                "{name}: persistence_granularity of an IPv6 service is a prefix length like 64"
            )),
            _ => {}
        }
        if vs.port.0 == 0 && vs.persistence_timeout == 0 {
            err(format!(
                "{name}: port 0 (all ports) needs persistence_timeout > 0, as in ipvsadm"
            ));
        }
        if !services.insert((vs.vip, vs.port, vs.protocol)) {
            err(format!("duplicate {name} {}", vs.protocol.ipvsadm_name()));
        }
        if vs.real_server.len() > MAX_BACKENDS_PER_SERVICE as usize {
            err(format!(
                "{name}: {} real_server blocks, at most {MAX_BACKENDS_PER_SERVICE} per virtual_server",
                vs.real_server.len()
            ));
        }
        if let Some(sorry) = &vs.sorry_server
            && sorry.ip.is_ipv6() != vs.vip.is_ipv6()
        {
            err(format!(
                "{name}: sorry_server must be of the VIP's address family"
            ));
        }
        total_reals += vs.real_server.len();
        validate_real_servers(vs, &name, at, errors);
    }
    // Real id 0 is reserved.
    if total_reals >= MAX_REALS as usize {
        errors.push(at.error(
            None,
            format!(
                "{total_reals} real servers in all, at most {} are supported",
                MAX_REALS - 1
            ),
        ));
    }
}

fn validate_real_servers(
    vs: &VirtualServer,
    name: &str,
    at: &Locator<'_>,
    errors: &mut Vec<ConfigError>,
) {
    let mut seen = HashSet::new();
    for spanned in &vs.real_server {
        let span = Some(spanned.span());
        let rs = spanned.get_ref();
        let mut err = |msg: String| errors.push(at.error(span.clone(), msg));
        let rs_name = format!(
            "real_server {}",
            std::net::SocketAddr::new(rs.ip, rs.port.0)
        );
        if !seen.insert((rs.ip, rs.port)) {
            err(format!("{name}: duplicate {rs_name}"));
        }
        if rs.ip.is_ipv6() != vs.vip.is_ipv6() {
            err(format!(
                "{name}: {rs_name} is not of the VIP's address family"
            ));
        }
        if rs.port.0 == 0 && vs.port.0 != 0 {
            err(format!(
                "{name}: {rs_name}: port 0 is only allowed for a port-0 service"
            ));
        }
        if matches!(vs.lb_kind, LbKind::Dr | LbKind::Tun) && vs.port.0 != 0 && rs.port != vs.port {
            err(format!(
                "{name}: {rs_name}: with lb_kind DR/TUN the real server port must equal the virtual port {} (only NAT can map ports)",
                vs.port.0
            ));
        }
        if rs.checker_count() > 1 {
            err(format!(
                "{name}: {rs_name}: only one of tcp_check, http_get, misc_check per real server"
            ));
        }
        if let Some(http) = &rs.http_get {
            if http.url.is_empty() {
                err(format!(
                    "{name}: {rs_name}: http_get needs at least one url"
                ));
            }
            for url in &http.url {
                if !url.path.starts_with('/') {
                    err(format!(
                        "{name}: {rs_name}: url path {:?} must start with '/'",
                        url.path
                    ));
                }
                if url.status_code.is_none() && url.digest.is_none() {
                    err(format!(
                        "{name}: {rs_name}: url {:?} needs status_code and/or digest",
                        url.path
                    ));
                }
                if let Some(d) = &url.digest
                    && (d.len() != MD5_HEX_LEN || !d.chars().all(|c| c.is_ascii_hexdigit()))
                {
                    err(format!(
                        "{name}: {rs_name}: digest {d:?} must be an MD5 in 32 hex digits"
                    ));
                }
            }
        }
        if let Some(misc) = &rs.misc_check
            && misc.misc_path.trim().is_empty()
        {
            err(format!("{name}: {rs_name}: misc_path is empty"));
        }
    }
}
