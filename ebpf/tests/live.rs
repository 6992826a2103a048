//! Live traffic between two pods through the datapath, in private netns:
//! a node netns holding the host-side veths, one netns per pod, addressed
//! the way netd does it (gateway /32 on every host veth, pod /32 with a
//! route to the gateway and a default route via it).

mod common;

use std::net::Ipv4Addr;

use common::*;
use furrow_ebpf::*;

const GW: &str = "10.98.0.1";
const POD_A: &str = "10.98.0.2";
const POD_B: &str = "10.98.0.3";

struct Pod {
    ns: NetNs,
    host_if: &'static str,
    host_idx: u32,
    host_mac: [u8; 6],
    mac: [u8; 6],
    ip: &'static str,
}

fn pod(node: &NetNs, host_if: &'static str, ip: &'static str) -> Pod {
    let ns = NetNs::new();
    node.veth_to(host_if, &format!("{host_if}p"), &ns, "eth0");
    node.ip(&format!("link set {host_if} up"));
    node.ip(&format!("addr add {GW}/32 dev {host_if}"));
    node.ip(&format!("route add {ip}/32 dev {host_if}"));
    ns.ip("link set eth0 up");
    ns.ip(&format!("addr add {ip}/32 dev eth0"));
    ns.ip(&format!("route add {GW} dev eth0 scope link"));
    ns.ip(&format!("route add default via {GW} dev eth0"));
    Pod {
        host_idx: node.ifindex(host_if),
        host_mac: node.mac(host_if),
        mac: ns.mac("eth0"),
        ns,
        host_if,
        ip,
    }
}

fn endpoint(p: &Pod) -> MgmtEndpoint {
    MgmtEndpoint {
        host_ifindex: p.host_idx,
        pod_mac: p.mac,
        host_mac: p.host_mac,
    }
}

fn ping(from: &Pod, to: &str, count: u32) -> bool {
    let count = count.to_string();
    let out = from.ns.cmd(
        "ping",
        &["-c", &count, "-i", "0.2", "-W", "1", "-n", "-q", to],
    );
    out.status.success()
}

fn redirected(dp: &Datapath, p: &Pod) -> u64 {
    dp.port_stats(p.host_idx)
        .unwrap()
        .expect("port attached")
        .redirected_packets
}

