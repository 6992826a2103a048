//! ARP and neighbour discovery frames (furrow_vip::neigh): what netd's
//! DHCP responders read from VMs, and what the VIP controller sends.
//!
//! The first byte steers:
//! - 0: the rest is a frame from the wire: `arp_reply_for` must not panic,
//!   and a reply it makes must answer exactly that request; whatever
//!   `parse_arp` accepts must rebuild into a frame that parses the same.
//! - 1: the rest is a frame for `parse_nd`; what it accepts must rebuild
//!   into a frame that parses the same (parse(build(x)) == x).
//! - 2: the rest describes frames to build (addresses, flags): the
//!   announcements and any NS/NA must parse back to what was built.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use furrow_vip::neigh::{
    announcements, arp_reply_for, parse_arp, parse_nd, Arp, Nd, NdFrame, ARP_REPLY, ARP_REQUEST,
    BROADCAST,
};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const SERVER_MAC: [u8; 6] = [2, 0xaa, 0, 0, 0, 2];

fn wire_arp(frame: &[u8]) {
    if let Some(reply) = arp_reply_for(frame, SERVER, SERVER_MAC) {
        let (_, req) = parse_arp(frame).expect("answered a frame that does not parse");
        assert_eq!(req.op, ARP_REQUEST);
        assert_eq!(req.target_ip, SERVER);
        let (eth, r) = parse_arp(&reply).expect("our reply does not parse");
        assert_eq!(reply.len(), 60);
        assert_eq!(eth.dst, req.sender_mac, "reply not sent to the requester");
        assert_eq!(eth.dst[0] & 1, 0, "reply sent to a group address");
        assert_eq!(eth.src, SERVER_MAC);
        assert_eq!(
            r,
            Arp {
                op: ARP_REPLY,
                sender_mac: SERVER_MAC,
                sender_ip: SERVER,
                target_mac: req.sender_mac,
                target_ip: req.sender_ip,
            }
        );
    }
    if let Ok((eth, arp)) = parse_arp(frame) {
        let again = arp.to_frame(eth.dst, eth.src);
        assert_eq!(parse_arp(&again), Ok((eth, arp)), "ARP does not rebuild");
    }
}

fn wire_nd(frame: &[u8]) {
    if let Ok(nd) = parse_nd(frame) {
        let again = nd.to_frame();
        assert_eq!(parse_nd(&again), Ok(nd), "ND does not rebuild");
    }
}

fn mac(u: &mut Unstructured) -> Result<[u8; 6]> {
    u.arbitrary()
}

fn built(u: &mut Unstructured) -> Result<()> {
    let m = mac(u)?;
    let v4 = Ipv4Addr::from(u.arbitrary::<[u8; 4]>()?);
    let v6 = Ipv6Addr::from(u.arbitrary::<[u8; 16]>()?);
    let garps = announcements(IpAddr::V4(v4), m);
    assert_eq!(garps.len(), 2);
    for (f, op) in garps.iter().zip([ARP_REQUEST, ARP_REPLY]) {
        let (eth, a) = parse_arp(f).expect("gratuitous ARP does not parse");
        assert_eq!(eth.dst, BROADCAST);
        assert_eq!(
            (a.op, a.sender_mac, a.sender_ip, a.target_ip),
            (op, m, v4, v4)
        );
    }
    if !v6.is_multicast() {
        let na = &announcements(IpAddr::V6(v6), m)[0];
        let back = parse_nd(na).expect("unsolicited NA does not parse");
        assert_eq!(
            back.message,
            Nd::Advertisement {
                router: false,
                solicited: false,
                override_: true,
                target: v6,
                target_mac: Some(m),
            }
        );
    }
    let target = Ipv6Addr::from(u.arbitrary::<[u8; 16]>()?);
    let lla: Option<[u8; 6]> = u.arbitrary()?;
    let message = if u.arbitrary()? {
        Nd::Solicitation {
            target,
            source_mac: lla,
        }
    } else {
        Nd::Advertisement {
            router: u.arbitrary()?,
            solicited: u.arbitrary()?,
            override_: u.arbitrary()?,
            target,
            target_mac: lla,
        }
    };
    let f = NdFrame {
        eth_dst: mac(u)?,
        eth_src: mac(u)?,
        src: Ipv6Addr::from(u.arbitrary::<[u8; 16]>()?),
        dst: v6,
        message,
    };
    let parsed = parse_nd(&f.to_frame());
    if target.is_multicast() {
        assert!(parsed.is_err(), "a multicast target was accepted");
    } else {
        assert_eq!(parsed, Ok(f), "built ND does not parse back");
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let Some((&steer, rest)) = data.split_first() else {
        return;
    };
    match steer % 3 {
        0 => wire_arp(rest),
        1 => wire_nd(rest),
        _ => {
            let _ = built(&mut Unstructured::new(rest));
        }
    }
});
