//! Attaching to host-side veths with tc filters, in a private netns.

mod common;

use common::*;
use furrow_ebpf::*;

/// (ingress, egress) program ids of a datapath, as tc reports them.
fn ids(dp: &Datapath) -> (Vec<u64>, Vec<u64>) {
    (
        vec![dp.program_id(PROG_MGMT_FROM_POD).unwrap().into()],
        vec![dp.program_id(PROG_MGMT_TO_POD).unwrap().into()],
    )
}

/// Exactly our two filters, in our slot, running `dp`'s programs.
fn assert_attached(ns: &NetNs, ifname: &str, dp: &Datapath) {
    for (hook, prog) in [
        ("ingress", PROG_MGMT_FROM_POD),
        ("egress", PROG_MGMT_TO_POD),
    ] {
        assert_eq!(
            ns.tc_filters(ifname, hook)
                .into_iter()
                .filter(|f| f.kind == "bpf")
                .collect::<Vec<_>>(),
            vec![TcFilter {
                kind: "bpf".into(),
                pref: FILTER_PRIORITY.into(),
                protocol: "all".into(),
                handle: format!("{FILTER_HANDLE:#x}"),
                prog_id: dp.program_id(prog).unwrap().into(),
                direct_action: true,
            }],
            "{ifname} {hook}: exactly one filter of ours"
        );
    }
    assert!(ns.run(|| dp.is_port_attached(ifname)).unwrap());
}

fn no_filters(ns: &NetNs, ifname: &str) -> bool {
    ns.tc_prog_ids(ifname) == (vec![], vec![])
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
        for _ in 0..3 {
            dp.attach_port("fwport0", idx).unwrap();
        }
    });
    assert_attached(&node, "fwport0", &dp);
    assert!(!pins.0.join("links").exists(), "no link pins");
    assert_eq!(node.run(|| dp.pinned_ports()).unwrap(), vec!["fwport0"]);
    assert_eq!(dp.port_stats(idx).unwrap(), Some(PortStats::default()));
    assert_eq!(dp.status().maps[1].entries, Some(1));
    // Not visible from another netns.
    assert!(!NetNs::new().run(|| dp.is_port_attached("fwport0")).unwrap());
    assert!(NetNs::new().run(|| dp.pinned_ports()).unwrap().is_empty());

    node.run(|| {
        dp.detach_port("fwport0", idx).unwrap();
        dp.detach_port("fwport0", idx).unwrap();
    });
    assert!(no_filters(&node, "fwport0"));
    assert!(node.run(|| dp.pinned_ports()).unwrap().is_empty());
    assert!(!node.run(|| dp.is_port_attached("fwport0")).unwrap());
    assert_eq!(dp.port_stats(idx).unwrap(), None);
    // Detaching a port that never existed is fine too.
    node.run(|| dp.detach_port("fwnothere", 4242)).unwrap();
    node.run(|| dp.detach_port("fwnothere", 0)).unwrap();
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
    assert!(node.run(|| dp.pinned_ports()).unwrap().is_empty());
    assert_eq!(dp.all_port_stats().unwrap(), vec![]);
    assert!(no_filters(&node, "fwport0"));
    // Detaching a live port that was never attached (no clsact qdisc).
    node.run(|| dp.detach_port("fwport0", idx)).unwrap();
}

#[test]
fn a_plain_ingress_qdisc_is_refused() {
    let (node, _pods) = node_with(&["fwport0"]);
    node.cmd("tc", &["qdisc", "add", "dev", "fwport0", "ingress"]);
    let pins = PinDir::new();
    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    let idx = node.ifindex("fwport0");
    let e = node.run(|| dp.attach_port("fwport0", idx)).unwrap_err();
    assert!(
        matches!(&e, DatapathError::Tc { .. }) && e.to_string().contains("clsact"),
        "{e}"
    );
}

