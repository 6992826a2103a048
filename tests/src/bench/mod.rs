//! Traffic measurements between lab namespaces (iperf3, sockperf), shared
//! by the benchmarks.

pub mod dhcp;
pub mod mgmt;
pub mod scale;
pub mod traffic;
pub mod vip;
