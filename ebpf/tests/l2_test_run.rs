//! BPF_PROG_TEST_RUN of the 802.1Q switch on crafted frames, with the
//! context ifindex of real veths in a private netns. Redirects are
//! reported, not performed (bpf_clone_redirect does run: flood copies
//! really leave through the veths, whose peers ignore them); the trace
//! record the programs leave in skb->cb says where a frame went.

mod common;

use std::{thread::sleep, time::Duration};

use common::{l2::*, *};
use furrow_ebpf::*;

const CN: u32 = 1;
const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const MAC_C: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0c];
const MAC_REMOTE: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
const UPLINK_MAC: [u8; 6] = [0x02, 0x55, 0, 0, 0, 0x01];
/// skb->mark of the copy a VM broadcast sends to the node's stack.
const HOST_MARK: u32 = 0x4657_4c32;

/// A node with one switch (cluster network 1): access ports vm1, vm2 on
/// VLAN 100 and vm3 on 200, an untagged port vmu, a trunk vmt (100, 200)
/// and the uplink `up`. VLAN 0 delivers to the host.
struct Sw {
    node: NetNs,
    _peers: NetNs,
    dp: Datapath,
    _pins: PinDir,
    vm1: u32,
    vm2: u32,
    vm3: u32,
    vmu: u32,
    vmt: u32,
    up: u32,
}

fn port(mode: L2Mode) -> L2Port {
    L2Port {
        cluster_network: CN,
        mode,
        mtu: 1500,
    }
}

impl Sw {
    fn new() -> Self {
        let (node, peers, pins, mut dp, idx) =
            common::veth_switch(&["vm1", "vm2", "vm3", "vmu", "vmt", "upl"]);
        let (vm1, vm2, vm3, vmu, vmt, up) = (idx[0], idx[1], idx[2], idx[3], idx[4], idx[5]);
        let trunk = VlanSet::from_ranges([100..=100, 200..=200]).unwrap();
        node.run(|| {
            dp.l2_attach_port("vm1", vm1, &port(L2Mode::Access { vid: 100 }))
                .unwrap();
            dp.l2_attach_port("vm2", vm2, &port(L2Mode::Access { vid: 100 }))
                .unwrap();
            dp.l2_attach_port("vm3", vm3, &port(L2Mode::Access { vid: 200 }))
                .unwrap();
            dp.l2_attach_port("vmu", vmu, &port(L2Mode::Untagged))
                .unwrap();
            dp.l2_attach_port("vmt", vmt, &port(L2Mode::Trunk { allowed: trunk }))
                .unwrap();
            dp.l2_attach_port(
                "upl",
                up,
                &port(L2Mode::Uplink {
                    own_mac: UPLINK_MAC,
                }),
            )
            .unwrap();
        });
        dp.l2_set_vlan(CN, 100, &[vm1, vm2, vmt, up], false)
            .unwrap();
        dp.l2_set_vlan(CN, 200, &[vm3, vmt, up], false).unwrap();
        dp.l2_set_vlan(CN, 0, &[vmu, up], true).unwrap();
        Sw {
            node,
            _peers: peers,
            dp,
            _pins: pins,
            vm1,
            vm2,
            vm3,
            vmu,
            vmt,
            up,
        }
    }

    fn run_prog(&self, prog: &str, ctx: SkbContext, frame: &[u8]) -> (TestRunOutput, L2Trace) {
        let fd = self.dp.program_fd(prog).unwrap();
        let out = self
            .node
            .run(|| test_run(fd, frame, Some(&ctx), 1))
            .unwrap();
        let trace = L2Trace::from_cb(out.cb).unwrap_or_else(|| panic!("no trace in {:x?}", out.cb));
        (out, trace)
    }

    /// furrow_l2_ingress on `frame` arriving at `ifindex`.
    fn run(&self, ifindex: u32, frame: &[u8]) -> (TestRunOutput, L2Trace) {
        self.run_prog(
            PROG_L2_INGRESS,
            SkbContext {
                ifindex,
                ..Default::default()
            },
            frame,
        )
    }

