//! Resource documents as they arrive from outside (`netctl apply -f`,
//! netd's config directory, `PUT /v1/resources/...`): parsing YAML/JSON
//! files and validating one document by its kind, naming the field at
//! fault. Pure, so netd, netctl and the fuzz targets share it (feature
//! `documents`).

use serde_json::Value;

use crate::resource::{
    self, field_errors_to_api, BgpPeer, ClusterNetwork, FieldError, IpPool, ManagementNetwork,
    VirtualIp, VirtualIpPool, VirtualMachineNetworkConfig, VlanConfig, VlanInterface,
};
use crate::ApiError;

/// A validated document ready to be stored.
#[derive(Debug, Clone)]
pub struct Validated {
    pub kind: &'static str,
    pub name: String,
    pub doc: Value,
}

/// Parses and validates one document, naming the field at fault. The
/// accepted form is normalised (defaults filled in, status dropped):
/// validating it again gives it back unchanged.
pub fn validate(doc: &Value) -> Result<Validated, ApiError> {
    let kind =
        resource::document_kind(doc).map_err(|e| ApiError::invalid_field(&e.field, &e.expected))?;
    let name = doc
        .pointer("/metadata/name")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    match kind {
        ManagementNetwork::KIND => {
            normalise::<ManagementNetwork>(doc, kind, &name, |r| r.validate())
        }
        ClusterNetwork::KIND => normalise::<ClusterNetwork>(doc, kind, &name, |r| r.validate()),
        VlanConfig::KIND => normalise::<VlanConfig>(doc, kind, &name, |r| r.validate()),
        VlanInterface::KIND => normalise::<VlanInterface>(doc, kind, &name, |r| r.validate()),
        IpPool::KIND => normalise::<IpPool>(doc, kind, &name, |r| r.validate()),
        VirtualMachineNetworkConfig::KIND => {
            normalise::<VirtualMachineNetworkConfig>(doc, kind, &name, |r| r.validate())
        }
        VirtualIp::KIND => normalise::<VirtualIp>(doc, kind, &name, |r| r.validate()),
        VirtualIpPool::KIND => normalise::<VirtualIpPool>(doc, kind, &name, |r| r.validate()),
        BgpPeer::KIND => normalise::<BgpPeer>(doc, kind, &name, |r| r.validate()),
        _ => Err(ApiError::invalid_field(
            "kind",
            format!("{kind:?} is not served"),
        )),
    }
}

/// Parses a document into its kind's type, validates it, and returns the
/// normalised form (defaults filled in, status dropped) for the store.
fn normalise<T: serde::de::DeserializeOwned + serde::Serialize>(
    doc: &Value,
    kind: &'static str,
    name: &str,
    validate: impl Fn(&T) -> Vec<FieldError>,
) -> Result<Validated, ApiError> {
    let typed: T = typed_from(doc, kind, name)?;
    let errs = validate(&typed);
    if !errs.is_empty() {
        return Err(field_errors_to_api(kind, name, &errs));
    }
    let mut out = serde_json::to_value(&typed).map_err(|e| ApiError::internal(e.to_string()))?;
    if let Some(o) = out.as_object_mut() {
        o.remove("status");
    }
    Ok(Validated {
        kind,
        name: name.to_string(),
        doc: out,
    })
}

fn typed_from<T: serde::de::DeserializeOwned>(
    doc: &Value,
    kind: &str,
    name: &str,
) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let path = e.path().to_string();
        let err = FieldError {
            field: if path == "." {
                "(document)".into()
            } else {
                path
            },
            expected: e.inner().to_string(),
        };
        field_errors_to_api(kind, name, &[err])
    })
}

/// Parses a resource file: YAML (one or more documents separated by
/// `---`) or JSON (one document, or a `{"items": [...]}` list).
pub fn parse_documents(text: &str, json: bool) -> Result<Vec<Value>, String> {
    let mut docs = Vec::new();
    if json {
        let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        push_items(v, &mut docs);
    } else {
        for de in serde_norway::Deserializer::from_str(text) {
            let v: Value = serde::Deserialize::deserialize(de).map_err(|e| e.to_string())?;
            if !v.is_null() {
                push_items(v, &mut docs);
            }
        }
    }
    Ok(docs)
}

fn push_items(v: Value, out: &mut Vec<Value>) {
    match v {
        Value::Object(ref o) if o.contains_key("items") && !o.contains_key("kind") => {
            if let Some(Value::Array(items)) = o.get("items") {
                out.extend(items.iter().cloned());
            }
        }
        Value::Object(ref o) if o.get("kind").and_then(|k| k.as_str()) == Some("List") => {
            if let Some(Value::Array(items)) = o.get("items") {
                out.extend(items.iter().cloned());
            }
        }
        other => out.push(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn validation_is_idempotent_and_names_fields() {
        let doc = json!({
            "apiVersion": resource::API_VERSION, "kind": "BGPPeer",
            "metadata": {"name": "tor"},
            "spec": {"myASN": 65001, "peerASN": 65000, "peerAddress": "10.0.0.1",
                     "passwordFile": "/etc/furrow/bgp/tor"}
        });
        let v = validate(&doc).unwrap();
        assert_eq!(validate(&v.doc).unwrap().doc, v.doc);
        let mut bad = doc.clone();
        bad["spec"]["password"] = json!("x");
        let e = validate(&bad).unwrap_err();
        assert!(e.msg.contains("spec.passwordFile"), "{}", e.msg);
    }

    #[test]
    fn parses_multi_document_yaml_and_json_lists() {
        let y = "apiVersion: a\nkind: X\n---\napiVersion: b\nkind: Y\n---\n";
        assert_eq!(parse_documents(y, false).unwrap().len(), 2);
        let j = r#"{"apiVersion":"v1","kind":"List","items":[{"kind":"A"},{"kind":"B"}]}"#;
        assert_eq!(parse_documents(j, true).unwrap().len(), 2);
        assert!(parse_documents("a: [", false).is_err());
    }
}
