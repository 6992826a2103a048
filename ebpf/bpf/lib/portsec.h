/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Port security of VM ports: what a port may claim to be. netd gives a
 * VM port an entry in furrow_l2_psec (its MAC, the MACs of its allowed
 * address pairs, which address families are enforced) and its allowed
 * addresses in two LPM tries keyed by (ifindex, address): the addresses
 * netd knows the VM holds (a DHCP lease bound by Furrow's responder, a
 * reservation), its allowed address pairs (a VIP, a prefix), and for IPv6
 * the EUI-64 link-local address of each of its MACs. Each allowed address
 * names the MAC that may use it.
 *
 * A port without an entry (port security off, uplinks, node ports) is
 * not checked. For a port with one, after the frame is classified into a
 * VLAN and its tag removed (a trunk's inner frame is judged), before MAC
 * learning (a forged frame teaches the switch nothing):
 *  - the source MAC must be one of the port's MACs (drop_spoof_mac);
 *  - ARP: the sender MAC must be one of them, and with IPv4 enforced the
 *    sender address must be allowed for that MAC, or 0.0.0.0 (a probe)
 *    (drop_spoof_arp): a gratuitous ARP for a neighbour's address fails;
 *  - IPv4, when enforced: the source must be allowed for the source MAC;
 *    0.0.0.0 only for DHCP client frames (drop_spoof_ipv4). Enforced with
 *    no address yet (a VM waiting for its DHCP lease): DHCP and ARP
 *    probes pass, nothing else;
 *  - IPv6, when enforced: the source must be allowed for the source MAC;
 *    :: only for ICMPv6 router/neighbour solicitations and MLD reports
 *    (duplicate address detection) (drop_spoof_ipv6);
 *  - neighbour discovery (router/neighbour solicitations and
 *    advertisements): a source or target link-layer address option must
 *    be one of the port's MACs; with IPv6 enforced, a neighbour
 *    advertisement's target must be allowed for that MAC (drop_spoof_nd);
 *  - router advertisements only from trusted ports (the RA guard,
 *    drop_ra_guard), also when hidden behind extension headers: an IPv6
 *    first fragment whose header chain cannot be followed to its upper
 *    layer header is dropped too (RFC 7113).
 * Other ethertypes pass once the source MAC is right.
 *
 * The most specific allowed prefix decides: an address inside a pair's
 * prefix that is also one of the port's own addresses is allowed for the
 * port's MAC only. Layouts are mirrored in ebpf/src/l2_psec.rs. */
#pragma once

#include <linux/in.h>

#include "common.h"
#include "eth.h"
#include "dhcp.h"

/* l2_psec.flags */
#define L2_PSEC_F_IPV4 0x1 /* IPv4 sources (and ARP senders) are checked */
#define L2_PSEC_F_IPV6 0x2 /* IPv6 sources (and NA targets) are checked */

struct l2_psec {
	__u32 flags; /* L2_PSEC_F_* */
	__u8 mac[ETH_ALEN]; /* the port's own MAC */
	__u8 n_macs; /* entries of macs[] in use */
	__u8 _pad0;
	__u8 macs[FURROW_L2_PSEC_MAX_MACS][ETH_ALEN]; /* allowed address pairs' MACs */
	__u32 _pad1;
};
_Static_assert(sizeof(struct l2_psec) == 64, "struct l2_psec: mirrored by RawL2Psec");

/* LPM trie keys: prefixlen counts the ifindex's 32 bits too (an entry
 * for ADDR/N has prefixlen 32 + N), so a lookup only ever matches the
 * port's own entries. */
struct l2_psec_v4_key {
	__u32 prefixlen;
	__u32 ifindex;
	__u8 addr[4];
};
struct l2_psec_v6_key {
	__u32 prefixlen;
	__u32 ifindex;
	__u8 addr[16];
};

struct l2_psec_addr {
	__u8 mac[ETH_ALEN]; /* the MAC that may use the address */
	__u16 flags; /* reserved, 0 */
};
_Static_assert(sizeof(struct l2_psec_v4_key) == 12, "mirrored by RawPsecV4Key");
_Static_assert(sizeof(struct l2_psec_v6_key) == 24, "mirrored by RawPsecV6Key");
_Static_assert(sizeof(struct l2_psec_addr) == 8, "mirrored by RawPsecAddr");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, FURROW_L2_MAX_PORTS);
	__type(key, __u32); /* ifindex */
	__type(value, struct l2_psec);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} furrow_l2_psec SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, FURROW_L2_PSEC_MAX_ADDRS);
	__type(key, struct l2_psec_v4_key);
	__type(value, struct l2_psec_addr);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} furrow_l2_psec_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, FURROW_L2_PSEC_MAX_ADDRS);
	__type(key, struct l2_psec_v6_key);
	__type(value, struct l2_psec_addr);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} furrow_l2_psec_v6 SEC(".maps");

