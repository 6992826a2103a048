//! The embedded store: one redb file per netd instance. redb commits are
//! atomic and durable (fsync before commit returns), so an allocation
//! acknowledged to a caller survives a crash or power loss.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::broadcast;

use super::{
    Compare, KeyValue, Op, Revision, Store, StoreError, Txn, TxnOutcome, Watch, WatchEvent,
};

/// key -> (create_revision, mod_revision, value)
const KV: TableDefinition<&str, (u64, u64, &[u8])> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION: &str = "revision";

pub struct EmbeddedStore {
    db: Arc<Database>,
    path: PathBuf,
    events: broadcast::Sender<WatchEvent>,
}

impl EmbeddedStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Io(format!("creating {}: {e}", dir.display())))?;
        }
        let db = Database::create(path)
            .map_err(|e| StoreError::Io(format!("opening {}: {e}", path.display())))?;
        // Create the tables up front so readers never meet a missing table.
        let w = db.begin_write().map_err(io)?;
        {
            w.open_table(KV).map_err(io)?;
            let mut meta = w.open_table(META).map_err(io)?;
            if meta.get(REVISION).map_err(io)?.is_none() {
                meta.insert(REVISION, 0).map_err(io)?;
            }
        }
        w.commit().map_err(io)?;
        let (events, _) = broadcast::channel(4096);
        Ok(EmbeddedStore {
            db: Arc::new(db),
            path: path.to_path_buf(),
            events,
        })
    }

    fn get_sync(db: &Database, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let r = db.begin_read().map_err(io)?;
        let t = r.open_table(KV).map_err(io)?;
        Ok(t.get(key).map_err(io)?.map(|g| {
            let (c, m, v) = g.value();
            KeyValue {
                key: key.to_string(),
                value: v.to_vec(),
                create_revision: c,
                mod_revision: m,
            }
        }))
    }

    fn list_sync(db: &Database, prefix: &str) -> Result<Vec<KeyValue>, StoreError> {
        let r = db.begin_read().map_err(io)?;
        let t = r.open_table(KV).map_err(io)?;
        let mut out = Vec::new();
        for item in t.range(prefix..).map_err(io)? {
            let (k, v) = item.map_err(io)?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            let (c, m, val) = v.value();
            out.push(KeyValue {
                key: key.to_string(),
                value: val.to_vec(),
                create_revision: c,
                mod_revision: m,
            });
        }
        Ok(out)
    }

    fn txn_sync(db: &Database, txn: Txn) -> Result<(TxnOutcome, Vec<WatchEvent>), StoreError> {
        let w = db.begin_write().map_err(io)?;
        let mut events = Vec::new();
        let outcome;
        {
            let mut kv = w.open_table(KV).map_err(io)?;
            let mut meta = w.open_table(META).map_err(io)?;
            let current: Revision = meta
                .get(REVISION)
                .map_err(io)?
                .map(|g| g.value())
                .unwrap_or(0);
            let mut ok = true;
            for c in &txn.compares {
                let holds = match c {
                    Compare::Absent(k) => kv.get(k.as_str()).map_err(io)?.is_none(),
                    Compare::Present(k) => kv.get(k.as_str()).map_err(io)?.is_some(),
                    Compare::ModRevision(k, rev) => {
                        kv.get(k.as_str()).map_err(io)?.map(|g| g.value().1) == Some(*rev)
                    }
                };
                if !holds {
                    ok = false;
                    break;
                }
            }
            if !ok || txn.ops.is_empty() {
                outcome = TxnOutcome {
                    succeeded: ok,
                    revision: current,
                };
            } else {
                let rev = current + 1;
                for op in &txn.ops {
                    match op {
                        Op::Put(k, v) => {
                            let create = kv
                                .get(k.as_str())
                                .map_err(io)?
                                .map(|g| g.value().0)
                                .unwrap_or(rev);
                            kv.insert(k.as_str(), (create, rev, v.as_slice()))
                                .map_err(io)?;
                            events.push(WatchEvent::Put(KeyValue {
                                key: k.clone(),
                                value: v.clone(),
                                create_revision: create,
                                mod_revision: rev,
                            }));
                        }
                        Op::Delete(k) => {
                            if kv.remove(k.as_str()).map_err(io)?.is_some() {
                                events.push(WatchEvent::Delete {
                                    key: k.clone(),
                                    mod_revision: rev,
                                });
                            }
                        }
                    }
                }
                meta.insert(REVISION, rev).map_err(io)?;
                outcome = TxnOutcome {
                    succeeded: true,
                    revision: rev,
                };
            }
        }
        if outcome.succeeded && !txn.ops.is_empty() {
            w.commit().map_err(io)?;
        } else {
            w.abort().map_err(io)?;
        }
        Ok((outcome, events))
    }
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
}

