//! The network configuration on stdin, validated field by field so every
//! mistake gets a precise code and names the field at fault.
//!
//! Keys fall in three groups: the spec's own (and `cni.dev/*`, reserved
//! for runtimes), Furrow keys common to every network kind (`socket`),
//! and the keys of one network kind (see [`Kind`]). Anything else is code
//! 2: a misspelt option must never be silently ignored. Code 2 says why
//! when it can: a key of the other kind of network, or an option of the
//! reference bridge plugin that Furrow does not have.
//!
//! DEL and GC are lenient: they only need what identifies the attachments
//! and reaches netd (cniVersion, name, socket, and for GC the valid
//! attachments). Problems in any other field are logged and replaced by
//! defaults, so a runtime can still clean up after the config changed or
//! was broken; netd takes what to release from its own records.

mod management;
mod vlan;

use std::net::IpAddr;

use furrow_api::cni::{AttachmentSpec, CniResult, Dns, SUPPORTED_VERSIONS};
use furrow_api::error::code;
use furrow_api::resource::{MTU_MAX, MTU_MIN};
use furrow_api::wire::AttachmentRef;
use furrow_api::MacAddr;
use serde_json::{Map, Value};

use crate::env::{is_valid_id, Command};
use crate::output::debug;
use crate::result::{self, CniVersion};

/// Keys the spec and its conventions define for every plugin.
const SPEC_KEYS: &[&str] = &[
    "cniVersion",
    "name",
    "type",
    "capabilities",
    "args",
    "runtimeConfig",
    "prevResult",
    "ipam",
    "dns",
];
/// Runtimes add keys under this prefix (cni.dev/valid-attachments, ...).
const RESERVED_PREFIX: &str = "cni.dev/";
/// Furrow keys valid for every kind of network.
const FURROW_KEYS: &[&str] = &["socket"];
/// The capabilities (runtimeConfig keys) Furrow implements.
const CAPABILITIES: &[&str] = &["mac", "ips"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("network config is not valid JSON: {0}")]
    Decode(#[source] serde_json::Error),
    #[error("network config must be a JSON object, not {0}")]
    NotObject(&'static str),
    #[error("cniVersion is missing from the network config; Furrow supports {list}", list = SUPPORTED_VERSIONS.join(", "))]
    VersionMissing,
    #[error("cniVersion {0} is not supported; Furrow supports {list}", list = SUPPORTED_VERSIONS.join(", "))]
    VersionUnsupported(String),
    /// Keys Furrow does not accept here, each with its value as JSON
    /// and, when known, why.
    #[error("unsupported field{} in network config: {}", plural(.0), show_fields(.0))]
    UnsupportedFields(Vec<Unsupported>),
    #[error("capabilities.{0}: Furrow does not implement this capability (it implements {caps})", caps = CAPABILITIES.join(", "))]
    UnsupportedCapability(String),
    #[error("{field}: {expected}")]
    Invalid { field: String, expected: String },
}

/// One key of [`ConfigError::UnsupportedFields`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    pub key: String,
    /// The value as compact JSON, cut short if long.
    pub value: String,
    /// Why it is not accepted, when that is more than "unknown".
    pub reason: Option<String>,
}

fn plural(v: &[Unsupported]) -> &'static str {
    if v.len() == 1 {
        ""
    } else {
        "s"
    }
}

fn show_fields(v: &[Unsupported]) -> String {
    let parts: Vec<String> = v
        .iter()
        .map(|u| match &u.reason {
            None => format!("{:?} = {}", u.key, u.value),
            Some(why) => format!("{:?} = {} ({why})", u.key, u.value),
        })
        .collect();
    parts.join(", ")
}

impl ConfigError {
    pub fn code(&self) -> u32 {
        match self {
            ConfigError::Decode(_) | ConfigError::NotObject(_) => code::DECODE,
            ConfigError::VersionMissing | ConfigError::VersionUnsupported(_) => {
                code::INCOMPATIBLE_VERSION
            }
            ConfigError::UnsupportedFields(_) | ConfigError::UnsupportedCapability(_) => {
                code::UNSUPPORTED_FIELD
            }
            ConfigError::Invalid { .. } => code::INVALID_CONFIG,
        }
    }

