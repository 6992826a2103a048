//! Every item of the CNI 1.1.0 checklist (shared/docs/cni-checklist.md),
//! run against the built `furrow` binary exactly as a runtime runs it,
//! with a live netd.

use std::net::IpAddr;

use furrow_tests::cni::{self, Attachment};
use furrow_tests::{inspect, names, probe, Lab, Netns};
use serde_json::{json, Value};

fn one_node() -> Lab {
    let mut lab = Lab::new().unwrap();
    lab.add_node("node1").unwrap();
    lab
}

fn env<'a>(cmd: &'a str, cid: &'a str, netns: &'a str, ifname: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", cid),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", ifname),
        ("CNI_PATH", "/opt/cni/bin"),
    ]
}

// 1. VERSION
#[test]
fn c01_version_lists_supported_versions() {
    for v in ["0.3.1", "1.1.0"] {
        let out = cni::run(
            &[("CNI_COMMAND", "VERSION")],
            json!({"cniVersion": v}).to_string().as_bytes(),
        );
        assert!(out.success(), "{out:?}");
        let j = out.json();
        assert!(j["cniVersion"].is_string());
        let sv: Vec<&str> = j["supportedVersions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect();
        for want in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
            assert!(sv.contains(&want), "{sv:?}");
        }
    }
}

// 2. Required variables per command; unknown command.
#[test]
fn c02_missing_variables_and_unknown_command_are_code_4() {
    let lab = one_node();
    let cfg = lab.node(0).mgmt_config("1.1.0").to_string();
    let full = env("ADD", "c1", "/run/netns/none", "eth0");
    for (cmd, var) in [
        ("ADD", "CNI_CONTAINERID"),
        ("ADD", "CNI_NETNS"),
        ("ADD", "CNI_IFNAME"),
        ("CHECK", "CNI_NETNS"),
        ("DEL", "CNI_CONTAINERID"),
        ("DEL", "CNI_IFNAME"),
    ] {
        let e: Vec<(&str, &str)> = full
            .iter()
            .map(|(k, v)| {
                if *k == "CNI_COMMAND" {
                    (*k, cmd)
                } else {
                    (*k, *v)
                }
            })
            .filter(|(k, _)| *k != var)
            .collect();
        let out = cni::run(&e, cfg.as_bytes());
        assert_eq!(out.error_code(), Some(4), "{cmd} without {var}: {out:?}");
        assert!(
            out.error_msg().contains(var),
            "{cmd} without {var}: {}",
            out.error_msg()
        );
    }
    let out = cni::run(&[], cfg.as_bytes());
    assert_eq!(out.error_code(), Some(4));
    assert!(out.error_msg().contains("CNI_COMMAND"));
    let out = cni::run(&[("CNI_COMMAND", "FROB")], cfg.as_bytes());
    assert_eq!(out.error_code(), Some(4));
    assert!(out.error_msg().contains("FROB"));
    // STATUS needs only CNI_COMMAND.
    let out = cni::run(&[("CNI_COMMAND", "STATUS")], cfg.as_bytes());
    assert!(out.success(), "{out:?}");
}

// 3. Container ID and interface name validation.
#[test]
fn c03_container_id_and_ifname_are_validated() {
    let lab = one_node();
    let cfg = lab.node(0).mgmt_config("1.1.0").to_string();
    let pod = Netns::new(&names::unique("pod")).unwrap();
    let p = pod.path_str();
    for cid in ["-bad", "has space", "a/b", "Ü"] {
        let out = cni::run(&env("ADD", cid, &p, "eth0"), cfg.as_bytes());
        assert_eq!(out.error_code(), Some(4), "container id {cid:?}: {out:?}");
    }
    for ifname in [".", "..", "a/b", "a:b", "a b", "abcdefghijklmnop", ""] {
        let out = cni::run(&env("ADD", "c1", &p, ifname), cfg.as_bytes());
        assert_eq!(out.error_code(), Some(4), "ifname {ifname:?}: {out:?}");
    }
    assert_eq!(
        inspect::leftovers(lab.node(0), "mgmt"),
        Vec::<String>::new()
    );
}

