//! The VIP controller: for each VirtualIP this node may hold, take part in
//! its election (election.rs) and, while holding it, keep the address on
//! its interface and announce it; give it up on step-down, failed health,
//! lost fencing, deletion and SIGTERM. A VIP with `address: dhcp` is held
//! the same way; its address comes from the holder's DHCP client on a
//! macvlan with the VIP's own MAC (dhcp.rs) once the lease is there.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use furrow_api::resource::{
    parse_pool_range, selects, BgpPeer, VipAddress, VipMode, VirtualIp, VirtualIpPool,
};
use furrow_api::wire::VipInfo;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::bgp::BgpControl;
use super::dhcp::{self, DhcpHold, LeaseCache};
use super::election::{Election, Seen, RANK_DELAY};
use super::health::{self, Health};
use crate::drivers::vlan::VlanDriver;
use crate::node::Node;
use crate::rawsock::RawSocket;
use crate::store::{Compare, Op, Txn};

/// Kernel lifetime of a held address, refreshed every second: if netd
/// dies without its fence guard, the kernel drops the address by itself.
const ADDRESS_LIFETIME_SECS: u32 = 3;
/// Gratuitous ARP / NA after a takeover: at once, then these offsets.
const BURST: [Duration; 3] = [
    Duration::from_millis(50),
    Duration::from_millis(200),
    Duration::from_millis(500),
];
/// Steady announcements while holding.
const REFRESH: Duration = Duration::from_secs(1);
/// A dhcp VIP whose macvlan could not be made here: this node is not
/// ready for it for this long (others may take it), then tries again.
const SETUP_RETRY: Duration = Duration::from_secs(10);
const POOL_ALLOCATIONS: &str = "/furrow/vip/pool-allocations/";

struct Held {
    /// The address on the link; None: a dhcp VIP whose lease has not come
    /// yet (or was lost).
    ip: Option<IpAddr>,
    ifindex: u32,
    mac: [u8; 6],
    acquired: Instant,
    /// When the address went on: the announcement burst counts from here.
    announced_from: Instant,
    next_announce: Instant,
    burst: usize,
    next_refresh: Instant,
    epoch: u64,
    announcements: u64,
    /// `address: dhcp`: the macvlan and the client running on it.
    dhcp: Option<DhcpHold>,
}

/// A given-up dhcp VIP's macvlan being deleted: (VIP, task).
type Deleting = (String, tokio::task::JoinHandle<()>);

/// What `VipService::place` worked out for one VIP.
#[derive(Default)]
struct Placement {
    address: Option<Option<IpAddr>>,
    link: Option<Option<(u32, String, [u8; 6])>>,
    problem: Option<String>,
}

struct Vip {
    spec: VirtualIp,
    address: Option<IpAddr>,
    link: Option<(u32, String, [u8; 6])>,
    problem: Option<String>,
    health: Arc<Health>,
    checker: Option<tokio::task::JoinHandle<()>>,
    claimable_since: Option<Instant>,
    held: Option<Held>,
    eligible: bool,
    /// BGP mode: none of this node's sessions is established, so routers
    /// could not reach the VIP here.
    no_session: bool,
    /// `address: dhcp`: its macvlan could not be made here; not ready for
    /// it until then.
    setup_failed: Option<(Instant, String)>,
}

impl Drop for Vip {
    fn drop(&mut self) {
        if let Some(c) = &self.checker {
            c.abort();
        }
    }
}

#[derive(Clone)]
pub struct VipService {
    node: Arc<Node>,
    vlan: VlanDriver,
    election: Arc<Election>,
    bgp: BgpControl,
    vips: Arc<Mutex<BTreeMap<String, Vip>>>,
    senders: Arc<std::sync::Mutex<HashMap<u32, Arc<RawSocket>>>>,
    /// The last lease of every dhcp VIP, as the store records it.
    leases: LeaseCache,
    /// Macvlans of given-up dhcp VIPs being deleted (by VIP): deleted in
    /// the background so giving up many VIPs at once (fencing) is not
    /// slowed by the kernel's grace periods; already silent (no address,
    /// client stopped).
    deleting: Arc<std::sync::Mutex<Vec<Deleting>>>,
    /// Set on SIGTERM: the controller claims nothing any more (a VIP just
    /// released must not be taken back while netd exits).
    stopping: Arc<std::sync::atomic::AtomicBool>,
    /// The kernel half of fencing (fence.rs).
    fence: super::fence::Fence,
}

