/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Map sizes. Mirrored in ebpf/src/maps.rs and ebpf/src/l2.rs (a test
 * checks the loaded maps against the Rust constants); ebpf/README.md
 * explains the choices. */
#pragma once

/* Pods (management endpoints) one node can hold. */
#define FURROW_MAX_ENDPOINTS 16384
/* Host-side ports (veths) with counters on one node. */
#define FURROW_MAX_PORTS 16384

/* L2 (802.1Q switch) ports on one node: VM ports and uplinks. */
#define FURROW_L2_MAX_PORTS FURROW_MAX_PORTS
/* (cluster network, VLAN) pairs present on one node. */
#define FURROW_L2_MAX_VLANS 16384
/* Member ports of one VLAN on one node (flood list length). */
#define FURROW_L2_MAX_MEMBERS 256
/* Learned and static MAC entries of one node, all networks together. */
#define FURROW_L2_MAX_FDB 65536
/* Cluster networks on one node. */
#define FURROW_L2_MAX_CNS 1024
/* Port security: MACs a VM port may send from besides its own (allowed
 * address pairs with a MAC of their own). */
#define FURROW_L2_PSEC_MAX_MACS 8
/* Port security: allowed address entries (a port's addresses, its allowed
 * address pairs, its link-local addresses) of one node, per family. */
#define FURROW_L2_PSEC_MAX_ADDRS 65536
/* MAC aging when netd set nothing for a cluster network: 300 s. */
#define FURROW_L2_DEFAULT_AGING_NS (300ULL * 1000000000ULL)

/* Floating VIP addresses one node may hold and fence (vip_fence.bpf.c). */
#define FURROW_VIP_FENCE_MAX 4096
