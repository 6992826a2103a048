//! Port security on VLAN networks (eBPF backend): two nodes on a trunking
//! fabric, VMs on VLAN 100 whose MACs and addresses netd knows
//! (VirtualMachineNetworkConfigs), and a VM that forges with scapy what a
//! well-behaved guest never sends: another source MAC, a neighbour's IPv4
//! and IPv6 address, a gratuitous ARP for the neighbour's address, a
//! neighbour advertisement for it, a rogue router advertisement. None of
//! it reaches the other VMs (on its node and across the fabric) or the
//! fabric itself, its normal traffic still flows, and netctl counts each
//! drop by reason. A VM with an allowed address pair holds a VIP as
//! keepalived does; a VM with `portSecurity: false` gets the same forged
//! frames through (the captures would see a leak).

use std::net::IpAddr;
use std::time::Duration;

use furrow_api::wire_diag::{CountersView, PortDrops};
use furrow_api::wire_trace::TraceResponse;
use furrow_tests::capture::Capture;
use furrow_tests::lab::vlan_nad;
use furrow_tests::scenario::vlan::{fabric_ports, CN, NIC};
use furrow_tests::{probe, scapy, Lab, Node, Pod};
use serde_json::{json, Value};

const NET: &str = "vlan100";
const MALLORY_MAC: &str = "52:54:00:5e:c0:01";
const ALICE_MAC: &str = "52:54:00:5e:c0:02";
const KA_MAC: &str = "52:54:00:5e:c0:03";
const BOB_MAC: &str = "52:54:00:5e:c0:04";
const FREE_MAC: &str = "52:54:00:5e:c0:05";
const MALLORY: &str = "10.78.0.11";
const ALICE: &str = "10.78.0.12";
const KA: &str = "10.78.0.13";
const BOB: &str = "10.78.0.21";
const FREE: &str = "10.78.0.15";
const VIP: &str = "10.78.0.100";
const MALLORY6: &str = "fd00:78::11";
const ALICE6: &str = "fd00:78::12";
/// The source MAC mallory (and free) forge.
const FORGED_MAC: &str = "02:66:66:66:66:01";
const FORGED_MAC_FREE: &str = "02:66:66:66:66:05";

