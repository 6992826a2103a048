//! The VIP controller: for each VirtualIP this node may hold, take part in
//! its election (election.rs) and, while holding it, keep the address on
//! its interface and announce it; give it up on step-down, failed health,
//! lost fencing, deletion and SIGTERM.

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
const POOL_ALLOCATIONS: &str = "/furrow/vip/pool-allocations/";

struct Held {
    ip: IpAddr,
    ifindex: u32,
    mac: [u8; 6],
    acquired: Instant,
    next_announce: Instant,
    burst: usize,
    next_refresh: Instant,
    epoch: u64,
    announcements: u64,
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
}

impl VipService {
    pub fn new(node: Arc<Node>, vlan: VlanDriver, timing: super::election::Timing) -> Self {
        let election = Election::new(node.store.clone(), &node.cfg.node, timing);
        VipService {
            bgp: BgpControl::new(node.clone()),
            node,
            vlan,
            election,
            vips: Default::default(),
            senders: Default::default(),
        }
    }

    /// Removes every VIP address a previous netd left (its holds are void
    /// until won again), then joins the election.
    pub async fn start(&self) -> anyhow::Result<()> {
        let stale = self.node.host.vip_addresses().await?;
        for a in stale {
            tracing::info!(ip = %a.ip, ifindex = a.index, "removing a VIP address left by an earlier netd");
            self.node.host.del_vip(a.index, a.ip).await?;
        }
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
        let mut vips = self.vips.lock().await;
        let wanted: std::collections::BTreeSet<String> =
            specs.iter().map(|v| v.metadata.name.clone()).collect();
        for name in vips.keys().cloned().collect::<Vec<_>>() {
            if !wanted.contains(&name) {
                let mut v = vips.remove(&name).expect("listed");
                self.drop_held(&name, &mut v, "VirtualIP deleted").await;
                let _ = self.election.release(&name).await;
                let _ = self.free_pool_allocation(&name).await;
            }
        }
        for spec in specs {
            let name = spec.metadata.name.clone();
            let changed = vips.get(&name).is_none_or(|v| v.spec.spec != spec.spec);
            if changed {
                if let Some(mut old) = vips.remove(&name) {
                    self.drop_held(&name, &mut old, "VirtualIP changed").await;
                    let _ = self.election.release(&name).await;
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
            v.problem = None;
            if v.spec.spec.mode == VipMode::Bgp {
                if let Some(p) = &bgp_unavailable {
                    v.problem = Some(p.clone());
                }
            }
            if v.problem.is_none() {
                match self.resolve_address(&name, &v.spec, &pools).await {
                    Ok(a) => v.address = a,
                    Err(e) => v.problem = Some(e),
                }
            }
            if v.problem.is_none() {
                match self.resolve_link(&v.spec).await {
                    Ok(l) => v.link = Some(l),
                    Err(e) => {
                        v.link = None;
                        v.problem = Some(e);
                    }
                }
            }
            if let (None, Some(ip), Some((idx, ifname, _))) = (&v.problem, v.address, &v.link) {
                if v.spec.spec.mode == VipMode::Arp {
                    match self.node.host.link_prefixes(*idx).await {
                        Ok(prefixes) if prefixes.iter().any(|p| p.contains(&ip)) => {}
                        Ok(prefixes) => {
                            let list: Vec<String> =
                                prefixes.iter().map(|p| p.to_string()).collect();
                            v.problem = Some(format!(
                                "{ip} is outside every subnet of {ifname} ({}): in ARP mode a VIP must be on the interface's subnet",
                                if list.is_empty() { "no addresses".to_string() } else { list.join(", ") }
                            ));
                        }
                        Err(e) => v.problem = Some(e.to_string()),
                    }
                }
            }
            if let Some(p) = &v.problem {
                tracing::warn!(vip = %name, problem = %p, "VIP cannot be held on this node");
            }
        }
        drop(vips);
        self.election.changed.notify_waiters();
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
                VipAddress::Dhcp => {
                    Err("address dhcp is not supported yet: give a static address or a pool".into())
                }
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
        let ready: Vec<String> = vips
            .iter()
            .filter(|(_, v)| v.ready())
            .map(|(n, _)| n.clone())
            .collect();
        self.election.set_ready(ready);
        let valid = self.election.valid(now);
        let me = self.election.node().to_string();
        let bgp_up = self.bgp.established().await;
        for (name, v) in vips.iter_mut() {
            v.no_session = v.spec.spec.mode == VipMode::Bgp && !bgp_up;
            if v.spec.spec.ecmp {
                // Every ready node advertises: no election, and nothing to
                // fence (routers spread traffic over all of them).
                match (v.held.is_some(), v.ready()) {
                    (true, true) => self.keep_held(name, v, now).await,
                    (true, false) => self.drop_held(name, v, v.unready_reason()).await,
                    (false, true) => self.acquire(name, v, 0).await,
                    (false, false) => {}
                }
                continue;
            }
            let holder = self.election.holder(name);
            if v.held.is_some() {
                let still_mine = holder.as_ref().is_some_and(|(h, _)| h.node == me);
                if !valid {
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
                } else {
                    self.keep_held(name, v, now).await;
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
                Some((h, _)) => self.election.dead_heartbeat(&h.node, now).map(|rev| Seen {
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
        let now = Instant::now();
        let mut held = Held {
            ip,
            ifindex,
            mac,
            acquired: now,
            next_announce: now,
            burst: 0,
            next_refresh: now + REFRESH,
            epoch,
            announcements: 0,
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

    async fn keep_held(&self, name: &str, v: &mut Vip, now: Instant) {
        let arp = v.spec.spec.mode == VipMode::Arp;
        let Some(h) = v.held.as_mut() else { return };
        if arp && now >= h.next_announce {
            self.announce(h).await;
        }
        if now >= h.next_refresh {
            h.next_refresh = now + REFRESH;
            if let Err(e) = self
                .node
                .host
                .put_vip(h.ifindex, h.ip, ADDRESS_LIFETIME_SECS)
                .await
            {
                tracing::warn!(vip = %name, error = %e, "refreshing the VIP address failed");
            }
        }
    }

    async fn announce(&self, h: &mut Held) {
        let sock = self.sender(h.ifindex);
        if let Ok(sock) = sock {
            for f in super::announce::frames(h.ip, h.mac) {
                if let Err(e) = sock.send(&f).await {
                    tracing::debug!(ip = %h.ip, error = %e, "VIP announcement not sent");
                }
            }
            h.announcements += 1;
        }
        let now = Instant::now();
        h.next_announce = if h.burst < BURST.len() {
            let at = h.acquired + BURST[h.burst];
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
        let Some(h) = v.held.take() else { return };
        if v.spec.spec.mode == VipMode::Bgp {
            // Routers stop sending before the address goes.
            self.bgp.withdraw(name, h.ip).await;
        }
        if let Err(e) = self.node.host.del_vip(h.ifindex, h.ip).await {
            tracing::error!(vip = %name, ip = %h.ip, error = %e, "VIP address not removed");
        }
        tracing::info!(vip = %name, ip = %h.ip, reason = why, "VIP given up");
        self.node.metrics.inc(
            "furrow_vip_transitions_total",
            vec![("vip", name.to_string()), ("to", "released".into())],
        );
    }

    /// SIGTERM: drop every address, then hand the VIPs over at once.
    pub async fn shutdown(&self) {
        let mut vips = self.vips.lock().await;
        self.election.set_ready(Vec::new());
        for (name, v) in vips.iter_mut() {
            if v.held.is_some() {
                self.drop_held(name, v, "netd stopping").await;
                if let Err(e) = self.election.release(name).await {
                    tracing::warn!(vip = %name, error = %e, "VIP not released; it moves after the takeover time");
                }
            }
        }
        drop(vips);
        self.bgp.shutdown().await;
    }

    /// `GET /v1/bgp`.
    pub async fn bgp_info(&self) -> furrow_api::wire::BgpInfo {
        self.bgp.info().await
    }

    /// What this node sees of every VIP.
    pub async fn info(&self) -> Vec<VipInfo> {
        let vips = self.vips.lock().await;
        let now = Instant::now();
        let me = self.election.node().to_string();
        let valid = self.election.valid(now);
        let live = self.election.live_nodes(now);
        vips.iter()
            .map(|(name, v)| {
                let holder = self.election.holder(name);
                let role = if v.held.is_some() {
                    "holder"
                } else if v.problem.is_some() {
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
                VipInfo {
                    name: name.clone(),
                    address: v.address,
                    mode: format!("{:?}", v.spec.spec.mode).to_lowercase(),
                    interface: v.link.as_ref().map(|l| l.1.clone()),
                    holder: holder.as_ref().map(|(h, _)| h.node.clone()),
                    holder_since_ms: holder.as_ref().map(|(h, _)| h.since_ms),
                    epoch: holder.as_ref().map(|(h, _)| h.epoch),
                    node: me.clone(),
                    role: role.to_string(),
                    healthy: v.health.healthy(),
                    health_error: v.health.last_error(),
                    problem: v.problem.clone(),
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
                }
            })
            .collect()
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
        self.eligible
            && self.problem.is_none()
            && self.address.is_some()
            && self.link.is_some()
            && self.health.healthy()
            && !self.no_session
    }

    fn unready_reason(&self) -> &'static str {
        if !self.health.healthy() {
            "health check failing"
        } else if self.no_session {
            "no BGP session established"
        } else if self.problem.is_some() {
            "cannot be held here any more"
        } else {
            "no longer eligible"
        }
    }
}

fn next_ip(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(v) => u32::from(v).checked_add(1).map(|x| IpAddr::V4(x.into())),
        IpAddr::V6(v) => u128::from(v).checked_add(1).map(|x| IpAddr::V6(x.into())),
    }
}
