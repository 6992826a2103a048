//! Loading the programs, pinning maps, and the table operations.

use std::{
    fs, io,
    net::Ipv4Addr,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
};

use aya::{
    maps::{HashMap, LpmTrie, MapData, MapInfo, PerCpuHashMap, PerCpuValues},
    programs::SchedClassifier,
    Ebpf, EbpfLoader,
};

use crate::{
    bpffs,
    error::map_errno,
    l2::{RawFdb, RawFdbKey, RawL2Cn, RawL2Dhcp, RawL2Port, RawL2Vlan, RawVlanKey, RawVlanStats},
    l2_psec::{PsecV4Key, PsecV6Key, RawL2Psec, RawPsecAddr},
    maps::{RawMgmtEndpoint, RawPortStats, MAP_SPECS},
    object::{L2_OBJECT, MGMT_OBJECT},
    sys, tcx, DatapathError, MgmtEndpoint, PortStats, MAP_L2_CLUSTER_NETWORKS, MAP_L2_DHCP,
    MAP_L2_FDB, MAP_L2_PORTS, MAP_L2_PSEC, MAP_L2_PSEC_V4, MAP_L2_PSEC_V6, MAP_L2_VLANS,
    MAP_L2_VLAN_STATS, MAP_MGMT_ENDPOINTS, MAP_PORT_STATS, MODE, PROGRAMS,
};

/// Where one datapath instance keeps its pins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatapathConfig {
    /// Absolute directory on bpffs, one per netd instance, e.g.
    /// `/sys/fs/bpf/furrow/<instance>`. Maps are pinned in `maps/`,
    /// programs in `progs/`, the tcx links that run them in `links/`.
    /// Instances with different directories share nothing.
    pub pin_dir: PathBuf,
    /// The programs' `furrow_datapath_generation` (bpf/lib/generation.h):
    /// 0 normally. Another value than the pinned programs' loads new
    /// programs and swaps them into the existing links, as an upgrade
    /// that changes a program does: for upgrade drills and tests.
    pub generation: u32,
}

impl DatapathConfig {
    pub fn new(pin_dir: impl Into<PathBuf>) -> Self {
        DatapathConfig {
            pin_dir: pin_dir.into(),
            generation: 0,
        }
    }

    /// The same with [`DatapathConfig::generation`] set.
    pub fn with_generation(mut self, generation: u32) -> Self {
        self.generation = generation;
        self
    }
}

/// What [`Datapath::open`] found and did with the pins of an earlier
/// process: programs reused or loaded anew, links adopted, updated in
/// place, or removed because their device is gone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Programs whose pinned copy was identical (same object, generation
    /// and maps): reused, same kernel ids.
    pub programs_reused: Vec<String>,
    /// Programs loaded (first start, or changed).
    pub programs_loaded: Vec<String>,
    /// Pinned links found on their device, whatever they ran.
    pub links_adopted: u32,
    /// Of those, links whose program was replaced (BPF_LINK_UPDATE).
    pub links_updated: u32,
    /// Pins of defunct links (device gone) removed.
    pub links_removed: u32,
}

/// One attachment of this instance, as [`Datapath::attachments`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// The device (calling thread's netns).
    pub ifname: String,
    pub ifindex: u32,
    /// `ingress` or `egress`.
    pub hook: &'static str,
    /// `tcx` (a pinned link) or `tc` (a classic cls_bpf filter left by
    /// an older netd, until the port is attached again).
    pub mode: &'static str,
    /// The tcx link's id (0 for `tc`).
    pub link_id: u32,
    pub prog_id: u32,
    /// The program's name as the kernel keeps it (15 bytes at most).
    pub program: String,
}

/// A loaded (or reused) program of the datapath.
pub(crate) struct LoadedProg {
    pub name: &'static str,
    pub fd: OwnedFd,
    pub id: u32,
    /// Its pin's file name in `progs/`.
    pub pin: String,
}

/// Usage of one map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapUsage {
    pub name: String,
    /// Number of entries; `None` if the map could not be walked.
    pub entries: Option<u32>,
    pub max_entries: u32,
}

