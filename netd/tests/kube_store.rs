//! The Kubernetes backend's acceptance test: the same resources, applied
//! through netd's API path into the embedded store and arriving as
//! Kubernetes watch events and re-lists, give the same desired state.
//!
//! Fixtures (tests/fixtures/kube/<phase>/): `steps.json` is what an
//! operator applies or deletes through netd, in order; `watch.jsonl` is
//! the API server's watch stream for the same changes (one event per line
//! as `?watch=1` sends them: full objects with uid, resourceVersion,
//! generation, managedFields, kubectl's last-applied annotation; BOOKMARK
//! and 410 ERROR events; plus replayed and reordered events), and
//! `list-<Kind>.json` the list responses of a re-list. They are written
//! in the API server's wire format by `gen.py` beside them, not captured
//! from a live cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use furrow_api::resource::KINDS;
use furrow_netd::kubernetes::state::Change;
use furrow_netd::kubernetes::{
    parse_list, parse_watch_event, Collection, KubeEvent, KubeState, Rejection,
};
use furrow_netd::resources::Resources;
use furrow_netd::store::embedded::EmbeddedStore;
use furrow_netd::store::Store;
use serde_json::Value;

const NODE: &str = "node1";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kube")
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([("kubernetes.io/hostname".to_string(), NODE.to_string())])
}

struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p =
            std::env::temp_dir().join(format!("furrow-kube-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        ScratchDir(p)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The API path: applies and deletes `steps.json` through `Resources`
/// (validation, rules between documents, store). Returns the refused
/// documents as "Kind/name".
async fn run_steps(res: &Resources, phase: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(fixtures().join(phase).join("steps.json")).unwrap();
    let steps: Vec<Value> = serde_json::from_str(&text).unwrap();
    let mut refused = BTreeSet::new();
    for s in steps {
        if let Some(d) = s.get("delete") {
            let (kind, name) = (d["kind"].as_str().unwrap(), d["name"].as_str().unwrap());
            assert!(
                res.delete(kind, name).await.unwrap(),
                "{phase}: {kind} {name} to delete was not there"
            );
            continue;
        }
        if res.apply_checked(&s, NODE, &labels()).await.is_err() {
            refused.insert(format!(
                "{}/{}",
                s["kind"].as_str().unwrap(),
                s["metadata"]["name"].as_str().unwrap()
            ));
        }
    }
    refused
}

/// The Kubernetes side: the phase's watch stream, then its lists (a
/// re-list of every collection), through the core. Returns the refusals
/// and every store change, in order.
fn run_events(state: &mut KubeState, phase: &str) -> (Vec<Rejection>, Vec<Change>, usize) {
    let dir = fixtures().join(phase);
    let mut events = Vec::new();
    let text = std::fs::read_to_string(dir.join("watch.jsonl")).unwrap();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap();
        let o = &v["object"];
        let c = Collection::new(
            o["apiVersion"].as_str().unwrap(),
            o["kind"].as_str().unwrap(),
        );
        events.push(parse_watch_event(&v, &c).unwrap());
    }
    let mut lists: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("list-")
        })
        .collect();
    lists.sort();
    for l in lists {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(l).unwrap()).unwrap();
        events.push(parse_list(&v).unwrap());
    }
    let mut rejected = Vec::new();
    let mut changes = Vec::new();
    let mut stale = 0;
    for ev in events {
        let expired = matches!(ev, KubeEvent::Expired { .. });
        let out = state.apply(ev);
        assert_eq!(
            out.relist, expired,
            "{phase}: only a 410 asks for a re-list"
        );
        rejected.extend(out.rejected);
        changes.extend(out.changes);
        stale += out.stale.len();
    }
    (rejected, changes, stale)
}

/// Every resource document as netd reads it, without what only one
/// backend has: the store revision and the creation time.
async fn embedded_docs(res: &Resources) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for (kind, _) in KINDS {
        for mut d in res.list(kind).await.unwrap() {
            let name = d["metadata"]["name"].as_str().unwrap().to_string();
            strip(&mut d);
            out.insert(format!("/furrow/resources/{kind}/{name}"), d);
        }
    }
    out
}

