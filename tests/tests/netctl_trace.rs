//! `netctl trace` on a lab of two nodes with VLAN networks and VMs: the
//! verdicts the issue accepts (same VLAN local, same VLAN remote through
//! the uplink, another VLAN dropped, broadcast flooded to the listed
//! ports), in table and JSON form, computed by the loaded switch program
//! in trace mode.

use std::process::Output;

use furrow_api::wire::PortInfo;
use furrow_api::wire_trace::TraceResponse;
use furrow_tests::lab::Node;
use furrow_tests::scenario::vlan::{VlanLab, NIC, NIC2};

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "netctl {what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn trace(node: &Node, args: &[&str]) -> TraceResponse {
    let mut a = vec!["trace"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json"]);
    let s = ok(node.netd.netctl(&a).unwrap(), &a.join(" "));
    let r: TraceResponse =
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("netctl {a:?}: {e}\n{s}"));
    eprintln!("{a:?}: {} {:?}", r.verdict, r.steps);
    r
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

#[test]
fn trace_gives_the_datapaths_verdicts() {
    let v = VlanLab::build("ebpf").unwrap();
    // Traffic, so that node1 learned the remote VMs behind its uplink.
    v.check_same_vlan().unwrap();
    let n1 = v.lab.node(0);
    let out_ifs = |r: &TraceResponse| {
        r.out_ports
            .iter()
            .map(|p| p.ifname.clone())
            .collect::<Vec<_>>()
    };
    let vm_if = |vm: &str| host_if(n1, &v.vm(vm).pod.container_id);

    // Same VLAN, same node: redirected to b100's port.
    let r = trace(n1, &["a100", "--dst-mac", &v.vm("b100").mac]);
    assert_eq!(
        (r.verdict.as_str(), r.vlan),
        ("forward", Some(100)),
        "{r:?}"
    );
    assert_eq!(out_ifs(&r), [vm_if("b100")], "{r:?}");
    assert_eq!(r.port.ifname, vm_if("a100"));
    assert_eq!(r.port.owner.as_deref(), Some("lab/a100"));
    let stages: Vec<&str> = r.steps.iter().map(|s| s.stage.as_str()).collect();
    // (VM ports have port security: the step says what it checked.)
    assert_eq!(
        stages,
        ["port", "vlan", "security", "source", "fdb", "forward"],
        "{r:?}"
    );
    assert!(
        r.steps[2]
            .entries
            .iter()
            .any(|e| e.contains("furrow_l2_psec")),
        "{r:?}"
    );
    assert!(
        r.steps[4].entries.iter().any(|e| e.contains("static")),
        "{r:?}"
    );

    // Same VLAN, other node: to the uplink, tagged 100.
    let r = trace(
        n1,
        &[
            "lab/a100",
            "--dst-mac",
            &v.vm("d100").mac,
            "--dst-ip",
            "10.77.0.21",
        ],
    );
    assert_eq!(r.verdict, "forward", "{r:?}");
    assert_eq!(r.out_ports.len(), 1);
    assert_eq!(r.out_ports[0].kind, "uplink", "{r:?}");
    assert!([NIC, NIC2].contains(&r.out_ports[0].ifname.as_str()));
    assert!(
        r.steps.last().unwrap().decision.contains("tagged VLAN 100"),
        "{r:?}"
    );

    // Another VLAN: a frame tagged 200 from an access port of VLAN 100 is
    // dropped by the VLAN filter.
    let r = trace(
        n1,
        &["a100", "--dst-mac", &v.vm("c200").mac, "--vlan", "200"],
    );
    assert_eq!(r.verdict, "drop", "{r:?}");
    assert!(r.out_ports.is_empty());
    assert!(r.reason.contains("VLAN"), "{r:?}");
    // ...and untagged to a MAC of VLAN 200 it never reaches VLAN 200.
    let r = trace(n1, &["a100", "--dst-mac", &v.vm("c200").mac]);
    assert!(!out_ifs(&r).contains(&vm_if("c200")), "{r:?}");

    // Broadcast: flooded to VLAN 100's other ports on this node (b100,
    // the trunk) and the uplink, nothing else.
    let r = trace(
        n1,
        &[
            "a100",
            "--dst-mac",
            "ff:ff:ff:ff:ff:ff",
            "--dst-ip",
            "10.77.0.12",
        ],
    );
    assert_eq!(r.verdict, "flood", "{r:?}");
    let mut got = out_ifs(&r);
    got.sort();
    let uplink = r
        .out_ports
        .iter()
        .find(|p| p.kind == "uplink")
        .unwrap_or_else(|| panic!("no uplink in {r:?}"))
        .ifname
        .clone();
    let mut want = vec![vm_if("b100"), vm_if("t"), uplink];
    want.sort();
    assert_eq!(got, want, "{r:?}");

    // The table names the verdict and the ports.
    let table = ok(
        n1.netd
            .netctl(&["trace", "a100", "--dst-mac", "ff:ff:ff:ff:ff:ff"])
            .unwrap(),
        "trace (table)",
    );
    eprintln!("{table}");
    assert!(table.contains("Verdict: FLOOD"), "{table}");
    assert!(table.contains("lab/b100"), "{table}");

    // A VM that does not exist: one clear line, failure.
    let out = n1
        .netd
        .netctl(&["trace", "nope", "--dst-mac", "ff:ff:ff:ff:ff:ff"])
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no VLAN port of VM nope"));

    // Tracing learns nothing: a source MAC nobody has sent from stays
    // unknown. From a100's port it is a spoofed MAC: port security drops
    // it before learning, live or traced.
    let ghost = "02:de:ad:be:ef:01";
    let r = trace(
        n1,
        &["a100", "--dst-mac", &v.vm("b100").mac, "--src-mac", ghost],
    );
    assert_eq!(r.verdict, "drop", "{r:?}");
    assert!(r.reason.contains("source MAC"), "{r:?}");
    assert!(
        r.steps
            .iter()
            .any(|s| s.stage == "security" && s.decision.contains("dropped")),
        "{r:?}"
    );
    let fdb: serde_json::Value = n1.netd.client().get("/v1/fdb").unwrap();
    assert!(
        !fdb.to_string().contains(ghost),
        "a trace taught the FDB {ghost}: {fdb}"
    );
}
