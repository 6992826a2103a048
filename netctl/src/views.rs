//! The eBPF switch's views (`fdb`, `vlans`, `counters`) and shell
//! completions.

use std::io::Write;

use clap::{CommandFactory, Subcommand};
use clap_complete::Shell;
use furrow_api::client::{Client, ClientError};
use furrow_api::error::code;
use furrow_api::wire_diag::{
    CountersView, Drops, FdbEntryInfo, FdbView, PortRef, VlanCounters, VlansView,
};

use crate::table::Table;
use crate::{print, span, Cli, Output};

#[derive(Subcommand)]
pub enum ViewCommand {
    /// The switch's forwarding database: every MAC it knows per cluster
    /// network and VLAN, the port behind it (VM, uplink or node port),
    /// static (a VM's MAC, installed by netd) or learned, and its age.
    ///
    /// Examples:
    ///   netctl fdb
    ///   netctl fdb --cluster-network data --vlan 100
    ///   netctl fdb --mac 52:54:00:12:34:56 -o json
    Fdb {
        /// Only this cluster network.
        #[arg(long)]
        cluster_network: Option<String>,
        /// Only this VLAN (0 = the untagged network).
        #[arg(long)]
        vlan: Option<u16>,
        /// Only this MAC address.
        #[arg(long)]
        mac: Option<furrow_api::MacAddr>,
    },
    /// VLANs per cluster network on this node: their member ports (access,
    /// untagged, trunk, uplink; tagged or not), DHCP responder, FDB size
    /// and counters.
    ///
    /// Examples:
    ///   netctl vlans
    ///   netctl vlans --cluster-network data -o yaml
    Vlans {
        /// Only this cluster network.
        #[arg(long)]
        cluster_network: Option<String>,
    },
    /// Datapath counters: drops by reason (VLAN filter, DHCP guard, MTU,
    /// hairpin, local-only, policy, malformed, other, and port security's:
    /// spoofed MAC, IPv4, IPv6, ARP, neighbour discovery, RA guard) for
    /// the node, per port and per VLAN, with traffic counters.
    ///
    /// A port counts the frames it sent into the switch (MTU drops: the
    /// frames that would have left by it).
    Counters,
    /// Print a shell completion script.
    ///
    /// Examples:
    ///   netctl completions bash > /etc/bash_completion.d/netctl
    ///   netctl completions zsh > "${fpath[1]}/_netctl"
    ///   netctl completions fish > ~/.config/fish/completions/netctl.fish
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
}

pub fn run(cmd: &ViewCommand, client: &Client, out: Output) -> anyhow::Result<()> {
    match cmd {
        ViewCommand::Fdb {
            cluster_network,
            vlan,
            mac,
        } => {
            let mut v: FdbView = get(client, "/v1/fdb")?;
            v.entries.retain(|e| {
                cluster_network
                    .as_ref()
                    .is_none_or(|c| &e.cluster_network == c)
                    && vlan.is_none_or(|x| e.vlan == x)
                    && mac.is_none_or(|m| e.mac == m)
            });
            print(out, &v, || fdb_table(&v))
        }
        ViewCommand::Vlans { cluster_network } => {
            let mut v: VlansView = get(client, "/v1/vlans")?;
            if let Some(c) = cluster_network {
                v.cluster_networks.retain(|n| &n.name == c);
            }
            print(out, &v, || vlans_text(&v))
        }
        ViewCommand::Counters => {
            let v: CountersView = get(client, "/v1/counters")?;
            print(out, &v, || counters_text(&v))
        }
        ViewCommand::Completions { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "netctl", &mut buf);
            std::io::stdout().write_all(&buf)?;
            Ok(())
        }
    }
}

/// GET a view; a netd that does not know the route is older than this
/// netctl (same API version, fewer views): say so in one line.
fn get<T: serde::de::DeserializeOwned>(client: &Client, route: &str) -> anyhow::Result<T> {
    match client.get(route) {
        Err(ClientError::Api(e)) if e.code == code::NOT_FOUND && e.msg == "no such API route" => {
            anyhow::bail!(
                "netd at {} does not serve {route}: it is older than this netctl; upgrade netd",
                client.path().display()
            )
        }
        r => Ok(r?),
    }
}

fn vlan_name(v: u16) -> String {
    if v == 0 {
        "untagged".into()
    } else {
        v.to_string()
    }
}

fn owner(p: &PortRef) -> String {
    p.owner.clone().unwrap_or_else(|| "-".into())
}

