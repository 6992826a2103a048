//! BPF_PROG_TEST_RUN on crafted frames, in a private netns with real veths
//! (the kernel resolves the context's ifindex in the caller's netns).

mod common;

use std::net::Ipv4Addr;

use common::*;
use furrow_ebpf::*;

const POD_A_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 0x0a];
const POD_B_MAC: [u8; 6] = [0x02, 0xbb, 0, 0, 0, 0x0b];
const POD_A_IP: [u8; 4] = [10, 77, 0, 2];
const POD_B_IP: [u8; 4] = [10, 77, 0, 3];
const POD_C_IP: [u8; 4] = [10, 77, 0, 4];

/// Node netns with host veths hosta/hostb attached, hostc not attached,
/// and endpoints for pod B (on hostb) and pod C (on the unattached hostc).
struct Fixture {
    node: NetNs,
    _peers: NetNs,
    dp: Datapath,
    _pins: PinDir,
    a: u32,
    b: u32,
    c: u32,
    a_mac: [u8; 6],
    b_mac: [u8; 6],
}

impl Fixture {
    fn new() -> Self {
        let node = NetNs::new();
        let peers = NetNs::new();
        for (h, p) in [("hosta", "peera"), ("hostb", "peerb"), ("hostc", "peerc")] {
            node.veth_to(h, p, &peers, p);
        }
        let pins = PinDir::new();
        let mut dp = Datapath::open(DatapathConfig::new(&pins.0)).unwrap();
        let (a, b, c) = (
            node.ifindex("hosta"),
            node.ifindex("hostb"),
            node.ifindex("hostc"),
        );
        node.run(|| {
            dp.attach_port("hosta", a).unwrap();
            dp.attach_port("hostb", b).unwrap();
        });
        let b_mac = node.mac("hostb");
        dp.upsert_endpoint(
            Ipv4Addr::from(POD_B_IP),
            MgmtEndpoint {
                host_ifindex: b,
                pod_mac: POD_B_MAC,
                host_mac: b_mac,
            },
        )
        .unwrap();
        dp.upsert_endpoint(
            Ipv4Addr::from(POD_C_IP),
            MgmtEndpoint {
                host_ifindex: c,
                pod_mac: [0x02, 0xcc, 0, 0, 0, 0x0c],
                host_mac: node.mac("hostc"),
            },
        )
        .unwrap();
        Fixture {
            a_mac: node.mac("hosta"),
            node,
            _peers: peers,
            dp,
            _pins: pins,
            a,
            b,
            c,
            b_mac,
        }
    }

    /// Runs `prog` on `frame` as seen on `ifindex`.
    fn run(&self, prog: &str, ifindex: u32, frame: &[u8]) -> TestRunOutput {
        let fd = self.dp.program_fd(prog).unwrap();
        let ctx = SkbContext {
            ifindex,
            ..Default::default()
        };
        self.node
            .run(|| test_run(fd, frame, Some(&ctx), 1))
            .unwrap()
    }

    fn stats(&self, ifindex: u32) -> PortStats {
        self.dp.port_stats(ifindex).unwrap().expect("stats entry")
    }

    /// A UDP frame pod A sends towards `dst` through its gateway (hosta).
    fn sent_by_a(&self, dst: [u8; 4], ttl: u8) -> Vec<u8> {
        ipv4_udp_frame(self.a_mac, POD_A_MAC, POD_A_IP, dst, ttl, &[], b"hello pod")
    }
}

fn assert_ipv4_checksum_valid(frame: &[u8]) {
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    assert_eq!(
        inet_checksum(&frame[14..14 + ihl]),
        0,
        "IPv4 header checksum invalid"
    );
}