// 4 and 5. Error codes and the error document on stdout.
#[test]
fn c04_c05_error_codes_and_format() {
    let lab = one_node();
    let node = lab.node(0);
    let pod = Netns::new(&names::unique("pod")).unwrap();
    let p = pod.path_str();
    let e = env("ADD", "c1", &p, "eth0");
    // 1: incompatible version
    let mut cfg = node.mgmt_config("1.1.0");
    cfg["cniVersion"] = json!("9.9.9");
    let out = cni::run(&e, cfg.to_string().as_bytes());
    assert_eq!(out.error_code(), Some(1), "{out:?}");
    // 2: unsupported field, named with its value
    let mut cfg = node.mgmt_config("1.1.0");
    cfg["vLan"] = json!(100);
    let out = cni::run(&e, cfg.to_string().as_bytes());
    assert_eq!(out.error_code(), Some(2), "{out:?}");
    assert!(
        out.error_msg().contains("vLan") && out.error_msg().contains("100"),
        "{}",
        out.error_msg()
    );
    // 6: bad JSON
    let out = cni::run(&e, b"{\"cniVersion\": ");
    assert_eq!(out.error_code(), Some(6));
    // 7: invalid config value, field named
    let mut cfg = node.mgmt_config("1.1.0");
    cfg["mtu"] = json!(50);
    let out = cni::run(&e, cfg.to_string().as_bytes());
    assert_eq!(out.error_code(), Some(7));
    assert!(out.error_msg().contains("mtu"));
    // Format: cniVersion, code, msg (details may be empty); stderr quiet.
    let j = out.json();
    assert!(
        j["cniVersion"].is_string() && j["code"].is_u64() && j["msg"].is_string(),
        "{j}"
    );
    assert!(
        out.stderr.is_empty(),
        "stderr is for logs only: {}",
        out.stderr
    );
    assert_ne!(out.status, 0);
    assert_eq!(inspect::leftovers(node, "mgmt"), Vec::<String>::new());
}

// 6. ADD result shape, in the config's version.
#[test]
fn c06_add_result_in_every_version() {
    let lab = one_node();
    let node = lab.node(0);
    for v in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let pod = node.add_pod("pod", &node.mgmt_config(v)).unwrap();
        let r = &pod.result;
        assert_eq!(r["cniVersion"], v);
        let ifaces = r["interfaces"].as_array().unwrap();
        let ip = &r["ips"][0];
        let idx = ip["interface"].as_u64().unwrap() as usize;
        assert_eq!(ifaces[idx]["name"], "eth0");
        assert_eq!(ifaces[idx]["sandbox"], pod.ns.path_str());
        assert!(ifaces[idx]["mac"].is_string());
        assert!(
            ifaces.iter().any(|i| i.get("sandbox").is_none()),
            "host side listed too"
        );
        if v.starts_with("0.") {
            assert_eq!(ip["version"], "4", "{v}: {r}");
        } else {
            assert!(ip.get("version").is_none(), "{v}: {r}");
        }
        assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0");
        node.del_pod(&pod).expect_ok("DEL");
    }
    assert_eq!(inspect::leftovers(node, "mgmt"), Vec::<String>::new());
}

// 7 and 9. ADD fails if CNI_IFNAME exists; a failed ADD leaves nothing.
#[test]
fn c07_c09_existing_ifname_fails_and_leaves_nothing() {
    let lab = one_node();
    let node = lab.node(0);
    let pod = Netns::new(&names::unique("pod")).unwrap();
    pod.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "other",
    ])
    .unwrap();
    let a = Attachment::new("c-exists", &pod.path_str(), "eth0");
    let out = cni::add(&a, &node.mgmt_config("1.1.0"));
    assert!(!out.success());
    assert_eq!(out.error_code(), Some(102), "{out:?}");
    assert!(out.error_msg().contains("eth0"), "{}", out.error_msg());
    assert_eq!(inspect::leftovers(node, "mgmt"), Vec::<String>::new());
    // The pre-existing interface is untouched.
    assert!(pod.ip(&["link", "show", "dev", "eth0"]).is_ok());
}

