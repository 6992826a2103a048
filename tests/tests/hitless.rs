//! Hitless restart and upgrade (issue 10): flows of 1000 packets/s between
//! VMs on a VLAN network (eBPF backend; one pair on the same node, one
//! across nodes through the uplinks) and between two management-network
//! pods lose no packet while node1's netd is stopped with SIGTERM and
//! started again, killed with SIGKILL and started again, and upgraded to
//! other programs (another datapath generation): the pinned tcx links
//! keep running the programs while netd is down, and the new programs are
//! swapped into the same links.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use furrow_tests::flow::{Flow, FlowReport};
use furrow_tests::lab::vlan_nad;
use furrow_tests::{probe, Lab, Netns, Node, Pod};

const CN: &str = "data";
const NIC: &str = "data0";
const RATE: u32 = 1000;

/// What runs on the tcx hooks of a node's devices through links:
/// (ifname, hook) -> (program id, link id).
fn tcx_links(node: &Node) -> BTreeMap<(String, &'static str), (u32, u32)> {
    let v: serde_json::Value =
        serde_json::from_str(&node.ns.ip(&["-j", "link", "show"]).unwrap()).unwrap();
    let devs: Vec<(String, u32)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["ifname"].as_str().unwrap().to_string(),
                l["ifindex"].as_u64().unwrap() as u32,
            )
        })
        .collect();
    node.ns
        .enter(move || {
            let mut out = BTreeMap::new();
            for (name, idx) in devs {
                for (hook, egress) in [("ingress", false), ("egress", true)] {
                    for p in furrow_ebpf::tcx_programs(idx, egress).unwrap_or_default() {
                        if p.link_id != 0 {
                            out.insert((name.clone(), hook), (p.prog_id, p.link_id));
                        }
                    }
                }
            }
            out
        })
        .unwrap()
}

fn vm(lab: &Lab, node: usize, tag: &str, ip: Ipv4Addr) -> Pod {
    let n = lab.node(node);
    let pod = n
        .vm(tag, &vlan_nad("vlan100", CN, 100, &n.netd.socket))
        .unwrap_or_else(|e| panic!("ADD of {tag}: {e:#}"));
    pod.ns
        .ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])
        .unwrap();
    pod
}

struct Pair<'a> {
    name: &'static str,
    from: &'a Netns,
    to: &'a Netns,
    ip: Ipv4Addr,
    port: u16,
}