    pub fn details(&self) -> String {
        match self {
            ConfigError::UnsupportedFields(fields) => {
                let mut hints: Vec<String> = fields
                    .iter()
                    .filter(|u| u.reason.is_none())
                    .filter_map(|u| {
                        suggest(&u.key)
                            .map(|s| format!("did you mean {s:?} instead of {:?}?", u.key))
                    })
                    .collect();
                hints.push(format!(
                    "accepted keys: {}, {}*, {}; management network: {}; VLAN networks (with clusterNetwork or bridge): {}",
                    SPEC_KEYS.join(", "),
                    RESERVED_PREFIX,
                    FURROW_KEYS.join(", "),
                    Kind::Management.keys().join(", "),
                    Kind::Vlan.keys().join(", "),
                ));
                hints.join(" ")
            }
            _ => String::new(),
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, expected: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field: field.into(),
            expected: expected.into(),
        }
    }
}

/// A known key spelt with other capitals (`ipmasq`, `MTU`, `VLAN`).
fn suggest(key: &str) -> Option<&'static str> {
    SPEC_KEYS
        .iter()
        .chain(FURROW_KEYS)
        .chain(Kind::ALL.iter().flat_map(|k| k.keys()))
        .find(|k| k.eq_ignore_ascii_case(key))
        .copied()
}

/// A value for a message: compact JSON, cut short if long.
pub(crate) fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 80 {
        let cut: String = s.chars().take(77).collect();
        format!("{cut}...")
    } else {
        s
    }
}

/// The validated network config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConf {
    pub version: CniVersion,
    /// The network name (`name`).
    pub name: String,
    /// netd's socket from the config, if set.
    pub socket: Option<String>,
    pub attachment: AttachmentSpec,
    /// From runtimeConfig (when the capability is declared) or args.cni.
    pub mac: Option<MacAddr>,
    pub ips: Vec<IpAddr>,
    pub prev_result: Option<CniResult>,
    /// GC only: the attachments to keep.
    pub valid_attachments: Vec<AttachmentRef>,
}

/// Kinds of network a config can describe. Each kind owns its keys and
/// produces its `AttachmentSpec`; adding one means a variant here, a
/// detection rule in `detect` and a module like `management`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The NAT'ed management network (the default).
    Management,
    /// A port on a cluster network: any of `clusterNetwork`, `bridge`,
    /// `vlan`, `vlanTrunk` is present.
    Vlan,
}

impl Kind {
    const ALL: [Kind; 2] = [Kind::Management, Kind::Vlan];

    /// By key presence (whatever the value): a VLAN config with a bad or
    /// null value must get that value's error, not "unknown key".
    fn detect(obj: &Map<String, Value>) -> Kind {
        if vlan::MARKERS.iter().any(|k| obj.contains_key(*k)) {
            Kind::Vlan
        } else {
            Kind::Management
        }
    }

    fn keys(self) -> &'static [&'static str] {
        match self {
            Kind::Management => management::KEYS,
            Kind::Vlan => vlan::KEYS,
        }
    }

    fn parse(self, p: &Parser, dns: Dns) -> Result<AttachmentSpec, ConfigError> {
        match self {
            Kind::Management => management::parse(p, dns),
            Kind::Vlan => vlan::parse(p, dns),
        }
    }

    /// Why `key`, not accepted in a config of this kind, is refused; None
    /// for a key Furrow knows nothing about.
    fn refusal(self, key: &str) -> Option<String> {
        match self {
            Kind::Vlan if management::KEYS.contains(&key) => Some(format!(
                "{key} applies to the management network only; a config with clusterNetwork, bridge, vlan or vlanTrunk is a VLAN attachment"
            )),
            Kind::Management if vlan::KEYS.contains(&key) => Some(format!(
                "{key} applies to VLAN networks only; set clusterNetwork, or Harvester's \"bridge\": \"<clusterNetwork>-br\", to attach to a cluster network"
            )),
            _ => vlan::bridge_plugin_refusal(key),
        }
    }
}

/// Walks the config; in lenient mode (DEL, GC) it carries on past fields
/// that do not matter for removal.
pub(crate) struct Parser<'a> {
    obj: &'a Map<String, Value>,
    lenient: bool,
}

