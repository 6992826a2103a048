//! The kernel-enforced VIP fence (`bpf/vip_fence.bpf.c`): a tc egress
//! filter that stops a node from answering for a floating VIP once the
//! deadline netd last wrote for it has passed, whether or not netd still
//! runs.
//!
//! netd's own loop removes a VIP's address when its election says the node
//! may no longer hold it; if netd is stopped, starved or stuck, the
//! address stays and the kernel keeps answering ARP/NDP for it. With
//! [`VipFence`], netd writes each held VIP's deadline (its fencing bound,
//! CLOCK_MONOTONIC) into a map every pass, and the program drops, from
//! that deadline on, ARP with the VIP as sender, IPv4/IPv6 packets from
//! the VIP and neighbour advertisements for it. Anything else passes with
//! no verdict (`TC_ACT_UNSPEC`), so filters after it on the hook still run.
//!
//! Attachment, two modes:
//!
//! - With links ([`VipFence::with_tcx_links`], what netd uses next to the
//!   datapath): a tcx link on the egress hook, put first in the hook's
//!   list (`BPF_F_BEFORE`, no anchor), pinned as
//!   `<pin_dir>/links/fence-<netns>-<ifindex>`. The datapath attaches
//!   with tcx links too, and tcx runs before classic tc: a fence filter
//!   would come after `furrow_l2_uplink_egress`, which returns a verdict
//!   (so the filter would not even run) after handing the node's ARP
//!   replies to local VMs. First in the list, the fence sees every frame
//!   before the datapath, whichever was attached first; it returns
//!   `TC_ACT_UNSPEC` (`TCX_NEXT`) for what it lets pass. The pin keeps the
//!   link, and so the fence, alive after netd is killed.
//! - Without (`netd --vip-only`: no datapath, no pins): a cls_bpf filter
//!   (direct-action) on the clsact egress hook at [`FENCE_PRIORITY`] (224,
//!   before the slot older datapaths used, 240), with a handle of the
//!   instance's own ([`fence_handle`]): several netd instances can fence
//!   VIPs on one device, each replacing or deleting only its own filter.
//!   It lives with the device, so it keeps fencing after netd is killed.
//!
//! Either way a restarted netd finds its predecessor's links or filters
//! with [`VipFence::attached`] and removes them with
//! [`VipFence::detach_all`] (or replaces them by attaching); attaching in
//! links mode also deletes a filter of this instance left on the device
//! (migration from the filter mode).
//!
//! Maps: `furrow_vip_deadlines` (hash, [`VIP_FENCE_MAX`] entries) and
//! `furrow_vip_fence_drops` (per-CPU array of counters). With a pin
//! directory they are pinned in `<pin_dir>/maps/` like the datapath's; a
//! pinned map of another shape is replaced (its contents are ephemeral:
//! netd rewrites every deadline at least every pass). The object loads on
//! its own: `netd --vip-only` has no datapath.
//!
//! Clock: `bpf_ktime_get_ns()` is CLOCK_MONOTONIC, which is also what
//! `std::time::Instant` (and tokio's) measure on Linux; [`MonotonicNs`]
//! converts an `Instant` by reading CLOCK_MONOTONIC with
//! `clock_gettime(2)` next to `Instant::now()`, not by relying on
//! `Instant`'s representation.