    fn stats(&self, ifindex: u32) -> PortStats {
        self.dp.port_stats(ifindex).unwrap().expect("stats entry")
    }

    fn vstats(&self, vid: u16) -> VlanStats {
        self.dp.vlan_stats_of(CN, vid).unwrap().expect("vlan stats")
    }

    fn fdb(&self, vid: u16, mac: [u8; 6]) -> Option<FdbEntry> {
        self.dp
            .fdb_entries()
            .unwrap()
            .into_iter()
            .find(|e| e.cluster_network == CN && e.vid == vid && e.mac == mac)
    }
}

#[test]
fn access_port_takes_untagged_frames_and_drops_tagged_ones() {
    let sw = Sw::new();
    let frame = raw_frame(BCAST, MAC_A, 50);
    let (out, t) = sw.run(sw.vm1, &frame);
    assert_eq!(t.verdict, L2Verdict::Flood);
    assert_eq!(t.vid, Some(100));
    // vm2, the trunk and the uplink; the original went to the last one.
    assert_eq!(t.flood_copies, 3);
    assert_eq!(out.retval, TC_ACT_REDIRECT);
    let v = sw.vstats(100);
    assert_eq!((v.rx_packets, v.flood_packets, v.flood_copies), (1, 1, 3));
    for p in [sw.vm2, sw.vmt, sw.up] {
        assert_eq!(sw.stats(p).rx_packets, 1, "delivered to {p}");
    }
    for p in [sw.vm1, sw.vm3, sw.vmu] {
        assert_eq!(sw.stats(p).rx_packets, 0, "nothing for {p}");
    }

    for (what, tagged) in [
        ("its own VLAN", with_tag(&frame, TPID_8021Q, 100)),
        ("another VLAN", with_tag(&frame, TPID_8021Q, 200)),
        ("priority tag", with_tag(&frame, TPID_8021Q, 0x2000)),
    ] {
        let (out, t) = sw.run(sw.vm1, &tagged);
        assert_eq!(out.retval, TC_ACT_SHOT, "{what}");
        assert_eq!(t.verdict, L2Verdict::DropVlan, "{what}");
        assert_eq!(t.vid, None, "{what}");
    }
    let s = sw.stats(sw.vm1);
    assert_eq!((s.tx_packets, s.drop_vlan), (4, 3));
    assert_eq!(sw.vstats(100).rx_packets, 1, "dropped frames never entered");

    // The untagged port takes untagged frames onto VLAN 0 only.
    let (_, t) = sw.run(sw.vmu, &frame);
    assert_eq!((t.verdict, t.vid), (L2Verdict::Flood, Some(0)));
    let (_, t) = sw.run(sw.vmu, &with_tag(&frame, TPID_8021Q, 100));
    assert_eq!(t.verdict, L2Verdict::DropVlan);
}

#[test]
fn trunk_takes_its_allowed_vlans_tagged_only() {
    let sw = Sw::new();
    let frame = raw_frame(BCAST, MAC_C, 50);
    for vid in [100u16, 200] {
        let tagged = with_tag(&frame, TPID_8021Q, 0x6000 | vid);
        let (out, t) = sw.run(sw.vmt, &tagged);
        assert_eq!((t.verdict, t.vid), (L2Verdict::Flood, Some(vid)));
        assert_eq!(t.flood_copies, if vid == 100 { 3 } else { 2 });
        // The tag left the data (the uplink, last member, gets it back in
        // skb metadata, which test_run does not return).
        assert_eq!(out.data_out, frame, "VLAN {vid}: normalised to untagged");
    }
    for (what, f) in [
        ("untagged", frame.clone()),
        ("VLAN 300", with_tag(&frame, TPID_8021Q, 300)),
        ("VLAN 0", with_tag(&frame, TPID_8021Q, 0)),
        ("802.1ad", with_tag(&frame, TPID_8021AD, 100)),
        (
            "QinQ",
            with_tag(&with_tag(&frame, TPID_8021Q, 100), TPID_8021Q, 100),
        ),
        (
            "802.1ad outer",
            with_tag(&with_tag(&frame, TPID_8021Q, 100), TPID_8021AD, 100),
        ),
    ] {
        let (out, t) = sw.run(sw.vmt, &f);
        assert_eq!(out.retval, TC_ACT_SHOT, "{what}");
        assert_eq!(t.verdict, L2Verdict::DropVlan, "{what}");
    }
    assert_eq!(sw.stats(sw.vmt).drop_vlan, 6);
    assert_eq!(sw.stats(sw.vm3).rx_packets, 1, "VLAN 200 reached vm3 once");
}

