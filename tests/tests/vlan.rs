//! VLAN networks on the eBPF backend: two nodes, a trunking fabric, VMs
//! on access VLANs, the untagged network and a trunk.

use std::net::IpAddr;

use furrow_api::wire::PortInfo;
use furrow_tests::cni::{self, Attachment};
use furrow_tests::lab::{trunk_nad, vlan_nad};
use furrow_tests::scenario::vlan::{VlanLab, CN, NIC};
use furrow_tests::{inspect, names, probe, Lab, Netns};
use serde_json::json;

#[test]
fn same_vlan_reaches_other_vlans_are_isolated_trunks_get_their_vlans_no_loops() {
    let v = VlanLab::build("ebpf").unwrap();
    v.check_same_vlan().unwrap();
    v.check_isolation().unwrap();
    v.check_trunk_and_broadcast_domains().unwrap();
    v.check_no_loops().unwrap();
    let t = v.check_uplink_failover().unwrap();
    eprintln!("uplink failover: traffic back after {t:?}");
    // netctl tells the truth about what was built.
    let node = v.lab.node(0);
    let ports: Vec<PortInfo> = node.netd.client().get("/v1/ports").unwrap();
    let a = ports
        .iter()
        .find(|p| p.container_id == v.vm("a100").pod.container_id)
        .unwrap();
    assert_eq!(a.vlan, Some(100));
    assert_eq!(a.network, CN);
    let t = ports
        .iter()
        .find(|p| p.container_id == v.vm("t").pod.container_id)
        .unwrap();
    assert_eq!(t.trunk.len(), 2);
    let info = node.cluster_network_info(CN).unwrap();
    assert_eq!(info.backend, "ebpf");
    assert_eq!(
        info.uplink.as_ref().unwrap().nics,
        vec![NIC, furrow_tests::scenario::vlan::NIC2]
    );
    assert_eq!(info.vlans, vec![0, 100, 200, 300]);
    // Per-VLAN counters reach the metrics.
    let m = String::from_utf8(node.netd.netctl(&["metrics"]).unwrap().stdout).unwrap();
    let flooded = m
        .lines()
        .find(|l| {
            l.starts_with("furrow_vlan_flood_packets_total{cluster_network=\"data\",vlan=\"100\"}")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no VLAN 100 flood counter in\n{m}"));
    assert!(
        flooded >= 1.0,
        "VLAN 100 saw broadcasts, yet flood_packets is {flooded}"
    );
}

#[test]
fn a_vm_moved_to_another_node_is_reachable_within_a_second() {
    let mut v = VlanLab::build("ebpf").unwrap();
    let t = v.check_migration().unwrap();
    eprintln!("moved VM reachable after {t:?}");
}

#[test]
fn bad_vlan_input_gets_clear_errors_and_leaves_networks_running() {
    let mut lab = Lab::new().unwrap();
    lab.add_node("node1").unwrap();
    lab.add_data_nic(0, NIC).unwrap();
    let node = lab.node(0);
    node.cluster_network(CN, "ebpf", &[NIC], 1500).unwrap();
    let a = node
        .vm("a", &vlan_nad("vlan100", CN, 100, &node.netd.socket))
        .unwrap();
    let b = node
        .vm("b", &vlan_nad("vlan100", CN, 100, &node.netd.socket))
        .unwrap();
    a.ns.ip(&["addr", "add", "10.77.0.1/24", "dev", "eth0"])
        .unwrap();
    b.ns.ip(&["addr", "add", "10.77.0.2/24", "dev", "eth0"])
        .unwrap();
    assert!(probe::ping_ok(&a.ns, "10.77.0.2".parse().unwrap(), 3));

    let sock = &node.netd.socket;
    let sandbox = Netns::new(&names::unique("bad")).unwrap();
    let add = |cfg: &serde_json::Value| {
        cni::add(&Attachment::new("bad-c", &sandbox.path_str(), "eth0"), cfg)
    };
    // VLAN 4095 and -1.
    for vlan in [json!(4095), json!(-1)] {
        let mut c = vlan_nad("bad", CN, 1, sock);
        c["vlan"] = vlan.clone();
        let out = add(&c);
        assert_eq!(out.error_code(), Some(7), "vlan {vlan}: {out:?}");
        assert!(out.error_msg().contains("vlan"), "{}", out.error_msg());
    }
    // An inverted trunk range.
    let out = add(&trunk_nad("bad", CN, &[(300, 200)], sock));
    assert_eq!(out.error_code(), Some(7), "{out:?}");
    assert!(
        out.error_msg().contains("vlanTrunk[0]"),
        "{}",
        out.error_msg()
    );
    // An unknown cluster network.
    let out = add(&vlan_nad("bad", "nosuch", 100, sock));
    assert_eq!(out.error_code(), Some(7), "{out:?}");
    assert!(out.error_msg().contains("nosuch"), "{}", out.error_msg());
    // An MTU above the uplink's.
    let mut c = vlan_nad("bad", CN, 100, sock);
    c["mtu"] = json!(9000);
    let out = add(&c);
    assert_eq!(out.error_code(), Some(7), "{out:?}");
    assert!(
        out.error_msg().contains("mtu") && out.error_msg().contains("1500"),
        "{}",
        out.error_msg()
    );
    // A cluster network whose uplink NIC is missing: refused with the
    // reason, and the working network keeps working.
    let err = node
        .apply(&furrow_tests::lab::cluster_network_yaml(
            "other",
            "ebpf",
            "node1",
            &["eth9"],
            1500,
        ))
        .unwrap_or_default();
    let _ = err;
    let info = node.cluster_network_info("other").unwrap();
    assert!(
        info.problem.as_deref().unwrap_or("").contains("eth9"),
        "{info:?}"
    );
    let out = add(&vlan_nad("bad", "other", 100, sock));
    assert_eq!(out.error_code(), Some(7), "{out:?}");
    assert!(out.error_msg().contains("eth9"), "{}", out.error_msg());
    // A second VlanConfig covering the same node is refused.
    let dup = "apiVersion: network.furrow.io/v1alpha1\nkind: VlanConfig\nmetadata:\n  name: dup\nspec:\n  clusterNetwork: data\n  uplink:\n    nics: [data0]\n";
    let e = node.apply(dup).unwrap_err().to_string();
    assert!(e.contains("nodeSelector"), "{e}");
    // Nothing half-created, existing ports fine.
    assert!(sandbox.ip(&["link", "show", "eth0"]).is_err());
    assert!(
        probe::ping_ok(&a.ns, "10.77.0.2".parse().unwrap(), 3),
        "the working VLAN broke"
    );
    let ports: Vec<PortInfo> = node.netd.client().get("/v1/ports").unwrap();
    assert_eq!(ports.len(), 2);
    // Deleting the cluster network or its uplink while in use is refused.
    let out = node.netd.netctl(&["delete", "clusternetwork", CN]).unwrap();
    assert!(!out.status.success());
    let out = node
        .netd
        .netctl(&["delete", "vlanconfig", &format!("{CN}-node1")])
        .unwrap();
    assert!(!out.status.success());
    node.del_pod(&a).expect_ok("DEL");
    node.del_pod(&b).expect_ok("DEL");
    inspect::settle(node);
}

#[test]
fn node_presence_on_a_vlan_and_vlan_ports_survive_a_restart() {
    let mut lab = Lab::new().unwrap();
    lab.add_node("node1").unwrap();
    lab.add_data_nic(0, NIC).unwrap();
    {
        let node = lab.node(0);
        node.cluster_network(CN, "ebpf", &[NIC], 1500).unwrap();
        node.apply("apiVersion: network.furrow.io/v1alpha1\nkind: VlanInterface\nmetadata:\n  name: diag100\nspec:\n  clusterNetwork: data\n  vlan: 100\n  address: 10.77.0.254/24\n")
            .unwrap();
    }
    let vm = {
        let node = lab.node(0);
        // cniVersion 1.0.0: CHECK needs 0.4.0 or later.
        let mut cfg = vlan_nad("vlan100", CN, 100, &node.netd.socket);
        cfg["cniVersion"] = json!("1.0.0");
        let vm = node.vm("a", &cfg).unwrap();
        vm.ns
            .ip(&["addr", "add", "10.77.0.1/24", "dev", "eth0"])
            .unwrap();
        // The node itself is on VLAN 100 with no 802.1Q device.
        assert!(
            probe::ping_ok(&vm.ns, "10.77.0.254".parse().unwrap(), 3),
            "VM cannot reach the node's VLAN address"
        );
        assert!(
            probe::ping_ok(&node.ns, "10.77.0.1".parse().unwrap(), 3),
            "node cannot reach the VM"
        );
        let out = cni::check(&vm.attachment(), &vm.config, &vm.result);
        assert!(out.success(), "{out:?}");
        vm
    };
    lab.node_mut(0).netd.restart().unwrap();
    let node = lab.node(0);
    assert!(
        probe::ping_ok(&vm.ns, "10.77.0.254".parse().unwrap(), 3),
        "after restart"
    );
    let out = cni::check(&vm.attachment(), &vm.config, &vm.result);
    assert!(out.success(), "CHECK after restart: {out:?}");
    node.del_pod(&vm).expect_ok("DEL");
    assert!(!probe::ping(
        &node.ns,
        IpAddr::V4("10.77.0.1".parse().unwrap())
    ));
}
