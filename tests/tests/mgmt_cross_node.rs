//! The management network across nodes (issue 8): three nodes on a real
//! 3-member etcd, pods on every node reach pods on every other node over
//! the VXLAN overlay and over host-gw routes, keep their own source
//! address between pods, are masqueraded towards the outside, and get an
//! MTU that fits the encapsulation. A node gone past its grace period
//! takes its routes with it.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use furrow_api::wire::NetworkInfo;
use furrow_tests::lab::EXTERNAL_IP;
use furrow_tests::{inspect, probe, Lab, Pod};

const GRACE_SECS: &str = "5";

/// Three nodes on etcd (short membership grace), optionally with a
/// ManagementNetwork applied before any pod exists.
fn three_nodes(network_yaml: Option<&str>) -> Lab {
    let mut lab = Lab::shared(3).unwrap();
    for name in ["node1", "node2", "node3"] {
        let node = lab.add_node_with(name, false).unwrap();
        node.netd
            .extra_args
            .extend(["--node-grace-secs".to_string(), GRACE_SECS.to_string()]);
        node.netd.start().unwrap();
    }
    if let Some(y) = network_yaml {
        lab.node(0).apply(y).unwrap();
    }
    lab
}

fn mgmt_info(lab: &Lab, i: usize) -> NetworkInfo {
    let nets: Vec<NetworkInfo> = lab.node(i).netd.client().get("/v1/networks").unwrap();
    nets.into_iter()
        .find(|n| n.name == "mgmt")
        .expect("network mgmt")
}

/// Waits until every node routes to every other node's subnet the way
/// `backend` does it.
fn wait_routes(lab: &Lab, backend: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let infos: Vec<NetworkInfo> = (0..lab.nodes.len()).map(|i| mgmt_info(lab, i)).collect();
        let ok = infos.iter().all(|n| {
            n.backend.as_deref() == Some(backend)
                && n.remote_subnets.len() == lab.nodes.len() - 1
                && n.problems.is_empty()
        });
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "cross-node routes for {backend} never complete: {infos:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pod_mtu(p: &Pod) -> u64 {
    let v: serde_json::Value =
        serde_json::from_str(&p.ns.ip(&["-j", "link", "show", "dev", &p.ifname]).unwrap()).unwrap();
    v[0]["mtu"].as_u64().unwrap()
}

/// Every pod reaches every other pod, and the receiver sees the sender's
/// own address (no NAT between pods); every pod reaches the external host
/// masqueraded behind its node.
fn assert_full_mesh(lab: &Lab, pods: &[Pod]) {
    for (i, a) in pods.iter().enumerate() {
        for (j, b) in pods.iter().enumerate() {
            if i == j {
                continue;
            }
            assert!(
                probe::ping_ok(&a.ns, IpAddr::V4(b.ip()), 5),
                "pod on node{} ({}) cannot reach pod on node{} ({})",
                i + 1,
                a.ip(),
                j + 1,
                b.ip()
            );
            let seen = probe::udp_source_seen(
                &a.ns,
                &b.ns,
                SocketAddr::new(IpAddr::V4(b.ip()), 7100 + (i * 3 + j) as u16),
            )
            .unwrap();
            assert_eq!(
                seen,
                IpAddr::V4(a.ip()),
                "node{}'s pod saw node{}'s pod as {seen}: pod-to-pod traffic must keep its source",
                j + 1,
                i + 1
            );
        }
        let seen = probe::udp_source_seen(
            &a.ns,
            &lab.external,
            SocketAddr::new(IpAddr::V4(EXTERNAL_IP), 7200 + i as u16),
        )
        .unwrap();
        assert_eq!(
            seen,
            lab.node(i).uplink(),
            "the external host must see node{}'s address for its pod",
            i + 1
        );
    }
}

/// A full-size packet with DF set crosses nodes: the pod MTU leaves room
/// for what the backend adds.
fn assert_full_size_fits(a: &Pod, b: &Pod) {
    let payload = (pod_mtu(a) - 28).to_string();
    let ok = (0..3).any(|_| {
        a.ns.cmd("ping")
            .args(["-c", "1", "-W", "1", "-M", "do", "-s", &payload])
            .arg(b.ip().to_string())
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    });
    assert!(
        ok,
        "a {}-byte DF ping from {} to {} did not cross",
        payload,
        a.ip(),
        b.ip()
    );
}

