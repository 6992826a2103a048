//! The BGP-4 wire format: RFC 4271 messages plus the extensions this
//! speaker negotiates or must understand: capabilities (RFC 5492),
//! multiprotocol IPv4/IPv6 unicast (RFC 4760), 4-octet AS numbers
//! (RFC 6793), route refresh (RFC 2918/7313), extended optional
//! parameters (RFC 9072, decode only) and the shutdown communication of
//! Cease notifications (RFC 9003).
//!
//! Every decoding failure is a [`DecodeError`] that knows the NOTIFICATION
//! RFC 4271 section 6 prescribes for it ([`DecodeError::notification`])
//! and whether the session must be reset or the UPDATE may be treated as
//! a withdraw (RFC 7606, [`DecodeError::resets_session`]). Nothing here
//! panics on input: lengths are checked before every read.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Length of the all-ones marker that starts every message.
pub const MARKER_LEN: usize = 16;
/// Marker, length and type.
pub const HEADER_LEN: usize = 19;
/// The largest message RFC 4271 allows (we do not negotiate RFC 8654).
pub const MAX_MESSAGE_LEN: usize = 4096;
/// The only BGP version there is.
pub const BGP_VERSION: u8 = 4;
/// Stands in for a 4-octet AS number in 2-octet fields (RFC 6793).
pub const AS_TRANS: u32 = 23456;

/// Message type codes.
pub mod msg_type {
    pub const OPEN: u8 = 1;
    pub const UPDATE: u8 = 2;
    pub const NOTIFICATION: u8 = 3;
    pub const KEEPALIVE: u8 = 4;
    pub const ROUTE_REFRESH: u8 = 5;
}

/// NOTIFICATION error codes and the subcodes this crate sends.
pub mod err {
    pub const HEADER: u8 = 1;
    pub const HEADER_NOT_SYNCHRONIZED: u8 = 1;
    pub const HEADER_BAD_LENGTH: u8 = 2;
    pub const HEADER_BAD_TYPE: u8 = 3;

    pub const OPEN: u8 = 2;
    pub const OPEN_UNSPECIFIC: u8 = 0;
    pub const OPEN_UNSUPPORTED_VERSION: u8 = 1;
    pub const OPEN_BAD_PEER_AS: u8 = 2;
    pub const OPEN_BAD_BGP_ID: u8 = 3;
    pub const OPEN_UNSUPPORTED_OPT_PARAM: u8 = 4;
    pub const OPEN_UNACCEPTABLE_HOLD_TIME: u8 = 6;

    pub const UPDATE: u8 = 3;
    pub const UPDATE_MALFORMED_ATTR_LIST: u8 = 1;
    pub const UPDATE_UNRECOGNIZED_WELL_KNOWN: u8 = 2;
    pub const UPDATE_MISSING_WELL_KNOWN: u8 = 3;
    pub const UPDATE_ATTR_FLAGS: u8 = 4;
    pub const UPDATE_ATTR_LENGTH: u8 = 5;
    pub const UPDATE_INVALID_ORIGIN: u8 = 6;
    pub const UPDATE_INVALID_NEXT_HOP: u8 = 8;
    pub const UPDATE_OPTIONAL_ATTR: u8 = 9;
    pub const UPDATE_INVALID_NETWORK: u8 = 10;
    pub const UPDATE_MALFORMED_AS_PATH: u8 = 11;

    pub const HOLD_TIMER_EXPIRED: u8 = 4;

    pub const FSM: u8 = 5;
    pub const FSM_UNEXPECTED_OPEN_SENT: u8 = 1;
    pub const FSM_UNEXPECTED_OPEN_CONFIRM: u8 = 2;
    pub const FSM_UNEXPECTED_ESTABLISHED: u8 = 3;

    pub const CEASE: u8 = 6;
    pub const CEASE_ADMIN_SHUTDOWN: u8 = 2;
    pub const CEASE_PEER_DECONFIGURED: u8 = 3;
    pub const CEASE_ADMIN_RESET: u8 = 4;
    pub const CEASE_OTHER_CONFIG_CHANGE: u8 = 6;

    pub const ROUTE_REFRESH: u8 = 7;
    pub const ROUTE_REFRESH_INVALID_LENGTH: u8 = 1;
}

/// Path attribute type codes.
pub mod attr {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MULTI_EXIT_DISC: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const AGGREGATOR: u8 = 7;
    pub const COMMUNITIES: u8 = 8;
    pub const MP_REACH_NLRI: u8 = 14;
    pub const MP_UNREACH_NLRI: u8 = 15;
    pub const AS4_PATH: u8 = 17;
    pub const AS4_AGGREGATOR: u8 = 18;
    pub const LARGE_COMMUNITIES: u8 = 32;

    pub const FLAG_OPTIONAL: u8 = 0x80;
    pub const FLAG_TRANSITIVE: u8 = 0x40;
    pub const FLAG_PARTIAL: u8 = 0x20;
    pub const FLAG_EXTENDED_LENGTH: u8 = 0x10;
}

/// Capability codes (IANA registry).
pub mod cap {
    pub const MULTIPROTOCOL: u8 = 1;
    pub const ROUTE_REFRESH: u8 = 2;
    pub const FOUR_OCTET_AS: u8 = 65;
}

/// An address family / subsequent address family pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Family {
    pub afi: u16,
    pub safi: u8,
}

impl Family {
    pub const IPV4_UNICAST: Family = Family { afi: 1, safi: 1 };
    pub const IPV6_UNICAST: Family = Family { afi: 2, safi: 1 };

    /// The unicast family a prefix belongs to.
    pub fn of(prefix: &IpNet) -> Family {
        match prefix {
            IpNet::V4(_) => Family::IPV4_UNICAST,
            IpNet::V6(_) => Family::IPV6_UNICAST,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Family::IPV4_UNICAST => f.write_str("ipv4-unicast"),
            Family::IPV6_UNICAST => f.write_str("ipv6-unicast"),
            Family { afi, safi } => write!(f, "afi {afi}/safi {safi}"),
        }
    }
}

/// How AS numbers are laid out in AS_PATH and AGGREGATOR: 4 octets once
/// both sides announced the capability (RFC 6793), else 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CodecOptions {
    pub four_octet_as: bool,
}

/// A decoded BGP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(RouteRefresh),
}

impl Message {
    /// The message's name, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Open(_) => "OPEN",
            Message::Update(_) => "UPDATE",
            Message::Notification(_) => "NOTIFICATION",
            Message::Keepalive => "KEEPALIVE",
            Message::RouteRefresh(_) => "ROUTE-REFRESH",
        }
    }
}