/// What [`Datapath::status`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatapathInfo {
    /// [`crate::MODE`].
    pub mode: String,
    pub pin_dir: PathBuf,
    pub programs: Vec<String>,
    pub maps: Vec<MapUsage>,
}

/// The L2 switch's maps (bpf/lib/l2.h).
pub(crate) struct L2Maps {
    pub ports: HashMap<MapData, u32, RawL2Port>,
    pub vlans: HashMap<MapData, RawVlanKey, RawL2Vlan>,
    /// An LRU hash: aya's HashMap handles both.
    pub fdb: HashMap<MapData, RawFdbKey, RawFdb>,
    pub cns: HashMap<MapData, u32, RawL2Cn>,
    pub vlan_stats: PerCpuHashMap<MapData, RawVlanKey, RawVlanStats>,
    /// DHCP responders by (cluster network, VLAN).
    pub dhcp: HashMap<MapData, RawVlanKey, RawL2Dhcp>,
    /// Port security: per port, and its allowed addresses per family.
    pub psec: HashMap<MapData, u32, RawL2Psec>,
    pub psec_v4: LpmTrie<MapData, PsecV4Key, RawPsecAddr>,
    pub psec_v6: LpmTrie<MapData, PsecV6Key, RawPsecAddr>,
    /// max_entries of (ports, vlans, fdb, cns, vlan_stats, dhcp, psec,
    /// psec_v4, psec_v6) as pinned.
    pub max: [u32; 9],
}

/// The loaded datapaths (management and L2) of one netd instance.
///
/// Programs live as long as this value or a tc filter that runs them;
/// maps stay pinned and filters stay attached after it is dropped, so a
/// restarted netd reopens the same state with [`Datapath::open`] and
/// takes the ports over with [`Datapath::attach_port`].
pub struct Datapath {
    pub(crate) pin_dir: PathBuf,
    /// bpf/mgmt.bpf.o as aya loaded it (its maps are taken out; the
    /// programs in use are in `progs`).
    _bpf: Ebpf,
    /// bpf/l2.bpf.o; shares furrow_port_stats with `_bpf` through its pin.
    _l2_bpf: Ebpf,
    pub(crate) l2: L2Maps,
    eps: HashMap<MapData, u32, RawMgmtEndpoint>,
    pub(crate) stats: PerCpuHashMap<MapData, u32, RawPortStats>,
    eps_max: u32,
    pub(crate) stats_max: u32,
    /// The programs, in the order of [`PROGRAMS`]: the pinned ones of
    /// an earlier process when identical, else loaded by this value.
    pub(crate) progs: Vec<LoadedProg>,
    /// Kernel ids of the pinned maps: a program using one is ours.
    /// Management maps (endpoints, counters) first, then the L2 maps.
    pub(crate) map_ids: Vec<u32>,
    pub(crate) opened: OpenReport,
}

impl std::fmt::Debug for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datapath")
            .field("pin_dir", &self.pin_dir)
            .finish_non_exhaustive()
    }
}

