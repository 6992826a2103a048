//! Telling the segment who holds a VIP now: gratuitous ARP for IPv4, an
//! unsolicited neighbour advertisement for IPv6 (the frames are built in
//! furrow_vip::neigh, next to their parser).

use std::net::IpAddr;

/// The frames that announce `ip` at `mac`.
pub fn frames(ip: IpAddr, mac: [u8; 6]) -> Vec<Vec<u8>> {
    furrow_vip::neigh::announcements(ip, mac)
}