/// An OPEN message. Capabilities are carried in one Capabilities optional
/// parameter when encoding; any number of them are accepted on decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    pub version: u8,
    /// The 2-octet "My Autonomous System" field (AS_TRANS for 4-octet ASNs).
    pub my_as: u16,
    pub hold_time: u16,
    pub bgp_id: Ipv4Addr,
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// The OPEN this speaker sends: every family it can carry, route
    /// refresh, and its AS as a 4-octet capability (AS_TRANS in the
    /// 2-octet field when it does not fit).
    pub fn new(asn: u32, hold_time: u16, bgp_id: Ipv4Addr, families: &[Family]) -> Open {
        let mut capabilities: Vec<Capability> = families
            .iter()
            .map(|f| Capability::Multiprotocol(*f))
            .collect();
        capabilities.push(Capability::RouteRefresh);
        capabilities.push(Capability::FourOctetAs(asn));
        Open {
            version: BGP_VERSION,
            my_as: u16::try_from(asn).unwrap_or(AS_TRANS as u16),
            hold_time,
            bgp_id,
            capabilities,
        }
    }

    /// The 4-octet AS from the capability, if the peer sent it.
    pub fn four_octet_as(&self) -> Option<u32> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::FourOctetAs(a) => Some(*a),
            _ => None,
        })
    }

    /// The sender's AS: the 4-octet capability wins over the 2-octet field.
    pub fn asn(&self) -> u32 {
        self.four_octet_as().unwrap_or(u32::from(self.my_as))
    }

    /// Families the sender announced. A peer announcing none speaks IPv4
    /// unicast only (RFC 4760 section 8).
    pub fn families(&self) -> Vec<Family> {
        let fams: Vec<Family> = self
            .capabilities
            .iter()
            .filter_map(|c| match c {
                Capability::Multiprotocol(f) => Some(*f),
                _ => None,
            })
            .collect();
        if fams.is_empty() {
            vec![Family::IPV4_UNICAST]
        } else {
            fams
        }
    }

    pub fn route_refresh(&self) -> bool {
        self.capabilities
            .iter()
            .any(|c| matches!(c, Capability::RouteRefresh))
    }
}

/// One capability of an OPEN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    Multiprotocol(Family),
    RouteRefresh,
    FourOctetAs(u32),
    /// Anything else, kept verbatim (unknown capabilities are ignored,
    /// RFC 5492 section 3).
    Unknown {
        code: u8,
        value: Vec<u8>,
    },
}

/// ORIGIN values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Igp = 0,
    Egp = 1,
    Incomplete = 2,
}

/// AS_PATH segment types (RFC 4271, RFC 5065).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentType {
    Set = 1,
    Sequence = 2,
    ConfedSequence = 3,
    ConfedSet = 4,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsSegment {
    pub kind: SegmentType,
    pub asns: Vec<u32>,
}

/// An AS_PATH or AS4_PATH.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AsPath {
    pub segments: Vec<AsSegment>,
}

impl AsPath {
    /// A single AS_SEQUENCE.
    pub fn sequence(asns: Vec<u32>) -> AsPath {
        AsPath {
            segments: vec![AsSegment {
                kind: SegmentType::Sequence,
                asns,
            }],
        }
    }
}

/// MP_REACH_NLRI for IPv4 or IPv6 unicast (other families are kept as
/// [`PathAttribute::Unknown`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpReach {
    pub family: Family,
    /// One address, or for IPv6 a global and a link-local one.
    pub next_hops: Vec<IpAddr>,
    pub nlri: Vec<IpNet>,
}

/// MP_UNREACH_NLRI for IPv4 or IPv6 unicast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpUnreach {
    pub family: Family,
    pub withdrawn: Vec<IpNet>,
}

/// A path attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathAttribute {
    Origin(Origin),
    AsPath(AsPath),
    NextHop(Ipv4Addr),
    MultiExitDisc(u32),
    LocalPref(u32),
    AtomicAggregate,
    Aggregator {
        asn: u32,
        address: Ipv4Addr,
    },
    Communities(Vec<u32>),
    MpReach(MpReach),
    MpUnreach(MpUnreach),
    As4Path(AsPath),
    As4Aggregator {
        asn: u32,
        address: Ipv4Addr,
    },
    /// Optional attributes this codec does not interpret, and known ones
    /// of families it does not carry.
    Unknown {
        flags: u8,
        code: u8,
        value: Vec<u8>,
    },
}

impl PathAttribute {
    pub fn code(&self) -> u8 {
        match self {
            PathAttribute::Origin(_) => attr::ORIGIN,
            PathAttribute::AsPath(_) => attr::AS_PATH,
            PathAttribute::NextHop(_) => attr::NEXT_HOP,
            PathAttribute::MultiExitDisc(_) => attr::MULTI_EXIT_DISC,
            PathAttribute::LocalPref(_) => attr::LOCAL_PREF,
            PathAttribute::AtomicAggregate => attr::ATOMIC_AGGREGATE,
            PathAttribute::Aggregator { .. } => attr::AGGREGATOR,
            PathAttribute::Communities(_) => attr::COMMUNITIES,
            PathAttribute::MpReach(_) => attr::MP_REACH_NLRI,
            PathAttribute::MpUnreach(_) => attr::MP_UNREACH_NLRI,
            PathAttribute::As4Path(_) => attr::AS4_PATH,
            PathAttribute::As4Aggregator { .. } => attr::AS4_AGGREGATOR,
            PathAttribute::Unknown { code, .. } => *code,
        }
    }
}

/// An UPDATE. `withdrawn` and `nlri` are the IPv4 unicast fields of the
/// message itself; other families travel in MP_(UN)REACH_NLRI attributes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Update {
    pub withdrawn: Vec<Ipv4Net>,
    pub attributes: Vec<PathAttribute>,
    pub nlri: Vec<Ipv4Net>,
}

impl Update {
    pub fn attribute(&self, code: u8) -> Option<&PathAttribute> {
        self.attributes.iter().find(|a| a.code() == code)
    }

    /// Every prefix this UPDATE announces, in any family.
    pub fn announced(&self) -> Vec<IpNet> {
        let mut out: Vec<IpNet> = self.nlri.iter().map(|n| IpNet::V4(*n)).collect();
        for a in &self.attributes {
            if let PathAttribute::MpReach(r) = a {
                out.extend(r.nlri.iter().copied());
            }
        }
        out
    }

