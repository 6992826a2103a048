//! Scale: 1000 VM ports on 200 VLANs on one node (eBPF switch), beside
//! the VLAN scenario's VMs; then the scenario's isolation checks, and the
//! broadcast domains of all 200 VLANs accounted frame by frame through
//! the switch's own per-port counters.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use furrow_tests::probe;
use furrow_tests::scenario::scale::{delivered, quiet_vms, send_broadcast};
use furrow_tests::scenario::vlan::{VlanLab, CN};

const FIRST_VLAN: u16 = 1000;
const VLANS: u16 = 200;
const PER_VLAN: usize = 5;
const FRAMES: u64 = 3;

#[test]
fn a_thousand_ports_on_two_hundred_vlans_keep_every_vlan_isolated() {
    let v = VlanLab::build("ebpf").unwrap();
    let node = v.lab.node(0);
    let vlans: Vec<u16> = (FIRST_VLAN..FIRST_VLAN + VLANS).collect();
    let started = Instant::now();
    let vms = quiet_vms(CN, &vlans, PER_VLAN, &node.netd.socket, 4).unwrap();
    let mut lat: Vec<Duration> = vms.iter().map(|q| q.add_latency).collect();
    lat.sort();
    eprintln!(
        "{} ports in {:?}; ADD p50 {:?} p99 {:?}",
        vms.len(),
        started.elapsed(),
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100]
    );

    // netd's view: every port, every VLAN.
    let ports: Vec<furrow_api::wire::PortInfo> = node.netd.client().get("/v1/ports").unwrap();
    assert!(ports.len() >= 1000, "{} ports listed", ports.len());
    let info = node.cluster_network_info(CN).unwrap();
    assert!(info.problem.is_none(), "{:?}", info.problem);
    for vid in &vlans {
        assert!(
            info.vlans.contains(vid),
            "VLAN {vid} missing from {:?}",
            info.vlans
        );
    }
    assert!(info.vlans.len() >= 200);

    // Every VLAN's broadcast reaches exactly its own ports: one sender per
    // VLAN, FRAMES frames each; every other port of that VLAN receives
    // exactly FRAMES more, every port of the other 199 VLANs none of them.
    let by_vlan: BTreeMap<u16, Vec<&furrow_tests::scenario::scale::QuietVm>> =
        vms.iter().fold(BTreeMap::new(), |mut m, q| {
            m.entry(q.vlan).or_insert_with(Vec::new).push(q);
            m
        });
    let before = delivered(&node.netd.socket).unwrap();
    for (vid, members) in &by_vlan {
        send_broadcast(&members[0].pod.ns, "eth0", FRAMES as usize, u32::from(*vid)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = delivered(&node.netd.socket).unwrap();
    let mut wrong = Vec::new();
    for members in by_vlan.values() {
        for (i, q) in members.iter().enumerate() {
            let id = &q.pod.container_id;
            let (Some(a), Some(b)) = (after.get(id), before.get(id)) else {
                wrong.push(format!("VLAN {} port {i}: no counters", q.vlan));
                continue;
            };
            let got = a - b;
            let want = if i == 0 { 0 } else { FRAMES };
            if got != want {
                wrong.push(format!(
                    "VLAN {} port {i}: {got} frames, expected {want}",
                    q.vlan
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} ports saw the wrong broadcasts, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );

    // Unicast: 20 VLANs, two VMs each, all in one /24, so only layer-2
    // isolation keeps the pairs apart.
    let addr = |k: usize, j: usize| Ipv4Addr::new(10, 79, 0, (10 + 2 * k + j) as u8);
    let pairs: Vec<_> = by_vlan.values().step_by(10).take(20).collect();
    for (k, members) in pairs.iter().enumerate() {
        for j in 0..2 {
            members[j]
                .pod
                .ns
                .ip(&["addr", "add", &format!("{}/24", addr(k, j)), "dev", "eth0"])
                .unwrap();
        }
    }
    for (k, members) in pairs.iter().enumerate() {
        assert!(
            probe::ping_ok(&members[0].pod.ns, IpAddr::V4(addr(k, 1)), 3),
            "VLAN {}: its two VMs cannot reach each other",
            members[0].vlan
        );
        let other = (k + 1) % pairs.len();
        assert!(
            !probe::ping(&members[0].pod.ns, IpAddr::V4(addr(other, 1))),
            "VLAN {} reaches VLAN {}",
            members[0].vlan,
            pairs[other][0].vlan
        );
    }

    // The VLAN scenario's own checks, with the node full.
    v.check_same_vlan().unwrap();
    v.check_isolation().unwrap();
    v.check_trunk_and_broadcast_domains().unwrap();
    v.check_no_loops().unwrap();
    drop(vms);
}
