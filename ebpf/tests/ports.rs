//! Attaching to host-side veths with pinned tcx links, in a private netns.

mod common;

use aya::programs::{SchedClassifier, TcAttachType};
use common::*;
use furrow_ebpf::*;

/// Ids of the tcx programs on `ifname` (ingress, egress), as the kernel sees them.
fn tcx_progs(ns: &NetNs, ifname: &str) -> (Vec<u32>, Vec<u32>) {
    ns.run(|| {
        let q = |t| {
            SchedClassifier::query_tcx(ifname, t)
                .expect("query_tcx")
                .1
                .iter()
                .map(|p| p.id())
                .collect::<Vec<_>>()
        };
        (q(TcAttachType::Ingress), q(TcAttachType::Egress))
    })
}

fn ids(dp: &Datapath) -> (Vec<u32>, Vec<u32>) {
    (
        vec![dp.program_id(PROG_MGMT_FROM_POD).unwrap()],
        vec![dp.program_id(PROG_MGMT_TO_POD).unwrap()],
    )
}

/// A node netns holding host veths `names` (peers in a second netns).
fn node_with(names: &[&str]) -> (NetNs, NetNs) {
    let node = NetNs::new();
    let pods = NetNs::new();
    for (i, n) in names.iter().enumerate() {
        node.veth_to(n, &format!("peer{i}"), &pods, &format!("peer{i}"));
    }
    (node, pods)
}

#[test]
fn attach_and_detach_are_idempotent() {
    let (node, _pods) = node_with(&["fwport0"]);
    let pins = PinDir::new();
    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    let idx = node.ifindex("fwport0");

    node.run(|| {
        dp.attach_port("fwport0", idx).unwrap();
        dp.attach_port("fwport0", idx).unwrap();
    });
    assert_eq!(
        tcx_progs(&node, "fwport0"),
        ids(&dp),
        "exactly one program per hook"
    );
    assert!(pins.0.join("links/fwport0:ingress").exists());
    assert!(pins.0.join("links/fwport0:egress").exists());
    assert_eq!(dp.pinned_ports().unwrap(), vec!["fwport0"]);
    assert!(node.run(|| dp.is_port_attached("fwport0")).unwrap());
    assert_eq!(dp.port_stats(idx).unwrap(), Some(PortStats::default()));
    assert_eq!(dp.status().maps[1].entries, Some(1));
    // Not attached anywhere else / not visible from another netns.
    assert!(!dp.is_port_attached("fwport0").unwrap());

    node.run(|| {
        dp.detach_port("fwport0", idx).unwrap();
        dp.detach_port("fwport0", idx).unwrap();
    });
    assert_eq!(tcx_progs(&node, "fwport0"), (vec![], vec![]));
    assert!(dp.pinned_ports().unwrap().is_empty());
    assert!(!node.run(|| dp.is_port_attached("fwport0")).unwrap());
    assert_eq!(dp.port_stats(idx).unwrap(), None);
    // Detaching a port that never existed is fine too.
    node.run(|| dp.detach_port("fwnothere", 4242)).unwrap();
}

#[test]
fn attach_checks_the_interface() {
    let (node, _pods) = node_with(&["fwport0"]);
    let pins = PinDir::new();
    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    let idx = node.ifindex("fwport0");
    node.run(|| {
        let e = dp.attach_port("fwmissing", 77).unwrap_err();
        assert!(matches!(e, DatapathError::InterfaceNotFound { .. }), "{e}");
        let e = dp.attach_port("fwport0", idx + 100).unwrap_err();
        assert!(
            matches!(e, DatapathError::IfindexMismatch { actual, .. } if actual == idx),
            "{e}"
        );
        let e = dp.attach_port("../maps", idx).unwrap_err();
        assert!(matches!(e, DatapathError::InvalidIfname(_)), "{e}");
    });
    assert!(dp.pinned_ports().unwrap().is_empty());
    assert_eq!(dp.all_port_stats().unwrap(), vec![]);
    assert_eq!(tcx_progs(&node, "fwport0"), (vec![], vec![]));
}

#[test]
fn interface_names_with_dots_are_pinned() {
    let (node, _pods) = node_with(&["fw.dot"]);
    let pins = PinDir::new();
    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    let idx = node.ifindex("fw.dot");
    node.run(|| dp.attach_port("fw.dot", idx)).unwrap();
    assert_eq!(dp.pinned_ports().unwrap(), vec!["fw.dot"]);
    assert!(node.run(|| dp.is_port_attached("fw.dot")).unwrap());
    node.run(|| dp.detach_port("fw.dot", idx)).unwrap();
    assert_eq!(tcx_progs(&node, "fw.dot"), (vec![], vec![]));
}

