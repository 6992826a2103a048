//! Spec versions and results: parsing a prevResult of any supported
//! version into the canonical (1.1.0-shaped) `CniResult`, merging netd's
//! part into it, and rendering it in the version the runtime speaks.

use std::fmt;

use furrow_api::cni::{
    CniResult, Dns, Interface, IpConfig, Route, CURRENT_VERSION, SUPPORTED_VERSIONS,
};
use furrow_api::error::code;
use serde::Serialize;

/// A supported spec version; ordered oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CniVersion {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl CniVersion {
    pub const ALL: [CniVersion; 5] = [
        CniVersion::V0_3_0,
        CniVersion::V0_3_1,
        CniVersion::V0_4_0,
        CniVersion::V1_0_0,
        CniVersion::V1_1_0,
    ];
    pub const CURRENT: CniVersion = CniVersion::V1_1_0;
    /// CHECK appeared in 0.4.0.
    pub const CHECK: CniVersion = CniVersion::V0_4_0;
    /// GC and STATUS appeared in 1.1.0.
    pub const GC_STATUS: CniVersion = CniVersion::V1_1_0;

    pub fn parse(s: &str) -> Option<CniVersion> {
        CniVersion::ALL.into_iter().find(|v| v.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The config's cniVersion if the input has a supported one: errors are
/// reported in the runtime's version whenever it can be known.
pub fn sniff_version(input: &[u8]) -> Option<CniVersion> {
    let v: serde_json::Value = serde_json::from_slice(input).ok()?;
    CniVersion::parse(v.get("cniVersion")?.as_str()?)
}

#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    #[error("prevResult: {0}")]
    PrevResult(String),
    /// netd's answer does not hold together; a netd bug, not the user's.
    #[error(
        "netd returned ips[{ip}].interface = {index}, but its result has {count} interface(s)"
    )]
    NetdIndex {
        ip: usize,
        index: usize,
        count: usize,
    },
}

impl ResultError {
    pub fn code(&self) -> u32 {
        match self {
            ResultError::PrevResult(_) => code::INVALID_CONFIG,
            ResultError::NetdIndex { .. } => code::INTERNAL,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VersionInfo {
    cni_version: &'static str,
    supported_versions: &'static [&'static str],
}

/// VERSION's answer.
pub fn version_info() -> String {
    let info = VersionInfo {
        cni_version: CURRENT_VERSION,
        supported_versions: SUPPORTED_VERSIONS,
    };
    serde_json::to_string_pretty(&info).expect("version info serializes")
}

/// Parses a prevResult of any supported version. The shapes differ only
/// by fields the canonical type either has (1.1's extras, all optional)
/// or ignores (0.3/0.4's `ips[].version`, `cniVersion`), so one lenient
/// decoder serves all of them.
pub fn parse_result(v: &serde_json::Value) -> Result<CniResult, ResultError> {
    if !v.is_object() {
        return Err(ResultError::PrevResult("expected a JSON object".into()));
    }
    serde_json::from_value(v.clone()).map_err(|e| ResultError::PrevResult(e.to_string()))
}

/// Chaining: the previous plugins' result followed by netd's part. netd
/// numbers `ips[].interface` within its own `interfaces`, so those indices
/// move by the number of interfaces already in `prev`.
pub fn merge(prev: Option<CniResult>, ours: CniResult) -> Result<CniResult, ResultError> {
    let mut out = prev.unwrap_or_default();
    let offset = out.interfaces.len();
    let count = ours.interfaces.len();
    for (i, mut ip) in ours.ips.into_iter().enumerate() {
        if let Some(index) = ip.interface {
            if index >= count {
                return Err(ResultError::NetdIndex {
                    ip: i,
                    index,
                    count,
                });
            }
            ip.interface = Some(index + offset);
        }
        out.ips.push(ip);
    }
    out.interfaces.extend(ours.interfaces);
    out.routes.extend(ours.routes);
    merge_dns(&mut out.dns, ours.dns);
    Ok(out)
}

/// Union of both DNS settings, earlier plugins' entries first; netd's
/// domain wins when both set one (the last plugin's word is final).
fn merge_dns(into: &mut Dns, ours: Dns) {
    fn union(into: &mut Vec<String>, more: Vec<String>) {
        for s in more {
            if !into.contains(&s) {
                into.push(s);
            }
        }
    }
    union(&mut into.nameservers, ours.nameservers);
    union(&mut into.search, ours.search);
    union(&mut into.options, ours.options);
    if ours.domain.is_some() {
        into.domain = ours.domain;
    }
}

/// A result as one spec version shows it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Rendered<'a> {
    cni_version: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    interfaces: Vec<Interface>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ips: Vec<RenderedIp<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    routes: Vec<Route>,
    #[serde(skip_serializing_if = "Dns::is_empty")]
    dns: &'a Dns,
}

#[derive(Serialize)]
struct RenderedIp<'a> {
    /// "4" or "6"; required before 1.0.0, gone since.
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'static str>,
    #[serde(flatten)]
    ip: &'a IpConfig,
}