#ifndef ETH_P_ARP
#define ETH_P_ARP 0x0806
#endif
#ifndef ETH_P_IPV6
#define ETH_P_IPV6 0x86DD
#endif

#define PSEC_IPPROTO_HOPOPTS 0
#define PSEC_IPPROTO_ROUTING 43
#define PSEC_IPPROTO_FRAGMENT 44
#define PSEC_IPPROTO_AH 51
#define PSEC_IPPROTO_ICMPV6 58
#define PSEC_IPPROTO_DSTOPTS 60
/* Extension headers followed to find an ICMPv6 header. */
#define PSEC_MAX_EXT_HDRS 4

#define ND_ROUTER_SOLICIT 133
#define ND_ROUTER_ADVERT 134
#define ND_NEIGHBOR_SOLICIT 135
#define ND_NEIGHBOR_ADVERT 136
#define MLD_LISTENER_REPORT 131
#define MLD2_LISTENER_REPORT 143
#define ND_OPT_SOURCE_LL 1
#define ND_OPT_TARGET_LL 2
/* ND options looked at per message (a nonce or MTU option may come
 * before the link-layer address). */
#define PSEC_MAX_ND_OPTS 4

/* Why port security dropped a frame (0: it passes). */
enum psec_result {
	PSEC_OK = 0,
	PSEC_SPOOF_MAC,
	PSEC_SPOOF_IPV4,
	PSEC_SPOOF_IPV6,
	PSEC_SPOOF_ARP,
	PSEC_SPOOF_ND,
	PSEC_RA_GUARD,
};

static __always_inline struct l2_psec *l2_psec_get(__u32 ifindex)
{
	return bpf_map_lookup_elem(&furrow_l2_psec, &ifindex);
}

/* Whether `mac` is one of the port's MACs. */
static __always_inline int psec_mac_ok(const struct l2_psec *ps, __u64 mac)
{
	__u32 n = ps->n_macs;

	if (mac == mac_u64(ps->mac))
		return 1;
#pragma unroll
	for (int i = 0; i < FURROW_L2_PSEC_MAX_MACS; i++) {
		if (i < n && mac == mac_u64(ps->macs[i]))
			return 1;
	}
	return 0;
}

/* Whether the port may use IPv4 address `addr` (network order) from MAC
 * `mac`. */
static __always_inline int psec_v4_ok(__u32 ifindex, __be32 addr, __u64 mac)
{
	struct l2_psec_v4_key k = { .prefixlen = 64, .ifindex = ifindex };
	struct l2_psec_addr *a;

	__builtin_memcpy(k.addr, &addr, 4);
	a = bpf_map_lookup_elem(&furrow_l2_psec_v4, &k);
	return a && mac_u64(a->mac) == mac;
}

static __always_inline int psec_v6_ok(__u32 ifindex, const __u8 *addr, __u64 mac)
{
	struct l2_psec_v6_key k = { .prefixlen = 160, .ifindex = ifindex };
	struct l2_psec_addr *a;

	__builtin_memcpy(k.addr, addr, 16);
	a = bpf_map_lookup_elem(&furrow_l2_psec_v6, &k);
	return a && mac_u64(a->mac) == mac;
}

