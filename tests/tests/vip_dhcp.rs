//! A VirtualIP with `address: dhcp`: three nodes on a real 3-member etcd,
//! dnsmasq serving DHCP from the external host. The holder leases the
//! address on a macvlan with a MAC derived from the VIP's name; whoever
//! holds it next gets the same address with the same MAC.
//!
//! - claimed before the server answers ("holder (acquiring)"), leased once
//!   it does; one macvlan, ARP answered from its MAC only, dnsmasq's lease
//!   file names that MAC; every node shows the address; node loss (SIGKILL
//!   and uplink cut), restart (stale macvlan removed), SIGTERM and
//!   deletion (DHCPRELEASE);
//! - a failing health check (with the lease record gone: the next holder
//!   asks the server anew) and fencing (the holder cut off from etcd drops
//!   the address before anyone adds it);
//! - a node that cannot make the macvlan stands back for others.
//!
//! `cargo nextest run -p furrow-tests --test vip_dhcp --no-capture` prints
//! the measured times.

use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use furrow_tests::lab::{CONTROL_PLANE_IP, EXTERNAL_IP};
use furrow_tests::{janitor, names, Lab, Netns};

const VIP_NAME: &str = "web";
const RANGE: (Ipv4Addr, Ipv4Addr) = (
    Ipv4Addr::new(198, 18, 0, 150),
    Ipv4Addr::new(198, 18, 0, 160),
);

/// dnsmasq as the network's DHCP server (no DNS), killed even if the test
/// process dies, its files removed on drop.
struct Dnsmasq {
    child: Child,
    dir: PathBuf,
}

