//! Floating VIPs: election over the shared store, ARP/NDP announcement,
//! health checks.

pub mod announce;
pub mod bgp;
pub mod dhcp;
pub mod election;
pub mod fence;
pub mod health;
pub mod service;

pub use service::VipService;
