//! One peer's session: a tokio task that connects, runs the
//! [`Fsm`](super::fsm::Fsm) over the connection and keeps the peer's
//! Adj-RIB-Out equal to the speaker's prefixes, sending changes the moment
//! they happen (no MRAI delay: a VIP move must reach the router at once).

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{oneshot, watch};
use tracing::{debug, info, warn};

use super::codec::{self, err, DecodeError, Family, Message, Notification};
use super::config::{PeerConfig, SpeakerConfig};
use super::fsm::{Action, Fsm, FsmConfig, State};
use super::rib::{export_for, Export, Withheld};
use super::sockopt;

/// How long one write may block (a peer that stopped reading is caught
/// by its hold timer, but a write must not outlast it).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// After our NOTIFICATION: how long to wait for the peer to close, so the
/// message is read before the connection goes (closing with unread data
/// would send a reset that can destroy it).
const LINGER: Duration = Duration::from_millis(500);

/// Message counters of one peer, since the speaker started it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerCounters {
    pub messages_sent: u64,
    pub messages_received: u64,
    pub updates_sent: u64,
    pub updates_received: u64,
    pub keepalives_sent: u64,
    pub keepalives_received: u64,
    pub notifications_sent: u64,
    pub notifications_received: u64,
    /// Received UPDATEs dropped as malformed (RFC 7606 treat-as-withdraw).
    pub updates_discarded: u64,
    pub connect_attempts: u64,
    /// How often the session reached Established.
    pub established: u64,
}

/// A snapshot of one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub name: String,
    pub address: IpAddr,
    pub port: u16,
    pub remote_as: u32,
    pub state: State,
    /// When the current state was entered.
    pub since: SystemTime,
    /// Time in the current state (the session's uptime when Established).
    pub uptime: Duration,
    /// Why the last session or connection attempt ended, e.g.
    /// "connect: Connection refused (os error 111)", "hold timer expired",
    /// "NOTIFICATION received: Cease/Administrative Shutdown".
    pub last_error: Option<String>,
    /// Our end of the connection, while there is one.
    pub local_address: Option<SocketAddr>,
    /// The peer's BGP identifier, from OpenConfirm on.
    pub peer_id: Option<Ipv4Addr>,
    /// Negotiated hold time and keepalive interval, from OpenConfirm on.
    pub hold_time: Option<u16>,
    pub keepalive: Option<u16>,
    /// Families both ends negotiated.
    pub families: Vec<Family>,
    /// Families whose prefixes this session carries (negotiated, with a
    /// next hop): empty unless Established.
    pub exportable: Vec<Family>,
    /// Prefixes currently advertised to this peer.
    pub advertised: Vec<IpNet>,
    /// Why some of the speaker's prefixes are not advertised to this
    /// peer, e.g. no IPv6 next hop on an IPv4 session.
    pub notes: Vec<String>,
    pub counters: PeerCounters,
}

/// The shared, live status of a peer (the task writes, `peers()` reads).
#[derive(Debug)]
pub(crate) struct StatusCell {
    pub status: PeerStatus,
    pub since: Instant,
}

impl StatusCell {
    pub fn new(cfg: &PeerConfig) -> StatusCell {
        StatusCell {
            status: PeerStatus {
                name: cfg.name.clone(),
                address: cfg.address,
                port: cfg.port,
                remote_as: cfg.remote_as,
                state: State::Idle,
                since: SystemTime::now(),
                uptime: Duration::ZERO,
                last_error: None,
                local_address: None,
                peer_id: None,
                hold_time: None,
                keepalive: None,
                families: vec![],
                exportable: vec![],
                advertised: vec![],
                notes: vec![],
                counters: PeerCounters::default(),
            },
            since: Instant::now(),
        }
    }

    pub fn snapshot(&self) -> PeerStatus {
        let mut s = self.status.clone();
        s.uptime = self.since.elapsed();
        s
    }
}

/// Why a peer task is told to end; each says goodbye with its own Cease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    Shutdown,
    Deconfigured,
    Reconfigured,
}

