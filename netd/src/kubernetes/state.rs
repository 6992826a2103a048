//! The Kubernetes source's state: watch events and re-lists in, netd's
//! desired documents (store key → document) and the store changes to make
//! out. Pure and synchronous so it can be driven by recorded API objects.
//!
//! Semantics, chosen to match what the API path does with the same
//! sequence of applies and deletes:
//! - an object that translates is stored as its document; one that does
//!   not (invalid, or in conflict with another: a VirtualIP's address,
//!   VlanConfigs on one node) is reported with the field and skipped, and
//!   the version accepted before it stays, as a refused apply leaves the
//!   stored document alone;
//! - events older than what was seen of an object (its resourceVersion, or
//!   a deletion after it) are ignored, so replays and reordering between
//!   watches cannot undo newer state;
//! - a re-list of a collection is the truth for it: objects missing from
//!   it are deleted, and re-listing the same objects changes nothing;
//! - documents already in the store when netd starts ([`KubeState::seed`])
//!   stand until the first re-list of their collection decides them, so a
//!   restart does not drop a resource whose current object is invalid.

use std::collections::BTreeMap;

use serde_json::Value;

use super::translate::{
    object_info, parse_resource_version, translate, Collection, Invalid, ObjectInfo, ObjectRef,
    Translated,
};
use crate::resources::{check_conflicts, Others, Validated};
use crate::store::keys;

/// One event of a watch, or a re-list.
#[derive(Debug, Clone, PartialEq)]
pub enum KubeEvent {
    Added(Value),
    Modified(Value),
    Deleted(Value),
    /// The server's progress marker: no object changed.
    Bookmark {
        collection: Collection,
        resource_version: u64,
    },
    /// A complete list of a collection (the initial list, or after the
    /// watch expired). `resource_version` is the list's, when known.
    Relist {
        collection: Collection,
        items: Vec<Value>,
        resource_version: Option<u64>,
    },
    /// 410 Gone: the watch's resourceVersion is too old; re-list.
    Expired {
        collection: Collection,
    },
}

/// A change to make in netd's store.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Put { key: String, doc: Value },
    Delete { key: String },
}

impl Change {
    pub fn key(&self) -> &str {
        match self {
            Change::Put { key, .. } | Change::Delete { key } => key,
        }
    }
}

/// An object that could not be used, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// None when even the object's identity could not be read.
    pub object: Option<ObjectRef>,
    pub reason: Invalid,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.object {
            Some(o) => write!(f, "{o}: {}", self.reason),
            None => write!(f, "{}", self.reason),
        }
    }
}

/// What one event did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Store changes, in order; empty when nothing netd stores changed.
    pub changes: Vec<Change>,
    /// Objects refused by this event.
    pub rejected: Vec<Rejection>,
    /// Events ignored as older than what was already seen.
    pub stale: Vec<ObjectRef>,
    /// The watch must be restarted with a re-list.
    pub relist: bool,
}

#[derive(Debug, Clone)]
struct Tracked {
    info: ObjectInfo,
    raw: Value,
    /// Why the current version is not in effect, if it is not.
    problem: Option<Invalid>,
}

/// Who provides a desired document.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owner {
    Object(ObjectRef),
    /// Found in the store at start; no object has claimed it yet.
    Seeded,
}

#[derive(Debug, Clone)]
pub struct KubeState {
    node: String,
    node_labels: BTreeMap<String, String>,
    objects: BTreeMap<ObjectRef, Tracked>,
    /// Deleted objects and the resourceVersion of their deletion, until a
    /// re-list of their collection makes them moot.
    tombstones: BTreeMap<ObjectRef, u64>,
    desired: BTreeMap<String, (Value, Owner)>,
    /// The latest resourceVersion seen per collection (to resume a watch).
    progress: BTreeMap<Collection, u64>,
}

impl KubeState {
    /// `node` and its labels decide the VlanConfig overlap rule, as on
    /// the API path.
    pub fn new(node: &str, node_labels: BTreeMap<String, String>) -> Self {
        KubeState {
            node: node.to_string(),
            node_labels,
            objects: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            desired: BTreeMap::new(),
            progress: BTreeMap::new(),
        }
    }

