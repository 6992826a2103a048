//! Port security of VM ports on the eBPF backend: what each port may send
//! from, computed from its record (the VM's MAC, `portSecurity`,
//! `allowedAddressPairs`) and from what netd knows of the VM's addresses
//! (the [`AddressBook`] the DHCP service keeps current: reservations and
//! leases bound by Furrow's responders), and written to the datapath
//! (`Datapath::l2_set_port_security`).
//!
//! The policy of a port (see docs/ARCHITECTURE.md, "Port security"):
//! - on unless `portSecurity: false`; the bridge backend cannot check;
//! - source MAC: the VM's, or an allowed address pair's;
//! - IPv4 enforced once one of the VM's own IPv4 addresses is known (a
//!   bound lease or a reservation for its MAC on its network), and on
//!   access/untagged ports of networks a Furrow DHCP pool serves even
//!   before (then only DHCP and ARP probes pass until the lease is bound:
//!   the address is written before the ACK leaves), except for
//!   `dhcpTrusted` ports (a DHCP server VM has a static address). Elsewhere (an
//!   external DHCP server, static guests) netd cannot know the address:
//!   MAC-only;
//! - IPv6 enforced when the port has IPv6 allowed address pairs (Furrow
//!   learns no IPv6 addresses itself): the pairs plus the EUI-64
//!   link-local address of each of the port's MACs;
//! - a VirtualMachineNetworkConfig entry for the VM's MAC on the network
//!   may override `portSecurity` and add allowed address pairs;
//! - allowed address pairs add their addresses to an enforced family
//!   (they never turn enforcement on for IPv4, so a VIP on a VM whose own
//!   address netd does not know never blocks that address).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use furrow_api::wire::PortState;
use furrow_api::MacAddr;
use furrow_ebpf::{PortSecurity, PsecAddr};

use super::backend::BackendKind;
use super::VlanDriver;
use crate::ports::VlanPortRecord;

/// Where netd learnt an address of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AddrSource {
    /// A VirtualMachineNetworkConfig's `ipAddress` for the VM's MAC.
    Reservation,
    /// A lease bound (and not expired) by Furrow's DHCP responders.
    Lease,
}

impl AddrSource {
    pub fn as_str(self) -> &'static str {
        match self {
            AddrSource::Reservation => "reservation",
            AddrSource::Lease => "lease",
        }
    }
}

/// (CNI network, VM MAC): what the book's entries are keyed by.
pub type BookKey = (String, MacAddr);

/// What netd knows of VMs' addresses, kept by the DHCP service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressBook {
    /// CNI networks a Furrow DHCP pool serves.
    pub pool_networks: BTreeSet<String>,
    /// (CNI network, VM MAC) -> its IPv4 addresses.
    pub ipv4: BTreeMap<(String, MacAddr), BTreeMap<Ipv4Addr, AddrSource>>,
    /// (CNI network, VM MAC) -> its VirtualMachineNetworkConfig entry's
    /// port security settings, where it has any.
    pub settings: BTreeMap<(String, MacAddr), PortSettings>,
}

/// Port security settings of one VM from its VirtualMachineNetworkConfig.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortSettings {
    /// Overrides the attachment's `portSecurity`.
    pub port_security: Option<bool>,
    /// Added to the attachment's `allowedAddressPairs`.
    pub allowed_address_pairs: Vec<furrow_api::cni::AddressPair>,
}

impl AddressBook {
    pub fn add(&mut self, network: &str, mac: MacAddr, ip: Ipv4Addr, src: AddrSource) {
        let e = self
            .ipv4
            .entry((network.to_string(), mac))
            .or_default()
            .entry(ip)
            .or_insert(src);
        // A reservation says more than a lease of the same address.
        if src < *e {
            *e = src;
        }
    }

