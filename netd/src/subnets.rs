//! Node subnets of a management network: each node leases one subnet of
//! the cluster CIDR through the store (create-only, so two nodes can never
//! hold the same subnet), and keeps it across restarts.

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::store::{keys, list_json, Compare, Op, Store, StoreError, Txn};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubnetLease {
    pub node: String,
    pub subnet: Ipv4Net,
    pub acquired_at: u64,
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
/// (the network was redefined) is dropped and a new one taken.
pub async fn lease(
    store: &dyn Store,
    network: &str,
    cidr: Ipv4Net,
    prefix: u8,
    node: &str,
) -> Result<Ipv4Net, SubnetError> {
    loop {
        let leases: Vec<(String, SubnetLease, u64)> =
            list_json(store, &keys::subnet_leases_of(network)).await?;
        let mut held = None;
        for (key, l, rev) in &leases {
            if l.node != node {
                continue;
            }
            if l.subnet.prefix_len() == prefix && cidr.contains(&l.subnet) && held.is_none() {
                held = Some(l.subnet);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;

    #[tokio::test]
    async fn nodes_get_distinct_subnets_and_keep_them() {
        let dir = std::env::temp_dir().join(format!("furrow-subnet-test-{}", std::process::id()));
        let store = EmbeddedStore::open(&dir.join("s.redb")).unwrap();
        let cidr: Ipv4Net = "10.52.0.0/22".parse().unwrap();
        let a = lease(&store, "mgmt", cidr, 24, "a").await.unwrap();
        let b = lease(&store, "mgmt", cidr, 24, "b").await.unwrap();
        assert_ne!(a, b);
        assert_eq!(lease(&store, "mgmt", cidr, 24, "a").await.unwrap(), a);
        lease(&store, "mgmt", cidr, 24, "c").await.unwrap();
        lease(&store, "mgmt", cidr, 24, "d").await.unwrap();
        assert!(matches!(
            lease(&store, "mgmt", cidr, 24, "e").await,
            Err(SubnetError::Exhausted { .. })
        ));
        // Redefined network: the old lease is replaced by one that fits.
        let new: Ipv4Net = "10.60.0.0/16".parse().unwrap();
        let a2 = lease(&store, "mgmt", new, 24, "a").await.unwrap();
        assert!(new.contains(&a2));
        let _ = std::fs::remove_dir_all(dir);
    }
}
