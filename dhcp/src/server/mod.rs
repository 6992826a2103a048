//! The DHCP server's decision core: RFC 2131 for one pool, without I/O.
//!
//! [`decide`] reads lease state through a [`LeaseView`] and returns what
//! should change ([`LeaseChange`]) and what to answer ([`Reply`]). It
//! writes nothing.
//!
//! # Contract for the caller (netd), with several writers
//!
//! Every node answers its own VMs from the same server address, and the
//! leases live in one shared store. For each parsed client message:
//!
//! 1. Build the [`LeaseView`] from one consistent snapshot of the store
//!    (one etcd revision R) and call [`decide`] with the current unix time
//!    (nodes' clocks must agree to a few seconds: expiry is compared across
//!    nodes) and this node's name.
//! 2. If [`Decision::change`] is set, commit it in one transaction that
//!    succeeds only if nothing the decision read changed since R: every
//!    address record in [`Depends::ips`] and in [`LeaseChange::touched`],
//!    and the per-MAC index for [`Depends::macs`] if the store keeps one
//!    (etcd: `mod_revision(key) <= R` for each; absent keys compare as 0).
//!    A coarser but correct alternative is one version key per pool, bumped
//!    by every lease write and compared in every transaction.
//! 3. Only after the commit succeeded, send [`Decision::reply`] (built with
//!    [`Reply::to_frame`]). If the transaction failed, re-read and decide
//!    again (a few times at most; then drop the message: the client
//!    retransmits). Never send a reply whose change was not committed;
//!    the one relaxation is an OFFER of a fresh address (no record, nothing
//!    superseded): a node may keep it in memory only, because the REQUEST
//!    that follows commits the binding guarded by "address absent", so a
//!    competing offer elsewhere costs a NAK, never a shared address.
//! 4. A decision without a change (an OFFER of an existing binding, an ACK
//!    to INFORM, a NAK) is sent at once; one without a reply (RELEASE,
//!    DECLINE, silence) is only committed. Log [`Decision::reason`], as a
//!    warning when [`Reason::is_problem`] (pool exhausted, ...).
//!
//! Applying a change keeps one Offered/Bound record per MAC: Offer/Bind put
//! the record at the lease's address and delete `supersedes` in the same
//! transaction (see [`MemoryLeases::apply`] for the reference behaviour).
//! Expired records need no garbage collection for correctness: `decide`
//! treats them as free (keeping expired Bound records lets a returning
//! client get its old address back).

mod memory;
mod options;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode};
use furrow_api::resource::Ipv4PoolConfig;
use furrow_api::MacAddr;

use crate::codec;
use crate::frame::{self, Addressing, BuildError, Delivery, ServerAddr};

pub use memory::MemoryLeases;

/// Seconds an OFFER holds its address for the client to REQUEST it.
pub const DEFAULT_OFFER_HOLD: u32 = 60;
/// Seconds a declined address stays out of use (someone else answers ARP
/// for it; give the operator time to find out who).
pub const DEFAULT_DECLINE_HOLD: u32 = 600;

/// One pool's server configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub pool: Ipv4PoolConfig,
    /// The anycast server MAC (the same on every node).
    pub server_mac: [u8; 6],
    pub offer_hold: u32,
    pub decline_hold: u32,
    /// Also find a client's lease by its client identifier (option 61)
    /// when its MAC has none. Off by default: cloned VM images share a
    /// machine-id and so a DUID-based client identifier, and VMs are
    /// identified by their MAC (the reservation key) anyway.
    pub match_client_id: bool,
}

impl ServerConfig {
    pub fn new(pool: Ipv4PoolConfig, server_mac: [u8; 6]) -> Self {
        ServerConfig {
            pool,
            server_mac,
            offer_hold: DEFAULT_OFFER_HOLD,
            decline_hold: DEFAULT_DECLINE_HOLD,
            match_client_id: false,
        }
    }

