//! What the eBPF switch holds, read from its maps, for netctl's `fdb`,
//! `vlans` and `counters` views (`GET /v1/fdb`, `/v1/vlans`,
//! `/v1/counters`). Every number comes from the maps the datapath uses;
//! netd's own state only puts names on ifindexes and cluster network ids.

use std::collections::BTreeMap;
use std::time::Duration;

use furrow_api::wire_diag::{
    ClusterNetworkVlans, CountersView, Drops, FdbEntryInfo, FdbView, PortDrops, PortRef,
    VlanCounters, VlanDetail, VlanDrops, VlanMember, VlansView,
};
use furrow_api::{ApiError, MacAddr};
use furrow_ebpf::{
    Datapath, DatapathError, FdbEntry, L2DhcpResponder, L2Mode, L2Port, L2PortFlags, L2Vlan,
    PortStats, VlanStats,
};

use super::backend::{BackendKind, Realized};
use super::{PortMode, VlanDriver};
use crate::drivers::common::kernel;
use crate::ports::{self, AnyPort};
use crate::resources::store_error;

/// One read of the switch's maps.
#[derive(Default)]
struct Snapshot {
    ports: BTreeMap<u32, (L2Port, L2PortFlags)>,
    vlans: Vec<L2Vlan>,
    fdb: Vec<FdbEntry>,
    vlan_stats: BTreeMap<(u32, u16), VlanStats>,
    port_stats: Vec<(u32, PortStats)>,
    responders: Vec<L2DhcpResponder>,
    aging: BTreeMap<u32, Duration>,
}

fn read(dp: &Datapath) -> Result<Snapshot, DatapathError> {
    let mut ports = BTreeMap::new();
    for (idx, p) in dp.l2_ports()? {
        let flags = dp.l2_port_flags(idx)?.unwrap_or_default();
        ports.insert(idx, (p, flags));
    }
    let fdb = dp.fdb_entries()?;
    let mut aging = BTreeMap::new();
    for cn in fdb
        .iter()
        .map(|e| e.cluster_network)
        .chain(ports.values().map(|(p, _)| p.cluster_network))
    {
        if let std::collections::btree_map::Entry::Vacant(v) = aging.entry(cn) {
            v.insert(dp.l2_aging(cn)?);
        }
    }
    Ok(Snapshot {
        ports,
        vlans: dp.l2_vlans()?,
        fdb,
        vlan_stats: dp
            .vlan_stats()?
            .into_iter()
            .map(|(c, v, s)| ((c, v), s))
            .collect(),
        port_stats: dp.all_port_stats()?,
        responders: dp.l2_dhcp_responders()?,
        aging,
    })
}

/// Names for ifindexes and cluster network ids.
struct Names {
    ports: BTreeMap<u32, (PortRef, Option<String>)>,
    ifnames: BTreeMap<u32, String>,
    cns: BTreeMap<u32, String>,
    /// (name, backend, id, uplink ifindex, VLAN -> local members) per
    /// cluster network, sorted by name.
    nets: Vec<NetFacts>,
    /// VLAN port ifindex -> its mode (for the bridge backend).
    modes: BTreeMap<u32, PortMode>,
}

struct NetFacts {
    name: String,
    backend: BackendKind,
    id: u32,
    uplink: Option<u32>,
    members: BTreeMap<u16, Vec<u32>>,
}

fn owner_of(pod: &furrow_api::cni::PodRef, container_id: &str) -> String {
    match (&pod.namespace, &pod.name) {
        (Some(ns), Some(n)) => format!("{ns}/{n}"),
        (None, Some(n)) => n.clone(),
        _ => container_id.chars().take(12).collect(),
    }
}

impl Names {
    fn port(&self, ifindex: u32) -> PortRef {
        self.ports
            .get(&ifindex)
            .map(|(p, _)| p.clone())
            .unwrap_or_else(|| PortRef {
                ifindex,
                ifname: self.ifnames.get(&ifindex).cloned().unwrap_or_default(),
                kind: "unknown".into(),
                owner: None,
            })
    }

    fn network(&self, ifindex: u32) -> Option<String> {
        self.ports.get(&ifindex).and_then(|(_, n)| n.clone())
    }

