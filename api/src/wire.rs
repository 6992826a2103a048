//! Request and response bodies of netd's HTTP/JSON API.
//!
//! Routes (all JSON, all under the unix socket):
//! - `POST /v1/cni/add|del|check` with [`AttachmentRequest`]
//! - `POST /v1/cni/gc` with [`GcRequest`], answering [`GcResponse`]
//! - `GET  /v1/cni/status` answering [`ReadyResponse`] or an error
//! - `GET  /v1/status` answering [`NodeStatus`]
//! - `GET  /v1/ports` answering `Vec<PortInfo>`
//! - `GET  /v1/networks` answering `Vec<NetworkInfo>`
//! - `GET  /v1/fdb`, `/v1/vlans`, `/v1/counters`: see [`crate::wire_diag`]
//! - `POST /v1/trace`: see [`crate::wire_trace`]
//! - `GET|PUT|DELETE /v1/resources/{kind}[/{name}]` with resource documents
//! - `GET  /metrics` Prometheus text format
//!
//! Field names are camelCase and stable: netctl's `-o json` prints them.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::cni::{AttachmentSpec, CniResult, PodRef};
use crate::MacAddr;

/// One CNI attachment operation (ADD, DEL or CHECK) as the plugin hands
/// it to netd after validating environment and config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentRequest {
    pub container_id: String,
    pub ifname: String,
    /// CNI_NETNS; optional for DEL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// The CNI network name (config `name`).
    pub network_name: String,
    pub attachment: AttachmentSpec,
    #[serde(default, skip_serializing_if = "PodRef::is_empty")]
    pub pod: PodRef,
    /// MAC requested by the runtime (runtimeConfig.mac or CNI_ARGS MAC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    /// Addresses requested by the runtime (runtimeConfig.ips or CNI_ARGS IP).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpAddr>,
    /// prevResult, converted to the canonical shape (required for CHECK).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_result: Option<CniResult>,
}

