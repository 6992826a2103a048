//! `netctl doctor`: the kernel probe without netd, and a two-node VLAN lab
//! where it must find nothing wrong, then a deliberately lowered MTU and a
//! duplicate MAC, each with advice.

use std::process::Output;

use furrow_api::wire::PortInfo;
use furrow_tests::lab::vlan_nad;
use furrow_tests::{bins, Lab, Netns};
use serde_json::Value;

const CN: &str = "data";
const NIC: &str = "data0";

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor printed no JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn feature<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["kernel"]["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no kernel feature {name} in {r:#}"))
}

fn backend<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == name)
        .unwrap_or_else(|| panic!("no backend {name} in {r:#}"))
}

fn findings<'a>(r: &'a Value, check: &str, severity: &str) -> Vec<&'a Value> {
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == check && f["severity"] == severity)
        .collect()
}

fn errors(r: &Value) -> Vec<&Value> {
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "error")
        .collect()
}

/// Runs doctor in the node's namespace (where its links are).
fn doctor(ns: &Netns, socket: &std::path::Path, args: &[&str]) -> Output {
    ns.cmd(bins::netctl())
        .arg("--socket")
        .arg(socket)
        .arg("doctor")
        .args(args)
        .output()
        .expect("run netctl")
}

#[test]
fn without_netd_doctor_probes_the_kernel_and_names_the_fallback() {
    let socket = std::env::temp_dir().join(format!("furrow-doctor-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&socket);
    let out = std::process::Command::new(bins::netctl())
        .arg("--socket")
        .arg(&socket)
        .args(["doctor", "-o", "json"])
        .output()
        .unwrap();
    let r = json_of(&out);
    // This machine's kernel: no bridge VLAN filtering, no 802.1Q, BPF works.
    assert_eq!(r["netdReachable"], false, "{r:#}");
    for missing in ["bridgeVlanFiltering", "vlan8021q"] {
        let f = feature(&r, missing);
        assert_eq!(f["probed"], true, "{f:#}");
        assert_eq!(f["available"], false, "{f:#}");
        let w = findings(&r, &format!("kernel.{missing}"), "warn");
        assert_eq!(w.len(), 1, "{r:#}");
        assert!(w[0]["advice"].as_str().unwrap().contains("eBPF"), "{w:#?}");
    }
    for present in ["bpf", "bpfDatapath", "bpffs", "nftablesNat"] {
        assert_eq!(feature(&r, present)["available"], true, "{r:#}");
    }
    let ebpf = backend(&r, "ebpf");
    assert_eq!(ebpf["usable"], true, "{ebpf:#}");
    let bridge = backend(&r, "bridge");
    assert_eq!(bridge["usable"], false, "{bridge:#}");
    assert!(
        bridge["detail"].as_str().unwrap().contains("eBPF"),
        "{bridge:#}"
    );
    // netd missing is a warning, and nothing here is an error.
    assert_eq!(findings(&r, "netd", "warn").len(), 1, "{r:#}");
    assert!(errors(&r).is_empty(), "{r:#}");
    assert!(out.status.success(), "{out:?}");
    // The table says the same.
    let out = std::process::Command::new(bins::netctl())
        .arg("--socket")
        .arg(&socket)
        .arg("doctor")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("not reachable"), "{text}");
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} line in\n{text}"))
            .to_string()
    };
    assert!(line("bridgeVlanFiltering ").contains(" no "), "{text}");
    assert!(line("vlan8021q ").contains(" no "), "{text}");
    assert!(line("ebpf ").contains(" yes "), "{text}");
    // YAML carries the same fields.
    let out = std::process::Command::new(bins::netctl())
        .arg("--socket")
        .arg(&socket)
        .args(["doctor", "-o", "yaml"])
        .output()
        .unwrap();
    let y = String::from_utf8_lossy(&out.stdout);
    assert!(y.contains("netdReachable: false"), "{y}");
    assert!(y.contains("name: bridgeVlanFiltering"), "{y}");
}

