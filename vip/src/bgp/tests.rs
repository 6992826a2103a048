//! The speaker against a scripted peer on 127.0.0.1: what goes on the
//! wire when prefixes, peers and the peer's behavior change.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::codec::{
    self, attr, err, AsPath, CodecOptions, Message, Notification, Open, PathAttribute, RouteRefresh,
};
use super::*;

const LOCAL_AS: u32 = 65001;
const PEER_AS: u32 = 65000;
const WAIT: Duration = Duration::from_secs(5);

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn speaker_cfg() -> SpeakerConfig {
    SpeakerConfig {
        hold_time: 3,
        keepalive: Some(1),
        connect_retry: Duration::from_secs(2),
        ..SpeakerConfig::new(LOCAL_AS, Ipv4Addr::new(10, 0, 0, 2))
    }
}

async fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

fn peer_cfg(name: &str, port: u16) -> PeerConfig {
    PeerConfig {
        port,
        ..PeerConfig::new(name, IpAddr::V4(Ipv4Addr::LOCALHOST), PEER_AS)
    }
}

/// The router's end of a session.
struct Router {
    s: TcpStream,
    buf: Vec<u8>,
    opts: CodecOptions,
}

impl Router {
    async fn accept(l: &TcpListener) -> Router {
        let (s, _) = tokio::time::timeout(WAIT, l.accept())
            .await
            .expect("the speaker connects")
            .unwrap();
        Router {
            s,
            buf: vec![],
            opts: CodecOptions {
                four_octet_as: true,
            },
        }
    }

    /// Accepts and completes the OPEN exchange with `open`.
    async fn establish(l: &TcpListener, open: Open) -> (Router, Open) {
        let mut r = Router::accept(l).await;
        let four = open.four_octet_as().is_some();
        let Message::Open(theirs) = r.recv().await else {
            panic!("no OPEN first")
        };
        r.send(Message::Open(open)).await;
        r.send(Message::Keepalive).await;
        assert_eq!(r.recv().await, Message::Keepalive);
        r.opts.four_octet_as = four;
        (r, theirs)
    }

    async fn establish_default(l: &TcpListener) -> Router {
        let open = Open::new(
            PEER_AS,
            90,
            Ipv4Addr::new(10, 0, 0, 1),
            &[Family::IPV4_UNICAST, Family::IPV6_UNICAST],
        );
        Router::establish(l, open).await.0
    }

    async fn send(&mut self, m: Message) {
        self.send_raw(&m.encode(self.opts).unwrap()).await;
    }

    async fn send_raw(&mut self, b: &[u8]) {
        self.s.write_all(b).await.unwrap();
    }

    /// The next message, or None at EOF.
    async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(len) = codec::frame_len(&self.buf).unwrap() {
                let m: Vec<u8> = self.buf.drain(..len).collect();
                return Some(codec::decode(&m, self.opts).unwrap());
            }
            let mut tmp = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, self.s.read(&mut tmp))
                .await
                .expect("a message within 5 s")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }

    async fn recv(&mut self) -> Message {
        self.next().await.expect("a message, not EOF")
    }

    /// The next message that is not a KEEPALIVE.
    async fn recv_no_keepalive(&mut self) -> Message {
        loop {
            let m = self.recv().await;
            if m != Message::Keepalive {
                return m;
            }
        }
    }

    async fn recv_update(&mut self) -> codec::Update {
        match self.recv_no_keepalive().await {
            Message::Update(u) => u,
            m => panic!("expected an UPDATE, got {m:?}"),
        }
    }

    async fn recv_notification(&mut self) -> Notification {
        match self.recv_no_keepalive().await {
            Message::Notification(n) => n,
            m => panic!("expected a NOTIFICATION, got {m:?}"),
        }
    }
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn status(sp: &Speaker, name: &str) -> PeerStatus {
    sp.peers()
        .into_iter()
        .find(|p| p.name == name)
        .expect("peer listed")
}

