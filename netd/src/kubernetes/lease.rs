//! VIP election over coordination.k8s.io/v1 Leases: the decisions (who
//! may take a lease, when) and the objects to write, as pure functions.
//! One Lease per VirtualIP (`furrow-vip-<name>`); every write is a
//! replace conditioned on the resourceVersion read, so of two nodes
//! racing for a lease exactly one wins (the other gets 409 Conflict).
//!
//! Expiry is judged as client-go's leader election judges it: by when
//! *this* node saw the lease's record last change (its own monotonic
//! clock), plus `leaseDurationSeconds`, never by comparing `renewTime`
//! with the local wall clock, so clock offsets between nodes do not matter
//! (clock rates must agree, as for the store-based election). The holder
//! fences itself: it may hold the VIP until `sent + duration - margin`,
//! `sent` being when it sent its last renewal the API server accepted.

use serde_json::{json, Value};

use super::translate::Invalid;

pub const API_VERSION: &str = "coordination.k8s.io/v1";
pub const KIND: &str = "Lease";

/// The Lease holding a VirtualIP.
pub fn lease_name(vip: &str) -> String {
    format!("furrow-vip-{vip}")
}

/// The fields of a Lease the election reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    pub name: String,
    pub holder: Option<String>,
    pub duration_secs: u32,
    pub renew_time: Option<String>,
    pub acquire_time: Option<String>,
    pub transitions: u32,
    pub resource_version: String,
}

/// Reads a Lease object as the API server returns it.
pub fn parse_lease(v: &Value) -> Result<LeaseRecord, Invalid> {
    if v.get("apiVersion").and_then(|a| a.as_str()) != Some(API_VERSION)
        || v.get("kind").and_then(|k| k.as_str()) != Some(KIND)
    {
        return Err(Invalid::new(
            "apiVersion",
            format!("expected {API_VERSION} {KIND}"),
        ));
    }
    let name = v
        .pointer("/metadata/name")
        .and_then(|n| n.as_str())
        .ok_or_else(|| Invalid::new("metadata.name", "missing"))?;
    let resource_version = v
        .pointer("/metadata/resourceVersion")
        .and_then(|n| n.as_str())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Invalid::new("metadata.resourceVersion", "missing"))?;
    let spec = v.get("spec").cloned().unwrap_or(Value::Null);
    let str_field = |k: &str| -> Result<Option<String>, Invalid> {
        match spec.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Invalid::new(format!("spec.{k}"), "expected a string")),
        }
    };
    let u32_field = |k: &str, min: u64| -> Result<Option<u32>, Invalid> {
        match spec.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_u64()
                .filter(|n| *n >= min && *n <= u64::from(u32::MAX))
                .map(|n| Some(n as u32))
                .ok_or_else(|| {
                    Invalid::new(
                        format!("spec.{k}"),
                        format!("{x}: expected an integer >= {min}"),
                    )
                }),
        }
    };
    Ok(LeaseRecord {
        name: name.to_string(),
        holder: str_field("holderIdentity")?,
        // A lease without a duration cannot expire by itself; treat it as
        // the shortest so a holder that never renews can be replaced.
        duration_secs: u32_field("leaseDurationSeconds", 1)?.unwrap_or(1),
        renew_time: str_field("renewTime")?,
        acquire_time: str_field("acquireTime")?,
        transitions: u32_field("leaseTransitions", 0)?.unwrap_or(0),
        resource_version: resource_version.to_string(),
    })
}

/// What this node last saw of a lease held by another node, and when (its
/// monotonic clock, milliseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub holder: Option<String>,
    pub renew_time: Option<String>,
    pub resource_version: String,
    pub seen_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No Lease yet: create it, held by us.
    Create,
    /// Ours: renew it.
    Renew,
    /// Free (released) or expired: take it over.
    TakeOver,
    /// Held by a live node: look again in this many milliseconds.
    Wait { retry_in_ms: u64 },
}

