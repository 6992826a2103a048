//! Map value layouts shared with the C programs, and their public views.

use aya::maps::lpm_trie::Key;

use crate::{
    l2::{RawFdb, RawFdbKey, RawL2Cn, RawL2Dhcp, RawL2Port, RawL2Vlan, RawVlanKey, RawVlanStats},
    l2_psec::{PsecV4Key, PsecV6Key, RawL2Psec, RawPsecAddr},
    MAP_L2_CLUSTER_NETWORKS, MAP_L2_DHCP, MAP_L2_FDB, MAP_L2_PORTS, MAP_L2_PSEC, MAP_L2_PSEC_V4,
    MAP_L2_PSEC_V6, MAP_L2_VLANS, MAP_L2_VLAN_STATS, MAP_MGMT_ENDPOINTS, MAP_PORT_STATS,
};

/// Capacity of the endpoints map (bpf/lib/config.h: FURROW_MAX_ENDPOINTS).
pub const MAX_ENDPOINTS: u32 = 16384;
/// Capacity of the port counters map (bpf/lib/config.h: FURROW_MAX_PORTS).
pub const MAX_PORTS: u32 = 16384;

// BPF_MAP_TYPE_* values (include/uapi/linux/bpf.h).
pub(crate) const BPF_MAP_TYPE_HASH: u32 = 1;
pub(crate) const BPF_MAP_TYPE_PERCPU_HASH: u32 = 5;
pub(crate) const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
pub(crate) const BPF_MAP_TYPE_LPM_TRIE: u32 = 11;

/// `struct mgmt_endpoint` in bpf/mgmt.bpf.c.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RawMgmtEndpoint {
    pub ifindex: u32,
    pub pod_mac: [u8; 6],
    pub host_mac: [u8; 6],
    pub flags: u32,
}

// SAFETY: repr(C), only integers and byte arrays, no padding (checked below).
unsafe impl aya::Pod for RawMgmtEndpoint {}
const _: () = assert!(std::mem::size_of::<RawMgmtEndpoint>() == 20);

/// `struct port_stats` in bpf/lib/stats.h.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RawPortStats {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub redirected_packets: u64,
    pub drop_malformed: u64,
    pub drop_policy: u64,
    pub drop_vlan: u64,
    pub drop_other: u64,
    pub drop_mtu: u64,
    pub drop_hairpin: u64,
    pub drop_dhcp_guard: u64,
    pub drop_local_only: u64,
    pub drop_spoof_mac: u64,
    pub drop_spoof_ipv4: u64,
    pub drop_spoof_ipv6: u64,
    pub drop_spoof_arp: u64,
    pub drop_spoof_nd: u64,
    pub drop_ra_guard: u64,
}

// SAFETY: repr(C), only u64 fields, no padding.
unsafe impl aya::Pod for RawPortStats {}
// 9 counters until the L2 switch appended drop_mtu and drop_hairpin, 11
// until DHCP steering appended drop_dhcp_guard and drop_local_only, 13
// until port security appended its six.
const _: () = assert!(std::mem::size_of::<RawPortStats>() == 19 * 8);

/// Shape of a map this build expects; a pinned map left by another build
/// must match it to be reused.
pub(crate) struct MapSpec {
    pub name: &'static str,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    /// Counters only: a pin of another shape is replaced by a fresh map
    /// (the counters restart at zero) instead of refusing to start.
    pub recreate: bool,
}

const fn spec<K, V>(name: &'static str, map_type: u32, recreate: bool) -> MapSpec {
    MapSpec {
        name,
        map_type,
        key_size: std::mem::size_of::<K>() as u32,
        value_size: std::mem::size_of::<V>() as u32,
        recreate,
    }
}

