//! The L2 switch's operations on [`Datapath`]: ports, VLAN flood lists,
//! aging, the FDB and counters.

use std::{collections::BTreeSet, time::Duration};

use aya::maps::MapError;

use crate::{
    error::map_errno,
    l2::{
        self, RawFdb, RawFdbKey, RawL2Cn, RawL2Dhcp, RawL2Port, RawL2Vlan, RawVlanKey,
        RawVlanStats, FDB_F_STATIC, PORT_F_PEER, PORT_F_POLICY, VLAN_F_TO_HOST,
    },
    link::link_facts,
    ports::{ifindex_of, validate_ifname},
    tc::Hook,
    Datapath, DatapathError, FdbEntry, L2DhcpResponder, L2Mode, L2Port, L2PortFlags, L2Vlan,
    VlanStats, L2_DEFAULT_AGING, L2_MAX_MEMBERS, MAP_L2_CLUSTER_NETWORKS, MAP_L2_DHCP, MAP_L2_FDB,
    MAP_L2_PORTS, MAP_L2_VLANS, MAP_L2_VLAN_STATS, PROG_L2_INGRESS, PROG_L2_UPLINK_EGRESS,
};

const BPF_ANY: u64 = 0;
const BPF_NOEXIST: u64 = 1;

/// CLOCK_MONOTONIC in ns: the clock of bpf_ktime_get_ns().
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// ENOENT (removed meanwhile, or never there) is success for deletes.
pub(crate) fn ok_if_absent(
    map: &'static str,
    r: Result<(), MapError>,
) -> Result<(), DatapathError> {
    match r {
        Err(e) if map_errno(&e) == Some(libc::ENOENT) => Ok(()),
        Err(MapError::KeyNotFound) => Ok(()),
        r => r.map_err(|e| DatapathError::map(map, e)),
    }
}

pub(crate) fn insert_error(map: &'static str, max_entries: u32, e: MapError) -> DatapathError {
    if map_errno(&e) == Some(libc::E2BIG) {
        DatapathError::MapFull { map, max_entries }
    } else {
        DatapathError::map(map, e)
    }
}

/// The fields that decide where a port's frames belong: a change flushes
/// the MACs learned on it.
fn forwarding_identity(p: &RawL2Port) -> (u32, u8, u16, [u64; 64]) {
    (p.cn, p.mode, p.vid, p.allowed)
}

impl Datapath {
    // ---- ports -----------------------------------------------------------

    /// Makes `ifname` (index `ifindex`, in the calling thread's netns) a
    /// port of the switch of `port.cluster_network`: writes its port entry,
    /// creates its zeroed counters entry (an existing one is kept), and
    /// attaches `furrow_l2_ingress` at ingress (plus
    /// `furrow_l2_uplink_egress` at egress for an uplink) through this
    /// instance's pinned tcx links, replacing whatever program a link
    /// already ran in place (a management port becomes an L2 port
    /// without a gap; an egress link of ours on a VM port is removed).
    /// Links adopted after a restart are kept as they are; an older
    /// netd's cls_bpf filter is migrated.
    ///
    /// Idempotent, and the way to change a port's configuration: if its
    /// cluster network, mode or VLANs change, the MACs learned on it are
    /// flushed. A cluster network has at most one uplink per node.
    /// VLAN membership is separate: see [`Datapath::l2_set_vlan`].
    ///
    /// The port's [`L2PortFlags`] are kept as they are (none for a new
    /// port): a restarted netd re-attaching every port with this call
    /// leaves its responders trusted and local-only. To set them, use
    /// [`Datapath::l2_attach_port_with_flags`] or
    /// [`Datapath::l2_set_port_flags`].
    pub fn l2_attach_port(
        &mut self,
        ifname: &str,
        ifindex: u32,
        port: &L2Port,
    ) -> Result<(), DatapathError> {
        self.attach_l2(ifname, ifindex, port, None)
    }

    /// [`Datapath::l2_attach_port`] that also sets the port's policy
    /// flags, in the same port entry write: a DHCP responder port
    /// (`L2PortFlags::RESPONDER`) is local-only from its first frame on.
    /// Uplinks take no flags (`InvalidL2`).
    pub fn l2_attach_port_with_flags(
        &mut self,
        ifname: &str,
        ifindex: u32,
        port: &L2Port,
        flags: L2PortFlags,
    ) -> Result<(), DatapathError> {
        self.attach_l2(ifname, ifindex, port, Some(flags))
    }

