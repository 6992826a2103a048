//! The kernel half of VIP fencing, for the VIP controller (service.rs).
//!
//! The controller drops a VIP's address when the election says this node
//! may no longer hold it (`Election::valid`). That only works while netd
//! runs: a stopped or starved netd leaves the address on its interface
//! (3 s lifetime, refreshed every second) and the kernel keeps answering
//! ARP/NDP for it after another node has taken the VIP (1 s). [`Fence`]
//! puts `furrow_ebpf::fence::VipFence` on every interface carrying a held
//! VIP and keeps each VIP's deadline in the kernel at the election's
//! `valid_until`, so the kernel stops answering for it at the fencing
//! bound whether or not netd gets to run then.
//!
//! Use from the controller:
//! - [`Fence::start`] once, after the addresses an earlier netd left are
//!   removed: loads the program and removes the filters and deadlines an
//!   earlier netd of this instance left;
//! - [`Fence::hold`] when an address goes on (`put_vip`);
//! - [`Fence::follow`] once, with `Election::valid_until` (None, the
//!   local backend: no deadline): a task that keeps the deadlines at the
//!   election's bound ([`Fence::refresh`] every 50 ms);
//! - [`Fence::lapsed`] in every pass: a held VIP whose deadline passed in
//!   the kernel is given up like a fenced one (and claimed again if this
//!   node still may);
//! - [`Fence::release`] after an address is removed (`del_vip`);
//! - [`Fence::status`] / [`Fence::vip_state`] for `netctl vip` and
//!   metrics.
//!
//! Failures never stop a VIP from being held: if the program cannot be
//! loaded (no BPF, no bpffs), a warning is logged once and VIPs are held
//! with netd's own fence only; an interface the filter cannot be put on
//! (say, a plain `ingress` qdisc where clsact is needed) is logged once
//! and retried every few seconds. [`Fence::status`] says which.
//!
//! Next to the datapath ([`Fence::linked`]) the fence attaches through
//! tcx links pinned in the instance's bpffs directory, first on each
//! egress hook (before the datapath's links, which run before any classic
//! filter); with `--vip-only` (no datapath, no pins) through cls_bpf
//! filters. Either way it stays when netd dies (and keeps fencing with the
//! deadlines last written, which is the point), so [`Fence::start`]
//! removes this instance's (found by pin, or by the filter handle derived
//! from the pin directory) from every interface before VIPs are held
//! again.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use furrow_ebpf::fence::{fence_handle, FenceDrops, MonotonicNs, VipFence};
use tokio::time::Instant;

/// How often an interface the filter could not be put on is retried.
const RETRY: Duration = Duration::from_secs(5);
/// How often [`Fence::follow`] rewrites the deadlines. The election's
/// `valid_until` moves every heartbeat (100 ms) and lies 600-700 ms
/// ahead: a deadline in the kernel trails it by at most this much.
const FOLLOW_EVERY: Duration = Duration::from_millis(50);
/// A deadline this close is treated as passed by [`Fence::refresh`]: the
/// program compares it with the clock at every frame, and a write racing
/// the moment it passes must not revive it for the frames after.
const LAPSE_GUARD: Duration = Duration::from_millis(10);

/// The kernel fence of one netd instance. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Fence {
    /// Where its maps are pinned; None (netd's default): nowhere.
    pin_dir: Option<PathBuf>,
    /// This instance's filter handle.
    handle: u32,
    /// Links mode: the instance directory the links are pinned in.
    links: Option<PathBuf>,
    inner: Arc<Mutex<Inner>>,
    /// Serialises [`Fence::start`]: a second load racing the first would
    /// clear what was held meanwhile.
    starting: Arc<tokio::sync::Mutex<()>>,
}

enum Loaded {
    /// [`Fence::start`] not called yet.
    NotStarted,
    Active(Box<VipFence>),
    /// Could not be loaded: VIPs are fenced by netd's loop only.
    Unavailable(String),
}

