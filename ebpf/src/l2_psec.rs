//! Port security of the switch's VM ports (bpf/lib/portsec.h): which MACs
//! and addresses a port may send from, the map layouts behind it, and the
//! operations that set it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::maps::{lpm_trie::Key, MapError};

use crate::{
    l2::fmt_mac,
    l2_ops::{insert_error, ok_if_absent},
    Datapath, DatapathError, L2Mode, MAP_L2_PSEC, MAP_L2_PSEC_V4, MAP_L2_PSEC_V6,
};

/// MACs a port may send from besides its own (bpf/lib/config.h:
/// FURROW_L2_PSEC_MAX_MACS).
pub const L2_PSEC_MAX_MACS: usize = 8;
/// Allowed address entries of one node, per family
/// (FURROW_L2_PSEC_MAX_ADDRS).
pub const L2_PSEC_MAX_ADDRS: u32 = 65536;
/// Allowed addresses of one port, both families together, that
/// [`Datapath::l2_set_port_security`] accepts.
pub const L2_PSEC_PORT_ADDRS: usize = 256;

const PSEC_F_IPV4: u32 = 0x1;
const PSEC_F_IPV6: u32 = 0x2;
const BPF_ANY: u64 = 0;

/// One allowed source: a prefix (a single address is /32 or /128) and
/// the MAC that may send from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PsecAddr {
    pub addr: IpAddr,
    pub prefix_len: u8,
    pub mac: [u8; 6],
}

impl PsecAddr {
    /// A single address.
    pub fn host(addr: IpAddr, mac: [u8; 6]) -> Self {
        PsecAddr {
            addr,
            prefix_len: if addr.is_ipv4() { 32 } else { 128 },
            mac,
        }
    }

    /// The IPv6 link-local address a MAC gives by EUI-64 (fe80::/64 plus
    /// the MAC with the universal/local bit flipped and ff:fe inserted).
    pub fn eui64_link_local(mac: [u8; 6]) -> Self {
        let m = mac;
        let a = Ipv6Addr::new(
            0xfe80,
            0,
            0,
            0,
            u16::from_be_bytes([m[0] ^ 0x02, m[1]]),
            u16::from_be_bytes([m[2], 0xff]),
            u16::from_be_bytes([0xfe, m[3]]),
            u16::from_be_bytes([m[4], m[5]]),
        );
        PsecAddr::host(IpAddr::V6(a), mac)
    }

    /// The address with its host bits cleared.
    fn masked(self) -> Self {
        let addr = match self.addr {
            IpAddr::V4(a) => {
                let p = u32::from(self.prefix_len.min(32));
                let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let p = u32::from(self.prefix_len.min(128));
                let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        PsecAddr { addr, ..self }
    }
}

impl std::fmt::Display for PsecAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} ({})",
            self.addr,
            self.prefix_len,
            fmt_mac(&self.mac)
        )
    }
}

/// What a VM port may send (see bpf/lib/portsec.h for the checks). A port
/// without it is not checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortSecurity {
    /// The port's own MAC (the VM's).
    pub mac: [u8; 6],
    /// Further MACs the port may send from (allowed address pairs with a
    /// MAC of their own), at most [`L2_PSEC_MAX_MACS`].
    pub extra_macs: Vec<[u8; 6]>,
    /// Check IPv4 sources and ARP senders against `addresses`. With no
    /// IPv4 address there, only DHCP client frames from 0.0.0.0 and ARP
    /// probes pass (a VM waiting for its lease).
    pub enforce_ipv4: bool,
    /// Check IPv6 sources and neighbour advertisement targets against
    /// `addresses` (:: only for solicitations and MLD reports).
    pub enforce_ipv6: bool,
    /// Allowed sources, each with the MAC that may use it (`mac` or one
    /// of `extra_macs`); the most specific prefix decides.
    pub addresses: Vec<PsecAddr>,
}

impl PortSecurity {
    /// Sorted, deduplicated, host bits cleared, the own MAC not repeated
    /// among the extra ones.
    pub fn normalized(&self) -> PortSecurity {
        let mut extra: Vec<[u8; 6]> = self
            .extra_macs
            .iter()
            .copied()
            .filter(|m| *m != self.mac)
            .collect();
        extra.sort();
        extra.dedup();
        let mut addresses: Vec<PsecAddr> = self.addresses.iter().map(|a| a.masked()).collect();
        addresses.sort();
        addresses.dedup();
        PortSecurity {
            mac: self.mac,
            extra_macs: extra,
            enforce_ipv4: self.enforce_ipv4,
            enforce_ipv6: self.enforce_ipv6,
            addresses,
        }
    }

