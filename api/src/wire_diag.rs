//! Diagnostic views of the eBPF switch, read from its maps by netd:
//!
//! - `GET /v1/fdb` answering [`FdbView`]: learned and static MACs per
//!   cluster network and VLAN, with the port behind each;
//! - `GET /v1/vlans` answering [`VlansView`]: every VLAN of every cluster
//!   network on this node, its member ports (access, untagged, trunk,
//!   uplink) and its counters;
//! - `GET /v1/counters` answering [`CountersView`]: datapath drops by
//!   reason, per port and per VLAN, with totals.
//!
//! Field names are camelCase and stable: netctl's `-o json` prints them.

use serde::{Deserialize, Serialize};

use crate::MacAddr;

/// A port of the switch, named the ways an operator knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortRef {
    /// ifindex in the node's network namespace.
    pub ifindex: u32,
    /// The interface name (empty if the device is gone).
    pub ifname: String,
    /// `vm` (a VM or pod port), `uplink` (a NIC of a cluster network),
    /// `node` (a node port: `vif:<VlanInterface>`, `dhcp:<IPPool>`),
    /// `management` (a port of the management network) or `unknown`.
    pub kind: String,
    /// Who is behind it: `namespace/pod` (or the container id) for VM
    /// ports, the node port's id, the cluster network for an uplink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl PortRef {
    /// `owner (ifname)`, or what is known.
    pub fn label(&self) -> String {
        let name = if self.ifname.is_empty() {
            format!("ifindex {}", self.ifindex)
        } else {
            self.ifname.clone()
        };
        match &self.owner {
            Some(o) => format!("{} {o} ({name})", self.kind),
            None => format!("{} {name}", self.kind),
        }
    }
}

/// `GET /v1/fdb`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FdbView {
    pub node: String,
    /// Every entry, sorted by (cluster network, VLAN, MAC).
    pub entries: Vec<FdbEntryInfo>,
    /// Cluster networks on another backend (the kernel bridge keeps its
    /// own FDB: `bridge fdb show br <cn>-br`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ebpf: Vec<String>,
}

/// One FDB entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FdbEntryInfo {
    pub cluster_network: String,
    /// 0 = the untagged network.
    pub vlan: u16,
    pub mac: MacAddr,
    /// Where frames to this MAC go.
    pub port: PortRef,
    /// `static` (installed by netd for a VM's MAC) or `learned`.
    #[serde(rename = "type")]
    pub entry_type: String,
    /// Milliseconds since a learned MAC was last seen; none for static.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_ms: Option<u64>,
    /// The network's MAC aging, in milliseconds.
    pub aging_ms: u64,
    /// A learned entry older than the aging: the datapath ignores it
    /// (floods instead) until netd removes it.
    pub expired: bool,
}

/// `GET /v1/vlans`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VlansView {
    pub node: String,
    pub cluster_networks: Vec<ClusterNetworkVlans>,
}

/// The VLANs of one cluster network on this node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkVlans {
    pub name: String,
    /// `ebpf` or `bridge`.
    pub backend: String,
    /// The datapath's number for it (keys of its maps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<PortRef>,
    pub vlans: Vec<VlanDetail>,
}

/// One VLAN of a cluster network on this node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VlanDetail {
    /// 0 = the untagged network.
    pub vlan: u16,
    /// The node's own stack on the uplink is part of it (VLAN 0).
    pub to_host: bool,
    /// Every port frames of this VLAN are flooded to, the uplink included.
    pub members: Vec<VlanMember>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp_responder: Option<PortRef>,
    /// FDB entries of this VLAN.
    pub fdb_entries: u32,
    /// None on the bridge backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counters: Option<VlanCounters>,
}

