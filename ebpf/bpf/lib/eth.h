/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Ethernet helpers. */
#pragma once

#include "common.h"

static __always_inline void eth_set_addrs(struct ethhdr *eth, const __u8 *dst, const __u8 *src)
{
	__builtin_memcpy(eth->h_dest, dst, ETH_ALEN);
	__builtin_memcpy(eth->h_source, src, ETH_ALEN);
}

/* A MAC address as an integer (the 6 bytes in memory order, upper two
 * bytes zero), for comparisons without a memcmp. */
static __always_inline __u64 mac_u64(const __u8 *mac)
{
	__u64 v = 0;

	__builtin_memcpy(&v, mac, ETH_ALEN);
	return v;
}

static __always_inline int mac_is_multicast(const __u8 *mac)
{
	return mac[0] & 1;
}

/* 01:80:c2:00:00:00-0f: IEEE 802.1D reserved group addresses (STP, LACP,
 * 802.1X, LLDP...). A bridge never forwards them. */
static __always_inline int mac_is_link_local(const __u8 *mac)
{
	return mac[0] == 0x01 && mac[1] == 0x80 && mac[2] == 0xc2 && mac[3] == 0 &&
	       mac[4] == 0 && (mac[5] & 0xf0) == 0;
}
