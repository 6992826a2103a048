//! netd assembled: start-up (store, datapath, firewall, config directory,
//! reconcile), the operations the API exposes, and the background
//! watchers that keep the node converged on the store.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use furrow_api::cni::{AttachmentSpec, CniResult};
use furrow_api::error::code;
use furrow_api::resource::{
    selects, BgpPeer, ClusterNetwork, ClusterNetworkSpec, IpPool, ManagementNetwork,
    ManagementNetworkSpec, VirtualIp, VirtualIpPool, VirtualMachineNetworkConfig, VlanConfig,
    VlanInterface,
};
use furrow_api::wire::{
    AttachmentRef, AttachmentRequest, DatapathStatus, FirewallStatus, GcRequest, GcResponse,
    MapUsage, NetworkInfo, NodeStatus, PortCounters, PortInfo, PortState, PortSummary,
    ReadyResponse, StoreStatus,
};
use furrow_api::ApiError;
use furrow_ebpf::{Datapath, DatapathConfig};
use serde_json::Value;

use crate::dhcp::client::{ClientSpec, DhcpClients};
use crate::dhcp::service::DhcpService;
use crate::drivers::management::ManagementDriver;
use crate::drivers::vlan::VlanDriver;
use crate::drivers::NetworkDriver;
use crate::firewall::NftablesDriver;
use crate::metrics::family;
use crate::netlink::{sysctl, Netlink};
use crate::node::Node;
use crate::options::Resolved;
use crate::ports::{self, AnyPort};
use crate::resources::{self, Resources};
use crate::store::WatchError;

/// The node's own IPv4 addresses for its membership record: those of up
/// links Furrow did not create (no alias), loopback excepted.
async fn node_addresses(host: &Netlink) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(links) = host.links().await else {
        return out;
    };
    for l in links {
        if l.name == "lo" || !l.up || l.alias.is_some() {
            continue;
        }
        if let Ok(addrs) = host.addresses_v4(l.index).await {
            out.extend(addrs.into_iter().map(|(ip, len)| format!("{ip}/{len}")));
        }
    }
    out
}

pub struct Daemon {
    pub node: Arc<Node>,
    pub resources: Resources,
    pub mgmt: ManagementDriver,
    pub vlan: VlanDriver,
    pub dhcp: DhcpService,
    pub dhcp_clients: DhcpClients,
    pub vip: crate::vip::VipService,
    pub members: Arc<crate::membership::Membership>,
    pub started_at: u64,
    /// Config directory documents not applied, or (`--resources
    /// kubernetes`) the Kubernetes objects not in effect, with the reason.
    config_errors: Arc<std::sync::Mutex<Vec<String>>>,
    reconcile_lock: tokio::sync::Mutex<()>,
}

