//! Furrow's resources: CRD-shaped documents (apiVersion, kind, metadata,
//! spec, status), kept close to Harvester's shapes where those exist.
//! docs/resources.md describes each kind for operators.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ApiError;

pub const GROUP: &str = "network.furrow.io";
pub const API_VERSION: &str = "network.furrow.io/v1alpha1";

/// Names follow Kubernetes' DNS-1123 label rules.
pub const MAX_NAME_LEN: usize = 63;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Store revision of the last write; set by netd, optional on apply
    /// (when given, the apply only succeeds if it still matches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
}

/// A resource document with its kind's typed spec and status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource<S, T = serde_json::Value> {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: S,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<T>,
}

/// One invalid field: its path (e.g. `spec.clusterCIDR`) and what is
/// expected there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub expected: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.expected)
    }
}

pub fn field_errors_to_api(kind: &str, name: &str, errs: &[FieldError]) -> ApiError {
    let list: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    ApiError::new(
        crate::error::code::INVALID_CONFIG,
        format!("{kind} {name:?} is invalid: {}", list.join("; ")),
    )
}

/// Checks a DNS-1123 label: lower-case alphanumerics and '-', starting and
/// ending alphanumeric, at most `max` characters.
pub fn validate_name(field: &str, name: &str, max: usize, errs: &mut Vec<FieldError>) {
    let ok = !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        errs.push(FieldError {
            field: field.to_string(),
            expected: format!(
                "{name:?} is not a valid name: expected 1-{max} lower-case letters, digits or '-', starting and ending with a letter or digit"
            ),
        });
    }
}

/// Adds "`field`: expected ..." to a validation's findings.
fn err(errs: &mut Vec<FieldError>, field: &str, expected: impl Into<String>) {
    errs.push(FieldError {
        field: field.into(),
        expected: expected.into(),
    });
}

/// A resource of `kind` with default metadata but its name.
fn new_resource<S, T>(kind: &str, name: &str, spec: S) -> Resource<S, T> {
    Resource {
        api_version: API_VERSION.to_string(),
        kind: kind.to_string(),
        metadata: ObjectMeta {
            name: name.to_string(),
            ..Default::default()
        },
        spec,
        status: None,
    }
}

mod cluster;
mod dhcp;
mod management;
mod vip;

pub use cluster::*;
pub use dhcp::*;
pub use management::*;
pub use vip::*;

pub const MTU_MIN: u32 = 576;
pub const MTU_MAX: u32 = 9000;

/// The kinds netd understands, with their plural for the API path.
pub const KINDS: &[(&str, &str)] = &[
    (ManagementNetwork::KIND, ManagementNetwork::PLURAL),
    (ClusterNetwork::KIND, ClusterNetwork::PLURAL),
    (VlanConfig::KIND, VlanConfig::PLURAL),
    (VlanInterface::KIND, VlanInterface::PLURAL),
    (IpPool::KIND, IpPool::PLURAL),
    (
        VirtualMachineNetworkConfig::KIND,
        VirtualMachineNetworkConfig::PLURAL,
    ),
    (VirtualIp::KIND, VirtualIp::PLURAL),
    (VirtualIpPool::KIND, VirtualIpPool::PLURAL),
    (BgpPeer::KIND, BgpPeer::PLURAL),
];

/// Finds the canonical kind for a kind name, plural or short name as an
/// operator may type it (`ManagementNetwork`, `managementnetworks`, `mgmtnet`).
pub fn canonical_kind(input: &str) -> Option<&'static str> {
    let lower = input.to_ascii_lowercase();
    for (kind, plural) in KINDS {
        if lower == kind.to_ascii_lowercase() || lower == *plural {
            return Some(kind);
        }
    }
    match lower.as_str() {
        "mgmtnet" | "mgmtnets" => Some(ManagementNetwork::KIND),
        "cn" | "cns" | "clusternet" => Some(ClusterNetwork::KIND),
        "vc" | "vlanconfs" => Some(VlanConfig::KIND),
        "vif" | "vifs" => Some(VlanInterface::KIND),
        "pool" | "pools" | "ippool" => Some(IpPool::KIND),
        "vmnetcfg" | "vmnetcfgs" | "vmnc" => Some(VirtualMachineNetworkConfig::KIND),
        "vip" | "vips" => Some(VirtualIp::KIND),
        "vippool" | "vippools" => Some(VirtualIpPool::KIND),
        "bgppeer" => Some(BgpPeer::KIND),
        _ => None,
    }
}

