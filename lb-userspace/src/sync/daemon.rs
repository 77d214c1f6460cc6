//! The sync daemon task (the kernel's master and backup sync threads in
//! one): records the agent hands it are batched into datagrams of at most
//! maxlen bytes and sent at once when a datagram is full, else at the next
//! flush tick; datagrams heard on the group are decoded, filtered (our own,
//! a stranger's sync id) and handed to the agent, which applies them.
//! A full announcement of the table is sent at most PASS_RATE records a
//! second beside them and ends with an empty message. Everything it does
//! is counted in SyncStats.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tokio::{net::UdpSocket, sync::mpsc, task::AbortHandle};
use tracing::warn;

use super::{
    codec::{self, SyncConn},
    socket::{self, Endpoint},
};

/// Records waiting longer than this are sent in a partly filled datagram
/// (the kernel's sync_send_delay is 20 ms to 1 s).
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(250);
/// Batches the agent may queue before it waits for the daemon.
const OUT_QUEUE: usize = 256;
/// Received messages waiting for the agent.
const IN_QUEUE: usize = 1024;
/// Receive buffer: the largest UDP payload over IPv4.
const MAX_DATAGRAM: usize = 65_507;
/// A full announcement's pace, in records a second (~30 Mbit/s of
/// 36-byte records): a table of a million connections takes 10 s and
/// leaves room for the connections reported meanwhile; a receiver applies
/// about three times this on one core (the bench's sync rows).
pub const PASS_RATE: usize = 100_000;
/// How often a share of the announcement goes out.
const PASS_TICK: Duration = Duration::from_millis(10);

/// How the daemon is set up (lb.toml's lvs_sync_daemon, resolved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub endpoint: Endpoint,
    pub syncid: u8,
    pub maxlen: usize,
}

/// What connection sync did, for status and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStats {
    /// master (sending), backup (receiving), both, or idle.
    pub role: String,
    pub syncid: u8,
    pub sent_messages: u64,
    pub sent_conns: u64,
    pub received_messages: u64,
    pub received_conns: u64,
    /// Records written into this balancer's tables.
    pub applied_conns: u64,
    /// Full announcements of this balancer's table sent.
    #[serde(default)]
    pub full_passes_sent: u64,
    /// The balancers sync messages came from.
    pub peers: BTreeMap<Ipv4Addr, PeerHeard>,
    /// The last catch-up on the peers' tables: running, complete, alone,
    /// timed_out, interrupted (the role stopped receiving first); empty
    /// before the first.
    #[serde(default)]
    pub catch_up: String,
    /// Datagrams or records dropped, by reason.
    pub drops: BTreeMap<String, u64>,
}

/// What one peer sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerHeard {
    pub messages: u64,
    /// Full announcements of its table it ended.
    pub full_passes: u64,
}

/// A message heard from a peer, for the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    pub from: Ipv4Addr,
    pub conns: Vec<SyncConn>,
    /// It ends a full announcement of the peer's table.
    pub pass_end: bool,
}

impl SyncStats {
    pub fn drop_one(&mut self, reason: &str) {
        *self.drops.entry(reason.to_string()).or_default() += 1;
    }
}

/// The agent's handle on the running daemon.
pub struct SyncDaemon {
    pub settings: Settings,
    out: mpsc::Sender<Vec<SyncConn>>,
    /// A full announcement, sent paced (one at a time).
    passes: mpsc::Sender<Vec<SyncConn>>,
    /// While a full announcement is being sent.
    announcing: Arc<AtomicBool>,
    pub received: mpsc::Receiver<Inbound>,
    pub stats: Arc<Mutex<SyncStats>>,
    task: AbortHandle,
}

impl Drop for SyncDaemon {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SyncDaemon {
    /// Opens the sockets and starts the task.
    pub fn start(settings: Settings) -> Result<Self> {
        let sender = socket::sender(&settings.endpoint)?;
        let receiver = socket::receiver(&settings.endpoint)?;
        let (out, out_rx) = mpsc::channel(OUT_QUEUE);
        let (passes, passes_rx) = mpsc::channel(1);
        let (in_tx, received) = mpsc::channel(IN_QUEUE);
        let stats = Arc::new(Mutex::new(SyncStats {
            syncid: settings.syncid,
            ..SyncStats::default()
        }));
        let announcing = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(run(
            settings,
            Io {
                sender,
                receiver,
                out: out_rx,
                passes: passes_rx,
                received: in_tx,
            },
            stats.clone(),
            announcing.clone(),
        ))
        .abort_handle();
        Ok(Self {
            settings,
            out,
            passes,
            announcing,
            received,
            stats,
            task,
        })
    }

    /// Hands over a full announcement of the table (sent at PASS_RATE,
    /// then its end); false, and nothing taken, while the last one is
    /// still going out.
    pub fn announce(&self, conns: Vec<SyncConn>) -> bool {
        if self.announcing.swap(true, Ordering::AcqRel) {
            return false;
        }
        if self.passes.try_send(conns).is_err() {
            self.announcing.store(false, Ordering::Release);
            return false;
        }
        true
    }