/// Who may write the lease now. `observed` is this node's memory of the
/// lease; it is updated whenever the record changed.
pub fn decide(
    me: &str,
    lease: Option<&LeaseRecord>,
    observed: &mut Option<Observed>,
    now_ms: u64,
) -> Decision {
    let Some(l) = lease else {
        *observed = None;
        return Decision::Create;
    };
    match l.holder.as_deref() {
        Some(h) if h == me => return Decision::Renew,
        None => return Decision::TakeOver,
        Some(_) => {}
    }
    let changed = observed.as_ref().is_none_or(|o| {
        o.holder != l.holder
            || o.renew_time != l.renew_time
            || o.resource_version != l.resource_version
    });
    if changed {
        *observed = Some(Observed {
            holder: l.holder.clone(),
            renew_time: l.renew_time.clone(),
            resource_version: l.resource_version.clone(),
            seen_at_ms: now_ms,
        });
    }
    let seen = observed.as_ref().map_or(now_ms, |o| o.seen_at_ms);
    let expires = seen + u64::from(l.duration_secs) * 1000;
    if now_ms >= expires {
        Decision::TakeOver
    } else {
        Decision::Wait {
            retry_in_ms: expires - now_ms,
        }
    }
}

/// Until when (monotonic ms) a holder may keep the VIP after a renewal
/// sent at `sent_ms` was accepted: a challenger waits the full duration
/// after *seeing* that renewal, which is no earlier than it was sent.
pub fn hold_deadline_ms(sent_ms: u64, duration_secs: u32, margin_ms: u64) -> u64 {
    (sent_ms + u64::from(duration_secs) * 1000).saturating_sub(margin_ms)
}

/// A new Lease held by `me` (create).
pub fn new_lease(name: &str, namespace: &str, me: &str, now: &str, duration_secs: u32) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "holderIdentity": me,
            "leaseDurationSeconds": duration_secs,
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": 0,
        },
    })
}

/// `current` taken over by `me`: a replace conditioned on its
/// resourceVersion. Every acquisition by another node than the recorded
/// holder counts a transition (a released lease included), as client-go
/// counts them.
pub fn take_over(current: &Value, me: &str, now: &str, duration_secs: u32) -> Value {
    let mut out = current.clone();
    let prev_holder = current
        .pointer("/spec/holderIdentity")
        .and_then(|h| h.as_str());
    let transitions = current
        .pointer("/spec/leaseTransitions")
        .and_then(|t| t.as_u64())
        .unwrap_or(0);
    let transitions = if prev_holder != Some(me) {
        transitions + 1
    } else {
        transitions
    };
    out["spec"] = json!({
        "holderIdentity": me,
        "leaseDurationSeconds": duration_secs,
        "acquireTime": now,
        "renewTime": now,
        "leaseTransitions": transitions,
    });
    out
}

/// `current` (ours) renewed at `now`.
pub fn renew(current: &Value, now: &str) -> Value {
    let mut out = current.clone();
    out["spec"]["renewTime"] = json!(now);
    out
}

/// `current` (ours) given up after the address went: no holder, so the
/// next ready node takes it at once instead of waiting for expiry.
pub fn release(current: &Value, now: &str) -> Value {
    let mut out = current.clone();
    if let Some(spec) = out.get_mut("spec").and_then(|s| s.as_object_mut()) {
        spec.remove("holderIdentity");
        spec.insert("renewTime".into(), json!(now));
    }
    out
}

/// Lease times are RFC 3339 with microseconds (`MicroTime`).
pub fn micro_time(unix_micros: u64) -> String {
    let secs = unix_micros / 1_000_000;
    let base = crate::util::rfc3339(secs);
    // rfc3339 gives "YYYY-MM-DDTHH:MM:SSZ"; insert the fraction.
    let stem = base.trim_end_matches('Z');
    format!("{stem}.{:06}Z", unix_micros % 1_000_000)
}

/// A failed Lease API call (the API server unreachable, refused, or an
/// object that does not convert).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct LeaseApiError(pub String);

