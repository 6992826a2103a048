//! Attaching the programs to host-side veths: one tcx link per hook,
//! pinned under `<pin_dir>/links` (see `crate::tcx` for names, adoption
//! and order), so that links outlive netd and a restarted or upgraded
//! netd takes them over without a gap.
//!
//! Older netd versions attached cls_bpf filters (clsact, direct-action)
//! at a fixed slot ([`crate::FILTER_PRIORITY`], [`crate::FILTER_HANDLE`]).
//! Such a filter is migrated when its port is attached again: the tcx
//! link first, then the filter is deleted. There is no window where the
//! frame is handled twice or not at all: tcx runs before classic tc, and
//! the datapath programs always return a verdict, so from the moment the
//! link exists the old filter no longer sees traffic. Those filters are
//! still listed by [`Datapath::pinned_ports`] (so a netd restarted after
//! the upgrade reconciles them like its own links) until migrated.

use std::{collections::BTreeSet, ffi::CStr, io, os::fd::AsFd};

use crate::{
    datapath::{is_datapath_link_kind, Attachment, LINK_EGRESS, LINK_INGRESS},
    tc::{Hook, TcSocket},
    tcx::{self, Position},
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

    pub(crate) fn hook(self) -> Hook {
        match self {
            Direction::Ingress => Hook::Ingress,
            Direction::Egress => Hook::Egress,
        }
    }
}

/// The pin kind of the datapath's link on `hook`.
pub(crate) fn hook_kind(hook: Hook) -> &'static str {
    match hook {
        Hook::Ingress => LINK_INGRESS,
        Hook::Egress => LINK_EGRESS,
    }
}

pub(crate) fn kind_hook(kind: &str) -> Option<Hook> {
    match kind {
        LINK_INGRESS => Some(Hook::Ingress),
        LINK_EGRESS => Some(Hook::Egress),
        _ => None,
    }
}

/// A program of a Furrow datapath (any instance), by its kernel name.
pub(crate) fn is_datapath_prog(name: &str) -> bool {
    prog_kind(name).is_some()
}

fn prog_kind(name: &str) -> Option<PortKind> {
    if name.starts_with("furrow_mgmt_") {
        Some(PortKind::Mgmt)
    } else if name.starts_with("furrow_l2_") {
        Some(PortKind::L2)
    } else {
        None
    }
}

fn hook_name(hook: Hook) -> &'static str {
    match hook {
        Hook::Ingress => "ingress",
        Hook::Egress => "egress",
    }
}

impl Datapath {
    /// Makes this instance's tcx link on `hook` of the device run `prog`
    /// (adopting, updating in place or creating it: see `tcx::ensure`),
    /// then removes what else of a Furrow datapath sits on that hook: an
    /// older netd's cls_bpf filter in our slot, another instance's link
    /// (a hook runs one datapath; the last to attach wins).
    pub(crate) fn link_port(
        &self,
        ifname: &str,
        ifindex: u32,
        hook: Hook,
        prog: &str,
    ) -> Result<(), DatapathError> {
        let p = self.prog(prog)?;
        let err = |what| move |cause| tcx_error(what, ifname, cause);
        let (link_id, _) = tcx::ensure(
            &self.links_dir(),
            hook_kind(hook),
            ifindex,
            hook,
            p.fd.as_fd(),
            p.id,
            Position::Last,
        )
        .map_err(err(match hook {
            Hook::Ingress => "attaching the ingress link",
            Hook::Egress => "attaching the egress link",
        }))?;
        tcx::detach_others(ifindex, hook, link_id, is_datapath_prog)
            .map_err(err("detaching another datapath's link"))?;
        delete_legacy_filter(ifname, ifindex, hook)
    }

    /// Takes this instance's link off `hook` of the device (and an older
    /// netd's filter in our slot). Idempotent.
    pub(crate) fn unlink_port(
        &self,
        ifname: &str,
        ifindex: u32,
        hook: Hook,
    ) -> Result<(), DatapathError> {
        tcx::remove(&self.links_dir(), hook_kind(hook), ifindex, hook)
            .map_err(|cause| tcx_error("detaching a link", ifname, cause))?;
        delete_legacy_filter(ifname, ifindex, hook)
    }

    /// Removes the pins of this instance's links on `ifindex` if they
    /// are defunct (the device is gone).
    pub(crate) fn unpin_defunct(&self, ifindex: u32) -> Result<(), DatapathError> {
        for hook in [Hook::Ingress, Hook::Egress] {
            let path = tcx::pin_path(&self.links_dir(), hook_kind(hook), ifindex)
                .and_then(|path| tcx::Pinned::open(&path));
            match path {
                Ok(Some(p)) if p.is_defunct() => p.unpin(),
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            }
            .map_err(|cause| DatapathError::Syscall {
                call: "removing the pin of a defunct link",
                cause,
            })?;
        }
        Ok(())
    }

