// SPDX-License-Identifier: (GPL-2.0 OR MIT)
/*
 * preserve-dscp datapath.
 *
 * Tunnel side (egress of the tunnel device): read the inner packet's DSCP and
 * carry it to the uplink in one of two ways:
 *   - map carrier:  store it in pdscp_flows keyed by the flow hash;
 *   - hash carrier: encode it, with a check field, into the flow hash itself.
 * Either way the program re-sets skb->hash with bpf_set_hash(), which marks it
 * as an L4 hash, so tunnels that clear non-L4 hashes (an IPv4 outer header
 * after ICMP or fragments) keep it. For the map the hash is mixed with the
 * tunnel's ifindex so identical inner flows on different tunnels (fe80::1 ->
 * fe80::2 on every WireGuard interface) get different keys.
 *
 * Uplink side (egress of the physical device): find the mark for the outer
 * packet and rewrite the outer DSCP, keeping ECN, the IPv6 flow label and a
 * valid IPv4 header checksum.
 *
 * Every program returns TC_ACT_UNSPEC so later filters on the hook still run.
 * Each entry point exists for Ethernet framing (l2) and for devices whose
 * packets start at the IP header (l3); the framing is a compile-time constant
 * so the per-packet path has no configuration lookup for it.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "preserve_dscp.h"

#define ETH_P_8021Q_BE  bpf_htons(0x8100)
#define ETH_P_8021AD_BE bpf_htons(0x88a8)
#define MAX_VLAN_TAGS   2
/* First 4 payload bytes of a WireGuard data message: type 4, 3 reserved zeros. */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define WG_MESSAGE_DATA 0x00000004u
#else
#define WG_MESSAGE_DATA 0x04000000u
#endif

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384); /* the loader sets the configured size */
	__type(key, __u32);
	__type(value, struct pdscp_flow);
} pdscp_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pdscp_config);
} pdscp_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PDSCP_COUNTER_SLOTS);
	__type(key, __u32);
	__type(value, struct pdscp_counters);
} pdscp_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pdscp_link_key);
	__type(value, struct pdscp_link);
} pdscp_links SEC(".maps");

/* Where the IP header is and what it says. */
struct ip_view {
	void *l3;       /* IP header */
	__u8 version;   /* 4 or 6 */
	__u8 tclass;    /* whole IPv4 TOS / IPv6 traffic-class byte */
	__u8 plain;     /* IPv4 without options, IPv6 without extension headers */
	__u8 proto;     /* IPv4 protocol / IPv6 next header */
};

static __always_inline struct pdscp_counters *counters(struct __sk_buff *skb)
{
	__u32 slot = skb->ifindex % PDSCP_COUNTER_SLOTS;

	return bpf_map_lookup_elem(&pdscp_stats, &slot);
}

static __always_inline void count(struct pdscp_counters *c, int which)
{
	if (c)
		c->v[which]++;
}

static __always_inline int ipv6_ext_header(__u8 nexthdr)
{
	switch (nexthdr) {
	case 0:   /* hop-by-hop options */
	case 43:  /* routing */
	case 44:  /* fragment */
	case 51:  /* authentication header */
	case 60:  /* destination options */
	case 135: /* mobility */
	case 139: /* host identity protocol */
	case 140: /* shim6 */
		return 1;
	}
	return 0;
}

/* Find the IP header. l3: the packet starts with it; otherwise Ethernet with
 * up to two VLAN tags. Returns 0 when the packet is not a complete IPv4/IPv6
 * header in the linear data. */
static __always_inline int parse_ip(struct __sk_buff *skb, const int l3, struct ip_view *v)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	void *cursor = data;
	__be16 proto;

	if (l3) {
		proto = skb->protocol;
	} else {
		struct ethhdr *eth = cursor;

		if ((void *)(eth + 1) > data_end)
			return 0;
		proto = eth->h_proto;
		cursor = eth + 1;
#pragma unroll
		for (int i = 0; i < MAX_VLAN_TAGS; i++) {
			if (proto != ETH_P_8021Q_BE && proto != ETH_P_8021AD_BE)
				break;
			/* tag: TCI (2 bytes) then the encapsulated EtherType */
			if (cursor + 4 > data_end)
				return 0;
			proto = *(__be16 *)(cursor + 2);
			cursor += 4;
		}
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = cursor;

		if ((void *)(iph + 1) > data_end || iph->version != 4 || iph->ihl < 5)
			return 0;
		v->l3 = iph;
		v->version = 4;
		v->tclass = iph->tos;
		v->plain = iph->ihl == 5;
		v->proto = iph->protocol;
		return 1;
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = cursor;
		__u8 *b = cursor;

		if ((void *)(ip6 + 1) > data_end || ip6->version != 6)
			return 0;
		v->l3 = ip6;
		v->version = 6;
		v->tclass = (b[0] << 4) | (b[1] >> 4);
		v->plain = !ipv6_ext_header(ip6->nexthdr);
		v->proto = ip6->nexthdr;
		return 1;
	}
	return 0;
}

