//! `netctl trace`: what the datapath does with a frame from a port
//! (`POST /v1/trace`). netd runs the loaded switch program on a crafted
//! frame in its trace mode: the answer comes from the datapath itself, and
//! nothing is learned, counted or sent.

use std::net::Ipv4Addr;

use clap::Args;
use furrow_api::client::Client;
use furrow_api::wire_trace::{TracePortSelector, TraceRequest, TraceResponse};
use furrow_api::MacAddr;

use crate::{print, Output};

pub const EXAMPLES: &str = "\
Examples:
  netctl trace vm1 --dst-mac 52:54:00:00:00:02               # same VLAN: where does it go?
  netctl trace default/vm1 --ifname net1 --dst-mac ff:ff:ff:ff:ff:ff --dst-ip 10.0.0.2
                                                            # an ARP broadcast: who gets a copy?
  netctl trace vm1 --dst-mac 52:54:00:00:00:02 --vlan 200 -o json   # a tagged frame
  netctl trace --container-id 3f2a... --ifname net1 --dst-mac 52:54:00:00:00:02";

#[derive(Args)]
pub struct TraceArgs {
    /// The VM (or pod) the frame comes from: `name` or `namespace/name`
    /// (a KubeVirt `virt-launcher-<vm>-<hash>` pod matches `<vm>`).
    #[arg(required_unless_present = "container_id")]
    pub vm: Option<String>,
    /// Instead of a VM: the attachment's container id (with --ifname).
    #[arg(long, conflicts_with = "vm", requires = "ifname")]
    pub container_id: Option<String>,
    /// The interface inside the pod (`net1`); picks one of a VM's ports.
    #[arg(long)]
    pub ifname: Option<String>,
    /// Destination MAC (`ff:ff:ff:ff:ff:ff` for a broadcast).
    #[arg(long)]
    pub dst_mac: MacAddr,
    /// Destination IPv4 address (an IPv4/UDP frame; an ARP request for a
    /// broadcast destination).
    #[arg(long)]
    pub dst_ip: Option<Ipv4Addr>,
    /// Send the frame tagged with this VLAN (what a trunk port sends);
    /// without it the frame is untagged (what an access port sends).
    #[arg(long)]
    pub vlan: Option<u16>,
    /// Source MAC [default: the port's].
    #[arg(long)]
    pub src_mac: Option<MacAddr>,
    /// Source IPv4 address.
    #[arg(long)]
    pub src_ip: Option<Ipv4Addr>,
}

pub fn run(a: &TraceArgs, client: &Client, out: Output) -> anyhow::Result<()> {
    let req = TraceRequest {
        port: a.container_id.as_ref().map(|c| TracePortSelector {
            container_id: c.clone(),
            ifname: a.ifname.clone().unwrap_or_default(),
        }),
        vm: a.vm.clone(),
        ifname: if a.container_id.is_some() {
            None
        } else {
            a.ifname.clone()
        },
        dst_mac: a.dst_mac,
        dst_ip: a.dst_ip,
        vlan: a.vlan,
        src_mac: a.src_mac,
        src_ip: a.src_ip,
    };
    let r: TraceResponse = client.post("/v1/trace", &req)?;
    print(out, &r, || trace_text(&r))
}

/// The steps as a numbered list, then the verdict.
pub fn trace_text(r: &TraceResponse) -> String {
    let f = &r.frame;
    let mut s = format!(
        "Trace on node {} (cluster network {}), from {}\n",
        r.node,
        r.cluster_network,
        r.port.label()
    );
    s += &format!("Frame: {} -> {}", f.src_mac, f.dst_mac);
    if let Some(v) = f.vlan {
        s += &format!(", tagged VLAN {v}");
    } else {
        s += ", untagged";
    }
    if f.src_ip.is_some() || f.dst_ip.is_some() {
        let ip = |a: Option<Ipv4Addr>| a.map_or("-".to_string(), |a| a.to_string());
        s += &format!(", IPv4 {} -> {}", ip(f.src_ip), ip(f.dst_ip));
    }
    s += "\n\n";
    for (i, st) in r.steps.iter().enumerate() {
        s += &format!("{:>2}. {:<8} {}\n", i + 1, st.stage, st.decision);
        for e in &st.entries {
            s += &format!("              {e}\n");
        }
    }
    s += &format!("\nVerdict: {} ({})", r.verdict.to_uppercase(), r.reason);
    if let Some(v) = r.vlan {
        s += &format!(", VLAN {v}");
    }
    s += "\n";
    if !r.out_ports.is_empty() {
        s += "Out: ";
        s += &r
            .out_ports
            .iter()
            .map(|p| p.label())
            .collect::<Vec<_>>()
            .join(", ");
        s += "\n";
    }
    s
}