fn kube_docs(state: &KubeState) -> BTreeMap<String, Value> {
    state
        .desired()
        .into_iter()
        .filter(|(k, _)| k.starts_with("/furrow/resources/"))
        .map(|(k, mut d)| {
            strip(&mut d);
            (k, d)
        })
        .collect()
}

fn strip(d: &mut Value) {
    let m = d["metadata"].as_object_mut().unwrap();
    m.remove("resourceVersion");
    m.remove("creationTimestamp");
}

fn refused_names(r: &[Rejection]) -> BTreeSet<String> {
    r.iter()
        .filter_map(|r| r.object.as_ref())
        .filter(|o| o.collection.kind != "NetworkAttachmentDefinition")
        .map(|o| format!("{}/{}", o.collection.kind, o.name))
        .collect()
}

#[tokio::test]
async fn watch_events_give_the_embedded_stores_desired_state() {
    let dir = ScratchDir::new("equiv");
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.0.join("store.redb")).unwrap());
    let res = Resources::new(store.clone());
    let mut state = KubeState::new(NODE, labels());
    let mut mirror: BTreeMap<String, Value> = BTreeMap::new();
    for phase in ["01-create", "02-change", "03-resync"] {
        let refused_api = run_steps(&res, phase).await;
        let (rejected, changes, stale) = run_events(&mut state, phase);
        // Both paths refuse the same documents, for a named reason.
        assert_eq!(
            refused_names(&rejected),
            refused_api,
            "{phase}: refusals differ"
        );
        for r in &rejected {
            assert!(!r.reason.to_string().is_empty());
        }
        // The same documents, field for field.
        let want = embedded_docs(&res).await;
        assert!(!want.is_empty());
        assert_eq!(kube_docs(&state), want, "{phase}: desired state differs");
        // The changes the core emits, applied in order, give its state:
        // what the store behind a Kubernetes source would hold.
        for c in changes {
            match c {
                Change::Put { key, doc } => mirror.insert(key, doc),
                Change::Delete { key } => mirror.remove(&key),
            };
        }
        assert_eq!(mirror, state.desired(), "{phase}: changes do not add up");
        match phase {
            "01-create" => {
                // A conflicting VIP, an invalid network, a second pool for
                // one network, a second network on one VNI, an overlapping
                // VlanConfig; and the NAD whose vlan-id label lies.
                assert_eq!(refused_api.len(), 5, "{refused_api:?}");
                let nad: Vec<_> = rejected
                    .iter()
                    .filter(|r| {
                        r.object.as_ref().unwrap().collection.kind == "NetworkAttachmentDefinition"
                    })
                    .map(|r| r.to_string())
                    .collect();
                assert_eq!(nad.len(), 1, "{nad:?}");
                assert!(nad[0].contains("vlan-id"), "{nad:?}");
            }
            "02-change" => assert_eq!(stale, 2, "the replayed and the late event are ignored"),
            _ => {}
        }
    }
    // Creation times are the objects', as recorded.
    let d = state.desired();
    assert_eq!(
        d["/furrow/resources/ClusterNetwork/data"]["metadata"]["creationTimestamp"],
        "2026-11-20T09:01:43Z"
    );
    // The invalid change to mgmt left the version before it in effect.
    assert_eq!(
        d["/furrow/resources/ManagementNetwork/mgmt"]["spec"]["nodeSubnetPrefixLength"],
        24
    );
    // Re-listing the same lists again changes nothing.
    let (rejected, changes, _) = run_events(&mut state, "03-resync");
    assert!(changes.is_empty(), "{changes:?}");
    // Re-listing reports nothing new.
    assert!(rejected.is_empty(), "{rejected:?}");
}

