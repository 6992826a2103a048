//! What attaching and detaching a port costs (printed, not asserted: run
//! with `--nocapture` to see the figures).

mod common;

use std::time::{Duration, Instant};

use common::*;
use furrow_ebpf::*;

const PORTS: usize = 20;

fn per_port(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6 / PORTS as f64)
}

#[test]
fn attach_and_detach_cost_per_port() {
    let node = NetNs::new();
    let pods = NetNs::new();
    let names: Vec<String> = (0..PORTS).map(|i| format!("fwcost{i}")).collect();
    for (i, n) in names.iter().enumerate() {
        node.veth_to(n, &format!("peer{i}"), &pods, &format!("peer{i}"));
    }
    let idx: Vec<u32> = names.iter().map(|n| node.ifindex(n)).collect();
    let pins = PinDir::new();
    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();

    let report = node.run(|| {
        let t = Instant::now();
        for (n, &i) in names.iter().zip(&idx) {
            dp.attach_port(n, i).unwrap();
        }
        let attach = t.elapsed();

        let t = Instant::now();
        for (n, &i) in names.iter().zip(&idx) {
            dp.attach_port(n, i).unwrap();
        }
        let reattach = t.elapsed();

        let t = Instant::now();
        for n in &names {
            assert!(dp.is_port_attached(n).unwrap());
        }
        let check = t.elapsed();

        let t = Instant::now();
        let listed = dp.pinned_ports().unwrap();
        let list = t.elapsed();
        assert_eq!(listed.len(), PORTS);

        let t = Instant::now();
        for (n, &i) in names.iter().zip(&idx) {
            dp.detach_port(n, i).unwrap();
        }
        let detach = t.elapsed();

        // netd's usual order: the veth is deleted first, detach_port after.
        for (n, &i) in names.iter().zip(&idx) {
            dp.attach_port(n, i).unwrap();
        }
        for n in &names {
            let out = std::process::Command::new("ip")
                .args(["link", "del", n])
                .output()
                .unwrap();
            assert!(out.status.success());
        }
        let t = Instant::now();
        for (n, &i) in names.iter().zip(&idx) {
            dp.detach_port(n, i).unwrap();
        }
        let detach_gone = t.elapsed();
        assert_eq!(dp.all_port_stats().unwrap(), vec![]);

        format!(
            "per port over {PORTS} ports: attach_port {} (first: creates two tcx links), {} (again: adopts \
             them); detach_port {} (live veth), {} (veth already deleted); \
             is_port_attached {}; pinned_ports with {PORTS} ports {:.1} µs in all",
            per_port(attach),
            per_port(reattach),
            per_port(detach),
            per_port(detach_gone),
            per_port(check),
            list.as_secs_f64() * 1e6,
        )
    });
    println!("{report}");
}