    /// A full announcement is being sent.
    pub fn announcing(&self) -> bool {
        self.announcing.load(Ordering::Acquire)
    }

    pub fn set_catch_up(&self, catch_up: &str) {
        if let Ok(mut stats) = self.stats.lock() {
            stats.catch_up = catch_up.to_string();
        }
    }

    /// Queues records for the other balancers; dropped (and counted) when
    /// the daemon cannot keep up.
    pub fn send(&self, conns: Vec<SyncConn>) {
        if conns.is_empty() {
            return;
        }
        if self.out.try_send(conns).is_err()
            && let Ok(mut stats) = self.stats.lock()
        {
            stats.drop_one("send_queue_full");
        }
    }

    pub fn stats(&self) -> SyncStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn set_role(&self, role: &str) {
        if let Ok(mut stats) = self.stats.lock() {
            stats.role = role.to_string();
        }
    }

    pub fn count_applied(&self, applied: u64, refused: &[&'static str]) {
        if let Ok(mut stats) = self.stats.lock() {
            stats.applied_conns += applied;
            for reason in refused {
                stats.drop_one(reason);
            }
        }
    }
}

/// What to do with one datagram heard on the group.
#[derive(Debug, PartialEq, Eq)]
pub enum Heard {
    /// Ours, looped back: ignored.
    Own,
    /// Dropped, for this reason.
    Dropped(&'static str),
    /// Records for the agent (possibly none), records skipped, and whether
    /// the message ends a full announcement.
    Records(Vec<SyncConn>, usize, bool),
}

/// Decides about a datagram from `from` (pure): the kernel's checks, plus
/// ignoring our own.
pub fn hear(settings: &Settings, from: Ipv4Addr, datagram: &[u8]) -> Heard {
    if from == settings.endpoint.local {
        return Heard::Own;
    }
    match codec::decode(datagram) {
        Err(e) => Heard::Dropped(e.reason()),
        // A receiver with sync id 0 accepts every id (ip_vs_process_message).
        Ok(m) if settings.syncid != 0 && m.syncid != settings.syncid => Heard::Dropped("syncid"),
        Ok(m) => {
            let pass_end = m.is_pass_end();
            Heard::Records(m.conns, m.skipped, pass_end)
        }
    }
}

async fn send_all(
    sock: &UdpSocket,
    settings: &Settings,
    conns: &[SyncConn],
    stats: &Mutex<SyncStats>,
) {
    for datagram in codec::encode(settings.syncid, conns, settings.maxlen) {
        send_datagram(sock, settings, &datagram, stats).await;
    }
}

/// Sends one encoded message to the group, counted as sent (with its
/// records) or as failed; whether it went out.
async fn send_datagram(
    sock: &UdpSocket,
    settings: &Settings,
    datagram: &[u8],
    stats: &Mutex<SyncStats>,
) -> bool {
    let to = SocketAddr::from((settings.endpoint.group, settings.endpoint.port));
    let sent = sock.send_to(datagram, to).await;
    let Ok(mut stats) = stats.lock() else {
        return false;
    };
    match sent {
        Ok(_) => {
            stats.sent_messages += 1;
            stats.sent_conns += u64::from(datagram[4]);
            true
        }
        Err(e) => {
            stats.drop_one("send_failed");
            warn!("sending a sync message failed: {e}");
            false
        }
    }
}

/// The daemon task's sockets and channels.
struct Io {
    sender: UdpSocket,
    receiver: UdpSocket,
    out: mpsc::Receiver<Vec<SyncConn>>,
    passes: mpsc::Receiver<Vec<SyncConn>>,
    received: mpsc::Sender<Inbound>,
}

/// Records of a full announcement sent per PASS_TICK: PASS_RATE's share,
/// in whole datagrams.
fn pass_share(batch: usize) -> usize {
    let per_tick = PASS_RATE * PASS_TICK.as_millis() as usize / 1000;
    (per_tick / batch).max(1) * batch
}

async fn run(
    settings: Settings,
    mut io: Io,
    stats: Arc<Mutex<SyncStats>>,
    announcing: Arc<AtomicBool>,
) {
    let batch = codec::records_per_message(settings.maxlen);
    let share = pass_share(batch);
    let mut pending: Vec<SyncConn> = Vec::new();
    // The full announcement going out, and how far.
    let mut pass: Option<(Vec<SyncConn>, usize)> = None;
    let mut flush = tokio::time::interval(FLUSH_INTERVAL);
    let mut pace = tokio::time::interval(PASS_TICK);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            more = io.out.recv() => {
                let Some(more) = more else { return };
                pending.extend(more);
                if pending.len() >= batch {
                    let full = pending.len() / batch * batch;
                    let rest = pending.split_off(full);
                    send_all(&io.sender, &settings, &pending, &stats).await;
                    pending = rest;
                }
            }
            next = io.passes.recv(), if pass.is_none() => {
                let Some(next) = next else { return };
                pass = Some((next, 0));
            }
            _ = pace.tick(), if pass.is_some() => {
                let Some((conns, at)) = pass.as_mut() else { continue };
                let end = (*at + share).min(conns.len());
                send_all(&io.sender, &settings, &conns[*at..end], &stats).await;
                *at = end;
                if end == conns.len() {
                    send_pass_end(&io.sender, &settings, &stats).await;
                    pass = None;
                    announcing.store(false, Ordering::Release);
                }
            }
            _ = flush.tick() => {
                if !pending.is_empty() {
                    send_all(&io.sender, &settings, &pending, &stats).await;
                    pending.clear();
                }
            }
            heard = io.receiver.recv_from(&mut buf) => {
                let Ok((len, SocketAddr::V4(from))) = heard else { continue };
                let from = *from.ip();
                let verdict = hear(&settings, from, &buf[..len]);
                let inbound = {
                    let Ok(mut s) = stats.lock() else { return };
                    match verdict {
                        Heard::Own => continue,
                        Heard::Dropped(reason) => {
                            s.drop_one(reason);
                            continue;
                        }
                        Heard::Records(conns, skipped, pass_end) => {
                            s.received_messages += 1;
                            s.received_conns += conns.len() as u64;
                            let peer = s.peers.entry(from).or_default();
                            peer.messages += 1;
                            peer.full_passes += u64::from(pass_end);
                            for _ in 0..skipped {
                                s.drop_one("skipped_record");
                            }
                            Inbound { from, conns, pass_end }
                        }
                    }
                };
                // Empty messages too: the agent counts peers and ends in
                // order with the records before them.
                if io.received.try_send(inbound).is_err()
                    && let Ok(mut s) = stats.lock()
                {
                    s.drop_one("receive_queue_full");
                }
            }
        }
    }
}

/// The empty message that ends a full announcement.
async fn send_pass_end(sock: &UdpSocket, settings: &Settings, stats: &Mutex<SyncStats>) {
    let end = codec::encode_pass_end(settings.syncid);
    if send_datagram(sock, settings, &end, stats).await
        && let Ok(mut stats) = stats.lock()
    {
        stats.full_passes_sent += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::codec::encode;

    fn settings(syncid: u8) -> Settings {
        Settings {
            endpoint: Endpoint {
                ifindex: 2,
                local: Ipv4Addr::new(172, 16, 122, 188),
                group: codec::SYNC_GROUP,
                port: codec::SYNC_PORT,
                ttl: 1,
            },
            syncid,
            maxlen: 1472,
        }
    }

    fn record() -> SyncConn {
        codec::seed_conn(40000)
    }

    #[test]
    fn what_a_backup_keeps_of_what_it_hears() {
        let peer = Ipv4Addr::new(172, 16, 122, 189);
        let msg = encode(51, &[record()], 1472).remove(0);
        assert_eq!(
            hear(&settings(51), peer, &msg),
            Heard::Records(vec![record()], 0, false)
        );
        // Sync id 0 accepts every id; another id is a stranger's.
        assert!(matches!(hear(&settings(0), peer, &msg), Heard::Records(..)));
        assert_eq!(hear(&settings(52), peer, &msg), Heard::Dropped("syncid"));
        // Our own message, looped back.
        assert_eq!(
            hear(&settings(51), settings(51).endpoint.local, &msg),
            Heard::Own
        );
        // Garbage: dropped with the codec's reason.
        assert_eq!(
            hear(&settings(51), peer, &msg[..5]),
            Heard::Dropped("size_mismatch")
        );
        assert_eq!(
            hear(&settings(51), peer, &[1, 2]),
            Heard::Dropped("truncated")
        );
    }

    #[test]
    fn the_end_of_an_announcement_is_heard_as_such() {
        let peer = Ipv4Addr::new(172, 16, 122, 189);
        let end = codec::encode_pass_end(51);
        assert_eq!(
            hear(&settings(51), peer, &end),
            Heard::Records(Vec::new(), 0, true)
        );
        // A stranger's end is a stranger's.
        assert_eq!(hear(&settings(52), peer, &end), Heard::Dropped("syncid"));
    }

    #[test]
    fn an_announcement_goes_out_in_whole_datagrams_at_its_pace() {
        // 1000 records per 10 ms tick: 25 datagrams of 40.
        assert_eq!(pass_share(40), 1000);
        assert_eq!(pass_share(255), 765);
        // A share is never less than a datagram.
        assert_eq!(pass_share(2000), 2000);
        assert_eq!(
            pass_share(40) * (Duration::from_secs(1).as_millis() / PASS_TICK.as_millis()) as usize,
            PASS_RATE
        );
    }

    #[test]
    fn datagrams_hold_as_many_records_as_maxlen_allows() {
        assert_eq!(codec::records_per_message(1472), 40);
        assert_eq!(codec::records_per_message(44), 1);
        assert_eq!(codec::records_per_message(65_507), 255);
    }
}