#[test]
fn reopen_replaces_programs_without_a_second_attachment() {
    let (node, _pods) = node_with(&["fwport0", "fwport1"]);
    let pins = PinDir::new();
    let (i0, i1) = (node.ifindex("fwport0"), node.ifindex("fwport1"));

    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    node.run(|| {
        dp.attach_port("fwport0", i0).unwrap();
        dp.attach_port("fwport1", i1).unwrap();
    });
    let old = ids(&dp);
    // Count something so we can see the counters survive.
    let frame = ipv4_udp_frame([2; 6], [4; 6], [10, 0, 0, 2], [10, 0, 0, 3], 9, &[], b"x");
    let ctx = SkbContext {
        ifindex: i0,
        ..Default::default()
    };
    let fd = dp.program_fd(PROG_MGMT_TO_POD).unwrap();
    node.run(|| test_run(fd, &frame, Some(&ctx), 5)).unwrap();
    assert_eq!(dp.port_stats(i0).unwrap().unwrap().rx_packets, 5);
    drop(dp); // netd exits

    // The pinned links keep the old programs attached meanwhile.
    assert_eq!(tcx_progs(&node, "fwport0"), old);

    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    let new = ids(&dp);
    assert_ne!(new, old, "a new load has new program ids");
    assert_eq!(dp.pinned_ports().unwrap(), vec!["fwport0", "fwport1"]);
    assert!(node.run(|| dp.is_port_attached("fwport0")).unwrap());

    let (rev_before, _) =
        node.run(|| SchedClassifier::query_tcx("fwport0", TcAttachType::Ingress).unwrap());
    node.run(|| {
        dp.attach_port("fwport0", i0).unwrap();
        dp.attach_port("fwport1", i1).unwrap();
    });
    for port in ["fwport0", "fwport1"] {
        assert_eq!(tcx_progs(&node, port), new, "{port}: replaced in place");
    }
    let (rev_after, _) =
        node.run(|| SchedClassifier::query_tcx("fwport0", TcAttachType::Ingress).unwrap());
    assert!(rev_after > rev_before, "link update bumps the tcx revision");
    assert_eq!(
        dp.port_stats(i0).unwrap().unwrap().rx_packets,
        5,
        "counters kept"
    );
}

#[test]
fn stale_pins_of_deleted_interfaces_are_replaced() {
    let (node, pods) = node_with(&["fwport0"]);
    let pins = PinDir::new();
    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    let old_idx = node.ifindex("fwport0");
    node.run(|| dp.attach_port("fwport0", old_idx)).unwrap();

    // The pod goes away: its veth pair with it. The pins stay until netd
    // reconciles.
    node.ip("link del fwport0");
    assert_eq!(dp.pinned_ports().unwrap(), vec!["fwport0"]);
    assert!(!node.run(|| dp.is_port_attached("fwport0")).unwrap());

    // A new pod reuses the name (new ifindex).
    node.veth_to("fwport0", "peerx", &pods, "peerx");
    let new_idx = node.ifindex("fwport0");
    assert_ne!(new_idx, old_idx);
    node.run(|| dp.attach_port("fwport0", new_idx)).unwrap();
    assert_eq!(tcx_progs(&node, "fwport0"), ids(&dp));
    assert!(node.run(|| dp.is_port_attached("fwport0")).unwrap());

    // A late DEL of the old port must not detach the new one.
    node.run(|| dp.detach_port("fwport0", old_idx)).unwrap();
    assert!(node.run(|| dp.is_port_attached("fwport0")).unwrap());
    assert!(dp.port_stats(new_idx).unwrap().is_some());

    node.run(|| dp.detach_port("fwport0", new_idx)).unwrap();
    assert_eq!(tcx_progs(&node, "fwport0"), (vec![], vec![]));
}

#[test]
fn destroy_detaches_everything() {
    let (node, _pods) = node_with(&["fwport0"]);
    let pins = PinDir::new();
    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    let idx = node.ifindex("fwport0");
    node.run(|| dp.attach_port("fwport0", idx)).unwrap();
    dp.destroy().unwrap();
    assert_eq!(tcx_progs(&node, "fwport0"), (vec![], vec![]));
    assert!(!pins.0.exists());
}
