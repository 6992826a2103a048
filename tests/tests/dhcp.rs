//! DHCP for VMs on VLAN networks: real clients (busybox udhcpc, ISC
//! dhclient) in VM namespaces on two nodes that share leases through etcd.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use furrow_tests::dhcp_clients::{Dhclient, Udhcpc};
use furrow_tests::probe;
use furrow_tests::scenario::dhcp::{mac_of, DhcpLab, PoolSpec, MTU, POOL, ROUTER, SERVER_IP};

const T: Duration = Duration::from_secs(20);

#[test]
fn udhcpc_and_dhclient_on_two_nodes_get_leases_renew_and_release() {
    let d = DhcpLab::build(&PoolSpec {
        lease_time: 60,
        ..Default::default()
    })
    .unwrap();
    let reserved_mac = "52:54:00:80:00:40";
    let reserved_ip = Ipv4Addr::new(10, 80, 0, 200);
    d.reserve("vm-b", reserved_mac, reserved_ip).unwrap();

    // node1: udhcpc gets a pooled address with every option.
    let a = d.vm(0, "a", None).unwrap();
    let a_mac = mac_of(&a, "eth0").unwrap();
    let ua = Udhcpc::start(&a.ns, "eth0", "vm-a").unwrap();
    let bound = ua.bound(T).unwrap();
    let a_ip: Ipv4Addr = bound["ip"].parse().unwrap();
    assert!(
        (10..=50).contains(&a_ip.octets()[3]) && a_ip.octets()[3] != 11,
        "{a_ip} is not from the pool range minus its exclusion"
    );
    assert_eq!(bound["mask"], "24");
    assert_eq!(bound["router"], ROUTER.to_string());
    assert_eq!(
        bound["dns"].split_whitespace().collect::<Vec<_>>(),
        ["10.80.0.1", "10.80.0.3"]
    );
    assert_eq!(bound["mtu"], MTU.to_string());
    assert_eq!(
        bound["staticroutes"],
        "192.168.0.0/16 10.80.0.1 0.0.0.0/0 10.80.0.1"
    );
    assert_eq!(bound["serverid"], SERVER_IP.to_string());
    assert_eq!(bound["domain"], "vms.example");
    assert_eq!(bound["lease"], "60");
    // ... and applied them.
    assert!(a
        .ns
        .ip(&["addr", "show", "eth0"])
        .unwrap()
        .contains(&format!("inet {a_ip}/24")));
    assert!(a
        .ns
        .ip(&["link", "show", "eth0"])
        .unwrap()
        .contains(&format!("mtu {MTU}")));
    let routes = a.ns.ip(&["route"]).unwrap();
    assert!(routes.contains("192.168.0.0/16 via 10.80.0.1"), "{routes}");
    assert!(routes.contains("default via 10.80.0.1"), "{routes}");

    // node2: dhclient gets the reservation (outside the range).
    let b = d.vm(1, "b", Some(reserved_mac)).unwrap();
    let mut db = Dhclient::start(&b.ns, "eth0", "vm-b").unwrap();
    let bb = db.bound(T).unwrap();
    assert_eq!(bb["new_ip_address"], reserved_ip.to_string());
    assert_eq!(bb["new_subnet_mask"], "255.255.255.0");
    assert_eq!(bb["new_routers"], ROUTER.to_string());
    assert_eq!(bb["new_domain_name_servers"], "10.80.0.1 10.80.0.3");
    assert_eq!(bb["new_interface_mtu"], MTU.to_string());
    assert_eq!(bb["new_dhcp_server_identifier"], SERVER_IP.to_string());
    assert_eq!(
        bb["new_rfc3442_classless_static_routes"],
        "16 192 168 10 80 0 1 0 10 80 0 1"
    );

    // The two VMs, on different nodes, talk with what DHCP gave them.
    assert!(probe::ping_ok(&a.ns, IpAddr::V4(reserved_ip), 3));

    // Both nodes see both leases, each with the node that served it.
    for i in 0..2 {
        let la = d.lease_of(i, &a_mac).unwrap().expect("a's lease listed");
        assert_eq!(
            (la.ip, la.state.as_str(), la.node.as_str()),
            (a_ip, "bound", "node1")
        );
        assert_eq!(la.hostname.as_deref(), Some("vm-a"));
        let lb = d
            .lease_of(i, reserved_mac)
            .unwrap()
            .expect("b's lease listed");
        assert_eq!(
            (lb.ip, lb.node.as_str(), lb.reserved),
            (reserved_ip, "node2", true)
        );
    }

    // Renew keeps the address: udhcpc on demand, dhclient on its own at T1.
    let before = d.lease_of(0, &a_mac).unwrap().unwrap().expires_at;
    std::thread::sleep(Duration::from_millis(1100));
    let r = ua.renew(T).unwrap();
    assert_eq!(r["ip"], a_ip.to_string());
    let after = d.lease_of(0, &a_mac).unwrap().unwrap().expires_at;
    assert!(
        after > before,
        "the renewal extended the lease ({before} -> {after})"
    );
    let rb = db.renewed(Duration::from_secs(45)).unwrap();
    assert_eq!(rb["new_ip_address"], reserved_ip.to_string());

    // Release frees: the records go, on both nodes.
    ua.release(T).unwrap();
    db.release().unwrap();
    d.wait_for("both leases released", T, || {
        Ok((0..2).all(|i| {
            d.lease_of(i, &a_mac).ok().flatten().is_none()
                && d.lease_of(i, reserved_mac).ok().flatten().is_none()
        }))
    })
    .unwrap();
    let text = d.lab.node(0).netd.client().get_text("/metrics").unwrap();
    let acks = d
        .metric(
            0,
            "furrow_dhcp_replies_total",
            &[&format!("pool=\"{POOL}\""), "type=\"ack\""],
        )
        .unwrap();
    assert!(acks >= 2.0, "{text}");
    assert!(d.metric(0, "furrow_vlan_dhcp_steered_total", &[]).unwrap() >= 4.0);
}

