//! Black-box tests: the built `furrow` binary run as a runtime runs it,
//! against a fake netd.

mod common;

use std::fs::File;
use std::process::Stdio;

use common::*;
use serde_json::{json, Value};

const ALL_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
const MULTUS_ARGS: &str =
    "IgnoreUnknown=true;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=id;K8S_POD_UID=u";

fn with<'a>(
    mut vars: Vec<(&'a str, &'a str)>,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    for (k, v) in extra {
        vars.retain(|(name, _)| name != k);
        vars.push((k, v));
    }
    vars
}

fn without<'a>(vars: Vec<(&'a str, &'a str)>, name: &str) -> Vec<(&'a str, &'a str)> {
    vars.into_iter().filter(|(k, _)| *k != name).collect()
}

// ---------------------------------------------------------------- VERSION

#[test]
fn version_lists_supported_versions() {
    for stdin in [
        r#"{"cniVersion": "0.3.1"}"#,
        r#"{"cniVersion": "1.1.0"}"#,
        "",
    ] {
        let r = run(&[("CNI_COMMAND", "VERSION")], stdin);
        r.assert_ok();
        assert_eq!(
            r.json(),
            json!({"cniVersion": "1.1.0", "supportedVersions": ALL_VERSIONS}),
            "stdin {stdin:?}"
        );
        assert_eq!(r.stderr, "");
    }
}

// ---------------------------------------------------------- environment

#[test]
fn missing_or_unknown_command_is_code_4() {
    let r = run(&[], "{}");
    assert!(r.assert_code(4)["msg"]
        .as_str()
        .unwrap()
        .contains("CNI_COMMAND"));
    let r = run(&[("CNI_COMMAND", "FROB")], "{}");
    let e = r.assert_code(4);
    assert!(e["msg"].as_str().unwrap().contains("FROB"), "{e}");
    assert_eq!(e["cniVersion"], "1.1.0");
}

#[test]
fn missing_attachment_variables_are_code_4_naming_them() {
    let netd = FakeNetd::start();
    let c = conf(
        netd.socket_str(),
        "1.0.0",
        json!({"prevResult": netd_result("eth0", "/n")}),
    );
    for cmd in ["ADD", "CHECK", "DEL"] {
        for var in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
            if cmd == "DEL" && var == "CNI_NETNS" {
                continue;
            }
            let r = run(&without(attach_env(cmd), var), &c);
            let e = r.assert_code(4);
            assert!(e["msg"].as_str().unwrap().contains(var), "{cmd} {var}: {e}");
            // Errors use the config's version.
            assert_eq!(e["cniVersion"], "1.0.0");
        }
    }
    assert!(netd.requests().is_empty());
}

#[test]
fn gc_and_status_need_only_the_command() {
    let netd = FakeNetd::start();
    let c = conf(
        netd.socket_str(),
        "1.1.0",
        json!({"cni.dev/valid-attachments": []}),
    );
    run(&[("CNI_COMMAND", "GC")], &c).assert_silent_ok();
    run(&[("CNI_COMMAND", "STATUS")], &c).assert_silent_ok();
    // Junk in the attachment variables is not their business.
    run(
        &[
            ("CNI_COMMAND", "STATUS"),
            ("CNI_IFNAME", "a/b"),
            ("CNI_CONTAINERID", "-x"),
        ],
        &c,
    )
    .assert_silent_ok();
}

#[test]
fn invalid_container_id_and_ifname_are_code_4() {
    let netd = FakeNetd::start();
    let c = conf(netd.socket_str(), "1.1.0", json!({}));
    for (var, bad) in [
        ("CNI_CONTAINERID", "-abc"),
        ("CNI_CONTAINERID", "a b"),
        ("CNI_CONTAINERID", "a/b"),
        ("CNI_CONTAINERID", ""),
        ("CNI_IFNAME", "0123456789abcdef"),
        ("CNI_IFNAME", "."),
        ("CNI_IFNAME", ".."),
        ("CNI_IFNAME", "a/b"),
        ("CNI_IFNAME", "a:b"),
        ("CNI_IFNAME", "a b"),
        ("CNI_IFNAME", ""),
    ] {
        let r = run(&with(attach_env("ADD"), &[(var, bad)]), &c);
        let e = r.assert_code(4);
        assert!(
            e["msg"].as_str().unwrap().contains(var),
            "{var}={bad:?}: {e}"
        );
    }
    assert!(netd.requests().is_empty());
}

