//! VirtualIPs with `address: dhcp`: the holder, and only the holder, has a
//! macvlan on the VIP's interface with a MAC derived from the VIP's name,
//! and runs a DHCP client on it (client-id and hostname from the name too),
//! so whichever node holds the VIP asks as the same client and a DHCP
//! server hands out the same address.
//!
//! The client runs in a task of its own and only reports the lease: the
//! controller (service.rs) puts the address on the macvlan and announces
//! it under its fencing rules, like any other VIP address. The last lease
//! is kept under [`LEASES`]`<vip>` so every node shows the address and the
//! next holder starts with it at once (confirming it with the server right
//! away) rather than waiting for a new exchange.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use furrow_api::MacAddr;
use furrow_dhcp::client::{Client, ClientError, ClientLease, ClientOptions, LeasePhase};
use serde::{Deserialize, Serialize};

use super::election::Election;
use crate::netlink::sysctl;
use crate::netlink::{Link, Netlink};
use crate::store::{Op, Store, Txn, WatchError, WatchEvent};

/// `/furrow/vip/dhcp/<vip>`: the last lease of a dhcp VIP.
pub const LEASES: &str = "/furrow/vip/dhcp/";
/// Macvlans of dhcp VIPs are named this and 10 hex digits.
pub const IFNAME_PREFIX: &str = "fvd";
const ALIAS_PREFIX: &str = "furrow-vip:";
/// Retry pace after a failed acquisition: doubling up to this.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Bound on a DHCPRELEASE (one unacknowledged frame).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the controller waits (holding its lock) for a new macvlan to
/// become operational: usually 5-15 ms; the announcement burst repeats
/// after 50 ms anyway.
const OPER_UP_WAIT: Duration = Duration::from_millis(30);
/// How long the client waits for it before its first exchange.
const OPER_UP_TIMEOUT: Duration = Duration::from_secs(1);

pub fn lease_key(vip: &str) -> String {
    format!("{LEASES}{vip}")
}

/// FNV-1a (64-bit) over a domain tag and the VIP's name: the same on every
/// node and every run (unlike std's randomised hasher).
fn fnv(tag: &str, vip: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in tag.bytes().chain([0]).chain(vip.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// The macvlan's name: `fvd` and 10 hex digits (15 bytes, the kernel's
/// limit), the same on every node.
pub fn macvlan_name(vip: &str) -> String {
    format!(
        "{IFNAME_PREFIX}{:010x}",
        fnv("furrow-vip-ifname", vip) & ((1u64 << 40) - 1)
    )
}

/// The VIP's MAC: locally administered unicast (first octet 0x02), the
/// other five octets from a hash of the name.
pub fn stable_mac(vip: &str) -> MacAddr {
    let h = fnv("furrow-vip-mac", vip).to_be_bytes();
    MacAddr([0x02, h[3], h[4], h[5], h[6], h[7]])
}

/// DHCP option 61: the same for every holder.
pub fn client_id(vip: &str) -> Vec<u8> {
    let mut id = b"furrow-vip:".to_vec();
    id.extend_from_slice(vip.as_bytes());
    id
}

/// IFLA_IFALIAS of the macvlan: which netd instance made it, for which VIP.
pub fn alias(instance: &str, vip: &str) -> String {
    format!("{ALIAS_PREFIX}{instance}:{vip}")
}

/// Whether `l` is a dhcp-VIP macvlan of this netd instance (by its
/// alias). One whose alias was never set (netd died right after creating
/// it) is down and silent; the next hold of its VIP replaces it.
pub fn is_ours(l: &Link, instance: &str) -> bool {
    l.alias
        .as_deref()
        .is_some_and(|a| a.starts_with(&format!("{ALIAS_PREFIX}{instance}:")))
}

/// What the store keeps of a dhcp VIP's lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseRecord {
    pub ip: Ipv4Addr,
    pub server: Ipv4Addr,
    /// The node that got or last renewed it.
    pub node: String,
    pub lease: ClientLease,
}

impl LeaseRecord {
    pub fn expired(&self, now: u64) -> bool {
        self.lease.phase(now) == LeasePhase::Expired
    }
}

/// Every recorded lease, by VIP name, followed through a watch: status
/// views read it without a store round trip (and answer while the store
/// does not).
#[derive(Clone, Default)]
pub struct LeaseCache {
    records: Arc<std::sync::Mutex<BTreeMap<String, LeaseRecord>>>,
}

impl LeaseCache {
    pub async fn start(&self, store: Arc<dyn Store>) -> Result<(), crate::store::StoreError> {
        let mut w = store.watch(LEASES);
        self.relist(store.as_ref()).await?;
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                match w.next().await {
                    Ok(WatchEvent::Put(kv)) => {
                        if let (Some(name), Ok(r)) =
                            (kv.key.strip_prefix(LEASES), kv.decode::<LeaseRecord>())
                        {
                            me.records().insert(name.to_string(), r);
                        }
                    }
                    Ok(WatchEvent::Delete { key, .. }) => {
                        if let Some(name) = key.strip_prefix(LEASES) {
                            me.records().remove(name);
                        }
                    }
                    Err(WatchError::Lagged(_)) => {
                        if let Err(e) = me.relist(store.as_ref()).await {
                            tracing::warn!(error = %e, "re-reading VIP DHCP leases failed");
                        }
                    }
                    Err(WatchError::Closed) => return,
                }
            }
        });
        Ok(())
    }

    async fn relist(&self, store: &dyn Store) -> Result<(), crate::store::StoreError> {
        let kvs = store.list(LEASES).await?;
        let all = kvs
            .iter()
            .filter_map(|kv| {
                let name = kv.key.strip_prefix(LEASES)?.to_string();
                Some((name, kv.decode().ok()?))
            })
            .collect();
        *self.records() = all;
        Ok(())
    }

    fn records(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, LeaseRecord>> {
        self.records.lock().expect("poisoned")
    }

    pub fn snapshot(&self) -> BTreeMap<String, LeaseRecord> {
        self.records().clone()
    }

    pub fn get(&self, vip: &str) -> Option<LeaseRecord> {
        self.records().get(vip).cloned()
    }
}

