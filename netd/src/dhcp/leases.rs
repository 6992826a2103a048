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

use crate::store::{KeyValue, Revision, StoreError};

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
