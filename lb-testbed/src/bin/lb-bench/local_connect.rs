//! The cost of the socket-level programs for the director's own clients:
//! a TCP connect() loop on loopback (socket, connect, accept, RST close) in
//! a namespace of its own, without the programs, with them to an address
//! that is no service (connect4 looks and lets go, the release hook looks),
//! and with them to a VIP (scheduled, rewritten, tracked by sock_ops
//! through the handshake and the close). Rounds interleaved, medians.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::Instant,
};

use lb_testbed::netns;
use socket2::{Domain, Socket, Type};

use super::*;

/// connect() calls per measurement.
const CONNECTS: u32 = 5_000;
const QUICK_CONNECTS: u32 = 2_000;
/// The VIP the loop connects to (on lo, as the director holds its VIP).
const BENCH_VIP: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 1);

/// ns per connect + close to `to`.
fn connect_loop(to: SocketAddr, n: u32) -> Result<f64> {
    let start = Instant::now();
    for _ in 0..n {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        // RST at close: no TIME_WAIT, so the ports last the whole bench.
        socket.set_linger(Some(std::time::Duration::ZERO))?;
        socket
            .connect(&to.into())
            .with_context(|| format!("connecting to {to}"))?;
    }
    Ok(start.elapsed().as_nanos() as f64 / f64::from(n))
}

/// Runs on a thread that entered the bench's namespace.
fn measure(budget: &Budget, results: &mut bench_report::Results, ns: &str) -> Result<()> {
    netns::ip(&["-n", ns, "link", "set", "lo", "up"])?;
    netns::ip(&[
        "-n",
        ns,
        "addr",
        "add",
        &format!("{BENCH_VIP}/32"),
        "dev",
        "lo",
    ])?;
    netns::enter(ns)?;
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    let port = listener.local_addr()?.port();
    // The service: BENCH_VIP:port -> 127.0.0.1:port (the same listener).
    let mut service = seed_service([1, 1]);
    service.vip = BENCH_VIP.into();
    service.port = port;
    for real in &mut service.reals {
        real.ip = Ipv4Addr::LOCALHOST.into();
        real.port = port;
    }
    // Loaded here: lb_globals gets this namespace's cookie.
    let mut t = ProgTest::with_service(service)?;
    let n = if budget.rounds < FULL.rounds {
        QUICK_CONNECTS
    } else {
        CONNECTS
    };
    let stop = AtomicBool::new(false);
    let vip = SocketAddr::from((BENCH_VIP, port));
    let other = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let (mut bare, mut non_service, mut service_ns) = (Vec::new(), Vec::new(), Vec::new());
    let measured = thread::scope(|s| -> Result<()> {
        s.spawn(|| {
            listener.set_nonblocking(true).ok();
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok(_) => {}
                    Err(_) => thread::yield_now(),
                }
            }
        });
        let mut run = || -> Result<()> {
            for _ in 0..budget.rounds {
                t.dp.detach_local();
                bare.push(connect_loop(vip, n)?);
                t.dp.attach_local()?;
                non_service.push(connect_loop(other, n)?);
                service_ns.push(connect_loop(vip, n)?);
            }
            t.dp.detach_local();
            Ok(())
        };
        let result = run();
        stop.store(true, Ordering::Relaxed);
        result
    });
    measured?;
    let counters = t.counters()?;
    let balanced = counters[lb_common::counters::LOCAL_BALANCED as usize];
    let expected = u64::from(n) * budget.rounds as u64;
    if balanced != expected {
        return Err(anyhow!(
            "{balanced} of {expected} connects to the VIP balanced"
        ));
    }
    const SECTION: &str = "Local clients (TCP connect + RST close on loopback, per connect)";
    let (bare, non_service, service) = (
        median(&mut bare),
        median(&mut non_service),
        median(&mut service_ns),
    );
    results.push(SECTION, "connect(), no socket programs", bare, None);
    results.push(
        SECTION,
        "connect() to no service, socket programs attached",
        non_service,
        Some(("no programs", bare)),
    );
    results.push(
        SECTION,
        "connect() to a VIP: balanced and tracked",
        service,
        Some(("no programs", bare)),
    );
    results.notes.push(format!(
        "local clients: the socket programs add {:.0} ns to a connect() that is no service's and \
         {:.0} ns to one balanced to a real server (scheduling, rewrite, state tracking)",
        non_service - bare,
        service - bare
    ));
    Ok(())
}

pub fn bench(budget: &Budget, results: &mut bench_report::Results) -> Result<()> {
    let ns = format!("lbbenchlc{}", std::process::id());
    netns::ip(&["netns", "add", &ns])?;
    let outcome = thread::scope(|s| {
        s.spawn(|| measure(budget, results, &ns))
            .join()
            .map_err(|_| anyhow!("the connect loop panicked"))?
    });
    netns::destroy_namespace(&ns);
    outcome
}