#[test]
fn a_vm_moved_to_the_other_node_keeps_its_address_and_restarts_keep_leases() {
    let mut d = DhcpLab::build(&PoolSpec::default()).unwrap();
    let mac = "52:54:00:80:00:50";
    // The VM runs on node1 and gets an address there.
    let before = d.vm(0, "mig", Some(mac)).unwrap();
    let c = Udhcpc::start(&before.ns, "eth0", "mig").unwrap();
    let ip: Ipv4Addr = c.bound(T).unwrap()["ip"].parse().unwrap();
    assert_eq!(
        d.lease_of(1, mac).unwrap().map(|l| l.node),
        Some("node1".into())
    );
    // It stops there (no release: the guest is simply gone) ...
    drop(c);
    d.lab.node(0).del_pod(&before).expect_ok("DEL on node1");
    drop(before);
    // ... and starts on node2 with the same MAC: node2 answers, with the
    // same address.
    let after = d.vm(1, "mig", Some(mac)).unwrap();
    let c = Udhcpc::start(&after.ns, "eth0", "mig").unwrap();
    let bound = c.bound(T).unwrap();
    assert_eq!(
        bound["ip"],
        ip.to_string(),
        "the moved VM got another address"
    );
    let l = d.lease_of(0, mac).unwrap().expect("lease listed on node1");
    assert_eq!((l.ip, l.node.as_str()), (ip, "node2"));

    // Another VM on node1, so both nodes hold a lease of their own.
    let other = d.vm(0, "other", None).unwrap();
    let oc = Udhcpc::start(&other.ns, "eth0", "other").unwrap();
    let other_ip: Ipv4Addr = oc.bound(T).unwrap()["ip"].parse().unwrap();
    assert_ne!(other_ip, ip);

    let mut snapshot = d.leases(0).unwrap();
    snapshot.sort_by_key(|l| l.ip);
    for i in 0..2 {
        d.lab.nodes[i].netd.restart().unwrap();
    }
    for i in 0..2 {
        let mut now = d.leases(i).unwrap();
        now.sort_by_key(|l| l.ip);
        assert_eq!(now, snapshot, "node{} after restarting", i + 1);
    }
    // The responders are back: renewals on both nodes are answered with
    // the same addresses.
    assert_eq!(c.renew(T).unwrap()["ip"], ip.to_string());
    assert_eq!(oc.renew(T).unwrap()["ip"], other_ip.to_string());
    // And a new VM is not given an address in use.
    let fresh = d.vm(1, "fresh", None).unwrap();
    let fc = Udhcpc::start(&fresh.ns, "eth0", "fresh").unwrap();
    let fresh_ip: Ipv4Addr = fc.bound(T).unwrap()["ip"].parse().unwrap();
    assert!(
        fresh_ip != ip && fresh_ip != other_ip,
        "{fresh_ip} handed out twice"
    );
}

