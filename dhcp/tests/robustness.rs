//! The fuzz target's property on stable, for every CI run: mutated DHCP
//! frames go through parse -> decide -> reply frame -> parse without a
//! panic, and every reply builds within its size limit and parses back to
//! the same options. (dhcp/fuzz runs the same with coverage guidance.)

use std::net::Ipv4Addr;

use furrow_api::resource::{Ipv4PoolConfig, PoolRange, StaticRoute};
use furrow_dhcp::dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
use furrow_dhcp::frame::{self, Delivery, FrameSpec, ParseOptions, VlanTag};
use furrow_dhcp::server::{decide, Lease, LeaseState, MemoryLeases, ServerConfig};
use furrow_dhcp::{codec, MacAddr};

const NOW: u64 = 1_700_000_000;

/// xorshift64*: deterministic, so a failure reproduces from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn cfg() -> ServerConfig {
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
        dns: vec![ip(1)],
        domain_name: Some("example.internal".into()),
        domain_search: vec!["example.internal".into(), "b.example.internal".into()],
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
    ServerConfig::new(pool, [2, 0, 0, 0, 0, 0x67])
}

fn view(cfg: &ServerConfig) -> MemoryLeases {
    let mut v = MemoryLeases::new(&cfg.pool);
    for (d, b, state, exp) in [
        (10, 1, LeaseState::Bound, NOW + 100),
        (11, 2, LeaseState::Offered, NOW + 10),
        (13, 3, LeaseState::Declined, NOW + 50),
    ] {
        v.insert(Lease {
            ip: Ipv4Addr::new(10, 0, 0, d),
            mac: MacAddr([0x52, 0x54, 0, 0, 0, b]),
            client_id: None,
            hostname: None,
            state,
            expires_at: exp,
            node: "n".into(),
        });
    }
    v.reserve(
        MacAddr([0x52, 0x54, 0, 0, 0, 5]),
        Ipv4Addr::new(10, 0, 0, 40),
    );
    v
}

fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (t, b) in [
        (MessageType::Discover, 7u8),
        (MessageType::Request, 1),
        (MessageType::Release, 1),
        (MessageType::Decline, 1),
        (MessageType::Inform, 9),
        (MessageType::Discover, 5),
    ] {
        let mut m = Message::default();
        m.set_chaddr(&[0x52, 0x54, 0, 0, 0, b]).set_xid(7);
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(t));
        o.insert(DhcpOption::ParameterRequestList(
            [1u8, 3, 6, 15, 26, 28, 42, 119, 121, 67]
                .iter()
                .map(|c| OptionCode::from(*c))
                .collect(),
        ));
        o.insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 10)));
        o.insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 2)));
        o.insert(DhcpOption::ClientIdentifier(vec![
            1, 0x52, 0x54, 0, 0, 0, b,
        ]));
        out.push(codec::encode(&m, 0).unwrap());
    }
    out
}

fn mutate(rng: &mut Rng, p: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        match rng.below(6) {
            0 if !p.is_empty() => {
                let i = rng.below(p.len());
                p[i] ^= 1 << rng.below(8);
            }
            1 if !p.is_empty() => {
                let i = rng.below(p.len());
                p[i] = rng.next() as u8;
            }
            2 => {
                let n = rng.below(p.len() + 1);
                p.truncate(n);
            }
            3 => {
                // Splice a random option TLV into the option area.
                let at = 240.min(p.len()) + rng.below(p.len().saturating_sub(240) + 1);
                let code = rng.next() as u8;
                let len = rng.below(12);
                let mut tlv = vec![code, len as u8];
                tlv.extend((0..rng.below(14)).map(|_| rng.next() as u8));
                let at = at.min(p.len());
                p.splice(at..at, tlv);
            }
            4 => p.extend((0..rng.below(40)).map(|_| rng.next() as u8)),
            _ => {
                // Rewrite a header field byte (op, htype, hlen, flags, addrs).
                if p.len() > 30 {
                    let i = rng.below(30);
                    p[i] = rng.next() as u8;
                }
            }
        }
    }
}

#[test]
fn mutated_frames_never_panic_and_replies_round_trip() {
    let cfg = cfg();
    let base = view(&cfg);
    let seeds = seeds();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut parsed, mut replied) = (0, 0);
    for i in 0..30_000 {
        let mut payload = seeds[i % seeds.len()].clone();
        mutate(&mut rng, &mut payload);
        let spec = FrameSpec {
            src_mac: MacAddr([0x52, 0x54, 0, 0, 0, 1]),
            dst_mac: frame::BROADCAST_MAC,
            vlan: (i % 3 == 0).then(|| VlanTag::new(100)),
            src_ip: Ipv4Addr::UNSPECIFIED,
            dst_ip: Ipv4Addr::BROADCAST,
            src_port: 68,
            dst_port: 67,
        };
        let mut f = frame::build_raw(&spec, &payload, 65535).unwrap();
        if i % 7 == 0 {
            // Damage the headers too.
            mutate(&mut rng, &mut f);
        }
        let _ = frame::parse(&f, ParseOptions::to_client());
        let Ok(pkt) = frame::parse(&f, ParseOptions::to_server()) else {
            continue;
        };
        parsed += 1;
        let now = NOW + (i as u64 % 200);
        let mut v = base.clone();
        let d = decide(&cfg, &v, &pkt.message, now, "t");
        if let Some(r) = &d.reply {
            replied += 1;
            let out = r
                .to_frame(cfg.server_addr(), &pkt.addr)
                .unwrap_or_else(|e| panic!("case {i}: {e}"));
            assert!(out.len() <= 18 + r.max_size, "case {i}");
            if !matches!(r.delivery, Delivery::Relay { .. }) {
                let back = frame::parse(&out, ParseOptions::to_client())
                    .unwrap_or_else(|e| panic!("case {i}: {e}"));
                assert_eq!(back.message.opts(), r.message.opts(), "case {i}");
            }
        }
        if let Some(c) = &d.change {
            v.apply(c);
            let _ = decide(&cfg, &v, &pkt.message, now + 1, "t");
        }
    }
    // The mutations must not be so wild that nothing gets through.
    assert!(
        parsed > 5_000 && replied > 1_000,
        "parsed {parsed}, replied {replied}"
    );
}