impl Datapath {
    /// Mounts bpffs on /sys/fs/bpf if needed, creates the pin directory,
    /// loads the embedded object with its maps pinned under `pin_dir/maps`
    /// (reusing existing pins and their contents), then the programs:
    /// a program pinned in `pin_dir/progs` by an earlier process is
    /// reused when identical (same object, generation and maps), else the
    /// new one is loaded and pinned. Then adopts the links pinned in
    /// `pin_dir/links`: a link running an older program gets this one in
    /// place (BPF_LINK_UPDATE: no moment without a program), a defunct
    /// link (device gone) loses its pin. Detaches and flushes nothing:
    /// traffic keeps flowing through the whole restart or upgrade. Ports
    /// are then (re)attached with [`Datapath::attach_port`] /
    /// [`Datapath::l2_attach_port`], which finds their links in place.
    /// [`Datapath::open_report`] says what was found.
    ///
    /// Only one process may use a pin directory at a time.
    pub fn open(cfg: DatapathConfig) -> Result<Self, DatapathError> {
        let generation = cfg.generation;
        let pin_dir = cfg.pin_dir;
        if !pin_dir.is_absolute() {
            return Err(DatapathError::InvalidConfig(format!(
                "pin_dir {} must be an absolute path",
                pin_dir.display()
            )));
        }
        bpffs::ensure_on_bpffs(&pin_dir)?;
        let maps_dir = pin_dir.join("maps");
        fs::create_dir_all(&maps_dir).map_err(|cause| DatapathError::Bpffs {
            what: "creating",
            path: maps_dir.clone(),
            cause,
        })?;
        check_pinned_maps(&maps_dir)?;

        let progs_dir = pin_dir.join("progs");
        let links_dir = pin_dir.join("links");
        for dir in [&progs_dir, &links_dir] {
            fs::create_dir_all(dir).map_err(|cause| DatapathError::Bpffs {
                what: "creating",
                path: dir.clone(),
                cause,
            })?;
        }

        let mut bpf = EbpfLoader::new()
            .default_map_pin_directory(&maps_dir)
            .override_global(GENERATION_GLOBAL, &generation, true)
            .load(MGMT_OBJECT)
            .map_err(|e| DatapathError::Load(Box::new(e)))?;
        // The second object finds furrow_port_stats pinned by the first
        // and uses that same map.
        let mut l2_bpf = EbpfLoader::new()
            .default_map_pin_directory(&maps_dir)
            .override_global(GENERATION_GLOBAL, &generation, true)
            .load(L2_OBJECT)
            .map_err(|e| DatapathError::Load(Box::new(e)))?;

        let eps: HashMap<MapData, u32, RawMgmtEndpoint> = take_map(&mut bpf, MAP_MGMT_ENDPOINTS)?
            .try_into()
            .map_err(|e| DatapathError::map(MAP_MGMT_ENDPOINTS, e))?;
        let stats: PerCpuHashMap<MapData, u32, RawPortStats> = take_map(&mut bpf, MAP_PORT_STATS)?
            .try_into()
            .map_err(|e| DatapathError::map(MAP_PORT_STATS, e))?;
        macro_rules! l2_map {
            ($name:expr) => {
                take_map(&mut l2_bpf, $name)?
                    .try_into()
                    .map_err(|e| DatapathError::map($name, e))?
            };
        }
        let mut l2 = L2Maps {
            ports: l2_map!(MAP_L2_PORTS),
            vlans: l2_map!(MAP_L2_VLANS),
            fdb: l2_map!(MAP_L2_FDB),
            cns: l2_map!(MAP_L2_CLUSTER_NETWORKS),
            vlan_stats: l2_map!(MAP_L2_VLAN_STATS),
            dhcp: l2_map!(MAP_L2_DHCP),
            psec: l2_map!(MAP_L2_PSEC),
            psec_v4: l2_map!(MAP_L2_PSEC_V4),
            psec_v6: l2_map!(MAP_L2_PSEC_V6),
            max: [0; 9],
        };
        // Reused pins keep the size they were created with; report that.
        let (eps_max, eps_id) = pinned_map_info(&maps_dir, MAP_MGMT_ENDPOINTS)?;
        let (stats_max, stats_id) = pinned_map_info(&maps_dir, MAP_PORT_STATS)?;
        let mut map_ids = vec![eps_id, stats_id];
        for (i, name) in L2_MAP_NAMES.iter().enumerate() {
            let (max, id) = pinned_map_info(&maps_dir, name)?;
            l2.max[i] = max;
            map_ids.push(id);
        }

        let mut opened = OpenReport::default();
        let mut progs = Vec::with_capacity(PROGRAMS.len());
        for name in PROGRAMS {
            let (obj, image) = if bpf.program(name).is_some() {
                (&mut bpf, MGMT_OBJECT)
            } else {
                (&mut l2_bpf, L2_OBJECT)
            };
            let identity = program_identity(name, image, generation, &map_ids);
            let (prog, reused) = load_or_reuse(obj, name, &progs_dir, identity)?;
            if reused {
                opened.programs_reused.push(name.to_owned());
            } else {
                opened.programs_loaded.push(name.to_owned());
            }
            progs.push(prog);
        }

        let mut dp = Datapath {
            pin_dir,
            _bpf: bpf,
            _l2_bpf: l2_bpf,
            l2,
            eps,
            stats,
            eps_max,
            stats_max,
            progs,
            map_ids,
            opened,
        };
        dp.adopt_links()?;
        // The links run this value's programs now: older copies can go.
        for p in &dp.progs {
            remove_stale_program_pins(&progs_dir, p.name, &p.pin)?;
        }
        tracing::info!(
            pin_dir = %dp.pin_dir.display(),
            generation,
            report = ?dp.opened,
            "datapath loaded"
        );
        Ok(dp)
    }