#[test]
fn pods_talk_through_the_datapath_then_the_kernel() {
    let node = NetNs::new();
    let a = pod(&node, "fwpoda", POD_A);
    let b = pod(&node, "fwpodb", POD_B);
    // Forwarding off: only the datapath can carry pod-to-pod traffic.
    node.sysctl("net.ipv4.ip_forward", "0");

    let pins = PinDir::new();
    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    node.run(|| {
        dp.attach_port(a.host_if, a.host_idx).unwrap();
        dp.attach_port(b.host_if, b.host_idx).unwrap();
    });
    for p in [&a, &b] {
        dp.upsert_endpoint(p.ip.parse::<Ipv4Addr>().unwrap(), endpoint(p))
            .unwrap();
    }

    assert!(ping(&a, POD_B, 3), "A -> B through the datapath");
    let (ra, rb) = (redirected(&dp, &a), redirected(&dp, &b));
    assert!(ra >= 3, "A's echo requests were redirected ({ra})");
    assert!(rb >= 3, "B's echo replies were redirected ({rb})");
    let sb = dp.port_stats(b.host_idx).unwrap().unwrap();
    assert!(sb.rx_packets >= 3 && sb.tx_packets >= 3, "{sb:?}");

    // netd restarts: the filters keep forwarding without it...
    let old_ids = node.hook_prog_ids(a.host_if);
    drop(dp);
    assert!(
        ping(&a, POD_B, 1),
        "forwarding continues while netd is down"
    );
    // ...and the new instance, an upgrade (other programs), takes over
    // the same links and counters, swapping the programs in while
    // traffic flows.
    let (flood, mut dp) = {
        let ns = &a.ns;
        std::thread::scope(|s| {
            let pinger = s.spawn(|| {
                ns.cmd(
                    "ping",
                    &["-c", "300", "-i", "0.002", "-W", "1", "-n", "-q", POD_B],
                )
            });
            std::thread::sleep(std::time::Duration::from_millis(100));
            let mut dp = Datapath::open(DatapathConfig::new(&pins.0).with_generation(1)).unwrap();
            assert_eq!(dp.open_report().links_updated, 4);
            assert_eq!(
                node.run(|| dp.pinned_ports()).unwrap(),
                vec!["fwpoda", "fwpodb"]
            );
            node.run(|| {
                dp.attach_port(a.host_if, a.host_idx).unwrap();
                dp.attach_port(b.host_if, b.host_idx).unwrap();
            });
            (pinger.join().unwrap(), dp)
        })
    };
    let text = String::from_utf8_lossy(&flood.stdout);
    assert!(
        flood.status.success() && text.contains(" 0% packet loss"),
        "no loss while the programs are replaced: {text}"
    );
    let new_ids = node.hook_prog_ids(a.host_if);
    assert_ne!(new_ids, old_ids);
    assert_eq!(
        new_ids,
        (
            vec![dp.program_id(PROG_MGMT_FROM_POD).unwrap().into()],
            vec![dp.program_id(PROG_MGMT_TO_POD).unwrap().into()]
        ),
        "one link per hook, running the new programs"
    );
    let before = redirected(&dp, &a);
    assert!(before > ra, "counters survived the restart");
    assert!(ping(&b, POD_A, 2), "B -> A after the restart");
    assert!(
        redirected(&dp, &a) >= before + 2,
        "replies from A redirected by the new programs"
    );

    // Detach: the datapath is out of the path; endpoints may linger
    // (netd removes them separately) and must not matter.
    node.run(|| {
        dp.detach_port(a.host_if, a.host_idx).unwrap();
        dp.detach_port(b.host_if, b.host_idx).unwrap();
    });
    assert!(node.run(|| dp.pinned_ports()).unwrap().is_empty());
    assert_eq!(dp.all_port_stats().unwrap(), vec![]);
    for p in [&a, &b] {
        assert_eq!(node.hook_prog_ids(p.host_if), (vec![], vec![]));
    }
    assert!(
        !ping(&a, POD_B, 1),
        "without forwarding the kernel path is closed"
    );
    node.sysctl("net.ipv4.ip_forward", "1");
    assert!(
        ping(&a, POD_B, 2),
        "A -> B through the kernel once forwarding is on"
    );
    assert!(ping(&b, POD_A, 1), "B -> A through the kernel");
}

#[test]
fn ttl_expiry_and_outside_destinations_are_left_to_the_kernel() {
    let node = NetNs::new();
    let a = pod(&node, "fwpoda", POD_A);
    let b = pod(&node, "fwpodb", POD_B);
    node.sysctl("net.ipv4.ip_forward", "1");
    let pins = PinDir::new();
    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    node.run(|| {
        dp.attach_port(a.host_if, a.host_idx).unwrap();
        dp.attach_port(b.host_if, b.host_idx).unwrap();
    });
    for p in [&a, &b] {
        dp.upsert_endpoint(p.ip.parse::<Ipv4Addr>().unwrap(), endpoint(p))
            .unwrap();
    }
    // TTL 1: the kernel must answer "time to live exceeded", so ping fails
    // but the node's answer reaches A (ping exits 1, not 2).
    let out =
        a.ns.cmd("ping", &["-c", "1", "-W", "1", "-t", "1", "-n", POD_B]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Time to live exceeded"),
        "expected ICMP time exceeded from the node, got: {text}"
    );
    assert_eq!(redirected(&dp, &a), 0);
    // The gateway address itself is the node's: kernel path.
    assert!(ping(&a, GW, 1));
    assert_eq!(redirected(&dp, &a), 0);
    let sa = dp.port_stats(a.host_idx).unwrap().unwrap();
    assert!(sa.tx_packets >= 2 && sa.rx_packets >= 2, "{sa:?}");
}
