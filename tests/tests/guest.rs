//! Real VMs under QEMU/TCG with Debian's cloud kernel: a KubeVirt-style
//! VM bridged to a pod's CNI interface, a full-kernel guest with what the
//! host kernel lacks (802.1Q, bridge VLAN filtering, bonding), and host
//! binaries running in the guest. One boot per test (5-10 s each).

use std::time::Instant;

use furrow_tests::guest::{self, Guest, GuestConfig, Nic};
use furrow_tests::{bins, names, Netns};
use serde_json::Value;

fn json(ns: &Netns, args: &[&str]) -> Value {
    let out = ns.ip(&[&["-j"][..], args].concat()).expect("ip");
    serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out }).expect("ip -j output")
}

fn link_names(ns: &Netns) -> Vec<String> {
    json(ns, &["link", "show"])
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_string())
        .collect()
}

/// The peer's neighbour entry for `ip` on `dev`, if any: its lladdr.
fn neigh_mac(ns: &Netns, ip: &str, dev: &str) -> Option<String> {
    json(ns, &["neigh", "show", ip, "dev", dev])
        .as_array()
        .unwrap()
        .iter()
        .find_map(|n| n["lladdr"].as_str().map(str::to_string))
}

#[test]
fn kubevirt_style_vm_reaches_a_namespace_peer() {
    let t = Instant::now();
    // The pod: its CNI interface eth1 is a veth whose other end is the
    // peer's eth0 (standing in for whatever the CNI plugin built).
    let pod = Netns::new(&names::unique("pod")).unwrap();
    let peer = Netns::new(&names::unique("peer")).unwrap();
    pod.ip(&[
        "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", &peer.name,
    ])
    .unwrap();
    pod.ip(&["addr", "add", "10.99.0.200/24", "dev", "eth1"])
        .unwrap();
    pod.ip(&["link", "set", "eth1", "up"]).unwrap();
    peer.ip(&["addr", "add", "10.99.0.1/24", "dev", "eth0"])
        .unwrap();
    peer.ip(&["link", "set", "eth0", "up"]).unwrap();
    let mac = "52:54:00:99:00:02";

    let payload = format!(
        r#"set -x
ip -o link
ls /sys/class/net
test "$(ls /sys/class/net | grep -v '^lo$')" = eth0 || exit 10
test "$(cat /sys/class/net/eth0/address)" = "{mac}" || exit 11
ip addr add 10.99.0.2/24 dev eth0
ip link set eth0 up
ping -c 3 -W 2 -w 30 10.99.0.1 || exit 12
"#
    );
    let cfg = GuestConfig::new(&payload)
        .tag("kv")
        .nic(Nic::kubevirt_bridge(pod.path(), "eth1").mac(mac));
    let vm = Guest::start(cfg).unwrap();

    // KubeVirt's plumbing in the pod: eth1 and tap0 on k6t-eth1, eth1
    // without addresses.
    let links = json(&pod, &["link", "show"]);
    let master = |n: &str| {
        links
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["ifname"] == n)
            .and_then(|l| l["master"].as_str().map(str::to_string))
    };
    assert_eq!(master("eth1").as_deref(), Some("k6t-eth1"), "{links}");
    assert_eq!(master("tap0").as_deref(), Some("k6t-eth1"), "{links}");
    let addrs = json(&pod, &["addr", "show", "dev", "eth1"]);
    let inet = addrs[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["family"] == "inet");
    assert!(!inet, "the CNI interface must keep no IP: {addrs}");

    let run = vm.wait().unwrap();
    assert_eq!(run.exit_code, 0, "payload failed:\n{}", run.console);
    assert!(
        run.output.contains("bytes from 10.99.0.1"),
        "{}",
        run.output
    );
    assert_eq!(run.macs, vec![mac.to_string()]);
    // The peer learnt the VM's address with the VM's MAC.
    assert_eq!(
        neigh_mac(&peer, "10.99.0.2", "eth0").as_deref(),
        Some(mac),
        "{}",
        peer.ip(&["neigh", "show"]).unwrap()
    );
    // Dropped: the bridge and tap are gone, eth1 is free again.
    let left = link_names(&pod);
    assert!(
        !left.iter().any(|l| l == "k6t-eth1" || l == "tap0"),
        "{left:?}"
    );
    eprintln!(
        "boot {:?}, payload {:?}, qemu {:?}, test {:?}",
        run.boot_time,
        run.payload_time,
        run.total_time,
        t.elapsed()
    );
}