struct psec_arp {
	__be16 htype;
	__be16 ptype;
	__u8 hlen;
	__u8 plen;
	__be16 op;
	__u8 sha[ETH_ALEN];
	__u8 spa[4];
	__u8 tha[ETH_ALEN];
	__u8 tpa[4];
} __attribute__((packed));

static __noinline int psec_arp(struct __sk_buff *skb, __u32 ifindex, const struct l2_psec *ps)
{
	struct psec_arp a;
	__be32 spa;

	/* Not Ethernet/IPv4, or too short: nothing a guest needs. */
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &a, sizeof(a)) || a.htype != bpf_htons(1) ||
	    a.ptype != bpf_htons(ETH_P_IP) || a.hlen != ETH_ALEN || a.plen != 4)
		return PSEC_SPOOF_ARP;
	if (!psec_mac_ok(ps, mac_u64(a.sha)))
		return PSEC_SPOOF_ARP;
	__builtin_memcpy(&spa, a.spa, 4);
	if (spa == 0 || !(ps->flags & L2_PSEC_F_IPV4))
		return PSEC_OK;
	return psec_v4_ok(ifindex, spa, mac_u64(a.sha)) ? PSEC_OK : PSEC_SPOOF_ARP;
}

static __noinline int psec_ipv4(struct __sk_buff *skb, __u32 ifindex, const struct l2_psec *ps,
				__u64 src, int dhcp)
{
	__be32 saddr;
	__u8 vihl;

	if (!(ps->flags & L2_PSEC_F_IPV4))
		return PSEC_OK;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &vihl, 1) ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct iphdr, saddr), &saddr, 4))
		return PSEC_SPOOF_IPV4;
	if ((vihl >> 4) != 4)
		return PSEC_SPOOF_IPV4;
	if (saddr == 0)
		return dhcp == DHCP_CLIENT ? PSEC_OK : PSEC_SPOOF_IPV4;
	return psec_v4_ok(ifindex, saddr, src) ? PSEC_OK : PSEC_SPOOF_IPV4;
}

/* Link-layer address options of an ND message starting at `off` (the
 * first option): each must be one of the port's MACs; the last target
 * link-layer address seen goes to *tlla (0 if none). */
static __always_inline int psec_nd_opts(struct __sk_buff *skb, __u32 off,
					const struct l2_psec *ps, __u64 *tlla)
{
	__u8 o[8];

	*tlla = 0;
#pragma unroll
	for (int i = 0; i < PSEC_MAX_ND_OPTS; i++) {
		if (bpf_skb_load_bytes(skb, off, o, sizeof(o)))
			return PSEC_OK; /* no more options */
		if (o[1] == 0)
			return PSEC_SPOOF_ND; /* RFC 4861: invalid, receivers drop it */
		if ((o[0] == ND_OPT_SOURCE_LL || o[0] == ND_OPT_TARGET_LL) && o[1] == 1) {
			__u64 m = mac_u64(&o[2]);

			if (!psec_mac_ok(ps, m))
				return PSEC_SPOOF_ND;
			if (o[0] == ND_OPT_TARGET_LL)
				*tlla = m;
		}
		off += (__u32)o[1] * 8;
	}
	return PSEC_OK;
}

static __always_inline int psec_ext_hdr(__u8 nh)
{
	return nh == PSEC_IPPROTO_HOPOPTS || nh == PSEC_IPPROTO_ROUTING ||
	       nh == PSEC_IPPROTO_DSTOPTS || nh == PSEC_IPPROTO_FRAGMENT || nh == PSEC_IPPROTO_AH;
}

struct psec_ip6 {
	__be32 vtc_flow;
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u8 saddr[16];
} __attribute__((packed));

static __noinline int psec_ipv6(struct __sk_buff *skb, __u32 ifindex, const struct l2_psec *ps,
				__u64 src, __u8 trusted)
{
	struct psec_ip6 h;
	__u32 off = ETH_HLEN + 40;
	int icmp = -1; /* ICMPv6 type; -1: not ICMPv6; -2: cannot tell */
	__u8 nh, unspec = 1;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &h, sizeof(h)) || (h.vtc_flow & bpf_htonl(0xf0000000)) !=
									  bpf_htonl(0x60000000))
		return PSEC_SPOOF_IPV6;
	nh = h.nexthdr;
