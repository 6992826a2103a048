//! The Kubernetes manifests under manifests/: they parse; the CRDs are the
//! ones the Rust types generate; every example resource passes its CRD's
//! schema (as the API server would apply it) and netd's own validation;
//! every NetworkAttachmentDefinition's config is accepted by the built
//! `furrow` binary (`--validate-config`, ADD's parser, no netd); the
//! deployment uses only flags netd has and RBAC covers every kind.
//! Nothing here needs root or a cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use furrow_api::crd;
use furrow_api::resource::{
    BgpPeer, ClusterNetwork, FieldError, IpPool, ManagementNetwork, VirtualIp, VirtualIpPool,
    VirtualMachineNetworkConfig, VlanConfig, VlanInterface, API_VERSION, KINDS,
};
use furrow_tests::bins;
use serde_json::{json, Map, Value};

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

/// Every file under `dir` with one of `exts`, sorted.
fn files(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| exts.contains(&x))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The documents of a (multi-document) YAML text; empty documents skipped.
fn yaml_docs(text: &str) -> Result<Vec<Value>, String> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for d in serde_norway::Deserializer::from_str(text) {
        let v = Value::deserialize(d).map_err(|e| e.to_string())?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// Every YAML document under manifests/, with the file it came from.
fn all_docs() -> Vec<(PathBuf, Value)> {
    files(&manifests_dir(), &["yaml", "yml"])
        .into_iter()
        .flat_map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let docs = yaml_docs(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            docs.into_iter().map(move |d| (p.clone(), d))
        })
        .collect()
}

fn rel(p: &Path) -> String {
    p.strip_prefix(manifests_dir())
        .unwrap_or(p)
        .display()
        .to_string()
}

#[test]
fn every_manifest_parses() {
    let yaml = files(&manifests_dir(), &["yaml", "yml"]);
    // crds (9), deploy (3), nad (4), examples (9) at least: never vacuous.
    assert!(yaml.len() >= 25, "only {} YAML files found", yaml.len());
    for p in &yaml {
        let text = std::fs::read_to_string(p).unwrap();
        let docs = yaml_docs(&text).unwrap_or_else(|e| panic!("{}: {e}", rel(p)));
        assert!(!docs.is_empty(), "{}: no documents", rel(p));
        for (i, d) in docs.iter().enumerate() {
            for key in ["apiVersion", "kind"] {
                assert!(
                    d.get(key).is_some_and(Value::is_string),
                    "{} document {i}: no {key}",
                    rel(p)
                );
            }
            assert!(
                d.pointer("/metadata/name").is_some_and(Value::is_string),
                "{} document {i}: no metadata.name",
                rel(p)
            );
        }
    }
    for p in files(&manifests_dir(), &["conflist", "conf", "json"]) {
        let text = std::fs::read_to_string(&p).unwrap();
        serde_json::from_str::<Value>(&text).unwrap_or_else(|e| panic!("{}: {e}", rel(&p)));
    }
}

#[test]
fn yaml_parser_refuses_broken_yaml() {
    // So `every_manifest_parses` can fail: a bad indent, a tab, an
    // unclosed flow list.
    for bad in ["a: 1\n b: 2\n", "a:\n\t- 1\n", "a: [1, 2\n"] {
        assert!(yaml_docs(bad).is_err(), "{bad:?} parsed");
    }
    assert_eq!(yaml_docs("a: 1\n---\nb: 2\n").unwrap().len(), 2);
}

const REGENERATE: &str = "cargo run -p furrow-api --features schema --bin furrow-crdgen";

/// Compares the generated CRDs with a directory's files: the differences,
/// each a line for the failure message.
fn crd_differences(dir: &Path) -> Vec<String> {
    let want = crd::all();
    let mut diffs = Vec::new();
    for (name, text) in &want {
        match std::fs::read_to_string(dir.join(name)) {
            Ok(have) if &have == text => {}
            Ok(have) => {
                let line = have
                    .lines()
                    .zip(text.lines())
                    .position(|(a, b)| a != b)
                    .map_or_else(
                        || "length".to_string(),
                        |i| format!("line {}: {:?}", i + 1, text.lines().nth(i).unwrap_or("")),
                    );
                diffs.push(format!("{name} differs (first at {line})"));
            }
            Err(_) => diffs.push(format!("{name} is missing")),
        }
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            if !want.iter().any(|(n, _)| *n == name) {
                diffs.push(format!("{name} is not generated from any kind"));
            }
        }
    }
    diffs
}

