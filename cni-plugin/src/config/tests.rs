use super::*;
use furrow_api::cni::ManagementAttachment;
use serde_json::json;

fn parse_v(v: Value, cmd: Command) -> Result<NetConf, ConfigError> {
    parse(v.to_string().as_bytes(), cmd)
}

/// A minimal valid config with `extra` merged in (null removes a key).
fn with(extra: Value) -> Value {
    let mut base = json!({"cniVersion": "1.1.0", "name": "mgmt-net", "type": "furrow"});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            base.as_object_mut().unwrap().remove(k);
        } else {
            base[k] = v.clone();
        }
    }
    base
}

fn err(extra: Value) -> ConfigError {
    parse_v(with(extra), Command::Add).unwrap_err()
}

fn mgmt(c: &NetConf) -> &ManagementAttachment {
    match &c.attachment {
        AttachmentSpec::Management(m) => m,
        other => panic!("expected a management attachment, got {other:?}"),
    }
}

#[test]
fn minimal_config_gets_defaults() {
    let c = parse_v(with(json!({})), Command::Add).unwrap();
    assert_eq!(c.version, CniVersion::V1_1_0);
    assert_eq!(c.name, "mgmt-net");
    assert_eq!(c.socket, None);
    assert_eq!(
        *mgmt(&c),
        ManagementAttachment {
            network: "mgmt".into(),
            mtu: None,
            ip_masq: true,
            dns: Dns::default()
        }
    );
    assert_eq!(c.mac, None);
    assert!(c.ips.is_empty());
    assert_eq!(c.prev_result, None);
}

#[test]
fn full_config_parses() {
    let c = parse_v(
        with(json!({
            "socket": "/run/x.sock", "network": "pods-2", "mtu": 1450, "ipMasq": false,
            "ipam": {"type": "furrow"},
            "dns": {"nameservers": ["10.43.0.10"], "domain": "cluster.local", "search": ["a"], "options": ["ndots:5"]},
            "cni.dev/future": {"anything": 1}
        })),
        Command::Add,
    )
    .unwrap();
    assert_eq!(c.socket.as_deref(), Some("/run/x.sock"));
    let m = mgmt(&c);
    assert_eq!(
        (m.network.as_str(), m.mtu, m.ip_masq),
        ("pods-2", Some(1450), false)
    );
    assert_eq!(m.dns.nameservers, ["10.43.0.10"]);
    assert_eq!(m.dns.domain.as_deref(), Some("cluster.local"));
}

#[test]
fn every_supported_version_parses() {
    for v in CniVersion::ALL {
        let c = parse_v(with(json!({"cniVersion": v.as_str()})), Command::Add).unwrap();
        assert_eq!(c.version, v);
    }
}

#[test]
fn bad_json_is_code_6() {
    let e = parse(b"{not json", Command::Add).unwrap_err();
    assert_eq!(e.code(), 6);
    let e = parse(b"[1]", Command::Add).unwrap_err();
    assert_eq!(e.code(), 6);
    assert!(e.to_string().contains("an array"));
    // Even DEL cannot do anything without a readable config.
    assert_eq!(parse(b"", Command::Del).unwrap_err().code(), 6);
}

#[test]
fn version_problems_are_code_1_with_the_list() {
    for extra in [
        json!({"cniVersion": null}),
        json!({"cniVersion": "0.2.0"}),
        json!({"cniVersion": 1}),
    ] {
        let e = err(extra.clone());
        assert_eq!(e.code(), 1, "{extra}");
        assert!(
            e.to_string().contains("0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"),
            "{e}"
        );
    }
    assert!(err(json!({"cniVersion": "0.2.0"}))
        .to_string()
        .contains("\"0.2.0\""));
    // Version errors hold on DEL too: the protocol itself is not understood.
    let e = parse_v(with(json!({"cniVersion": "9.9.9"})), Command::Del).unwrap_err();
    assert_eq!(e.code(), 1);
}

#[test]
fn unknown_keys_are_code_2_naming_key_and_value() {
    let e = err(json!({"vLan": 100}));
    assert_eq!(e.code(), 2);
    assert_eq!(
        e.to_string(),
        "unsupported field in network config: \"vLan\" = 100"
    );
    let e = err(json!({"ipmasq": false, "foo": "bar"}));
    let msg = e.to_string();
    assert!(
        msg.contains("\"ipmasq\" = false") && msg.contains("\"foo\" = \"bar\""),
        "{msg}"
    );
    assert!(
        e.details().contains("did you mean \"ipMasq\""),
        "{}",
        e.details()
    );
    // Capitals matter: "VLAN" is not "vlan", so this stays a management
    // config with an unknown key, and the details suggest the spelling.
    let e = err(json!({"VLAN": 100}));
    assert_eq!(e.code(), 2);
    assert!(
        e.details().contains("did you mean \"vlan\""),
        "{}",
        e.details()
    );
    // Long values are cut short.
    let e = err(json!({"big": "x".repeat(500)}));
    assert!(e.to_string().len() < 200);
}