    fn attach_l2(
        &mut self,
        ifname: &str,
        ifindex: u32,
        port: &L2Port,
        flags: Option<L2PortFlags>,
    ) -> Result<(), DatapathError> {
        validate_ifname(ifname)?;
        l2::validate_port(port)?;
        if let Some(f) = flags {
            l2::validate_flags(port, f)?;
            self.check_responder_flags(ifindex, f)?;
        }
        let actual = ifindex_of(ifname)?.ok_or_else(|| DatapathError::InterfaceNotFound {
            ifname: ifname.to_owned(),
        })?;
        if actual != ifindex {
            return Err(DatapathError::IfindexMismatch {
                ifname: ifname.to_owned(),
                expected: ifindex,
                actual,
            });
        }
        let facts = link_facts(ifindex)
            .map_err(|cause| DatapathError::Syscall {
                call: "reading the link (RTM_GETLINK)",
                cause,
            })?
            .ok_or_else(|| DatapathError::InterfaceNotFound {
                ifname: ifname.to_owned(),
            })?;
        let is_uplink = matches!(port.mode, L2Mode::Uplink { .. });
        let cn = port.cluster_network;
        if is_uplink {
            if let Some(other) = self.cn_uplink(cn)? {
                if other != ifindex {
                    return Err(DatapathError::InvalidL2(format!(
                        "cluster network {cn} already has an uplink on this node \
                         (ifindex {other}); detach it first"
                    )));
                }
            }
        }
        let prev = self.raw_l2_port(ifindex)?;
        let policy = match (flags, prev) {
            (Some(f), _) => f.bits(),
            // An uplink never keeps them (a VM port turned uplink).
            (None, Some(p)) if !is_uplink => p.flags & PORT_F_POLICY,
            (None, _) => 0,
        };
        let peer = if facts.redirect_peer_ok() && !is_uplink {
            PORT_F_PEER
        } else {
            0
        };
        let raw = RawL2Port::encode(port, peer | policy);

        // Counters first, so the very first frame is counted.
        self.ensure_stats_entry(ifindex)?;
        self.l2
            .ports
            .insert(ifindex, raw, BPF_ANY)
            .map_err(|e| insert_error(MAP_L2_PORTS, self.l2.max[0], e))?;
        if let Some(prev) = prev {
            if prev.is_uplink() && (!is_uplink || prev.cn != cn) {
                self.clear_cn_uplink(prev.cn, ifindex)?;
            }
            if forwarding_identity(&prev) != forwarding_identity(&raw) {
                self.fdb_flush_port(ifindex)?;
            }
        }
        if is_uplink {
            let mut cfg = self.cn_config(cn)?;
            cfg.uplink = ifindex;
            self.l2
                .cns
                .insert(cn, cfg, BPF_ANY)
                .map_err(|e| insert_error(MAP_L2_CLUSTER_NETWORKS, self.l2.max[3], e))?;
        }

        // Both hooks at once (each link change waits for RCU: see
        // attach_port).
        let (egress, ingress) = crate::ports::in_parallel(
            || {
                if is_uplink {
                    self.link_port(ifname, ifindex, Hook::Egress, PROG_L2_UPLINK_EGRESS)
                } else {
                    self.unlink_port(ifname, ifindex, Hook::Egress)
                }
            },
            || self.link_port(ifname, ifindex, Hook::Ingress, PROG_L2_INGRESS),
        );
        egress.and(ingress)
    }

