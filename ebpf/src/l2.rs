//! The 802.1Q switch of VLAN networks: public types, and the map layouts
//! shared with bpf/lib/l2.h and bpf/l2.bpf.c.

use std::{fmt, ops::RangeInclusive, time::Duration};

use crate::DatapathError;

/// Ports (VM ports and uplinks) of the switch on one node
/// (bpf/lib/config.h: FURROW_L2_MAX_PORTS).
pub const L2_MAX_PORTS: u32 = 16384;
/// (cluster network, VLAN) pairs present on one node (FURROW_L2_MAX_VLANS).
pub const L2_MAX_VLANS: u32 = 16384;
/// Member ports of one VLAN on one node, uplink included
/// (FURROW_L2_MAX_MEMBERS). [`crate::Datapath::l2_set_vlan`] refuses more.
pub const L2_MAX_MEMBERS: usize = 256;
/// FDB entries (learned and static MACs, every network) of one node
/// (FURROW_L2_MAX_FDB). An LRU map: when full, learning evicts the least
/// recently used entries.
pub const L2_MAX_FDB: u32 = 65536;
/// Cluster networks on one node (FURROW_L2_MAX_CNS).
pub const L2_MAX_CLUSTER_NETWORKS: u32 = 1024;
/// MAC aging of a cluster network netd set nothing for
/// (FURROW_L2_DEFAULT_AGING_NS).
pub const L2_DEFAULT_AGING: Duration = Duration::from_secs(300);
/// Highest VLAN id a port can use (4095 is reserved by 802.1Q).
pub const VLAN_ID_MAX: u16 = 4094;

// ---------------------------------------------------------------------------
// VlanSet

/// A set of VLAN ids 1-4094 (a 4096-bit bitmap, as the datapath keeps it).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VlanSet {
    bits: [u64; 64],
}

impl Default for VlanSet {
    fn default() -> Self {
        VlanSet::new()
    }
}

impl VlanSet {
    /// The empty set.
    pub const fn new() -> Self {
        VlanSet { bits: [0; 64] }
    }

    /// The union of inclusive ranges (a single VLAN is `v..=v`), as
    /// Harvester's `vlanTrunk` lists them. Every id must be 1-4094 and
    /// every range non-empty.
    pub fn from_ranges(
        ranges: impl IntoIterator<Item = RangeInclusive<u16>>,
    ) -> Result<Self, DatapathError> {
        let mut set = VlanSet::new();
        for r in ranges {
            let (lo, hi) = (*r.start(), *r.end());
            if lo == 0 || hi > VLAN_ID_MAX || lo > hi {
                return Err(DatapathError::InvalidL2(format!(
                    "VLAN range {lo}-{hi}: expected ids 1 to {VLAN_ID_MAX}, start <= end"
                )));
            }
            for v in lo..=hi {
                set.bits[usize::from(v >> 6)] |= 1 << (v & 63);
            }
        }
        Ok(set)
    }

    /// Adds `vid` (1-4094); returns whether it was new.
    pub fn insert(&mut self, vid: u16) -> Result<bool, DatapathError> {
        if vid == 0 || vid > VLAN_ID_MAX {
            return Err(DatapathError::InvalidL2(format!(
                "VLAN {vid}: expected 1 to {VLAN_ID_MAX}"
            )));
        }
        let had = self.contains(vid);
        self.bits[usize::from(vid >> 6)] |= 1 << (vid & 63);
        Ok(!had)
    }

    /// Removes `vid`; returns whether it was there.
    pub fn remove(&mut self, vid: u16) -> bool {
        let had = self.contains(vid);
        if had {
            self.bits[usize::from(vid >> 6)] &= !(1 << (vid & 63));
        }
        had
    }

    pub fn contains(&self, vid: u16) -> bool {
        vid <= VLAN_ID_MAX && vid != 0 && self.bits[usize::from(vid >> 6)] >> (vid & 63) & 1 == 1
    }

    /// The ids in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (1..=VLAN_ID_MAX).filter(|v| self.contains(*v))
    }

    pub fn len(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|w| *w == 0)
    }

    /// The set as maximal inclusive ranges, ascending.
    pub fn ranges(&self) -> Vec<RangeInclusive<u16>> {
        let mut out: Vec<RangeInclusive<u16>> = Vec::new();
        for v in self.iter() {
            match out.last_mut() {
                Some(r) if *r.end() + 1 == v => *r = *r.start()..=v,
                _ => out.push(v..=v),
            }
        }
        out
    }

    pub(crate) fn from_bits(bits: [u64; 64]) -> Self {
        let mut s = VlanSet { bits };
        // Ids 0 and 4095 are never members.
        s.bits[0] &= !1;
        s.bits[63] &= !(1 << 63);
        s
    }

    pub(crate) fn bits(&self) -> [u64; 64] {
        self.bits
    }
}

