//! netctl's views of the eBPF switch (`fdb`, `vlans`, `counters`) tell
//! the truth about a lab of two nodes with VLAN networks and VMs, in table
//! and JSON form; completions name the subcommands; a netd that is gone
//! or speaks another API version gets one clear line and a failure.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::process::Output;

use furrow_api::wire::PortInfo;
use furrow_api::wire_diag::{CountersView, FdbView, VlansView};
use furrow_api::MacAddr;
use furrow_tests::lab::Node;
use furrow_tests::scenario::vlan::{VlanLab, CN, NIC};
use furrow_tests::Netns;

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "netctl {what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn netctl(node: &Node, args: &[&str]) -> String {
    ok(node.netd.netctl(args).unwrap(), &args.join(" "))
}

fn json<T: serde::de::DeserializeOwned>(node: &Node, view: &str) -> T {
    let s = netctl(node, &[view, "-o", "json"]);
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("netctl {view} -o json: {e}\n{s}"))
}

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

/// The host-side interface of a VM's port on its node.
fn host_if(node: &Node, container_id: &str) -> String {
    let ports: Vec<PortInfo> = node.netd.client().get("/v1/ports").unwrap();
    ports
        .into_iter()
        .find(|p| p.container_id == container_id)
        .unwrap_or_else(|| panic!("no port for {container_id}"))
        .host_ifname
}

/// Sends one raw Ethernet frame out of `ifname` in `ns`.
fn send_frame(ns: &Netns, ifname: &str, frame: Vec<u8>) {
    let ifname = ifname.to_string();
    ns.enter(move || {
        let name = std::ffi::CString::new(ifname.clone()).unwrap();
        // SAFETY: plain libc calls on values owned here; the fd is closed below.
        unsafe {
            let index = libc::if_nametoindex(name.as_ptr());
            assert!(index != 0, "no interface {ifname}");
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = index as i32;
            sll.sll_halen = 6;
            sll.sll_addr[..6].copy_from_slice(&frame[..6]);
            let n = libc::sendto(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            );
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            assert!(n == frame.len() as isize, "sendto: {err}");
        }
    })
    .unwrap();
}

/// A broadcast frame tagged with `vid` from `src`.
fn tagged_frame(src: MacAddr, vid: u16) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x81, 0x00]);
    f.extend_from_slice(&vid.to_be_bytes());
    f.extend_from_slice(&[0x88, 0xb5]); // local experimental ethertype
    f.resize(64, 0x5a);
    f
}

/// A DHCP server reply (IPv4 UDP 67 -> 68, broadcast) from `src`.
fn dhcp_reply_frame(src: MacAddr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x08, 0x00]);
    let udp_len: u16 = 8 + 240;
    let ip_len = 20 + udp_len;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&ip_len.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0, 10, 77, 0, 11, 255, 255, 255, 255]);
    f.extend_from_slice(&67u16.to_be_bytes());
    f.extend_from_slice(&68u16.to_be_bytes());
    f.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.resize(14 + usize::from(ip_len), 0);
    f
}

