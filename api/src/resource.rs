//! Furrow's resources: CRD-shaped documents (apiVersion, kind, metadata,
//! spec, status), kept close to Harvester's shapes where those exist.
//! docs/resources.md describes each kind for operators.

use std::collections::BTreeMap;

use ipnet::Ipv4Net;
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

/// The kinds netd understands, with their plural for the API path.
pub const KINDS: &[(&str, &str)] = &[(ManagementNetwork::KIND, ManagementNetwork::PLURAL)];

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
        _ => None,
    }
}

/// The management (pod) network: every pod/VM gets an address from its
/// node's subnet of `clusterCIDR`; traffic leaving the cluster CIDR is
/// masqueraded behind the node. The embedded default is one network
/// named `mgmt` with the values below.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManagementNetworkSpec {
    /// The cluster's pod CIDR, split into per-node subnets.
    #[serde(rename = "clusterCIDR", default = "default_cluster_cidr")]
    pub cluster_cidr: Ipv4Net,
    /// Prefix length of each node's subnet (16-30).
    #[serde(default = "default_node_prefix")]
    pub node_subnet_prefix_length: u8,
    /// Interface MTU for pods (576-9000).
    #[serde(default = "default_mtu")]
    pub mtu: u32,
    /// Masquerade traffic leaving the cluster CIDR behind the node.
    #[serde(default = "default_true")]
    pub masquerade: bool,
}

pub type ManagementNetwork = Resource<ManagementNetworkSpec, ManagementNetworkStatus>;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagementNetworkStatus {
    /// Node name to the subnet it leases.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_subnets: BTreeMap<String, Ipv4Net>,
}

fn default_cluster_cidr() -> Ipv4Net {
    "10.52.0.0/16".parse().expect("static CIDR")
}
fn default_node_prefix() -> u8 {
    24
}
fn default_mtu() -> u32 {
    1500
}
fn default_true() -> bool {
    true
}

impl Default for ManagementNetworkSpec {
    fn default() -> Self {
        ManagementNetworkSpec {
            cluster_cidr: default_cluster_cidr(),
            node_subnet_prefix_length: default_node_prefix(),
            mtu: default_mtu(),
            masquerade: true,
        }
    }
}

pub const MTU_MIN: u32 = 576;
pub const MTU_MAX: u32 = 9000;

impl ManagementNetwork {
    pub const KIND: &'static str = "ManagementNetwork";
    pub const PLURAL: &'static str = "managementnetworks";
    pub const DEFAULT_NAME: &'static str = "mgmt";

    pub fn new(name: &str, spec: ManagementNetworkSpec) -> Self {
        Resource {
            api_version: API_VERSION.to_string(),
            kind: Self::KIND.to_string(),
            metadata: ObjectMeta {
                name: name.to_string(),
                ..Default::default()
            },
            spec,
            status: None,
        }
    }

    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate_name(
            "metadata.name",
            &self.metadata.name,
            MAX_NAME_LEN,
            &mut errs,
        );
        let s = &self.spec;
        let cidr = s.cluster_cidr;
        if cidr.trunc() != cidr {
            errs.push(FieldError {
                field: "spec.clusterCIDR".into(),
                expected: format!(
                    "{cidr} has host bits set: expected a network address such as {}",
                    cidr.trunc()
                ),
            });
        }
        if !(8..=28).contains(&cidr.prefix_len()) {
            errs.push(FieldError {
                field: "spec.clusterCIDR".into(),
                expected: format!(
                    "prefix length /{} out of range: expected /8 to /28",
                    cidr.prefix_len()
                ),
            });
        }
        let p = s.node_subnet_prefix_length;
        if !(16..=30).contains(&p) || p < cidr.prefix_len() {
            errs.push(FieldError {
                field: "spec.nodeSubnetPrefixLength".into(),
                expected: format!(
                    "{p} out of range: expected 16 to 30 and not shorter than the cluster CIDR's /{}",
                    cidr.prefix_len()
                ),
            });
        }
        if !(MTU_MIN..=MTU_MAX).contains(&s.mtu) {
            errs.push(FieldError {
                field: "spec.mtu".into(),
                expected: format!("{} out of range: expected {MTU_MIN} to {MTU_MAX}", s.mtu),
            });
        }
        errs
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
        n.spec.mtu = 100;
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
    fn document_kind_checks_api_version_and_kind() {
        let ok = serde_json::json!({"apiVersion": API_VERSION, "kind": "ManagementNetwork"});
        assert_eq!(document_kind(&ok).unwrap(), "ManagementNetwork");
        let bad = serde_json::json!({"apiVersion": "v1", "kind": "ManagementNetwork"});
        assert_eq!(document_kind(&bad).unwrap_err().field, "apiVersion");
        let bad = serde_json::json!({"apiVersion": API_VERSION, "kind": "Pod"});
        assert_eq!(document_kind(&bad).unwrap_err().field, "kind");
    }
}
