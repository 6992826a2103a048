//! The management network's cross-node plumbing over rtnetlink: the VXLAN
//! device, its forwarding entries (remote VTEP MAC → remote node address)
//! and neighbour entries (remote gateway → remote VTEP MAC), and routes to
//! other nodes' subnets — the same three things flannel's vxlan backend
//! keeps, so `ip`/`bridge` show them the familiar way.

use std::net::Ipv4Addr;

use furrow_api::MacAddr;
use futures::TryStreamExt;
use netlink_packet_route::link::{InfoData, InfoVxlan, LinkAttribute, LinkInfo as NlLinkInfo};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteFlags, RouteProtocol, RouteScope};
use netlink_packet_route::AddressFamily;
use rtnetlink::{LinkVxlan, RouteMessageBuilder};

use super::{kernel_err, Netlink, NetlinkError, ROUTE_PROTOCOL};

/// A VXLAN device as netd wants it, or as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanDevice {
    pub name: String,
    pub vni: u32,
    pub local: Ipv4Addr,
    /// The underlay link the device sends through.
    pub underlay: u32,
    pub port: u16,
    pub mac: MacAddr,
    pub mtu: u32,
}

/// A VXLAN device found in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundVxlan {
    pub index: u32,
    pub up: bool,
    pub dev: VxlanDevice,
    pub learning: bool,
}

/// One forwarding entry of a VXLAN device: frames to `mac` go to `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct VxlanFdb {
    pub mac: MacAddr,
    pub dst: Ipv4Addr,
}

/// One IPv4 neighbour entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    pub ip: Ipv4Addr,
    pub mac: Option<MacAddr>,
    pub permanent: bool,
}

impl Netlink {
    /// The VXLAN device named `name`, if one exists (None also when a
    /// link of that name is something else: the caller decides).
    pub async fn vxlan_by_name(&self, name: &str) -> Result<Option<FoundVxlan>, NetlinkError> {
        let Some(link) = self.link_by_name(name).await? else {
            return Ok(None);
        };
        let mut s = self.handle.link().get().match_index(link.index).execute();
        let Some(m) = s
            .try_next()
            .await
            .map_err(|e| kernel_err(format!("reading link {name}"), e))?
        else {
            return Ok(None);
        };
        let mut dev = VxlanDevice {
            name: name.to_string(),
            vni: 0,
            local: Ipv4Addr::UNSPECIFIED,
            underlay: 0,
            port: 0,
            mac: link.mac.unwrap_or(MacAddr([0; 6])),
            mtu: link.mtu,
        };
        let mut learning = true;
        let mut is_vxlan = false;
        for a in &m.attributes {
            let LinkAttribute::LinkInfo(infos) = a else {
                continue;
            };
            for i in infos {
                if let NlLinkInfo::Data(InfoData::Vxlan(attrs)) = i {
                    is_vxlan = true;
                    for v in attrs {
                        match v {
                            InfoVxlan::Id(id) => dev.vni = *id,
                            InfoVxlan::Local(ip) => dev.local = *ip,
                            InfoVxlan::Link(l) => dev.underlay = *l,
                            InfoVxlan::Port(p) => dev.port = *p,
                            InfoVxlan::Learning(l) => learning = *l,
                            _ => {}
                        }
                    }
                }
            }
        }
        if !is_vxlan {
            return Ok(None);
        }
        Ok(Some(FoundVxlan {
            index: link.index,
            up: link.up,
            dev,
            learning,
        }))
    }

