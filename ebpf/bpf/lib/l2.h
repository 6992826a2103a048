/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The 802.1Q switch's tables: ports, VLAN flood lists, the FDB, cluster
 * network settings and per-VLAN counters. Every layout is mirrored in
 * ebpf/src/l2.rs (size asserts on both sides); README.md has the sizes. */
#pragma once

#include "common.h"
#include "eth.h"
#include "vlan.h"

enum l2_mode {
	L2_MODE_ACCESS = 1, /* one VLAN (1-4094), untagged towards the VM */
	L2_MODE_UNTAGGED = 2, /* VLAN 0, untagged everywhere */
	L2_MODE_TRUNK = 3, /* allowed VLANs, tagged towards the VM */
	L2_MODE_UPLINK = 4, /* the node's trunk: every VLAN, VLAN 0 untagged */
};

/* l2_port.flags */
/* A veth whose peer is in another netns: bpf_redirect_peer works. */
#define L2_PORT_F_PEER 0x1

struct l2_port {
	__u32 cn; /* cluster network id */
	__u8 mode; /* enum l2_mode */
	__u8 flags; /* L2_PORT_F_* */
	__u16 vid; /* ACCESS: the VLAN */
	__u32 mtu; /* largest L3 length delivered to this port */
	__u8 mac[ETH_ALEN]; /* UPLINK: the node's own MAC on it */
	__u16 _pad0;
	__u32 _pad1;
	__u64 allowed[64]; /* TRUNK: bit v = VLAN v allowed (4096 bits) */
};

struct l2_vlan_key {
	__u32 cn;
	__u16 vid; /* 0 = untagged */
	__u16 _pad; /* 0 */
};

/* l2_vlan.flags */
/* VLAN 0 only: the node's stack (on the uplink) is a member. */
#define L2_VLAN_F_TO_HOST 0x1

struct l2_vlan {
	__u32 flags; /* L2_VLAN_F_* */
	__u32 count; /* members used */
	__u64 aging_ns; /* the cluster network's MAC aging, copied by the loader */
	__u32 members[FURROW_L2_MAX_MEMBERS]; /* ifindexes, uplink included */
};

struct l2_fdb_key {
	__u32 cn;
	__u16 vid;
	__u8 mac[ETH_ALEN];
};

/* l2_fdb.flags */
#define L2_FDB_F_STATIC 0x1

struct l2_fdb {
	__u32 ifindex;
	__u32 flags; /* L2_FDB_F_* */
	__u64 last_seen; /* bpf_ktime_get_ns() (CLOCK_MONOTONIC); 0 for static */
};

struct l2_cn {
	__u64 aging_ns;
	__u32 uplink; /* ifindex of the uplink port, 0 if none */
	__u32 flags; /* reserved, 0 */
};

struct l2_vlan_stats {
	__u64 rx_packets; /* frames accepted into the VLAN (any port) */
	__u64 rx_bytes;
	__u64 unicast_packets; /* delivered to the one port that has the MAC */
	__u64 unicast_bytes;
	__u64 flood_packets; /* broadcast, multicast, unknown unicast (once per frame) */
	__u64 flood_bytes;
	__u64 flood_copies; /* deliveries made by flooding */
	__u64 to_host_packets; /* delivered to the node's stack (VLAN 0) */
	__u64 from_host_packets; /* from the node's stack to local ports (VLAN 0) */
	__u64 drop_hairpin;
	__u64 drop_mtu;
	__u64 drop_other;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, FURROW_L2_MAX_PORTS);
	__type(key, __u32); /* ifindex */
	__type(value, struct l2_port);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} furrow_l2_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, FURROW_L2_MAX_VLANS);
	__type(key, struct l2_vlan_key);
	__type(value, struct l2_vlan);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} furrow_l2_vlans SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FURROW_L2_MAX_FDB);
	__type(key, struct l2_fdb_key);
	__type(value, struct l2_fdb);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} furrow_l2_fdb SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FURROW_L2_MAX_CNS);
	__type(key, __u32);
	__type(value, struct l2_cn);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} furrow_l2_cns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, FURROW_L2_MAX_VLANS);
	__type(key, struct l2_vlan_key);
	__type(value, struct l2_vlan_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} furrow_l2_vlan_stats SEC(".maps");

