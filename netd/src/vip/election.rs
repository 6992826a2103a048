//! Who holds each VIP, decided through the shared store (etcd for several
//! nodes; the embedded store is the local backend for one node).
//!
//! Every node that may hold a VIP writes a heartbeat key every
//! `heartbeat` (100 ms) listing the VIPs it is ready to hold. A VIP's
//! holder is a key naming a node, written only by compare-and-swap:
//!
//! - a free VIP (no key) is claimed by the ready live node that ranks
//!   first for it (rendezvous hashing, so VIPs spread over nodes); others
//!   wait 200 ms per rank before trying, in case it cannot;
//! - a held VIP is taken over only when the holder's heartbeat has not
//!   changed for `takeover` (1 s) as seen by the challenger, and the claim
//!   transaction also requires that heartbeat key to be unchanged, so a
//!   challenger with a stale view can never win against a live holder;
//! - fencing: a node may hold VIPs only until `sent + takeover - margin`,
//!   where `sent` is when it sent its last heartbeat that the store
//!   acknowledged. A challenger saw that heartbeat no earlier than it was
//!   sent, and waits `takeover` after seeing it; so the holder has dropped
//!   its VIPs at least `margin` (300 ms) before anyone can take them,
//!   whatever happened to the network or the store (clock rates, not
//!   clock values, must agree; scheduling delays eat into the margin).
//! - a graceful step-down deletes the key after dropping the address; the
//!   next ready node claims it at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::store::{Compare, Op, Revision, Store, StoreError, Txn, WatchError, WatchEvent};

pub const PREFIX: &str = "/furrow/vip/";
const HEARTBEATS: &str = "/furrow/vip/heartbeats/";
const HOLDERS: &str = "/furrow/vip/holders/";

/// How long one rank waits behind the one before it for a free VIP.
pub const RANK_DELAY: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub heartbeat: Duration,
    pub takeover: Duration,
    pub margin: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat: Duration::from_millis(100),
            takeover: Duration::from_millis(1000),
            margin: Duration::from_millis(300),
        }
    }
}

