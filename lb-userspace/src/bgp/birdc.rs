//! Talking to the BIRD the agent runs, through its control socket: `birdc
//! configure` (re-reads the file: no session reset when only routes
//! change) and `birdc show protocols` (the BGP sessions, parsed here).

use std::{net::Ipv4Addr, path::Path, time::Duration};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

/// A birdc call waits at most this long (BIRD answers in milliseconds).
const BIRDC_TIMEOUT: Duration = Duration::from_secs(5);

/// One BGP session as BIRD reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub neighbor: Ipv4Addr,
    /// BIRD's protocol state: up, start, down...
    pub state: String,
    /// When it entered that state (BIRD's time format).
    #[serde(default)]
    pub since: String,
    /// The BGP state (Established, Active, Connect, ...) and any error.
    pub info: String,
}

impl Session {
    pub fn established(&self) -> bool {
        self.info.starts_with("Established")
    }
}

/// The sessions in `birdc show protocols` output: rows whose protocol is
/// BGP and whose name is one of ours (bird_conf::protocol_name).
pub fn parse_protocols(text: &str) -> Vec<Session> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let name = fields.next()?;
            if fields.next()? != "BGP" {
                return None;
            }
            let neighbor = super::bird_conf::neighbor_of(name)?;
            let _table = fields.next()?;
            let state = fields.next()?.to_string();
            // Since is a time, possibly a date and a time.
            let rest: Vec<&str> = fields.collect();
            let info_start = rest
                .iter()
                .position(|f| !f.chars().all(|c| c.is_ascii_digit() || ":.-".contains(c)))
                .unwrap_or(rest.len());
            Some(Session {
                neighbor,
                state,
                since: rest[..info_start].join(" "),
                info: rest[info_start..].join(" "),
            })
        })
        .collect()
}

async fn birdc(ctl: &Path, args: &[&str]) -> Result<String> {
    let out = tokio::time::timeout(
        BIRDC_TIMEOUT,
        tokio::process::Command::new("birdc")
            .arg("-s")
            .arg(ctl)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| {
        format!(
            "birdc {} did not answer within {BIRDC_TIMEOUT:?}",
            args.join(" ")
        )
    })?
    .context("running birdc (is bird2 installed? `cargo xtask setup` / apt install bird2)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "birdc {} failed: {}{}",
            args.join(" "),
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(text)
}

/// `birdc configure`: BIRD re-reads its file.
pub async fn configure(ctl: &Path) -> Result<()> {
    let text = birdc(ctl, &["configure"]).await?;
    if text.contains("Reconfigured") || text.contains("Reconfiguration in progress") {
        Ok(())
    } else {
        bail!("BIRD refused its new configuration: {}", text.trim())
    }
}

/// The BGP sessions, from `birdc show protocols`.
pub async fn sessions(ctl: &Path) -> Result<Vec<Session>> {
    Ok(parse_protocols(&birdc(ctl, &["show", "protocols"]).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bgp_rows_of_show_protocols_are_sessions() {
        let text = "BIRD 2.0.12 ready.\n\
                    Name       Proto      Table      State  Since         Info\n\
                    device1    Device     ---        up     10:26:30.651  \n\
                    lb_vips    Static     master4    up     10:26:30.651  \n\
                    n_172_16_122_1 BGP        ---        up     10:26:31.700  Established   \n\
                    n_10_0_0_9 BGP        ---        start  2026-12-01 10:26:30  Active        Socket: Connection refused\n\
                    other      BGP        ---        up     10:26:31.700  Established   \n";
        assert_eq!(
            parse_protocols(text),
            vec![
                Session {
                    neighbor: Ipv4Addr::new(172, 16, 122, 1),
                    state: "up".into(),
                    since: "10:26:31.700".into(),
                    info: "Established".into(),
                },
                Session {
                    neighbor: Ipv4Addr::new(10, 0, 0, 9),
                    state: "start".into(),
                    since: "2026-12-01 10:26:30".into(),
                    info: "Active Socket: Connection refused".into(),
                },
            ]
        );
        assert!(parse_protocols(text)[0].established());
    }
}
