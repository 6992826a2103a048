use std::collections::BTreeMap;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::{validate_name, FieldError, Resource, MAX_NAME_LEN, MTU_MAX, MTU_MIN};

/// The management (pod) network: every pod/VM gets an address from its
/// node's subnet of `clusterCIDR`; traffic leaving the cluster CIDR is
/// masqueraded behind the node. The embedded default is one network
/// named `mgmt` with the values below.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManagementNetworkSpec {
    /// The cluster's pod CIDR, split into per-node subnets.
    #[serde(rename = "clusterCIDR", default = "default_cluster_cidr")]
    pub cluster_cidr: Ipv4Net,
    /// Prefix length of each node's subnet (16-30).
    #[serde(default = "default_node_prefix")]
    pub node_subnet_prefix_length: u8,
    /// Interface MTU for pods (576-9000).
    #[serde(default = "default_mtu")]
    pub mtu: u32,
    /// Masquerade traffic leaving the cluster CIDR behind the node.
    #[serde(default = "default_true")]
    pub masquerade: bool,
}

pub type ManagementNetwork = Resource<ManagementNetworkSpec, ManagementNetworkStatus>;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagementNetworkStatus {
    /// Node name to the subnet it leases.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_subnets: BTreeMap<String, Ipv4Net>,
}

fn default_cluster_cidr() -> Ipv4Net {
    "10.52.0.0/16".parse().expect("static CIDR")
}
fn default_node_prefix() -> u8 {
    24
}
fn default_mtu() -> u32 {
    1500
}
fn default_true() -> bool {
    true
}

impl Default for ManagementNetworkSpec {
    fn default() -> Self {
        ManagementNetworkSpec {
            cluster_cidr: default_cluster_cidr(),
            node_subnet_prefix_length: default_node_prefix(),
            mtu: default_mtu(),
            masquerade: true,
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
        if !(MTU_MIN..=MTU_MAX).contains(&s.mtu) {
            errs.push(FieldError {
                field: "spec.mtu".into(),
                expected: format!("{} out of range: expected {MTU_MIN} to {MTU_MAX}", s.mtu),
            });
        }
        errs
    }
}
