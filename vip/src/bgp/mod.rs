//! A BGP-4 speaker that advertises this node's VIPs to upstream routers.
//!
//! It announces host routes (a VIP's /32 or /128) with ORIGIN IGP, our AS
//! in the AS_PATH and our address as next hop; it imports nothing. One
//! [`Speaker`] runs one tokio task per peer; [`Speaker::advertise`] and
//! [`Speaker::withdraw`] reach every established peer at once, as UPDATEs
//! sent right away (a VIP failover must not wait for a route
//! advertisement interval).
//!
//! - [`codec`]: the wire format (RFC 4271, 4760, 5492, 6793, 2918, 9003),
//!   every malformed input a typed error carrying its NOTIFICATION;
//! - [`fsm`]: the RFC 4271 state machine, sans I/O (time is an argument);
//! - [`rib`]: what each peer is told;
//! - session tasks: connection (with optional TCP MD5 and source address),
//!   timers, and the peer's Adj-RIB-Out.
//!
//! Sessions are outbound only: the speaker connects to its peers and does
//! not listen, so the router must accept connections (BIRD, FRR and the
//! like do by default).
//!
//! ```no_run
//! # async fn f() -> Result<(), furrow_vip::bgp::ConfigError> {
//! use furrow_vip::bgp::{PeerConfig, Speaker, SpeakerConfig};
//! let speaker = Speaker::start(SpeakerConfig::new(65001, "10.0.0.2".parse().unwrap()))?;
//! speaker.set_peers(vec![PeerConfig::new("tor1", "10.0.0.1".parse().unwrap(), 65000)])?;
//! speaker.advertise("10.200.0.1/32".parse().unwrap());
//! // ... on step-down:
//! speaker.withdraw("10.200.0.1/32".parse().unwrap());
//! speaker.shutdown().await;
//! # Ok(()) }
//! ```

pub mod codec;
pub mod config;
pub mod fsm;
pub mod rib;
mod session;
mod sockopt;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ipnet::IpNet;
use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use codec::Family;
pub use config::{ConfigError, PeerConfig, SpeakerConfig};
pub use fsm::State as PeerState;
pub use session::{PeerCounters, PeerStatus};

use session::{PeerTask, StatusCell, StopReason};

/// How long `shutdown` waits for one peer to say goodbye.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

struct PeerSlot {
    cfg: PeerConfig,
    status: Arc<Mutex<StatusCell>>,
    stop: Option<oneshot::Sender<StopReason>>,
    task: JoinHandle<()>,
}

impl PeerSlot {
    fn stop(&mut self, reason: StopReason) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(reason);
        }
    }
}

struct Peers {
    active: BTreeMap<String, PeerSlot>,
    /// Tasks of removed or replaced peers, still saying goodbye.
    retiring: Vec<JoinHandle<()>>,
}

struct Inner {
    cfg: Arc<SpeakerConfig>,
    runtime: Handle,
    rib: watch::Sender<BTreeSet<IpNet>>,
    peers: Mutex<Peers>,
    shut_down: AtomicBool,
}

/// The BGP speaker: a cheap, cloneable handle. Dropping the last handle
/// stops every session (each with a Cease) as [`Speaker::shutdown`]
/// does, without waiting.
#[derive(Clone)]
pub struct Speaker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Speaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Speaker")
            .field("local_as", &self.inner.cfg.local_as)
            .field("router_id", &self.inner.cfg.router_id)
            .finish_non_exhaustive()
    }
}

impl Speaker {
    /// Starts a speaker with no peers and nothing to advertise. Must be
    /// called inside a tokio runtime; the sessions run on it (and their
    /// sockets are opened by its threads, in their network namespace).
    pub fn start(cfg: SpeakerConfig) -> Result<Speaker, ConfigError> {
        cfg.validate()?;
        let runtime = Handle::try_current().map_err(|_| ConfigError::NoRuntime)?;
        info!(local_as = cfg.local_as, router_id = %cfg.router_id, "BGP speaker started");
        let (rib, _) = watch::channel(BTreeSet::new());
        Ok(Speaker {
            inner: Arc::new(Inner {
                cfg: Arc::new(cfg),
                runtime,
                rib,
                peers: Mutex::new(Peers {
                    active: BTreeMap::new(),
                    retiring: Vec::new(),
                }),
                shut_down: AtomicBool::new(false),
            }),
        })
    }

    pub fn config(&self) -> &SpeakerConfig {
        &self.inner.cfg
    }

