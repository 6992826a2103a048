//! The port registry: one record per attachment on this node, kept in the
//! store. A record is written (state Pending) in the same transaction
//! that claims the port's address, before any kernel object exists, so a
//! crash at any point leaves something reconcile can find and finish or
//! undo.

use std::net::Ipv4Addr;

use furrow_api::cni::PodRef;
use furrow_api::wire::{PortInfo, PortState};
use furrow_api::MacAddr;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::store::{keys, KeyValue, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortRecord {
    pub node: String,
    /// CNI network name (config `name`).
    pub network_name: String,
    /// ManagementNetwork resource the port joins.
    pub network: String,
    pub kind: String,
    pub container_id: String,
    pub ifname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    #[serde(default, skip_serializing_if = "PodRef::is_empty")]
    pub pod: PodRef,
    pub host_ifname: String,
    /// The host link's index once built: the datapath keys its counters by
    /// it, and teardown needs it even when the link is already gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ifindex: Option<u32>,
    /// The pod-side MAC; set at creation (requested or kernel-chosen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    pub address: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
    pub ip_masq: bool,
    pub state: PortState,
    pub created_at: u64,
    /// Unique per ADD: tells "our claim was applied although its answer
    /// was lost" apart from "someone else holds this port" when a claim
    /// is resent across an etcd leader change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_id: Option<u64>,
}

impl PortRecord {
    pub fn key(&self) -> String {
        keys::port(
            &self.node,
            &self.network_name,
            &self.container_id,
            &self.ifname,
        )
    }

    pub fn to_info(&self, host_ifindex: Option<u32>) -> PortInfo {
        PortInfo {
            network_name: self.network_name.clone(),
            network: self.network.clone(),
            kind: self.kind.clone(),
            container_id: self.container_id.clone(),
            ifname: self.ifname.clone(),
            netns: self.netns.clone(),
            pod: self.pod.clone(),
            host_ifname: self.host_ifname.clone(),
            host_ifindex,
            mac: self.mac.unwrap_or_default(),
            ips: vec![ipnet::IpNet::V4(self.address)],
            mtu: self.mtu,
            state: self.state,
            created_at: self.created_at,
            counters: None,
            vlan: None,
            trunk: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}

/// A layer-2 port on a cluster network (kind `vlan`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VlanPortRecord {
    pub node: String,
    pub network_name: String,
    pub kind: String,
    pub cluster_network: String,
    /// Access VLAN; 0 = untagged. Unused for trunks.
    pub vlan: u16,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trunk: Vec<furrow_api::cni::VlanRange>,
    #[serde(default)]
    pub promisc: bool,
    /// The VM may answer DHCP (CNI config `dhcpTrusted`).
    #[serde(default)]
    pub dhcp_trusted: bool,
    /// Port security (CNI config `portSecurity`, default on; records of
    /// older netds, without the field, get it on).
    #[serde(default = "yes")]
    pub port_security: bool,
    /// CNI config `allowedAddressPairs`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_address_pairs: Vec<furrow_api::cni::AddressPair>,
    pub container_id: String,
    pub ifname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    #[serde(default, skip_serializing_if = "PodRef::is_empty")]
    pub pod: PodRef,
    pub host_ifname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ifindex: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    pub mtu: u32,
    pub state: PortState,
    pub created_at: u64,
}

impl VlanPortRecord {
    pub fn key(&self) -> String {
        keys::port(
            &self.node,
            &self.network_name,
            &self.container_id,
            &self.ifname,
        )
    }

    /// Every VLAN the port carries (0 = untagged).
    pub fn vids(&self) -> Vec<u16> {
        if self.trunk.is_empty() {
            vec![self.vlan]
        } else {
            self.trunk.iter().flat_map(|r| r.min..=r.max).collect()
        }
    }

    pub fn to_info(&self, host_ifindex: Option<u32>) -> PortInfo {
        PortInfo {
            network_name: self.network_name.clone(),
            network: self.cluster_network.clone(),
            kind: self.kind.clone(),
            container_id: self.container_id.clone(),
            ifname: self.ifname.clone(),
            netns: self.netns.clone(),
            pod: self.pod.clone(),
            host_ifname: self.host_ifname.clone(),
            host_ifindex,
            mac: self.mac.unwrap_or_default(),
            ips: Vec::new(),
            mtu: self.mtu,
            state: self.state,
            created_at: self.created_at,
            counters: None,
            vlan: if self.trunk.is_empty() {
                Some(self.vlan)
            } else {
                None
            },
            trunk: self.trunk.clone(),
        }
    }
}

/// Any port record, decoded by its `kind`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyPort {
    Management(PortRecord),
    Vlan(VlanPortRecord),
}

impl AnyPort {
    pub fn decode(kv: &KeyValue) -> Result<AnyPort, StoreError> {
        let v: serde_json::Value = kv.decode()?;
        let corrupt = |msg: String| StoreError::Corrupt {
            key: kv.key.clone(),
            msg,
        };
        match v.get("kind").and_then(|k| k.as_str()) {
            Some("management") => serde_json::from_value(v)
                .map(AnyPort::Management)
                .map_err(|e| corrupt(e.to_string())),
            Some("vlan") => serde_json::from_value(v)
                .map(AnyPort::Vlan)
                .map_err(|e| corrupt(e.to_string())),
            other => Err(corrupt(format!("unknown port kind {other:?}"))),
        }
    }

    pub fn network_name(&self) -> &str {
        match self {
            AnyPort::Management(r) => &r.network_name,
            AnyPort::Vlan(r) => &r.network_name,
        }
    }
    pub fn container_id(&self) -> &str {
        match self {
            AnyPort::Management(r) => &r.container_id,
            AnyPort::Vlan(r) => &r.container_id,
        }
    }
    pub fn ifname(&self) -> &str {
        match self {
            AnyPort::Management(r) => &r.ifname,
            AnyPort::Vlan(r) => &r.ifname,
        }
    }
    pub fn state(&self) -> PortState {
        match self {
            AnyPort::Management(r) => r.state,
            AnyPort::Vlan(r) => r.state,
        }
    }
    pub fn host_ifname(&self) -> &str {
        match self {
            AnyPort::Management(r) => &r.host_ifname,
            AnyPort::Vlan(r) => &r.host_ifname,
        }
    }
    pub fn to_info(&self, host_ifindex: Option<u32>) -> PortInfo {
        match self {
            AnyPort::Management(r) => r.to_info(host_ifindex),
            AnyPort::Vlan(r) => r.to_info(host_ifindex),
        }
    }
}

/// Every port record of a node, of every kind.
pub async fn list_all(
    store: &dyn crate::store::Store,
    node: &str,
) -> Result<Vec<AnyPort>, StoreError> {
    let kvs = store.list(&keys::ports_of_node(node)).await?;
    kvs.iter().map(AnyPort::decode).collect()
}

/// The host-side veth name of an attachment: `fw` and 13 hex digits of a
/// hash of its identity, so it is stable (DEL finds it without the store)
/// and fits the kernel's 15-character limit.
pub fn host_ifname(network_name: &str, container_id: &str, ifname: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in network_name
        .bytes()
        .chain([0])
        .chain(container_id.bytes())
        .chain([0])
        .chain(ifname.bytes())
    {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("fw{:013x}", h & ((1u64 << 52) - 1))
}

/// The name a deleted pod-side interface carries inside the pod's
/// namespace until the kernel has removed the pair: it frees CNI_IFNAME
/// at once, and like the host name it is unique per attachment.
pub fn tombstone_ifname(host_ifname: &str) -> String {
    format!("fx{}", host_ifname.trim_start_matches("fw"))
}

/// The alias written on every host-side link netd creates, so reconcile
/// recognises its own links and never touches anyone else's.
pub fn link_alias(instance: &str, port_key: &str) -> String {
    format!("furrow:{instance}:{port_key}")
}

pub fn alias_owner(alias: &str) -> Option<(&str, &str)> {
    let rest = alias.strip_prefix("furrow:")?;
    rest.split_once(':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ifnames_are_stable_short_and_distinct() {
        let a = host_ifname("mgmt", "abc", "eth0");
        assert_eq!(a, host_ifname("mgmt", "abc", "eth0"));
        assert_eq!(a.len(), 15);
        assert_ne!(a, host_ifname("mgmt", "abc", "eth1"));
        assert_ne!(a, host_ifname("mgmt", "abd", "eth0"));
        // The separator keeps ("ab","ceth0") apart from ("abc","eth0").
        assert_ne!(
            host_ifname("mgmt", "ab", "ceth0"),
            host_ifname("mgmt", "abc", "eth0")
        );
    }

    #[test]
    fn alias_round_trip() {
        let a = link_alias("node1", "/furrow/ports/n/mgmt/c/eth0");
        assert_eq!(
            alias_owner(&a),
            Some(("node1", "/furrow/ports/n/mgmt/c/eth0"))
        );
        assert_eq!(alias_owner("something else"), None);
    }
}
