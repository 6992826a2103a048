//! netd's state store: a revisioned key-value space with compare-and-swap
//! transactions and prefix watches — the model etcd offers, so the
//! embedded backend (redb) and later the etcd and Kubernetes backends can
//! sit behind one trait, and everything above (resources, IPAM, subnet
//! leases, the port registry) is written once.

pub mod embedded;
pub mod etcd;
pub mod keys;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{broadcast, watch};

pub type Revision = u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: Revision,
    pub mod_revision: Revision,
}

impl KeyValue {
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, StoreError> {
        serde_json::from_slice(&self.value).map_err(|e| StoreError::Corrupt {
            key: self.key.clone(),
            msg: e.to_string(),
        })
    }
}

/// A condition a transaction checks before it applies its operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    Absent(String),
    Present(String),
    /// The key exists and was last written at this revision.
    ModRevision(String, Revision),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put(String, Vec<u8>),
    Delete(String),
}

impl Op {
    pub fn put_json<T: Serialize>(key: impl Into<String>, value: &T) -> Op {
        Op::Put(
            key.into(),
            serde_json::to_vec(value).expect("store values serialize"),
        )
    }
}

/// All compares must hold for the operations to be applied, atomically.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
    /// The caller can tell from the store whether an earlier send of this
    /// transaction was applied (it writes a unique id it checks after a
    /// failed compare), so a send left without an answer (an etcd leader
    /// lost mid-proposal) may be sent again instead of failing.
    pub resendable: bool,
}

impl Txn {
    pub fn new() -> Self {
        Txn::default()
    }
    pub fn when(mut self, c: Compare) -> Self {
        self.compares.push(c);
        self
    }
    pub fn then(mut self, op: Op) -> Self {
        self.ops.push(op);
        self
    }
    pub fn resendable(mut self) -> Self {
        self.resendable = true;
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnOutcome {
    pub succeeded: bool,
    /// The store's revision after the transaction.
    pub revision: Revision,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put(KeyValue),
    Delete { key: String, mod_revision: Revision },
}

impl WatchEvent {
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(kv) => &kv.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or cannot commit right now; callers
    /// answer "try again later".
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store I/O error: {0}")]
    Io(String),
    #[error("store value at {key} is corrupt: {msg}")]
    Corrupt { key: String, msg: String },
    /// A key the backend cannot store (a programming error, not a
    /// transient condition): the etcd backend needs keys that start with
    /// '/' so a namespace prefix cannot run into another namespace.
    #[error("invalid store key {0:?}: keys start with '/'")]
    InvalidKey(String),
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `embedded`, `etcd`, ...
    fn backend(&self) -> &'static str;
    /// Where the data lives (file path, endpoints).
    fn location(&self) -> String;
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;
    /// Every key starting with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<KeyValue>, StoreError>;
    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError>;
    async fn revision(&self) -> Result<Revision, StoreError>;
    /// Events for keys under `prefix` committed after this call.
    fn watch(&self, prefix: &str) -> Watch;
}

/// A prefix-filtered view of the store's event stream.
pub struct Watch {
    prefix: String,
    rx: broadcast::Receiver<WatchEvent>,
    /// Set by backends that can lose events outside the broadcast channel
    /// (etcd: the history to resume from was compacted). The value counts
    /// the revisions lost so far; a change means "re-list".
    lost: Option<watch::Receiver<u64>>,
    lost_seen: u64,
}

impl Watch {
    pub fn new(prefix: String, rx: broadcast::Receiver<WatchEvent>) -> Self {
        Watch {
            prefix,
            rx,
            lost: None,
            lost_seen: 0,
        }
    }

    /// Also reports `Lagged` whenever the backend bumps `lost`.
    pub fn with_lost_events(mut self, lost: watch::Receiver<u64>) -> Self {
        self.lost_seen = *lost.borrow();
        self.lost = Some(lost);
        self
    }

    /// The next matching event. `Err(lagged)` means events were missed and
    /// the watcher must re-list.
    pub async fn next(&mut self) -> Result<WatchEvent, WatchError> {
        loop {
            let got = match &mut self.lost {
                None => self.rx.recv().await,
                Some(lost) => tokio::select! {
                    // Lost events first: whatever is still buffered is
                    // superseded by the re-list the caller is about to do.
                    biased;
                    changed = lost.changed() => {
                        if changed.is_err() {
                            // The backend is gone; the broadcast channel
                            // reports Closed next.
                            self.lost = None;
                            continue;
                        }
                        let total = *lost.borrow_and_update();
                        let n = total.saturating_sub(self.lost_seen);
                        self.lost_seen = total;
                        return Err(WatchError::Lagged(n));
                    }
                    ev = self.rx.recv() => ev,
                },
            };
            match got {
                Ok(ev) if ev.key().starts_with(&self.prefix) => return Ok(ev),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => return Err(WatchError::Lagged(n)),
                Err(broadcast::error::RecvError::Closed) => return Err(WatchError::Closed),
            }
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WatchError {
    #[error("watch fell behind by {0} events; re-list")]
    Lagged(u64),
    #[error("store closed")]
    Closed,
}

/// Which backend holds netd's state (`netd --store`).
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// One redb file on this node.
    Embedded { path: PathBuf },
    /// An etcd cluster shared by several nodes.
    Etcd(etcd::EtcdConfig),
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("opening the embedded store {}: {source}", path.display())]
    Embedded { path: PathBuf, source: StoreError },
    #[error(transparent)]
    Etcd(#[from] etcd::EtcdOpenError),
}

/// Opens the configured backend. Kept here, not in the daemon, so the
/// daemon only ever sees `dyn Store`.
pub async fn open(cfg: &StoreConfig) -> Result<Arc<dyn Store>, OpenError> {
    let store: Arc<dyn Store> = match cfg {
        StoreConfig::Embedded { path } => Arc::new(embedded::EmbeddedStore::open(path).map_err(
            |source| OpenError::Embedded {
                path: path.clone(),
                source,
            },
        )?),
        StoreConfig::Etcd(c) => Arc::new(etcd::EtcdStore::connect(c).await?),
    };
    tracing::info!(
        backend = store.backend(),
        location = %store.location(),
        "store opened"
    );
    Ok(store)
}

/// Typed convenience over [`Store`].
pub async fn get_json<T: DeserializeOwned>(
    store: &dyn Store,
    key: &str,
) -> Result<Option<(T, Revision)>, StoreError> {
    match store.get(key).await? {
        Some(kv) => Ok(Some((kv.decode()?, kv.mod_revision))),
        None => Ok(None),
    }
}

pub async fn list_json<T: DeserializeOwned>(
    store: &dyn Store,
    prefix: &str,
) -> Result<Vec<(String, T, Revision)>, StoreError> {
    let mut out = Vec::new();
    for kv in store.list(prefix).await? {
        let v = kv.decode()?;
        out.push((kv.key, v, kv.mod_revision));
    }
    Ok(out)
}
