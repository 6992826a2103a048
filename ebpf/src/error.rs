//! The crate's error type.

use std::{io, path::PathBuf};

/// Errors of the datapath. Messages include the underlying cause (aya's own
/// errors only say which call failed), so `{}` is enough to log them.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("invalid datapath configuration: {0}")]
    InvalidConfig(String),

    #[error("bpffs: {what} {}: {cause}", path.display())]
    Bpffs {
        what: &'static str,
        path: PathBuf,
        cause: io::Error,
    },

    #[error(
        "{} is not on a bpf filesystem (the pin directory must be on bpffs; \
         /sys/fs/bpf is mounted automatically when it is not)",
        path.display()
    )]
    NotBpffs { path: PathBuf },

    #[error("loading the eBPF object: {}", chain(.0.as_ref()))]
    Load(Box<aya::EbpfError>),

    #[error("program {name}: {}", chain(.cause.as_ref()))]
    Program {
        name: String,
        cause: Box<aya::programs::ProgramError>,
    },

    #[error("no program named {0:?} in this datapath")]
    UnknownProgram(String),

    #[error("map {map}: {}", chain(.cause.as_ref()))]
    Map {
        map: &'static str,
        cause: Box<aya::maps::MapError>,
    },

    #[error("map {map} is full ({max_entries} entries): remove stale entries or raise its size")]
    MapFull { map: &'static str, max_entries: u32 },

    #[error(
        "pinned map {} does not match this build ({detail}); remove the pin (or the \
         whole pin directory) so it can be recreated",
        path.display()
    )]
    IncompatiblePin { path: PathBuf, detail: String },

    #[error("invalid interface name {0:?}")]
    InvalidIfname(String),

    #[error("interface {ifname} not found in this network namespace")]
    InterfaceNotFound { ifname: String },

    #[error("interface {ifname} has ifindex {actual}, expected {expected}")]
    IfindexMismatch {
        ifname: String,
        expected: u32,
        actual: u32,
    },

    #[error("invalid endpoint: {0}")]
    InvalidEndpoint(String),

    /// An L2 (VLAN switch) request netd should not have made: VLAN id,
    /// MTU, MAC or a port of the wrong kind.
    #[error("invalid L2 configuration: {0}")]
    InvalidL2(String),

    /// A VLAN's flood list would exceed [`crate::L2_MAX_MEMBERS`] ports on
    /// this node.
    #[error(
        "VLAN {vid} of cluster network {cluster_network} is full: {members} member ports, \
         at most {max} per VLAN on one node"
    )]
    TooManyMembers {
        cluster_network: u32,
        vid: u16,
        members: usize,
        max: usize,
    },

    /// A tc (rtnetlink) operation on an interface failed; the cause
    /// carries the kernel's extended ack message when there is one.
    #[error("tc: {what} on {ifname}: {cause}")]
    Tc {
        what: &'static str,
        ifname: String,
        cause: io::Error,
    },

    /// A tcx link operation (bpf(2)) on an interface failed.
    #[error("tcx: {what} on {ifname}: {cause}")]
    Tcx {
        what: &'static str,
        ifname: String,
        cause: io::Error,
    },

    #[error("{call}: {cause}")]
    Syscall {
        call: &'static str,
        cause: io::Error,
    },
}

impl DatapathError {
    pub(crate) fn map(map: &'static str, e: aya::maps::MapError) -> Self {
        DatapathError::Map {
            map,
            cause: Box::new(e),
        }
    }

    pub(crate) fn program(name: &str, e: aya::programs::ProgramError) -> Self {
        DatapathError::Program {
            name: name.to_owned(),
            cause: Box::new(e),
        }
    }
}

/// `err: source: source...`: aya's Display stops at "`call` failed".
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}

/// The errno behind an aya map error, if any.
pub(crate) fn map_errno(e: &aya::maps::MapError) -> Option<i32> {
    match e {
        aya::maps::MapError::SyscallError(s) => s.io_error.raw_os_error(),
        aya::maps::MapError::IoError(e) => e.raw_os_error(),
        _ => None,
    }
}
