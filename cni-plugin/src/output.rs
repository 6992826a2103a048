//! What the plugin prints: results on stdout, errors as the CNI error
//! document on stdout (libcni reads stdout first), and debug logs on
//! stderr only when FURROW_DEBUG=1 (runtimes capture stderr into their own
//! logs, so the plugin stays quiet by default).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use furrow_api::client::ClientError;
use furrow_api::error::code;
use furrow_api::ApiError;
use serde::Serialize;

use crate::args::ArgsError;
use crate::config::ConfigError;
use crate::env::{Command, EnvError};
use crate::result::{CniVersion, ResultError};

static DEBUG: AtomicBool = AtomicBool::new(false);

pub fn init_debug(enabled: bool) {
    DEBUG.store(enabled, Ordering::Relaxed);
}

pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// Logs to stderr when FURROW_DEBUG=1.
macro_rules! debug {
    ($($arg:tt)*) => {
        if $crate::output::debug_enabled() {
            eprintln!("furrow: {}", format_args!($($arg)*));
        }
    };
}
pub(crate) use debug;

/// Everything that makes the plugin fail, each with its CNI code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error(transparent)]
    Args(#[from] ArgsError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Result(#[from] ResultError),
    #[error("cannot read the network config from stdin: {0}")]
    Stdin(#[source] std::io::Error),
    #[error("{command} is not supported by cniVersion {version} (it needs {needs} or later)")]
    CommandVersion {
        command: Command,
        version: CniVersion,
        needs: CniVersion,
    },
    /// netd refused the request or could not be reached.
    #[error("{0}")]
    Netd(ClientError),
    /// STATUS: netd cannot be asked, so ADD cannot be served.
    #[error("{msg}")]
    Unavailable { msg: String, details: String },
    /// STATUS: netd answers but says it cannot serve ADD.
    #[error("netd is not ready: {reason}")]
    NotReady { reason: String },
    /// GC carried on past failures and reports them at the end.
    #[error("GC released {released} attachment(s) but failed for {}: {}", errors.len(), errors.join("; "))]
    GcIncomplete {
        released: usize,
        errors: Vec<String>,
    },
}

impl Error {
    pub fn to_api_error(&self) -> ApiError {
        let (code, details) = match self {
            Error::Netd(e) => return e.to_api_error(),
            Error::Env(e) => (e.code(), e.details()),
            Error::Args(e) => (e.code(), e.details()),
            Error::Config(e) => (e.code(), e.details()),
            Error::Result(e) => (e.code(), String::new()),
            Error::Stdin(_) => (code::IO, String::new()),
            Error::CommandVersion { .. } => (
                code::INCOMPATIBLE_VERSION,
                "set cniVersion in the network config to a newer version".to_string(),
            ),
            Error::Unavailable { details, .. } => (code::NOT_AVAILABLE, details.clone()),
            Error::NotReady { .. } => (code::LIMITED_CONNECTIVITY, String::new()),
            Error::GcIncomplete { errors, .. } => (code::INTERNAL, errors.join("\n")),
        };
        ApiError::new(code, self.to_string()).with_details(details)
    }
}

/// The CNI error document. `details` is always present (possibly empty):
/// the spec lists it, and consumers need not test for it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorDoc<'a> {
    cni_version: &'a str,
    code: u32,
    msg: &'a str,
    details: &'a str,
}

pub fn error_json(version: CniVersion, err: &ApiError) -> String {
    let doc = ErrorDoc {
        cni_version: version.as_str(),
        code: err.code,
        msg: &err.msg,
        details: &err.details,
    };
    serde_json::to_string_pretty(&doc).expect("error document serializes")
}

/// Writes to stdout. A runtime that closed the pipe is gone; there is no
/// one left to report a write failure to, so it is ignored.
pub fn print_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|_| out.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_document_shape() {
        let e = ApiError::new(7, "mtu: bad");
        let v: serde_json::Value =
            serde_json::from_str(&error_json(CniVersion::V0_3_1, &e)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cniVersion": "0.3.1", "code": 7, "msg": "mtu: bad", "details": ""})
        );
    }

    #[test]
    fn codes() {
        let e = Error::CommandVersion {
            command: Command::Check,
            version: CniVersion::V0_3_1,
            needs: CniVersion::V0_4_0,
        };
        let a = e.to_api_error();
        assert_eq!(a.code, 1);
        assert_eq!(
            a.msg,
            "CHECK is not supported by cniVersion 0.3.1 (it needs 0.4.0 or later)"
        );
        let e = Error::GcIncomplete {
            released: 2,
            errors: vec!["a: x".into(), "b: y".into()],
        };
        assert_eq!(e.to_api_error().code, 100);
        assert!(e.to_string().contains("a: x; b: y"));
        assert_eq!(
            Error::NotReady { reason: "r".into() }.to_api_error().code,
            51
        );
        let io = std::io::Error::other("boom");
        assert_eq!(Error::Stdin(io).to_api_error().code, 5);
    }
}
