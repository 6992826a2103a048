//! Our client against our server (the harness around `decide`): the NAK
//! path, relay-free reservations and release, end to end over AF_PACKET.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::*;
use furrow_api::resource::{Ipv4PoolConfig, PoolRange};
use furrow_dhcp::client::{Client, ClientError, ClientOptions};
use furrow_dhcp::server::{Lease, LeaseState, MemoryLeases, Reason, ServerConfig};
use furrow_dhcp::MacAddr;

const SERVER_MAC: &str = "02:00:00:00:00:68";

fn cfg() -> ServerConfig {
    let pool = Ipv4PoolConfig {
        server_ip: "10.90.0.2".parse().unwrap(),
        cidr: "10.90.0.0/24".parse().unwrap(),
        pool: PoolRange {
            start: "10.90.0.100".parse().unwrap(),
            end: "10.90.0.101".parse().unwrap(),
            exclude: vec![],
        },
        router: Some("10.90.0.1".parse().unwrap()),
        dns: vec![],
        domain_name: None,
        domain_search: vec![],
        ntp: vec![],
        lease_time: Some(600),
        mtu: None,
        routes: vec![],
        next_server: None,
        boot_file_name: None,
    };
    ServerConfig::new(pool, SERVER_MAC.parse::<MacAddr>().unwrap().0)
}

#[test]
fn our_client_and_server_agree_and_a_stolen_address_is_naked() {
    let lab = Lab::new(SERVER_MAC, "10.90.0.2/24");
    let cfg = cfg();
    let h = Harness::start(&lab.srv, "s0", cfg.clone(), MemoryLeases::new(&cfg.pool));
    let client = Client::with_options(
        lab.cli.ifindex("c0"),
        CLIENT_MAC.parse().unwrap(),
        ClientOptions {
            hostname: Some("vip".into()),
            first_retransmit: Duration::from_secs(1),
            acquire_timeout: Duration::from_secs(15),
            renew_timeout: Duration::from_secs(5),
            ..Default::default()
        },
    );
    let c = client.clone();
    let lease = lab
        .cli
        .block_on(move || async move { c.acquire().await.unwrap() });
    assert_eq!(lease.ip, Ipv4Addr::new(10, 90, 0, 100));
    assert_eq!(lease.cidr(), "10.90.0.0/24".parse().unwrap());
    assert_eq!(lease.router, Some(Ipv4Addr::new(10, 90, 0, 1)));
    assert_eq!((lease.lease_time, lease.t1, lease.t2), (600, 300, 525));
    assert_eq!(lease.server_id, Ipv4Addr::new(10, 90, 0, 2));

    // Renew (unicast to the anycast server MAC/IP).
    let (c, l) = (client.clone(), lease.clone());
    let renewed = lab
        .cli
        .block_on(move || async move { c.renew(&l).await.unwrap() });
    assert_eq!(renewed.ip, lease.ip);

    // Meanwhile the store gave the address to someone else (say, a lost
    // race on another node): rebinding gets a NAK, surfaced as Err(Nak).
    {
        let mut store = h.leases.lock().unwrap();
        store.insert(Lease {
            ip: lease.ip,
            mac: MacAddr([2, 9, 9, 9, 9, 9]),
            client_id: None,
            hostname: None,
            state: LeaseState::Bound,
            expires_at: now() + 600,
            node: "other".into(),
        });
    }
    let (c, l) = (client.clone(), lease.clone());
    let err = lab
        .cli
        .block_on(move || async move { c.rebind(&l).await.unwrap_err() });
    match err {
        ClientError::Nak { server, message } => {
            assert_eq!(server, Some(Ipv4Addr::new(10, 90, 0, 2)));
            let message = message.unwrap();
            assert!(message.contains("not available"), "{message}");
            assert!(!message.contains("02:09"), "no other VM's MAC on the wire");
        }
        other => panic!("{other}"),
    }

    // A fresh acquire gets the other pool address; release frees it.
    let c = client.clone();
    let second = lab
        .cli
        .block_on(move || async move { c.acquire().await.unwrap() });
    assert_eq!(second.ip, Ipv4Addr::new(10, 90, 0, 101));
    let c = client.clone();
    lab.cli
        .block_on(move || async move { c.release(&second).await.unwrap() });
    wait_for("release", Duration::from_secs(5), || {
        h.reasons().contains(&Reason::Released).then_some(())
    });
    assert!(h
        .leases
        .lock()
        .unwrap()
        .get(Ipv4Addr::new(10, 90, 0, 101))
        .is_none());

    // Pool exhausted (the other address is taken): acquire times out, and
    // the server said why.
    h.leases.lock().unwrap().insert(Lease {
        ip: Ipv4Addr::new(10, 90, 0, 101),
        mac: MacAddr([2, 9, 9, 9, 9, 8]),
        client_id: None,
        hostname: None,
        state: LeaseState::Bound,
        expires_at: now() + 600,
        node: "other".into(),
    });
    let c = Client::with_options(
        lab.cli.ifindex("c0"),
        CLIENT_MAC.parse().unwrap(),
        ClientOptions {
            first_retransmit: Duration::from_secs(1),
            acquire_timeout: Duration::from_secs(2),
            ..Default::default()
        },
    );
    let err = lab
        .cli
        .block_on(move || async move { c.acquire().await.unwrap_err() });
    assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
    assert!(h.reasons().contains(&Reason::PoolExhausted));
}