struct HeldVip {
    ifindex: u32,
    /// What the kernel has for it; None if writing it failed.
    written: Option<MonotonicNs>,
    /// Its lapse was logged.
    lapse_logged: bool,
}

struct Inner {
    loaded: Loaded,
    held: BTreeMap<IpAddr, HeldVip>,
    /// Interfaces this process put the filter on.
    attached: BTreeSet<u32>,
    /// Interfaces the filter could not be put on, with why.
    failed: BTreeMap<u32, String>,
    next_retry: Option<Instant>,
    /// Map errors already logged (by address), so a full map does not
    /// log every 50 ms.
    map_warned: BTreeSet<IpAddr>,
}

/// How one address is fenced, for `netctl vip`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VipFenceState {
    /// The kernel stops answering for it at the deadline (in `left`).
    Enforced { left: Duration },
    /// Its deadline passed: the kernel does not answer for it (until it
    /// is given up and claimed again).
    Lapsed,
    /// In the kernel, without a deadline (the local backend: nobody to
    /// fence against).
    NoDeadline,
    /// Held without the kernel fence (netd's loop still fences it).
    NotEnforced(String),
    /// Not held here.
    NotHeld,
}

impl std::fmt::Display for VipFenceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VipFenceState::Enforced { left } => {
                write!(f, "kernel fence in {} ms", left.as_millis())
            }
            VipFenceState::Lapsed => f.write_str("fenced by the kernel (deadline passed)"),
            VipFenceState::NoDeadline => f.write_str("kernel fence, no deadline"),
            VipFenceState::NotEnforced(why) => write!(f, "no kernel fence: {why}"),
            VipFenceState::NotHeld => f.write_str("-"),
        }
    }
}

/// The whole fence, for status and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FenceStatus {
    /// The program is loaded.
    pub available: bool,
    /// Why VIPs (all, or some) are held without the kernel fence.
    pub problem: Option<String>,
    /// Interfaces carrying the filter.
    pub interfaces: Vec<u32>,
    /// Addresses with a deadline in the kernel.
    pub enforced: usize,
    pub drops: FenceDrops,
}

impl Fence {
    /// The fence of the instance whose BPF directory is `bpf_dir` (its
    /// `--bpf-dir`). Nothing is pinned there (`--vip-only` creates no
    /// pins): the path only gives this instance's filters a handle of
    /// their own ([`fence_handle`]), which is how a restarted netd finds
    /// its predecessor's. The drop counters restart with netd. Loads
    /// nothing yet: see [`Fence::start`].
    pub fn new(bpf_dir: impl Into<PathBuf>) -> Fence {
        let dir = bpf_dir.into();
        Fence::with(None, fence_handle(Some(&dir)))
    }

    /// Like [`Fence::new`], with the maps pinned in `bpf_dir/maps` (the
    /// drop counters survive restarts; needs bpffs, mounted if need be).
    /// Same handle as [`Fence::new`] with the same directory.
    pub fn pinned(bpf_dir: impl Into<PathBuf>) -> Fence {
        let dir = bpf_dir.into();
        let handle = fence_handle(Some(&dir));
        Fence::with(Some(dir), handle)
    }

    /// The same fence attaching through tcx links pinned in
    /// `bpf_dir/links` (see the module doc): what netd uses whenever the
    /// datapath runs.
    pub fn linked(mut self, bpf_dir: impl Into<PathBuf>) -> Fence {
        self.links = Some(bpf_dir.into());
        self
    }

    fn with(pin_dir: Option<PathBuf>, handle: u32) -> Fence {
        Fence {
            pin_dir,
            handle,
            links: None,
            starting: Default::default(),
            inner: Arc::new(Mutex::new(Inner {
                loaded: Loaded::NotStarted,
                held: BTreeMap::new(),
                attached: BTreeSet::new(),
                failed: BTreeMap::new(),
                next_retry: None,
                map_warned: BTreeSet::new(),
            })),
        }
    }