    /// The part of the book that concerns the ports `local`.
    fn about(&self, local: &BTreeSet<BookKey>) -> AddressBook {
        AddressBook {
            pool_networks: self
                .pool_networks
                .iter()
                .filter(|n| local.iter().any(|(ln, _)| ln == *n))
                .cloned()
                .collect(),
            ipv4: self
                .ipv4
                .iter()
                .filter(|(k, _)| local.contains(*k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            settings: self
                .settings
                .iter()
                .filter(|(k, _)| local.contains(*k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// The known IPv4 addresses of `mac` on `network`.
    pub fn of(&self, network: &str, mac: MacAddr) -> Option<&BTreeMap<Ipv4Addr, AddrSource>> {
        self.ipv4.get(&(network.to_string(), mac))
    }
}

/// The port security `rec` (with VM MAC `mac`) should have; `None`: off.
pub fn desired(rec: &VlanPortRecord, mac: MacAddr, book: &AddressBook) -> Option<PortSecurity> {
    let settings = book.settings.get(&(rec.network_name.clone(), mac));
    let on = settings
        .and_then(|s| s.port_security)
        .unwrap_or(rec.port_security);
    if !on {
        return None;
    }
    let mut ps = PortSecurity {
        mac: mac.0,
        ..Default::default()
    };
    let known = book.of(&rec.network_name, mac);
    for ip in known.into_iter().flat_map(|m| m.keys()) {
        ps.addresses.push(PsecAddr::host(IpAddr::V4(*ip), mac.0));
    }
    // Before a lease: only where Furrow's DHCP hands the addresses out,
    // and not for a DHCP server VM (`dhcpTrusted`), whose own address
    // never comes from the pool.
    ps.enforce_ipv4 = known.is_some_and(|m| !m.is_empty())
        || (rec.trunk.is_empty()
            && !rec.dhcp_trusted
            && book.pool_networks.contains(&rec.network_name));
    let mut macs = vec![mac.0];
    let extra = settings
        .map(|s| s.allowed_address_pairs.as_slice())
        .unwrap_or_default();
    for p in rec.allowed_address_pairs.iter().chain(extra) {
        let m = p.mac_address.map(|m| m.0).unwrap_or(mac.0);
        if !macs.contains(&m) {
            macs.push(m);
        }
        ps.addresses.push(PsecAddr {
            addr: p.ip_address.addr(),
            prefix_len: p.ip_address.prefix_len(),
            mac: m,
        });
        if p.ip_address.addr().is_ipv6() {
            ps.enforce_ipv6 = true;
        }
    }
    if ps.enforce_ipv6 {
        for m in &macs {
            ps.addresses.push(PsecAddr::eui64_link_local(*m));
        }
    }
    ps.extra_macs = macs[1..].to_vec();
    Some(ps.normalized())
}

impl VlanDriver {
    /// The address book as last set.
    pub async fn address_book(&self) -> AddressBook {
        self.state.lock().await.book.clone()
    }

    /// Takes a new address book (the DHCP service calls it when leases,
    /// reservations or pools change) and brings every port in line with
    /// it before returning. A book equal to the last one changes nothing.
    pub async fn set_address_book(&self, book: AddressBook) {
        {
            let mut st = self.state.lock().await;
            if st.book == book {
                return;
            }
            // Leases of VMs on other nodes change nothing here (the ports
            // being built read the book as stored now).
            let local: BTreeSet<BookKey> =
                st.psec_applied.values().map(|(k, _)| k.clone()).collect();
            let matters = st.book.about(&local) != book.about(&local);
            st.book = book;
            if !matters {
                return;
            }
        }
        match self.records().await {
            Ok(recs) => self.sync_port_security(&recs).await,
            Err(e) => tracing::warn!(error = %e, "port security not updated: {}", e.msg),
        }
    }

    /// Makes the datapath's port security of every Ready VM port on an
    /// eBPF network what its record and the address book say; writes only
    /// what changed since the last write.
    pub async fn sync_port_security(&self, recs: &[VlanPortRecord]) {
        let mut want: Vec<(u32, BookKey, Option<PortSecurity>)> = Vec::new();
        {
            let st = self.state.lock().await;
            for r in recs.iter().filter(|r| r.state == PortState::Ready) {
                let (Some(idx), Some(mac)) = (r.host_ifindex, r.mac) else {
                    continue;
                };
                let Some(cn) = st.nets.get(&r.cluster_network) else {
                    continue;
                };
                if cn.backend != BackendKind::Ebpf || cn.realized.is_none() {
                    continue;
                }
                let d = desired(r, mac, &st.book);
                let key = (r.network_name.clone(), mac);
                if st.psec_applied.get(&idx) != Some(&(key.clone(), d.clone())) {
                    want.push((idx, key, d));
                }
            }
        }
        for (idx, key, d) in want {
            if let Err(e) = self.write_port_security(idx, key, d).await {
                tracing::warn!(ifindex = idx, error = %e, "port security not written");
            }
        }
    }

    /// Writes one port's security (None: off) and remembers it.
    pub(super) async fn write_port_security(
        &self,
        ifindex: u32,
        key: BookKey,
        ps: Option<PortSecurity>,
    ) -> Result<(), String> {
        let p = ps.clone();
        self.node
            .with_datapath(move |dp| match &p {
                Some(ps) => dp.l2_set_port_security(ifindex, ps),
                None => dp.l2_clear_port_security(ifindex),
            })
            .await
            .map_err(|e| format!("datapath: {e}"))?;
        if let Some(ps) = &ps {
            tracing::debug!(
                ifindex,
                enforce_ipv4 = ps.enforce_ipv4,
                enforce_ipv6 = ps.enforce_ipv6,
                addresses = ps.addresses.len(),
                "port security set"
            );
        }
        self.state
            .lock()
            .await
            .psec_applied
            .insert(ifindex, (key, ps));
        Ok(())
    }

    /// Forgets what was written for a port that left the switch.
    pub(super) async fn forget_port_security(&self, ifindex: u32) {
        self.state.lock().await.psec_applied.remove(&ifindex);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use furrow_api::cni::AddressPair;

    fn rec() -> VlanPortRecord {
        serde_json::from_value(serde_json::json!({
            "node": "n", "networkName": "net", "kind": "vlan", "clusterNetwork": "cn",
            "vlan": 100, "containerId": "c", "ifname": "net1", "hostIfname": "h",
            "mtu": 1500, "state": "ready", "createdAt": 0
        }))
        .unwrap()
    }

    const MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);

    #[test]
    fn policy_follows_what_is_known() {
        let r = rec();
        assert!(r.port_security, "on by default, also for old records");
        let mut book = AddressBook::default();
        // Nothing known: MAC only.
        let ps = desired(&r, MAC, &book).unwrap();
        assert!(!ps.enforce_ipv4 && !ps.enforce_ipv6 && ps.addresses.is_empty());
        // A pool serves the network: IPv4 enforced before the lease.
        book.pool_networks.insert("net".into());
        let ps = desired(&r, MAC, &book).unwrap();
        assert!(ps.enforce_ipv4 && ps.addresses.is_empty());
        // ... but not on a trunk, nor for a DHCP server VM.
        let mut t = r.clone();
        t.trunk = vec![furrow_api::cni::VlanRange { min: 1, max: 2 }];
        assert!(!desired(&t, MAC, &book).unwrap().enforce_ipv4);
        let mut srv = r.clone();
        srv.dhcp_trusted = true;
        assert!(!desired(&srv, MAC, &book).unwrap().enforce_ipv4);
        // A bound lease: allowed.
        book.add("net", MAC, "10.0.0.5".parse().unwrap(), AddrSource::Lease);
        book.add(
            "net",
            MAC,
            "10.0.0.5".parse().unwrap(),
            AddrSource::Reservation,
        );
        assert_eq!(
            book.of("net", MAC).unwrap().values().next(),
            Some(&AddrSource::Reservation)
        );
        let ps = desired(&r, MAC, &book).unwrap();
        assert_eq!(
            ps.addresses,
            vec![PsecAddr::host("10.0.0.5".parse().unwrap(), MAC.0)]
        );
        // Pairs: a VIP from the own MAC, a prefix from another, and IPv6.
        let mut p = r.clone();
        let other = MacAddr([0x52, 0x54, 0, 0, 0, 9]);
        p.allowed_address_pairs = vec![
            AddressPair {
                ip_address: "10.0.0.100/32".parse().unwrap(),
                mac_address: None,
            },
            AddressPair {
                ip_address: "10.9.0.0/24".parse().unwrap(),
                mac_address: Some(other),
            },
            AddressPair {
                ip_address: "fd00::5/128".parse().unwrap(),
                mac_address: None,
            },
        ];
        let ps = desired(&p, MAC, &book).unwrap();
        assert_eq!(ps.extra_macs, vec![other.0]);
        assert!(ps.enforce_ipv4 && ps.enforce_ipv6);
        assert_eq!(ps.addresses.len(), 6, "{:?}", ps.addresses);
        assert!(ps.addresses.contains(&PsecAddr::eui64_link_local(other.0)));
        // Pairs alone never turn IPv4 enforcement on.
        let ps = desired(&p, MAC, &AddressBook::default()).unwrap();
        assert!(!ps.enforce_ipv4 && ps.enforce_ipv6);
        // Only what concerns local ports matters.
        let local: BTreeSet<BookKey> = [("net".to_string(), MAC)].into();
        let mut other = book.clone();
        other.add(
            "net",
            MacAddr([2, 0, 0, 0, 0, 7]),
            "10.0.0.9".parse().unwrap(),
            AddrSource::Lease,
        );
        other.pool_networks.insert("elsewhere".into());
        assert_eq!(book.about(&local), other.about(&local));
        other.add("net", MAC, "10.0.0.6".parse().unwrap(), AddrSource::Lease);
        assert_ne!(book.about(&local), other.about(&local));
        // Off.
        let mut off = r.clone();
        off.port_security = false;
        assert_eq!(desired(&off, MAC, &book), None);
        // A VirtualMachineNetworkConfig overrides and adds.
        let key = ("net".to_string(), MAC);
        book.settings.insert(
            key.clone(),
            PortSettings {
                port_security: Some(true),
                allowed_address_pairs: vec![AddressPair {
                    ip_address: "10.0.0.200/32".parse().unwrap(),
                    mac_address: None,
                }],
            },
        );
        let ps = desired(&off, MAC, &book).unwrap();
        assert!(ps
            .addresses
            .contains(&PsecAddr::host("10.0.0.200".parse().unwrap(), MAC.0)));
        book.settings.get_mut(&key).unwrap().port_security = Some(false);
        assert_eq!(desired(&r, MAC, &book), None);
    }
}
