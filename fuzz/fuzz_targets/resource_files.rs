//! Resource files: what netd reads from its config directory and
//! `netctl apply -f` sends (furrow_api::document): YAML streams and JSON
//! documents or lists, each document validated by its kind.
//!
//! The first byte's bit 0 picks JSON over YAML; the rest is the file.
//!
//! Invariants: nothing panics; a refused document's error names the
//! field; an accepted one is normalised for good, and survives what an
//! operator does with `netctl get -o yaml` and `netctl apply -f` (YAML out,
//! YAML in, validated again: the same document).

#![no_main]

use furrow_api::document;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let Ok(docs) = document::parse_documents(text, ctl & 1 == 1) else {
        return;
    };
    for doc in &docs {
        furrow_fuzz::resource(doc);
        if let Ok(v) = document::validate(doc) {
            let yaml = serde_norway::to_string(&v.doc).expect("YAML out");
            let back = document::parse_documents(&yaml, false)
                .unwrap_or_else(|e| panic!("our YAML does not parse: {e}\n{yaml}"));
            assert_eq!(back.len(), 1, "{yaml}");
            let again = document::validate(&back[0])
                .unwrap_or_else(|e| panic!("our YAML is refused: {e}\n{yaml}"));
            assert_eq!(again.doc, v.doc, "changed through YAML:\n{yaml}");
            let json: Value = serde_json::from_str(&serde_json::to_string(&v.doc).unwrap())
                .expect("JSON out and in");
            assert_eq!(json, v.doc);
        }
    }
});
