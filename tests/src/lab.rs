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
pub const TRUNK_BRIDGE: &str = "trunk0";
pub const EXTERNAL_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
/// The control-plane host of a shared lab (where etcd runs).
pub const CONTROL_PLANE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 250);
pub const UNDERLAY_PREFIX: u8 = 24;

pub struct Lab {
    pub fabric: Netns,
    pub external: Netns,
    pub nodes: Vec<Node>,
    /// The trunk fabric for data NICs (created on first use): a plain
    /// bridge, which forwards VLAN-tagged frames untouched.
    pub trunk: Option<Netns>,
    /// The etcd every node shares state through, in a shared lab.
    pub etcd: Option<crate::etcd::EtcdCluster>,
    /// The key prefix of this lab in that etcd.
    pub etcd_prefix: String,
    /// The control-plane host etcd runs on, on the fabric.
    pub control_plane: Option<Netns>,
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
            trunk: None,
            etcd: None,
            etcd_prefix: String::new(),
            control_plane: None,
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
    /// A lab whose nodes share their state through a real etcd cluster of
    /// `members` members (the multi-node setup), each lab under its own key
    /// prefix. etcd runs on a control-plane host on the fabric: netd runs
    /// inside its node's namespace, where the machine's loopback is out of
    /// reach, and a node cut off the fabric loses etcd as a real one would.
    pub fn shared(members: usize) -> anyhow::Result<Lab> {
        let mut lab = Lab::new()?;
        let cp = Netns::new(&names::unique("cp"))?;
        let port = lab.fabric_port();
        veth_between(&lab.fabric, &port, &cp, "eth0")?;
        lab.fabric
            .ip(&["link", "set", &port, "master", FABRIC_BRIDGE])?;
        cp.ip(&[
            "addr",
            "add",
            &format!("{CONTROL_PLANE_IP}/{UNDERLAY_PREFIX}"),
            "dev",
            "eth0",
        ])?;
        cp.ip(&["link", "set", "lo", "up"])?;
        lab.etcd = Some(crate::etcd::EtcdCluster::start_in(
            members,
            &cp.path(),
            CONTROL_PLANE_IP,
        ));
        lab.control_plane = Some(cp);
        lab.etcd_prefix = format!("/{}", names::unique("lab"));
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
        if let Some(etcd) = &self.etcd {
            netd.extra_args = vec![
                "--store".into(),
                "etcd".into(),
                "--etcd-endpoints".into(),
                etcd.endpoints().join(","),
                "--etcd-prefix".into(),
                self.etcd_prefix.clone(),
            ];
        }
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

    /// Gives node `i` a NIC `name` into the trunk fabric (no address): the
    /// uplink of VLAN networks. Returns the fabric-side port name.
    pub fn add_data_nic(&mut self, i: usize, name: &str) -> anyhow::Result<String> {
        if self.trunk.is_none() {
            let t = Netns::new(&names::unique("trk"))?;
            t.ip(&["link", "add", TRUNK_BRIDGE, "type", "bridge"])?;
            t.ip(&["link", "set", TRUNK_BRIDGE, "up"])?;
            self.trunk = Some(t);
        }
        self.next_port += 1;
        let port = format!("t{}", self.next_port);
        let trunk = self.trunk.as_ref().expect("just created");
        veth_between(trunk, &port, &self.nodes[i].ns, name)?;
        trunk.ip(&["link", "set", &port, "master", TRUNK_BRIDGE])?;
        Ok(port)
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
        if let Some(c) = &mut self.control_plane {
            c.keep();
        }
        if let Some(t) = &mut self.trunk {
            t.keep();
        }
        for n in &mut self.nodes {
            n.ns.keep();
            n.netd.keep();
        }
    }
}
impl Drop for Lab {
    fn drop(&mut self) {
        // Nodes (and their netd) before the fabric they hang off, and
        // before the etcd they talk to.
        self.nodes.clear();
        self.etcd.take();
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

    /// Applies resource documents (YAML) through netctl, as an operator
    /// would; returns netctl's output or its error line.
    pub fn apply(&self, yaml: &str) -> anyhow::Result<String> {
        let f = self
            .netd
            .dir
            .join(format!("apply-{}.yaml", names::unique("r")));
        std::fs::write(&f, yaml)?;
        let out = self
            .netd
            .netctl(&["apply", "-f", f.to_str().expect("utf-8 path")])?;
        let _ = std::fs::remove_file(&f);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            bail!("{}", String::from_utf8_lossy(&out.stderr).trim())
        }
    }

    /// A ClusterNetwork and this node's VlanConfig with these uplink NICs.
    pub fn cluster_network(
        &self,
        cn: &str,
        backend: &str,
        nics: &[&str],
        mtu: u32,
    ) -> anyhow::Result<()> {
        self.apply(&cluster_network_yaml(cn, backend, &self.name, nics, mtu))?;
        Ok(())
    }

    /// Attaches a VM (a namespace standing for a virt-launcher pod) with a
    /// VLAN network config; returns the pod.
    pub fn vm(&self, tag: &str, config: &Value) -> anyhow::Result<Pod> {
        self.add_pod(tag, config)
    }

    /// The node's view of its cluster networks.
    pub fn cluster_network_info(&self, cn: &str) -> Option<furrow_api::wire::ClusterNetworkInfo> {
        let list: Vec<furrow_api::wire::ClusterNetworkInfo> =
            self.netd.client().get("/v1/clusternetworks").ok()?;
        list.into_iter().find(|c| c.name == cn)
    }
}

/// ClusterNetwork + VlanConfig documents for one node.
pub fn cluster_network_yaml(
    cn: &str,
    backend: &str,
    node: &str,
    nics: &[&str],
    mtu: u32,
) -> String {
    format!(
        "apiVersion: network.furrow.io/v1alpha1\nkind: ClusterNetwork\nmetadata:\n  name: {cn}\nspec:\n  backend: {backend}\n---\n\
apiVersion: network.furrow.io/v1alpha1\nkind: VlanConfig\nmetadata:\n  name: {cn}-{node}\nspec:\n  clusterNetwork: {cn}\n  nodeSelector:\n    kubernetes.io/hostname: {node}\n  uplink:\n    nics: [{}]\n    linkAttributes:\n      mtu: {mtu}\n",
        nics.join(", ")
    )
}

/// A VLAN network attachment as Harvester writes it, `type` changed.
pub fn vlan_nad(name: &str, cn: &str, vlan: u16, socket: &std::path::Path) -> Value {
    serde_json::json!({
        "cniVersion": "0.3.1",
        "name": name,
        "type": "furrow",
        "bridge": format!("{cn}-br"),
        "promiscMode": true,
        "vlan": vlan,
        "ipam": {},
        "socket": socket.display().to_string(),
        "capabilities": {"mac": true},
    })
}

/// A trunk attachment: `ranges` as Harvester's vlanTrunk entries.
pub fn trunk_nad(name: &str, cn: &str, ranges: &[(u16, u16)], socket: &std::path::Path) -> Value {
    let trunk: Vec<Value> = ranges
        .iter()
        .map(|(a, b)| {
            if a == b {
                serde_json::json!({"id": a})
            } else {
                serde_json::json!({"minID": a, "maxID": b})
            }
        })
        .collect();
    serde_json::json!({
        "cniVersion": "0.3.1",
        "name": name,
        "type": "furrow",
        "bridge": format!("{cn}-br"),
        "promiscMode": true,
        "vlan": 0,
        "vlanTrunk": trunk,
        "ipam": {},
        "socket": socket.display().to_string(),
    })
}
