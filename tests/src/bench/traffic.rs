//! Throughput, packet rate and latency between two namespaces, measured
//! with iperf3 and sockperf started inside them.

use std::net::Ipv4Addr;
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

use crate::Netns;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server(ns: &Netns, program: &str, args: &[&str]) -> anyhow::Result<Server> {
    let child = ns
        .cmd(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    // Give it time to bind.
    std::thread::sleep(Duration::from_millis(300));
    Ok(Server(child))
}

/// TCP throughput in Gbit/s (iperf3, one stream).
pub fn tcp_gbps(
    client: &Netns,
    server_ns: &Netns,
    server_ip: Ipv4Addr,
    secs: u32,
) -> anyhow::Result<f64> {
    let _s = server(server_ns, "iperf3", &["-s", "-1", "-p", "5201"])?;
    let out = client
        .cmd("iperf3")
        .args([
            "-c",
            &server_ip.to_string(),
            "-p",
            "5201",
            "-J",
            "-t",
            &secs.to_string(),
        ])
        .output()?;
    let v: Value = serde_json::from_slice(&out.stdout).context("iperf3 JSON")?;
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 reported no receiver rate")?;
    Ok(bps / 1e9)
}

/// UDP packets per second received, with 64-byte payloads sent as fast
/// as iperf3 can (receiver side: what actually arrived).
pub fn udp64_pps(
    client: &Netns,
    server_ns: &Netns,
    server_ip: Ipv4Addr,
    secs: u32,
) -> anyhow::Result<f64> {
    let _s = server(server_ns, "iperf3", &["-s", "-1", "-p", "5202"])?;
    let out = client
        .cmd("iperf3")
        .args([
            "-c",
            &server_ip.to_string(),
            "-p",
            "5202",
            "-u",
            "-l",
            "64",
            "-b",
            "0",
            "-J",
            "-t",
            &secs.to_string(),
        ])
        .output()?;
    let v: Value = serde_json::from_slice(&out.stdout).context("iperf3 JSON")?;
    let sum = &v["end"]["sum"];
    let packets = sum["packets"]
        .as_f64()
        .context("iperf3 reported no packets")?;
    let lost = sum["lost_packets"].as_f64().unwrap_or(0.0);
    let secs_measured = sum["seconds"].as_f64().unwrap_or(secs as f64);
    Ok((packets - lost) / secs_measured)
}

/// Round-trip latency in microseconds: (average, p99), sockperf
/// ping-pong with 64-byte UDP messages.
pub fn rr_latency_us(
    client: &Netns,
    server_ns: &Netns,
    server_ip: Ipv4Addr,
    secs: u32,
) -> anyhow::Result<(f64, f64)> {
    let _s = server(
        server_ns,
        "sockperf",
        &["sr", "-i", &server_ip.to_string(), "-p", "11111"],
    )?;
    let out = client
        .cmd("sockperf")
        .args([
            "pp",
            "-i",
            &server_ip.to_string(),
            "-p",
            "11111",
            "-m",
            "64",
            "-t",
            &secs.to_string(),
        ])
        .output()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    // sockperf reports one-way latency (RTT/2); double it for a round trip.
    let avg = text
        .lines()
        .find_map(|l| l.split("avg-latency=").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok());
    let p99 = text
        .lines()
        .find(|l| l.contains("percentile 99.000"))
        .and_then(|l| l.rsplit('=').next())
        .and_then(|v| v.trim().parse::<f64>().ok());
    match (avg, p99) {
        (Some(a), Some(p)) => Ok((a * 2.0, p * 2.0)),
        _ => bail!("could not read sockperf's output:\n{text}"),
    }
}