    /// What [`Datapath::open`] found and did.
    pub fn open_report(&self) -> &OpenReport {
        &self.opened
    }

    pub(crate) fn links_dir(&self) -> PathBuf {
        self.pin_dir.join("links")
    }

    /// Every datapath link pinned by this instance (any netns): defunct
    /// ones lose their pin, live ones running another program than this
    /// value's of the same name get it in place.
    fn adopt_links(&mut self) -> Result<(), DatapathError> {
        let dir = self.links_dir();
        let err = |cause| DatapathError::Syscall {
            call: "adopting the pinned tcx links",
            cause,
        };
        for p in tcx::list(&dir, is_datapath_link_kind).map_err(err)? {
            if p.is_defunct() {
                p.unpin().map_err(err)?;
                self.opened.links_removed += 1;
                tracing::info!(pin = %p.path.display(), "removed the pin of a defunct tcx link (device gone)");
                continue;
            }
            self.opened.links_adopted += 1;
            let Some(running) = tcx::prog_name(p.info.prog_id).map_err(err)? else {
                continue;
            };
            let Some(ours) = self
                .progs
                .iter()
                .find(|q| tcx::same_prog_name(&running, q.name))
            else {
                tracing::warn!(pin = %p.path.display(), program = %running, "pinned link runs a program this build does not know; left as it is");
                continue;
            };
            if ours.id != p.info.prog_id {
                sys::link_update(p.fd.as_fd(), ours.fd.as_fd(), None).map_err(err)?;
                self.opened.links_updated += 1;
                tracing::info!(
                    link = p.info.id,
                    ifindex = p.info.ifindex,
                    program = ours.name,
                    from = p.info.prog_id,
                    to = ours.id,
                    "tcx link now runs the new program (updated in place)"
                );
            }
        }
        Ok(())
    }

    pub(crate) fn prog(&self, name: &str) -> Result<&LoadedProg, DatapathError> {
        self.progs
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| DatapathError::UnknownProgram(name.into()))
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    pub(crate) fn maps_dir(&self) -> PathBuf {
        self.pin_dir.join("maps")
    }

    /// Adds or replaces the endpoint for `ip`.
    pub fn upsert_endpoint(&mut self, ip: Ipv4Addr, ep: MgmtEndpoint) -> Result<(), DatapathError> {
        if ep.host_ifindex == 0 {
            return Err(DatapathError::InvalidEndpoint(format!(
                "{ip}: host_ifindex must not be 0"
            )));
        }
        self.eps
            .insert(ip_key(ip), RawMgmtEndpoint::from(ep), 0)
            .map_err(|e| {
                if map_errno(&e) == Some(libc::E2BIG) {
                    DatapathError::MapFull {
                        map: MAP_MGMT_ENDPOINTS,
                        max_entries: self.eps_max,
                    }
                } else {
                    DatapathError::map(MAP_MGMT_ENDPOINTS, e)
                }
            })
    }

    /// Removes the endpoint for `ip`; fine if there is none.
    pub fn remove_endpoint(&mut self, ip: Ipv4Addr) -> Result<(), DatapathError> {
        match self.eps.remove(&ip_key(ip)) {
            Err(e) if map_errno(&e) == Some(libc::ENOENT) => Ok(()),
            r => r.map_err(|e| DatapathError::map(MAP_MGMT_ENDPOINTS, e)),
        }
    }

    /// One endpoint by address (a single map lookup, unlike `endpoints`).
    pub fn endpoint(&self, ip: Ipv4Addr) -> Result<Option<MgmtEndpoint>, DatapathError> {
        match self.eps.get(&ip_key(ip), 0) {
            Ok(v) => Ok(Some(MgmtEndpoint::from(v))),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(DatapathError::map(MAP_MGMT_ENDPOINTS, e)),
        }
    }

