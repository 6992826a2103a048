//! The VLAN network scenario: two nodes whose data NICs meet in a trunking
//! fabric, VMs on access VLANs, the untagged network and a trunk, and the
//! checks the VLAN issue accepts Furrow by. Written once, run on the host
//! with the eBPF backend and inside a full-kernel guest with the bridge
//! backend.
//!
//! Every VM address is in one /24 (10.77.0.0/24) whatever its VLAN, so
//! only layer-2 isolation can keep VMs of different VLANs apart: a leak
//! shows up as a working ping or a resolved neighbour.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use serde_json::Value;

use crate::capture::Capture;
use crate::lab::{trunk_nad, vlan_nad};
use crate::{probe, Lab, Netns, Pod};

pub const CN: &str = "data";
pub const NIC: &str = "data0";
/// node1's second uplink NIC (bonded active-backup with data0).
pub const NIC2: &str = "data1";

pub struct Vm {
    pub pod: Pod,
    pub node: usize,
    pub ip: Option<Ipv4Addr>,
    pub mac: String,
}

pub struct VlanLab {
    pub lab: Lab,
    pub vms: BTreeMap<&'static str, Vm>,
    pub backend: String,
}

fn mac_of(ns: &Netns, ifname: &str) -> anyhow::Result<String> {
    let v: Value = serde_json::from_str(&ns.ip(&["-j", "link", "show", "dev", ifname])?)?;
    Ok(v[0]["address"].as_str().unwrap_or_default().to_string())
}

/// The VMs: (name, node, access VLAN or None for a trunk, last octet).
const VMS: &[(&str, usize, Option<u16>, u8)] = &[
    ("a100", 0, Some(100), 11),
    ("b100", 0, Some(100), 12),
    ("c200", 0, Some(200), 13),
    ("u1", 0, Some(0), 14),
    ("f300", 0, Some(300), 16),
    ("t", 0, None, 0),
    ("d100", 1, Some(100), 21),
    ("e200", 1, Some(200), 23),
    ("u2", 1, Some(0), 24),
];

impl VlanLab {
    /// Two nodes, the cluster network `data` on each node's `data0`, and
    /// the VMs above, each with its address set as a guest would.
    pub fn build(backend: &str) -> anyhow::Result<VlanLab> {
        let mut lab = Lab::new()?;
        for n in ["node1", "node2"] {
            lab.add_node(n)?;
        }
        lab.add_data_nic(0, NIC)?;
        lab.add_data_nic(0, NIC2)?;
        lab.add_data_nic(1, NIC)?;
        for i in 0..2 {
            let nics: &[&str] = if i == 0 { &[NIC, NIC2] } else { &[NIC] };
            lab.node(i)
                .cluster_network(CN, backend, nics, 1500)
                .with_context(|| format!("cluster network on node{}", i + 1))?;
            let info = lab
                .node(i)
                .cluster_network_info(CN)
                .context("cluster network listed")?;
            ensure!(info.problem.is_none(), "node{}: {:?}", i + 1, info.problem);
            ensure!(
                info.backend == backend,
                "node{} uses backend {} instead of {backend}",
                i + 1,
                info.backend
            );
        }
        let mut vms = BTreeMap::new();
        for (name, node, vlan, octet) in VMS {
            let n = lab.node(*node);
            let cfg = match vlan {
                Some(v) => vlan_nad(&format!("vlan{v}"), CN, *v, &n.netd.socket),
                None => trunk_nad("trunk", CN, &[(100, 100), (200, 200)], &n.netd.socket),
            };
            let pod = n
                .vm(name, &cfg)
                .with_context(|| format!("ADD of VM {name}"))?;
            let ip = vlan.map(|_| Ipv4Addr::new(10, 77, 0, *octet));
            if let Some(ip) = ip {
                pod.ns
                    .ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
            }
            let mac = mac_of(&pod.ns, "eth0")?;
            vms.insert(
                *name,
                Vm {
                    pod,
                    node: *node,
                    ip,
                    mac,
                },
            );
        }
        Ok(VlanLab {
            lab,
            vms,
            backend: backend.to_string(),
        })
    }