    /// Every prefix this UPDATE withdraws, in any family.
    pub fn withdrawn_all(&self) -> Vec<IpNet> {
        let mut out: Vec<IpNet> = self.withdrawn.iter().map(|n| IpNet::V4(*n)).collect();
        for a in &self.attributes {
            if let PathAttribute::MpUnreach(u) = a {
                out.extend(u.withdrawn.iter().copied());
            }
        }
        out
    }
}

/// A NOTIFICATION.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl Notification {
    pub fn new(code: u8, subcode: u8, data: Vec<u8>) -> Notification {
        Notification {
            code,
            subcode,
            data,
        }
    }

    /// A Cease, with an optional shutdown communication (RFC 9003: only
    /// Administrative Shutdown and Reset carry one; longer texts are cut
    /// at a character boundary to the 255-octet limit).
    pub fn cease(subcode: u8, message: Option<&str>) -> Notification {
        let mut data = Vec::new();
        if let Some(m) = message {
            if subcode == err::CEASE_ADMIN_SHUTDOWN || subcode == err::CEASE_ADMIN_RESET {
                let mut end = m.len().min(255);
                while !m.is_char_boundary(end) {
                    end -= 1;
                }
                data.push(end as u8);
                data.extend_from_slice(&m.as_bytes()[..end]);
            }
        }
        Notification::new(err::CEASE, subcode, data)
    }

    /// The RFC 9003 shutdown communication, if this is an Administrative
    /// Shutdown/Reset carrying a well-formed one.
    pub fn shutdown_message(&self) -> Option<String> {
        if self.code != err::CEASE
            || !(self.subcode == err::CEASE_ADMIN_SHUTDOWN
                || self.subcode == err::CEASE_ADMIN_RESET)
        {
            return None;
        }
        let (&len, rest) = self.data.split_first()?;
        let text = rest.get(..usize::from(len))?;
        if text.is_empty() {
            return None;
        }
        std::str::from_utf8(text).ok().map(str::to_string)
    }

    /// "Cease/Administrative Shutdown" and the like.
    pub fn name(&self) -> String {
        let (code, sub) = describe(self.code, self.subcode);
        match sub {
            Some(s) => format!("{code}/{s}"),
            None if self.subcode == 0 => code.to_string(),
            None => format!("{code}/subcode {}", self.subcode),
        }
    }
}

impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())?;
        if let Some(m) = self.shutdown_message() {
            write!(f, ": {m:?}")?;
        }
        Ok(())
    }
}

/// Names of error codes and subcodes (IANA "BGP Error (Notification)
/// Codes" and subcodes).
pub fn describe(code: u8, subcode: u8) -> (&'static str, Option<&'static str>) {
    let c = match code {
        1 => "Message Header Error",
        2 => "OPEN Message Error",
        3 => "UPDATE Message Error",
        4 => "Hold Timer Expired",
        5 => "Finite State Machine Error",
        6 => "Cease",
        7 => "ROUTE-REFRESH Message Error",
        _ => "Unknown Error",
    };
    let s = match (code, subcode) {
        (1, 1) => "Connection Not Synchronized",
        (1, 2) => "Bad Message Length",
        (1, 3) => "Bad Message Type",
        (2, 1) => "Unsupported Version Number",
        (2, 2) => "Bad Peer AS",
        (2, 3) => "Bad BGP Identifier",
        (2, 4) => "Unsupported Optional Parameter",
        (2, 6) => "Unacceptable Hold Time",
        (2, 7) => "Unsupported Capability",
        (2, 11) => "Role Mismatch",
        (3, 1) => "Malformed Attribute List",
        (3, 2) => "Unrecognized Well-known Attribute",
        (3, 3) => "Missing Well-known Attribute",
        (3, 4) => "Attribute Flags Error",
        (3, 5) => "Attribute Length Error",
        (3, 6) => "Invalid ORIGIN Attribute",
        (3, 8) => "Invalid NEXT_HOP Attribute",
        (3, 9) => "Optional Attribute Error",
        (3, 10) => "Invalid Network Field",
        (3, 11) => "Malformed AS_PATH",
        (5, 1) => "Unexpected Message in OpenSent State",
        (5, 2) => "Unexpected Message in OpenConfirm State",
        (5, 3) => "Unexpected Message in Established State",
        (6, 1) => "Maximum Number of Prefixes Reached",
        (6, 2) => "Administrative Shutdown",
        (6, 3) => "Peer De-configured",
        (6, 4) => "Administrative Reset",
        (6, 5) => "Connection Rejected",
        (6, 6) => "Other Configuration Change",
        (6, 7) => "Connection Collision Resolution",
        (6, 8) => "Out of Resources",
        (6, 9) => "Hard Reset",
        (6, 10) => "BFD Down",
        (7, 1) => "Invalid Message Length",
        _ => return (c, None),
    };
    (c, Some(s))
}

/// A ROUTE-REFRESH (RFC 2918; `subtype` is RFC 7313's, 0 for a plain
/// request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRefresh {
    pub family: Family,
    pub subtype: u8,
}

/// Why a message could not be decoded, with the NOTIFICATION it calls for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message header: bad marker (connection not synchronized)")]
    BadMarker,
    #[error("message header: bad message length {0}")]
    BadLength(u16),
    #[error("message header: bad message type {0}")]
    BadType(u8),
    #[error("OPEN: {reason}")]
    Open {
        subcode: u8,
        reason: String,
        data: Vec<u8>,
    },
    #[error("UPDATE: {reason}")]
    Update {
        subcode: u8,
        reason: String,
        /// The erroneous attribute (type, length, value) or the like.
        data: Vec<u8>,
        /// False when RFC 7606 lets the UPDATE be treated as a withdraw
        /// (its routes dropped) instead of resetting the session.
        reset: bool,
    },
    #[error("ROUTE-REFRESH: invalid message length {0}")]
    RouteRefreshLength(u16),
}

impl DecodeError {
    /// The NOTIFICATION to answer this error with.
    pub fn notification(&self) -> Notification {
        match self {
            DecodeError::BadMarker => {
                Notification::new(err::HEADER, err::HEADER_NOT_SYNCHRONIZED, vec![])
            }
            DecodeError::BadLength(l) => Notification::new(
                err::HEADER,
                err::HEADER_BAD_LENGTH,
                l.to_be_bytes().to_vec(),
            ),
            DecodeError::BadType(t) => {
                Notification::new(err::HEADER, err::HEADER_BAD_TYPE, vec![*t])
            }
            DecodeError::Open { subcode, data, .. } => {
                Notification::new(err::OPEN, *subcode, data.clone())
            }
            DecodeError::Update { subcode, data, .. } => {
                Notification::new(err::UPDATE, *subcode, data.clone())
            }
            DecodeError::RouteRefreshLength(l) => Notification::new(
                err::ROUTE_REFRESH,
                err::ROUTE_REFRESH_INVALID_LENGTH,
                l.to_be_bytes().to_vec(),
            ),
        }
    }

