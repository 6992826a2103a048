//! The management network's keys: `network`, `mtu`, `ipMasq`, and what it
//! accepts as `ipam`.

use furrow_api::cni::{AttachmentSpec, Dns, ManagementAttachment};
use furrow_api::resource::{validate_name, ManagementNetwork, MAX_NAME_LEN};
use serde_json::Value;

use super::{mtu, opt_str, show, ConfigError, Parser};

pub(super) const KEYS: &[&str] = &["network", "mtu", "ipMasq"];

pub(super) fn parse(p: &Parser, dns: Dns) -> Result<AttachmentSpec, ConfigError> {
    p.soft(ipam(p.get("ipam")), || ())?;
    let network = p.soft(network(p.get("network")), || fallback_network(p))?;
    let mtu = p.soft(mtu(p.get("mtu")), || None)?;
    let ip_masq = p.soft(ip_masq(p.get("ipMasq")), || true)?;
    Ok(AttachmentSpec::Management(ManagementAttachment {
        network,
        mtu,
        ip_masq,
        dns,
    }))
}

/// The management network allocates addresses itself (per-node subnets of
/// the cluster CIDR), so only "no IPAM" or Furrow's own is meaningful.
fn ipam(v: Option<&Value>) -> Result<(), ConfigError> {
    let ok = match v {
        None | Some(Value::Null) => true,
        Some(Value::Object(o)) => {
            o.is_empty()
                || (o.len() == 1 && o.get("type").and_then(Value::as_str) == Some("furrow"))
        }
        Some(_) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            "ipam",
            format!(
                "{} is not supported here: the management network allocates addresses itself; omit ipam or use {{}} or {{\"type\": \"furrow\"}}",
                show(v.unwrap_or(&Value::Null))
            ),
        ))
    }
}

fn network(v: Option<&Value>) -> Result<String, ConfigError> {
    let Some(name) = opt_str(v, "network")? else {
        return Ok(ManagementNetwork::DEFAULT_NAME.to_string());
    };
    let mut errs = Vec::new();
    validate_name("network", name, MAX_NAME_LEN, &mut errs);
    match errs.into_iter().next() {
        None => Ok(name.to_string()),
        Some(e) => Err(ConfigError::invalid(
            "network",
            format!("{} (the name of a ManagementNetwork resource)", e.expected),
        )),
    }
}

/// On DEL, an invalid `network` string is still passed on as written: it
/// may match what netd recorded at ADD time better than the default would.
fn fallback_network(p: &Parser) -> String {
    match p.get("network") {
        Some(Value::String(s)) if p.lenient() => s.clone(),
        _ => ManagementNetwork::DEFAULT_NAME.to_string(),
    }
}

fn ip_masq(v: Option<&Value>) -> Result<bool, ConfigError> {
    match v {
        None | Some(Value::Null) => Ok(true),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(ConfigError::invalid(
            "ipMasq",
            format!("expected true or false, got {}", show(other)),
        )),
    }
}
