// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The VLAN networks' datapath: an 802.1Q switch, one per (cluster
 * network, node), built from tc filters.
 *
 * furrow_l2_ingress runs at tc ingress of every port of the switch: the
 * host side of each VM's veth and the node's uplink (the trunk towards the
 * other nodes). It classifies the frame into a VLAN, learns the source
 * MAC, and delivers the frame to the port that has the destination MAC or
 * floods it to the VLAN's members, tagging it per egress port.
 *
 * furrow_l2_uplink_egress runs at tc egress of the uplink only: it hands
 * what the node's own stack sends on VLAN 0 to the local VM ports that
 * need it (the kernel would only send it to the wire, from where it never
 * comes back).
 *
 * DHCPv4 (see lib/dhcp.h): a VLAN may have a responder port on this node
 * (furrow_l2_dhcp), the node's end of netd's DHCP server. Client frames
 * (UDP destination port 67) from VM ports of that VLAN go to it alone;
 * server replies (UDP source port 67) from VM ports without
 * L2_PORT_F_TRUSTED are dropped. Ports with L2_PORT_F_LOCAL_ONLY (the
 * responders: the same server MAC and IP on every node) never reach the
 * uplink and the uplink never reaches them.
 *
 * Port security (see lib/portsec.h): frames from a VM port with a
 * furrow_l2_psec entry must come from the port's MACs and addresses (ARP
 * and neighbour discovery included); router advertisements only from
 * trusted ports. Checked after the DHCP guard, before MAC learning.
 *
 * Both leave a trace record in skb->cb (see struct comments below), which
 * BPF_PROG_TEST_RUN returns: tests and `netctl trace` read the verdict,
 * the VLAN, where the frame went and its tag state from it. */

#include <linux/in.h>

#include "lib/common.h"
#include "lib/generation.h"
#include "lib/eth.h"
#include "lib/stats.h"
#include "lib/vlan.h"
#include "lib/l2.h"
#include "lib/dhcp.h"
#include "lib/portsec.h"

/* Marks the copy of a VM's VLAN-0 broadcast handed to the node's stack
 * (bpf_clone_redirect with BPF_F_INGRESS on the uplink): the copy passes
 * the uplink's ingress program again, which must give it to the kernel
 * instead of switching it a second time. Cleared there. */
#define L2_HOST_MARK 0x46574c32 /* "FWL2" */

/* Trace record, skb->cb[0..4] (mirrored by L2Trace in ebpf/src/l2.rs):
 *   cb[0] = L2_TRACE_MAGIC | L2_TRACE_F_* | verdict (bits 0-7)
 *   cb[1] = VLAN the frame was classified into (L2_TRACE_NO_VID if none)
 *   cb[2] = unicast, DHCP steering, to host, MTU / local-only / responder
 *           drops: the port concerned (egress, or the local-only owner);
 *           flood: number of deliveries
 *   cb[3] = unicast, DHCP steering: L2_TRACE_TAGGED | TCI if it left
 *           tagged, else 0; flood: members skipped by the local-only rule
 *   cb[4] = flood: members skipped because of their MTU */
#define L2_TRACE_MAGIC 0x4c320000
#define L2_TRACE_NO_VID 0xffff
#define L2_TRACE_TAGGED 0x10000
/* cb[0] bits 8-15: what the switch knew about the frame. */
#define L2_TRACE_F_LOCAL_ONLY 0x100 /* the ingress port is local-only */
#define L2_TRACE_F_TRUSTED 0x200 /* the ingress port is trusted */
#define L2_TRACE_F_DHCP_CLIENT 0x400 /* DHCP client frame (UDP dst 67) */
#define L2_TRACE_F_DHCP_SERVER 0x800 /* DHCP server frame (UDP src 67) */
#define L2_TRACE_F_PORT_SECURITY 0x1000 /* the ingress port has port security */