    fn cn(&self, id: u32) -> String {
        self.cns
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("#{id}"))
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn vlan_counters(s: &VlanStats) -> VlanCounters {
    VlanCounters {
        rx_packets: s.rx_packets,
        rx_bytes: s.rx_bytes,
        unicast_packets: s.unicast_packets,
        flood_packets: s.flood_packets,
        flood_copies: s.flood_copies,
        to_host_packets: s.to_host_packets,
        from_host_packets: s.from_host_packets,
        dhcp_steered: s.dhcp_steered,
        drops: Drops {
            vlan_filter: 0,
            dhcp_guard: s.drop_dhcp_guard,
            mtu: s.drop_mtu,
            hairpin: s.drop_hairpin,
            local_only: s.drop_local_only,
            policy: 0,
            malformed: 0,
            other: s.drop_other,
            // Port security counts per port only.
            ..Default::default()
        },
    }
}

fn port_drops(s: &PortStats) -> Drops {
    Drops {
        vlan_filter: s.drop_vlan,
        dhcp_guard: s.drop_dhcp_guard,
        mtu: s.drop_mtu,
        hairpin: s.drop_hairpin,
        local_only: s.drop_local_only,
        policy: s.drop_policy,
        malformed: s.drop_malformed,
        other: s.drop_other,
        spoof_mac: s.drop_spoof_mac,
        spoof_ipv4: s.drop_spoof_ipv4,
        spoof_ipv6: s.drop_spoof_ipv6,
        spoof_arp: s.drop_spoof_arp,
        spoof_nd: s.drop_spoof_nd,
        ra_guard: s.drop_ra_guard,
    }
}

fn ranges(mode: &L2Mode) -> Vec<String> {
    match mode {
        L2Mode::Trunk { allowed } => allowed
            .ranges()
            .into_iter()
            .map(|r| {
                if r.start() == r.end() {
                    r.start().to_string()
                } else {
                    format!("{}-{}", r.start(), r.end())
                }
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn mode_name(mode: &L2Mode) -> &'static str {
    match mode {
        L2Mode::Access { .. } => "access",
        L2Mode::Untagged => "untagged",
        L2Mode::Trunk { .. } => "trunk",
        L2Mode::Uplink { .. } => "uplink",
    }
}

impl VlanDriver {
    async fn snapshot(&self) -> Result<Snapshot, ApiError> {
        match self.node.try_with_datapath(|dp| read(dp)).await {
            None => Ok(Snapshot::default()),
            Some(r) => r.map_err(|e| ApiError::internal(format!("reading the datapath: {e}"))),
        }
    }

    async fn names(&self) -> Result<Names, ApiError> {
        let links = self.node.host.links().await.map_err(kernel)?;
        let ifnames: BTreeMap<u32, String> = links.into_iter().map(|l| (l.index, l.name)).collect();
        let by_name: BTreeMap<&str, u32> = ifnames.iter().map(|(i, n)| (n.as_str(), *i)).collect();
        let recs = ports::list_all(self.node.store.as_ref(), &self.node.cfg.node)
            .await
            .map_err(store_error)?;
        let mut out = BTreeMap::new();
        let mut modes = BTreeMap::new();
        let port_ref = |ifindex: u32, kind: &str, owner: Option<String>| PortRef {
            ifindex,
            ifname: ifnames.get(&ifindex).cloned().unwrap_or_default(),
            kind: kind.into(),
            owner,
        };
        for r in &recs {
            let (idx, kind, owner, net) = match r {
                AnyPort::Vlan(v) => (
                    by_name
                        .get(v.host_ifname.as_str())
                        .copied()
                        .or(v.host_ifindex),
                    "vm",
                    owner_of(&v.pod, &v.container_id),
                    v.cluster_network.clone(),
                ),
                AnyPort::Management(m) => (
                    by_name
                        .get(m.host_ifname.as_str())
                        .copied()
                        .or(m.host_ifindex),
                    "management",
                    owner_of(&m.pod, &m.container_id),
                    m.network.clone(),
                ),
            };
            if let Some(i) = idx {
                if let AnyPort::Vlan(v) = r {
                    modes.insert(i, PortMode::of(v.vlan, &v.trunk));
                }
                out.insert(i, (port_ref(i, kind, Some(owner)), Some(net)));
            }
        }
        let st = self.state.lock().await;
        for np in st.node_ports.values() {
            out.insert(
                np.switch_index,
                (
                    port_ref(np.switch_index, "node", Some(np.spec.id.clone())),
                    Some(np.spec.cluster_network.clone()),
                ),
            );
            modes.insert(np.switch_index, PortMode::Access(np.spec.vid));
        }
        let mut nets = Vec::new();
        let mut cns = BTreeMap::new();
        for cn in st.nets.values() {
            cns.insert(cn.id, cn.name.clone());
            let uplink = match &cn.realized {
                Some(Realized::Ebpf { nics, active, .. }) => {
                    for (_, idx, _) in nics {
                        out.insert(
                            *idx,
                            (
                                port_ref(*idx, "uplink", Some(cn.name.clone())),
                                Some(cn.name.clone()),
                            ),
                        );
                    }
                    nics.get(*active).map(|n| n.1)
                }
                Some(Realized::Bridge { bond, .. }) => {
                    out.insert(
                        *bond,
                        (
                            port_ref(*bond, "uplink", Some(cn.name.clone())),
                            Some(cn.name.clone()),
                        ),
                    );
                    Some(*bond)
                }
                None => None,
            };
            nets.push(NetFacts {
                name: cn.name.clone(),
                backend: cn.backend,
                id: cn.id,
                uplink,
                members: cn
                    .members
                    .iter()
                    .filter(|(_, m)| !m.is_empty())
                    .map(|(v, m)| (*v, m.iter().copied().collect()))
                    .collect(),
            });
        }
        Ok(Names {
            ports: out,
            ifnames,
            cns,
            nets,
            modes,
        })
    }

    /// `GET /v1/fdb`: every FDB entry of the eBPF switch.
    pub async fn fdb_view(&self) -> Result<FdbView, ApiError> {
        let names = self.names().await?;
        let snap = self.snapshot().await?;
        let entries = snap
            .fdb
            .iter()
            .map(|e| {
                let aging = snap
                    .aging
                    .get(&e.cluster_network)
                    .copied()
                    .unwrap_or(furrow_ebpf::L2_DEFAULT_AGING);
                FdbEntryInfo {
                    cluster_network: names.cn(e.cluster_network),
                    vlan: e.vid,
                    mac: MacAddr(e.mac),
                    port: names.port(e.ifindex),
                    entry_type: if e.is_static { "static" } else { "learned" }.into(),
                    age_ms: e.age.map(ms),
                    aging_ms: ms(aging),
                    expired: e.age.is_some_and(|a| a > aging),
                }
            })
            .collect();
        Ok(FdbView {
            node: self.node.cfg.node.clone(),
            entries,
            not_ebpf: names
                .nets
                .iter()
                .filter(|n| n.backend != BackendKind::Ebpf)
                .map(|n| n.name.clone())
                .collect(),
        })
    }

    /// `GET /v1/vlans`: every VLAN of every cluster network on this node.
    pub async fn vlans_view(&self) -> Result<VlansView, ApiError> {
        let names = self.names().await?;
        let snap = self.snapshot().await?;
        let mut out = Vec::new();
        for net in &names.nets {
            let mut vlans = Vec::new();
            if net.backend == BackendKind::Ebpf {
                for v in snap.vlans.iter().filter(|v| v.cluster_network == net.id) {
                    let members = v
                        .members
                        .iter()
                        .map(|idx| {
                            let (mode, allowed, mtu, flags) = match snap.ports.get(idx) {
                                Some((p, f)) => (mode_name(&p.mode), ranges(&p.mode), p.mtu, *f),
                                None => ("unknown", Vec::new(), 0, L2PortFlags::NONE),
                            };
                            VlanMember {
                                port: names.port(*idx),
                                mode: mode.into(),
                                tagged: v.vid != 0 && matches!(mode, "trunk" | "uplink"),
                                allowed,
                                mtu,
                                trusted: flags.trusted || mode == "uplink",
                                local_only: flags.local_only,
                            }
                        })
                        .collect();
                    vlans.push(VlanDetail {
                        vlan: v.vid,
                        to_host: v.to_host,
                        members,
                        dhcp_responder: snap
                            .responders
                            .iter()
                            .find(|r| r.cluster_network == net.id && r.vid == v.vid)
                            .map(|r| names.port(r.ifindex)),
                        fdb_entries: snap
                            .fdb
                            .iter()
                            .filter(|e| e.cluster_network == net.id && e.vid == v.vid)
                            .count() as u32,
                        counters: snap.vlan_stats.get(&(net.id, v.vid)).map(vlan_counters),
                    });
                }
            } else {
                // The kernel bridge: membership as netd configured it.
                for (vid, members) in &net.members {
                    let mut list: Vec<VlanMember> = members
                        .iter()
                        .map(|idx| {
                            let (mode, allowed) = match names.modes.get(idx) {
                                Some(PortMode::Access(_)) => ("access", Vec::new()),
                                Some(PortMode::Untagged) => ("untagged", Vec::new()),
                                Some(PortMode::Trunk(r)) => (
                                    "trunk",
                                    r.iter()
                                        .map(|r| {
                                            if r.min == r.max {
                                                r.min.to_string()
                                            } else {
                                                format!("{}-{}", r.min, r.max)
                                            }
                                        })
                                        .collect(),
                                ),
                                None => ("unknown", Vec::new()),
                            };
                            VlanMember {
                                port: names.port(*idx),
                                mode: mode.into(),
                                tagged: *vid != 0 && mode == "trunk",
                                allowed,
                                mtu: 0,
                                trusted: false,
                                local_only: false,
                            }
                        })
                        .collect();
                    if let Some(up) = net.uplink {
                        list.push(VlanMember {
                            port: names.port(up),
                            mode: "uplink".into(),
                            tagged: *vid != 0,
                            allowed: Vec::new(),
                            mtu: 0,
                            trusted: true,
                            local_only: false,
                        });
                    }
                    vlans.push(VlanDetail {
                        vlan: *vid,
                        to_host: false,
                        members: list,
                        dhcp_responder: None,
                        fdb_entries: 0,
                        counters: None,
                    });
                }
            }
            out.push(ClusterNetworkVlans {
                name: net.name.clone(),
                backend: net.backend.as_str().into(),
                id: (net.backend == BackendKind::Ebpf).then_some(net.id),
                uplink: net.uplink.map(|u| names.port(u)),
                vlans,
            });
        }
        Ok(VlansView {
            node: self.node.cfg.node.clone(),
            cluster_networks: out,
        })
    }

    /// `GET /v1/counters`: datapath drops by reason, per port and VLAN.
    pub async fn counters_view(&self) -> Result<CountersView, ApiError> {
        let names = self.names().await?;
        let snap = self.snapshot().await?;
        let mut totals = Drops::default();
        let mut ports: Vec<PortDrops> = snap
            .port_stats
            .iter()
            .map(|(idx, s)| {
                let drops = port_drops(s);
                totals.add(&drops);
                PortDrops {
                    port: names.port(*idx),
                    network: names.network(*idx),
                    tx_packets: s.tx_packets,
                    rx_packets: s.rx_packets,
                    redirected_packets: s.redirected_packets,
                    drops,
                }
            })
            .collect();
        ports.sort_by(|a, b| {
            (&a.network, &a.port.kind, &a.port.ifname, a.port.ifindex).cmp(&(
                &b.network,
                &b.port.kind,
                &b.port.ifname,
                b.port.ifindex,
            ))
        });
        let vlans = snap
            .vlan_stats
            .iter()
            .map(|((cn, vid), s)| VlanDrops {
                cluster_network: names.cn(*cn),
                vlan: *vid,
                counters: vlan_counters(s),
            })
            .collect();
        Ok(CountersView {
            node: self.node.cfg.node.clone(),
            totals,
            ports,
            vlans,
            not_checked: names
                .nets
                .iter()
                .filter(|n| n.backend != BackendKind::Ebpf)
                .map(|n| format!("spoofing on {}", n.name))
                .collect(),
        })
    }
}