    /// Attaches both management programs to the host-side veth through
    /// tcx links pinned under `<pin_dir>/links`, and creates the port's
    /// zeroed counters entry (an existing entry is kept).
    ///
    /// A link already pinned for the port (netd restarted, or an upgrade
    /// changed the programs) is adopted, its program replaced in place if
    /// it differs: same link, no moment without a program. Idempotent.
    /// The links stay when this value is dropped (and when netd is
    /// killed); they go with the device or with [`Datapath::detach_port`].
    /// An older netd's cls_bpf filter on the port is migrated (link first,
    /// then the filter goes). Must run in the netns of the veth;
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
        // Both hooks at once: creating a link waits for an RCU grace
        // period (~10 ms), and two waits in parallel cost about one. (A
        // new port: frames it sends before its egress link exists are
        // simply not counted.)
        let (egress, ingress) = in_parallel(
            || self.link_port(host_ifname, host_ifindex, Hook::Egress, PROG_MGMT_TO_POD),
            || self.link_port(host_ifname, host_ifindex, Hook::Ingress, PROG_MGMT_FROM_POD),
        );
        egress.and(ingress)
    }

    /// Removes our links (and an older netd's filters) from the port if
    /// `host_ifname` still has index `host_ifindex` (a newer port that
    /// reuses the name is left alone), unpins them, and deletes the
    /// counters entry of `host_ifindex`. Idempotent; when the interface
    /// is gone, only the pins of its defunct links and the map entry go.
    ///
    /// `host_ifindex` 0 means "whatever interface has this name now" (its
    /// counters entry is deleted too).
    pub fn detach_port(
        &mut self,
        host_ifname: &str,
        host_ifindex: u32,
    ) -> Result<(), DatapathError> {
        validate_ifname(host_ifname)?;
        let current = ifindex_of(host_ifname)?;
        let target = current.filter(|&i| host_ifindex == 0 || i == host_ifindex);
        if let Some(ifindex) = target {
            // Ingress first: stop redirecting before the counters go.
            // Both at once, like attach_port (detaching waits for RCU too).
            let (ingress, egress) = in_parallel(
                || self.unlink_port(host_ifname, ifindex, Hook::Ingress),
                || self.unlink_port(host_ifname, ifindex, Hook::Egress),
            );
            ingress.and(egress)?;
        } else if host_ifindex != 0 {
            self.unpin_defunct(host_ifindex)?;
        }
        match (host_ifindex, target) {
            (0, None) => Ok(()),
            (0, Some(i)) => self.remove_stats_entry(i),
            (i, _) => self.remove_stats_entry(i),
        }
    }

    /// Drops the counters entry of an ifindex whose interface is gone
    /// without a `detach_port` (its links went defunct with the device:
    /// their pins go too). Idempotent.
    pub fn forget_port_stats(&mut self, host_ifindex: u32) -> Result<(), DatapathError> {
        self.unpin_defunct(host_ifindex)?;
        self.remove_stats_entry(host_ifindex)
    }

    /// Names of the interfaces (in the calling thread's netns) that have
    /// a live tcx link pinned by this instance, or an older netd's filter
    /// in our slot running a program of this instance (one using our
    /// pinned maps), management or L2: what a restarted netd finds before
    /// it re-attaches. Sorted. Costs a few bpf(2) calls per pinned link,
    /// plus one qdisc dump for the netns and two filter dumps per device
    /// that has a clsact qdisc (older netd versions added them).
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

    /// (name, kind) of every interface with a link or filter of ours, sorted.
    fn port_kinds(&self) -> Result<Vec<(String, PortKind)>, DatapathError> {
        let mut out = BTreeSet::new();
        for a in self.link_attachments()? {
            if let Some(kind) = prog_kind(&a.program) {
                out.insert((a.ifname, kind));
            }
        }
        let err = |what| move |e: crate::tc::NlError| tc_error(what, "all interfaces", e);
        let mut tc = TcSocket::open().map_err(err("opening rtnetlink"))?;
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
    /// this instance's tcx links are on it, running this value's programs
    /// (after an upgrade that changed them: once [`Datapath::open`] has
    /// updated the links, which it does before returning). For a
    /// management port: both management programs. For an L2 port (it has
    /// an L2 port entry): `furrow_l2_ingress`, plus
    /// `furrow_l2_uplink_egress` on an uplink. An older netd's filter
    /// does not count. For CNI CHECK.
    pub fn is_port_attached(&self, host_ifname: &str) -> Result<bool, DatapathError> {
        validate_ifname(host_ifname)?;
        let Some(ifindex) = ifindex_of(host_ifname)? else {
            return Ok(false);
        };
        let hooks = if let Some(port) = self.raw_l2_port(ifindex)? {
            let mut hooks = vec![(Hook::Ingress, crate::PROG_L2_INGRESS)];
            if port.is_uplink() {
                hooks.push((Hook::Egress, crate::PROG_L2_UPLINK_EGRESS));
            }
            hooks
        } else {
            Direction::ALL
                .iter()
                .map(|d| (d.hook(), d.program()))
                .collect()
        };
        let err = |cause| tcx_error("reading a link", host_ifname, cause);
        for (hook, prog) in hooks {
            let want = self.prog(prog)?.id;
            let path = tcx::pin_path(&self.links_dir(), hook_kind(hook), ifindex).map_err(err)?;
            let Some(p) = tcx::Pinned::open(&path).map_err(err)? else {
                return Ok(false);
            };
            if p.info.prog_id != want || !p.is_on(ifindex, hook).map_err(err)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Where this instance's programs run in the calling thread's netns:
    /// every live tcx link it pinned, then every older netd's filter in
    /// our slot running one of its programs (until migrated). Sorted by
    /// interface name and hook.
    pub fn attachments(&self) -> Result<Vec<Attachment>, DatapathError> {
        let mut out = self.link_attachments()?;
        let err = |what| move |e: crate::tc::NlError| tc_error(what, "all interfaces", e);
        let mut tc = TcSocket::open().map_err(err("opening rtnetlink"))?;
        for ifindex in tc.clsact_devices().map_err(err("listing qdiscs"))? {
            for dir in Direction::ALL {
                for f in tc
                    .filters(ifindex, dir.hook())
                    .map_err(err("listing filters"))?
                {
                    if !f.in_our_slot() || self.program_kind(f.prog_id)?.is_none() {
                        continue;
                    }
                    let Some(ifname) = ifname_of(ifindex)? else {
                        continue;
                    };
                    let prog_id = f.prog_id.unwrap_or_default();
                    out.push(Attachment {
                        ifname,
                        ifindex,
                        hook: hook_name(dir.hook()),
                        mode: "tc",
                        link_id: 0,
                        prog_id,
                        program: tcx::prog_name(prog_id).ok().flatten().unwrap_or_default(),
                    });
                }
            }
        }
        out.sort_by(|a, b| (&a.ifname, a.hook, a.mode).cmp(&(&b.ifname, b.hook, b.mode)));
        Ok(out)
    }

    /// The live tcx links of this instance in the calling thread's netns.
    fn link_attachments(&self) -> Result<Vec<Attachment>, DatapathError> {
        let err = |cause| DatapathError::Syscall {
            call: "listing the pinned tcx links",
            cause,
        };
        let mut out = Vec::new();
        for p in tcx::list_here(&self.links_dir(), is_datapath_link_kind, kind_hook).map_err(err)? {
            let Some(program) = tcx::prog_name(p.info.prog_id).map_err(err)? else {
                continue;
            };
            // Gone since the listing: nothing to report.
            let Some(ifname) = ifname_of(p.info.ifindex)? else {
                continue;
            };
            let Some(hook) = kind_hook(&p.name.kind) else {
                continue;
            };
            out.push(Attachment {
                ifname,
                ifindex: p.info.ifindex,
                hook: hook_name(hook),
                mode: "tcx",
                link_id: p.info.id,
                prog_id: p.info.prog_id,
                program,
            });
        }
        Ok(out)
    }

    /// Which of our datapaths a program (by id) belongs to: loaded by
    /// this value, or using one of our pinned maps (an L2 map makes it
    /// L2; the management programs use only the endpoints and counters
    /// maps). `None` if it is not ours.
    fn program_kind(&self, prog_id: Option<u32>) -> Result<Option<PortKind>, DatapathError> {
        let Some(id) = prog_id else { return Ok(None) };
        if let Some(p) = self.progs.iter().find(|p| p.id == id) {
            return Ok(prog_kind(p.name));
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

pub(crate) fn tcx_error(what: &'static str, ifname: &str, cause: io::Error) -> DatapathError {
    DatapathError::Tcx {
        what,
        ifname: ifname.to_owned(),
        cause,
    }
}

/// Runs `a` here and `b` on a scoped thread, which shares the calling
/// thread's network namespace (a new thread inherits it), and returns
/// both results.
pub(crate) fn in_parallel<A: Send, B: Send>(
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    std::thread::scope(|s| {
        let hb = s.spawn(b);
        let ra = a();
        let rb = match hb.join() {
            Ok(r) => r,
            Err(p) => std::panic::resume_unwind(p),
        };
        (ra, rb)
    })
}

/// Deletes an older netd's cls_bpf filter in our slot on `hook` (fine if
/// there is none, or no clsact qdisc).
pub(crate) fn delete_legacy_filter(
    ifname: &str,
    ifindex: u32,
    hook: Hook,
) -> Result<(), DatapathError> {
    let err = |what| move |e: crate::tc::NlError| tc_error(what, ifname, e);
    let mut tc = TcSocket::open().map_err(err("opening rtnetlink"))?;
    if tc
        .delete_filter(ifindex, hook)
        .map_err(err("deleting an older netd's filter"))?
    {
        tracing::info!(
            ifname,
            ?hook,
            "migrated from a cls_bpf filter to a tcx link"
        );
    }
    Ok(())
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
