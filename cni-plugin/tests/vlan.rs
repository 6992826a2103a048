//! Black-box tests of VLAN attachments: Harvester's
//! NetworkAttachmentDefinition configs with only `"type"` changed, run
//! through the built `furrow` binary as Multus runs it, against a fake
//! netd.

mod common;

use common::*;
use serde_json::{json, Value};

const MULTUS_ARGS: &str =
    "IgnoreUnknown=true;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=id;K8S_POD_UID=u";

/// Harvester's NAD configs (docs/anchors.md), exactly, "type" changed.
const HARVESTER_VLAN: &str = r#"{"cniVersion":"0.3.1","name":"vlan100","type":"furrow","bridge":"mgmt-br","promiscMode":true,"vlan":100,"ipam":{}}"#;
const HARVESTER_UNTAGGED: &str = r#"{"cniVersion":"0.3.1","name":"vlan100","type":"furrow","bridge":"mgmt-br","promiscMode":true,"ipam":{}}"#;
const HARVESTER_TRUNK: &str = r#"{"cniVersion":"0.3.1","name":"trunk","type":"furrow","bridge":"data-br","promiscMode":true,"vlan":0,"vlanTrunk":[{"minID":3100,"maxID":3104},{"id":200}],"ipam":{}}"#;

/// Multus' environment for a secondary interface, netd found through
/// FURROW_SOCKET (the NAD itself has no `socket`).
fn multus_env<'a>(cmd: &'a str, netd: &'a FakeNetd) -> Vec<(&'a str, &'a str)> {
    let mut vars: Vec<(&str, &str)> = attach_env(cmd)
        .into_iter()
        .filter(|(k, _)| *k != "CNI_IFNAME")
        .collect();
    vars.push(("CNI_IFNAME", "net1"));
    vars.push(("CNI_ARGS", MULTUS_ARGS));
    vars.push(("FURROW_SOCKET", netd.socket_str()));
    vars
}

/// A NAD config with `extra` merged in (null removes a key).
fn nad(base: &str, extra: Value) -> String {
    let mut c: Value = serde_json::from_str(base).unwrap();
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c.to_string()
}

fn request(network: &str, attachment: Value) -> Value {
    json!({
        "containerId": "3f6940ab5ab43bc5",
        "ifname": "net1",
        "netns": "/var/run/netns/cni-test",
        "networkName": network,
        "attachment": attachment,
        "pod": {"namespace": "ns", "name": "p", "uid": "u", "infraContainerId": "id"}
    })
}

#[test]
fn add_of_each_harvester_nad_sends_the_vlan_attachment() {
    for (config, network, attachment) in [
        (
            HARVESTER_VLAN,
            "vlan100",
            json!({"kind": "vlan", "clusterNetwork": "mgmt", "vlan": 100, "promisc": true}),
        ),
        (
            HARVESTER_UNTAGGED,
            "vlan100",
            json!({"kind": "vlan", "clusterNetwork": "mgmt", "vlan": 0, "promisc": true}),
        ),
        (
            HARVESTER_TRUNK,
            "trunk",
            json!({"kind": "vlan", "clusterNetwork": "data", "vlan": 0, "promisc": true,
                   "trunk": [{"min": 200, "max": 200}, {"min": 3100, "max": 3104}]}),
        ),
    ] {
        let netd = FakeNetd::start();
        run(&multus_env("ADD", &netd), config).assert_ok();
        let req = netd.only_request();
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            ("POST", "/v1/cni/add")
        );
        assert_eq!(req.body, request(network, attachment), "{config}");
    }
}

#[test]
fn add_result_0_3_1_has_interfaces_and_no_ips() {
    for config in [HARVESTER_VLAN, HARVESTER_UNTAGGED, HARVESTER_TRUNK] {
        let netd = FakeNetd::start();
        let r = run(&multus_env("ADD", &netd), config);
        r.assert_ok();
        assert_eq!(r.stderr, "");
        let res = r.json();
        assert_eq!(
            res,
            json!({
                "cniVersion": "0.3.1",
                "interfaces": [
                    {"name": "fw0123456789", "mac": "aa:bb:cc:00:00:01"},
                    {"name": "net1", "mac": "52:54:00:00:00:02", "sandbox": "/var/run/netns/cni-test"}
                ]
            }),
            "{config}"
        );
        // What libcni's 0.3.1 types accept: "ips" absent or a list.
        assert!(res.get("ips").is_none_or(|ips| ips == &json!([])));
    }
}

