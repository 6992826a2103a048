//! Attaching the programs to host-side veths with pinned tcx links.

use std::{
    collections::BTreeSet,
    fs, io,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use aya::programs::{
    links::{FdLink, PinnedLink},
    tc::{SchedClassifierLink, TcAttachOptions},
    LinkOrder, TcAttachType,
};

use crate::{
    error::io_other,
    sys::{self, BPF_LINK_TYPE_TCX, BPF_TCX_EGRESS, BPF_TCX_INGRESS},
    Datapath, DatapathError, PROG_MGMT_FROM_POD, PROG_MGMT_TO_POD,
};

/// A tcx hook of a host-side veth and the program that goes there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub(crate) const ALL: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    fn suffix(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }

    fn program(self) -> &'static str {
        match self {
            Direction::Ingress => PROG_MGMT_FROM_POD,
            Direction::Egress => PROG_MGMT_TO_POD,
        }
    }

    fn tc(self) -> TcAttachType {
        match self {
            Direction::Ingress => TcAttachType::Ingress,
            Direction::Egress => TcAttachType::Egress,
        }
    }

    fn tcx_attach_type(self) -> u32 {
        match self {
            Direction::Ingress => BPF_TCX_INGRESS,
            Direction::Egress => BPF_TCX_EGRESS,
        }
    }
}

/// What a link pin refers to.
enum PinState {
    Missing,
    /// A tcx link in the right direction still hooked to this device.
    Attached {
        ifindex: u32,
    },
    /// Anything else: device gone (ifindex 0), wrong link type or direction.
    Stale,
}

