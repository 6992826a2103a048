//! Many attachments at once, and crashes in the middle of them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use furrow_api::wire::PortInfo;
use furrow_tests::cni::{self, Attachment};
use furrow_tests::{inspect, names, probe, Lab, Netns};

/// 500 ADD/DEL cycles, 32 at a time: no address is ever held by two live
/// attachments, and nothing is left behind.
#[test]
fn add_del_storm_never_duplicates_and_leaks_nothing() {
    let mut lab = Lab::new().unwrap();
    lab.add_node("node1").unwrap();
    let node = lab.node(0);
    let cfg = node.mgmt_config("1.1.0");
    const WORKERS: usize = 32;
    const CYCLES: usize = 500;
    let live: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());
    let done = AtomicU32::new(0);
    let sandboxes: Vec<Netns> = (0..WORKERS)
        .map(|_| Netns::new(&names::unique("st")).unwrap())
        .collect();
    std::thread::scope(|s| {
        for (w, ns) in sandboxes.iter().enumerate() {
            let (cfg, live, done) = (&cfg, &live, &done);
            s.spawn(move || {
                let mut i = 0;
                loop {
                    let n = done.fetch_add(1, Ordering::SeqCst);
                    if n as usize >= CYCLES {
                        break;
                    }
                    let cid = format!("storm-{w}-{i}");
                    i += 1;
                    let att = Attachment::new(&cid, &ns.path_str(), "eth0");
                    let out = cni::add(&att, cfg).expect_ok("ADD");
                    let ip = out.json()["ips"][0]["address"]
                        .as_str()
                        .unwrap()
                        .to_string();
                    if let Some(other) = live.lock().unwrap().insert(ip.clone(), cid.clone()) {
                        panic!("{ip} handed to {cid} while {other} holds it");
                    }
                    live.lock().unwrap().remove(&ip);
                    cni::del(&att, cfg).expect_ok("DEL");
                }
            });
        }
    });
    assert_eq!(inspect::leftovers(node, "mgmt"), Vec::<String>::new());
    for ns in &sandboxes {
        assert!(
            ns.ip(&["link", "show", "eth0"]).is_err(),
            "{} still has eth0",
            ns.name
        );
    }
}

/// netd is killed with SIGKILL in the middle of an ADD storm and started
/// again: the store and the kernel converge; what succeeded works, what
/// failed is cleaned up by the runtime's DEL, nothing is duplicated or
/// leaked.
#[test]
fn kill_9_during_add_storm_then_restart_converges() {
    let mut lab = Lab::new().unwrap();
    lab.add_node("node1").unwrap();
    let cfg = lab.node(0).mgmt_config("1.1.0");
    let stop = AtomicBool::new(false);
    let succeeded: Mutex<Vec<(Attachment, String)>> = Mutex::new(Vec::new());
    let failed: Mutex<Vec<Attachment>> = Mutex::new(Vec::new());
    let sandboxes: Vec<Netns> = (0..16)
        .map(|_| Netns::new(&names::unique("kl")).unwrap())
        .collect();
    let netd_pid = lab.node_mut(0).netd.pid().expect("netd running") as i32;
    std::thread::scope(|s| {
        for (w, ns) in sandboxes.iter().enumerate() {
            let (cfg, stop, succeeded, failed) = (&cfg, &stop, &succeeded, &failed);
            s.spawn(move || {
                // Each sandbox gets interfaces eth0, eth1, ... until stopped.
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) && i < 40 {
                    let att = Attachment::new(
                        &format!("kill-{w}-{i}"),
                        &ns.path_str(),
                        &format!("eth{i}"),
                    );
                    i += 1;
                    let out = cni::add(&att, cfg);
                    if out.success() {
                        let ip = out.json()["ips"][0]["address"]
                            .as_str()
                            .unwrap()
                            .to_string();
                        succeeded.lock().unwrap().push((att, ip));
                    } else {
                        failed.lock().unwrap().push(att);
                    }
                }
            });
        }
        // Kill once the storm is well under way, however slow the machine.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while succeeded.lock().unwrap().len() < 8 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(netd_pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::SeqCst);
    });
    let succeeded = succeeded.into_inner().unwrap();
    let failed = failed.into_inner().unwrap();
    assert!(!succeeded.is_empty(), "no ADD finished before the kill");
    assert!(!failed.is_empty(), "the kill hit no ADD");
    lab.node_mut(0).netd.kill(); // reap the killed process
    lab.node_mut(0).netd.start().unwrap();
    let node = lab.node(0);

    // Converged: exactly the successful attachments exist, each once, and
    // each passes CHECK.
    let ports: Vec<PortInfo> = node.netd.client().get("/v1/ports").unwrap();
    let ok_ids: BTreeSet<&str> = succeeded
        .iter()
        .map(|(a, _)| a.container_id.as_str())
        .collect();
    for p in &ports {
        // A port whose ADD answered an error may exist (netd finished it
        // but the answer was lost); the runtime DELs it below.
        assert!(
            ok_ids.contains(p.container_id.as_str())
                || failed.iter().any(|f| f.container_id == p.container_id),
            "unexpected port {}",
            p.container_id
        );
    }
    let mut ips: Vec<String> = ports.iter().map(|p| p.ips[0].to_string()).collect();
    let n = ips.len();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), n, "an address is held twice: {ips:?}");
    for (att, ip) in &succeeded {
        let p = ports
            .iter()
            .find(|p| p.container_id == att.container_id)
            .expect("successful ADD survives");
        assert_eq!(&p.ips[0].to_string(), ip);
        let prev = serde_json::json!({
            "cniVersion": "1.1.0",
            "interfaces": [{"name": att.ifname, "sandbox": att.netns}],
            "ips": [{"address": ip, "gateway": "10.52.0.1", "interface": 0}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.52.0.1"}]
        });
        cni::check(att, &cfg, &prev).expect_ok("CHECK after restart");
    }
    assert_eq!(inspect::furrow_links(node).len(), ports.len());
    assert_eq!(
        inspect::map_entries(node, "furrow_mgmt_eps") as usize,
        ports.len()
    );

    // The runtime DELs what failed, then everything.
    for att in &failed {
        cni::del(att, &cfg).expect_ok("DEL of a failed ADD");
    }
    let gw: IpAddr = "10.52.0.1".parse().unwrap();
    assert!(
        probe::ping_ok(&sandboxes[0], gw, 3)
            || succeeded
                .iter()
                .all(|(a, _)| a.netns != sandboxes[0].path_str())
    );
    for (att, _) in &succeeded {
        cni::del(att, &cfg).expect_ok("DEL");
    }
    assert_eq!(inspect::leftovers(node, "mgmt"), Vec::<String>::new());
}

