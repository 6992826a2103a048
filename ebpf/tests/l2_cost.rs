//! What the L2 switch costs per frame, as BPF_PROG_TEST_RUN measures it
//! (the program itself: lookups, learning, tag handling, and for floods
//! the clones, which really are transmitted; not the final redirect).
//! Printed, not asserted: run with `--nocapture` to see the figures.

mod common;

use common::{l2::*, *};
use furrow_ebpf::*;

const CN: u32 = 1;
const REPEAT: u32 = 20_000;

#[test]
fn l2_per_frame_cost() {
    let node = NetNs::new();
    let peers = NetNs::new();
    const PORTS: usize = 64;
    let mut idx = Vec::new();
    for i in 0..PORTS {
        let (h, p) = (format!("vm{i}"), format!("pv{i}"));
        node.veth_to(&h, &p, &peers, &p);
        node.ip(&format!("link set {h} up"));
        peers.ip(&format!("link set {p} up"));
        idx.push(node.ifindex(&h));
    }
    let pins = PinDir::new();
    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    node.run(|| {
        for (i, &ix) in idx.iter().enumerate() {
            // Ports 0-1 on VLAN 2 (two members), 2-17 on VLAN 16, the
            // rest on VLAN 46.
            let vid = match i {
                0..=1 => 2,
                2..=17 => 16,
                _ => 46,
            };
            let port = L2Port {
                cluster_network: CN,
                mode: L2Mode::Access { vid },
                mtu: 1500,
            };
            // Port 3 is VLAN 16's DHCP responder.
            let flags = if i == 3 {
                L2PortFlags::RESPONDER
            } else {
                L2PortFlags::NONE
            };
            dp.l2_attach_port_with_flags(&format!("vm{i}"), ix, &port, flags)
                .unwrap();
        }
    });
    dp.l2_set_vlan(CN, 2, &idx[0..2], false).unwrap();
    dp.l2_set_vlan(CN, 16, &idx[2..18], false).unwrap();
    dp.l2_set_vlan(CN, 46, &idx[18..], false).unwrap();
    let (a, b) = ([2, 0, 0, 0, 0, 0xa], [2, 0, 0, 0, 0, 0xb]);
    dp.fdb_add_static(CN, 2, b, idx[1]).unwrap();
    dp.l2_set_dhcp_responder(CN, 16, Some(idx[3])).unwrap();

    let fd = dp.program_fd(PROG_L2_INGRESS).unwrap();
    let run = |ifindex: u32, frame: &[u8], repeat: u32| {
        let ctx = SkbContext {
            ifindex,
            ..Default::default()
        };
        node.run(|| test_run(fd, frame, Some(&ctx), repeat))
            .unwrap()
    };
    let mut report = Vec::new();
    let out = run(idx[0], &raw_frame(b, a, 1000), REPEAT);
    assert_eq!(out.retval, TC_ACT_REDIRECT);
    report.push(format!(
        "known unicast (learn + lookup): {} ns",
        out.duration_ns
    ));
    let udp = ipv4_udp_frame(b, a, [10, 0, 0, 1], [10, 0, 0, 2], 64, &[], &[0; 1000]);
    let out = run(idx[0], &udp, REPEAT);
    assert_eq!(out.retval, TC_ACT_REDIRECT);
    report.push(format!(
        "known unicast, IPv4 UDP (DHCP check included): {} ns",
        out.duration_ns
    ));
    let out = run(idx[2], &Udp4::discover(a).frame(), REPEAT);
    let t = L2Trace::from_cb(out.cb).unwrap();
    assert_eq!(t.verdict, L2Verdict::DhcpSteered);
    report.push(format!(
        "DHCP DISCOVER steered to the responder: {} ns",
        out.duration_ns
    ));
    let out = run(
        idx[0],
        &with_tag(&raw_frame(b, a, 1000), TPID_8021Q, 2),
        REPEAT,
    );
    assert_eq!(out.retval, TC_ACT_SHOT, "tagged on an access port");
    report.push(format!(
        "tagged frame dropped on an access port: {} ns",
        out.duration_ns
    ));
    for (vid, first, members) in [(2u16, 0usize, 2usize), (16, 2, 16), (46, 18, 46)] {
        let out = run(idx[first], &raw_frame(BCAST, a, 1000), 2000);
        let t = L2Trace::from_cb(out.cb).unwrap();
        assert_eq!(t.flood_copies as usize, members - 1, "VLAN {vid}");
        report.push(format!(
            "broadcast to {members} members ({} clones): {} ns, {:.0} ns per copy",
            members - 2,
            out.duration_ns,
            out.duration_ns as f64 / (members - 1) as f64
        ));
    }
    eprintln!("L2 switch, per frame (test_run, {REPEAT} repeats):");
    for r in report {
        eprintln!("  {r}");
    }
}

