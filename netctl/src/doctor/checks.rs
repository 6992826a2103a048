//! The checks that need netd's answers: store, datapath, firewall,
//! uplinks, MTUs along each network, duplicate MACs and IPs, stale ports.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use furrow_api::client::Client;
use furrow_api::wire::{ClusterNetworkInfo, NetworkInfo, NodeStatus, PortInfo};
use furrow_netd::netlink::{Link, Netlink};

use super::{dfprobe, Findings, Severity};

/// What the kernel says about a port's two ends.
struct PortLinks {
    host: Option<Link>,
    /// The VM/pod end, from inside its namespace; `Err` says why not.
    inner: Result<Option<Link>, String>,
    /// IPv4 addresses on the VM/pod end.
    inner_addrs: Vec<Ipv4Addr>,
}

/// The node end of a VlanInterface (its address on a VLAN).
struct Vif {
    /// The VlanInterface's name.
    name: String,
    link: Link,
    addrs: Vec<(Ipv4Addr, u8)>,
    /// IPv4 neighbours the kernel knows on it.
    neighbours: Vec<Ipv4Addr>,
}

/// Everything read from the kernel, in one go.
struct KernelView {
    links: BTreeMap<String, Link>,
    ports: Vec<PortLinks>,
    vifs: Vec<Vif>,
}

async fn neighbours() -> Result<Vec<(u32, Ipv4Addr)>, String> {
    use futures::TryStreamExt;
    use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState};
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| e.to_string())?;
    let task = tokio::spawn(conn);
    let mut out = Vec::new();
    let mut s = handle.neighbours().get().execute();
    while let Some(m) = s.try_next().await.map_err(|e| e.to_string())? {
        if matches!(
            m.header.state,
            NeighbourState::Failed | NeighbourState::Incomplete | NeighbourState::Noarp
        ) {
            continue;
        }
        for a in &m.attributes {
            if let NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) = a {
                out.push((m.header.ifindex, *ip));
            }
        }
    }
    task.abort();
    Ok(out)
}

fn read_kernel(ports: &[PortInfo], instance: &str) -> Result<KernelView, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let nl = Netlink::current().map_err(|e| e.to_string())?;
        let links: BTreeMap<String, Link> = nl
            .links()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|l| (l.name.clone(), l))
            .collect();
        let mut out = Vec::new();
        for p in ports {
            let host = links.get(&p.host_ifname).cloned();
            let mut inner_addrs = Vec::new();
            let inner = match &p.netns {
                Some(ns) if Path::new(ns).exists() => {
                    match Netlink::in_netns(Path::new(ns)).await {
                        Ok(n) => {
                            let l = n.link_by_name(&p.ifname).await.map_err(|e| e.to_string());
                            if let Ok(Some(l)) = &l {
                                inner_addrs = n
                                    .addresses_v4(l.index)
                                    .await
                                    .unwrap_or_default()
                                    .into_iter()
                                    .map(|(a, _)| a)
                                    .collect();
                            }
                            l
                        }
                        Err(e) => Err(e.to_string()),
                    }
                }
                Some(ns) => Err(format!("{ns} does not exist")),
                None => Err("no netns recorded".into()),
            };
            out.push(PortLinks {
                host,
                inner,
                inner_addrs,
            });
        }
        let prefix = format!("furrow:{instance}:node:vif:");
        let neigh = neighbours().await.unwrap_or_default();
        let mut vifs = Vec::new();
        for l in links.values() {
            let Some(name) = l.alias.as_deref().and_then(|a| a.strip_prefix(&prefix)) else {
                continue;
            };
            if !l.name.starts_with("fv") {
                continue;
            }
            vifs.push(Vif {
                name: name.to_string(),
                link: l.clone(),
                addrs: nl.addresses_v4(l.index).await.unwrap_or_default(),
                neighbours: neigh
                    .iter()
                    .filter(|(i, _)| *i == l.index)
                    .map(|(_, ip)| *ip)
                    .collect(),
            });
        }
        Ok(KernelView {
            links,
            ports: out,
            vifs,
        })
    })
}

