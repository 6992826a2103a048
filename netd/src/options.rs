//! netd's command line. With no flags it runs as the node's one netd
//! (socket /run/furrow/netd.sock, state /var/lib/furrow, ...);
//! `--instance` moves every location and name aside so several netds run
//! side by side on one machine (one per node namespace in tests).

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::store::etcd::{ConfigField, EtcdConfig, EtcdTls};
use crate::store::StoreConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreBackend {
    /// One redb file in the state directory: a node on its own.
    Embedded,
    /// An etcd cluster several nodes share.
    Etcd,
    /// Refused with what to use instead: state (subnet and DHCP leases,
    /// ports, VIP election) cannot live in Kubernetes yet; resources can
    /// (--resources kubernetes).
    Kubernetes,
}

/// Where netd's resources (ManagementNetwork, VlanConfig, ...) come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ResourceSource {
    /// Applied through netd's API and config directory, kept in the store.
    Store,
    /// Kubernetes: Furrow's custom resources and NetworkAttachmentDefinitions
    /// (in-cluster credentials, or KUBECONFIG), mirrored into the store;
    /// netd's API and config directory cannot change them.
    Kubernetes,
}

/// Who decides which node holds each VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VipElection {
    /// Heartbeats and holder keys in netd's store (etcd; with the embedded
    /// store the one node holds everything).
    Store,
    /// One coordination.k8s.io Lease per VirtualIP in --vip-lease-namespace
    /// (in-cluster credentials, or KUBECONFIG).
    Kubernetes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "netd",
    version,
    about = "Furrow's per-node network daemon",
    long_about = "Furrow's per-node network daemon. Owns the node's management network, \
its ports, the eBPF datapath and NAT rules, and serves the `furrow` CNI plugin and \
`netctl` over an HTTP/JSON API on a unix socket.\n\n\
Started with no flags it is the node's one netd. --instance NAME derives separate \
socket, state, config, bpffs and nftables locations so several netds can run on one \
machine; any of them can also be set on its own."
)]
pub struct Options {
    /// Instance name; derives the default locations below. Letters, digits, '-' and '_'.
    #[arg(long, default_value = "default", env = "FURROW_INSTANCE")]
    pub instance: String,
    /// This node's name [default: the hostname].
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// A label of this node, `key=value` (repeatable); VlanConfig and
    /// VlanInterface node selectors match them. `kubernetes.io/hostname`
    /// is always set to the node name.
    #[arg(long = "node-label", value_name = "KEY=VALUE")]
    pub node_labels: Vec<String>,
    /// API socket [default: /run/furrow/netd.sock, or /run/furrow/<instance>/netd.sock].
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Lets a group read netd's API: the socket becomes mode 0660 with this
    /// group (a name or a numeric gid), and its members (by primary or
    /// supplementary group) get the read-only views (GET: netctl status,
    /// ports, get, ...; secrets redacted); changes stay root's. Without it
    /// the socket is root's alone (0600).
    #[arg(long, value_name = "GROUP", env = "FURROW_API_READ_GROUP")]
    pub api_read_group: Option<String>,
    /// State directory holding the embedded store [default: /var/lib/furrow[/<instance>]].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Where netd keeps its state.
    #[arg(long, value_enum, default_value = "embedded", env = "FURROW_STORE")]
    pub store: StoreBackend,
    /// Where resources come from. `kubernetes` takes them from the API
    /// server; state (leases, addresses, ports, VIP election) stays in
    /// --store, so nodes sharing state still need --store etcd.
    #[arg(long, value_enum, default_value = "store", env = "FURROW_RESOURCES")]
    pub resources: ResourceSource,
    /// etcd client URLs, comma-separated (with --store etcd).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379",
        env = "FURROW_ETCD_ENDPOINTS"
    )]
    pub etcd_endpoints: Vec<String>,
    /// Prepended to every etcd key, e.g. /clusters/east puts this cluster's
    /// keys under /clusters/east/furrow/...; empty stores them as /furrow/....
    /// Clusters sharing one etcd need different prefixes.
    #[arg(long, default_value = "", env = "FURROW_ETCD_PREFIX")]
    pub etcd_prefix: String,
    /// Deadline of each etcd call, in milliseconds; past it netd answers
    /// "try again later".
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    pub etcd_timeout_ms: u64,
    /// PEM CA bundle for https:// etcd endpoints.
    #[arg(long, value_name = "FILE")]
    pub etcd_ca: Option<PathBuf>,
    /// PEM client certificate for etcd (with --etcd-key).
    #[arg(long, value_name = "FILE")]
    pub etcd_cert: Option<PathBuf>,
    /// PEM client key for etcd (with --etcd-cert).
    #[arg(long, value_name = "FILE")]
    pub etcd_key: Option<PathBuf>,
    /// Directory of resource files (*.yaml, *.yml, *.json) applied at start and on SIGHUP
    /// [default: /etc/furrow/resources.d, or /etc/furrow/<instance>/resources.d].
    #[arg(long)]
    pub config_dir: Option<PathBuf>,
    /// bpffs directory for this instance's pinned maps and links [default: /sys/fs/bpf/furrow/<instance>].
    #[arg(long)]
    pub bpf_dir: Option<PathBuf>,
    /// nftables table name [default: furrow, or furrow_<instance>].
    #[arg(long)]
    pub nft_table: Option<String>,
    /// Also serve /metrics over TCP on this address (e.g. 127.0.0.1:9740).
    #[arg(long)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Log format.
    #[arg(long, value_enum, default_value = "text", env = "FURROW_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log filter (tracing env-filter syntax), e.g. info or furrow_netd=debug.
    #[arg(long, default_value = "info", env = "FURROW_LOG")]
    pub log_level: String,
    /// VIP election: how often a node that may hold VIPs writes its
    /// heartbeat.
    #[arg(long, default_value_t = 100, value_name = "MS")]
    pub vip_heartbeat_ms: u64,
    /// VIP election: how long a holder's heartbeat must stay unchanged
    /// before another node takes its VIPs (the node-loss failover time).
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub vip_takeover_ms: u64,
    /// VIP fencing: a holder drops its VIPs this long before anyone may
    /// take them over (covers clock-rate drift and scheduling delays).
    #[arg(long, default_value_t = 300, value_name = "MS")]
    pub vip_fence_margin_ms: u64,
    /// VIP election backend. With kubernetes the Lease lasts
    /// --vip-takeover-ms rounded up to whole seconds, renewed every quarter.
    #[arg(long, value_enum, default_value = "store")]
    pub vip_election: VipElection,
    /// Namespace of the VIP Leases (with --vip-election kubernetes).
    #[arg(long, default_value = "kube-system", env = "POD_NAMESPACE")]
    pub vip_lease_namespace: String,
    /// Run only the floating-VIP controller (election, ARP/NDP, BGP):
    /// no eBPF datapath, no networks, no NAT, CNI requests refused. For
    /// the control-plane VIP before Kubernetes and its CNI are up.
    #[arg(long)]
    pub vip_only: bool,
    /// Node membership: a node whose record has not been renewed this
    /// long is gone, and its management subnets, addresses and ports are
    /// released (it renews every quarter of this).
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub node_grace_secs: u64,
    /// The interface whose IPv4 address carries the management network
    /// between nodes (VXLAN endpoint, host-gw next hop). Default: the
    /// interface of the IPv4 default route.
    #[arg(long, env = "FURROW_UNDERLAY_INTERFACE", value_name = "IFNAME")]
    pub underlay_interface: Option<String>,
    /// Upgrade drills and tests only: the eBPF programs' generation
    /// global. Another value than the running programs' makes netd load
    /// new programs and swap them into the existing links at start, as an
    /// upgrade that changes a program does. Leave at 0 otherwise.
    #[arg(
        long,
        hide = true,
        default_value_t = 0,
        env = "FURROW_DATAPATH_GENERATION"
    )]
    pub datapath_generation: u32,
}

