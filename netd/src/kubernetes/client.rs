//! The kube-rs shell around the pure core: watches every Furrow kind and
//! NADs (`DynamicObject`, so no generated types are needed), mirrors the
//! desired documents into netd's store, patches `/status`, and reads and
//! writes VIP Leases. Never run against a real API server in CI (none can
//! run there); the logic it drives is tested with recorded objects.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use serde_json::Value;

use super::lease::{self, LeaseApi, LeaseApiError, Written};
use super::state::{Change, KubeEvent, KubeState};
use super::translate::{Collection, NAD_KIND, NAD_PLURAL};
use crate::store::{keys, Op, Store, StoreError, Txn};

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("Kubernetes API: {0}")]
    Api(#[from] kube::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{what} does not convert: {msg}")]
    Convert { what: String, msg: String },
}

/// The API resource of a watched collection (group, version, plural).
pub fn api_resource(c: &Collection) -> ApiResource {
    let (group, version) = c
        .api_version
        .split_once('/')
        .unwrap_or(("", c.api_version.as_str()));
    let plural = if c.kind == NAD_KIND {
        NAD_PLURAL.to_string()
    } else {
        furrow_api::resource::KINDS
            .iter()
            .find(|(k, _)| *k == c.kind)
            .map(|(_, p)| p.to_string())
            .unwrap_or_else(|| c.kind.to_ascii_lowercase() + "s")
    };
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, &c.kind), &plural)
}

fn to_value(o: DynamicObject, c: &Collection) -> Result<Value, KubeError> {
    let mut v = serde_json::to_value(&o).map_err(|e| KubeError::Convert {
        what: c.kind.clone(),
        msg: e.to_string(),
    })?;
    if let Some(m) = v.as_object_mut() {
        m.entry("apiVersion")
            .or_insert_with(|| Value::String(c.api_version.clone()));
        m.entry("kind")
            .or_insert_with(|| Value::String(c.kind.clone()));
    }
    Ok(v)
}

/// Mirrors Furrow's objects and NADs into `store` for as long as the
/// watches run (they recover by themselves, with backoff). The documents
/// the store already holds seed the state, so a restart keeps a resource
/// whose current object is invalid.
pub async fn run_source(
    client: kube::Client,
    store: Arc<dyn Store>,
    mut state: KubeState,
    synced: tokio::sync::watch::Sender<bool>,
    problems: Arc<std::sync::Mutex<Vec<String>>>,
) -> Result<(), KubeError> {
    let mut seed = Vec::new();
    for prefix in ["/furrow/resources/", keys::NETWORK_ATTACHMENTS] {
        for kv in store.list(prefix).await? {
            let doc: Value = kv.decode()?;
            seed.push((kv.key, doc));
        }
    }
    state.seed(seed);
    let watches = Collection::all().into_iter().map(|c| {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &api_resource(&c));
        watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .map(move |ev| (c.clone(), ev))
            .boxed()
    });
    let mut all = stream::select_all(watches);
    let mut lister = Lister::default();
    let recorder = kube::runtime::events::Recorder::new(
        client.clone(),
        kube::runtime::events::Reporter {
            controller: "furrow-netd".into(),
            instance: Some(state.node().to_string()),
        },
    );
    // Refusals already reported as Events: each once while it lasts.
    let mut reported = std::collections::HashSet::new();
    while let Some((c, ev)) = all.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(kind = %c.kind, error = %e, "Kubernetes watch failed; retrying");
                continue;
            }
        };
        let ev = match as_values(ev, &c) {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(error = %e, "Kubernetes object skipped");
                continue;
            }
        };
        let Some(kev) = lister.on_event(c, ev) else {
            continue;
        };
        let out = state.apply(kev);
        for r in &out.rejected {
            tracing::warn!(object = %r, "Kubernetes object not applied");
        }
        commit(store.as_ref(), &out.changes).await;
        // What `netctl status` shows: every object not in effect now.
        let now_refused = state.problems();
        *problems.lock().expect("poisoned") = now_refused.iter().map(|r| r.to_string()).collect();
        report_refusals(&recorder, &now_refused, &mut reported);
        if lister.all_listed() && !*synced.borrow() {
            tracing::info!("resources listed from Kubernetes");
            synced.send_replace(true);
        }
    }
    Ok(())
}

/// A Warning Event (reason `Refused`, the field and what is expected as
/// its note) on every object newly not in effect; a refusal that ends and
/// comes back is reported again. Sent in the background: the watch loop
/// does not wait for the API server.
fn report_refusals(
    recorder: &kube::runtime::events::Recorder,
    refused: &[super::state::Rejection],
    reported: &mut std::collections::HashSet<String>,
) {
    let now: std::collections::HashSet<String> = refused.iter().map(|r| r.to_string()).collect();
    reported.retain(|r| now.contains(r));
    for r in refused {
        let Some(obj) = &r.object else { continue };
        if !reported.insert(r.to_string()) {
            continue;
        }
        let (reference, event) = refusal_event(obj, &r.reason);
        let recorder = recorder.clone();
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::debug!(error = %e, "publishing a Kubernetes Event failed");
            }
        });
    }
}