    /// Takes a port out of the switch: removes our links (and unpins
    /// them) if `ifname` still has index `ifindex` (a newer device reusing
    /// the name is left alone; a gone device's defunct pins are removed),
    /// then its port entry, its counters, its place in every flood
    /// list, every FDB entry pointing at it (static ones included) and its
    /// port security.
    /// Idempotent; works when the device is already gone. `ifindex` 0
    /// means whatever interface has the name now.
    pub fn l2_detach_port(&mut self, ifname: &str, ifindex: u32) -> Result<(), DatapathError> {
        validate_ifname(ifname)?;
        let current = ifindex_of(ifname)?;
        let target = current.filter(|&i| ifindex == 0 || i == ifindex);
        if let Some(i) = target {
            let (ingress, egress) = crate::ports::in_parallel(
                || self.unlink_port(ifname, i, Hook::Ingress),
                || self.unlink_port(ifname, i, Hook::Egress),
            );
            ingress.and(egress)?;
        }
        let Some(idx) = (if ifindex == 0 { target } else { Some(ifindex) }) else {
            return Ok(());
        };
        if target.is_none() {
            self.unpin_defunct(idx)?;
        }
        if let Some(prev) = self.raw_l2_port(idx)? {
            if prev.is_uplink() {
                self.clear_cn_uplink(prev.cn, idx)?;
            }
        }
        ok_if_absent(MAP_L2_PORTS, self.l2.ports.remove(&idx))?;
        self.remove_stats_entry(idx)?;
        self.remove_from_flood_lists(idx)?;
        self.fdb_flush_port(idx)?;
        self.remove_dhcp_responder_port(idx)?;
        self.l2_clear_port_security(idx)?;
        Ok(())
    }

    /// Sets the policy flags of an attached port (its configuration and
    /// filters stay; nothing is flushed). `InvalidL2` if `ifindex` is not
    /// an L2 port, or is an uplink and `flags` are not none.
    pub fn l2_set_port_flags(
        &mut self,
        ifindex: u32,
        flags: L2PortFlags,
    ) -> Result<(), DatapathError> {
        let Some(mut raw) = self.raw_l2_port(ifindex)? else {
            return Err(DatapathError::InvalidL2(format!(
                "ifindex {ifindex} is not a port of the switch (l2_attach_port first)"
            )));
        };
        if let Some(port) = raw.decode() {
            l2::validate_flags(&port, flags)?;
        }
        self.check_responder_flags(ifindex, flags)?;
        raw.flags = (raw.flags & !PORT_F_POLICY) | flags.bits();
        // BPF_EXIST: a port detached meanwhile stays detached.
        match self.l2.ports.insert(ifindex, raw, 2) {
            Err(e) if map_errno(&e) == Some(libc::ENOENT) => Err(DatapathError::InvalidL2(
                format!("ifindex {ifindex} was detached meanwhile"),
            )),
            r => r.map_err(|e| DatapathError::map(MAP_L2_PORTS, e)),
        }
    }

    /// The policy flags of a port; `None` if it is not an L2 port.
    pub fn l2_port_flags(&self, ifindex: u32) -> Result<Option<L2PortFlags>, DatapathError> {
        Ok(self.raw_l2_port(ifindex)?.map(|r| r.policy_flags()))
    }

    /// Every L2 port entry, by ifindex (ports whose device is gone stay
    /// until [`Datapath::l2_detach_port`]).
    pub fn l2_ports(&self) -> Result<Vec<(u32, L2Port)>, DatapathError> {
        let mut out = Vec::new();
        for r in self.l2.ports.iter() {
            match r {
                Ok((k, v)) => {
                    if let Some(p) = v.decode() {
                        out.push((k, p));
                    }
                }
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(DatapathError::map(MAP_L2_PORTS, e)),
            }
        }
        out.sort_by_key(|(k, _)| *k);
        Ok(out)
    }

    /// One L2 port's configuration.
    pub fn l2_port(&self, ifindex: u32) -> Result<Option<L2Port>, DatapathError> {
        Ok(self.raw_l2_port(ifindex)?.and_then(|r| r.decode()))
    }

    pub(crate) fn raw_l2_port(&self, ifindex: u32) -> Result<Option<RawL2Port>, DatapathError> {
        match self.l2.ports.get(&ifindex, 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(DatapathError::map(MAP_L2_PORTS, e)),
        }
    }

    // ---- VLANs -----------------------------------------------------------

