//! DHCP leases in the store, shared by every node: one key per address,
//! `/furrow/dhcp/<pool>/leases/<ip>`, changed only by compare-and-swap
//! transactions, so two nodes (or two requests) can never hold one address.
//! Each node keeps a cache per pool for fast decisions, filled from the
//! store and kept current by the store's watch; a decision made on a stale
//! cache loses its transaction and is made again on fresh data.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use furrow_api::MacAddr;
use serde::{Deserialize, Serialize};

use crate::store::{Compare, KeyValue, Op, Revision, Store, StoreError, Txn};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LeaseState {
    /// Offered, not yet requested: held briefly.
    Offered,
    Bound,
    /// The client reported the address in use by someone else.
    Declined,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseRecord {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    pub state: LeaseState,
    /// Unix seconds.
    pub expires_at: u64,
    /// The node whose responder handed it out (or last renewed it).
    pub node: String,
    pub updated_at: u64,
}

pub fn prefix(pool: &str) -> String {
    format!("/furrow/dhcp/{pool}/leases/")
}

pub fn key(pool: &str, ip: Ipv4Addr) -> String {
    format!("{}{ip}", prefix(pool))
}

/// One pool's leases as this node last saw them.
#[derive(Debug, Default, Clone)]
pub struct LeaseCache {
    by_ip: BTreeMap<Ipv4Addr, (LeaseRecord, Revision)>,
    by_mac: HashMap<MacAddr, Ipv4Addr>,
}

impl LeaseCache {
    pub fn from_kvs(kvs: &[KeyValue]) -> Result<Self, StoreError> {
        let mut c = LeaseCache::default();
        for kv in kvs {
            let rec: LeaseRecord = kv.decode()?;
            c.insert(rec, kv.mod_revision);
        }
        Ok(c)
    }

    pub fn insert(&mut self, rec: LeaseRecord, rev: Revision) {
        if let Some((old, _)) = self.by_ip.get(&rec.ip) {
            if self.by_mac.get(&old.mac) == Some(&rec.ip) {
                self.by_mac.remove(&old.mac);
            }
        }
        self.by_mac.insert(rec.mac, rec.ip);
        self.by_ip.insert(rec.ip, (rec, rev));
    }

    pub fn remove(&mut self, ip: Ipv4Addr) {
        if let Some((old, _)) = self.by_ip.remove(&ip) {
            if self.by_mac.get(&old.mac) == Some(&ip) {
                self.by_mac.remove(&old.mac);
            }
        }
    }

    /// Applies a watched store event for this pool. Events older than
    /// what the cache holds (our own commits are cached before their
    /// events arrive) are ignored.
    pub fn apply(&mut self, ev: &crate::store::WatchEvent, pool: &str) {
        let p = prefix(pool);
        let newer = |c: &Self, ip: Ipv4Addr, rev: Revision| {
            c.by_ip.get(&ip).is_none_or(|(_, have)| *have < rev)
        };
        match ev {
            crate::store::WatchEvent::Put(kv) if kv.key.starts_with(&p) => {
                if let Ok(rec) = kv.decode::<LeaseRecord>() {
                    if newer(self, rec.ip, kv.mod_revision) {
                        self.insert(rec, kv.mod_revision);
                    }
                }
            }
            crate::store::WatchEvent::Delete { key, mod_revision } if key.starts_with(&p) => {
                if let Ok(ip) = key[p.len()..].parse() {
                    if newer(self, ip, *mod_revision) {
                        self.remove(ip);
                    }
                }
            }
            _ => {}
        }
    }

    pub fn by_ip(&self, ip: Ipv4Addr) -> Option<&(LeaseRecord, Revision)> {
        self.by_ip.get(&ip)
    }

    pub fn by_mac(&self, mac: MacAddr) -> Option<&(LeaseRecord, Revision)> {
        self.by_mac.get(&mac).and_then(|ip| self.by_ip.get(ip))
    }

    pub fn iter(&self) -> impl Iterator<Item = &LeaseRecord> {
        self.by_ip.values().map(|(r, _)| r)
    }

    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }
}