/// Forgets `vip`'s lease (the VirtualIP is gone, or the server refused it).
pub async fn forget(store: &dyn Store, vip: &str) {
    if let Err(e) = store.txn(Txn::new().then(Op::Delete(lease_key(vip)))).await {
        tracing::warn!(vip, error = %e, "forgetting a VIP's DHCP lease");
    }
}

fn now() -> u64 {
    crate::util::now_secs()
}

/// Creates the holder's macvlan on `parent` (replacing one left under its
/// name), quiet but for what netd sends: no IPv6, ARP answered only for
/// the VIP. The parent stops answering ARP for addresses it does not
/// carry itself (or the VIP would be answered from its MAC too) and picks
/// its own address for its ARP requests. Returns the macvlan's index.
pub async fn create_macvlan(
    host: &Netlink,
    instance: &str,
    vip: &str,
    parent: u32,
    parent_name: &str,
) -> Result<u32, String> {
    let name = macvlan_name(vip);
    if let Ok(Some(old)) = host.link_by_name(&name).await {
        if old.kind.as_deref() != Some("macvlan") {
            return Err(format!(
                "a link named {name} exists and is not a macvlan ({})",
                old.kind.as_deref().unwrap_or("unknown kind")
            ));
        }
        tracing::warn!(vip, link = %name, "replacing a macvlan left under this VIP's name");
        delete_macvlan(old.index).await;
    }
    let index = host
        .create_macvlan(&name, parent, stable_mac(vip))
        .await
        .map_err(|e| e.to_string())?;
    let configured = async {
        host.set_alias(index, &alias(instance, vip))
            .await
            .map_err(|e| e.to_string())?;
        // Only the parent's own addresses on the parent (keepalived does
        // the same for its VRRP macvlans).
        for (key, value) in [("arp_ignore", "1"), ("arp_announce", "2")] {
            let cur = sysctl::read_if_v4(parent_name, key).unwrap_or_default();
            if cur.parse::<u32>().unwrap_or(0) < value.parse::<u32>().unwrap_or(0) {
                sysctl::write_if_v4(parent_name, key, value).map_err(|e| e.to_string())?;
                tracing::info!(interface = %parent_name, key, value, "set so only the dhcp VIP's macvlan answers for it");
            }
        }
        for (key, value) in [("arp_ignore", "1"), ("arp_announce", "2"), ("rp_filter", "2")] {
            sysctl::write_if_v4(&name, key, value).map_err(|e| e.to_string())?;
        }
        if let Err(e) = sysctl::write_if_v6(&name, "disable_ipv6", "1") {
            if e.source.kind() != std::io::ErrorKind::NotFound {
                return Err(e.to_string());
            }
        }
        host.set_up(index).await.map_err(|e| e.to_string())?;
        Ok::<(), String>(())
    }
    .await;
    if let Err(e) = configured {
        delete_macvlan(index).await;
        return Err(format!("configuring macvlan {name}: {e}"));
    }
    host.wait_oper_up(index, OPER_UP_WAIT).await;
    Ok(index)
}