/// ADD's answer: this attachment's part of the result. The plugin merges
/// it with any prevResult and renders it in the config's cniVersion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddResponse {
    pub result: CniResult,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentRef {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcRequest {
    pub network_name: String,
    /// Attachments of this network that must be kept; all others go.
    pub valid_attachments: Vec<AttachmentRef>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcResponse {
    pub released: Vec<AttachmentRef>,
    /// Failures met while carrying on; GC reports them at the end.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadyResponse {
    pub ready: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub node: String,
    pub instance: String,
    pub version: String,
    pub api_version: u32,
    pub pid: u32,
    /// Seconds since the Unix epoch at which this netd started.
    pub started_at: u64,
    pub store: StoreStatus,
    pub datapath: DatapathStatus,
    pub firewall: FirewallStatus,
    pub networks: Vec<NetworkInfo>,
    #[serde(default)]
    pub cluster_networks: Vec<ClusterNetworkInfo>,
    pub ports: PortSummary,
    #[serde(default)]
    pub kernel: KernelFeatures,
}

/// What this node's kernel can do, found by probing (features some
/// backends need).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KernelFeatures {
    pub bridge_vlan_filtering: Feature,
    pub vlan_8021q: Feature,
    pub bonding: Feature,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Feature {
    pub available: bool,
    pub detail: String,
}

/// A cluster network (layer-2 domain) as this node runs it:
/// `GET /v1/clusternetworks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkInfo {
    pub name: String,
    /// `ebpf` or `bridge`, once chosen.
    pub backend: String,
    /// Why this backend (spec, or what auto found).
    pub backend_reason: String,
    /// The VlanConfig that gives this node its uplink, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan_config: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<UplinkInfo>,
    /// Why the network cannot serve ports on this node, if it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// VLANs in use on this node (0 = untagged).
    pub vlans: Vec<u16>,
    pub ports: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UplinkInfo {
    pub nics: Vec<String>,
    /// The NIC carrying traffic now (eBPF active-backup), or the bond.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<String>,
    pub mtu: u32,
    pub bond_mode: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreStatus {
    /// `embedded` (redb file) today; `etcd` and `kubernetes` later.
    pub backend: String,
    pub location: String,
    pub healthy: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    pub revision: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatapathStatus {
    /// `ebpf-tcx`: programs attached through tcx links pinned on bpffs
    /// (adopted by a restarted or upgraded netd).
    pub mode: String,
    pub healthy: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// bpffs directory holding this instance's pins.
    pub pin_dir: String,
    pub programs: Vec<String>,
    pub maps: Vec<MapUsage>,
    /// Where the programs run on this node: one entry per hook.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<DatapathAttachment>,
}

/// One hook of one interface running a datapath program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatapathAttachment {
    pub ifname: String,
    pub ifindex: u32,
    /// `ingress` or `egress`.
    pub hook: String,
    /// `tcx`: a pinned tcx link; `tc`: a cls_bpf filter an older netd
    /// left, migrated when the port is attached again.
    pub mode: String,
    /// The tcx link's id (0 for `tc`): stays the same across restarts
    /// and upgrades.
    pub link_id: u32,
    /// The program's id: changes when an upgrade changes the program.
    pub prog_id: u32,
    /// The program's name as the kernel keeps it (15 bytes at most).
    pub program: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MapUsage {
    pub name: String,
    pub entries: u32,
    pub max_entries: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FirewallStatus {
    /// `nftables`.
    pub backend: String,
    pub table: String,
    pub healthy: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortSummary {
    pub total: u32,
    pub ready: u32,
    pub pending: u32,
    pub lost: u32,
    #[serde(default)]
    pub deleting: u32,
}

/// One network as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInfo {
    pub name: String,
    /// `management` today.
    pub kind: String,
    /// The node's subnet of this network, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<IpNet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_cidr: Option<IpNet>,
    pub mtu: u32,
    pub masquerade: bool,
    pub ports: u32,
    pub addresses_allocated: u32,
    pub addresses_total: u32,
    /// Cross-node transport: `vxlan` or `host-gw`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// The link and address carrying cross-node traffic, e.g.
    /// `eth0 198.18.0.1/24`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlay: Option<String>,
    /// The VXLAN device of this network on this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Other nodes' subnets this node routes to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_subnets: Vec<RemoteSubnet>,
    /// Why cross-node routing is incomplete, if it is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// Another node's subnet as this node routes to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteSubnet {
    pub node: String,
    pub subnet: ipnet::Ipv4Net,
    /// The node's underlay address (VXLAN endpoint or host-gw next hop).
    pub node_ip: std::net::Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep_mac: Option<crate::MacAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PortState {
    /// ADD is in progress (or was cut short by a crash and awaits cleanup).
    Pending,
    /// ADD completed; the kernel objects exist.
    Ready,
    /// Its host-side link vanished (the pod's netns is gone) but no DEL
    /// or GC has released it yet.
    Lost,
    /// DEL or GC answered; the kernel is still removing its link, and its
    /// address is released once the link is gone.
    Deleting,
}

/// `GET /v1/ports`: one entry per attachment on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortInfo {
    pub network_name: String,
    /// The network resource the port joins.
    pub network: String,
    pub kind: String,
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    #[serde(default, skip_serializing_if = "PodRef::is_empty")]
    pub pod: PodRef,
    pub host_ifname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ifindex: Option<u32>,
    pub mac: MacAddr,
    pub ips: Vec<IpNet>,
    pub mtu: u32,
    pub state: PortState,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counters: Option<PortCounters>,
    /// VLAN ports: the access VLAN (0 = untagged); absent for trunks and
    /// management ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// VLAN trunk ports: the allowed VLANs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trunk: Vec<crate::cni::VlanRange>,
}

/// Per-port datapath counters, from the pod's point of view.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortCounters {
    /// Frames the pod sent (seen entering the host side).
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames delivered to the pod.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Of tx: delivered straight to a local pod by the datapath.
    pub redirected_packets: u64,
    pub drops: BTreeMap<String, u64>,
}

/// A resource listing: `GET /v1/resources/{kind}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceList {
    pub items: Vec<serde_json::Value>,
}

/// `GET /v1/dhcp/leases[?network=]`: one DHCP lease (shared state: every
/// node's leases of the pool, `node` says whose responder handed it out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseInfo {
    pub pool: String,
    pub network: String,
    pub ip: std::net::Ipv4Addr,
    pub mac: MacAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// offered, bound or declined.
    pub state: String,
    /// Unix seconds.
    pub expires_at: u64,
    pub expired: bool,
    pub node: String,
    /// The address is this MAC's reservation.
    pub reserved: bool,
}

/// `GET /v1/dhcp/clients`: an address this node holds as a DHCP client
/// (a VlanInterface with `dhcp: true`, later VIPs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DhcpClientInfo {
    /// What the address is for: `vif:<VlanInterface>`.
    pub owner: String,
    pub interface: String,
    pub mac: MacAddr,
    /// acquiring, bound, renewing, rebinding, or waiting (after a failure).
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<ipnet::Ipv4Net>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<std::net::Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<std::net::Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<std::net::Ipv4Addr>,
    /// Unix seconds; 0 when there is no lease.
    #[serde(default)]
    pub renew_at: u64,
    #[serde(default)]
    pub expires_at: u64,
    /// The last failure, if the latest attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `POST /v1/dhcp/discover`: find a VLAN's subnet and gateway from its
/// DHCP server (Harvester's route "auto" mode), without keeping a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DiscoverRequest {
    pub cluster_network: String,
    /// 0 for the untagged network.
    pub vlan: u16,
    /// Seconds to wait for an offer (1-60, default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
}

/// What a discovery found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveredNetwork {
    pub cluster_network: String,
    pub vlan: u16,
    pub cidr: ipnet::Ipv4Net,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<std::net::Ipv4Addr>,
    pub server: std::net::Ipv4Addr,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<std::net::Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    /// Unix seconds.
    pub discovered_at: u64,
}

