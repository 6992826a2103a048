//! Trace (dry-run) mode of the 802.1Q switch (`Datapath::l2_trace`, what
//! `netctl trace` runs): the real `furrow_l2_ingress` on a crafted frame,
//! with the decisions recorded and nothing changed: no counters, no MAC
//! learning, no flood copies sent.

mod common;

use common::{l2::*, *};
use furrow_ebpf::*;

const CN: u32 = 1;
const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const MAC_C: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0c];
const MAC_REMOTE: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
const UPLINK_MAC: [u8; 6] = [0x02, 0x55, 0, 0, 0, 0x01];

/// Access ports vm1, vm2 on VLAN 100, vm3 on 200, a trunk vmt (100, 200)
/// and the uplink; vm2's and vm3's MACs static (as netd installs them).
/// Counters and the FDB (ages left out: they change with time).
type Snapshot = (
    Vec<(u32, PortStats)>,
    Vec<(u32, u16, VlanStats)>,
    Vec<FdbEntry>,
);

struct Sw {
    node: NetNs,
    _peers: NetNs,
    dp: Datapath,
    _pins: PinDir,
    vm1: u32,
    vm2: u32,
    vm3: u32,
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
            common::veth_switch(&["vm1", "vm2", "vm3", "vmt", "upl"]);
        let (vm1, vm2, vm3, vmt, up) = (idx[0], idx[1], idx[2], idx[3], idx[4]);
        let trunk = VlanSet::from_ranges([100..=100, 200..=200]).unwrap();
        node.run(|| {
            for (n, i, m) in [
                ("vm1", vm1, L2Mode::Access { vid: 100 }),
                ("vm2", vm2, L2Mode::Access { vid: 100 }),
                ("vm3", vm3, L2Mode::Access { vid: 200 }),
                ("vmt", vmt, L2Mode::Trunk { allowed: trunk }),
                (
                    "upl",
                    up,
                    L2Mode::Uplink {
                        own_mac: UPLINK_MAC,
                    },
                ),
            ] {
                dp.l2_attach_port(n, i, &port(m)).unwrap();
            }
        });
        dp.l2_set_vlan(CN, 100, &[vm1, vm2, vmt, up], false)
            .unwrap();
        dp.l2_set_vlan(CN, 200, &[vm3, vmt, up], false).unwrap();
        dp.fdb_add_static(CN, 100, MAC_B, vm2).unwrap();
        dp.fdb_add_static(CN, 200, MAC_C, vm3).unwrap();
        Sw {
            node,
            _peers: peers,
            dp,
            _pins: pins,
            vm1,
            vm2,
            vm3,
            vmt,
            up,
        }
    }

    fn trace(&self, from: u32, dst: [u8; 6], tag: Option<u16>) -> L2TraceReport {
        let f = L2TraceFrame {
            src_mac: MAC_A,
            dst_mac: dst,
            tag,
            src_ip: Some("10.0.0.1".parse().unwrap()),
            dst_ip: Some("10.0.0.2".parse().unwrap()),
        };
        let names = [
            (self.vm1, "vm1"),
            (self.vm2, "vm2"),
            (self.vm3, "vm3"),
            (self.vmt, "vmt"),
            (self.up, "upl"),
        ];
        let name = move |i: u32| {
            names
                .iter()
                .find(|(x, _)| *x == i)
                .map(|(_, n)| n.to_string())
                .unwrap_or_else(|| format!("if{i}"))
        };
        let r = self.node.run(|| self.dp.l2_trace(from, &f, &name)).unwrap();
        for s in &r.steps {
            eprintln!("  {:8} {}  {:?}", s.stage, s.decision, s.entries);
        }
        r
    }

    /// Everything a trace must leave alone: counters and the FDB.
    fn snapshot(&self) -> Snapshot {
        let mut fdb = self.dp.fdb_entries().unwrap();
        for e in &mut fdb {
            e.age = None; // changes with time; refreshes are checked by age
        }
        (
            self.dp.all_port_stats().unwrap(),
            self.dp.vlan_stats().unwrap(),
            fdb,
        )
    }
}

#[test]
fn same_vlan_local_is_redirected_to_the_port_with_the_mac() {
    let sw = Sw::new();
    let before = sw.snapshot();
    let r = sw.trace(sw.vm1, MAC_B, None);
    assert_eq!(r.verdict, "forward");
    assert_eq!(r.vid, Some(100));
    assert_eq!(r.out_ports, vec![sw.vm2]);
    assert_eq!(r.run.retval, TC_ACT_REDIRECT);
    let stages: Vec<_> = r.steps.iter().map(|s| s.stage).collect();
    assert_eq!(stages, ["port", "vlan", "source", "fdb", "forward"]);
    let fdb = &r.steps[3];
    assert!(
        fdb.entries[0].contains("vm2") && fdb.entries[0].contains("static"),
        "{fdb:?}"
    );
    assert!(
        r.steps[2].decision.contains("would learn"),
        "{:?}",
        r.steps[2]
    );
    // Nothing learned (MAC_A unknown before), nothing counted.
    assert_eq!(sw.snapshot(), before);
    assert!(sw.dp.fdb_entries().unwrap().iter().all(|e| e.mac != MAC_A));
}