static __always_inline __u32 mix32(__u32 x)
{
	/* A 32-bit finaliser with full avalanche (every input bit moves every
	 * output bit with probability ~1/2). */
	x ^= x >> 16;
	x *= 0x7feb352d;
	x ^= x >> 15;
	x *= 0x846ca68b;
	x ^= x >> 16;
	return x;
}

/*
 * Hash carrier layout of skb->hash:
 *
 *   31          20 19      14 13               0
 *  +--------------+----------+------------------+
 *  |  flow (12)   | DSCP ^ p |   check (14)     |
 *  +--------------+----------+------------------+
 *
 * flow:  the top 12 bits of the flow hash (mixed with the tunnel ifindex).
 *        Queue selection reads the top bits (reciprocal_scale in fq_codel,
 *        fq_pie, XPS, skb_tx_hash), so those see the flow's usual spread
 *        for up to 4096 buckets.
 * p:     6 bits derived from flow and the secret key, so bits 14-19 spread
 *        across flows instead of repeating the few DSCP values in use.
 * check: 14 bits: a keyed permutation of flow (low 12) and 2 bits of a
 *        keyed mix, XORed with an injective function of the DSCP. It
 *        spreads the low bits evenly per flow (modulo-based schedulers and
 *        RPS tables read them) and makes a hash that was set elsewhere pass
 *        with probability 2^-14; the uplink also requires the outer
 *        packet's UDP port to be a managed tunnel's.
 * The split keeps as many check bits as the queueing layers allow: the top
 * 10-12 bits are what the common schedulers use with their default sizes.
 * The price: per DSCP, flows map onto 4096 hash values, which is what a
 * 1024-bucket flow queue distinguishes anyway. (16/6/10 would keep 65536
 * values but let one unrelated hash in 1024 pass the check.)
 */
#define HC_FLOW_MASK   0xfff00000u
#define HC_DSCP_SHIFT  14
#define HC_CHECK_MASK  0x3fffu

static __always_inline __u32 hc_mix(__u32 flow, __u32 key)
{
	return mix32(flow ^ key);
}

/* A keyed permutation of the 12 flow bits, so the low 12 bits of the check
 * take each value exactly once over all flows: a plain mix of 4096 inputs
 * would fill low-bit buckets unevenly. Odd multipliers and xorshift are
 * bijections modulo 2^12. */
static __always_inline __u32 hc_spread(__u32 flow, __u32 key)
{
	__u32 x = ((flow >> 20) ^ key) & 0xfff;

	x = (x * 0x9e5u) & 0xfff;
	x ^= x >> 6;
	x = (x * 0x3b3u) & 0xfff;
	return x ^ ((key >> 12) & 0xfff);
}

static __always_inline __u32 hc_check(__u32 m, __u32 flow, __u32 key, __u32 dscp)
{
	/* dscp * odd constant is injective mod 2^14 for dscp < 64 */
	return (((m & 0x3000) | hc_spread(flow, key)) ^ (dscp * 0x2c9bu)) & HC_CHECK_MASK;
}

static __always_inline __u32 hc_encode(__u32 hash, __u32 dscp, __u32 key)
{
	__u32 flow = hash & HC_FLOW_MASK;
	__u32 m = hc_mix(flow, key);

	return flow | (((dscp ^ (m >> 26)) & 0x3f) << HC_DSCP_SHIFT) | hc_check(m, flow, key, dscp);
}

/* Returns the DSCP carried in hash, or -1 if the check field is wrong. */
static __always_inline int hc_decode(__u32 hash, __u32 key)
{
	__u32 flow = hash & HC_FLOW_MASK;
	__u32 m = hc_mix(flow, key);
	__u32 dscp = ((hash >> HC_DSCP_SHIFT) ^ (m >> 26)) & 0x3f;

	if ((hash & HC_CHECK_MASK) != hc_check(m, flow, key, dscp))
		return -1;
	return dscp;
}

