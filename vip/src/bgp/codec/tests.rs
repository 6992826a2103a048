use super::*;

const FOUR: CodecOptions = CodecOptions {
    four_octet_as: true,
};
const TWO: CodecOptions = CodecOptions {
    four_octet_as: false,
};

fn hdr(len: u16, ty: u8) -> Vec<u8> {
    let mut v = vec![0xff; 16];
    v.extend_from_slice(&len.to_be_bytes());
    v.push(ty);
    v
}

/// A message with a correct header around `body`.
fn msg(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut v = hdr((HEADER_LEN + body.len()) as u16, ty);
    v.extend_from_slice(body);
    v
}

fn roundtrip(m: &Message, opts: CodecOptions) -> Message {
    let wire = m.encode(opts).expect("encodes");
    assert_eq!(frame_len(&wire), Ok(Some(wire.len())));
    decode(&wire, opts).expect("decodes")
}

fn notif(e: &DecodeError) -> (u8, u8, Vec<u8>) {
    let n = e.notification();
    (n.code, n.subcode, n.data)
}

fn v4(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// The body of an UPDATE with the given attribute bytes and IPv4 NLRI.
fn update_body(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut b = (withdrawn.len() as u16).to_be_bytes().to_vec();
    b.extend_from_slice(withdrawn);
    b.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    b.extend_from_slice(attrs);
    b.extend_from_slice(nlri);
    b
}

const ORIGIN_IGP: [u8; 4] = [0x40, 1, 1, 0];
const AS_PATH_65001: [u8; 9] = [0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9];
const NEXT_HOP: [u8; 7] = [0x40, 3, 4, 10, 0, 0, 2];

fn update_err(attrs: &[u8], nlri: &[u8]) -> DecodeError {
    decode(&msg(msg_type::UPDATE, &update_body(&[], attrs, nlri)), FOUR).unwrap_err()
}

#[test]
fn keepalive_is_a_bare_header() {
    let wire = Message::Keepalive.encode(FOUR).unwrap();
    assert_eq!(wire, hdr(19, 4));
    assert_eq!(decode(&wire, FOUR), Ok(Message::Keepalive));
}

#[test]
fn open_encodes_byte_exact() {
    let o = Open::new(
        65001,
        9,
        Ipv4Addr::new(10, 0, 0, 1),
        &[Family::IPV4_UNICAST, Family::IPV6_UNICAST],
    );
    let wire = Message::Open(o.clone()).encode(FOUR).unwrap();
    let mut want = hdr(51, 1);
    want.extend_from_slice(&[4, 0xfd, 0xe9, 0, 9, 10, 0, 0, 1, 22, 2, 20]);
    want.extend_from_slice(&[
        1, 4, 0, 1, 0, 1, 1, 4, 0, 2, 0, 1, 2, 0, 65, 4, 0, 0, 0xfd, 0xe9,
    ]);
    assert_eq!(wire, want);
    assert_eq!(decode(&wire, TWO), Ok(Message::Open(o)));
}

#[test]
fn open_with_4_octet_as_puts_as_trans_in_the_2_octet_field() {
    let o = Open::new(
        4_200_000_001,
        3,
        Ipv4Addr::new(1, 2, 3, 4),
        &[Family::IPV4_UNICAST],
    );
    assert_eq!(u32::from(o.my_as), AS_TRANS);
    let Message::Open(d) = roundtrip(&Message::Open(o), TWO) else {
        panic!("not an OPEN")
    };
    assert_eq!(d.asn(), 4_200_000_001);
    assert_eq!(d.hold_time, 3);
    assert!(d.route_refresh());
    assert_eq!(d.families(), vec![Family::IPV4_UNICAST]);
}

#[test]
fn open_from_a_router_with_foreign_capabilities_decodes() {
    // Two capability parameters (as some routers send), graceful restart
    // (64), enhanced route refresh (70), a Cisco route refresh (128).
    let mut body = vec![4, 0xfd, 0xe8, 0, 90, 10, 9, 9, 9];
    let p1 = [2, 6, 1, 4, 0, 2, 0, 1];
    let p2 = [
        2, 14, 64, 2, 0x80, 120, 70, 0, 128, 0, 65, 4, 0, 0, 0xfd, 0xe8,
    ];
    body.push((p1.len() + p2.len()) as u8);
    body.extend_from_slice(&p1);
    body.extend_from_slice(&p2);
    let Message::Open(o) = decode(&msg(1, &body), TWO).unwrap() else {
        panic!("not an OPEN")
    };
    assert_eq!(o.asn(), 65000);
    assert_eq!(o.families(), vec![Family::IPV6_UNICAST]);
    assert!(!o.route_refresh());
    assert!(o.capabilities.contains(&Capability::Unknown {
        code: 64,
        value: vec![0x80, 120]
    }));
}

#[test]
fn open_with_extended_optional_parameters_decodes() {
    // RFC 9072: 255, 255, 2-octet length, parameters with 2-octet lengths.
    let caps = [65, 4, 0, 1, 0, 0];
    let mut body = vec![4, 0x5b, 0xa0, 0, 3, 10, 9, 9, 9, 255, 255, 0, 9, 2, 0, 6];
    body.extend_from_slice(&caps);
    let Message::Open(o) = decode(&msg(1, &body), TWO).unwrap() else {
        panic!("not an OPEN")
    };
    assert_eq!(o.asn(), 65536);
    // No multiprotocol capability: IPv4 unicast only.
    assert_eq!(o.families(), vec![Family::IPV4_UNICAST]);
}

fn open_body(version: u8, asn: u16, hold: u16, id: [u8; 4], params: &[u8]) -> Vec<u8> {
    let mut b = vec![version];
    b.extend_from_slice(&asn.to_be_bytes());
    b.extend_from_slice(&hold.to_be_bytes());
    b.extend_from_slice(&id);
    b.push(params.len() as u8);
    b.extend_from_slice(params);
    b
}

#[test]
fn bad_opens_get_the_rfc_4271_notifications() {
    let id = [10, 0, 0, 9];
    let e = decode(&msg(1, &open_body(3, 65000, 9, id, &[])), FOUR).unwrap_err();
    assert_eq!(notif(&e), (2, 1, vec![0, 4]));
    for hold in [1, 2] {
        let e = decode(&msg(1, &open_body(4, 65000, hold, id, &[])), FOUR).unwrap_err();
        assert_eq!(notif(&e), (2, 6, vec![]), "hold {hold}");
    }
    // 0 and 3 are fine.
    for hold in [0, 3] {
        assert!(decode(&msg(1, &open_body(4, 65000, hold, id, &[])), FOUR).is_ok());
    }
    let e = decode(&msg(1, &open_body(4, 65000, 9, [0; 4], &[])), FOUR).unwrap_err();
    assert_eq!(notif(&e), (2, 3, vec![]));
    let e = decode(&msg(1, &open_body(4, 0, 9, id, &[])), FOUR).unwrap_err();
    assert_eq!(notif(&e), (2, 2, vec![]));
    let e = decode(
        &msg(1, &open_body(4, 23456, 9, id, &[2, 6, 65, 4, 0, 0, 0, 0])),
        FOUR,
    )
    .unwrap_err();
    assert_eq!(notif(&e), (2, 2, vec![]));
    // Authentication (type 1) is long gone.
    let e = decode(&msg(1, &open_body(4, 65000, 9, id, &[1, 1, 0])), FOUR).unwrap_err();
    assert_eq!(notif(&e), (2, 4, vec![]));
    // A capability overrunning its parameter.
    let e = decode(
        &msg(1, &open_body(4, 65000, 9, id, &[2, 3, 65, 4, 0])),
        FOUR,
    )
    .unwrap_err();
    assert_eq!(notif(&e).0, 2);
    // A multiprotocol capability of the wrong size.
    let e = decode(
        &msg(1, &open_body(4, 65000, 9, id, &[2, 5, 1, 3, 0, 1, 0])),
        FOUR,
    )
    .unwrap_err();
    assert_eq!(notif(&e).0, 2);
    // The parameter length claims more than there is.
    let mut b = open_body(4, 65000, 9, id, &[]);
    b[9] = 4;
    let e = decode(&msg(1, &b), FOUR).unwrap_err();
    assert_eq!(notif(&e).0, 2);
    // Too short to be an OPEN at all: a header error with the length.
    let e = decode(&msg(1, &[4, 0xfd]), FOUR).unwrap_err();
    assert_eq!(notif(&e), (1, 2, vec![0, 21]));
}

#[test]
fn bad_headers_get_header_errors() {
    let mut ka = Message::Keepalive.encode(FOUR).unwrap();
    ka[3] = 0;
    assert_eq!(decode(&ka, FOUR), Err(DecodeError::BadMarker));
    assert_eq!(notif(&DecodeError::BadMarker), (1, 1, vec![]));
    // frame_len spots the bad marker before the header is complete.
    assert_eq!(frame_len(&[0xff, 0xff, 0]), Err(DecodeError::BadMarker));
    assert_eq!(frame_len(&[0xff; 10]), Ok(None));
    for len in [0u16, 18, 4097, 65535] {
        let e = frame_len(&hdr(len, 4)).unwrap_err();
        assert_eq!(notif(&e), (1, 2, len.to_be_bytes().to_vec()));
    }
    // Length says 23, 19 present: wait for more.
    assert_eq!(frame_len(&hdr(23, 2)), Ok(None));
    let e = decode(&msg(9, &[]), FOUR).unwrap_err();
    assert_eq!(notif(&e), (1, 3, vec![9]));
    let e = decode(&msg(4, &[0]), FOUR).unwrap_err();
    assert_eq!(notif(&e), (1, 2, vec![0, 20]));
    // The header's length must match what the caller framed.
    let mut m = msg(4, &[]);
    m.push(0);
    assert!(matches!(decode(&m, FOUR), Err(DecodeError::BadLength(19))));
    assert!(matches!(
        decode(&[0xff; 5], FOUR),
        Err(DecodeError::BadLength(5))
    ));
    let e = decode(&msg(3, &[6]), FOUR).unwrap_err();
    assert_eq!(notif(&e).0, 1);
}

#[test]
fn ipv4_update_encodes_byte_exact_and_round_trips() {
    let u = Update {
        withdrawn: vec![],
        attributes: vec![
            PathAttribute::Origin(Origin::Igp),
            PathAttribute::AsPath(AsPath::sequence(vec![65001])),
            PathAttribute::NextHop(Ipv4Addr::new(10, 0, 0, 2)),
        ],
        nlri: vec![v4("10.0.0.1/32")],
    };
    let wire = Message::Update(u.clone()).encode(FOUR).unwrap();
    let mut attrs = ORIGIN_IGP.to_vec();
    attrs.extend_from_slice(&AS_PATH_65001);
    attrs.extend_from_slice(&NEXT_HOP);
    assert_eq!(wire, msg(2, &update_body(&[], &attrs, &[32, 10, 0, 0, 1])));
    assert_eq!(decode(&wire, FOUR), Ok(Message::Update(u.clone())));
    assert_eq!(u.announced(), vec![net("10.0.0.1/32")]);

    // 2-octet peers get 2-octet AS numbers.
    let wire2 = Message::Update(u.clone()).encode(TWO).unwrap();
    assert_eq!(wire2.len(), wire.len() - 2);
    assert_eq!(decode(&wire2, TWO), Ok(Message::Update(u)));
}

#[test]
fn withdraws_and_short_prefixes_round_trip() {
    let u = Update {
        withdrawn: vec![v4("10.1.0.0/16"), v4("0.0.0.0/0"), v4("192.0.2.128/25")],
        attributes: vec![],
        nlri: vec![],
    };
    assert_eq!(
        roundtrip(&Message::Update(u.clone()), FOUR),
        Message::Update(u.clone())
    );
    assert_eq!(u.withdrawn_all().len(), 3);
    // The empty UPDATE (IPv4 End-of-RIB) too.
    let eor = Message::Update(Update::default());
    assert_eq!(eor.encode(FOUR).unwrap().len(), 23);
    assert_eq!(roundtrip(&eor, FOUR), eor);
}

#[test]
fn host_bits_past_the_prefix_length_are_ignored() {
    // 10.0.0.255/24 sent with its host byte: "irrelevant" bits.
    let body = update_body(&[25, 10, 0, 0, 0xff], &[], &[]);
    let Message::Update(u) = decode(&msg(2, &body), FOUR).unwrap() else {
        panic!()
    };
    assert_eq!(u.withdrawn, vec![v4("10.0.0.128/25")]);
}

#[test]
fn ipv6_mp_reach_and_unreach_round_trip() {
    let reach = Update {
        withdrawn: vec![],
        attributes: vec![
            PathAttribute::Origin(Origin::Igp),
            PathAttribute::AsPath(AsPath::sequence(vec![4_200_000_001])),
            PathAttribute::MpReach(MpReach {
                family: Family::IPV6_UNICAST,
                next_hops: vec!["fd00::2".parse().unwrap()],
                nlri: vec![net("fd00:200::1/128"), net("2001:db8::/32")],
            }),
        ],
        nlri: vec![],
    };
    let wire = Message::Update(reach.clone()).encode(FOUR).unwrap();
    // MP_REACH: optional, type 14, afi 2, safi 1, 16-octet next hop.
    let mp = wire
        .windows(6)
        .position(|w| w == [0x80, 14, 3 + 1 + 16 + 1 + 17 + 5, 0, 2, 1])
        .expect("MP_REACH_NLRI header");
    assert_eq!(wire[mp + 6], 16);
    assert_eq!(decode(&wire, FOUR), Ok(Message::Update(reach.clone())));
    assert_eq!(reach.announced().len(), 2);

    let unreach = Update {
        withdrawn: vec![],
        attributes: vec![PathAttribute::MpUnreach(MpUnreach {
            family: Family::IPV6_UNICAST,
            withdrawn: vec![net("fd00:200::1/128")],
        })],
        nlri: vec![],
    };
    assert_eq!(
        roundtrip(&Message::Update(unreach.clone()), FOUR),
        Message::Update(unreach.clone())
    );
    assert_eq!(unreach.withdrawn_all(), vec![net("fd00:200::1/128")]);

    // Global plus link-local next hop, no NLRI (so no mandatory
    // attributes either).
    let mut two_nh = vec![0x80, 14, 37, 0, 2, 1, 32];
    two_nh.extend_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
    two_nh.extend_from_slice(&"fe80::2".parse::<Ipv6Addr>().unwrap().octets());
    two_nh.push(0);
    let Message::Update(u) =
        decode(&msg(2, &update_body(&[], &two_nh, &[])), FOUR).unwrap_or_else(|e| panic!("{e}"))
    else {
        panic!()
    };
    let Some(PathAttribute::MpReach(r)) = u.attribute(attr::MP_REACH_NLRI) else {
        panic!()
    };
    assert_eq!(r.next_hops.len(), 2);
}

#[test]
fn long_attributes_use_the_extended_length() {
    let u = Update {
        withdrawn: vec![],
        attributes: vec![PathAttribute::Communities((0..100).collect())],
        nlri: vec![],
    };
    let wire = Message::Update(u.clone()).encode(FOUR).unwrap();
    assert_eq!(&wire[23..27], &[0xc0 | 0x10, 8, 1, 144]);
    assert_eq!(decode(&wire, FOUR), Ok(Message::Update(u)));
}

#[test]
fn structural_update_errors_reset_the_session() {
    // Withdrawn routes length overruns the message.
    let e = decode(&msg(2, &[0, 9, 0, 0]), FOUR).unwrap_err();
    assert_eq!(notif(&e), (3, 1, vec![]));
    assert!(e.resets_session());
    // Total path attribute length overruns the message.
    let e = decode(&msg(2, &[0, 0, 0, 30, 0x40, 1, 1, 0]), FOUR).unwrap_err();
    assert_eq!(notif(&e), (3, 1, vec![]));
    // An attribute header cut short.
    let e = update_err(&[0x40, 1], &[]);
    assert_eq!(notif(&e), (3, 1, vec![]));
    // An attribute value overrunning the attribute list.
    let e = update_err(&[0x40, 2, 9, 2, 1, 0, 0], &[]);
    assert_eq!(notif(&e), (3, 1, vec![]));
    assert!(e.resets_session());
    // Extended-length attribute header cut short.
    let e = update_err(&[0x50, 2, 0], &[]);
    assert_eq!(notif(&e), (3, 1, vec![]));
    // NLRI with a prefix length over 32, and a truncated prefix.
    let mut attrs = ORIGIN_IGP.to_vec();
    attrs.extend_from_slice(&AS_PATH_65001);
    attrs.extend_from_slice(&NEXT_HOP);
    let e = update_err(&attrs, &[33, 10, 0, 0, 1, 0]);
    assert_eq!(notif(&e), (3, 10, vec![]));
    assert!(e.resets_session());
    let e = update_err(&attrs, &[24, 10, 0]);
    assert_eq!(notif(&e), (3, 10, vec![]));
    // The same in the withdrawn routes.
    let e = decode(&msg(2, &update_body(&[16, 10], &[], &[])), FOUR).unwrap_err();
    assert_eq!(notif(&e), (3, 10, vec![]));
}

#[test]
fn attribute_errors_carry_the_attribute_and_may_be_survived() {
    // ORIGIN marked optional.
    let e = update_err(&[0xc0, 1, 1, 0], &[]);
    assert_eq!(notif(&e), (3, 4, vec![0xc0, 1, 1, 0]));
    assert!(!e.resets_session());
    // Well-known with the partial bit.
    let e = update_err(&[0x60, 1, 1, 0], &[]);
    assert_eq!(notif(&e).1, 4);
    // ORIGIN of 2 octets.
    let e = update_err(&[0x40, 1, 2, 0, 0], &[]);
    assert_eq!(notif(&e), (3, 5, vec![0x40, 1, 2, 0, 0]));
    // ORIGIN 3.
    let e = update_err(&[0x40, 1, 1, 3], &[]);
    assert_eq!(notif(&e), (3, 6, vec![0x40, 1, 1, 3]));
    // NEXT_HOP 0.0.0.0 and a 3-octet one.
    let e = update_err(&[0x40, 3, 4, 0, 0, 0, 0], &[]);
    assert_eq!(notif(&e).1, 8);
    let e = update_err(&[0x40, 3, 3, 1, 2, 3], &[]);
    assert_eq!(notif(&e).1, 5);
    // AS_PATH: a segment claiming 3 ASNs carrying 1, a bad segment type,
    // an empty segment.
    for bad in [
        vec![0x40, 2, 6, 2, 3, 0, 0, 0xfd, 0xe9],
        vec![0x40, 2, 6, 7, 1, 0, 0, 0xfd, 0xe9],
        vec![0x40, 2, 2, 2, 0],
    ] {
        let e = update_err(&bad, &[]);
        assert_eq!(notif(&e), (3, 11, bad.clone()));
        assert!(!e.resets_session());
    }
    // 2-octet layout read as 4-octet: misaligned.
    let e = decode(
        &msg(2, &update_body(&[], &[0x40, 2, 4, 2, 1, 0xfd, 0xe9], &[])),
        FOUR,
    )
    .unwrap_err();
    assert_eq!(notif(&e).1, 11);
    // ... but fine for a 2-octet session.
    assert!(decode(
        &msg(2, &update_body(&[], &[0x40, 2, 4, 2, 1, 0xfd, 0xe9], &[])),
        TWO
    )
    .is_ok());
    // MED, LOCAL_PREF, ATOMIC_AGGREGATE, AGGREGATOR, COMMUNITIES lengths.
    for bad in [
        vec![0x80, 4, 3, 0, 0, 0],
        vec![0x40, 5, 2, 0, 0],
        vec![0x40, 6, 1, 0],
        vec![0xc0, 7, 6, 0, 0, 0, 1, 1, 1],
        vec![0xc0, 8, 3, 0, 0, 0],
        vec![0xc0, 32, 4, 0, 0, 0, 0],
    ] {
        let e = update_err(&bad, &[]);
        assert_eq!(notif(&e), (3, 5, bad.clone()), "{bad:?}");
    }
    // An unrecognized well-known attribute.
    let e = update_err(&[0x40, 99, 1, 0], &[]);
    assert_eq!(notif(&e), (3, 2, vec![0x40, 99, 1, 0]));
}

#[test]
fn missing_mandatory_attributes_are_reported() {
    let mut attrs = ORIGIN_IGP.to_vec();
    attrs.extend_from_slice(&AS_PATH_65001);
    let e = update_err(&attrs, &[32, 10, 0, 0, 1]);
    assert_eq!(notif(&e), (3, 3, vec![attr::NEXT_HOP]));
    let e = update_err(&NEXT_HOP, &[32, 10, 0, 0, 1]);
    assert_eq!(notif(&e), (3, 3, vec![attr::ORIGIN]));
    // MP_REACH with NLRI needs ORIGIN and AS_PATH, not NEXT_HOP.
    let mp = [0x80, 14, 13, 0, 1, 1, 4, 10, 0, 0, 2, 0, 24, 10, 1, 2];
    let e = update_err(&mp, &[]);
    assert_eq!(notif(&e), (3, 3, vec![attr::ORIGIN]));
    let mut ok = attrs.clone();
    ok.extend_from_slice(&mp);
    let Message::Update(u) = decode(&msg(2, &update_body(&[], &ok, &[])), FOUR).unwrap() else {
        panic!()
    };
    assert_eq!(u.announced(), vec![net("10.1.2.0/24")]);
}

#[test]
fn mp_attribute_errors_reset_the_session() {
    // IPv6 next hop of 15 octets.
    let mut bad = vec![0x80, 14, 20, 0, 2, 1, 15];
    bad.extend_from_slice(&[0; 15]);
    bad.push(0);
    let e = update_err(&bad, &[]);
    assert_eq!(notif(&e).1, 9);
    assert!(e.resets_session());
    // MP_REACH cut before its reserved octet.
    let e = update_err(&[0x80, 14, 8, 0, 1, 1, 4, 10, 0, 0, 2], &[]);
    assert!(e.resets_session());
    // MP_UNREACH with an IPv6 prefix longer than 128.
    let e = update_err(&[0x80, 15, 5, 0, 2, 1, 129, 0], &[]);
    assert_eq!(notif(&e).1, 9);
    assert!(e.resets_session());
    // MP_REACH marked transitive.
    let e = update_err(&[0xc0, 15, 3, 0, 2, 1], &[]);
    assert_eq!(notif(&e).1, 4);
    assert!(e.resets_session());
    // MP_UNREACH twice.
    let e = update_err(&[0x80, 15, 3, 0, 2, 1, 0x80, 15, 3, 0, 1, 1], &[]);
    assert_eq!(notif(&e).1, 1);
    assert!(e.resets_session());
}

#[test]
fn tolerated_oddities_decode() {
    // A repeated ORIGIN is dropped (RFC 7606), an unknown optional
    // attribute kept, an unknown family's MP_REACH kept verbatim.
    let mut attrs = ORIGIN_IGP.to_vec();
    attrs.extend_from_slice(&[0x40, 1, 1, 2]);
    attrs.extend_from_slice(&[0xe0, 200, 2, 1, 2]);
    attrs.extend_from_slice(&[0x80, 14, 5, 0, 25, 65, 0, 0]);
    let Message::Update(u) = decode(&msg(2, &update_body(&[], &attrs, &[])), FOUR).unwrap() else {
        panic!()
    };
    assert_eq!(u.attributes.len(), 3);
    assert_eq!(u.attributes[0], PathAttribute::Origin(Origin::Igp));
    assert_eq!(
        u.attributes[1],
        PathAttribute::Unknown {
            flags: 0xe0,
            code: 200,
            value: vec![1, 2]
        }
    );
    assert!(matches!(
        u.attributes[2],
        PathAttribute::Unknown { code: 14, .. }
    ));
    // Unknown attributes re-encode as received.
    let again = roundtrip(&Message::Update(u.clone()), FOUR);
    assert_eq!(again, Message::Update(u));
    // A malformed AS4_PATH is ignored, not an error.
    assert!(update_err_ok(&[0xc0, 17, 3, 2, 1, 0]));
}

fn update_err_ok(attrs: &[u8]) -> bool {
    decode(&msg(2, &update_body(&[], attrs, &[])), FOUR).is_ok()
}

#[test]
fn notifications_round_trip_and_read_well() {
    let n = Notification::cease(err::CEASE_ADMIN_SHUTDOWN, Some("maintenance"));
    assert_eq!(n.data[0], 11);
    assert_eq!(
        n.to_string(),
        "Cease/Administrative Shutdown: \"maintenance\""
    );
    assert_eq!(
        roundtrip(&Message::Notification(n.clone()), FOUR),
        Message::Notification(n)
    );
    let n = Notification::cease(err::CEASE_PEER_DECONFIGURED, Some("ignored"));
    assert!(n.data.is_empty());
    assert_eq!(n.to_string(), "Cease/Peer De-configured");
    assert_eq!(
        Notification::new(4, 0, vec![]).to_string(),
        "Hold Timer Expired"
    );
    assert_eq!(
        Notification::new(6, 77, vec![]).to_string(),
        "Cease/subcode 77"
    );
    assert_eq!(
        Notification::new(42, 1, vec![]).to_string(),
        "Unknown Error/subcode 1"
    );
    // Long texts are cut to 255 octets on a character boundary.
    let long = "é".repeat(200);
    let n = Notification::cease(err::CEASE_ADMIN_SHUTDOWN, Some(&long));
    assert_eq!(n.data[0], 254);
    assert_eq!(n.shutdown_message().unwrap().chars().count(), 127);
    // A communication longer than the data, or not UTF-8, is not shown.
    let n = Notification::new(6, 2, vec![10, b'a']);
    assert_eq!(n.shutdown_message(), None);
    let n = Notification::new(6, 2, vec![1, 0xff]);
    assert_eq!(n.shutdown_message(), None);
}

#[test]
fn route_refresh_round_trips_and_checks_its_length() {
    let rr = Message::RouteRefresh(RouteRefresh {
        family: Family::IPV6_UNICAST,
        subtype: 0,
    });
    let wire = rr.encode(FOUR).unwrap();
    assert_eq!(&wire[16..], &[0, 23, 5, 0, 2, 0, 1]);
    assert_eq!(decode(&wire, FOUR), Ok(rr));
    let e = decode(&msg(5, &[0, 1, 0]), FOUR).unwrap_err();
    assert_eq!(notif(&e), (7, 1, vec![0, 22]));
}

#[test]
fn oversized_messages_are_refused_by_the_encoder() {
    let u = Update {
        withdrawn: (0..1000u32)
            .map(|i| Ipv4Net::new(Ipv4Addr::from(i << 8), 32).unwrap())
            .collect(),
        attributes: vec![],
        nlri: vec![],
    };
    assert!(matches!(
        Message::Update(u).encode(FOUR),
        Err(EncodeError::TooLong(_))
    ));
}

/// Every truncation and every single-octet corruption of valid messages
/// decodes to a message or an error, never a panic; and whatever decodes
/// re-encodes.
#[test]
fn corrupted_messages_never_panic() {
    let samples = vec![
        Message::Open(Open::new(
            4_200_000_001,
            9,
            Ipv4Addr::new(10, 0, 0, 1),
            &[Family::IPV4_UNICAST, Family::IPV6_UNICAST],
        )),
        Message::Update(Update {
            withdrawn: vec![v4("10.9.0.0/16")],
            attributes: vec![
                PathAttribute::Origin(Origin::Igp),
                PathAttribute::AsPath(AsPath::sequence(vec![65001, 4_200_000_001])),
                PathAttribute::NextHop(Ipv4Addr::new(10, 0, 0, 2)),
                PathAttribute::MultiExitDisc(5),
                PathAttribute::LocalPref(100),
                PathAttribute::AtomicAggregate,
                PathAttribute::Aggregator {
                    asn: 65001,
                    address: Ipv4Addr::new(1, 1, 1, 1),
                },
                PathAttribute::Communities(vec![1, 2]),
                PathAttribute::MpReach(MpReach {
                    family: Family::IPV6_UNICAST,
                    next_hops: vec!["fd00::2".parse().unwrap(), "fe80::2".parse().unwrap()],
                    nlri: vec![net("fd00:200::1/128")],
                }),
                PathAttribute::MpUnreach(MpUnreach {
                    family: Family::IPV6_UNICAST,
                    withdrawn: vec![net("fd00:300::/64")],
                }),
                PathAttribute::As4Path(AsPath::sequence(vec![4_200_000_001])),
                PathAttribute::As4Aggregator {
                    asn: 4_200_000_001,
                    address: Ipv4Addr::new(1, 1, 1, 1),
                },
            ],
            nlri: vec![v4("10.200.0.1/32"), v4("10.201.0.0/24")],
        }),
        Message::Notification(Notification::cease(2, Some("bye"))),
        Message::RouteRefresh(RouteRefresh {
            family: Family::IPV4_UNICAST,
            subtype: 0,
        }),
    ];
    let mut decoded = 0;
    for opts in [FOUR, TWO] {
        for m in &samples {
            let wire = m.encode(opts).unwrap();
            if opts == FOUR {
                assert_eq!(decode(&wire, opts).as_ref(), Ok(m));
            }
            for cut in 0..wire.len() {
                let _ = frame_len(&wire[..cut]);
                let _ = decode(&wire[..cut], opts);
            }
            for i in 0..wire.len() {
                for v in [0u8, 1, 2, 0x7f, 0x80, 0xfe, 0xff] {
                    let mut w = wire.clone();
                    w[i] = v;
                    if let Ok(m2) = decode(&w, opts) {
                        decoded += 1;
                        let again = m2.encode(opts).expect("decoded messages re-encode");
                        assert!(decode(&again, opts).is_ok());
                    }
                }
            }
        }
    }
    assert!(
        decoded > 100,
        "most corruptions of values still decode ({decoded})"
    );
}
