//! The etcd store: the same revisioned key space, shared by every node
//! that points at one etcd cluster.
//!
//! Key scheme: the etcd key is `<prefix><store key>`. Store keys always
//! start with '/' (`/furrow/resources/...`, see keys.rs), the prefix is
//! empty (the default: etcd holds exactly the keys.rs layout) or a path
//! like `/clusters/a` without a trailing '/'. So several Furrow clusters
//! or test runs share one etcd without seeing each other's keys:
//! `/clusters/a/furrow/...` and `/clusters/ab/furrow/...` never overlap
//! because the store key after the prefix starts with '/'.
//!
//! Revisions are etcd's own (cluster-wide, shared with anything else in
//! that etcd), so they grow by more than one per write when others write
//! too; nothing above relies on them being dense.
//!
//! Every call carries a deadline, so a dead or leaderless cluster answers
//! `StoreError::Unavailable` (CNI "try again later") within a few seconds
//! instead of hanging an ADD. Reconnection is the client's: its channel
//! redials the endpoints on the next call.
//!
//! Watches: one etcd watch over the whole namespace, opened when the
//! store is, feeds the same broadcast channel the embedded store uses.
//! After a disconnect it resumes from the revision after the last event
//! it saw, so nothing is lost; if etcd compacted that history away, every
//! `Watch` gets `Lagged` and its owner re-lists. Because that stream runs
//! a little behind etcd, a new `Watch` may also get events committed
//! just before it was made — harmless for watchers that re-read state on
//! every event, which is how netd uses them.
//!
//! Writes are never retried once they may have reached etcd: a txn that
//! times out may still commit, and re-sending a create-if-absent claim
//! would then report "taken" to the very node that took it. The caller
//! sees Unavailable and decides.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, ConnectOptions, EventType, GetOptions, KvClient,
    TxnOp, WatchClient, WatchOptions,
};
use tokio::sync::{broadcast, watch};
use tonic::Code;

use super::{
    Compare, KeyValue, Op, Revision, Store, StoreError, Txn, TxnOutcome, Watch, WatchEvent,
};

/// Deadline of one call to etcd unless configured otherwise: long enough
/// for a leader election (about a second with etcd's defaults), short
/// enough that a CNI ADD fails fast when the cluster is gone.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Keys per page when listing: keeps each response well under gRPC's
/// 4 MiB message limit with resource documents of a few KiB.
const LIST_PAGE: i64 = 500;

/// HTTP/2 pings on the connection so a watch on a silently dead member is
/// noticed. etcd refuses pings more often than every 5 s.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(100);
const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Where the etcd store lives and how to reach it.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// `http://host:port` or `https://host:port`.
    pub endpoints: Vec<String>,
    /// Prepended to every key; empty or `/path` without a trailing '/'.
    pub prefix: String,
    /// Deadline of each call.
    pub timeout: Duration,
    pub tls: EtcdTls,
}

/// PEM files for TLS. Only the paths are kept (and may be logged); the
/// contents are read when connecting and go straight to the TLS stack.
#[derive(Debug, Clone, Default)]
pub struct EtcdTls {
    /// CA bundle that signed the etcd servers' certificates.
    pub ca: Option<PathBuf>,
    /// Client certificate and key, when etcd asks for client auth.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl EtcdTls {
    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }
}

impl EtcdConfig {
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdConfig {
            endpoints,
            prefix: String::new(),
            timeout: DEFAULT_TIMEOUT,
            tls: EtcdTls::default(),
        }
    }

    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Checks what can be checked without connecting.
    pub fn validate(&self) -> Result<(), EtcdConfigError> {
        let bad = |field, msg: String| Err(EtcdConfigError { field, msg });
        if self.endpoints.is_empty() {
            return bad(ConfigField::Endpoints, "no etcd endpoints given".into());
        }
        for e in &self.endpoints {
            let scheme_ok = e.starts_with("http://") || e.starts_with("https://");
            if !scheme_ok || e.contains(',') {
                return bad(
                    ConfigField::Endpoints,
                    format!("{e:?}: expected http://host:port or https://host:port"),
                );
            }
            if self.tls.is_set() && !e.starts_with("https://") {
                return bad(
                    ConfigField::Endpoints,
                    format!("{e:?}: TLS files are given, use https://"),
                );
            }
        }
        let p = &self.prefix;
        if !p.is_empty() && (!p.starts_with('/') || p.ends_with('/')) {
            return bad(
                ConfigField::Prefix,
                format!("{p:?}: expected empty or /path without a trailing '/'"),
            );
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return bad(
                ConfigField::Tls,
                "a client certificate needs its key and the other way round".into(),
            );
        }
        if self.timeout.is_zero() {
            return bad(ConfigField::Timeout, "must be above zero".into());
        }
        Ok(())
    }
}