/// The Event saying why `obj` is not in effect.
fn refusal_event(
    obj: &super::translate::ObjectRef,
    reason: &super::translate::Invalid,
) -> (
    k8s_openapi::api::core::v1::ObjectReference,
    kube::runtime::events::Event,
) {
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(obj.collection.api_version.clone()),
        kind: Some(obj.collection.kind.clone()),
        name: Some(obj.name.clone()),
        namespace: obj.namespace.clone(),
        ..Default::default()
    };
    let mut note = reason.to_string();
    // The Events API limits the note to 1 kB.
    if note.len() > 1000 {
        let mut cut = 1000;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
    }
    let event = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Warning,
        reason: "Refused".into(),
        note: Some(note),
        action: "Apply".into(),
        secondary: None,
    };
    (reference, event)
}

fn as_values(ev: Event<DynamicObject>, c: &Collection) -> Result<Event<Value>, KubeError> {
    Ok(match ev {
        Event::Init => Event::Init,
        Event::InitDone => Event::InitDone,
        Event::InitApply(o) => Event::InitApply(to_value(o, c)?),
        Event::Apply(o) => Event::Apply(to_value(o, c)?),
        Event::Delete(o) => Event::Delete(to_value(o, c)?),
    })
}

/// kube-runtime's watcher events → the core's: the objects between
/// `Init` and `InitDone` are one re-list.
pub struct Lister {
    listing: HashMap<Collection, Vec<Value>>,
    unlisted: std::collections::BTreeSet<Collection>,
}

impl Default for Lister {
    fn default() -> Self {
        Lister {
            listing: HashMap::new(),
            unlisted: Collection::all().into_iter().collect(),
        }
    }
}

impl Lister {
    pub fn on_event(&mut self, c: Collection, ev: Event<Value>) -> Option<KubeEvent> {
        match ev {
            Event::Init => {
                self.listing.insert(c, Vec::new());
                None
            }
            Event::InitApply(v) => {
                self.listing.entry(c).or_default().push(v);
                None
            }
            Event::InitDone => {
                self.unlisted.remove(&c);
                Some(KubeEvent::Relist {
                    items: self.listing.remove(&c).unwrap_or_default(),
                    collection: c,
                    resource_version: None,
                })
            }
            Event::Apply(v) => Some(KubeEvent::Modified(v)),
            Event::Delete(v) => Some(KubeEvent::Deleted(v)),
        }
    }

    /// Every collection was listed at least once.
    pub fn all_listed(&self) -> bool {
        self.unlisted.is_empty()
    }
}

/// A client from in-cluster credentials, or KUBECONFIG.
pub async fn connect() -> Result<kube::Client, KubeError> {
    Ok(kube::Client::try_default().await?)
}

/// This node's labels from its Node object.
pub async fn node_labels(
    client: &kube::Client,
    node: &str,
) -> Result<std::collections::BTreeMap<String, String>, KubeError> {
    let api: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    Ok(api.get(node).await?.metadata.labels.unwrap_or_default())
}

/// Creates an object unless it exists (never updates one: 409 means it
/// is there). Returns whether it was created.
pub async fn create_if_missing(client: &kube::Client, doc: &Value) -> Result<bool, KubeError> {
    let convert = |msg: String| KubeError::Convert {
        what: "default resource".into(),
        msg,
    };
    let c = Collection::new(
        doc["apiVersion"].as_str().unwrap_or_default(),
        doc["kind"].as_str().unwrap_or_default(),
    );
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &api_resource(&c));
    let obj: DynamicObject =
        serde_json::from_value(doc.clone()).map_err(|e| convert(e.to_string()))?;
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Starts mirroring resources into `store`. The receiver turns true once
/// every collection was listed once.
pub fn start_source(
    client: kube::Client,
    store: Arc<dyn Store>,
    node: &str,
    node_labels: std::collections::BTreeMap<String, String>,
    problems: Arc<std::sync::Mutex<Vec<String>>>,
) -> tokio::sync::watch::Receiver<bool> {
    if store.backend() == "embedded" {
        tracing::warn!(
            "resources from Kubernetes with the embedded store: this node elects itself for every VIP and leases subnets on its own; nodes sharing a cluster need --store etcd"
        );
    }
    let (tx, rx) = tokio::sync::watch::channel(false);
    let state = KubeState::new(node, node_labels);
    tokio::spawn(async move {
        if let Err(e) = run_source(client, store, state, tx, problems).await {
            tracing::error!(error = %e, "the Kubernetes resource source stopped");
        }
    });
    rx
}