// 8. Chaining: prevResult is carried into the output.
#[test]
fn c08_add_with_prev_result_keeps_it() {
    let lab = one_node();
    let node = lab.node(0);
    let mut cfg = node.mgmt_config("1.0.0");
    cfg["prevResult"] = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "net0", "mac": "02:00:00:00:00:01", "sandbox": "/var/run/netns/other"}],
        "ips": [{"address": "192.168.7.2/24", "interface": 0}],
        "dns": {"nameservers": ["192.168.7.1"]}
    });
    let pod = node.add_pod("pod", &cfg).unwrap();
    let r = &pod.result;
    assert_eq!(r["interfaces"][0]["name"], "net0");
    assert_eq!(r["ips"][0]["address"], "192.168.7.2/24");
    let ours = r["ips"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["address"].as_str().unwrap().starts_with("10.52."))
        .unwrap();
    let idx = ours["interface"].as_u64().unwrap() as usize;
    assert_eq!(r["interfaces"][idx]["name"], "eth0");
    assert_eq!(r["dns"]["nameservers"][0], "192.168.7.1");
    node.del_pod(&pod).expect_ok("DEL");
}

// 10 and 11. DEL is idempotent, and works without netns or prevResult.
#[test]
fn c10_c11_del_twice_and_without_netns() {
    let lab = one_node();
    let node = lab.node(0);
    let cfg = node.mgmt_config("1.1.0");
    let a = node.add_pod("pa", &cfg).unwrap();
    node.del_pod(&a).expect_ok("first DEL");
    node.del_pod(&a).expect_ok("second DEL");

    // No CNI_NETNS at all.
    let b = node.add_pod("pb", &cfg).unwrap();
    let att = Attachment::new(&b.container_id, "", "eth0");
    cni::del(&att, &cfg).expect_ok("DEL without CNI_NETNS");
    // A netns path that no longer exists.
    let c = node.add_pod("pc", &cfg).unwrap();
    let gone = c.ns.path_str();
    let cid = c.container_id.clone();
    drop(c);
    assert!(!std::path::Path::new(&gone).exists());
    cni::del(&Attachment::new(&cid, &gone, "eth0"), &cfg).expect_ok("DEL with a vanished netns");
    assert_eq!(inspect::leftovers(node, "mgmt"), Vec::<String>::new());
    // Never-added attachment.
    cni::del(&Attachment::new("never-added", "", "eth0"), &cfg).expect_ok("DEL of unknown");
}

