use serde::{Deserialize, Serialize};

/// Error codes. 1-99 are the CNI specification's well-known codes; netd
/// uses the same numbers on its whole API so that one error shape serves
/// the plugin, netctl and the HTTP API alike. 100+ are Furrow's own.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// An unexpected failure inside netd or the kernel.
    pub const INTERNAL: u32 = 100;
    /// No free address is left in the pool the attachment draws from.
    pub const POOL_EXHAUSTED: u32 = 101;
    /// CNI_IFNAME already exists in the container's network namespace.
    pub const IFNAME_EXISTS: u32 = 102;
    /// The requested address (runtimeConfig.ips) is held by someone else
    /// or lies outside the pool.
    pub const ADDRESS_UNAVAILABLE: u32 = 103;
    /// The attachment already exists (ADD twice without DEL).
    pub const ALREADY_ATTACHED: u32 = 104;
    /// A resource or attachment that the request names does not exist.
    pub const NOT_FOUND: u32 = 105;
    /// CHECK found the attachment differs from what ADD built.
    pub const CHECK_FAILED: u32 = 106;
    /// The request conflicts with existing state (e.g. changing a
    /// network's CIDR while ports use it).
    pub const CONFLICT: u32 = 107;
    /// A datapath table is full.
    pub const CAPACITY: u32 = 108;
    /// The caller may not do this: netd's API socket serves root fully
    /// and members of its --api-read-group read-only views.
    pub const PERMISSION_DENIED: u32 = 109;
}

/// The error shape of the CNI specification (`code`, `msg`, `details`),
/// used on netd's API too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{msg}")]
pub struct ApiError {
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl ApiError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        ApiError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// A well-formed request whose field `field` holds a value the
    /// receiver cannot accept.
    pub fn invalid_field(field: &str, expected: impl std::fmt::Display) -> Self {
        ApiError::new(code::INVALID_CONFIG, format!("{field}: {expected}"))
    }

    pub fn internal(msg: impl Into<String>) -> Self {
        ApiError::new(code::INTERNAL, msg)
    }

    /// HTTP status netd answers with for this error.
    pub fn http_status(&self) -> u16 {
        match self.code {
            code::INCOMPATIBLE_VERSION
            | code::UNSUPPORTED_FIELD
            | code::INVALID_ENV
            | code::DECODE
            | code::INVALID_CONFIG => 400,
            code::UNKNOWN_CONTAINER | code::NOT_FOUND => 404,
            code::IFNAME_EXISTS
            | code::ADDRESS_UNAVAILABLE
            | code::ALREADY_ATTACHED
            | code::CONFLICT
            | code::CHECK_FAILED => 409,
            code::POOL_EXHAUSTED | code::CAPACITY => 507,
            code::PERMISSION_DENIED => 403,
            code::TRY_AGAIN | code::NOT_AVAILABLE | code::LIMITED_CONNECTIVITY => 503,
            _ => 500,
        }
    }
}
