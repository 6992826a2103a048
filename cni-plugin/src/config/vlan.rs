//! VLAN attachments: a port on a cluster network. The keys are those of
//! the reference bridge plugin as Harvester writes them in its
//! NetworkAttachmentDefinitions (`bridge`, `vlan`, `vlanTrunk`,
//! `promiscMode`, `mtu`), so a Harvester NAD works with only `"type"`
//! changed, plus Furrow's own `clusterNetwork`.
//!
//! `vlan` and `vlanTrunk` follow the reference plugin: a port is an access
//! port (`vlan` 1-4094), untagged (`vlan` 0 or absent) or a trunk
//! (`vlanTrunk`, with `vlan` 0 or absent); a non-zero `vlan` together with
//! a non-empty `vlanTrunk` is refused, as the reference plugin refuses it.
//! An empty `vlanTrunk` is no trunk, as there too.

use furrow_api::cni::{AddressPair, AttachmentSpec, Dns, VlanAttachment, VlanRange, VLAN_MAX};
use furrow_api::resource::{validate_name, CLUSTER_NETWORK_NAME_MAX};
use furrow_api::MacAddr;
use serde_json::Value;

use super::{mtu, opt_str, show, ConfigError, Parser};

pub(super) const KEYS: &[&str] = &[
    "clusterNetwork",
    "bridge",
    "vlan",
    "vlanTrunk",
    "mtu",
    "promiscMode",
    "dhcpTrusted",
    "portSecurity",
    "allowedAddressPairs",
];

/// Keys whose presence makes a config a VLAN attachment.
pub(super) const MARKERS: &[&str] = &["clusterNetwork", "bridge", "vlan", "vlanTrunk"];

/// A cluster network's node bridge is `<name>-br`.
const BRIDGE_SUFFIX: &str = "-br";

/// Options of the reference bridge plugin that Furrow does not have, with
/// a hint where there is more to say than "remove it". Users carry them
/// over from bridge NADs; each gets code 2 with its own explanation.
const BRIDGE_PLUGIN_ONLY: &[(&str, &str)] = &[
    ("isGateway", ""),
    ("isDefaultGateway", ""),
    ("forceAddress", ""),
    ("ipMasq", ""),
    ("hairpinMode", ""),
    (
        "macspoofchk",
        " (Furrow's port security checks source MACs, addresses, ARP and neighbour discovery on every VLAN port by default; \"portSecurity\": false turns it off)",
    ),
    ("enabledad", ""),
    ("disableContainerInterface", ""),
    ("portIsolation", ""),
    ("preserveDefaultVlan", ""),
];

/// Why a key of the reference bridge plugin is refused; None for others.
pub(super) fn bridge_plugin_refusal(key: &str) -> Option<String> {
    BRIDGE_PLUGIN_ONLY
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(k, hint)| {
            format!("Furrow does not support the bridge plugin's {k} option; remove it{hint}")
        })
}

pub(super) fn parse(p: &Parser, dns: Dns) -> Result<AttachmentSpec, ConfigError> {
    p.soft(ipam(p.get("ipam")), || ())?;
    let cluster_network = p.soft(cluster_network(p), || fallback_cluster_network(p))?;
    let vlan = p.soft(vlan(p.get("vlan")), || 0)?;
    let trunk = p.soft(trunk(p.get("vlanTrunk")), Vec::new)?;
    if vlan != 0 && !trunk.is_empty() {
        // On DEL both are passed on as parsed; netd's records decide.
        p.soft(Err(access_and_trunk(vlan)), || ())?;
    }
    let mtu = p.soft(mtu(p.get("mtu")), || None)?;
    let promisc = p.soft(flag("promiscMode", p.get("promiscMode")), || false)?;
    let dhcp_trusted = p.soft(flag("dhcpTrusted", p.get("dhcpTrusted")), || false)?;
    let port_security = match p.get("portSecurity") {
        None | Some(Value::Null) => true,
        v => p.soft(flag("portSecurity", v), || true)?,
    };
    let allowed_address_pairs = p.soft(pairs(p.get("allowedAddressPairs")), Vec::new)?;
    if !port_security && !allowed_address_pairs.is_empty() {
        p.soft(
            Err(ConfigError::invalid(
                "allowedAddressPairs",
                "has no effect with \"portSecurity\": false (the port may then send from any address): remove one of them",
            )),
            || (),
        )?;
    }
    Ok(AttachmentSpec::Vlan(VlanAttachment {
        cluster_network,
        vlan,
        trunk,
        mtu,
        promisc,
        dhcp_trusted,
        port_security,
        allowed_address_pairs,
        dns,
    }))
}

