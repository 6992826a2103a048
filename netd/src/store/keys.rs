//! The store's key layout, in one place so every backend and every
//! reader agrees. All keys live under `/furrow/`.

/// A resource document: `/furrow/resources/<Kind>/<name>`.
pub fn resource(kind: &str, name: &str) -> String {
    format!("/furrow/resources/{kind}/{name}")
}

pub fn resources_of(kind: &str) -> String {
    format!("/furrow/resources/{kind}/")
}

/// A node's lease on one subnet of a management network:
/// `/furrow/subnets/<network>/<a.b.c.d-len>` holding the owning node.
pub fn subnet_lease(network: &str, subnet: &ipnet::Ipv4Net) -> String {
    format!(
        "/furrow/subnets/{network}/{}-{}",
        subnet.network(),
        subnet.prefix_len()
    )
}

pub fn subnet_leases_of(network: &str) -> String {
    format!("/furrow/subnets/{network}/")
}

/// One allocated address of a network: `/furrow/ipam/<network>/<ip>`.
pub fn allocation(network: &str, ip: std::net::IpAddr) -> String {
    format!("/furrow/ipam/{network}/{ip}")
}

pub fn allocations_of(network: &str) -> String {
    format!("/furrow/ipam/{network}/")
}

/// One attachment on a node:
/// `/furrow/ports/<node>/<cni network name>/<container id>/<ifname>`.
/// Container IDs, CNI network names and ifnames are validated to contain
/// no '/', so the key splits unambiguously.
pub fn port(node: &str, network_name: &str, container_id: &str, ifname: &str) -> String {
    format!("/furrow/ports/{node}/{network_name}/{container_id}/{ifname}")
}

pub fn ports_of_node(node: &str) -> String {
    format!("/furrow/ports/{node}/")
}

pub fn ports_of_network(node: &str, network_name: &str) -> String {
    format!("/furrow/ports/{node}/{network_name}/")
}

/// What netd keeps of a NetworkAttachmentDefinition (`--store kubernetes`):
/// `/furrow/nads/<namespace>/<name>`.
pub fn network_attachment(namespace: &str, name: &str) -> String {
    format!("/furrow/nads/{namespace}/{name}")
}

pub const NETWORK_ATTACHMENTS: &str = "/furrow/nads/";
