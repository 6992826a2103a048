//! BGP mode against a real router: BIRD 2 in one namespace, the
//! furrow-vip speaker in others (its tokio runtime's threads enter the
//! namespace, so its sockets live there). Every test builds its own
//! namespaces, BIRD instance, socket and config under /tmp/furrow-lab.
//!
//! Times from advertise()/withdraw() to the route showing at (or leaving)
//! BIRD are printed, not asserted: `cargo nextest run --test bgp
//! --no-capture` shows them.

use std::fs::File;
use std::net::IpAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use furrow_tests::bird::{bird_conf, bird_peer, link, wait_until, Bird};
use furrow_tests::{janitor, names, probe, Netns};
use furrow_vip::bgp::{PeerConfig, PeerState, PeerStatus, Speaker, SpeakerConfig};
use ipnet::IpNet;

/// Upper bound for anything that should happen within a few seconds.
const T: Duration = Duration::from_secs(15);
const BIRD_AS: u32 = 65000;
const OUR_AS: u32 = 65001;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A tokio runtime whose threads all live in `ns`.
fn runtime_in(ns: &Netns) -> tokio::runtime::Runtime {
    let path = ns.path();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .on_thread_start(move || {
            let f = File::open(&path).expect("open netns");
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        })
        .build()
        .unwrap()
}

/// A speaker running in a namespace.
struct NsSpeaker {
    // Field order: the speaker handle goes before its runtime.
    sp: Speaker,
    rt: tokio::runtime::Runtime,
}

impl NsSpeaker {
    fn start(ns: &Netns, cfg: SpeakerConfig, peers: Vec<PeerConfig>) -> NsSpeaker {
        let rt = runtime_in(ns);
        let sp = {
            let _g = rt.enter();
            Speaker::start(cfg).unwrap()
        };
        sp.set_peers(peers).unwrap();
        NsSpeaker { sp, rt }
    }

    fn peer(&self, name: &str) -> PeerStatus {
        self.sp
            .peers()
            .into_iter()
            .find(|p| p.name == name)
            .expect("peer listed")
    }

    fn wait_established(&self, name: &str) {
        wait_until(&format!("{name} Established"), T, || {
            self.peer(name).state == PeerState::Established
        });
    }

    fn shutdown(&self) {
        self.rt.block_on(self.sp.shutdown());
    }
}

fn speaker_cfg(local_as: u32, router_id: &str) -> SpeakerConfig {
    SpeakerConfig {
        hold_time: 3,
        keepalive: Some(1),
        connect_retry: Duration::from_secs(2),
        ..SpeakerConfig::new(local_as, router_id.parse().unwrap())
    }
}

fn peer(name: &str, address: &str, remote_as: u32) -> PeerConfig {
    PeerConfig::new(name, ip(address), remote_as)
}

/// A router namespace running BIRD and one speaker namespace, linked by
/// 10.99.0.0/24 and fd00:99::/64 (BIRD .1, speaker .2).
struct Pair {
    // Dropped in this order: BIRD, then the namespaces.
    bird: Bird,
    spk: Netns,
    rtr: Netns,
}

impl Pair {
    fn new(bird_protocols: &str) -> Pair {
        janitor::sweep();
        let rtr = Netns::new(&names::unique("brtr")).unwrap();
        let spk = Netns::new(&names::unique("bspk")).unwrap();
        link(
            &rtr,
            "r0",
            &["10.99.0.1/24", "fd00:99::1/64"],
            &spk,
            "e0",
            &["10.99.0.2/24", "fd00:99::2/64"],
        );
        let bird = Bird::start(&rtr, &bird_conf("10.99.0.1", false, bird_protocols));
        Pair { bird, spk, rtr }
    }
}