/// Deletes a macvlan (on a blocking thread: the kernel waits for an RCU
/// grace period inside the request); one already gone is fine.
pub async fn delete_macvlan(index: u32) {
    let r = tokio::task::spawn_blocking(move || crate::netlink::delete_link_blocking(index)).await;
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(index, error = %e, "deleting a dhcp VIP's macvlan"),
        Err(e) => tracing::error!(index, error = %e, "deleting a dhcp VIP's macvlan"),
    }
}

/// Removes every dhcp-VIP macvlan an earlier run of this netd instance
/// left (it holds nothing until it wins an election again).
pub async fn remove_stale(host: &Netlink, instance: &str) -> Result<usize, String> {
    let links = host.links().await.map_err(|e| e.to_string())?;
    let mut n = 0;
    for l in links.iter().filter(|l| is_ours(l, instance)) {
        tracing::info!(link = %l.name, alias = ?l.alias, "removing a dhcp VIP macvlan left by an earlier netd");
        delete_macvlan(l.index).await;
        n += 1;
    }
    Ok(n)
}

/// Sends DHCPRELEASE for `lease` from the macvlan `ifindex` (the VIP is
/// deleted: nobody will want the address again).
pub async fn release(vip: &str, ifindex: u32, lease: &ClientLease) {
    let mut l = lease.clone();
    l.ifindex = ifindex;
    match tokio::time::timeout(RELEASE_TIMEOUT, Client::for_lease(&l).release(&l)).await {
        Ok(Ok(())) => tracing::info!(vip, ip = %l.ip, server = %l.server_id, "DHCP lease released"),
        Ok(Err(e)) => tracing::warn!(vip, ip = %l.ip, error = %e, "DHCP release failed"),
        Err(_) => tracing::warn!(vip, ip = %l.ip, "DHCP release timed out"),
    }
}

/// What the client task reports.
#[derive(Debug, Clone)]
pub struct Report {
    pub lease: Option<ClientLease>,
    /// confirming (a previous holder's lease), acquiring, waiting (after a
    /// failed acquisition), bound, renewing, rebinding.
    pub state: &'static str,
    pub error: Option<String>,
}

/// The holder's client: its macvlan and the task talking to the server.
pub struct DhcpHold {
    /// The VIP's interface the macvlan sits on.
    pub parent: u32,
    pub ifname: String,
    pub ifindex: u32,
    pub mac: MacAddr,
    pub report: Arc<std::sync::Mutex<Report>>,
    task: tokio::task::JoinHandle<()>,
}

impl DhcpHold {
    /// Starts the client on the macvlan `ifindex`. With `initial` (the
    /// last holder's unexpired lease, same MAC) the lease is reported at
    /// once and confirmed with the server right away.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        host: Netlink,
        store: Arc<dyn Store>,
        node: &str,
        vip: &str,
        parent: u32,
        ifindex: u32,
        initial: Option<ClientLease>,
        election: Arc<Election>,
    ) -> DhcpHold {
        let mac = stable_mac(vip);
        let initial = initial.map(|mut l| {
            l.ifindex = ifindex;
            l
        });
        let report = Arc::new(std::sync::Mutex::new(Report {
            lease: initial.clone(),
            state: if initial.is_some() {
                "confirming"
            } else {
                "acquiring"
            },
            error: None,
        }));
        let run = Run {
            host,
            store,
            node: node.to_string(),
            vip: vip.to_string(),
            ifindex,
            mac,
            report: report.clone(),
            election,
        };
        let task = tokio::spawn(run.run(initial));
        DhcpHold {
            parent,
            ifname: macvlan_name(vip),
            ifindex,
            mac,
            report,
            task,
        }
    }

    /// The lease to use now: reported and not expired.
    pub fn lease(&self) -> Option<ClientLease> {
        let r = self.report.lock().expect("poisoned");
        r.lease
            .clone()
            .filter(|l| l.phase(now()) != LeasePhase::Expired)
    }

    pub fn snapshot(&self) -> Report {
        self.report.lock().expect("poisoned").clone()
    }

    /// Tells the client to stop at its next await point.
    pub fn abort(&self) {
        self.task.abort();
    }

    /// Stops the client (nothing is sent from the VIP's MAC after this
    /// returns); returns the last lease.
    pub async fn stop(mut self) -> Option<ClientLease> {
        self.task.abort();
        let _ = (&mut self.task).await;
        self.report.lock().expect("poisoned").lease.clone()
    }
}