    /// Whether the session must be closed with [`Self::notification`].
    /// Only attribute-level UPDATE errors are survivable (RFC 7606: the
    /// UPDATE's routes are withdrawn instead); the speaker imports no
    /// routes, so for it that means dropping the UPDATE.
    pub fn resets_session(&self) -> bool {
        match self {
            DecodeError::Update { reset, .. } => *reset,
            _ => true,
        }
    }

    fn open(subcode: u8, reason: impl Into<String>) -> DecodeError {
        DecodeError::Open {
            subcode,
            reason: reason.into(),
            data: vec![],
        }
    }

    fn update(subcode: u8, reason: impl Into<String>, data: Vec<u8>, reset: bool) -> DecodeError {
        DecodeError::Update {
            subcode,
            reason: reason.into(),
            data,
            reset,
        }
    }
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("message of {0} octets exceeds the {MAX_MESSAGE_LEN}-octet limit")]
    TooLong(usize),
    #[error("{0} too long to encode")]
    FieldTooLong(&'static str),
}

/// Bounds-checked reads over a byte slice.
struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8]) -> Self {
        Reader { b }
    }
    fn is_empty(&self) -> bool {
        self.b.is_empty()
    }
    fn len(&self) -> usize {
        self.b.len()
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (head, tail) = self.b.split_at(n);
        self.b = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn ipv4(&mut self) -> Option<Ipv4Addr> {
        self.u32().map(Ipv4Addr::from)
    }
    fn ipv6(&mut self) -> Option<Ipv6Addr> {
        let b = self.take(16)?;
        let mut a = [0u8; 16];
        a.copy_from_slice(b);
        Some(Ipv6Addr::from(a))
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.b)
    }
}

/// Checks the header of a message at the start of `buf`, as far as it has
/// arrived. `Ok(Some(len))` once the whole message (`len` octets) is in
/// `buf`, `Ok(None)` while more must be read; a bad marker is reported as
/// soon as its bytes are there.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    let seen = buf.len().min(MARKER_LEN);
    if buf[..seen].iter().any(|b| *b != 0xff) {
        return Err(DecodeError::BadMarker);
    }
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = u16::from_be_bytes([buf[16], buf[17]]);
    if usize::from(len) < HEADER_LEN || usize::from(len) > MAX_MESSAGE_LEN {
        return Err(DecodeError::BadLength(len));
    }
    Ok((buf.len() >= usize::from(len)).then_some(usize::from(len)))
}

/// Decodes one whole message (header included; `msg.len()` must be the
/// length its header states, as [`frame_len`] returns).
pub fn decode(msg: &[u8], opts: CodecOptions) -> Result<Message, DecodeError> {
    if msg.len() < HEADER_LEN {
        return Err(DecodeError::BadLength(msg.len() as u16));
    }
    if msg[..MARKER_LEN].iter().any(|b| *b != 0xff) {
        return Err(DecodeError::BadMarker);
    }
    let len = u16::from_be_bytes([msg[16], msg[17]]);
    if usize::from(len) != msg.len() || msg.len() > MAX_MESSAGE_LEN {
        return Err(DecodeError::BadLength(len));
    }
    let ty = msg[18];
    let body = &msg[HEADER_LEN..];
    // RFC 4271 6.1: a length below the type's minimum is a header error.
    let min_body = match ty {
        msg_type::OPEN => 10,
        msg_type::UPDATE => 4,
        msg_type::NOTIFICATION => 2,
        msg_type::KEEPALIVE | msg_type::ROUTE_REFRESH => 0,
        t => return Err(DecodeError::BadType(t)),
    };
    if body.len() < min_body || (ty == msg_type::KEEPALIVE && !body.is_empty()) {
        return Err(DecodeError::BadLength(len));
    }
    match ty {
        msg_type::OPEN => decode_open(body).map(Message::Open),
        msg_type::UPDATE => decode_update(body, opts).map(Message::Update),
        msg_type::NOTIFICATION => Ok(Message::Notification(Notification {
            code: body[0],
            subcode: body[1],
            data: body[2..].to_vec(),
        })),
        msg_type::KEEPALIVE => Ok(Message::Keepalive),
        _ => {
            // RFC 7313 section 5: anything but 4 octets is an error.
            if body.len() != 4 {
                return Err(DecodeError::RouteRefreshLength(len));
            }
            Ok(Message::RouteRefresh(RouteRefresh {
                family: Family {
                    afi: u16::from_be_bytes([body[0], body[1]]),
                    safi: body[3],
                },
                subtype: body[2],
            }))
        }
    }
}

fn decode_open(body: &[u8]) -> Result<Open, DecodeError> {
    let mut r = Reader::new(body);
    let bad_len = || DecodeError::BadLength((body.len() + HEADER_LEN) as u16);
    let version = r.u8().ok_or_else(bad_len)?;
    let my_as = r.u16().ok_or_else(bad_len)?;
    let hold_time = r.u16().ok_or_else(bad_len)?;
    let bgp_id = r.ipv4().ok_or_else(bad_len)?;
    let opt_len = r.u8().ok_or_else(bad_len)?;
    if version != BGP_VERSION {
        return Err(DecodeError::Open {
            subcode: err::OPEN_UNSUPPORTED_VERSION,
            reason: format!("unsupported version {version}"),
            // The largest version we support, as 2 octets.
            data: vec![0, BGP_VERSION],
        });
    }
    if my_as == 0 {
        // RFC 7607: AS 0 is never a valid peer AS.
        return Err(DecodeError::open(err::OPEN_BAD_PEER_AS, "peer AS 0"));
    }
    if hold_time == 1 || hold_time == 2 {
        return Err(DecodeError::open(
            err::OPEN_UNACCEPTABLE_HOLD_TIME,
            format!("unacceptable hold time {hold_time}"),
        ));
    }
    if bgp_id.is_unspecified() {
        return Err(DecodeError::open(
            err::OPEN_BAD_BGP_ID,
            "BGP identifier 0.0.0.0",
        ));
    }
    // Optional parameters: RFC 9072's extended form is announced by a
    // non-extended length and first type of 255.
    let extended = opt_len == 255 && r.b.first() == Some(&255);
    let params = if extended {
        r.u8();
        let ext_len = r.u16().ok_or_else(bad_len)?;
        r.take(usize::from(ext_len))
    } else {
        r.take(usize::from(opt_len))
    }
    .ok_or_else(|| {
        DecodeError::open(
            err::OPEN_UNSPECIFIC,
            "optional parameters overrun the message",
        )
    })?;
    if !r.is_empty() {
        return Err(DecodeError::open(
            err::OPEN_UNSPECIFIC,
            "trailing bytes after the optional parameters",
        ));
    }
    let mut p = Reader::new(params);
    let mut capabilities = Vec::new();
    while !p.is_empty() {
        let malformed = || DecodeError::open(err::OPEN_UNSPECIFIC, "truncated optional parameter");
        let ptype = p.u8().ok_or_else(malformed)?;
        let plen = if extended {
            p.u16().ok_or_else(malformed)?
        } else {
            u16::from(p.u8().ok_or_else(malformed)?)
        };
        let value = p.take(usize::from(plen)).ok_or_else(malformed)?;
        if ptype != 2 {
            return Err(DecodeError::Open {
                subcode: err::OPEN_UNSUPPORTED_OPT_PARAM,
                reason: format!("unsupported optional parameter {ptype}"),
                data: vec![],
            });
        }
        decode_capabilities(value, &mut capabilities)?;
    }
    for c in &capabilities {
        if let Capability::FourOctetAs(0) = c {
            return Err(DecodeError::open(
                err::OPEN_BAD_PEER_AS,
                "peer AS 0 in the 4-octet AS capability",
            ));
        }
    }
    Ok(Open {
        version,
        my_as,
        hold_time,
        bgp_id,
        capabilities,
    })
}