#[test]
fn crds_are_in_sync_with_the_types() {
    let diffs = crd_differences(&manifests_dir().join("crds"));
    assert!(
        diffs.is_empty(),
        "manifests/crds/ is out of date with furrow-api's types:\n  {}\nregenerate with: {REGENERATE}",
        diffs.join("\n  ")
    );
}

#[test]
fn crd_sync_check_notices_a_changed_file() {
    // The same comparison on a copy with one field gone must complain.
    let dir = std::env::temp_dir().join(format!("furrow-crds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in crd::all() {
        std::fs::write(dir.join(&name), text).unwrap();
    }
    assert!(crd_differences(&dir).is_empty());
    let f = dir.join("network.furrow.io_clusternetworks.yaml");
    let text = std::fs::read_to_string(&f).unwrap();
    let cut = text.replace("macAgingSeconds", "macAgeingSeconds");
    assert_ne!(cut, text);
    std::fs::write(&f, cut).unwrap();
    let diffs = crd_differences(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(diffs.len(), 1, "{diffs:?}");
    assert!(diffs[0].contains("clusternetworks"), "{diffs:?}");
}

/// The checked-in CRDs by kind (what an administrator applies).
fn crds_by_kind() -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for p in files(&manifests_dir().join("crds"), &["yaml"]) {
        for d in yaml_docs(&std::fs::read_to_string(&p).unwrap()).unwrap() {
            let kind = d["spec"]["names"]["kind"].as_str().unwrap().to_string();
            out.insert(kind, d);
        }
    }
    out
}

/// A CRD's structural schema as a JSON Schema the validator understands:
/// OpenAPI's `nullable` and Kubernetes' int-or-string spelt out.
fn as_json_schema(v: &Value) -> Value {
    match v {
        Value::Object(o) => {
            let mut m: Map<String, Value> = o
                .iter()
                .filter(|(k, _)| *k != "nullable" && !k.starts_with("x-kubernetes-"))
                .map(|(k, v)| {
                    let v = match k.as_str() {
                        // Maps of subschemas and subschemas themselves.
                        "properties" => Value::Object(
                            v.as_object()
                                .unwrap()
                                .iter()
                                .map(|(k, s)| (k.clone(), as_json_schema(s)))
                                .collect(),
                        ),
                        "items" | "additionalProperties" | "not" => as_json_schema(v),
                        "oneOf" | "anyOf" | "allOf" => {
                            Value::Array(v.as_array().unwrap().iter().map(as_json_schema).collect())
                        }
                        _ => v.clone(),
                    };
                    (k.clone(), v)
                })
                .collect();
            if o.get("x-kubernetes-int-or-string") == Some(&json!(true)) {
                m.insert("type".into(), json!(["integer", "string"]));
            }
            // nullable: null is one more value of the type (and of an enum).
            if o.get("nullable") == Some(&json!(true)) {
                if let Some(Value::String(t)) = m.get("type").cloned() {
                    m.insert("type".into(), json!([t, "null"]));
                }
                if let Some(Value::Array(e)) = m.get_mut("enum") {
                    e.push(Value::Null);
                }
            }
            Value::Object(m)
        }
        other => other.clone(),
    }
}

/// Fields the API server would prune (silently drop) from `doc`: present,
/// but neither in the schema's properties nor allowed by
/// additionalProperties or preserve-unknown-fields. In an example they are
/// a mistake. `metadata` is the API server's own business.
fn pruned_fields(doc: &Value, schema: &Value, path: &str, out: &mut Vec<String>) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true)) {
        return;
    }
    match doc {
        Value::Object(o) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let extra = schema.get("additionalProperties");
            for (k, v) in o {
                if path.is_empty() && k == "metadata" {
                    continue;
                }
                let p = format!("{path}.{k}");
                match (props.and_then(|ps| ps.get(k)), extra) {
                    (Some(s), _) => pruned_fields(v, s, &p, out),
                    (None, Some(s)) if s.is_object() => pruned_fields(v, s, &p, out),
                    _ => out.push(p),
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = schema.get("items") {
                for (i, v) in a.iter().enumerate() {
                    pruned_fields(v, items, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// What the API server would say about `doc` under its kind's CRD.
fn schema_errors(crds: &BTreeMap<String, Value>, doc: &Value) -> Vec<String> {
    let kind = doc["kind"].as_str().unwrap_or("");
    let Some(c) = crds.get(kind) else {
        return vec![format!("no CRD for kind {kind:?}")];
    };
    let version = &c["spec"]["versions"][0];
    let (group, v) = API_VERSION.split_once('/').unwrap();
    assert_eq!(c["spec"]["group"], json!(group));
    assert_eq!(version["name"], json!(v));
    let schema = &version["schema"]["openAPIV3Schema"];
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&as_json_schema(schema))
        .unwrap_or_else(|e| panic!("{kind}: the CRD schema does not compile: {e}"));
    let mut errs: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    let mut pruned = Vec::new();
    pruned_fields(doc, schema, "", &mut pruned);
    errs.extend(pruned.into_iter().map(|p| format!("{p}: unknown field")));
    errs
}

/// netd's own check of a document: its kind's type (unknown fields
/// refused) and validate().
fn furrow_errors(doc: &Value) -> Vec<String> {
    fn check<T: serde::de::DeserializeOwned>(
        doc: &Value,
        validate: impl Fn(&T) -> Vec<FieldError>,
    ) -> Vec<String> {
        match serde_json::from_value::<T>(doc.clone()) {
            Ok(t) => validate(&t).iter().map(|e| e.to_string()).collect(),
            Err(e) => vec![format!("does not parse: {e}")],
        }
    }
    if let Err(e) = furrow_api::resource::document_kind(doc) {
        return vec![e.to_string()];
    }
    match doc["kind"].as_str().unwrap() {
        ManagementNetwork::KIND => check::<ManagementNetwork>(doc, |r| r.validate()),
        ClusterNetwork::KIND => check::<ClusterNetwork>(doc, |r| r.validate()),
        VlanConfig::KIND => check::<VlanConfig>(doc, |r| r.validate()),
        VlanInterface::KIND => check::<VlanInterface>(doc, |r| r.validate()),
        IpPool::KIND => check::<IpPool>(doc, |r| r.validate()),
        VirtualMachineNetworkConfig::KIND => {
            check::<VirtualMachineNetworkConfig>(doc, |r| r.validate())
        }
        VirtualIp::KIND => check::<VirtualIp>(doc, |r| r.validate()),
        VirtualIpPool::KIND => check::<VirtualIpPool>(doc, |r| r.validate()),
        BgpPeer::KIND => check::<BgpPeer>(doc, |r| r.validate()),
        other => vec![format!("kind {other:?} has no check here")],
    }
}

/// Every Furrow resource anywhere under manifests/ (the examples, and the
/// control-plane VIP beside its static pod).
fn furrow_resources() -> Vec<(PathBuf, Value)> {
    all_docs()
        .into_iter()
        .filter(|(_, d)| d["apiVersion"] == json!(API_VERSION))
        .collect()
}

#[test]
fn examples_validate_against_the_crds_and_furrow() {
    let crds = crds_by_kind();
    let resources = furrow_resources();
    let mut seen = BTreeMap::new();
    for (p, d) in &resources {
        let kind = d["kind"].as_str().unwrap();
        *seen.entry(kind.to_string()).or_insert(0) += 1;
        let errs = schema_errors(&crds, d);
        assert!(errs.is_empty(), "{}: CRD schema: {errs:#?}", rel(p));
        let errs = furrow_errors(d);
        assert!(errs.is_empty(), "{}: furrow: {errs:#?}", rel(p));
    }
    for (kind, _) in KINDS {
        assert!(
            seen.contains_key(*kind),
            "no example of {kind} under manifests/"
        );
    }
}

/// One example, by kind.
fn example(kind: &str) -> Value {
    furrow_resources()
        .into_iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"] == json!(kind))
        .unwrap_or_else(|| panic!("no {kind} example"))
}

#[test]
fn crd_schemas_refuse_bad_examples() {
    let crds = crds_by_kind();
    let refused = |doc: &Value, at: &str| {
        let errs = schema_errors(&crds, doc);
        assert!(
            errs.iter().any(|e| e.starts_with(at)),
            "expected an error at {at}, got {errs:?} for {doc}"
        );
    };
    let mut d = example("VlanInterface");
    d["spec"]["vlan"] = json!(4095);
    refused(&d, "/spec/vlan");
    let mut d = example("ClusterNetwork");
    d["spec"]["backend"] = json!("openvswitch");
    refused(&d, "/spec/backend");
    let mut d = example("ClusterNetwork");
    d["metadata"]["name"] = json!("thirteenchars");
    refused(&d, "/metadata/name");
    let mut d = example("VlanConfig");
    d["spec"].as_object_mut().unwrap().remove("uplink");
    refused(&d, "/spec");
    let mut d = example("VlanConfig");
    d["spec"]["uplink"]["linkAttributes"]["mtu"] = json!("jumbo");
    refused(&d, "/spec/uplink/linkAttributes/mtu");
    let mut d = example("VlanConfig");
    d["spec"]["uplink"]["nics"] = json!([]);
    refused(&d, "/spec/uplink/nics");
    let mut d = example("VlanConfig");
    d["spec"]["clusterNetwork"] = json!("thirteenchars");
    refused(&d, "/spec/clusterNetwork");
    let mut d = example("IPPool");
    d["spec"]["ipv4Config"]["dns"] = json!(["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]);
    refused(&d, "/spec/ipv4Config/dns");
    let mut d = example("IPPool");
    d["spec"]["ipv4Config"]["serverIP"] = json!("10.100.0.300");
    refused(&d, "/spec/ipv4Config/serverIP");
    let mut d = example("VirtualMachineNetworkConfig");
    d["spec"]["networkConfigs"][0]["macAddress"] = json!("52:54:00:12:34");
    refused(&d, "/spec/networkConfigs/0/macAddress");
    let mut d = example("ManagementNetwork");
    d["spec"]["mtuu"] = json!(1400);
    refused(&d, ".spec.mtuu");
    d.as_object_mut().unwrap().remove("spec");
    let errs = schema_errors(&crds, &d);
    assert!(
        errs.iter()
            .any(|e| e.contains("\"spec\" is a required property")),
        "{errs:?}"
    );
    // nullable: an absent Option may be written as null.
    let mut d = example("VirtualIP");
    d["spec"]["vlanInterface"] = Value::Null;
    assert!(schema_errors(&crds, &d).is_empty());
}

#[test]
fn furrow_refuses_bad_examples() {
    let mut d = example("VlanInterface");
    d["spec"]["address"] = json!("10.100.0.0/24");
    let errs = furrow_errors(&d);
    assert!(
        errs.iter().any(|e| e.starts_with("spec.address")),
        "{errs:?}"
    );
    let mut d = example("IPPool");
    d["spec"]["ipv4Config"]["serverIP"] = json!("10.100.0.20"); // inside the range
    assert!(!furrow_errors(&d).is_empty());
}

/// Runs `furrow --validate-config` on a config; Ok(its summary) or
/// Err(the CNI error document).
fn furrow_validate(config: &str) -> Result<Value, Value> {
    use std::io::Write;
    let mut child = Command::new(bins::furrow())
        .arg("--validate-config")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running furrow");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(config.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "furrow printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    if out.status.success() {
        Ok(doc)
    } else {
        Err(doc)
    }
}

/// The network kind a NAD's Harvester type label promises.
fn kind_of_label(t: Option<&str>) -> &'static str {
    match t {
        Some("L2VlanNetwork") => "vlan",
        Some("UntaggedNetwork") => "untagged",
        Some("L2VlanTrunkNetwork") => "trunk",
        _ => "management",
    }
}

/// What Multus and Furrow need of a NetworkAttachmentDefinition: its
/// config a JSON string of type furrow that the plugin accepts, and its
/// Harvester labels agreeing with the config. Ok(the network kind).
fn check_nad(nad: &Value) -> Result<String, String> {
    if nad["apiVersion"] != json!("k8s.cni.cncf.io/v1") {
        return Err(format!("apiVersion {}", nad["apiVersion"]));
    }
    let config = nad["spec"]["config"]
        .as_str()
        .ok_or("spec.config is not a string (Multus wants the config as a JSON string)")?;
    let parsed: Value =
        serde_json::from_str(config).map_err(|e| format!("spec.config is not JSON: {e}"))?;
    if parsed["type"] != json!("furrow") {
        return Err(format!("type {}", parsed["type"]));
    }
    let summary = furrow_validate(config).map_err(|e| format!("furrow refused it: {e}"))?;
    let c = &summary["configs"][0];
    let labels = &nad["metadata"]["labels"];
    let kind = c["kind"].as_str().unwrap().to_string();
    let want = kind_of_label(labels["network.harvesterhci.io/type"].as_str());
    if kind != want {
        return Err(format!("a {kind} network labelled as {want}"));
    }
    if let Some(cn) = labels["network.harvesterhci.io/clusternetwork"].as_str() {
        if c["clusterNetwork"] != json!(cn) {
            return Err(format!(
                "labelled for cluster network {cn:?}, config names {}",
                c["clusterNetwork"]
            ));
        }
    }
    if let Some(route) = nad["metadata"]["annotations"]["network.harvesterhci.io/route"].as_str() {
        let r: Value = serde_json::from_str(route)
            .map_err(|e| format!("route annotation is not JSON: {e}"))?;
        if !matches!(r["mode"].as_str(), Some("auto" | "manual")) {
            return Err(format!("route mode {}", r["mode"]));
        }
    }
    Ok(kind)
}

fn nads() -> Vec<(PathBuf, Value)> {
    all_docs()
        .into_iter()
        .filter(|(_, d)| d["kind"] == json!("NetworkAttachmentDefinition"))
        .collect()
}

#[test]
fn nad_examples_are_accepted_by_the_furrow_binary() {
    let mut kinds = Vec::new();
    for (p, nad) in nads() {
        match check_nad(&nad) {
            Ok(k) => kinds.push(k),
            Err(e) => panic!("{}: {e}", rel(&p)),
        }
    }
    kinds.sort();
    assert_eq!(kinds, ["management", "trunk", "untagged", "vlan"]);
}

#[test]
fn nad_check_refuses_a_bad_vlan_id_and_mismatched_labels() {
    let vlan = nads()
        .into_iter()
        .map(|(_, d)| d)
        .find(|d| d["metadata"]["name"] == json!("vlan100"))
        .expect("the vlan100 NAD");
    let with_config = |f: &dyn Fn(&mut Value)| {
        let mut nad = vlan.clone();
        let mut c: Value = serde_json::from_str(nad["spec"]["config"].as_str().unwrap()).unwrap();
        f(&mut c);
        nad["spec"]["config"] = json!(c.to_string());
        nad
    };
    let e = check_nad(&with_config(&|c| c["vlan"] = json!(4095))).unwrap_err();
    assert!(e.contains("furrow refused") && e.contains("vlan"), "{e}");
    assert!(e.contains("\"code\":7"), "{e}");
    let e = check_nad(&with_config(&|c| c["vlan"] = json!(0))).unwrap_err();
    assert!(e.contains("untagged network labelled as vlan"), "{e}");
    let e = check_nad(&with_config(&|c| c["bridge"] = json!("other-br"))).unwrap_err();
    assert!(e.contains("cluster network"), "{e}");
    let e = check_nad(&with_config(&|c| c["isGateway"] = json!(true))).unwrap_err();
    assert!(e.contains("\"code\":2"), "{e}");
    let mut nad = vlan.clone();
    nad["spec"]["config"] = json!({"cniVersion": "0.3.1"});
    assert!(check_nad(&nad).unwrap_err().contains("JSON string"));
}

/// The containers (init containers too) of a DaemonSet or Pod.
fn containers(doc: &Value) -> Vec<Value> {
    let spec = if doc["kind"] == json!("Pod") {
        &doc["spec"]
    } else {
        &doc["spec"]["template"]["spec"]
    };
    ["initContainers", "containers"]
        .iter()
        .filter_map(|k| spec[*k].as_array())
        .flatten()
        .cloned()
        .collect()
}

fn deploy_doc(kind: &str, name: &str) -> Value {
    all_docs()
        .into_iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"] == json!(kind) && d["metadata"]["name"] == json!(name))
        .unwrap_or_else(|| panic!("no {kind} {name} under manifests/"))
}

#[test]
fn deployment_uses_only_flags_netd_has() {
    let help = Command::new(bins::netd()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    assert!(help.contains("--vip-only"), "{help}");
    let ds = deploy_doc("DaemonSet", "furrow-netd");
    let vip = deploy_doc("Pod", "furrow-vip");
    let mut checked = 0;
    for doc in [&ds, &vip] {
        for c in containers(doc) {
            if c["command"] != json!(["/usr/local/bin/netd"]) {
                continue;
            }
            for a in c["args"].as_array().unwrap() {
                let a = a.as_str().unwrap();
                let flag = a.split('=').next().unwrap();
                assert!(flag.starts_with("--"), "{a}: write flags as --flag=value");
                assert!(
                    help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                    "netd has no {flag}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 10, "only {checked} flags checked");
    let vip_args = containers(&vip)[0]["args"].clone();
    assert!(vip_args.as_array().unwrap().contains(&json!("--vip-only")));
}

#[test]
fn daemonset_installs_the_plugin_and_a_conflist_furrow_accepts() {
    let ds = deploy_doc("DaemonSet", "furrow-netd");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], json!(true));
    let init = &pod["initContainers"][0];
    let script = init["args"][0].as_str().unwrap();
    assert!(script.contains("/host/opt/cni/bin/furrow"), "{script}");
    assert!(script.contains("furrow --validate-config"), "{script}");
    let netd = &pod["containers"][0];
    assert_eq!(netd["securityContext"]["privileged"], json!(true));
    let env_node = netd["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == json!("NODE_NAME"))
        .expect("NODE_NAME");
    assert_eq!(
        env_node["valueFrom"]["fieldRef"]["fieldPath"],
        json!("spec.nodeName")
    );
    let mounts: Vec<&str> = netd["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    for m in [
        "/sys/fs/bpf",
        "/run/furrow",
        "/var/lib/furrow",
        "/run/netns",
    ] {
        assert!(mounts.contains(&m), "netd lacks {m}: {mounts:?}");
    }
    // The conflist the init container installs is the one in cni/, and
    // the plugin accepts both.
    let cm = deploy_doc("ConfigMap", "furrow-cni-config");
    let in_cm = cm["data"]["10-furrow-mgmt.conflist"].as_str().unwrap();
    let file =
        std::fs::read_to_string(manifests_dir().join("cni/10-furrow-mgmt.conflist")).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(in_cm).unwrap(),
        serde_json::from_str::<Value>(&file).unwrap()
    );
    for p in files(&manifests_dir().join("cni"), &["conflist", "conf"]) {
        let text = std::fs::read_to_string(&p).unwrap();
        let out = furrow_validate(&text).unwrap_or_else(|e| panic!("{}: {e}", rel(&p)));
        assert_eq!(out["configs"][0]["kind"], json!("management"));
    }
}

#[test]
fn rbac_covers_every_kind_and_no_more() {
    let role = deploy_doc("ClusterRole", "furrow-netd");
    let rules = role["rules"].as_array().unwrap();
    let verbs_for = |resource: &str| -> Vec<String> {
        rules
            .iter()
            .filter(|r| r["apiGroups"] == json!(["network.furrow.io"]))
            .filter(|r| {
                r["resources"]
                    .as_array()
                    .unwrap()
                    .contains(&json!(resource))
            })
            .flat_map(|r| r["verbs"].as_array().unwrap().clone())
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    for (kind, plural) in KINDS {
        let v = verbs_for(plural);
        for want in ["get", "list", "watch"] {
            assert!(v.contains(&want.to_string()), "{kind}: no {want}");
        }
        for never in ["delete", "deletecollection", "*"] {
            assert!(!v.contains(&never.to_string()), "{kind}: {never}");
        }
        let s = verbs_for(&format!("{plural}/status"));
        assert!(s.contains(&"update".to_string()), "{kind}/status: {s:?}");
    }
    // No wildcard anywhere, and secrets are none of netd's business.
    for r in rules {
        for key in ["apiGroups", "resources", "verbs"] {
            assert!(!r[key].as_array().unwrap().contains(&json!("*")), "{r}");
        }
        assert!(!r["resources"]
            .as_array()
            .unwrap()
            .contains(&json!("secrets")));
    }
}

/// The ```yaml blocks of docs/kubernetes.md: the page promises complete
/// YAML, so it gets the same checks as the manifests.
#[test]
fn kubernetes_doc_yaml_is_valid() {
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/kubernetes.md");
    let text = std::fs::read_to_string(&page).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```yaml") => current = Some(String::new()),
            (Some(b), "```") => {
                blocks.push(std::mem::take(b));
                current = None;
            }
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(blocks.len() >= 4, "only {} yaml blocks", blocks.len());
    let crds = crds_by_kind();
    let mut kinds = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        let docs = yaml_docs(b).unwrap_or_else(|e| panic!("yaml block {i}: {e}"));
        for d in docs {
            let kind = d["kind"].as_str().unwrap_or("").to_string();
            if d["apiVersion"] == json!(API_VERSION) {
                let errs = schema_errors(&crds, &d);
                assert!(errs.is_empty(), "block {i} {kind}: CRD schema: {errs:#?}");
                let errs = furrow_errors(&d);
                assert!(errs.is_empty(), "block {i} {kind}: furrow: {errs:#?}");
            } else if kind == "NetworkAttachmentDefinition" {
                check_nad(&d).unwrap_or_else(|e| panic!("block {i}: {e}"));
            }
            kinds.push(kind);
        }
    }
    for want in [
        "ClusterNetwork",
        "VlanConfig",
        "NetworkAttachmentDefinition",
        "VirtualMachine",
    ] {
        assert!(kinds.iter().any(|k| k == want), "no {want} on the page");
    }
    // The VM on the page is the one in manifests/kubevirt/.
    let vm = deploy_doc("VirtualMachine", "vm1");
    let on_page = blocks
        .iter()
        .flat_map(|b| yaml_docs(b).unwrap())
        .find(|d| d["kind"] == json!("VirtualMachine"))
        .unwrap();
    assert_eq!(vm, on_page);
}

/// The API server refuses a CRD whose defaults do not validate against
/// their own schema (and applies them to every object): check each one.
#[test]
fn crd_defaults_validate_against_their_schemas() {
    fn walk(v: &Value, path: &str, found: &mut Vec<(String, Value, Value)>) {
        let Some(o) = v.as_object() else { return };
        if let Some(d) = o.get("default") {
            found.push((path.to_string(), d.clone(), v.clone()));
        }
        if let Some(Value::Object(p)) = o.get("properties") {
            for (k, c) in p {
                walk(c, &format!("{path}.{k}"), found);
            }
        }
        for key in ["items", "additionalProperties"] {
            if let Some(c) = o.get(key) {
                walk(c, &format!("{path}[{key}]"), found);
            }
        }
    }
    let mut found = Vec::new();
    for (kind, c) in crds_by_kind() {
        walk(
            &c["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
            &kind,
            &mut found,
        );
    }
    assert!(found.len() >= 10, "only {} defaults", found.len());
    for (path, default, schema) in found {
        let mut schema = schema;
        schema.as_object_mut().unwrap().remove("default");
        let v = jsonschema::options()
            .should_validate_formats(true)
            .build(&as_json_schema(&schema))
            .unwrap();
        let errs: Vec<String> = v.iter_errors(&default).map(|e| e.to_string()).collect();
        assert!(errs.is_empty(), "{path}: default {default}: {errs:?}");
    }
}
