//! A paced UDP flow with sequence numbers between two namespaces: what
//! the hitless restart tests measure loss with. The sender sends datagram
//! `n` at `start + n / rate` (catching up after a late wake-up, never
//! skipping a number); the receiver records every number it gets. A
//! number sent and never received is a lost packet, whatever the cause
//! (the datapath, a send error, a full socket buffer).

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::Netns;

/// Datagram size (the sequence number, then zeroes).
const PAYLOAD: usize = 64;
/// How long the receiver waits for stragglers after the sender stopped.
const DRAIN: Duration = Duration::from_millis(500);

pub struct Flow {
    name: String,
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    sender: JoinHandle<anyhow::Result<(u64, u64)>>,
    receiver: JoinHandle<anyhow::Result<Vec<u64>>>,
}

/// What a flow saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowReport {
    pub name: String,
    pub sent: u64,
    /// Distinct sequence numbers received.
    pub received: u64,
    /// Sequence numbers sent and never received (at most the first 50).
    pub lost: Vec<u64>,
    pub lost_count: u64,
    /// sendto() failures (their numbers count as lost).
    pub send_errors: u64,
}

fn enter(ns: &Netns) -> anyhow::Result<File> {
    File::open(ns.path()).with_context(|| format!("opening netns {}", ns.name))
}

impl Flow {
    /// Starts a flow of `rate` datagrams per second from `from` to
    /// `to_ip:port` (an address of `to`). Returns once the receiver is
    /// bound.
    pub fn start(
        name: &str,
        from: &Netns,
        to: &Netns,
        to_ip: Ipv4Addr,
        port: u16,
        rate: u32,
    ) -> anyhow::Result<Flow> {
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();

        let to_file = enter(to)?;
        let (stop_r, recv_r) = (stop.clone(), received.clone());
        let receiver = std::thread::spawn(move || -> anyhow::Result<Vec<u64>> {
            nix::sched::setns(&to_file, nix::sched::CloneFlags::CLONE_NEWNET)?;
            let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
            let sock = match sock {
                Ok(s) => {
                    let _ = bound_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = bound_tx.send(Err(e.to_string()));
                    anyhow::bail!("binding the receiver: {e}");
                }
            };
            sock.set_read_timeout(Some(Duration::from_millis(50)))?;
            let mut seen = Vec::new();
            let mut buf = [0u8; 2048];
            let mut stopped_at: Option<Instant> = None;
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) if n >= 8 => {
                        let seq = u64::from_be_bytes(buf[..8].try_into().unwrap());
                        seen.push(seq);
                        recv_r.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => return Err(e.into()),
                }
                if stop_r.load(Ordering::SeqCst) {
                    let t = *stopped_at.get_or_insert_with(Instant::now);
                    if t.elapsed() > DRAIN {
                        return Ok(seen);
                    }
                }
            }
        });
        match bound_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => anyhow::bail!("flow {name}: receiver: {e}"),
            Err(_) => anyhow::bail!("flow {name}: receiver did not start"),
        }

        let from_file = enter(from)?;
        let stop_s = stop.clone();
        let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
        let sender = std::thread::spawn(move || -> anyhow::Result<(u64, u64)> {
            nix::sched::setns(&from_file, nix::sched::CloneFlags::CLONE_NEWNET)?;
            let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
            let dst = SocketAddrV4::new(to_ip, port);
            let mut buf = [0u8; PAYLOAD];
            let (mut seq, mut errors) = (0u64, 0u64);
            let start = Instant::now();
            while !stop_s.load(Ordering::SeqCst) {
                let due = start + interval * seq as u32;
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                buf[..8].copy_from_slice(&seq.to_be_bytes());
                // Unconnected: an ICMP error must not fail later sends.
                if sock.send_to(&buf, dst).is_err() {
                    errors += 1;
                }
                seq += 1;
            }
            Ok((seq, errors))
        });
        Ok(Flow {
            name: name.to_string(),
            stop,
            received,
            sender,
            receiver,
        })
    }

    /// Datagrams received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Stops the sender, lets the last datagrams arrive, and reports.
    pub fn stop(self) -> anyhow::Result<FlowReport> {
        self.stop.store(true, Ordering::SeqCst);
        let (sent, send_errors) = self
            .sender
            .join()
            .map_err(|_| anyhow::anyhow!("flow {}: sender panicked", self.name))??;
        let seen = self
            .receiver
            .join()
            .map_err(|_| anyhow::anyhow!("flow {}: receiver panicked", self.name))??;
        let mut got = vec![false; sent as usize];
        let mut received = 0;
        for s in seen {
            if let Some(slot) = got.get_mut(s as usize) {
                if !*slot {
                    *slot = true;
                    received += 1;
                }
            }
        }
        let missing: Vec<u64> = (0..sent).filter(|s| !got[*s as usize]).collect();
        Ok(FlowReport {
            name: self.name,
            sent,
            received,
            lost_count: missing.len() as u64,
            lost: missing.into_iter().take(50).collect(),
            send_errors,
        })
    }
}
