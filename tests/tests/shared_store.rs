//! Nodes sharing their state through etcd.

use furrow_tests::Lab;

#[test]
fn nodes_on_one_etcd_lease_distinct_subnets_and_share_resources() {
    let mut lab = Lab::shared(1).unwrap();
    lab.add_node("node1").unwrap();
    lab.add_node("node2").unwrap();
    let a = lab.node(0).mgmt_pod("a").unwrap();
    let b = lab.node(1).mgmt_pod("b").unwrap();
    let (sa, sb) = (a.ip().octets()[2], b.ip().octets()[2]);
    assert_ne!(sa, sb, "both nodes got subnet 10.52.{sa}.0/24");
    // A resource applied through node1 is in effect on node2.
    lab.node(0)
        .apply("apiVersion: network.furrow.io/v1alpha1\nkind: ClusterNetwork\nmetadata: {name: shared}\nspec: {}\n")
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if lab.node(1).cluster_network_info("shared").is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node2 never saw the ClusterNetwork applied on node1"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    lab.node(0).del_pod(&a).expect_ok("DEL");
    lab.node(1).del_pod(&b).expect_ok("DEL");
}