impl<'a> Parser<'a> {
    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key)
    }

    pub(crate) fn lenient(&self) -> bool {
        self.lenient
    }

    /// A field removal does not need: in lenient mode its error is logged
    /// and `fallback` used instead.
    pub(crate) fn soft<T>(
        &self,
        r: Result<T, ConfigError>,
        fallback: impl FnOnce() -> T,
    ) -> Result<T, ConfigError> {
        match r {
            Err(e) if self.lenient => {
                debug!("ignoring a config problem that does not matter for removal: {e}");
                Ok(fallback())
            }
            r => r,
        }
    }
}

pub fn parse(input: &[u8], cmd: Command) -> Result<NetConf, ConfigError> {
    let doc: Value = serde_json::from_slice(input).map_err(ConfigError::Decode)?;
    let obj = match &doc {
        Value::Object(o) => o,
        other => return Err(ConfigError::NotObject(json_type(other))),
    };
    let version = version(obj.get("cniVersion"))?;
    let p = Parser {
        obj,
        lenient: matches!(cmd, Command::Del | Command::Gc),
    };
    let kind = Kind::detect(obj);
    p.soft(unknown_keys(obj, kind), || ())?;
    let name = name(obj.get("name"))?;
    p.soft(opt_str(obj.get("type"), "type").map(|_| ()), || ())?;
    let socket = socket(obj.get("socket"))?;

    let dns = p.soft(dns(obj.get("dns")), Dns::default)?;
    let attachment = kind.parse(&p, dns)?;
    let (mac, ips) = p.soft(requested(obj), || (None, Vec::new()))?;
    let prev_result = p.soft(prev_result(obj.get("prevResult")), || None)?;
    let valid_attachments = if cmd == Command::Gc {
        valid_attachments(obj, &name)?
    } else {
        Vec::new()
    };
    Ok(NetConf {
        version,
        name,
        socket,
        attachment,
        mac,
        ips,
        prev_result,
        valid_attachments,
    })
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn version(v: Option<&Value>) -> Result<CniVersion, ConfigError> {
    match v {
        None | Some(Value::Null) => Err(ConfigError::VersionMissing),
        Some(Value::String(s)) => {
            CniVersion::parse(s).ok_or_else(|| ConfigError::VersionUnsupported(format!("{s:?}")))
        }
        Some(other) => Err(ConfigError::VersionUnsupported(show(other))),
    }
}

fn unknown_keys(obj: &Map<String, Value>, kind: Kind) -> Result<(), ConfigError> {
    let unknown: Vec<Unsupported> = obj
        .iter()
        .filter(|(k, _)| {
            !(SPEC_KEYS.contains(&k.as_str())
                || FURROW_KEYS.contains(&k.as_str())
                || kind.keys().contains(&k.as_str())
                || k.starts_with(RESERVED_PREFIX))
        })
        .map(|(k, v)| Unsupported {
            key: k.clone(),
            value: show(v),
            reason: kind.refusal(k),
        })
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::UnsupportedFields(unknown))
    }
}

fn name(v: Option<&Value>) -> Result<String, ConfigError> {
    const RULE: &str = "a letter or digit followed by letters, digits, '_', '.' or '-'";
    match v {
        None | Some(Value::Null) => Err(ConfigError::invalid(
            "name",
            format!("missing: expected the network name, {RULE}"),
        )),
        Some(Value::String(s)) if is_valid_id(s) => Ok(s.clone()),
        Some(other) => Err(ConfigError::invalid(
            "name",
            format!(
                "{} is not a valid network name: expected {RULE}",
                show(other)
            ),
        )),
    }
}

/// An optional string field; `null` counts as absent.
pub(crate) fn opt_str<'v>(
    v: Option<&'v Value>,
    field: &str,
) -> Result<Option<&'v str>, ConfigError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ConfigError::invalid(
            field,
            format!("expected a string, got {}", show(other)),
        )),
    }
}

fn socket(v: Option<&Value>) -> Result<Option<String>, ConfigError> {
    match opt_str(v, "socket")? {
        None => Ok(None),
        Some(s) if s.starts_with('/') => Ok(Some(s.to_string())),
        Some(s) => Err(ConfigError::invalid(
            "socket",
            format!(
                "{s:?} is not an absolute path: expected the path of netd's unix socket, like {:?}",
                furrow_api::DEFAULT_SOCKET
            ),
        )),
    }
}

