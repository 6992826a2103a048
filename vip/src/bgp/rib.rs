//! What one peer is told: the UPDATEs that announce and withdraw our
//! prefixes, and which prefixes a session can carry at all.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::codec::{AsPath, Family, MpReach, MpUnreach, Origin, PathAttribute, Update, AS_TRANS};

/// Prefixes per UPDATE: an IPv4 /32 takes 5 octets, an IPv6 /128 17, so
/// these stay well below the 4096-octet limit with all attributes.
const V4_PER_UPDATE: usize = 700;
const V6_PER_UPDATE: usize = 200;

/// How routes are exported to one established session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    pub local_as: u32,
    /// Same AS on both ends: empty AS_PATH and a LOCAL_PREF.
    pub ibgp: bool,
    pub four_octet_as: bool,
    /// `None` when the family was not negotiated or has no next hop.
    pub next_hop_v4: Option<Ipv4Addr>,
    pub next_hop_v6: Option<Ipv6Addr>,
}

/// Why a family's prefixes are not sent to a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Withheld {
    NotNegotiated(Family),
    NoNextHop(Family),
}

impl Withheld {
    pub fn family(&self) -> Family {
        match self {
            Withheld::NotNegotiated(f) | Withheld::NoNextHop(f) => *f,
        }
    }
}

impl std::fmt::Display for Withheld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Withheld::NotNegotiated(fam) => {
                write!(f, "{fam} not negotiated with the peer: its prefixes are not advertised")
            }
            Withheld::NoNextHop(Family::IPV6_UNICAST) => f.write_str(
                "no IPv6 next hop (IPv4 session and no next_hop_v6 configured): IPv6 prefixes are not advertised",
            ),
            Withheld::NoNextHop(fam) => write!(
                f,
                "no {fam} next hop (configure one for this peer): its prefixes are not advertised"
            ),
        }
    }
}

/// The next hops a session announces: the configured ones, else the
/// local address of the connection when it has the right family (a
/// link-local IPv6 address is no global next hop).
pub fn next_hops(
    local: IpAddr,
    v4: Option<Ipv4Addr>,
    v6: Option<Ipv6Addr>,
) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
    let local = match local {
        IpAddr::V6(a) => a.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(a)),
        a => a,
    };
    let v4 = v4.or(match local {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    });
    let v6 = v6.or(match local {
        IpAddr::V6(a) if !a.is_unicast_link_local() => Some(a),
        _ => None,
    });
    (v4, v6)
}

impl Export {
    /// Whether `prefix` can go to this peer.
    pub fn carries(&self, prefix: &IpNet) -> bool {
        match prefix {
            IpNet::V4(_) => self.next_hop_v4.is_some(),
            IpNet::V6(_) => self.next_hop_v6.is_some(),
        }
    }

    /// The part of `rib` this peer gets.
    pub fn filter(&self, rib: &BTreeSet<IpNet>) -> BTreeSet<IpNet> {
        rib.iter().filter(|p| self.carries(p)).copied().collect()
    }

    fn common_attributes(&self) -> Vec<PathAttribute> {
        let mut attrs = vec![PathAttribute::Origin(Origin::Igp)];
        if self.ibgp {
            attrs.push(PathAttribute::AsPath(AsPath::default()));
            // Well-known mandatory on iBGP; 100 is everyone's default.
            attrs.push(PathAttribute::LocalPref(100));
        } else {
            attrs.push(PathAttribute::AsPath(AsPath::sequence(vec![self.local_as])));
            // A 2-octet peer sees AS_TRANS in AS_PATH; the real number
            // travels in AS4_PATH (RFC 6793 section 4.2.2).
            if !self.four_octet_as && self.local_as > u32::from(u16::MAX) {
                debug_assert!(AS_TRANS <= u32::from(u16::MAX));
                attrs.push(PathAttribute::As4Path(AsPath::sequence(vec![
                    self.local_as,
                ])));
            }
        }
        attrs
    }