#[async_trait]
impl Store for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let db = self.db.clone();
        let key = key.to_string();
        blocking(move || Self::get_sync(&db, &key)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KeyValue>, StoreError> {
        let db = self.db.clone();
        let prefix = prefix.to_string();
        blocking(move || Self::list_sync(&db, &prefix)).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        let db = self.db.clone();
        let (outcome, events) = blocking(move || Self::txn_sync(&db, txn)).await?;
        for ev in events {
            // No receivers is fine: nobody watches yet.
            let _ = self.events.send(ev);
        }
        Ok(outcome)
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        let db = self.db.clone();
        blocking(move || {
            let r = db.begin_read().map_err(io)?;
            let t = r.open_table(META).map_err(io)?;
            Ok(t.get(REVISION).map_err(io)?.map(|g| g.value()).unwrap_or(0))
        })
        .await
    }

    fn watch(&self, prefix: &str) -> Watch {
        Watch::new(prefix.to_string(), self.events.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> (tempdir::Dir, EmbeddedStore) {
        let d = tempdir::Dir::new();
        let s = EmbeddedStore::open(&d.0.join("store.redb")).unwrap();
        (d, s)
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let p = std::env::temp_dir()
                    .join(format!("furrow-store-test-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[tokio::test]
    async fn put_get_list_delete_with_revisions() {
        let (_d, s) = tmp();
        let o = s
            .txn(Txn::new().then(Op::Put("/a/1".into(), b"x".to_vec())))
            .await
            .unwrap();
        assert!(o.succeeded);
        assert_eq!(o.revision, 1);
        s.txn(Txn::new().then(Op::Put("/a/2".into(), b"y".to_vec())))
            .await
            .unwrap();
        s.txn(Txn::new().then(Op::Put("/b/1".into(), b"z".to_vec())))
            .await
            .unwrap();
        let o = s
            .txn(Txn::new().then(Op::Put("/a/1".into(), b"x2".to_vec())))
            .await
            .unwrap();
        assert_eq!(o.revision, 4);
        let kv = s.get("/a/1").await.unwrap().unwrap();
        assert_eq!(kv.value, b"x2");
        assert_eq!((kv.create_revision, kv.mod_revision), (1, 4));
        let keys: Vec<String> = s
            .list("/a/")
            .await
            .unwrap()
            .into_iter()
            .map(|k| k.key)
            .collect();
        assert_eq!(keys, ["/a/1", "/a/2"]);
        s.txn(Txn::new().then(Op::Delete("/a/1".into())))
            .await
            .unwrap();
        assert!(s.get("/a/1").await.unwrap().is_none());
        assert_eq!(s.revision().await.unwrap(), 5);
    }

    #[tokio::test]
    async fn compares_guard_the_whole_transaction() {
        let (_d, s) = tmp();
        let claim = |k: &str| {
            Txn::new()
                .when(Compare::Absent(k.into()))
                .then(Op::Put(k.into(), b"mine".to_vec()))
                .then(Op::Put("/side".into(), b"effect".to_vec()))
        };
        assert!(s.txn(claim("/ip/1")).await.unwrap().succeeded);
        let before = s.revision().await.unwrap();
        let o = s.txn(claim("/ip/1")).await.unwrap();
        assert!(!o.succeeded);
        assert_eq!(
            s.revision().await.unwrap(),
            before,
            "a failed txn must not bump the revision"
        );
        let rev = s.get("/ip/1").await.unwrap().unwrap().mod_revision;
        let stale = Txn::new()
            .when(Compare::ModRevision("/ip/1".into(), rev - 1))
            .then(Op::Delete("/ip/1".into()));
        assert!(!s.txn(stale).await.unwrap().succeeded);
        let fresh = Txn::new()
            .when(Compare::ModRevision("/ip/1".into(), rev))
            .then(Op::Delete("/ip/1".into()));
        assert!(s.txn(fresh).await.unwrap().succeeded);
        assert!(
            !s.txn(Txn::new().when(Compare::Present("/ip/1".into())))
                .await
                .unwrap()
                .succeeded
        );
    }

    #[tokio::test]
    async fn survives_reopen() {
        let d = tempdir::Dir::new();
        let path = d.0.join("store.redb");
        {
            let s = EmbeddedStore::open(&path).unwrap();
            s.txn(Txn::new().then(Op::Put("/k".into(), b"v".to_vec())))
                .await
                .unwrap();
        }
        let s = EmbeddedStore::open(&path).unwrap();
        assert_eq!(s.get("/k").await.unwrap().unwrap().value, b"v");
        assert_eq!(s.revision().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn watch_sees_only_its_prefix() {
        let (_d, s) = tmp();
        let mut w = s.watch("/a/");
        s.txn(Txn::new().then(Op::Put("/b/1".into(), b"1".to_vec())))
            .await
            .unwrap();
        s.txn(Txn::new().then(Op::Put("/a/1".into(), b"2".to_vec())))
            .await
            .unwrap();
        s.txn(Txn::new().then(Op::Delete("/a/1".into())))
            .await
            .unwrap();
        match w.next().await.unwrap() {
            WatchEvent::Put(kv) => assert_eq!(kv.key, "/a/1"),
            e => panic!("unexpected {e:?}"),
        }
        assert!(matches!(w.next().await.unwrap(), WatchEvent::Delete { .. }));
    }
}
