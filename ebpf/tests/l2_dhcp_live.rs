//! DHCP served by every node for its own VMs, live, in the two-node lab
//! (common/lab.rs): on each node a responder port (a veth whose switch end
//! is an access port of VLAN 100, trusted and local-only, and whose node
//! end runs a real dnsmasq), both nodes answering from the SAME server MAC
//! and IP with different ranges, so a lease tells who answered. busybox
//! udhcpc runs in the VMs; tcpdump watches the fabric.

mod common;

use std::{
    path::{Path, PathBuf},
    thread::sleep,
    time::{Duration, Instant},
};

use common::{lab::*, *};
use furrow_ebpf::*;

const VID: u16 = 100;
/// The anycast server: the same MAC and IP on every node.
const SERVER_MAC: [u8; 6] = [0x02, 0xd4, 0xc9, 0, 0, 0x01];
const SERVER_IP: &str = "10.50.0.2";
/// Lease ranges: node 1's server, node 2's, the rogue's (host parts).
const RANGES: [(u8, u8); 3] = [(100, 149), (150, 199), (200, 249)];

/// A node's responder: the switch end `dhcpr` (a port of the switch),
/// the node end `dhcps` with the server MAC and IP, dnsmasq on it.
struct Responder {
    idx: u32,
    _dnsmasq: Proc,
    log: PathBuf,
}

fn dnsmasq_args(ifname: &str, range: (u8, u8), dir: &TempDir, tag: &str) -> Vec<String> {
    vec![
        "--no-daemon".into(),
        "--conf-file=/dev/null".into(),
        format!("--interface={ifname}"),
        "--bind-interfaces".into(),
        "--port=0".into(),
        "--no-resolv".into(),
        "--no-hosts".into(),
        "--no-ping".into(),
        "--log-dhcp".into(),
        "--log-facility=-".into(),
        format!(
            "--dhcp-range={SUBNET}.{},{SUBNET}.{},255.255.255.0,1h",
            range.0, range.1
        ),
        format!(
            "--dhcp-leasefile={}",
            dir.path(&format!("{tag}.leases")).display()
        ),
        format!("--pid-file={}", dir.path(&format!("{tag}.pid")).display()),
    ]
}

/// Waits until dnsmasq's log says its DHCP socket is bound.
fn wait_dnsmasq(p: &mut Proc, log: &Path) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("sockets bound exclusively") {
            return;
        }
        assert!(p.running(), "dnsmasq exited:\n{text}");
        assert!(Instant::now() < end, "dnsmasq not ready:\n{text}");
        sleep(Duration::from_millis(20));
    }
}

/// What netd does for a DHCP pool on VLAN `VID` of node `n`.
fn responder(lab: &mut Lab, n: usize, dir: &TempDir) -> Responder {
    let node = &mut lab.nodes[n];
    node.ns.ip("link add dhcpr type veth peer name dhcps");
    node.ns
        .ip(&format!("link set dhcps address {}", fmt_mac(SERVER_MAC)));
    node.ns.ip(&format!("addr add {SERVER_IP}/24 dev dhcps"));
    node.ns.ip("link set dhcps up");
    node.ns.ip("link set dhcpr up");
    let idx = node.ns.ifindex("dhcpr");
    let port = L2Port {
        cluster_network: CN,
        mode: L2Mode::Access { vid: VID },
        mtu: 1500,
    };
    let dp = &mut node.dp;
    node.ns
        .run(|| dp.l2_attach_port_with_flags("dhcpr", idx, &port, L2PortFlags::RESPONDER))
        .unwrap();
    node.dp.fdb_add_static(CN, VID, SERVER_MAC, idx).unwrap();
    lab.sync_vlans(n);
    lab.nodes[n]
        .dp
        .l2_set_dhcp_responder(CN, VID, Some(idx))
        .unwrap();
    let tag = format!("node{n}");
    let log = dir.path(&format!("{tag}.log"));
    let mut p = lab.nodes[n].ns.spawn(
        "dnsmasq",
        &dnsmasq_args("dhcps", RANGES[n], dir, &tag),
        &log,
    );
    wait_dnsmasq(&mut p, &log);
    Responder {
        idx,
        _dnsmasq: p,
        log,
    }
}

