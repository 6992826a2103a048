//! Loading the programs, pinning maps, and the table operations.

use std::{
    fs, io,
    net::Ipv4Addr,
    os::fd::{AsFd, BorrowedFd},
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
    ports::Direction,
    DatapathError, MgmtEndpoint, PortStats, MAP_L2_CLUSTER_NETWORKS, MAP_L2_DHCP, MAP_L2_FDB,
    MAP_L2_PORTS, MAP_L2_PSEC, MAP_L2_PSEC_V4, MAP_L2_PSEC_V6, MAP_L2_VLANS, MAP_L2_VLAN_STATS,
    MAP_MGMT_ENDPOINTS, MAP_PORT_STATS, MODE, PROGRAMS, PROG_L2_INGRESS, PROG_L2_UPLINK_EGRESS,
};

/// Where one datapath instance keeps its pins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatapathConfig {
    /// Absolute directory on bpffs, one per netd instance, e.g.
    /// `/sys/fs/bpf/furrow/<instance>`. Maps are pinned in `maps/`.
    /// Instances with different directories share nothing. (The tc
    /// filters that run the programs need no pins.)
    pub pin_dir: PathBuf,
}

impl DatapathConfig {
    pub fn new(pin_dir: impl Into<PathBuf>) -> Self {
        DatapathConfig {
            pin_dir: pin_dir.into(),
        }
    }
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
    pub(crate) bpf: Ebpf,
    /// bpf/l2.bpf.o; shares furrow_port_stats with `bpf` through its pin.
    pub(crate) l2_bpf: Ebpf,
    pub(crate) l2: L2Maps,
    eps: HashMap<MapData, u32, RawMgmtEndpoint>,
    pub(crate) stats: PerCpuHashMap<MapData, u32, RawPortStats>,
    eps_max: u32,
    pub(crate) stats_max: u32,
    /// Kernel ids of the loaded programs, by `Direction::index`.
    pub(crate) prog_ids: [u32; 2],
    /// Kernel ids of (furrow_l2_ingress, furrow_l2_uplink_egress).
    pub(crate) l2_prog_ids: [u32; 2],
    /// Kernel ids of the pinned maps: a program using one is ours.
    /// Management maps (endpoints, counters) first, then the L2 maps.
    pub(crate) map_ids: Vec<u32>,
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
    /// (reusing existing pins and their contents) and loads the programs.
    /// Attaches nothing: see [`Datapath::attach_port`].
    ///
    /// Only one process may use a pin directory at a time.
    pub fn open(cfg: DatapathConfig) -> Result<Self, DatapathError> {
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

        let mut bpf = EbpfLoader::new()
            .default_map_pin_directory(&maps_dir)
            .load(MGMT_OBJECT)
            .map_err(|e| DatapathError::Load(Box::new(e)))?;
        // The second object finds furrow_port_stats pinned by the first
        // and uses that same map.
        let mut l2_bpf = EbpfLoader::new()
            .default_map_pin_directory(&maps_dir)
            .load(L2_OBJECT)
            .map_err(|e| DatapathError::Load(Box::new(e)))?;
        for name in PROGRAMS {
            let obj = if bpf.program(name).is_some() {
                &mut bpf
            } else {
                &mut l2_bpf
            };
            let prog: &mut SchedClassifier = obj
                .program_mut(name)
                .ok_or_else(|| DatapathError::UnknownProgram(name.into()))?
                .try_into()
                .map_err(|e| DatapathError::program(name, e))?;
            prog.load().map_err(|e| DatapathError::program(name, e))?;
        }

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

        let mut dp = Datapath {
            pin_dir,
            bpf,
            l2_bpf,
            l2,
            eps,
            stats,
            eps_max,
            stats_max,
            prog_ids: [0; 2],
            l2_prog_ids: [0; 2],
            map_ids,
        };
        for dir in Direction::ALL {
            dp.prog_ids[dir.index()] = dp.program_id(dir.program())?;
        }
        dp.l2_prog_ids = [
            dp.program_id(PROG_L2_INGRESS)?,
            dp.program_id(PROG_L2_UPLINK_EGRESS)?,
        ];
        tracing::debug!(pin_dir = %dp.pin_dir.display(), "datapath loaded");
        Ok(dp)
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
        Ok(self
            .classifier(name)?
            .fd()
            .map_err(|e| DatapathError::program(name, e))?
            .as_fd())
    }

    /// The kernel's id of a loaded program (what `tc filter show` and
    /// bpftool show).
    pub fn program_id(&self, name: &str) -> Result<u32, DatapathError> {
        let info = self
            .classifier(name)?
            .info()
            .map_err(|e| DatapathError::program(name, e))?;
        Ok(info.id())
    }

    pub(crate) fn classifier(&self, name: &str) -> Result<&SchedClassifier, DatapathError> {
        self.bpf
            .program(name)
            .or_else(|| self.l2_bpf.program(name))
            .ok_or_else(|| DatapathError::UnknownProgram(name.into()))?
            .try_into()
            .map_err(|e| DatapathError::program(name, e))
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

    /// Removes our filters from every interface of the calling thread's
    /// netns that [`Datapath::pinned_ports`] reports, then every pin of
    /// this instance (maps and the directories). For tests and uninstall.
    pub fn destroy(mut self) -> Result<(), DatapathError> {
        for ifname in self.pinned_ports()? {
            self.detach_port(&ifname, 0)?;
        }
        let maps_dir = self.maps_dir();
        remove_dir_contents(&maps_dir)?;
        for dir in [maps_dir, self.pin_dir.clone()] {
            match fs::remove_dir(&dir) {
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