impl fmt::Debug for VlanSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VlanSet[")?;
        for (i, r) in self.ranges().iter().enumerate() {
            if i > 0 {
                write!(f, ",")?;
            }
            if r.start() == r.end() {
                write!(f, "{}", r.start())?;
            } else {
                write!(f, "{}-{}", r.start(), r.end())?;
            }
        }
        write!(f, "]")
    }
}

// ---------------------------------------------------------------------------
// Ports, VLANs, FDB, counters

/// What a port of the switch is.
// A trunk's 4096-bit set makes this 520 bytes; ports are configured a few
// times per VM lifetime, so a plain value beats a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L2Mode {
    /// A VM port on one VLAN (1-4094), untagged towards the VM. Tagged
    /// frames from the VM are dropped.
    Access { vid: u16 },
    /// A VM port on VLAN 0 (the untagged network): untagged towards the
    /// VM and on the wire. Tagged frames from the VM are dropped.
    Untagged,
    /// A VM port carrying `allowed` tagged. Untagged frames and other
    /// VLANs from the VM are dropped.
    Trunk { allowed: VlanSet },
    /// The node's uplink: every VLAN tagged, VLAN 0 untagged. `own_mac`
    /// is the node's MAC on it: frames to it go to the node's stack.
    Uplink { own_mac: [u8; 6] },
}

/// A port of the switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L2Port {
    /// Cluster network id (netd's numbering; any u32).
    pub cluster_network: u32,
    pub mode: L2Mode,
    /// Largest L3 length (IP packet) delivered to this port; larger
    /// frames are dropped and counted (`drop_mtu`). 68-65535.
    pub mtu: u32,
}

/// netd's policy flags of a port, besides its [`L2Port`] configuration
/// (see [`crate::Datapath::l2_attach_port_with_flags`]). VM ports have
/// none; a DHCP responder port has both ([`L2PortFlags::RESPONDER`]).
/// Uplinks take none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct L2PortFlags {
    /// The port may send DHCP server replies (IPv4 UDP from source port
    /// 67). From a VM port without it they are dropped and counted
    /// (`drop_dhcp_guard` on the port and the VLAN). The uplink is always
    /// trusted.
    pub trusted: bool,
    /// The port's frames never reach the uplink: not as unicast to a MAC
    /// behind it, not as a flood copy (unknown unicast to such a MAC is
    /// dropped, known unicast too: `drop_local_only`). And the uplink never
    /// reaches the port: floods from the wire skip it, and a frame from
    /// the wire to or from a MAC whose FDB entry points at it is dropped
    /// (`drop_local_only` on the uplink): with the same MAC on every node
    /// (an anycast responder), such a frame can only be another node's
    /// leakage. Learning never moves its MACs behind the uplink.
    pub local_only: bool,
}

impl L2PortFlags {
    /// No flags: a VM port.
    pub const NONE: L2PortFlags = L2PortFlags {
        trusted: false,
        local_only: false,
    };
    /// A node's DHCP responder port (anycast server MAC and IP): trusted
    /// and local-only.
    pub const RESPONDER: L2PortFlags = L2PortFlags {
        trusted: true,
        local_only: true,
    };

    pub(crate) fn bits(self) -> u8 {
        (if self.trusted { PORT_F_TRUSTED } else { 0 })
            | (if self.local_only {
                PORT_F_LOCAL_ONLY
            } else {
                0
            })
    }

    pub(crate) fn from_bits(bits: u8) -> Self {
        L2PortFlags {
            trusted: bits & PORT_F_TRUSTED != 0,
            local_only: bits & PORT_F_LOCAL_ONLY != 0,
        }
    }
}

/// The flood list of one VLAN of a cluster network on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L2Vlan {
    pub cluster_network: u32,
    /// 0 = the untagged network.
    pub vid: u16,
    /// ifindexes of the member ports, uplink included, as netd gave them.
    pub members: Vec<u32>,
    /// VLAN 0 only: the node's stack on the uplink takes part (VMs reach
    /// the node's own MAC, broadcasts reach the node, the node reaches
    /// local VMs).
    pub to_host: bool,
}