fn port_name(p: &PortInfo) -> String {
    let owner = match (&p.pod.namespace, &p.pod.name) {
        (Some(ns), Some(n)) => format!("{ns}/{n}"),
        (None, Some(n)) => n.clone(),
        _ => p.container_id.chars().take(12).collect(),
    };
    format!("{owner}:{} ({})", p.ifname, p.host_ifname)
}

fn vlans_of(p: &PortInfo) -> Vec<u16> {
    if !p.trunk.is_empty() {
        p.trunk.iter().flat_map(|r| r.min..=r.max).collect()
    } else {
        vec![p.vlan.unwrap_or(0)]
    }
}

/// Returns (eBPF datapath in use, kernel bridge in use).
pub(super) fn netd_checks(
    client: &Client,
    s: &NodeStatus,
    peers: &[Ipv4Addr],
    f: &mut Findings,
) -> (bool, bool) {
    if s.store.healthy {
        f.push(
            "store",
            Severity::Ok,
            &s.store.backend,
            format!(
                "store {} at {} is healthy (revision {})",
                s.store.backend, s.store.location, s.store.revision
            ),
            "",
        );
    } else {
        f.push(
            "store",
            Severity::Error,
            &s.store.backend,
            format!(
                "store {} at {} is failing: {}",
                s.store.backend, s.store.location, s.store.message
            ),
            if s.store.backend == "etcd" {
                "check that the etcd endpoints answer from this node (network, TLS files, quorum); netd answers CNI with \"try again later\" meanwhile"
            } else {
                "check the disk holding the state directory (space, permissions, I/O errors) and netd's log"
            },
        );
    }
    if s.datapath.healthy {
        f.push(
            "datapath",
            Severity::Ok,
            &s.datapath.mode,
            format!(
                "eBPF datapath {} healthy, pinned at {}",
                s.datapath.mode, s.datapath.pin_dir
            ),
            "",
        );
    } else {
        f.push(
            "datapath",
            Severity::Error,
            &s.datapath.mode,
            format!("eBPF datapath failing: {}", s.datapath.message),
            "see netd's log; restarting netd reloads the programs and re-attaches every port",
        );
    }
    for m in &s.datapath.maps {
        if m.max_entries > 0 && u64::from(m.entries) * 10 >= u64::from(m.max_entries) * 9 {
            f.push(
                "datapath",
                Severity::Warn,
                &m.name,
                format!("map {} is {}/{} full", m.name, m.entries, m.max_entries),
                "new entries may be refused or evict others; fewer ports/MACs per node",
            );
        }
    }
    if s.firewall.healthy {
        f.push(
            "firewall",
            Severity::Ok,
            &s.firewall.table,
            format!("{} table {} in place", s.firewall.backend, s.firewall.table),
            "",
        );
    } else {
        f.push(
            "firewall",
            Severity::Error,
            &s.firewall.table,
            format!(
                "{} table {} failing: {}",
                s.firewall.backend, s.firewall.table, s.firewall.message
            ),
            "pods cannot reach outside the cluster CIDR without masquerade; check that nothing else flushes nftables (firewalld, nft -f) and restart netd",
        );
    }
    if s.ports.lost > 0 {
        f.push(
            "ports",
            Severity::Warn,
            "ports",
            format!(
                "{} port(s) lost their host link (the pod's namespace went away without a CNI DEL)",
                s.ports.lost
            ),
            "the runtime's CNI GC releases them; netctl ports lists them",
        );
    }

    let cns: Vec<ClusterNetworkInfo> = match client.get("/v1/clusternetworks") {
        Ok(c) => c,
        Err(e) => {
            f.push(
                "netd",
                Severity::Error,
                "/v1/clusternetworks",
                format!("cannot list cluster networks: {e}"),
                "check netd's log",
            );
            Vec::new()
        }
    };
    let nets: Vec<NetworkInfo> = client.get("/v1/networks").unwrap_or_default();
    let ports: Vec<PortInfo> = match client.get("/v1/ports") {
        Ok(p) => p,
        Err(e) => {
            f.push(
                "netd",
                Severity::Error,
                "/v1/ports",
                format!("cannot list ports: {e}"),
                "check netd's log",
            );
            Vec::new()
        }
    };
    let ebpf_in_use = s.datapath.mode.starts_with("ebpf")
        && (s.datapath.healthy || cns.iter().any(|c| c.backend == "ebpf"));
    let bridge_in_use = cns.iter().any(|c| c.backend == "bridge");

    let view = match read_kernel(&ports, &s.instance) {
        Ok(v) => Some(v),
        Err(e) => {
            f.push(
                "links",
                Severity::Warn,
                "rtnetlink",
                format!("cannot read links: {e}; uplink and MTU checks skipped"),
                "run netctl doctor as root in the node's network namespace",
            );
            None
        }
    };

    // VlanInterface name -> (cluster network, VLAN).
    let vifs: BTreeMap<String, (String, u64)> = client
        .get::<furrow_api::wire::ResourceList>("/v1/resources/vlaninterface")
        .map(|l| l.items)
        .unwrap_or_default()
        .iter()
        .filter_map(|v| {
            Some((
                v["metadata"]["name"].as_str()?.to_string(),
                (
                    v["spec"]["clusterNetwork"].as_str()?.to_string(),
                    v["spec"]["vlan"].as_u64().unwrap_or(0),
                ),
            ))
        })
        .collect();
    for cn in &cns {
        cluster_network_checks(cn, &ports, view.as_ref(), f);
        if cn.uplink.is_some() {
            if let Some(v) = &view {
                df_probes(cn, v, &vifs, peers, f);
            }
        }
    }
    if let Some(v) = &view {
        management_mtu_checks(&nets, &ports, v, f);
    }
    // Each port's addresses: what netd assigned, what the VM end holds,
    // and the DHCP leases bound to its MAC.
    let leases: Vec<furrow_api::wire::LeaseInfo> =
        client.get("/v1/dhcp/leases").unwrap_or_default();
    let ips: Vec<Vec<std::net::IpAddr>> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut v: Vec<std::net::IpAddr> = p.ips.iter().map(|n| n.addr()).collect();
            if let Some(view) = &view {
                v.extend(
                    view.ports[i]
                        .inner_addrs
                        .iter()
                        .map(|a| std::net::IpAddr::V4(*a)),
                );
            }
            v.extend(
                leases
                    .iter()
                    .filter(|l| l.mac == p.mac && l.state == "bound" && !l.expired)
                    .map(|l| std::net::IpAddr::V4(l.ip)),
            );
            v.sort();
            v.dedup();
            v
        })
        .collect();
    duplicate_checks(&ports, &ips, f);
    stale_checks(&ports, f);
    (ebpf_in_use, bridge_in_use)
}

