//! What every part of netd shares: the resolved options, the store, the
//! kernel handles (netlink, datapath, firewall) and the bookkeeping that
//! keeps concurrent operations consistent.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use furrow_ebpf::Datapath;

use crate::firewall::{FirewallDriver, FirewallError, MasqueradeNetwork};
use crate::locks::KeyedLocks;
use crate::metrics::Metrics;
use crate::netlink::Netlink;
use crate::options::Resolved;
use crate::store::Store;

pub struct Node {
    pub cfg: Resolved,
    pub store: Arc<dyn Store>,
    /// rtnetlink in the node's namespace.
    pub host: Netlink,
    /// Map and link updates are single syscalls; a plain mutex is enough.
    /// None with `--vip-only`: nothing is forwarded, nothing is loaded.
    pub datapath: Mutex<Option<Datapath>>,
    pub firewall: Arc<dyn FirewallDriver>,
    pub port_locks: Arc<KeyedLocks>,
    /// Work that outlives the request that started it (a veth's removal
    /// after DEL answered); shutdown waits for it.
    pub background: tokio_util::task::TaskTracker,
    pub metrics: Metrics,
    /// The masquerade set members netd wants, per network. Every change
    /// to the kernel set goes through here under one lock, so a full
    /// resync never races an ADD or DEL into a stale set.
    masq: tokio::sync::Mutex<MasqState>,
}

#[derive(Default)]
struct MasqState {
    /// Networks whose masquerade rule is installed.
    networks: BTreeMap<String, MasqueradeNetwork>,
    /// Addresses of ports that asked for masquerade (ipMasq), per network,
    /// whether or not the network masquerades right now.
    wanted: BTreeMap<String, BTreeSet<Ipv4Addr>>,
}

impl Node {
    pub fn new(
        cfg: Resolved,
        store: Arc<dyn Store>,
        host: Netlink,
        datapath: Option<Datapath>,
        firewall: Arc<dyn FirewallDriver>,
    ) -> Self {
        Node {
            cfg,
            store,
            host,
            datapath: Mutex::new(datapath),
            firewall,
            port_locks: Arc::new(KeyedLocks::default()),
            background: tokio_util::task::TaskTracker::new(),
            metrics: Metrics::default(),
            masq: tokio::sync::Mutex::new(MasqState::default()),
        }
    }

    pub fn datapath(&self) -> std::sync::MutexGuard<'_, Option<Datapath>> {
        // A panic while holding it leaves plain kernel handles behind:
        // nothing half-updated in memory, so carrying on is safe.
        self.datapath.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `ip` wants masquerade on `network` and, if the network
    /// masquerades, adds it to the kernel set.
    pub async fn masq_add(&self, network: &str, ip: Ipv4Addr) -> Result<(), FirewallError> {
        let mut st = self.masq.lock().await;
        if st.networks.contains_key(network) {
            let fw = self.firewall.clone();
            let n = network.to_string();
            blocking(move || fw.add_member(&n, ip)).await?;
        }
        st.wanted.entry(network.to_string()).or_default().insert(ip);
        Ok(())
    }

    pub async fn masq_remove(&self, network: &str, ip: Ipv4Addr) -> Result<(), FirewallError> {
        let mut st = self.masq.lock().await;
        if st.networks.contains_key(network) {
            let fw = self.firewall.clone();
            let n = network.to_string();
            blocking(move || fw.remove_member(&n, ip)).await?;
        }
        if let Some(m) = st.wanted.get_mut(network) {
            m.remove(&ip);
        }
        Ok(())
    }

    pub async fn masq_has(&self, network: &str, ip: Ipv4Addr) -> Result<bool, FirewallError> {
        let fw = self.firewall.clone();
        let n = network.to_string();
        blocking(move || fw.has_member(&n, ip)).await
    }

    pub async fn masq_rule_present(&self, network: &str) -> Result<bool, FirewallError> {
        let fw = self.firewall.clone();
        let n = network.to_string();
        blocking(move || fw.rule_present(&n)).await
    }

    /// Sets who wants masquerade, wholesale, without touching the kernel
    /// (startup, before the first sync, from the port records).
    pub async fn masq_init_wanted(&self, wanted: BTreeMap<String, BTreeSet<Ipv4Addr>>) {
        self.masq.lock().await.wanted = wanted;
    }

    /// Makes the kernel hold exactly these masquerading networks, each with
    /// the members that want it, in one atomic batch.
    pub async fn masq_set_networks(
        &self,
        networks: Vec<MasqueradeNetwork>,
    ) -> Result<(), FirewallError> {
        let mut st = self.masq.lock().await;
        let desired: Vec<(MasqueradeNetwork, Vec<Ipv4Addr>)> = networks
            .iter()
            .map(|n| {
                let m = st
                    .wanted
                    .get(&n.name)
                    .map(|s| s.iter().copied().collect())
                    .unwrap_or_default();
                (n.clone(), m)
            })
            .collect();
        let fw = self.firewall.clone();
        blocking(move || fw.sync(&desired)).await?;
        st.networks = networks.into_iter().map(|n| (n.name.clone(), n)).collect();
        Ok(())
    }

    /// Whether masquerade is configured for a network right now.
    pub async fn masq_network(&self, network: &str) -> bool {
        self.masq.lock().await.networks.contains_key(network)
    }

    /// Runs datapath work (map updates, tcx link attach) off the async threads.
    pub async fn with_datapath<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Datapath) -> T + Send + 'static,
    ) -> T {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            // Only reachable with a datapath: --vip-only refuses every
            // request that would forward packets.
            f(me.datapath()
                .as_mut()
                .expect("datapath used with --vip-only"))
        })
        .await
        .expect("datapath task panicked")
    }

    /// Like `with_datapath`, None with `--vip-only`.
    pub async fn try_with_datapath<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Datapath) -> T + Send + 'static,
    ) -> Option<T> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.datapath().as_mut().map(f))
            .await
            .expect("datapath task panicked")
    }
}

/// Runs blocking kernel work (nftables batches) off the async threads.
pub async fn blocking<T: Send + 'static, E: Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E> {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking kernel task panicked")
}