impl VipService {
    /// `leases`: elect over Kubernetes Leases instead of the store.
    pub fn new(
        node: Arc<Node>,
        vlan: VlanDriver,
        timing: super::election::Timing,
        leases: Option<Arc<dyn crate::kubernetes::lease::LeaseApi>>,
    ) -> Self {
        let election = match leases {
            Some(api) => Election::with_leases(node.store.clone(), &node.cfg.node, timing, api),
            None => Election::new(node.store.clone(), &node.cfg.node, timing),
        };
        VipService {
            bgp: BgpControl::new(node.clone()),
            fence: {
                let fence = super::fence::Fence::new(node.cfg.bpf_dir.clone());
                if node.cfg.vip_only {
                    fence
                } else {
                    // The datapath's tcx links run before classic
                    // filters: the fence must be a link too, first.
                    fence.linked(node.cfg.bpf_dir.clone())
                }
            },
            node,
            vlan,
            election,
            vips: Default::default(),
            senders: Default::default(),
            leases: Default::default(),
            deleting: Default::default(),
            stopping: Default::default(),
        }
    }

    /// Removes every VIP address and dhcp-VIP macvlan a previous netd left
    /// (its holds are void until won again), then joins the election.
    pub async fn start(&self) -> anyhow::Result<()> {
        let stale = self.node.host.vip_addresses().await?;
        for a in stale {
            tracing::info!(ip = %a.ip, ifindex = a.index, "removing a VIP address left by an earlier netd");
            self.node.host.del_vip(a.index, a.ip).await?;
        }
        dhcp::remove_stale(&self.node.host, &self.node.cfg.instance)
            .await
            .map_err(anyhow::Error::msg)?;
        // The addresses are gone: so go the filters and deadlines an
        // earlier netd left. Then the deadlines follow the election.
        self.fence.start().await;
        let election = self.election.clone();
        self.fence.follow(move || election.valid_until());
        self.leases.start(self.node.store.clone()).await?;
        self.election.start().await?;
        let me = self.clone();
        tokio::spawn(async move { me.run().await });
        Ok(())
    }

    /// Follows the VirtualIP, VirtualIPPool and BGPPeer resources.
    pub async fn reconcile(
        &self,
        specs: Vec<VirtualIp>,
        pools: Vec<VirtualIpPool>,
        peers: Vec<BgpPeer>,
    ) {
        self.bgp.reconcile(&peers).await;
        let bgp_unavailable = self.bgp.unavailable().await;
        // Where each VIP lives, worked out before taking the VIPs' lock:
        // pool allocations are store calls, and the control loop (which
        // drops fenced addresses) must not wait behind them.
        let mut placements = HashMap::new();
        for spec in &specs {
            let name = &spec.metadata.name;
            placements.insert(
                name.clone(),
                self.place(name, spec, &pools, &bgp_unavailable).await,
            );
        }
        let mut vips = self.vips.lock().await;
        let wanted: std::collections::BTreeSet<String> =
            specs.iter().map(|v| v.metadata.name.clone()).collect();
        let mut deleted = Vec::new();
        for name in vips.keys().cloned().collect::<Vec<_>>() {
            if !wanted.contains(&name) {
                let v = vips.remove(&name).expect("listed");
                deleted.push((name, v));
            }
        }
        for spec in specs {
            let name = spec.metadata.name.clone();
            let changed = vips.get(&name).is_none_or(|v| v.spec.spec != spec.spec);
            if changed {
                if let Some(mut old) = vips.remove(&name) {
                    // A VIP that stays dhcp keeps its lease for the next hold.
                    let release = old.is_dhcp() && !is_dhcp(&spec);
                    self.give_up(&name, &mut old, "VirtualIP changed", release)
                        .await;
                    let _ = self.election.release(&name).await;
                    if release {
                        dhcp::forget(self.node.store.as_ref(), &name).await;
                    }
                }
                let health = if spec.spec.health_check.is_some() {
                    Arc::new(Health::default())
                } else {
                    Health::always()
                };
                vips.insert(
                    name.clone(),
                    Vip {
                        spec: spec.clone(),
                        address: None,
                        link: None,
                        problem: None,
                        health,
                        checker: None,
                        claimable_since: None,
                        held: None,
                        eligible: false,
                        no_session: false,
                        setup_failed: None,
                    },
                );
            }
            let v = vips.get_mut(&name).expect("inserted");
            let s = &v.spec.spec;
            v.eligible = (s.nodes.is_empty() || s.nodes.contains(&self.node.cfg.node))
                && selects(&s.node_selector, &self.node.cfg.node_labels);
            if v.eligible && v.checker.is_none() {
                if let Some(hc) = s.health_check.clone() {
                    v.checker = Some(health::spawn(
                        name.clone(),
                        hc,
                        v.health.clone(),
                        self.election.clone(),
                    ));
                }
            }
            if !v.eligible {
                if let Some(c) = v.checker.take() {
                    c.abort();
                }
            }
            // Where it lives and what it is, rechecked every pass: links
            // and their addresses come and go.
            let p = placements.remove(&name).unwrap_or_default();
            if let Some(a) = p.address {
                v.address = a;
            }
            if let Some(l) = p.link {
                v.link = l;
            }
            v.problem = p.problem;
            if let Some(p) = &v.problem {
                tracing::warn!(vip = %name, problem = %p, "VIP cannot be held on this node");
            }
        }
        drop(vips);
        self.election.changed.notify_waiters();
        // Deleted VIPs are out of the map: given up without the lock.
        for (name, mut v) in deleted {
            // Nobody will want a deleted VIP's lease: the holder gives it
            // back, and every node forgets it.
            let dhcp = v.is_dhcp();
            self.give_up(&name, &mut v, "VirtualIP deleted", dhcp).await;
            let _ = self.election.release(&name).await;
            if self.election.uses_leases() {
                // Leases are objects people list: a deleted VIP's goes.
                if let Err(e) = self.election.forget(&name).await {
                    tracing::debug!(vip = %name, error = %e, "deleting the VIP's Lease failed");
                }
            }
            let _ = self.free_pool_allocation(&name).await;
            if dhcp {
                dhcp::forget(self.node.store.as_ref(), &name).await;
            }
        }
    }