enum l2_verdict {
	L2_V_PASS_NOT_PORT = 1, /* no port entry: to the kernel */
	L2_V_PASS_OWN_MAC = 2, /* uplink: addressed to the node: to the kernel */
	L2_V_PASS_NO_VLAN0 = 3, /* uplink: untagged, no VLAN 0: the node's traffic */
	L2_V_PASS_HOST_COPY = 4, /* uplink: our copy for the node's stack */
	L2_V_PASS_LINK_LOCAL = 5, /* uplink: 01:80:c2:00:00:0x: to the kernel */
	L2_V_UNICAST = 6, /* to the one port that has the MAC */
	L2_V_TO_HOST = 7, /* VM to the node's own MAC on VLAN 0 */
	L2_V_FLOOD = 8, /* flooded to the VLAN's members */
	L2_V_FLOOD_PASS = 9, /* flooded, and the frame continues to the kernel */
	L2_V_DROP_VLAN = 10,
	L2_V_DROP_HAIRPIN = 11,
	L2_V_DROP_MTU = 12,
	L2_V_DROP_MALFORMED = 13,
	L2_V_DROP_POLICY = 14,
	L2_V_DROP_OTHER = 15,
	L2_V_PASS_NOT_HOST = 16, /* uplink egress: not the node's VLAN-0 traffic */
	L2_V_DHCP_STEERED = 17, /* DHCP client frame to the VLAN's responder only */
	L2_V_DROP_DHCP_GUARD = 18, /* DHCP server reply from an untrusted VM port */
	/* Local-only traffic crossing the uplink: from a local-only port to a
	 * MAC behind the uplink, or from the uplink to or from a MAC of a
	 * local-only port. */
	L2_V_DROP_LOCAL_ONLY = 19,
	/* The VLAN's responder is not a port of it (reconfigured since):
	 * DHCP client frames are dropped rather than flooded. */
	L2_V_DROP_NO_RESPONDER = 20,
	/* Port security (lib/portsec.h), in the order of enum psec_result:
	 * L2_V_DROP_SPOOF_MAC + (result - PSEC_SPOOF_MAC). */
	L2_V_DROP_SPOOF_MAC = 21, /* source MAC not one of the port's */
	L2_V_DROP_SPOOF_IPV4 = 22, /* IPv4 source not allowed */
	L2_V_DROP_SPOOF_IPV6 = 23, /* IPv6 source not allowed */
	L2_V_DROP_SPOOF_ARP = 24, /* ARP claiming another MAC or address */
	L2_V_DROP_SPOOF_ND = 25, /* ND claiming another MAC or address */
	L2_V_DROP_RA_GUARD = 26, /* router advertisement from an untrusted port */
};

/* Trace (dry-run) mode, for `netctl trace` (ebpf/src/l2_trace.rs): a
 * BPF_PROG_TEST_RUN caller puts L2_DRY_MAGIC3 in cb[3] and L2_DRY_MAGIC4 in
 * cb[4] of the context it passes (skb->cb of live frames at tc ingress
 * holds what earlier layers left there; 64 bits of magic make a match by
 * chance negligible). furrow_l2_ingress then decides exactly as for a live
 * frame, on the live maps, but changes nothing: no counters, no MAC
 * learning (nor last_seen refresh), no clones (a flood's deliveries and
 * the copy for the node's stack are recorded instead). It appends a
 * trailer of L2_DRY_TRAILER bytes to the frame when it floods (returned
 * as data_out): u32 L2_DRY_TRAILER_MAGIC, u32 deliveries, u32 flags
 * (L2_DRY_F_*), u32 reserved, then the ifindex of each delivery in order
 * (the last one is the port the original frame is redirected to). The
 * cost on the fast path: reading cb[3..4] once; the existing NULL checks of
 * the counters carry the rest. */
#define L2_DRY_MAGIC3 0x46545243 /* "FTRC" */
#define L2_DRY_MAGIC4 0x44525931 /* "DRY1" */
#define L2_DRY_TRAILER_MAGIC 0x46545231 /* "FTR1" */
#define L2_DRY_HDR 16
#define L2_DRY_TRAILER (L2_DRY_HDR + 4 * FURROW_L2_MAX_MEMBERS)
#define L2_DRY_F_HOST_COPY 0x1 /* a copy would go to the node's stack */

static __always_inline __u8 l2_dry_run(struct __sk_buff *skb)
{
	return unlikely(skb->cb[4] == L2_DRY_MAGIC4 && skb->cb[3] == L2_DRY_MAGIC3);
}

/* Counters of `ifindex`, none in trace mode. */
static __always_inline struct port_stats *stats_of(__u8 dry, __u32 ifindex)
{
	return dry ? NULL : port_stats_get(ifindex);
}

static __always_inline void trace(struct __sk_buff *skb, __u32 verdict, __u32 vid, __u32 a, __u32 b,
				  __u32 c)
{
	skb->cb[0] = L2_TRACE_MAGIC | verdict;
	skb->cb[1] = vid;
	skb->cb[2] = a;
	skb->cb[3] = b;
	skb->cb[4] = c;
}