#[test]
fn name_problems_are_code_7() {
    for extra in [
        json!({"name": null}),
        json!({"name": ""}),
        json!({"name": "-x"}),
        json!({"name": "a b"}),
        json!({"name": 5}),
    ] {
        let e = err(extra.clone());
        assert_eq!(e.code(), 7, "{extra}");
        assert!(e.to_string().starts_with("name: "), "{e}");
    }
    assert!(parse_v(with(json!({"name": "Net_1.a-b"})), Command::Add).is_ok());
}

#[test]
fn field_type_and_range_problems_are_code_7_naming_the_field() {
    let cases = [
        (json!({"type": 1}), "type"),
        (json!({"socket": 1}), "socket"),
        (json!({"socket": "run/netd.sock"}), "socket"),
        (json!({"network": "Mgmt"}), "network"),
        (json!({"network": "a".repeat(64)}), "network"),
        (json!({"network": 3}), "network"),
        (json!({"mtu": 575}), "mtu"),
        (json!({"mtu": 9001}), "mtu"),
        (json!({"mtu": "1500"}), "mtu"),
        (json!({"mtu": 1500.5}), "mtu"),
        (json!({"mtu": -1}), "mtu"),
        (json!({"ipMasq": "true"}), "ipMasq"),
        (
            json!({"ipam": {"type": "host-local", "subnet": "10.0.0.0/24"}}),
            "ipam",
        ),
        (
            json!({"ipam": {"type": "furrow", "subnet": "10.0.0.0/24"}}),
            "ipam",
        ),
        (json!({"ipam": "furrow"}), "ipam"),
        (json!({"dns": []}), "dns"),
        (
            json!({"dns": {"nameservers": "1.1.1.1"}}),
            "dns.nameservers",
        ),
        (
            json!({"dns": {"nameservers": ["dns.example"]}}),
            "dns.nameservers",
        ),
        (json!({"dns": {"domain": 1}}), "dns.domain"),
        (json!({"capabilities": {"mac": "yes"}}), "capabilities.mac"),
        (json!({"capabilities": []}), "capabilities"),
        (json!({"runtimeConfig": 1}), "runtimeConfig"),
        (json!({"args": "x"}), "args"),
        (json!({"args": {"cni": 1}}), "args.cni"),
        (json!({"args": {"cni": {"mac": "zz"}}}), "args.cni.mac"),
        (json!({"args": {"cni": {"ips": ["x"]}}}), "args.cni.ips[0]"),
        (
            json!({"capabilities": {"mac": true}, "runtimeConfig": {"mac": "01:00:5e:00:00:01"}}),
            "runtimeConfig.mac",
        ),
        (
            json!({"capabilities": {"mac": true}, "runtimeConfig": {"mac": "00:00:00:00:00:00"}}),
            "runtimeConfig.mac",
        ),
        (
            json!({"capabilities": {"mac": true}, "runtimeConfig": {"mac": 5}}),
            "runtimeConfig.mac",
        ),
        (
            json!({"capabilities": {"ips": true}, "runtimeConfig": {"ips": "10.0.0.1"}}),
            "runtimeConfig.ips",
        ),
        (json!({"prevResult": []}), "prevResult"),
        (
            json!({"prevResult": {"interfaces": [{"name": "a", "mac": "bad"}]}}),
            "prevResult",
        ),
    ];
    for (extra, field) in cases {
        let e = err(extra.clone());
        assert_eq!(e.code(), 7, "{extra}: {e}");
        assert!(
            e.to_string().starts_with(&format!("{field}: ")),
            "{extra}: {e}"
        );
    }
}

#[test]
fn ipam_forms_accepted_for_management() {
    for ipam in [json!(null), json!({}), json!({"type": "furrow"})] {
        assert!(
            parse_v(with(json!({ "ipam": ipam })), Command::Add).is_ok(),
            "{ipam}"
        );
    }
    let e = err(json!({"ipam": {"type": "host-local"}}));
    assert!(e.to_string().contains("allocates addresses itself"), "{e}");
}

#[test]
fn dns_unknown_key_is_code_2() {
    let e = err(json!({"dns": {"nameserver": ["1.1.1.1"]}}));
    assert_eq!(e.code(), 2);
    assert!(e.to_string().contains("\"dns.nameserver\""), "{e}");
}

#[test]
fn capabilities() {
    // Unknown capabilities may be declared off, not on.
    assert!(parse_v(
        with(json!({"capabilities": {"portMappings": false}})),
        Command::Add
    )
    .is_ok());
    let e = err(json!({"capabilities": {"portMappings": true}}));
    assert_eq!(e.code(), 2);
    assert!(e.to_string().contains("capabilities.portMappings"), "{e}");
}

