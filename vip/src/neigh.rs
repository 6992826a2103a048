//! ARP and IPv6 neighbour discovery frames.
//!
//! Sent: what tells a segment who holds a VIP now, gratuitous ARP (RFC
//! 5227 section 3: an ARP request and an ARP reply with sender = target =
//! the VIP, both broadcast, because switches and hosts differ in which
//! they honour) and, for IPv6, an unsolicited neighbour advertisement to
//! all-nodes with the override flag (RFC 4861 section 7.2.6); and the ARP
//! replies of netd's DHCP responders, whose server address is on no
//! kernel interface.
//!
//! Received: the ARP requests those responders answer come from VMs, so
//! [`parse_arp`] and [`arp_reply_for`] take any bytes without panicking
//! (fuzzed in fuzz/, target `arp_nd`). [`parse_nd`] reads neighbour
//! solicitations and advertisements the same way, checksum and all.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const BROADCAST: [u8; 6] = [0xff; 6];
/// Ethernet frames shorter than this (without FCS) are padded.
const MIN_FRAME: usize = 60;
const ETH_HEADER: usize = 14;
/// ARP for IPv4 over Ethernet.
const ARP_LEN: usize = 28;
const IPV6_HEADER: usize = 40;
const ICMPV6: u8 = 58;
const ND_NS: u8 = 135;
const ND_NA: u8 = 136;
/// Option types: source / target link-layer address.
const OPT_SLLA: u8 = 1;
const OPT_TLLA: u8 = 2;

pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NeighError {
    #[error("frame too short: {got} bytes, expected at least {need}")]
    Short { need: usize, got: usize },
    #[error("ethertype {0:#06x} is not {1}")]
    Ethertype(u16, &'static str),
    #[error("not ARP for IPv4 over Ethernet ({0})")]
    ArpFormat(&'static str),
    #[error("not an ICMPv6 neighbour discovery message ({0})")]
    NotNd(&'static str),
    #[error("hop limit {0}: neighbour discovery needs 255 (RFC 4861)")]
    HopLimit(u8),
    #[error("ICMPv6 checksum {got:#06x}, expected {want:#06x}")]
    Checksum { got: u16, want: u16 },
    #[error("neighbour discovery option: {0}")]
    Option(&'static str),
}

/// An Ethernet header (untagged: the packet sockets see frames with the
/// 802.1Q tag already taken off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ethernet {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ethertype: u16,
}

impl Ethernet {
    pub fn parse(frame: &[u8]) -> Result<Ethernet, NeighError> {
        if frame.len() < ETH_HEADER {
            return Err(NeighError::Short {
                need: ETH_HEADER,
                got: frame.len(),
            });
        }
        Ok(Ethernet {
            dst: mac_at(frame, 0),
            src: mac_at(frame, 6),
            ethertype: u16::from_be_bytes([frame[12], frame[13]]),
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.dst);
        out.extend_from_slice(&self.src);
        out.extend_from_slice(&self.ethertype.to_be_bytes());
    }
}

fn mac_at(b: &[u8], at: usize) -> [u8; 6] {
    let mut m = [0u8; 6];
    m.copy_from_slice(&b[at..at + 6]);
    m
}

fn v4_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

fn v6_at(b: &[u8], at: usize) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&b[at..at + 16]);
    Ipv6Addr::from(o)
}

/// ARP operation codes.
pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;

/// An ARP message for IPv4 over Ethernet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    pub op: u16,
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
    pub target_mac: [u8; 6],
    pub target_ip: Ipv4Addr,
}

impl Arp {
    /// The frame carrying this message from `src` to `dst`, padded to the
    /// Ethernet minimum.
    pub fn to_frame(&self, dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
        let mut f = Vec::with_capacity(MIN_FRAME);
        Ethernet {
            dst,
            src,
            ethertype: ETHERTYPE_ARP,
        }
        .write(&mut f);
        f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
        f.extend_from_slice(&self.op.to_be_bytes());
        f.extend_from_slice(&self.sender_mac);
        f.extend_from_slice(&self.sender_ip.octets());
        f.extend_from_slice(&self.target_mac);
        f.extend_from_slice(&self.target_ip.octets());
        f.resize(MIN_FRAME, 0);
        f
    }
}

/// Reads an ARP frame (IPv4 over Ethernet; trailing padding ignored).
pub fn parse_arp(frame: &[u8]) -> Result<(Ethernet, Arp), NeighError> {
    let eth = Ethernet::parse(frame)?;
    if eth.ethertype != ETHERTYPE_ARP {
        return Err(NeighError::Ethertype(eth.ethertype, "ARP"));
    }
    if frame.len() < ETH_HEADER + ARP_LEN {
        return Err(NeighError::Short {
            need: ETH_HEADER + ARP_LEN,
            got: frame.len(),
        });
    }
    let a = &frame[ETH_HEADER..ETH_HEADER + ARP_LEN];
    if a[0..2] != [0, 1] {
        return Err(NeighError::ArpFormat("hardware type is not Ethernet"));
    }
    if a[2..4] != [0x08, 0x00] {
        return Err(NeighError::ArpFormat("protocol type is not IPv4"));
    }
    if a[4] != 6 || a[5] != 4 {
        return Err(NeighError::ArpFormat("address lengths are not 6 and 4"));
    }
    Ok((
        eth,
        Arp {
            op: u16::from_be_bytes([a[6], a[7]]),
            sender_mac: mac_at(a, 8),
            sender_ip: v4_at(a, 14),
            target_mac: mac_at(a, 18),
            target_ip: v4_at(a, 24),
        },
    ))
}

/// The answer to an ARP request for `ip` from whoever owns `mac`, or None
/// if `frame` is no such request. (netd's DHCP responders: the server
/// address is on no interface, so the kernel would not answer, and
/// renewing clients ARP for the server before unicasting.) The reply goes
/// to the requester's hardware address, never to a group address.
pub fn arp_reply_for(frame: &[u8], ip: Ipv4Addr, mac: [u8; 6]) -> Option<Vec<u8>> {
    let (_, req) = parse_arp(frame).ok()?;
    if req.op != ARP_REQUEST || req.target_ip != ip {
        return None;
    }
    // A group or zero sender address is no one to answer (and answering
    // it would broadcast our reply on the requester's say-so).
    if req.sender_mac[0] & 1 == 1 || req.sender_mac == [0; 6] {
        return None;
    }
    let reply = Arp {
        op: ARP_REPLY,
        sender_mac: mac,
        sender_ip: ip,
        target_mac: req.sender_mac,
        target_ip: req.sender_ip,
    };
    Some(reply.to_frame(req.sender_mac, mac))
}

/// The frames that announce `ip` at `mac`: gratuitous ARP request and
/// reply for IPv4, one unsolicited NA for IPv6.
pub fn announcements(ip: IpAddr, mac: [u8; 6]) -> Vec<Vec<u8>> {
    match ip {
        IpAddr::V4(v4) => vec![garp(v4, mac, ARP_REQUEST), garp(v4, mac, ARP_REPLY)],
        IpAddr::V6(v6) => vec![unsolicited_na(v6, mac)],
    }
}

/// A gratuitous ARP. Target hardware address: zero in the request form,
/// broadcast in the reply form (what Linux' arping -U/-A send).
pub fn garp(ip: Ipv4Addr, mac: [u8; 6], op: u16) -> Vec<u8> {
    Arp {
        op,
        sender_mac: mac,
        sender_ip: ip,
        target_mac: if op == ARP_REQUEST { [0; 6] } else { BROADCAST },
        target_ip: ip,
    }
    .to_frame(BROADCAST, mac)
}

/// An unsolicited neighbour advertisement of `ip` at `mac` to all-nodes,
/// with the override flag.
pub fn unsolicited_na(ip: Ipv6Addr, mac: [u8; 6]) -> Vec<u8> {
    NdFrame {
        eth_dst: [0x33, 0x33, 0, 0, 0, 1],
        eth_src: mac,
        src: ip,
        dst: ALL_NODES,
        message: Nd::Advertisement {
            router: false,
            solicited: false,
            override_: true,
            target: ip,
            target_mac: Some(mac),
        },
    }
    .to_frame()
}

/// A neighbour solicitation or advertisement (RFC 4861 4.3, 4.4), with
/// its link-layer address option when present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nd {
    Solicitation {
        target: Ipv6Addr,
        source_mac: Option<[u8; 6]>,
    },
    Advertisement {
        router: bool,
        solicited: bool,
        override_: bool,
        target: Ipv6Addr,
        target_mac: Option<[u8; 6]>,
    },
}