    /// Creates the device (down); returns its index. No learning: every
    /// entry comes from the store, so a forged frame cannot teach the
    /// device where a MAC lives.
    pub async fn create_vxlan(&self, d: &VxlanDevice, alias: &str) -> Result<u32, NetlinkError> {
        let msg = LinkVxlan::new(&d.name, d.vni)
            .dev(d.underlay)
            .local(d.local)
            .port(d.port)
            .learning(false)
            .mtu(d.mtu)
            .address(d.mac.0.to_vec())
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|e| kernel_err(format!("creating VXLAN device {}", d.name), e))?;
        let index = self
            .link_by_name(&d.name)
            .await?
            .map(|l| l.index)
            .ok_or_else(|| NetlinkError::Other {
                op: format!("creating VXLAN device {}", d.name),
                msg: "link vanished right after creation".into(),
            })?;
        if !alias.is_empty() {
            self.set_alias(index, alias).await?;
        }
        Ok(index)
    }

    /// The device's forwarding entries that carry a remote address.
    pub async fn vxlan_fdb(&self, index: u32) -> Result<Vec<VxlanFdb>, NetlinkError> {
        super::redo_interrupted(|| self.vxlan_fdb_once(index)).await
    }

    async fn vxlan_fdb_once(&self, index: u32) -> Result<Vec<VxlanFdb>, NetlinkError> {
        let mut req = self.handle.neighbours().get();
        req = req.set_address_family(AddressFamily::Bridge);
        let mut s = req.execute();
        let mut out = Vec::new();
        while let Some(m) = s
            .try_next()
            .await
            .map_err(|e| kernel_err("listing FDB entries", e))?
        {
            if m.header.ifindex != index {
                continue;
            }
            let mut mac = None;
            let mut dst = None;
            for a in &m.attributes {
                match a {
                    NeighbourAttribute::LinkLayerAddress(b) => mac = MacAddr::from_slice(b),
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => dst = Some(*ip),
                    _ => {}
                }
            }
            if let (Some(mac), Some(dst)) = (mac, dst) {
                out.push(VxlanFdb { mac, dst });
            }
        }
        Ok(out)
    }

    /// `bridge fdb replace <mac> dev <vxlan> dst <ip> self permanent`.
    pub async fn vxlan_fdb_put(&self, index: u32, e: VxlanFdb) -> Result<(), NetlinkError> {
        let mut req = self
            .handle
            .neighbours()
            .add_bridge(index, &e.mac.0)
            .destination(e.dst.into())
            .replace();
        let m = req.message_mut();
        m.header.state = NeighbourState::Permanent;
        m.header.flags = NeighbourFlags::Own;
        req.execute().await.map_err(|err| {
            kernel_err(
                format!("adding FDB entry {} dst {} on #{index}", e.mac, e.dst),
                err,
            )
        })
    }

    pub async fn vxlan_fdb_del(&self, index: u32, e: VxlanFdb) -> Result<(), NetlinkError> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = index;
        m.header.state = NeighbourState::Permanent;
        m.header.flags = NeighbourFlags::Own;
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(e.mac.0.to_vec()));
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                e.dst,
            )));
        ignore_missing(
            self.handle.neighbours().del(m).execute().await,
            format!("removing FDB entry {} dst {} on #{index}", e.mac, e.dst),
        )
    }

    /// IPv4 neighbour entries of link `index`.
    pub async fn neighbours_v4(&self, index: u32) -> Result<Vec<Neighbour>, NetlinkError> {
        super::redo_interrupted(|| self.neighbours_v4_once(index)).await
    }

    async fn neighbours_v4_once(&self, index: u32) -> Result<Vec<Neighbour>, NetlinkError> {
        let mut req = self.handle.neighbours().get();
        req = req.set_address_family(AddressFamily::Inet);
        let mut s = req.execute();
        let mut out = Vec::new();
        while let Some(m) = s
            .try_next()
            .await
            .map_err(|e| kernel_err("listing neighbours", e))?
        {
            if m.header.ifindex != index {
                continue;
            }
            let mut ip = None;
            let mut mac = None;
            for a in &m.attributes {
                match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(i)) => ip = Some(*i),
                    NeighbourAttribute::LinkLayerAddress(b) => mac = MacAddr::from_slice(b),
                    _ => {}
                }
            }
            if let Some(ip) = ip {
                out.push(Neighbour {
                    ip,
                    mac,
                    permanent: m.header.state == NeighbourState::Permanent,
                });
            }
        }
        Ok(out)
    }

    /// `ip neigh replace <ip> lladdr <mac> dev <index> nud permanent`.
    pub async fn neighbour_put(
        &self,
        index: u32,
        ip: Ipv4Addr,
        mac: MacAddr,
    ) -> Result<(), NetlinkError> {
        self.handle
            .neighbours()
            .add(index, ip.into())
            .link_layer_address(&mac.0)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(|e| kernel_err(format!("adding neighbour {ip} {mac} on #{index}"), e))
    }

    pub async fn neighbour_del(&self, index: u32, ip: Ipv4Addr) -> Result<(), NetlinkError> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.ifindex = index;
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        ignore_missing(
            self.handle.neighbours().del(m).execute().await,
            format!("removing neighbour {ip} on #{index}"),
        )
    }

    /// Adds or replaces a route to `dst/len` via `gw` out of `oif`, marked
    /// as netd's. `onlink`: the gateway is reachable on that link even
    /// though no address of the link covers it (the VXLAN case: remote
    /// gateways live in other nodes' subnets).
    pub async fn replace_route_v4(
        &self,
        dst: Ipv4Addr,
        prefix_len: u8,
        gw: Ipv4Addr,
        oif: u32,
        onlink: bool,
    ) -> Result<(), NetlinkError> {
        let mut msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst, prefix_len)
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
            .gateway(gw)
            .output_interface(oif)
            .build();
        if onlink {
            msg.header.flags |= RouteFlags::Onlink;
        }
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(|e| kernel_err(format!("adding route {dst}/{prefix_len} via {gw}"), e))
    }

    /// Deletes netd's route to `dst/len` from the main table; one already
    /// gone is fine.
    pub async fn del_route_v4(&self, dst: Ipv4Addr, prefix_len: u8) -> Result<(), NetlinkError> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst, prefix_len)
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
            .scope(RouteScope::NoWhere)
            .build();
        ignore_missing(
            self.handle.route().del(msg).execute().await,
            format!("removing route {dst}/{prefix_len}"),
        )
    }
}

fn ignore_missing(r: Result<(), rtnetlink::Error>, op: String) -> Result<(), NetlinkError> {
    match r {
        Ok(()) => Ok(()),
        Err(e) => {
            let e = kernel_err(op, e);
            if e.is_not_found() || e.errno() == Some(libc::ESRCH) {
                Ok(())
            } else {
                Err(e)
            }
        }
    }
}
