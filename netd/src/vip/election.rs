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
//!
//! With `--vip-election kubernetes` the holder of each VIP is a
//! coordination.k8s.io Lease instead (`kubernetes::lease`: client-go's
//! rules, expiry judged on this node's monotonic clock from when it saw the
//! record last change). A lease loop reads every known VIP's Lease each
//! `lease_period` and renews this node's; claims, releases and fencing go
//! through the same calls as above, so the controller does not know which
//! backend decides. No heartbeats: a node only knows the holder, not who
//! else is ready (no ranking; of concurrent claims the API server's
//! resourceVersion check lets exactly one win).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::kubernetes::lease::{self as klease, LeaseApi, LeaseRecord, Observed};
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
    /// Lease mode: every VIP the controller knows (the loop reads them all).
    known: Vec<String>,
    /// Lease mode: per VIP, what this node saw of its Lease.
    leases: HashMap<String, LeaseView>,
    /// Lease mode: until when the last successful round lets a node that
    /// holds nothing claim (the API server answers).
    api_valid_until: Option<Instant>,
}

#[derive(Debug, Default, Clone)]
struct LeaseView {
    observed: Option<Observed>,
    /// The holder is silent past the lease duration (as seen here).
    expired: bool,
    /// While ours: until when the last accepted write lets us hold it.
    held_until: Option<Instant>,
}

/// Lease mode's settings.
struct LeaseMode {
    api: Arc<dyn LeaseApi>,
    duration_secs: u32,
    period: Duration,
    /// Zero of the monotonic milliseconds the lease decisions use.
    base: Instant,
}