#[test]
fn pods_on_every_node_reach_each_other_over_vxlan() {
    let mut lab = three_nodes(None);
    wait_routes(&lab, "vxlan");
    let pods: Vec<Pod> = (0..3)
        .map(|i| lab.node(i).mgmt_pod(&format!("x{i}")).unwrap())
        .collect();
    // Distinct per-node subnets; pods sized for the overlay.
    for (i, p) in pods.iter().enumerate() {
        assert_eq!(
            pod_mtu(p),
            1450,
            "node{}: underlay 1500 less 50 for VXLAN",
            i + 1
        );
    }
    assert_full_mesh(&lab, &pods);
    assert_full_size_fits(&pods[0], &pods[2]);

    // What the kernel holds on node1: the VXLAN device, and a route per
    // other node's subnet through it, as netctl and the API report.
    let info = mgmt_info(&lab, 0);
    let dev = info.device.clone().expect("a VXLAN device");
    assert_eq!(dev, "furrow.1");
    let link = lab
        .node(0)
        .ns
        .ip(&["-d", "-j", "link", "show", "dev", &dev])
        .unwrap();
    let link: serde_json::Value = serde_json::from_str(&link).unwrap();
    let data = &link[0]["linkinfo"]["info_data"];
    assert_eq!(data["id"], 1);
    assert_eq!(data["port"], 8472);
    assert_eq!(data["learning"], false);
    let routes = inspect::remote_subnet_routes(lab.node(0));
    for r in &info.remote_subnets {
        let (via, on) = routes
            .get(&r.subnet.to_string())
            .unwrap_or_else(|| panic!("no route to {} on node1: {routes:?}", r.subnet));
        assert_eq!(on, &dev);
        assert_eq!(via, &r.subnet.hosts().next().unwrap().to_string());
    }
    let out = lab.node(0).netd.netctl(&["networks"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("across nodes: vxlan") && text.contains("node3"),
        "{text}"
    );

    // node3 vanishes: once the grace period is over its lease is released
    // and the survivors drop the route to its subnet.
    let gone = pods[2].result["ips"][0]["address"]
        .as_str()
        .unwrap()
        .to_string();
    let gone_subnet = info
        .remote_subnets
        .iter()
        .find(|r| r.node == "node3")
        .map(|r| r.subnet.to_string())
        .unwrap();
    lab.node_mut(2).netd.kill();
    let deadline = Instant::now() + Duration::from_secs(30);
    while inspect::remote_subnet_routes(lab.node(0)).contains_key(&gone_subnet) {
        assert!(
            Instant::now() < deadline,
            "node1 still routes to gone node3's {gone_subnet} ({gone})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The survivors still reach each other.
    assert!(probe::ping_ok(&pods[0].ns, IpAddr::V4(pods[1].ip()), 5));
    lab.node(0).del_pod(&pods[0]).expect_ok("DEL");
    lab.node(1).del_pod(&pods[1]).expect_ok("DEL");
}

#[test]
fn pods_on_every_node_reach_each_other_over_host_gw() {
    let lab = three_nodes(Some(
        "apiVersion: network.furrow.io/v1alpha1\nkind: ManagementNetwork\nmetadata: {name: mgmt}\nspec:\n  clusterCIDR: 10.52.0.0/16\n  backend: host-gw\n",
    ));
    wait_routes(&lab, "host-gw");
    let pods: Vec<Pod> = (0..3)
        .map(|i| lab.node(i).mgmt_pod(&format!("h{i}")).unwrap())
        .collect();
    for p in &pods {
        assert_eq!(pod_mtu(p), 1500, "no encapsulation: the underlay's MTU");
    }
    assert_full_mesh(&lab, &pods);
    assert_full_size_fits(&pods[1], &pods[0]);
    // Plain routes via the other nodes' underlay addresses, and no VXLAN
    // device left from the default backend.
    let info = mgmt_info(&lab, 1);
    assert_eq!(info.device, None);
    let routes = inspect::remote_subnet_routes(lab.node(1));
    for r in &info.remote_subnets {
        assert_eq!(
            routes.get(&r.subnet.to_string()),
            Some(&(r.node_ip.to_string(), "uplink0".to_string())),
            "{routes:?}"
        );
    }
    let vx = lab
        .node(1)
        .ns
        .ip(&["-j", "link", "show", "type", "vxlan"])
        .unwrap();
    assert!(
        serde_json::from_str::<serde_json::Value>(&vx)
            .unwrap()
            .as_array()
            .is_none_or(|a| a.is_empty()),
        "a VXLAN device is left: {vx}"
    );
    for (i, p) in pods.iter().enumerate() {
        lab.node(i).del_pod(p).expect_ok("DEL");
    }
}

#[test]
fn a_vni_taken_by_another_network_is_refused() {
    let lab = three_nodes(None);
    let err = lab
        .node(0)
        .apply("apiVersion: network.furrow.io/v1alpha1\nkind: ManagementNetwork\nmetadata: {name: second}\nspec:\n  clusterCIDR: 10.60.0.0/16\n  vxlanVNI: 1\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("spec.vxlanVNI") && err.contains("mgmt"),
        "{err}"
    );
}
