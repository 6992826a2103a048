//! An in-memory [`LeaseView`] that also applies [`LeaseChange`]s: for
//! tests, the fuzz target, and anything with a single writer.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use furrow_api::resource::Ipv4PoolConfig;
use furrow_api::MacAddr;

use super::{Lease, LeaseChange, LeaseState, LeaseView};

#[derive(Debug, Clone, Default)]
pub struct MemoryLeases {
    range: Option<(u32, u32)>,
    leases: BTreeMap<Ipv4Addr, Lease>,
    reservations: BTreeMap<MacAddr, Ipv4Addr>,
}

impl MemoryLeases {
    /// Empty, with free candidates drawn from `pool`'s range.
    pub fn new(pool: &Ipv4PoolConfig) -> Self {
        MemoryLeases {
            range: Some((u32::from(pool.pool.start), u32::from(pool.pool.end))),
            ..Default::default()
        }
    }

    pub fn reserve(&mut self, mac: MacAddr, ip: Ipv4Addr) {
        self.reservations.insert(mac, ip);
    }

    /// Puts a record as is (tests set up state with it).
    pub fn insert(&mut self, lease: Lease) {
        self.leases.insert(lease.ip, lease);
    }

    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.leases.values()
    }

    pub fn get(&self, ip: Ipv4Addr) -> Option<&Lease> {
        self.leases.get(&ip)
    }

    /// Applies a change the way netd's transaction must: one Offered/Bound
    /// record per MAC, `supersedes` deleted with the write.
    pub fn apply(&mut self, change: &LeaseChange) {
        match change {
            LeaseChange::Offer { lease, supersedes } | LeaseChange::Bind { lease, supersedes } => {
                if let Some(old) = supersedes {
                    self.leases.remove(old);
                }
                let mac = lease.mac;
                self.leases
                    .retain(|_, l| l.mac != mac || l.state == LeaseState::Declined);
                self.leases.insert(lease.ip, lease.clone());
            }
            LeaseChange::Release { ip, mac } => {
                if self.leases.get(ip).is_some_and(|l| l.mac == *mac) {
                    self.leases.remove(ip);
                }
            }
            LeaseChange::Decline { ip, mac, until } => {
                self.leases.insert(
                    *ip,
                    Lease {
                        ip: *ip,
                        mac: *mac,
                        client_id: None,
                        hostname: None,
                        state: LeaseState::Declined,
                        expires_at: *until,
                        node: String::new(),
                    },
                );
            }
        }
    }
}

impl LeaseView for MemoryLeases {
    fn by_mac(&self, mac: MacAddr) -> Option<Lease> {
        self.leases
            .values()
            .find(|l| l.mac == mac && l.state != LeaseState::Declined)
            .cloned()
    }

    fn by_ip(&self, ip: Ipv4Addr) -> Option<Lease> {
        self.leases.get(&ip).cloned()
    }

    fn reserved_ip(&self, mac: MacAddr) -> Option<Ipv4Addr> {
        self.reservations.get(&mac).copied()
    }

    fn reserved_for(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self.reservations
            .iter()
            .find(|(_, r)| **r == ip)
            .map(|(m, _)| *m)
    }

    fn free_candidates(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        // Never-used addresses first, then those with (maybe expired)
        // records; decide() filters.
        let (s, e) = self.range.unwrap_or((1, 0));
        let unused = (s..=e)
            .map(Ipv4Addr::from)
            .filter(|ip| !self.leases.contains_key(ip));
        let used = self.leases.keys().copied();
        unused.chain(used)
    }

    fn by_client_id(&self, client_id: &[u8]) -> Option<Lease> {
        self.leases
            .values()
            .find(|l| l.client_id.as_deref() == Some(client_id) && l.state != LeaseState::Declined)
            .cloned()
    }
}
