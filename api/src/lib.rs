//! The contract shared by `netd`, the `furrow` CNI plugin and `netctl`.
//!
//! Kept free of async runtimes and kernel code so the CNI plugin, which
//! links it, stays a small, fast-starting binary.

pub mod client;
pub mod cni;
#[cfg(feature = "schema")]
pub mod crd;
#[cfg(feature = "documents")]
pub mod document;
pub mod error;
pub mod mac;
pub mod resource;
pub mod wire;
pub mod wire_diag;
pub mod wire_trace;

pub use error::ApiError;
pub use mac::MacAddr;

/// Version of the netd HTTP API. Bumped on incompatible changes; the
/// client refuses to talk to a netd that speaks another version.
pub const API_VERSION: u32 = 1;

/// Response header carrying [`API_VERSION`].
pub const API_VERSION_HEADER: &str = "x-furrow-api-version";

/// Where netd listens when started without flags.
pub const DEFAULT_SOCKET: &str = "/run/furrow/netd.sock";
