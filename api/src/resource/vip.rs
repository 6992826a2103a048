//! Floating VIPs: VirtualIP (one address that one eligible node holds at a
//! time, announced by ARP/NDP or BGP), VirtualIPPool (addresses handed to
//! VirtualIPs that name the pool, e.g. for LoadBalancer services) and
//! BGPPeer (MetalLB's shape: the routers a node's speaker talks to).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::{err, new_resource, valid_ifname, validate_name, FieldError, Resource, MAX_NAME_LEN};

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VipMode {
    /// The holder adds the address to the interface and announces it with
    /// gratuitous ARP (IPv4) or unsolicited neighbour advertisements (IPv6).
    #[default]
    Arp,
    /// The holder (or every healthy eligible node, with `ecmp`) advertises
    /// the /32 or /128 to its BGP peers.
    Bgp,
}

/// What makes a holder step down: a TCP connect, an HTTP GET answered 2xx,
/// or a command exiting 0. Exactly one of `tcp`, `http`, `command`.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    /// `host:port` to connect to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    /// `http://host:port/path` to GET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// argv of a command run without a shell.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u32,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u32,
    /// Consecutive failures before the holder steps down (and successes
    /// before a node counts as healthy again).
    #[serde(default = "default_threshold")]
    pub failure_threshold: u32,
}

fn default_interval_ms() -> u32 {
    1000
}
fn default_timeout_ms() -> u32 {
    500
}
fn default_threshold() -> u32 {
    2
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualIpSpec {
    /// An IPv4 or IPv6 address, or `dhcp` (acquired with a stable MAC on a
    /// macvlan of the interface). Exactly one of `address` and `pool`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// A VirtualIPPool to take an address from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// The node link the address lives on. Exactly one of `interface` and
    /// `vlanInterface`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// A VlanInterface: the address lives on the node's link on that VLAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan_interface: Option<String>,
    #[serde(default)]
    pub mode: VipMode,
    /// Nodes that may hold it; empty: every node the selector picks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// BGP mode: advertise from every healthy eligible node (ECMP at the
    /// router) rather than from the elected holder only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ecmp: bool,
}

pub type VirtualIp = Resource<VirtualIpSpec>;

/// A VirtualIP's address as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VipAddress {
    Static(IpAddr),
    Dhcp,
}

/// Parses `spec.address`: an address usable as a VIP, or `dhcp`.
pub fn parse_vip_address(s: &str) -> Result<VipAddress, String> {
    if s == "dhcp" {
        return Ok(VipAddress::Dhcp);
    }
    let ip: IpAddr = s
        .parse()
        .map_err(|_| format!("{s:?} is not an IPv4 or IPv6 address or \"dhcp\""))?;
    let unusable = ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || match ip {
            IpAddr::V4(v4) => v4.is_broadcast() || v4.is_link_local(),
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
        };
    if unusable {
        return Err(format!(
            "{s} cannot be a VIP: expected a unicast address that is not loopback or link-local"
        ));
    }
    Ok(VipAddress::Static(ip))
}

impl VirtualIp {
    pub const KIND: &'static str = "VirtualIP";
    pub const PLURAL: &'static str = "virtualips";

    pub fn new(name: &str, spec: VirtualIpSpec) -> Self {
        new_resource(Self::KIND, name, spec)
    }

