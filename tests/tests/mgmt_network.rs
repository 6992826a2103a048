//! The management network on one node, end to end: addresses, routes,
//! pod-to-pod through the eBPF datapath, egress masqueraded behind the
//! node, MTU and MAC honoured, netctl telling the truth.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use furrow_api::wire::{NodeStatus, PortInfo};
use furrow_tests::{inspect, probe, Lab};
use serde_json::{json, Value};

fn pod_json(pod: &furrow_tests::Pod, args: &[&str]) -> Value {
    let out = pod.ns.ip(&[&["-j"][..], args].concat()).expect("ip");
    serde_json::from_str(&out).expect("ip -j output")
}

#[test]
fn pod_gets_result_addresses_reaches_pods_and_the_outside_masqueraded() {
    let mut lab = Lab::new().unwrap();
    lab.add_node("node1").unwrap();
    let node = lab.node(0);
    let a = node.mgmt_pod("pa").unwrap();
    let b = node.mgmt_pod("pb").unwrap();

    // The result: one container interface in the pod's netns, an address
    // of the node subnet, the node as gateway, a default route.
    let r = &a.result;
    assert_eq!(r["cniVersion"], "1.1.0");
    let ifaces = r["interfaces"].as_array().unwrap();
    let idx = r["ips"][0]["interface"].as_u64().unwrap() as usize;
    assert_eq!(ifaces[idx]["name"], "eth0");
    assert_eq!(ifaces[idx]["sandbox"], a.ns.path_str());
    let addr = r["ips"][0]["address"].as_str().unwrap();
    assert!(
        addr.starts_with("10.52.0.") && addr.ends_with("/24"),
        "{addr}"
    );
    assert_eq!(r["ips"][0]["gateway"], "10.52.0.1");
    assert_eq!(
        r["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": "10.52.0.1"}])
    );
    assert_ne!(a.ip(), b.ip());

    // The pod's kernel state matches the result.
    let links = pod_json(&a, &["addr", "show", "dev", "eth0"]);
    let l = &links[0];
    assert_eq!(l["address"], ifaces[idx]["mac"]);
    assert_eq!(l["operstate"], "UP");
    let local = l["addr_info"].as_array().unwrap().iter().any(|ai| {
        ai["family"] == "inet" && ai["local"] == a.ip().to_string() && ai["prefixlen"] == 24
    });
    assert!(local, "{links}");
    let routes = pod_json(&a, &["route", "show"]);
    assert!(
        routes
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["dst"] == "default" && r["gateway"] == "10.52.0.1"),
        "{routes}"
    );

    // Pod to pod on the node, taken by the eBPF datapath.
    assert!(
        probe::ping_ok(&a.ns, IpAddr::V4(b.ip()), 5),
        "pod A cannot reach pod B"
    );
    let ports: Vec<PortInfo> = node.netd.client().get("/v1/ports").unwrap();
    let pa = ports
        .iter()
        .find(|p| p.container_id == a.container_id)
        .unwrap();
    let c = pa.counters.as_ref().expect("counters");
    assert!(
        c.redirected_packets >= 1,
        "pod-to-pod traffic was not redirected by the datapath: {c:?}"
    );
    assert!(c.tx_packets >= c.redirected_packets);
    // The other side sees the pod's own address: no NAT inside the cluster.
    let seen =
        probe::udp_source_seen(&a.ns, &b.ns, SocketAddr::new(IpAddr::V4(b.ip()), 7001)).unwrap();
    assert_eq!(seen, IpAddr::V4(a.ip()));

    // Pod to the node's gateway and to a host beyond the node, which sees
    // the node's address as the source.
    assert!(probe::ping_ok(
        &a.ns,
        IpAddr::V4(Ipv4Addr::new(10, 52, 0, 1)),
        3
    ));
    assert!(probe::ping_ok(
        &a.ns,
        IpAddr::V4(furrow_tests::lab::EXTERNAL_IP),
        5
    ));
    let seen = probe::udp_source_seen(
        &a.ns,
        &lab.external,
        SocketAddr::new(IpAddr::V4(furrow_tests::lab::EXTERNAL_IP), 7002),
    )
    .unwrap();
    assert_eq!(
        seen,
        node.uplink(),
        "external host must see the node's address"
    );
    assert!(inspect::masquerade_members(node, "mgmt").contains(&a.ip().to_string()));

    // DEL removes every trace.
    node.del_pod(&a).expect_ok("DEL a");
    node.del_pod(&b).expect_ok("DEL b");
    assert_eq!(inspect::leftovers(node, "mgmt"), Vec::<String>::new());
}

