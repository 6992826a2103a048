//! L2 ports and tables: attaching (tc filters), reconfiguration,
//! detaching, flood lists, limits, restart, in a private netns.

mod common;

use std::process::Command;

use common::{l2::*, *};
use furrow_ebpf::*;

const CN: u32 = 9;

fn vm_port(vid: u16) -> L2Port {
    L2Port {
        cluster_network: CN,
        mode: L2Mode::Access { vid },
        mtu: 1500,
    }
}

fn uplink_port(cn: u32, mac: [u8; 6]) -> L2Port {
    L2Port {
        cluster_network: cn,
        mode: L2Mode::Uplink { own_mac: mac },
        mtu: 9000,
    }
}

/// A node netns holding host veths `names` (peers in a second netns).
fn node_with(names: &[&str]) -> (NetNs, NetNs) {
    let node = NetNs::new();
    let peers = NetNs::new();
    for (i, n) in names.iter().enumerate() {
        node.veth_to(n, &format!("peer{i}"), &peers, &format!("peer{i}"));
        node.ip(&format!("link set {n} up"));
        peers.ip(&format!("link set peer{i} up"));
    }
    (node, peers)
}

/// Program ids on (ingress, egress): tcx links, then any filter.
fn filter_ids(ns: &NetNs, ifname: &str) -> (Vec<u64>, Vec<u64>) {
    ns.hook_prog_ids(ifname)
}

fn pid(dp: &Datapath, name: &str) -> u64 {
    dp.program_id(name).unwrap().into()
}

#[test]
fn attach_detach_idempotent_with_one_filter_per_hook() {
    let (node, _peers) = node_with(&["vm1", "upl"]);
    let pins = PinDir::new();
    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    let (vm1, upl) = (node.ifindex("vm1"), node.ifindex("upl"));
    let up_mac = node.mac("upl");
    node.run(|| {
        for _ in 0..3 {
            dp.l2_attach_port("vm1", vm1, &vm_port(100)).unwrap();
            dp.l2_attach_port("upl", upl, &uplink_port(CN, up_mac))
                .unwrap();
        }
    });
    assert_eq!(
        filter_ids(&node, "vm1"),
        (vec![pid(&dp, PROG_L2_INGRESS)], vec![])
    );
    assert_eq!(
        filter_ids(&node, "upl"),
        (
            vec![pid(&dp, PROG_L2_INGRESS)],
            vec![pid(&dp, PROG_L2_UPLINK_EGRESS)]
        )
    );
    assert!(node.run(|| dp.is_port_attached("vm1")).unwrap());
    assert!(node.run(|| dp.is_port_attached("upl")).unwrap());
    assert_eq!(node.run(|| dp.pinned_ports()).unwrap(), vec!["upl", "vm1"]);
    assert_eq!(dp.l2_ports().unwrap(), {
        let mut v = vec![(vm1, vm_port(100)), (upl, uplink_port(CN, up_mac))];
        v.sort_by_key(|(i, _)| *i);
        v
    });
    assert_eq!(dp.port_stats(vm1).unwrap(), Some(PortStats::default()));
    let usage = |dp: &Datapath, name: &str| {
        dp.status()
            .maps
            .into_iter()
            .find(|m| m.name == name)
            .unwrap()
            .entries
    };
    assert_eq!(usage(&dp, MAP_L2_PORTS), Some(2));
    assert_eq!(usage(&dp, MAP_L2_CLUSTER_NETWORKS), Some(1));

    // Someone removes the uplink's egress link (its pin): no longer
    // attached.
    let pin = std::fs::read_dir(pins.0.join("links"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with("egress-") && n.ends_with(&format!("-{upl}"))
        })
        .unwrap();
    std::fs::remove_file(pin).unwrap();
    assert!(node.tcx("upl").1.is_empty());
    assert!(!node.run(|| dp.is_port_attached("upl")).unwrap());

    node.run(|| {
        dp.l2_detach_port("vm1", vm1).unwrap();
        dp.l2_detach_port("vm1", vm1).unwrap();
        dp.l2_detach_port("upl", 0).unwrap();
    });
    for n in ["vm1", "upl"] {
        assert_eq!(filter_ids(&node, n), (vec![], vec![]), "{n}");
        assert!(!node.run(|| dp.is_port_attached(n)).unwrap());
    }
    assert!(dp.l2_ports().unwrap().is_empty());
    assert_eq!(dp.all_port_stats().unwrap(), vec![]);
    assert_eq!(usage(&dp, MAP_L2_PORTS), Some(0));
    assert!(node.run(|| dp.pinned_ports()).unwrap().is_empty());
    // Gone devices and never-attached names are fine.
    node.run(|| dp.l2_detach_port("nothere", 4242)).unwrap();
}

