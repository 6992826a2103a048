//! netd as a DHCP client: addresses this node holds on VLANs (node
//! interfaces of VlanInterfaces with `dhcp: true`; VIPs build on the same
//! task), acquired with a stable generated MAC and kept renewed through
//! restarts, and one-shot discovery of a VLAN's subnet and gateway
//! (Harvester's route "auto" mode).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use furrow_api::wire::{DhcpClientInfo, DiscoverRequest, DiscoveredNetwork};
use furrow_api::{ApiError, MacAddr};
use furrow_dhcp::client::{Client, ClientError, ClientLease, ClientOptions, LeasePhase};
use tokio::sync::Mutex;

use crate::drivers::vlan::{stable_mac, NodePortSpec, VlanDriver};
use crate::node::Node;
use crate::resources::store_error;
use crate::store::{Op, Txn};

/// Retry pace after a failed acquisition: doubling up to a minute.
const RETRY_MIN: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(60);
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

fn lease_key(node: &str, owner: &str) -> String {
    format!("/furrow/dhcp-clients/{node}/{owner}")
}

fn discovered_prefix() -> &'static str {
    "/furrow/discovered-networks/"
}

fn discovered_key(cn: &str, vlan: u16) -> String {
    format!("{}{cn}/{vlan}", discovered_prefix())
}

fn now() -> u64 {
    crate::util::now_secs()
}

/// What an address is wanted for, and on which node port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSpec {
    /// `vif:<name>`; also the node port's id.
    pub owner: String,
    pub hostname: String,
}

struct Shared {
    info: DhcpClientInfo,
    lease: Option<ClientLease>,
}

struct Task {
    ifindex: u32,
    handle: tokio::task::JoinHandle<()>,
    shared: Arc<std::sync::Mutex<Shared>>,
}

#[derive(Clone)]
pub struct DhcpClients {
    node: Arc<Node>,
    vlan: VlanDriver,
    tasks: Arc<Mutex<BTreeMap<String, Task>>>,
    discover_lock: Arc<Mutex<()>>,
}

impl DhcpClients {
    pub fn new(node: Arc<Node>, vlan: VlanDriver) -> Self {
        DhcpClients {
            node,
            vlan,
            tasks: Default::default(),
            discover_lock: Default::default(),
        }
    }

    /// Runs a client for every wanted owner whose node port exists, and
    /// stops (releasing the lease) those no longer wanted.
    pub async fn sync(&self, wanted: Vec<ClientSpec>) {
        self.stop_unwanted(&wanted).await;
        let mut tasks = self.tasks.lock().await;
        for w in wanted {
            let Some(port) = self.vlan.node_port(&w.owner).await else {
                // Its node port could not be built (the reason is logged
                // there); nothing to run a client on.
                if let Some(t) = tasks.remove(&w.owner) {
                    self.stop(&w.owner, t, false).await;
                }
                continue;
            };
            if let Some(t) = tasks.get(&w.owner) {
                if t.ifindex == port.node_index && !t.handle.is_finished() {
                    continue;
                }
                // The port was rebuilt: the client follows it, lease kept.
                let t = tasks.remove(&w.owner).expect("present");
                t.handle.abort();
            }
            let shared = Arc::new(std::sync::Mutex::new(Shared {
                info: DhcpClientInfo {
                    owner: w.owner.clone(),
                    interface: port.node_if.clone(),
                    mac: port.spec.mac,
                    state: "acquiring".into(),
                    address: None,
                    router: None,
                    server: None,
                    dns: Vec::new(),
                    renew_at: 0,
                    expires_at: 0,
                    error: None,
                },
                lease: None,
            }));
            let run = Run {
                node: self.node.clone(),
                owner: w.owner.clone(),
                ifindex: port.node_index,
                mac: port.spec.mac,
                hostname: w.hostname.clone(),
                shared: shared.clone(),
            };
            let handle = tokio::spawn(run.run());
            tasks.insert(
                w.owner.clone(),
                Task {
                    ifindex: port.node_index,
                    handle,
                    shared,
                },
            );
        }
    }

    /// Stops (releasing their leases) the clients not in `wanted`: called
    /// before their node ports go, so the RELEASE still has a way out.
    pub async fn stop_unwanted(&self, wanted: &[ClientSpec]) {
        let mut tasks = self.tasks.lock().await;
        let names: std::collections::BTreeSet<&str> =
            wanted.iter().map(|w| w.owner.as_str()).collect();
        for owner in tasks.keys().cloned().collect::<Vec<_>>() {
            if !names.contains(owner.as_str()) {
                let t = tasks.remove(&owner).expect("listed");
                self.stop(&owner, t, true).await;
            }
        }
    }

