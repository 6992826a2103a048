//! A DHCPv4 client over an AF_PACKET socket, for netd: addresses for VIPs
//! (on a macvlan with a stable generated MAC) and discovering a network's
//! subnet and gateway (Harvester's route "auto" mode).
//!
//! It never configures the interface: it returns what the server said and
//! netd applies it. Retransmission follows RFC 2131 4.1 (4 s, doubling to
//! 64 s, randomised by ±1 s); lease timers follow 4.4.5 and are exposed as
//! plain numbers ([`ClientLease::renew_at`] ...) for netd's own scheduler.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use furrow_api::MacAddr;
use ipnet::Ipv4Net;
use thiserror::Error;

use crate::codec;
use crate::frame::{
    self, BuildError, FrameSpec, Packet, ParseOptions, VlanTag, BROADCAST_MAC, CLIENT_PORT,
    SERVER_PORT,
};
use crate::socket::{PacketSocket, Role};

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("building a frame: {0}")]
    Build(#[from] BuildError),
    #[error("no {what} within {after:?}")]
    Timeout { what: &'static str, after: Duration },
    #[error("server {server:?} refused (DHCPNAK){}", message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Nak {
        server: Option<Ipv4Addr>,
        message: Option<String>,
    },
    #[error("the lease expired at {expired_at} (unix s): acquire a new one")]
    Expired { expired_at: u64 },
    #[error("unusable reply from the server: {0}")]
    BadReply(String),
}

/// Tuning; the defaults are RFC 2131's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    pub hostname: Option<String>,
    /// Option 61; default: type 1 (Ethernet) + the MAC.
    pub client_id: Option<Vec<u8>>,
    pub first_retransmit: Duration,
    pub max_retransmit: Duration,
    /// Randomise each wait by ±1 s (RFC 2131 4.1); off makes tests exact.
    pub jitter: bool,
    /// Give up `acquire` after this long.
    pub acquire_timeout: Duration,
    /// Give up one RENEWING/REBINDING exchange after this long; netd tries
    /// again after [`ClientLease::retry_delay`].
    pub renew_timeout: Duration,
    /// Ask servers to broadcast replies (not needed: the raw socket sees
    /// unicast to our MAC before we have an address).
    pub broadcast: bool,
    /// Tag our frames (when the interface is a trunk).
    pub vlan: Option<VlanTag>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            hostname: None,
            client_id: None,
            first_retransmit: Duration::from_secs(4),
            max_retransmit: Duration::from_secs(64),
            jitter: true,
            acquire_timeout: Duration::from_secs(60),
            renew_timeout: Duration::from_secs(20),
            broadcast: false,
            vlan: None,
        }
    }
}

/// A lease as the server granted it.
/// Serializable, so its holder can keep it across restarts and renew
/// rather than start over.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientLease {
    pub ifindex: u32,
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    /// The default gateway: from option 121's 0.0.0.0/0 entry when the
    /// server sent 121 (RFC 3442: then option 3 is ignored), else option 3.
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub ntp: Vec<Ipv4Addr>,
    pub server_id: Ipv4Addr,
    /// Ethernet source of the ACK: where unicast renewals are sent (the
    /// server, or the router towards it).
    pub server_mac: MacAddr,
    pub lease_time: u32,
    pub t1: u32,
    pub t2: u32,
    pub mtu: Option<u16>,
    /// Option 121 routes, the default route included if present.
    pub routes: Vec<(Ipv4Net, Ipv4Addr)>,
    /// Unix seconds when the REQUEST that got this lease was sent (lease
    /// times count from there, RFC 2131 4.4.1).
    pub obtained_at: u64,
    pub hostname: Option<String>,
    pub client_id: Vec<u8>,
}

/// Where in its life a lease is (RFC 2131 4.4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LeasePhase {
    Bound,
    /// Past T1: renew by unicast to the server.
    Renewing,
    /// Past T2: rebind by broadcast to any server.
    Rebinding,
    Expired,
}