#[test]
fn mtu_mac_and_requested_address_are_honoured() {
    let mut lab = Lab::new().unwrap();
    lab.add_node("node1").unwrap();
    let node = lab.node(0);
    let mut cfg = node.mgmt_config("1.0.0");
    cfg["mtu"] = json!(1400);
    cfg["capabilities"] = json!({"mac": true, "ips": true});
    cfg["runtimeConfig"] = json!({"mac": "52:54:00:12:34:56", "ips": ["10.52.0.77/24"]});
    let pod = node.add_pod("vm", &cfg).unwrap();
    assert_eq!(pod.ip(), Ipv4Addr::new(10, 52, 0, 77));
    let l = pod_json(&pod, &["link", "show", "dev", "eth0"]);
    assert_eq!(l[0]["address"], "52:54:00:12:34:56");
    assert_eq!(l[0]["mtu"], 1400);
    let iface =
        &pod.result["interfaces"][pod.result["ips"][0]["interface"].as_u64().unwrap() as usize];
    assert_eq!(iface["mac"], "52:54:00:12:34:56");
    // The host side has the same MTU.
    let host_if = pod.result["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i.get("sandbox").is_none())
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    let hl: Value = serde_json::from_str(
        &node
            .ns
            .ip(&["-j", "link", "show", "dev", &host_if])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(hl[0]["mtu"], 1400);
    // A second pod asking for the same address is refused.
    let mut cfg2 = cfg.clone();
    cfg2["runtimeConfig"] = json!({"ips": ["10.52.0.77"]});
    let err = node.add_pod("vm2", &cfg2).unwrap_err().to_string();
    assert!(
        err.contains("\"code\": 103") || err.contains("\"code\":103"),
        "{err}"
    );
    node.del_pod(&pod).expect_ok("DEL");
    assert_eq!(inspect::leftovers(node, "mgmt"), Vec::<String>::new());
}

#[test]
fn netctl_status_and_ports_show_what_was_built() {
    let mut lab = Lab::new().unwrap();
    lab.add_node("node1").unwrap();
    let node = lab.node(0);
    let a = node.mgmt_pod("pa").unwrap();
    let b = node.mgmt_pod("pb").unwrap();
    assert!(probe::ping_ok(&a.ns, IpAddr::V4(b.ip()), 5));

    let out = node.netd.netctl(&["status", "-o", "json"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: NodeStatus = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s.node, "node1");
    assert_eq!(s.instance, node.netd.instance);
    assert_eq!(s.ports.ready, 2);
    assert_eq!(s.networks.len(), 1);
    assert_eq!(s.networks[0].name, "mgmt");
    assert_eq!(s.networks[0].subnet.unwrap().to_string(), "10.52.0.0/24");
    assert_eq!(s.networks[0].addresses_allocated, 2);
    assert!(s.datapath.healthy && s.firewall.healthy && s.store.healthy);
    assert_eq!(s.datapath.mode, "ebpf-tcx");
    assert_eq!(s.firewall.table, inspect::nft_table(node));
    let eps = s
        .datapath
        .maps
        .iter()
        .find(|m| m.name == "furrow_mgmt_eps")
        .unwrap();
    assert_eq!(eps.entries, 2);

    let out = node.netd.netctl(&["ports", "-o", "json"]).unwrap();
    let ports: Vec<PortInfo> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ports.len(), 2);
    for (pod, tag) in [(&a, "pa"), (&b, "pb")] {
        let p = ports
            .iter()
            .find(|p| p.container_id == pod.container_id)
            .unwrap();
        assert_eq!(p.ips[0].addr(), IpAddr::V4(pod.ip()));
        assert_eq!(p.pod.name.as_deref(), Some(tag));
        assert_eq!(p.netns.as_deref(), Some(pod.ns.path_str().as_str()));
        assert!(inspect::furrow_links(node).contains(&p.host_ifname));
    }

    // The tables say the same.
    let table = String::from_utf8(node.netd.netctl(&["ports"]).unwrap().stdout).unwrap();
    assert!(table.starts_with("POD"), "{table}");
    for pod in [&a, &b] {
        assert!(table.contains(&format!("{}/24", pod.ip())), "{table}");
    }
    let table = String::from_utf8(node.netd.netctl(&["status"]).unwrap().stdout).unwrap();
    assert!(
        table.contains("10.52.0.0/24") && table.contains("2 ready"),
        "{table}"
    );
    let yaml =
        String::from_utf8(node.netd.netctl(&["ports", "-o", "yaml"]).unwrap().stdout).unwrap();
    assert!(yaml.contains("containerID:"), "{yaml}");
}

#[test]
fn netctl_against_a_dead_netd_prints_one_clear_line() {
    let mut lab = Lab::new().unwrap();
    lab.add_node("node1").unwrap();
    let node = lab.node_mut(0);
    node.netd.kill();
    let out = node.netd.netctl(&["status"]).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("not reachable"), "{err}");
}

#[test]
fn resources_from_the_config_dir_and_the_api_define_the_network() {
    let mut lab = Lab::new().unwrap();
    let node = lab.add_node_with("node1", false).unwrap();
    node.netd
        .write_config(
            "mgmt.yaml",
            "apiVersion: network.furrow.io/v1alpha1\nkind: ManagementNetwork\nmetadata:\n  name: mgmt\nspec:\n  clusterCIDR: 10.99.0.0/16\n  nodeSubnetPrefixLength: 26\n  mtu: 1450\n",
        )
        .unwrap();
    node.netd.start().unwrap();
    let node = lab.node(0);
    let pod = node.mgmt_pod("p").unwrap();
    assert!(pod.result["ips"][0]["address"]
        .as_str()
        .unwrap()
        .starts_with("10.99.0."));
    assert!(pod.result["ips"][0]["address"]
        .as_str()
        .unwrap()
        .ends_with("/26"));
    assert_eq!(pod.result["ips"][0]["gateway"], "10.99.0.1");

    // Changing the CIDR while a pod uses it is refused, naming the field.
    let doc = "apiVersion: network.furrow.io/v1alpha1\nkind: ManagementNetwork\nmetadata:\n  name: mgmt\nspec:\n  clusterCIDR: 10.98.0.0/16\n";
    let f = node.netd.dir.join("change.yaml");
    std::fs::write(&f, doc).unwrap();
    let out = node
        .netd
        .netctl(&["apply", "-f", f.to_str().unwrap()])
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("spec.clusterCIDR"));
    // A bad field is named.
    std::fs::write(&f, doc.replace("clusterCIDR: 10.98.0.0/16", "mtu: 100000")).unwrap();
    let out = node
        .netd
        .netctl(&["apply", "-f", f.to_str().unwrap()])
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("spec.mtu"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ... and nothing changed.
    let out = node
        .netd
        .netctl(&["get", "mgmtnet", "mgmt", "-o", "json"])
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["spec"]["clusterCIDR"], "10.99.0.0/16");
    assert_eq!(v["spec"]["mtu"], 1450);
    // Deleting it while in use is refused too.
    let out = node
        .netd
        .netctl(&["delete", "managementnetwork", "mgmt"])
        .unwrap();
    assert!(!out.status.success());
    node.del_pod(&pod).expect_ok("DEL");
}

