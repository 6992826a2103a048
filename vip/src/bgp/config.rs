//! The speaker's and its peers' configuration, and its validation: every
//! refusal names the field (and the peer) it is about.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::codec::AS_TRANS;

/// The longest TCP MD5 key Linux takes (TCP_MD5SIG_MAXKEYLEN).
pub const MAX_PASSWORD_LEN: usize = 80;

/// Settings shared by every session of one speaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeakerConfig {
    /// Our AS; 4-octet numbers are fine.
    pub local_as: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// The hold time we propose, in seconds: 0 (no keepalives, no hold
    /// timer) or at least 3. Default 9.
    pub hold_time: u16,
    /// Seconds between keepalives; default a third of the negotiated hold
    /// time (and never more than that).
    pub keepalive: Option<u16>,
    /// The longest wait between connection attempts (they start 1 s
    /// apart and double), and how long one attempt may take. Default 5 s.
    pub connect_retry: Duration,
}

impl SpeakerConfig {
    pub fn new(local_as: u32, router_id: Ipv4Addr) -> SpeakerConfig {
        SpeakerConfig {
            local_as,
            router_id,
            ..SpeakerConfig::default()
        }
    }
}

impl Default for SpeakerConfig {
    /// Defaults for everything but `local_as` and `router_id`, which stay
    /// invalid (0) until set.
    fn default() -> Self {
        SpeakerConfig {
            local_as: 0,
            router_id: Ipv4Addr::UNSPECIFIED,
            hold_time: 9,
            keepalive: None,
            connect_retry: Duration::from_secs(5),
        }
    }
}

/// One BGP neighbor (the upstream router).
#[derive(Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// Unique among the speaker's peers; used in logs and status.
    pub name: String,
    pub address: IpAddr,
    /// Default 179.
    pub port: u16,
    pub remote_as: u32,
    /// Source address of the connection; default: the kernel's choice.
    pub local_address: Option<IpAddr>,
    /// TCP MD5 signature key (RFC 2385), at most 80 bytes.
    pub password: Option<String>,
    /// Overrides the speaker's hold time for this peer.
    pub hold_time: Option<u16>,
    /// Next hop of IPv4 routes; default: the connection's local address
    /// if it is IPv4.
    pub next_hop_v4: Option<Ipv4Addr>,
    /// Next hop of IPv6 routes; default: the connection's local address
    /// if it is a global IPv6 one. Without either, IPv6 prefixes are not
    /// sent to this peer (its status says so).
    pub next_hop_v6: Option<Ipv6Addr>,
}

impl PeerConfig {
    pub fn new(name: impl Into<String>, address: IpAddr, remote_as: u32) -> PeerConfig {
        PeerConfig {
            name: name.into(),
            address,
            port: 179,
            remote_as,
            local_address: None,
            password: None,
            hold_time: None,
            next_hop_v4: None,
            next_hop_v6: None,
        }
    }
}

// By hand, so the password never reaches a log.
impl fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerConfig")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("port", &self.port)
            .field("remote_as", &self.remote_as)
            .field("local_address", &self.local_address)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("hold_time", &self.hold_time)
            .field("next_hop_v4", &self.next_hop_v4)
            .field("next_hop_v6", &self.next_hop_v6)
            .finish()
    }
}

/// A configuration the speaker refuses, or a call it cannot serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{}{field}: {reason}", peer.as_ref().map(|p| format!("peer {p:?}: ")).unwrap_or_default())]
    Invalid {
        /// The peer's name, for peer settings.
        peer: Option<String>,
        /// The field, as named in [`SpeakerConfig`] or [`PeerConfig`].
        field: &'static str,
        reason: String,
    },
    #[error("the BGP speaker must be started inside a tokio runtime")]
    NoRuntime,
    #[error("the BGP speaker has been shut down")]
    ShutDown,
}

fn invalid(peer: Option<&str>, field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        peer: peer.map(str::to_string),
        field,
        reason: reason.into(),
    }
}

fn check_as(peer: Option<&str>, field: &'static str, asn: u32) -> Result<(), ConfigError> {
    match asn {
        0 => Err(invalid(
            peer,
            field,
            "AS 0 is reserved and cannot be used (RFC 7607)",
        )),
        AS_TRANS => Err(invalid(
            peer,
            field,
            "AS 23456 is AS_TRANS, reserved for 2-octet AS compatibility (RFC 6793)",
        )),
        _ => Ok(()),
    }
}

fn check_hold(peer: Option<&str>, field: &'static str, hold: u16) -> Result<(), ConfigError> {
    if hold == 1 || hold == 2 {
        return Err(invalid(
            peer,
            field,
            format!("{hold} s is not allowed: use 0 (no keepalives) or at least 3 s (RFC 4271)"),
        ));
    }
    Ok(())
}