    /// Sets the flood list of VLAN `vid` (0 = untagged) of a cluster
    /// network on this node, replacing any previous one: the ifindexes of
    /// every port that carries it here, the uplink included. Broadcast,
    /// multicast and unknown unicast go to these ports (minus the one the
    /// frame came from); a VLAN without an entry drops what arrives for
    /// it (untagged frames on the uplink go to the node's stack instead).
    ///
    /// `to_host` (VLAN 0 only): the node's own stack on the uplink is part
    /// of the VLAN: VMs reach the uplink's MAC, their broadcasts reach the
    /// node, and the node's frames reach local VMs.
    ///
    /// At most [`crate::L2_MAX_MEMBERS`] distinct ports
    /// ([`DatapathError::TooManyMembers`] above). Duplicates are ignored.
    pub fn l2_set_vlan(
        &mut self,
        cluster_network: u32,
        vid: u16,
        members: &[u32],
        to_host: bool,
    ) -> Result<(), DatapathError> {
        l2::validate_vid(vid)?;
        if to_host && vid != 0 {
            return Err(DatapathError::InvalidL2(format!(
                "VLAN {vid}: only VLAN 0 (untagged) can deliver to the node's stack"
            )));
        }
        let mut seen = BTreeSet::new();
        let list: Vec<u32> = members
            .iter()
            .copied()
            .filter(|m| seen.insert(*m))
            .collect();
        if list.contains(&0) {
            return Err(DatapathError::InvalidL2(format!(
                "VLAN {vid}: member ifindex 0"
            )));
        }
        if list.len() > L2_MAX_MEMBERS {
            return Err(DatapathError::TooManyMembers {
                cluster_network,
                vid,
                members: list.len(),
                max: L2_MAX_MEMBERS,
            });
        }
        let mut raw = RawL2Vlan {
            flags: if to_host { VLAN_F_TO_HOST } else { 0 },
            count: list.len() as u32,
            aging_ns: self.cn_config(cluster_network)?.aging_ns,
            members: [0; L2_MAX_MEMBERS],
        };
        raw.members[..list.len()].copy_from_slice(&list);
        let key = RawVlanKey::new(cluster_network, vid);
        self.ensure_vlan_stats(key)?;
        self.l2
            .vlans
            .insert(key, raw, BPF_ANY)
            .map_err(|e| insert_error(MAP_L2_VLANS, self.l2.max[1], e))
    }

    /// Removes a VLAN from this node: its flood list, its counters and
    /// every FDB entry of it. Idempotent.
    pub fn l2_remove_vlan(&mut self, cluster_network: u32, vid: u16) -> Result<(), DatapathError> {
        let key = RawVlanKey::new(cluster_network, vid);
        ok_if_absent(MAP_L2_VLANS, self.l2.vlans.remove(&key))?;
        ok_if_absent(MAP_L2_VLAN_STATS, self.l2.vlan_stats.remove(&key))?;
        self.fdb_flush_where(|k, _| k.cn == cluster_network && k.vid == vid)?;
        Ok(())
    }

    /// Every VLAN flood list, sorted by (cluster network, VLAN).
    pub fn l2_vlans(&self) -> Result<Vec<L2Vlan>, DatapathError> {
        let mut out = Vec::new();
        for r in self.l2.vlans.iter() {
            match r {
                Ok((k, v)) => out.push(L2Vlan {
                    cluster_network: k.cn,
                    vid: k.vid,
                    members: v.members[..(v.count as usize).min(L2_MAX_MEMBERS)].to_vec(),
                    to_host: v.flags & VLAN_F_TO_HOST != 0,
                }),
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(DatapathError::map(MAP_L2_VLANS, e)),
            }
        }
        out.sort_by_key(|v| (v.cluster_network, v.vid));
        Ok(out)
    }

    fn remove_from_flood_lists(&mut self, ifindex: u32) -> Result<(), DatapathError> {
        let mut changed = Vec::new();
        for r in self.l2.vlans.iter() {
            match r {
                Ok((k, mut v)) => {
                    let n = (v.count as usize).min(L2_MAX_MEMBERS);
                    if v.members[..n].contains(&ifindex) {
                        let kept: Vec<u32> = v.members[..n]
                            .iter()
                            .copied()
                            .filter(|m| *m != ifindex)
                            .collect();
                        v.members = [0; L2_MAX_MEMBERS];
                        v.members[..kept.len()].copy_from_slice(&kept);
                        v.count = kept.len() as u32;
                        changed.push((k, v));
                    }
                }
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(DatapathError::map(MAP_L2_VLANS, e)),
            }
        }
        for (k, v) in changed {
            // BPF_EXIST: a VLAN removed meanwhile stays removed.
            match self.l2.vlans.insert(k, v, 2) {
                Err(e) if map_errno(&e) == Some(libc::ENOENT) => {}
                r => r.map_err(|e| DatapathError::map(MAP_L2_VLANS, e))?,
            }
        }
        Ok(())
    }

