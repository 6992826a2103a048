//! The management (pod) network: a routed, NAT'ed network.
//!
//! Each attachment is a veth pair: the pod side (CNI_IFNAME) holds the
//! pod's address with no subnet route, a /32 route to the gateway and a
//! default route through it; the host side (`fw…`) holds the gateway
//! address as /32 and the host has a /32 route to the pod through it.
//! Every packet a pod sends therefore reaches the host side, where the
//! eBPF datapath hands pod-to-pod traffic straight to the destination pod
//! (bpf_redirect_peer) and the kernel routes the rest; traffic leaving
//! the cluster CIDR is masqueraded by nftables.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use async_trait::async_trait;
use furrow_api::cni::{
    AttachmentSpec, CniResult, Interface, IpConfig, ManagementAttachment, Route,
};
use furrow_api::error::code;
use furrow_api::resource::{ManagementNetwork, ManagementNetworkSpec};
use furrow_api::wire::{AttachmentRequest, NetworkInfo, PortState};
use furrow_api::{ApiError, MacAddr};
use furrow_ebpf::MgmtEndpoint;
use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, RwLock};

use super::common::{
    create_port_veth, free_pod_ifname, kernel, open_netns, remove_leftover_link, spawn_removal,
    PortVeth,
};
use super::NetworkDriver;
use crate::firewall::MasqueradeNetwork;
use crate::ipam::{IpamError, Pool};
use crate::netlink::Netlink;
use crate::node::Node;
use crate::ports::{self, PortRecord};
use crate::resources::store_error;
use crate::store::{keys, list_json, Compare, Op, Txn};
use crate::subnets;

use super::overlay::{detect_underlay, lease_attrs, pod_mtu, Overlay, Underlay};

pub const KIND: &str = "management";

/// One management network as this node runs it.
pub struct MgmtNet {
    pub name: String,
    pub spec: ManagementNetworkSpec,
    /// This node's subnet of the cluster CIDR.
    pub subnet: Ipv4Net,
    pub pool: Mutex<Pool>,
    /// Pods' MTU on this node: the spec's, or the underlay's less the
    /// backend's encapsulation overhead.
    pub mtu: u32,
}

impl MgmtNet {
    pub fn gateway(&self) -> Ipv4Addr {
        Pool::first_host(self.subnet)
    }
}

/// What an allocation key holds: who owns the address.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllocationOwner {
    pub node: String,
    pub port: String,
}

/// Cheap to clone (shared handles), so slow work can move into background
/// tasks.
#[derive(Clone)]
pub struct ManagementDriver {
    node: Arc<Node>,
    networks: Arc<RwLock<BTreeMap<String, Arc<MgmtNet>>>>,
    overlay: Overlay,
    /// The underlay as last detected.
    underlay: Arc<std::sync::Mutex<Option<Underlay>>>,
}

/// What building the kernel side produced.
struct Built {
    host_ifindex: u32,
    host_mac: MacAddr,
    pod_mac: MacAddr,
}

/// Per-step timings of one operation, logged at debug level: where an
/// ADD or DEL spends its time is the first question when it is slow.
struct Phases {
    start: std::time::Instant,
    last: std::time::Instant,
    steps: Vec<(&'static str, u64)>,
}

impl Phases {
    fn new() -> Self {
        let now = std::time::Instant::now();
        Phases {
            start: now,
            last: now,
            steps: Vec::new(),
        }
    }
    fn mark(&mut self, step: &'static str) {
        let now = std::time::Instant::now();
        self.steps
            .push((step, (now - self.last).as_micros() as u64));
        self.last = now;
    }
    fn log(&self, op: &'static str) {
        if tracing::enabled!(tracing::Level::DEBUG) {
            let steps: Vec<String> = self
                .steps
                .iter()
                .map(|(n, us)| format!("{n}={us}us"))
                .collect();
            tracing::debug!(op, total_us = self.start.elapsed().as_micros() as u64, steps = %steps.join(" "), "timing");
        }
    }
}

fn spec_of(req: &AttachmentRequest) -> &ManagementAttachment {
    match &req.attachment {
        AttachmentSpec::Management(a) => a,
        // The daemon dispatches by kind; another kind never reaches here.
        other => unreachable!("management driver got {other:?}"),
    }
}

impl ManagementDriver {
    pub fn new(node: Arc<Node>) -> Self {
        ManagementDriver {
            overlay: Overlay::new(node.clone()),
            node,
            networks: Arc::new(RwLock::new(BTreeMap::new())),
            underlay: Arc::default(),
        }
    }

    pub async fn network(&self, name: &str) -> Option<Arc<MgmtNet>> {
        self.networks.read().await.get(name).cloned()
    }

    pub async fn network_names(&self) -> Vec<String> {
        self.networks.read().await.keys().cloned().collect()
    }