#[test]
fn a_management_port_becomes_an_l2_port_in_place() {
    let (node, _peers) = node_with(&["port0"]);
    let pins = PinDir::new();
    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    let idx = node.ifindex("port0");
    node.run(|| dp.attach_port("port0", idx)).unwrap();
    assert_eq!(
        filter_ids(&node, "port0"),
        (
            vec![pid(&dp, PROG_MGMT_FROM_POD)],
            vec![pid(&dp, PROG_MGMT_TO_POD)]
        )
    );
    assert_eq!(node.run(|| dp.pinned_mgmt_ports()).unwrap(), vec!["port0"]);
    assert!(node.run(|| dp.pinned_l2_ports()).unwrap().is_empty());
    node.run(|| dp.l2_attach_port("port0", idx, &vm_port(7)))
        .unwrap();
    assert_eq!(
        filter_ids(&node, "port0"),
        (vec![pid(&dp, PROG_L2_INGRESS)], vec![])
    );
    assert!(node.run(|| dp.is_port_attached("port0")).unwrap());
    assert!(node.run(|| dp.pinned_mgmt_ports()).unwrap().is_empty());
    assert_eq!(node.run(|| dp.pinned_l2_ports()).unwrap(), vec!["port0"]);
    assert_eq!(node.run(|| dp.pinned_ports()).unwrap(), vec!["port0"]);
}

#[test]
fn reconfiguring_a_port_flushes_what_was_learned_on_it() {
    let (node, _peers) = node_with(&["vm1", "vm2"]);
    let pins = PinDir::new();
    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    let (vm1, vm2) = (node.ifindex("vm1"), node.ifindex("vm2"));
    node.run(|| {
        dp.l2_attach_port("vm1", vm1, &vm_port(100)).unwrap();
        dp.l2_attach_port("vm2", vm2, &vm_port(100)).unwrap();
    });
    dp.l2_set_vlan(CN, 100, &[vm1, vm2], false).unwrap();
    let learn = |dp: &Datapath, mac: [u8; 6]| {
        let fd = dp.program_fd(PROG_L2_INGRESS).unwrap();
        let ctx = SkbContext {
            ifindex: vm1,
            ..Default::default()
        };
        node.run(|| test_run(fd, &raw_frame(BCAST, mac, 20), Some(&ctx), 1))
            .unwrap();
    };
    let a = [2, 0, 0, 0, 0, 0xa];
    learn(&dp, a);
    assert_eq!(dp.fdb_entries().unwrap().len(), 1);
    // Only the MTU changes: kept.
    let bigger = L2Port {
        mtu: 9000,
        ..vm_port(100)
    };
    node.run(|| dp.l2_attach_port("vm1", vm1, &bigger)).unwrap();
    assert_eq!(dp.fdb_entries().unwrap().len(), 1);
    assert_eq!(dp.l2_port(vm1).unwrap(), Some(bigger));
    // The VLAN changes: flushed.
    node.run(|| dp.l2_attach_port("vm1", vm1, &vm_port(200)))
        .unwrap();
    assert!(dp.fdb_entries().unwrap().is_empty());
    // Nothing is learned on a VLAN the node does not have...
    learn(&dp, a);
    assert!(dp.fdb_entries().unwrap().is_empty());
    // ...until netd sets it up.
    dp.l2_set_vlan(CN, 200, &[vm1], false).unwrap();
    learn(&dp, a);
    assert_eq!(dp.fdb_entries().unwrap()[0].vid, 200);
}