/// The DHCP responder port of one VLAN of a cluster network on this node
/// (see [`crate::Datapath::l2_set_dhcp_responder`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L2DhcpResponder {
    pub cluster_network: u32,
    pub vid: u16,
    pub ifindex: u32,
}

/// One FDB entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdbEntry {
    pub cluster_network: u32,
    pub vid: u16,
    pub mac: [u8; 6],
    pub ifindex: u32,
    pub is_static: bool,
    /// Dynamic entries: time since the MAC was last seen (CLOCK_MONOTONIC,
    /// as the datapath stamps it). `None` for static entries.
    pub age: Option<Duration>,
}

/// Counters of one VLAN of a cluster network on this node, summed over
/// CPUs. Frames, not bytes on the wire: a GSO frame counts once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VlanStats {
    /// Frames accepted into the VLAN, from any port.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Delivered to the one port that has the destination MAC.
    pub unicast_packets: u64,
    pub unicast_bytes: u64,
    /// Broadcast, multicast and unknown unicast, once per frame.
    pub flood_packets: u64,
    pub flood_bytes: u64,
    /// Deliveries made by flooding (one per member port reached).
    pub flood_copies: u64,
    /// VLAN 0: frames from VMs delivered to the node's stack.
    pub to_host_packets: u64,
    /// VLAN 0: frames from the node's stack delivered to local ports.
    pub from_host_packets: u64,
    pub drop_hairpin: u64,
    pub drop_mtu: u64,
    /// Includes DHCP client frames dropped because the VLAN's responder
    /// is no longer a port of it (`L2Verdict::DropNoResponder`).
    pub drop_other: u64,
    /// DHCP client frames (IPv4 UDP to port 67) from VM ports delivered to
    /// the VLAN's responder port only.
    pub dhcp_steered: u64,
    /// DHCP server replies (IPv4 UDP from port 67) from VM ports that are
    /// not trusted, dropped.
    pub drop_dhcp_guard: u64,
    /// Frames dropped because they would have crossed between a
    /// local-only port and the uplink.
    pub drop_local_only: u64,
}

impl VlanStats {
    pub(crate) fn sum<'a>(values: impl IntoIterator<Item = &'a RawVlanStats>) -> Self {
        let mut s = VlanStats::default();
        for v in values {
            s.rx_packets = s.rx_packets.wrapping_add(v.rx_packets);
            s.rx_bytes = s.rx_bytes.wrapping_add(v.rx_bytes);
            s.unicast_packets = s.unicast_packets.wrapping_add(v.unicast_packets);
            s.unicast_bytes = s.unicast_bytes.wrapping_add(v.unicast_bytes);
            s.flood_packets = s.flood_packets.wrapping_add(v.flood_packets);
            s.flood_bytes = s.flood_bytes.wrapping_add(v.flood_bytes);
            s.flood_copies = s.flood_copies.wrapping_add(v.flood_copies);
            s.to_host_packets = s.to_host_packets.wrapping_add(v.to_host_packets);
            s.from_host_packets = s.from_host_packets.wrapping_add(v.from_host_packets);
            s.drop_hairpin = s.drop_hairpin.wrapping_add(v.drop_hairpin);
            s.drop_mtu = s.drop_mtu.wrapping_add(v.drop_mtu);
            s.drop_other = s.drop_other.wrapping_add(v.drop_other);
            s.dhcp_steered = s.dhcp_steered.wrapping_add(v.dhcp_steered);
            s.drop_dhcp_guard = s.drop_dhcp_guard.wrapping_add(v.drop_dhcp_guard);
            s.drop_local_only = s.drop_local_only.wrapping_add(v.drop_local_only);
        }
        s
    }
}

// ---------------------------------------------------------------------------
// Trace records (skb->cb), for BPF_PROG_TEST_RUN users

