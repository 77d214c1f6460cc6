//! keepalived.conf statements (tree.rs) -> lb.toml. Every keepalived keyword
//! lb.toml has keeps its name; each one that cannot be carried over is a
//! warning naming it and its file:line, never silently dropped.

use toml::{Table, Value};

use super::tree::Node;

/// keepalived's defaults for keys lb.toml requires.
const DEFAULT_LB_ALGO: &str = "wlc";
const DEFAULT_LB_KIND: &str = "NAT";
const DEFAULT_PROTOCOL: &str = "TCP";
const DEFAULT_VRRP_STATE: &str = "BACKUP";
const DEFAULT_PRIORITY: i64 = 100;
/// The VRRP version of an instance of IPv6 addresses.
const VRRPV3: i64 = 3;

/// Checkers keepalived has and lb does not (yet).
const UNSUPPORTED_CHECKERS: [&str; 5] = [
    "SSL_GET",
    "SMTP_CHECK",
    "DNS_CHECK",
    "BFD_CHECK",
    "FILE_CHECK",
];

#[derive(Default)]
pub struct Converter {
    pub warnings: Vec<String>,
    /// global_defs vrrp_version: the instances' default version.
    vrrp_version: Option<i64>,
}

/// An integer when it is one, else a float (fractional seconds).
fn number(word: &str) -> Option<Value> {
    word.parse::<i64>()
        .map(Value::Integer)
        .ok()
        .or_else(|| word.parse::<f64>().ok().map(Value::Float))
}

impl Converter {
    fn warn(&mut self, node: &Node, what: &str) {
        self.warnings.push(format!("{}: {what}", node.at));
    }

    fn not_carried(&mut self, node: &Node, context: &str) {
        self.warn(
            node,
            &format!("`{}` in {context} is not carried over", node.keyword),
        );
    }