#[test]
fn runtime_config_honoured_only_with_capabilities() {
    let rc = json!({"mac": "52:54:00:12:34:56", "ips": ["10.52.0.9/24", "fd00::9"]});
    let c = parse_v(with(json!({ "runtimeConfig": rc })), Command::Add).unwrap();
    assert_eq!((c.mac, c.ips.len()), (None, 0));
    // Not declared: even a bad value is not looked at.
    let c = parse_v(
        with(json!({"runtimeConfig": {"mac": "junk"}})),
        Command::Add,
    )
    .unwrap();
    assert_eq!(c.mac, None);
    let c = parse_v(
        with(json!({"capabilities": {"mac": true, "ips": true}, "runtimeConfig": rc})),
        Command::Add,
    )
    .unwrap();
    assert_eq!(c.mac.unwrap().to_string(), "52:54:00:12:34:56");
    assert_eq!(
        c.ips,
        [
            "10.52.0.9".parse::<IpAddr>().unwrap(),
            "fd00::9".parse().unwrap()
        ]
    );
    let c = parse_v(
        with(json!({"capabilities": {"mac": true, "ips": false}, "runtimeConfig": rc})),
        Command::Add,
    )
    .unwrap();
    assert!(c.mac.is_some());
    assert!(c.ips.is_empty());
}

#[test]
fn args_cni_convention_and_precedence() {
    let c = parse_v(
        with(json!({"args": {"cni": {"mac": "52:54:00:00:00:0a", "ips": ["10.52.0.10"]}, "other": {"x": 1}}})),
        Command::Add,
    )
    .unwrap();
    assert_eq!(c.mac.unwrap().to_string(), "52:54:00:00:00:0a");
    assert_eq!(c.ips, ["10.52.0.10".parse::<IpAddr>().unwrap()]);
    // runtimeConfig (declared) wins over args.cni.
    let c = parse_v(
        with(json!({
            "args": {"cni": {"mac": "52:54:00:00:00:0a", "ips": ["10.52.0.10"]}},
            "capabilities": {"mac": true, "ips": true},
            "runtimeConfig": {"mac": "52:54:00:00:00:0b", "ips": ["10.52.0.11"]}
        })),
        Command::Add,
    )
    .unwrap();
    assert_eq!(c.mac.unwrap().to_string(), "52:54:00:00:00:0b");
    assert_eq!(c.ips, ["10.52.0.11".parse::<IpAddr>().unwrap()]);
}

#[test]
fn prev_result_of_old_versions_parses() {
    let c = parse_v(
        with(json!({"cniVersion": "0.3.1", "prevResult": {
            "cniVersion": "0.3.1",
            "interfaces": [{"name": "eth0", "sandbox": "/n"}],
            "ips": [{"version": "4", "address": "10.1.0.2/24", "interface": 0}]
        }})),
        Command::Add,
    )
    .unwrap();
    let p = c.prev_result.unwrap();
    assert_eq!(p.interfaces[0].name, "eth0");
    assert_eq!(p.ips[0].address.to_string(), "10.1.0.2/24");
}

#[test]
fn del_is_lenient_about_what_removal_does_not_need() {
    let broken = with(json!({
        "mtu": 100, "ipMasq": "x", "vLan": 5, "ipam": {"type": "host-local"},
        "dns": 1, "capabilities": {"mac": 1}, "prevResult": "garbage", "network": "Bad_Name",
        "type": 7
    }));
    assert!(parse_v(broken.clone(), Command::Add).is_err());
    let c = parse_v(broken.clone(), Command::Del).unwrap();
    let m = mgmt(&c);
    assert_eq!((m.mtu, m.ip_masq), (None, true));
    // The network string is kept as written: it may match netd's records.
    assert_eq!(m.network, "Bad_Name");
    assert_eq!(c.prev_result, None);
    // GC is lenient the same way.
    let mut gc = broken.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    assert!(parse_v(gc, Command::Gc).is_ok());
    // What DEL needs stays strict.
    let e = parse_v(with(json!({"name": "bad name"})), Command::Del).unwrap_err();
    assert_eq!(e.code(), 7);
    let e = parse_v(with(json!({"socket": "relative"})), Command::Del).unwrap_err();
    assert_eq!(e.code(), 7);
    // A non-string network falls back to the default.
    let c = parse_v(with(json!({"network": 5})), Command::Del).unwrap();
    assert_eq!(mgmt(&c).network, "mgmt");
}

#[test]
fn gc_valid_attachments() {
    let c = parse_v(
        with(json!({"cni.dev/valid-attachments": [
            {"containerID": "c1", "ifname": "eth0"},
            {"containerID": "c2", "ifname": "net1", "extra": true}
        ]})),
        Command::Gc,
    )
    .unwrap();
    assert_eq!(c.valid_attachments.len(), 2);
    assert_eq!(c.valid_attachments[1].container_id, "c2");
    assert_eq!(c.valid_attachments[1].ifname, "net1");
    // The draft spelling is accepted when the final one is absent.
    let c = parse_v(
        with(json!({"cni.dev/attachments": [{"containerID": "c1", "ifname": "eth0"}]})),
        Command::Gc,
    )
    .unwrap();
    assert_eq!(c.valid_attachments.len(), 1);
    // Missing or malformed: refuse, never release everything.
    let e = parse_v(with(json!({})), Command::Gc).unwrap_err();
    assert_eq!(e.code(), 7);
    assert!(
        e.to_string()
            .starts_with("cni.dev/valid-attachments: missing"),
        "{e}"
    );
    let e = parse_v(with(json!({"cni.dev/valid-attachments": {}})), Command::Gc).unwrap_err();
    assert_eq!(e.code(), 7);
    let e = parse_v(
        with(json!({"cni.dev/valid-attachments": [{"containerID": "c1"}]})),
        Command::Gc,
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("cni.dev/valid-attachments[0].ifname: "),
        "{e}"
    );
    // Other commands do not look at it.
    assert!(parse_v(with(json!({"cni.dev/valid-attachments": 1})), Command::Add).is_ok());
}

