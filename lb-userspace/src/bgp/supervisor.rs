//! BIRD as the agent's child: started with the generated config and its
//! own control socket, restarted when it exits, and gone when the agent
//! goes however it goes (a plain stop drops the task, which kills it; a
//! SIGKILLed agent takes it along through PR_SET_PDEATHSIG), so a dead
//! balancer stops announcing its VIPs at once instead of after a hold time.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result};
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// Pause before a BIRD that exited is started again.
const RESTART_DELAY: Duration = Duration::from_secs(1);

/// The running (supervised) BIRD.
pub struct Bird {
    task: JoinHandle<()>,
    conf: PathBuf,
    ctl: PathBuf,
}

impl Bird {
    /// Starts BIRD on `conf` (already written) with control socket `ctl`
    /// (check_installed first: the supervising task only logs failures).
    /// Must run on the agent's runtime thread: the parent-death signal
    /// follows the thread that started the child.
    pub fn start(conf: PathBuf, ctl: PathBuf) -> Self {
        let task = tokio::spawn(supervise(conf.clone(), ctl.clone()));
        Self { task, conf, ctl }
    }

    pub fn conf(&self) -> &Path {
        &self.conf
    }

    pub fn ctl(&self) -> &Path {
        &self.ctl
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        // The task owns the child (kill_on_drop): aborting it kills BIRD.
        self.task.abort();
        let _ = std::fs::remove_file(&self.ctl);
    }
}

/// Whether BIRD can be run: the agent asks before it touches anything.
pub fn check_installed() -> Result<()> {
    std::process::Command::new("bird")
        .arg("--version")
        .output()
        .context(
            "running bird (BIRD 2 is needed for [bgp]: `cargo xtask setup` or apt install bird2)",
        )?;
    Ok(())
}

async fn supervise(conf: PathBuf, ctl: PathBuf) {
    loop {
        let mut command = tokio::process::Command::new("bird");
        command
            .arg("-f")
            .arg("-c")
            .arg(&conf)
            .arg("-s")
            .arg(&ctl)
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe and touches only the child.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        match command.spawn() {
            Ok(mut child) => {
                info!(
                    "BIRD started (pid {}): {}",
                    child.id().unwrap_or(0),
                    conf.display()
                );
                match child.wait().await {
                    Ok(status) => warn!("BIRD exited ({status}); starting it again"),
                    Err(e) => warn!("waiting for BIRD failed: {e}; starting it again"),
                }
            }
            Err(e) => warn!("starting BIRD failed: {e}; trying again"),
        }
        tokio::time::sleep(RESTART_DELAY).await;
    }
}