    /// A fence that never loads anything (netd's loop fences alone).
    pub fn unavailable(why: impl Into<String>) -> Fence {
        let f = Fence::with(None, fence_handle(None));
        f.lock().loaded = Loaded::Unavailable(why.into());
        f
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere must not take the fence down with it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads the program and removes every filter and deadline an earlier
    /// netd of this instance left (call it after removing the addresses
    /// that netd left, before holding anything). On failure, logs a
    /// warning once and runs without the kernel fence. Idempotent.
    pub async fn start(&self) {
        if !matches!(self.lock().loaded, Loaded::NotStarted) {
            return;
        }
        let _starting = self.starting.lock().await;
        if !matches!(self.lock().loaded, Loaded::NotStarted) {
            return;
        }
        let (pin_dir, handle) = (self.pin_dir.clone(), self.handle);
        let links = self.links.clone();
        let opened = tokio::task::spawn_blocking(move || {
            let mut fence = VipFence::open_with(pin_dir.as_deref(), handle)?;
            if let Some(dir) = links {
                fence = fence.with_tcx_links(&dir)?;
            }
            let stale = fence.detach_all()?;
            fence.clear()?;
            Ok::<_, furrow_ebpf::DatapathError>((fence, stale))
        })
        .await
        .unwrap_or_else(|e| {
            Err(furrow_ebpf::DatapathError::InvalidConfig(format!(
                "loading task failed: {e}"
            )))
        });
        let mut inner = self.lock();
        match opened {
            Ok((fence, stale)) => {
                for ifindex in stale {
                    tracing::info!(
                        ifindex,
                        "removed a VIP fence filter left by an earlier netd"
                    );
                }
                tracing::info!(
                    handle = format_args!("{:#x}", fence.handle()),
                    "kernel VIP fence loaded"
                );
                inner.loaded = Loaded::Active(Box::new(fence));
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "kernel VIP fence unavailable: VIPs are fenced by netd alone (a stalled netd may answer for a VIP after another node took it)"
                );
                inner.loaded = Loaded::Unavailable(e.to_string());
            }
        }
    }

    /// `ip` goes on (or stays on) `ifindex`: its deadline is set to
    /// `valid_until` (None: no deadline), re-arming one that lapsed, and
    /// the interface gets the filter if it has not. Call it when the
    /// address goes on after a claim; [`Fence::refresh`] does the rest.
    /// Never fails: what goes wrong is logged and shown by
    /// [`Fence::status`].
    pub async fn hold(&self, ifindex: u32, ip: IpAddr, valid_until: Option<Instant>) {
        self.start().await;
        let deadline = deadline_of(valid_until);
        let (attach, detach) = {
            let mut inner = self.lock();
            let Inner {
                loaded,
                held,
                attached,
                map_warned,
                ..
            } = &mut *inner;
            let (written, active) = match loaded {
                Loaded::Active(fence) => (write_deadline(fence, map_warned, ip, deadline), true),
                // Recorded all the same, so status tells which VIPs lack it.
                _ => (None, false),
            };
            let old = held.insert(
                ip,
                HeldVip {
                    ifindex,
                    written,
                    lapse_logged: false,
                },
            );
            let detach = old
                .map(|o| o.ifindex)
                .filter(|&o| o != ifindex && !held.values().any(|h| h.ifindex == o));
            (
                active && !attached.contains(&ifindex),
                detach.filter(|_| active),
            )
        };
        if let Some(old) = detach {
            self.detach(old).await;
        }
        if attach {
            self.attach(ifindex).await;
        }
    }

