//! A long download through the VIP for tests that must show a connection
//! survives something (a reload, a restart, a flood): a file nginx serves,
//! fetched slowly by a thread of ours in the client's namespace, with a
//! small receive window so the connection carries data all along.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use crate::topology::{Host, Topology, VIP};

pub const BIG_FILE: &str = "/4m.bin";
const BIG_FILE_BYTES: usize = 4 * 1024 * 1024;
/// The download reads this much, then pauses: it lasts a few seconds.
const READ_CHUNK: usize = 64 * 1024;
const READ_PAUSE: Duration = Duration::from_millis(40);
/// The client's socket buffer (the kernel doubles it): ~800 KB/s at
/// READ_PAUSE, so the 4 MB download lasts about five seconds.
const RECEIVE_BUFFER: usize = 16 * 1024;
/// Bounds of the download.
const DOWNLOAD_DEADLINE: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the balancer gets to list a new download.
const LISTED_WAIT: Duration = Duration::from_secs(10);

/// The content of BIG_FILE: reproducible, incompressible (xorshift).
pub fn big_data() -> Vec<u8> {
    let mut data = Vec::with_capacity(BIG_FILE_BYTES);
    let mut x: u32 = 0x9e37_79b9;
    while data.len() < BIG_FILE_BYTES {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data
}

/// GETs `path` through the VIP from the client's namespace, reading slowly
/// (a thread of ours enters the namespace); returns the body.
pub fn slow_download(topo: &Topology, path: &'static str) -> std::thread::JoinHandle<Vec<u8>> {
    let ns = topo.ns(Host::Client);
    std::thread::spawn(move || {
        crate::netns::enter(&ns).unwrap();
        // A small receive window: the server can only send as fast as we
        // read, so the connection carries data across the reload.
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .unwrap();
        socket.set_recv_buffer_size(RECEIVE_BUFFER).unwrap();
        socket
            .connect_timeout(&SocketAddr::from((VIP, 80)).into(), CONNECT_TIMEOUT)
            .unwrap();
        let mut conn: TcpStream = socket.into();
        conn.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        write!(conn, "GET {path} HTTP/1.0\r\nHost: {VIP}\r\n\r\n").unwrap();
        let started = Instant::now();
        let mut response = Vec::new();
        let mut chunk = vec![0u8; READ_CHUNK];
        while started.elapsed() < DOWNLOAD_DEADLINE {
            let n = conn.read(&mut chunk).expect("the download broke off");
            if n == 0 {
                break;
            }
            response.extend_from_slice(&chunk[..n]);
            std::thread::sleep(READ_PAUSE);
        }
        let body_at = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("no HTTP header")
            + 4;
        response.split_off(body_at)
    })
}

/// Writes BIG_FILE where every nginx of `topo` serves files; returns its
/// content to compare the download with.
pub fn serve_big_file(topo: &Topology) -> Vec<u8> {
    let data = big_data();
    fs::write(
        topo.files_dir().join(BIG_FILE.trim_start_matches('/')),
        &data,
    )
    .expect("writing the big file");
    data
}

/// Waits (bounded) until the balancer lists the download as one
/// ESTABLISHED connection of a weight-1 DR server (`list -n`: ActiveConn 1);
/// panics with the listing if it never does.
pub fn wait_until_listed_active(topo: &Topology, binary: &std::path::Path) {
    let listed = crate::topology::wait_until(LISTED_WAIT, || {
        topo.list(binary)
            .unwrap()
            .lines()
            .any(|l| l.contains("Route   1      1 "))
    });
    assert!(listed.is_some(), "{}", topo.list(binary).unwrap());
}
