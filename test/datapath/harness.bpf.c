// SPDX-License-Identifier: (GPL-2.0 OR MIT)
/*
 * Test-only object: the real datapath plus wrapper programs that let
 * BPF_PROG_TEST_RUN control and observe skb->hash, which struct __sk_buff
 * in ctx_in cannot set.
 *
 * Every wrapper takes the flow hash from skb->mark: mark != 0 sets it with
 * bpf_set_hash(skb, mark) (an L4 software hash, as on a real tunnel device);
 * mark == 0 makes it invalid so bpf_get_hash_recalc() dissects the packet
 * ("hash from scratch"). Tunnel wrappers write the resulting skb->hash into
 * cb[0], which ctx_out returns.
 */
#include "../../bpf/preserve_dscp.bpf.c"

static __always_inline void preset_hash(struct __sk_buff *skb)
{
	if (skb->mark)
		bpf_set_hash(skb, skb->mark);
	else
		bpf_set_hash_invalid(skb);
}

#define H_TUNNEL(name, l3, carrier, checked)                           \
	SEC("tc") int name(struct __sk_buff *skb)                      \
	{                                                               \
		int r;                                                  \
		preset_hash(skb);                                       \
		r = tunnel_side(skb, l3, carrier, checked);             \
		skb->cb[0] = skb->hash;                                 \
		return r;                                               \
	}

H_TUNNEL(h_tmap_l2, 0, PDSCP_CARRIER_MAP, 1)
H_TUNNEL(h_tmap_l3, 1, PDSCP_CARRIER_MAP, 1)
H_TUNNEL(h_tmapu_l2, 0, PDSCP_CARRIER_MAP, 0)
H_TUNNEL(h_tmapu_l3, 1, PDSCP_CARRIER_MAP, 0)
H_TUNNEL(h_thash_l2, 0, PDSCP_CARRIER_HASH, 1)
H_TUNNEL(h_thash_l3, 1, PDSCP_CARRIER_HASH, 1)

/* Uplink: the hash is exactly skb->mark (0: no hash). */
#define H_UPLINK(name, l3)                                              \
	SEC("tc") int name(struct __sk_buff *skb)                      \
	{                                                               \
		bpf_set_hash(skb, skb->mark);                           \
		return uplink_side(skb, l3);                            \
	}

H_UPLINK(h_up_l2, 0)
H_UPLINK(h_up_l3, 1)