/// The part of [`EtcdConfig`] at fault, so the command line can name its flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigField {
    Endpoints,
    Prefix,
    Tls,
    Timeout,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{field:?}: {msg}")]
pub struct EtcdConfigError {
    pub field: ConfigField,
    pub msg: String,
}

#[derive(Debug, thiserror::Error)]
pub enum EtcdOpenError {
    #[error("etcd configuration: {0}")]
    Config(#[from] EtcdConfigError),
    #[error("reading the etcd TLS {what} {}: {source}", path.display())]
    TlsFile {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("etcd client for {endpoints}: {msg}")]
    Client { endpoints: String, msg: String },
    #[error("etcd at {endpoints} does not answer: {source}")]
    Unreachable {
        endpoints: String,
        source: StoreError,
    },
}

/// Maps store keys to etcd keys and back.
#[derive(Debug, Clone)]
struct Namespace {
    prefix: String,
}

impl Namespace {
    fn key(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        if !key.starts_with('/') {
            return Err(StoreError::InvalidKey(key.to_string()));
        }
        Ok(format!("{}{key}", self.prefix).into_bytes())
    }

    /// `[start, end)` of every etcd key under the store prefix `prefix`.
    /// The empty prefix means the whole namespace (all keys start with '/').
    fn range(&self, prefix: &str) -> Result<(Vec<u8>, Vec<u8>), StoreError> {
        let start = self.key(if prefix.is_empty() { "/" } else { prefix })?;
        let end = prefix_end(&start);
        Ok((start, end))
    }

    fn strip(&self, raw: &[u8]) -> Option<String> {
        let s = std::str::from_utf8(raw).ok()?;
        s.strip_prefix(self.prefix.as_str())
            .filter(|k| k.starts_with('/'))
            .map(str::to_string)
    }
}

/// The first key after every key that starts with `p` (etcd's range end
/// for a prefix).
fn prefix_end(p: &[u8]) -> Vec<u8> {
    let mut end = p.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (never for our keys): to the end of the key space.
    vec![0]
}

pub struct EtcdStore {
    /// Kept whole: it owns the channel's endpoint set, which the clients
    /// below share.
    client: Client,
    ns: Namespace,
    endpoints: Vec<String>,
    caller: Caller,
    events: broadcast::Sender<WatchEvent>,
    lost: Arc<watch::Sender<u64>>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        // Ends the etcd watch; once the task's senders are gone every
        // `Watch` reports Closed.
        self.watcher.abort();
    }
}

impl EtcdStore {
    /// Connects and checks that etcd answers; watches start from now.
    pub async fn connect(cfg: &EtcdConfig) -> Result<Self, EtcdOpenError> {
        Self::connect_from(cfg, None).await
    }