impl Datapath {
    /// Attaches both management programs to the host-side veth with tcx
    /// links pinned as `links/<ifname>:{ingress,egress}` and creates the
    /// port's zeroed counters entry (an existing entry is kept).
    ///
    /// If a pinned link already hooks this interface (netd restarted), its
    /// program is replaced atomically: no second attachment, no window
    /// without a program. Idempotent. Must run in the netns of the veth;
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
        // Egress first: once ingress redirects to other pods, this port's
        // own deliveries are already counted.
        for dir in [Direction::Egress, Direction::Ingress] {
            self.attach_one(host_ifname, host_ifindex, dir)?;
        }
        Ok(())
    }

    fn attach_one(
        &mut self,
        ifname: &str,
        ifindex: u32,
        dir: Direction,
    ) -> Result<(), DatapathError> {
        let pin = self.link_pin_path(ifname, dir);
        match pin_state(&pin, dir)? {
            PinState::Attached { ifindex: linked } if linked == ifindex => {
                return self.replace_program(&pin, dir);
            }
            PinState::Missing => {}
            // A link of a deleted interface, or of an interface that no
            // longer has this name: it is ours (the pin says so) and stale.
            PinState::Attached { .. } | PinState::Stale => {
                self.remove_link_pin(ifname, dir, None)?;
            }
        }

        let name = dir.program();
        let prog = self.classifier_mut(name)?;
        let id = prog
            .attach_with_options(
                ifname,
                dir.tc(),
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .map_err(|e| DatapathError::program(name, e))?;
        let link = prog
            .take_link(id)
            .map_err(|e| DatapathError::program(name, e))?;
        let link: FdLink = link.try_into().map_err(|e| DatapathError::LinkPin {
            what: "converting the new link",
            path: pin.clone(),
            cause: io_other(&e),
        })?;
        link.pin(&pin).map_err(|e| DatapathError::LinkPin {
            what: "pinning",
            path: pin.clone(),
            cause: io_other(&e),
        })?;
        // attach_with_options resolved the name again: make sure it hit the
        // interface the caller meant (a rename in between would not).
        match pin_state(&pin, dir)? {
            PinState::Attached { ifindex: linked } if linked == ifindex => Ok(()),
            PinState::Attached { ifindex: linked } => {
                self.remove_link_pin(ifname, dir, None)?;
                Err(DatapathError::IfindexMismatch {
                    ifname: ifname.to_owned(),
                    expected: ifindex,
                    actual: linked,
                })
            }
            _ => Err(DatapathError::LinkPin {
                what: "checking the new link",
                path: pin,
                cause: io::Error::other("link not attached right after attaching"),
            }),
        }
    }

    /// Swaps the program of a pinned link for ours (BPF_LINK_UPDATE).
    fn replace_program(&mut self, pin: &Path, dir: Direction) -> Result<(), DatapathError> {
        let name = dir.program();
        let link_err = |what, cause| DatapathError::LinkPin {
            what,
            path: pin.to_path_buf(),
            cause,
        };
        let pinned = PinnedLink::from_pin(pin).map_err(|e| link_err("opening", io_other(&e)))?;
        let link = SchedClassifierLink::try_from(FdLink::from(pinned))
            .map_err(|e| link_err("opening", io_other(&e)))?;
        let prog = self.classifier_mut(name)?;
        let id = prog
            .attach_to_link(link)
            .map_err(|e| DatapathError::program(name, e))?;
        // The pin keeps the link; our fd is not needed.
        drop(
            prog.take_link(id)
                .map_err(|e| DatapathError::program(name, e))?,
        );
        Ok(())
    }

    /// Detaches the programs of a port (removing its link pins) and deletes
    /// its counters entry. Idempotent; fine if the interface is gone. A pin
    /// whose link hooks another live interface (the name was reused by a
    /// newer port) is left alone.
    pub fn detach_port(
        &mut self,
        host_ifname: &str,
        host_ifindex: u32,
    ) -> Result<(), DatapathError> {
        validate_ifname(host_ifname)?;
        for dir in Direction::ALL {
            self.remove_link_pin(host_ifname, dir, Some(host_ifindex))?;
        }
        self.remove_stats_entry(host_ifindex)
    }

    /// Detaches (BPF_LINK_DETACH, effective even if someone else holds the
    /// link) and unpins. With `only_ifindex`, a link still hooked to another
    /// live interface is kept.
    pub(crate) fn remove_link_pin(
        &self,
        ifname: &str,
        dir: Direction,
        only_ifindex: Option<u32>,
    ) -> Result<(), DatapathError> {
        let pin = self.link_pin_path(ifname, dir);
        let fd = match sys::obj_get(&pin) {
            Ok(fd) => Some(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            // Not a link (or unreadable): just drop the pin.
            Err(_) => None,
        };
        if let Some(fd) = fd {
            if let Ok(info) = sys::link_info(fd.as_fd()) {
                if let Some(want) = only_ifindex {
                    if info.link_type == BPF_LINK_TYPE_TCX
                        && info.tcx_ifindex != 0
                        && info.tcx_ifindex != want
                    {
                        tracing::warn!(
                            pin = %pin.display(),
                            linked = info.tcx_ifindex,
                            want,
                            "link pin belongs to another interface now; kept"
                        );
                        return Ok(());
                    }
                }
                if info.link_type == BPF_LINK_TYPE_TCX {
                    // Already-detached links may refuse; unpinning is what matters.
                    if let Err(e) = sys::link_detach(fd.as_fd()) {
                        tracing::debug!(pin = %pin.display(), error = %e, "link detach");
                    }
                }
            }
        }
        match fs::remove_file(&pin) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(DatapathError::LinkPin {
                what: "removing",
                path: pin,
                cause: e,
            }),
            _ => Ok(()),
        }
    }

    /// Interface names with pinned links (either direction), sorted: what
    /// a restarted netd reconciles against its store.
    pub fn pinned_ports(&self) -> Result<Vec<String>, DatapathError> {
        let dir = self.links_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(cause) => {
                return Err(DatapathError::Bpffs {
                    what: "listing",
                    path: dir,
                    cause,
                })
            }
        };
        let mut names = BTreeSet::new();
        for entry in entries {
            let entry = entry.map_err(|cause| DatapathError::Bpffs {
                what: "listing",
                path: dir.clone(),
                cause,
            })?;
            let file = entry.file_name();
            let Some(file) = file.to_str() else { continue };
            for dir in Direction::ALL {
                if let Some(stem) = file.strip_suffix(dir.suffix()) {
                    if let Some(escaped) = stem.strip_suffix(':') {
                        names.insert(escaped.replace(':', "."));
                    }
                }
            }
        }
        Ok(names.into_iter().collect())
    }

    /// True if both link pins exist and the kernel still has them attached
    /// to the interface that currently has this name (for CNI CHECK).
    pub fn is_port_attached(&self, host_ifname: &str) -> Result<bool, DatapathError> {
        validate_ifname(host_ifname)?;
        let Some(ifindex) = ifindex_of(host_ifname)? else {
            return Ok(false);
        };
        for dir in Direction::ALL {
            match pin_state(&self.link_pin_path(host_ifname, dir), dir)? {
                PinState::Attached { ifindex: linked } if linked == ifindex => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }

    fn link_pin_path(&self, ifname: &str, dir: Direction) -> PathBuf {
        self.links_dir().join(link_pin_name(ifname, dir))
    }
}

fn pin_state(pin: &Path, dir: Direction) -> Result<PinState, DatapathError> {
    let fd = match sys::obj_get(pin) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(PinState::Missing),
        Err(cause) => {
            return Err(DatapathError::LinkPin {
                what: "opening",
                path: pin.to_path_buf(),
                cause,
            })
        }
    };
    let info = match sys::link_info(fd.as_fd()) {
        Ok(info) => info,
        // Pinned object that is not a link.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(PinState::Stale),
        Err(cause) => {
            return Err(DatapathError::LinkPin {
                what: "reading",
                path: pin.to_path_buf(),
                cause,
            })
        }
    };
    if info.link_type == BPF_LINK_TYPE_TCX
        && info.tcx_attach_type == dir.tcx_attach_type()
        && info.tcx_ifindex != 0
    {
        Ok(PinState::Attached {
            ifindex: info.tcx_ifindex,
        })
    } else {
        Ok(PinState::Stale)
    }
}

/// bpffs refuses names containing dots (reserved for its own files), and
/// interface names may contain dots but never `:`. So `eth0.100` is pinned
/// as `eth0:100:ingress`, and the last `:` separates the direction.
fn link_pin_name(ifname: &str, dir: Direction) -> String {
    format!("{}:{}", ifname.replace('.', ":"), dir.suffix())
}

/// Interface names end up in pin file names: keep them to what the kernel
/// accepts for a device and free of path tricks.
fn validate_ifname(name: &str) -> Result<(), DatapathError> {
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
fn ifindex_of(name: &str) -> Result<Option<u32>, DatapathError> {
    match nix::net::if_::if_nametoindex(name) {
        Ok(i) => Ok(Some(i)),
        Err(nix::errno::Errno::ENODEV) => Ok(None),
        Err(e) => Err(DatapathError::Syscall {
            call: "if_nametoindex",
            cause: e.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifname_validation() {
        for ok in ["fw1a2b3c4d5e6f7", "eth0", "a"] {
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
    fn link_pin_names_have_no_dots() {
        assert_eq!(link_pin_name("fw0a", Direction::Ingress), "fw0a:ingress");
        assert_eq!(
            link_pin_name("eth0.100", Direction::Egress),
            "eth0:100:egress"
        );
    }
}
