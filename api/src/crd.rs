//! CustomResourceDefinitions for every Furrow kind, generated from the
//! Rust types (feature `schema`), so the API server checks a resource
//! against the very shapes netd parses. `furrow-crdgen` writes them to
//! manifests/crds/; a test in furrow-tests fails when the checked-in files
//! and these types disagree.
//!
//! schemars produces OpenAPI 3 schemas; Kubernetes accepts only
//! *structural* ones, so [`structural`] rewrites what it does not take:
//! no `$ref` (subschemas are inlined), no `additionalProperties: false`
//! beside `properties` (from `deny_unknown_fields`: the API server prunes
//! unknown fields instead, and netd's own parser refuses them), enums as
//! plain `enum` lists instead of `oneOf` constants, no formats Kubernetes
//! does not know.

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use crate::resource::{
    BgpPeer, BgpPeerSpec, ClusterNetwork, ClusterNetworkSpec, IpPool, IpPoolSpec,
    ManagementNetwork, ManagementNetworkSpec, ManagementNetworkStatus, VirtualIp, VirtualIpPool,
    VirtualIpPoolSpec, VirtualIpSpec, VirtualMachineNetworkConfig, VlanConfig, VlanConfigSpec,
    VlanInterface, VlanInterfaceSpec, VmNetworkConfigSpec, API_VERSION, CLUSTER_NETWORK_NAME_MAX,
    GROUP,
};

/// Where a kind's objects live in the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Cluster,
    /// Namespaced as Harvester's counterpart is (vm-dhcp-controller's
    /// IPPool and VirtualMachineNetworkConfig live beside the VMs).
    Namespaced,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::Cluster => "Cluster",
            Scope::Namespaced => "Namespaced",
        }
    }
}

/// A printer column: `kubectl get` header, JSON path, and OpenAPI type.
type Column = (&'static str, &'static str, &'static str);

/// Everything about one kind's CRD that the Rust type does not say.
pub struct CrdSpec {
    pub kind: &'static str,
    pub plural: &'static str,
    pub scope: Scope,
    pub short_names: &'static [&'static str],
    columns: &'static [Column],
    spec: fn() -> Value,
    status: fn() -> Value,
    /// Restrictions of `metadata.name` beyond Kubernetes' own.
    name_max_len: Option<usize>,
}

impl CrdSpec {
    /// The CRD object's name: `<plural>.<group>`.
    pub fn name(&self) -> String {
        format!("{}.{GROUP}", self.plural)
    }

    /// The file the generator writes under manifests/crds/, named as
    /// controller-gen names them.
    pub fn file_name(&self) -> String {
        format!("{GROUP}_{}.yaml", self.plural)
    }
}

