/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Common includes and small helpers shared by every Furrow datapath object. */
#pragma once

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "config.h"

#ifndef likely
#define likely(x) __builtin_expect(!!(x), 1)
#endif
#ifndef unlikely
#define unlikely(x) __builtin_expect(!!(x), 0)
#endif

/* Makes sure the first `len` bytes of the frame are in the linear area so
 * direct packet access can reach them. Returns 0 when the frame is shorter
 * than `len` or the pull failed; callers then leave the frame to the kernel.
 * Invalidates previously loaded packet pointers. */
static __always_inline int pkt_pull(struct __sk_buff *skb, __u32 len)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	if (likely(data + len <= data_end))
		return 1;
	if (skb->len < len)
		return 0;
	return bpf_skb_pull_data(skb, len) == 0;
}
