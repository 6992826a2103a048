//! Attaching the programs to host-side veths: cls_bpf filters in
//! direct-action mode on the clsact qdisc, created over rtnetlink at a
//! fixed (priority, handle) slot (see [`crate::FILTER_PRIORITY`]).
//!
//! Why not tcx links: attaching or detaching a tcx link waits for an RCU
//! grace period (tcx_entry_sync -> synchronize_rcu), ~12 ms attach and
//! ~10 ms detach per hook here, against ~70 µs / ~20 µs for a tc filter.
//! Both replace a program atomically; a tc filter lives as long as its
//! device without any pin.

use std::{
    collections::BTreeSet,
    ffi::CStr,
    io,
    os::fd::{AsFd, AsRawFd},
};

use crate::{
    tc::{Hook, TcSocket},
    Datapath, DatapathError, PROG_MGMT_FROM_POD, PROG_MGMT_TO_POD,
};

/// A hook of a host-side veth and the program that goes there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub(crate) const ALL: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    pub(crate) fn program(self) -> &'static str {
        match self {
            Direction::Ingress => PROG_MGMT_FROM_POD,
            Direction::Egress => PROG_MGMT_TO_POD,
        }
    }

    fn hook(self) -> Hook {
        match self {
            Direction::Ingress => Hook::Ingress,
            Direction::Egress => Hook::Egress,
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl Datapath {
    /// Attaches both management programs to the host-side veth (adding
    /// its clsact qdisc if needed) as cls_bpf filters at our fixed slot,
    /// and creates the port's zeroed counters entry (an existing entry is
    /// kept).
    ///
    /// A filter already in our slot (netd restarted, or an upgrade changed
    /// the programs) gets its program replaced atomically: no second
    /// filter, no moment without a program. Idempotent. The filters stay
    /// when this value is dropped; they go with the device or with
    /// [`Datapath::detach_port`]. Must run in the netns of the veth;
    /// `host_ifindex` must be the current index of `host_ifname`.
    pub fn attach_port(
        &mut self,
        host_ifname: &str,
        host_ifindex: u32,
    ) -> Result<(), DatapathError> {
        validate_ifname(host_ifname)?;
        let actual = ifindex_of(host_ifname)?.ok_or_else(|| DatapathError::InterfaceNotFound {
            ifname: host_ifname.to_owned(),
        })?;
        if actual != host_ifindex {
            return Err(DatapathError::IfindexMismatch {
                ifname: host_ifname.to_owned(),
                expected: host_ifindex,
                actual,
            });
        }
        // Counters first, so the very first frame is counted.
        self.ensure_stats_entry(host_ifindex)?;

        // From here on the device is addressed by index: a rename cannot
        // send us to another interface, a deletion fails with ENODEV.
        let err = |what| move |e: crate::tc::NlError| tc_error(what, host_ifname, e);
        let mut tc = TcSocket::open().map_err(err("opening rtnetlink"))?;
        tc.ensure_clsact(host_ifindex)
            .map_err(err("adding the clsact qdisc"))?;
        // Egress first: once ingress redirects to other pods, this port's
        // own deliveries are already counted.
        for dir in [Direction::Egress, Direction::Ingress] {
            let name = dir.program();
            let fd = self
                .classifier(name)?
                .fd()
                .map_err(|e| DatapathError::program(name, e))?
                .as_fd()
                .as_raw_fd();
            tc.upsert_filter(host_ifindex, dir.hook(), fd, name)
                .map_err(err(match dir {
                    Direction::Ingress => "attaching the ingress filter",
                    Direction::Egress => "attaching the egress filter",
                }))?;
        }
        Ok(())
    }

    /// Removes our filters from the port if `host_ifname` still has index
    /// `host_ifindex` (a newer port that reuses the name is left alone),
    /// and deletes the counters entry of `host_ifindex`. Idempotent, and
    /// only a name lookup plus a map delete when the interface is gone.
    ///
    /// `host_ifindex` 0 means "whatever interface has this name now" (its
    /// counters entry is deleted too). The clsact qdisc is left in place:
    /// it costs nothing without filters and may serve others.
    pub fn detach_port(
        &mut self,
        host_ifname: &str,
        host_ifindex: u32,
    ) -> Result<(), DatapathError> {
        validate_ifname(host_ifname)?;
        let current = ifindex_of(host_ifname)?;
        let target = current.filter(|&i| host_ifindex == 0 || i == host_ifindex);
        if let Some(ifindex) = target {
            let err = |what| move |e: crate::tc::NlError| tc_error(what, host_ifname, e);
            let mut tc = TcSocket::open().map_err(err("opening rtnetlink"))?;
            // Ingress first: stop redirecting before the counters go.
            for dir in Direction::ALL {
                tc.delete_filter(ifindex, dir.hook())
                    .map_err(err("deleting a filter"))?;
            }
        }
        match (host_ifindex, target) {
            (0, None) => Ok(()),
            (0, Some(i)) => self.remove_stats_entry(i),
            (i, _) => self.remove_stats_entry(i),
        }
    }

    /// Drops the counters entry of an ifindex whose interface is gone
    /// without a `detach_port` (its filters went with the device).
    /// Idempotent.
    pub fn forget_port_stats(&mut self, host_ifindex: u32) -> Result<(), DatapathError> {
        self.remove_stats_entry(host_ifindex)
    }

    /// Names of the interfaces (in the calling thread's netns) whose
    /// filter in our slot runs a program of this instance, management or
    /// L2: one loaded by this value, or by an earlier process on the same
    /// pins (it uses our pinned maps), which is what a restarted netd
    /// finds before it re-attaches. Sorted. Costs one qdisc dump for the
    /// netns plus two filter dumps per device that has a clsact qdisc.
    /// [`Datapath::pinned_mgmt_ports`] and [`Datapath::pinned_l2_ports`]
    /// split the list by datapath.
    pub fn pinned_ports(&self) -> Result<Vec<String>, DatapathError> {
        let mut names: Vec<String> = self.port_kinds()?.into_iter().map(|(n, _)| n).collect();
        names.dedup();
        Ok(names)
    }

    /// The part of [`Datapath::pinned_ports`] running management programs
    /// (what the management driver may reconcile).
    pub fn pinned_mgmt_ports(&self) -> Result<Vec<String>, DatapathError> {
        Ok(self
            .port_kinds()?
            .into_iter()
            .filter(|(_, k)| *k == PortKind::Mgmt)
            .map(|(n, _)| n)
            .collect())
    }

    /// The part of [`Datapath::pinned_ports`] running L2 switch programs.
    pub fn pinned_l2_ports(&self) -> Result<Vec<String>, DatapathError> {
        Ok(self
            .port_kinds()?
            .into_iter()
            .filter(|(_, k)| *k == PortKind::L2)
            .map(|(n, _)| n)
            .collect())
    }

    /// (name, kind) of every interface with a filter of ours, sorted.
    fn port_kinds(&self) -> Result<Vec<(String, PortKind)>, DatapathError> {
        let err = |what| move |e: crate::tc::NlError| tc_error(what, "all interfaces", e);
        let mut tc = TcSocket::open().map_err(err("opening rtnetlink"))?;
        let mut out = BTreeSet::new();
        for ifindex in tc.clsact_devices().map_err(err("listing qdiscs"))? {
            let mut kinds = BTreeSet::new();
            for dir in Direction::ALL {
                for f in tc
                    .filters(ifindex, dir.hook())
                    .map_err(err("listing filters"))?
                {
                    if f.in_our_slot() {
                        if let Some(kind) = self.program_kind(f.prog_id)? {
                            kinds.insert(kind);
                        }
                    }
                }
            }
            if kinds.is_empty() {
                continue;
            }
            // Gone since the dump: nothing to report.
            if let Some(name) = ifname_of(ifindex)? {
                for k in kinds {
                    out.insert((name.clone(), k));
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    /// True iff `host_ifname` exists in the calling thread's netns and
    /// our filters are on it, in direct-action mode, running the programs
    /// loaded by this value (after a restart: false until
    /// [`Datapath::attach_port`] / [`Datapath::l2_attach_port`] replaced
    /// the programs). For a management port: both management programs.
    /// For an L2 port (it has an L2 port entry): `furrow_l2_ingress`, plus
    /// `furrow_l2_uplink_egress` on an uplink. For CNI CHECK.
    pub fn is_port_attached(&self, host_ifname: &str) -> Result<bool, DatapathError> {
        validate_ifname(host_ifname)?;
        let Some(ifindex) = ifindex_of(host_ifname)? else {
            return Ok(false);
        };
        let err = |what| move |e: crate::tc::NlError| tc_error(what, host_ifname, e);
        let mut tc = TcSocket::open().map_err(err("opening rtnetlink"))?;
        if let Some(port) = self.raw_l2_port(ifindex)? {
            let mut hooks = vec![(Hook::Ingress, self.l2_prog_ids[0])];
            if port.is_uplink() {
                hooks.push((Hook::Egress, self.l2_prog_ids[1]));
            }
            for (hook, want) in hooks {
                let filters = tc.filters(ifindex, hook).map_err(err("listing filters"))?;
                if !filters
                    .iter()
                    .any(|f| f.in_our_slot() && f.direct_action && f.prog_id == Some(want))
                {
                    return Ok(false);
                }
            }
            return Ok(true);
        }
        for dir in Direction::ALL {
            let want = self.prog_ids[dir.index()];
            let filters = tc
                .filters(ifindex, dir.hook())
                .map_err(err("listing filters"))?;
            if !filters
                .iter()
                .any(|f| f.in_our_slot() && f.direct_action && f.prog_id == Some(want))
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Which of our datapaths a program (by id) belongs to: loaded by
    /// this value, or using one of our pinned maps (an L2 map makes it
    /// L2; the management programs use only the endpoints and counters
    /// maps). `None` if it is not ours.
    fn program_kind(&self, prog_id: Option<u32>) -> Result<Option<PortKind>, DatapathError> {
        let Some(id) = prog_id else { return Ok(None) };
        if self.prog_ids.contains(&id) {
            return Ok(Some(PortKind::Mgmt));
        }
        if self.l2_prog_ids.contains(&id) {
            return Ok(Some(PortKind::L2));
        }
        match crate::sys::prog_map_ids(id) {
            Ok(maps) => {
                let (mgmt_maps, l2_maps) = self.map_ids.split_at(2);
                Ok(if maps.iter().any(|m| l2_maps.contains(m)) {
                    Some(PortKind::L2)
                } else if maps.iter().any(|m| mgmt_maps.contains(m)) {
                    Some(PortKind::Mgmt)
                } else {
                    None
                })
            }
            // Unloaded since the dump.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(cause) => Err(DatapathError::Syscall {
                call: "reading the maps of a program",
                cause,
            }),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum PortKind {
    Mgmt,
    L2,
}

fn tc_error(what: &'static str, ifname: &str, e: crate::tc::NlError) -> DatapathError {
    DatapathError::Tc {
        what,
        ifname: ifname.to_owned(),
        cause: e.into(),
    }
}

/// Interface names end up in netlink requests and error messages: keep them to what the kernel accepts for a device
/// and free of path tricks.
pub(crate) fn validate_ifname(name: &str) -> Result<(), DatapathError> {
    let ok = !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace());
    if ok {
        Ok(())
    } else {
        Err(DatapathError::InvalidIfname(name.to_owned()))
    }
}

/// The index of `name` in the calling thread's netns, `None` if absent.
pub(crate) fn ifindex_of(name: &str) -> Result<Option<u32>, DatapathError> {
    match nix::net::if_::if_nametoindex(name) {
        Ok(i) => Ok(Some(i)),
        Err(nix::errno::Errno::ENODEV) => Ok(None),
        Err(e) => Err(DatapathError::Syscall {
            call: "if_nametoindex",
            cause: e.into(),
        }),
    }
}

/// The name of `ifindex` in the calling thread's netns, `None` if absent.
pub(crate) fn ifname_of(ifindex: u32) -> Result<Option<String>, DatapathError> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has the IF_NAMESIZE bytes if_indextoname may write.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENXIO) | Some(libc::ENODEV) => Ok(None),
            _ => Err(DatapathError::Syscall {
                call: "if_indextoname",
                cause: e,
            }),
        };
    }
    // SAFETY: on success buf holds a NUL-terminated name.
    let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
    Ok(Some(name.to_string_lossy().into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifname_validation() {
        for ok in ["fw1a2b3c4d5e6f7", "eth0", "a", "eth0.100"] {
            assert!(validate_ifname(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a:b",
            "sixteen-chars-xx",
            "a b",
            "a\0",
        ] {
            assert!(validate_ifname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn lo_round_trips() {
        // Every netns has lo at index 1.
        assert_eq!(ifindex_of("lo").unwrap(), Some(1));
        assert_eq!(ifname_of(1).unwrap().as_deref(), Some("lo"));
        assert_eq!(ifname_of(u32::MAX - 7).unwrap(), None);
    }
}
