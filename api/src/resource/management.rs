use std::collections::BTreeMap;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::{validate_name, FieldError, Resource, MAX_NAME_LEN, MTU_MAX, MTU_MIN};

/// The management (pod) network: every pod/VM gets an address from its
/// node's subnet of `clusterCIDR`; traffic leaving the cluster CIDR is
/// masqueraded behind the node. The embedded default is one network
/// named `mgmt` with the values below.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManagementNetworkSpec {
    /// The cluster's pod CIDR, split into per-node subnets.
    #[serde(rename = "clusterCIDR", default = "default_cluster_cidr")]
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub cluster_cidr: Ipv4Net,
    /// Prefix length of each node's subnet (16-30).
    #[serde(default = "default_node_prefix")]
    #[cfg_attr(feature = "schema", schemars(range(min = 16, max = 30)))]
    pub node_subnet_prefix_length: u8,
    /// Interface MTU for pods (576-9000). Absent: the node's underlay
    /// MTU less the backend's encapsulation overhead (50 bytes for vxlan),
    /// so the largest pod packet still fits the wire once wrapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = MTU_MIN, max = MTU_MAX)))]
    pub mtu: Option<u32>,
    /// Masquerade traffic leaving the cluster CIDR behind the node.
    #[serde(default = "default_true")]
    pub masquerade: bool,
    /// How pods on different nodes reach each other.
    #[serde(default)]
    pub backend: MgmtBackend,
    /// VXLAN network identifier of the overlay (backend vxlan), 1-16777215;
    /// unique per management network.
    #[serde(rename = "vxlanVNI", default = "default_vni")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = VNI_MAX)))]
    pub vxlan_vni: u32,
    /// UDP destination port of the overlay (backend vxlan); flannel's
    /// 8472 by default, so the usual firewall openings apply.
    #[serde(default = "default_vxlan_port")]
    pub vxlan_port: u16,
}

/// Cross-node transport of a management network.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MgmtBackend {
    /// A VXLAN overlay between the nodes' underlay addresses: works over
    /// any routed underlay.
    #[default]
    #[serde(rename = "vxlan")]
    Vxlan,
    /// Plain routes to each node's subnet via its underlay address: no
    /// encapsulation, but every node must be on one layer-2 segment.
    #[serde(rename = "host-gw")]
    HostGw,
}

impl MgmtBackend {
    /// Bytes the backend adds to every packet on the underlay.
    pub fn overhead(self) -> u32 {
        match self {
            // Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
            MgmtBackend::Vxlan => 50,
            MgmtBackend::HostGw => 0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MgmtBackend::Vxlan => "vxlan",
            MgmtBackend::HostGw => "host-gw",
        }
    }
}

/// Largest VXLAN network identifier (24 bits).
pub const VNI_MAX: u32 = (1 << 24) - 1;

pub type ManagementNetwork = Resource<ManagementNetworkSpec, ManagementNetworkStatus>;

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagementNetworkStatus {
    /// Node name to the subnet it leases.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "schema", schemars(with = "BTreeMap<String, String>"))]
    pub node_subnets: BTreeMap<String, Ipv4Net>,
}

fn default_cluster_cidr() -> Ipv4Net {
    "10.52.0.0/16".parse().expect("static CIDR")
}
fn default_node_prefix() -> u8 {
    24
}
fn default_vni() -> u32 {
    1
}
fn default_vxlan_port() -> u16 {
    8472
}
fn default_true() -> bool {
    true
}

impl Default for ManagementNetworkSpec {
    fn default() -> Self {
        ManagementNetworkSpec {
            cluster_cidr: default_cluster_cidr(),
            node_subnet_prefix_length: default_node_prefix(),
            mtu: None,
            masquerade: true,
            backend: MgmtBackend::default(),
            vxlan_vni: default_vni(),
            vxlan_port: default_vxlan_port(),
        }
    }
}

impl ManagementNetwork {
    pub const KIND: &'static str = "ManagementNetwork";
    pub const PLURAL: &'static str = "managementnetworks";
    pub const DEFAULT_NAME: &'static str = "mgmt";

    pub fn new(name: &str, spec: ManagementNetworkSpec) -> Self {
        super::new_resource(Self::KIND, name, spec)
    }

    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate_name(
            "metadata.name",
            &self.metadata.name,
            MAX_NAME_LEN,
            &mut errs,
        );
        let s = &self.spec;
        let cidr = s.cluster_cidr;
        if cidr.trunc() != cidr {
            errs.push(FieldError {
                field: "spec.clusterCIDR".into(),
                expected: format!(
                    "{cidr} has host bits set: expected a network address such as {}",
                    cidr.trunc()
                ),
            });
        }
        if !(8..=28).contains(&cidr.prefix_len()) {
            errs.push(FieldError {
                field: "spec.clusterCIDR".into(),
                expected: format!(
                    "prefix length /{} out of range: expected /8 to /28",
                    cidr.prefix_len()
                ),
            });
        }
        let p = s.node_subnet_prefix_length;
        if !(16..=30).contains(&p) || p < cidr.prefix_len() {
            errs.push(FieldError {
                field: "spec.nodeSubnetPrefixLength".into(),
                expected: format!(
                    "{p} out of range: expected 16 to 30 and not shorter than the cluster CIDR's /{}",
                    cidr.prefix_len()
                ),
            });
        }
        if let Some(mtu) = s.mtu.filter(|m| !(MTU_MIN..=MTU_MAX).contains(m)) {
            errs.push(FieldError {
                field: "spec.mtu".into(),
                expected: format!("{mtu} out of range: expected {MTU_MIN} to {MTU_MAX}"),
            });
        }
        if !(1..=VNI_MAX).contains(&s.vxlan_vni) {
            errs.push(FieldError {
                field: "spec.vxlanVNI".into(),
                expected: format!("{} out of range: expected 1 to {VNI_MAX}", s.vxlan_vni),
            });
        }
        if s.vxlan_port == 0 {
            errs.push(FieldError {
                field: "spec.vxlanPort".into(),
                expected: "0 is not a port: expected 1 to 65535 (default 8472)".into(),
            });
        }
        errs
    }
}