#[test]
fn add_result_without_ips_in_every_version() {
    let netd = FakeNetd::start();
    for v in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let r = run(
            &multus_env("ADD", &netd),
            &nad(HARVESTER_VLAN, json!({ "cniVersion": v })),
        );
        let res = r.assert_ok().json();
        assert_eq!(res["cniVersion"], v);
        assert_eq!(res["interfaces"].as_array().unwrap().len(), 2, "{v}: {res}");
        assert!(res.get("ips").is_none(), "{v}: {res}");
        assert!(res.get("routes").is_none(), "{v}: {res}");
        // The interface MTU is a 1.1.0 field.
        assert_eq!(res["interfaces"][1].get("mtu").is_some(), v == "1.1.0");
    }
}

#[test]
fn vm_mac_reaches_netd() {
    // KubeVirt's VM MAC as libcni passes it when the NAD declares the
    // capability...
    let netd = FakeNetd::start();
    let c = nad(
        HARVESTER_VLAN,
        json!({"capabilities": {"mac": true}, "runtimeConfig": {"mac": "52:54:00:ab:cd:ef"}}),
    );
    run(&multus_env("ADD", &netd), &c).assert_ok();
    assert_eq!(netd.only_request().body["mac"], "52:54:00:ab:cd:ef");
    // ...ignored without the capability...
    let netd = FakeNetd::start();
    let c = nad(
        HARVESTER_VLAN,
        json!({"runtimeConfig": {"mac": "52:54:00:ab:cd:ef"}}),
    );
    run(&multus_env("ADD", &netd), &c).assert_ok();
    assert!(netd.only_request().body.get("mac").is_none());
    // ...and from CNI_ARGS.
    let netd = FakeNetd::start();
    let mut vars = multus_env("ADD", &netd);
    let args = format!("{MULTUS_ARGS};MAC=52:54:00:ab:cd:01");
    vars.retain(|(k, _)| *k != "CNI_ARGS");
    vars.push(("CNI_ARGS", &args));
    run(&vars, HARVESTER_TRUNK).assert_ok();
    assert_eq!(netd.only_request().body["mac"], "52:54:00:ab:cd:01");
}

#[test]
fn cluster_network_key_works_like_bridge() {
    let netd = FakeNetd::start();
    let c = nad(
        HARVESTER_VLAN,
        json!({"bridge": null, "clusterNetwork": "mgmt", "mtu": 9000}),
    );
    run(&multus_env("ADD", &netd), &c).assert_ok();
    assert_eq!(
        netd.only_request().body["attachment"],
        json!({"kind": "vlan", "clusterNetwork": "mgmt", "vlan": 100, "mtu": 9000, "promisc": true})
    );
}

#[test]
fn add_then_del_like_multus() {
    let netd = FakeNetd::start();
    let add = run(&multus_env("ADD", &netd), HARVESTER_TRUNK);
    add.assert_ok();
    // Multus passes ADD's result as prevResult to DEL.
    let with_prev = nad(HARVESTER_TRUNK, json!({ "prevResult": add.json() }));
    run(&multus_env("DEL", &netd), &with_prev).assert_silent_ok();
    run(&multus_env("DEL", &netd), &with_prev).assert_silent_ok();
    let reqs = netd.requests();
    let paths: Vec<&str> = reqs.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/v1/cni/add", "/v1/cni/del", "/v1/cni/del"]);
    assert_eq!(reqs[1].body["attachment"], reqs[0].body["attachment"]);
    assert_eq!(reqs[1].body["prevResult"]["interfaces"][1]["name"], "net1");
    assert!(reqs[1].body["prevResult"].get("ips").is_none());
}

#[test]
fn check_with_a_layer2_prev_result() {
    let netd = FakeNetd::start();
    let c = nad(HARVESTER_VLAN, json!({"cniVersion": "1.0.0"}));
    let add = run(&multus_env("ADD", &netd), &c);
    add.assert_ok();
    let with_prev = nad(&c, json!({ "prevResult": add.json() }));
    run(&multus_env("CHECK", &netd), &with_prev).assert_silent_ok();
    let reqs = netd.requests();
    assert_eq!(reqs[1].path, "/v1/cni/check");
    assert_eq!(reqs[1].body["attachment"]["vlan"], 100);
}