#[test]
fn fdb_vlans_and_counters_show_what_the_lab_built() {
    let v = VlanLab::build("ebpf").unwrap();
    // Traffic: same VLAN on one node, across nodes, the untagged network.
    v.check_same_vlan().unwrap();
    let (n1, n2) = (v.lab.node(0), v.lab.node(1));
    let a100 = v.vm("a100");
    let d100 = v.vm("d100");
    let t = v.vm("t");
    let a_if = host_if(n1, &a100.pod.container_id);
    let t_if = host_if(n1, &t.pod.container_id);
    let d_if = host_if(n2, &d100.pod.container_id);

    // ---- fdb, JSON ----
    let fdb: FdbView = json(n1, "fdb");
    let find = |fdb: &FdbView, vm: &str| {
        let m = mac(&v.vm(vm).mac);
        fdb.entries
            .iter()
            .filter(|e| e.mac == m)
            .cloned()
            .collect::<Vec<_>>()
    };
    // A local VM: its MAC on its VLAN, static, on its own port.
    let e = find(&fdb, "a100");
    assert_eq!(e.len(), 1, "a100 in node1's FDB: {e:?}");
    let e = &e[0];
    assert_eq!((e.cluster_network.as_str(), e.vlan), (CN, 100), "{e:?}");
    assert_eq!(e.entry_type, "static");
    assert_eq!(e.port.kind, "vm");
    assert_eq!(e.port.ifname, a_if);
    assert_eq!(e.port.owner.as_deref(), Some("lab/a100"));
    assert!(e.age_ms.is_none());
    // A VM on the other node: learned behind the uplink, on its VLAN, recent.
    let e = find(&fdb, "d100");
    assert_eq!(e.len(), 1, "d100 in node1's FDB: {e:?}");
    let e = &e[0];
    assert_eq!((e.cluster_network.as_str(), e.vlan), (CN, 100), "{e:?}");
    assert_eq!(e.entry_type, "learned");
    assert_eq!(
        (e.port.kind.as_str(), e.port.ifname.as_str()),
        ("uplink", NIC)
    );
    assert!(e.age_ms.is_some_and(|a| a < 60_000), "{e:?}");
    assert!(!e.expired);
    // VLAN 200 and the untagged network too.
    for (vm, vid) in [("c200", 200), ("u1", 0), ("e200", 200), ("u2", 0)] {
        let e = find(&fdb, vm);
        assert!(
            e.iter().any(|e| e.vlan == vid),
            "{vm} not on VLAN {vid} in node1's FDB: {e:?}"
        );
        assert!(e.iter().all(|e| e.vlan == vid), "{vm} elsewhere: {e:?}");
    }
    // node2 sees it the other way round.
    let fdb2: FdbView = json(n2, "fdb");
    let e = find(&fdb2, "d100");
    assert!(
        e.len() == 1 && e[0].entry_type == "static" && e[0].port.ifname == d_if,
        "{e:?}"
    );
    let e = find(&fdb2, "a100");
    assert!(
        e.len() == 1
            && e[0].entry_type == "learned"
            && e[0].port.kind == "uplink"
            && e[0].vlan == 100,
        "{e:?}"
    );

    // ---- fdb, table ----
    let table = netctl(n1, &["fdb"]);
    eprintln!("{table}");
    let line = |table: &str, m: &str| {
        table
            .lines()
            .find(|l| l.contains(m))
            .unwrap_or_else(|| panic!("no line with {m} in\n{table}"))
            .split_whitespace()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert!(table.starts_with("CLUSTER-NETWORK"), "{table}");
    let l = line(&table, &a100.mac);
    assert_eq!(
        &l[..7],
        [CN, "100", &a100.mac, "static", &a_if, "vm", "lab/a100"],
        "{table}"
    );
    let l = line(&table, &d100.mac);
    assert_eq!(
        &l[..7],
        [CN, "100", &d100.mac, "learned", NIC, "uplink", CN],
        "{table}"
    );
    // Filters.
    let only = netctl(n1, &["fdb", "--vlan", "200", "-o", "json"]);
    let only: FdbView = serde_json::from_str(&only).unwrap();
    assert!(!only.entries.is_empty() && only.entries.iter().all(|e| e.vlan == 200));

    // ---- vlans, JSON ----
    let vl: VlansView = json(n1, "vlans");
    let cn = vl
        .cluster_networks
        .iter()
        .find(|c| c.name == CN)
        .unwrap_or_else(|| panic!("{vl:?}"));
    assert_eq!(cn.backend, "ebpf");
    assert_eq!(cn.uplink.as_ref().map(|u| u.ifname.as_str()), Some(NIC));
    let vids: Vec<u16> = cn.vlans.iter().map(|v| v.vlan).collect();
    assert_eq!(vids, vec![0, 100, 200, 300]);
    let vlan = |vid: u16| cn.vlans.iter().find(|v| v.vlan == vid).unwrap();
    let members = |vid: u16| {
        let mut m: Vec<(String, String, bool)> = vlan(vid)
            .members
            .iter()
            .map(|m| {
                (
                    m.port.owner.clone().unwrap_or_default(),
                    m.mode.clone(),
                    m.tagged,
                )
            })
            .collect();
        m.sort();
        m
    };
    let s = |o: &str, m: &str, t: bool| (o.to_string(), m.to_string(), t);
    assert_eq!(
        members(100),
        vec![
            s(CN, "uplink", true),
            s("lab/a100", "access", false),
            s("lab/b100", "access", false),
            s("lab/t", "trunk", true),
        ]
    );
    assert_eq!(
        members(200),
        vec![
            s(CN, "uplink", true),
            s("lab/c200", "access", false),
            s("lab/t", "trunk", true),
        ]
    );
    assert_eq!(
        members(300),
        vec![s(CN, "uplink", true), s("lab/f300", "access", false)]
    );
    assert_eq!(
        members(0),
        vec![s(CN, "uplink", false), s("lab/u1", "untagged", false)]
    );
    let trunk = vlan(100)
        .members
        .iter()
        .find(|m| m.mode == "trunk")
        .unwrap();
    assert_eq!(trunk.allowed, vec!["100", "200"]);
    assert_eq!(trunk.port.ifname, t_if);
    let c100 = vlan(100).counters.clone().expect("VLAN 100 counters");
    assert!(c100.rx_packets > 0 && c100.unicast_packets > 0, "{c100:?}");
    assert!(vlan(100).fdb_entries >= 3, "{:?}", vlan(100));
    // node2: its own VMs, no trunk.
    let vl2: VlansView = json(n2, "vlans");
    let cn2 = &vl2.cluster_networks[0];
    let v100 = cn2.vlans.iter().find(|v| v.vlan == 100).unwrap();
    assert!(
        v100.members
            .iter()
            .any(|m| m.port.owner.as_deref() == Some("lab/d100") && m.mode == "access"),
        "{v100:?}"
    );
    assert!(!cn2.vlans.iter().any(|v| v.vlan == 300), "{cn2:?}");

    // ---- vlans, table ----
    let table = netctl(n1, &["vlans"]);
    eprintln!("{table}");
    assert!(
        table.contains(&format!("Cluster network {CN} (ebpf backend")),
        "{table}"
    );
    let l = line(&table, "lab/t ");
    assert!(
        l.contains(&"trunk".to_string()) && l.contains(&"tagged".to_string()),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("300 ") && l.contains("lab/f300") && l.contains("access")),
        "{table}"
    );

    // ---- counters: a frame on a VLAN the port is not in ----
    let before: CountersView = json(n1, "counters");
    let drops_of = |c: &CountersView, ifname: &str| {
        c.ports
            .iter()
            .find(|p| p.port.ifname == ifname)
            .unwrap_or_else(|| panic!("no counters of {ifname}: {c:?}"))
            .drops
    };
    let t_before = drops_of(&before, &t_if).vlan_filter;
    let a_before = drops_of(&before, &a_if).vlan_filter;
    let guard_before = drops_of(&before, &a_if).dhcp_guard;
    let vlan_guard = |c: &CountersView| {
        c.vlans
            .iter()
            .find(|v| v.cluster_network == CN && v.vlan == 100)
            .map(|v| v.counters.drops.dhcp_guard)
            .unwrap_or_else(|| panic!("no VLAN 100 counters: {c:?}"))
    };
    let vlan_guard_before = vlan_guard(&before);
    // The trunk carries 100 and 200: VLAN 300 is not its.
    let t_mac = mac(&t.mac);
    for _ in 0..3 {
        send_frame(&t.pod.ns, "eth0", tagged_frame(t_mac, 300));
    }
    // An access port takes no tags at all.
    send_frame(&a100.pod.ns, "eth0", tagged_frame(mac(&a100.mac), 100));
    // A VM not marked dhcpTrusted answering DHCP: the guard drops it.
    send_frame(&a100.pod.ns, "eth0", dhcp_reply_frame(mac(&a100.mac)));
    // The frames are counted as they enter the switch; allow for a busy
    // machine's softirq backlog.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let after = loop {
        let c: CountersView = json(n1, "counters");
        let done = drops_of(&c, &t_if).vlan_filter >= t_before + 3
            && drops_of(&c, &a_if).vlan_filter > a_before
            && drops_of(&c, &a_if).dhcp_guard > guard_before;
        if done || std::time::Instant::now() > deadline {
            break c;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let t_after = drops_of(&after, &t_if);
    // (>=: the trunk VM's own untagged frames, IPv6 router solicitations
    // say, are VLAN-filter drops too.)
    assert!(
        t_after.vlan_filter >= t_before + 3,
        "the trunk's VLAN-300 frames: {t_before} then {t_after:?}"
    );
    assert_eq!(drops_of(&after, &a_if).vlan_filter, a_before + 1);
    assert_eq!(drops_of(&after, &a_if).dhcp_guard, guard_before + 1);
    assert_eq!(vlan_guard(&after), vlan_guard_before + 1);
    assert!(after.totals.dhcp_guard > 0);
    assert!(after.totals.vlan_filter >= before.totals.vlan_filter + 4);
    let tp = after.ports.iter().find(|p| p.port.ifname == t_if).unwrap();
    assert_eq!(tp.port.kind, "vm");
    assert_eq!(tp.port.owner.as_deref(), Some("lab/t"));
    assert_eq!(tp.network.as_deref(), Some(CN));
    // Port security checks spoofing on the eBPF backend: nothing unchecked.
    assert!(after.not_checked.is_empty(), "{:?}", after.not_checked);
    let v100 = after
        .vlans
        .iter()
        .find(|v| v.cluster_network == CN && v.vlan == 100)
        .unwrap();
    assert!(v100.counters.rx_packets > 0);
    // JSON field names are the stable camelCase ones.
    let raw: serde_json::Value =
        serde_json::from_str(&netctl(n1, &["counters", "-o", "json"])).unwrap();
    assert!(raw["totals"]["vlanFilter"].as_u64().unwrap() >= 4, "{raw}");
    for k in [
        "dhcpGuard",
        "mtu",
        "hairpin",
        "localOnly",
        "policy",
        "malformed",
        "other",
        "spoofMac",
        "spoofIpv4",
        "spoofIpv6",
        "spoofArp",
        "spoofNd",
        "raGuard",
    ] {
        assert!(raw["totals"][k].is_u64(), "totals.{k} missing: {raw}");
    }
    let yaml = netctl(n1, &["counters", "-o", "yaml"]);
    assert!(yaml.contains("vlanFilter:"), "{yaml}");

    // ---- counters, table ----
    let table = netctl(n1, &["counters"]);
    eprintln!("{table}");
    let total = line(&table, "vlan-filter ");
    let n: u64 = total[1].parse().unwrap();
    assert!(n >= after.totals.vlan_filter, "{table}");
    assert!(table.contains("spoof-mac"), "{table}");
    let g: u64 = line(&table, "dhcp-guard ")[1].parse().unwrap();
    assert!(g >= 1, "{table}");
    let l = line(&table, &format!("{t_if} "));
    assert_eq!(l[1], "vm", "{table}");
    assert_eq!(l[2], "lab/t", "{table}");
    // PORT KIND OWNER NETWORK TX RX REDIRECTED VLAN-FILTER ...
    let n: u64 = l[7].parse().unwrap();
    assert!(n >= t_after.vlan_filter, "{table}");
}

#[test]
fn completions_mention_every_subcommand() {
    let netctl = furrow_tests::bins::netctl();
    for shell in ["bash", "zsh", "fish"] {
        let out = std::process::Command::new(&netctl)
            .args(["completions", shell])
            .output()
            .unwrap();
        let s = ok(out, &format!("completions {shell}"));
        for sub in [
            "status",
            "ports",
            "networks",
            "fdb",
            "vlans",
            "counters",
            "leases",
            "vip",
            "bgp",
            "completions",
        ] {
            assert!(s.contains(sub), "{shell} completions lack {sub}");
        }
    }
    let out = std::process::Command::new(&netctl)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// A fake netd answering every request with `header` (or none).
fn fake_netd(
    path: &std::path::Path,
    header: Option<String>,
    status: &'static str,
    body: &'static str,
) {
    let l = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let mut buf = Vec::new();
            let mut b = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&b[..n]),
                }
            }
            let h = header
                .as_ref()
                .map(|v| format!("x-furrow-api-version: {v}\r\n"))
                .unwrap_or_default();
            let _ = s.write_all(
                format!("HTTP/1.1 {status}\r\n{h}content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len())
                    .as_bytes(),
            );
        }
    });
}