/// Waits for `prefix` at BIRD; prints and returns the time since `t0`.
fn wait_route(
    bird: &Bird,
    prefix: &str,
    what: &str,
    t0: Instant,
    check: impl Fn(&str) -> bool,
) -> Duration {
    let t = Instant::now();
    while !bird.route(prefix).is_some_and(|r| check(&r)) {
        assert!(
            t.elapsed() < T,
            "{prefix} never showed at BIRD ({what}): {:?}\n{}",
            bird.route(prefix),
            bird.diag()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = t0.elapsed();
    eprintln!("BGP {what}: {prefix} at BIRD after {took:?}");
    took
}

fn wait_route_gone(bird: &Bird, prefix: &str, what: &str, t0: Instant) -> Duration {
    let t = Instant::now();
    while bird.route(prefix).is_some() {
        assert!(
            t.elapsed() < T,
            "{prefix} stayed at BIRD ({what})\n{}",
            bird.diag()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = t0.elapsed();
    eprintln!("BGP {what}: {prefix} gone from BIRD after {took:?}");
    took
}

#[test]
fn ipv4_route_appears_at_bird_goes_on_withdraw_and_shutdown_says_goodbye() {
    let p = Pair::new(&bird_peer(
        "spk",
        "10.99.0.1",
        "10.99.0.2",
        (BIRD_AS, OUR_AS),
        "",
    ));
    let s = NsSpeaker::start(
        &p.spk,
        speaker_cfg(OUR_AS, "10.99.0.2"),
        vec![peer("bird", "10.99.0.1", BIRD_AS)],
    );
    s.wait_established("bird");
    wait_until("BIRD sees Established", T, || p.bird.established("spk"));
    let st = s.peer("bird");
    assert_eq!(st.hold_time, Some(3));
    assert_eq!(st.peer_id, Some("10.99.0.1".parse().unwrap()));

    let vip = "10.200.0.1/32";
    let t0 = Instant::now();
    s.sp.advertise(net(vip));
    wait_route(&p.bird, vip, "advertise", t0, |_| true);
    let r = p.bird.route(vip).unwrap();
    eprintln!("{r}");
    assert!(r.contains("BGP.as_path: 65001"), "{r}");
    assert!(r.contains("BGP.next_hop: 10.99.0.2"), "{r}");
    assert!(r.contains("BGP.origin: IGP"), "{r}");
    assert_eq!(s.peer("bird").advertised, vec![net(vip)]);

    let t0 = Instant::now();
    s.sp.withdraw(net(vip));
    wait_route_gone(&p.bird, vip, "withdraw", t0);
    assert!(s.peer("bird").advertised.is_empty());

    // Advertised again, then the speaker shuts down: BIRD hears the
    // Cease and drops the route.
    s.sp.advertise(net(vip));
    wait_route(&p.bird, vip, "re-advertise", Instant::now(), |_| true);
    let t0 = Instant::now();
    s.shutdown();
    wait_route_gone(&p.bird, vip, "shutdown", t0);
    let proto = p.bird.protocol("spk");
    eprintln!("{proto}");
    assert!(
        proto.contains("Received: Administrative shutdown"),
        "{proto}"
    );
    // The RFC 9003 shutdown communication.
    assert!(
        proto.contains("furrow: BGP speaker shutting down"),
        "{proto}"
    );
    assert!(!p.bird.established("spk"));
}

#[test]
fn ipv6_routes_over_an_ipv6_session_and_over_an_ipv4_one() {
    let protocols = format!(
        "{}{}",
        bird_peer("spk6", "fd00:99::1", "fd00:99::2", (BIRD_AS, OUR_AS), ""),
        bird_peer("spk4", "10.99.0.1", "10.99.0.2", (BIRD_AS, 65002), ""),
    );
    let p = Pair::new(&protocols);
    // Over IPv6: the next hop is the session's own address.
    let s6 = NsSpeaker::start(
        &p.spk,
        speaker_cfg(OUR_AS, "10.99.0.2"),
        vec![peer("bird6", "fd00:99::1", BIRD_AS)],
    );
    // Over IPv4 (a second speaker in the same namespace, as AS 65002):
    // the IPv6 next hop must be configured.
    let mut v4 = peer("bird4", "10.99.0.1", BIRD_AS);
    v4.next_hop_v6 = Some("fd00:99::2".parse().unwrap());
    let s4 = NsSpeaker::start(&p.spk, speaker_cfg(65002, "10.99.0.3"), vec![v4]);
    s6.wait_established("bird6");
    s4.wait_established("bird4");

    let vip = "fd00:200::1/128";
    let t0 = Instant::now();
    s6.sp.advertise(net(vip));
    wait_route(&p.bird, vip, "advertise (IPv6 session)", t0, |r| {
        r.contains("BGP.as_path: 65001")
    });
    let r = p.bird.route(vip).unwrap();
    assert!(r.contains("BGP.next_hop: fd00:99::2"), "{r}");

    let t0 = Instant::now();
    s4.sp.advertise(net(vip));
    wait_route(&p.bird, vip, "advertise (IPv4 session)", t0, |r| {
        r.contains("BGP.as_path: 65002")
    });
    assert!(s4.peer("bird4").notes.is_empty(), "{:?}", s4.peer("bird4"));

    let t0 = Instant::now();
    s6.sp.withdraw(net(vip));
    s4.sp.withdraw(net(vip));
    wait_route_gone(&p.bird, vip, "withdraw (both sessions)", t0);

    // Without the configured next hop an IPv4 session withholds IPv6
    // prefixes and says why.
    let mut no_nh = peer("bird4", "10.99.0.1", BIRD_AS);
    no_nh.next_hop_v6 = None;
    s4.sp.set_peers(vec![no_nh]).unwrap();
    s4.wait_established("bird4");
    s4.sp.advertise(net(vip));
    wait_until("the withheld note", T, || {
        !s4.peer("bird4").notes.is_empty()
    });
    assert!(s4.peer("bird4").notes[0].contains("next_hop_v6"));
    std::thread::sleep(Duration::from_millis(300));
    assert!(p.bird.route(vip).is_none(), "{:?}", p.bird.route(vip));
    s4.shutdown();
    s6.shutdown();
}

#[test]
fn bird_accepts_a_4_octet_as() {
    let p = Pair::new(&bird_peer(
        "spk",
        "10.99.0.1",
        "10.99.0.2",
        (4_200_000_000, 4_200_000_001),
        "",
    ));
    let s = NsSpeaker::start(
        &p.spk,
        speaker_cfg(4_200_000_001, "10.99.0.2"),
        vec![peer("bird", "10.99.0.1", 4_200_000_000)],
    );
    s.wait_established("bird");
    s.sp.advertise(net("10.200.0.1/32"));
    wait_route(
        &p.bird,
        "10.200.0.1/32",
        "advertise (4-octet AS)",
        Instant::now(),
        |_| true,
    );
    let r = p.bird.route("10.200.0.1/32").unwrap();
    assert!(r.contains("BGP.as_path: 4200000001"), "{r}");
    s.shutdown();
}

#[test]
fn tcp_md5_with_the_right_password_works_and_a_wrong_one_never_establishes() {
    let p = Pair::new(&bird_peer(
        "spk",
        "10.99.0.1",
        "10.99.0.2",
        (BIRD_AS, OUR_AS),
        "password \"furrow-s3cret\";",
    ));
    let mut good = peer("bird", "10.99.0.1", BIRD_AS);
    good.password = Some("furrow-s3cret".into());
    let s = NsSpeaker::start(&p.spk, speaker_cfg(OUR_AS, "10.99.0.2"), vec![good.clone()]);
    s.wait_established("bird");
    s.sp.advertise(net("10.200.0.1/32"));
    wait_route(
        &p.bird,
        "10.200.0.1/32",
        "advertise (TCP MD5)",
        Instant::now(),
        |_| true,
    );

    // A wrong password (the speaker restarts the session with it), and
    // none at all: BIRD's kernel drops the segments, nothing comes up.
    for pw in [Some("wrong-password"), None] {
        let mut bad = good.clone();
        bad.password = pw.map(str::to_string);
        s.sp.set_peers(vec![bad]).unwrap();
        wait_route_gone(
            &p.bird,
            "10.200.0.1/32",
            "reconfigured with a bad password",
            Instant::now(),
        );
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            assert_ne!(s.peer("bird").state, PeerState::Established, "{pw:?}");
            assert_ne!(s.peer("bird").state, PeerState::OpenConfirm, "{pw:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!p.bird.established("spk"));
        let st = s.peer("bird");
        assert!(st.last_error.is_some(), "{st:?}");
        eprintln!("password {pw:?}: {:?} ({:?})", st.state, st.last_error);
    }
    // The right one again.
    s.sp.set_peers(vec![good]).unwrap();
    s.wait_established("bird");
    wait_route(
        &p.bird,
        "10.200.0.1/32",
        "advertise (TCP MD5 again)",
        Instant::now(),
        |_| true,
    );
    s.shutdown();
}

#[test]
fn hold_timer_expires_when_bird_goes_silent_and_the_session_recovers() {
    let p = Pair::new(&bird_peer(
        "spk",
        "10.99.0.1",
        "10.99.0.2",
        (BIRD_AS, OUR_AS),
        "",
    ));
    let s = NsSpeaker::start(
        &p.spk,
        speaker_cfg(OUR_AS, "10.99.0.2"),
        vec![peer("bird", "10.99.0.1", BIRD_AS)],
    );
    s.wait_established("bird");
    s.sp.advertise(net("10.200.0.1/32"));
    wait_route(
        &p.bird,
        "10.200.0.1/32",
        "advertise",
        Instant::now(),
        |_| true,
    );

    // BIRD's namespace drops all BGP traffic: silence both ways.
    let table = "furrowbgp";
    let rules = format!(
        "table inet {table} {{
  chain in {{ type filter hook input priority 0; tcp dport 179 drop; tcp sport 179 drop; }}
  chain out {{ type filter hook output priority 0; tcp dport 179 drop; tcp sport 179 drop; }}
}}
"
    );
    nft(&p.rtr, &rules);
    let t0 = Instant::now();
    // The status as first seen down (a reconnect attempt soon after
    // replaces last_error).
    let mut seen = None;
    let down = wait_until("the hold timer", T, || {
        let st = s.peer("bird");
        let down = st.state != PeerState::Established;
        seen = down.then_some(st);
        down
    });
    eprintln!("session left Established {down:?} after BIRD went silent (hold time 3 s)");
    assert!(down >= Duration::from_millis(2500), "{down:?}");
    let seen = seen.unwrap();
    assert_eq!(
        seen.last_error.as_deref(),
        Some("hold timer expired"),
        "{seen:?}"
    );
    assert_eq!(seen.counters.notifications_sent, 1, "{seen:?}");
    assert!(s.peer("bird").advertised.is_empty());
    // BIRD's own hold timer drops the route too.
    wait_route_gone(&p.bird, "10.200.0.1/32", "silence", t0);

    // Traffic flows again: the session and the route come back.
    nft(&p.rtr, &format!("delete table inet {table}\n"));
    let t0 = Instant::now();
    s.wait_established("bird");
    eprintln!(
        "session re-established {:?} after traffic resumed",
        t0.elapsed()
    );
    wait_route(&p.bird, "10.200.0.1/32", "recovery", t0, |_| true);
    assert!(s.peer("bird").counters.established >= 2);
    s.shutdown();
}

fn nft(ns: &Netns, script: &str) {
    use std::io::Write;
    let mut child = ns
        .cmd("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "nft -f failed on:\n{script}"
    );
}

#[test]
fn an_unreachable_peer_shows_an_error_while_a_healthy_peer_gets_routes() {
    let p = Pair::new(&bird_peer(
        "spk",
        "10.99.0.1",
        "10.99.0.2",
        (BIRD_AS, OUR_AS),
        "",
    ));
    let mut refusing = peer("refusing", "10.99.0.1", BIRD_AS);
    refusing.port = 1179;
    let s = NsSpeaker::start(
        &p.spk,
        speaker_cfg(OUR_AS, "10.99.0.2"),
        vec![
            // On the link, but nobody has the address: ARP fails.
            peer("absent", "10.99.0.77", BIRD_AS),
            // BIRD's host, a port nothing listens on.
            refusing,
            peer("bird", "10.99.0.1", BIRD_AS),
        ],
    );
    s.sp.advertise(net("10.200.0.1/32"));
    s.wait_established("bird");
    wait_route(
        &p.bird,
        "10.200.0.1/32",
        "advertise beside dead peers",
        Instant::now(),
        |_| true,
    );
    wait_until("both errors", T, || {
        s.peer("absent").last_error.is_some() && s.peer("refusing").last_error.is_some()
    });
    for name in ["absent", "refusing"] {
        let st = s.peer(name);
        eprintln!("{name}: {} / {:?}", st.state, st.last_error);
        assert!(
            matches!(
                st.state,
                PeerState::Idle | PeerState::Connect | PeerState::Active
            ),
            "{st:?}"
        );
        assert!(st.advertised.is_empty());
    }
    let refused = s.peer("refusing").last_error.unwrap();
    assert!(refused.contains("Connection refused"), "{refused}");
    // The healthy peer keeps getting changes.
    s.sp.advertise(net("10.200.0.2/32"));
    wait_route(
        &p.bird,
        "10.200.0.2/32",
        "advertise beside dead peers",
        Instant::now(),
        |_| true,
    );
    s.shutdown();
}

/// cli ── rtr (BIRD, kernel export) ── spk1, spk2: the VIP is held by
/// one speaker node at a time, or by both (ECMP).
#[test]
fn failover_moves_the_route_and_a_client_behind_bird_reaches_the_vip() {
    janitor::sweep();
    let rtr = Netns::new(&names::unique("frtr")).unwrap();
    let cli = Netns::new(&names::unique("fcli")).unwrap();
    let n1 = Netns::new(&names::unique("fn1")).unwrap();
    let n2 = Netns::new(&names::unique("fn2")).unwrap();
    link(&rtr, "c0", &["10.98.0.1/24"], &cli, "e0", &["10.98.0.2/24"]);
    link(&rtr, "n1", &["10.99.1.1/24"], &n1, "e0", &["10.99.1.2/24"]);
    link(&rtr, "n2", &["10.99.2.1/24"], &n2, "e0", &["10.99.2.2/24"]);
    rtr.sysctl("net.ipv4.ip_forward", "1").unwrap();
    cli.ip(&["route", "add", "default", "via", "10.98.0.1"])
        .unwrap();
    n1.ip(&["route", "add", "default", "via", "10.99.1.1"])
        .unwrap();
    n2.ip(&["route", "add", "default", "via", "10.99.2.1"])
        .unwrap();
    let protocols = format!(
        "{}{}",
        bird_peer("node1", "10.99.1.1", "10.99.1.2", (BIRD_AS, OUR_AS), ""),
        bird_peer("node2", "10.99.2.1", "10.99.2.2", (BIRD_AS, OUR_AS), ""),
    );
    let bird = Bird::start(&rtr, &bird_conf("10.98.0.1", true, &protocols));
    let s1 = NsSpeaker::start(
        &n1,
        speaker_cfg(OUR_AS, "10.99.1.2"),
        vec![peer("tor", "10.99.1.1", BIRD_AS)],
    );
    let s2 = NsSpeaker::start(
        &n2,
        speaker_cfg(OUR_AS, "10.99.2.2"),
        vec![peer("tor", "10.99.2.1", BIRD_AS)],
    );
    s1.wait_established("tor");
    s2.wait_established("tor");

    let vip = "10.200.0.1";
    let prefix = "10.200.0.1/32";
    let kernel_route = || rtr.ip(&["route", "show", prefix]).unwrap_or_default();

    // node1 holds the VIP.
    n1.ip(&["addr", "add", prefix, "dev", "lo"]).unwrap();
    let t0 = Instant::now();
    s1.sp.advertise(net(prefix));
    wait_route(&bird, prefix, "advertise (holder node1)", t0, |r| {
        r.contains("via 10.99.1.2")
    });
    wait_until("the kernel route via node1", T, || {
        kernel_route().contains("via 10.99.1.2")
    });
    assert!(
        probe::ping_ok(&cli, ip(vip), 5),
        "client cannot reach the VIP on node1"
    );

    // Failover: node1 steps down, node2 takes over.
    let t0 = Instant::now();
    s1.sp.withdraw(net(prefix));
    n1.ip(&["addr", "del", prefix, "dev", "lo"]).unwrap();
    n2.ip(&["addr", "add", prefix, "dev", "lo"]).unwrap();
    s2.sp.advertise(net(prefix));
    wait_route(&bird, prefix, "failover to node2", t0, |r| {
        r.contains("via 10.99.2.2") && !r.contains("via 10.99.1.2")
    });
    wait_until("the kernel route via node2", T, || {
        kernel_route().contains("via 10.99.2.2")
    });
    assert!(
        probe::ping_ok(&cli, ip(vip), 5),
        "client cannot reach the VIP on node2"
    );

    // ECMP: both nodes advertise; BIRD has a route from each.
    s1.sp.advertise(net(prefix));
    wait_route(&bird, prefix, "ECMP (both nodes)", Instant::now(), |r| {
        r.contains("via 10.99.1.2") && r.contains("via 10.99.2.2")
    });

    // Graceful stop of node2: its route goes, node1's stays.
    let t0 = Instant::now();
    s2.shutdown();
    wait_route(&bird, prefix, "node2 stopped", t0, |r| {
        !r.contains("via 10.99.2.2")
    });
    let proto = bird.protocol("node2");
    assert!(
        proto.to_lowercase().contains("administrative shutdown"),
        "{proto}"
    );
    s1.shutdown();
    wait_route_gone(&bird, prefix, "node1 stopped", t0);
    wait_until("the kernel route gone", T, || kernel_route().is_empty());
}