#[test]
fn unknown_environment_variables_are_tolerated() {
    let netd = FakeNetd::start();
    let c = conf(netd.socket_str(), "1.1.0", json!({}));
    run(
        &with(
            attach_env("ADD"),
            &[("SOMETHING_ELSE", "1"), ("CNI_FOO", "x")],
        ),
        &c,
    )
    .assert_ok();
}

// ---------------------------------------------------------------- stdin

#[test]
fn unreadable_stdin_is_code_5() {
    // Reading a directory fails with EISDIR: an unreadable stdin.
    let dir = TempDir::new();
    let r = run_with(
        &attach_env("ADD"),
        Stdio::from(File::open(&dir.0).unwrap()),
        None,
    );
    r.assert_code(5);
}

#[test]
fn bad_json_is_code_6() {
    for stdin in ["{nope", "", "[1, 2]"] {
        run(&attach_env("ADD"), stdin).assert_code(6);
    }
}

#[test]
fn missing_or_unsupported_cni_version_is_code_1() {
    let netd = FakeNetd::start();
    for extra in [
        json!({"cniVersion": null}),
        json!({"cniVersion": "0.2.0"}),
        json!({"cniVersion": "2.0.0"}),
    ] {
        let r = run(&attach_env("ADD"), &conf(netd.socket_str(), "1.1.0", extra));
        let e = r.assert_code(1);
        assert!(
            e["msg"]
                .as_str()
                .unwrap()
                .contains("0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"),
            "{e}"
        );
        assert_eq!(e["cniVersion"], "1.1.0");
    }
}

#[test]
fn bad_network_name_is_code_7() {
    let netd = FakeNetd::start();
    for name in [json!(null), json!("-bad"), json!("has space"), json!(1)] {
        let r = run(
            &attach_env("ADD"),
            &conf(netd.socket_str(), "0.3.1", json!({ "name": name })),
        );
        let e = r.assert_code(7);
        assert!(e["msg"].as_str().unwrap().starts_with("name:"), "{e}");
        assert_eq!(e["cniVersion"], "0.3.1");
    }
}

#[test]
fn unknown_config_key_is_code_2_naming_key_and_value() {
    let netd = FakeNetd::start();
    let r = run(
        &attach_env("ADD"),
        &conf(netd.socket_str(), "0.3.1", json!({"vLan": 100})),
    );
    let e = r.assert_code(2);
    let msg = e["msg"].as_str().unwrap();
    assert!(msg.contains("\"vLan\"") && msg.contains("100"), "{msg}");
    assert!(netd.requests().is_empty());
}

#[test]
fn reserved_keys_are_accepted() {
    let netd = FakeNetd::start();
    let c = conf(
        netd.socket_str(),
        "1.1.0",
        json!({"args": {"cni": {}, "org.example": {"x": 1}}, "runtimeConfig": {"portMappings": []},
               "cni.dev/anything": 1, "capabilities": {"mac": false}}),
    );
    run(&attach_env("ADD"), &c).assert_ok();
}

#[test]
fn invalid_values_are_code_7_naming_the_field() {
    let netd = FakeNetd::start();
    for (extra, field) in [
        (json!({"mtu": 100}), "mtu"),
        (json!({"mtu": "1500"}), "mtu"),
        (json!({"ipMasq": "yes"}), "ipMasq"),
        (json!({"network": "Not_A_Label"}), "network"),
        (json!({"socket": "relative.sock"}), "socket"),
        (
            json!({"ipam": {"type": "host-local", "subnet": "10.1.0.0/16"}}),
            "ipam",
        ),
        (
            json!({"capabilities": {"mac": true}, "runtimeConfig": {"mac": "ff:ff:ff:ff:ff:ff"}}),
            "runtimeConfig.mac",
        ),
        (
            json!({"prevResult": {"ips": [{"address": "bogus"}]}}),
            "prevResult",
        ),
    ] {
        let r = run(
            &attach_env("ADD"),
            &conf(netd.socket_str(), "1.1.0", extra.clone()),
        );
        let e = r.assert_code(7);
        assert!(
            e["msg"].as_str().unwrap().starts_with(&format!("{field}:")),
            "{extra}: {e}"
        );
    }
    let e = run(
        &attach_env("ADD"),
        &conf(
            netd.socket_str(),
            "1.1.0",
            json!({"ipam": {"type": "dhcp"}}),
        ),
    )
    .assert_code(7);
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("allocates addresses itself"),
        "{e}"
    );
    assert!(netd.requests().is_empty());
}

