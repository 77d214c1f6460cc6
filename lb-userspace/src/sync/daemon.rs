//! The sync daemon task (the kernel's master and backup sync threads in
//! one): records the agent hands it are batched into datagrams of at most
//! maxlen bytes and sent at once when a datagram is full, else at the next
//! flush tick; datagrams heard on the group are decoded, filtered (our own,
//! a stranger's sync id) and handed to the agent, which applies them.
//! Everything it does is counted in SyncStats.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
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
    /// Source addresses sync messages came from.
    pub peers: BTreeSet<Ipv4Addr>,
    /// Datagrams or records dropped, by reason.
    pub drops: BTreeMap<String, u64>,
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
    pub received: mpsc::Receiver<Vec<SyncConn>>,
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
        let (in_tx, received) = mpsc::channel(IN_QUEUE);
        let stats = Arc::new(Mutex::new(SyncStats {
            syncid: settings.syncid,
            ..SyncStats::default()
        }));
        let task = tokio::spawn(run(
            settings,
            sender,
            receiver,
            out_rx,
            in_tx,
            stats.clone(),
        ))
        .abort_handle();
        Ok(Self {
            settings,
            out,
            received,
            stats,
            task,
        })
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
    /// Records for the agent (possibly none).
    Records(Vec<SyncConn>, usize),
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
        Ok(m) => Heard::Records(m.conns, m.skipped),
    }
}

async fn send_all(
    sock: &UdpSocket,
    settings: &Settings,
    conns: &[SyncConn],
    stats: &Mutex<SyncStats>,
) {
    let to = SocketAddr::from((settings.endpoint.group, settings.endpoint.port));
    for datagram in codec::encode(settings.syncid, conns, settings.maxlen) {
        let sent = sock.send_to(&datagram, to).await;
        let Ok(mut stats) = stats.lock() else {
            return;
        };
        match sent {
            Ok(_) => {
                stats.sent_messages += 1;
                stats.sent_conns += u64::from(datagram[4]);
            }
            Err(e) => {
                stats.drop_one("send_failed");
                warn!("sending a sync message failed: {e}");
            }
        }
    }
}

async fn run(
    settings: Settings,
    sender: UdpSocket,
    receiver: UdpSocket,
    mut out: mpsc::Receiver<Vec<SyncConn>>,
    received: mpsc::Sender<Vec<SyncConn>>,
    stats: Arc<Mutex<SyncStats>>,
) {
    let batch = codec::records_per_message(settings.maxlen);
    let mut pending: Vec<SyncConn> = Vec::new();
    let mut flush = tokio::time::interval(FLUSH_INTERVAL);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            more = out.recv() => {
                let Some(more) = more else { return };
                pending.extend(more);
                if pending.len() >= batch {
                    let full = pending.len() / batch * batch;
                    let rest = pending.split_off(full);
                    send_all(&sender, &settings, &pending, &stats).await;
                    pending = rest;
                }
            }
            _ = flush.tick() => {
                if !pending.is_empty() {
                    send_all(&sender, &settings, &pending, &stats).await;
                    pending.clear();
                }
            }
            heard = receiver.recv_from(&mut buf) => {
                let Ok((len, SocketAddr::V4(from))) = heard else { continue };
                let verdict = hear(&settings, *from.ip(), &buf[..len]);
                let records = {
                    let Ok(mut s) = stats.lock() else { return };
                    match verdict {
                        Heard::Own => continue,
                        Heard::Dropped(reason) => {
                            s.drop_one(reason);
                            continue;
                        }
                        Heard::Records(conns, skipped) => {
                            s.received_messages += 1;
                            s.received_conns += conns.len() as u64;
                            s.peers.insert(*from.ip());
                            for _ in 0..skipped {
                                s.drop_one("skipped_record");
                            }
                            conns
                        }
                    }
                };
                if !records.is_empty() && received.try_send(records).is_err()
                    && let Ok(mut s) = stats.lock()
                {
                    s.drop_one("receive_queue_full");
                }
            }
        }
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
            Heard::Records(vec![record()], 0)
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
    fn datagrams_hold_as_many_records_as_maxlen_allows() {
        assert_eq!(codec::records_per_message(1472), 40);
        assert_eq!(codec::records_per_message(44), 1);
        assert_eq!(codec::records_per_message(65_507), 255);
    }
}
