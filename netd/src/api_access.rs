//! Who may use netd's API socket, and for what.
//!
//! The socket file is root's (0600), or root's and a read group's (0660)
//! with `--api-read-group`; the kernel refuses everyone else at connect.
//! netd checks again on every request, from the credentials the kernel
//! recorded when the client connected (SO_PEERCRED, and its supplementary
//! groups with SO_PEERGROUPS): root (or netd's own user) may do
//! everything; a member of the read group only the read-only views (GET
//! and HEAD; secrets are redacted for everyone); anyone else nothing.
//! Refusals are 403 with code 109 and say what would be needed.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use furrow_api::error::code;
use furrow_api::ApiError;
use tokio::net::UnixListener;

use crate::api::Failure;

/// The credentials of an API connection's other end, as the kernel
/// recorded them at connect time.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub pid: Option<i32>,
    /// Supplementary groups.
    pub groups: Arc<[u32]>,
}

impl Connected<IncomingStream<'_, UnixListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        Peer::of(stream.io())
    }
}

impl Peer {
    pub fn of(s: &tokio::net::UnixStream) -> Peer {
        let cred = s.peer_cred().ok();
        let pid = cred.as_ref().and_then(|c| c.pid());
        let groups = peer_groups(s.as_raw_fd())
            .or_else(|| pid.and_then(proc_groups))
            .unwrap_or_default();
        Peer {
            uid: cred.as_ref().map(|c| c.uid()),
            gid: cred.as_ref().map(|c| c.gid()),
            pid,
            groups: groups.into(),
        }
    }
}

/// SO_PEERGROUPS (Linux 4.13+): the peer's supplementary groups at
/// connect time. Its number is the generic one on the architectures
/// listed; elsewhere /proc is read instead.
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "riscv64",
    target_arch = "powerpc64",
    target_arch = "s390x",
    target_arch = "loongarch64"
))]
fn peer_groups(fd: i32) -> Option<Vec<u32>> {
    const SO_PEERGROUPS: libc::c_int = 59;
    let mut n: usize = 64;
    for _ in 0..4 {
        let mut buf = vec![0 as libc::gid_t; n];
        let mut len = (n * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: buf is valid for len bytes; the kernel writes at most len
        // bytes and updates len.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                SO_PEERGROUPS,
                buf.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if r == 0 {
            buf.truncate(len as usize / std::mem::size_of::<libc::gid_t>());
            return Some(buf);
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE) {
            return None;
        }
        n = (len as usize / std::mem::size_of::<libc::gid_t>()).max(n * 2);
    }
    None
}

#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "riscv64",
    target_arch = "powerpc64",
    target_arch = "s390x",
    target_arch = "loongarch64"
)))]
fn peer_groups(_fd: i32) -> Option<Vec<u32>> {
    None
}

/// The `Groups:` line of /proc/<pid>/status.
fn proc_groups(pid: i32) -> Option<Vec<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_groups_line(&status)
}

fn parse_groups_line(status: &str) -> Option<Vec<u32>> {
    let line = status.lines().find_map(|l| l.strip_prefix("Groups:"))?;
    Some(
        line.split_whitespace()
            .filter_map(|g| g.parse().ok())
            .collect(),
    )
}

/// What a peer may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything (root, or netd's own user).
    Admin,
    /// The read-only views (a member of the read group).
    Reader,
    Refused,
}

/// The API's access policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// --api-read-group.
    pub read_group: Option<u32>,
    /// netd's effective uid: it may use its own API.
    pub owner: u32,
}

impl Access {
    pub fn new(read_group: Option<u32>) -> Self {
        Access {
            read_group,
            owner: nix::unistd::geteuid().as_raw(),
        }
    }

    pub fn role(&self, p: &Peer) -> Role {
        let Some(uid) = p.uid else {
            return Role::Refused;
        };
        if uid == 0 || uid == self.owner {
            return Role::Admin;
        }
        match self.read_group {
            Some(g) if p.gid == Some(g) || p.groups.contains(&g) => Role::Reader,
            _ => Role::Refused,
        }
    }

    /// Whether `method` is a read-only view.
    pub fn reads(method: &Method) -> bool {
        method == Method::GET || method == Method::HEAD
    }

    /// None if `peer` may send `method path`, else why not.
    pub fn check(&self, peer: Option<&Peer>, method: &Method, path: &str) -> Option<ApiError> {
        let who = match peer.and_then(|p| p.uid) {
            Some(uid) => format!("uid {uid}"),
            None => "a client whose credentials are unknown".to_string(),
        };
        let role = peer.map_or(Role::Refused, |p| self.role(p));
        match (role, self.read_group) {
            (Role::Admin, _) => None,
            (Role::Reader, _) if Self::reads(method) => None,
            (Role::Reader, Some(g)) => Some(ApiError::new(
                code::PERMISSION_DENIED,
                format!(
                    "permission denied: {method} {path} changes netd's state and needs root; {who} may only read (a member of group {g}, netd's --api-read-group)"
                ),
            )),
            (_, Some(g)) => Some(ApiError::new(
                code::PERMISSION_DENIED,
                format!(
                    "permission denied: {who} is neither root nor a member of group {g} (netd's --api-read-group)"
                ),
            )),
            (_, None) => Some(ApiError::new(
                code::PERMISSION_DENIED,
                format!(
                    "permission denied: netd's API is root's only and {who} is not root (netd --api-read-group GROUP grants a group the read-only views)"
                ),
            )),
        }
    }
}