impl Drop for DhcpHold {
    fn drop(&mut self) {
        // Never a client left running for a hold that is gone.
        self.task.abort();
    }
}

/// The client's life while its node holds the VIP: acquire, renew at T1,
/// rebind at T2, start over on a NAK or at expiry; every lease reported
/// and recorded in the store.
struct Run {
    host: Netlink,
    store: Arc<dyn Store>,
    node: String,
    vip: String,
    ifindex: u32,
    mac: MacAddr,
    report: Arc<std::sync::Mutex<Report>>,
    election: Arc<Election>,
}

impl Run {
    fn set(&self, f: impl FnOnce(&mut Report)) {
        f(&mut self.report.lock().expect("poisoned"));
        // The controller puts the address on (or takes it off) now rather
        // than at its next tick.
        self.election.changed.notify_waiters();
    }

    async fn persist(&self, l: &ClientLease) {
        let rec = LeaseRecord {
            ip: l.ip,
            server: l.server_id,
            node: self.node.clone(),
            lease: l.clone(),
        };
        if let Err(e) = self
            .store
            .txn(Txn::new().then(Op::put_json(lease_key(&self.vip), &rec)))
            .await
        {
            // Not fatal: the next holder asks the server anew (same MAC and
            // client-id, so the same address).
            tracing::warn!(vip = %self.vip, error = %e, "recording a VIP's DHCP lease");
        }
    }

    async fn bound(&self, l: &ClientLease) {
        self.set(|r| {
            r.lease = Some(l.clone());
            r.state = "bound";
            r.error = None;
        });
        self.persist(l).await;
    }

    async fn lost(&self, l: &ClientLease, why: &str) {
        tracing::warn!(vip = %self.vip, ip = %l.ip, why, "VIP's DHCP lease lost");
        self.set(|r| {
            r.lease = None;
            r.state = "acquiring";
            r.error = Some(why.to_string());
        });
        forget(self.store.as_ref(), &self.vip).await;
    }