#[test]
fn local_pod_destination_is_redirected_and_rewritten() {
    let fx = Fixture::new();
    let frame = fx.sent_by_a(POD_B_IP, 64);
    let out = fx.run(PROG_MGMT_FROM_POD, fx.a, &frame);
    assert_eq!(out.retval, TC_ACT_REDIRECT);

    let o = &out.data_out;
    assert_eq!(o.len(), frame.len());
    assert_eq!(&o[0..6], &POD_B_MAC, "eth dst = destination pod MAC");
    assert_eq!(&o[6..12], &fx.b_mac, "eth src = destination host veth MAC");
    assert_eq!(o[14 + 8], 63, "TTL decremented");
    assert_ipv4_checksum_valid(o);
    // Nothing else changed: the rest of the header and the payload.
    let mut expected = frame.clone();
    expected[0..12].copy_from_slice(&o[0..12]);
    expected[14 + 8] = 63;
    expected[14 + 10..14 + 12].copy_from_slice(&o[14 + 10..14 + 12]);
    assert_eq!(o, &expected);

    let len = frame.len() as u64;
    let sa = fx.stats(fx.a);
    assert_eq!(
        (
            sa.tx_packets,
            sa.tx_bytes,
            sa.redirected_packets,
            sa.rx_packets
        ),
        (1, len, 1, 0)
    );
    let sb = fx.stats(fx.b);
    assert_eq!(
        (
            sb.rx_packets,
            sb.rx_bytes,
            sb.tx_packets,
            sb.redirected_packets
        ),
        (1, len, 0, 0)
    );
}

#[test]
fn checksum_stays_valid_across_ttl_values_and_options() {
    let fx = Fixture::new();
    // TTLs whose decrement borrows across the checksum's carry, and a
    // header with options (IHL 6).
    for ttl in [2u8, 16, 128, 255] {
        for options in [&[][..], &[0x94, 0x04, 0, 0][..]] {
            let frame = ipv4_udp_frame(fx.a_mac, POD_A_MAC, POD_A_IP, POD_B_IP, ttl, options, b"x");
            let out = fx.run(PROG_MGMT_FROM_POD, fx.a, &frame);
            assert_eq!(out.retval, TC_ACT_REDIRECT, "ttl {ttl}");
            assert_eq!(out.data_out[14 + 8], ttl - 1);
            assert_ipv4_checksum_valid(&out.data_out);
        }
    }
    assert_eq!(fx.stats(fx.a).redirected_packets, 8);
}

#[test]
fn everything_else_goes_to_the_kernel_unchanged() {
    let fx = Fixture::new();
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("unknown destination", fx.sent_by_a([10, 77, 9, 9], 64)),
        ("outside destination", fx.sent_by_a([192, 0, 2, 1], 64)),
        ("TTL 1", fx.sent_by_a(POD_B_IP, 1)),
        ("TTL 0", fx.sent_by_a(POD_B_IP, 0)),
        ("destination port not attached", fx.sent_by_a(POD_C_IP, 64)),
    ];
    let mut arp = eth_header([0xff; 6], POD_A_MAC, ETH_P_ARP);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&POD_A_MAC);
    arp.extend_from_slice(&POD_A_IP);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&POD_B_IP);
    cases.push(("ARP request", arp));

    let mut v6 = eth_header(fx.a_mac, POD_A_MAC, ETH_P_IPV6);
    v6.extend_from_slice(&[0x60, 0, 0, 0, 0, 8, 17, 64]);
    v6.extend_from_slice(&[0xfd; 32]);
    v6.extend_from_slice(&[0; 8]);
    cases.push(("IPv6", v6));

    let mut bad_len = fx.sent_by_a(POD_B_IP, 64);
    bad_len[14 + 2..14 + 4].copy_from_slice(&1500u16.to_be_bytes());
    cases.push(("total length beyond the frame", bad_len));

    let mut bad_ihl = fx.sent_by_a(POD_B_IP, 64);
    bad_ihl[14] = 0x44;
    cases.push(("IHL below 5", bad_ihl));

    let mut not_v4 = fx.sent_by_a(POD_B_IP, 64);
    not_v4[14] = 0x65;
    cases.push(("IP version 6 in an IPv4 ethertype", not_v4));

    let mut bcast = fx.sent_by_a(POD_B_IP, 64);
    bcast[0..6].copy_from_slice(&[0xff; 6]);
    cases.push(("broadcast MAC", bcast));

    let mut other_host = fx.sent_by_a(POD_B_IP, 64);
    other_host[0..6].copy_from_slice(&[0x02, 0x12, 0x34, 0x56, 0x78, 0x9a]);
    cases.push(("not addressed to the host veth", other_host));

    let mut bytes = 0;
    for (what, frame) in &cases {
        let out = fx.run(PROG_MGMT_FROM_POD, fx.a, frame);
        assert_eq!(out.retval, TC_ACT_OK, "{what}");
        assert_eq!(&out.data_out, frame, "{what}: frame modified");
        bytes += frame.len() as u64;
    }
    let sa = fx.stats(fx.a);
    assert_eq!(sa.tx_packets, cases.len() as u64);
    assert_eq!(sa.tx_bytes, bytes);
    assert_eq!(sa.redirected_packets, 0);
    assert_eq!(fx.stats(fx.b), PortStats::default());
}