/// A netd stopped with SIGTERM leaves pods connected; started again, it
/// adopts them without a blip in its records.
#[test]
fn pods_keep_working_across_a_netd_restart() {
    let mut lab = Lab::new().unwrap();
    lab.add_node("node1").unwrap();
    let (a, b) = {
        let node = lab.node(0);
        (node.mgmt_pod("pa").unwrap(), node.mgmt_pod("pb").unwrap())
    };
    assert!(probe::ping_ok(&a.ns, IpAddr::V4(b.ip()), 5));
    let before: Vec<PortInfo> = lab.node(0).netd.client().get("/v1/ports").unwrap();
    let redirected_before = before
        .iter()
        .find(|p| p.container_id == a.container_id)
        .unwrap()
        .counters
        .as_ref()
        .unwrap()
        .redirected_packets;

    assert!(
        lab.node_mut(0).netd.stop().unwrap(),
        "netd exits 0 on SIGTERM"
    );
    // While netd is down: pod to pod (eBPF) and pod to outside (NAT).
    assert!(
        probe::ping_ok(&a.ns, IpAddr::V4(b.ip()), 3),
        "pod-to-pod broke while netd was down"
    );
    assert!(probe::ping_ok(
        &a.ns,
        IpAddr::V4(furrow_tests::lab::EXTERNAL_IP),
        3
    ));

    lab.node_mut(0).netd.start().unwrap();
    let node = lab.node(0);
    let after: Vec<PortInfo> = node.netd.client().get("/v1/ports").unwrap();
    assert_eq!(after.len(), 2);
    let pa = after
        .iter()
        .find(|p| p.container_id == a.container_id)
        .unwrap();
    assert!(
        pa.counters.as_ref().unwrap().redirected_packets > redirected_before,
        "counters survive the restart"
    );
    for p in [&a, &b] {
        cni::check(&p.attachment(), &p.config, &p.result).expect_ok("CHECK after restart");
    }
    assert!(probe::ping_ok(&a.ns, IpAddr::V4(b.ip()), 3));
    node.del_pod(&a).expect_ok("DEL");
    node.del_pod(&b).expect_ok("DEL");
    assert_eq!(inspect::leftovers(node, "mgmt"), Vec::<String>::new());
}
