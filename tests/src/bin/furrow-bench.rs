//! furrow-bench: Furrow's figures beside the reference's from the same
//! run, as ratios (machines are noisy; only same-run ratios mean much).
//!
//!   furrow-bench cni [--pods 200] [--fill 1000]
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
    let mut it = args.iter();
    let mut what = None;
    while let Some(a) = it.next() {
        match a.as_str() {
            "--pods" => pods = it.next().and_then(|v| v.parse().ok()).unwrap_or(pods),
            "--fill" => fill = it.next().and_then(|v| v.parse().ok()).unwrap_or(fill),
            w => what = Some(w.to_string()),
        }
    }
    let r = match what.as_deref() {
        Some("cni") | None => bench_cni(pods, fill),
        Some(other) => {
            eprintln!("unknown benchmark {other:?}; available: cni");
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