// ------------------------------------------------------------ VLAN networks

use furrow_api::cni::{VlanAttachment, VlanRange};

fn vlan_of(c: &NetConf) -> &VlanAttachment {
    match &c.attachment {
        AttachmentSpec::Vlan(v) => v,
        other => panic!("expected a VLAN attachment, got {other:?}"),
    }
}

/// A minimal VLAN config (cluster network `data`) with `extra` merged in.
fn vl(extra: Value) -> Value {
    let mut base = with(json!({"clusterNetwork": "data"}));
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            base.as_object_mut().unwrap().remove(k);
        } else {
            base[k] = v.clone();
        }
    }
    base
}

fn vlan_ok(extra: Value) -> VlanAttachment {
    let c = parse_v(vl(extra.clone()), Command::Add).unwrap_or_else(|e| panic!("{extra}: {e}"));
    vlan_of(&c).clone()
}

fn vlan_err(extra: Value) -> ConfigError {
    parse_v(vl(extra.clone()), Command::Add)
        .map(|c| panic!("{extra} parsed: {c:?}"))
        .unwrap_err()
}

fn ranges(r: &[(u16, u16)]) -> Vec<VlanRange> {
    r.iter().map(|&(min, max)| VlanRange { min, max }).collect()
}

/// Asserts code 7 and that the message starts with the field's path.
fn assert_invalid(e: &ConfigError, field: &str, case: &Value) {
    assert_eq!(e.code(), 7, "{case}: {e}");
    assert!(
        e.to_string().starts_with(&format!("{field}: ")),
        "{case}: expected the message to name {field}: {e}"
    );
}

/// The NetworkAttachmentDefinition configs Harvester writes (anchors.md),
/// with only "type" changed from "bridge" to "furrow".
const HARVESTER_VLAN: &str = r#"{"cniVersion":"0.3.1","name":"vlan100","type":"furrow","bridge":"mgmt-br","promiscMode":true,"vlan":100,"ipam":{}}"#;
const HARVESTER_UNTAGGED: &str = r#"{"cniVersion":"0.3.1","name":"vlan100","type":"furrow","bridge":"mgmt-br","promiscMode":true,"ipam":{}}"#;
const HARVESTER_UNTAGGED_VLAN0: &str = r#"{"cniVersion":"0.3.1","name":"vlan100","type":"furrow","bridge":"mgmt-br","promiscMode":true,"vlan":0,"ipam":{}}"#;
const HARVESTER_TRUNK: &str = r#"{"cniVersion":"0.3.1","name":"trunk","type":"furrow","bridge":"data-br","promiscMode":true,"vlan":0,"vlanTrunk":[{"minID":3100,"maxID":3104},{"id":200}],"ipam":{}}"#;

#[test]
fn harvester_nads_parse_with_only_the_type_changed() {
    let access = VlanAttachment {
        cluster_network: "mgmt".into(),
        vlan: 100,
        trunk: vec![],
        mtu: None,
        promisc: true,
        dhcp_trusted: false,
        port_security: true,
        allowed_address_pairs: vec![],
        dns: Dns::default(),
    };
    let untagged = VlanAttachment {
        vlan: 0,
        ..access.clone()
    };
    let trunk = VlanAttachment {
        cluster_network: "data".into(),
        vlan: 0,
        trunk: ranges(&[(200, 200), (3100, 3104)]),
        ..access.clone()
    };
    for (nad, name, expect) in [
        (HARVESTER_VLAN, "vlan100", &access),
        (HARVESTER_UNTAGGED, "vlan100", &untagged),
        (HARVESTER_UNTAGGED_VLAN0, "vlan100", &untagged),
        (HARVESTER_TRUNK, "trunk", &trunk),
    ] {
        for cmd in [Command::Add, Command::Check, Command::Del] {
            let c = parse(nad.as_bytes(), cmd).unwrap_or_else(|e| panic!("{nad}: {e}"));
            assert_eq!(c.version, CniVersion::V0_3_1);
            assert_eq!(c.name, name);
            assert_eq!(vlan_of(&c), expect, "{nad} {cmd:?}");
        }
    }
    assert!(trunk.is_trunk() && !access.is_trunk());
}

#[test]
fn cluster_network_from_either_key() {
    assert_eq!(vlan_ok(json!({})).cluster_network, "data");
    let v = vlan_ok(json!({"clusterNetwork": null, "bridge": "vm-net-br"}));
    assert_eq!(v.cluster_network, "vm-net");
    // Both, agreeing.
    let v = vlan_ok(json!({"clusterNetwork": "data", "bridge": "data-br"}));
    assert_eq!(v.cluster_network, "data");
    // 12 characters is the longest name (its bridge has 15).
    let v = vlan_ok(json!({"clusterNetwork": "abcdefghijkl"}));
    assert_eq!(v.cluster_network, "abcdefghijkl");
    let v = vlan_ok(json!({"clusterNetwork": null, "bridge": "abcdefghijkl-br"}));
    assert_eq!(v.cluster_network, "abcdefghijkl");
    // Only the last "-br" is the suffix.
    let v = vlan_ok(json!({"clusterNetwork": null, "bridge": "a-br-br"}));
    assert_eq!(v.cluster_network, "a-br");
}

