/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Recognising DHCPv4 (BOOTP) frames by their UDP ports. */
#pragma once

#include <stddef.h>
#include <linux/in.h>

#include "common.h"

#define DHCP_SERVER_PORT 67

/* Fragment offset bits of iphdr.frag_off (host order); include/net/ip.h
 * is not UAPI. */
#define IPV4_FRAG_OFFSET 0x1fff

enum dhcp_kind {
	DHCP_NONE = 0,
	/* UDP destination port 67, source port not 67: client to server
	 * (DISCOVER, REQUEST, DECLINE, RELEASE, INFORM). */
	DHCP_CLIENT = 1,
	/* UDP source port 67: a server's reply (OFFER, ACK, NAK), or a relay
	 * agent's traffic. */
	DHCP_SERVER = 2,
};

/* What an untagged IPv4 frame is, by its UDP ports. Reads with
 * bpf_skb_load_bytes (works on non-linear frames, never out of bounds:
 * a frame too short for a header is DHCP_NONE). IPv4 options (IHL > 5)
 * are skipped; a non-first fragment carries no UDP header and is never
 * DHCP; the first fragment of a fragmented datagram is judged by its
 * header (a reply dropped there cannot be reassembled). The IP header is
 * not validated further (checksum, total length): a frame the receiver
 * would drop anyway may be classified, never the other way round. */
static __always_inline int dhcp_classify(struct __sk_buff *skb)
{
	/* The ethertype and the IP header in one load. */
	struct {
		__be16 proto;
		struct iphdr ip;
	} __attribute__((packed)) h;
	__be16 ports[2];
	__u32 off;

	if (bpf_skb_load_bytes(skb, offsetof(struct ethhdr, h_proto), &h, sizeof(h)))
		return DHCP_NONE;
	if (h.proto != bpf_htons(ETH_P_IP))
		return DHCP_NONE;
	if (h.ip.version != 4 || h.ip.ihl < 5 || h.ip.protocol != IPPROTO_UDP)
		return DHCP_NONE;
	if (h.ip.frag_off & bpf_htons(IPV4_FRAG_OFFSET))
		return DHCP_NONE;
	off = ETH_HLEN + (__u32)h.ip.ihl * 4;
	if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)))
		return DHCP_NONE;
	if (ports[0] == bpf_htons(DHCP_SERVER_PORT))
		return DHCP_SERVER;
	if (ports[1] == bpf_htons(DHCP_SERVER_PORT))
		return DHCP_CLIENT;
	return DHCP_NONE;
}