/// Status nobody has typed yet: kept whole, so netd may write what it
/// wants without the API server pruning it.
fn untyped_status() -> Value {
    json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

/// One entry per kind in [`crate::resource::KINDS`]; `crd_specs_cover_every_kind` keeps it
/// that way.
pub fn specs() -> Vec<CrdSpec> {
    const AGE: Column = ("Age", ".metadata.creationTimestamp", "date");
    vec![
        CrdSpec {
            kind: ManagementNetwork::KIND,
            plural: ManagementNetwork::PLURAL,
            scope: Scope::Cluster,
            short_names: &["mgmtnet"],
            columns: &[
                ("CIDR", ".spec.clusterCIDR", "string"),
                ("Backend", ".spec.backend", "string"),
                ("MTU", ".spec.mtu", "integer"),
                ("Masquerade", ".spec.masquerade", "boolean"),
                AGE,
            ],
            spec: schema_of::<ManagementNetworkSpec>,
            status: schema_of::<ManagementNetworkStatus>,
            name_max_len: None,
        },
        CrdSpec {
            kind: ClusterNetwork::KIND,
            plural: ClusterNetwork::PLURAL,
            scope: Scope::Cluster,
            short_names: &[],
            columns: &[
                ("Backend", ".spec.backend", "string"),
                ("Description", ".spec.description", "string"),
                AGE,
            ],
            spec: schema_of::<ClusterNetworkSpec>,
            status: untyped_status,
            // Node devices are <name>-br and <name>-bo (15 characters).
            name_max_len: Some(CLUSTER_NETWORK_NAME_MAX),
        },
        CrdSpec {
            kind: VlanConfig::KIND,
            plural: VlanConfig::PLURAL,
            scope: Scope::Cluster,
            short_names: &[],
            columns: &[
                ("ClusterNetwork", ".spec.clusterNetwork", "string"),
                ("NICs", ".spec.uplink.nics", "string"),
                AGE,
            ],
            spec: schema_of::<VlanConfigSpec>,
            status: untyped_status,
            name_max_len: None,
        },
        CrdSpec {
            kind: VlanInterface::KIND,
            plural: VlanInterface::PLURAL,
            scope: Scope::Cluster,
            short_names: &["vif"],
            columns: &[
                ("ClusterNetwork", ".spec.clusterNetwork", "string"),
                ("VLAN", ".spec.vlan", "integer"),
                ("Address", ".spec.address", "string"),
                ("DHCP", ".spec.dhcp", "boolean"),
                AGE,
            ],
            spec: schema_of::<VlanInterfaceSpec>,
            status: untyped_status,
            name_max_len: None,
        },
        CrdSpec {
            kind: IpPool::KIND,
            plural: IpPool::PLURAL,
            scope: Scope::Namespaced,
            short_names: &[],
            columns: &[
                ("Network", ".spec.networkName", "string"),
                ("CIDR", ".spec.ipv4Config.cidr", "string"),
                ("Server", ".spec.ipv4Config.serverIP", "string"),
                AGE,
            ],
            spec: schema_of::<IpPoolSpec>,
            status: untyped_status,
            name_max_len: None,
        },
        CrdSpec {
            kind: VirtualMachineNetworkConfig::KIND,
            plural: VirtualMachineNetworkConfig::PLURAL,
            scope: Scope::Namespaced,
            short_names: &["vmnetcfg", "vmnc"],
            columns: &[("VM", ".spec.vmName", "string"), AGE],
            spec: schema_of::<VmNetworkConfigSpec>,
            status: untyped_status,
            name_max_len: None,
        },
        CrdSpec {
            kind: VirtualIp::KIND,
            plural: VirtualIp::PLURAL,
            scope: Scope::Cluster,
            short_names: &["vip"],
            columns: &[
                ("Address", ".spec.address", "string"),
                ("Pool", ".spec.pool", "string"),
                ("Mode", ".spec.mode", "string"),
                ("Interface", ".spec.interface", "string"),
                AGE,
            ],
            spec: schema_of::<VirtualIpSpec>,
            status: untyped_status,
            name_max_len: None,
        },
        CrdSpec {
            kind: VirtualIpPool::KIND,
            plural: VirtualIpPool::PLURAL,
            scope: Scope::Cluster,
            short_names: &["vippool"],
            columns: &[("Addresses", ".spec.addresses", "string"), AGE],
            spec: schema_of::<VirtualIpPoolSpec>,
            status: untyped_status,
            name_max_len: None,
        },
        CrdSpec {
            kind: BgpPeer::KIND,
            plural: BgpPeer::PLURAL,
            scope: Scope::Cluster,
            short_names: &[],
            columns: &[
                ("Peer", ".spec.peerAddress", "string"),
                ("PeerASN", ".spec.peerASN", "integer"),
                ("MyASN", ".spec.myASN", "integer"),
                AGE,
            ],
            spec: schema_of::<BgpPeerSpec>,
            status: untyped_status,
            name_max_len: None,
        },
    ]
}

/// `T`'s schema, inlined and made structural.
fn schema_of<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .into_generator();
    let mut v = generator.into_root_schema_for::<T>().to_value();
    structural(&mut v);
    v
}

