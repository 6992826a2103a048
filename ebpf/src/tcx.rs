//! tcx links (Linux 6.6): how the programs are attached, one bpf_link per
//! (device, hook), pinned on bpffs so that it outlives the netd that made
//! it and a restarted (or upgraded) netd adopts it.
//!
//! Pin names: `<links dir>/<kind>-<netns inode>-<ifindex>`, `kind` being
//! `ingress` / `egress` for the datapath and `fence` for the VIP fence.
//! bpffs names cannot hold dots (interface names can), and a device can be
//! renamed under its link, so the name carries no interface name; the
//! namespace inode tells apart the devices of different namespaces that
//! share an index. A pin is trusted only once the kernel confirms it: its
//! link info names the same ifindex and hook, and BPF_PROG_QUERY of that
//! hook in the calling thread's namespace lists the link's id (so a pin
//! whose namespace inode was recycled, or whose device was replaced, is
//! never mistaken for the current device's). A link whose device is gone
//! is defunct (ifindex 0 in its info): its pin is removed.
//!
//! Why links and not cls_bpf filters: a pinned link belongs to this
//! instance, is found again by path without dumping every device's
//! filters, and BPF_LINK_UPDATE swaps its program in place (same link id,
//! same position, no moment without a program), which is what hitless
//! restarts and upgrades rest on. The cost: creating or detaching a link
//! waits for an RCU grace period (~10 ms per hook), against ~70 µs for a
//! filter; updating one does not.
//!
//! Order on a hook: tcx programs run before classic tc filters, in the
//! order of the hook's list. The datapath appends its link; the VIP fence
//! puts its own first (`BPF_F_BEFORE` with no anchor), so the fence sees
//! the node's frames before `furrow_l2_uplink_egress` can copy them to
//! local VMs, whichever was attached first. The datapath programs always
//! return a verdict (never `TC_ACT_UNSPEC`, i.e. `TCX_NEXT`), so nothing
//! after them runs: neither a later tcx program nor the classic filters.

use std::{
    fs, io,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
};

use crate::{
    sys::{self, LinkInfo, TcxEntry, BPF_F_BEFORE, BPF_TCX_EGRESS, BPF_TCX_INGRESS},
    tc::Hook,
};

/// The tcx attach type of a hook.
pub(crate) fn attach_type(hook: Hook) -> u32 {
    match hook {
        Hook::Ingress => BPF_TCX_INGRESS,
        Hook::Egress => BPF_TCX_EGRESS,
    }
}

/// Where a new link goes in the hook's list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Position {
    /// After every program already there (the datapath).
    Last,
    /// Before every program already there (the VIP fence).
    First,
}

/// A pin name, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PinName {
    pub kind: String,
    pub netns: u64,
    pub ifindex: u32,
}

impl PinName {
    pub fn new(kind: &str, netns: u64, ifindex: u32) -> Self {
        PinName {
            kind: kind.to_owned(),
            netns,
            ifindex,
        }
    }

    pub fn file_name(&self) -> String {
        format!("{}-{}-{}", self.kind, self.netns, self.ifindex)
    }

    pub fn parse(name: &str) -> Option<PinName> {
        let mut it = name.rsplitn(3, '-');
        let ifindex = it.next()?.parse().ok()?;
        let netns = it.next()?.parse().ok()?;
        let kind = it.next()?;
        (!kind.is_empty()).then(|| PinName::new(kind, netns, ifindex))
    }
}

/// A pinned link, opened.
pub(crate) struct Pinned {
    pub path: PathBuf,
    pub name: PinName,
    pub fd: OwnedFd,
    pub info: LinkInfo,
}

impl Pinned {
    /// Opens the link pinned at `path`; `None` if there is no pin.
    pub fn open(path: &Path) -> io::Result<Option<Pinned>> {
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(PinName::parse)
        else {
            return Ok(None);
        };
        let fd = match sys::obj_get(path) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let info = sys::link_info(fd.as_fd())?;
        Ok(Some(Pinned {
            path: path.to_path_buf(),
            name,
            fd,
            info,
        }))
    }

