//! The DHCP service: for every IPPool whose network has VMs on this node, a
//! responder port on the pool's VLAN (the eBPF switch steers those VMs'
//! DHCP to it, and only to it) and a task answering what arrives there.
//! Every node answers from the pool's server address and the same anycast
//! MAC, for its own VMs only; leases are shared through the store, so a VM
//! that moves keeps its address and a node that dies takes only its own
//! VMs' DHCP with it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use furrow_api::resource::{IpPool, VirtualMachineNetworkConfig};
use furrow_api::wire::{LeaseInfo, PoolInfo};
use furrow_api::{ApiError, MacAddr};
use furrow_dhcp::server::{
    self as core, Lease, LeaseChange, LeaseState as CoreState, LeaseView, ServerConfig,
};
use tokio::sync::Mutex;

use super::leases::{self, LeaseCache, LeaseRecord, LeaseState};
use crate::drivers::vlan::portsec::{AddrSource, AddressBook, PortSettings};
use crate::drivers::vlan::{NodePortSpec, VlanDriver};
use crate::node::Node;
use crate::rawsock::arp_reply_for;
use crate::resources::store_error;
use crate::store::{Compare, Op, Txn, WatchError};
use furrow_dhcp::frame::{Addressing, ParseOptions};
use furrow_dhcp::socket::{PacketSocket, Role};

/// The MAC every node's responder for `pool` uses: locally administered,
/// derived from the pool's name, the same cluster-wide.
pub fn anycast_mac(pool: &str) -> MacAddr {
    let h = crate::ports::host_ifname("dhcp-anycast", pool, "");
    let hex = &h[2..];
    let mut m = [0u8; 6];
    m[0] = 0x02;
    for (i, b) in m.iter_mut().enumerate().skip(1) {
        *b = u8::from_str_radix(&hex[(i - 1) * 2..(i - 1) * 2 + 2], 16).unwrap_or(0);
    }
    MacAddr(m)
}

fn now() -> u64 {
    crate::util::now_secs()
}

/// One pool as this node runs it.
struct Pool {
    name: String,
    spec: IpPool,
    cfg: ServerConfig,
    /// The pool's leases (all nodes'), kept current by the store watch.
    cache: Mutex<LeaseCache>,
    /// MAC -> reserved address on this pool's network.
    reservations: BTreeMap<MacAddr, Ipv4Addr>,
    /// Where the next search for a free address starts.
    cursor: std::sync::atomic::AtomicU32,
    responder: Mutex<Option<Responder>>,
    /// Why this node cannot serve the pool, if it cannot.
    problem: std::sync::Mutex<Option<String>>,
}

fn responder_id(pool: &str) -> String {
    format!("dhcp:{pool}")
}

struct Responder {
    cluster_network: String,
    vid: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Requests answered together at most: bounded so the transaction stays
/// under etcd's default limit of 128 compares and operations.
const BATCH: usize = 24;

/// The revision of a cache entry that is not in the store: an offer kept
/// in memory, or a change staged but not yet committed.
const LOCAL: crate::store::Revision = 0;

struct Request {
    addressing: Addressing,
    message: furrow_dhcp::dhcproto::v4::Message,
}

/// A burst's decisions, staged against the cache.
#[derive(Default)]
struct Staged {
    /// Every record read or written, with the revision it had before the
    /// burst (`None`: absent); the transaction holds only if all still do.
    guards: BTreeMap<Ipv4Addr, Option<crate::store::Revision>>,
    /// The last write per address (etcd refuses two on one key in a
    /// transaction); `None` deletes.
    writes: BTreeMap<Ipv4Addr, Option<LeaseRecord>>,
}

/// The lease view `decide` reads: the cache plus reservations.
struct View<'a> {
    pool: &'a Pool,
    cache: &'a LeaseCache,
}

fn to_core(r: &LeaseRecord) -> Lease {
    Lease {
        ip: r.ip,
        mac: r.mac,
        client_id: r.client_id.as_ref().and_then(|h| hex_decode(h)),
        hostname: r.hostname.clone(),
        state: match r.state {
            LeaseState::Offered => CoreState::Offered,
            LeaseState::Bound => CoreState::Bound,
            LeaseState::Declined => CoreState::Declined,
        },
        expires_at: r.expires_at,
        node: r.node.clone(),
    }
}