    /// The statement's first argument.
    fn arg<'a>(&mut self, node: &'a Node) -> Option<&'a str> {
        let first = node.args.first().map(String::as_str);
        if first.is_none() {
            self.warn(node, &format!("`{}` has no value; skipped", node.keyword));
        }
        first
    }

    fn num(&mut self, node: &Node) -> Option<Value> {
        let word = self.arg(node)?;
        let value = number(word);
        if value.is_none() {
            self.warn(
                node,
                &format!("`{} {word}`: not a number; skipped", node.keyword),
            );
        }
        value
    }

    /// All arguments as one string (scripts given without quotes).
    fn text(&mut self, node: &Node) -> Option<Value> {
        self.arg(node)?;
        Some(Value::String(node.args.join(" ")))
    }

    /// The keywords of a block's lines (`notification_email { a b }`).
    fn words(&mut self, node: &Node) -> Value {
        Value::Array(
            node.children()
                .iter()
                .map(|c| Value::String(c.keyword.clone()))
                .collect(),
        )
    }

    pub fn convert(&mut self, nodes: &[Node]) -> Table {
        let mut out = Table::new();
        // global_defs first: vrrp_version applies to every instance.
        for node in nodes.iter().filter(|n| n.keyword == "global_defs") {
            let global = self.global_defs(node);
            if !global.is_empty() {
                out.insert("global".into(), Value::Table(global));
            }
        }
        let mut instances = Vec::new();
        let mut services = Vec::new();
        for node in nodes {
            match node.keyword.as_str() {
                "global_defs" => {}
                "vrrp_instance" => {
                    if let Some(t) = self.vrrp_instance(node) {
                        instances.push(Value::Table(t));
                    }
                }
                "virtual_server" => {
                    if let Some(t) = self.virtual_server(node) {
                        services.push(Value::Table(t));
                    }
                }
                _ => self.not_carried(node, "the top level"),
            }
        }
        if !instances.is_empty() {
            out.insert("vrrp_instance".into(), Value::Array(instances));
        }
        if !services.is_empty() {
            out.insert("virtual_server".into(), Value::Array(services));
        }
        out
    }

    fn global_defs(&mut self, node: &Node) -> Table {
        let mut t = Table::new();
        for c in node.children() {
            let value = match c.keyword.as_str() {
                "router_id" | "notification_email_from" => self.text(c),
                "notification_email" => Some(self.words(c)),
                "smtp_server" => self.arg(c).map(|host| {
                    Value::String(match c.args.get(1) {
                        Some(port) => format!("{host}:{port}"),
                        None => host.to_string(),
                    })
                }),
                "smtp_connect_timeout" => self.num(c),
                "lvs_sync_daemon" => self.lvs_sync_daemon(c),
                "vrrp_version" => {
                    self.vrrp_version = self.num(c).and_then(|v| v.as_integer());
                    None
                }
                _ => {
                    self.not_carried(c, "global_defs");
                    None
                }
            };
            if let Some(v) = value {
                t.insert(c.keyword.clone(), v);
            }
        }
        t
    }

    /// `lvs_sync_daemon IF [VRRP_INSTANCE] [id N] [maxlen N] [port N] [ttl N]
    /// [group IP]` -> an inline table with the same names.
    fn lvs_sync_daemon(&mut self, node: &Node) -> Option<Value> {
        let interface = self.arg(node)?;
        let mut t = Table::new();
        t.insert("interface".into(), Value::String(interface.to_string()));
        let mut rest = node.args[1..].iter();
        while let Some(word) = rest.next() {
            match word.as_str() {
                "id" | "maxlen" | "port" | "ttl" => {
                    match rest.next().and_then(|v| v.parse::<i64>().ok()) {
                        Some(n) => {
                            t.insert(word.clone(), Value::Integer(n));
                        }
                        None => self.warn(
                            node,
                            &format!("lvs_sync_daemon `{word}` without a number; skipped"),
                        ),
                    }
                }
                "group" => match rest.next() {
                    Some(group) => {
                        t.insert("group".into(), Value::String(group.clone()));
                    }
                    None => self.warn(node, "lvs_sync_daemon `group` without an address; skipped"),
                },
                instance if !t.contains_key("vrrp_instance") && !t.contains_key("id") => {
                    t.insert("vrrp_instance".into(), Value::String(instance.to_string()));
                }
                other => self.warn(
                    node,
                    &format!("lvs_sync_daemon `{other}` is not carried over"),
                ),
            }
        }
        Some(Value::Table(t))
    }

    fn vrrp_instance(&mut self, node: &Node) -> Option<Table> {
        let Some(name) = node.args.first() else {
            self.warn(node, "vrrp_instance without a name; skipped");
            return None;
        };
        let mut t = Table::new();
        t.insert("name".into(), Value::String(name.clone()));
        for c in node.children() {
            let value = match c.keyword.as_str() {
                "state" | "interface" => self.arg(c).map(|s| Value::String(s.to_string())),
                "virtual_router_id" | "priority" | "advert_int" | "preempt_delay" | "version" => {
                    self.num(c)
                }
                "nopreempt" => Some(Value::Boolean(true)),
                // keepalived's default.
                "preempt" => None,
                "notify_master" | "notify_backup" | "notify_fault" | "notify" => self.text(c),
                "authentication" => {
                    let mut auth = Table::new();
                    for a in c.children() {
                        match a.keyword.as_str() {
                            "auth_type" | "auth_pass" => {
                                if let Some(v) = self.arg(a) {
                                    auth.insert(a.keyword.clone(), Value::String(v.to_string()));
                                }
                            }
                            _ => self.not_carried(a, "authentication"),
                        }
                    }
                    Some(Value::Table(auth))
                }
                "virtual_ipaddress" => Some(Value::Array(
                    c.children()
                        .iter()
                        .map(|a| {
                            if !a.args.is_empty() {
                                self.warn(
                                    a,
                                    &format!(
                                        "`{}` after {}: not carried over (the VIP goes on the instance's interface)",
                                        a.args.join(" "),
                                        a.keyword
                                    ),
                                );
                            }
                            Value::String(a.keyword.clone())
                        })
                        .collect(),
                )),
                "unicast_peer" => Some(self.words(c)),
                "track_interface" => {
                    for a in c.children().iter().filter(|a| !a.args.is_empty()) {
                        self.warn(
                            a,
                            &format!("track_interface {}: `{}` not carried over (a tracked interface going down always means FAULT)", a.keyword, a.args.join(" ")),
                        );
                    }
                    Some(self.words(c))
                }
                _ => {
                    self.not_carried(c, &format!("vrrp_instance {name}"));
                    None
                }
            };
            if let Some(v) = value {
                t.insert(c.keyword.clone(), v);
            }
        }
        if !t.contains_key("state") {
            t.insert("state".into(), Value::String(DEFAULT_VRRP_STATE.into()));
        }
        if !t.contains_key("priority") {
            t.insert("priority".into(), Value::Integer(DEFAULT_PRIORITY));
        }
        if let (Some(v), false) = (self.vrrp_version, t.contains_key("version")) {
            t.insert("version".into(), Value::Integer(v));
        }
        // keepalived runs an instance of IPv6 addresses as VRRPv3 whatever
        // the version says (VRRPv2 is IPv4 only): so does the import.
        let ipv6 = t
            .get("virtual_ipaddress")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .is_some_and(|a| a.contains(':'));
        if ipv6 {
            t.insert("version".into(), Value::Integer(VRRPV3));
        }
        Some(t)
    }

    fn virtual_server(&mut self, node: &Node) -> Option<Table> {
        let (Some(vip), Some(port)) = (node.args.first(), node.args.get(1)) else {
            self.warn(
                node,
                &format!(
                    "`virtual_server {}`: only `virtual_server IP PORT` is carried over (not fwmark or group); skipped",
                    node.args.join(" ")
                ),
            );
            return None;
        };
        if vip == "fwmark" || vip == "group" {
            self.warn(
                node,
                &format!("`virtual_server {vip} {port}`: fwmark and group services are not carried over; skipped"),
            );
            return None;
        }
        let label = format!("virtual_server {vip} {port}");
        let mut t = Table::new();
        t.insert("vip".into(), Value::String(vip.clone()));
        t.insert(
            "port".into(),
            number(port).unwrap_or(Value::String(port.clone())),
        );
        let mut reals = Vec::new();
        let mut inhibit = Vec::new();
        for c in node.children() {
            let (key, value) = match c.keyword.as_str() {
                "delay_loop" | "persistence_timeout" | "quorum" => {
                    (c.keyword.as_str(), self.num(c))
                }
                "lb_algo" | "lvs_sched" => {
                    ("lb_algo", self.arg(c).map(|s| Value::String(s.to_string())))
                }
                "lb_kind" | "lvs_method" => (
                    "lb_kind",
                    self.arg(c).map(|s| Value::String(s.to_ascii_uppercase())),
                ),
                "protocol" => (
                    "protocol",
                    self.arg(c).map(|s| Value::String(s.to_ascii_uppercase())),
                ),
                "persistence_granularity" => (
                    c.keyword.as_str(),
                    self.arg(c).map(|s| Value::String(s.to_string())),
                ),
                "alpha" | "inhibit_on_failure" | "sh-port" | "sh-fallback" | "mh-port"
                | "mh-fallback" => (c.keyword.as_str(), Some(Value::Boolean(true))),
                "sorry_server" => match (c.args.first(), c.args.get(1).and_then(|p| number(p))) {
                    (Some(ip), Some(port)) => {
                        let mut s = Table::new();
                        s.insert("ip".into(), Value::String(ip.clone()));
                        s.insert("port".into(), port);
                        ("sorry_server", Some(Value::Table(s)))
                    }
                    _ => {
                        self.warn(c, "sorry_server needs IP PORT; skipped");
                        ("", None)
                    }
                },
                "nat_mask" => {
                    self.warn(
                        c,
                        "`nat_mask` is not carried over (keepalived ignores it as well)",
                    );
                    ("", None)
                }
                "real_server" => {
                    if let Some((real, inhibits)) = self.real_server(c, &label) {
                        inhibit.push(inhibits);
                        reals.push(Value::Table(real));
                    }
                    ("", None)
                }
                _ => {
                    self.not_carried(c, &label);
                    ("", None)
                }
            };
            if let Some(v) = value {
                t.insert(key.to_string(), v);
            }
        }
        // keepalived sets inhibit_on_failure per real server; lb.toml per
        // service.
        if inhibit.iter().any(|i| *i) {
            if !inhibit.iter().all(|i| *i) {
                self.warn(
                    node,
                    "inhibit_on_failure is set on some real servers only: lb.toml sets it for the whole service (set here)",
                );
            }
            t.insert("inhibit_on_failure".into(), Value::Boolean(true));
        }
        for (key, default) in [
            ("lb_algo", DEFAULT_LB_ALGO),
            ("lb_kind", DEFAULT_LB_KIND),
            ("protocol", DEFAULT_PROTOCOL),
        ] {
            if !t.contains_key(key) {
                if key != "protocol" {
                    self.warn(
                        node,
                        &format!("no {key}: keepalived's default {default} written"),
                    );
                }
                t.insert(key.into(), Value::String(default.into()));
            }
        }
        if !reals.is_empty() {
            t.insert("real_server".into(), Value::Array(reals));
        }
        Some(t)
    }

    /// A real_server block, and whether it set inhibit_on_failure.
    fn real_server(&mut self, node: &Node, service: &str) -> Option<(Table, bool)> {
        let (Some(ip), Some(port)) = (node.args.first(), node.args.get(1).and_then(|p| number(p)))
        else {
            self.warn(node, "real_server needs IP PORT; skipped");
            return None;
        };
        let label = format!("real_server {ip} {port} of {service}");
        let mut t = Table::new();
        t.insert("ip".into(), Value::String(ip.clone()));
        t.insert("port".into(), port);
        let mut inhibit = false;
        let mut checker_seen = false;
        for c in node.children() {
            match c.keyword.as_str() {
                "weight" => {
                    if let Some(v) = self.num(c) {
                        t.insert("weight".into(), v);
                    }
                }
                "inhibit_on_failure" => inhibit = true,
                "TCP_CHECK" | "HTTP_GET" | "MISC_CHECK" if checker_seen => self.warn(
                    c,
                    &format!("{}: lb.toml takes one checker per real server; only the first is carried over", c.keyword),
                ),
                "TCP_CHECK" | "HTTP_GET" | "MISC_CHECK" => {
                    checker_seen = true;
                    let key = match c.keyword.as_str() {
                        "TCP_CHECK" => "tcp_check",
                        "HTTP_GET" => "http_get",
                        _ => "misc_check",
                    };
                    let checker = self.checker(c);
                    t.insert(key.into(), Value::Table(checker));
                }
                k if UNSUPPORTED_CHECKERS.contains(&k) => self.warn(
                    c,
                    &format!("{k} is not supported: {label} is carried over without it (a server without a checker is always up)"),
                ),
                _ => self.not_carried(c, &label),
            }
        }
        Some((t, inhibit))
    }

    fn checker(&mut self, node: &Node) -> Table {
        let mut t = Table::new();
        let mut urls = Vec::new();
        for c in node.children() {
            let (key, value) = match c.keyword.as_str() {
                "connect_timeout" | "delay_before_retry" | "connect_port" | "misc_timeout" => {
                    (c.keyword.as_str(), self.num(c))
                }
                "retry" | "nb_get_retry" => ("retry", self.num(c)),
                "connect_ip" | "bindto" => (
                    c.keyword.as_str(),
                    self.arg(c).map(|s| Value::String(s.to_string())),
                ),
                "misc_path" => ("misc_path", self.text(c)),
                "misc_dynamic" => ("misc_dynamic", Some(Value::Boolean(true))),
                "url" => {
                    let mut url = Table::new();
                    for u in c.children() {
                        let v = match u.keyword.as_str() {
                            "path" | "digest" => self.arg(u).map(|s| Value::String(s.to_string())),
                            "status_code" => self.num(u),
                            _ => {
                                self.not_carried(u, "url");
                                None
                            }
                        };
                        if let Some(v) = v {
                            url.insert(u.keyword.clone(), v);
                        }
                    }
                    urls.push(Value::Table(url));
                    ("", None)
                }
                _ => {
                    self.not_carried(c, &node.keyword);
                    ("", None)
                }
            };
            if let Some(v) = value {
                t.insert(key.to_string(), v);
            }
        }
        if !urls.is_empty() {
            t.insert("url".into(), Value::Array(urls));
        }
        t
    }
}
