//! furrow-bench: Furrow's figures beside the reference's from the same
//! run, as ratios (machines are noisy; only same-run ratios mean much).
//!
//!   furrow-bench cni [--pods 200] [--fill 1000]
//!   furrow-bench vlan [--secs 5]
//!   furrow-bench dhcp [--secs 5]
//!   furrow-bench vip [--trials 20]
//!   furrow-bench scale [--fill 1000] [--secs 5]
//!
//! CNI ADD and DEL latency, p50/p99 over N pods, for `furrow` and for the
//! reference `bridge` plugin with `host-local` IPAM and ipMasq (Debian's
//! containernetworking-plugins); then Furrow's p50 with `fill` pods
//! already attached against its p50 on an empty node.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::bail;
use furrow_tests::cni::{self, Attachment};
use furrow_tests::{names, Lab, Netns};
use serde_json::json;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut pods = 200usize;
    let mut fill = 1000usize;
    let mut secs = 5u32;
    let mut trials = 20usize;
    let mut it = args.iter();
    let mut what = None;
    while let Some(a) = it.next() {
        match a.as_str() {
            "--pods" => pods = it.next().and_then(|v| v.parse().ok()).unwrap_or(pods),
            "--fill" => fill = it.next().and_then(|v| v.parse().ok()).unwrap_or(fill),
            "--secs" => secs = it.next().and_then(|v| v.parse().ok()).unwrap_or(secs),
            "--trials" => trials = it.next().and_then(|v| v.parse().ok()).unwrap_or(trials),
            w => what = Some(w.to_string()),
        }
    }
    let r = match what.as_deref() {
        Some("cni") | None => bench_cni(pods, fill),
        Some("vlan") => bench_vlan(secs),
        Some("dhcp") => bench_dhcp(secs),
        Some("vip") => furrow_tests::bench::vip::bench(trials),
        Some("mgmt") => furrow_tests::bench::mgmt::bench(secs, trials),
        Some("scale") => furrow_tests::bench::scale::bench(secs, fill),
        Some(other) => {
            eprintln!("unknown benchmark {other:?}; available: cni, vlan, dhcp, vip, mgmt");
            std::process::exit(2);
        }
    };
    if let Err(e) = r {
        eprintln!("furrow-bench: {e:#}");
        std::process::exit(1);
    }
}

#[derive(Default)]
struct Samples(Vec<Duration>);