    /// Like [`connect`](Self::connect), but the store's event stream
    /// starts at revision `from` (inclusive) instead of now: it replays
    /// history that is still there, or reports `Lagged` if it was
    /// compacted. Tests use it to reach the compaction path on purpose.
    pub async fn connect_from(
        cfg: &EtcdConfig,
        from: Option<Revision>,
    ) -> Result<Self, EtcdOpenError> {
        cfg.validate()?;
        let endpoints = cfg.endpoints.join(",");
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(cfg.timeout)
            .with_keep_alive(KEEPALIVE_INTERVAL, cfg.timeout)
            // A member cut off from its leader refuses at once instead of
            // waiting: the balanced channel then gets a clear error, and
            // a watch on it is cancelled so it moves to another member.
            .with_require_leader(true);
        if let Some(tls) = load_tls(&cfg.tls)? {
            opts = opts.with_tls(tls);
        }
        let client = Client::connect(&cfg.endpoints, Some(opts))
            .await
            .map_err(|e| EtcdOpenError::Client {
                endpoints: endpoints.clone(),
                msg: e.to_string(),
            })?;
        let ns = Namespace {
            prefix: cfg.prefix.clone(),
        };
        let caller = Caller {
            timeout: cfg.timeout,
            // Enough tries to get past the dead members of the set (each
            // try picks one at random), few enough that a cluster whose
            // members all refuse is reported in a few hundred ms.
            connect_retries: 2 + 2 * cfg.endpoints.len().max(1) as u32,
        };
        // Connecting is lazy: this first call is what proves etcd is there
        // (and fixes where the event stream starts).
        let start = match from {
            Some(r) => r.max(1),
            None => {
                current_revision(&client, &ns, caller)
                    .await
                    .map_err(|source| EtcdOpenError::Unreachable {
                        endpoints: endpoints.clone(),
                        source,
                    })?
                    + 1
            }
        };
        let (events, _) = broadcast::channel(4096);
        let lost = Arc::new(watch::Sender::new(0));
        let watcher = Watcher {
            client: client.watch_client(),
            ns: ns.clone(),
            events: events.clone(),
            lost: lost.clone(),
            timeout: cfg.timeout,
            next_rev: i64::try_from(start).unwrap_or(i64::MAX),
        };
        let watcher = tokio::spawn(watcher.run());
        tracing::info!(
            endpoints = %endpoints,
            prefix = %cfg.prefix,
            tls = cfg.tls.is_set(),
            watch_from = start,
            "connected to etcd"
        );
        Ok(EtcdStore {
            client,
            ns,
            endpoints: cfg.endpoints.clone(),
            caller,
            events,
            lost,
            watcher,
        })
    }

    fn kv(&self) -> KvClient {
        self.client.kv_client()
    }

    fn to_kv(&self, kv: &etcd_client::KeyValue) -> Option<KeyValue> {
        let key = self.ns.strip(kv.key())?;
        Some(KeyValue {
            key,
            value: kv.value().to_vec(),
            create_revision: rev(kv.create_revision()),
            mod_revision: rev(kv.mod_revision()),
        })
    }

    async fn list_once(&self, prefix: &str) -> Result<Vec<KeyValue>, StoreError> {
        let (start, end) = self.ns.range(prefix)?;
        let mut out = Vec::new();
        let mut from = start;
        // Every page reads at the first page's revision: one consistent
        // snapshot however many pages it takes.
        let mut at: i64 = 0;
        loop {
            let mut opts = GetOptions::new()
                .with_range(end.clone())
                .with_limit(LIST_PAGE);
            if at > 0 {
                opts = opts.with_revision(at);
            }
            let kv = self.kv();
            let resp = self
                .caller
                .call("list", Retry::Read, || {
                    let (mut kv, from, opts) = (kv.clone(), from.clone(), opts.clone());
                    async move { kv.get(from, Some(opts)).await }
                })
                .await?;
            if at == 0 {
                at = resp.header().map(|h| h.revision()).unwrap_or(0);
            }
            let kvs = resp.kvs();
            out.extend(kvs.iter().filter_map(|kv| self.to_kv(kv)));
            match kvs.last() {
                Some(last) if resp.more() => {
                    // The next key after `last`.
                    let mut next = last.key().to_vec();
                    next.push(0);
                    from = next;
                }
                _ => return Ok(out),
            }
        }
    }
}

/// Which failures a call may retry (within its deadline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Reads: any transient failure.
    Read,
    /// Writes: only failures that prove the request never reached a
    /// member that could apply it. Anything else (a timeout, a leader
    /// change mid-proposal) may have committed, so it goes back to the
    /// caller as Unavailable rather than being applied twice.
    Write,
    /// Writes the caller can recognise as already applied
    /// (`Txn::resendable`): any transient failure, and a send unanswered
    /// for `RESEND_AFTER`, is sent again. A follower holding a proposal
    /// for a leader that died answers only at the server's own timeout;
    /// the resend reaches the new leader a moment after the election.
    Resend,
}

/// How long a resendable write waits for an answer before sending again:
/// above etcd's default election timeout (1 s), so an ordinary slow
/// commit is not resent, and short enough that an ADD during a leader
/// change still answers well within the CNI runtime's patience.
const RESEND_AFTER: Duration = Duration::from_millis(1500);

/// How a failed call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// No connection to the chosen member: nothing was sent.
    Connect,
    /// The member has no leader and refused up front (we always send
    /// require-leader): nothing was applied.
    NoLeader,
    /// Broken connection, overload, election, ...: maybe applied.
    Transient,
    /// Not going to work on retry either.
    Permanent,
}

