//! The port lifecycle both drivers share: the veth pair into the pod, the
//! fast freeing of CNI_IFNAME on DEL, the background removal of the link,
//! and DEL's cleanup after a crash. Kind-specific work (addresses, NAT,
//! the switch) stays in each driver.

use std::fs::File;
use std::future::Future;

use furrow_api::error::code;
use furrow_api::{ApiError, MacAddr};

use crate::locks::KeyedGuard;
use crate::netlink::{Link, Netlink, NetlinkError, VethEnd};
use crate::node::Node;
use crate::ports;

pub(crate) fn kernel(e: NetlinkError) -> ApiError {
    ApiError::new(code::INTERNAL, e.to_string())
}

/// Opens CNI_NETNS, checking it is a network namespace (code 3 if not).
pub(crate) fn open_netns(path: &str) -> Result<File, ApiError> {
    let f = File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ApiError::new(
                code::UNKNOWN_CONTAINER,
                format!("network namespace {path} does not exist"),
            )
        } else {
            ApiError::new(
                code::UNKNOWN_CONTAINER,
                format!("network namespace {path}: {e}"),
            )
        }
    })?;
    // Namespace files live on nsfs; anything else would make the kernel
    // fail later with a far less helpful error.
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    match nix::sys::statfs::fstatfs(&f) {
        Ok(st) if st.filesystem_type().0 == NSFS_MAGIC => {
            // NS_GET_NSTYPE: an nsfs file may be another kind of namespace.
            const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
            // SAFETY: the ioctl takes no argument and only reads the fd.
            let t = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), NS_GET_NSTYPE) };
            if t == libc::CLONE_NEWNET {
                Ok(f)
            } else {
                Err(ApiError::new(
                    code::UNKNOWN_CONTAINER,
                    format!("{path} is a namespace, but not a network namespace"),
                ))
            }
        }
        Ok(_) => Err(ApiError::new(
            code::UNKNOWN_CONTAINER,
            format!("{path} is not a network namespace (CNI_NETNS must name one, e.g. /proc/<pid>/ns/net)"),
        )),
        Err(e) => Err(ApiError::new(code::UNKNOWN_CONTAINER, format!("network namespace {path}: {e}"))),
    }
}

/// Deletes a link of the node's namespace on a blocking thread with its
/// own socket (see [`crate::netlink::delete_link_blocking`]).
pub(crate) async fn delete_host_link(index: u32) -> Result<(), NetlinkError> {
    tokio::task::spawn_blocking(move || crate::netlink::delete_link_blocking(index))
        .await
        .map_err(|e| NetlinkError::Other {
            op: format!("deleting link #{index}"),
            msg: e.to_string(),
        })?
}

/// A port's veth pair to build.
pub(crate) struct PortVeth<'a> {
    /// The port's store key (written into the host link's alias).
    pub key: &'a str,
    pub host_ifname: &'a str,
    pub ifname: &'a str,
    pub mtu: u32,
    pub mac: Option<MacAddr>,
}

/// Creates the veth pair of a port in one request — the host side in the
/// node, the peer directly inside the pod's namespace under CNI_IFNAME —
/// and returns the host side. The caller holds the port's lock and no
/// record existed before its claim, so a host link of this name is debris
/// of a crash and is removed first.
pub(crate) async fn create_port_veth(
    node: &Node,
    p: &PortVeth<'_>,
    netns: &File,
    netns_path: &str,
) -> Result<Link, ApiError> {
    let host = &node.host;
    if let Some(l) = host.link_by_name(p.host_ifname).await.map_err(kernel)? {
        tracing::warn!(link = %p.host_ifname, "removing leftover host link before ADD");
        delete_host_link(l.index).await.map_err(kernel)?;
    }
    let alias = ports::link_alias(&node.cfg.instance, p.key);
    host.create_veth_into(
        &VethEnd {
            name: p.host_ifname.to_string(),
            mtu: p.mtu,
            mac: None,
        },
        &VethEnd {
            name: p.ifname.to_string(),
            mtu: p.mtu,
            mac: p.mac,
        },
        netns,
        &alias,
    )
    .await
    .map_err(|e| {
        if e.is_exists() {
            ApiError::new(
                code::IFNAME_EXISTS,
                format!(
                    "interface {:?} already exists in network namespace {netns_path}",
                    p.ifname
                ),
            )
            .with_details("choose another CNI_IFNAME or remove the existing interface")
        } else {
            kernel(e)
        }
    })?;
    host.link_by_name(p.host_ifname)
        .await
        .map_err(kernel)?
        .ok_or_else(|| {
            ApiError::internal(format!(
                "host link {} vanished right after creation",
                p.host_ifname
            ))
        })
}

/// Frees CNI_IFNAME inside the pod at once (a runtime may ADD it again
/// right after DEL) by renaming our end of the pair to its tombstone:
/// removing the pair takes the kernel a grace period, renaming does not.
/// Only our own end is touched (matched by MAC), never an interface
/// someone created under that name since.
pub(crate) async fn free_pod_ifname(
    netns: Option<&str>,
    ifname: &str,
    mac: Option<MacAddr>,
    host_ifname: &str,
) -> Result<(), String> {
    let Some(path) = netns.filter(|p| std::path::Path::new(p).exists()) else {
        return Ok(());
    };
    let Ok(ns) = Netlink::in_netns(std::path::Path::new(path)).await else {
        return Ok(());
    };
    let Ok(Some(pl)) = ns.link_by_name(ifname).await else {
        return Ok(());
    };
    if mac.is_none() || pl.mac != mac {
        return Ok(());
    }
    let tomb = ports::tombstone_ifname(host_ifname);
    let r = async {
        ns.set_down(pl.index).await?;
        ns.rename(pl.index, &tomb).await
    }
    .await;
    match r {
        Err(e) if !e.is_not_found() => Err(format!("freeing {ifname} in {path}: {e}")),
        _ => Ok(()),
    }
}

/// Finishes removing a port in the background while keeping its lock:
/// `attempt` (remove the link, then forget the record) is retried three
/// times with backoff; a port that still cannot go stays Deleting for the
/// next DEL, GC or start.
pub(crate) fn spawn_removal<F, Fut>(node: &Node, guard: KeyedGuard, key: String, attempt: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), ApiError>> + Send,
{
    node.background.spawn(async move {
        let _lock = guard;
        let mut delay = std::time::Duration::from_millis(100);
        for n in 1..=3 {
            match attempt().await {
                Ok(()) => return,
                Err(e) => tracing::warn!(port = %key, attempt = n, error = %e.msg, "finishing a deleted port's removal"),
            }
            tokio::time::sleep(delay).await;
            delay *= 4;
        }
        tracing::error!(port = %key, "could not finish removing the port; the next DEL, GC or netd start retries");
    });
}

/// DEL of an attachment netd has no record of: still clear a link of ours
/// for it, should a crash have left one.
pub(crate) async fn remove_leftover_link(
    node: &Node,
    key: &str,
    network_name: &str,
    container_id: &str,
    ifname: &str,
) -> Result<(), ApiError> {
    let name = ports::host_ifname(network_name, container_id, ifname);
    let alias = ports::link_alias(&node.cfg.instance, key);
    if let Some(l) = node.host.link_by_name(&name).await.map_err(kernel)? {
        if l.alias.as_deref() == Some(alias.as_str()) {
            delete_host_link(l.index).await.map_err(kernel)?;
        }
    }
    Ok(())
}