#[test]
fn interface_names_with_dots_work() {
    let (node, _pods) = node_with(&["fw.dot"]);
    let pins = PinDir::new();
    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    let idx = node.ifindex("fw.dot");
    node.run(|| dp.attach_port("fw.dot", idx)).unwrap();
    assert_attached(&node, "fw.dot", &dp);
    assert_eq!(node.run(|| dp.pinned_ports()).unwrap(), vec!["fw.dot"]);
    node.run(|| dp.detach_port("fw.dot", idx)).unwrap();
    assert!(no_filters(&node, "fw.dot"));
}

#[test]
fn reopen_replaces_programs_in_place() {
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

    // The filters keep the old programs attached meanwhile.
    for port in ["fwport0", "fwport1"] {
        assert_eq!(node.tc_prog_ids(port), old, "{port}: survives the drop");
    }

    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    let new = ids(&dp);
    assert_ne!(new, old, "a new load has new program ids");
    // The old programs use our pinned maps: still our ports...
    assert_eq!(
        node.run(|| dp.pinned_ports()).unwrap(),
        vec!["fwport0", "fwport1"]
    );
    // ...but they do not run this instance's programs yet.
    assert!(!node.run(|| dp.is_port_attached("fwport0")).unwrap());

    node.run(|| {
        dp.attach_port("fwport0", i0).unwrap();
        dp.attach_port("fwport1", i1).unwrap();
    });
    for port in ["fwport0", "fwport1"] {
        assert_attached(&node, port, &dp);
    }
    assert_eq!(
        dp.port_stats(i0).unwrap().unwrap().rx_packets,
        5,
        "counters kept"
    );
    // The new program counts into the same entry.
    let fd = dp.program_fd(PROG_MGMT_TO_POD).unwrap();
    node.run(|| test_run(fd, &frame, Some(&ctx), 2)).unwrap();
    assert_eq!(dp.port_stats(i0).unwrap().unwrap().rx_packets, 7);
}

#[test]
fn deleted_interfaces_and_reused_names() {
    let (node, pods) = node_with(&["fwport0"]);
    let pins = PinDir::new();
    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    let old_idx = node.ifindex("fwport0");
    node.run(|| dp.attach_port("fwport0", old_idx)).unwrap();

    // The pod goes away, its veth pair with it, and the filters with the
    // device. The counters entry stays until netd detaches.
    node.ip("link del fwport0");
    assert!(node.run(|| dp.pinned_ports()).unwrap().is_empty());
    assert!(!node.run(|| dp.is_port_attached("fwport0")).unwrap());
    assert!(dp.port_stats(old_idx).unwrap().is_some());

    // A new pod reuses the name (new ifindex).
    node.veth_to("fwport0", "peerx", &pods, "peerx");
    let new_idx = node.ifindex("fwport0");
    assert_ne!(new_idx, old_idx);
    node.run(|| dp.attach_port("fwport0", new_idx)).unwrap();
    assert_attached(&node, "fwport0", &dp);

    // A late DEL of the old port must not detach the new one.
    node.run(|| dp.detach_port("fwport0", old_idx)).unwrap();
    assert_attached(&node, "fwport0", &dp);
    assert!(dp.port_stats(old_idx).unwrap().is_none());
    assert!(dp.port_stats(new_idx).unwrap().is_some());

    // ifindex 0: whatever has the name now (netd's orphan cleanup).
    node.run(|| dp.detach_port("fwport0", 0)).unwrap();
    assert!(no_filters(&node, "fwport0"));
    assert!(dp.port_stats(new_idx).unwrap().is_none());
}

