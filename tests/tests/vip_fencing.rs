//! Floating VIPs (ARP/NDP mode) under the failures fencing exists for:
//! three nodes on a real 3-member etcd, a client on the fabric.
//!
//! - the holder cut off from etcd while it still reaches the clients must
//!   drop the address before anyone else may take it: a capture on the
//!   client, which asks who has the VIP every 20 ms throughout, never shows
//!   two MACs answering (bounds measured from the capture's timestamps),
//!   also when a claim of another VIP is in flight as it loses etcd;
//! - the same when the holder's netd stalls (SIGSTOP): the kernel fence
//!   must stop its answers;
//! - an IPv6 VIP in NDP mode: one holder answers solicitations, pings
//!   work, and after a failover the client's neighbour cache follows the
//!   unsolicited NA without being flushed;
//! - a bad BGPPeer is refused and leaves a running VIP alone.
//!
//! `cargo nextest run -p furrow-tests --test vip_fencing --no-capture`
//! prints the measured times.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use furrow_api::wire::VipInfo;
use furrow_tests::capture::Capture;
use furrow_tests::lab::{CONTROL_PLANE_IP, EXTERNAL_IP};
use furrow_tests::scenario::vip;
use furrow_tests::{arp, names, ndp, probe, Lab, Netns};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, 0x100);
/// The external host's IPv6 address on the fabric (nodes get ::<index>).
const EXTERNAL_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, 0x254);
/// netd's defaults (`--vip-takeover-ms`, `--vip-fence-margin-ms`).
const TAKEOVER: Duration = Duration::from_millis(1000);
const MARGIN: Duration = Duration::from_millis(300);
/// How often the client asks who has the VIP.
const PROBE_EVERY: Duration = Duration::from_millis(20);
/// Beyond `takeover - margin` after the partition, allowed for netd's
/// 50 ms control tick and scheduling on a loaded machine: half the margin.
/// Past `takeover - margin/2` the margin is mostly eaten and two holders are
/// one scheduling hiccup away.
const FENCE_SLACK: Duration = Duration::from_millis(150);
/// Generous bound for anything that takes a second or so when idle.
const T: Duration = Duration::from_secs(20);

fn vip_yaml(name: &str, address: IpAddr) -> String {
    vip::arp_vip_yaml(name, address, "")
}

fn three_nodes() -> Lab {
    vip::nodes_on_etcd(3).unwrap()
}

use vip::{has_address as has_addr, holders, single_holder, uplink_mac};

fn mac_of(lab: &Lab, i: usize) -> [u8; 6] {
    uplink_mac(lab, i)
}

fn vip_view(lab: &Lab, i: usize, name: &str) -> VipInfo {
    let all: Vec<VipInfo> = lab.node(i).netd.client().get("/v1/vips").unwrap();
    all.into_iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("node{} does not list VIP {name}", i + 1))
}