    /// Every endpoint, sorted by address.
    pub fn endpoints(&self) -> Result<Vec<(Ipv4Addr, MgmtEndpoint)>, DatapathError> {
        let mut out = self
            .eps
            .iter()
            .map(|r| {
                r.map(|(k, v)| (key_ip(k), MgmtEndpoint::from(v)))
                    .map_err(|e| DatapathError::map(MAP_MGMT_ENDPOINTS, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by_key(|(ip, _)| *ip);
        Ok(out)
    }

    /// Counters of one port summed over CPUs; `None` if the port is not attached.
    pub fn port_stats(&self, host_ifindex: u32) -> Result<Option<PortStats>, DatapathError> {
        match self.stats.get(&host_ifindex, 0) {
            Ok(values) => Ok(Some(PortStats::sum(values.iter()))),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(DatapathError::map(MAP_PORT_STATS, e)),
        }
    }

    /// Counters of every attached port, sorted by ifindex.
    pub fn all_port_stats(&self) -> Result<Vec<(u32, PortStats)>, DatapathError> {
        let mut out = Vec::new();
        for r in self.stats.iter() {
            match r {
                Ok((k, values)) => out.push((k, PortStats::sum(values.iter()))),
                // Removed between listing the key and reading it.
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(DatapathError::map(MAP_PORT_STATS, e)),
            }
        }
        out.sort_by_key(|(k, _)| *k);
        Ok(out)
    }

    /// Creates the zeroed counters entry of a port, keeping an existing one
    /// (a restarted netd keeps its counters).
    pub(crate) fn ensure_stats_entry(&mut self, ifindex: u32) -> Result<(), DatapathError> {
        const BPF_NOEXIST: u64 = 1;
        let ncpus = aya::util::nr_cpus()
            .map_err(|(what, cause)| DatapathError::Syscall { call: what, cause })?;
        let zero = PerCpuValues::try_from(vec![RawPortStats::default(); ncpus]).map_err(|e| {
            DatapathError::Syscall {
                call: "per-cpu values",
                cause: e,
            }
        })?;
        match self.stats.insert(ifindex, zero, BPF_NOEXIST) {
            Ok(()) => Ok(()),
            Err(e) => match map_errno(&e) {
                Some(libc::EEXIST) => Ok(()),
                Some(libc::E2BIG) => Err(DatapathError::MapFull {
                    map: MAP_PORT_STATS,
                    max_entries: self.stats_max,
                }),
                _ => Err(DatapathError::map(MAP_PORT_STATS, e)),
            },
        }
    }

    pub(crate) fn remove_stats_entry(&mut self, ifindex: u32) -> Result<(), DatapathError> {
        match self.stats.remove(&ifindex) {
            Err(e) if map_errno(&e) == Some(libc::ENOENT) => Ok(()),
            r => r.map_err(|e| DatapathError::map(MAP_PORT_STATS, e)),
        }
    }

    /// The fd of a loaded program, for [`crate::test_run`].
    pub fn program_fd(&self, name: &str) -> Result<BorrowedFd<'_>, DatapathError> {
        Ok(self.prog(name)?.fd.as_fd())
    }

    /// The kernel's id of a program of this datapath (what its links
    /// run, and what bpftool shows).
    pub fn program_id(&self, name: &str) -> Result<u32, DatapathError> {
        Ok(self.prog(name)?.id)
    }

    /// Mode, pin directory, programs and map usage.
    pub fn status(&self) -> DatapathInfo {
        let count = |keys: &mut dyn Iterator<Item = Result<u32, aya::maps::MapError>>| {
            let mut n = 0u32;
            for k in keys {
                k.ok()?;
                n += 1;
            }
            Some(n)
        };
        DatapathInfo {
            mode: MODE.to_owned(),
            pin_dir: self.pin_dir.clone(),
            programs: PROGRAMS.iter().map(|p| (*p).to_owned()).collect(),
            maps: vec![
                MapUsage {
                    name: MAP_MGMT_ENDPOINTS.to_owned(),
                    entries: count(&mut self.eps.keys()),
                    max_entries: self.eps_max,
                },
                MapUsage {
                    name: MAP_PORT_STATS.to_owned(),
                    entries: count(&mut self.stats.keys()),
                    max_entries: self.stats_max,
                },
                MapUsage {
                    name: MAP_L2_PORTS.to_owned(),
                    entries: count(&mut self.l2.ports.keys()),
                    max_entries: self.l2.max[0],
                },
                MapUsage {
                    name: MAP_L2_VLANS.to_owned(),
                    entries: count_keys(self.l2.vlans.keys()),
                    max_entries: self.l2.max[1],
                },
                MapUsage {
                    name: MAP_L2_FDB.to_owned(),
                    entries: count_keys(self.l2.fdb.keys()),
                    max_entries: self.l2.max[2],
                },
                MapUsage {
                    name: MAP_L2_CLUSTER_NETWORKS.to_owned(),
                    entries: count(&mut self.l2.cns.keys()),
                    max_entries: self.l2.max[3],
                },
                MapUsage {
                    name: MAP_L2_VLAN_STATS.to_owned(),
                    entries: count_keys(self.l2.vlan_stats.keys()),
                    max_entries: self.l2.max[4],
                },
                MapUsage {
                    name: MAP_L2_DHCP.to_owned(),
                    entries: count_keys(self.l2.dhcp.keys()),
                    max_entries: self.l2.max[5],
                },
                MapUsage {
                    name: MAP_L2_PSEC.to_owned(),
                    entries: count(&mut self.l2.psec.keys()),
                    max_entries: self.l2.max[6],
                },
                MapUsage {
                    name: MAP_L2_PSEC_V4.to_owned(),
                    entries: count_keys(self.l2.psec_v4.keys()),
                    max_entries: self.l2.max[7],
                },
                MapUsage {
                    name: MAP_L2_PSEC_V6.to_owned(),
                    entries: count_keys(self.l2.psec_v6.keys()),
                    max_entries: self.l2.max[8],
                },
            ],
        }
    }

    /// Removes our links and filters from every interface of the calling
    /// thread's netns that [`Datapath::pinned_ports`] reports, detaches
    /// the datapath links pinned for other namespaces, then removes every
    /// pin of this instance (maps, programs, links and the directories;
    /// a directory something else still pins in, the VIP fence's links,
    /// stays). For tests and uninstall.
    pub fn destroy(mut self) -> Result<(), DatapathError> {
        for ifname in self.pinned_ports()? {
            self.detach_port(&ifname, 0)?;
        }
        let links_dir = self.links_dir();
        let err = |cause| DatapathError::Syscall {
            call: "detaching the pinned tcx links",
            cause,
        };
        for p in tcx::list(&links_dir, is_datapath_link_kind).map_err(err)? {
            if !p.is_defunct() {
                sys::link_detach(p.fd.as_fd()).map_err(err)?;
            }
            p.unpin().map_err(err)?;
        }
        let maps_dir = self.maps_dir();
        let progs_dir = self.pin_dir.join("progs");
        remove_dir_contents(&maps_dir)?;
        remove_dir_contents(&progs_dir)?;
        for dir in [maps_dir, progs_dir, links_dir, self.pin_dir.clone()] {
            match fs::remove_dir(&dir) {
                Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {
                    tracing::debug!(dir = %dir.display(), "pin directory still in use; left");
                }
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(DatapathError::Bpffs {
                        what: "removing",
                        path: dir,
                        cause: e,
                    })
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The read-only global of bpf/lib/generation.h.
const GENERATION_GLOBAL: &str = "furrow_datapath_generation";

/// Kinds of the datapath's link pins (`crate::tcx`): one per hook.
pub(crate) const LINK_INGRESS: &str = "ingress";
pub(crate) const LINK_EGRESS: &str = "egress";

pub(crate) fn is_datapath_link_kind(kind: &str) -> bool {
    kind == LINK_INGRESS || kind == LINK_EGRESS
}

/// What makes a loaded program what it is, hashed (FNV-1a, 64 bits): its
/// name, the whole object it comes from, the generation global, and the
/// ids of the pinned maps (a map re-created since makes the pinned
/// program stale: it would still use the old one). Equal identities mean
/// the pinned program can be reused as it is.
fn program_identity(name: &str, image: &[u8], generation: u32, map_ids: &[u32]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(b"furrow-prog-1\0");
    eat(name.as_bytes());
    eat(&[0]);
    eat(&(image.len() as u64).to_le_bytes());
    eat(image);
    eat(&generation.to_le_bytes());
    for id in map_ids {
        eat(&id.to_le_bytes());
    }
    h
}

/// The program `name` of `obj`: the copy pinned at
/// `progs_dir/<name>-<identity>` if there is one, else loaded now and
/// pinned there. `true` if reused.
fn load_or_reuse(
    obj: &mut Ebpf,
    name: &'static str,
    progs_dir: &Path,
    identity: u64,
) -> Result<(LoadedProg, bool), DatapathError> {
    let pin = format!("{name}-{identity:016x}");
    let path = progs_dir.join(&pin);
    let pin_err = |what, cause| DatapathError::Bpffs {
        what,
        path: path.clone(),
        cause,
    };
    match sys::obj_get(&path) {
        Ok(fd) => match sys::prog_basics(fd.as_fd()) {
            Ok(b) if tcx::same_prog_name(&b.name, name) => {
                let id = b.id;
                return Ok((LoadedProg { name, fd, id, pin }, true));
            }
            r => {
                tracing::warn!(path = %path.display(), found = ?r, "pinned program is not what its name says; loading it again");
                fs::remove_file(&path).map_err(|e| pin_err("removing", e))?;
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(pin_err("opening", e)),
    }
    let prog: &mut SchedClassifier = obj
        .program_mut(name)
        .ok_or_else(|| DatapathError::UnknownProgram(name.into()))?
        .try_into()
        .map_err(|e| DatapathError::program(name, e))?;
    prog.load().map_err(|e| DatapathError::program(name, e))?;
    let fd = prog
        .fd()
        .map_err(|e| DatapathError::program(name, e))?
        .as_fd()
        .try_clone_to_owned()
        .map_err(|cause| DatapathError::Syscall { call: "dup", cause })?;
    let id = sys::prog_basics(fd.as_fd())
        .map_err(|cause| DatapathError::Syscall {
            call: "reading a program's info",
            cause,
        })?
        .id;
    sys::obj_pin(fd.as_fd(), &path).map_err(|e| pin_err("pinning a program at", e))?;
    Ok((LoadedProg { name, fd, id, pin }, false))
}

/// Removes the pins of `name` in `progs_dir` other than `keep` (older
/// builds' or generations'; links that still run them keep them alive).
fn remove_stale_program_pins(
    progs_dir: &Path,
    name: &str,
    keep: &str,
) -> Result<(), DatapathError> {
    let Ok(entries) = fs::read_dir(progs_dir) else {
        return Ok(());
    };
    for e in entries.filter_map(Result::ok) {
        let f = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = f.strip_prefix(name).and_then(|r| r.strip_prefix('-')) else {
            continue;
        };
        let is_hash = rest.len() == 16 && rest.bytes().all(|b| b.is_ascii_hexdigit());
        if f == keep || !is_hash {
            continue;
        }
        match fs::remove_file(e.path()) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => {
                return Err(DatapathError::Bpffs {
                    what: "removing",
                    path: e.path(),
                    cause: err,
                })
            }
            _ => {}
        }
    }
    Ok(())
}

/// The L2 maps in the order of `L2Maps::max`.
const L2_MAP_NAMES: [&str; 9] = [
    MAP_L2_PORTS,
    MAP_L2_VLANS,
    MAP_L2_FDB,
    MAP_L2_CLUSTER_NETWORKS,
    MAP_L2_VLAN_STATS,
    MAP_L2_DHCP,
    MAP_L2_PSEC,
    MAP_L2_PSEC_V4,
    MAP_L2_PSEC_V6,
];

fn count_keys<K>(keys: impl Iterator<Item = Result<K, aya::maps::MapError>>) -> Option<u32> {
    let mut n = 0u32;
    for k in keys {
        k.ok()?;
        n += 1;
    }
    Some(n)
}

fn take_map(bpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, DatapathError> {
    bpf.take_map(name).ok_or_else(|| DatapathError::Map {
        map: name,
        cause: Box::new(aya::maps::MapError::InvalidName {
            name: name.to_owned(),
        }),
    })
}

/// max_entries and kernel id of a pinned map.
fn pinned_map_info(maps_dir: &Path, name: &'static str) -> Result<(u32, u32), DatapathError> {
    MapInfo::from_pin(maps_dir.join(name))
        .map(|i| (i.max_entries(), i.id()))
        .map_err(|e| DatapathError::map(name, e))
}

/// Refuses pinned maps whose shape differs from this build's: aya would
/// reuse them as they are and the programs would misread their values.
fn check_pinned_maps(maps_dir: &Path) -> Result<(), DatapathError> {
    for spec in &MAP_SPECS {
        let path = maps_dir.join(spec.name);
        if !path.exists() {
            continue;
        }
        let info = MapInfo::from_pin(&path).map_err(|e| DatapathError::map(spec.name, e))?;
        // Unknown types map to u32::MAX, which never matches.
        let map_type = info.map_type().map_or(u32::MAX, |t| t as u32);
        let found = (map_type, info.key_size(), info.value_size());
        let expected = (spec.map_type, spec.key_size, spec.value_size);
        if found != expected {
            if spec.recreate {
                // Counters only: start afresh rather than refuse to run.
                // Programs still attached keep the old map until they are
                // replaced.
                tracing::warn!(
                    path = %path.display(),
                    ?found,
                    ?expected,
                    "pinned counters map has another layout; replacing it (counters restart at 0)"
                );
                fs::remove_file(&path).map_err(|cause| DatapathError::Bpffs {
                    what: "removing",
                    path: path.clone(),
                    cause,
                })?;
                continue;
            }
            return Err(DatapathError::IncompatiblePin {
                path,
                detail: format!("type/key/value sizes {found:?}, this build needs {expected:?}"),
            });
        }
    }
    Ok(())
}

pub(crate) fn remove_dir_contents(dir: &Path) -> Result<(), DatapathError> {
    let err = |path: PathBuf, cause| DatapathError::Bpffs {
        what: "removing",
        path,
        cause,
    };
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err(dir.to_path_buf(), e)),
    };
    for entry in entries {
        let path = entry.map_err(|e| err(dir.to_path_buf(), e))?.path();
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(err(path, e)),
            _ => {}
        }
    }
    Ok(())
}

/// Map key: the address in network byte order, as the programs read it
/// from the IPv4 header.
fn ip_key(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

fn key_ip(key: u32) -> Ipv4Addr {
    Ipv4Addr::from(key.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_key_is_network_order() {
        let ip = Ipv4Addr::new(10, 1, 2, 3);
        assert_eq!(ip_key(ip).to_ne_bytes(), [10, 1, 2, 3]);
        assert_eq!(key_ip(ip_key(ip)), ip);
    }

    /// The C layouts (as the kernel created the maps from the objects'
    /// BTF) match the Rust ones: a mismatch would otherwise surface only
    /// as an IncompatiblePin at the next restart, or as a silently
    /// re-created counters map.
    #[test]
    fn pinned_map_layouts_match_the_rust_structs() {
        let dir = PathBuf::from(format!(
            "/sys/fs/bpf/furrow-unit-{}-layouts",
            std::process::id()
        ));
        let dp = Datapath::open(DatapathConfig::new(&dir)).unwrap();
        for spec in &MAP_SPECS {
            let info = MapInfo::from_pin(dir.join("maps").join(spec.name)).unwrap();
            assert_eq!(
                (
                    info.map_type().map_or(u32::MAX, |t| t as u32),
                    info.key_size(),
                    info.value_size()
                ),
                (spec.map_type, spec.key_size, spec.value_size),
                "{}",
                spec.name
            );
        }
        dp.destroy().unwrap();
    }

    #[test]
    fn datapath_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Datapath>();
    }
}
