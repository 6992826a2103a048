//! Helpers shared by netd's integration tests.

pub mod etcd;
