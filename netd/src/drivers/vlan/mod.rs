//! VLAN networks: layer-2 ports on cluster networks.
//!
//! A cluster network is a layer-2 domain spanning nodes. On this node it
//! has an uplink (from the VlanConfig that selects the node) and is carried
//! by one of two backends:
//! - `ebpf`: Furrow's 802.1Q switch in eBPF (works on any kernel with tc
//!   BPF; needs no 802.1Q devices and no bridge VLAN filtering);
//! - `bridge`: a Harvester-style kernel bridge `<cn>-br` with
//!   vlan_filtering and a bond `<cn>-bo` as its uplink port.
//!
//! VM ports are veth pairs like the management network's, without
//! addresses: the pod side (KubeVirt bridges it to the VM's tap) and the
//! host side, a port of the switch. A VlanInterface gives the node itself
//! an address on a VLAN the same way, through a veth pair whose switch end
//! is an access port.

pub mod announce;
mod backend;
pub mod portsec;
mod trace;
mod views;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use furrow_api::cni::{AttachmentSpec, CniResult, Interface, VlanAttachment};
use furrow_api::error::code;
use furrow_api::resource::{
    selects, Backend, ClusterNetwork, ClusterNetworkSpec, Uplink, VlanConfig, VlanInterface,
};
use furrow_api::wire::{
    AttachmentRequest, ClusterNetworkInfo, KernelFeatures, PortState, UplinkInfo,
};
use furrow_api::{ApiError, MacAddr};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use self::backend::{BackendKind, Realized};
use super::common::{
    create_port_veth, free_pod_ifname, kernel, open_netns, remove_leftover_link, spawn_removal,
    PortVeth,
};
use super::NetworkDriver;
use crate::netlink::Netlink;
use crate::node::Node;
use crate::ports::{self, AnyPort, VlanPortRecord};
use crate::resources::store_error;
use crate::store::{list_json, Compare, Op, Txn};

pub const KIND: &str = "vlan";

/// How a port joins its VLANs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortMode {
    Access(u16),
    Untagged,
    Trunk(Vec<furrow_api::cni::VlanRange>),
}

impl PortMode {
    fn of(vlan: u16, trunk: &[furrow_api::cni::VlanRange]) -> PortMode {
        if !trunk.is_empty() {
            PortMode::Trunk(trunk.to_vec())
        } else if vlan == 0 {
            PortMode::Untagged
        } else {
            PortMode::Access(vlan)
        }
    }

    fn vids(&self) -> Vec<u16> {
        match self {
            PortMode::Access(v) => vec![*v],
            PortMode::Untagged => vec![0],
            PortMode::Trunk(r) => r.iter().flat_map(|r| r.min..=r.max).collect(),
        }
    }

    /// The VLAN the port's own MAC lives on (trunks: learnt, not static).
    fn home_vid(&self) -> Option<u16> {
        match self {
            PortMode::Access(v) => Some(*v),
            PortMode::Untagged => Some(0),
            PortMode::Trunk(_) => None,
        }
    }
}

/// One cluster network on this node.
struct Cn {
    name: String,
    id: u32,
    spec: ClusterNetworkSpec,
    backend: BackendKind,
    backend_reason: String,
    vlan_config: Option<String>,
    uplink_spec: Option<Uplink>,
    realized: Option<Realized>,
    problem: Option<String>,
    /// VLAN → local member ports (VM ports and node interfaces), without
    /// the uplink.
    members: BTreeMap<u16, BTreeSet<u32>>,
}

impl Cn {
    fn ports(&self) -> usize {
        self.members
            .values()
            .flatten()
            .collect::<BTreeSet<_>>()
            .len()
    }
}

/// What a node port is for: the node's own address on a VLAN (a
/// VlanInterface), or a DHCP responder (netd reads its node end raw).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePortSpec {
    /// Unique per node: `vif:<VlanInterface>` or `dhcp:<IPPool>`.
    pub id: String,
    pub cluster_network: String,
    pub vid: u16,
    /// An address for the node end (VlanInterfaces); none for responders.
    pub address: Option<ipnet::IpNet>,
    /// The node end's MAC (stable across restarts, or shared by every
    /// node for an anycast responder).
    pub mac: MacAddr,
    pub mtu: Option<u32>,
    /// A DHCP responder: its frames stay on the node, it may answer DHCP,
    /// and the VLAN's DHCP client frames are steered to it.
    pub dhcp_responder: bool,
}

/// A node port as built.
#[derive(Debug, Clone)]
pub struct NodePort {
    pub spec: NodePortSpec,
    pub node_if: String,
    pub node_index: u32,
    pub switch_if: String,
    pub switch_index: u32,
}

#[derive(Default)]
struct State {
    features: KernelFeatures,
    nets: BTreeMap<String, Cn>,
    node_ports: BTreeMap<String, NodePort>,
    /// VMs' addresses as the DHCP service knows them (port security).
    book: portsec::AddressBook,
    /// Port security as last written, by host ifindex (None: off), with
    /// the (CNI network, VM MAC) it was computed for.
    psec_applied: BTreeMap<u32, (portsec::BookKey, Option<furrow_ebpf::PortSecurity>)>,
}

/// Cheap to clone; background tasks carry a clone.
#[derive(Clone)]
pub struct VlanDriver {
    node: Arc<Node>,
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CnId {
    id: u32,
}

fn spec_of(req: &AttachmentRequest) -> &VlanAttachment {
    match &req.attachment {
        AttachmentSpec::Vlan(v) => v,
        other => unreachable!("VLAN driver got {other:?}"),
    }
}

/// A locally administered unicast MAC derived from a name.
pub(crate) fn stable_mac(name: &str) -> MacAddr {
    let h = ports::host_ifname("mac", name, "");
    let hex = &h[2..];
    let mut m = [0u8; 6];
    m[0] = 0x02;
    for (i, b) in m.iter_mut().enumerate().skip(1) {
        *b = u8::from_str_radix(&hex[(i - 1) * 2..(i - 1) * 2 + 2], 16).unwrap_or(0);
    }
    MacAddr(m)
}

/// A switch port is not a host interface: without IPv6 the node never
/// sends its own router solicitations or MLD reports into VM VLANs.
fn no_ipv6(ifname: &str) {
    let path = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
    if let Err(e) = std::fs::write(&path, "1") {
        // Kernels without IPv6 have no such file: nothing to disable.
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(%ifname, error = %e, "disabling IPv6 on a switch port");
        }
    }
}