    /// Starts from the documents netd's store already holds under the
    /// keys this source owns (keys of other prefixes are ignored).
    pub fn seed(&mut self, docs: impl IntoIterator<Item = (String, Value)>) {
        for (key, mut doc) in docs {
            if Collection::of_key(&key).is_none() {
                continue;
            }
            // The store's revision is not part of the document.
            if let Some(m) = doc.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                m.remove("resourceVersion");
            }
            self.desired.insert(key, (doc, Owner::Seeded));
        }
    }

    /// The desired documents: store key → document.
    pub fn desired(&self) -> BTreeMap<String, Value> {
        self.desired
            .iter()
            .map(|(k, (d, _))| (k.clone(), d.clone()))
            .collect()
    }

    /// Objects whose current version is not in effect, with the reason.
    /// The node this state is for.
    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn problems(&self) -> Vec<Rejection> {
        self.objects
            .values()
            .filter_map(|t| {
                t.problem.as_ref().map(|p| Rejection {
                    object: Some(t.info.obj.clone()),
                    reason: p.clone(),
                })
            })
            .collect()
    }

    /// The latest resourceVersion seen of a collection.
    pub fn progress(&self, c: &Collection) -> Option<u64> {
        self.progress.get(c).copied()
    }

    pub fn apply(&mut self, ev: KubeEvent) -> Outcome {
        let before = self.desired();
        let mut out = Outcome::default();
        match ev {
            KubeEvent::Added(obj) | KubeEvent::Modified(obj) => self.upsert(obj, &mut out),
            KubeEvent::Deleted(obj) => self.delete(obj, &mut out),
            KubeEvent::Bookmark {
                collection,
                resource_version,
            } => self.advance(&collection, resource_version),
            KubeEvent::Relist {
                collection,
                items,
                resource_version,
            } => self.relist(collection, items, resource_version, &mut out),
            KubeEvent::Expired { .. } => out.relist = true,
        }
        if self.desired() != before {
            // A change may settle a conflict another object was refused for.
            self.retry_refused(&mut out);
        }
        out.changes = diff(&before, &self.desired());
        out
    }

    fn advance(&mut self, c: &Collection, rv: u64) {
        let p = self.progress.entry(c.clone()).or_default();
        *p = (*p).max(rv);
    }

    /// Whether an event at `info` is older than what was seen.
    fn is_stale(&self, info: &ObjectInfo) -> bool {
        let seen = self.objects.get(&info.obj).map(|t| t.info.resource_version);
        let gone = self.tombstones.get(&info.obj).copied();
        seen.max(gone).is_some_and(|rv| info.resource_version <= rv)
    }

    /// The identity of an event's object if it is newer than what was
    /// seen (and the collection's resource version advanced to it); an
    /// unidentifiable object is rejected, a stale one noted.
    fn fresh(&mut self, obj: &Value, out: &mut Outcome) -> Option<ObjectInfo> {
        let info = match object_info(obj) {
            Ok(i) => i,
            Err(reason) => {
                out.rejected.push(Rejection {
                    object: None,
                    reason,
                });
                return None;
            }
        };
        if self.is_stale(&info) {
            out.stale.push(info.obj);
            return None;
        }
        self.advance(&info.obj.collection, info.resource_version);
        Some(info)
    }

    fn upsert(&mut self, obj: Value, out: &mut Outcome) {
        let Some(info) = self.fresh(&obj, out) else {
            return;
        };
        self.tombstones.remove(&info.obj);
        let problem = self.take_in(&info, &obj);
        if let Some(p) = &problem {
            out.rejected.push(Rejection {
                object: Some(info.obj.clone()),
                reason: p.clone(),
            });
        }
        self.objects.insert(
            info.obj.clone(),
            Tracked {
                info,
                raw: obj,
                problem,
            },
        );
    }

    /// Puts the object's document into the desired state if it translates
    /// and conflicts with nothing; returns why not otherwise (the
    /// previous document, if any, stays).
    fn take_in(&mut self, info: &ObjectInfo, obj: &Value) -> Option<Invalid> {
        let me = Owner::Object(info.obj.clone());
        match translate(obj) {
            Err(e) => {
                // The document from the store stands for this object now
                // (and goes when it is deleted).
                if let Some((_, owner)) = key_of(&info.obj).and_then(|k| self.desired.get_mut(&k)) {
                    if *owner == Owner::Seeded {
                        *owner = me;
                    }
                }
                Some(e)
            }
            Ok(Translated::NotOurs) => {
                // A NAD whose config stopped being Furrow's.
                self.desired.retain(|_, (_, o)| *o != me);
                None
            }
            Ok(Translated::Document { key, mut doc }) => {
                if let Some((_, Owner::Object(other))) = self.desired.get(&key) {
                    if *other != info.obj {
                        // Two namespaces' objects of one name: one key.
                        return Some(Invalid::new(
                            "metadata.name",
                            format!("{key} is already {other}'s"),
                        ));
                    }
                }
                if let Err(e) = self.check_conflicts(&key, &doc) {
                    if !self.evict_younger(info, &key, &doc) {
                        return Some(e);
                    }
                }
                // The first creationTimestamp of the resource stays, as
                // the API path keeps the time it was first applied.
                if let Some((old, _)) = self.desired.get(&key) {
                    if let (Some(ts), Some(m)) = (
                        old.pointer("/metadata/creationTimestamp").cloned(),
                        doc.get_mut("metadata").and_then(|m| m.as_object_mut()),
                    ) {
                        m.insert("creationTimestamp".into(), ts);
                    }
                }
                self.desired.insert(key, (doc, me));
                None
            }
        }
    }

    /// Of conflicting objects the oldest (creationTimestamp, then
    /// resourceVersion) is in effect, as the first applied is on the API
    /// path, whatever order the watches of different kinds deliver them
    /// in: every node then agrees. Takes out the documents of objects
    /// younger than `info` that the rules for its kind look at; if that
    /// settles the conflict, the younger ones are tried again after it
    /// (and refused if they still conflict). Returns whether it did.
    fn evict_younger(&mut self, info: &ObjectInfo, key: &str, doc: &Value) -> bool {
        let kind = doc.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        let prefixes: Vec<String> = Others::kinds_for(kind)
            .iter()
            .map(|k| keys::resources_of(k))
            .collect();
        let age = |i: &ObjectInfo| (i.creation_timestamp.clone(), i.resource_version);
        let mine = age(info);
        let mut younger: Vec<(String, Value, Owner)> = Vec::new();
        for (k, (d, owner)) in &self.desired {
            let Owner::Object(o) = owner else { continue };
            if k == key || !prefixes.iter().any(|p| k.starts_with(p.as_str())) {
                continue;
            }
            if self.objects.get(o).is_some_and(|t| age(&t.info) > mine) {
                younger.push((k.clone(), d.clone(), owner.clone()));
            }
        }
        if younger.is_empty() {
            return false;
        }
        for (k, _, _) in &younger {
            self.desired.remove(k);
        }
        if self.check_conflicts(key, doc).is_err() {
            for (k, d, o) in younger {
                self.desired.insert(k, (d, o));
            }
            return false;
        }
        self.desired.insert(
            key.to_string(),
            (doc.clone(), Owner::Object(info.obj.clone())),
        );
        let mut retry: Vec<(ObjectInfo, Value)> = younger
            .iter()
            .filter_map(|(_, _, o)| match o {
                Owner::Object(o) => self.objects.get(o).map(|t| (t.info.clone(), t.raw.clone())),
                Owner::Seeded => None,
            })
            .collect();
        retry.sort_by_key(|(i, _)| age(i));
        for (i, raw) in retry {
            let problem = self.take_in(&i, &raw);
            if let Some(t) = self.objects.get_mut(&i.obj) {
                t.problem = problem;
            }
        }
        true
    }

    fn check_conflicts(&self, key: &str, doc: &Value) -> Result<(), Invalid> {
        let kind = doc.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        let Some(kind) = furrow_api::resource::canonical_kind(kind).filter(|k| *k == kind) else {
            return Ok(());
        };
        // The same view of the other documents the API path reads from
        // the store.
        let mut stored = Others::default();
        for k in Others::kinds_for(kind) {
            let prefix = keys::resources_of(k);
            for (_, (d, _)) in self
                .desired
                .iter()
                .filter(|(dk, _)| dk.starts_with(&prefix) && dk.as_str() != key)
            {
                stored.push(k, d.clone());
            }
        }
        let v = Validated {
            kind,
            name: doc
                .pointer("/metadata/name")
                .and_then(|n| n.as_str())
                .unwrap_or("")
                .to_string(),
            doc: doc.clone(),
        };
        check_conflicts(&v, &stored, &self.node, &self.node_labels)
            .map_err(|e| Invalid::new("", e.msg))
    }

    fn delete(&mut self, obj: Value, out: &mut Outcome) {
        let Some(info) = self.fresh(&obj, out) else {
            return;
        };
        self.forget(&info.obj, info.resource_version);
    }

    /// The object is gone as of `rv`: its document goes with it.
    fn forget(&mut self, obj: &ObjectRef, rv: u64) {
        self.objects.remove(obj);
        self.tombstones.insert(obj.clone(), rv);
        let me = Owner::Object(obj.clone());
        self.desired.retain(|_, (_, o)| *o != me);
    }

    fn relist(
        &mut self,
        collection: Collection,
        items: Vec<Value>,
        list_rv: Option<u64>,
        out: &mut Outcome,
    ) {
        let mut listed = Vec::new();
        for mut item in items {
            // List items of built-in kinds come without apiVersion/kind.
            if let Some(o) = item.as_object_mut() {
                o.entry("apiVersion")
                    .or_insert_with(|| Value::String(collection.api_version.clone()));
                o.entry("kind")
                    .or_insert_with(|| Value::String(collection.kind.clone()));
            }
            match object_info(&item) {
                Ok(i) if i.obj.collection == collection => listed.push((i, item)),
                Ok(i) => out.rejected.push(Rejection {
                    object: Some(i.obj),
                    reason: Invalid::new("kind", format!("not in a list of {}", collection.kind)),
                }),
                Err(reason) => out.rejected.push(Rejection {
                    object: None,
                    reason,
                }),
            }
        }
        let present: std::collections::BTreeSet<&ObjectRef> =
            listed.iter().map(|(i, _)| &i.obj).collect();
        let gone: Vec<(ObjectRef, u64)> = self
            .objects
            .iter()
            .filter(|(o, t)| {
                o.collection == collection
                    && !present.contains(o)
                    // Seen after the list was taken: the list cannot know it.
                    && list_rv.is_none_or(|rv| t.info.resource_version <= rv)
            })
            .map(|(o, t)| (o.clone(), list_rv.unwrap_or(t.info.resource_version)))
            .collect();
        for (o, rv) in gone {
            self.forget(&o, rv);
        }
        // Oldest first, so that of two conflicting objects the one created
        // first is the one in effect, as when they were applied in order.
        listed.sort_by(|(a, _), (b, _)| {
            (&a.creation_timestamp, a.resource_version)
                .cmp(&(&b.creation_timestamp, b.resource_version))
        });
        for (info, item) in listed {
            let unchanged = self
                .objects
                .get(&info.obj)
                .is_some_and(|t| t.info.resource_version == info.resource_version);
            if unchanged {
                continue;
            }
            self.upsert(item, out);
        }
        // Documents from the store that no listed object claimed are gone.
        self.desired.retain(|k, (_, owner)| {
            *owner != Owner::Seeded || Collection::of_key(k).as_ref() != Some(&collection)
        });
        // The list is the truth as of its version: older deletions are moot.
        let rv = list_rv.unwrap_or(u64::MAX);
        self.tombstones
            .retain(|o, del| o.collection != collection || *del > rv);
        if let Some(rv) = list_rv {
            self.advance(&collection, rv);
        }
    }

    /// Objects refused for a conflict may be fine now; oldest first.
    fn retry_refused(&mut self, out: &mut Outcome) {
        let mut waiting: Vec<(ObjectInfo, Value)> = self
            .objects
            .values()
            .filter(|t| t.problem.is_some())
            .map(|t| (t.info.clone(), t.raw.clone()))
            .collect();
        waiting.sort_by(|(a, _), (b, _)| {
            (&a.creation_timestamp, a.resource_version)
                .cmp(&(&b.creation_timestamp, b.resource_version))
        });
        for (info, raw) in waiting {
            let problem = self.take_in(&info, &raw);
            if problem.is_none() {
                out.rejected
                    .retain(|r| r.object.as_ref() != Some(&info.obj));
            }
            if let Some(t) = self.objects.get_mut(&info.obj) {
                t.problem = problem;
            }
        }
    }
}