/* L3 length of the frame (of each segment for GSO), the figure a port's
 * MTU limits. 0 when a GSO frame cannot be parsed: the check is skipped
 * rather than dropping traffic it cannot judge. */
static __always_inline __u32 l3_len(struct __sk_buff *skb)
{
	__u32 gso = skb->gso_size;
	__u32 hl, l4 = 0;
	__be16 proto;
	__u8 b[2];

	if (!gso)
		return skb->len > ETH_HLEN ? skb->len - ETH_HLEN : 0;
	if (bpf_skb_load_bytes(skb, 12, &proto, sizeof(proto)))
		return 0;
	if (proto == bpf_htons(ETH_P_IP)) {
		/* version/IHL and protocol */
		if (bpf_skb_load_bytes(skb, ETH_HLEN, &b[0], 1) ||
		    bpf_skb_load_bytes(skb, ETH_HLEN + 9, &b[1], 1))
			return 0;
		hl = (b[0] & 0x0f) * 4;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		if (bpf_skb_load_bytes(skb, ETH_HLEN + 6, &b[1], 1))
			return 0;
		hl = 40;
	} else {
		return 0;
	}
	if (b[1] == IPPROTO_TCP) {
		__u8 doff;

		if (bpf_skb_load_bytes(skb, ETH_HLEN + hl + 12, &doff, 1))
			return 0;
		l4 = (doff >> 4) * 4;
	} else if (b[1] == IPPROTO_UDP) {
		l4 = 8;
	} else {
		return 0;
	}
	return hl + l4 + gso;
}

/* ---- flooding ----------------------------------------------------------
 * One bpf_loop iteration per member. A member's delivery is deferred until
 * the next eligible member is found (its copy is a clone, with the tag
 * state set for it just before); the last one gets the original frame
 * (bpf_redirect, or bpf_redirect_peer for a VM) unless the frame must
 * also continue to the kernel. */

struct flood_ctx {
	struct __sk_buff *skb;
	struct l2_vlan *vlan;
	struct l2_vlan_stats *vst;
	__u32 ingress;
	__u32 cn;
	__u32 l3len;
	__u32 len;
	__u32 pending; /* member whose delivery is deferred, 0 if none */
	__u32 copies;
	__u32 mtu_drops;
	__u32 policy_skips; /* members left out by the local-only rule */
	__u16 vid;
	__u16 tci;
	__u8 tagged; /* current tag state of the frame */
	__u8 pending_tag; /* pending member wants it tagged */
	__u8 pending_peer; /* pending member is a veth with a peer elsewhere */
	__u8 skip_uplink; /* from a local-only port: not to the uplink */
	__u8 skip_local_only; /* from the wire: not to local-only ports */
	__u8 dry; /* trace mode: record deliveries, clone nothing */
	__u8 _pad[2];
	__u32 dry_base; /* trace mode: offset of the trailer in the frame */
};

/* Trace mode: appends the (zeroed) trailer; 0 when it could not. */
static __always_inline __u32 dry_trailer(struct __sk_buff *skb)
{
	__u32 hdr[4] = { L2_DRY_TRAILER_MAGIC, 0, 0, 0 };
	__u32 base = skb->len;

	if (bpf_skb_change_tail(skb, base + L2_DRY_TRAILER, 0) ||
	    bpf_skb_store_bytes(skb, base, hdr, sizeof(hdr), 0))
		return 0;
	return base;
}

/* Trace mode: delivery number `n` went to `m`. */
static __always_inline void dry_record(struct flood_ctx *c, __u32 m)
{
	__u32 n = c->copies;

	if (c->dry_base && n < FURROW_L2_MAX_MEMBERS)
		bpf_skb_store_bytes(c->skb, c->dry_base + L2_DRY_HDR + 4 * n, &m, sizeof(m), 0);
}

/* Trace mode: the trailer's counts. */
static __always_inline void dry_finish(struct flood_ctx *c, __u32 flags)
{
	__u32 v[2] = { c->copies, flags };

	if (c->dry_base)
		bpf_skb_store_bytes(c->skb, c->dry_base + 4, v, sizeof(v), 0);
}

static __always_inline void flood_clone_pending(struct flood_ctx *c)
{
	if (!c->pending)
		return;
	if (c->dry) {
		dry_record(c, c->pending);
		c->copies++;
		c->pending = 0;
		return;
	}
	if (vlan_set_tag(c->skb, &c->tagged, c->pending_tag, c->tci) == 0 &&
	    bpf_clone_redirect(c->skb, c->pending, 0) == 0) {
		c->copies++;
		port_count_rx(port_stats_get(c->pending), c->len);
	}
	c->pending = 0;
}

