//! BPF_PROG_TEST_RUN of the switch's DHCP rules and local-only ports on
//! crafted frames: steering of client frames to a VLAN's responder, the
//! guard against server replies from untrusted VM ports, local-only
//! ports kept off the uplink (both ways), IPv4 options, fragments, short
//! frames, and the API that configures them. As in l2_test_run.rs,
//! redirects are reported, not performed (flood clones do leave through
//! the veths); the trace record in skb->cb says where a frame went.

mod common;

use common::{l2::*, *};
use furrow_ebpf::*;

const CN: u32 = 4;
const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const MAC_REMOTE: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
const UPLINK_MAC: [u8; 6] = [0x02, 0x55, 0, 0, 0, 0x01];
/// The anycast server MAC and IP every node's responder uses.
const SERVER_MAC: [u8; 6] = [0x02, 0xd4, 0xc9, 0, 0, 0x01];
const SERVER_IP: [u8; 4] = [10, 50, 0, 2];

/// One node's switch: access ports vm1, vm2 (VLAN 100) and vm3 (200), a
/// trunk vmt (100, 200), an untagged port vmu, the responders `resp`
/// (VLAN 100) and `resp0` (VLAN 0), both [`L2PortFlags::RESPONDER`], and
/// the uplink. VLAN 100 and VLAN 0 have their responder set, VLAN 200
/// none; VLAN 0 delivers to the node's stack. The server MAC is static on
/// both responders, MAC_A on vm1.
struct Sw {
    node: NetNs,
    _peers: NetNs,
    dp: Datapath,
    _pins: PinDir,
    vm1: u32,
    vm2: u32,
    vm3: u32,
    vmt: u32,
    vmu: u32,
    resp: u32,
    resp0: u32,
    up: u32,
}

fn port(mode: L2Mode) -> L2Port {
    L2Port {
        cluster_network: CN,
        mode,
        mtu: 1500,
    }
}

impl Sw {
    fn new() -> Self {
        let (node, peers, pins, mut dp, idx) =
            common::veth_switch(&["vm1", "vm2", "vm3", "vmt", "vmu", "resp", "resp0", "upl"]);
        let [vm1, vm2, vm3, vmt, vmu, resp, resp0, up] = idx[..] else {
            unreachable!()
        };
        let trunk = VlanSet::from_ranges([100..=100, 200..=200]).unwrap();
        node.run(|| {
            let a100 = port(L2Mode::Access { vid: 100 });
            dp.l2_attach_port("vm1", vm1, &a100).unwrap();
            dp.l2_attach_port("vm2", vm2, &a100).unwrap();
            dp.l2_attach_port("vm3", vm3, &port(L2Mode::Access { vid: 200 }))
                .unwrap();
            dp.l2_attach_port("vmt", vmt, &port(L2Mode::Trunk { allowed: trunk }))
                .unwrap();
            dp.l2_attach_port("vmu", vmu, &port(L2Mode::Untagged))
                .unwrap();
            dp.l2_attach_port_with_flags("resp", resp, &a100, L2PortFlags::RESPONDER)
                .unwrap();
            dp.l2_attach_port_with_flags(
                "resp0",
                resp0,
                &port(L2Mode::Untagged),
                L2PortFlags::RESPONDER,
            )
            .unwrap();
            let uplink = port(L2Mode::Uplink {
                own_mac: UPLINK_MAC,
            });
            dp.l2_attach_port("upl", up, &uplink).unwrap();
        });
        dp.fdb_add_static(CN, 100, SERVER_MAC, resp).unwrap();
        dp.fdb_add_static(CN, 0, SERVER_MAC, resp0).unwrap();
        dp.fdb_add_static(CN, 100, MAC_A, vm1).unwrap();
        dp.l2_set_vlan(CN, 100, &[vm1, vm2, vmt, resp, up], false)
            .unwrap();
        dp.l2_set_vlan(CN, 200, &[vm3, vmt, up], false).unwrap();
        dp.l2_set_vlan(CN, 0, &[vmu, resp0, up], true).unwrap();
        dp.l2_set_dhcp_responder(CN, 100, Some(resp)).unwrap();
        dp.l2_set_dhcp_responder(CN, 0, Some(resp0)).unwrap();
        Sw {
            node,
            _peers: peers,
            dp,
            _pins: pins,
            vm1,
            vm2,
            vm3,
            vmt,
            vmu,
            resp,
            resp0,
            up,
        }
    }

