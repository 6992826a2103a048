//! Layer-2 resources, shaped like Harvester's: a ClusterNetwork is a
//! layer-2 domain across nodes; a VlanConfig gives it an uplink on a set of
//! nodes; a VlanInterface gives those nodes an address on one of its VLANs.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{
    err, new_resource, validate_name, FieldError, Resource, MAX_NAME_LEN, MTU_MAX, MTU_MIN,
};
use crate::cni::VLAN_MAX;

/// Cluster network names are short because node devices are named
/// `<name>-br` / `<name>-bo` and the kernel allows 15 characters.
pub const CLUSTER_NETWORK_NAME_MAX: usize = 12;

/// Checks a Linux interface name: 1-15 bytes, no '/', ':', whitespace.
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
}

pub(crate) fn validate_selector(
    field: &str,
    sel: &BTreeMap<String, String>,
    errs: &mut Vec<FieldError>,
) {
    for (k, v) in sel {
        let key_ok = !k.is_empty()
            && k.len() <= 253
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
        let val_ok = v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !key_ok || !val_ok {
            err(
                errs,
                &format!("{field}.{k}"),
                format!("{k:?}: {v:?} is not a valid label selector entry"),
            );
        }
    }
}

/// Whether a node with these labels is selected (every entry must match;
/// an empty selector selects every node).
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Which datapath carries a cluster network on a node.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// eBPF where it works (it needs no 802.1Q or bridge VLAN support),
    /// else the kernel bridge.
    #[default]
    Auto,
    /// Furrow's eBPF 802.1Q switch.
    Ebpf,
    /// A Harvester-style kernel bridge `<cn>-br` with vlan_filtering and
    /// a bond `<cn>-bo` as uplink; needs a kernel that has both.
    Bridge,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterNetworkSpec {
    #[serde(default)]
    pub backend: Backend,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// How long a learned MAC stays valid without traffic (10-86400 s).
    #[serde(default = "default_aging")]
    #[cfg_attr(feature = "schema", schemars(range(min = 10, max = 86400)))]
    pub mac_aging_seconds: u32,
}

fn default_aging() -> u32 {
    300
}

impl Default for ClusterNetworkSpec {
    fn default() -> Self {
        ClusterNetworkSpec {
            backend: Backend::Auto,
            description: String::new(),
            mac_aging_seconds: default_aging(),
        }
    }
}

pub type ClusterNetwork = Resource<ClusterNetworkSpec>;

impl ClusterNetwork {
    pub const KIND: &'static str = "ClusterNetwork";
    pub const PLURAL: &'static str = "clusternetworks";

    pub fn new(name: &str, spec: ClusterNetworkSpec) -> Self {
        new_resource(Self::KIND, name, spec)
    }

    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate_name(
            "metadata.name",
            &self.metadata.name,
            CLUSTER_NETWORK_NAME_MAX,
            &mut errs,
        );
        let a = self.spec.mac_aging_seconds;
        if !(10..=86400).contains(&a) {
            err(
                &mut errs,
                "spec.macAgingSeconds",
                format!("{a} out of range: expected 10 to 86400"),
            );
        }
        errs
    }
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BondMode {
    #[default]
    ActiveBackup,
    BalanceRr,
    BalanceXor,
    Broadcast,
    #[serde(rename = "802.3ad")]
    Ieee8023ad,
    BalanceTlb,
    BalanceAlb,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BondOptions {
    #[serde(default)]
    pub mode: BondMode,
    /// Link monitoring interval in ms (0 disables; Harvester's default is 100).
    #[serde(default = "default_miimon")]
    pub miimon: u32,
}

fn default_miimon() -> u32 {
    100
}

impl Default for BondOptions {
    fn default() -> Self {
        BondOptions {
            mode: BondMode::ActiveBackup,
            miimon: default_miimon(),
        }
    }
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LinkAttributes {
    /// Uplink MTU (576-9000, default 1500): the largest frame any VLAN of
    /// the cluster network carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = MTU_MIN, max = MTU_MAX)))]
    pub mtu: Option<u32>,
    /// Transmit queue length; -1 (or absent) keeps the NIC's.
    #[serde(default, rename = "txQLen", skip_serializing_if = "Option::is_none")]
    pub tx_q_len: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware_addr: Option<crate::MacAddr>,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Uplink {
    /// The node's NICs carrying the cluster network (one, or several
    /// bonded). Harvester bonds even a single NIC.
    #[cfg_attr(
        feature = "schema",
        schemars(length(min = 1), inner(length(min = 1, max = 15)))
    )]
    pub nics: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bond_options: Option<BondOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_attributes: Option<LinkAttributes>,
}

pub const DEFAULT_UPLINK_MTU: u32 = 1500;

impl Uplink {
    pub fn mtu(&self) -> u32 {
        self.link_attributes
            .as_ref()
            .and_then(|l| l.mtu)
            .unwrap_or(DEFAULT_UPLINK_MTU)
    }

    pub fn bond(&self) -> BondOptions {
        self.bond_options.clone().unwrap_or_default()
    }
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VlanConfigSpec {
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = CLUSTER_NETWORK_NAME_MAX)))]
    pub cluster_network: String,
    /// Nodes this uplink configuration applies to (all nodes when empty).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    pub uplink: Uplink,
}