/// Where an object's document lives, whether or not it translates.
fn key_of(o: &ObjectRef) -> Option<String> {
    if o.collection == Collection::nads() {
        let ns = o.namespace.as_deref().unwrap_or("default");
        return Some(keys::network_attachment(ns, &o.name));
    }
    (o.collection.api_version == furrow_api::resource::API_VERSION)
        .then(|| keys::resource(&o.collection.kind, &o.name))
}

/// The store changes that turn `before` into `after`, in key order.
fn diff(before: &BTreeMap<String, Value>, after: &BTreeMap<String, Value>) -> Vec<Change> {
    let mut out = Vec::new();
    for (k, d) in after {
        if before.get(k) != Some(d) {
            out.push(Change::Put {
                key: k.clone(),
                doc: d.clone(),
            });
        }
    }
    for k in before.keys() {
        if !after.contains_key(k) {
            out.push(Change::Delete { key: k.clone() });
        }
    }
    out
}

/// A watch event as the API server sends it (`{"type": ..., "object":
/// ...}`, one per line of a `?watch=1` response) → [`KubeEvent`].
pub fn parse_watch_event(v: &Value, collection: &Collection) -> Result<KubeEvent, Invalid> {
    let obj = v
        .get("object")
        .cloned()
        .ok_or_else(|| Invalid::new("object", "missing"))?;
    match v.get("type").and_then(|t| t.as_str()) {
        Some("ADDED") => Ok(KubeEvent::Added(obj)),
        Some("MODIFIED") => Ok(KubeEvent::Modified(obj)),
        Some("DELETED") => Ok(KubeEvent::Deleted(obj)),
        Some("BOOKMARK") => {
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .and_then(|r| r.as_str())
                .ok_or_else(|| Invalid::new("object.metadata.resourceVersion", "missing"))?;
            Ok(KubeEvent::Bookmark {
                collection: collection.clone(),
                resource_version: parse_resource_version(rv)?,
            })
        }
        Some("ERROR") => match obj.get("code").and_then(|c| c.as_u64()) {
            Some(410) => Ok(KubeEvent::Expired {
                collection: collection.clone(),
            }),
            code => Err(Invalid::new(
                "object",
                format!(
                    "watch error {}: {}",
                    code.map_or("(no code)".to_string(), |c| c.to_string()),
                    obj.get("message").and_then(|m| m.as_str()).unwrap_or("")
                ),
            )),
        },
        other => Err(Invalid::new(
            "type",
            format!("{other:?}: expected ADDED, MODIFIED, DELETED, BOOKMARK or ERROR"),
        )),
    }
}