#[test]
fn uplink_drops_and_counts_vlans_not_on_this_node() {
    let sw = Sw::new();
    let frame = raw_frame(BCAST, MAC_REMOTE, 50);
    let (out, t) = sw.run(sw.up, &with_tag(&frame, TPID_8021Q, 300));
    assert_eq!((out.retval, t.verdict), (TC_ACT_SHOT, L2Verdict::DropVlan));
    assert_eq!(t.vid, Some(300));
    let s = sw.stats(sw.up);
    assert_eq!((s.tx_packets, s.drop_vlan), (1, 1));
    assert!(sw.dp.vlan_stats_of(CN, 300).unwrap().is_none());
    assert!(sw.fdb(300, MAC_REMOTE).is_none(), "nothing learned");

    // Known VLANs are switched; QinQ is not.
    let (_, t) = sw.run(sw.up, &with_tag(&frame, TPID_8021Q, 200));
    assert_eq!(
        (t.verdict, t.vid, t.flood_copies),
        (L2Verdict::Flood, Some(200), 2)
    );
    let (_, t) = sw.run(sw.up, &with_tag(&frame, TPID_8021AD, 200));
    assert_eq!(t.verdict, L2Verdict::DropVlan);
    assert_eq!(sw.stats(sw.up).drop_vlan, 2);

    // Untagged frames with no VLAN 0 on the node are the node's own.
    let mut sw = sw;
    sw.dp.l2_remove_vlan(CN, 0).unwrap();
    let (out, t) = sw.run(sw.up, &frame);
    assert_eq!((out.retval, t.verdict), (TC_ACT_OK, L2Verdict::PassNoVlan0));
    assert_eq!(out.data_out, frame);
    assert_eq!(sw.stats(sw.up).drop_vlan, 2);
}

#[test]
fn learning_records_the_ingress_port() {
    let sw = Sw::new();
    sw.run(sw.vm1, &raw_frame(BCAST, MAC_A, 20));
    let e = sw.fdb(100, MAC_A).expect("learned");
    assert_eq!((e.ifindex, e.is_static), (sw.vm1, false));
    assert!(e.age.unwrap() < Duration::from_secs(5), "{e:?}");
    // Per VLAN: the same MAC on VLAN 200 is another entry.
    sw.run(
        sw.vmt,
        &with_tag(&raw_frame(BCAST, MAC_A, 20), TPID_8021Q, 200),
    );
    assert_eq!(sw.fdb(200, MAC_A).unwrap().ifindex, sw.vmt);
    assert_eq!(sw.fdb(100, MAC_A).unwrap().ifindex, sw.vm1);
    // The MAC moves behind the uplink (a migration): the entry follows.
    sw.run(
        sw.up,
        &with_tag(&raw_frame(BCAST, MAC_A, 20), TPID_8021Q, 100),
    );
    assert_eq!(sw.fdb(100, MAC_A).unwrap().ifindex, sw.up);
    // Multicast and zero sources are not learned.
    let mut mc = raw_frame(BCAST, [0x03, 0, 0, 0, 0, 1], 20);
    sw.run(sw.vm2, &mc);
    mc[6..12].copy_from_slice(&[0; 6]);
    sw.run(sw.vm2, &mc);
    assert_eq!(sw.dp.fdb_entries().unwrap().len(), 2);
}