    pub fn server_addr(&self) -> ServerAddr {
        ServerAddr {
            mac: MacAddr(self.server_mac),
            ip: self.pool.server_ip,
        }
    }

    /// A host address of the subnet: not the network or broadcast address.
    fn host(&self, ip: Ipv4Addr) -> bool {
        let c = self.pool.cidr;
        c.contains(&ip) && (c.prefix_len() >= 31 || (ip != c.network() && ip != c.broadcast()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LeaseState {
    /// Offered, waiting for the client's REQUEST; held until `expires_at`.
    Offered,
    /// Acknowledged: the client uses the address until `expires_at`.
    Bound,
    /// The client found the address in use (DECLINE); nobody gets it until
    /// `expires_at`.
    Declined,
}

/// A lease record, keyed by `ip` in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    pub client_id: Option<Vec<u8>>,
    pub hostname: Option<String>,
    pub state: LeaseState,
    /// Unix seconds.
    pub expires_at: u64,
    /// The node whose responder made the decision (diagnostics only).
    pub node: String,
}

impl Lease {
    pub fn active(&self, now: u64) -> bool {
        self.expires_at > now
    }
}

/// Read access to lease state and reservations, as of one snapshot.
///
/// Contract: the store holds at most one Offered/Bound record per MAC
/// (netd keeps it so by applying [`LeaseChange`]s as documented there);
/// Declined records are keyed by address and never returned by `by_mac`.
/// Records may be expired: `decide` compares `expires_at` with `now`
/// itself, so netd need not garbage-collect before asking.
pub trait LeaseView {
    /// The MAC's Offered or Bound record (expired or not), if any.
    fn by_mac(&self, mac: MacAddr) -> Option<Lease>;
    /// The record for the address, of any state, expired or not.
    fn by_ip(&self, ip: Ipv4Addr) -> Option<Lease>;
    /// The address reserved for this MAC on this pool's network.
    fn reserved_ip(&self, mac: MacAddr) -> Option<Ipv4Addr>;
    /// The MAC an address is reserved for.
    fn reserved_for(&self, ip: Ipv4Addr) -> Option<MacAddr>;
    /// Addresses worth trying for a new client, best first (pool order,
    /// never-used before expired). May be a superset: `decide` checks each
    /// (pool membership, reservations, records) and takes the first that
    /// fits, so precision only saves look-ups.
    fn free_candidates(&self) -> impl Iterator<Item = Ipv4Addr> + '_;
    /// Only used when [`ServerConfig::match_client_id`] is set.
    fn by_client_id(&self, _client_id: &[u8]) -> Option<Lease> {
        None
    }
}

/// What the store should do, as one atomic transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseChange {
    /// Put `lease` (state Offered) at `lease.ip`; delete the record at
    /// `supersedes` (the same MAC's previous address) in the same
    /// transaction.
    Offer {
        lease: Lease,
        supersedes: Option<Ipv4Addr>,
    },
    /// Put `lease` (state Bound) at `lease.ip`; delete `supersedes` likewise.
    Bind {
        lease: Lease,
        supersedes: Option<Ipv4Addr>,
    },
    /// Free the address (delete the record, or keep it expired if netd
    /// wants the history).
    Release { ip: Ipv4Addr, mac: MacAddr },
    /// Put a Declined record for `ip` (mac = the decliner) until `until`.
    Decline {
        ip: Ipv4Addr,
        mac: MacAddr,
        until: u64,
    },
}

impl LeaseChange {
    /// The address records the transaction writes or deletes.
    pub fn touched(&self) -> Vec<Ipv4Addr> {
        match self {
            LeaseChange::Offer { lease, supersedes } | LeaseChange::Bind { lease, supersedes } => {
                std::iter::once(lease.ip).chain(*supersedes).collect()
            }
            LeaseChange::Release { ip, .. } | LeaseChange::Decline { ip, .. } => vec![*ip],
        }
    }
}

/// A reply to send once the change (if any) is committed.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub message: Message,
    pub delivery: Delivery,
    /// Largest IP datagram the client accepts (option 57, at least 576,
    /// capped by the network's MTU).
    pub max_size: usize,
}

impl Reply {
    /// The Ethernet frame for this reply to a request that arrived with
    /// `request` addressing.
    pub fn to_frame(
        &self,
        server: ServerAddr,
        request: &Addressing,
    ) -> Result<Vec<u8>, BuildError> {
        frame::build_reply(server, request, &self.message, self.delivery, self.max_size)
    }