#[test]
fn an_exhausted_pool_offers_nothing_and_says_why() {
    // Two addresses: .10 and .12 (.11 excluded).
    let d = DhcpLab::build(&PoolSpec {
        range: (10, 12),
        exclude: vec![11],
        lease_time: 3600,
    })
    .unwrap();
    let x = d.vm(0, "x", None).unwrap();
    let y = d.vm(1, "y", None).unwrap();
    let z = d.vm(0, "z", None).unwrap();
    let cx = Udhcpc::start(&x.ns, "eth0", "x").unwrap();
    let cy = Udhcpc::start(&y.ns, "eth0", "y").unwrap();
    let mut got: Vec<String> = [cx.bound(T).unwrap(), cy.bound(T).unwrap()]
        .iter()
        .map(|e| e["ip"].clone())
        .collect();
    got.sort();
    assert_eq!(got, ["10.80.0.10", "10.80.0.12"]);
    // The third VM gets no offer at all.
    let none = furrow_tests::dhcp_clients::udhcpc_once(&z.ns, "eth0", 3).unwrap();
    assert!(none.is_none(), "an exhausted pool offered {none:?}");
    let log = d.lab.node(0).netd.log();
    assert!(
        log.lines()
            .any(|l| l.contains("DHCP request not served") && l.contains("pool exhausted")),
        "no log line says why:\n{}",
        d.lab.node(0).netd.log_tail(20)
    );
    assert!(
        d.metric(
            0,
            "furrow_dhcp_refusals_total",
            &["reason=\"pool_exhausted\""]
        )
        .unwrap()
            >= 1.0
    );
    // Freeing one address lets the third VM in. udhcpc sends its RELEASE
    // unicast and then flushes its address, and flushing the last address
    // drops a packet still waiting for ARP: a renewal first resolves the
    // server, as it is for any VM that has lived through one.
    cx.renew(T).unwrap();
    let x_mac = mac_of(&x, "eth0").unwrap();
    cx.release(T).unwrap();
    d.wait_for("x's lease released", T, || {
        Ok(d.lease_of(0, &x_mac)?.is_none())
    })
    .unwrap();
    let ev = furrow_tests::dhcp_clients::udhcpc_once(&z.ns, "eth0", 5)
        .unwrap()
        .expect("a lease once an address is free");
    assert_eq!(ev["ip"], "10.80.0.10");
}