#[test]
fn nads_become_network_attachments() {
    let mut state = KubeState::new(NODE, labels());
    for phase in ["01-create", "02-change", "03-resync"] {
        run_events(&mut state, phase);
    }
    let nads: BTreeMap<String, Value> = state
        .desired()
        .into_iter()
        .filter(|(k, _)| k.starts_with("/furrow/nads/"))
        .collect();
    // The trunk was deleted, "storage" is the bridge plugin's, vlan300's
    // labels disagree with its config.
    assert_eq!(
        nads.keys().collect::<Vec<_>>(),
        [
            "/furrow/nads/default/untagged",
            "/furrow/nads/default/vlan100"
        ]
    );
    let v = &nads["/furrow/nads/default/vlan100"];
    assert_eq!(v["type"], "vlan");
    assert_eq!(v["clusterNetwork"], "data");
    assert_eq!(v["vlan"], 100);
    assert_eq!(v["networkName"], "vlan100");
    assert_eq!(v["route"]["mode"], "manual");
    assert_eq!(v["route"]["gateway"], "192.168.100.1");
    let u = &nads["/furrow/nads/default/untagged"];
    assert_eq!(u["type"], "untagged");
    assert_eq!(u["vlan"], 0);
    assert_eq!(u["route"], serde_json::json!({"mode": "auto"}));
}

#[test]
fn a_restart_keeps_a_resource_whose_object_turned_invalid() {
    // netd's store after the scenario is the seed of a new netd.
    let mut first = KubeState::new(NODE, labels());
    for phase in ["01-create", "02-change", "03-resync"] {
        run_events(&mut first, phase);
    }
    let mut second = KubeState::new(NODE, labels());
    second.seed(first.desired());
    let (_, changes, _) = run_events(&mut second, "03-resync");
    // mgmt's object is still the invalid version: the stored one stands,
    // and nothing else differs either.
    assert!(changes.is_empty(), "{changes:?}");
    assert_eq!(second.desired(), first.desired());
    // Without the seed, the invalid mgmt cannot be had.
    let mut fresh = KubeState::new(NODE, labels());
    run_events(&mut fresh, "03-resync");
    assert!(!fresh
        .desired()
        .contains_key("/furrow/resources/ManagementNetwork/mgmt"));
}

/// Each kind has its own watch, so events of different objects reach netd
/// in any interleaving; only each object's own events keep their order.
/// Every interleaving gives the same documents: of conflicting objects
/// (two VlanConfigs covering one node, two IPPools of one network, two
/// networks on one VNI) the oldest wins, whichever arrives first.
#[test]
fn any_interleaving_of_objects_gives_the_same_state() {
    let mut streams: BTreeMap<String, Vec<KubeEvent>> = BTreeMap::new();
    for phase in ["01-create", "02-change"] {
        let text = std::fs::read_to_string(fixtures().join(phase).join("watch.jsonl")).unwrap();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).unwrap();
            let o = &v["object"];
            let c = Collection::new(
                o["apiVersion"].as_str().unwrap(),
                o["kind"].as_str().unwrap(),
            );
            let id = format!(
                "{}/{}/{}",
                c.kind, o["metadata"]["namespace"], o["metadata"]["name"]
            );
            streams
                .entry(id)
                .or_default()
                .push(parse_watch_event(&v, &c).unwrap());
        }
    }
    let final_state = |order: &[usize]| {
        let mut queues: Vec<std::collections::VecDeque<KubeEvent>> = streams
            .values()
            .map(|s| s.iter().cloned().collect())
            .collect();
        let mut state = KubeState::new(NODE, labels());
        for &i in order {
            let ev = queues[i].pop_front().unwrap();
            state.apply(ev);
        }
        state.desired()
    };
    // In file order first.
    let lens: Vec<usize> = streams.values().map(Vec::len).collect();
    let in_order: Vec<usize> = lens
        .iter()
        .enumerate()
        .flat_map(|(i, n)| std::iter::repeat_n(i, *n))
        .collect();
    let want = final_state(&in_order);
    assert!(want.len() > 5);
    // Deterministic pseudo-random interleavings (a linear congruential
    // generator: reproducible, no dependency).
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for round in 0..200 {
        let mut left = lens.clone();
        let mut order = Vec::new();
        while left.iter().any(|n| *n > 0) {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let open: Vec<usize> = (0..left.len()).filter(|i| left[*i] > 0).collect();
            let i = open[(seed >> 33) as usize % open.len()];
            left[i] -= 1;
            order.push(i);
        }
        assert_eq!(final_state(&order), want, "interleaving {round}: {order:?}");
    }
}
