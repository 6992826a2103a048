//! Per-namespace sysctls. /proc/sys/net resolves to the network namespace
//! of the thread that opens the file; netd's threads all live in the
//! node's namespace.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[error("sysctl {path}: {source}")]
pub struct SysctlError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

pub fn write(key: &str, value: &str) -> Result<(), SysctlError> {
    let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
    std::fs::write(&path, value).map_err(|source| SysctlError { path, source })
}

pub fn read(key: &str) -> Result<String, SysctlError> {
    let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(|source| SysctlError { path, source })
}

/// Writes a per-interface IPv4 setting (`net/ipv4/conf/<if>/<key>`);
/// interface names may contain dots, so no key translation here.
pub fn write_if_v4(ifname: &str, key: &str, value: &str) -> Result<(), SysctlError> {
    let path = PathBuf::from("/proc/sys/net/ipv4/conf")
        .join(ifname)
        .join(key);
    std::fs::write(&path, value).map_err(|source| SysctlError { path, source })
}

/// Reads a per-interface IPv4 setting (`net/ipv4/conf/<if>/<key>`).
pub fn read_if_v4(ifname: &str, key: &str) -> Result<String, SysctlError> {
    let path = PathBuf::from("/proc/sys/net/ipv4/conf")
        .join(ifname)
        .join(key);
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(|source| SysctlError { path, source })
}

/// Writes a per-interface IPv6 setting (`net/ipv6/conf/<if>/<key>`).
pub fn write_if_v6(ifname: &str, key: &str, value: &str) -> Result<(), SysctlError> {
    let path = PathBuf::from("/proc/sys/net/ipv6/conf")
        .join(ifname)
        .join(key);
    std::fs::write(&path, value).map_err(|source| SysctlError { path, source })
}