/// `mtu`, for every kind: absent means the network's MTU.
pub(crate) fn mtu(v: Option<&Value>) -> Result<Option<u32>, ConfigError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|m| (u64::from(MTU_MIN)..=u64::from(MTU_MAX)).contains(m))
            .map(|m| Some(m as u32))
            .ok_or_else(|| {
                ConfigError::invalid(
                    "mtu",
                    format!(
                        "expected an integer from {MTU_MIN} to {MTU_MAX}, got {}",
                        show(v)
                    ),
                )
            }),
    }
}

fn string_list(v: &Value, field: &str) -> Result<Vec<String>, ConfigError> {
    let err = || {
        ConfigError::invalid(
            field,
            format!("expected an array of strings, got {}", show(v)),
        )
    };
    let arr = v.as_array().ok_or_else(err)?;
    arr.iter()
        .map(|s| s.as_str().map(str::to_string).ok_or_else(err))
        .collect()
}

/// `dns`: the spec's DNS object. Its own keys are checked too, so a typo
/// inside it is caught like one at the top level.
fn dns(v: Option<&Value>) -> Result<Dns, ConfigError> {
    let obj = match v {
        None | Some(Value::Null) => return Ok(Dns::default()),
        Some(Value::Object(o)) => o,
        Some(other) => {
            return Err(ConfigError::invalid(
                "dns",
                format!("expected an object, got {}", show(other)),
            ))
        }
    };
    let mut dns = Dns::default();
    let mut unknown = Vec::new();
    for (k, v) in obj {
        let field = format!("dns.{k}");
        match k.as_str() {
            "nameservers" => {
                dns.nameservers = string_list(v, &field)?;
                if let Some(bad) = dns
                    .nameservers
                    .iter()
                    .find(|s| s.parse::<IpAddr>().is_err())
                {
                    return Err(ConfigError::invalid(
                        field,
                        format!("{bad:?} is not an IP address"),
                    ));
                }
            }
            "domain" => dns.domain = opt_str(Some(v), &field)?.map(str::to_string),
            "search" => dns.search = string_list(v, &field)?,
            "options" => dns.options = string_list(v, &field)?,
            _ => unknown.push(Unsupported {
                key: field,
                value: show(v),
                reason: None,
            }),
        }
    }
    if unknown.is_empty() {
        Ok(dns)
    } else {
        Err(ConfigError::UnsupportedFields(unknown))
    }
}

/// MAC and addresses the runtime asks for. runtimeConfig wins over
/// args.cni (CNI conventions: capability args, then config args, then
/// CNI_ARGS, which the caller applies last). runtimeConfig keys count only
/// when `capabilities` declares them: that is libcni's contract, and a
/// runtimeConfig key without its capability was not meant for us.
fn requested(obj: &Map<String, Value>) -> Result<(Option<MacAddr>, Vec<IpAddr>), ConfigError> {
    let caps = capabilities(obj.get("capabilities"))?;
    let rc = object(obj.get("runtimeConfig"), "runtimeConfig")?;
    let args = object(obj.get("args"), "args")?;
    let args_cni = match args {
        Some(a) => object(a.get("cni"), "args.cni")?,
        None => None,
    };

    let mut mac = None;
    let mut ips = Vec::new();
    if let Some(cni) = args_cni {
        mac = opt_mac(cni.get("mac"), "args.cni.mac")?;
        ips = opt_ips(cni.get("ips"), "args.cni.ips")?;
    }
    if let Some(rc) = rc {
        for (cap, declared) in [("mac", caps.mac), ("ips", caps.ips)] {
            if rc.contains_key(cap) && !declared {
                debug!("runtimeConfig.{cap} ignored: capabilities does not declare {cap:?}");
            }
        }
        if caps.mac {
            if let Some(m) = opt_mac(rc.get("mac"), "runtimeConfig.mac")? {
                mac = Some(m);
            }
        }
        if caps.ips {
            let r = opt_ips(rc.get("ips"), "runtimeConfig.ips")?;
            if !r.is_empty() {
                ips = r;
            }
        }
    }
    Ok((mac, ips))
}

