//! curl on the balancer itself, as the seed types it (`[root@s2 ...]# curl
//! 172.16.122.100` in section 5.4, `curl 172.16.122.188:80` in section 4):
//! the agent's socket-level programs balance the director's own clients
//! like IPVS's LOCAL_OUT hook. As root, in namespaces the test makes.

use std::{
    net::{SocketAddr, TcpStream},
    thread,
};

use lb_testbed::{
    netns,
    topology::{Host, RS1_IP, Topology, VIP},
};

const CURLS: usize = 6;

fn curl_on(topo: &Topology, host: Host, addr: &str) -> String {
    topo.curl_on(host, addr)
        .unwrap_or_else(|e| format!("curl failed: {e}\n{}", topo.agent_log()))
}

fn assert_alternates(answers: &[String]) {
    assert!(
        answers.iter().all(|a| a.starts_with("hello rs")),
        "{answers:?}"
    );
    for pair in answers.windows(2) {
        assert_ne!(pair[0], pair[1], "rr must alternate: {answers:?}");
    }
}

#[test]
fn curl_on_the_director_is_balanced_like_a_clients() {
    let mut topo = Topology::create(&format!("lbl{}dr", std::process::id())).unwrap();
    topo.start_nginx(Host::Rs1, "hello rs1").unwrap();
    topo.start_nginx(Host::Rs2, "hello rs2").unwrap();
    let config = topo.seed_config();
    topo.start_agent_with(Host::Lb, &config).unwrap();
    topo.wait_for_master(Host::Lb).unwrap();

    // Section 5.4, typed on the director.
    let answers: Vec<String> = (0..CURLS)
        .map(|_| curl_on(&topo, Host::Lb, &VIP.to_string()))
        .collect();
    assert_alternates(&answers);
    // The client's curl goes on through the XDP path, untouched by them.
    assert!(topo.curl_vip().unwrap().starts_with("hello rs"));

    // The application sees the VIP as its peer.
    let lb = topo.ns(Host::Lb);
    let (peer, body) = topo.http_get_on(Host::Lb, (VIP, 80).into()).unwrap();
    assert_eq!(peer, SocketAddr::from((VIP, 80)));
    assert!(body.contains("hello rs"), "{body}");

    // A connection to a real server's own address (what a health check
    // makes) is never rewritten.
    for _ in 0..3 {
        assert_eq!(curl_on(&topo, Host::Lb, &RS1_IP.to_string()), "hello rs1");
    }
    let counters = topo.counters(Host::Lb).unwrap();
    let balanced = counters[lb_common::counters::LOCAL_BALANCED as usize];
    assert_eq!(balanced, CURLS as u64 + 1, "{counters:?}");

    local_connections_are_counted(&topo);

    // Stopped, the programs are gone: a connect on the director reaches
    // the VIP's own address again (VRRP took it away: put back on lo,
    // nothing listens there, refused; still balanced, it would answer).
    assert!(topo.stop_agent().unwrap(), "{}", topo.agent_log());
    netns::ip(&["-n", &lb, "addr", "add", &format!("{VIP}/32"), "dev", "lo"]).unwrap();
    let after = thread::scope(|s| {
        s.spawn(|| {
            netns::enter(&lb).unwrap();
            TcpStream::connect((VIP, 80)).map_err(|e| e.kind())
        })
        .join()
        .unwrap()
    });
    assert_eq!(
        after.err(),
        Some(std::io::ErrorKind::ConnectionRefused),
        "a connect to the VIP is still balanced after the stop"
    );
}