fn ifname(p: &PortRef) -> String {
    if p.ifname.is_empty() {
        format!("#{}", p.ifindex)
    } else {
        p.ifname.clone()
    }
}

fn age(e: &FdbEntryInfo) -> String {
    match e.age_ms {
        None => "-".into(),
        Some(ms) if e.expired => format!("{} (expired)", span(ms / 1000)),
        Some(ms) => span(ms / 1000),
    }
}

pub fn fdb_table(v: &FdbView) -> String {
    let mut t = Table::new(&[
        "CLUSTER-NETWORK",
        "VLAN",
        "MAC",
        "TYPE",
        "PORT",
        "KIND",
        "OWNER",
        "AGE",
    ]);
    for e in &v.entries {
        t.row(vec![
            e.cluster_network.clone(),
            vlan_name(e.vlan),
            e.mac.to_string(),
            e.entry_type.clone(),
            ifname(&e.port),
            e.port.kind.clone(),
            owner(&e.port),
            age(e),
        ]);
    }
    let mut out = if v.entries.is_empty() {
        format!("no FDB entries on {}\n", v.node)
    } else {
        t.render()
    };
    for n in &v.not_ebpf {
        out.push_str(&format!(
            "{n}: kernel bridge backend, its FDB is the bridge's (bridge fdb show br {n}-br)\n"
        ));
    }
    out
}

fn drops_total(c: &Option<VlanCounters>) -> String {
    c.as_ref()
        .map(|c| c.drops.total().to_string())
        .unwrap_or_else(|| "-".into())
}