// ------------------------------------------------------------- CNI_ARGS

#[test]
fn multus_cni_args_reach_netd_as_pod() {
    let netd = FakeNetd::start();
    let r = run(
        &with(attach_env("ADD"), &[("CNI_ARGS", MULTUS_ARGS)]),
        &conf(netd.socket_str(), "1.0.0", json!({})),
    );
    r.assert_ok();
    let req = netd.only_request();
    assert_eq!(
        req.body["pod"],
        json!({"namespace": "ns", "name": "p", "uid": "u", "infraContainerId": "id"})
    );
}

#[test]
fn bad_cni_args_are_code_4() {
    let netd = FakeNetd::start();
    let c = conf(netd.socket_str(), "1.0.0", json!({}));
    for (args, needle) in [
        ("K8S_POD_NAME=p;FOO=bar", "FOO"),
        ("K8S_POD_NAME", "K8S_POD_NAME"),
        ("MAC=01:00:00:00:00:01", "MAC"),
        ("IP=not-an-ip", "IP"),
    ] {
        let e = run(&with(attach_env("ADD"), &[("CNI_ARGS", args)]), &c).assert_code(4);
        assert!(e["msg"].as_str().unwrap().contains(needle), "{args}: {e}");
    }
    assert!(netd.requests().is_empty());
}

#[test]
fn cni_args_mac_and_ip() {
    let netd = FakeNetd::start();
    let r = run(
        &with(
            attach_env("ADD"),
            &[(
                "CNI_ARGS",
                "MAC=52:54:00:aa:bb:cc;IP=10.52.0.50/24,fd52::50",
            )],
        ),
        &conf(netd.socket_str(), "1.0.0", json!({})),
    );
    r.assert_ok();
    let body = netd.only_request().body;
    assert_eq!(body["mac"], "52:54:00:aa:bb:cc");
    assert_eq!(body["ips"], json!(["10.52.0.50", "fd52::50"]));
}

// ------------------------------------------------------------------ ADD

#[test]
fn add_sends_the_attachment_to_netd() {
    let netd = FakeNetd::start();
    let c = conf(
        netd.socket_str(),
        "1.1.0",
        json!({"network": "mgmt", "mtu": 1450, "ipMasq": false, "dns": {"nameservers": ["10.43.0.10"]}}),
    );
    run(&attach_env("ADD"), &c).assert_ok();
    let req = netd.only_request();
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("POST", "/v1/cni/add")
    );
    assert_eq!(
        req.body,
        json!({
            "containerId": "3f6940ab5ab43bc5",
            "ifname": "eth0",
            "netns": "/var/run/netns/cni-test",
            "networkName": "mgmt-net",
            "attachment": {"kind": "management", "network": "mgmt", "mtu": 1450, "ipMasq": false,
                           "dns": {"nameservers": ["10.43.0.10"]}}
        })
    );
}

#[test]
fn add_result_in_every_version() {
    let netd = FakeNetd::start();
    for v in ALL_VERSIONS {
        let r = run(&attach_env("ADD"), &conf(netd.socket_str(), v, json!({})));
        r.assert_ok();
        assert_eq!(r.stderr, "");
        let res = r.json();
        assert_eq!(res["cniVersion"], v);
        let ifs = res["interfaces"].as_array().unwrap();
        assert_eq!(ifs.len(), 2);
        assert_eq!(ifs[1]["name"], "eth0");
        assert_eq!(ifs[1]["sandbox"], "/var/run/netns/cni-test");
        assert_eq!(ifs[1]["mac"], "52:54:00:00:00:02");
        assert_eq!(res["ips"][0]["address"], "10.52.0.7/24");
        assert_eq!(res["ips"][0]["gateway"], "10.52.0.1");
        assert_eq!(res["ips"][0]["interface"], 1);
        assert_eq!(res["routes"][0]["dst"], "0.0.0.0/0");
        assert_eq!(res["dns"]["nameservers"], json!(["10.43.0.10"]));
        match v {
            "1.1.0" => {
                assert_eq!(ifs[1]["mtu"], 1450);
                assert_eq!(res["routes"][0]["mtu"], 1450);
                assert!(res["ips"][0].get("version").is_none());
            }
            "1.0.0" => {
                assert!(ifs[1].get("mtu").is_none(), "{res}");
                assert!(res["routes"][0].get("mtu").is_none(), "{res}");
                assert!(res["ips"][0].get("version").is_none());
            }
            _ => {
                assert!(ifs[1].get("mtu").is_none(), "{res}");
                assert!(res["routes"][0].get("mtu").is_none(), "{res}");
                assert_eq!(res["ips"][0]["version"], "4");
                assert_eq!(res["ips"][1]["version"], "6");
            }
        }
    }
}

