//! Node membership: every netd keeps a record `/furrow/nodes/<name>`
//! alive by rewriting it (a heartbeat with its wall-clock time) every
//! quarter of the grace period. A node whose record has not been renewed
//! for the grace period (`--node-grace-secs`) is gone: any surviving node
//! then releases what it held (management subnet leases, address
//! allocations, port records), each release a compare-and-swap on the
//! gone node's record as it was judged gone and on the released key, so
//! two survivors never release twice and a node that comes back first
//! (its heartbeat changes its record) keeps everything. A node that comes
//! back after the release leases a free subnet (possibly its old one)
//! through the usual create-only claim, so no subnet is ever given twice.
//!
//! With the embedded store there is one node: its record is written the
//! same way and there is never anyone else to reclaim from.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use furrow_api::wire::NodeMemberInfo;
use serde::{Deserialize, Serialize};

use crate::store::{keys, list_json, Compare, Op, Revision, Store, StoreError, Txn};
use crate::subnets::SubnetLease;
use crate::util::now_millis;

pub const NODES: &str = "/furrow/nodes/";

pub fn node_key(name: &str) -> String {
    format!("{NODES}{name}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    pub name: String,
    pub instance: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub addresses: Vec<String>,
    pub started_at_ms: u64,
    pub last_seen_ms: u64,
    /// Set by the survivor that released this node's subnets, ports and
    /// addresses; cleared by the node's next heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reclaimed_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reclaimed_by: Option<String>,
}

impl NodeRecord {
    pub fn gone(&self, now_ms: u64, grace: Duration) -> bool {
        now_ms.saturating_sub(self.last_seen_ms) > grace.as_millis() as u64
    }

    /// Gone as judged by a node whose own heartbeats have been written
    /// without a failure since `writable_since_ms`: silence while the
    /// store took no writes (etcd without quorum) is nobody's fault, so
    /// it does not count against the node.
    fn gone_since(&self, now_ms: u64, grace: Duration, writable_since_ms: u64) -> bool {
        let seen = self.last_seen_ms.max(writable_since_ms);
        now_ms.saturating_sub(seen) > grace.as_millis() as u64
    }
}

/// What `forget` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForgetOutcome {
    Forgotten,
    Unknown,
    /// The node is live (or came back): nothing was removed.
    NotGone {
        seen_ms_ago: u64,
    },
}

pub struct Membership {
    store: Arc<dyn Store>,
    record: std::sync::Mutex<NodeRecord>,
    grace: Duration,
    /// Since when this node's heartbeats have all been written (wall
    /// clock, ms); None after a failed one. After an outage every record
    /// is stale, so a node back first would otherwise release the
    /// subnets and ports of nodes that are alive but have not yet
    /// written again: no one is judged gone until the store has taken
    /// writes for a whole grace period.
    writable_since_ms: std::sync::Mutex<Option<u64>>,
}

impl Membership {
    pub fn new(
        store: Arc<dyn Store>,
        name: &str,
        instance: &str,
        labels: BTreeMap<String, String>,
        grace: Duration,
    ) -> Arc<Self> {
        let now = now_millis();
        Arc::new(Membership {
            store,
            record: std::sync::Mutex::new(NodeRecord {
                name: name.to_string(),
                instance: instance.to_string(),
                labels,
                addresses: Vec::new(),
                started_at_ms: now,
                last_seen_ms: now,
                reclaimed_at_ms: None,
                reclaimed_by: None,
            }),
            grace,
            writable_since_ms: std::sync::Mutex::new(None),
        })
    }

    pub fn set_addresses(&self, addresses: Vec<String>) {
        self.record.lock().unwrap().addresses = addresses;
    }

    pub fn grace(&self) -> Duration {
        self.grace
    }

    fn name(&self) -> String {
        self.record.lock().unwrap().name.clone()
    }

    /// How often the record is renewed: a quarter of the grace period.
    pub fn heartbeat(&self) -> Duration {
        (self.grace / 4).clamp(Duration::from_millis(200), Duration::from_secs(15))
    }