static __always_inline struct l2_port *l2_port_get(__u32 ifindex)
{
	return bpf_map_lookup_elem(&furrow_l2_ports, &ifindex);
}

static __always_inline struct l2_vlan *l2_vlan_get(__u32 cn, __u16 vid)
{
	struct l2_vlan_key key = { .cn = cn, .vid = vid };

	return bpf_map_lookup_elem(&furrow_l2_vlans, &key);
}

static __always_inline struct l2_vlan_stats *l2_vlan_stats_get(__u32 cn, __u16 vid)
{
	struct l2_vlan_key key = { .cn = cn, .vid = vid };

	return bpf_map_lookup_elem(&furrow_l2_vlan_stats, &key);
}

/* Whether `p` is a port of cluster network `cn` that carries `vid`. */
static __always_inline int l2_port_carries(const struct l2_port *p, __u32 cn, __u16 vid)
{
	if (p->cn != cn)
		return 0;
	switch (p->mode) {
	case L2_MODE_ACCESS:
		return vid != 0 && p->vid == vid;
	case L2_MODE_UNTAGGED:
		return vid == 0;
	case L2_MODE_TRUNK:
		vid &= VLAN_VID_MASK;
		return vid != 0 && (p->allowed[vid >> 6] >> (vid & 63)) & 1;
	case L2_MODE_UPLINK:
		return 1;
	}
	return 0;
}

/* Whether frames of `vid` leave `p` with a tag. */
static __always_inline __u8 l2_port_tags(const struct l2_port *p, __u16 vid)
{
	return p->mode == L2_MODE_TRUNK || (p->mode == L2_MODE_UPLINK && vid != 0);
}

/* The FDB entry for (cn, vid, mac) if it is static or was seen within
 * `aging_ns`; an older dynamic entry counts as absent. */
static __always_inline struct l2_fdb *l2_fdb_lookup(__u32 cn, __u16 vid, const __u8 *mac, __u64 now,
						    __u64 aging_ns)
{
	struct l2_fdb_key key = { .cn = cn, .vid = vid };
	struct l2_fdb *e;

	__builtin_memcpy(key.mac, mac, ETH_ALEN);
	e = bpf_map_lookup_elem(&furrow_l2_fdb, &key);
	if (!e)
		return NULL;
	if (e->flags & L2_FDB_F_STATIC)
		return e;
	if (now - e->last_seen > aging_ns)
		return NULL;
	return e;
}

/* Rewrites last_seen of a live entry on the same port at most this often
 * (a quarter of the aging time when that is shorter), so a busy MAC does
 * not write its cache line on every frame. */
#define L2_FDB_REFRESH_NS 1000000000ULL

/* Learns (cn, vid, mac) on `ifindex`. Static entries are never touched. */
static __always_inline void l2_fdb_learn(__u32 cn, __u16 vid, const __u8 *mac, __u32 ifindex,
					 __u64 now, __u64 aging_ns)
{
	struct l2_fdb_key key = { .cn = cn, .vid = vid };
	struct l2_fdb val = { .ifindex = ifindex, .last_seen = now };
	__u64 refresh = aging_ns >> 2;
	struct l2_fdb *e;

	__builtin_memcpy(key.mac, mac, ETH_ALEN);
	e = bpf_map_lookup_elem(&furrow_l2_fdb, &key);
	if (e) {
		if (e->flags & L2_FDB_F_STATIC)
			return;
		if (refresh > L2_FDB_REFRESH_NS)
			refresh = L2_FDB_REFRESH_NS;
		if (e->ifindex == ifindex && now - e->last_seen < refresh)
			return;
		/* In place: a reader may see the new port with the old time
		 * for an instant, which at worst floods one frame. */
		e->ifindex = ifindex;
		e->last_seen = now;
		return;
	}
	/* Racing learners on two CPUs: the first insert wins, the other
	 * frame learns again next time. */
	bpf_map_update_elem(&furrow_l2_fdb, &key, &val, BPF_NOEXIST);
}
