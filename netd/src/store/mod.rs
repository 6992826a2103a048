//! netd's state store: a revisioned key-value space with compare-and-swap
//! transactions and prefix watches — the model etcd offers, so the
//! embedded backend (redb) and later the etcd and Kubernetes backends can
//! sit behind one trait, and everything above (resources, IPAM, subnet
//! leases, the port registry) is written once.

pub mod embedded;
pub mod keys;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::broadcast;

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
}

impl Watch {
    pub fn new(prefix: String, rx: broadcast::Receiver<WatchEvent>) -> Self {
        Watch { prefix, rx }
    }

    /// The next matching event. `Err(lagged)` means events were missed and
    /// the watcher must re-list.
    pub async fn next(&mut self) -> Result<WatchEvent, WatchError> {
        loop {
            match self.rx.recv().await {
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