fn from_core(l: &Lease) -> LeaseRecord {
    LeaseRecord {
        ip: l.ip,
        mac: l.mac,
        client_id: l
            .client_id
            .as_ref()
            .map(|b| b.iter().map(|x| format!("{x:02x}")).collect()),
        hostname: l.hostname.clone(),
        state: match l.state {
            CoreState::Offered => LeaseState::Offered,
            CoreState::Bound => LeaseState::Bound,
            CoreState::Declined => LeaseState::Declined,
        },
        expires_at: l.expires_at,
        node: l.node.clone(),
        updated_at: now(),
    }
}

fn hex_decode(h: &str) -> Option<Vec<u8>> {
    (0..h.len())
        .step_by(2)
        .map(|i| h.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect()
}

impl LeaseView for View<'_> {
    fn by_mac(&self, mac: MacAddr) -> Option<Lease> {
        self.cache
            .by_mac(mac)
            .map(|(r, _)| to_core(r))
            .filter(|l| l.state != CoreState::Declined)
    }

    fn by_ip(&self, ip: Ipv4Addr) -> Option<Lease> {
        self.cache.by_ip(ip).map(|(r, _)| to_core(r))
    }

    fn reserved_ip(&self, mac: MacAddr) -> Option<Ipv4Addr> {
        self.pool.reservations.get(&mac).copied()
    }

    fn reserved_for(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self.pool
            .reservations
            .iter()
            .find(|(_, a)| **a == ip)
            .map(|(m, _)| *m)
    }

    fn free_candidates(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        // Never-used addresses first, from a rotating cursor (a freed
        // address is not handed out again at once), then expired ones.
        let c = &self.pool.spec.spec.ipv4_config;
        let (start, end) = (u32::from(c.pool.start), u32::from(c.pool.end));
        let size = end.saturating_sub(start) + 1;
        let from = self.pool.cursor.load(std::sync::atomic::Ordering::Relaxed) % size.max(1);
        let now = now();
        let unused = (0..size)
            .map(move |i| Ipv4Addr::from(start + (from + i) % size))
            .filter(|ip| self.cache.by_ip(*ip).is_none());
        let expired = self
            .cache
            .iter()
            .filter(move |r| r.expires_at <= now)
            .map(|r| r.ip);
        unused.chain(expired)
    }
}

#[derive(Clone)]
pub struct DhcpService {
    node: Arc<Node>,
    vlan: VlanDriver,
    pools: Arc<Mutex<BTreeMap<String, Arc<Pool>>>>,
    /// Every VirtualMachineNetworkConfig address: (CNI network, MAC, IP),
    /// pool or not (port security takes them as the VMs' addresses).
    reserved: Arc<Mutex<Vec<(String, MacAddr, Ipv4Addr)>>>,
    /// Their port security settings, by (CNI network, MAC).
    settings: Arc<Mutex<BTreeMap<(String, MacAddr), PortSettings>>>,
}