#[test]
fn two_nodes_racing_for_the_last_address_never_both_get_it() {
    // One address; a VM on each node asks at the same moment. Offers are
    // kept in each node's memory, so both may offer it: the binding is
    // what the store decides, and only one can win.
    let d = DhcpLab::build(&PoolSpec {
        range: (10, 10),
        exclude: vec![],
        lease_time: 3600,
    })
    .unwrap();
    let x = d.vm(0, "x", None).unwrap();
    let y = d.vm(1, "y", None).unwrap();
    let (rx, ry) = std::thread::scope(|s| {
        let a = s.spawn(|| furrow_tests::dhcp_clients::udhcpc_once(&x.ns, "eth0", 3));
        let b = s.spawn(|| furrow_tests::dhcp_clients::udhcpc_once(&y.ns, "eth0", 3));
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    let winners: Vec<_> = [&rx, &ry].into_iter().flatten().collect();
    assert_eq!(winners.len(), 1, "x got {rx:?}, y got {ry:?}");
    assert_eq!(winners[0]["ip"], "10.80.0.10");
    let winner = if rx.is_some() { &x } else { &y };
    let winner_mac = mac_of(winner, "eth0").unwrap();
    // Both nodes agree on who holds it.
    for node in 0..2 {
        d.wait_for("both nodes see the one binding", T, || {
            let leases = d.leases(node)?;
            let bound: Vec<_> = leases.iter().filter(|l| l.state == "bound").collect();
            Ok(bound.len() == 1 && bound[0].mac.to_string() == winner_mac)
        })
        .unwrap();
    }
}

/// A valid DISCOVER from `mac`, as a UDP payload.
fn discover_payload(mac: [u8; 6]) -> Vec<u8> {
    use furrow_dhcp::dhcproto::v4::{DhcpOption, Message, MessageType};
    let mut m = Message::default();
    m.set_chaddr(&mac).set_xid(0x1234_5678);
    m.opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Discover));
    furrow_dhcp::codec::encode(&m, 0).unwrap()
}

fn client_spec(mac: [u8; 6]) -> furrow_dhcp::frame::FrameSpec {
    furrow_dhcp::frame::FrameSpec {
        src_mac: furrow_dhcp::MacAddr(mac),
        dst_mac: furrow_dhcp::frame::BROADCAST_MAC,
        vlan: None,
        src_ip: Ipv4Addr::UNSPECIFIED,
        dst_ip: Ipv4Addr::BROADCAST,
        src_port: 68,
        dst_port: 67,
    }
}

/// Every kind of broken DHCP frame, plus many mutated ones.
fn malformed_frames(mac: [u8; 6]) -> Vec<Vec<u8>> {
    use furrow_dhcp::frame::build_raw;
    let spec = client_spec(mac);
    let good = discover_payload(mac);
    let wrap = |p: &[u8]| build_raw(&spec, p, 65535).unwrap();
    let mut out = Vec::new();
    let full = wrap(&good);
    // Truncated anywhere (the IP and UDP lengths still claim the whole).
    for cut in [20, 34, 41, 42, 60, 100, 200, 270, 280, full.len() - 1] {
        out.push(full[..cut.min(full.len())].to_vec());
    }
    // Bad option lengths: running past the end, zero-length message type,
    // an option cut by the end marker.
    let opts_at = 240;
    for bad in [
        vec![53, 200, 1],
        vec![53, 0, 255],
        vec![61, 7, 1, 2, 255],
        vec![55, 255],
        vec![82, 4, 1, 9, 0, 0, 255],
        vec![52, 1, 3, 255],
    ] {
        // The fixed header and magic cookie, then the broken options.
        let mut p = good[..opts_at].to_vec();
        p.extend(bad);
        out.push(wrap(&p));
    }
    // Oversized: a message as large as the link carries, all options.
    let mut big = good[..opts_at].to_vec();
    big.extend([53, 1, 1]);
    while big.len() < 1400 {
        big.extend([224, 250]);
        big.extend([0x41; 250]);
    }
    big.truncate(1450);
    out.push(wrap(&big));
    // Wrong op (BOOTREPLY to the server port), bad hlen, bad htype.
    for (at, v) in [(0usize, 2u8), (2, 255), (2, 17), (1, 99), (0, 0)] {
        let mut p = good.clone();
        p[at] = v;
        out.push(wrap(&p));
    }
    // Corrupt UDP checksum and IP header checksum.
    let mut f = full.clone();
    let udp_ck = 14 + 20 + 6;
    f[udp_ck] ^= 0xff;
    out.push(f);
    let mut f = full.clone();
    f[14 + 10] ^= 0xff;
    out.push(f);
    // Deterministic mutations of the good payload.
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        s.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    for _ in 0..2000 {
        let mut p = good.clone();
        for _ in 0..1 + rnd() % 4 {
            let i = (rnd() as usize) % p.len();
            match rnd() % 3 {
                0 => p[i] = rnd() as u8,
                1 => p.truncate(i.max(1)),
                _ => p
                    .splice(i..i, [(rnd() as u8), (rnd() % 20) as u8])
                    .for_each(drop),
            }
        }
        out.push(wrap(&p));
    }
    out
}

