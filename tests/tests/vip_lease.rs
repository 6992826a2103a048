//! VIP election over Kubernetes Leases (`--vip-election kubernetes`):
//! netd's own kube-rs client against a stand-in for the API server's
//! Lease endpoints (tests/fixtures/lease_api.py: resourceVersions, 409 on
//! a stale replace, as the API server does) on the lab's control-plane
//! host; three nodes, an ARP-mode VIP, a client on the fabric asking who
//! has it. No real API server can run on this machine.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use furrow_tests::lease_api::{LeaseServer, NAMESPACE};
use furrow_tests::scenario::vip;
use furrow_tests::Lab;

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 101);

#[test]
fn leases_elect_one_holder_move_it_on_node_loss_and_hand_it_over_on_stop() {
    let mut lab = Lab::shared(1).unwrap();
    let dir = tempdir();
    let api = LeaseServer::start(&lab, &dir).unwrap();
    for i in 0..3 {
        let node = lab.add_node_with(&format!("node{}", i + 1), false).unwrap();
        api.configure(&mut node.netd);
        // 2 s Leases, as the DaemonSet has: a loaded CI machine can hold
        // a 1 s Lease's renewal past its bound.
        node.netd
            .extra_args
            .extend(["--vip-takeover-ms", "2000"].map(String::from));
        node.netd.start().unwrap();
    }
    lab.node(0)
        .apply(&vip::arp_vip_yaml("lease", VIP, ""))
        .unwrap();
    let first = vip::single_holder(&lab, VIP.into(), None, Duration::from_secs(15)).unwrap();
    let first_name = lab.node(first).name.clone();
    let lease = api
        .wait_holder("lease", Some(&first_name), Duration::from_secs(5))
        .unwrap();
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 2, "{lease}");
    assert_eq!(lease["metadata"]["namespace"], NAMESPACE);
    // Renewed while held: the resourceVersion moves on.
    let rv = lease["metadata"]["resourceVersion"].clone();
    std::thread::sleep(Duration::from_millis(800));
    let later = api
        .wait_holder("lease", Some(&first_name), Duration::from_secs(1))
        .unwrap();
    assert_ne!(later["metadata"]["resourceVersion"], rv, "not renewed");
    // Every node's view follows the Lease (each reads it every half second).
    for i in 0..3 {
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            let v: Vec<furrow_api::wire::VipInfo> =
                lab.node(i).netd.client().get("/v1/vips").unwrap();
            assert_eq!(v[0].backend, "kubernetes-lease");
            if v[0].holder.as_deref() == Some(first_name.as_str()) && v[0].heartbeat_error.is_none()
            {
                break;
            }
            assert!(
                Instant::now() < end,
                "node{} sees holder {:?} ({:?}), the Lease says {first_name}",
                i + 1,
                v[0].holder,
                v[0].heartbeat_error
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // Node loss: netd killed and the uplink cut at once. The Lease expires
    // (2 s after the others last saw it change) and one of them takes it.
    let lost = Instant::now();
    lab.node_mut(first).netd.kill();
    lab.node(first)
        .ns
        .ip(&["link", "set", "uplink0", "down"])
        .unwrap();
    let second =
        vip::single_holder(&lab, VIP.into(), Some(first), Duration::from_secs(15)).unwrap();
    eprintln!("moved after node loss in {:?}", lost.elapsed());
    let second_name = lab.node(second).name.clone();
    let lease = api
        .wait_holder("lease", Some(&second_name), Duration::from_secs(2))
        .unwrap();
    assert!(
        lease["spec"]["leaseTransitions"].as_u64().unwrap() >= 1,
        "{lease}"
    );

    // Graceful stop: the holder releases the Lease after its address
    // went, and the last node takes it without waiting for expiry.
    let stopped = Instant::now();
    assert!(lab.node_mut(second).netd.stop().unwrap());
    assert!(!vip::has_address(&lab, second, VIP.into()));
    let third = (0..3).find(|i| *i != first && *i != second).unwrap();
    let third_name = lab.node(third).name.clone();
    api.wait_holder("lease", Some(&third_name), Duration::from_secs(5))
        .unwrap();
    assert_eq!(
        vip::single_holder(&lab, VIP.into(), Some(second), Duration::from_secs(5)).unwrap(),
        third
    );
    let handover = stopped.elapsed();
    eprintln!("handed over on SIGTERM in {handover:?}");

    // Deleting the VirtualIP removes its Lease.
    let out = lab
        .node(third)
        .netd
        .netctl(&["delete", "virtualip", "lease"])
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let end = Instant::now() + Duration::from_secs(5);
    while api.lease("lease").is_some() {
        assert!(Instant::now() < end, "the deleted VIP's Lease stayed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!vip::has_address(&lab, third, VIP.into()));
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(furrow_tests::names::unique("lease"));
    std::fs::create_dir_all(&d).unwrap();
    d
}
