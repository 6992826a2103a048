//! netd's firewall driver: masquerade (SNAT behind the node) for the
//! management (pod) network.
//!
//! Shape follows netavark's `FirewallDriver`: one trait, one implementation
//! per backend. The only backend is nftables over netlink
//! ([`NftablesDriver`]); nothing here shells out to `nft` or `iptables`.
//!
//! Ruleset owned by one netd instance (one table per instance, so several
//! netd can share a network namespace in tests):
//!
//! ```text
//! table ip <table> {
//!   set masq_<network> { type ipv4_addr; }      # one per network, '-' -> '_'
//!   chain postrouting { type nat hook postrouting priority srcnat; policy accept;
//!     ip saddr @masq_<network> ip daddr != <clusterCIDR> counter masquerade comment "<network>"
//!   }
//! }
//! ```
//!
//! Per-pod state is one set element: CNI ADD adds the pod address, DEL
//! removes exactly that element, CHECK asks whether it is there.
//!
//! Every call works in the network namespace of the calling thread: it
//! borrows, exclusively for the call, a netlink socket opened in that
//! namespace (sockets are pooled per namespace; see `netlink::SocketPool`
//! for why they are not closed after each call). The kernel must forward
//! (`net.ipv4.ip_forward=1` in that namespace) for masquerade to matter;
//! this module does not touch sysctls.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use nix::errno::Errno;

mod netlink;
mod nftables;
#[cfg(test)]
mod tests;

pub use nftables::NftablesDriver;

/// Table name used when netd is not given one.
pub const DEFAULT_TABLE: &str = "furrow";
/// The one base chain of the table.
pub const POSTROUTING_CHAIN: &str = "postrouting";
/// Longest table name accepted (the kernel allows 256; keep it typeable).
pub const MAX_TABLE_NAME_LEN: usize = 64;

/// A network whose pods are masqueraded when leaving `cluster_cidr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasqueradeNetwork {
    /// DNS-1123 label (the network resource's name).
    pub name: String,
    /// Traffic to this prefix (pods on any node) is never masqueraded.
    pub cluster_cidr: Ipv4Net,
}

/// The masquerade rule of one network as found in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasqueradeRule {
    pub network: String,
    /// The `ip daddr != <prefix>` exemption the rule carries.
    pub cluster_cidr: Ipv4Net,
    /// nftables rule handle (stable until the rule is replaced).
    pub handle: u64,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("invalid nftables table name {name:?}: {reason}")]
    InvalidTableName { name: String, reason: &'static str },

    #[error("invalid network name {name:?}: {reason}")]
    InvalidNetworkName { name: String, reason: &'static str },

    #[error("invalid masquerade configuration: {0}")]
    InvalidConfig(String),

    #[error("netlink socket for table ip {table}: {op}: {source}")]
    Socket {
        table: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// The kernel refused an operation. `what` names the object (table,
    /// chain, set, element) the failing message was about.
    #[error("nftables: {what} in table ip {table}: {errno}{}", detail(.message))]
    Kernel {
        table: String,
        what: String,
        errno: Errno,
        message: Option<String>,
    },

    /// The network's set (or the whole table) is missing: sync was not run
    /// for this network, or someone deleted it.
    #[error("nftables: set {set} of network {network:?} does not exist in table ip {table} (not synced?)")]
    SetNotFound {
        table: String,
        network: String,
        set: String,
    },

    #[error("nftables: malformed reply for {what} in table ip {table}: {detail}")]
    Protocol {
        table: String,
        what: String,
        detail: String,
    },
}

fn detail(message: &Option<String>) -> String {
    match message {
        Some(m) if !m.is_empty() => format!(" ({m})"),
        _ => String::new(),
    }
}

impl FirewallError {
    /// The errno the kernel answered with, if this is a kernel error.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            FirewallError::Kernel { errno, .. } => Some(*errno),
            FirewallError::SetNotFound { .. } => Some(Errno::ENOENT),
            _ => None,
        }
    }

    /// The table or set the call needed is absent.
    pub fn is_not_found(&self) -> bool {
        self.errno() == Some(Errno::ENOENT)
    }
}