#[tokio::test]
async fn routes_go_out_on_establishment_and_changes_at_once() {
    let (l, port) = listener().await;
    let sp = Speaker::start(speaker_cfg()).unwrap();
    sp.advertise(net("10.200.0.1/32"));
    // Host bits are cleared; a repeat changes nothing.
    sp.advertise(net("10.200.0.1/32"));
    sp.set_peers(vec![peer_cfg("r1", port)]).unwrap();
    let mut r = Router::establish_default(&l).await;

    // The initial Adj-RIB-Out.
    let u = r.recv_update().await;
    assert_eq!(u.nlri, vec!["10.200.0.1/32".parse().unwrap()]);
    assert_eq!(
        u.attribute(attr::ORIGIN),
        Some(&PathAttribute::Origin(codec::Origin::Igp))
    );
    assert_eq!(
        u.attribute(attr::AS_PATH),
        Some(&PathAttribute::AsPath(AsPath::sequence(vec![LOCAL_AS])))
    );
    // The next hop is our end of the connection.
    assert_eq!(
        u.attribute(attr::NEXT_HOP),
        Some(&PathAttribute::NextHop(Ipv4Addr::LOCALHOST))
    );

    // A new prefix, at once.
    let t = Instant::now();
    sp.advertise(net("10.200.0.7/24"));
    let u = r.recv_update().await;
    assert_eq!(u.nlri, vec!["10.200.0.0/24".parse().unwrap()]);
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(
        sp.advertised(),
        vec![net("10.200.0.0/24"), net("10.200.0.1/32")]
    );

    // IPv6 over an IPv4 session without a v6 next hop: withheld, said so.
    sp.advertise(net("fd00:200::1/128"));
    wait_for("the note", || !status(&sp, "r1").notes.is_empty()).await;
    let st = status(&sp, "r1");
    assert!(st.notes[0].contains("next_hop_v6"), "{:?}", st.notes);
    assert_eq!(
        st.advertised,
        vec![net("10.200.0.0/24"), net("10.200.0.1/32")]
    );
    assert_eq!(st.state, PeerState::Established);
    assert_eq!(st.hold_time, Some(3));
    assert_eq!(st.keepalive, Some(1));
    assert_eq!(st.peer_id, Some(Ipv4Addr::new(10, 0, 0, 1)));
    assert_eq!(
        st.families,
        vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST]
    );
    assert_eq!(st.counters.updates_sent, 2);
    assert_eq!(st.counters.established, 1);
    assert!(st.local_address.is_some());
    assert!(st.last_error.is_none());

    // Withdraw, at once; withdrawing again sends nothing.
    sp.withdraw(net("10.200.0.1/32"));
    sp.withdraw(net("10.200.0.1/32"));
    let u = r.recv_update().await;
    assert_eq!(u.withdrawn, vec!["10.200.0.1/32".parse().unwrap()]);
    assert!(u.nlri.is_empty());

    // Route refresh resends what the peer has.
    r.send(Message::RouteRefresh(RouteRefresh {
        family: Family::IPV4_UNICAST,
        subtype: 0,
    }))
    .await;
    let u = r.recv_update().await;
    assert_eq!(u.nlri, vec!["10.200.0.0/24".parse().unwrap()]);

    // Keepalives flow every second.
    let t = Instant::now();
    assert_eq!(r.recv().await, Message::Keepalive);
    assert!(t.elapsed() < Duration::from_millis(1500));

    sp.shutdown().await;
    let n = r.recv_notification().await;
    assert_eq!((n.code, n.subcode), (err::CEASE, err::CEASE_ADMIN_SHUTDOWN));
    assert!(n.shutdown_message().unwrap().contains("shutting down"));
    assert_eq!(r.next().await, None, "closed after the NOTIFICATION");
    assert!(sp.peers().is_empty());
    assert_eq!(
        sp.set_peers(vec![peer_cfg("r1", port)]),
        Err(ConfigError::ShutDown)
    );
}