impl Dnsmasq {
    fn start(ns: &Netns, ifname: &str) -> Dnsmasq {
        let dir = PathBuf::from(janitor::STATE_ROOT).join(names::unique("dnsmasq"));
        std::fs::create_dir_all(&dir).unwrap();
        let out = std::fs::File::create(dir.join("stderr")).unwrap();
        let mut cmd = ns.cmd("dnsmasq");
        cmd.args([
            "--no-daemon",
            "--conf-file=/dev/null",
            // No DNS.
            "--port=0",
            "--log-dhcp",
        ])
        .arg(format!("--interface={ifname}"))
        .arg(format!(
            "--dhcp-range={},{},255.255.255.0,2m",
            RANGE.0, RANGE.1
        ))
        .arg(format!("--dhcp-leasefile={}", dir.join("leases").display()))
        .arg(format!("--pid-file={}", dir.join("pid").display()))
        .arg(format!("--log-facility={}", dir.join("log").display()))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
        // SAFETY: prctl is async-signal-safe; it makes dnsmasq die with
        // this test even if the test process is killed before Drop runs.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        // --no-daemon: no fork, no privilege drop (which would clear the
        // parent-death signal) and no pid file; ready once it logs its range.
        let mut child = cmd
            .spawn()
            .expect("spawning dnsmasq (bash scripts/deps.sh installs it)");
        let t0 = Instant::now();
        while !std::fs::read_to_string(dir.join("log"))
            .unwrap_or_default()
            .contains("DHCP, IP range")
        {
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "dnsmasq exited ({st}): {}",
                    std::fs::read_to_string(dir.join("stderr")).unwrap_or_default()
                );
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "dnsmasq did not start: {}",
                std::fs::read_to_string(dir.join("stderr")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Dnsmasq { child, dir }
    }

    /// The lease file: (expiry, MAC, address, hostname) per lease.
    fn leases(&self) -> Vec<(u64, String, Ipv4Addr, String)> {
        std::fs::read_to_string(self.dir.join("leases"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((
                    f.first()?.parse().ok()?,
                    f.get(1)?.to_string(),
                    f.get(2)?.parse().ok()?,
                    f.get(3)?.to_string(),
                ))
            })
            .collect()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn vip_yaml(extra: &str) -> String {
    format!(
        "apiVersion: network.furrow.io/v1alpha1
kind: VirtualIP
metadata: {{name: {VIP_NAME}}}
spec:
  address: dhcp
  interface: uplink0
  mode: arp
{extra}"
    )
}

fn three_nodes() -> Lab {
    let mut lab = Lab::shared(3).unwrap();
    for n in ["node1", "node2", "node3"] {
        lab.add_node(n).unwrap();
    }
    lab
}

/// A dhcp VIP's macvlan on a node: name, MAC, IPv4 addresses.
#[derive(Debug, Clone)]
struct Macvlan {
    name: String,
    mac: String,
    addrs: Vec<Ipv4Addr>,
}

fn macvlans(lab: &Lab, i: usize) -> Vec<Macvlan> {
    let Ok(out) = lab.node(i).ns.ip(&["-j", "addr", "show"]) else {
        return Vec::new();
    };
    let links: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    links
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["ifname"].as_str().unwrap_or("").starts_with("fvd"))
        .map(|l| Macvlan {
            name: l["ifname"].as_str().unwrap_or("").to_string(),
            mac: l["address"].as_str().unwrap_or("").to_string(),
            addrs: l["addr_info"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["family"] == "inet")
                .filter_map(|a| a["local"].as_str()?.parse().ok())
                .collect(),
        })
        .collect()
}

fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Waits until exactly one node other than `not` has the macvlan with a
/// leased address and is the only one answering ARP for it (from the
/// macvlan's MAC); returns that node, the address and the MAC.
fn single_holder(
    lab: &Lab,
    not: Option<usize>,
    timeout: Duration,
) -> anyhow::Result<(usize, Ipv4Addr, String)> {
    let end = Instant::now() + timeout;
    loop {
        let with_addr: Vec<(usize, Macvlan)> = (0..lab.nodes.len())
            .flat_map(|i| macvlans(lab, i).into_iter().map(move |m| (i, m)))
            .filter(|(_, m)| !m.addrs.is_empty())
            .collect();
        let last = match with_addr.as_slice() {
            [(h, m)] if Some(*h) != not && m.addrs.len() == 1 => {
                let ip = m.addrs[0];
                let answers = furrow_tests::arp::responders(
                    &lab.external,
                    "eth0",
                    EXTERNAL_IP,
                    ip,
                    Duration::from_millis(200),
                )?;
                let answers: Vec<String> = answers.into_iter().map(mac_text).collect();
                if answers == [m.mac.clone()] {
                    return Ok((*h, ip, m.mac.clone()));
                }
                format!(
                    "node{} has {ip} on {m:?}; ARP answered by {answers:?}",
                    h + 1
                )
            }
            other => format!("macvlans with addresses: {other:?}"),
        };
        if Instant::now() > end {
            bail!("no single holder within {timeout:?}: {last}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn vip_view_opt(lab: &Lab, i: usize) -> Option<furrow_api::wire::VipInfo> {
    let all: Vec<furrow_api::wire::VipInfo> = lab.node(i).netd.client().get("/v1/vips").unwrap();
    all.into_iter().find(|v| v.name == VIP_NAME)
}

fn vip_view(lab: &Lab, i: usize) -> furrow_api::wire::VipInfo {
    vip_view_opt(lab, i).expect("the VIP is listed")
}

/// Every node's API shows `ip` as the VIP's address, `holder` as holding.
fn every_node_shows(lab: &Lab, holder: usize, ip: Ipv4Addr, mac: &str, skip: &[usize]) {
    let t0 = Instant::now();
    loop {
        let mut bad = Vec::new();
        for i in (0..lab.nodes.len()).filter(|i| !skip.contains(i)) {
            let v = vip_view(lab, i);
            let want_role = if i == holder { "holder" } else { "standby" };
            let dhcp = v.dhcp.clone().unwrap_or_default();
            if v.address != Some(ip.into())
                || v.role != want_role
                || v.holder.as_deref() != Some(lab.node(holder).name.as_str())
                || !dhcp.contains(mac)
                || !dhcp.contains(&ip.to_string())
            {
                bad.push(format!("node{}: {v:?}", i + 1));
            }
        }
        if bad.is_empty() {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "nodes do not agree on the dhcp VIP:\n{}",
            bad.join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The lease file's entry for `mac`, once it has one (with `newer_than`:
/// an expiry later than that, i.e. the server heard from the client again).
fn lease_of(
    d: &Dnsmasq,
    mac: &str,
    newer_than: Option<u64>,
    timeout: Duration,
) -> anyhow::Result<(u64, Ipv4Addr, String)> {
    let t0 = Instant::now();
    loop {
        let found = d
            .leases()
            .into_iter()
            .find(|(_, m, _, _)| m == mac)
            .map(|(exp, _, ip, host)| (exp, ip, host));
        if let Some(f) = &found {
            if newer_than.is_none_or(|n| f.0 > n) {
                return Ok(f.clone());
            }
        }
        if t0.elapsed() > timeout {
            bail!(
                "dnsmasq has no{} lease for {mac}: {:?}\n{}",
                if newer_than.is_some() { " renewed" } else { "" },
                d.leases(),
                d.log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_dhcp_vip_keeps_its_address_and_mac_on_every_holder() {
    let mut lab = three_nodes();
    // No DHCP server yet: the VIP is claimed (the address comes after the
    // claim), its holder has the macvlan and says it has no lease.
    lab.node(0).apply(&vip_yaml("")).unwrap();
    let t0 = Instant::now();
    let acquiring = loop {
        let views: Vec<_> = (0..3).map(|i| vip_view_opt(&lab, i)).collect();
        let acquiring = views.iter().position(|v| {
            v.as_ref().is_some_and(|v| {
                v.role == "holder (acquiring)"
                    && v.problem
                        .as_deref()
                        .unwrap_or("")
                        .contains("DHCP: no lease yet")
            })
        });
        if let Some(h) = acquiring {
            break h;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no holder acquiring: {views:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    for i in 0..3 {
        let m = macvlans(&lab, i);
        assert_eq!(m.len(), usize::from(i == acquiring), "node{}: {m:?}", i + 1);
        assert!(m.iter().all(|m| m.addrs.is_empty()), "{m:?}");
    }
    std::thread::sleep(Duration::from_secs(2));
    let dnsmasq = Dnsmasq::start(&lab.external, "eth0");
    let t_server = Instant::now();
    let (first, ip, mac) = single_holder(&lab, None, Duration::from_secs(30))
        .with_context(|| format!("{}\n{}", dnsmasq.log(), lab.node(0).netd.log_tail(30)))
        .unwrap();
    eprintln!(
        "node{} holds {VIP_NAME} at {ip} ({mac}) {:?} after the DHCP server started",
        first + 1,
        t_server.elapsed()
    );
    assert_eq!(first, acquiring, "the VIP moved while it was acquiring");
    assert!(
        (RANGE.0..=RANGE.1).contains(&ip),
        "{ip} is not from dnsmasq's range"
    );
    // Locally administered unicast.
    let first_octet = u8::from_str_radix(&mac[..2], 16).unwrap();
    assert_eq!(first_octet & 0x03, 0x02, "{mac}");
    // The macvlan is the holder's alone.
    for i in (0..3).filter(|i| *i != first) {
        assert!(
            macvlans(&lab, i).is_empty(),
            "node{} has {:?}",
            i + 1,
            macvlans(&lab, i)
        );
    }
    assert_eq!(macvlans(&lab, first).len(), 1);
    // The server leased it to the stable MAC, hostname the VIP's name.
    let (expiry1, leased, host) = lease_of(&dnsmasq, &mac, None, Duration::from_secs(5)).unwrap();
    assert_eq!(leased, ip);
    assert_eq!(host, VIP_NAME);
    every_node_shows(&lab, first, ip, &mac, &[]);
    for i in 0..3 {
        let out = lab.node(i).netd.netctl(&["vip"]).unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&ip.to_string()) && text.contains(VIP_NAME),
            "node{}: {text}",
            i + 1
        );
        eprintln!(
            "netctl vip on node{}:\n{text}{:?}",
            i + 1,
            vip_view(&lab, i).dhcp
        );
    }

    // Node loss: netd killed and the uplink cut at the same moment. The
    // next holder gets the same address with the same MAC, and confirms
    // the lease with the server.
    let t_kill = Instant::now();
    lab.node_mut(first).netd.kill();
    lab.node(first)
        .ns
        .ip(&["link", "set", "uplink0", "down"])
        .unwrap();
    while !with_address(&lab, ip).iter().any(|i| *i != first) {
        assert!(
            t_kill.elapsed() < Duration::from_secs(30),
            "nobody took the VIP over"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "node loss: another node carries {ip} {:?} after the kill",
        t_kill.elapsed()
    );
    // Only one node answers once the dead one's address has expired (it
    // has the same MAC: the ARP answers cannot tell them apart).
    let (second, ip2, mac2) = single_holder(&lab, Some(first), Duration::from_secs(30)).unwrap();
    eprintln!(
        "node loss: node{} alone carries {ip2} {:?} after the kill",
        second + 1,
        t_kill.elapsed()
    );
    assert_eq!((ip2, mac2.as_str()), (ip, mac.as_str()));
    let (expiry2, leased, _) =
        lease_of(&dnsmasq, &mac, Some(expiry1), Duration::from_secs(15)).unwrap();
    assert_eq!(leased, ip);
    eprintln!(
        "node loss: lease renewed by the new holder {:?} after the kill",
        t_kill.elapsed()
    );
    assert_eq!(
        dnsmasq.leases().len(),
        1,
        "one lease only: {:?}",
        dnsmasq.leases()
    );
    every_node_shows(&lab, second, ip, &mac, &[first]);

    // The lost node comes back: its restarted netd removes its stale
    // macvlan before anything else and does not take the VIP back.
    let stale = macvlans(&lab, first);
    assert_eq!(stale.len(), 1, "the killed netd's macvlan should be there");
    // Same name on every holder.
    assert_eq!(stale[0].name, macvlans(&lab, second)[0].name);
    assert!(stale[0].name.starts_with("fvd") && stale[0].name.len() <= 15);
    lab.node(first)
        .ns
        .ip(&["link", "set", "uplink0", "up"])
        .unwrap();
    lab.node_mut(first).netd.start().unwrap();
    assert!(
        macvlans(&lab, first).is_empty(),
        "stale macvlan survived a restart: {:?}",
        macvlans(&lab, first)
    );
    assert_eq!(
        single_holder(&lab, None, Duration::from_secs(5)).unwrap(),
        (second, ip, mac.clone())
    );
    every_node_shows(&lab, second, ip, &mac, &[]);

    // Graceful stop: the holder removes its macvlan on SIGTERM (without
    // giving the lease back) and another node takes over.
    let t_term = Instant::now();
    assert!(lab.node_mut(second).netd.stop().unwrap());
    assert!(
        macvlans(&lab, second).is_empty(),
        "SIGTERM left the macvlan behind: {:?}",
        macvlans(&lab, second)
    );
    let (third, ip3, mac3) = single_holder(&lab, Some(second), Duration::from_secs(30)).unwrap();
    eprintln!(
        "SIGTERM: node{} answers for {ip3} {:?} after the signal",
        third + 1,
        t_term.elapsed()
    );
    assert_eq!((ip3, mac3.as_str()), (ip, mac.as_str()));
    let (_, leased, _) = lease_of(&dnsmasq, &mac, Some(expiry2), Duration::from_secs(15)).unwrap();
    assert_eq!(leased, ip);

    // Deleting the VirtualIP gives the lease back and removes the macvlan.
    let out = lab
        .node(third)
        .netd
        .netctl(&["delete", "virtualip", VIP_NAME])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t0 = Instant::now();
    loop {
        let gone = (0..3).all(|i| macvlans(&lab, i).is_empty());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let released = dnsmasq
            .leases()
            .iter()
            .all(|(exp, m, _, _)| m != &mac || *exp <= now);
        if gone && released {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "after delete: macvlans {:?}, leases {:?}\n{}",
            (0..3).map(|i| macvlans(&lab, i)).collect::<Vec<_>>(),
            dnsmasq.leases(),
            dnsmasq.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        dnsmasq.log().contains("DHCPRELEASE"),
        "no DHCPRELEASE in dnsmasq's log:\n{}",
        dnsmasq.log()
    );
}

/// A node cut off from the control plane (etcd) by an nftables table of
/// its own, while the fabric (and the DHCP server) stays reachable.
struct Partition {
    ns: Netns,
    table: String,
}

impl Partition {
    fn start(ns: &Netns) -> Partition {
        let table = names::unique("fence");
        let cp = CONTROL_PLANE_IP;
        ns.run(
            "nft",
            &[&format!(
                "add table inet {table}; \
                 add chain inet {table} fout {{ type filter hook output priority -300; policy accept; }}; \
                 add chain inet {table} fin {{ type filter hook input priority -300; policy accept; }}; \
                 add rule inet {table} fout ip daddr {cp} drop; \
                 add rule inet {table} fin ip saddr {cp} drop"
            )],
        )
        .unwrap();
        Partition {
            ns: Netns::open_existing(&ns.name),
            table,
        }
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        if Netns::exists(&self.ns.name) {
            let _ = self
                .ns
                .run("nft", &["delete", "table", "inet", &self.table]);
        }
    }
}

/// Nodes whose macvlan carries `ip`.
fn with_address(lab: &Lab, ip: Ipv4Addr) -> Vec<usize> {
    (0..lab.nodes.len())
        .filter(|i| macvlans(lab, *i).iter().any(|m| m.addrs.contains(&ip)))
        .collect()
}

#[test]
fn health_checks_and_fencing_move_a_dhcp_vip_as_they_move_a_static_one() {
    let lab = three_nodes();
    let dnsmasq = Dnsmasq::start(&lab.external, "eth0");
    // Each node's check passes while a file named after its uplink
    // address exists.
    let dir = std::env::temp_dir().join(names::unique("vip-dhcp-health"));
    std::fs::create_dir_all(&dir).unwrap();
    for n in &lab.nodes {
        std::fs::write(dir.join(n.uplink_ip.to_string()), "ok").unwrap();
    }
    let check = format!(
        "  healthCheck:\n    command: [sh, -c, 'for a in $(ip -4 -o addr show dev uplink0 | awk ''{{print $4}}''); do test -e {}/${{a%/*}} && exit 0; done; exit 1']\n    intervalMs: 200\n    timeoutMs: 150\n    failureThreshold: 2\n",
        dir.display()
    );
    lab.node(0).apply(&vip_yaml(&check)).unwrap();
    let (first, ip, mac) = single_holder(&lab, None, Duration::from_secs(30))
        .with_context(|| dnsmasq.log())
        .unwrap();

    // The lease record is lost (the next holder cannot start with it): the
    // next holder asks the server anew, as the same client, and the
    // server gives it the same address.
    let key = format!("{}/furrow/vip/dhcp/{VIP_NAME}", lab.etcd_prefix);
    let endpoints = lab.etcd.as_ref().unwrap().endpoints().join(",");
    let cp = lab.control_plane.as_ref().unwrap();
    let out = cp
        .run("etcdctl", &["--endpoints", &endpoints, "del", &key])
        .unwrap();
    assert_eq!(out.trim(), "1", "the lease record {key} was not there");
    let t0 = Instant::now();
    while (0..3).filter(|i| *i != first).any(|i| {
        vip_view(&lab, i)
            .dhcp
            .unwrap_or_default()
            .contains(&ip.to_string())
    }) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the record's deletion was not seen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let discovers = dnsmasq.log().matches("DHCPDISCOVER").count();

    // A failing health check: the holder steps down, its macvlan goes, and
    // the next node answers for the same address from the same MAC.
    let t0 = Instant::now();
    std::fs::remove_file(dir.join(lab.node(first).uplink_ip.to_string())).unwrap();
    let (second, ip2, mac2) = single_holder(&lab, Some(first), Duration::from_secs(15)).unwrap();
    eprintln!(
        "health check failed on node{}: node{} answers {:?} later",
        first + 1,
        second + 1,
        t0.elapsed()
    );
    assert_eq!((ip2, mac2.as_str()), (ip, mac.as_str()));
    assert!(
        dnsmasq.log().matches("DHCPDISCOVER").count() > discovers,
        "the next holder did not ask the server anew:\n{}",
        dnsmasq.log()
    );
    assert!(
        macvlans(&lab, first).is_empty(),
        "{:?}",
        macvlans(&lab, first)
    );
    let v = vip_view(&lab, first);
    assert_eq!(v.role, "unhealthy", "{v:?}");
    assert_eq!(v.address, Some(ip.into()), "{v:?}");

    // Fencing: the holder loses etcd but not the fabric. It must drop the
    // address (and its macvlan) before any other node puts it on.
    let t0 = Instant::now();
    let partition = Partition::start(&lab.node(second).ns);
    let mut dropped = None;
    let mut taken = None;
    while taken.is_none() {
        let has = with_address(&lab, ip);
        assert!(has.len() <= 1, "two nodes carry {ip}: {has:?}");
        if dropped.is_none() && !has.contains(&second) {
            dropped = Some(t0.elapsed());
        }
        if has.iter().any(|h| *h != second) {
            taken = Some(t0.elapsed());
            assert!(dropped.is_some(), "taken over before the holder dropped it");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "no takeover after the partition: {has:?}"
        );
    }
    let (dropped, taken) = (dropped.unwrap(), taken.unwrap());
    eprintln!("fencing: holder dropped {ip} {dropped:?} after the partition, next holder added it {taken:?} after");
    let (third, ip3, mac3) = single_holder(&lab, Some(second), Duration::from_secs(15)).unwrap();
    assert_eq!((ip3, mac3.as_str()), (ip, mac.as_str()));
    let t1 = Instant::now();
    while !macvlans(&lab, second).is_empty() {
        assert!(
            t1.elapsed() < Duration::from_secs(5),
            "the fenced holder kept its macvlan: {:?}",
            macvlans(&lab, second)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(partition);
    // Healed, it does not take the VIP back.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        single_holder(&lab, None, Duration::from_secs(5)).unwrap(),
        (third, ip, mac)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_node_that_cannot_make_the_macvlan_leaves_the_vip_to_one_that_can() {
    let lab = three_nodes();
    let dnsmasq = Dnsmasq::start(&lab.external, "eth0");
    // The macvlan's name ("fvd" + a hash of "web", as netd derives it)
    // taken by another kind of link on node1 and node2.
    for i in [0, 1] {
        lab.node(i)
            .ns
            .ip(&[
                "link",
                "add",
                "fvd93128cb0cd",
                "type",
                "veth",
                "peer",
                "name",
                "blocker0",
            ])
            .unwrap();
    }
    // Only the blocked nodes may hold it: each tries, fails, says why and
    // stands back for a while; nobody holds it.
    lab.node(0)
        .apply(&vip_yaml("  nodes: [node1, node2]\n"))
        .unwrap();
    let t0 = Instant::now();
    loop {
        let views: Vec<_> = (0..2).map(|i| vip_view_opt(&lab, i)).collect();
        let both = views.iter().all(|v| {
            v.as_ref().is_some_and(|v| {
                v.role == "problem" && v.problem.as_deref().unwrap_or("").contains("not a macvlan")
            })
        });
        if both {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "the blocked nodes do not report their problem: {views:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in 0..3 {
        assert!(
            macvlans(&lab, i).iter().all(|m| m.addrs.is_empty()),
            "node{}: {:?}",
            i + 1,
            macvlans(&lab, i)
        );
    }
    // Any node may hold it: the one that can does.
    lab.node(0).apply(&vip_yaml("")).unwrap();
    let t0 = Instant::now();
    let (holder, _, _) = single_holder(&lab, None, Duration::from_secs(30))
        .with_context(|| dnsmasq.log())
        .unwrap();
    assert_eq!(holder, 2, "the VIP went to a node without its macvlan");
    eprintln!(
        "held by the only node able to {:?} after the apply",
        t0.elapsed()
    );
}