impl ClientLease {
    pub fn cidr(&self) -> Ipv4Net {
        Ipv4Net::new(self.ip, self.prefix)
            .map(|n| n.trunc())
            .unwrap_or_else(|_| Ipv4Net::from(self.ip))
    }
    pub fn renew_at(&self) -> u64 {
        self.obtained_at + u64::from(self.t1)
    }
    pub fn rebind_at(&self) -> u64 {
        self.obtained_at + u64::from(self.t2)
    }
    pub fn expires_at(&self) -> u64 {
        self.obtained_at + u64::from(self.lease_time)
    }
    pub fn phase(&self, now: u64) -> LeasePhase {
        if now >= self.expires_at() {
            LeasePhase::Expired
        } else if now >= self.rebind_at() {
            LeasePhase::Rebinding
        } else if now >= self.renew_at() {
            LeasePhase::Renewing
        } else {
            LeasePhase::Bound
        }
    }
    /// How long to wait after a failed renewal or rebinding before the
    /// next: half the time left until T2 (or expiry), at least 60 s, and
    /// never past that point (RFC 2131 4.4.5).
    pub fn retry_delay(&self, now: u64) -> Duration {
        let until = match self.phase(now) {
            LeasePhase::Bound => return Duration::from_secs(self.renew_at() - now),
            LeasePhase::Renewing => self.rebind_at(),
            LeasePhase::Rebinding => self.expires_at(),
            LeasePhase::Expired => return Duration::ZERO,
        };
        let left = until - now;
        Duration::from_secs((left / 2).max(60).min(left))
    }
}

/// What an OFFER says about a network, without taking the address.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInfo {
    pub cidr: Ipv4Net,
    pub router: Option<Ipv4Addr>,
    pub server_id: Ipv4Addr,
    pub dns: Vec<Ipv4Addr>,
    pub offered_ip: Ipv4Addr,
    pub mtu: Option<u16>,
    pub domain: Option<String>,
    pub routes: Vec<(Ipv4Net, Ipv4Addr)>,
}

/// One request/reply transaction.
struct Exchange<'a> {
    spec: FrameSpec,
    msg: Message,
    /// When the client began (for the `secs` field and the error).
    started: Instant,
    want: &'a [MessageType],
    deadline: Instant,
    what: &'static str,
}

/// A DHCP client for one interface and MAC.
#[derive(Debug, Clone)]
pub struct Client {
    ifindex: u32,
    mac: MacAddr,
    opts: ClientOptions,
}

/// DISCOVER, OFFER, REQUEST, ACK on `ifindex` as `mac`.
pub async fn acquire(
    ifindex: u32,
    mac: MacAddr,
    hostname: Option<&str>,
) -> Result<ClientLease, ClientError> {
    let opts = ClientOptions {
        hostname: hostname.map(str::to_string),
        ..Default::default()
    };
    Client::with_options(ifindex, mac, opts).acquire().await
}

/// Renews (before T2, unicast) or rebinds (after T2, broadcast) `lease`.
pub async fn renew(lease: &ClientLease) -> Result<ClientLease, ClientError> {
    Client::for_lease(lease).renew(lease).await
}

/// Gives `lease` back.
pub async fn release(lease: &ClientLease) -> Result<(), ClientError> {
    Client::for_lease(lease).release(lease).await
}

/// Sends a DISCOVER and reads the first OFFER, without requesting it.
pub async fn discover(
    ifindex: u32,
    mac: MacAddr,
    timeout: Duration,
) -> Result<NetworkInfo, ClientError> {
    Client::new(ifindex, mac).discover(timeout).await
}

const REQUESTED: [u8; 13] = [1, 3, 6, 15, 26, 28, 42, 51, 54, 58, 59, 119, 121];

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Not cryptographic: transaction ids and retransmission jitter only need
/// to differ between clients and runs.
fn random_u32() -> u32 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish() as u32
}

fn mask_prefix(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let ones = m.leading_ones();
    (ones + m.trailing_zeros() >= 32).then_some(ones as u8)
}

/// The fields of an OFFER or ACK netd cares about.
struct Config {
    prefix: Option<u8>,
    router: Option<Ipv4Addr>,
    dns: Vec<Ipv4Addr>,
    domain: Option<String>,
    ntp: Vec<Ipv4Addr>,
    mtu: Option<u16>,
    routes: Vec<(Ipv4Net, Ipv4Addr)>,
    lease_time: Option<u32>,
    t1: Option<u32>,
    t2: Option<u32>,
}

