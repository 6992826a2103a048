//! netd: Furrow's per-node network daemon.

pub mod store;
pub mod netlink;
pub mod ipam;
pub mod ports;
pub mod subnets;
pub mod util;
pub mod firewall;
pub mod options;
pub mod resources;
pub mod locks;
pub mod metrics;
pub mod validate;
pub mod node;
pub mod drivers;
pub mod daemon;
pub mod api;