#[test]
fn add_chains_after_prev_result() {
    let netd = FakeNetd::start();
    // A 0.3.1-shaped prevResult from an earlier plugin in the chain.
    let prev = json!({
        "cniVersion": "0.3.1",
        "interfaces": [{"name": "lo", "sandbox": "/var/run/netns/cni-test"}],
        "ips": [{"version": "4", "address": "127.0.0.1/8", "interface": 0}],
        "routes": [{"dst": "192.168.0.0/16"}],
        "dns": {"nameservers": ["1.1.1.1"]}
    });
    let r = run(
        &attach_env("ADD"),
        &conf(netd.socket_str(), "0.3.1", json!({ "prevResult": prev })),
    );
    r.assert_ok();
    let res = r.json();
    let names: Vec<&str> = res["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["lo", "fw0123456789", "eth0"]);
    let addrs: Vec<(&str, u64)> = res["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["address"].as_str().unwrap(),
                i["interface"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        addrs,
        [("127.0.0.1/8", 0), ("10.52.0.7/24", 2), ("fd52::7/64", 2)]
    );
    assert_eq!(res["routes"][0]["dst"], "192.168.0.0/16");
    assert_eq!(res["dns"]["nameservers"], json!(["1.1.1.1", "10.43.0.10"]));
    // netd saw the prevResult in canonical form.
    let body = netd.only_request().body;
    assert_eq!(body["prevResult"]["interfaces"][0]["name"], "lo");
    assert!(body["prevResult"]["ips"][0].get("version").is_none());
}

#[test]
fn add_passes_netd_errors_through() {
    let netd = FakeNetd::start();
    netd.respond(
        "POST /v1/cni/add",
        507,
        json!({"code": 101, "msg": "no free address in 10.52.0.0/24", "details": "253 of 253 in use"}),
    );
    let r = run(
        &attach_env("ADD"),
        &conf(netd.socket_str(), "0.4.0", json!({})),
    );
    let e = r.assert_code(101);
    assert_eq!(
        e,
        json!({"cniVersion": "0.4.0", "code": 101, "msg": "no free address in 10.52.0.0/24", "details": "253 of 253 in use"})
    );
}

#[test]
fn runtime_config_mac_honoured_only_with_capability() {
    let netd = FakeNetd::start();
    let rc = json!({"mac": "52:54:00:12:34:56", "ips": ["10.52.0.9/24"]});
    run(
        &attach_env("ADD"),
        &conf(netd.socket_str(), "1.0.0", json!({ "runtimeConfig": rc })),
    )
    .assert_ok();
    run(
        &attach_env("ADD"),
        &conf(
            netd.socket_str(),
            "1.0.0",
            json!({"runtimeConfig": rc, "capabilities": {"mac": true, "ips": true}}),
        ),
    )
    .assert_ok();
    let reqs = netd.requests();
    assert_eq!(reqs.len(), 2);
    assert!(reqs[0].body.get("mac").is_none(), "{}", reqs[0].body);
    assert!(reqs[0].body.get("ips").is_none(), "{}", reqs[0].body);
    assert_eq!(reqs[1].body["mac"], "52:54:00:12:34:56");
    assert_eq!(reqs[1].body["ips"], json!(["10.52.0.9"]));
}

#[test]
fn furrow_socket_env_is_used_without_config_socket() {
    let netd = FakeNetd::start();
    let c = conf("", "1.1.0", json!({"socket": null}));
    run(
        &with(attach_env("ADD"), &[("FURROW_SOCKET", netd.socket_str())]),
        &c,
    )
    .assert_ok();
    assert_eq!(netd.requests().len(), 1);
}

#[test]
fn debug_logs_go_to_stderr_only_when_asked() {
    let netd = FakeNetd::start();
    let c = conf(netd.socket_str(), "1.1.0", json!({}));
    let quiet = run(&attach_env("ADD"), &c);
    assert_eq!(quiet.stderr, "");
    let loud = run(&with(attach_env("ADD"), &[("FURROW_DEBUG", "1")]), &c);
    loud.assert_ok();
    assert!(loud.stderr.contains("furrow: "), "{loud:#?}");
    assert_eq!(loud.json(), quiet.json());
}

// ------------------------------------------------------------------ DEL

#[test]
fn del_twice_succeeds_silently() {
    let netd = FakeNetd::start();
    let c = conf(netd.socket_str(), "1.0.0", json!({}));
    run(&attach_env("DEL"), &c).assert_silent_ok();
    // A netd that reports the attachment gone is still success.
    netd.respond(
        "POST /v1/cni/del",
        404,
        json!({"code": 105, "msg": "no attachment 3f6940ab5ab43bc5/eth0"}),
    );
    run(&attach_env("DEL"), &c).assert_silent_ok();
    let reqs = netd.requests();
    assert_eq!(reqs.len(), 2);
    assert!(reqs.iter().all(|r| r.path == "/v1/cni/del"));
    assert_eq!(reqs[0].body, reqs[1].body);
}

#[test]
fn del_without_netns_or_prev_result() {
    let netd = FakeNetd::start();
    let c = conf(netd.socket_str(), "0.3.1", json!({}));
    run(&without(attach_env("DEL"), "CNI_NETNS"), &c).assert_silent_ok();
    run(&with(attach_env("DEL"), &[("CNI_NETNS", "")]), &c).assert_silent_ok();
    for r in netd.requests() {
        assert!(r.body.get("netns").is_none(), "{}", r.body);
        assert!(r.body.get("prevResult").is_none(), "{}", r.body);
        assert_eq!(r.body["containerId"], "3f6940ab5ab43bc5");
        assert_eq!(r.body["ifname"], "eth0");
    }
}

#[test]
fn del_proceeds_despite_config_problems_removal_does_not_need() {
    let netd = FakeNetd::start();
    let c = conf(
        netd.socket_str(),
        "1.0.0",
        json!({"mtu": 50, "vLan": 7, "prevResult": "garbage", "ipam": {"type": "host-local"}}),
    );
    run(
        &with(attach_env("DEL"), &[("CNI_ARGS", "junk;FOO=bar")]),
        &c,
    )
    .assert_silent_ok();
    let body = netd.only_request().body;
    assert!(body.get("prevResult").is_none());
    assert_eq!(
        body["attachment"],
        json!({"kind": "management", "network": "mgmt", "ipMasq": true})
    );
    // ...but not without what identifies the network.
    run(
        &attach_env("DEL"),
        &conf(netd.socket_str(), "1.0.0", json!({"name": "bad name"})),
    )
    .assert_code(7);
}

#[test]
fn del_passes_prev_result_when_valid() {
    let netd = FakeNetd::start();
    let c = conf(
        netd.socket_str(),
        "1.0.0",
        json!({"prevResult": netd_result("eth0", "/var/run/netns/cni-test")}),
    );
    run(&attach_env("DEL"), &c).assert_silent_ok();
    assert_eq!(
        netd.only_request().body["prevResult"]["interfaces"][1]["name"],
        "eth0"
    );
}

#[test]
fn del_reports_real_netd_failures() {
    let netd = FakeNetd::start();
    netd.respond(
        "POST /v1/cni/del",
        500,
        json!({"code": 100, "msg": "nft: table busy"}),
    );
    run(
        &attach_env("DEL"),
        &conf(netd.socket_str(), "1.0.0", json!({})),
    )
    .assert_code(100);
}

// ---------------------------------------------------------------- CHECK

#[test]
fn check_sends_prev_result() {
    let netd = FakeNetd::start();
    let prev = netd_result("eth0", "/var/run/netns/cni-test");
    let c = conf(netd.socket_str(), "0.4.0", json!({ "prevResult": prev }));
    run(&with(attach_env("CHECK"), &[("CNI_ARGS", MULTUS_ARGS)]), &c).assert_silent_ok();
    let req = netd.only_request();
    assert_eq!(req.path, "/v1/cni/check");
    assert_eq!(req.body["prevResult"], prev);
    assert_eq!(req.body["netns"], "/var/run/netns/cni-test");
    assert_eq!(req.body["pod"]["name"], "p");
}

#[test]
fn check_needs_0_4_0_and_a_prev_result() {
    let netd = FakeNetd::start();
    let prev = netd_result("eth0", "/n");
    for v in ["0.3.0", "0.3.1"] {
        let e = run(
            &attach_env("CHECK"),
            &conf(netd.socket_str(), v, json!({ "prevResult": prev })),
        )
        .assert_code(1);
        assert_eq!(
            e["msg"],
            format!("CHECK is not supported by cniVersion {v} (it needs 0.4.0 or later)")
        );
    }
    let e = run(
        &attach_env("CHECK"),
        &conf(netd.socket_str(), "1.1.0", json!({})),
    )
    .assert_code(7);
    assert!(e["msg"].as_str().unwrap().starts_with("prevResult:"), "{e}");
    assert!(netd.requests().is_empty());
}

#[test]
fn check_failure_from_netd() {
    let netd = FakeNetd::start();
    netd.respond(
        "POST /v1/cni/check",
        409,
        json!({"code": 106, "msg": "eth0 in /var/run/netns/cni-test lacks 10.52.0.7/24"}),
    );
    let c = conf(
        netd.socket_str(),
        "1.0.0",
        json!({"prevResult": netd_result("eth0", "/n")}),
    );
    let e = run(&attach_env("CHECK"), &c).assert_code(106);
    assert!(e["msg"].as_str().unwrap().contains("lacks"));
}

// ------------------------------------------------------------------- GC

#[test]
fn gc_sends_valid_attachments_and_prints_nothing() {
    let netd = FakeNetd::start();
    netd.respond(
        "POST /v1/cni/gc",
        200,
        json!({"released": [{"containerID": "old", "ifname": "eth0"}]}),
    );
    let valid =
        json!([{"containerID": "c1", "ifname": "eth0"}, {"containerID": "c2", "ifname": "net1"}]);
    let c = conf(
        netd.socket_str(),
        "1.1.0",
        json!({"cni.dev/valid-attachments": valid, "cni.dev/attachments": valid}),
    );
    run(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")], &c).assert_silent_ok();
    let req = netd.only_request();
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("POST", "/v1/cni/gc")
    );
    assert_eq!(
        req.body,
        json!({"networkName": "mgmt-net", "validAttachments": valid})
    );
}

#[test]
fn gc_reports_errors_after_carrying_on() {
    let netd = FakeNetd::start();
    netd.respond(
        "POST /v1/cni/gc",
        200,
        json!({"released": [{"containerID": "a", "ifname": "eth0"}, {"containerID": "b", "ifname": "eth0"}],
               "errors": ["c/eth0: link busy", "d/eth0: nft rule missing"]}),
    );
    let c = conf(
        netd.socket_str(),
        "1.1.0",
        json!({"cni.dev/valid-attachments": []}),
    );
    let e = run(&[("CNI_COMMAND", "GC")], &c).assert_code(100);
    let msg = e["msg"].as_str().unwrap();
    assert!(
        msg.contains("released 2")
            && msg.contains("c/eth0: link busy")
            && msg.contains("d/eth0: nft rule missing"),
        "{msg}"
    );
}

#[test]
fn gc_needs_1_1_0_and_the_list() {
    let netd = FakeNetd::start();
    let e = run(
        &[("CNI_COMMAND", "GC")],
        &conf(
            netd.socket_str(),
            "1.0.0",
            json!({"cni.dev/valid-attachments": []}),
        ),
    )
    .assert_code(1);
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("GC is not supported by cniVersion 1.0.0"),
        "{e}"
    );
    let e = run(
        &[("CNI_COMMAND", "GC")],
        &conf(netd.socket_str(), "1.1.0", json!({})),
    )
    .assert_code(7);
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("cni.dev/valid-attachments"),
        "{e}"
    );
    assert!(netd.requests().is_empty());
}

