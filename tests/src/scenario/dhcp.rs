//! The DHCP scenario: two nodes sharing their state through etcd, a VLAN
//! network on both, an IPPool for it, and VMs (namespaces, or a QEMU
//! guest) that get their addresses from Furrow with real DHCP clients.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use furrow_api::wire::{LeaseInfo, PoolInfo};
use serde_json::Value;

use crate::lab::vlan_nad;
use crate::{Lab, Pod};

pub const CN: &str = "data";
pub const NIC: &str = "data0";
pub const VLAN: u16 = 100;
/// The VLAN network (CNI network name) the pool serves.
pub const NETWORK: &str = "vm-net";
pub const POOL: &str = "vm-pool";
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 80, 0, 2);
pub const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 80, 0, 1);
pub const MTU: u32 = 1400;

/// The pool's knobs a test varies.
#[derive(Debug, Clone)]
pub struct PoolSpec {
    /// Last octets of the range 10.80.0.<start>..=10.80.0.<end>.
    pub range: (u8, u8),
    pub exclude: Vec<u8>,
    pub lease_time: u32,
}

impl Default for PoolSpec {
    fn default() -> Self {
        PoolSpec {
            range: (10, 50),
            exclude: vec![11],
            lease_time: 3600,
        }
    }
}

impl PoolSpec {
    pub fn yaml(&self) -> String {
        let exclude: Vec<String> = self
            .exclude
            .iter()
            .map(|o| format!("10.80.0.{o}"))
            .collect();
        format!(
            "apiVersion: network.furrow.io/v1alpha1
kind: IPPool
metadata:
  name: {POOL}
spec:
  networkName: default/{NETWORK}
  ipv4Config:
    serverIP: {SERVER_IP}
    cidr: 10.80.0.0/24
    pool:
      start: 10.80.0.{}
      end: 10.80.0.{}
      exclude: [{}]
    router: {ROUTER}
    dns: [10.80.0.1, 10.80.0.3]
    domainName: vms.example
    domainSearch: [vms.example, example]
    ntp: [10.80.0.4]
    leaseTime: {}
    mtu: {MTU}
    routes:
      - dst: 192.168.0.0/16
        gateway: 10.80.0.1
",
            self.range.0,
            self.range.1,
            exclude.join(", "),
            self.lease_time
        )
    }
}

pub struct DhcpLab {
    pub lab: Lab,
}

impl DhcpLab {
    /// Two nodes on one etcd, the cluster network on each node's `data0`
    /// (eBPF backend), and the pool.
    pub fn build(pool: &PoolSpec) -> anyhow::Result<DhcpLab> {
        let mut lab = Lab::shared(1)?;
        for n in ["node1", "node2"] {
            lab.add_node(n)?;
        }
        for i in 0..2 {
            lab.add_data_nic(i, NIC)?;
            lab.node(i)
                .cluster_network(CN, "ebpf", &[NIC], 1500)
                .with_context(|| format!("cluster network on node{}", i + 1))?;
        }
        lab.node(0)
            .apply(&pool.yaml())
            .context("applying the IPPool")?;
        let d = DhcpLab { lab };
        // Both nodes know the pool before any VM asks.
        for i in 0..2 {
            d.wait_for(
                &format!("node{} loads the pool", i + 1),
                Duration::from_secs(10),
                || Ok(d.pools(i)?.iter().any(|p| p.name == POOL)),
            )?;
        }
        Ok(d)
    }

    /// Reserves `ip` for `mac` (a VirtualMachineNetworkConfig).
    pub fn reserve(&self, vm: &str, mac: &str, ip: Ipv4Addr) -> anyhow::Result<()> {
        self.lab.node(0).apply(&format!(
            "apiVersion: network.furrow.io/v1alpha1
kind: VirtualMachineNetworkConfig
metadata:
  name: {vm}
spec:
  vmName: {vm}
  networkConfigs:
    - networkName: default/{NETWORK}
      macAddress: {mac}
      ipAddress: {ip}
"
        ))?;
        Ok(())
    }

    /// The NAD config of the VM network on node `i`, with a fixed MAC.
    pub fn nad(&self, i: usize, mac: Option<&str>) -> Value {
        let mut c = vlan_nad(NETWORK, CN, VLAN, &self.lab.node(i).netd.socket);
        if let Some(m) = mac {
            c["runtimeConfig"] = serde_json::json!({ "mac": m });
        }
        c
    }

    /// A VM namespace on node `i` attached to the VM network (no address:
    /// DHCP gives it one).
    pub fn vm(&self, i: usize, name: &str, mac: Option<&str>) -> anyhow::Result<Pod> {
        self.lab.node(i).vm(name, &self.nad(i, mac))
    }

    pub fn leases(&self, i: usize) -> anyhow::Result<Vec<LeaseInfo>> {
        Ok(self.lab.node(i).netd.client().get("/v1/dhcp/leases")?)
    }

    pub fn pools(&self, i: usize) -> anyhow::Result<Vec<PoolInfo>> {
        Ok(self.lab.node(i).netd.client().get("/v1/dhcp/pools")?)
    }

    /// The lease of `mac` as node `i` sees it.
    pub fn lease_of(&self, i: usize, mac: &str) -> anyhow::Result<Option<LeaseInfo>> {
        Ok(self
            .leases(i)?
            .into_iter()
            .find(|l| l.mac.to_string() == mac.to_lowercase()))
    }

    /// A counter's value in node `i`'s metrics, summed over the series
    /// whose labels contain every `key="value"` in `labels`.
    pub fn metric(&self, i: usize, name: &str, labels: &[&str]) -> anyhow::Result<f64> {
        let text = self.lab.node(i).netd.client().get_text("/metrics")?;
        Ok(text
            .lines()
            .filter(|l| {
                l.starts_with(name)
                    && l[name.len()..].starts_with(['{', ' '])
                    && labels.iter().all(|x| l.contains(x))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut() -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let end = Instant::now() + timeout;
        let mut last = None;
        loop {
            match f() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => last = Some(e),
            }
            if Instant::now() >= end {
                bail!("{what}: not within {timeout:?} (last error: {last:?})");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The MAC of `ifname` in the VM.
pub fn mac_of(pod: &Pod, ifname: &str) -> anyhow::Result<String> {
    let v: Value = serde_json::from_str(&pod.ns.ip(&["-j", "link", "show", "dev", ifname])?)?;
    Ok(v[0]["address"].as_str().unwrap_or_default().to_string())
}