/// Open local connections are in ActiveConn and `list -c` (as IPVS lists
/// what its LOCAL_OUT hook made), and leave both when they close; the
/// connection statistics count every local connection.
fn local_connections_are_counted(topo: &Topology) {
    const OPEN: usize = 4;
    let lb = topo.ns(Host::Lb);
    // Finished connections are gone from the counts (closed sockets);
    // the client's curl through XDP stays an inactive flow (TIME_WAIT).
    let (before_active, before_inactive) = topo.conn_counts(Host::Lb).unwrap();
    assert_eq!(before_active, 0, "{:#?}", topo.connections(Host::Lb));
    let streams: Vec<TcpStream> = thread::scope(|s| {
        s.spawn(|| {
            netns::enter(&lb).unwrap();
            (0..OPEN)
                .map(|_| TcpStream::connect((VIP, 80)).unwrap())
                .collect()
        })
        .join()
        .unwrap()
    });
    let ports: Vec<u16> = streams
        .iter()
        .map(|s| s.local_addr().unwrap().port())
        .collect();
    // connect() returned: the handshake is done, each socket ESTABLISHED.
    assert_eq!(
        topo.conn_counts(Host::Lb).unwrap(),
        (OPEN as u64, before_inactive),
        "{:#?}",
        topo.connections(Host::Lb)
    );
    let listed = topo.connections(Host::Lb).unwrap();
    for port in &ports {
        let entry = listed
            .iter()
            .find(|c| c.client.1 == *port)
            .unwrap_or_else(|| panic!("no entry for local port {port}: {listed:#?}"));
        assert_eq!(entry.protocol, "TCP");
        assert_eq!(entry.state, "ESTABLISHED");
        assert_eq!(entry.virt, (VIP.into(), 80));
        assert!(
            [RS1_IP, lb_testbed::topology::RS2_IP]
                .map(std::net::IpAddr::V4)
                .contains(&entry.dest.0),
            "{entry:?}"
        );
    }
    // Both servers got two (rr), and the statistics count every local
    // connection: the curls, the getpeername one and these.
    let table = lb_userspace::stats::snapshot::read_table(&topo.pin_dir()).unwrap();
    let dests = &table.services[0].dests;
    assert!(dests.iter().all(|d| d.active_conns == 2), "{dests:#?}");
    let local_conns = (CURLS + 1 + OPEN) as u64;
    // Plus the client's one curl through the XDP path.
    assert_eq!(
        table.services[0].traffic.conns,
        local_conns + 1,
        "{table:#?}"
    );

    drop(streams);
    // Closed: the FIN exchange moves each socket on to TCP_CLOSE (TIME_WAIT
    // is a socket of its own, not followed), and the entries go.
    let gone = lb_testbed::topology::wait_until(std::time::Duration::from_secs(10), || {
        topo.conn_counts(Host::Lb).unwrap() == (0, before_inactive)
    });
    assert!(
        gone.is_some(),
        "{:?}\n{:#?}",
        topo.conn_counts(Host::Lb),
        topo.connections(Host::Lb)
    );
    let listed = topo.connections(Host::Lb).unwrap();
    assert!(
        listed.iter().all(|c| !ports.contains(&c.client.1)),
        "{listed:#?}"
    );
}

/// The seed's section 4 (LVS-NAT, the VIP is the director's own
/// 172.16.122.188): `curl 172.16.122.188:80` on the director alternates.
#[test]
fn curl_on_the_director_with_the_seeds_nat_plan() {
    let mut topo = Topology::create(&format!("lbl{}nat", std::process::id())).unwrap();
    topo.start_nginx(Host::Rs1, "hello rs1").unwrap();
    topo.start_nginx(Host::Rs2, "hello rs2").unwrap();
    topo.make_nat_one_armed().unwrap();
    let config = topo.config_from("seed-nat.toml");
    topo.start_agent_with(Host::Lb, &config).unwrap();
    let answers: Vec<String> = (0..CURLS)
        .map(|_| curl_on(&topo, Host::Lb, "172.16.122.188:80"))
        .collect();
    assert_alternates(&answers);
}