#[test]
fn cluster_network_problems_are_code_7() {
    let cases = [
        (json!({"clusterNetwork": "Data"}), "clusterNetwork"),
        (json!({"clusterNetwork": "abcdefghijklm"}), "clusterNetwork"),
        (json!({"clusterNetwork": "-data"}), "clusterNetwork"),
        (json!({"clusterNetwork": ""}), "clusterNetwork"),
        (json!({"clusterNetwork": 5}), "clusterNetwork"),
        (json!({"clusterNetwork": null, "bridge": "cni0"}), "bridge"),
        (json!({"clusterNetwork": null, "bridge": "-br"}), "bridge"),
        (
            json!({"clusterNetwork": null, "bridge": "Data-br"}),
            "bridge",
        ),
        (
            json!({"clusterNetwork": null, "bridge": "abcdefghijklm-br"}),
            "bridge",
        ),
        (json!({"clusterNetwork": null, "bridge": 1}), "bridge"),
        // Both given, disagreeing.
        (json!({"bridge": "mgmt-br"}), "bridge"),
        // A bad bridge is an error even when clusterNetwork is fine.
        (json!({"bridge": "data"}), "bridge"),
    ];
    for (extra, field) in cases {
        assert_invalid(&vlan_err(extra.clone()), field, &extra);
    }
    let e = vlan_err(json!({"clusterNetwork": null, "bridge": "cni0"}));
    assert!(e.to_string().contains("\"<clusterNetwork>-br\""), "{e}");
    let e = vlan_err(json!({"bridge": "mgmt-br"}));
    let msg = e.to_string();
    assert!(
        msg.contains("\"mgmt\"") && msg.contains("\"data\"") && msg.contains("clusterNetwork"),
        "{msg}"
    );
    let e = vlan_err(json!({"clusterNetwork": "abcdefghijklm"}));
    assert!(e.to_string().contains("1-12"), "{e}");
}

#[test]
fn vlan_needs_a_cluster_network() {
    let mut nulls = with(json!({}));
    nulls["clusterNetwork"] = Value::Null;
    nulls["bridge"] = Value::Null;
    for (conf, field) in [
        (with(json!({"vlan": 100})), "vlan"),
        (with(json!({"vlan": 0})), "vlan"),
        (with(json!({"vlanTrunk": [{"id": 5}]})), "vlanTrunk"),
        // Present but null: still a VLAN config, still no cluster network.
        (nulls, "clusterNetwork"),
    ] {
        let extra = conf.clone();
        let e = parse_v(conf, Command::Add).unwrap_err();
        assert_invalid(&e, field, &extra);
        assert!(
            e.to_string().contains("requires clusterNetwork or bridge"),
            "{e}"
        );
    }
}

#[test]
fn vlan_ids() {
    assert_eq!(vlan_ok(json!({})).vlan, 0);
    assert_eq!(vlan_ok(json!({"vlan": null})).vlan, 0);
    assert_eq!(vlan_ok(json!({"vlan": 0})).vlan, 0);
    assert_eq!(vlan_ok(json!({"vlan": 1})).vlan, 1);
    assert_eq!(vlan_ok(json!({"vlan": 4094})).vlan, 4094);
    for bad in [
        json!(4095),
        json!(-1),
        json!(65536),
        json!(100.5),
        json!(100.0),
        json!("100"),
        json!(true),
        json!([100]),
    ] {
        let case = json!({ "vlan": bad });
        let e = vlan_err(case.clone());
        assert_invalid(&e, "vlan", &case);
        assert!(
            e.to_string().contains("from 0 (untagged) to 4094"),
            "{case}: {e}"
        );
    }
}

#[test]
fn vlan_trunk_is_sorted_and_merged() {
    let t = |entries: Value| vlan_ok(json!({ "vlanTrunk": entries })).trunk;
    assert_eq!(
        t(json!([{"minID": 3100, "maxID": 3104}, {"id": 200}])),
        ranges(&[(200, 200), (3100, 3104)])
    );
    // Overlapping, adjacent, duplicate and unordered entries.
    assert_eq!(
        t(json!([
            {"id": 10}, {"minID": 5, "maxID": 9}, {"id": 10}, {"minID": 8, "maxID": 12},
            {"id": 4094}, {"minID": 1, "maxID": 1}, {"minID": 14, "maxID": 20}, {"id": 13}
        ])),
        ranges(&[(1, 1), (5, 20), (4094, 4094)])
    );
    assert_eq!(
        t(json!([{"minID": 1, "maxID": 4094}, {"id": 7}])),
        ranges(&[(1, 4094)])
    );
    // A one-ID range, and null inside an entry meaning absent.
    assert_eq!(
        t(json!([{"minID": 7, "maxID": 7, "id": null}])),
        ranges(&[(7, 7)])
    );
    // Empty or null: no trunk (an access or untagged port), as in the
    // reference bridge plugin.
    assert!(t(json!([])).is_empty());
    assert!(vlan_ok(json!({"vlanTrunk": null})).trunk.is_empty());
}

