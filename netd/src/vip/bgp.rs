//! BGP mode: this node's speaker (furrow-vip's bgp), configured from the
//! BGPPeer resources that select the node, advertising the VIPs the node
//! holds (or, with `ecmp`, every VIP it is ready for).
//!
//! One speaker per node: every selected BGPPeer must agree on `myASN`
//! (and on `routerID` when given), as MetalLB requires for one router.
//! A conflict is a visible problem, and BGP-mode VIPs are then not ready
//! on this node, so healthier nodes hold them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;

use furrow_api::resource::{selects, BgpPeer};
use furrow_api::wire::{BgpInfo, BgpPeerInfo};
use furrow_vip::bgp::{Family, PeerConfig, Speaker, SpeakerConfig};
use ipnet::IpNet;
use tokio::sync::Mutex;

use crate::node::Node;

#[derive(Default)]
struct State {
    speaker: Option<Speaker>,
    /// What the running speaker was started with.
    identity: Option<(u32, Ipv4Addr)>,
    /// Why this node has no usable speaker, when it has BGPPeers.
    problem: Option<String>,
    /// Names of the BGPPeers that select this node.
    selected: Vec<String>,
    /// Routes wanted, by prefix, with the VIPs that want them.
    routes: BTreeMap<IpNet, BTreeSet<String>>,
    /// The BGPPeers that select this node, as last reconciled.
    peers: Vec<BgpPeer>,
    /// What each peer's spec.passwordFile held at the last reconcile
    /// (the key, or why it could not be read), to notice changes.
    secrets: BTreeMap<String, Result<String, String>>,
    /// Peers left out of the speaker, with why (a passwordFile that
    /// cannot be read): shown in `netctl bgp`.
    peer_problems: BTreeMap<String, String>,
}

#[derive(Clone)]
pub struct BgpControl {
    node: Arc<Node>,
    st: Arc<Mutex<State>>,
}

impl BgpControl {
    pub fn new(node: Arc<Node>) -> Self {
        BgpControl {
            node,
            st: Default::default(),
        }
    }