#[test]
fn static_entries_are_never_overwritten_by_learning() {
    let mut sw = Sw::new();
    sw.dp.fdb_add_static(CN, 100, MAC_B, sw.vm2).unwrap();
    // MAC_B shows up as a source on vm1 (spoofed, or in transit).
    sw.run(sw.vm1, &raw_frame(BCAST, MAC_B, 20));
    sw.run(
        sw.up,
        &with_tag(&raw_frame(BCAST, MAC_B, 20), TPID_8021Q, 100),
    );
    let e = sw.fdb(100, MAC_B).unwrap();
    assert_eq!((e.ifindex, e.is_static, e.age), (sw.vm2, true, None));
    // Frames to it still go to vm2.
    let (_, t) = sw.run(sw.vm1, &raw_frame(MAC_B, MAC_A, 20));
    assert_eq!(
        (t.verdict, t.out_ifindex),
        (L2Verdict::Unicast, Some(sw.vm2))
    );
    // A static entry replaces a learned one.
    sw.run(sw.vm1, &raw_frame(BCAST, MAC_A, 20));
    sw.dp.fdb_add_static(CN, 100, MAC_A, sw.up).unwrap();
    assert_eq!(sw.fdb(100, MAC_A).unwrap().ifindex, sw.up);
    assert!(sw.fdb(100, MAC_A).unwrap().is_static);
    sw.dp.fdb_remove(CN, 100, MAC_A).unwrap();
    sw.dp.fdb_remove(CN, 100, MAC_A).unwrap();
    assert!(sw.fdb(100, MAC_A).is_none());
    let err = sw.dp.fdb_add_static(CN, 100, BCAST, sw.vm1).unwrap_err();
    assert!(matches!(err, DatapathError::InvalidL2(_)), "{err}");
}

#[test]
fn known_unicast_is_redirected_with_the_egress_port_tagging() {
    let sw = Sw::new();
    // Learn A on vm1, C on the trunk (VLAN 100), REMOTE behind the uplink.
    sw.run(sw.vm1, &raw_frame(BCAST, MAC_A, 20));
    sw.run(
        sw.vmt,
        &with_tag(&raw_frame(BCAST, MAC_C, 20), TPID_8021Q, 100),
    );
    sw.run(
        sw.up,
        &with_tag(&raw_frame(BCAST, MAC_REMOTE, 20), TPID_8021Q, 100),
    );
    sw.run(sw.up, &raw_frame(BCAST, MAC_REMOTE, 20)); // and on VLAN 0
    let before = sw.vstats(100);

    // vm2 -> A (access): untagged, straight to vm1.
    let f = raw_frame(MAC_A, MAC_B, 100);
    let (out, t) = sw.run(sw.vm2, &f);
    assert_eq!(out.retval, TC_ACT_REDIRECT);
    assert_eq!(t.verdict, L2Verdict::Unicast);
    assert_eq!(
        (t.vid, t.out_ifindex, t.egress_tci),
        (Some(100), Some(sw.vm1), None)
    );
    assert_eq!(out.data_out, f, "untouched");
    // vm2 -> C (trunk): leaves tagged 100.
    let (_, t) = sw.run(sw.vm2, &raw_frame(MAC_C, MAC_B, 100));
    assert_eq!((t.out_ifindex, t.egress_tci), (Some(sw.vmt), Some(100)));
    // vm2 -> REMOTE (uplink): tagged 100.
    let (_, t) = sw.run(sw.vm2, &raw_frame(MAC_REMOTE, MAC_B, 100));
    assert_eq!((t.out_ifindex, t.egress_tci), (Some(sw.up), Some(100)));
    // Uplink, tagged 100, priority 5 -> A: untagged to vm1, tag popped.
    let (out, t) = sw.run(
        sw.up,
        &with_tag(&raw_frame(MAC_A, MAC_REMOTE, 100), TPID_8021Q, 0xa064),
    );
    assert_eq!(
        (t.verdict, t.out_ifindex, t.egress_tci),
        (L2Verdict::Unicast, Some(sw.vm1), None)
    );
    assert_eq!(out.data_out, raw_frame(MAC_A, MAC_REMOTE, 100));
    // Uplink -> C on the trunk keeps the priority bits.
    let (_, t) = sw.run(
        sw.up,
        &with_tag(&raw_frame(MAC_C, MAC_REMOTE, 100), TPID_8021Q, 0xa064),
    );
    assert_eq!(t.egress_tci, Some(0xa064));
    // VLAN 0: vmu -> REMOTE leaves the uplink untagged.
    let (_, t) = sw.run(sw.vmu, &raw_frame(MAC_REMOTE, MAC_A, 100));
    assert_eq!(
        (t.vid, t.out_ifindex, t.egress_tci),
        (Some(0), Some(sw.up), None)
    );

    let v = sw.vstats(100);
    assert_eq!(v.unicast_packets - before.unicast_packets, 5);
    assert_eq!(v.flood_packets, before.flood_packets);
    // Two floods while learning, two unicasts.
    assert_eq!(sw.stats(sw.vm1).rx_packets, 4);

    // Frames never cross VLANs: A is known on 100 only, so from vm3
    // (VLAN 200) a frame to A is unknown unicast, flooded within 200.
    let (_, t) = sw.run(sw.vm3, &raw_frame(MAC_A, MAC_B, 20));
    assert_eq!(
        (t.verdict, t.vid, t.flood_copies),
        (L2Verdict::Flood, Some(200), 2)
    );
    assert_eq!(sw.stats(sw.vm1).rx_packets, 4);
}

