//! Attaching to host-side veths with pinned tcx links, in a private netns.

mod common;

use common::*;
use furrow_ebpf::*;

/// (ingress, egress) program ids of a datapath.
fn ids(dp: &Datapath) -> (Vec<u64>, Vec<u64>) {
    (
        vec![dp.program_id(PROG_MGMT_FROM_POD).unwrap().into()],
        vec![dp.program_id(PROG_MGMT_TO_POD).unwrap().into()],
    )
}

/// Exactly one program per hook, through a link, running `dp`'s
/// programs, and no classic filter.
fn assert_attached(ns: &NetNs, ifname: &str, dp: &Datapath) {
    let (ingress, egress) = ns.tcx(ifname);
    for (hook, got, prog) in [
        ("ingress", ingress, PROG_MGMT_FROM_POD),
        ("egress", egress, PROG_MGMT_TO_POD),
    ] {
        assert_eq!(
            got.len(),
            1,
            "{ifname} {hook}: exactly one program: {got:?}"
        );
        assert_eq!(
            got[0].prog_id,
            dp.program_id(prog).unwrap(),
            "{ifname} {hook}"
        );
        assert_ne!(got[0].link_id, 0, "{ifname} {hook}: through a link");
    }
    assert_eq!(ns.tc_prog_ids(ifname), (vec![], vec![]), "no filter");
    assert!(ns.run(|| dp.is_port_attached(ifname)).unwrap());
    let atts = ns.run(|| dp.attachments()).unwrap();
    let mine: Vec<_> = atts.iter().filter(|a| a.ifname == ifname).collect();
    assert_eq!(mine.len(), 2, "{atts:?}");
    assert!(
        mine.iter().all(|a| a.mode == "tcx" && a.link_id != 0),
        "{atts:?}"
    );
}

fn no_filters(ns: &NetNs, ifname: &str) -> bool {
    ns.hook_prog_ids(ifname) == (vec![], vec![])
}

fn link_pins(pins: &PinDir) -> usize {
    std::fs::read_dir(pins.0.join("links"))
        .map(|d| d.count())
        .unwrap_or(0)
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
    assert_eq!(link_pins(&pins), 2, "one pinned link per hook");
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
    assert_eq!(link_pins(&pins), 0, "pins removed");
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
    // Detaching a live port that was never attached.
    node.run(|| dp.detach_port("fwport0", idx)).unwrap();
}

