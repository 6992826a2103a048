//! One Kubernetes object → the document netd stores for it: Furrow's CRDs
//! become the resource documents the API path would store (same
//! validation, same normalisation), NetworkAttachmentDefinitions with a
//! `furrow` config become a [`NetworkAttachment`]. Pure: no I/O, no clock.

use std::net::Ipv4Addr;

use furrow_api::cni::{VlanRange, VLAN_MAX};
use furrow_api::resource::{self, validate_name, CLUSTER_NETWORK_NAME_MAX, MTU_MAX, MTU_MIN};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::resources;
use crate::store::keys;

pub const NAD_API_VERSION: &str = "k8s.cni.cncf.io/v1";
pub const NAD_KIND: &str = "NetworkAttachmentDefinition";
pub const NAD_PLURAL: &str = "network-attachment-definitions";

/// Harvester's NAD labels (its network controller sets them from the
/// config; its webhook keeps them consistent) and its route annotation.
pub const LABEL_CLUSTER_NETWORK: &str = "network.harvesterhci.io/clusternetwork";
pub const LABEL_TYPE: &str = "network.harvesterhci.io/type";
pub const LABEL_VLAN_ID: &str = "network.harvesterhci.io/vlan-id";
pub const ANNOTATION_ROUTE: &str = "network.harvesterhci.io/route";
/// kubectl's copy of what was applied: bookkeeping of the client, not
/// part of the resource, and never in a document applied through netd.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Which watched collection an object belongs to: `(apiVersion, kind)`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Collection {
    pub api_version: String,
    pub kind: String,
}

impl Collection {
    pub fn new(api_version: &str, kind: &str) -> Self {
        Collection {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
        }
    }

    pub fn nads() -> Self {
        Collection::new(NAD_API_VERSION, NAD_KIND)
    }

    /// Every collection netd watches: each Furrow kind, and NADs.
    pub fn all() -> Vec<Collection> {
        let mut out: Vec<Collection> = resource::KINDS
            .iter()
            .map(|(k, _)| Collection::new(resource::API_VERSION, k))
            .collect();
        out.push(Collection::nads());
        out
    }

    /// The collection whose documents live at this store key.
    pub fn of_key(key: &str) -> Option<Collection> {
        if let Some(rest) = key.strip_prefix("/furrow/resources/") {
            let kind = rest.split('/').next()?;
            return resource::KINDS
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(k, _)| Collection::new(resource::API_VERSION, k));
        }
        key.starts_with(keys::NETWORK_ATTACHMENTS)
            .then(Collection::nads)
    }
}

/// An object's identity: collection, namespace (None when cluster-scoped)
/// and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub collection: Collection,
    pub namespace: Option<String>,
    pub name: String,
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.collection.kind, self.name),
            None => write!(f, "{} {}", self.collection.kind, self.name),
        }
    }
}

/// The metadata the state logic orders and identifies objects by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub obj: ObjectRef,
    pub uid: String,
    /// The API server's resourceVersion; etcd revisions in practice, so
    /// ordered within a collection.
    pub resource_version: u64,
    pub creation_timestamp: Option<String>,
}

/// An object or document that cannot be used, with the field at fault.
/// `field` is empty when `expected` already names the fields (the
/// resource validation's message, which can list several).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub expected: String,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.expected)
        } else {
            write!(f, "{}: {}", self.field, self.expected)
        }
    }
}

impl std::error::Error for Invalid {}

impl Invalid {
    pub fn new(field: impl Into<String>, expected: impl Into<String>) -> Self {
        Invalid {
            field: field.into(),
            expected: expected.into(),
        }
    }
}

fn str_at<'a>(obj: &'a Value, ptr: &str) -> Option<&'a str> {
    obj.pointer(ptr).and_then(|v| v.as_str())
}