/// What `furrow_l2_ingress` / `furrow_l2_uplink_egress` did with a frame,
/// from the trace record they leave in `skb->cb` (see
/// [`crate::TestRunOutput::cb`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L2Verdict {
    /// Not a port of the switch: to the kernel.
    PassNotPort,
    /// Uplink: addressed to the node's own MAC: to the kernel untouched.
    PassOwnMac,
    /// Uplink: untagged and this node has no VLAN 0: the node's traffic.
    PassNoVlan0,
    /// Uplink: the copy of a VM's broadcast meant for the node's stack.
    PassHostCopy,
    /// Uplink: an IEEE 802.1D reserved group address: to the kernel.
    PassLinkLocal,
    /// Uplink egress: not the node's VLAN-0 traffic: sent as is.
    PassNotHost,
    /// Delivered to the one port that has the destination MAC.
    Unicast,
    /// From a VM to the node's own MAC on VLAN 0.
    ToHost,
    /// Flooded to the VLAN's members.
    Flood,
    /// Flooded, and the frame continues (to the kernel or the wire).
    FloodPass,
    DropVlan,
    DropHairpin,
    DropMtu,
    DropMalformed,
    DropPolicy,
    DropOther,
    /// A DHCP client frame from a VM port, delivered to the VLAN's
    /// responder port only (`out_ifindex`).
    DhcpSteered,
    /// A DHCP server reply from a VM port that is not trusted.
    DropDhcpGuard,
    /// Would have crossed between a local-only port and the uplink:
    /// unicast from a local-only port to a MAC behind the uplink, or from
    /// the uplink to or from a MAC of a local-only port (`out_ifindex`:
    /// the port on the other side: the uplink, or the local-only port).
    DropLocalOnly,
    /// A DHCP client frame on a VLAN whose responder (`out_ifindex`) is
    /// no longer a port of it: dropped rather than flooded.
    DropNoResponder,
    /// Port security: the source MAC is not one of the port's (its own,
    /// or an allowed address pair's).
    DropSpoofMac,
    /// Port security: an IPv4 source the port may not use.
    DropSpoofIpv4,
    /// Port security: an IPv6 source the port may not use.
    DropSpoofIpv6,
    /// Port security: ARP whose sender MAC or address is not the port's
    /// (a gratuitous ARP for a neighbour's address).
    DropSpoofArp,
    /// Port security: neighbour discovery claiming another MAC (a
    /// link-layer address option) or address (a neighbour advertisement's
    /// target).
    DropSpoofNd,
    /// Port security: a router advertisement from a port that is not
    /// trusted (the RA guard).
    DropRaGuard,
}

impl L2Verdict {
    /// Whether port security dropped the frame.
    pub fn is_port_security_drop(self) -> bool {
        matches!(
            self,
            L2Verdict::DropSpoofMac
                | L2Verdict::DropSpoofIpv4
                | L2Verdict::DropSpoofIpv6
                | L2Verdict::DropSpoofArp
                | L2Verdict::DropSpoofNd
                | L2Verdict::DropRaGuard
        )
    }
}

/// What a frame was to the DHCP rules (IPv4 UDP, first fragment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DhcpFrame {
    /// To UDP port 67 (DISCOVER, REQUEST, DECLINE, RELEASE, INFORM).
    Client,
    /// From UDP port 67 (OFFER, ACK, NAK; relay agents too).
    Server,
}

/// The trace record of one run: see bpf/l2.bpf.c.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L2Trace {
    pub verdict: L2Verdict,
    /// The VLAN the frame was classified into (`None` before that).
    pub vid: Option<u16>,
    /// Unicast / to-host / MTU drop: the egress ifindex.
    pub out_ifindex: Option<u32>,
    /// Unicast: the TCI the frame left with, `None` if untagged.
    pub egress_tci: Option<u16>,
    /// Flood: deliveries made (clones plus the redirected original).
    pub flood_copies: u32,
    /// Flood: members skipped because the frame exceeds their MTU.
    pub flood_mtu_drops: u32,
    /// Flood: members left out by the local-only rule (the uplink for a
    /// frame from a local-only port; local-only ports for a frame from the
    /// wire, or for a DHCP client frame of the node's own stack).
    pub flood_local_only_skips: u32,
    /// The ingress port is local-only ([`L2PortFlags::local_only`]).
    pub from_local_only: bool,
    /// The ingress port is trusted ([`L2PortFlags::trusted`]).
    pub from_trusted: bool,
    /// What the frame was to the DHCP rules, once classified into a VLAN
    /// (`None`: not DHCP, or dropped before).
    pub dhcp: Option<DhcpFrame>,
    /// The ingress port has port security and the frame reached its
    /// checks (see [`crate::PortSecurity`]).
    pub port_security: bool,
}

const TRACE_MAGIC: u32 = 0x4c32_0000;
const TRACE_NO_VID: u32 = 0xffff;
const TRACE_TAGGED: u32 = 0x1_0000;
const TRACE_F_LOCAL_ONLY: u32 = 0x100;
const TRACE_F_TRUSTED: u32 = 0x200;
const TRACE_F_DHCP_CLIENT: u32 = 0x400;
const TRACE_F_DHCP_SERVER: u32 = 0x800;
const TRACE_F_PORT_SECURITY: u32 = 0x1000;