/// TCP throughput and UDP round trips between two VMs: through the eBPF
/// switch (same node, and across two nodes over a fabric bridge) and,
/// for reference, through a plain Linux bridge. Slow and noisy on shared
/// cores, so ignored: `cargo test -p furrow-ebpf --release --test l2_cost
/// -- --ignored --nocapture`.
#[test]
#[ignore]
fn l2_throughput_against_a_linux_bridge() {
    use std::process::{Child, Command, Stdio};

    /// Kills a server even when the test panics.
    struct Server(Child);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn vm(host: &NetNs, name: &str, ip: &str) -> (NetNs, u32) {
        let ns = NetNs::new();
        host.veth_to(name, &format!("{name}p"), &ns, "eth0");
        host.ip(&format!("link set {name} up"));
        ns.ip("link set eth0 up");
        ns.ip(&format!("addr add {ip}/24 dev eth0"));
        (ns, host.ifindex(name))
    }
    fn measure(what: &str, client: &NetNs, server: &NetNs, ip: &str) {
        let srv = Server(server.run(|| {
            Command::new("iperf3")
                .args(["-s", "-1", "-B", ip])
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        }));
        std::thread::sleep(std::time::Duration::from_millis(300));
        let out = client.cmd("iperf3", &["-c", ip, "-t", "3", "-J"]);
        drop(srv);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let gbps = v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap_or(0.0)
            / 1e9;
        let srv = Server(server.run(|| {
            Command::new("sockperf")
                .args(["server", "-i", ip, "-p", "11111"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        }));
        std::thread::sleep(std::time::Duration::from_millis(300));
        let out = client.cmd(
            "sockperf",
            &["ping-pong", "-i", ip, "-p", "11111", "-t", "3", "-m", "64"],
        );
        drop(srv);
        let text = String::from_utf8_lossy(&out.stdout);
        let lat: String = text
            .split("avg-latency=")
            .nth(1)
            .unwrap_or("?")
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        eprintln!("{what}: TCP {gbps:.2} Gbit/s; UDP 64 B one-way latency {lat} us");
    }

    // Linux bridge.
    let host = NetNs::new();
    host.ip("link add br0 type bridge");
    host.ip("link set br0 up");
    let (a, _) = vm(&host, "ba", "10.9.0.1");
    let (b, _) = vm(&host, "bb", "10.9.0.2");
    host.ip("link set ba master br0");
    host.ip("link set bb master br0");
    measure("linux bridge, one node", &a, &b, "10.9.0.2");

    // eBPF switch, one node, VLAN 100.
    let node = NetNs::new();
    let pins = PinDir::new();
    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    let (a, ai) = vm(&node, "va", "10.9.1.1");
    let (b, bi) = vm(&node, "vb", "10.9.1.2");
    let port = L2Port {
        cluster_network: CN,
        mode: L2Mode::Access { vid: 100 },
        mtu: 1500,
    };
    node.run(|| {
        dp.l2_attach_port("va", ai, &port).unwrap();
        dp.l2_attach_port("vb", bi, &port).unwrap();
    });
    dp.l2_set_vlan(CN, 100, &[ai, bi], false).unwrap();
    measure("ebpf switch, one node", &a, &b, "10.9.1.2");
}