/// A UDP service answers a datagram sent from the director: unconnected
/// sendto() to the VIP, recvfrom() shows the VIP as the source.
#[test]
fn udp_from_the_director_sees_the_vip_answer() {
    const UDP_PORT: u16 = 5353;
    let mut topo = Topology::create(&format!("lbl{}udp", std::process::id())).unwrap();
    // A UDP echo on each real server that says who it is.
    let echoes: Vec<std::net::UdpSocket> = [Host::Rs1, Host::Rs2]
        .into_iter()
        .map(|host| {
            let ns = topo.ns(host);
            thread::spawn(move || {
                netns::enter(&ns).unwrap();
                std::net::UdpSocket::bind(("0.0.0.0", UDP_PORT)).unwrap()
            })
            .join()
            .unwrap()
        })
        .collect();
    let stop = std::sync::atomic::AtomicBool::new(false);
    thread::scope(|s| {
        for (socket, name) in echoes.iter().zip(["rs1", "rs2"]) {
            let stop = &stop;
            s.spawn(move || {
                socket
                    .set_read_timeout(Some(std::time::Duration::from_millis(200)))
                    .unwrap();
                let mut buf = [0u8; 64];
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok((_, from)) = socket.recv_from(&mut buf) {
                        let _ = socket.send_to(name.as_bytes(), from);
                    }
                }
            });
        }
        let config = format!(
            "{}\n[[virtual_server]]\nvip = \"{VIP}\"\nport = {UDP_PORT}\nprotocol = \"UDP\"\nlb_algo = \"rr\"\nlb_kind = \"DR\"\n\
             [[virtual_server.real_server]]\nip = \"172.16.122.193\"\nport = {UDP_PORT}\n\
             [[virtual_server.real_server]]\nip = \"172.16.122.195\"\nport = {UDP_PORT}\n",
            topo.seed_config()
        );
        topo.start_agent_with(Host::Lb, &config).unwrap();
        let lb = topo.ns(Host::Lb);
        let heard = s
            .spawn(move || {
                netns::enter(&lb).unwrap();
                // Four sockets, three datagrams each.
                let sockets: Vec<std::net::UdpSocket> = (0..4)
                    .map(|_| std::net::UdpSocket::bind("0.0.0.0:0").unwrap())
                    .collect();
                let mut heard = Vec::new();
                for socket in &sockets {
                    socket
                        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
                        .unwrap();
                    let mut answers = Vec::new();
                    for _ in 0..3 {
                        socket.send_to(b"who", (VIP, UDP_PORT)).unwrap();
                        let mut buf = [0u8; 64];
                        let (n, from) = socket.recv_from(&mut buf).unwrap();
                        answers.push((String::from_utf8_lossy(&buf[..n]).into_owned(), from));
                    }
                    heard.push(answers);
                }
                (heard, sockets)
            })
            .join()
            .unwrap();
        let (heard, sockets) = heard;
        // While the sockets are open, each is a UDP connection entry.
        let listed = topo.connections(Host::Lb).unwrap();
        let udp: Vec<_> = listed.iter().filter(|c| c.protocol == "UDP").collect();
        assert_eq!(udp.len(), sockets.len(), "{listed:#?}");
        assert!(
            udp.iter()
                .all(|c| c.state == "UDP" && c.virt == (VIP.into(), UDP_PORT)),
            "{udp:#?}"
        );
        let mut ports: Vec<u16> = sockets
            .iter()
            .map(|s| s.local_addr().unwrap().port())
            .collect();
        let mut listed_ports: Vec<u16> = udp.iter().map(|c| c.client.1).collect();
        ports.sort_unstable();
        listed_ports.sort_unstable();
        assert_eq!(listed_ports, ports, "{udp:#?}");
        assert_eq!(
            topo.conn_counts(Host::Lb).unwrap(),
            (0, sockets.len() as u64)
        );
        drop(sockets);
        // Released: gone.
        assert_eq!(topo.conn_counts(Host::Lb).unwrap(), (0, 0));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // A socket keeps its server (IPVS keeps the connection of its
        // client port); the sockets alternate (rr).
        let firsts: Vec<&str> = heard.iter().map(|a| a[0].0.as_str()).collect();
        for answers in &heard {
            assert!(answers.iter().all(|(n, _)| *n == answers[0].0), "{heard:?}");
            for (_, from) in answers {
                assert_eq!(*from, SocketAddr::from((VIP, UDP_PORT)), "{heard:?}");
            }
        }
        for pair in firsts.windows(2) {
            assert_ne!(pair[0], pair[1], "rr must alternate: {heard:?}");
        }
    });
}
