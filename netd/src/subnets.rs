//! Node subnets of a management network: each node leases one subnet of
//! the cluster CIDR through the store (create-only, so two nodes can never
//! hold the same subnet), and keeps it across restarts.

use std::net::Ipv4Addr;

use furrow_api::MacAddr;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::store::{keys, list_json, Compare, Op, Store, StoreError, Txn};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubnetLease {
    pub node: String,
    pub subnet: Ipv4Net,
    pub acquired_at: u64,
    /// How other nodes reach this subnet: kept current by the holder.
    #[serde(flatten)]
    pub attrs: LeaseAttrs,
}

/// What other nodes need to route to a node's subnet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseAttrs {
    /// The node's underlay address: the VXLAN endpoint, or the host-gw
    /// next hop. None while the node has no underlay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<Ipv4Addr>,
    /// The MAC of the node's VXLAN device of this network (vxlan only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep_mac: Option<MacAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum SubnetError {
    #[error("no free /{prefix} subnet left in {cidr} for node {node}")]
    Exhausted {
        cidr: Ipv4Net,
        prefix: u8,
        node: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Returns this node's subnet of `network`, leasing the first free one if
/// it has none. A lease that no longer fits the network's CIDR or prefix
/// (the network was redefined) is dropped and a new one taken. The lease
/// carries `attrs`, updated in place when they changed (a new underlay
/// address after a reboot).
pub async fn lease(
    store: &dyn Store,
    network: &str,
    cidr: Ipv4Net,
    prefix: u8,
    node: &str,
    attrs: &LeaseAttrs,
) -> Result<Ipv4Net, SubnetError> {
    'again: loop {
        let leases: Vec<(String, SubnetLease, u64)> =
            list_json(store, &keys::subnet_leases_of(network)).await?;
        let mut held = None;
        for (key, l, rev) in &leases {
            if l.node != node {
                continue;
            }
            if l.subnet.prefix_len() == prefix && cidr.contains(&l.subnet) && held.is_none() {
                held = Some(l.subnet);
                if l.attrs != *attrs {
                    let mut updated = l.clone();
                    updated.attrs = attrs.clone();
                    let out = store
                        .txn(
                            Txn::new()
                                .when(Compare::ModRevision(key.clone(), *rev))
                                .then(Op::put_json(key.clone(), &updated)),
                        )
                        .await?;
                    if !out.succeeded {
                        // Released or rewritten meanwhile: look again.
                        continue 'again;
                    }
                }
            } else {
                // Stale or duplicate lease of ours: give it back.
                store
                    .txn(
                        Txn::new()
                            .when(Compare::ModRevision(key.clone(), *rev))
                            .then(Op::Delete(key.clone())),
                    )
                    .await?;
            }
        }
        if let Some(s) = held {
            return Ok(s);
        }
        let taken: std::collections::HashSet<Ipv4Net> =
            leases.iter().map(|(_, l, _)| l.subnet).collect();
        let subnets = cidr.subnets(prefix).map_err(|_| SubnetError::Exhausted {
            cidr,
            prefix,
            node: node.to_string(),
        })?;
        let Some(candidate) = subnets.into_iter().find(|s| !taken.contains(s)) else {
            return Err(SubnetError::Exhausted {
                cidr,
                prefix,
                node: node.to_string(),
            });
        };
        let key = keys::subnet_lease(network, &candidate);
        let lease = SubnetLease {
            node: node.to_string(),
            subnet: candidate,
            acquired_at: crate::util::now_secs(),
            attrs: attrs.clone(),
        };
        let out = store
            .txn(
                Txn::new()
                    .when(Compare::Absent(key.clone()))
                    .then(Op::put_json(key, &lease)),
            )
            .await?;
        if out.succeeded {
            return Ok(candidate);
        }
        // Another node took it between our list and our claim: look again.
    }
}

/// Every lease of `network`.
pub async fn leases(store: &dyn Store, network: &str) -> Result<Vec<SubnetLease>, StoreError> {
    let all: Vec<(String, SubnetLease, u64)> =
        list_json(store, &keys::subnet_leases_of(network)).await?;
    Ok(all.into_iter().map(|(_, l, _)| l).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;

    #[tokio::test]
    async fn nodes_get_distinct_subnets_and_keep_them() {
        let dir = std::env::temp_dir().join(format!("furrow-subnet-test-{}", std::process::id()));
        let store = EmbeddedStore::open(&dir.join("s.redb")).unwrap();
        let cidr: Ipv4Net = "10.52.0.0/22".parse().unwrap();
        let none = LeaseAttrs::default();
        let a = lease(&store, "mgmt", cidr, 24, "a", &none).await.unwrap();
        let b = lease(&store, "mgmt", cidr, 24, "b", &none).await.unwrap();
        assert_ne!(a, b);
        assert_eq!(
            lease(&store, "mgmt", cidr, 24, "a", &none).await.unwrap(),
            a
        );
        lease(&store, "mgmt", cidr, 24, "c", &none).await.unwrap();
        lease(&store, "mgmt", cidr, 24, "d", &none).await.unwrap();
        assert!(matches!(
            lease(&store, "mgmt", cidr, 24, "e", &none).await,
            Err(SubnetError::Exhausted { .. })
        ));
        // Redefined network: the old lease is replaced by one that fits.
        let new: Ipv4Net = "10.60.0.0/16".parse().unwrap();
        let a2 = lease(&store, "mgmt", new, 24, "a", &none).await.unwrap();
        assert!(new.contains(&a2));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn lease_attributes_follow_the_holder_without_changing_the_subnet() {
        let dir = std::env::temp_dir().join(format!("furrow-subnet-attrs-{}", std::process::id()));
        let store = EmbeddedStore::open(&dir.join("s.redb")).unwrap();
        let cidr: Ipv4Net = "10.52.0.0/16".parse().unwrap();
        let first = LeaseAttrs {
            public_ip: Some("198.18.0.1".parse().unwrap()),
            vtep_mac: Some(MacAddr([0x0a, 0x58, 1, 2, 3, 4])),
        };
        let s = lease(&store, "mgmt", cidr, 24, "a", &first).await.unwrap();
        let moved = LeaseAttrs {
            public_ip: Some("198.18.0.9".parse().unwrap()),
            ..first.clone()
        };
        assert_eq!(
            lease(&store, "mgmt", cidr, 24, "a", &moved).await.unwrap(),
            s
        );
        let all = leases(&store, "mgmt").await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].attrs, moved);
        let _ = std::fs::remove_dir_all(dir);
    }
}
