//! Kernel access over rtnetlink: links, addresses and routes, in the
//! node's namespace or inside a container's.
//!
//! A netlink socket belongs to the network namespace that was current for
//! the thread that created it, for its whole life. To reach a container's
//! namespace we create the socket on a short-lived thread that has entered
//! it, then drive that socket from the async runtime like any other: no
//! thread of netd's pool ever changes namespace.

pub mod l2;
pub mod overlay;
pub mod sysctl;
pub mod vip;

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use furrow_api::MacAddr;
use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressFlags};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope,
};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder};

/// Routes netd installs carry this protocol number so they can be told
/// apart from everyone else's (iproute2 shows it as `proto 70`).
pub const ROUTE_PROTOCOL: u8 = 70;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("{op}: {msg} (errno {errno})")]
    Kernel { op: String, errno: i32, msg: String },
    #[error("{op}: {msg}")]
    Other { op: String, msg: String },
    #[error("network namespace {path}: {msg}")]
    Netns {
        path: PathBuf,
        msg: String,
        missing: bool,
    },
}

impl NetlinkError {
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::ENODEV) | Some(libc::ENOENT) | Some(libc::ESRCH)
        )
    }
}

pub(crate) fn kernel_err(op: impl Into<String>, e: rtnetlink::Error) -> NetlinkError {
    let op = op.into();
    match e {
        rtnetlink::Error::NetlinkError(m) => {
            let errno = -m.raw_code();
            NetlinkError::Kernel {
                op,
                errno,
                msg: std::io::Error::from_raw_os_error(errno).to_string(),
            }
        }
        other => NetlinkError::Other {
            op,
            msg: other.to_string(),
        },
    }
}

/// Deletes a link on a socket of its own, blocking the calling thread.
///
/// The kernel runs RTM_DELLINK inside the sender's sendmsg() and, for a
/// veth pair, waits there for an RCU barrier (tens of milliseconds). On the
/// shared connection that would stall every request queued behind it and
/// an async worker thread with it; run this on a blocking thread instead.
/// A link that is already gone is not an error.
pub fn delete_link_blocking(index: u32) -> Result<(), NetlinkError> {
    use netlink_packet_core::{
        NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST,
    };
    use netlink_packet_route::RouteNetlinkMessage;
    let op = || format!("deleting link #{index}");
    let io = |e: std::io::Error| NetlinkError::Kernel {
        op: op(),
        errno: e.raw_os_error().unwrap_or(libc::EIO),
        msg: e.to_string(),
    };
    let mut socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE).map_err(io)?;
    socket.bind_auto().map_err(io)?;
    socket
        .connect(&netlink_sys::SocketAddr::new(0, 0))
        .map_err(io)?;
    let mut link = LinkMessage::default();
    link.header.index = index;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK;
    header.sequence_number = 1;
    let mut msg = NetlinkMessage::new(
        header,
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)),
    );
    msg.finalize();
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut buf);
    socket.send(&buf, 0).map_err(io)?;
    let mut rbuf = vec![0u8; 8192];
    loop {
        let n = socket.recv(&mut &mut rbuf[..], 0).map_err(io)?;
        let reply =
            NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rbuf[..n]).map_err(|e| {
                NetlinkError::Other {
                    op: op(),
                    msg: format!("undecodable reply: {e}"),
                }
            })?;
        if reply.header.sequence_number != 1 {
            continue;
        }
        return match reply.payload {
            NetlinkPayload::Error(e) => match e.code {
                None => Ok(()),
                Some(c) => {
                    let errno = -c.get();
                    if errno == libc::ENODEV || errno == libc::ENOENT {
                        Ok(())
                    } else {
                        Err(NetlinkError::Kernel {
                            op: op(),
                            errno,
                            msg: std::io::Error::from_raw_os_error(errno).to_string(),
                        })
                    }
                }
            },
            _ => Ok(()),
        };
    }
}