/// What a DHCP decision wants written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Create or replace the lease of `rec.ip`.
    Put(LeaseRecord),
    /// Free an address.
    Delete(Ipv4Addr),
}

/// Commits a write against the revision the decision saw: the address
/// must still be free (no key) or unchanged since. Returns whether it
/// applied; on false, the caller refreshes and decides again.
pub async fn commit(
    store: &dyn Store,
    cache: &mut LeaseCache,
    pool: &str,
    w: Write,
) -> Result<bool, StoreError> {
    let ip = match &w {
        Write::Put(r) => r.ip,
        Write::Delete(ip) => *ip,
    };
    let k = key(pool, ip);
    let guard = match cache.by_ip(ip) {
        Some((_, rev)) => Compare::ModRevision(k.clone(), *rev),
        None => Compare::Absent(k.clone()),
    };
    let op = match &w {
        Write::Put(r) => Op::put_json(k.clone(), r),
        Write::Delete(_) => Op::Delete(k.clone()),
    };
    let out = store.txn(Txn::new().when(guard).then(op)).await?;
    if out.succeeded {
        match w {
            Write::Put(r) => cache.insert(r, out.revision),
            Write::Delete(ip) => cache.remove(ip),
        }
        return Ok(true);
    }
    // Lost a race (another node, or our cache lagged): refresh this key.
    match store.get(&k).await? {
        Some(kv) => {
            let rec: LeaseRecord = kv.decode()?;
            cache.insert(rec, kv.mod_revision);
        }
        None => cache.remove(ip),
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;

    fn rec(ip: &str, mac: &str, node: &str) -> LeaseRecord {
        LeaseRecord {
            ip: ip.parse().unwrap(),
            mac: mac.parse().unwrap(),
            client_id: None,
            hostname: None,
            state: LeaseState::Bound,
            expires_at: 100,
            node: node.into(),
            updated_at: 1,
        }
    }

    #[tokio::test]
    async fn two_caches_never_hold_one_address() {
        let dir = std::env::temp_dir().join(format!("furrow-lease-test-{}", std::process::id()));
        let store = EmbeddedStore::open(&dir.join("s.redb")).unwrap();
        let mut a = LeaseCache::default();
        let mut b = LeaseCache::default();
        // Both decide on an empty view; only the first commit wins.
        assert!(commit(
            &store,
            &mut a,
            "p",
            Write::Put(rec("10.0.0.5", "02:00:00:00:00:01", "n1"))
        )
        .await
        .unwrap());
        assert!(!commit(
            &store,
            &mut b,
            "p",
            Write::Put(rec("10.0.0.5", "02:00:00:00:00:02", "n2"))
        )
        .await
        .unwrap());
        // The loser's cache learnt who holds it.
        assert_eq!(b.by_ip("10.0.0.5".parse().unwrap()).unwrap().0.node, "n1");
        // With fresh data, the owner's renewal succeeds, a stale one fails.
        let mut renewed = rec("10.0.0.5", "02:00:00:00:00:01", "n2");
        renewed.expires_at = 200;
        assert!(commit(&store, &mut b, "p", Write::Put(renewed.clone()))
            .await
            .unwrap());
        assert!(!commit(
            &store,
            &mut a,
            "p",
            Write::Delete("10.0.0.5".parse().unwrap())
        )
        .await
        .unwrap());
        assert_eq!(
            a.by_mac("02:00:00:00:00:01".parse().unwrap())
                .unwrap()
                .0
                .expires_at,
            200
        );
        let kvs = store.list(&prefix("p")).await.unwrap();
        let c = LeaseCache::from_kvs(&kvs).unwrap();
        assert_eq!(c.len(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }
}