/// Options with every default filled in.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub instance: String,
    pub node: String,
    pub node_labels: std::collections::BTreeMap<String, String>,
    pub socket: PathBuf,
    /// Whether the socket is at its default place, in a directory that is
    /// netd's own (whose permissions netd then sets).
    pub socket_dir_owned: bool,
    /// --api-read-group, resolved to a gid.
    pub api_read_group: Option<u32>,
    pub state_dir: PathBuf,
    pub store: StoreConfig,
    pub resources: ResourceSource,
    pub config_dir: PathBuf,
    pub bpf_dir: PathBuf,
    pub nft_table: String,
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub vip_timing: crate::vip::election::Timing,
    pub vip_election: VipElection,
    pub vip_lease_namespace: String,
    pub vip_only: bool,
    pub node_grace: std::time::Duration,
    pub underlay_interface: Option<String>,
    /// See [`Options::datapath_generation`].
    pub datapath_generation: u32,
}

#[derive(Debug, thiserror::Error)]
#[error("--{flag}: {msg}")]
pub struct OptionsError {
    pub flag: &'static str,
    pub msg: String,
}

impl Options {
    pub fn resolve(&self) -> Result<Resolved, OptionsError> {
        let inst = &self.instance;
        let inst_ok = !inst.is_empty()
            && inst.len() <= 32
            && inst
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !inst_ok {
            return Err(OptionsError {
                flag: "instance",
                msg: format!("{inst:?}: expected 1-32 letters, digits, '-' or '_'"),
            });
        }
        let default = inst == "default";
        let node = match &self.node_name {
            Some(n) => n.clone(),
            None => nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into()),
        };
        let mut errs = Vec::new();
        furrow_api::resource::validate_name("node", &node, 253, &mut errs);
        if let Some(e) = errs.first() {
            return Err(OptionsError {
                flag: "node-name",
                msg: e.expected.clone(),
            });
        }
        let sub = |base: &str, tail: &str| -> PathBuf {
            if default {
                PathBuf::from(base).join(tail)
            } else {
                PathBuf::from(base).join(inst).join(tail)
            }
        };
        let nft_table = match &self.nft_table {
            Some(t) => t.clone(),
            None if default => "furrow".to_string(),
            None => format!("furrow_{}", inst.replace('-', "_")),
        };
        if nft_table.is_empty()
            || nft_table.len() > 64
            || !nft_table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(OptionsError {
                flag: "nft-table",
                msg: format!("{nft_table:?}: expected 1-64 letters, digits or '_'"),
            });
        }
        let mut node_labels = std::collections::BTreeMap::new();
        for l in &self.node_labels {
            let Some((k, v)) = l.split_once('=') else {
                return Err(OptionsError {
                    flag: "node-label",
                    msg: format!("{l:?}: expected KEY=VALUE"),
                });
            };
            if k.is_empty() {
                return Err(OptionsError {
                    flag: "node-label",
                    msg: format!("{l:?}: the key is empty"),
                });
            }
            node_labels.insert(k.to_string(), v.to_string());
        }
        node_labels.insert("kubernetes.io/hostname".to_string(), node.clone());
        let state_dir = self.state_dir.clone().unwrap_or_else(|| {
            if default {
                "/var/lib/furrow".into()
            } else {
                PathBuf::from("/var/lib/furrow").join(inst)
            }
        });
        let store = self.store_config(&state_dir)?;
        if self.resources == ResourceSource::Kubernetes && !cfg!(feature = "kubernetes") {
            return Err(OptionsError {
                flag: "resources",
                msg: "kubernetes: this netd was built without the `kubernetes` feature".into(),
            });
        }
        if self.vip_election == VipElection::Kubernetes {
            if !cfg!(feature = "kubernetes") {
                return Err(OptionsError {
                    flag: "vip-election",
                    msg: "kubernetes: this netd was built without the `kubernetes` feature".into(),
                });
            }
            if !is_dns_label(&self.vip_lease_namespace) {
                return Err(OptionsError {
                    flag: "vip-lease-namespace",
                    msg: format!(
                        "{:?}: expected a namespace name (lowercase letters, digits and '-', at most 63)",
                        self.vip_lease_namespace
                    ),
                });
            }
        }
        Ok(Resolved {
            instance: inst.clone(),
            node,
            node_labels,
            socket: self
                .socket
                .clone()
                .unwrap_or_else(|| sub("/run/furrow", "netd.sock")),
            socket_dir_owned: self.socket.is_none(),
            api_read_group: match &self.api_read_group {
                None => None,
                Some(g) => Some(resolve_group(g).map_err(|msg| OptionsError {
                    flag: "api-read-group",
                    msg,
                })?),
            },
            state_dir,
            store,
            resources: self.resources,
            config_dir: self
                .config_dir
                .clone()
                .unwrap_or_else(|| sub("/etc/furrow", "resources.d")),
            bpf_dir: self
                .bpf_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("/sys/fs/bpf/furrow").join(inst)),
            nft_table,
            metrics_listen: self.metrics_listen,
            vip_timing: self.vip_timing()?,
            vip_election: self.vip_election,
            vip_lease_namespace: self.vip_lease_namespace.clone(),
            vip_only: self.vip_only,
            node_grace: {
                if !(1..=86_400).contains(&self.node_grace_secs) {
                    return Err(OptionsError {
                        flag: "node-grace-secs",
                        msg: format!("{}: expected 1-86400", self.node_grace_secs),
                    });
                }
                std::time::Duration::from_secs(self.node_grace_secs)
            },
            underlay_interface: match &self.underlay_interface {
                Some(n)
                    if n.is_empty()
                        || n.len() > 15
                        || n.bytes()
                            .any(|b| b == b'/' || b.is_ascii_whitespace() || b == 0) =>
                {
                    return Err(OptionsError {
                        flag: "underlay-interface",
                        msg: format!("{n:?}: expected an interface name of 1-15 characters without '/' or spaces"),
                    });
                }
                other => other.clone(),
            },
            datapath_generation: self.datapath_generation,
        })
    }

    fn vip_timing(&self) -> Result<crate::vip::election::Timing, OptionsError> {
        let ms = std::time::Duration::from_millis;
        if !(20..=5000).contains(&self.vip_heartbeat_ms) {
            return Err(OptionsError {
                flag: "vip-heartbeat-ms",
                msg: format!("{}: expected 20-5000", self.vip_heartbeat_ms),
            });
        }
        if self.vip_takeover_ms < 3 * self.vip_heartbeat_ms || self.vip_takeover_ms > 60_000 {
            return Err(OptionsError {
                flag: "vip-takeover-ms",
                msg: format!(
                    "{}: expected at least 3 heartbeats ({} ms) and at most 60000",
                    self.vip_takeover_ms,
                    3 * self.vip_heartbeat_ms
                ),
            });
        }
        if self.vip_fence_margin_ms < 50
            || self.vip_fence_margin_ms + self.vip_heartbeat_ms >= self.vip_takeover_ms
        {
            return Err(OptionsError {
                flag: "vip-fence-margin-ms",
                msg: format!(
                    "{}: expected at least 50 and less than the takeover time minus a heartbeat",
                    self.vip_fence_margin_ms
                ),
            });
        }
        Ok(crate::vip::election::Timing {
            heartbeat: ms(self.vip_heartbeat_ms),
            takeover: ms(self.vip_takeover_ms),
            margin: ms(self.vip_fence_margin_ms),
        })
    }

    fn store_config(&self, state_dir: &std::path::Path) -> Result<StoreConfig, OptionsError> {
        match self.store {
            StoreBackend::Embedded => Ok(StoreConfig::Embedded {
                path: state_dir.join("store.redb"),
            }),
            StoreBackend::Kubernetes => Err(OptionsError {
                flag: "store",
                msg: "kubernetes: netd's state (subnet and DHCP leases, ports, VIP election) cannot live in Kubernetes yet; take resources from Kubernetes with --resources=kubernetes and keep state with --store=etcd (nodes sharing state) or --store=embedded (a single node)".into(),
            }),
            StoreBackend::Etcd => {
                let cfg = EtcdConfig {
                    endpoints: self
                        .etcd_endpoints
                        .iter()
                        .map(|e| e.trim().to_string())
                        .filter(|e| !e.is_empty())
                        .collect(),
                    prefix: self.etcd_prefix.clone(),
                    timeout: std::time::Duration::from_millis(self.etcd_timeout_ms),
                    tls: EtcdTls {
                        ca: self.etcd_ca.clone(),
                        cert: self.etcd_cert.clone(),
                        key: self.etcd_key.clone(),
                    },
                };
                cfg.validate().map_err(|e| OptionsError {
                    flag: match e.field {
                        ConfigField::Endpoints => "etcd-endpoints",
                        ConfigField::Prefix => "etcd-prefix",
                        ConfigField::Tls => "etcd-cert",
                        ConfigField::Timeout => "etcd-timeout-ms",
                    },
                    msg: e.msg,
                })?;
                Ok(StoreConfig::Etcd(cfg))
            }
        }
    }
}