#[test]
fn vlan_trunk_problems_are_code_7_naming_the_entry() {
    let cases = [
        (json!({"id": 5}), "vlanTrunk"),
        (json!("1-5"), "vlanTrunk"),
        (json!([5]), "vlanTrunk[0]"),
        (json!([{"id": 5}, {}]), "vlanTrunk[1]"),
        (json!([{"id": 0}]), "vlanTrunk[0].id"),
        (json!([{"id": 4095}]), "vlanTrunk[0].id"),
        (json!([{"id": -3}]), "vlanTrunk[0].id"),
        (json!([{"id": "5"}]), "vlanTrunk[0].id"),
        (json!([{"id": 5.5}]), "vlanTrunk[0].id"),
        (
            json!([{"id": 5}, {"minID": 10, "maxID": 9}]),
            "vlanTrunk[1].maxID",
        ),
        (json!([{"minID": 0, "maxID": 9}]), "vlanTrunk[0].minID"),
        (json!([{"minID": 1, "maxID": 4095}]), "vlanTrunk[0].maxID"),
        (json!([{"minID": 1}]), "vlanTrunk[0].maxID"),
        (json!([{"maxID": 9}]), "vlanTrunk[0].minID"),
        (
            json!([{"id": 1}, {"id": 2}, {"id": 3, "minID": 4, "maxID": 5}]),
            "vlanTrunk[2]",
        ),
        (json!([{"id": 3, "minID": 4}]), "vlanTrunk[0]"),
        (json!([{"id": 3, "maxID": 4}]), "vlanTrunk[0]"),
        (json!([{"id": 3, "tagged": true}]), "vlanTrunk[0].tagged"),
        (json!([{"minId": 3, "maxId": 4}]), "vlanTrunk[0].maxId"),
    ];
    for (trunk, field) in cases {
        let case = json!({ "vlanTrunk": trunk });
        assert_invalid(&vlan_err(case.clone()), field, &case);
    }
    let e = vlan_err(json!({"vlanTrunk": [{"minID": 10, "maxID": 9}]}));
    assert!(e.to_string().contains("minID <= maxID"), "{e}");
    let e = vlan_err(json!({"vlanTrunk": [{"id": 4095}]}));
    assert!(e.to_string().contains("from 1 to 4094"), "{e}");
    let e = vlan_err(json!({"vlanTrunk": [{"minID": 3, "maxid": 4}]}));
    assert!(e.to_string().contains("did you mean \"maxID\""), "{e}");
}

#[test]
fn vlan_and_vlan_trunk_together() {
    // Harvester's trunk: vlan 0 with a trunk.
    let v = vlan_ok(json!({"vlan": 0, "vlanTrunk": [{"id": 200}]}));
    assert_eq!((v.vlan, v.trunk), (0, ranges(&[(200, 200)])));
    // A non-zero vlan with a trunk is refused, as the reference bridge
    // plugin refuses it ("cannot set vlan and vlanTrunk at the same time").
    let case = json!({"vlan": 100, "vlanTrunk": [{"id": 200}]});
    let e = vlan_err(case.clone());
    assert_invalid(&e, "vlan", &case);
    assert!(e.to_string().contains("vlanTrunk"), "{e}");
    // An empty trunk is no trunk: an access port.
    let v = vlan_ok(json!({"vlan": 100, "vlanTrunk": []}));
    assert_eq!((v.vlan, v.trunk.len()), (100, 0));
}

#[test]
fn vlan_options_mtu_promisc_dns() {
    let v = vlan_ok(json!({
        "mtu": 9000, "promiscMode": false,
        "dns": {"nameservers": ["192.168.0.1"], "search": ["lab"]}
    }));
    assert_eq!((v.mtu, v.promisc), (Some(9000), false));
    assert_eq!(v.dns.nameservers, ["192.168.0.1"]);
    assert_eq!(v.dns.search, ["lab"]);
    let v = vlan_ok(json!({"mtu": 576, "promiscMode": true}));
    assert_eq!((v.mtu, v.promisc), (Some(576), true));
    assert!(!vlan_ok(json!({})).promisc);
    for (extra, field) in [
        (json!({"mtu": 575}), "mtu"),
        (json!({"mtu": 9001}), "mtu"),
        (json!({"mtu": "1500"}), "mtu"),
        (json!({"promiscMode": "true"}), "promiscMode"),
        (json!({"promiscMode": 1}), "promiscMode"),
        (json!({"dns": {"nameservers": ["x"]}}), "dns.nameservers"),
    ] {
        assert_invalid(&vlan_err(extra.clone()), field, &extra);
    }
    let e = vlan_err(json!({"dns": {"server": ["1.1.1.1"]}}));
    assert_eq!(e.code(), 2);
}

