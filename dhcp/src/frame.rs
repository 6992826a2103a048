//! Raw Ethernet frames carrying DHCP: parsing what an AF_PACKET socket
//! reads and building what it writes.
//!
//! Every length is checked against the buffer before it is used, and every
//! refusal is a [`FrameError`] variant: the parser never panics, whatever
//! the input (see the fuzz target in `dhcp/fuzz`).

use std::net::Ipv4Addr;

use dhcproto::v4::{Message, Opcode};
use furrow_api::MacAddr;
use thiserror::Error;

use crate::codec::{self, MessageError};

pub const ETH_HEADER_LEN: usize = 14;
pub const VLAN_TAG_LEN: usize = 4;
pub const IPV4_HEADER_LEN: usize = 20;
pub const UDP_HEADER_LEN: usize = 8;
/// Frames shorter than this (without FCS) are runts on the wire.
pub const MIN_FRAME_LEN: usize = 60;
/// RFC 2131: every client accepts a 576-byte IP datagram.
pub const DEFAULT_MAX_MESSAGE: usize = 576;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
const TTL: u8 = 64;

pub const BROADCAST_MAC: MacAddr = MacAddr([0xff; 6]);

/// An 802.1Q (or 802.1ad) tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanTag {
    pub tpid: u16,
    pub tci: u16,
}

impl VlanTag {
    pub fn new(vid: u16) -> Self {
        VlanTag {
            tpid: ETHERTYPE_VLAN,
            tci: vid & 0x0fff,
        }
    }
    pub fn vid(&self) -> u16 {
        self.tci & 0x0fff
    }
}

/// Which way the frame should be going; decides the expected UDP
/// destination port and BOOTP op code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client (or relay) to server: UDP port 67, BOOTREQUEST.
    ToServer,
    /// Server to client: UDP port 68, BOOTREPLY.
    ToClient,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseOptions {
    pub direction: Direction,
    /// The kernel said the UDP checksum is not filled in yet
    /// (TP_STATUS_CSUMNOTREADY: the sender offloaded it and the frame never
    /// left the host, e.g. across a veth). Only then is it not verified.
    pub udp_checksum_partial: bool,
}

impl ParseOptions {
    pub fn to_server() -> Self {
        ParseOptions {
            direction: Direction::ToServer,
            udp_checksum_partial: false,
        }
    }
    pub fn to_client() -> Self {
        ParseOptions {
            direction: Direction::ToClient,
            udp_checksum_partial: false,
        }
    }
}

/// Layer 2-4 addressing of a parsed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addressing {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    /// The tag carried in the frame itself; a tag the kernel stripped
    /// (VLAN offload) is in [`crate::socket::Received::vlan`] instead.
    pub vlan: Option<VlanTag>,
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
}

