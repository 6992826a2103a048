//! Traffic measurements between lab namespaces (iperf3, sockperf), shared
//! by the benchmarks.

pub mod traffic;