fn decode_capabilities(value: &[u8], out: &mut Vec<Capability>) -> Result<(), DecodeError> {
    let mut c = Reader::new(value);
    while !c.is_empty() {
        let malformed = |what: &str| {
            DecodeError::open(
                err::OPEN_UNSPECIFIC,
                format!("malformed capability: {what}"),
            )
        };
        let code = c.u8().ok_or_else(|| malformed("truncated header"))?;
        let len = c.u8().ok_or_else(|| malformed("truncated header"))?;
        let v = c
            .take(usize::from(len))
            .ok_or_else(|| malformed("value overruns the parameter"))?;
        let cap = match code {
            cap::MULTIPROTOCOL => {
                if v.len() != 4 {
                    return Err(malformed("multiprotocol length is not 4"));
                }
                Capability::Multiprotocol(Family {
                    afi: u16::from_be_bytes([v[0], v[1]]),
                    safi: v[3],
                })
            }
            cap::ROUTE_REFRESH if v.is_empty() => Capability::RouteRefresh,
            cap::FOUR_OCTET_AS => {
                if v.len() != 4 {
                    return Err(malformed("4-octet AS length is not 4"));
                }
                Capability::FourOctetAs(u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
            }
            _ => Capability::Unknown {
                code,
                value: v.to_vec(),
            },
        };
        out.push(cap);
    }
    Ok(())
}

/// Parses a run of (length, prefix) NLRI entries. Host bits past the
/// length are ignored (RFC 4271 4.3: "irrelevant").
fn decode_prefixes(b: &[u8], v6: bool) -> Result<Vec<IpNet>, String> {
    let mut r = Reader::new(b);
    let mut out = Vec::new();
    let max = if v6 { 128 } else { 32 };
    while !r.is_empty() {
        let len = r.u8().unwrap_or(0);
        if len > max {
            return Err(format!("prefix length {len} exceeds {max}"));
        }
        let n = usize::from(len).div_ceil(8);
        let bytes = r
            .take(n)
            .ok_or_else(|| format!("prefix of length {len} truncated"))?;
        let net = if v6 {
            let mut a = [0u8; 16];
            a[..n].copy_from_slice(bytes);
            Ipv6Net::new(Ipv6Addr::from(a), len).map(|n| IpNet::V6(n.trunc()))
        } else {
            let mut a = [0u8; 4];
            a[..n].copy_from_slice(bytes);
            Ipv4Net::new(Ipv4Addr::from(a), len).map(|n| IpNet::V4(n.trunc()))
        }
        .map_err(|e| e.to_string())?;
        out.push(net);
    }
    Ok(out)
}

fn v4_only(nets: Vec<IpNet>) -> Vec<Ipv4Net> {
    nets.into_iter()
        .filter_map(|n| match n {
            IpNet::V4(n) => Some(n),
            IpNet::V6(_) => None,
        })
        .collect()
}

/// The expected Optional/Transitive bits of known attributes.
fn expected_flags(code: u8) -> Option<u8> {
    use attr::*;
    Some(match code {
        ORIGIN | AS_PATH | NEXT_HOP | LOCAL_PREF | ATOMIC_AGGREGATE => FLAG_TRANSITIVE,
        MULTI_EXIT_DISC | MP_REACH_NLRI | MP_UNREACH_NLRI => FLAG_OPTIONAL,
        AGGREGATOR | COMMUNITIES | AS4_PATH | AS4_AGGREGATOR | LARGE_COMMUNITIES => {
            FLAG_OPTIONAL | FLAG_TRANSITIVE
        }
        _ => return None,
    })
}

fn decode_update(body: &[u8], opts: CodecOptions) -> Result<Update, DecodeError> {
    let mut r = Reader::new(body);
    let structural =
        |reason: &str| DecodeError::update(err::UPDATE_MALFORMED_ATTR_LIST, reason, vec![], true);
    let wlen = r
        .u16()
        .ok_or_else(|| structural("truncated withdrawn routes length"))?;
    let withdrawn = r
        .take(usize::from(wlen))
        .ok_or_else(|| structural("withdrawn routes length overruns the message"))?;
    let alen = r
        .u16()
        .ok_or_else(|| structural("truncated total path attribute length"))?;
    let attrs = r
        .take(usize::from(alen))
        .ok_or_else(|| structural("total path attribute length overruns the message"))?;
    let nlri = r.rest();

    let invalid_network =
        |e: String| DecodeError::update(err::UPDATE_INVALID_NETWORK, e, vec![], true);
    let withdrawn = v4_only(decode_prefixes(withdrawn, false).map_err(invalid_network)?);
    let nlri = v4_only(decode_prefixes(nlri, false).map_err(invalid_network)?);

    let mut a = Reader::new(attrs);
    let mut attributes: Vec<PathAttribute> = Vec::new();
    let mut seen = [false; 256];
    while !a.is_empty() {
        let start = a.b;
        let flags = a.u8().unwrap_or(0);
        let code = a
            .u8()
            .ok_or_else(|| structural("truncated attribute header"))?;
        let len = if flags & attr::FLAG_EXTENDED_LENGTH != 0 {
            a.u16()
        } else {
            a.u8().map(u16::from)
        }
        .ok_or_else(|| structural("truncated attribute header"))?;
        let hdr = start.len() - a.len();
        let value = a
            .take(usize::from(len))
            .ok_or_else(|| structural("attribute length overruns the attribute list"))?;
        let raw = start[..hdr + value.len()].to_vec();
        if seen[usize::from(code)] {
            // RFC 7606 3(g): MP_(UN)REACH twice is fatal, any other
            // repeat is dropped.
            if code == attr::MP_REACH_NLRI || code == attr::MP_UNREACH_NLRI {
                return Err(DecodeError::update(
                    err::UPDATE_MALFORMED_ATTR_LIST,
                    format!("attribute {code} repeated"),
                    vec![],
                    true,
                ));
            }
            continue;
        }
        seen[usize::from(code)] = true;
        attributes.push(decode_attribute(flags, code, value, raw, opts)?);
    }

    let has_mp_nlri = attributes
        .iter()
        .any(|a| matches!(a, PathAttribute::MpReach(r) if !r.nlri.is_empty()));
    if !nlri.is_empty() || has_mp_nlri {
        let mut required = vec![attr::ORIGIN, attr::AS_PATH];
        if !nlri.is_empty() {
            required.push(attr::NEXT_HOP);
        }
        for code in required {
            if !seen[usize::from(code)] {
                return Err(DecodeError::update(
                    err::UPDATE_MISSING_WELL_KNOWN,
                    format!("missing well-known attribute {code}"),
                    vec![code],
                    false,
                ));
            }
        }
    }
    Ok(Update {
        withdrawn,
        attributes,
        nlri,
    })
}

fn decode_attribute(
    flags: u8,
    code: u8,
    value: &[u8],
    raw: Vec<u8>,
    opts: CodecOptions,
) -> Result<PathAttribute, DecodeError> {
    let treat_as_withdraw = |subcode: u8, reason: String, raw: Vec<u8>| {
        DecodeError::update(subcode, reason, raw, false)
    };
    let Some(expected) = expected_flags(code) else {
        if flags & attr::FLAG_OPTIONAL == 0 {
            return Err(treat_as_withdraw(
                err::UPDATE_UNRECOGNIZED_WELL_KNOWN,
                format!("unrecognized well-known attribute {code}"),
                raw,
            ));
        }
        return Ok(PathAttribute::Unknown {
            flags,
            code,
            value: value.to_vec(),
        });
    };
    let ot = flags & (attr::FLAG_OPTIONAL | attr::FLAG_TRANSITIVE);
    // Partial is only meaningful for optional transitive attributes.
    let bad_partial =
        flags & attr::FLAG_PARTIAL != 0 && expected != attr::FLAG_OPTIONAL | attr::FLAG_TRANSITIVE;
    // MP_(UN)REACH errors reset the session: their NLRI cannot be
    // trusted (RFC 7606 section 7.11).
    let mp = code == attr::MP_REACH_NLRI || code == attr::MP_UNREACH_NLRI;
    if ot != expected || bad_partial {
        return Err(DecodeError::update(
            err::UPDATE_ATTR_FLAGS,
            format!("attribute {code} has flags {flags:#04x}"),
            raw,
            mp,
        ));
    }
    let length_error = |raw: Vec<u8>| {
        DecodeError::update(
            err::UPDATE_ATTR_LENGTH,
            format!("attribute {code} has length {}", value.len()),
            raw,
            false,
        )
    };
    let fixed = |n: usize, raw: Vec<u8>| {
        if value.len() == n {
            Ok(raw)
        } else {
            Err(length_error(raw))
        }
    };
    let mut r = Reader::new(value);
    let asn_width = if opts.four_octet_as { 4 } else { 2 };
    Ok(match code {
        attr::ORIGIN => {
            let raw = fixed(1, raw)?;
            PathAttribute::Origin(match value[0] {
                0 => Origin::Igp,
                1 => Origin::Egp,
                2 => Origin::Incomplete,
                o => {
                    return Err(treat_as_withdraw(
                        err::UPDATE_INVALID_ORIGIN,
                        format!("ORIGIN {o}"),
                        raw,
                    ))
                }
            })
        }
        attr::AS_PATH => PathAttribute::AsPath(
            decode_as_path(value, asn_width)
                .map_err(|e| treat_as_withdraw(err::UPDATE_MALFORMED_AS_PATH, e, raw))?,
        ),
        attr::AS4_PATH => PathAttribute::As4Path(
            // RFC 6793: a malformed AS4_PATH is discarded, not an error;
            // keep it as unknown so the UPDATE survives.
            match decode_as_path(value, 4) {
                Ok(p) => p,
                Err(_) => {
                    return Ok(PathAttribute::Unknown {
                        flags,
                        code,
                        value: value.to_vec(),
                    })
                }
            },
        ),
        attr::NEXT_HOP => {
            let raw = fixed(4, raw)?;
            let nh = r.ipv4().unwrap_or(Ipv4Addr::UNSPECIFIED);
            if nh.is_unspecified() || nh.is_multicast() || nh.is_broadcast() {
                return Err(treat_as_withdraw(
                    err::UPDATE_INVALID_NEXT_HOP,
                    format!("NEXT_HOP {nh}"),
                    raw,
                ));
            }
            PathAttribute::NextHop(nh)
        }
        attr::MULTI_EXIT_DISC => {
            fixed(4, raw)?;
            PathAttribute::MultiExitDisc(r.u32().unwrap_or(0))
        }
        attr::LOCAL_PREF => {
            fixed(4, raw)?;
            PathAttribute::LocalPref(r.u32().unwrap_or(0))
        }
        attr::ATOMIC_AGGREGATE => {
            fixed(0, raw)?;
            PathAttribute::AtomicAggregate
        }
        attr::AGGREGATOR | attr::AS4_AGGREGATOR => {
            let width = if code == attr::AS4_AGGREGATOR {
                4
            } else {
                asn_width
            };
            fixed(width + 4, raw)?;
            let asn = if width == 4 {
                r.u32().unwrap_or(0)
            } else {
                u32::from(r.u16().unwrap_or(0))
            };
            let address = r.ipv4().unwrap_or(Ipv4Addr::UNSPECIFIED);
            if code == attr::AGGREGATOR {
                PathAttribute::Aggregator { asn, address }
            } else {
                PathAttribute::As4Aggregator { asn, address }
            }
        }
        attr::COMMUNITIES => {
            if value.is_empty() || !value.len().is_multiple_of(4) {
                return Err(length_error(raw));
            }
            let mut v = Vec::with_capacity(value.len() / 4);
            while let Some(c) = r.u32() {
                v.push(c);
            }
            PathAttribute::Communities(v)
        }
        attr::LARGE_COMMUNITIES => {
            if value.is_empty() || !value.len().is_multiple_of(12) {
                return Err(length_error(raw));
            }
            PathAttribute::Unknown {
                flags,
                code,
                value: value.to_vec(),
            }
        }
        attr::MP_REACH_NLRI => decode_mp_reach(flags, value, raw)?,
        _ => decode_mp_unreach(flags, value, raw)?,
    })
}

fn decode_as_path(value: &[u8], width: usize) -> Result<AsPath, String> {
    let mut r = Reader::new(value);
    let mut segments = Vec::new();
    while !r.is_empty() {
        let kind = match r.u8().unwrap_or(0) {
            1 => SegmentType::Set,
            2 => SegmentType::Sequence,
            3 => SegmentType::ConfedSequence,
            4 => SegmentType::ConfedSet,
            t => return Err(format!("AS_PATH segment type {t}")),
        };
        let count = r.u8().ok_or("truncated AS_PATH segment header")?;
        if count == 0 {
            return Err("empty AS_PATH segment".into());
        }
        let bytes = r
            .take(usize::from(count) * width)
            .ok_or("AS_PATH segment overruns the attribute")?;
        let asns = bytes
            .chunks_exact(width)
            .map(|c| {
                if width == 4 {
                    u32::from_be_bytes([c[0], c[1], c[2], c[3]])
                } else {
                    u32::from(u16::from_be_bytes([c[0], c[1]]))
                }
            })
            .collect();
        segments.push(AsSegment { kind, asns });
    }
    Ok(AsPath { segments })
}

fn mp_error(reason: String, raw: Vec<u8>) -> DecodeError {
    DecodeError::update(err::UPDATE_OPTIONAL_ATTR, reason, raw, true)
}

fn decode_mp_reach(flags: u8, value: &[u8], raw: Vec<u8>) -> Result<PathAttribute, DecodeError> {
    let mut r = Reader::new(value);
    let (Some(afi), Some(safi), Some(nh_len)) = (r.u16(), r.u8(), r.u8()) else {
        return Err(mp_error("MP_REACH_NLRI truncated".into(), raw));
    };
    let family = Family { afi, safi };
    let Some(nh) = r.take(usize::from(nh_len)) else {
        return Err(mp_error("MP_REACH_NLRI next hop truncated".into(), raw));
    };
    if r.u8().is_none() {
        return Err(mp_error("MP_REACH_NLRI reserved octet missing".into(), raw));
    }
    if family != Family::IPV4_UNICAST && family != Family::IPV6_UNICAST {
        return Ok(PathAttribute::Unknown {
            flags,
            code: attr::MP_REACH_NLRI,
            value: value.to_vec(),
        });
    }
    let mut n = Reader::new(nh);
    // IPv6 next hops (also for IPv4 NLRI, RFC 8950) are a global address
    // optionally followed by a link-local one.
    let next_hops: Vec<IpAddr> = match nh_len {
        4 if family == Family::IPV4_UNICAST => n.ipv4().map(IpAddr::V4).into_iter().collect(),
        16 => n.ipv6().map(IpAddr::V6).into_iter().collect(),
        32 => [n.ipv6(), n.ipv6()]
            .into_iter()
            .flatten()
            .map(IpAddr::V6)
            .collect(),
        l => {
            return Err(mp_error(
                format!("MP_REACH_NLRI next hop length {l} for {family}"),
                raw,
            ))
        }
    };
    let nlri = decode_prefixes(r.rest(), family == Family::IPV6_UNICAST)
        .map_err(|e| mp_error(format!("MP_REACH_NLRI: {e}"), raw.clone()))?;
    Ok(PathAttribute::MpReach(MpReach {
        family,
        next_hops,
        nlri,
    }))
}

fn decode_mp_unreach(flags: u8, value: &[u8], raw: Vec<u8>) -> Result<PathAttribute, DecodeError> {
    let mut r = Reader::new(value);
    let (Some(afi), Some(safi)) = (r.u16(), r.u8()) else {
        return Err(mp_error("MP_UNREACH_NLRI truncated".into(), raw));
    };
    let family = Family { afi, safi };
    if family != Family::IPV4_UNICAST && family != Family::IPV6_UNICAST {
        return Ok(PathAttribute::Unknown {
            flags,
            code: attr::MP_UNREACH_NLRI,
            value: value.to_vec(),
        });
    }
    let withdrawn = decode_prefixes(r.rest(), family == Family::IPV6_UNICAST)
        .map_err(|e| mp_error(format!("MP_UNREACH_NLRI: {e}"), raw))?;
    Ok(PathAttribute::MpUnreach(MpUnreach { family, withdrawn }))
}

// ---- encoding ----

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_prefix(out: &mut Vec<u8>, net: &IpNet) {
    let len = net.prefix_len();
    out.push(len);
    let n = usize::from(len).div_ceil(8);
    match net {
        IpNet::V4(v) => out.extend_from_slice(&v.network().octets()[..n]),
        IpNet::V6(v) => out.extend_from_slice(&v.network().octets()[..n]),
    }
}

fn put_ip(out: &mut Vec<u8>, ip: &IpAddr) {
    match ip {
        IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
    }
}

fn put_family(out: &mut Vec<u8>, f: Family) {
    put_u16(out, f.afi);
    out.push(f.safi);
}

impl Message {
    /// The message on the wire, header included.
    pub fn encode(&self, opts: CodecOptions) -> Result<Vec<u8>, EncodeError> {
        let mut out = vec![0xff; MARKER_LEN];
        out.extend_from_slice(&[0, 0]);
        let ty = match self {
            Message::Open(o) => {
                out.push(msg_type::OPEN);
                encode_open(o, &mut out)?;
                msg_type::OPEN
            }
            Message::Update(u) => {
                out.push(msg_type::UPDATE);
                encode_update(u, opts, &mut out)?;
                msg_type::UPDATE
            }
            Message::Notification(n) => {
                out.push(msg_type::NOTIFICATION);
                out.push(n.code);
                out.push(n.subcode);
                out.extend_from_slice(&n.data);
                msg_type::NOTIFICATION
            }
            Message::Keepalive => {
                out.push(msg_type::KEEPALIVE);
                msg_type::KEEPALIVE
            }
            Message::RouteRefresh(rr) => {
                out.push(msg_type::ROUTE_REFRESH);
                put_u16(&mut out, rr.family.afi);
                out.push(rr.subtype);
                out.push(rr.family.safi);
                msg_type::ROUTE_REFRESH
            }
        };
        debug_assert_eq!(out[HEADER_LEN - 1], ty);
        if out.len() > MAX_MESSAGE_LEN {
            return Err(EncodeError::TooLong(out.len()));
        }
        let len = (out.len() as u16).to_be_bytes();
        out[16] = len[0];
        out[17] = len[1];
        Ok(out)
    }
}

fn encode_open(o: &Open, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    out.push(o.version);
    put_u16(out, o.my_as);
    put_u16(out, o.hold_time);
    out.extend_from_slice(&o.bgp_id.octets());
    let mut caps = Vec::new();
    for c in &o.capabilities {
        let (code, value) = match c {
            Capability::Multiprotocol(f) => {
                let mut v = Vec::with_capacity(4);
                put_u16(&mut v, f.afi);
                v.push(0);
                v.push(f.safi);
                (cap::MULTIPROTOCOL, v)
            }
            Capability::RouteRefresh => (cap::ROUTE_REFRESH, vec![]),
            Capability::FourOctetAs(a) => (cap::FOUR_OCTET_AS, a.to_be_bytes().to_vec()),
            Capability::Unknown { code, value } => (*code, value.clone()),
        };
        caps.push(code);
        caps.push(u8::try_from(value.len()).map_err(|_| EncodeError::FieldTooLong("capability"))?);
        caps.extend_from_slice(&value);
    }
    if caps.is_empty() {
        out.push(0);
        return Ok(());
    }
    // One Capabilities parameter; 253 octets of capabilities keep the
    // parameter length below RFC 9072's escape value.
    if caps.len() > 253 {
        return Err(EncodeError::FieldTooLong("capabilities"));
    }
    out.push(caps.len() as u8 + 2);
    out.push(2);
    out.push(caps.len() as u8);
    out.extend_from_slice(&caps);
    Ok(())
}

fn encode_as_path(p: &AsPath, four_octet: bool, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    for s in &p.segments {
        // Longer sequences are split into several segments.
        for chunk in s.asns.chunks(255) {
            out.push(s.kind as u8);
            out.push(chunk.len() as u8);
            for a in chunk {
                if four_octet {
                    put_u32(out, *a);
                } else {
                    put_u16(out, u16::try_from(*a).unwrap_or(AS_TRANS as u16));
                }
            }
        }
    }
    Ok(())
}

fn encode_attribute(
    a: &PathAttribute,
    opts: CodecOptions,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    use attr::*;
    let mut v = Vec::new();
    let flags = match a {
        PathAttribute::Origin(o) => {
            v.push(*o as u8);
            FLAG_TRANSITIVE
        }
        PathAttribute::AsPath(p) => {
            encode_as_path(p, opts.four_octet_as, &mut v)?;
            FLAG_TRANSITIVE
        }
        PathAttribute::NextHop(nh) => {
            v.extend_from_slice(&nh.octets());
            FLAG_TRANSITIVE
        }
        PathAttribute::MultiExitDisc(m) => {
            put_u32(&mut v, *m);
            FLAG_OPTIONAL
        }
        PathAttribute::LocalPref(l) => {
            put_u32(&mut v, *l);
            FLAG_TRANSITIVE
        }
        PathAttribute::AtomicAggregate => FLAG_TRANSITIVE,
        PathAttribute::Aggregator { asn, address } => {
            if opts.four_octet_as {
                put_u32(&mut v, *asn);
            } else {
                put_u16(&mut v, u16::try_from(*asn).unwrap_or(AS_TRANS as u16));
            }
            v.extend_from_slice(&address.octets());
            FLAG_OPTIONAL | FLAG_TRANSITIVE
        }
        PathAttribute::As4Aggregator { asn, address } => {
            put_u32(&mut v, *asn);
            v.extend_from_slice(&address.octets());
            FLAG_OPTIONAL | FLAG_TRANSITIVE
        }
        PathAttribute::Communities(c) => {
            for x in c {
                put_u32(&mut v, *x);
            }
            FLAG_OPTIONAL | FLAG_TRANSITIVE
        }
        PathAttribute::MpReach(r) => {
            put_family(&mut v, r.family);
            let mut nh = Vec::new();
            for h in &r.next_hops {
                put_ip(&mut nh, h);
            }
            v.push(u8::try_from(nh.len()).map_err(|_| EncodeError::FieldTooLong("next hop"))?);
            v.extend_from_slice(&nh);
            v.push(0);
            for n in &r.nlri {
                put_prefix(&mut v, n);
            }
            FLAG_OPTIONAL
        }
        PathAttribute::MpUnreach(u) => {
            put_family(&mut v, u.family);
            for n in &u.withdrawn {
                put_prefix(&mut v, n);
            }
            FLAG_OPTIONAL
        }
        PathAttribute::As4Path(p) => {
            encode_as_path(p, true, &mut v)?;
            FLAG_OPTIONAL | FLAG_TRANSITIVE
        }
        PathAttribute::Unknown { flags, value, .. } => {
            v.extend_from_slice(value);
            *flags & !FLAG_EXTENDED_LENGTH
        }
    };
    let len = u16::try_from(v.len()).map_err(|_| EncodeError::FieldTooLong("path attribute"))?;
    if len > 255 {
        out.push(flags | FLAG_EXTENDED_LENGTH);
        out.push(a.code());
        put_u16(out, len);
    } else {
        out.push(flags);
        out.push(a.code());
        out.push(len as u8);
    }
    out.extend_from_slice(&v);
    Ok(())
}

fn encode_update(u: &Update, opts: CodecOptions, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let mut w = Vec::new();
    for n in &u.withdrawn {
        put_prefix(&mut w, &IpNet::V4(*n));
    }
    let mut a = Vec::new();
    for at in &u.attributes {
        encode_attribute(at, opts, &mut a)?;
    }
    put_u16(
        out,
        u16::try_from(w.len()).map_err(|_| EncodeError::TooLong(w.len()))?,
    );
    out.extend_from_slice(&w);
    put_u16(
        out,
        u16::try_from(a.len()).map_err(|_| EncodeError::TooLong(a.len()))?,
    );
    out.extend_from_slice(&a);
    for n in &u.nlri {
        put_prefix(out, &IpNet::V4(*n));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