    /// Stops a client; with `release`, gives the lease back and forgets it.
    async fn stop(&self, owner: &str, t: Task, release: bool) {
        t.handle.abort();
        let _ = t.handle.await;
        if !release {
            return;
        }
        let lease = t.shared.lock().expect("poisoned").lease.take();
        if let Some(l) = lease {
            let _ = self
                .node
                .host
                .del_address_v4(l.ifindex, l.ip, l.prefix)
                .await;
            match tokio::time::timeout(RELEASE_TIMEOUT, Client::for_lease(&l).release(&l)).await {
                Ok(Ok(())) => tracing::info!(owner, ip = %l.ip, "DHCP lease released"),
                Ok(Err(e)) => tracing::warn!(owner, ip = %l.ip, error = %e, "DHCP release failed"),
                Err(_) => tracing::warn!(owner, ip = %l.ip, "DHCP release timed out"),
            }
        }
        let key = lease_key(&self.node.cfg.node, owner);
        if let Err(e) = self.node.store.txn(Txn::new().then(Op::Delete(key))).await {
            tracing::warn!(owner, error = %e, "forgetting a DHCP client lease");
        }
    }

    pub async fn infos(&self) -> Vec<DhcpClientInfo> {
        let tasks = self.tasks.lock().await;
        tasks
            .values()
            .map(|t| t.shared.lock().expect("poisoned").info.clone())
            .collect()
    }

    /// Asks the VLAN's DHCP server what the network is (subnet, gateway,
    /// DNS), from a short-lived node port, without taking a lease; the
    /// answer is kept in the store for every node to show.
    pub async fn discover(&self, req: DiscoverRequest) -> Result<DiscoveredNetwork, ApiError> {
        req.validate()?;
        let timeout = req
            .timeout_seconds
            .unwrap_or(DiscoverRequest::DEFAULT_TIMEOUT);
        let _one = self.discover_lock.lock().await;
        let id = format!("discover:{}:{}", req.cluster_network, req.vlan);
        let mac = stable_mac(&format!("{id}@{}", self.node.cfg.node));
        let port = self
            .vlan
            .ensure_node_port(NodePortSpec {
                id: id.clone(),
                cluster_network: req.cluster_network.clone(),
                vid: req.vlan,
                address: None,
                mac,
                mtu: None,
                dhcp_responder: false,
            })
            .await
            .map_err(|e| {
                ApiError::new(
                    furrow_api::error::code::INVALID_CONFIG,
                    format!("clusterNetwork {}: {e}", req.cluster_network),
                )
            })?;
        let found = furrow_dhcp::client::discover(
            port.node_index,
            mac,
            Duration::from_secs(timeout.into()),
        )
        .await;
        self.vlan.remove_node_port(&id).await;
        let info = found.map_err(|e| {
            let code = match e {
                ClientError::Timeout { .. } => furrow_api::error::code::NOT_AVAILABLE,
                _ => furrow_api::error::code::IO,
            };
            ApiError::new(
                code,
                format!(
                    "discovering cluster network {} VLAN {}: {e}",
                    req.cluster_network, req.vlan
                ),
            )
        })?;
        let d = DiscoveredNetwork {
            cluster_network: req.cluster_network.clone(),
            vlan: req.vlan,
            cidr: info.cidr,
            gateway: info.router,
            server: info.server_id,
            dns: info.dns,
            mtu: info.mtu,
            discovered_at: now(),
        };
        self.node
            .store
            .txn(Txn::new().then(Op::put_json(
                discovered_key(&req.cluster_network, req.vlan),
                &d,
            )))
            .await
            .map_err(store_error)?;
        tracing::info!(cluster_network = %d.cluster_network, vlan = d.vlan, cidr = %d.cidr, gateway = ?d.gateway, server = %d.server, "VLAN network discovered");
        Ok(d)
    }

    /// Every discovery made by any node.
    pub async fn discovered(&self) -> Result<Vec<DiscoveredNetwork>, ApiError> {
        let kvs = self
            .node
            .store
            .list(discovered_prefix())
            .await
            .map_err(store_error)?;
        Ok(kvs
            .iter()
            .filter_map(|kv| kv.decode::<DiscoveredNetwork>().ok())
            .collect())
    }
}

/// One client's life: acquire, renew at T1, rebind at T2, start over at
/// expiry or on a NAK, with the address on the node port all along.
struct Run {
    node: Arc<Node>,
    owner: String,
    ifindex: u32,
    mac: MacAddr,
    hostname: String,
    shared: Arc<std::sync::Mutex<Shared>>,
}

impl Run {
    fn set(&self, f: impl FnOnce(&mut Shared)) {
        f(&mut self.shared.lock().expect("poisoned"));
    }

    fn state(&self, state: &str, error: Option<String>) {
        self.set(|s| {
            s.info.state = state.into();
            s.info.error = error;
        });
    }

    async fn load(&self) -> Option<ClientLease> {
        let key = lease_key(&self.node.cfg.node, &self.owner);
        let kv = self.node.store.get(&key).await.ok()??;
        let mut l: ClientLease = kv.decode().ok()?;
        if l.mac != self.mac || l.phase(now()) == LeasePhase::Expired {
            return None;
        }
        // A rebuilt port has a new index; the lease is the same.
        l.ifindex = self.ifindex;
        Some(l)
    }