fn cluster_network_checks(
    cn: &ClusterNetworkInfo,
    ports: &[PortInfo],
    view: Option<&KernelView>,
    f: &mut Findings,
) {
    let subject = cn.name.clone();
    if cn.uplink.is_none() {
        // Not set up on this node: fine while nothing here uses it (the
        // default `mgmt` cluster network is like that on most nodes).
        let (sev, advice) = if cn.ports == 0 {
            (Severity::Ok, "")
        } else {
            (
                Severity::Error,
                "add a VlanConfig whose nodeSelector matches this node, naming its uplink NICs",
            )
        };
        f.push(
            "uplink",
            sev,
            &subject,
            format!(
                "{} has no uplink on this node ({}); {} port(s) here use it",
                cn.name,
                cn.problem
                    .as_deref()
                    .unwrap_or("no VlanConfig selects this node"),
                cn.ports
            ),
            advice,
        );
        return;
    }
    if let Some(p) = &cn.problem {
        f.push(
            "clusterNetwork",
            Severity::Error,
            &subject,
            format!("cluster network {} cannot serve ports: {p}", cn.name),
            "fix the ClusterNetwork / VlanConfig (netctl get clusternetworks, netctl get vlanconfigs)",
        );
    }
    let Some(up) = &cn.uplink else { return };
    let my_ports: Vec<(usize, &PortInfo)> = ports
        .iter()
        .enumerate()
        .filter(|(_, p)| p.kind == "vlan" && p.network == cn.name)
        .collect();
    let Some(view) = view else { return };

    // Uplink link state.
    let mut usable = 0;
    for nic in &up.nics {
        let nsub = format!("{}/{nic}", cn.name);
        match view.links.get(nic) {
            None => f.push(
                "uplink",
                Severity::Error,
                &nsub,
                format!("uplink NIC {nic} of {} does not exist", cn.name),
                "fix the VlanConfig's uplink.nics, or bring the NIC back (driver, udev rename)",
            ),
            Some(l) if !l.up => f.push(
                "uplink",
                Severity::Error,
                &nsub,
                format!("uplink NIC {nic} of {} is administratively down", cn.name),
                "ip link set dev NIC up (netd sets it up when it realizes the uplink; restart netd)",
            ),
            Some(l) if !l.carrier => f.push(
                "uplink",
                if up.nics.len() > 1 {
                    Severity::Warn
                } else {
                    Severity::Error
                },
                &nsub,
                format!("uplink NIC {nic} of {} has no carrier", cn.name),
                "check the cable, the switch port and the NIC's link partner",
            ),
            Some(l) => {
                usable += 1;
                f.push(
                    "uplink",
                    Severity::Ok,
                    &nsub,
                    format!(
                        "uplink NIC {nic} of {} is up with carrier{}",
                        cn.name,
                        if up.active.as_deref() == Some(l.name.as_str()) {
                            " (active)"
                        } else {
                            ""
                        }
                    ),
                    "",
                );
            }
        }
    }
    if usable == 0 && up.nics.len() > 1 {
        f.push(
            "uplink",
            Severity::Error,
            &subject,
            format!(
                "no uplink NIC of {} can carry traffic: VMs on it are cut off from other nodes",
                cn.name
            ),
            "restore at least one uplink NIC's link",
        );
    }

    // MTU along the network: uplink NICs, VM ports (both ends).
    let mut mtu_errors = 0;
    for nic in &up.nics {
        if let Some(l) = view.links.get(nic) {
            if l.mtu < up.mtu {
                mtu_errors += 1;
                f.push(
                    "mtu",
                    Severity::Error,
                    format!("{}/{nic}", cn.name),
                    format!(
                        "uplink NIC {nic} has MTU {}, but {} is configured for MTU {}: full-size frames from VMs are dropped on the way out",
                        l.mtu, cn.name, up.mtu
                    ),
                    format!(
                        "set {nic}'s MTU to {} (VlanConfig uplink.linkAttributes.mtu; netd applies it), or lower the VlanConfig's MTU and the VMs' to {}",
                        up.mtu, l.mtu
                    ),
                );
            }
        }
    }
    for (i, p) in &my_ports {
        let name = port_name(p);
        if p.mtu > up.mtu {
            mtu_errors += 1;
            f.push(
                "mtu",
                Severity::Error,
                &name,
                format!(
                    "port MTU {} is above {}'s uplink MTU {}: its large frames cannot leave the node",
                    p.mtu, cn.name, up.mtu
                ),
                format!("recreate the port with mtu <= {} (the NAD's mtu)", up.mtu),
            );
        }
        let links = &view.ports[*i];
        let host_mtu = match &links.host {
            Some(h) => h.mtu,
            None => continue,
        };
        if host_mtu < p.mtu {
            mtu_errors += 1;
            f.push(
                "mtu",
                Severity::Error,
                &name,
                format!(
                    "host side {} has MTU {host_mtu}, but the port and {} carry MTU {}: frames above {host_mtu} bytes to and from this VM are dropped",
                    p.host_ifname, cn.name, p.mtu
                ),
                format!(
                    "set {}'s MTU back to {} (ip link set dev {} mtu {}), or delete and re-add the VM's interface",
                    p.host_ifname, p.mtu, p.host_ifname, p.mtu
                ),
            );
        }
        // The VM end above the port's MTU (a lowered host side is the
        // finding above, not this one).
        if let Ok(Some(inner)) = &links.inner {
            let limit = host_mtu.min(p.mtu);
            if inner.mtu > p.mtu {
                mtu_errors += 1;
                f.push(
                    "mtu",
                    Severity::Error,
                    &name,
                    format!(
                        "the VM end {} has MTU {}, above the port's {} ({} carries {}): the VM sends frames the network drops",
                        p.ifname, inner.mtu, p.mtu, cn.name, up.mtu
                    ),
                    format!(
                        "set the VM interface's MTU to {limit} or less (DHCP option 26, cloud-init), or raise the network's MTU"
                    ),
                );
            }
        }
    }
    if mtu_errors == 0 {
        f.push(
            "mtu",
            Severity::Ok,
            &subject,
            format!(
                "MTU {} consistent along {}: uplink NICs and {} port(s)",
                up.mtu,
                cn.name,
                my_ports.len()
            ),
            "",
        );
    }
}