/// Hides a document's secrets (a BGPPeer's `spec.password`) before it
/// leaves netd: every API answer carrying resource documents goes
/// through this, whoever asks.
pub fn redact_secrets(doc: &mut serde_json::Value) {
    if let Some(p) = doc.pointer_mut("/spec/password") {
        if !p.is_null() {
            *p = serde_json::Value::String(REDACTED.into());
        }
    }
}

/// Reads the kind of an untyped document and checks its apiVersion,
/// naming the field at fault.
pub fn document_kind(doc: &serde_json::Value) -> Result<&'static str, FieldError> {
    let api_version = doc.get("apiVersion").and_then(|v| v.as_str()).unwrap_or("");
    if api_version != API_VERSION {
        return Err(FieldError {
            field: "apiVersion".into(),
            expected: format!("{api_version:?} is not served: expected {API_VERSION:?}"),
        });
    }
    let kind = doc.get("kind").and_then(|v| v.as_str()).unwrap_or("");
    canonical_kind(kind)
        .filter(|k| *k == kind)
        .ok_or_else(|| FieldError {
            field: "kind".into(),
            expected: format!(
                "{kind:?} is not a Furrow kind: expected one of {}",
                KINDS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_management_network_is_valid() {
        let n = ManagementNetwork::new("mgmt", ManagementNetworkSpec::default());
        assert!(n.validate().is_empty());
    }

    #[test]
    fn rejects_bad_fields_naming_them() {
        let mut n = ManagementNetwork::new("Mgmt", ManagementNetworkSpec::default());
        n.spec.cluster_cidr = "10.52.1.0/16".parse().unwrap();
        n.spec.mtu = Some(100);
        n.spec.node_subnet_prefix_length = 12;
        let errs = n.validate();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "metadata.name",
                "spec.clusterCIDR",
                "spec.nodeSubnetPrefixLength",
                "spec.mtu"
            ]
        );
    }

    #[test]
    fn unknown_spec_fields_are_rejected() {
        let doc = serde_json::json!({"clusterCIDR": "10.0.0.0/16", "mtuu": 1400});
        let err = serde_json::from_value::<ManagementNetworkSpec>(doc).unwrap_err();
        assert!(err.to_string().contains("mtuu"), "{err}");
    }

    #[test]
    fn redaction_hides_passwords_only() {
        let mut d =
            serde_json::json!({"kind": "BGPPeer", "spec": {"password": "hunter2", "peerASN": 1}});
        redact_secrets(&mut d);
        assert_eq!(d["spec"]["password"], REDACTED);
        assert_eq!(d["spec"]["peerASN"], 1);
        let mut d = serde_json::json!({"kind": "BGPPeer", "spec": {"passwordFile": "/x"}});
        let before = d.clone();
        redact_secrets(&mut d);
        assert_eq!(d, before);
    }

    #[test]
    fn document_kind_checks_api_version_and_kind() {
        let ok = serde_json::json!({"apiVersion": API_VERSION, "kind": "ManagementNetwork"});
        assert_eq!(document_kind(&ok).unwrap(), "ManagementNetwork");
        let bad = serde_json::json!({"apiVersion": "v1", "kind": "ManagementNetwork"});
        assert_eq!(document_kind(&bad).unwrap_err().field, "apiVersion");
        let bad = serde_json::json!({"apiVersion": API_VERSION, "kind": "Pod"});
        assert_eq!(document_kind(&bad).unwrap_err().field, "kind");
    }
}
