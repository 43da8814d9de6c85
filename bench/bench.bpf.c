// SPDX-License-Identifier: (GPL-2.0 OR MIT)
/*
 * Bench-only object: the real datapath plus wrapper programs for
 * BPF_PROG_TEST_RUN. test_run reuses one skb for all repeats and cannot set
 * skb->hash through ctx_in, so each wrapper first puts the skb into a fixed
 * state (hash from skb->mark, packet bytes reset) and then runs the
 * datapath's own tunnel_side()/uplink_side(). Every wrapper has an empty
 * counterpart doing exactly the same preparation, so wrapper / empty
 * isolates the datapath logic.
 *
 * Built by bench/run.ts: clang -O2 -g -target bpf -I/usr/include/<arch> -Ibpf
 */
#include "../bpf/preserve_dscp.bpf.c"

/* Offset of the IP header: l2 = untagged Ethernet (the bench packets). */
#define IP_OFF(l3) ((l3) ? 0 : 14)

/* Flip the inner DSCP between EF (46) and AF41 (34): a new DSCP every packet.
 * IPv4 TOS byte only (the tunnel-side bench packets are IPv4). */
static __always_inline void flip_inner_dscp(struct __sk_buff *skb, const int l3)
{
	__u8 *data = (void *)(long)skb->data;
	__u8 *end = (void *)(long)skb->data_end;
	__u8 *ip = data + IP_OFF(l3);

	if (ip + 2 > end)
		return;
	ip[1] ^= (46 << 2) ^ (34 << 2);
}

/* Reset the outer DSCP to 0 (keeping ECN), as a tunnel with `tos 0` sends it:
 * the uplink program then rewrites it on every packet. */
static __always_inline void reset_outer_dscp(struct __sk_buff *skb, const int l3)
{
	__u8 *data = (void *)(long)skb->data;
	__u8 *end = (void *)(long)skb->data_end;
	__u8 *ip = data + IP_OFF(l3);

	if (ip + 2 > end)
		return;
	if ((ip[0] >> 4) == 4) {
		ip[1] &= 0x03;          /* TOS: keep ECN */
	} else {
		ip[0] = 0x60;           /* version 6, traffic class bits 7-4 */
		ip[1] &= 0x3f;          /* traffic class bits 3-2 (DSCP), keep ECN + flow label */
	}
}

/* --- empty baselines -------------------------------------------------- */
SEC("tc") int b_empty(struct __sk_buff *skb)
{
	return TC_ACT_UNSPEC;
}

SEC("tc") int b_e_sethash(struct __sk_buff *skb)
{
	bpf_set_hash(skb, skb->mark);
	return TC_ACT_UNSPEC;
}

SEC("tc") int b_e_invalid(struct __sk_buff *skb)
{
	bpf_set_hash_invalid(skb);
	return TC_ACT_UNSPEC;
}

#define EMPTY_FLIP(name, l3)                        \
	SEC("tc") int name(struct __sk_buff *skb)   \
	{                                           \
		bpf_set_hash(skb, skb->mark);       \
		flip_inner_dscp(skb, l3);           \
		return TC_ACT_UNSPEC;               \
	}
EMPTY_FLIP(b_e_flip_l2, 0)
EMPTY_FLIP(b_e_flip_l3, 1)

#define EMPTY_RESET(name, l3)                       \
	SEC("tc") int name(struct __sk_buff *skb)   \
	{                                           \
		bpf_set_hash(skb, skb->mark);       \
		reset_outer_dscp(skb, l3);          \
		return TC_ACT_UNSPEC;               \
	}
EMPTY_RESET(b_e_reset_l2, 0)
EMPTY_RESET(b_e_reset_l3, 1)

/* --- tunnel side --------------------------------------------------------- */
/* Map carrier, hash fixed by skb->mark: the entry stays current. */
#define T_CUR(name, l3, carrier)                             \
	SEC("tc") int name(struct __sk_buff *skb)            \
	{                                                    \
		bpf_set_hash(skb, skb->mark);                \
		return tunnel_side(skb, l3, carrier, 1);     \
	}
T_CUR(b_tmap_l2, 0, PDSCP_CARRIER_MAP)
T_CUR(b_tmap_l3, 1, PDSCP_CARRIER_MAP)
T_CUR(b_thash_l2, 0, PDSCP_CARRIER_HASH)
T_CUR(b_thash_l3, 1, PDSCP_CARRIER_HASH)

/* Map carrier, new DSCP every packet: a map update every packet. */
#define T_NEW(name, l3)                                              \
	SEC("tc") int name(struct __sk_buff *skb)                    \
	{                                                            \
		bpf_set_hash(skb, skb->mark);                        \
		flip_inner_dscp(skb, l3);                            \
		return tunnel_side(skb, l3, PDSCP_CARRIER_MAP, 1);   \
	}
T_NEW(b_tmapnew_l2, 0)
T_NEW(b_tmapnew_l3, 1)

/* Map carrier, hash computed from scratch (flow dissector) every packet. */
#define T_SCRATCH(name, l3)                                          \
	SEC("tc") int name(struct __sk_buff *skb)                    \
	{                                                            \
		bpf_set_hash_invalid(skb);                           \
		return tunnel_side(skb, l3, PDSCP_CARRIER_MAP, 1);   \
	}
T_SCRATCH(b_tmapscr_l2, 0)
T_SCRATCH(b_tmapscr_l3, 1)

/* Map hit-ratio runs: like b_tmap_l2 but hands the resulting flow key back in
 * skb->mark (ctx_out), so the uplink pass can present the same hash. */
SEC("tc") int b_tmap_key(struct __sk_buff *skb)
{
	bpf_set_hash(skb, skb->mark);
	tunnel_side(skb, 0, PDSCP_CARRIER_MAP, 1);
	skb->mark = skb->hash;
	return TC_ACT_UNSPEC;
}

/* Hash carrier: hands the encoded skb->hash back in skb->mark, so the bench
 * feeds the uplink exactly what the tunnel side produced (no userspace copy
 * of the encoding to keep in step with the datapath). */
SEC("tc") int b_thash_key(struct __sk_buff *skb)
{
	bpf_set_hash(skb, skb->mark);
	tunnel_side(skb, 0, PDSCP_CARRIER_HASH, 1);
	skb->mark = skb->hash;
	return TC_ACT_UNSPEC;
}

/* --- uplink side --------------------------------------------------------- */
#define UP(name, l3)                                 \
	SEC("tc") int name(struct __sk_buff *skb)    \
	{                                            \
		bpf_set_hash(skb, skb->mark);        \
		reset_outer_dscp(skb, l3);           \
		return uplink_side(skb, l3);         \
	}
UP(b_up_l2, 0)
UP(b_up_l3, 1)