/// A parsed DHCP frame.
#[derive(Debug, Clone)]
pub struct Packet {
    pub addr: Addressing,
    pub message: Message,
    /// Malformed options that were dropped (see [`codec::Decoded`]).
    pub ignored_options: Vec<u8>,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {len} bytes is shorter than an Ethernet header")]
    EthernetTruncated { len: usize },
    #[error("frame of {len} bytes ends inside its VLAN tag")]
    VlanTruncated { len: usize },
    #[error("ethertype {0:#06x} is not IPv4")]
    NotIpv4(u16),
    #[error("{len} bytes after the Ethernet header: too short for an IPv4 header")]
    IpTruncated { len: usize },
    #[error("IP version {0}, expected 4")]
    IpVersion(u8),
    #[error("IP header length {ihl} bytes: expected 20 to {available}")]
    IpHeaderLength { ihl: usize, available: usize },
    #[error("IP total length {total}: expected {min} to {available}")]
    IpTotalLength {
        total: usize,
        min: usize,
        available: usize,
    },
    #[error("IP header checksum {got:#06x} is wrong")]
    IpChecksum { got: u16 },
    #[error("IP fragment (offset {offset}, more fragments {more}): DHCP is never fragmented here")]
    IpFragment { offset: u16, more: bool },
    #[error("IP protocol {0} is not UDP")]
    NotUdp(u8),
    #[error("UDP length {len}: expected 8 to {available}")]
    UdpLength { len: usize, available: usize },
    #[error("UDP checksum {got:#06x} is wrong")]
    UdpChecksum { got: u16 },
    #[error("UDP {src} -> {dst} is not DHCP in this direction (expected destination {expected})")]
    NotDhcpPort { src: u16, dst: u16, expected: u16 },
    #[error("op code {op}: expected {expected} in this direction")]
    WrongOp { op: u8, expected: u8 },
    #[error(transparent)]
    Message(#[from] MessageError),
}

#[derive(Debug, Error)]
pub enum BuildError {
    #[error(transparent)]
    Encode(#[from] codec::EncodeError),
    #[error("a {len}-byte IP datagram exceeds the client's {max}-byte maximum")]
    TooLarge { len: usize, max: usize },
}

fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

fn mac_at(b: &[u8], i: usize) -> MacAddr {
    let mut m = [0u8; 6];
    m.copy_from_slice(&b[i..i + 6]);
    MacAddr(m)
}

/// Ones' complement sum of `data`, not yet folded or inverted.
fn sum16(data: &[u8], mut acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum16(data, 0))
}

/// The UDP checksum of `udp` (header with checksum field as given, plus
/// payload) under the IPv4 pseudo-header. 0 means "verified" when the field
/// is already filled in.
pub fn udp_checksum(src: Ipv4Addr, dst: Ipv4Addr, udp: &[u8]) -> u16 {
    let mut acc = sum16(&src.octets(), 0);
    acc = sum16(&dst.octets(), acc);
    acc += 17 + udp.len() as u32;
    !fold(sum16(udp, acc))
}

/// Parses a raw Ethernet frame carrying IPv4/UDP/DHCP.
pub fn parse(frame: &[u8], opts: ParseOptions) -> Result<Packet, FrameError> {
    if frame.len() < ETH_HEADER_LEN {
        return Err(FrameError::EthernetTruncated { len: frame.len() });
    }
    let dst_mac = mac_at(frame, 0);
    let src_mac = mac_at(frame, 6);
    let mut ethertype = be16(frame, 12);
    let mut off = ETH_HEADER_LEN;
    let mut vlan = None;
    if ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
        if frame.len() < ETH_HEADER_LEN + VLAN_TAG_LEN {
            return Err(FrameError::VlanTruncated { len: frame.len() });
        }
        vlan = Some(VlanTag {
            tpid: ethertype,
            tci: be16(frame, 14),
        });
        ethertype = be16(frame, 16);
        off += VLAN_TAG_LEN;
    }
    if ethertype != ETHERTYPE_IPV4 {
        // Includes a second tag: one responder serves one VLAN, so stacked
        // tags are not ours to unwrap.
        return Err(FrameError::NotIpv4(ethertype));
    }

    let ip = &frame[off..];
    if ip.len() < IPV4_HEADER_LEN {
        return Err(FrameError::IpTruncated { len: ip.len() });
    }
    let version = ip[0] >> 4;
    if version != 4 {
        return Err(FrameError::IpVersion(version));
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ihl < IPV4_HEADER_LEN || ihl > ip.len() {
        return Err(FrameError::IpHeaderLength {
            ihl,
            available: ip.len(),
        });
    }
    let total = usize::from(be16(ip, 2));
    // Anything past `total` is Ethernet padding.
    if total < ihl + UDP_HEADER_LEN || total > ip.len() {
        return Err(FrameError::IpTotalLength {
            total,
            min: ihl + UDP_HEADER_LEN,
            available: ip.len(),
        });
    }
    // The IPv4 header checksum is always computed in software, so unlike
    // UDP's it is never legitimately missing.
    if checksum(&ip[..ihl]) != 0 {
        return Err(FrameError::IpChecksum { got: be16(ip, 10) });
    }
    let frag = be16(ip, 6);
    let (more, offset) = (frag & 0x2000 != 0, frag & 0x1fff);
    if more || offset != 0 {
        return Err(FrameError::IpFragment { offset, more });
    }
    if ip[9] != 17 {
        return Err(FrameError::NotUdp(ip[9]));
    }
    let src_ip = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst_ip = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);