/// busybox udhcpc on the VM's eth0 (the lease is not applied): the
/// leased address (host part) and the server, if it got one. With
/// `broadcast`, it asks for broadcast replies (the BOOTP broadcast flag,
/// as many clients set it).
fn udhcpc(vm: &Vm, broadcast: bool) -> Option<(u8, String)> {
    let mut args = vec![
        "-i",
        "eth0",
        "-f",
        "-q",
        "-n",
        "-t",
        "4",
        "-T",
        "1",
        "-s",
        "/bin/true",
    ];
    if broadcast {
        args.push("-B");
    }
    let out = vm.ns.cmd("udhcpc", &args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // "udhcpc: lease of 10.50.0.138 obtained from 10.50.0.2, lease time 3600"
    let line = text.lines().find(|l| l.contains("lease of "))?;
    let mut w = line.split_whitespace().skip_while(|w| *w != "of").skip(1);
    let addr = w.next()?;
    let server = w.nth(2)?.trim_end_matches(',').to_owned();
    let host = addr.strip_prefix(&format!("{SUBNET}."))?.parse().ok()?;
    Some((host, server))
}

fn in_range(host: u8, r: (u8, u8)) -> bool {
    (r.0..=r.1).contains(&host)
}

/// tcpdump on each port of the fabric bridge (both directions of each
/// node's uplink), into pcap files read back with filters.
struct Capture {
    procs: Vec<Proc>,
    files: Vec<PathBuf>,
}

impl Capture {
    fn start(lab: &Lab, dir: &TempDir, tag: &str) -> Self {
        let mut procs = Vec::new();
        let mut files = Vec::new();
        for i in 0..lab.nodes.len() {
            let file = dir.path(&format!("{tag}-fab{i}.pcap"));
            let log = dir.path(&format!("{tag}-fab{i}.log"));
            let args: Vec<String> = [
                "-i",
                &format!("fab{i}"),
                "-nn",
                "--immediate-mode",
                "-U",
                "-Z",
                "root",
                "-w",
            ]
            .iter()
            .map(|s| s.to_string())
            .chain([file.display().to_string()])
            .collect();
            let mut p = lab.fabric.spawn("tcpdump", &args, &log);
            let end = Instant::now() + Duration::from_secs(10);
            loop {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if text.contains("listening on") {
                    break;
                }
                assert!(p.running(), "tcpdump exited:\n{text}");
                assert!(Instant::now() < end, "tcpdump not ready:\n{text}");
                sleep(Duration::from_millis(20));
            }
            procs.push(p);
            files.push(file);
        }
        Capture { procs, files }
    }

    fn stop(&mut self) {
        sleep(Duration::from_millis(200));
        for p in &mut self.procs {
            p.stop(libc::SIGINT);
        }
    }

    /// Captured frames matching a pcap filter, one line each.
    fn matching(&self, filter: &str) -> Vec<String> {
        let mut out = Vec::new();
        for f in &self.files {
            let o = std::process::Command::new("tcpdump")
                .args(["-r", &f.display().to_string(), "-nn", "-e", filter])
                .output()
                .expect("tcpdump -r");
            assert!(
                o.status.success(),
                "tcpdump -r {}: {}",
                f.display(),
                String::from_utf8_lossy(&o.stderr)
            );
            out.extend(
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(str::to_owned),
            );
        }
        out
    }
}

/// Untagged or tagged (libpcap puts the tag back in the data).
fn either(f: &str) -> String {
    format!("({f}) or (vlan and ({f}))")
}

fn dhcp_filter() -> String {
    either("udp port 67 or udp port 68")
}

fn server_mac_filter() -> String {
    format!("ether src {}", fmt_mac(SERVER_MAC))
}

fn access() -> L2Mode {
    L2Mode::Access { vid: VID }
}

#[test]
fn each_node_serves_its_own_vms_and_nothing_crosses_the_fabric() {
    let dir = TempDir::new("dhcp");
    let mut lab = Lab::new(2);
    let r0 = responder(&mut lab, 0, &dir);
    let r1 = responder(&mut lab, 1, &dir);
    let v1 = lab.vm(0, "v1", access(), None, None);
    let v2 = lab.vm(1, "v2", access(), None, None);
    let w1 = lab.vm(0, "w1", access(), Some(11), None);
    let w2 = lab.vm(1, "w2", access(), Some(12), None);

    let mut cap = Capture::start(&lab, &dir, "a");
    // Broadcast replies: the servers' OFFER and ACK are flooded (to
    // local ports only).
    let (h1, s1) = udhcpc(&v1, true).expect("v1 got no lease");
    let (h2, s2) = udhcpc(&v2, true).expect("v2 got no lease");
    assert!(in_range(h1, RANGES[0]), "v1 leased .{h1}: not node 1's");
    assert!(in_range(h2, RANGES[1]), "v2 leased .{h2}: not node 2's");
    assert_eq!((s1.as_str(), s2.as_str()), (SERVER_IP, SERVER_IP));

    // The anycast server answers pings on each node, from that node.
    let resp = [r0.idx, r1.idx];
    let rx = |lab: &Lab| -> [u64; 2] {
        [0, 1].map(|k| {
            let s = lab.nodes[k].dp.port_stats(resp[k]).unwrap().unwrap();
            s.rx_packets
        })
    };
    for (vm, host, n) in [(&v1, h1, 0usize), (&v2, h2, 1)] {
        vm.ns.ip(&format!("addr add {SUBNET}.{host}/24 dev eth0"));
        let was = rx(&lab);
        assert!(ping(vm, SERVER_IP), "node {n}'s VM pings the server");
        let now = rx(&lab);
        assert!(now[n] > was[n], "node {n}'s responder answered");
        assert_eq!(now[1 - n], was[1 - n], "the other node's saw nothing");
    }
    // Cross-node traffic that the capture must see (positive control).
    assert!(ping(&w1, &ip(12)), "VLAN 100 across the fabric");
    cap.stop();

    let icmp = cap.matching(&either("icmp"));
    assert!(!icmp.is_empty(), "the capture saw the cross-node ping");
    let dhcp = cap.matching(&dhcp_filter());
    assert!(dhcp.is_empty(), "DHCP on the fabric:\n{}", dhcp.join("\n"));
    let leak = cap.matching(&server_mac_filter());
    assert!(
        leak.is_empty(),
        "the server MAC on the fabric:\n{}",
        leak.join("\n")
    );

    // Each server saw its own node's client only.
    let log0 = std::fs::read_to_string(&r0.log).unwrap();
    let log1 = std::fs::read_to_string(&r1.log).unwrap();
    let mac = |vm: &Vm| fmt_mac(vm.mac);
    assert!(log0.contains(&format!("DHCPACK(dhcps) {SUBNET}.{h1} {}", mac(&v1))));
    assert!(
        !log0.contains(&mac(&v2)),
        "node 1's server heard v2:\n{log0}"
    );
    assert!(log1.contains(&format!("DHCPACK(dhcps) {SUBNET}.{h2} {}", mac(&v2))));
    assert!(
        !log1.contains(&mac(&v1)),
        "node 2's server heard v1:\n{log1}"
    );
    for (n, node) in lab.nodes.iter().enumerate() {
        let v = node.dp.vlan_stats_of(CN, VID).unwrap().unwrap();
        // DISCOVER and REQUEST at least.
        assert!(v.dhcp_steered >= 2, "node {n}: {v:?}");
        assert_eq!(v.drop_dhcp_guard, 0, "node {n}: {v:?}");
    }
    drop((w2, r0, r1));
}

#[test]
fn a_rogue_server_in_a_vm_answers_nobody() {
    let dir = TempDir::new("dhcp-rogue");
    let mut lab = Lab::new(2);
    let r0 = responder(&mut lab, 0, &dir);
    let r1 = responder(&mut lab, 1, &dir);
    // The rogue: a VM on node 1 serving its own range on its eth0.
    let rogue = lab.vm(0, "rogue", access(), Some(3), None);
    let rlog = dir.path("rogue.log");
    let mut rp = rogue.ns.spawn(
        "dnsmasq",
        &dnsmasq_args("eth0", RANGES[2], &dir, "rogue"),
        &rlog,
    );
    wait_dnsmasq(&mut rp, &rlog);
    let v1 = lab.vm(0, "v1", access(), None, None);
    let v2 = lab.vm(1, "v2", access(), None, None);
    let v3 = lab.vm(0, "v3", access(), None, None);

    // With steering, client frames never reach the rogue at all.
    let (h, _) = udhcpc(&v1, false).expect("v1 got no lease");
    assert!(in_range(h, RANGES[0]), "v1 leased .{h}");
    let (h, _) = udhcpc(&v2, false).expect("v2 got no lease");
    assert!(in_range(h, RANGES[1]), "v2 leased .{h}");
    let text = std::fs::read_to_string(&rlog).unwrap();
    assert!(!text.contains("DHCPDISCOVER"), "the rogue heard:\n{text}");

    // Without steering (no responder set), DISCOVERs are flooded: the
    // rogue hears them (from its node and through the fabric) and
    // answers, and the guard drops every answer at its port.
    for node in &mut lab.nodes {
        node.dp.l2_set_dhcp_responder(CN, VID, None).unwrap();
    }
    let mut cap = Capture::start(&lab, &dir, "b");
    for (vm, n) in [(&v3, 0usize), (&v2, 1)] {
        let (h, s) = udhcpc(vm, false).expect("no lease");
        assert!(in_range(h, RANGES[n]), "node {n}'s VM leased .{h}");
        assert_eq!(s, SERVER_IP);
    }
    cap.stop();
    let text = std::fs::read_to_string(&rlog).unwrap();
    for vm in [&v3, &v2] {
        let mac = fmt_mac(vm.mac);
        assert!(
            text.lines()
                .any(|l| l.contains("DHCPOFFER(eth0)") && l.contains(&mac)),
            "the rogue answered {mac}:\n{text}"
        );
    }
    // Flooded through the fabric, a request still never reaches the
    // other node's server (local-only): each node serves its own VMs.
    let log0 = std::fs::read_to_string(&r0.log).unwrap();
    let log1 = std::fs::read_to_string(&r1.log).unwrap();
    assert!(log0.contains(&fmt_mac(v3.mac)) && log1.contains(&fmt_mac(v2.mac)));
    assert!(!log0.contains(&fmt_mac(v2.mac)), "node 1 heard v2:\n{log0}");
    assert!(!log1.contains(&fmt_mac(v3.mac)), "node 2 heard v3:\n{log1}");
    let n0 = &lab.nodes[0].dp;
    let ps = n0.port_stats(rogue.host_idx).unwrap().unwrap();
    let vs = n0.vlan_stats_of(CN, VID).unwrap().unwrap();
    assert!(ps.drop_dhcp_guard >= 2, "{ps:?}");
    assert!(vs.drop_dhcp_guard >= ps.drop_dhcp_guard, "{vs:?}");
    // The fabric carried the flooded requests (the capture sees DHCP),
    // but no reply and nothing from the server MAC.
    let dhcp = cap.matching(&dhcp_filter());
    assert!(!dhcp.is_empty(), "flooded DISCOVERs crossed the fabric");
    let replies = cap.matching(&either("udp src port 67"));
    assert!(
        replies.is_empty(),
        "server replies on the fabric:\n{}",
        replies.join("\n")
    );
    let leak = cap.matching(&server_mac_filter());
    assert!(
        leak.is_empty(),
        "server MAC on the fabric:\n{}",
        leak.join("\n")
    );
    drop(v1);
}