impl Timing {
    /// The longest a store request may take before the heartbeat counts as
    /// failed: beyond it, the acknowledgement is useless anyway.
    fn rpc_timeout(&self) -> Duration {
        self.takeover
            .saturating_sub(self.margin)
            .max(self.heartbeat)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    pub node: String,
    pub seq: u64,
    /// VIPs this node is eligible for and healthy enough to hold.
    #[serde(default)]
    pub ready: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HolderRecord {
    pub node: String,
    /// Unix milliseconds when this node took it.
    pub since_ms: u64,
    /// Counts takeovers since the VIP was last free (a graceful release
    /// deletes the record, so the next claim starts at 1 again): tells a
    /// re-take from a continuous hold.
    pub epoch: u64,
}

pub fn holder_key(vip: &str) -> String {
    format!("{HOLDERS}{vip}")
}

pub fn heartbeat_key(node: &str) -> String {
    format!("{HEARTBEATS}{node}")
}

#[derive(Debug, Clone)]
struct Peer {
    rev: Revision,
    seen: Instant,
    ready: Vec<String>,
}

#[derive(Default)]
struct State {
    peers: HashMap<String, Peer>,
    holders: HashMap<String, (HolderRecord, Revision)>,
    valid_until: Option<Instant>,
    ready: Vec<String>,
    active: bool,
    seq: u64,
    heartbeat_error: Option<String>,
    last_heartbeat: Option<Instant>,
}

/// This node's view of the election, shared by the VIP tasks.
pub struct Election {
    store: Arc<dyn Store>,
    node: String,
    timing: Timing,
    /// One node, embedded store: nobody to fence against.
    local: bool,
    st: Mutex<State>,
    /// Woken on every change of a holder or of a node's liveness.
    pub changed: Notify,
}

/// A claim's preconditions: the holder record (or its absence) the
/// decision saw, and for a takeover the dead holder's heartbeat revision.
#[derive(Debug, Clone)]
pub struct Seen {
    pub holder: Option<(HolderRecord, Revision)>,
    pub dead_heartbeat: Option<(String, Revision)>,
}

impl Election {
    pub fn new(store: Arc<dyn Store>, node: &str, timing: Timing) -> Arc<Self> {
        let local = store.backend() == "embedded";
        Arc::new(Election {
            store,
            node: node.to_string(),
            timing,
            local,
            st: Mutex::new(State::default()),
            changed: Notify::new(),
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    pub fn backend(&self) -> &'static str {
        if self.local {
            "local"
        } else {
            "store"
        }
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.st.lock().expect("election state poisoned")
    }

    /// Loads holders and heartbeats, then follows them; heartbeats while
    /// this node is ready for any VIP.
    pub async fn start(self: &Arc<Self>) -> Result<(), StoreError> {
        let mut w = self.store.watch(PREFIX);
        self.relist().await?;
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                match w.next().await {
                    Ok(ev) => me.apply(&ev),
                    Err(WatchError::Lagged(_)) => {
                        if let Err(e) = me.relist().await {
                            tracing::warn!(error = %e, "re-reading VIP holders failed");
                        }
                    }
                    Err(WatchError::Closed) => return,
                }
                me.changed.notify_waiters();
            }
        });
        if !self.local {
            let me = self.clone();
            tokio::spawn(async move { me.heartbeat_loop().await });
        }
        Ok(())
    }

    async fn relist(&self) -> Result<(), StoreError> {
        let kvs = self.store.list(PREFIX).await?;
        let now = Instant::now();
        let mut st = self.st();
        let mut holders = HashMap::new();
        for kv in &kvs {
            if let Some(vip) = kv.key.strip_prefix(HOLDERS) {
                if let Ok(r) = kv.decode::<HolderRecord>() {
                    holders.insert(vip.to_string(), (r, kv.mod_revision));
                }
            } else if let Some(node) = kv.key.strip_prefix(HEARTBEATS) {
                if let Ok(hb) = kv.decode::<Heartbeat>() {
                    let changed = st.peers.get(node).is_none_or(|p| p.rev != kv.mod_revision);
                    if changed {
                        // First sight counts as a fresh beat: a node just
                        // started must not call everyone dead.
                        st.peers.insert(
                            node.to_string(),
                            Peer {
                                rev: kv.mod_revision,
                                seen: now,
                                ready: hb.ready,
                            },
                        );
                    }
                }
            }
        }
        st.holders = holders;
        Ok(())
    }

    fn apply(&self, ev: &WatchEvent) {
        let mut st = self.st();
        match ev {
            WatchEvent::Put(kv) => {
                if let Some(vip) = kv.key.strip_prefix(HOLDERS) {
                    if let Ok(r) = kv.decode::<HolderRecord>() {
                        let newer = st
                            .holders
                            .get(vip)
                            .is_none_or(|(_, rev)| *rev < kv.mod_revision);
                        if newer {
                            st.holders.insert(vip.to_string(), (r, kv.mod_revision));
                        }
                    }
                } else if let Some(node) = kv.key.strip_prefix(HEARTBEATS) {
                    if let Ok(hb) = kv.decode::<Heartbeat>() {
                        st.peers.insert(
                            node.to_string(),
                            Peer {
                                rev: kv.mod_revision,
                                seen: Instant::now(),
                                ready: hb.ready,
                            },
                        );
                    }
                }
            }
            WatchEvent::Delete { key, mod_revision } => {
                if let Some(vip) = key.strip_prefix(HOLDERS) {
                    if st
                        .holders
                        .get(vip)
                        .is_some_and(|(_, rev)| rev < mod_revision)
                    {
                        st.holders.remove(vip);
                    }
                } else if let Some(node) = key.strip_prefix(HEARTBEATS) {
                    st.peers.remove(node);
                }
            }
        }
    }

    async fn heartbeat_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.timing.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (hb, active) = {
                let mut st = self.st();
                st.seq += 1;
                (
                    Heartbeat {
                        node: self.node.clone(),
                        seq: st.seq,
                        ready: st.ready.clone(),
                    },
                    st.active,
                )
            };
            if !active {
                continue;
            }
            let sent = Instant::now();
            let put = self
                .store
                .txn(Txn::new().then(Op::put_json(heartbeat_key(&self.node), &hb)));
            let outcome = tokio::time::timeout(self.timing.rpc_timeout(), put).await;
            let mut st = self.st();
            match outcome {
                Ok(Ok(out)) if out.succeeded => {
                    let until = sent + self.timing.takeover - self.timing.margin;
                    if st.valid_until.is_none_or(|v| v < until) {
                        st.valid_until = Some(until);
                    }
                    st.last_heartbeat = Some(sent);
                    st.heartbeat_error = None;
                }
                Ok(Ok(_)) => st.heartbeat_error = Some("heartbeat not applied".into()),
                Ok(Err(e)) => st.heartbeat_error = Some(e.to_string()),
                Err(_) => {
                    st.heartbeat_error = Some(format!(
                        "heartbeat took longer than {:?}",
                        self.timing.rpc_timeout()
                    ))
                }
            }
        }
    }

    /// SIGTERM: one last heartbeat ready for nothing, so that when this
    /// node then releases its VIPs nobody waits behind it for them (its
    /// previous heartbeat still ranks it first for up to the takeover time).
    pub async fn leave(&self) {
        self.set_ready(Vec::new());
        if self.local {
            return;
        }
        let hb = {
            let mut st = self.st();
            st.seq += 1;
            Heartbeat {
                node: self.node.clone(),
                seq: st.seq,
                ready: Vec::new(),
            }
        };
        let put = self
            .store
            .txn(Txn::new().then(Op::put_json(heartbeat_key(&self.node), &hb)));
        if let Ok(Err(e)) | Err(e) = tokio::time::timeout(self.timing.rpc_timeout(), put)
            .await
            .map_err(|_| StoreError::Unavailable("timed out".into()))
        {
            tracing::debug!(error = %e, "last heartbeat not written");
        }
    }

    /// Says which VIPs this node is ready to hold (heartbeats carry it);
    /// a node ready for none stops heartbeating.
    pub fn set_ready(&self, ready: Vec<String>) {
        let mut st = self.st();
        st.active = !ready.is_empty();
        st.ready = ready;
    }

    /// Whether this node may hold VIPs right now (fencing).
    pub fn valid(&self, now: Instant) -> bool {
        self.local || self.st().valid_until.is_some_and(|v| v > now)
    }

    /// When this node's right to hold ends, if it has one.
    pub fn valid_until(&self) -> Option<Instant> {
        self.st().valid_until
    }

    pub fn heartbeat_error(&self) -> Option<String> {
        self.st().heartbeat_error.clone()
    }

    pub fn holder(&self, vip: &str) -> Option<(HolderRecord, Revision)> {
        self.st().holders.get(vip).cloned()
    }

    /// The revision of `node`'s heartbeat if it has gone unchanged for
    /// `takeover` as seen here (the node is presumed dead); `None` while
    /// it is live.
    pub fn dead_heartbeat(&self, node: &str, now: Instant) -> Option<Revision> {
        if self.local {
            return (node != self.node).then_some(0);
        }
        match self.st().peers.get(node) {
            Some(p) if p.seen + self.timing.takeover <= now => Some(p.rev),
            Some(_) => None,
            // Never seen (deleted or before our time): its key is absent.
            None => Some(0),
        }
    }

    /// This node's rank among the live nodes ready for `vip` (0: first).
    pub fn rank(&self, vip: &str, now: Instant) -> usize {
        let st = self.st();
        let mut candidates: Vec<&str> = st
            .peers
            .iter()
            .filter(|(n, p)| {
                n.as_str() != self.node
                    && p.seen + self.timing.takeover > now
                    && p.ready.iter().any(|v| v == vip)
            })
            .map(|(n, _)| n.as_str())
            .collect();
        candidates.push(&self.node);
        candidates.sort_by_key(|n| std::cmp::Reverse(hrw(vip, n)));
        candidates.iter().position(|n| *n == self.node).unwrap_or(0)
    }

    /// Runs a store call of the controller's (claim, release) no longer
    /// than this node's right to hold VIPs lasts. The controller awaits
    /// these while it holds its VIPs' lock; a call still waiting for a store
    /// this node can no longer reach (up to `--etcd-timeout-ms`) would
    /// otherwise keep it from dropping its addresses at the fencing bound.
    /// Follows the bound as acknowledged heartbeats move it on; once it has
    /// passed, fails at once. A node that never had the right (no
    /// acknowledged heartbeat yet) holds nothing to drop: unbounded.
    async fn within_fence<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        if self.local || self.valid_until().is_none() {
            return call.await;
        }
        tokio::pin!(call);
        loop {
            let until = match self.valid_until() {
                Some(u) if u > Instant::now() => u,
                _ => {
                    return Err(StoreError::Unavailable(
                        "the fencing bound passed before the store answered".into(),
                    ))
                }
            };
            tokio::select! {
                r = &mut call => return r,
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    /// Writes this node as `vip`'s holder if nothing changed since `seen`.
    /// Gives up (an error) when this node's fencing bound passes first: a
    /// claim answered after it must not lead to an address.
    pub async fn claim(&self, vip: &str, seen: &Seen) -> Result<bool, StoreError> {
        self.within_fence(self.claim_unfenced(vip, seen)).await
    }

    async fn claim_unfenced(&self, vip: &str, seen: &Seen) -> Result<bool, StoreError> {
        let key = holder_key(vip);
        let mut txn = Txn::new().when(match &seen.holder {
            Some((_, rev)) => Compare::ModRevision(key.clone(), *rev),
            None => Compare::Absent(key.clone()),
        });
        if let Some((node, rev)) = &seen.dead_heartbeat {
            let hk = heartbeat_key(node);
            txn = txn.when(if *rev == 0 {
                Compare::Absent(hk)
            } else {
                Compare::ModRevision(hk, *rev)
            });
        }
        let rec = HolderRecord {
            node: self.node.clone(),
            since_ms: crate::util::now_millis(),
            epoch: seen.holder.as_ref().map_or(0, |(r, _)| r.epoch) + 1,
        };
        let out = self
            .store
            .txn(txn.then(Op::put_json(key.clone(), &rec)))
            .await?;
        if out.succeeded {
            self.st()
                .holders
                .insert(vip.to_string(), (rec, out.revision));
            return Ok(true);
        }
        // Someone was faster, or the holder is alive after all: look again.
        let now = self.store.get(&key).await?;
        let mut st = self.st();
        match now {
            Some(kv) => {
                if let Ok(r) = kv.decode::<HolderRecord>() {
                    st.holders.insert(vip.to_string(), (r, kv.mod_revision));
                }
            }
            None => {
                st.holders.remove(vip);
            }
        }
        Ok(false)
    }

    /// Gives `vip` up (graceful step-down), if this node still holds it.
    /// Bounded by the fencing bound like [`Election::claim`]; a release
    /// that does not get through leaves the VIP to move after the takeover
    /// time.
    pub async fn release(&self, vip: &str) -> Result<(), StoreError> {
        self.within_fence(self.release_unfenced(vip)).await
    }

    async fn release_unfenced(&self, vip: &str) -> Result<(), StoreError> {
        let Some((rec, rev)) = self.holder(vip) else {
            return Ok(());
        };
        if rec.node != self.node {
            return Ok(());
        }
        let key = holder_key(vip);
        let out = self
            .store
            .txn(
                Txn::new()
                    .when(Compare::ModRevision(key.clone(), rev))
                    .then(Op::Delete(key)),
            )
            .await?;
        if out.succeeded {
            self.st().holders.remove(vip);
        }
        Ok(())
    }

    /// Removes a deleted VIP's holder key (any node may; harmless twice).
    pub async fn forget(&self, vip: &str) -> Result<(), StoreError> {
        self.store
            .txn(Txn::new().then(Op::Delete(holder_key(vip))))
            .await?;
        self.st().holders.remove(vip);
        Ok(())
    }

    /// Every holder record, for status views.
    pub fn holders(&self) -> HashMap<String, (HolderRecord, Revision)> {
        self.st().holders.clone()
    }

    /// Nodes whose heartbeats are current, with the VIPs they are ready for.
    pub fn live_nodes(&self, now: Instant) -> Vec<(String, Vec<String>)> {
        let st = self.st();
        let mut v: Vec<(String, Vec<String>)> = st
            .peers
            .iter()
            .filter(|(_, p)| p.seen + self.timing.takeover > now)
            .map(|(n, p)| (n.clone(), p.ready.clone()))
            .collect();
        v.sort();
        v
    }
}

/// Rendezvous (highest random weight) hash of a VIP and a node: FNV-1a,
/// stable across builds, so every node computes the same order.
fn hrw(vip: &str, node: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in vip.bytes().chain([0u8]).chain(node.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Final mix: FNV alone orders similar names too alike.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vips_spread_over_nodes() {
        let nodes = ["node1", "node2", "node3"];
        let mut count = HashMap::new();
        for i in 0..300 {
            let vip = format!("vip-{i}");
            let first = nodes.iter().max_by_key(|n| hrw(&vip, n)).expect("nodes");
            *count.entry(*first).or_insert(0) += 1;
        }
        for n in nodes {
            let c = count.get(n).copied().unwrap_or(0);
            assert!((60..=140).contains(&c), "{n} ranks first for {c} of 300");
        }
    }

    #[tokio::test]
    async fn a_claim_loses_to_a_live_heartbeat_and_to_a_faster_claim() {
        let dir = std::env::temp_dir().join(format!("furrow-election-{}", std::process::id()));
        let store: Arc<dyn Store> =
            Arc::new(crate::store::embedded::EmbeddedStore::open(&dir.join("s.redb")).unwrap());
        let a = Election::new(store.clone(), "a", Timing::default());
        let b = Election::new(store.clone(), "b", Timing::default());
        let free = Seen {
            holder: None,
            dead_heartbeat: None,
        };
        assert!(a.claim("v", &free).await.unwrap());
        // b decided on the same empty view: too late.
        assert!(!b.claim("v", &free).await.unwrap());
        assert_eq!(b.holder("v").unwrap().0.node, "a");
        // a's heartbeat as b last saw it...
        let out = store
            .txn(Txn::new().then(Op::put_json(
                heartbeat_key("a"),
                &Heartbeat {
                    node: "a".into(),
                    seq: 1,
                    ready: vec!["v".into()],
                },
            )))
            .await
            .unwrap();
        let seen = Seen {
            holder: b.holder("v"),
            dead_heartbeat: Some(("a".into(), out.revision)),
        };
        // ... then a beats again: b's takeover must fail.
        store
            .txn(Txn::new().then(Op::put_json(
                heartbeat_key("a"),
                &Heartbeat {
                    node: "a".into(),
                    seq: 2,
                    ready: vec![],
                },
            )))
            .await
            .unwrap();
        assert!(!b.claim("v", &seen).await.unwrap());
        assert_eq!(b.holder("v").unwrap().0.node, "a");
        // a steps down; b takes the free VIP with a higher epoch.
        a.release("v").await.unwrap();
        assert!(store.get(&holder_key("v")).await.unwrap().is_none());
        let free_again = Seen {
            holder: None,
            dead_heartbeat: None,
        };
        assert!(b.claim("v", &free_again).await.unwrap());
        let _ = std::fs::remove_dir_all(dir);
    }
}