/// Formats the Kubernetes API server knows (kube-openapi's registry);
/// any other (schemars' `uint16`, `ip`) is dropped: `minimum`/`maximum`
/// already say what `uint16` would.
const K8S_FORMATS: &[&str] = &[
    "int32",
    "int64",
    "float",
    "double",
    "byte",
    "date",
    "date-time",
    "duration",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uri",
    "uuid",
];

/// Rewrites a schemars schema into a structural one (see the module docs).
pub fn structural(v: &mut Value) {
    let Some(obj) = v.as_object_mut() else {
        return;
    };
    for key in ["properties", "patternProperties"] {
        if let Some(Value::Object(m)) = obj.get_mut(key) {
            m.values_mut().for_each(structural);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(c) = obj.get_mut(key) {
            structural(c);
        }
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(Value::Array(a)) = obj.get_mut(key) {
            a.iter_mut().for_each(structural);
        }
    }
    collapse_enum(obj);
    obj.remove("$schema");
    obj.remove("title");
    if obj.get("additionalProperties") == Some(&Value::Bool(false)) {
        obj.remove("additionalProperties");
    }
    if let Some(Value::String(f)) = obj.get("format") {
        if !K8S_FORMATS.contains(&f.as_str()) {
            obj.remove("format");
        }
    }
    // An absent Option needs no default; `default: null` would only make
    // the API server write nulls into objects.
    if obj.get("default") == Some(&Value::Null) {
        obj.remove("default");
    }
}

/// A unit enum with documented variants comes out of schemars as
/// `oneOf: [{type, enum: [v], description}, ...]`; Kubernetes forbids
/// types and descriptions inside `oneOf`, so it becomes one
/// `type: string, enum: [...]` with the variants' docs in the description.
fn collapse_enum(obj: &mut Map<String, Value>) {
    let Some(Value::Array(branches)) = obj.get("oneOf") else {
        return;
    };
    let mut values = Vec::new();
    let mut docs = Vec::new();
    for b in branches {
        let Some(Value::Array(e)) = b.get("enum") else {
            return;
        };
        for v in e {
            if let (Some(s), Some(Value::String(d))) = (v.as_str(), b.get("description")) {
                docs.push(format!("`{s}`: {d}"));
            }
            values.push(v.clone());
        }
    }
    if values.iter().any(|v| !v.is_string()) {
        return;
    }
    obj.remove("oneOf");
    obj.insert("type".into(), "string".into());
    obj.insert("enum".into(), Value::Array(values));
    if !docs.is_empty() {
        let mut d = obj
            .get("description")
            .and_then(Value::as_str)
            .map(|s| format!("{s}\n\n"))
            .unwrap_or_default();
        d.push_str(&docs.join("\n"));
        obj.insert("description".into(), d.into());
    }
}

/// The CRD of one kind, as a JSON value.
pub fn crd(s: &CrdSpec) -> Value {
    let (_, version) = API_VERSION
        .split_once('/')
        .expect("API_VERSION is group/version");
    let mut metadata = json!({"type": "object"});
    if let Some(max) = s.name_max_len {
        metadata["properties"] = json!({"name": {"type": "string", "maxLength": max}});
    }
    let columns: Vec<Value> = s
        .columns
        .iter()
        .map(|(name, path, ty)| json!({"name": name, "jsonPath": path, "type": ty}))
        .collect();
    let mut names = json!({
        "kind": s.kind,
        "listKind": format!("{}List", s.kind),
        "plural": s.plural,
        "singular": s.kind.to_ascii_lowercase(),
        // `kubectl get furrow` lists every Furrow resource.
        "categories": ["furrow"],
    });
    if !s.short_names.is_empty() {
        names["shortNames"] = json!(s.short_names);
    }
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": s.name(),
            "labels": {"app.kubernetes.io/part-of": "furrow"},
        },
        "spec": {
            "group": GROUP,
            "names": names,
            "scope": s.scope.as_str(),
            "versions": [{
                "name": version,
                "served": true,
                "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": format!("{}: see docs/resources.md.", s.kind),
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": metadata,
                        "spec": (s.spec)(),
                        "status": (s.status)(),
                    },
                }},
            }],
        },
    })
}