    pub fn vm(&self, name: &str) -> &Vm {
        &self.vms[name]
    }

    fn reach(&self, from: &str, to: &str) -> bool {
        let ip = self.vm(to).ip.expect("VM has an address");
        probe::ping_ok(&self.vm(from).pod.ns, IpAddr::V4(ip), 3)
    }

    /// Whether `from` resolved `to`'s address to `to`'s MAC.
    fn resolved(&self, from: &str, to: &str) -> anyhow::Result<bool> {
        let ip = self.vm(to).ip.expect("VM has an address").to_string();
        let v: Value = serde_json::from_str(
            &self
                .vm(from)
                .pod
                .ns
                .ip(&["-j", "neigh", "show", "to", &ip])?,
        )?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .any(|n| n["lladdr"].as_str() == Some(self.vm(to).mac.as_str()))
            })
            .unwrap_or(false))
    }

    /// Same VLAN: reachable on one node and across nodes.
    pub fn check_same_vlan(&self) -> anyhow::Result<()> {
        for (a, b) in [
            ("a100", "b100"),
            ("a100", "d100"),
            ("c200", "e200"),
            ("u1", "u2"),
            ("d100", "b100"),
        ] {
            ensure!(self.reach(a, b), "{a} cannot reach {b} on the same VLAN");
        }
        Ok(())
    }

    /// Different VLANs, and tagged vs untagged: isolated both ways, by ping
    /// and by ARP.
    pub fn check_isolation(&self) -> anyhow::Result<()> {
        for (a, b) in [
            ("a100", "c200"),
            ("c200", "a100"),
            ("a100", "e200"),
            ("e200", "d100"),
            ("u1", "a100"),
            ("a100", "u1"),
            ("u2", "d100"),
            ("f300", "a100"),
        ] {
            ensure!(
                !probe::ping(&self.vm(a).pod.ns, IpAddr::V4(self.vm(b).ip.unwrap())),
                "{a} reaches {b} across VLANs"
            );
            ensure!(
                !self.resolved(a, b)?,
                "{a} resolved {b}'s MAC across VLANs (ARP leaked)"
            );
        }
        Ok(())
    }

    /// Sends ARP broadcasts from a VM (asking for an unused address).
    fn broadcast_from(&self, vm: &str) {
        let _ = self
            .vm(vm)
            .pod
            .ns
            .cmd("ping")
            .args(["-c", "2", "-i", "0.2", "-W", "1", "10.77.0.250"])
            .output();
    }

    /// A trunk port receives exactly its allowed VLANs, tagged; a VLAN's
    /// broadcasts reach no other VLAN.
    pub fn check_trunk_and_broadcast_domains(&self) -> anyhow::Result<()> {
        let t = Capture::start(&self.vm("t").pod.ns, "eth0", "arp or vlan", false)?;
        let c200 = Capture::start(&self.vm("c200").pod.ns, "eth0", "arp", true)?;
        let e200 = Capture::start(&self.vm("e200").pod.ns, "eth0", "arp", true)?;
        for vm in ["a100", "c200", "f300", "u1", "d100"] {
            self.broadcast_from(vm);
        }
        std::thread::sleep(Duration::from_millis(300));
        let t = t.stop();
        let c200 = c200.stop();
        let e200 = e200.stop();
        let from = |lines: &[String], vm: &str| -> Vec<String> {
            let mac = &self.vm(vm).mac;
            lines
                .iter()
                .filter(|l| l.starts_with_mac_src(mac))
                .cloned()
                .collect()
        };
        for (vm, tag) in [("a100", 100), ("c200", 200), ("d100", 100)] {
            let seen = from(&t, vm);
            ensure!(
                !seen.is_empty(),
                "the trunk VM did not receive {vm}'s broadcast (VLAN {tag}): {t:?}"
            );
            ensure!(
                seen.iter().all(|l| l.contains(&format!("vlan {tag},"))),
                "the trunk VM received {vm}'s frames without tag {tag}: {seen:?}"
            );
        }
        for vm in ["f300", "u1"] {
            ensure!(
                from(&t, vm).is_empty(),
                "the trunk VM (VLANs 100,200) received {vm}'s frames: {t:?}"
            );
        }
        for (cap, name) in [(&c200, "c200"), (&e200, "e200")] {
            for vm in ["a100", "d100", "f300", "u1"] {
                ensure!(
                    from(cap, vm).is_empty(),
                    "{name} (VLAN 200) received a broadcast of {vm}: {cap:?}"
                );
            }
        }
        ensure!(
            !from(&e200, "c200").is_empty(),
            "e200 did not receive c200's broadcast on VLAN 200 across nodes"
        );
        Ok(())
    }

    /// No loops: a flooded frame never comes back to its source port, and
    /// a frame that arrived on a node's uplink never leaves by it again.
    pub fn check_no_loops(&self) -> anyhow::Result<()> {
        let trunk = self.lab.trunk.as_ref().context("trunk fabric")?;
        // The fabric-side ports of node1's and node2's data NICs are t1 and
        // t2 in creation order, but look them up instead of assuming.
        let ports = fabric_ports(trunk)?;
        ensure!(
            ports.len() == 3,
            "expected 3 trunk fabric ports, found {ports:?}"
        );
        // node1's active uplink NIC is data0, the first port.
        let from_node1 = Capture::start(trunk, &ports[0], "", true)?;
        let back_at_d = Capture::start(&self.vm("d100").pod.ns, "eth0", "arp", true)?;
        let back_at_a = Capture::start(&self.vm("a100").pod.ns, "eth0", "arp", true)?;
        self.broadcast_from("d100");
        self.broadcast_from("a100");
        std::thread::sleep(Duration::from_millis(300));
        let from_node1 = from_node1.stop();
        let back_at_d = back_at_d.stop();
        let back_at_a = back_at_a.stop();
        let d = &self.vm("d100").mac;
        let a = &self.vm("a100").mac;
        ensure!(
            !from_node1.iter().any(|l| l.starts_with_mac_src(d)),
            "node1 sent node2's broadcast back out of its uplink: {from_node1:?}"
        );
        ensure!(
            from_node1.iter().any(|l| l.starts_with_mac_src(a)),
            "node1 did not send a100's broadcast out of its uplink: {from_node1:?}"
        );
        ensure!(
            !back_at_d.iter().any(|l| l.starts_with_mac_src(d)),
            "d100 received its own broadcast back"
        );
        ensure!(
            !back_at_a.iter().any(|l| l.starts_with_mac_src(a)),
            "a100 received its own broadcast back"
        );
        Ok(())
    }

    /// node1's uplink is two NICs bonded active-backup: cutting the active
    /// one moves traffic to the other, both ways, within seconds.
    pub fn check_uplink_failover(&self) -> anyhow::Result<Duration> {
        let trunk = self.lab.trunk.as_ref().context("trunk fabric")?;
        // node1's NICs were the first two fabric ports, in order.
        let ports = fabric_ports(trunk)?;
        ensure!(
            ports.len() == 3,
            "expected 3 trunk fabric ports, found {ports:?}"
        );
        ensure!(self.reach("a100", "d100"), "no traffic before the failover");
        // Cut data0 (the active NIC): its peer goes down, so it loses carrier.
        trunk.ip(&["link", "set", &ports[0], "down"])?;
        let cut = Instant::now();
        let mut back = None;
        while cut.elapsed() < Duration::from_secs(10) {
            if probe::ping(
                &self.vm("a100").pod.ns,
                IpAddr::V4(self.vm("d100").ip.unwrap()),
            ) {
                back = Some(cut.elapsed());
                break;
            }
        }
        let restore = trunk.ip(&["link", "set", &ports[0], "up"]);
        let t = back.context(
            "node1 -> node2 did not recover within 10 s of losing the active uplink NIC",
        )?;
        ensure!(
            self.reach("d100", "b100"),
            "node2 -> node1 broken after the failover"
        );
        restore?;
        Ok(t)
    }

    /// A VM that stops on node1 and starts with the same MAC and address on
    /// node2 (what live migration does) is reachable again within 1 s.
    pub fn check_migration(&mut self) -> anyhow::Result<Duration> {
        let ip = Ipv4Addr::new(10, 77, 0, 50);
        let mac = "52:54:00:77:00:50";
        let nad = |n: usize| {
            let mut c = vlan_nad("vlan100", CN, 100, &self.lab.node(n).netd.socket);
            c["runtimeConfig"] = serde_json::json!({"mac": mac});
            c
        };
        let cfg1 = nad(0);
        let before = self.lab.node(0).vm("mig", &cfg1)?;
        before
            .ns
            .ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        // Peers on both nodes learn where the VM is.
        for peer in ["a100", "d100"] {
            ensure!(
                probe::ping_ok(&self.vm(peer).pod.ns, IpAddr::V4(ip), 3),
                "{peer} cannot reach the VM before it moves"
            );
        }
        // The VM stops on node1 ...
        let out = self.lab.node(0).del_pod(&before);
        ensure!(out.success(), "DEL on node1: {}", out.stdout);
        drop(before);
        // ... and starts on node2 with the same MAC and address.
        let cfg2 = nad(1);
        let started = Instant::now();
        let after = self.lab.node(1).vm("mig", &cfg2)?;
        after
            .ns
            .ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        ensure!(
            mac_of(&after.ns, "eth0")? == mac,
            "the moved VM did not keep its MAC"
        );
        // A VM on node1 that still has the old ARP entry must reach it again.
        let deadline = started + Duration::from_secs(5);
        let mut reached = None;
        // Busybox ping (in guests) takes whole seconds only; a reply ends
        // the wait either way.
        let wait = if crate::guest::in_guest() { "1" } else { "0.2" };
        while Instant::now() < deadline {
            let ok = self
                .vm("a100")
                .pod
                .ns
                .cmd("ping")
                .args(["-c", "1", "-W", wait, "-q", &ip.to_string()])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                reached = Some(started.elapsed());
                break;
            }
        }
        let t = reached.context("the moved VM was not reachable within 5 s")?;
        ensure!(
            t <= Duration::from_secs(1),
            "the moved VM took {t:?} to become reachable (limit 1 s)"
        );
        ensure!(
            probe::ping_ok(&self.vm("d100").pod.ns, IpAddr::V4(ip), 3),
            "d100 (node2) cannot reach the moved VM"
        );
        let out = self.lab.node(1).del_pod(&after);
        ensure!(out.success(), "DEL on node2: {}", out.stdout);
        Ok(t)
    }
}

/// The bridge ports of the trunk fabric, in name order (node1's data NICs
/// first, as they were added).
pub fn fabric_ports(trunk: &Netns) -> anyhow::Result<Vec<String>> {
    let v: Value = serde_json::from_str(&trunk.ip(&[
        "-j",
        "link",
        "show",
        "master",
        crate::lab::TRUNK_BRIDGE,
    ])?)?;
    let mut ports: Vec<String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| l["ifname"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    ports.sort_by_key(|p| p.trim_start_matches('t').parse::<u32>().unwrap_or(0));
    if ports.is_empty() {
        bail!("no ports on the trunk fabric");
    }
    Ok(ports)
}

/// tcpdump -e lines start with a timestamp, then "src > dst": checks the
/// source MAC.
trait MacSource {
    fn starts_with_mac_src(&self, mac: &str) -> bool;
}

impl MacSource for String {
    fn starts_with_mac_src(&self, mac: &str) -> bool {
        self.split_whitespace().nth(1) == Some(mac)
    }
}