/// Keeps `status.nodeSubnets.<node>` of each ManagementNetwork current
/// with this node's subnet leases.
pub fn spawn_status_writer(client: kube::Client, store: Arc<dyn Store>, node: String) {
    use crate::store::WatchError;
    use furrow_api::resource::{ManagementNetwork, API_VERSION};
    tokio::spawn(async move {
        let mgmt = Collection::new(API_VERSION, ManagementNetwork::KIND);
        let mut written: std::collections::BTreeMap<String, Option<ipnet::Ipv4Net>> =
            Default::default();
        let mut w = store.watch("/furrow/subnets/");
        loop {
            match crate::store::list_json::<crate::subnets::SubnetLease>(
                store.as_ref(),
                "/furrow/subnets/",
            )
            .await
            {
                Ok(leases) => {
                    let mine = super::status::node_subnets(&leases, &node);
                    let nets: std::collections::BTreeSet<String> =
                        mine.keys().chain(written.keys()).cloned().collect();
                    for net in nets {
                        let want = mine.get(&net).copied();
                        let have = written.get(&net).copied().flatten();
                        let current = serde_json::json!({"status": {"nodeSubnets": {&node: have.map(|s| s.to_string())}}});
                        let Some(patch) = super::status::node_subnet_patch(&current, &node, want)
                        else {
                            written.insert(net, want);
                            continue;
                        };
                        match patch_status(client.clone(), &mgmt, None, &net, &patch).await {
                            Ok(()) => {
                                written.insert(net, want);
                            }
                            // Not a Kubernetes object (netd's default network).
                            Err(KubeError::Api(kube::Error::Api(s))) if s.code == 404 => {
                                written.insert(net, want);
                            }
                            Err(e) => {
                                tracing::warn!(network = %net, error = %e, "writing ManagementNetwork status failed")
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "reading subnet leases for status failed"),
            }
            match w.next().await {
                Ok(_) | Err(WatchError::Lagged(_)) => {}
                Err(WatchError::Closed) => return,
            }
        }
    });
}

/// Writes the core's changes; retried until the store takes them, since
/// the core has already moved on (a dropped change would never be sent
/// again).
async fn commit(store: &dyn Store, changes: &[Change]) {
    // Under etcd's default limit of 128 operations per transaction.
    for chunk in changes.chunks(100) {
        let mut txn = Txn::new();
        for c in chunk {
            txn = txn.then(match c {
                Change::Put { key, doc } => Op::put_json(key.clone(), doc),
                Change::Delete { key } => Op::Delete(key.clone()),
            });
        }
        loop {
            match store.txn(txn.clone()).await {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "storing Kubernetes resources failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// Patches an object's `/status` with a JSON merge patch (see `status`).
pub async fn patch_status(
    client: kube::Client,
    c: &Collection,
    namespace: Option<&str>,
    name: &str,
    patch: &Value,
) -> Result<(), KubeError> {
    let ar = api_resource(c);
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client, ns, &ar),
        None => Api::all_with(client, &ar),
    };
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}

/// VIP Leases in one namespace (netd's own): the election's
/// [`lease::LeaseApi`] over kube-rs.
pub struct Leases {
    api: Api<Lease>,
    namespace: String,
}

impl Leases {
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Leases {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
        }
    }

    async fn write(&self, v: &Value, create: bool) -> Result<Written, KubeError> {
        let l: Lease = serde_json::from_value(v.clone()).map_err(|e| KubeError::Convert {
            what: "Lease".into(),
            msg: e.to_string(),
        })?;
        let name = l.metadata.name.clone().unwrap_or_default();
        let res = if create {
            self.api.create(&PostParams::default(), &l).await
        } else {
            // metadata.resourceVersion makes this a compare-and-swap.
            self.api.replace(&name, &PostParams::default(), &l).await
        };
        match res {
            Ok(l) => Ok(Written::Done(lease_value(&l)?)),
            // 409: changed since read (or exists, for a create); 404: gone
            // since read. Either way: read again.
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(Written::Conflict),
            Err(e) => Err(e.into()),
        }
    }
}

fn api_error(e: KubeError) -> LeaseApiError {
    LeaseApiError(e.to_string())
}

#[async_trait::async_trait]
impl LeaseApi for Leases {
    fn namespace(&self) -> &str {
        &self.namespace
    }

    async fn get(&self, name: &str) -> Result<Option<Value>, LeaseApiError> {
        match self.api.get_opt(name).await {
            Ok(Some(l)) => lease_value(&l).map(Some).map_err(api_error),
            Ok(None) => Ok(None),
            Err(e) => Err(api_error(e.into())),
        }
    }

    async fn create(&self, lease: &Value) -> Result<Written, LeaseApiError> {
        self.write(lease, true).await.map_err(api_error)
    }

    async fn replace(&self, lease: &Value) -> Result<Written, LeaseApiError> {
        self.write(lease, false).await.map_err(api_error)
    }

    async fn delete(&self, name: &str) -> Result<(), LeaseApiError> {
        match self.api.delete(name, &Default::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(api_error(e.into())),
        }
    }
}

fn lease_value(l: &Lease) -> Result<Value, KubeError> {
    let mut v = serde_json::to_value(l).map_err(|e| KubeError::Convert {
        what: "Lease".into(),
        msg: e.to_string(),
    })?;
    if let Some(m) = v.as_object_mut() {
        m.insert(
            "apiVersion".into(),
            Value::String(lease::API_VERSION.into()),
        );
        m.insert("kind".into(), Value::String(lease::KIND.into()));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_refused_object_becomes_a_warning_event_once() {
        let c = Collection::new(furrow_api::resource::API_VERSION, "IPPool");
        let obj = super::super::translate::ObjectRef {
            collection: c,
            namespace: Some("default".into()),
            name: "pool1".into(),
        };
        let why = super::super::translate::Invalid::new("spec.ipv4Config.cidr", "x".repeat(2000));
        let (r, e) = refusal_event(&obj, &why);
        assert_eq!(r.kind.as_deref(), Some("IPPool"));
        assert_eq!(r.namespace.as_deref(), Some("default"));
        assert_eq!(r.name.as_deref(), Some("pool1"));
        assert_eq!(
            r.api_version.as_deref(),
            Some(furrow_api::resource::API_VERSION)
        );
        assert_eq!(e.reason, "Refused");
        assert_eq!(e.type_, kube::runtime::events::EventType::Warning);
        let note = e.note.unwrap();
        assert!(note.starts_with("spec.ipv4Config.cidr"), "{note}");
        assert!(note.len() <= 1000);
    }

    #[test]
    fn api_resources_of_every_collection() {
        let ar = api_resource(&Collection::nads());
        assert_eq!(
            (ar.group.as_str(), ar.version.as_str()),
            ("k8s.cni.cncf.io", "v1")
        );
        assert_eq!(ar.plural, "network-attachment-definitions");
        let ar = api_resource(&Collection::new(
            furrow_api::resource::API_VERSION,
            "IPPool",
        ));
        assert_eq!(
            (ar.group.as_str(), ar.version.as_str()),
            ("network.furrow.io", "v1alpha1")
        );
        assert_eq!(
            (ar.kind.as_str(), ar.plural.as_str()),
            ("IPPool", "ippools")
        );
        assert_eq!(
            Collection::all().len(),
            furrow_api::resource::KINDS.len() + 1
        );
    }

    #[test]
    fn watcher_events_become_relists_and_changes() {
        let c = Collection::new(furrow_api::resource::API_VERSION, "ClusterNetwork");
        let obj = |name: &str, rv: &str| {
            json!({"apiVersion": c.api_version, "kind": "ClusterNetwork",
                "metadata": {"name": name, "uid": name, "resourceVersion": rv}, "spec": {}})
        };
        let mut l = Lister::default();
        let mut state = KubeState::new("n1", Default::default());
        assert_eq!(l.on_event(c.clone(), Event::Init), None);
        assert_eq!(l.on_event(c.clone(), Event::InitApply(obj("a", "3"))), None);
        assert_eq!(l.on_event(c.clone(), Event::InitApply(obj("b", "4"))), None);
        let relist = l.on_event(c.clone(), Event::InitDone).unwrap();
        assert_eq!(state.apply(relist).changes.len(), 2);
        assert!(!l.all_listed(), "other kinds not listed yet");
        for other in Collection::all() {
            if other != c {
                l.on_event(other.clone(), Event::Init);
                l.on_event(other, Event::InitDone);
            }
        }
        assert!(l.all_listed());
        // A watch restarted after 410: b is gone from the new list.
        l.on_event(c.clone(), Event::Init);
        l.on_event(c.clone(), Event::InitApply(obj("a", "3")));
        let out = state.apply(l.on_event(c.clone(), Event::InitDone).unwrap());
        assert_eq!(
            out.changes,
            vec![Change::Delete {
                key: "/furrow/resources/ClusterNetwork/b".into()
            }]
        );
        let del = l.on_event(c.clone(), Event::Delete(obj("a", "9"))).unwrap();
        assert_eq!(state.apply(del).changes.len(), 1);
        assert!(state.desired().is_empty());
    }
}