/// This node's view of the election, shared by the VIP tasks.
pub struct Election {
    store: Arc<dyn Store>,
    node: String,
    timing: Timing,
    /// One node, embedded store: nobody to fence against.
    local: bool,
    /// Holders are Kubernetes Leases (`--vip-election kubernetes`).
    lease: Option<LeaseMode>,
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
            lease: None,
            st: Mutex::new(State::default()),
            changed: Notify::new(),
        })
    }

    /// Holders decided by Leases through `api`. The lease lasts the
    /// takeover time rounded up to whole seconds (the Lease field's unit);
    /// this node renews every quarter of it.
    pub fn with_leases(
        store: Arc<dyn Store>,
        node: &str,
        timing: Timing,
        api: Arc<dyn LeaseApi>,
    ) -> Arc<Self> {
        let duration_secs = lease_duration_secs(timing.takeover);
        let period = (Duration::from_secs(u64::from(duration_secs)) / 4).max(timing.heartbeat);
        Arc::new(Election {
            store,
            node: node.to_string(),
            timing,
            local: false,
            lease: Some(LeaseMode {
                api,
                duration_secs,
                period,
                base: Instant::now(),
            }),
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

    pub fn uses_leases(&self) -> bool {
        self.lease.is_some()
    }

    pub fn backend(&self) -> &'static str {
        if self.lease.is_some() {
            "kubernetes-lease"
        } else if self.local {
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
        if self.lease.is_some() {
            let me = self.clone();
            tokio::spawn(async move { me.lease_loop().await });
            return Ok(());
        }
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
        if self.local || self.lease.is_some() {
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

    /// Whether `vip`, held by `holder`, may be taken over now: with Leases
    /// when its Lease went unrenewed for the lease duration (as seen here),
    /// else when the holder's heartbeat is dead ([`Election::dead_heartbeat`],
    /// whose revision the claim then requires unchanged).
    pub fn takeover_allowed(&self, vip: &str, holder: &str, now: Instant) -> Option<Revision> {
        if self.lease.is_some() {
            return self
                .st()
                .leases
                .get(vip)
                .is_some_and(|l| l.expired)
                .then_some(0);
        }
        self.dead_heartbeat(holder, now)
    }

    /// Lease mode: every VIP the controller knows, so the lease loop
    /// follows their holders (the store mode's watch sees them all anyway).
    pub fn set_known(&self, vips: Vec<String>) {
        self.st().known = vips;
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
        if self.lease.is_some() {
            // No heartbeats, so no view of who else is ready.
            return 0;
        }
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
        if self.lease.is_some() {
            return self.within_fence(self.lease_round(vip, true)).await;
        }
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
        if self.lease.is_some() {
            return self.within_fence(self.lease_release(vip)).await;
        }
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
        if let Some(lm) = &self.lease {
            lm.api
                .delete(&klease::lease_name(vip))
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            let mut st = self.st();
            st.holders.remove(vip);
            st.leases.remove(vip);
            return Ok(());
        }
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
        if self.lease.is_some() {
            // Leases say who holds, not who else is ready: only ourselves.
            return vec![(self.node.clone(), st.ready.clone())];
        }
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

/// Lease mode.
impl Election {
    fn lease_now_ms(&self) -> u64 {
        self.lease
            .as_ref()
            .map_or(0, |l| l.base.elapsed().as_millis() as u64)
    }

    /// Reads every known VIP's Lease each period and renews ours (only
    /// for VIPs this node is ready for: one it is not ready for is
    /// released by the controller, or expires).
    async fn lease_loop(self: Arc<Self>) {
        let Some(lm) = &self.lease else { return };
        let mut tick = tokio::time::interval(lm.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (known, ready) = {
                let st = self.st();
                (st.known.clone(), st.ready.clone())
            };
            let mut changed = false;
            let mut error = None;
            let round_started = Instant::now();
            for vip in &known {
                let before = self.holder(vip).map(|(h, _)| h.node);
                // may_take=false: taking goes through the controller's
                // claim (which then adds the address); renewing our own
                // lease happens here, for VIPs we are ready for.
                let renew = ready.iter().any(|r| r == vip);
                let outcome = tokio::time::timeout(
                    self.timing.rpc_timeout(),
                    self.lease_round_inner(vip, false, renew),
                )
                .await;
                match outcome {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => error = Some(e.to_string()),
                    Err(_) => {
                        error = Some(format!(
                            "Lease call took longer than {:?}",
                            self.timing.rpc_timeout()
                        ))
                    }
                }
                changed |= self.holder(vip).map(|(h, _)| h.node) != before;
            }
            {
                let mut st = self.st();
                st.leases.retain(|v, _| known.contains(v));
                st.holders.retain(|v, _| known.contains(v));
                if error.is_none() {
                    let until = round_started + self.lease_validity();
                    st.api_valid_until = Some(until);
                    st.last_heartbeat = Some(round_started);
                }
                st.heartbeat_error = error;
                recompute_valid_until(&mut st, &self.node);
            }
            if changed {
                self.changed.notify_waiters();
            }
        }
    }

    /// How long after sending an accepted write this node may act on it.
    fn lease_validity(&self) -> Duration {
        let d = self.lease.as_ref().map_or(self.timing.takeover, |l| {
            Duration::from_secs(u64::from(l.duration_secs))
        });
        d.saturating_sub(self.timing.margin)
    }

    /// One read-decide-write round for `vip`, taking it if free or expired.
    async fn lease_round(&self, vip: &str, take: bool) -> Result<bool, StoreError> {
        let held = self
            .lease_round_inner(vip, take, true)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        if held {
            self.changed.notify_waiters();
        }
        Ok(held)
    }

    async fn lease_round_inner(
        &self,
        vip: &str,
        take: bool,
        renew: bool,
    ) -> Result<bool, klease::LeaseApiError> {
        let Some(lm) = &self.lease else {
            return Ok(false);
        };
        let mut observed = self.st().leases.get(vip).and_then(|l| l.observed.clone());
        let mine = self.holder(vip).is_some_and(|(h, _)| h.node == self.node);
        if mine && !renew {
            // Ours but not to be renewed: only look.
            let v = lm.api.get(&klease::lease_name(vip)).await?;
            let rec = v
                .as_ref()
                .map(klease::parse_lease)
                .transpose()
                .map_err(|e| klease::LeaseApiError(e.to_string()))?;
            self.absorb(vip, rec.as_ref(), observed, None);
            return Ok(false);
        }
        let clock = || (self.lease_now_ms(), crate::util::now_millis() * 1000);
        let round = klease::contend(
            lm.api.as_ref(),
            vip,
            &self.node,
            &mut observed,
            take,
            lm.duration_secs,
            &clock,
        )
        .await?;
        let sent = round.sent_ms.map(|ms| lm.base + Duration::from_millis(ms));
        self.absorb(
            vip,
            round.lease.as_ref(),
            observed,
            sent.filter(|_| round.held),
        );
        Ok(round.held)
    }

    /// Records what a round saw: the holder, whether it expired, and our
    /// hold's new bound when a write of ours sent at `sent` was accepted.
    fn absorb(
        &self,
        vip: &str,
        rec: Option<&LeaseRecord>,
        observed: Option<Observed>,
        sent: Option<Instant>,
    ) {
        let validity = self.lease_validity();
        let now_ms = self.lease_now_ms();
        let mut st = self.st();
        let view = st.leases.entry(vip.to_string()).or_default();
        view.observed = observed;
        let holder = rec.and_then(|r| r.holder.clone());
        view.expired = match (rec, &view.observed) {
            (Some(r), Some(o)) if holder.as_deref() != Some(self.node.as_str()) => {
                now_ms >= o.seen_at_ms + u64::from(r.duration_secs) * 1000
            }
            _ => false,
        };
        if holder.as_deref() != Some(self.node.as_str()) {
            view.held_until = None;
        } else if let Some(sent) = sent {
            view.held_until = Some(sent + validity);
        }
        match (rec, holder) {
            (Some(r), Some(node)) => {
                // Since when, as this node saw the holder change (the
                // Lease's acquireTime is another node's wall clock).
                let since_ms = st
                    .holders
                    .get(vip)
                    .filter(|(h, _)| h.node == node)
                    .map_or_else(crate::util::now_millis, |(h, _)| h.since_ms);
                let record = HolderRecord {
                    node,
                    since_ms,
                    epoch: u64::from(r.transitions),
                };
                let rev = r.resource_version.parse::<Revision>().unwrap_or(0);
                st.holders.insert(vip.to_string(), (record, rev));
            }
            _ => {
                st.holders.remove(vip);
            }
        }
        recompute_valid_until(&mut st, &self.node);
    }

    async fn lease_release(&self, vip: &str) -> Result<(), StoreError> {
        let Some(lm) = &self.lease else {
            return Ok(());
        };
        if self.holder(vip).is_none_or(|(h, _)| h.node != self.node) {
            return Ok(());
        }
        klease::give_up(
            lm.api.as_ref(),
            vip,
            &self.node,
            crate::util::now_millis() * 1000,
        )
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let mut st = self.st();
        st.holders.remove(vip);
        if let Some(v) = st.leases.get_mut(vip) {
            v.held_until = None;
            // Our own release must not start a clock on ourselves.
            v.observed = None;
        }
        recompute_valid_until(&mut st, &self.node);
        Ok(())
    }
}

/// Lease mode: this node may act until the earliest bound of the Leases
/// it holds (each renewed on its own), or, holding none, until its last
/// successful round's bound.
fn recompute_valid_until(st: &mut State, me: &str) {
    let held = st
        .leases
        .iter()
        .filter(|(vip, _)| st.holders.get(*vip).is_some_and(|(h, _)| h.node == me))
        .filter_map(|(_, l)| l.held_until)
        .min();
    st.valid_until = held.or(st.api_valid_until);
}

/// A Lease's duration for a takeover time: whole seconds, rounded up.
pub fn lease_duration_secs(takeover: Duration) -> u32 {
    (takeover.as_millis().div_ceil(1000) as u32).max(1)
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

    mod leases {
        use super::super::*;
        use crate::kubernetes::lease::{LeaseApi, MemoryLeases};

        fn store() -> (Arc<dyn Store>, std::path::PathBuf) {
            let dir = std::env::temp_dir().join(format!(
                "furrow-lease-election-{}-{}",
                std::process::id(),
                crate::util::now_millis()
            ));
            let s: Arc<dyn Store> =
                Arc::new(crate::store::embedded::EmbeddedStore::open(&dir.join("s.redb")).unwrap());
            (s, dir)
        }

        fn free() -> Seen {
            Seen {
                holder: None,
                dead_heartbeat: None,
            }
        }

        async fn node(
            store: &Arc<dyn Store>,
            api: &Arc<MemoryLeases>,
            name: &str,
        ) -> Arc<Election> {
            let e = Election::with_leases(store.clone(), name, Timing::default(), api.clone());
            e.set_known(vec!["v".into()]);
            e.set_ready(vec!["v".into()]);
            e.start().await.unwrap();
            e
        }

        /// Lets the lease loops run for `ms` of (paused) time.
        async fn run_for(ms: u64) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }

        #[tokio::test(start_paused = true)]
        async fn one_holder_renews_a_silent_one_is_replaced_only_after_its_bound() {
            let (store, dir) = store();
            let api = Arc::new(MemoryLeases::new("kube-system"));
            let a = node(&store, &api, "a").await;
            let b = node(&store, &api, "b").await;
            assert_eq!(a.backend(), "kubernetes-lease");
            assert!(a.claim("v", &free()).await.unwrap());
            assert!(!b.claim("v", &free()).await.unwrap(), "a holds it");
            assert_eq!(b.holder("v").unwrap().0.node, "a");
            // a renews on its own (lease 1 s, every 250 ms): b never may take it.
            for _ in 0..12 {
                run_for(250).await;
                let now = Instant::now();
                assert!(a.valid(now), "a keeps its right while renewing");
                assert_eq!(b.takeover_allowed("v", "a", now), None);
                assert_eq!(b.holder("v").unwrap().0.node, "a");
            }
            let lease = api.peek("furrow-vip-v").unwrap();
            assert_eq!(lease["spec"]["holderIdentity"], "a");
            assert_eq!(lease["spec"]["leaseDurationSeconds"], 1);
            // a stops renewing (not ready, and its release never arrives).
            a.set_ready(vec![]);
            let a_bound = a.valid_until().unwrap();
            let mut taken_at = None;
            for _ in 0..40 {
                run_for(50).await;
                let now = Instant::now();
                if b.takeover_allowed("v", "a", now).is_some()
                    && b.claim("v", &free()).await.unwrap()
                {
                    taken_at = Some(now);
                    break;
                }
            }
            let taken_at = taken_at.expect("b took the silent holder's VIP");
            // Fencing: a's right ended at least the margin before b's claim.
            assert!(
                a_bound + Timing::default().margin <= taken_at,
                "a may hold until {a_bound:?}, b took it at {taken_at:?}"
            );
            assert!(!a.valid(taken_at) || a.holder("v").unwrap().0.node != "a");
            let lease = api.peek("furrow-vip-v").unwrap();
            assert_eq!(lease["spec"]["holderIdentity"], "b");
            assert_eq!(lease["spec"]["leaseTransitions"], 1);
            run_for(300).await;
            assert_eq!(a.holder("v").unwrap().0.node, "b", "a's loop sees b");
            let _ = std::fs::remove_dir_all(dir);
        }

        #[tokio::test(start_paused = true)]
        async fn a_release_hands_over_at_once_and_an_unreachable_api_fences() {
            let (store, dir) = store();
            let api = Arc::new(MemoryLeases::new("kube-system"));
            let a = node(&store, &api, "a").await;
            let b = node(&store, &api, "b").await;
            assert!(a.claim("v", &free()).await.unwrap());
            run_for(300).await;
            a.release("v").await.unwrap();
            assert!(api.peek("furrow-vip-v").unwrap()["spec"]
                .get("holderIdentity")
                .is_none());
            // Free: b needs no expiry.
            assert!(b.claim("v", &free()).await.unwrap());
            // The API server goes away: b's right ends within the lease
            // duration minus the margin, and it says why.
            let bound = b.valid_until().unwrap();
            api.set_failing(true);
            run_for(1000).await;
            let now = Instant::now();
            assert!(bound <= now && !b.valid(now), "b fenced itself");
            assert!(b.heartbeat_error().is_some());
            assert!(b.claim("v", &free()).await.is_err());
            // Back: b renews (the lease is still its own) and is valid again.
            api.set_failing(false);
            run_for(600).await;
            assert!(b.valid(Instant::now()));
            assert_eq!(b.heartbeat_error(), None);
            // A deleted VIP's Lease goes.
            b.forget("v").await.unwrap();
            assert!(api.peek("furrow-vip-v").is_none());
            let _ = std::fs::remove_dir_all(dir);
        }

        #[tokio::test(start_paused = true)]
        async fn a_recorded_lease_of_another_node_is_waited_for_then_taken() {
            let (store, dir) = store();
            let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/kube/leases/held-node2.json");
            let recorded: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
            let api = Arc::new(MemoryLeases::new("furrow-system"));
            api.insert_recorded(recorded);
            let e = Election::with_leases(store.clone(), "node1", Timing::default(), api.clone());
            e.set_known(vec!["cp-vip".into()]);
            e.set_ready(vec!["cp-vip".into()]);
            e.start().await.unwrap();
            run_for(100).await;
            let (h, _) = e.holder("cp-vip").unwrap();
            assert_eq!((h.node.as_str(), h.epoch), ("node2", 3));
            let since = h.since_ms;
            assert!(since > 1_600_000_000_000, "a real time, not {since}");
            run_for(300).await;
            assert_eq!(
                e.holder("cp-vip").unwrap().0.since_ms,
                since,
                "unchanged holder"
            );
            // Its renewTime is days old, but expiry counts from when this
            // node saw it (2 s lease): not before.
            run_for(1500).await;
            assert_eq!(e.takeover_allowed("cp-vip", "node2", Instant::now()), None);
            assert!(!e.claim("cp-vip", &free()).await.unwrap());
            run_for(800).await;
            assert!(e
                .takeover_allowed("cp-vip", "node2", Instant::now())
                .is_some());
            assert!(e.claim("cp-vip", &free()).await.unwrap());
            let l = api.peek("furrow-vip-cp-vip").unwrap();
            assert_eq!(l["spec"]["holderIdentity"], "node1");
            assert_eq!(l["spec"]["leaseTransitions"], 4);
            assert_eq!(l["metadata"]["namespace"], "furrow-system");
            let _ = std::fs::remove_dir_all(dir);
        }

        #[test]
        fn lease_durations_round_up_to_seconds() {
            assert_eq!(lease_duration_secs(Duration::from_millis(1000)), 1);
            assert_eq!(lease_duration_secs(Duration::from_millis(1001)), 2);
            assert_eq!(lease_duration_secs(Duration::from_millis(60)), 1);
            let _ = MemoryLeases::new("x").namespace();
        }
    }
}