    fn ensure_vlan_stats(&mut self, key: RawVlanKey) -> Result<(), DatapathError> {
        let ncpus = aya::util::nr_cpus()
            .map_err(|(what, cause)| DatapathError::Syscall { call: what, cause })?;
        let zero = aya::maps::PerCpuValues::try_from(vec![RawVlanStats::default(); ncpus])
            .map_err(|e| DatapathError::Syscall {
                call: "per-cpu values",
                cause: e,
            })?;
        match self.l2.vlan_stats.insert(key, zero, BPF_NOEXIST) {
            Ok(()) => Ok(()),
            Err(e) => match map_errno(&e) {
                Some(libc::EEXIST) => Ok(()),
                Some(libc::E2BIG) => Err(DatapathError::MapFull {
                    map: MAP_L2_VLAN_STATS,
                    max_entries: self.l2.max[4],
                }),
                _ => Err(DatapathError::map(MAP_L2_VLAN_STATS, e)),
            },
        }
    }

    // ---- DHCP ------------------------------------------------------------

    /// Sets (`Some(ifindex)`) or clears (`None`) the DHCP responder port
    /// of VLAN `vid` (0 = untagged) of a cluster network on this node: the
    /// switch end of the veth whose other end netd's DHCP server reads.
    ///
    /// While set, IPv4 UDP frames to port 67 (DISCOVER, REQUEST, DECLINE,
    /// RELEASE, INFORM; broadcast or unicast) arriving on that VLAN from a
    /// VM port go to the responder only: not flooded, never to the uplink
    /// (`dhcp_steered` in [`VlanStats`]). From the uplink they are switched
    /// as usual (and never reach a local-only port). Without a responder,
    /// DHCP frames are switched like any other.
    ///
    /// The responder must already be attached
    /// ([`Datapath::l2_attach_port_with_flags`]) as a port of this
    /// cluster network carrying `vid`, not an uplink, with
    /// [`L2PortFlags::RESPONDER`] (trusted: its replies pass the DHCP
    /// guard; local-only: its frames, sent from the same MAC and IP on
    /// every node, stay on this node); `InvalidL2` otherwise. If it is
    /// later reconfigured off the VLAN, client frames are dropped
    /// (`drop_other`, [`crate::L2Verdict::DropNoResponder`]) until this
    /// is set again; its detach clears the setting. Idempotent.
    /// [`Datapath::l2_remove_vlan`] leaves it (it belongs to the
    /// responder port's lifecycle).
    pub fn l2_set_dhcp_responder(
        &mut self,
        cluster_network: u32,
        vid: u16,
        responder: Option<u32>,
    ) -> Result<(), DatapathError> {
        l2::validate_vid(vid)?;
        let key = RawVlanKey::new(cluster_network, vid);
        let Some(ifindex) = responder else {
            return ok_if_absent(MAP_L2_DHCP, self.l2.dhcp.remove(&key));
        };
        let bad = |why: &str| {
            Err(DatapathError::InvalidL2(format!(
                "DHCP responder of VLAN {vid} of cluster network {cluster_network}: \
                 ifindex {ifindex} {why}"
            )))
        };
        let Some(raw) = self.raw_l2_port(ifindex)? else {
            return bad("is not a port of the switch (attach it first)");
        };
        let Some(port) = raw.decode() else {
            return bad("has a port mode this build does not know");
        };
        let carries = match port.mode {
            L2Mode::Access { vid: v } => v == vid,
            L2Mode::Untagged => vid == 0,
            L2Mode::Trunk { allowed } => allowed.contains(vid),
            L2Mode::Uplink { .. } => return bad("is an uplink"),
        };
        if port.cluster_network != cluster_network || !carries {
            return bad("does not carry this VLAN of this cluster network");
        }
        if raw.policy_flags() != L2PortFlags::RESPONDER {
            return bad("must be trusted and local-only (L2PortFlags::RESPONDER)");
        }
        let val = RawL2Dhcp {
            responder: ifindex,
            flags: 0,
        };
        self.l2
            .dhcp
            .insert(key, val, BPF_ANY)
            .map_err(|e| insert_error(MAP_L2_DHCP, self.l2.max[5], e))
    }