#[test]
fn same_vlan_remote_goes_to_the_uplink_tagged() {
    let sw = Sw::new();
    // A live frame from the wire teaches the switch where MAC_REMOTE is.
    let live = with_tag(&raw_frame(BCAST, MAC_REMOTE, 60), TPID_8021Q, 100);
    let fd = sw.dp.program_fd(PROG_L2_INGRESS).unwrap();
    sw.node
        .run(|| {
            test_run(
                fd,
                &live,
                Some(&SkbContext {
                    ifindex: sw.up,
                    ..Default::default()
                }),
                1,
            )
        })
        .unwrap();
    let learned = |sw: &Sw| {
        sw.dp
            .fdb_entries()
            .unwrap()
            .into_iter()
            .find(|e| e.mac == MAC_REMOTE)
            .expect("learned")
    };
    assert_eq!(learned(&sw).ifindex, sw.up);
    let age = learned(&sw).age.unwrap();
    let before = sw.snapshot();
    let r = sw.trace(sw.vm1, MAC_REMOTE, None);
    assert_eq!(r.verdict, "forward");
    assert_eq!(r.out_ports, vec![sw.up]);
    assert_eq!(
        r.run.trace.unwrap().egress_tci.map(|t| t & 0xfff),
        Some(100)
    );
    assert!(r.steps.last().unwrap().decision.contains("tagged VLAN 100"));
    assert_eq!(sw.snapshot(), before);

    // A trace from the uplink with MAC_REMOTE as source does not refresh
    // or move anything either (the learned entry keeps its port).
    let f = L2TraceFrame {
        src_mac: MAC_REMOTE,
        dst_mac: MAC_B,
        tag: Some(100),
        src_ip: None,
        dst_ip: None,
    };
    let run = sw
        .node
        .run(|| sw.dp.l2_trace_run(sw.vm1, &f.build()))
        .unwrap();
    assert_eq!(run.trace.unwrap().verdict, L2Verdict::DropVlan);
    let untagged = L2TraceFrame { tag: None, ..f };
    let run = sw
        .node
        .run(|| sw.dp.l2_trace_run(sw.vm1, &untagged.build()))
        .unwrap();
    assert_eq!(run.trace.unwrap().verdict, L2Verdict::Unicast);
    assert_eq!(learned(&sw).ifindex, sw.up, "not moved to vm1 by a trace");
    assert!(learned(&sw).age.unwrap() >= age, "last_seen not refreshed");
    assert_eq!(sw.snapshot(), before);
}

#[test]
fn other_vlan_is_dropped_or_confined_to_its_own_vlan() {
    let sw = Sw::new();
    let before = sw.snapshot();
    // A tagged frame (VLAN 200) from an access port of VLAN 100: the VLAN
    // filter drops it.
    let r = sw.trace(sw.vm1, MAC_C, Some(200));
    assert_eq!(r.verdict, "drop");
    assert_eq!(r.run.trace.unwrap().verdict, L2Verdict::DropVlan);
    assert!(r.out_ports.is_empty());
    assert_eq!(r.steps[1].stage, "vlan");
    // The trunk may send VLAN 200 but not 300.
    let r = sw.trace(sw.vmt, MAC_C, Some(300));
    assert_eq!(r.verdict, "drop");
    // Untagged to a MAC that lives on VLAN 200: unknown on VLAN 100,
    // flooded there, never to vm3.
    let r = sw.trace(sw.vm1, MAC_C, None);
    assert_eq!(r.verdict, "flood");
    assert!(!r.out_ports.contains(&sw.vm3));
    assert_eq!(sw.snapshot(), before, "no drop counted, nothing learned");
}

#[test]
fn broadcast_is_flooded_to_the_listed_ports_without_sending_copies() {
    let sw = Sw::new();
    let before = sw.snapshot();
    let r = sw.trace(sw.vm1, BCAST, None);
    assert_eq!(r.verdict, "flood");
    assert_eq!(r.out_ports, vec![sw.vm2, sw.vmt, sw.up]);
    assert_eq!(r.run.trace.unwrap().flood_copies, 3);
    assert!(
        r.steps.last().unwrap().decision.contains("vm2, vmt, upl"),
        "{:?}",
        r.steps
    );
    // No clone was sent: rx counters untouched (a live flood counts each).
    assert_eq!(sw.snapshot(), before);

    // The same frame live: learned, counted, copies sent.
    let frame = raw_frame(BCAST, MAC_A, 60);
    let fd = sw.dp.program_fd(PROG_L2_INGRESS).unwrap();
    let out = sw
        .node
        .run(|| {
            test_run(
                fd,
                &frame,
                Some(&SkbContext {
                    ifindex: sw.vm1,
                    ..Default::default()
                }),
                1,
            )
        })
        .unwrap();
    assert_eq!(out.data_out, frame, "no trailer outside trace mode");
    assert_eq!(sw.dp.port_stats(sw.vm2).unwrap().unwrap().rx_packets, 1);
    assert!(sw.dp.fdb_entries().unwrap().iter().any(|e| e.mac == MAC_A));
}

#[test]
fn unknown_port_passes() {
    let sw = Sw::new();
    let lo = 1;
    let r = sw.trace(lo, BCAST, None);
    assert_eq!(r.verdict, "pass");
}
