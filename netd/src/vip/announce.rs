//! Telling the segment who holds a VIP now: gratuitous ARP (RFC 5227
//! section 3: an ARP request and an ARP reply with sender = target = the
//! VIP, both broadcast, because switches and hosts differ in which they
//! honour) and, for IPv6, an unsolicited neighbour advertisement to
//! all-nodes with the override flag (RFC 4861 section 7.2.6).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const BROADCAST: [u8; 6] = [0xff; 6];

/// The frames that announce `ip` at `mac`.
pub fn frames(ip: IpAddr, mac: [u8; 6]) -> Vec<Vec<u8>> {
    match ip {
        IpAddr::V4(v4) => vec![garp(v4, mac, 1), garp(v4, mac, 2)],
        IpAddr::V6(v6) => vec![unsolicited_na(v6, mac)],
    }
}

fn garp(ip: Ipv4Addr, mac: [u8; 6], op: u8) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&BROADCAST);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, op]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip.octets());
    // Target hardware address: zero in the request form, broadcast in
    // the reply form (what Linux' arping -U/-A send).
    f.extend_from_slice(if op == 1 { &[0; 6] } else { &BROADCAST });
    f.extend_from_slice(&ip.octets());
    f.resize(60, 0);
    f
}

fn unsolicited_na(ip: Ipv6Addr, mac: [u8; 6]) -> Vec<u8> {
    let all_nodes: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    // ICMPv6 NA: type 136, code 0, checksum, flags (override), target,
    // option 2 (target link-layer address, 8 bytes).
    let mut icmp = vec![136u8, 0, 0, 0, 0x20, 0, 0, 0];
    icmp.extend_from_slice(&ip.octets());
    icmp.extend_from_slice(&[2, 1]);
    icmp.extend_from_slice(&mac);
    let sum = icmpv6_checksum(ip, all_nodes, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut f = Vec::with_capacity(14 + 40 + icmp.len());
    f.extend_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x86, 0xdd]);
    // IPv6 header: version 6, payload length, next header 58, hop limit
    // 255 (receivers drop NAs with any other).
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&all_nodes.octets());
    f.extend_from_slice(&icmp);
    f
}

fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, body: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            sum += u32::from(w);
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(body.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
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
        let f = frames("10.0.0.100".parse().unwrap(), mac);
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
        }
    }

    #[test]
    fn unsolicited_na_checksums_and_overrides() {
        let mac = [2, 0, 0, 0, 0, 9];
        let ip: Ipv6Addr = "fd00::100".parse().unwrap();
        let f = &frames(IpAddr::V6(ip), mac)[0];
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
        let all = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        let mut zeroed = icmp.to_vec();
        let got = u16::from_be_bytes([zeroed[2], zeroed[3]]);
        zeroed[2] = 0;
        zeroed[3] = 0;
        assert_eq!(icmpv6_checksum(ip, all, &zeroed), got);
        assert_ne!(got, 0);
    }
}
