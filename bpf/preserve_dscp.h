/* SPDX-License-Identifier: (GPL-2.0 OR MIT) */
/*
 * Definitions shared by the datapath (preserve_dscp.bpf.c) and the loader.
 * The loader mirrors these in src/layout.ts; test/datapath checks they agree
 * by loading the object and reading the maps' key and value sizes.
 */
#ifndef PRESERVE_DSCP_H
#define PRESERVE_DSCP_H

/* tc filter identity: the tool finds its own filters at this handle and
 * priority on the clsact egress hook, without any state of its own. */
#define PDSCP_TC_HANDLE   0xd5c0
#define PDSCP_TC_PRIORITY 0x0d5c

/* Per-interface counter slots: slot = ifindex % PDSCP_COUNTER_SLOTS. */
#define PDSCP_COUNTER_SLOTS 512
#define PDSCP_COUNTERS      16

/* Each packet moves exactly one counter, so packets seen = their sum (one
 * increment per packet, not two). */
enum pdscp_counter {
	PDSCP_C_RESERVED = 0,  /* unused: packets seen is the sum of the others */
	PDSCP_C_NOT_IP,        /* non-IP, truncated or unparsable: passed unchanged */
	PDSCP_C_STORED,        /* map carrier: entry written (new flow or new DSCP) */
	PDSCP_C_CURRENT,       /* map carrier: entry already held this DSCP (or none for DSCP 0) */
	PDSCP_C_REMOVED,       /* map carrier: DSCP 0, entry deleted */
	PDSCP_C_ENCODED,       /* hash carrier: DSCP written into skb->hash */
	PDSCP_C_REWRITTEN,     /* uplink: outer DSCP set from the carrier */
	PDSCP_C_MISS,          /* uplink: tunnel packet, no mark found */
	PDSCP_C_HASH_ZERO,     /* uplink: packet without a flow hash */
	PDSCP_C_NOT_TUNNEL,    /* uplink: not a managed tunnel's outer packet */
	PDSCP_C_CHECK_FAILED,  /* uplink: hash-carrier port, check field wrong */
	PDSCP_C_COUNT
};

struct pdscp_counters {
	__u64 v[PDSCP_COUNTERS];
};

/* Value of the flow map (map carrier), keyed by the flow hash. */
struct pdscp_flow {
	__u8 dscp;
	__u8 checked;  /* 1: only remark outer packets of a managed port */
	__u16 pad;
};

/* Outer UDP port roles, one byte per port in pdscp_config.ports.
 * Low nibble: the port as source port; high nibble: as destination. */
#define PDSCP_PORT_MAP  0x1  /* a map-carrier tunnel sends from/to it */
#define PDSCP_PORT_HASH 0x2  /* a hash-carrier tunnel sends from/to it */
#define PDSCP_PORT_WG   0x4  /* WireGuard: payload must be a data message */
#define PDSCP_PORT_DST_SHIFT 4

/* pdscp_config.flags */
#define PDSCP_CFG_UNCHECKED_MAP 0x1 /* a map-carrier tunnel has no known port */
#define PDSCP_CFG_MIXED_PORTS   0x2 /* a port serves map- and hash-carrier tunnels */

struct pdscp_config {
	__u32 key;          /* secret of the hash carrier's check field */
	__u32 flags;
	__u8 policy[64];    /* inner DSCP -> DSCP carried to the outer header */
	__u8 ports[65536];  /* PDSCP_PORT_* per UDP port */
};

/* Control-plane registry kept in the kernel (pdscp_links), never read by the
 * datapath: what the tool attached where. One entry per uplink (key
 * {uplink, 0}) and one per tunnel/uplink pair (key {tunnel, uplink}): a
 * tunnel may be served by several uplinks (multi-WAN failover). */
struct pdscp_link_key {
	__u32 ifindex;
	__u32 uplink;
};

#define PDSCP_ROLE_TUNNEL 1
#define PDSCP_ROLE_UPLINK 2

#define PDSCP_CARRIER_MAP  0
#define PDSCP_CARRIER_HASH 1

#define PDSCP_LINK_CREATED_CLSACT 0x1 /* the tool added the clsact qdisc */
#define PDSCP_LINK_L3             0x2 /* no link-layer header */

struct pdscp_link {
	__u32 role;
	__u32 reserved;
	__u16 sport;           /* tunnel: outer UDP source port, 0 if none */
	__u16 dport;           /* tunnel: outer UDP destination port, 0 if none */
	__u8 carrier;
	__u8 flags;
	__u8 wireguard;        /* tunnel: 1 if WireGuard */
	__u8 pad;
	char name[16];
};

#endif
