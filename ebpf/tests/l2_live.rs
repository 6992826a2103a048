//! The 802.1Q switch carrying real traffic in the two-node lab
//! (common/lab.rs): a fabric bridge, two nodes each with its own Datapath
//! and pin directory, VMs in netns. Every VM uses the same subnet, so only
//! the switch keeps VLANs apart.

mod common;

use std::{
    thread::sleep,
    time::{Duration, Instant},
};

use common::{l2::*, lab::*, *};
use furrow_ebpf::*;

/// Payload marker of frames a test sends by hand (ethertype 0x88b5).
const MARKER: &[u8] = b"furrow-l2-marker";

fn marker_frame(src: [u8; 6]) -> Vec<u8> {
    let mut f = eth_header(BCAST, src, 0x88b5);
    f.extend_from_slice(MARKER);
    f.resize(60, 0);
    f
}

fn has_marker(s: &Seen) -> bool {
    s.frame.windows(MARKER.len()).any(|w| w == MARKER)
}

#[test]
fn same_vlan_talks_within_and_across_nodes_and_vlans_are_isolated() {
    let mut lab = Lab::new(2);
    let a1 = lab.vm(0, "a1", access(100), Some(11), None);
    let a2 = lab.vm(0, "a2", access(100), Some(12), None);
    let a3 = lab.vm(1, "a3", access(100), Some(13), None);
    let b1 = lab.vm(0, "b1", access(200), Some(21), None);
    let b2 = lab.vm(1, "b2", access(200), Some(22), None);
    let u1 = lab.vm(0, "u1", L2Mode::Untagged, Some(31), None);
    let u2 = lab.vm(1, "u2", L2Mode::Untagged, Some(32), None);

    // Same VLAN: one node, and across the fabric (tagged on the wire).
    let wire = RawSock::open(&lab.fabric, "fab0");
    assert!(ping(&a1, &ip(12)), "VLAN 100 on one node");
    assert!(ping(&a1, &ip(13)), "VLAN 100 across nodes");
    assert!(ping(&b2, &ip(21)), "VLAN 200 across nodes");
    assert!(ping(&u1, &ip(32)), "untagged across nodes");
    let seen = wire.collect(Duration::from_millis(200));
    let icmp_from = |mac: [u8; 6]| {
        seen.iter()
            .filter(|s| s.src() == mac && s.ethertype() == 0x0800)
            .map(|s| s.vid())
            .collect::<Vec<_>>()
    };
    let a1_on_wire = icmp_from(a1.mac);
    assert!(!a1_on_wire.is_empty(), "a1's pings crossed the fabric");
    assert!(a1_on_wire.iter().all(|v| *v == Some(100)), "{a1_on_wire:?}");
    let u1_on_wire = icmp_from(u1.mac);
    assert!(!u1_on_wire.is_empty());
    assert!(
        u1_on_wire.iter().all(|v| v.is_none()),
        "untagged on the wire: {u1_on_wire:?}"
    );

    // Different VLANs: no ping and no ARP resolution, both ways, on one
    // node and across nodes; untagged and tagged apart too.
    for (from, to, what) in [
        (&a1, 21, "100 -> 200, same node"),
        (&a1, 22, "100 -> 200, other node"),
        (&b1, 11, "200 -> 100, same node"),
        (&b2, 13, "200 -> 100, other node"),
        (&a1, 31, "100 -> untagged"),
        (&u1, 11, "untagged -> 100"),
        (&u2, 22, "untagged -> 200, other node"),
    ] {
        assert!(!ping_ns(&from.ns, &ip(to)), "{what}: ping must fail");
        assert_eq!(
            neigh_mac(from, &ip(to)),
            None,
            "{what}: ARP must not resolve"
        );
    }
    // Positive control for the ARP check.
    assert!(neigh_mac(&a1, &ip(13)).is_some());

    let n0 = &lab.nodes[0].dp;
    let v100 = n0.vlan_stats_of(CN, 100).unwrap().unwrap();
    assert!(
        v100.unicast_packets > 0 && v100.flood_packets > 0,
        "{v100:?}"
    );
    let sa2 = n0.port_stats(a2.host_idx).unwrap().unwrap();
    assert!(sa2.rx_packets > 0 && sa2.tx_packets > 0, "{sa2:?}");
    let learned: Vec<_> = n0
        .fdb_entries()
        .unwrap()
        .into_iter()
        .filter(|e| e.mac == a3.mac)
        .collect();
    assert_eq!(learned.len(), 1, "{learned:?}");
    assert_eq!(
        (learned[0].vid, learned[0].ifindex),
        (100, lab.nodes[0].uplink)
    );
}

