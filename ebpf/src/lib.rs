//! Furrow's eBPF datapaths: the management (pod) network, and the 802.1Q
//! switch of VLAN networks (one per cluster network and node, see
//! [`Datapath::l2_attach_port`]).
//!
//! The programs are written in C (`bpf/`), compiled by clang from `build.rs`
//! and embedded in this crate. [`Datapath`] loads them, pins their maps,
//! the programs themselves and the tcx links that attach them to ports
//! under a per-instance bpffs directory, so that a restarted or upgraded
//! netd adopts what runs in the kernel instead of tearing it down
//! (hitless: see [`Datapath::open`]), and offers the table operations
//! netd needs. [`test_run`] runs a loaded program on a crafted frame
//! (BPF_PROG_TEST_RUN).
//!
//! [`fence::VipFence`] is the kernel half of VIP fencing, loaded on its
//! own (netd's `--vip-only` has no datapath): a tc egress filter that
//! stops answering for a VIP once its deadline has passed.
//!
//! Everything here needs root (CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN for
//! mounting bpffs). Port operations resolve interface names and indexes in
//! the network namespace of the calling thread.

mod bpffs;
mod datapath;
mod error;
pub mod fence;
mod l2;
mod l2_ops;
mod l2_psec;
mod l2_trace;
mod link;
mod maps;
mod object;
mod ports;
mod sys;
mod tc;
mod tcx;
mod testrun;

pub use datapath::{Attachment, Datapath, DatapathConfig, DatapathInfo, MapUsage, OpenReport};
pub use error::DatapathError;
pub use fence::{FenceDrops, MonotonicNs, VipFence};
pub use l2::{
    DhcpFrame, FdbEntry, L2DhcpResponder, L2Mode, L2Port, L2PortFlags, L2Trace, L2Verdict, L2Vlan,
    VlanSet, VlanStats, L2_DEFAULT_AGING, L2_MAX_CLUSTER_NETWORKS, L2_MAX_FDB, L2_MAX_MEMBERS,
    L2_MAX_PORTS, L2_MAX_VLANS, VLAN_ID_MAX,
};
pub use l2_psec::{
    PortSecurity, PsecAddr, L2_PSEC_MAX_ADDRS, L2_PSEC_MAX_MACS, L2_PSEC_PORT_ADDRS,
};
pub use l2_trace::{
    L2TraceFrame, L2TraceReport, L2TraceRun, L2TraceStep, L2_DRY_MAGIC3, L2_DRY_MAGIC4,
};
pub use maps::{MgmtEndpoint, PortStats, MAX_ENDPOINTS, MAX_PORTS};
pub use tc::{FILTER_HANDLE, FILTER_PRIORITY};
pub use testrun::{
    test_run, SkbContext, TestRunOutput, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, TC_ACT_UNSPEC,
};

/// One program on a tcx hook, as [`tcx_programs`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcxProgram {
    pub prog_id: u32,
    /// The link that attaches it (0: attached without a link).
    pub link_id: u32,
    /// The program's name as the kernel keeps it (15 bytes at most;
    /// empty if it went meanwhile).
    pub name: String,
}

/// What runs on the tcx ingress (`egress` false) or egress hook of
/// `ifindex` in the calling thread's netns, in run order (BPF_PROG_QUERY;
/// `tc filter show` and `ip link` do not show tcx). Empty if nothing, or
/// no such device. For diagnostics and tests.
pub fn tcx_programs(ifindex: u32, egress: bool) -> Result<Vec<TcxProgram>, DatapathError> {
    let hook = if egress {
        tc::Hook::Egress
    } else {
        tc::Hook::Ingress
    };
    let entries = tcx::query(ifindex, hook).map_err(|cause| DatapathError::Syscall {
        call: "querying a tcx hook (BPF_PROG_QUERY)",
        cause,
    })?;
    entries
        .into_iter()
        .map(|e| {
            let name = tcx::prog_name(e.prog_id).map_err(|cause| DatapathError::Syscall {
                call: "reading a program's name",
                cause,
            })?;
            Ok(TcxProgram {
                prog_id: e.prog_id,
                link_id: e.link_id,
                name: name.unwrap_or_default(),
            })
        })
        .collect()
}

/// Datapath mode reported by [`Datapath::status`]: programs attached
/// through tcx links pinned on bpffs (Linux 6.6+).
pub const MODE: &str = "ebpf-tcx";

/// Pods on this node: IPv4 address (network order) to [`MgmtEndpoint`].
pub const MAP_MGMT_ENDPOINTS: &str = "furrow_mgmt_eps";
/// Per-port counters (per CPU), keyed by host-side ifindex.
pub const MAP_PORT_STATS: &str = "furrow_port_stats";

/// L2 ports: ifindex to cluster network, mode, VLAN(s), MTU, uplink MAC.
pub const MAP_L2_PORTS: &str = "furrow_l2_ports";
/// L2 flood lists: (cluster network, VLAN) to member ports and flags.
pub const MAP_L2_VLANS: &str = "furrow_l2_vlans";
/// L2 forwarding database: (cluster network, VLAN, MAC) to port (LRU).
pub const MAP_L2_FDB: &str = "furrow_l2_fdb";
/// L2 per-cluster-network settings: MAC aging, uplink.
pub const MAP_L2_CLUSTER_NETWORKS: &str = "furrow_l2_cns";
/// L2 counters (per CPU) by (cluster network, VLAN).
pub const MAP_L2_VLAN_STATS: &str = "furrow_l2_vlan_stats";
/// L2 DHCP service: (cluster network, VLAN) to its responder port.
pub const MAP_L2_DHCP: &str = "furrow_l2_dhcp";
/// L2 port security: ifindex to the port's MACs and enforcement flags.
pub const MAP_L2_PSEC: &str = "furrow_l2_psec";
/// L2 port security: (ifindex, IPv4 prefix) to the MAC that may use it (LPM).
pub const MAP_L2_PSEC_V4: &str = "furrow_l2_psec_v4";
/// L2 port security: (ifindex, IPv6 prefix) to the MAC that may use it (LPM).
pub const MAP_L2_PSEC_V6: &str = "furrow_l2_psec_v6";

/// Ingress (clsact) of the host-side veth: what the pod sends.
pub const PROG_MGMT_FROM_POD: &str = "furrow_mgmt_from_pod";
/// Egress (clsact) of the host-side veth: what the kernel delivers to the pod.
pub const PROG_MGMT_TO_POD: &str = "furrow_mgmt_to_pod";

/// Ingress (clsact) of every L2 port (VM ports and uplinks): the switch.
pub const PROG_L2_INGRESS: &str = "furrow_l2_ingress";
/// Egress (clsact) of an L2 uplink: the node's own VLAN-0 traffic to
/// local VM ports.
pub const PROG_L2_UPLINK_EGRESS: &str = "furrow_l2_uplink_egress";

/// Every program this crate loads.
pub const PROGRAMS: [&str; 4] = [
    PROG_MGMT_FROM_POD,
    PROG_MGMT_TO_POD,
    PROG_L2_INGRESS,
    PROG_L2_UPLINK_EGRESS,
];
