//! BPF_PROG_TEST_RUN of port security (bpf/lib/portsec.h) on crafted
//! frames: each drop reason with its counter and trace verdict, what a
//! port may send before an address is known, allowed address pairs (a VIP,
//! a prefix, another MAC), IPv6 sources, neighbour discovery, the RA guard
//! (extension headers and fragments too), trunks (the inner frame is
//! judged), trace mode, and the API that sets it.

mod common;

use std::net::IpAddr;

use common::{l2::*, *};
use furrow_ebpf::*;

const CN: u32 = 6;
const MAC_A: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x0a];
const MAC_B: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x0b];
const MAC_VIP: [u8; 6] = [0x00, 0x00, 0x5e, 0, 0x01, 0x33];
const UPLINK_MAC: [u8; 6] = [0x02, 0x55, 0, 0, 0, 0x01];
const IP_A: [u8; 4] = [10, 60, 0, 10];
const IP_B: [u8; 4] = [10, 60, 0, 11];
const VIP: [u8; 4] = [10, 60, 0, 100];

/// vm1 (MAC_A, VLAN 100) and vm2 (MAC_B, VLAN 100), a trunk vmt (100,
/// 200) with MAC_A too, a trusted port vmr (a router VM, VLAN 100), and
/// the uplink.
struct Sw {
    node: NetNs,
    _peers: NetNs,
    dp: Datapath,
    _pins: PinDir,
    vm1: u32,
    vm2: u32,
    vmt: u32,
    vmr: u32,
    up: u32,
}

fn port(mode: L2Mode) -> L2Port {
    L2Port {
        cluster_network: CN,
        mode,
        mtu: 1500,
    }
}

fn v4(a: [u8; 4]) -> IpAddr {
    IpAddr::from(a)
}

impl Sw {
    fn new() -> Self {
        let (node, peers, pins, mut dp, idx) =
            common::veth_switch(&["vm1", "vm2", "vmt", "vmr", "upl"]);
        let [vm1, vm2, vmt, vmr, up] = idx[..] else {
            unreachable!()
        };
        let trunk = VlanSet::from_ranges([100..=100, 200..=200]).unwrap();
        node.run(|| {
            let a100 = port(L2Mode::Access { vid: 100 });
            dp.l2_attach_port("vm1", vm1, &a100).unwrap();
            dp.l2_attach_port("vm2", vm2, &a100).unwrap();
            dp.l2_attach_port("vmt", vmt, &port(L2Mode::Trunk { allowed: trunk }))
                .unwrap();
            dp.l2_attach_port_with_flags(
                "vmr",
                vmr,
                &a100,
                L2PortFlags {
                    trusted: true,
                    local_only: false,
                },
            )
            .unwrap();
            dp.l2_attach_port(
                "upl",
                up,
                &port(L2Mode::Uplink {
                    own_mac: UPLINK_MAC,
                }),
            )
            .unwrap();
        });
        dp.l2_set_vlan(CN, 100, &[vm1, vm2, vmt, vmr, up], false)
            .unwrap();
        dp.l2_set_vlan(CN, 200, &[vmt, up], false).unwrap();
        Sw {
            node,
            _peers: peers,
            dp,
            _pins: pins,
            vm1,
            vm2,
            vmt,
            vmr,
            up,
        }
    }

    fn run(&self, ifindex: u32, frame: &[u8]) -> (TestRunOutput, L2Trace) {
        let fd = self.dp.program_fd(PROG_L2_INGRESS).unwrap();
        let ctx = SkbContext {
            ifindex,
            ..Default::default()
        };
        let out = self
            .node
            .run(|| test_run(fd, frame, Some(&ctx), 1))
            .unwrap();
        let trace = L2Trace::from_cb(out.cb).unwrap_or_else(|| panic!("no trace in {:x?}", out.cb));
        (out, trace)
    }

    /// The verdict of `frame` from `ifindex`, asserting a drop verdict
    /// goes with TC_ACT_SHOT.
    fn verdict(&self, ifindex: u32, frame: &[u8]) -> L2Verdict {
        let (out, t) = self.run(ifindex, frame);
        if t.verdict.is_port_security_drop() {
            assert_eq!(out.retval, TC_ACT_SHOT, "{:?}", t.verdict);
            assert!(t.port_security);
        }
        t.verdict
    }

    fn stats(&self, ifindex: u32) -> PortStats {
        self.dp.port_stats(ifindex).unwrap().expect("stats entry")
    }

