//! Layer-2 devices over rtnetlink: bridges with VLAN filtering, bonds,
//! bridge port VLANs and FDB entries — the kernel-bridge backend's tools,
//! and the probes that tell whether this kernel has them.

use furrow_api::MacAddr;
use futures::TryStreamExt;
use netlink_packet_route::link::{
    BondMode, BridgeVlanInfoFlags, InfoBridge, InfoData, LinkAttribute, LinkInfo as NlLinkInfo,
    MacVlanMode,
};
use netlink_packet_route::neighbour::{NeighbourAttribute, NeighbourFlags};
use rtnetlink::{
    LinkBond, LinkBridge, LinkBridgeVlan, LinkMacVlan, LinkUnspec, LinkVeth, LinkVlan,
};

use super::{kernel_err, Netlink, NetlinkError};

impl Netlink {
    async fn index_of(&self, name: &str) -> Result<u32, NetlinkError> {
        self.link_by_name(name)
            .await?
            .map(|l| l.index)
            .ok_or_else(|| NetlinkError::Other {
                op: format!("looking up {name}"),
                msg: "link vanished right after creation".into(),
            })
    }

    /// Creates a bridge; returns its index.
    pub async fn create_bridge(
        &self,
        name: &str,
        vlan_filtering: bool,
        mtu: Option<u32>,
    ) -> Result<u32, NetlinkError> {
        let mut b = LinkBridge::new(name)
            .vlan_filtering(vlan_filtering)
            .vlan_default_pvid(1);
        if let Some(m) = mtu {
            b = b.mtu(m);
        }
        self.handle
            .link()
            .add(b.build())
            .execute()
            .await
            .map_err(|e| kernel_err(format!("creating bridge {name}"), e))?;
        self.index_of(name).await
    }

    /// The bridge's vlan_filtering as the kernel stored it (None: not a
    /// bridge, or the kernel does not report it).
    pub async fn bridge_vlan_filtering(&self, index: u32) -> Result<Option<bool>, NetlinkError> {
        let mut s = self.handle.link().get().match_index(index).execute();
        let Some(m) = s
            .try_next()
            .await
            .map_err(|e| kernel_err(format!("reading link #{index}"), e))?
        else {
            return Ok(None);
        };
        for a in &m.attributes {
            if let LinkAttribute::LinkInfo(infos) = a {
                for i in infos {
                    if let NlLinkInfo::Data(InfoData::Bridge(opts)) = i {
                        for o in opts {
                            if let InfoBridge::VlanFiltering(v) = o {
                                return Ok(Some(*v));
                            }
                        }
                    }
                }
            }
        }
        Ok(None)
    }

    pub async fn create_bond(
        &self,
        name: &str,
        mode: BondMode,
        miimon: u32,
        mtu: Option<u32>,
    ) -> Result<u32, NetlinkError> {
        let mut b = LinkBond::new(name).mode(mode).miimon(miimon);
        if let Some(m) = mtu {
            b = b.mtu(m);
        }
        self.handle
            .link()
            .add(b.build())
            .execute()
            .await
            .map_err(|e| kernel_err(format!("creating bond {name}"), e))?;
        self.index_of(name).await
    }

    /// Creates a veth pair with both ends in this namespace.
    pub async fn create_veth_pair(
        &self,
        a: &str,
        b: &str,
        mtu: u32,
    ) -> Result<(u32, u32), NetlinkError> {
        self.handle
            .link()
            .add(LinkVeth::new(a, b).mtu(mtu).build())
            .execute()
            .await
            .map_err(|e| kernel_err(format!("creating veth {a} <-> {b}"), e))?;
        Ok((self.index_of(a).await?, self.index_of(b).await?))
    }

    /// Creates a macvlan in bridge mode on `parent` with the MAC `mac`
    /// (down: the caller configures it, then sets it up); returns its index.
    pub async fn create_macvlan(
        &self,
        name: &str,
        parent: u32,
        mac: MacAddr,
    ) -> Result<u32, NetlinkError> {
        self.handle
            .link()
            .add(
                LinkMacVlan::new(name, parent, MacVlanMode::Bridge)
                    .address(mac.0.to_vec())
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| kernel_err(format!("creating macvlan {name} on link #{parent}"), e))?;
        self.index_of(name).await
    }

    /// Creates an 802.1Q device (used to probe whether the kernel has them).
    pub async fn create_vlan(&self, name: &str, base: u32, vid: u16) -> Result<u32, NetlinkError> {
        self.handle
            .link()
            .add(LinkVlan::new(name, base, vid).build())
            .execute()
            .await
            .map_err(|e| kernel_err(format!("creating 802.1Q device {name}"), e))?;
        self.index_of(name).await
    }

