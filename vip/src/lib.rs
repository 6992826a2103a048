//! The floating-VIP controller's building blocks.
//!
//! - [`bgp`]: a BGP-4 speaker that advertises a VIP's /32 or /128 to
//!   upstream routers from the node holding it (or from every eligible
//!   node, for ECMP) and withdraws it on step-down.
//!
//! - [`neigh`]: ARP and IPv6 neighbour discovery frames: the gratuitous
//!   ARPs and unsolicited NAs that announce a VIP's holder, and the ARP
//!   answers of netd's DHCP responders (parsing frames from the wire).
//!
//! Election lives with the controller in netd.

pub mod bgp;
pub mod neigh;
