//! The management network across nodes: every node leases one subnet of
//! the cluster CIDR and publishes, in that lease, how it is reached (its
//! underlay address, and for vxlan its VTEP MAC). Every node turns the
//! other nodes' leases into kernel state:
//!
//! - vxlan (default): a VXLAN device per network (`furrow.<vni>`, no
//!   learning) holding this node's gateway address; per remote node an FDB
//!   entry (VTEP MAC → underlay address), a permanent neighbour entry
//!   (remote gateway → VTEP MAC) and a route `subnet via gateway onlink`.
//!   The same three things flannel keeps, so the familiar tools show them.
//! - host-gw: a route `subnet via <node's underlay address>` on the
//!   underlay link; nodes off this node's layer-2 segment are reported,
//!   not routed.
//!
//! Pod-to-pod packets keep their pod source either way (the masquerade
//! rule only matches destinations outside the cluster CIDR). Desired state
//! is recomputed from the store on every change and on a timer, and
//! anything netd added that is no longer wanted is removed: a node gone
//! past its grace period loses its routes when its lease is released.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use furrow_api::resource::MgmtBackend;
use furrow_api::wire::RemoteSubnet;
use furrow_api::MacAddr;
use ipnet::Ipv4Net;
use tokio::sync::Mutex;

use crate::netlink::overlay::{VxlanDevice, VxlanFdb};
use crate::netlink::{Netlink, NetlinkError, ROUTE_PROTOCOL};
use crate::node::Node;
use crate::subnets::{LeaseAttrs, SubnetLease};

use super::management::MgmtNet;

/// The link and address that carry this node's cross-node traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Underlay {
    pub index: u32,
    pub name: String,
    pub address: Ipv4Net,
    pub mtu: u32,
}

impl Underlay {
    pub fn ip(&self) -> Ipv4Addr {
        self.address.addr()
    }
}

/// Finds the underlay: the named interface, or the one the IPv4 default
/// route leaves through. `Ok(None)`: no default route (a lone node; its
/// pods reach only each other and nothing needs encapsulating).
pub async fn detect_underlay(
    host: &Netlink,
    wanted: Option<&str>,
) -> Result<Option<Underlay>, String> {
    let link = match wanted {
        Some(name) => match host.link_by_name(name).await.map_err(|e| e.to_string())? {
            Some(l) => l,
            None => return Err(format!("--underlay-interface {name}: no such interface")),
        },
        None => {
            let routes = host.routes_v4().await.map_err(|e| e.to_string())?;
            let Some(oif) = routes
                .iter()
                .filter(|r| r.prefix_len == 0 && r.gateway.is_some())
                .find_map(|r| r.oif)
            else {
                return Ok(None);
            };
            match host.link_by_index(oif).await.map_err(|e| e.to_string())? {
                Some(l) => l,
                None => return Ok(None),
            }
        }
    };
    let addrs = host
        .addresses_v4(link.index)
        .await
        .map_err(|e| e.to_string())?;
    let Some((ip, len)) = addrs.first().copied() else {
        return Err(format!(
            "underlay interface {} has no IPv4 address",
            link.name
        ));
    };
    Ok(Some(Underlay {
        index: link.index,
        name: link.name,
        address: Ipv4Net::new(ip, len).map_err(|e| e.to_string())?,
        mtu: link.mtu,
    }))
}

/// A locally administered MAC for this node's VTEP of one network, stable
/// across restarts (so peers' entries stay right while it restarts) and
/// distinct per node and network.
pub fn vtep_mac(node: &str, network: &str) -> MacAddr {
    // FNV-1a, spelled out: std's hasher may change between Rust releases,
    // and an upgraded netd must derive the same MAC.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes().chain([0u8]).chain(network.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    MacAddr([
        0x0a,
        0x58,
        b[0] ^ b[4],
        b[1] ^ b[5],
        b[2] ^ b[6],
        b[3] ^ b[7],
    ])
}

pub fn device_name(vni: u32) -> String {
    format!("furrow.{vni}")
}

/// What this node publishes in its lease of `net`.
pub fn lease_attrs(
    node: &str,
    network: &str,
    backend: MgmtBackend,
    underlay: Option<&Underlay>,
) -> LeaseAttrs {
    LeaseAttrs {
        public_ip: underlay.map(Underlay::ip),
        vtep_mac: match backend {
            MgmtBackend::Vxlan => Some(vtep_mac(node, network)),
            MgmtBackend::HostGw => None,
        },
    }
}

