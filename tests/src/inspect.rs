//! Observing a node from the kernel's side with the standard tools, to
//! check what netd built (and that it removed everything it should).

use serde_json::Value;

use crate::lab::Node;

fn json(out: anyhow::Result<String>) -> Value {
    out.ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Array(vec![]))
}

/// Names of the node's links that netd created (its alias marks them).
pub fn furrow_links(node: &Node) -> Vec<String> {
    let v = json(node.ns.ip(&["-j", "link", "show"]));
    v.as_array()
        .map(|a| {
            a.iter()
                .filter(|l| {
                    // Ports' links; not the management network's VXLAN
                    // device, which lives as long as the network.
                    l["ifalias"]
                        .as_str()
                        .is_some_and(|s| s.starts_with("furrow:") && !s.contains(":overlay:"))
                })
                .filter_map(|l| l["ifname"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Host routes netd installed on the node for ports (protocol 70; the
/// routes to other nodes' subnets are prefixes and not listed).
pub fn furrow_routes(node: &Node) -> Vec<String> {
    let v = json(node.ns.ip(&["-j", "route", "show", "proto", "70"]));
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["dst"].as_str().map(String::from))
                .filter(|d| !d.contains('/'))
                .collect()
        })
        .unwrap_or_default()
}

/// Routes netd installed towards other nodes' subnets: `dst -> (via, dev)`.
pub fn remote_subnet_routes(node: &Node) -> std::collections::BTreeMap<String, (String, String)> {
    let v = json(node.ns.ip(&["-j", "route", "show", "proto", "70"]));
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| {
                    let dst = r["dst"].as_str()?;
                    dst.contains('/').then(|| {
                        (
                            dst.to_string(),
                            (
                                r["gateway"].as_str().unwrap_or_default().to_string(),
                                r["dev"].as_str().unwrap_or_default().to_string(),
                            ),
                        )
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The nftables table of a node's netd.
pub fn nft_table(node: &Node) -> String {
    format!("furrow_{}", node.netd.instance.replace('-', "_"))
}

/// Elements of the management network's masquerade set.
pub fn masquerade_members(node: &Node, network: &str) -> Vec<String> {
    let set = format!("masq_{}", network.replace('-', "_"));
    let out = node
        .ns
        .run("nft", &["-j", "list", "set", "ip", &nft_table(node), &set]);
    let v = json(out);
    let mut members = Vec::new();
    if let Some(items) = v["nftables"].as_array() {
        for i in items {
            if let Some(elems) = i["set"]["elem"].as_array() {
                for e in elems {
                    if let Some(s) = e.as_str() {
                        members.push(s.to_string());
                    } else if let Some(s) = e["elem"]["val"].as_str() {
                        members.push(s.to_string());
                    }
                }
            }
        }
    }
    members
}

/// Whole nftables ruleset of the node (for error messages).
pub fn ruleset(node: &Node) -> String {
    node.ns.run("nft", &["list", "ruleset"]).unwrap_or_default()
}

/// Entries of one of the node's BPF maps, as netd reports them.
pub fn map_entries(node: &Node, map: &str) -> u32 {
    let s: furrow_api::wire::NodeStatus = node.netd.client().get("/v1/status").expect("status");
    s.datapath
        .maps
        .iter()
        .find(|m| m.name == map)
        .map(|m| m.entries)
        .unwrap_or(0)
}

/// Waits until netd has finished removing the ports DEL and GC already
/// answered for (their links go in the background). Panics after 20 s.
pub fn settle(node: &Node) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match node
            .netd
            .client()
            .get::<furrow_api::wire::NodeStatus>("/v1/status")
        {
            Ok(s) if s.ports.deleting == 0 => return,
            // netd down: nothing will change.
            Err(furrow_api::client::ClientError::Unreachable { .. }) => return,
            Err(e) => panic!("netd status: {e}"),
            Ok(s) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{} ports still deleting after 20 s",
                    s.ports.deleting
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

/// Everything of netd's that a node still holds, as readable lines; empty
/// when the node is clean (no links, routes, NAT members, map entries,
/// port records or address allocations).
pub fn leftovers(node: &Node, network: &str) -> Vec<String> {
    settle(node);
    let mut out = Vec::new();
    for l in furrow_links(node) {
        out.push(format!("link {l}"));
    }
    for r in furrow_routes(node) {
        out.push(format!("route {r}"));
    }
    for m in masquerade_members(node, network) {
        out.push(format!("masquerade member {m}"));
    }
    if let Ok(s) = node
        .netd
        .client()
        .get::<furrow_api::wire::NodeStatus>("/v1/status")
    {
        for m in &s.datapath.maps {
            if m.entries > 0 {
                out.push(format!("map {} has {} entries", m.name, m.entries));
            }
        }
        if s.ports.total > 0 {
            out.push(format!("{} port records", s.ports.total));
        }
        for n in &s.networks {
            if n.addresses_allocated > 0 {
                out.push(format!(
                    "network {} has {} addresses allocated",
                    n.name, n.addresses_allocated
                ));
            }
        }
    }
    out
}