#[tokio::test]
async fn ipv6_routes_use_the_configured_next_hop_and_mp_bgp() {
    let (l, port) = listener().await;
    let sp = Speaker::start(speaker_cfg()).unwrap();
    let mut p = peer_cfg("r1", port);
    p.next_hop_v6 = Some("fd00::2".parse().unwrap());
    sp.set_peers(vec![p]).unwrap();
    let mut r = Router::establish_default(&l).await;
    sp.advertise(net("fd00:200::1/128"));
    let u = r.recv_update().await;
    let Some(PathAttribute::MpReach(reach)) = u.attribute(attr::MP_REACH_NLRI) else {
        panic!("{u:?}")
    };
    assert_eq!(reach.next_hops, vec!["fd00::2".parse::<IpAddr>().unwrap()]);
    assert_eq!(reach.nlri, vec![net("fd00:200::1/128")]);
    sp.withdraw(net("fd00:200::1/128"));
    let u = r.recv_update().await;
    assert_eq!(u.withdrawn_all(), vec![net("fd00:200::1/128")]);
    assert!(status(&sp, "r1").notes.is_empty());
    sp.shutdown().await;
}

#[tokio::test]
async fn a_2_octet_peer_sees_as_trans_and_as4_path() {
    let (l, port) = listener().await;
    let mut cfg = speaker_cfg();
    cfg.local_as = 4_200_000_001;
    let sp = Speaker::start(cfg).unwrap();
    sp.set_peers(vec![peer_cfg("r1", port)]).unwrap();
    sp.advertise(net("10.200.0.1/32"));
    // An old router: no capabilities at all.
    let mut open = Open::new(PEER_AS, 90, Ipv4Addr::new(10, 0, 0, 1), &[]);
    open.capabilities.clear();
    let (mut r, theirs) = Router::establish(&l, open).await;
    assert_eq!(u32::from(theirs.my_as), codec::AS_TRANS);
    assert_eq!(theirs.asn(), 4_200_000_001);
    let u = r.recv_update().await;
    assert_eq!(
        u.attribute(attr::AS_PATH),
        Some(&PathAttribute::AsPath(AsPath::sequence(vec![
            codec::AS_TRANS
        ])))
    );
    assert_eq!(
        u.attribute(attr::AS4_PATH),
        Some(&PathAttribute::As4Path(AsPath::sequence(vec![
            4_200_000_001
        ])))
    );
    // No MP capabilities: IPv4 unicast only.
    assert_eq!(status(&sp, "r1").families, vec![Family::IPV4_UNICAST]);
    sp.shutdown().await;
}

#[tokio::test]
async fn a_silent_peer_trips_the_hold_timer_and_the_session_comes_back() {
    let (l, port) = listener().await;
    let sp = Speaker::start(speaker_cfg()).unwrap();
    sp.set_peers(vec![peer_cfg("r1", port)]).unwrap();
    let mut r = Router::establish_default(&l).await;
    // Say nothing for the 3 s hold time.
    let t = Instant::now();
    let n = r.recv_notification().await;
    let took = t.elapsed();
    assert_eq!(n.code, err::HOLD_TIMER_EXPIRED);
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    wait_for("the status", || {
        status(&sp, "r1").state != PeerState::Established
    })
    .await;
    assert_eq!(
        status(&sp, "r1").last_error.as_deref(),
        Some("hold timer expired")
    );
    // It reconnects within the first (1 s) backoff.
    let t = Instant::now();
    let _r2 = Router::establish_default(&l).await;
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    wait_for("Established again", || {
        status(&sp, "r1").state == PeerState::Established
    })
    .await;
    assert_eq!(status(&sp, "r1").counters.established, 2);
    sp.shutdown().await;
}