#[test]
fn trunk_port_carries_exactly_its_vlans_tagged() {
    let mut lab = Lab::new(2);
    let trunk = VlanSet::from_ranges([100..=100, 200..=200]).unwrap();
    let t1 = lab.vm(0, "t1", L2Mode::Trunk { allowed: trunk }, None, None);
    let a1 = lab.vm(0, "a1", access(100), Some(11), None);
    let a2 = lab.vm(0, "a2", access(100), Some(12), None);
    let _a3 = lab.vm(1, "a3", access(100), Some(13), None);
    let b1 = lab.vm(0, "b1", access(200), Some(21), None);
    let b2 = lab.vm(1, "b2", access(200), Some(22), None);
    let u1 = lab.vm(0, "u1", L2Mode::Untagged, Some(31), None);
    let _u2 = lab.vm(1, "u2", L2Mode::Untagged, Some(32), None);
    let c2 = lab.vm(1, "c2", access(300), Some(41), None);
    let sock = RawSock::open(&t1.ns, "eth0");

    // Broadcasts on every VLAN: 100 (local), 200 (from node 2), untagged,
    // and 300 (only node 2 has it: the fabric still carries it to node 1).
    let senders: Vec<(&Vm, [u8; 6])> =
        vec![(&a1, a1.mac), (&b2, b2.mac), (&u1, u1.mac), (&c2, c2.mac)];
    for (vm, mac) in &senders {
        RawSock::open(&vm.ns, "eth0").send(&marker_frame(*mac));
    }
    assert!(ping(&a1, &ip(13)));
    assert!(ping(&b2, &ip(21)));
    let seen: Vec<Seen> = sock.collect(Duration::from_millis(300));
    let markers: Vec<(Option<u16>, [u8; 6])> = seen
        .iter()
        .filter(|s| has_marker(s))
        .map(|s| (s.vid(), s.src()))
        .collect();
    assert!(markers.contains(&(Some(100), a1.mac)), "{markers:?}");
    assert!(markers.contains(&(Some(200), b2.mac)), "{markers:?}");
    assert_eq!(
        markers.len(),
        2,
        "nothing untagged or from VLAN 300: {markers:?}"
    );
    for s in &seen {
        assert!(
            matches!(s.vid(), Some(100) | Some(200)),
            "trunk saw a frame outside its VLANs: {:?} from {:02x?}",
            s.tci,
            s.src()
        );
    }

    // The trunk VM talks on both VLANs, tagged.
    for (vid, target, owner) in [(100u16, 12u8, &a2), (200, 21, &b1)] {
        let req = with_tag(
            &arp(
                BCAST,
                t1.mac,
                1,
                [10, 50, 0, 50],
                [0; 6],
                [10, 50, 0, target],
            ),
            TPID_8021Q,
            vid,
        );
        sock.send(&req);
        let reply = sock.wait_for(Duration::from_secs(2), |s| {
            s.ethertype() == 0x0806 && s.src() == owner.mac && s.dst() == t1.mac
        });
        let reply = reply.unwrap_or_else(|| panic!("no ARP reply from .{target} on VLAN {vid}"));
        assert_eq!(reply.vid(), Some(vid));
    }
    // Other tags and untagged frames from the trunk VM are dropped.
    let before = lab.nodes[0].dp.port_stats(t1.host_idx).unwrap().unwrap();
    let probe = arp(BCAST, t1.mac, 1, [10, 50, 0, 50], [0; 6], [10, 50, 0, 31]);
    sock.send(&probe);
    sock.send(&with_tag(&probe, TPID_8021Q, 300));
    let u1_sock = RawSock::open(&u1.ns, "eth0");
    assert!(u1_sock
        .wait_for(Duration::from_millis(300), |s| s.src() == t1.mac)
        .is_none());
    let after = lab.nodes[0].dp.port_stats(t1.host_idx).unwrap().unwrap();
    assert_eq!(after.drop_vlan - before.drop_vlan, 2);
}