#[test]
fn a_plain_ingress_qdisc_does_not_matter() {
    // tcx needs no qdisc (a cls_bpf filter needed clsact).
    let (node, _pods) = node_with(&["fwport0"]);
    node.cmd("tc", &["qdisc", "add", "dev", "fwport0", "ingress"]);
    let pins = PinDir::new();
    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    let idx = node.ifindex("fwport0");
    node.run(|| dp.attach_port("fwport0", idx)).unwrap();
    assert_attached(&node, "fwport0", &dp);
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
fn reopen_adopts_links_and_identical_programs() {
    let (node, _pods) = node_with(&["fwport0", "fwport1"]);
    let pins = PinDir::new();
    let (i0, i1) = (node.ifindex("fwport0"), node.ifindex("fwport1"));

    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    assert_eq!(dp.open_report().programs_loaded.len(), PROGRAMS.len());
    node.run(|| {
        dp.attach_port("fwport0", i0).unwrap();
        dp.attach_port("fwport1", i1).unwrap();
    });
    let old = ids(&dp);
    let links = node.tcx_link_ids("fwport0");
    // Count something so we can see the counters survive.
    let frame = ipv4_udp_frame([2; 6], [4; 6], [10, 0, 0, 2], [10, 0, 0, 3], 9, &[], b"x");
    let ctx = SkbContext {
        ifindex: i0,
        ..Default::default()
    };
    let fd = dp.program_fd(PROG_MGMT_TO_POD).unwrap();
    node.run(|| test_run(fd, &frame, Some(&ctx), 5)).unwrap();
    assert_eq!(dp.port_stats(i0).unwrap().unwrap().rx_packets, 5);
    drop(dp); // netd exits (or is killed: only fds go)

    // The pinned links keep the programs attached meanwhile.
    for port in ["fwport0", "fwport1"] {
        assert_eq!(node.hook_prog_ids(port), old, "{port}: survives the drop");
    }

    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    let r = dp.open_report().clone();
    assert_eq!(r.programs_reused.len(), PROGRAMS.len(), "{r:?}");
    assert!(r.programs_loaded.is_empty(), "{r:?}");
    assert_eq!(
        (r.links_adopted, r.links_updated, r.links_removed),
        (4, 0, 0)
    );
    assert_eq!(ids(&dp), old, "identical programs are reused");
    assert_eq!(
        node.run(|| dp.pinned_ports()).unwrap(),
        vec!["fwport0", "fwport1"]
    );
    // Attached already, before any attach_port.
    assert!(node.run(|| dp.is_port_attached("fwport0")).unwrap());

    node.run(|| {
        dp.attach_port("fwport0", i0).unwrap();
        dp.attach_port("fwport1", i1).unwrap();
    });
    for port in ["fwport0", "fwport1"] {
        assert_attached(&node, port, &dp);
    }
    assert_eq!(node.tcx_link_ids("fwport0"), links, "same links");
    assert_eq!(
        dp.port_stats(i0).unwrap().unwrap().rx_packets,
        5,
        "counters kept"
    );
    let fd = dp.program_fd(PROG_MGMT_TO_POD).unwrap();
    node.run(|| test_run(fd, &frame, Some(&ctx), 2)).unwrap();
    assert_eq!(dp.port_stats(i0).unwrap().unwrap().rx_packets, 7);
}

#[test]
fn a_changed_program_is_swapped_into_the_same_links() {
    let (node, _pods) = node_with(&["fwport0", "fwport1"]);
    let pins = PinDir::new();
    let (i0, i1) = (node.ifindex("fwport0"), node.ifindex("fwport1"));
    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    node.run(|| {
        dp.attach_port("fwport0", i0).unwrap();
        dp.attach_port("fwport1", i1).unwrap();
    });
    let old = ids(&dp);
    let links = (node.tcx_link_ids("fwport0"), node.tcx_link_ids("fwport1"));
    drop(dp);

    // An "upgrade": the programs differ (another generation).
    let dp = Datapath::open(DatapathConfig::new(&pins.0).with_generation(7)).unwrap();
    let r = dp.open_report().clone();
    assert_eq!(r.programs_loaded.len(), PROGRAMS.len(), "{r:?}");
    assert_eq!(
        (r.links_adopted, r.links_updated, r.links_removed),
        (4, 4, 0)
    );
    let new = ids(&dp);
    assert_ne!(new.0, old.0);
    assert_ne!(new.1, old.1);
    // Open already swapped the programs in, through the same links.
    for port in ["fwport0", "fwport1"] {
        assert_attached(&node, port, &dp);
    }
    assert_eq!(
        (node.tcx_link_ids("fwport0"), node.tcx_link_ids("fwport1")),
        links
    );
    // Only the new programs stay pinned.
    let progs = std::fs::read_dir(pins.0.join("progs")).unwrap().count();
    assert_eq!(progs, PROGRAMS.len());
    drop(dp);

    // Back to generation 0: swapped again, and a plain reopen reuses.
    let dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    assert_eq!(dp.open_report().links_updated, 4);
    drop(dp);
    let dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    assert_eq!(dp.open_report().links_updated, 0);
    assert_attached(&node, "fwport1", &dp);
}

#[test]
fn links_of_deleted_devices_are_unpinned_on_open() {
    let (node, _pods) = node_with(&["fwport0", "fwport1"]);
    let pins = PinDir::new();
    let (i0, i1) = (node.ifindex("fwport0"), node.ifindex("fwport1"));
    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    node.run(|| {
        dp.attach_port("fwport0", i0).unwrap();
        dp.attach_port("fwport1", i1).unwrap();
    });
    drop(dp);
    node.ip("link del fwport0");
    let dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    let r = dp.open_report();
    assert_eq!((r.links_adopted, r.links_removed), (2, 2), "{r:?}");
    assert_eq!(link_pins(&pins), 2);
    assert_eq!(node.run(|| dp.pinned_ports()).unwrap(), vec!["fwport1"]);
    assert_attached(&node, "fwport1", &dp);
}

#[test]
fn an_older_netds_filter_is_migrated_to_a_link() {
    let (node, _pods) = node_with(&["fwport0"]);
    let pins = PinDir::new();
    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    let idx = node.ifindex("fwport0");
    // What an older netd left: cls_bpf filters in the fixed slot, running
    // programs that use this instance's maps (tc loads them from the pins).
    node.cmd("tc", &["qdisc", "add", "dev", "fwport0", "clsact"]);
    for (hook, prog) in [
        ("ingress", PROG_MGMT_FROM_POD),
        ("egress", PROG_MGMT_TO_POD),
    ] {
        let pin = std::fs::read_dir(pins.0.join("progs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&format!("{prog}-"))
            })
            .unwrap();
        let out = node.cmd(
            "tc",
            &[
                "filter",
                "add",
                "dev",
                "fwport0",
                hook,
                "pref",
                &FILTER_PRIORITY.to_string(),
                "handle",
                &format!("{FILTER_HANDLE:#x}"),
                "protocol",
                "all",
                "bpf",
                "object-pinned",
                pin.to_str().unwrap(),
                "da",
            ],
        );
        assert!(out.status.success(), "{out:?}");
    }
    assert_eq!(node.tc_prog_ids("fwport0"), ids(&dp));
    assert_eq!(node.run(|| dp.pinned_ports()).unwrap(), vec!["fwport0"]);
    assert!(!node.run(|| dp.is_port_attached("fwport0")).unwrap());
    let atts = node.run(|| dp.attachments()).unwrap();
    assert!(atts.iter().all(|a| a.mode == "tc"), "{atts:?}");
    assert_eq!(atts.len(), 2);

    node.run(|| dp.attach_port("fwport0", idx)).unwrap();
    assert_attached(&node, "fwport0", &dp);
}

#[test]
fn deleted_interfaces_and_reused_names() {
    let (node, pods) = node_with(&["fwport0"]);
    let pins = PinDir::new();
    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    let old_idx = node.ifindex("fwport0");
    node.run(|| dp.attach_port("fwport0", old_idx)).unwrap();

    // The pod goes away, its veth pair with it, and the links with the
    // device (defunct; their pins stay until netd detaches). The counters
    // entry stays until then too.
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

    assert_eq!(link_pins(&pins), 4, "old (defunct) and new links");

    // A late DEL of the old port must not detach the new one.
    node.run(|| dp.detach_port("fwport0", old_idx)).unwrap();
    assert_attached(&node, "fwport0", &dp);
    assert_eq!(link_pins(&pins), 2, "defunct pins removed");
    assert!(dp.port_stats(old_idx).unwrap().is_none());
    assert!(dp.port_stats(new_idx).unwrap().is_some());

    // ifindex 0: whatever has the name now (netd's orphan cleanup).
    node.run(|| dp.detach_port("fwport0", 0)).unwrap();
    assert!(no_filters(&node, "fwport0"));
    assert!(dp.port_stats(new_idx).unwrap().is_none());
}

#[test]
fn links_removed_or_taken_over_behind_our_back() {
    let (node, _pods) = node_with(&["fwport0"]);
    let pins = PinDir::new();
    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    let idx = node.ifindex("fwport0");
    node.run(|| dp.attach_port("fwport0", idx)).unwrap();

    // Someone removes the ingress pin: the link goes with it.
    let ingress_pin = std::fs::read_dir(pins.0.join("links"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("ingress-")
        })
        .unwrap();
    std::fs::remove_file(ingress_pin).unwrap();
    assert!(node.tcx("fwport0").0.is_empty());
    assert!(!node.run(|| dp.is_port_attached("fwport0")).unwrap());
    // The egress link is still ours.
    assert_eq!(node.run(|| dp.pinned_ports()).unwrap(), vec!["fwport0"]);
    node.run(|| dp.attach_port("fwport0", idx)).unwrap();
    assert_attached(&node, "fwport0", &dp);

    // Another instance takes the port over (a hook runs one datapath):
    // its links replace ours, which are detached.
    let other_pins = PinDir::new();
    let mut other = Datapath::open(DatapathConfig::new(&other_pins.0)).unwrap();
    node.run(|| other.attach_port("fwport0", idx)).unwrap();
    assert_attached(&node, "fwport0", &other);
    assert!(!node.run(|| dp.is_port_attached("fwport0")).unwrap());
    assert!(node.run(|| dp.pinned_ports()).unwrap().is_empty());
    assert_eq!(node.run(|| other.pinned_ports()).unwrap(), vec!["fwport0"]);
    // Our defunct pins go at our next open.
    drop(dp);
    let dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    assert_eq!(dp.open_report().links_removed, 2);
    assert_attached(&node, "fwport0", &other);
}

#[test]
fn instances_see_only_their_own_ports_and_leave_foreign_filters() {
    let (node, _pods) = node_with(&["fwport0", "fwport1", "fwport2"]);
    let (p1, p2) = (PinDir::new(), PinDir::new());
    let mut d1 = Datapath::open(DatapathConfig::new(&p1.0)).unwrap();
    let mut d2 = Datapath::open(DatapathConfig::new(&p2.0)).unwrap();
    let (i0, i1) = (node.ifindex("fwport0"), node.ifindex("fwport1"));

    // Someone else's filters: on a port of ours (after our links, so it
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

#[test]
fn destroy_detaches_the_links_of_other_namespaces_too() {
    let (node, _pods) = node_with(&["fwport0"]);
    let pins = PinDir::new();
    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    let i0 = node.ifindex("fwport0");
    node.run(|| dp.attach_port("fwport0", i0)).unwrap();
    // Destroyed from another netns: fwport0 is not visible there.
    NetNs::new().run(move || dp.destroy()).unwrap();
    assert!(no_filters(&node, "fwport0"));
    assert!(!pins.0.exists());
}
