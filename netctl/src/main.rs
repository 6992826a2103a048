//! netctl: what an operator runs when something is wrong. It talks to the
//! node's netd over its unix socket and prints what netd built, as tables
//! or as JSON/YAML with stable field names.

mod doctor;
mod table;
mod trace;
mod views;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use furrow_api::client::{Client, ClientError};
use furrow_api::wire::{
    BgpInfo, ClusterNetworkInfo, DhcpClientInfo, DiscoverRequest, DiscoveredNetwork, LeaseInfo,
    NetworkInfo, NodeMemberInfo, NodeStatus, PoolInfo, PortInfo, ResourceList, VipInfo,
};
use serde::Serialize;
use serde_json::Value;
use table::Table;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Parser)]
#[command(
    name = "netctl",
    version,
    about = "Inspect and configure Furrow on this node",
    long_about = "netctl talks to this node's netd (Furrow's network daemon) and shows what it built: \
the node's status, networks and ports with their datapath counters, and the resources that \
define them. Every view prints a table by default, or JSON/YAML with -o.\n\n\
Examples:\n  netctl status\n  netctl ports -o json\n  netctl get managementnetworks\n  \
netctl apply -f mgmt.yaml\n  netctl --instance node1 ports"
)]
struct Cli {
    /// netd's API socket [default: /run/furrow/netd.sock, or /run/furrow/<instance>/netd.sock].
    #[arg(long, global = true, env = "FURROW_SOCKET")]
    socket: Option<PathBuf>,
    /// Talk to the netd started with --instance NAME.
    #[arg(long, global = true, env = "FURROW_INSTANCE")]
    instance: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value = "table")]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum NodesAction {
    /// Remove the record of a node that is gone and will not return (what
    /// it held is released first if no survivor has yet). Refused for a
    /// live node.
    Forget { name: String },
}