fn nad(node: &Node, mac: &str, extra: Value) -> Value {
    let mut c = vlan_nad(NET, CN, 100, &node.netd.socket);
    c["runtimeConfig"] = json!({ "mac": mac });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

/// Reservations: what netd knows of each VM's address.
fn vmnc(name: &str, entries: &[(&str, &str)]) -> String {
    let mut y = format!(
        "apiVersion: network.furrow.io/v1alpha1\nkind: VirtualMachineNetworkConfig\nmetadata:\n  name: {name}\nspec:\n  vmName: {name}\n  networkConfigs:\n"
    );
    for (mac, ip) in entries {
        y += &format!(
            "    - networkName: default/{NET}\n      macAddress: {mac}\n      ipAddress: {ip}\n"
        );
    }
    y
}

fn addr(vm: &Pod, a: &str) {
    vm.ns
        .ip(&["addr", "add", a, "dev", "eth0", "nodad"])
        .unwrap();
}

fn frames_forged_by(mac: &str, forged_mac: &str, ll: &str) -> Vec<String> {
    vec![
        // 1. Another source MAC.
        format!(
            "Ether(src='{forged_mac}', dst='ff:ff:ff:ff:ff:ff')/IP(src='{MALLORY}', dst='10.78.0.255')/UDP(sport=40001, dport=9999)/Raw(b'forged-mac')"
        ),
        // 2. The neighbour's IPv4 address.
        format!(
            "Ether(src='{mac}', dst='ff:ff:ff:ff:ff:ff')/IP(src='{ALICE}', dst='10.78.0.255')/UDP(sport=40002, dport=9999)/Raw(b'forged-ip')"
        ),
        // 3. A gratuitous ARP for the neighbour's address.
        format!(
            "Ether(src='{mac}', dst='ff:ff:ff:ff:ff:ff')/ARP(op=1, hwsrc='{mac}', psrc='{ALICE}', hwdst='00:00:00:00:00:00', pdst='{ALICE}')"
        ),
        // 4. A rogue router advertisement (from its own link-local).
        format!(
            "Ether(src='{mac}', dst='33:33:00:00:00:01')/IPv6(src='{ll}', dst='ff02::1')/ICMPv6ND_RA()/ICMPv6NDOptSrcLLAddr(lladdr='{mac}')/ICMPv6NDOptPrefixInfo(prefix='2001:db8:bad::', prefixlen=64)"
        ),
        // 5. A neighbour advertisement for the neighbour's IPv6 address.
        format!(
            "Ether(src='{mac}', dst='33:33:00:00:00:01')/IPv6(src='{MALLORY6}', dst='ff02::1')/ICMPv6ND_NA(tgt='{ALICE6}', R=0, S=0, O=1)/ICMPv6NDOptDstLLAddr(lladdr='{mac}')"
        ),
        // 6. The neighbour's IPv6 address as the source.
        format!(
            "Ether(src='{mac}', dst='33:33:00:00:00:01')/IPv6(src='{ALICE6}', dst='ff02::1')/UDP(sport=40006, dport=9999)/Raw(b'forged-ip6')"
        ),
    ]
}

/// Which of the forged frames a capture saw, by name.
fn leaks(lines: &[String], mac: &str, forged_mac: &str) -> Vec<&'static str> {
    let from = |l: &String, m: &str| l.split_whitespace().nth(1) == Some(m);
    let mut out = Vec::new();
    if lines.iter().any(|l| from(l, forged_mac)) {
        out.push("forged MAC");
    }
    if lines
        .iter()
        .any(|l| from(l, mac) && l.contains(&format!("{ALICE}.40002 >")))
    {
        out.push("forged IPv4 source");
    }
    if lines
        .iter()
        .any(|l| from(l, mac) && l.contains(&format!("tell {ALICE}")))
    {
        out.push("gratuitous ARP for the neighbour's address");
    }
    if lines
        .iter()
        .any(|l| from(l, mac) && l.contains("router advertisement"))
    {
        out.push("router advertisement");
    }
    if lines.iter().any(|l| {
        from(l, mac)
            && l.contains("neighbor advertisement")
            && l.contains(&format!("tgt is {ALICE6}"))
    }) {
        out.push("neighbour advertisement for the neighbour's address");
    }
    if lines
        .iter()
        .any(|l| from(l, mac) && l.contains(&format!("{ALICE6}.40006 >")))
    {
        out.push("forged IPv6 source");
    }
    out
}

const FILTER: &str = "arp or udp port 9999 or icmp6";