pub(crate) const MAP_SPECS: [MapSpec; 11] = [
    spec::<u32, RawMgmtEndpoint>(MAP_MGMT_ENDPOINTS, BPF_MAP_TYPE_HASH, false),
    spec::<u32, RawPortStats>(MAP_PORT_STATS, BPF_MAP_TYPE_PERCPU_HASH, true),
    spec::<u32, RawL2Port>(MAP_L2_PORTS, BPF_MAP_TYPE_HASH, false),
    spec::<RawVlanKey, RawL2Vlan>(MAP_L2_VLANS, BPF_MAP_TYPE_HASH, false),
    spec::<RawFdbKey, RawFdb>(MAP_L2_FDB, BPF_MAP_TYPE_LRU_HASH, false),
    spec::<u32, RawL2Cn>(MAP_L2_CLUSTER_NETWORKS, BPF_MAP_TYPE_HASH, false),
    spec::<RawVlanKey, RawVlanStats>(MAP_L2_VLAN_STATS, BPF_MAP_TYPE_PERCPU_HASH, true),
    spec::<RawVlanKey, RawL2Dhcp>(MAP_L2_DHCP, BPF_MAP_TYPE_HASH, false),
    spec::<u32, RawL2Psec>(MAP_L2_PSEC, BPF_MAP_TYPE_HASH, false),
    spec::<Key<PsecV4Key>, RawPsecAddr>(MAP_L2_PSEC_V4, BPF_MAP_TYPE_LPM_TRIE, false),
    spec::<Key<PsecV6Key>, RawPsecAddr>(MAP_L2_PSEC_V6, BPF_MAP_TYPE_LPM_TRIE, false),
];

/// A pod on this node, as the datapath needs it to deliver frames to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MgmtEndpoint {
    /// ifindex of the pod's host-side veth (in the node's netns).
    pub host_ifindex: u32,
    /// MAC of the pod's interface (the veth peer inside the pod).
    pub pod_mac: [u8; 6],
    /// MAC of the host-side veth (the pod's gateway MAC).
    pub host_mac: [u8; 6],
}

impl From<MgmtEndpoint> for RawMgmtEndpoint {
    fn from(ep: MgmtEndpoint) -> Self {
        RawMgmtEndpoint {
            ifindex: ep.host_ifindex,
            pod_mac: ep.pod_mac,
            host_mac: ep.host_mac,
            flags: 0,
        }
    }
}

impl From<RawMgmtEndpoint> for MgmtEndpoint {
    fn from(raw: RawMgmtEndpoint) -> Self {
        MgmtEndpoint {
            host_ifindex: raw.ifindex,
            pod_mac: raw.pod_mac,
            host_mac: raw.host_mac,
        }
    }
}

/// Counters of one port, summed over CPUs, from the pod's point of view.
/// For an L2 uplink the "pod" is the wire: tx = frames from the wire into
/// the switch, rx = frames the switch sent to the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Frames the pod sent (host-side ingress).
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames delivered to the pod: by the kernel (host-side egress) or
    /// redirected to it by the datapath.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Of tx: frames the datapath delivered straight to a local pod.
    pub redirected_packets: u64,
    /// Drop reasons. The management programs never drop. The L2 switch
    /// counts on the port that sent the frame, except `drop_mtu`.
    pub drop_malformed: u64,
    /// L2: IEEE 802.1D reserved group addresses (STP, LACP, LLDP) from a VM.
    pub drop_policy: u64,
    /// L2: a tag the port does not allow, QinQ, a VLAN not on this node.
    pub drop_vlan: u64,
    pub drop_other: u64,
    /// L2: frames longer than this port's MTU (counted on the egress port).
    pub drop_mtu: u64,
    /// L2: frames whose destination MAC sits behind the port they came from.
    pub drop_hairpin: u64,
    /// L2: DHCP server replies (IPv4 UDP from port 67) from a VM port that
    /// is not trusted ([`crate::L2PortFlags::trusted`]).
    pub drop_dhcp_guard: u64,
    /// L2: frames that would have crossed between a local-only port
    /// ([`crate::L2PortFlags::local_only`]) and the uplink: counted on the
    /// local-only port for its frames to the wire, on the uplink for
    /// frames from the wire to or from a local-only port's MAC.
    pub drop_local_only: u64,
    /// L2 port security ([`crate::PortSecurity`]), on the VM port that
    /// sent the frame: a source MAC that is not the port's.
    pub drop_spoof_mac: u64,
    /// An IPv4 source the port may not use.
    pub drop_spoof_ipv4: u64,
    /// An IPv6 source the port may not use.
    pub drop_spoof_ipv6: u64,
    /// ARP claiming another MAC or address (gratuitous ARP for a
    /// neighbour's address).
    pub drop_spoof_arp: u64,
    /// Neighbour discovery claiming another MAC or address.
    pub drop_spoof_nd: u64,
    /// Router advertisements from a port that is not trusted.
    pub drop_ra_guard: u64,
}

