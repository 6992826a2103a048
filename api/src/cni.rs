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
    /// CNI config `portSecurity` (default true): the datapath drops what
    /// the VM sends from a MAC or an address that is not its own (forged
    /// source MAC or IP, ARP and neighbour advertisements claiming another
    /// address, router advertisements unless `dhcpTrusted`). `false` turns
    /// all of that off for the port.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub port_security: bool,
    /// CNI config `allowedAddressPairs`: further addresses (a VIP a guest
    /// running keepalived takes over, a prefix it routes) the VM may send
    /// from, each from its own MAC or from the pair's `macAddress`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_address_pairs: Vec<AddressPair>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// Most allowed address pairs one port may have.
pub const MAX_ADDRESS_PAIRS: usize = 32;
/// Most distinct MACs (other than the port's) its pairs may name: the
/// datapath checks a bounded set per port.
pub const MAX_PAIR_MACS: usize = 8;

/// An allowed address pair (OpenStack's term): an address or prefix a
/// port may send from besides its own, and the MAC it may use for it.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddressPair {
    /// An IPv4 or IPv6 address (`10.0.0.100`) or prefix (`10.0.0.0/24`,
    /// no host bits).
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    #[serde(with = "addr_or_net")]
    pub ip_address: IpNet,
    /// The MAC the VM may send it from; absent: the port's own MAC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<MacAddr>,
}

impl AddressPair {
    /// Parses `10.0.0.100`, `10.0.0.0/24`, `fd00::1`, `fd00::/64`: a
    /// plain address is a /32 or /128; a prefix must have no host bits.
    pub fn parse_ip(s: &str) -> Result<IpNet, String> {
        if let Ok(a) = s.parse::<IpAddr>() {
            return Ok(IpNet::from(a));
        }
        match s.parse::<IpNet>() {
            Ok(n) if n.trunc() == n => Ok(n),
            Ok(n) => Err(format!(
                "{s} has host bits set: expected the prefix {} or the single address {}",
                n.trunc(),
                n.addr()
            )),
            Err(_) => Err(format!(
                "{s:?} is not an IP address or prefix (e.g. 10.0.0.100 or 10.0.0.0/24)"
            )),
        }
    }

    /// Problems of a pair list: (path below the list, e.g.
    /// `[2].ipAddress`, or empty for the list itself; what is wrong).
    pub fn check_list(pairs: &[AddressPair]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if pairs.len() > MAX_ADDRESS_PAIRS {
            out.push((
                String::new(),
                format!("{} pairs: at most {MAX_ADDRESS_PAIRS}", pairs.len()),
            ));
        }
        let mut macs = std::collections::BTreeSet::new();
        for (i, p) in pairs.iter().enumerate() {
            let bad = match p.ip_address.addr() {
                IpAddr::V4(v) => {
                    v.is_unspecified() || v.is_broadcast() || v.is_multicast() || v.is_loopback()
                }
                IpAddr::V6(v) => v.is_unspecified() || v.is_multicast() || v.is_loopback(),
            };
            if bad || p.ip_address.trunc() != p.ip_address {
                out.push((
                    format!("[{i}].ipAddress"),
                    format!("{} cannot be a VM's source address", p.ip_address),
                ));
            }
            if pairs[..i].iter().any(|q| q.ip_address == p.ip_address) {
                out.push((
                    format!("[{i}].ipAddress"),
                    format!("{} is listed twice", p.ip_address),
                ));
            }
            if let Some(m) = p.mac_address {
                if !m.is_valid_unicast() {
                    out.push((
                        format!("[{i}].macAddress"),
                        format!("{m} is not a unicast address"),
                    ));
                } else if macs.insert(m) && macs.len() == MAX_PAIR_MACS + 1 {
                    out.push((
                        format!("[{i}].macAddress"),
                        format!(
                            "more than {MAX_PAIR_MACS} distinct MACs among the pairs of one port"
                        ),
                    ));
                }
            }
        }
        out
    }
}

/// `ipAddress` as text: a plain address for /32 and /128, else a prefix.
mod addr_or_net {
    use ipnet::IpNet;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(n: &IpNet, s: S) -> Result<S::Ok, S::Error> {
        if n.prefix_len() == n.max_prefix_len() {
            s.collect_str(&n.addr())
        } else {
            s.collect_str(n)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<IpNet, D::Error> {
        let s = String::deserialize(d)?;
        super::AddressPair::parse_ip(&s).map_err(serde::de::Error::custom)
    }
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