#[test]
fn hairpin_is_dropped_and_counted() {
    let sw = Sw::new();
    sw.run(sw.vm1, &raw_frame(BCAST, MAC_A, 20));
    sw.run(sw.vm1, &raw_frame(BCAST, MAC_B, 20));
    let (out, t) = sw.run(sw.vm1, &raw_frame(MAC_A, MAC_B, 20));
    assert_eq!(
        (out.retval, t.verdict),
        (TC_ACT_SHOT, L2Verdict::DropHairpin)
    );
    assert_eq!(sw.stats(sw.vm1).drop_hairpin, 1);
    assert_eq!(sw.vstats(100).drop_hairpin, 1);
    // The same from the uplink: the fabric flooded a frame for a MAC
    // that lives out there.
    sw.run(
        sw.up,
        &with_tag(&raw_frame(BCAST, MAC_REMOTE, 20), TPID_8021Q, 100),
    );
    let (_, t) = sw.run(
        sw.up,
        &with_tag(&raw_frame(MAC_REMOTE, MAC_C, 20), TPID_8021Q, 100),
    );
    assert_eq!(t.verdict, L2Verdict::DropHairpin);
    assert_eq!(sw.stats(sw.up).drop_hairpin, 1);
    assert_eq!(sw.vstats(100).drop_hairpin, 2);
}