#[tokio::test]
async fn a_peer_with_the_wrong_as_is_refused_with_bad_peer_as() {
    let (l, port) = listener().await;
    let sp = Speaker::start(speaker_cfg()).unwrap();
    sp.set_peers(vec![peer_cfg("r1", port)]).unwrap();
    let mut r = Router::accept(&l).await;
    assert!(matches!(r.recv().await, Message::Open(_)));
    r.send(Message::Open(Open::new(
        65099,
        90,
        Ipv4Addr::new(10, 0, 0, 1),
        &[],
    )))
    .await;
    let n = r.recv_notification().await;
    assert_eq!((n.code, n.subcode), (err::OPEN, err::OPEN_BAD_PEER_AS));
    wait_for("the error", || status(&sp, "r1").last_error.is_some()).await;
    let e = status(&sp, "r1").last_error.unwrap();
    assert!(e.contains("65099") && e.contains("65000"), "{e}");
    sp.shutdown().await;
}

#[tokio::test]
async fn garbage_from_the_peer_is_answered_with_the_right_notification() {
    let (l, port) = listener().await;
    let sp = Speaker::start(speaker_cfg()).unwrap();
    sp.set_peers(vec![peer_cfg("r1", port)]).unwrap();

    // A broken marker.
    let mut r = Router::establish_default(&l).await;
    let mut bad = Message::Keepalive.encode(r.opts).unwrap();
    bad[0] = 0;
    r.send_raw(&bad).await;
    let n = r.recv_notification().await;
    assert_eq!(
        (n.code, n.subcode),
        (err::HEADER, err::HEADER_NOT_SYNCHRONIZED)
    );
    assert_eq!(r.next().await, None);

    // An UPDATE with a bad ORIGIN is survived (RFC 7606) and counted ...
    let mut r = Router::establish_default(&l).await;
    let body = [0, 0, 0, 4, 0x40, 1, 1, 9];
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    m.push(2);
    m.extend_from_slice(&body);
    r.send_raw(&m).await;
    wait_for("the discard", || {
        status(&sp, "r1").counters.updates_discarded == 1
    })
    .await;
    assert_eq!(status(&sp, "r1").state, PeerState::Established);
    // ... a message type that does not exist is not.
    let mut m = Message::Keepalive.encode(r.opts).unwrap();
    m[18] = 42;
    r.send_raw(&m).await;
    let n = r.recv_notification().await;
    assert_eq!(
        (n.code, n.subcode, n.data),
        (err::HEADER, err::HEADER_BAD_TYPE, vec![42])
    );
    sp.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_peer_shows_why_and_others_keep_going() {
    let (l, port) = listener().await;
    // A port nothing listens on.
    let dead_port = {
        let (d, p) = listener().await;
        drop(d);
        p
    };
    let sp = Speaker::start(speaker_cfg()).unwrap();
    sp.advertise(net("10.200.0.1/32"));
    let mut dead = peer_cfg("dead", dead_port);
    dead.address = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    sp.set_peers(vec![dead, peer_cfg("live", port)]).unwrap();
    let mut r = Router::establish_default(&l).await;
    assert_eq!(r.recv_update().await.nlri.len(), 1);
    wait_for("the connect error", || {
        status(&sp, "dead").last_error.is_some()
    })
    .await;
    let st = status(&sp, "dead");
    assert!(
        matches!(st.state, PeerState::Active | PeerState::Connect),
        "{st:?}"
    );
    assert!(
        st.last_error
            .as_deref()
            .unwrap()
            .contains("Connection refused"),
        "{st:?}"
    );
    assert!(st.counters.connect_attempts >= 1);

    // Bad input is refused whole: the running peers stay as they were.
    let mut bad = peer_cfg("bad", 179);
    bad.remote_as = 0;
    let e = sp.set_peers(vec![peer_cfg("live", port), bad]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "peer \"bad\": remote_as: AS 0 is reserved and cannot be used (RFC 7607)"
    );
    assert_eq!(sp.peers().len(), 2);
    sp.advertise(net("10.200.0.2/32"));
    assert_eq!(
        r.recv_update().await.nlri,
        vec!["10.200.0.2/32".parse().unwrap()]
    );
    sp.shutdown().await;
}

#[tokio::test]
async fn removed_and_changed_peers_get_a_cease() {
    let (l, port) = listener().await;
    let sp = Speaker::start(speaker_cfg()).unwrap();
    let p = peer_cfg("r1", port);
    sp.set_peers(vec![p.clone()]).unwrap();
    let mut r = Router::establish_default(&l).await;
    // The same list again: nothing happens to the session.
    sp.set_peers(vec![p.clone()]).unwrap();
    // A changed setting restarts it.
    let mut changed = p.clone();
    changed.hold_time = Some(6);
    sp.set_peers(vec![changed.clone()]).unwrap();
    let n = r.recv_notification().await;
    assert_eq!(
        (n.code, n.subcode),
        (err::CEASE, err::CEASE_OTHER_CONFIG_CHANGE)
    );
    let mut r = Router::accept(&l).await;
    let Message::Open(o) = r.recv().await else {
        panic!("no OPEN")
    };
    assert_eq!(o.hold_time, 6);
    drop(r);
    let mut r = Router::establish_default(&l).await;
    // Removal.
    sp.set_peers(vec![]).unwrap();
    let n = r.recv_notification().await;
    assert_eq!(
        (n.code, n.subcode),
        (err::CEASE, err::CEASE_PEER_DECONFIGURED)
    );
    assert!(sp.peers().is_empty());
    sp.shutdown().await;
}

#[test]
fn start_needs_a_runtime_and_a_valid_config() {
    assert_eq!(
        Speaker::start(speaker_cfg()).unwrap_err(),
        ConfigError::NoRuntime
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _g = rt.enter();
    let mut c = speaker_cfg();
    c.local_as = 0;
    assert!(matches!(
        Speaker::start(c),
        Err(ConfigError::Invalid {
            field: "local_as",
            ..
        })
    ));
}

#[tokio::test]
async fn dropping_the_last_handle_closes_sessions_with_a_cease() {
    let (l, port) = listener().await;
    let sp = Speaker::start(speaker_cfg()).unwrap();
    sp.set_peers(vec![peer_cfg("r1", port)]).unwrap();
    let mut r = Router::establish_default(&l).await;
    let clone = sp.clone();
    drop(sp);
    // A clone keeps it alive.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(clone.peers()[0].state, PeerState::Established);
    drop(clone);
    let n = r.recv_notification().await;
    assert_eq!((n.code, n.subcode), (err::CEASE, err::CEASE_ADMIN_SHUTDOWN));
}

#[tokio::test]
async fn set_advertised_sends_only_the_difference() {
    let (l, port) = listener().await;
    let sp = Speaker::start(speaker_cfg()).unwrap();
    sp.set_advertised([net("10.200.0.1/32"), net("10.200.0.2/32")]);
    sp.set_peers(vec![peer_cfg("r1", port)]).unwrap();
    let mut r = Router::establish_default(&l).await;
    assert_eq!(r.recv_update().await.nlri.len(), 2);
    sp.set_advertised([net("10.200.0.2/32"), net("10.200.0.3/32")]);
    let u = r.recv_update().await;
    assert_eq!(u.withdrawn, vec!["10.200.0.1/32".parse().unwrap()]);
    let u = r.recv_update().await;
    assert_eq!(u.nlri, vec!["10.200.0.3/32".parse().unwrap()]);
    assert_eq!(
        sp.advertised(),
        vec![net("10.200.0.2/32"), net("10.200.0.3/32")]
    );
    // The same set again: nothing on the wire (only keepalives).
    sp.set_advertised([net("10.200.0.3/32"), net("10.200.0.2/32")]);
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(1500) {
        assert_eq!(r.recv().await, Message::Keepalive);
    }
    sp.shutdown().await;
}