static __always_inline __u32 flow_hash(struct __sk_buff *skb)
{
	/* Most packets arrive with their flow hash set (socket txhash, RX
	 * hash); the helper call is only needed when it is not. */
	__u32 h = skb->hash;

	return h ? h : bpf_get_hash_recalc(skb);
}

static __always_inline __u32 tunnel_flow_hash(struct __sk_buff *skb)
{
	/* Mixing in the tunnel's ifindex separates identical inner flows of
	 * different tunnels in the shared flow map. (The hash carrier shares
	 * nothing between tunnels and needs no such mix.) */
	return mix32(flow_hash(skb) ^ (skb->ifindex * 0x9e3779b9u));
}

static __always_inline int tunnel_side(struct __sk_buff *skb, const int l3, const int carrier,
				       const int checked)
{
	struct pdscp_counters *c = counters(skb);
	struct pdscp_config *cfg;
	struct ip_view v;
	__u32 zero = 0, hash, dscp;

	cfg = bpf_map_lookup_elem(&pdscp_config, &zero);
	if (!cfg || !parse_ip(skb, l3, &v)) {
		count(c, PDSCP_C_NOT_IP);
		return TC_ACT_UNSPEC;
	}
	dscp = cfg->policy[(v.tclass >> 2) & 0x3f] & 0x3f;

	if (carrier == PDSCP_CARRIER_HASH) {
		hash = hc_encode(flow_hash(skb), dscp, cfg->key);
		if (hash)
			bpf_set_hash(skb, hash);
		count(c, PDSCP_C_ENCODED);
		return TC_ACT_UNSPEC;
	}

	hash = tunnel_flow_hash(skb);
	/* Map carrier: where one port serves both carriers, a key that would
	 * pass the hash carrier's check is made to fail it (flip a check bit),
	 * so the uplink never reads a map key as an encoded mark. */
	if ((cfg->flags & PDSCP_CFG_MIXED_PORTS) && hc_decode(hash, cfg->key) >= 0)
		hash ^= 1;
	if (!hash)
		hash = 2;
	bpf_set_hash(skb, hash);

	struct pdscp_flow *cur = bpf_map_lookup_elem(&pdscp_flows, &hash);

	if (dscp == 0) {
		if (cur) {
			bpf_map_delete_elem(&pdscp_flows, &hash);
			count(c, PDSCP_C_REMOVED);
		} else {
			count(c, PDSCP_C_CURRENT);
		}
		return TC_ACT_UNSPEC;
	}
	if (cur && cur->dscp == dscp && cur->checked == checked) {
		count(c, PDSCP_C_CURRENT);
		return TC_ACT_UNSPEC;
	}
	struct pdscp_flow val = { .dscp = dscp, .checked = checked };

	bpf_map_update_elem(&pdscp_flows, &hash, &val, BPF_ANY);
	count(c, PDSCP_C_STORED);
	return TC_ACT_UNSPEC;
}

/* A UDP port in host order, bounded for the verifier: older verifiers (6.1)
 * lose the bounds of a byte swap, so the value is masked after a barrier
 * that keeps the compiler from dropping the mask as redundant. */
static __always_inline __u32 port_of(const __be16 *p)
{
	__u32 port = bpf_ntohs(*p);

	asm volatile("" : "+r"(port));
	return port & 0xffff;
}

/* Port roles of the outer packet (PDSCP_PORT_* in the low nibble), 0 when it
 * is not UDP behind a plain IP header or not from/to a managed port. */
static __always_inline __u32 outer_port_roles(struct __sk_buff *skb, struct ip_view *v,
					      struct pdscp_config *cfg)
{
	void *data_end = (void *)(long)skb->data_end;
	struct udphdr *udp;
	__u32 roles;

	if (v->proto != IPPROTO_UDP || !v->plain)
		return 0;
	udp = v->l3 + (v->version == 4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr));
	if ((void *)(udp + 1) > data_end)
		return 0;
	roles = (cfg->ports[port_of(&udp->source)] & 0x0f) |
		(cfg->ports[port_of(&udp->dest)] >> PDSCP_PORT_DST_SHIFT);
	if (roles & PDSCP_PORT_WG) {
		/* Only WireGuard data messages (type 4) carry tunnelled packets;
		 * handshakes and cookies keep the DSCP WireGuard gave them. */
		__u32 *msg = (void *)(udp + 1);

		if ((void *)(msg + 1) > data_end || *msg != WG_MESSAGE_DATA)
			return 0;
	}
	return roles;
}