fn check_unicast(peer: Option<&str>, field: &'static str, ip: IpAddr) -> Result<(), ConfigError> {
    let bad = match ip {
        IpAddr::V4(a) => a.is_unspecified() || a.is_multicast() || a.is_broadcast(),
        IpAddr::V6(a) => a.is_unspecified() || a.is_multicast(),
    };
    if bad {
        return Err(invalid(
            peer,
            field,
            format!("{ip} is not a unicast address"),
        ));
    }
    Ok(())
}

impl SpeakerConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_as(None, "local_as", self.local_as)?;
        let id = self.router_id;
        if id.is_unspecified() || id.is_broadcast() || id.is_multicast() {
            return Err(invalid(
                None,
                "router_id",
                format!(
                    "{id} cannot be a BGP identifier (use a unicast IPv4 address of this node)"
                ),
            ));
        }
        check_hold(None, "hold_time", self.hold_time)?;
        if let Some(k) = self.keepalive {
            if k == 0 {
                return Err(invalid(None, "keepalive", "must be at least 1 s"));
            }
            if self.hold_time != 0 && k >= self.hold_time {
                return Err(invalid(
                    None,
                    "keepalive",
                    format!(
                        "{k} s must be less than the hold time ({} s)",
                        self.hold_time
                    ),
                ));
            }
        }
        if self.connect_retry.is_zero() {
            return Err(invalid(None, "connect_retry", "must be more than 0"));
        }
        Ok(())
    }
}

impl PeerConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let p = Some(self.name.as_str());
        if self.name.trim().is_empty() {
            return Err(invalid(None, "name", "a peer needs a name"));
        }
        check_unicast(p, "address", self.address)?;
        if let IpAddr::V6(a) = self.address {
            if a.is_unicast_link_local() {
                return Err(invalid(
                    p,
                    "address",
                    format!("{a} is link-local; peering needs a global (or ULA) address"),
                ));
            }
        }
        if self.port == 0 {
            return Err(invalid(p, "port", "must not be 0"));
        }
        check_as(p, "remote_as", self.remote_as)?;
        if let Some(l) = self.local_address {
            check_unicast(p, "local_address", l)?;
            if l.is_ipv4() != self.address.is_ipv4() {
                return Err(invalid(
                    p,
                    "local_address",
                    format!(
                        "{l} is not of the same family as the peer address {}",
                        self.address
                    ),
                ));
            }
        }
        if let Some(pw) = &self.password {
            if pw.is_empty() {
                return Err(invalid(
                    p,
                    "password",
                    "empty (leave it unset for no TCP MD5)",
                ));
            }
            if pw.len() > MAX_PASSWORD_LEN {
                return Err(invalid(
                    p,
                    "password",
                    format!(
                        "{} bytes; TCP MD5 keys are at most {MAX_PASSWORD_LEN}",
                        pw.len()
                    ),
                ));
            }
        }
        if let Some(h) = self.hold_time {
            check_hold(p, "hold_time", h)?;
        }
        if let Some(nh) = self.next_hop_v4 {
            check_unicast(p, "next_hop_v4", IpAddr::V4(nh))?;
        }
        if let Some(nh) = self.next_hop_v6 {
            check_unicast(p, "next_hop_v6", IpAddr::V6(nh))?;
            if nh.is_unicast_link_local() {
                return Err(invalid(
                    p,
                    "next_hop_v6",
                    format!("{nh} is link-local; the next hop must be a global address"),
                ));
            }
        }
        Ok(())
    }
}

