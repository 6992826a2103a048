//! Version-independent CNI types. The plugin converts between these and
//! the JSON of the cniVersion a runtime speaks (0.3.0 .. 1.1.0); netd
//! only ever sees these.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::MacAddr;

/// The spec versions `furrow` accepts and can produce results for.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest spec version `furrow` implements.
pub const CURRENT_VERSION: &str = "1.1.0";

/// A CNI ADD result in the shape of spec 1.1.0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path for container-side interfaces; absent for host-side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "pciID")]
    pub pci_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpConfig {
    /// Address with the prefix length of its subnet, e.g. 10.52.0.7/24.
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into [`CniResult::interfaces`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// Pod identity from CNI_ARGS (what Multus and kubelet pass).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infra_container_id: Option<String>,
}

impl PodRef {
    pub fn is_empty(&self) -> bool {
        self.namespace.is_none()
            && self.name.is_none()
            && self.uid.is_none()
            && self.infra_container_id.is_none()
    }
}

/// What kind of network an attachment joins, with the options of that
/// kind, as parsed and validated by the plugin from the CNI config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum AttachmentSpec {
    /// The NAT'ed management (pod) network.
    Management(ManagementAttachment),
    /// A layer-2 port on a cluster network: access (one VLAN, untagged to
    /// the VM), untagged, or trunk (tagged, an allowed list).
    Vlan(VlanAttachment),
}

/// An inclusive VLAN ID range (a single ID has min == max).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VlanRange {
    pub min: u16,
    pub max: u16,
}

/// Highest usable VLAN ID (802.1Q reserves 0 and 4095).
pub const VLAN_MAX: u16 = 4094;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VlanAttachment {
    /// The ClusterNetwork (CNI config `clusterNetwork`, or Harvester's
    /// `"bridge": "<cn>-br"`).
    pub cluster_network: String,
    /// Access VLAN 1-4094; 0 means untagged. Ignored for trunks.
    pub vlan: u16,
    /// Allowed VLANs of a trunk port, normalised (sorted, merged). Empty
    /// for access and untagged ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trunk: Vec<VlanRange>,
    /// Interface MTU; None means the cluster network's MTU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Harvester NADs set `promiscMode`; the datapath floods unknown
    /// unicast within the VLAN either way, so this is recorded only.
    #[serde(default)]
    pub promisc: bool,
    /// CNI config `dhcpTrusted`: the VM may answer DHCP (a VM running its
    /// own DHCP server). Without it the datapath drops DHCP server replies
    /// the VM sends (the DHCP guard).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dhcp_trusted: bool,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

impl VlanAttachment {
    pub fn is_trunk(&self) -> bool {
        !self.trunk.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagementAttachment {
    /// Name of the ManagementNetwork resource (CNI config `network`,
    /// default `mgmt`).
    pub network: String,
    /// Interface MTU; None means the network's MTU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Masquerade traffic that leaves the cluster CIDR (CNI config
    /// `ipMasq`, default true).
    pub ip_masq: bool,
    /// DNS settings copied into the result.
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}