/// Reads and checks an object's identity and version.
pub fn object_info(obj: &Value) -> Result<ObjectInfo, Invalid> {
    let api_version = str_at(obj, "/apiVersion")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Invalid::new("apiVersion", "missing"))?;
    let kind = str_at(obj, "/kind")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Invalid::new("kind", "missing"))?;
    let name = str_at(obj, "/metadata/name")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Invalid::new("metadata.name", "missing"))?;
    let uid = str_at(obj, "/metadata/uid")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Invalid::new("metadata.uid", "missing"))?;
    let rv = str_at(obj, "/metadata/resourceVersion")
        .ok_or_else(|| Invalid::new("metadata.resourceVersion", "missing"))?;
    let resource_version = parse_resource_version(rv)?;
    Ok(ObjectInfo {
        obj: ObjectRef {
            collection: Collection::new(api_version, kind),
            namespace: str_at(obj, "/metadata/namespace")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            name: name.to_string(),
        },
        uid: uid.to_string(),
        resource_version,
        creation_timestamp: str_at(obj, "/metadata/creationTimestamp").map(str::to_string),
    })
}

pub fn parse_resource_version(rv: &str) -> Result<u64, Invalid> {
    rv.parse().map_err(|_| {
        Invalid::new(
            "metadata.resourceVersion",
            format!("{rv:?} is not a resource version (expected a decimal number)"),
        )
    })
}

/// What one object contributes to netd's desired state.
#[derive(Debug, Clone, PartialEq)]
pub enum Translated {
    /// The document stored at `key`.
    Document { key: String, doc: Value },
    /// Not for netd (a NAD of another plugin).
    NotOurs,
}

/// Translates one object. An error names the field at fault.
pub fn translate(obj: &Value) -> Result<Translated, Invalid> {
    let info = object_info(obj)?;
    let c = &info.obj.collection;
    if c.api_version == resource::API_VERSION {
        return resource_document(obj).map(|(key, doc)| Translated::Document { key, doc });
    }
    if c.api_version == NAD_API_VERSION && c.kind == NAD_KIND {
        let ns = info.obj.namespace.as_deref().unwrap_or("default");
        return Ok(match network_attachment(obj, ns, &info.obj.name)? {
            Some(nad) => Translated::Document {
                key: keys::network_attachment(ns, &info.obj.name),
                doc: serde_json::to_value(&nad).expect("attachments serialize"),
            },
            None => Translated::NotOurs,
        });
    }
    Err(Invalid::new(
        "apiVersion",
        format!("{} {} is not watched by netd", c.api_version, c.kind),
    ))
}

/// A Furrow custom object → the document the API path stores for the same
/// resource: validated and normalised by `resources::validate` (status,
/// Kubernetes-only metadata and the resourceVersion dropped; defaults
/// filled in). The object's creationTimestamp is kept, as the store keeps
/// the time a resource was first applied.
pub fn resource_document(obj: &Value) -> Result<(String, Value), Invalid> {
    // The validation's message names the fields at fault.
    let v = resources::validate(obj).map_err(|e| Invalid::new("", e.msg))?;
    let mut doc = v.doc;
    if let Some(meta) = doc.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.remove("resourceVersion");
        let drop_annotations = match meta.get_mut("annotations").and_then(|a| a.as_object_mut()) {
            Some(a) => {
                a.remove(LAST_APPLIED);
                a.is_empty()
            }
            None => false,
        };
        if drop_annotations {
            meta.remove("annotations");
        }
    }
    Ok((resource_key(v.kind, &v.name), doc))
}

fn resource_key(kind: &str, name: &str) -> String {
    keys::resource(kind, name)
}

/// How a VM port on the network is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AttachmentType {
    /// The NAT'ed management network (no cluster network named).
    Management,
    /// An access port on one VLAN (Harvester's L2VlanNetwork).
    Vlan,
    /// Untagged (Harvester's UntaggedNetwork).
    Untagged,
    /// A trunk of VLAN ranges (Harvester's L2VlanTrunkNetwork).
    Trunk,
}