#[test]
fn malformed_packets_never_crash_or_stall_the_server() {
    let mut d = DhcpLab::build(&PoolSpec::default()).unwrap();
    let vm = d.vm(0, "fuzz", None).unwrap();
    let mac_s = mac_of(&vm, "eth0").unwrap();
    let mac: [u8; 6] = mac_s.parse::<furrow_dhcp::MacAddr>().unwrap().0;
    let tx = furrow_tests::dhcp_clients::RawSender::open(&vm.ns, "eth0").unwrap();
    let frames = malformed_frames(mac);
    for f in &frames {
        tx.send(f).unwrap();
    }
    // Still serving, promptly: a real client gets its lease.
    let c = Udhcpc::start(&vm.ns, "eth0", "after").unwrap();
    let ev = c.bound(T).unwrap();
    assert_eq!(ev["serverid"], SERVER_IP.to_string());
    let malformed = d
        .metric(0, "furrow_dhcp_requests_total", &["type=\"malformed\""])
        .unwrap();
    assert!(
        malformed >= 20.0,
        "only {malformed} of {} broken frames were seen as malformed",
        frames.len()
    );
    // netd is the same process it was (it never restarted).
    assert!(d.lab.nodes[0].netd.is_running(), "netd died");
    assert!(!d.lab.node(0).netd.log().contains("panicked"));
}