    /// Follows the BGPPeer resources: starts, reconfigures or stops the
    /// speaker. Sessions that did not change are left alone.
    pub async fn reconcile(&self, peers: &[BgpPeer]) {
        let mine: Vec<&BgpPeer> = peers
            .iter()
            .filter(|p| selects(&p.spec.node_selector, &self.node.cfg.node_labels))
            .collect();
        let mut st = self.st.lock().await;
        st.selected = mine.iter().map(|p| p.metadata.name.clone()).collect();
        st.peers = mine.iter().map(|p| (*p).clone()).collect();
        // Read every reconcile: a mounted Secret changes under netd.
        let secrets: BTreeMap<String, Result<String, String>> = mine
            .iter()
            .filter_map(|p| Some((p.metadata.name.clone(), read_password_file(p)?)))
            .collect();
        let problems: BTreeMap<String, String> = secrets
            .iter()
            .filter_map(|(n, r)| r.as_ref().err().map(|e| (n.clone(), e.clone())))
            .collect();
        for (name, problem) in &problems {
            if st.peer_problems.get(name) != Some(problem) {
                tracing::warn!(peer = %name, %problem, "BGP peer left out");
            }
        }
        st.secrets = secrets;
        st.peer_problems = problems;
        if mine.is_empty() {
            st.problem = None;
            stop(&mut st).await;
            return;
        }
        let wanted = match self.identity(&mine).await {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(problem = %e, "BGP speaker not started");
                st.problem = Some(e);
                stop(&mut st).await;
                return;
            }
        };
        if st.identity != Some(wanted) {
            stop(&mut st).await;
            match Speaker::start(SpeakerConfig::new(wanted.0, wanted.1)) {
                Ok(s) => {
                    s.set_advertised(st.routes.keys().copied());
                    st.speaker = Some(s);
                    st.identity = Some(wanted);
                }
                Err(e) => {
                    st.problem = Some(e.to_string());
                    return;
                }
            }
        }
        let cfgs: Vec<PeerConfig> = mine
            .iter()
            .filter_map(|p| {
                let password = match st.secrets.get(&p.metadata.name) {
                    Some(Ok(key)) => Some(key.clone()),
                    Some(Err(_)) => return None,
                    None => p.spec.password.clone(),
                };
                Some(peer_config(p, password))
            })
            .collect();
        let none_usable = cfgs.is_empty();
        let speaker = st.speaker.clone().expect("started above");
        st.problem = match speaker.set_peers(cfgs) {
            Ok(()) if none_usable => Some(format!(
                "no usable BGPPeer: {}",
                st.peer_problems
                    .iter()
                    .map(|(n, e)| format!("{n}: {e}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
            Ok(()) => None,
            Err(e) => Some(format!("BGPPeer refused by the speaker: {e}")),
        };
    }

    /// Whether a selected peer's spec.passwordFile now holds something
    /// else than at the last reconcile (or became readable, or not).
    pub async fn secrets_changed(&self) -> bool {
        let st = self.st.lock().await;
        st.peers.iter().any(|p| {
            read_password_file(p).is_some_and(|now| st.secrets.get(&p.metadata.name) != Some(&now))
        })
    }

    /// This node's AS and router id, from the peers that select it.
    async fn identity(&self, mine: &[&BgpPeer]) -> Result<(u32, Ipv4Addr), String> {
        let asns: BTreeSet<u32> = mine.iter().map(|p| p.spec.my_asn).collect();
        if asns.len() > 1 {
            return Err(format!(
                "the BGPPeers selecting this node disagree on spec.myASN ({}): one node is one BGP speaker with one AS",
                asns.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
            ));
        }
        let ids: BTreeSet<Ipv4Addr> = mine.iter().filter_map(|p| p.spec.router_id).collect();
        if ids.len() > 1 {
            return Err(format!(
                "the BGPPeers selecting this node disagree on spec.routerID ({})",
                ids.iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let asn = *asns.iter().next().expect("non-empty");
        if let Some(id) = ids.into_iter().next() {
            return Ok((asn, id));
        }
        // The node's IPv4 address towards its first IPv4 peer, else any
        // IPv4 address it has: unique per node, as BGP needs.
        for p in mine {
            if let Some(IpAddr::V4(a)) = p
                .spec
                .source_address
                .or_else(|| source_towards(SocketAddr::new(p.spec.peer_address, p.spec.peer_port)))
            {
                if !a.is_unspecified() {
                    return Ok((asn, a));
                }
            }
        }
        for link in self.node.host.links().await.map_err(|e| e.to_string())? {
            if let Ok(addrs) = self.node.host.addresses_v4(link.index).await {
                if let Some((a, _)) = addrs.into_iter().find(|(a, _)| !a.is_loopback()) {
                    return Ok((asn, a));
                }
            }
        }
        Err("no IPv4 address on this node to use as BGP router id: set spec.routerID".into())
    }

    /// None when BGP-mode VIPs can be held here, else why not.
    pub async fn unavailable(&self) -> Option<String> {
        let st = self.st.lock().await;
        if st.selected.is_empty() {
            return Some("mode bgp: no BGPPeer selects this node".into());
        }
        st.problem.clone()
    }

    /// Whether an established session carries IPv4 and IPv6 routes (a
    /// BGP-mode VIP held here without one would be unreachable).
    pub async fn established(&self) -> (bool, bool) {
        let st = self.st.lock().await;
        let peers = st.speaker.as_ref().map(|s| s.peers()).unwrap_or_default();
        let carries = |f: Family| peers.iter().any(|p| p.exportable.contains(&f));
        (carries(Family::IPV4_UNICAST), carries(Family::IPV6_UNICAST))
    }

    /// Starts advertising `ip` (as a host route) for `vip`.
    pub async fn advertise(&self, vip: &str, ip: IpAddr) {
        let mut st = self.st.lock().await;
        let prefix = IpNet::from(ip);
        st.routes.entry(prefix).or_default().insert(vip.to_string());
        if let Some(s) = &st.speaker {
            s.advertise(prefix);
        }
    }

    /// Stops advertising `ip` for `vip` (the route goes when no VIP wants it).
    pub async fn withdraw(&self, vip: &str, ip: IpAddr) {
        let mut st = self.st.lock().await;
        let prefix = IpNet::from(ip);
        let gone = match st.routes.get_mut(&prefix) {
            Some(v) => {
                v.remove(vip);
                v.is_empty()
            }
            None => false,
        };
        if gone {
            st.routes.remove(&prefix);
            if let Some(s) = &st.speaker {
                s.withdraw(prefix);
            }
        }
    }

    /// SIGTERM: every session closed with a Cease (its routes go with it).
    pub async fn shutdown(&self) {
        let mut st = self.st.lock().await;
        st.routes.clear();
        stop(&mut st).await;
    }

    pub async fn info(&self) -> BgpInfo {
        let st = self.st.lock().await;
        let peers = st
            .speaker
            .as_ref()
            .map(|s| s.peers())
            .unwrap_or_default()
            .into_iter()
            .map(|p| BgpPeerInfo {
                name: p.name,
                address: p.address,
                port: p.port,
                remote_as: p.remote_as,
                state: p.state.to_string(),
                uptime_ms: p.uptime.as_millis() as u64,
                last_error: p.last_error,
                local_address: p.local_address.map(|a| a.ip()),
                peer_id: p.peer_id,
                hold_time: p.hold_time,
                keepalive: p.keepalive,
                families: p.families.iter().map(|f| f.to_string()).collect(),
                advertised: p.advertised.iter().map(|n| n.to_string()).collect(),
                notes: p.notes,
                updates_sent: p.counters.updates_sent,
                updates_received: p.counters.updates_received,
                notifications_sent: p.counters.notifications_sent,
                notifications_received: p.counters.notifications_received,
                connect_attempts: p.counters.connect_attempts,
                established_count: p.counters.established,
            })
            .collect::<Vec<_>>();
        let mut peers = peers;
        for p in &st.peers {
            let Some(problem) = st.peer_problems.get(&p.metadata.name) else {
                continue;
            };
            peers.push(BgpPeerInfo {
                name: p.metadata.name.clone(),
                address: p.spec.peer_address,
                port: p.spec.peer_port,
                remote_as: p.spec.peer_asn,
                state: "NotStarted".into(),
                uptime_ms: 0,
                last_error: Some(problem.clone()),
                local_address: None,
                peer_id: None,
                hold_time: None,
                keepalive: None,
                families: vec![],
                advertised: vec![],
                notes: vec![],
                updates_sent: 0,
                updates_received: 0,
                notifications_sent: 0,
                notifications_received: 0,
                connect_attempts: 0,
                established_count: 0,
            });
        }
        BgpInfo {
            node: self.node.cfg.node.clone(),
            local_as: st.identity.map(|i| i.0),
            router_id: st.identity.map(|i| i.1),
            selected_peers: st.selected.clone(),
            problem: st.problem.clone(),
            peers,
            routes: st
                .routes
                .iter()
                .map(|(p, vips)| (p.to_string(), vips.iter().cloned().collect()))
                .collect(),
        }
    }
}

async fn stop(st: &mut State) {
    st.identity = None;
    if let Some(s) = st.speaker.take() {
        s.shutdown().await;
    }
}

/// The key in a peer's spec.passwordFile, or why there is none; None
/// for a peer without the field. Errors name the field and the path,
/// never the contents.
fn read_password_file(p: &BgpPeer) -> Option<Result<String, String>> {
    let path = p.spec.password_file.as_ref()?;
    Some(
        std::fs::read(path)
            .map_err(|e| format!("spec.passwordFile {path:?}: cannot read it: {e}"))
            .and_then(|b| {
                furrow_api::resource::password_from_file(&b)
                    .map_err(|e| format!("spec.passwordFile {path:?}: {e}"))
            }),
    )
}

fn peer_config(p: &BgpPeer, password: Option<String>) -> PeerConfig {
    let s = &p.spec;
    let mut c = PeerConfig::new(p.metadata.name.clone(), s.peer_address, s.peer_asn);
    c.port = s.peer_port;
    c.hold_time = Some(s.hold_time);
    c.password = password;
    c.local_address = s.source_address;
    c.next_hop_v4 = s.next_hop_v4;
    c.next_hop_v6 = s.next_hop_v6;
    c
}

/// The source address the kernel would pick towards `to` (a connected
/// UDP socket sends nothing).
fn source_towards(to: SocketAddr) -> Option<IpAddr> {
    let bind: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let s = UdpSocket::bind(bind).ok()?;
    s.connect(to).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}