impl AttachmentType {
    /// Harvester's `network.harvesterhci.io/type` label value.
    pub fn harvester_type(self) -> Option<&'static str> {
        match self {
            AttachmentType::Management => None,
            AttachmentType::Vlan => Some("L2VlanNetwork"),
            AttachmentType::Untagged => Some("UntaggedNetwork"),
            AttachmentType::Trunk => Some("L2VlanTrunkNetwork"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RouteMode {
    /// Discover subnet and gateway by DHCP (`netctl discover`).
    Auto,
    /// Given by the operator.
    Manual,
}

/// Harvester's `network.harvesterhci.io/route` annotation, the parts an
/// operator sets (`connectivity`, `serverIPAddr` are Harvester's status
/// and are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    pub mode: RouteMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<Ipv4Net>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
}

/// What netd keeps of a NAD whose config is Furrow's: which network its
/// ports join, as the `furrow` plugin would read the same config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkAttachment {
    pub namespace: String,
    pub name: String,
    /// The CNI network name (the config's `name`): ports are recorded
    /// under it, IPPools name it in `networkName`.
    pub network_name: String,
    #[serde(rename = "type")]
    pub attachment_type: AttachmentType,
    /// The management network named by the config's `network`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management_network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_network: Option<String>,
    /// Access VLAN; 0 for untagged, trunk and management.
    #[serde(default)]
    pub vlan: u16,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trunk: Vec<VlanRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Route>,
}

const BRIDGE_SUFFIX: &str = "-br";

/// A NAD → its [`NetworkAttachment`], or None when its config is not
/// Furrow's (`type` is not `furrow`, in a single config or a conflist).
/// Only the keys netd needs are read; the plugin checks the rest on ADD.
pub fn network_attachment(
    obj: &Value,
    namespace: &str,
    name: &str,
) -> Result<Option<NetworkAttachment>, Invalid> {
    let Some(text) = obj.pointer("/spec/config") else {
        // Multus allows an empty config (it then reads a file by name):
        // nothing netd can know about.
        return Ok(None);
    };
    let text = text
        .as_str()
        .ok_or_else(|| Invalid::new("spec.config", "expected a string holding JSON"))?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    let top: Value = serde_json::from_str(text)
        .map_err(|e| Invalid::new("spec.config", format!("not JSON: {e}")))?;
    let (conf, prefix, network_name) = match top.get("plugins") {
        Some(Value::Array(plugins)) => {
            let Some((i, p)) = plugins
                .iter()
                .enumerate()
                .find(|(_, p)| p.get("type").and_then(|t| t.as_str()) == Some("furrow"))
            else {
                return Ok(None);
            };
            (p, format!("spec.config.plugins[{i}]."), top.get("name"))
        }
        Some(_) => return Err(Invalid::new("spec.config.plugins", "expected a list")),
        None => {
            if top.get("type").and_then(|t| t.as_str()) != Some("furrow") {
                return Ok(None);
            }
            (&top, "spec.config.".to_string(), top.get("name"))
        }
    };
    let field = |k: &str| format!("{prefix}{k}");
    let network_name = match network_name {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => {
            return Err(Invalid::new(
                "spec.config.name",
                "missing: the CNI network name",
            ))
        }
    };
    let opt_str = |k: &str| -> Result<Option<String>, Invalid> {
        match conf.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Invalid::new(field(k), "expected a string")),
        }
    };
    let cluster_network = match (opt_str("clusterNetwork")?, opt_str("bridge")?) {
        (Some(cn), _) => Some((cn, field("clusterNetwork"))),
        (None, Some(br)) => match br.rsplit_once(BRIDGE_SUFFIX) {
            Some((cn, "")) if !cn.is_empty() => Some((cn.to_string(), field("bridge"))),
            _ => {
                return Err(Invalid::new(
                    field("bridge"),
                    format!("{br:?}: expected \"<clusterNetwork>-br\""),
                ))
            }
        },
        (None, None) => None,
    };
    if let Some((cn, f)) = &cluster_network {
        let mut errs = Vec::new();
        validate_name(f, cn, CLUSTER_NETWORK_NAME_MAX, &mut errs);
        if let Some(e) = errs.into_iter().next() {
            return Err(Invalid::new(e.field, e.expected));
        }
    }
    let vlan = match conf.get("vlan") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .filter(|n| *n <= u64::from(VLAN_MAX))
            .ok_or_else(|| Invalid::new(field("vlan"), format!("{v}: expected 0-{VLAN_MAX}")))?
            as u16,
    };
    let trunk = trunk_ranges(conf.get("vlanTrunk"), &field("vlanTrunk"))?;
    if vlan != 0 && !trunk.is_empty() {
        return Err(Invalid::new(
            field("vlanTrunk"),
            "a trunk cannot also have an access vlan: set vlan to 0",
        ));
    }
    let mtu = match conf.get("mtu") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|n| (u64::from(MTU_MIN)..=u64::from(MTU_MAX)).contains(n))
                .ok_or_else(|| {
                    Invalid::new(field("mtu"), format!("{v}: expected {MTU_MIN}-{MTU_MAX}"))
                })? as u32,
        ),
    };
    let attachment_type = match (&cluster_network, vlan, trunk.is_empty()) {
        (None, 0, true) => AttachmentType::Management,
        (None, _, _) => {
            return Err(Invalid::new(
                field("clusterNetwork"),
                "missing: a VLAN or trunk config names its cluster network (clusterNetwork, or bridge \"<clusterNetwork>-br\")",
            ))
        }
        (Some(_), _, false) => AttachmentType::Trunk,
        (Some(_), 0, true) => AttachmentType::Untagged,
        (Some(_), _, true) => AttachmentType::Vlan,
    };
    let management_network = if attachment_type == AttachmentType::Management {
        opt_str("network")?
    } else {
        None
    };
    let cluster_network = cluster_network.map(|(cn, _)| cn);
    check_harvester_labels(obj, attachment_type, cluster_network.as_deref(), vlan)?;
    let route = route_annotation(obj)?;
    Ok(Some(NetworkAttachment {
        namespace: namespace.to_string(),
        name: name.to_string(),
        network_name,
        attachment_type,
        management_network,
        cluster_network,
        vlan,
        trunk,
        mtu,
        route,
    }))
}