#[test]
fn vlan_ipam_must_be_empty() {
    for ipam in [json!(null), json!({})] {
        assert!(
            parse_v(vl(json!({ "ipam": ipam })), Command::Add).is_ok(),
            "{ipam}"
        );
    }
    for ipam in [
        json!({"type": "host-local", "subnet": "10.0.0.0/24"}),
        json!({"type": "dhcp"}),
        json!({"type": "furrow"}),
        json!({"subnet": "10.0.0.0/24"}),
        json!("dhcp"),
        json!([]),
    ] {
        let case = json!({ "ipam": ipam });
        let e = vlan_err(case.clone());
        assert_invalid(&e, "ipam", &case);
        let msg = e.to_string();
        assert!(
            msg.contains("IPAM on VLAN networks is not supported yet") && msg.contains("{}"),
            "{msg}"
        );
    }
}

#[test]
fn keys_of_the_other_kind_are_code_2_saying_where_they_belong() {
    for (extra, key) in [
        (json!({"network": "mgmt"}), "network"),
        (json!({"ipMasq": true}), "ipMasq"),
        (json!({"ipMasq": false}), "ipMasq"),
    ] {
        let e = vlan_err(extra.clone());
        assert_eq!(e.code(), 2, "{extra}: {e}");
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("\"{key}\"")) && msg.contains("management network only"),
            "{msg}"
        );
    }
    // A VLAN key in a management config.
    let e = err(json!({"promiscMode": true}));
    assert_eq!(e.code(), 2);
    let msg = e.to_string();
    assert!(
        msg.contains("\"promiscMode\" = true") && msg.contains("VLAN networks only"),
        "{msg}"
    );
    // Every offending key is listed; the details list both kinds' keys.
    let e = vlan_err(json!({"network": "mgmt", "hairpinMode": true, "foo": 1}));
    let msg = e.to_string();
    assert!(
        msg.starts_with("unsupported fields in network config: "),
        "{msg}"
    );
    assert!(
        msg.contains("\"network\"")
            && msg.contains("\"hairpinMode\"")
            && msg.contains("\"foo\" = 1"),
        "{msg}"
    );
    assert!(e.details().contains("vlanTrunk"), "{}", e.details());
    assert!(e.details().contains("ipMasq"), "{}", e.details());
}

#[test]
fn bridge_plugin_options_are_code_2_in_both_kinds() {
    for key in [
        "isGateway",
        "isDefaultGateway",
        "forceAddress",
        "hairpinMode",
        "macspoofchk",
        "enabledad",
        "disableContainerInterface",
        "portIsolation",
        "preserveDefaultVlan",
    ] {
        for (kind, e) in [
            ("vlan", vlan_err(json!({ key: true }))),
            ("management", err(json!({ key: true }))),
        ] {
            assert_eq!(e.code(), 2, "{kind} {key}: {e}");
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("\"{key}\" = true"))
                    && msg.contains(&format!(
                        "Furrow does not support the bridge plugin's {key}"
                    )),
                "{kind}: {msg}"
            );
        }
    }
    // false is refused too: the key is not Furrow's.
    assert_eq!(vlan_err(json!({"isGateway": false})).code(), 2);
    let e = vlan_err(json!({"macspoofchk": true}));
    assert!(e.to_string().contains("port security"), "{e}");
}

#[test]
fn vlan_runtime_config_mac_needs_the_capability() {
    let rc = json!({"mac": "52:54:00:12:34:56"});
    let c = parse_v(vl(json!({ "runtimeConfig": rc })), Command::Add).unwrap();
    assert_eq!(c.mac, None);
    let c = parse_v(
        vl(json!({"capabilities": {"mac": true}, "runtimeConfig": rc})),
        Command::Add,
    )
    .unwrap();
    assert_eq!(c.mac.unwrap().to_string(), "52:54:00:12:34:56");
    assert_eq!(vlan_of(&c).cluster_network, "data");
    let case =
        json!({"capabilities": {"mac": true}, "runtimeConfig": {"mac": "ff:ff:ff:ff:ff:ff"}});
    assert_invalid(&vlan_err(case.clone()), "runtimeConfig.mac", &case);
}

