//! Resource documents over the store: validation by kind, optimistic
//! concurrency through metadata.resourceVersion, and loading the config
//! directory.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use furrow_api::error::code;
use furrow_api::resource::{
    selects, IpPool, ManagementNetwork, MgmtBackend, VirtualIp, VirtualMachineNetworkConfig,
    VlanConfig,
};
use furrow_api::ApiError;
use serde_json::Value;

use crate::store::{keys, Compare, Op, Store, StoreError, Txn};

#[derive(Clone)]
pub struct Resources {
    store: Arc<dyn Store>,
}

pub fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Unavailable(m) => {
            ApiError::new(code::TRY_AGAIN, format!("store unavailable: {m}"))
        }
        other => ApiError::internal(other.to_string()),
    }
}

pub use furrow_api::document::{parse_documents, validate, Validated};

/// The stored documents the rules between documents look at; only the
/// kinds a rule of the document's kind needs are filled in
/// ([`Others::kinds_for`]).
#[derive(Debug, Clone, Default)]
pub struct Others {
    pub vips: Vec<VirtualIp>,
    pub vlan_configs: Vec<VlanConfig>,
    pub ip_pools: Vec<IpPool>,
    pub vm_network_configs: Vec<VirtualMachineNetworkConfig>,
    pub management_networks: Vec<ManagementNetwork>,
}

impl Others {
    /// The kinds whose documents the rules for `kind` read.
    pub fn kinds_for(kind: &str) -> &'static [&'static str] {
        match kind {
            VirtualIp::KIND => &[VirtualIp::KIND],
            VlanConfig::KIND => &[VlanConfig::KIND],
            IpPool::KIND => &[IpPool::KIND],
            VirtualMachineNetworkConfig::KIND => &[VirtualMachineNetworkConfig::KIND, IpPool::KIND],
            ManagementNetwork::KIND => &[ManagementNetwork::KIND],
            _ => &[],
        }
    }

    /// Adds one stored document of `kind`; one that does not parse is
    /// skipped (as `Resources::typed` skips it).
    pub fn push(&mut self, kind: &str, doc: Value) {
        fn add<T: serde::de::DeserializeOwned>(v: &mut Vec<T>, doc: Value) {
            if let Ok(t) = serde_json::from_value(doc) {
                v.push(t);
            }
        }
        match kind {
            VirtualIp::KIND => add(&mut self.vips, doc),
            VlanConfig::KIND => add(&mut self.vlan_configs, doc),
            IpPool::KIND => add(&mut self.ip_pools, doc),
            VirtualMachineNetworkConfig::KIND => add(&mut self.vm_network_configs, doc),
            ManagementNetwork::KIND => add(&mut self.management_networks, doc),
            _ => {}
        }
    }
}

