// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The kernel half of VIP fencing: a tc egress filter (cls_bpf,
 * direct-action) on every interface that carries a floating VIP.
 *
 * netd may hold a VIP only until its election's fencing bound
 * (valid_until); its own loop removes the address then. If netd cannot
 * run (stopped, starved, stuck) the address stays on the interface and
 * the kernel keeps answering ARP/NDP for it while another node takes the
 * VIP over. This program enforces the bound without netd: from the
 * deadline netd last wrote for an address (furrow_vip_deadlines, in
 * bpf_ktime_get_ns() nanoseconds, i.e. CLOCK_MONOTONIC), it drops what
 * would tell the network this node has the address:
 *
 *   - ARP whose sender IP is the VIP (replies, gratuitous ARP in request
 *     and reply form, and requests the node sends from it);
 *   - IPv4 packets from the VIP;
 *   - ICMPv6 neighbour advertisements whose target is the VIP (solicited
 *     or not, whatever their source);
 *   - IPv6 packets from the VIP.
 *
 * Everything else, and everything before the deadline, returns
 * TC_ACT_UNSPEC: "no verdict", so the filters after this one on the hook
 * (Furrow's datapath programs at pref 240 on an L2 uplink, anything else)
 * still run. The frame is never modified. Frames with up to two VLAN
 * tags in the packet data (802.1Q, 802.1ad) are recognised; a tag in skb
 * metadata is not in the data anyway. Drops are counted per reason in
 * furrow_vip_fence_drops (per CPU).
 *
 * Packets are read with bpf_skb_load_bytes: no pulls, so non-linear
 * frames are seen as they are and the frame is left exactly as it came. */

#include <stddef.h>

#include "lib/common.h"
#include "lib/vlan.h"

#ifndef ETH_P_ARP
#define ETH_P_ARP 0x0806
#endif
#ifndef ETH_P_IPV6
#define ETH_P_IPV6 0x86DD
#endif

#define ARPHRD_ETHER 1
#define FENCE_IPPROTO_ICMPV6 58
#define ICMPV6_NA 136

/* Mirrored by RawFenceKey in ebpf/src/fence.rs. */
#define FENCE_FAMILY_V4 4
#define FENCE_FAMILY_V6 6

struct vip_fence_key {
	__u32 family; /* FENCE_FAMILY_V4 or FENCE_FAMILY_V6 */
	__u8 addr[16]; /* network order; IPv4 in the first 4 bytes, the rest 0 */
};
_Static_assert(sizeof(struct vip_fence_key) == 20, "struct vip_fence_key: mirrored by RawFenceKey");

/* Mirrored by RawFenceValue in ebpf/src/fence.rs. */
struct vip_fence_value {
	/* From this bpf_ktime_get_ns() value on, the address is fenced.
	 * ~0: never (a node on its own has nobody to fence against). */
	__u64 deadline_ns;
};
_Static_assert(sizeof(struct vip_fence_value) == 8, "struct vip_fence_value: mirrored by RawFenceValue");

/* Indexes of furrow_vip_fence_drops (FenceDrops in ebpf/src/fence.rs). */
enum fence_reason {
	FENCE_DROP_ARP = 0,
	FENCE_DROP_IPV4 = 1,
	FENCE_DROP_NA = 2,
	FENCE_DROP_IPV6 = 3,
	FENCE_REASONS = 4,
};

/* The addresses this node holds, with their deadlines. Pinned (or not)
 * by the loader, which passes the pin path explicitly. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FURROW_VIP_FENCE_MAX);
	__type(key, struct vip_fence_key);
	__type(value, struct vip_fence_value);
} furrow_vip_deadlines SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FENCE_REASONS);
	__type(key, __u32);
	__type(value, __u64);
} furrow_vip_fence_drops SEC(".maps");

/* A zeroed key of `family` (built in place: an initializer would become a
 * template in .rodata, i.e. one more map). */
static __always_inline void fence_key_init(struct vip_fence_key *key, __u32 family)
{
	__builtin_memset(key, 0, sizeof(*key));
	key->family = family;
}

/* 1 if `key` is a VIP whose deadline has passed. */
static __always_inline int fence_passed(const struct vip_fence_key *key)
{
	struct vip_fence_value *v = bpf_map_lookup_elem(&furrow_vip_deadlines, key);
	__u64 deadline;

	if (!v)
		return 0;
	deadline = v->deadline_ns;
	return bpf_ktime_get_ns() >= deadline;
}

static __always_inline int fence_drop(__u32 reason)
{
	__u64 *n = bpf_map_lookup_elem(&furrow_vip_fence_drops, &reason);

	if (n)
		*n += 1; /* per CPU: no atomics needed */
	return TC_ACT_SHOT;
}

/* ARP over Ethernet for IPv4: sender IP at 14 bytes into the header. */
static __always_inline int fence_arp(struct __sk_buff *skb, __u32 off)
{
	struct vip_fence_key key;
	struct {
		__be16 hrd;
		__be16 pro;
		__u8 hln;
		__u8 pln;
		__be16 op;
	} arp;

	if (bpf_skb_load_bytes(skb, off, &arp, sizeof(arp)) < 0)
		return TC_ACT_UNSPEC;
	if (arp.hrd != bpf_htons(ARPHRD_ETHER) || arp.pro != bpf_htons(ETH_P_IP) ||
	    arp.hln != ETH_ALEN || arp.pln != 4)
		return TC_ACT_UNSPEC;
	fence_key_init(&key, FENCE_FAMILY_V4);
	if (bpf_skb_load_bytes(skb, off + sizeof(arp) + ETH_ALEN, key.addr, 4) < 0)
		return TC_ACT_UNSPEC;
	if (fence_passed(&key))
		return fence_drop(FENCE_DROP_ARP);
	return TC_ACT_UNSPEC;
}

static __always_inline int fence_ipv4(struct __sk_buff *skb, __u32 off)
{
	struct vip_fence_key key;
	__u8 vihl;

	if (bpf_skb_load_bytes(skb, off, &vihl, 1) < 0 || (vihl >> 4) != 4)
		return TC_ACT_UNSPEC;
	fence_key_init(&key, FENCE_FAMILY_V4);
	/* saddr: 12 bytes into the header. */
	if (bpf_skb_load_bytes(skb, off + 12, key.addr, 4) < 0)
		return TC_ACT_UNSPEC;
	if (fence_passed(&key))
		return fence_drop(FENCE_DROP_IPV4);
	return TC_ACT_UNSPEC;
}

static __always_inline int fence_ipv6(struct __sk_buff *skb, __u32 off)
{
	struct vip_fence_key key;
	struct {
		__be32 vtcfl;
		__be16 payload_len;
		__u8 nexthdr;
		__u8 hop_limit;
	} ip6;
	__u8 icmp_type;

	if (bpf_skb_load_bytes(skb, off, &ip6, sizeof(ip6)) < 0)
		return TC_ACT_UNSPEC;
	if ((bpf_ntohl(ip6.vtcfl) >> 28) != 6)
		return TC_ACT_UNSPEC;
	fence_key_init(&key, FENCE_FAMILY_V6);
	/* A neighbour advertisement for the VIP, from any source (the
	 * kernel answers from the target; a link-local source is possible).
	 * NDP messages carry no extension headers (RFC 4861 senders put
	 * none there), so ICMPv6 directly after the header is the one case. */
	if (ip6.nexthdr == FENCE_IPPROTO_ICMPV6 &&
	    bpf_skb_load_bytes(skb, off + 40, &icmp_type, 1) == 0 && icmp_type == ICMPV6_NA &&
	    /* type, code, checksum, flags + reserved: the target follows. */
	    bpf_skb_load_bytes(skb, off + 40 + 8, key.addr, 16) == 0 && fence_passed(&key))
		return fence_drop(FENCE_DROP_NA);
	/* saddr: 8 bytes into the header. */
	if (bpf_skb_load_bytes(skb, off + 8, key.addr, 16) < 0)
		return TC_ACT_UNSPEC;
	if (fence_passed(&key))
		return fence_drop(FENCE_DROP_IPV6);
	return TC_ACT_UNSPEC;
}

SEC("classifier")
int furrow_vip_fence(struct __sk_buff *skb)
{
	__u32 off = ETH_HLEN;
	__be16 proto;

	if (bpf_skb_load_bytes(skb, offsetof(struct ethhdr, h_proto), &proto, sizeof(proto)) < 0)
		return TC_ACT_UNSPEC;
	/* Tags still in the data (BPF_PROG_TEST_RUN, a VLAN device without
	 * offload, QinQ): skip up to two. Each tag ends with the next type. */
	if (eth_proto_is_vlan(proto)) {
		if (bpf_skb_load_bytes(skb, off + 2, &proto, sizeof(proto)) < 0)
			return TC_ACT_UNSPEC;
		off += VLAN_HLEN;
		if (eth_proto_is_vlan(proto)) {
			if (bpf_skb_load_bytes(skb, off + 2, &proto, sizeof(proto)) < 0)
				return TC_ACT_UNSPEC;
			off += VLAN_HLEN;
		}
	}
	if (proto == bpf_htons(ETH_P_ARP))
		return fence_arp(skb, off);
	if (proto == bpf_htons(ETH_P_IP))
		return fence_ipv4(skb, off);
	if (proto == bpf_htons(ETH_P_IPV6))
		return fence_ipv6(skb, off);
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
