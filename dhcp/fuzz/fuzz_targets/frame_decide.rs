//! Arbitrary bytes -> frame parser -> decide() with an in-memory lease view
//! -> reply frame -> parser again. Nothing may panic, a reply must always
//! build within its size limit, and it must parse back to the same message.
//!
//! The first byte steers: bit 0 wraps the rest in valid Ethernet/IPv4/UDP
//! headers (so random payloads reach the DHCP decoder past the checksums),
//! bit 1 adds an 802.1Q tag, bit 2 marks the UDP checksum as partial, bit 3
//! turns on client-id matching, bits 4-7 shift `now`.

#![no_main]

use std::net::Ipv4Addr;

use furrow_api::resource::{Ipv4PoolConfig, PoolRange, StaticRoute};
use furrow_dhcp::frame::{self, Direction, FrameSpec, ParseOptions, VlanTag};
use furrow_dhcp::server::{decide, Lease, LeaseState, MemoryLeases, ServerConfig};
use furrow_dhcp::MacAddr;
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_700_000_000;

fn config(match_client_id: bool) -> ServerConfig {
    let ip = |d| Ipv4Addr::new(10, 0, 0, d);
    let pool = Ipv4PoolConfig {
        server_ip: ip(2),
        cidr: "10.0.0.0/24".parse().unwrap(),
        pool: PoolRange {
            start: ip(10),
            end: ip(14),
            exclude: vec![ip(12)],
        },
        router: Some(ip(1)),
        dns: vec![ip(1), ip(3)],
        domain_name: Some("example.internal".into()),
        domain_search: vec!["example.internal".into(), "a.example.internal".into()],
        ntp: vec![ip(1)],
        lease_time: Some(3600),
        mtu: Some(1400),
        routes: vec![StaticRoute {
            dst: "192.168.0.0/16".parse().unwrap(),
            gateway: ip(1),
        }],
        next_server: Some(ip(5)),
        boot_file_name: Some("ipxe.efi".into()),
    };
    let mut c = ServerConfig::new(pool, [2, 0, 0, 0, 0, 0x67]);
    c.match_client_id = match_client_id;
    c
}

fn leases(cfg: &ServerConfig) -> MemoryLeases {
    let mut v = MemoryLeases::new(&cfg.pool);
    let mac = |b| MacAddr([0x52, 0x54, 0, 0, 0, b]);
    let ip = |d| Ipv4Addr::new(10, 0, 0, d);
    for (d, b, state, exp) in [
        (10, 1, LeaseState::Bound, NOW + 100),
        (11, 2, LeaseState::Offered, NOW + 10),
        (13, 3, LeaseState::Declined, NOW + 50),
        (14, 4, LeaseState::Bound, NOW - 10),
    ] {
        v.insert(Lease {
            ip: ip(d),
            mac: mac(b),
            client_id: Some(vec![1, 0x52, 0x54, 0, 0, 0, b]),
            hostname: None,
            state,
            expires_at: exp,
            node: "n".into(),
        });
    }
    v.reserve(mac(5), ip(40));
    v.reserve(mac(6), ip(10));
    v
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let frame_bytes;
    let input = if ctl & 1 == 1 {
        let spec = FrameSpec {
            src_mac: MacAddr([0x52, 0x54, 0, 0, 0, 1]),
            dst_mac: frame::BROADCAST_MAC,
            vlan: (ctl & 2 != 0).then(|| VlanTag::new(100)),
            src_ip: Ipv4Addr::UNSPECIFIED,
            dst_ip: Ipv4Addr::BROADCAST,
            src_port: 68,
            dst_port: 67,
        };
        match frame::build_raw(&spec, rest, 65535) {
            Ok(f) => {
                frame_bytes = f;
                &frame_bytes[..]
            }
            Err(_) => return,
        }
    } else {
        rest
    };
    let partial = ctl & 4 != 0;
    // The client direction must not panic either.
    let _ = frame::parse(
        input,
        ParseOptions {
            direction: Direction::ToClient,
            udp_checksum_partial: partial,
        },
    );
    let Ok(pkt) = frame::parse(
        input,
        ParseOptions {
            direction: Direction::ToServer,
            udp_checksum_partial: partial,
        },
    ) else {
        return;
    };
    let cfg = config(ctl & 8 != 0);
    let mut view = leases(&cfg);
    let now = NOW + u64::from(ctl >> 4) * 37;
    let d = decide(&cfg, &view, &pkt.message, now, "fuzz");
    if let Some(reply) = &d.reply {
        let f = reply
            .to_frame(cfg.server_addr(), &pkt.addr)
            .unwrap_or_else(|e| panic!("reply does not build: {e} ({})", d.reason));
        assert!(f.len() <= 18 + reply.max_size, "reply over its size limit");
        if !matches!(reply.delivery, frame::Delivery::Relay { .. }) {
            let back = frame::parse(&f, ParseOptions::to_client())
                .unwrap_or_else(|e| panic!("our own reply does not parse: {e}"));
            assert_eq!(back.message.xid(), pkt.message.xid());
            assert_eq!(
                back.message.opts(),
                reply.message.opts(),
                "options changed on the wire"
            );
        }
    }
    if let Some(change) = &d.change {
        view.apply(change);
        // Deciding again on the new state must not panic either.
        let _ = decide(&cfg, &view, &pkt.message, now + 1, "fuzz");
    }
});
