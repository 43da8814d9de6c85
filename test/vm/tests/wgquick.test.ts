/**
 * wg-quick integration: a wg-quick configuration with
 *   PostUp  = preserve-dscp %i veth0
 *   PreDown = preserve-dscp %i veth0 --unload
 * (preserve-dscp found on PATH through a symlink in a temporary folder):
 * `wg-quick up` attaches (filters on wg9 and veth0, outer packets carry the
 * inner DSCP), `wg-quick down` removes the filters again.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { test } from 'node:test';
import { runAsync } from '../../../src/demo/exec.js';
import { guardNamespaces, withLab } from '../../e2e/lib/lab.js';
import { startAll, wgData, wgPackets } from '../lib/capture.js';
import { bash, disposeWg, makeWg, ourFilters, UNDER, UPLINK, type WgTopo } from '../lib/wg.js';
import { CLI, EF, status, vmOnly } from '../lib/tool.js';

vmOnly();
guardNamespaces();

const DIR = '/tmp/wgq';
const CONF = `${DIR}/wg9.conf`;
const PORT_A = 51829;
const PORT_B = 52829;

test('wg-quick up/down with PostUp/PreDown lines attaches and removes the filters', async () => {
  await withLab('wg quick', async (lab) => {
    let topo: WgTopo | undefined;
    rmSync(DIR, { recursive: true, force: true });
    try {
      topo = await makeWg(lab, 0, 4);
      const { a, b } = topo;
      mkdirSync(`${DIR}/bin`, { recursive: true, mode: 0o700 });
      symlinkSync(CLI, `${DIR}/bin/preserve-dscp`);
      // Keys, and B's end of the tunnel.
      await bash(
        [
          'umask 077',
          `for s in a b; do wg genkey > ${DIR}/$s.key; wg pubkey < ${DIR}/$s.key > ${DIR}/$s.pub; done`,
          `nsenter --net=/run/netns/${b} sh -c 'ip link add wg9 type wireguard && wg set wg9 private-key ${DIR}/b.key listen-port ${PORT_B} peer '"$(cat ${DIR}/a.pub)"' allowed-ips 10.209.0.1/32 endpoint ${UNDER[4].a}:${PORT_A} && ip addr add 10.209.0.2/24 dev wg9 && ip link set wg9 up'`,
        ].join('\n'),
      );
      const conf = [
        '[Interface]',
        `PrivateKey = ${readFileSync(`${DIR}/a.key`, 'utf8').trim()}`,
        `ListenPort = ${PORT_A}`,
        'Address = 10.209.0.1/24',
        `PostUp = preserve-dscp %i ${UPLINK}`,
        `PreDown = preserve-dscp %i ${UPLINK} --unload`,
        '',
        '[Peer]',
        `PublicKey = ${readFileSync(`${DIR}/b.pub`, 'utf8').trim()}`,
        'AllowedIPs = 10.209.0.2/32',
        `Endpoint = ${UNDER[4].b}:${PORT_B}`,
        '',
      ].join('\n');
      writeFileSync(CONF, conf, { mode: 0o600 });
      const env = { ...process.env, PATH: `${DIR}/bin:${process.env.PATH}` };
      const up = await runAsync('nsenter', [`--net=/run/netns/${a}`, 'wg-quick', 'up', CONF], { env, timeoutMs: 60_000 });
      console.log(`wg-quick up: exit ${up.code}\n${up.stderr.trim().replace(/^/gm, '    ')}`);
      assert.equal(up.code, 0, up.stderr);
      assert.equal(ourFilters(a, 'wg9').length, 1, 'filter on wg9 after wg-quick up');
      assert.equal(ourFilters(a, UPLINK).length, 1, 'filter on veth0 after wg-quick up');
      const st = await status(a);
      assert.equal(st.interfaces.find((x) => x.ifname === 'wg9')?.outerSport, PORT_A);

      const [cap] = await startAll([[a, UPLINK, `udp and src port ${PORT_A}`, 'out']]);
      await bash(`nsenter --net=/run/netns/${a} ping -n -q -c 5 -i 0.1 -W 5 -Q 0xb8 10.209.0.2 >/dev/null`);
      const data = wgData(wgPackets(await cap.stop()), PORT_A);
      const ef = data.filter((p) => p.ip.dscp === EF).length;
      console.log(`wg-quick: ${ef} of ${data.length} outer data packets of wg9 carry EF`);
      assert.ok(data.length >= 5 && ef === data.length);

      const down = await runAsync('nsenter', [`--net=/run/netns/${a}`, 'wg-quick', 'down', CONF], { env, timeoutMs: 60_000 });
      console.log(`wg-quick down: exit ${down.code}\n${down.stderr.trim().replace(/^/gm, '    ')}`);
      assert.equal(down.code, 0, down.stderr);
      assert.equal(ourFilters(a, UPLINK).length, 0, 'veth0 filter gone after wg-quick down');
      const st2 = await status(a);
      assert.equal(st2.loaded, false, JSON.stringify(st2));
    } finally {
      rmSync(DIR, { recursive: true, force: true });
      disposeWg(topo);
    }
  });
});
