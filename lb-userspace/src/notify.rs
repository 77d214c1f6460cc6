//! keepalived's smtp_alert: one mail per real-server transition to every
//! notification_email, through smtp_server, sent from a task of its own so
//! a slow or dead mail server never delays a health check or a map update.

use std::{net::IpAddr, time::Duration};

use anyhow::{Context as _, Result, anyhow};
use lettre::{
    AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor, message::Mailbox,
    transport::smtp::extension::ClientId,
};
use tracing::{info, warn};

use crate::config::{Global, Protocol};

const SMTP_DEFAULT_PORT: u16 = 25;
/// keepalived's smtp_connect_timeout default.
const SMTP_DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Sender when notification_email_from is not set (keepalived uses
/// keepalived@<local host>).
const DEFAULT_FROM: &str = "lb-userspace@localhost";
/// keepalived's router_id default is the host name; we keep it short.
const DEFAULT_ROUTER_ID: &str = "lb";

#[derive(Clone)]
pub struct SmtpAlerts {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    router_id: String,
}

/// Subject and body of keepalived's real-server alert.
pub fn realserver_message(
    router_id: &str,
    real: &str,
    service: &str,
    up: bool,
    checker: &str,
    reason: &str,
) -> (String, String) {
    let state = if up { "UP" } else { "DOWN" };
    let subject = format!("[{router_id}] Realserver {real} of {service} - {state}");
    let verdict = if up { "succeed" } else { "failed" };
    let body = format!("=> {checker} {verdict} on service: {reason} <=\r\n");
    (subject, body)
}

/// Subject and body of keepalived's VRRP instance alert.
pub fn vrrp_message(router_id: &str, instance: &str, state: &str) -> (String, String) {
    let subject = format!("[{router_id}] VRRP Instance {instance} - Entering {state} state");
    let body = format!("=> VRRP Instance is now in {state} state <=\r\n");
    (subject, body)
}

/// "host" or "host:port".
fn split_server(server: &str) -> Result<(String, u16)> {
    match server.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') || host.starts_with('[') => Ok((
            host.trim_matches(['[', ']']).to_string(),
            port.parse()
                .with_context(|| format!("bad port in smtp_server {server:?}"))?,
        )),
        _ => Ok((server.to_string(), SMTP_DEFAULT_PORT)),
    }
}

impl SmtpAlerts {
    /// None when smtp_server or notification_email is not set.
    pub fn from_config(global: &Global) -> Result<Option<Self>> {
        let Some(server) = &global.smtp_server else {
            return Ok(None);
        };
        if global.notification_email.is_empty() {
            return Ok(None);
        }
        let (host, port) = split_server(server)?;
        let timeout = global
            .smtp_connect_timeout
            .map_or(SMTP_DEFAULT_TIMEOUT, |t| t.as_duration());
        let parse = |addr: &str| -> Result<Mailbox> {
            addr.parse()
                .map_err(|e| anyhow!("bad e-mail address {addr:?}: {e}"))
        };
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .timeout(Some(timeout))
            .hello_name(ClientId::Domain("localhost".into()))
            .build();
        Ok(Some(Self {
            transport,
            from: parse(
                global
                    .notification_email_from
                    .as_deref()
                    .unwrap_or(DEFAULT_FROM),
            )?,
            to: global
                .notification_email
                .iter()
                .map(|a| parse(a))
                .collect::<Result<_>>()?,
            router_id: global
                .router_id
                .clone()
                .unwrap_or_else(|| DEFAULT_ROUTER_ID.to_string()),
        }))
    }

    /// Queues the alert; returns at once.
    pub fn realserver_alert(
        &self,
        real: &str,
        service: &str,
        up: bool,
        checker: &str,
        reason: &str,
    ) {
        let (subject, body) =
            realserver_message(&self.router_id, real, service, up, checker, reason);
        self.queue(subject, body);
    }

    /// Queues a VRRP transition alert; returns at once.
    pub fn vrrp_alert(&self, instance: &str, state: &str) {
        let (subject, body) = vrrp_message(&self.router_id, instance, state);
        self.queue(subject, body);
    }

    fn queue(&self, subject: String, body: String) {
        let this = self.clone();
        tokio::spawn(async move {
            match this.send(&subject, body).await {
                Ok(()) => info!("mail sent: {subject}"),
                Err(e) => warn!("mail {subject:?} not sent: {e:#}"),
            }
        });
    }

    async fn send(&self, subject: &str, body: String) -> Result<()> {
        let mut builder = Message::builder().from(self.from.clone()).subject(subject);
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        let message = builder.body(body).context("building the mail")?;
        self.transport
            .send(message)
            .await
            .context("talking to smtp_server")?;
        Ok(())
    }
}

