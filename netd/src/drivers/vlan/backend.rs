//! The two ways a cluster network is carried on a node.
//!
//! eBPF: the uplink NIC and every port get Furrow's switch program; VLAN
//! membership (flood lists) and static FDB entries live in BPF maps.
//! Several NICs are active-backup: one carries traffic, netd moves to the
//! next when it loses carrier.
//!
//! Bridge (Harvester-style): `<cn>-br` with vlan_filtering, the NICs
//! enslaved to a bond `<cn>-bo` that is the bridge's uplink port. VM ports
//! are bridge ports: access = PVID + untagged, trunk = tagged VLANs. As in
//! Harvester, the untagged network is bridge VLAN 1 (the uplink's PVID).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use furrow_api::resource::{BondMode, Uplink};
use furrow_api::MacAddr;
use furrow_ebpf::{L2Mode, L2Port, VlanSet};

use super::{Cn, PortMode};
use crate::netlink::Link;
use crate::node::Node;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Ebpf,
    Bridge,
}

impl BackendKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            BackendKind::Ebpf => "ebpf",
            BackendKind::Bridge => "bridge",
        }
    }
}

/// An uplink as built on this node.
#[derive(Debug, Clone)]
pub enum Realized {
    Ebpf {
        /// (name, ifindex, MAC) of every NIC, in VlanConfig order.
        nics: Vec<(String, u32, MacAddr)>,
        active: usize,
        /// The active NIC carries the node's own addresses: untagged
        /// frames for the node must reach its stack.
        has_ip: bool,
    },
    Bridge {
        bridge: u32,
        bond: u32,
        bond_name: String,
    },
}

impl Realized {
    pub fn active_name(&self) -> String {
        match self {
            Realized::Ebpf { nics, active, .. } => nics[*active].0.clone(),
            Realized::Bridge { bond_name, .. } => bond_name.clone(),
        }
    }

    /// Where to send a frame for VLAN `vid` so it leaves on the wire, and
    /// whether it must carry a tag.
    pub fn announce_via(&self, vid: u16) -> (u32, Option<u16>) {
        let tag = if vid == 0 { None } else { Some(vid) };
        match self {
            Realized::Ebpf { nics, active, .. } => (nics[*active].1, tag),
            Realized::Bridge { bond, .. } => (*bond, tag),
        }
    }

    fn uplink_index(&self) -> u32 {
        match self {
            Realized::Ebpf { nics, active, .. } => nics[*active].1,
            Realized::Bridge { bond, .. } => *bond,
        }
    }
}

fn netlink_mode(m: BondMode) -> netlink_packet_route::link::BondMode {
    use netlink_packet_route::link::BondMode as N;
    match m {
        BondMode::ActiveBackup => N::ActiveBackup,
        BondMode::BalanceRr => N::BalanceRr,
        BondMode::BalanceXor => N::BalanceXor,
        BondMode::Broadcast => N::Broadcast,
        BondMode::Ieee8023ad => N::Ieee8023Ad,
        BondMode::BalanceTlb => N::BalanceTlb,
        BondMode::BalanceAlb => N::BalanceAlb,
    }
}

fn l2_mode(mode: &PortMode) -> Result<L2Mode, String> {
    Ok(match mode {
        PortMode::Access(v) => L2Mode::Access { vid: *v },
        PortMode::Untagged => L2Mode::Untagged,
        PortMode::Trunk(r) => L2Mode::Trunk {
            allowed: VlanSet::from_ranges(r.iter().map(|r| r.min..=r.max))
                .map_err(|e| e.to_string())?,
        },
    })
}

