/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* IPv4 parsing and header rewrite helpers. */
#pragma once

#include <stddef.h>

#include "common.h"

#define IPV4_CSUM_OFF (ETH_HLEN + offsetof(struct iphdr, check))
#define IPV4_TTL_OFF (ETH_HLEN + offsetof(struct iphdr, ttl))

/* Returns the IPv4 header following the Ethernet header if the frame is a
 * well-formed IPv4 packet the kernel would accept (version, IHL, total
 * length within the frame), NULL otherwise. Pulls the header into the linear
 * area if needed, so packet pointers must be reloaded by the caller. */
static __always_inline struct iphdr *ipv4_hdr(struct __sk_buff *skb)
{
	void *data, *data_end;
	struct ethhdr *eth;
	struct iphdr *ip;
	__u32 tot_len;

	if (!pkt_pull(skb, ETH_HLEN + sizeof(struct iphdr)))
		return NULL;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	ip = data + ETH_HLEN;
	if ((void *)(ip + 1) > data_end)
		return NULL;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return NULL;
	if (ip->version != 4 || ip->ihl < 5)
		return NULL;
	tot_len = bpf_ntohs(ip->tot_len);
	/* ip_rcv would drop these; let it, so its counters see them. */
	if (tot_len < (__u32)ip->ihl * 4 || tot_len > skb->len - ETH_HLEN)
		return NULL;
	return ip;
}

/* The 16-bit header word holding TTL and protocol, as stored (network
 * order), which is what bpf_l3_csum_replace expects. */
static __always_inline __u16 ipv4_ttl_word(__u8 ttl, __u8 protocol)
{
	__u8 w[2] = { ttl, protocol };
	__u16 word;

	__builtin_memcpy(&word, w, sizeof(word));
	return word;
}

/* Patches the header checksum for a TTL decrement, before the TTL itself is
 * written: if the helper fails, the frame is still untouched. */
static __always_inline int ipv4_csum_ttl_dec(struct __sk_buff *skb, __u8 ttl, __u8 protocol)
{
	return bpf_l3_csum_replace(skb, IPV4_CSUM_OFF, ipv4_ttl_word(ttl, protocol),
				   ipv4_ttl_word(ttl - 1, protocol), sizeof(__u16));
}
