//! RFC 2131 paths through `decide`, with crafted messages.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use dhcproto::v4::relay::{RelayAgentInformation, RelayInfo};
use dhcproto::v4::{DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode};
use furrow_api::resource::{Ipv4PoolConfig, PoolRange, StaticRoute};

use super::*;
use crate::codec;

const NOW: u64 = 1_700_000_000;
const A: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0xa]);
const B: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0xb]);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 2);

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 100, 0, last)
}

fn pool() -> Ipv4PoolConfig {
    Ipv4PoolConfig {
        server_ip: SERVER,
        cidr: "10.100.0.0/24".parse().unwrap(),
        pool: PoolRange {
            start: ip(10),
            end: ip(20),
            exclude: vec![ip(15)],
        },
        router: Some(ip(1)),
        dns: vec![ip(1), ip(3)],
        domain_name: Some("example.internal".into()),
        domain_search: vec!["example.internal".into(), "corp.example.internal".into()],
        ntp: vec![ip(1)],
        lease_time: Some(3600),
        mtu: Some(1400),
        routes: vec![StaticRoute {
            dst: "192.168.0.0/16".parse().unwrap(),
            gateway: ip(1),
        }],
        next_server: Some(ip(5)),
        boot_file_name: Some("ipxe.efi".into()),
    }
}

fn cfg() -> ServerConfig {
    ServerConfig::new(pool(), [0x02, 0, 0, 0, 0, 0x67])
}

fn leases() -> MemoryLeases {
    MemoryLeases::new(&pool())
}

/// A BOOTREQUEST from `mac` of type `t`.
fn msg(t: MessageType, mac: MacAddr) -> Message {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootRequest)
        .set_xid(0xdead_beef)
        .set_chaddr(&mac.0);
    m.opts_mut().insert(DhcpOption::MessageType(t));
    m
}

fn with(mut m: Message, o: DhcpOption) -> Message {
    m.opts_mut().insert(o);
    m
}

fn lease(ipaddr: Ipv4Addr, mac: MacAddr, state: LeaseState, expires_at: u64) -> Lease {
    Lease {
        ip: ipaddr,
        mac,
        client_id: None,
        hostname: None,
        state,
        expires_at,
        node: "n0".into(),
    }
}

fn reply(d: &Decision) -> &Message {
    &d.reply
        .as_ref()
        .unwrap_or_else(|| panic!("no reply: {}", d.reason))
        .message
}

fn opt(m: &Message, c: OptionCode) -> Option<&DhcpOption> {
    m.opts().get(c)
}

/// The option's TLV bytes as they go on the wire.
fn wire(m: &Message, code: u8) -> Option<Vec<u8>> {
    let b = codec::encode(m, 0).unwrap();
    let mut i = codec::MIN_MESSAGE_LEN;
    while i < b.len() {
        match b[i] {
            0 => i += 1,
            255 => return None,
            c => {
                let len = b[i + 1] as usize;
                if c == code {
                    return Some(b[i..i + 2 + len].to_vec());
                }
                i += 2 + len;
            }
        }
    }
    None
}

fn decide_now(view: &MemoryLeases, m: &Message) -> Decision {
    decide(&cfg(), view, m, NOW, "n1")
}

/// Runs a decision and applies its change, like netd after a good commit.
fn step(view: &mut MemoryLeases, m: &Message, now: u64) -> Decision {
    let d = decide(&cfg(), view, m, now, "n1");
    if let Some(c) = &d.change {
        view.apply(c);
    }
    d
}

fn selecting(mac: MacAddr, req: Ipv4Addr, sid: Ipv4Addr) -> Message {
    with(
        with(
            msg(MessageType::Request, mac),
            DhcpOption::RequestedIpAddress(req),
        ),
        DhcpOption::ServerIdentifier(sid),
    )
}

fn init_reboot(mac: MacAddr, req: Ipv4Addr) -> Message {
    with(
        msg(MessageType::Request, mac),
        DhcpOption::RequestedIpAddress(req),
    )
}

fn renewing(mac: MacAddr, ciaddr: Ipv4Addr) -> Message {
    let mut m = msg(MessageType::Request, mac);
    m.set_ciaddr(ciaddr);
    m
}

// --- DISCOVER -------------------------------------------------------------

