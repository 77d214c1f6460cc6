//! Long-lived connections that keep sending through a failover or a
//! scale-out event: keep-alive HTTP connections from the client to the VIP,
//! each asking every REQUEST_PERIOD and recording every answer's body
//! ("hello rs1" / "hello rs2"), so a test can require that every request
//! was answered, by the connection's first server.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{IpAddr, TcpStream},
    sync::{
        Barrier,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use crate::netns;

pub const REQUEST_PERIOD: Duration = Duration::from_millis(200);
/// Longer than any failover in the tests (election or BGP hold time plus
/// TCP's retransmission backoff): a request waits, it is not abandoned.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// What one keep-alive connection saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// The connection's client port.
    pub port: u16,
    /// The body of every answer, in order.
    pub answers: Vec<String>,
    pub error: Option<String>,
}

/// One HTTP/1.1 exchange on a kept-alive connection: the body.
fn exchange(reader: &mut BufReader<TcpStream>) -> Result<String, String> {
    reader
        .get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut length = None;
    loop {
        let mut line = String::new();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed by the server".into());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse::<usize>().ok();
        }
    }
    let mut body = vec![0; length.ok_or("no content-length")?];
    reader
        .read_exact(&mut body)
        .map_err(|e| format!("body: {e}"))?;
    Ok(String::from_utf8_lossy(&body).trim().to_string())
}

/// A connection from namespace `ns` to `to`:80 that asks every
/// REQUEST_PERIOD until `stop` (at least once).
fn keep_alive(ns: &str, to: IpAddr, stop: &AtomicBool, opened: &Barrier) -> Seen {
    let mut seen = Seen::default();
    let stream = netns::enter(ns)
        .map_err(|e| format!("{e:#}"))
        .and_then(|()| TcpStream::connect((to, 80)).map_err(|e| format!("connect: {e}")));
    let stream = match stream {
        Ok(s) => s,
        Err(e) => {
            seen.error = Some(e);
            opened.wait();
            return seen;
        }
    };
    let _ = stream.set_read_timeout(Some(REPLY_TIMEOUT));
    seen.port = stream.local_addr().map_or(0, |a| a.port());
    let mut reader = BufReader::new(stream);
    let mut first = true;
    while first || !stop.load(Ordering::Relaxed) {
        match exchange(&mut reader) {
            Ok(body) => seen.answers.push(body),
            Err(e) => {
                seen.error = Some(e);
                break;
            }
        }
        if first {
            opened.wait();
            first = false;
        }
        thread::sleep(REQUEST_PERIOD);
    }
    if first {
        opened.wait();
    }
    seen
}

/// Opens `count` connections from `ns` to `to`, runs `events` once each
/// has had its first answer, then stops them: what each saw, and what
/// `events` returned.
pub fn through<R>(
    ns: &str,
    to: IpAddr,
    count: usize,
    events: impl FnOnce() -> R,
) -> (Vec<Seen>, R) {
    let stop = AtomicBool::new(false);
    let opened = Barrier::new(count + 1);
    thread::scope(|s| {
        let workers: Vec<_> = (0..count)
            .map(|_| s.spawn(|| keep_alive(ns, to, &stop, &opened)))
            .collect();
        opened.wait();
        let result = events();
        stop.store(true, Ordering::Relaxed);
        let seen = workers
            .into_iter()
            .map(|w| {
                w.join().unwrap_or_else(|_| Seen {
                    error: Some("the connection's thread panicked".into()),
                    ..Seen::default()
                })
            })
            .collect();
        (seen, result)
    })
}

/// The connections that broke, described.
pub fn broken(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .enumerate()
        .filter(|(_, c)| c.error.is_some())
        .map(|(i, c)| {
            format!(
                "connection {i} (port {}) after {} answers: {:?}",
                c.port,
                c.answers.len(),
                c.error
            )
        })
        .collect()
}

/// Every connection kept its first server for all its answers and had
/// more than `min_answers`: Err says which did not. Ok: the servers.
pub fn kept_their_servers(seen: &[Seen], min_answers: usize) -> Result<Vec<String>, String> {
    let mut servers = Vec::new();
    for (i, conn) in seen.iter().enumerate() {
        let Some(first) = conn.answers.first() else {
            return Err(format!("connection {i} had no answer: {conn:?}"));
        };
        if conn.answers.iter().any(|a| a != first) {
            return Err(format!("connection {i} changed server: {:?}", conn.answers));
        }
        if conn.answers.len() <= min_answers {
            return Err(format!(
                "connection {i}: only {} answers",
                conn.answers.len()
            ));
        }
        servers.push(first.clone());
    }
    Ok(servers)
}
