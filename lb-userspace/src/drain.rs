//! `lb-userspace drain`: asks the running agent to withdraw every BGP
//! announcement (SIGUSR1) while it keeps forwarding whatever still arrives,
//! then follows the agent's status until nothing has been forwarded for
//! DRAIN_QUIET (the routers have moved every connection to the other
//! balancers: ECMP sends nothing to a withdrawn next hop) or the timeout
//! passes, printing progress. `--cancel` (SIGUSR2) announces
//! again. What an operator does before taking a balancer out of an ECMP
//! group, as with Katran's or GLB's drains.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use nix::sys::signal::Signal;

use crate::{runtime_files, status::AgentStatus};

/// How often the status is read while waiting.
const POLL: Duration = Duration::from_millis(200);
/// How long the agent may take to withdraw (it acts within one loop turn).
const WITHDRAW_TIMEOUT: Duration = Duration::from_secs(10);
/// Nothing forwarded for this long: drained. Longer than a keep-alive
/// client's usual pause would be wrong for idle connections, but after a
/// withdrawal no router sends here any more, idle or not.
const DRAIN_QUIET_S: u64 = 3;
/// Progress is printed this often while connections remain.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

fn signal(pin_dir: &Path, signal: Signal) -> Result<()> {
    let pid = runtime_files::running_agent_pid(pin_dir)?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
        .with_context(|| format!("signalling lb-userspace (pid {pid})"))
}

fn bgp_of(status: &AgentStatus) -> Result<&crate::status::BgpStatus> {
    status
        .bgp
        .as_ref()
        .ok_or_else(|| anyhow!("the running agent has no [bgp]: there is nothing to withdraw"))
}

/// Waits until `done` holds for the published status, or `timeout`.
fn wait_for(
    pin_dir: &Path,
    timeout: Duration,
    mut done: impl FnMut(&AgentStatus) -> Result<bool>,
) -> Result<Option<AgentStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        let status = runtime_files::read_status(pin_dir)?;
        if done(&status)? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(POLL);
    }
}

/// Drains; Ok with the outcome once no connection is left, Err at the
/// timeout (the agent stays drained either way).
pub fn drain(pin_dir: &Path, timeout: Duration) -> Result<String> {
    bgp_of(&runtime_files::read_status(pin_dir)?)?;
    signal(pin_dir, Signal::SIGUSR1)?;
    let withdrawn = wait_for(pin_dir, WITHDRAW_TIMEOUT, |s| {
        let bgp = bgp_of(s)?;
        Ok(bgp.drain.is_some() && bgp.announced.is_empty())
    })?;
    if withdrawn.is_none() {
        bail!("the agent did not withdraw its VIPs within {WITHDRAW_TIMEOUT:?}; see its log");
    }
    println!("withdrawn: no VIP is announced; forwarding what still arrives until it stops");
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let drained = wait_for(pin_dir, timeout, |s| {
        let Some(d) = bgp_of(s)?.drain.clone() else {
            bail!("the drain was cancelled");
        };
        if last_progress.elapsed() >= PROGRESS_EVERY {
            println!(
                "  after {} s: nothing forwarded for {} s, ActiveConn {}",
                started.elapsed().as_secs(),
                d.quiet_s,
                d.active_conns
            );
            last_progress = Instant::now();
        }
        Ok(d.quiet_s >= DRAIN_QUIET_S)
    })?;
    match drained {
        Some(s) => Ok(format!(
            "drained in {:.1} s: nothing forwarded for {DRAIN_QUIET_S} s (ActiveConn {} until \
             they expire); undo with `lb-userspace drain --cancel`",
            started.elapsed().as_secs_f64(),
            bgp_of(&s)?.drain.as_ref().map_or(0, |d| d.active_conns)
        )),
        None => Err(anyhow!(
            "still forwarding after {timeout:?}; the VIPs stay withdrawn (a router that has not \
             converged still sends here)"
        )),
    }
}

/// Ends a drain: the agent announces again what it can serve.
pub fn cancel(pin_dir: &Path) -> Result<String> {
    bgp_of(&runtime_files::read_status(pin_dir)?)?;
    signal(pin_dir, Signal::SIGUSR2)?;
    let back = wait_for(pin_dir, WITHDRAW_TIMEOUT, |s| {
        Ok(bgp_of(s)?.drain.is_none())
    })?;
    match back {
        Some(s) => Ok(format!(
            "drain cancelled: announcing {:?}",
            bgp_of(&s)?.announced
        )),
        None => bail!("the agent did not end the drain within {WITHDRAW_TIMEOUT:?}; see its log"),
    }
}