#[test]
fn discover_offers_first_free_address_with_the_basic_options() {
    let v = leases();
    let d = decide_now(&v, &msg(MessageType::Discover, A));
    assert_eq!(d.reason, Reason::Offer(OfferSource::Pool));
    let r = reply(&d);
    assert_eq!(r.opcode(), Opcode::BootReply);
    assert_eq!(r.xid(), 0xdead_beef);
    assert_eq!(r.yiaddr(), ip(10));
    assert_eq!(r.ciaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(r.siaddr(), ip(5));
    assert_eq!(
        r.fname_str().unwrap().unwrap().trim_end_matches('\0'),
        "ipxe.efi"
    );
    assert_eq!(codec::msg_type(r), Some(MessageType::Offer));
    assert_eq!(codec::server_id(r), Some(SERVER));
    assert_eq!(
        opt(r, OptionCode::SubnetMask),
        Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
    );
    assert_eq!(
        opt(r, OptionCode::Router),
        Some(&DhcpOption::Router(vec![ip(1)]))
    );
    assert_eq!(
        opt(r, OptionCode::DomainNameServer),
        Some(&DhcpOption::DomainNameServer(vec![ip(1), ip(3)]))
    );
    assert_eq!(
        opt(r, OptionCode::DomainName),
        Some(&DhcpOption::DomainName("example.internal".into()))
    );
    assert_eq!(
        opt(r, OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(3600))
    );
    assert_eq!(
        opt(r, OptionCode::Renewal),
        Some(&DhcpOption::Renewal(1800))
    );
    assert_eq!(
        opt(r, OptionCode::Rebinding),
        Some(&DhcpOption::Rebinding(3150))
    );
    // Not asked for: no boot file option (the file field carries it).
    assert!(opt(r, OptionCode::BootfileName).is_none());
    assert!(opt(r, OptionCode::BroadcastAddr).is_none());
    assert_eq!(
        d.reply.as_ref().unwrap().delivery,
        Delivery::Yiaddr {
            ip: ip(10),
            chaddr: A
        }
    );
    match d.change {
        Some(LeaseChange::Offer {
            lease,
            supersedes: None,
        }) => {
            assert_eq!(lease.ip, ip(10));
            assert_eq!(lease.mac, A);
            assert_eq!(lease.state, LeaseState::Offered);
            assert_eq!(lease.expires_at, NOW + u64::from(DEFAULT_OFFER_HOLD));
            assert_eq!(lease.node, "n1");
        }
        other => panic!("{other:?}"),
    }
    assert!(d.depends.ips.contains(&ip(10)));
    assert!(d.depends.macs.contains(&A));
}

#[test]
fn discover_broadcast_flag_means_broadcast_reply() {
    let v = leases();
    let mut m = msg(MessageType::Discover, A);
    m.set_flags(Flags::default().set_broadcast());
    let d = decide_now(&v, &m);
    assert_eq!(d.reply.unwrap().delivery, Delivery::Broadcast);
}

#[test]
fn reservation_comes_first_even_outside_the_pool_range() {
    let mut v = leases();
    v.reserve(A, ip(30));
    let m = with(
        msg(MessageType::Discover, A),
        DhcpOption::RequestedIpAddress(ip(12)),
    );
    let d = decide_now(&v, &m);
    assert_eq!(d.reason, Reason::Offer(OfferSource::Reservation));
    assert_eq!(reply(&d).yiaddr(), ip(30));
    // And it beats an existing pool lease, which is superseded.
    v.insert(lease(ip(11), A, LeaseState::Bound, NOW + 100));
    let d = decide_now(&v, &msg(MessageType::Discover, A));
    assert_eq!(reply(&d).yiaddr(), ip(30));
    assert!(matches!(
        d.change,
        Some(LeaseChange::Offer { supersedes: Some(s), .. }) if s == ip(11)
    ));
}

#[test]
fn an_address_reserved_for_another_mac_is_never_offered() {
    let mut v = leases();
    v.reserve(B, ip(10));
    // Not as the next free address, and not when asked for.
    let m = with(
        msg(MessageType::Discover, A),
        DhcpOption::RequestedIpAddress(ip(10)),
    );
    let d = decide_now(&v, &m);
    assert_eq!(reply(&d).yiaddr(), ip(11));
    // Not even when A holds an old lease on it.
    v.insert(lease(ip(10), A, LeaseState::Bound, NOW + 100));
    let d = decide_now(&v, &msg(MessageType::Discover, A));
    assert_ne!(reply(&d).yiaddr(), ip(10));
}

#[test]
fn reserved_address_in_use_by_someone_else_means_no_offer() {
    let mut v = leases();
    v.reserve(A, ip(12));
    v.insert(lease(ip(12), B, LeaseState::Bound, NOW + 100));
    let d = decide_now(&v, &msg(MessageType::Discover, A));
    assert!(d.reply.is_none() && d.change.is_none());
    assert_eq!(
        d.reason,
        Reason::ReservationUnavailable {
            ip: ip(12),
            why: Unusable::Taken(B)
        }
    );
    assert!(d.reason.is_problem());
}

#[test]
fn existing_binding_is_offered_again_without_a_write() {
    let mut v = leases();
    v.insert(lease(ip(14), A, LeaseState::Bound, NOW + 100));
    let d = decide_now(&v, &msg(MessageType::Discover, A));
    assert_eq!(d.reason, Reason::Offer(OfferSource::ExistingLease));
    assert_eq!(reply(&d).yiaddr(), ip(14));
    assert_eq!(d.change, None);
    // An expired one is still preferred while nobody else took it.
    let mut v = leases();
    v.insert(lease(ip(14), A, LeaseState::Bound, NOW - 100));
    let d = decide_now(&v, &msg(MessageType::Discover, A));
    assert_eq!(reply(&d).yiaddr(), ip(14));
    assert!(matches!(d.change, Some(LeaseChange::Offer { .. })));
}

#[test]
fn requested_address_is_honoured_only_if_free_and_in_the_pool() {
    let v = leases();
    let req = |a| {
        with(
            msg(MessageType::Discover, A),
            DhcpOption::RequestedIpAddress(a),
        )
    };
    let d = decide_now(&v, &req(ip(17)));
    assert_eq!(d.reason, Reason::Offer(OfferSource::Requested));
    assert_eq!(reply(&d).yiaddr(), ip(17));
    for bad in [ip(15), ip(50), ip(1), SERVER, Ipv4Addr::new(192, 0, 2, 1)] {
        let d = decide_now(&v, &req(bad));
        assert_eq!(reply(&d).yiaddr(), ip(10), "{bad}");
        assert_eq!(d.reason, Reason::Offer(OfferSource::Pool));
    }
    let mut v = leases();
    v.insert(lease(ip(17), B, LeaseState::Bound, NOW + 100));
    assert_eq!(reply(&decide_now(&v, &req(ip(17)))).yiaddr(), ip(10));
}

#[test]
fn offers_hold_their_address_briefly() {
    let mut v = leases();
    let d = step(&mut v, &msg(MessageType::Discover, A), NOW);
    assert_eq!(reply(&d).yiaddr(), ip(10));
    let d = step(&mut v, &msg(MessageType::Discover, B), NOW + 10);
    assert_eq!(reply(&d).yiaddr(), ip(11));
    // After the hold, A's unclaimed offer is free again; B keeps its own
    // (existing lease first), a third client gets .10.
    // A third client asking for .10 does not get it while the offer holds,
    // and does once it lapsed.
    let c = MacAddr([0x52, 0x54, 0, 0, 0, 0xc]);
    let ask = with(
        msg(MessageType::Discover, c),
        DhcpOption::RequestedIpAddress(ip(10)),
    );
    assert_eq!(
        reply(&decide(&cfg(), &v, &ask, NOW + 59, "n1")).yiaddr(),
        ip(12)
    );
    let d = decide(&cfg(), &v, &ask, NOW + 61, "n1");
    assert_eq!(reply(&d).yiaddr(), ip(10));
    assert_eq!(d.reason, Reason::Offer(OfferSource::Requested));
}

#[test]
fn pool_exhaustion_is_reported() {
    let mut v = leases();
    for (i, a) in [10, 11, 12, 13, 14, 16, 17, 18, 19, 20]
        .into_iter()
        .enumerate()
    {
        v.insert(lease(
            ip(a),
            MacAddr([2, 0, 0, 0, 1, i as u8]),
            LeaseState::Bound,
            NOW + 100,
        ));
    }
    let d = decide_now(&v, &msg(MessageType::Discover, A));
    assert_eq!(d.reason, Reason::PoolExhausted);
    assert!(d.reply.is_none() && d.change.is_none());
    assert!(d.reason.is_problem());
    // An expired lease of someone else is reusable.
    v.insert(lease(
        ip(18),
        MacAddr([2, 0, 0, 0, 1, 9]),
        LeaseState::Bound,
        NOW,
    ));
    assert_eq!(
        reply(&decide_now(&v, &msg(MessageType::Discover, A))).yiaddr(),
        ip(18)
    );
}

// --- REQUEST --------------------------------------------------------------

#[test]
fn selecting_our_offer_is_acked_and_bound() {
    let mut v = leases();
    step(&mut v, &msg(MessageType::Discover, A), NOW);
    let m = with(
        selecting(A, ip(10), SERVER),
        DhcpOption::Hostname("vm-a".into()),
    );
    let d = step(&mut v, &m, NOW + 1);
    assert_eq!(d.reason, Reason::Ack(RequestState::Selecting));
    let r = reply(&d);
    assert_eq!(codec::msg_type(r), Some(MessageType::Ack));
    assert_eq!(r.yiaddr(), ip(10));
    assert_eq!(
        opt(r, OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(3600))
    );
    let l = v.get(ip(10)).unwrap();
    assert_eq!(l.state, LeaseState::Bound);
    assert_eq!(l.expires_at, NOW + 1 + 3600);
    assert_eq!(l.hostname.as_deref(), Some("vm-a"));
    // A renewal without a hostname keeps the recorded one.
    step(&mut v, &renewing(A, ip(10)), NOW + 2);
    assert_eq!(v.get(ip(10)).unwrap().hostname.as_deref(), Some("vm-a"));
}

#[test]
fn selecting_after_the_offer_lapsed_still_acks_a_free_address() {
    let mut v = leases();
    step(&mut v, &msg(MessageType::Discover, A), NOW);
    let d = step(&mut v, &selecting(A, ip(10), SERVER), NOW + 600);
    assert_eq!(d.reason, Reason::Ack(RequestState::Selecting));
}

#[test]
fn selecting_an_address_someone_else_got_meanwhile_is_naked() {
    let mut v = leases();
    step(&mut v, &msg(MessageType::Discover, A), NOW);
    // Another node bound it to B (A's offer lapsed and B won).
    v.insert(lease(ip(10), B, LeaseState::Bound, NOW + 3600));
    let d = decide(&cfg(), &v, &selecting(A, ip(10), SERVER), NOW + 100, "n1");
    assert_eq!(
        d.reason,
        Reason::Nak(RequestState::Selecting, Unusable::Taken(B))
    );
    let r = reply(&d);
    assert_eq!(codec::msg_type(r), Some(MessageType::Nak));
    assert_eq!(r.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(opt(r, OptionCode::AddressLeaseTime).is_none());
    assert!(opt(r, OptionCode::Message).is_some());
    assert_eq!(d.reply.unwrap().delivery, Delivery::Broadcast);
    assert!(d.change.is_none());
}

#[test]
fn selecting_another_server_releases_our_offer_silently() {
    let mut v = leases();
    step(&mut v, &msg(MessageType::Discover, A), NOW);
    let other = Ipv4Addr::new(10, 100, 0, 250);
    let d = step(&mut v, &selecting(A, ip(33), other), NOW + 1);
    assert!(d.reply.is_none());
    assert_eq!(
        d.reason,
        Reason::OtherServerSelected {
            server: other,
            released_offer: true
        }
    );
    assert_eq!(d.change, Some(LeaseChange::Release { ip: ip(10), mac: A }));
    assert!(v.get(ip(10)).is_none());
    // A binding is never dropped that way.
    v.insert(lease(ip(12), A, LeaseState::Bound, NOW + 100));
    let d = decide_now(&v, &selecting(A, ip(33), other));
    assert!(d.change.is_none() && d.reply.is_none());
}

#[test]
fn selecting_without_requested_address_is_ignored() {
    let v = leases();
    let m = with(
        msg(MessageType::Request, A),
        DhcpOption::ServerIdentifier(SERVER),
    );
    let d = decide_now(&v, &m);
    assert_eq!(d.reason, Reason::MissingRequestedAddress);
    assert!(d.reply.is_none());
}

#[test]
fn init_reboot_rules() {
    let mut v = leases();
    v.insert(lease(ip(12), A, LeaseState::Bound, NOW + 100));
    v.insert(lease(ip(13), B, LeaseState::Bound, NOW + 100));
    v.reserve(MacAddr([2, 0, 0, 0, 0, 9]), ip(16));

    // Its own lease: ACK, extended.
    let d = decide_now(&v, &init_reboot(A, ip(12)));
    assert_eq!(d.reason, Reason::Ack(RequestState::InitReboot));
    assert!(
        matches!(&d.change, Some(LeaseChange::Bind { lease, .. }) if lease.expires_at == NOW + 3600)
    );
    // Wrong network: NAK.
    let d = decide_now(&v, &init_reboot(A, Ipv4Addr::new(192, 168, 7, 7)));
    assert_eq!(
        d.reason,
        Reason::Nak(RequestState::InitReboot, Unusable::NotInSubnet)
    );
    assert_eq!(d.reply.unwrap().delivery, Delivery::Broadcast);
    // Someone else's: NAK.
    let d = decide_now(&v, &init_reboot(A, ip(13)));
    assert_eq!(d.reason, Reason::NakNotYourLease { bound: ip(12) });
    let c = MacAddr([0x52, 0x54, 0, 0, 0, 0xc]);
    let d = decide_now(&v, &init_reboot(c, ip(13)));
    assert_eq!(
        d.reason,
        Reason::Nak(RequestState::InitReboot, Unusable::Taken(B))
    );
    // Reserved for another MAC: NAK.
    let d = decide_now(&v, &init_reboot(c, ip(16)));
    assert!(matches!(
        d.reason,
        Reason::Nak(_, Unusable::ReservedForOther(_))
    ));
    // No record, free and in the pool: ACK (the store is authoritative
    // for its pool; a VM keeps its address after the store lost it).
    let d = decide_now(&v, &init_reboot(c, ip(18)));
    assert_eq!(d.reason, Reason::Ack(RequestState::InitReboot));
    // No record, in the subnet but outside the pool: silent.
    let d = decide_now(&v, &init_reboot(c, ip(200)));
    assert_eq!(d.reason, Reason::SilentNoRecord(ip(200)));
    assert!(d.reply.is_none() && d.change.is_none());
    // A client whose reservation says otherwise: NAK, so it rediscovers.
    v.reserve(c, ip(40));
    let d = decide_now(&v, &init_reboot(c, ip(18)));
    assert_eq!(
        d.reason,
        Reason::Nak(RequestState::InitReboot, Unusable::ClientReserved(ip(40)))
    );
    // Its reserved address, outside the pool: ACK.
    let d = decide_now(&v, &init_reboot(c, ip(40)));
    assert_eq!(d.reason, Reason::Ack(RequestState::InitReboot));
}

#[test]
fn renewing_and_rebinding_extend_the_clients_own_lease() {
    let mut v = leases();
    v.insert(lease(ip(12), A, LeaseState::Bound, NOW + 100));
    // RENEWING: unicast, ciaddr set, no server id, no requested address.
    let d = step(&mut v, &renewing(A, ip(12)), NOW);
    assert_eq!(d.reason, Reason::Ack(RequestState::Renewing));
    let r = d.reply.as_ref().unwrap();
    assert_eq!(r.message.ciaddr(), ip(12));
    assert_eq!(r.message.yiaddr(), ip(12));
    assert_eq!(r.delivery, Delivery::Ciaddr { ip: ip(12) });
    assert_eq!(v.get(ip(12)).unwrap().expires_at, NOW + 3600);
    // REBINDING: the same but broadcast (the flag set by some clients).
    let mut m = renewing(A, ip(12));
    m.set_flags(Flags::default().set_broadcast());
    let d = step(&mut v, &m, NOW + 3200);
    assert_eq!(d.reason, Reason::Ack(RequestState::Renewing));
    assert_eq!(v.get(ip(12)).unwrap().expires_at, NOW + 3200 + 3600);
    // Renewing an address leased to someone else: NAK.
    v.insert(lease(ip(13), B, LeaseState::Bound, NOW + 100));
    let c = MacAddr([0x52, 0x54, 0, 0, 0, 0xc]);
    let d = decide_now(&v, &renewing(c, ip(13)));
    assert_eq!(
        d.reason,
        Reason::Nak(RequestState::Renewing, Unusable::Taken(B))
    );
    // Renewing with a different address than our binding: NAK.
    let d = decide_now(&v, &renewing(A, ip(14)));
    assert_eq!(d.reason, Reason::NakNotYourLease { bound: ip(12) });
}

#[test]
fn request_with_nothing_to_go_on_is_ignored() {
    let d = decide_now(&leases(), &msg(MessageType::Request, A));
    assert_eq!(d.reason, Reason::MissingRequestedAddress);
}

// --- RELEASE, DECLINE, INFORM --------------------------------------------

#[test]
fn release_frees_only_the_holders_address() {
    let mut v = leases();
    v.insert(lease(ip(12), A, LeaseState::Bound, NOW + 100));
    let mut m = with(
        msg(MessageType::Release, B),
        DhcpOption::ServerIdentifier(SERVER),
    );
    m.set_ciaddr(ip(12));
    let d = step(&mut v, &m, NOW);
    assert_eq!(d.reason, Reason::NotTheHolder(ip(12)));
    assert!(v.get(ip(12)).is_some());
    let mut m = with(
        msg(MessageType::Release, A),
        DhcpOption::ServerIdentifier(SERVER),
    );
    m.set_ciaddr(ip(12));
    let d = step(&mut v, &m, NOW);
    assert_eq!(d.reason, Reason::Released);
    assert!(d.reply.is_none());
    assert!(v.get(ip(12)).is_none());
    // To another server: not ours.
    let mut m = with(
        msg(MessageType::Release, A),
        DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 100, 0, 250)),
    );
    m.set_ciaddr(ip(12));
    assert!(matches!(decide_now(&v, &m).reason, Reason::NotForUs(_)));
}