#[derive(Subcommand)]
enum Command {
    /// Node, store, datapath and firewall health, networks and port counts.
    Status,
    /// Every attachment on this node with its addresses and datapath counters.
    Ports,
    /// Networks on this node: subnet, gateway, MTU, address usage.
    Networks,
    /// Show resources of a kind (ManagementNetwork, or its plural / short name), or one by name.
    Get { kind: String, name: Option<String> },
    /// Create or update resources from a YAML or JSON file ('-' for stdin).
    Apply {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// Delete a resource.
    Delete { kind: String, name: String },
    /// DHCP leases of VM networks, cluster-wide (leases are shared), with
    /// the node each VM got its lease on.
    Leases {
        /// Only this network (CNI network name) or pool.
        #[arg(long)]
        network: Option<String>,
        /// Only leases handed out on this node name.
        #[arg(long)]
        node: Option<String>,
        /// Instead: the addresses this node holds as a DHCP client (node
        /// interfaces with dhcp: true).
        #[arg(long, conflicts_with_all = ["network", "node"])]
        held: bool,
    },
    /// Ask a VLAN's DHCP server for its subnet and gateway (no lease is
    /// kept); the answer is shown by `netctl networks` on every node.
    Discover {
        cluster_network: String,
        /// VLAN ID, 0 for the untagged network.
        vlan: u16,
        /// Seconds to wait for an offer (servers such as dnsmasq first
        /// check the address is unused, which takes them ~3 s).
        #[arg(long, default_value_t = 10)]
        timeout: u32,
    },
    /// DHCP pools: subnet, server, capacity, and this node's responder.
    Pools,
    /// Floating VIPs: address, holder and its lease, this node's role,
    /// health, candidates.
    Vip,
    /// Cluster members (node records in the store): state (ready, or gone
    /// once not seen for the grace period), last seen, management subnets.
    /// `nodes forget <name>` removes a gone node's record for good.
    Nodes {
        #[command(subcommand)]
        action: Option<NodesAction>,
    },
    /// BGP: this node's speaker (AS, router id), its sessions with their
    /// state and last error, and the VIP routes it advertises.
    Bgp,
    #[command(flatten)]
    Views(views::ViewCommand),
    /// Explain what the datapath does with a frame from a VM port: VLAN
    /// classification, filters, FDB lookup, then redirect, flood or drop,
    /// each with the map entries behind it. netd runs the loaded switch
    /// program on a crafted frame (BPF_PROG_TEST_RUN) in trace mode:
    /// nothing is learned, counted or sent.
    #[command(after_help = trace::EXAMPLES)]
    Trace(trace::TraceArgs),
    /// netd's Prometheus metrics.
    Metrics,
    /// Check this node for what breaks VM networking, with advice: kernel
    /// features (BPF, tcx, bpffs, bridge VLAN filtering, 802.1Q, bonding,
    /// nftables NAT) and the backends they allow; then, if netd answers,
    /// the store, datapath, uplinks, MTUs along each network, duplicate
    /// MACs/IPs and stale ports. Works without netd. Exits 1 on any error
    /// finding. Run as root in the node's network namespace.
    Doctor {
        /// Also probe this address with full-size DF pings from the node's
        /// own interface on its VLAN (a VlanInterface in its subnet);
        /// repeatable. Neighbours the node already knows there are probed
        /// anyway.
        #[arg(long = "peer", value_name = "IP")]
        peers: Vec<std::net::Ipv4Addr>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Doctor { peers } = &cli.command {
        let report = doctor::run(&Client::new(socket_path(&cli)), peers);
        if let Err(e) = print(cli.output, &report, || doctor::render(&report)) {
            eprintln!("netctl: {e:#}");
            return ExitCode::FAILURE;
        }
        return if report.has_errors() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = match e.downcast_ref::<ClientError>() {
                Some(ClientError::Unreachable { path, source }) => format!(
                    "netd is not reachable at {} ({source}); is netd running? (choose another with --socket or --instance)",
                    path.display()
                ),
                Some(ClientError::PermissionDenied { .. }) => e.to_string(),
                Some(ClientError::Api(a)) => format!("{} (code {})", a.msg, a.code),
                _ => format!("{e:#}"),
            };
            eprintln!("netctl: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn socket_path(cli: &Cli) -> PathBuf {
    if let Some(s) = &cli.socket {
        return s.clone();
    }
    match cli.instance.as_deref() {
        None | Some("default") => PathBuf::from(furrow_api::DEFAULT_SOCKET),
        Some(i) => PathBuf::from("/run/furrow").join(i).join("netd.sock"),
    }
}

fn print<T: Serialize>(out: Output, v: &T, table: impl FnOnce() -> String) -> anyhow::Result<()> {
    match out {
        Output::Json => println!("{}", serde_json::to_string_pretty(v)?),
        Output::Yaml => print!("{}", serde_norway::to_string(v)?),
        Output::Table => print!("{}", table()),
    }
    Ok(())
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let client = Client::new(socket_path(cli));
    match &cli.command {
        Command::Status => {
            let s: NodeStatus = client.get("/v1/status")?;
            print(cli.output, &s, || status_table(&s))
        }
        Command::Ports => {
            let ports: Vec<PortInfo> = client.get("/v1/ports")?;
            print(cli.output, &ports, || ports_table(&ports))
        }
        Command::Networks => {
            let nets: Vec<NetworkInfo> = client.get("/v1/networks")?;
            let cns: Vec<ClusterNetworkInfo> = client.get("/v1/clusternetworks")?;
            let found: Vec<DiscoveredNetwork> = client.get("/v1/dhcp/discovered")?;
            let all = serde_json::json!({
                "managementNetworks": nets,
                "clusterNetworks": cns,
                "discoveredNetworks": found,
            });
            print(cli.output, &all, || {
                let mut out = format!(
                    "Management networks:\n{}\nCluster networks:\n{}",
                    networks_table(&nets),
                    cluster_networks_table(&cns)
                );
                if !found.is_empty() {
                    out.push_str(&format!(
                        "\nDiscovered VLAN networks (netctl discover):\n{}",
                        discovered_table(&found)
                    ));
                }
                out
            })
        }
        Command::Get { kind, name } => match name {
            Some(n) => {
                let v: Value = client.get(&format!("/v1/resources/{kind}/{n}"))?;
                print(cli.output, &v, || resources_table(std::slice::from_ref(&v)))
            }
            None => {
                let l: ResourceList = client.get(&format!("/v1/resources/{kind}"))?;
                print(cli.output, &l.items, || resources_table(&l.items))
            }
        },
        Command::Apply { file } => {
            let (text, name) = if file.as_os_str() == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
                (s, "stdin".to_string())
            } else {
                (
                    std::fs::read_to_string(file)
                        .with_context(|| format!("reading {}", file.display()))?,
                    file.display().to_string(),
                )
            };
            let json = file.extension().and_then(|e| e.to_str()) == Some("json");
            let docs = parse_documents(&text, json).with_context(|| format!("parsing {name}"))?;
            if docs.is_empty() {
                bail!("{name} holds no documents");
            }
            for (i, doc) in docs.iter().enumerate() {
                let kind = doc.get("kind").and_then(|k| k.as_str()).unwrap_or("");
                if kind.is_empty() {
                    bail!("{name} document {}: kind: missing", i + 1);
                }
                let stored: Value =
                    client
                        .put(&format!("/v1/resources/{kind}"), doc)
                        .map_err(|e| {
                            anyhow::anyhow!(describe(&e))
                                .context(format!("{name} document {}", i + 1))
                        })?;
                println!(
                    "{}/{} applied (resourceVersion {})",
                    kind,
                    stored["metadata"]["name"].as_str().unwrap_or(""),
                    stored["metadata"]["resourceVersion"].as_str().unwrap_or("")
                );
            }
            Ok(())
        }
        Command::Delete { kind, name } => {
            let _: Value = client.delete(&format!("/v1/resources/{kind}/{name}"))?;
            println!("{kind}/{name} deleted");
            Ok(())
        }
        Command::Leases { held: true, .. } => {
            let held: Vec<DhcpClientInfo> = client.get("/v1/dhcp/clients")?;
            print(cli.output, &held, || held_table(&held, now_secs()))
        }
        Command::Discover {
            cluster_network,
            vlan,
            timeout,
        } => {
            let req = DiscoverRequest {
                cluster_network: cluster_network.clone(),
                vlan: *vlan,
                timeout_seconds: Some(*timeout),
            };
            // The server gets `timeout` to answer, netd a little more.
            let client =
                client.with_timeout(std::time::Duration::from_secs(u64::from(*timeout) + 10));
            let d: DiscoveredNetwork = client.post("/v1/dhcp/discover", &req)?;
            print(cli.output, &d, || {
                discovered_table(std::slice::from_ref(&d))
            })
        }
        Command::Leases { network, node, .. } => {
            let mut q = Vec::new();
            if let Some(n) = network {
                q.push(format!("network={}", query_escape(n)));
            }
            if let Some(n) = node {
                q.push(format!("node={}", query_escape(n)));
            }
            let route = if q.is_empty() {
                "/v1/dhcp/leases".to_string()
            } else {
                format!("/v1/dhcp/leases?{}", q.join("&"))
            };
            let mut leases: Vec<LeaseInfo> = client.get(&route)?;
            leases.sort_by(|a, b| (&a.pool, a.ip).cmp(&(&b.pool, b.ip)));
            print(cli.output, &leases, || leases_table(&leases, now_secs()))
        }
        Command::Pools => {
            let pools: Vec<PoolInfo> = client.get("/v1/dhcp/pools")?;
            print(cli.output, &pools, || pools_table(&pools))
        }
        Command::Bgp => {
            let bgp: BgpInfo = client.get("/v1/bgp")?;
            print(cli.output, &bgp, || bgp_text(&bgp))
        }
        Command::Nodes { action: None } => {
            let nodes: Vec<NodeMemberInfo> = client.get("/v1/nodes")?;
            print(cli.output, &nodes, || nodes_table(&nodes, now_millis()))
        }
        Command::Nodes {
            action: Some(NodesAction::Forget { name }),
        } => {
            let _: Value = client.delete(&format!("/v1/nodes/{name}"))?;
            println!("node {name} forgotten");
            Ok(())
        }
        Command::Vip => {
            let vips: Vec<VipInfo> = client.get("/v1/vips")?;
            print(cli.output, &vips, || vip_table(&vips, now_millis()))
        }
        // Handled in main: it reports rather than fails.
        Command::Doctor { .. } => Ok(()),
        Command::Views(v) => views::run(v, &client, cli.output),
        Command::Trace(t) => trace::run(t, &client, cli.output),
        Command::Metrics => {
            print!("{}", client.get_text("/metrics")?);
            Ok(())
        }
    }
}

fn describe(e: &ClientError) -> String {
    match e {
        ClientError::Api(a) => a.msg.clone(),
        other => other.to_string(),
    }
}

/// The file's documents: YAML (`---`-separated) or JSON, a `List` or
/// `{"items": [...]}` unpacked, exactly as netd reads its config directory.
fn parse_documents(text: &str, json: bool) -> anyhow::Result<Vec<Value>> {
    furrow_api::document::parse_documents(text, json).map_err(|e| anyhow::anyhow!(e))
}

fn health(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "FAILING"
    }
}

fn status_table(s: &NodeStatus) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "Node:       {} (instance {}, netd {} pid {}, API v{})\n",
        s.node, s.instance, s.version, s.pid, s.api_version
    ));
    out.push_str(&format!(
        "Store:      {} {} at {} (revision {}){}\n",
        health(s.store.healthy),
        s.store.backend,
        s.store.location,
        s.store.revision,
        if s.store.message.is_empty() {
            String::new()
        } else {
            format!(" - {}", s.store.message)
        }
    ));
    out.push_str(&format!(
        "Datapath:   {} {} pins {}{}\n",
        health(s.datapath.healthy),
        s.datapath.mode,
        s.datapath.pin_dir,
        if s.datapath.message.is_empty() {
            String::new()
        } else {
            format!(" - {}", s.datapath.message)
        }
    ));
    out.push_str(&format!("  programs: {}\n", s.datapath.programs.join(", ")));
    if !s.datapath.attachments.is_empty() {
        let tcx = s
            .datapath
            .attachments
            .iter()
            .filter(|a| a.mode == "tcx")
            .count();
        let tc = s.datapath.attachments.len() - tcx;
        out.push_str(&format!(
            "  attached: {tcx} tcx links{}\n",
            if tc > 0 {
                format!(", {tc} tc filters of an older netd (migrated on the next attach)")
            } else {
                String::new()
            }
        ));
    }
    for m in &s.datapath.maps {
        out.push_str(&format!(
            "  map {}: {}/{} entries\n",
            m.name, m.entries, m.max_entries
        ));
    }
    out.push_str(&format!(
        "Firewall:   {} {} table {}{}\n",
        health(s.firewall.healthy),
        s.firewall.backend,
        s.firewall.table,
        if s.firewall.message.is_empty() {
            String::new()
        } else {
            format!(" - {}", s.firewall.message)
        }
    ));
    out.push_str(&format!(
        "Ports:      {} total, {} ready, {} pending, {} lost, {} deleting\n\nNetworks:\n",
        s.ports.total, s.ports.ready, s.ports.pending, s.ports.lost, s.ports.deleting
    ));
    out.push_str(&networks_table(&s.networks));
    out.push_str("\nCluster networks:\n");
    out.push_str(&cluster_networks_table(&s.cluster_networks));
    let k = &s.kernel;
    out.push_str("\nKernel:\n");
    for (name, f) in [
        ("bridge vlan_filtering", &k.bridge_vlan_filtering),
        ("802.1Q devices", &k.vlan_8021q),
        ("bonding", &k.bonding),
    ] {
        out.push_str(&format!(
            "  {name:<22} {}  ({})\n",
            if f.available { "yes" } else { "no" },
            f.detail
        ));
    }
    out
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Percent-encodes what is not safe in a query value.
fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// "3d4h", "2h5m", "40s": the two largest units.
fn span(secs: u64) -> String {
    let units = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];
    let mut out = String::new();
    let mut rest = secs;
    let mut shown = 0;
    for (u, n) in units {
        if rest >= n || (shown == 0 && n == 1) {
            out.push_str(&format!("{}{u}", rest / n));
            rest %= n;
            shown += 1;
            if shown == 2 {
                break;
            }
        } else if shown > 0 {
            break;
        }
    }
    out
}

