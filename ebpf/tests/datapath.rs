//! Loading, pinning and table operations (no interfaces needed).

mod common;

use std::{net::Ipv4Addr, path::Path, process::Command};

use common::{NetNs, PinDir};
use furrow_ebpf::*;

fn ep(ifindex: u32, last: u8) -> MgmtEndpoint {
    MgmtEndpoint {
        host_ifindex: ifindex,
        pod_mac: [0x02, 0, 0, 0, 1, last],
        host_mac: [0x02, 0, 0, 0, 2, last],
    }
}

#[test]
fn open_pins_maps_and_reports_status() {
    let pins = PinDir::new();
    let dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    for map in [
        MAP_MGMT_ENDPOINTS,
        MAP_PORT_STATS,
        MAP_L2_PORTS,
        MAP_L2_VLANS,
        MAP_L2_FDB,
        MAP_L2_CLUSTER_NETWORKS,
        MAP_L2_VLAN_STATS,
        MAP_L2_DHCP,
        MAP_L2_PSEC,
        MAP_L2_PSEC_V4,
        MAP_L2_PSEC_V6,
    ] {
        assert!(pins.0.join("maps").join(map).exists(), "{map} not pinned");
    }
    // The programs are pinned too (one each); no link before a port.
    let progs: Vec<String> = std::fs::read_dir(pins.0.join("progs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(progs.len(), PROGRAMS.len(), "{progs:?}");
    for p in PROGRAMS {
        assert!(progs.iter().any(|f| f.starts_with(&format!("{p}-"))), "{p}");
    }
    assert_eq!(std::fs::read_dir(pins.0.join("links")).unwrap().count(), 0);

    let st = dp.status();
    assert_eq!(st.mode, "ebpf-tcx");
    assert_eq!(st.mode, MODE);
    assert_eq!(st.pin_dir, pins.0);
    assert_eq!(
        st.programs,
        vec![
            PROG_MGMT_FROM_POD,
            PROG_MGMT_TO_POD,
            PROG_L2_INGRESS,
            PROG_L2_UPLINK_EGRESS
        ]
    );
    let usage: Vec<_> = st
        .maps
        .iter()
        .map(|m| (m.name.as_str(), m.entries, m.max_entries))
        .collect();
    assert_eq!(
        usage,
        vec![
            (MAP_MGMT_ENDPOINTS, Some(0), MAX_ENDPOINTS),
            (MAP_PORT_STATS, Some(0), MAX_PORTS),
            (MAP_L2_PORTS, Some(0), L2_MAX_PORTS),
            (MAP_L2_VLANS, Some(0), L2_MAX_VLANS),
            (MAP_L2_FDB, Some(0), L2_MAX_FDB),
            (MAP_L2_CLUSTER_NETWORKS, Some(0), L2_MAX_CLUSTER_NETWORKS),
            (MAP_L2_VLAN_STATS, Some(0), L2_MAX_VLANS),
            (MAP_L2_DHCP, Some(0), L2_MAX_VLANS),
            (MAP_L2_PSEC, Some(0), L2_MAX_PORTS),
            (MAP_L2_PSEC_V4, Some(0), L2_PSEC_MAX_ADDRS),
            (MAP_L2_PSEC_V6, Some(0), L2_PSEC_MAX_ADDRS),
        ]
    );
    assert!(dp.program_id(PROG_L2_INGRESS).unwrap() > 0);
    assert!(dp.program_fd(PROG_L2_UPLINK_EGRESS).is_ok());
    assert!(dp.program_id(PROG_MGMT_FROM_POD).unwrap() > 0);
    assert!(matches!(
        dp.program_fd("nope"),
        Err(DatapathError::UnknownProgram(_))
    ));
    assert!(NetNs::new().run(|| dp.pinned_ports()).unwrap().is_empty());
}

#[test]
fn endpoints_upsert_list_remove() {
    let pins = PinDir::new();
    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    let a = Ipv4Addr::new(10, 0, 0, 9);
    let b = Ipv4Addr::new(10, 0, 0, 3);
    dp.upsert_endpoint(a, ep(5, 1)).unwrap();
    dp.upsert_endpoint(b, ep(6, 2)).unwrap();
    dp.upsert_endpoint(a, ep(7, 3)).unwrap(); // replace
    assert_eq!(dp.endpoints().unwrap(), vec![(b, ep(6, 2)), (a, ep(7, 3))]);
    assert_eq!(dp.status().maps[0].entries, Some(2));

    dp.remove_endpoint(a).unwrap();
    dp.remove_endpoint(a).unwrap(); // idempotent
    assert_eq!(dp.endpoints().unwrap(), vec![(b, ep(6, 2))]);

    let err = dp.upsert_endpoint(a, ep(0, 1)).unwrap_err();
    assert!(matches!(err, DatapathError::InvalidEndpoint(_)), "{err}");
}

#[test]
fn endpoints_map_full_is_reported() {
    let pins = PinDir::new();
    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    for i in 0..MAX_ENDPOINTS {
        let ip = Ipv4Addr::from(0x0a00_0000 + i);
        dp.upsert_endpoint(ip, ep(1, 1)).unwrap();
    }
    let err = dp
        .upsert_endpoint(Ipv4Addr::new(10, 200, 0, 1), ep(1, 1))
        .unwrap_err();
    match &err {
        DatapathError::MapFull { map, max_entries } => {
            assert_eq!(*map, MAP_MGMT_ENDPOINTS);
            assert_eq!(*max_entries, MAX_ENDPOINTS);
        }
        other => panic!("expected MapFull, got {other}"),
    }
    assert!(err.to_string().contains("is full"), "{err}");
    // Replacing an existing entry still works when full.
    dp.upsert_endpoint(Ipv4Addr::from(0x0a00_0000), ep(2, 2))
        .unwrap();
}

#[test]
fn reopen_keeps_map_contents() {
    let pins = PinDir::new();
    let ip = Ipv4Addr::new(10, 1, 1, 1);
    {
        let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
        dp.upsert_endpoint(ip, ep(3, 3)).unwrap();
    }
    let dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    assert_eq!(dp.endpoints().unwrap(), vec![(ip, ep(3, 3))]);
}

#[test]
fn instances_do_not_share_maps() {
    let (p1, p2) = (PinDir::new(), PinDir::new());
    let mut d1 = Datapath::open(DatapathConfig::new(&p1.0)).unwrap();
    let d2 = Datapath::open(DatapathConfig::new(&p2.0)).unwrap();
    d1.upsert_endpoint(Ipv4Addr::new(10, 2, 2, 2), ep(4, 4))
        .unwrap();
    assert_eq!(d1.endpoints().unwrap().len(), 1);
    assert!(d2.endpoints().unwrap().is_empty());
}

#[test]
fn destroy_removes_every_pin() {
    let pins = PinDir::new();
    let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    dp.upsert_endpoint(Ipv4Addr::new(10, 3, 3, 3), ep(4, 4))
        .unwrap();
    dp.destroy().unwrap();
    assert!(!pins.0.exists());
    // A fresh open starts empty.
    let dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
    assert!(dp.endpoints().unwrap().is_empty());
}

#[test]
fn incompatible_pinned_map_is_refused() {
    let pins = PinDir::new();
    drop(Datapath::open(DatapathConfig::new(&pins.0)).unwrap());
    let path = pins.0.join("maps").join(MAP_MGMT_ENDPOINTS);
    std::fs::remove_file(&path).unwrap();
    // A map with the right name but another value size, as an older or
    // newer build could have left.
    let out = Command::new("bpftool")
        .args(["map", "create"])
        .arg(&path)
        .args([
            "type",
            "hash",
            "key",
            "4",
            "value",
            "8",
            "entries",
            "16",
            "name",
            "furrow_mgmt_eps",
        ])
        .output()
        .expect("bpftool");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = Datapath::open(DatapathConfig::new(&pins.0)).unwrap_err();
    assert!(
        matches!(&err, DatapathError::IncompatiblePin { path: p, .. } if p == &path),
        "{err}"
    );
}

#[test]
fn pin_dir_must_be_absolute_and_on_bpffs() {
    let err = Datapath::open(DatapathConfig::new("relative/dir")).unwrap_err();
    assert!(matches!(err, DatapathError::InvalidConfig(_)), "{err}");
    let dir = std::env::temp_dir().join(format!("furrow-notbpf-{}", std::process::id()));
    let err = Datapath::open(DatapathConfig::new(&dir)).unwrap_err();
    assert!(
        matches!(&err, DatapathError::NotBpffs { path } if path == Path::new("/tmp") || dir.starts_with(path)),
        "{err}"
    );
    assert!(!dir.exists());
}