#[test]
fn filters_removed_or_replaced_behind_our_back() {
    let (node, _pods) = node_with(&["fwport0"]);
    let pins = PinDir::new();
    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    let idx = node.ifindex("fwport0");
    node.run(|| dp.attach_port("fwport0", idx)).unwrap();

    let pref = FILTER_PRIORITY.to_string();
    let handle = format!("{FILTER_HANDLE:#x}");
    let out = node.cmd(
        "tc",
        &[
            "filter", "del", "dev", "fwport0", "ingress", "pref", &pref, "handle", &handle, "bpf",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(!node.run(|| dp.is_port_attached("fwport0")).unwrap());
    // The egress filter is still ours.
    assert_eq!(node.run(|| dp.pinned_ports()).unwrap(), vec!["fwport0"]);
    node.run(|| dp.attach_port("fwport0", idx)).unwrap();
    assert_attached(&node, "fwport0", &dp);

    // Another instance takes the slot over (the slot belongs to the
    // device, not to an instance): no longer ours at all.
    let other_pins = PinDir::new();
    let mut other = Datapath::open(DatapathConfig::new(&other_pins.0)).unwrap();
    node.run(|| other.attach_port("fwport0", idx)).unwrap();
    assert_attached(&node, "fwport0", &other);
    assert!(!node.run(|| dp.is_port_attached("fwport0")).unwrap());
    assert!(node.run(|| dp.pinned_ports()).unwrap().is_empty());
    assert_eq!(node.run(|| other.pinned_ports()).unwrap(), vec!["fwport0"]);
}

#[test]
fn instances_see_only_their_own_ports_and_leave_foreign_filters() {
    let (node, _pods) = node_with(&["fwport0", "fwport1", "fwport2"]);
    let (p1, p2) = (PinDir::new(), PinDir::new());
    let mut d1 = Datapath::open(DatapathConfig::new(&p1.0)).unwrap();
    let mut d2 = Datapath::open(DatapathConfig::new(&p2.0)).unwrap();
    let (i0, i1) = (node.ifindex("fwport0"), node.ifindex("fwport1"));

    // Someone else's filters: on a port of ours (after our slot, so it
    // does not matter to our traffic) and on a device we never touch.
    for dev in ["fwport0", "fwport2"] {
        node.cmd("tc", &["qdisc", "add", "dev", dev, "clsact"]);
        let out = node.cmd(
            "tc",
            &[
                "filter", "add", "dev", dev, "ingress", "pref", "300", "protocol", "all", "u32",
                "match", "u32", "0", "0", "classid", "1:1",
            ],
        );
        assert!(out.status.success(), "{out:?}");
    }
    let foreign = |dev| {
        node.tc_filters(dev, "ingress")
            .into_iter()
            .filter(|f| f.kind == "u32" && f.pref == 300)
            .count()
    };

    node.run(|| {
        d1.attach_port("fwport0", i0).unwrap();
        d2.attach_port("fwport1", i1).unwrap();
    });
    assert_attached(&node, "fwport0", &d1);
    assert_attached(&node, "fwport1", &d2);
    assert_eq!(node.run(|| d1.pinned_ports()).unwrap(), vec!["fwport0"]);
    assert_eq!(node.run(|| d2.pinned_ports()).unwrap(), vec!["fwport1"]);
    assert!(!node.run(|| d1.is_port_attached("fwport1")).unwrap());
    assert!(!node.run(|| d2.is_port_attached("fwport0")).unwrap());

    node.run(|| d1.detach_port("fwport0", i0)).unwrap();
    assert!(no_filters(&node, "fwport0"));
    assert!(foreign("fwport0") > 0, "foreign filter kept");
    assert!(foreign("fwport2") > 0, "foreign filter kept");
    assert_attached(&node, "fwport1", &d2);
}

#[test]
fn destroy_detaches_everything() {
    let (node, _pods) = node_with(&["fwport0", "fwport1"]);
    let pins = PinDir::new();
    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    let (i0, i1) = (node.ifindex("fwport0"), node.ifindex("fwport1"));
    node.run(|| {
        dp.attach_port("fwport0", i0).unwrap();
        dp.attach_port("fwport1", i1).unwrap();
    });
    node.run(move || dp.destroy()).unwrap();
    assert!(no_filters(&node, "fwport0"));
    assert!(no_filters(&node, "fwport1"));
    assert!(!pins.0.exists());
}