    /// The device is gone (or the link was detached): nothing runs it.
    pub fn is_defunct(&self) -> bool {
        self.info.ifindex == 0
    }

    /// The link sits on `hook` of `ifindex` in the calling thread's netns.
    pub fn is_on(&self, ifindex: u32, hook: Hook) -> io::Result<bool> {
        if self.info.ifindex != ifindex || self.info.attach_type != attach_type(hook) {
            return Ok(false);
        }
        Ok(query(ifindex, hook)?
            .iter()
            .any(|e| e.link_id == self.info.id))
    }

    /// Removes the pin (the link goes once no fd holds it).
    pub fn unpin(&self) -> io::Result<()> {
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// What `ensure` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ensured {
    /// The pinned link already ran the program.
    Unchanged,
    /// The pinned link now runs the program (BPF_LINK_UPDATE).
    Updated,
    /// A new link was created and pinned.
    Created,
}

/// What runs on a hook, in order; empty if the device is gone.
pub(crate) fn query(ifindex: u32, hook: Hook) -> io::Result<Vec<TcxEntry>> {
    match sys::tcx_query(ifindex, attach_type(hook)) {
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(Vec::new()),
        r => r,
    }
}

/// The pin path of (`kind`, device) in `dir` for the calling thread's netns.
pub(crate) fn pin_path(dir: &Path, kind: &str, ifindex: u32) -> io::Result<PathBuf> {
    Ok(dir.join(PinName::new(kind, sys::netns_ino()?, ifindex).file_name()))
}

/// Makes the link pinned as (`kind`, `ifindex`) in `dir` run `prog` on
/// `hook`: adopts the pinned link if it is on that device (updating its
/// program in place if it runs another), else creates one at `pos` and
/// pins it (a stale pin is replaced). Returns the link's id.
pub(crate) fn ensure(
    dir: &Path,
    kind: &str,
    ifindex: u32,
    hook: Hook,
    prog: BorrowedFd<'_>,
    prog_id: u32,
    pos: Position,
) -> io::Result<(u32, Ensured)> {
    let path = pin_path(dir, kind, ifindex)?;
    if let Some(p) = Pinned::open(&path)? {
        if p.is_on(ifindex, hook)? {
            if p.info.prog_id == prog_id {
                return Ok((p.info.id, Ensured::Unchanged));
            }
            sys::link_update(p.fd.as_fd(), prog, None)?;
            tracing::debug!(
                link = p.info.id,
                ifindex,
                ?hook,
                from = p.info.prog_id,
                to = prog_id,
                "tcx link updated in place"
            );
            return Ok((p.info.id, Ensured::Updated));
        }
        // Defunct (device gone, link detached) or another device's.
        p.unpin()?;
    }
    let flags = match pos {
        Position::Last => 0,
        Position::First => BPF_F_BEFORE,
    };
    let link = sys::tcx_link_create(prog, ifindex, attach_type(hook), flags)?;
    // Should pinning fail, dropping `link` detaches it again.
    sys::obj_pin(link.as_fd(), &path)?;
    let id = sys::link_info(link.as_fd())?.id;
    tracing::debug!(
        link = id,
        ifindex,
        ?hook,
        prog = prog_id,
        "tcx link created"
    );
    Ok((id, Ensured::Created))
}

/// Takes the link pinned as (`kind`, `ifindex`) off its hook and removes
/// its pin; a defunct one's pin is removed too. Whether a live link was
/// detached. A pin of another device (same index in a namespace whose
/// inode was recycled) is left alone.
pub(crate) fn remove(dir: &Path, kind: &str, ifindex: u32, hook: Hook) -> io::Result<bool> {
    let path = pin_path(dir, kind, ifindex)?;
    let Some(p) = Pinned::open(&path)? else {
        return Ok(false);
    };
    if p.is_defunct() {
        p.unpin()?;
        return Ok(false);
    }
    if !p.is_on(ifindex, hook)? {
        return Ok(false);
    }
    sys::link_detach(p.fd.as_fd())?;
    p.unpin()?;
    Ok(true)
}

/// Every pin in `dir` whose kind passes `want` (all namespaces), opened.
/// Pins that vanish meanwhile are skipped; unreadable ones are reported
/// as errors.
pub(crate) fn list(dir: &Path, want: impl Fn(&str) -> bool) -> io::Result<Vec<Pinned>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(PinName::parse)
        else {
            continue;
        };
        if !want(&name.kind) {
            continue;
        }
        if let Some(p) = Pinned::open(&path)? {
            out.push(p);
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The pins of `list` that belong to the calling thread's netns and are
/// live on their device's `hook` (as the kind says).
pub(crate) fn list_here(
    dir: &Path,
    want: impl Fn(&str) -> bool,
    hook_of: impl Fn(&str) -> Option<Hook>,
) -> io::Result<Vec<Pinned>> {
    let netns = sys::netns_ino()?;
    let mut out = Vec::new();
    for p in list(dir, want)? {
        if p.name.netns != netns || p.is_defunct() {
            continue;
        }
        let Some(hook) = hook_of(&p.name.kind) else {
            continue;
        };
        if p.name.ifindex == p.info.ifindex && p.is_on(p.info.ifindex, hook)? {
            out.push(p);
        }
    }
    Ok(out)
}

/// The name (as the kernel keeps it, 15 bytes at most) of the program
/// with id `prog_id`; `None` if it is gone.
pub(crate) fn prog_name(prog_id: u32) -> io::Result<Option<String>> {
    let fd = match sys::prog_fd_by_id(prog_id) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(Some(sys::prog_basics(fd.as_fd())?.name))
}

/// Whether the kernel's (truncated) program name `short` is `full`.
pub(crate) fn same_prog_name(short: &str, full: &str) -> bool {
    !short.is_empty() && full.starts_with(short) && (short.len() >= 15 || short == full)
}

/// Detaches, by id, the links on `hook` of `ifindex` (calling thread's
/// netns) other than `keep` whose program name `foreign` accepts (another
/// instance's or a lost pin's datapath: a hook runs one datapath).
/// Returns how many.
pub(crate) fn detach_others(
    ifindex: u32,
    hook: Hook,
    keep: u32,
    foreign: impl Fn(&str) -> bool,
) -> io::Result<u32> {
    let mut n = 0;
    for e in query(ifindex, hook)? {
        if e.link_id == 0 || e.link_id == keep {
            continue;
        }
        let Some(name) = prog_name(e.prog_id)? else {
            continue;
        };
        if !foreign(&name) {
            continue;
        }
        let fd = match sys::link_fd_by_id(e.link_id) {
            Ok(fd) => fd,
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(err) => return Err(err),
        };
        sys::link_detach(fd.as_fd())?;
        tracing::info!(
            link = e.link_id,
            prog = e.prog_id,
            program = %name,
            ifindex,
            ?hook,
            "detached a tcx link of another datapath instance"
        );
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_names_round_trip() {
        let n = PinName::new("ingress", 4026531840, 12);
        assert_eq!(n.file_name(), "ingress-4026531840-12");
        assert_eq!(PinName::parse(&n.file_name()), Some(n));
        assert_eq!(
            PinName::parse("fence-1-2"),
            Some(PinName::new("fence", 1, 2))
        );
        for bad in [
            "",
            "ingress",
            "ingress-1",
            "-1-2",
            "ingress-x-2",
            "ingress-1-y",
        ] {
            assert_eq!(PinName::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn truncated_names_match() {
        assert!(same_prog_name("furrow_l2_ingre", "furrow_l2_ingress"));
        assert!(same_prog_name("furrow_mgmt_to_", "furrow_mgmt_to_pod"));
        assert!(!same_prog_name("furrow_mgmt_to_", "furrow_mgmt_from_pod"));
        assert!(!same_prog_name("furrow", "furrow_l2_ingress"));
        assert!(!same_prog_name("", "x"));
    }
}
