//! The lab topology: a fabric switch, an external host, nodes with netd,
//! and pods attached through the `furrow` plugin.
//!
//! Addressing of the underlay (the fabric): 198.18.0.0/24 (RFC 2544
//! benchmarking space, never routed anywhere). Nodes are .1, .2, ...;
//! the external host is .254 and is every node's default gateway.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::cni::{self, Attachment, CniOutcome};
use crate::netd::NetdProcess;
use crate::{janitor, names, Netns};

pub const FABRIC_BRIDGE: &str = "fabric0";
pub const EXTERNAL_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
pub const UNDERLAY_PREFIX: u8 = 24;

pub struct Lab {
    pub fabric: Netns,
    pub external: Netns,
    pub nodes: Vec<Node>,
    next_port: u32,
}

pub struct Node {
    pub name: String,
    pub ns: Netns,
    pub netd: NetdProcess,
    pub uplink_ip: Ipv4Addr,
}

#[derive(Debug)]
pub struct Pod {
    pub ns: Netns,
    pub container_id: String,
    pub ifname: String,
    pub config: Value,
    /// The plugin's ADD result.
    pub result: Value,
}

impl Pod {
    /// The first address of the ADD result, without its prefix length.
    pub fn ip(&self) -> Ipv4Addr {
        let a = self.result["ips"][0]["address"]
            .as_str()
            .expect("result has an address");
        a.split('/').next().unwrap().parse().expect("IPv4 address")
    }

    pub fn attachment(&self) -> Attachment {
        Attachment::new(&self.container_id, &self.ns.path_str(), &self.ifname)
    }
}

/// Creates a veth pair whose ends live in two namespaces.
fn veth_between(a: &Netns, a_name: &str, b: &Netns, b_name: &str) -> anyhow::Result<()> {
    // Create inside `a` so nothing ever appears in the root namespace.
    a.ip(&[
        "link", "add", a_name, "type", "veth", "peer", "name", b_name, "netns", &b.name,
    ])?;
    a.ip(&["link", "set", a_name, "up"])?;
    b.ip(&["link", "set", b_name, "up"])?;
    Ok(())
}

impl Lab {
    /// A fabric switch and an external host; no nodes yet.
    pub fn new() -> anyhow::Result<Lab> {
        janitor::sweep();
        let fabric = Netns::new(&names::unique("fab"))?;
        fabric.ip(&["link", "add", FABRIC_BRIDGE, "type", "bridge"])?;
        fabric.ip(&["link", "set", FABRIC_BRIDGE, "up"])?;
        let external = Netns::new(&names::unique("ext"))?;
        let mut lab = Lab {
            fabric,
            external,
            nodes: Vec::new(),
            next_port: 0,
        };
        let port = lab.fabric_port();
        veth_between(&lab.fabric, &port, &lab.external, "eth0")?;
        lab.fabric
            .ip(&["link", "set", &port, "master", FABRIC_BRIDGE])?;
        lab.external.ip(&[
            "addr",
            "add",
            &format!("{EXTERNAL_IP}/{UNDERLAY_PREFIX}"),
            "dev",
            "eth0",
        ])?;
        Ok(lab)
    }

    fn fabric_port(&mut self) -> String {
        self.next_port += 1;
        format!("p{}", self.next_port)
    }

    /// Adds a node: its namespace, an uplink into the fabric with the next
    /// underlay address, and a netd (not yet started when `start` is
    /// false, so a test can write its config first).
    pub fn add_node_with(&mut self, name: &str, start: bool) -> anyhow::Result<&mut Node> {
        let idx = self.nodes.len() as u8 + 1;
        if idx >= 250 {
            bail!("the lab underlay holds at most 249 nodes");
        }
        let ns = Netns::new(&names::unique(&format!("n{idx}")))?;
        let port = self.fabric_port();
        veth_between(&self.fabric, &port, &ns, "uplink0")?;
        self.fabric
            .ip(&["link", "set", &port, "master", FABRIC_BRIDGE])?;
        let ip = Ipv4Addr::new(198, 18, 0, idx);
        ns.ip(&[
            "addr",
            "add",
            &format!("{ip}/{UNDERLAY_PREFIX}"),
            "dev",
            "uplink0",
        ])?;
        ns.ip(&["route", "add", "default", "via", &EXTERNAL_IP.to_string()])?;
        let mut netd = NetdProcess::new(&ns.path(), name)?;
        if start {
            netd.start()
                .with_context(|| format!("starting netd on {name}"))?;
        }
        self.nodes.push(Node {
            name: name.to_string(),
            ns,
            netd,
            uplink_ip: ip,
        });
        Ok(self.nodes.last_mut().expect("just pushed"))
    }

    pub fn add_node(&mut self, name: &str) -> anyhow::Result<&mut Node> {
        self.add_node_with(name, true)
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    pub fn node_mut(&mut self, i: usize) -> &mut Node {
        &mut self.nodes[i]
    }

    /// Leaves everything running when the lab is dropped (the demo).
    pub fn keep(&mut self) {
        self.fabric.keep();
        self.external.keep();
        for n in &mut self.nodes {
            n.ns.keep();
            n.netd.keep();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Nodes (and their netd) before the fabric they hang off.
        self.nodes.clear();
    }
}

impl Node {
    /// The management-network config for this node's netd.
    pub fn mgmt_config(&self, cni_version: &str) -> Value {
        cni::mgmt_config(&self.netd.socket, "mgmt", cni_version)
    }

    /// Creates a pod namespace and attaches it with ADD.
    pub fn add_pod(&self, tag: &str, config: &Value) -> anyhow::Result<Pod> {
        let ns = Netns::new(&names::unique(tag))?;
        let container_id = format!("{}-{}", ns.name, "c0ffee");
        let path = ns.path_str();
        let mut att = Attachment::new(&container_id, &path, "eth0");
        att.args = Some(format!(
            "IgnoreUnknown=true;K8S_POD_NAMESPACE=lab;K8S_POD_NAME={tag}"
        ));
        let out = cni::add(&att, config);
        if !out.success() {
            bail!("ADD failed: {}\n{}", out.stdout, out.stderr);
        }
        let result = out.json();
        Ok(Pod {
            ns,
            container_id,
            ifname: "eth0".into(),
            config: config.clone(),
            result,
        })
    }

    pub fn mgmt_pod(&self, tag: &str) -> anyhow::Result<Pod> {
        self.add_pod(tag, &self.mgmt_config("1.1.0"))
    }

    pub fn del_pod(&self, pod: &Pod) -> CniOutcome {
        cni::del(&pod.attachment(), &pod.config)
    }

    pub fn uplink(&self) -> IpAddr {
        IpAddr::V4(self.uplink_ip)
    }
}