const PAIR_FORM: &str = "{\"ipAddress\": \"10.0.0.100\" or \"10.0.0.0/24\", \"macAddress\": \"52:54:00:...\" (optional)}";

/// `allowedAddressPairs`: addresses the VM may also send from.
fn pairs(v: Option<&Value>) -> Result<Vec<AddressPair>, ConfigError> {
    let entries = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(other) => {
            return Err(ConfigError::invalid(
                "allowedAddressPairs",
                format!(
                    "expected an array of {PAIR_FORM} entries, got {}",
                    show(other)
                ),
            ))
        }
    };
    let mut out = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let field = format!("allowedAddressPairs[{i}]");
        let Some(obj) = e.as_object() else {
            return Err(ConfigError::invalid(
                field,
                format!("expected {PAIR_FORM}, got {}", show(e)),
            ));
        };
        if let Some(k) = obj
            .keys()
            .find(|k| !["ipAddress", "macAddress"].contains(&k.as_str()))
        {
            let hint = ["ipAddress", "macAddress"]
                .iter()
                .find(|t| {
                    t.eq_ignore_ascii_case(k)
                        || (k.eq_ignore_ascii_case("ip") && **t == "ipAddress")
                        || (k.eq_ignore_ascii_case("mac") && **t == "macAddress")
                })
                .map(|t| format!(" (did you mean {t:?}?)"))
                .unwrap_or_default();
            return Err(ConfigError::invalid(
                format!("{field}.{k}"),
                format!("unknown key in an allowed address pair{hint}: a pair is {PAIR_FORM}"),
            ));
        }
        let ip_address = match obj.get("ipAddress") {
            Some(Value::String(s)) => AddressPair::parse_ip(s)
                .map_err(|e| ConfigError::invalid(format!("{field}.ipAddress"), e))?,
            None | Some(Value::Null) => {
                return Err(ConfigError::invalid(
                    format!("{field}.ipAddress"),
                    format!("missing: a pair is {PAIR_FORM}"),
                ))
            }
            Some(other) => {
                return Err(ConfigError::invalid(
                    format!("{field}.ipAddress"),
                    format!(
                        "expected an address or prefix as a string, got {}",
                        show(other)
                    ),
                ))
            }
        };
        let mac_address = match obj.get("macAddress") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.parse::<MacAddr>().map_err(|_| {
                ConfigError::invalid(
                    format!("{field}.macAddress"),
                    format!("{s:?} is not a MAC address (e.g. 52:54:00:12:34:56)"),
                )
            })?),
            Some(other) => {
                return Err(ConfigError::invalid(
                    format!("{field}.macAddress"),
                    format!("expected a MAC address as a string, got {}", show(other)),
                ))
            }
        };
        out.push(AddressPair {
            ip_address,
            mac_address,
        });
    }
    if let Some((path, why)) = AddressPair::check_list(&out).into_iter().next() {
        return Err(ConfigError::invalid(
            format!("allowedAddressPairs{path}"),
            why,
        ));
    }
    Ok(out)
}

/// VMs on VLAN networks are addressed by DHCP (a later issue); until then
/// only "no IPAM" is meaningful.
fn ipam(v: Option<&Value>) -> Result<(), ConfigError> {
    match v {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(o)) if o.is_empty() => Ok(()),
        Some(other) => Err(ConfigError::invalid(
            "ipam",
            format!(
                "{} is not supported: IPAM on VLAN networks is not supported yet (VMs on VLAN networks get their addresses by DHCP); use \"ipam\": {{}} or omit it",
                show(other)
            ),
        )),
    }
}

