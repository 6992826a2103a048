//! `POST /v1/trace` (`netctl trace`): what the eBPF switch does with a
//! frame from a port, found by running the loaded program on a crafted
//! frame in its trace mode (BPF_PROG_TEST_RUN; nothing is learned,
//! counted or sent).
//!
//! Field names are camelCase and stable: netctl's `-o json` prints them.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::MacAddr;

/// A VM port by its attachment: the container id (the pod's sandbox) and
/// the interface name inside it (`net1`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracePortSelector {
    pub container_id: String,
    pub ifname: String,
}

/// The frame to trace and where it enters the switch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TraceRequest {
    /// The port by attachment; or `vm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<TracePortSelector>,
    /// The port by VM: the VM (or pod) name, `name` or `namespace/name`
    /// (a KubeVirt `virt-launcher-<vm>-<hash>` pod matches `<vm>`).
    /// With several VLAN ports, `ifname` picks one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<String>,
    /// With `vm`: the interface inside the VM's pod (`net1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    pub dst_mac: MacAddr,
    /// Makes the frame IPv4/UDP (an ARP request when `dstMac` is
    /// broadcast).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_ip: Option<Ipv4Addr>,
    /// An 802.1Q tag in the frame (what a trunk port sends); none: an
    /// untagged frame (what an access or untagged port sends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// Default: the port's MAC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_mac: Option<MacAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_ip: Option<Ipv4Addr>,
}

/// A port of the switch in a trace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TracePort {
    pub ifindex: u32,
    /// Host-side interface name (empty if unknown).
    pub ifname: String,
    /// `vm`, `uplink`, `node` or `unknown`.
    pub kind: String,
    /// `namespace/pod` of a VM port, the cluster network of an uplink,
    /// the node port's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl TracePort {
    /// `owner (ifname)`, or what is known.
    pub fn label(&self) -> String {
        let name = if self.ifname.is_empty() {
            format!("ifindex {}", self.ifindex)
        } else {
            self.ifname.clone()
        };
        match &self.owner {
            Some(o) => format!("{o} ({name})"),
            None => name,
        }
    }
}

/// The frame that was traced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceFrame {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_ip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_ip: Option<Ipv4Addr>,
}

/// One decision of the switch, with the map entries behind it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceStep {
    /// `port`, `vlan`, `filter`, `source`, `fdb`, then the outcome:
    /// `forward`, `flood`, `drop` or `pass`.
    pub stage: String,
    pub decision: String,
    /// `map[key] = value` of the entries the decision rests on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<String>,
}

/// The answer of `POST /v1/trace`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceResponse {
    pub node: String,
    pub cluster_network: String,
    /// Where the frame enters the switch.
    pub port: TracePort,
    pub frame: TraceFrame,
    /// `forward`, `to-host`, `flood`, `drop` or `pass`.
    pub verdict: String,
    pub reason: String,
    /// The VLAN the frame was classified into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// The ports the frame would leave by (one for unicast, every copy
    /// of a flood).
    #[serde(default)]
    pub out_ports: Vec<TracePort>,
    pub steps: Vec<TraceStep>,
}
