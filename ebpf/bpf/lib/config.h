/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Map sizes. Mirrored in ebpf/src/maps.rs (a test checks the loaded maps
 * against the Rust constants); ebpf/README.md explains the choices. */
#pragma once

/* Pods (management endpoints) one node can hold. */
#define FURROW_MAX_ENDPOINTS 16384
/* Host-side ports (veths) with counters on one node. */
#define FURROW_MAX_PORTS 16384