/// Builds (or re-applies) the uplink of a cluster network.
pub async fn realize_uplink(node: &Arc<Node>, cn: &mut Cn, uplink: &Uplink) -> Result<(), String> {
    let host = &node.host;
    let mut links: Vec<Link> = Vec::new();
    for n in &uplink.nics {
        match host.link_by_name(n).await.map_err(|e| e.to_string())? {
            Some(l) => links.push(l),
            None => {
                return Err(format!(
                    "uplink NIC {n} not found on node {} (VlanConfig {})",
                    node.cfg.node,
                    cn.vlan_config.clone().unwrap_or_default()
                ))
            }
        }
    }
    let mtu = uplink.mtu();
    let bond = uplink.bond();
    match cn.backend {
        BackendKind::Ebpf => {
            if links.len() > 1 && bond.mode != BondMode::ActiveBackup {
                return Err(format!(
                    "bond mode {:?} needs the kernel-bridge backend; the eBPF backend bonds NICs active-backup",
                    bond.mode
                ));
            }
            for l in &links {
                if l.mtu != mtu {
                    host.set_mtu(l.index, mtu)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                if !l.up {
                    host.set_up(l.index).await.map_err(|e| e.to_string())?;
                }
            }
            let nics: Vec<(String, u32, MacAddr)> = links
                .iter()
                .map(|l| (l.name.clone(), l.index, l.mac.unwrap_or_default()))
                .collect();
            // Keep the active NIC if it still has carrier.
            let prev_active = match &cn.realized {
                Some(Realized::Ebpf {
                    nics: pn, active, ..
                }) => Some(pn[*active].1),
                _ => None,
            };
            let active = links
                .iter()
                .position(|l| Some(l.index) == prev_active && l.carrier)
                .or_else(|| links.iter().position(|l| l.carrier))
                .unwrap_or(0);
            let has_ip = !host
                .addresses_v4(nics[active].1)
                .await
                .map_err(|e| e.to_string())?
                .is_empty();
            activate(node, cn, nics, active, has_ip).await
        }
        BackendKind::Bridge => {
            let br_name = format!("{}-br", cn.name);
            let bo_name = format!("{}-bo", cn.name);
            let br = match host
                .link_by_name(&br_name)
                .await
                .map_err(|e| e.to_string())?
            {
                Some(l) => {
                    if host
                        .bridge_vlan_filtering(l.index)
                        .await
                        .map_err(|e| e.to_string())?
                        != Some(true)
                    {
                        return Err(format!("{br_name} exists without VLAN filtering; remove it or use backend ebpf"));
                    }
                    l.index
                }
                None => host
                    .create_bridge(&br_name, true, Some(mtu))
                    .await
                    .map_err(|e| e.to_string())?,
            };
            let bo = match host
                .link_by_name(&bo_name)
                .await
                .map_err(|e| e.to_string())?
            {
                Some(l) => l.index,
                None => host
                    .create_bond(&bo_name, netlink_mode(bond.mode), bond.miimon, Some(mtu))
                    .await
                    .map_err(|e| e.to_string())?,
            };
            for l in &links {
                if l.controller != Some(bo) {
                    host.set_down(l.index).await.map_err(|e| e.to_string())?;
                    host.set_controller(l.index, Some(bo))
                        .await
                        .map_err(|e| e.to_string())?;
                }
                host.set_up(l.index).await.map_err(|e| e.to_string())?;
            }
            let bl = host
                .link_by_index(bo)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("bond vanished")?;
            if bl.controller != Some(br) {
                host.set_controller(bo, Some(br))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            host.set_mtu(bo, mtu).await.map_err(|e| e.to_string())?;
            host.set_mtu(br, mtu).await.map_err(|e| e.to_string())?;
            host.set_up(bo).await.map_err(|e| e.to_string())?;
            host.set_up(br).await.map_err(|e| e.to_string())?;
            cn.realized = Some(Realized::Bridge {
                bridge: br,
                bond: bo,
                bond_name: bo_name,
            });
            let vids: Vec<u16> = cn.members.keys().copied().collect();
            for vid in vids {
                push_vlan(node, cn, vid).await?;
            }
            Ok(())
        }
    }
}

/// Makes `nics[active]` the eBPF uplink, moving every VLAN to it.
pub async fn activate(
    node: &Arc<Node>,
    cn: &mut Cn,
    nics: Vec<(String, u32, MacAddr)>,
    active: usize,
    has_ip: bool,
) -> Result<(), String> {
    let (name, index, mac) = nics[active].clone();
    let old = match &cn.realized {
        Some(Realized::Ebpf {
            nics: pn,
            active: pa,
            ..
        }) => Some(pn[*pa].clone()),
        _ => None,
    };
    if let Some((oname, oindex, _)) = old.clone() {
        if oindex != index {
            // The datapath takes one uplink per cluster network.
            let _ = node
                .with_datapath(move |dp| dp.l2_detach_port(&oname, oindex))
                .await;
        }
    }
    let port = L2Port {
        cluster_network: cn.id,
        mode: L2Mode::Uplink { own_mac: mac.0 },
        mtu: cn.uplink_spec.as_ref().map(|u| u.mtu()).unwrap_or(1500),
    };
    let n = name.clone();
    node.with_datapath(move |dp| dp.l2_attach_port(&n, index, &port))
        .await
        .map_err(|e| format!("attaching the switch to uplink {name}: {e}"))?;
    cn.realized = Some(Realized::Ebpf {
        nics,
        active,
        has_ip,
    });
    let vids: Vec<u16> = cn.members.keys().copied().collect();
    for vid in vids {
        push_vlan(node, cn, vid).await?;
    }
    if old.is_some_and(|(_, oindex, _)| oindex != index) {
        tracing::info!(cluster_network = %cn.name, uplink = %name, "uplink moved to another NIC");
    }
    Ok(())
}

pub async fn teardown_uplink(node: &Arc<Node>, cn: &Cn, r: Realized) {
    match r {
        Realized::Ebpf { nics, active, .. } => {
            let vids: Vec<u16> = cn.members.keys().copied().collect();
            let id = cn.id;
            let (name, index, _) = nics[active].clone();
            let _ = node
                .with_datapath(move |dp| {
                    for vid in vids {
                        let _ = dp.l2_remove_vlan(id, vid);
                    }
                    dp.l2_detach_port(&name, index)
                })
                .await;
        }
        Realized::Bridge { bridge, bond, .. } => {
            let _ = crate::drivers::common::delete_host_link(bond).await;
            let _ = crate::drivers::common::delete_host_link(bridge).await;
        }
    }
    tracing::info!(cluster_network = %cn.name, "uplink removed");
}

pub async fn set_aging(node: &Arc<Node>, cn: &Cn, aging: Duration) -> Result<(), String> {
    match cn.backend {
        BackendKind::Ebpf => {
            let id = cn.id;
            node.with_datapath(move |dp| dp.l2_set_aging(id, aging))
                .await
                .map_err(|e| e.to_string())
        }
        BackendKind::Bridge => {
            let br = format!("{}-br", cn.name);
            node.host
                .set_bridge_ageing(&br, aging)
                .await
                .map_err(|e| e.to_string())
        }
    }
}

/// What a port may do beyond forwarding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortFlags {
    /// Its frames never leave the node (anycast DHCP responders).
    pub local_only: bool,
    /// It may send DHCP server replies (the DHCP guard lets them through).
    pub dhcp_trusted: bool,
}

/// Makes a veth host side a port of the switch.
#[allow(clippy::too_many_arguments)]
pub async fn attach_port(
    node: &Arc<Node>,
    cn: &Cn,
    ifname: &str,
    ifindex: u32,
    mode: &PortMode,
    mtu: u32,
    mac: Option<MacAddr>,
    flags: PortFlags,
) -> Result<(), String> {
    match cn.backend {
        BackendKind::Ebpf => {
            let port = L2Port {
                cluster_network: cn.id,
                mode: l2_mode(mode)?,
                mtu,
            };
            let (name, id, home) = (ifname.to_string(), cn.id, mode.home_vid());
            let fl = furrow_ebpf::L2PortFlags {
                trusted: flags.dhcp_trusted,
                local_only: flags.local_only,
            };
            node.with_datapath(move |dp| {
                dp.l2_attach_port_with_flags(&name, ifindex, &port, fl)?;
                if let (Some(m), Some(vid)) = (mac, home) {
                    dp.fdb_add_static(id, vid, m.0, ifindex)?;
                }
                Ok::<_, furrow_ebpf::DatapathError>(())
            })
            .await
            .map_err(|e| format!("datapath: {e}"))
        }
        BackendKind::Bridge => {
            let Some(Realized::Bridge { bridge, .. }) = &cn.realized else {
                return Err(format!(
                    "cluster network {} has no bridge on this node",
                    cn.name
                ));
            };
            let host = &node.host;
            let e = |e: crate::netlink::NetlinkError| e.to_string();
            host.set_controller(ifindex, Some(*bridge))
                .await
                .map_err(e)?;
            match mode {
                PortMode::Access(v) => {
                    host.bridge_vlan_add(ifindex, *v, true, true)
                        .await
                        .map_err(e)?;
                    if *v != 1 {
                        host.bridge_vlan_del(ifindex, 1).await.map_err(e)?;
                    }
                }
                PortMode::Untagged => {}
                PortMode::Trunk(ranges) => {
                    for r in ranges {
                        host.bridge_vlan_add_range(ifindex, r.min, r.max)
                            .await
                            .map_err(e)?;
                    }
                    if !ranges.iter().any(|r| r.min <= 1 && 1 <= r.max) {
                        host.bridge_vlan_del(ifindex, 1).await.map_err(e)?;
                    }
                }
            }
            if let (Some(m), Some(vid)) = (mac, mode.home_vid()) {
                host.bridge_fdb_add(ifindex, m, if vid == 0 { 1 } else { vid })
                    .await
                    .map_err(e)?;
            }
            Ok(())
        }
    }
}

pub async fn detach_port(
    node: &Arc<Node>,
    cn: &Cn,
    ifname: &str,
    ifindex: u32,
) -> Result<(), String> {
    match cn.backend {
        BackendKind::Ebpf => {
            let name = ifname.to_string();
            node.with_datapath(move |dp| dp.l2_detach_port(&name, ifindex))
                .await
                .map_err(|e| format!("datapath: {e}"))
        }
        BackendKind::Bridge => {
            if ifindex == 0 {
                return Ok(());
            }
            match node.host.set_controller(ifindex, None).await {
                Ok(()) => Ok(()),
                Err(e) if e.is_not_found() => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        }
    }
}

pub async fn add_member(
    node: &Arc<Node>,
    cn: &mut Cn,
    vid: u16,
    ifindex: u32,
) -> Result<(), String> {
    cn.members.entry(vid).or_default().insert(ifindex);
    push_vlan(node, cn, vid).await
}

pub async fn remove_member(node: &Arc<Node>, cn: &mut Cn, vid: u16, ifindex: u32) {
    if let Some(m) = cn.members.get_mut(&vid) {
        m.remove(&ifindex);
        if m.is_empty() {
            cn.members.remove(&vid);
        }
    }
    if let Err(e) = push_vlan(node, cn, vid).await {
        tracing::warn!(cluster_network = %cn.name, vid, error = %e, "updating VLAN membership");
    }
}

/// Steers the VLAN's DHCP client frames from VM ports to `responder`
/// (None: normal forwarding).
pub async fn set_dhcp_responder(
    node: &Arc<Node>,
    cn: &Cn,
    vid: u16,
    responder: Option<u32>,
) -> Result<(), String> {
    match cn.backend {
        BackendKind::Ebpf => {
            let id = cn.id;
            node.with_datapath(move |dp| dp.l2_set_dhcp_responder(id, vid, responder))
                .await
                .map_err(|e| format!("DHCP responder of VLAN {vid}: {e}"))
        }
        BackendKind::Bridge => Err(format!(
            "cluster network {}: node-local DHCP needs the eBPF backend (the kernel bridge cannot steer DHCP to the local responder)",
            cn.name
        )),
    }
}

/// Makes the datapath's view of one VLAN match `cn.members`.
async fn push_vlan(node: &Arc<Node>, cn: &Cn, vid: u16) -> Result<(), String> {
    let local: BTreeSet<u32> = cn.members.get(&vid).cloned().unwrap_or_default();
    match (&cn.realized, cn.backend) {
        (Some(r @ Realized::Ebpf { has_ip, .. }), BackendKind::Ebpf) => {
            let id = cn.id;
            let to_host = vid == 0 && *has_ip;
            let mut members: Vec<u32> = local.iter().copied().collect();
            members.push(r.uplink_index());
            let empty = local.is_empty();
            node.with_datapath(move |dp| {
                if empty {
                    dp.l2_remove_vlan(id, vid)
                } else {
                    dp.l2_set_vlan(id, vid, &members, to_host)
                }
            })
            .await
            .map_err(|e| format!("VLAN {vid}: {e}"))
        }
        (Some(Realized::Bridge { bond, .. }), BackendKind::Bridge) => {
            if vid == 0 || vid == 1 {
                // The uplink's PVID: always there, untagged.
                return Ok(());
            }
            let r = if local.is_empty() {
                node.host.bridge_vlan_del(*bond, vid).await
            } else {
                node.host.bridge_vlan_add(*bond, vid, false, false).await
            };
            r.map_err(|e| e.to_string())
        }
        _ => Ok(()),
    }
}

/// CHECK: is the port wired as its record says?
pub async fn check_port(
    node: &Arc<Node>,
    cn: &Cn,
    ifname: &str,
    link: &Link,
    mode: &PortMode,
) -> Result<(), String> {
    match cn.backend {
        BackendKind::Ebpf => {
            let (name, index, want) = (ifname.to_string(), link.index, l2_mode(mode)?);
            let (attached, entry) = node
                .with_datapath(move |dp| {
                    let a = dp.is_port_attached(&name)?;
                    let e = dp
                        .l2_ports()?
                        .into_iter()
                        .find(|(i, _)| *i == index)
                        .map(|(_, p)| p);
                    Ok::<_, furrow_ebpf::DatapathError>((a, e))
                })
                .await
                .map_err(|e| format!("datapath: {e}"))?;
            if !attached {
                return Err(format!("the switch program is not attached to {ifname}"));
            }
            match entry {
                Some(p) if p.mode == want && p.cluster_network == cn.id => Ok(()),
                Some(_) => Err(format!(
                    "the datapath has another VLAN configuration for {ifname}"
                )),
                None => Err(format!("{ifname} is not a port of the switch")),
            }
        }
        BackendKind::Bridge => match &cn.realized {
            Some(Realized::Bridge { bridge, .. }) if link.controller == Some(*bridge) => Ok(()),
            _ => Err(format!("{ifname} is not a port of {}-br", cn.name)),
        },
    }
}