impl L2Trace {
    /// Decodes `skb->cb` as the L2 programs leave it; `None` if they left
    /// no record (another program, or cb of a frame they never saw).
    pub fn from_cb(cb: [u32; 5]) -> Option<Self> {
        if cb[0] & 0xffff_0000 != TRACE_MAGIC {
            return None;
        }
        let verdict = match cb[0] & 0xff {
            1 => L2Verdict::PassNotPort,
            2 => L2Verdict::PassOwnMac,
            3 => L2Verdict::PassNoVlan0,
            4 => L2Verdict::PassHostCopy,
            5 => L2Verdict::PassLinkLocal,
            6 => L2Verdict::Unicast,
            7 => L2Verdict::ToHost,
            8 => L2Verdict::Flood,
            9 => L2Verdict::FloodPass,
            10 => L2Verdict::DropVlan,
            11 => L2Verdict::DropHairpin,
            12 => L2Verdict::DropMtu,
            13 => L2Verdict::DropMalformed,
            14 => L2Verdict::DropPolicy,
            15 => L2Verdict::DropOther,
            16 => L2Verdict::PassNotHost,
            17 => L2Verdict::DhcpSteered,
            18 => L2Verdict::DropDhcpGuard,
            19 => L2Verdict::DropLocalOnly,
            20 => L2Verdict::DropNoResponder,
            21 => L2Verdict::DropSpoofMac,
            22 => L2Verdict::DropSpoofIpv4,
            23 => L2Verdict::DropSpoofIpv6,
            24 => L2Verdict::DropSpoofArp,
            25 => L2Verdict::DropSpoofNd,
            26 => L2Verdict::DropRaGuard,
            _ => return None,
        };
        let vid = (cb[1] != TRACE_NO_VID).then_some(cb[1] as u16);
        let flood = matches!(verdict, L2Verdict::Flood | L2Verdict::FloodPass);
        let to_port = matches!(
            verdict,
            L2Verdict::Unicast
                | L2Verdict::ToHost
                | L2Verdict::DropMtu
                | L2Verdict::DhcpSteered
                | L2Verdict::DropLocalOnly
                | L2Verdict::DropNoResponder
        );
        let delivered = matches!(verdict, L2Verdict::Unicast | L2Verdict::DhcpSteered);
        let f = cb[0];
        Some(L2Trace {
            verdict,
            vid,
            out_ifindex: (to_port && cb[2] != 0).then_some(cb[2]),
            egress_tci: (delivered && cb[3] & TRACE_TAGGED != 0).then_some(cb[3] as u16),
            flood_copies: if flood { cb[2] } else { 0 },
            flood_mtu_drops: if flood { cb[4] } else { 0 },
            flood_local_only_skips: if flood { cb[3] } else { 0 },
            from_local_only: f & TRACE_F_LOCAL_ONLY != 0,
            from_trusted: f & TRACE_F_TRUSTED != 0,
            dhcp: if f & TRACE_F_DHCP_SERVER != 0 {
                Some(DhcpFrame::Server)
            } else if f & TRACE_F_DHCP_CLIENT != 0 {
                Some(DhcpFrame::Client)
            } else {
                None
            },
            port_security: f & TRACE_F_PORT_SECURITY != 0,
        })
    }
}

// ---------------------------------------------------------------------------
// Raw layouts (bpf/lib/l2.h)

pub(crate) const MODE_ACCESS: u8 = 1;
pub(crate) const MODE_UNTAGGED: u8 = 2;
pub(crate) const MODE_TRUNK: u8 = 3;
pub(crate) const MODE_UPLINK: u8 = 4;
/// l2_port.flags: a veth whose peer is in another netns.
pub(crate) const PORT_F_PEER: u8 = 0x1;
/// l2_port.flags: netd's [`L2PortFlags::trusted`].
pub(crate) const PORT_F_TRUSTED: u8 = 0x2;
/// l2_port.flags: netd's [`L2PortFlags::local_only`].
pub(crate) const PORT_F_LOCAL_ONLY: u8 = 0x4;
/// The l2_port.flags netd sets (the rest the loader derives).
pub(crate) const PORT_F_POLICY: u8 = PORT_F_TRUSTED | PORT_F_LOCAL_ONLY;
/// l2_vlan.flags
pub(crate) const VLAN_F_TO_HOST: u32 = 0x1;
/// l2_fdb.flags
pub(crate) const FDB_F_STATIC: u32 = 0x1;