#[derive(Default)]
struct Caps {
    mac: bool,
    ips: bool,
}

fn capabilities(v: Option<&Value>) -> Result<Caps, ConfigError> {
    let mut caps = Caps::default();
    let Some(obj) = object(v, "capabilities")? else {
        return Ok(caps);
    };
    for (k, v) in obj {
        let on = v.as_bool().ok_or_else(|| {
            ConfigError::invalid(
                format!("capabilities.{k}"),
                format!("expected true or false, got {}", show(v)),
            )
        })?;
        match k.as_str() {
            "mac" => caps.mac = on,
            "ips" => caps.ips = on,
            // Declaring a capability asks the runtime for data the plugin
            // would then ignore: say so rather than drop it.
            _ if on => return Err(ConfigError::UnsupportedCapability(k.clone())),
            _ => {}
        }
    }
    Ok(caps)
}

fn object<'v>(
    v: Option<&'v Value>,
    field: &str,
) -> Result<Option<&'v Map<String, Value>>, ConfigError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(other) => Err(ConfigError::invalid(
            field,
            format!("expected an object, got {}", show(other)),
        )),
    }
}

fn opt_mac(v: Option<&Value>, field: &str) -> Result<Option<MacAddr>, ConfigError> {
    let Some(s) = opt_str(v, field)? else {
        return Ok(None);
    };
    let mac: MacAddr = s
        .parse()
        .map_err(|e: furrow_api::mac::MacParseError| ConfigError::invalid(field, e.to_string()))?;
    if !mac.is_valid_unicast() {
        return Err(ConfigError::invalid(
            field,
            format!("{mac} is not usable by a port: expected a unicast, non-zero MAC address"),
        ));
    }
    Ok(Some(mac))
}

/// `ips`: an array of addresses, bare or CIDR (the prefix is dropped, the
/// network's subnet decides it).
fn opt_ips(v: Option<&Value>, field: &str) -> Result<Vec<IpAddr>, ConfigError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    string_list(v, field)?
        .iter()
        .enumerate()
        .map(|(i, s)| {
            crate::args::parse_ip(s).ok_or_else(|| {
                ConfigError::invalid(
                    format!("{field}[{i}]"),
                    format!("{s:?} is not an IP address (expected an address or CIDR)"),
                )
            })
        })
        .collect()
}

fn prev_result(v: Option<&Value>) -> Result<Option<CniResult>, ConfigError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => result::parse_result(v).map(Some).map_err(|e| {
            ConfigError::invalid(
                "prevResult",
                e.to_string().trim_start_matches("prevResult: ").to_string(),
            )
        }),
    }
}

/// GC's list of attachments to keep. Without it GC refuses to run: an
/// absent list would mean releasing every attachment of the network.
/// libcni sends it under both names (cni.dev/attachments was the 1.1.0
/// draft's spelling).
fn valid_attachments(
    obj: &Map<String, Value>,
    network: &str,
) -> Result<Vec<AttachmentRef>, ConfigError> {
    const KEY: &str = "cni.dev/valid-attachments";
    let (key, v) = match (obj.get(KEY), obj.get("cni.dev/attachments")) {
        (Some(v), _) => (KEY, v),
        (None, Some(v)) => ("cni.dev/attachments", v),
        (None, None) => {
            return Err(ConfigError::invalid(
                KEY,
                format!("missing: GC needs the list of attachments to keep and will not release every attachment of network {network:?} without it"),
            ))
        }
    };
    let arr = v.as_array().ok_or_else(|| {
        ConfigError::invalid(
            key,
            format!(
                "expected an array of {{\"containerID\", \"ifname\"}}, got {}",
                show(v)
            ),
        )
    })?;
    arr.iter()
        .enumerate()
        .map(|(i, item)| {
            let field = |f: &str| format!("{key}[{i}].{f}");
            let get = |f: &str| {
                item.get(f)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| {
                        ConfigError::invalid(
                            field(f),
                            format!("expected a string in {}", show(item)),
                        )
                    })
            };
            Ok(AttachmentRef {
                container_id: get("containerID")?,
                ifname: get("ifname")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