fn config_of(m: &Message) -> Result<Config, ClientError> {
    let mut c = Config {
        prefix: None,
        router: None,
        dns: Vec::new(),
        domain: None,
        ntp: Vec::new(),
        mtu: None,
        routes: Vec::new(),
        lease_time: None,
        t1: None,
        t2: None,
    };
    let mut option3 = None;
    for (_, o) in m.opts().iter() {
        match o {
            DhcpOption::SubnetMask(mask) => {
                c.prefix = Some(mask_prefix(*mask).ok_or_else(|| {
                    ClientError::BadReply(format!("subnet mask {mask} is not contiguous"))
                })?);
            }
            DhcpOption::Router(r) => option3 = r.first().copied(),
            DhcpOption::DomainNameServer(d) => c.dns = d.clone(),
            DhcpOption::DomainName(d) => c.domain = Some(d.clone()),
            DhcpOption::NtpServers(n) => c.ntp = n.clone(),
            DhcpOption::InterfaceMtu(m) => c.mtu = Some(*m),
            DhcpOption::ClasslessStaticRoute(r) => c.routes = r.clone(),
            DhcpOption::AddressLeaseTime(t) => c.lease_time = Some(*t),
            DhcpOption::Renewal(t) => c.t1 = Some(*t),
            DhcpOption::Rebinding(t) => c.t2 = Some(*t),
            _ => {}
        }
    }
    c.router = if c.routes.is_empty() {
        option3
    } else {
        // RFC 3442: with 121 present, option 3 is ignored.
        c.routes
            .iter()
            .find(|(n, _)| n.prefix_len() == 0)
            .map(|(_, gw)| *gw)
    };
    Ok(c)
}