#[test]
fn decline_takes_the_address_out_of_use_for_a_while() {
    let mut v = leases();
    step(&mut v, &msg(MessageType::Discover, A), NOW);
    step(&mut v, &selecting(A, ip(10), SERVER), NOW);
    let m = with(
        with(
            msg(MessageType::Decline, A),
            DhcpOption::RequestedIpAddress(ip(10)),
        ),
        DhcpOption::ServerIdentifier(SERVER),
    );
    let d = step(&mut v, &m, NOW + 1);
    assert_eq!(d.reason, Reason::Declined);
    assert!(d.reply.is_none());
    assert_eq!(
        d.change,
        Some(LeaseChange::Decline {
            ip: ip(10),
            mac: A,
            until: NOW + 1 + u64::from(DEFAULT_DECLINE_HOLD)
        })
    );
    // Nobody gets .10 now, not even A when asking for it.
    let again = with(
        msg(MessageType::Discover, A),
        DhcpOption::RequestedIpAddress(ip(10)),
    );
    assert_eq!(reply(&step(&mut v, &again, NOW + 2)).yiaddr(), ip(11));
    assert_eq!(
        reply(&decide(
            &cfg(),
            &v,
            &msg(MessageType::Discover, B),
            NOW + 2,
            "n1"
        ))
        .yiaddr(),
        ip(12)
    );
    // After the hold it is free again.
    let later = NOW + 1 + u64::from(DEFAULT_DECLINE_HOLD) + 1;
    let ask = with(
        msg(MessageType::Discover, B),
        DhcpOption::RequestedIpAddress(ip(10)),
    );
    assert_eq!(
        reply(&decide(&cfg(), &v, &ask, NOW + 2, "n1")).yiaddr(),
        ip(12)
    );
    assert_eq!(
        reply(&decide(&cfg(), &v, &ask, later, "n1")).yiaddr(),
        ip(10)
    );
    // Declining someone else's address does nothing.
    let m = with(
        msg(MessageType::Decline, B),
        DhcpOption::RequestedIpAddress(ip(11)),
    );
    assert_eq!(decide_now(&v, &m).reason, Reason::NotTheHolder(ip(11)));
}