// 12. CHECK after ADD, failing precisely when something is missing,
// tolerating routes added by others.
#[test]
fn c12_check_detects_missing_state_and_tolerates_extra_routes() {
    let lab = one_node();
    let node = lab.node(0);
    let cfg = node.mgmt_config("1.1.0");
    let pod = node.add_pod("pod", &cfg).unwrap();
    let att = pod.attachment();
    cni::check(&att, &cfg, &pod.result).expect_ok("CHECK right after ADD");

    // Another plugin adds a route: still fine.
    pod.ns
        .ip(&["route", "add", "192.0.2.0/24", "via", "10.52.0.1"])
        .unwrap();
    cni::check(&att, &cfg, &pod.result).expect_ok("CHECK with an extra route");

    // The default route disappears: CHECK says so.
    pod.ns.ip(&["route", "del", "default"]).unwrap();
    let out = cni::check(&att, &cfg, &pod.result);
    assert!(!out.success());
    assert!(
        out.error_msg().contains("route 0.0.0.0/0"),
        "{}",
        out.error_msg()
    );
    pod.ns
        .ip(&["route", "add", "default", "via", "10.52.0.1"])
        .unwrap();
    cni::check(&att, &cfg, &pod.result).expect_ok("CHECK after repair");

    // The NAT entry disappears: CHECK says so.
    let table = inspect::nft_table(node);
    node.ns
        .run(
            "nft",
            &[
                "delete",
                "element",
                "ip",
                &table,
                "masq_mgmt",
                &format!("{{ {} }}", pod.ip()),
            ],
        )
        .unwrap();
    let out = cni::check(&att, &cfg, &pod.result);
    assert!(
        out.error_msg().contains("masquerade"),
        "{}",
        out.error_msg()
    );

    // The host side disappears: CHECK says so.
    let host_if = pod.result["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i.get("sandbox").is_none())
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    node.ns.ip(&["link", "del", &host_if]).unwrap();
    let out = cni::check(&att, &cfg, &pod.result);
    assert!(out.error_msg().contains(&host_if), "{}", out.error_msg());
    // CHECK on an older version is refused, CHECK without prevResult too.
    let out = cni::run(
        &[
            ("CNI_COMMAND", "CHECK"),
            ("CNI_CONTAINERID", &pod.container_id),
            ("CNI_NETNS", &pod.ns.path_str()),
            ("CNI_IFNAME", "eth0"),
        ],
        cfg.to_string().as_bytes(),
    );
    assert_eq!(out.error_code(), Some(7), "{out:?}");
    node.del_pod(&pod).expect_ok("DEL");
    assert_eq!(inspect::leftovers(node, "mgmt"), Vec::<String>::new());
}

// 13. STATUS
#[test]
fn c13_status_reflects_netd() {
    let mut lab = one_node();
    let cfg = lab.node(0).mgmt_config("1.1.0").to_string();
    let out = cni::run(&[("CNI_COMMAND", "STATUS")], cfg.as_bytes());
    assert!(out.success(), "{out:?}");
    lab.node_mut(0).netd.kill();
    let out = cni::run(&[("CNI_COMMAND", "STATUS")], cfg.as_bytes());
    assert_eq!(out.error_code(), Some(50), "{out:?}");
    // And ADD says "try again later".
    let pod = Netns::new(&names::unique("pod")).unwrap();
    let out = cni::run(&env("ADD", "c1", &pod.path_str(), "eth0"), cfg.as_bytes());
    assert_eq!(out.error_code(), Some(11), "{out:?}");
    assert!(out.error_msg().contains("netd"), "{}", out.error_msg());
    assert!(
        pod.ip(&["link", "show", "eth0"]).is_err(),
        "nothing half-created"
    );
}

// 14. GC releases attachments not listed, keeps the listed ones.
#[test]
fn c14_gc_releases_only_unlisted_attachments() {
    let lab = one_node();
    let node = lab.node(0);
    let cfg = node.mgmt_config("1.1.0");
    let keep = node.add_pod("keep", &cfg).unwrap();
    let gone1 = node.add_pod("g1", &cfg).unwrap();
    let gone2 = node.add_pod("g2", &cfg).unwrap();
    let mut gc = cfg.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": keep.container_id, "ifname": "eth0"}]);
    let out = cni::run(
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")],
        gc.to_string().as_bytes(),
    );
    assert!(out.success(), "{out:?}");
    assert!(
        out.stdout.trim().is_empty(),
        "GC prints nothing on success: {}",
        out.stdout
    );
    inspect::settle(node);
    let ports: Vec<furrow_api::wire::PortInfo> = node.netd.client().get("/v1/ports").unwrap();
    assert_eq!(ports.len(), 1, "{ports:#?}");
    assert_eq!(ports[0].container_id, keep.container_id);
    for p in [&gone1, &gone2] {
        assert!(
            p.ns.ip(&["link", "show", "eth0"]).is_err(),
            "released pod still has eth0"
        );
        assert!(!inspect::masquerade_members(node, "mgmt").contains(&p.ip().to_string()));
    }
    assert!(probe::ping_ok(
        &keep.ns,
        IpAddr::V4(furrow_tests::lab::EXTERNAL_IP),
        3
    ));
    node.del_pod(&keep).expect_ok("DEL");
    assert_eq!(inspect::leftovers(node, "mgmt"), Vec::<String>::new());
}

// 15 is covered at scale by tests/stress.rs; here: a small parallel burst.
#[test]
fn c15_parallel_adds_get_distinct_addresses() {
    let lab = one_node();
    let node = lab.node(0);
    let cfg = node.mgmt_config("1.1.0");
    let pods: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|i| {
                s.spawn({
                    let cfg = cfg.clone();
                    move || node.add_pod(&format!("p{i}"), &cfg)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
    });
    let mut ips: Vec<_> = pods.iter().map(|p| p.ip()).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 8);
    std::thread::scope(|s| {
        for p in &pods {
            s.spawn(move || node.del_pod(p).expect_ok("DEL"));
        }
    });
    assert_eq!(inspect::leftovers(node, "mgmt"), Vec::<String>::new());
}

// 16. Multus CNI_ARGS, unknown env, reserved config keys.
#[test]
fn c16_tolerates_multus_args_unknown_env_and_reserved_keys() {
    let lab = one_node();
    let node = lab.node(0);
    let pod = Netns::new(&names::unique("pod")).unwrap();
    let p = pod.path_str();
    let mut cfg = node.mgmt_config("1.1.0");
    cfg["args"] = json!({"cni": {"labels": [{"key": "a", "value": "b"}]}});
    cfg["runtimeConfig"] = json!({"portMappings": []});
    cfg["cni.dev/extra"] = json!({"x": 1});
    let mut e = env("ADD", "multus-c1", &p, "net1");
    e.push((
        "CNI_ARGS",
        "IgnoreUnknown=true;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=id;K8S_POD_UID=u",
    ));
    e.push(("SOME_RUNTIME_VAR", "1"));
    let out = cni::run(&e, cfg.to_string().as_bytes());
    assert!(out.success(), "{out:?}");
    let ports: Vec<furrow_api::wire::PortInfo> = node.netd.client().get("/v1/ports").unwrap();
    assert_eq!(ports[0].pod.namespace.as_deref(), Some("ns"));
    assert_eq!(ports[0].pod.uid.as_deref(), Some("u"));
    // Without IgnoreUnknown, an unknown CNI_ARGS key is refused, named.
    let mut e2 = env("ADD", "multus-c2", &p, "net2");
    e2.push(("CNI_ARGS", "FOO=bar"));
    let out = cni::run(&e2, cfg.to_string().as_bytes());
    assert_eq!(out.error_code(), Some(4));
    assert!(out.error_msg().contains("FOO"));
    let mut d = env("DEL", "multus-c1", &p, "net1");
    d.push(("CNI_ARGS", "IgnoreUnknown=true;K8S_POD_NAME=p"));
    cni::run(&d, cfg.to_string().as_bytes()).expect_ok("DEL");
}

// 17. runtimeConfig.mac / ips only with the capabilities declared.
#[test]
fn c17_runtime_config_honoured_only_with_capabilities() {
    let lab = one_node();
    let node = lab.node(0);
    let mut cfg = node.mgmt_config("1.1.0");
    cfg["runtimeConfig"] = json!({"mac": "52:54:00:aa:bb:cc", "ips": ["10.52.0.200"]});
    let without = node.add_pod("p1", &cfg).unwrap();
    let mac_of = |p: &furrow_tests::Pod| -> Value {
        let v: Value =
            serde_json::from_str(&p.ns.ip(&["-j", "link", "show", "dev", "eth0"]).unwrap())
                .unwrap();
        v[0]["address"].clone()
    };
    assert_ne!(mac_of(&without), "52:54:00:aa:bb:cc");
    assert_ne!(without.ip().to_string(), "10.52.0.200");
    cfg["capabilities"] = json!({"mac": true, "ips": true});
    let with = node.add_pod("p2", &cfg).unwrap();
    assert_eq!(mac_of(&with), "52:54:00:aa:bb:cc");
    assert_eq!(with.ip().to_string(), "10.52.0.200");
    // A multicast MAC is refused, naming the field.
    cfg["runtimeConfig"] = json!({"mac": "01:00:5e:00:00:01"});
    let err = node.add_pod("p3", &cfg).unwrap_err().to_string();
    assert!(err.contains("mac"), "{err}");
    node.del_pod(&without).expect_ok("DEL");
    node.del_pod(&with).expect_ok("DEL");
    assert_eq!(inspect::leftovers(node, "mgmt"), Vec::<String>::new());
}

#[test]
fn bad_input_unknown_network_and_missing_netns() {
    let lab = one_node();
    let node = lab.node(0);
    let mut cfg = node.mgmt_config("1.1.0");
    cfg["network"] = json!("nosuchnet");
    let pod = Netns::new(&names::unique("pod")).unwrap();
    let out = cni::add(&Attachment::new("c1", &pod.path_str(), "eth0"), &cfg);
    assert_eq!(out.error_code(), Some(7), "{out:?}");
    assert!(out.error_msg().contains("nosuchnet"));
    let cfg = node.mgmt_config("1.1.0");
    let out = cni::add(
        &Attachment::new("c2", "/run/netns/does-not-exist-furrow", "eth0"),
        &cfg,
    );
    assert_eq!(out.error_code(), Some(3), "{out:?}");
    assert!(out.error_msg().contains("does-not-exist-furrow"));
    // A path that exists but is not a network namespace.
    let out = cni::add(&Attachment::new("c3", "/etc/hostname", "eth0"), &cfg);
    assert!(!out.success());
    assert!(
        out.error_msg().contains("/etc/hostname"),
        "{}",
        out.error_msg()
    );
    assert_eq!(inspect::leftovers(node, "mgmt"), Vec::<String>::new());
}