/// `GET /v1/dhcp/pools`: a pool as this node serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolInfo {
    pub name: String,
    pub network: String,
    pub server_ip: std::net::Ipv4Addr,
    pub cidr: ipnet::Ipv4Net,
    pub capacity: u32,
    /// Unexpired bound leases, cluster-wide.
    pub bound: u32,
    /// `<cluster network>/<vlan>` of this node's responder; absent when no
    /// VM of the pool's network is on this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responder: Option<String>,
    /// Why this node cannot serve the pool's VMs (e.g. a kernel-bridge
    /// cluster network, which cannot steer DHCP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// `GET /v1/vips`: a VirtualIP as this node sees it.
/// `GET /v1/bgp`: this node's BGP speaker (BGP-mode VIPs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpInfo {
    pub node: String,
    /// While a speaker runs.
    pub local_as: Option<u32>,
    pub router_id: Option<std::net::Ipv4Addr>,
    /// BGPPeer resources whose nodeSelector picks this node.
    pub selected_peers: Vec<String>,
    /// Why there is no speaker although peers select this node.
    pub problem: Option<String>,
    pub peers: Vec<BgpPeerInfo>,
    /// Host routes advertised, each with the VIPs behind it.
    pub routes: Vec<(String, Vec<String>)>,
}

