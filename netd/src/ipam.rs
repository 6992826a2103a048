//! Address pools. A pool is the in-memory view of one node subnet; the
//! store is the truth (every allocation is committed with a create-only
//! compare before anyone sees the address), the pool only makes picking
//! a free address cheap and rotates through the subnet so a just-freed
//! address is not handed out again at once (stale ARP entries, stale
//! conntrack).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IpamError {
    #[error("no free address left in {subnet} ({capacity} usable, all allocated)")]
    Exhausted { subnet: Ipv4Net, capacity: u32 },
    #[error("{ip} is not a usable address of {subnet} (network, broadcast and gateway {gateway} are reserved)")]
    OutOfRange {
        ip: Ipv4Addr,
        subnet: Ipv4Net,
        gateway: Ipv4Addr,
    },
    #[error("{ip} is already allocated")]
    InUse { ip: Ipv4Addr },
}

#[derive(Debug, Clone)]
pub struct Pool {
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    used: BTreeSet<Ipv4Addr>,
    /// Offset (from the network address) where the next search starts.
    cursor: u32,
}

impl Pool {
    /// A pool over `subnet` whose first host address is the gateway.
    pub fn new(subnet: Ipv4Net) -> Self {
        let gateway = Self::first_host(subnet);
        Pool {
            subnet,
            gateway,
            used: BTreeSet::new(),
            cursor: 2,
        }
    }

    pub fn first_host(subnet: Ipv4Net) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(subnet.network()) + 1)
    }

    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// Addresses that can be given to ports: all but the network,
    /// broadcast and gateway addresses.
    pub fn capacity(&self) -> u32 {
        let size = 1u64 << (32 - self.subnet.prefix_len());
        size.saturating_sub(3) as u32
    }

    pub fn allocated(&self) -> u32 {
        self.used.len() as u32
    }

    pub fn is_used(&self, ip: Ipv4Addr) -> bool {
        self.used.contains(&ip)
    }

    pub fn is_usable(&self, ip: Ipv4Addr) -> bool {
        self.subnet.contains(&ip)
            && ip != self.subnet.network()
            && ip != self.subnet.broadcast()
            && ip != self.gateway
    }

    /// Chooses an address without taking it: the requested one if it is
    /// usable and free, else the next free one after the cursor.
    pub fn pick(&self, requested: Option<Ipv4Addr>) -> Result<Ipv4Addr, IpamError> {
        if let Some(ip) = requested {
            if !self.is_usable(ip) {
                return Err(IpamError::OutOfRange {
                    ip,
                    subnet: self.subnet,
                    gateway: self.gateway,
                });
            }
            if self.used.contains(&ip) {
                return Err(IpamError::InUse { ip });
            }
            return Ok(ip);
        }
        let base = u32::from(self.subnet.network());
        let size = 1u32 << (32 - self.subnet.prefix_len());
        if self.used.len() as u32 >= self.capacity() {
            return Err(IpamError::Exhausted {
                subnet: self.subnet,
                capacity: self.capacity(),
            });
        }
        for step in 0..size {
            let off = (self.cursor + step) % size;
            let ip = Ipv4Addr::from(base + off);
            if self.is_usable(ip) && !self.used.contains(&ip) {
                return Ok(ip);
            }
        }
        Err(IpamError::Exhausted {
            subnet: self.subnet,
            capacity: self.capacity(),
        })
    }

    /// Records an address as taken (after the store committed it).
    pub fn take(&mut self, ip: Ipv4Addr) {
        self.used.insert(ip);
        let off = u32::from(ip).wrapping_sub(u32::from(self.subnet.network()));
        self.cursor = off.wrapping_add(1);
    }

    pub fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&ip);
    }

    pub fn used(&self) -> impl Iterator<Item = &Ipv4Addr> {
        self.used.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_each_address_once_then_reports_exhaustion() {
        let mut p = Pool::new("10.0.0.0/29".parse().unwrap());
        assert_eq!(p.gateway(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.capacity(), 5);
        let mut got = Vec::new();
        for _ in 0..5 {
            let ip = p.pick(None).unwrap();
            p.take(ip);
            got.push(ip);
        }
        let mut sorted = got.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 5);
        assert!(!got.contains(&Ipv4Addr::new(10, 0, 0, 0)));
        assert!(!got.contains(&Ipv4Addr::new(10, 0, 0, 1)));
        assert!(!got.contains(&Ipv4Addr::new(10, 0, 0, 7)));
        assert!(matches!(p.pick(None), Err(IpamError::Exhausted { .. })));
    }

    #[test]
    fn does_not_reuse_a_freed_address_immediately() {
        let mut p = Pool::new("10.0.0.0/24".parse().unwrap());
        let a = p.pick(None).unwrap();
        p.take(a);
        p.release(a);
        let b = p.pick(None).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn requested_addresses_are_checked() {
        let mut p = Pool::new("10.0.0.0/24".parse().unwrap());
        assert!(matches!(
            p.pick(Some("10.0.0.1".parse().unwrap())),
            Err(IpamError::OutOfRange { .. })
        ));
        assert!(matches!(
            p.pick(Some("10.0.1.5".parse().unwrap())),
            Err(IpamError::OutOfRange { .. })
        ));
        assert!(matches!(
            p.pick(Some("10.0.0.255".parse().unwrap())),
            Err(IpamError::OutOfRange { .. })
        ));
        let ip = "10.0.0.9".parse().unwrap();
        assert_eq!(p.pick(Some(ip)).unwrap(), ip);
        p.take(ip);
        assert_eq!(p.pick(Some(ip)), Err(IpamError::InUse { ip }));
    }

    #[test]
    fn wraps_around_the_subnet() {
        let mut p = Pool::new("10.0.0.0/29".parse().unwrap());
        p.take("10.0.0.6".parse().unwrap());
        assert_eq!(p.pick(None).unwrap(), Ipv4Addr::new(10, 0, 0, 2));
    }
}
