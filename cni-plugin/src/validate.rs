//! `furrow --validate-config`: checks a network config without netd, with
//! the very parser ADD uses, so an installer (the DaemonSet's init
//! container) or a test can tell a config netd will never see is wrong
//! before a runtime calls the plugin with it. VERSION cannot do this (it
//! never reads stdin, like libcni's skel) and CHECK needs a live netd and
//! the ADD's result.
//!
//! Input: one plugin config, or a conflist (`plugins`), whose `furrow`
//! entries are checked as a runtime hands them over: with the list's
//! `name` and `cniVersion` put in. Other plugins of a list are not ours to
//! judge. Output: a summary of each config on success, else the CNI error
//! document, exactly as ADD would answer.

use furrow_api::cni::AttachmentSpec;
use serde_json::{json, Value};

use crate::commands::Failure;
use crate::config::{self, ConfigError};
use crate::env::Command;
use crate::result::{sniff_version, CniVersion};

pub fn run(input: &[u8]) -> Result<String, Failure> {
    let version = sniff_version(input).unwrap_or(CniVersion::CURRENT);
    let fail = |e: ConfigError| Failure {
        version,
        error: e.into(),
    };
    let doc: Value = serde_json::from_slice(input).map_err(|e| fail(ConfigError::Decode(e)))?;
    let configs = match doc.get("plugins") {
        None => vec![input.to_vec()],
        Some(Value::Array(plugins)) => {
            let ours: Vec<Vec<u8>> = plugins
                .iter()
                .filter(|p| p.get("type").and_then(Value::as_str) == Some("furrow"))
                .map(|p| {
                    let mut p = p.clone();
                    if let Value::Object(o) = &mut p {
                        for key in ["name", "cniVersion"] {
                            if let Some(v) = doc.get(key) {
                                o.insert(key.into(), v.clone());
                            }
                        }
                    }
                    p.to_string().into_bytes()
                })
                .collect();
            if ours.is_empty() {
                return Err(fail(ConfigError::invalid(
                    "plugins",
                    "no plugin of type \"furrow\" in the list: nothing to check",
                )));
            }
            ours
        }
        Some(other) => {
            return Err(fail(ConfigError::invalid(
                "plugins",
                format!(
                    "expected a list of plugin configs, got {}",
                    config::show(other)
                ),
            )))
        }
    };
    let mut out = Vec::new();
    for c in configs {
        let conf = config::parse(&c, Command::Add).map_err(fail)?;
        out.push(match &conf.attachment {
            AttachmentSpec::Management(m) => json!({
                "name": conf.name,
                "cniVersion": conf.version.to_string(),
                "kind": "management",
                "network": m.network,
            }),
            AttachmentSpec::Vlan(v) => json!({
                "name": conf.name,
                "cniVersion": conf.version.to_string(),
                "kind": if !v.trunk.is_empty() { "trunk" } else if v.vlan == 0 { "untagged" } else { "vlan" },
                "clusterNetwork": v.cluster_network,
                "vlan": v.vlan,
                "trunk": v.trunk.iter().map(|r| json!([r.min, r.max])).collect::<Vec<_>>(),
            }),
        });
    }
    Ok(json!({"valid": true, "configs": out}).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(input: &str) -> u32 {
        run(input.as_bytes()).unwrap_err().error.to_api_error().code
    }

    #[test]
    fn accepts_harvester_nads_and_reports_their_kind() {
        let out: Value = serde_json::from_str(
            &run(br#"{"cniVersion":"0.3.1","name":"trunk","type":"furrow","bridge":"data-br","vlan":0,"vlanTrunk":[{"minID":3100,"maxID":3104},{"id":200}],"ipam":{}}"#)
                .unwrap(),
        )
        .unwrap();
        let c = &out["configs"][0];
        assert_eq!(c["kind"], "trunk");
        assert_eq!(c["clusterNetwork"], "data");
        assert_eq!(c["trunk"], json!([[200, 200], [3100, 3104]]));
    }

    #[test]
    fn conflist_entries_get_the_list_name_and_version() {
        let list = r#"{"cniVersion":"1.1.0","name":"mgmt","plugins":[
            {"type":"furrow","network":"mgmt","capabilities":{"mac":true,"ips":true}},
            {"type":"portmap","capabilities":{"portMappings":true}}]}"#;
        let out: Value = serde_json::from_str(&run(list.as_bytes()).unwrap()).unwrap();
        assert_eq!(out["configs"][0]["name"], "mgmt");
        assert_eq!(out["configs"][0]["kind"], "management");
        // A list without furrow, or a furrow entry with a bad key, is refused.
        assert_eq!(
            code(r#"{"cniVersion":"1.1.0","name":"x","plugins":[{"type":"portmap"}]}"#),
            7
        );
        assert_eq!(
            code(r#"{"cniVersion":"1.1.0","name":"x","plugins":[{"type":"furrow","mtuu":1}]}"#),
            2
        );
    }

    #[test]
    fn refuses_what_add_refuses() {
        assert_eq!(
            code(
                r#"{"cniVersion":"0.3.1","name":"v","type":"furrow","bridge":"data-br","vlan":4095}"#
            ),
            7
        );
        assert_eq!(code(r#"{"name":"v","type":"furrow"}"#), 1);
        assert_eq!(code("not json"), 6);
    }
}