    /// UPDATEs announcing `prefixes` (those this peer cannot carry are
    /// skipped).
    pub fn announce(&self, prefixes: &[IpNet]) -> Vec<Update> {
        let mut out = Vec::new();
        let v4: Vec<_> = prefixes
            .iter()
            .filter_map(|p| match p {
                IpNet::V4(n) => Some(*n),
                _ => None,
            })
            .collect();
        let v6: Vec<_> = prefixes
            .iter()
            .filter(|p| matches!(p, IpNet::V6(_)))
            .copied()
            .collect();
        if let Some(nh) = self.next_hop_v4 {
            for chunk in v4.chunks(V4_PER_UPDATE) {
                let mut attributes = self.common_attributes();
                attributes.push(PathAttribute::NextHop(nh));
                out.push(Update {
                    withdrawn: vec![],
                    attributes,
                    nlri: chunk.to_vec(),
                });
            }
        }
        if let Some(nh) = self.next_hop_v6 {
            for chunk in v6.chunks(V6_PER_UPDATE) {
                let mut attributes = self.common_attributes();
                attributes.push(PathAttribute::MpReach(MpReach {
                    family: Family::IPV6_UNICAST,
                    next_hops: vec![IpAddr::V6(nh)],
                    nlri: chunk.to_vec(),
                }));
                out.push(Update {
                    withdrawn: vec![],
                    attributes,
                    nlri: vec![],
                });
            }
        }
        out
    }

    /// UPDATEs withdrawing `prefixes`.
    pub fn withdraw(&self, prefixes: &[IpNet]) -> Vec<Update> {
        let mut out = Vec::new();
        let v4: Vec<_> = prefixes
            .iter()
            .filter_map(|p| match p {
                IpNet::V4(n) => Some(*n),
                _ => None,
            })
            .collect();
        let v6: Vec<_> = prefixes
            .iter()
            .filter(|p| matches!(p, IpNet::V6(_)))
            .copied()
            .collect();
        for chunk in v4.chunks(V4_PER_UPDATE) {
            out.push(Update {
                withdrawn: chunk.to_vec(),
                attributes: vec![],
                nlri: vec![],
            });
        }
        for chunk in v6.chunks(V6_PER_UPDATE) {
            out.push(Update {
                withdrawn: vec![],
                attributes: vec![PathAttribute::MpUnreach(MpUnreach {
                    family: Family::IPV6_UNICAST,
                    withdrawn: chunk.to_vec(),
                })],
                nlri: vec![],
            });
        }
        out
    }
}

