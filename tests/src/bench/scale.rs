//! The scale benchmark: one node, an eBPF cluster network, and the same
//! measurements on the empty node and with 1000 VM ports on 200 VLANs:
//! netd's resident memory, its idle CPU, CNI ADD p50/p99 and the
//! datapath's packet rate between two VMs. Printed as ratios to the
//! empty node's figures from the same run.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::traffic;
use crate::scenario::scale::{quiet_vm, quiet_vms};
use crate::Lab;

const CN: &str = "data";
const NIC: &str = "data0";
const PROBE_VLAN: u16 = 10;

struct Figures {
    rss_mib: f64,
    idle_cpu_pct: f64,
    add_p50_ms: f64,
    add_p99_ms: f64,
    pps: f64,
}

fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS")?;
    Ok(kb / 1024.0)
}

/// CPU time (user + system) of a process, in seconds.
fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parens.
    let rest = &s[s.rfind(')').context("stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

fn measure(
    lab: &Lab,
    pid: u32,
    a: &crate::Pod,
    b: &crate::Pod,
    ip_b: Ipv4Addr,
    secs: u32,
    adds: usize,
) -> anyhow::Result<Figures> {
    let socket = lab.node(0).netd.socket.clone();
    let rss = rss_mib(pid)?;
    let c0 = cpu_secs(pid)?;
    std::thread::sleep(Duration::from_secs(10));
    let idle = (cpu_secs(pid)? - c0) / 10.0 * 100.0;
    let mut lat = Vec::with_capacity(adds);
    let mut extra = Vec::with_capacity(adds);
    for _ in 0..adds {
        let (pod, took) = quiet_vm(CN, PROBE_VLAN + 1, &socket, "bq")?;
        lat.push(took.as_secs_f64() * 1000.0);
        extra.push(pod);
    }
    lat.sort_by(|x, y| x.total_cmp(y));
    let pps = traffic::udp64_pps(&a.ns, &b.ns, ip_b, secs)?;
    Ok(Figures {
        rss_mib: rss,
        idle_cpu_pct: idle,
        add_p50_ms: lat[lat.len() / 2],
        add_p99_ms: lat[(lat.len() * 99 / 100).min(lat.len() - 1)],
        pps,
    })
}

pub fn bench(secs: u32, ports: usize) -> anyhow::Result<()> {
    println!(
        "Scale: one node, eBPF switch; the empty node vs {ports} VM ports on 200 VLANs (same run); \
         idle CPU over 10 s, 100 CNI ADDs, UDP 64 B packet rate between two VMs for {secs} s"
    );
    let mut lab = Lab::new()?;
    lab.add_node("sc1")?;
    lab.add_data_nic(0, NIC)?;
    lab.node(0).cluster_network(CN, "ebpf", &[NIC], 1500)?;
    let socket = lab.node(0).netd.socket.clone();
    let pid = lab.node(0).netd.pid().context("netd pid")?;
    let (a, _) = quiet_vm(CN, PROBE_VLAN, &socket, "ba")?;
    let (b, _) = quiet_vm(CN, PROBE_VLAN, &socket, "bb")?;
    let (ip_a, ip_b) = (Ipv4Addr::new(10, 80, 0, 1), Ipv4Addr::new(10, 80, 0, 2));
    a.ns.ip(&["addr", "add", &format!("{ip_a}/24"), "dev", "eth0"])?;
    b.ns.ip(&["addr", "add", &format!("{ip_b}/24"), "dev", "eth0"])?;
    let empty = measure(&lab, pid, &a, &b, ip_b, secs, 100)?;
    let vlans: Vec<u16> = (1000..1200).collect();
    let per_vlan = ports.div_ceil(vlans.len());
    let started = Instant::now();
    let _fill = quiet_vms(CN, &vlans, per_vlan, &socket, 4)?;
    println!(
        "(filled {} ports in {:.1} s)",
        per_vlan * vlans.len(),
        started.elapsed().as_secs_f64()
    );
    let full = measure(&lab, pid, &a, &b, ip_b, secs, 100)?;
    println!(
        "\n{:<24} {:>12} {:>14} {:>8}",
        "metric", "empty node", "at 1000 ports", "ratio"
    );
    let row = |n: &str, e: f64, f: f64, unit: &str| {
        println!(
            "{n:<24} {e:>9.2} {unit:<3} {f:>11.2} {unit:<3} {:>7.2}x",
            f / e
        );
    };
    row("netd resident memory", empty.rss_mib, full.rss_mib, "MiB");
    row("netd idle CPU", empty.idle_cpu_pct, full.idle_cpu_pct, "%");
    row("CNI ADD p50", empty.add_p50_ms, full.add_p50_ms, "ms");
    row("CNI ADD p99", empty.add_p99_ms, full.add_p99_ms, "ms");
    row("UDP 64B packet rate", empty.pps / 1e3, full.pps / 1e3, "k");
    println!("\n(ratio = at 1000 ports / empty node; k = kpps)");
    Ok(())
}