/// The result of a conditioned write.
#[derive(Debug, Clone)]
pub enum Written {
    Done(Value),
    /// Someone else wrote first (409): read again.
    Conflict,
}

/// The four Lease calls the election makes, in one namespace. The kube-rs
/// client implements it (`client::Leases`); [`MemoryLeases`] is the API
/// server's semantics in memory, for tests.
#[async_trait::async_trait]
pub trait LeaseApi: Send + Sync {
    fn namespace(&self) -> &str;
    async fn get(&self, name: &str) -> Result<Option<Value>, LeaseApiError>;
    /// Create; `Conflict` when it exists already.
    async fn create(&self, lease: &Value) -> Result<Written, LeaseApiError>;
    /// Replace conditioned on `metadata.resourceVersion`; `Conflict` when
    /// the object changed (or went) since.
    async fn replace(&self, lease: &Value) -> Result<Written, LeaseApiError>;
    async fn delete(&self, name: &str) -> Result<(), LeaseApiError>;
}

/// After one round of [`contend`]: the lease as it stands and whether this
/// node holds it (a write of ours was accepted, sent at `sent_ms`).
#[derive(Debug, Clone)]
pub struct Round {
    pub lease: Option<LeaseRecord>,
    pub held: bool,
    pub sent_ms: Option<u64>,
}

/// One round of the election for `vip`: read, decide, write when the
/// decision says so and `may_take` allows taking (a node not ready only
/// watches). `now_ms` is this node's monotonic clock (expiry), `wall_us`
/// the wall clock written into the Lease for people to read.
pub async fn contend(
    api: &dyn LeaseApi,
    vip: &str,
    me: &str,
    observed: &mut Option<Observed>,
    may_take: bool,
    duration_secs: u32,
    clock: &(dyn Fn() -> (u64, u64) + Sync),
) -> Result<Round, LeaseApiError> {
    let name = lease_name(vip);
    let current = api.get(&name).await?;
    let record = current
        .as_ref()
        .map(parse_lease)
        .transpose()
        .map_err(|e| LeaseApiError(format!("Lease {name}: {e}")))?;
    let (now_ms, wall_us) = clock();
    let now = micro_time(wall_us);
    let decision = decide(me, record.as_ref(), observed, now_ms);
    let write = match (&decision, &current) {
        (Decision::Create, _) if may_take => Some((
            new_lease(&name, api.namespace(), me, &now, duration_secs),
            true,
        )),
        (Decision::Renew, Some(c)) => Some((renew(c, &now), false)),
        (Decision::TakeOver, Some(c)) if may_take => {
            Some((take_over(c, me, &now, duration_secs), false))
        }
        _ => None,
    };
    let Some((body, create)) = write else {
        return Ok(Round {
            lease: record,
            held: false,
            sent_ms: None,
        });
    };
    let written = if create {
        api.create(&body).await?
    } else {
        api.replace(&body).await?
    };
    match written {
        Written::Done(v) => {
            let rec = parse_lease(&v).map_err(|e| LeaseApiError(format!("Lease {name}: {e}")))?;
            // Our own write is what a challenger sees next: remember it
            // so our view does not restart anyone's clock.
            *observed = None;
            Ok(Round {
                held: rec.holder.as_deref() == Some(me),
                lease: Some(rec),
                sent_ms: Some(now_ms),
            })
        }
        Written::Conflict => {
            // Somebody wrote between our read and our write: read again.
            let again = api
                .get(&name)
                .await?
                .as_ref()
                .map(parse_lease)
                .transpose()
                .map_err(|e| LeaseApiError(format!("Lease {name}: {e}")))?;
            Ok(Round {
                lease: again,
                held: false,
                sent_ms: None,
            })
        }
    }
}

