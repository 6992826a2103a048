//! Floating-VIP labs shared by the tests, the demo and the benchmark:
//! three nodes on a real 3-member etcd, and for BGP mode BIRD 2 as their
//! upstream router in the fabric's external namespace (also every node's
//! default gateway) with a client behind it that reaches the VIPs only
//! through the routes BIRD learns.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use anyhow::bail;
use furrow_api::wire::{BgpInfo, VipInfo};

use crate::bird::{bird_conf, bird_peer, link, wait_until, Bird};
use crate::lab::EXTERNAL_IP;
use crate::{names, Lab, Netns};

pub const ROUTER_AS: u32 = 65000;
pub const NODE_AS: u32 = 65001;
pub const ROUTER_V6: &str = "fd00:18::fe";

/// A lab of `n` nodes sharing a 3-member etcd.
pub fn nodes_on_etcd(n: usize) -> anyhow::Result<Lab> {
    let mut lab = Lab::shared(3)?;
    for i in 0..n {
        lab.add_node(&format!("node{}", i + 1))?;
    }
    Ok(lab)
}

/// A VirtualIP in ARP mode on every node's uplink0.
pub fn arp_vip_yaml(name: &str, address: impl Into<IpAddr>, extra: &str) -> String {
    let address: IpAddr = address.into();
    format!(
        "apiVersion: network.furrow.io/v1alpha1
kind: VirtualIP
metadata: {{name: {name}}}
spec:
  address: {address}
  interface: uplink0
  mode: arp
{extra}"
    )
}

/// A VirtualIP in BGP mode, held on the node's loopback.
pub fn bgp_vip_yaml(name: &str, address: &str, extra: &str) -> String {
    format!(
        "apiVersion: network.furrow.io/v1alpha1
kind: VirtualIP
metadata: {{name: {name}}}
spec:
  address: \"{address}\"
  interface: lo
  mode: bgp
{extra}"
    )
}

/// Whether node `i` has `ip` on its uplink (as `ip addr` shows it).
pub fn has_address(lab: &Lab, i: usize, ip: IpAddr) -> bool {
    let (family, want) = match ip {
        IpAddr::V4(_) => ("-4", format!("inet {ip}/32 ")),
        IpAddr::V6(_) => ("-6", format!("inet6 {ip}/128 ")),
    };
    lab.node(i)
        .ns
        .ip(&["-o", family, "addr", "show", "dev", "uplink0"])
        .map(|o| o.contains(&want))
        .unwrap_or(false)
}

/// The nodes that have `ip` on their uplink.
pub fn holders(lab: &Lab, ip: IpAddr) -> Vec<usize> {
    (0..lab.nodes.len())
        .filter(|i| has_address(lab, *i, ip))
        .collect()
}

pub fn uplink_mac(lab: &Lab, i: usize) -> [u8; 6] {
    crate::arp::link_mac(&lab.node(i).ns, "uplink0").unwrap_or_default()
}

/// Who answers the external host for `ip`: ARP, or neighbour solicitation
/// from the external host's first global IPv6 address.
pub fn responders(lab: &Lab, ip: IpAddr) -> anyhow::Result<Vec<[u8; 6]>> {
    let wait = Duration::from_millis(200);
    match ip {
        IpAddr::V4(v4) => crate::arp::responders(&lab.external, "eth0", EXTERNAL_IP, v4, wait),
        IpAddr::V6(v6) => {
            let out = lab
                .external
                .ip(&["-6", "-o", "addr", "show", "dev", "eth0", "scope", "global"])?;
            let src: Ipv6Addr = out
                .split_whitespace()
                .skip_while(|w| *w != "inet6")
                .nth(1)
                .and_then(|a| a.split('/').next())
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| anyhow::anyhow!("the external host has no global IPv6 address"))?;
            crate::ndp::responders(&lab.external, "eth0", src, v6, wait)
        }
    }
}