#[test]
fn a_rogue_dhcp_server_in_a_vm_reaches_no_other_vm() {
    let d = DhcpLab::build(&PoolSpec::default()).unwrap();
    // The rogue: a VM on node1 running dnsmasq on the VM network, which
    // also pushes unsolicited OFFERs and ACKs at everyone.
    let rogue = d.vm(0, "rogue", Some("52:54:00:66:66:66")).unwrap();
    rogue
        .ns
        .ip(&["addr", "add", "10.80.0.250/24", "dev", "eth0"])
        .unwrap();
    let leases = std::env::temp_dir().join(furrow_tests::names::unique("rogue-leases"));
    let mut dnsmasq = rogue
        .ns
        .cmd("dnsmasq")
        .args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--port=0",
            "--interface=eth0",
            "--bind-interfaces",
            "--dhcp-range=10.80.0.100,10.80.0.150,12h",
            "--dhcp-authoritative",
        ])
        .arg(format!("--dhcp-leasefile={}", leases.display()))
        .arg(format!("--pid-file={}.pid", leases.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("dnsmasq (Debian package dnsmasq-base)");
    // Victims on both nodes, watching for any server reply from the rogue.
    let v1 = d.vm(0, "v1", None).unwrap();
    let v2 = d.vm(1, "v2", None).unwrap();
    let rogue_filter = "ether src 52:54:00:66:66:66 and udp src port 67";
    let caps: Vec<_> = [&v1, &v2]
        .iter()
        .map(|v| furrow_tests::capture::Capture::start(&v.ns, "eth0", rogue_filter, true).unwrap())
        .collect();
    let tx = furrow_tests::dhcp_clients::RawSender::open(&rogue.ns, "eth0").unwrap();
    let push = |n: usize| {
        use furrow_dhcp::dhcproto::v4::{DhcpOption, Message, MessageType, Opcode};
        for i in 0..n {
            let mut m = Message::default();
            m.set_opcode(Opcode::BootReply)
                .set_chaddr(&[0xff; 6])
                .set_xid(i as u32)
                .set_yiaddr(Ipv4Addr::new(10, 80, 0, 66));
            let t = if i % 2 == 0 {
                MessageType::Offer
            } else {
                MessageType::Ack
            };
            m.opts_mut().insert(DhcpOption::MessageType(t));
            m.opts_mut()
                .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 80, 0, 250)));
            m.opts_mut()
                .insert(DhcpOption::Router(vec![Ipv4Addr::new(10, 80, 0, 250)]));
            let spec = furrow_dhcp::frame::FrameSpec {
                src_mac: furrow_dhcp::MacAddr([0x52, 0x54, 0, 0x66, 0x66, 0x66]),
                dst_mac: furrow_dhcp::frame::BROADCAST_MAC,
                vlan: None,
                src_ip: Ipv4Addr::new(10, 80, 0, 250),
                dst_ip: Ipv4Addr::BROADCAST,
                src_port: 67,
                dst_port: 68,
            };
            tx.send(&furrow_dhcp::frame::build(&spec, &m, 1500).unwrap())
                .unwrap();
        }
    };
    push(50);
    let c1 = Udhcpc::start(&v1.ns, "eth0", "v1").unwrap();
    let c2 = Udhcpc::start(&v2.ns, "eth0", "v2").unwrap();
    push(50);
    let (b1, b2) = (c1.bound(T).unwrap(), c2.bound(T).unwrap());
    push(50);
    // Both victims were served by Furrow, not the rogue.
    for b in [&b1, &b2] {
        assert_eq!(b["serverid"], SERVER_IP.to_string(), "{b:?}");
        assert_eq!(b["router"], ROUTER.to_string());
    }
    std::thread::sleep(Duration::from_millis(300));
    for (i, cap) in caps.into_iter().enumerate() {
        let seen = cap.stop();
        let from_rogue: Vec<_> = seen
            .iter()
            .filter(|l| l.contains("52:54:00:66:66:66"))
            .collect();
        assert!(
            from_rogue.is_empty(),
            "v{} received rogue replies: {from_rogue:?}",
            i + 1
        );
    }
    // dnsmasq never even saw a client, and the guard counted the drops.
    let handed = std::fs::read_to_string(&leases).unwrap_or_default();
    assert!(handed.trim().is_empty(), "the rogue leased: {handed}");
    assert!(
        d.metric(0, "furrow_vlan_drop_dhcp_guard_total", &[])
            .unwrap()
            >= 150.0,
        "guard drops not counted"
    );
    let _ = dnsmasq.kill();
    let _ = dnsmasq.wait();
    let _ = std::fs::remove_file(&leases);
    let _ = std::fs::remove_file(format!("{}.pid", leases.display()));
}

/// dnsmasq serving `range` from a VM, killed on drop.
struct Dnsmasq {
    child: std::process::Child,
    leases: std::path::PathBuf,
}

impl Dnsmasq {
    fn start(vm: &furrow_tests::Pod, args: &[&str]) -> Dnsmasq {
        let leases = std::env::temp_dir().join(furrow_tests::names::unique("dnsmasq-leases"));
        let child = vm
            .ns
            .cmd("dnsmasq")
            .args([
                "--no-daemon",
                "--conf-file=/dev/null",
                "--port=0",
                "--interface=eth0",
                "--bind-interfaces",
            ])
            .args(args)
            .arg(format!("--dhcp-leasefile={}", leases.display()))
            .arg(format!("--pid-file={}.pid", leases.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("dnsmasq (Debian package dnsmasq-base)");
        Dnsmasq { child, leases }
    }

    /// (MAC, IP) of every lease in dnsmasq's file.
    fn leases(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(&self.leases)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 3).then(|| (f[1].to_string(), f[2].to_string()))
            })
            .collect()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.leases);
        let _ = std::fs::remove_file(format!("{}.pid", self.leases.display()));
    }
}