#[test]
fn truncated_ipv4_headers_are_not_forwarded() {
    let fx = Fixture::new();
    let full = fx.sent_by_a(POD_B_IP, 64);
    let fd = fx.dp.program_fd(PROG_MGMT_FROM_POD).unwrap();
    let ctx = SkbContext {
        ifindex: fx.a,
        ..Default::default()
    };
    let mut ran = 0;
    for len in [14, 15, 14 + 10, 14 + 19] {
        let frame = &full[..len];
        // Linux 6.18 refuses skb test runs whose IPv4 header is incomplete
        // (EINVAL) before the program runs; where it does run, the frame
        // must go to the kernel untouched.
        match fx.node.run(|| test_run(fd, frame, Some(&ctx), 1)) {
            Ok(out) => {
                assert_eq!(out.retval, TC_ACT_OK, "{len} bytes");
                assert_eq!(out.data_out, frame, "{len} bytes");
                ran += 1;
            }
            Err(DatapathError::Syscall { cause, .. }) => {
                assert_eq!(cause.raw_os_error(), Some(libc::EINVAL), "{len} bytes")
            }
            Err(e) => panic!("{len} bytes: {e}"),
        }
    }
    assert_eq!(fx.stats(fx.a).redirected_packets, 0);
    assert_eq!(fx.stats(fx.a).tx_packets, ran);
}

#[test]
fn to_pod_counts_rx_and_passes() {
    let fx = Fixture::new();
    let frame = ipv4_udp_frame(
        POD_A_MAC,
        fx.a_mac,
        [192, 0, 2, 1],
        POD_A_IP,
        63,
        &[],
        b"reply",
    );
    for _ in 0..3 {
        let out = fx.run(PROG_MGMT_TO_POD, fx.a, &frame);
        assert_eq!(out.retval, TC_ACT_OK);
        assert_eq!(out.data_out, frame);
    }
    let sa = fx.stats(fx.a);
    assert_eq!((sa.rx_packets, sa.rx_bytes), (3, 3 * frame.len() as u64));
    assert_eq!((sa.tx_packets, sa.redirected_packets), (0, 0));
}

#[test]
fn unknown_ports_get_no_counters_entry() {
    let fx = Fixture::new();
    // hostc is not attached: running on it must not create an entry.
    let frame = ipv4_udp_frame(
        fx.node.mac("hostc"),
        POD_A_MAC,
        POD_A_IP,
        POD_B_IP,
        64,
        &[],
        b"x",
    );
    let out = fx.run(PROG_MGMT_FROM_POD, fx.c, &frame);
    // It still forwards (the destination is attached), it just is not counted.
    assert_eq!(out.retval, TC_ACT_REDIRECT);
    fx.run(PROG_MGMT_TO_POD, fx.c, &frame);
    assert_eq!(fx.dp.port_stats(fx.c).unwrap(), None);
    let ports: Vec<u32> = fx
        .dp
        .all_port_stats()
        .unwrap()
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    let mut want = vec![fx.a, fx.b];
    want.sort();
    assert_eq!(ports, want);
    assert_eq!(fx.stats(fx.b).rx_packets, 1);
}

#[test]
fn test_run_reports_kernel_errors() {
    let fx = Fixture::new();
    let fd = fx.dp.program_fd(PROG_MGMT_FROM_POD).unwrap();
    // Shorter than an Ethernet header: the kernel refuses the input.
    let err = fx
        .node
        .run(|| test_run(fd, &[0u8; 10], None, 1))
        .unwrap_err();
    assert!(err.to_string().contains("BPF_PROG_TEST_RUN"), "{err}");
    // An ifindex that does not exist in this netns.
    let ctx = SkbContext {
        ifindex: 999_999,
        ..Default::default()
    };
    let frame = fx.sent_by_a(POD_B_IP, 64);
    let err = fx
        .node
        .run(|| test_run(fd, &frame, Some(&ctx), 1))
        .unwrap_err();
    assert!(matches!(err, DatapathError::Syscall { .. }), "{err}");
}