#[test]
fn vlan_del_is_lenient_and_stays_a_vlan_attachment() {
    let broken = with(json!({
        "bridge": "Bad_Bridge-br", "vlan": 5000, "vlanTrunk": [{"id": 0}], "mtu": 1,
        "promiscMode": "yes", "ipam": {"type": "dhcp"}, "network": "mgmt", "hairpinMode": true,
        "dns": 1, "prevResult": "garbage"
    }));
    assert!(parse_v(broken.clone(), Command::Add).is_err());
    let c = parse_v(broken.clone(), Command::Del).unwrap();
    assert_eq!(
        *vlan_of(&c),
        VlanAttachment {
            cluster_network: "Bad_Bridge".into(),
            vlan: 0,
            trunk: vec![],
            mtu: None,
            promisc: false,
            dhcp_trusted: false,
            port_security: true,
            allowed_address_pairs: vec![],
            dns: Dns::default(),
        }
    );
    let mut gc = broken.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    assert!(matches!(
        parse_v(gc, Command::Gc).unwrap().attachment,
        AttachmentSpec::Vlan(_)
    ));
    // What did parse is kept, even where ADD would refuse the combination.
    let c = parse_v(
        vl(json!({"clusterNetwork": "data", "bridge": "other-br", "vlan": 7, "vlanTrunk": [{"id": 8}], "promiscMode": true})),
        Command::Del,
    )
    .unwrap();
    let v = vlan_of(&c);
    assert_eq!(
        (
            v.cluster_network.as_str(),
            v.vlan,
            v.trunk.clone(),
            v.promisc
        ),
        ("data", 7, ranges(&[(8, 8)]), true)
    );
    // No cluster network at all: still a VLAN attachment, name unknown.
    let c = parse_v(with(json!({"vlan": 100})), Command::Del).unwrap();
    assert_eq!(vlan_of(&c).cluster_network, "");
    assert_eq!(vlan_of(&c).vlan, 100);
    // A bridge without the suffix is passed on as written.
    let c = parse_v(
        with(json!({"bridge": "br0", "clusterNetwork": 3})),
        Command::Del,
    )
    .unwrap();
    assert_eq!(vlan_of(&c).cluster_network, "br0");
    // What DEL needs stays strict.
    let e = parse_v(vl(json!({"name": "bad name"})), Command::Del).unwrap_err();
    assert_eq!(e.code(), 7);
}

#[test]
fn dhcp_trusted_marks_a_vm_that_may_answer_dhcp() {
    assert!(!vlan_ok(json!({"vlan": 100})).dhcp_trusted);
    assert!(vlan_ok(json!({"vlan": 100, "dhcpTrusted": true})).dhcp_trusted);
    let case = json!({"vlan": 100, "dhcpTrusted": "yes"});
    assert_invalid(&vlan_err(case.clone()), "dhcpTrusted", &case);
}

#[test]
fn port_security_is_on_by_default_and_pairs_are_validated() {
    let v = vlan_ok(json!({"vlan": 100}));
    assert!(v.port_security && v.allowed_address_pairs.is_empty());
    assert!(!vlan_ok(json!({"vlan": 100, "portSecurity": false})).port_security);
    let v = vlan_ok(json!({"vlan": 100, "allowedAddressPairs": [
        {"ipAddress": "10.0.0.100"},
        {"ipAddress": "10.1.0.0/24", "macAddress": "52:54:00:00:00:99"},
        {"ipAddress": "fd00::100"}
    ]}));
    assert_eq!(v.allowed_address_pairs.len(), 3);
    assert_eq!(
        v.allowed_address_pairs[0].ip_address.to_string(),
        "10.0.0.100/32"
    );
    assert_eq!(
        v.allowed_address_pairs[1]
            .mac_address
            .map(|m| m.to_string()),
        Some("52:54:00:00:00:99".to_string())
    );
    assert_eq!(v.allowed_address_pairs[2].ip_address.prefix_len(), 128);
    for (case, field) in [
        (json!({"portSecurity": "no"}), "portSecurity"),
        (
            json!({"allowedAddressPairs": {"ipAddress": "10.0.0.1"}}),
            "allowedAddressPairs",
        ),
        (
            json!({"allowedAddressPairs": ["10.0.0.1"]}),
            "allowedAddressPairs[0]",
        ),
        (
            json!({"allowedAddressPairs": [{"ip": "10.0.0.1"}]}),
            "allowedAddressPairs[0].ip",
        ),
        (
            json!({"allowedAddressPairs": [{"macAddress": "52:54:00:00:00:01"}]}),
            "allowedAddressPairs[0].ipAddress",
        ),
        (
            json!({"allowedAddressPairs": [{"ipAddress": "10.0.0.300"}]}),
            "allowedAddressPairs[0].ipAddress",
        ),
        (
            json!({"allowedAddressPairs": [{"ipAddress": "10.0.0.5/24"}]}),
            "allowedAddressPairs[0].ipAddress",
        ),
        (
            json!({"allowedAddressPairs": [{"ipAddress": "224.0.0.5"}]}),
            "allowedAddressPairs[0].ipAddress",
        ),
        (
            json!({"allowedAddressPairs": [{"ipAddress": "10.0.0.1"}, {"ipAddress": "10.0.0.1/32"}]}),
            "allowedAddressPairs[1].ipAddress",
        ),
        (
            json!({"allowedAddressPairs": [{"ipAddress": "10.0.0.1", "macAddress": "01:00:5e:00:00:01"}]}),
            "allowedAddressPairs[0].macAddress",
        ),
        (
            json!({"allowedAddressPairs": [{"ipAddress": "10.0.0.1", "macAddress": "nope"}]}),
            "allowedAddressPairs[0].macAddress",
        ),
        (
            json!({"portSecurity": false, "allowedAddressPairs": [{"ipAddress": "10.0.0.1"}]}),
            "allowedAddressPairs",
        ),
    ] {
        let mut c = case.clone();
        c["vlan"] = json!(100);
        assert_invalid(&vlan_err(c.clone()), field, &c);
    }
    // The bridge plugin's macspoofchk is refused, pointing at portSecurity.
    let e = vlan_err(json!({"vlan": 100, "macspoofchk": true}));
    assert_eq!(e.code(), 2);
    assert!(e.to_string().contains("portSecurity"), "{e}");
}
