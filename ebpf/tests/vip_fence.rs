//! The VIP fence (bpf/vip_fence.bpf.c, `furrow_ebpf::fence`):
//!
//! - BPF_PROG_TEST_RUN on crafted frames: every kind it must stop (ARP
//!   from the VIP as reply, gratuitous request and reply, and request; IPv4
//!   from the VIP; neighbour advertisements for the VIP from any source;
//!   IPv6 from the VIP), before the deadline (no verdict) and after it
//!   (dropped, counted by reason), with one or two VLAN tags in the data;
//!   and everything unrelated, malformed or truncated passing untouched.
//!   The deadline is compared with CLOCK_MONOTONIC as Rust's `Instant`
//!   sees it;
//! - attaching: its own slot (pref 224, a handle per instance) before the
//!   datapath's filters, idempotent, other filters and other instances
//!   left alone, a restarted instance finding its predecessor's filters
//!   and pinned deadlines;
//! - live traffic in namespaces: a client pinging and resolving a VIP on
//!   the node over IPv4 and IPv6, cut off once the deadline passes (and
//!   back when it moves), the node's other traffic and the datapath's
//!   filter after the fence still running.

mod common;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use common::l2::{arp, garp, with_tag, RawSock, BCAST, TPID_8021AD, TPID_8021Q};
use common::*;
use furrow_ebpf::fence::{fence_handle, FENCE_PRIORITY, PROG_VIP_FENCE};
use furrow_ebpf::*;

const VIP: [u8; 4] = [198, 18, 0, 100];
const OTHER: [u8; 4] = [198, 18, 0, 7];
const CLIENT: [u8; 4] = [198, 18, 0, 254];
const NODE_MAC: [u8; 6] = [0x02, 0x46, 0, 0, 0, 0x01];
const CLIENT_MAC: [u8; 6] = [0x02, 0x46, 0, 0, 0, 0xfe];

fn vip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(VIP))
}

fn vip6() -> Ipv6Addr {
    "fd00:198:18::100".parse().unwrap()
}

fn other6() -> Ipv6Addr {
    "fd00:198:18::7".parse().unwrap()
}

fn link_local() -> Ipv6Addr {
    "fe80::46:ff:fe00:1".parse().unwrap()
}

/// An Ethernet + IPv6 frame with `payload` after the 40-byte header.
fn ipv6_frame(src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = eth_header(CLIENT_MAC, NODE_MAC, ETH_P_IPV6);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    f.push(next);
    f.push(255);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(payload);
    f
}

/// A neighbour advertisement (solicited, override) for `target`, with a
/// target link-layer address option (checksum not filled: the fence does
/// not look at it).
fn na(src: Ipv6Addr, dst: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let mut icmp = vec![136, 0, 0, 0, 0x60, 0, 0, 0];
    icmp.extend_from_slice(&target.octets());
    icmp.extend_from_slice(&[2, 1]);
    icmp.extend_from_slice(&NODE_MAC);
    ipv6_frame(src, dst, 58, &icmp)
}

/// A neighbour solicitation for `target` from `src`.
fn ns(src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let mut icmp = vec![135, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&target.octets());
    icmp.extend_from_slice(&[1, 1]);
    icmp.extend_from_slice(&NODE_MAC);
    let group: Ipv6Addr = "ff02::1:ff00:7".parse().unwrap();
    ipv6_frame(src, group, 58, &icmp)
}

fn udp6(src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    ipv6_frame(src, dst, 17, &[0x9c, 0x40, 0, 7, 0, 12, 0, 0, 1, 2, 3, 4])
}

fn udp4(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    ipv4_udp_frame(CLIENT_MAC, NODE_MAC, src, dst, 64, &[], b"fence")
}

/// Runs the fence on `frame`: its verdict, after checking that it left
/// the frame as it was.
fn verdict(fence: &VipFence, frame: &[u8]) -> u32 {
    let out = test_run(fence.program_fd(), frame, None, 1)
        .unwrap_or_else(|e| panic!("{} bytes: {e}", frame.len()));
    assert_eq!(out.data_out, frame, "the fence never modifies a frame");
    out.retval
}

fn far_future() -> MonotonicNs {
    MonotonicNs::now().saturating_add(Duration::from_secs(3600))
}

