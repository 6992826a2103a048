//! CNI_ARGS: `K=V;K=V` pairs from the runtime (kubelet and Multus send the
//! pod's identity this way).
//!
//! Problems are code 4: CNI_ARGS is part of the environment.

use std::net::IpAddr;

use furrow_api::cni::PodRef;
use furrow_api::error::code;
use furrow_api::MacAddr;

use crate::output::debug;

/// The keys Furrow understands.
const KNOWN: &[&str] = &[
    "IgnoreUnknown",
    "K8S_POD_NAMESPACE",
    "K8S_POD_NAME",
    "K8S_POD_INFRA_CONTAINER_ID",
    "K8S_POD_UID",
    "MAC",
    "IP",
];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub pod: PodRef,
    pub mac: Option<MacAddr>,
    pub ips: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    #[error("CNI_ARGS: {0:?} is not a KEY=VALUE pair")]
    Malformed(String),
    #[error("CNI_ARGS: unknown key {0:?}")]
    Unknown(String),
    #[error("CNI_ARGS: IgnoreUnknown={0:?} is not a boolean (expected true, false, 1 or 0)")]
    IgnoreUnknown(String),
    #[error("CNI_ARGS: MAC={value:?} is invalid: {why}")]
    Mac { value: String, why: String },
    #[error(
        "CNI_ARGS: IP={0:?} is not an IP address (expected an address or CIDR, comma-separated)"
    )]
    Ip(String),
}

impl ArgsError {
    pub fn code(&self) -> u32 {
        code::INVALID_ENV
    }

    pub fn details(&self) -> String {
        match self {
            ArgsError::Unknown(_) => format!(
                "known keys: {}; set IgnoreUnknown=true to ignore others",
                KNOWN.join(", ")
            ),
            _ => String::new(),
        }
    }
}

/// Parses CNI_ARGS. With `lenient` (DEL) bad pairs are skipped instead of
/// failing: nothing in CNI_ARGS is needed to release an attachment.
pub fn parse(raw: &str, lenient: bool) -> Result<CniArgs, ArgsError> {
    let mut pairs = Vec::new();
    // Empty segments (a trailing ';') carry nothing; tolerating them costs
    // nothing and avoids failing on a sloppy runtime.
    for item in raw.split(';').filter(|s| !s.is_empty()) {
        match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => pairs.push((k, v)),
            _ => skip_or_fail(ArgsError::Malformed(item.to_string()), lenient)?,
        }
    }

    // IgnoreUnknown applies to the whole list wherever it appears.
    let mut ignore_unknown = false;
    for (_, v) in pairs.iter().filter(|(k, _)| *k == "IgnoreUnknown") {
        match parse_bool(v) {
            Some(b) => ignore_unknown = b,
            None => skip_or_fail(ArgsError::IgnoreUnknown(v.to_string()), lenient)?,
        }
    }

    let mut out = CniArgs::default();
    for (k, v) in pairs {
        // Empty values say nothing; treat them as absent.
        let value = (!v.is_empty()).then(|| v.to_string());
        match k {
            "IgnoreUnknown" => {}
            "K8S_POD_NAMESPACE" => out.pod.namespace = value,
            "K8S_POD_NAME" => out.pod.name = value,
            "K8S_POD_INFRA_CONTAINER_ID" => out.pod.infra_container_id = value,
            "K8S_POD_UID" => out.pod.uid = value,
            "MAC" if v.is_empty() => out.mac = None,
            "MAC" => match parse_mac(v) {
                Ok(m) => out.mac = Some(m),
                Err(e) => skip_or_fail(e, lenient)?,
            },
            "IP" if v.is_empty() => out.ips.clear(),
            "IP" => match parse_ips(v) {
                Ok(ips) => out.ips = ips,
                Err(e) => skip_or_fail(e, lenient)?,
            },
            _ if ignore_unknown => debug!("CNI_ARGS: ignoring unknown key {k:?}"),
            _ => skip_or_fail(ArgsError::Unknown(k.to_string()), lenient)?,
        }
    }
    Ok(out)
}

fn skip_or_fail(e: ArgsError, lenient: bool) -> Result<(), ArgsError> {
    if lenient {
        debug!("ignored on DEL: {e}");
        Ok(())
    } else {
        Err(e)
    }
}