    fn peers_lock(&self) -> MutexGuard<'_, Peers> {
        // A panic while holding the lock leaves consistent data (every
        // update is a single insert or remove), so poisoning is ignored.
        self.inner.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the peer list. New peers start connecting; removed ones
    /// are closed with a Cease (Peer De-configured); changed ones are
    /// closed with a Cease (Other Configuration Change) and started anew;
    /// unchanged ones are left alone. Nothing changes if any peer is
    /// invalid.
    pub fn set_peers(&self, peers: Vec<PeerConfig>) -> Result<(), ConfigError> {
        config::validate_peers(&peers)?;
        let mut guard = self.peers_lock();
        // Checked under the lock: shutdown takes it before stopping peers.
        if self.inner.shut_down.load(Ordering::SeqCst) {
            return Err(ConfigError::ShutDown);
        }
        let state = &mut *guard;
        state.retiring.retain(|t| !t.is_finished());
        let mut old = std::mem::take(&mut state.active);
        for cfg in peers {
            match old.remove(&cfg.name) {
                Some(slot) if slot.cfg == cfg => {
                    state.active.insert(cfg.name.clone(), slot);
                }
                Some(mut slot) => {
                    info!(peer = %cfg.name, "BGP peer reconfigured; restarting its session");
                    slot.stop(StopReason::Reconfigured);
                    let slot = self.spawn(cfg, Some(slot.task));
                    state.active.insert(slot.cfg.name.clone(), slot);
                }
                None => {
                    let slot = self.spawn(cfg, None);
                    state.active.insert(slot.cfg.name.clone(), slot);
                }
            }
        }
        for (name, mut slot) in old {
            info!(peer = %name, "BGP peer removed");
            slot.stop(StopReason::Deconfigured);
            state.retiring.push(slot.task);
        }
        Ok(())
    }

    fn spawn(&self, cfg: PeerConfig, after: Option<JoinHandle<()>>) -> PeerSlot {
        let status = Arc::new(Mutex::new(StatusCell::new(&cfg)));
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = PeerTask::new(
            self.inner.cfg.clone(),
            cfg.clone(),
            status.clone(),
            self.inner.rib.subscribe(),
        );
        let handle = self.inner.runtime.spawn(async move {
            // A replaced session finishes its goodbye before the new one
            // connects, so the router never sees both.
            if let Some(prev) = after {
                let _ = tokio::time::timeout(STOP_TIMEOUT, prev).await;
            }
            task.run(stop_rx).await;
        });
        PeerSlot {
            cfg,
            status,
            stop: Some(stop_tx),
            task: handle,
        }
    }

    /// Advertises `prefix` (host bits are cleared) to every peer that can
    /// carry it. Idempotent.
    pub fn advertise(&self, prefix: IpNet) {
        let p = prefix.trunc();
        if self.inner.rib.send_if_modified(|rib| rib.insert(p)) {
            info!(%prefix, "BGP advertise");
        }
    }

    /// Withdraws `prefix` from every peer. Idempotent.
    pub fn withdraw(&self, prefix: IpNet) {
        let p = prefix.trunc();
        if self.inner.rib.send_if_modified(|rib| rib.remove(&p)) {
            info!(%prefix, "BGP withdraw");
        }
    }

    /// Replaces everything advertised with `prefixes` in one step: peers
    /// get the difference (withdrawals first), as from a series of
    /// `advertise`/`withdraw` calls.
    pub fn set_advertised(&self, prefixes: impl IntoIterator<Item = IpNet>) {
        let new: BTreeSet<IpNet> = prefixes.into_iter().map(|p| p.trunc()).collect();
        self.inner.rib.send_if_modified(|rib| {
            if *rib == new {
                return false;
            }
            info!(prefixes = ?new, "BGP advertise set");
            *rib = new;
            true
        });
    }

    /// What the speaker advertises (to every peer that can carry it).
    pub fn advertised(&self) -> Vec<IpNet> {
        self.inner.rib.borrow().iter().copied().collect()
    }

    /// A status snapshot of every peer, by name.
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.peers_lock()
            .active
            .values()
            .map(|s| {
                s.status
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .snapshot()
            })
            .collect()
    }

    /// Closes every session with a Cease (Administrative Shutdown) and
    /// waits (a few seconds at most) for the tasks to end. Later calls to
    /// `set_peers` fail; `advertise`/`withdraw` have no effect on the wire.
    pub async fn shutdown(&self) {
        let (slots, retiring) = {
            let mut p = self.peers_lock();
            self.inner.shut_down.store(true, Ordering::SeqCst);
            (
                std::mem::take(&mut p.active),
                std::mem::take(&mut p.retiring),
            )
        };
        let mut tasks = retiring;
        for (_, mut slot) in slots {
            slot.stop(StopReason::Shutdown);
            tasks.push(slot.task);
        }
        for t in tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(STOP_TIMEOUT, t).await.is_err() {
                warn!("BGP peer task did not stop in time; aborted");
                abort.abort();
            }
        }
        info!("BGP speaker shut down");
    }
}

#[cfg(test)]
mod tests;