/// An ND message in its Ethernet and IPv6 framing (hop limit 255).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NdFrame {
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub message: Nd,
}

impl NdFrame {
    pub fn to_frame(&self) -> Vec<u8> {
        let (ty, flags, target, opt) = match self.message {
            Nd::Solicitation { target, source_mac } => {
                (ND_NS, 0u8, target, source_mac.map(|m| (OPT_SLLA, m)))
            }
            Nd::Advertisement {
                router,
                solicited,
                override_,
                target,
                target_mac,
            } => (
                ND_NA,
                u8::from(router) << 7 | u8::from(solicited) << 6 | u8::from(override_) << 5,
                target,
                target_mac.map(|m| (OPT_TLLA, m)),
            ),
        };
        let mut icmp = vec![ty, 0, 0, 0, flags, 0, 0, 0];
        icmp.extend_from_slice(&target.octets());
        if let Some((t, m)) = opt {
            icmp.extend_from_slice(&[t, 1]);
            icmp.extend_from_slice(&m);
        }
        let sum = icmpv6_checksum(self.src, self.dst, &icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        let mut f = Vec::with_capacity(ETH_HEADER + IPV6_HEADER + icmp.len());
        Ethernet {
            dst: self.eth_dst,
            src: self.eth_src,
            ethertype: ETHERTYPE_IPV6,
        }
        .write(&mut f);
        // Version 6, payload length, next header ICMPv6, hop limit 255
        // (receivers drop ND messages with any other).
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
        f.extend_from_slice(&[ICMPV6, 255]);
        f.extend_from_slice(&self.src.octets());
        f.extend_from_slice(&self.dst.octets());
        f.extend_from_slice(&icmp);
        f
    }
}

/// Reads a neighbour solicitation or advertisement with the receiver's
/// checks of RFC 4861 7.1.1/7.1.2: hop limit 255, code 0, a valid
/// checksum, at least 24 bytes, no zero-length option, a non-multicast
/// target. Unknown options are skipped; of a repeated link-layer option
/// the first counts.
pub fn parse_nd(frame: &[u8]) -> Result<NdFrame, NeighError> {
    let eth = Ethernet::parse(frame)?;
    if eth.ethertype != ETHERTYPE_IPV6 {
        return Err(NeighError::Ethertype(eth.ethertype, "IPv6"));
    }
    let ip = &frame[ETH_HEADER..];
    if ip.len() < IPV6_HEADER {
        return Err(NeighError::Short {
            need: ETH_HEADER + IPV6_HEADER,
            got: frame.len(),
        });
    }
    if ip[0] >> 4 != 6 {
        return Err(NeighError::NotNd("IP version is not 6"));
    }
    if ip[6] != ICMPV6 {
        return Err(NeighError::NotNd("next header is not ICMPv6"));
    }
    if ip[7] != 255 {
        return Err(NeighError::HopLimit(ip[7]));
    }
    let payload_len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    let src = v6_at(ip, 8);
    let dst = v6_at(ip, 24);
    let rest = &ip[IPV6_HEADER..];
    if rest.len() < payload_len {
        return Err(NeighError::Short {
            need: ETH_HEADER + IPV6_HEADER + payload_len,
            got: frame.len(),
        });
    }
    // Anything past the payload length is link padding.
    let icmp = &rest[..payload_len];
    if icmp.len() < 24 {
        return Err(NeighError::NotNd("shorter than 24 bytes"));
    }
    if icmp[0] != ND_NS && icmp[0] != ND_NA {
        return Err(NeighError::NotNd("ICMPv6 type is not 135 or 136"));
    }
    if icmp[1] != 0 {
        return Err(NeighError::NotNd("ICMPv6 code is not 0"));
    }
    let got = u16::from_be_bytes([icmp[2], icmp[3]]);
    let mut zeroed = icmp.to_vec();
    zeroed[2] = 0;
    zeroed[3] = 0;
    let want = icmpv6_checksum(src, dst, &zeroed);
    if got != want {
        return Err(NeighError::Checksum { got, want });
    }
    let target = v6_at(icmp, 8);
    if target.is_multicast() {
        return Err(NeighError::NotNd("the target is a multicast address"));
    }
    let wanted_opt = if icmp[0] == ND_NS { OPT_SLLA } else { OPT_TLLA };
    let mut lla = None;
    let mut opts = &icmp[24..];
    while !opts.is_empty() {
        if opts.len() < 2 {
            return Err(NeighError::Option("truncated"));
        }
        let len = usize::from(opts[1]) * 8;
        if len == 0 {
            return Err(NeighError::Option("length 0"));
        }
        if opts.len() < len {
            return Err(NeighError::Option("longer than the message"));
        }
        if opts[0] == wanted_opt && lla.is_none() {
            if len != 8 {
                return Err(NeighError::Option(
                    "a link-layer address option for Ethernet is 8 bytes",
                ));
            }
            lla = Some(mac_at(opts, 2));
        }
        opts = &opts[len..];
    }
    let message = if icmp[0] == ND_NS {
        Nd::Solicitation {
            target,
            source_mac: lla,
        }
    } else {
        let flags = icmp[4];
        Nd::Advertisement {
            router: flags & 0x80 != 0,
            solicited: flags & 0x40 != 0,
            override_: flags & 0x20 != 0,
            target,
            target_mac: lla,
        }
    };
    Ok(NdFrame {
        eth_dst: eth.dst,
        eth_src: eth.src,
        src,
        dst,
        message,
    })
}

/// The ICMPv6 checksum over the pseudo-header and `body` (whose checksum
/// field is zero).
pub fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, body: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            sum += u64::from(w);
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(body.len() as u32).to_be_bytes());
    add(&[0, 0, 0, ICMPV6]);
    add(body);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gratuitous_arp_request_and_reply() {
        let mac = [2, 0, 0, 0, 0, 9];
        let f = announcements("10.0.0.100".parse().unwrap(), mac);
        assert_eq!(f.len(), 2);
        for (frame, op) in f.iter().zip([1u8, 2]) {
            assert_eq!(frame.len(), 60);
            assert_eq!(&frame[0..6], &BROADCAST);
            assert_eq!(&frame[6..12], &mac);
            assert_eq!(&frame[12..14], &[0x08, 0x06]);
            assert_eq!(frame[21], op);
            assert_eq!(&frame[22..28], &mac, "sender MAC");
            assert_eq!(&frame[28..32], &[10, 0, 0, 100], "sender IP");
            assert_eq!(&frame[38..42], &[10, 0, 0, 100], "target IP");
            let (_, a) = parse_arp(frame).unwrap();
            assert_eq!(a.op, u16::from(op));
        }
    }

    #[test]
    fn unsolicited_na_checksums_and_overrides() {
        let mac = [2, 0, 0, 0, 0, 9];
        let ip: Ipv6Addr = "fd00::100".parse().unwrap();
        let f = &announcements(IpAddr::V6(ip), mac)[0];
        assert_eq!(&f[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(f[20], 58);
        assert_eq!(f[21], 255);
        let icmp = &f[54..];
        assert_eq!(icmp[0], 136);
        assert_eq!(icmp[4] & 0x20, 0x20, "override");
        assert_eq!(icmp[4] & 0x40, 0, "not solicited");
        assert_eq!(&icmp[8..24], &ip.octets());
        assert_eq!(&icmp[26..32], &mac);
        // A correct checksum sums (with the pseudo-header) to zero.
        let mut zeroed = icmp.to_vec();
        let got = u16::from_be_bytes([zeroed[2], zeroed[3]]);
        zeroed[2] = 0;
        zeroed[3] = 0;
        assert_eq!(icmpv6_checksum(ip, ALL_NODES, &zeroed), got);
        assert_ne!(got, 0);
        let back = parse_nd(f).unwrap();
        assert_eq!(
            back.message,
            Nd::Advertisement {
                router: false,
                solicited: false,
                override_: true,
                target: ip,
                target_mac: Some(mac)
            }
        );
        // One bit off and the checksum says so.
        let mut bad = f.clone();
        bad[70] ^= 1;
        assert!(matches!(parse_nd(&bad), Err(NeighError::Checksum { .. })));
    }

    #[test]
    fn answers_arp_requests_for_the_address_only() {
        let requester = [2, 0, 0, 0, 0, 1];
        let req = Arp {
            op: ARP_REQUEST,
            sender_mac: requester,
            sender_ip: "10.0.0.5".parse().unwrap(),
            target_mac: [0; 6],
            target_ip: "10.0.0.2".parse().unwrap(),
        }
        .to_frame(BROADCAST, requester);
        let mac = [2, 0xaa, 0, 0, 0, 2];
        let r = arp_reply_for(&req, "10.0.0.2".parse().unwrap(), mac).unwrap();
        assert_eq!(&r[0..6], &requester);
        assert_eq!(&r[6..12], &mac);
        assert_eq!(&r[20..22], &[0, 2], "op reply");
        assert_eq!(&r[28..32], &[10, 0, 0, 2]);
        assert_eq!(&r[38..42], &[10, 0, 0, 5]);
        assert!(arp_reply_for(&req, "10.0.0.3".parse().unwrap(), mac).is_none());
        assert!(arp_reply_for(&req[..30], "10.0.0.2".parse().unwrap(), mac).is_none());
        // A request "from" a group address gets no (broadcast) answer.
        let mut group = req.clone();
        group[22] = 0x01;
        assert!(arp_reply_for(&group, "10.0.0.2".parse().unwrap(), mac).is_none());
    }

    #[test]
    fn nd_options_are_bounded() {
        let ns = NdFrame {
            eth_dst: [0x33, 0x33, 0xff, 0, 0, 1],
            eth_src: [2, 0, 0, 0, 0, 1],
            src: "fe80::1".parse().unwrap(),
            dst: "ff02::1:ff00:1".parse().unwrap(),
            message: Nd::Solicitation {
                target: "fd00::1".parse().unwrap(),
                source_mac: Some([2, 0, 0, 0, 0, 1]),
            },
        };
        let f = ns.to_frame();
        assert_eq!(parse_nd(&f).unwrap(), ns);
        // Padding after the payload is ignored; a cut frame is refused.
        let mut padded = f.clone();
        padded.extend_from_slice(&[0; 6]);
        assert_eq!(parse_nd(&padded).unwrap(), ns);
        assert!(parse_nd(&f[..f.len() - 1]).is_err());
        // A zero-length option would loop forever in a naive parser.
        let mut zero = f.clone();
        let n = zero.len();
        zero[n - 7] = 0;
        zero[56] = 0;
        zero[57] = 0;
        let sum = icmpv6_checksum(ns.src, ns.dst, &zero[54..]);
        zero[56..58].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(parse_nd(&zero), Err(NeighError::Option("length 0")));
    }
}
