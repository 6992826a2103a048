//! The node's own security: netd's API socket is root's unless a read
//! group is configured (then its members get the read-only views and
//! nothing else), and BGP passwords come from files and never show in
//! netd's answers or its log.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use furrow_api::wire::{BgpInfo, ResourceList};
use furrow_tests::bins;
use furrow_tests::bird::{bird_conf, bird_peer, wait_until, Bird};
use furrow_tests::lab::{Lab, EXTERNAL_IP};

const T: Duration = Duration::from_secs(20);
/// Unprivileged identities for netctl (no such users need to exist).
const READER_UID: u32 = 64_001;
const OTHER_UID: u32 = 64_003;
const READ_GID: u32 = 64_100;
const OTHER_GID: u32 = 64_200;

/// netctl as another user: `ids` are setpriv's identity options.
fn netctl_as(socket: &Path, ids: &[String], args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(ids)
        .arg(bins::netctl())
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("running setpriv")
}

fn ids(uid: u32, gid: u32, groups: Option<&[u32]>) -> Vec<String> {
    let mut v = vec![format!("--reuid={uid}"), format!("--regid={gid}")];
    match groups {
        None => v.push("--clear-groups".into()),
        Some(g) => v.push(format!(
            "--groups={}",
            g.iter()
                .map(|g| g.to_string())
                .collect::<Vec<_>>()
                .join(",")
        )),
    }
    v
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_api_socket_is_roots_and_a_read_group_only_reads() {
    let mut lab = Lab::new().unwrap();
    lab.add_node("n1").unwrap();
    let socket = lab.node(0).netd.socket.clone();
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600, "default socket mode");
    assert_eq!(meta.uid(), 0);
    // Anyone but root is turned away, with a clear message.
    let o = netctl_as(&socket, &ids(READER_UID, READ_GID, None), &["status"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("permission denied"), "{}", text(&o));

    // With a read group: 0660 root:group.
    let node = lab.node_mut(0);
    node.netd.stop().unwrap();
    node.netd.extra_args = vec!["--api-read-group".into(), READ_GID.to_string()];
    node.netd.start().unwrap();
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o660);
    assert_eq!((meta.uid(), meta.gid()), (0, READ_GID));

    // A member (by primary group, or by a supplementary one) reads...
    for who in [
        ids(READER_UID, READ_GID, None),
        ids(READER_UID + 1, OTHER_GID, Some(&[READ_GID])),
    ] {
        for view in [&["status"][..], &["ports"], &["get", "managementnetworks"]] {
            let o = netctl_as(&socket, &who, view);
            assert!(o.status.success(), "{who:?} {view:?}: {}", text(&o));
        }
    }
    // ...but changes nothing: 403 with what it would take.
    let file = lab.node(0).netd.dir.join("mgmt-copy.yaml");
    std::fs::write(
        &file,
        "apiVersion: network.furrow.io/v1alpha1\nkind: VirtualIPPool\nmetadata: {name: p1}\nspec: {addresses: [10.77.0.0/29]}\n",
    )
    .unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let reader = ids(READER_UID, READ_GID, None);
    for change in [
        vec!["apply", "-f", file.to_str().unwrap()],
        vec!["delete", "managementnetwork", "mgmt"],
        vec!["nodes", "forget", "n9"],
    ] {
        let o = netctl_as(&socket, &reader, &change);
        let t = text(&o);
        assert!(!o.status.success(), "{change:?}: {t}");
        assert!(
            t.contains("permission denied") && t.contains("needs root"),
            "{change:?}: {t}"
        );
    }
    let pools: ResourceList = lab
        .node(0)
        .netd
        .client()
        .get("/v1/resources/virtualippools")
        .unwrap();
    assert!(pools.items.is_empty(), "a reader's apply went through");
    // Someone outside the group cannot even connect.
    let o = netctl_as(&socket, &ids(OTHER_UID, OTHER_GID, None), &["status"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("permission denied"), "{}", text(&o));
    // Root does everything.
    let o = lab
        .node(0)
        .netd
        .netctl(&["apply", "-f", file.to_str().unwrap()])
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let log = lab.node(0).netd.log();
    assert!(log.contains("API request refused"), "refusals are logged");
}

const NODE_AS: u32 = 65101;
const ROUTER_AS: u32 = 65100;
const FILE_KEY: &str = "furrow-f1le-k3y";
const INLINE_KEY: &str = "furrow-inl1ne-k3y";

#[test]
fn a_bgp_password_from_a_file_brings_the_session_up_and_never_shows() {
    let mut lab = Lab::new().unwrap();
    lab.add_node("n1").unwrap();
    let node_ip = lab.node(0).uplink_ip.to_string();
    let bird = Bird::start(
        &lab.external,
        &bird_conf(
            &EXTERNAL_IP.to_string(),
            false,
            &bird_peer(
                "n1",
                &EXTERNAL_IP.to_string(),
                &node_ip,
                (ROUTER_AS, NODE_AS),
                &format!("password \"{FILE_KEY}\";"),
            ),
        ),
    );
    let netd = &lab.node(0).netd;
    let key_file = netd.dir.join("bgp-key");
    let peer = |name: &str, address: &str, secret: &str| {
        format!(
            "apiVersion: network.furrow.io/v1alpha1\nkind: BGPPeer\nmetadata: {{name: {name}}}\nspec: {{myASN: {NODE_AS}, peerASN: {ROUTER_AS}, peerAddress: {address}, holdTime: 3, {secret}}}\n"
        )
    };
    // The file is missing: the peer is reported, netd carries on.
    lab.node(0)
        .apply(&peer(
            "tor",
            &EXTERNAL_IP.to_string(),
            &format!("passwordFile: {}", key_file.display()),
        ))
        .unwrap();
    let bgp = || -> BgpInfo { netd.client().get("/v1/bgp").unwrap() };
    wait_until("the missing file is reported", T, || {
        let b = bgp();
        b.peers.iter().any(|p| {
            p.name == "tor"
                && p.state == "NotStarted"
                && p.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("spec.passwordFile") && e.contains("cannot read"))
        }) && b.problem.is_some_and(|p| p.contains("no usable BGPPeer"))
    });
    let o = netd.netctl(&["bgp"]).unwrap();
    assert!(text(&o).contains("passwordFile"), "{}", text(&o));
    // The key appears (as a mounted Secret would, newline and all): the
    // session comes up with TCP MD5, without a reapply.
    std::fs::write(&key_file, format!("{FILE_KEY}\n")).unwrap();
    wait_until("BIRD establishes with the key from the file", T, || {
        bird.established("n1")
    });
    wait_until("netd shows the session Established", T, || {
        bgp()
            .peers
            .iter()
            .any(|p| p.name == "tor" && p.state == "Established")
    });
    // Another key in the file: the session goes; the right one again: back.
    std::fs::write(&key_file, "not-the-key").unwrap();
    wait_until("a wrong key in the file ends the session", T, || {
        !bird.established("n1")
    });
    std::fs::write(&key_file, FILE_KEY).unwrap();
    wait_until("the right key again", T, || bird.established("n1"));

    // An inline password (deprecated, still served) is never shown.
    lab.node(0)
        .apply(&peer(
            "inline",
            "198.18.0.200",
            &format!("password: {INLINE_KEY}"),
        ))
        .unwrap();
    let got: serde_json::Value = netd.client().get("/v1/resources/bgppeers/inline").unwrap();
    assert_eq!(got["spec"]["password"], "<redacted>");
    for args in [
        &["get", "bgppeers", "-o", "yaml"][..],
        &["get", "bgppeers", "inline", "-o", "json"],
        &["get", "bgppeers"],
        &["bgp", "-o", "json"],
    ] {
        let o = netd.netctl(args).unwrap();
        let t = text(&o);
        assert!(o.status.success(), "{args:?}: {t}");
        assert!(
            !t.contains(INLINE_KEY) && !t.contains(FILE_KEY),
            "{args:?}: {t}"
        );
    }
    // Reapplying what `get` showed does not store the placeholder.
    let shown = netd
        .netctl(&["get", "bgppeers", "inline", "-o", "yaml"])
        .unwrap();
    let f = netd.dir.join("shown.yaml");
    std::fs::write(&f, &shown.stdout).unwrap();
    let o = netd.netctl(&["apply", "-f", f.to_str().unwrap()]).unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("spec.password"), "{}", text(&o));
    // Neither key ever reached the log.
    let log = netd.log();
    assert!(!log.contains(FILE_KEY) && !log.contains(INLINE_KEY));
    assert!(
        log.contains("BGP peer left out"),
        "the missing file was logged"
    );
}