#[test]
fn frames_above_the_egress_mtu_are_dropped_and_counted() {
    let mut sw = Sw::new();
    // vm2 gets a small MTU (a reconfiguration that keeps its VLAN).
    let small = L2Port {
        mtu: 200,
        ..port(L2Mode::Access { vid: 100 })
    };
    let vm2 = sw.vm2;
    sw.node
        .run(|| sw.dp.l2_attach_port("vm2", vm2, &small))
        .unwrap();
    sw.dp.fdb_add_static(CN, 100, MAC_B, vm2).unwrap();

    // L3 length 200 passes, 201 does not.
    let (_, t) = sw.run(sw.vm1, &raw_frame(MAC_B, MAC_A, 200));
    assert_eq!(t.verdict, L2Verdict::Unicast);
    let (out, t) = sw.run(sw.vm1, &raw_frame(MAC_B, MAC_A, 201));
    assert_eq!(
        (out.retval, t.verdict, t.out_ifindex),
        (TC_ACT_SHOT, L2Verdict::DropMtu, Some(vm2))
    );
    assert_eq!(sw.stats(vm2).drop_mtu, 1);
    assert_eq!(sw.vstats(100).drop_mtu, 1);
    // A tagged frame from the uplink: the tag does not count.
    let (_, t) = sw.run(
        sw.up,
        &with_tag(&raw_frame(MAC_B, MAC_REMOTE, 200), TPID_8021Q, 100),
    );
    assert_eq!(t.verdict, L2Verdict::Unicast);

    // Flooding skips vm2 only.
    let (_, t) = sw.run(sw.vm1, &raw_frame(BCAST, MAC_A, 1000));
    assert_eq!(
        (t.verdict, t.flood_copies, t.flood_mtu_drops),
        (L2Verdict::Flood, 2, 1)
    );
    assert_eq!(sw.stats(vm2).drop_mtu, 2);

    // GSO frames are judged by their segments: 20 (IPv4) + 8 (UDP) +
    // gso_size.
    let f = ipv4_udp_frame(
        MAC_B,
        MAC_A,
        [10, 0, 0, 1],
        [10, 0, 0, 2],
        64,
        &[],
        &[0u8; 1000],
    );
    for (gso, verdict) in [(172, L2Verdict::Unicast), (173, L2Verdict::DropMtu)] {
        let ctx = SkbContext {
            ifindex: sw.vm1,
            gso_size: gso,
            gso_segs: 6,
            ..Default::default()
        };
        let (_, t) = sw.run_prog(PROG_L2_INGRESS, ctx, &f);
        assert_eq!(t.verdict, verdict, "gso_size {gso}");
    }
    assert_eq!(sw.stats(vm2).drop_mtu, 3);
}

#[test]
fn aged_dynamic_entries_count_as_unknown() {
    let mut sw = Sw::new();
    sw.dp.l2_set_aging(CN, Duration::from_millis(200)).unwrap();
    assert_eq!(sw.dp.l2_aging(CN).unwrap(), Duration::from_millis(200));
    assert_eq!(sw.dp.l2_aging(77).unwrap(), L2_DEFAULT_AGING);
    sw.run(sw.vm1, &raw_frame(BCAST, MAC_A, 20));
    sw.dp.fdb_add_static(CN, 100, MAC_B, sw.vm2).unwrap();
    let (_, t) = sw.run(sw.vm2, &raw_frame(MAC_A, MAC_B, 20));
    assert_eq!(t.verdict, L2Verdict::Unicast);
    assert_eq!(sw.dp.fdb_expire().unwrap(), 0);

    sleep(Duration::from_millis(300));
    let (_, t) = sw.run(sw.vm2, &raw_frame(MAC_A, MAC_B, 20));
    assert_eq!(t.verdict, L2Verdict::Flood, "aged entry ignored");
    let (_, t) = sw.run(sw.vm1, &raw_frame(MAC_B, MAC_A, 20));
    assert_eq!(t.verdict, L2Verdict::Unicast, "static entries do not age");
    // That frame from A refreshed its entry.
    let (_, t) = sw.run(sw.vm2, &raw_frame(MAC_A, MAC_B, 20));
    assert_eq!(t.verdict, L2Verdict::Unicast, "relearned");

    sleep(Duration::from_millis(300));
    let e = sw.fdb(100, MAC_A).unwrap();
    assert!(e.age.unwrap() > Duration::from_millis(200), "{e:?}");
    assert_eq!(sw.dp.fdb_expire().unwrap(), 1);
    assert!(sw.fdb(100, MAC_A).is_none());
    assert!(sw.fdb(100, MAC_B).is_some(), "static kept");
}

