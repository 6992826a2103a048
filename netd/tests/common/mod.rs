//! Helpers shared by netd's integration tests. The etcd harness lives in
//! the lab crate (furrow-tests) so every test suite can start one.

pub mod etcd {
    use std::time::Duration;

    use furrow_netd::store::etcd::EtcdConfig;
    pub use furrow_tests::etcd::*;

    /// netd's etcd configuration for a cluster, with its own key prefix and
    /// a short deadline.
    pub fn store_config(cluster: &EtcdCluster, prefix: &str) -> EtcdConfig {
        let mut cfg = EtcdConfig::new(cluster.endpoints())
            .with_prefix(prefix)
            .with_timeout(Duration::from_secs(2));
        if let Some(t) = cluster.tls() {
            cfg.tls.ca = Some(t.ca.clone());
            cfg.tls.cert = Some(t.client_cert.clone());
            cfg.tls.key = Some(t.client_key.clone());
        }
        cfg
    }
}