pub fn vlans_text(v: &VlansView) -> String {
    let mut out = String::new();
    if v.cluster_networks.is_empty() {
        return format!("no cluster networks on {}\n", v.node);
    }
    for (i, cn) in v.cluster_networks.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!(
            "Cluster network {} ({} backend{}), uplink {}\n",
            cn.name,
            cn.backend,
            cn.id.map(|i| format!(", id {i}")).unwrap_or_default(),
            cn.uplink
                .as_ref()
                .map(ifname)
                .unwrap_or_else(|| "none".into()),
        ));
        if cn.vlans.is_empty() {
            out.push_str("  no VLANs on this node\n");
            continue;
        }
        let mut t = Table::new(&[
            "VLAN",
            "MEMBERS",
            "FDB",
            "RX-PKTS",
            "UNICAST",
            "FLOODED",
            "DROPS",
            "DHCP-RESPONDER",
        ]);
        let c = |vc: &Option<VlanCounters>, f: fn(&VlanCounters) -> u64| {
            vc.as_ref()
                .map(|c| f(c).to_string())
                .unwrap_or_else(|| "-".into())
        };
        for vl in &cn.vlans {
            t.row(vec![
                vlan_name(vl.vlan),
                vl.members.len().to_string(),
                vl.fdb_entries.to_string(),
                c(&vl.counters, |c| c.rx_packets),
                c(&vl.counters, |c| c.unicast_packets),
                c(&vl.counters, |c| c.flood_packets),
                drops_total(&vl.counters),
                vl.dhcp_responder
                    .as_ref()
                    .map(|p| p.owner.clone().unwrap_or_else(|| ifname(p)))
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
        out.push_str(&t.render());
        let mut m = Table::new(&[
            "VLAN", "PORT", "KIND", "OWNER", "MODE", "TAGGED", "ALLOWED", "MTU", "FLAGS",
        ]);
        for vl in &cn.vlans {
            for mb in &vl.members {
                let mut flags = Vec::new();
                if mb.trusted && mb.mode != "uplink" {
                    flags.push("trusted");
                }
                if mb.local_only {
                    flags.push("local-only");
                }
                m.row(vec![
                    vlan_name(vl.vlan),
                    ifname(&mb.port),
                    mb.port.kind.clone(),
                    owner(&mb.port),
                    mb.mode.clone(),
                    if mb.tagged { "tagged" } else { "untagged" }.into(),
                    if mb.allowed.is_empty() {
                        "-".into()
                    } else {
                        mb.allowed.join(",")
                    },
                    if mb.mtu == 0 {
                        "-".into()
                    } else {
                        mb.mtu.to_string()
                    },
                    if flags.is_empty() {
                        "-".into()
                    } else {
                        flags.join(",")
                    },
                ]);
            }
        }
        out.push_str("Members:\n");
        out.push_str(&m.render());
    }
    out
}

const DROP_HEADERS: [&str; 14] = [
    "VLAN-FILTER",
    "DHCP-GUARD",
    "MTU",
    "HAIRPIN",
    "LOCAL-ONLY",
    "POLICY",
    "MALFORMED",
    "OTHER",
    "SPOOF-MAC",
    "SPOOF-IPV4",
    "SPOOF-IPV6",
    "SPOOF-ARP",
    "SPOOF-ND",
    "RA-GUARD",
];

fn drop_cells(d: &Drops) -> Vec<String> {
    d.by_reason().iter().map(|(_, n)| n.to_string()).collect()
}

pub fn counters_text(v: &CountersView) -> String {
    let mut out = format!("Drops on {} by reason (all ports):\n", v.node);
    let mut t = Table::new(&["REASON", "DROPPED"]);
    for (h, (_, n)) in DROP_HEADERS.iter().zip(v.totals.by_reason()) {
        t.row(vec![h.to_lowercase(), n.to_string()]);
    }
    for n in &v.not_checked {
        let why = if n.starts_with("spoofing") {
            "not checked: the kernel-bridge backend has no port security"
        } else {
            "not checked by this datapath"
        };
        t.row(vec![n.clone(), why.into()]);
    }
    out.push_str(&t.render());

    out.push_str("\nPorts:\n");
    let mut h = vec![
        "PORT",
        "KIND",
        "OWNER",
        "NETWORK",
        "TX-PKTS",
        "RX-PKTS",
        "REDIRECTED",
    ];
    h.extend(DROP_HEADERS);
    let mut t = Table::new(&h);
    for p in &v.ports {
        let mut row = vec![
            ifname(&p.port),
            p.port.kind.clone(),
            owner(&p.port),
            p.network.clone().unwrap_or_else(|| "-".into()),
            p.tx_packets.to_string(),
            p.rx_packets.to_string(),
            p.redirected_packets.to_string(),
        ];
        row.extend(drop_cells(&p.drops));
        t.row(row);
    }
    out.push_str(&t.render());

    out.push_str("\nVLANs:\n");
    let mut h = vec![
        "CLUSTER-NETWORK",
        "VLAN",
        "RX-PKTS",
        "UNICAST",
        "FLOODED",
        "COPIES",
        "TO-HOST",
        "FROM-HOST",
        "DHCP-STEERED",
    ];
    // A VLAN never counts VLAN-filter, policy or malformed drops (the
    // frame was not classified into it): only the others.
    h.extend(["DHCP-GUARD", "MTU", "HAIRPIN", "LOCAL-ONLY", "OTHER"]);
    let mut t = Table::new(&h);
    for vl in &v.vlans {
        let c = &vl.counters;
        t.row(vec![
            vl.cluster_network.clone(),
            vlan_name(vl.vlan),
            c.rx_packets.to_string(),
            c.unicast_packets.to_string(),
            c.flood_packets.to_string(),
            c.flood_copies.to_string(),
            c.to_host_packets.to_string(),
            c.from_host_packets.to_string(),
            c.dhcp_steered.to_string(),
            c.drops.dhcp_guard.to_string(),
            c.drops.mtu.to_string(),
            c.drops.hairpin.to_string(),
            c.drops.local_only.to_string(),
            c.drops.other.to_string(),
        ]);
    }
    out.push_str(&t.render());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_name_the_view_commands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "netctl", &mut buf);
            let s = String::from_utf8(buf).unwrap();
            for sub in ["fdb", "vlans", "counters", "ports", "completions"] {
                assert!(s.contains(sub), "{shell}: no {sub}");
            }
        }
    }

    #[test]
    fn counters_table_names_every_reason() {
        let v = CountersView {
            node: "n1".into(),
            totals: Drops {
                vlan_filter: 3,
                ..Default::default()
            },
            not_checked: vec!["spoofing on br".into()],
            ..Default::default()
        };
        let s = counters_text(&v);
        assert!(
            s.lines()
                .any(|l| l.split_whitespace().eq(["vlan-filter", "3"])),
            "{s}"
        );
        assert!(s.contains("spoofing on br"), "{s}");
        assert!(s.contains("dhcp-guard"), "{s}");
        for r in [
            "spoof-mac",
            "spoof-ipv4",
            "spoof-ipv6",
            "spoof-arp",
            "spoof-nd",
            "ra-guard",
        ] {
            assert!(s.contains(r), "{r}: {s}");
        }
    }
}
