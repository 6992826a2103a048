/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* 802.1Q tags: reading the tag of a frame wherever it is (skb metadata,
 * as the kernel leaves it after receive, or still in the packet data, as
 * BPF_PROG_TEST_RUN and some paths deliver it), and setting the tag state
 * a port needs before delivery. Tags pushed here live in skb metadata:
 * veth carries them across, a NIC without VLAN offload gets them written
 * into the frame by the stack (validate_xmit_vlan). */
#pragma once

#include "common.h"

#ifndef ETH_P_8021Q
#define ETH_P_8021Q 0x8100
#endif
#ifndef ETH_P_8021AD
#define ETH_P_8021AD 0x88A8
#endif
/* Pre-standard QinQ outer tag. */
#define ETH_P_QINQ1 0x9100

#define VLAN_VID_MASK 0x0fff
#define VLAN_VID_MAX 4094
#define VLAN_HLEN 4

static __always_inline int eth_proto_is_vlan(__be16 proto)
{
	return proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD) ||
	       proto == bpf_htons(ETH_P_QINQ1);
}

enum vlan_parse_result {
	VLAN_BAD = -1, /* 802.1ad/QinQ, stacked tags, truncated */
	VLAN_UNTAGGED = 0,
	VLAN_TAGGED = 1, /* one 802.1Q tag, *tci set */
};

/* Classifies the frame's tagging. Needs the Ethernet header pulled;
 * pulls 4 more bytes for a tag in the data (packet pointers must be
 * reloaded afterwards). */
static __always_inline int vlan_parse(struct __sk_buff *skb, __u16 *tci)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__be16 inner;

	if ((void *)(eth + 1) > data_end)
		return VLAN_BAD;
	if (skb->vlan_present) {
		if (skb->vlan_proto != bpf_htons(ETH_P_8021Q))
			return VLAN_BAD;
		/* A second tag behind the one in metadata: QinQ. */
		if (eth_proto_is_vlan(eth->h_proto))
			return VLAN_BAD;
		*tci = (__u16)skb->vlan_tci;
		return VLAN_TAGGED;
	}
	if (eth->h_proto != bpf_htons(ETH_P_8021Q))
		return eth_proto_is_vlan(eth->h_proto) ? VLAN_BAD : VLAN_UNTAGGED;

	if (!pkt_pull(skb, ETH_HLEN + VLAN_HLEN))
		return VLAN_BAD;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if (data + ETH_HLEN + VLAN_HLEN > data_end)
		return VLAN_BAD;
	__builtin_memcpy(&inner, data + ETH_HLEN + 2, sizeof(inner));
	if (eth_proto_is_vlan(inner))
		return VLAN_BAD;
	__builtin_memcpy(tci, data + ETH_HLEN, sizeof(*tci));
	*tci = bpf_ntohs(*tci);
	return VLAN_TAGGED;
}

/* Brings the frame to the wanted tag state: `want` tagged with `tci`, or
 * untagged. `*tagged` tracks the current state (the frame only ever
 * carries its own VLAN's tag, so the state is one bit). Returns 0 or a
 * negative errno from the helper. Invalidates packet pointers. */
static __always_inline int vlan_set_tag(struct __sk_buff *skb, __u8 *tagged, __u8 want, __u16 tci)
{
	long err;

	if (want == *tagged)
		return 0;
	if (want)
		err = bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), tci);
	else
		err = bpf_skb_vlan_pop(skb);
	if (err)
		return (int)err;
	*tagged = want;
	return 0;
}
