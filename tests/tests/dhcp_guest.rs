//! A real VM under QEMU, bridged to its pod's VLAN interface the way
//! KubeVirt does it, gets its address from Furrow with busybox udhcpc and
//! talks with it to a VM on the other node.

use std::time::Duration;

use furrow_tests::dhcp_clients::Udhcpc;
use furrow_tests::guest::{Guest, GuestConfig, Nic};
use furrow_tests::scenario::dhcp::{mac_of, DhcpLab, PoolSpec, MTU, SERVER_IP};

#[test]
fn kubevirt_guest_gets_its_address_with_udhcpc() {
    let d = DhcpLab::build(&PoolSpec::default()).unwrap();
    // A peer on node2, addressed by DHCP too.
    let peer = d.vm(1, "peer", None).unwrap();
    let pc = Udhcpc::start(&peer.ns, "eth0", "peer").unwrap();
    let peer_ip = pc.bound(Duration::from_secs(20)).unwrap()["ip"].clone();

    // The VM's pod on node1; the guest takes the pod interface's MAC.
    let pod = d.vm(0, "vmpod", None).unwrap();
    let mac = mac_of(&pod, "eth0").unwrap();
    let payload = format!(
        r#"cat > /tmp/hook.sh <<'HOOK'
#!/bin/sh
case "$1" in
  bound|renew)
    echo "LEASE ip=$ip mask=$mask router=$router mtu=$mtu serverid=$serverid dns=$dns"
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
    ;;
esac
exit 0
HOOK
chmod +x /tmp/hook.sh
ip link set eth0 up
busybox udhcpc -i eth0 -f -q -n -t 10 -T 2 -O mtu -s /tmp/hook.sh || exit 20
ip -o addr show dev eth0
ip -o link show dev eth0
ping -c 3 -W 2 -w 30 {peer_ip} || exit 21
"#
    );
    let vm = Guest::start(
        GuestConfig::new(&payload)
            .tag("dhcpvm")
            .nic(Nic::kubevirt_bridge(pod.ns.path(), "eth0")),
    )
    .unwrap();
    let run = vm.wait().unwrap();
    assert_eq!(run.exit_code, 0, "payload failed:\n{}", run.console);
    let lease = run
        .output
        .lines()
        .find(|l| l.starts_with("LEASE "))
        .unwrap_or_else(|| panic!("no lease line:\n{}", run.output));
    assert!(lease.contains(&format!("serverid={SERVER_IP}")), "{lease}");
    assert!(lease.contains(&format!("mtu={MTU}")), "{lease}");
    assert!(run.output.contains(&format!("mtu {MTU}")), "{}", run.output);
    assert!(
        run.output.contains(&format!("bytes from {peer_ip}")),
        "{}",
        run.output
    );
    // Furrow recorded the guest's lease under the pod interface's MAC, on
    // node1.
    let l = d.lease_of(1, &mac).unwrap().expect("the guest's lease");
    assert_eq!((l.node.as_str(), l.state.as_str()), ("node1", "bound"));
    assert!(lease.contains(&format!("ip={}", l.ip)), "{lease}");
    assert_eq!(run.macs, vec![mac]);
}