/// Gives the Lease up if this node holds it (after the address went).
pub async fn give_up(
    api: &dyn LeaseApi,
    vip: &str,
    me: &str,
    wall_us: u64,
) -> Result<(), LeaseApiError> {
    let name = lease_name(vip);
    let Some(current) = api.get(&name).await? else {
        return Ok(());
    };
    if current
        .pointer("/spec/holderIdentity")
        .and_then(|h| h.as_str())
        != Some(me)
    {
        return Ok(());
    }
    // A conflict means it changed hands already: nothing left to give.
    api.replace(&release(&current, &micro_time(wall_us)))
        .await?;
    Ok(())
}

/// The API server's Lease semantics in memory: resourceVersions, 409 on a
/// stale replace or a second create. `fail` makes every call fail (an
/// unreachable API server).
#[derive(Default)]
pub struct MemoryLeases {
    namespace: String,
    inner: std::sync::Mutex<MemoryInner>,
}

#[derive(Default)]
struct MemoryInner {
    objects: std::collections::BTreeMap<String, Value>,
    version: u64,
    fail: bool,
}

impl MemoryLeases {
    pub fn new(namespace: &str) -> Self {
        MemoryLeases {
            namespace: namespace.to_string(),
            inner: Default::default(),
        }
    }

    pub fn set_failing(&self, fail: bool) {
        self.inner.lock().expect("leases").fail = fail;
    }

    /// Stores a recorded object as it is (its resourceVersion included).
    pub fn insert_recorded(&self, lease: Value) {
        let mut i = self.inner.lock().expect("leases");
        let name = lease["metadata"]["name"].as_str().unwrap_or("").to_string();
        if let Some(v) = lease["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok())
        {
            i.version = i.version.max(v);
        }
        i.objects.insert(name, lease);
    }

    pub fn peek(&self, name: &str) -> Option<Value> {
        self.inner
            .lock()
            .expect("leases")
            .objects
            .get(name)
            .cloned()
    }

    fn call(&self) -> Result<std::sync::MutexGuard<'_, MemoryInner>, LeaseApiError> {
        let i = self.inner.lock().expect("leases");
        if i.fail {
            return Err(LeaseApiError("connection refused".into()));
        }
        Ok(i)
    }
}

#[async_trait::async_trait]
impl LeaseApi for MemoryLeases {
    fn namespace(&self) -> &str {
        &self.namespace
    }

    async fn get(&self, name: &str) -> Result<Option<Value>, LeaseApiError> {
        Ok(self.call()?.objects.get(name).cloned())
    }

    async fn create(&self, lease: &Value) -> Result<Written, LeaseApiError> {
        let mut i = self.call()?;
        let name = lease["metadata"]["name"].as_str().unwrap_or("").to_string();
        if i.objects.contains_key(&name) {
            return Ok(Written::Conflict);
        }
        i.version += 1;
        let mut v = lease.clone();
        v["metadata"]["resourceVersion"] = Value::String(i.version.to_string());
        i.objects.insert(name, v.clone());
        Ok(Written::Done(v))
    }

    async fn replace(&self, lease: &Value) -> Result<Written, LeaseApiError> {
        let mut i = self.call()?;
        let name = lease["metadata"]["name"].as_str().unwrap_or("").to_string();
        let sent = lease["metadata"]["resourceVersion"].as_str();
        let stored = i
            .objects
            .get(&name)
            .and_then(|o| o["metadata"]["resourceVersion"].as_str());
        if sent.is_none() || sent != stored {
            return Ok(Written::Conflict);
        }
        i.version += 1;
        let mut v = lease.clone();
        v["metadata"]["resourceVersion"] = Value::String(i.version.to_string());
        i.objects.insert(name, v.clone());
        Ok(Written::Done(v))
    }

    async fn delete(&self, name: &str) -> Result<(), LeaseApiError> {
        self.call()?.objects.remove(name);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/kube/leases")
            .join(name);
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    }

