//! The agent process on a balancer: started with a config, waited for
//! through its published status (`lb-userspace status --json`), signalled,
//! stopped; its log, status, listing and counters.

use lb_userspace::status::AgentStatus;

use super::*;

impl Topology {
    /// Writes a config file into the work directory.
    pub fn write_config(&self, name: &str, text: &str) -> Result<PathBuf> {
        let path = self.workdir.join(name);
        fs::write(&path, text)?;
        Ok(path)
    }

    /// `lb-userspace list -n` of the running agent.
    pub fn list(&self, binary: &Path) -> Result<String> {
        let out = Command::new(binary)
            .args(["list", "-n", "--pin-path"])
            .arg(self.pin_dir())
            .output()
            .context("running lb-userspace list")?;
        if !out.status.success() {
            bail!("list failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Where `start_agent_with` writes `host`'s config (a reload re-reads it).
    pub fn agent_config_path(&self, host: Host) -> PathBuf {
        self.workdir.join(format!("lb-{host:?}.toml"))
    }

    /// Writes `config` as `host`'s lb.toml and starts the agent there (see
    /// start_agent_on).
    pub fn start_agent_with(&mut self, host: Host, config: &str) -> Result<()> {
        let path = self.agent_config_path(host);
        fs::write(&path, config)?;
        self.start_agent_on(host, &agent_binary()?, &path, &[])
    }

    /// Runs the real agent on the balancer with `config`; returns once its
    /// published status says it is ready (attached, serving).
    pub fn start_agent(&mut self, binary: &Path, config: &Path, extra_args: &[&str]) -> Result<()> {
        self.start_agent_on(Host::Lb, binary, config, extra_args)
    }

    pub fn start_agent_on(
        &mut self,
        host: Host,
        binary: &Path,
        config: &Path,
        extra_args: &[&str],
    ) -> Result<()> {
        let log = fs::File::options()
            .create(true)
            .append(true)
            .open(self.agent_log_path(host))?;
        let child = Command::new("nsenter")
            .arg(nsenter_net(&self.ns(host)))
            .arg(binary)
            .args(
                self.agent_ifaces
                    .iter()
                    .flat_map(|i| ["--iface", i.as_str()]),
            )
            .arg("--config")
            .arg(config)
            .arg("--pin-path")
            .arg(self.pin_dir_on(host))
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id();
        self.agents.push((host, child));
        let deadline = Instant::now() + AGENT_START_TIMEOUT;
        while Instant::now() < deadline {
            if self
                .status(host)
                .is_ok_and(|status| status.pid == pid && status.ready)
            {
                return Ok(());
            }
            if let Some((_, child)) = self.agents.iter_mut().rev().find(|(h, _)| *h == host)
                && let Ok(Some(status)) = child.try_wait()
            {
                // Gone: not the agent of `host` any more.
                if let Some(pos) = self.agents.iter().rposition(|(h, _)| *h == host) {
                    self.agents.remove(pos);
                }
                bail!(
                    "the agent exited ({status}) during start-up:\n{}",
                    self.agent_log_on(host)
                );
            }
            sleep(POLL);
        }
        bail!(
            "the agent was not ready within {AGENT_START_TIMEOUT:?}:\n{}",
            self.agent_log_on(host)
        )
    }

    /// Sends SIGTERM to the agent and waits for it; returns whether it
    /// exited successfully.
    pub fn stop_agent(&mut self) -> Result<bool> {
        self.signal_agent(Host::Lb, "TERM")
    }

    /// Sends `signal` (TERM, KILL...) to the agent on `host` and waits for
    /// it to end; returns whether it exited successfully.
    pub fn signal_agent(&mut self, host: Host, signal: &str) -> Result<bool> {
        let Some(pos) = self.agents.iter().position(|(h, _)| *h == host) else {
            return Ok(true);
        };
        let (_, mut child) = self.agents.remove(pos);
        match stop_child(&mut child, signal, AGENT_STOP_TIMEOUT)? {
            Some(status) => Ok(status.success()),
            None => bail!("the agent did not stop within {AGENT_STOP_TIMEOUT:?} of SIG{signal}"),
        }
    }

    fn agent_log_path(&self, host: Host) -> PathBuf {
        self.workdir.join(format!("agent-{}.log", host.short()))
    }

    pub fn agent_log(&self) -> String {
        self.agent_log_on(Host::Lb)
    }

    pub fn agent_log_on(&self, host: Host) -> String {
        fs::read_to_string(self.agent_log_path(host)).unwrap_or_default()
    }

    /// What the agent on `host` published last (`lb-userspace status --json`).
    pub fn status(&self, host: Host) -> Result<AgentStatus> {
        lb_userspace::runtime_files::read_status(&self.pin_dir_on(host))
    }

    /// Connection-sync records the agent on `host` applied, as its status
    /// says (0 without sync or status).
    pub fn sync_applied(&self, host: Host) -> u64 {
        self.status(host)
            .ok()
            .and_then(|s| s.sync)
            .map_or(0, |s| s.applied_conns)
    }

    /// The state of every vrrp_instance of the agent on `host`, as its
    /// status says (empty when it publishes none yet).
    pub fn vrrp_states(&self, host: Host) -> Vec<String> {
        self.status(host)
            .map(|s| s.vrrp.into_iter().map(|v| v.state).collect())
            .unwrap_or_default()
    }

    /// Waits until every vrrp_instance of the agent on `host` is in `state`
    /// (MASTER, BACKUP, FAULT) according to its status; false on timeout.
    pub fn wait_for_vrrp_state(&self, host: Host, state: &str, timeout: Duration) -> bool {
        wait_until(timeout, || {
            let states = self.vrrp_states(host);
            !states.is_empty() && states.iter().all(|s| s == state)
        })
        .is_some()
    }

    /// Waits until the agent on `host` is VRRP master (its status) and
    /// holds the VIP.
    pub fn wait_for_master(&self, host: Host) -> Result<()> {
        if !(self.wait_for_vrrp_state(host, "MASTER", VRRP_MASTER_TIMEOUT)
            && wait_until(VRRP_MASTER_TIMEOUT, || self.holds_vip(host)).is_some())
        {
            bail!(
                "{} did not become VRRP master within {VRRP_MASTER_TIMEOUT:?}:\n{}",
                self.ns(host),
                self.agent_log_on(host)
            );
        }
        Ok(())
    }

    /// The pid of the agent running on `host`.
    pub fn agent_pid(&self, host: Host) -> Option<u32> {
        self.agents
            .iter()
            .find(|(h, _)| *h == host)
            .map(|(_, c)| c.id())
    }

    /// A capability field ("CapEff", "CapPrm", "CapBnd"...) of every thread
    /// of the agent on `host`, as masks.
    pub fn agent_thread_caps(&self, host: Host, field: &str) -> Result<Vec<u64>> {
        let pid = self.agent_pid(host).context("no agent running")?;
        let mut out = Vec::new();
        for task in fs::read_dir(format!("/proc/{pid}/task"))? {
            let status = fs::read_to_string(task?.path().join("status"))?;
            let mask = status
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{field}:")))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                .with_context(|| format!("no {field} in /proc/{pid}/task/*/status"))?;
            out.push(mask);
        }
        Ok(out)
    }

    /// (ActiveConn, InActConn) of every real server on `host`, summed, as
    /// `list -n` shows them.
    pub fn conn_counts(&self, host: Host) -> Result<(u64, u64)> {
        let table = lb_userspace::stats::snapshot::read_table(&self.pin_dir_on(host))?;
        Ok(table
            .services
            .iter()
            .flat_map(|s| &s.dests)
            .fold((0, 0), |(a, i), d| {
                (a + d.active_conns, i + d.inactive_conns)
            }))
    }

    /// The connection entries on `host`, as `list -c -n` shows them.
    pub fn connections(&self, host: Host) -> Result<Vec<lb_userspace::stats::list::ConnView>> {
        lb_userspace::stats::snapshot::read_connections(&self.pin_dir_on(host))
    }

    /// The data plane's global counters (lb_common::counters) on `host`,
    /// read from its pinned map.
    pub fn counters(&self, host: Host) -> Result<Vec<u64>> {
        Ok(lb_userspace::stats::snapshot::read_counters(&self.pin_dir_on(host))?.to_vec())
    }
}
