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
/* A veth whose peer is in another netns: bpf_redirect_peer works (set by
 * the loader from what the link is, not by netd). */
#define L2_PORT_F_PEER 0x1
/* netd's policy flags (L2PortFlags):
 * TRUSTED: the port may send DHCP server replies (UDP source port 67);
 *   from any other VM port they are dropped (drop_dhcp_guard).
 * LOCAL_ONLY: the port's frames never reach the uplink (no unicast to a
 *   MAC behind it, no flood copy), and it is invisible from the uplink
 *   (no flood copy from the wire; a frame from the wire to one of its
 *   MACs, or from one of its MACs, is dropped: drop_local_only). For
 *   anycast services such as the per-node DHCP responder, whose MAC is
 *   the same on every node. */
#define L2_PORT_F_TRUSTED 0x2
#define L2_PORT_F_LOCAL_ONLY 0x4

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
_Static_assert(sizeof(struct l2_port) == 536, "struct l2_port: mirrored by RawL2Port");

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
_Static_assert(sizeof(struct l2_vlan) == 16 + 4 * FURROW_L2_MAX_MEMBERS,
	       "struct l2_vlan: mirrored by RawL2Vlan");

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
_Static_assert(sizeof(struct l2_fdb_key) == 12, "struct l2_fdb_key: mirrored by RawFdbKey");
_Static_assert(sizeof(struct l2_fdb) == 16, "struct l2_fdb: mirrored by RawFdb");

struct l2_cn {
	__u64 aging_ns;
	__u32 uplink; /* ifindex of the uplink port, 0 if none */
	__u32 flags; /* reserved, 0 */
};
_Static_assert(sizeof(struct l2_cn) == 16, "struct l2_cn: mirrored by RawL2Cn");

/* DHCP service of one (cluster network, VLAN) on this node, in its own
 * map (furrow_l2_dhcp) so that the flood list entry keeps its layout and
 * its own lifecycle. */
struct l2_dhcp {
	__u32 responder; /* ifindex of the responder port (0: none) */
	__u32 flags; /* reserved, 0 */
};
_Static_assert(sizeof(struct l2_dhcp) == 8, "struct l2_dhcp: mirrored by RawL2Dhcp");

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
	/* Appended for DHCP (96 -> 120 bytes; the loader re-creates a pinned
	 * map of the older size, counters restart at 0). */
	__u64 dhcp_steered; /* DHCP client frames handed to the responder only */
	__u64 drop_dhcp_guard; /* DHCP server replies from untrusted VM ports */
	__u64 drop_local_only; /* local-only traffic that would cross the uplink */
};
_Static_assert(sizeof(struct l2_vlan_stats) == 15 * 8,
	       "struct l2_vlan_stats: mirrored by RawVlanStats");

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

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, FURROW_L2_MAX_VLANS);
	__type(key, struct l2_vlan_key);
	__type(value, struct l2_dhcp);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} furrow_l2_dhcp SEC(".maps");

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

/* The responder port of (cn, vid), 0 if it has none. */
static __always_inline __u32 l2_dhcp_responder(__u32 cn, __u16 vid)
{
	struct l2_vlan_key key = { .cn = cn, .vid = vid };
	struct l2_dhcp *d = bpf_map_lookup_elem(&furrow_l2_dhcp, &key);

	return d ? d->responder : 0;
}

static __always_inline int l2_port_is_local_only(__u32 ifindex)
{
	struct l2_port *p = l2_port_get(ifindex);

	return p && (p->flags & L2_PORT_F_LOCAL_ONLY);
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

/* Learns (cn, vid, mac) on `ifindex`. Static entries are never touched;
 * an entry of a local-only port never moves to the uplink.
 *
 * Returns 0, or, for a frame from the uplink whose source MAC is owned
 * here by a local-only port (a static entry, or a live learned one), the
 * ifindex of that port: another node's leakage of an anycast MAC. The
 * entry stays; the caller drops the frame.
 *
 * `dry` (trace mode): the same answer, but nothing is written. */
static __always_inline __u32 l2_fdb_learn(__u32 cn, __u16 vid, const __u8 *mac, __u32 ifindex,
					__u64 now, __u64 aging_ns, __u8 from_uplink, __u8 dry)
{
	struct l2_fdb_key key = { .cn = cn, .vid = vid };
	struct l2_fdb val = { .ifindex = ifindex, .last_seen = now };
	__u64 refresh = aging_ns >> 2;
	struct l2_fdb *e;
	__u32 owner;

	__builtin_memcpy(key.mac, mac, ETH_ALEN);
	e = bpf_map_lookup_elem(&furrow_l2_fdb, &key);
	if (e) {
		owner = e->ifindex;
		if (e->flags & L2_FDB_F_STATIC) {
			/* Only a move is suspicious; the port lookup is paid
			 * by such frames alone. */
			if (from_uplink && owner != ifindex && l2_port_is_local_only(owner))
				return owner;
			return 0;
		}
		if (refresh > L2_FDB_REFRESH_NS)
			refresh = L2_FDB_REFRESH_NS;
		if (owner == ifindex && now - e->last_seen < refresh)
			return 0;
		if (from_uplink && owner != ifindex && now - e->last_seen <= aging_ns &&
		    l2_port_is_local_only(owner))
			return owner;
		if (dry)
			return 0;
		/* In place: a reader may see the new port with the old time
		 * for an instant, which at worst floods one frame. */
		e->ifindex = ifindex;
		e->last_seen = now;
		return 0;
	}
	/* Racing learners on two CPUs: the first insert wins, the other
	 * frame learns again next time. */
	if (dry)
		return 0;
	bpf_map_update_elem(&furrow_l2_fdb, &key, &val, BPF_NOEXIST);
	return 0;
}