impl PortStats {
    /// Drop counters by reason name (for netd's `drops` map).
    pub fn drops(&self) -> [(&'static str, u64); 14] {
        [
            ("malformed", self.drop_malformed),
            ("policy", self.drop_policy),
            ("vlan", self.drop_vlan),
            ("other", self.drop_other),
            ("mtu", self.drop_mtu),
            ("hairpin", self.drop_hairpin),
            ("dhcp_guard", self.drop_dhcp_guard),
            ("local_only", self.drop_local_only),
            ("spoof_mac", self.drop_spoof_mac),
            ("spoof_ipv4", self.drop_spoof_ipv4),
            ("spoof_ipv6", self.drop_spoof_ipv6),
            ("spoof_arp", self.drop_spoof_arp),
            ("spoof_nd", self.drop_spoof_nd),
            ("ra_guard", self.drop_ra_guard),
        ]
    }

    pub(crate) fn add(&mut self, raw: &RawPortStats) {
        // Wrapping: per-CPU u64 counters are summed; overflow is theoretical.
        self.tx_packets = self.tx_packets.wrapping_add(raw.tx_packets);
        self.tx_bytes = self.tx_bytes.wrapping_add(raw.tx_bytes);
        self.rx_packets = self.rx_packets.wrapping_add(raw.rx_packets);
        self.rx_bytes = self.rx_bytes.wrapping_add(raw.rx_bytes);
        self.redirected_packets = self.redirected_packets.wrapping_add(raw.redirected_packets);
        self.drop_malformed = self.drop_malformed.wrapping_add(raw.drop_malformed);
        self.drop_policy = self.drop_policy.wrapping_add(raw.drop_policy);
        self.drop_vlan = self.drop_vlan.wrapping_add(raw.drop_vlan);
        self.drop_other = self.drop_other.wrapping_add(raw.drop_other);
        self.drop_mtu = self.drop_mtu.wrapping_add(raw.drop_mtu);
        self.drop_hairpin = self.drop_hairpin.wrapping_add(raw.drop_hairpin);
        self.drop_dhcp_guard = self.drop_dhcp_guard.wrapping_add(raw.drop_dhcp_guard);
        self.drop_local_only = self.drop_local_only.wrapping_add(raw.drop_local_only);
        self.drop_spoof_mac = self.drop_spoof_mac.wrapping_add(raw.drop_spoof_mac);
        self.drop_spoof_ipv4 = self.drop_spoof_ipv4.wrapping_add(raw.drop_spoof_ipv4);
        self.drop_spoof_ipv6 = self.drop_spoof_ipv6.wrapping_add(raw.drop_spoof_ipv6);
        self.drop_spoof_arp = self.drop_spoof_arp.wrapping_add(raw.drop_spoof_arp);
        self.drop_spoof_nd = self.drop_spoof_nd.wrapping_add(raw.drop_spoof_nd);
        self.drop_ra_guard = self.drop_ra_guard.wrapping_add(raw.drop_ra_guard);
    }

    pub(crate) fn sum<'a>(values: impl IntoIterator<Item = &'a RawPortStats>) -> Self {
        let mut s = PortStats::default();
        for v in values {
            s.add(v);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_roundtrip() {
        let ep = MgmtEndpoint {
            host_ifindex: 7,
            pod_mac: [2, 0, 0, 0, 0, 1],
            host_mac: [2, 0, 0, 0, 0, 2],
        };
        let raw = RawMgmtEndpoint::from(ep);
        assert_eq!(raw.flags, 0);
        assert_eq!(MgmtEndpoint::from(raw), ep);
    }

    #[test]
    fn stats_sum_over_cpus() {
        let a = RawPortStats {
            tx_packets: 1,
            tx_bytes: 100,
            redirected_packets: 1,
            ..Default::default()
        };
        let b = RawPortStats {
            tx_packets: 2,
            rx_bytes: 5,
            drop_other: 3,
            drop_dhcp_guard: 4,
            drop_local_only: 6,
            drop_ra_guard: 7,
            ..Default::default()
        };
        let s = PortStats::sum([&a, &b]);
        assert_eq!(s.tx_packets, 3);
        assert_eq!(s.tx_bytes, 100);
        assert_eq!(s.rx_bytes, 5);
        assert_eq!(s.redirected_packets, 1);
        assert_eq!(s.drops()[3], ("other", 3));
        assert_eq!(s.drops()[6], ("dhcp_guard", 4));
        assert_eq!(s.drops()[7], ("local_only", 6));
        assert_eq!(s.drops()[13], ("ra_guard", 7));
    }
}