static long flood_one(__u32 i, void *arg)
{
	struct flood_ctx *c = arg;
	struct l2_port *p;
	__u32 m;

	if (i >= FURROW_L2_MAX_MEMBERS)
		return 1;
	m = c->vlan->members[i];
	if (m == 0 || m == c->ingress)
		return 0;
	p = l2_port_get(m);
	/* Members are re-checked: a flood list being replaced, or naming a
	 * port since reconfigured, never leaks a frame into another VLAN. */
	if (!p || !l2_port_carries(p, c->cn, c->vid))
		return 0;
	if ((c->skip_uplink && p->mode == L2_MODE_UPLINK) ||
	    (c->skip_local_only && (p->flags & L2_PORT_F_LOCAL_ONLY))) {
		c->policy_skips++;
		return 0;
	}
	if (c->l3len > p->mtu) {
		struct port_stats *st = stats_of(c->dry, m);

		if (st)
			st->drop_mtu++;
		if (c->vst)
			c->vst->drop_mtu++;
		c->mtu_drops++;
		return 0;
	}
	flood_clone_pending(c);
	c->pending = m;
	c->pending_tag = l2_port_tags(p, c->vid);
	c->pending_peer = p->mode != L2_MODE_UPLINK && (p->flags & L2_PORT_F_PEER);
	return 0;
}

static __always_inline void flood_members(struct flood_ctx *c)
{
	__u32 n = c->vlan->count;

	if (n > FURROW_L2_MAX_MEMBERS)
		n = FURROW_L2_MAX_MEMBERS;
	bpf_loop(n, flood_one, c, 0);
}

/* Hands the original frame to the pending member. Returns the tc verdict. */
static __always_inline int flood_redirect_pending(struct flood_ctx *c)
{
	__u32 m = c->pending;

	if (vlan_set_tag(c->skb, &c->tagged, c->pending_tag, c->tci) < 0)
		return TC_ACT_SHOT;
	if (c->dry) {
		dry_record(c, m);
		c->copies++;
		return TC_ACT_REDIRECT;
	}
	c->copies++;
	port_count_rx(port_stats_get(m), c->len);
	if (c->pending_peer)
		return bpf_redirect_peer(m, 0);
	return bpf_redirect(m, 0);
}

/* ---- ingress ---------------------------------------------------------- */

static __always_inline int drop(struct __sk_buff *skb, __u32 verdict, __u32 vid)
{
	trace(skb, verdict, vid, 0, 0, 0);
	return TC_ACT_SHOT;
}

/* Counts a drop of the local-only rule on the port that sent the frame
 * and the VLAN; `owner` (the other port involved) goes to the trace. */
static __always_inline int drop_local_only(struct __sk_buff *skb, struct port_stats *pst,
					   struct l2_vlan_stats *vst, __u32 verdict_flags,
					   __u16 vid, __u32 owner)
{
	if (pst)
		pst->drop_local_only++;
	if (vst)
		vst->drop_local_only++;
	trace(skb, L2_V_DROP_LOCAL_ONLY | verdict_flags, vid, owner, 0, 0);
	return TC_ACT_SHOT;
}

/* Counts and traces a port security drop (`why`: enum psec_result). */
static __always_inline int drop_psec(struct __sk_buff *skb, struct port_stats *pst, int why,
				     __u32 tf, __u16 vid)
{
	if (pst) {
		switch (why) {
		case PSEC_SPOOF_MAC:
			pst->drop_spoof_mac++;
			break;
		case PSEC_SPOOF_IPV4:
			pst->drop_spoof_ipv4++;
			break;
		case PSEC_SPOOF_IPV6:
			pst->drop_spoof_ipv6++;
			break;
		case PSEC_SPOOF_ARP:
			pst->drop_spoof_arp++;
			break;
		case PSEC_SPOOF_ND:
			pst->drop_spoof_nd++;
			break;
		default:
			pst->drop_ra_guard++;
			break;
		}
	}
	return drop(skb, (L2_V_DROP_SPOOF_MAC + (why - PSEC_SPOOF_MAC)) | tf, vid);
}

/* Hands the (untagged) frame to the one port `out` (index `oif`): known
 * unicast, or DHCP steering (`verdict`). Checks its MTU, sets its tag
 * state, counts. Returns the tc verdict. */