/// A DNS-1123 label, as Kubernetes names namespaces.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A group name or numeric gid, as the system knows it.
fn resolve_group(g: &str) -> Result<u32, String> {
    if let Ok(gid) = g.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(g) {
        Ok(Some(grp)) => Ok(grp.gid.as_raw()),
        Ok(None) => Err(format!(
            "{g:?}: no such group (give a group name or a numeric gid)"
        )),
        Err(e) => Err(format!("{g:?}: cannot look the group up: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Options {
        Options::try_parse_from(std::iter::once("netd").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn defaults_just_work() {
        let r = parse(&["--node-name", "n1"]).resolve().unwrap();
        assert_eq!(r.socket, PathBuf::from("/run/furrow/netd.sock"));
        assert_eq!(r.state_dir, PathBuf::from("/var/lib/furrow"));
        assert_eq!(r.bpf_dir, PathBuf::from("/sys/fs/bpf/furrow/default"));
        assert_eq!(r.nft_table, "furrow");
        assert_eq!(r.datapath_generation, 0);
    }

    #[test]
    fn the_datapath_generation_is_a_hidden_drill_option() {
        let r = parse(&["--node-name", "n1", "--datapath-generation", "3"])
            .resolve()
            .unwrap();
        assert_eq!(r.datapath_generation, 3);
        assert!(
            Options::try_parse_from(["netd", "--datapath-generation", "-1"]).is_err(),
            "a u32"
        );
        let help = <Options as clap::CommandFactory>::command()
            .render_help()
            .to_string();
        assert!(!help.contains("datapath-generation"), "hidden from --help");
    }

    #[test]
    fn instance_moves_everything_aside() {
        let r = parse(&["--instance", "node-2", "--node-name", "n2"])
            .resolve()
            .unwrap();
        assert_eq!(r.socket, PathBuf::from("/run/furrow/node-2/netd.sock"));
        assert_eq!(r.state_dir, PathBuf::from("/var/lib/furrow/node-2"));
        assert_eq!(
            r.config_dir,
            PathBuf::from("/etc/furrow/node-2/resources.d")
        );
        assert_eq!(r.bpf_dir, PathBuf::from("/sys/fs/bpf/furrow/node-2"));
        assert_eq!(r.nft_table, "furrow_node_2");
    }

    #[test]
    fn node_labels_include_the_hostname() {
        let r = parse(&["--node-name", "n1", "--node-label", "zone=a"])
            .resolve()
            .unwrap();
        assert_eq!(r.node_labels.get("zone").map(String::as_str), Some("a"));
        assert_eq!(
            r.node_labels
                .get("kubernetes.io/hostname")
                .map(String::as_str),
            Some("n1")
        );
        assert_eq!(
            parse(&["--node-label", "nokey"])
                .resolve()
                .unwrap_err()
                .flag,
            "node-label"
        );
    }

    #[test]
    fn store_kubernetes_says_what_to_use_instead() {
        let e = parse(&["--node-name", "n1", "--store", "kubernetes"])
            .resolve()
            .unwrap_err();
        assert_eq!(e.flag, "store");
        assert!(e.msg.contains("--resources=kubernetes"), "{}", e.msg);
    }

    #[test]
    fn resources_come_from_the_store_unless_asked() {
        let r = parse(&["--node-name", "n1"]).resolve().unwrap();
        assert_eq!(r.resources, ResourceSource::Store);
        let r = parse(&["--node-name", "n1", "--resources", "kubernetes"]).resolve();
        if cfg!(feature = "kubernetes") {
            assert_eq!(r.unwrap().resources, ResourceSource::Kubernetes);
        } else {
            assert_eq!(r.unwrap_err().flag, "resources");
        }
    }

    #[test]
    fn store_is_embedded_unless_asked() {
        let r = parse(&["--node-name", "n1"]).resolve().unwrap();
        assert!(matches!(
            r.store,
            StoreConfig::Embedded { ref path } if path == &PathBuf::from("/var/lib/furrow/store.redb")
        ));
        let r = parse(&[
            "--node-name",
            "n1",
            "--store",
            "etcd",
            "--etcd-endpoints",
            "http://10.0.0.1:2379,http://10.0.0.2:2379",
            "--etcd-prefix",
            "/clusters/east",
        ])
        .resolve()
        .unwrap();
        let StoreConfig::Etcd(c) = r.store else {
            panic!("expected etcd")
        };
        assert_eq!(
            c.endpoints,
            ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert_eq!(c.prefix, "/clusters/east");
        assert_eq!(c.timeout, std::time::Duration::from_secs(5));
        let e = parse(&[
            "--node-name",
            "n1",
            "--store",
            "etcd",
            "--etcd-prefix",
            "x/",
        ])
        .resolve()
        .unwrap_err();
        assert_eq!(e.flag, "etcd-prefix");
    }

    #[test]
    fn api_read_group_takes_a_gid_or_a_name() {
        let r = parse(&["--node-name", "n1"]).resolve().unwrap();
        assert_eq!(r.api_read_group, None);
        assert!(r.socket_dir_owned);
        let r = parse(&[
            "--node-name",
            "n1",
            "--api-read-group",
            "4242",
            "--socket",
            "/x/s",
        ])
        .resolve()
        .unwrap();
        assert_eq!(r.api_read_group, Some(4242));
        assert!(!r.socket_dir_owned);
        let r = parse(&["--node-name", "n1", "--api-read-group", "root"])
            .resolve()
            .unwrap();
        assert_eq!(r.api_read_group, Some(0));
        let e = parse(&[
            "--node-name",
            "n1",
            "--api-read-group",
            "no-such-group-here",
        ])
        .resolve()
        .unwrap_err();
        assert_eq!(e.flag, "api-read-group");
    }

    #[test]
    fn bad_values_name_the_flag() {
        let e = parse(&["--instance", "a/b"]).resolve().unwrap_err();
        assert_eq!(e.flag, "instance");
        let e = parse(&["--node-name", "Node_1"]).resolve().unwrap_err();
        assert_eq!(e.flag, "node-name");
    }
}
