//! Who answers neighbour solicitations for an IPv6 address, seen from a
//! namespace: the NDP counterpart of [`crate::arp`]. One solicitation out
//! (to the target's solicited-node group, with our link-layer address), every
//! advertisement for the target collected for a while.

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use anyhow::bail;

use crate::arp::{link_mac, packet_socket};
use crate::Netns;

const ETH_P_IPV6: u16 = 0x86dd;
const ICMPV6: u8 = 58;
const NEIGHBOR_SOLICITATION: u8 = 135;
const NEIGHBOR_ADVERTISEMENT: u8 = 136;

/// The solicited-node multicast group of `ip` (RFC 4291 section 2.7.1).
pub fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// The ICMPv6 checksum (pseudo-header included): furrow-vip's, which
/// netd's announcements use.
pub use furrow_vip::neigh::icmpv6_checksum;

/// A neighbour solicitation for `target` from `mac`/`src`, to the
/// target's solicited-node group, with a source link-layer address option
/// (so the answer comes back unicast without a solicitation of its own).
pub fn solicitation_frame(mac: [u8; 6], src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let dst = solicited_node(target);
    let mut icmp = vec![NEIGHBOR_SOLICITATION, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&target.octets());
    icmp.extend_from_slice(&[1, 1]);
    icmp.extend_from_slice(&mac);
    let sum = icmpv6_checksum(src, dst, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let d = dst.octets();
    let mut f = vec![0x33, 0x33, d[12], d[13], d[14], d[15]];
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
    // Version 6, payload length, next header ICMPv6, hop limit 255
    // (receivers drop NDP messages with any other).
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[ICMPV6, 255]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&icmp);
    f
}

/// A neighbour advertisement in an Ethernet frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertisement {
    /// The frame's source MAC.
    pub from: [u8; 6],
    pub target: Ipv6Addr,
    pub solicited: bool,
    pub override_flag: bool,
    /// The target link-layer address option, if present.
    pub tlla: Option<[u8; 6]>,
}

/// Parses `frame` as a neighbour advertisement (no extension headers, hop
/// limit 255); anything else is `None`.
pub fn parse_advertisement(frame: &[u8]) -> Option<Advertisement> {
    if frame.len() < 14 + 40 + 24 || frame[12..14] != ETH_P_IPV6.to_be_bytes() {
        return None;
    }
    let ip = &frame[14..];
    if ip[0] >> 4 != 6 || ip[6] != ICMPV6 || ip[7] != 255 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    let icmp = ip.get(40..40 + len)?;
    if icmp.len() < 24 || icmp[0] != NEIGHBOR_ADVERTISEMENT || icmp[1] != 0 {
        return None;
    }
    let target = Ipv6Addr::from(<[u8; 16]>::try_from(&icmp[8..24]).ok()?);
    let mut tlla = None;
    let mut opts = &icmp[24..];
    while opts.len() >= 8 {
        let olen = usize::from(opts[1]) * 8;
        if olen == 0 || olen > opts.len() {
            break;
        }
        if opts[0] == 2 {
            tlla = <[u8; 6]>::try_from(&opts[2..8]).ok();
        }
        opts = &opts[olen..];
    }
    Some(Advertisement {
        from: frame[6..12].try_into().ok()?,
        target,
        solicited: icmp[4] & 0x40 != 0,
        override_flag: icmp[4] & 0x20 != 0,
        tlla,
    })
}

/// Sends one neighbour solicitation for `target` out of `ifname` in `ns`
/// (from `sender_ip`, an address of that interface) and returns the
/// distinct MACs that advertised it within `wait`: each advertisement's
/// frame source and its target link-layer address (one entry when they
/// agree, as they should).
pub fn responders(
    ns: &Netns,
    ifname: &str,
    sender_ip: Ipv6Addr,
    target: Ipv6Addr,
    wait: Duration,
) -> anyhow::Result<Vec<[u8; 6]>> {
    Ok(advertisements(ns, ifname, sender_ip, target, wait)?
        .iter()
        .flat_map(|a| std::iter::once(a.from).chain(a.tlla))
        .fold(Vec::new(), |mut out, m| {
            if !out.contains(&m) {
                out.push(m);
            }
            out
        }))
}

