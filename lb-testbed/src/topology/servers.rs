//! The servers of the topology: nginx on the real servers (and the sorry
//! server), keepalived where a test pits ours against it, and the seed's
//! rs.sh (`lb-userspace realserver`).

use super::*;

impl Topology {
    /// Starts nginx in `host` answering every request with `body`.
    pub fn start_nginx(&mut self, host: Host, body: &str) -> Result<()> {
        let name = host.short();
        let dir = self.workdir.join(format!("nginx-{name}"));
        fs::create_dir_all(&dir)?;
        let d = dir.display();
        let files = self.files_dir().display().to_string();
        let conf = format!(
            "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_max_body_size 0;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               server {{\n    listen 80;\n    listen 8080;\n    listen [::]:80;\n    listen [::]:8080;\n    location = / {{ default_type text/plain; return 200 \"{body}\\n\"; }}\n\
                 location / {{ root {files}; }}\n  }}\n}}\n"
        );
        let conf_path = dir.join("nginx.conf");
        fs::write(&conf_path, conf)?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(host), "nginx", "-e"])
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nginx (installed by `cargo xtask setup`)")?;
        self.nginx.push((host, child));
        // Ready when it answers on its own address.
        let url = format!("http://{}/", host.ip());
        let deadline = Instant::now() + NGINX_START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(out) = exec_in(&self.ns(host), &["curl", "-s", "--max-time", "1", &url])
                && String::from_utf8_lossy(&out.stdout).trim() == body
            {
                return Ok(());
            }
            sleep(POLL);
        }
        bail!(
            "nginx in {} did not answer within {NGINX_START_TIMEOUT:?}",
            self.ns(host)
        )
    }

    /// Stops the nginx of `host` (the seed's `docker stop nginx`): SIGTERM
    /// to the master, which stops its workers; SIGKILL if it lingers.
    pub fn stop_nginx(&mut self, host: Host) {
        self.nginx.retain_mut(|(h, child)| {
            if *h != host {
                return true;
            }
            let _ = stop_child(child, "TERM", NGINX_START_TIMEOUT);
            false
        });
    }

    /// Runs Debian's keepalived, VRRP only, in `host` with `conf`
    /// (keepalived.conf syntax), logging to the work directory.
    pub fn start_keepalived(&mut self, host: Host, conf: &str) -> Result<()> {
        let name = host.short();
        let conf_path = self.write_config(&format!("keepalived-{name}.conf"), conf)?;
        let log = fs::File::create(self.workdir.join(format!("keepalived-{name}.log")))?;
        let pid = self.workdir.join(format!("keepalived-{name}.pid"));
        let vrrp_pid = self.workdir.join(format!("keepalived-{name}-vrrp.pid"));
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns(host),
                "keepalived",
                "--vrrp",
                "-n",
                "-l",
                "-D",
                "-f",
            ])
            .arg(&conf_path)
            .arg("-p")
            .arg(&pid)
            .arg("-r")
            .arg(&vrrp_pid)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting keepalived (installed by `cargo xtask setup`)")?;
        self.keepalived.push((host, child));
        Ok(())
    }

    /// keepalived's log in `host`.
    pub fn keepalived_log(&self, host: Host) -> String {
        fs::read_to_string(
            self.workdir
                .join(format!("keepalived-{}.log", host.short())),
        )
        .unwrap_or_default()
    }

    /// Sends `signal` to keepalived in `host` and waits until it is gone.
    /// Its VRRP child first: killed after its parent it would get SIGTERM
    /// and leave cleanly (priority 0), which is not what KILL means.
    pub fn signal_keepalived(&mut self, host: Host, signal: &str) -> Result<()> {
        let Some(pos) = self.keepalived.iter().position(|(h, _)| *h == host) else {
            return Ok(());
        };
        let (_, mut child) = self.keepalived.remove(pos);
        let vrrp_pid = self
            .workdir
            .join(format!("keepalived-{}-vrrp.pid", host.short()));
        if let Ok(pid) = fs::read_to_string(vrrp_pid) {
            let _ = Command::new("kill")
                .args([&format!("-{signal}"), pid.trim()])
                .status();
        }
        stop_child(&mut child, signal, AGENT_STOP_TIMEOUT).map(|_| ())
    }

    /// Files every nginx serves besides "/" (same content on every server).
    pub fn files_dir(&self) -> PathBuf {
        self.workdir.join("www")
    }

    /// Runs `lb-userspace realserver ARGS` in `host`, keeping the host's
    /// bpffs (tun mode pins its decapsulation program there).
    pub fn realserver(&self, host: Host, args: &[&str]) -> Result<()> {
        let binary = agent_binary()?;
        let mut full = vec![
            nsenter_net(&self.ns(host)),
            binary.to_string_lossy().into_owned(),
            "realserver".into(),
        ];
        full.extend(args.iter().map(|a| a.to_string()));
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        netns::run("nsenter", &refs).map(|_| ())
    }
}
