//! The Furrow lab: a multi-host network built from namespaces on one
//! machine, used by the integration tests, the demo and the benchmarks.
//!
//! - a fabric switch namespace (a plain bridge; it forwards VLAN-tagged
//!   frames untouched, so it is also the trunking fabric),
//! - node namespaces, each with an uplink into the fabric and its own
//!   netd instance,
//! - an external host on the fabric, "beyond" the nodes,
//! - pods: namespaces attached by running the `furrow` plugin exactly as
//!   a container runtime does.
//!
//! Every name carries the test process's pid, so parallel tests never
//! collide, and every object is owned by a guard that removes it on drop,
//! also when a test panics. Objects left by a killed test process are
//! swept by [`janitor::sweep`] the next time a lab starts.

pub mod arp;
pub mod bench;
pub mod bins;
pub mod bird;
pub mod capture;
pub mod cni;
pub mod dhcp_clients;
pub mod etcd;
pub mod flow;
pub mod guest;
pub mod inspect;
pub mod janitor;
pub mod lab;
pub mod lease_api;
pub mod names;
pub mod ndp;
pub mod netd;
pub mod netns;
pub mod probe;
pub mod scapy;
pub mod scenario;

pub use lab::{Lab, Node, Pod};
pub use netns::Netns;
