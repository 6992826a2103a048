//! Real DHCP clients that no one here wrote (busybox udhcpc, ISC dhclient)
//! against a test server built from `furrow_dhcp::server`, across a veth
//! pair between two network namespaces. Needs root.

mod common;

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;
use furrow_api::resource::{Ipv4PoolConfig, PoolRange, StaticRoute};
use furrow_dhcp::server::{
    LeaseState, MemoryLeases, OfferSource, Reason, RequestState, ServerConfig,
};
use furrow_dhcp::MacAddr;
use nix::sys::signal::Signal;

const SERVER_MAC: &str = "02:00:00:00:00:67";

fn pool(lease_time: u32) -> Ipv4PoolConfig {
    Ipv4PoolConfig {
        server_ip: "10.100.0.2".parse().unwrap(),
        cidr: "10.100.0.0/24".parse().unwrap(),
        pool: PoolRange {
            start: "10.100.0.10".parse().unwrap(),
            end: "10.100.0.20".parse().unwrap(),
            exclude: vec![],
        },
        router: Some("10.100.0.1".parse().unwrap()),
        dns: vec!["10.100.0.1".parse().unwrap(), "10.100.0.3".parse().unwrap()],
        domain_name: Some("example.internal".into()),
        domain_search: vec![],
        ntp: vec![],
        lease_time: Some(lease_time),
        mtu: Some(1400),
        routes: vec![StaticRoute {
            dst: "192.168.0.0/16".parse().unwrap(),
            gateway: "10.100.0.1".parse().unwrap(),
        }],
        next_server: None,
        boot_file_name: None,
    }
}

fn server(lease_time: u32) -> ServerConfig {
    let mac: MacAddr = SERVER_MAC.parse().unwrap();
    ServerConfig::new(pool(lease_time), mac.0)
}

fn client_mac() -> MacAddr {
    CLIENT_MAC.parse().unwrap()
}

