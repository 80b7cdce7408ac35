// k8s/scripts/scale-workers.sh, run for real against a real gateway and real workers, with a stand-in
// `kubectl` on PATH (no API server here): it keeps the StatefulSet's replica count in a file, reports
// pods below that count as existing and Ready, and runs `kubectl exec deploy/kv-gateway -- ... kvctl`
// as the real kvctl against the gateway. Workers listen on their own loopback addresses under their
// pod DNS names (test/helpers/cluster-dns.mjs), as the gateway's address template expects.
// The point: an interrupted run is finished by running the script again.
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { admin } from './helpers/admin.js';
import { getAll, kvClient, putFiller } from './helpers/client.js';
import { Proc, ROOT, dist } from './helpers/processes.js';

const dir = mkdtempSync(join(tmpdir(), 'kvstore-scale-'));
const dnsFile = join(dir, 'dns.json');
const replicasFile = join(dir, 'replicas');
const bin = join(dir, 'bin');
// A /16 of loopback of its own (other tests use other parts of 127/8).
const net = `127.${180 + (process.pid % 60)}.${(process.pid >> 6) % 250}`;
const ip = (i: number): string => `${net}.${i + 2}`;
const procs: Proc[] = [];
let gateway: Proc;
let address = '';

const fakeKubectl = `#!/usr/bin/env node
const { readFileSync, writeFileSync } = require('node:fs');
const { spawnSync } = require('node:child_process');
const args = process.argv.slice(2).filter((a, i, all) => a !== '-n' && all[i - 1] !== '-n');
const replicas = () => Number(readFileSync(process.env.KVTEST_REPLICAS, 'utf8'));
const podIndex = (ref) => Number(/^pod\\/kv-worker-(\\d+)$/.exec(ref)?.[1] ?? -1);
const exists = (ref) => { const i = podIndex(ref); return i >= 0 && i < replicas(); };
const [verb] = args;
if (verb === 'get' && args[1] === 'statefulset') process.stdout.write(String(replicas()));
else if (verb === 'scale') writeFileSync(process.env.KVTEST_REPLICAS, /--replicas=(\\d+)/.exec(args.join(' '))[1]);
else if (verb === 'get') process.exit(exists(args[1]) ? 0 : 1);
else if (verb === 'wait') process.exit(exists(args.find((a) => a.startsWith('pod/'))) ? 0 : 1);
else if (verb === 'exec') {
  const kvctlArgs = args.slice(args.indexOf('--') + 1).slice(4); // node /app/dist/cli/kvctl.js --address X
  const r = spawnSync(process.execPath, [process.env.KVTEST_KVCTL, '--address', process.env.KVTEST_GATEWAY, '--timeout', '60000', ...kvctlArgs], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
} else { console.error('fake kubectl: unexpected ' + args.join(' ')); process.exit(64); }
`;

function scale(n: number): { code: number | null; out: string } {
  const r = spawnSync('bash', [join(ROOT, 'k8s', 'scripts', 'scale-workers.sh'), String(n)], {
    encoding: 'utf8',
    timeout: 120_000,
    env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, KVTEST_REPLICAS: replicasFile, KVTEST_GATEWAY: address, KVTEST_KVCTL: dist('cli/kvctl.js') },
  });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

const members = async (): Promise<string[]> => {
  const a = admin(address);
  try {
    return (await a.status()).members.map((m) => m.name);
  } finally {
    a.close();
  }
};

beforeAll(async () => {
  mkdirSync(bin);
  writeFileSync(join(bin, 'kubectl'), fakeKubectl);
  chmodSync(join(bin, 'kubectl'), 0o755);
  const names = Object.fromEntries(Array.from({ length: 5 }, (_, i) => [`kv-worker-${i}.kv-worker`, ip(i)]));
  writeFileSync(dnsFile, JSON.stringify({ names, domains: ['kv-worker'] }));
  writeFileSync(replicasFile, '3');
  // Every "pod" runs from the start; the stand-in kubectl decides which ones the StatefulSet has.
  for (let i = 0; i < 5; i++) {
    const w = new Proc(dist('worker/main.js'), ['--name', `kv-worker-${i}`, '--host', ip(i), '--port', '50052', '--metrics-port', '0', '--data-dir', join(dir, `pod-${i}`)]);
    procs.push(w);
    await w.start();
  }
  gateway = new Proc(
    dist('gateway/main.js'),
    ['--host', '127.0.0.1', '--port', '0', '--metrics-port', '0', '--members', 'kv-worker-0,kv-worker-1,kv-worker-2', '--worker-address-template', '{name}.kv-worker:50052', '--data-dir', join(dir, 'gateway')],
    { NODE_OPTIONS: `--import=${join(ROOT, 'test', 'helpers', 'cluster-dns.mjs')}`, KVTEST_CLUSTER_DNS: dnsFile },
  );
  procs.push(gateway);
  address = `127.0.0.1:${(await gateway.start()).port}`;
  const kv = kvClient(address);
  await putFiller(kv, 500, 100);
  kv.close();
});

afterAll(async () => {
  for (const p of procs) await p.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('scale-workers.sh', () => {
  it('finishes a scale-up that stopped after kubectl scale: the new pod runs but is not a member', async () => {
    writeFileSync(replicasFile, '4');
    const r = scale(4);
    expect(r.code, r.out).toBe(0);
    expect(await members()).toEqual(['kv-worker-0', 'kv-worker-1', 'kv-worker-2', 'kv-worker-3']);
  }, 150_000);

  it('finishes a scale-down that stopped after the removal, before kubectl scale', async () => {
    const removed = spawnSync(process.execPath, [dist('cli/kvctl.js'), '--address', address, '--timeout', '60000', 'cluster', 'remove', 'kv-worker-3', '--wait'], { encoding: 'utf8', timeout: 90_000 });
    expect(removed.status, removed.stderr).toBe(0);
    const r = scale(3);
    expect(r.code, r.out).toBe(0);
    expect(readFileSync(replicasFile, 'utf8')).toBe('3');
    expect(await members()).toEqual(['kv-worker-0', 'kv-worker-1', 'kv-worker-2']);
    const again = scale(3);
    expect(again.code, again.out).toBe(0);
    expect(again.out).toContain('already at 3 workers');
  }, 150_000);

  it('scales 3 -> 5 -> 3 in one run each', async () => {
    const up = scale(5);
    expect(up.code, up.out).toBe(0);
    expect(readFileSync(replicasFile, 'utf8')).toBe('5');
    expect(await members()).toEqual(['kv-worker-0', 'kv-worker-1', 'kv-worker-2', 'kv-worker-3', 'kv-worker-4']);
    const down = scale(3);
    expect(down.code, down.out).toBe(0);
    expect(readFileSync(replicasFile, 'utf8')).toBe('3');
    expect(await members()).toEqual(['kv-worker-0', 'kv-worker-1', 'kv-worker-2']);
    // Every key is still there after both moves.
    const kv = kvClient(address);
    try {
      expect(await getAll(kv, Array.from({ length: 500 }, (_, i) => `fill/${i}`), 100)).toEqual(Array.from({ length: 500 }, (_, i) => `f:fill/${i}`));
    } finally {
      kv.close();
    }
  }, 200_000);
});