    /// The DHCP responder port of a VLAN, if it has one.
    pub fn l2_dhcp_responder(
        &self,
        cluster_network: u32,
        vid: u16,
    ) -> Result<Option<u32>, DatapathError> {
        match self.l2.dhcp.get(&RawVlanKey::new(cluster_network, vid), 0) {
            Ok(v) if v.responder != 0 => Ok(Some(v.responder)),
            Ok(_) | Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(DatapathError::map(MAP_L2_DHCP, e)),
        }
    }

    /// Every DHCP responder setting, sorted by (cluster network, VLAN).
    pub fn l2_dhcp_responders(&self) -> Result<Vec<L2DhcpResponder>, DatapathError> {
        let mut out = Vec::new();
        for r in self.l2.dhcp.iter() {
            match r {
                Ok((k, v)) if v.responder != 0 => out.push(L2DhcpResponder {
                    cluster_network: k.cn,
                    vid: k.vid,
                    ifindex: v.responder,
                }),
                Ok(_) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(DatapathError::map(MAP_L2_DHCP, e)),
            }
        }
        out.sort_by_key(|d| (d.cluster_network, d.vid));
        Ok(out)
    }

    /// The VLANs `ifindex` is the DHCP responder of.
    fn responder_of(&self, ifindex: u32) -> Result<Vec<RawVlanKey>, DatapathError> {
        let mut out = Vec::new();
        for r in self.l2.dhcp.iter() {
            match r {
                Ok((k, v)) if v.responder == ifindex => out.push(k),
                Ok(_) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(DatapathError::map(MAP_L2_DHCP, e)),
            }
        }
        Ok(out)
    }

    /// A responder keeps [`L2PortFlags::RESPONDER`] while it is one.
    fn check_responder_flags(&self, ifindex: u32, flags: L2PortFlags) -> Result<(), DatapathError> {
        if flags == L2PortFlags::RESPONDER {
            return Ok(());
        }
        if let Some(k) = self.responder_of(ifindex)?.first() {
            return Err(DatapathError::InvalidL2(format!(
                "ifindex {ifindex} is the DHCP responder of VLAN {} of cluster network {}: \
                 it stays trusted and local-only (clear it with l2_set_dhcp_responder first)",
                k.vid, k.cn
            )));
        }
        Ok(())
    }

    fn remove_dhcp_responder_port(&mut self, ifindex: u32) -> Result<(), DatapathError> {
        for k in self.responder_of(ifindex)? {
            ok_if_absent(MAP_L2_DHCP, self.l2.dhcp.remove(&k))?;
        }
        Ok(())
    }

    // ---- cluster networks -----------------------------------------------

    /// Sets how long a learned MAC of a cluster network stays valid
    /// without traffic (a dynamic entry older than that is ignored by the
    /// datapath and removed by [`Datapath::fdb_expire`]). Until set, a
    /// network uses [`crate::L2_DEFAULT_AGING`]. Applies to its VLANs at
    /// once.
    pub fn l2_set_aging(
        &mut self,
        cluster_network: u32,
        aging: Duration,
    ) -> Result<(), DatapathError> {
        if aging.is_zero() {
            return Err(DatapathError::InvalidL2(
                "MAC aging must be longer than 0".into(),
            ));
        }
        let mut cfg = self.cn_config(cluster_network)?;
        cfg.aging_ns = duration_ns(aging);
        self.l2
            .cns
            .insert(cluster_network, cfg, BPF_ANY)
            .map_err(|e| insert_error(MAP_L2_CLUSTER_NETWORKS, self.l2.max[3], e))?;
        // The datapath reads the aging from the VLAN entry it already has.
        let mut updates = Vec::new();
        for r in self.l2.vlans.iter() {
            match r {
                Ok((k, mut v)) if k.cn == cluster_network && v.aging_ns != cfg.aging_ns => {
                    v.aging_ns = cfg.aging_ns;
                    updates.push((k, v));
                }
                Ok(_) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(DatapathError::map(MAP_L2_VLANS, e)),
            }
        }
        for (k, v) in updates {
            match self.l2.vlans.insert(k, v, 2) {
                Err(e) if map_errno(&e) == Some(libc::ENOENT) => {}
                r => r.map_err(|e| DatapathError::map(MAP_L2_VLANS, e))?,
            }
        }
        Ok(())
    }