    pub fn message_type(&self) -> Option<MessageType> {
        codec::msg_type(&self.message)
    }
}

/// The lease records a decision read. A transaction that commits
/// [`Decision::change`] must fail if any of them changed since the view's
/// snapshot (with etcd: `mod_revision(key) <= snapshot revision` for each).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Depends {
    /// Address records read (including ones found absent).
    pub ips: BTreeSet<Ipv4Addr>,
    /// MACs whose record was looked up (the per-MAC index, if netd keeps one).
    pub macs: BTreeSet<MacAddr>,
    pub client_ids: BTreeSet<Vec<u8>>,
}

/// Where an OFFER's address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferSource {
    Reservation,
    ExistingLease,
    Requested,
    Pool,
}

/// Which REQUEST state an ACK or NAK answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestState {
    Selecting,
    InitReboot,
    /// RENEWING or REBINDING (ciaddr set; they differ only in unicast vs
    /// broadcast, which needs no different answer).
    Renewing,
}

/// Why an address cannot go to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    NotInSubnet,
    /// The server's or router's own address.
    Infrastructure,
    /// Inside the subnet but outside the pool range (or excluded), and not
    /// reserved for this client.
    OutsidePool,
    ReservedForOther(MacAddr),
    /// The client has a reservation for another address.
    ClientReserved(Ipv4Addr),
    Taken(MacAddr),
    Declined,
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unusable::NotInSubnet => write!(f, "not in the subnet"),
            Unusable::Infrastructure => write!(f, "the server's or router's address"),
            Unusable::OutsidePool => write!(f, "outside the pool"),
            Unusable::ReservedForOther(m) => write!(f, "reserved for {m}"),
            Unusable::ClientReserved(ip) => write!(f, "the client's reserved address is {ip}"),
            Unusable::Taken(m) => write!(f, "leased to {m}"),
            Unusable::Declined => write!(f, "declined (in use by an unknown host)"),
        }
    }
}

/// Why `decide` did what it did; netd logs it (see [`Reason::is_problem`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    Offer(OfferSource),
    Ack(RequestState),
    AckInform,
    Nak(RequestState, Unusable),
    /// The client's notion of its address differs from our binding.
    NakNotYourLease {
        bound: Ipv4Addr,
    },
    /// SELECTING with another server's identifier.
    OtherServerSelected {
        server: Ipv4Addr,
        released_offer: bool,
    },
    /// INIT-REBOOT/RENEWING for an address outside the pool with no record:
    /// RFC 2131 4.3.2 says stay silent (another server may own it).
    SilentNoRecord(Ipv4Addr),
    Released,
    Declined,
    PoolExhausted,
    ReservationUnavailable {
        ip: Ipv4Addr,
        why: Unusable,
    },
    ReplyTooLarge {
        max: usize,
    },
    NotARequest,
    NotEthernet,
    BadClientMac,
    NoMessageType,
    UnsupportedMessageType(u8),
    MissingRequestedAddress,
    MissingCiaddr,
    /// DECLINE/RELEASE/REQUEST naming another server.
    NotForUs(Ipv4Addr),
    /// RELEASE/DECLINE of an address the client does not hold.
    NotTheHolder(Ipv4Addr),
    RelayFromOtherNetwork(Ipv4Addr),
}