/// Pods' MTU on this node: the spec's if set, capped so a full-size pod
/// packet still fits the underlay once encapsulated; else the underlay's
/// less the overhead. Returns the MTU and, when capped, why.
pub fn pod_mtu(
    spec_mtu: Option<u32>,
    backend: MgmtBackend,
    underlay: Option<&Underlay>,
) -> (u32, Option<String>) {
    let Some(u) = underlay else {
        return (spec_mtu.unwrap_or(1500), None);
    };
    let ceiling = u.mtu.saturating_sub(backend.overhead());
    match spec_mtu {
        None => (ceiling, None),
        Some(m) if m > ceiling => (
            ceiling,
            Some(format!(
                "spec.mtu {m} does not fit underlay {} (MTU {}) with {} overhead {}: pods get {ceiling}",
                u.name,
                u.mtu,
                backend.as_str(),
                backend.overhead()
            )),
        ),
        Some(m) => (m, None),
    }
}

/// One network's cross-node state, as last built (for status and netctl).
#[derive(Debug, Clone, Default)]
pub struct OverlayView {
    pub device: Option<String>,
    pub remotes: Vec<RemoteSubnet>,
    pub problems: Vec<String>,
}

/// What one network wants in the kernel.
struct Wanted {
    routes: BTreeMap<Ipv4Net, RemoteSubnet>,
    problems: Vec<String>,
}

#[derive(Clone)]
pub struct Overlay {
    node: Arc<Node>,
    /// Serialises syncs: the store watch, the timer and reconciles all
    /// call in.
    views: Arc<Mutex<BTreeMap<String, OverlayView>>>,
}

fn kernel(e: NetlinkError) -> String {
    e.to_string()
}

impl Overlay {
    pub fn new(node: Arc<Node>) -> Self {
        Overlay {
            node,
            views: Arc::default(),
        }
    }

    fn alias(&self, network: &str) -> String {
        format!("furrow:{}:overlay:{network}", self.node.cfg.instance)
    }

    pub async fn view(&self, network: &str) -> OverlayView {
        self.views
            .lock()
            .await
            .get(network)
            .cloned()
            .unwrap_or_default()
    }

