//! Floating VIPs in BGP mode: three nodes on a real 3-member etcd, BIRD 2
//! as their upstream router in the fabric's external namespace (which is
//! also every node's default gateway), and a client behind BIRD that
//! reaches the VIPs only through the routes BIRD learns
//! (`furrow_tests::scenario::vip::BgpLab`).

use std::time::{Duration, Instant};

use furrow_tests::bird::wait_until;
use furrow_tests::scenario::vip::{bgp_vip_yaml as vip_yaml, BgpLab, NODE_AS, ROUTER_AS};

const T: Duration = Duration::from_secs(20);
const VIP4: &str = "198.19.100.10";
const VIP6: &str = "fd00:100::10";

fn holder_of(b: &BgpLab, vip: &str) -> Option<usize> {
    b.holder_of(vip)
}

#[test]
fn the_route_follows_the_holder_and_a_client_behind_bird_reaches_the_vip() {
    let mut b = BgpLab::build().unwrap();
    b.lab.node(0).apply(&b.peers_yaml(3)).unwrap();
    b.lab.node(0).apply(&vip_yaml("api4", VIP4, "")).unwrap();
    b.lab.node(0).apply(&vip_yaml("api6", VIP6, "")).unwrap();
    let t0 = Instant::now();
    let (first, _) = b.wait_routed(&format!("{VIP4}/32"), None, T);
    let (first6, _) = b.wait_routed(&format!("{VIP6}/128"), None, T);
    println!(
        "routes at BIRD {:?} after the VIPs were applied",
        t0.elapsed()
    );
    // BIRD routes each VIP to its elected holder, and only that one
    // advertises it.
    wait_until("api4's holder known", T, || {
        holder_of(&b, "api4") == Some(first)
    });
    wait_until("api6's holder known", T, || {
        holder_of(&b, "api6") == Some(first6)
    });
    let all = b
        .bird
        .birdc(&["show", "route", &format!("{VIP4}/32"), "all"]);
    assert_eq!(all.matches("BGP.origin").count(), 1, "{all}");
    // The client behind BIRD reaches both.
    wait_until("the client reaches the IPv4 VIP", T, || {
        b.client_reaches(VIP4)
    });
    wait_until("the client reaches the IPv6 VIP", T, || {
        b.client_reaches(VIP6)
    });
    // netctl bgp on the holder shows the sessions and the routes.
    let out = b.lab.node(first).netd.netctl(&["bgp"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("AS {NODE_AS}")), "{text}");
    assert!(
        text.contains("tor-v4") && text.contains("Established"),
        "{text}"
    );
    assert!(
        text.contains(&format!("{VIP4}/32")) && text.contains("api4"),
        "{text}"
    );
    let info = b.bgp(first).unwrap();
    assert_eq!(info.router_id, Some(b.lab.node(first).uplink_ip));

    // The holder's netd dies (its node lives on, so the kernel closes the
    // sessions and BIRD drops the routes at once): another node takes the
    // VIP and its route appears.
    b.lab.node_mut(first).netd.kill();
    let t0 = Instant::now();
    let (second, took) = b.wait_routed(&format!("{VIP4}/32"), Some(first), T);
    println!("route moved {took:?} after the holder's netd was killed");
    assert!(t0.elapsed() < T);
    wait_until("the client reaches the VIP on its new holder", T, || {
        b.client_reaches(VIP4)
    });
    assert_eq!(holder_of(&b, "api4"), Some(second));
    b.lab.node_mut(first).netd.start().unwrap();

    // A graceful stop withdraws at once and the next node advertises.
    let holder = holder_of(&b, "api4").unwrap();
    let t0 = Instant::now();
    assert!(b.lab.node_mut(holder).netd.stop().unwrap());
    let (third, took) = b.wait_routed(&format!("{VIP4}/32"), Some(holder), T);
    println!("route moved {took:?} after a graceful stop");
    assert!(t0.elapsed() < T);
    assert_ne!(third, holder);
    // The stopped node said goodbye: BIRD saw a Cease, not a hold timer.
    let proto = b.bird.protocol(&format!("n{}v4", holder + 1));
    assert!(
        proto.contains("Administrative shutdown") || proto.contains("Received: Cease"),
        "{proto}"
    );
    b.lab.node_mut(holder).netd.start().unwrap();

    // The VIP deleted: the route disappears.
    b.lab
        .node(0)
        .netd
        .client()
        .delete::<serde_json::Value>("/v1/resources/virtualips/api4")
        .unwrap();
    wait_until("the route withdrawn", T, || {
        b.bird.route(&format!("{VIP4}/32")).is_none()
    });
    assert!(!b.client_reaches(VIP4));
    // The IPv6 one is still there.
    assert!(b.bird.route(&format!("{VIP6}/128")).is_some());
}