pub type VlanConfig = Resource<VlanConfigSpec>;

impl VlanConfig {
    pub const KIND: &'static str = "VlanConfig";
    pub const PLURAL: &'static str = "vlanconfigs";

    pub fn new(name: &str, spec: VlanConfigSpec) -> Self {
        new_resource(Self::KIND, name, spec)
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
        validate_name(
            "spec.clusterNetwork",
            &s.cluster_network,
            CLUSTER_NETWORK_NAME_MAX,
            &mut errs,
        );
        validate_selector("spec.nodeSelector", &s.node_selector, &mut errs);
        if s.uplink.nics.is_empty() {
            err(
                &mut errs,
                "spec.uplink.nics",
                "empty: expected at least one NIC name",
            );
        }
        let mut seen = BTreeSet::new();
        for (i, n) in s.uplink.nics.iter().enumerate() {
            if !valid_ifname(n) {
                err(
                    &mut errs,
                    &format!("spec.uplink.nics[{i}]"),
                    format!(
                        "{n:?} is not an interface name (1-15 characters, no '/', ':' or spaces)"
                    ),
                );
            } else if !seen.insert(n) {
                err(
                    &mut errs,
                    &format!("spec.uplink.nics[{i}]"),
                    format!("{n:?} is listed twice"),
                );
            }
        }
        if let Some(l) = &s.uplink.link_attributes {
            if let Some(m) = l.mtu {
                if !(MTU_MIN..=MTU_MAX).contains(&m) {
                    err(
                        &mut errs,
                        "spec.uplink.linkAttributes.mtu",
                        format!("{m} out of range: expected {MTU_MIN} to {MTU_MAX}"),
                    );
                }
            }
            if let Some(q) = l.tx_q_len {
                if q < -1 {
                    err(
                        &mut errs,
                        "spec.uplink.linkAttributes.txQLen",
                        format!("{q}: expected -1 (keep) or a length"),
                    );
                }
            }
            if let Some(mac) = l.hardware_addr {
                if !mac.is_valid_unicast() {
                    err(
                        &mut errs,
                        "spec.uplink.linkAttributes.hardwareAddr",
                        format!("{mac} is not a unicast address"),
                    );
                }
            }
        }
        if let Some(b) = &s.uplink.bond_options {
            if b.miimon > 60_000 {
                err(
                    &mut errs,
                    "spec.uplink.bondOptions.miimon",
                    format!("{} out of range: expected 0 to 60000 ms", b.miimon),
                );
            }
        }
        errs
    }
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VlanInterfaceSpec {
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = CLUSTER_NETWORK_NAME_MAX)))]
    pub cluster_network: String,
    /// 1-4094, or 0 for the untagged network.
    #[cfg_attr(feature = "schema", schemars(range(min = 0, max = VLAN_MAX)))]
    pub vlan: u16,
    /// Nodes that get the interface (every node with an uplink on the
    /// cluster network when empty).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// The address every selected node uses, in CIDR form (e.g. a DHCP
    /// server address, which each node answers for its own VMs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    pub address: Option<IpNet>,
    /// Per-node addresses; they take precedence over `address`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "schema", schemars(with = "BTreeMap<String, String>"))]
    pub node_addresses: BTreeMap<String, IpNet>,
    /// Interface MTU; absent means the uplink's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = MTU_MIN, max = MTU_MAX)))]
    pub mtu: Option<u32>,
    /// Each selected node takes its address from the VLAN's DHCP server
    /// (with a MAC generated from the interface and node names, stable
    /// across restarts), and keeps renewing it. Excludes `address` and
    /// `nodeAddresses`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dhcp: bool,
}

pub type VlanInterface = Resource<VlanInterfaceSpec>;

impl VlanInterface {
    pub const KIND: &'static str = "VlanInterface";
    pub const PLURAL: &'static str = "vlaninterfaces";

    pub fn new(name: &str, spec: VlanInterfaceSpec) -> Self {
        new_resource(Self::KIND, name, spec)
    }