static __always_inline void set_dscp(struct ip_view *v, __u32 dscp)
{
	__u8 tclass = (dscp << 2) | (v->tclass & 0x3);

	if (v->version == 4) {
		struct iphdr *iph = v->l3;
		__u8 *b = v->l3;
		/* The 16-bit header words holding the TOS before and after, built
		 * from bytes (not by re-reading through a cast pointer, which the
		 * compiler may fold under strict aliasing). */
		__u16 old = bpf_htons((b[0] << 8) | b[1]);
		__u16 new = bpf_htons((b[0] << 8) | tclass);
		__u32 sum;

		iph->tos = tclass;
		/* RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'); one's-complement sums
		 * are byte-order independent. */
		sum = (__u16)~iph->check + (__u16)~old + new;
		sum = (sum & 0xffff) + (sum >> 16);
		sum = (sum & 0xffff) + (sum >> 16);
		iph->check = ~sum;
	} else {
		__u8 *b = v->l3;

		b[0] = 0x60 | (tclass >> 4);
		b[1] = (tclass << 4) | (b[1] & 0x0f);
	}
}

static __always_inline int uplink_side(struct __sk_buff *skb, const int l3)
{
	struct pdscp_counters *c = counters(skb);
	struct pdscp_config *cfg;
	struct ip_view v;
	__u32 zero = 0, hash, roles;
	int dscp = -1;

	cfg = bpf_map_lookup_elem(&pdscp_config, &zero);
	if (!cfg || !parse_ip(skb, l3, &v)) {
		count(c, PDSCP_C_NOT_IP);
		return TC_ACT_UNSPEC;
	}
	if (!v.plain) {
		/* IPv4 options, IPv6 extension headers: never a managed outer packet */
		count(c, PDSCP_C_NOT_TUNNEL);
		return TC_ACT_UNSPEC;
	}
	hash = skb->hash;
	if (!hash) {
		count(c, PDSCP_C_HASH_ZERO);
		return TC_ACT_UNSPEC;
	}
	roles = outer_port_roles(skb, &v, cfg);
	if (!roles && !(cfg->flags & PDSCP_CFG_UNCHECKED_MAP)) {
		count(c, PDSCP_C_NOT_TUNNEL);
		return TC_ACT_UNSPEC;
	}
	if (roles & PDSCP_PORT_HASH) {
		dscp = hc_decode(hash, cfg->key);
		if (dscp < 0 && !(roles & PDSCP_PORT_MAP)) {
			count(c, PDSCP_C_CHECK_FAILED);
			return TC_ACT_UNSPEC;
		}
	}
	if (dscp < 0) {
		struct pdscp_flow *f = bpf_map_lookup_elem(&pdscp_flows, &hash);

		if (!f || (f->checked && !(roles & PDSCP_PORT_MAP))) {
			count(c, PDSCP_C_MISS);
			return TC_ACT_UNSPEC;
		}
		dscp = f->dscp & 0x3f;
	}
	if ((v.tclass >> 2) != dscp)
		set_dscp(&v, dscp);
	count(c, PDSCP_C_REWRITTEN);
	return TC_ACT_UNSPEC;
}

#define TUNNEL_PROG(name, l3, carrier, checked)                       \
	SEC("tc") int name(struct __sk_buff *skb)                      \
	{                                                               \
		return tunnel_side(skb, l3, carrier, checked);          \
	}

/* Program names stay within the kernel's 15 characters. */
TUNNEL_PROG(pdscp_tmap_l2, 0, PDSCP_CARRIER_MAP, 1)
TUNNEL_PROG(pdscp_tmap_l3, 1, PDSCP_CARRIER_MAP, 1)
TUNNEL_PROG(pdscp_tmapu_l2, 0, PDSCP_CARRIER_MAP, 0)
TUNNEL_PROG(pdscp_tmapu_l3, 1, PDSCP_CARRIER_MAP, 0)
TUNNEL_PROG(pdscp_thash_l2, 0, PDSCP_CARRIER_HASH, 1)
TUNNEL_PROG(pdscp_thash_l3, 1, PDSCP_CARRIER_HASH, 1)

SEC("tc") int pdscp_up_l2(struct __sk_buff *skb)
{
	return uplink_side(skb, 0);
}

SEC("tc") int pdscp_up_l3(struct __sk_buff *skb)
{
	return uplink_side(skb, 1);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