#[test]
fn broadcast_stays_in_its_vlan_and_unused_vlans_are_dropped_at_the_uplink() {
    let mut lab = Lab::new(2);
    let a1 = lab.vm(0, "a1", access(100), Some(11), None);
    let a2 = lab.vm(0, "a2", access(100), Some(12), None);
    let a3 = lab.vm(1, "a3", access(100), Some(13), None);
    let b1 = lab.vm(0, "b1", access(200), Some(21), None);
    let b2 = lab.vm(1, "b2", access(200), Some(22), None);
    let u1 = lab.vm(0, "u1", L2Mode::Untagged, Some(31), None);
    let u2 = lab.vm(1, "u2", L2Mode::Untagged, Some(32), None);
    let all = [&a1, &a2, &a3, &b1, &b2, &u1, &u2];
    let socks: Vec<RawSock> = all.iter().map(|v| RawSock::open(&v.ns, "eth0")).collect();

    socks[0].send(&marker_frame(a1.mac));
    let seen: Vec<Option<Seen>> = socks
        .iter()
        .map(|s| s.wait_for(Duration::from_millis(300), has_marker))
        .collect();
    let got: Vec<bool> = seen.iter().map(|s| s.is_some()).collect();
    assert_eq!(
        got,
        vec![false, true, true, false, false, false, false],
        "VLAN 100 broadcast seen by (a1 a2 a3 b1 b2 u1 u2): {seen:?}"
    );
    // Access ports get it untagged.
    assert!(seen.iter().flatten().all(|s| s.tci.is_none()), "{seen:?}");

    // A VLAN no port uses, arriving from the fabric: dropped at both
    // uplinks and counted.
    let before = [lab.uplink_stats(0).drop_vlan, lab.uplink_stats(1).drop_vlan];
    let fab = RawSock::open(&lab.fabric, "br0");
    let mut rogue = marker_frame([0x02, 0x77, 0, 0, 0, 1]);
    rogue = with_tag(&rogue, TPID_8021Q, 300);
    for _ in 0..3 {
        fab.send(&rogue);
    }
    for s in &socks {
        assert!(s.wait_for(Duration::from_millis(200), has_marker).is_none());
    }
    let after = [lab.uplink_stats(0).drop_vlan, lab.uplink_stats(1).drop_vlan];
    assert_eq!([after[0] - before[0], after[1] - before[1]], [3, 3]);
    // So is a VLAN 200 frame once node 2 no longer has VLAN 200.
    lab.remove_vm(1, b2);
    fab.send(&with_tag(
        &marker_frame([0x02, 0x77, 0, 0, 0, 2]),
        TPID_8021Q,
        200,
    ));
    assert!(
        socks[3]
            .wait_for(Duration::from_millis(300), has_marker)
            .is_some(),
        "b1 still has 200"
    );
    assert_eq!(lab.uplink_stats(1).drop_vlan - after[1], 1);
    assert_eq!(lab.uplink_stats(0).drop_vlan, after[0]);
}