/// Every frame that must be stopped for an IPv4 VIP, with the counter it
/// lands in.
fn v4_answers() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        // A reply to the client's "who has the VIP?".
        ("arp", arp(CLIENT_MAC, NODE_MAC, 2, VIP, CLIENT_MAC, CLIENT)),
        // Gratuitous ARP, request and reply form (netd's announcements).
        ("arp", garp(NODE_MAC, VIP)),
        ("arp", arp(BCAST, NODE_MAC, 2, VIP, BCAST, VIP)),
        // The node resolving a neighbour from the VIP: it teaches the
        // neighbour the VIP's MAC too.
        ("arp", arp(BCAST, NODE_MAC, 1, VIP, [0; 6], CLIENT)),
        ("ipv4", udp4(VIP, CLIENT)),
    ]
}

fn v6_answers() -> Vec<(&'static str, Vec<u8>)> {
    let client6: Ipv6Addr = "fd00:198:18::254".parse().unwrap();
    let all_nodes: Ipv6Addr = "ff02::1".parse().unwrap();
    vec![
        // Solicited, from the VIP itself (what the kernel sends).
        ("na", na(vip6(), client6, vip6())),
        // Unsolicited (netd's announcements), to all nodes.
        ("na", na(vip6(), all_nodes, vip6())),
        // From a link-local source: still an advertisement for the VIP.
        ("na", na(link_local(), client6, vip6())),
        ("ipv6", udp6(vip6(), client6)),
        // A solicitation from the VIP carries its MAC too.
        ("ipv6", ns(vip6(), client6)),
    ]
}

fn count(d: &FenceDrops, reason: &str) -> u64 {
    match reason {
        "arp" => d.arp,
        "ipv4" => d.ipv4,
        "na" => d.neighbor_advert,
        "ipv6" => d.ipv6,
        _ => unreachable!(),
    }
}

#[test]
fn answers_for_a_vip_pass_before_its_deadline_and_are_dropped_after() {
    let mut fence = VipFence::open(None).unwrap();
    let v6 = IpAddr::V6(vip6());
    let frames: Vec<_> = v4_answers().into_iter().chain(v6_answers()).collect();

    // No entry: nothing is fenced.
    for (why, f) in &frames {
        assert_eq!(verdict(&fence, f), TC_ACT_UNSPEC, "{why}: no deadline");
    }
    // Before the deadline.
    for ip in [vip(), v6] {
        fence.set_deadline(ip, far_future()).unwrap();
    }
    for (why, f) in &frames {
        assert_eq!(verdict(&fence, f), TC_ACT_UNSPEC, "{why}: before");
    }
    assert_eq!(fence.drops().unwrap(), FenceDrops::default());

    // After it: each kind dropped and counted under its reason.
    for ip in [vip(), v6] {
        fence.set_deadline(ip, MonotonicNs::now()).unwrap();
    }
    for (why, f) in &frames {
        let before = fence.drops().unwrap();
        assert_eq!(verdict(&fence, f), TC_ACT_SHOT, "{why}: after");
        let after = fence.drops().unwrap();
        assert_eq!(count(&after, why), count(&before, why) + 1, "{why}");
        assert_eq!(after.total(), before.total() + 1, "{why}: one reason");
    }
    assert_eq!(
        fence.drops().unwrap(),
        FenceDrops {
            arp: 4,
            ipv4: 1,
            neighbor_advert: 3,
            ipv6: 2
        }
    );

    // The deadline moves on (netd renewed): answers pass again.
    fence.set_deadline(vip(), far_future()).unwrap();
    for (why, f) in v4_answers() {
        assert_eq!(verdict(&fence, &f), TC_ACT_UNSPEC, "{why}: renewed");
    }
    // No deadline at all (a node on its own).
    fence.set_deadline(v6, MonotonicNs::NEVER).unwrap();
    for (why, f) in v6_answers() {
        assert_eq!(verdict(&fence, &f), TC_ACT_UNSPEC, "{why}: never");
    }
    // Removed: passes.
    fence.set_deadline(v6, MonotonicNs::now()).unwrap();
    fence.remove(v6).unwrap();
    fence.remove(v6).unwrap();
    for (why, f) in v6_answers() {
        assert_eq!(verdict(&fence, &f), TC_ACT_UNSPEC, "{why}: removed");
    }
    assert_eq!(
        fence.deadlines().unwrap(),
        vec![(vip(), fence.deadline(vip()).unwrap().unwrap())]
    );
    fence.clear().unwrap();
    assert!(fence.deadlines().unwrap().is_empty());
}