#[test]
fn detach_flushes_the_fdb_and_flood_lists() {
    let (node, _peers) = node_with(&["vm1", "vm2", "upl"]);
    let pins = PinDir::new();
    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    let (vm1, vm2, upl) = (
        node.ifindex("vm1"),
        node.ifindex("vm2"),
        node.ifindex("upl"),
    );
    let up_mac = node.mac("upl");
    node.run(|| {
        dp.l2_attach_port("vm1", vm1, &vm_port(100)).unwrap();
        dp.l2_attach_port("vm2", vm2, &vm_port(100)).unwrap();
        dp.l2_attach_port("upl", upl, &uplink_port(CN, up_mac))
            .unwrap();
    });
    dp.l2_set_vlan(CN, 100, &[vm1, vm2, upl, vm1], false)
        .unwrap();
    dp.l2_set_vlan(CN, 0, &[upl], true).unwrap();
    dp.fdb_add_static(CN, 100, [2, 0, 0, 0, 0, 1], vm1).unwrap();
    dp.fdb_add_static(CN, 200, [2, 0, 0, 0, 0, 2], vm1).unwrap();
    dp.fdb_add_static(CN, 100, [2, 0, 0, 0, 0, 3], vm2).unwrap();
    assert_eq!(
        dp.l2_vlans().unwrap(),
        vec![
            L2Vlan {
                cluster_network: CN,
                vid: 0,
                members: vec![upl],
                to_host: true
            },
            L2Vlan {
                cluster_network: CN,
                vid: 100,
                members: vec![vm1, vm2, upl],
                to_host: false
            },
        ]
    );
    // The device goes first (the pod is deleted), then netd detaches.
    node.ip("link del vm1");
    node.run(|| dp.l2_detach_port("vm1", vm1)).unwrap();
    assert_eq!(dp.l2_vlans().unwrap()[1].members, vec![vm2, upl]);
    let left: Vec<u32> = dp
        .fdb_entries()
        .unwrap()
        .iter()
        .map(|e| e.ifindex)
        .collect();
    assert_eq!(left, vec![vm2]);
    assert_eq!(dp.fdb_flush_port(vm2).unwrap(), 1);
    assert_eq!(dp.fdb_flush_port(vm2).unwrap(), 0);

    // Removing a VLAN takes its counters and FDB entries.
    dp.fdb_add_static(CN, 100, [2, 0, 0, 0, 0, 4], upl).unwrap();
    assert!(dp.vlan_stats_of(CN, 100).unwrap().is_some());
    dp.l2_remove_vlan(CN, 100).unwrap();
    dp.l2_remove_vlan(CN, 100).unwrap();
    assert!(dp.vlan_stats_of(CN, 100).unwrap().is_none());
    assert!(dp.fdb_entries().unwrap().is_empty());
    assert_eq!(
        dp.vlan_stats().unwrap(),
        vec![(CN, 0, VlanStats::default())]
    );
}

#[test]
fn one_uplink_per_cluster_network() {
    let (node, _peers) = node_with(&["upa", "upb"]);
    let pins = PinDir::new();
    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    let (a, b) = (node.ifindex("upa"), node.ifindex("upb"));
    let mac = node.mac("upa");
    node.run(|| {
        dp.l2_attach_port("upa", a, &uplink_port(1, mac)).unwrap();
        let e = dp
            .l2_attach_port("upb", b, &uplink_port(1, mac))
            .unwrap_err();
        assert!(
            matches!(e, DatapathError::InvalidL2(_)) && e.to_string().contains("uplink"),
            "{e}"
        );
        // Another cluster network may use it.
        dp.l2_attach_port("upb", b, &uplink_port(2, mac)).unwrap();
        dp.l2_detach_port("upa", a).unwrap();
        dp.l2_attach_port("upb", b, &uplink_port(1, mac)).unwrap();
        // upb moved from network 2 to 1: network 2 has no uplink now.
        dp.l2_attach_port("upa", a, &uplink_port(2, mac)).unwrap();
    });
}

#[test]
fn vlan_member_limit_and_invalid_requests() {
    let pins = PinDir::new();
    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    let members: Vec<u32> = (1..=L2_MAX_MEMBERS as u32 + 1).collect();
    let e = dp.l2_set_vlan(CN, 100, &members, false).unwrap_err();
    assert!(
        matches!(
            e,
            DatapathError::TooManyMembers {
                vid: 100,
                members: 257,
                max: 256,
                ..
            }
        ),
        "{e}"
    );
    let msg = e.to_string();
    assert!(msg.contains("VLAN 100") && msg.contains("full"), "{msg}");
    dp.l2_set_vlan(CN, 100, &members[..L2_MAX_MEMBERS], false)
        .unwrap();
    // Duplicates do not count.
    let mut dup = members[..L2_MAX_MEMBERS].to_vec();
    dup.extend_from_slice(&members[..10]);
    dp.l2_set_vlan(CN, 100, &dup, false).unwrap();
    assert_eq!(dp.l2_vlans().unwrap()[0].members.len(), L2_MAX_MEMBERS);

    for e in [
        dp.l2_set_vlan(CN, 4095, &[1], false).unwrap_err(),
        dp.l2_set_vlan(CN, 5, &[0], false).unwrap_err(),
        dp.fdb_add_static(CN, 4095, [2, 0, 0, 0, 0, 1], 1)
            .unwrap_err(),
        dp.fdb_add_static(CN, 1, [2, 0, 0, 0, 0, 1], 0).unwrap_err(),
        dp.l2_set_aging(CN, std::time::Duration::ZERO).unwrap_err(),
    ] {
        assert!(matches!(e, DatapathError::InvalidL2(_)), "{e}");
    }
    let (node, _peers) = node_with(&["vm1"]);
    let idx = node.ifindex("vm1");
    for bad in [
        vm_port(0),
        vm_port(4095),
        L2Port {
            mtu: 0,
            ..vm_port(1)
        },
    ] {
        let e = node
            .run(|| dp.l2_attach_port("vm1", idx, &bad))
            .unwrap_err();
        assert!(matches!(e, DatapathError::InvalidL2(_)), "{e}");
    }
    let e = node
        .run(|| dp.l2_attach_port("vm1", idx + 50, &vm_port(1)))
        .unwrap_err();
    assert!(matches!(e, DatapathError::IfindexMismatch { .. }), "{e}");
    assert_eq!(filter_ids(&node, "vm1"), (vec![], vec![]));
}