    let udp = &ip[ihl..total];
    let udp_len = usize::from(be16(udp, 4));
    if udp_len < UDP_HEADER_LEN || udp_len > udp.len() {
        return Err(FrameError::UdpLength {
            len: udp_len,
            available: udp.len(),
        });
    }
    let udp = &udp[..udp_len];
    let (src_port, dst_port) = (be16(udp, 0), be16(udp, 2));
    let (expected_port, expected_op) = match opts.direction {
        Direction::ToServer => (SERVER_PORT, Opcode::BootRequest),
        Direction::ToClient => (CLIENT_PORT, Opcode::BootReply),
    };
    if dst_port != expected_port {
        return Err(FrameError::NotDhcpPort {
            src: src_port,
            dst: dst_port,
            expected: expected_port,
        });
    }
    let sum = be16(udp, 6);
    // 0: the sender computed none (allowed for UDP over IPv4).
    if sum != 0 && !opts.udp_checksum_partial && udp_checksum(src_ip, dst_ip, udp) != 0 {
        return Err(FrameError::UdpChecksum { got: sum });
    }

    let decoded = codec::decode(&udp[UDP_HEADER_LEN..])?;
    if decoded.message.opcode() != expected_op {
        return Err(FrameError::WrongOp {
            op: u8::from(decoded.message.opcode()),
            expected: u8::from(expected_op),
        });
    }
    Ok(Packet {
        addr: Addressing {
            src_mac,
            dst_mac,
            vlan,
            src_ip,
            dst_ip,
            src_port,
            dst_port,
        },
        message: decoded.message,
        ignored_options: decoded.ignored_options,
    })
}

/// Where a frame goes, at every layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSpec {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub vlan: Option<VlanTag>,
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
}

/// Builds an Ethernet/IPv4/UDP frame around `msg`. The DHCP payload is
/// padded to 300 bytes (BOOTP minimum) and the frame to 60; the IP datagram
/// must fit in `max_ip_len` (the client's maximum message size).
pub fn build(spec: &FrameSpec, msg: &Message, max_ip_len: usize) -> Result<Vec<u8>, BuildError> {
    let payload = codec::encode(msg, codec::MIN_ENCODED_LEN)?;
    build_raw(spec, &payload, max_ip_len)
}

/// Builds the frame around an already encoded UDP payload (tests and the
/// fuzz target use it to wrap arbitrary bytes in valid headers).
pub fn build_raw(
    spec: &FrameSpec,
    payload: &[u8],
    max_ip_len: usize,
) -> Result<Vec<u8>, BuildError> {
    let udp_len = UDP_HEADER_LEN + payload.len();
    let ip_len = IPV4_HEADER_LEN + udp_len;
    if ip_len > max_ip_len || ip_len > usize::from(u16::MAX) {
        return Err(BuildError::TooLarge {
            len: ip_len,
            max: max_ip_len,
        });
    }
    let mut f = Vec::with_capacity(ETH_HEADER_LEN + VLAN_TAG_LEN + ip_len);
    f.extend_from_slice(&spec.dst_mac.0);
    f.extend_from_slice(&spec.src_mac.0);
    if let Some(tag) = spec.vlan {
        f.extend_from_slice(&tag.tpid.to_be_bytes());
        f.extend_from_slice(&tag.tci.to_be_bytes());
    }
    f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());

    let ip_start = f.len();
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&(ip_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0, TTL, 17, 0, 0]);
    f.extend_from_slice(&spec.src_ip.octets());
    f.extend_from_slice(&spec.dst_ip.octets());
    let csum = checksum(&f[ip_start..ip_start + IPV4_HEADER_LEN]);
    f[ip_start + 10..ip_start + 12].copy_from_slice(&csum.to_be_bytes());

    let udp_start = f.len();
    f.extend_from_slice(&spec.src_port.to_be_bytes());
    f.extend_from_slice(&spec.dst_port.to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    let mut csum = udp_checksum(spec.src_ip, spec.dst_ip, &f[udp_start..]);
    if csum == 0 {
        // 0 on the wire means "no checksum"; a computed 0 is sent as ~0.
        csum = 0xffff;
    }
    f[udp_start + 6..udp_start + 8].copy_from_slice(&csum.to_be_bytes());

    if f.len() < MIN_FRAME_LEN {
        f.resize(MIN_FRAME_LEN, 0);
    }
    Ok(f)
}