/// `struct l2_port`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RawL2Port {
    pub cn: u32,
    pub mode: u8,
    pub flags: u8,
    pub vid: u16,
    pub mtu: u32,
    pub mac: [u8; 6],
    pub _pad0: u16,
    pub _pad1: u32,
    pub allowed: [u64; 64],
}
// SAFETY: repr(C), integers and arrays only, explicit padding fields.
unsafe impl aya::Pod for RawL2Port {}
const _: () = assert!(std::mem::size_of::<RawL2Port>() == 536);

/// `struct l2_vlan_key` (also the key of the per-VLAN counters).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct RawVlanKey {
    pub cn: u32,
    pub vid: u16,
    pub _pad: u16,
}
// SAFETY: as above.
unsafe impl aya::Pod for RawVlanKey {}
const _: () = assert!(std::mem::size_of::<RawVlanKey>() == 8);

impl RawVlanKey {
    pub fn new(cn: u32, vid: u16) -> Self {
        RawVlanKey { cn, vid, _pad: 0 }
    }
}

/// `struct l2_vlan`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RawL2Vlan {
    pub flags: u32,
    pub count: u32,
    pub aging_ns: u64,
    pub members: [u32; L2_MAX_MEMBERS],
}
// SAFETY: as above.
unsafe impl aya::Pod for RawL2Vlan {}
const _: () = assert!(std::mem::size_of::<RawL2Vlan>() == 16 + 4 * L2_MAX_MEMBERS);

/// `struct l2_fdb_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RawFdbKey {
    pub cn: u32,
    pub vid: u16,
    pub mac: [u8; 6],
}
// SAFETY: as above (4 + 2 + 6 bytes, no padding).
unsafe impl aya::Pod for RawFdbKey {}
const _: () = assert!(std::mem::size_of::<RawFdbKey>() == 12);

/// `struct l2_fdb`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RawFdb {
    pub ifindex: u32,
    pub flags: u32,
    pub last_seen: u64,
}
// SAFETY: as above.
unsafe impl aya::Pod for RawFdb {}
const _: () = assert!(std::mem::size_of::<RawFdb>() == 16);

/// `struct l2_cn`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RawL2Cn {
    pub aging_ns: u64,
    pub uplink: u32,
    pub flags: u32,
}
// SAFETY: as above.
unsafe impl aya::Pod for RawL2Cn {}
const _: () = assert!(std::mem::size_of::<RawL2Cn>() == 16);

/// `struct l2_vlan_stats`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RawVlanStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub unicast_packets: u64,
    pub unicast_bytes: u64,
    pub flood_packets: u64,
    pub flood_bytes: u64,
    pub flood_copies: u64,
    pub to_host_packets: u64,
    pub from_host_packets: u64,
    pub drop_hairpin: u64,
    pub drop_mtu: u64,
    pub drop_other: u64,
    pub dhcp_steered: u64,
    pub drop_dhcp_guard: u64,
    pub drop_local_only: u64,
}
// SAFETY: repr(C), only u64 fields.
unsafe impl aya::Pod for RawVlanStats {}
// 12 counters until DHCP steering appended three.
const _: () = assert!(std::mem::size_of::<RawVlanStats>() == 15 * 8);

/// `struct l2_dhcp` (the value of furrow_l2_dhcp, keyed like the VLANs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RawL2Dhcp {
    pub responder: u32,
    pub flags: u32,
}
// SAFETY: repr(C), two u32.
unsafe impl aya::Pod for RawL2Dhcp {}
const _: () = assert!(std::mem::size_of::<RawL2Dhcp>() == 8);

impl RawL2Port {
    pub fn encode(port: &L2Port, flags: u8) -> Self {
        let mut raw = RawL2Port {
            cn: port.cluster_network,
            mode: 0,
            flags,
            vid: 0,
            mtu: port.mtu,
            mac: [0; 6],
            _pad0: 0,
            _pad1: 0,
            allowed: [0; 64],
        };
        match port.mode {
            L2Mode::Access { vid } => {
                raw.mode = MODE_ACCESS;
                raw.vid = vid;
            }
            L2Mode::Untagged => raw.mode = MODE_UNTAGGED,
            L2Mode::Trunk { allowed } => {
                raw.mode = MODE_TRUNK;
                raw.allowed = allowed.bits();
            }
            L2Mode::Uplink { own_mac } => {
                raw.mode = MODE_UPLINK;
                raw.mac = own_mac;
            }
        }
        raw
    }