/// `vlanTrunk` as the reference bridge plugin has it: `{"id": n}` or
/// `{"minID": a, "maxID": b}` entries; sorted and merged like the plugin's.
fn trunk_ranges(v: Option<&Value>, field: &str) -> Result<Vec<VlanRange>, Invalid> {
    let list = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(l)) => l,
        Some(_) => return Err(Invalid::new(field, "expected a list")),
    };
    let mut out = Vec::new();
    for (i, e) in list.iter().enumerate() {
        let f = |k: &str| format!("{field}[{i}].{k}");
        let id = |k: &str| -> Result<Option<u16>, Invalid> {
            match e.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .filter(|n| (1..=u64::from(VLAN_MAX)).contains(n))
                    .map(|n| Some(n as u16))
                    .ok_or_else(|| Invalid::new(f(k), format!("{v}: expected 1-{VLAN_MAX}"))),
            }
        };
        let r = match (id("id")?, id("minID")?, id("maxID")?) {
            (Some(n), None, None) => VlanRange { min: n, max: n },
            (None, Some(a), Some(b)) if a <= b => VlanRange { min: a, max: b },
            (None, Some(a), Some(b)) => {
                return Err(Invalid::new(f("maxID"), format!("{b} is below minID {a}")))
            }
            _ => {
                return Err(Invalid::new(
                    format!("{field}[{i}]"),
                    "expected {\"id\": n} or {\"minID\": a, \"maxID\": b}",
                ))
            }
        };
        out.push(r);
    }
    out.sort_by_key(|r| (r.min, r.max));
    let mut merged: Vec<VlanRange> = Vec::new();
    for r in out {
        match merged.last_mut() {
            Some(last) if u32::from(r.min) <= u32::from(last.max) + 1 => {
                last.max = last.max.max(r.max)
            }
            _ => merged.push(r),
        }
    }
    Ok(merged)
}