fn counters(node: &Node) -> CountersView {
    let out = node.netd.netctl(&["counters", "-o", "json"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn port_of<'a>(c: &'a CountersView, owner: &str) -> &'a PortDrops {
    c.ports
        .iter()
        .find(|p| p.port.owner.as_deref() == Some(owner))
        .unwrap_or_else(|| panic!("no port of {owner} in {c:?}"))
}

struct Captures {
    caps: Vec<(&'static str, Capture)>,
}

impl Captures {
    /// Alice (same node), bob (other node) and node1's fabric port.
    fn start(lab: &Lab, alice: &Pod, bob: &Pod) -> Captures {
        let trunk = lab.trunk.as_ref().unwrap();
        let port = fabric_ports(trunk).unwrap().remove(0);
        Captures {
            caps: vec![
                (
                    "alice",
                    Capture::start(&alice.ns, "eth0", FILTER, true).unwrap(),
                ),
                (
                    "bob",
                    Capture::start(&bob.ns, "eth0", FILTER, true).unwrap(),
                ),
                // Tagged there (VLAN 100).
                (
                    "fabric",
                    Capture::start(trunk, &port, &format!("vlan and ({FILTER})"), true).unwrap(),
                ),
            ],
        }
    }

    fn stop(self) -> Vec<(&'static str, Vec<String>)> {
        std::thread::sleep(Duration::from_millis(500));
        self.caps.into_iter().map(|(n, c)| (n, c.stop())).collect()
    }
}

#[test]
fn spoofing_from_a_vm_reaches_no_one_and_is_counted() {
    let mut lab = Lab::new().unwrap();
    for n in ["node1", "node2"] {
        lab.add_node(n).unwrap();
    }
    lab.add_data_nic(0, NIC).unwrap();
    lab.add_data_nic(1, NIC).unwrap();
    for i in 0..2 {
        lab.node(i)
            .cluster_network(CN, "ebpf", &[NIC], 1500)
            .unwrap();
    }
    let (n1, n2) = (lab.node(0), lab.node(1));
    n1.apply(&vmnc(
        "vms",
        &[
            (MALLORY_MAC, MALLORY),
            (ALICE_MAC, ALICE),
            (KA_MAC, KA),
            (FREE_MAC, FREE),
        ],
    ))
    .unwrap();
    n2.apply(&vmnc("vms", &[(BOB_MAC, BOB)])).unwrap();

    // mallory's own IPv6 address is an allowed address pair: IPv6 is
    // enforced on its port too.
    let mallory = n1
        .vm(
            "mallory",
            &nad(
                n1,
                MALLORY_MAC,
                json!({"allowedAddressPairs": [{"ipAddress": MALLORY6}]}),
            ),
        )
        .unwrap();
    let alice = n1.vm("alice", &nad(n1, ALICE_MAC, json!({}))).unwrap();
    let bob = n2.vm("bob", &nad(n2, BOB_MAC, json!({}))).unwrap();
    for (vm, a) in [(&mallory, MALLORY), (&alice, ALICE), (&bob, BOB)] {
        addr(vm, &format!("{a}/24"));
    }
    addr(&mallory, &format!("{MALLORY6}/64"));
    addr(&alice, &format!("{ALICE6}/64"));

    // Normal traffic works, on the node and across the fabric.
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    assert!(
        probe::ping_ok(&mallory.ns, ip(ALICE), 3),
        "mallory -> alice"
    );
    assert!(probe::ping_ok(&mallory.ns, ip(BOB), 3), "mallory -> bob");
    assert!(
        probe::ping_ok(&mallory.ns, ip(ALICE6), 3),
        "mallory -> alice (IPv6)"
    );

    // The forgeries.
    let caps = Captures::start(&lab, &alice, &bob);
    let ll = scapy::eui64_link_local(MALLORY_MAC);
    scapy::send(
        &mallory.ns,
        "eth0",
        &frames_forged_by(MALLORY_MAC, FORGED_MAC, &ll),
        3,
    )
    .unwrap();
    // ... and mallory's normal traffic still flows right after.
    assert!(
        probe::ping_ok(&mallory.ns, ip(BOB), 3),
        "mallory -> bob after"
    );
    for (who, lines) in caps.stop() {
        let l = leaks(&lines, MALLORY_MAC, FORGED_MAC);
        assert!(l.is_empty(), "{who} saw {l:?}:\n{}", lines.join("\n"));
    }

    // Every reason counted on mallory's port, nothing on the others.
    let c = counters(n1);
    let d = port_of(&c, "lab/mallory").drops;
    eprintln!("mallory's drops: {d:?}");
    for (reason, n) in [
        ("spoofMac", d.spoof_mac),
        ("spoofIpv4", d.spoof_ipv4),
        ("spoofArp", d.spoof_arp),
        ("raGuard", d.ra_guard),
        ("spoofNd", d.spoof_nd),
        ("spoofIpv6", d.spoof_ipv6),
    ] {
        assert!(
            n >= 3,
            "{reason}: {n} drops counted for 3 forged frames: {d:?}"
        );
    }
    assert_eq!(port_of(&c, "lab/alice").drops.port_security(), 0);
    assert!(c.totals.port_security() >= d.port_security());
    // The table shows the reasons too.
    let out = n1.netd.netctl(&["counters"]).unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    for r in [
        "spoof-mac",
        "spoof-ipv4",
        "spoof-arp",
        "spoof-nd",
        "spoof-ipv6",
        "ra-guard",
    ] {
        assert!(table.contains(r), "{r} missing:\n{table}");
    }
    // And `netctl ports` carries them per port.
    let ports: Vec<furrow_api::wire::PortInfo> = n1.netd.client().get("/v1/ports").unwrap();
    let mp = ports
        .iter()
        .find(|p| p.container_id == mallory.container_id)
        .unwrap();
    let drops = &mp.counters.as_ref().unwrap().drops;
    assert!(
        drops.get("spoof_arp").copied().unwrap_or(0) >= 3,
        "{drops:?}"
    );
    // And the metrics, per port and reason.
    let m = String::from_utf8(n1.netd.netctl(&["metrics"]).unwrap().stdout).unwrap();
    for reason in ["spoof_mac", "spoof_ipv4", "spoof_arp", "ra_guard"] {
        let v = m
            .lines()
            .find(|l| {
                l.starts_with("furrow_port_drops_total{")
                    && l.contains(&mallory.container_id)
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {reason} drop series for mallory in\n{m}"));
        assert!(v >= 3.0, "{reason}: {v}");
    }
    // `netctl trace` gives the same verdict, naming port security.
    let out = n1
        .netd
        .netctl(&[
            "trace",
            "lab/mallory",
            "--dst-mac",
            "ff:ff:ff:ff:ff:ff",
            "--src-ip",
            ALICE,
            "--dst-ip",
            "10.78.0.255",
            "-o",
            "json",
        ])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t: TraceResponse = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(t.verdict, "drop", "{t:?}");
    assert!(t.reason.contains("port security"), "{t:?}");
    assert!(t.steps.iter().any(|s| s.stage == "security"), "{t:?}");

    // ---- keepalived: a VIP held through an allowed address pair ----
    let ka = n1
        .vm(
            "ka",
            &nad(
                n1,
                KA_MAC,
                json!({"allowedAddressPairs": [{"ipAddress": VIP}]}),
            ),
        )
        .unwrap();
    addr(&ka, &format!("{KA}/24"));
    addr(&ka, &format!("{VIP}/32"));
    let caps = Captures::start(&lab, &alice, &bob);
    let garp = |mac: &str| {
        format!(
            "Ether(src='{mac}', dst='ff:ff:ff:ff:ff:ff')/ARP(op=1, hwsrc='{mac}', psrc='{VIP}', hwdst='00:00:00:00:00:00', pdst='{VIP}')"
        )
    };
    scapy::send(&ka.ns, "eth0", &[garp(KA_MAC)], 2).unwrap();
    // mallory has no such pair: its claim on the VIP goes nowhere.
    scapy::send(&mallory.ns, "eth0", &[garp(MALLORY_MAC)], 2).unwrap();
    let seen = caps.stop();
    for (who, lines) in &seen {
        if *who == "fabric" {
            continue;
        }
        let from = |m: &str| {
            lines.iter().any(|l| {
                l.split_whitespace().nth(1) == Some(m) && l.contains(&format!("tell {VIP}"))
            })
        };
        assert!(
            from(KA_MAC),
            "{who} did not see the VIP's gratuitous ARP:\n{}",
            lines.join("\n")
        );
        assert!(
            !from(MALLORY_MAC),
            "{who} saw mallory's claim on the VIP:\n{}",
            lines.join("\n")
        );
    }
    // The neighbour reaches the VIP (answered from it), across nodes too.
    assert!(probe::ping_ok(&alice.ns, ip(VIP), 3), "alice -> VIP");
    assert!(probe::ping_ok(&bob.ns, ip(VIP), 3), "bob -> VIP");
    let neigh = bob.ns.ip(&["neigh", "show", VIP]).unwrap();
    assert!(neigh.contains(KA_MAC), "bob resolved the VIP to {neigh}");

    // ---- portSecurity: false: the same forgeries get through ----
    let free = n1
        .vm("free", &nad(n1, FREE_MAC, json!({"portSecurity": false})))
        .unwrap();
    addr(&free, &format!("{FREE}/24"));
    let caps = Captures::start(&lab, &alice, &bob);
    let ll = scapy::eui64_link_local(FREE_MAC);
    scapy::send(
        &free.ns,
        "eth0",
        &frames_forged_by(FREE_MAC, FORGED_MAC_FREE, &ll),
        2,
    )
    .unwrap();
    for (who, lines) in caps.stop() {
        let l = leaks(&lines, FREE_MAC, FORGED_MAC_FREE);
        for want in [
            "forged MAC",
            "forged IPv4 source",
            "gratuitous ARP for the neighbour's address",
            "router advertisement",
        ] {
            assert!(
                l.contains(&want),
                "{who} did not see the unprotected VM's {want}: {l:?}\n{}",
                lines.join("\n")
            );
        }
    }
    assert_eq!(port_of(&counters(n1), "lab/free").drops.port_security(), 0);

    for (n, vm) in [
        (n1, &mallory),
        (n1, &alice),
        (n1, &ka),
        (n1, &free),
        (n2, &bob),
    ] {
        n.del_pod(vm).expect_ok("DEL");
    }
}

/// On a network an IPPool serves, a VM may send nothing but DHCP (and ARP
/// probes) until its lease is bound; the bound address is allowed before
/// the ACK arrives, another one never is, and a released one no longer.
#[test]
fn a_dhcp_lease_is_what_a_vm_may_send_from() {
    use furrow_tests::dhcp_clients::Udhcpc;
    use furrow_tests::scenario::dhcp::{mac_of, DhcpLab, PoolSpec, ROUTER};

    let t = Duration::from_secs(20);
    let d = DhcpLab::build(&PoolSpec::default()).unwrap();
    let n1 = d.lab.node(0);
    let peer = d.vm(1, "peer", None).unwrap();
    let pc = Udhcpc::start(&peer.ns, "eth0", "peer").unwrap();
    let peer_ip: IpAddr = pc.bound(t).unwrap()["ip"].parse().unwrap();
    let vm = d.vm(0, "vm", None).unwrap();
    let mac = mac_of(&vm, "eth0").unwrap();
    let spoof_ipv4 = || port_of(&counters(n1), "lab/vm").drops.spoof_ipv4;

    // An address of its own choosing, before any lease: dropped.
    addr(&vm, "10.80.0.77/24");
    assert!(
        !probe::ping(&vm.ns, peer_ip),
        "a VM without a lease reached its peer"
    );
    // (Its ARP for the peer never leaves: claiming an address it has not
    // been given is a spoofed ARP.)
    let arp = port_of(&counters(n1), "lab/vm").drops.spoof_arp;
    assert!(arp > 0, "nothing counted");
    let before = spoof_ipv4();
    vm.ns.ip(&["addr", "flush", "dev", "eth0"]).unwrap();

    // Its lease: usable at once, on the node and across the fabric.
    let c = Udhcpc::start(&vm.ns, "eth0", "vm").unwrap();
    let ip: IpAddr = c.bound(t).unwrap()["ip"].parse().unwrap();
    assert!(probe::ping_ok(&vm.ns, peer_ip, 3), "{ip} -> {peer_ip}");
    // The neighbour's address, even with the lease: dropped.
    let forged = format!(
        "Ether(src='{mac}', dst='ff:ff:ff:ff:ff:ff')/IP(src='{peer_ip}', dst='10.80.0.255')/UDP(sport=40002, dport=9999)/Raw(b'forged-ip')"
    );
    scapy::send(&vm.ns, "eth0", &[forged], 3).unwrap();
    let with_lease = spoof_ipv4();
    assert!(with_lease >= before + 3, "{before} -> {with_lease}");

    // Released: the address is no longer the VM's.
    c.release(t).unwrap();
    d.wait_for("the lease released", t, || {
        Ok(d.lease_of(0, &mac)?.is_none())
    })
    .unwrap();
    let stale = format!(
        "Ether(src='{mac}', dst='ff:ff:ff:ff:ff:ff')/IP(src='{ip}', dst='{ROUTER}')/UDP(sport=40003, dport=9999)/Raw(b'stale')"
    );
    d.wait_for("the released address refused", t, || {
        scapy::send(&vm.ns, "eth0", std::slice::from_ref(&stale), 1)?;
        Ok(spoof_ipv4() > with_lease)
    })
    .unwrap();
}