/// A member port of a VLAN.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VlanMember {
    pub port: PortRef,
    /// `access`, `untagged`, `trunk` or `uplink`.
    pub mode: String,
    /// Whether frames of this VLAN leave this port with a tag.
    pub tagged: bool,
    /// Trunks: every VLAN the port allows, as ranges (`100-200`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed: Vec<String>,
    pub mtu: u32,
    /// May answer DHCP (the guard lets its server replies through).
    pub trusted: bool,
    /// Never exchanges frames with the uplink (DHCP responders).
    pub local_only: bool,
}

/// Counters of one VLAN (summed over CPUs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VlanCounters {
    /// Frames classified into this VLAN.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Forwarded to one known port.
    pub unicast_packets: u64,
    /// Broadcast, multicast or unknown unicast, and the copies made.
    pub flood_packets: u64,
    pub flood_copies: u64,
    pub to_host_packets: u64,
    pub from_host_packets: u64,
    /// DHCP client frames steered to the VLAN's responder.
    pub dhcp_steered: u64,
    pub drops: Drops,
}

/// Datapath drops by reason. Every reason the switch counts has a field,
/// zero when nothing was dropped for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Drops {
    /// VLAN filter: a tag the port does not allow (a tagged frame on an
    /// access or untagged port, a trunk VLAN outside its list), QinQ, a
    /// VLAN not present on this node.
    pub vlan_filter: u64,
    /// DHCP guard: a DHCP server reply from a port not marked trusted.
    pub dhcp_guard: u64,
    /// Frames longer than the egress port's MTU.
    pub mtu: u64,
    /// The destination sits behind the port the frame came from.
    pub hairpin: u64,
    /// Would have crossed between a local-only port and the uplink.
    pub local_only: u64,
    /// IEEE 802.1D reserved addresses (STP, LACP, LLDP) from a VM.
    pub policy: u64,
    /// Shorter than an Ethernet header.
    pub malformed: u64,
    /// Anything else (a failed tag pop, no responder for steered DHCP).
    pub other: u64,
    /// Port security: a source MAC that is not the VM port's (nor an
    /// allowed address pair's).
    #[serde(default)]
    pub spoof_mac: u64,
    /// Port security: an IPv4 source the VM port may not use.
    #[serde(default)]
    pub spoof_ipv4: u64,
    /// Port security: an IPv6 source the VM port may not use.
    #[serde(default)]
    pub spoof_ipv6: u64,
    /// Port security: ARP claiming another MAC or address (a gratuitous
    /// ARP for a neighbour's address).
    #[serde(default)]
    pub spoof_arp: u64,
    /// Port security: neighbour discovery claiming another MAC or address.
    #[serde(default)]
    pub spoof_nd: u64,
    /// Port security: a router advertisement from a port that is not
    /// trusted (RA guard).
    #[serde(default)]
    pub ra_guard: u64,
}