#[test]
fn the_deadline_is_clock_monotonic_as_instant_sees_it() {
    let mut fence = VipFence::open(None).unwrap();
    let frame = garp(NODE_MAC, VIP);
    let until = Instant::now() + Duration::from_millis(300);
    fence
        .set_deadline(vip(), MonotonicNs::from_instant(until))
        .unwrap();
    let mut passed_until = None;
    let mut dropped_from = None;
    let end = until + Duration::from_millis(300);
    while Instant::now() < end {
        let t0 = Instant::now();
        let v = verdict(&fence, &frame);
        let t1 = Instant::now();
        match v {
            TC_ACT_UNSPEC => {
                assert!(dropped_from.is_none(), "passed again after a drop");
                passed_until = Some(t1);
                assert!(t0 < until, "passed {:?} after the deadline", t0 - until);
            }
            TC_ACT_SHOT => {
                dropped_from.get_or_insert(t0);
                assert!(t1 >= until, "dropped {:?} before the deadline", until - t1);
            }
            v => panic!("verdict {v}"),
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let (p, d) = (passed_until.unwrap(), dropped_from.unwrap());
    println!(
        "last pass {:?} before the deadline, first drop {:?} after it",
        until.saturating_duration_since(p),
        d.saturating_duration_since(until)
    );
}

#[test]
fn vlan_tagged_answers_are_recognised() {
    let mut fence = VipFence::open(None).unwrap();
    fence.set_deadline(vip(), MonotonicNs::now()).unwrap();
    fence
        .set_deadline(IpAddr::V6(vip6()), MonotonicNs::now())
        .unwrap();
    let client6: Ipv6Addr = "fd00:198:18::254".parse().unwrap();
    for (why, f) in [
        (
            "arp reply",
            arp(CLIENT_MAC, NODE_MAC, 2, VIP, CLIENT_MAC, CLIENT),
        ),
        ("garp", garp(NODE_MAC, VIP)),
        ("ipv4", udp4(VIP, CLIENT)),
        ("na", na(vip6(), client6, vip6())),
        ("ipv6", udp6(vip6(), client6)),
    ] {
        let tagged = with_tag(&f, TPID_8021Q, 100);
        assert_eq!(verdict(&fence, &tagged), TC_ACT_SHOT, "{why} in VLAN 100");
        let qinq = with_tag(&tagged, TPID_8021AD, 7);
        assert_eq!(verdict(&fence, &qinq), TC_ACT_SHOT, "{why} in QinQ");
        // Unrelated addresses in the same tags pass.
        let other = match why {
            "ipv4" => udp4(OTHER, CLIENT),
            "ipv6" | "na" => udp6(other6(), client6),
            _ => garp(NODE_MAC, OTHER),
        };
        assert_eq!(
            verdict(&fence, &with_tag(&other, TPID_8021Q, 100)),
            TC_ACT_UNSPEC,
            "{why}: another address"
        );
    }
    // Three tags are beyond what it looks at: no verdict (never a drop of
    // something it did not parse).
    let three = with_tag(
        &with_tag(
            &with_tag(&garp(NODE_MAC, VIP), TPID_8021Q, 1),
            TPID_8021Q,
            2,
        ),
        TPID_8021AD,
        3,
    );
    assert_eq!(verdict(&fence, &three), TC_ACT_UNSPEC);
    let d = fence.drops().unwrap();
    assert_eq!((d.arp, d.ipv4, d.neighbor_advert, d.ipv6), (4, 2, 2, 2));
}

#[test]
fn unrelated_malformed_and_truncated_frames_pass() {
    let mut fence = VipFence::open(None).unwrap();
    fence.set_deadline(vip(), MonotonicNs::now()).unwrap();
    fence
        .set_deadline(IpAddr::V6(vip6()), MonotonicNs::now())
        .unwrap();
    let client6: Ipv6Addr = "fd00:198:18::254".parse().unwrap();

    let mut wrong_version = udp4(VIP, CLIENT);
    wrong_version[14] = 0x65;
    let mut v6_wrong_version = udp6(vip6(), client6);
    v6_wrong_version[14] = 0x40;
    let mut arp_ipv6_proto = garp(NODE_MAC, VIP);
    arp_ipv6_proto[16..18].copy_from_slice(&0x86ddu16.to_be_bytes());
    let mut arp_long_hw = garp(NODE_MAC, VIP);
    arp_long_hw[18] = 8;
    let mut lldp = eth_header([0x01, 0x80, 0xc2, 0, 0, 0x0e], NODE_MAC, 0x88cc);
    lldp.resize(60, 0);
    // The VIP's bytes where an unparsed protocol carries them.
    lldp[20..24].copy_from_slice(&VIP);

    let cases: Vec<(&str, Vec<u8>)> = vec![
        // Traffic to the VIP, or from other addresses.
        ("to the VIP", udp4(CLIENT, VIP)),
        ("another source", udp4(OTHER, CLIENT)),
        (
            "someone asking for the VIP",
            arp(BCAST, CLIENT_MAC, 1, CLIENT, [0; 6], VIP),
        ),
        (
            "ARP probe for the VIP (sender 0.0.0.0)",
            arp(BCAST, NODE_MAC, 1, [0; 4], [0; 6], VIP),
        ),
        ("another address's garp", garp(NODE_MAC, OTHER)),
        ("IPv6 to the VIP", udp6(client6, vip6())),
        ("NA for another target", na(link_local(), client6, other6())),
        ("NS for the VIP from elsewhere", ns(client6, vip6())),
        // Not what it parses.
        ("IPv4 header with version 6", wrong_version),
        ("IPv6 header with version 4", v6_wrong_version),
        ("ARP for another protocol", arp_ipv6_proto),
        ("ARP with 8-byte hardware addresses", arp_long_hw),
        ("LLDP", lldp),
        (
            "the VIP's IPv4 key as an IPv6 source",
            udp6("::ffff:198.18.0.100".parse().unwrap(), client6),
        ),
    ];
    for (why, f) in &cases {
        assert_eq!(verdict(&fence, f), TC_ACT_UNSPEC, "{why}");
    }
    // Every truncation of every kind of answer: no verdict unless the
    // deciding address is there in full. An advertisement from the VIP
    // cut before its target is still a packet from the VIP.
    let answers: Vec<_> = v4_answers().into_iter().chain(v6_answers()).collect();
    let mut dropped = 0;
    for (why, f) in &answers {
        let from_vip6 = f.len() >= 38 && f[22..38] == vip6().octets();
        // Where the deciding field ends.
        let need = match *why {
            "arp" => 14 + 8 + 6 + 4,
            "ipv4" => 14 + 16,
            "na" if !from_vip6 => 14 + 40 + 8 + 16,
            _ => 14 + 24,
        };
        // BPF_PROG_TEST_RUN refuses IPv4 and IPv6 frames shorter than
        // their fixed header (EINVAL), and a bare Ethernet header.
        let first = match u16::from_be_bytes([f[12], f[13]]) {
            ETH_P_IP => 14 + 20,
            ETH_P_IPV6 => 14 + 40,
            _ => 15,
        };
        for len in first..f.len() {
            let v = verdict(&fence, &f[..len]);
            if len < need {
                assert_eq!(v, TC_ACT_UNSPEC, "{why} cut at {len}");
            } else {
                assert_eq!(v, TC_ACT_SHOT, "{why} cut at {len}");
                dropped += 1;
            }
        }
    }
    assert_eq!(fence.drops().unwrap().total(), dropped);
}

// ------------------------------------------------------------ attaching

/// The bpf filters on `ifname`'s egress, in the order tc runs them.
fn egress(ns: &NetNs, ifname: &str) -> Vec<TcFilter> {
    ns.tc_filters(ifname, "egress")
        .into_iter()
        .filter(|f| f.kind == "bpf")
        .collect()
}

fn fence_filter(fence: &VipFence) -> TcFilter {
    TcFilter {
        kind: "bpf".into(),
        pref: FENCE_PRIORITY.into(),
        protocol: "all".into(),
        handle: format!("{:#x}", fence.handle()),
        prog_id: fence.program_id().into(),
        direct_action: true,
    }
}

/// A node netns with host veths `names` (peers in a second netns).
fn node_with(names: &[&str]) -> (NetNs, NetNs) {
    let node = NetNs::new();
    let peers = NetNs::new();
    for (i, n) in names.iter().enumerate() {
        node.veth_to(n, &format!("peer{i}"), &peers, &format!("peer{i}"));
    }
    (node, peers)
}

/// Program ids on `ifname`'s tcx egress hook, in run order.
fn tcx_egress(ns: &NetNs, ifname: &str) -> Vec<u32> {
    ns.tcx(ifname).1.iter().map(|p| p.prog_id).collect()
}

#[test]
fn in_links_mode_the_fence_runs_first_whoever_attached_first() {
    let (node, _peers) = node_with(&["vip0", "vip1"]);
    let (i0, i1) = (node.ifindex("vip0"), node.ifindex("vip1"));
    let pins = PinDir::new();
    let fence = VipFence::open(Some(&pins.0))
        .unwrap()
        .with_tcx_links(&pins.0)
        .unwrap();
    assert_eq!(fence.mode(), "tcx");
    assert_eq!(fence.handle(), fence_handle(Some(&pins.0)));
    assert!(pins.0.join("maps/furrow_vip_deadlines").exists());

    // The datapath on vip0 first (a management port: a link per hook).
    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    node.run(|| dp.attach_port("vip0", i0)).unwrap();
    let dp_egress = tcx_egress(&node, "vip0");
    assert_eq!(dp_egress.len(), 1);

    node.run(|| {
        for _ in 0..3 {
            fence.attach(i0).unwrap();
            fence.attach(i1).unwrap();
        }
    });
    // One fence link each, before the datapath's; ingress untouched.
    let fid = fence.program_id();
    assert_eq!(tcx_egress(&node, "vip0"), vec![fid, dp_egress[0]]);
    assert_eq!(tcx_egress(&node, "vip1"), vec![fid]);
    assert!(node.tcx("vip1").0.is_empty());
    assert!(egress(&node, "vip0").is_empty(), "no filter");
    node.run(|| {
        assert!(fence.is_attached(i0).unwrap() && fence.is_attached(i1).unwrap());
        assert_eq!(fence.attached().unwrap(), vec![i0, i1]);
        // The datapath does not see it as one of its own.
        assert_eq!(dp.pinned_ports().unwrap(), vec!["vip0"]);
        assert!(dp.is_port_attached("vip0").unwrap());
    });
    // Not visible from another netns.
    assert!(NetNs::new().run(|| fence.attached()).unwrap().is_empty());
    // The datapath attached after the fence still runs after it.
    node.run(|| dp.attach_port("vip1", i1)).unwrap();
    assert_eq!(
        tcx_egress(&node, "vip1"),
        vec![fid, dp.program_id(PROG_MGMT_TO_POD).unwrap()]
    );

    // Detaching either leaves the other alone.
    node.run(|| {
        assert!(fence.detach(i0).unwrap());
        assert!(!fence.detach(i0).unwrap());
    });
    assert_eq!(tcx_egress(&node, "vip0"), dp_egress);
    node.run(|| fence.attach(i0)).unwrap();
    assert_eq!(tcx_egress(&node, "vip0"), vec![fid, dp_egress[0]]);
    node.run(|| dp.detach_port("vip0", i0)).unwrap();
    assert_eq!(tcx_egress(&node, "vip0"), vec![fid]);

    // The link outlives the process (netd killed): a new instance finds
    // it, swaps its program in place, and can remove it.
    let link = node.tcx("vip0").1[0].link_id;
    drop(fence);
    assert_eq!(tcx_egress(&node, "vip0"), vec![fid]);
    let fence = VipFence::open(Some(&pins.0))
        .unwrap()
        .with_tcx_links(&pins.0)
        .unwrap();
    node.run(|| {
        assert_eq!(fence.attached().unwrap(), vec![i0, i1]);
        assert!(!fence.is_attached(i0).unwrap(), "the old program");
        fence.attach(i0).unwrap();
        assert!(fence.is_attached(i0).unwrap());
    });
    assert_eq!(node.tcx("vip0").1[0].link_id, link, "same link");
    node.run(|| {
        assert_eq!(fence.detach_all().unwrap(), vec![i0, i1]);
        assert!(fence.attached().unwrap().is_empty());
    });
    assert!(tcx_egress(&node, "vip0").is_empty());
    assert_eq!(
        tcx_egress(&node, "vip1"),
        vec![dp.program_id(PROG_MGMT_TO_POD).unwrap()]
    );

    // A device that goes away takes its link with it.
    node.run(|| fence.attach(i0)).unwrap();
    node.ip("link del vip0");
    let fence_pins = || {
        std::fs::read_dir(pins.0.join("links"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("fence-")
            })
            .count()
    };
    assert_eq!(fence_pins(), 1, "the defunct link's pin");
    node.run(|| {
        assert!(fence.attached().unwrap().is_empty());
        assert!(fence.detach_all().unwrap().is_empty());
        assert!(!fence.detach(i0).unwrap());
        assert!(fence.attach(i0).is_err(), "no such device");
    });
    assert_eq!(fence_pins(), 0, "defunct pins removed");
    fence.destroy().unwrap();
    dp.destroy().unwrap();
    assert!(!pins.0.exists());
}

#[test]
fn links_mode_migrates_the_filter_of_the_same_instance() {
    let (node, _peers) = node_with(&["vipm"]);
    let idx = node.ifindex("vipm");
    let pins = PinDir::new();
    let old = VipFence::open(Some(&pins.0)).unwrap();
    assert_eq!(old.mode(), "tc");
    node.run(|| old.attach(idx)).unwrap();
    assert_eq!(egress(&node, "vipm"), vec![fence_filter(&old)]);
    let new = VipFence::open(Some(&pins.0))
        .unwrap()
        .with_tcx_links(&pins.0)
        .unwrap();
    node.run(|| assert_eq!(new.attached().unwrap(), vec![idx]));
    node.run(|| new.attach(idx)).unwrap();
    assert!(egress(&node, "vipm").is_empty(), "the filter is gone");
    assert_eq!(tcx_egress(&node, "vipm"), vec![new.program_id()]);
    node.run(|| assert_eq!(new.detach_all().unwrap(), vec![idx]));
    new.destroy().unwrap();
}

#[test]
fn two_instances_fence_one_device_independently() {
    let (node, _peers) = node_with(&["vipx"]);
    let idx = node.ifindex("vipx");
    let (pa, pb) = (PinDir::new(), PinDir::new());
    let a = VipFence::open(Some(&pa.0)).unwrap();
    let b = VipFence::open(Some(&pb.0)).unwrap();
    assert_ne!(a.handle(), b.handle());
    node.run(|| {
        a.attach(idx).unwrap();
        b.attach(idx).unwrap();
        a.attach(idx).unwrap();
    });
    let mut both = vec![fence_filter(&a), fence_filter(&b)];
    both.sort_by(|x, y| x.handle.cmp(&y.handle));
    let mut seen = egress(&node, "vipx");
    seen.sort_by(|x, y| x.handle.cmp(&y.handle));
    assert_eq!(seen, both);
    node.run(|| {
        assert_eq!(a.attached().unwrap(), vec![idx]);
        assert_eq!(a.detach_all().unwrap(), vec![idx]);
        assert!(a.attached().unwrap().is_empty());
        assert_eq!(b.attached().unwrap(), vec![idx]);
        assert!(b.is_attached(idx).unwrap());
    });
    assert_eq!(egress(&node, "vipx"), vec![fence_filter(&b)]);
}

#[test]
fn a_restarted_instance_finds_its_predecessors_filters_and_deadlines() {
    let (node, _peers) = node_with(&["vipr"]);
    let idx = node.ifindex("vipr");
    let pins = PinDir::new();
    let mut first = VipFence::open(Some(&pins.0)).unwrap();
    node.run(|| first.attach(idx)).unwrap();
    first.set_deadline(vip(), MonotonicNs::now()).unwrap();
    let old = fence_filter(&first);
    let frame = garp(NODE_MAC, VIP);
    assert_eq!(verdict(&first, &frame), TC_ACT_SHOT);
    drop(first);
    // The filter outlives the process that attached it (and keeps
    // fencing with the deadlines last written).
    assert_eq!(egress(&node, "vipr"), vec![old.clone()]);

    let mut second = VipFence::open(Some(&pins.0)).unwrap();
    assert_ne!(second.program_id(), old.prog_id as u32);
    node.run(|| {
        assert_eq!(second.attached().unwrap(), vec![idx]);
        assert!(!second.is_attached(idx).unwrap(), "the old program");
    });
    // Same pinned maps: the old deadline and counters are there.
    assert!(second.deadline(vip()).unwrap().unwrap().has_passed());
    assert_eq!(second.drops().unwrap().arp, 1);
    assert_eq!(verdict(&second, &frame), TC_ACT_SHOT);
    // Attaching replaces the program in place.
    node.run(|| second.attach(idx)).unwrap();
    assert_eq!(egress(&node, "vipr"), vec![fence_filter(&second)]);
    // What a starting netd does: no filter, no deadline left.
    node.run(|| assert_eq!(second.detach_all().unwrap(), vec![idx]));
    second.clear().unwrap();
    assert!(egress(&node, "vipr").is_empty());
    assert!(second.deadlines().unwrap().is_empty());
    assert_eq!(verdict(&second, &frame), TC_ACT_UNSPEC);
    second.destroy().unwrap();
    assert!(!pins.0.join("maps/furrow_vip_deadlines").exists());
}

#[test]
fn open_refuses_a_relative_pin_dir_and_works_unpinned() {
    assert!(VipFence::open(Some(std::path::Path::new("furrow/x"))).is_err());
    let f = VipFence::open(None).unwrap();
    assert!(f.pin_dir().is_none());
    assert_eq!(f.handle(), fence_handle(None));
    assert_eq!(f.drops().unwrap(), FenceDrops::default());
    assert_eq!(PROG_VIP_FENCE, "furrow_vip_fence");
    assert!(VipFence::open_with(None, 0).is_err());
}

#[test]
fn an_unpinned_instance_with_its_own_handle_cleans_up_after_its_predecessor() {
    // netd pins nothing for the fence (--vip-only creates no pins): its
    // handle, from its --bpf-dir, is what finds a crashed netd's filters.
    let (node, _peers) = node_with(&["vipu"]);
    let idx = node.ifindex("vipu");
    let dir = std::path::Path::new("/sys/fs/bpf/furrow/some-instance");
    let handle = fence_handle(Some(dir));
    let mut first = VipFence::open_with(None, handle).unwrap();
    assert_eq!(first.handle(), handle);
    node.run(|| first.attach(idx)).unwrap();
    first.set_deadline(vip(), MonotonicNs::now()).unwrap();
    drop(first);
    assert!(!dir.exists(), "nothing pinned");
    // Another instance in the same netns does not see it as its own.
    let other = VipFence::open(None).unwrap();
    node.run(|| assert!(other.attached().unwrap().is_empty()));
    let second = VipFence::open_with(None, handle).unwrap();
    // A fresh map: the predecessor's deadlines went with it...
    assert!(second.deadlines().unwrap().is_empty());
    // ...but its filter, still fencing with them, is found and removed.
    node.run(|| {
        assert_eq!(second.attached().unwrap(), vec![idx]);
        assert_eq!(second.detach_all().unwrap(), vec![idx]);
    });
    assert!(egress(&node, "vipu").is_empty());
}

// ----------------------------------------------------------------- live

/// A node with a VIP (IPv4 and IPv6) on `vipn0`, a client on the other
/// end of the veth.
struct Live {
    node: NetNs,
    client: NetNs,
    idx: u32,
    node_mac: [u8; 6],
}

const NODE_IP: &str = "198.18.0.1";
const VIP_S: &str = "198.18.0.100";
const CLIENT_S: &str = "198.18.0.254";
const NODE_IP6: &str = "fd00:198:18::1";
const VIP6_S: &str = "fd00:198:18::100";
const CLIENT_IP6: &str = "fd00:198:18::254";

fn live() -> Live {
    let node = NetNs::new();
    let client = NetNs::new();
    node.veth_to("vipn0", "vipc0", &client, "eth0");
    node.sysctl("net.ipv6.conf.vipn0.disable_ipv6", "0");
    client.sysctl("net.ipv6.conf.eth0.disable_ipv6", "0");
    node.ip("link set vipn0 up");
    client.ip("link set eth0 up");
    node.ip(&format!("addr add {NODE_IP}/24 dev vipn0"));
    node.ip(&format!("addr add {VIP_S}/32 dev vipn0"));
    node.ip(&format!("addr add {NODE_IP6}/64 dev vipn0 nodad"));
    node.ip(&format!("addr add {VIP6_S}/128 dev vipn0 nodad"));
    client.ip(&format!("addr add {CLIENT_S}/24 dev eth0"));
    client.ip(&format!("addr add {CLIENT_IP6}/64 dev eth0 nodad"));
    Live {
        idx: node.ifindex("vipn0"),
        node_mac: node.mac("vipn0"),
        node,
        client,
    }
}

impl Live {
    fn ping(&self, to: &str) -> bool {
        let out = self
            .client
            .cmd("ping", &["-c", "1", "-W", "1", "-n", "-q", to]);
        out.status.success()
    }

    /// The client forgets every neighbour: its next packet to an address
    /// needs an ARP reply / NA first.
    fn forget(&self) {
        self.client.ip("neigh flush dev eth0");
    }

    /// The client knows the node's MAC for `ip` without asking.
    fn know(&self, ip: &str) {
        let mac = self
            .node_mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        self.client.ip(&format!(
            "neigh replace {ip} lladdr {mac} dev eth0 nud permanent"
        ));
    }
}

#[test]
fn live_a_vip_goes_silent_at_its_deadline_and_the_rest_keeps_flowing() {
    let l = live();
    let pins = PinDir::new();
    let mut fence = VipFence::open(Some(&pins.0))
        .unwrap()
        .with_tcx_links(&pins.0)
        .unwrap();
    // The datapath's management programs on the same device, after the
    // fence (both tcx links; the fence first, though attached second):
    // its egress program counts what it sees.
    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    l.node.run(|| dp.attach_port("vipn0", l.idx)).unwrap();
    l.node.run(|| fence.attach(l.idx)).unwrap();
    fence.set_deadline(vip(), far_future()).unwrap();
    fence
        .set_deadline(IpAddr::V6(vip6()), far_future())
        .unwrap();
    let watch = RawSock::open(&l.client, "eth0");
    let sender = RawSock::open(&l.node, "vipn0");

    // Held: the client resolves and reaches the VIP, announcements arrive.
    l.forget();
    assert!(l.ping(VIP_S), "ping {VIP_S} while held");
    assert!(l.ping(VIP6_S), "ping {VIP6_S} while held");
    let garp_seen = |sock: &RawSock| {
        sock.wait_for(Duration::from_millis(300), |s| {
            s.ethertype() == ETH_P_ARP && s.frame[28..32] == VIP
        })
        .is_some()
    };
    sender.send(&garp(l.node_mac, VIP));
    assert!(garp_seen(&watch), "the announcement went out while held");
    let rx_before = dp.port_stats(l.idx).unwrap().unwrap().rx_packets;
    assert!(
        rx_before > 0,
        "the datapath's egress filter ran after the fence"
    );
    assert_eq!(fence.drops().unwrap(), FenceDrops::default());

    // The deadline passes (netd stopped renewing it).
    fence.set_deadline(vip(), MonotonicNs::now()).unwrap();
    fence
        .set_deadline(IpAddr::V6(vip6()), MonotonicNs::now())
        .unwrap();
    l.forget();
    assert!(!l.ping(VIP_S), "the node answered ARP for a fenced VIP");
    assert!(!l.ping(VIP6_S), "the node answered NDP for a fenced VIP");
    let d = fence.drops().unwrap();
    assert!(d.arp >= 1 && d.neighbor_advert >= 1, "{d:?}");
    // Even a client that still knows the MAC gets nothing from the VIP.
    l.know(VIP_S);
    l.know(VIP6_S);
    assert!(!l.ping(VIP_S) && !l.ping(VIP6_S));
    let d = fence.drops().unwrap();
    assert!(d.ipv4 >= 1 && d.ipv6 >= 1, "{d:?}");
    watch.drain();
    // netd's announcements go through the hook too (AF_PACKET without
    // PACKET_QDISC_BYPASS): sendto reports the drop as ENOBUFS.
    let sent = sender.try_send(&garp(l.node_mac, VIP));
    assert_eq!(
        sent.as_ref().map_err(|e| e.raw_os_error()),
        Err(Some(libc::ENOBUFS)),
        "{sent:?}"
    );
    assert!(
        !garp_seen(&watch),
        "an announcement of a fenced VIP got out"
    );
    // The node's own addresses are not the VIP's: untouched.
    l.forget();
    assert!(
        l.ping(NODE_IP) && l.ping(NODE_IP6),
        "the node's own addresses"
    );
    assert!(dp.port_stats(l.idx).unwrap().unwrap().rx_packets > rx_before);

    // Renewed: back at once, no re-attach.
    fence.set_deadline(vip(), far_future()).unwrap();
    fence
        .set_deadline(IpAddr::V6(vip6()), far_future())
        .unwrap();
    l.forget();
    assert!(l.ping(VIP_S) && l.ping(VIP6_S), "renewed");

    // Detached: the fence is out of the path, deadlines or not.
    fence.set_deadline(vip(), MonotonicNs::now()).unwrap();
    l.node.run(|| fence.detach(l.idx)).unwrap();
    l.forget();
    assert!(l.ping(VIP_S), "detached");
    fence.destroy().unwrap();
    dp.destroy().unwrap();
}

#[test]
fn per_frame_cost_is_printed() {
    // Every frame the node sends on a VIP's interface (an uplink carries
    // all of them) goes through the fence: at most a few loads and one
    // hash lookup.
    let mut fence = VipFence::open(None).unwrap();
    for i in 0..64u8 {
        fence
            .set_deadline(IpAddr::V4(Ipv4Addr::new(198, 18, 1, i)), far_future())
            .unwrap();
    }
    fence.set_deadline(vip(), far_future()).unwrap();
    let unrelated = udp4(OTHER, CLIENT);
    let held = udp4(VIP, CLIENT);
    let lldp = {
        let mut f = eth_header([0x01, 0x80, 0xc2, 0, 0, 0x0e], NODE_MAC, 0x88cc);
        f.resize(60, 0);
        f
    };
    let run = |fence: &VipFence, f: &[u8]| test_run(fence.program_fd(), f, None, 100_000).unwrap();
    let (a, b, c) = (
        run(&fence, &unrelated),
        run(&fence, &held),
        run(&fence, &lldp),
    );
    assert_eq!(
        (a.retval, b.retval, c.retval),
        (TC_ACT_UNSPEC, TC_ACT_UNSPEC, TC_ACT_UNSPEC)
    );
    fence.set_deadline(vip(), MonotonicNs::now()).unwrap();
    let d = run(&fence, &held);
    assert_eq!(d.retval, TC_ACT_SHOT);
    println!(
        "per frame: IPv4 from another address {} ns, IPv4 from a held VIP {} ns, \
         non-IP {} ns, dropped {} ns",
        a.duration_ns, b.duration_ns, c.duration_ns, d.duration_ns
    );
}