impl Samples {
    fn pct(&self, p: f64) -> Duration {
        let mut v = self.0.clone();
        v.sort();
        if v.is_empty() {
            return Duration::ZERO;
        }
        let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[idx]
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn ratio(a: Duration, b: Duration) -> String {
    if b.is_zero() {
        return "-".into();
    }
    format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64())
}

/// Runs a CNI plugin inside the node namespace, as the node's runtime.
fn run_plugin(
    node: &Netns,
    plugin: &PathBuf,
    env: &[(&str, &str)],
    stdin: &str,
) -> anyhow::Result<Duration> {
    let mut cmd = node.cmd(plugin);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let t = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes())?;
    let out = child.wait_with_output()?;
    let el = t.elapsed();
    if !out.status.success() {
        bail!(
            "{} failed: {}{}",
            plugin.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(el)
}

struct Round {
    add: Samples,
    del: Samples,
}

/// ADD for every sandbox, then DEL for every sandbox.
fn round(
    node: &Netns,
    plugin: &PathBuf,
    cni_path: &str,
    config: &str,
    sandboxes: &[Netns],
    tag: &str,
) -> anyhow::Result<Round> {
    let mut r = Round {
        add: Samples::default(),
        del: Samples::default(),
    };
    for (i, s) in sandboxes.iter().enumerate() {
        let cid = format!("{tag}-{i}");
        let p = s.path_str();
        let env = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", cid.as_str()),
            ("CNI_NETNS", p.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", cni_path),
        ];
        r.add.0.push(run_plugin(node, plugin, &env, config)?);
    }
    for (i, s) in sandboxes.iter().enumerate() {
        let cid = format!("{tag}-{i}");
        let p = s.path_str();
        let env = [
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", cid.as_str()),
            ("CNI_NETNS", p.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", cni_path),
        ];
        r.del.0.push(run_plugin(node, plugin, &env, config)?);
    }
    Ok(r)
}

fn bench_cni(pods: usize, fill: usize) -> anyhow::Result<()> {
    let ref_bridge = PathBuf::from("/usr/lib/cni/bridge");
    if !ref_bridge.exists() {
        bail!("the reference plugins are missing: apt-get install containernetworking-plugins");
    }
    println!(
        "CNI ADD/DEL latency, {pods} pods, sequential, plugin run in the node namespace by both"
    );
    let mut lab = Lab::new()?;
    // A /20 per node: room for the fill plus the measured pods.
    let n = lab.add_node_with("bench-furrow", false)?;
    n.netd.write_config(
        "mgmt.yaml",
        "apiVersion: network.furrow.io/v1alpha1\nkind: ManagementNetwork\nmetadata: {name: mgmt}\nspec: {clusterCIDR: 10.52.0.0/16, nodeSubnetPrefixLength: 20}\n",
    )?;
    n.netd.start()?;
    lab.add_node_with("bench-ref", false)?;
    let fnode = &lab.nodes[0];
    let rnode = &lab.nodes[1];
    let sandboxes: Vec<Netns> = (0..pods)
        .map(|_| Netns::new(&names::unique("b")).unwrap())
        .collect();

    let furrow_cfg = fnode.mgmt_config("1.1.0").to_string();
    let furrow_bin = furrow_tests::bins::furrow();
    let ref_dir = std::env::temp_dir().join(names::unique("hostlocal"));
    let ref_cfg = json!({
        "cniVersion": "1.0.0", "name": "refnet", "type": "bridge", "bridge": "cniref0",
        "isGateway": true, "ipMasq": true, "mtu": 1500,
        "ipam": {"type": "host-local", "subnet": "10.88.0.0/16", "dataDir": ref_dir}
    })
    .to_string();

    // Warm-up round each (page cache, first-bridge creation), not counted.
    round(
        &fnode.ns,
        &furrow_bin,
        "/usr/lib/cni",
        &furrow_cfg,
        &sandboxes[..5.min(pods)],
        "warm",
    )?;
    round(
        &rnode.ns,
        &ref_bridge,
        "/usr/lib/cni",
        &ref_cfg,
        &sandboxes[..5.min(pods)],
        "warm",
    )?;
    let f = round(
        &fnode.ns,
        &furrow_bin,
        "/usr/lib/cni",
        &furrow_cfg,
        &sandboxes,
        "f",
    )?;
    let r = round(
        &rnode.ns,
        &ref_bridge,
        "/usr/lib/cni",
        &ref_cfg,
        &sandboxes,
        "r",
    )?;
    let _ = std::fs::remove_dir_all(&ref_dir);

    println!(
        "\n{:<14} {:>12} {:>12} {:>10}",
        "metric", "furrow", "reference", "ratio"
    );
    let rows = [
        ("ADD p50", f.add.pct(0.5), r.add.pct(0.5)),
        ("ADD p99", f.add.pct(0.99), r.add.pct(0.99)),
        ("DEL p50", f.del.pct(0.5), r.del.pct(0.5)),
        ("DEL p99", f.del.pct(0.99), r.del.pct(0.99)),
        (
            "ADD+DEL p50",
            f.add.pct(0.5) + f.del.pct(0.5),
            r.add.pct(0.5) + r.del.pct(0.5),
        ),
    ];
    for (name, a, b) in rows {
        println!("{name:<14} {:>12} {:>12} {:>10}", ms(a), ms(b), ratio(a, b));
    }
    println!("(target: furrow ADD+DEL at most 0.20x the reference)");

    if fill > 0 {
        println!("\nFlatness: furrow with {fill} pods already attached vs. an empty node");
        let filled: Vec<Netns> = (0..fill)
            .map(|_| Netns::new(&names::unique("f")).unwrap())
            .collect();
        for (i, s) in filled.iter().enumerate() {
            let a = Attachment::new(&format!("fill-{i}"), &s.path_str(), "eth0");
            cni::add(&a, &fnode.mgmt_config("1.1.0")).expect_ok("fill ADD");
        }
        let full = round(
            &fnode.ns,
            &furrow_bin,
            "/usr/lib/cni",
            &furrow_cfg,
            &sandboxes,
            "full",
        )?;
        println!(
            "\n{:<14} {:>12} {:>12} {:>10}",
            "metric", "full node", "empty node", "ratio"
        );
        for (name, a, b) in [
            ("ADD p50", full.add.pct(0.5), f.add.pct(0.5)),
            ("DEL p50", full.del.pct(0.5), f.del.pct(0.5)),
        ] {
            println!("{name:<14} {:>12} {:>12} {:>10}", ms(a), ms(b), ratio(a, b));
        }
        println!("(target: within 1.20x)");
        for (i, s) in filled.iter().enumerate() {
            let a = Attachment::new(&format!("fill-{i}"), &s.path_str(), "eth0");
            cni::del(&a, &fnode.mgmt_config("1.1.0")).expect_ok("fill DEL");
        }
    }
    Ok(())
}

/// Two VMs on one node and one on another, in one layer-2 network.
struct L2Pair {
    a: Netns,
    b_same: Netns,
    c_remote: Netns,
    ip_b: std::net::Ipv4Addr,
    ip_c: std::net::Ipv4Addr,
}

fn set_ip(ns: &Netns, ip: &str) -> anyhow::Result<()> {
    ns.ip(&["addr", "add", ip, "dev", "eth0"])?;
    ns.ip(&["link", "set", "eth0", "up"])?;
    Ok(())
}

/// Furrow: cluster network on each node's data0, VMs on VLAN 100.
fn furrow_l2(lab: &mut Lab) -> anyhow::Result<(L2Pair, Vec<furrow_tests::Pod>)> {
    use furrow_tests::lab::vlan_nad;
    for (i, n) in ["bf1", "bf2"].iter().enumerate() {
        lab.add_node(n)?;
        lab.add_data_nic(i, "data0")?;
        lab.node(i)
            .cluster_network("data", "ebpf", &["data0"], 1500)?;
    }
    let mut pods = Vec::new();
    for (i, node) in [0usize, 0, 1].iter().enumerate() {
        let n = lab.node(*node);
        let p = n.vm(
            &format!("v{i}"),
            &vlan_nad("vlan100", "data", 100, &n.netd.socket),
        )?;
        set_ip(&p.ns, &format!("10.77.0.{}/24", 11 + i))?;
        pods.push(p);
    }
    // The pods own the namespaces; the pair borrows their names.
    let pair = L2Pair {
        a: Netns::open_existing(&pods[0].ns.name),
        b_same: Netns::open_existing(&pods[1].ns.name),
        c_remote: Netns::open_existing(&pods[2].ns.name),
        ip_b: "10.77.0.12".parse()?,
        ip_c: "10.77.0.13".parse()?,
    };
    Ok((pair, pods))
}

/// The reference: a plain Linux bridge per node with the data NIC and the
/// VMs' veths as ports (no VLAN: this kernel's bridge cannot tag).
fn bridge_l2(lab: &mut Lab) -> anyhow::Result<(L2Pair, Vec<Netns>)> {
    let base = lab.nodes.len();
    for (i, n) in ["bb1", "bb2"].iter().enumerate() {
        lab.add_node_with(n, false)?;
        lab.add_data_nic(base + i, "data0")?;
        let ns = &lab.node(base + i).ns;
        ns.ip(&["link", "add", "br0", "type", "bridge"])?;
        ns.ip(&["link", "set", "br0", "up"])?;
        ns.ip(&["link", "set", "data0", "master", "br0"])?;
    }
    let mut vms = Vec::new();
    for (i, node) in [0usize, 0, 1].iter().enumerate() {
        let vm = Netns::new(&names::unique(&format!("r{i}")))?;
        let ns = &lab.node(base + node).ns;
        let host = format!("rv{i}");
        ns.ip(&[
            "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &vm.name,
        ])?;
        ns.ip(&["link", "set", &host, "master", "br0"])?;
        ns.ip(&["link", "set", &host, "up"])?;
        set_ip(&vm, &format!("10.78.0.{}/24", 11 + i))?;
        vms.push(vm);
    }
    let pair = L2Pair {
        a: Netns::open_existing(&vms[0].name),
        b_same: Netns::open_existing(&vms[1].name),
        c_remote: Netns::open_existing(&vms[2].name),
        ip_b: "10.78.0.12".parse()?,
        ip_c: "10.78.0.13".parse()?,
    };
    Ok((pair, vms))
}

struct L2Figures {
    tcp_gbps: f64,
    udp_pps: f64,
    rr_avg_us: f64,
    rr_p99_us: f64,
}

fn measure(
    client: &Netns,
    server: &Netns,
    ip: std::net::Ipv4Addr,
    secs: u32,
) -> anyhow::Result<L2Figures> {
    use furrow_tests::bench::traffic;
    // Warm up neighbour and FDB entries.
    let _ = client
        .cmd("ping")
        .args(["-c", "2", "-i", "0.2", &ip.to_string()])
        .output();
    let tcp_gbps = traffic::tcp_gbps(client, server, ip, secs)?;
    let udp_pps = traffic::udp64_pps(client, server, ip, secs)?;
    let (rr_avg_us, rr_p99_us) = traffic::rr_latency_us(client, server, ip, secs)?;
    Ok(L2Figures {
        tcp_gbps,
        udp_pps,
        rr_avg_us,
        rr_p99_us,
    })
}

fn bench_vlan(secs: u32) -> anyhow::Result<()> {
    println!("VM-to-VM on one layer-2 network: Furrow's eBPF switch (VLAN 100) vs the kernel bridge + veth (untagged; this kernel's bridge cannot tag), {secs} s per figure");
    let mut lab = Lab::new()?;
    let (f, _fpods) = furrow_l2(&mut lab)?;
    let (r, _rvms) = bridge_l2(&mut lab)?;
    for (label, fa, fb, fip, ra, rb, rip) in [
        (
            "same node",
            &f.a,
            &f.b_same,
            f.ip_b,
            &r.a,
            &r.b_same,
            r.ip_b,
        ),
        (
            "cross node",
            &f.a,
            &f.c_remote,
            f.ip_c,
            &r.a,
            &r.c_remote,
            r.ip_c,
        ),
    ] {
        let fm = measure(fa, fb, fip, secs)?;
        let rm = measure(ra, rb, rip, secs)?;
        println!("\n{label}:");
        println!(
            "{:<22} {:>14} {:>14} {:>8}",
            "metric", "furrow eBPF", "kernel bridge", "ratio"
        );
        let row = |n: &str, a: f64, b: f64, unit: &str| {
            println!(
                "{n:<22} {:>11.2} {unit:<2} {:>11.2} {unit:<2} {:>7.2}x",
                a,
                b,
                a / b
            );
        };
        row("TCP throughput", fm.tcp_gbps, rm.tcp_gbps, "G");
        row(
            "UDP 64B packet rate",
            fm.udp_pps / 1e3,
            rm.udp_pps / 1e3,
            "k",
        );
        row("RR latency avg", fm.rr_avg_us, rm.rr_avg_us, "us");
        row("RR latency p99", fm.rr_p99_us, rm.rr_p99_us, "us");
    }
    println!("\n(targets: packet rate >= 1.3x, latency <= 0.8x, throughput not lower; G = Gbit/s, k = kpps)");
    Ok(())
}

fn bench_dhcp(secs: u32) -> anyhow::Result<()> {
    use furrow_tests::bench::dhcp::{dnsmasq_target, furrow_target, perfdhcp, Figures};
    println!("DHCP: perfdhcp 4-way exchanges (new clients each run) against Furrow's node-local responder (leases in etcd) and dnsmasq (lease file), same node and switch, {secs} s per run");
    let mut lab = Lab::shared(1)?;
    lab.add_node("bd1")?;
    lab.add_data_nic(0, "data0")?;
    lab.node(0)
        .cluster_network("data", "ebpf", &["data0"], 1500)?;
    let f = furrow_target(&lab, 0)?;
    let r = dnsmasq_target(&lab, 0)?;
    // Warm-up: responder, ARP and FDB entries, etcd connection.
    perfdhcp(&f.load.ns, f.server, 20, 1, 1)?;
    perfdhcp(&r.target.load.ns, r.target.server, 20, 1, 2)?;
    let mut run = 3u8;
    let mut both = |rate: u32, rounds: usize| -> anyhow::Result<(Figures, Figures)> {
        // Alternate, and keep each side's best round: noise only slows.
        let (mut fb, mut rb) = (Figures::default(), Figures::default());
        for _ in 0..rounds {
            let a = perfdhcp(&f.load.ns, f.server, rate, secs, run)?;
            let b = perfdhcp(&r.target.load.ns, r.target.server, rate, secs, run + 1)?;
            run += 2;
            if a.rate > fb.rate {
                fb = a;
            }
            if b.rate > rb.rate {
                rb = b;
            }
        }
        Ok((fb, rb))
    };
    // Latency at a rate both sustain.
    let (fl, rl) = both(100, 1)?;
    // Saturation: offer far more than either can do.
    let (fs, rs) = both(20_000, 2)?;
    println!(
        "{:<34} {:>12} {:>12} {:>8}",
        "metric", "furrow", "dnsmasq", "ratio"
    );
    let row = |n: &str, a: f64, b: f64| {
        println!("{n:<34} {a:>12.2} {b:>12.2} {:>7.2}x", a / b);
    };
    row("leases/s at saturation", fs.rate, rs.rate);
    row("  unanswered at saturation (%)", fs.drops_pct, rs.drops_pct);
    row(
        "DISCOVER->OFFER avg ms (100/s)",
        fl.offer_avg_ms,
        rl.offer_avg_ms,
    );
    row("REQUEST->ACK avg ms (100/s)", fl.ack_avg_ms, rl.ack_avg_ms);
    row(
        "DISCOVER->OFFER max ms (100/s)",
        fl.offer_max_ms,
        rl.offer_max_ms,
    );
    row("REQUEST->ACK max ms (100/s)", fl.ack_max_ms, rl.ack_max_ms);
    println!("\n(targets: leases/s ratio >= 1.0x, latency ratios <= 1.0x)");
    Ok(())
}
