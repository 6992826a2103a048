/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Per-port counters, shared by every program attached to a host-side port.
 * The layout is mirrored by RawPortStats in ebpf/src/maps.rs.
 *
 * Layout history: 72 bytes (9 counters) until the L2 switch added
 * drop_mtu and drop_hairpin at the end (88 bytes); DHCP steering added
 * drop_dhcp_guard and drop_local_only (104 bytes); port security the six
 * drop_spoof_* and drop_ra_guard counters (152 bytes). The loader re-creates
 * a pinned counters map of another size (counters restart at zero). */
#pragma once

#include "common.h"

struct port_stats {
	__u64 tx_packets; /* frames the pod/VM sent (host-side ingress) */
	__u64 tx_bytes;
	__u64 rx_packets; /* frames delivered to the pod/VM */
	__u64 rx_bytes;
	__u64 redirected_packets; /* of tx: delivered straight to a local pod */
	/* Drop reasons. The management programs never drop; the L2 switch
	 * counts on the port that sent the frame, except drop_mtu, counted on
	 * the port whose MTU the frame exceeds. */
	__u64 drop_malformed;
	__u64 drop_policy; /* L2: IEEE 802.1D reserved group addresses */
	__u64 drop_vlan; /* L2: tag not allowed on the port, unknown VLAN */
	__u64 drop_other;
	__u64 drop_mtu; /* L2: longer than this port's MTU */
	__u64 drop_hairpin; /* L2: destination is the source port */
	__u64 drop_dhcp_guard; /* L2: DHCP server reply from an untrusted VM port */
	__u64 drop_local_only; /* L2: local-only traffic that would cross the uplink */
	/* L2 port security (lib/portsec.h), on the VM port that sent it: */
	__u64 drop_spoof_mac; /* source MAC not the port's (nor an allowed pair's) */
	__u64 drop_spoof_ipv4; /* IPv4 source not one of the port's addresses */
	__u64 drop_spoof_ipv6; /* IPv6 source not one of the port's addresses */
	__u64 drop_spoof_arp; /* ARP claiming another MAC or address */
	__u64 drop_spoof_nd; /* neighbour discovery claiming another MAC or address */
	__u64 drop_ra_guard; /* router advertisement from an untrusted port */
};
_Static_assert(sizeof(struct port_stats) == 19 * 8, "struct port_stats: mirrored by RawPortStats");

/* Entries are created (zeroed) by the loader when a port is attached;
 * programs only update existing ones, so a stray ifindex never fills it.
 * Not preallocated: per-CPU values cost max_entries * ncpus * 152 bytes up
 * front (304 MiB on a 128-CPU node), and programs never insert, so lazy
 * allocation costs nothing on the fast path. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, FURROW_MAX_PORTS);
	__type(key, __u32); /* host-side ifindex */
	__type(value, struct port_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} furrow_port_stats SEC(".maps");

static __always_inline struct port_stats *port_stats_get(__u32 ifindex)
{
	return bpf_map_lookup_elem(&furrow_port_stats, &ifindex);
}

/* Per-CPU values: plain increments are safe, no atomics needed. */
static __always_inline void port_count_tx(struct port_stats *st, __u32 len)
{
	if (st) {
		st->tx_packets++;
		st->tx_bytes += len;
	}
}

static __always_inline void port_count_rx(struct port_stats *st, __u32 len)
{
	if (st) {
		st->rx_packets++;
		st->rx_bytes += len;
	}
}
