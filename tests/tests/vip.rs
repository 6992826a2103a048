//! Floating VIPs in ARP mode: three nodes on a real 3-member etcd, a
//! client on the fabric asking who has the VIP.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use furrow_tests::scenario::vip;
use furrow_tests::Lab;

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);

fn vip_yaml(extra: &str) -> String {
    vip::arp_vip_yaml("cp", VIP, extra)
}

fn three_nodes() -> Lab {
    vip::nodes_on_etcd(3).unwrap()
}

fn has_vip(lab: &Lab, i: usize) -> bool {
    vip::has_address(lab, i, VIP.into())
}

/// Waits until exactly one node other than `not` holds the VIP and is
/// the only one answering ARP for it; returns that node.
fn single_holder(lab: &Lab, not: Option<usize>, timeout: Duration) -> anyhow::Result<usize> {
    vip::single_holder(lab, VIP.into(), not, timeout)
}

fn vip_view(lab: &Lab, i: usize) -> Vec<furrow_api::wire::VipInfo> {
    lab.node(i).netd.client().get("/v1/vips").unwrap()
}

#[test]
fn the_vip_answers_from_one_node_and_moves_on_node_loss_and_graceful_stop() {
    let mut lab = three_nodes();
    lab.node(0).apply(&vip_yaml("")).unwrap();
    let first = single_holder(&lab, None, Duration::from_secs(15)).unwrap();
    // Every node agrees on the holder.
    for i in 0..3 {
        let v = vip_view(&lab, i);
        assert_eq!(v[0].holder.as_deref(), Some(lab.node(first).name.as_str()));
        let want = if i == first { "holder" } else { "standby" };
        assert_eq!(v[0].role, want, "node{}: {:?}", i + 1, v[0]);
        // The holder's address is fenced in the kernel too.
        assert_eq!(
            v[0].fence
                .as_deref()
                .is_some_and(|f| f.starts_with("kernel fence in")),
            i == first,
            "node{}: {:?}",
            i + 1,
            v[0]
        );
    }

    // Node loss: netd killed and the uplink cut at the same moment.
    lab.node_mut(first).netd.kill();
    lab.node(first)
        .ns
        .ip(&["link", "set", "uplink0", "down"])
        .unwrap();
    let second = single_holder(&lab, Some(first), Duration::from_secs(15)).unwrap();
    let v = vip_view(&lab, second);
    assert_eq!(v[0].role, "holder");
    assert!(v[0].epoch.unwrap() >= 2, "{:?}", v[0]);

    // The lost node comes back: its restarted netd removes the stale
    // address before anything else and does not take the VIP back.
    lab.node(first)
        .ns
        .ip(&["link", "set", "uplink0", "up"])
        .unwrap();
    lab.node_mut(first).netd.start().unwrap();
    assert!(
        !has_vip(&lab, first),
        "stale VIP address survived a restart"
    );
    assert_eq!(
        single_holder(&lab, None, Duration::from_secs(5)).unwrap(),
        second
    );

    // Graceful stop: the holder hands over on SIGTERM.
    assert!(lab.node_mut(second).netd.stop().unwrap());
    assert!(!has_vip(&lab, second), "SIGTERM left the address behind");
    let third = single_holder(&lab, Some(second), Duration::from_secs(15)).unwrap();
    assert_ne!(third, second);
}