#[test]
fn the_node_stack_shares_vlan0_with_local_and_remote_vms() {
    let mut lab = Lab::new(2);
    for (i, node) in lab.nodes.iter().enumerate() {
        node.ns
            .ip(&format!("addr add {SUBNET}.{}/24 dev upl", i + 1));
    }
    let u1 = lab.vm(0, "u1", L2Mode::Untagged, Some(31), None);
    let a1 = lab.vm(0, "a1", access(100), Some(11), None);
    let _u2 = lab.vm(1, "u2", L2Mode::Untagged, Some(32), None);

    assert!(
        ping_ns(&lab.nodes[0].ns, &ip(2)) || ping_ns(&lab.nodes[0].ns, &ip(2)),
        "node 1 -> node 2"
    );
    assert!(ping(&u1, &ip(1)), "VM -> its own node");
    assert!(ping(&u1, &ip(2)), "VM -> the other node");
    assert!(ping_ns(&lab.nodes[0].ns, &ip(31)), "node -> its own VM");
    assert!(
        ping_ns(&lab.nodes[1].ns, &ip(31)),
        "node -> a VM on another node"
    );
    assert!(ping(&u1, &ip(32)), "VM -> VM");
    assert!(!ping_ns(&a1.ns, &ip(1)), "VLAN 100 does not reach the node");
    let v0 = lab.nodes[0].dp.vlan_stats_of(CN, 0).unwrap().unwrap();
    assert!(v0.to_host_packets > 0 && v0.from_host_packets > 0, "{v0:?}");

    // Without to_host the node's stack is off VLAN 0 for local VMs...
    lab.nodes[0].to_host = false;
    lab.sync_vlans(0);
    lab.nodes[0].ns.ip("neigh flush all");
    u1.ns.ip("neigh flush all");
    assert!(!ping_ns(&u1.ns, &ip(1)), "VM -> own node without to_host");
    // ...but its own traffic on the uplink is untouched.
    assert!(ping_ns(&lab.nodes[0].ns, &ip(2)), "node 1 -> node 2");
    assert_eq!(lab.nodes[0].uplink_mac, lab.nodes[0].ns.mac("upl"));
}

#[test]
fn a_migrated_vm_is_reachable_at_once_after_its_gratuitous_arp() {
    let mut lab = Lab::new(2);
    let mig_mac = [0x02, 0x4d, 0x49, 0x47, 0, 0x40];
    let old = lab.vm(0, "mig", access(100), Some(40), Some(mig_mac));
    lab.nodes[0]
        .dp
        .fdb_add_static(CN, 100, mig_mac, old.host_idx)
        .unwrap();
    let near = lab.vm(0, "near", access(100), Some(11), None);
    let far = lab.vm(1, "far", access(100), Some(13), None);
    assert!(
        ping(&near, &ip(40)) && ping(&far, &ip(40)),
        "before the migration"
    );
    assert_eq!(
        neigh_mac(&near, &ip(40)).as_deref(),
        Some("02:4d:49:47:00:40")
    );

    // The target VM comes up on node 2 (paused: silent), netd installs
    // its static entry there; the source goes away on node 1.
    let new = lab.vm(1, "mig2", access(100), Some(40), Some(mig_mac));
    lab.nodes[1]
        .dp
        .fdb_add_static(CN, 100, mig_mac, new.host_idx)
        .unwrap();
    let old_idx = old.host_idx;
    lab.remove_vm(0, old);
    assert!(
        lab.nodes[0]
            .dp
            .fdb_entries()
            .unwrap()
            .iter()
            .all(|e| e.ifindex != old_idx && e.mac != mig_mac),
        "old port's entries flushed"
    );
    // Resumed, the VM announces itself once.
    RawSock::open(&new.ns, "eth0").send(&garp(mig_mac, [10, 50, 0, 40]));

    let t = Instant::now();
    assert!(ping_ns(&near.ns, &ip(40)), "same node as the source");
    let near_ms = t.elapsed();
    let t = Instant::now();
    assert!(ping_ns(&far.ns, &ip(40)), "same node as the target");
    let far_ms = t.elapsed();
    eprintln!("first reply after migration: near {near_ms:?}, far {far_ms:?}");
    assert!(near_ms < Duration::from_millis(500), "{near_ms:?}");
    assert!(far_ms < Duration::from_millis(500), "{far_ms:?}");
    let e: Vec<_> = lab.nodes[0]
        .dp
        .fdb_entries()
        .unwrap()
        .into_iter()
        .filter(|e| e.mac == mig_mac)
        .collect();
    assert_eq!(e.len(), 1);
    assert_eq!((e[0].ifindex, e[0].is_static), (lab.nodes[0].uplink, false));
    sleep(Duration::from_millis(10));
}
