//! Health checking the keepalived way: one module per checker (tcp_check,
//! http_get, misc_check), keepalived's state rules (state.rs), and a tokio
//! task per real server that reports transitions (runner.rs).

pub mod http_get;
pub mod misc_check;
pub mod runner;
pub mod state;
pub mod tcp_check;

use std::{net::SocketAddr, time::Duration};

use crate::config::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_DELAY_BEFORE_RETRY, DEFAULT_HTTP_DELAY_BEFORE_RETRY,
    DEFAULT_RETRY, RealServer, VirtualServer,
};
use http_get::{HttpGet, UrlCheck};
use misc_check::MiscCheck;
use state::CheckTiming;
use tcp_check::TcpCheck;

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckResult {
    /// Up; MISC_CHECK misc_dynamic may also set the weight.
    Success { weight: Option<u32> },
    /// Down, and why (for the log and the mail).
    Failure(String),
}

/// One configured checker.
#[derive(Debug, Clone)]
pub enum Checker {
    Tcp(TcpCheck),
    Http(HttpGet),
    Misc(MiscCheck),
}

impl Checker {
    pub async fn check(&self) -> CheckResult {
        match self {
            Checker::Tcp(c) => c.check().await,
            Checker::Http(c) => c.check().await,
            Checker::Misc(c) => c.check().await,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Checker::Tcp(_) => "TCP_CHECK",
            Checker::Http(_) => "HTTP_GET",
            Checker::Misc(_) => "MISC_CHECK",
        }
    }
}

/// The checker of a real server with keepalived's defaults filled in, or
/// None when it has none (then it is always up).
pub fn checker_for(vs: &VirtualServer, rs: &RealServer) -> Option<(Checker, CheckTiming)> {
    let delay_loop = vs.delay_loop.as_duration();
    let target = |ip: Option<std::net::IpAddr>, port: Option<crate::config::Port>| {
        SocketAddr::new(ip.unwrap_or(rs.ip), port.unwrap_or(rs.port).0)
    };
    let secs = |s: Option<crate::config::Seconds>, default: crate::config::Seconds| {
        s.unwrap_or(default).as_duration()
    };
    if let Some(t) = &rs.tcp_check {
        return Some((
            Checker::Tcp(TcpCheck {
                target: target(t.connect_ip, t.connect_port),
                bindto: t.bindto,
                connect_timeout: secs(t.connect_timeout, DEFAULT_CONNECT_TIMEOUT),
            }),
            CheckTiming {
                delay_loop,
                retry: t.retry.unwrap_or(DEFAULT_RETRY),
                delay_before_retry: secs(t.delay_before_retry, DEFAULT_DELAY_BEFORE_RETRY),
            },
        ));
    }
    if let Some(h) = &rs.http_get {
        return Some((
            Checker::Http(HttpGet {
                target: target(h.connect_ip, h.connect_port),
                bindto: h.bindto,
                connect_timeout: secs(h.connect_timeout, DEFAULT_CONNECT_TIMEOUT),
                urls: h
                    .url
                    .iter()
                    .map(|u| UrlCheck {
                        path: u.path.clone(),
                        status_code: u.status_code.map(|c| c.0 as u16),
                        digest: u.digest.as_ref().map(|d| d.to_ascii_lowercase()),
                    })
                    .collect(),
            }),
            CheckTiming {
                delay_loop,
                retry: h.retry.unwrap_or(DEFAULT_RETRY),
                delay_before_retry: secs(h.delay_before_retry, DEFAULT_HTTP_DELAY_BEFORE_RETRY),
            },
        ));
    }
    if let Some(m) = &rs.misc_check {
        return Some((
            Checker::Misc(MiscCheck {
                misc_path: m.misc_path.clone(),
                // keepalived: misc_timeout defaults to delay_loop.
                misc_timeout: m.misc_timeout.map_or(delay_loop, |t| t.as_duration()),
                misc_dynamic: m.misc_dynamic,
            }),
            CheckTiming {
                delay_loop,
                // MISC_CHECK has no retries in keepalived's defaults.
                retry: 0,
                delay_before_retry: Duration::ZERO,
            },
        ));
    }
    None
}