impl StopReason {
    fn notification(self) -> Notification {
        match self {
            StopReason::Shutdown => Notification::cease(
                err::CEASE_ADMIN_SHUTDOWN,
                Some("furrow: BGP speaker shutting down"),
            ),
            StopReason::Deconfigured => Notification::cease(err::CEASE_PEER_DECONFIGURED, None),
            StopReason::Reconfigured => Notification::cease(err::CEASE_OTHER_CONFIG_CHANGE, None),
        }
    }
}

type Connecting = Pin<Box<dyn Future<Output = Result<TcpStream, String>> + Send>>;

struct Conn {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    local: SocketAddr,
    buf: Vec<u8>,
    /// The last message we sent was a NOTIFICATION: close gracefully.
    said_goodbye: bool,
}

enum Event {
    Stop(StopReason),
    Connected(Result<TcpStream, String>),
    Read(io::Result<usize>),
    Timer,
    RibChanged,
}

pub(crate) struct PeerTask {
    cfg: PeerConfig,
    speaker: Arc<SpeakerConfig>,
    fsm: Fsm,
    status: Arc<Mutex<StatusCell>>,
    rib: watch::Receiver<BTreeSet<IpNet>>,
    conn: Option<Conn>,
    connecting: Option<Connecting>,
    /// Export rules of the established session.
    export: Option<Export>,
    /// The Adj-RIB-Out: what this peer has been told.
    sent: BTreeSet<IpNet>,
    /// Families this session cannot carry, and why.
    withheld: Vec<Withheld>,
    notes: Vec<String>,
    counters: PeerCounters,
    shown_state: State,
    /// FSM actions not carried out yet.
    pending: VecDeque<Action>,
    /// The task is ending: goodbyes are awaited, not backgrounded.
    stopping: bool,
}

