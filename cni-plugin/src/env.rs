//! The CNI_* environment variables: which command, and for ADD/DEL/CHECK
//! which attachment (container ID, netns, interface name).
//!
//! Every problem here is code 4 (invalid environment variables), an
//! empty CNI_CONTAINERID included: one code for everything the runtime
//! put in the environment keeps the plugin's answers predictable.

use std::env::VarError;
use std::fmt;

use furrow_api::error::code;

/// Reads one environment variable; `std::env::var` in the binary, a map in
/// tests.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Result<String, VarError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Command {
    const ALL: [Command; 6] = [
        Command::Add,
        Command::Del,
        Command::Check,
        Command::Gc,
        Command::Status,
        Command::Version,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Gc => "GC",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
        }
    }

    /// Whether the command works on one attachment (and so needs
    /// CNI_CONTAINERID and CNI_IFNAME).
    pub fn has_attachment(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The attachment an ADD, DEL or CHECK is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub container_id: String,
    /// None only for DEL, when the runtime no longer has the netns.
    pub netns: Option<String>,
    pub ifname: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("required environment variable {0} is not set")]
    Missing(&'static str),
    #[error("environment variable {0} is empty")]
    Empty(&'static str),
    #[error("environment variable {0} is not valid UTF-8")]
    NotUnicode(&'static str),
    #[error("CNI_COMMAND {0:?} is not a CNI command")]
    UnknownCommand(String),
    #[error("CNI_CONTAINERID {0:?} is invalid: it must start with a letter or digit, followed by letters, digits, '_', '.' or '-'")]
    ContainerId(String),
    #[error("CNI_IFNAME {ifname:?} is invalid: {why}")]
    Ifname { ifname: String, why: &'static str },
}

impl EnvError {
    pub fn code(&self) -> u32 {
        code::INVALID_ENV
    }

    pub fn details(&self) -> String {
        match self {
            EnvError::UnknownCommand(_) | EnvError::Missing("CNI_COMMAND") => format!(
                "CNI_COMMAND must be one of {}",
                Command::ALL.map(Command::as_str).join(", ")
            ),
            _ => String::new(),
        }
    }
}

/// Reads a variable; unset is None (an empty value is returned as is, the
/// caller decides what empty means).
fn var(lookup: Lookup, name: &'static str) -> Result<Option<String>, EnvError> {
    match lookup(name) {
        Ok(v) => Ok(Some(v)),
        Err(VarError::NotPresent) => Ok(None),
        Err(VarError::NotUnicode(_)) => Err(EnvError::NotUnicode(name)),
    }
}

fn required(lookup: Lookup, name: &'static str) -> Result<String, EnvError> {
    match var(lookup, name)? {
        None => Err(EnvError::Missing(name)),
        Some(v) if v.is_empty() => Err(EnvError::Empty(name)),
        Some(v) => Ok(v),
    }
}

pub fn command(lookup: Lookup) -> Result<Command, EnvError> {
    let raw = required(lookup, "CNI_COMMAND")?;
    Command::ALL
        .into_iter()
        .find(|c| c.as_str() == raw)
        .ok_or(EnvError::UnknownCommand(raw))
}

/// The attachment variables of ADD, DEL and CHECK. GC and STATUS need none
/// of them and ignore them if set.
pub fn attachment(cmd: Command, lookup: Lookup) -> Result<Attachment, EnvError> {
    let container_id = required(lookup, "CNI_CONTAINERID")?;
    if !is_valid_id(&container_id) {
        return Err(EnvError::ContainerId(container_id));
    }
    // DEL must work after the runtime lost the netns (it may pass it unset
    // or empty); ADD and CHECK cannot do anything without one.
    let netns = if cmd == Command::Del {
        var(lookup, "CNI_NETNS")?.filter(|s| !s.is_empty())
    } else {
        Some(required(lookup, "CNI_NETNS")?)
    };
    let ifname = required(lookup, "CNI_IFNAME")?;
    check_ifname(&ifname)?;
    Ok(Attachment {
        container_id,
        netns,
        ifname,
    })
}

/// CNI_ARGS, if set and non-empty.
pub fn cni_args(lookup: Lookup) -> Result<Option<String>, EnvError> {
    Ok(var(lookup, "CNI_ARGS")?.filter(|s| !s.is_empty()))
}

/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`: the spec's rule for container IDs and
/// network names.
pub fn is_valid_id(s: &str) -> bool {
    furrow_api::wire::is_cni_identifier(s)
}

/// The kernel's rules for interface names (dev_valid_name), as netd
/// checks them: checking here gives a precise code 4 instead of a
/// netlink error from netd.
fn check_ifname(name: &str) -> Result<(), EnvError> {
    match furrow_api::wire::ifname_problem(name) {
        Some(why) => Err(EnvError::Ifname {
            ifname: name.to_string(),
            why,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(vars: &[(&str, &str)]) -> impl Fn(&str) -> Result<String, VarError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned().ok_or(VarError::NotPresent)
    }

    const FULL: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc-1.2_3"),
        ("CNI_NETNS", "/var/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
    ];

    fn without(name: &str) -> Vec<(&'static str, &'static str)> {
        FULL.iter().copied().filter(|(k, _)| *k != name).collect()
    }

    fn replaced(name: &str, value: &'static str) -> Vec<(&'static str, &'static str)> {
        FULL.iter()
            .map(|&(k, v)| if k == name { (k, value) } else { (k, v) })
            .collect()
    }

    #[test]
    fn parses_every_command() {
        for c in Command::ALL {
            let l = with(&[("CNI_COMMAND", c.as_str())]);
            assert_eq!(command(&l).unwrap(), c);
        }
    }

    #[test]
    fn unknown_or_missing_command_is_code_4_naming_it() {
        let e = command(&with(&[("CNI_COMMAND", "add")])).unwrap_err();
        assert_eq!(e, EnvError::UnknownCommand("add".into()));
        assert_eq!(e.code(), 4);
        assert!(e.to_string().contains("\"add\""));
        assert!(e.details().contains("VERSION"));
        let e = command(&with(&[])).unwrap_err();
        assert_eq!(e, EnvError::Missing("CNI_COMMAND"));
        assert!(e.to_string().contains("CNI_COMMAND"));
    }

    #[test]
    fn full_attachment_parses() {
        let a = attachment(Command::Add, &with(FULL)).unwrap();
        assert_eq!(a.container_id, "abc-1.2_3");
        assert_eq!(a.netns.as_deref(), Some("/var/run/netns/x"));
        assert_eq!(a.ifname, "eth0");
    }

    #[test]
    fn missing_variables_are_named() {
        for name in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
            for cmd in [Command::Add, Command::Check] {
                let e = attachment(cmd, &with(&without(name))).unwrap_err();
                assert_eq!(e, EnvError::Missing(name), "{cmd}");
                assert!(e.to_string().contains(name));
            }
        }
        for name in ["CNI_CONTAINERID", "CNI_IFNAME"] {
            let e = attachment(Command::Del, &with(&without(name))).unwrap_err();
            assert_eq!(e, EnvError::Missing(name));
        }
    }

    #[test]
    fn del_tolerates_missing_or_empty_netns() {
        let a = attachment(Command::Del, &with(&without("CNI_NETNS"))).unwrap();
        assert_eq!(a.netns, None);
        let a = attachment(Command::Del, &with(&replaced("CNI_NETNS", ""))).unwrap();
        assert_eq!(a.netns, None);
        let e = attachment(Command::Add, &with(&replaced("CNI_NETNS", ""))).unwrap_err();
        assert_eq!(e, EnvError::Empty("CNI_NETNS"));
    }

    #[test]
    fn container_id_rules() {
        for ok in ["a", "0", "abc-DEF_1.2", "3f6940ab5ab4"] {
            assert!(is_valid_id(ok), "{ok}");
        }
        for bad in ["-a", "_a", ".a", "a b", "a/b", "a:b", "é"] {
            let e = attachment(Command::Add, &with(&replaced("CNI_CONTAINERID", bad))).unwrap_err();
            assert!(matches!(e, EnvError::ContainerId(_)), "{bad}: {e}");
            assert_eq!(e.code(), 4);
        }
        // Empty is code 4 as well (documented choice).
        let e = attachment(Command::Add, &with(&replaced("CNI_CONTAINERID", ""))).unwrap_err();
        assert_eq!(e, EnvError::Empty("CNI_CONTAINERID"));
        assert_eq!(e.code(), 4);
    }

    #[test]
    fn ifname_rules() {
        for ok in ["eth0", "net1", "a", "123456789012345", "vlan.100", "a-b_c@"] {
            assert!(check_ifname(ok).is_ok(), "{ok}");
        }
        for bad in ["1234567890123456", ".", "..", "a/b", "a:b", "a b", "a\tb"] {
            let e = attachment(Command::Add, &with(&replaced("CNI_IFNAME", bad))).unwrap_err();
            assert!(matches!(e, EnvError::Ifname { .. }), "{bad}: {e}");
            assert!(e.to_string().contains("CNI_IFNAME"));
        }
        let e = attachment(Command::Add, &with(&replaced("CNI_IFNAME", ""))).unwrap_err();
        assert_eq!(e, EnvError::Empty("CNI_IFNAME"));
    }

    #[test]
    fn non_unicode_is_code_4() {
        let l = |k: &str| {
            if k == "CNI_COMMAND" {
                Err(VarError::NotUnicode("\u{fffd}".into()))
            } else {
                Err(VarError::NotPresent)
            }
        };
        assert_eq!(
            command(&l).unwrap_err(),
            EnvError::NotUnicode("CNI_COMMAND")
        );
    }

    #[test]
    fn cni_args_empty_is_none() {
        assert_eq!(cni_args(&with(&[("CNI_ARGS", "")])).unwrap(), None);
        assert_eq!(cni_args(&with(&[])).unwrap(), None);
        assert_eq!(
            cni_args(&with(&[("CNI_ARGS", "A=b")])).unwrap().as_deref(),
            Some("A=b")
        );
    }
}