#[test]
fn inform_gets_configuration_without_a_lease() {
    let v = leases();
    let mut m = msg(MessageType::Inform, A);
    m.set_ciaddr(ip(99));
    let d = decide_now(&v, &m);
    assert_eq!(d.reason, Reason::AckInform);
    assert!(d.change.is_none());
    let r = d.reply.as_ref().unwrap();
    assert_eq!(codec::msg_type(&r.message), Some(MessageType::Ack));
    assert_eq!(r.message.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(r.message.ciaddr(), ip(99));
    assert!(opt(&r.message, OptionCode::AddressLeaseTime).is_none());
    assert!(opt(&r.message, OptionCode::Renewal).is_none());
    assert!(opt(&r.message, OptionCode::Rebinding).is_none());
    assert!(opt(&r.message, OptionCode::Router).is_some());
    assert!(opt(&r.message, OptionCode::SubnetMask).is_some());
    assert_eq!(codec::server_id(&r.message), Some(SERVER));
    assert_eq!(r.delivery, Delivery::Ciaddr { ip: ip(99) });
}

#[test]
fn odd_messages_are_ignored_with_a_reason() {
    let v = leases();
    let mut m = msg(MessageType::Discover, A);
    m.opts_mut().remove(OptionCode::MessageType);
    assert_eq!(decide_now(&v, &m).reason, Reason::NoMessageType);
    let m = msg(MessageType::Unknown(77), A);
    assert_eq!(
        decide_now(&v, &m).reason,
        Reason::UnsupportedMessageType(77)
    );
    let m = msg(MessageType::Offer, A);
    assert_eq!(decide_now(&v, &m).reason, Reason::UnsupportedMessageType(2));
    let mut m = msg(MessageType::Discover, A);
    m.set_opcode(Opcode::BootReply);
    assert_eq!(decide_now(&v, &m).reason, Reason::NotARequest);
    // hlen 16 would make dhcproto's chaddr() fine, but not Ethernet; and
    // htype 6 is not Ethernet either. Neither panics.
    let mut m = msg(MessageType::Discover, A);
    m.set_chaddr(&[1; 16]);
    assert_eq!(decide_now(&v, &m).reason, Reason::NotEthernet);
    let mut m = msg(MessageType::Discover, A);
    m.set_htype(HType::from(6));
    assert_eq!(decide_now(&v, &m).reason, Reason::NotEthernet);
    let m = msg(MessageType::Discover, MacAddr([1, 0, 0x5e, 0, 0, 1]));
    assert_eq!(decide_now(&v, &m).reason, Reason::BadClientMac);
    for d in [
        decide_now(&v, &msg(MessageType::Unknown(77), A)),
        decide_now(&v, &m),
    ] {
        assert!(d.reply.is_none() && d.change.is_none());
    }
}

// --- options --------------------------------------------------------------

fn prl(m: Message, codes: &[u8]) -> Message {
    with(
        m,
        DhcpOption::ParameterRequestList(codes.iter().map(|c| OptionCode::from(*c)).collect()),
    )
}

#[test]
fn option_121_is_rfc3442_encoded_with_the_router_as_default_route() {
    let mut c = cfg();
    c.pool.routes.push(StaticRoute {
        dst: "10.200.0.128/25".parse().unwrap(),
        gateway: ip(4),
    });
    c.pool.routes.push(StaticRoute {
        dst: "172.16.5.9/32".parse().unwrap(),
        gateway: ip(4),
    });
    let m = prl(msg(MessageType::Discover, A), &[1, 3, 121]);
    let d = decide(&c, &leases(), &m, NOW, "n1");
    let got = wire(reply(&d), 121).expect("121 sent when requested");
    #[rustfmt::skip]
    let want = vec![
        121, 7 + 9 + 9 + 5,
        16, 192, 168, /* via */ 10, 100, 0, 1,
        25, 10, 200, 0, 128, /* via */ 10, 100, 0, 4,
        32, 172, 16, 5, 9, /* via */ 10, 100, 0, 4,
        0, /* via */ 10, 100, 0, 1,
    ];
    assert_eq!(got, want);
    // The router option still goes along for clients without 121 support.
    assert!(wire(reply(&d), 3).is_some());
    // Not requested: not sent.
    let m = prl(msg(MessageType::Discover, A), &[1, 3]);
    assert!(wire(reply(&decide(&c, &leases(), &m, NOW, "n1")), 121).is_none());
    // Routes configured without a router: no default entry invented.
    c.pool.router = None;
    let m = prl(msg(MessageType::Discover, A), &[121]);
    let got = wire(reply(&decide(&c, &leases(), &m, NOW, "n1")), 121).unwrap();
    assert_eq!(got[1] as usize, got.len() - 2);
    assert!(!got.ends_with(&[0, 10, 100, 0, 1]));
}

#[test]
fn option_119_is_rfc3397_encoded() {
    let m = prl(msg(MessageType::Discover, A), &[119]);
    let got = wire(reply(&decide_now(&leases(), &m)), 119).unwrap();
    // "example.internal" then "corp" + a compression pointer to offset 0.
    let mut want = vec![119, 0];
    want.extend(b"\x07example\x08internal\x00");
    want.extend(b"\x04corp\xc0\x00");
    want[1] = (want.len() - 2) as u8;
    assert_eq!(got, want);
}

#[test]
fn options_26_42_67_and_the_boot_fields() {
    let m = prl(msg(MessageType::Discover, A), &[42, 67]);
    let r = reply(&decide_now(&leases(), &m)).clone();
    assert_eq!(wire(&r, 26).unwrap(), vec![26, 2, 0x05, 0x78]);
    assert_eq!(wire(&r, 42).unwrap(), vec![42, 4, 10, 100, 0, 1]);
    let mut want = vec![67, 8];
    want.extend(b"ipxe.efi");
    assert_eq!(wire(&r, 67).unwrap(), want);
    assert_eq!(r.siaddr(), ip(5));
    let b = codec::encode(&r, 0).unwrap();
    assert_eq!(&b[108..117], b"ipxe.efi\0");
    // 42 and 67 only when requested (with a list present).
    let m = prl(msg(MessageType::Discover, A), &[1, 3]);
    let r = reply(&decide_now(&leases(), &m)).clone();
    assert!(wire(&r, 42).is_none() && wire(&r, 67).is_none());
    assert!(wire(&r, 26).is_some());
    // Without any list, the configured extras go along (but not 67).
    let r = reply(&decide_now(&leases(), &msg(MessageType::Discover, A))).clone();
    assert!(wire(&r, 42).is_some() && wire(&r, 119).is_some() && wire(&r, 121).is_some());
    assert!(wire(&r, 67).is_none());
    // Broadcast address only when asked.
    let m = prl(msg(MessageType::Discover, A), &[28]);
    let r = reply(&decide_now(&leases(), &m)).clone();
    assert_eq!(wire(&r, 28).unwrap(), vec![28, 4, 10, 100, 0, 255]);
}

fn relay_info() -> DhcpOption {
    let mut info = RelayAgentInformation::default();
    info.insert(RelayInfo::AgentCircuitId(b"eth0:100".to_vec()));
    info.insert(RelayInfo::AgentRemoteId(vec![0xab; 6]));
    DhcpOption::RelayAgentInformation(info)
}

#[test]
fn relay_agent_information_is_echoed_last_and_replies_go_to_giaddr() {
    let mut m = with(msg(MessageType::Discover, A), relay_info());
    m.set_giaddr(ip(1)).set_hops(1);
    let d = decide_now(&leases(), &m);
    let r = d.reply.as_ref().unwrap();
    assert_eq!(r.delivery, Delivery::Relay { giaddr: ip(1) });
    assert_eq!(r.message.giaddr(), ip(1));
    assert_eq!(r.message.hops(), 0);
    assert_eq!(
        opt(&r.message, OptionCode::RelayAgentInformation),
        Some(&relay_info())
    );
    let bytes = codec::encode(&r.message, 0).unwrap();
    let mut tail = vec![82, 18, 1, 8];
    tail.extend(b"eth0:100");
    tail.extend([2, 6, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 255]);
    assert!(bytes.ends_with(&tail), "82 must be the last option");
    // A NAK through a relay sets the broadcast bit so the relay broadcasts.
    let mut m = with(init_reboot(A, Ipv4Addr::new(192, 168, 1, 1)), relay_info());
    m.set_giaddr(ip(1));
    let d = decide_now(&leases(), &m);
    let r = d.reply.as_ref().unwrap();
    assert_eq!(codec::msg_type(&r.message), Some(MessageType::Nak));
    assert!(r.message.flags().broadcast());
    assert_eq!(r.delivery, Delivery::Relay { giaddr: ip(1) });
    assert!(opt(&r.message, OptionCode::RelayAgentInformation).is_some());
    // A relay on another network is not ours.
    let mut m = msg(MessageType::Discover, A);
    m.set_giaddr(Ipv4Addr::new(192, 0, 2, 1));
    assert_eq!(
        decide_now(&leases(), &m).reason,
        Reason::RelayFromOtherNetwork(Ipv4Addr::new(192, 0, 2, 1))
    );
}

#[test]
fn client_identifier_is_echoed() {
    let m = with(
        msg(MessageType::Discover, A),
        DhcpOption::ClientIdentifier(vec![1, 0x52, 0x54, 0, 0, 0, 0xa]),
    );
    let d = decide_now(&leases(), &m);
    assert_eq!(
        codec::client_id(reply(&d)),
        Some(&[1, 0x52, 0x54, 0, 0, 0, 0xa][..])
    );
}

#[test]
fn replies_fit_the_clients_maximum_message_size() {
    // A big relay option plus everything requested, default 576 bytes.
    let mut info = RelayAgentInformation::default();
    info.insert(RelayInfo::AgentCircuitId(vec![b'c'; 200]));
    let mut c = cfg();
    c.pool.domain_search = (0..8)
        .map(|i| format!("zone{i}.example{i}.internal"))
        .collect();
    let big = prl(
        with(
            msg(MessageType::Discover, A),
            DhcpOption::RelayAgentInformation(info),
        ),
        &[1, 3, 6, 15, 26, 42, 119, 121, 67, 28],
    );
    let d = decide(&c, &leases(), &big, NOW, "n1");
    let r = d.reply.as_ref().expect("a reply that fits");
    assert_eq!(r.max_size, 576);
    let len = 28 + codec::encoded_len(&r.message);
    assert!(len <= 576, "{len}");
    // Mandatory options survived; low-priority ones were dropped.
    for c in [53, 54, 51, 58, 59, 82] {
        assert!(wire(&r.message, c).is_some(), "{c}");
    }
    assert!(wire(&r.message, 28).is_none());
    // The frame builds within the limit.
    let addr = crate::frame::Addressing {
        src_mac: A,
        dst_mac: crate::frame::BROADCAST_MAC,
        vlan: None,
        src_ip: Ipv4Addr::UNSPECIFIED,
        dst_ip: Ipv4Addr::BROADCAST,
        src_port: 68,
        dst_port: 67,
    };
    assert!(r.to_frame(c.server_addr(), &addr).unwrap().len() <= 14 + 576);
    // With option 57 = 1500 everything fits.
    let d = decide(
        &c,
        &leases(),
        &with(big, DhcpOption::MaxMessageSize(1500)),
        NOW,
        "n1",
    );
    let r = d.reply.unwrap();
    assert_eq!(r.max_size, 1400, "capped by the pool MTU");
    assert!(wire(&r.message, 28).is_some() && wire(&r.message, 119).is_some());
    // Option 57 below 576 is treated as 576.
    let m = with(
        msg(MessageType::Discover, A),
        DhcpOption::MaxMessageSize(100),
    );
    assert_eq!(decide_now(&leases(), &m).reply.unwrap().max_size, 576);
}

#[test]
fn client_id_match_is_opt_in() {
    let mut v = leases();
    let mut l = lease(ip(14), B, LeaseState::Bound, NOW + 100);
    l.client_id = Some(vec![0xff, 1, 2, 3]);
    v.insert(l);
    let m = with(
        msg(MessageType::Discover, A),
        DhcpOption::ClientIdentifier(vec![0xff, 1, 2, 3]),
    );
    // Default: keyed by MAC; .14 belongs to B.
    assert_eq!(reply(&decide_now(&v, &m)).yiaddr(), ip(10));
    let mut c = cfg();
    c.match_client_id = true;
    // With client-id matching, the lease follows the identifier... but
    // only where the address is not another MAC's active lease.
    let d = decide(&c, &v, &m, NOW, "n1");
    assert_eq!(reply(&d).yiaddr(), ip(10));
    let d = decide(&c, &v, &m, NOW + 200, "n1");
    assert_eq!(reply(&d).yiaddr(), ip(14));
    assert_eq!(d.reason, Reason::Offer(OfferSource::ExistingLease));
}

// --- the multi-writer contract --------------------------------------------

/// A store with per-address versions, committing like etcd would: the
/// transaction fails if any record the decision read changed.
#[derive(Default)]
struct VersionedStore {
    leases: MemoryLeases,
    versions: BTreeMap<Ipv4Addr, u64>,
    rev: u64,
}

impl VersionedStore {
    fn commit(&mut self, snapshot_rev: u64, d: &Decision) -> bool {
        let Some(change) = &d.change else { return true };
        let stale = d
            .depends
            .ips
            .iter()
            .chain(change.touched().iter())
            .any(|ip| self.versions.get(ip).copied().unwrap_or(0) > snapshot_rev);
        if stale {
            return false;
        }
        self.rev += 1;
        for ip in change.touched() {
            self.versions.insert(ip, self.rev);
        }
        self.leases.apply(change);
        true
    }
}

#[test]
fn two_nodes_racing_for_one_address_both_end_up_correct() {
    let mut store = VersionedStore {
        leases: leases(),
        ..Default::default()
    };
    let snap_rev = store.rev;
    let snapshot = store.leases.clone();
    // Node 1 (VM A) and node 2 (VM B) decide on the same snapshot.
    let d1 = decide(&cfg(), &snapshot, &msg(MessageType::Discover, A), NOW, "n1");
    let d2 = decide(&cfg(), &snapshot, &msg(MessageType::Discover, B), NOW, "n2");
    assert_eq!(reply(&d1).yiaddr(), ip(10));
    assert_eq!(reply(&d2).yiaddr(), ip(10));
    assert!(store.commit(snap_rev, &d1));
    // Node 2 loses the race and must not send its reply; it re-decides.
    assert!(!store.commit(snap_rev, &d2));
    let d2 = decide(
        &cfg(),
        &store.leases,
        &msg(MessageType::Discover, B),
        NOW,
        "n2",
    );
    assert_eq!(reply(&d2).yiaddr(), ip(11));
    assert!(store.commit(store.rev, &d2));
    assert_eq!(store.leases.get(ip(10)).unwrap().mac, A);
    assert_eq!(store.leases.get(ip(11)).unwrap().mac, B);
}

#[test]
fn decisions_are_deterministic() {
    let mut v = leases();
    v.insert(lease(ip(12), A, LeaseState::Bound, NOW + 100));
    for m in [
        msg(MessageType::Discover, B),
        renewing(A, ip(12)),
        init_reboot(B, ip(13)),
    ] {
        assert_eq!(decide_now(&v, &m), decide_now(&v, &m));
    }
}