fn write_script(path: &std::path::Path, body: &str) {
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// udhcpc's hook: apply address, MTU and classless routes the way a
/// distribution's script would, then log the environment (last, so a test
/// that sees the event also sees what was applied).
fn udhcpc_script(out: &std::path::Path) -> String {
    format!(
        r#"#!/bin/sh
event="$1"
case "$1" in
  deconfig) ip addr flush dev "$interface" ;;
  bound|renew)
    ip addr replace "$ip/$mask" dev "$interface"
    [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
    set -- $staticroutes
    while [ $# -ge 2 ]; do ip route replace "$1" via "$2" dev "$interface"; shift 2; done
    ;;
esac
{{ echo "event=$event"; env | grep -E '^(ip|mask|subnet|router|dns|mtu|staticroutes|lease|serverid|domain|hostname)='; echo end; }} >> {out}
exit 0
"#,
        out = out.display()
    )
}

#[test]
fn udhcpc_gets_a_pooled_lease_renews_and_releases() {
    require("/usr/sbin/udhcpc", "udhcpc");
    let lab = Lab::new(SERVER_MAC, "10.100.0.2/24");
    let cfg = server(3600);
    let h = Harness::start(&lab.srv, "s0", cfg.clone(), MemoryLeases::new(&cfg.pool));
    let out = lab.dir.join("events");
    let script = lab.dir.join("udhcpc.sh");
    write_script(&script, &udhcpc_script(&out));
    let udhcpc = Proc::spawn(lab.cli.cmd("udhcpc").args([
        "-f",
        "-i",
        "c0",
        "-s",
        script.to_str().unwrap(),
        "-O",
        "mtu",
        "-O",
        "staticroutes",
        "-t",
        "5",
        "-T",
        "2",
        "-x",
        "hostname:vm-udhcpc",
    ]));

    let bound = wait_for("udhcpc bound", Duration::from_secs(20), || {
        events(&out).into_iter().find(|e| e["event"] == "bound")
    });
    assert_eq!(bound["ip"], "10.100.0.10");
    assert_eq!(bound["mask"], "24");
    assert_eq!(bound["router"], "10.100.0.1");
    assert_eq!(
        bound["dns"].split_whitespace().collect::<Vec<_>>(),
        ["10.100.0.1", "10.100.0.3"]
    );
    assert_eq!(bound["mtu"], "1400");
    assert_eq!(
        bound["staticroutes"],
        "192.168.0.0/16 10.100.0.1 0.0.0.0/0 10.100.0.1"
    );
    assert_eq!(bound["serverid"], "10.100.0.2");
    assert_eq!(bound["lease"], "3600");
    assert_eq!(bound["domain"], "example.internal");
    // Applied for real in the client namespace.
    assert!(lab
        .cli
        .ip(&["addr", "show", "c0"])
        .contains("inet 10.100.0.10/24"));
    assert!(lab.cli.ip(&["link", "show", "c0"]).contains("mtu 1400"));
    let routes = lab.cli.ip(&["route"]);
    assert!(routes.contains("192.168.0.0/16 via 10.100.0.1"), "{routes}");
    assert!(routes.contains("default via 10.100.0.1"), "{routes}");
    {
        let store = h.leases.lock().unwrap();
        let l = store
            .get("10.100.0.10".parse().unwrap())
            .expect("lease recorded");
        assert_eq!((l.mac, l.state), (client_mac(), LeaseState::Bound));
        assert_eq!(l.hostname.as_deref(), Some("vm-udhcpc"));
    }

    // SIGUSR1: renew (a unicast REQUEST from the bound address).
    let first_expiry = h
        .leases
        .lock()
        .unwrap()
        .get("10.100.0.10".parse().unwrap())
        .unwrap()
        .expires_at;
    std::thread::sleep(Duration::from_millis(1100));
    udhcpc.signal(Signal::SIGUSR1);
    let renew = wait_for("udhcpc renew", Duration::from_secs(20), || {
        events(&out).into_iter().find(|e| e["event"] == "renew")
    });
    assert_eq!(renew["ip"], "10.100.0.10");
    assert!(
        h.reasons().contains(&Reason::Ack(RequestState::Renewing)),
        "{:?}",
        h.reasons()
    );
    let l = h
        .leases
        .lock()
        .unwrap()
        .get("10.100.0.10".parse().unwrap())
        .unwrap()
        .clone();
    assert!(
        l.expires_at > first_expiry,
        "the renewal extended the lease"
    );

    // SIGUSR2: release.
    udhcpc.signal(Signal::SIGUSR2);
    wait_for("release at the server", Duration::from_secs(10), || {
        h.reasons().contains(&Reason::Released).then_some(())
    });
    assert!(h
        .leases
        .lock()
        .unwrap()
        .leases()
        .all(|l| l.mac != client_mac()));
    drop(udhcpc);
}

#[test]
fn dhclient_gets_its_reservation_renews_by_itself_and_releases() {
    require("/usr/sbin/dhclient", "isc-dhcp-client");
    let lab = Lab::new(SERVER_MAC, "10.100.0.2/24");
    // A short lease so dhclient renews on its own at T1 (5 s).
    let cfg = server(10);
    let mut leases = MemoryLeases::new(&cfg.pool);
    let reserved: Ipv4Addr = "10.100.0.40".parse().unwrap();
    leases.reserve(client_mac(), reserved);
    let h = Harness::start(&lab.srv, "s0", cfg, leases);

    let out = lab.dir.join("events");
    let script = lab.dir.join("dhclient.sh");
    write_script(
        &script,
        &format!(
            r#"#!/bin/sh
{{ echo "event=$reason"; env | grep -E '^new_'; echo end; }} >> {out}
case "$reason" in
  PREINIT) ip link set dev "$interface" up ;;
  BOUND|RENEW|REBIND|REBOOT)
    ip addr replace "$new_ip_address/$new_subnet_mask" dev "$interface"
    [ -n "$new_interface_mtu" ] && ip link set dev "$interface" mtu "$new_interface_mtu"
    ;;
  RELEASE|EXPIRE|STOP) ip addr flush dev "$interface" ;;
esac
exit 0
"#,
            out = out.display()
        ),
    );
    let conf = lab.dir.join("dhclient.conf");
    std::fs::write(
        &conf,
        "option rfc3442-classless-static-routes code 121 = array of unsigned integer 8;\n\
         send host-name \"vm-dhclient\";\n\
         request subnet-mask, broadcast-address, routers, domain-name, domain-name-servers,\n\
         \x20 interface-mtu, rfc3442-classless-static-routes;\n",
    )
    .unwrap();
    let args = |extra: &[&str]| {
        let mut v: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        for (flag, p) in [
            ("-cf", &conf),
            ("-sf", &script),
            ("-lf", &lab.dir.join("leases")),
            ("-pf", &lab.dir.join("pid")),
        ] {
            v.push(flag.into());
            v.push(p.display().to_string());
        }
        v.push("c0".into());
        v
    };
    let dhclient = Proc::spawn(lab.cli.cmd("dhclient").args(args(&["-d", "-1", "-v"])));

    let bound = wait_for("dhclient BOUND", Duration::from_secs(30), || {
        events(&out).into_iter().find(|e| e["event"] == "BOUND")
    });
    assert_eq!(
        bound["new_ip_address"], "10.100.0.40",
        "the reservation, outside the pool range"
    );
    assert_eq!(bound["new_subnet_mask"], "255.255.255.0");
    assert_eq!(bound["new_routers"], "10.100.0.1");
    assert_eq!(bound["new_domain_name_servers"], "10.100.0.1 10.100.0.3");
    assert_eq!(bound["new_interface_mtu"], "1400");
    assert_eq!(
        bound["new_rfc3442_classless_static_routes"],
        "16 192 168 10 100 0 1 0 10 100 0 1"
    );
    assert_eq!(bound["new_dhcp_server_identifier"], "10.100.0.2");
    assert!(lab
        .cli
        .ip(&["addr", "show", "c0"])
        .contains("inet 10.100.0.40/24"));
    assert!(h
        .reasons()
        .contains(&Reason::Offer(OfferSource::Reservation)));

    // T1 = 5 s: dhclient renews by unicast and keeps the address.
    let renew = wait_for("dhclient RENEW", Duration::from_secs(30), || {
        events(&out).into_iter().find(|e| e["event"] == "RENEW")
    });
    assert_eq!(renew["new_ip_address"], "10.100.0.40");
    assert!(
        h.reasons().contains(&Reason::Ack(RequestState::Renewing)),
        "{:?}",
        h.reasons()
    );

    // dhclient -r: releases (and stops the running dhclient via its pid file).
    sh(lab.cli.cmd("dhclient").args(args(&["-r", "-v"])));
    wait_for("release at the server", Duration::from_secs(10), || {
        h.reasons().contains(&Reason::Released).then_some(())
    });
    assert!(h.leases.lock().unwrap().get(reserved).is_none());
    drop(dhclient);
}
