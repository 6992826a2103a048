//! The floating-VIP controller's building blocks.
//!
//! - [`bgp`]: a BGP-4 speaker that advertises a VIP's /32 or /128 to
//!   upstream routers from the node holding it (or from every eligible
//!   node, for ECMP) and withdraws it on step-down.
//!
//! Election and gratuitous ARP / unsolicited NA announcement live with
//! the controller in netd.

pub mod bgp;