    fn run_prog(&self, prog: &str, ifindex: u32, frame: &[u8]) -> (TestRunOutput, L2Trace) {
        let fd = self.dp.program_fd(prog).unwrap();
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

    /// furrow_l2_ingress on `frame` arriving at `ifindex`.
    fn run(&self, ifindex: u32, frame: &[u8]) -> (TestRunOutput, L2Trace) {
        self.run_prog(PROG_L2_INGRESS, ifindex, frame)
    }

    fn stats(&self, ifindex: u32) -> PortStats {
        self.dp.port_stats(ifindex).unwrap().expect("stats entry")
    }

    fn vstats(&self, vid: u16) -> VlanStats {
        self.dp.vlan_stats_of(CN, vid).unwrap().expect("vlan stats")
    }

    fn fdb(&self, vid: u16, mac: [u8; 6]) -> Option<FdbEntry> {
        self.dp
            .fdb_entries()
            .unwrap()
            .into_iter()
            .find(|e| e.cluster_network == CN && e.vid == vid && e.mac == mac)
    }

    /// rx_packets of every port, to see who a run delivered to.
    fn rx(&self) -> Vec<(u32, u64)> {
        [
            self.vm1, self.vm2, self.vm3, self.vmt, self.vmu, self.resp, self.resp0, self.up,
        ]
        .iter()
        .map(|&p| (p, self.stats(p).rx_packets))
        .collect()
    }

    /// The ports whose rx_packets grew since `before`.
    fn reached(&self, before: &[(u32, u64)]) -> Vec<u32> {
        self.rx()
            .iter()
            .zip(before)
            .filter(|((_, now), (_, then))| now > then)
            .map(|((p, _), _)| *p)
            .collect()
    }
}

fn sorted(mut v: Vec<u32>) -> Vec<u32> {
    v.sort();
    v
}

#[test]
fn client_frames_from_vms_go_to_the_responder_only() {
    let mut sw = Sw::new();
    // MAC_REMOTE lives behind the uplink.
    sw.run(
        sw.up,
        &with_tag(&raw_frame(BCAST, MAC_REMOTE, 20), TPID_8021Q, 100),
    );
    let v0 = sw.vstats(100);

    // A broadcast DISCOVER from an access VM port.
    let before = sw.rx();
    let (out, t) = sw.run(sw.vm1, &Udp4::discover(MAC_A).frame());
    assert_eq!(out.retval, TC_ACT_REDIRECT);
    assert_eq!(t.verdict, L2Verdict::DhcpSteered);
    assert_eq!(
        (t.vid, t.out_ifindex, t.egress_tci),
        (Some(100), Some(sw.resp), None)
    );
    assert_eq!(t.dhcp, Some(DhcpFrame::Client));
    assert_eq!(t.flood_copies, 0);
    assert_eq!(sw.reached(&before), vec![sw.resp], "only the responder");
    let v = sw.vstats(100);
    assert_eq!(v.dhcp_steered - v0.dhcp_steered, 1);
    assert_eq!(v.flood_packets, v0.flood_packets, "not flooded");
    assert_eq!(v.rx_packets - v0.rx_packets, 1);

    // Unicast REQUESTs (renewals): to the server MAC, and to a MAC behind
    // the uplink (a server elsewhere): both to the local responder.
    for dst_mac in [SERVER_MAC, MAC_REMOTE] {
        let mut req = Udp4::discover(MAC_B);
        req.dst_mac = dst_mac;
        req.src = [10, 50, 0, 150];
        req.dst = SERVER_IP;
        req.payload = Udp4::bootp(1, MAC_B, 3);
        let before = sw.rx();
        let (_, t) = sw.run(sw.vm2, &req.frame());
        assert_eq!(
            (t.verdict, t.out_ifindex),
            (L2Verdict::DhcpSteered, Some(sw.resp)),
            "to {dst_mac:02x?}"
        );
        assert_eq!(sw.reached(&before), vec![sw.resp]);
    }

    // From a trunk, tagged: steered, and leaves untagged (access port).
    let tagged = with_tag(&Udp4::discover(MAC_B).frame(), TPID_8021Q, 0x2064);
    let (out, t) = sw.run(sw.vmt, &tagged);
    assert_eq!(
        (t.verdict, t.out_ifindex, t.egress_tci),
        (L2Verdict::DhcpSteered, Some(sw.resp), None)
    );
    assert_eq!(out.data_out, Udp4::discover(MAC_B).frame(), "tag popped");
    // VLAN 200 has no responder: flooded as usual, uplink included.
    let before = sw.rx();
    let (_, t) = sw.run(
        sw.vmt,
        &with_tag(&Udp4::discover(MAC_B).frame(), TPID_8021Q, 200),
    );
    assert_eq!((t.verdict, t.flood_copies), (L2Verdict::Flood, 2));
    assert_eq!(t.dhcp, Some(DhcpFrame::Client));
    assert_eq!(sort_reached(&sw, &before), sorted(vec![sw.vm3, sw.up]));
    let (_, t) = sw.run(sw.vm3, &Udp4::discover(MAC_B).frame());
    assert_eq!((t.verdict, t.flood_copies), (L2Verdict::Flood, 2));
    // VLAN 0 has its own responder.
    let (_, t) = sw.run(sw.vmu, &Udp4::discover(MAC_B).frame());
    assert_eq!(
        (t.verdict, t.vid, t.out_ifindex),
        (L2Verdict::DhcpSteered, Some(0), Some(sw.resp0))
    );

    // Other UDP from the VM is switched as usual.
    let mut dns = Udp4::discover(MAC_A);
    dns.dport = 53;
    let (_, t) = sw.run(sw.vm1, &dns.frame());
    assert_eq!((t.verdict, t.dhcp), (L2Verdict::Flood, None));

    // Without a responder: flooded to every member, the responder port
    // and the uplink included.
    sw.dp.l2_set_dhcp_responder(CN, 100, None).unwrap();
    sw.dp.l2_set_dhcp_responder(CN, 100, None).unwrap();
    assert_eq!(sw.dp.l2_dhcp_responder(CN, 100).unwrap(), None);
    let before = sw.rx();
    let (out, t) = sw.run(sw.vm1, &Udp4::discover(MAC_A).frame());
    assert_eq!(
        (out.retval, t.verdict, t.flood_copies),
        (TC_ACT_REDIRECT, L2Verdict::Flood, 4)
    );
    assert_eq!(
        sort_reached(&sw, &before),
        sorted(vec![sw.vm2, sw.vmt, sw.resp, sw.up])
    );
    assert_eq!(sw.vstats(100).dhcp_steered - v0.dhcp_steered, 4);
}

fn sort_reached(sw: &Sw, before: &[(u32, u64)]) -> Vec<u32> {
    sorted(sw.reached(before))
}

#[test]
fn client_frames_from_the_wire_are_switched_but_never_reach_a_responder() {
    let sw = Sw::new();
    // Another node's VM broadcasting a DISCOVER (its node steers it; a
    // node without a responder floods it): our VMs, not our responder.
    let before = sw.rx();
    let frame = with_tag(&Udp4::discover(MAC_REMOTE).frame(), TPID_8021Q, 100);
    let (_, t) = sw.run(sw.up, &frame);
    assert_eq!(t.verdict, L2Verdict::Flood);
    assert_eq!((t.flood_copies, t.flood_local_only_skips), (3, 1));
    assert_eq!(t.dhcp, Some(DhcpFrame::Client));
    assert_eq!(
        sort_reached(&sw, &before),
        sorted(vec![sw.vm1, sw.vm2, sw.vmt])
    );
    assert_eq!(sw.vstats(100).dhcp_steered, 0);
    // Untagged on VLAN 0: also passed to the node's stack, not resp0.
    let (out, t) = sw.run(sw.up, &Udp4::discover(MAC_REMOTE).frame());
    assert_eq!(
        (
            out.retval,
            t.verdict,
            t.flood_copies,
            t.flood_local_only_skips
        ),
        (TC_ACT_OK, L2Verdict::FloodPass, 1, 1)
    );
    // Unicast to the server MAC from the wire: dropped (see the
    // local-only tests).
    let mut req = Udp4::discover(MAC_REMOTE);
    req.dst_mac = SERVER_MAC;
    let (_, t) = sw.run(sw.up, &with_tag(&req.frame(), TPID_8021Q, 100));
    assert_eq!(t.verdict, L2Verdict::DropLocalOnly);
    assert_eq!(sw.stats(sw.resp).rx_packets, 0);
}

#[test]
fn server_replies_only_from_trusted_ports_and_the_wire() {
    let mut sw = Sw::new();
    let rogue_mac = [0x02, 0x66, 0, 0, 0, 0x01];
    let offer = Udp4::offer(rogue_mac, [10, 50, 0, 3], MAC_A);

    // From untrusted VM ports: dropped, counted, not learned.
    let before = sw.rx();
    let (out, t) = sw.run(sw.vm2, &offer.frame());
    assert_eq!(
        (out.retval, t.verdict, t.vid),
        (TC_ACT_SHOT, L2Verdict::DropDhcpGuard, Some(100))
    );
    assert_eq!(t.dhcp, Some(DhcpFrame::Server));
    assert!(!t.from_trusted);
    let mut bcast = offer.clone();
    bcast.dst_mac = BCAST;
    bcast.dst = [255; 4];
    let (_, t) = sw.run(sw.vm2, &bcast.frame());
    assert_eq!(t.verdict, L2Verdict::DropDhcpGuard);
    // Tagged from a trunk, on either VLAN (VLAN 200 has no responder:
    // the guard does not depend on one).
    for vid in [100, 200] {
        let (_, t) = sw.run(sw.vmt, &with_tag(&bcast.frame(), TPID_8021Q, vid));
        assert_eq!(
            (t.verdict, t.vid),
            (L2Verdict::DropDhcpGuard, Some(vid)),
            "trunk, VLAN {vid}"
        );
    }
    // A relay agent's frame (67 -> 67) is a server frame too.
    let mut relay = offer.clone();
    relay.dport = DHCP_SERVER_PORT;
    let (_, t) = sw.run(sw.vm3, &relay.frame());
    assert_eq!(t.verdict, L2Verdict::DropDhcpGuard);
    assert_eq!(sw.reached(&before), Vec::<u32>::new(), "nobody got any");
    assert_eq!(sw.stats(sw.vm2).drop_dhcp_guard, 2);
    assert_eq!(sw.stats(sw.vmt).drop_dhcp_guard, 2);
    assert_eq!(sw.stats(sw.vm3).drop_dhcp_guard, 1);
    assert_eq!(sw.vstats(100).drop_dhcp_guard, 3);
    assert_eq!(sw.vstats(200).drop_dhcp_guard, 2);
    assert_eq!(sw.stats(sw.vm2).drops()[6], ("dhcp_guard", 2));
    assert!(sw.fdb(100, rogue_mac).is_none(), "a rogue teaches nothing");

    // From the responder (trusted): unicast to the VM, broadcast to the
    // local VMs (not the wire: it is local-only too).
    let real = Udp4::offer(SERVER_MAC, SERVER_IP, MAC_A);
    let (out, t) = sw.run(sw.resp, &real.frame());
    assert_eq!(
        (out.retval, t.verdict, t.out_ifindex),
        (TC_ACT_REDIRECT, L2Verdict::Unicast, Some(sw.vm1))
    );
    assert!(t.from_trusted && t.from_local_only);
    assert_eq!(t.dhcp, Some(DhcpFrame::Server));
    let mut real_b = real.clone();
    real_b.dst_mac = BCAST;
    let before = sw.rx();
    let (_, t) = sw.run(sw.resp, &real_b.frame());
    assert_eq!(
        (t.verdict, t.flood_copies, t.flood_local_only_skips),
        (L2Verdict::Flood, 3, 1)
    );
    assert_eq!(
        sort_reached(&sw, &before),
        sorted(vec![sw.vm1, sw.vm2, sw.vmt])
    );

    // From the wire: replies pass (a DHCP server on the physical network).
    let (_, t) = sw.run(sw.up, &with_tag(&offer.frame(), TPID_8021Q, 100));
    assert_eq!(
        (t.verdict, t.out_ifindex),
        (L2Verdict::Unicast, Some(sw.vm1))
    );
    let (_, t) = sw.run(sw.up, &with_tag(&bcast.frame(), TPID_8021Q, 200));
    assert_eq!(t.verdict, L2Verdict::Flood);

    // A VM port made trusted (not local-only): its replies are switched,
    // the uplink included.
    sw.dp
        .l2_set_port_flags(
            sw.vm2,
            L2PortFlags {
                trusted: true,
                local_only: false,
            },
        )
        .unwrap();
    let before = sw.rx();
    let (_, t) = sw.run(sw.vm2, &bcast.frame());
    assert_eq!((t.verdict, t.flood_copies), (L2Verdict::Flood, 4));
    assert!(t.from_trusted && !t.from_local_only);
    assert!(sort_reached(&sw, &before).contains(&sw.up));
    sw.dp.l2_set_port_flags(sw.vm2, L2PortFlags::NONE).unwrap();
    let (_, t) = sw.run(sw.vm2, &bcast.frame());
    assert_eq!(t.verdict, L2Verdict::DropDhcpGuard);
}

#[test]
fn a_local_only_port_never_reaches_the_uplink() {
    let mut sw = Sw::new();
    sw.run(
        sw.up,
        &with_tag(&raw_frame(BCAST, MAC_REMOTE, 20), TPID_8021Q, 100),
    );
    let up_rx = sw.stats(sw.up).rx_packets;

    // Broadcast (the responder's ARP request): local copies only.
    let req = arp(BCAST, SERVER_MAC, 1, SERVER_IP, [0; 6], [10, 50, 0, 150]);
    let before = sw.rx();
    let (out, t) = sw.run(sw.resp, &req);
    assert_eq!(out.retval, TC_ACT_REDIRECT);
    assert_eq!(
        (t.verdict, t.flood_copies, t.flood_local_only_skips),
        (L2Verdict::Flood, 3, 1)
    );
    assert!(t.from_local_only);
    assert_eq!(
        sort_reached(&sw, &before),
        sorted(vec![sw.vm1, sw.vm2, sw.vmt])
    );
    // Unknown unicast: the same.
    let (_, t) = sw.run(sw.resp, &raw_frame(MAC_B, SERVER_MAC, 40));
    assert_eq!(
        (t.verdict, t.flood_copies, t.flood_local_only_skips),
        (L2Verdict::Flood, 3, 1)
    );
    // Known unicast to a local VM: delivered.
    let (_, t) = sw.run(sw.resp, &raw_frame(MAC_A, SERVER_MAC, 40));
    assert_eq!(
        (t.verdict, t.out_ifindex),
        (L2Verdict::Unicast, Some(sw.vm1))
    );
    // Unicast to a MAC behind the uplink: dropped and counted.
    let (out, t) = sw.run(sw.resp, &raw_frame(MAC_REMOTE, SERVER_MAC, 40));
    assert_eq!(
        (out.retval, t.verdict, t.out_ifindex),
        (TC_ACT_SHOT, L2Verdict::DropLocalOnly, Some(sw.up))
    );
    assert_eq!(sw.stats(sw.resp).drop_local_only, 1);
    assert_eq!(sw.vstats(100).drop_local_only, 1);
    assert_eq!(
        sw.stats(sw.up).rx_packets,
        up_rx,
        "nothing reached the wire"
    );

    // VLAN 0: the node's stack is local (to_host), the wire is not.
    let (_, t) = sw.run(
        sw.resp0,
        &arp(BCAST, SERVER_MAC, 1, SERVER_IP, [0; 6], SERVER_IP),
    );
    assert_eq!(
        (t.verdict, t.flood_copies, t.flood_local_only_skips),
        (L2Verdict::Flood, 1, 1)
    );
    assert_eq!(sw.vstats(0).to_host_packets, 1, "a copy for the node");
    let (_, t) = sw.run(sw.resp0, &raw_frame(UPLINK_MAC, SERVER_MAC, 40));
    assert_eq!(t.verdict, L2Verdict::ToHost);
    assert_eq!(sw.stats(sw.up).rx_packets, up_rx);

    // Alone with the uplink on a VLAN: nobody to flood to.
    let (resp, up) = (sw.resp, sw.up);
    sw.dp.l2_set_vlan(CN, 100, &[resp, up], false).unwrap();
    let (out, t) = sw.run(resp, &req);
    assert_eq!(
        (
            out.retval,
            t.verdict,
            t.flood_copies,
            t.flood_local_only_skips
        ),
        (TC_ACT_SHOT, L2Verdict::Flood, 0, 1)
    );
    assert_eq!(sw.stats(sw.up).rx_packets, up_rx);

    // Without the flag the same port reaches the uplink (positive
    // control); it must not be the responder to lose it.
    sw.dp.l2_set_dhcp_responder(CN, 100, None).unwrap();
    sw.dp.l2_set_port_flags(resp, L2PortFlags::NONE).unwrap();
    let (_, t) = sw.run(resp, &req);
    assert_eq!((t.verdict, t.flood_copies), (L2Verdict::Flood, 1));
    assert_eq!(sw.stats(sw.up).rx_packets, up_rx + 1);
}

#[test]
fn the_uplink_never_reaches_a_local_only_port() {
    let mut sw = Sw::new();
    let tag = |f: &[u8]| with_tag(f, TPID_8021Q, 100);

    // Another node's responder leaking: to our server MAC, and from it.
    let (out, t) = sw.run(sw.up, &tag(&raw_frame(SERVER_MAC, MAC_REMOTE, 40)));
    assert_eq!(
        (out.retval, t.verdict, t.out_ifindex),
        (TC_ACT_SHOT, L2Verdict::DropLocalOnly, Some(sw.resp))
    );
    let offer = Udp4::offer(SERVER_MAC, SERVER_IP, MAC_A);
    let (out, t) = sw.run(sw.up, &tag(&offer.frame()));
    assert_eq!(
        (out.retval, t.verdict, t.out_ifindex),
        (TC_ACT_SHOT, L2Verdict::DropLocalOnly, Some(sw.resp))
    );
    let (_, t) = sw.run(
        sw.up,
        &arp(BCAST, SERVER_MAC, 1, SERVER_IP, [0; 6], SERVER_IP),
    );
    assert_eq!((t.verdict, t.vid), (L2Verdict::DropLocalOnly, Some(0)));
    assert_eq!(sw.stats(sw.up).drop_local_only, 3);
    assert_eq!(sw.vstats(100).drop_local_only, 2);
    assert_eq!(sw.vstats(0).drop_local_only, 1);
    assert_eq!(
        sw.stats(sw.vm1).rx_packets,
        0,
        "the VM got no foreign offer"
    );
    assert_eq!(sw.stats(sw.resp).rx_packets, 0);
    // The static entries stayed where they were.
    for (vid, p) in [(100, sw.resp), (0, sw.resp0)] {
        let e = sw.fdb(vid, SERVER_MAC).unwrap();
        assert_eq!((e.ifindex, e.is_static), (p, true), "VLAN {vid}");
    }

    // A VM's static MAC seen from the wire as a source is not moved
    // either (no local-only port: the frame is switched).
    let (_, t) = sw.run(sw.up, &tag(&raw_frame(BCAST, MAC_A, 40)));
    assert_eq!(t.verdict, L2Verdict::Flood);
    assert_eq!(sw.fdb(100, MAC_A).unwrap().ifindex, sw.vm1);

    // Floods from the wire skip local-only ports.
    let before = sw.rx();
    let (_, t) = sw.run(sw.up, &tag(&raw_frame(BCAST, MAC_REMOTE, 40)));
    assert_eq!(
        (t.verdict, t.flood_copies, t.flood_local_only_skips),
        (L2Verdict::Flood, 3, 1)
    );
    assert!(!sw.reached(&before).contains(&sw.resp));

    // A responder MAC only learned (no static entry) is not moved
    // either, and frames to it from the wire are dropped.
    sw.dp.fdb_remove(CN, 100, SERVER_MAC).unwrap();
    sw.run(
        sw.resp,
        &arp(BCAST, SERVER_MAC, 1, SERVER_IP, [0; 6], SERVER_IP),
    );
    let e = sw.fdb(100, SERVER_MAC).unwrap();
    assert_eq!((e.ifindex, e.is_static), (sw.resp, false));
    let (_, t) = sw.run(sw.up, &tag(&raw_frame(BCAST, SERVER_MAC, 40)));
    assert_eq!(t.verdict, L2Verdict::DropLocalOnly);
    assert_eq!(sw.fdb(100, SERVER_MAC).unwrap().ifindex, sw.resp);
    let (_, t) = sw.run(sw.up, &tag(&raw_frame(SERVER_MAC, MAC_REMOTE, 40)));
    assert_eq!(t.verdict, L2Verdict::DropLocalOnly);

    // A MAC of an ordinary VM port still follows a migration.
    sw.run(sw.vm2, &raw_frame(BCAST, MAC_B, 40));
    assert_eq!(sw.fdb(100, MAC_B).unwrap().ifindex, sw.vm2);
    sw.run(sw.up, &tag(&raw_frame(BCAST, MAC_B, 40)));
    assert_eq!(sw.fdb(100, MAC_B).unwrap().ifindex, sw.up);
}

#[test]
fn the_node_own_dhcp_client_is_served_by_the_wire() {
    let sw = Sw::new();
    let mut disc = Udp4::discover(UPLINK_MAC);
    disc.payload = Udp4::bootp(1, UPLINK_MAC, 1);
    let before = sw.rx();
    let (out, t) = sw.run_prog(PROG_L2_UPLINK_EGRESS, sw.up, &disc.frame());
    assert_eq!(
        (
            out.retval,
            t.verdict,
            t.flood_copies,
            t.flood_local_only_skips
        ),
        (TC_ACT_OK, L2Verdict::FloodPass, 1, 1)
    );
    assert_eq!(t.dhcp, Some(DhcpFrame::Client));
    assert_eq!(sw.reached(&before), vec![sw.vmu]);
    // Unicast to the anycast MAC: to the wire, not the local responder.
    let mut req = disc.clone();
    req.dst_mac = SERVER_MAC;
    let (out, t) = sw.run_prog(PROG_L2_UPLINK_EGRESS, sw.up, &req.frame());
    assert_eq!((out.retval, t.verdict), (TC_ACT_OK, L2Verdict::FloodPass));
    assert_eq!((t.flood_copies, t.flood_local_only_skips), (0, 1));
    assert_eq!(sw.stats(sw.resp0).rx_packets, 0);
    // Anything else from the node reaches the responder (ARP, ping).
    let (_, t) = sw.run_prog(
        PROG_L2_UPLINK_EGRESS,
        sw.up,
        &raw_frame(SERVER_MAC, UPLINK_MAC, 40),
    );
    assert_eq!(
        (t.verdict, t.out_ifindex),
        (L2Verdict::Unicast, Some(sw.resp0))
    );
}

#[test]
fn ip_options_fragments_and_short_frames() {
    let sw = Sw::new();
    let steered = |f: &[u8], from: u32| {
        let (_, t) = sw.run(from, f);
        t.verdict == L2Verdict::DhcpSteered
    };

    // IPv4 options: IHL 6 to 15.
    for words in 1..=10usize {
        let mut d = Udp4::discover(MAC_A);
        d.options = vec![1; words * 4]; // NOPs
        assert!(steered(&d.frame(), sw.vm1), "IHL {}", 5 + words);
        assert!(
            steered(&with_tag(&d.frame(), TPID_8021Q, 100), sw.vmt),
            "tagged, IHL {}",
            5 + words
        );
        let mut o = Udp4::offer(MAC_B, [10, 50, 0, 3], MAC_A);
        o.options = vec![1; words * 4];
        let (_, t) = sw.run(sw.vm2, &o.frame());
        assert_eq!(t.verdict, L2Verdict::DropDhcpGuard, "IHL {}", 5 + words);
    }
    // With options, the ports are read after them: a client frame whose
    // first option bytes look like a server port is still a client's.
    let mut d = Udp4::discover(MAC_A);
    d.options = vec![0, 67, 0, 67];
    assert!(steered(&d.frame(), sw.vm1));

    // Fragments: the first (MF, offset 0) carries the UDP header and is
    // judged by it; the others carry none and are switched as usual, even
    // if their first bytes look like DHCP ports.
    let mut first = Udp4::discover(MAC_A);
    first.frag_off = IP_MF;
    assert!(steered(&first.frame(), sw.vm1));
    let mut first_reply = Udp4::offer(MAC_B, [10, 50, 0, 3], BCAST);
    first_reply.frag_off = IP_MF;
    let (_, t) = sw.run(sw.vm2, &first_reply.frame());
    assert_eq!(t.verdict, L2Verdict::DropDhcpGuard);
    for frag_off in [IP_MF | 1, 37, 0x1fff, 0x4000 | 5] {
        let mut later = Udp4::discover(MAC_A);
        later.frag_off = frag_off;
        let (_, t) = sw.run(sw.vm1, &later.frame());
        assert_eq!(
            (t.verdict, t.dhcp),
            (L2Verdict::Flood, None),
            "frag_off {frag_off:#x}"
        );
        let mut later = Udp4::offer(MAC_B, [10, 50, 0, 3], BCAST);
        later.frag_off = frag_off;
        let (_, t) = sw.run(sw.vm2, &later.frame());
        assert_eq!(t.verdict, L2Verdict::Flood, "reply, frag_off {frag_off:#x}");
    }
    // DF alone is no fragment.
    let mut df = Udp4::discover(MAC_A);
    df.frag_off = 0x4000;
    assert!(steered(&df.frame(), sw.vm1));

    // Not DHCP: TCP to port 67, IHL < 5, not IPv4, IPv6.
    let mut tcp = Udp4::discover(MAC_A).frame();
    tcp[14 + 9] = 6;
    let mut bad_ihl = Udp4::discover(MAC_A).frame();
    bad_ihl[14] = 0x44;
    let mut v6 = Udp4::discover(MAC_A).frame();
    v6[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
    let mut ver6 = Udp4::discover(MAC_A).frame();
    ver6[14] = 0x65;
    for (what, f) in [
        ("tcp", tcp),
        ("IHL 4", bad_ihl),
        ("ethertype", v6),
        ("version", ver6),
    ] {
        let (_, t) = sw.run(sw.vm1, &f);
        assert_eq!((t.verdict, t.dhcp), (L2Verdict::Flood, None), "{what}");
    }

    // Short frames: cut anywhere, never read past the end; what remains
    // is switched by the usual rules. BPF_PROG_TEST_RUN refuses an
    // untagged IPv4 frame without a whole IP header, so the shortest ones
    // come tagged from the trunk (the program pops the tag and reads the
    // same bytes).
    let full = Udp4::discover(MAC_A).frame();
    let mut opts = Udp4::discover(MAC_A);
    opts.options = vec![1; 40];
    let full_opts = opts.frame();
    for (f, what) in [(&full, "IHL 5"), (&full_opts, "IHL 15")] {
        let ports_end = 14 + (f[14] as usize & 0xf) * 4 + 4;
        for len in 14..=ports_end + 4 {
            let cut = &f[..len];
            let want = if len >= ports_end {
                L2Verdict::DhcpSteered
            } else {
                L2Verdict::Flood
            };
            let (out, t) = sw.run(sw.vmt, &with_tag(cut, TPID_8021Q, 100));
            assert_eq!(t.verdict, want, "{what} cut at {len}, tagged");
            assert_ne!(out.retval, TC_ACT_SHOT, "{what} cut at {len}, tagged");
            if len >= 34 {
                let (out, t) = sw.run(sw.vm1, cut);
                assert_eq!(t.verdict, want, "{what} cut at {len}");
                assert_ne!(out.retval, TC_ACT_SHOT, "{what} cut at {len}");
            }
        }
    }
    // From the uplink too (switched, never steered).
    for len in [14, 20, 34, 37] {
        let (_, t) = sw.run(sw.up, &with_tag(&full[..len], TPID_8021Q, 100));
        assert_eq!(
            (t.verdict, t.dhcp),
            (L2Verdict::Flood, None),
            "cut at {len}"
        );
    }
}

#[test]
fn responder_and_flags_api() {
    let mut sw = Sw::new();
    let (vm1, vm2, vm3, resp, up) = (sw.vm1, sw.vm2, sw.vm3, sw.resp, sw.up);
    assert_eq!(
        sw.dp.l2_dhcp_responders().unwrap(),
        vec![
            L2DhcpResponder {
                cluster_network: CN,
                vid: 0,
                ifindex: sw.resp0
            },
            L2DhcpResponder {
                cluster_network: CN,
                vid: 100,
                ifindex: resp
            },
        ]
    );
    assert_eq!(sw.dp.l2_dhcp_responder(CN, 100).unwrap(), Some(resp));
    assert_eq!(sw.dp.l2_dhcp_responder(CN, 200).unwrap(), None);
    assert_eq!(
        sw.dp.l2_port_flags(resp).unwrap(),
        Some(L2PortFlags::RESPONDER)
    );
    assert_eq!(sw.dp.l2_port_flags(vm1).unwrap(), Some(L2PortFlags::NONE));
    assert_eq!(sw.dp.l2_port_flags(12345).unwrap(), None);
    let usage = sw
        .dp
        .status()
        .maps
        .into_iter()
        .find(|m| m.name == MAP_L2_DHCP)
        .unwrap();
    assert_eq!(usage.entries, Some(2));

    // Refused: a port that is not attached, of another VLAN, of another
    // network, the uplink, without the responder flags; a bad VLAN.
    let invalid = |r: Result<(), DatapathError>, what: &str| match r {
        Err(DatapathError::InvalidL2(m)) => eprintln!("{what}: {m}"),
        other => panic!("{what}: {other:?}"),
    };
    invalid(
        sw.dp.l2_set_dhcp_responder(CN, 100, Some(999_999)),
        "unknown",
    );
    invalid(sw.dp.l2_set_dhcp_responder(CN, 100, Some(vm3)), "VLAN 200");
    invalid(sw.dp.l2_set_dhcp_responder(CN + 1, 100, Some(resp)), "cn");
    invalid(sw.dp.l2_set_dhcp_responder(CN, 100, Some(up)), "uplink");
    invalid(sw.dp.l2_set_dhcp_responder(CN, 100, Some(vm2)), "no flags");
    invalid(sw.dp.l2_set_dhcp_responder(CN, 4095, Some(resp)), "vid");
    invalid(
        sw.dp.l2_set_port_flags(up, L2PortFlags::RESPONDER),
        "uplink",
    );
    invalid(sw.dp.l2_set_port_flags(777_777, L2PortFlags::NONE), "none");
    // A responder keeps its flags while it is one.
    invalid(sw.dp.l2_set_port_flags(resp, L2PortFlags::NONE), "lowering");
    let a100 = port(L2Mode::Access { vid: 100 });
    sw.node.run(|| {
        invalid(
            sw.dp
                .l2_attach_port_with_flags("resp", resp, &a100, L2PortFlags::NONE),
            "re-attach lowering",
        );
        invalid(
            sw.dp.l2_attach_port_with_flags(
                "upl",
                up,
                &port(L2Mode::Uplink {
                    own_mac: UPLINK_MAC,
                }),
                L2PortFlags::RESPONDER,
            ),
            "uplink with flags",
        );
        // A plain re-attach (netd after a restart) keeps the flags.
        sw.dp.l2_attach_port("resp", resp, &a100).unwrap();
    });
    assert_eq!(
        sw.dp.l2_port_flags(resp).unwrap(),
        Some(L2PortFlags::RESPONDER)
    );
    assert_eq!(sw.dp.l2_dhcp_responder(CN, 100).unwrap(), Some(resp));

    // The responder reconfigured off its VLAN: client frames are dropped
    // (not flooded to the wire) until netd sets a responder again.
    sw.node.run(|| {
        sw.dp
            .l2_attach_port("resp", resp, &port(L2Mode::Access { vid: 200 }))
            .unwrap()
    });
    let (out, t) = sw.run(vm1, &Udp4::discover(MAC_A).frame());
    assert_eq!(
        (out.retval, t.verdict, t.out_ifindex),
        (TC_ACT_SHOT, L2Verdict::DropNoResponder, Some(resp))
    );
    assert_eq!(sw.stats(vm1).drop_other, 1);
    assert_eq!(sw.vstats(100).drop_other, 1);
    sw.node
        .run(|| sw.dp.l2_attach_port("resp", resp, &a100).unwrap());
    let (_, t) = sw.run(vm1, &Udp4::discover(MAC_A).frame());
    assert_eq!(t.verdict, L2Verdict::DhcpSteered);

    // l2_remove_vlan leaves the setting; the responder's detach clears
    // it (and its flags go with its port entry).
    sw.dp.l2_remove_vlan(CN, 100).unwrap();
    assert_eq!(sw.dp.l2_dhcp_responder(CN, 100).unwrap(), Some(resp));
    sw.node.run(|| sw.dp.l2_detach_port("resp", resp)).unwrap();
    assert_eq!(sw.dp.l2_dhcp_responder(CN, 100).unwrap(), None);
    assert_eq!(sw.dp.l2_port_flags(resp).unwrap(), None);
    assert_eq!(sw.dp.l2_dhcp_responders().unwrap().len(), 1);
    sw.node.run(|| {
        sw.dp.l2_attach_port("resp", resp, &a100).unwrap();
    });
    assert_eq!(
        sw.dp.l2_port_flags(resp).unwrap(),
        Some(L2PortFlags::NONE),
        "a new port entry starts without flags"
    );
}

#[test]
fn flags_and_responders_survive_a_restart() {
    let sw = Sw::new();
    let pins = sw._pins.0.clone();
    let Sw {
        node,
        _peers,
        dp,
        _pins,
        resp,
        vm1,
        ..
    } = sw;
    drop(dp);
    let dp = Datapath::open(DatapathConfig::new(&pins)).unwrap();
    assert_eq!(
        dp.l2_port_flags(resp).unwrap(),
        Some(L2PortFlags::RESPONDER)
    );
    assert_eq!(dp.l2_dhcp_responder(CN, 100).unwrap(), Some(resp));
    // The old programs still run on the ports and see the same maps.
    let fd = dp.program_fd(PROG_L2_INGRESS).unwrap();
    let ctx = SkbContext {
        ifindex: vm1,
        ..Default::default()
    };
    let frame = Udp4::discover(MAC_A).frame();
    let out = node.run(|| test_run(fd, &frame, Some(&ctx), 1)).unwrap();
    let t = L2Trace::from_cb(out.cb).unwrap();
    assert_eq!(
        (t.verdict, t.out_ifindex),
        (L2Verdict::DhcpSteered, Some(resp))
    );
}