/// keepalived's way of naming a server in mails: [ip]:tcp:port.
pub fn keepalived_name(ip: IpAddr, protocol: Protocol, port: u16) -> String {
    format!(
        "[{ip}]:{}:{port}",
        protocol.ipvsadm_name().to_ascii_lowercase()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::{
        io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
        net::TcpListener,
        sync::mpsc,
    };

    /// A minimal SMTP sink on loopback: answers every command positively
    /// and hands over each message's DATA.
    async fn smtp_sink() -> (u16, mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let (r, mut w) = stream.into_split();
                    let mut lines = BufReader::new(r).lines();
                    w.write_all(b"220 sink ready\r\n").await.unwrap();
                    let (mut in_data, mut data) = (false, String::new());
                    while let Ok(Some(line)) = lines.next_line().await {
                        if in_data {
                            if line == "." {
                                in_data = false;
                                tx.send(std::mem::take(&mut data)).await.unwrap();
                                w.write_all(b"250 queued\r\n").await.unwrap();
                            } else {
                                data.push_str(&line);
                                data.push('\n');
                            }
                            continue;
                        }
                        let reply: &[u8] =
                            match line.get(..4).unwrap_or("").to_ascii_uppercase().as_str() {
                                "DATA" => {
                                    in_data = true;
                                    b"354 go ahead\r\n"
                                }
                                "QUIT" => b"221 bye\r\n",
                                _ => b"250 ok\r\n",
                            };
                        w.write_all(reply).await.unwrap();
                    }
                });
            }
        });
        (port, rx)
    }

    fn global(port: u16) -> Global {
        Global {
            router_id: Some("LVS_DEVEL".into()),
            notification_email: vec![
                "acassen@firewall.loc".into(),
                "failover@firewall.loc".into(),
            ],
            notification_email_from: Some("Alexandre.Cassen@firewall.loc".into()),
            smtp_server: Some(format!("127.0.0.1:{port}")),
            smtp_connect_timeout: None,
            tunnel_source: None,
            tunnel_source6: None,
            lvs_sync_daemon: None,
        }
    }

    #[tokio::test]
    async fn a_transition_mails_every_recipient() {
        let (port, mut mails) = smtp_sink().await;
        let alerts = SmtpAlerts::from_config(&global(port)).unwrap().unwrap();
        alerts.realserver_alert(
            "[172.16.122.195]:tcp:80",
            "[172.16.122.100]:tcp:80",
            false,
            "TCP_CHECK",
            "connection refused",
        );
        let mail = tokio::time::timeout(Duration::from_secs(10), mails.recv())
            .await
            .expect("no mail within 10 s")
            .unwrap()
            // Unfold long header lines (RFC 5322).
            .replace("\n ", " ");
        assert!(mail.contains("Subject: [LVS_DEVEL] Realserver [172.16.122.195]:tcp:80 of [172.16.122.100]:tcp:80 - DOWN"), "{mail}");
        assert!(
            mail.contains("To: acassen@firewall.loc, failover@firewall.loc"),
            "{mail}"
        );
        assert!(
            mail.contains("From: Alexandre.Cassen@firewall.loc"),
            "{mail}"
        );
        assert!(
            mail.contains("=> TCP_CHECK failed on service: connection refused <="),
            "{mail}"
        );
    }

    #[tokio::test]
    async fn a_dead_mail_server_does_not_block_the_caller() {
        // Nothing listens there: the send fails in its own task.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let alerts = SmtpAlerts::from_config(&global(port)).unwrap().unwrap();
        let start = std::time::Instant::now();
        alerts.realserver_alert("a", "b", true, "TCP_CHECK", "ok");
        assert!(start.elapsed() < Duration::from_millis(100));
    }

    #[test]
    fn vrrp_alert_text_is_keepalived_s() {
        let (subject, body) = vrrp_message("LVS_DEVEL", "VI_1", "MASTER");
        assert_eq!(
            subject,
            "[LVS_DEVEL] VRRP Instance VI_1 - Entering MASTER state"
        );
        assert!(body.contains("MASTER"));
    }

    #[test]
    fn no_server_or_no_recipient_means_no_alerts() {
        let mut g = global(25);
        g.smtp_server = None;
        assert!(SmtpAlerts::from_config(&g).unwrap().is_none());
        let mut g = global(25);
        g.notification_email.clear();
        assert!(SmtpAlerts::from_config(&g).unwrap().is_none());
    }

    #[test]
    fn smtp_server_with_and_without_port() {
        assert_eq!(split_server("127.0.0.1").unwrap(), ("127.0.0.1".into(), 25));
        assert_eq!(
            split_server("mail.example:2525").unwrap(),
            ("mail.example".into(), 2525)
        );
        assert!(split_server("mail:x").is_err());
    }
}