#[test]
fn doctor_finds_an_mtu_mismatch_and_a_duplicate_mac_in_a_vlan_lab() {
    let mut lab = Lab::new().unwrap();
    let mut trunk_ports = Vec::new();
    for (i, n) in ["node1", "node2"].iter().enumerate() {
        lab.add_node(n).unwrap();
        trunk_ports.push(lab.add_data_nic(i, NIC).unwrap());
        lab.node(i)
            .cluster_network(CN, "ebpf", &[NIC], 1500)
            .unwrap();
        // The node's own address on VLAN 100: where the DF probe starts.
        lab.node(i)
            .apply(&format!(
                "apiVersion: network.furrow.io/v1alpha1\nkind: VlanInterface\nmetadata:\n  name: diag{i}\nspec:\n  clusterNetwork: {CN}\n  vlan: 100\n  address: 10.77.0.{}/24\n",
                251 + i
            ))
            .unwrap();
    }
    let n1 = lab.node(0);
    let n2 = lab.node(1);
    let a = n1
        .vm("a", &vlan_nad("vlan100", CN, 100, &n1.netd.socket))
        .unwrap();
    let b = n1
        .vm("b", &vlan_nad("vlan200", CN, 200, &n1.netd.socket))
        .unwrap();
    // One address on two VLANs is no conflict.
    for vm in [&a, &b] {
        vm.ns
            .ip(&["addr", "add", "10.77.0.1/24", "dev", "eth0"])
            .unwrap();
    }
    let _c = n2
        .vm("c", &vlan_nad("vlan100", CN, 100, &n2.netd.socket))
        .unwrap();

    // A clean lab: netd found, eBPF in use, no errors, exit 0, on both
    // nodes; full-size DF pings between the nodes' VLAN 100 addresses pass.
    for (n, peer) in [(n1, "10.77.0.252"), (n2, "10.77.0.251")] {
        let out = doctor(&n.ns, &n.netd.socket, &["-o", "json", "--peer", peer]);
        let r = json_of(&out);
        assert_eq!(r["netdReachable"], true, "{r:#}");
        assert_eq!(r["node"], n.name.as_str(), "{r:#}");
        assert!(errors(&r).is_empty(), "{}: {:#?}", n.name, errors(&r));
        assert!(out.status.success(), "{}: {r:#}", n.name);
        assert_eq!(backend(&r, "ebpf")["inUse"], true, "{r:#}");
        assert_eq!(backend(&r, "bridge")["inUse"], false, "{r:#}");
        assert_eq!(findings(&r, "store", "ok").len(), 1, "{r:#}");
        assert!(!findings(&r, "uplink", "ok").is_empty(), "{r:#}");
        assert!(!findings(&r, "mtu", "ok").is_empty(), "{r:#}");
        assert_eq!(findings(&r, "duplicateMac", "ok").len(), 1, "{r:#}");
        let probe = findings(&r, "mtuProbe", "ok");
        assert!(
            probe.iter().any(|f| f["message"]
                .as_str()
                .unwrap()
                .contains(&format!("1500-byte packets with DF set reach {peer}"))),
            "{r:#}"
        );
    }

    // A duplicate MAC: a second VM on VLAN 100 given a's MAC.
    let ports: Vec<PortInfo> = n1.netd.client().get("/v1/ports").unwrap();
    let pa = ports
        .iter()
        .find(|p| p.container_id == a.container_id)
        .unwrap()
        .clone();
    let mut cfg = vlan_nad("vlan100", CN, 100, &n1.netd.socket);
    cfg["runtimeConfig"] = serde_json::json!({"mac": pa.mac.to_string()});
    let _dup = n1.vm("dup", &cfg).unwrap();
    // A duplicate IP: another VM on VLAN 100 configured with a's address.
    let twin = n1
        .vm("twin", &vlan_nad("vlan100", CN, 100, &n1.netd.socket))
        .unwrap();
    twin.ns
        .ip(&["addr", "add", "10.77.0.1/24", "dev", "eth0"])
        .unwrap();
    // An MTU mismatch: a's host side lowered below the network's 1500.
    n1.ns
        .ip(&["link", "set", "dev", &pa.host_ifname, "mtu", "1400"])
        .unwrap();

    let out = doctor(&n1.ns, &n1.netd.socket, &["-o", "json"]);
    let r = json_of(&out);
    assert!(!out.status.success(), "errors must fail doctor: {r:#}");
    let dup = findings(&r, "duplicateMac", "error");
    assert_eq!(dup.len(), 1, "{r:#}");
    let msg = dup[0]["message"].as_str().unwrap();
    assert!(msg.contains(&pa.mac.to_string()), "{msg}");
    assert!(
        dup[0]["subject"].as_str().unwrap().contains("100"),
        "{dup:#?}"
    );
    assert!(
        dup[0]["advice"].as_str().unwrap().contains("MAC"),
        "{dup:#?}"
    );
    let dip = findings(&r, "duplicateIp", "error");
    assert_eq!(dip.len(), 1, "{r:#}");
    let msg = dip[0]["message"].as_str().unwrap();
    assert!(
        msg.contains("10.77.0.1 ") && msg.contains("lab/twin") && msg.contains("lab/a"),
        "{msg}"
    );
    let mtu = findings(&r, "mtu", "error");
    assert_eq!(mtu.len(), 1, "{r:#}");
    let msg = mtu[0]["message"].as_str().unwrap();
    assert!(
        msg.contains(&pa.host_ifname) && msg.contains("1400") && msg.contains("1500"),
        "{msg}"
    );
    assert!(
        mtu[0]["advice"].as_str().unwrap().contains("1500"),
        "{mtu:#?}"
    );
    // node2 is still clean: its ports differ.
    let out = doctor(&n2.ns, &n2.netd.socket, &["-o", "json"]);
    assert!(out.status.success(), "{:#}", json_of(&out));

    // The table shows both errors with what to do.
    let out = doctor(&n1.ns, &n1.netd.socket, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("[error] duplicateMac"), "{text}");
    assert!(text.contains("[error] mtu"), "{text}");
    assert!(text.contains("-> "), "{text}");

    // A fabric port with a smaller MTU (node2's switch port): only the DF
    // probe can see it, and it does.
    lab.trunk
        .as_ref()
        .unwrap()
        .ip(&["link", "set", "dev", &trunk_ports[1], "mtu", "1400"])
        .unwrap();
    let r = json_of(&doctor(
        &n1.ns,
        &n1.netd.socket,
        &["-o", "json", "--peer", "10.77.0.252"],
    ));
    let probe = findings(&r, "mtuProbe", "error");
    assert_eq!(probe.len(), 1, "{r:#}");
    assert!(
        probe[0]["message"]
            .as_str()
            .unwrap()
            .contains("10.77.0.252"),
        "{probe:#?}"
    );
    assert!(!probe[0]["advice"].as_str().unwrap().is_empty());

    // The uplink's MTU lowered below the network's is found too.
    n1.ns
        .ip(&["link", "set", "dev", NIC, "mtu", "1280"])
        .unwrap();
    let r = json_of(&doctor(&n1.ns, &n1.netd.socket, &["-o", "json"]));
    assert!(
        findings(&r, "mtu", "error")
            .iter()
            .any(|f| f["subject"] == format!("{CN}/{NIC}")
                && f["message"].as_str().unwrap().contains("1280")),
        "{r:#}"
    );
    // A VM whose namespace vanished without a CNI DEL: a stale port.
    let gone = n2
        .vm("gone", &vlan_nad("vlan100", CN, 100, &n2.netd.socket))
        .unwrap();
    Netns::delete(&gone.ns.name);
    let r = json_of(&doctor(&n2.ns, &n2.netd.socket, &["-o", "json"]));
    let stale = findings(&r, "stalePort", "warn");
    assert_eq!(stale.len(), 1, "{r:#}");
    assert!(
        stale[0]["subject"].as_str().unwrap().contains("lab/gone"),
        "{stale:#?}"
    );
    assert!(
        stale[0]["advice"].as_str().unwrap().contains("DEL"),
        "{stale:#?}"
    );
}