/// The header every generated file starts with.
pub const HEADER: &str = "# Generated from furrow-api's Rust types; do not edit.\n\
# Regenerate: cargo run -p furrow-api --features schema --bin furrow-crdgen\n";

/// A CRD as the YAML file the generator writes.
pub fn render(s: &CrdSpec) -> String {
    let yaml = serde_norway::to_string(&crd(s)).expect("a JSON value always serializes");
    format!("{HEADER}{yaml}")
}

/// Every CRD: (file name, contents).
pub fn all() -> Vec<(String, String)> {
    specs().iter().map(|s| (s.file_name(), render(s))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::KINDS;

    #[test]
    fn crd_specs_cover_every_kind() {
        let specs = specs();
        let ours: Vec<(&str, &str)> = specs.iter().map(|s| (s.kind, s.plural)).collect();
        assert_eq!(ours, KINDS.to_vec());
    }

    /// Walks a schema, calling `f` on every subschema with its path.
    fn walk(v: &Value, path: &str, f: &mut dyn FnMut(&str, &Map<String, Value>)) {
        let Some(o) = v.as_object() else { return };
        f(path, o);
        if let Some(Value::Object(p)) = o.get("properties") {
            for (k, c) in p {
                walk(c, &format!("{path}.{k}"), f);
            }
        }
        for key in ["items", "additionalProperties"] {
            if let Some(c) = o.get(key) {
                walk(c, &format!("{path}[{key}]"), f);
            }
        }
    }

    /// Kubernetes' structural schema rules that the rewrite is for: a type
    /// everywhere (unless preserve-unknown-fields), no $ref, no oneOf or
    /// anyOf carrying types, no `additionalProperties: false`.
    #[test]
    fn schemas_are_structural() {
        for s in specs() {
            let c = crd(&s);
            let root = &c["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
            walk(root, s.kind, &mut |path, o| {
                let preserve = o.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
                assert!(
                    o.get("type").is_some_and(Value::is_string) || preserve,
                    "{path}: no type: {o:?}"
                );
                for bad in ["$ref", "oneOf", "anyOf", "allOf", "definitions", "$defs"] {
                    assert!(!o.contains_key(bad), "{path}: {bad}: {o:?}");
                }
                assert_ne!(o.get("additionalProperties"), Some(&json!(false)), "{path}");
                if o.contains_key("additionalProperties") {
                    assert!(!o.contains_key("properties"), "{path}");
                }
            });
        }
    }

    #[test]
    fn serde_attributes_shape_the_schema() {
        let spec = schema_of::<ManagementNetworkSpec>();
        let p = &spec["properties"];
        // rename and rename_all
        assert!(p.get("clusterCIDR").is_some() && p.get("vxlanVNI").is_some());
        assert!(p.get("nodeSubnetPrefixLength").is_some());
        // defaults
        assert_eq!(p["clusterCIDR"]["default"], json!("10.52.0.0/16"));
        assert_eq!(p["backend"]["default"], json!("vxlan"));
        // enums as a plain list; Option as nullable
        assert_eq!(p["backend"]["enum"], json!(["vxlan", "host-gw"]));
        assert_eq!(p["backend"]["type"], json!("string"));
        assert_eq!(p["mtu"]["nullable"], json!(true));
        assert_eq!(p["mtu"]["maximum"], json!(9000));
        // every field has a default: nothing required
        assert!(spec.get("required").is_none());
        let vc = schema_of::<VlanConfigSpec>();
        assert_eq!(vc["required"], json!(["clusterNetwork", "uplink"]));
        let bond = &vc["properties"]["uplink"]["properties"]["bondOptions"]["properties"]["mode"];
        assert!(bond["enum"].as_array().unwrap().contains(&json!("802.3ad")));
    }
}