    async fn require_network(&self, name: &str) -> Result<Arc<MgmtNet>, ApiError> {
        if let Some(n) = self.network(name).await {
            return Ok(n);
        }
        let known = self.network_names().await;
        Err(ApiError::new(
            code::INVALID_CONFIG,
            format!(
                "network: no ManagementNetwork named {name:?} exists on node {} (known: {})",
                self.node.cfg.node,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        )
        .with_details(
            "set the CNI config's \"network\" field to an existing ManagementNetwork, or apply one",
        ))
    }

    /// Brings the set of networks in line with the resources: leases each
    /// one's node subnet, loads its pool from the store, and installs the
    /// masquerade rules. Networks still used by ports are kept even if
    /// their resource vanished (the API refuses such deletes; this covers
    /// the store being edited behind netd's back).
    pub async fn reconcile_networks(&self, specs: Vec<ManagementNetwork>) -> Result<(), ApiError> {
        let store = self.node.store.as_ref();
        let node = &self.node.cfg.node;
        let underlay = self.detect_underlay().await;
        let mut next = BTreeMap::new();
        for n in specs {
            let name = n.metadata.name.clone();
            let subnet = self.lease(&name, &n.spec, underlay.as_ref()).await?;
            let (mtu, capped) = pod_mtu(n.spec.mtu, n.spec.backend, underlay.as_ref());
            if let Some(why) = capped {
                tracing::warn!(network = %name, "{why}");
            }
            let current = self.network(&name).await;
            if let Some(c) =
                current.filter(|c| c.spec == n.spec && c.subnet == subnet && c.mtu == mtu)
            {
                next.insert(name, c);
                continue;
            }
            let mut pool = Pool::new(subnet);
            let allocs: Vec<(String, AllocationOwner, u64)> =
                list_json(store, &keys::allocations_of(&name))
                    .await
                    .map_err(store_error)?;
            for (key, owner, _) in allocs {
                let ip = key
                    .rsplit('/')
                    .next()
                    .and_then(|s| s.parse::<Ipv4Addr>().ok());
                match ip {
                    Some(ip) if subnet.contains(&ip) && owner.node == *node => pool.take(ip),
                    _ => {}
                }
            }
            tracing::info!(network = %name, %subnet, gateway = %pool.gateway(), allocated = pool.allocated(), mtu, backend = n.spec.backend.as_str(), "management network ready");
            next.insert(
                name.clone(),
                Arc::new(MgmtNet {
                    name,
                    spec: n.spec,
                    subnet,
                    pool: Mutex::new(pool),
                    mtu,
                }),
            );
        }
        let in_use: BTreeSet<String> = self
            .records()
            .await?
            .into_iter()
            .map(|r| r.network)
            .collect();
        {
            let mut nets = self.networks.write().await;
            for (name, net) in nets.iter() {
                if !next.contains_key(name) {
                    if in_use.contains(name) {
                        tracing::warn!(network = %name, "ManagementNetwork resource is gone but ports still use it; keeping it until they are deleted");
                        next.insert(name.clone(), net.clone());
                    } else {
                        let key = keys::subnet_lease(name, &net.subnet);
                        self.node
                            .store
                            .txn(Txn::new().then(Op::Delete(key)))
                            .await
                            .map_err(store_error)?;
                        tracing::info!(network = %name, "management network removed");
                    }
                }
            }
            *nets = next;
        }
        let nets: Vec<Arc<MgmtNet>> = self.networks.read().await.values().cloned().collect();
        self.overlay.sync(&nets, underlay.as_ref()).await;
        self.sync_masquerade().await
    }

    /// This node's subnet of a network, leased (or kept) with what the
    /// other nodes need to reach it.
    async fn lease(
        &self,
        network: &str,
        spec: &ManagementNetworkSpec,
        underlay: Option<&Underlay>,
    ) -> Result<Ipv4Net, ApiError> {
        let node = &self.node.cfg.node;
        subnets::lease(
            self.node.store.as_ref(),
            network,
            spec.cluster_cidr,
            spec.node_subnet_prefix_length,
            node,
            &lease_attrs(node, network, spec.backend, underlay),
        )
        .await
        .map_err(|e| match e {
            subnets::SubnetError::Store(s) => store_error(s),
            other => ApiError::new(code::POOL_EXHAUSTED, other.to_string()),
        })
    }

    async fn detect_underlay(&self) -> Option<Underlay> {
        let wanted = self.node.cfg.underlay_interface.as_deref();
        let found = match detect_underlay(&self.node.host, wanted).await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "no underlay for the management network");
                None
            }
        };
        let mut last = self.underlay.lock().unwrap();
        if *last != found {
            match &found {
                Some(u) => {
                    tracing::info!(interface = %u.name, address = %u.address, mtu = u.mtu, "management network underlay")
                }
                None => tracing::warn!("no underlay: pods reach only this node's pods"),
            }
            *last = found.clone();
        }
        found
    }

    /// Re-reads every network's leases (another node came, went or moved)
    /// and the underlay, and brings routes in line. A changed underlay
    /// address is republished in this node's leases first.
    pub async fn sync_overlay(&self) -> Result<(), ApiError> {
        let before = self.underlay.lock().unwrap().clone();
        let underlay = self.detect_underlay().await;
        let nets: Vec<Arc<MgmtNet>> = self.networks.read().await.values().cloned().collect();
        if before != underlay {
            for n in &nets {
                self.lease(&n.name, &n.spec, underlay.as_ref()).await?;
            }
        }
        self.overlay.sync(&nets, underlay.as_ref()).await;
        Ok(())
    }

    /// Installs the masquerade rule of every network that masquerades.
    pub async fn sync_masquerade(&self) -> Result<(), ApiError> {
        let nets: Vec<MasqueradeNetwork> = self
            .networks
            .read()
            .await
            .values()
            .filter(|n| n.spec.masquerade)
            .map(|n| MasqueradeNetwork {
                name: n.name.clone(),
                cluster_cidr: n.spec.cluster_cidr,
            })
            .collect();
        self.node
            .masq_set_networks(nets)
            .await
            .map_err(|e| ApiError::internal(format!("installing masquerade rules: {e}")))
    }

    /// Every port record of this node.
    pub async fn records(&self) -> Result<Vec<PortRecord>, ApiError> {
        let all = ports::list_all(self.node.store.as_ref(), &self.node.cfg.node)
            .await
            .map_err(store_error)?;
        Ok(all
            .into_iter()
            .filter_map(|p| match p {
                ports::AnyPort::Management(r) => Some(r),
                _ => None,
            })
            .collect())
    }

    /// Who wants masquerade according to the records (startup).
    pub async fn wanted_masquerade(
        &self,
    ) -> Result<BTreeMap<String, BTreeSet<Ipv4Addr>>, ApiError> {
        let mut out: BTreeMap<String, BTreeSet<Ipv4Addr>> = BTreeMap::new();
        for r in self.records().await? {
            if r.ip_masq && r.state == PortState::Ready {
                out.entry(r.network.clone())
                    .or_default()
                    .insert(r.address.addr());
            }
        }
        Ok(out)
    }

    pub async fn network_infos(&self) -> Result<Vec<NetworkInfo>, ApiError> {
        let recs = self.records().await?;
        let mut out = Vec::new();
        let underlay = self.underlay.lock().unwrap().clone();
        for n in self.networks.read().await.values() {
            let view = self.overlay.view(&n.name).await;
            let pool = n.pool.lock().await;
            out.push(NetworkInfo {
                name: n.name.clone(),
                kind: KIND.into(),
                subnet: Some(IpNet::V4(n.subnet)),
                gateway: Some(IpAddr::V4(n.gateway())),
                cluster_cidr: Some(IpNet::V4(n.spec.cluster_cidr)),
                mtu: n.mtu,
                masquerade: n.spec.masquerade,
                ports: recs.iter().filter(|r| r.network == n.name).count() as u32,
                addresses_allocated: pool.allocated(),
                addresses_total: pool.capacity(),
                backend: Some(n.spec.backend.as_str().into()),
                underlay: underlay
                    .as_ref()
                    .map(|u| format!("{} {}", u.name, u.address)),
                device: view.device,
                remote_subnets: view.remotes,
                problems: view.problems,
            });
        }
        Ok(out)
    }

    /// Takes an address and writes the Pending record, atomically. Returns
    /// the record with its address.
    async fn claim(
        &self,
        net: &MgmtNet,
        mut rec: PortRecord,
        requested: Option<Ipv4Addr>,
    ) -> Result<PortRecord, ApiError> {
        let store = self.node.store.as_ref();
        let port_key = rec.key();
        let mut pool = net.pool.lock().await;
        // A few rounds at most: a round only fails if the store holds an
        // allocation the pool did not know (another writer), which the
        // pool then learns.
        for _ in 0..8 {
            let ip = pool.pick(requested).map_err(|e| match e {
                IpamError::Exhausted { .. } => {
                    ApiError::new(code::POOL_EXHAUSTED, format!("network {}: {e}", net.name))
                }
                other => ApiError::new(
                    code::ADDRESS_UNAVAILABLE,
                    format!("requested address: {other}"),
                ),
            })?;
            rec.address = Ipv4Net::new(ip, net.subnet.prefix_len()).expect("prefix from a subnet");
            let alloc_key = keys::allocation(&net.name, IpAddr::V4(ip));
            let owner = AllocationOwner {
                node: rec.node.clone(),
                port: port_key.clone(),
            };
            let out = store
                .txn(
                    Txn::new()
                        .when(Compare::Absent(port_key.clone()))
                        .when(Compare::Absent(alloc_key.clone()))
                        .then(Op::put_json(alloc_key, &owner))
                        .then(Op::put_json(port_key.clone(), &rec))
                        // The record's claim_id says whether a resend's
                        // "failed" was really our own earlier send.
                        .resendable(),
                )
                .await
                .map_err(store_error)?;
            if out.succeeded {
                pool.take(ip);
                return Ok(rec);
            }
            if let Some(kv) = store.get(&port_key).await.map_err(store_error)? {
                if let Ok(held) = kv.decode::<PortRecord>() {
                    if held.claim_id.is_some() && held.claim_id == rec.claim_id {
                        pool.take(held.address.addr());
                        return Ok(held);
                    }
                }
                return Err(ApiError::new(
                    code::ALREADY_ATTACHED,
                    format!(
                        "container {} already has interface {} on network {:?}: DEL it before adding it again",
                        rec.container_id, rec.ifname, rec.network_name
                    ),
                ));
            }
            tracing::warn!(%ip, network = %net.name, "address held in the store but not in the pool; skipping it");
            pool.take(ip);
            if requested.is_some() {
                return Err(ApiError::new(
                    code::ADDRESS_UNAVAILABLE,
                    format!("requested address {ip} is already allocated"),
                ));
            }
        }
        Err(ApiError::internal(format!(
            "network {}: could not claim an address after several attempts",
            net.name
        )))
    }

    /// Removes the record and frees its address, atomically.
    async fn forget(&self, rec: &PortRecord) -> Result<(), ApiError> {
        let ip = rec.address.addr();
        self.node
            .store
            .txn(
                Txn::new()
                    .then(Op::Delete(rec.key()))
                    .then(Op::Delete(keys::allocation(&rec.network, IpAddr::V4(ip)))),
            )
            .await
            .map_err(store_error)?;
        if let Some(net) = self.network(&rec.network).await {
            net.pool.lock().await.release(ip);
        }
        Ok(())
    }

    /// Creates everything in the kernel for a claimed port.
    async fn build(
        &self,
        rec: &PortRecord,
        netns: &File,
        netns_path: &str,
        ph: &mut Phases,
    ) -> Result<Built, ApiError> {
        let host = &self.node.host;
        let ip = rec.address.addr();
        let gw = rec.gateway;
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
        ph.mark("veth");
        host.set_up(hl.index).await.map_err(kernel)?;
        host.add_address_v4(hl.index, gw, 32, false)
            .await
            .map_err(kernel)?;
        host.add_route_v4(ip, 32, None, Some(hl.index), true)
            .await
            .map_err(kernel)?;
        ph.mark("host-side");

        let ns = Netlink::in_netns(std::path::Path::new(netns_path))
            .await
            .map_err(kernel)?;
        ph.mark("netns-socket");
        let pl = ns
            .link_by_name(&rec.ifname)
            .await
            .map_err(kernel)?
            .ok_or_else(|| {
                ApiError::internal(format!("{} did not appear in {netns_path}", rec.ifname))
            })?;
        ns.set_up(pl.index).await.map_err(kernel)?;
        ns.add_address_v4(pl.index, ip, rec.address.prefix_len(), true)
            .await
            .map_err(kernel)?;
        ns.add_route_v4(gw, 32, None, Some(pl.index), true)
            .await
            .map_err(kernel)?;
        ns.add_route_v4(Ipv4Addr::UNSPECIFIED, 0, Some(gw), Some(pl.index), false)
            .await
            .map_err(kernel)?;
        ph.mark("pod-side");

        let host_mac = hl
            .mac
            .ok_or_else(|| ApiError::internal("host link has no MAC"))?;
        let pod_mac = pl
            .mac
            .ok_or_else(|| ApiError::internal("pod link has no MAC"))?;
        let (name, index) = (rec.host_ifname.clone(), hl.index);
        self.node
            .with_datapath(move |dp| {
                dp.attach_port(&name, index)?;
                dp.upsert_endpoint(
                    ip,
                    MgmtEndpoint {
                        host_ifindex: index,
                        pod_mac: pod_mac.0,
                        host_mac: host_mac.0,
                    },
                )
            })
            .await
            .map_err(datapath_error)?;
        ph.mark("datapath");
        if rec.ip_masq {
            self.node
                .masq_add(&rec.network, ip)
                .await
                .map_err(|e| ApiError::internal(format!("adding masquerade for {ip}: {e}")))?;
        }
        ph.mark("masquerade");
        Ok(Built {
            host_ifindex: hl.index,
            host_mac,
            pod_mac,
        })
    }

    /// Removes every kernel trace of a port, synchronously: [`unplug`]
    /// then [`remove_link`].
    async fn teardown(&self, rec: &PortRecord) -> Result<(), ApiError> {
        self.unplug(rec).await?;
        self.remove_link(rec).await
    }

    /// The fast half of removing a port: afterwards nothing reaches the pod
    /// or leaves it. The datapath forgets the endpoint first (nothing is
    /// redirected into a link about to vanish), then the NAT member goes,
    /// then the host link is set down.
    async fn unplug(&self, rec: &PortRecord) -> Result<(), ApiError> {
        let mut ph = Phases::new();
        let mut errors = Vec::new();
        let host = &self.node.host;
        let ip = rec.address.addr();
        let link = host.link_by_name(&rec.host_ifname).await.map_err(kernel)?;
        let index = link
            .as_ref()
            .map(|l| l.index)
            .or(rec.host_ifindex)
            .unwrap_or(0);
        let dp = self
            .node
            .with_datapath(move |dp| {
                let owned = dp
                    .endpoint(ip)?
                    .is_some_and(|ep| index == 0 || ep.host_ifindex == index);
                if owned {
                    dp.remove_endpoint(ip)?;
                }
                Ok::<_, furrow_ebpf::DatapathError>(())
            })
            .await;
        if let Err(e) = dp {
            errors.push(format!("datapath: {e}"));
        }
        ph.mark("datapath");
        if let Err(e) = self.node.masq_remove(&rec.network, ip).await {
            errors.push(format!("masquerade: {e}"));
        }
        ph.mark("masquerade");
        if let Some(l) = link.filter(|l| l.up) {
            if let Err(e) = host.set_down(l.index).await {
                if !e.is_not_found() {
                    errors.push(e.to_string());
                }
            }
        }
        ph.mark("link-down");
        if let Err(e) =
            free_pod_ifname(rec.netns.as_deref(), &rec.ifname, rec.mac, &rec.host_ifname).await
        {
            errors.push(e);
        }
        ph.mark("pod-rename");
        ph.log("unplug");
        fold_errors(rec, errors)
    }

    /// The slow half: the veth pair goes (the kernel waits for an RCU
    /// grace period here, tens of milliseconds), taking the pod side and
    /// the host route with it; then the datapath drops the port's
    /// programs and counters (cheap once the link is gone).
    async fn remove_link(&self, rec: &PortRecord) -> Result<(), ApiError> {
        let mut ph = Phases::new();
        let mut errors = Vec::new();
        let host = &self.node.host;
        let link = host.link_by_name(&rec.host_ifname).await.map_err(kernel)?;
        let index = link
            .as_ref()
            .map(|l| l.index)
            .or(rec.host_ifindex)
            .unwrap_or(0);
        if let Some(l) = &link {
            let index = l.index;
            match tokio::task::spawn_blocking(move || crate::netlink::delete_link_blocking(index))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(e.to_string()),
                Err(e) => errors.push(format!("link removal task: {e}")),
            }
        }
        ph.mark("link-delete");
        let name = rec.host_ifname.clone();
        if let Err(e) = self
            .node
            .with_datapath(move |dp| dp.detach_port(&name, index))
            .await
        {
            errors.push(format!("datapath: {e}"));
        }
        ph.mark("datapath-detach");
        ph.log("remove-link");
        fold_errors(rec, errors)
    }

    /// Removes a port whose lock the caller holds: unplugs it now, marks it
    /// Deleting, and leaves the link removal, which only the kernel's pace
    /// bounds, to a background task that keeps the lock until the record
    /// and the address are gone. A crash in between leaves a Deleting
    /// record that the next start finishes.
    async fn delete_port(
        &self,
        mut rec: PortRecord,
        guard: crate::locks::KeyedGuard,
    ) -> Result<(), ApiError> {
        if rec.state == PortState::Deleting {
            // An earlier background removal gave up; finish it here, in the
            // caller's sight.
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
    fn result_for(
        rec: &PortRecord,
        built: &Built,
        netns: &str,
        att: &ManagementAttachment,
    ) -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: rec.host_ifname.clone(),
                    mac: Some(built.host_mac),
                    mtu: Some(rec.mtu),
                    ..Default::default()
                },
                Interface {
                    name: rec.ifname.clone(),
                    mac: Some(built.pod_mac),
                    mtu: Some(rec.mtu),
                    sandbox: Some(netns.to_string()),
                    ..Default::default()
                },
            ],
            ips: vec![IpConfig {
                address: IpNet::V4(rec.address),
                gateway: Some(IpAddr::V4(rec.gateway)),
                interface: Some(1),
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().expect("static"),
                gw: Some(IpAddr::V4(rec.gateway)),
                mtu: None,
                advmss: None,
                priority: None,
                table: None,
                scope: None,
            }],
            dns: att.dns.clone(),
        }
    }

    /// Brings kernel state in line with the port records after a start:
    /// finishes nothing half-done (Pending ports are undone: their ADD
    /// never answered success), re-attaches the datapath to ports whose
    /// links survived, marks ports whose links vanished as Lost, and
    /// removes links, map entries and pins no record accounts for.
    pub async fn reconcile_ports(&self) -> Result<ReconcileReport, ApiError> {
        let mut report = ReconcileReport::default();
        let host = &self.node.host;
        let records = self.records().await?;
        let links = host.links().await.map_err(kernel)?;
        let by_name: BTreeMap<&str, &crate::netlink::Link> =
            links.iter().map(|l| (l.name.as_str(), l)).collect();
        let mut keep_links = BTreeSet::new();
        let mut keep_ips = BTreeSet::new();
        for mut rec in records {
            let key = rec.key();
            let _g = self.node.port_locks.lock(&key).await;
            match rec.state {
                PortState::Pending | PortState::Deleting => {
                    tracing::info!(port = %key, state = ?rec.state, "finishing what a restart cut short: removing the port");
                    self.teardown(&rec).await?;
                    self.forget(&rec).await?;
                    report.undone += 1;
                }
                PortState::Ready | PortState::Lost => {
                    let alias_ok = |l: &&&crate::netlink::Link| {
                        l.alias.as_deref()
                            == Some(ports::link_alias(&self.node.cfg.instance, &key).as_str())
                    };
                    match by_name.get(rec.host_ifname.as_str()).filter(alias_ok) {
                        Some(l) => {
                            self.readopt(&rec, l).await?;
                            keep_links.insert(rec.host_ifname.clone());
                            keep_ips.insert(rec.address.addr());
                            if rec.state == PortState::Lost || rec.host_ifindex != Some(l.index) {
                                rec.state = PortState::Ready;
                                rec.host_ifindex = Some(l.index);
                                self.put_record(&rec).await?;
                            }
                            report.adopted += 1;
                        }
                        None => {
                            if rec.state != PortState::Lost {
                                tracing::warn!(port = %key, link = %rec.host_ifname, "host link is gone (pod sandbox deleted?); port marked lost until DEL or GC");
                                self.teardown(&rec).await?;
                                rec.state = PortState::Lost;
                                self.put_record(&rec).await?;
                            }
                            report.lost += 1;
                        }
                    }
                }
            }
        }
        let keep_links2 = keep_links.clone();
        let keep_indices: BTreeSet<u32> = links
            .iter()
            .filter(|l| keep_links.contains(&l.name))
            .map(|l| l.index)
            .collect();
        let removed = self
            .node
            .with_datapath(move |dp| -> Result<u32, furrow_ebpf::DatapathError> {
                let mut n = 0;
                for (ip, _) in dp.endpoints()? {
                    if !keep_ips.contains(&ip) {
                        dp.remove_endpoint(ip)?;
                        n += 1;
                    }
                }
                for name in dp.pinned_mgmt_ports()? {
                    if !keep_links2.contains(&name) {
                        dp.detach_port(&name, 0)?;
                        n += 1;
                    }
                }
                // Counters of interfaces that vanished without a detach
                // (VLAN ports' counters are the VLAN driver's).
                let l2: BTreeSet<u32> = dp.l2_ports()?.into_iter().map(|(i, _)| i).collect();
                for (idx, _) in dp.all_port_stats()? {
                    if !keep_indices.contains(&idx) && !l2.contains(&idx) {
                        dp.forget_port_stats(idx)?;
                        n += 1;
                    }
                }
                Ok(n)
            })
            .await
            .map_err(datapath_error)?;
        report.orphans_removed += removed;
        // Allocations without a record cannot come from netd's own
        // transactions; free them rather than leak addresses.
        let node = &self.node.cfg.node;
        let live: BTreeSet<String> = self.records().await?.iter().map(|r| r.key()).collect();
        for net in self.network_names().await {
            let allocs: Vec<(String, AllocationOwner, u64)> =
                list_json(self.node.store.as_ref(), &keys::allocations_of(&net))
                    .await
                    .map_err(store_error)?;
            for (key, owner, rev) in allocs {
                if owner.node == *node && !live.contains(&owner.port) {
                    tracing::warn!(allocation = %key, "freeing address whose port record is missing");
                    self.node
                        .store
                        .txn(
                            Txn::new()
                                .when(Compare::ModRevision(key.clone(), rev))
                                .then(Op::Delete(key.clone())),
                        )
                        .await
                        .map_err(store_error)?;
                    if let (Some(n), Some(ip)) = (
                        self.network(&net).await,
                        key.rsplit('/').next().and_then(|s| s.parse().ok()),
                    ) {
                        n.pool.lock().await.release(ip);
                    }
                    report.orphans_removed += 1;
                }
            }
        }
        Ok(report)
    }

    /// Re-applies the host side of a surviving port and re-attaches the
    /// (possibly newer) datapath programs to it.
    async fn readopt(&self, rec: &PortRecord, link: &crate::netlink::Link) -> Result<(), ApiError> {
        let host = &self.node.host;
        let ip = rec.address.addr();
        if !link.up {
            host.set_up(link.index).await.map_err(kernel)?;
        }
        host.add_address_v4(link.index, rec.gateway, 32, false)
            .await
            .map_err(kernel)?;
        host.add_route_v4(ip, 32, None, Some(link.index), true)
            .await
            .map_err(kernel)?;
        let (name, index) = (rec.host_ifname.clone(), link.index);
        let host_mac = link.mac.unwrap_or_default();
        let pod_mac = rec.mac.unwrap_or_default();
        self.node
            .with_datapath(move |dp| {
                dp.attach_port(&name, index)?;
                dp.upsert_endpoint(
                    ip,
                    MgmtEndpoint {
                        host_ifindex: index,
                        pod_mac: pod_mac.0,
                        host_mac: host_mac.0,
                    },
                )
            })
            .await
            .map_err(datapath_error)?;
        if rec.ip_masq {
            self.node
                .masq_add(&rec.network, ip)
                .await
                .map_err(|e| ApiError::internal(format!("masquerade for {ip}: {e}")))?;
        }
        Ok(())
    }

    async fn put_record(&self, rec: &PortRecord) -> Result<(), ApiError> {
        self.node
            .store
            .txn(Txn::new().then(Op::put_json(rec.key(), rec)))
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn record(&self, key: &str) -> Result<Option<PortRecord>, ApiError> {
        Ok(
            crate::store::get_json::<PortRecord>(self.node.store.as_ref(), key)
                .await
                .map_err(store_error)?
                .map(|(r, _)| r),
        )
    }

    fn port_key(&self, req: &AttachmentRequest) -> String {
        keys::port(
            &self.node.cfg.node,
            &req.network_name,
            &req.container_id,
            &req.ifname,
        )
    }

    /// Lists what differs between a port's record and the kernel.
    async fn problems(&self, rec: &PortRecord, prev: Option<&CniResult>) -> Vec<String> {
        let mut p = Vec::new();
        let host = &self.node.host;
        let ip = rec.address.addr();
        let hl = match host.link_by_name(&rec.host_ifname).await {
            Ok(Some(l)) => Some(l),
            Ok(None) => {
                p.push(format!("host interface {} is missing", rec.host_ifname));
                None
            }
            Err(e) => {
                p.push(format!("host interface {}: {e}", rec.host_ifname));
                None
            }
        };
        if let Some(l) = &hl {
            if !l.up {
                p.push(format!("host interface {} is down", l.name));
            }
            match host.addresses_v4(l.index).await {
                Ok(a) if a.contains(&(rec.gateway, 32)) => {}
                Ok(_) => p.push(format!(
                    "gateway address {}/32 missing on {}",
                    rec.gateway, l.name
                )),
                Err(e) => p.push(e.to_string()),
            }
            match host.routes_v4().await {
                Ok(rs)
                    if rs
                        .iter()
                        .any(|r| r.dst == ip && r.prefix_len == 32 && r.oif == Some(l.index)) => {}
                Ok(_) => p.push(format!("host route to {ip}/32 via {} missing", l.name)),
                Err(e) => p.push(e.to_string()),
            }
        }
        let netns = rec.netns.clone().unwrap_or_default();
        match Netlink::in_netns(std::path::Path::new(&netns)).await {
            Err(e) => p.push(e.to_string()),
            Ok(ns) => match ns.link_by_name(&rec.ifname).await {
                Ok(Some(pl)) => {
                    if rec.mac.is_some() && pl.mac != rec.mac {
                        p.push(format!(
                            "{} has MAC {} but the attachment has {}",
                            rec.ifname,
                            pl.mac.map(|m| m.to_string()).unwrap_or_default(),
                            rec.mac.map(|m| m.to_string()).unwrap_or_default()
                        ));
                    }
                    if pl.mtu != rec.mtu {
                        p.push(format!(
                            "{} has MTU {} but the attachment has {}",
                            rec.ifname, pl.mtu, rec.mtu
                        ));
                    }
                    match ns.addresses_v4(pl.index).await {
                        Ok(a) if a.contains(&(ip, rec.address.prefix_len())) => {}
                        Ok(_) => {
                            p.push(format!("address {} missing on {}", rec.address, rec.ifname))
                        }
                        Err(e) => p.push(e.to_string()),
                    }
                    match ns.routes_v4().await {
                        Ok(rs) => {
                            let mut want: Vec<(Ipv4Net, Option<Ipv4Addr>)> = vec![
                                (Ipv4Net::new(rec.gateway, 32).expect("/32"), None),
                                ("0.0.0.0/0".parse().expect("static"), Some(rec.gateway)),
                            ];
                            for r in prev.map(|x| x.routes.as_slice()).unwrap_or(&[]) {
                                if let IpNet::V4(dst) = r.dst {
                                    let gw = r.gw.and_then(|g| match g {
                                        IpAddr::V4(v) => Some(v),
                                        _ => None,
                                    });
                                    want.push((dst, gw));
                                }
                            }
                            want.sort();
                            want.dedup();
                            for (dst, gw) in want {
                                let found = rs.iter().any(|r| {
                                    r.dst == dst.network()
                                        && r.prefix_len == dst.prefix_len()
                                        && (gw.is_none() || r.gateway == gw)
                                });
                                if !found {
                                    p.push(format!(
                                        "route {dst}{} missing in {netns}",
                                        gw.map(|g| format!(" via {g}")).unwrap_or_default()
                                    ));
                                }
                            }
                        }
                        Err(e) => p.push(e.to_string()),
                    }
                }
                Ok(None) => p.push(format!("interface {} is missing in {netns}", rec.ifname)),
                Err(e) => p.push(e.to_string()),
            },
        }
        if let Some(prev) = prev {
            let ours = prev.interfaces.iter().position(|i| {
                i.name == rec.ifname && i.sandbox.as_deref().is_none_or(|s| s == netns)
            });
            match ours {
                None => p.push(format!(
                    "prevResult has no interface {} in {netns}",
                    rec.ifname
                )),
                Some(idx) => {
                    if let (Some(m), Some(r)) = (prev.interfaces[idx].mac, rec.mac) {
                        if m != r {
                            p.push(format!(
                                "prevResult says {} has MAC {m}, the attachment has {r}",
                                rec.ifname
                            ));
                        }
                    }
                    if !prev.ips.iter().any(|c| c.address == IpNet::V4(rec.address)) {
                        p.push(format!("prevResult does not list address {}", rec.address));
                    }
                }
            }
        }
        if let Some(l) = &hl {
            let (name, index) = (rec.host_ifname.clone(), l.index);
            let dp = self
                .node
                .with_datapath(
                    move |dp| -> Result<(bool, Option<MgmtEndpoint>), furrow_ebpf::DatapathError> {
                        let attached = dp.is_port_attached(&name)?;
                        let ep = dp.endpoint(ip)?;
                        Ok((attached, ep))
                    },
                )
                .await;
            match dp {
                Ok((attached, ep)) => {
                    if !attached {
                        p.push(format!(
                            "datapath programs are not attached to {}",
                            rec.host_ifname
                        ));
                    }
                    match ep {
                        Some(e) if e.host_ifindex == index => {}
                        Some(e) => p.push(format!(
                            "datapath endpoint {ip} points at ifindex {} instead of {index}",
                            e.host_ifindex
                        )),
                        None => p.push(format!("datapath endpoint {ip} missing")),
                    }
                }
                Err(e) => p.push(format!("datapath: {e}")),
            }
        }
        if rec.ip_masq && self.node.masq_network(&rec.network).await {
            match self.node.masq_rule_present(&rec.network).await {
                Ok(true) => {}
                Ok(false) => p.push(format!(
                    "masquerade rule of network {} missing",
                    rec.network
                )),
                Err(e) => p.push(e.to_string()),
            }
            match self.node.masq_has(&rec.network, ip).await {
                Ok(true) => {}
                Ok(false) => p.push(format!("masquerade entry for {ip} missing")),
                Err(e) => p.push(e.to_string()),
            }
        }
        p
    }
}