    /// Every held VIP's deadline becomes `valid_until` (None: no
    /// deadline), except a VIP whose deadline has already passed: that one
    /// stays fenced ([`Fence::lapsed`]) until [`Fence::hold`] re-arms it
    /// after a new claim. A node whose right lapsed may have lost the VIP
    /// to another node; a heartbeat acknowledged later (netd resumed
    /// after a stall) must not make it answer again on a view of the
    /// holders that has not caught up yet. Only changed deadlines are
    /// written (one map update each, no blocking work); interfaces the
    /// filter could not be put on are retried now and then.
    ///
    /// [`Fence::follow`] calls this every 50 ms on its own.
    pub async fn refresh(&self, valid_until: Option<Instant>) {
        let deadline = deadline_of(valid_until);
        let retry: Vec<u32> = {
            let mut inner = self.lock();
            let Inner {
                loaded,
                held,
                map_warned,
                failed,
                next_retry,
                ..
            } = &mut *inner;
            let Loaded::Active(fence) = loaded else {
                return;
            };
            for (ip, h) in held.iter_mut() {
                if h.written.is_some_and(lapsed) {
                    if !h.lapse_logged {
                        h.lapse_logged = true;
                        tracing::warn!(
                            %ip,
                            "VIP fence deadline passed: the kernel no longer answers for this VIP until it is given up and claimed again"
                        );
                    }
                    continue;
                }
                if h.written != Some(deadline) {
                    h.written = write_deadline(fence, map_warned, *ip, deadline);
                }
            }
            let now = Instant::now();
            if failed.is_empty() || next_retry.is_some_and(|t| t > now) {
                Vec::new()
            } else {
                *next_retry = Some(now + RETRY);
                failed.keys().copied().collect()
            }
        };
        for ifindex in retry {
            self.attach(ifindex).await;
        }
    }

