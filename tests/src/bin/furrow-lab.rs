//! furrow-lab: brings up the demo — a lab on this machine running
//! everything Furrow can do — and tears it down again.
//!
//!   furrow-lab demo up      build the lab, show what works, leave it running
//!   furrow-lab demo status  netctl views of the running demo
//!   furrow-lab demo down    remove everything the demo created

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use furrow_api::wire::PortInfo;
use furrow_tests::lab::EXTERNAL_IP;
use furrow_tests::{bins, names, probe, Lab, Netns};
use serde_json::json;

const STATE: &str = "/run/furrow-demo.json";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["demo", "up"] | ["demo"] => up(),
        ["demo", "down"] => down(),
        ["demo", "status"] => status(),
        ["scenario", "vlan", backend] => scenario_vlan(backend),
        _ => {
            eprintln!(
                "usage: furrow-lab demo [up|status|down] | furrow-lab scenario vlan <ebpf|bridge>"
            );
            return ExitCode::from(2);
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("furrow-lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn step(n: u32, total: u32, what: &str) {
    println!("\n[{n}/{total}] {what}");
}

fn up() -> anyhow::Result<()> {
    if PathBuf::from(STATE).exists() {
        println!("A demo is already running; replacing it.");
        down()?;
    }
    names::use_fixed_prefix(names::DEMO_PREFIX);
    const T: u32 = 13;
    println!("== Furrow demo: the management network, VLAN networks and DHCP on two nodes; floating VIPs on three ==");

    step(
        1,
        T,
        "Lab: a fabric switch, an external host and a node running netd",
    );
    let mut lab = Lab::new()?;
    lab.add_node("node1")?;
    let node = lab.node(0);
    println!(
        "  fabric switch   netns {} (bridge fabric0)",
        lab.fabric.name
    );
    println!(
        "  external host   netns {}  {EXTERNAL_IP}",
        lab.external.name
    );
    println!(
        "  node1           netns {}  {} (uplink0), netd instance {}",
        node.ns.name, node.uplink_ip, node.netd.instance
    );

    step(
        2,
        T,
        "CNI ADD through the `furrow` plugin, as Multus/kubelet would call it",
    );
    let web = node.mgmt_pod("web")?;
    let db = node.mgmt_pod("db")?;
    let mut vm_cfg = node.mgmt_config("0.3.1");
    vm_cfg["mtu"] = json!(1400);
    vm_cfg["capabilities"] = json!({"mac": true});
    vm_cfg["runtimeConfig"] = json!({"mac": "52:54:00:12:34:56"});
    let vm = node.add_pod("vm", &vm_cfg)?;
    for (name, p) in [("web", &web), ("db", &db), ("vm", &vm)] {
        println!(
            "  pod {name:<4} netns {:<16} eth0 {}  gateway {}",
            p.ns.name,
            p.result["ips"][0]["address"].as_str().unwrap_or(""),
            p.result["ips"][0]["gateway"].as_str().unwrap_or("")
        );
    }
    println!("  pod vm   (cniVersion 0.3.1 config, runtimeConfig.mac 52:54:00:12:34:56, mtu 1400)");

    step(
        3,
        T,
        "Pod to pod on the node: delivered by the eBPF datapath (bpf_redirect_peer)",
    );
    let ok = probe::ping_ok(&web.ns, IpAddr::V4(db.ip()), 5);
    let ports: Vec<PortInfo> = node.netd.client().get("/v1/ports")?;
    let redirected = ports
        .iter()
        .find(|p| p.container_id == web.container_id)
        .and_then(|p| p.counters.as_ref())
        .map(|c| c.redirected_packets)
        .unwrap_or(0);
    println!(
        "  web -> db ({}): {}; packets web sent that the datapath redirected: {redirected}",
        db.ip(),
        if ok { "reachable" } else { "UNREACHABLE" }
    );
    if !ok {
        bail!("pod-to-pod failed");
    }
    let seen = probe::udp_source_seen(&web.ns, &db.ns, SocketAddr::new(IpAddr::V4(db.ip()), 7100))?;
    println!("  db sees web's datagrams from {seen} (pod address: no NAT inside the cluster)");

    step(
        4,
        T,
        "Leaving the cluster: masqueraded behind the node by nftables",
    );
    let ok = probe::ping_ok(&vm.ns, IpAddr::V4(EXTERNAL_IP), 5);
    let seen = probe::udp_source_seen(
        &vm.ns,
        &lab.external,
        SocketAddr::new(IpAddr::V4(EXTERNAL_IP), 7101),
    )?;
    println!("  vm -> external host {EXTERNAL_IP}: {}; the external host sees source {seen} (node1's address)", if ok { "reachable" } else { "UNREACHABLE" });

    step(5, T, "CNI CHECK and DEL");
    let out = furrow_tests::cni::check(&db.attachment(), &db.config, &db.result);
    println!(
        "  CHECK db: {}",
        if out.success() {
            "ok".to_string()
        } else {
            out.error_msg()
        }
    );
    let tmp = node.mgmt_pod("tmp")?;
    let out = node.del_pod(&tmp);
    println!(
        "  ADD then DEL of pod tmp ({}): {}",
        tmp.ip(),
        if out.success() {
            "removed, address released"
        } else {
            "FAILED"
        }
    );

    step(6, T, "VLAN networks: cluster network `data` on each node's data0, trunked through a fabric switch");
    drop(tmp);
    lab.add_node("node2")?;
    for i in 0..2 {
        lab.add_data_nic(i, "data0")?;
        lab.node(i)
            .cluster_network("data", "auto", &["data0"], 1500)?;
    }
    let n1 = lab.node(0);
    let n2 = lab.node(1);
    let info = n1
        .cluster_network_info("data")
        .context("cluster network data")?;
    println!("  backend {} ({})", info.backend, info.backend_reason);
    let nad = |n: &furrow_tests::Node, vlan: u16| {
        furrow_tests::lab::vlan_nad(&format!("vlan{vlan}"), "data", vlan, &n.netd.socket)
    };
    let vms = [
        ("vm-a", n1, 100u16, "10.100.0.11"),
        ("vm-b", n2, 100, "10.100.0.12"),
        ("vm-c", n1, 200, "10.100.0.13"),
    ];
    let mut vlan_pods = Vec::new();
    for (name, n, vlan, ip) in vms {
        let p = n.vm(name, &nad(n, vlan))?;
        p.ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        println!(
            "  {name} on {} VLAN {vlan} eth0 {ip} (netns {})  (Harvester NAD, type furrow)",
            n.name, p.ns.name
        );
        vlan_pods.push(p);
    }
    n1.apply("apiVersion: network.furrow.io/v1alpha1\nkind: VlanInterface\nmetadata: {name: diag100}\nspec: {clusterNetwork: data, vlan: 100, address: 10.100.0.254/24}\n")?;
    println!("  node1 has 10.100.0.254 on VLAN 100 (a VlanInterface: no 802.1Q device needed)");

    step(7, T, "VLAN forwarding and isolation, across nodes, in eBPF");
    let ip = |s: &str| -> IpAddr { s.parse().expect("literal") };
    let show = |what: &str, ok: bool, want: bool| {
        println!(
            "  {what}: {}{}",
            if ok { "reachable" } else { "isolated" },
            if ok == want { "" } else { "   <-- UNEXPECTED" }
        );
    };
    show(
        "vm-a -> vm-b (VLAN 100, node1 -> node2, tagged on the wire)",
        probe::ping_ok(&vlan_pods[0].ns, ip("10.100.0.12"), 3),
        true,
    );
    show(
        "vm-a -> node1's VLAN 100 address",
        probe::ping_ok(&vlan_pods[0].ns, ip("10.100.0.254"), 3),
        true,
    );
    show(
        "vm-a -> vm-c (VLAN 100 -> 200, same subnet, same node)",
        probe::ping(&vlan_pods[0].ns, ip("10.100.0.13")),
        false,
    );

    step(
        8,
        T,
        "A VM moves to the other node (live migration): same MAC, reachable at once",
    );
    let mig_cfg = |n: &furrow_tests::Node| {
        let mut c = nad(n, 100);
        c["runtimeConfig"] = json!({"mac": "52:54:00:64:00:50"});
        c
    };
    let before = n1.vm("vm-m", &mig_cfg(n1))?;
    before
        .ns
        .ip(&["addr", "add", "10.100.0.50/24", "dev", "eth0"])?;
    let _ = probe::ping_ok(&vlan_pods[1].ns, ip("10.100.0.50"), 3);
    n1.del_pod(&before);
    drop(before);
    let t = std::time::Instant::now();
    let after = n2.vm("vm-m", &mig_cfg(n2))?;
    after
        .ns
        .ip(&["addr", "add", "10.100.0.50/24", "dev", "eth0"])?;
    let ok = probe::ping_ok(&vlan_pods[0].ns, ip("10.100.0.50"), 5);
    println!(
        "  vm-m now on node2: vm-a reaches it: {ok} ({} ms after its ADD)",
        t.elapsed().as_millis()
    );
    vlan_pods.push(after);

    step(
        9,
        T,
        "DHCP on VLAN 300: node1 answers its own VMs (pool and a reservation)",
    );
    n1.apply(
        "apiVersion: network.furrow.io/v1alpha1
kind: IPPool
metadata: {name: vlan300-pool}
spec:
  networkName: default/vlan300
  ipv4Config:
    serverIP: 10.30.0.2
    cidr: 10.30.0.0/24
    pool: {start: 10.30.0.10, end: 10.30.0.99, exclude: [10.30.0.13]}
    router: 10.30.0.1
    dns: [10.30.0.1]
    domainName: vms.example
    leaseTime: 3600
    mtu: 1400
    routes: [{dst: 192.168.0.0/16, gateway: 10.30.0.1}]
---
apiVersion: network.furrow.io/v1alpha1
kind: VirtualMachineNetworkConfig
metadata: {name: vm-r}
spec:
  vmName: vm-r
  networkConfigs:
    - {networkName: default/vlan300, macAddress: 52:54:00:30:00:77, ipAddress: 10.30.0.77}
",
    )?;
    println!("  IPPool vlan300-pool 10.30.0.10-99 (router, DNS, MTU 1400, a classless route); reservation vm-r -> 10.30.0.77");
    for (name, mac) in [("vm-d", None), ("vm-r", Some("52:54:00:30:00:77"))] {
        let mut cfg = nad(n1, 300);
        if let Some(m) = mac {
            cfg["runtimeConfig"] = json!({ "mac": m });
        }
        let p = n1.vm(name, &cfg)?;
        let got = dhcp_lease_with_retries(&p)?;
        println!(
            "  {name}: busybox udhcpc got {}/{} router {} dns {} mtu {} routes {:?}",
            got["ip"], got["mask"], got["router"], got["dns"], got["mtu"], got["staticroutes"]
        );
        vlan_pods.push(p);
    }

    step(
        10,
        T,
        "Many nodes: three nodes sharing state through a 3-member etcd; pods across nodes over VXLAN and host-gw",
    );
    mgmt_demo()?;

    step(
        11,
        T,
        "Floating VIPs: three more nodes on a 3-member etcd, BIRD 2 as their router",
    );
    vip_demo()?;

    step(
        12,
        T,
        "Hardening: port security, hitless restart and upgrade, a root-only API",
    );
    hardening_demo()?;

    step(13, T, "What netd built, as netctl shows it");
    let node = lab.node(0);
    let socket = node.netd.socket.clone();
    for view in [
        &["status"][..],
        &["ports"],
        &["networks"],
        &["vlans"],
        &["fdb"],
        &["counters"],
        &["pools"],
        &["leases"],
        &[
            "trace",
            "vm-a",
            "--dst-mac",
            "ff:ff:ff:ff:ff:ff",
            "--dst-ip",
            "10.100.0.12",
        ],
    ] {
        println!(
            "\n$ netctl --socket {} {}",
            socket.display(),
            view.join(" ")
        );
        let out = node.netd.netctl(view)?;
        print!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // doctor reads the node's links: it runs in the node's namespace.
    println!(
        "\n$ nsenter --net={} netctl --socket {} doctor",
        node.ns.path().display(),
        socket.display()
    );
    let out = node
        .ns
        .cmd(bins::netctl())
        .arg("--socket")
        .arg(&socket)
        .arg("doctor")
        .output()?;
    print!("{}", String::from_utf8_lossy(&out.stdout));

    let state = json!({
        "socket": socket,
        "netctl": bins::netctl(),
        "pods": {"web": web.ns.name, "db": db.ns.name, "vm": vm.ns.name},
        "node": node.ns.name,
        "log": node.netd.log_path,
    });
    std::fs::write(STATE, serde_json::to_vec_pretty(&state)?)?;
    println!("\nThe demo keeps running. Try:");
    println!(
        "  {} --socket {} ports -o json",
        bins::netctl().display(),
        socket.display()
    );
    println!(
        "  nsenter --net=/run/netns/{} ping -c3 {}",
        web.ns.name,
        vm.ip()
    );
    println!(
        "  {} --socket {} metrics | grep furrow_port",
        bins::netctl().display(),
        socket.display()
    );
    println!("  netd log: {}", node.netd.log_path.display());
    println!("Tear it down with: bash scripts/demo.sh down");
    let mut web = web;
    let mut db = db;
    let mut vm = vm;
    for p in [&mut web, &mut db, &mut vm] {
        p.ns.keep();
    }
    for p in &mut vlan_pods {
        p.ns.keep();
    }
    lab.keep();
    Ok(())
}

/// Step 10: the management network across three nodes on etcd, first over
/// the VXLAN overlay, then over host-gw routes. Its lab is removed at the
/// end of the step.
fn mgmt_demo() -> anyhow::Result<()> {
    use furrow_api::wire::NetworkInfo;
    use std::time::{Duration, Instant};
    let mut lab = Lab::shared(3)?;
    for n in ["mn1", "mn2", "mn3"] {
        lab.add_node(n)?;
    }
    let wait = |lab: &Lab, backend: &str| -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut done = true;
            for i in 0..3 {
                let nets: Vec<NetworkInfo> = lab.node(i).netd.client().get("/v1/networks")?;
                done &= nets
                    .iter()
                    .any(|n| n.backend.as_deref() == Some(backend) && n.remote_subnets.len() == 2);
            }
            if done {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{backend}: cross-node routes never completed");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    for backend in ["vxlan", "host-gw"] {
        if backend == "host-gw" {
            lab.node(0).apply("apiVersion: network.furrow.io/v1alpha1\nkind: ManagementNetwork\nmetadata: {name: mgmt}\nspec:\n  clusterCIDR: 10.52.0.0/16\n  backend: host-gw\n")?;
            println!("  ManagementNetwork mgmt switched to backend host-gw through mn1's API (all nodes follow through etcd)");
        }
        wait(&lab, backend)?;
        let pods: Vec<furrow_tests::Pod> = (0..3)
            .map(|i| lab.node(i).mgmt_pod(&format!("{}{i}", &backend[..2])))
            .collect::<Result<_, _>>()?;
        for (i, a) in pods.iter().enumerate() {
            let b = &pods[(i + 1) % 3];
            let ok = probe::ping_ok(&a.ns, IpAddr::V4(b.ip()), 5);
            let seen = probe::udp_source_seen(
                &a.ns,
                &b.ns,
                SocketAddr::new(IpAddr::V4(b.ip()), 7300 + i as u16),
            )?;
            println!(
                "  {backend:<7} pod on {} ({}) -> pod on {} ({}): {}; seen from {seen}",
                lab.node(i).name,
                a.ip(),
                lab.node((i + 1) % 3).name,
                b.ip(),
                if ok { "reachable" } else { "UNREACHABLE" }
            );
            if !ok {
                bail!("cross-node pod traffic over {backend} failed");
            }
        }
        let mtu = pods[0].ns.ip(&["-o", "link", "show", "dev", "eth0"])?;
        let mtu = mtu
            .split(" mtu ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or("?");
        println!("  pod MTU over {backend}: {mtu}");
        println!("\n  $ ip route show proto 70   (on {})", lab.node(0).name);
        for l in lab
            .node(0)
            .ns
            .ip(&["route", "show", "proto", "70"])?
            .lines()
        {
            if l.contains('/') {
                println!("    {l}");
            }
        }
        if backend == "vxlan" {
            println!("  $ bridge fdb show dev furrow.1");
            for l in lab
                .node(0)
                .ns
                .run("bridge", &["fdb", "show", "dev", "furrow.1"])?
                .lines()
            {
                if l.contains("dst") {
                    println!("    {l}");
                }
            }
        }
        for (i, p) in pods.iter().enumerate() {
            lab.node(i).del_pod(p);
        }
    }
    println!("\n  $ netctl networks   (on {})", lab.node(0).name);
    let out = lab.node(0).netd.netctl(&["networks"])?;
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        println!("    {l}");
    }
    Ok(())
}

/// Step 11: a VIP in ARP mode that moves on node loss and on SIGTERM, and
/// one in BGP mode that a client behind BIRD reaches. Its lab is removed
/// at the end of the step (the etcd cluster is not kept).
fn vip_demo() -> anyhow::Result<()> {
    use furrow_tests::scenario::vip::{self, BgpLab};
    use std::time::{Duration, Instant};
    let t = Duration::from_secs(20);
    let mut b = BgpLab::build()?;
    let cp: std::net::Ipv4Addr = "198.18.0.100".parse()?;
    let etcd = b
        .lab
        .etcd
        .as_ref()
        .map(|e| e.endpoints()[0].trim_start_matches("http://").to_string())
        .context("the VIP lab has etcd")?;
    b.lab.node(0).apply(&vip::arp_vip_yaml(
        "cp-vip",
        cp,
        &format!("  healthCheck: {{tcp: \"{etcd}\", intervalMs: 500, timeoutMs: 200}}\n"),
    ))?;
    let first = vip::single_holder(&b.lab, cp.into(), None, t)?;
    println!(
        "  VirtualIP cp-vip {cp} (ARP mode, health check: etcd reachable) held by {}; the external host's ARP is answered by its MAC only",
        b.lab.node(first).name
    );
    b.lab.node_mut(first).netd.kill();
    b.lab
        .node(first)
        .ns
        .ip(&["link", "set", "uplink0", "down"])?;
    let (second, took) = vip::wait_arp_moved(&b.lab, cp, first, t)?;
    println!(
        "  {} lost (netd SIGKILL, uplink cut): {} answers ARP after {} ms",
        b.lab.node(first).name,
        b.lab.node(second).name,
        took.as_millis()
    );
    vip::restore_uplink(&b.lab, first, true)?;
    b.lab.node_mut(first).netd.start()?;
    // SIGTERM returns once netd has handed over: time it from the signal.
    let t0 = Instant::now();
    b.lab.node_mut(second).netd.stop()?;
    let (third, _) = vip::wait_arp_moved(&b.lab, cp, second, t)?;
    println!(
        "  {} stopped (SIGTERM): {} answers ARP {} ms after the signal",
        b.lab.node(second).name,
        b.lab.node(third).name,
        t0.elapsed().as_millis()
    );
    b.lab.node_mut(second).netd.start()?;

    b.lab.node(0).apply(&b.peers_yaml(3))?;
    b.lab
        .node(0)
        .apply(&vip::bgp_vip_yaml("lb-vip", "198.19.100.10", ""))?;
    b.lab
        .node(0)
        .apply(&vip::bgp_vip_yaml("lb-vip6", "fd00:100::10", ""))?;
    let (holder, _) = b.wait_routed("198.19.100.10/32", None, t);
    let (holder6, _) = b.wait_routed("fd00:100::10/128", None, t);
    let reach = |ip: &str| {
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if b.client_reaches(ip) {
                return true;
            }
        }
        false
    };
    println!(
        "  BGPPeers tor-v4/tor-v6 (AS {} -> BIRD AS {}); lb-vip 198.19.100.10 routed by BIRD to {}, lb-vip6 fd00:100::10 to {}; the client behind BIRD reaches them: {} / {}",
        vip::NODE_AS,
        vip::ROUTER_AS,
        b.lab.node(holder).name,
        b.lab.node(holder6).name,
        reach("198.19.100.10"),
        reach("fd00:100::10")
    );
    println!("\n$ birdc show route");
    print!("{}", b.bird.birdc(&["show", "route"]));
    for (view, node) in [("vip", third), ("bgp", holder)] {
        println!(
            "\n$ netctl --socket {} {view}    (on {})",
            b.lab.node(node).netd.socket.display(),
            b.lab.node(node).name
        );
        let out = b.lab.node(node).netd.netctl(&[view])?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
    println!("\n  (this three-node lab is removed now; the VIP tests and `bash scripts/bench.sh vip` build it again)");
    drop(b);
    lease_vip_demo()
}

/// Step 12: a VM forging MACs, addresses, ARP and router advertisements
/// (scapy) reaches no one and netctl counts each; a 1000 packets/s flow
/// between two VMs loses nothing while netd is stopped, killed and
/// upgraded; the API socket is root's. Its lab is removed at the end.
fn hardening_demo() -> anyhow::Result<()> {
    use furrow_tests::flow::Flow;
    use furrow_tests::lab::vlan_nad;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut lab = Lab::new()?;
    lab.add_node("hn1")?;
    lab.add_data_nic(0, "data0")?;
    lab.node(0)
        .cluster_network("data", "ebpf", &["data0"], 1500)?;
    let (alice_mac, mallory_mac) = ("52:54:00:de:00:02", "52:54:00:de:00:01");
    let (alice_ip, mallory_ip) = ("10.78.0.12", "10.78.0.11");
    lab.node(0).apply(&format!(
        "apiVersion: network.furrow.io/v1alpha1\nkind: VirtualMachineNetworkConfig\nmetadata:\n  name: demo-vms\nspec:\n  vmName: demo-vms\n  networkConfigs:\n    - networkName: default/vlan100\n      macAddress: {alice_mac}\n      ipAddress: {alice_ip}\n    - networkName: default/vlan100\n      macAddress: {mallory_mac}\n      ipAddress: {mallory_ip}\n"
    ))?;
    let vm = |tag: &str, mac: &str, ip: &str| -> anyhow::Result<furrow_tests::Pod> {
        let mut cfg = vlan_nad("vlan100", "data", 100, &lab.node(0).netd.socket);
        cfg["runtimeConfig"] = json!({ "mac": mac });
        let p = lab.node(0).vm(tag, &cfg)?;
        p.ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0", "nodad"])?;
        Ok(p)
    };
    let alice = vm("alice", alice_mac, alice_ip)?;
    let mallory = vm("mallory", mallory_mac, mallory_ip)?;
    println!(
        "  VLAN 100: alice {alice_ip} ({alice_mac}) and mallory {mallory_ip} ({mallory_mac}), addresses known from a VirtualMachineNetworkConfig; mallory reaches alice: {}",
        probe::ping_ok(&mallory.ns, alice_ip.parse()?, 3)
    );
    let forged = [
        format!("Ether(src='02:66:66:66:66:01', dst='ff:ff:ff:ff:ff:ff')/IP(src='{mallory_ip}', dst='10.78.0.255')/UDP(sport=40001, dport=9999)"),
        format!("Ether(src='{mallory_mac}', dst='ff:ff:ff:ff:ff:ff')/IP(src='{alice_ip}', dst='10.78.0.255')/UDP(sport=40002, dport=9999)"),
        format!("Ether(src='{mallory_mac}', dst='ff:ff:ff:ff:ff:ff')/ARP(op=1, hwsrc='{mallory_mac}', psrc='{alice_ip}', hwdst='00:00:00:00:00:00', pdst='{alice_ip}')"),
        format!("Ether(src='{mallory_mac}', dst='33:33:00:00:00:01')/IPv6(src='{}', dst='ff02::1')/ICMPv6ND_RA()/ICMPv6NDOptPrefixInfo(prefix='2001:db8:bad::', prefixlen=64)", furrow_tests::scapy::eui64_link_local(mallory_mac)),
    ];
    furrow_tests::scapy::send(&mallory.ns, "eth0", &forged, 3)?;
    println!("  mallory (scapy) sent 3 each of: a forged source MAC, alice's IPv4 address as source, a gratuitous ARP for alice's address, a rogue router advertisement; none reached anyone:");
    let socket = lab.node(0).netd.socket.clone();
    println!("\n$ netctl --socket {} counters", socket.display());
    let out = lab.node(0).netd.netctl(&["counters"])?;
    print!("{}", String::from_utf8_lossy(&out.stdout));

    let flow = Flow::start(
        "mallory->alice",
        &mallory.ns,
        &alice.ns,
        alice_ip.parse()?,
        9100,
        1000,
    )?;
    let netd = &mut lab.node_mut(0).netd;
    std::thread::sleep(std::time::Duration::from_millis(500));
    netd.stop()?;
    std::thread::sleep(std::time::Duration::from_millis(500));
    netd.start()?;
    netd.kill();
    std::thread::sleep(std::time::Duration::from_millis(500));
    netd.start()?;
    netd.stop()?;
    netd.extra_args
        .extend(["--datapath-generation".to_string(), "2".to_string()]);
    netd.start()?;
    std::thread::sleep(std::time::Duration::from_millis(500));
    let r = flow.stop()?;
    println!(
        "\n  A 1000 packets/s UDP flow mallory -> alice while netd was stopped (SIGTERM) and started, killed (SIGKILL) and started, and upgraded to other programs (pinned tcx links, programs swapped in place): sent {}, received {}, lost {}",
        r.sent, r.received, r.lost_count
    );
    let m = std::fs::metadata(&socket)?;
    println!(
        "  API socket {}: mode {:o}, owner uid {} (root only; --api-read-group grants read-only views)",
        socket.display(),
        m.permissions().mode() & 0o777,
        m.uid()
    );
    Ok(())
}

/// Step 11, continued: the same election over Kubernetes Leases
/// (`--vip-election kubernetes`), against a stand-in for the API server's
/// Lease endpoints (no API server can run here).
fn lease_vip_demo() -> anyhow::Result<()> {
    use furrow_tests::lease_api::{LeaseServer, NAMESPACE};
    use furrow_tests::scenario::vip;
    use std::time::{Duration, Instant};
    let t = Duration::from_secs(20);
    let mut lab = Lab::shared(1)?;
    let dir = std::env::temp_dir().join(names::unique("lease-demo"));
    std::fs::create_dir_all(&dir)?;
    let api = LeaseServer::start(&lab, &dir)?;
    for n in ["ln1", "ln2"] {
        let node = lab.add_node_with(n, false)?;
        api.configure(&mut node.netd);
        node.netd.start()?;
    }
    let ip: std::net::Ipv4Addr = "198.18.0.110".parse()?;
    lab.node(0).apply(&vip::arp_vip_yaml("svc-vip", ip, ""))?;
    let first = vip::single_holder(&lab, ip.into(), None, t)?;
    let lease = api.wait_holder("svc-vip", Some(&lab.node(first).name), t)?;
    println!(
        "\n  The same election over Kubernetes Leases (netd --vip-election kubernetes, kube-rs client; a stand-in for the API server's Lease endpoints):\n  svc-vip {ip} held by {}; Lease {NAMESPACE}/furrow-vip-svc-vip: holderIdentity {}, leaseDurationSeconds {}, resourceVersion {}",
        lab.node(first).name,
        lease["spec"]["holderIdentity"],
        lease["spec"]["leaseDurationSeconds"],
        lease["metadata"]["resourceVersion"]
    );
    let t0 = Instant::now();
    lab.node_mut(first).netd.kill();
    lab.node(first).ns.ip(&["link", "set", "uplink0", "down"])?;
    let other = 1 - first;
    let lease = api.wait_holder("svc-vip", Some(&lab.node(other).name), t)?;
    println!(
        "  {} lost (netd SIGKILL, uplink cut): the Lease expired and {} took it after {} ms (leaseTransitions {})",
        lab.node(first).name,
        lab.node(other).name,
        t0.elapsed().as_millis(),
        lease["spec"]["leaseTransitions"]
    );
    let out = lab.node(other).netd.netctl(&["vip"])?;
    println!("\n$ netctl vip    (on {})", lab.node(other).name);
    print!("{}", String::from_utf8_lossy(&out.stdout));
    drop(api);
    drop(lab);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A lease for the VM with busybox udhcpc; the responder comes up with the
/// network's first local VM, so the first try may race it.
fn dhcp_lease_with_retries(
    p: &furrow_tests::Pod,
) -> anyhow::Result<furrow_tests::dhcp_clients::Event> {
    for _ in 0..3 {
        if let Some(ev) = furrow_tests::dhcp_clients::udhcpc_once(&p.ns, "eth0", 3)? {
            return Ok(ev);
        }
    }
    bail!("no DHCP lease for the VM in {}", p.ns.name)
}

fn status() -> anyhow::Result<()> {
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(STATE).context("no demo is running (bash scripts/demo.sh)")?,
    )?;
    let socket = state["socket"].as_str().unwrap_or_default();
    for view in ["status", "ports", "pools", "leases"] {
        println!("$ netctl --socket {socket} {view}");
        let out = std::process::Command::new(bins::netctl())
            .args(["--socket", socket, view])
            .output()?;
        print!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn down() -> anyhow::Result<()> {
    // netd processes of the demo.
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmd) = std::fs::read(p.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmd
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if let Some(i) = args.iter().position(|a| a == "--instance") {
                if args
                    .get(i + 1)
                    .is_some_and(|s| s.starts_with(names::DEMO_PREFIX))
                {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut removed = 0;
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(names::DEMO_PREFIX) {
                Netns::delete(&n);
                removed += 1;
            }
        }
    }
    for root in [
        furrow_tests::janitor::STATE_ROOT,
        furrow_tests::janitor::BPF_ROOT,
    ] {
        if let Ok(entries) = std::fs::read_dir(root) {
            for e in entries.flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .starts_with(names::DEMO_PREFIX)
                {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
    let _ = std::fs::remove_file(STATE);
    println!("demo removed ({removed} namespaces)");
    Ok(())
}

/// Runs the VLAN scenario with a backend and reports each check; used
/// inside a full-kernel guest for the kernel-bridge backend.
fn scenario_vlan(backend: &str) -> anyhow::Result<()> {
    use furrow_tests::scenario::vlan::VlanLab;
    let started = std::time::Instant::now();
    let mut v = VlanLab::build(backend)?;
    println!(
        "SCENARIO built backend={backend} in {:?}",
        started.elapsed()
    );
    let mut failed = Vec::new();
    let mut run = |name: &str, r: anyhow::Result<()>| match r {
        Ok(()) => println!("SCENARIO PASS {name}"),
        Err(e) => {
            println!("SCENARIO FAIL {name}: {e:#}");
            failed.push(name.to_string());
        }
    };
    run("same-vlan", v.check_same_vlan());
    run("isolation", v.check_isolation());
    run(
        "trunk-and-broadcast-domains",
        v.check_trunk_and_broadcast_domains(),
    );
    run("no-loops", v.check_no_loops());
    let f = v
        .check_uplink_failover()
        .map(|t| println!("SCENARIO failover recovered after {t:?}"));
    run("uplink-failover", f);
    let m = v
        .check_migration()
        .map(|t| println!("SCENARIO migration reachable after {t:?}"));
    run("migration", m);
    if failed.is_empty() {
        println!("SCENARIO OK");
        Ok(())
    } else {
        bail!("failed checks: {}", failed.join(", "))
    }
}