impl Reason {
    /// Worth a warning in netd's log: the operator may have to act.
    pub fn is_problem(&self) -> bool {
        matches!(
            self,
            Reason::PoolExhausted
                | Reason::ReservationUnavailable { .. }
                | Reason::ReplyTooLarge { .. }
                | Reason::Declined
                | Reason::RelayFromOtherNetwork(_)
        )
    }

    /// A stable short name (metrics label).
    pub fn name(&self) -> &'static str {
        match self {
            Reason::Offer(_) => "offer",
            Reason::Ack(_) => "ack",
            Reason::AckInform => "ack_inform",
            Reason::Nak(..) | Reason::NakNotYourLease { .. } => "nak",
            Reason::OtherServerSelected { .. } => "other_server_selected",
            Reason::SilentNoRecord(_) => "silent_no_record",
            Reason::Released => "released",
            Reason::Declined => "declined",
            Reason::PoolExhausted => "pool_exhausted",
            Reason::ReservationUnavailable { .. } => "reservation_unavailable",
            Reason::ReplyTooLarge { .. } => "reply_too_large",
            Reason::NotARequest => "not_a_request",
            Reason::NotEthernet => "not_ethernet",
            Reason::BadClientMac => "bad_client_mac",
            Reason::NoMessageType => "no_message_type",
            Reason::UnsupportedMessageType(_) => "unsupported_message_type",
            Reason::MissingRequestedAddress => "missing_requested_address",
            Reason::MissingCiaddr => "missing_ciaddr",
            Reason::NotForUs(_) => "not_for_us",
            Reason::NotTheHolder(_) => "not_the_holder",
            Reason::RelayFromOtherNetwork(_) => "relay_from_other_network",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Offer(s) => write!(f, "offer ({s:?})"),
            Reason::Ack(s) => write!(f, "ack ({s:?})"),
            Reason::AckInform => write!(f, "ack to INFORM"),
            Reason::Nak(s, why) => write!(f, "nak ({s:?}): requested address {why}"),
            Reason::NakNotYourLease { bound } => {
                write!(f, "nak: the client's address is {bound}")
            }
            Reason::OtherServerSelected {
                server,
                released_offer,
            } => write!(
                f,
                "client selected server {server}{}",
                if *released_offer {
                    "; our offer released"
                } else {
                    ""
                }
            ),
            Reason::SilentNoRecord(ip) => {
                write!(
                    f,
                    "no record of the client and {ip} is outside the pool: silent"
                )
            }
            Reason::Released => write!(f, "released"),
            Reason::Declined => write!(f, "client declined the address: in use by another host"),
            Reason::PoolExhausted => write!(f, "pool exhausted: no address to offer"),
            Reason::ReservationUnavailable { ip, why } => {
                write!(f, "reserved address {ip} cannot be handed out: {why}")
            }
            Reason::ReplyTooLarge { max } => {
                write!(f, "reply does not fit the client's {max}-byte maximum")
            }
            Reason::NotARequest => write!(f, "not a BOOTREQUEST"),
            Reason::NotEthernet => write!(f, "hardware type/length is not Ethernet"),
            Reason::BadClientMac => write!(f, "client hardware address is zero or multicast"),
            Reason::NoMessageType => write!(f, "no DHCP message type (BOOTP is not served)"),
            Reason::UnsupportedMessageType(t) => write!(f, "message type {t} is not served"),
            Reason::MissingRequestedAddress => write!(f, "requested address option missing"),
            Reason::MissingCiaddr => write!(f, "ciaddr missing"),
            Reason::NotForUs(s) => write!(f, "addressed to server {s}"),
            Reason::NotTheHolder(ip) => write!(f, "client does not hold {ip}"),
            Reason::RelayFromOtherNetwork(g) => {
                write!(f, "relayed from {g}, outside this pool's subnet")
            }
        }
    }
}

/// The outcome of one client message.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub change: Option<LeaseChange>,
    pub reply: Option<Reply>,
    pub reason: Reason,
    pub depends: Depends,
}