static __always_inline int deliver_one(struct __sk_buff *skb, struct l2_port *out, __u32 oif,
				       __u32 verdict, __u32 tf, __u16 vid, __u16 tci,
				       __u32 len, struct l2_vlan_stats *vst, __u8 dry)
{
	struct port_stats *ost = stats_of(dry, oif);
	__u8 want = l2_port_tags(out, vid);
	__u8 peer = out->mode != L2_MODE_UPLINK && (out->flags & L2_PORT_F_PEER);
	__u8 tagged = 0;

	if (l3_len(skb) > out->mtu) {
		if (ost)
			ost->drop_mtu++;
		if (vst)
			vst->drop_mtu++;
		trace(skb, L2_V_DROP_MTU | tf, vid, oif, 0, 0);
		return TC_ACT_SHOT;
	}
	if (vlan_set_tag(skb, &tagged, want, tci)) {
		if (vst)
			vst->drop_other++;
		return drop(skb, L2_V_DROP_OTHER | tf, vid);
	}
	port_count_rx(ost, len);
	if (vst) {
		if (verdict == L2_V_DHCP_STEERED) {
			vst->dhcp_steered++;
		} else {
			vst->unicast_packets++;
			vst->unicast_bytes += len;
		}
	}
	trace(skb, verdict | tf, vid, oif, want ? L2_TRACE_TAGGED | tci : 0, 0);
	if (peer)
		return bpf_redirect_peer(oif, 0);
	return bpf_redirect(oif, 0);
}