    /// Makes `port` a port of the bridge or bond `controller` (None: of
    /// nothing).
    pub async fn set_controller(
        &self,
        port: u32,
        controller: Option<u32>,
    ) -> Result<(), NetlinkError> {
        let b = LinkUnspec::new_with_index(port);
        let msg = match controller {
            Some(c) => b.controller(c).build(),
            None => b.nocontroller().build(),
        };
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| kernel_err(format!("setting the controller of link #{port}"), e))
    }

    pub async fn set_mac(&self, index: u32, mac: MacAddr) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index)
            .address(mac.0.to_vec())
            .build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| kernel_err(format!("setting the MAC of link #{index}"), e))
    }

    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index).mtu(mtu).build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| kernel_err(format!("setting the MTU of link #{index} to {mtu}"), e))
    }

    pub async fn set_promisc(&self, index: u32, on: bool) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index).promiscuous(on).build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| kernel_err(format!("setting promiscuous mode of link #{index}"), e))
    }

    /// Adds a VLAN to a bridge port (`pvid`: untagged frames entering the
    /// port get it; `untagged`: it leaves the port untagged).
    pub async fn bridge_vlan_add(
        &self,
        port: u32,
        vid: u16,
        pvid: bool,
        untagged: bool,
    ) -> Result<(), NetlinkError> {
        let mut flags = BridgeVlanInfoFlags::empty();
        if pvid {
            flags |= BridgeVlanInfoFlags::Pvid;
        }
        if untagged {
            flags |= BridgeVlanInfoFlags::Untagged;
        }
        let msg = LinkBridgeVlan::new(port).vlan(vid, flags).build();
        // RTM_SETLINK with AF_BRIDGE reaches the bridge's VLAN handler;
        // RTM_NEWLINK (rtnetlink's set_port) would be silently ignored.
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| kernel_err(format!("adding VLAN {vid} to bridge port #{port}"), e))
    }

    /// Adds the tagged VLANs `min..=max` to a bridge port in one request.
    pub async fn bridge_vlan_add_range(
        &self,
        port: u32,
        min: u16,
        max: u16,
    ) -> Result<(), NetlinkError> {
        if min == max {
            return self.bridge_vlan_add(port, min, false, false).await;
        }
        let msg = LinkBridgeVlan::new(port)
            .vlan_range_start(min, BridgeVlanInfoFlags::empty())
            .vlan_range_end(max, BridgeVlanInfoFlags::empty())
            .build();
        // RTM_SETLINK with AF_BRIDGE reaches the bridge's VLAN handler;
        // RTM_NEWLINK (rtnetlink's set_port) would be silently ignored.
        self.handle.link().set(msg).execute().await.map_err(|e| {
            kernel_err(
                format!("adding VLANs {min}-{max} to bridge port #{port}"),
                e,
            )
        })
    }

    /// Sets a bridge's MAC ageing time.
    pub async fn set_bridge_ageing(
        &self,
        bridge: &str,
        ageing: std::time::Duration,
    ) -> Result<(), NetlinkError> {
        // IFLA_BR_AGEING_TIME is in USER_HZ (1/100 s).
        let centis = (ageing.as_millis() / 10).min(u32::MAX as u128) as u32;
        let msg = LinkBridge::new(bridge).ageing_time(centis).build();
        self.handle
            .link()
            .change(msg)
            .execute()
            .await
            .map_err(|e| kernel_err(format!("setting the ageing time of {bridge}"), e))
    }

    pub async fn bridge_vlan_del(&self, port: u32, vid: u16) -> Result<(), NetlinkError> {
        let msg = LinkBridgeVlan::new(port)
            .vlan(vid, BridgeVlanInfoFlags::empty())
            .build();
        match self.handle.link().del_with_message(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = kernel_err(format!("removing VLAN {vid} from bridge port #{port}"), e);
                if e.is_not_found() || e.errno() == Some(libc::EINVAL) {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// A static bridge FDB entry: `mac` on VLAN `vid` lives behind `port`.
    pub async fn bridge_fdb_add(
        &self,
        port: u32,
        mac: MacAddr,
        vid: u16,
    ) -> Result<(), NetlinkError> {
        let mut req = self.handle.neighbours().add_bridge(port, &mac.0).replace();
        let m = req.message_mut();
        // `bridge fdb add ... master static`: NUD_NOARP with NTF_MASTER (a
        // PERMANENT entry would be a local one, refused on a port).
        m.header.state = netlink_packet_route::neighbour::NeighbourState::Noarp;
        m.header.flags = NeighbourFlags::Controller;
        m.attributes.push(NeighbourAttribute::Vlan(vid));
        req.execute().await.map_err(|e| {
            kernel_err(
                format!("adding FDB entry {mac} vlan {vid} on port #{port}"),
                e,
            )
        })
    }
}