    fn learned(&self, vid: u16, mac: [u8; 6]) -> Option<u32> {
        self.dp
            .fdb_entries()
            .unwrap()
            .into_iter()
            .find(|e| e.cluster_network == CN && e.vid == vid && e.mac == mac)
            .map(|e| e.ifindex)
    }

    /// vm1: MAC_A with IP_A known (IPv4 enforced).
    fn secure_vm1(&mut self) {
        self.dp
            .l2_set_port_security(
                self.vm1,
                &PortSecurity {
                    mac: MAC_A,
                    enforce_ipv4: true,
                    addresses: vec![PsecAddr::host(v4(IP_A), MAC_A)],
                    ..Default::default()
                },
            )
            .unwrap();
    }
}

fn udp(src_mac: [u8; 6], src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    ipv4_udp_frame(BCAST, src_mac, src, dst, 64, &[], b"hello")
}

/// An IPv6 frame: `src` -> `dst`, next header `nh`, then `payload`.
fn ipv6(src_mac: [u8; 6], src: &str, dst: &str, nh: u8, payload: &[u8]) -> Vec<u8> {
    let s: std::net::Ipv6Addr = src.parse().unwrap();
    let d: std::net::Ipv6Addr = dst.parse().unwrap();
    let mut f = eth_header([0x33, 0x33, 0, 0, 0, 1], src_mac, ETH_P_IPV6);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    f.extend_from_slice(&[nh, 255]);
    f.extend_from_slice(&s.octets());
    f.extend_from_slice(&d.octets());
    f.extend_from_slice(payload);
    f
}

/// An ICMPv6 message of `typ` with `body` (checksum left 0: the switch
/// does not verify it).
fn icmp6(typ: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![typ, 0, 0, 0];
    p.extend_from_slice(body);
    p
}

/// A neighbour advertisement for `target`, with a target link-layer
/// address option if `tlla` is given.
fn na(target: &str, tlla: Option<[u8; 6]>) -> Vec<u8> {
    let t: std::net::Ipv6Addr = target.parse().unwrap();
    let mut b = vec![0x60, 0, 0, 0]; // solicited, override
    b.extend_from_slice(&t.octets());
    if let Some(m) = tlla {
        b.extend_from_slice(&[2, 1]);
        b.extend_from_slice(&m);
    }
    icmp6(136, &b)
}