/// One BGP session, as the speaker sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpPeerInfo {
    pub name: String,
    pub address: std::net::IpAddr,
    pub port: u16,
    pub remote_as: u32,
    /// RFC 4271 state: Idle, Connect, Active, OpenSent, OpenConfirm,
    /// Established.
    pub state: String,
    /// Time in the current state.
    pub uptime_ms: u64,
    /// Why the last session or connection attempt ended.
    pub last_error: Option<String>,
    pub local_address: Option<std::net::IpAddr>,
    pub peer_id: Option<std::net::Ipv4Addr>,
    pub hold_time: Option<u16>,
    pub keepalive: Option<u16>,
    pub families: Vec<String>,
    /// Prefixes advertised to this peer now.
    pub advertised: Vec<String>,
    /// Why some prefixes are not sent to this peer.
    pub notes: Vec<String>,
    pub updates_sent: u64,
    pub updates_received: u64,
    pub notifications_sent: u64,
    pub notifications_received: u64,
    pub connect_attempts: u64,
    /// How often the session reached Established.
    pub established_count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VipInfo {
    pub name: String,
    /// The static address, the one allocated from its pool, or the one
    /// leased by DHCP (`address: dhcp`, as last recorded in the store).
    pub address: Option<std::net::IpAddr>,
    /// `arp` or `bgp`.
    pub mode: String,
    pub interface: Option<String>,
    /// The node the election record names, if any.
    pub holder: Option<String>,
    pub holder_since_ms: Option<u64>,
    pub epoch: Option<u64>,
    /// The node answering.
    pub node: String,
    /// This node: holder, standby, unhealthy, ineligible, fenced, problem.
    pub role: String,
    pub healthy: bool,
    pub health_error: Option<String>,
    pub problem: Option<String>,
    /// Gratuitous ARP / NA rounds sent in the current hold.
    pub announcements: u64,
    pub held_for_ms: Option<u64>,
    /// Live nodes ready to hold it, as their heartbeats say.
    pub candidates: Vec<String>,
    /// `local` (one node, embedded store) or `store` (etcd).
    pub backend: String,
    pub heartbeat_error: Option<String>,
    /// `address: dhcp` only: the lease as this node knows it (the holder:
    /// its client's state; the others: the last lease recorded in the
    /// store), with the VIP's MAC and server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp: Option<String>,
    /// On the holder: the kernel fence of its address ("kernel fence in
    /// 612 ms", "no kernel fence: <why>").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<String>,
}

/// One member of the cluster as `GET /v1/nodes` shows it (the node
/// records under `/furrow/nodes/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeMemberInfo {
    pub name: String,
    pub instance: String,
    /// `ready`, or `gone` once its record has not been renewed for the
    /// grace period.
    pub state: String,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub addresses: Vec<String>,
    pub started_at_ms: u64,
    pub last_seen_ms: u64,
    /// Management subnets the node leases, as `network=a.b.c.d/len`.
    #[serde(default)]
    pub subnets: Vec<String>,
    /// This is the node answering.
    #[serde(default)]
    pub this_node: bool,
}

/// The CNI spec's rule for container IDs and network names:
/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
pub fn is_cni_identifier(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-')
}

/// Why `name` cannot be an interface name (the kernel's dev_valid_name:
/// 1-15 bytes, not `.` or `..`, no '/', ':', whitespace or NUL), or None.
pub fn ifname_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 15 {
        Some("longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("\".\" and \"..\" are not interface names")
    } else if name.contains('/') {
        Some("it contains '/'")
    } else if name.contains(':') {
        Some("it contains ':'")
    } else if name.contains('\0') {
        Some("it contains a NUL byte")
    } else if name.chars().any(char::is_whitespace) {
        Some("it contains whitespace")
    } else {
        None
    }
}

impl AttachmentRequest {
    /// What netd checks on every ADD, DEL and CHECK: the identifiers end
    /// up in store keys and kernel names. (The plugin checks them too, but
    /// the API can be called directly.)
    pub fn validate_ids(&self) -> Result<(), crate::ApiError> {
        use crate::error::code;
        if !is_cni_identifier(&self.container_id) {
            return Err(crate::ApiError::new(
                code::INVALID_ENV,
                format!("CNI_CONTAINERID {:?} is invalid: expected letters, digits, '_', '.' or '-', starting with a letter or digit", self.container_id),
            ));
        }
        if let Some(why) = ifname_problem(&self.ifname) {
            return Err(crate::ApiError::new(
                code::INVALID_ENV,
                format!("CNI_IFNAME {:?} is invalid: {why}", self.ifname),
            ));
        }
        validate_network_name(&self.network_name)
    }