    /// `None` for a mode this build does not know.
    pub fn decode(&self) -> Option<L2Port> {
        let mode = match self.mode {
            MODE_ACCESS => L2Mode::Access { vid: self.vid },
            MODE_UNTAGGED => L2Mode::Untagged,
            MODE_TRUNK => L2Mode::Trunk {
                allowed: VlanSet::from_bits(self.allowed),
            },
            MODE_UPLINK => L2Mode::Uplink { own_mac: self.mac },
            _ => return None,
        };
        Some(L2Port {
            cluster_network: self.cn,
            mode,
            mtu: self.mtu,
        })
    }

    pub fn is_uplink(&self) -> bool {
        self.mode == MODE_UPLINK
    }

    /// netd's flags (the loader's own bits left out).
    pub fn policy_flags(&self) -> L2PortFlags {
        L2PortFlags::from_bits(self.flags)
    }
}

/// Checks a port configuration before it reaches the datapath.
pub(crate) fn validate_port(port: &L2Port) -> Result<(), DatapathError> {
    let bad = |m: String| Err(DatapathError::InvalidL2(m));
    if !(68..=65535).contains(&port.mtu) {
        return bad(format!("MTU {}: expected 68 to 65535", port.mtu));
    }
    match port.mode {
        L2Mode::Access { vid } if vid == 0 || vid > VLAN_ID_MAX => bad(format!(
            "access VLAN {vid}: expected 1 to {VLAN_ID_MAX} (VLAN 0 is the untagged mode)"
        )),
        L2Mode::Uplink { own_mac } if own_mac[0] & 1 == 1 || own_mac == [0; 6] => bad(format!(
            "uplink MAC {}: expected a unicast address",
            fmt_mac(&own_mac)
        )),
        _ => Ok(()),
    }
}

pub(crate) fn validate_flags(port: &L2Port, flags: L2PortFlags) -> Result<(), DatapathError> {
    if matches!(port.mode, L2Mode::Uplink { .. }) && flags != L2PortFlags::NONE {
        return Err(DatapathError::InvalidL2(format!(
            "uplink with {flags:?}: an uplink is always trusted and never local-only"
        )));
    }
    Ok(())
}

pub(crate) fn validate_vid(vid: u16) -> Result<(), DatapathError> {
    if vid > VLAN_ID_MAX {
        return Err(DatapathError::InvalidL2(format!(
            "VLAN {vid}: expected 0 (untagged) to {VLAN_ID_MAX}"
        )));
    }
    Ok(())
}