    async fn persist(&self, l: &ClientLease) {
        let key = lease_key(&self.node.cfg.node, &self.owner);
        if let Err(e) = self
            .node
            .store
            .txn(Txn::new().then(Op::put_json(key, l)))
            .await
        {
            // Not fatal: without it a restart starts with a new DISCOVER
            // (the server still knows the MAC and offers the same address).
            tracing::warn!(owner = %self.owner, error = %e, "persisting a DHCP client lease");
        }
    }

    /// Puts the lease's address on the port (and takes a previous,
    /// different one off).
    async fn apply(&self, new: &ClientLease, old: Option<&ClientLease>) {
        if let Some(o) = old {
            if (o.ip, o.prefix) != (new.ip, new.prefix) {
                let _ = self
                    .node
                    .host
                    .del_address_v4(self.ifindex, o.ip, o.prefix)
                    .await;
            }
        }
        if let Err(e) = self
            .node
            .host
            .add_address_v4(self.ifindex, new.ip, new.prefix, false)
            .await
        {
            tracing::error!(owner = %self.owner, ip = %new.ip, error = %e, "adding the leased address");
        }
        self.persist(new).await;
        self.set(|s| {
            s.lease = Some(new.clone());
            s.info.address = ipnet::Ipv4Net::new(new.ip, new.prefix).ok();
            s.info.router = new.router;
            s.info.server = Some(new.server_id);
            s.info.dns = new.dns.clone();
            s.info.renew_at = new.renew_at();
            s.info.expires_at = new.expires_at();
            s.info.state = "bound".into();
            s.info.error = None;
        });
    }

    async fn drop_lease(&self, l: &ClientLease, why: &str) {
        tracing::warn!(owner = %self.owner, ip = %l.ip, why, "DHCP lease lost");
        let _ = self
            .node
            .host
            .del_address_v4(self.ifindex, l.ip, l.prefix)
            .await;
        self.set(|s| {
            s.lease = None;
            s.info.address = None;
            s.info.renew_at = 0;
            s.info.expires_at = 0;
        });
    }

    async fn run(self) {
        let client = Client::with_options(
            self.ifindex,
            self.mac,
            ClientOptions {
                hostname: Some(self.hostname.clone()),
                ..Default::default()
            },
        );
        let mut lease = self.load().await;
        if let Some(l) = &lease {
            // Kept from before a restart: in use at once, and confirmed
            // with the server right away (as INIT-REBOOT would).
            self.apply(l, None).await;
            let mut early = l.clone();
            early.t1 = now().saturating_sub(l.obtained_at).min(u64::from(l.t1)) as u32;
            lease = Some(early);
        }
        let mut backoff = RETRY_MIN;
        loop {
            let Some(l) = lease.clone() else {
                self.state("acquiring", None);
                match client.acquire().await {
                    Ok(n) => {
                        tracing::info!(owner = %self.owner, ip = %n.ip, prefix = n.prefix, server = %n.server_id, lease = n.lease_time, "DHCP lease acquired");
                        self.apply(&n, None).await;
                        lease = Some(n);
                        backoff = RETRY_MIN;
                    }
                    Err(e) => {
                        tracing::warn!(owner = %self.owner, error = %e, retry_in = ?backoff, "DHCP acquisition failed");
                        self.state("waiting", Some(e.to_string()));
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(RETRY_MAX);
                    }
                }
                continue;
            };
            let t = now();
            let phase = l.phase(t);
            let result = match phase {
                LeasePhase::Bound => {
                    tokio::time::sleep(l.retry_delay(t)).await;
                    continue;
                }
                LeasePhase::Renewing => {
                    self.state("renewing", None);
                    client.renew(&l).await
                }
                LeasePhase::Rebinding => {
                    self.state("rebinding", None);
                    client.rebind(&l).await
                }
                LeasePhase::Expired => {
                    self.drop_lease(&l, "expired").await;
                    lease = None;
                    continue;
                }
            };
            match result {
                Ok(n) => {
                    tracing::debug!(owner = %self.owner, ip = %n.ip, "DHCP lease renewed");
                    self.apply(&n, Some(&l)).await;
                    lease = Some(n);
                }
                Err(e @ ClientError::Nak { .. }) => {
                    self.drop_lease(&l, &e.to_string()).await;
                    lease = None;
                }
                Err(e) => {
                    // Keep the address until expiry; try again later.
                    let wait = l.retry_delay(now()).max(RETRY_MIN);
                    tracing::warn!(owner = %self.owner, error = %e, retry_in = ?wait, "DHCP renewal failed");
                    self.set(|s| {
                        s.info.state = "bound".into();
                        s.info.error = Some(e.to_string());
                    });
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}