fn management_mtu_checks(
    nets: &[NetworkInfo],
    ports: &[PortInfo],
    view: &KernelView,
    f: &mut Findings,
) {
    for n in nets {
        let mut bad = 0;
        let mut count = 0;
        for (i, p) in ports.iter().enumerate() {
            if p.kind != "management" || (p.network != n.name && p.network_name != n.name) {
                continue;
            }
            count += 1;
            let name = port_name(p);
            let links = &view.ports[i];
            if let Some(h) = &links.host {
                if h.mtu < n.mtu {
                    bad += 1;
                    f.push(
                        "mtu",
                        Severity::Error,
                        &name,
                        format!(
                            "host side {} has MTU {}, but network {} has MTU {}",
                            p.host_ifname, h.mtu, n.name, n.mtu
                        ),
                        format!(
                            "set {}'s MTU back to {} or re-create the pod",
                            p.host_ifname, n.mtu
                        ),
                    );
                }
                if let Ok(Some(inner)) = &links.inner {
                    if inner.mtu > h.mtu && h.mtu >= n.mtu {
                        bad += 1;
                        f.push(
                            "mtu",
                            Severity::Error,
                            &name,
                            format!(
                                "the pod end {} has MTU {} but its host side {} only {}",
                                p.ifname, inner.mtu, p.host_ifname, h.mtu
                            ),
                            format!("set the pod interface's MTU to {} or less", h.mtu),
                        );
                    }
                }
            }
        }
        if bad == 0 {
            f.push(
                "mtu",
                Severity::Ok,
                &n.name,
                format!("MTU {} consistent along {}: {count} port(s)", n.mtu, n.name),
                "",
            );
        }
    }
}

