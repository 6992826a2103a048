//! The management network across nodes (issue 8): pod-to-pod TCP
//! throughput and request/response latency between two nodes over the
//! VXLAN overlay and over host-gw routes, beside node-to-node on the same
//! underlay in the same run; and how long a resource applied on one node
//! takes to be in effect on all three nodes (etcd watch → reconcile).
//!
//! `furrow-bench mgmt [--secs N] [--trials N]`

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use furrow_api::wire::{ClusterNetworkInfo, NetworkInfo};

use crate::bench::traffic;
use crate::{Lab, Netns, Pod};

struct Figures {
    gbps: f64,
    rr_avg_us: f64,
    rr_p99_us: f64,
}

fn measure(a: &Netns, b: &Netns, b_ip: std::net::Ipv4Addr, secs: u32) -> anyhow::Result<Figures> {
    let gbps = traffic::tcp_gbps(a, b, b_ip, secs)?;
    let (rr_avg_us, rr_p99_us) = traffic::rr_latency_us(a, b, b_ip, secs)?;
    Ok(Figures {
        gbps,
        rr_avg_us,
        rr_p99_us,
    })
}

fn wait_backend(lab: &Lab, backend: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut ok = true;
        for i in 0..lab.nodes.len() {
            let nets: Vec<NetworkInfo> = lab.node(i).netd.client().get("/v1/networks")?;
            ok &= nets.iter().any(|n| {
                n.name == "mgmt"
                    && n.backend.as_deref() == Some(backend)
                    && n.remote_subnets.len() == lab.nodes.len() - 1
                    && n.problems.is_empty()
            });
        }
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("cross-node routes for {backend} never completed");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pods(lab: &Lab, tag: &str) -> anyhow::Result<(Pod, Pod)> {
    let a = lab.node(0).mgmt_pod(&format!("{tag}a"))?;
    let b = lab.node(1).mgmt_pod(&format!("{tag}b"))?;
    // First packets resolve neighbours; keep them out of the figures.
    if !crate::probe::ping_ok(&a.ns, std::net::IpAddr::V4(b.ip()), 10) {
        bail!("{tag}: pods on node1 and node2 cannot reach each other");
    }
    Ok((a, b))
}

/// Time from a resource being applied through node1's API until all three
/// nodes report it, in milliseconds.
fn propagation_ms(lab: &Lab, trial: usize) -> anyhow::Result<f64> {
    let name = format!("prop{trial}");
    let yaml = format!(
        "apiVersion: network.furrow.io/v1alpha1\nkind: ClusterNetwork\nmetadata: {{name: {name}}}\nspec: {{}}\n"
    );
    let clients: Vec<_> = (0..lab.nodes.len())
        .map(|i| lab.node(i).netd.client())
        .collect();
    let start = Instant::now();
    lab.node(0).apply(&yaml)?;
    let mut pending: Vec<usize> = (0..clients.len()).collect();
    let deadline = start + Duration::from_secs(10);
    while !pending.is_empty() {
        pending.retain(|&i| {
            let cns: Vec<ClusterNetworkInfo> =
                clients[i].get("/v1/clusternetworks").unwrap_or_default();
            !cns.iter().any(|c| c.name == name)
        });
        if Instant::now() > deadline {
            bail!("{name} never reached nodes {pending:?}");
        }
        if !pending.is_empty() {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    lab.node(0)
        .netd
        .netctl(&["delete", "ClusterNetwork", &name])
        .context("deleting the probe resource")?;
    Ok(ms)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

pub fn bench(secs: u32, trials: usize) -> anyhow::Result<()> {
    let mut lab = Lab::shared(3)?;
    for n in ["mb1", "mb2", "mb3"] {
        lab.add_node(n)?;
    }
    wait_backend(&lab, "vxlan")?;

    // Baseline: node to node on the underlay.
    let base = measure(
        &lab.node(0).ns,
        &lab.node(1).ns,
        lab.node(1).uplink_ip,
        secs,
    )?;

    let (a, b) = pods(&lab, "vx")?;
    let vxlan = measure(&a.ns, &b.ns, b.ip(), secs)?;
    lab.node(0).del_pod(&a).expect_ok("DEL");
    lab.node(1).del_pod(&b).expect_ok("DEL");

    lab.node(0).apply(
        "apiVersion: network.furrow.io/v1alpha1\nkind: ManagementNetwork\nmetadata: {name: mgmt}\nspec:\n  clusterCIDR: 10.52.0.0/16\n  backend: host-gw\n",
    )?;
    wait_backend(&lab, "host-gw")?;
    let (a, b) = pods(&lab, "hg")?;
    let hostgw = measure(&a.ns, &b.ns, b.ip(), secs)?;
    lab.node(0).del_pod(&a).expect_ok("DEL");
    lab.node(1).del_pod(&b).expect_ok("DEL");

    let mut prop = Vec::new();
    for t in 0..trials {
        prop.push(propagation_ms(&lab, t)?);
    }
    prop.sort_by(f64::total_cmp);

    println!(
        "\nmgmt: cross-node pod to pod (TCP 1 stream {secs} s; UDP 64 B request/response), same run"
    );
    println!(
        "{:<22} {:>10} {:>8} {:>12} {:>8} {:>12} {:>8}",
        "path", "Gbit/s", "ratio", "RR avg us", "ratio", "RR p99 us", "ratio"
    );
    for (name, f) in [
        ("node to node (base)", &base),
        ("pods over vxlan", &vxlan),
        ("pods over host-gw", &hostgw),
    ] {
        println!(
            "{:<22} {:>10.2} {:>7.2}x {:>12.1} {:>7.2}x {:>12.1} {:>7.2}x",
            name,
            f.gbps,
            f.gbps / base.gbps,
            f.rr_avg_us,
            f.rr_avg_us / base.rr_avg_us,
            f.rr_p99_us,
            f.rr_p99_us / base.rr_p99_us
        );
    }
    println!(
        "\nresource applied on node1 in effect on all 3 nodes (etcd, {} trials): median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        prop.len(),
        pct(&prop, 0.5),
        pct(&prop, 0.9),
        prop.last().copied().unwrap_or(0.0)
    );
    Ok(())
}