/// Accepts and closes connections on 127.0.0.1:8443 (a health target).
const LISTENER: &str = "import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', 8443))
s.listen(64)
while True:
    c, _ = s.accept()
    c.close()
";

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn ecmp_advertises_from_every_healthy_node_and_bad_peers_are_visible() {
    let b = BgpLab::build().unwrap();
    // Nodes 1 and 2 serve on 127.0.0.1:8443 in their own namespace; node 3
    // does not, so its health check fails.
    let _servers: Vec<KillOnDrop> = (0..2)
        .map(|i| {
            KillOnDrop(
                b.lab
                    .node(i)
                    .ns
                    .cmd("python3")
                    .args(["-c", LISTENER])
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    b.lab.node(0).apply(&b.peers_yaml(3)).unwrap();
    b.lab
        .node(0)
        .apply(&vip_yaml(
            "lb",
            VIP4,
            "  ecmp: true\n  healthCheck: {tcp: \"127.0.0.1:8443\", intervalMs: 200, timeoutMs: 100, failureThreshold: 2}\n",
        ))
        .unwrap();
    let prefix = format!("{VIP4}/32");
    wait_until("two paths at BIRD", T, || {
        let all = b.bird.birdc(&["show", "route", &prefix, "all"]);
        all.matches("BGP.origin").count() == 2
    });
    let all = b.bird.birdc(&["show", "route", &prefix, "all"]);
    for i in 0..2 {
        assert!(
            all.contains(&format!("via {}", b.lab.node(i).uplink_ip)),
            "{all}"
        );
    }
    assert!(
        !all.contains(&format!("via {}", b.lab.node(2).uplink_ip)),
        "{all}"
    );
    let v = b.vips(2).unwrap();
    assert_eq!(v[0].role, "unhealthy", "{v:?}");

    // An unreachable peer: its session shows the error, the others run.
    b.lab
        .node(0)
        .apply(&format!(
            "apiVersion: network.furrow.io/v1alpha1
kind: BGPPeer
metadata: {{name: nowhere}}
spec: {{myASN: {NODE_AS}, peerASN: {ROUTER_AS}, peerAddress: 198.18.0.249, holdTime: 3}}
"
        ))
        .unwrap();
    wait_until("the unreachable peer's error shown", T, || {
        b.bgp(0)
            .unwrap()
            .peers
            .iter()
            .any(|p| p.name == "nowhere" && p.state != "Established" && p.last_error.is_some())
    });
    let out = b.lab.node(0).netd.netctl(&["bgp"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("nowhere"), "{text}");
    assert!(
        b.bird
            .birdc(&["show", "route", &prefix, "all"])
            .matches("BGP.origin")
            .count()
            == 2
    );

    // AS 0 is refused at apply, naming the field.
    let err = b
        .lab
        .node(0)
        .apply(&format!(
            "apiVersion: network.furrow.io/v1alpha1
kind: BGPPeer
metadata: {{name: zero}}
spec: {{myASN: 0, peerASN: {ROUTER_AS}, peerAddress: 198.18.0.254}}
"
        ))
        .unwrap_err()
        .to_string();
    assert!(err.contains("spec.myASN"), "{err}");

    // Two peers that disagree on our AS: a visible problem; the speaker
    // stops rather than guess, and the VIPs step down on that node only
    // if they cannot be advertised.
    b.lab
        .node(0)
        .apply(&format!(
            "apiVersion: network.furrow.io/v1alpha1
kind: BGPPeer
metadata: {{name: other-as}}
spec: {{myASN: 65099, peerASN: {ROUTER_AS}, peerAddress: 198.18.0.249}}
"
        ))
        .unwrap();
    wait_until("the AS conflict shown", T, || {
        b.bgp(0)
            .unwrap()
            .problem
            .is_some_and(|p| p.contains("disagree on spec.myASN"))
    });
    let v = b.vips(0).unwrap();
    assert_eq!(v[0].role, "problem", "{v:?}");
    wait_until("the routes withdrawn", T, || {
        b.bird.route(&prefix).is_none()
    });
}
