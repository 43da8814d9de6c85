/** Assertions over measured flows: outer DSCP/ECN against inner DSCP/ECN. */
import assert from 'node:assert/strict';
import type { FlowResult } from '../../../src/demo/measure.js';
import type { TunnelPacket } from '../../../src/demo/pcap.js';
import { ECN_CE, ECN_ECT0 } from '../../../src/demo/traffic.js';

/** What RFC 6040 encapsulation (Linux INET_ECN_encapsulate) puts in the outer ECN field. */
export function encapEcn(innerEcn: number): number {
  return innerEcn === ECN_CE ? ECN_ECT0 : innerEcn;
}

function describe(r: FlowResult): string {
  return `${r.label} tclass 0x${r.flow.tclass.toString(16)}${r.flow.port ? ` port ${r.flow.port}` : ''}`;
}

function packetsOf(r: FlowResult): TunnelPacket[] {
  assert.ok(r.packets.length > 0, `${describe(r)}: no outer packet captured`);
  return r.packets;
}

/** The inner packets carry what the sender asked for (so the test measures the right thing). */
function checkInner(r: FlowResult): void {
  for (const p of packetsOf(r)) {
    const inner = p.inner as NonNullable<TunnelPacket['inner']>;
    assert.equal(inner.dscp, r.innerDscp, `${describe(r)}: inner DSCP ${inner.dscp}, sender asked ${r.innerDscp}`);
    // TCP owns the ECN bits of its packets (IP_TOS/IPV6_TCLASS ECN bits are ignored); others keep them.
    if (r.flow.kind !== 'tcp') assert.equal(inner.ecn, r.innerEcn, `${describe(r)}: inner ECN ${inner.ecn}, sender asked ${r.innerEcn}`);
  }
}

/** Without preserve-dscp: VXLAN tos 0 leaves outer DSCP 0 (and copies ECN). */
export function expectOuterZero(results: FlowResult[]): void {
  assert.ok(results.length > 0);
  for (const r of results) {
    checkInner(r);
    for (const p of r.packets) {
      assert.equal(p.outer.dscp, 0, `${describe(r)}: outer DSCP ${p.outer.dscp} without preserve-dscp`);
      assert.equal(p.outer.ecn, encapEcn((p.inner as { ecn: number }).ecn), `${describe(r)}: outer ECN`);
    }
  }
}

/** With preserve-dscp: outer DSCP equals inner DSCP on every packet, ECN as the tunnel set it. */
export function expectPreserved(results: FlowResult[]): void {
  assert.ok(results.length > 0);
  for (const r of results) {
    checkInner(r);
    for (const p of r.packets) {
      const inner = p.inner as { dscp: number; ecn: number };
      assert.equal(p.outer.dscp, inner.dscp, `${describe(r)}: outer DSCP ${p.outer.dscp}, inner ${inner.dscp}`);
      assert.equal(p.outer.ecn, encapEcn(inner.ecn), `${describe(r)}: outer ECN ${p.outer.ecn}, inner ECN ${inner.ecn}`);
    }
  }
}

/** At least one packet with ECT(0) inner and outer: the ECN test has teeth. */
export function expectSomeEct0(results: FlowResult[]): void {
  const ect = results.flatMap((r) => r.packets).filter((p) => p.inner?.ecn === ECN_ECT0);
  assert.ok(ect.length > 0, 'no ECT(0) packet was captured');
  for (const p of ect) assert.equal(p.outer.ecn, ECN_ECT0, 'ECT(0) inner must leave with ECT(0) outer');
}