/// How a server reply reaches the client (RFC 2131 4.1, "If the 'giaddr'
/// field in a DHCP message from a client is non-zero ...").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Relayed: to the relay agent at `giaddr`, UDP 67 -> 67, Ethernet to
    /// the request's source (the relay, or the next hop towards it).
    Relay { giaddr: Ipv4Addr },
    /// The client has an address (RENEWING, REBINDING, INFORM): IP unicast
    /// to it, Ethernet to the request's source.
    Ciaddr { ip: Ipv4Addr },
    /// The client has no address yet and can receive unicast: IP to the
    /// address being handed out, Ethernet to its hardware address.
    Yiaddr { ip: Ipv4Addr, chaddr: MacAddr },
    /// The client asked for broadcast, or this is a NAK: 255.255.255.255.
    Broadcast,
}

impl Delivery {
    /// RFC 2131 4.1 for a reply to `req`. `nak`: DHCPNAKs are broadcast
    /// when not relayed.
    pub fn for_reply(req: &Message, yiaddr: Ipv4Addr, nak: bool) -> Delivery {
        let (giaddr, ciaddr) = (req.giaddr(), req.ciaddr());
        if !giaddr.is_unspecified() {
            return Delivery::Relay { giaddr };
        }
        if nak {
            return Delivery::Broadcast;
        }
        if !ciaddr.is_unspecified() {
            return Delivery::Ciaddr { ip: ciaddr };
        }
        match codec::ethernet_chaddr(req) {
            Some(mac) if !req.flags().broadcast() && !yiaddr.is_unspecified() => Delivery::Yiaddr {
                ip: yiaddr,
                chaddr: MacAddr(mac),
            },
            _ => Delivery::Broadcast,
        }
    }
}

/// The server's own addresses (anycast: the same on every node).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerAddr {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
}

