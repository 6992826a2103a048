//! netd: Furrow's per-node network daemon.

pub mod api;
pub mod api_access;
pub mod api_trace;
pub mod api_views;
pub mod daemon;
pub mod dhcp;
pub mod drivers;
pub mod firewall;
pub mod ipam;
pub mod kubernetes;
pub mod locks;
pub mod membership;
pub mod metrics;
pub mod netlink;
pub mod node;
pub mod options;
pub mod ports;
pub mod probe;
pub mod rawsock;
pub mod resources;
pub mod store;
pub mod subnets;
pub mod util;
pub mod validate;
pub mod vip;