fn classify(e: &etcd_client::Error) -> Failure {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(s) => match s.code() {
            // tonic turns a failed dial into Unavailable carrying the
            // dialer's message; nothing richer survives to here.
            Code::Unavailable if s.message().contains("connect error") => Failure::Connect,
            Code::Unavailable if s.message().contains("no leader") => Failure::NoLeader,
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Cancelled
            // tonic reports broken connections as Unknown.
            | Code::Unknown => Failure::Transient,
            _ => Failure::Permanent,
        },
        E::TransportError(_) | E::IoError(_) => Failure::Transient,
        _ => Failure::Permanent,
    }
}

/// Runs etcd calls under a deadline (a dead cluster is an error after
/// `timeout`, never a hang) and retries what is safe to retry.
///
/// Why retry at all: the client balances over every endpoint, and tonic
/// keeps a member that refuses connections in the rotation, reporting
/// the refusal on the call. With one member of three down, a third of the
/// calls would fail although the cluster is fine.
#[derive(Debug, Clone, Copy)]
struct Caller {
    timeout: Duration,
    /// Connection failures tolerated per call before giving up early
    /// (all members down answers quickly instead of at the deadline).
    connect_retries: u32,
}

impl Caller {
    async fn call<T, F, Fut>(
        &self,
        op: &'static str,
        retry: Retry,
        mut f: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut connect_failures = 0u32;
        let mut attempt = 0u32;
        loop {
            let attempt_deadline = match retry {
                Retry::Resend => deadline.min(tokio::time::Instant::now() + RESEND_AFTER),
                _ => deadline,
            };
            let e = match tokio::time::timeout_at(attempt_deadline, f()).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => e,
                Err(_) if attempt_deadline < deadline => {
                    attempt += 1;
                    tracing::debug!(op, attempt, "etcd write unanswered; sending it again");
                    continue;
                }
                Err(_) => {
                    return Err(StoreError::Unavailable(format!(
                        "etcd {op}: no answer within {} ms",
                        self.timeout.as_millis()
                    )))
                }
            };
            attempt += 1;
            let failure = classify(&e);
            let again = match failure {
                Failure::Connect => {
                    connect_failures += 1;
                    connect_failures <= self.connect_retries
                }
                Failure::NoLeader => true,
                Failure::Transient => retry != Retry::Write,
                Failure::Permanent => false,
            };
            // Another member is usually one try away; an election takes
            // a while. Never sleep past the deadline.
            let pause = match failure {
                Failure::Connect if connect_failures <= 2 => Duration::ZERO,
                Failure::Connect => Duration::from_millis((10u64 << connect_failures).min(50)),
                _ => Duration::from_millis(50 << attempt.min(3)),
            };
            if !again || tokio::time::Instant::now() + pause >= deadline {
                if attempt > 1 {
                    tracing::debug!(op, attempts = attempt, error = %e, "etcd call failed");
                }
                return Err(map_error(op, e));
            }
            tracing::trace!(op, attempt, error = %e, "etcd call failed; retrying");
            tokio::time::sleep(pause).await;
        }
    }
}

async fn current_revision(
    client: &Client,
    ns: &Namespace,
    caller: Caller,
) -> Result<Revision, StoreError> {
    // Any read answers with the current revision in its header; a
    // count-only read of one key is the cheapest.
    let k = ns.key("/")?;
    let opts = GetOptions::new().with_count_only();
    let kv = client.kv_client();
    let resp = caller
        .call("revision", Retry::Read, || {
            let (mut kv, k, opts) = (kv.clone(), k.clone(), opts.clone());
            async move { kv.get(k, Some(opts)).await }
        })
        .await?;
    Ok(rev(resp.header().map(|h| h.revision()).unwrap_or(0)))
}

fn rev(r: i64) -> Revision {
    u64::try_from(r).unwrap_or(0)
}