    /// The static address, if the spec names one.
    pub fn static_address(&self) -> Option<IpAddr> {
        match self.spec.address.as_deref().map(parse_vip_address) {
            Some(Ok(VipAddress::Static(ip))) => Some(ip),
            _ => None,
        }
    }

    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate_name(
            "metadata.name",
            &self.metadata.name,
            MAX_NAME_LEN,
            &mut errs,
        );
        let s = &self.spec;
        match (&s.address, &s.pool) {
            (Some(a), None) => match parse_vip_address(a) {
                Ok(VipAddress::Dhcp) if s.mode == VipMode::Bgp => err(
                    &mut errs,
                    "spec.address",
                    "dhcp needs mode arp: a DHCP address lives on its interface's subnet",
                ),
                Ok(_) => {}
                Err(e) => err(&mut errs, "spec.address", e),
            },
            (None, Some(p)) => validate_name("spec.pool", p, MAX_NAME_LEN, &mut errs),
            _ => err(
                &mut errs,
                "spec.address",
                "exactly one of spec.address (an address or \"dhcp\") and spec.pool",
            ),
        }
        match (&s.interface, &s.vlan_interface) {
            (Some(i), None) => {
                if !valid_ifname(i) {
                    err(
                        &mut errs,
                        "spec.interface",
                        format!("{i:?} is not a link name: expected 1-15 bytes, no '/', ':' or whitespace"),
                    );
                }
            }
            (None, Some(v)) => validate_name("spec.vlanInterface", v, MAX_NAME_LEN, &mut errs),
            _ => err(
                &mut errs,
                "spec.interface",
                "exactly one of spec.interface (a node link) and spec.vlanInterface",
            ),
        }
        for (i, n) in s.nodes.iter().enumerate() {
            validate_name(&format!("spec.nodes[{i}]"), n, 253, &mut errs);
        }
        super::cluster::validate_selector("spec.nodeSelector", &s.node_selector, &mut errs);
        if s.ecmp && s.mode != VipMode::Bgp {
            err(&mut errs, "spec.ecmp", "ecmp needs mode bgp");
        }
        if let Some(h) = &s.health_check {
            let kinds = usize::from(h.tcp.is_some())
                + usize::from(h.http.is_some())
                + usize::from(!h.command.is_empty());
            if kinds != 1 {
                err(
                    &mut errs,
                    "spec.healthCheck",
                    "exactly one of tcp, http and command",
                );
            }
            if let Some(t) = &h.tcp {
                if t.parse::<SocketAddr>().is_err() {
                    err(
                        &mut errs,
                        "spec.healthCheck.tcp",
                        format!("{t:?} is not host:port with an IP address"),
                    );
                }
            }
            if let Some(u) = &h.http {
                if parse_http_url(u).is_none() {
                    err(
                        &mut errs,
                        "spec.healthCheck.http",
                        format!("{u:?} is not http://IP:port/path"),
                    );
                }
            }
            if !(100..=60_000).contains(&h.interval_ms) {
                err(&mut errs, "spec.healthCheck.intervalMs", "100-60000 ms");
            }
            if h.timeout_ms == 0 || h.timeout_ms > h.interval_ms {
                err(
                    &mut errs,
                    "spec.healthCheck.timeoutMs",
                    "1 ms up to intervalMs",
                );
            }
            if !(1..=100).contains(&h.failure_threshold) {
                err(&mut errs, "spec.healthCheck.failureThreshold", "1-100");
            }
        }
        errs
    }
}

/// `http://IP:port/path` → (socket address, path). Names are not resolved:
/// a health check must not depend on DNS.
pub fn parse_http_url(u: &str) -> Option<(SocketAddr, String)> {
    let rest = u.strip_prefix("http://")?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let addr: SocketAddr = hostport.parse().ok().or_else(|| {
        // Port 80 when none is given.
        let ip: IpAddr = hostport
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()?;
        Some(SocketAddr::new(ip, 80))
    })?;
    if path
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return None;
    }
    Some((addr, path))
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualIpPoolSpec {
    /// CIDRs (`10.0.0.96/28`, `fd00::/120`) or ranges (`10.0.0.100-10.0.0.120`).
    pub addresses: Vec<String>,
}

pub type VirtualIpPool = Resource<VirtualIpPoolSpec>;

/// One entry of `spec.addresses`, as an inclusive range.
pub fn parse_pool_range(s: &str) -> Result<(IpAddr, IpAddr), String> {
    if let Some((a, b)) = s.split_once('-') {
        let a: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: {a:?} is not an address"))?;
        let b: IpAddr = b
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: {b:?} is not an address"))?;
        let ordered = match (a, b) {
            (IpAddr::V4(x), IpAddr::V4(y)) => u32::from(x) <= u32::from(y),
            (IpAddr::V6(x), IpAddr::V6(y)) => u128::from(x) <= u128::from(y),
            _ => return Err(format!("{s:?} mixes IPv4 and IPv6")),
        };
        if !ordered {
            return Err(format!("{s:?}: the first address is after the last"));
        }
        return Ok((a, b));
    }
    let net: ipnet::IpNet = s
        .parse()
        .map_err(|_| format!("{s:?} is not a CIDR or a range first-last"))?;
    if net.network() != net.addr() {
        return Err(format!("{s:?} has host bits set: expected {}", net.trunc()));
    }
    Ok((net.network(), net.broadcast()))
}