pub(crate) fn fmt_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlan_set_ranges() {
        let s = VlanSet::from_ranges([3100..=3104, 200..=200, 1..=2]).unwrap();
        assert_eq!(s.len(), 8);
        assert!(s.contains(1) && s.contains(2) && s.contains(200) && s.contains(3104));
        assert!(!s.contains(0) && !s.contains(3) && !s.contains(3105) && !s.contains(4095));
        assert_eq!(s.ranges(), vec![1..=2, 200..=200, 3100..=3104]);
        assert_eq!(format!("{s:?}"), "VlanSet[1-2,200,3100-3104]");
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            vec![1, 2, 200, 3100, 3101, 3102, 3103, 3104]
        );
        let (hi, lo) = (10, 9);
        for bad in [0..=1, 4094..=4095, hi..=lo] {
            assert!(VlanSet::from_ranges([bad.clone()]).is_err(), "{bad:?}");
        }
        let mut s = VlanSet::new();
        assert!(s.is_empty());
        assert!(s.insert(4094).unwrap());
        assert!(!s.insert(4094).unwrap());
        assert!(s.insert(0).is_err());
        assert!(s.remove(4094) && !s.remove(4094));
        let full = VlanSet::from_ranges([1..=4094]).unwrap();
        assert_eq!(full.len(), 4094);
        assert_eq!(VlanSet::from_bits([u64::MAX; 64]), full);
    }

    #[test]
    fn port_roundtrip() {
        let ports = [
            L2Port {
                cluster_network: 7,
                mode: L2Mode::Access { vid: 100 },
                mtu: 1500,
            },
            L2Port {
                cluster_network: 7,
                mode: L2Mode::Untagged,
                mtu: 9000,
            },
            L2Port {
                cluster_network: 1,
                mode: L2Mode::Trunk {
                    allowed: VlanSet::from_ranges([100..=100, 200..=300]).unwrap(),
                },
                mtu: 1500,
            },
            L2Port {
                cluster_network: 2,
                mode: L2Mode::Uplink {
                    own_mac: [2, 0, 0, 0, 0, 1],
                },
                mtu: 1500,
            },
        ];
        for p in ports {
            validate_port(&p).unwrap();
            assert_eq!(RawL2Port::encode(&p, PORT_F_PEER).decode(), Some(p));
        }
        for f in [
            L2PortFlags::NONE,
            L2PortFlags::RESPONDER,
            L2PortFlags {
                trusted: true,
                local_only: false,
            },
            L2PortFlags {
                trusted: false,
                local_only: true,
            },
        ] {
            let raw = RawL2Port::encode(&ports[0], PORT_F_PEER | f.bits());
            assert_eq!(raw.policy_flags(), f);
            assert_eq!(raw.decode(), Some(ports[0]));
            assert_eq!(raw.flags & !PORT_F_POLICY, PORT_F_PEER);
            assert_eq!(validate_flags(&ports[3], f).is_ok(), f == L2PortFlags::NONE);
        }
        for bad in [
            L2Mode::Access { vid: 0 },
            L2Mode::Access { vid: 4095 },
            L2Mode::Uplink { own_mac: [0; 6] },
            L2Mode::Uplink {
                own_mac: [1, 0, 0, 0, 0, 1],
            },
        ] {
            let p = L2Port {
                cluster_network: 1,
                mode: bad,
                mtu: 1500,
            };
            assert!(validate_port(&p).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn trace_decoding() {
        assert_eq!(L2Trace::from_cb([0; 5]), None);
        let t = L2Trace::from_cb([TRACE_MAGIC | 6, 100, 7, TRACE_TAGGED | 0x2064, 0]).unwrap();
        assert_eq!(t.verdict, L2Verdict::Unicast);
        assert_eq!(t.vid, Some(100));
        assert_eq!(t.out_ifindex, Some(7));
        assert_eq!(t.egress_tci, Some(0x2064));
        let t = L2Trace::from_cb([TRACE_MAGIC | 8, 0, 3, 0, 1]).unwrap();
        assert_eq!((t.flood_copies, t.flood_mtu_drops), (3, 1));
        assert_eq!(
            L2Trace::from_cb([TRACE_MAGIC | 10, TRACE_NO_VID, 0, 0, 0])
                .unwrap()
                .vid,
            None
        );
        let t = L2Trace::from_cb([
            TRACE_MAGIC | TRACE_F_TRUSTED | TRACE_F_LOCAL_ONLY | 8,
            100,
            2,
            1,
            0,
        ])
        .unwrap();
        assert_eq!((t.verdict, t.flood_copies), (L2Verdict::Flood, 2));
        assert_eq!(t.flood_local_only_skips, 1);
        assert!(t.from_trusted && t.from_local_only && t.dhcp.is_none());
        let t = L2Trace::from_cb([
            TRACE_MAGIC | TRACE_F_DHCP_CLIENT | 17,
            100,
            9,
            TRACE_TAGGED | 100,
            0,
        ])
        .unwrap();
        assert_eq!(t.verdict, L2Verdict::DhcpSteered);
        assert_eq!((t.out_ifindex, t.egress_tci), (Some(9), Some(100)));
        assert_eq!(t.dhcp, Some(DhcpFrame::Client));
        assert_eq!(t.flood_local_only_skips, 0);
        let t = L2Trace::from_cb([TRACE_MAGIC | TRACE_F_DHCP_SERVER | 18, 5, 0, 0, 0]).unwrap();
        assert_eq!(
            (t.verdict, t.dhcp, t.out_ifindex),
            (L2Verdict::DropDhcpGuard, Some(DhcpFrame::Server), None)
        );
        for (v, want) in [
            (19, L2Verdict::DropLocalOnly),
            (20, L2Verdict::DropNoResponder),
        ] {
            let t = L2Trace::from_cb([TRACE_MAGIC | v, 5, 4, 0, 0]).unwrap();
            assert_eq!((t.verdict, t.out_ifindex), (want, Some(4)));
        }
        for (v, want) in [
            (21, L2Verdict::DropSpoofMac),
            (22, L2Verdict::DropSpoofIpv4),
            (23, L2Verdict::DropSpoofIpv6),
            (24, L2Verdict::DropSpoofArp),
            (25, L2Verdict::DropSpoofNd),
            (26, L2Verdict::DropRaGuard),
        ] {
            let t =
                L2Trace::from_cb([TRACE_MAGIC | TRACE_F_PORT_SECURITY | v, 5, 0, 0, 0]).unwrap();
            assert_eq!((t.verdict, t.out_ifindex), (want, None));
            assert!(t.port_security && t.verdict.is_port_security_drop());
        }
        assert_eq!(L2Trace::from_cb([TRACE_MAGIC | 27, 5, 4, 0, 0]), None);
    }
}