// --------------------------------------------------------------- STATUS

#[test]
fn status_ready_not_ready_and_down() {
    let netd = FakeNetd::start();
    let c = conf(netd.socket_str(), "1.1.0", json!({}));
    run(&[("CNI_COMMAND", "STATUS")], &c).assert_silent_ok();
    assert_eq!(netd.only_request().path, "/v1/cni/status");

    netd.respond(
        "GET /v1/cni/status",
        200,
        json!({"ready": false, "reason": "datapath not loaded"}),
    );
    let e = run(&[("CNI_COMMAND", "STATUS")], &c).assert_code(51);
    assert!(
        e["msg"].as_str().unwrap().contains("datapath not loaded"),
        "{e}"
    );

    let dir = TempDir::new();
    let dead = dead_socket(&dir);
    let e = run(
        &[("CNI_COMMAND", "STATUS")],
        &conf(&dead, "1.1.0", json!({})),
    )
    .assert_code(50);
    let msg = e["msg"].as_str().unwrap();
    assert!(
        msg.contains("not reachable") && msg.contains(&dead),
        "{msg}"
    );

    let e = run(
        &[("CNI_COMMAND", "STATUS")],
        &conf(netd.socket_str(), "1.0.0", json!({})),
    )
    .assert_code(1);
    assert!(e["msg"]
        .as_str()
        .unwrap()
        .contains("STATUS is not supported by cniVersion 1.0.0"));
}

