//! DHCP resources, shaped like Harvester's vm-dhcp-controller: an IPPool
//! per VLAN network, and per-VM reservations (VirtualMachineNetworkConfig).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::{err, new_resource, validate_name, FieldError, Resource, MAX_NAME_LEN};
use crate::MacAddr;

/// Harvester's default lease: one year.
pub const DEFAULT_LEASE_SECONDS: u32 = 31_536_000;

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpPoolSpec {
    /// The VLAN network the pool serves: its CNI network name (the NAD
    /// config's `name`), or Harvester's `namespace/name` of the NAD, whose
    /// part after '/' is used.
    pub network_name: String,
    #[serde(rename = "ipv4Config")]
    pub ipv4_config: Ipv4PoolConfig,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolRange {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<Ipv4Addr>,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StaticRoute {
    /// Destination network (option 121, classless static routes).
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub dst: Ipv4Net,
    pub gateway: Ipv4Addr,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ipv4PoolConfig {
    /// The address the DHCP server answers from. Every node serves its own
    /// VMs from this same address (and the same MAC), so it is never
    /// handed out and must lie outside the pool.
    #[serde(rename = "serverIP")]
    pub server_ip: Ipv4Addr,
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub cidr: Ipv4Net,
    pub pool: PoolRange,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<Ipv4Addr>,
    /// At most 3.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(length(max = 3)))]
    pub dns: Vec<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domain_search: Vec<String>,
    /// At most 4.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(length(max = 4)))]
    pub ntp: Vec<Ipv4Addr>,
    /// Seconds (60 to 2^31-1); default one year, as in Harvester.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_time: Option<u32>,
    /// Interface MTU (option 26), 576-9000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = super::MTU_MIN, max = super::MTU_MAX)))]
    pub mtu: Option<u32>,
    /// Classless static routes (option 121).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<StaticRoute>,
    /// PXE/iPXE: the TFTP/HTTP server (siaddr).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_server: Option<Ipv4Addr>,
    /// PXE/iPXE: the boot file (at most 127 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_file_name: Option<String>,
}

impl Ipv4PoolConfig {
    pub fn lease_seconds(&self) -> u32 {
        self.lease_time.unwrap_or(DEFAULT_LEASE_SECONDS)
    }

    /// Whether `ip` is an address the pool may hand out.
    pub fn in_pool(&self, ip: Ipv4Addr) -> bool {
        let (s, e, v) = (
            u32::from(self.pool.start),
            u32::from(self.pool.end),
            u32::from(ip),
        );
        s <= v
            && v <= e
            && !self.pool.exclude.contains(&ip)
            && ip != self.server_ip
            && Some(ip) != self.router
    }

    /// How many addresses the pool can hand out.
    pub fn capacity(&self) -> u32 {
        let (s, e) = (u32::from(self.pool.start), u32::from(self.pool.end));
        if s > e {
            return 0;
        }
        let excluded: BTreeSet<&Ipv4Addr> = self
            .pool
            .exclude
            .iter()
            .filter(|ip| self.in_range(**ip))
            .collect();
        let server =
            u32::from(self.in_range(self.server_ip) && !excluded.contains(&self.server_ip));
        // The router is never handed out either (Harvester's allocator
        // skips it the same way), wherever it sits in the range.
        let router = self.router.map_or(0, |r| {
            u32::from(self.in_range(r) && !excluded.contains(&r) && r != self.server_ip)
        });
        (e - s + 1) - excluded.len() as u32 - server - router
    }

    fn in_range(&self, ip: Ipv4Addr) -> bool {
        let v = u32::from(ip);
        u32::from(self.pool.start) <= v && v <= u32::from(self.pool.end)
    }
}

pub type IpPool = Resource<IpPoolSpec>;

fn valid_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

impl IpPool {
    pub const KIND: &'static str = "IPPool";
    pub const PLURAL: &'static str = "ippools";

    pub fn new(name: &str, spec: IpPoolSpec) -> Self {
        new_resource(Self::KIND, name, spec)
    }

    /// The CNI network name the pool serves.
    pub fn cni_network(&self) -> &str {
        self.spec
            .network_name
            .rsplit_once('/')
            .map(|(_, n)| n)
            .unwrap_or(&self.spec.network_name)
    }

    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate_name(
            "metadata.name",
            &self.metadata.name,
            MAX_NAME_LEN,
            &mut errs,
        );
        let net = self.cni_network();
        let net_ok = !net.is_empty()
            && net
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric())
            && net
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !net_ok {
            err(
                &mut errs,
                "spec.networkName",
                format!(
                    "{:?} is not a network name: expected the VLAN network's CNI name or namespace/name",
                    self.spec.network_name
                ),
            );
        }
        let c = &self.spec.ipv4_config;
        let f = |n: &str| format!("spec.ipv4Config.{n}");
        let cidr = c.cidr;
        if cidr.trunc() != cidr || cidr.prefix_len() > 30 || cidr.prefix_len() < 8 {
            err(
                &mut errs,
                &f("cidr"),
                format!(
                    "{cidr}: expected a network address with a prefix of /8 to /30, e.g. {}",
                    cidr.trunc()
                ),
            );
        }
        let host =
            |ip: Ipv4Addr| cidr.contains(&ip) && ip != cidr.network() && ip != cidr.broadcast();
        if !host(c.server_ip) {
            err(
                &mut errs,
                &f("serverIP"),
                format!("{} is not a host address of {cidr}", c.server_ip),
            );
        }
        for (n, ip) in [("pool.start", c.pool.start), ("pool.end", c.pool.end)] {
            if !host(ip) {
                err(
                    &mut errs,
                    &f(n),
                    format!("{ip} is not a host address of {cidr}"),
                );
            }
        }
        if u32::from(c.pool.start) > u32::from(c.pool.end) {
            err(
                &mut errs,
                &f("pool"),
                format!("start {} is after end {}", c.pool.start, c.pool.end),
            );
        }
        if c.in_range(c.server_ip) && !c.pool.exclude.contains(&c.server_ip) {
            err(
                &mut errs,
                &f("serverIP"),
                format!(
                    "{} lies inside the pool range: move it out or list it in pool.exclude",
                    c.server_ip
                ),
            );
        }
        for (i, ip) in c.pool.exclude.iter().enumerate() {
            if !c.in_range(*ip) {
                err(
                    &mut errs,
                    &f(&format!("pool.exclude[{i}]")),
                    format!("{ip} is outside the pool range"),
                );
            }
        }
        if let Some(r) = c.router {
            if !host(r) {
                err(
                    &mut errs,
                    &f("router"),
                    format!("{r} is not a host address of {cidr}"),
                );
            }
        }
        if c.dns.len() > 3 {
            err(
                &mut errs,
                &f("dns"),
                format!("{} servers: at most 3", c.dns.len()),
            );
        }
        if c.ntp.len() > 4 {
            err(
                &mut errs,
                &f("ntp"),
                format!("{} servers: at most 4", c.ntp.len()),
            );
        }
        if let Some(d) = &c.domain_name {
            if !valid_domain(d) {
                err(
                    &mut errs,
                    &f("domainName"),
                    format!("{d:?} is not a domain name"),
                );
            }
        }
        for (i, d) in c.domain_search.iter().enumerate() {
            if !valid_domain(d) {
                err(
                    &mut errs,
                    &f(&format!("domainSearch[{i}]")),
                    format!("{d:?} is not a domain name"),
                );
            }
        }
        if let Some(t) = c.lease_time {
            if !(60..=i32::MAX as u32).contains(&t) {
                err(
                    &mut errs,
                    &f("leaseTime"),
                    format!("{t} s out of range: expected 60 to {}", i32::MAX),
                );
            }
        }
        if let Some(m) = c.mtu {
            if !(super::MTU_MIN..=super::MTU_MAX).contains(&m) {
                err(
                    &mut errs,
                    &f("mtu"),
                    format!(
                        "{m} out of range: expected {} to {}",
                        super::MTU_MIN,
                        super::MTU_MAX
                    ),
                );
            }
        }
        for (i, r) in c.routes.iter().enumerate() {
            if r.dst.trunc() != r.dst {
                err(
                    &mut errs,
                    &f(&format!("routes[{i}].dst")),
                    format!("{} has host bits set: expected {}", r.dst, r.dst.trunc()),
                );
            }
            if !host(r.gateway) {
                err(
                    &mut errs,
                    &f(&format!("routes[{i}].gateway")),
                    format!(
                        "{} is not a host address of {cidr}: a gateway must be on the VM's subnet",
                        r.gateway
                    ),
                );
            }
        }
        if let Some(b) = &c.boot_file_name {
            if b.is_empty() || b.len() > 127 || b.bytes().any(|x| x == 0) {
                err(
                    &mut errs,
                    &f("bootFileName"),
                    "expected 1-127 bytes, no NUL",
                );
            }
        }
        if c.capacity() == 0 && errs.is_empty() {
            err(&mut errs, &f("pool"), "the pool holds no usable address");
        }
        errs
    }
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VmNetworkConfigEntry {
    /// The VLAN network (CNI name or namespace/name), as in IPPool.
    pub network_name: String,
    pub mac_address: MacAddr,
    /// A fixed address for this MAC; absent: one from the pool. Port
    /// security takes it as the VM's address (with a pool or without).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<Ipv4Addr>,
    /// Port security of this VM's port on the network: `false` turns it
    /// off; absent: as the attachment's CNI config says (on by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_security: Option<bool>,
    /// More addresses this VM may send from on the network (a VIP it
    /// takes over with keepalived), added to the CNI config's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(length(max = 32)))]
    pub allowed_address_pairs: Vec<crate::cni::AddressPair>,
}

impl VmNetworkConfigEntry {
    pub fn cni_network(&self) -> &str {
        self.network_name
            .rsplit_once('/')
            .map(|(_, n)| n)
            .unwrap_or(&self.network_name)
    }
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VmNetworkConfigSpec {
    pub vm_name: String,
    /// Harvester's vm-dhcp-controller spells it `networkConfig`.
    #[serde(alias = "networkConfig")]
    pub network_configs: Vec<VmNetworkConfigEntry>,
}

pub type VirtualMachineNetworkConfig = Resource<VmNetworkConfigSpec>;

impl VirtualMachineNetworkConfig {
    pub const KIND: &'static str = "VirtualMachineNetworkConfig";
    pub const PLURAL: &'static str = "virtualmachinenetworkconfigs";

    pub fn new(name: &str, spec: VmNetworkConfigSpec) -> Self {
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
        if self.spec.vm_name.is_empty() {
            err(&mut errs, "spec.vmName", "empty: expected the VM's name");
        }
        let mut seen = BTreeSet::new();
        for (i, c) in self.spec.network_configs.iter().enumerate() {
            let f = |n: &str| format!("spec.networkConfigs[{i}].{n}");
            if !c.mac_address.is_valid_unicast() {
                err(
                    &mut errs,
                    &f("macAddress"),
                    format!("{} is not a unicast address", c.mac_address),
                );
            }
            if c.cni_network().is_empty() {
                err(
                    &mut errs,
                    &f("networkName"),
                    "empty: expected the VLAN network's name",
                );
            }
            if !seen.insert((c.cni_network().to_string(), c.mac_address)) {
                err(
                    &mut errs,
                    &f("macAddress"),
                    format!("{} is listed twice on this network", c.mac_address),
                );
            }
            if let Some(ip) = c.ip_address {
                if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback()
                {
                    err(
                        &mut errs,
                        &f("ipAddress"),
                        format!("{ip} cannot be a VM's address"),
                    );
                }
            }
            for (path, why) in crate::cni::AddressPair::check_list(&c.allowed_address_pairs) {
                err(&mut errs, &f(&format!("allowedAddressPairs{path}")), why);
            }
            if c.port_security == Some(false) && !c.allowed_address_pairs.is_empty() {
                err(
                    &mut errs,
                    &f("allowedAddressPairs"),
                    "has no effect with portSecurity: false (the port may then send from any address): remove one of them",
                );
            }
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::API_VERSION;

    fn pool() -> IpPool {
        serde_json::from_value(serde_json::json!({
            "apiVersion": API_VERSION, "kind": "IPPool", "metadata": {"name": "net100"},
            "spec": {"networkName": "default/vlan100", "ipv4Config": {
                "serverIP": "10.100.0.2", "cidr": "10.100.0.0/24",
                "pool": {"start": "10.100.0.10", "end": "10.100.0.20", "exclude": ["10.100.0.15"]},
                "router": "10.100.0.1", "dns": ["10.100.0.1"], "domainName": "example.internal",
                "ntp": ["10.100.0.1"], "leaseTime": 3600, "mtu": 1400,
                "routes": [{"dst": "192.168.0.0/16", "gateway": "10.100.0.1"}],
                "nextServer": "10.100.0.5", "bootFileName": "ipxe.efi"
            }}
        }))
        .unwrap()
    }

    #[test]
    fn harvester_shaped_pool_is_valid() {
        let p = pool();
        assert!(p.validate().is_empty(), "{:?}", p.validate());
        assert_eq!(p.cni_network(), "vlan100");
        assert_eq!(p.spec.ipv4_config.capacity(), 10);
        assert!(p.spec.ipv4_config.in_pool("10.100.0.10".parse().unwrap()));
        assert!(!p.spec.ipv4_config.in_pool("10.100.0.15".parse().unwrap()));
    }

    #[test]
    fn a_router_inside_the_range_is_never_handed_out_nor_counted() {
        let mut p = pool();
        p.spec.ipv4_config.router = Some("10.100.0.11".parse().unwrap());
        assert!(p.validate().is_empty(), "{:?}", p.validate());
        assert_eq!(p.spec.ipv4_config.capacity(), 9);
        assert!(!p.spec.ipv4_config.in_pool("10.100.0.11".parse().unwrap()));
    }

    #[test]
    fn pool_errors_name_fields() {
        let mut p = pool();
        let c = &mut p.spec.ipv4_config;
        c.server_ip = "10.100.0.12".parse().unwrap();
        c.pool.start = "10.100.0.30".parse().unwrap();
        c.dns = vec!["1.1.1.1".parse().unwrap(); 4];
        c.routes[0].gateway = "172.16.0.1".parse().unwrap();
        c.mtu = Some(100);
        let fields: Vec<String> = p.validate().into_iter().map(|e| e.field).collect();
        assert!(
            fields.contains(&"spec.ipv4Config.pool".to_string()),
            "{fields:?}"
        );
        assert!(fields.contains(&"spec.ipv4Config.dns".to_string()));
        assert!(fields.contains(&"spec.ipv4Config.routes[0].gateway".to_string()));
        assert!(fields.contains(&"spec.ipv4Config.mtu".to_string()));
    }

    #[test]
    fn reservations_validate() {
        let ok = VirtualMachineNetworkConfig::new(
            "vm1",
            VmNetworkConfigSpec {
                vm_name: "vm1".into(),
                network_configs: vec![VmNetworkConfigEntry {
                    network_name: "default/vlan100".into(),
                    mac_address: "52:54:00:00:00:01".parse().unwrap(),
                    ip_address: Some("10.100.0.11".parse().unwrap()),
                    port_security: None,
                    allowed_address_pairs: vec![],
                }],
            },
        );
        assert!(ok.validate().is_empty());
        let mut bad = ok.clone();
        bad.spec
            .network_configs
            .push(bad.spec.network_configs[0].clone());
        assert_eq!(bad.validate()[0].field, "spec.networkConfigs[1].macAddress");
        // Allowed address pairs: parsed as in the CNI config, checked the same.
        let doc = |pairs: serde_json::Value, ps: serde_json::Value| {
            serde_json::from_value::<VirtualMachineNetworkConfig>(serde_json::json!({
                "apiVersion": API_VERSION, "kind": "VirtualMachineNetworkConfig",
                "metadata": {"name": "vm1"},
                "spec": {"vmName": "vm1", "networkConfigs": [{
                    "networkName": "vlan100", "macAddress": "52:54:00:00:00:01",
                    "allowedAddressPairs": pairs, "portSecurity": ps
                }]}
            }))
        };
        let ok = doc(
            serde_json::json!([{"ipAddress": "10.100.0.100"}]),
            serde_json::json!(null),
        )
        .unwrap();
        assert!(ok.validate().is_empty(), "{:?}", ok.validate());
        assert_eq!(
            ok.spec.network_configs[0].allowed_address_pairs[0]
                .ip_address
                .to_string(),
            "10.100.0.100/32"
        );
        assert!(doc(
            serde_json::json!([{"ipAddress": "10.100.0.5/24"}]),
            serde_json::json!(null)
        )
        .is_err());
        let twice = doc(
            serde_json::json!([{"ipAddress": "10.100.0.100"}, {"ipAddress": "10.100.0.100/32"}]),
            serde_json::json!(true),
        )
        .unwrap();
        assert_eq!(
            twice.validate()[0].field,
            "spec.networkConfigs[0].allowedAddressPairs[1].ipAddress"
        );
        let off = doc(
            serde_json::json!([{"ipAddress": "10.100.0.100"}]),
            serde_json::json!(false),
        )
        .unwrap();
        assert_eq!(
            off.validate()[0].field,
            "spec.networkConfigs[0].allowedAddressPairs"
        );
    }
}