/// The export rules for a session, and what it cannot carry.
pub fn export_for(
    local_as: u32,
    remote_as: u32,
    families: &[Family],
    four_octet_as: bool,
    local: IpAddr,
    cfg_v4: Option<Ipv4Addr>,
    cfg_v6: Option<Ipv6Addr>,
) -> (Export, Vec<Withheld>) {
    let (nh4, nh6) = next_hops(local, cfg_v4, cfg_v6);
    let mut withheld = Vec::new();
    let mut pick = |fam: Family, nh_present: bool| {
        if !families.contains(&fam) {
            withheld.push(Withheld::NotNegotiated(fam));
            false
        } else if !nh_present {
            withheld.push(Withheld::NoNextHop(fam));
            false
        } else {
            true
        }
    };
    let v4_ok = pick(Family::IPV4_UNICAST, nh4.is_some());
    let v6_ok = pick(Family::IPV6_UNICAST, nh6.is_some());
    (
        Export {
            local_as,
            ibgp: local_as == remote_as,
            four_octet_as,
            next_hop_v4: nh4.filter(|_| v4_ok),
            next_hop_v6: nh6.filter(|_| v6_ok),
        },
        withheld,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::codec::{attr, decode, CodecOptions, Message, MAX_MESSAGE_LEN};

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ebgp() -> Export {
        Export {
            local_as: 65001,
            ibgp: false,
            four_octet_as: true,
            next_hop_v4: Some(Ipv4Addr::new(10, 0, 0, 2)),
            next_hop_v6: Some("fd00::2".parse().unwrap()),
        }
    }

    #[test]
    fn announcements_carry_origin_path_and_next_hop_per_family() {
        let ups = ebgp().announce(&[net("10.200.0.1/32"), net("fd00:200::1/128")]);
        assert_eq!(ups.len(), 2);
        let v4 = &ups[0];
        assert_eq!(v4.nlri, vec!["10.200.0.1/32".parse().unwrap()]);
        assert_eq!(
            v4.attribute(attr::ORIGIN),
            Some(&PathAttribute::Origin(Origin::Igp))
        );
        assert_eq!(
            v4.attribute(attr::AS_PATH),
            Some(&PathAttribute::AsPath(AsPath::sequence(vec![65001])))
        );
        assert_eq!(
            v4.attribute(attr::NEXT_HOP),
            Some(&PathAttribute::NextHop(Ipv4Addr::new(10, 0, 0, 2)))
        );
        assert_eq!(v4.attribute(attr::LOCAL_PREF), None);
        let v6 = &ups[1];
        assert!(v6.nlri.is_empty());
        assert_eq!(v6.attribute(attr::NEXT_HOP), None);
        let Some(PathAttribute::MpReach(r)) = v6.attribute(attr::MP_REACH_NLRI) else {
            panic!("no MP_REACH_NLRI")
        };
        assert_eq!(r.next_hops, vec!["fd00::2".parse::<IpAddr>().unwrap()]);
        assert_eq!(r.nlri, vec![net("fd00:200::1/128")]);
    }

    #[test]
    fn ibgp_has_an_empty_path_and_local_pref() {
        let mut e = ebgp();
        e.ibgp = true;
        let u = &e.announce(&[net("10.200.0.1/32")])[0];
        assert_eq!(
            u.attribute(attr::AS_PATH),
            Some(&PathAttribute::AsPath(AsPath::default()))
        );
        assert_eq!(
            u.attribute(attr::LOCAL_PREF),
            Some(&PathAttribute::LocalPref(100))
        );
        // ... and that encodes and decodes.
        let wire = Message::Update(u.clone())
            .encode(CodecOptions {
                four_octet_as: true,
            })
            .unwrap();
        assert!(decode(
            &wire,
            CodecOptions {
                four_octet_as: true
            }
        )
        .is_ok());
    }

    #[test]
    fn a_4_octet_as_to_a_2_octet_peer_goes_in_as4_path() {
        let mut e = ebgp();
        e.local_as = 4_200_000_001;
        e.four_octet_as = false;
        let u = &e.announce(&[net("10.200.0.1/32")])[0];
        assert_eq!(
            u.attribute(attr::AS4_PATH),
            Some(&PathAttribute::As4Path(AsPath::sequence(vec![
                4_200_000_001
            ])))
        );
        let opts = CodecOptions {
            four_octet_as: false,
        };
        let wire = Message::Update(u.clone()).encode(opts).unwrap();
        let Ok(Message::Update(d)) = decode(&wire, opts) else {
            panic!()
        };
        assert_eq!(
            d.attribute(attr::AS_PATH),
            Some(&PathAttribute::AsPath(AsPath::sequence(vec![AS_TRANS])))
        );
        // A 4-octet peer gets the number directly, no AS4_PATH.
        e.four_octet_as = true;
        assert_eq!(
            e.announce(&[net("10.200.0.1/32")])[0].attribute(attr::AS4_PATH),
            None
        );
    }

    #[test]
    fn withdrawals_use_the_withdrawn_field_and_mp_unreach() {
        let ups = ebgp().withdraw(&[net("10.200.0.1/32"), net("fd00:200::1/128")]);
        assert_eq!(ups.len(), 2);
        assert_eq!(ups[0].withdrawn, vec!["10.200.0.1/32".parse().unwrap()]);
        assert!(ups[0].attributes.is_empty());
        assert_eq!(ups[1].withdrawn_all(), vec![net("fd00:200::1/128")]);
    }

    #[test]
    fn many_prefixes_are_split_into_messages_that_fit() {
        let mut prefixes = Vec::new();
        for i in 0..2000u32 {
            prefixes.push(IpNet::V4(
                ipnet::Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + i), 32).unwrap(),
            ));
            prefixes.push(IpNet::V6(
                ipnet::Ipv6Net::new(Ipv6Addr::from(0xfd00_u128 << 112 | u128::from(i)), 128)
                    .unwrap(),
            ));
        }
        let opts = CodecOptions {
            four_octet_as: false,
        };
        let mut e = ebgp();
        e.local_as = 4_200_000_001;
        e.four_octet_as = false;
        for ups in [e.announce(&prefixes), e.withdraw(&prefixes)] {
            let mut seen = 0;
            for u in ups {
                let wire = Message::Update(u).encode(opts).expect("fits");
                assert!(wire.len() <= MAX_MESSAGE_LEN);
                let Ok(Message::Update(d)) = decode(&wire, opts) else {
                    panic!()
                };
                seen += d.announced().len() + d.withdrawn_all().len();
            }
            assert_eq!(seen, 4000);
        }
    }

    #[test]
    fn next_hops_come_from_config_or_the_connection() {
        let v4: IpAddr = "10.0.0.2".parse().unwrap();
        let v6: IpAddr = "fd00::2".parse().unwrap();
        let ll: IpAddr = "fe80::2".parse().unwrap();
        let cfg6: Ipv6Addr = "fd00:1::2".parse().unwrap();
        assert_eq!(
            next_hops(v4, None, None),
            (Some(Ipv4Addr::new(10, 0, 0, 2)), None)
        );
        assert_eq!(
            next_hops(v4, None, Some(cfg6)),
            (Some(Ipv4Addr::new(10, 0, 0, 2)), Some(cfg6))
        );
        assert_eq!(
            next_hops(v6, None, None),
            (None, Some("fd00::2".parse().unwrap()))
        );
        assert_eq!(next_hops(ll, None, None), (None, None));
        assert_eq!(
            next_hops("::ffff:10.0.0.2".parse().unwrap(), None, None),
            (Some(Ipv4Addr::new(10, 0, 0, 2)), None)
        );
        assert_eq!(
            next_hops(v6, Some(Ipv4Addr::new(192, 0, 2, 1)), None).0,
            Some(Ipv4Addr::new(192, 0, 2, 1))
        );
    }

    #[test]
    fn export_withholds_what_the_session_cannot_carry_and_says_why() {
        let local: IpAddr = "10.0.0.2".parse().unwrap();
        let both = [Family::IPV4_UNICAST, Family::IPV6_UNICAST];
        let (e, w) = export_for(65001, 65000, &both, true, local, None, None);
        assert_eq!(w, vec![Withheld::NoNextHop(Family::IPV6_UNICAST)]);
        assert!(w[0].to_string().contains("next_hop_v6"));
        assert!(e.carries(&net("10.200.0.1/32")));
        assert!(!e.carries(&net("fd00:200::1/128")));
        let rib: BTreeSet<IpNet> = [net("10.200.0.1/32"), net("fd00:200::1/128")].into();
        assert_eq!(e.filter(&rib), [net("10.200.0.1/32")].into());
        assert!(e.announce(&[net("fd00:200::1/128")]).is_empty());

        let (e, w) = export_for(
            65001,
            65000,
            &[Family::IPV6_UNICAST],
            true,
            local,
            None,
            Some("fd00::2".parse().unwrap()),
        );
        assert_eq!(w, vec![Withheld::NotNegotiated(Family::IPV4_UNICAST)]);
        assert!(!e.carries(&net("10.200.0.1/32")));
        assert!(e.carries(&net("fd00:200::1/128")));
        let (e, _) = export_for(65001, 65001, &both, true, local, None, None);
        assert!(e.ibgp);
    }
}