pub fn datapath_error(e: furrow_ebpf::DatapathError) -> ApiError {
    let msg = format!("datapath: {e}");
    if msg.contains("full") {
        ApiError::new(code::CAPACITY, msg)
    } else {
        ApiError::new(code::INTERNAL, msg)
    }
}

fn fold_errors(rec: &PortRecord, errors: Vec<String>) -> Result<(), ApiError> {
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

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileReport {
    pub adopted: u32,
    pub undone: u32,
    pub lost: u32,
    pub orphans_removed: u32,
}

fn requested_ip(req: &AttachmentRequest, net: &MgmtNet) -> Result<Option<Ipv4Addr>, ApiError> {
    let mut v4 = req.ips.iter().filter_map(|ip| match ip {
        IpAddr::V4(v) => Some(*v),
        IpAddr::V6(_) => None,
    });
    let first = v4.next();
    if v4.next().is_some() || req.ips.iter().any(|i| i.is_ipv6()) {
        return Err(ApiError::new(
            code::ADDRESS_UNAVAILABLE,
            "ips: the management network gives each interface one IPv4 address; request at most one",
        ));
    }
    if let Some(ip) = first {
        if !net.subnet.contains(&ip) {
            return Err(ApiError::new(
                code::ADDRESS_UNAVAILABLE,
                format!(
                    "ips: {ip} is not in node {}'s subnet {} of network {}",
                    req.network_name, net.subnet, net.name
                ),
            ));
        }
    }
    Ok(first)
}

#[async_trait]
impl NetworkDriver for ManagementDriver {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn add(&self, req: &AttachmentRequest) -> Result<CniResult, ApiError> {
        let att = spec_of(req);
        let net = self.require_network(&att.network).await?;
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
        let requested = requested_ip(req, &net)?;
        let key = self.port_key(req);
        let _g = self.node.port_locks.lock(&key).await;
        let mtu = att.mtu.unwrap_or(net.mtu);
        let rec = PortRecord {
            node: self.node.cfg.node.clone(),
            network_name: req.network_name.clone(),
            network: net.name.clone(),
            kind: KIND.into(),
            container_id: req.container_id.clone(),
            ifname: req.ifname.clone(),
            netns: Some(netns_path.to_string()),
            pod: req.pod.clone(),
            host_ifname: ports::host_ifname(&req.network_name, &req.container_id, &req.ifname),
            host_ifindex: None,
            mac: req.mac,
            address: Ipv4Net::new(net.gateway(), net.subnet.prefix_len()).expect("valid"),
            gateway: net.gateway(),
            mtu,
            ip_masq: att.ip_masq,
            state: PortState::Pending,
            created_at: crate::util::now_secs(),
            claim_id: Some({
                use std::hash::{BuildHasher, Hasher};
                // Randomly keyed by std: unique enough to tell two ADDs apart.
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write_u128(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos())
                        .unwrap_or(0),
                );
                h.finish()
            }),
        };
        let mut ph = Phases::new();
        let mut rec = self.claim(&net, rec, requested).await?;
        ph.mark("claim");
        let built = match self.build(&rec, &netns, netns_path, &mut ph).await {
            Ok(b) => b,
            Err(e) => {
                if let Err(te) = self.teardown(&rec).await {
                    tracing::error!(error = %te, "cleaning up after a failed ADD");
                    // Keep the Pending record so reconcile retries the cleanup.
                    return Err(e);
                }
                self.forget(&rec).await?;
                return Err(e);
            }
        };
        rec.mac = Some(built.pod_mac);
        rec.host_ifindex = Some(built.host_ifindex);
        rec.state = PortState::Ready;
        if let Err(e) = self.put_record(&rec).await {
            let _ = self.teardown(&rec).await;
            let _ = self.forget(&rec).await;
            return Err(e);
        }
        ph.mark("commit");
        ph.log("add");
        tracing::info!(container = %rec.container_id, ifname = %rec.ifname, address = %rec.address, host_if = %rec.host_ifname, "port added");
        Ok(Self::result_for(&rec, &built, netns_path, att))
    }

    async fn del(&self, req: &AttachmentRequest) -> Result<(), ApiError> {
        let key = self.port_key(req);
        let guard = self.node.port_locks.lock(&key).await;
        match self.record(&key).await? {
            Some(rec) => {
                let mut ph = Phases::new();
                let (cid, ifname, address) =
                    (rec.container_id.clone(), rec.ifname.clone(), rec.address);
                self.delete_port(rec, guard).await?;
                ph.mark("unplug");
                ph.log("del");
                tracing::info!(container = %cid, ifname = %ifname, address = %address, "port deleted");
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
        let problems = self.problems(&rec, req.prev_result.as_ref()).await;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ApiError::new(
                code::CHECK_FAILED,
                format!(
                    "attachment {}/{} differs from what ADD built: {}",
                    rec.container_id,
                    rec.ifname,
                    problems.join("; ")
                ),
            ))
        }
    }

    async fn release(&self, port: &ports::AnyPort) -> Result<(), ApiError> {
        let ports::AnyPort::Management(rec) = port else {
            return Err(ApiError::internal(
                "the management driver releases management ports only",
            ));
        };
        let key = rec.key();
        let guard = self.node.port_locks.lock(&key).await;
        // Re-read under the lock: a concurrent DEL may have done the work.
        if let Some(rec) = self.record(&key).await? {
            let (cid, ifname) = (rec.container_id.clone(), rec.ifname.clone());
            self.delete_port(rec, guard).await?;
            tracing::info!(container = %cid, ifname = %ifname, "port released by GC");
        }
        Ok(())
    }
}