/// Backend-independent masquerade management. All methods are blocking
/// (call from a blocking thread pool) and safe to call concurrently.
pub trait FirewallDriver: Send + Sync {
    /// Backend name ("nftables").
    fn name(&self) -> &'static str;

    /// The table this instance owns.
    fn table(&self) -> &str;

    /// Makes the table hold exactly the listed networks (set + rule each)
    /// with set contents equal to the given members, atomically. Anything
    /// else in the table is removed. Members added concurrently by
    /// `add_member` and not listed here are lost: serialize with ADD/DEL.
    fn sync(&self, networks: &[(MasqueradeNetwork, Vec<Ipv4Addr>)]) -> Result<(), FirewallError>;

    /// Adds a pod address to its network's set. Already present is success.
    fn add_member(&self, network: &str, ip: Ipv4Addr) -> Result<(), FirewallError>;

    /// Removes a pod address. Absent element, set or table is success (the
    /// postcondition "no trace of this pod" holds).
    fn remove_member(&self, network: &str, ip: Ipv4Addr) -> Result<(), FirewallError>;

    /// Whether the pod address is in the set. Missing set/table is an error
    /// ([`FirewallError::SetNotFound`]) so CHECK can say what is wrong.
    fn has_member(&self, network: &str, ip: Ipv4Addr) -> Result<bool, FirewallError>;

    /// All members of the network's set, sorted.
    fn members(&self, network: &str) -> Result<Vec<Ipv4Addr>, FirewallError>;

    /// The network's masquerade rule, if a rule of exactly the expected
    /// shape exists in the postrouting chain (absent table = `None`).
    fn masquerade_rule(&self, network: &str) -> Result<Option<MasqueradeRule>, FirewallError>;

    /// Whether the network's masquerade rule exists (CHECK, `netctl status`).
    fn rule_present(&self, network: &str) -> Result<bool, FirewallError> {
        Ok(self.masquerade_rule(network)?.is_some())
    }

    /// Deletes the whole table. Absent table is success.
    fn teardown(&self) -> Result<(), FirewallError>;
}

/// Accepts `[A-Za-z][A-Za-z0-9_]*`, at most [`MAX_TABLE_NAME_LEN`] bytes:
/// always a plain nft identifier, so `nft list table ip <name>` works
/// without quoting.
pub fn validate_table_name(name: &str) -> Result<(), FirewallError> {
    let bad = |reason| {
        Err(FirewallError::InvalidTableName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_TABLE_NAME_LEN {
        return bad("longer than 64 bytes");
    }
    if !name.as_bytes()[0].is_ascii_alphabetic() {
        return bad("must start with a letter");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return bad("only letters, digits and '_' are allowed");
    }
    Ok(())
}

/// Table name for a netd instance: `furrow_<instance>` with every character
/// outside `[A-Za-z0-9_]` mapped to '_' (e.g. "node-1" -> "furrow_node_1").
pub fn table_name_for_instance(instance: &str) -> Result<String, FirewallError> {
    let mut name = String::from(DEFAULT_TABLE);
    if !instance.is_empty() {
        name.push('_');
        name.extend(instance.chars().map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        }));
    }
    validate_table_name(&name)?;
    Ok(name)
}

/// Network names are DNS-1123 labels: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at
/// most 63 bytes.
pub fn validate_network_name(name: &str) -> Result<(), FirewallError> {
    let bad = |reason| {
        Err(FirewallError::InvalidNetworkName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 63 {
        return bad("longer than 63 bytes (not a DNS-1123 label)");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad("only lowercase letters, digits and '-' are allowed (DNS-1123 label)");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return bad("must start and end with a letter or digit (DNS-1123 label)");
    }
    Ok(())
}

/// The set holding a network's masqueraded pod addresses. '-' is mapped
/// to '_' so the name stays an nft identifier; injective because labels
/// never contain '_'.
pub fn set_name(network: &str) -> Result<String, FirewallError> {
    validate_network_name(network)?;
    Ok(format!("masq_{}", network.replace('-', "_")))
}