fn load_tls(t: &EtcdTls) -> Result<Option<etcd_client::TlsOptions>, EtcdOpenError> {
    if !t.is_set() {
        return Ok(None);
    }
    let read = |what: &'static str, path: &PathBuf| {
        std::fs::read(path).map_err(|source| EtcdOpenError::TlsFile {
            what,
            path: path.clone(),
            source,
        })
    };
    let mut tls = etcd_client::TlsOptions::new();
    if let Some(ca) = &t.ca {
        tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read("CA", ca)?));
    }
    if let (Some(cert), Some(key)) = (&t.cert, &t.key) {
        tls = tls.identity(etcd_client::Identity::from_pem(
            read("certificate", cert)?,
            read("key", key)?,
        ));
    }
    Ok(Some(tls))
}

/// Sorts an etcd client error into "try again later" (the cluster is
/// down, electing, overloaded, or the connection broke) and everything
/// else (a request etcd will never accept as sent).
fn map_error(op: &str, e: etcd_client::Error) -> StoreError {
    let mut msg = match &e {
        etcd_client::Error::GRpcStatus(s) => format!("etcd {op}: {}", s.message()),
        other => format!("etcd {op}: {other}"),
    };
    // The causes (a TLS alert, a refused connection) are what an operator
    // needs; tonic's own message is often just "operation was canceled".
    let mut cause = match &e {
        etcd_client::Error::GRpcStatus(s) => std::error::Error::source(s),
        other => std::error::Error::source(other),
    };
    while let Some(c) = cause {
        let text = c.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        cause = c.source();
    }
    match classify(&e) {
        Failure::Permanent => StoreError::Io(msg),
        _ => StoreError::Unavailable(msg),
    }
}

/// True for "the revision you asked for is gone" (a list's snapshot was
/// compacted between two pages).
fn is_compacted(e: &StoreError) -> bool {
    matches!(e, StoreError::Io(m) if m.contains("compacted"))
}

#[async_trait]
impl Store for EtcdStore {
    fn backend(&self) -> &'static str {
        "etcd"
    }

    fn location(&self) -> String {
        if self.ns.prefix.is_empty() {
            self.endpoints.join(",")
        } else {
            format!("{} (prefix {})", self.endpoints.join(","), self.ns.prefix)
        }
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let k = self.ns.key(key)?;
        let kv = self.kv();
        let resp = self
            .caller
            .call("get", Retry::Read, || {
                let (mut kv, k) = (kv.clone(), k.clone());
                async move { kv.get(k, None).await }
            })
            .await?;
        Ok(resp.kvs().first().and_then(|kv| self.to_kv(kv)))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KeyValue>, StoreError> {
        // A compaction between two pages invalidates the snapshot; a
        // fresh one is consistent again.
        let mut attempts = 0;
        loop {
            match self.list_once(prefix).await {
                Err(e) if is_compacted(&e) && attempts < 3 => {
                    attempts += 1;
                    tracing::debug!(prefix, "list snapshot compacted between pages; again");
                }
                other => return other,
            }
        }
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        let mut compares = Vec::with_capacity(txn.compares.len());
        for c in &txn.compares {
            match c {
                // A key's version is 0 exactly when it does not exist.
                Compare::Absent(k) => {
                    compares.push(EtcdCompare::version(self.ns.key(k)?, CompareOp::Equal, 0))
                }
                Compare::Present(k) => {
                    compares.push(EtcdCompare::version(self.ns.key(k)?, CompareOp::Greater, 0))
                }
                Compare::ModRevision(k, r) => {
                    let k = self.ns.key(k)?;
                    // etcd compares a missing key as mod_revision 0; the
                    // trait says "exists and was last written at r".
                    compares.push(EtcdCompare::version(k.clone(), CompareOp::Greater, 0));
                    compares.push(EtcdCompare::mod_revision(
                        k,
                        CompareOp::Equal,
                        i64::try_from(*r).unwrap_or(i64::MAX),
                    ));
                }
            }
        }
        // etcd refuses a txn touching one key twice; the embedded store
        // applies them in order, so only the last operation on a key
        // decides its final state. Keep that one.
        let mut ops = Vec::with_capacity(txn.ops.len());
        for (i, op) in txn.ops.iter().enumerate() {
            let key = match op {
                Op::Put(k, _) | Op::Delete(k) => k,
            };
            let later = txn.ops[i + 1..].iter().any(|o| match o {
                Op::Put(k, _) | Op::Delete(k) => k == key,
            });
            if later {
                continue;
            }
            ops.push(match op {
                Op::Put(k, v) => TxnOp::put(self.ns.key(k)?, v.clone(), None),
                Op::Delete(k) => TxnOp::delete(self.ns.key(k)?, None),
            });
        }
        let t = etcd_client::Txn::new().when(compares).and_then(ops);
        let kv = self.kv();
        let resp = self
            .caller
            .call(
                "txn",
                if txn.resendable {
                    Retry::Resend
                } else {
                    Retry::Write
                },
                || {
                    let (mut kv, t) = (kv.clone(), t.clone());
                    async move { kv.txn(t).await }
                },
            )
            .await?;
        Ok(TxnOutcome {
            succeeded: resp.succeeded(),
            // A failed (or write-free) txn does not move etcd's revision,
            // so this is the current one either way.
            revision: rev(resp.header().map(|h| h.revision()).unwrap_or(0)),
        })
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        current_revision(&self.client, &self.ns, self.caller).await
    }

    fn watch(&self, prefix: &str) -> Watch {
        Watch::new(prefix.to_string(), self.events.subscribe())
            .with_lost_events(self.lost.subscribe())
    }
}