fn label_field(key: &str) -> String {
    format!("metadata.labels[{key:?}]")
}

/// Harvester's labels, where present, must say what the config says:
/// a NAD whose label and config disagree is refused rather than guessed.
fn check_harvester_labels(
    obj: &Value,
    t: AttachmentType,
    cluster_network: Option<&str>,
    vlan: u16,
) -> Result<(), Invalid> {
    let labels = obj.pointer("/metadata/labels");
    let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(|v| v.as_str());
    if let Some(cn) = label(LABEL_CLUSTER_NETWORK) {
        if Some(cn) != cluster_network {
            return Err(Invalid::new(
                label_field(LABEL_CLUSTER_NETWORK),
                format!(
                    "{cn:?} differs from the config's cluster network {}",
                    cluster_network.map_or("(none)".to_string(), |c| format!("{c:?}"))
                ),
            ));
        }
    }
    if let Some(ty) = label(LABEL_TYPE) {
        let known = ["L2VlanNetwork", "UntaggedNetwork", "L2VlanTrunkNetwork"];
        if !known.contains(&ty) {
            return Err(Invalid::new(
                label_field(LABEL_TYPE),
                format!("{ty:?}: expected one of {}", known.join(", ")),
            ));
        }
        if t.harvester_type() != Some(ty) {
            return Err(Invalid::new(
                label_field(LABEL_TYPE),
                format!(
                    "{ty:?} but the config is {}",
                    t.harvester_type().unwrap_or("a management network")
                ),
            ));
        }
    }
    if let Some(id) = label(LABEL_VLAN_ID) {
        let n: u16 = id.parse().map_err(|_| {
            Invalid::new(
                label_field(LABEL_VLAN_ID),
                format!("{id:?}: expected 0-{VLAN_MAX}"),
            )
        })?;
        if t != AttachmentType::Trunk && n != vlan {
            return Err(Invalid::new(
                label_field(LABEL_VLAN_ID),
                format!("{n} differs from the config's vlan {vlan}"),
            ));
        }
    }
    Ok(())
}