#pragma unroll
	for (int i = 0; i < PSEC_MAX_EXT_HDRS; i++) {
		__u8 e[4];

		if (!psec_ext_hdr(nh))
			break;
		if (bpf_skb_load_bytes(skb, off, e, sizeof(e))) {
			nh = 255;
			icmp = -2;
			break;
		}
		if (nh == PSEC_IPPROTO_FRAGMENT) {
			/* A later fragment carries no header chain. */
			if ((((__u16)e[2] << 8) | e[3]) & 0xfff8) {
				nh = 255;
				break;
			}
			off += 8;
		} else if (nh == PSEC_IPPROTO_AH) {
			off += ((__u32)e[1] + 2) * 4;
		} else {
			off += ((__u32)e[1] + 1) * 8;
		}
		nh = e[0];
	}
	if (nh == PSEC_IPPROTO_ICMPV6) {
		__u8 t;

		icmp = bpf_skb_load_bytes(skb, off, &t, 1) ? -2 : t;
	} else if (psec_ext_hdr(nh)) {
		icmp = -2; /* a chain longer than we follow */
	}
	if (!trusted && (icmp == ND_ROUTER_ADVERT || icmp == -2))
		return PSEC_RA_GUARD;

#pragma unroll
	for (int i = 0; i < 16; i++)
		if (h.saddr[i])
			unspec = 0;
	if (ps->flags & L2_PSEC_F_IPV6) {
		if (unspec) {
			if (icmp != ND_ROUTER_SOLICIT && icmp != ND_NEIGHBOR_SOLICIT &&
			    icmp != MLD_LISTENER_REPORT && icmp != MLD2_LISTENER_REPORT)
				return PSEC_SPOOF_IPV6;
		} else if (!psec_v6_ok(ifindex, h.saddr, src)) {
			return PSEC_SPOOF_IPV6;
		}
	}

	if (icmp == ND_ROUTER_SOLICIT || icmp == ND_NEIGHBOR_SOLICIT || icmp == ND_NEIGHBOR_ADVERT) {
		__u32 opts = off + (icmp == ND_ROUTER_SOLICIT ? 8 : 24);
		__u64 tlla;

		if (psec_nd_opts(skb, opts, ps, &tlla))
			return PSEC_SPOOF_ND;
		if (icmp == ND_NEIGHBOR_ADVERT && (ps->flags & L2_PSEC_F_IPV6)) {
			__u8 target[16];

			if (bpf_skb_load_bytes(skb, off + 8, target, sizeof(target)) ||
			    !psec_v6_ok(ifindex, target, tlla ? tlla : src))
				return PSEC_SPOOF_ND;
		}
	}
	return PSEC_OK;
}

/* Port security's verdict on an untagged frame from a port with entry
 * `ps`: PSEC_OK or the reason to drop it. `dhcp`: dhcp_classify's
 * answer; `trusted`: the port may send router advertisements. */
static __always_inline int psec_check(struct __sk_buff *skb, __u32 ifindex, const struct l2_psec *ps,
				      const __u8 *src, int dhcp, __u8 trusted)
{
	__u64 s = mac_u64(src);
	__be16 proto;

	if (!psec_mac_ok(ps, s))
		return PSEC_SPOOF_MAC;
	if (bpf_skb_load_bytes(skb, offsetof(struct ethhdr, h_proto), &proto, sizeof(proto)))
		return PSEC_OK;
	if (proto == bpf_htons(ETH_P_ARP))
		return psec_arp(skb, ifindex, ps);
	if (proto == bpf_htons(ETH_P_IP))
		return psec_ipv4(skb, ifindex, ps, s, dhcp);
	if (proto == bpf_htons(ETH_P_IPV6))
		return psec_ipv6(skb, ifindex, ps, s, trusted);
	return PSEC_OK;
}