    fn validate(&self) -> Result<(), DatapathError> {
        let bad = |m: String| Err(DatapathError::InvalidL2(format!("port security: {m}")));
        let unicast = |m: &[u8; 6]| m[0] & 1 == 0 && *m != [0; 6];
        if !unicast(&self.mac) {
            return bad(format!(
                "MAC {}: expected a unicast address",
                fmt_mac(&self.mac)
            ));
        }
        if self.extra_macs.len() > L2_PSEC_MAX_MACS {
            return bad(format!(
                "{} extra MACs: at most {L2_PSEC_MAX_MACS}",
                self.extra_macs.len()
            ));
        }
        if let Some(m) = self.extra_macs.iter().find(|m| !unicast(m)) {
            return bad(format!("MAC {}: expected a unicast address", fmt_mac(m)));
        }
        if self.addresses.len() > L2_PSEC_PORT_ADDRS {
            return bad(format!(
                "{} addresses: at most {L2_PSEC_PORT_ADDRS} per port",
                self.addresses.len()
            ));
        }
        for a in &self.addresses {
            let max = if a.addr.is_ipv4() { 32 } else { 128 };
            if a.prefix_len > max {
                return bad(format!(
                    "{}/{}: prefix longer than {max}",
                    a.addr, a.prefix_len
                ));
            }
            if a.mac != self.mac && !self.extra_macs.contains(&a.mac) {
                return bad(format!(
                    "{a}: the MAC is neither the port's nor one of its extra MACs"
                ));
            }
        }
        Ok(())
    }
}

/// `struct l2_psec`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RawL2Psec {
    pub flags: u32,
    pub mac: [u8; 6],
    pub n_macs: u8,
    pub _pad0: u8,
    pub macs: [[u8; 6]; L2_PSEC_MAX_MACS],
    pub _pad1: u32,
}
// SAFETY: repr(C), integers and byte arrays, explicit padding fields.
unsafe impl aya::Pod for RawL2Psec {}
const _: () = assert!(std::mem::size_of::<RawL2Psec>() == 64);

/// The data of `struct l2_psec_v4_key` after its prefixlen.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PsecV4Key {
    pub ifindex: u32,
    pub addr: [u8; 4],
}
// SAFETY: repr(C), a u32 and 4 bytes, no padding.
unsafe impl aya::Pod for PsecV4Key {}
const _: () = assert!(std::mem::size_of::<Key<PsecV4Key>>() == 12);

/// The data of `struct l2_psec_v6_key` after its prefixlen.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PsecV6Key {
    pub ifindex: u32,
    pub addr: [u8; 16],
}
// SAFETY: repr(C), a u32 and 16 bytes, no padding.
unsafe impl aya::Pod for PsecV6Key {}
const _: () = assert!(std::mem::size_of::<Key<PsecV6Key>>() == 24);

/// `struct l2_psec_addr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RawPsecAddr {
    pub mac: [u8; 6],
    pub flags: u16,
}
// SAFETY: repr(C), 6 bytes and a u16, no padding.
unsafe impl aya::Pod for RawPsecAddr {}
const _: () = assert!(std::mem::size_of::<RawPsecAddr>() == 8);

impl RawL2Psec {
    fn encode(ps: &PortSecurity) -> Self {
        let mut macs = [[0u8; 6]; L2_PSEC_MAX_MACS];
        for (i, m) in ps.extra_macs.iter().take(L2_PSEC_MAX_MACS).enumerate() {
            macs[i] = *m;
        }
        RawL2Psec {
            flags: (if ps.enforce_ipv4 { PSEC_F_IPV4 } else { 0 })
                | (if ps.enforce_ipv6 { PSEC_F_IPV6 } else { 0 }),
            mac: ps.mac,
            n_macs: ps.extra_macs.len().min(L2_PSEC_MAX_MACS) as u8,
            _pad0: 0,
            macs,
            _pad1: 0,
        }
    }
}

/// The address entries of the tries, as (ifindex, address).
type Entries = Vec<(u32, PsecAddr)>;

/// Appends a trie's entries (prefix lengths without the ifindex's 32 bits).
fn collect<K: aya::Pod>(
    entries: impl Iterator<Item = Result<(Key<K>, RawPsecAddr), MapError>>,
    map: &'static str,
    out: &mut Entries,
    addr: impl Fn(&K) -> (u32, IpAddr),
) -> Result<(), DatapathError> {
    for r in entries {
        match r {
            Ok((k, v)) => {
                let (ifindex, addr) = addr(&k.data());
                out.push((
                    ifindex,
                    PsecAddr {
                        addr,
                        prefix_len: k.prefix_len().saturating_sub(32) as u8,
                        mac: v.mac,
                    },
                ));
            }
            Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(DatapathError::map(map, e)),
        }
    }
    Ok(())
}