#[test]
fn api_socket_is_root_only_and_metrics_count_requests_and_traffic() {
    use std::os::unix::fs::PermissionsExt;
    let mut lab = Lab::new().unwrap();
    lab.add_node("node1").unwrap();
    let node = lab.node(0);
    let mode = std::fs::metadata(&node.netd.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "API socket mode {mode:o}");
    // The lab made the socket's directory itself, so netd leaves its mode
    // alone (it tightens only a directory it creates or its default one:
    // api_access's unit tests).

    let a = node.mgmt_pod("pa").unwrap();
    let b = node.mgmt_pod("pb").unwrap();
    assert!(probe::ping_ok(&a.ns, IpAddr::V4(b.ip()), 5));
    let bad = furrow_tests::cni::add(
        &furrow_tests::cni::Attachment::new("c-missing", "/run/netns/furrow-no-such-ns", "eth0"),
        &node.mgmt_config("1.1.0"),
    );
    assert_eq!(bad.error_code(), Some(3));
    let out = node.netd.netctl(&["metrics"]).unwrap();
    let m = String::from_utf8(out.stdout).unwrap();
    let value = |series: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{m}"))
    };
    assert_eq!(
        value("furrow_cni_requests_total{command=\"add\",outcome=\"ok\"}"),
        2.0
    );
    assert_eq!(
        value("furrow_cni_requests_total{command=\"add\",outcome=\"3\"}"),
        1.0
    );
    assert_eq!(value("furrow_ports{state=\"ready\"}"), 2.0);
    assert_eq!(
        value("furrow_ipam_addresses{network=\"mgmt\",state=\"allocated\"}"),
        2.0
    );
    let redirected = format!(
        "furrow_port_redirected_packets_total{{network=\"mgmt\",container_id=\"{}\",ifname=\"eth0\"}}",
        a.container_id
    );
    assert!(value(&redirected) >= 1.0);
    assert!(m.contains("# TYPE furrow_cni_request_duration_seconds histogram"));
    assert!(
        m.contains("furrow_datapath_map_entries{map=\"furrow_mgmt_eps\"} 2"),
        "{m}"
    );
}