    /// Where a VIP lives on this node and whether it can be held here: its
    /// address (static, from its pool), its link, and the problem if not.
    /// `None` fields were not worked out (an earlier problem).
    async fn place(
        &self,
        name: &str,
        spec: &VirtualIp,
        pools: &[VirtualIpPool],
        bgp_unavailable: &Option<String>,
    ) -> Placement {
        let mut p = Placement::default();
        if spec.spec.mode == VipMode::Bgp {
            if let Some(why) = bgp_unavailable {
                p.problem = Some(why.clone());
                return p;
            }
        }
        match self.resolve_address(name, spec, pools).await {
            Ok(a) => p.address = Some(a),
            Err(e) => {
                p.problem = Some(e);
                return p;
            }
        }
        let (idx, ifname) = match self.resolve_link(spec).await {
            Ok(l) => {
                let r = (l.0, l.1.clone());
                p.link = Some(Some(l));
                r
            }
            Err(e) => {
                p.link = Some(None);
                p.problem = Some(e);
                return p;
            }
        };
        if let (Some(Some(ip)), VipMode::Arp) = (p.address, spec.spec.mode) {
            match self.node.host.link_prefixes(idx).await {
                Ok(prefixes) if prefixes.iter().any(|n| n.contains(&ip)) => {}
                Ok(prefixes) => {
                    let list: Vec<String> = prefixes.iter().map(|n| n.to_string()).collect();
                    p.problem = Some(format!(
                        "{ip} is outside every subnet of {ifname} ({}): in ARP mode a VIP must be on the interface's subnet",
                        if list.is_empty() { "no addresses".to_string() } else { list.join(", ") }
                    ));
                }
                Err(e) => p.problem = Some(e.to_string()),
            }
        }
        p
    }

    async fn resolve_address(
        &self,
        name: &str,
        v: &VirtualIp,
        pools: &[VirtualIpPool],
    ) -> Result<Option<IpAddr>, String> {
        if let Some(a) = &v.spec.address {
            return match furrow_api::resource::parse_vip_address(a)? {
                VipAddress::Static(ip) => Ok(Some(ip)),
                // Leased by the holder after it wins the election.
                VipAddress::Dhcp => Ok(None),
            };
        }
        let Some(pool_name) = &v.spec.pool else {
            return Ok(None);
        };
        let pool = pools
            .iter()
            .find(|p| &p.metadata.name == pool_name)
            .ok_or_else(|| format!("VirtualIPPool {pool_name:?} does not exist"))?;
        self.allocate(name, pool).await.map(Some)
    }

    /// The VIP's address from its pool: the one it already has, else the
    /// first free one, taken by compare-and-swap (any node may do it).
    async fn allocate(&self, vip: &str, pool: &VirtualIpPool) -> Result<IpAddr, String> {
        let prefix = format!("{POOL_ALLOCATIONS}{}/", pool.metadata.name);
        let store = &self.node.store;
        let kvs = store.list(&prefix).await.map_err(|e| e.to_string())?;
        let mut taken = std::collections::BTreeSet::new();
        for kv in &kvs {
            let ip: Option<IpAddr> = kv.key[prefix.len()..].parse().ok();
            let owner = String::from_utf8_lossy(&kv.value).to_string();
            if owner == vip {
                if let Some(ip) = ip {
                    return Ok(ip);
                }
            }
            if let Some(ip) = ip {
                taken.insert(ip);
            }
        }
        for r in &pool.spec.addresses {
            let (first, last) = parse_pool_range(r)?;
            let mut cur = Some(first);
            let mut tries = 0;
            while let Some(ip) = cur {
                tries += 1;
                if tries > 65536 {
                    break;
                }
                if !taken.contains(&ip) {
                    let key = format!("{prefix}{ip}");
                    let out = store
                        .txn(
                            Txn::new()
                                .when(Compare::Absent(key.clone()))
                                .then(Op::Put(key, vip.as_bytes().to_vec())),
                        )
                        .await
                        .map_err(|e| e.to_string())?;
                    if out.succeeded {
                        tracing::info!(vip, pool = %pool.metadata.name, %ip, "VIP address allocated");
                        return Ok(ip);
                    }
                }
                cur = if ip == last { None } else { next_ip(ip) };
            }
        }
        Err(format!(
            "VirtualIPPool {:?} has no free address",
            pool.metadata.name
        ))
    }