    /// The MAC aging of a cluster network.
    pub fn l2_aging(&self, cluster_network: u32) -> Result<Duration, DatapathError> {
        Ok(Duration::from_nanos(
            self.cn_config(cluster_network)?.aging_ns,
        ))
    }

    fn cn_config(&self, cn: u32) -> Result<RawL2Cn, DatapathError> {
        match self.l2.cns.get(&cn, 0) {
            Ok(v) => Ok(v),
            Err(MapError::KeyNotFound) => Ok(RawL2Cn {
                aging_ns: duration_ns(L2_DEFAULT_AGING),
                uplink: 0,
                flags: 0,
            }),
            Err(e) => Err(DatapathError::map(MAP_L2_CLUSTER_NETWORKS, e)),
        }
    }

    /// The uplink registered for `cn`, if its port entry still says so.
    fn cn_uplink(&self, cn: u32) -> Result<Option<u32>, DatapathError> {
        let up = self.cn_config(cn)?.uplink;
        if up == 0 {
            return Ok(None);
        }
        Ok(self
            .raw_l2_port(up)?
            .filter(|p| p.is_uplink() && p.cn == cn)
            .map(|_| up))
    }

    fn clear_cn_uplink(&mut self, cn: u32, ifindex: u32) -> Result<(), DatapathError> {
        let mut cfg = match self.l2.cns.get(&cn, 0) {
            Ok(v) => v,
            Err(MapError::KeyNotFound) => return Ok(()),
            Err(e) => return Err(DatapathError::map(MAP_L2_CLUSTER_NETWORKS, e)),
        };
        if cfg.uplink != ifindex {
            return Ok(());
        }
        cfg.uplink = 0;
        self.l2
            .cns
            .insert(cn, cfg, BPF_ANY)
            .map_err(|e| DatapathError::map(MAP_L2_CLUSTER_NETWORKS, e))
    }

    // ---- FDB -------------------------------------------------------------

    /// Installs a static FDB entry: frames to `mac` on (cluster network,
    /// `vid`) go to `ifindex`. Learning never moves or ages it; it goes
    /// with [`Datapath::fdb_remove`], [`Datapath::fdb_flush_port`] or the
    /// port's detach. Replaces any entry for the MAC (a dynamic one
    /// pointing at the uplink after a migration, typically). Idempotent.
    ///
    /// The FDB is an LRU map of [`crate::L2_MAX_FDB`] entries: if learning
    /// ever fills it, the least recently used entries are evicted, static
    /// ones included (frames to such a MAC are flooded, so still reach
    /// it, until it is learned again); netd re-installing its static
    /// entries on resync repairs that.
    pub fn fdb_add_static(
        &mut self,
        cluster_network: u32,
        vid: u16,
        mac: [u8; 6],
        ifindex: u32,
    ) -> Result<(), DatapathError> {
        l2::validate_vid(vid)?;
        if mac[0] & 1 == 1 || mac == [0; 6] {
            return Err(DatapathError::InvalidL2(format!(
                "static FDB entry for {}: expected a unicast MAC",
                l2::fmt_mac(&mac)
            )));
        }
        if ifindex == 0 {
            return Err(DatapathError::InvalidL2(
                "static FDB entry: ifindex 0".into(),
            ));
        }
        let key = RawFdbKey {
            cn: cluster_network,
            vid,
            mac,
        };
        let val = RawFdb {
            ifindex,
            flags: FDB_F_STATIC,
            last_seen: 0,
        };
        self.l2
            .fdb
            .insert(key, val, BPF_ANY)
            .map_err(|e| DatapathError::map(MAP_L2_FDB, e))
    }

    /// Removes the entry for `mac` (static or learned). Idempotent.
    pub fn fdb_remove(
        &mut self,
        cluster_network: u32,
        vid: u16,
        mac: [u8; 6],
    ) -> Result<(), DatapathError> {
        let key = RawFdbKey {
            cn: cluster_network,
            vid,
            mac,
        };
        ok_if_absent(MAP_L2_FDB, self.l2.fdb.remove(&key))
    }