    /// Keeps every held VIP's deadline at `valid_until()` ([`Fence::refresh`]
    /// every 50 ms), on a task of its own: not in the controller's pass,
    /// which may wait on the store (a claim, up to `--etcd-timeout-ms`
    /// while heartbeats still succeed) and would let the deadlines of a
    /// healthy node lapse meanwhile. Runs until the returned task is
    /// aborted (netd: for its lifetime).
    pub fn follow(
        &self,
        valid_until: impl Fn() -> Option<Instant> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FOLLOW_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                me.refresh(valid_until()).await;
            }
        })
    }

    /// Whether `ip`'s deadline has passed in the kernel: it is silenced
    /// there and [`Fence::refresh`] will not revive it. The controller
    /// gives such a VIP up (as when `Election::valid` is false) and claims
    /// it again if it still may; [`Fence::hold`] then re-arms it. False
    /// for a VIP not held or held without the kernel fence.
    pub fn lapsed(&self, ip: IpAddr) -> bool {
        let inner = self.lock();
        matches!(inner.loaded, Loaded::Active(_))
            && inner
                .held
                .get(&ip)
                .and_then(|h| h.written)
                .is_some_and(lapsed)
    }

    /// `ip` is no longer held (call it after its address is removed): its
    /// deadline goes, and so does the filter of an interface left with no
    /// held VIP.
    pub async fn release(&self, ip: IpAddr) {
        let detach = {
            let mut inner = self.lock();
            let Inner {
                loaded,
                held,
                map_warned,
                failed,
                ..
            } = &mut *inner;
            let Some(old) = held.remove(&ip) else {
                return;
            };
            map_warned.remove(&ip);
            let Loaded::Active(fence) = loaded else {
                return;
            };
            if let Err(e) = fence.remove(ip) {
                tracing::warn!(%ip, error = %e, "VIP fence entry not removed");
            }
            let unused = !held.values().any(|h| h.ifindex == old.ifindex);
            if unused {
                failed.remove(&old.ifindex);
            }
            unused.then_some(old.ifindex)
        };
        if let Some(ifindex) = detach {
            self.detach(ifindex).await;
        }
    }

    /// Releases everything (SIGTERM, once every address is gone).
    pub async fn shutdown(&self) {
        let held: Vec<IpAddr> = self.lock().held.keys().copied().collect();
        for ip in held {
            self.release(ip).await;
        }
    }

    async fn attach(&self, ifindex: u32) {
        let me = self.clone();
        let r = tokio::task::spawn_blocking(move || {
            let mut inner = me.lock();
            let Loaded::Active(fence) = &inner.loaded else {
                return Ok(());
            };
            // Released meanwhile: nothing to do.
            if !inner.held.values().any(|h| h.ifindex == ifindex) {
                return Ok(());
            }
            fence.attach(ifindex)?;
            inner.attached.insert(ifindex);
            inner.failed.remove(&ifindex);
            Ok::<_, furrow_ebpf::DatapathError>(())
        })
        .await;
        let err = match r {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("attach task failed: {e}"),
        };
        let mut inner = self.lock();
        if !inner.held.values().any(|h| h.ifindex == ifindex) {
            return;
        }
        if inner.failed.insert(ifindex, err.clone()).is_none() {
            tracing::warn!(
                ifindex,
                error = %err,
                "VIP fence filter not attached: VIPs on this interface are fenced by netd alone (retried every {}s)",
                RETRY.as_secs()
            );
        }
        let retry = Instant::now() + RETRY;
        inner.next_retry = Some(inner.next_retry.map_or(retry, |t| t.min(retry)));
    }

    async fn detach(&self, ifindex: u32) {
        let me = self.clone();
        let r = tokio::task::spawn_blocking(move || {
            let mut inner = me.lock();
            // Held again meanwhile: keep it.
            if inner.held.values().any(|h| h.ifindex == ifindex) {
                return Ok(());
            }
            inner.attached.remove(&ifindex);
            inner.failed.remove(&ifindex);
            match &inner.loaded {
                Loaded::Active(fence) => fence.detach(ifindex).map(|_| ()),
                _ => Ok(()),
            }
        })
        .await;
        match r {
            Ok(Ok(())) => {}
            // Harmless: a filter without deadlines passes everything, and
            // the next start removes it.
            Ok(Err(e)) => tracing::warn!(ifindex, error = %e, "VIP fence filter not removed"),
            Err(e) => tracing::warn!(ifindex, error = %e, "VIP fence detach task failed"),
        }
    }

    /// How `ip` is fenced right now.
    pub fn vip_state(&self, ip: IpAddr) -> VipFenceState {
        let inner = self.lock();
        let Some(h) = inner.held.get(&ip) else {
            return VipFenceState::NotHeld;
        };
        match &inner.loaded {
            Loaded::Active(_) => {}
            Loaded::Unavailable(why) => return VipFenceState::NotEnforced(why.clone()),
            Loaded::NotStarted => return VipFenceState::NotEnforced("not loaded yet".into()),
        }
        if let Some(why) = inner.failed.get(&h.ifindex) {
            return VipFenceState::NotEnforced(why.clone());
        }
        if !inner.attached.contains(&h.ifindex) {
            return VipFenceState::NotEnforced("filter not attached yet".into());
        }
        match h.written {
            None => VipFenceState::NotEnforced("deadline not written (see the log)".into()),
            Some(MonotonicNs::NEVER) => VipFenceState::NoDeadline,
            Some(d) if lapsed(d) => VipFenceState::Lapsed,
            Some(d) => VipFenceState::Enforced {
                left: Duration::from_nanos(d.0.saturating_sub(MonotonicNs::now().0)),
            },
        }
    }

    /// The fence as a whole: for `netctl vip` / status and metrics.
    pub fn status(&self) -> FenceStatus {
        let inner = self.lock();
        let (available, mut problem, drops) = match &inner.loaded {
            Loaded::Active(f) => (
                true,
                None,
                f.drops().unwrap_or_else(|e| {
                    tracing::debug!(error = %e, "reading the VIP fence counters failed");
                    FenceDrops::default()
                }),
            ),
            Loaded::Unavailable(why) => (
                false,
                Some(format!("kernel VIP fence unavailable: {why}")),
                FenceDrops::default(),
            ),
            Loaded::NotStarted => (false, None, FenceDrops::default()),
        };
        if problem.is_none() && !inner.failed.is_empty() {
            let list: Vec<String> = inner
                .failed
                .iter()
                .map(|(i, why)| format!("ifindex {i}: {why}"))
                .collect();
            problem = Some(format!(
                "kernel VIP fence not attached on {}",
                list.join("; ")
            ));
        }
        FenceStatus {
            available,
            problem,
            interfaces: inner.attached.iter().copied().collect(),
            enforced: inner
                .held
                .values()
                .filter(|h| h.written.is_some() && inner.attached.contains(&h.ifindex))
                .count(),
            drops,
        }
    }

    /// Frames the kernel fence dropped, by reason (zeros without it).
    pub fn drops(&self) -> FenceDrops {
        self.status().drops
    }
}