/// Builds the frame for a server reply to the request that arrived with
/// `request` addressing. The VLAN tag of the request, if it had one in the
/// frame, is put back.
pub fn build_reply(
    server: ServerAddr,
    request: &Addressing,
    message: &Message,
    delivery: Delivery,
    max_ip_len: usize,
) -> Result<Vec<u8>, BuildError> {
    let (dst_mac, dst_ip, dst_port) = match delivery {
        Delivery::Relay { giaddr } => (request.src_mac, giaddr, SERVER_PORT),
        Delivery::Ciaddr { ip } => (request.src_mac, ip, CLIENT_PORT),
        Delivery::Yiaddr { ip, chaddr } => (chaddr, ip, CLIENT_PORT),
        Delivery::Broadcast => (BROADCAST_MAC, Ipv4Addr::BROADCAST, CLIENT_PORT),
    };
    let spec = FrameSpec {
        src_mac: server.mac,
        dst_mac,
        vlan: request.vlan,
        src_ip: server.ip,
        dst_ip,
        src_port: SERVER_PORT,
        dst_port,
    };
    build(&spec, message, max_ip_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::{DhcpOption, Flags, MessageType};

    const CMAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);

    fn discover() -> Message {
        let mut m = Message::default();
        m.set_chaddr(&CMAC.0).set_xid(0x1234_5678);
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Discover));
        m
    }

    fn client_frame(vlan: Option<VlanTag>) -> Vec<u8> {
        build(
            &FrameSpec {
                src_mac: CMAC,
                dst_mac: BROADCAST_MAC,
                vlan,
                src_ip: Ipv4Addr::UNSPECIFIED,
                dst_ip: Ipv4Addr::BROADCAST,
                src_port: CLIENT_PORT,
                dst_port: SERVER_PORT,
            },
            &discover(),
            DEFAULT_MAX_MESSAGE,
        )
        .unwrap()
    }

    fn eth_off(f: &[u8]) -> usize {
        if be16(f, 12) == ETHERTYPE_VLAN {
            18
        } else {
            14
        }
    }

    /// Rewrites the IP checksum after a test edited the header.
    fn fix_ip_sum(f: &mut [u8]) {
        let o = eth_off(f);
        f[o + 10] = 0;
        f[o + 11] = 0;
        let s = checksum(&f[o..o + 20]);
        f[o + 10..o + 12].copy_from_slice(&s.to_be_bytes());
    }

    #[test]
    fn roundtrip_untagged_and_tagged() {
        for vlan in [None, Some(VlanTag::new(100))] {
            let f = client_frame(vlan);
            let p = parse(&f, ParseOptions::to_server()).unwrap();
            assert_eq!(p.addr.vlan, vlan);
            assert_eq!(p.addr.src_mac, CMAC);
            assert_eq!(p.addr.dst_ip, Ipv4Addr::BROADCAST);
            assert_eq!(p.message.xid(), 0x1234_5678);
            assert_eq!(codec::msg_type(&p.message), Some(MessageType::Discover));
        }
    }

    #[test]
    fn checksums_verify_by_recomputation() {
        let f = client_frame(None);
        let ip = &f[14..34];
        // Summing a header that includes its checksum gives zero.
        assert_eq!(checksum(ip), 0);
        // Independent recomputation: zero the field, recompute, compare.
        let mut h = ip.to_vec();
        let stored = be16(&h, 10);
        h[10] = 0;
        h[11] = 0;
        assert_eq!(checksum(&h), stored);
        assert_ne!(stored, 0);
        let total = usize::from(be16(ip, 2));
        let udp = &f[34..14 + total];
        assert_eq!(
            udp_checksum(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, udp),
            0
        );
        let mut u = udp.to_vec();
        let stored = be16(&u, 6);
        u[6] = 0;
        u[7] = 0;
        assert_eq!(
            udp_checksum(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, &u),
            stored
        );
        // TTL 64, UDP 68 -> 67, payload padded to 300.
        assert_eq!(ip[8], 64);
        assert_eq!(usize::from(be16(udp, 4)), 8 + 300);
    }

    #[test]
    fn known_checksum_vector() {
        // The IPv4 header from RFC 1071 discussions / Wikipedia's example.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), 0xb861);
    }

    #[test]
    fn truncations_are_typed() {
        let f = client_frame(None);
        assert_eq!(
            parse(&f[..10], ParseOptions::to_server()).unwrap_err(),
            FrameError::EthernetTruncated { len: 10 }
        );
        assert_eq!(
            parse(&f[..30], ParseOptions::to_server()).unwrap_err(),
            FrameError::IpTruncated { len: 16 }
        );
        // Cut inside the DHCP payload: IP total length now exceeds the frame.
        assert!(matches!(
            parse(&f[..200], ParseOptions::to_server()).unwrap_err(),
            FrameError::IpTotalLength { .. }
        ));
        let t = client_frame(Some(VlanTag::new(5)));
        assert_eq!(
            parse(&t[..16], ParseOptions::to_server()).unwrap_err(),
            FrameError::VlanTruncated { len: 16 }
        );
        // Every prefix of a valid frame fails cleanly.
        for n in 0..f.len() {
            let _ = parse(&f[..n], ParseOptions::to_server());
        }
    }

    #[test]
    fn bad_lengths_are_typed() {
        // UDP length larger than the IP payload ("oversized").
        let mut f = client_frame(None);
        f[38..40].copy_from_slice(&2000u16.to_be_bytes());
        assert!(matches!(
            parse(&f, ParseOptions::to_server()).unwrap_err(),
            FrameError::UdpLength { len: 2000, .. }
        ));
        // UDP length below the header size.
        let mut f = client_frame(None);
        f[38..40].copy_from_slice(&4u16.to_be_bytes());
        assert!(matches!(
            parse(&f, ParseOptions::to_server()).unwrap_err(),
            FrameError::UdpLength { len: 4, .. }
        ));
        // IP total length larger than the frame.
        let mut f = client_frame(None);
        f[16..18].copy_from_slice(&9000u16.to_be_bytes());
        fix_ip_sum(&mut f);
        assert!(matches!(
            parse(&f, ParseOptions::to_server()).unwrap_err(),
            FrameError::IpTotalLength { total: 9000, .. }
        ));
        // IHL of 4 words (16 bytes) and of 15 words past a tiny frame.
        let mut f = client_frame(None);
        f[14] = 0x44;
        assert!(matches!(
            parse(&f, ParseOptions::to_server()).unwrap_err(),
            FrameError::IpHeaderLength { ihl: 16, .. }
        ));
        // A DHCP payload shorter than 240 bytes inside consistent headers.
        let mut f = client_frame(None);
        let short = 20 + 8 + 100;
        f[16..18].copy_from_slice(&(short as u16).to_be_bytes());
        fix_ip_sum(&mut f);
        f[38..40].copy_from_slice(&108u16.to_be_bytes());
        f[40] = 0;
        f[41] = 0;
        assert_eq!(
            parse(&f, ParseOptions::to_server()).unwrap_err(),
            FrameError::Message(MessageError::TooShort { len: 100 })
        );
        // Extra Ethernet padding past the IP datagram is fine.
        let mut f = client_frame(None);
        f.extend([0u8; 40]);
        assert!(parse(&f, ParseOptions::to_server()).is_ok());
    }

    #[test]
    fn wrong_op_hlen_port_checksum() {
        let mut f = client_frame(None);
        // op 2 (BOOTREPLY) toward the server.
        f[42] = 2;
        f[40] = 0;
        f[41] = 0; // no UDP checksum, so only the op is wrong
        assert_eq!(
            parse(&f, ParseOptions::to_server()).unwrap_err(),
            FrameError::WrongOp { op: 2, expected: 1 }
        );
        let mut f = client_frame(None);
        f[44] = 20; // hlen
        f[40] = 0;
        f[41] = 0;
        assert_eq!(
            parse(&f, ParseOptions::to_server()).unwrap_err(),
            FrameError::Message(MessageError::BadHardware { htype: 1, hlen: 20 })
        );
        let f = client_frame(None);
        assert!(matches!(
            parse(&f, ParseOptions::to_client()).unwrap_err(),
            FrameError::NotDhcpPort {
                dst: 67,
                expected: 68,
                ..
            }
        ));
        let mut f = client_frame(None);
        f[100] ^= 0x55;
        assert!(matches!(
            parse(&f, ParseOptions::to_server()).unwrap_err(),
            FrameError::UdpChecksum { .. }
        ));
        // Unless the kernel says the checksum is still partial.
        let opts = ParseOptions {
            udp_checksum_partial: true,
            ..ParseOptions::to_server()
        };
        assert!(parse(&f, opts).is_ok());
        let mut f = client_frame(None);
        f[22] = 63; // TTL change without fixing the checksum
        assert!(matches!(
            parse(&f, ParseOptions::to_server()).unwrap_err(),
            FrameError::IpChecksum { .. }
        ));
        let mut f = client_frame(None);
        f[20] = 0x20; // more fragments
        fix_ip_sum(&mut f);
        assert!(matches!(
            parse(&f, ParseOptions::to_server()).unwrap_err(),
            FrameError::IpFragment { more: true, .. }
        ));
        let mut f = client_frame(None);
        f[12] = 0x86;
        f[13] = 0xdd;
        assert_eq!(
            parse(&f, ParseOptions::to_server()).unwrap_err(),
            FrameError::NotIpv4(0x86dd)
        );
    }

    #[test]
    fn delivery_follows_rfc2131_4_1() {
        let mut req = discover();
        let y = Ipv4Addr::new(10, 0, 0, 9);
        assert_eq!(
            Delivery::for_reply(&req, y, false),
            Delivery::Yiaddr {
                ip: y,
                chaddr: CMAC
            }
        );
        assert_eq!(Delivery::for_reply(&req, y, true), Delivery::Broadcast);
        req.set_flags(Flags::default().set_broadcast());
        assert_eq!(Delivery::for_reply(&req, y, false), Delivery::Broadcast);
        req.set_ciaddr(Ipv4Addr::new(10, 0, 0, 8));
        assert_eq!(
            Delivery::for_reply(&req, y, false),
            Delivery::Ciaddr {
                ip: Ipv4Addr::new(10, 0, 0, 8)
            }
        );
        req.set_giaddr(Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(
            Delivery::for_reply(&req, y, true),
            Delivery::Relay {
                giaddr: Ipv4Addr::new(10, 0, 0, 1)
            }
        );
    }

    #[test]
    fn reply_frames_address_each_delivery() {
        let server = ServerAddr {
            mac: MacAddr([2, 0, 0, 0, 0, 0x67]),
            ip: Ipv4Addr::new(10, 0, 0, 2),
        };
        let req = parse(
            &client_frame(Some(VlanTag::new(7))),
            ParseOptions::to_server(),
        )
        .unwrap();
        let mut reply = discover();
        reply.set_opcode(Opcode::BootReply);
        let relay = Ipv4Addr::new(10, 0, 0, 1);
        for (d, mac, ip, port) in [
            (Delivery::Broadcast, BROADCAST_MAC, Ipv4Addr::BROADCAST, 68),
            (
                Delivery::Yiaddr {
                    ip: Ipv4Addr::new(10, 0, 0, 9),
                    chaddr: CMAC,
                },
                CMAC,
                Ipv4Addr::new(10, 0, 0, 9),
                68,
            ),
            (Delivery::Relay { giaddr: relay }, CMAC, relay, 67),
        ] {
            let f = build_reply(server, &req.addr, &reply, d, DEFAULT_MAX_MESSAGE).unwrap();
            assert!(f.len() >= MIN_FRAME_LEN);
            let back = if port == 68 {
                parse(&f, ParseOptions::to_client()).unwrap()
            } else {
                // To a relay the reply goes to port 67 but is still a reply.
                let err = parse(&f, ParseOptions::to_server()).unwrap_err();
                assert_eq!(err, FrameError::WrongOp { op: 2, expected: 1 });
                continue;
            };
            assert_eq!(back.addr.dst_mac, mac);
            assert_eq!(back.addr.dst_ip, ip);
            assert_eq!(back.addr.src_ip, server.ip);
            assert_eq!(back.addr.src_mac, server.mac);
            assert_eq!(back.addr.vlan, Some(VlanTag::new(7)));
            assert_eq!((back.addr.src_port, back.addr.dst_port), (67, port));
        }
    }

    #[test]
    fn max_message_size_is_enforced() {
        let mut m = discover();
        m.opts_mut()
            .insert(DhcpOption::VendorExtensions(vec![7; 600]));
        let spec = FrameSpec {
            src_mac: CMAC,
            dst_mac: BROADCAST_MAC,
            vlan: None,
            src_ip: Ipv4Addr::UNSPECIFIED,
            dst_ip: Ipv4Addr::BROADCAST,
            src_port: 68,
            dst_port: 67,
        };
        assert!(matches!(
            build(&spec, &m, DEFAULT_MAX_MESSAGE),
            Err(BuildError::TooLarge { max: 576, .. })
        ));
        assert!(build(&spec, &m, 1500).is_ok());
    }
}
