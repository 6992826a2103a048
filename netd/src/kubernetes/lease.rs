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
/// resourceVersion. A change of holder counts a transition.
pub fn take_over(current: &Value, me: &str, now: &str, duration_secs: u32) -> Value {
    let mut out = current.clone();
    let prev_holder = current
        .pointer("/spec/holderIdentity")
        .and_then(|h| h.as_str())
        .filter(|h| !h.is_empty());
    let transitions = current
        .pointer("/spec/leaseTransitions")
        .and_then(|t| t.as_u64())
        .unwrap_or(0);
    let transitions = if prev_holder.is_some_and(|h| h != me) {
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
