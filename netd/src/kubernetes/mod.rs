//! The Kubernetes backend: Furrow's custom resources and Multus'
//! NetworkAttachmentDefinitions as the source of netd's resources, status
//! written back, and VIP election over Leases.
//!
//! Layout: a pure core that recorded API objects can drive —
//! `translate` (one object → the document netd stores), `state` (watch
//! events and re-lists → desired documents and store changes), `lease`
//! (who may hold a VIP's Lease, and the Lease to write), `status` (the
//! merge patches netd writes to `/status`) — and `client`, the kube-rs
//! shell (feature `kubernetes`) that feeds the core from watches and
//! applies its changes to netd's store.
//!
//! The documents go into netd's own store (embedded or etcd) under the
//! same keys the API path writes, so everything above the store (the
//! reconcile loop watching `/furrow/resources/`) is unchanged, and state
//! with no Kubernetes object (IPAM, ports, subnet and DHCP leases) stays
//! where it is. See docs/ARCHITECTURE.md, "Kubernetes backend".

#[cfg(feature = "kubernetes")]
pub mod client;
pub mod lease;
pub mod state;
pub mod status;
pub mod translate;

pub use state::{parse_list, parse_watch_event, Change, KubeEvent, KubeState, Outcome, Rejection};
pub use translate::{Collection, Invalid, NetworkAttachment, ObjectRef};