    /// Writes this node's record. Done at start before anything leases a
    /// subnet, so a survivor's pending release (which compares the
    /// record's revision) can no longer apply.
    pub async fn beat(&self) -> Result<(), StoreError> {
        let (key, rec) = {
            let mut r = self.record.lock().unwrap();
            r.last_seen_ms = now_millis();
            (node_key(&r.name), r.clone())
        };
        if let Ok(Some(prev)) = crate::store::get_json::<NodeRecord>(&*self.store, &key).await {
            if let Some(at) = prev.0.reclaimed_at_ms {
                tracing::warn!(
                    reclaimed_at_ms = at,
                    by = prev.0.reclaimed_by.as_deref().unwrap_or("?"),
                    "this node was gone past the grace period and its subnets were released"
                );
            }
        }
        let written = self
            .store
            .txn(Txn::new().then(Op::put_json(key, &rec)))
            .await;
        let mut since = self.writable_since_ms.lock().unwrap();
        match written {
            Ok(_) => {
                since.get_or_insert(rec.last_seen_ms);
                Ok(())
            }
            Err(e) => {
                *since = None;
                Err(e)
            }
        }
    }

    /// Heartbeats, and releases what gone nodes held.
    pub fn spawn(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(me.heartbeat());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = me.beat().await {
                    tracing::warn!(error = %e, "node heartbeat not written");
                    continue;
                }
                if let Err(e) = me.reclaim_gone().await {
                    tracing::warn!(error = %e, "releasing gone nodes' subnets failed");
                }
            }
        });
    }

    /// Releases the subnet leases, address allocations and port records
    /// of every node gone past the grace period. Each release is a
    /// compare-and-swap on the gone node's record revision, so a node
    /// that came back in the meantime keeps what it holds.
    pub async fn reclaim_gone(&self) -> Result<usize, StoreError> {
        let me = self.name();
        let now = now_millis();
        // Not a single heartbeat written since the last failure: nothing
        // to judge others by.
        let Some(since) = *self.writable_since_ms.lock().unwrap() else {
            return Ok(0);
        };
        let nodes: Vec<(String, NodeRecord, Revision)> = list_json(&*self.store, NODES).await?;
        let mut released = 0;
        for (nkey, rec, nrev) in nodes {
            if rec.name == me
                || !rec.gone_since(now, self.grace, since)
                || rec.reclaimed_at_ms.is_some()
            {
                continue;
            }
            let alive = Compare::ModRevision(nkey.clone(), nrev);
            let mut owned: Vec<(String, Revision)> = Vec::new();
            for kv in self.store.list("/furrow/subnets/").await? {
                if let Ok(l) = kv.decode::<SubnetLease>() {
                    if l.node == rec.name {
                        owned.push((kv.key.clone(), kv.mod_revision));
                    }
                }
            }
            for kv in self.store.list("/furrow/ipam/").await? {
                if let Ok(v) = kv.decode::<serde_json::Value>() {
                    if v.get("node").and_then(|n| n.as_str()) == Some(rec.name.as_str()) {
                        owned.push((kv.key.clone(), kv.mod_revision));
                    }
                }
            }
            for kv in self.store.list(&keys::ports_of_node(&rec.name)).await? {
                owned.push((kv.key.clone(), kv.mod_revision));
            }
            // Its own DHCP-client leases (node VLAN addresses): it asks
            // afresh if it ever returns.
            for kv in self
                .store
                .list(&format!("/furrow/dhcp-clients/{}/", rec.name))
                .await?
            {
                owned.push((kv.key.clone(), kv.mod_revision));
            }
            let mut lost_race = false;
            for (key, rev) in owned {
                let out = self
                    .store
                    .txn(
                        Txn::new()
                            .when(alive.clone())
                            .when(Compare::ModRevision(key.clone(), rev))
                            .then(Op::Delete(key.clone())),
                    )
                    .await?;
                if out.succeeded {
                    released += 1;
                    tracing::info!(node = %rec.name, %key, "released a gone node's record");
                } else if self.store.get(&nkey).await?.map(|kv| kv.mod_revision) != Some(nrev) {
                    // The node came back, or another survivor finished.
                    lost_race = true;
                    break;
                }
            }
            if lost_race {
                continue;
            }
            let mut marked = rec.clone();
            marked.reclaimed_at_ms = Some(now);
            marked.reclaimed_by = Some(me.clone());
            let out = self
                .store
                .txn(
                    Txn::new()
                        .when(alive)
                        .then(Op::put_json(nkey.clone(), &marked)),
                )
                .await?;
            if out.succeeded {
                tracing::warn!(node = %rec.name, grace_secs = self.grace.as_secs_f64(), "node gone past the grace period; its subnets, addresses and ports are released");
            }
        }
        Ok(released)
    }

    /// Removes the record of a node that is gone (after releasing what it
    /// held, if no survivor has yet): an operator's "this node is not
    /// coming back". A live node is refused: its next heartbeat would
    /// recreate the record while its state was being released.
    pub async fn forget(&self, name: &str) -> Result<ForgetOutcome, StoreError> {
        let key = node_key(name);
        let Some(kv) = self.store.get(&key).await? else {
            return Ok(ForgetOutcome::Unknown);
        };
        let rec: NodeRecord = kv.decode()?;
        let now = now_millis();
        if rec.name == self.name() || !rec.gone(now, self.grace) {
            return Ok(ForgetOutcome::NotGone {
                seen_ms_ago: now.saturating_sub(rec.last_seen_ms),
            });
        }
        if rec.reclaimed_at_ms.is_none() {
            self.reclaim_gone().await?;
        }
        let Some(kv) = self.store.get(&key).await? else {
            return Ok(ForgetOutcome::Forgotten);
        };
        let rec: NodeRecord = kv.decode()?;
        if rec.reclaimed_at_ms.is_none() {
            // It came back while we released (its heartbeat cleared the
            // mark): leave it be.
            return Ok(ForgetOutcome::NotGone {
                seen_ms_ago: now_millis().saturating_sub(rec.last_seen_ms),
            });
        }
        let out = self
            .store
            .txn(
                Txn::new()
                    .when(Compare::ModRevision(key.clone(), kv.mod_revision))
                    .then(Op::Delete(key)),
            )
            .await?;
        Ok(if out.succeeded {
            tracing::warn!(node = %name, "gone node forgotten: its membership record is removed");
            ForgetOutcome::Forgotten
        } else {
            ForgetOutcome::NotGone {
                seen_ms_ago: now_millis().saturating_sub(rec.last_seen_ms),
            }
        })
    }

    /// Every member with its state and subnets, for `GET /v1/nodes`.
    pub async fn info(&self) -> Result<Vec<NodeMemberInfo>, StoreError> {
        let me = self.name();
        let now = now_millis();
        let nodes: Vec<(String, NodeRecord, Revision)> = list_json(&*self.store, NODES).await?;
        let mut subnets: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for kv in self.store.list("/furrow/subnets/").await? {
            if let Ok(l) = kv.decode::<SubnetLease>() {
                let network = kv
                    .key
                    .trim_start_matches("/furrow/subnets/")
                    .split('/')
                    .next()
                    .unwrap_or("")
                    .to_string();
                subnets
                    .entry(l.node.clone())
                    .or_default()
                    .push(format!("{network}={}", l.subnet));
            }
        }
        Ok(nodes
            .into_iter()
            .map(|(_, r, _)| NodeMemberInfo {
                state: if r.gone(now, self.grace) {
                    "gone"
                } else {
                    "ready"
                }
                .to_string(),
                subnets: subnets.remove(&r.name).unwrap_or_default(),
                this_node: r.name == me,
                name: r.name,
                instance: r.instance,
                labels: r.labels,
                addresses: r.addresses,
                started_at_ms: r.started_at_ms,
                last_seen_ms: r.last_seen_ms,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;
    use ipnet::Ipv4Net;

    #[tokio::test]
    async fn gone_node_subnet_is_released_once_and_reused() {
        let dir = std::env::temp_dir().join(format!("furrow-members-test-{}", std::process::id()));
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.join("s.redb")).unwrap());
        let grace = Duration::from_millis(1000);
        let a = Membership::new(store.clone(), "a", "a", BTreeMap::new(), grace);
        let b = Membership::new(store.clone(), "b", "b", BTreeMap::new(), grace);
        let c = Membership::new(store.clone(), "c", "c", BTreeMap::new(), grace);
        let cidr: Ipv4Net = "10.52.0.0/22".parse().unwrap();
        a.beat().await.unwrap();
        b.beat().await.unwrap();
        c.beat().await.unwrap();
        crate::subnets::lease(&*store, "mgmt", cidr, 24, "a", &Default::default())
            .await
            .unwrap();
        let sb = crate::subnets::lease(&*store, "mgmt", cidr, 24, "b", &Default::default())
            .await
            .unwrap();
        // Nobody is gone yet.
        assert_eq!(a.reclaim_gone().await.unwrap(), 0);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        a.beat().await.unwrap();
        c.beat().await.unwrap();
        // b is gone: released once, whoever asks.
        assert_eq!(a.reclaim_gone().await.unwrap(), 1);
        assert_eq!(c.reclaim_gone().await.unwrap(), 0);
        let info = a.info().await.unwrap();
        let bi = info.iter().find(|n| n.name == "b").unwrap();
        assert_eq!(bi.state, "gone");
        assert!(bi.subnets.is_empty());
        // A new node gets b's old subnet.
        let d = crate::subnets::lease(&*store, "mgmt", cidr, 24, "d", &Default::default())
            .await
            .unwrap();
        assert_eq!(d, sb);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A store that refuses everything while `down` (etcd without quorum).
    struct Outage {
        inner: Arc<dyn Store>,
        down: std::sync::atomic::AtomicBool,
    }

    impl Outage {
        fn check(&self) -> Result<(), StoreError> {
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(StoreError::Unavailable("no quorum".into()));
            }
            Ok(())
        }
    }

    #[async_trait::async_trait]
    impl Store for Outage {
        fn backend(&self) -> &'static str {
            "outage"
        }
        fn location(&self) -> String {
            self.inner.location()
        }
        async fn get(&self, key: &str) -> Result<Option<crate::store::KeyValue>, StoreError> {
            self.check()?;
            self.inner.get(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<crate::store::KeyValue>, StoreError> {
            self.check()?;
            self.inner.list(prefix).await
        }
        async fn txn(&self, txn: Txn) -> Result<crate::store::TxnOutcome, StoreError> {
            self.check()?;
            self.inner.txn(txn).await
        }
        async fn revision(&self) -> Result<Revision, StoreError> {
            self.check()?;
            self.inner.revision().await
        }
        fn watch(&self, prefix: &str) -> crate::store::Watch {
            self.inner.watch(prefix)
        }
    }

    #[tokio::test]
    async fn a_store_outage_longer_than_the_grace_period_releases_no_one() {
        let dir = std::env::temp_dir().join(format!("furrow-members-test3-{}", std::process::id()));
        let inner: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.join("s.redb")).unwrap());
        let outage = Arc::new(Outage {
            inner,
            down: false.into(),
        });
        let store: Arc<dyn Store> = outage.clone();
        let grace = Duration::from_millis(1000);
        let a = Membership::new(store.clone(), "a", "a", BTreeMap::new(), grace);
        let b = Membership::new(store.clone(), "b", "b", BTreeMap::new(), grace);
        let cidr: Ipv4Net = "10.52.0.0/22".parse().unwrap();
        a.beat().await.unwrap();
        b.beat().await.unwrap();
        let sb = crate::subnets::lease(&*store, "mgmt", cidr, 24, "b", &Default::default())
            .await
            .unwrap();
        // Nobody can write for longer than the grace period.
        outage.down.store(true, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert!(a.beat().await.is_err());
        assert!(b.beat().await.is_err());
        outage
            .down
            .store(false, std::sync::atomic::Ordering::SeqCst);
        // a is back first: b's record is stale, but only because nobody
        // could write; b keeps its subnet.
        a.beat().await.unwrap();
        assert_eq!(a.reclaim_gone().await.unwrap(), 0);
        let again = crate::subnets::lease(&*store, "mgmt", cidr, 24, "b", &Default::default())
            .await
            .unwrap();
        assert_eq!(again, sb);
        // b never writes again: gone once the store has taken writes for
        // a whole grace period.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        a.beat().await.unwrap();
        assert_eq!(a.reclaim_gone().await.unwrap(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn node_back_before_release_keeps_its_subnet() {
        let dir = std::env::temp_dir().join(format!("furrow-members-test2-{}", std::process::id()));
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.join("s.redb")).unwrap());
        let grace = Duration::from_millis(1000);
        let a = Membership::new(store.clone(), "a", "a", BTreeMap::new(), grace);
        let b = Membership::new(store.clone(), "b", "b", BTreeMap::new(), grace);
        let cidr: Ipv4Net = "10.52.0.0/22".parse().unwrap();
        a.beat().await.unwrap();
        b.beat().await.unwrap();
        let sb = crate::subnets::lease(&*store, "mgmt", cidr, 24, "b", &Default::default())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        a.beat().await.unwrap();
        b.beat().await.unwrap();
        assert_eq!(a.reclaim_gone().await.unwrap(), 0);
        let again = crate::subnets::lease(&*store, "mgmt", cidr, 24, "b", &Default::default())
            .await
            .unwrap();
        assert_eq!(again, sb);
        let _ = std::fs::remove_dir_all(dir);
    }
}