/// The middleware in front of every route.
pub async fn authorize(State(access): State<Access>, req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<ConnectInfo<Peer>>().map(|c| &c.0);
    if let Some(e) = access.check(peer, req.method(), req.uri().path()) {
        tracing::warn!(
            uid = peer.and_then(|p| p.uid),
            pid = peer.and_then(|p| p.pid),
            method = %req.method(),
            path = req.uri().path(),
            "API request refused"
        );
        return Failure(e).into_response();
    }
    next.run(req).await
}

/// Binds the API socket: root's only (0600), or root's and the read
/// group's (0660) with `read_group`. It is bound under a temporary name,
/// given its owner and mode, then moved into place, so it is never
/// reachable with looser permissions. The directory: one netd creates, or
/// its default one (`dir_owned`), is made 0700 (0710 with the group, so
/// its members can reach the socket but not list the directory); any
/// other is left as it is. A stale socket file of a previous run is
/// replaced, one a live netd still serves is not.
pub fn bind(
    path: &Path,
    dir_owned: bool,
    read_group: Option<u32>,
) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let group = read_group.map(nix::unistd::Gid::from_raw);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let dir_mode = if read_group.is_some() { 0o710 } else { 0o700 };
    let created = !dir.exists();
    if created {
        std::fs::create_dir_all(&dir)?;
    }
    if created || dir_owned {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(dir_mode))?;
        nix::unistd::chown(
            &dir,
            None,
            Some(group.unwrap_or(nix::unistd::Gid::from_raw(0))),
        )?;
    } else if let Some(g) = read_group {
        let m = std::fs::metadata(&dir)?;
        let searchable = m.mode() & 0o001 != 0 || (m.gid() == g && m.mode() & 0o010 != 0);
        if !searchable {
            tracing::warn!(
                dir = %dir.display(),
                group = g,
                "the socket's directory is not searchable by the --api-read-group: its members cannot reach the socket"
            );
        }
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "another netd is serving {}; stop it or use --instance/--socket",
                path.display()
            );
        }
        std::fs::remove_file(path)?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "netd.sock".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let l = std::os::unix::net::UnixListener::bind(&tmp)?;
    let placed = (|| -> anyhow::Result<()> {
        std::fs::set_permissions(
            &tmp,
            std::fs::Permissions::from_mode(if group.is_some() { 0o660 } else { 0o600 }),
        )?;
        nix::unistd::chown(
            &tmp,
            None,
            Some(group.unwrap_or(nix::unistd::Gid::from_raw(0))),
        )?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    })();
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    l.set_nonblocking(true)?;
    Ok(tokio::net::UnixListener::from_std(l)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> Peer {
        Peer {
            uid: Some(uid),
            gid: Some(gid),
            pid: Some(1),
            groups: groups.into(),
        }
    }

    #[test]
    fn root_writes_the_group_reads_others_nothing() {
        let a = Access {
            read_group: Some(500),
            owner: 0,
        };
        let (get, put) = (Method::GET, Method::PUT);
        assert!(a
            .check(Some(&peer(0, 0, &[])), &put, "/v1/resources/x")
            .is_none());
        assert!(a
            .check(Some(&peer(1000, 500, &[])), &get, "/v1/status")
            .is_none());
        assert!(a
            .check(Some(&peer(1000, 100, &[7, 500])), &get, "/v1/ports")
            .is_none());
        let e = a
            .check(Some(&peer(1000, 500, &[])), &put, "/v1/resources/x")
            .unwrap();
        assert_eq!(e.code, code::PERMISSION_DENIED);
        assert_eq!(e.http_status(), 403);
        assert!(e.msg.contains("needs root"), "{}", e.msg);
        let e = a
            .check(Some(&peer(1001, 100, &[7])), &get, "/v1/status")
            .unwrap();
        assert!(e.msg.contains("neither root nor a member"), "{}", e.msg);
        assert!(a.check(None, &get, "/v1/status").is_some());
        let root_only = Access {
            read_group: None,
            owner: 0,
        };
        let e = root_only
            .check(Some(&peer(1000, 500, &[500])), &get, "/v1/status")
            .unwrap();
        assert!(e.msg.contains("root's only"), "{}", e.msg);
    }

    #[test]
    fn socket_is_roots_and_only_a_directory_netd_makes_is_tightened() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let base = std::env::temp_dir().join(format!(
            "furrow-api-access-{}-{}",
            std::process::id(),
            crate::util::now_millis()
        ));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // A directory netd creates: 0700, the socket 0600.
            let made = base.join("made/netd.sock");
            let _l = bind(&made, false, None).unwrap();
            assert_eq!(mode(made.parent().unwrap()), 0o700);
            assert_eq!(mode(&made), 0o600);
            // An existing one (say /tmp): left as it is.
            let shared = base.join("shared");
            std::fs::create_dir_all(&shared).unwrap();
            std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
            let sock = shared.join("netd.sock");
            let _l2 = bind(&sock, false, None).unwrap();
            assert_eq!(mode(&shared), 0o755);
            assert_eq!(mode(&sock), 0o600);
            // ... unless it is netd's default directory; with a read group
            // the socket is 0660 and the directory only searchable (0710).
            let owned = base.join("owned/netd.sock");
            std::fs::create_dir_all(owned.parent().unwrap()).unwrap();
            let _l3 = bind(&owned, true, Some(0)).unwrap();
            assert_eq!(mode(owned.parent().unwrap()), 0o710);
            assert_eq!(mode(&owned), 0o660);
            // A live socket is not taken over.
            assert!(bind(&owned, true, None).is_err());
        });
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn proc_groups_line() {
        let s = "Name:\tx\nGroups:\t4 24 27 \nNSpid:\t1\n";
        assert_eq!(parse_groups_line(s).unwrap(), [4, 24, 27]);
        assert_eq!(parse_groups_line("Groups:\n").unwrap(), Vec::<u32>::new());
        assert!(parse_groups_line("Name: x\n").is_none());
    }
}
