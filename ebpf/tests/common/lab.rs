//! The two-node lab of the live L2 tests: a "fabric" netns with a plain
//! Linux bridge (it forwards tagged frames untouched, like a physical
//! switch with every VLAN allowed), "node" netns whose uplink veths plug
//! into it, each with its own Datapath and pin directory, and one netns
//! per VM behind a host-side veth on a node. Every VM uses the same
//! subnet, so only the switch keeps VLANs apart.

use furrow_ebpf::*;

use super::{NetNs, PinDir};

/// The cluster network of the lab.
pub const CN: u32 = 3;
/// The VMs' /24 (every VLAN).
pub const SUBNET: &str = "10.50.0";

pub struct Node {
    pub ns: NetNs,
    pub dp: Datapath,
    pub _pins: PinDir,
    pub uplink: u32,
    pub uplink_mac: [u8; 6],
    /// VLAN 0 delivers to the node's stack.
    pub to_host: bool,
}

pub struct Vm {
    pub ns: NetNs,
    pub host_if: String,
    pub host_idx: u32,
    pub mac: [u8; 6],
}

pub struct Lab {
    pub fabric: NetNs,
    pub nodes: Vec<Node>,
}

impl Lab {
    pub fn new(nodes: usize) -> Self {
        let fabric = NetNs::new();
        fabric.ip("link add br0 type bridge");
        fabric.ip("link set br0 up");
        let mut out = Vec::new();
        for i in 0..nodes {
            let ns = NetNs::new();
            let fab = format!("fab{i}");
            ns.veth_to("upl", &fab, &fabric, &fab);
            fabric.ip(&format!("link set {fab} master br0"));
            fabric.ip(&format!("link set {fab} up"));
            ns.ip("link set upl up");
            let pins = PinDir::new();
            let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
            let uplink = ns.ifindex("upl");
            let uplink_mac = ns.mac("upl");
            let port = L2Port {
                cluster_network: CN,
                mode: L2Mode::Uplink {
                    own_mac: uplink_mac,
                },
                mtu: 1500,
            };
            ns.run(|| dp.l2_attach_port("upl", uplink, &port)).unwrap();
            out.push(Node {
                ns,
                dp,
                _pins: pins,
                uplink,
                uplink_mac,
                to_host: true,
            });
        }
        Lab { fabric, nodes: out }
    }

    /// A VM on node `n`: host veth `name` in the node, `eth0` in the VM's
    /// netns with `ip` (host part, /24) if given and `mac` if given.
    pub fn vm(
        &mut self,
        n: usize,
        name: &str,
        mode: L2Mode,
        ip: Option<u8>,
        mac: Option<[u8; 6]>,
    ) -> Vm {
        let node = &mut self.nodes[n];
        let ns = NetNs::new();
        node.ns.veth_to(name, &format!("{name}p"), &ns, "eth0");
        if let Some(mac) = mac {
            ns.ip(&format!("link set eth0 address {}", fmt_mac(mac)));
        }
        node.ns.ip(&format!("link set {name} up"));
        ns.ip("link set eth0 up");
        if let Some(h) = ip {
            ns.ip(&format!("addr add {SUBNET}.{h}/24 dev eth0"));
        }
        let host_idx = node.ns.ifindex(name);
        let port = L2Port {
            cluster_network: CN,
            mode,
            mtu: 1500,
        };
        let dp = &mut node.dp;
        node.ns
            .run(|| dp.l2_attach_port(name, host_idx, &port))
            .unwrap();
        let vm = Vm {
            mac: ns.mac("eth0"),
            ns,
            host_if: name.to_owned(),
            host_idx,
        };
        self.sync_vlans(n);
        vm
    }

    /// What netd does after a port change: a VLAN exists on a node while
    /// a VM port there uses it; its members are those ports plus the
    /// uplink.
    pub fn sync_vlans(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        let ports = node.dp.l2_ports().unwrap();
        let mut vids: Vec<u16> = Vec::new();
        for (_, p) in &ports {
            match p.mode {
                L2Mode::Access { vid } => vids.push(vid),
                L2Mode::Untagged => vids.push(0),
                L2Mode::Trunk { allowed } => vids.extend(allowed.iter()),
                L2Mode::Uplink { .. } => {}
            }
        }
        vids.sort();
        vids.dedup();
        for vlan in node.dp.l2_vlans().unwrap() {
            if !vids.contains(&vlan.vid) {
                node.dp.l2_remove_vlan(CN, vlan.vid).unwrap();
            }
        }
        for vid in vids {
            let members: Vec<u32> = ports
                .iter()
                .filter(|(_, p)| match p.mode {
                    L2Mode::Access { vid: v } => v == vid,
                    L2Mode::Untagged => vid == 0,
                    L2Mode::Trunk { allowed } => allowed.contains(vid),
                    L2Mode::Uplink { .. } => true,
                })
                .map(|(i, _)| *i)
                .collect();
            node.dp
                .l2_set_vlan(CN, vid, &members, vid == 0 && node.to_host)
                .unwrap();
        }
    }

    pub fn remove_vm(&mut self, n: usize, vm: Vm) {
        let node = &mut self.nodes[n];
        let dp = &mut node.dp;
        node.ns
            .run(|| dp.l2_detach_port(&vm.host_if, vm.host_idx))
            .unwrap();
        drop(vm); // its netns, and with it the veth pair
        self.sync_vlans(n);
    }

    pub fn uplink_stats(&self, n: usize) -> PortStats {
        let node = &self.nodes[n];
        node.dp.port_stats(node.uplink).unwrap().unwrap()
    }
}

pub fn fmt_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn ip(h: u8) -> String {
    format!("{SUBNET}.{h}")
}

pub fn ping_ns(ns: &NetNs, to: &str) -> bool {
    ns.cmd("ping", &["-c", "1", "-W", "1", "-n", "-q", to])
        .status
        .success()
}

pub fn ping(from: &Vm, to: &str) -> bool {
    // Two tries: the first ARP exchange of a fresh netns can lose the race
    // with the link coming up.
    ping_ns(&from.ns, to) || ping_ns(&from.ns, to)
}

/// The neighbour entry `from` holds for `to`: a MAC only if ARP resolved.
pub fn neigh_mac(from: &Vm, to: &str) -> Option<String> {
    let out = from.ns.ip(&format!("neigh show {to} dev eth0"));
    out.split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .map(str::to_owned)
}
pub fn access(vid: u16) -> L2Mode {
    L2Mode::Access { vid }
}