/// The cluster network, from `clusterNetwork` or Harvester's
/// `"bridge": "<cn>-br"`; if both are given they must agree.
fn cluster_network(p: &Parser) -> Result<String, ConfigError> {
    let by_name = match opt_str(p.get("clusterNetwork"), "clusterNetwork")? {
        Some(name) => Some(cluster_network_name(name)?),
        None => None,
    };
    let by_bridge = match opt_str(p.get("bridge"), "bridge")? {
        Some(bridge) => Some((bridge, bridge_cluster_network(bridge)?)),
        None => None,
    };
    match (by_name, by_bridge) {
        (Some(name), Some((bridge, of_bridge))) if name != of_bridge => {
            Err(ConfigError::invalid(
                "bridge",
                format!(
                    "{bridge:?} is the bridge of cluster network {of_bridge:?}, but clusterNetwork is {name:?}: set only one of them, or make them agree (cluster network {name:?} has bridge \"{name}{BRIDGE_SUFFIX}\")"
                ),
            ))
        }
        (Some(name), _) => Ok(name),
        (None, Some((_, of_bridge))) => Ok(of_bridge),
        (None, None) => Err(missing_cluster_network(p)),
    }
}

fn cluster_network_name(name: &str) -> Result<String, ConfigError> {
    let mut errs = Vec::new();
    validate_name("clusterNetwork", name, CLUSTER_NETWORK_NAME_MAX, &mut errs);
    match errs.into_iter().next() {
        None => Ok(name.to_string()),
        Some(e) => Err(ConfigError::invalid(
            "clusterNetwork",
            format!(
                "{} (the name of a ClusterNetwork, short because its node bridge is <name>{BRIDGE_SUFFIX} and device names have at most 15 characters)",
                e.expected
            ),
        )),
    }
}

fn bridge_cluster_network(bridge: &str) -> Result<String, ConfigError> {
    let Some(name) = bridge.strip_suffix(BRIDGE_SUFFIX) else {
        return Err(ConfigError::invalid(
            "bridge",
            format!(
                "{bridge:?} is not a cluster network's bridge: expected \"<clusterNetwork>{BRIDGE_SUFFIX}\", the node bridge of a cluster network (e.g. \"mgmt-br\" for cluster network mgmt), or set clusterNetwork instead"
            ),
        ));
    };
    let mut errs = Vec::new();
    validate_name("bridge", name, CLUSTER_NETWORK_NAME_MAX, &mut errs);
    match errs.into_iter().next() {
        None => Ok(name.to_string()),
        Some(e) => Err(ConfigError::invalid(
            "bridge",
            format!(
                "{bridge:?} is not \"<clusterNetwork>{BRIDGE_SUFFIX}\" for a valid cluster network name: {}",
                e.expected
            ),
        )),
    }
}

/// Named after the key that made this a VLAN attachment.
fn missing_cluster_network(p: &Parser) -> ConfigError {
    let help = format!(
        "requires clusterNetwork or bridge to say which cluster network carries it (e.g. \"clusterNetwork\": \"data\", or Harvester's \"bridge\": \"data{BRIDGE_SUFFIX}\")"
    );
    match ["vlan", "vlanTrunk"]
        .into_iter()
        .find(|k| p.get(k).is_some())
    {
        Some(key) => ConfigError::invalid(key, help),
        None => ConfigError::invalid(
            "clusterNetwork",
            format!("missing: a VLAN attachment {help}"),
        ),
    }
}

/// DEL: the names as written (even if invalid), so they can still match
/// what netd recorded at ADD time; empty if there is none.
fn fallback_cluster_network(p: &Parser) -> String {
    if let Some(Value::String(s)) = p.get("clusterNetwork") {
        return s.clone();
    }
    match p.get("bridge") {
        Some(Value::String(s)) => s.strip_suffix(BRIDGE_SUFFIX).unwrap_or(s).to_string(),
        _ => String::new(),
    }
}

fn vlan(v: Option<&Value>) -> Result<u16, ConfigError> {
    match v {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v
            .as_u64()
            .filter(|n| *n <= u64::from(VLAN_MAX))
            .map(|n| n as u16)
            .ok_or_else(|| {
                ConfigError::invalid(
                    "vlan",
                    format!(
                        "expected an integer from 0 (untagged) to {VLAN_MAX} (4095 is reserved), got {}",
                        show(v)
                    ),
                )
            }),
    }
}

fn access_and_trunk(vlan: u16) -> ConfigError {
    ConfigError::invalid(
        "vlan",
        format!(
            "{vlan} cannot be combined with vlanTrunk: a port is either an access port (vlan) or a trunk (vlanTrunk), as with the reference bridge plugin; for a trunk, omit vlan or set it to 0"
        ),
    )
}