impl Datapath {
    /// Sets the port security of VM port `ifindex` (attached with
    /// [`Datapath::l2_attach_port`], not an uplink), replacing what it had:
    /// its addresses go in first and stale ones out last, so a change never
    /// drops a frame that both the old and the new policy allow.
    /// `InvalidL2` for a bad policy (see [`PortSecurity`]), `MapFull` when
    /// the node's address tries are full. Idempotent.
    pub fn l2_set_port_security(
        &mut self,
        ifindex: u32,
        ps: &PortSecurity,
    ) -> Result<(), DatapathError> {
        let ps = ps.normalized();
        ps.validate()?;
        match self.raw_l2_port(ifindex)?.and_then(|r| r.decode()) {
            None => {
                return Err(DatapathError::InvalidL2(format!(
                    "port security: ifindex {ifindex} is not a port of the switch (attach it first)"
                )))
            }
            Some(p) if matches!(p.mode, L2Mode::Uplink { .. }) => {
                return Err(DatapathError::InvalidL2(format!(
                    "port security: ifindex {ifindex} is an uplink (only VM ports are checked)"
                )))
            }
            Some(_) => {}
        }
        let old: Vec<PsecAddr> = self
            .psec_entries()?
            .into_iter()
            .filter(|(i, _)| *i == ifindex)
            .map(|(_, a)| a)
            .collect();
        // Every address is written (a changed MAC replaces the value).
        for a in &ps.addresses {
            self.psec_insert(ifindex, a)?;
        }
        self.l2
            .psec
            .insert(ifindex, RawL2Psec::encode(&ps), BPF_ANY)
            .map_err(|e| insert_error(MAP_L2_PSEC, self.l2.max[6], e))?;
        for a in old.iter().filter(|a| !ps.addresses.contains(a)) {
            self.psec_remove(ifindex, a)?;
        }
        Ok(())
    }

    /// Turns port security off for `ifindex` (its entry first, then its
    /// addresses). Idempotent; [`Datapath::l2_detach_port`] does it too.
    pub fn l2_clear_port_security(&mut self, ifindex: u32) -> Result<(), DatapathError> {
        ok_if_absent(MAP_L2_PSEC, self.l2.psec.remove(&ifindex))?;
        for (i, a) in self.psec_entries()? {
            if i == ifindex {
                self.psec_remove(i, &a)?;
            }
        }
        Ok(())
    }

    /// The port security of `ifindex`, `None` if it has none.
    pub fn l2_port_security(&self, ifindex: u32) -> Result<Option<PortSecurity>, DatapathError> {
        let raw = match self.l2.psec.get(&ifindex, 0) {
            Ok(v) => v,
            Err(MapError::KeyNotFound) => return Ok(None),
            Err(e) => return Err(DatapathError::map(MAP_L2_PSEC, e)),
        };
        let addrs = self
            .psec_entries()?
            .into_iter()
            .filter(|(i, _)| *i == ifindex)
            .map(|(_, a)| a)
            .collect();
        Ok(Some(decode(&raw, addrs)))
    }

    /// Every port's security, by ifindex.
    pub fn l2_port_securities(&self) -> Result<Vec<(u32, PortSecurity)>, DatapathError> {
        let mut raws = Vec::new();
        for r in self.l2.psec.iter() {
            match r {
                Ok(kv) => raws.push(kv),
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(DatapathError::map(MAP_L2_PSEC, e)),
            }
        }
        let entries = self.psec_entries()?;
        let mut out: Vec<(u32, PortSecurity)> = raws
            .into_iter()
            .map(|(i, raw)| {
                let addrs = entries
                    .iter()
                    .filter(|(j, _)| *j == i)
                    .map(|(_, a)| *a)
                    .collect();
                (i, decode(&raw, addrs))
            })
            .collect();
        out.sort_by_key(|(i, _)| *i);
        Ok(out)
    }

    /// Every address entry of both tries.
    fn psec_entries(&self) -> Result<Entries, DatapathError> {
        let mut out = Vec::new();
        collect(
            self.l2.psec_v4.iter(),
            MAP_L2_PSEC_V4,
            &mut out,
            |d: &PsecV4Key| (d.ifindex, IpAddr::V4(Ipv4Addr::from(d.addr))),
        )?;
        collect(
            self.l2.psec_v6.iter(),
            MAP_L2_PSEC_V6,
            &mut out,
            |d: &PsecV6Key| (d.ifindex, IpAddr::V6(Ipv6Addr::from(d.addr))),
        )?;
        Ok(out)
    }