    /// Brings the kernel in line with the leases of every network in
    /// `nets` and removes what netd built for networks no longer there.
    /// Errors are per network and end up in its view's problems: one
    /// network's trouble never stops another's routes.
    pub async fn sync(&self, nets: &[Arc<MgmtNet>], underlay: Option<&Underlay>) {
        let mut views = self.views.lock().await;
        let host = &self.node.host;
        let mut keep_routes: BTreeSet<(Ipv4Addr, u8)> = BTreeSet::new();
        let mut keep_devices: BTreeSet<String> = BTreeSet::new();
        let mut next = BTreeMap::new();
        for net in nets {
            let mut view = OverlayView::default();
            match self.sync_network(net, underlay, &mut view).await {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(network = %net.name, error = %e, "cross-node routes incomplete");
                    view.problems.push(e);
                }
            }
            for r in &view.remotes {
                keep_routes.insert((r.subnet.network(), r.subnet.prefix_len()));
            }
            if let Some(d) = &view.device {
                keep_devices.insert(d.clone());
            }
            if view.problems.is_empty() {
                if let Some(old) = views.get(&net.name) {
                    if !old.problems.is_empty() {
                        tracing::info!(network = %net.name, "cross-node routes complete again");
                    }
                }
            }
            next.insert(net.name.clone(), view);
        }
        // Routes netd added for remote subnets are the only ones of its
        // protocol shorter than /32 (pods' are host routes).
        match host.routes_v4().await {
            Ok(routes) => {
                for r in routes {
                    if r.protocol != ROUTE_PROTOCOL || r.prefix_len >= 32 {
                        continue;
                    }
                    if keep_routes.contains(&(r.dst, r.prefix_len)) {
                        continue;
                    }
                    tracing::info!(subnet = %format!("{}/{}", r.dst, r.prefix_len), "removing route to a subnet no longer leased");
                    if let Err(e) = host.del_route_v4(r.dst, r.prefix_len).await {
                        tracing::warn!(error = %e, "removing a stale cross-node route");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing routes for cleanup"),
        }
        let prefix = format!("furrow:{}:overlay:", self.node.cfg.instance);
        if let Ok(links) = host.links().await {
            for l in links {
                let ours = l.alias.as_deref().is_some_and(|a| a.starts_with(&prefix));
                if ours && !keep_devices.contains(&l.name) {
                    tracing::info!(device = %l.name, "removing VXLAN device no longer used");
                    if let Err(e) = host.delete_link(l.index).await {
                        tracing::warn!(device = %l.name, error = %e, "removing VXLAN device");
                    }
                }
            }
        }
        *views = next;
    }

    fn wanted(&self, net: &MgmtNet, leases: Vec<SubnetLease>, underlay: &Underlay) -> Wanted {
        let me = &self.node.cfg.node;
        let cidr = net.spec.cluster_cidr;
        let prefix = net.spec.node_subnet_prefix_length;
        let mut w = Wanted {
            routes: BTreeMap::new(),
            problems: Vec::new(),
        };
        for l in leases {
            if l.node == *me || l.subnet.prefix_len() != prefix || !cidr.contains(&l.subnet) {
                continue;
            }
            let Some(ip) = l.attrs.public_ip else {
                w.problems.push(format!(
                    "node {} leases {} but published no underlay address",
                    l.node, l.subnet
                ));
                continue;
            };
            let remote = RemoteSubnet {
                node: l.node.clone(),
                subnet: l.subnet,
                node_ip: ip,
                vtep_mac: None,
            };
            match net.spec.backend {
                MgmtBackend::Vxlan => {
                    let Some(mac) = l.attrs.vtep_mac else {
                        w.problems.push(format!(
                            "node {} leases {} without a VTEP MAC (it does not run backend vxlan yet)",
                            l.node, l.subnet
                        ));
                        continue;
                    };
                    w.routes.insert(
                        l.subnet,
                        RemoteSubnet {
                            vtep_mac: Some(mac),
                            ..remote
                        },
                    );
                }
                MgmtBackend::HostGw => {
                    if !underlay.address.contains(&ip) {
                        w.problems.push(format!(
                            "node {} ({ip}) is not on this node's layer-2 segment {} ({}): host-gw cannot reach {}; use backend vxlan",
                            l.node, underlay.address.trunc(), underlay.name, l.subnet
                        ));
                        continue;
                    }
                    w.routes.insert(l.subnet, remote);
                }
            }
        }
        w
    }

    async fn sync_network(
        &self,
        net: &MgmtNet,
        underlay: Option<&Underlay>,
        view: &mut OverlayView,
    ) -> Result<(), String> {
        let Some(underlay) = underlay else {
            view.problems.push(
                "no underlay (no IPv4 default route and no --underlay-interface): pods reach only this node's pods".into(),
            );
            return Ok(());
        };
        let leases = crate::subnets::leases(self.node.store.as_ref(), &net.name)
            .await
            .map_err(|e| format!("reading subnet leases: {e}"))?;
        let wanted = self.wanted(net, leases, underlay);
        view.problems.extend(wanted.problems);
        let host = &self.node.host;
        match net.spec.backend {
            MgmtBackend::HostGw => {
                for r in wanted.routes.values() {
                    host.replace_route_v4(
                        r.subnet.network(),
                        r.subnet.prefix_len(),
                        r.node_ip,
                        underlay.index,
                        false,
                    )
                    .await
                    .map_err(kernel)?;
                    view.remotes.push(r.clone());
                }
            }
            MgmtBackend::Vxlan => {
                let want = VxlanDevice {
                    name: device_name(net.spec.vxlan_vni),
                    vni: net.spec.vxlan_vni,
                    local: underlay.ip(),
                    underlay: underlay.index,
                    port: net.spec.vxlan_port,
                    mac: vtep_mac(&self.node.cfg.node, &net.name),
                    mtu: underlay.mtu.saturating_sub(MgmtBackend::Vxlan.overhead()),
                };
                let index = self.ensure_device(net, &want).await?;
                view.device = Some(want.name.clone());
                host.add_address_v4(index, net.gateway(), 32, true)
                    .await
                    .map_err(kernel)?;
                host.set_up(index).await.map_err(kernel)?;
                let fdb: BTreeSet<VxlanFdb> = wanted
                    .routes
                    .values()
                    .filter_map(|r| {
                        r.vtep_mac.map(|mac| VxlanFdb {
                            mac,
                            dst: r.node_ip,
                        })
                    })
                    .collect();
                let neigh: BTreeMap<Ipv4Addr, MacAddr> = wanted
                    .routes
                    .values()
                    .filter_map(|r| {
                        r.vtep_mac
                            .map(|m| (crate::ipam::Pool::first_host(r.subnet), m))
                    })
                    .collect();
                for e in host.vxlan_fdb(index).await.map_err(kernel)? {
                    if !fdb.contains(&e) {
                        host.vxlan_fdb_del(index, e).await.map_err(kernel)?;
                    }
                }
                for n in host.neighbours_v4(index).await.map_err(kernel)? {
                    if neigh.get(&n.ip) != n.mac.as_ref() || !n.permanent {
                        host.neighbour_del(index, n.ip).await.map_err(kernel)?;
                    }
                }
                for e in &fdb {
                    host.vxlan_fdb_put(index, *e).await.map_err(kernel)?;
                }
                for (ip, mac) in &neigh {
                    host.neighbour_put(index, *ip, *mac).await.map_err(kernel)?;
                }
                for r in wanted.routes.values() {
                    let gw = crate::ipam::Pool::first_host(r.subnet);
                    host.replace_route_v4(
                        r.subnet.network(),
                        r.subnet.prefix_len(),
                        gw,
                        index,
                        true,
                    )
                    .await
                    .map_err(kernel)?;
                    view.remotes.push(r.clone());
                }
            }
        }
        Ok(())
    }

    /// The network's VXLAN device, created or recreated when its identity
    /// (VNI, endpoint, port, MAC) differs from what is wanted; an MTU
    /// change is applied in place.
    async fn ensure_device(&self, net: &MgmtNet, want: &VxlanDevice) -> Result<u32, String> {
        let host = &self.node.host;
        if let Some(found) = host.vxlan_by_name(&want.name).await.map_err(kernel)? {
            let same = found.dev.vni == want.vni
                && found.dev.local == want.local
                && found.dev.underlay == want.underlay
                && found.dev.port == want.port
                && found.dev.mac == want.mac
                && !found.learning;
            if same {
                if found.dev.mtu != want.mtu {
                    host.set_mtu(found.index, want.mtu).await.map_err(kernel)?;
                }
                return Ok(found.index);
            }
            tracing::info!(device = %want.name, "VXLAN device differs from what is wanted; recreating it");
            host.delete_link(found.index).await.map_err(kernel)?;
        } else if host
            .link_by_name(&want.name)
            .await
            .map_err(kernel)?
            .is_some()
        {
            return Err(format!(
                "a link named {} exists and is not a VXLAN device: remove it or change spec.vxlanVNI",
                want.name
            ));
        }
        let index = host
            .create_vxlan(want, &self.alias(&net.name))
            .await
            .map_err(kernel)?;
        tracing::info!(device = %want.name, vni = want.vni, local = %want.local, port = want.port, "VXLAN device created");
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn underlay(mtu: u32) -> Underlay {
        Underlay {
            index: 2,
            name: "eth0".into(),
            address: "198.18.0.1/24".parse().unwrap(),
            mtu,
        }
    }

    #[test]
    fn pod_mtu_leaves_room_for_encapsulation() {
        let u = underlay(1500);
        assert_eq!(pod_mtu(None, MgmtBackend::Vxlan, Some(&u)), (1450, None));
        assert_eq!(pod_mtu(None, MgmtBackend::HostGw, Some(&u)), (1500, None));
        assert_eq!(pod_mtu(Some(1400), MgmtBackend::Vxlan, Some(&u)).0, 1400);
        let (m, why) = pod_mtu(Some(1500), MgmtBackend::Vxlan, Some(&u));
        assert_eq!(m, 1450);
        assert!(why.unwrap().contains("spec.mtu 1500"));
        let jumbo = underlay(9000);
        assert_eq!(pod_mtu(None, MgmtBackend::Vxlan, Some(&jumbo)).0, 8950);
        assert_eq!(pod_mtu(None, MgmtBackend::Vxlan, None).0, 1500);
    }

    #[test]
    fn vtep_macs_are_stable_local_unicast_and_distinct() {
        let a = vtep_mac("node1", "mgmt");
        assert_eq!(a, vtep_mac("node1", "mgmt"));
        assert_ne!(a, vtep_mac("node2", "mgmt"));
        assert_ne!(a, vtep_mac("node1", "other"));
        // Locally administered, unicast.
        assert_eq!(a.0[0] & 0x03, 0x02);
    }

    #[test]
    fn device_names_fit_ifnamsiz() {
        assert!(device_name(furrow_api::resource::VNI_MAX).len() <= 15);
    }
}