/// Duplicate MACs (same network, a VLAN in common) and duplicate IPs (same
/// network) among this node's ports.
fn duplicate_checks(ports: &[PortInfo], ips: &[Vec<std::net::IpAddr>], f: &mut Findings) {
    let mut macs_dup = 0;
    let mut ips_dup = 0;
    for (i, a) in ports.iter().enumerate() {
        for (j, b) in ports.iter().enumerate().skip(i + 1) {
            if a.network != b.network || a.kind != b.kind {
                continue;
            }
            let shared: Vec<u16> = if a.kind == "vlan" {
                let vb = vlans_of(b);
                vlans_of(a).into_iter().filter(|v| vb.contains(v)).collect()
            } else {
                vec![0]
            };
            if shared.is_empty() {
                continue;
            }
            if a.mac == b.mac && a.mac.0 != [0; 6] {
                macs_dup += 1;
                let where_ = if a.kind == "vlan" {
                    format!(
                        "{} VLAN {}",
                        a.network,
                        shared
                            .iter()
                            .take(4)
                            .map(|v| v.to_string())
                            .collect::<Vec<_>>()
                            .join(",")
                    )
                } else {
                    a.network.clone()
                };
                f.push(
                    "duplicateMac",
                    Severity::Error,
                    format!("{} {}", where_, a.mac),
                    format!(
                        "MAC {} is used by two ports on {where_}: {} and {}; the switch delivers their traffic to one of them only",
                        a.mac,
                        port_name(a),
                        port_name(b)
                    ),
                    "give one of the VMs another MAC (KubeVirt: spec.domain.devices.interfaces[].macAddress; or remove the duplicate from the VM spec) and restart it",
                );
            }
            for ip in &ips[i] {
                if ips[j].contains(ip) {
                    ips_dup += 1;
                    f.push(
                        "duplicateIp",
                        Severity::Error,
                        format!("{} {}", a.network, ip),
                        format!(
                            "address {} is held by two ports on {}: {} and {}; the network delivers its traffic to one of them at a time",
                            ip,
                            a.network,
                            port_name(a),
                            port_name(b)
                        ),
                        "delete one of the pods/VMs (or its interface) so IPAM hands it a fresh address; check for a static address configured by hand",
                    );
                }
            }
        }
    }
    if macs_dup == 0 {
        f.push(
            "duplicateMac",
            Severity::Ok,
            "ports",
            format!("no duplicate MACs among {} port(s)", ports.len()),
            "",
        );
    }
    if ips_dup == 0 {
        f.push(
            "duplicateIp",
            Severity::Ok,
            "ports",
            format!("no duplicate IPs among {} port(s)", ports.len()),
            "",
        );
    }
}