/// Whether a deadline in the kernel has passed (or is about to,
/// [`LAPSE_GUARD`]).
fn lapsed(deadline: MonotonicNs) -> bool {
    deadline != MonotonicNs::NEVER && MonotonicNs::now().saturating_add(LAPSE_GUARD) >= deadline
}

fn deadline_of(valid_until: Option<Instant>) -> MonotonicNs {
    valid_until.map_or(MonotonicNs::NEVER, |t| {
        MonotonicNs::from_instant(t.into_std())
    })
}

/// Writes `ip`'s deadline; logs a failure once per address.
fn write_deadline(
    fence: &mut VipFence,
    warned: &mut BTreeSet<IpAddr>,
    ip: IpAddr,
    deadline: MonotonicNs,
) -> Option<MonotonicNs> {
    match fence.set_deadline(ip, deadline) {
        Ok(()) => {
            warned.remove(&ip);
            Some(deadline)
        }
        Err(e) => {
            if warned.insert(ip) {
                tracing::warn!(%ip, error = %e, "VIP fence deadline not written: this VIP is fenced by netd alone");
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Runs `f` on a current-thread runtime, on a thread of its own in a
    /// new network namespace (threads it spawns, the blocking pool
    /// included, inherit it).
    fn in_netns<T: Send + 'static>(
        f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send + 'static,
    ) -> T {
        std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("unshare(CLONE_NEWNET): tests need root");
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }

    fn ip(args: &str) {
        let out = Command::new("ip")
            .args(args.split_whitespace())
            .output()
            .unwrap();
        assert!(out.status.success(), "ip {args}: {out:?}");
    }

    fn ifindex(name: &str) -> u32 {
        nix::net::if_::if_nametoindex(name).unwrap()
    }

    /// Priorities of the bpf filters on `dev`'s egress, from tc.
    fn egress_prefs(dev: &str) -> Vec<u64> {
        let out = Command::new("tc")
            .args(["-j", "filter", "show", "dev", dev, "egress"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter(|f| f.get("options").is_some() && f["kind"] == "bpf")
                    .filter_map(|f| f["pref"].as_u64())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn pin_dir(tag: &str) -> PathBuf {
        PathBuf::from(format!(
            "/sys/fs/bpf/furrow-test-fence-{tag}-{}",
            std::process::id()
        ))
    }

    #[test]
    fn holds_refreshes_and_releases_vips_per_interface() {
        let pins = pin_dir("hold");
        let p = pins.clone();
        in_netns(move || {
            Box::pin(async move {
                ip("link add d0 type veth peer name d0p");
                ip("link add d1 type veth peer name d1p");
                let (d0, d1) = (ifindex("d0"), ifindex("d1"));
                let fence = Fence::new(&p);
                let a: IpAddr = "198.18.0.100".parse().unwrap();
                let b: IpAddr = "198.18.0.101".parse().unwrap();
                let c: IpAddr = "fd00::100".parse().unwrap();
                assert_eq!(fence.vip_state(a), VipFenceState::NotHeld);

                let until = Instant::now() + Duration::from_millis(700);
                fence.hold(d0, a, Some(until)).await;
                fence.hold(d0, b, Some(until)).await;
                fence.hold(d1, c, None).await;
                let st = fence.status();
                assert!(st.available && st.problem.is_none(), "{st:?}");
                assert_eq!(st.interfaces, vec![d0, d1]);
                assert_eq!(st.enforced, 3);
                assert_eq!(egress_prefs("d0"), vec![224]);
                assert_eq!(egress_prefs("d1"), vec![224]);
                match fence.vip_state(a) {
                    VipFenceState::Enforced { left } => {
                        assert!(left <= Duration::from_millis(700), "{left:?}")
                    }
                    s => panic!("{s:?}"),
                }
                assert_eq!(fence.vip_state(c), VipFenceState::NoDeadline);

                // Refresh moves every deadline.
                let later = Instant::now() + Duration::from_secs(30);
                fence.refresh(Some(later)).await;
                for vip in [a, b, c] {
                    match fence.vip_state(vip) {
                        VipFenceState::Enforced { left } => {
                            assert!(left > Duration::from_secs(29), "{vip}: {left:?}")
                        }
                        s => panic!("{vip}: {s:?}"),
                    }
                }
                // The local backend: no deadline for anyone.
                fence.refresh(None).await;
                assert_eq!(fence.vip_state(b), VipFenceState::NoDeadline);

                // d0 keeps its filter while b is still held there.
                fence.release(a).await;
                assert_eq!(egress_prefs("d0"), vec![224]);
                fence.release(b).await;
                fence.release(b).await;
                assert!(egress_prefs("d0").is_empty());
                assert_eq!(fence.status().interfaces, vec![d1]);
                // A VIP moving to another interface.
                fence.hold(d0, c, None).await;
                assert_eq!(fence.status().interfaces, vec![d0]);
                assert!(egress_prefs("d1").is_empty());
                fence.shutdown().await;
                assert!(egress_prefs("d0").is_empty());
                assert_eq!(fence.status().enforced, 0);

                // A crashed netd's filters: the next start removes them.
                fence.hold(d1, a, Some(Instant::now())).await;
                drop(fence);
                assert_eq!(egress_prefs("d1"), vec![224]);
                let next = Fence::new(&p);
                next.start().await;
                assert!(egress_prefs("d1").is_empty());
                assert!(!p.exists(), "Fence::new pins nothing");
                assert_eq!(next.vip_state(a), VipFenceState::NotHeld);
            })
        });
        let _ = std::fs::remove_dir_all(&pins);
    }

    #[test]
    fn a_lapsed_deadline_stays_lapsed_until_held_again() {
        let pins = pin_dir("lapse");
        let p = pins.clone();
        in_netns(move || {
            Box::pin(async move {
                ip("link add d0 type veth peer name d0p");
                let d0 = ifindex("d0");
                let vip: IpAddr = "198.18.0.100".parse().unwrap();
                let fence = Fence::new(&p);
                // What the election says, moved by the test.
                let bound = Arc::new(Mutex::new(Some(Instant::now() + Duration::from_secs(1))));
                let b = *bound.lock().unwrap();
                fence.hold(d0, vip, b).await;
                let b = bound.clone();
                let follower = fence.follow(move || *b.lock().unwrap());
                let left = |f: &Fence| match f.vip_state(vip) {
                    VipFenceState::Enforced { left } => Some(left),
                    _ => None,
                };

                // Heartbeats acknowledged: the deadline follows the bound.
                *bound.lock().unwrap() = Some(Instant::now() + Duration::from_secs(30));
                tokio::time::sleep(Duration::from_millis(120)).await;
                assert!(left(&fence).is_some_and(|l| l > Duration::from_secs(29)));
                assert!(!fence.lapsed(vip));

                // No acknowledged heartbeat for a while (netd was cut off
                // or stalled): the bound is behind us, the VIP lapses...
                *bound.lock().unwrap() = Some(Instant::now() - Duration::from_millis(1));
                tokio::time::sleep(Duration::from_millis(120)).await;
                assert!(fence.lapsed(vip));
                assert_eq!(fence.vip_state(vip), VipFenceState::Lapsed);
                // ...and a heartbeat acknowledged later does not revive it.
                *bound.lock().unwrap() = Some(Instant::now() + Duration::from_secs(30));
                tokio::time::sleep(Duration::from_millis(120)).await;
                let b = *bound.lock().unwrap();
                fence.refresh(b).await;
                assert!(fence.lapsed(vip), "{:?}", fence.vip_state(vip));

                // Claimed again: held again, armed again.
                let b = *bound.lock().unwrap();
                fence.hold(d0, vip, b).await;
                assert!(!fence.lapsed(vip));
                assert!(left(&fence).is_some_and(|l| l > Duration::from_secs(29)));
                // The local backend: no deadline, never lapses.
                fence.refresh(None).await;
                assert_eq!(fence.vip_state(vip), VipFenceState::NoDeadline);
                assert!(!fence.lapsed(vip));
                follower.abort();
                fence.release(vip).await;
                assert!(!fence.lapsed(vip));
                assert!(egress_prefs("d0").is_empty());
            })
        });
        let _ = std::fs::remove_dir_all(&pins);
    }

    #[test]
    fn without_bpf_vips_are_held_and_the_reason_is_shown() {
        in_netns(|| {
            Box::pin(async {
                ip("link add d0 type veth peer name d0p");
                let vip: IpAddr = "198.18.0.100".parse().unwrap();
                // A pin directory that cannot be on bpffs.
                let fence = Fence::pinned("/proc/furrow-no-bpffs");
                fence.hold(ifindex("d0"), vip, None).await;
                fence.refresh(Some(Instant::now())).await;
                let st = fence.status();
                assert!(!st.available && st.enforced == 0);
                assert!(
                    st.problem
                        .as_deref()
                        .is_some_and(|p| p.contains("unavailable")),
                    "{st:?}"
                );
                assert!(
                    matches!(fence.vip_state(vip), VipFenceState::NotEnforced(ref w) if w.contains("bpf")),
                    "{:?}",
                    fence.vip_state(vip)
                );
                assert!(egress_prefs("d0").is_empty());
                fence.release(vip).await;
                assert_eq!(fence.vip_state(vip), VipFenceState::NotHeld);
                let off = Fence::unavailable("disabled by test");
                off.hold(ifindex("d0"), vip, None).await;
                assert_eq!(
                    off.vip_state(vip).to_string(),
                    "no kernel fence: disabled by test"
                );
            })
        });
    }

    #[test]
    fn an_interface_that_refuses_the_filter_is_reported_and_retried() {
        let pins = pin_dir("refuse");
        let p = pins.clone();
        in_netns(move || {
            Box::pin(async move {
                ip("link add d0 type veth peer name d0p");
                // A plain ingress qdisc where clsact is needed.
                let out = Command::new("tc")
                    .args(["qdisc", "add", "dev", "d0", "ingress"])
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{out:?}");
                let d0 = ifindex("d0");
                let vip: IpAddr = "198.18.0.100".parse().unwrap();
                let fence = Fence::pinned(&p);
                fence.hold(d0, vip, Some(Instant::now())).await;
                let st = fence.status();
                assert!(st.available, "{st:?}");
                assert!(
                    st.problem
                        .as_deref()
                        .is_some_and(|p| p.contains("not attached")),
                    "{st:?}"
                );
                assert!(matches!(
                    fence.vip_state(vip),
                    VipFenceState::NotEnforced(_)
                ));
                // Fixed behind our back: the next retry attaches.
                let out = Command::new("tc")
                    .args(["qdisc", "del", "dev", "d0", "ingress"])
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{out:?}");
                fence.lock().next_retry = Some(Instant::now());
                fence.refresh(Some(Instant::now())).await;
                assert_eq!(egress_prefs("d0"), vec![224]);
                assert!(fence.status().problem.is_none());
                fence.release(vip).await;
                assert!(egress_prefs("d0").is_empty());
                assert!(p.join("maps/furrow_vip_deadlines").exists());
            })
        });
        let _ = std::fs::remove_dir_all(&pins);
    }
}