    #[test]
    fn reads_recorded_leases() {
        let l = parse_lease(&fixture("held-node2.json")).unwrap();
        assert_eq!(l.holder.as_deref(), Some("node2"));
        assert_eq!(l.duration_secs, 2);
        assert_eq!(l.transitions, 3);
        assert_eq!(l.resource_version, "48213");
        let r = parse_lease(&fixture("released.json")).unwrap();
        assert_eq!(r.holder, None);
        let e = parse_lease(&fixture("bad-duration.json")).unwrap_err();
        assert_eq!(e.field, "spec.leaseDurationSeconds");
        let mut not_lease = fixture("held-node2.json");
        not_lease["kind"] = "ConfigMap".into();
        assert_eq!(parse_lease(&not_lease).unwrap_err().field, "apiVersion");
    }

    #[test]
    fn a_live_holder_is_waited_for_and_a_silent_one_replaced() {
        let held = fixture("held-node2.json");
        let l = parse_lease(&held).unwrap();
        let mut seen = None;
        // First sight: wait the whole duration from now, whatever renewTime says.
        assert_eq!(
            decide("node1", Some(&l), &mut seen, 10_000),
            Decision::Wait { retry_in_ms: 2000 }
        );
        assert_eq!(
            decide("node1", Some(&l), &mut seen, 11_500),
            Decision::Wait { retry_in_ms: 500 }
        );
        // The holder renews: the clock starts again.
        let renewed = parse_lease(&{
            let mut v = renew(&held, "2026-11-20T09:30:42.208117Z");
            v["metadata"]["resourceVersion"] = "48220".into();
            v
        })
        .unwrap();
        assert_eq!(
            decide("node1", Some(&renewed), &mut seen, 11_900),
            Decision::Wait { retry_in_ms: 2000 }
        );
        // Silent for the duration: take over.
        assert_eq!(
            decide("node1", Some(&renewed), &mut seen, 13_900),
            Decision::TakeOver
        );
        // The holder itself renews; a released lease is free at once;
        // no lease is created.
        assert_eq!(decide("node2", Some(&l), &mut None, 0), Decision::Renew);
        let free = parse_lease(&fixture("released.json")).unwrap();
        assert_eq!(
            decide("node1", Some(&free), &mut None, 0),
            Decision::TakeOver
        );
        assert_eq!(decide("node1", None, &mut seen, 0), Decision::Create);
        assert_eq!(seen, None);
    }

    #[test]
    fn writes_are_conditioned_and_count_transitions() {
        let held = fixture("held-node2.json");
        let t = take_over(&held, "node1", "2026-11-20T09:30:44.000001Z", 2);
        // Replace conditioned on the version read.
        assert_eq!(t["metadata"]["resourceVersion"], "48213");
        assert_eq!(t["spec"]["holderIdentity"], "node1");
        assert_eq!(t["spec"]["leaseTransitions"], 4);
        assert_eq!(t["spec"]["acquireTime"], "2026-11-20T09:30:44.000001Z");
        let r = take_over(&fixture("released.json"), "node1", "x", 2);
        assert_eq!(r["spec"]["leaseTransitions"], 4);
        // Re-taking one's own lease is no transition.
        let again = take_over(&t, "node1", "y", 2);
        assert_eq!(again["spec"]["leaseTransitions"], 4);
        let rel = release(&t, "2026-11-20T09:30:45.000000Z");
        assert!(rel["spec"].get("holderIdentity").is_none());
        assert_eq!(parse_lease(&rel).unwrap().holder, None);
        let n = new_lease("furrow-vip-a", "furrow-system", "node1", "t", 2);
        let l = parse_lease(&{
            let mut n = n.clone();
            n["metadata"]["resourceVersion"] = "1".into();
            n
        })
        .unwrap();
        assert_eq!(l.holder.as_deref(), Some("node1"));
        assert!(n["metadata"].get("resourceVersion").is_none());
    }

    #[test]
    fn fencing_deadline_and_times() {
        assert_eq!(hold_deadline_ms(5000, 2, 300), 6700);
        assert_eq!(hold_deadline_ms(0, 1, 5000), 0);
        assert_eq!(
            micro_time(1_000_000_000_123_456),
            "2001-09-09T01:46:40.123456Z"
        );
    }
}