/// Waits until exactly one node other than `not` holds `ip` and is the
/// only one answering the external host for it; returns that node.
pub fn single_holder(
    lab: &Lab,
    ip: IpAddr,
    not: Option<usize>,
    timeout: Duration,
) -> anyhow::Result<usize> {
    let end = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let h = holders(lab, ip);
        if let [h] = h.as_slice() {
            if Some(*h) != not {
                let answers = responders(lab, ip)?;
                if answers == [uplink_mac(lab, *h)] {
                    return Ok(*h);
                }
                last = format!("node{} holds it; answered by {answers:02x?}", h + 1);
            }
        } else {
            last = format!("holders {h:?}");
        }
        if Instant::now() > end {
            bail!("no single holder of {ip} within {timeout:?}: {last}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn node_v6(i: usize) -> String {
    format!("fd00:18::{}", i + 1)
}

/// Three nodes, IPv6 on the fabric too, BIRD in the external namespace
/// peering with every node over IPv4 and IPv6, and a client behind it.
pub struct BgpLab {
    pub lab: Lab,
    pub bird: Bird,
    pub client: Netns,
}

impl BgpLab {
    pub fn build() -> anyhow::Result<BgpLab> {
        let lab = nodes_on_etcd(3)?;
        let ext = &lab.external;
        ext.ip(&[
            "addr",
            "add",
            &format!("{ROUTER_V6}/64"),
            "dev",
            "eth0",
            "nodad",
        ])?;
        for (i, node) in lab.nodes.iter().enumerate() {
            let a = format!("{}/64", node_v6(i));
            node.ns
                .ip(&["addr", "add", &a, "dev", "uplink0", "nodad"])?;
            node.ns
                .ip(&["-6", "route", "add", "default", "via", ROUTER_V6])?;
        }
        for key in ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"] {
            ext.sysctl(key, "1")?;
        }
        let client = Netns::new(&names::unique("bcli"))?;
        link(
            ext,
            "cli0",
            &["10.199.0.1/24", "fd00:199::1/64"],
            &client,
            "eth0",
            &["10.199.0.2/24", "fd00:199::2/64"],
        );
        client.ip(&["route", "add", "default", "via", "10.199.0.1"])?;
        client.ip(&["-6", "route", "add", "default", "via", "fd00:199::1"])?;
        let mut protocols = String::new();
        for (i, node) in lab.nodes.iter().enumerate() {
            protocols += &bird_peer(
                &format!("n{}v4", i + 1),
                &EXTERNAL_IP.to_string(),
                &node.uplink_ip.to_string(),
                (ROUTER_AS, NODE_AS),
                "",
            );
            protocols += &bird_peer(
                &format!("n{}v6", i + 1),
                ROUTER_V6,
                &node_v6(i),
                (ROUTER_AS, NODE_AS),
                "",
            );
        }
        let bird = Bird::start(ext, &bird_conf(&EXTERNAL_IP.to_string(), true, &protocols));
        Ok(BgpLab { lab, bird, client })
    }

    /// BGPPeers towards BIRD over IPv4 and over IPv6, for every node.
    pub fn peers_yaml(&self, hold_time: u16) -> String {
        format!(
            "apiVersion: network.furrow.io/v1alpha1
kind: BGPPeer
metadata: {{name: tor-v4}}
spec: {{myASN: {NODE_AS}, peerASN: {ROUTER_AS}, peerAddress: {EXTERNAL_IP}, holdTime: {hold_time}}}
---
apiVersion: network.furrow.io/v1alpha1
kind: BGPPeer
metadata: {{name: tor-v6}}
spec: {{myASN: {NODE_AS}, peerASN: {ROUTER_AS}, peerAddress: \"{ROUTER_V6}\", holdTime: {hold_time}}}
"
        )
    }

    pub fn vips(&self, i: usize) -> anyhow::Result<Vec<VipInfo>> {
        Ok(self.lab.node(i).netd.client().get("/v1/vips")?)
    }

    pub fn bgp(&self, i: usize) -> anyhow::Result<BgpInfo> {
        Ok(self.lab.node(i).netd.client().get("/v1/bgp")?)
    }

    /// The node BIRD routes `prefix` to (by next hop), if any.
    pub fn routed_to(&self, prefix: &str) -> Option<usize> {
        let out = self.bird.birdc(&["show", "route", "for", prefix]);
        let via = out
            .split_whitespace()
            .skip_while(|w| *w != "via")
            .nth(1)?
            .to_string();
        (0..self.lab.nodes.len())
            .find(|i| via == self.lab.node(*i).uplink_ip.to_string() || via == node_v6(*i))
    }

    /// Waits until BIRD routes `prefix` to a node other than `not`;
    /// returns it and how long that took.
    pub fn wait_routed(
        &self,
        prefix: &str,
        not: Option<usize>,
        timeout: Duration,
    ) -> (usize, Duration) {
        let mut to = None;
        let took = wait_until(&format!("a route for {prefix} at BIRD"), timeout, || {
            to = self.routed_to(prefix).filter(|n| Some(*n) != not);
            to.is_some()
        });
        (to.expect("waited for it"), took)
    }

    pub fn client_reaches(&self, ip: &str) -> bool {
        let family = if ip.contains(':') { "-6" } else { "-4" };
        self.client.run("ping", &[family, "-c1", "-W1", ip]).is_ok()
    }

    /// The node whose netd says it holds `vip`.
    pub fn holder_of(&self, vip: &str) -> Option<usize> {
        (0..self.lab.nodes.len()).find(|i| {
            self.lab.node(*i).netd.pid().is_some()
                && self
                    .vips(*i)
                    .is_ok_and(|v| v.iter().any(|x| x.name == vip && x.role == "holder"))
        })
    }
}

/// Waits until the external host's ARP for `vip` is answered by one node
/// other than `not` (whatever stale addresses a lost node still has);
/// returns it and how long that took, to within the 200 ms ARP window.
pub fn wait_arp_moved(
    lab: &Lab,
    vip: Ipv4Addr,
    not: usize,
    timeout: Duration,
) -> anyhow::Result<(usize, Duration)> {
    let t0 = Instant::now();
    let old = uplink_mac(lab, not);
    loop {
        let answers = crate::arp::responders(
            &lab.external,
            "eth0",
            EXTERNAL_IP,
            vip,
            Duration::from_millis(200),
        )?;
        if let [mac] = answers.as_slice() {
            if *mac != old {
                if let Some(i) = (0..lab.nodes.len()).find(|i| uplink_mac(lab, *i) == *mac) {
                    return Ok((i, t0.elapsed()));
                }
            }
        }
        if t0.elapsed() > timeout {
            bail!("ARP for {vip} still answered by {answers:02x?} after {timeout:?}");
        }
    }
}

/// Brings node `i`'s uplink back up with what a link-down took from it:
/// its IPv4 default route and, in a [`BgpLab`], its IPv6 address and route.
pub fn restore_uplink(lab: &Lab, i: usize, ipv6: bool) -> anyhow::Result<()> {
    let ns = &lab.node(i).ns;
    ns.ip(&["link", "set", "uplink0", "up"])?;
    let _ = ns.ip(&[
        "route",
        "replace",
        "default",
        "via",
        &EXTERNAL_IP.to_string(),
    ]);
    if ipv6 {
        let a = format!("{}/64", node_v6(i));
        let _ = ns.ip(&["addr", "replace", &a, "dev", "uplink0", "nodad"]);
        let _ = ns.ip(&["-6", "route", "replace", "default", "via", ROUTER_V6]);
    }
    Ok(())
}