    /// ADD and CHECK: the identifiers, a netns, and the attachment's
    /// options within the ranges the plugin enforces. (DEL is lenient: the
    /// plugin passes on what it cannot parse so the runtime can still
    /// clean up.)
    pub fn validate(&self) -> Result<(), crate::ApiError> {
        use crate::cni::VLAN_MAX;
        use crate::resource::{FieldError, MTU_MAX, MTU_MIN};
        use crate::ApiError;
        self.validate_ids()?;
        if self.netns.as_deref().is_none_or(str::is_empty) {
            return Err(ApiError::new(
                crate::error::code::INVALID_ENV,
                "CNI_NETNS is missing: ADD and CHECK need the container's network namespace",
            ));
        }
        let mut errs: Vec<FieldError> = Vec::new();
        fn bad(errs: &mut Vec<FieldError>, field: &str, expected: String) {
            errs.push(FieldError {
                field: field.to_string(),
                expected,
            })
        }
        let mtu = match &self.attachment {
            AttachmentSpec::Management(m) => {
                crate::resource::validate_name(
                    "attachment.network",
                    &m.network,
                    crate::resource::MAX_NAME_LEN,
                    &mut errs,
                );
                m.mtu
            }
            AttachmentSpec::Vlan(v) => {
                crate::resource::validate_name(
                    "attachment.clusterNetwork",
                    &v.cluster_network,
                    crate::resource::CLUSTER_NETWORK_NAME_MAX,
                    &mut errs,
                );
                if v.vlan > VLAN_MAX {
                    bad(
                        &mut errs,
                        "attachment.vlan",
                        format!("{}: expected 0 (untagged) to {VLAN_MAX}", v.vlan),
                    );
                }
                for (i, r) in v.trunk.iter().enumerate() {
                    if r.min == 0 || r.min > r.max || r.max > VLAN_MAX {
                        bad(
                            &mut errs,
                            &format!("attachment.trunk[{i}]"),
                            format!(
                                "{}-{}: expected VLAN IDs from 1 to {VLAN_MAX}, min <= max",
                                r.min, r.max
                            ),
                        );
                    }
                }
                // The plugin checks these too; the API is an entry of its own.
                for (path, why) in crate::cni::AddressPair::check_list(&v.allowed_address_pairs) {
                    bad(
                        &mut errs,
                        &format!("attachment.allowedAddressPairs{path}"),
                        why,
                    );
                }
                if !v.port_security && !v.allowed_address_pairs.is_empty() {
                    bad(
                        &mut errs,
                        "attachment.allowedAddressPairs",
                        "only with port security on (portSecurity: false allows any address)"
                            .into(),
                    );
                }
                v.mtu
            }
        };
        if let Some(m) = mtu.filter(|m| !(MTU_MIN..=MTU_MAX).contains(m)) {
            bad(
                &mut errs,
                "attachment.mtu",
                format!("{m}: expected {MTU_MIN} to {MTU_MAX}"),
            );
        }
        match errs.first() {
            None => Ok(()),
            Some(e) => Err(ApiError::invalid_field(&e.field, &e.expected)),
        }
    }
}

/// A CNI network name ([`is_cni_identifier`]).
pub fn validate_network_name(name: &str) -> Result<(), crate::ApiError> {
    if is_cni_identifier(name) {
        Ok(())
    } else {
        Err(crate::ApiError::invalid_field(
            "name",
            format!("{name:?} is not a valid network name: expected letters, digits, '_', '.' or '-', starting with a letter or digit"),
        ))
    }
}

impl GcRequest {
    pub fn validate(&self) -> Result<(), crate::ApiError> {
        validate_network_name(&self.network_name)
    }
}

impl DiscoverRequest {
    /// Seconds to wait when the request does not say.
    pub const DEFAULT_TIMEOUT: u32 = 10;