/// Runs the flows through `disrupt` (which returns once netd is serving
/// again), for at least a second before and after, and reports them.
fn through(pairs: &[Pair], disrupt: impl FnOnce()) -> Vec<FlowReport> {
    let flows: Vec<Flow> = pairs
        .iter()
        .map(|p| Flow::start(p.name, p.from, p.to, p.ip, p.port, RATE).unwrap())
        .collect();
    // Flowing before the disruption.
    let deadline = Instant::now() + Duration::from_secs(10);
    while flows.iter().any(|f| f.received() < u64::from(RATE) / 2) {
        assert!(Instant::now() < deadline, "the flows did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    disrupt();
    std::thread::sleep(Duration::from_secs(1));
    flows.into_iter().map(|f| f.stop().unwrap()).collect()
}

fn assert_no_loss(phase: &str, reports: &[FlowReport]) {
    for r in reports {
        eprintln!(
            "{phase}: {}: sent {}, received {}, lost {}, send errors {}",
            r.name, r.sent, r.received, r.lost_count, r.send_errors
        );
    }
    for r in reports {
        assert!(
            r.sent >= u64::from(RATE),
            "{phase}: {}: only {} sent",
            r.name,
            r.sent
        );
        assert_eq!(
            r.lost_count, 0,
            "{phase}: {}: {} of {} lost (first: {:?})",
            r.name, r.lost_count, r.sent, r.lost
        );
    }
}

#[test]
fn flows_lose_nothing_across_sigterm_sigkill_and_an_upgrade() {
    let mut lab = Lab::new().unwrap();
    for n in ["node1", "node2"] {
        lab.add_node(n).unwrap();
    }
    for i in 0..2 {
        lab.add_data_nic(i, NIC).unwrap();
        lab.node(i)
            .cluster_network(CN, "ebpf", &[NIC], 1500)
            .unwrap();
        let info = lab.node(i).cluster_network_info(CN).unwrap();
        assert!(info.problem.is_none(), "{:?}", info.problem);
        assert_eq!(info.backend, "ebpf");
    }
    let ips = [
        Ipv4Addr::new(10, 78, 0, 11),
        Ipv4Addr::new(10, 78, 0, 12),
        Ipv4Addr::new(10, 78, 0, 21),
    ];
    let a = vm(&lab, 0, "hla", ips[0]);
    let b = vm(&lab, 0, "hlb", ips[1]);
    let c = vm(&lab, 1, "hlc", ips[2]);
    let p = lab.node(0).mgmt_pod("hlp").unwrap();
    let q = lab.node(0).mgmt_pod("hlq").unwrap();
    // Neighbours resolved, paths up.
    for (from, to) in [(&a, ips[1]), (&a, ips[2]), (&b, ips[0]), (&c, ips[0])] {
        assert!(probe::ping_ok(&from.ns, IpAddr::V4(to), 5), "{to}");
    }
    assert!(probe::ping_ok(&p.ns, IpAddr::V4(q.ip()), 5));
    assert!(probe::ping_ok(&q.ns, IpAddr::V4(p.ip()), 5));

    let pairs = [
        Pair {
            name: "vm a -> vm b (same node)",
            from: &a.ns,
            to: &b.ns,
            ip: ips[1],
            port: 7001,
        },
        Pair {
            name: "vm a -> vm c (across nodes)",
            from: &a.ns,
            to: &c.ns,
            ip: ips[2],
            port: 7002,
        },
        Pair {
            name: "vm c -> vm b (across nodes)",
            from: &c.ns,
            to: &b.ns,
            ip: ips[1],
            port: 7003,
        },
        Pair {
            name: "pod p -> pod q (management)",
            from: &p.ns,
            to: &q.ns,
            ip: q.ip(),
            port: 7004,
        },
    ];
    let before = tcx_links(lab.node(0));
    assert!(
        before.len() >= 6,
        "links on node1's ports (VM ports, uplink, pods): {before:?}"
    );

    // 1. SIGTERM, then start again.
    let reports = through(&pairs, || {
        let netd = &mut lab.node_mut(0).netd;
        assert!(netd.stop().unwrap(), "netd exits 0 on SIGTERM");
        std::thread::sleep(Duration::from_millis(500));
        netd.start().unwrap();
    });
    assert_no_loss("SIGTERM", &reports);
    assert_eq!(
        tcx_links(lab.node(0)),
        before,
        "same links, same (reused) programs"
    );

    // 2. SIGKILL, then start again.
    let reports = through(&pairs, || {
        let netd = &mut lab.node_mut(0).netd;
        netd.kill();
        std::thread::sleep(Duration::from_millis(500));
        netd.start().unwrap();
    });
    assert_no_loss("SIGKILL", &reports);
    assert_eq!(tcx_links(lab.node(0)), before);

    // 3. An upgrade that changes the programs.
    let reports = through(&pairs, || {
        let netd = &mut lab.node_mut(0).netd;
        assert!(netd.stop().unwrap());
        netd.extra_args
            .extend(["--datapath-generation".to_string(), "2".to_string()]);
        netd.start().unwrap();
    });
    assert_no_loss("upgrade", &reports);
    let after = tcx_links(lab.node(0));
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "the same hooks carry links"
    );
    for (k, (prog, link)) in &after {
        let (old_prog, old_link) = before[k];
        assert_eq!(*link, old_link, "{k:?}: the same link");
        assert_ne!(*prog, old_prog, "{k:?}: a new program");
    }
    assert!(
        lab.node(0)
            .netd
            .log()
            .contains("tcx link now runs the new program"),
        "netd says it swapped the programs"
    );
    // netd's API shows the same links, with the new programs.
    let st: furrow_api::wire::NodeStatus = lab.node(0).netd.client().get("/v1/status").unwrap();
    assert_eq!(st.datapath.mode, "ebpf-tcx");
    let api: BTreeMap<(String, String), (u32, u32)> = st
        .datapath
        .attachments
        .iter()
        .map(|a| {
            assert_eq!(a.mode, "tcx", "{a:?}");
            ((a.ifname.clone(), a.hook.clone()), (a.prog_id, a.link_id))
        })
        .collect();
    let kernel: BTreeMap<(String, String), (u32, u32)> = after
        .iter()
        .map(|((n, h), v)| ((n.clone(), h.to_string()), *v))
        .collect();
    assert_eq!(api, kernel, "the API lists exactly the links in the kernel");

    // Still forwarding, both ways.
    for (from, to) in [(&b, ips[0]), (&c, ips[1])] {
        assert!(probe::ping_ok(&from.ns, IpAddr::V4(to), 3), "{to}");
    }
    assert!(probe::ping_ok(&q.ns, IpAddr::V4(p.ip()), 3));
}
