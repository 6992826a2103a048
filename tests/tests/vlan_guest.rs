//! VLAN networks with real VMs and full kernels (QEMU under TCG):
//! - a VM attached the way KubeVirt's bridge binding does it (the CNI
//!   interface in a pod namespace, bridged to the tap QEMU uses), on the
//!   eBPF backend on this machine's kernel;
//! - the whole VLAN scenario with the kernel-bridge backend, run inside a
//!   guest whose Debian kernel has bridge VLAN filtering and bonding.

use std::time::Duration;

use furrow_tests::cni::{self, Attachment};
use furrow_tests::guest::{Guest, GuestConfig, Nic};
use furrow_tests::lab::vlan_nad;
use furrow_tests::scenario::vlan::{CN, NIC};
use furrow_tests::{bins, inspect, names, Lab, Netns};
use serde_json::json;

#[test]
fn kubevirt_style_vm_on_a_vlan_reaches_its_vlan_across_nodes_and_nothing_else() {
    let mut lab = Lab::new().unwrap();
    for n in ["node1", "node2"] {
        lab.add_node(n).unwrap();
    }
    for i in 0..2 {
        lab.add_data_nic(i, NIC).unwrap();
        lab.node(i)
            .cluster_network(CN, "ebpf", &[NIC], 1500)
            .unwrap();
    }
    let (n1, n2) = (lab.node(0), lab.node(1));
    let peers = [
        (n2, "d100", 100u16, "10.77.0.21"),
        (n1, "a100", 100, "10.77.0.11"),
        (n2, "e200", 200, "10.77.0.23"),
    ];
    let mut keep = Vec::new();
    for (node, tag, vlan, ip) in peers {
        let p = node
            .vm(
                tag,
                &vlan_nad(&format!("vlan{vlan}"), CN, vlan, &node.netd.socket),
            )
            .unwrap();
        p.ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])
            .unwrap();
        keep.push(p);
    }
    // The virt-launcher pod: Multus adds the VLAN network as eth1 with the
    // VM's MAC (KubeVirt passes it as runtimeConfig.mac).
    let mac = "52:54:00:77:00:40";
    let pod = Netns::new(&names::unique("launcher")).unwrap();
    let mut cfg = vlan_nad("vlan100", CN, 100, &n1.netd.socket);
    cfg["runtimeConfig"] = json!({"mac": mac});
    let att = Attachment::new("launcher-c0ffee", &pod.path_str(), "eth1");
    cni::add(&att, &cfg).expect_ok("ADD of the VM's VLAN interface");

    let payload = r#"
ip addr add 10.77.0.40/24 dev eth0
ip link set eth0 up
ping -c 3 -W 2 10.77.0.21 >/dev/null || exit 10   # same VLAN, other node
ping -c 3 -W 2 10.77.0.11 >/dev/null || exit 11   # same VLAN, same node
ping -c 2 -W 1 10.77.0.23 >/dev/null && exit 12   # VLAN 200: must fail
exit 0
"#;
    let run = Guest::boot(
        GuestConfig::new(payload)
            .tag("vm100")
            .timeout(Duration::from_secs(180))
            .nic(Nic::kubevirt_bridge(pod.path(), "eth1")),
    )
    .unwrap();
    assert!(
        run.success(),
        "guest exited {} (10: cross-node, 11: same node, 12: reached VLAN 200)\n{}",
        run.exit_code,
        run.console
    );
    assert_eq!(
        run.macs.first().map(String::as_str),
        Some(mac),
        "the VM runs with the pod interface's MAC"
    );
    cni::del(&att, &cfg).expect_ok("DEL");
    inspect::settle(n1);
}

#[test]
fn vlan_scenario_passes_with_the_kernel_bridge_backend_in_a_full_kernel_guest() {
    let mut cfg = GuestConfig::new(
        "export FURROW_BIN_DIR=/usr/local/bin\n/usr/local/bin/furrow-lab scenario vlan bridge\n",
    )
    .tag("bridgenode")
    .memory_mib(1536)
    .timeout(Duration::from_secs(900));
    for b in [
        bins::netd(),
        bins::furrow(),
        bins::netctl(),
        bins::path("furrow-lab"),
    ] {
        cfg.files.add_binary(&b).unwrap();
    }
    cfg.files
        .add_host_tools(&["ip", "nsenter", "tcpdump"])
        .unwrap();
    let run = Guest::boot(cfg).unwrap();
    let report: Vec<&str> = run
        .console
        .lines()
        .filter(|l| l.contains("SCENARIO"))
        .collect();
    eprintln!("{}", report.join("\n"));
    assert!(
        run.success() && run.console.contains("SCENARIO OK"),
        "the bridge backend scenario failed:\n{}",
        run.console
    );
    for check in [
        "same-vlan",
        "isolation",
        "trunk-and-broadcast-domains",
        "no-loops",
        "uplink-failover",
        "migration",
    ] {
        assert!(
            run.console.contains(&format!("SCENARIO PASS {check}")),
            "{check} did not pass:\n{}",
            run.console
        );
    }
}