fn route_annotation(obj: &Value) -> Result<Option<Route>, Invalid> {
    let Some(raw) = obj
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(ANNOTATION_ROUTE))
    else {
        return Ok(None);
    };
    let field = format!("metadata.annotations[{ANNOTATION_ROUTE:?}]");
    let text = raw
        .as_str()
        .ok_or_else(|| Invalid::new(&field, "expected a string holding JSON"))?;
    let v: Value =
        serde_json::from_str(text).map_err(|e| Invalid::new(&field, format!("not JSON: {e}")))?;
    let sub = |k: &str| format!("{field}.{k}");
    let mode = match v.get("mode").and_then(|m| m.as_str()) {
        Some("auto") => RouteMode::Auto,
        Some("manual") => RouteMode::Manual,
        other => {
            return Err(Invalid::new(
                sub("mode"),
                format!("{other:?}: expected \"auto\" or \"manual\""),
            ))
        }
    };
    let opt = |k: &str| match v.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Invalid::new(sub(k), "expected a string")),
    };
    let cidr = opt("cidr")?
        .map(|s| {
            s.parse::<Ipv4Net>()
                .ok()
                .filter(|n| n.network() == n.addr())
                .ok_or_else(|| {
                    Invalid::new(sub("cidr"), format!("{s:?}: expected an IPv4 network"))
                })
        })
        .transpose()?;
    let gateway = opt("gateway")?
        .map(|s| {
            s.parse::<Ipv4Addr>().map_err(|_| {
                Invalid::new(sub("gateway"), format!("{s:?}: expected an IPv4 address"))
            })
        })
        .transpose()?;
    if mode == RouteMode::Manual {
        let (Some(c), Some(g)) = (cidr, gateway) else {
            let missing = if cidr.is_none() { "cidr" } else { "gateway" };
            return Err(Invalid::new(
                sub(missing),
                "missing: manual mode needs cidr and gateway",
            ));
        };
        if !c.contains(&g) {
            return Err(Invalid::new(
                sub("gateway"),
                format!("{g} is outside cidr {c}"),
            ));
        }
    }
    Ok(Some(Route {
        mode,
        cidr,
        gateway,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nad(config: Value, labels: Value, annotations: Value) -> Value {
        json!({
            "apiVersion": NAD_API_VERSION, "kind": NAD_KIND,
            "metadata": {"name": "net", "namespace": "vms", "uid": "u1", "resourceVersion": "5",
                         "labels": labels, "annotations": annotations},
            "spec": {"config": config.to_string()},
        })
    }

    fn attach(config: Value) -> Result<Option<NetworkAttachment>, Invalid> {
        network_attachment(&nad(config, json!({}), json!({})), "vms", "net")
    }

    #[test]
    fn harvester_configs_with_type_furrow() {
        let base = json!({"cniVersion": "0.3.1", "name": "v", "type": "furrow", "bridge": "data-br", "promiscMode": true, "ipam": {}});
        let mut vlan = base.clone();
        vlan["vlan"] = 100.into();
        let a = attach(vlan).unwrap().unwrap();
        assert_eq!((a.attachment_type, a.vlan), (AttachmentType::Vlan, 100));
        assert_eq!(a.cluster_network.as_deref(), Some("data"));
        let u = attach(base.clone()).unwrap().unwrap();
        assert_eq!(u.attachment_type, AttachmentType::Untagged);
        let mut trunk = base.clone();
        trunk["vlan"] = 0.into();
        trunk["vlanTrunk"] =
            json!([{"minID": 3100, "maxID": 3104}, {"id": 200}, {"id": 3105}, {"id": 201}]);
        let t = attach(trunk).unwrap().unwrap();
        assert_eq!(t.attachment_type, AttachmentType::Trunk);
        // Sorted and merged.
        assert_eq!(
            t.trunk,
            vec![
                VlanRange { min: 200, max: 201 },
                VlanRange {
                    min: 3100,
                    max: 3105
                }
            ]
        );
        // Only the last "-br" is the suffix; clusterNetwork wins over bridge.
        let mut b = base.clone();
        b["bridge"] = "a-br-br".into();
        assert_eq!(
            attach(b).unwrap().unwrap().cluster_network.as_deref(),
            Some("a-br")
        );
        let mut c = base.clone();
        c["clusterNetwork"] = "other".into();
        assert_eq!(
            attach(c).unwrap().unwrap().cluster_network.as_deref(),
            Some("other")
        );
        // The management network.
        let m = attach(
            json!({"cniVersion": "1.0.0", "name": "pods", "type": "furrow", "network": "mgmt"}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(m.attachment_type, AttachmentType::Management);
        assert_eq!(m.management_network.as_deref(), Some("mgmt"));
        // A conflist whose furrow plugin is second; the name is the list's.
        let list = json!({"cniVersion": "1.0.0", "name": "chained", "plugins": [
            {"type": "tuning"}, {"type": "furrow", "clusterNetwork": "data", "vlan": 7}]});
        let l = attach(list).unwrap().unwrap();
        assert_eq!((l.network_name.as_str(), l.vlan), ("chained", 7));
    }

    #[test]
    fn other_plugins_are_not_ours() {
        assert_eq!(
            attach(json!({"name": "b", "type": "bridge", "bridge": "x-br"})).unwrap(),
            None
        );
        assert_eq!(
            attach(json!({"name": "l", "plugins": [{"type": "macvlan"}]})).unwrap(),
            None
        );
        let mut empty = nad(json!({}), json!({}), json!({}));
        empty["spec"] = json!({});
        assert_eq!(network_attachment(&empty, "vms", "net").unwrap(), None);
    }

    #[test]
    fn bad_configs_name_the_field() {
        let cases = [
            (
                json!({"name": "v", "type": "furrow", "bridge": "cni0"}),
                "spec.config.bridge",
            ),
            (
                json!({"name": "v", "type": "furrow", "clusterNetwork": "Data"}),
                "spec.config.clusterNetwork",
            ),
            (
                json!({"name": "v", "type": "furrow", "bridge": "d-br", "vlan": 4095}),
                "spec.config.vlan",
            ),
            (
                json!({"name": "v", "type": "furrow", "bridge": "d-br", "vlan": 5, "vlanTrunk": [{"id": 6}]}),
                "spec.config.vlanTrunk",
            ),
            (
                json!({"name": "v", "type": "furrow", "bridge": "d-br", "vlanTrunk": [{"minID": 9, "maxID": 3}]}),
                "spec.config.vlanTrunk[0].maxID",
            ),
            (
                json!({"name": "v", "type": "furrow", "bridge": "d-br", "vlanTrunk": [{"id": 0}]}),
                "spec.config.vlanTrunk[0].id",
            ),
            (
                json!({"name": "v", "type": "furrow", "bridge": "d-br", "mtu": 100}),
                "spec.config.mtu",
            ),
            (
                json!({"name": "v", "type": "furrow", "vlan": 5}),
                "spec.config.clusterNetwork",
            ),
            (
                json!({"type": "furrow", "bridge": "d-br"}),
                "spec.config.name",
            ),
            (
                json!({"name": "l", "plugins": [{"type": "x"}, {"type": "furrow", "vlan": "7", "bridge": "d-br"}]}),
                "spec.config.plugins[1].vlan",
            ),
        ];
        for (conf, field) in cases {
            let e = attach(conf.clone()).unwrap_err();
            assert_eq!(e.field, field, "{conf}: {e}");
        }
        let mut not_json = nad(json!({}), json!({}), json!({}));
        not_json["spec"]["config"] = "{".into();
        assert_eq!(
            network_attachment(&not_json, "vms", "net")
                .unwrap_err()
                .field,
            "spec.config"
        );
    }

    #[test]
    fn harvester_labels_must_agree_with_the_config() {
        let conf = json!({"name": "v", "type": "furrow", "bridge": "data-br", "vlan": 100});
        let ok = json!({LABEL_CLUSTER_NETWORK: "data", LABEL_TYPE: "L2VlanNetwork", LABEL_VLAN_ID: "100"});
        assert!(network_attachment(&nad(conf.clone(), ok, json!({})), "vms", "net").is_ok());
        for (labels, label) in [
            (
                json!({LABEL_CLUSTER_NETWORK: "mgmt"}),
                LABEL_CLUSTER_NETWORK,
            ),
            (json!({LABEL_TYPE: "UntaggedNetwork"}), LABEL_TYPE),
            (json!({LABEL_TYPE: "L3Network"}), LABEL_TYPE),
            (json!({LABEL_VLAN_ID: "101"}), LABEL_VLAN_ID),
            (json!({LABEL_VLAN_ID: "x"}), LABEL_VLAN_ID),
        ] {
            let e = network_attachment(&nad(conf.clone(), labels, json!({})), "vms", "net")
                .unwrap_err();
            assert_eq!(e.field, format!("metadata.labels[{label:?}]"), "{e}");
        }
    }

    #[test]
    fn route_annotation() {
        let conf = json!({"name": "v", "type": "furrow", "bridge": "data-br", "vlan": 100});
        let route = |r: Value| {
            network_attachment(
                &nad(
                    conf.clone(),
                    json!({}),
                    json!({ANNOTATION_ROUTE: r.to_string()}),
                ),
                "vms",
                "net",
            )
        };
        let r = route(json!({"mode": "manual", "cidr": "10.1.0.0/24", "gateway": "10.1.0.1", "connectivity": "true", "serverIPAddr": ""}))
            .unwrap()
            .unwrap()
            .route
            .unwrap();
        assert_eq!(r.mode, RouteMode::Manual);
        assert_eq!(r.gateway, Some("10.1.0.1".parse().unwrap()));
        let a = route(json!({"mode": "auto", "cidr": "", "gateway": ""}))
            .unwrap()
            .unwrap()
            .route
            .unwrap();
        assert_eq!(
            a,
            Route {
                mode: RouteMode::Auto,
                cidr: None,
                gateway: None
            }
        );
        let field = |k: &str| format!("metadata.annotations[{ANNOTATION_ROUTE:?}].{k}");
        for (r, f) in [
            (json!({"mode": "static"}), field("mode")),
            (
                json!({"mode": "manual", "cidr": "10.1.0.0/24"}),
                field("gateway"),
            ),
            (
                json!({"mode": "manual", "gateway": "10.1.0.1"}),
                field("cidr"),
            ),
            (
                json!({"mode": "manual", "cidr": "10.1.0.5/24", "gateway": "10.1.0.1"}),
                field("cidr"),
            ),
            (
                json!({"mode": "manual", "cidr": "10.1.0.0/24", "gateway": "10.2.0.1"}),
                field("gateway"),
            ),
            (json!({"mode": "auto", "gateway": 5}), field("gateway")),
        ] {
            assert_eq!(route(r.clone()).unwrap_err().field, f, "{r}");
        }
    }

    #[test]
    fn object_identity_is_checked() {
        let obj = json!({"apiVersion": resource::API_VERSION, "kind": "ClusterNetwork",
            "metadata": {"name": "data", "uid": "u", "resourceVersion": "12"}, "spec": {}});
        let i = object_info(&obj).unwrap();
        assert_eq!((i.resource_version, i.obj.namespace), (12, None));
        for (ptr, field) in [
            ("/metadata/uid", "metadata.uid"),
            ("/metadata/name", "metadata.name"),
            ("/metadata/resourceVersion", "metadata.resourceVersion"),
        ] {
            let mut o = obj.clone();
            *o.pointer_mut(ptr).unwrap() = Value::Null;
            assert_eq!(object_info(&o).unwrap_err().field, field);
        }
        let mut o = obj.clone();
        o["metadata"]["resourceVersion"] = "abc".into();
        assert_eq!(
            object_info(&o).unwrap_err().field,
            "metadata.resourceVersion"
        );
        let mut o = obj.clone();
        o["apiVersion"] = "v1".into();
        o["kind"] = "ConfigMap".into();
        assert_eq!(translate(&o).unwrap_err().field, "apiVersion");
    }

    #[test]
    fn resource_documents_drop_kubernetes_bookkeeping() {
        let obj = json!({"apiVersion": resource::API_VERSION, "kind": "ClusterNetwork",
            "metadata": {"name": "data", "uid": "u", "resourceVersion": "12", "generation": 3,
                         "namespace": "x", "creationTimestamp": "2026-01-01T00:00:00Z",
                         "annotations": {LAST_APPLIED: "{}", "team": "net"},
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": {}, "status": {"x": 1}});
        let (key, doc) = resource_document(&obj).unwrap();
        assert_eq!(key, "/furrow/resources/ClusterNetwork/data");
        assert_eq!(
            doc["metadata"],
            json!({"name": "data", "annotations": {"team": "net"}, "creationTimestamp": "2026-01-01T00:00:00Z"})
        );
        assert!(doc.get("status").is_none());
        assert_eq!(doc["spec"]["macAgingSeconds"], 300, "defaults filled in");
        let mut bad = obj.clone();
        bad["spec"]["macAgingSeconds"] = 5.into();
        let e = resource_document(&bad).unwrap_err();
        assert!(e.to_string().contains("spec.macAgingSeconds"), "{e}");
    }
}
