//! netd's DHCP service: a responder per pool on every node that has VMs on
//! the pool's network, answering only those VMs, from leases shared
//! through the store.

pub mod client;
pub mod leases;
pub mod service;