impl VlanDriver {
    pub fn new(node: Arc<Node>) -> Self {
        VlanDriver {
            node,
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    pub async fn set_features(&self, f: KernelFeatures) {
        self.state.lock().await.features = f;
    }

    pub async fn features(&self) -> KernelFeatures {
        self.state.lock().await.features.clone()
    }

    /// Every VLAN port record of this node.
    pub async fn records(&self) -> Result<Vec<VlanPortRecord>, ApiError> {
        let all = ports::list_all(self.node.store.as_ref(), &self.node.cfg.node)
            .await
            .map_err(store_error)?;
        Ok(all
            .into_iter()
            .filter_map(|p| match p {
                AnyPort::Vlan(r) => Some(r),
                _ => None,
            })
            .collect())
    }

    /// A small, stable number per cluster network: the datapath keys its
    /// tables by it. Allocated once through the store, never reused.
    async fn ensure_id(&self, name: &str) -> Result<u32, ApiError> {
        let store = self.node.store.as_ref();
        let prefix = "/furrow/clusternetwork-ids/";
        loop {
            let ids: Vec<(String, CnId, u64)> =
                list_json(store, prefix).await.map_err(store_error)?;
            if let Some((_, id, _)) = ids
                .iter()
                .find(|(k, _, _)| k.strip_prefix(prefix) == Some(name))
            {
                return Ok(id.id);
            }
            let next = ids.iter().map(|(_, i, _)| i.id).max().unwrap_or(0) + 1;
            let key = format!("{prefix}{name}");
            let out = store
                .txn(
                    Txn::new()
                        .when(Compare::Absent(key.clone()))
                        .then(Op::put_json(key, &CnId { id: next })),
                )
                .await
                .map_err(store_error)?;
            if out.succeeded {
                return Ok(next);
            }
        }
    }

    /// Brings cluster networks, uplinks and node interfaces in line with
    /// the resources. A network whose uplink cannot be built (missing NIC,
    /// unsupported backend) gets a `problem` and refuses new ports; it never
    /// disturbs the others, and an uplink already running stays up.
    pub async fn reconcile(
        &self,
        cns: Vec<ClusterNetwork>,
        vcs: Vec<VlanConfig>,
        vifs: Vec<VlanInterface>,
    ) -> Result<(), ApiError> {
        let labels = self.node.cfg.node_labels.clone();
        let node = self.node.cfg.node.clone();
        let mut ids = BTreeMap::new();
        for cn in &cns {
            ids.insert(
                cn.metadata.name.clone(),
                self.ensure_id(&cn.metadata.name).await?,
            );
        }
        let mut st = self.state.lock().await;
        let features = st.features.clone();
        let wanted: BTreeSet<String> = cns.iter().map(|c| c.metadata.name.clone()).collect();
        for cn in cns {
            let name = cn.metadata.name.clone();
            let id = ids[&name];
            let (want_backend, reason, backend_problem) = match cn.spec.backend {
                Backend::Ebpf => (BackendKind::Ebpf, "spec.backend: ebpf".to_string(), None),
                Backend::Bridge => {
                    if features.bridge_vlan_filtering.available {
                        (
                            BackendKind::Bridge,
                            "spec.backend: bridge".to_string(),
                            None,
                        )
                    } else {
                        (
                            BackendKind::Bridge,
                            "spec.backend: bridge".to_string(),
                            Some(format!(
                                "spec.backend is bridge, but this kernel's bridge has no VLAN filtering ({}); use backend ebpf or auto",
                                features.bridge_vlan_filtering.detail
                            )),
                        )
                    }
                }
                Backend::Auto => (
                    BackendKind::Ebpf,
                    "auto: the eBPF switch needs neither 802.1Q devices nor bridge VLAN filtering"
                        .to_string(),
                    None,
                ),
            };
            let selected: Vec<&VlanConfig> = vcs
                .iter()
                .filter(|v| {
                    v.spec.cluster_network == name && selects(&v.spec.node_selector, &labels)
                })
                .collect();
            let entry = st.nets.entry(name.clone()).or_insert_with(|| Cn {
                name: name.clone(),
                id,
                spec: cn.spec.clone(),
                backend: want_backend,
                backend_reason: reason.clone(),
                vlan_config: None,
                uplink_spec: None,
                realized: None,
                problem: None,
                members: BTreeMap::new(),
            });
            entry.spec = cn.spec.clone();
            entry.problem = None;
            if entry.backend != want_backend {
                if entry.ports() > 0 {
                    entry.problem = Some(format!(
                        "spec.backend changed to {}; it takes effect once no port uses the network on this node",
                        want_backend.as_str()
                    ));
                } else {
                    if let Some(r) = entry.realized.take() {
                        backend::teardown_uplink(&self.node, entry, r).await;
                    }
                    entry.backend = want_backend;
                    entry.backend_reason = reason;
                }
            } else {
                entry.backend_reason = reason;
            }
            if let Some(p) = backend_problem {
                entry.problem = Some(p);
                continue;
            }
            match selected.as_slice() {
                [] => {
                    entry.vlan_config = None;
                    entry.uplink_spec = None;
                    if entry.ports() == 0 {
                        if let Some(r) = entry.realized.take() {
                            backend::teardown_uplink(&self.node, entry, r).await;
                        }
                    }
                    entry.problem = Some(format!(
                        "no VlanConfig of cluster network {name} selects node {node}"
                    ));
                }
                [vc] => {
                    entry.vlan_config = Some(vc.metadata.name.clone());
                    entry.uplink_spec = Some(vc.spec.uplink.clone());
                    match backend::realize_uplink(&self.node, entry, &vc.spec.uplink).await {
                        Ok(()) => {}
                        Err(e) => {
                            tracing::error!(cluster_network = %name, error = %e, "uplink");
                            entry.problem = Some(e);
                        }
                    }
                    if entry.problem.is_none() {
                        let aging = Duration::from_secs(entry.spec.mac_aging_seconds as u64);
                        if let Err(e) = backend::set_aging(&self.node, entry, aging).await {
                            entry.problem = Some(e);
                        }
                    }
                }
                many => {
                    let names: Vec<&str> = many.iter().map(|v| v.metadata.name.as_str()).collect();
                    entry.problem = Some(format!(
                        "VlanConfigs {} all select node {node} on cluster network {name}; exactly one may",
                        names.join(", ")
                    ));
                }
            }
        }
        // Networks whose resource went away: released once unused.
        let gone: Vec<String> = st
            .nets
            .keys()
            .filter(|n| !wanted.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            let cn = st.nets.get_mut(&name).expect("listed");
            if cn.ports() == 0 {
                if let Some(r) = cn.realized.take() {
                    backend::teardown_uplink(&self.node, cn, r).await;
                }
                st.nets.remove(&name);
                tracing::info!(cluster_network = %name, "cluster network removed");
            } else {
                cn.problem = Some("the ClusterNetwork resource is gone; ports still use it".into());
            }
        }
        self.reconcile_vifs(&mut st, vifs).await;
        Ok(())
    }

    /// Node ports for the VlanInterfaces that select this node.
    async fn reconcile_vifs(&self, st: &mut State, vifs: Vec<VlanInterface>) {
        let node = self.node.cfg.node.clone();
        let labels = self.node.cfg.node_labels.clone();
        let mut want = BTreeMap::new();
        for v in vifs {
            if !selects(&v.spec.node_selector, &labels) {
                continue;
            }
            let id = format!("vif:{}", v.metadata.name);
            let (address, mac) = if v.spec.dhcp {
                // Each node its own lease: its own MAC.
                (None, stable_mac(&format!("{id}@{node}")))
            } else {
                match v.address_for(&node) {
                    Some(a) => (Some(a), stable_mac(&id)),
                    None => continue,
                }
            };
            want.insert(
                id.clone(),
                NodePortSpec {
                    mac,
                    id,
                    cluster_network: v.spec.cluster_network.clone(),
                    vid: v.spec.vlan,
                    address,
                    mtu: v.spec.mtu,
                    dhcp_responder: false,
                },
            );
        }
        let existing: Vec<String> = st
            .node_ports
            .keys()
            .filter(|k| k.starts_with("vif:"))
            .cloned()
            .collect();
        for id in existing {
            if want.get(&id) != Some(&st.node_ports[&id].spec) {
                self.remove_node_port_locked(st, &id).await;
            }
        }
        for (id, spec) in want {
            if st.node_ports.contains_key(&id) {
                continue;
            }
            if let Err(e) = self.ensure_node_port_locked(st, spec).await {
                tracing::error!(node_port = %id, error = %e, "building node interface");
            }
        }
    }

    /// Builds (or adopts) a node port; idempotent for an unchanged spec.
    pub async fn ensure_node_port(&self, spec: NodePortSpec) -> Result<NodePort, String> {
        let mut st = self.state.lock().await;
        self.ensure_node_port_locked(&mut st, spec).await
    }

    /// Removes node ports of kind `prefix` ("dhcp:") that no one ensured
    /// since this netd started (their owner went while netd was down), and
    /// any DHCP steering that points at a port that is not live.
    pub async fn prune_node_ports(&self, prefix: &str) {
        let st = self.state.lock().await;
        let alias_prefix = format!("furrow:{}:node:{prefix}", self.node.cfg.instance);
        let live: BTreeSet<String> = st
            .node_ports
            .values()
            .flat_map(|v| [v.switch_if.clone(), v.node_if.clone()])
            .collect();
        if let Ok(links) = self.node.host.links().await {
            for l in links {
                if l.alias
                    .as_deref()
                    .is_some_and(|a| a.starts_with(&alias_prefix))
                    && !live.contains(&l.name)
                {
                    tracing::info!(link = %l.name, alias = ?l.alias, "removing a node port no one owns any more");
                    let _ = crate::drivers::common::delete_host_link(l.index).await;
                }
            }
        }
        let responders: BTreeSet<u32> = st
            .node_ports
            .values()
            .filter(|p| p.spec.dhcp_responder)
            .map(|p| p.switch_index)
            .collect();
        let _ = self
            .node
            .with_datapath(move |dp| -> Result<(), furrow_ebpf::DatapathError> {
                for r in dp.l2_dhcp_responders()? {
                    if !responders.contains(&r.ifindex) {
                        dp.l2_set_dhcp_responder(r.cluster_network, r.vid, None)?;
                    }
                }
                Ok(())
            })
            .await;
    }

    /// The node port `id`, if built.
    pub async fn node_port(&self, id: &str) -> Option<NodePort> {
        self.state.lock().await.node_ports.get(id).cloned()
    }

    pub async fn remove_node_port(&self, id: &str) {
        let mut st = self.state.lock().await;
        self.remove_node_port_locked(&mut st, id).await;
    }

    async fn remove_node_port_locked(&self, st: &mut State, id: &str) {
        let Some(p) = st.node_ports.remove(id) else {
            return;
        };
        if let Some(cn) = st.nets.get_mut(&p.spec.cluster_network) {
            if p.spec.dhcp_responder {
                let _ = backend::set_dhcp_responder(&self.node, cn, p.spec.vid, None).await;
            }
            backend::remove_member(&self.node, cn, p.spec.vid, p.switch_index).await;
            let _ = backend::detach_port(&self.node, cn, &p.switch_if, p.switch_index).await;
        }
        if let Ok(Some(l)) = self.node.host.link_by_name(&p.switch_if).await {
            let _ = crate::drivers::common::delete_host_link(l.index).await;
        }
        tracing::info!(node_port = %id, "node port removed");
    }

    async fn ensure_node_port_locked(
        &self,
        st: &mut State,
        spec: NodePortSpec,
    ) -> Result<NodePort, String> {
        if let Some(p) = st.node_ports.get(&spec.id) {
            if p.spec == spec {
                return Ok(p.clone());
            }
            let id = spec.id.clone();
            self.remove_node_port_locked(st, &id).await;
        }
        let Some(cn) = st.nets.get_mut(&spec.cluster_network) else {
            return Err(format!(
                "no cluster network {} on this node",
                spec.cluster_network
            ));
        };
        if cn.realized.is_none() {
            return Err(format!(
                "cluster network {} has no uplink on this node",
                cn.name
            ));
        }
        let p = self.build_node_port(cn, spec).await?;
        tracing::info!(node_port = %p.spec.id, node_if = %p.node_if, address = ?p.spec.address, vlan = p.spec.vid, "node port ready");
        st.node_ports.insert(p.spec.id.clone(), p.clone());
        Ok(p)
    }

    async fn build_node_port(&self, cn: &mut Cn, spec: NodePortSpec) -> Result<NodePort, String> {
        let host = &self.node.host;
        let h = ports::host_ifname("nodeport", &spec.id, "");
        let switch_if = h.clone();
        let node_if = format!("fv{}", &h[2..]);
        let mtu = spec
            .mtu
            .unwrap_or_else(|| cn.uplink_spec.as_ref().map(|u| u.mtu()).unwrap_or(1500));
        let alias = format!("furrow:{}:node:{}", self.node.cfg.instance, spec.id);
        // Adopt the pair if a previous netd built it (a restart must not
        // change the node's MAC on the VLAN under its neighbours' feet).
        let existing = (
            host.link_by_name(&switch_if)
                .await
                .map_err(|e| e.to_string())?,
            host.link_by_name(&node_if)
                .await
                .map_err(|e| e.to_string())?,
        );
        let (si, ni) = match existing {
            (Some(s), Some(n))
                if s.alias.as_deref() == Some(alias.as_str())
                    && n.alias.as_deref() == Some(alias.as_str()) =>
            {
                if n.mtu != mtu {
                    host.set_mtu(n.index, mtu)
                        .await
                        .map_err(|e| e.to_string())?;
                    host.set_mtu(s.index, mtu)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                if n.mac != Some(spec.mac) {
                    host.set_mac(n.index, spec.mac)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                (s.index, n.index)
            }
            (s, n) => {
                for l in [s, n].into_iter().flatten() {
                    let _ = crate::drivers::common::delete_host_link(l.index).await;
                }
                let (si, ni) = host
                    .create_veth_pair(&switch_if, &node_if, mtu)
                    .await
                    .map_err(|e| e.to_string())?;
                host.set_alias(si, &alias)
                    .await
                    .map_err(|e| e.to_string())?;
                host.set_alias(ni, &alias)
                    .await
                    .map_err(|e| e.to_string())?;
                host.set_mac(ni, spec.mac)
                    .await
                    .map_err(|e| e.to_string())?;
                (si, ni)
            }
        };
        no_ipv6(&switch_if);
        if spec.address.is_none() {
            // A responder is read raw; the node's stack stays out of it.
            no_ipv6(&node_if);
        }
        match spec.address {
            Some(ipnet::IpNet::V4(a)) => host
                .add_address_v4(ni, a.addr(), a.prefix_len(), false)
                .await
                .map_err(|e| e.to_string())?,
            Some(ipnet::IpNet::V6(_)) => {
                return Err("IPv6 node interface addresses are not supported yet".into())
            }
            None => {}
        }
        host.set_up(ni).await.map_err(|e| e.to_string())?;
        host.set_up(si).await.map_err(|e| e.to_string())?;
        let mode = if spec.vid == 0 {
            PortMode::Untagged
        } else {
            PortMode::Access(spec.vid)
        };
        let flags = backend::PortFlags {
            local_only: spec.dhcp_responder,
            dhcp_trusted: spec.dhcp_responder,
        };
        backend::attach_port(
            &self.node,
            cn,
            &switch_if,
            si,
            &mode,
            mtu,
            Some(spec.mac),
            flags,
        )
        .await?;
        backend::add_member(&self.node, cn, spec.vid, si).await?;
        if spec.dhcp_responder {
            backend::set_dhcp_responder(&self.node, cn, spec.vid, Some(si)).await?;
        }
        // Whoever uses the port next sends at once (a DHCP client's first
        // DISCOVER): it must not go into a link not yet running.
        if !host.wait_oper_up(ni, Duration::from_secs(2)).await {
            tracing::warn!(node_port = %spec.id, "node interface not operationally up after 2 s");
        }
        Ok(NodePort {
            spec,
            node_if,
            node_index: ni,
            switch_if,
            switch_index: si,
        })
    }

    pub async fn infos(&self) -> Result<Vec<ClusterNetworkInfo>, ApiError> {
        let recs = self.records().await?;
        let st = self.state.lock().await;
        Ok(st
            .nets
            .values()
            .map(|cn| ClusterNetworkInfo {
                name: cn.name.clone(),
                backend: cn.backend.as_str().into(),
                backend_reason: cn.backend_reason.clone(),
                vlan_config: cn.vlan_config.clone(),
                uplink: cn.uplink_spec.as_ref().map(|u| UplinkInfo {
                    nics: u.nics.clone(),
                    active: cn.realized.as_ref().map(|r| r.active_name()),
                    mtu: u.mtu(),
                    bond_mode: serde_json::to_value(u.bond().mode)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default(),
                }),
                problem: cn.problem.clone(),
                vlans: cn
                    .members
                    .iter()
                    .filter(|(_, m)| !m.is_empty())
                    .map(|(v, _)| *v)
                    .collect(),
                ports: recs.iter().filter(|r| r.cluster_network == cn.name).count() as u32,
            })
            .collect())
    }

    /// Checks an attachment against its cluster network on this node.
    async fn usable(&self, att: &VlanAttachment) -> Result<(u32, Option<u32>), ApiError> {
        let st = self.state.lock().await;
        let Some(cn) = st.nets.get(&att.cluster_network) else {
            let known: Vec<&String> = st.nets.keys().collect();
            return Err(ApiError::new(
                code::INVALID_CONFIG,
                format!(
                    "clusterNetwork: no ClusterNetwork named {:?} exists on node {} (known: {})",
                    att.cluster_network,
                    self.node.cfg.node,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
            ));
        };
        if let Some(p) = &cn.problem {
            return Err(ApiError::new(
                code::INVALID_CONFIG,
                format!(
                    "cluster network {} cannot take ports on node {}: {p}",
                    cn.name, self.node.cfg.node
                ),
            ));
        }
        let uplink_mtu = cn.uplink_spec.as_ref().map(|u| u.mtu()).unwrap_or(1500);
        if let Some(m) = att.mtu {
            if m > uplink_mtu {
                return Err(ApiError::invalid_field(
                    "mtu",
                    format!(
                        "{m} exceeds the MTU {uplink_mtu} of cluster network {}'s uplink; frames that large could not leave the node",
                        cn.name
                    ),
                ));
            }
        }
        Ok((uplink_mtu, att.mtu))
    }

    fn port_key(&self, req: &AttachmentRequest) -> String {
        crate::store::keys::port(
            &self.node.cfg.node,
            &req.network_name,
            &req.container_id,
            &req.ifname,
        )
    }

    async fn record(&self, key: &str) -> Result<Option<VlanPortRecord>, ApiError> {
        match self.node.store.get(key).await.map_err(store_error)? {
            None => Ok(None),
            Some(kv) => match AnyPort::decode(&kv).map_err(store_error)? {
                AnyPort::Vlan(r) => Ok(Some(r)),
                _ => Err(ApiError::new(
                    code::CONFLICT,
                    "this attachment exists on another kind of network".to_string(),
                )),
            },
        }
    }

    async fn put_record(&self, rec: &VlanPortRecord) -> Result<(), ApiError> {
        self.node
            .store
            .txn(Txn::new().then(Op::put_json(rec.key(), rec)))
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn forget(&self, rec: &VlanPortRecord) -> Result<(), ApiError> {
        self.node
            .store
            .txn(Txn::new().then(Op::Delete(rec.key())))
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// Creates the veth pair and makes the host side a switch port.
    async fn build(
        &self,
        rec: &VlanPortRecord,
        netns: &File,
        netns_path: &str,
    ) -> Result<(u32, MacAddr), ApiError> {
        let host = &self.node.host;
        let key = rec.key();
        let hl = create_port_veth(
            &self.node,
            &PortVeth {
                key: &key,
                host_ifname: &rec.host_ifname,
                ifname: &rec.ifname,
                mtu: rec.mtu,
                mac: rec.mac,
            },
            netns,
            netns_path,
        )
        .await?;
        no_ipv6(&rec.host_ifname);
        let ns = Netlink::in_netns(std::path::Path::new(netns_path))
            .await
            .map_err(kernel)?;
        let pl = ns
            .link_by_name(&rec.ifname)
            .await
            .map_err(kernel)?
            .ok_or_else(|| {
                ApiError::internal(format!("{} did not appear in {netns_path}", rec.ifname))
            })?;
        ns.set_up(pl.index).await.map_err(kernel)?;
        let pod_mac = pl
            .mac
            .ok_or_else(|| ApiError::internal("pod link has no MAC"))?;
        let mode = PortMode::of(rec.vlan, &rec.trunk);
        {
            let mut st = self.state.lock().await;
            let cn = st
                .nets
                .get_mut(&rec.cluster_network)
                .ok_or_else(|| ApiError::internal("cluster network vanished during ADD"))?;
            backend::attach_port(
                &self.node,
                cn,
                &rec.host_ifname,
                hl.index,
                &mode,
                rec.mtu,
                Some(pod_mac),
                backend::PortFlags {
                    local_only: false,
                    dhcp_trusted: rec.dhcp_trusted,
                },
            )
            .await
            .map_err(|e| ApiError::new(code::INTERNAL, e))?;
            for vid in mode.vids() {
                backend::add_member(&self.node, cn, vid, hl.index)
                    .await
                    .map_err(|e| ApiError::new(code::CAPACITY, e))?;
            }
            self.announce(cn, pod_mac, &mode);
        }
        // Port security before the link comes up: the VM's first frame
        // is already checked.
        let psec = {
            let st = self.state.lock().await;
            st.nets
                .get(&rec.cluster_network)
                .filter(|cn| cn.backend == backend::BackendKind::Ebpf)
                .map(|_| portsec::desired(rec, pod_mac, &st.book))
        };
        if let Some(ps) = psec {
            let key = (rec.network_name.clone(), pod_mac);
            self.write_port_security(hl.index, key, ps)
                .await
                .map_err(ApiError::internal)?;
        }
        host.set_up(hl.index).await.map_err(kernel)?;
        Ok((hl.index, pod_mac))
    }

    /// Sends RARP announcements from a VM's MAC out of the uplink, now and
    /// twice more shortly after (as QEMU does), in the background.
    fn announce(&self, cn: &Cn, mac: MacAddr, mode: &PortMode) {
        let (Some(r), Some(vid)) = (&cn.realized, mode.home_vid()) else {
            return;
        };
        let (ifindex, tag) = r.announce_via(vid);
        let frame = announce::rarp_frame(mac, tag);
        self.node.background.spawn(async move {
            for delay in [0u64, 100, 300] {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                let f = frame.clone();
                let r =
                    tokio::task::spawn_blocking(move || announce::send_frames(ifindex, &[f])).await;
                if let Ok(Err(e)) = r {
                    tracing::warn!(%mac, error = %e, "sending the MAC announcement");
                    return;
                }
            }
        });
    }

    /// The fast half of removing a port: out of its VLANs, off the switch,
    /// link down, CNI_IFNAME freed (see the management driver).
    async fn unplug(&self, rec: &VlanPortRecord) -> Result<(), ApiError> {
        let host = &self.node.host;
        let link = host.link_by_name(&rec.host_ifname).await.map_err(kernel)?;
        let index = link
            .as_ref()
            .map(|l| l.index)
            .or(rec.host_ifindex)
            .unwrap_or(0);
        let mut errors = Vec::new();
        {
            let mut st = self.state.lock().await;
            if let Some(cn) = st.nets.get_mut(&rec.cluster_network) {
                for vid in PortMode::of(rec.vlan, &rec.trunk).vids() {
                    backend::remove_member(&self.node, cn, vid, index).await;
                }
                if let Err(e) = backend::detach_port(&self.node, cn, &rec.host_ifname, index).await
                {
                    errors.push(e);
                }
            }
        }
        self.forget_port_security(index).await;
        if let Some(l) = link.filter(|l| l.up) {
            if let Err(e) = host.set_down(l.index).await {
                if !e.is_not_found() {
                    errors.push(e.to_string());
                }
            }
        }
        if let Err(e) =
            free_pod_ifname(rec.netns.as_deref(), &rec.ifname, rec.mac, &rec.host_ifname).await
        {
            errors.push(e);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::internal(format!(
                "removing port {}/{}: {}",
                rec.container_id,
                rec.ifname,
                errors.join("; ")
            )))
        }
    }

    async fn remove_link(&self, rec: &VlanPortRecord) -> Result<(), ApiError> {
        if let Some(l) = self
            .node
            .host
            .link_by_name(&rec.host_ifname)
            .await
            .map_err(kernel)?
        {
            crate::drivers::common::delete_host_link(l.index)
                .await
                .map_err(kernel)?;
        }
        Ok(())
    }

    /// As the management driver: unplug now, remove the link in the
    /// background under the attachment's lock, then forget the record.
    async fn delete_port(
        &self,
        mut rec: VlanPortRecord,
        guard: crate::locks::KeyedGuard,
    ) -> Result<(), ApiError> {
        if rec.state == PortState::Deleting {
            self.remove_link(&rec).await?;
            return self.forget(&rec).await;
        }
        self.unplug(&rec).await?;
        rec.state = PortState::Deleting;
        self.put_record(&rec).await?;
        let me = self.clone();
        let key = rec.key();
        spawn_removal(&self.node, guard, key, move || {
            let (me, rec) = (me.clone(), rec.clone());
            async move {
                me.remove_link(&rec).await?;
                me.forget(&rec).await
            }
        });
        Ok(())
    }
    /// Start-up: re-adopt surviving VLAN ports (their programs and table
    /// entries are re-installed), finish removals and ADDs a crash cut
    /// short, mark ports whose links vanished as lost, and remove links
    /// of ours that no record explains.
    pub async fn reconcile_ports(&self) -> Result<(), ApiError> {
        let host = &self.node.host;
        let links = host.links().await.map_err(kernel)?;
        let mut keep = BTreeSet::new();
        for mut rec in self.records().await? {
            let key = rec.key();
            let _g = self.node.port_locks.lock(&key).await;
            match rec.state {
                PortState::Pending | PortState::Deleting => {
                    tracing::info!(port = %key, state = ?rec.state, "finishing what a restart cut short: removing the port");
                    self.unplug(&rec).await?;
                    self.remove_link(&rec).await?;
                    self.forget(&rec).await?;
                }
                PortState::Ready | PortState::Lost => {
                    let alias = ports::link_alias(&self.node.cfg.instance, &key);
                    let link = links.iter().find(|l| {
                        l.name == rec.host_ifname && l.alias.as_deref() == Some(alias.as_str())
                    });
                    match link {
                        Some(l) => {
                            let mode = PortMode::of(rec.vlan, &rec.trunk);
                            let mut st = self.state.lock().await;
                            if let Some(cn) = st.nets.get_mut(&rec.cluster_network) {
                                if cn.realized.is_some() {
                                    backend::attach_port(
                                        &self.node,
                                        cn,
                                        &rec.host_ifname,
                                        l.index,
                                        &mode,
                                        rec.mtu,
                                        rec.mac,
                                        backend::PortFlags {
                                            local_only: false,
                                            dhcp_trusted: rec.dhcp_trusted,
                                        },
                                    )
                                    .await
                                    .map_err(ApiError::internal)?;
                                    for vid in mode.vids() {
                                        backend::add_member(&self.node, cn, vid, l.index)
                                            .await
                                            .map_err(ApiError::internal)?;
                                    }
                                } else {
                                    tracing::warn!(port = %key, cluster_network = %rec.cluster_network, "port kept, but its cluster network has no uplink now");
                                }
                            }
                            drop(st);
                            keep.insert(rec.host_ifname.clone());
                            if rec.state == PortState::Lost || rec.host_ifindex != Some(l.index) {
                                rec.state = PortState::Ready;
                                rec.host_ifindex = Some(l.index);
                                self.put_record(&rec).await?;
                            }
                        }
                        None => {
                            if rec.state != PortState::Lost {
                                tracing::warn!(port = %key, "host link is gone (pod sandbox deleted?); port marked lost until DEL or GC");
                                self.unplug(&rec).await?;
                                rec.state = PortState::Lost;
                                self.put_record(&rec).await?;
                            }
                        }
                    }
                }
            }
        }
        // Orphaned port links are the daemon's to remove. Node interfaces
        // were adopted or rebuilt by the network reconcile that ran before
        // this; any other left by a VlanInterface deleted while netd was
        // down goes now.
        // (DHCP responders are the DHCP service's to adopt or remove.)
        let vif_prefix = format!("furrow:{}:node:vif:", self.node.cfg.instance);
        let live: BTreeSet<String> = {
            let st = self.state.lock().await;
            st.node_ports
                .values()
                .flat_map(|v| [v.switch_if.clone(), v.node_if.clone()])
                .collect()
        };
        for l in &links {
            if l.alias
                .as_deref()
                .is_some_and(|a| a.starts_with(&vif_prefix))
                && !live.contains(&l.name)
            {
                tracing::info!(link = %l.name, "removing the interface of a deleted VlanInterface");
                let _ = crate::drivers::common::delete_host_link(l.index).await;
            }
        }
        // Switch entries of ports whose devices are gone: the device went
        // with its filters, the map entries stay until detached.
        let mut kept: BTreeSet<u32> = links
            .iter()
            .filter(|l| keep.contains(&l.name))
            .map(|l| l.index)
            .collect();
        {
            let st = self.state.lock().await;
            for cn in st.nets.values() {
                if let Some(r) = &cn.realized {
                    kept.insert(r.announce_via(0).0);
                }
            }
            kept.extend(st.node_ports.values().map(|v| v.switch_index));
        }
        let stale = self
            .node
            .with_datapath(move |dp| -> Result<u32, furrow_ebpf::DatapathError> {
                let mut n = 0;
                for (idx, _) in dp.l2_ports()? {
                    if !kept.contains(&idx) {
                        // The name only matters for a live device; none has it.
                        dp.l2_detach_port("fwstale", idx)?;
                        n += 1;
                    }
                }
                Ok(n)
            })
            .await
            .map_err(|e| ApiError::internal(format!("datapath: {e}")))?;
        if stale > 0 {
            tracing::info!(stale, "removed switch entries of vanished ports");
        }
        // Port security as the records and what is known now say (the
        // DHCP service's address book follows and refines it).
        let recs = self.records().await?;
        self.sync_port_security(&recs).await;
        Ok(())
    }

    /// Per-VLAN counters of the eBPF switch, labelled with the cluster
    /// network's name: (network, vid, stats).
    pub async fn vlan_stats(&self) -> Vec<(String, u16, furrow_ebpf::VlanStats)> {
        let names: BTreeMap<u32, String> = {
            let st = self.state.lock().await;
            st.nets.values().map(|c| (c.id, c.name.clone())).collect()
        };
        let stats = self
            .node
            .with_datapath(|dp| dp.vlan_stats())
            .await
            .unwrap_or_default();
        stats
            .into_iter()
            .filter_map(|(cn, vid, s)| names.get(&cn).map(|n| (n.clone(), vid, s)))
            .collect()
    }

    /// Drops dynamic FDB entries past their network's aging.
    pub async fn expire_fdb(&self) {
        match self.node.with_datapath(|dp| dp.fdb_expire()).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(expired = n, "FDB entries aged out"),
            Err(e) => tracing::warn!(error = %e, "expiring FDB entries"),
        }
        // The FDB is an LRU table: a flood of MACs could evict a VM's
        // static entry. Put every one back (idempotent, a map update each).
        let Ok(recs) = self.records().await else {
            return;
        };
        let st = self.state.lock().await;
        let mut statics = Vec::new();
        for r in recs.iter().filter(|r| r.state == PortState::Ready) {
            let (Some(cn), Some(mac), Some(idx)) =
                (st.nets.get(&r.cluster_network), r.mac, r.host_ifindex)
            else {
                continue;
            };
            if cn.backend != backend::BackendKind::Ebpf {
                continue;
            }
            if let Some(vid) = PortMode::of(r.vlan, &r.trunk).home_vid() {
                statics.push((cn.id, vid, mac.0, idx));
            }
        }
        drop(st);
        // Port security drifts back the same way (and lapsed leases go).
        self.sync_port_security(&recs).await;
        let r = self
            .node
            .with_datapath(move |dp| {
                for (cn, vid, mac, idx) in statics {
                    dp.fdb_add_static(cn, vid, mac, idx)?;
                }
                Ok::<_, furrow_ebpf::DatapathError>(())
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "re-asserting static FDB entries");
        }
    }

    /// Active-backup for eBPF uplinks: when the active NIC loses carrier
    /// and another has it, traffic moves there, and every local VM's MAC
    /// is announced on the new NIC so the fabric relearns at once (what a
    /// bond does with gratuitous ARPs).
    pub async fn monitor_uplinks(&self) {
        let mut recs: Option<Vec<VlanPortRecord>> = None;
        let mut st = self.state.lock().await;
        for cn in st.nets.values_mut() {
            let Some(backend::Realized::Ebpf { nics, active, .. }) = cn.realized.clone() else {
                continue;
            };
            if nics.len() < 2 {
                continue;
            }
            let mut carrier = Vec::new();
            for (_, idx, _) in &nics {
                let c = matches!(self.node.host.link_by_index(*idx).await, Ok(Some(l)) if l.carrier && l.up);
                carrier.push(c);
            }
            if carrier[active] {
                continue;
            }
            let Some(next) = carrier.iter().position(|c| *c) else {
                continue;
            };
            let has_ip = self
                .node
                .host
                .addresses_v4(nics[next].1)
                .await
                .map(|a| !a.is_empty())
                .unwrap_or(false);
            tracing::warn!(cluster_network = %cn.name, from = %nics[active].0, to = %nics[next].0, "uplink NIC lost carrier; failing over");
            if let Err(e) = backend::activate(&self.node, cn, nics.clone(), next, has_ip).await {
                tracing::error!(cluster_network = %cn.name, error = %e, "uplink failover");
                continue;
            }
            if recs.is_none() {
                recs = Some(self.records().await.unwrap_or_default());
            }
            let all = recs.as_deref().unwrap_or_default();
            for r in all
                .iter()
                .filter(|r| r.cluster_network == cn.name && r.state == PortState::Ready)
            {
                if let Some(mac) = r.mac {
                    self.announce(cn, mac, &PortMode::of(r.vlan, &r.trunk));
                }
            }
        }
    }
}

#[async_trait]
impl NetworkDriver for VlanDriver {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn add(&self, req: &AttachmentRequest) -> Result<CniResult, ApiError> {
        let att = spec_of(req);
        let (uplink_mtu, mtu) = self.usable(att).await?;
        let netns_path = req
            .netns
            .as_deref()
            .ok_or_else(|| ApiError::new(code::INVALID_ENV, "CNI_NETNS is required for ADD"))?;
        let netns = open_netns(netns_path)?;
        if let Some(m) = req.mac {
            if !m.is_valid_unicast() {
                return Err(ApiError::invalid_field(
                    "mac",
                    format!("{m} is not a unicast address"),
                ));
            }
        }
        if !req.ips.is_empty() {
            return Err(ApiError::invalid_field(
                "ips",
                "VLAN networks do not assign addresses yet (ipam must be {}); VMs get theirs by DHCP",
            ));
        }
        let key = self.port_key(req);
        let guard = self.node.port_locks.lock(&key).await;
        let mut rec = VlanPortRecord {
            node: self.node.cfg.node.clone(),
            network_name: req.network_name.clone(),
            kind: KIND.into(),
            cluster_network: att.cluster_network.clone(),
            vlan: att.vlan,
            trunk: att.trunk.clone(),
            promisc: att.promisc,
            dhcp_trusted: att.dhcp_trusted,
            port_security: att.port_security,
            allowed_address_pairs: att.allowed_address_pairs.clone(),
            container_id: req.container_id.clone(),
            ifname: req.ifname.clone(),
            netns: Some(netns_path.to_string()),
            pod: req.pod.clone(),
            host_ifname: ports::host_ifname(&req.network_name, &req.container_id, &req.ifname),
            host_ifindex: None,
            mac: req.mac,
            mtu: mtu.unwrap_or(uplink_mtu),
            state: PortState::Pending,
            created_at: crate::util::now_secs(),
        };
        let out = self
            .node
            .store
            .txn(
                Txn::new()
                    .when(Compare::Absent(key.clone()))
                    .then(Op::put_json(key.clone(), &rec)),
            )
            .await
            .map_err(store_error)?;
        if !out.succeeded {
            return Err(ApiError::new(
                code::ALREADY_ATTACHED,
                format!(
                    "container {} already has interface {} on network {:?}: DEL it before adding it again",
                    rec.container_id, rec.ifname, rec.network_name
                ),
            ));
        }
        let (index, pod_mac) = match self.build(&rec, &netns, netns_path).await {
            Ok(b) => b,
            Err(e) => {
                let _ = self.unplug(&rec).await;
                let _ = self.remove_link(&rec).await;
                let _ = self.forget(&rec).await;
                drop(guard);
                return Err(e);
            }
        };
        rec.mac = Some(pod_mac);
        rec.host_ifindex = Some(index);
        rec.state = PortState::Ready;
        if let Err(e) = self.put_record(&rec).await {
            let _ = self.unplug(&rec).await;
            let _ = self.remove_link(&rec).await;
            let _ = self.forget(&rec).await;
            return Err(e);
        }
        let host_mac = self
            .node
            .host
            .link_by_index(index)
            .await
            .ok()
            .flatten()
            .and_then(|l| l.mac);
        tracing::info!(container = %rec.container_id, ifname = %rec.ifname, cluster_network = %rec.cluster_network, vlan = rec.vlan, trunk = ?rec.trunk, mac = %pod_mac, "VLAN port added");
        Ok(CniResult {
            interfaces: vec![
                Interface {
                    name: rec.host_ifname.clone(),
                    mac: host_mac,
                    mtu: Some(rec.mtu),
                    ..Default::default()
                },
                Interface {
                    name: rec.ifname.clone(),
                    mac: Some(pod_mac),
                    mtu: Some(rec.mtu),
                    sandbox: Some(netns_path.to_string()),
                    ..Default::default()
                },
            ],
            ips: Vec::new(),
            routes: Vec::new(),
            dns: att.dns.clone(),
        })
    }

    async fn del(&self, req: &AttachmentRequest) -> Result<(), ApiError> {
        let key = self.port_key(req);
        let guard = self.node.port_locks.lock(&key).await;
        match self.record(&key).await? {
            Some(rec) => {
                let (cid, ifname) = (rec.container_id.clone(), rec.ifname.clone());
                self.delete_port(rec, guard).await?;
                tracing::info!(container = %cid, ifname = %ifname, "VLAN port deleted");
            }
            None => {
                remove_leftover_link(
                    &self.node,
                    &key,
                    &req.network_name,
                    &req.container_id,
                    &req.ifname,
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn check(&self, req: &AttachmentRequest) -> Result<(), ApiError> {
        let key = self.port_key(req);
        let _g = self.node.port_locks.lock(&key).await;
        let Some(rec) = self.record(&key).await? else {
            return Err(ApiError::new(
                code::CHECK_FAILED,
                format!(
                    "container {} has no interface {} on network {:?}",
                    req.container_id, req.ifname, req.network_name
                ),
            ));
        };
        if rec.state != PortState::Ready {
            return Err(ApiError::new(
                code::CHECK_FAILED,
                format!(
                    "attachment is {}, not ready",
                    format!("{:?}", rec.state).to_lowercase()
                ),
            ));
        }
        let mut p = Vec::new();
        let host = &self.node.host;
        let hl = host.link_by_name(&rec.host_ifname).await.map_err(kernel)?;
        match &hl {
            None => p.push(format!("host interface {} is missing", rec.host_ifname)),
            Some(l) if !l.up => p.push(format!("host interface {} is down", l.name)),
            _ => {}
        }
        let netns = rec.netns.clone().unwrap_or_default();
        match Netlink::in_netns(std::path::Path::new(&netns)).await {
            Err(e) => p.push(e.to_string()),
            Ok(ns) => match ns.link_by_name(&rec.ifname).await {
                Ok(Some(pl)) => {
                    if pl.mac != rec.mac {
                        p.push(format!(
                            "{} has another MAC than the attachment",
                            rec.ifname
                        ));
                    }
                    if pl.mtu != rec.mtu {
                        p.push(format!(
                            "{} has MTU {} but the attachment has {}",
                            rec.ifname, pl.mtu, rec.mtu
                        ));
                    }
                }
                Ok(None) => p.push(format!("interface {} is missing in {netns}", rec.ifname)),
                Err(e) => p.push(e.to_string()),
            },
        }
        if let Some(l) = &hl {
            let st = self.state.lock().await;
            match st.nets.get(&rec.cluster_network) {
                None => p.push(format!(
                    "cluster network {} is not set up on this node",
                    rec.cluster_network
                )),
                Some(cn) => {
                    if let Err(e) = backend::check_port(
                        &self.node,
                        cn,
                        &rec.host_ifname,
                        l,
                        &PortMode::of(rec.vlan, &rec.trunk),
                    )
                    .await
                    {
                        p.push(e);
                    }
                }
            }
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(ApiError::new(
                code::CHECK_FAILED,
                format!(
                    "attachment {}/{} differs from what ADD built: {}",
                    rec.container_id,
                    rec.ifname,
                    p.join("; ")
                ),
            ))
        }
    }

    async fn release(&self, port: &AnyPort) -> Result<(), ApiError> {
        let AnyPort::Vlan(rec) = port else {
            return Err(ApiError::internal(
                "the VLAN driver releases VLAN ports only",
            ));
        };
        let key = rec.key();
        let guard = self.node.port_locks.lock(&key).await;
        if let Some(rec) = self.record(&key).await? {
            self.delete_port(rec, guard).await?;
        }
        Ok(())
    }
}