const TRUNK_FORM: &str = "{\"id\": N} or {\"minID\": A, \"maxID\": B}";
const TRUNK_KEYS: [&str; 3] = ["id", "minID", "maxID"];

/// `vlanTrunk`: the allowed VLANs, sorted and merged into ranges.
fn trunk(v: Option<&Value>) -> Result<Vec<VlanRange>, ConfigError> {
    let entries = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(other) => {
            return Err(ConfigError::invalid(
                "vlanTrunk",
                format!(
                    "expected an array of {TRUNK_FORM} entries, got {}",
                    show(other)
                ),
            ))
        }
    };
    let mut ranges = entries
        .iter()
        .enumerate()
        .map(|(i, e)| trunk_entry(i, e))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(normalise(&mut ranges))
}

fn trunk_entry(i: usize, v: &Value) -> Result<VlanRange, ConfigError> {
    let field = format!("vlanTrunk[{i}]");
    let Some(obj) = v.as_object() else {
        return Err(ConfigError::invalid(
            field,
            format!("expected {TRUNK_FORM}, got {}", show(v)),
        ));
    };
    if let Some(k) = obj.keys().find(|k| !TRUNK_KEYS.contains(&k.as_str())) {
        let hint = match TRUNK_KEYS.iter().find(|t| t.eq_ignore_ascii_case(k)) {
            Some(t) => format!(" (did you mean {t:?}?)"),
            None => String::new(),
        };
        return Err(ConfigError::invalid(
            format!("{field}.{k}"),
            format!("unknown key in a vlanTrunk entry{hint}: an entry is {TRUNK_FORM}"),
        ));
    }
    // null counts as absent, as everywhere else.
    let get = |k: &str| obj.get(k).filter(|v| !v.is_null());
    let id = |k: &str, v: &Value| trunk_id(&format!("{field}.{k}"), v);
    match (get("id"), get("minID"), get("maxID")) {
        (Some(v), None, None) => {
            let n = id("id", v)?;
            Ok(VlanRange { min: n, max: n })
        }
        (None, Some(lo), Some(hi)) => {
            let (min, max) = (id("minID", lo)?, id("maxID", hi)?);
            if max < min {
                return Err(ConfigError::invalid(
                    format!("{field}.maxID"),
                    format!("{max} is less than minID {min}: a range needs minID <= maxID"),
                ));
            }
            Ok(VlanRange { min, max })
        }
        (Some(_), _, _) => Err(ConfigError::invalid(
            field,
            format!(
                "has both \"id\" and \"minID\"/\"maxID\": an entry is {TRUNK_FORM}; use one entry for each"
            ),
        )),
        (None, Some(_), None) => Err(ConfigError::invalid(
            format!("{field}.maxID"),
            "missing: minID and maxID go together",
        )),
        (None, None, Some(_)) => Err(ConfigError::invalid(
            format!("{field}.minID"),
            "missing: minID and maxID go together",
        )),
        (None, None, None) => Err(ConfigError::invalid(
            field,
            format!("empty entry: expected {TRUNK_FORM}"),
        )),
    }
}

fn trunk_id(field: &str, v: &Value) -> Result<u16, ConfigError> {
    v.as_u64()
        .filter(|n| (1..=u64::from(VLAN_MAX)).contains(n))
        .map(|n| n as u16)
        .ok_or_else(|| {
            ConfigError::invalid(
                field,
                format!(
                    "expected a VLAN ID from 1 to {VLAN_MAX} (a trunk carries tagged VLANs only; 4095 is reserved), got {}",
                    show(v)
                ),
            )
        })
}

/// Sorted, with overlapping and adjacent ranges merged.
fn normalise(ranges: &mut [VlanRange]) -> Vec<VlanRange> {
    ranges.sort();
    let mut out: Vec<VlanRange> = Vec::with_capacity(ranges.len());
    for r in ranges.iter() {
        match out.last_mut() {
            Some(last) if u32::from(r.min) <= u32::from(last.max) + 1 => {
                last.max = last.max.max(r.max);
            }
            _ => out.push(*r),
        }
    }
    out
}

fn flag(key: &str, v: Option<&Value>) -> Result<bool, ConfigError> {
    match v {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(ConfigError::invalid(
            key,
            format!("expected true or false, got {}", show(other)),
        )),
    }
}
