//! Node membership (issue 8): node records kept alive through the shared
//! store, gone nodes' subnets released after the grace period, no subnet
//! ever given twice.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use furrow_api::wire::NodeMemberInfo;
use furrow_tests::Lab;

const GRACE_SECS: &str = "5";

fn start_node(lab: &mut Lab, name: &str) {
    let node = lab.add_node_with(name, false).unwrap();
    node.netd
        .extra_args
        .extend(["--node-grace-secs".to_string(), GRACE_SECS.to_string()]);
    node.netd.start().unwrap();
}

fn view(lab: &Lab, i: usize) -> Vec<NodeMemberInfo> {
    lab.node(i).netd.client().get("/v1/nodes").unwrap()
}

fn member<'a>(v: &'a [NodeMemberInfo], name: &str) -> Option<&'a NodeMemberInfo> {
    v.iter().find(|n| n.name == name)
}

fn mgmt_subnet(v: &[NodeMemberInfo], name: &str) -> Option<String> {
    member(v, name)?
        .subnets
        .iter()
        .find_map(|s| s.strip_prefix("mgmt=").map(str::to_string))
}

/// Waits until node `i`'s view satisfies `ok`.
fn wait_view(lab: &Lab, i: usize, what: &str, ok: impl Fn(&[NodeMemberInfo]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = view(lab, i);
        if ok(&v) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: never happened; view {v:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Across the live nodes' port records, each pod address has one holder;
/// `expected` ports in all.
fn assert_no_address_twice(lab: &Lab, live: &[usize], expected: usize) {
    let mut holders: BTreeMap<String, String> = BTreeMap::new();
    for &i in live {
        let ports: Vec<furrow_api::wire::PortInfo> =
            lab.node(i).netd.client().get("/v1/ports").unwrap();
        for p in ports {
            for ip in &p.ips {
                let who = format!("{}:{}", lab.node(i).name, p.container_id);
                if let Some(prev) = holders.insert(ip.addr().to_string(), who.clone()) {
                    panic!("address {ip} held by both {prev} and {who}");
                }
            }
        }
    }
    assert_eq!(holders.len(), expected, "{holders:?}");
}

/// Across every live node's view, each subnet has one owner.
fn assert_no_subnet_twice(lab: &Lab, live: &[usize]) {
    for &i in live {
        let mut owners: BTreeMap<String, String> = BTreeMap::new();
        for n in view(lab, i) {
            for s in &n.subnets {
                if let Some(prev) = owners.insert(s.clone(), n.name.clone()) {
                    panic!(
                        "subnet {s} given to both {prev} and {} (view of node {i})",
                        n.name
                    );
                }
            }
        }
    }
}

#[test]
fn nodes_join_leave_and_come_back_without_a_subnet_given_twice() {
    let mut lab = Lab::shared(3).unwrap();
    for name in ["node1", "node2", "node3"] {
        start_node(&mut lab, name);
    }
    wait_view(&lab, 0, "three ready members with subnets", |v| {
        ["node1", "node2", "node3"].iter().all(|n| {
            member(v, n).is_some_and(|m| m.state == "ready") && mgmt_subnet(v, n).is_some()
        })
    });
    let v = view(&lab, 0);
    assert!(member(&v, "node1").unwrap().this_node);
    let n2 = member(&v, "node2").unwrap();
    assert!(
        n2.addresses.iter().any(|a| a.starts_with("198.18.0.2/")),
        "node2's record lacks its uplink address: {n2:?}"
    );
    let s2 = mgmt_subnet(&v, "node2").unwrap();
    let s3 = mgmt_subnet(&v, "node3").unwrap();
    assert_no_subnet_twice(&lab, &[0, 1, 2]);

    // Restarted within the grace period: same subnet.
    lab.node_mut(1).netd.restart().unwrap();
    let v = view(&lab, 1);
    assert_eq!(mgmt_subnet(&v, "node2").as_deref(), Some(s2.as_str()));
    assert_eq!(member(&v, "node2").unwrap().state, "ready");

    // A fourth node joins later: a free subnet, distinct from the others.
    start_node(&mut lab, "node4");
    wait_view(&lab, 0, "node4 ready with a subnet", |v| {
        member(v, "node4").is_some_and(|m| m.state == "ready") && mgmt_subnet(v, "node4").is_some()
    });
    assert_no_subnet_twice(&lab, &[0, 1, 2, 3]);
    // Pods on every node: no address held twice anywhere.
    let mut pods = Vec::new();
    for i in 0..4 {
        for k in 0..2 {
            pods.push((i, lab.node(i).mgmt_pod(&format!("m{i}{k}")).unwrap()));
        }
    }
    assert_no_address_twice(&lab, &[0, 1, 2, 3], 8);

    // node3 lost (killed, not restarted): gone after the grace period,
    // its subnet released.
    lab.node_mut(2).netd.kill();
    let killed = Instant::now();
    wait_view(&lab, 0, "node3 gone and its subnet released", |v| {
        member(v, "node3").is_some_and(|m| m.state == "gone") && mgmt_subnet(v, "node3").is_none()
    });
    assert!(
        killed.elapsed() >= Duration::from_millis(3500),
        "node3 marked gone well before its grace period ran out (its last heartbeat may precede the kill by up to a quarter of the grace)"
    );
    wait_view(&lab, 3, "node4 sees node3 gone", |v| {
        member(v, "node3").is_some_and(|m| m.state == "gone")
    });
    // ... and a new node can get it.
    start_node(&mut lab, "node5");
    wait_view(&lab, 0, "node5 ready with a subnet", |v| {
        mgmt_subnet(v, "node5").is_some()
    });
    assert_eq!(mgmt_subnet(&view(&lab, 4), "node5"), Some(s3));
    assert_no_subnet_twice(&lab, &[0, 1, 3, 4]);
    // node5 takes node3's released subnet and its addresses: still no
    // address twice among the live nodes.
    for k in 0..3 {
        pods.push((4, lab.node(4).mgmt_pod(&format!("m4{k}")).unwrap()));
    }
    assert_no_address_twice(&lab, &[0, 1, 3, 4], 9);

    // netctl nodes: the table and JSON.
    let out = lab.node(0).netd.netctl(&["nodes"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("node3") && table.contains("gone"), "{table}");
    assert!(table.contains("node1 (this node)"), "{table}");
    let out = lab.node(0).netd.netctl(&["nodes", "-o", "json"]).unwrap();
    let parsed: Vec<NodeMemberInfo> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(parsed.len(), 5);

    // An operator forgets node3 for good; a live node cannot be forgotten.
    let out = lab
        .node(0)
        .netd
        .netctl(&["nodes", "forget", "node2"])
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not gone"), "{err}");
    let out = lab
        .node(0)
        .netd
        .netctl(&["nodes", "forget", "node3"])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = view(&lab, 3);
    assert!(member(&v, "node3").is_none(), "{v:#?}");
    assert_eq!(v.len(), 4);
    let out = lab
        .node(0)
        .netd
        .netctl(&["nodes", "forget", "node3"])
        .unwrap();
    assert!(!out.status.success(), "forgetting twice must say so");
}
