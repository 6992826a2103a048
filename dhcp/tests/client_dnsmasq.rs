//! `furrow_dhcp::client` against dnsmasq, across a veth pair between two
//! network namespaces. Needs root.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::*;
use furrow_dhcp::client::{Client, ClientError, ClientLease, ClientOptions};
use furrow_dhcp::MacAddr;

const SERVER_MAC: &str = "02:00:00:00:77:01";

struct Dnsmasq {
    lab: Lab,
    _proc: Proc,
}

impl Dnsmasq {
    fn start() -> Self {
        require("/usr/sbin/dnsmasq", "dnsmasq-base");
        let lab = Lab::new(SERVER_MAC, "10.77.0.1/24");
        let d = &lab.dir;
        let proc = Proc::spawn(lab.srv.cmd("/usr/sbin/dnsmasq").args([
            "--no-daemon".to_string(),
            "--conf-file=/dev/null".into(),
            format!("--pid-file={}", d.join("pid").display()),
            format!("--dhcp-leasefile={}", d.join("leases").display()),
            "--port=0".into(),
            "--interface=s0".into(),
            "--bind-interfaces".into(),
            "--user=root".into(),
            "--dhcp-range=10.77.0.50,10.77.0.60,255.255.255.0,2m".into(),
            "--dhcp-option=option:router,10.77.0.1".into(),
            "--dhcp-option=option:dns-server,10.77.0.53".into(),
            "--dhcp-option=option:mtu,1450".into(),
            "--dhcp-authoritative".into(),
            "--no-ping".into(),
            "--log-dhcp".into(),
        ]));
        // Serving once its DHCP socket is bound (--no-daemon writes no pid
        // file).
        wait_for("dnsmasq", Duration::from_secs(10), || {
            let out = lab
                .srv
                .cmd("ss")
                .args(["-H", "-uln", "sport = :67"])
                .output()
                .ok()?;
            (!out.stdout.is_empty()).then_some(())
        });
        Dnsmasq { lab, _proc: proc }
    }

    fn client(&self) -> Client {
        Client::with_options(
            self.lab.cli.ifindex("c0"),
            CLIENT_MAC.parse().unwrap(),
            ClientOptions {
                hostname: Some("vip-test".into()),
                first_retransmit: Duration::from_secs(1),
                acquire_timeout: Duration::from_secs(20),
                renew_timeout: Duration::from_secs(10),
                ..Default::default()
            },
        )
    }

    fn leasefile(&self) -> String {
        std::fs::read_to_string(self.lab.dir.join("leases")).unwrap_or_default()
    }
}

#[test]
fn client_acquires_renews_rebinds_and_releases_with_dnsmasq() {
    let dm = Dnsmasq::start();
    let c = dm.client();
    let c2 = c.clone();
    let lease: ClientLease = dm
        .lab
        .cli
        .block_on(move || async move { c2.acquire().await.unwrap() });
    let range = u32::from(Ipv4Addr::new(10, 77, 0, 50))..=u32::from(Ipv4Addr::new(10, 77, 0, 60));
    assert!(range.contains(&u32::from(lease.ip)), "{}", lease.ip);
    assert_eq!(lease.prefix, 24);
    assert_eq!(lease.cidr(), "10.77.0.0/24".parse().unwrap());
    assert_eq!(lease.router, Some(Ipv4Addr::new(10, 77, 0, 1)));
    assert_eq!(lease.dns, vec![Ipv4Addr::new(10, 77, 0, 53)]);
    assert_eq!(lease.mtu, Some(1450));
    assert_eq!(lease.server_id, Ipv4Addr::new(10, 77, 0, 1));
    assert_eq!(lease.server_mac, SERVER_MAC.parse::<MacAddr>().unwrap());
    assert_eq!(lease.lease_time, 120);
    assert_eq!((lease.t1, lease.t2), (60, 105));
    let file = dm.leasefile();
    assert!(
        file.contains(&lease.ip.to_string()) && file.contains("vip-test"),
        "{file}"
    );

    // netd puts the address on the interface (a VIP); the kernel then
    // answers dnsmasq's ARP for the unicast ACKs below.
    dm.lab
        .cli
        .ip(&["addr", "add", &format!("{}/24", lease.ip), "dev", "c0"]);

    let (c2, l2) = (c.clone(), lease.clone());
    let renewed = dm
        .lab
        .cli
        .block_on(move || async move { c2.renew(&l2).await.unwrap() });
    assert_eq!(renewed.ip, lease.ip);
    assert_eq!(renewed.lease_time, 120);
    assert!(renewed.obtained_at >= lease.obtained_at);

    let (c2, l2) = (c.clone(), lease.clone());
    let rebound = dm
        .lab
        .cli
        .block_on(move || async move { c2.rebind(&l2).await.unwrap() });
    assert_eq!(rebound.ip, lease.ip);

    let (c2, l2) = (c.clone(), rebound.clone());
    dm.lab
        .cli
        .block_on(move || async move { c2.release(&l2).await.unwrap() });
    wait_for("dnsmasq to drop the lease", Duration::from_secs(5), || {
        (!dm.leasefile().contains(&lease.ip.to_string())).then_some(())
    });
}

#[test]
fn client_discover_reports_the_network_without_taking_an_address() {
    let dm = Dnsmasq::start();
    let c = dm.client();
    let info = dm
        .lab
        .cli
        .block_on(move || async move { c.discover(Duration::from_secs(10)).await.unwrap() });
    assert_eq!(info.cidr, "10.77.0.0/24".parse().unwrap());
    assert_eq!(info.router, Some(Ipv4Addr::new(10, 77, 0, 1)));
    assert_eq!(info.server_id, Ipv4Addr::new(10, 77, 0, 1));
    assert_eq!(info.dns, vec![Ipv4Addr::new(10, 77, 0, 53)]);
    assert_eq!(info.mtu, Some(1450));
    // Nothing was requested, so nothing is leased.
    std::thread::sleep(Duration::from_millis(300));
    assert!(!dm.leasefile().contains("10.77.0."), "{}", dm.leasefile());
}

#[test]
fn discover_times_out_without_a_server() {
    let lab = Lab::new(SERVER_MAC, "10.79.0.1/24");
    let c = Client::new(lab.cli.ifindex("c0"), CLIENT_MAC.parse().unwrap());
    let started = std::time::Instant::now();
    let err = lab
        .cli
        .block_on(move || async move { c.discover(Duration::from_secs(2)).await.unwrap_err() });
    assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}