#[test]
fn the_node_stack_on_the_uplink() {
    let sw = Sw::new();
    let frame = raw_frame(UPLINK_MAC, MAC_REMOTE, 40);
    // Addressed to the node: to the kernel untouched, tagged or not, and
    // not counted as switch traffic.
    for f in [
        frame.clone(),
        with_tag(&frame, TPID_8021Q, 100),
        with_tag(&frame, TPID_8021Q, 300),
    ] {
        let (out, t) = sw.run(sw.up, &f);
        assert_eq!((out.retval, t.verdict), (TC_ACT_OK, L2Verdict::PassOwnMac));
        assert_eq!(out.data_out, f);
    }
    assert_eq!(sw.stats(sw.up).tx_packets, 0);
    assert!(sw.fdb(0, MAC_REMOTE).is_none());

    // Untagged broadcast from the wire: flooded to VLAN 0 and passed on.
    let arp_req = arp(BCAST, MAC_REMOTE, 1, [10, 0, 0, 9], [0; 6], [10, 0, 0, 1]);
    let (out, t) = sw.run(sw.up, &arp_req);
    assert_eq!(
        (out.retval, t.verdict, t.flood_copies),
        (TC_ACT_OK, L2Verdict::FloodPass, 1)
    );
    assert_eq!(out.data_out, arp_req);
    assert_eq!(sw.stats(sw.vmu).rx_packets, 1);
    // Tagged broadcast is not the node's.
    let (out, t) = sw.run(sw.up, &with_tag(&arp_req, TPID_8021Q, 100));
    assert_eq!((out.retval, t.verdict), (TC_ACT_REDIRECT, L2Verdict::Flood));

    // A VM on VLAN 0 talking to the node's MAC: into the uplink's ingress.
    let (out, t) = sw.run(sw.vmu, &raw_frame(UPLINK_MAC, MAC_A, 40));
    assert_eq!(
        (out.retval, t.verdict, t.out_ifindex),
        (TC_ACT_REDIRECT, L2Verdict::ToHost, Some(sw.up))
    );
    assert_eq!(sw.vstats(0).to_host_packets, 1);
    // Not from another VLAN.
    let (_, t) = sw.run(sw.vm1, &raw_frame(UPLINK_MAC, MAC_A, 40));
    assert_eq!((t.verdict, t.vid), (L2Verdict::Flood, Some(100)));
    // A VM's broadcast on VLAN 0: out the uplink, plus a marked copy for
    // the node's stack, which the uplink's program passes.
    let (out, t) = sw.run(
        sw.vmu,
        &arp(BCAST, MAC_A, 1, [10, 0, 0, 5], [0; 6], [10, 0, 0, 1]),
    );
    assert_eq!(
        (out.retval, t.verdict, t.flood_copies),
        (TC_ACT_REDIRECT, L2Verdict::Flood, 1)
    );
    assert_eq!(out.mark, 0, "mark restored");
    assert_eq!(sw.vstats(0).to_host_packets, 2);
    let ctx = SkbContext {
        ifindex: sw.up,
        mark: HOST_MARK,
        ..Default::default()
    };
    let (out, t) = sw.run_prog(PROG_L2_INGRESS, ctx, &arp_req);
    assert_eq!(
        (out.retval, t.verdict, out.mark),
        (TC_ACT_OK, L2Verdict::PassHostCopy, 0)
    );

    // Without to_host, VLAN 0 is a plain VLAN.
    let mut sw = sw;
    let (vmu, up) = (sw.vmu, sw.up);
    sw.dp.l2_set_vlan(CN, 0, &[vmu, up], false).unwrap();
    let (_, t) = sw.run(vmu, &raw_frame(UPLINK_MAC, MAC_A, 40));
    assert_eq!(t.verdict, L2Verdict::Flood);
    let err = sw.dp.l2_set_vlan(CN, 100, &[vmu], true).unwrap_err();
    assert!(matches!(err, DatapathError::InvalidL2(_)), "{err}");
}