#[test]
fn full_kernel_guest_has_8021q_bridge_vlan_filtering_and_bonding() {
    let t = Instant::now();
    // Like the lab: a fabric switch (a plain bridge in a namespace) with
    // a host on it; the guest's NIC is a tap enslaved to the switch.
    let fabric = Netns::new(&names::unique("fab")).unwrap();
    let host = Netns::new(&names::unique("host")).unwrap();
    fabric
        .ip(&["link", "add", "fab0", "type", "bridge"])
        .unwrap();
    fabric.ip(&["link", "set", "fab0", "up"]).unwrap();
    fabric
        .ip(&[
            "link", "add", "p1", "type", "veth", "peer", "name", "eth0", "netns", &host.name,
        ])
        .unwrap();
    fabric.ip(&["link", "set", "p1", "master", "fab0"]).unwrap();
    fabric.ip(&["link", "set", "p1", "up"]).unwrap();
    host.ip(&["addr", "add", "10.98.0.1/24", "dev", "eth0"])
        .unwrap();
    host.ip(&["link", "set", "eth0", "up"]).unwrap();
    let mac = "52:54:00:98:00:02";

    // The host kernel cannot do any of this (EOPNOTSUPP); the guest can.
    let payload = r#"set -ex
modprobe -a 8021q bridge bonding
ip link add bond0 type bond mode active-backup miimon 100
ip link set eth0 down
ip link set eth0 master bond0
ip link add br0 type bridge vlan_filtering 1
test "$(cat /sys/class/net/br0/bridge/vlan_filtering)" = 1
ip -d link show br0 | grep -q "vlan_filtering 1"
ip link set bond0 master br0
ip link set bond0 up
ip link set br0 up
bridge vlan add dev bond0 vid 100
bridge vlan show dev bond0 | grep -qw 100
ip link add link br0 name br0.100 type vlan id 100
ip -d link show br0.100 | grep -q "vlan protocol 802.1Q id 100"
grep -q "Bonding Mode: fault-tolerance (active-backup)" /proc/net/bonding/bond0
grep -q "Slave Interface: eth0" /proc/net/bonding/bond0
grep -q "Currently Active Slave: eth0" /proc/net/bonding/bond0
# Untagged traffic through bond0 and the VLAN-filtering bridge (PVID 1).
ip addr add 10.98.0.2/24 dev br0
ping -c 2 -W 2 -w 30 10.98.0.1
echo ALL-WORKED
"#;
    let mut cfg = GuestConfig::new(payload)
        .tag("node")
        .nic(Nic::tap(fabric.path(), "vmtap0").master("fab0").mac(mac));
    cfg.files.add_host_tools(&["ip", "bridge"]).unwrap();
    let run = Guest::boot(cfg).unwrap();
    assert_eq!(run.exit_code, 0, "payload failed:\n{}", run.console);
    assert!(run.output.contains("ALL-WORKED"), "{}", run.output);
    // The bridge took the bond's MAC, the bond eth0's.
    assert_eq!(
        neigh_mac(&host, "10.98.0.2", "eth0").as_deref(),
        Some(mac),
        "{}",
        host.ip(&["neigh", "show"]).unwrap()
    );
    assert!(!link_names(&fabric).iter().any(|l| l == "vmtap0"));
    eprintln!(
        "boot {:?}, payload {:?}, qemu {:?}, test {:?}",
        run.boot_time,
        run.payload_time,
        run.total_time,
        t.elapsed()
    );
}

#[test]
fn host_binaries_run_in_the_guest() {
    let t = Instant::now();
    let mut cfg = GuestConfig::new("");
    let tools = cfg.files.add_host_tools(&["ip", "nsenter"]).unwrap();
    assert_eq!(tools, ["/usr/local/bin/ip", "/usr/local/bin/nsenter"]);
    let netctl = cfg.files.add_binary(&bins::netctl()).unwrap();
    let me = cfg
        .files
        .add_binary(&std::env::current_exe().unwrap())
        .unwrap();
    cfg.payload = format!(
        r#"set -ex
# iproute2's ip, not busybox's (which has no -V)
ip -V
ip netns add inner
ls /run/netns
nsenter --net=/run/netns/inner ip -o link show
{netctl} --help | head -n 3
# This very test binary, running a test that only does something in a guest.
{me} --exact guest_side_probe --ignored --nocapture --test-threads=1
echo ALL-RAN
"#
    );
    let run = Guest::boot(cfg).unwrap();
    assert_eq!(run.exit_code, 0, "payload failed:\n{}", run.console);
    let out = &run.output;
    assert!(out.contains("iproute2"), "{out}");
    assert!(out.contains("1: lo:"), "{out}");
    assert!(
        !out.contains("2: "),
        "the new namespace holds only lo: {out}"
    );
    assert!(out.contains("netctl"), "{out}");
    assert!(out.contains("PROBE-OK"), "{out}");
    assert!(out.contains("ALL-RAN"), "{out}");
    eprintln!(
        "boot {:?}, payload {:?}, qemu {:?}, test {:?}",
        run.boot_time,
        run.payload_time,
        run.total_time,
        t.elapsed()
    );
}

/// Run inside the guest by `host_binaries_run_in_the_guest`; does nothing
/// on the host (and is ignored there).
#[test]
#[ignore = "runs inside a guest, started by host_binaries_run_in_the_guest"]
fn guest_side_probe() {
    if !guest::in_guest() {
        return;
    }
    let version = std::fs::read_to_string("/proc/version").unwrap();
    assert!(version.contains("cloud-amd64"), "{version}");
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(mounts.contains("/sys/fs/bpf bpf"), "{mounts}");
    assert!(std::path::Path::new("/run/netns").is_dir());
    println!("PROBE-OK {}", version.trim());
}

#[test]
fn a_hanging_guest_is_killed_at_the_timeout_with_its_console_in_the_error() {
    let ns = Netns::new(&names::unique("hang")).unwrap();
    let cfg = GuestConfig::new("echo about-to-hang; sleep 600")
        .tag("hang")
        .nic(Nic::tap(ns.path(), "tap0"));
    let mut vm = Guest::start(cfg).unwrap();
    vm.wait_for_output("about-to-hang", std::time::Duration::from_secs(120))
        .unwrap();
    vm.set_deadline(std::time::Duration::from_secs(1));
    let pid = vm.pid().unwrap();
    let err = vm.wait().unwrap_err().to_string();
    assert!(err.contains("timed out"), "{err}");
    assert!(err.contains("about-to-hang"), "{err}");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "qemu {pid} still runs"
    );
    assert!(!link_names(&ns).iter().any(|l| l == "tap0"));
}