impl VirtualIpPool {
    pub const KIND: &'static str = "VirtualIPPool";
    pub const PLURAL: &'static str = "virtualippools";

    pub fn new(name: &str, spec: VirtualIpPoolSpec) -> Self {
        new_resource(Self::KIND, name, spec)
    }

    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate_name(
            "metadata.name",
            &self.metadata.name,
            MAX_NAME_LEN,
            &mut errs,
        );
        if self.spec.addresses.is_empty() {
            err(&mut errs, "spec.addresses", "at least one CIDR or range");
        }
        for (i, a) in self.spec.addresses.iter().enumerate() {
            if let Err(e) = parse_pool_range(a) {
                err(&mut errs, &format!("spec.addresses[{i}]"), e);
            }
        }
        errs
    }
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpPeerSpec {
    /// This node's AS (1-4294967295; 4-octet ASNs supported).
    #[serde(rename = "myASN")]
    pub my_asn: u32,
    #[serde(rename = "peerASN")]
    pub peer_asn: u32,
    pub peer_address: IpAddr,
    #[serde(default = "default_bgp_port")]
    pub peer_port: u16,
    /// Seconds; 0 or 3-65535. Short by default so a dead peer is noticed
    /// quickly.
    #[serde(default = "default_hold_time")]
    pub hold_time: u16,
    /// TCP MD5 signature key (RFC 2385), 1-80 bytes. Deprecated in
    /// favour of `passwordFile`: an inline key is kept in the store (and in
    /// the CRD object) in clear. netd's API shows it as `<redacted>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// A file on the node holding the TCP MD5 key (e.g. a Kubernetes
    /// Secret mounted into netd's pod): read at every reconcile and when
    /// it changes, one trailing newline dropped, 1-80 bytes. Not with
    /// `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<IpAddr>,
    /// BGP identifier; default: the node's first IPv4 address towards the
    /// peer.
    #[serde(default, rename = "routerID", skip_serializing_if = "Option::is_none")]
    pub router_id: Option<std::net::Ipv4Addr>,
    /// Next hop for IPv6 routes on an IPv4 session (and vice versa).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop_v6: Option<std::net::Ipv6Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop_v4: Option<std::net::Ipv4Addr>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
}

// By hand, so the password never reaches a log.
impl std::fmt::Debug for BgpPeerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BgpPeerSpec")
            .field("my_asn", &self.my_asn)
            .field("peer_asn", &self.peer_asn)
            .field("peer_address", &self.peer_address)
            .field("peer_port", &self.peer_port)
            .field("hold_time", &self.hold_time)
            .field("password", &self.password.as_ref().map(|_| REDACTED))
            .field("password_file", &self.password_file)
            .field("source_address", &self.source_address)
            .field("router_id", &self.router_id)
            .field("next_hop_v6", &self.next_hop_v6)
            .field("next_hop_v4", &self.next_hop_v4)
            .field("node_selector", &self.node_selector)
            .finish()
    }
}

/// What netd shows instead of a secret (BGPPeer `spec.password`).
pub const REDACTED: &str = "<redacted>";

/// The longest TCP MD5 key (RFC 2385 keys; Linux' TCP_MD5SIG_MAXKEYLEN).
pub const MAX_BGP_PASSWORD_LEN: usize = 80;

/// The key in a `passwordFile`'s contents: UTF-8, one trailing newline
/// (`\n` or `\r\n`) dropped, then 1-80 bytes. The error never quotes
/// the contents.
pub fn password_from_file(contents: &[u8]) -> Result<String, String> {
    let trimmed = contents
        .strip_suffix(b"\r\n")
        .or_else(|| contents.strip_suffix(b"\n"))
        .unwrap_or(contents);
    let text =
        std::str::from_utf8(trimmed).map_err(|_| "the file is not UTF-8 text".to_string())?;
    if text.is_empty() {
        return Err("the file is empty: expected a TCP MD5 key of 1-80 bytes".into());
    }
    if text.len() > MAX_BGP_PASSWORD_LEN {
        return Err(format!(
            "the key in the file is {} bytes: expected 1-{MAX_BGP_PASSWORD_LEN} (TCP MD5)",
            text.len()
        ));
    }
    Ok(text.to_string())
}

