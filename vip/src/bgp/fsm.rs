//! The RFC 4271 section 8 state machine of one peer, without I/O.
//!
//! The session feeds it events (a connection came up or failed, a
//! message or a decoding error arrived, time passed) with the current
//! time, and carries out the [`Action`]s it returns. Time is always an
//! argument, so tests drive it with a fake clock.
//!
//! The speaker only connects out (the peer's own connection attempts
//! are not accepted), so there are no connection collisions to resolve;
//! Active is the state of waiting to retry after a failed attempt.
//! Failed attempts back off exponentially from 1 s to the configured
//! connect retry time; a session that went down is retried the same way
//! (RFC 4271's automatic start with an IdleHoldTimer).

use std::fmt;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::codec::{err, CodecOptions, DecodeError, Family, Message, Notification, Open};

/// The six states of RFC 4271 section 8.2.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Idle => "Idle",
            State::Connect => "Connect",
            State::Active => "Active",
            State::OpenSent => "OpenSent",
            State::OpenConfirm => "OpenConfirm",
            State::Established => "Established",
        })
    }
}

/// What the state machine needs to know about the two ends.
#[derive(Debug, Clone)]
pub struct FsmConfig {
    pub local_as: u32,
    pub remote_as: u32,
    pub router_id: Ipv4Addr,
    /// The hold time we propose (0 or at least 3).
    pub hold_time: u16,
    /// Our keepalive interval; `None` for a third of the hold time.
    pub keepalive: Option<u16>,
    /// The longest wait between connection attempts, and how long one
    /// attempt may take.
    pub connect_retry: Duration,
    /// The families we offer.
    pub families: Vec<Family>,
}

/// What the OPEN exchange settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub peer_as: u32,
    pub peer_id: Ipv4Addr,
    /// The smaller of both proposals; 0 means no hold timer and no
    /// keepalives.
    pub hold_time: u16,
    pub keepalive: u16,
    pub four_octet_as: bool,
    /// Families both ends announced.
    pub families: Vec<Family>,
    pub route_refresh: bool,
}

/// What the session must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection to the peer (dropping any attempt under way).
    Connect,
    Send(Message),
    /// Close the connection (after what was sent is out).
    Close,
    /// The session is up: send the whole Adj-RIB-Out.
    Established,
    /// The peer asked for a family's routes again (ROUTE-REFRESH).
    Refresh(Family),
}

/// How long to wait for the peer's OPEN: RFC 4271's "large value" of
/// 4 minutes.
pub const OPEN_HOLD_TIME: Duration = Duration::from_secs(240);
/// The first retry comes quickly; later ones back off.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Fsm {
    cfg: FsmConfig,
    state: State,
    since: Instant,
    /// Set by `stop`: no automatic restart.
    stopped: bool,
    retry_at: Option<Instant>,
    hold_at: Option<Instant>,
    keepalive_at: Option<Instant>,
    /// Consecutive failures, for the backoff.
    failures: u32,
    negotiated: Option<Negotiated>,
    last_error: Option<String>,
}