    async fn free_pool_allocation(&self, vip: &str) -> Result<(), String> {
        let kvs = self
            .node
            .store
            .list(POOL_ALLOCATIONS)
            .await
            .map_err(|e| e.to_string())?;
        for kv in kvs {
            if kv.value == vip.as_bytes() {
                let _ = self
                    .node
                    .store
                    .txn(
                        Txn::new()
                            .when(Compare::ModRevision(kv.key.clone(), kv.mod_revision))
                            .then(Op::Delete(kv.key)),
                    )
                    .await;
            }
        }
        Ok(())
    }

    async fn resolve_link(&self, v: &VirtualIp) -> Result<(u32, String, [u8; 6]), String> {
        let ifname = match (&v.spec.interface, &v.spec.vlan_interface) {
            (Some(i), _) => i.clone(),
            (None, Some(vif)) => self
                .vlan
                .node_port(&format!("vif:{vif}"))
                .await
                .map(|p| p.node_if)
                .ok_or_else(|| format!("VlanInterface {vif:?} has no link on this node"))?,
            _ => return Err("no interface".into()),
        };
        let link = self
            .node
            .host
            .link_by_name(&ifname)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("interface {ifname:?} does not exist on this node"))?;
        let mac = link.mac.map(|m| m.0).unwrap_or([0; 6]);
        Ok((link.index, ifname, mac))
    }

    async fn run(self) {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Wake on the tick or at once when a holder or a node's
            // liveness changes (graceful handovers should not wait).
            let notified = self.election.changed.notified();
            tokio::select! {
                _ = tick.tick() => {}
                _ = notified => {}
            }
            self.step().await;
        }
    }

    /// One pass over every VIP: decide, act, announce.
    async fn step(&self) {
        let now = Instant::now();
        let mut vips = self.vips.lock().await;
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let ready: Vec<String> = vips
            .iter()
            .filter(|(_, v)| v.ready())
            .map(|(n, _)| n.clone())
            .collect();
        self.election.set_ready(ready);
        self.election.set_known(vips.keys().cloned().collect());
        let valid = self.election.valid(now);
        let me = self.election.node().to_string();
        let (bgp_v4, bgp_v6) = self.bgp.established().await;
        for (name, v) in vips.iter_mut() {
            // Until its address is known (a pool), any session will do.
            let carried = match v.address {
                Some(IpAddr::V4(_)) => bgp_v4,
                Some(IpAddr::V6(_)) => bgp_v6,
                None => bgp_v4 || bgp_v6,
            };
            v.no_session = v.spec.spec.mode == VipMode::Bgp && !carried;
            if v.spec.spec.ecmp {
                // Every ready node advertises: no election, and nothing to
                // fence (routers spread traffic over all of them).
                match (v.held.is_some(), v.ready()) {
                    (true, true) => {
                        if let Some(why) = self.keep_held(name, v, now).await {
                            self.drop_held(name, v, why).await;
                        }
                    }
                    (true, false) => self.drop_held(name, v, v.unready_reason()).await,
                    (false, true) => self.acquire(name, v, 0).await,
                    (false, false) => {}
                }
                continue;
            }
            let holder = self.election.holder(name);
            if v.held.is_some() {
                let still_mine = holder.as_ref().is_some_and(|(h, _)| h.node == me);
                let lapsed = v
                    .held
                    .as_ref()
                    .and_then(|h| h.ip)
                    .is_some_and(|ip| self.fence.lapsed(ip));
                if !valid || lapsed {
                    self.drop_held(
                        name,
                        v,
                        "fenced: no acknowledged heartbeat within the fencing bound",
                    )
                    .await;
                } else if !still_mine {
                    self.drop_held(name, v, "another node holds it").await;
                } else if !v.ready() {
                    self.drop_held(name, v, v.unready_reason()).await;
                    if let Err(e) = self.election.release(name).await {
                        tracing::warn!(vip = %name, error = %e, "VIP release failed; it moves when the fencing bound passes");
                    }
                } else if let Some(why) = self.keep_held(name, v, now).await {
                    self.drop_held(name, v, why).await;
                    if let Err(e) = self.election.release(name).await {
                        tracing::warn!(vip = %name, error = %e, "VIP release failed; it moves when the fencing bound passes");
                    }
                }
                continue;
            }
            if !v.ready() || !valid {
                v.claimable_since = None;
                continue;
            }
            let seen = match &holder {
                None => Some(Seen {
                    holder: None,
                    dead_heartbeat: None,
                }),
                Some((h, _)) if h.node == me => Some(Seen {
                    holder: holder.clone(),
                    dead_heartbeat: None,
                }),
                Some((h, _)) => self
                    .election
                    .takeover_allowed(name, &h.node, now)
                    .map(|rev| Seen {
                        holder: holder.clone(),
                        dead_heartbeat: Some((h.node.clone(), rev)),
                    }),
            };
            let Some(seen) = seen else {
                v.claimable_since = None;
                continue;
            };
            let since = *v.claimable_since.get_or_insert(now);
            let own_record = holder.as_ref().is_some_and(|(h, _)| h.node == me);
            let rank = if own_record {
                0
            } else {
                self.election.rank(name, now)
            };
            if now < since + RANK_DELAY * rank as u32 {
                continue;
            }
            match self.election.claim(name, &seen).await {
                Ok(true) => {
                    v.claimable_since = None;
                    let epoch = self.election.holder(name).map_or(0, |(h, _)| h.epoch);
                    self.acquire(name, v, epoch).await;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(vip = %name, error = %e, "VIP claim failed"),
            }
        }
    }

    async fn acquire(&self, name: &str, v: &mut Vip, epoch: u64) {
        if v.is_dhcp() {
            return self.acquire_dhcp(name, v, epoch).await;
        }
        let (Some(ip), Some((ifindex, ifname, mac))) = (v.address, v.link.clone()) else {
            return;
        };
        if let Err(e) = self
            .node
            .host
            .put_vip(ifindex, ip, ADDRESS_LIFETIME_SECS)
            .await
        {
            tracing::error!(vip = %name, %ip, error = %e, "VIP address not added; releasing it");
            let _ = self.election.release(name).await;
            return;
        }
        if v.spec.spec.mode == VipMode::Arp {
            self.fence
                .hold(ifindex, ip, self.election.valid_until())
                .await;
        }
        let now = Instant::now();
        let mut held = Held {
            ip: Some(ip),
            ifindex,
            mac,
            acquired: now,
            announced_from: now,
            next_announce: now,
            burst: 0,
            next_refresh: now + REFRESH,
            epoch,
            announcements: 0,
            dhcp: None,
        };
        match v.spec.spec.mode {
            VipMode::Arp => self.announce(&mut held).await,
            VipMode::Bgp => self.bgp.advertise(name, ip).await,
        }
        tracing::info!(vip = %name, %ip, interface = %ifname, epoch, "VIP taken");
        self.node.metrics.inc(
            "furrow_vip_transitions_total",
            vec![("vip", name.to_string()), ("to", "held".into())],
        );
        v.held = Some(held);
    }

    /// `address: dhcp`: the macvlan with the VIP's MAC and a DHCP client
    /// on it. The last holder's lease, if it is still good, goes on at once
    /// (the client confirms it with the server right away); otherwise the
    /// address follows when the client has one.
    async fn acquire_dhcp(&self, name: &str, v: &mut Vip, epoch: u64) {
        let Some((parent, parent_name, _)) = v.link.clone() else {
            return;
        };
        let mac = dhcp::stable_mac(name);
        let now_s = crate::util::now_secs();
        // From the watch-fed cache: no store round trip while holding the
        // lock every VIP's fencing waits for.
        let inherited = self
            .leases
            .get(name)
            .filter(|r| {
                !r.expired(now_s)
                    && r.lease.mac == mac
                    && r.lease.client_id == dhcp::client_id(name)
            })
            .map(|r| r.lease);
        self.deleted(Some(name)).await;
        let ifindex = match dhcp::create_macvlan(
            &self.node.host,
            &self.node.cfg.instance,
            name,
            parent,
            &parent_name,
        )
        .await
        {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(vip = %name, error = %e, retry_in = ?SETUP_RETRY, "VIP macvlan not created; releasing it");
                v.setup_failed = Some((Instant::now() + SETUP_RETRY, e));
                let _ = self.election.release(name).await;
                return;
            }
        };
        let hold = DhcpHold::start(
            self.node.host.clone(),
            self.node.store.clone(),
            self.election.node(),
            name,
            parent,
            ifindex,
            inherited,
            self.election.clone(),
        );
        let now = Instant::now();
        let mut held = Held {
            ip: None,
            ifindex,
            mac: mac.0,
            acquired: now,
            announced_from: now,
            next_announce: now,
            burst: 0,
            next_refresh: now + REFRESH,
            epoch,
            announcements: 0,
            dhcp: Some(hold),
        };
        self.follow_lease(name, &mut held).await;
        tracing::info!(
            vip = %name,
            ip = %held.ip.map_or_else(|| "-".to_string(), |ip| ip.to_string()),
            interface = %parent_name,
            macvlan = %dhcp::macvlan_name(name),
            %mac,
            epoch,
            "VIP taken"
        );
        self.node.metrics.inc(
            "furrow_vip_transitions_total",
            vec![("vip", name.to_string()), ("to", "held".into())],
        );
        v.held = Some(held);
    }

    /// A dhcp VIP's address follows its client's lease: on when there is
    /// one (then announced as after a takeover), replaced when it changes,
    /// off on a NAK or at expiry.
    async fn follow_lease(&self, name: &str, h: &mut Held) {
        let Some(d) = &h.dhcp else { return };
        let want = d.lease().map(|l| IpAddr::V4(l.ip));
        if want == h.ip {
            return;
        }
        if let Some(old) = h.ip.take() {
            if let Err(e) = self.node.host.del_vip(h.ifindex, old).await {
                tracing::error!(vip = %name, ip = %old, error = %e, "VIP address not removed");
            }
            self.fence.release(old).await;
            tracing::warn!(vip = %name, ip = %old, "VIP address removed: its DHCP lease is gone");
        }
        let Some(ip) = want else { return };
        if let Err(e) = self
            .node
            .host
            .put_vip(h.ifindex, ip, ADDRESS_LIFETIME_SECS)
            .await
        {
            // Tried again at the next pass.
            tracing::error!(vip = %name, %ip, error = %e, "leased VIP address not added");
            return;
        }
        self.fence
            .hold(h.ifindex, ip, self.election.valid_until())
            .await;
        let now = Instant::now();
        h.ip = Some(ip);
        h.announced_from = now;
        h.burst = 0;
        h.next_announce = now;
        h.next_refresh = now + REFRESH;
        tracing::info!(vip = %name, %ip, macvlan = %d.ifname, "VIP address leased and added");
        self.announce(h).await;
    }

    /// Announces and refreshes a held address; returns why the VIP must
    /// be given up, if it must.
    async fn keep_held(&self, name: &str, v: &mut Vip, now: Instant) -> Option<&'static str> {
        let arp = v.spec.spec.mode == VipMode::Arp;
        let parent = v.link.as_ref().map(|l| l.0);
        let h = v.held.as_mut()?;
        if let Some(d) = &h.dhcp {
            if Some(d.parent) != parent {
                // Its macvlan went with the old link.
                return Some("its interface was replaced");
            }
            self.follow_lease(name, h).await;
        }
        let ip = h.ip?;
        if arp && now >= h.next_announce {
            self.announce(h).await;
        }
        if now >= h.next_refresh {
            h.next_refresh = now + REFRESH;
            if let Err(e) = self
                .node
                .host
                .put_vip(h.ifindex, ip, ADDRESS_LIFETIME_SECS)
                .await
            {
                if h.dhcp.is_some() && e.is_not_found() {
                    return Some("its macvlan vanished");
                }
                tracing::warn!(vip = %name, error = %e, "refreshing the VIP address failed");
            }
        }
        None
    }

    async fn announce(&self, h: &mut Held) {
        let Some(ip) = h.ip else { return };
        let sock = self.sender(h.ifindex);
        if let Ok(sock) = sock {
            for f in super::announce::frames(ip, h.mac) {
                if let Err(e) = sock.send(&f).await {
                    tracing::debug!(%ip, error = %e, "VIP announcement not sent");
                }
            }
            h.announcements += 1;
        }
        let now = Instant::now();
        h.next_announce = if h.burst < BURST.len() {
            let at = h.announced_from + BURST[h.burst];
            h.burst += 1;
            at.max(now)
        } else {
            now + REFRESH
        };
    }

    fn sender(&self, ifindex: u32) -> std::io::Result<Arc<RawSocket>> {
        let mut s = self.senders.lock().expect("poisoned");
        if let Some(x) = s.get(&ifindex) {
            return Ok(x.clone());
        }
        let sock = Arc::new(RawSocket::sender(ifindex)?);
        s.insert(ifindex, sock.clone());
        Ok(sock)
    }

    async fn drop_held(&self, name: &str, v: &mut Vip, why: &str) {
        self.give_up(name, v, why, false).await;
    }

    /// Gives a held VIP up: the address goes first. A dhcp VIP's client
    /// stops and its macvlan goes too; its lease is kept for the next
    /// holder unless `release_lease` (the VirtualIP is deleted), then it is
    /// given back to the server.
    async fn give_up(&self, name: &str, v: &mut Vip, why: &str, release_lease: bool) {
        let Some(mut h) = v.held.take() else { return };
        if v.spec.spec.mode == VipMode::Bgp {
            // Routers stop sending before the address goes.
            if let Some(ip) = h.ip {
                self.bgp.withdraw(name, ip).await;
            }
        }
        let client = h.dhcp.take();
        if let Some(c) = &client {
            // Nothing more from the VIP's MAC.
            c.abort();
        }
        if let Some(ip) = h.ip {
            if let Err(e) = self.node.host.del_vip(h.ifindex, ip).await {
                tracing::error!(vip = %name, %ip, error = %e, "VIP address not removed");
            }
            self.fence.release(ip).await;
        }
        if let Some(c) = client {
            let ifindex = c.ifindex;
            let last = c.stop().await;
            if release_lease {
                let now_s = crate::util::now_secs();
                if let Some(l) =
                    last.filter(|l| l.phase(now_s) != furrow_dhcp::client::LeasePhase::Expired)
                {
                    dhcp::release(name, ifindex, &l).await;
                }
                dhcp::forget(self.node.store.as_ref(), name).await;
            }
            self.senders.lock().expect("poisoned").remove(&ifindex);
            let task = tokio::spawn(dhcp::delete_macvlan(ifindex));
            let mut d = self.deleting.lock().expect("poisoned");
            d.retain(|(_, t)| !t.is_finished());
            d.push((name.to_string(), task));
        }
        tracing::info!(
            vip = %name,
            ip = %h.ip.map_or_else(|| "-".to_string(), |ip| ip.to_string()),
            reason = why,
            "VIP given up"
        );
        self.node.metrics.inc(
            "furrow_vip_transitions_total",
            vec![("vip", name.to_string()), ("to", "released".into())],
        );
    }

    /// Waits until the macvlans being deleted (of `vip`, or all) are gone.
    async fn deleted(&self, vip: Option<&str>) {
        let waiting: Vec<tokio::task::JoinHandle<()>> = {
            let mut d = self.deleting.lock().expect("poisoned");
            let (now, later) = d.drain(..).partition(|(n, _)| vip.is_none_or(|v| v == n));
            *d = later;
            now.into_iter().map(|(_, t)| t).collect()
        };
        for t in waiting {
            let _ = t.await;
        }
    }

    /// SIGTERM: drop every address, then hand the VIPs over at once.
    pub async fn shutdown(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let mut vips = self.vips.lock().await;
        self.election.set_ready(Vec::new());
        let mut held = Vec::new();
        for (name, v) in vips.iter_mut() {
            if v.held.is_some() {
                self.drop_held(name, v, "netd stopping").await;
                held.push(name.clone());
            }
        }
        // Addresses gone: say so before releasing, so the next node in
        // rank does not wait for this one.
        self.election.leave().await;
        for name in held {
            if let Err(e) = self.election.release(&name).await {
                tracing::warn!(vip = %name, error = %e, "VIP not released; it moves after the takeover time");
            }
        }
        drop(vips);
        // Their macvlans are gone before netd exits.
        self.deleted(None).await;
        self.bgp.shutdown().await;
    }

    /// Whether a BGPPeer's passwordFile changed since the last reconcile.
    pub async fn bgp_secrets_changed(&self) -> bool {
        self.bgp.secrets_changed().await
    }

    /// `GET /v1/bgp`.
    pub async fn bgp_info(&self) -> furrow_api::wire::BgpInfo {
        self.bgp.info().await
    }

    /// What this node sees of every VIP.
    pub async fn info(&self) -> Vec<VipInfo> {
        let leases = self.leases.snapshot();
        let now_s = crate::util::now_secs();
        let vips = self.vips.lock().await;
        let now = Instant::now();
        let me = self.election.node().to_string();
        let valid = self.election.valid(now);
        let live = self.election.live_nodes(now);
        vips.iter()
            .map(|(name, v)| {
                let holder = self.election.holder(name);
                let client = v.held.as_ref().and_then(|h| h.dhcp.as_ref());
                let acquiring = client.is_some() && v.held.as_ref().is_some_and(|h| h.ip.is_none());
                let record = leases.get(name);
                let setup = v.setup_problem(now);
                let role = if acquiring {
                    "holder (acquiring)"
                } else if v.held.is_some() {
                    "holder"
                } else if v.problem.is_some() || setup.is_some() {
                    "problem"
                } else if !v.eligible {
                    "ineligible"
                } else if !v.health.healthy() {
                    "unhealthy"
                } else if v.no_session {
                    "no-session"
                } else if !valid && !v.spec.spec.ecmp {
                    "fenced"
                } else {
                    "standby"
                };
                let (address, dhcp, problem) = if v.is_dhcp() {
                    let held_ip = v.held.as_ref().and_then(|h| h.ip);
                    let recorded = record
                        .filter(|r| !r.expired(now_s))
                        .map(|r| IpAddr::V4(r.ip));
                    let summary = match client {
                        Some(c) => dhcp::holder_summary(c, now_s),
                        None => dhcp::record_summary(name, record, now_s),
                    };
                    let problem = v.problem.clone().or(setup).or_else(|| {
                        let error = client.and_then(|c| c.snapshot().error);
                        acquiring.then(|| {
                            format!(
                                "DHCP: no lease yet{}",
                                error.map(|e| format!(": {e}")).unwrap_or_default()
                            )
                        })
                    });
                    (held_ip.or(recorded), Some(summary), problem)
                } else {
                    (v.address, None, v.problem.clone())
                };
                VipInfo {
                    name: name.clone(),
                    address,
                    mode: format!("{:?}", v.spec.spec.mode).to_lowercase(),
                    interface: v.link.as_ref().map(|l| l.1.clone()),
                    holder: holder.as_ref().map(|(h, _)| h.node.clone()),
                    holder_since_ms: holder.as_ref().map(|(h, _)| h.since_ms),
                    epoch: holder.as_ref().map(|(h, _)| h.epoch),
                    node: me.clone(),
                    role: role.to_string(),
                    healthy: v.health.healthy(),
                    health_error: v.health.last_error(),
                    problem,
                    announcements: v.held.as_ref().map_or(0, |h| h.announcements),
                    held_for_ms: v
                        .held
                        .as_ref()
                        .map(|h| now.duration_since(h.acquired).as_millis() as u64),
                    candidates: live
                        .iter()
                        .filter(|(_, r)| r.iter().any(|x| x == name))
                        .map(|(n, _)| n.clone())
                        .collect(),
                    backend: self.election.backend().to_string(),
                    heartbeat_error: self.election.heartbeat_error(),
                    dhcp,
                    fence: v
                        .held
                        .as_ref()
                        .and_then(|h| h.ip)
                        .filter(|_| v.spec.spec.mode == VipMode::Arp)
                        .map(|ip| self.fence.vip_state(ip).to_string()),
                }
            })
            .collect()
    }

    /// Metrics: packets the kernel fence dropped, by reason.
    pub fn fence_drops(&self) -> Vec<(&'static str, u64)> {
        self.fence.status().drops.by_reason().to_vec()
    }

    /// Metrics: 1 for each VIP this node holds, 0 otherwise.
    pub async fn held_gauge(&self) -> Vec<(String, u64, u64)> {
        let vips = self.vips.lock().await;
        vips.iter()
            .map(|(n, v)| {
                (
                    n.clone(),
                    u64::from(v.held.is_some()),
                    v.held.as_ref().map_or(0, |h| h.epoch),
                )
            })
            .collect()
    }
}