fn default_bgp_port() -> u16 {
    179
}
fn default_hold_time() -> u16 {
    9
}

pub type BgpPeer = Resource<BgpPeerSpec>;

impl BgpPeer {
    pub const KIND: &'static str = "BGPPeer";
    pub const PLURAL: &'static str = "bgppeers";

    pub fn new(name: &str, spec: BgpPeerSpec) -> Self {
        new_resource(Self::KIND, name, spec)
    }

    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate_name(
            "metadata.name",
            &self.metadata.name,
            MAX_NAME_LEN,
            &mut errs,
        );
        let s = &self.spec;
        if s.my_asn == 0 {
            err(&mut errs, "spec.myASN", "1-4294967295 (AS 0 is reserved)");
        }
        if s.peer_asn == 0 {
            err(&mut errs, "spec.peerASN", "1-4294967295 (AS 0 is reserved)");
        }
        if s.peer_address.is_unspecified() || s.peer_address.is_multicast() {
            err(&mut errs, "spec.peerAddress", "a unicast address");
        }
        if s.peer_port == 0 {
            err(&mut errs, "spec.peerPort", "1-65535");
        }
        super::cluster::validate_selector("spec.nodeSelector", &s.node_selector, &mut errs);
        if matches!(s.hold_time, 1 | 2) {
            err(
                &mut errs,
                "spec.holdTime",
                "0 or 3-65535 seconds (RFC 4271)",
            );
        }
        if let Some(p) = &s.password {
            if p == REDACTED {
                err(
                    &mut errs,
                    "spec.password",
                    format!("{REDACTED:?} is what netd shows instead of the key: give the key itself, or spec.passwordFile"),
                );
            } else if p.is_empty() || p.len() > MAX_BGP_PASSWORD_LEN {
                err(&mut errs, "spec.password", "1-80 bytes (TCP MD5 key)");
            }
        }
        if let Some(f) = &s.password_file {
            if s.password.is_some() {
                err(
                    &mut errs,
                    "spec.passwordFile",
                    "not with spec.password: set one of the two",
                );
            } else if !f.starts_with('/') || f.len() > 4096 || f.contains('\0') {
                err(
                    &mut errs,
                    "spec.passwordFile",
                    "an absolute path on the node (at most 4096 bytes)",
                );
            }
        }
        if s.router_id.is_some_and(|r| r.is_unspecified()) {
            err(&mut errs, "spec.routerID", "a non-zero IPv4 address");
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vip(address: &str) -> VirtualIp {
        VirtualIp::new(
            "cp",
            VirtualIpSpec {
                address: Some(address.into()),
                interface: Some("eth0".into()),
                ..Default::default()
            },
        )
    }

    fn fields(errs: &[FieldError]) -> Vec<&str> {
        errs.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn addresses_and_dhcp() {
        assert!(vip("10.0.0.100").validate().is_empty());
        assert!(vip("fd00::100").validate().is_empty());
        assert!(vip("dhcp").validate().is_empty());
        for bad in [
            "10.0.0",
            "127.0.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "fe80::1",
            "169.254.1.1",
        ] {
            assert_eq!(fields(&vip(bad).validate()), ["spec.address"], "{bad}");
        }
        let mut v = vip("dhcp");
        v.spec.mode = VipMode::Bgp;
        assert_eq!(fields(&v.validate()), ["spec.address"]);
    }

    #[test]
    fn one_address_source_and_one_interface() {
        let mut v = vip("10.0.0.1");
        v.spec.pool = Some("lb".into());
        v.spec.vlan_interface = Some("diag".into());
        assert_eq!(fields(&v.validate()), ["spec.address", "spec.interface"]);
        v.spec.address = None;
        v.spec.interface = None;
        assert!(v.validate().is_empty());
    }

    #[test]
    fn health_checks() {
        let mut v = vip("10.0.0.1");
        v.spec.health_check = Some(HealthCheck {
            tcp: Some("127.0.0.1:6443".into()),
            http: None,
            command: vec![],
            interval_ms: 500,
            timeout_ms: 200,
            failure_threshold: 2,
        });
        assert!(v.validate().is_empty());
        let h = v.spec.health_check.as_mut().unwrap();
        h.http = Some("http://127.0.0.1:8080/healthz".into());
        h.timeout_ms = 900;
        assert_eq!(
            fields(&v.validate()),
            ["spec.healthCheck", "spec.healthCheck.timeoutMs"]
        );
        assert_eq!(
            parse_http_url("http://[::1]:81/x").unwrap(),
            ("[::1]:81".parse().unwrap(), "/x".to_string())
        );
        assert_eq!(parse_http_url("http://10.0.0.1").unwrap().0.port(), 80);
        assert!(parse_http_url("https://10.0.0.1/").is_none());
        assert!(parse_http_url("http://example.com/").is_none());
    }

    #[test]
    fn pools_and_peers() {
        let p = VirtualIpPool::new(
            "lb",
            VirtualIpPoolSpec {
                addresses: vec![
                    "10.0.0.96/28".into(),
                    "10.0.1.1-10.0.1.9".into(),
                    "fd00::/120".into(),
                ],
            },
        );
        assert!(p.validate().is_empty());
        for bad in ["10.0.0.97/28", "10.0.1.9-10.0.1.1", "10.0.0.1-fd00::1", "x"] {
            assert!(parse_pool_range(bad).is_err(), "{bad}");
        }
        let mut b = BgpPeer::new(
            "tor",
            BgpPeerSpec {
                my_asn: 4_200_000_001,
                peer_asn: 65000,
                peer_address: "10.0.0.1".parse().unwrap(),
                peer_port: 179,
                hold_time: 9,
                password: None,
                password_file: None,
                source_address: None,
                router_id: None,
                next_hop_v6: None,
                next_hop_v4: None,
                node_selector: Default::default(),
            },
        );
        assert!(b.validate().is_empty());
        b.spec.my_asn = 0;
        b.spec.hold_time = 2;
        b.spec.node_selector.insert("rack".into(), "a b".into());
        assert_eq!(
            fields(&b.validate()),
            ["spec.myASN", "spec.nodeSelector.rack", "spec.holdTime"]
        );
    }

    #[test]
    fn peer_passwords_inline_or_from_a_file_never_both() {
        let mut b = BgpPeer::new(
            "tor",
            BgpPeerSpec {
                my_asn: 65001,
                peer_asn: 65000,
                peer_address: "10.0.0.1".parse().unwrap(),
                peer_port: 179,
                hold_time: 9,
                password: Some("s3cret".into()),
                password_file: Some("/etc/furrow/bgp/tor".into()),
                source_address: None,
                router_id: None,
                next_hop_v6: None,
                next_hop_v4: None,
                node_selector: Default::default(),
            },
        );
        assert_eq!(fields(&b.validate()), ["spec.passwordFile"]);
        b.spec.password = None;
        assert!(b.validate().is_empty());
        b.spec.password_file = Some("relative/path".into());
        assert_eq!(fields(&b.validate()), ["spec.passwordFile"]);
        b.spec.password_file = None;
        b.spec.password = Some(REDACTED.into());
        assert_eq!(fields(&b.validate()), ["spec.password"]);
        b.spec.password = Some("hunter2".into());
        assert!(!format!("{b:?}").contains("hunter2"));
    }

    #[test]
    fn password_files_lose_one_trailing_newline() {
        assert_eq!(password_from_file(b"s3cret\n").unwrap(), "s3cret");
        assert_eq!(password_from_file(b"s3cret\r\n").unwrap(), "s3cret");
        assert_eq!(password_from_file(b"s3cret").unwrap(), "s3cret");
        assert_eq!(password_from_file(b"s3 cret\n\n").unwrap(), "s3 cret\n");
        assert!(password_from_file(b"\n").is_err());
        assert!(password_from_file(&[b'x'; 81]).is_err());
        assert_eq!(password_from_file(&[b'x'; 80]).unwrap().len(), 80);
        let e = password_from_file(b"\xff\xfehunter2").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn node_selectors_are_label_selectors() {
        let mut v = vip("10.0.0.1");
        v.spec
            .node_selector
            .insert("node-role.kubernetes.io/control-plane".into(), "".into());
        assert!(v.validate().is_empty());
        v.spec.node_selector.insert("bad key".into(), "x".into());
        assert_eq!(fields(&v.validate()), ["spec.nodeSelector.bad key"]);
    }
}