/// What netd needs to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<MacAddr>,
    pub mtu: u32,
    pub up: bool,
    pub kind: Option<String>,
    pub alias: Option<String>,
    /// The bridge or bond this link is a port of.
    pub controller: Option<u32>,
    /// Physical carrier (IFLA_CARRIER).
    pub carrier: bool,
    /// RFC 2863 operational state is "up": the kernel has also attached
    /// the link's queueing discipline, so frames sent now are not lost.
    pub oper_up: bool,
}

impl Link {
    fn from_message(m: &LinkMessage) -> Link {
        let mut l = Link {
            index: m.header.index,
            name: String::new(),
            mac: None,
            mtu: 0,
            up: m.header.flags.contains(LinkFlags::Up),
            kind: None,
            alias: None,
            controller: None,
            carrier: false,
            oper_up: false,
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => l.name = n.clone(),
                LinkAttribute::Mtu(v) => l.mtu = *v,
                LinkAttribute::Address(b) => l.mac = MacAddr::from_slice(b),
                LinkAttribute::IfAlias(s) => l.alias = Some(s.clone()),
                LinkAttribute::Controller(c) => l.controller = Some(*c),
                LinkAttribute::Carrier(c) => l.carrier = *c != 0,
                LinkAttribute::OperState(st) => {
                    l.oper_up = *st == netlink_packet_route::link::State::Up
                }
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let NlLinkInfo::Kind(k) = i {
                            l.kind = Some(k.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        l
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteV4 {
    pub dst: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    pub table: u32,
    pub protocol: u8,
    pub scope_link: bool,
}

/// One end of a veth pair to create.
#[derive(Debug, Clone)]
pub struct VethEnd {
    pub name: String,
    pub mtu: u32,
    pub mac: Option<MacAddr>,
}

/// A netlink connection bound to one network namespace.
#[derive(Clone)]
pub struct Netlink {
    pub(crate) handle: Handle,
}

/// A dump the kernel interrupted because the table changed meanwhile
/// (NLM_F_DUMP_INTR, reported as EBUSY) is simply taken again, as iproute2
/// would; a few attempts, since a busy node changes links constantly.
async fn redo_interrupted<T, F, Fut>(mut dump: F) -> Result<T, NetlinkError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, NetlinkError>>,
{
    let mut tries = 0;
    loop {
        match dump().await {
            Err(e) if e.errno() == Some(libc::EBUSY) && tries < 8 => tries += 1,
            other => return other,
        }
    }
}

impl Netlink {
    pub async fn links(&self) -> Result<Vec<Link>, NetlinkError> {
        redo_interrupted(|| self.links_once()).await
    }

    pub async fn addresses_v4(&self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>, NetlinkError> {
        redo_interrupted(|| self.addresses_v4_once(index)).await
    }

    /// IPv4 routes of the main table.
    pub async fn routes_v4(&self) -> Result<Vec<RouteV4>, NetlinkError> {
        redo_interrupted(|| self.routes_v4_once()).await
    }

    /// A connection in the namespace of the calling thread (netd's own:
    /// the node's).
    pub fn current() -> Result<Self, NetlinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| NetlinkError::Other {
            op: "opening rtnetlink socket".into(),
            msg: e.to_string(),
        })?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// A connection inside the network namespace at `path` (a CNI_NETNS
    /// path such as /run/netns/x or /proc/<pid>/ns/net).
    pub async fn in_netns(path: &Path) -> Result<Self, NetlinkError> {
        let netns_err = |msg: String, missing: bool| NetlinkError::Netns {
            path: path.to_path_buf(),
            msg,
            missing,
        };
        let file = File::open(path).map_err(|e| {
            let missing = e.kind() == std::io::ErrorKind::NotFound;
            netns_err(
                if missing {
                    "does not exist".to_string()
                } else {
                    format!("cannot open: {e}")
                },
                missing,
            )
        })?;
        let rt = tokio::runtime::Handle::current();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("netns-socket".into())
            .spawn(move || {
                // This thread enters the namespace and then exits: its
                // changed namespace can never leak into other work.
                let res = nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("is not a network namespace ({e})"))
                    .and_then(|_| {
                        let _guard = rt.enter();
                        rtnetlink::new_connection()
                            .map_err(|e| format!("opening rtnetlink socket inside: {e}"))
                    });
                let _ = tx.send(res);
            })
            .map_err(|e| netns_err(format!("spawning thread: {e}"), false))?;
        let (conn, handle, _) = rx
            .await
            .map_err(|_| netns_err("namespace thread died".into(), false))?
            .map_err(|m| netns_err(m, false))?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>, NetlinkError> {
        let mut s = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match s.try_next().await {
            Ok(Some(m)) => Ok(Some(Link::from_message(&m))),
            Ok(None) => Ok(None),
            Err(e) => {
                let e = kernel_err(format!("looking up link {name}"), e);
                if e.is_not_found() {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>, NetlinkError> {
        let mut s = self.handle.link().get().match_index(index).execute();
        match s.try_next().await {
            Ok(Some(m)) => Ok(Some(Link::from_message(&m))),
            Ok(None) => Ok(None),
            Err(e) => {
                let e = kernel_err(format!("looking up link #{index}"), e);
                if e.is_not_found() {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn links_once(&self) -> Result<Vec<Link>, NetlinkError> {
        let mut s = self.handle.link().get().execute();
        let mut out = Vec::new();
        while let Some(m) = s
            .try_next()
            .await
            .map_err(|e| kernel_err("listing links", e))?
        {
            out.push(Link::from_message(&m));
        }
        Ok(out)
    }

    /// Creates a veth pair in one request: `host` here, `peer` directly
    /// inside the namespace `peer_netns` under its final name. Done in one
    /// step so a name clash inside the container (EEXIST) fails before
    /// anything exists, and no half-moved link is ever left behind.
    pub async fn create_veth_into(
        &self,
        host: &VethEnd,
        peer: &VethEnd,
        peer_netns: &File,
        alias: &str,
    ) -> Result<(), NetlinkError> {
        let mut peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.name.clone())
            .mtu(peer.mtu);
        if let Some(mac) = peer.mac {
            peer_msg = peer_msg.address(mac.0.to_vec());
        }
        let mut peer_msg = peer_msg.build();
        peer_msg
            .attributes
            .push(LinkAttribute::NetNsFd(peer_netns.as_raw_fd()));
        let mut msg = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth)
            .name(host.name.clone())
            .mtu(host.mtu)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)));
        if let Some(mac) = host.mac {
            msg = msg.address(mac.0.to_vec());
        }
        let msg = msg.build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|e| kernel_err(format!("creating veth {} <-> {}", host.name, peer.name), e))?;
        if !alias.is_empty() {
            if let Some(l) = self.link_by_name(&host.name).await? {
                self.set_alias(l.index, alias).await?;
            }
        }
        Ok(())
    }

    pub async fn set_alias(&self, index: u32, alias: &str) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index)
            .alias(alias.to_string())
            .build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| kernel_err(format!("setting alias of link #{index}"), e))
    }

    pub async fn set_up(&self, index: u32) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| kernel_err(format!("setting link #{index} up"), e))
    }

    /// Renames a link (it must be down).
    pub async fn rename(&self, index: u32, name: &str) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index)
            .name(name.to_string())
            .build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| kernel_err(format!("renaming link #{index} to {name}"), e))
    }

    pub async fn set_down(&self, index: u32) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index).down().build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| kernel_err(format!("setting link #{index} down"), e))
    }

    /// Deletes a link; a link that is already gone is not an error.
    pub async fn delete_link(&self, index: u32) -> Result<(), NetlinkError> {
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = kernel_err(format!("deleting link #{index}"), e);
                if e.is_not_found() {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Adds an IPv4 address; an identical one already present is fine.
    /// `noprefixroute` stops the kernel adding the subnet route, so all
    /// traffic goes through the gateway route we install instead.
    pub async fn add_address_v4(
        &self,
        index: u32,
        ip: Ipv4Addr,
        prefix_len: u8,
        noprefixroute: bool,
    ) -> Result<(), NetlinkError> {
        let mut req = self.handle.address().add(index, ip.into(), prefix_len);
        if noprefixroute {
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Noprefixroute));
        }
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = kernel_err(format!("adding {ip}/{prefix_len} to link #{index}"), e);
                if e.is_exists() {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Waits (polling, up to `timeout`) until link `index` is
    /// operationally up. A link just set up only becomes so when the
    /// kernel's link watcher gets to it, and until then frames sent on it
    /// are dropped. Returns whether it came up.
    pub async fn wait_oper_up(&self, index: u32, timeout: std::time::Duration) -> bool {
        let end = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(l)) = self.link_by_index(index).await {
                if l.oper_up {
                    return true;
                }
            }
            if tokio::time::Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Removes an IPv4 address; one already gone is fine.
    pub async fn del_address_v4(
        &self,
        index: u32,
        ip: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), NetlinkError> {
        let mut s = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut found = Vec::new();
        while let Some(m) = s
            .try_next()
            .await
            .map_err(|e| kernel_err(format!("listing addresses of link #{index}"), e))?
        {
            let ours = m.header.family == AddressFamily::Inet
                && m.header.index == index
                && m.header.prefix_len == prefix_len
                && m.attributes.iter().any(
                    |a| matches!(a, AddressAttribute::Local(std::net::IpAddr::V4(x)) if *x == ip),
                );
            if ours {
                found.push(m);
            }
        }
        for m in found {
            if let Err(e) = self.handle.address().del(m).execute().await {
                let e = kernel_err(format!("removing {ip}/{prefix_len} from link #{index}"), e);
                if !e.is_not_found() && e.errno() != Some(libc::EADDRNOTAVAIL) {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// IPv4 addresses of a link with their prefix lengths.
    async fn addresses_v4_once(&self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>, NetlinkError> {
        let mut s = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut out = Vec::new();
        while let Some(m) = s
            .try_next()
            .await
            .map_err(|e| kernel_err(format!("listing addresses of link #{index}"), e))?
        {
            if m.header.family != AddressFamily::Inet || m.header.index != index {
                continue;
            }
            for a in &m.attributes {
                if let AddressAttribute::Local(std::net::IpAddr::V4(ip)) = a {
                    out.push((*ip, m.header.prefix_len));
                }
            }
        }
        Ok(out)
    }

    /// Adds an IPv4 route in the main table; an identical one already
    /// present is fine.
    pub async fn add_route_v4(
        &self,
        dst: Ipv4Addr,
        prefix_len: u8,
        gateway: Option<Ipv4Addr>,
        oif: Option<u32>,
        scope_link: bool,
    ) -> Result<(), NetlinkError> {
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst, prefix_len)
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL));
        if let Some(gw) = gateway {
            b = b.gateway(gw);
        }
        if let Some(i) = oif {
            b = b.output_interface(i);
        }
        if scope_link {
            b = b.scope(RouteScope::Link);
        }
        match self.handle.route().add(b.build()).execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = kernel_err(format!("adding route {dst}/{prefix_len}"), e);
                if e.is_exists() {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// IPv4 routes of the main table.
    async fn routes_v4_once(&self) -> Result<Vec<RouteV4>, NetlinkError> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let mut s = self.handle.route().get(msg).execute();
        let mut out = Vec::new();
        while let Some(m) = s
            .try_next()
            .await
            .map_err(|e| kernel_err("listing routes", e))?
        {
            if let Some(r) = route_v4(&m) {
                if r.table == 254 {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }
}

fn route_v4(m: &RouteMessage) -> Option<RouteV4> {
    if m.header.address_family != AddressFamily::Inet {
        return None;
    }
    let mut r = RouteV4 {
        dst: Ipv4Addr::UNSPECIFIED,
        prefix_len: m.header.destination_prefix_length,
        gateway: None,
        oif: None,
        table: m.header.table as u32,
        protocol: m.header.protocol.into(),
        scope_link: m.header.scope == RouteScope::Link,
    };
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => r.dst = *ip,
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => r.gateway = Some(*ip),
            RouteAttribute::Oif(i) => r.oif = Some(*i),
            RouteAttribute::Table(t) => r.table = *t,
            _ => {}
        }
    }
    Some(r)
}