fn stale_checks(ports: &[PortInfo], f: &mut Findings) {
    let mut stale = 0;
    for p in ports {
        if let Some(ns) = &p.netns {
            if !Path::new(ns).exists() {
                stale += 1;
                f.push(
                    "stalePort",
                    Severity::Warn,
                    port_name(p),
                    format!(
                        "port on {} (state {}) belongs to network namespace {ns}, which no longer exists: the pod went away without a CNI DEL",
                        p.network,
                        format!("{:?}", p.state).to_lowercase()
                    ),
                    format!(
                        "the runtime's CNI GC removes it; to remove it now run the plugin's DEL for container {} interface {} (CNI_COMMAND=DEL), or delete the pod's leftover sandbox",
                        p.container_id, p.ifname
                    ),
                );
            }
        }
    }
    if stale == 0 {
        f.push(
            "stalePort",
            Severity::Ok,
            "ports",
            "every port's network namespace exists",
            "",
        );
    }
}

/// Full-size DF pings from the node's own interfaces on the network's
/// VLANs to the neighbours they know there (and to `--peer` addresses in
/// their subnets).
fn df_probes(
    cn: &ClusterNetworkInfo,
    view: &KernelView,
    vifs: &BTreeMap<String, (String, u64)>,
    peers: &[Ipv4Addr],
    f: &mut Findings,
) {
    let mut probed = 0;
    for v in &view.vifs {
        let Some((cn_name, vlan)) = vifs.get(&v.name) else {
            continue;
        };
        if cn_name != &cn.name {
            continue;
        }
        let mut targets: Vec<Ipv4Addr> = Vec::new();
        for (addr, len) in &v.addrs {
            let Ok(net) = ipnet::Ipv4Net::new(*addr, *len) else {
                continue;
            };
            for p in peers.iter().chain(v.neighbours.iter()) {
                if net.contains(p) && p != addr && !targets.contains(p) {
                    targets.push(*p);
                }
            }
        }
        targets.truncate(4);
        let mtu = v.link.mtu;
        let subject = format!("{}/vlan{vlan}/{}", cn.name, v.name);
        if v.addrs.is_empty() {
            f.push(
                "mtuProbe",
                Severity::Ok,
                &subject,
                format!(
                    "no DF probe from VlanInterface {}: it has no address yet",
                    v.name
                ),
                "",
            );
            continue;
        }
        if targets.is_empty() {
            f.push(
                "mtuProbe",
                Severity::Ok,
                &subject,
                format!(
                    "no DF probe from VlanInterface {} ({}): no peer known on VLAN {vlan}",
                    v.name, v.link.name
                ),
                "name one with netctl doctor --peer <IP> (another node's VlanInterface or the VLAN's gateway)",
            );
            continue;
        }
        for t in targets {
            probed += 1;
            let (sev, msg, advice) = match dfprobe::probe(&v.link.name, t, mtu) {
                dfprobe::Outcome::FullSize => (
                    Severity::Ok,
                    format!(
                        "{mtu}-byte packets with DF set reach {t} on VLAN {vlan} from {} and back",
                        v.link.name
                    ),
                    String::new(),
                ),
                dfprobe::Outcome::SmallOnly => (
                    Severity::Error,
                    format!(
                        "{mtu}-byte packets with DF set to {t} on VLAN {vlan} get no answer, small ones do: a hop between this node and {t} has an MTU below {} (fabric switch port, the peer's uplink or port)",
                        cn.uplink.as_ref().map(|u| u.mtu).unwrap_or(mtu)
                    ),
                    format!(
                        "raise the MTU of every hop on {}'s path to {mtu} (switch ports, the peer node's uplink NIC), or lower the network's MTU (VlanConfig linkAttributes.mtu) and the VMs' to what the fabric carries",
                        cn.name
                    ),
                ),
                dfprobe::Outcome::NoAnswer => (
                    Severity::Warn,
                    format!("{t} on VLAN {vlan} does not answer pings at all; MTU not tested"),
                    "check that the peer is up and answers ICMP echo, or name another with --peer"
                        .to_string(),
                ),
                dfprobe::Outcome::Failed(e) => (
                    Severity::Warn,
                    format!("DF probe to {t} could not run: {e}"),
                    "run netctl doctor as root in the node's network namespace".to_string(),
                ),
            };
            f.push("mtuProbe", sev, &subject, msg, advice);
        }
    }
    if probed == 0
        && !view
            .vifs
            .iter()
            .any(|v| vifs.get(&v.name).is_some_and(|(c, _)| c == &cn.name))
    {
        f.push(
            "mtuProbe",
            Severity::Ok,
            &cn.name,
            format!(
                "no DF probe across {}: this node has no VlanInterface (its own address) on it to send one from; the MTUs of the hops this node owns were compared instead",
                cn.name
            ),
            "to test the fabric, add a VlanInterface on a VLAN of this network and run doctor --peer <IP>, or ping with DF from a VM: ping -M do -s <mtu-28> <peer>",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(name: &str, network: &str, vlan: Option<u16>, mac: &str) -> PortInfo {
        let mut v = serde_json::json!({
            "networkName": "nad",
            "network": network,
            "kind": "vlan",
            "containerID": format!("{name}-c"),
            "ifname": "eth0",
            "pod": {"namespace": "ns", "name": name},
            "hostIfname": format!("fw{name}"),
            "mac": mac,
            "ips": [],
            "mtu": 1500,
            "state": "ready",
            "createdAt": 0,
        });
        if let Some(vl) = vlan {
            v["vlan"] = serde_json::json!(vl);
        } else {
            v["trunk"] = serde_json::json!([{"min": 100, "max": 200}]);
        }
        serde_json::from_value(v).expect("a PortInfo")
    }

    fn run(ports: &[PortInfo], ips: &[&[&str]]) -> Vec<super::super::Finding> {
        let ips: Vec<Vec<std::net::IpAddr>> = ips
            .iter()
            .map(|v| v.iter().map(|a| a.parse().unwrap()).collect())
            .collect();
        let mut f = Findings(Vec::new());
        duplicate_checks(ports, &ips, &mut f);
        f.0
    }

    fn errors(f: &[super::super::Finding], check: &str) -> usize {
        f.iter()
            .filter(|x| x.check == check && x.severity == Severity::Error)
            .count()
    }

    #[test]
    fn a_mac_twice_on_one_vlan_is_an_error_on_two_vlans_it_is_not() {
        let m = "52:54:00:00:00:01";
        let f = run(
            &[
                port("a", "data", Some(100), m),
                port("b", "data", Some(100), m),
            ],
            &[&[], &[]],
        );
        assert_eq!(errors(&f, "duplicateMac"), 1);
        assert!(f[0].subject.contains("VLAN 100"), "{f:?}");
        let f = run(
            &[
                port("a", "data", Some(100), m),
                port("b", "data", Some(200), m),
            ],
            &[&[], &[]],
        );
        assert_eq!(errors(&f, "duplicateMac"), 0);
        let f = run(
            &[
                port("a", "data", Some(100), m),
                port("b", "other", Some(100), m),
            ],
            &[&[], &[]],
        );
        assert_eq!(errors(&f, "duplicateMac"), 0);
        // A trunk carrying VLAN 150 meets an access port on 150.
        let f = run(
            &[port("a", "data", Some(150), m), port("t", "data", None, m)],
            &[&[], &[]],
        );
        assert_eq!(errors(&f, "duplicateMac"), 1);
    }

    #[test]
    fn an_address_twice_on_one_vlan_is_an_error() {
        let f = run(
            &[
                port("a", "data", Some(100), "52:54:00:00:00:01"),
                port("b", "data", Some(100), "52:54:00:00:00:02"),
                port("c", "data", Some(200), "52:54:00:00:00:03"),
            ],
            &[&["10.0.0.1"], &["10.0.0.1", "10.0.0.2"], &["10.0.0.2"]],
        );
        assert_eq!(errors(&f, "duplicateIp"), 1, "{f:?}");
        assert_eq!(errors(&f, "duplicateMac"), 0);
    }
}
