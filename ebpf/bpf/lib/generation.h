/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The datapath generation: a read-only global the loader sets
 * (EbpfLoader::set_global, DatapathConfig::generation; netd's hidden
 * --datapath-generation, for upgrade drills and tests only). It is part
 * of the programs' identity as netd computes it: a value other than the
 * pinned programs' makes netd load new programs (new kernel program
 * objects, new ids) and swap them into the existing tcx links, which is
 * exactly what an upgrade that changes a program does. 0 normally. */
#ifndef FURROW_GENERATION_H
#define FURROW_GENERATION_H

volatile const __u32 furrow_datapath_generation = 0;

#endif