#[test]
fn a_node_interface_keeps_a_dhcp_address_and_discovery_finds_the_subnet() {
    use furrow_api::wire::{DhcpClientInfo, DiscoveredNetwork};
    let mut d = DhcpLab::build(&PoolSpec::default()).unwrap();
    // VLAN 200's DHCP server: a router appliance VM on node2 (its port
    // trusted to answer DHCP).
    let mut nad = furrow_tests::lab::vlan_nad("vlan200", "data", 200, &d.lab.node(1).netd.socket);
    nad["dhcpTrusted"] = serde_json::json!(true);
    let router = d.lab.node(1).vm("router", &nad).unwrap();
    router
        .ns
        .ip(&["addr", "add", "10.90.0.1/24", "dev", "eth0"])
        .unwrap();
    let dnsmasq = Dnsmasq::start(
        &router,
        &[
            "--dhcp-range=10.90.0.100,10.90.0.150,255.255.255.0,1h",
            "--dhcp-option=option:router,10.90.0.1",
            "--dhcp-option=option:dns-server,10.90.0.53",
        ],
    );

    // Discovery from node1 finds the subnet and gateway, takes no lease,
    // and every node shows it.
    let out = d
        .lab
        .node(0)
        .netd
        .netctl(&["discover", "data", "200", "-o", "json"])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found: DiscoveredNetwork = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(found.cidr.to_string(), "10.90.0.0/24");
    assert_eq!(found.gateway, Some(Ipv4Addr::new(10, 90, 0, 1)));
    assert_eq!(found.server, Ipv4Addr::new(10, 90, 0, 1));
    assert_eq!(found.dns, vec![Ipv4Addr::new(10, 90, 0, 53)]);
    let seen: Vec<DiscoveredNetwork> = d
        .lab
        .node(1)
        .netd
        .client()
        .get("/v1/dhcp/discovered")
        .unwrap();
    assert_eq!(seen, vec![found.clone()]);
    // A VLAN with no DHCP server: a clear failure, in time.
    let out = d
        .lab
        .node(0)
        .netd
        .netctl(&["discover", "data", "300", "--timeout", "2"])
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("VLAN 300") && err.contains("DHCPOFFER"),
        "{err}"
    );

    // A node interface on VLAN 200 that takes its address by DHCP.
    d.lab
        .node(0)
        .apply(
            "apiVersion: network.furrow.io/v1alpha1
kind: VlanInterface
metadata: {name: uplink200}
spec:
  clusterNetwork: data
  vlan: 200
  dhcp: true
  nodeSelector: {kubernetes.io/hostname: node1}
",
        )
        .unwrap();
    let held = |d: &DhcpLab| -> Vec<DhcpClientInfo> {
        d.lab.node(0).netd.client().get("/v1/dhcp/clients").unwrap()
    };
    d.wait_for("node1 holds a DHCP address", T, || {
        Ok(held(&d)
            .iter()
            .any(|h| h.state == "bound" && h.address.is_some()))
    })
    .unwrap();
    let h = held(&d).remove(0);
    let addr = h.address.unwrap();
    assert_eq!(h.owner, "vif:uplink200");
    assert_eq!(addr.prefix_len(), 24);
    assert!((100..=150).contains(&addr.addr().octets()[3]), "{addr}");
    assert_eq!(h.router, Some(Ipv4Addr::new(10, 90, 0, 1)));
    // On the node, for real: the node reaches the router with it.
    let on_node = |d: &DhcpLab| {
        d.lab
            .node(0)
            .ns
            .ip(&["addr", "show", "dev", &h.interface])
            .unwrap()
    };
    assert!(on_node(&d).contains(&format!("inet {addr}")));
    assert!(probe::ping_ok(
        &d.lab.node(0).ns,
        IpAddr::V4(Ipv4Addr::new(10, 90, 0, 1)),
        3
    ));
    // Only that one lease at the server (the discovery took none).
    assert_eq!(
        dnsmasq.leases(),
        vec![(h.mac.to_string(), addr.addr().to_string())]
    );

    // A restart keeps the address (same MAC, lease confirmed, no second
    // lease at the server).
    d.lab.nodes[0].netd.restart().unwrap();
    d.wait_for("bound again after the restart", T, || {
        Ok(held(&d)
            .iter()
            .any(|x| x.state == "bound" && x.address == Some(addr) && x.mac == h.mac))
    })
    .unwrap();
    assert!(on_node(&d).contains(&format!("inet {addr}")));
    assert_eq!(dnsmasq.leases().len(), 1, "{:?}", dnsmasq.leases());

    // Deleting the interface releases the lease.
    let out = d
        .lab
        .node(0)
        .netd
        .netctl(&["delete", "vlaninterface", "uplink200"])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.wait_for("the server saw the release", T, || {
        Ok(dnsmasq.leases().is_empty())
    })
    .unwrap();
    assert!(held(&d).is_empty());
}

