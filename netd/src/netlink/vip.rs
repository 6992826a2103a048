//! Floating-VIP addresses. Every one netd adds carries `IFA_PROTO`
//! [`VIP_ADDRESS_PROTOCOL`], so a restarted netd (or its fence guard) finds
//! and removes the ones it left without any other record, and a finite
//! lifetime that netd keeps refreshing, so the kernel itself drops an
//! address whose netd and guard both died.

use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressMessage, AddressProtocol, CacheInfo,
};
use netlink_packet_route::AddressFamily;

use super::{kernel_err, Netlink, NetlinkError};

/// `ip addr` shows it as `proto 0x46`.
pub const VIP_ADDRESS_PROTOCOL: u8 = 0x46;

/// An address netd holds for a VIP, as found in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VipAddress {
    pub index: u32,
    pub ip: IpAddr,
    pub prefix_len: u8,
}

fn host_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

impl Netlink {
    /// Adds (or refreshes the lifetime of) a VIP as a host address on link
    /// `index`. IPv6: no duplicate address detection, so it is usable at
    /// once (the election already guarantees uniqueness).
    pub async fn put_vip(
        &self,
        index: u32,
        ip: IpAddr,
        lifetime_secs: u32,
    ) -> Result<(), NetlinkError> {
        let prefix_len = host_prefix(ip);
        let mut req = self.handle.address().add(index, ip, prefix_len).replace();
        let attrs = &mut req.message_mut().attributes;
        let mut flags = AddressFlags::Noprefixroute;
        if ip.is_ipv6() {
            flags |= AddressFlags::Nodad;
        }
        attrs.push(AddressAttribute::Flags(flags));
        attrs.push(AddressAttribute::Protocol(AddressProtocol::Other(
            VIP_ADDRESS_PROTOCOL,
        )));
        let mut life = CacheInfo::default();
        life.ifa_preferred = lifetime_secs;
        life.ifa_valid = lifetime_secs;
        attrs.push(AddressAttribute::CacheInfo(life));
        req.execute()
            .await
            .map_err(|e| kernel_err(format!("adding VIP {ip} to link #{index}"), e))
    }

    /// Every VIP address netd added (by its protocol mark), on any link.
    pub async fn vip_addresses(&self) -> Result<Vec<VipAddress>, NetlinkError> {
        let mut s = self.handle.address().get().execute();
        let mut out = Vec::new();
        while let Some(m) = s
            .try_next()
            .await
            .map_err(|e| kernel_err("listing addresses", e))?
        {
            if let Some(a) = vip_of(&m) {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// Removes one VIP address; one already gone is fine.
    pub async fn del_vip(&self, index: u32, ip: IpAddr) -> Result<(), NetlinkError> {
        let mut m = AddressMessage::default();
        m.header.family = if ip.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        m.header.index = index;
        m.header.prefix_len = host_prefix(ip);
        m.attributes.push(AddressAttribute::Local(ip));
        if ip.is_ipv6() {
            m.attributes.push(AddressAttribute::Address(ip));
        }
        match self.handle.address().del(m).execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = kernel_err(format!("removing VIP {ip} from link #{index}"), e);
                if e.is_not_found() || e.errno() == Some(libc::EADDRNOTAVAIL) {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// The prefixes (address/len) configured on link `index`, other than
    /// VIPs: a VIP in ARP mode must fall inside one of them.
    pub async fn link_prefixes(&self, index: u32) -> Result<Vec<ipnet::IpNet>, NetlinkError> {
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
            if m.header.index != index || vip_of(&m).is_some() {
                continue;
            }
            if let Some(ip) = address_of(&m) {
                if let Ok(n) = ipnet::IpNet::new(ip, m.header.prefix_len) {
                    out.push(n);
                }
            }
        }
        Ok(out)
    }
}

fn vip_of(m: &AddressMessage) -> Option<VipAddress> {
    let marked = m.attributes.iter().any(|a| {
        matches!(a, AddressAttribute::Protocol(AddressProtocol::Other(p)) if *p == VIP_ADDRESS_PROTOCOL)
    });
    if !marked {
        return None;
    }
    let ip = address_of(m)?;
    Some(VipAddress {
        index: m.header.index,
        ip,
        prefix_len: m.header.prefix_len,
    })
}

/// The address an address message is about: IFA_LOCAL where there is one
/// (IPv4), else IFA_ADDRESS (IPv6 has only that).
fn address_of(m: &AddressMessage) -> Option<IpAddr> {
    let find = |local: bool| {
        m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) if local => Some(*ip),
            AddressAttribute::Address(ip) if !local => Some(*ip),
            _ => None,
        })
    };
    find(true).or_else(|| find(false))
}