impl Decision {
    fn ignore(reason: Reason) -> Self {
        Decision {
            change: None,
            reply: None,
            reason,
            depends: Depends::default(),
        }
    }
}

/// Records what `decide` reads, for [`Depends`].
struct Recorder<'a, V: LeaseView> {
    view: &'a V,
    depends: RefCell<Depends>,
}

impl<'a, V: LeaseView> Recorder<'a, V> {
    fn by_mac(&self, mac: MacAddr) -> Option<Lease> {
        self.depends.borrow_mut().macs.insert(mac);
        self.view
            .by_mac(mac)
            .filter(|l| l.state != LeaseState::Declined && l.mac == mac)
    }
    fn by_ip(&self, ip: Ipv4Addr) -> Option<Lease> {
        self.depends.borrow_mut().ips.insert(ip);
        self.view.by_ip(ip).filter(|l| l.ip == ip)
    }
    fn by_client_id(&self, id: &[u8]) -> Option<Lease> {
        self.depends.borrow_mut().client_ids.insert(id.to_vec());
        self.view
            .by_client_id(id)
            .filter(|l| l.state != LeaseState::Declined)
    }
}

/// Everything about the request that the rules need.
struct Ctx<'a, V: LeaseView> {
    cfg: &'a ServerConfig,
    view: Recorder<'a, V>,
    req: &'a Message,
    mac: MacAddr,
    now: u64,
    node: &'a str,
}

/// Decides the answer to one client message. Pure: same inputs, same
/// decision. Never panics, whatever `req` holds.
pub fn decide(
    cfg: &ServerConfig,
    view: &impl LeaseView,
    req: &Message,
    now: u64,
    node: &str,
) -> Decision {
    if req.opcode() != Opcode::BootRequest {
        return Decision::ignore(Reason::NotARequest);
    }
    let Some(chaddr) = codec::ethernet_chaddr(req) else {
        return Decision::ignore(Reason::NotEthernet);
    };
    let mac = MacAddr(chaddr);
    if !mac.is_valid_unicast() {
        return Decision::ignore(Reason::BadClientMac);
    }
    let giaddr = req.giaddr();
    if !giaddr.is_unspecified() && !cfg.pool.cidr.contains(&giaddr) {
        // One pool per responder: a relay from elsewhere is not ours.
        return Decision::ignore(Reason::RelayFromOtherNetwork(giaddr));
    }
    let ctx = Ctx {
        cfg,
        view: Recorder {
            view,
            depends: RefCell::new(Depends::default()),
        },
        req,
        mac,
        now,
        node,
    };
    let mut d = match codec::msg_type(req) {
        None => Decision::ignore(Reason::NoMessageType),
        Some(MessageType::Discover) => ctx.discover(),
        Some(MessageType::Request) => ctx.request(),
        Some(MessageType::Decline) => ctx.decline(),
        Some(MessageType::Release) => ctx.release(),
        Some(MessageType::Inform) => ctx.inform(),
        Some(t) => Decision::ignore(Reason::UnsupportedMessageType(u8::from(t))),
    };
    d.depends = ctx.view.depends.into_inner();
    d
}