    fn psec_insert(&mut self, ifindex: u32, a: &PsecAddr) -> Result<(), DatapathError> {
        let val = RawPsecAddr {
            mac: a.mac,
            flags: 0,
        };
        let plen = 32 + u32::from(a.prefix_len);
        match a.addr {
            IpAddr::V4(ip) => {
                let k = Key::new(
                    plen,
                    PsecV4Key {
                        ifindex,
                        addr: ip.octets(),
                    },
                );
                self.l2
                    .psec_v4
                    .insert(&k, val, BPF_ANY)
                    .map_err(|e| insert_error(MAP_L2_PSEC_V4, self.l2.max[7], e))
            }
            IpAddr::V6(ip) => {
                let k = Key::new(
                    plen,
                    PsecV6Key {
                        ifindex,
                        addr: ip.octets(),
                    },
                );
                self.l2
                    .psec_v6
                    .insert(&k, val, BPF_ANY)
                    .map_err(|e| insert_error(MAP_L2_PSEC_V6, self.l2.max[8], e))
            }
        }
    }

    fn psec_remove(&mut self, ifindex: u32, a: &PsecAddr) -> Result<(), DatapathError> {
        let plen = 32 + u32::from(a.prefix_len);
        match a.addr {
            IpAddr::V4(ip) => {
                let k = Key::new(
                    plen,
                    PsecV4Key {
                        ifindex,
                        addr: ip.octets(),
                    },
                );
                ok_if_absent(MAP_L2_PSEC_V4, self.l2.psec_v4.remove(&k))
            }
            IpAddr::V6(ip) => {
                let k = Key::new(
                    plen,
                    PsecV6Key {
                        ifindex,
                        addr: ip.octets(),
                    },
                );
                ok_if_absent(MAP_L2_PSEC_V6, self.l2.psec_v6.remove(&k))
            }
        }
    }
}

fn decode(raw: &RawL2Psec, mut addresses: Vec<PsecAddr>) -> PortSecurity {
    addresses.sort();
    let n = usize::from(raw.n_macs).min(L2_PSEC_MAX_MACS);
    PortSecurity {
        mac: raw.mac,
        extra_macs: raw.macs[..n].to_vec(),
        enforce_ipv4: raw.flags & PSEC_F_IPV4 != 0,
        enforce_ipv6: raw.flags & PSEC_F_IPV6 != 0,
        addresses,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    #[test]
    fn eui64_link_local() {
        let a = PsecAddr::eui64_link_local(MAC);
        assert_eq!(a.addr.to_string(), "fe80::5054:ff:fe12:3456");
        assert_eq!(a.prefix_len, 128);
    }

    #[test]
    fn normalized_and_validated() {
        let other = [0x02, 0, 0, 0, 0, 0x99];
        let ps = PortSecurity {
            mac: MAC,
            extra_macs: vec![other, MAC, other],
            enforce_ipv4: true,
            enforce_ipv6: false,
            addresses: vec![
                PsecAddr {
                    addr: "10.0.0.77".parse().unwrap(),
                    prefix_len: 24,
                    mac: other,
                },
                PsecAddr::host("10.0.0.5".parse().unwrap(), MAC),
                PsecAddr::host("10.0.0.5".parse().unwrap(), MAC),
            ],
        }
        .normalized();
        assert_eq!(ps.extra_macs, vec![other]);
        assert_eq!(ps.addresses.len(), 2);
        assert!(ps
            .addresses
            .iter()
            .any(|a| a.addr.to_string() == "10.0.0.0" && a.prefix_len == 24));
        ps.validate().unwrap();
        let raw = RawL2Psec::encode(&ps);
        assert_eq!(decode(&raw, ps.addresses.clone()), ps);

        let mut bad = ps.clone();
        bad.addresses.push(PsecAddr::host(
            "10.0.0.9".parse().unwrap(),
            [0x02, 0, 0, 0, 0, 0x42],
        ));
        assert!(bad.validate().is_err());
        let mut bad = ps.clone();
        bad.mac = [0x01, 0, 0, 0, 0, 1];
        assert!(bad.validate().is_err());
        let mut bad = ps.clone();
        bad.extra_macs = vec![[0x02, 0, 0, 0, 0, 1]; 9];
        assert!(bad.validate().is_err());
        let mut bad = ps;
        bad.addresses[0].prefix_len = 33;
        assert!(bad.validate().is_err());
    }
}