    async fn run(self, initial: Option<ClientLease>) {
        let client = Client::with_options(
            self.ifindex,
            self.mac,
            ClientOptions {
                hostname: Some(self.vip.clone()),
                client_id: Some(client_id(&self.vip)),
                first_retransmit: Duration::from_secs(1),
                // A server that was down is found again within seconds.
                max_retransmit: Duration::from_secs(8),
                acquire_timeout: Duration::from_secs(30),
                renew_timeout: Duration::from_secs(10),
                jitter: true,
                ..Default::default()
            },
        );
        if !self.host.wait_oper_up(self.ifindex, OPER_UP_TIMEOUT).await {
            tracing::warn!(vip = %self.vip, "VIP macvlan not operational yet (is the interface's carrier down?)");
        }
        let mut lease = initial;
        // A lease from the previous holder is confirmed at once.
        let mut confirm = lease.is_some();
        let mut backoff = RETRY_MIN;
        loop {
            let Some(l) = lease.clone() else {
                self.set(|r| r.state = "acquiring");
                match client.acquire().await {
                    Ok(n) => {
                        tracing::info!(vip = %self.vip, ip = %n.ip, server = %n.server_id, lease = n.lease_time, mac = %self.mac, "VIP's DHCP lease acquired");
                        self.bound(&n).await;
                        lease = Some(n);
                        backoff = RETRY_MIN;
                    }
                    Err(e) => {
                        tracing::warn!(vip = %self.vip, error = %e, retry_in = ?backoff, "VIP's DHCP acquisition failed");
                        self.set(|r| {
                            r.state = "waiting";
                            r.error = Some(e.to_string());
                        });
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(RETRY_MAX);
                    }
                }
                continue;
            };
            let t = now();
            let result = match l.phase(t) {
                LeasePhase::Bound if !confirm => {
                    tokio::time::sleep(l.retry_delay(t)).await;
                    continue;
                }
                LeasePhase::Bound | LeasePhase::Renewing => {
                    self.set(|r| r.state = if confirm { "confirming" } else { "renewing" });
                    client.renew(&l).await
                }
                LeasePhase::Rebinding => {
                    self.set(|r| r.state = "rebinding");
                    client.rebind(&l).await
                }
                LeasePhase::Expired => {
                    self.lost(&l, "lease expired").await;
                    lease = None;
                    confirm = false;
                    continue;
                }
            };
            match result {
                Ok(n) => {
                    tracing::info!(vip = %self.vip, ip = %n.ip, server = %n.server_id, confirm, "VIP's DHCP lease renewed");
                    self.bound(&n).await;
                    lease = Some(n);
                    confirm = false;
                }
                Err(e @ ClientError::Nak { .. }) => {
                    self.lost(&l, &e.to_string()).await;
                    lease = None;
                    confirm = false;
                }
                Err(e) => {
                    // Keep the address until expiry; try again later.
                    confirm = false;
                    let wait = l.retry_delay(now()).max(RETRY_MIN);
                    tracing::warn!(vip = %self.vip, error = %e, retry_in = ?wait, "VIP's DHCP renewal failed");
                    self.set(|r| {
                        r.state = "bound";
                        r.error = Some(format!("renewal: {e}"));
                    });
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// One line for `netctl vip`: what the holder's client says.
pub fn holder_summary(h: &DhcpHold, now: u64) -> String {
    let r = h.snapshot();
    let mut s = match &r.lease {
        Some(l) => format!(
            "{} {} from {}, renew in {}s, expires in {}s",
            r.state,
            l.ip,
            l.server_id,
            l.renew_at().saturating_sub(now),
            l.expires_at().saturating_sub(now)
        ),
        None => r.state.to_string(),
    };
    s.push_str(&format!(" (mac {} on {})", h.mac, h.ifname));
    if let Some(e) = &r.error {
        s.push_str(&format!("; last error: {e}"));
    }
    s
}

/// One line for `netctl vip` on a node not holding it: the recorded lease.
pub fn record_summary(vip: &str, rec: Option<&LeaseRecord>, now: u64) -> String {
    let mac = stable_mac(vip);
    match rec {
        Some(r) if !r.expired(now) => format!(
            "leased {} from {} by {}, expires in {}s (mac {mac})",
            r.ip,
            r.server,
            r.node,
            r.lease.expires_at().saturating_sub(now)
        ),
        Some(r) => format!("last lease {} from {} expired (mac {mac})", r.ip, r.server),
        None => format!("no lease recorded (mac {mac})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_macs_are_stable_and_valid() {
        let n = macvlan_name("cp");
        assert_eq!(n.len(), 13);
        assert!(n.len() <= 15 && n.starts_with("fvd"));
        assert_eq!(n, macvlan_name("cp"));
        assert_ne!(n, macvlan_name("cp2"));
        let m = stable_mac("cp");
        assert_eq!(m, stable_mac("cp"));
        assert_ne!(m, stable_mac("cp2"));
        // Locally administered unicast.
        assert_eq!(m.0[0] & 0x03, 0x02);
        // Fixed values: a change here changes every deployed VIP's MAC
        // (and so its DHCP address) and its macvlan's name.
        assert_eq!(m.to_string(), "02:fd:45:c1:da:11");
        assert_eq!(n, "fvd2ed49fb57a");
        assert_eq!(client_id("cp"), b"furrow-vip:cp".to_vec());
        let l = Link {
            index: 9,
            name: n.clone(),
            mac: Some(m),
            mtu: 1500,
            up: true,
            kind: Some("macvlan".into()),
            alias: Some(alias("node1", "cp")),
            controller: None,
            carrier: true,
            oper_up: true,
        };
        assert!(is_ours(&l, "node1"));
        assert!(!is_ours(&l, "node2"));
        let port = Link {
            alias: Some("furrow:node1:/furrow/ports/x".into()),
            ..l.clone()
        };
        assert!(!is_ours(&port, "node1"));
        assert!(!is_ours(&Link { alias: None, ..l }, "node1"));
    }
}