/// Renders `r` in spec version `v`: 1.1.0 is the canonical shape; 1.0.0
/// drops the fields 1.1.0 added; 0.4.0 and 0.3.x also need ips[].version.
pub fn render(r: &CniResult, v: CniVersion) -> String {
    let legacy = v < CniVersion::V1_0_0;
    let pre_1_1 = v < CniVersion::V1_1_0;
    let mut interfaces = r.interfaces.clone();
    let mut routes = r.routes.clone();
    if pre_1_1 {
        for i in &mut interfaces {
            i.mtu = None;
            i.socket_path = None;
            i.pci_id = None;
        }
        for rt in &mut routes {
            rt.mtu = None;
            rt.advmss = None;
            rt.priority = None;
            rt.table = None;
            rt.scope = None;
        }
    }
    let ips = r
        .ips
        .iter()
        .map(|ip| RenderedIp {
            version: legacy.then_some(if ip.address.addr().is_ipv4() {
                "4"
            } else {
                "6"
            }),
            ip,
        })
        .collect();
    let doc = Rendered {
        cni_version: v.as_str(),
        interfaces,
        ips,
        routes,
        dns: &r.dns,
    };
    serde_json::to_string_pretty(&doc).expect("result serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn full() -> CniResult {
        serde_json::from_value(json!({
            "interfaces": [
                {"name": "fw1a2b3c", "mac": "aa:bb:cc:00:00:01", "mtu": 1450},
                {"name": "eth0", "mac": "52:54:00:00:00:02", "mtu": 1450,
                 "sandbox": "/var/run/netns/x", "socketPath": "/s", "pciID": "0000:00:01.0"}
            ],
            "ips": [
                {"address": "10.52.0.7/24", "gateway": "10.52.0.1", "interface": 1},
                {"address": "fd00::7/64", "interface": 1}
            ],
            "routes": [
                {"dst": "0.0.0.0/0", "gw": "10.52.0.1", "mtu": 1400, "advmss": 1360,
                 "priority": 10, "table": 100, "scope": 0},
                {"dst": "::/0"}
            ],
            "dns": {"nameservers": ["10.43.0.10"], "domain": "cluster.local",
                    "search": ["ns.svc.cluster.local"], "options": ["ndots:5"]}
        }))
        .unwrap()
    }

    /// What survives rendering in `v`.
    fn stripped(v: CniVersion) -> CniResult {
        let mut r = full();
        if v < CniVersion::V1_1_0 {
            for i in &mut r.interfaces {
                i.mtu = None;
                i.socket_path = None;
                i.pci_id = None;
            }
            for rt in &mut r.routes {
                *rt = Route {
                    dst: rt.dst,
                    gw: rt.gw,
                    mtu: None,
                    advmss: None,
                    priority: None,
                    table: None,
                    scope: None,
                };
            }
        }
        r
    }

    #[test]
    fn versions_match_the_contract() {
        let ours: Vec<&str> = CniVersion::ALL.iter().map(|v| v.as_str()).collect();
        assert_eq!(ours, SUPPORTED_VERSIONS);
        assert_eq!(CniVersion::CURRENT.as_str(), CURRENT_VERSION);
        assert!(CniVersion::V0_3_1 < CniVersion::CHECK);
        assert_eq!(CniVersion::parse("0.2.0"), None);
        assert_eq!(CniVersion::parse("1.0"), None);
    }

    #[test]
    fn version_info_lists_everything() {
        let v: Value = serde_json::from_str(&version_info()).unwrap();
        assert_eq!(
            v,
            json!({"cniVersion": "1.1.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
        );
    }

    #[test]
    fn render_1_1_0_is_canonical() {
        let v: Value = serde_json::from_str(&render(&full(), CniVersion::V1_1_0)).unwrap();
        let mut expect = serde_json::to_value(full()).unwrap();
        expect["cniVersion"] = json!("1.1.0");
        assert_eq!(v, expect);
    }

    #[test]
    fn render_1_0_0_drops_1_1_fields() {
        let v: Value = serde_json::from_str(&render(&full(), CniVersion::V1_0_0)).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(
            v["interfaces"][1],
            json!({"name": "eth0", "mac": "52:54:00:00:00:02", "sandbox": "/var/run/netns/x"})
        );
        assert_eq!(
            v["routes"][0],
            json!({"dst": "0.0.0.0/0", "gw": "10.52.0.1"})
        );
        assert_eq!(
            v["ips"][0],
            json!({"address": "10.52.0.7/24", "gateway": "10.52.0.1", "interface": 1})
        );
    }

    #[test]
    fn render_legacy_adds_ip_version() {
        for ver in [CniVersion::V0_3_0, CniVersion::V0_3_1, CniVersion::V0_4_0] {
            let v: Value = serde_json::from_str(&render(&full(), ver)).unwrap();
            assert_eq!(v["cniVersion"], ver.as_str());
            assert_eq!(v["ips"][0]["version"], "4");
            assert_eq!(v["ips"][1]["version"], "6");
            assert!(v["interfaces"][0].get("mtu").is_none());
            assert!(v["routes"][0].get("table").is_none());
            assert_eq!(v["dns"]["domain"], "cluster.local");
        }
    }

    #[test]
    fn round_trip_every_version() {
        for ver in CniVersion::ALL {
            let text = render(&full(), ver);
            let back = parse_result(&serde_json::from_str(&text).unwrap()).unwrap();
            assert_eq!(back, stripped(ver), "{ver}");
            // Rendering again is stable.
            assert_eq!(render(&back, ver), text, "{ver}");
        }
    }

    /// A layer-2 result (VLAN attachment, no IPAM): interfaces only.
    fn layer2() -> CniResult {
        serde_json::from_value(json!({
            "interfaces": [
                {"name": "fw0123456789", "mac": "aa:bb:cc:00:00:01", "mtu": 1500},
                {"name": "net1", "mac": "52:54:00:00:00:02", "mtu": 1500, "sandbox": "/var/run/netns/x"}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn render_layer2_result_in_every_version() {
        for ver in CniVersion::ALL {
            let text = render(&layer2(), ver);
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["cniVersion"], ver.as_str());
            let ifs = v["interfaces"].as_array().unwrap();
            assert_eq!(ifs.len(), 2, "{ver}: {v}");
            assert_eq!(ifs[1]["sandbox"], "/var/run/netns/x");
            assert_eq!(ifs[1]["mac"], "52:54:00:00:00:02");
            // No addresses: no ips, routes or dns at all (every version
            // makes them optional; libcni's types omit empty lists).
            let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["cniVersion", "interfaces"], "{ver}: {v}");
            // It parses back (as a prevResult of CHECK/DEL) and renders
            // the same.
            let back = parse_result(&v).unwrap();
            assert!(back.ips.is_empty() && back.routes.is_empty());
            assert_eq!(render(&back, ver), text, "{ver}");
        }
        // Chained after a plugin that did assign addresses, the indices of
        // the earlier result stay as they were.
        let prev = parse_result(&json!({
            "interfaces": [{"name": "eth0", "sandbox": "/n"}],
            "ips": [{"version": "4", "address": "10.0.0.2/24", "interface": 0}]
        }))
        .unwrap();
        let m = merge(Some(prev), layer2()).unwrap();
        assert_eq!(m.interfaces.len(), 3);
        assert_eq!(m.ips.len(), 1);
        assert_eq!(m.ips[0].interface, Some(0));
    }

    #[test]
    fn parses_foreign_prev_results() {
        // What the reference bridge plugin prints for 0.3.1.
        let prev = json!({
            "cniVersion": "0.3.1",
            "interfaces": [{"name": "cni0", "mac": "0a:58:0a:f4:00:01"},
                           {"name": "veth1", "mac": "0a:58:0a:f4:00:02"},
                           {"name": "eth0", "mac": "0a:58:0a:f4:00:03", "sandbox": "/proc/1/ns/net"}],
            "ips": [{"version": "4", "interface": 2, "address": "10.244.0.3/24", "gateway": "10.244.0.1"}],
            "dns": {}
        });
        let r = parse_result(&prev).unwrap();
        assert_eq!(r.interfaces.len(), 3);
        assert_eq!(r.ips[0].interface, Some(2));
        assert!(r.dns.is_empty());
        assert!(parse_result(&json!([])).is_err());
        let e = parse_result(&json!({"ips": [{"address": "nope"}]})).unwrap_err();
        assert_eq!(e.code(), 7);
        assert!(e.to_string().starts_with("prevResult: "));
    }

    #[test]
    fn merge_offsets_netd_indices() {
        let prev = parse_result(&json!({
            "interfaces": [{"name": "a"}, {"name": "b", "sandbox": "/n"}],
            "ips": [{"address": "192.168.1.2/24", "interface": 1}],
            "routes": [{"dst": "192.168.0.0/16"}],
            "dns": {"nameservers": ["1.1.1.1"], "domain": "old"}
        }))
        .unwrap();
        let ours = parse_result(&json!({
            "interfaces": [{"name": "fwx"}, {"name": "net1", "sandbox": "/n"}],
            "ips": [{"address": "10.52.0.7/24", "interface": 1}, {"address": "10.52.0.8/24"}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.52.0.1"}],
            "dns": {"nameservers": ["1.1.1.1", "10.43.0.10"], "domain": "cluster.local"}
        }))
        .unwrap();
        let m = merge(Some(prev), ours).unwrap();
        let names: Vec<&str> = m.interfaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "fwx", "net1"]);
        let idx: Vec<Option<usize>> = m.ips.iter().map(|i| i.interface).collect();
        assert_eq!(idx, [Some(1), Some(3), None]);
        assert_eq!(m.routes.len(), 2);
        assert_eq!(m.dns.nameservers, ["1.1.1.1", "10.43.0.10"]);
        assert_eq!(m.dns.domain.as_deref(), Some("cluster.local"));
    }

    #[test]
    fn merge_without_prev_is_identity() {
        assert_eq!(merge(None, full()).unwrap(), full());
    }

    #[test]
    fn merge_rejects_bad_netd_index() {
        let mut bad = full();
        bad.ips[0].interface = Some(2);
        let e = merge(None, bad).unwrap_err();
        assert_eq!(e.code(), 100);
    }

    #[test]
    fn sniffs_version() {
        assert_eq!(
            sniff_version(br#"{"cniVersion":"0.4.0"}"#),
            Some(CniVersion::V0_4_0)
        );
        assert_eq!(sniff_version(br#"{"cniVersion":"9.9.9"}"#), None);
        assert_eq!(sniff_version(b"nope"), None);
    }
}