impl Drops {
    /// (camelCase reason, count), in field order.
    pub fn by_reason(&self) -> [(&'static str, u64); 14] {
        [
            ("vlanFilter", self.vlan_filter),
            ("dhcpGuard", self.dhcp_guard),
            ("mtu", self.mtu),
            ("hairpin", self.hairpin),
            ("localOnly", self.local_only),
            ("policy", self.policy),
            ("malformed", self.malformed),
            ("other", self.other),
            ("spoofMac", self.spoof_mac),
            ("spoofIpv4", self.spoof_ipv4),
            ("spoofIpv6", self.spoof_ipv6),
            ("spoofArp", self.spoof_arp),
            ("spoofNd", self.spoof_nd),
            ("raGuard", self.ra_guard),
        ]
    }

    /// Drops of port security, all reasons together.
    pub fn port_security(&self) -> u64 {
        [
            self.spoof_mac,
            self.spoof_ipv4,
            self.spoof_ipv6,
            self.spoof_arp,
            self.spoof_nd,
            self.ra_guard,
        ]
        .iter()
        .fold(0u64, |a, n| a.wrapping_add(*n))
    }

    pub fn total(&self) -> u64 {
        self.by_reason()
            .iter()
            .fold(0u64, |a, (_, n)| a.wrapping_add(*n))
    }

    pub fn add(&mut self, o: &Drops) {
        self.vlan_filter = self.vlan_filter.wrapping_add(o.vlan_filter);
        self.dhcp_guard = self.dhcp_guard.wrapping_add(o.dhcp_guard);
        self.mtu = self.mtu.wrapping_add(o.mtu);
        self.hairpin = self.hairpin.wrapping_add(o.hairpin);
        self.local_only = self.local_only.wrapping_add(o.local_only);
        self.policy = self.policy.wrapping_add(o.policy);
        self.malformed = self.malformed.wrapping_add(o.malformed);
        self.other = self.other.wrapping_add(o.other);
        self.spoof_mac = self.spoof_mac.wrapping_add(o.spoof_mac);
        self.spoof_ipv4 = self.spoof_ipv4.wrapping_add(o.spoof_ipv4);
        self.spoof_ipv6 = self.spoof_ipv6.wrapping_add(o.spoof_ipv6);
        self.spoof_arp = self.spoof_arp.wrapping_add(o.spoof_arp);
        self.spoof_nd = self.spoof_nd.wrapping_add(o.spoof_nd);
        self.ra_guard = self.ra_guard.wrapping_add(o.ra_guard);
    }
}

/// `GET /v1/counters`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CountersView {
    pub node: String,
    /// Drops of every port on this node, summed. (A VLAN's drops are a
    /// second view of the same frames, so they are not added again.)
    pub totals: Drops,
    /// Per port, as the switch counts them: on the port the frame came
    /// from, except MTU drops (on the port it would have left by).
    pub ports: Vec<PortDrops>,
    /// Per VLAN (the frames classified into one).
    pub vlans: Vec<VlanDrops>,
    /// Checks this node does not make, so cannot count: `spoofing on
    /// <cluster network>` for networks on the kernel-bridge backend (no
    /// port security there).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_checked: Vec<String>,
}

/// Counters of one port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortDrops {
    pub port: PortRef,
    /// The cluster network (VLAN ports, uplinks) or management network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Frames the port sent into the switch / the switch delivered to it.
    pub tx_packets: u64,
    pub rx_packets: u64,
    pub redirected_packets: u64,
    pub drops: Drops,
}

/// Counters of one VLAN, with its drops.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VlanDrops {
    pub cluster_network: String,
    pub vlan: u16,
    pub counters: VlanCounters,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_are_stable_camel_case() {
        let d = Drops {
            vlan_filter: 1,
            dhcp_guard: 2,
            ..Default::default()
        };
        let v = serde_json::to_value(d).unwrap();
        assert_eq!(v["vlanFilter"], 1);
        assert_eq!(v["dhcpGuard"], 2);
        assert_eq!(v["localOnly"], 0);
        assert_eq!(v["spoofIpv4"], 0);
        assert_eq!(d.total(), 3);
        // An older netd's document (no port security counters) still reads.
        let old: Drops = serde_json::from_value(serde_json::json!({
            "vlanFilter": 1, "dhcpGuard": 0, "mtu": 0, "hairpin": 0, "localOnly": 0,
            "policy": 0, "malformed": 0, "other": 0
        }))
        .unwrap();
        assert_eq!((old.vlan_filter, old.ra_guard), (1, 0));
        let ps = Drops {
            spoof_mac: 1,
            ra_guard: 2,
            ..Default::default()
        };
        assert_eq!((ps.port_security(), ps.total()), (3, 3));
        let e = FdbEntryInfo {
            cluster_network: "data".into(),
            vlan: 100,
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
            port: PortRef::default(),
            entry_type: "learned".into(),
            age_ms: Some(5),
            aging_ms: 300_000,
            expired: false,
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "learned");
        assert_eq!(v["clusterNetwork"], "data");
        assert_eq!(v["ageMs"], 5);
        assert_eq!(v["mac"], "02:00:00:00:00:01");
        let back: FdbEntryInfo = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }
}