/// A classful default for servers that send no mask (RFC 1122 3.3.1.1's
/// fallback).
fn classful_prefix(ip: Ipv4Addr) -> u8 {
    match ip.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

impl Client {
    pub fn new(ifindex: u32, mac: MacAddr) -> Self {
        Self::with_options(ifindex, mac, ClientOptions::default())
    }

    pub fn with_options(ifindex: u32, mac: MacAddr, opts: ClientOptions) -> Self {
        Client { ifindex, mac, opts }
    }

    /// A client that renews `lease` with the identity it was obtained with.
    pub fn for_lease(lease: &ClientLease) -> Self {
        Self::with_options(
            lease.ifindex,
            lease.mac,
            ClientOptions {
                hostname: lease.hostname.clone(),
                client_id: Some(lease.client_id.clone()),
                ..Default::default()
            },
        )
    }

    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    fn client_id(&self) -> Vec<u8> {
        self.opts.client_id.clone().unwrap_or_else(|| {
            let mut id = vec![1];
            id.extend_from_slice(&self.mac.0);
            id
        })
    }

    fn message(&self, t: MessageType, xid: u32) -> Message {
        let mut m = Message::default();
        m.set_opcode(Opcode::BootRequest)
            .set_xid(xid)
            .set_chaddr(&self.mac.0);
        if self.opts.broadcast {
            m.set_flags(Flags::default().set_broadcast());
        }
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(t));
        o.insert(DhcpOption::ClientIdentifier(self.client_id()));
        if matches!(
            t,
            MessageType::Discover | MessageType::Request | MessageType::Inform
        ) {
            o.insert(DhcpOption::ParameterRequestList(
                REQUESTED.iter().map(|c| OptionCode::from(*c)).collect(),
            ));
            o.insert(DhcpOption::MaxMessageSize(1500));
            if let Some(h) = &self.opts.hostname {
                o.insert(DhcpOption::Hostname(h.clone()));
            }
        }
        m
    }

    fn broadcast_spec(&self, src_ip: Ipv4Addr) -> FrameSpec {
        FrameSpec {
            src_mac: self.mac,
            dst_mac: BROADCAST_MAC,
            vlan: self.opts.vlan,
            src_ip,
            dst_ip: Ipv4Addr::BROADCAST,
            src_port: CLIENT_PORT,
            dst_port: SERVER_PORT,
        }
    }

    fn wait(&self, attempt: u32) -> Duration {
        let base = self
            .opts
            .first_retransmit
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.opts.max_retransmit);
        if !self.opts.jitter {
            return base;
        }
        // Uniform in [-1 s, +1 s], never below 100 ms.
        let jitter_ms = i64::from(random_u32() % 2001) - 1000;
        let ms = (base.as_millis() as i64 + jitter_ms).max(100);
        Duration::from_millis(ms as u64)
    }

    /// Sends `msg` (rebuilt each time with the elapsed `secs`) until a
    /// reply of one of the `want` types with our xid arrives, or `deadline`.
    async fn exchange(&self, sock: &PacketSocket, x: Exchange<'_>) -> Result<Packet, ClientError> {
        let Exchange {
            spec,
            mut msg,
            started,
            want,
            deadline,
            what,
        } = x;
        let xid = msg.xid();
        let mut attempt = 0;
        loop {
            let secs = started.elapsed().as_secs().min(u64::from(u16::MAX)) as u16;
            msg.set_secs(secs);
            sock.send(&frame::build(&spec, &msg, 1500)?).await?;
            tracing::debug!(what, xid, attempt, "dhcp client sent");
            let now = Instant::now();
            if now >= deadline {
                return Err(ClientError::Timeout {
                    what,
                    after: deadline.saturating_duration_since(started),
                });
            }
            let wait = self.wait(attempt).min(deadline - now);
            match tokio::time::timeout(wait, self.receive(sock, xid, want)).await {
                Ok(r) => return r,
                Err(_) if Instant::now() >= deadline => {
                    return Err(ClientError::Timeout {
                        what,
                        after: deadline.saturating_duration_since(started),
                    })
                }
                Err(_) => attempt += 1,
            }
        }
    }

    async fn receive(
        &self,
        sock: &PacketSocket,
        xid: u32,
        want: &[MessageType],
    ) -> Result<Packet, ClientError> {
        let mut buf = vec![0u8; 9216];
        loop {
            let r = sock.recv(&mut buf).await?;
            if r.truncated {
                continue;
            }
            let opts = ParseOptions {
                udp_checksum_partial: r.checksum_partial,
                ..ParseOptions::to_client()
            };
            let p = match frame::parse(&buf[..r.len], opts) {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!(error = %e, "dhcp client: ignoring a frame");
                    continue;
                }
            };
            let ours = p.message.xid() == xid
                && codec::ethernet_chaddr(&p.message) == Some(self.mac.0)
                && codec::msg_type(&p.message).is_some_and(|t| want.contains(&t));
            if ours {
                return Ok(p);
            }
        }
    }

    fn lease_from(
        &self,
        ack: &Packet,
        server_id: Ipv4Addr,
        obtained_at: u64,
    ) -> Result<ClientLease, ClientError> {
        let m = &ack.message;
        let ip = m.yiaddr();
        if ip.is_unspecified() {
            return Err(ClientError::BadReply("ACK without an address".into()));
        }
        let c = config_of(m)?;
        let lease_time = c
            .lease_time
            .ok_or_else(|| ClientError::BadReply("ACK without a lease time".into()))?;
        // RFC 2131 4.4.5 defaults, and T1 <= T2 <= lease whatever was sent.
        let t2 =
            c.t2.unwrap_or((u64::from(lease_time) * 7 / 8) as u32)
                .min(lease_time);
        let t1 = c.t1.unwrap_or(lease_time / 2).min(t2);
        Ok(ClientLease {
            ifindex: self.ifindex,
            mac: self.mac,
            ip,
            prefix: c.prefix.unwrap_or_else(|| classful_prefix(ip)),
            router: c.router,
            dns: c.dns,
            domain: c.domain,
            ntp: c.ntp,
            server_id: codec::server_id(m).unwrap_or(server_id),
            server_mac: ack.addr.src_mac,
            lease_time,
            t1,
            t2,
            mtu: c.mtu,
            routes: c.routes,
            obtained_at,
            hostname: self.opts.hostname.clone(),
            client_id: self.client_id(),
        })
    }

    fn nak(p: &Packet) -> ClientError {
        let message = match p.message.opts().get(OptionCode::Message) {
            Some(DhcpOption::Message(s)) => Some(s.clone()),
            _ => None,
        };
        ClientError::Nak {
            server: codec::server_id(&p.message),
            message,
        }
    }

    /// DISCOVER, OFFER, REQUEST, ACK. A NAK or an unanswered REQUEST starts
    /// over with a new DISCOVER until `acquire_timeout`.
    pub async fn acquire(&self) -> Result<ClientLease, ClientError> {
        let sock = PacketSocket::open(self.ifindex, Role::Client)?;
        let started = Instant::now();
        let deadline = started + self.opts.acquire_timeout;
        let mut last_nak = None;
        while Instant::now() < deadline {
            let xid = random_u32();
            let offer = match self
                .exchange(
                    &sock,
                    Exchange {
                        spec: self.broadcast_spec(Ipv4Addr::UNSPECIFIED),
                        msg: self.message(MessageType::Discover, xid),
                        started,
                        want: &[MessageType::Offer],
                        deadline,
                        what: "DHCPOFFER",
                    },
                )
                .await
            {
                Ok(o) => o,
                Err(ClientError::Timeout { .. }) if last_nak.is_some() => break,
                Err(e) => return Err(e),
            };
            let offered = offer.message.yiaddr();
            let Some(server_id) = codec::server_id(&offer.message) else {
                tracing::debug!("dhcp client: OFFER without server identifier, ignored");
                continue;
            };
            if offered.is_unspecified() {
                continue;
            }
            tracing::debug!(%offered, %server_id, "dhcp client: offered");
            let mut req = self.message(MessageType::Request, xid);
            req.opts_mut()
                .insert(DhcpOption::RequestedIpAddress(offered));
            req.opts_mut()
                .insert(DhcpOption::ServerIdentifier(server_id));
            let obtained_at = unix_now();
            // A few retransmissions, then back to DISCOVER (RFC 2131 4.4.1).
            let request_deadline = deadline.min(Instant::now() + self.wait(0) * 4);
            match self
                .exchange(
                    &sock,
                    Exchange {
                        spec: self.broadcast_spec(Ipv4Addr::UNSPECIFIED),
                        msg: req,
                        started,
                        want: &[MessageType::Ack, MessageType::Nak],
                        deadline: request_deadline,
                        what: "DHCPACK",
                    },
                )
                .await
            {
                Ok(p) if codec::msg_type(&p.message) == Some(MessageType::Ack) => {
                    if p.message.yiaddr() != offered {
                        tracing::debug!("dhcp client: ACK for another address, starting over");
                        continue;
                    }
                    return self.lease_from(&p, server_id, obtained_at);
                }
                Ok(p) => {
                    let e = Self::nak(&p);
                    tracing::debug!(error = %e, "dhcp client: starting over");
                    last_nak = Some(e);
                }
                Err(ClientError::Timeout { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(last_nak.unwrap_or(ClientError::Timeout {
            what: "DHCPACK",
            after: self.opts.acquire_timeout,
        }))
    }

    /// Renews before T2 (REQUEST unicast to the server, RENEWING), rebinds
    /// after (broadcast, REBINDING). Err(Nak): the lease is gone, acquire
    /// anew. Err(Timeout): try again after [`ClientLease::retry_delay`].
    pub async fn renew(&self, lease: &ClientLease) -> Result<ClientLease, ClientError> {
        let now = unix_now();
        match lease.phase(now) {
            LeasePhase::Expired => Err(ClientError::Expired {
                expired_at: lease.expires_at(),
            }),
            LeasePhase::Rebinding => self.rebind(lease).await,
            LeasePhase::Bound | LeasePhase::Renewing => {
                let spec = FrameSpec {
                    src_mac: self.mac,
                    dst_mac: lease.server_mac,
                    vlan: self.opts.vlan,
                    src_ip: lease.ip,
                    dst_ip: lease.server_id,
                    src_port: CLIENT_PORT,
                    dst_port: SERVER_PORT,
                };
                self.extend(lease, spec, "DHCPACK to RENEWING").await
            }
        }
    }

    /// REBINDING: the renewal REQUEST broadcast to any server.
    pub async fn rebind(&self, lease: &ClientLease) -> Result<ClientLease, ClientError> {
        self.extend(lease, self.broadcast_spec(lease.ip), "DHCPACK to REBINDING")
            .await
    }

    async fn extend(
        &self,
        lease: &ClientLease,
        spec: FrameSpec,
        what: &'static str,
    ) -> Result<ClientLease, ClientError> {
        let sock = PacketSocket::open(self.ifindex, Role::Client)?;
        let mut req = self.message(MessageType::Request, random_u32());
        // RFC 2131 4.3.2: ciaddr set, no requested address, no server id.
        req.set_ciaddr(lease.ip);
        if self.opts.broadcast && spec.dst_mac != BROADCAST_MAC {
            req.set_flags(Flags::default());
        }
        let started = Instant::now();
        let obtained_at = unix_now();
        let p = self
            .exchange(
                &sock,
                Exchange {
                    spec,
                    msg: req,
                    started,
                    want: &[MessageType::Ack, MessageType::Nak],
                    deadline: started + self.opts.renew_timeout,
                    what,
                },
            )
            .await?;
        if codec::msg_type(&p.message) == Some(MessageType::Nak) {
            return Err(Self::nak(&p));
        }
        if p.message.yiaddr() != lease.ip {
            return Err(ClientError::BadReply(format!(
                "renewal ACK for {} instead of {}",
                p.message.yiaddr(),
                lease.ip
            )));
        }
        self.lease_from(&p, lease.server_id, obtained_at)
    }

    /// RELEASE, unicast to the server; not acknowledged (RFC 2131 4.4.6).
    pub async fn release(&self, lease: &ClientLease) -> Result<(), ClientError> {
        let sock = PacketSocket::open(self.ifindex, Role::Client)?;
        let mut m = self.message(MessageType::Release, random_u32());
        m.set_ciaddr(lease.ip).set_flags(Flags::default());
        m.opts_mut()
            .insert(DhcpOption::ServerIdentifier(lease.server_id));
        let spec = FrameSpec {
            src_mac: self.mac,
            dst_mac: lease.server_mac,
            vlan: self.opts.vlan,
            src_ip: lease.ip,
            dst_ip: lease.server_id,
            src_port: CLIENT_PORT,
            dst_port: SERVER_PORT,
        };
        sock.send(&frame::build(&spec, &m, 1500)?).await?;
        Ok(())
    }

    /// DECLINE (the address answers ARP for someone else), broadcast.
    pub async fn decline(&self, lease: &ClientLease) -> Result<(), ClientError> {
        let sock = PacketSocket::open(self.ifindex, Role::Client)?;
        let mut m = self.message(MessageType::Decline, random_u32());
        m.opts_mut()
            .insert(DhcpOption::RequestedIpAddress(lease.ip));
        m.opts_mut()
            .insert(DhcpOption::ServerIdentifier(lease.server_id));
        let spec = self.broadcast_spec(Ipv4Addr::UNSPECIFIED);
        sock.send(&frame::build(&spec, &m, 1500)?).await?;
        Ok(())
    }

    /// Sends a DISCOVER and reads the first OFFER, without requesting the
    /// address (the offer lapses on the server by itself).
    pub async fn discover(&self, timeout: Duration) -> Result<NetworkInfo, ClientError> {
        let sock = PacketSocket::open(self.ifindex, Role::Client)?;
        let started = Instant::now();
        let offer = self
            .exchange(
                &sock,
                Exchange {
                    spec: self.broadcast_spec(Ipv4Addr::UNSPECIFIED),
                    msg: self.message(MessageType::Discover, random_u32()),
                    started,
                    want: &[MessageType::Offer],
                    deadline: started + timeout,
                    what: "DHCPOFFER",
                },
            )
            .await?;
        let m = &offer.message;
        let c = config_of(m)?;
        let offered_ip = m.yiaddr();
        let prefix = c
            .prefix
            .ok_or_else(|| ClientError::BadReply("OFFER without a subnet mask".into()))?;
        let cidr = Ipv4Net::new(offered_ip, prefix)
            .map_err(|e| ClientError::BadReply(e.to_string()))?
            .trunc();
        let server_id = codec::server_id(m)
            .ok_or_else(|| ClientError::BadReply("OFFER without a server identifier".into()))?;
        Ok(NetworkInfo {
            cidr,
            router: c.router,
            server_id,
            dns: c.dns,
            offered_ip,
            mtu: c.mtu,
            domain: c.domain,
            routes: c.routes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> ClientLease {
        ClientLease {
            ifindex: 1,
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
            ip: Ipv4Addr::new(10, 0, 0, 5),
            prefix: 24,
            router: None,
            dns: vec![],
            domain: None,
            ntp: vec![],
            server_id: Ipv4Addr::new(10, 0, 0, 1),
            server_mac: MacAddr([2, 0, 0, 0, 0, 2]),
            lease_time: 1000,
            t1: 500,
            t2: 875,
            mtu: None,
            routes: vec![],
            obtained_at: 10_000,
            hostname: None,
            client_id: vec![1, 2, 0, 0, 0, 0, 1],
        }
    }

    #[test]
    fn lease_phases_and_retry_delays_follow_rfc2131_4_4_5() {
        let l = lease();
        assert_eq!(l.cidr(), "10.0.0.0/24".parse::<Ipv4Net>().unwrap());
        assert_eq!(l.phase(10_000), LeasePhase::Bound);
        assert_eq!(l.retry_delay(10_100), Duration::from_secs(400));
        assert_eq!(l.phase(10_500), LeasePhase::Renewing);
        // Half of the 375 s left until T2.
        assert_eq!(l.retry_delay(10_500), Duration::from_secs(187));
        // At least 60 s, but never past T2.
        assert_eq!(l.retry_delay(10_800), Duration::from_secs(60));
        assert_eq!(l.retry_delay(10_850), Duration::from_secs(25));
        assert_eq!(l.phase(10_875), LeasePhase::Rebinding);
        assert_eq!(l.retry_delay(10_875), Duration::from_secs(62));
        assert_eq!(l.phase(11_000), LeasePhase::Expired);
        assert_eq!(l.retry_delay(11_000), Duration::ZERO);
    }

    #[test]
    fn retransmissions_double_up_to_64_s() {
        let c = Client::with_options(
            1,
            MacAddr([2, 0, 0, 0, 0, 1]),
            ClientOptions {
                jitter: false,
                ..Default::default()
            },
        );
        let waits: Vec<u64> = (0..7).map(|a| c.wait(a).as_secs()).collect();
        assert_eq!(waits, vec![4, 8, 16, 32, 64, 64, 64]);
        let j = Client::new(1, MacAddr([2, 0, 0, 0, 0, 1]));
        for a in 0..6 {
            let w = j.wait(a).as_millis() as i64;
            let base = c.wait(a).as_millis() as i64;
            assert!((w - base).abs() <= 1000, "{w} vs {base}");
        }
    }

    #[test]
    fn masks_and_the_rfc3442_router_rule() {
        assert_eq!(mask_prefix(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(mask_prefix(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(mask_prefix(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(mask_prefix(Ipv4Addr::new(255, 0, 255, 0)), None);
        let mut m = Message::default();
        m.opts_mut()
            .insert(DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 0, 1)]));
        assert_eq!(
            config_of(&m).unwrap().router,
            Some(Ipv4Addr::new(10, 0, 0, 1))
        );
        m.opts_mut().insert(DhcpOption::ClasslessStaticRoute(vec![
            (
                "192.168.0.0/16".parse().unwrap(),
                Ipv4Addr::new(10, 0, 0, 9),
            ),
            (Ipv4Net::default(), Ipv4Addr::new(10, 0, 0, 254)),
        ]));
        assert_eq!(
            config_of(&m).unwrap().router,
            Some(Ipv4Addr::new(10, 0, 0, 254))
        );
        m.opts_mut()
            .insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 0, 255, 0)));
        assert!(matches!(config_of(&m), Err(ClientError::BadReply(_))));
    }
}