impl Vip {
    fn ready(&self) -> bool {
        // A dhcp VIP's address comes after the claim; its interface is
        // needed before.
        self.eligible
            && self.problem.is_none()
            && (self.address.is_some() || self.is_dhcp())
            && self.link.is_some()
            && self.health.healthy()
            && !self.no_session
            && self.setup_problem(Instant::now()).is_none()
    }

    fn is_dhcp(&self) -> bool {
        is_dhcp(&self.spec)
    }

    /// Why a dhcp VIP cannot be held here for now (its macvlan failed).
    fn setup_problem(&self, now: Instant) -> Option<String> {
        let (until, e) = self.setup_failed.as_ref()?;
        (now < *until).then(|| {
            format!(
                "macvlan: {e} (trying again in {}s)",
                until.duration_since(now).as_secs() + 1
            )
        })
    }

    fn unready_reason(&self) -> &'static str {
        if !self.health.healthy() {
            "health check failing"
        } else if self.no_session {
            "no established BGP session carries its address family"
        } else if self.problem.is_some() {
            "cannot be held here any more"
        } else {
            "no longer eligible"
        }
    }
}

/// `spec.address: dhcp`.
fn is_dhcp(v: &VirtualIp) -> bool {
    matches!(
        v.spec
            .address
            .as_deref()
            .map(furrow_api::resource::parse_vip_address),
        Some(Ok(VipAddress::Dhcp))
    )
}

fn next_ip(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(v) => u32::from(v).checked_add(1).map(|x| IpAddr::V4(x.into())),
        IpAddr::V6(v) => u128::from(v).checked_add(1).map(|x| IpAddr::V6(x.into())),
    }
}