use std::{
    collections::BTreeSet,
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::{
    maps::{HashMap, MapData, MapInfo, PerCpuArray},
    programs::SchedClassifier,
    Ebpf, EbpfLoader,
};

use crate::{
    bpffs,
    error::map_errno,
    maps::BPF_MAP_TYPE_HASH,
    object::VIP_FENCE_OBJECT,
    tc::{Hook, NlError, Slot, TcSocket},
    tcx::{self, Position},
    DatapathError,
};

/// Pin kind of the fence's links (`crate::tcx`).
const LINK_FENCE: &str = "fence";

/// The program (tc egress).
pub const PROG_VIP_FENCE: &str = "furrow_vip_fence";
/// VIP address to deadline.
pub const MAP_VIP_DEADLINES: &str = "furrow_vip_deadlines";
/// Drops per reason (per CPU).
pub const MAP_VIP_FENCE_DROPS: &str = "furrow_vip_fence_drops";
/// Capacity of [`MAP_VIP_DEADLINES`] (bpf/lib/config.h:
/// FURROW_VIP_FENCE_MAX): VIP addresses one node can hold.
pub const VIP_FENCE_MAX: u32 = 4096;
/// tc priority ("pref") of the fence filter on the egress hook: before the
/// datapath's filters ([`crate::FILTER_PRIORITY`], 240).
pub const FENCE_PRIORITY: u16 = 0xe0;

/// BPF_MAP_TYPE_PERCPU_ARRAY.
const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
/// Number of drop reasons (enum fence_reason).
const FENCE_REASONS: u32 = 4;
const FAMILY_V4: u32 = 4;
const FAMILY_V6: u32 = 6;

/// The tc handle of the fence filter of the instance whose pin directory
/// is `pin_dir` (whether or not it pins anything; `None`: one fixed
/// handle). Derived from the path (FNV-1a), so a restarted netd finds its
/// predecessor's filters and instances with different directories do not
/// touch each other's. `0x46xxxxxx` ('F').
pub fn fence_handle(pin_dir: Option<&Path>) -> u32 {
    let bytes = pin_dir.map_or(&[][..], |p| p.as_os_str().as_bytes());
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    0x4600_0000 | (h & 0x00ff_ffff)
}

/// A CLOCK_MONOTONIC time in nanoseconds: what `bpf_ktime_get_ns()`
/// returns, and what the fence compares deadlines with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MonotonicNs(pub u64);

impl MonotonicNs {
    /// No deadline: the address is never fenced.
    pub const NEVER: MonotonicNs = MonotonicNs(u64::MAX);

    /// CLOCK_MONOTONIC now.
    pub fn now() -> MonotonicNs {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec; CLOCK_MONOTONIC
        // always exists on Linux, so it cannot fail.
        let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        debug_assert_eq!(r, 0);
        MonotonicNs((ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64)
    }

    /// The CLOCK_MONOTONIC time of `t`: CLOCK_MONOTONIC now plus (or
    /// minus) how far `t` is from `Instant::now()`. The clock is read
    /// first, so the result errs early by the nanoseconds between the two
    /// readings: a fence never fires late because of the conversion.
    pub fn from_instant(t: Instant) -> MonotonicNs {
        let now_ns = MonotonicNs::now();
        let now = Instant::now();
        if t >= now {
            now_ns.saturating_add(t - now)
        } else {
            MonotonicNs(now_ns.0.saturating_sub(duration_ns(now - t)))
        }
    }

    pub fn saturating_add(self, d: Duration) -> MonotonicNs {
        MonotonicNs(self.0.saturating_add(duration_ns(d)))
    }

    /// Whether this deadline has passed (the fence drops from it on).
    pub fn has_passed(self) -> bool {
        MonotonicNs::now() >= self
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What the fence dropped since its counters map was created, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FenceDrops {
    /// ARP with a fenced VIP as sender (replies, gratuitous ARP, requests).
    pub arp: u64,
    /// IPv4 packets from a fenced VIP.
    pub ipv4: u64,
    /// ICMPv6 neighbour advertisements for a fenced VIP.
    pub neighbor_advert: u64,
    /// IPv6 packets from a fenced VIP (other than those advertisements).
    pub ipv6: u64,
}

impl FenceDrops {
    pub fn total(&self) -> u64 {
        self.arp + self.ipv4 + self.neighbor_advert + self.ipv6
    }

    /// (reason, count) pairs, for metrics labels.
    pub fn by_reason(&self) -> [(&'static str, u64); 4] {
        [
            ("arp", self.arp),
            ("ipv4", self.ipv4),
            ("neighbor_advert", self.neighbor_advert),
            ("ipv6", self.ipv6),
        ]
    }
}

/// `struct vip_fence_key` in bpf/vip_fence.bpf.c.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RawFenceKey {
    family: u32,
    addr: [u8; 16],
}

// SAFETY: repr(C), a u32 and a byte array, no padding (checked below).
unsafe impl aya::Pod for RawFenceKey {}
const _: () = assert!(std::mem::size_of::<RawFenceKey>() == 20);

impl RawFenceKey {
    fn new(ip: IpAddr) -> Self {
        let mut addr = [0u8; 16];
        let family = match ip {
            IpAddr::V4(v4) => {
                addr[..4].copy_from_slice(&v4.octets());
                FAMILY_V4
            }
            IpAddr::V6(v6) => {
                addr = v6.octets();
                FAMILY_V6
            }
        };
        RawFenceKey { family, addr }
    }

    fn ip(&self) -> Option<IpAddr> {
        match self.family {
            FAMILY_V4 => Some(IpAddr::V4(Ipv4Addr::new(
                self.addr[0],
                self.addr[1],
                self.addr[2],
                self.addr[3],
            ))),
            FAMILY_V6 => Some(IpAddr::V6(Ipv6Addr::from(self.addr))),
            _ => None,
        }
    }
}

/// `struct vip_fence_value` in bpf/vip_fence.bpf.c.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RawFenceValue {
    deadline_ns: u64,
}

// SAFETY: repr(C), one u64.
unsafe impl aya::Pod for RawFenceValue {}
const _: () = assert!(std::mem::size_of::<RawFenceValue>() == 8);

/// (name, type, key size, value size, max entries) of the maps, as this
/// build creates them.
const MAP_SHAPES: [(&str, u32, u32, u32, u32); 2] = [
    (
        MAP_VIP_DEADLINES,
        BPF_MAP_TYPE_HASH,
        std::mem::size_of::<RawFenceKey>() as u32,
        std::mem::size_of::<RawFenceValue>() as u32,
        VIP_FENCE_MAX,
    ),
    (
        MAP_VIP_FENCE_DROPS,
        BPF_MAP_TYPE_PERCPU_ARRAY,
        4,
        8,
        FENCE_REASONS,
    ),
];

/// The loaded fence program and its maps.
///
/// Dropping the value does not detach anything: filters stay on their
/// devices (and keep fencing with the deadlines last written) until
/// [`VipFence::detach`], [`VipFence::detach_all`] (of this or a later
/// value with the same pin directory) or the device goes. Interface
/// operations act on the calling thread's network namespace.
pub struct VipFence {
    _bpf: Ebpf,
    /// The loaded program (taken out of `_bpf` so no borrow is needed).
    prog_fd: std::os::fd::OwnedFd,
    prog_id: u32,
    deadlines: HashMap<MapData, RawFenceKey, RawFenceValue>,
    drops: PerCpuArray<MapData, u64>,
    pin_dir: Option<PathBuf>,
    handle: u32,
    /// Links mode: where the links are pinned.
    links_dir: Option<PathBuf>,
}

impl std::fmt::Debug for VipFence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VipFence")
            .field("pin_dir", &self.pin_dir)
            .field("handle", &format_args!("{:#x}", self.handle))
            .field("links_dir", &self.links_dir)
            .field("prog_id", &self.prog_id)
            .finish_non_exhaustive()
    }
}

impl VipFence {
    /// Loads the fence program. With `pin_dir` (absolute, on bpffs, the
    /// instance's directory: the datapath's `pin_dir`), its maps are
    /// pinned in `pin_dir/maps` and reused by the next process (a pin of
    /// another shape is replaced); without, nothing is pinned. Touches no
    /// interface and no deadline: a restarted netd calls
    /// [`VipFence::detach_all`] and [`VipFence::clear`] once it has
    /// removed its predecessor's addresses. The filter handle is
    /// [`fence_handle`]`(pin_dir)`.
    pub fn open(pin_dir: Option<&Path>) -> Result<Self, DatapathError> {
        VipFence::open_with(pin_dir, fence_handle(pin_dir))
    }

    /// [`VipFence::open`] with the filter handle given: an instance that
    /// pins nothing (`pin_dir` None) still needs a handle of its own, e.g.
    /// [`fence_handle`] of its would-be pin directory (netd `--vip-only`
    /// creates no pins).
    pub fn open_with(pin_dir: Option<&Path>, handle: u32) -> Result<Self, DatapathError> {
        if handle == 0 {
            return Err(DatapathError::InvalidConfig(
                "the VIP fence's filter handle must not be 0".into(),
            ));
        }
        let mut loader = EbpfLoader::new();
        let mut pins = Vec::new();
        if let Some(dir) = pin_dir {
            if !dir.is_absolute() {
                return Err(DatapathError::InvalidConfig(format!(
                    "pin_dir {} must be an absolute path",
                    dir.display()
                )));
            }
            bpffs::ensure_on_bpffs(dir)?;
            let maps_dir = dir.join("maps");
            fs::create_dir_all(&maps_dir).map_err(|cause| DatapathError::Bpffs {
                what: "creating",
                path: maps_dir.clone(),
                cause,
            })?;
            for shape in &MAP_SHAPES {
                let path = maps_dir.join(shape.0);
                replace_if_other_shape(&path, shape)?;
                pins.push((shape.0, path));
            }
        }
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut bpf = loader
            .load(VIP_FENCE_OBJECT)
            .map_err(|e| DatapathError::Load(Box::new(e)))?;
        let prog: &mut SchedClassifier = bpf
            .program_mut(PROG_VIP_FENCE)
            .ok_or_else(|| DatapathError::UnknownProgram(PROG_VIP_FENCE.into()))?
            .try_into()
            .map_err(|e| DatapathError::program(PROG_VIP_FENCE, e))?;
        prog.load()
            .map_err(|e| DatapathError::program(PROG_VIP_FENCE, e))?;
        let prog_id = prog
            .info()
            .map_err(|e| DatapathError::program(PROG_VIP_FENCE, e))?
            .id();
        let prog_fd = prog
            .fd()
            .map_err(|e| DatapathError::program(PROG_VIP_FENCE, e))?
            .as_fd()
            .try_clone_to_owned()
            .map_err(|cause| DatapathError::Syscall { call: "dup", cause })?;
        let deadlines = take_map(&mut bpf, MAP_VIP_DEADLINES)?
            .try_into()
            .map_err(|e| DatapathError::map(MAP_VIP_DEADLINES, e))?;
        let drops = take_map(&mut bpf, MAP_VIP_FENCE_DROPS)?
            .try_into()
            .map_err(|e| DatapathError::map(MAP_VIP_FENCE_DROPS, e))?;
        let fence = VipFence {
            _bpf: bpf,
            prog_fd,
            prog_id,
            deadlines,
            drops,
            pin_dir: pin_dir.map(Path::to_path_buf),
            handle,
            links_dir: None,
        };
        tracing::debug!(?fence, "VIP fence loaded");
        Ok(fence)
    }

    pub fn pin_dir(&self) -> Option<&Path> {
        self.pin_dir.as_deref()
    }

    /// Switches to links mode (see the module doc): from now on the fence
    /// attaches through tcx links pinned in `dir/links` (`dir` absolute,
    /// on bpffs: the instance's directory, where the datapath pins its
    /// own links), first on each egress hook. What netd uses whenever it
    /// runs the datapath.
    pub fn with_tcx_links(mut self, dir: &Path) -> Result<Self, DatapathError> {
        if !dir.is_absolute() {
            return Err(DatapathError::InvalidConfig(format!(
                "link directory {} must be an absolute path",
                dir.display()
            )));
        }
        bpffs::ensure_on_bpffs(dir)?;
        let links = dir.join("links");
        fs::create_dir_all(&links).map_err(|cause| DatapathError::Bpffs {
            what: "creating",
            path: links.clone(),
            cause,
        })?;
        self.links_dir = Some(links);
        Ok(self)
    }

    /// `tcx` (links mode) or `tc` (filters).
    pub fn mode(&self) -> &'static str {
        if self.links_dir.is_some() {
            "tcx"
        } else {
            "tc"
        }
    }

    /// This instance's filter handle ([`fence_handle`]).
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// The kernel id of the loaded program.
    pub fn program_id(&self) -> u32 {
        self.prog_id
    }

    /// The program's fd, for [`crate::test_run`].
    pub fn program_fd(&self) -> BorrowedFd<'_> {
        self.prog_fd.as_fd()
    }

    fn slot(&self) -> Slot {
        Slot {
            priority: FENCE_PRIORITY,
            handle: self.handle,
        }
    }

    /// Puts the fence on `ifindex`'s egress hook, or swaps the program of
    /// this instance's fence already there (a predecessor's, or this
    /// value's: idempotent). In links mode: a pinned tcx link, first on
    /// the hook (~10 ms to create, then nothing to do), and this
    /// instance's filter, if an older netd left one, is deleted. Else a
    /// filter in this instance's slot (adding the clsact qdisc if needed,
    /// ~70 µs). Nothing else on the hook is touched; the fence stays when
    /// this value is dropped.
    pub fn attach(&self, ifindex: u32) -> Result<(), DatapathError> {
        let err = |what| move |e: NlError| tc_error(what, ifindex, e);
        if let Some(dir) = &self.links_dir {
            tcx::ensure(
                dir,
                LINK_FENCE,
                ifindex,
                Hook::Egress,
                self.prog_fd.as_fd(),
                self.prog_id,
                Position::First,
            )
            .map_err(|cause| tcx_error("attaching the VIP fence link", ifindex, cause))?;
            let mut tc = TcSocket::open().map_err(err("opening rtnetlink"))?;
            tc.delete_filter_at(ifindex, Hook::Egress, self.slot())
                .map_err(err("deleting an older VIP fence filter"))?;
            return Ok(());
        }
        let mut tc = TcSocket::open().map_err(err("opening rtnetlink"))?;
        tc.ensure_clsact(ifindex)
            .map_err(err("adding the clsact qdisc"))?;
        tc.upsert_filter_at(
            ifindex,
            Hook::Egress,
            self.slot(),
            self.prog_fd.as_raw_fd(),
            PROG_VIP_FENCE,
        )
        .map_err(err("attaching the VIP fence"))
    }

    /// Removes this instance's fence (link and unpin it, or filter) from
    /// `ifindex`. `Ok(false)` if there was none (or the device is gone).
    pub fn detach(&self, ifindex: u32) -> Result<bool, DatapathError> {
        let mut removed = false;
        if let Some(dir) = &self.links_dir {
            removed = tcx::remove(dir, LINK_FENCE, ifindex, Hook::Egress)
                .map_err(|cause| tcx_error("detaching the VIP fence link", ifindex, cause))?;
        }
        let err = |what| move |e: NlError| tc_error(what, ifindex, e);
        let mut tc = TcSocket::open().map_err(err("opening rtnetlink"))?;
        let filter = tc
            .delete_filter_at(ifindex, Hook::Egress, self.slot())
            .map_err(err("deleting the VIP fence"))?;
        Ok(removed || filter)
    }

    /// Whether `ifindex` has this instance's fence running the program of
    /// this value (false after a restart until [`VipFence::attach`]): in
    /// links mode its link, else its filter, direct-action.
    pub fn is_attached(&self, ifindex: u32) -> Result<bool, DatapathError> {
        if let Some(dir) = &self.links_dir {
            let err = |cause| tcx_error("reading the VIP fence link", ifindex, cause);
            let path = tcx::pin_path(dir, LINK_FENCE, ifindex).map_err(err)?;
            return Ok(match tcx::Pinned::open(&path).map_err(err)? {
                Some(p) => {
                    p.info.prog_id == self.prog_id && p.is_on(ifindex, Hook::Egress).map_err(err)?
                }
                None => false,
            });
        }
        let err = |what| move |e: NlError| tc_error(what, ifindex, e);
        let mut tc = TcSocket::open().map_err(err("opening rtnetlink"))?;
        let filters = tc
            .filters(ifindex, Hook::Egress)
            .map_err(err("listing filters"))?;
        Ok(filters
            .iter()
            .any(|f| f.in_slot(self.slot()) && f.direct_action && f.prog_id == Some(self.prog_id)))
    }

    /// Indexes of the interfaces (calling thread's netns) with a fence of
    /// this instance, whatever program it runs (this value's or a
    /// predecessor's): a live link pinned in the links directory (links
    /// mode), or a filter in this instance's slot. Sorted. One qdisc dump
    /// plus one filter dump per device with a clsact qdisc, and a few
    /// bpf(2) calls per pinned link.
    pub fn attached(&self) -> Result<Vec<u32>, DatapathError> {
        let err = |what| move |e: NlError| tc_error(what, 0, e);
        let mut out = BTreeSet::new();
        if let Some(dir) = &self.links_dir {
            let pins = tcx::list_here(dir, |k| k == LINK_FENCE, |_| Some(Hook::Egress))
                .map_err(|cause| tcx_error("listing the VIP fence links", 0, cause))?;
            out.extend(pins.iter().map(|p| p.info.ifindex));
        }
        let mut tc = TcSocket::open().map_err(err("opening rtnetlink"))?;
        for ifindex in tc.clsact_devices().map_err(err("listing qdiscs"))? {
            let filters = tc
                .filters(ifindex, Hook::Egress)
                .map_err(|e| tc_error("listing filters", ifindex, e))?;
            if filters.iter().any(|f| f.in_slot(self.slot())) {
                out.insert(ifindex);
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Removes this instance's fence from every interface that has one
    /// ([`VipFence::attached`]); returns their indexes. In links mode the
    /// pins of defunct fence links (their device gone) go too. What a
    /// starting netd does about fences a crashed one left.
    pub fn detach_all(&self) -> Result<Vec<u32>, DatapathError> {
        let mut out = Vec::new();
        for ifindex in self.attached()? {
            if self.detach(ifindex)? {
                out.push(ifindex);
            }
        }
        if let Some(dir) = &self.links_dir {
            let err = |cause| tcx_error("removing defunct VIP fence pins", 0, cause);
            for p in tcx::list(dir, |k| k == LINK_FENCE).map_err(err)? {
                if p.is_defunct() {
                    p.unpin().map_err(err)?;
                }
            }
        }
        Ok(out)
    }

    /// Sets (adds or replaces) the deadline of `ip`: from `deadline` on,
    /// every interface with the fence stops answering for it.
    /// [`MonotonicNs::NEVER`] fences nothing.
    pub fn set_deadline(&mut self, ip: IpAddr, deadline: MonotonicNs) -> Result<(), DatapathError> {
        let value = RawFenceValue {
            deadline_ns: deadline.0,
        };
        self.deadlines
            .insert(RawFenceKey::new(ip), value, 0)
            .map_err(|e| {
                if map_errno(&e) == Some(libc::E2BIG) {
                    DatapathError::MapFull {
                        map: MAP_VIP_DEADLINES,
                        max_entries: VIP_FENCE_MAX,
                    }
                } else {
                    DatapathError::map(MAP_VIP_DEADLINES, e)
                }
            })
    }

    /// Forgets `ip`: the fence lets its frames pass again. Fine if absent.
    pub fn remove(&mut self, ip: IpAddr) -> Result<(), DatapathError> {
        match self.deadlines.remove(&RawFenceKey::new(ip)) {
            Err(e) if map_errno(&e) == Some(libc::ENOENT) => Ok(()),
            r => r.map_err(|e| DatapathError::map(MAP_VIP_DEADLINES, e)),
        }
    }

    /// The deadline of `ip`, if it has one.
    pub fn deadline(&self, ip: IpAddr) -> Result<Option<MonotonicNs>, DatapathError> {
        match self.deadlines.get(&RawFenceKey::new(ip), 0) {
            Ok(v) => Ok(Some(MonotonicNs(v.deadline_ns))),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(DatapathError::map(MAP_VIP_DEADLINES, e)),
        }
    }

    /// Every address with a deadline, sorted.
    pub fn deadlines(&self) -> Result<Vec<(IpAddr, MonotonicNs)>, DatapathError> {
        let mut out = Vec::new();
        for r in self.deadlines.iter() {
            match r {
                Ok((k, v)) => {
                    if let Some(ip) = k.ip() {
                        out.push((ip, MonotonicNs(v.deadline_ns)));
                    }
                }
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(DatapathError::map(MAP_VIP_DEADLINES, e)),
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes every deadline (a pinned map keeps a predecessor's).
    pub fn clear(&mut self) -> Result<(), DatapathError> {
        let keys = self
            .deadlines
            .keys()
            .filter_map(Result::ok)
            .collect::<Vec<_>>();
        for k in keys {
            match self.deadlines.remove(&k) {
                Err(e) if map_errno(&e) != Some(libc::ENOENT) => {
                    return Err(DatapathError::map(MAP_VIP_DEADLINES, e))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Drops by reason, summed over CPUs.
    pub fn drops(&self) -> Result<FenceDrops, DatapathError> {
        let mut n = [0u64; FENCE_REASONS as usize];
        for (i, slot) in n.iter_mut().enumerate() {
            let values = self
                .drops
                .get(&(i as u32), 0)
                .map_err(|e| DatapathError::map(MAP_VIP_FENCE_DROPS, e))?;
            *slot = values.iter().sum();
        }
        Ok(FenceDrops {
            arp: n[0],
            ipv4: n[1],
            neighbor_advert: n[2],
            ipv6: n[3],
        })
    }

    /// Removes this instance's fences everywhere and its pins (for tests
    /// and uninstall; the datapath's pins are left alone).
    pub fn destroy(self) -> Result<(), DatapathError> {
        self.detach_all()?;
        if let Some(dir) = &self.links_dir {
            // Other namespaces' links (and defunct ones) too.
            let err = |cause| tcx_error("removing the VIP fence links", 0, cause);
            for p in tcx::list(dir, |k| k == LINK_FENCE).map_err(err)? {
                if !p.is_defunct() {
                    crate::sys::link_detach(p.fd.as_fd()).map_err(err)?;
                }
                p.unpin().map_err(err)?;
            }
            let _ = fs::remove_dir(dir);
        }
        if let Some(dir) = &self.pin_dir {
            let maps_dir = dir.join("maps");
            for (name, ..) in &MAP_SHAPES {
                let path = maps_dir.join(name);
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(DatapathError::Bpffs {
                            what: "removing",
                            path,
                            cause: e,
                        })
                    }
                    _ => {}
                }
            }
            // Empty unless the datapath (or anything else) pins there too.
            let _ = fs::remove_dir(&maps_dir);
            let _ = fs::remove_dir(dir);
        }
        Ok(())
    }
}

/// Removes the pin at `path` if its map differs from this build's `shape`
/// (type, key and value size, max entries): the fence's maps hold nothing
/// that must survive.
fn replace_if_other_shape(
    path: &Path,
    shape: &(&'static str, u32, u32, u32, u32),
) -> Result<(), DatapathError> {
    if !path.exists() {
        return Ok(());
    }
    let info = MapInfo::from_pin(path).map_err(|e| DatapathError::map(shape.0, e))?;
    let map_type = info.map_type().map_or(u32::MAX, |t| t as u32);
    let found = (
        map_type,
        info.key_size(),
        info.value_size(),
        info.max_entries(),
    );
    let expected = (shape.1, shape.2, shape.3, shape.4);
    if found != expected {
        tracing::warn!(
            path = %path.display(),
            ?found,
            ?expected,
            "pinned VIP fence map has another layout; replacing it"
        );
        fs::remove_file(path).map_err(|cause| DatapathError::Bpffs {
            what: "removing",
            path: path.to_path_buf(),
            cause,
        })?;
    }
    Ok(())
}

fn take_map(bpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, DatapathError> {
    bpf.take_map(name).ok_or_else(|| DatapathError::Map {
        map: name,
        cause: Box::new(aya::maps::MapError::InvalidName {
            name: name.to_owned(),
        }),
    })
}

fn tcx_error(what: &'static str, ifindex: u32, cause: std::io::Error) -> DatapathError {
    DatapathError::Tcx {
        what,
        ifname: ifname_for_error(ifindex),
        cause,
    }
}

fn ifname_for_error(ifindex: u32) -> String {
    match crate::ports::ifname_of(ifindex) {
        Ok(Some(name)) => name,
        _ if ifindex == 0 => "all interfaces".to_owned(),
        _ => format!("ifindex {ifindex}"),
    }
}

fn tc_error(what: &'static str, ifindex: u32, e: NlError) -> DatapathError {
    let ifname = match crate::ports::ifname_of(ifindex) {
        Ok(Some(name)) => name,
        _ if ifindex == 0 => "all interfaces".to_owned(),
        _ => format!("ifindex {ifindex}"),
    };
    DatapathError::Tc {
        what,
        ifname,
        cause: e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        for ip in [
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100)),
            IpAddr::V6("fd00:198:18::100".parse().unwrap()),
            IpAddr::V6("::ffff:198.18.0.100".parse().unwrap()),
        ] {
            assert_eq!(RawFenceKey::new(ip).ip(), Some(ip));
        }
        // An IPv4 address and its IPv4-mapped IPv6 form are different keys.
        assert_ne!(
            RawFenceKey::new("198.18.0.100".parse().unwrap()),
            RawFenceKey::new("::ffff:198.18.0.100".parse().unwrap())
        );
        let k = RawFenceKey::new("10.1.2.3".parse().unwrap());
        assert_eq!(k.family, 4);
        assert_eq!(&k.addr[..4], &[10, 1, 2, 3]);
        assert!(k.addr[4..].iter().all(|b| *b == 0));
    }

    #[test]
    fn handles_are_per_instance_and_stable() {
        let a = fence_handle(Some(Path::new("/sys/fs/bpf/furrow/default")));
        let b = fence_handle(Some(Path::new("/sys/fs/bpf/furrow/node2")));
        assert_ne!(a, b);
        assert_eq!(
            a,
            fence_handle(Some(Path::new("/sys/fs/bpf/furrow/default")))
        );
        for h in [a, b, fence_handle(None)] {
            assert_eq!(h >> 24, 0x46, "{h:#x}");
            assert_ne!(h, crate::FILTER_HANDLE);
        }
    }

    #[test]
    fn instants_convert_to_clock_monotonic() {
        let now = Instant::now();
        let later = now + Duration::from_millis(700);
        let earlier = now.checked_sub(Duration::from_millis(5)).unwrap_or(now);
        let (a, b, c) = (
            MonotonicNs::from_instant(now),
            MonotonicNs::from_instant(later),
            MonotonicNs::from_instant(earlier),
        );
        // Both clocks are CLOCK_MONOTONIC: the differences agree to well
        // under a millisecond.
        let diff = |x: MonotonicNs, y: MonotonicNs| x.0.abs_diff(y.0);
        assert!(diff(b, a).abs_diff(700_000_000) < 1_000_000, "{a:?} {b:?}");
        assert!(diff(a, c).abs_diff(duration_ns(now - earlier)) < 1_000_000);
        assert!(a <= MonotonicNs::now());
        assert!(c.has_passed() && !b.has_passed() && !MonotonicNs::NEVER.has_passed());
        assert_eq!(
            MonotonicNs::NEVER.saturating_add(Duration::from_secs(1)),
            MonotonicNs::NEVER
        );
    }
}