/// Validates a whole peer list: each peer, unique names and endpoints.
pub fn validate_peers(peers: &[PeerConfig]) -> Result<(), ConfigError> {
    let mut names = HashSet::new();
    let mut endpoints = HashSet::new();
    for p in peers {
        p.validate()?;
        if !names.insert(p.name.as_str()) {
            return Err(invalid(Some(&p.name), "name", "used by more than one peer"));
        }
        if !endpoints.insert((p.address, p.port)) {
            return Err(invalid(
                Some(&p.name),
                "address",
                format!("{} port {} is already another peer's", p.address, p.port),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Breaks one setting of a config.
    type Breaker<T> = fn(&mut T);

    fn speaker() -> SpeakerConfig {
        SpeakerConfig::new(65001, Ipv4Addr::new(10, 0, 0, 2))
    }

    fn peer() -> PeerConfig {
        PeerConfig::new("tor1", "10.0.0.1".parse().unwrap(), 65000)
    }

    fn field_of(e: ConfigError) -> (&'static str, String) {
        let text = e.to_string();
        match e {
            ConfigError::Invalid { field, .. } => (field, text),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn good_configs_pass() {
        speaker().validate().unwrap();
        peer().validate().unwrap();
        let mut s = speaker();
        s.local_as = 4_200_000_001;
        s.hold_time = 3;
        s.keepalive = Some(1);
        s.validate().unwrap();
        s.hold_time = 0;
        s.validate().unwrap();
        let mut p = peer();
        p.password = Some("x".repeat(80));
        p.local_address = Some("10.0.0.2".parse().unwrap());
        p.next_hop_v6 = Some("fd00::2".parse().unwrap());
        p.hold_time = Some(0);
        p.validate().unwrap();
    }

    #[test]
    fn speaker_refusals_name_the_field() {
        let cases: Vec<(Breaker<SpeakerConfig>, &str)> = vec![
            (|s| s.local_as = 0, "local_as"),
            (|s| s.local_as = 23456, "local_as"),
            (|s| s.router_id = Ipv4Addr::UNSPECIFIED, "router_id"),
            (|s| s.router_id = Ipv4Addr::BROADCAST, "router_id"),
            (|s| s.hold_time = 1, "hold_time"),
            (|s| s.hold_time = 2, "hold_time"),
            (|s| s.keepalive = Some(0), "keepalive"),
            (|s| s.keepalive = Some(9), "keepalive"),
            (|s| s.connect_retry = Duration::ZERO, "connect_retry"),
        ];
        for (break_it, want) in cases {
            let mut s = speaker();
            break_it(&mut s);
            let (field, text) = field_of(s.validate().unwrap_err());
            assert_eq!(field, want, "{text}");
            assert!(text.starts_with(&format!("{want}: ")), "{text}");
        }
        assert!(SpeakerConfig::default().validate().is_err());
        let (_, text) = field_of(
            SpeakerConfig::new(0, Ipv4Addr::new(1, 1, 1, 1))
                .validate()
                .unwrap_err(),
        );
        assert_eq!(
            text,
            "local_as: AS 0 is reserved and cannot be used (RFC 7607)"
        );
    }

    #[test]
    fn peer_refusals_name_the_peer_and_the_field() {
        let cases: Vec<(Breaker<PeerConfig>, &str)> = vec![
            (|p| p.remote_as = 0, "remote_as"),
            (|p| p.address = "0.0.0.0".parse().unwrap(), "address"),
            (|p| p.address = "ff02::1".parse().unwrap(), "address"),
            (|p| p.address = "fe80::1".parse().unwrap(), "address"),
            (|p| p.port = 0, "port"),
            (
                |p| p.local_address = Some("fd00::2".parse().unwrap()),
                "local_address",
            ),
            (|p| p.password = Some(String::new()), "password"),
            (|p| p.password = Some("x".repeat(81)), "password"),
            (|p| p.hold_time = Some(2), "hold_time"),
            (
                |p| p.next_hop_v4 = Some(Ipv4Addr::UNSPECIFIED),
                "next_hop_v4",
            ),
            (
                |p| p.next_hop_v6 = Some("fe80::1".parse().unwrap()),
                "next_hop_v6",
            ),
            (
                |p| p.next_hop_v6 = Some(Ipv6Addr::UNSPECIFIED),
                "next_hop_v6",
            ),
        ];
        for (break_it, want) in cases {
            let mut p = peer();
            break_it(&mut p);
            let (field, text) = field_of(p.validate().unwrap_err());
            assert_eq!(field, want, "{text}");
            assert!(
                text.starts_with(&format!("peer \"tor1\": {want}: ")),
                "{text}"
            );
        }
        let mut p = peer();
        p.name = " ".into();
        assert_eq!(field_of(p.validate().unwrap_err()).0, "name");
    }

    #[test]
    fn peer_lists_need_unique_names_and_endpoints() {
        let a = peer();
        let mut b = peer();
        b.address = "10.0.0.9".parse().unwrap();
        validate_peers(&[a.clone(), {
            let mut b = b.clone();
            b.name = "tor2".into();
            b
        }])
        .unwrap();
        assert_eq!(
            field_of(validate_peers(&[a.clone(), b]).unwrap_err()).0,
            "name"
        );
        let mut c = a.clone();
        c.name = "again".into();
        assert_eq!(
            field_of(validate_peers(&[a.clone(), c.clone()]).unwrap_err()).0,
            "address"
        );
        c.port = 1179;
        validate_peers(&[a, c]).unwrap();
    }

    #[test]
    fn debug_output_hides_the_password() {
        let mut p = peer();
        p.password = Some("hunter2".into());
        let d = format!("{p:?}");
        assert!(!d.contains("hunter2"), "{d}");
        assert!(d.contains("redacted"));
    }
}