/// As [`responders`], returning every advertisement for `target` that
/// arrived within `wait`.
pub fn advertisements(
    ns: &Netns,
    ifname: &str,
    sender_ip: Ipv6Addr,
    target: Ipv6Addr,
    wait: Duration,
) -> anyhow::Result<Vec<Advertisement>> {
    let mac = link_mac(ns, ifname)?;
    let ifname = ifname.to_string();
    ns.enter(move || -> anyhow::Result<Vec<Advertisement>> {
        use std::os::fd::AsRawFd;
        let fd = packet_socket(&ifname, ETH_P_IPV6)?;
        let ns_frame = solicitation_frame(mac, sender_ip, target);
        // SAFETY: sending a buffer we own on a socket we own.
        if unsafe { libc::send(fd.as_raw_fd(), ns_frame.as_ptr().cast(), ns_frame.len(), 0) } < 0 {
            bail!("send: {}", std::io::Error::last_os_error());
        }
        let mut out = Vec::new();
        crate::arp::recv_frames(&fd, wait, |f| {
            if let Some(a) = parse_advertisement(f) {
                if a.target == target {
                    out.push(a);
                }
            }
        });
        Ok(out)
    })?
}

/// The neighbour-cache entry of `ip` on `ifname` in `ns`: its link-layer
/// address (if it has one) and its state (`REACHABLE`, `STALE`, ...).
pub fn neigh_entry(
    ns: &Netns,
    ifname: &str,
    ip: IpAddr,
) -> anyhow::Result<Option<(Option<[u8; 6]>, String)>> {
    let family = if ip.is_ipv6() { "-6" } else { "-4" };
    let out = ns.ip(&[
        "-j",
        family,
        "neigh",
        "show",
        &ip.to_string(),
        "dev",
        ifname,
    ])?;
    let v: serde_json::Value =
        serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out })?;
    let Some(e) = v.as_array().and_then(|a| a.first()) else {
        return Ok(None);
    };
    let mac = e["lladdr"].as_str().and_then(parse_mac);
    let state = e["state"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    Ok(Some((mac, state)))
}

/// `aa:bb:cc:dd:ee:ff` as bytes.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let v: Vec<u8> = s
        .split(':')
        .map(|h| u8::from_str_radix(h, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    <[u8; 6]>::try_from(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solicitations_are_well_formed() {
        let mac = [2, 0, 0, 0, 0, 0xfe];
        let src: Ipv6Addr = "fd00:198:18::254".parse().unwrap();
        let target: Ipv6Addr = "fd00:198:18::1:2345".parse().unwrap();
        assert_eq!(
            solicited_node(target),
            "ff02::1:ff01:2345".parse::<Ipv6Addr>().unwrap()
        );
        let f = solicitation_frame(mac, src, target);
        assert_eq!(&f[0..6], &[0x33, 0x33, 0xff, 0x01, 0x23, 0x45]);
        assert_eq!(f.len(), 14 + 40 + 32);
        let icmp = &f[54..];
        assert_eq!(icmp[0], 135);
        assert_eq!(&icmp[8..24], &target.octets());
        assert_eq!(&icmp[24..32], &[1, 1, 2, 0, 0, 0, 0, 0xfe]);
        // A correct checksum makes the sum over the packet zero.
        let dst = solicited_node(target);
        let mut zeroed = icmp.to_vec();
        let got = u16::from_be_bytes([zeroed[2], zeroed[3]]);
        zeroed[2] = 0;
        zeroed[3] = 0;
        assert_eq!(icmpv6_checksum(src, dst, &zeroed), got);
    }

    #[test]
    fn advertisements_parse() {
        // An NA as a node answers a solicitation: solicited + override,
        // target link-layer address option.
        let mac = [2, 0, 0, 0, 0, 1];
        let target: Ipv6Addr = "fd00::100".parse().unwrap();
        let mut icmp = vec![136u8, 0, 0, 0, 0x60, 0, 0, 0];
        icmp.extend_from_slice(&target.octets());
        icmp.extend_from_slice(&[2, 1]);
        icmp.extend_from_slice(&mac);
        let mut f = vec![2, 0, 0, 0, 0, 0xfe];
        f.extend_from_slice(&mac);
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
        f.extend_from_slice(&[58, 255]);
        f.extend_from_slice(&target.octets());
        f.extend_from_slice(&"fd00::fe".parse::<Ipv6Addr>().unwrap().octets());
        f.extend_from_slice(&icmp);
        let a = parse_advertisement(&f).unwrap();
        assert_eq!(a.from, mac);
        assert_eq!(a.target, target);
        assert!(a.solicited && a.override_flag);
        assert_eq!(a.tlla, Some(mac));
        // Hop limit other than 255: not an NDP message.
        f[21] = 64;
        assert!(parse_advertisement(&f).is_none());
        assert_eq!(parse_mac("02:00:00:00:00:0a"), Some([2, 0, 0, 0, 0, 10]));
        assert_eq!(parse_mac("02:00"), None);
    }
}
