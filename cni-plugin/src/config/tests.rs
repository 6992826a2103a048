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
    // Harvester's bridge NAD keys are not (yet) Furrow's.
    let e = err(json!({"bridge": "mgmt-br", "promiscMode": true, "vlan": 100}));
    assert_eq!(e.code(), 2);
    assert!(e.to_string().contains("\"bridge\" = \"mgmt-br\""));
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