impl Fsm {
    pub fn new(cfg: FsmConfig, now: Instant) -> Fsm {
        Fsm {
            cfg,
            state: State::Idle,
            since: now,
            stopped: true,
            retry_at: None,
            hold_at: None,
            keepalive_at: None,
            failures: 0,
            negotiated: None,
            last_error: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// When the current state was entered.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// The OPEN exchange's outcome, from OpenConfirm on.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// Why the last session or attempt failed.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// How to decode the peer's messages and encode ours.
    pub fn codec_options(&self) -> CodecOptions {
        CodecOptions {
            four_octet_as: self.negotiated.as_ref().is_some_and(|n| n.four_octet_as),
        }
    }

    /// When [`Fsm::poll`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.retry_at, self.hold_at, self.keepalive_at]
            .into_iter()
            .flatten()
            .min()
    }

    fn set_state(&mut self, now: Instant, s: State) {
        if self.state != s {
            self.state = s;
            self.since = now;
        }
    }

    fn backoff(&self) -> Duration {
        let base = FIRST_RETRY.min(self.cfg.connect_retry);
        base.saturating_mul(1u32 << self.failures.min(16))
            .min(self.cfg.connect_retry)
    }

    /// ManualStart: connect now.
    pub fn start(&mut self, now: Instant) -> Vec<Action> {
        self.stopped = false;
        match self.state {
            State::Idle | State::Active => self.connect(now),
            _ => vec![],
        }
    }

    fn connect(&mut self, now: Instant) -> Vec<Action> {
        self.set_state(now, State::Connect);
        self.retry_at = Some(now + self.cfg.connect_retry);
        vec![Action::Connect]
    }

    /// ManualStop: say goodbye with `notification` if a connection is up,
    /// and stay down.
    pub fn stop(&mut self, now: Instant, notification: Notification) -> Vec<Action> {
        let out = match self.state {
            State::OpenSent | State::OpenConfirm | State::Established => {
                vec![
                    Action::Send(Message::Notification(notification)),
                    Action::Close,
                ]
            }
            State::Connect => vec![Action::Close],
            State::Idle | State::Active => vec![],
        };
        self.stopped = true;
        self.down(now);
        out
    }

    /// Leaves for Idle, retrying later unless stopped.
    fn down(&mut self, now: Instant) {
        self.set_state(now, State::Idle);
        self.hold_at = None;
        self.keepalive_at = None;
        self.negotiated = None;
        self.retry_at = None;
        if !self.stopped {
            self.retry_at = Some(now + self.backoff());
            self.failures = self.failures.saturating_add(1);
        }
    }

    /// An error that ends the session: tell the peer, close, go Idle.
    fn fail(&mut self, now: Instant, notification: Notification, error: String) -> Vec<Action> {
        self.last_error = Some(error);
        self.down(now);
        vec![
            Action::Send(Message::Notification(notification)),
            Action::Close,
        ]
    }

    /// The TCP connection we opened is up: send our OPEN.
    pub fn connected(&mut self, now: Instant) -> Vec<Action> {
        if self.state != State::Connect {
            return vec![Action::Close];
        }
        self.retry_at = None;
        self.hold_at = Some(now + OPEN_HOLD_TIME);
        self.set_state(now, State::OpenSent);
        vec![Action::Send(Message::Open(Open::new(
            self.cfg.local_as,
            self.cfg.hold_time,
            self.cfg.router_id,
            &self.cfg.families,
        )))]
    }

    /// The connection attempt failed, or the connection broke.
    pub fn connection_failed(&mut self, now: Instant, reason: String) -> Vec<Action> {
        match self.state {
            State::Connect | State::OpenSent => {
                self.last_error = Some(reason);
                self.hold_at = None;
                self.keepalive_at = None;
                self.retry_at = Some(now + self.backoff());
                self.failures = self.failures.saturating_add(1);
                self.set_state(now, State::Active);
                vec![Action::Close]
            }
            State::OpenConfirm | State::Established => {
                self.last_error = Some(reason);
                self.down(now);
                vec![Action::Close]
            }
            State::Idle | State::Active => vec![],
        }
    }

    /// A message arrived.
    pub fn received(&mut self, now: Instant, msg: Message) -> Vec<Action> {
        if let Message::Notification(n) = &msg {
            return match self.state {
                State::OpenSent | State::OpenConfirm | State::Established => {
                    self.last_error = Some(format!("NOTIFICATION received: {n}"));
                    self.down(now);
                    vec![Action::Close]
                }
                _ => vec![],
            };
        }
        match (self.state, msg) {
            (State::OpenSent, Message::Open(open)) => self.open_received(now, &open),
            (State::OpenConfirm, Message::Keepalive) => {
                self.restart_hold(now);
                self.failures = 0;
                self.set_state(now, State::Established);
                vec![Action::Established]
            }
            (State::Established, Message::Keepalive | Message::Update(_)) => {
                self.restart_hold(now);
                vec![]
            }
            (State::Established, Message::RouteRefresh(rr)) => {
                self.restart_hold(now);
                let ours = self
                    .negotiated
                    .as_ref()
                    .is_some_and(|n| n.families.contains(&rr.family));
                // A refresh for a family that was not negotiated is
                // ignored (RFC 2918 section 4), and so are RFC 7313's
                // Beginning/End-of-RIB-Refresh markers (subtypes 1 and 2;
                // we did not offer enhanced route refresh).
                if ours && rr.subtype == 0 {
                    vec![Action::Refresh(rr.family)]
                } else {
                    vec![]
                }
            }
            (s @ (State::OpenSent | State::OpenConfirm | State::Established), m) => {
                let subcode = match s {
                    State::OpenSent => err::FSM_UNEXPECTED_OPEN_SENT,
                    State::OpenConfirm => err::FSM_UNEXPECTED_OPEN_CONFIRM,
                    _ => err::FSM_UNEXPECTED_ESTABLISHED,
                };
                self.fail(
                    now,
                    Notification::new(err::FSM, subcode, vec![]),
                    format!("unexpected {} in {s}", m.kind()),
                )
            }
            // No connection in these states: nothing can arrive.
            _ => vec![],
        }
    }

    fn open_received(&mut self, now: Instant, open: &Open) -> Vec<Action> {
        let peer_as = open.asn();
        if peer_as != self.cfg.remote_as {
            return self.fail(
                now,
                Notification::new(err::OPEN, err::OPEN_BAD_PEER_AS, vec![]),
                format!("OPEN: peer AS {peer_as}, configured {}", self.cfg.remote_as),
            );
        }
        // The same identifier on both ends is only an error within one AS
        // (RFC 6286 section 2.1).
        if self.cfg.remote_as == self.cfg.local_as && open.bgp_id == self.cfg.router_id {
            return self.fail(
                now,
                Notification::new(err::OPEN, err::OPEN_BAD_BGP_ID, vec![]),
                format!("OPEN: peer uses our BGP identifier {}", open.bgp_id),
            );
        }
        let hold_time = self.cfg.hold_time.min(open.hold_time);
        let keepalive = if hold_time == 0 {
            0
        } else {
            let third = hold_time / 3;
            self.cfg.keepalive.unwrap_or(third).clamp(1, third.max(1))
        };
        let peer_families = open.families();
        let families = self
            .cfg
            .families
            .iter()
            .copied()
            .filter(|f| peer_families.contains(f))
            .collect();
        self.negotiated = Some(Negotiated {
            peer_as,
            peer_id: open.bgp_id,
            hold_time,
            keepalive,
            four_octet_as: open.four_octet_as().is_some(),
            families,
            route_refresh: open.route_refresh(),
        });
        self.restart_hold(now);
        self.keepalive_at = (keepalive > 0).then(|| now + Duration::from_secs(keepalive.into()));
        self.set_state(now, State::OpenConfirm);
        vec![Action::Send(Message::Keepalive)]
    }

    fn restart_hold(&mut self, now: Instant) {
        self.hold_at = match &self.negotiated {
            Some(n) if n.hold_time > 0 => Some(now + Duration::from_secs(n.hold_time.into())),
            _ => None,
        };
    }

    /// A message could not be decoded.
    pub fn decode_failed(&mut self, now: Instant, e: &DecodeError) -> Vec<Action> {
        match self.state {
            State::OpenSent | State::OpenConfirm | State::Established => {}
            _ => return vec![],
        }
        if e.resets_session() {
            let n = e.notification();
            let msg = format!("NOTIFICATION sent: {} ({e})", n.name());
            return self.fail(now, n, msg);
        }
        // An UPDATE treated as withdraw (RFC 7606): the session lives on.
        if self.state == State::Established {
            self.restart_hold(now);
        }
        vec![]
    }

    /// We sent an UPDATE: it counts as a keepalive.
    pub fn sent_update(&mut self, now: Instant) {
        if let (Some(n), Some(_)) = (&self.negotiated, self.keepalive_at) {
            self.keepalive_at = Some(now + Duration::from_secs(n.keepalive.into()));
        }
    }

    /// Runs the timers that are due.
    pub fn poll(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.hold_at.is_some_and(|t| t <= now) {
            out.extend(self.fail(
                now,
                Notification::new(err::HOLD_TIMER_EXPIRED, 0, vec![]),
                "hold timer expired".to_string(),
            ));
        }
        if self.keepalive_at.is_some_and(|t| t <= now) {
            let ka = self.negotiated.as_ref().map_or(0, |n| n.keepalive);
            self.keepalive_at = Some(now + Duration::from_secs(ka.max(1).into()));
            out.push(Action::Send(Message::Keepalive));
        }
        if self.retry_at.is_some_and(|t| t <= now) {
            match self.state {
                State::Idle | State::Active => out.extend(self.connect(now)),
                State::Connect => {
                    // The attempt took too long: drop it and try again
                    // (after the backoff, as for any failure).
                    self.last_error = Some("connect: timed out".to_string());
                    self.retry_at = Some(now + self.backoff());
                    self.failures = self.failures.saturating_add(1);
                    self.set_state(now, State::Active);
                    out.push(Action::Close);
                }
                _ => self.retry_at = None,
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::codec::{Capability, RouteRefresh, Update};

    const ME: u32 = 65001;
    const PEER: u32 = 65000;

    fn cfg() -> FsmConfig {
        FsmConfig {
            local_as: ME,
            remote_as: PEER,
            router_id: Ipv4Addr::new(10, 0, 0, 2),
            hold_time: 9,
            keepalive: None,
            connect_retry: Duration::from_secs(5),
            families: vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST],
        }
    }

    fn peer_open(asn: u32, hold: u16) -> Message {
        Message::Open(Open::new(
            asn,
            hold,
            Ipv4Addr::new(10, 0, 0, 1),
            &[Family::IPV4_UNICAST],
        ))
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn sends_notification(actions: &[Action], code: u8, subcode: u8) -> bool {
        actions.iter().any(|a| {
            matches!(a, Action::Send(Message::Notification(n)) if n.code == code && n.subcode == subcode)
        }) && actions.last() == Some(&Action::Close)
    }

    /// Drives a machine to Established at `t0`, the peer proposing `hold`.
    fn established(cfg: FsmConfig, t0: Instant, hold: u16) -> Fsm {
        let mut f = Fsm::new(cfg, t0);
        assert_eq!(f.start(t0), vec![Action::Connect]);
        assert_eq!(f.state(), State::Connect);
        let a = f.connected(t0);
        assert!(matches!(&a[..], [Action::Send(Message::Open(_))]));
        assert_eq!(f.state(), State::OpenSent);
        assert_eq!(
            f.received(t0, peer_open(PEER, hold)),
            vec![Action::Send(Message::Keepalive)]
        );
        assert_eq!(f.state(), State::OpenConfirm);
        assert_eq!(
            f.received(t0, Message::Keepalive),
            vec![Action::Established]
        );
        assert_eq!(f.state(), State::Established);
        f
    }

    #[test]
    fn the_open_we_send_carries_our_parameters() {
        let t0 = Instant::now();
        let mut c = cfg();
        c.local_as = 4_200_000_001;
        let mut f = Fsm::new(c, t0);
        f.start(t0);
        let [Action::Send(Message::Open(o))] = &f.connected(t0)[..] else {
            panic!("no OPEN")
        };
        assert_eq!(o.asn(), 4_200_000_001);
        assert_eq!(o.my_as, 23456);
        assert_eq!(o.hold_time, 9);
        assert_eq!(o.bgp_id, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(
            o.families(),
            vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST]
        );
        assert!(o.capabilities.contains(&Capability::RouteRefresh));
    }

    #[test]
    fn hold_time_is_the_smaller_proposal_and_keepalive_a_third() {
        let t0 = Instant::now();
        let f = established(cfg(), t0, 30);
        let n = f.negotiated().unwrap();
        assert_eq!((n.hold_time, n.keepalive), (9, 3));
        assert_eq!(n.families, vec![Family::IPV4_UNICAST]);
        assert!(n.four_octet_as && n.route_refresh);
        assert_eq!(n.peer_as, PEER);
        let f = established(cfg(), t0, 3);
        let n = f.negotiated().unwrap();
        assert_eq!((n.hold_time, n.keepalive), (3, 1));
        // A configured keepalive above a third of the hold time is capped.
        let mut c = cfg();
        c.keepalive = Some(8);
        let n = established(c.clone(), t0, 9).negotiated().cloned().unwrap();
        assert_eq!(n.keepalive, 3);
        c.keepalive = Some(1);
        let n = established(c, t0, 9).negotiated().cloned().unwrap();
        assert_eq!(n.keepalive, 1);
    }

    #[test]
    fn keepalives_go_out_on_time_and_updates_count_as_keepalives() {
        let t0 = Instant::now();
        let mut f = established(cfg(), t0, 9);
        assert_eq!(f.poll(t0 + secs(2.9)), vec![]);
        assert_eq!(
            f.poll(t0 + secs(3.0)),
            vec![Action::Send(Message::Keepalive)]
        );
        assert_eq!(f.poll(t0 + secs(4.0)), vec![]);
        // An UPDATE at 5 s pushes the next keepalive to 8 s.
        f.sent_update(t0 + secs(5.0));
        assert_eq!(f.poll(t0 + secs(6.5)), vec![]);
        assert_eq!(
            f.poll(t0 + secs(8.0)),
            vec![Action::Send(Message::Keepalive)]
        );
    }

    #[test]
    fn hold_timer_expiry_sends_a_notification_and_retries() {
        let t0 = Instant::now();
        let mut f = established(cfg(), t0, 9);
        // The peer's keepalive at 5 s restarts the hold timer.
        f.received(t0 + secs(5.0), Message::Keepalive);
        let a = f.poll(t0 + secs(13.9));
        assert!(!a.contains(&Action::Close), "{a:?}");
        assert_eq!(f.state(), State::Established);
        let a = f.poll(t0 + secs(14.0));
        assert!(sends_notification(&a, 4, 0), "{a:?}");
        assert_eq!(f.state(), State::Idle);
        assert_eq!(f.last_error(), Some("hold timer expired"));
        assert_eq!(f.negotiated(), None);
        // Automatic restart after the first, short, backoff.
        assert_eq!(f.next_deadline(), Some(t0 + secs(15.0)));
        assert_eq!(f.poll(t0 + secs(15.0)), vec![Action::Connect]);
        assert_eq!(f.state(), State::Connect);
    }

    #[test]
    fn hold_time_zero_means_no_timers() {
        let t0 = Instant::now();
        let mut c = cfg();
        c.hold_time = 0;
        let mut f = established(c, t0, 90);
        let n = f.negotiated().unwrap();
        assert_eq!((n.hold_time, n.keepalive), (0, 0));
        assert_eq!(f.next_deadline(), None);
        assert_eq!(f.poll(t0 + secs(100_000.0)), vec![]);
        assert_eq!(f.state(), State::Established);
    }

    #[test]
    fn opens_that_do_not_match_the_configuration_are_refused() {
        let t0 = Instant::now();
        // Wrong peer AS (also 4-octet ASNs are compared whole).
        for asn in [65002, 4_200_065_000] {
            let mut f = Fsm::new(cfg(), t0);
            f.start(t0);
            f.connected(t0);
            let a = f.received(t0, peer_open(asn, 9));
            assert!(sends_notification(&a, 2, 2), "{a:?}");
            assert_eq!(f.state(), State::Idle);
            assert!(f.last_error().unwrap().contains(&asn.to_string()));
        }
        // A 4-octet remote AS against a peer without the capability:
        // it only shows AS_TRANS.
        let mut c = cfg();
        c.remote_as = 4_200_000_000;
        let mut f = Fsm::new(c, t0);
        f.start(t0);
        f.connected(t0);
        let mut o = Open::new(4_200_000_000, 9, Ipv4Addr::new(1, 1, 1, 1), &[]);
        o.capabilities.clear();
        let a = f.received(t0, Message::Open(o.clone()));
        assert!(sends_notification(&a, 2, 2), "{a:?}");
        // With the capability it is accepted.
        let mut f = Fsm::new(cfg_with_remote(4_200_000_000), t0);
        f.start(t0);
        f.connected(t0);
        o.capabilities.push(Capability::FourOctetAs(4_200_000_000));
        assert_eq!(
            f.received(t0, Message::Open(o)),
            vec![Action::Send(Message::Keepalive)]
        );
        // iBGP with our own identifier.
        let mut f = Fsm::new(cfg_with_remote(ME), t0);
        f.start(t0);
        f.connected(t0);
        let o = Open::new(ME, 9, Ipv4Addr::new(10, 0, 0, 2), &[]);
        let a = f.received(t0, Message::Open(o));
        assert!(sends_notification(&a, 2, 3), "{a:?}");
    }

    fn cfg_with_remote(remote_as: u32) -> FsmConfig {
        let mut c = cfg();
        c.remote_as = remote_as;
        c
    }

    #[test]
    fn unexpected_messages_are_fsm_errors() {
        let t0 = Instant::now();
        let mut f = Fsm::new(cfg(), t0);
        f.start(t0);
        f.connected(t0);
        let a = f.received(t0, Message::Keepalive);
        assert!(sends_notification(&a, 5, 1), "{a:?}");
        let mut f = Fsm::new(cfg(), t0);
        f.start(t0);
        f.connected(t0);
        f.received(t0, peer_open(PEER, 9));
        let a = f.received(t0, Message::Update(Update::default()));
        assert!(sends_notification(&a, 5, 2), "{a:?}");
        let mut f = established(cfg(), t0, 9);
        let a = f.received(t0, peer_open(PEER, 9));
        assert!(sends_notification(&a, 5, 3), "{a:?}");
    }

    #[test]
    fn notifications_received_end_the_session_with_their_reason() {
        let t0 = Instant::now();
        let mut f = established(cfg(), t0, 9);
        let a = f.received(
            t0,
            Message::Notification(Notification::cease(2, Some("bye"))),
        );
        assert_eq!(a, vec![Action::Close]);
        assert_eq!(f.state(), State::Idle);
        assert_eq!(
            f.last_error(),
            Some("NOTIFICATION received: Cease/Administrative Shutdown: \"bye\"")
        );
    }

    #[test]
    fn decode_errors_reset_or_are_survived() {
        let t0 = Instant::now();
        let mut f = established(cfg(), t0, 9);
        let survivable = DecodeError::Update {
            subcode: 6,
            reason: "ORIGIN 3".into(),
            data: vec![],
            reset: false,
        };
        // Survived, and it counts as traffic for the hold timer.
        assert_eq!(f.decode_failed(t0 + secs(8.0), &survivable), vec![]);
        assert_eq!(
            f.poll(t0 + secs(9.5))
                .iter()
                .filter(|a| **a == Action::Close)
                .count(),
            0
        );
        assert_eq!(f.state(), State::Established);
        let a = f.decode_failed(t0 + secs(10.0), &DecodeError::BadMarker);
        assert!(sends_notification(&a, 1, 1), "{a:?}");
        assert_eq!(f.state(), State::Idle);
        assert!(f
            .last_error()
            .unwrap()
            .contains("Connection Not Synchronized"));
    }

    #[test]
    fn route_refresh_of_a_negotiated_family_resends_it() {
        let t0 = Instant::now();
        let mut f = established(cfg(), t0, 9);
        let rr = |family| Message::RouteRefresh(RouteRefresh { family, subtype: 0 });
        assert_eq!(
            f.received(t0, rr(Family::IPV4_UNICAST)),
            vec![Action::Refresh(Family::IPV4_UNICAST)]
        );
        // IPv6 was not negotiated with this peer.
        assert_eq!(f.received(t0, rr(Family::IPV6_UNICAST)), vec![]);
        // An End-of-RIB-Refresh marker is no request.
        let eorr = Message::RouteRefresh(RouteRefresh {
            family: Family::IPV4_UNICAST,
            subtype: 2,
        });
        assert_eq!(f.received(t0, eorr), vec![]);
        assert_eq!(f.state(), State::Established);
    }

    #[test]
    fn failed_connects_back_off_exponentially_up_to_the_cap() {
        let t0 = Instant::now();
        let mut f = Fsm::new(cfg(), t0);
        let mut t = t0;
        assert_eq!(f.start(t), vec![Action::Connect]);
        let mut waits = vec![];
        for _ in 0..6 {
            assert_eq!(
                f.connection_failed(t, "connect: refused".into()),
                vec![Action::Close]
            );
            assert_eq!(f.state(), State::Active);
            let next = f.next_deadline().unwrap();
            waits.push((next - t).as_secs());
            assert_eq!(f.poll(next - secs(0.001)), vec![]);
            t = next;
            assert_eq!(f.poll(t), vec![Action::Connect]);
        }
        assert_eq!(waits, vec![1, 2, 4, 5, 5, 5]);
        assert_eq!(f.last_error(), Some("connect: refused"));
        // Reaching Established resets the backoff.
        f.connected(t);
        f.received(t, peer_open(PEER, 9));
        f.received(t, Message::Keepalive);
        f.connection_failed(t, "read: reset".into());
        assert_eq!(f.state(), State::Idle);
        assert_eq!(f.next_deadline(), Some(t + secs(1.0)));
    }

    #[test]
    fn a_connect_that_hangs_is_abandoned_after_the_connect_retry_time() {
        let t0 = Instant::now();
        let mut f = Fsm::new(cfg(), t0);
        f.start(t0);
        assert_eq!(f.poll(t0 + secs(4.9)), vec![]);
        assert_eq!(f.poll(t0 + secs(5.0)), vec![Action::Close]);
        assert_eq!(f.state(), State::Active);
        assert_eq!(f.last_error(), Some("connect: timed out"));
        assert_eq!(f.poll(t0 + secs(6.0)), vec![Action::Connect]);
    }

    #[test]
    fn the_open_must_come_within_four_minutes() {
        let t0 = Instant::now();
        let mut f = Fsm::new(cfg(), t0);
        f.start(t0);
        f.connected(t0);
        assert_eq!(f.poll(t0 + secs(239.0)), vec![]);
        let a = f.poll(t0 + secs(240.0));
        assert!(sends_notification(&a, 4, 0), "{a:?}");
    }

    #[test]
    fn stop_says_goodbye_only_on_a_connection_and_stays_down() {
        let t0 = Instant::now();
        let mut f = established(cfg(), t0, 9);
        let bye = Notification::cease(2, None);
        let a = f.stop(t0, bye.clone());
        assert_eq!(
            a,
            vec![
                Action::Send(Message::Notification(bye.clone())),
                Action::Close
            ]
        );
        assert_eq!(f.state(), State::Idle);
        assert_eq!(f.next_deadline(), None);
        assert_eq!(f.poll(t0 + secs(1000.0)), vec![]);

        let mut f = Fsm::new(cfg(), t0);
        f.start(t0);
        assert_eq!(f.stop(t0, bye.clone()), vec![Action::Close]);
        let mut f = Fsm::new(cfg(), t0);
        f.start(t0);
        f.connection_failed(t0, "refused".into());
        assert_eq!(f.stop(t0, bye), vec![]);
        assert_eq!(f.next_deadline(), None);
    }

    #[test]
    fn a_connection_lost_in_open_sent_goes_active_and_in_established_idle() {
        let t0 = Instant::now();
        let mut f = Fsm::new(cfg(), t0);
        f.start(t0);
        f.connected(t0);
        f.connection_failed(t0, "connection closed by peer".into());
        assert_eq!(f.state(), State::Active);
        let mut f = established(cfg(), t0, 9);
        f.connection_failed(t0 + secs(1.0), "connection closed by peer".into());
        assert_eq!(f.state(), State::Idle);
        assert_eq!(f.since(), t0 + secs(1.0));
        assert_eq!(f.last_error(), Some("connection closed by peer"));
    }
}
