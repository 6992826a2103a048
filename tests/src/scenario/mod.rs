//! Scenarios written once as library code, run by host tests and, with
//! another backend, inside a full-kernel guest.

pub mod dhcp;
pub mod scale;
pub mod vip;
pub mod vlan;