async fn maybe_connect(c: &mut Option<Connecting>) -> Result<TcpStream, String> {
    match c.as_mut() {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn maybe_read(c: &mut Option<Conn>, tmp: &mut [u8]) -> io::Result<usize> {
    match c.as_mut() {
        Some(c) => c.rd.read(tmp).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// Opens the TCP connection: MD5 key and source address set before the
/// SYN goes out.
async fn connect(
    addr: SocketAddr,
    local: Option<IpAddr>,
    password: Option<String>,
) -> Result<TcpStream, String> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| format!("socket: {e}"))?;
    if let Some(pw) = password {
        sockopt::set_md5_key(sock.as_raw_fd(), addr.ip(), pw.as_bytes())
            .map_err(|e| format!("TCP MD5 (setsockopt TCP_MD5SIG): {e}"))?;
    }
    if let Err(e) = sockopt::set_network_control(sock.as_raw_fd(), addr.is_ipv6()) {
        debug!(error = %e, "cannot mark BGP traffic CS6");
    }
    if let Some(l) = local {
        sock.bind(SocketAddr::new(l, 0))
            .map_err(|e| format!("bind {l}: {e}"))?;
    }
    let stream = sock
        .connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    // Keepalives and UPDATEs are small and urgent.
    stream
        .set_nodelay(true)
        .map_err(|e| format!("TCP_NODELAY: {e}"))?;
    Ok(stream)
}

impl PeerTask {
    pub fn new(
        speaker: Arc<SpeakerConfig>,
        cfg: PeerConfig,
        status: Arc<Mutex<StatusCell>>,
        rib: watch::Receiver<BTreeSet<IpNet>>,
    ) -> PeerTask {
        let fsm = Fsm::new(
            FsmConfig {
                local_as: speaker.local_as,
                remote_as: cfg.remote_as,
                router_id: speaker.router_id,
                hold_time: cfg.hold_time.unwrap_or(speaker.hold_time),
                keepalive: speaker.keepalive,
                connect_retry: speaker.connect_retry,
                families: vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST],
            },
            Instant::now(),
        );
        PeerTask {
            cfg,
            speaker,
            fsm,
            status,
            rib,
            conn: None,
            connecting: None,
            export: None,
            sent: BTreeSet::new(),
            withheld: vec![],
            notes: vec![],
            counters: PeerCounters::default(),
            shown_state: State::Idle,
            pending: VecDeque::new(),
            stopping: false,
        }
    }

    /// Runs the session until told to stop (or the speaker is dropped).
    pub async fn run(mut self, mut stop: oneshot::Receiver<StopReason>) {
        info!(peer = %self.cfg.name, address = %self.cfg.address, remote_as = self.cfg.remote_as, "BGP peer starting");
        let start = self.fsm.start(Instant::now());
        self.pending.extend(start);
        let mut tmp = vec![0u8; 8192];
        loop {
            self.execute().await;
            self.publish();
            let established = self.fsm.state() == State::Established;
            let deadline = self.fsm.next_deadline();
            let ev = tokio::select! {
                r = &mut stop => Event::Stop(r.unwrap_or(StopReason::Shutdown)),
                r = maybe_connect(&mut self.connecting) => Event::Connected(r),
                r = maybe_read(&mut self.conn, &mut tmp) => Event::Read(r),
                _ = sleep_until(deadline) => Event::Timer,
                r = self.rib.changed(), if established => match r {
                    Ok(()) => Event::RibChanged,
                    // The speaker is gone.
                    Err(_) => Event::Stop(StopReason::Shutdown),
                },
            };
            let now = Instant::now();
            match ev {
                Event::Stop(reason) => {
                    let n = reason.notification();
                    info!(peer = %self.cfg.name, reason = %n, "BGP peer stopping");
                    self.stopping = true;
                    let bye = self.fsm.stop(now, n);
                    self.pending.extend(bye);
                    self.execute().await;
                    self.publish();
                    return;
                }
                Event::Connected(r) => {
                    self.connecting = None;
                    match r {
                        Ok(stream) => self.connected(stream),
                        Err(e) => self.failed(e),
                    }
                }
                Event::Read(Ok(0)) => {
                    self.failed("connection closed by peer".to_string());
                }
                Event::Read(Ok(n)) => {
                    if let Some(c) = self.conn.as_mut() {
                        c.buf.extend_from_slice(&tmp[..n]);
                    }
                    self.process_input().await;
                }
                Event::Read(Err(e)) => {
                    self.failed(format!("read: {e}"));
                }
                Event::Timer => {
                    let due = self.fsm.poll(now);
                    self.pending.extend(due);
                }
                Event::RibChanged => self.sync().await,
            }
        }
    }

    /// The connection failed or broke.
    fn failed(&mut self, reason: String) {
        let a = self.fsm.connection_failed(Instant::now(), reason);
        self.pending.extend(a);
    }

    fn connected(&mut self, stream: TcpStream) {
        let local = match stream.local_addr() {
            Ok(l) => l,
            Err(e) => {
                self.failed(format!("getsockname: {e}"));
                return;
            }
        };
        debug!(peer = %self.cfg.name, %local, "TCP connection up");
        let (rd, wr) = stream.into_split();
        self.conn = Some(Conn {
            rd,
            wr,
            local,
            buf: Vec::with_capacity(4096),
            said_goodbye: false,
        });
        let a = self.fsm.connected(Instant::now());
        self.pending.extend(a);
    }

    /// The next whole message in the input buffer, if any.
    fn next_frame(&mut self) -> Option<Result<Vec<u8>, DecodeError>> {
        let c = self.conn.as_mut()?;
        match codec::frame_len(&c.buf) {
            Ok(None) => None,
            Ok(Some(len)) => Some(Ok(c.buf.drain(..len).collect())),
            Err(e) => {
                // Framing is lost: nothing after this can be read.
                c.buf.clear();
                Some(Err(e))
            }
        }
    }

    async fn process_input(&mut self) {
        while let Some(frame) = self.next_frame() {
            let now = Instant::now();
            let decoded = frame.and_then(|bytes| {
                self.counters.messages_received += 1;
                codec::decode(&bytes, self.fsm.codec_options())
            });
            match decoded {
                Ok(msg) => {
                    match &msg {
                        Message::Update(_) => self.counters.updates_received += 1,
                        Message::Keepalive => self.counters.keepalives_received += 1,
                        Message::Notification(n) => {
                            self.counters.notifications_received += 1;
                            warn!(peer = %self.cfg.name, notification = %n, "NOTIFICATION received");
                        }
                        _ => {}
                    }
                    let a = self.fsm.received(now, msg);
                    self.pending.extend(a);
                }
                Err(e) => {
                    if e.resets_session() {
                        warn!(peer = %self.cfg.name, error = %e, "malformed message; closing the session");
                    } else {
                        self.counters.updates_received += 1;
                        self.counters.updates_discarded += 1;
                        warn!(peer = %self.cfg.name, error = %e, "malformed UPDATE discarded (RFC 7606)");
                    }
                    let a = self.fsm.decode_failed(now, &e);
                    self.pending.extend(a);
                }
            }
            // Act before reading on: a Close drops what follows.
            self.execute().await;
            if self.conn.is_none() {
                break;
            }
        }
    }

    async fn execute(&mut self) {
        while let Some(a) = self.pending.pop_front() {
            match a {
                Action::Connect => {
                    self.close(false).await;
                    self.counters.connect_attempts += 1;
                    let addr = SocketAddr::new(self.cfg.address, self.cfg.port);
                    self.connecting = Some(Box::pin(connect(
                        addr,
                        self.cfg.local_address,
                        self.cfg.password.clone(),
                    )));
                }
                Action::Send(m) => {
                    if let Err(e) = self.send(&m).await {
                        self.failed(format!("write: {e}"));
                    }
                }
                Action::Close => {
                    self.connecting = None;
                    self.close(true).await;
                }
                Action::Established => self.established().await,
                Action::Refresh(family) => {
                    let again: Vec<IpNet> = self
                        .sent
                        .iter()
                        .filter(|p| Family::of(p) == family)
                        .copied()
                        .collect();
                    debug!(peer = %self.cfg.name, %family, prefixes = again.len(), "ROUTE-REFRESH");
                    if let Some(ex) = self.export.clone() {
                        self.send_updates(ex.announce(&again)).await;
                    }
                }
            }
        }
        if self.fsm.state() != State::Established {
            self.export = None;
            self.sent.clear();
            self.notes.clear();
        }
    }

    async fn send(&mut self, m: &Message) -> io::Result<()> {
        let Some(c) = self.conn.as_mut() else {
            return Ok(());
        };
        let bytes = m
            .encode(self.fsm.codec_options())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        tokio::time::timeout(WRITE_TIMEOUT, c.wr.write_all(&bytes))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "timed out"))??;
        c.said_goodbye = matches!(m, Message::Notification(_));
        self.counters.messages_sent += 1;
        match m {
            Message::Update(_) => self.counters.updates_sent += 1,
            Message::Keepalive => self.counters.keepalives_sent += 1,
            Message::Notification(n) => {
                self.counters.notifications_sent += 1;
                warn!(peer = %self.cfg.name, notification = %n, "NOTIFICATION sent");
            }
            _ => {}
        }
        Ok(())
    }

    /// Drops the connection. After our NOTIFICATION (and if `graceful`)
    /// it is half-closed and kept until the peer closes (at most
    /// [`LINGER`]): in the background, so the session's state moves on at
    /// once, or, when the task is stopping, before it ends (so a
    /// shutdown's goodbye is delivered when `shutdown` returns).
    async fn close(&mut self, graceful: bool) {
        let Some(c) = self.conn.take() else {
            return;
        };
        if !(graceful && c.said_goodbye) {
            return;
        }
        let linger = async move {
            let Conn { mut rd, mut wr, .. } = c;
            let _ = wr.shutdown().await;
            let mut sink = [0u8; 1024];
            while let Ok(n) = rd.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        };
        let linger = async move {
            let _ = tokio::time::timeout(LINGER, linger).await;
        };
        if self.stopping {
            linger.await;
        } else {
            tokio::spawn(linger);
        }
    }

    async fn established(&mut self) {
        let (Some(n), Some(c)) = (self.fsm.negotiated().cloned(), self.conn.as_ref()) else {
            return;
        };
        let (export, withheld) = export_for(
            self.speaker.local_as,
            self.cfg.remote_as,
            &n.families,
            n.four_octet_as,
            c.local.ip(),
            self.cfg.next_hop_v4,
            self.cfg.next_hop_v6,
        );
        self.counters.established += 1;
        self.export = Some(export);
        self.sent.clear();
        self.withheld = withheld;
        self.sync().await;
    }

    /// Brings the peer's Adj-RIB-Out to the speaker's prefixes.
    async fn sync(&mut self) {
        let Some(ex) = self.export.clone() else {
            return;
        };
        let rib = self.rib.borrow_and_update().clone();
        let want = ex.filter(&rib);
        self.notes = self
            .withheld
            .iter()
            .filter(|w| rib.iter().any(|p| w.family() == Family::of(p)))
            .map(|w| w.to_string())
            .collect();
        let gone: Vec<IpNet> = self.sent.difference(&want).copied().collect();
        let new: Vec<IpNet> = want.difference(&self.sent).copied().collect();
        if gone.is_empty() && new.is_empty() {
            return;
        }
        if !gone.is_empty() {
            info!(peer = %self.cfg.name, prefixes = ?gone, "withdrawing");
            if self.send_updates(ex.withdraw(&gone)).await {
                for p in &gone {
                    self.sent.remove(p);
                }
            }
        }
        if !new.is_empty() && self.fsm.state() == State::Established {
            info!(peer = %self.cfg.name, prefixes = ?new, "advertising");
            if self.send_updates(ex.announce(&new)).await {
                self.sent.extend(new);
            }
        }
    }

    /// Sends UPDATEs; false (and the session failing) if a write failed.
    async fn send_updates(&mut self, updates: Vec<codec::Update>) -> bool {
        for u in updates {
            if let Err(e) = self.send(&Message::Update(u)).await {
                // Carried out by the caller's (or the next) execute().
                self.failed(format!("write: {e}"));
                return false;
            }
            self.fsm.sent_update(Instant::now());
        }
        true
    }

    /// Copies the session's state into the shared status; logs changes.
    fn publish(&mut self) {
        let state = self.fsm.state();
        if state != self.shown_state {
            if self.shown_state == State::Established {
                warn!(peer = %self.cfg.name, state = %state, error = self.fsm.last_error().unwrap_or(""), "BGP session down");
            } else if state == State::Established {
                info!(peer = %self.cfg.name, state = %state, "BGP session established");
            } else {
                debug!(peer = %self.cfg.name, state = %state, from = %self.shown_state, "BGP state");
            }
            self.shown_state = state;
        }
        let Ok(mut cell) = self.status.lock() else {
            return;
        };
        if cell.since != self.fsm.since() {
            // The wall-clock time of the transition, computed once.
            cell.since = self.fsm.since();
            let ago = cell.since.elapsed();
            cell.status.since = SystemTime::now()
                .checked_sub(ago)
                .unwrap_or(SystemTime::UNIX_EPOCH);
        }
        let s = &mut cell.status;
        s.state = state;
        s.last_error = self.fsm.last_error().map(str::to_string);
        s.local_address = self.conn.as_ref().map(|c| c.local);
        let n = self.fsm.negotiated();
        s.peer_id = n.map(|n| n.peer_id);
        s.hold_time = n.map(|n| n.hold_time);
        s.keepalive = n.map(|n| n.keepalive);
        s.families = n.map(|n| n.families.clone()).unwrap_or_default();
        s.exportable = if state == State::Established {
            s.families
                .iter()
                .filter(|f| !self.withheld.iter().any(|w| w.family() == **f))
                .copied()
                .collect()
        } else {
            Vec::new()
        };
        s.advertised = self.sent.iter().copied().collect();
        s.notes = self.notes.clone();
        s.counters = self.counters;
    }
}