SEC("classifier")
int furrow_l2_ingress(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct l2_port *port = l2_port_get(ifindex);
	struct l2_vlan_stats *vst;
	struct port_stats *pst;
	struct l2_vlan *vlan;
	struct l2_fdb *e;
	__u8 dst[ETH_ALEN], src[ETH_ALEN];
	__u8 mode, is_uplink, tagged = 0, mcast, pflags, dry;
	__u16 tci = 0, vid;
	__u32 cn, len, tf = 0;
	__u64 now, aging;
	struct ethhdr *eth;
	void *data, *data_end;
	int r, dhcp;

	if (!port) {
		trace(skb, L2_V_PASS_NOT_PORT, L2_TRACE_NO_VID, 0, 0, 0);
		return TC_ACT_OK;
	}
	mode = port->mode;
	cn = port->cn;
	pflags = port->flags;
	is_uplink = mode == L2_MODE_UPLINK;
	if (pflags & L2_PORT_F_LOCAL_ONLY)
		tf |= L2_TRACE_F_LOCAL_ONLY;
	if (pflags & L2_PORT_F_TRUSTED)
		tf |= L2_TRACE_F_TRUSTED;
	dry = l2_dry_run(skb);
	pst = stats_of(dry, ifindex);

	if (!pkt_pull(skb, ETH_HLEN)) {
		if (is_uplink)
			return TC_ACT_OK;
		port_count_tx(pst, skb->len);
		if (pst)
			pst->drop_malformed++;
		return drop(skb, L2_V_DROP_MALFORMED | tf, L2_TRACE_NO_VID);
	}
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return TC_ACT_SHOT;
	__builtin_memcpy(dst, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(src, eth->h_source, ETH_ALEN);

	if (is_uplink) {
		/* The node's own traffic goes to the kernel untouched. */
		if (skb->mark == L2_HOST_MARK) {
			skb->mark = 0;
			trace(skb, L2_V_PASS_HOST_COPY, L2_TRACE_NO_VID, 0, 0, 0);
			return TC_ACT_OK;
		}
		if (mac_u64(dst) == mac_u64(port->mac)) {
			trace(skb, L2_V_PASS_OWN_MAC, L2_TRACE_NO_VID, 0, 0, 0);
			return TC_ACT_OK;
		}
		if (mac_is_link_local(dst)) {
			trace(skb, L2_V_PASS_LINK_LOCAL, L2_TRACE_NO_VID, 0, 0, 0);
			return TC_ACT_OK;
		}
	}
	len = skb->len;
	port_count_tx(pst, len);
	if (!is_uplink && mac_is_link_local(dst)) {
		/* Never let a VM's STP/LACP/LLDP frames reach the wire (a
		 * physical switch may shut the port down). */
		if (pst)
			pst->drop_policy++;
		return drop(skb, L2_V_DROP_POLICY | tf, L2_TRACE_NO_VID);
	}

	/* ---- classification ---- */
	r = vlan_parse(skb, &tci);
	if (r == VLAN_BAD)
		goto drop_vlan_unclassified;
	tagged = r == VLAN_TAGGED;
	switch (mode) {
	case L2_MODE_ACCESS:
		if (tagged)
			goto drop_vlan_unclassified;
		vid = port->vid;
		break;
	case L2_MODE_UNTAGGED:
		if (tagged)
			goto drop_vlan_unclassified;
		vid = 0;
		break;
	case L2_MODE_TRUNK:
		vid = tci & VLAN_VID_MASK;
		if (!tagged || vid == 0 || vid > VLAN_VID_MAX ||
		    !((port->allowed[vid >> 6] >> (vid & 63)) & 1))
			goto drop_vlan_unclassified;
		break;
	case L2_MODE_UPLINK:
		vid = tagged ? tci & VLAN_VID_MASK : 0;
		if (vid > VLAN_VID_MAX)
			goto drop_vlan_unclassified;
		break;
	default:
		goto drop_vlan_unclassified;
	}
	/* The egress tag keeps the priority bits it came with. */
	tci = (tci & ~VLAN_VID_MASK) | vid;

	vlan = l2_vlan_get(cn, vid);
	if (!vlan) {
		if (is_uplink && !tagged) {
			/* No VLAN 0 here: untagged frames are the node's. */
			trace(skb, L2_V_PASS_NO_VLAN0, 0, 0, 0, 0);
			return TC_ACT_OK;
		}
		if (pst)
			pst->drop_vlan++;
		return drop(skb, L2_V_DROP_VLAN | tf, vid);
	}
	vst = dry ? NULL : l2_vlan_stats_get(cn, vid);

	/* From here on the frame is untagged, with `vid` on the side. */
	if (tagged) {
		if (bpf_skb_vlan_pop(skb)) {
			if (pst)
				pst->drop_other++;
			if (vst)
				vst->drop_other++;
			return drop(skb, L2_V_DROP_OTHER | tf, vid);
		}
		tagged = 0;
		len = skb->len;
	}
	if (vst) {
		vst->rx_packets++;
		vst->rx_bytes += len;
	}

	/* ---- DHCP guard: server replies only from trusted ports ---- */
	dhcp = dhcp_classify(skb);
	if (dhcp == DHCP_CLIENT)
		tf |= L2_TRACE_F_DHCP_CLIENT;
	else if (dhcp == DHCP_SERVER)
		tf |= L2_TRACE_F_DHCP_SERVER;
	if (dhcp == DHCP_SERVER && !is_uplink && !(pflags & L2_PORT_F_TRUSTED)) {
		/* Before learning: a rogue server teaches the switch nothing. */
		if (pst)
			pst->drop_dhcp_guard++;
		if (vst)
			vst->drop_dhcp_guard++;
		return drop(skb, L2_V_DROP_DHCP_GUARD | tf, vid);
	}

	/* ---- port security: what a VM port may claim to be ---- */
	if (!is_uplink) {
		struct l2_psec *ps = l2_psec_get(ifindex);

		if (ps) {
			int why;

			tf |= L2_TRACE_F_PORT_SECURITY;
			/* Before learning: a forged source MAC is never learnt. */
			why = psec_check(skb, ifindex, ps, src, dhcp, pflags & L2_PORT_F_TRUSTED);
			if (why)
				return drop_psec(skb, pst, why, tf, vid);
		}
	}

	now = bpf_ktime_get_ns();
	aging = vlan->aging_ns;
	if (!mac_is_multicast(src) && mac_u64(src) != 0) {
		__u32 owner = l2_fdb_learn(cn, vid, src, ifindex, now, aging, is_uplink, dry);

		/* Another node's anycast responder leaking onto the wire
		 * (its frames never should): not for our VMs. */
		if (owner)
			return drop_local_only(skb, pst, vst, tf, vid, owner);
	}

	/* ---- DHCP steering: a VM's requests go to this node's server ---- */
	if (dhcp == DHCP_CLIENT && !is_uplink) {
		__u32 rif = l2_dhcp_responder(cn, vid);

		if (rif && rif != ifindex) {
			struct l2_port *out = l2_port_get(rif);

			if (!out || out->mode == L2_MODE_UPLINK || !l2_port_carries(out, cn, vid)) {
				if (pst)
					pst->drop_other++;
				if (vst)
					vst->drop_other++;
				trace(skb, L2_V_DROP_NO_RESPONDER | tf, vid, rif, 0, 0);
				return TC_ACT_SHOT;
			}
			return deliver_one(skb, out, rif, L2_V_DHCP_STEERED, tf, vid, tci, len, vst,
					   dry);
		}
	}

	mcast = mac_is_multicast(dst);
	if (!mcast) {
		struct l2_port *out;
		__u32 oif;

		/* A VM talking to the node itself (its MAC on the uplink). */
		if (!is_uplink && vid == 0 && (vlan->flags & L2_VLAN_F_TO_HOST)) {
			struct l2_cn *cfg = bpf_map_lookup_elem(&furrow_l2_cns, &cn);
			struct l2_port *up;
			__u32 upif;

			if (cfg && cfg->uplink) {
				upif = cfg->uplink;
				up = l2_port_get(upif);
				if (up && up->mode == L2_MODE_UPLINK &&
				    mac_u64(dst) == mac_u64(up->mac)) {
					if (vst)
						vst->to_host_packets++;
					trace(skb, L2_V_TO_HOST | tf, vid, upif, 0, 0);
					if (dry)
						return TC_ACT_REDIRECT;
					return bpf_redirect(upif, BPF_F_INGRESS);
				}
			}
		}

		e = l2_fdb_lookup(cn, vid, dst, now, aging);
		if (e) {
			oif = e->ifindex;
			if (oif == ifindex) {
				if (pst)
					pst->drop_hairpin++;
				if (vst)
					vst->drop_hairpin++;
				return drop(skb, L2_V_DROP_HAIRPIN | tf, vid);
			}
			out = l2_port_get(oif);
			/* A stale entry (port gone or moved elsewhere) floods. */
			if (out && l2_port_carries(out, cn, vid)) {
				/* Local-only ports and the wire never meet. */
				if ((is_uplink && (out->flags & L2_PORT_F_LOCAL_ONLY)) ||
				    ((pflags & L2_PORT_F_LOCAL_ONLY) && out->mode == L2_MODE_UPLINK))
					return drop_local_only(skb, pst, vst, tf, vid, oif);
				return deliver_one(skb, out, oif, L2_V_UNICAST, tf, vid, tci, len,
						   vst, dry);
			}
		}
	}

	/* ---- flood: broadcast, multicast, unknown unicast ---- */
	{
		struct flood_ctx c = {
			.skb = skb,
			.vlan = vlan,
			.vst = vst,
			.ingress = ifindex,
			.cn = cn,
			.l3len = l3_len(skb),
			.len = len,
			.vid = vid,
			.tci = tci,
			.skip_uplink = !!(pflags & L2_PORT_F_LOCAL_ONLY),
			.skip_local_only = is_uplink,
			.dry = dry,
		};
		/* Untagged broadcast/multicast from the wire is also the
		 * node's (ARP for its address...): flood, then pass it on. */
		int to_kernel = is_uplink && vid == 0 && mcast;
		__u32 dry_flags = 0;
		int verdict;

		if (vst) {
			vst->flood_packets++;
			vst->flood_bytes += len;
		}
		if (dry)
			c.dry_base = dry_trailer(skb);
		flood_members(&c);

		if (!is_uplink && vid == 0 && mcast && (vlan->flags & L2_VLAN_F_TO_HOST)) {
			struct l2_cn *cfg = bpf_map_lookup_elem(&furrow_l2_cns, &cn);
			__u32 upif = cfg ? cfg->uplink : 0;

			if (upif && dry) {
				dry_flags |= L2_DRY_F_HOST_COPY;
			} else if (upif) {
				/* A copy for the node's stack: untagged, marked
				 * so the uplink's ingress program passes it. */
				if (vlan_set_tag(skb, &c.tagged, 0, tci) == 0) {
					__u32 mark = skb->mark;

					skb->mark = L2_HOST_MARK;
					if (bpf_clone_redirect(skb, upif, BPF_F_INGRESS) == 0 && vst)
						vst->to_host_packets++;
					skb->mark = mark;
				}
			}
		}

		if (to_kernel) {
			flood_clone_pending(&c);
			dry_finish(&c, dry_flags);
			if (vlan_set_tag(skb, &c.tagged, 0, tci))
				return drop(skb, L2_V_DROP_OTHER | tf, vid);
			if (vst)
				vst->flood_copies += c.copies;
			trace(skb, L2_V_FLOOD_PASS | tf, vid, c.copies, c.policy_skips, c.mtu_drops);
			return TC_ACT_OK;
		}
		if (!c.pending) {
			/* Nobody else on this VLAN here. */
			dry_finish(&c, dry_flags);
			if (vst)
				vst->flood_copies += c.copies;
			trace(skb, L2_V_FLOOD | tf, vid, c.copies, c.policy_skips, c.mtu_drops);
			return TC_ACT_SHOT;
		}
		verdict = flood_redirect_pending(&c);
		dry_finish(&c, dry_flags);
		if (vst)
			vst->flood_copies += c.copies;
		trace(skb, L2_V_FLOOD | tf, vid, c.copies, c.policy_skips, c.mtu_drops);
		return verdict;
	}

drop_vlan_unclassified:
	if (pst)
		pst->drop_vlan++;
	return drop(skb, L2_V_DROP_VLAN | tf, L2_TRACE_NO_VID);
}

/* ---- uplink egress: the node's own VLAN-0 traffic to local ports ---- */

SEC("classifier")
int furrow_l2_uplink_egress(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct l2_port *port = l2_port_get(ifindex);
	struct l2_vlan_stats *vst;
	struct l2_vlan *vlan;
	struct l2_fdb *e;
	__u8 dst[ETH_ALEN];
	struct ethhdr *eth;
	void *data, *data_end;
	__u32 cn, len, tf = 0;
	__u64 now;
	int dhcp;

	if (!port || port->mode != L2_MODE_UPLINK || skb->vlan_present)
		goto pass;
	if (!pkt_pull(skb, ETH_HLEN))
		goto pass;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		goto pass;
	/* Only what the node's stack sends: frames the switch forwards to
	 * the wire carry the VMs' MACs. */
	if (mac_u64(eth->h_source) != mac_u64(port->mac) || eth_proto_is_vlan(eth->h_proto))
		goto pass;
	__builtin_memcpy(dst, eth->h_dest, ETH_ALEN);
	if (mac_is_link_local(dst))
		goto pass;
	cn = port->cn;
	vlan = l2_vlan_get(cn, 0);
	if (!vlan || !(vlan->flags & L2_VLAN_F_TO_HOST))
		goto pass;
	vst = l2_vlan_stats_get(cn, 0);
	len = skb->len;
	now = bpf_ktime_get_ns();
	/* The node's own DHCP client (its address on the uplink) is served
	 * by the wire, never by a local responder. */
	dhcp = dhcp_classify(skb);
	if (dhcp == DHCP_CLIENT)
		tf |= L2_TRACE_F_DHCP_CLIENT;
	else if (dhcp == DHCP_SERVER)
		tf |= L2_TRACE_F_DHCP_SERVER;

	if (!mac_is_multicast(dst)) {
		e = l2_fdb_lookup(cn, 0, dst, now, vlan->aging_ns);
		if (e && e->ifindex != ifindex) {
			__u32 oif = e->ifindex;
			struct l2_port *out = l2_port_get(oif);

			if (out && out->mode != L2_MODE_UPLINK && l2_port_carries(out, cn, 0)) {
				struct port_stats *ost = port_stats_get(oif);

				if (dhcp == DHCP_CLIENT && (out->flags & L2_PORT_F_LOCAL_ONLY)) {
					/* To the wire only; the trace says which
					 * local port was left out. */
					if (vst)
						vst->from_host_packets++;
					trace(skb, L2_V_FLOOD_PASS | tf, 0, 0, 1, 0);
					return TC_ACT_OK;
				}

				if (l3_len(skb) > out->mtu) {
					if (ost)
						ost->drop_mtu++;
					if (vst)
						vst->drop_mtu++;
					trace(skb, L2_V_DROP_MTU | tf, 0, oif, 0, 0);
					return TC_ACT_SHOT;
				}
				port_count_rx(ost, len);
				if (vst)
					vst->from_host_packets++;
				trace(skb, L2_V_UNICAST | tf, 0, oif, 0, 0);
				/* Egress of the host veth: arrives at its peer. */
				return bpf_redirect(oif, 0);
			}
		}
		/* Known on the wire: just send it. */
		if (e)
			goto pass;
	}

	/* Broadcast, multicast, unknown unicast: local copies, then the wire. */
	{
		struct flood_ctx c = {
			.skb = skb,
			.vlan = vlan,
			.vst = vst,
			.ingress = ifindex,
			.cn = cn,
			.l3len = l3_len(skb),
			.len = len,
			.vid = 0,
			.skip_local_only = dhcp == DHCP_CLIENT,
		};

		flood_members(&c);
		flood_clone_pending(&c);
		if (vst) {
			vst->from_host_packets++;
			vst->flood_copies += c.copies;
		}
		trace(skb, L2_V_FLOOD_PASS | tf, 0, c.copies, c.policy_skips, c.mtu_drops);
		return TC_ACT_OK;
	}

pass:
	trace(skb, L2_V_PASS_NOT_HOST | tf, L2_TRACE_NO_VID, 0, 0, 0);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