impl Daemon {
    pub async fn start(#[allow(unused_mut)] mut cfg: Resolved) -> anyhow::Result<Arc<Daemon>> {
        #[cfg(feature = "kubernetes")]
        let kube_client = if cfg.resources == crate::options::ResourceSource::Kubernetes
            || cfg.vip_election == crate::options::VipElection::Kubernetes
        {
            let client = crate::kubernetes::client::connect()
                .await
                .context("connecting to the Kubernetes API server")?;
            // Selectors match the Node's labels too; --node-label flags and
            // kubernetes.io/hostname (the node name) win over them.
            match crate::kubernetes::client::node_labels(&client, &cfg.node).await {
                Ok(labels) => {
                    for (k, v) in labels {
                        cfg.node_labels.entry(k).or_insert(v);
                    }
                }
                Err(e) => tracing::warn!(
                    node = %cfg.node,
                    error = %e,
                    "reading this node's labels from Kubernetes failed; using --node-label only"
                ),
            }
            Some(client)
        } else {
            None
        };
        let vip_only = cfg.vip_only;
        if !vip_only {
            // Pods' traffic is routed through the node.
            sysctl::write("net.ipv4.ip_forward", "1").context("enabling IPv4 forwarding")?;
        }
        let store = crate::store::open(&cfg.store)
            .await
            .context("opening the store")?;
        let host = Netlink::current().context("opening rtnetlink")?;
        let pin_dir = cfg.bpf_dir.clone();
        let generation = cfg.datapath_generation;
        let datapath = if vip_only {
            None
        } else {
            // Adopts the programs and links an earlier netd pinned (a
            // restart or an upgrade is hitless: nothing is detached or
            // flushed here; the drivers reconcile ports with the store).
            Some(
                tokio::task::spawn_blocking(move || {
                    Datapath::open(DatapathConfig::new(pin_dir).with_generation(generation))
                })
                .await?
                .with_context(|| {
                    format!(
                        "loading the eBPF datapath (pins in {})",
                        cfg.bpf_dir.display()
                    )
                })?,
            )
        };
        let firewall = NftablesDriver::new(&cfg.nft_table)
            .with_context(|| format!("preparing nftables table {}", cfg.nft_table))?;
        let vip_timing = cfg.vip_timing;
        #[allow(unused_mut)]
        let mut vip_leases: Option<Arc<dyn crate::kubernetes::lease::LeaseApi>> = None;
        #[cfg(feature = "kubernetes")]
        if cfg.vip_election == crate::options::VipElection::Kubernetes {
            if let Some(client) = &kube_client {
                vip_leases = Some(Arc::new(crate::kubernetes::client::Leases::new(
                    client.clone(),
                    &cfg.vip_lease_namespace,
                )));
            }
        }
        let members = crate::membership::Membership::new(
            store.clone(),
            &cfg.node,
            &cfg.instance,
            cfg.node_labels.clone(),
            cfg.node_grace,
        );
        members.set_addresses(node_addresses(&host).await);
        // Before anything leases a subnet: a release pending against this
        // node's old record can no longer apply.
        members
            .beat()
            .await
            .context("writing this node's membership record")?;
        let node = Arc::new(Node::new(cfg, store, host, datapath, Arc::new(firewall)));
        let vlan = VlanDriver::new(node.clone());
        let daemon = Arc::new(Daemon {
            mgmt: ManagementDriver::new(node.clone()),
            dhcp: DhcpService::new(node.clone(), vlan.clone()),
            dhcp_clients: DhcpClients::new(node.clone(), vlan.clone()),
            vip: crate::vip::VipService::new(node.clone(), vlan.clone(), vip_timing, vip_leases),
            vlan,
            members,
            resources: Resources::new(node.store.clone()),
            node,
            started_at: crate::util::now_secs(),
            config_errors: Default::default(),
            reconcile_lock: Default::default(),
        });
        let any = |e: ApiError| anyhow::anyhow!(e);
        #[cfg(feature = "kubernetes")]
        if let Some(client) = kube_client.filter(|_| daemon.from_kubernetes()) {
            daemon.start_kubernetes(client).await?;
        }
        if vip_only {
            tracing::info!("--vip-only: running the VIP controller alone");
            daemon.load_config_dir().await;
            daemon.reconcile("start").await.map_err(any)?;
            daemon
                .vip
                .start()
                .await
                .context("starting the VIP controller")?;
            return Ok(daemon);
        }
        let features = crate::probe::kernel_features(&daemon.node.host).await;
        tracing::info!(
            bridge_vlan_filtering = features.bridge_vlan_filtering.available,
            vlan_8021q = features.vlan_8021q.available,
            bonding = features.bonding.available,
            "kernel features probed"
        );
        daemon.vlan.set_features(features).await;
        daemon.load_config_dir().await;
        daemon.ensure_default_network().await.map_err(any)?;
        let wanted = daemon.mgmt.wanted_masquerade().await.map_err(any)?;
        daemon.node.masq_init_wanted(wanted).await;
        daemon.reconcile("start").await.map_err(any)?;
        let report = daemon.mgmt.reconcile_ports().await.map_err(any)?;
        daemon.vlan.reconcile_ports().await.map_err(any)?;
        // Responders follow the adopted ports; then what nobody owns goes.
        daemon.sync_dhcp().await.map_err(any)?;
        daemon.dhcp.prune().await;
        // A discovery interrupted by a crash leaves its port behind.
        daemon.vlan.prune_node_ports("discover:").await;
        let orphans = daemon.remove_orphan_links().await.map_err(any)?;
        // Stale VIP addresses go before anything can answer for them.
        daemon
            .vip
            .start()
            .await
            .context("starting the VIP controller")?;
        let m = &daemon.node.metrics;
        for (kind, n) in [
            ("undone", report.undone),
            ("lost", report.lost),
            ("orphan", report.orphans_removed + orphans),
        ] {
            m.add(
                "furrow_reconcile_repairs_total",
                vec![("kind", kind.into())],
                n as u64,
            );
        }
        tracing::info!(
            adopted = report.adopted,
            undone = report.undone,
            lost = report.lost,
            orphans_removed = report.orphans_removed + orphans,
            "ports reconciled"
        );
        Ok(daemon)
    }

    /// Resources come from Kubernetes (`--resources kubernetes`).
    pub fn from_kubernetes(&self) -> bool {
        self.node.cfg.resources == crate::options::ResourceSource::Kubernetes
    }

    /// Mirrors Kubernetes' resources into the store and waits (a while)
    /// for the first complete list, so the first reconcile sees them.
    #[cfg(feature = "kubernetes")]
    async fn start_kubernetes(&self, client: kube::Client) -> anyhow::Result<()> {
        let mut synced = crate::kubernetes::client::start_source(
            client.clone(),
            self.node.store.clone(),
            &self.node.cfg.node,
            self.node.cfg.node_labels.clone(),
            self.config_errors.clone(),
        );
        let wait = std::time::Duration::from_secs(30);
        if tokio::time::timeout(wait, synced.wait_for(|s| *s))
            .await
            .is_err()
        {
            tracing::warn!(
                "resources not listed from Kubernetes within 30 s (CRDs installed? RBAC?); starting with the stored ones"
            );
        }
        // The defaults the API path makes up, made in Kubernetes (create
        // only): Harvester's ClusterNetwork `mgmt` and a ManagementNetwork.
        let mut defaults = Vec::new();
        if self
            .resources
            .get(ClusterNetwork::KIND, "mgmt")
            .await?
            .is_none()
        {
            defaults.push(serde_json::to_value(ClusterNetwork::new(
                "mgmt",
                ClusterNetworkSpec::default(),
            ))?);
        }
        if self
            .resources
            .list(ManagementNetwork::KIND)
            .await?
            .is_empty()
        {
            defaults.push(serde_json::to_value(ManagementNetwork::new(
                ManagementNetwork::DEFAULT_NAME,
                ManagementNetworkSpec::default(),
            ))?);
        }
        for d in defaults {
            match crate::kubernetes::client::create_if_missing(&client, &d).await {
                Ok(true) => tracing::info!(
                    kind = d["kind"].as_str().unwrap_or(""),
                    "created the default in Kubernetes"
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    kind = d["kind"].as_str().unwrap_or(""),
                    error = %e,
                    "creating the default in Kubernetes failed"
                ),
            }
        }
        crate::kubernetes::client::spawn_status_writer(
            client.clone(),
            self.node.store.clone(),
            self.node.cfg.node.clone(),
        );
        self.spawn_vip_status_writer(client);
        Ok(())
    }