/// A list response (`{"kind": "<Kind>List", "metadata":
/// {"resourceVersion": ...}, "items": [...]}`) → a re-list.
pub fn parse_list(v: &Value) -> Result<KubeEvent, Invalid> {
    let api_version = v
        .get("apiVersion")
        .and_then(|a| a.as_str())
        .ok_or_else(|| Invalid::new("apiVersion", "missing"))?;
    let kind = v
        .get("kind")
        .and_then(|k| k.as_str())
        .and_then(|k| k.strip_suffix("List"))
        .filter(|k| !k.is_empty())
        .ok_or_else(|| Invalid::new("kind", "expected <Kind>List"))?;
    let items = match v.get("items") {
        Some(Value::Array(items)) => items.clone(),
        Some(Value::Null) | None => Vec::new(),
        Some(_) => return Err(Invalid::new("items", "expected a list")),
    };
    let resource_version = v
        .pointer("/metadata/resourceVersion")
        .and_then(|r| r.as_str())
        .map(parse_resource_version)
        .transpose()?;
    Ok(KubeEvent::Relist {
        collection: Collection::new(api_version, kind),
        items,
        resource_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cn(name: &str, rv: u64, aging: u32) -> Value {
        json!({"apiVersion": "network.furrow.io/v1alpha1", "kind": "ClusterNetwork",
            "metadata": {"name": name, "uid": format!("uid-{name}"), "resourceVersion": rv.to_string(),
                         "creationTimestamp": "2026-11-20T09:00:00Z"},
            "spec": {"macAgingSeconds": aging}})
    }

    fn cns() -> Collection {
        Collection::new("network.furrow.io/v1alpha1", "ClusterNetwork")
    }

    fn state() -> KubeState {
        KubeState::new(
            "node1",
            BTreeMap::from([("kubernetes.io/hostname".into(), "node1".into())]),
        )
    }

    fn key(name: &str) -> String {
        keys::resource("ClusterNetwork", name)
    }

    #[test]
    fn bookmarks_and_expiry_change_nothing() {
        let mut s = state();
        s.apply(KubeEvent::Added(cn("a", 10, 300)));
        let out = s.apply(KubeEvent::Bookmark {
            collection: cns(),
            resource_version: 40,
        });
        assert_eq!(out, Outcome::default());
        assert_eq!(s.progress(&cns()), Some(40));
        let out = s.apply(KubeEvent::Expired { collection: cns() });
        assert!(out.relist && out.changes.is_empty());
        assert_eq!(s.desired().len(), 1);
    }

    #[test]
    fn a_relist_keeps_what_came_after_it() {
        let mut s = state();
        s.apply(KubeEvent::Added(cn("a", 10, 300)));
        s.apply(KubeEvent::Added(cn("b", 30, 300)));
        // A list taken at 20 does not know b (added at 30): b stays; a
        // list at 35 without b means b is gone.
        let out = s.apply(KubeEvent::Relist {
            collection: cns(),
            items: vec![cn("a", 10, 300)],
            resource_version: Some(20),
        });
        assert!(out.changes.is_empty(), "{out:?}");
        let out = s.apply(KubeEvent::Relist {
            collection: cns(),
            items: vec![cn("a", 10, 300)],
            resource_version: Some(35),
        });
        assert_eq!(out.changes, vec![Change::Delete { key: key("b") }]);
        // Another collection's re-list leaves ClusterNetworks alone.
        let out = s.apply(KubeEvent::Relist {
            collection: Collection::new("network.furrow.io/v1alpha1", "VlanConfig"),
            items: vec![],
            resource_version: Some(50),
        });
        assert!(out.changes.is_empty());
        assert!(s.desired().contains_key(&key("a")));
    }

    #[test]
    fn deletes_are_ordered_by_resource_version() {
        let mut s = state();
        s.apply(KubeEvent::Added(cn("a", 10, 300)));
        // A delete older than what was seen is stale.
        let out = s.apply(KubeEvent::Deleted(cn("a", 9, 300)));
        assert_eq!(out.stale.len(), 1);
        let out = s.apply(KubeEvent::Deleted(cn("a", 12, 300)));
        assert_eq!(out.changes, vec![Change::Delete { key: key("a") }]);
        // Re-created under a new uid, later: in effect again.
        let mut again = cn("a", 15, 600);
        again["metadata"]["uid"] = "uid-a-2".into();
        let out = s.apply(KubeEvent::Added(again));
        assert_eq!(out.changes.len(), 1);
        assert_eq!(s.desired()[&key("a")]["spec"]["macAgingSeconds"], 600);
    }

    #[test]
    fn an_invalid_version_is_reported_until_fixed_and_the_last_valid_one_stays() {
        let mut s = state();
        s.apply(KubeEvent::Added(cn("a", 10, 300)));
        let out = s.apply(KubeEvent::Modified(cn("a", 11, 5)));
        assert!(out.changes.is_empty());
        assert_eq!(out.rejected.len(), 1);
        let p = s.problems();
        assert_eq!(p.len(), 1);
        assert!(
            p[0].to_string().contains("spec.macAgingSeconds"),
            "{}",
            p[0]
        );
        assert_eq!(s.desired()[&key("a")]["spec"]["macAgingSeconds"], 300);
        let out = s.apply(KubeEvent::Modified(cn("a", 12, 900)));
        assert_eq!(out.changes.len(), 1);
        assert!(s.problems().is_empty());
        // Deleting the object takes its last valid version with it.
        let out = s.apply(KubeEvent::Modified(cn("a", 13, 5)));
        assert!(out.changes.is_empty());
        let out = s.apply(KubeEvent::Deleted(cn("a", 14, 5)));
        assert_eq!(out.changes, vec![Change::Delete { key: key("a") }]);
        assert!(s.problems().is_empty());
    }

    #[test]
    fn one_name_in_two_namespaces_is_refused() {
        let mut s = state();
        let mut a = cn("a", 10, 300);
        a["metadata"]["namespace"] = "one".into();
        let mut b = cn("a", 11, 600);
        b["metadata"]["namespace"] = "two".into();
        b["metadata"]["uid"] = "other".into();
        s.apply(KubeEvent::Added(a));
        let out = s.apply(KubeEvent::Added(b.clone()));
        assert_eq!(out.rejected.len(), 1);
        assert_eq!(out.rejected[0].reason.field, "metadata.name");
        assert_eq!(s.desired()[&key("a")]["spec"]["macAgingSeconds"], 300);
        // The first goes: the second takes the name.
        let mut gone = cn("a", 12, 300);
        gone["metadata"]["namespace"] = "one".into();
        let out = s.apply(KubeEvent::Deleted(gone));
        assert!(out.rejected.is_empty());
        assert_eq!(s.desired()[&key("a")]["spec"]["macAgingSeconds"], 600);
        assert!(s.problems().is_empty());
    }

    #[test]
    fn a_nad_that_stops_being_furrows_goes() {
        let nad = |rv: u64, ty: &str| {
            json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                "metadata": {"name": "n", "namespace": "vms", "uid": "u", "resourceVersion": rv.to_string()},
                "spec": {"config": json!({"name": "n", "type": ty, "bridge": "d-br", "vlan": 5}).to_string()}})
        };
        let mut s = state();
        let out = s.apply(KubeEvent::Added(nad(1, "furrow")));
        assert_eq!(out.changes.len(), 1);
        let out = s.apply(KubeEvent::Modified(nad(2, "bridge")));
        assert_eq!(
            out.changes,
            vec![Change::Delete {
                key: keys::network_attachment("vms", "n")
            }]
        );
    }

    #[test]
    fn parses_watch_lines_and_lists() {
        let c = cns();
        for (line, ok) in [
            (json!({"type": "ADDED", "object": cn("a", 1, 300)}), true),
            (
                json!({"type": "BOOKMARK", "object": {"kind": "ClusterNetwork", "metadata": {"resourceVersion": "77"}}}),
                true,
            ),
            (
                json!({"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}),
                true,
            ),
            (
                json!({"type": "ERROR", "object": {"kind": "Status", "code": 500, "message": "boom"}}),
                false,
            ),
            (json!({"type": "SOMETHING", "object": {}}), false),
            (json!({"type": "ADDED"}), false),
        ] {
            assert_eq!(parse_watch_event(&line, &c).is_ok(), ok, "{line}");
        }
        assert_eq!(
            parse_watch_event(
                &json!({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "77"}}}),
                &c
            )
            .unwrap(),
            KubeEvent::Bookmark {
                collection: c.clone(),
                resource_version: 77
            }
        );
        let l = parse_list(
            &json!({"apiVersion": "network.furrow.io/v1alpha1", "kind": "ClusterNetworkList",
            "metadata": {"resourceVersion": "90"}, "items": [cn("a", 1, 300)]}),
        )
        .unwrap();
        let KubeEvent::Relist {
            collection,
            items,
            resource_version,
        } = l
        else {
            panic!()
        };
        assert_eq!(
            (collection, items.len(), resource_version),
            (c, 1, Some(90))
        );
        assert_eq!(
            parse_list(&json!({"apiVersion": "v1", "kind": "List", "items": []}))
                .unwrap_err()
                .field,
            "kind"
        );
        assert_eq!(
            parse_list(
                &json!({"apiVersion": "v1", "kind": "XList", "metadata": {"resourceVersion": "z"}})
            )
            .unwrap_err()
            .field,
            "metadata.resourceVersion"
        );
    }
}