#[test]
fn restart_keeps_l2_state_and_takes_the_ports_over() {
    let (node, _peers) = node_with(&["vm1", "upl"]);
    let pins = PinDir::new();
    let (vm1, upl) = (node.ifindex("vm1"), node.ifindex("upl"));
    let mac = node.mac("upl");
    let trunk = L2Port {
        cluster_network: CN,
        mode: L2Mode::Trunk {
            allowed: VlanSet::from_ranges([10..=20, 4094..=4094]).unwrap(),
        },
        mtu: 1400,
    };
    {
        let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
        node.run(|| {
            dp.l2_attach_port("vm1", vm1, &trunk).unwrap();
            dp.l2_attach_port("upl", upl, &uplink_port(CN, mac))
                .unwrap();
        });
        dp.l2_set_vlan(CN, 10, &[vm1, upl], false).unwrap();
        dp.l2_set_aging(CN, std::time::Duration::from_secs(42))
            .unwrap();
        dp.fdb_add_static(CN, 10, [2, 0, 0, 0, 0, 1], vm1).unwrap();
    }
    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    assert_eq!(dp.l2_port(vm1).unwrap(), Some(trunk));
    assert_eq!(dp.l2_vlans().unwrap().len(), 1);
    assert_eq!(dp.fdb_entries().unwrap().len(), 1);
    assert_eq!(dp.l2_aging(CN).unwrap().as_secs(), 42);
    // The programs ran on through the restart, through our pinned links:
    // reused as they are (same build), the ports are attached already.
    assert_eq!(node.run(|| dp.pinned_ports()).unwrap(), vec!["upl", "vm1"]);
    assert_eq!(
        node.run(|| dp.pinned_l2_ports()).unwrap(),
        vec!["upl", "vm1"]
    );
    assert!(node.run(|| dp.pinned_mgmt_ports()).unwrap().is_empty());
    assert!(node.run(|| dp.is_port_attached("vm1")).unwrap());
    assert!(node.run(|| dp.is_port_attached("upl")).unwrap());
    node.run(|| {
        dp.l2_attach_port("vm1", vm1, &trunk).unwrap();
        dp.l2_attach_port("upl", upl, &uplink_port(CN, mac))
            .unwrap();
    });
    assert!(node.run(|| dp.is_port_attached("vm1")).unwrap());
    assert!(node.run(|| dp.is_port_attached("upl")).unwrap());
    assert_eq!(dp.fdb_entries().unwrap().len(), 1, "same config: kept");
    node.run(move || dp.destroy()).unwrap();
    assert_eq!(filter_ids(&node, "upl"), (vec![], vec![]));
}

#[test]
fn counters_pinned_by_an_older_build_are_replaced() {
    let pins = PinDir::new();
    drop(Datapath::open(DatapathConfig::new(&pins.0)).unwrap());
    let path = pins.0.join("maps").join(MAP_PORT_STATS);
    std::fs::remove_file(&path).unwrap();
    // furrow_port_stats as builds before the L2 switch made it (72 bytes).
    let out = Command::new("bpftool")
        .args(["map", "create"])
        .arg(&path)
        .args([
            "type",
            "percpu_hash",
            "key",
            "4",
            "value",
            "72",
            "entries",
            "16",
            "name",
            "furrow_port_stat",
            "flags",
            "1",
        ])
        .output()
        .expect("bpftool");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    let st = dp.status();
    let m = st.maps.iter().find(|m| m.name == MAP_PORT_STATS).unwrap();
    assert_eq!(m.max_entries, MAX_PORTS, "a fresh map of this build");
}