#[test]
fn a_failing_health_check_moves_the_vip_and_bad_input_is_refused() {
    let lab = three_nodes();
    // Each node's check looks for a file naming it; removing the holder's
    // makes it step down.
    let dir = std::env::temp_dir().join(furrow_tests::names::unique("vip-health"));
    std::fs::create_dir_all(&dir).unwrap();
    for n in &lab.nodes {
        std::fs::write(dir.join(&n.name), "ok").unwrap();
    }
    // The check runs inside each node's namespace: it passes while a file
    // named after one of the node's uplink addresses exists.
    let check = format!(
        "  healthCheck:\n    command: [sh, -c, 'for a in $(ip -4 -o addr show dev uplink0 | awk ''{{print $4}}''); do test -e {}/${{a%/*}} && exit 0; done; exit 1']\n    intervalMs: 200\n    timeoutMs: 150\n    failureThreshold: 2\n",
        dir.display()
    );
    for (i, n) in lab.nodes.iter().enumerate() {
        std::fs::rename(
            dir.join(&n.name),
            dir.join(lab.node(i).uplink_ip.to_string()),
        )
        .unwrap();
    }
    lab.node(0).apply(&vip_yaml(&check)).unwrap();
    let first = single_holder(&lab, None, Duration::from_secs(15)).unwrap();
    std::fs::remove_file(dir.join(lab.node(first).uplink_ip.to_string())).unwrap();
    let second = single_holder(&lab, Some(first), Duration::from_secs(15)).unwrap();
    let v = vip_view(&lab, first);
    assert_eq!(v[0].role, "unhealthy", "{:?}", v[0]);
    assert!(!v[0].healthy);
    assert_ne!(second, first);

    // A duplicate address is refused, naming the field.
    let dup = vip_yaml("").replace("name: cp", "name: cp2");
    let err = lab.node(1).apply(&dup).unwrap_err().to_string();
    assert!(err.contains("spec.address") && err.contains("cp"), "{err}");
    // An address outside every subnet of the interface: a visible problem,
    // and the first VIP keeps running.
    lab.node(1)
        .apply(
            &vip_yaml("")
                .replace("name: cp", "name: far")
                .replace(&VIP.to_string(), "10.99.0.1"),
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let v = vip_view(&lab, 1);
    let far = v.iter().find(|x| x.name == "far").unwrap();
    assert_eq!(far.role, "problem");
    assert!(
        far.problem
            .as_deref()
            .unwrap_or("")
            .contains("outside every subnet"),
        "{far:?}"
    );
    assert!(far.holder.is_none());
    assert_eq!(
        single_holder(&lab, None, Duration::from_secs(2)).unwrap(),
        second
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn vip_only_mode_holds_the_vip_without_touching_pod_networking() {
    // One node on its embedded store (the local backend): netd as the
    // control-plane VIP's keeper before Kubernetes and its CNI exist.
    let mut lab = Lab::new().unwrap();
    let node = lab.add_node_with("node1", false).unwrap();
    node.netd.extra_args.push("--vip-only".into());
    node.netd.spawn().unwrap();
    let client = node.netd.client();
    let t0 = Instant::now();
    while client.get::<serde_json::Value>("/v1/vips").is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "netd --vip-only never served its API:\n{}",
            lab.node(0).netd.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    lab.node(0).apply(&vip_yaml("")).unwrap();
    assert_eq!(
        single_holder(&lab, None, Duration::from_secs(15)).unwrap(),
        0
    );
    let v = vip_view(&lab, 0);
    assert_eq!(v[0].backend, "local");
    let out = lab.node(0).netd.netctl(&["vip"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&VIP.to_string()) && text.contains("holder"),
        "{text}"
    );

    // Nothing of the datapath: no BPF pins, no nftables table, and pods
    // are refused with a reason.
    assert!(
        !lab.node(0).netd.bpf_dir.exists(),
        "--vip-only pinned BPF objects"
    );
    let tables = lab.node(0).ns.run("nft", &["list", "tables"]).unwrap();
    assert!(!tables.contains("furrow"), "{tables}");
    let cfg = lab.node(0).mgmt_config("1.1.0");
    let err = lab.node(0).add_pod("p", &cfg).unwrap_err().to_string();
    assert!(err.contains("--vip-only"), "{err}");
    let ready: furrow_api::wire::ReadyResponse =
        lab.node(0).netd.client().get("/v1/cni/status").unwrap();
    assert!(
        !ready.ready && ready.reason.contains("--vip-only"),
        "{ready:?}"
    );

    // SIGTERM still gives the address up.
    assert!(lab.node_mut(0).netd.stop().unwrap());
    assert!(!has_vip(&lab, 0));
}