impl<V: LeaseView> Ctx<'_, V> {
    /// The client's current Offered/Bound record.
    fn current(&self) -> Option<Lease> {
        let by_mac = self.view.by_mac(self.mac);
        if by_mac.is_some() || !self.cfg.match_client_id {
            return by_mac;
        }
        let id = codec::client_id(self.req)?;
        self.view.by_client_id(id)
    }

    /// Whether `ip` may be held by this client now; Ok carries the record
    /// currently at `ip`, if any.
    fn usable(&self, ip: Ipv4Addr) -> Result<Option<Lease>, Unusable> {
        self.check(ip, true)
    }

    fn check(&self, ip: Ipv4Addr, record: bool) -> Result<Option<Lease>, Unusable> {
        let pool = &self.cfg.pool;
        if !self.cfg.host(ip) {
            return Err(Unusable::NotInSubnet);
        }
        if ip == pool.server_ip || Some(ip) == pool.router {
            return Err(Unusable::Infrastructure);
        }
        let reserved_for = self.view.view.reserved_for(ip);
        match reserved_for {
            Some(m) if m != self.mac => return Err(Unusable::ReservedForOther(m)),
            _ => {}
        }
        if let Some(r) = self.view.view.reserved_ip(self.mac) {
            if r != ip {
                return Err(Unusable::ClientReserved(r));
            }
        }
        if reserved_for.is_none() && !pool.in_pool(ip) {
            return Err(Unusable::OutsidePool);
        }
        let rec = if record {
            self.view.by_ip(ip)
        } else {
            self.view.view.by_ip(ip).filter(|l| l.ip == ip)
        };
        if let Some(l) = &rec {
            if l.active(self.now) {
                if l.state == LeaseState::Declined {
                    return Err(Unusable::Declined);
                }
                if l.mac != self.mac {
                    return Err(Unusable::Taken(l.mac));
                }
            }
        }
        Ok(rec)
    }

    /// A record for this client; identity fields the message lacks (a
    /// renewal often carries no hostname) are kept from `prev`.
    fn new_lease(&self, ip: Ipv4Addr, state: LeaseState, ttl: u64, prev: Option<&Lease>) -> Lease {
        Lease {
            ip,
            mac: self.mac,
            client_id: codec::client_id(self.req)
                .map(<[u8]>::to_vec)
                .or_else(|| prev.and_then(|l| l.client_id.clone())),
            hostname: codec::hostname(self.req)
                .map(str::to_string)
                .or_else(|| prev.and_then(|l| l.hostname.clone())),
            state,
            expires_at: self.now.saturating_add(ttl),
            node: self.node.to_string(),
        }
    }

    fn discover(&self) -> Decision {
        let current = self.current();
        if let Some(r) = self.view.view.reserved_ip(self.mac) {
            // A MAC with a reservation gets that address or nothing.
            return match self.usable(r) {
                Ok(_) => self.offer(r, OfferSource::Reservation, current),
                Err(why) => Decision::ignore(Reason::ReservationUnavailable { ip: r, why }),
            };
        }
        if let Some(l) = &current {
            if self.usable(l.ip).is_ok() {
                return self.offer(l.ip, OfferSource::ExistingLease, current);
            }
        }
        if let Some(ip) = codec::requested_ip(self.req) {
            if self.usable(ip).is_ok() {
                return self.offer(ip, OfferSource::Requested, current);
            }
        }
        // Candidates are checked without recording: only the chosen one
        // matters to the transaction.
        let candidate = self
            .view
            .view
            .free_candidates()
            .find(|&ip| self.check(ip, false).is_ok());
        match candidate {
            Some(ip) => {
                // Record the chosen address as read.
                let _ = self.view.by_ip(ip);
                self.offer(ip, OfferSource::Pool, current)
            }
            None => Decision::ignore(Reason::PoolExhausted),
        }
    }

    fn offer(&self, ip: Ipv4Addr, source: OfferSource, current: Option<Lease>) -> Decision {
        let keep_binding = current
            .as_ref()
            .is_some_and(|l| l.ip == ip && l.state == LeaseState::Bound && l.active(self.now));
        let change = (!keep_binding).then(|| LeaseChange::Offer {
            lease: self.new_lease(
                ip,
                LeaseState::Offered,
                u64::from(self.cfg.offer_hold),
                current.as_ref(),
            ),
            supersedes: current.map(|l| l.ip).filter(|&old| old != ip),
        });
        self.reply(MessageType::Offer, ip, change, Reason::Offer(source))
    }

    fn request(&self) -> Decision {
        let ciaddr = self.req.ciaddr();
        if let Some(sid) = codec::server_id(self.req) {
            if sid != self.cfg.pool.server_ip {
                // The client took another server's offer: drop ours.
                let ours = self
                    .current()
                    .filter(|l| l.state == LeaseState::Offered && l.mac == self.mac);
                let released_offer = ours.is_some();
                return Decision {
                    change: ours.map(|l| LeaseChange::Release {
                        ip: l.ip,
                        mac: self.mac,
                    }),
                    reply: None,
                    reason: Reason::OtherServerSelected {
                        server: sid,
                        released_offer,
                    },
                    depends: Depends::default(),
                };
            }
            let Some(ip) = codec::requested_ip(self.req) else {
                return Decision::ignore(Reason::MissingRequestedAddress);
            };
            return match self.usable(ip) {
                Ok(_) => self.ack(ip, RequestState::Selecting),
                Err(why) => self.nak(
                    RequestState::Selecting,
                    Reason::Nak(RequestState::Selecting, why),
                ),
            };
        }
        let (ip, state) = if !ciaddr.is_unspecified() {
            (ciaddr, RequestState::Renewing)
        } else if let Some(ip) = codec::requested_ip(self.req) {
            (ip, RequestState::InitReboot)
        } else {
            return Decision::ignore(Reason::MissingRequestedAddress);
        };
        // RFC 2131 4.3.2: first the network, then the client's notion of
        // its address.
        if !self.cfg.host(ip) {
            return self.nak(state, Reason::Nak(state, Unusable::NotInSubnet));
        }
        let current = self.current();
        if let Some(l) = &current {
            if l.ip != ip && l.state == LeaseState::Bound && l.active(self.now) {
                return self.nak(state, Reason::NakNotYourLease { bound: l.ip });
            }
        }
        match self.usable(ip) {
            Ok(_) => self.ack(ip, state),
            Err(Unusable::OutsidePool) if current.as_ref().is_none_or(|l| l.ip != ip) => {
                Decision::ignore(Reason::SilentNoRecord(ip))
            }
            Err(why) => self.nak(state, Reason::Nak(state, why)),
        }
    }

    fn ack(&self, ip: Ipv4Addr, state: RequestState) -> Decision {
        let current = self.current();
        let lease = self.new_lease(
            ip,
            LeaseState::Bound,
            u64::from(self.cfg.pool.lease_seconds()),
            current.as_ref(),
        );
        let change = LeaseChange::Bind {
            lease,
            supersedes: current.map(|l| l.ip).filter(|&old| old != ip),
        };
        self.reply(MessageType::Ack, ip, Some(change), Reason::Ack(state))
    }

    fn nak(&self, _state: RequestState, reason: Reason) -> Decision {
        let mut m = self.reply_header(Ipv4Addr::UNSPECIFIED);
        m.set_siaddr(Ipv4Addr::UNSPECIFIED);
        m.set_ciaddr(Ipv4Addr::UNSPECIFIED);
        m.clear_fname();
        if !self.req.giaddr().is_unspecified() {
            // RFC 2131 4.3.2: so the relay broadcasts it to the client.
            m.set_flags(Flags::default().set_broadcast());
        }
        // The wire text stays generic: the reason may name another VM's
        // MAC, which is not this client's business (netd logs the reason).
        let text = match &reason {
            Reason::Nak(_, Unusable::NotInSubnet) => "requested address is on the wrong network",
            Reason::NakNotYourLease { .. } => "requested address is not the one leased to you",
            _ => "requested address is not available to you",
        };
        let opts = options::nak_options(self.cfg, self.req, text);
        self.finish(m, opts, None, reason, true)
    }

    fn decline(&self) -> Decision {
        if let Some(sid) = codec::server_id(self.req) {
            if sid != self.cfg.pool.server_ip {
                return Decision::ignore(Reason::NotForUs(sid));
            }
        }
        let Some(ip) = codec::requested_ip(self.req) else {
            return Decision::ignore(Reason::MissingRequestedAddress);
        };
        // Only the holder may take an address out of use; otherwise any VM
        // could blackhole its neighbours' addresses.
        match self.view.by_ip(ip) {
            Some(l) if l.mac == self.mac && l.state != LeaseState::Declined => Decision {
                change: Some(LeaseChange::Decline {
                    ip,
                    mac: self.mac,
                    until: self.now.saturating_add(u64::from(self.cfg.decline_hold)),
                }),
                reply: None,
                reason: Reason::Declined,
                depends: Depends::default(),
            },
            _ => Decision::ignore(Reason::NotTheHolder(ip)),
        }
    }

    fn release(&self) -> Decision {
        if let Some(sid) = codec::server_id(self.req) {
            if sid != self.cfg.pool.server_ip {
                return Decision::ignore(Reason::NotForUs(sid));
            }
        }
        let ip = self.req.ciaddr();
        if ip.is_unspecified() {
            return Decision::ignore(Reason::MissingCiaddr);
        }
        match self.view.by_ip(ip) {
            Some(l) if l.mac == self.mac && l.state != LeaseState::Declined => Decision {
                change: Some(LeaseChange::Release { ip, mac: self.mac }),
                reply: None,
                reason: Reason::Released,
                depends: Depends::default(),
            },
            _ => Decision::ignore(Reason::NotTheHolder(ip)),
        }
    }

    fn inform(&self) -> Decision {
        // RFC 2131 4.3.5: configuration only; no lease, no yiaddr, and no
        // lease look-up.
        let m = self.reply_header(Ipv4Addr::UNSPECIFIED);
        let opts = options::config_options(self.cfg, self.req, MessageType::Ack, None);
        self.finish(m, opts, None, Reason::AckInform, false)
    }

    /// The reply's fixed fields (RFC 2131 table 3).
    fn reply_header(&self, yiaddr: Ipv4Addr) -> Message {
        let r = self.req;
        let mut m = Message::default();
        m.set_opcode(Opcode::BootReply)
            .set_xid(r.xid())
            .set_secs(0)
            .set_hops(0)
            .set_flags(r.flags())
            .set_ciaddr(r.ciaddr())
            .set_yiaddr(yiaddr)
            .set_siaddr(self.cfg.pool.next_server.unwrap_or(Ipv4Addr::UNSPECIFIED))
            .set_giaddr(r.giaddr())
            .set_chaddr(&self.mac.0);
        if let Some(f) = &self.cfg.pool.boot_file_name {
            // set_fname asserts on > 128; the API allows at most 127.
            if f.len() < 128 {
                m.set_fname_str(f);
            }
        }
        m
    }

    fn reply(
        &self,
        kind: MessageType,
        yiaddr: Ipv4Addr,
        change: Option<LeaseChange>,
        reason: Reason,
    ) -> Decision {
        let mut m = self.reply_header(yiaddr);
        if kind == MessageType::Offer {
            m.set_ciaddr(Ipv4Addr::UNSPECIFIED);
        }
        let opts = options::config_options(
            self.cfg,
            self.req,
            kind,
            Some(self.cfg.pool.lease_seconds()),
        );
        self.finish(m, opts, change, reason, false)
    }

    fn finish(
        &self,
        mut m: Message,
        opts: Vec<DhcpOption>,
        change: Option<LeaseChange>,
        reason: Reason,
        nak: bool,
    ) -> Decision {
        let max_size = options::max_size(self.cfg, self.req);
        let Some(opts) = options::fit(opts, max_size) else {
            return Decision::ignore(Reason::ReplyTooLarge { max: max_size });
        };
        for o in opts {
            m.opts_mut().insert(o);
        }
        let delivery = Delivery::for_reply(self.req, m.yiaddr(), nak);
        Decision {
            change,
            reply: Some(Reply {
                message: m,
                delivery,
                max_size,
            }),
            reason,
            depends: Depends::default(),
        }
    }
}

#[cfg(test)]
mod tests;
