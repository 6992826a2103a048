// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Management (pod) network datapath, attached to each pod's host-side veth
 * through tcx links (ebpf/src/tcx.rs).
 *
 * Every pod routes everything via the gateway address carried by its host
 * veth, so each frame a pod sends arrives here addressed to the host veth's
 * MAC. Frames for another pod on this node are forwarded by rewriting the
 * L2 header, decrementing the TTL and handing the frame straight to the
 * destination pod's eth0 (bpf_redirect_peer). Everything else goes to the
 * kernel unchanged: this program never drops. */

#include "lib/common.h"
#include "lib/generation.h"
#include "lib/eth.h"
#include "lib/ipv4.h"
#include "lib/stats.h"

/* Mirrored by RawMgmtEndpoint in ebpf/src/maps.rs. */
struct mgmt_endpoint {
	__u32 ifindex; /* host-side veth of the pod */
	__u8 pod_mac[ETH_ALEN];
	__u8 host_mac[ETH_ALEN];
	__u32 flags; /* reserved, 0 */
};

/* Pods on this node, by IPv4 address (network byte order). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FURROW_MAX_ENDPOINTS);
	__type(key, __u32);
	__type(value, struct mgmt_endpoint);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} furrow_mgmt_eps SEC(".maps");

SEC("classifier")
int furrow_mgmt_from_pod(struct __sk_buff *skb)
{
	struct port_stats *src = port_stats_get(skb->ifindex);
	struct port_stats *dst;
	struct mgmt_endpoint *ep;
	__u8 pod_mac[ETH_ALEN], host_mac[ETH_ALEN];
	__u32 daddr, dst_ifindex, len = skb->len;
	__u8 ttl, protocol;
	void *data, *data_end;
	struct ethhdr *eth;
	struct iphdr *ip;

	port_count_tx(src, len);

	/* Only frames the kernel itself would take as addressed to the host
	 * (not multicast, broadcast or another host's MAC) are forwarded. */
	if (skb->pkt_type != PACKET_HOST)
		return TC_ACT_OK;

	ip = ipv4_hdr(skb);
	if (!ip)
		return TC_ACT_OK;
	/* The kernel must answer with ICMP time exceeded. */
	if (ip->ttl <= 1)
		return TC_ACT_OK;

	daddr = ip->daddr;
	ep = bpf_map_lookup_elem(&furrow_mgmt_eps, &daddr);
	if (!ep)
		return TC_ACT_OK;
	/* A destination whose port is not attached (no counters entry) takes
	 * the kernel path: detaching a port is enough to stop fast-pathing
	 * towards it, whatever the endpoint map holds. */
	dst = port_stats_get(ep->ifindex);
	if (!dst)
		return TC_ACT_OK;

	dst_ifindex = ep->ifindex;
	__builtin_memcpy(pod_mac, ep->pod_mac, ETH_ALEN);
	__builtin_memcpy(host_mac, ep->host_mac, ETH_ALEN);
	ttl = ip->ttl;
	protocol = ip->protocol;

	/* Checksum first: if it fails, the frame is still intact for the kernel. */
	if (ipv4_csum_ttl_dec(skb, ttl, protocol) < 0)
		return TC_ACT_OK;

	/* The helper invalidated packet pointers; the length did not change so
	 * this check cannot fail, but the verifier needs it. */
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	ip = data + ETH_HLEN;
	if ((void *)(ip + 1) > data_end) {
		if (src)
			src->drop_other++;
		return TC_ACT_SHOT;
	}
	ip->ttl = ttl - 1;
	eth_set_addrs(eth, pod_mac, host_mac);

	if (src)
		src->redirected_packets++;
	/* The frame bypasses this veth's egress hook, so count it here. */
	port_count_rx(dst, len);
	return bpf_redirect_peer(dst_ifindex, 0);
}

SEC("classifier")
int furrow_mgmt_to_pod(struct __sk_buff *skb)
{
	port_count_rx(port_stats_get(skb->ifindex), skb->len);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
