//! What netd writes back to the objects' `/status` subresource, as JSON
//! merge patches (RFC 7386). Each node patches only its own entries, so
//! nodes never overwrite each other's and need no read-modify-write.

use std::collections::BTreeMap;

use ipnet::Ipv4Net;
use serde_json::{json, Map, Value};

/// This node's subnet of a ManagementNetwork (None: it holds none any
/// more) as a patch of `status.nodeSubnets.<node>`; None when the status
/// already says so.
pub fn node_subnet_patch(current: &Value, node: &str, subnet: Option<Ipv4Net>) -> Option<Value> {
    let have = current
        .pointer("/status/nodeSubnets")
        .and_then(|m| m.get(node))
        .and_then(|s| s.as_str());
    let want = subnet.map(|s| s.to_string());
    if have == want.as_deref() {
        return None;
    }
    Some(json!({"status": {"nodeSubnets": {node: want}}}))
}

/// Subnets released for nodes that are gone (their entries removed by the
/// node that released them).
pub fn gone_nodes_patch(current: &Value, gone: &[&str]) -> Option<Value> {
    let have = current.pointer("/status/nodeSubnets")?.as_object()?;
    let m: Map<String, Value> = gone
        .iter()
        .filter(|n| have.contains_key(**n))
        .map(|n| (n.to_string(), Value::Null))
        .collect();
    (!m.is_empty()).then(|| json!({"status": {"nodeSubnets": m}}))
}

/// A VirtualIP's status as its holder writes it: who holds it and at
/// which address (a pool's or DHCP's is only known here).
pub fn vip_status(holder: &str, address: Option<std::net::IpAddr>) -> Value {
    json!({"status": {"holder": holder, "address": address.map(|a| a.to_string())}})
}

/// The merge patch turning `from` into `to` (RFC 7386: objects merge
/// key by key, null deletes, anything else replaces); None when equal.
pub fn merge_patch(from: &Value, to: &Value) -> Option<Value> {
    if from == to {
        return None;
    }
    match (from, to) {
        (Value::Object(a), Value::Object(b)) => {
            let mut out = Map::new();
            for (k, vb) in b {
                let va = a.get(k).unwrap_or(&Value::Null);
                if let Some(p) = merge_patch(va, vb) {
                    out.insert(k.clone(), p);
                }
            }
            for k in a.keys() {
                if !b.contains_key(k) {
                    out.insert(k.clone(), Value::Null);
                }
            }
            Some(Value::Object(out))
        }
        // An object replacing a non-object must carry all of itself.
        _ => Some(to.clone()),
    }
}

/// Applies a merge patch (RFC 7386), as the API server does.
pub fn apply_merge_patch(target: &Value, patch: &Value) -> Value {
    let Value::Object(p) = patch else {
        return patch.clone();
    };
    let mut out = match target {
        Value::Object(t) => t.clone(),
        _ => Map::new(),
    };
    for (k, v) in p {
        if v.is_null() {
            out.remove(k);
        } else {
            let cur = out.get(k).cloned().unwrap_or(Value::Null);
            out.insert(k.clone(), apply_merge_patch(&cur, v));
        }
    }
    Value::Object(out)
}

/// This node's subnet of each management network, from the subnet lease
/// records (`/furrow/subnets/<network>/<subnet>` → its lease).
pub fn node_subnets(
    leases: &[(String, crate::subnets::SubnetLease, crate::store::Revision)],
    node: &str,
) -> BTreeMap<String, Ipv4Net> {
    leases
        .iter()
        .filter(|(_, l, _)| l.node == node)
        .filter_map(|(k, l, _)| {
            let network = k.strip_prefix("/furrow/subnets/")?.split('/').next()?;
            Some((network.to_string(), l.subnet))
        })
        .collect()
}

/// The status netd would write for a whole ManagementNetwork, from the
/// subnet leases (network → node → subnet) — what every node's patches
/// add up to.
pub fn management_status(leases: &BTreeMap<String, Ipv4Net>) -> Value {
    json!({"nodeSubnets": leases.iter().map(|(n, s)| (n.clone(), json!(s.to_string()))).collect::<Map<_, _>>()})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patches_round_trip() {
        let cases = [
            (
                json!({}),
                json!({"status": {"nodeSubnets": {"n1": "10.52.1.0/24"}}}),
            ),
            (
                json!({"status": {"nodeSubnets": {"n1": "10.52.1.0/24", "n2": "10.52.2.0/24"}}}),
                json!({"status": {"nodeSubnets": {"n2": "10.52.2.0/24"}}}),
            ),
            (
                json!({"a": [1, 2], "b": {"c": 1}}),
                json!({"a": [2], "b": 3}),
            ),
            (json!({"a": 1}), json!({"a": 1})),
        ];
        for (from, to) in cases {
            match merge_patch(&from, &to) {
                None => assert_eq!(from, to),
                Some(p) => assert_eq!(apply_merge_patch(&from, &p), to, "{from} -> {to}: {p}"),
            }
        }
    }

    #[test]
    fn a_node_patches_only_its_own_entry() {
        let obj = json!({"status": {"nodeSubnets": {"node2": "10.52.2.0/24"}}});
        let p = node_subnet_patch(&obj, "node1", Some("10.52.1.0/24".parse().unwrap())).unwrap();
        assert_eq!(
            p,
            json!({"status": {"nodeSubnets": {"node1": "10.52.1.0/24"}}})
        );
        let after = apply_merge_patch(&obj, &p);
        assert_eq!(after["status"]["nodeSubnets"]["node2"], "10.52.2.0/24");
        assert_eq!(
            node_subnet_patch(&after, "node1", Some("10.52.1.0/24".parse().unwrap())),
            None
        );
        let gone = node_subnet_patch(&after, "node1", None).unwrap();
        assert_eq!(
            apply_merge_patch(&after, &gone),
            json!({"status": {"nodeSubnets": {"node2": "10.52.2.0/24"}}})
        );
        let g = gone_nodes_patch(&after, &["node2", "node9"]).unwrap();
        assert_eq!(g, json!({"status": {"nodeSubnets": {"node2": null}}}));
        assert_eq!(gone_nodes_patch(&obj, &["node9"]), None);
        let leases = BTreeMap::from([("node1".to_string(), "10.52.1.0/24".parse().unwrap())]);
        assert_eq!(
            management_status(&leases),
            json!({"nodeSubnets": {"node1": "10.52.1.0/24"}})
        );
        // The holder writes its VirtualIP's status; nothing while unchanged;
        // a new address only changes the address.
        let ip: std::net::IpAddr = "10.0.0.100".parse().unwrap();
        let want = vip_status("node1", Some(ip));
        assert_eq!(
            merge_patch(&json!({}), &want),
            Some(json!({"status": {"holder": "node1", "address": "10.0.0.100"}}))
        );
        assert_eq!(merge_patch(&want, &want), None);
        let moved = vip_status("node1", Some("10.0.0.101".parse().unwrap()));
        assert_eq!(
            merge_patch(&want, &moved),
            Some(json!({"status": {"address": "10.0.0.101"}}))
        );
        // A recorded VirtualIP whose status names another node: the new
        // holder's patch replaces it.
        let recorded = json!({"status": {"holder": "node2", "address": "10.0.0.100"}});
        let after = apply_merge_patch(&recorded, &merge_patch(&json!({}), &want).unwrap());
        assert_eq!(after, want);
    }
}
