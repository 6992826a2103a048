//! furrow-lab: brings up the demo — a lab on this machine running
//! everything Furrow can do — and tears it down again.
//!
//!   furrow-lab demo up      build the lab, show what works, leave it running
//!   furrow-lab demo status  netctl views of the running demo
//!   furrow-lab demo down    remove everything the demo created

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use furrow_api::wire::PortInfo;
use furrow_tests::lab::EXTERNAL_IP;
use furrow_tests::{bins, names, probe, Lab, Netns};
use serde_json::json;

const STATE: &str = "/run/furrow-demo.json";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["demo", "up"] | ["demo"] => up(),
        ["demo", "down"] => down(),
        ["demo", "status"] => status(),
        ["scenario", "vlan", backend] => scenario_vlan(backend),
        _ => {
            eprintln!(
                "usage: furrow-lab demo [up|status|down] | furrow-lab scenario vlan <ebpf|bridge>"
            );
            return ExitCode::from(2);
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("furrow-lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn step(n: u32, total: u32, what: &str) {
    println!("\n[{n}/{total}] {what}");
}

fn up() -> anyhow::Result<()> {
    if PathBuf::from(STATE).exists() {
        println!("A demo is already running; replacing it.");
        down()?;
    }
    names::use_fixed_prefix(names::DEMO_PREFIX);
    const T: u32 = 6;
    println!("== Furrow demo: the management network on one node ==");

    step(
        1,
        T,
        "Lab: a fabric switch, an external host and a node running netd",
    );
    let mut lab = Lab::new()?;
    lab.add_node("node1")?;
    let node = lab.node(0);
    println!(
        "  fabric switch   netns {} (bridge fabric0)",
        lab.fabric.name
    );
    println!(
        "  external host   netns {}  {EXTERNAL_IP}",
        lab.external.name
    );
    println!(
        "  node1           netns {}  {} (uplink0), netd instance {}",
        node.ns.name, node.uplink_ip, node.netd.instance
    );

    step(
        2,
        T,
        "CNI ADD through the `furrow` plugin, as Multus/kubelet would call it",
    );
    let web = node.mgmt_pod("web")?;
    let db = node.mgmt_pod("db")?;
    let mut vm_cfg = node.mgmt_config("0.3.1");
    vm_cfg["mtu"] = json!(1400);
    vm_cfg["capabilities"] = json!({"mac": true});
    vm_cfg["runtimeConfig"] = json!({"mac": "52:54:00:12:34:56"});
    let vm = node.add_pod("vm", &vm_cfg)?;
    for (name, p) in [("web", &web), ("db", &db), ("vm", &vm)] {
        println!(
            "  pod {name:<4} netns {:<16} eth0 {}  gateway {}",
            p.ns.name,
            p.result["ips"][0]["address"].as_str().unwrap_or(""),
            p.result["ips"][0]["gateway"].as_str().unwrap_or("")
        );
    }
    println!("  pod vm   (cniVersion 0.3.1 config, runtimeConfig.mac 52:54:00:12:34:56, mtu 1400)");

    step(
        3,
        T,
        "Pod to pod on the node: delivered by the eBPF datapath (bpf_redirect_peer)",
    );
    let ok = probe::ping_ok(&web.ns, IpAddr::V4(db.ip()), 5);
    let ports: Vec<PortInfo> = node.netd.client().get("/v1/ports")?;
    let redirected = ports
        .iter()
        .find(|p| p.container_id == web.container_id)
        .and_then(|p| p.counters.as_ref())
        .map(|c| c.redirected_packets)
        .unwrap_or(0);
    println!(
        "  web -> db ({}): {}; packets web sent that the datapath redirected: {redirected}",
        db.ip(),
        if ok { "reachable" } else { "UNREACHABLE" }
    );
    if !ok {
        bail!("pod-to-pod failed");
    }
    let seen = probe::udp_source_seen(&web.ns, &db.ns, SocketAddr::new(IpAddr::V4(db.ip()), 7100))?;
    println!("  db sees web's datagrams from {seen} (pod address: no NAT inside the cluster)");

    step(
        4,
        T,
        "Leaving the cluster: masqueraded behind the node by nftables",
    );
    let ok = probe::ping_ok(&vm.ns, IpAddr::V4(EXTERNAL_IP), 5);
    let seen = probe::udp_source_seen(
        &vm.ns,
        &lab.external,
        SocketAddr::new(IpAddr::V4(EXTERNAL_IP), 7101),
    )?;
    println!("  vm -> external host {EXTERNAL_IP}: {}; the external host sees source {seen} (node1's address)", if ok { "reachable" } else { "UNREACHABLE" });

    step(5, T, "CNI CHECK and DEL");
    let out = furrow_tests::cni::check(&db.attachment(), &db.config, &db.result);
    println!(
        "  CHECK db: {}",
        if out.success() {
            "ok".to_string()
        } else {
            out.error_msg()
        }
    );
    let tmp = node.mgmt_pod("tmp")?;
    let out = node.del_pod(&tmp);
    println!(
        "  ADD then DEL of pod tmp ({}): {}",
        tmp.ip(),
        if out.success() {
            "removed, address released"
        } else {
            "FAILED"
        }
    );
    drop(tmp);

    step(6, T, "What netd built, as netctl shows it");
    let socket = node.netd.socket.clone();
    for view in ["status", "ports"] {
        println!("\n$ netctl --socket {} {view}", socket.display());
        let out = node.netd.netctl(&[view])?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }

    let state = json!({
        "socket": socket,
        "netctl": bins::netctl(),
        "pods": {"web": web.ns.name, "db": db.ns.name, "vm": vm.ns.name},
        "node": node.ns.name,
        "log": node.netd.log_path,
    });
    std::fs::write(STATE, serde_json::to_vec_pretty(&state)?)?;
    println!("\nThe demo keeps running. Try:");
    println!(
        "  {} --socket {} ports -o json",
        bins::netctl().display(),
        socket.display()
    );
    println!(
        "  nsenter --net=/run/netns/{} ping -c3 {}",
        web.ns.name,
        vm.ip()
    );
    println!(
        "  {} --socket {} metrics | grep furrow_port",
        bins::netctl().display(),
        socket.display()
    );
    println!("  netd log: {}", node.netd.log_path.display());
    println!("Tear it down with: bash scripts/demo.sh down");
    let mut web = web;
    let mut db = db;
    let mut vm = vm;
    for p in [&mut web, &mut db, &mut vm] {
        p.ns.keep();
    }
    lab.keep();
    Ok(())
}

fn status() -> anyhow::Result<()> {
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(STATE).context("no demo is running (bash scripts/demo.sh)")?,
    )?;
    let socket = state["socket"].as_str().unwrap_or_default();
    for view in ["status", "ports"] {
        println!("$ netctl --socket {socket} {view}");
        let out = std::process::Command::new(bins::netctl())
            .args(["--socket", socket, view])
            .output()?;
        print!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn down() -> anyhow::Result<()> {
    // netd processes of the demo.
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmd) = std::fs::read(p.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmd
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if let Some(i) = args.iter().position(|a| a == "--instance") {
                if args
                    .get(i + 1)
                    .is_some_and(|s| s.starts_with(names::DEMO_PREFIX))
                {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut removed = 0;
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(names::DEMO_PREFIX) {
                Netns::delete(&n);
                removed += 1;
            }
        }
    }
    for root in [
        furrow_tests::janitor::STATE_ROOT,
        furrow_tests::janitor::BPF_ROOT,
    ] {
        if let Ok(entries) = std::fs::read_dir(root) {
            for e in entries.flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .starts_with(names::DEMO_PREFIX)
                {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
    let _ = std::fs::remove_file(STATE);
    println!("demo removed ({removed} namespaces)");
    Ok(())
}

/// Runs the VLAN scenario with a backend and reports each check; used
/// inside a full-kernel guest for the kernel-bridge backend.
fn scenario_vlan(backend: &str) -> anyhow::Result<()> {
    use furrow_tests::scenario::vlan::VlanLab;
    let started = std::time::Instant::now();
    let mut v = VlanLab::build(backend)?;
    println!(
        "SCENARIO built backend={backend} in {:?}",
        started.elapsed()
    );
    let mut failed = Vec::new();
    let mut run = |name: &str, r: anyhow::Result<()>| match r {
        Ok(()) => println!("SCENARIO PASS {name}"),
        Err(e) => {
            println!("SCENARIO FAIL {name}: {e:#}");
            failed.push(name.to_string());
        }
    };
    run("same-vlan", v.check_same_vlan());
    run("isolation", v.check_isolation());
    run(
        "trunk-and-broadcast-domains",
        v.check_trunk_and_broadcast_domains(),
    );
    run("no-loops", v.check_no_loops());
    let m = v
        .check_migration()
        .map(|t| println!("SCENARIO migration reachable after {t:?}"));
    run("migration", m);
    if failed.is_empty() {
        println!("SCENARIO OK");
        Ok(())
    } else {
        bail!("failed checks: {}", failed.join(", "))
    }
}
