//! The bodies netd's API decodes and validates (netd/src/api.rs): CNI
//! ADD/CHECK/DEL and GC requests, DHCP discovery, traces, and resource
//! documents (`PUT /v1/resources/{kind}`).
//!
//! The first byte picks the route; the rest is the body.
//!
//! Invariants: nothing panics; what decodes survives the JSON round trip;
//! a refusal carries a code and a message naming what is wrong; an
//! accepted resource document is normalised for good (validating the
//! stored form again gives it back unchanged), and its redacted form
//! (what GET answers) never holds the password.

#![no_main]

use furrow_api::wire::{AttachmentRequest, DiscoverRequest, GcRequest};
use furrow_api::wire_trace::TraceRequest;
use furrow_fuzz::{names_a_field, resource};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn decode<T>(body: &[u8]) -> Option<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let v: T = serde_json::from_slice(body).ok()?;
    let json = serde_json::to_vec(&v).expect("serialises");
    let back: T = serde_json::from_slice(&json)
        .unwrap_or_else(|e| panic!("does not decode what it encodes: {e}\n{v:?}"));
    assert_eq!(back, v, "changed on the wire");
    Some(v)
}

fuzz_target!(|data: &[u8]| {
    let Some((&route, body)) = data.split_first() else {
        return;
    };
    match route % 6 {
        // POST /v1/cni/add, /v1/cni/check
        0 => {
            if let Some(r) = decode::<AttachmentRequest>(body) {
                if let Err(e) = r.validate() {
                    names_a_field(&e);
                } else {
                    assert!(r.validate_ids().is_ok());
                }
            }
        }
        // POST /v1/cni/del
        1 => {
            if let Some(r) = decode::<AttachmentRequest>(body) {
                if let Err(e) = r.validate_ids() {
                    names_a_field(&e);
                }
            }
        }
        // POST /v1/cni/gc
        2 => {
            if let Some(r) = decode::<GcRequest>(body) {
                if let Err(e) = r.validate() {
                    names_a_field(&e);
                }
            }
        }
        // POST /v1/dhcp/discover
        3 => {
            if let Some(r) = decode::<DiscoverRequest>(body) {
                match r.validate() {
                    Ok(()) => {
                        assert!(r.vlan <= 4094);
                        assert!((1..=60).contains(&r.timeout_seconds.unwrap_or(10)));
                    }
                    Err(e) => names_a_field(&e),
                }
            }
        }
        // POST /v1/trace
        4 => {
            let _ = decode::<TraceRequest>(body);
        }
        // PUT /v1/resources/{kind}
        _ => {
            if let Ok(doc) = serde_json::from_slice::<Value>(body) {
                resource(&doc);
            }
        }
    }
});