/// Cross-resource checks: one pool per network; reservations inside the
/// pool's network, never the server's or the router's address, and never
/// given to two VMs. A refused document changes nothing.
#[test]
fn conflicting_pools_and_reservations_are_refused_naming_the_field() {
    use furrow_tests::scenario::dhcp::NETWORK;
    let mut lab = furrow_tests::Lab::new().unwrap();
    lab.add_node("node1").unwrap();
    let node = lab.node(0);
    node.apply(&PoolSpec::default().yaml()).unwrap();
    let second = PoolSpec::default()
        .yaml()
        .replace("name: vm-pool", "name: vm-pool-2");
    let err = node.apply(&second).unwrap_err().to_string();
    assert!(
        err.contains("spec.networkName") && err.contains("vm-pool"),
        "{err}"
    );
    let vmnc = |name: &str, mac: &str, ip: &str| {
        format!(
            "apiVersion: network.furrow.io/v1alpha1\nkind: VirtualMachineNetworkConfig\nmetadata: {{name: {name}}}\nspec:\n  vmName: {name}\n  networkConfigs:\n    - networkName: default/{NETWORK}\n      macAddress: \"{mac}\"\n      ipAddress: {ip}\n"
        )
    };
    node.apply(&vmnc("vm1", "52:54:00:00:00:01", "10.80.0.20"))
        .unwrap();
    for (doc, field, what) in [
        (
            vmnc("vm2", "52:54:00:00:00:02", "10.80.0.20"),
            "ipAddress",
            "already reserved",
        ),
        (
            vmnc("vm2", "52:54:00:00:00:01", "10.80.0.21"),
            "macAddress",
            "vm1",
        ),
        (
            vmnc("vm2", "52:54:00:00:00:02", "10.81.0.5"),
            "ipAddress",
            "outside",
        ),
        (
            vmnc("vm2", "52:54:00:00:00:02", "10.80.0.2"),
            "ipAddress",
            "server",
        ),
        (
            vmnc("vm2", "52:54:00:00:00:02", "10.80.0.1"),
            "ipAddress",
            "router",
        ),
    ] {
        let err = node.apply(&doc).unwrap_err().to_string();
        assert!(
            err.contains(&format!("spec.networkConfigs[0].{field}")) && err.contains(what),
            "{doc}: {err}"
        );
    }
    let out = node
        .netd
        .netctl(&["get", "VirtualMachineNetworkConfig", "-o", "json"])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("vm2"),
        "a refused document was stored: {text}"
    );
    // A free address on another VM is fine.
    node.apply(&vmnc("vm2", "52:54:00:00:00:02", "10.80.0.21"))
        .unwrap();
}
