//! The DHCP benchmark: perfdhcp (Kea) drives full DISCOVER/OFFER/
//! REQUEST/ACK exchanges at Furrow's responder and at dnsmasq serving the
//! same size of pool, both behind the same eBPF switch on one node, in
//! the same run.
//!
//! perfdhcp acts as a relay agent (it needs an address and sends from
//! port 67), so the load VM's port is marked DHCP-trusted; replies go to
//! it as the relay. Every run uses fresh client MACs, so each exchange is
//! a new lease, written to the store (Furrow: etcd) or dnsmasq's lease
//! file.

use std::time::Duration;

use anyhow::{bail, Context};

use crate::lab::vlan_nad;
use crate::{names, Lab, Netns, Pod};

/// What one perfdhcp run measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Figures {
    /// Completed 4-way exchanges per second.
    pub rate: f64,
    /// DISCOVER -> OFFER and REQUEST -> ACK, average and max, ms.
    pub offer_avg_ms: f64,
    pub offer_max_ms: f64,
    pub ack_avg_ms: f64,
    pub ack_max_ms: f64,
    /// Share of DISCOVERs and REQUESTs unanswered, %.
    pub drops_pct: f64,
}

/// Parses perfdhcp's report.
pub fn parse_perfdhcp(out: &str) -> anyhow::Result<Figures> {
    let mut f = Figures::default();
    let mut section = "";
    let num = |l: &str| -> f64 {
        l.split(':')
            .nth(1)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let (mut sent, mut received) = (0.0, 0.0);
    for l in out.lines() {
        let l = l.trim();
        if let Some(r) = l.strip_prefix("Rate:") {
            f.rate = r
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .context("perfdhcp's rate line")?;
        } else if l.contains("Statistics for: DISCOVER-OFFER") {
            section = "offer";
        } else if l.contains("Statistics for: REQUEST-ACK") {
            section = "ack";
        } else if l.starts_with("sent packets:") {
            sent += num(l);
        } else if l.starts_with("received packets:") {
            received += num(l);
        } else if l.starts_with("avg delay:") {
            match section {
                "offer" => f.offer_avg_ms = num(l),
                "ack" => f.ack_avg_ms = num(l),
                _ => {}
            }
        } else if l.starts_with("max delay:") {
            match section {
                "offer" => f.offer_max_ms = num(l),
                "ack" => f.ack_max_ms = num(l),
                _ => {}
            }
        }
    }
    if sent == 0.0 {
        bail!("perfdhcp sent nothing:\n{out}");
    }
    f.drops_pct = 100.0 * (sent - received).max(0.0) / sent;
    Ok(f)
}

pub struct Target {
    /// The load VM (perfdhcp runs here).
    pub load: Pod,
    pub server: std::net::Ipv4Addr,
}

/// Furrow's side: a pool of 10.96.0.0/14 on VLAN 100, the load VM at
/// 10.96.0.5.
pub fn furrow_target(lab: &Lab, node: usize) -> anyhow::Result<Target> {
    let n = lab.node(node);
    n.apply(
        "apiVersion: network.furrow.io/v1alpha1
kind: IPPool
metadata: {name: bench-pool}
spec:
  networkName: bench-net
  ipv4Config:
    serverIP: 10.96.0.2
    cidr: 10.96.0.0/14
    pool: {start: 10.96.0.10, end: 10.99.255.250}
    router: 10.96.0.1
    dns: [10.96.0.1]
    leaseTime: 86400
",
    )?;
    let mut nad = vlan_nad("bench-net", "data", 100, &n.netd.socket);
    nad["dhcpTrusted"] = serde_json::json!(true);
    let load = n.vm("lf", &nad)?;
    load.ns
        .ip(&["addr", "add", "10.96.0.5/14", "dev", "eth0"])?;
    Ok(Target {
        load,
        server: "10.96.0.2".parse()?,
    })
}

/// dnsmasq serving the same size of pool (10.100.0.0/14) from a VM on
/// VLAN 200 of the same node; no ping check (Furrow has none either).
pub struct DnsmasqTarget {
    pub target: Target,
    _vm: Pod,
    child: std::process::Child,
    leases: std::path::PathBuf,
}

impl Drop for DnsmasqTarget {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.leases);
        let _ = std::fs::remove_file(format!("{}.pid", self.leases.display()));
    }
}