// ------------------------------------------------------------ netd down

#[test]
fn netd_down_is_try_again_later_naming_the_socket() {
    let dir = TempDir::new();
    let dead = dead_socket(&dir);
    let prev = json!({"prevResult": netd_result("eth0", "/n"), "cni.dev/valid-attachments": []});
    for (vars, name) in [
        (attach_env("ADD"), "ADD"),
        (attach_env("DEL"), "DEL"),
        (attach_env("CHECK"), "CHECK"),
        (vec![("CNI_COMMAND", "GC")], "GC"),
    ] {
        let e = run(&vars, &conf(&dead, "1.1.0", prev.clone())).assert_code(11);
        assert!(e["msg"].as_str().unwrap().contains(&dead), "{name}: {e}");
    }
}

// ------------------------------------------------------- a full sequence

#[test]
fn add_check_del_like_a_runtime() {
    let netd = FakeNetd::start();
    let base = conf(netd.socket_str(), "1.1.0", json!({}));
    let add = run(
        &with(attach_env("ADD"), &[("CNI_ARGS", MULTUS_ARGS)]),
        &base,
    );
    add.assert_ok();
    // libcni passes ADD's result as prevResult to CHECK and DEL.
    let mut with_prev: Value = serde_json::from_str(&base).unwrap();
    with_prev["prevResult"] = add.json();
    let with_prev = with_prev.to_string();
    run(
        &with(attach_env("CHECK"), &[("CNI_ARGS", MULTUS_ARGS)]),
        &with_prev,
    )
    .assert_silent_ok();
    run(
        &with(attach_env("DEL"), &[("CNI_ARGS", MULTUS_ARGS)]),
        &with_prev,
    )
    .assert_silent_ok();
    let paths: Vec<String> = netd.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/v1/cni/add", "/v1/cni/check", "/v1/cni/del"]);
}

/// Not a test: measures the plugin's own overhead (process start, parse,
/// one request to an instant fake netd). Run with
/// `cargo test --release -p furrow-cni --test plugin -- --ignored --nocapture overhead`.
#[test]
#[ignore]
fn overhead() {
    let netd = FakeNetd::start();
    let c = conf(netd.socket_str(), "1.1.0", json!({}));
    let vars = with(attach_env("ADD"), &[("CNI_ARGS", MULTUS_ARGS)]);
    for (name, vars, input) in [
        ("VERSION", vec![("CNI_COMMAND", "VERSION")], String::new()),
        ("ADD", vars.clone(), c.clone()),
        ("DEL", with(vars, &[("CNI_COMMAND", "DEL")]), c.clone()),
    ] {
        let n = 300;
        let mut times: Vec<f64> = (0..n)
            .map(|_| {
                let t = std::time::Instant::now();
                run(&vars, &input).assert_ok();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let mean = times.iter().sum::<f64>() / n as f64;
        println!(
            "{name}: mean {mean:.2} ms, p50 {:.2} ms, p99 {:.2} ms over {n} runs",
            times[n / 2],
            times[n * 99 / 100]
        );
    }
}