    /// The holder of each VirtualIP writes `status.holder` and
    /// `status.address` (a merge patch, so nodes never read-modify-write);
    /// the next holder overwrites them. Checked every second.
    #[cfg(feature = "kubernetes")]
    fn spawn_vip_status_writer(&self, client: kube::Client) {
        use furrow_api::resource::{VirtualIp, API_VERSION};
        let vip = self.vip.clone();
        let me = self.node.cfg.node.clone();
        tokio::spawn(async move {
            let c = crate::kubernetes::Collection::new(API_VERSION, VirtualIp::KIND);
            let mut written: std::collections::BTreeMap<String, serde_json::Value> =
                Default::default();
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                let infos = vip.info().await;
                let held: Vec<_> = infos
                    .iter()
                    .filter(|v| v.role.starts_with("holder"))
                    .collect();
                // Forget what we wrote for VIPs we no longer hold: when we
                // take one again, it is written again.
                written.retain(|name, _| held.iter().any(|v| &v.name == name));
                for v in held {
                    let want = crate::kubernetes::status::vip_status(&me, v.address);
                    let from = written
                        .get(&v.name)
                        .cloned()
                        .unwrap_or(serde_json::json!({}));
                    let Some(patch) = crate::kubernetes::status::merge_patch(&from, &want) else {
                        continue;
                    };
                    match crate::kubernetes::client::patch_status(
                        client.clone(),
                        &c,
                        None,
                        &v.name,
                        &patch,
                    )
                    .await
                    {
                        Ok(()) => {
                            written.insert(v.name.clone(), want);
                        }
                        Err(e) => {
                            tracing::warn!(vip = %v.name, error = %e, "writing VirtualIP status failed")
                        }
                    }
                }
            }
        });
    }

    fn refuse_if_kubernetes(&self) -> Result<(), ApiError> {
        if self.from_kubernetes() {
            return Err(ApiError::new(
                code::INVALID_CONFIG,
                "resources come from Kubernetes (--resources kubernetes): change them with kubectl",
            ));
        }
        Ok(())
    }

    /// Applies the config directory's documents. A bad document is
    /// reported (log and status) and skipped; the rest still apply.
    pub async fn load_config_dir(&self) {
        if self.from_kubernetes() {
            tracing::info!("resources come from Kubernetes: the config directory is not read");
            return;
        }
        let dir = self.node.cfg.config_dir.clone();
        let mut errors = Vec::new();
        match resources::read_config_dir(&dir) {
            Ok(docs) => {
                for (origin, doc) in docs {
                    match self.apply_doc(doc).await {
                        Ok(d) => tracing::info!(
                            %origin,
                            kind = d["kind"].as_str().unwrap_or(""),
                            name = d["metadata"]["name"].as_str().unwrap_or(""),
                            "applied resource from config directory"
                        ),
                        Err(e) => errors.push(format!("{origin}: {}", e.msg)),
                    }
                }
            }
            Err(errs) => errors.extend(errs),
        }
        for e in &errors {
            tracing::error!(error = %e, "config directory");
        }
        *self.config_errors.lock().expect("poisoned") = errors;
    }

    /// Host links carrying this instance's alias for a port the store no
    /// longer knows (a crash between building and recording), of any kind.
    async fn remove_orphan_links(&self) -> Result<u32, ApiError> {
        let prefix = format!("furrow:{}:", self.node.cfg.instance);
        let links = self
            .node
            .host
            .links()
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let mut n = 0;
        for l in links {
            let Some(key) = l.alias.as_deref().and_then(|a| a.strip_prefix(&prefix)) else {
                continue;
            };
            if !key.starts_with("/furrow/ports/") {
                continue;
            }
            let known = self
                .node
                .store
                .get(key)
                .await
                .map_err(crate::resources::store_error)?;
            if known.is_none() {
                tracing::info!(link = %l.name, "removing orphaned host link");
                crate::drivers::common::delete_host_link(l.index)
                    .await
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                n += 1;
            }
        }
        Ok(n)
    }

    async fn ensure_default_network(&self) -> Result<(), ApiError> {
        if self.from_kubernetes() {
            // Made in Kubernetes instead (start_kubernetes): one written
            // here would be dropped by the next re-list.
            return Ok(());
        }
        // Harvester's built-in cluster network: NADs with "bridge": "mgmt-br"
        // refer to it. It gets an uplink from a VlanConfig like any other.
        if self
            .resources
            .get(ClusterNetwork::KIND, "mgmt")
            .await?
            .is_none()
        {
            let cn = ClusterNetwork::new("mgmt", ClusterNetworkSpec::default());
            let doc = serde_json::to_value(&cn).map_err(|e| ApiError::internal(e.to_string()))?;
            self.apply_doc(doc).await?;
        }
        if self
            .resources
            .list(ManagementNetwork::KIND)
            .await?
            .is_empty()
        {
            let n = ManagementNetwork::new(
                ManagementNetwork::DEFAULT_NAME,
                ManagementNetworkSpec::default(),
            );
            let doc = serde_json::to_value(&n).map_err(|e| ApiError::internal(e.to_string()))?;
            self.apply_doc(doc).await?;
            tracing::info!(cidr = %n.spec.cluster_cidr, "created the default management network \"mgmt\"");
        }
        Ok(())
    }

    /// Realises the current resources on this node. Serialised: reconciles
    /// triggered by the API and by the store watch never interleave.
    pub async fn reconcile(&self, trigger: &'static str) -> Result<(), ApiError> {
        let _g = self.reconcile_lock.lock().await;
        self.node.metrics.inc(
            "furrow_reconcile_runs_total",
            vec![("trigger", trigger.into())],
        );
        if self.node.cfg.vip_only {
            return self.sync_vips().await;
        }
        let nets = self.resources.management_networks().await?;
        let mgmt = self.mgmt.reconcile_networks(nets).await;
        let cns = self
            .resources
            .typed::<ClusterNetwork>(ClusterNetwork::KIND)
            .await?;
        let vcs = self.resources.typed::<VlanConfig>(VlanConfig::KIND).await?;
        let vifs = self
            .resources
            .typed::<VlanInterface>(VlanInterface::KIND)
            .await?;
        let node = self.node.cfg.node.clone();
        let clients: Vec<ClientSpec> = vifs
            .iter()
            .filter(|v| v.spec.dhcp && selects(&v.spec.node_selector, &self.node.cfg.node_labels))
            .map(|v| ClientSpec {
                owner: format!("vif:{}", v.metadata.name),
                hostname: format!("{node}-{}", v.metadata.name),
            })
            .collect();
        self.dhcp_clients.stop_unwanted(&clients).await;
        let vlan = self.vlan.reconcile(cns, vcs, vifs).await;
        self.dhcp_clients.sync(clients).await;
        let dhcp = self.sync_dhcp().await;
        let vips = self.sync_vips().await;
        mgmt.and(vlan).and(dhcp).and(vips)
    }

    /// Brings the VIP controller in line with VirtualIPs and their pools.
    pub async fn sync_vips(&self) -> Result<(), ApiError> {
        let vips = self.resources.typed::<VirtualIp>(VirtualIp::KIND).await?;
        let pools = self
            .resources
            .typed::<VirtualIpPool>(VirtualIpPool::KIND)
            .await?;
        let peers = self.resources.typed::<BgpPeer>(BgpPeer::KIND).await?;
        self.vip.reconcile(vips, pools, peers).await;
        Ok(())
    }

    /// Brings DHCP pools and this node's responders in line with the
    /// resources and the VLAN ports here.
    pub async fn sync_dhcp(&self) -> Result<(), ApiError> {
        let pools = self.resources.typed::<IpPool>(IpPool::KIND).await?;
        let vmncs = self
            .resources
            .typed::<VirtualMachineNetworkConfig>(VirtualMachineNetworkConfig::KIND)
            .await?;
        self.dhcp.reconcile(pools, vmncs).await
    }

    /// Watches resource changes made anywhere (API, another node sharing
    /// the store) and reconciles; runs the periodic datapath chores.
    pub fn spawn_watchers(self: &Arc<Self>) {
        self.members.spawn();
        self.dhcp.spawn_watch();
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                me.dhcp.collect_garbage().await;
            }
        });
        if !self.node.cfg.vip_only {
            let me = self.clone();
            tokio::spawn(async move {
                // Port security follows lease expiry (binds and releases
                // are pushed as they happen).
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    tick.tick().await;
                    me.dhcp.push_address_book().await;
                }
            });
        }
        let me = self.clone();
        tokio::spawn(async move {
            // Uplink carrier checks at bonding's default miimon pace.
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut n: u64 = 0;
            loop {
                tick.tick().await;
                me.vlan.monitor_uplinks().await;
                n += 1;
                if n.is_multiple_of(100) {
                    me.vlan.expire_fdb().await;
                }
            }
        });
        if !self.node.cfg.vip_only {
            let me = self.clone();
            tokio::spawn(async move {
                // Other nodes' subnet leases (joins, departures, moved
                // underlay addresses) become routes here; the timer also
                // repairs kernel drift and follows underlay changes.
                let mut w = me.node.store.watch("/furrow/subnets/");
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    tokio::select! {
                        ev = w.next() => {
                            if let Err(WatchError::Closed) = ev {
                                return;
                            }
                        }
                        _ = tick.tick() => {}
                    }
                    if let Err(e) = me.mgmt.sync_overlay().await {
                        tracing::warn!(error = %e, "syncing cross-node routes");
                    }
                }
            });
        }
        let me = self.clone();
        tokio::spawn(async move {
            // BGPPeer passwordFiles (mounted Secrets change in place):
            // a changed key restarts that peer's session.
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                if me.vip.bgp_secrets_changed().await {
                    tracing::info!("a BGPPeer passwordFile changed; reconfiguring the speaker");
                    if let Err(e) = me.sync_vips().await {
                        tracing::warn!(error = %e, "VIP reconcile after a passwordFile change failed");
                    }
                }
            }
        });
        let me = self.clone();
        tokio::spawn(async move {
            let mut w = me.node.store.watch("/furrow/resources/");
            loop {
                match w.next().await {
                    Ok(_) | Err(WatchError::Lagged(_)) => {
                        if let Err(e) = me.reconcile("watch").await {
                            tracing::error!(error = %e, "reconcile after a resource change failed");
                        }
                    }
                    Err(WatchError::Closed) => return,
                }
            }
        });
    }

    /// Validates and stores one document, refusing changes that would
    /// strand existing ports.
    pub async fn apply_doc(&self, doc: Value) -> Result<Value, ApiError> {
        let v = resources::validate(&doc)?;
        self.resources
            .check_stored_conflicts(&v, &self.node.cfg.node, &self.node.cfg.node_labels)
            .await?;
        if v.kind == ManagementNetwork::KIND {
            if let Some(old) = self.resources.get(v.kind, &v.name).await? {
                let old: ManagementNetwork =
                    serde_json::from_value(old).map_err(|e| ApiError::internal(e.to_string()))?;
                let new: ManagementNetwork = serde_json::from_value(v.doc.clone())
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                let users = self.ports_using(&v.name).await?;
                if users > 0 {
                    for (field, changed) in [
                        (
                            "spec.clusterCIDR",
                            old.spec.cluster_cidr != new.spec.cluster_cidr,
                        ),
                        (
                            "spec.nodeSubnetPrefixLength",
                            old.spec.node_subnet_prefix_length
                                != new.spec.node_subnet_prefix_length,
                        ),
                    ] {
                        if changed {
                            return Err(ApiError::new(
                                code::CONFLICT,
                                format!(
                                    "{field} of ManagementNetwork {:?} cannot change while {users} port(s) on this node use it",
                                    v.name
                                ),
                            ));
                        }
                    }
                }
            }
        }
        if v.kind == ClusterNetwork::KIND {
            if let Some(old) = self.resources.get(v.kind, &v.name).await? {
                let old: ClusterNetwork =
                    serde_json::from_value(old).map_err(|e| ApiError::internal(e.to_string()))?;
                let new: ClusterNetwork = serde_json::from_value(v.doc.clone())
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                let users = self.vlan_ports_on(&v.name).await?;
                if users > 0 && old.spec.backend != new.spec.backend {
                    return Err(ApiError::new(
                        code::CONFLICT,
                        format!(
                            "spec.backend of ClusterNetwork {:?} cannot change while {users} port(s) on this node use it",
                            v.name
                        ),
                    ));
                }
            }
        }
        self.resources.put(v).await
    }

    async fn vlan_ports_on(&self, cluster_network: &str) -> Result<usize, ApiError> {
        Ok(self
            .vlan
            .records()
            .await?
            .iter()
            .filter(|r| r.cluster_network == cluster_network)
            .count())
    }

    pub async fn apply(&self, doc: Value) -> Result<Value, ApiError> {
        self.refuse_if_kubernetes()?;
        let stored = self.apply_doc(doc).await?;
        self.reconcile("api").await.map_err(|e| {
            ApiError::new(
                e.code,
                format!(
                    "stored, but this node could not put it into effect: {}",
                    e.msg
                ),
            )
        })?;
        Ok(stored)
    }

    pub async fn delete_resource(&self, kind: &str, name: &str) -> Result<(), ApiError> {
        self.refuse_if_kubernetes()?;
        if kind == ManagementNetwork::KIND {
            let users = self.ports_using(name).await?;
            if users > 0 {
                return Err(ApiError::new(
                    code::CONFLICT,
                    format!("ManagementNetwork {name:?} is used by {users} port(s) on this node; delete them first"),
                ));
            }
        }
        if kind == ClusterNetwork::KIND {
            let users = self.vlan_ports_on(name).await?;
            if users > 0 {
                return Err(ApiError::new(
                    code::CONFLICT,
                    format!("ClusterNetwork {name:?} is used by {users} port(s) on this node; delete them first"),
                ));
            }
        }
        if kind == VlanConfig::KIND {
            if let Some(doc) = self.resources.get(kind, name).await? {
                let vc: VlanConfig =
                    serde_json::from_value(doc).map_err(|e| ApiError::internal(e.to_string()))?;
                let users = self.vlan_ports_on(&vc.spec.cluster_network).await?;
                if users > 0 && selects(&vc.spec.node_selector, &self.node.cfg.node_labels) {
                    return Err(ApiError::new(
                        code::CONFLICT,
                        format!(
                            "VlanConfig {name:?} is the uplink of cluster network {} for {users} port(s) on this node; delete them first",
                            vc.spec.cluster_network
                        ),
                    ));
                }
            }
        }
        if !self.resources.delete(kind, name).await? {
            return Err(ApiError::new(
                code::NOT_FOUND,
                format!("{kind} {name:?} not found"),
            ));
        }
        self.reconcile("api").await
    }

    async fn ports_using(&self, network: &str) -> Result<usize, ApiError> {
        Ok(self
            .mgmt
            .records()
            .await?
            .iter()
            .filter(|r| r.network == network)
            .count())
    }

    fn driver(&self, req: &AttachmentRequest) -> Result<&dyn NetworkDriver, ApiError> {
        self.refuse_if_vip_only()?;
        Ok(match req.attachment {
            AttachmentSpec::Management(_) => &self.mgmt,
            AttachmentSpec::Vlan(_) => &self.vlan,
        })
    }

    async fn all_ports(&self) -> Result<Vec<AnyPort>, ApiError> {
        ports::list_all(self.node.store.as_ref(), &self.node.cfg.node)
            .await
            .map_err(crate::resources::store_error)
    }

    /// ADD and CHECK: identifiers, netns and the attachment's options;
    /// DEL only the identifiers (the plugin passes on what it could not
    /// parse, so a runtime can still clean up).
    fn validate_request(req: &AttachmentRequest, del: bool) -> Result<(), ApiError> {
        if del {
            req.validate_ids()
        } else {
            req.validate()
        }
    }

    /// Runs one CNI command, counting and timing it.
    async fn timed<T>(
        &self,
        command: &'static str,
        f: impl std::future::Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        let t = Instant::now();
        let r = f.await;
        let outcome = match &r {
            Ok(_) => "ok".to_string(),
            Err(e) => e.code.to_string(),
        };
        let m = &self.node.metrics;
        m.inc(
            "furrow_cni_requests_total",
            vec![("command", command.into()), ("outcome", outcome)],
        );
        m.observe(
            "furrow_cni_request_duration_seconds",
            vec![("command", command.into())],
            t.elapsed().as_secs_f64(),
        );
        if let Err(e) = &r {
            tracing::warn!(command, code = e.code, error = %e.msg, "CNI request failed");
        }
        r
    }

    pub async fn cni_add(&self, req: AttachmentRequest) -> Result<CniResult, ApiError> {
        self.timed("add", async {
            Self::validate_request(&req, false)?;
            let r = self.driver(&req)?.add(&req).await?;
            self.after_vlan_change(&req).await;
            Ok(r)
        })
        .await
    }

    pub async fn cni_del(&self, req: AttachmentRequest) -> Result<(), ApiError> {
        self.timed("del", async {
            Self::validate_request(&req, true)?;
            self.driver(&req)?.del(&req).await?;
            self.after_vlan_change(&req).await;
            Ok(())
        })
        .await
    }

    /// A VM came to or left a VLAN network here: its pool's responder
    /// starts before ADD returns (the VM's first DISCOVER finds it) and
    /// stops with the last VM. A failure is the pool's status, not the
    /// attachment's.
    async fn after_vlan_change(&self, req: &AttachmentRequest) {
        if matches!(req.attachment, AttachmentSpec::Vlan(_))
            && self.dhcp.serves_network(&req.network_name).await
        {
            if let Err(e) = self.sync_dhcp().await {
                tracing::warn!(error = %e, "DHCP responders not brought in line");
            }
        }
    }

    pub async fn cni_check(&self, req: AttachmentRequest) -> Result<(), ApiError> {
        self.timed("check", async {
            Self::validate_request(&req, false)?;
            self.driver(&req)?.check(&req).await
        })
        .await
    }

    fn refuse_if_vip_only(&self) -> Result<(), ApiError> {
        if self.node.cfg.vip_only {
            return Err(ApiError::new(
                code::NOT_AVAILABLE,
                "netd runs with --vip-only: it attaches no pods or VMs (run netd without it on this node)",
            ));
        }
        Ok(())
    }

    pub async fn cni_gc(&self, req: GcRequest) -> Result<GcResponse, ApiError> {
        self.refuse_if_vip_only()?;
        self.timed("gc", async {
            req.validate()?;
            let valid: BTreeSet<(String, String)> = req
                .valid_attachments
                .iter()
                .map(|a| (a.container_id.clone(), a.ifname.clone()))
                .collect();
            let mut out = GcResponse::default();
            for port in self.all_ports().await? {
                let (cid, ifname) = (port.container_id().to_string(), port.ifname().to_string());
                if port.network_name() != req.network_name
                    || valid.contains(&(cid.clone(), ifname.clone()))
                {
                    continue;
                }
                let driver: &dyn NetworkDriver = match port {
                    AnyPort::Management(_) => &self.mgmt,
                    AnyPort::Vlan(_) => &self.vlan,
                };
                match driver.release(&port).await {
                    Ok(()) => out.released.push(AttachmentRef {
                        container_id: cid,
                        ifname,
                    }),
                    Err(e) => out.errors.push(format!("{cid}/{ifname}: {}", e.msg)),
                }
            }
            Ok(out)
        })
        .await
    }

    /// Whether ADD can be served now (CNI STATUS).
    pub async fn cni_status(&self) -> ReadyResponse {
        let not_ready = |reason: String| ReadyResponse {
            ready: false,
            reason,
        };
        if self.node.cfg.vip_only {
            return not_ready("netd runs with --vip-only: no pod networking".into());
        }
        if let Err(e) = self.node.store.revision().await {
            return not_ready(format!("store: {e}"));
        }
        let nets = self.mgmt.network_names().await;
        if nets.is_empty() {
            return not_ready("no management network is configured".into());
        }
        for n in nets {
            if self.node.masq_network(&n).await {
                match self.node.masq_rule_present(&n).await {
                    Ok(true) => {}
                    Ok(false) => {
                        return not_ready(format!("masquerade rule of network {n} is missing"))
                    }
                    Err(e) => return not_ready(format!("nftables: {e}")),
                }
            }
        }
        ReadyResponse {
            ready: true,
            reason: String::new(),
        }
    }

    pub async fn ports(&self) -> Result<Vec<PortInfo>, ApiError> {
        let links = self
            .node
            .host
            .links()
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let index: BTreeMap<String, u32> = links.into_iter().map(|l| (l.name, l.index)).collect();
        let stats = self
            .node
            .try_with_datapath(|dp| dp.all_port_stats())
            .await
            .and_then(|r| r.ok())
            .unwrap_or_default();
        let stats: BTreeMap<u32, furrow_ebpf::PortStats> = stats.into_iter().collect();
        let mut out = Vec::new();
        for rec in self.all_ports().await? {
            let idx = index.get(rec.host_ifname()).copied();
            let mut info = rec.to_info(idx);
            if let Some(s) = idx.and_then(|i| stats.get(&i)) {
                info.counters = Some(PortCounters {
                    tx_packets: s.tx_packets,
                    tx_bytes: s.tx_bytes,
                    rx_packets: s.rx_packets,
                    rx_bytes: s.rx_bytes,
                    redirected_packets: s.redirected_packets,
                    drops: s.drops().iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                });
            }
            out.push(info);
        }
        Ok(out)
    }

    pub async fn networks(&self) -> Result<Vec<NetworkInfo>, ApiError> {
        self.mgmt.network_infos().await
    }

    pub async fn status(&self) -> Result<NodeStatus, ApiError> {
        let cfg = &self.node.cfg;
        let store = match self.node.store.revision().await {
            Ok(rev) => StoreStatus {
                backend: self.node.store.backend().into(),
                location: self.node.store.location(),
                healthy: true,
                message: String::new(),
                revision: rev,
            },
            Err(e) => StoreStatus {
                backend: self.node.store.backend().into(),
                location: self.node.store.location(),
                healthy: false,
                message: e.to_string(),
                revision: 0,
            },
        };
        let (info, attachments) = self
            .node
            .try_with_datapath(|dp| (dp.status(), dp.attachments()))
            .await
            .unwrap_or_else(|| {
                let info = furrow_ebpf::DatapathInfo {
                    mode: "none (--vip-only)".into(),
                    pin_dir: Default::default(),
                    programs: Vec::new(),
                    maps: Vec::new(),
                };
                (info, Ok(Vec::new()))
            });
        let (attachments, dp_message) = match attachments {
            Ok(a) => (a, String::new()),
            Err(e) => (Vec::new(), format!("listing the attachments: {e}")),
        };
        let datapath = DatapathStatus {
            mode: info.mode.clone(),
            healthy: dp_message.is_empty(),
            message: dp_message,
            attachments: attachments
                .into_iter()
                .map(|a| furrow_api::wire::DatapathAttachment {
                    ifname: a.ifname,
                    ifindex: a.ifindex,
                    hook: a.hook.into(),
                    mode: a.mode.into(),
                    link_id: a.link_id,
                    prog_id: a.prog_id,
                    program: a.program,
                })
                .collect(),
            pin_dir: info.pin_dir.display().to_string(),
            programs: info.programs.clone(),
            maps: info
                .maps
                .iter()
                .map(|m| MapUsage {
                    name: m.name.clone(),
                    entries: m.entries.unwrap_or(0),
                    max_entries: m.max_entries,
                })
                .collect(),
        };
        let mut fw_msgs = Vec::new();
        for n in self.mgmt.network_names().await {
            if self.node.masq_network(&n).await {
                match self.node.masq_rule_present(&n).await {
                    Ok(true) => {}
                    Ok(false) => fw_msgs.push(format!("masquerade rule of {n} missing")),
                    Err(e) => fw_msgs.push(e.to_string()),
                }
            }
        }
        let config_errors = self.config_errors.lock().expect("poisoned").clone();
        let mut store = store;
        if !config_errors.is_empty() {
            let origin = if self.from_kubernetes() {
                "Kubernetes objects not in effect"
            } else {
                "config directory"
            };
            store.message = format!("{origin}: {}", config_errors.join("; "));
        }
        let firewall = FirewallStatus {
            backend: self.node.firewall.name().into(),
            table: self.node.firewall.table().to_string(),
            healthy: fw_msgs.is_empty(),
            message: fw_msgs.join("; "),
        };
        let recs = self.all_ports().await?;
        let count = |s: PortState| recs.iter().filter(|r| r.state() == s).count() as u32;
        Ok(NodeStatus {
            node: cfg.node.clone(),
            instance: cfg.instance.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            api_version: furrow_api::API_VERSION,
            pid: std::process::id(),
            started_at: self.started_at,
            store,
            datapath,
            firewall,
            networks: self.networks().await?,
            cluster_networks: self.vlan.infos().await?,
            kernel: self.vlan.features().await,
            ports: PortSummary {
                total: recs.len() as u32,
                ready: count(PortState::Ready),
                pending: count(PortState::Pending),
                lost: count(PortState::Lost),
                deleting: count(PortState::Deleting),
            },
        })
    }

    pub async fn metrics_text(&self) -> String {
        let mut out = String::new();
        self.node.metrics.render(&mut out);
        family(
            &mut out,
            "furrow_build_info",
            "gauge",
            "netd build and instance.",
            &[(
                vec![
                    ("version", env!("CARGO_PKG_VERSION").to_string()),
                    ("node", self.node.cfg.node.clone()),
                    ("instance", self.node.cfg.instance.clone()),
                ],
                1.0,
            )],
        );
        if let Ok(rev) = self.node.store.revision().await {
            family(
                &mut out,
                "furrow_store_revision",
                "gauge",
                "Current revision of the store.",
                &[(vec![], rev as f64)],
            );
        }
        if let Ok(nets) = self.networks().await {
            let mut samples = Vec::new();
            for n in &nets {
                samples.push((
                    vec![
                        ("network", n.name.clone()),
                        ("state", "allocated".to_string()),
                    ],
                    n.addresses_allocated as f64,
                ));
                samples.push((
                    vec![("network", n.name.clone()), ("state", "free".to_string())],
                    (n.addresses_total - n.addresses_allocated) as f64,
                ));
            }
            family(
                &mut out,
                "furrow_ipam_addresses",
                "gauge",
                "Addresses of this node's subnet, by state.",
                &samples,
            );
        }
        if let Ok(ports) = self.ports().await {
            let states = [
                ("pending", PortState::Pending),
                ("ready", PortState::Ready),
                ("lost", PortState::Lost),
                ("deleting", PortState::Deleting),
            ];
            let samples: Vec<_> = states
                .iter()
                .map(|(n, s)| {
                    (
                        vec![("state", n.to_string())],
                        ports.iter().filter(|p| p.state == *s).count() as f64,
                    )
                })
                .collect();
            family(
                &mut out,
                "furrow_ports",
                "gauge",
                "Attachments on this node, by state.",
                &samples,
            );
            type Pick = fn(&PortCounters) -> u64;
            let series: [(&str, &str, Pick); 5] = [
                (
                    "furrow_port_tx_packets_total",
                    "Packets the pod sent.",
                    |c| c.tx_packets,
                ),
                ("furrow_port_tx_bytes_total", "Bytes the pod sent.", |c| {
                    c.tx_bytes
                }),
                (
                    "furrow_port_rx_packets_total",
                    "Packets delivered to the pod.",
                    |c| c.rx_packets,
                ),
                (
                    "furrow_port_rx_bytes_total",
                    "Bytes delivered to the pod.",
                    |c| c.rx_bytes,
                ),
                (
                    "furrow_port_redirected_packets_total",
                    "Packets the datapath delivered straight to another local pod.",
                    |c| c.redirected_packets,
                ),
            ];
            for (name, help, pick) in series {
                let samples: Vec<_> = ports
                    .iter()
                    .filter_map(|p| {
                        let c = p.counters.as_ref()?;
                        Some((
                            vec![
                                ("network", p.network_name.clone()),
                                ("container_id", p.container_id.clone()),
                                ("ifname", p.ifname.clone()),
                            ],
                            pick(c) as f64,
                        ))
                    })
                    .collect();
                family(&mut out, name, "counter", help, &samples);
            }
            // Every drop reason the port's counters name (VLAN filter, MTU,
            // DHCP guard, port security's spoof-* and ra-guard, ...).
            let samples: Vec<_> = ports
                .iter()
                .filter_map(|p| Some((p, p.counters.as_ref()?)))
                .flat_map(|(p, c)| {
                    c.drops.iter().map(move |(reason, n)| {
                        (
                            vec![
                                ("network", p.network_name.clone()),
                                ("container_id", p.container_id.clone()),
                                ("ifname", p.ifname.clone()),
                                ("reason", reason.clone()),
                            ],
                            *n as f64,
                        )
                    })
                })
                .collect();
            family(
                &mut out,
                "furrow_port_drops_total",
                "counter",
                "Frames the pod sent that the datapath dropped, by reason.",
                &samples,
            );
        }
        let vs = self.vlan.vlan_stats().await;
        type VPick = fn(&furrow_ebpf::VlanStats) -> u64;
        let vseries: [(&str, &str, VPick); 9] = [
            (
                "furrow_vlan_rx_packets_total",
                "Frames accepted into the VLAN, from any port.",
                |s| s.rx_packets,
            ),
            (
                "furrow_vlan_rx_bytes_total",
                "Bytes accepted into the VLAN.",
                |s| s.rx_bytes,
            ),
            (
                "furrow_vlan_unicast_packets_total",
                "Frames delivered to the one port owning the destination MAC.",
                |s| s.unicast_packets,
            ),
            (
                "furrow_vlan_flood_packets_total",
                "Broadcast, multicast and unknown-unicast frames flooded.",
                |s| s.flood_packets,
            ),
            (
                "furrow_vlan_flood_copies_total",
                "Copies made by flooding, one per member port reached.",
                |s| s.flood_copies,
            ),
            (
                "furrow_vlan_drop_mtu_total",
                "Frames dropped for exceeding the egress port's MTU.",
                |s| s.drop_mtu,
            ),
            (
                "furrow_vlan_drop_hairpin_total",
                "Frames whose destination was their ingress port.",
                |s| s.drop_hairpin,
            ),
            (
                "furrow_vlan_dhcp_steered_total",
                "DHCP client frames from VM ports steered to this node's responder.",
                |s| s.dhcp_steered,
            ),
            (
                "furrow_vlan_drop_dhcp_guard_total",
                "DHCP server replies from untrusted VM ports, dropped (DHCP guard).",
                |s| s.drop_dhcp_guard,
            ),
        ];
        for (name, help, pick) in vseries {
            let samples: Vec<_> = vs
                .iter()
                .map(|(cn, vid, s)| {
                    (
                        vec![("cluster_network", cn.clone()), ("vlan", vid.to_string())],
                        pick(s) as f64,
                    )
                })
                .collect();
            family(&mut out, name, "counter", help, &samples);
        }
        let samples: Vec<_> = self
            .dhcp
            .lease_counts()
            .await
            .into_iter()
            .map(|(pool, state, n)| (vec![("pool", pool), ("state", state)], n as f64))
            .collect();
        family(
            &mut out,
            "furrow_dhcp_leases",
            "gauge",
            "DHCP lease records of each pool (all nodes'), by state.",
            &samples,
        );
        let samples: Vec<_> = self
            .dhcp
            .pools()
            .await
            .into_iter()
            .map(|p| (vec![("pool", p.name)], p.capacity as f64))
            .collect();
        family(
            &mut out,
            "furrow_dhcp_pool_capacity",
            "gauge",
            "Addresses a pool can hand out (range minus exclusions).",
            &samples,
        );
        let held = self.vip.held_gauge().await;
        let samples: Vec<_> = held
            .iter()
            .map(|(n, h, _)| (vec![("vip", n.clone())], *h as f64))
            .collect();
        family(
            &mut out,
            "furrow_vip_held",
            "gauge",
            "1 for each VIP this node holds now, 0 for the others it knows.",
            &samples,
        );
        let samples: Vec<_> = self
            .vip
            .fence_drops()
            .into_iter()
            .map(|(reason, n)| (vec![("reason", reason.to_string())], n as f64))
            .collect();
        family(
            &mut out,
            "furrow_vip_fence_drops_total",
            "counter",
            "Packets for a VIP past its fencing deadline that the kernel fence dropped.",
            &samples,
        );
        let info = self
            .node
            .try_with_datapath(|dp| dp.status())
            .await
            .unwrap_or_else(|| furrow_ebpf::DatapathInfo {
                mode: "none (--vip-only)".into(),
                pin_dir: Default::default(),
                programs: Vec::new(),
                maps: Vec::new(),
            });
        let samples: Vec<_> = info
            .maps
            .iter()
            .filter_map(|m| Some((vec![("map", m.name.clone())], m.entries? as f64)))
            .collect();
        family(
            &mut out,
            "furrow_datapath_map_entries",
            "gauge",
            "Entries in each BPF map.",
            &samples,
        );
        let samples: Vec<_> = info
            .maps
            .iter()
            .map(|m| (vec![("map", m.name.clone())], m.max_entries as f64))
            .collect();
        family(
            &mut out,
            "furrow_datapath_map_capacity",
            "gauge",
            "Capacity of each BPF map.",
            &samples,
        );
        out
    }
}