/// libcni's UnmarshallableBool: 1/0/true/false in any case.
fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

fn parse_mac(v: &str) -> Result<MacAddr, ArgsError> {
    let err = |why: String| ArgsError::Mac {
        value: v.to_string(),
        why,
    };
    let mac: MacAddr = v
        .parse()
        .map_err(|e: furrow_api::mac::MacParseError| err(e.to_string()))?;
    if !mac.is_valid_unicast() {
        return Err(err("expected a unicast, non-zero address".into()));
    }
    Ok(mac)
}

fn parse_ips(v: &str) -> Result<Vec<IpAddr>, ArgsError> {
    v.split(',')
        .map(|s| parse_ip(s).ok_or_else(|| ArgsError::Ip(s.to_string())))
        .collect()
}

/// An address, bare or in CIDR form. The prefix is dropped: the network's
/// subnet decides it, netd checks the address lies inside.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<ipnet::IpNet>().ok().map(|n| n.addr()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MULTUS: &str =
        "IgnoreUnknown=true;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=id;K8S_POD_UID=u";

    #[test]
    fn multus_args_fill_the_pod() {
        let a = parse(MULTUS, false).unwrap();
        assert_eq!(a.pod.namespace.as_deref(), Some("ns"));
        assert_eq!(a.pod.name.as_deref(), Some("p"));
        assert_eq!(a.pod.infra_container_id.as_deref(), Some("id"));
        assert_eq!(a.pod.uid.as_deref(), Some("u"));
        assert_eq!(a.mac, None);
        assert!(a.ips.is_empty());
    }

    #[test]
    fn empty_is_nothing() {
        assert_eq!(parse("", false).unwrap(), CniArgs::default());
        assert_eq!(parse(";", false).unwrap(), CniArgs::default());
    }

    #[test]
    fn unknown_keys_fail_unless_ignored() {
        let e = parse("K8S_POD_NAME=p;FOO=bar", false).unwrap_err();
        assert_eq!(e, ArgsError::Unknown("FOO".into()));
        assert_eq!(e.code(), 4);
        assert!(e.to_string().contains("FOO"));
        // IgnoreUnknown may come after the unknown key.
        assert!(parse("FOO=bar;IgnoreUnknown=1", false).is_ok());
        assert!(parse("FOO=bar;IgnoreUnknown=TRUE", false).is_ok());
        assert!(parse("FOO=bar;IgnoreUnknown=false", false).is_err());
        assert_eq!(
            parse("IgnoreUnknown=yes", false).unwrap_err(),
            ArgsError::IgnoreUnknown("yes".into())
        );
    }

    #[test]
    fn malformed_pairs_fail() {
        for bad in ["FOO", "K8S_POD_NAME=p;junk", "=v"] {
            let e = parse(bad, false).unwrap_err();
            assert!(matches!(e, ArgsError::Malformed(_)), "{bad}: {e}");
            assert_eq!(e.code(), 4);
        }
        // '=' inside a value is kept.
        let a = parse("K8S_POD_NAME=a=b", false).unwrap();
        assert_eq!(a.pod.name.as_deref(), Some("a=b"));
    }

    #[test]
    fn mac_and_ips() {
        let a = parse("MAC=52:54:00:12:34:56;IP=10.0.0.5,fd00::5/64", false).unwrap();
        assert_eq!(a.mac, Some("52:54:00:12:34:56".parse().unwrap()));
        assert_eq!(
            a.ips,
            vec![
                "10.0.0.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
        for bad in ["MAC=01:00:5e:00:00:01", "MAC=00:00:00:00:00:00", "MAC=zz"] {
            assert!(
                matches!(parse(bad, false).unwrap_err(), ArgsError::Mac { .. }),
                "{bad}"
            );
        }
        assert_eq!(
            parse("IP=10.0.0.5,x", false).unwrap_err(),
            ArgsError::Ip("x".into())
        );
    }

    #[test]
    fn lenient_skips_bad_pairs() {
        let a = parse("junk;FOO=bar;MAC=zz;K8S_POD_NAME=p", true).unwrap();
        assert_eq!(a.pod.name.as_deref(), Some("p"));
        assert_eq!(a.mac, None);
    }
}