#[test]
fn del_of_a_broken_vlan_config_still_reaches_netd_as_vlan() {
    let netd = FakeNetd::start();
    let c = nad(
        HARVESTER_VLAN,
        json!({"vlan": 4095, "vlanTrunk": "x", "ipam": {"type": "dhcp"}, "hairpinMode": true,
               "ipMasq": false, "promiscMode": "yes"}),
    );
    run(&multus_env("ADD", &netd), &c).assert_code(2);
    assert!(netd.requests().is_empty());
    run(&multus_env("DEL", &netd), &c).assert_silent_ok();
    assert_eq!(
        netd.only_request().body["attachment"],
        json!({"kind": "vlan", "clusterNetwork": "mgmt", "vlan": 0, "promisc": false})
    );
}

#[test]
fn invalid_vlan_values_are_code_7_naming_the_field() {
    let netd = FakeNetd::start();
    for (extra, field, needle) in [
        (json!({"vlan": 4095}), "vlan", "4094"),
        (json!({"vlan": -1}), "vlan", "4094"),
        (json!({"vlan": "100"}), "vlan", "4094"),
        (json!({"bridge": "br0"}), "bridge", "<clusterNetwork>-br"),
        (
            json!({"clusterNetwork": "data"}),
            "bridge",
            "clusterNetwork",
        ),
        (
            json!({"clusterNetwork": "much-too-long"}),
            "clusterNetwork",
            "1-12",
        ),
        (
            json!({"bridge": null}),
            "vlan",
            "requires clusterNetwork or bridge",
        ),
        (json!({"vlanTrunk": [{"id": 200}]}), "vlan", "vlanTrunk"),
        (
            json!({"vlan": 0, "vlanTrunk": [{"id": 1}, {"minID": 9, "maxID": 3}]}),
            "vlanTrunk[1].maxID",
            "minID <= maxID",
        ),
        (
            json!({"vlan": 0, "vlanTrunk": [{"id": 4095}]}),
            "vlanTrunk[0].id",
            "4094",
        ),
        (
            json!({"vlan": 0, "vlanTrunk": [{"id": 5, "minID": 6, "maxID": 7}]}),
            "vlanTrunk[0]",
            "both",
        ),
        (
            json!({"vlan": 0, "vlanTrunk": [{"vid": 5}]}),
            "vlanTrunk[0].vid",
            "unknown key",
        ),
        (
            json!({"ipam": {"type": "host-local", "subnet": "10.1.0.0/24"}}),
            "ipam",
            "IPAM on VLAN networks is not supported yet",
        ),
        (json!({"mtu": 9001}), "mtu", "9000"),
        (json!({"promiscMode": "on"}), "promiscMode", "true or false"),
    ] {
        let r = run(
            &multus_env("ADD", &netd),
            &nad(HARVESTER_VLAN, extra.clone()),
        );
        let e = r.assert_code(7);
        let msg = e["msg"].as_str().unwrap();
        assert!(
            msg.starts_with(&format!("{field}: ")) && msg.contains(needle),
            "{extra}: {msg}"
        );
        assert_eq!(e["cniVersion"], "0.3.1");
    }
    assert!(netd.requests().is_empty());
}

#[test]
fn unsupported_keys_are_code_2_saying_why() {
    let netd = FakeNetd::start();
    for (extra, needle) in [
        (json!({"ipMasq": true}), "management network only"),
        (json!({"network": "mgmt"}), "management network only"),
        (json!({"isGateway": true}), "does not support"),
        (json!({"isDefaultGateway": true}), "does not support"),
        (json!({"hairpinMode": false}), "does not support"),
        (json!({"macspoofchk": true}), "port security"),
        (json!({"preserveDefaultVlan": false}), "does not support"),
        (json!({"vlanID": 100}), ""),
    ] {
        let key = extra.as_object().unwrap().keys().next().unwrap().clone();
        let r = run(
            &multus_env("ADD", &netd),
            &nad(HARVESTER_VLAN, extra.clone()),
        );
        let e = r.assert_code(2);
        let msg = e["msg"].as_str().unwrap();
        assert!(
            msg.contains(&format!("\"{key}\"")) && msg.contains(needle),
            "{extra}: {msg}"
        );
    }
    // A VLAN key on the management network.
    let c = conf(netd.socket_str(), "1.1.0", json!({"promiscMode": true}));
    let e = run(&attach_env("ADD"), &c).assert_code(2);
    assert!(
        e["msg"].as_str().unwrap().contains("VLAN networks only"),
        "{e}"
    );
    assert!(netd.requests().is_empty());
}