    pub fn validate(&self) -> Result<(), crate::ApiError> {
        use crate::ApiError;
        let timeout = self.timeout_seconds.unwrap_or(Self::DEFAULT_TIMEOUT);
        if !(1..=60).contains(&timeout) {
            return Err(ApiError::invalid_field(
                "timeoutSeconds",
                format!("{timeout} out of range: expected 1 to 60"),
            ));
        }
        if self.vlan > crate::cni::VLAN_MAX {
            return Err(ApiError::invalid_field(
                "vlan",
                format!(
                    "{} out of range: expected 0 (untagged) or 1 to 4094",
                    self.vlan
                ),
            ));
        }
        let mut errs = Vec::new();
        crate::resource::validate_name(
            "clusterNetwork",
            &self.cluster_network,
            crate::resource::CLUSTER_NETWORK_NAME_MAX,
            &mut errs,
        );
        match errs.first() {
            None => Ok(()),
            Some(e) => Err(ApiError::invalid_field(&e.field, &e.expected)),
        }
    }
}

#[cfg(test)]
mod validation_tests {
    use super::*;
    use crate::cni::{ManagementAttachment, VlanAttachment, VlanRange};

    fn req(attachment: AttachmentSpec) -> AttachmentRequest {
        AttachmentRequest {
            container_id: "c1".into(),
            ifname: "eth0".into(),
            netns: Some("/run/netns/x".into()),
            network_name: "n".into(),
            attachment,
            pod: Default::default(),
            mac: None,
            ips: vec![],
            prev_result: None,
        }
    }

    fn field(r: Result<(), crate::ApiError>) -> String {
        let e = r.unwrap_err();
        e.msg.split(':').next().unwrap().to_string()
    }

    #[test]
    fn requests_are_checked_like_the_plugin_checks_them() {
        let m = |network: &str, mtu| {
            AttachmentSpec::Management(ManagementAttachment {
                network: network.into(),
                mtu,
                ip_masq: true,
                dns: Default::default(),
            })
        };
        assert!(req(m("mgmt", None)).validate().is_ok());
        assert_eq!(field(req(m("Mgmt", None)).validate()), "attachment.network");
        assert_eq!(
            field(req(m("mgmt", Some(100))).validate()),
            "attachment.mtu"
        );
        let v = |vlan, trunk: Vec<VlanRange>| {
            AttachmentSpec::Vlan(VlanAttachment {
                cluster_network: "data".into(),
                vlan,
                trunk,
                mtu: None,
                promisc: false,
                dhcp_trusted: false,
                port_security: true,
                allowed_address_pairs: Vec::new(),
                dns: Default::default(),
            })
        };
        assert!(req(v(100, vec![])).validate().is_ok());
        assert_eq!(field(req(v(4095, vec![])).validate()), "attachment.vlan");
        let r = VlanRange { min: 10, max: 5 };
        assert_eq!(field(req(v(0, vec![r])).validate()), "attachment.trunk[0]");
        let mut no_netns = req(v(1, vec![]));
        no_netns.netns = None;
        assert!(no_netns.validate().is_err());
        assert!(no_netns.validate_ids().is_ok());
        for bad in [
            "",
            "a/b",
            "a:b",
            "a b",
            "a\u{b}b",
            "a\0b",
            "..",
            "abcdefghijklmnop",
        ] {
            let mut r = req(v(1, vec![]));
            r.ifname = bad.into();
            assert!(r.validate_ids().is_err(), "{bad:?}");
            assert!(ifname_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn discover_requests() {
        let d = |vlan, t| DiscoverRequest {
            cluster_network: "data".into(),
            vlan,
            timeout_seconds: t,
        };
        assert!(d(0, None).validate().is_ok());
        assert_eq!(field(d(4095, None).validate()), "vlan");
        assert_eq!(field(d(1, Some(0)).validate()), "timeoutSeconds");
        let mut x = d(1, None);
        x.cluster_network = "../x".into();
        assert_eq!(field(x.validate()), "clusterNetwork");
    }
}