    /// The address a node uses, if any.
    pub fn address_for(&self, node: &str) -> Option<IpNet> {
        self.spec
            .node_addresses
            .get(node)
            .copied()
            .or(self.spec.address)
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
        validate_name(
            "spec.clusterNetwork",
            &s.cluster_network,
            CLUSTER_NETWORK_NAME_MAX,
            &mut errs,
        );
        if s.vlan > VLAN_MAX {
            err(
                &mut errs,
                "spec.vlan",
                format!(
                    "{} out of range: expected 0 (untagged) or 1 to {VLAN_MAX}",
                    s.vlan
                ),
            );
        }
        validate_selector("spec.nodeSelector", &s.node_selector, &mut errs);
        if s.dhcp && (s.address.is_some() || !s.node_addresses.is_empty()) {
            err(
                &mut errs,
                "spec.dhcp",
                "true with spec.address or spec.nodeAddresses: expected either DHCP or static addresses",
            );
        }
        let mut check_addr = |field: String, a: &IpNet| {
            let host_ok = match a {
                IpNet::V4(n) => {
                    n.prefix_len() < 32 && n.addr() != n.network() && n.addr() != n.broadcast()
                }
                IpNet::V6(n) => n.prefix_len() < 128 && n.addr() != n.network(),
            };
            if !host_ok || a.addr().is_multicast() || a.addr().is_unspecified() {
                errs.push(FieldError {
                    field,
                    expected: format!("{a} is not a host address in a subnet (e.g. 10.0.100.2/24)"),
                });
            }
        };
        if let Some(a) = &s.address {
            check_addr("spec.address".into(), a);
        }
        for (node, a) in &s.node_addresses {
            check_addr(format!("spec.nodeAddresses.{node}"), a);
        }
        if let Some(m) = s.mtu {
            if !(MTU_MIN..=MTU_MAX).contains(&m) {
                err(
                    &mut errs,
                    "spec.mtu",
                    format!("{m} out of range: expected {MTU_MIN} to {MTU_MAX}"),
                );
            }
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::API_VERSION;

    #[test]
    fn cluster_network_names_fit_device_names() {
        let ok = ClusterNetwork::new("data", ClusterNetworkSpec::default());
        assert!(ok.validate().is_empty());
        let long = ClusterNetwork::new("thirteenchars", ClusterNetworkSpec::default());
        assert_eq!(long.validate()[0].field, "metadata.name");
    }

    #[test]
    fn harvester_vlanconfig_parses_and_validates() {
        let doc = serde_json::json!({
            "apiVersion": API_VERSION, "kind": "VlanConfig",
            "metadata": {"name": "demo-vlanconfig"},
            "spec": {
                "clusterNetwork": "demo",
                "nodeSelector": {"kubernetes.io/hostname": "node1"},
                "uplink": {
                    "nics": ["enp7s2"],
                    "bondOptions": {"mode": "active-backup", "miimon": 100},
                    "linkAttributes": {"mtu": 1500, "txQLen": -1}
                }
            }
        });
        let v: VlanConfig = serde_json::from_value(doc).unwrap();
        assert!(v.validate().is_empty(), "{:?}", v.validate());
        assert_eq!(v.spec.uplink.mtu(), 1500);
        assert_eq!(v.spec.uplink.bond().mode, BondMode::ActiveBackup);
    }

    #[test]
    fn vlanconfig_errors_name_fields() {
        let mut v = VlanConfig::new(
            "x",
            VlanConfigSpec {
                cluster_network: "data".into(),
                node_selector: BTreeMap::new(),
                uplink: Uplink {
                    nics: vec!["eth1".into(), "eth1".into(), "a/b".into()],
                    bond_options: None,
                    link_attributes: Some(LinkAttributes {
                        mtu: Some(9001),
                        ..Default::default()
                    }),
                },
            },
        );
        let fields: Vec<String> = v.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "spec.uplink.nics[1]",
                "spec.uplink.nics[2]",
                "spec.uplink.linkAttributes.mtu"
            ]
        );
        v.spec.uplink.nics.clear();
        v.spec.uplink.link_attributes = None;
        assert_eq!(v.validate()[0].field, "spec.uplink.nics");
    }

    #[test]
    fn vlan_interface_checks_vlan_and_addresses() {
        let mut v = VlanInterface::new(
            "dhcp100",
            VlanInterfaceSpec {
                cluster_network: "data".into(),
                vlan: 4095,
                node_selector: BTreeMap::new(),
                address: Some("10.0.100.0/24".parse().unwrap()),
                node_addresses: BTreeMap::new(),
                mtu: None,
                dhcp: false,
            },
        );
        let fields: Vec<String> = v.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["spec.vlan", "spec.address"]);
        v.spec.vlan = 100;
        v.spec.address = Some("10.0.100.2/24".parse().unwrap());
        v.spec
            .node_addresses
            .insert("n2".into(), "10.0.100.3/24".parse().unwrap());
        assert!(v.validate().is_empty());
        assert_eq!(v.address_for("n2").unwrap().to_string(), "10.0.100.3/24");
        assert_eq!(v.address_for("n1").unwrap().to_string(), "10.0.100.2/24");
        // DHCP excludes static addresses.
        v.spec.dhcp = true;
        let fields: Vec<String> = v.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["spec.dhcp"]);
        v.spec.address = None;
        v.spec.node_addresses.clear();
        assert!(v.validate().is_empty());
    }

    #[test]
    fn selectors() {
        let mut sel = BTreeMap::new();
        let mut labels = BTreeMap::new();
        labels.insert("kubernetes.io/hostname".to_string(), "n1".to_string());
        assert!(selects(&sel, &labels));
        sel.insert("kubernetes.io/hostname".to_string(), "n2".to_string());
        assert!(!selects(&sel, &labels));
    }
}
