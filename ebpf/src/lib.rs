//! Furrow's eBPF datapath for the management (pod) network.
//!
//! The programs are written in C (`bpf/`), compiled by clang from `build.rs`
//! and embedded in this crate. [`Datapath`] loads them, pins their maps
//! under a per-instance bpffs directory so that a restarted netd finds its
//! state again, attaches them to ports as tc filters (clsact, cls_bpf in
//! direct-action mode, over rtnetlink), and offers the table operations
//! netd needs. [`test_run`] runs a loaded program on a crafted frame
//! (BPF_PROG_TEST_RUN).
//!
//! Everything here needs root (CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN for
//! mounting bpffs). Port operations resolve interface names and indexes in
//! the network namespace of the calling thread.

mod bpffs;
mod datapath;
mod error;
mod maps;
mod object;
mod ports;
mod sys;
mod tc;
mod testrun;

pub use datapath::{Datapath, DatapathConfig, DatapathInfo, MapUsage};
pub use error::DatapathError;
pub use maps::{MgmtEndpoint, PortStats, MAX_ENDPOINTS, MAX_PORTS};
pub use tc::{FILTER_HANDLE, FILTER_PRIORITY};
pub use testrun::{test_run, SkbContext, TestRunOutput, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT};

/// Datapath mode reported by [`Datapath::status`]: tc filters (clsact +
/// cls_bpf direct-action), not tcx links.
pub const MODE: &str = "ebpf-tc";

/// Pods on this node: IPv4 address (network order) to [`MgmtEndpoint`].
pub const MAP_MGMT_ENDPOINTS: &str = "furrow_mgmt_eps";
/// Per-port counters (per CPU), keyed by host-side ifindex.
pub const MAP_PORT_STATS: &str = "furrow_port_stats";

/// Ingress (clsact) of the host-side veth: what the pod sends.
pub const PROG_MGMT_FROM_POD: &str = "furrow_mgmt_from_pod";
/// Egress (clsact) of the host-side veth: what the kernel delivers to the pod.
pub const PROG_MGMT_TO_POD: &str = "furrow_mgmt_to_pod";

/// Every program this crate loads.
pub const PROGRAMS: [&str; 2] = [PROG_MGMT_FROM_POD, PROG_MGMT_TO_POD];