pub fn dnsmasq_target(lab: &Lab, node: usize) -> anyhow::Result<DnsmasqTarget> {
    let n = lab.node(node);
    let mut nad = vlan_nad("ref-net", "data", 200, &n.netd.socket);
    nad["dhcpTrusted"] = serde_json::json!(true);
    let vm = n.vm("dnsmasq", &nad)?;
    vm.ns.ip(&["addr", "add", "10.100.0.2/14", "dev", "eth0"])?;
    let leases = std::env::temp_dir().join(names::unique("bench-dnsmasq-leases"));
    let child = vm
        .ns
        .cmd("dnsmasq")
        .args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--port=0",
            "--interface=eth0",
            "--bind-interfaces",
            "--no-ping",
            "--dhcp-authoritative",
            "--dhcp-lease-max=300000",
            "--dhcp-range=10.100.0.10,10.103.255.250,255.252.0.0,24h",
            "--dhcp-option=option:router,10.100.0.1",
            "--dhcp-option=option:dns-server,10.100.0.1",
        ])
        .arg(format!("--dhcp-leasefile={}", leases.display()))
        .arg(format!("--pid-file={}.pid", leases.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting dnsmasq (Debian package dnsmasq-base)")?;
    let mut lnad = vlan_nad("ref-net", "data", 200, &n.netd.socket);
    lnad["dhcpTrusted"] = serde_json::json!(true);
    let load = n.vm("ld", &lnad)?;
    load.ns
        .ip(&["addr", "add", "10.100.0.5/14", "dev", "eth0"])?;
    std::thread::sleep(Duration::from_millis(500));
    Ok(DnsmasqTarget {
        target: Target {
            load,
            server: "10.100.0.2".parse()?,
        },
        _vm: vm,
        child,
        leases,
    })
}

/// One perfdhcp run: `rate` exchanges/s offered for `secs`, new clients
/// from MAC base `run` (each run its own clients).
pub fn perfdhcp(
    ns: &Netns,
    server: std::net::Ipv4Addr,
    rate: u32,
    secs: u32,
    run: u8,
) -> anyhow::Result<Figures> {
    let out = ns
        .cmd("perfdhcp")
        .args([
            "-4",
            "-l",
            "eth0",
            "-r",
            &rate.to_string(),
            "-R",
            "1000000",
            "-b",
            &format!("mac=00:0c:{run:02x}:00:00:00"),
            "-p",
            &secs.to_string(),
            // Count an exchange lost after 1 s.
            "-d",
            "1",
            &server.to_string(),
        ])
        .output()
        .context("running perfdhcp (Debian package kea-admin)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let f =
        parse_perfdhcp(&text).with_context(|| String::from_utf8_lossy(&out.stderr).into_owned())?;
    if f.rate <= 0.0 {
        bail!("perfdhcp against {server} completed no exchange:\n{text}");
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_perfdhcp_report() {
        let f = parse_perfdhcp(
            "Rate: 99.6269 4-way exchanges/second, expected rate: 100\n\
             ***Statistics for: DISCOVER-OFFER***\nsent packets: 300\nreceived packets: 297\n\
             avg delay: 2.140 ms\nmax delay: 10.973 ms\n\
             ***Statistics for: REQUEST-ACK***\nsent packets: 297\nreceived packets: 297\n\
             avg delay: 2.702 ms\nmax delay: 11.455 ms\n",
        )
        .unwrap();
        assert!((f.rate - 99.6269).abs() < 1e-9);
        assert_eq!((f.offer_avg_ms, f.ack_max_ms), (2.14, 11.455));
        assert!((f.drops_pct - 100.0 * 3.0 / 597.0).abs() < 1e-9);
        assert!(parse_perfdhcp("nothing").is_err());
    }
}