/// Polls `f` every 20 ms until it holds; returns how long that took.
fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    loop {
        if f() {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A node cut off from the control plane (etcd) by an nftables table of
/// its own in the node's namespace, while the fabric stays reachable:
/// every packet to or from the control-plane host is dropped. Removed by
/// [`Partition::heal`] or on drop (also on panic).
struct Partition {
    ns: Netns,
    table: String,
    healed: bool,
}

impl Partition {
    fn start(ns: &Netns) -> anyhow::Result<Partition> {
        // A name of this test's own: nft tables are per namespace, but the
        // node's netd has one (furrow_<instance>) there too.
        let table = names::unique("fence");
        let p = Partition {
            ns: Netns::open_existing(&ns.name),
            table,
            healed: false,
        };
        let t = &p.table;
        let cp = CONTROL_PLANE_IP;
        ns.run(
            "nft",
            &[&format!(
                "add table inet {t}; \
                 add chain inet {t} fout {{ type filter hook output priority -300; policy accept; }}; \
                 add chain inet {t} fin {{ type filter hook input priority -300; policy accept; }}; \
                 add rule inet {t} fout ip daddr {cp} drop; \
                 add rule inet {t} fin ip saddr {cp} drop"
            )],
        )?;
        Ok(p)
    }

    fn heal(&mut self) -> anyhow::Result<()> {
        if !self.healed {
            self.ns
                .run("nft", &["delete", "table", "inet", &self.table])?;
            self.healed = true;
        }
        Ok(())
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        if !self.healed && Netns::exists(&self.ns.name) {
            let _ = self.heal();
        }
    }
}

/// What the client's capture shows about the VIP.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ArpSeen {
    /// The client's own request (who has the VIP?).
    Probe,
    /// A reply for the VIP, or a gratuitous ARP for it, from this MAC.
    Answer([u8; 6]),
}

/// Parses `tcpdump -tt -e -nn arp` lines into (Unix time, event) for `vip`:
///
/// `1700000000.123456 02:..:01 > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), length 60: Request who-has 198.18.0.100 tell 198.18.0.254, length 46`
/// `1700000000.123999 02:..:0a > 02:..:01, ethertype ARP (0x0806), length 42: Reply 198.18.0.100 is-at 02:..:0a, length 28`
fn parse_arp(lines: &[String], vip: Ipv4Addr, client: Ipv4Addr) -> Vec<(f64, ArpSeen)> {
    let mut out = Vec::new();
    for l in lines {
        let mut words = l.split_whitespace();
        let (Some(ts), Some(src)) = (words.next(), words.next()) else {
            continue;
        };
        let (Ok(ts), Some(src)) = (ts.parse::<f64>(), ndp::parse_mac(src)) else {
            continue;
        };
        let Some((_, what)) = l.split_once(": ") else {
            continue;
        };
        let w: Vec<&str> = what
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|s| !s.is_empty())
            .collect();
        let vip_s = vip.to_string();
        let ev = match w.as_slice() {
            ["Request", "who-has", target, rest @ ..] if *target == vip_s => {
                // "tell X" (a "(mac)" may come first for a non-zero target
                // hardware address).
                let teller = rest
                    .iter()
                    .position(|x| *x == "tell")
                    .and_then(|i| rest.get(i + 1));
                match teller {
                    Some(s) if *s == vip_s => Some(ArpSeen::Answer(src)),
                    Some(s) if *s == client.to_string() => Some(ArpSeen::Probe),
                    _ => None,
                }
            }
            ["Reply", sender, "is-at", mac, ..] if *sender == vip_s => {
                Some(ArpSeen::Answer(ndp::parse_mac(mac).unwrap_or(src)))
            }
            ["Announcement", sender, ..] if *sender == vip_s => Some(ArpSeen::Answer(src)),
            _ => None,
        };
        if let Some(ev) = ev {
            out.push((ts, ev));
        }
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

#[test]
fn a_holder_cut_off_from_etcd_drops_the_vip_before_anyone_takes_it() {
    let lab = three_nodes();
    let ip = IpAddr::V4(VIP);
    lab.node(0).apply(&vip_yaml("cp", ip)).unwrap();
    let old = single_holder(&lab, ip, None, T).unwrap();
    let old_mac = mac_of(&lab, old);
    let epoch0 = vip_view(&lab, old, "cp").epoch.unwrap();

    // The client side records every ARP frame with the kernel's receive
    // time, while asking who has the VIP every 20 ms.
    let cap = Capture::start_with(&lab.external, "eth0", &["-tt"], "arp", false).unwrap();
    let prober = arp::Prober::start(&lab.external, "eth0", EXTERNAL_IP, VIP, PROBE_EVERY).unwrap();
    std::thread::sleep(Duration::from_millis(500));

    // Cut the holder off from etcd; the fabric (and so the client) stays
    // reachable.
    let mut part = Partition::start(&lab.node(old).ns).unwrap();
    let t_part = unix_now();
    let polled = wait_until(
        "the partitioned holder to drop the address",
        Duration::from_secs(5),
        || !has_addr(&lab, old, ip),
    );
    // Its own view says why.
    wait_until("the partitioned holder to call itself fenced", T, || {
        vip_view(&lab, old, "cp").role == "fenced"
    });
    let new = single_holder(&lab, ip, Some(old), T).unwrap();
    let new_mac = mac_of(&lab, new);
    let taken = vip_view(&lab, new, "cp");
    assert_eq!(taken.role, "holder", "{taken:?}");
    assert!(taken.epoch.unwrap() > epoch0, "{taken:?}");
    // Still cut off for a while longer: it must stay quiet.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !has_addr(&lab, old, ip),
        "the partitioned node took it back"
    );

    // Heal: the old holder catches up and leaves the VIP where it is.
    part.heal().unwrap();
    let t_heal = unix_now();
    wait_until("the healed node to see the new holder", T, || {
        assert!(
            !has_addr(&lab, old, ip),
            "the healed node took the VIP back"
        );
        let v = vip_view(&lab, old, "cp");
        v.role == "standby"
            && v.heartbeat_error.is_none()
            && v.holder.as_deref() == Some(lab.node(new).name.as_str())
    });
    // The healed node is a live candidate again: a takeover attempt would
    // come within the takeover time; give it twice that.
    let quiet_until = Instant::now() + 2 * TAKEOVER;
    while Instant::now() < quiet_until {
        assert_eq!(holders(&lab, ip), [new], "after the heal");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(single_holder(&lab, ip, None, T).unwrap(), new);
    let v = vip_view(&lab, new, "cp");
    assert_eq!(v.role, "holder");
    assert_eq!(v.epoch, taken.epoch, "the VIP changed hands after the heal");
    for i in 0..3 {
        let v = vip_view(&lab, i, "cp");
        assert_eq!(
            v.holder.as_deref(),
            Some(lab.node(new).name.as_str()),
            "node{}: {v:?}",
            i + 1
        );
    }

    let sent = prober.stop().unwrap();
    let h = Handover::from_capture(&cap.stop(), sent, old_mac, new_mac);
    let kept = h.since(h.last_old, t_part);
    let answered_after_heal = h
        .answers
        .iter()
        .filter(|(t, m)| *t > t_heal && *m == new_mac)
        .count();
    println!(
        "partitioned node{} answered until +{kept:?} (its `ip addr` polled clear at +{polled:?}); \
         node{} answered from +{:?}; silence {:?} with {} probes unanswered; \
         {answered_after_heal} answers after the heal, all from the new holder; {sent} probes sent",
        old + 1,
        new + 1,
        h.since(h.first_new, t_part),
        h.since(h.first_new, h.last_old),
        h.unanswered,
    );
    h.assert_clean_handover();
    assert!(answered_after_heal > 0, "nothing answered after the heal");
    // Fencing: the address went within takeover - margin of the partition
    // (the last acknowledged heartbeat was sent no later), far below the
    // takeover time.
    assert!(
        kept <= TAKEOVER - MARGIN + FENCE_SLACK,
        "the partitioned holder answered for {kept:?} after losing etcd (bound {:?} + {FENCE_SLACK:?})",
        TAKEOVER - MARGIN
    );
}

#[test]
fn a_holder_cut_off_while_claiming_another_vip_still_drops_on_time() {
    // The controller awaits its store calls (claims, releases) while it
    // holds its VIPs' lock. A claim sent just as the node loses etcd waits
    // for an answer up to --etcd-timeout-ms (5 s); the fence must not wait
    // with it.
    let lab = three_nodes();
    let ip = IpAddr::V4(VIP);
    // VIP `b` passes its check on a node while a file named after one of
    // the node's uplink addresses exists: at first on none, so it is free.
    let dir = TempDir::new("vip-fence");
    let check = format!(
        "  healthCheck:\n    command: [sh, -c, 'for a in $(ip -4 -o addr show dev uplink0 | awk ''{{print $4}}''); do test -e {}/${{a%/*}} && exit 0; done; exit 1']\n    intervalMs: 100\n    timeoutMs: 90\n    failureThreshold: 1\n",
        dir.0.display()
    );
    lab.node(0).apply(&vip_yaml("cp", ip)).unwrap();
    lab.node(0)
        .apply(&format!(
            "{}{check}",
            vip_yaml("b", IpAddr::V4(Ipv4Addr::new(198, 18, 0, 101)))
        ))
        .unwrap();
    let old = single_holder(&lab, ip, None, T).unwrap();
    let old_mac = mac_of(&lab, old);
    wait_until("b to be unhealthy everywhere", T, || {
        (0..3).all(|i| vip_view(&lab, i, "b").role == "unhealthy")
    });
    let cap = Capture::start_with(&lab.external, "eth0", &["-tt"], "arp", false).unwrap();
    let prober = arp::Prober::start(&lab.external, "eth0", EXTERNAL_IP, VIP, PROBE_EVERY).unwrap();
    std::thread::sleep(Duration::from_millis(500));

    // Cut off, then at once make b claimable there (first rank: the only
    // ready node): its claim goes out while the fencing bound still runs,
    // and is never answered.
    let mut part = Partition::start(&lab.node(old).ns).unwrap();
    let t_part = unix_now();
    std::fs::write(dir.0.join(lab.node(old).uplink_ip.to_string()), "ok").unwrap();
    let polled = wait_until(
        "the partitioned holder to drop the address",
        Duration::from_secs(8),
        || !has_addr(&lab, old, ip),
    );
    let new = single_holder(&lab, ip, Some(old), T).unwrap();
    let new_mac = mac_of(&lab, new);
    std::thread::sleep(Duration::from_millis(1000));
    part.heal().unwrap();
    let sent = prober.stop().unwrap();
    let h = Handover::from_capture(&cap.stop(), sent, old_mac, new_mac);
    let kept = h.since(h.last_old, t_part);
    println!(
        "partitioned node{} (claiming b) answered until +{kept:?} (`ip addr` clear at +{polled:?}); \
         node{} answered from +{:?}; silence {:?}",
        old + 1,
        new + 1,
        h.since(h.first_new, t_part),
        h.since(h.first_new, h.last_old),
    );
    h.assert_clean_handover();
    // The scenario happened: b's claim went out and was cut short.
    let log = lab.node(old).netd.log();
    assert!(
        log.lines()
            .any(|l| l.contains("VIP claim failed") && l.contains("\"vip\":\"b\"")),
        "no claim of b was in flight on the partitioned node: nothing was tested\n{}",
        lab.node(old).netd.log_tail(30)
    );
    assert!(
        kept <= TAKEOVER - MARGIN + FENCE_SLACK,
        "the partitioned holder answered for {kept:?} after losing etcd (bound {:?} + {FENCE_SLACK:?})",
        TAKEOVER - MARGIN
    );
}

/// A holder whose netd cannot run (stopped, starved, stuck) must stop
/// answering at its fencing bound, like one cut off from etcd: netd's own
/// loop cannot remove the address then, so the kernel fence (a tcx egress
/// link, first on the VIP's interface, `furrow_ebpf::fence`, fed
/// with the election's `valid_until`) must. Without it the address stays
/// (3 s lifetime) and answers after the takeover (1 s): measured 1.3 s of
/// two MACs answering.
#[test]
fn a_stalled_holder_stops_answering_before_anyone_takes_it() {
    let lab = three_nodes();
    let ip = IpAddr::V4(VIP);
    lab.node(0).apply(&vip_yaml("cp", ip)).unwrap();
    let old = single_holder(&lab, ip, None, T).unwrap();
    let old_mac = mac_of(&lab, old);
    // The holder fences its VIP in the kernel: its link is on the VIP's
    // interface before anything goes wrong.
    assert!(
        fence_filters(&lab, old) > 0,
        "node{} holds {VIP} but has no VIP fence link on uplink0",
        old + 1,
    );
    let cap = Capture::start_with(&lab.external, "eth0", &["-tt"], "arp", false).unwrap();
    let prober = arp::Prober::start(&lab.external, "eth0", EXTERNAL_IP, VIP, PROBE_EVERY).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let stalled = Stalled::new(lab.node(old).netd.pid().unwrap());
    let t_stop = unix_now();
    let new = single_holder(&lab, ip, Some(old), T);
    std::thread::sleep(Duration::from_secs(4));
    // Still stopped: the address may well still be there (its lifetime
    // runs out after 3 s), its answers must not.
    drop(stalled);
    let t_cont = unix_now();
    let new = new.unwrap();
    let new_mac = mac_of(&lab, new);
    std::thread::sleep(Duration::from_secs(1));
    let sent = prober.stop().unwrap();
    let h = Handover::from_capture(&cap.stop(), sent, old_mac, new_mac);
    let kept = h.since(h.last_old, t_stop);
    println!(
        "stalled node{} answered until +{kept:?}; node{} answered from +{:?}; silence {:?} with {} probes unanswered",
        old + 1,
        new + 1,
        h.since(h.first_new, t_stop),
        h.since(h.first_new, h.last_old),
        h.unanswered,
    );
    // Resumed, netd must not announce the VIP again before it has caught
    // up with the election (a stale view of the holder).
    let after_resume: Vec<String> = h
        .answers
        .iter()
        .filter(|(t, m)| *t > t_cont && *m == old_mac)
        .map(|(t, _)| format!("+{:?}", h.since(*t, t_cont)))
        .collect();
    assert!(
        after_resume.is_empty(),
        "the old holder answered again after SIGCONT: {after_resume:?}"
    );
    h.assert_clean_handover();
    // The kernel fence fired at the bound: the last acknowledged heartbeat
    // was sent before the stop, so the deadline netd last wrote is at most
    // takeover - margin after it.
    assert!(
        kept <= TAKEOVER - MARGIN + FENCE_SLACK,
        "the stalled holder answered for {kept:?} after its netd stopped (bound {:?} + {FENCE_SLACK:?})",
        TAKEOVER - MARGIN
    );
    // Resumed, it gave the VIP up and took its fence off the interface.
    wait_until("the old holder to drop the address", T, || {
        !has_addr(&lab, old, ip)
    });
    wait_until("the old holder to remove its VIP fence link", T, || {
        fence_filters(&lab, old) == 0
    });
    assert_eq!(single_holder(&lab, ip, Some(old), T).unwrap(), new);
}

/// The holder's netd SIGKILLed on a live node: the kernel keeps the
/// address (3 s lifetime) but the fence silences it at the bound; netd
/// restarted at once (the address still there) removes it before it
/// serves anything, and leaves the VIP where it went.
#[test]
fn a_killed_holders_node_goes_silent_and_its_restarted_netd_removes_the_address() {
    let mut lab = three_nodes();
    let ip = IpAddr::V4(VIP);
    lab.node(0).apply(&vip_yaml("cp", ip)).unwrap();
    let old = single_holder(&lab, ip, None, T).unwrap();
    let old_mac = mac_of(&lab, old);
    let witness = (old + 1) % 3;
    let old_name = lab.node(old).name.clone();
    let cap = Capture::start_with(&lab.external, "eth0", &["-tt"], "arp", false).unwrap();
    let prober = arp::Prober::start(&lab.external, "eth0", EXTERNAL_IP, VIP, PROBE_EVERY).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let t_kill = unix_now();
    lab.node_mut(old).netd.kill();
    wait_until("another node to hold the VIP", T, || {
        vip_view(&lab, witness, "cp")
            .holder
            .is_some_and(|h| h != old_name)
    });
    let stale = has_addr(&lab, old, ip);
    lab.node_mut(old).netd.start().unwrap();
    assert!(
        !has_addr(&lab, old, ip),
        "the restarted netd serves while the stale VIP address is still on uplink0"
    );
    let new = single_holder(&lab, ip, Some(old), T).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let sent = prober.stop().unwrap();
    let h = Handover::from_capture(&cap.stop(), sent, old_mac, mac_of(&lab, new));
    let kept = h.since(h.last_old, t_kill);
    println!(
        "killed node{}'s kernel answered until +{kept:?}; node{} from +{:?}; stale address still there at restart: {stale}",
        old + 1,
        new + 1,
        h.since(h.first_new, t_kill),
    );
    h.assert_clean_handover();
    assert!(
        kept <= TAKEOVER - MARGIN + FENCE_SLACK,
        "the killed holder's node answered for {kept:?} (bound {:?} + {FENCE_SLACK:?})",
        TAKEOVER - MARGIN
    );
    assert_eq!(vip_view(&lab, old, "cp").role, "standby");
    assert_eq!(single_holder(&lab, ip, None, T).unwrap(), new);
}

/// How many VIP fence programs node `i` runs on uplink0's egress: tcx
/// programs (netd with a datapath attaches the fence as the hook's first
/// tcx link) named `furrow_vip_fence` (truncated by the kernel).
fn fence_filters(lab: &Lab, i: usize) -> usize {
    let out = lab
        .node(i)
        .ns
        .ip(&["-j", "link", "show", "dev", "uplink0"])
        .unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    let Some(idx) = v[0]["ifindex"].as_u64() else {
        return 0;
    };
    let progs = lab
        .node(i)
        .ns
        .enter(move || furrow_ebpf::tcx_programs(idx as u32, true).unwrap_or_default())
        .unwrap_or_default();
    let is_fence = |p: &furrow_ebpf::TcxProgram| p.name.starts_with("furrow_vip_fenc");
    let n = progs.iter().filter(|p| is_fence(p)).count();
    if n > 0 {
        assert!(is_fence(&progs[0]), "the fence runs first: {progs:?}");
    }
    n
}

/// A process stopped (SIGSTOP) until the guard drops (SIGCONT).
struct Stalled(nix::unistd::Pid);

impl Stalled {
    fn new(pid: u32) -> Stalled {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
        Stalled(pid)
    }
}

impl Drop for Stalled {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}

/// A directory removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(names::unique(tag));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A VIP moving from one MAC to another, as the client's capture shows it.
struct Handover {
    lines: Vec<String>,
    /// (Unix time, MAC) of every ARP reply and gratuitous ARP for the VIP.
    answers: Vec<(f64, [u8; 6])>,
    old_mac: [u8; 6],
    new_mac: [u8; 6],
    /// The old holder's last answer, the new holder's first.
    last_old: f64,
    first_new: f64,
    /// The client's requests between them (none answered).
    unanswered: usize,
}

impl Handover {
    fn from_capture(lines: &[String], sent: u64, old_mac: [u8; 6], new_mac: [u8; 6]) -> Handover {
        let seen = parse_arp(lines, VIP, EXTERNAL_IP);
        let probes = seen.iter().filter(|(_, e)| *e == ArpSeen::Probe).count();
        assert!(
            probes as u64 >= sent / 2,
            "the capture shows {probes} of {sent} probes:\n{}",
            lines.join("\n")
        );
        let answers: Vec<(f64, [u8; 6])> = seen
            .iter()
            .filter_map(|(t, e)| match e {
                ArpSeen::Answer(m) => Some((*t, *m)),
                ArpSeen::Probe => None,
            })
            .collect();
        let last_old = answers
            .iter()
            .filter(|(_, m)| *m == old_mac)
            .map(|(t, _)| *t)
            .fold(f64::NAN, f64::max);
        let first_new = answers
            .iter()
            .filter(|(_, m)| *m == new_mac)
            .map(|(t, _)| *t)
            .fold(f64::NAN, f64::min);
        assert!(
            !last_old.is_nan() && !first_new.is_nan(),
            "old answers until {last_old}, new from {first_new}:\n{}",
            lines.join("\n")
        );
        let unanswered = seen
            .iter()
            .filter(|(t, e)| *e == ArpSeen::Probe && *t > last_old && *t < first_new)
            .count();
        Handover {
            lines: lines.to_vec(),
            answers,
            old_mac,
            new_mac,
            last_old,
            first_new,
            unanswered,
        }
    }

    /// `t - from` (zero if negative).
    fn since(&self, t: f64, from: f64) -> Duration {
        Duration::from_secs_f64((t - from).max(0.0))
    }

    /// Never two MACs answering at once: every answer of the old holder
    /// precedes every answer of the new one, and the client kept asking in
    /// the silence between them. A later, separate handover to a third
    /// node (a loaded machine can starve the new holder's heartbeats too:
    /// it is fenced and the VIP moves again) is allowed, but its answers
    /// may not overlap anyone else's either.
    fn assert_clean_handover(&self) {
        let mut spans: Vec<([u8; 6], f64, f64)> = Vec::new();
        for (t, m) in &self.answers {
            match spans.iter_mut().find(|(mac, _, _)| mac == m) {
                Some(s) => {
                    s.1 = s.1.min(*t);
                    s.2 = s.2.max(*t);
                }
                None => spans.push((*m, *t, *t)),
            }
        }
        spans.sort_by(|a, b| a.1.total_cmp(&b.1));
        for w in spans.windows(2) {
            assert!(
                w[0].2 < w[1].1,
                "{} answered until {:.6} while {} answered from {:.6}",
                fmt_mac(&w[0].0),
                w[0].2,
                fmt_mac(&w[1].0),
                w[1].1
            );
        }
        if self.last_old >= self.first_new {
            let both: Vec<String> = self
                .answers
                .iter()
                .filter(|(t, _)| *t >= self.first_new && *t <= self.last_old)
                .take(12)
                .map(|(t, m)| format!("{t:.6} {}", fmt_mac(m)))
                .collect();
            panic!(
                "two MACs answered for {:?}: old holder {} until {:.6}, new holder {} from {:.6}; meanwhile {both:#?}",
                self.since(self.last_old, self.first_new),
                fmt_mac(&self.old_mac),
                self.last_old,
                fmt_mac(&self.new_mac),
                self.first_new
            );
        }
        assert!(
            self.unanswered >= 3,
            "only {} probes between the last old and the first new answer:\n{}",
            self.unanswered,
            self.lines.join("\n")
        );
    }
}

#[test]
fn an_ipv6_vip_answers_ndp_from_one_node_and_moves_with_an_unsolicited_na() {
    let mut lab = three_nodes();
    // IPv6 on the fabric (the lab's underlay is IPv4 only).
    for i in 0..lab.nodes.len() {
        let a = format!(
            "{}/64",
            Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, i as u16 + 1)
        );
        lab.node(i)
            .ns
            .ip(&["addr", "add", &a, "dev", "uplink0", "nodad"])
            .unwrap();
    }
    lab.external
        .ip(&[
            "addr",
            "add",
            &format!("{EXTERNAL_IP6}/64"),
            "dev",
            "eth0",
            "nodad",
        ])
        .unwrap();
    let ip = IpAddr::V6(VIP6);
    lab.node(1).apply(&vip_yaml("cp6", ip)).unwrap();
    let first = single_holder(&lab, ip, None, T).unwrap();
    let first_mac = mac_of(&lab, first);
    let v = vip_view(&lab, first, "cp6");
    assert_eq!(
        (v.role.as_str(), v.mode.as_str()),
        ("holder", "arp"),
        "{v:?}"
    );
    assert_eq!(v.address, Some(ip));
    // The holder's answer: a solicited NA overriding, with its MAC (its
    // periodic unsolicited NA may arrive in the same window: the same MAC).
    let ads = ndp::advertisements(
        &lab.external,
        "eth0",
        EXTERNAL_IP6,
        VIP6,
        Duration::from_millis(300),
    )
    .unwrap();
    assert!(
        ads.iter().any(|a| a.solicited),
        "no answer to the solicitation: {ads:?}"
    );
    for a in &ads {
        assert_eq!(a.from, first_mac, "{a:?}");
        assert_eq!(a.tlla, Some(first_mac), "{a:?}");
        assert!(a.override_flag, "{a:?}");
    }
    assert!(
        probe::ping_ok(&lab.external, ip, 5),
        "ping -6 {VIP6} from the client failed"
    );
    let entry = ndp::neigh_entry(&lab.external, "eth0", ip).unwrap();
    assert_eq!(
        entry.as_ref().and_then(|e| e.0),
        Some(first_mac),
        "client's neighbour entry: {entry:?}"
    );

    // Node loss: netd killed and the uplink cut at once. Nothing is sent to
    // the VIP from here until the client's cache has been checked: only
    // the new holder's unsolicited NA can change it.
    let t0 = Instant::now();
    lab.node_mut(first).netd.kill();
    lab.node(first)
        .ns
        .ip(&["link", "set", "uplink0", "down"])
        .unwrap();
    let mut new = None;
    let took = wait_until("another node to hold the IPv6 VIP", T, || {
        new = holders(&lab, ip).into_iter().find(|h| *h != first);
        new.is_some()
    });
    let new = new.unwrap();
    let new_mac = mac_of(&lab, new);
    let mut last = None;
    let followed = wait_until(
        "the client's neighbour entry to name the new holder",
        Duration::from_secs(10),
        || {
            last = ndp::neigh_entry(&lab.external, "eth0", ip).unwrap();
            last.as_ref().and_then(|e| e.0) == Some(new_mac)
        },
    );
    println!(
        "node{} held {VIP6} {took:?} after node{} was lost; the client's entry named it {followed:?} later ({:?}); failover {:?}",
        new + 1,
        first + 1,
        last.as_ref().map(|e| e.1.clone()),
        t0.elapsed()
    );
    assert_eq!(single_holder(&lab, ip, Some(first), T).unwrap(), new);
    assert!(
        probe::ping_ok(&lab.external, ip, 5),
        "ping -6 {VIP6} after the failover failed"
    );
    assert_eq!(vip_view(&lab, new, "cp6").role, "holder");
}

#[test]
fn a_bgp_peer_with_as_0_is_refused_and_a_running_vip_is_left_alone() {
    let lab = three_nodes();
    let ip = IpAddr::V4(VIP);
    lab.node(0).apply(&vip_yaml("cp", ip)).unwrap();
    let h = single_holder(&lab, ip, None, T).unwrap();
    let before = vip_view(&lab, h, "cp");
    let other = (h + 1) % 3;
    let t0 = Instant::now();
    let err = lab
        .node(other)
        .apply(
            "apiVersion: network.furrow.io/v1alpha1
kind: BGPPeer
metadata: {name: as0}
spec:
  myASN: 0
  peerASN: 65000
  peerAddress: 198.18.0.254
",
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("spec.myASN"), "{err}");
    // Not stored.
    let peers: furrow_api::wire::ResourceList = lab
        .node(h)
        .netd
        .client()
        .get("/v1/resources/bgppeers")
        .unwrap();
    assert!(
        peers
            .items
            .iter()
            .all(|p| p["metadata"]["name"].as_str() != Some("as0")),
        "{peers:?}"
    );
    // The VIP keeps running where it was, held without a break.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(single_holder(&lab, ip, None, T).unwrap(), h);
    let after = vip_view(&lab, h, "cp");
    assert_eq!(after.role, "holder", "{after:?}");
    assert_eq!(after.epoch, before.epoch, "{after:?}");
    assert_eq!(after.holder_since_ms, before.holder_since_ms, "{after:?}");
    let held_before = before.held_for_ms.unwrap();
    let held_after = after.held_for_ms.unwrap();
    assert!(
        held_after >= held_before + t0.elapsed().as_millis() as u64 - 100,
        "re-acquired: held {held_before} ms, then {held_after} ms"
    );
    assert!(after.announcements > before.announcements, "{after:?}");
    for i in 0..3 {
        let v = vip_view(&lab, i, "cp");
        assert_eq!(v.holder.as_deref(), Some(lab.node(h).name.as_str()));
        assert!(v.problem.is_none(), "node{}: {v:?}", i + 1);
    }
}