fn leases_table(leases: &[LeaseInfo], now: u64) -> String {
    let mut t = Table::new(&[
        "POOL", "NETWORK", "ADDRESS", "MAC", "STATE", "EXPIRES", "NODE", "RESERVED", "HOSTNAME",
    ]);
    for l in leases {
        let expires = if l.expires_at > now {
            format!("in {}", span(l.expires_at - now))
        } else {
            format!("{} ago", span(now - l.expires_at))
        };
        let state = if l.expired {
            format!("{} (expired)", l.state)
        } else {
            l.state.clone()
        };
        t.row(vec![
            l.pool.clone(),
            l.network.clone(),
            l.ip.to_string(),
            l.mac.to_string(),
            state,
            expires,
            l.node.clone(),
            if l.reserved { "yes" } else { "-" }.into(),
            l.hostname.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    t.render()
}

fn held_table(held: &[DhcpClientInfo], now: u64) -> String {
    let mut t = Table::new(&[
        "OWNER",
        "INTERFACE",
        "MAC",
        "STATE",
        "ADDRESS",
        "ROUTER",
        "SERVER",
        "RENEWS",
        "EXPIRES",
        "ERROR",
    ]);
    let when = |at: u64| {
        if at == 0 {
            "-".to_string()
        } else if at > now {
            format!("in {}", span(at - now))
        } else {
            format!("{} ago", span(now - at))
        }
    };
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    for h in held {
        t.row(vec![
            h.owner.clone(),
            h.interface.clone(),
            h.mac.to_string(),
            h.state.clone(),
            opt(h.address.map(|a| a.to_string())),
            opt(h.router.map(|a| a.to_string())),
            opt(h.server.map(|a| a.to_string())),
            when(h.renew_at),
            when(h.expires_at),
            opt(h.error.clone()),
        ]);
    }
    t.render()
}

fn discovered_table(found: &[DiscoveredNetwork]) -> String {
    let mut t = Table::new(&[
        "CLUSTER NETWORK",
        "VLAN",
        "CIDR",
        "GATEWAY",
        "DHCP SERVER",
        "DNS",
        "MTU",
        "AGE",
    ]);
    let now = now_secs();
    for d in found {
        t.row(vec![
            d.cluster_network.clone(),
            if d.vlan == 0 {
                "untagged".into()
            } else {
                d.vlan.to_string()
            },
            d.cidr.to_string(),
            d.gateway
                .map(|g| g.to_string())
                .unwrap_or_else(|| "-".into()),
            d.server.to_string(),
            if d.dns.is_empty() {
                "-".into()
            } else {
                d.dns
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            },
            d.mtu.map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
            span(now.saturating_sub(d.discovered_at)),
        ]);
    }
    t.render()
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn nodes_table(nodes: &[NodeMemberInfo], now_ms: u64) -> String {
    let mut t = Table::new(&["NODE", "STATE", "LAST-SEEN", "UP", "SUBNETS", "INSTANCE"]);
    for n in nodes {
        let name = if n.this_node {
            format!("{} (this node)", n.name)
        } else {
            n.name.clone()
        };
        let subnets = if n.subnets.is_empty() {
            "-".to_string()
        } else {
            n.subnets.join(",")
        };
        t.row(vec![
            name,
            n.state.clone(),
            format!("{} ago", span(now_ms.saturating_sub(n.last_seen_ms) / 1000)),
            span(n.last_seen_ms.saturating_sub(n.started_at_ms) / 1000),
            subnets,
            n.instance.clone(),
        ]);
    }
    t.render()
}

fn vip_table(vips: &[VipInfo], now_ms: u64) -> String {
    let mut t = Table::new(&[
        "VIP",
        "ADDRESS",
        "MODE",
        "INTERFACE",
        "HOLDER",
        "HELD-FOR",
        "EPOCH",
        "THIS-NODE",
        "HEALTH",
        "CANDIDATES",
        "PROBLEM",
    ]);
    for v in vips {
        let held_for = v
            .holder_since_ms
            .map(|s| span(now_ms.saturating_sub(s) / 1000))
            .unwrap_or_else(|| "-".into());
        let health = if v.healthy {
            "ok".to_string()
        } else {
            format!(
                "FAILING{}",
                v.health_error
                    .as_ref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            )
        };
        t.row(vec![
            v.name.clone(),
            v.address.map_or("-".into(), |a| a.to_string()),
            v.mode.clone(),
            v.interface.clone().unwrap_or_else(|| "-".into()),
            v.holder.clone().unwrap_or_else(|| "-".into()),
            held_for,
            v.epoch.map_or("-".into(), |e| e.to_string()),
            format!("{} {}", v.node, v.role),
            health,
            if v.candidates.is_empty() {
                "-".into()
            } else {
                v.candidates.join(",")
            },
            v.problem
                .clone()
                .or_else(|| v.heartbeat_error.clone())
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    let mut out = t.render();
    for v in vips {
        if let Some(d) = &v.dhcp {
            out.push_str(&format!("{}: DHCP {d}\n", v.name));
        }
        if let Some(f) = &v.fence {
            out.push_str(&format!("{}: {f}\n", v.name));
        }
    }
    out
}

fn bgp_text(b: &BgpInfo) -> String {
    let mut out = match (b.local_as, b.router_id) {
        (Some(asn), Some(id)) => format!(
            "BGP speaker on {}: AS {asn}, router id {id}, peers {}\n",
            b.node,
            b.selected_peers.join(", ")
        ),
        _ if b.selected_peers.is_empty() => {
            format!(
                "no BGPPeer selects {}: BGP-mode VIPs are not held here\n",
                b.node
            )
        }
        _ => format!("no BGP speaker on {}\n", b.node),
    };
    if let Some(p) = &b.problem {
        out.push_str(&format!("problem: {p}\n"));
    }
    if !b.peers.is_empty() {
        let mut t = Table::new(&[
            "PEER",
            "ADDRESS",
            "AS",
            "STATE",
            "FOR",
            "LOCAL",
            "PEER-ID",
            "HOLD",
            "FAMILIES",
            "ROUTES-OUT",
            "UPDATES-OUT/IN",
            "LAST-ERROR",
        ]);
        for p in &b.peers {
            t.row(vec![
                p.name.clone(),
                format!("{}:{}", p.address, p.port),
                p.remote_as.to_string(),
                p.state.clone(),
                span(p.uptime_ms / 1000),
                p.local_address.map_or("-".into(), |a| a.to_string()),
                p.peer_id.map_or("-".into(), |a| a.to_string()),
                p.hold_time.map_or("-".into(), |h| format!("{h}s")),
                if p.families.is_empty() {
                    "-".into()
                } else {
                    p.families.join(",")
                },
                p.advertised.len().to_string(),
                format!("{}/{}", p.updates_sent, p.updates_received),
                p.last_error.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        out.push('\n');
        out.push_str(&t.render());
        for p in &b.peers {
            for n in &p.notes {
                out.push_str(&format!("note: {}: {n}\n", p.name));
            }
        }
    }
    out.push('\n');
    if b.routes.is_empty() {
        out.push_str("advertising no routes\n");
    } else {
        let mut t = Table::new(&["ROUTE", "VIPS"]);
        for (route, vips) in &b.routes {
            t.row(vec![route.clone(), vips.join(",")]);
        }
        out.push_str(&t.render());
    }
    out
}

fn pools_table(pools: &[PoolInfo]) -> String {
    let mut t = Table::new(&[
        "POOL",
        "NETWORK",
        "CIDR",
        "SERVER",
        "CAPACITY",
        "BOUND",
        "RESPONDER",
        "PROBLEM",
    ]);
    for p in pools {
        t.row(vec![
            p.name.clone(),
            p.network.clone(),
            p.cidr.to_string(),
            p.server_ip.to_string(),
            p.capacity.to_string(),
            p.bound.to_string(),
            p.responder.clone().unwrap_or_else(|| "-".into()),
            p.problem.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    t.render()
}

fn cluster_networks_table(cns: &[ClusterNetworkInfo]) -> String {
    let mut t = Table::new(&[
        "NAME", "BACKEND", "UPLINK", "ACTIVE", "MTU", "VLANS", "PORTS", "PROBLEM",
    ]);
    for c in cns {
        let vlans: Vec<String> = c
            .vlans
            .iter()
            .map(|v| {
                if *v == 0 {
                    "untagged".to_string()
                } else {
                    v.to_string()
                }
            })
            .collect();
        t.row(vec![
            c.name.clone(),
            c.backend.clone(),
            c.uplink
                .as_ref()
                .map(|u| u.nics.join(","))
                .unwrap_or_else(|| "-".into()),
            c.uplink
                .as_ref()
                .and_then(|u| u.active.clone())
                .unwrap_or_else(|| "-".into()),
            c.uplink
                .as_ref()
                .map(|u| u.mtu.to_string())
                .unwrap_or_else(|| "-".into()),
            if vlans.is_empty() {
                "-".into()
            } else {
                vlans.join(",")
            },
            c.ports.to_string(),
            c.problem.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    t.render()
}

fn networks_table(nets: &[NetworkInfo]) -> String {
    let mut t = Table::new(&[
        "NAME",
        "KIND",
        "SUBNET",
        "GATEWAY",
        "CLUSTER-CIDR",
        "MTU",
        "MASQ",
        "BACKEND",
        "PORTS",
        "ADDRESSES",
    ]);
    for n in nets {
        t.row(vec![
            n.name.clone(),
            n.kind.clone(),
            n.subnet.map(|s| s.to_string()).unwrap_or_default(),
            n.gateway.map(|g| g.to_string()).unwrap_or_default(),
            n.cluster_cidr.map(|s| s.to_string()).unwrap_or_default(),
            n.mtu.to_string(),
            if n.masquerade { "yes" } else { "no" }.into(),
            n.backend.clone().unwrap_or_else(|| "-".into()),
            n.ports.to_string(),
            format!("{}/{}", n.addresses_allocated, n.addresses_total),
        ]);
    }
    let mut out = t.render();
    // Cross-node routes: what each network reaches on other nodes.
    for n in nets
        .iter()
        .filter(|n| n.underlay.is_some() || !n.problems.is_empty())
    {
        out.push_str(&format!(
            "\n{} across nodes: {} over {}{}\n",
            n.name,
            n.backend.as_deref().unwrap_or("-"),
            n.underlay.as_deref().unwrap_or("no underlay"),
            n.device
                .as_ref()
                .map(|d| format!(", device {d}"))
                .unwrap_or_default()
        ));
        if !n.remote_subnets.is_empty() {
            let mut r = Table::new(&["NODE", "SUBNET", "NODE-IP", "VTEP-MAC"]);
            for s in &n.remote_subnets {
                r.row(vec![
                    s.node.clone(),
                    s.subnet.to_string(),
                    s.node_ip.to_string(),
                    s.vtep_mac
                        .map(|m| m.to_string())
                        .unwrap_or_else(|| "-".into()),
                ]);
            }
            out.push_str(&r.render());
        }
        for p in &n.problems {
            out.push_str(&format!("  problem: {p}\n"));
        }
    }
    out
}

fn ports_table(ports: &[PortInfo]) -> String {
    let mut t = Table::new(&[
        "POD",
        "CONTAINER",
        "IF",
        "NETWORK",
        "VLAN",
        "IP",
        "MAC",
        "HOST-IF",
        "STATE",
        "TX-PKTS",
        "RX-PKTS",
        "REDIRECTED",
    ]);
    for p in ports {
        let pod = match (&p.pod.namespace, &p.pod.name) {
            (Some(ns), Some(n)) => format!("{ns}/{n}"),
            (None, Some(n)) => n.clone(),
            _ => "-".into(),
        };
        let c = p.counters.clone().unwrap_or_default();
        let short: String = p.container_id.chars().take(12).collect();
        t.row(vec![
            pod,
            short,
            p.ifname.clone(),
            p.network_name.clone(),
            vlan_of(p),
            p.ips
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(","),
            p.mac.to_string(),
            p.host_ifname.clone(),
            format!("{:?}", p.state).to_lowercase(),
            c.tx_packets.to_string(),
            c.rx_packets.to_string(),
            c.redirected_packets.to_string(),
        ]);
    }
    t.render()
}

fn vlan_of(p: &PortInfo) -> String {
    if !p.trunk.is_empty() {
        let r: Vec<String> = p
            .trunk
            .iter()
            .map(|r| {
                if r.min == r.max {
                    r.min.to_string()
                } else {
                    format!("{}-{}", r.min, r.max)
                }
            })
            .collect();
        return format!("trunk:{}", r.join(","));
    }
    match p.vlan {
        Some(0) => "untagged".into(),
        Some(v) => v.to_string(),
        None => "-".into(),
    }
}

fn resources_table(items: &[Value]) -> String {
    let mut t = Table::new(&["KIND", "NAME", "RESOURCE-VERSION", "CREATED", "SPEC"]);
    for i in items {
        t.row(vec![
            i["kind"].as_str().unwrap_or("").into(),
            i["metadata"]["name"].as_str().unwrap_or("").into(),
            i["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("")
                .into(),
            i["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or("")
                .into(),
            i["spec"].to_string(),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_show_the_two_largest_units() {
        assert_eq!(span(0), "0s");
        assert_eq!(span(59), "59s");
        assert_eq!(span(61), "1m1s");
        assert_eq!(span(3_600), "1h");
        assert_eq!(span(3_661), "1h1m");
        assert_eq!(span(31_536_000), "365d");
        assert_eq!(span(90_061), "1d1h");
    }

    #[test]
    fn query_values_are_escaped() {
        assert_eq!(query_escape("default/vm-net"), "default%2Fvm-net");
        assert_eq!(query_escape("a b&c"), "a%20b%26c");
    }
}