/// A router advertisement (with a source link-layer address option).
fn ra(mac: [u8; 6]) -> Vec<u8> {
    let mut b = vec![64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
    b.extend_from_slice(&[1, 1]);
    b.extend_from_slice(&mac);
    icmp6(134, &b)
}

#[test]
fn a_port_without_port_security_is_not_checked() {
    let sw = Sw::new();
    // Another VM's MAC, another VM's address: switched as before.
    let (_, t) = sw.run(sw.vm1, &udp(MAC_B, IP_B, [10, 60, 0, 255]));
    assert_eq!(t.verdict, L2Verdict::Flood);
    assert!(!t.port_security);
    assert_eq!(sw.dp.l2_port_security(sw.vm1).unwrap(), None);
}

#[test]
fn forged_source_mac_is_dropped_before_learning() {
    let mut sw = Sw::new();
    sw.secure_vm1();
    let (out, t) = sw.run(sw.vm1, &raw_frame(BCAST, MAC_B, 40));
    assert_eq!(
        (out.retval, t.verdict),
        (TC_ACT_SHOT, L2Verdict::DropSpoofMac)
    );
    assert_eq!(t.vid, Some(100));
    assert!(t.port_security);
    assert_eq!(sw.learned(100, MAC_B), None, "a forged MAC was learnt");
    let s = sw.stats(sw.vm1);
    assert_eq!((s.tx_packets, s.drop_spoof_mac), (1, 1));
    // Its own MAC passes, and is learnt.
    let (_, t) = sw.run(sw.vm1, &raw_frame(BCAST, MAC_A, 40));
    assert_eq!(t.verdict, L2Verdict::Flood);
    assert!(t.port_security);
    assert_eq!(sw.learned(100, MAC_A), Some(sw.vm1));
}

#[test]
fn forged_ipv4_source_is_dropped() {
    let mut sw = Sw::new();
    sw.secure_vm1();
    assert_eq!(
        sw.verdict(sw.vm1, &udp(MAC_A, IP_B, [10, 60, 0, 255])),
        L2Verdict::DropSpoofIpv4
    );
    assert_eq!(
        sw.verdict(sw.vm1, &udp(MAC_A, IP_A, [10, 60, 0, 255])),
        L2Verdict::Flood
    );
    // 0.0.0.0 only for DHCP clients.
    assert_eq!(
        sw.verdict(sw.vm1, &udp(MAC_A, [0; 4], [255; 4])),
        L2Verdict::DropSpoofIpv4
    );
    assert_eq!(
        sw.verdict(sw.vm1, &Udp4::discover(MAC_A).frame()),
        L2Verdict::Flood
    );
    assert_eq!(sw.stats(sw.vm1).drop_spoof_ipv4, 2);
}

#[test]
fn gratuitous_arp_for_a_neighbours_address_is_dropped() {
    let mut sw = Sw::new();
    sw.secure_vm1();
    // GARP claiming B's address.
    assert_eq!(
        sw.verdict(sw.vm1, &garp(MAC_A, IP_B)),
        L2Verdict::DropSpoofArp
    );
    // A reply claiming B's address.
    assert_eq!(
        sw.verdict(sw.vm1, &arp(MAC_B, MAC_A, 2, IP_B, MAC_B, IP_B)),
        L2Verdict::DropSpoofArp
    );
    // The sender hardware address of another VM, from our own MAC.
    let mut f = garp(MAC_A, IP_A);
    f[22..28].copy_from_slice(&MAC_B);
    assert_eq!(sw.verdict(sw.vm1, &f), L2Verdict::DropSpoofArp);
    // Not Ethernet/IPv4 ARP.
    let mut f = garp(MAC_A, IP_A);
    f[16..18].copy_from_slice(&0x86ddu16.to_be_bytes());
    assert_eq!(sw.verdict(sw.vm1, &f), L2Verdict::DropSpoofArp);
    assert_eq!(sw.stats(sw.vm1).drop_spoof_arp, 4);
    // Its own address, and a probe (sender 0.0.0.0), pass.
    assert_eq!(sw.verdict(sw.vm1, &garp(MAC_A, IP_A)), L2Verdict::Flood);
    assert_eq!(
        sw.verdict(sw.vm1, &arp(BCAST, MAC_A, 1, [0; 4], [0; 6], IP_B)),
        L2Verdict::Flood
    );
}

#[test]
fn before_an_address_is_known_only_dhcp_and_probes_pass() {
    let mut sw = Sw::new();
    sw.dp
        .l2_set_port_security(
            sw.vm1,
            &PortSecurity {
                mac: MAC_A,
                enforce_ipv4: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        sw.verdict(sw.vm1, &Udp4::discover(MAC_A).frame()),
        L2Verdict::Flood
    );
    assert_eq!(
        sw.verdict(sw.vm1, &arp(BCAST, MAC_A, 1, [0; 4], [0; 6], IP_A)),
        L2Verdict::Flood
    );
    assert_eq!(
        sw.verdict(sw.vm1, &udp(MAC_A, IP_A, [10, 60, 0, 255])),
        L2Verdict::DropSpoofIpv4
    );
    assert_eq!(
        sw.verdict(sw.vm1, &garp(MAC_A, IP_A)),
        L2Verdict::DropSpoofArp
    );
    // The lease is bound: its address is allowed from then on.
    sw.secure_vm1();
    assert_eq!(
        sw.verdict(sw.vm1, &udp(MAC_A, IP_A, [10, 60, 0, 255])),
        L2Verdict::Flood
    );
    // MAC-only (nothing known, no DHCP pool): any address, own MAC only.
    sw.dp
        .l2_set_port_security(
            sw.vm1,
            &PortSecurity {
                mac: MAC_A,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        sw.verdict(sw.vm1, &udp(MAC_A, IP_B, [10, 60, 0, 255])),
        L2Verdict::Flood
    );
    assert_eq!(sw.verdict(sw.vm1, &garp(MAC_A, IP_B)), L2Verdict::Flood);
    assert_eq!(
        sw.verdict(sw.vm1, &raw_frame(BCAST, MAC_B, 40)),
        L2Verdict::DropSpoofMac
    );
    // The addresses of the earlier policy went with it.
    let ps = sw.dp.l2_port_security(sw.vm1).unwrap().unwrap();
    assert!(ps.addresses.is_empty() && !ps.enforce_ipv4);
}

#[test]
fn allowed_address_pairs_let_a_vm_hold_a_vip() {
    let mut sw = Sw::new();
    sw.dp
        .l2_set_port_security(
            sw.vm1,
            &PortSecurity {
                mac: MAC_A,
                extra_macs: vec![MAC_VIP],
                enforce_ipv4: true,
                addresses: vec![
                    PsecAddr::host(v4(IP_A), MAC_A),
                    // keepalived's VIP, from the VM's own MAC
                    PsecAddr::host(v4(VIP), MAC_A),
                    // a routed prefix, from a VRRP virtual MAC
                    PsecAddr {
                        addr: "10.61.0.0".parse().unwrap(),
                        prefix_len: 24,
                        mac: MAC_VIP,
                    },
                ],
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(sw.verdict(sw.vm1, &garp(MAC_A, VIP)), L2Verdict::Flood);
    assert_eq!(
        sw.verdict(sw.vm1, &udp(MAC_A, VIP, [10, 60, 0, 255])),
        L2Verdict::Flood
    );
    assert_eq!(
        sw.verdict(sw.vm1, &udp(MAC_VIP, [10, 61, 0, 77], [10, 60, 0, 255])),
        L2Verdict::Flood
    );
    assert_eq!(
        sw.verdict(sw.vm1, &garp(MAC_VIP, [10, 61, 0, 1])),
        L2Verdict::Flood
    );
    // Each address from its own MAC only.
    assert_eq!(
        sw.verdict(sw.vm1, &udp(MAC_VIP, VIP, [10, 60, 0, 255])),
        L2Verdict::DropSpoofIpv4
    );
    assert_eq!(
        sw.verdict(sw.vm1, &udp(MAC_A, [10, 61, 0, 77], [10, 60, 0, 255])),
        L2Verdict::DropSpoofIpv4
    );
    // Outside the prefix, and the neighbour's address: still dropped.
    assert_eq!(
        sw.verdict(sw.vm1, &udp(MAC_VIP, [10, 61, 1, 1], [10, 60, 0, 255])),
        L2Verdict::DropSpoofIpv4
    );
    assert_eq!(
        sw.verdict(sw.vm1, &garp(MAC_A, IP_B)),
        L2Verdict::DropSpoofArp
    );
    // The pair's MAC is learnt on the port.
    assert_eq!(sw.learned(100, MAC_VIP), Some(sw.vm1));
    // Read back as set (host bits cleared, sorted).
    let ps = sw.dp.l2_port_security(sw.vm1).unwrap().unwrap();
    assert_eq!(ps.extra_macs, vec![MAC_VIP]);
    assert_eq!(ps.addresses.len(), 3);
}

#[test]
fn ipv6_sources_and_neighbour_discovery() {
    let mut sw = Sw::new();
    let ll = PsecAddr::eui64_link_local(MAC_A);
    sw.dp
        .l2_set_port_security(
            sw.vm1,
            &PortSecurity {
                mac: MAC_A,
                enforce_ipv6: true,
                addresses: vec![ll, PsecAddr::host("fd00::a".parse().unwrap(), MAC_A)],
                ..Default::default()
            },
        )
        .unwrap();
    let lla = ll.addr.to_string();
    let ns = |src: &str| {
        let t: std::net::Ipv6Addr = "fd00::b".parse().unwrap();
        let mut b = vec![0; 4];
        b.extend_from_slice(&t.octets());
        ipv6(MAC_A, src, "ff02::1:ff00:b", 58, &icmp6(135, &b))
    };
    // Own addresses pass; another is dropped.
    assert_eq!(
        sw.verdict(sw.vm1, &ipv6(MAC_A, "fd00::a", "fd00::b", 17, &[0; 8])),
        L2Verdict::Flood
    );
    assert_eq!(sw.verdict(sw.vm1, &ns(&lla)), L2Verdict::Flood);
    assert_eq!(
        sw.verdict(sw.vm1, &ipv6(MAC_A, "fd00::b", "fd00::c", 17, &[0; 8])),
        L2Verdict::DropSpoofIpv6
    );
    assert_eq!(
        sw.verdict(sw.vm1, &ipv6(MAC_A, "fe80::1", "fd00::c", 17, &[0; 8])),
        L2Verdict::DropSpoofIpv6
    );
    // :: for duplicate address detection only.
    assert_eq!(sw.verdict(sw.vm1, &ns("::")), L2Verdict::Flood);
    assert_eq!(
        sw.verdict(sw.vm1, &ipv6(MAC_A, "::", "fd00::c", 17, &[0; 8])),
        L2Verdict::DropSpoofIpv6
    );
    assert_eq!(sw.stats(sw.vm1).drop_spoof_ipv6, 3);
    // Neighbour advertisements: for its own address, from its own MAC.
    let all = "ff02::1";
    assert_eq!(
        sw.verdict(
            sw.vm1,
            &ipv6(MAC_A, "fd00::a", all, 58, &na("fd00::a", Some(MAC_A)))
        ),
        L2Verdict::Flood
    );
    assert_eq!(
        sw.verdict(
            sw.vm1,
            &ipv6(MAC_A, "fd00::a", all, 58, &na("fd00::a", None))
        ),
        L2Verdict::Flood
    );
    // Claiming the neighbour's address ...
    assert_eq!(
        sw.verdict(
            sw.vm1,
            &ipv6(MAC_A, "fd00::a", all, 58, &na("fd00::b", Some(MAC_A)))
        ),
        L2Verdict::DropSpoofNd
    );
    // ... or pointing its own address at the neighbour's MAC.
    assert_eq!(
        sw.verdict(
            sw.vm1,
            &ipv6(MAC_A, "fd00::a", all, 58, &na("fd00::a", Some(MAC_B)))
        ),
        L2Verdict::DropSpoofNd
    );
    assert_eq!(sw.stats(sw.vm1).drop_spoof_nd, 2);
}

#[test]
fn without_known_ipv6_addresses_nd_options_are_still_checked() {
    let mut sw = Sw::new();
    sw.secure_vm1();
    let all = "ff02::1";
    // IPv6 is not enforced: any source from its own MAC.
    assert_eq!(
        sw.verdict(
            sw.vm1,
            &ipv6(MAC_A, "2001:db8::77", "2001:db8::1", 17, &[0; 8])
        ),
        L2Verdict::Flood
    );
    assert_eq!(
        sw.verdict(
            sw.vm1,
            &ipv6(MAC_A, "fe80::1", all, 58, &na("fe80::1", Some(MAC_A)))
        ),
        L2Verdict::Flood
    );
    // But never a link-layer address that is not its own.
    assert_eq!(
        sw.verdict(
            sw.vm1,
            &ipv6(MAC_A, "fe80::1", all, 58, &na("fe80::1", Some(MAC_B)))
        ),
        L2Verdict::DropSpoofNd
    );
    // A zero-length option is invalid.
    let mut bad = na("fe80::1", Some(MAC_A));
    bad[25] = 0;
    assert_eq!(
        sw.verdict(sw.vm1, &ipv6(MAC_A, "fe80::1", all, 58, &bad)),
        L2Verdict::DropSpoofNd
    );
}

#[test]
fn router_advertisements_only_from_trusted_ports() {
    let mut sw = Sw::new();
    sw.secure_vm1();
    sw.dp
        .l2_set_port_security(
            sw.vmr,
            &PortSecurity {
                mac: MAC_B,
                ..Default::default()
            },
        )
        .unwrap();
    let all = "ff02::1";
    let rogue = ipv6(MAC_A, "fe80::1", all, 58, &ra(MAC_A));
    assert_eq!(sw.verdict(sw.vm1, &rogue), L2Verdict::DropRaGuard);
    // Behind a hop-by-hop options header and a destination options one.
    let mut ext = vec![60, 0, 0, 0, 0, 0, 0, 0, 58, 0, 0, 0, 0, 0, 0, 0];
    ext.extend(ra(MAC_A));
    assert_eq!(
        sw.verdict(sw.vm1, &ipv6(MAC_A, "fe80::1", all, 0, &ext)),
        L2Verdict::DropRaGuard
    );
    // In a first fragment.
    let mut frag = vec![58, 0, 0, 1, 0, 0, 0, 9];
    frag.extend(ra(MAC_A));
    assert_eq!(
        sw.verdict(sw.vm1, &ipv6(MAC_A, "fe80::1", all, 44, &frag)),
        L2Verdict::DropRaGuard
    );
    // A header chain longer than the switch follows.
    let mut long = Vec::new();
    for _ in 0..5 {
        long.extend([60, 0, 0, 0, 0, 0, 0, 0]);
    }
    long.extend(ra(MAC_A));
    assert_eq!(
        sw.verdict(sw.vm1, &ipv6(MAC_A, "fe80::1", all, 60, &long)),
        L2Verdict::DropRaGuard
    );
    // A later fragment carries no header: it passes.
    let later = vec![17, 0, 0, 0x18, 0, 0, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8];
    assert_eq!(
        sw.verdict(sw.vm1, &ipv6(MAC_A, "fe80::1", all, 44, &later)),
        L2Verdict::Flood
    );
    assert_eq!(sw.stats(sw.vm1).drop_ra_guard, 4);
    // The trusted router VM may advertise.
    let router = ipv6(MAC_B, "fe80::2", all, 58, &ra(MAC_B));
    assert_eq!(sw.verdict(sw.vmr, &router), L2Verdict::Flood);
}

#[test]
fn a_trunk_is_judged_on_the_inner_frame() {
    let mut sw = Sw::new();
    sw.dp
        .l2_set_port_security(
            sw.vmt,
            &PortSecurity {
                mac: MAC_A,
                enforce_ipv4: true,
                addresses: vec![PsecAddr::host(v4(IP_A), MAC_A)],
                ..Default::default()
            },
        )
        .unwrap();
    let tag = |f: &[u8], vid: u16| with_tag(f, TPID_8021Q, vid);
    assert_eq!(
        sw.verdict(sw.vmt, &tag(&udp(MAC_A, IP_A, [10, 60, 0, 255]), 200)),
        L2Verdict::Flood
    );
    assert_eq!(
        sw.verdict(sw.vmt, &tag(&udp(MAC_A, IP_B, [10, 60, 0, 255]), 200)),
        L2Verdict::DropSpoofIpv4
    );
    assert_eq!(
        sw.verdict(sw.vmt, &tag(&garp(MAC_A, IP_B), 100)),
        L2Verdict::DropSpoofArp
    );
    // A truncated IPv4 header is no way around it (BPF_PROG_TEST_RUN
    // refuses such a frame untagged; the program pops the tag and reads
    // the same bytes).
    let f = udp(MAC_A, IP_A, [10, 60, 0, 255]);
    for len in [14, 20, 28] {
        assert_eq!(
            sw.verdict(sw.vmt, &tag(&f[..len], 200)),
            L2Verdict::DropSpoofIpv4,
            "cut at {len}"
        );
    }
    assert_eq!(
        sw.verdict(sw.vmt, &tag(&raw_frame(BCAST, MAC_B, 40), 100)),
        L2Verdict::DropSpoofMac
    );
}

#[test]
fn the_uplink_and_dhcp_guard_come_first() {
    let mut sw = Sw::new();
    sw.secure_vm1();
    // The uplink is never checked (nor can it be given port security).
    let (_, t) = sw.run(
        sw.up,
        &with_tag(&udp(MAC_B, IP_A, [10, 60, 0, 255]), TPID_8021Q, 100),
    );
    assert!(!t.port_security);
    assert_ne!(t.verdict, L2Verdict::DropSpoofIpv4);
    let e = sw
        .dp
        .l2_set_port_security(
            sw.up,
            &PortSecurity {
                mac: MAC_B,
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("uplink"), "{e}");
    // A rogue DHCP server reply is the DHCP guard's, whatever its source.
    let mut offer = Udp4::offer(MAC_A, IP_B, MAC_B);
    offer.dst_mac = BCAST;
    assert_eq!(sw.verdict(sw.vm1, &offer.frame()), L2Verdict::DropDhcpGuard);
}

#[test]
fn trace_mode_reports_without_counting_and_detach_clears() {
    let mut sw = Sw::new();
    sw.secure_vm1();
    let frame = L2TraceFrame {
        src_mac: MAC_A,
        dst_mac: BCAST,
        tag: None,
        src_ip: Some(IP_B.into()),
        dst_ip: Some(IP_A.into()),
    };
    let name = |i: u32| format!("if{i}");
    let r = sw
        .node
        .run(|| sw.dp.l2_trace(sw.vm1, &frame, &name))
        .unwrap();
    assert_eq!(r.verdict, "drop");
    assert!(r.reason.contains("ARP"), "{}", r.reason);
    let step = r.steps.iter().find(|s| s.stage == "security").unwrap();
    assert!(
        step.entries.iter().any(|e| e.contains("10.60.0.10/32")),
        "{step:?}"
    );
    assert_eq!(sw.stats(sw.vm1).drop_spoof_arp, 0, "trace mode counted");
    // Detaching the port takes its port security along.
    sw.node.run(|| sw.dp.l2_detach_port("vm1", sw.vm1)).unwrap();
    assert!(sw.dp.l2_port_securities().unwrap().is_empty());
    let _ = sw.vm2;
}