impl DhcpService {
    pub fn new(node: Arc<Node>, vlan: VlanDriver) -> Self {
        DhcpService {
            node,
            vlan,
            pools: Arc::new(Mutex::new(BTreeMap::new())),
            reserved: Arc::new(Mutex::new(Vec::new())),
            settings: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// What this node knows of VMs' IPv4 addresses, for port security:
    /// reservations, and leases bound and not expired (any node's).
    pub async fn address_book(&self) -> AddressBook {
        let mut book = AddressBook {
            settings: self.settings.lock().await.clone(),
            ..Default::default()
        };
        for (net, mac, ip) in self.reserved.lock().await.iter() {
            book.add(net, *mac, *ip, AddrSource::Reservation);
        }
        let t = now();
        let pools = self.pools.lock().await;
        for p in pools.values() {
            let net = p.spec.cni_network();
            book.pool_networks.insert(net.to_string());
            for r in p.cache.lock().await.iter() {
                if r.state == LeaseState::Bound && r.expires_at > t {
                    book.add(net, r.mac, r.ip, AddrSource::Lease);
                }
            }
        }
        book
    }

    /// Hands the address book to the VLAN driver, which brings the ports'
    /// security in line before this returns (a lease just bound is
    /// allowed before its ACK is sent).
    pub async fn push_address_book(&self) {
        let book = self.address_book().await;
        self.vlan.set_address_book(book).await;
    }

    /// Brings pools and responders in line with the resources and this
    /// node's VLAN ports. A pool whose responder cannot be built says why
    /// in its status; the other pools are not held up by it.
    pub async fn reconcile(
        &self,
        pools: Vec<IpPool>,
        vmncs: Vec<VirtualMachineNetworkConfig>,
    ) -> Result<(), ApiError> {
        let ports = self.vlan.records().await?;
        *self.reserved.lock().await = vmncs
            .iter()
            .flat_map(|v| &v.spec.network_configs)
            .filter_map(|e| {
                e.ip_address
                    .map(|ip| (e.cni_network().to_string(), e.mac_address, ip))
            })
            .collect();
        *self.settings.lock().await = vmncs
            .iter()
            .flat_map(|v| &v.spec.network_configs)
            .filter(|e| e.port_security.is_some() || !e.allowed_address_pairs.is_empty())
            .map(|e| {
                (
                    (e.cni_network().to_string(), e.mac_address),
                    PortSettings {
                        port_security: e.port_security,
                        allowed_address_pairs: e.allowed_address_pairs.clone(),
                    },
                )
            })
            .collect();
        let r = self.reconcile_pools(pools, vmncs, ports).await;
        self.push_address_book().await;
        r
    }

    async fn reconcile_pools(
        &self,
        pools: Vec<IpPool>,
        vmncs: Vec<VirtualMachineNetworkConfig>,
        ports: Vec<crate::ports::VlanPortRecord>,
    ) -> Result<(), ApiError> {
        let mut current = self.pools.lock().await;
        let wanted: std::collections::BTreeSet<String> =
            pools.iter().map(|p| p.metadata.name.clone()).collect();
        for name in current.keys().cloned().collect::<Vec<_>>() {
            if !wanted.contains(&name) {
                let p = current.remove(&name).expect("listed");
                p.responder.lock().await.take();
                self.vlan.remove_node_port(&responder_id(&name)).await;
                // The pool is gone: so are its leases (any node may get
                // here first; deleting what is gone is harmless).
                let kvs = self
                    .node
                    .store
                    .list(&leases::prefix(&name))
                    .await
                    .map_err(store_error)?;
                // In chunks: etcd takes at most 128 operations per txn.
                for chunk in kvs.chunks(100) {
                    let mut txn = Txn::new();
                    for kv in chunk {
                        txn = txn.then(Op::Delete(kv.key.clone()));
                    }
                    self.node.store.txn(txn).await.map_err(store_error)?;
                }
                tracing::info!(pool = %name, "DHCP pool removed");
            }
        }
        for spec in pools {
            let name = spec.metadata.name.clone();
            let network = spec.cni_network().to_string();
            let mut reservations = BTreeMap::new();
            for v in &vmncs {
                for e in &v.spec.network_configs {
                    if e.cni_network() == network {
                        if let Some(ip) = e.ip_address {
                            reservations.insert(e.mac_address, ip);
                        }
                    }
                }
            }
            let reuse = current
                .get(&name)
                .filter(|p| p.spec.spec == spec.spec && p.reservations == reservations)
                .cloned();
            let pool = match reuse {
                Some(p) => p,
                None => {
                    let kvs = self
                        .node
                        .store
                        .list(&leases::prefix(&name))
                        .await
                        .map_err(store_error)?;
                    let cache = LeaseCache::from_kvs(&kvs).map_err(store_error)?;
                    let old = current.remove(&name);
                    let responder = match &old {
                        Some(o) => o.responder.lock().await.take(),
                        None => None,
                    };
                    // A changed pool answers with its new settings at once;
                    // its responder port is rebuilt below (unchanged VLAN:
                    // the same port, adopted).
                    drop(responder);
                    let cfg =
                        ServerConfig::new(spec.spec.ipv4_config.clone(), anycast_mac(&name).0);
                    let p = Arc::new(Pool {
                        name: name.clone(),
                        spec: spec.clone(),
                        cfg,
                        cache: Mutex::new(cache),
                        reservations,
                        // Nodes start their searches apart, so offers
                        // (kept in memory) rarely collide.
                        cursor: std::sync::atomic::AtomicU32::new(node_offset(
                            &self.node.cfg.node,
                            spec.spec.ipv4_config.capacity(),
                        )),
                        responder: Mutex::new(None),
                        problem: Default::default(),
                    });
                    current.insert(name.clone(), p.clone());
                    tracing::info!(pool = %name, network = %network, "DHCP pool loaded");
                    p
                }
            };
            // Where this node's VMs on the pool's network are.
            let local = ports.iter().find(|r| {
                r.network_name == network
                    && r.trunk.is_empty()
                    && r.state == furrow_api::wire::PortState::Ready
            });
            let mut responder = pool.responder.lock().await;
            let Some(r) = local else {
                if responder.take().is_some() {
                    self.vlan.remove_node_port(&responder_id(&name)).await;
                    tracing::info!(pool = %name, "no local VMs on the pool's network: responder stopped");
                }
                *pool.problem.lock().expect("poisoned") = None;
                continue;
            };
            let same = responder.as_ref().is_some_and(|x| {
                x.cluster_network == r.cluster_network && x.vid == r.vlan && !x.task.is_finished()
            });
            if same {
                continue;
            }
            responder.take();
            match self
                .start_responder(&pool, &r.cluster_network, r.vlan)
                .await
            {
                Ok(x) => {
                    *responder = Some(x);
                    *pool.problem.lock().expect("poisoned") = None;
                }
                Err(e) => {
                    tracing::error!(pool = %name, error = %e, "DHCP responder not started");
                    *pool.problem.lock().expect("poisoned") = Some(e);
                }
            }
        }
        Ok(())
    }

    async fn start_responder(
        &self,
        pool: &Arc<Pool>,
        cluster_network: &str,
        vid: u16,
    ) -> Result<Responder, String> {
        let name = &pool.name;
        let port = self
            .vlan
            .ensure_node_port(NodePortSpec {
                id: responder_id(name),
                cluster_network: cluster_network.to_string(),
                vid,
                address: None,
                mac: anycast_mac(name),
                mtu: None,
                dhcp_responder: true,
            })
            .await?;
        let sock = PacketSocket::open(port.node_index, Role::ServerWithArp)
            .map_err(|e| format!("responder socket on {}: {e}", port.node_if))?;
        let me = self.clone();
        let p = pool.clone();
        let task = tokio::spawn(async move { me.serve(p, sock).await });
        tracing::info!(pool = %name, cluster_network, vlan = vid, responder = %port.node_if, "DHCP responder ready");
        Ok(Responder {
            cluster_network: cluster_network.to_string(),
            vid,
            task,
        })
    }

    /// Whether a pool serves the CNI network `network` (pools follow their
    /// resources through the resource watch).
    pub async fn serves_network(&self, network: &str) -> bool {
        self.pools
            .lock()
            .await
            .values()
            .any(|p| p.spec.cni_network() == network)
    }

    /// Removes responder ports of pools this netd no longer serves (the
    /// pool went, or its last local VM did, while netd was down).
    pub async fn prune(&self) {
        let _pools = self.pools.lock().await;
        self.vlan.prune_node_ports("dhcp:").await;
    }

    /// Keeps every pool's cache current with changes made by other nodes.
    pub fn spawn_watch(&self) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut w = me.node.store.watch("/furrow/dhcp/");
            loop {
                match w.next().await {
                    Ok(ev) => {
                        {
                            let pools = me.pools.lock().await;
                            for p in pools.values() {
                                p.cache.lock().await.apply(&ev, &p.name);
                            }
                        }
                        // Another node bound or released a lease (a VM
                        // that moved here keeps its address allowed).
                        me.push_address_book().await;
                    }
                    Err(WatchError::Lagged(_)) => {
                        let pools = me.pools.lock().await;
                        for p in pools.values() {
                            if let Ok(kvs) = me.node.store.list(&leases::prefix(&p.name)).await {
                                if let Ok(c) = LeaseCache::from_kvs(&kvs) {
                                    *p.cache.lock().await = c;
                                }
                            }
                        }
                        drop(pools);
                        me.push_address_book().await;
                    }
                    Err(WatchError::Closed) => return,
                }
            }
        });
    }

    async fn serve(&self, pool: Arc<Pool>, sock: PacketSocket) {
        // Room for a jumbo frame: a larger one arrives cut and is refused.
        let mut buf = vec![0u8; 9216];
        let server = pool.cfg.server_addr();
        let mut batch: Vec<Request> = Vec::with_capacity(BATCH);
        loop {
            // Wait for one frame, then take whatever else is queued: a
            // burst is decided together and committed in one transaction.
            let mut got = sock.recv(&mut buf).await.map(Some);
            loop {
                let r = match got {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!(pool = %pool.name, error = %e, "DHCP responder socket failed");
                        return;
                    }
                };
                let frame = &buf[..r.len];
                if frame.len() >= 14 && frame[12..14] == [0x08, 0x06] {
                    // The server address is anycast and on no interface: VMs
                    // unicasting renewals learn its MAC from us.
                    if let Some(reply) = arp_reply_for(frame, server.ip, server.mac.0) {
                        let _ = sock.send(&reply).await;
                    }
                } else if let Some(req) = self.parse(&pool, frame, r) {
                    batch.push(req);
                }
                if batch.len() >= BATCH {
                    break;
                }
                got = sock.try_recv(&mut buf);
            }
            if !batch.is_empty() {
                self.answer(&pool, &sock, &batch).await;
                batch.clear();
            }
        }
    }

    fn parse(
        &self,
        pool: &Pool,
        frame: &[u8],
        got: furrow_dhcp::socket::Received,
    ) -> Option<Request> {
        let parsed = if got.truncated {
            Err("frame larger than any DHCP message".to_string())
        } else {
            furrow_dhcp::frame::parse(
                frame,
                ParseOptions {
                    udp_checksum_partial: got.checksum_partial,
                    ..ParseOptions::to_server()
                },
            )
            .map_err(|e| e.to_string())
        };
        match parsed {
            Ok(p) => {
                self.count(&pool.name, codec_type(&p.message));
                Some(Request {
                    addressing: p.addr,
                    message: p.message,
                })
            }
            Err(e) => {
                self.count(&pool.name, "malformed");
                tracing::debug!(pool = %pool.name, error = %e, "malformed DHCP frame dropped");
                None
            }
        }
    }

    /// Answers a burst: all decided against the cache, their lease changes
    /// committed in one transaction, then every reply sent. If the
    /// transaction loses (another node changed a lease the burst read), each
    /// request is decided and committed again on its own.
    async fn answer(&self, pool: &Pool, sock: &PacketSocket, reqs: &[Request]) {
        match self.try_answer(pool, reqs).await {
            Ok(Some((replies, changed))) => {
                if changed {
                    self.push_address_book().await;
                }
                self.send_replies(pool, sock, replies).await
            }
            Ok(None) if reqs.len() > 1 => {
                for r in reqs {
                    self.answer_one(pool, sock, r).await;
                }
            }
            Ok(None) => self.answer_one(pool, sock, &reqs[0]).await,
            Err(e) => {
                tracing::warn!(pool = %pool.name, error = %e.msg, requests = reqs.len(), "DHCP requests not answered")
            }
        }
    }

    async fn answer_one(&self, pool: &Pool, sock: &PacketSocket, req: &Request) {
        for _ in 0..4 {
            match self.try_answer(pool, std::slice::from_ref(req)).await {
                Ok(Some((replies, changed))) => {
                    if changed {
                        self.push_address_book().await;
                    }
                    return self.send_replies(pool, sock, replies).await;
                }
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(pool = %pool.name, error = %e.msg, "DHCP request not answered");
                    return;
                }
            }
        }
        tracing::warn!(pool = %pool.name, client = %client_mac(&req.message), "DHCP request not answered: its lease changed under every attempt");
    }

    async fn send_replies(
        &self,
        pool: &Pool,
        sock: &PacketSocket,
        replies: Vec<(core::Reply, Addressing)>,
    ) {
        for (reply, addressing) in replies {
            let frame = match reply.to_frame(pool.cfg.server_addr(), &addressing) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(pool = %pool.name, error = %e, "DHCP reply not built");
                    continue;
                }
            };
            if let Err(e) = sock.send(&frame).await {
                tracing::warn!(pool = %pool.name, error = %e, "DHCP reply not sent");
                continue;
            }
            if let Some(t) = reply.message_type() {
                self.count_reply(&pool.name, t);
            }
        }
    }

    /// Decides `reqs` in order, each seeing the ones before it, and commits
    /// their lease changes together, guarded by every record they read.
    /// `None`: the guard failed; the records read were refreshed from the
    /// store, so deciding again sees the truth. With the replies: whether
    /// leases were written (port security must learn of it before the
    /// replies go).
    #[allow(clippy::type_complexity)]
    async fn try_answer(
        &self,
        pool: &Pool,
        reqs: &[Request],
    ) -> Result<Option<(Vec<(core::Reply, Addressing)>, bool)>, ApiError> {
        let mut cache = pool.cache.lock().await;
        let mut staged = Staged::default();
        let mut replies = Vec::new();
        for req in reqs {
            let decision = {
                let view = View {
                    pool,
                    cache: &cache,
                };
                core::decide(&pool.cfg, &view, &req.message, now(), &self.node.cfg.node)
            };
            let mac = client_mac(&req.message);
            let kind = codec_type(&req.message);
            if decision.reason.is_problem() {
                tracing::warn!(pool = %pool.name, client = %mac, request = kind, reason = %decision.reason, "DHCP request not served");
                self.count_problem(&pool.name, decision.reason.name());
            } else {
                tracing::debug!(pool = %pool.name, client = %mac, request = kind, reason = %decision.reason, "DHCP");
            }
            if let Some(change) = &decision.change {
                self.stage(pool, &mut cache, &mut staged, change, &decision.depends);
            }
            if let Some(reply) = decision.reply {
                replies.push((reply, req.addressing));
            }
        }
        if staged.writes.is_empty() {
            return Ok(Some((replies, false)));
        }
        let mut txn = Txn::new();
        for (ip, g) in &staged.guards {
            let k = leases::key(&pool.name, *ip);
            txn = txn.when(match g {
                Some(rev) => Compare::ModRevision(k, *rev),
                None => Compare::Absent(k),
            });
        }
        for (ip, w) in &staged.writes {
            let k = leases::key(&pool.name, *ip);
            txn = txn.then(match w {
                Some(r) => Op::put_json(k, r),
                None => Op::Delete(k),
            });
        }
        let outcome = self.node.store.txn(txn).await;
        if let Ok(out) = &outcome {
            if out.succeeded {
                for (_, w) in staged.writes {
                    if let Some(r) = w {
                        cache.insert(r, out.revision);
                    }
                }
                return Ok(Some((replies, true)));
            }
        }
        // Someone changed what the burst read, or the store failed: our
        // tentative changes are void; take every record the burst touched
        // from the store again.
        for ip in staged.guards.keys() {
            match self.node.store.get(&leases::key(&pool.name, *ip)).await {
                Ok(Some(kv)) => match kv.decode::<LeaseRecord>() {
                    Ok(r) => cache.insert(r, kv.mod_revision),
                    Err(_) => cache.remove(*ip),
                },
                Ok(None) => cache.remove(*ip),
                // Unknown: the next decision's guard finds out.
                Err(_) => {}
            }
        }
        outcome.map_err(store_error)?;
        Ok(None)
    }

    /// Applies one decision's change to the cache tentatively and records
    /// what must hold and be written for it to stand.
    fn stage(
        &self,
        pool: &Pool,
        cache: &mut LeaseCache,
        st: &mut Staged,
        change: &LeaseChange,
        depends: &core::Depends,
    ) {
        // Guard every record read, as it was before the burst changed it.
        let mut guard = |ip: Ipv4Addr, cache: &LeaseCache| {
            st.guards
                .entry(ip)
                .or_insert_with(|| match cache.by_ip(ip) {
                    Some((_, rev)) if *rev != LOCAL => Some(*rev),
                    _ => None,
                });
        };
        for ip in &depends.ips {
            guard(*ip, cache);
        }
        for mac in &depends.macs {
            if let Some(ip) = cache.by_mac(*mac).map(|(r, _)| r.ip) {
                guard(ip, cache);
            }
        }
        for ip in change.touched() {
            guard(ip, cache);
        }
        let in_memory = |cache: &LeaseCache, st: &Staged, ip: Ipv4Addr| {
            !st.writes.contains_key(&ip) && cache.by_ip(ip).is_none_or(|(_, rev)| *rev == LOCAL)
        };
        let advance = |ip: Ipv4Addr| {
            let off = u32::from(ip).wrapping_sub(u32::from(pool.spec.spec.ipv4_config.pool.start));
            pool.cursor
                .store(off.wrapping_add(1), std::sync::atomic::Ordering::Relaxed);
        };
        match change {
            // A fresh address offered to a new client stays in this node's
            // memory: the REQUEST that follows writes the binding, guarded
            // by the address being absent from the store, so an offer
            // another node made of it meanwhile loses there (NAK, and the
            // client starts again). Saves a store write per new client.
            LeaseChange::Offer {
                lease,
                supersedes: None,
            } if in_memory(cache, st, lease.ip) => {
                advance(lease.ip);
                cache.insert(from_core(lease), LOCAL);
            }
            LeaseChange::Offer { lease, supersedes } | LeaseChange::Bind { lease, supersedes } => {
                advance(lease.ip);
                let r = from_core(lease);
                cache.insert(r.clone(), LOCAL);
                st.writes.insert(lease.ip, Some(r));
                if let Some(s) = supersedes.filter(|s| *s != lease.ip) {
                    cache.remove(s);
                    st.writes.insert(s, None);
                }
            }
            LeaseChange::Release { ip, .. } => {
                let only_here = in_memory(cache, st, *ip);
                cache.remove(*ip);
                if !only_here {
                    st.writes.insert(*ip, None);
                }
            }
            LeaseChange::Decline { ip, mac, until } => {
                let r = LeaseRecord {
                    ip: *ip,
                    mac: *mac,
                    client_id: None,
                    hostname: None,
                    state: LeaseState::Declined,
                    expires_at: *until,
                    node: self.node.cfg.node.clone(),
                    updated_at: now(),
                };
                cache.insert(r.clone(), LOCAL);
                st.writes.insert(*ip, Some(r));
            }
        }
    }

    fn count(&self, pool: &str, what: &str) {
        self.node.metrics.inc(
            "furrow_dhcp_requests_total",
            vec![("pool", pool.to_string()), ("type", what.to_string())],
        );
    }

    fn count_problem(&self, pool: &str, reason: &str) {
        self.node.metrics.inc(
            "furrow_dhcp_refusals_total",
            vec![("pool", pool.to_string()), ("reason", reason.to_string())],
        );
    }

    fn count_reply(&self, pool: &str, t: furrow_dhcp::dhcproto::v4::MessageType) {
        self.node.metrics.inc(
            "furrow_dhcp_replies_total",
            vec![
                ("pool", pool.to_string()),
                ("type", format!("{t:?}").to_lowercase()),
            ],
        );
    }

    /// Every lease of every pool, as the cache holds them.
    pub async fn leases(&self, network: Option<&str>) -> Vec<LeaseInfo> {
        let pools = self.pools.lock().await;
        let mut out = Vec::new();
        let t = now();
        for p in pools.values() {
            if network.is_some_and(|n| n != p.spec.cni_network() && n != p.name) {
                continue;
            }
            for r in p.cache.lock().await.iter() {
                out.push(LeaseInfo {
                    pool: p.name.clone(),
                    network: p.spec.cni_network().to_string(),
                    ip: r.ip,
                    mac: r.mac,
                    hostname: r.hostname.clone(),
                    state: format!("{:?}", r.state).to_lowercase(),
                    expires_at: r.expires_at,
                    expired: r.expires_at <= t,
                    node: r.node.clone(),
                    reserved: p.reservations.get(&r.mac) == Some(&r.ip),
                });
            }
        }
        out
    }

    pub async fn pools(&self) -> Vec<PoolInfo> {
        let pools = self.pools.lock().await;
        let t = now();
        let mut out = Vec::new();
        for p in pools.values() {
            let cache = p.cache.lock().await;
            let responder = p.responder.lock().await;
            out.push(PoolInfo {
                name: p.name.clone(),
                network: p.spec.cni_network().to_string(),
                server_ip: p.spec.spec.ipv4_config.server_ip,
                cidr: p.spec.spec.ipv4_config.cidr,
                capacity: p.spec.spec.ipv4_config.capacity(),
                bound: cache
                    .iter()
                    .filter(|r| r.state == LeaseState::Bound && r.expires_at > t)
                    .count() as u32,
                responder: responder
                    .as_ref()
                    .map(|r| format!("{}/{}", r.cluster_network, r.vid)),
                problem: p.problem.lock().expect("poisoned").clone(),
            });
        }
        out
    }

    /// Lease counts for metrics: (pool, state, count).
    pub async fn lease_counts(&self) -> Vec<(String, String, u64)> {
        let pools = self.pools.lock().await;
        let t = now();
        let mut out = Vec::new();
        for p in pools.values() {
            let cache = p.cache.lock().await;
            let mut by: BTreeMap<&str, u64> = BTreeMap::new();
            for r in cache.iter() {
                let s = if r.expires_at <= t {
                    "expired"
                } else {
                    match r.state {
                        LeaseState::Offered => "offered",
                        LeaseState::Bound => "bound",
                        LeaseState::Declined => "declined",
                    }
                };
                *by.entry(s).or_default() += 1;
            }
            for (s, n) in by {
                out.push((p.name.clone(), s.to_string(), n));
            }
        }
        out
    }

    /// Drops expired offers and declines older than a day from the store
    /// (bound leases stay: a VM may come back and want its address).
    pub async fn collect_garbage(&self) {
        let pools = self.pools.lock().await;
        let t = now();
        for p in pools.values() {
            let stale: Vec<(Ipv4Addr, u64)> = {
                let mut cache = p.cache.lock().await;
                let lapsed: Vec<Ipv4Addr> = cache
                    .iter()
                    .filter(|r| r.expires_at <= t)
                    .filter(|r| cache.by_ip(r.ip).is_some_and(|(_, rev)| *rev == LOCAL))
                    .map(|r| r.ip)
                    .collect();
                for ip in lapsed {
                    cache.remove(ip);
                }
                cache
                    .iter()
                    .filter(|r| r.state != LeaseState::Bound && r.expires_at + 86_400 < t)
                    .map(|r| (r.ip, cache.by_ip(r.ip).map(|(_, rev)| *rev).unwrap_or(0)))
                    .collect()
            };
            for (ip, rev) in stale {
                let k = leases::key(&p.name, ip);
                let _ = self
                    .node
                    .store
                    .txn(
                        Txn::new()
                            .when(Compare::ModRevision(k.clone(), rev))
                            .then(Op::Delete(k)),
                    )
                    .await;
            }
        }
    }
}

/// Where `node` starts looking for free addresses in a pool of `size`.
fn node_offset(node: &str, size: u32) -> u32 {
    // FNV-1a: stable across runs and builds.
    let h = node.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    h % size.max(1)
}

/// The client's hardware address (the parser checked hlen).
fn client_mac(msg: &furrow_dhcp::dhcproto::v4::Message) -> MacAddr {
    let c = msg.chaddr();
    let mut m = [0u8; 6];
    let n = c.len().min(6);
    m[..n].copy_from_slice(&c[..n]);
    MacAddr(m)
}

fn codec_type(msg: &furrow_dhcp::dhcproto::v4::Message) -> &'static str {
    use furrow_dhcp::dhcproto::v4::{DhcpOption, MessageType};
    match msg
        .opts()
        .get(furrow_dhcp::dhcproto::v4::OptionCode::MessageType)
    {
        Some(DhcpOption::MessageType(t)) => match t {
            MessageType::Discover => "discover",
            MessageType::Request => "request",
            MessageType::Release => "release",
            MessageType::Decline => "decline",
            MessageType::Inform => "inform",
            _ => "other",
        },
        _ => "untyped",
    }
}
