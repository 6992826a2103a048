//! Checks the fuzz targets share.

use furrow_api::document;
use furrow_api::error::code;
use furrow_api::resource::{redact_secrets, REDACTED};
use furrow_api::ApiError;
use serde_json::Value;

/// "field: what is expected" (netd's one error shape for bad values).
pub fn names_a_field(e: &ApiError) {
    assert!(
        matches!(
            e.code,
            code::INVALID_ENV | code::INVALID_CONFIG | code::DECODE
        ),
        "{e:?}"
    );
    let (field, expected) = e.msg.split_once(": ").unwrap_or_else(|| panic!("{e:?}"));
    assert!(!field.is_empty() && !expected.is_empty(), "{e:?}");
}

/// A resource document's refusal: `apiVersion: ...`, `kind: ...`, or
/// `<Kind> "<name>" is invalid: <field>: <expected>[; ...]`.
pub fn resource_error_names_a_field(e: &ApiError) {
    assert_eq!(e.code, code::INVALID_CONFIG, "{e:?}");
    if e.msg.starts_with("apiVersion: ") || e.msg.starts_with("kind: ") {
        return;
    }
    let (_, list) = e
        .msg
        .split_once(" is invalid: ")
        .unwrap_or_else(|| panic!("no field named: {e:?}"));
    let (field, _) = list
        .split_once(": ")
        .unwrap_or_else(|| panic!("no field named: {e:?}"));
    assert!(!field.is_empty(), "{e:?}");
}

pub fn resource(doc: &Value) {
    match document::validate(doc) {
        Ok(v) => {
            let again = document::validate(&v.doc)
                .unwrap_or_else(|e| panic!("the stored form is refused: {e}\n{}", v.doc));
            assert_eq!(again.doc, v.doc, "validation is not idempotent");
            assert_eq!((again.kind, &again.name), (v.kind, &v.name));
            let mut shown = v.doc.clone();
            redact_secrets(&mut shown);
            if let Some(p) = v.doc.pointer("/spec/password").and_then(Value::as_str) {
                assert_eq!(shown["spec"]["password"], REDACTED);
                assert!(p != REDACTED, "the placeholder was accepted as a password");
                // Applying what GET showed must not store the placeholder.
                assert!(document::validate(&shown).is_err());
            }
        }
        Err(e) => resource_error_names_a_field(&e),
    }
}