/// Inside the full-kernel QEMU guest (Debian's cloud kernel), what this
/// machine lacks is there: doctor reports bridge VLAN filtering and 802.1Q
/// present, and both backends usable.
#[test]
fn inside_the_full_kernel_guest_doctor_finds_vlan_filtering_and_8021q() {
    use furrow_tests::guest::{Guest, GuestConfig};
    let mut cfg = GuestConfig::new("").tag("doctor");
    let netctl = cfg.files.add_binary(&bins::netctl()).unwrap();
    cfg.payload = format!(
        r#"modprobe -a 8021q bridge bonding 2>&1 || true
echo DOCTOR-JSON-BEGIN
{netctl} --socket /run/no-netd.sock doctor -o json
echo DOCTOR-JSON-END $?
"#
    );
    let run = Guest::boot(cfg).unwrap();
    assert_eq!(run.exit_code, 0, "payload failed:\n{}", run.console);
    let out = &run.output;
    let begin = out
        .find("DOCTOR-JSON-BEGIN\n")
        .unwrap_or_else(|| panic!("{out}"));
    let body = &out[begin + "DOCTOR-JSON-BEGIN\n".len()..];
    let end = body
        .find("DOCTOR-JSON-END")
        .unwrap_or_else(|| panic!("{out}"));
    let r: Value = serde_json::from_str(&body[..end])
        .unwrap_or_else(|e| panic!("no JSON from doctor in the guest ({e}):\n{out}"));
    for present in ["bridgeVlanFiltering", "vlan8021q", "bonding", "bpf"] {
        let f = feature(&r, present);
        assert_eq!(f["available"], true, "{present}: {r:#}");
    }
    assert_eq!(backend(&r, "bridge")["usable"], true, "{r:#}");
    assert_eq!(backend(&r, "ebpf")["usable"], true, "{r:#}");
    assert!(
        findings(&r, "kernel.bridgeVlanFiltering", "ok").len() == 1
            && findings(&r, "kernel.vlan8021q", "ok").len() == 1,
        "{r:#}"
    );
}