#[test]
fn uplink_egress_hands_the_node_traffic_to_local_ports() {
    let sw = Sw::new();
    let egress = |f: &[u8]| {
        sw.run_prog(
            PROG_L2_UPLINK_EGRESS,
            SkbContext {
                ifindex: sw.up,
                ..Default::default()
            },
            f,
        )
    };
    // The node's ARP request: to vmu (a clone) and on to the wire.
    let req = arp(BCAST, UPLINK_MAC, 1, [10, 0, 0, 1], [0; 6], [10, 0, 0, 5]);
    let (out, t) = egress(&req);
    assert_eq!(
        (out.retval, t.verdict, t.flood_copies),
        (TC_ACT_OK, L2Verdict::FloodPass, 1)
    );
    assert_eq!(sw.stats(sw.vmu).rx_packets, 1);
    // Unknown unicast: same.
    let (out, t) = egress(&raw_frame(MAC_A, UPLINK_MAC, 40));
    assert_eq!((out.retval, t.verdict), (TC_ACT_OK, L2Verdict::FloodPass));
    // Once vmu's MAC is known: only to vmu.
    sw.run(sw.vmu, &raw_frame(BCAST, MAC_A, 20));
    let (out, t) = egress(&raw_frame(MAC_A, UPLINK_MAC, 40));
    assert_eq!(
        (out.retval, t.verdict, t.out_ifindex),
        (TC_ACT_REDIRECT, L2Verdict::Unicast, Some(sw.vmu))
    );
    assert_eq!(sw.vstats(0).from_host_packets, 3);
    // A MAC on the wire: just sent.
    sw.run(sw.up, &raw_frame(BCAST, MAC_REMOTE, 20));
    let (out, t) = egress(&raw_frame(MAC_REMOTE, UPLINK_MAC, 40));
    assert_eq!((out.retval, t.verdict), (TC_ACT_OK, L2Verdict::PassNotHost));
    // What the switch forwards to the wire (VM MACs) is not touched.
    let (out, t) = egress(&raw_frame(BCAST, MAC_A, 40));
    assert_eq!((out.retval, t.verdict), (TC_ACT_OK, L2Verdict::PassNotHost));
    // Three from the node, one flooded from the wire.
    assert_eq!(sw.stats(sw.vmu).rx_packets, 4);
}

#[test]
fn vm_link_local_frames_never_reach_the_wire() {
    let sw = Sw::new();
    let stp = raw_frame([0x01, 0x80, 0xc2, 0, 0, 0], MAC_A, 40);
    let (out, t) = sw.run(sw.vm1, &stp);
    assert_eq!(
        (out.retval, t.verdict),
        (TC_ACT_SHOT, L2Verdict::DropPolicy)
    );
    assert_eq!(sw.stats(sw.vm1).drop_policy, 1);
    // From the wire (LLDP from the switch): to the node.
    let lldp = raw_frame([0x01, 0x80, 0xc2, 0, 0, 0x0e], MAC_REMOTE, 40);
    let (out, t) = sw.run(sw.up, &lldp);
    assert_eq!(
        (out.retval, t.verdict),
        (TC_ACT_OK, L2Verdict::PassLinkLocal)
    );
}

#[test]
fn frames_on_foreign_devices_pass() {
    let sw = Sw::new();
    // lo has no port entry.
    let (out, t) = sw.run(1, &raw_frame(BCAST, MAC_A, 20));
    assert_eq!((out.retval, t.verdict), (TC_ACT_OK, L2Verdict::PassNotPort));
}

#[test]
fn stale_members_and_fdb_entries_never_leak_across_vlans() {
    let mut sw = Sw::new();
    // A flood list naming a port of another VLAN (netd lagging behind a
    // reconfiguration), and an FDB entry pointing at it.
    let (vm1, vm3) = (sw.vm1, sw.vm3);
    sw.dp.l2_set_vlan(CN, 100, &[vm1, vm3], false).unwrap();
    sw.dp.fdb_add_static(CN, 100, MAC_C, vm3).unwrap();
    let (out, t) = sw.run(vm1, &raw_frame(BCAST, MAC_A, 20));
    assert_eq!(
        (out.retval, t.verdict, t.flood_copies),
        (TC_ACT_SHOT, L2Verdict::Flood, 0)
    );
    let (_, t) = sw.run(vm1, &raw_frame(MAC_C, MAC_A, 20));
    assert_eq!((t.verdict, t.flood_copies), (L2Verdict::Flood, 0));
    assert_eq!(sw.stats(vm3).rx_packets, 0);
}