/// Rules between documents that hold on every node and need no
/// node-local state: one static address per VirtualIP; VlanConfigs of a
/// cluster network share one MTU and never cover one node twice (as seen
/// from this node's labels); one IPPool per network; reservations usable
/// in their pool and unique per network; one VXLAN VNI per management
/// network. Pure, so the API path (`Daemon::apply_doc`) and the Kubernetes
/// source check exactly the same thing.
pub fn check_conflicts(
    v: &Validated,
    stored: &Others,
    node: &str,
    node_labels: &BTreeMap<String, String>,
) -> Result<(), ApiError> {
    fn typed<T: serde::de::DeserializeOwned>(v: &Validated) -> Result<T, ApiError> {
        serde_json::from_value(v.doc.clone()).map_err(|e| ApiError::internal(e.to_string()))
    }
    match v.kind {
        VirtualIp::KIND => {
            let new: VirtualIp = typed(v)?;
            if let Some(ip) = new.static_address() {
                if let Some(o) = stored
                    .vips
                    .iter()
                    .find(|o| o.metadata.name != v.name && o.static_address() == Some(ip))
                {
                    return Err(ApiError::invalid_field(
                        "spec.address",
                        format!("{ip} is already VirtualIP {:?}'s address", o.metadata.name),
                    ));
                }
            }
        }
        VlanConfig::KIND => {
            let new: VlanConfig = typed(v)?;
            for other in &stored.vlan_configs {
                if other.metadata.name == v.name
                    || other.spec.cluster_network != new.spec.cluster_network
                {
                    continue;
                }
                if other.spec.uplink.mtu() != new.spec.uplink.mtu() {
                    return Err(ApiError::invalid_field(
                        "spec.uplink.linkAttributes.mtu",
                        format!(
                            "{} differs from VlanConfig {:?}'s {} on cluster network {}: all uplinks of a cluster network share one MTU",
                            new.spec.uplink.mtu(),
                            other.metadata.name,
                            other.spec.uplink.mtu(),
                            new.spec.cluster_network
                        ),
                    ));
                }
                if selects(&other.spec.node_selector, node_labels)
                    && selects(&new.spec.node_selector, node_labels)
                {
                    return Err(ApiError::new(
                        code::CONFLICT,
                        format!(
                            "spec.nodeSelector: VlanConfig {:?} already covers node {node} on cluster network {}; two VlanConfigs may not cover one node",
                            other.metadata.name, new.spec.cluster_network
                        ),
                    ));
                }
            }
        }
        IpPool::KIND => {
            let new: IpPool = typed(v)?;
            // One pool per VLAN network: two would hand out addresses
            // from two ranges under two server identities on one segment.
            for o in &stored.ip_pools {
                if o.metadata.name != v.name && o.cni_network() == new.cni_network() {
                    return Err(ApiError::invalid_field(
                        "spec.networkName",
                        format!(
                            "network {:?} is already served by IPPool {:?}: expected one pool per network",
                            new.cni_network(),
                            o.metadata.name
                        ),
                    ));
                }
            }
        }
        VirtualMachineNetworkConfig::KIND => {
            let new: VirtualMachineNetworkConfig = typed(v)?;
            check_reservations(&new, stored)?;
        }
        ManagementNetwork::KIND => {
            let new: ManagementNetwork = typed(v)?;
            // One VXLAN device per VNI on a node: two networks sharing one
            // would mix their pods.
            if new.spec.backend == MgmtBackend::Vxlan {
                for o in &stored.management_networks {
                    if o.metadata.name != v.name
                        && o.spec.backend == MgmtBackend::Vxlan
                        && o.spec.vxlan_vni == new.spec.vxlan_vni
                    {
                        return Err(ApiError::invalid_field(
                            "spec.vxlanVNI",
                            format!(
                                "{} is already ManagementNetwork {:?}'s VNI: expected a VNI of its own",
                                new.spec.vxlan_vni, o.metadata.name
                            ),
                        ));
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// A VM's reserved addresses must be usable in its network's pool (in
/// the CIDR, not the server's, the router's, the network or broadcast
/// address) and reserved by no other VM; a MAC is reserved once per
/// network.
fn check_reservations(new: &VirtualMachineNetworkConfig, stored: &Others) -> Result<(), ApiError> {
    let pools = &stored.ip_pools;
    let others: Vec<&VirtualMachineNetworkConfig> = stored
        .vm_network_configs
        .iter()
        .filter(|o| o.metadata.name != new.metadata.name)
        .collect();
    for (i, e) in new.spec.network_configs.iter().enumerate() {
        let field = format!("spec.networkConfigs[{i}]");
        for o in &others {
            for oe in &o.spec.network_configs {
                if oe.cni_network() != e.cni_network() {
                    continue;
                }
                if oe.mac_address == e.mac_address {
                    return Err(ApiError::invalid_field(
                        &format!("{field}.macAddress"),
                        format!(
                            "{} on network {:?} is already VirtualMachineNetworkConfig {:?}'s: expected a MAC of this VM's own",
                            e.mac_address,
                            e.cni_network(),
                            o.metadata.name
                        ),
                    ));
                }
                if e.ip_address.is_some() && oe.ip_address == e.ip_address {
                    return Err(ApiError::invalid_field(
                        &format!("{field}.ipAddress"),
                        format!(
                            "{} on network {:?} is already reserved by VirtualMachineNetworkConfig {:?}",
                            e.ip_address.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
                            e.cni_network(),
                            o.metadata.name
                        ),
                    ));
                }
            }
        }
        let Some(ip) = e.ip_address else { continue };
        // Without a pool yet there is nothing to check against; the
        // pool's own validation keeps its addresses consistent.
        let Some(pool) = pools.iter().find(|p| p.cni_network() == e.cni_network()) else {
            continue;
        };
        let c = &pool.spec.ipv4_config;
        let why = if !c.cidr.contains(&ip) {
            Some(format!(
                "outside IPPool {:?}'s CIDR {}",
                pool.metadata.name, c.cidr
            ))
        } else if ip == c.server_ip {
            Some("the DHCP server's address".to_string())
        } else if Some(ip) == c.router {
            Some("the router's address".to_string())
        } else if c.cidr.prefix_len() < 31 && (ip == c.cidr.network() || ip == c.cidr.broadcast()) {
            Some(format!("the network or broadcast address of {}", c.cidr))
        } else {
            None
        };
        if let Some(why) = why {
            return Err(ApiError::invalid_field(
                &format!("{field}.ipAddress"),
                format!("{ip} is {why}: expected a host address of the pool's network"),
            ));
        }
    }
    Ok(())
}

impl Resources {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Resources { store }
    }

    /// The API's apply path without node-local checks (ports in use):
    /// validates, checks the rules between documents, stores.
    pub async fn apply_checked(
        &self,
        doc: &Value,
        node: &str,
        node_labels: &BTreeMap<String, String>,
    ) -> Result<Value, ApiError> {
        let v = validate(doc)?;
        self.check_stored_conflicts(&v, node, node_labels).await?;
        self.put(v).await
    }

    /// [`check_conflicts`] against the stored documents.
    pub async fn check_stored_conflicts(
        &self,
        v: &Validated,
        node: &str,
        node_labels: &BTreeMap<String, String>,
    ) -> Result<(), ApiError> {
        let mut stored = Others::default();
        for kind in Others::kinds_for(v.kind) {
            for d in self.list(kind).await? {
                stored.push(kind, d);
            }
        }
        check_conflicts(v, &stored, node, node_labels)
    }

    /// Stores a validated document. If it carries
    /// metadata.resourceVersion, the write only happens if the stored
    /// document is still at that version.
    pub async fn put(&self, v: Validated) -> Result<Value, ApiError> {
        let key = keys::resource(v.kind, &v.name);
        let existing = self.store.get(&key).await.map_err(store_error)?;
        let mut doc = v.doc;
        let wanted_rv = doc
            .pointer("/metadata/resourceVersion")
            .and_then(|x| x.as_str())
            .map(|s| s.to_string());
        let created = existing
            .as_ref()
            .and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
            .and_then(|d| d.pointer("/metadata/creationTimestamp").cloned())
            .unwrap_or_else(|| Value::String(crate::util::rfc3339(crate::util::now_secs())));
        if let Some(meta) = doc.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            meta.remove("resourceVersion");
            meta.insert("creationTimestamp".into(), created);
        }
        let mut txn = Txn::new();
        if let Some(rv) = &wanted_rv {
            let rev: u64 = rv.parse().map_err(|_| {
                ApiError::invalid_field(
                    "metadata.resourceVersion",
                    format!("{rv:?} is not a resource version"),
                )
            })?;
            txn = txn.when(Compare::ModRevision(key.clone(), rev));
        }
        let out = self
            .store
            .txn(txn.then(Op::put_json(key, &doc)))
            .await
            .map_err(store_error)?;
        if !out.succeeded {
            return Err(ApiError::new(
                code::CONFLICT,
                format!(
                    "{} {:?} was changed since resourceVersion {}: get it again and reapply",
                    v.kind,
                    v.name,
                    wanted_rv.unwrap_or_default()
                ),
            ));
        }
        set_rv(&mut doc, out.revision);
        Ok(doc)
    }

    pub async fn get(&self, kind: &str, name: &str) -> Result<Option<Value>, ApiError> {
        let kv = self
            .store
            .get(&keys::resource(kind, name))
            .await
            .map_err(store_error)?;
        Ok(kv.map(|kv| {
            let mut d: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
            set_rv(&mut d, kv.mod_revision);
            d
        }))
    }

    pub async fn list(&self, kind: &str) -> Result<Vec<Value>, ApiError> {
        let kvs = self
            .store
            .list(&keys::resources_of(kind))
            .await
            .map_err(store_error)?;
        Ok(kvs
            .into_iter()
            .filter_map(|kv| {
                let mut d: Value = serde_json::from_slice(&kv.value).ok()?;
                set_rv(&mut d, kv.mod_revision);
                Some(d)
            })
            .collect())
    }

    pub async fn delete(&self, kind: &str, name: &str) -> Result<bool, ApiError> {
        let key = keys::resource(kind, name);
        let out = self
            .store
            .txn(
                Txn::new()
                    .when(Compare::Present(key.clone()))
                    .then(Op::Delete(key)),
            )
            .await
            .map_err(store_error)?;
        Ok(out.succeeded)
    }

    pub async fn management_networks(&self) -> Result<Vec<ManagementNetwork>, ApiError> {
        self.typed(ManagementNetwork::KIND).await
    }

    /// Every stored document of a kind, typed; one that does not parse
    /// (written by another version) is logged and skipped.
    pub async fn typed<T: serde::de::DeserializeOwned>(
        &self,
        kind: &str,
    ) -> Result<Vec<T>, ApiError> {
        let docs = self.list(kind).await?;
        let mut out = Vec::new();
        for d in docs {
            match serde_json::from_value::<T>(d) {
                Ok(n) => out.push(n),
                Err(e) => {
                    tracing::error!(kind, error = %e, "stored resource does not parse; ignoring it")
                }
            }
        }
        Ok(out)
    }
}

fn set_rv(doc: &mut Value, rev: u64) {
    if let Some(meta) = doc.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.insert("resourceVersion".into(), Value::String(rev.to_string()));
    }
}

/// Every document of the config directory, in file-name order, each with
/// where it came from. A missing directory is simply empty.
pub fn read_config_dir(dir: &Path) -> Result<Vec<(String, Value)>, Vec<String>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(vec![format!("{}: {e}", dir.display())]),
    };
    let mut files: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    files.sort();
    for f in files {
        let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("");
        let json = match ext {
            "json" => true,
            "yaml" | "yml" => false,
            _ => continue,
        };
        match std::fs::read_to_string(&f)
            .map_err(|e| e.to_string())
            .and_then(|t| parse_documents(&t, json))
        {
            Ok(docs) => {
                for (i, d) in docs.into_iter().enumerate() {
                    out.push((format!("{} (document {})", f.display(), i + 1), d));
                }
            }
            Err(e) => errors.push(format!("{}: {e}", f.display())),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use furrow_api::resource;
    use serde_json::json;

    #[test]
    fn validate_names_the_bad_field() {
        let doc = json!({
            "apiVersion": resource::API_VERSION, "kind": "ManagementNetwork",
            "metadata": {"name": "mgmt"}, "spec": {"mtu": "big"}
        });
        let e = validate(&doc).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(e.msg.contains("spec.mtu"), "{}", e.msg);
        let doc = json!({
            "apiVersion": resource::API_VERSION, "kind": "ManagementNetwork",
            "metadata": {"name": "mgmt"}, "spec": {"clusterCIDR": "10.0.0.0/33"}
        });
        assert!(validate(&doc).unwrap_err().msg.contains("spec.clusterCIDR"));
        let doc = json!({"apiVersion": "v1", "kind": "ManagementNetwork", "metadata": {"name": "x"}, "spec": {}});
        assert!(validate(&doc).unwrap_err().msg.starts_with("apiVersion"));
    }

    #[test]
    fn validate_fills_defaults_and_drops_status() {
        let doc = json!({
            "apiVersion": resource::API_VERSION, "kind": "ManagementNetwork",
            "metadata": {"name": "mgmt"}, "spec": {}, "status": {"nodeSubnets": {}}
        });
        let v = validate(&doc).unwrap();
        assert_eq!(v.doc["spec"]["clusterCIDR"], "10.52.0.0/16");
        assert!(v.doc.get("status").is_none());
    }

    #[test]
    fn conflicts_between_documents_are_refused_naming_the_field() {
        let labels = BTreeMap::from([("kubernetes.io/hostname".to_string(), "n1".to_string())]);
        let vip = |name: &str, addr: &str| {
            json!({"apiVersion": resource::API_VERSION, "kind": "VirtualIP",
                "metadata": {"name": name}, "spec": {"address": addr, "interface": "eth0"}})
        };
        fn typed<T: serde::de::DeserializeOwned>(d: &Value) -> T {
            serde_json::from_value(validate(d).unwrap().doc).unwrap()
        }
        let vips = Others {
            vips: vec![typed(&vip("a", "10.0.0.1"))],
            ..Default::default()
        };
        let e = check_conflicts(
            &validate(&vip("b", "10.0.0.1")).unwrap(),
            &vips,
            "n1",
            &labels,
        )
        .unwrap_err();
        assert!(e.msg.starts_with("spec.address"), "{}", e.msg);
        // The same VIP again, or another address, is fine.
        assert!(check_conflicts(
            &validate(&vip("a", "10.0.0.1")).unwrap(),
            &vips,
            "n1",
            &labels
        )
        .is_ok());
        assert!(check_conflicts(
            &validate(&vip("b", "10.0.0.2")).unwrap(),
            &vips,
            "n1",
            &labels
        )
        .is_ok());
        let vc = |name: &str, sel: Value, mtu: u32| {
            json!({"apiVersion": resource::API_VERSION, "kind": "VlanConfig", "metadata": {"name": name},
                "spec": {"clusterNetwork": "data", "nodeSelector": sel,
                         "uplink": {"nics": ["eth1"], "linkAttributes": {"mtu": mtu}}}})
        };
        let vcs = Others {
            vlan_configs: vec![typed(&vc("all", json!({}), 1500))],
            ..Default::default()
        };
        let check = |d: Value| check_conflicts(&validate(&d).unwrap(), &vcs, "n1", &labels);
        let e = check(vc("n1", json!({"kubernetes.io/hostname": "n1"}), 1500)).unwrap_err();
        assert_eq!(e.code, code::CONFLICT);
        assert!(e.msg.starts_with("spec.nodeSelector"), "{}", e.msg);
        let e = check(vc("n2", json!({"kubernetes.io/hostname": "n2"}), 9000)).unwrap_err();
        assert!(
            e.msg.starts_with("spec.uplink.linkAttributes.mtu"),
            "{}",
            e.msg
        );
        // Another node's uplink with the same MTU does not cover this node.
        assert!(check(vc("n2", json!({"kubernetes.io/hostname": "n2"}), 1500)).is_ok());
    }
}