/// The one etcd watch behind every [`Watch`] of a store.
struct Watcher {
    client: WatchClient,
    ns: Namespace,
    events: broadcast::Sender<WatchEvent>,
    lost: Arc<watch::Sender<u64>>,
    timeout: Duration,
    /// The first revision not yet delivered: where a new etcd watch starts.
    next_rev: i64,
}

/// Why a watch session ended.
enum SessionEnd {
    /// Start again at once (history compacted, `next_rev` moved on).
    Restart,
    /// The stream broke or could not be opened; back off first.
    Failed { msg: String, streamed: bool },
}

impl Watcher {
    async fn run(mut self) {
        let mut backoff = WATCH_BACKOFF_MIN;
        let mut down_since: Option<std::time::Instant> = None;
        loop {
            match self.session(&mut down_since).await {
                SessionEnd::Restart => backoff = WATCH_BACKOFF_MIN,
                SessionEnd::Failed { msg, streamed } => {
                    if streamed {
                        backoff = WATCH_BACKOFF_MIN;
                    }
                    if down_since.is_none() {
                        tracing::warn!(
                            error = %msg,
                            resume_at = self.next_rev,
                            "etcd watch lost; reconnecting"
                        );
                        down_since = Some(std::time::Instant::now());
                    } else {
                        tracing::debug!(error = %msg, "etcd watch still down");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(WATCH_BACKOFF_MAX);
                }
            }
        }
    }

    async fn session(&mut self, down_since: &mut Option<std::time::Instant>) -> SessionEnd {
        let fail = |msg: String, streamed| SessionEnd::Failed { msg, streamed };
        let start = match self.ns.key("/") {
            Ok(k) => k,
            Err(e) => return fail(e.to_string(), false),
        };
        let opts = WatchOptions::new()
            .with_range(prefix_end(&start))
            .with_start_revision(self.next_rev)
            // Progress notes move `next_rev` along while the namespace is
            // quiet, so a later resume is less likely to hit compaction.
            .with_progress_notify();
        let mut stream =
            match tokio::time::timeout(self.timeout, self.client.watch(start, Some(opts))).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return fail(e.to_string(), false),
                Err(_) => return fail("no answer to the watch request".into(), false),
            };
        let mut streamed = false;
        loop {
            let resp = match stream.message().await {
                Ok(Some(r)) => r,
                Ok(None) => return fail("the watch stream ended".into(), streamed),
                Err(e) => return fail(e.to_string(), streamed),
            };
            let header_rev = resp.header().map(|h| h.revision()).unwrap_or(0);
            if resp.canceled() {
                if resp.compact_revision() > 0 {
                    // The history before compact_revision is gone: carry
                    // on from there and tell every Watch to re-list.
                    let lost = (resp.compact_revision() - self.next_rev).max(1);
                    let resume = resp.compact_revision();
                    tracing::warn!(
                        from = self.next_rev,
                        compacted_to = resp.compact_revision(),
                        resume_at = resume,
                        "etcd history compacted under the watch; watchers re-list"
                    );
                    self.next_rev = resume;
                    self.lost
                        .send_modify(|n| *n += u64::try_from(lost).unwrap_or(1));
                    return SessionEnd::Restart;
                }
                return fail(
                    format!("watch cancelled: {}", resp.cancel_reason()),
                    streamed,
                );
            }
            if resp.created() {
                streamed = true;
                if let Some(t) = down_since.take() {
                    tracing::info!(
                        resume_at = self.next_rev,
                        down_ms = t.elapsed().as_millis() as u64,
                        "etcd watch resumed"
                    );
                }
            }
            let events = resp.events();
            if events.is_empty() {
                if !resp.created() && header_rev > 0 {
                    // A progress note: everything up to header_rev has
                    // been delivered.
                    self.next_rev = self.next_rev.max(header_rev + 1);
                }
                continue;
            }
            for ev in events {
                let Some(kv) = ev.kv() else { continue };
                self.next_rev = self.next_rev.max(kv.mod_revision() + 1);
                let Some(key) = self.ns.strip(kv.key()) else {
                    continue;
                };
                let ev = match ev.event_type() {
                    EventType::Put => WatchEvent::Put(KeyValue {
                        key,
                        value: kv.value().to_vec(),
                        create_revision: rev(kv.create_revision()),
                        mod_revision: rev(kv.mod_revision()),
                    }),
                    EventType::Delete => WatchEvent::Delete {
                        key,
                        mod_revision: rev(kv.mod_revision()),
                    },
                };
                // No receivers is fine: nobody watches yet.
                let _ = self.events.send(ev);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A send that never answers (a follower holding a proposal for a dead
    /// leader) is sent again for a resendable write, and only then.
    #[tokio::test]
    async fn only_resendable_writes_are_sent_again_when_unanswered() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let caller = Caller {
            timeout: Duration::from_millis(2500),
            connect_retries: 3,
        };
        let run = |retry: Retry| {
            let sends = Arc::new(AtomicU32::new(0));
            let counted = sends.clone();
            async move {
                let r = caller
                    .call("txn", retry, || {
                        let n = counted.fetch_add(1, Ordering::SeqCst);
                        async move {
                            if n == 0 {
                                std::future::pending::<()>().await;
                            }
                            Ok::<u32, etcd_client::Error>(7)
                        }
                    })
                    .await;
                (r, sends.load(Ordering::SeqCst))
            }
        };
        let started = std::time::Instant::now();
        let (r, sends) = run(Retry::Resend).await;
        assert_eq!(r.unwrap(), 7);
        assert_eq!(sends, 2);
        assert!(started.elapsed() >= RESEND_AFTER);
        let (r, sends) = run(Retry::Write).await;
        assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
        assert_eq!(sends, 1, "a plain write must never be sent twice");
    }

    #[test]
    fn keys_are_namespaced_and_stripped() {
        let ns = Namespace {
            prefix: "/t/a".into(),
        };
        assert_eq!(ns.key("/furrow/x").unwrap(), b"/t/a/furrow/x");
        assert!(matches!(ns.key("furrow"), Err(StoreError::InvalidKey(_))));
        assert_eq!(ns.strip(b"/t/a/furrow/x").as_deref(), Some("/furrow/x"));
        // Another cluster whose prefix merely starts the same way.
        assert_eq!(ns.strip(b"/t/ab/furrow/x"), None);
        let (s, e) = ns.range("").unwrap();
        assert_eq!((s.as_slice(), e.as_slice()), (&b"/t/a/"[..], &b"/t/a0"[..]));
        let root = Namespace {
            prefix: String::new(),
        };
        assert_eq!(root.key("/furrow/x").unwrap(), b"/furrow/x");
    }

    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }

    #[test]
    fn config_is_checked() {
        let ok = EtcdConfig::new(vec!["http://127.0.0.1:2379".into()]);
        assert!(ok.validate().is_ok());
        assert!(ok.clone().with_prefix("/x/").validate().is_err());
        assert!(ok.clone().with_prefix("x").validate().is_err());
        assert!(ok.clone().with_prefix("/x").validate().is_ok());
        assert!(EtcdConfig::new(vec![]).validate().is_err());
        assert!(EtcdConfig::new(vec!["127.0.0.1:2379".into()])
            .validate()
            .is_err());
        let mut tls = ok.clone();
        tls.tls.ca = Some("/ca.pem".into());
        assert_eq!(tls.validate().unwrap_err().field, ConfigField::Endpoints);
        tls.endpoints = vec!["https://127.0.0.1:2379".into()];
        assert!(tls.validate().is_ok());
        tls.tls.cert = Some("/c.pem".into());
        assert_eq!(tls.validate().unwrap_err().field, ConfigField::Tls);
    }
}