fn one_line_failure(socket: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(furrow_tests::bins::netctl())
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(out.stdout.is_empty(), "{args:?} printed {:?}", out.stdout);
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("netctl: "), "{err}");
    err
}

#[test]
fn a_netd_that_is_gone_or_speaks_another_version_gets_one_clear_line() {
    let dir = std::env::temp_dir().join(furrow_tests::names::unique("netctl-ver"));
    std::fs::create_dir_all(&dir).unwrap();
    let gone = dir.join("gone.sock");
    for view in ["fdb", "vlans", "counters", "status"] {
        let e = one_line_failure(&gone, &[view]);
        assert!(
            e.contains("not reachable") && e.contains("gone.sock"),
            "{e}"
        );
    }
    let newer = dir.join("newer.sock");
    fake_netd(&newer, Some("99".into()), "200 OK", "{}");
    for view in ["fdb", "vlans", "counters", "status"] {
        let e = one_line_failure(&newer, &[view]);
        assert!(
            e.contains("API version 99")
                && e.contains(&format!("speaks {}", furrow_api::API_VERSION)),
            "{e}"
        );
    }
    let not_netd = dir.join("other.sock");
    fake_netd(&not_netd, None, "200 OK", "{}");
    let e = one_line_failure(&not_netd, &["fdb"]);
    assert!(e.contains("no version header"), "{e}");
    // Same API version, but from before these views existed.
    let older = dir.join("older.sock");
    fake_netd(
        &older,
        Some(furrow_api::API_VERSION.to_string()),
        "404 Not Found",
        r#"{"code":105,"msg":"no such API route"}"#,
    );
    for view in ["fdb", "vlans", "counters"] {
        let e = one_line_failure(&older, &[view]);
        assert!(e.contains("older than this netctl"), "{e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
