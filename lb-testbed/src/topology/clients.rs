//! The clients: curl (one, many at once), downloads and uploads through
//! the service, UDP exchanges, sockets opened inside a host.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
};

use super::*;

impl Topology {
    /// Downloads `path` from the VIP on the client; returns the SHA-256 of
    /// what arrived.
    pub fn download_sha256(&self, path: &str) -> Result<String> {
        let url = format!("http://{}{path}", self.service_addr);
        let out = exec_in(
            &self.ns(Host::Client),
            &[
                "sh",
                "-c",
                &format!("curl -sf --max-time 30 {url} | sha256sum"),
            ],
        )?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string())
    }

    /// Starts a slow download of `path` from the service on the client (an
    /// established connection that lasts); kill the child to end it.
    pub fn slow_download(&self, path: &str, bytes_per_s: u32) -> Result<Child> {
        let url = format!("http://{}{path}", self.service_addr);
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns(Host::Client),
                "curl",
                "-s",
                "-o",
                "/dev/null",
            ])
            .args([
                "--max-time",
                "60",
                "--limit-rate",
                &bytes_per_s.to_string(),
                &url,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting curl")
    }

    /// POSTs the file at `path` to the service from the client; returns the
    /// answer's body (full-sized client segments: the path-MTU case).
    pub fn upload(&self, path: &Path) -> Result<String> {
        self.upload_to(&self.service_addr.to_string(), path)
    }

    /// The same to `addr` (an IPv6 address in brackets, say).
    pub fn upload_to(&self, addr: &str, path: &Path) -> Result<String> {
        let url = format!("http://{addr}/");
        let data = format!("@{}", path.display());
        let out = exec_in(
            &self.ns(Host::Client),
            &[
                "curl",
                "-gsf",
                "--max-time",
                "30",
                "-X",
                "POST",
                "--data-binary",
                &data,
                &url,
            ],
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Makes the client's curls go to `addr` (e.g. the seed's NAT VIP).
    pub fn set_service_addr(&mut self, addr: Ipv4Addr) {
        self.service_addr = addr;
    }

    /// `curl http://VIP/` from the client: the body, trimmed.
    pub fn curl_vip(&self) -> Result<String> {
        self.curl(self.service_addr)
    }

    /// `curl http://ADDR/` from the client: the body, trimmed.
    pub fn curl(&self, addr: Ipv4Addr) -> Result<String> {
        self.curl_on(Host::Client, &addr.to_string())
    }

    /// curl http://ADDR/ typed on `host` (ADDR: address or address:port,
    /// IPv6 in brackets), as the seed types it on the director too; the body.
    pub fn curl_on(&self, host: Host, addr: &str) -> Result<String> {
        let url = format!("http://{addr}/");
        // -g: brackets are an IPv6 address, not a curl glob.
        let out = exec_in(
            &self.ns(host),
            &["curl", "-gsS", "--max-time", CURL_MAX_TIME_SECS, &url],
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// An HTTP/1.0 GET to `to` from a socket of `host`'s namespace: the
    /// peer address the application sees (getpeername) and the reply.
    pub fn http_get_on(&self, host: Host, to: SocketAddr) -> Result<(SocketAddr, String)> {
        let ns = self.ns(host);
        std::thread::scope(|s| {
            s.spawn(|| {
                netns::enter(&ns)?;
                let mut stream = TcpStream::connect(to)?;
                let peer = stream.peer_addr()?;
                stream.write_all(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")?;
                let mut reply = String::new();
                stream.read_to_string(&mut reply)?;
                Ok((peer, reply))
            })
            .join()
            .map_err(|_| anyhow!("the GET thread panicked"))?
        })
    }

    /// `n` requests at once from the client (curl --parallel, each its own
    /// connection); returns the HTTP status of each.
    pub fn curl_vip_parallel(&self, n: usize) -> Result<Vec<String>> {
        let url = format!("http://{}/", self.service_addr);
        let n_str = n.to_string();
        let mut args = vec![
            "curl",
            "-s",
            "--parallel",
            "--parallel-immediate",
            "--parallel-max",
            &n_str,
            "--max-time",
            CURL_MAX_TIME_SECS,
            "-w",
            "%{http_code}\\n",
        ];
        for _ in 0..n {
            args.extend(["-o", "/dev/null", url.as_str()]);
        }
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns(Host::Client)])
            .args(&args)
            .output()
            .context("running curl --parallel")?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// From the client: a connected UDP socket sends one datagram to
    /// `addr:port` and waits up to `timeout` for an answer; returns what
    /// the kernel said (an ICMP port unreachable shows as ConnectionRefused).
    pub fn udp_exchange(
        &self,
        addr: Ipv4Addr,
        port: u16,
        timeout: Duration,
    ) -> Result<std::io::Result<usize>> {
        let ns_path = format!("/var/run/netns/{}", self.ns(Host::Client));
        std::thread::spawn(move || -> Result<std::io::Result<usize>> {
            let ns = fs::File::open(&ns_path).with_context(|| format!("opening {ns_path}"))?;
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
            let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
            socket.connect((addr, port))?;
            socket.set_read_timeout(Some(timeout))?;
            socket.send(b"query")?;
            let mut buf = [0u8; 512];
            Ok(socket.recv(&mut buf))
        })
        .join()
        .map_err(|_| anyhow!("the UDP thread panicked"))?
    }

    /// A TCP listener inside `host`'s namespace: bound from a thread that
    /// joined the namespace; the socket stays there, usable from anywhere.
    pub fn listen_in(&self, host: Host, addr: &str) -> Result<std::net::TcpListener> {
        let ns_path = format!("/var/run/netns/{}", self.ns(host));
        let addr = addr.to_string();
        std::thread::spawn(move || -> Result<std::net::TcpListener> {
            let ns = fs::File::open(&ns_path).with_context(|| format!("opening {ns_path}"))?;
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
            Ok(std::net::TcpListener::bind(&addr)?)
        })
        .join()
        .map_err(|_| anyhow!("the setns thread panicked"))?
    }
}