    /// Removes every entry (static or learned) pointing at `ifindex`;
    /// returns how many.
    pub fn fdb_flush_port(&mut self, ifindex: u32) -> Result<u32, DatapathError> {
        self.fdb_flush_where(|_, v| v.ifindex == ifindex)
    }

    /// Every FDB entry, sorted by (cluster network, VLAN, MAC). Ages are
    /// as of this call; entries the datapath already ignores (older than
    /// their network's aging) are listed until [`Datapath::fdb_expire`].
    pub fn fdb_entries(&self) -> Result<Vec<FdbEntry>, DatapathError> {
        let now = monotonic_ns();
        let mut out: Vec<FdbEntry> = self
            .fdb_raw()?
            .into_iter()
            .map(|(k, v)| {
                let is_static = v.flags & FDB_F_STATIC != 0;
                FdbEntry {
                    cluster_network: k.cn,
                    vid: k.vid,
                    mac: k.mac,
                    ifindex: v.ifindex,
                    is_static,
                    age: (!is_static)
                        .then(|| Duration::from_nanos(now.saturating_sub(v.last_seen))),
                }
            })
            .collect();
        out.sort_by_key(|e| (e.cluster_network, e.vid, e.mac));
        Ok(out)
    }

    /// Deletes the dynamic entries older than their cluster network's
    /// aging; returns how many. netd calls it periodically (every few
    /// seconds up to a tenth of the aging time); the datapath already
    /// ignores such entries, this only frees their room.
    pub fn fdb_expire(&mut self) -> Result<u32, DatapathError> {
        let now = monotonic_ns();
        let mut aging = std::collections::BTreeMap::new();
        for (k, _) in self.fdb_raw()? {
            if let std::collections::btree_map::Entry::Vacant(e) = aging.entry(k.cn) {
                e.insert(self.cn_config(k.cn)?.aging_ns);
            }
        }
        self.fdb_flush_where(|k, v| {
            v.flags & FDB_F_STATIC == 0
                && now.saturating_sub(v.last_seen) > aging.get(&k.cn).copied().unwrap_or(u64::MAX)
        })
    }

    fn fdb_raw(&self) -> Result<Vec<(RawFdbKey, RawFdb)>, DatapathError> {
        let mut out = Vec::new();
        for r in self.l2.fdb.iter() {
            match r {
                Ok(kv) => out.push(kv),
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(DatapathError::map(MAP_L2_FDB, e)),
            }
        }
        Ok(out)
    }

    fn fdb_flush_where(
        &mut self,
        pred: impl Fn(&RawFdbKey, &RawFdb) -> bool,
    ) -> Result<u32, DatapathError> {
        let victims: Vec<RawFdbKey> = self
            .fdb_raw()?
            .into_iter()
            .filter(|(k, v)| pred(k, v))
            .map(|(k, _)| k)
            .collect();
        let mut n = 0;
        for k in victims {
            match self.l2.fdb.remove(&k) {
                Ok(()) => n += 1,
                r => ok_if_absent(MAP_L2_FDB, r)?,
            }
        }
        Ok(n)
    }

    // ---- counters --------------------------------------------------------

    /// Counters of every VLAN present on this node, sorted by (cluster
    /// network, VLAN).
    pub fn vlan_stats(&self) -> Result<Vec<(u32, u16, VlanStats)>, DatapathError> {
        let mut out = Vec::new();
        for r in self.l2.vlan_stats.iter() {
            match r {
                Ok((k, values)) => out.push((k.cn, k.vid, VlanStats::sum(values.iter()))),
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(DatapathError::map(MAP_L2_VLAN_STATS, e)),
            }
        }
        out.sort_by_key(|(c, v, _)| (*c, *v));
        Ok(out)
    }

    /// Counters of one VLAN; `None` if it is not on this node.
    pub fn vlan_stats_of(
        &self,
        cluster_network: u32,
        vid: u16,
    ) -> Result<Option<VlanStats>, DatapathError> {
        match self
            .l2
            .vlan_stats
            .get(&RawVlanKey::new(cluster_network, vid), 0)
        {
            Ok(values) => Ok(Some(VlanStats::sum(values.iter()))),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(DatapathError::map(MAP_L2_VLAN_STATS, e)),
        }
    }
}
