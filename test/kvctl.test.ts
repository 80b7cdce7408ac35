// kvctl against a real store: output and the exit code for each failure class.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kvClient } from './helpers/client.js';
import { TestCluster, dist } from './helpers/processes.js';

let cluster: TestCluster;

beforeAll(async () => {
  cluster = await TestCluster.start({ workers: 2 });
});
afterAll(async () => {
  await cluster?.stop();
});

function kvctl(args: string[], input?: string, env: Record<string, string> = {}): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [dist('cli/kvctl.js'), '--address', cluster.address, '--timeout', '3000', ...args], {
    input,
    env: { ...process.env, ...env },
    encoding: 'utf8',
    timeout: 20_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('kvctl', () => {
  it('puts, gets, lists and deletes, exiting 0', () => {
    expect(kvctl(['put', 'cli-key', 'first'])).toMatchObject({ code: 0, stdout: 'OK\n' });
    expect(kvctl(['put', 'cli-key', 'second'])).toMatchObject({ code: 0, stdout: 'OK (previous value: first)\n' });
    expect(kvctl(['get', 'cli-key'])).toMatchObject({ code: 0, stdout: 'second\n' });
    expect(kvctl(['put', 'from-stdin', '-'], 'piped value')).toMatchObject({ code: 0 });
    expect(kvctl(['--json', 'get', 'from-stdin']).stdout).toBe('{"key":"from-stdin","value":"piped value"}\n');
    expect(kvctl(['list']).stdout.split('\n')).toEqual(expect.arrayContaining(['cli-key', 'from-stdin']));
    expect(kvctl(['delete', 'cli-key'])).toMatchObject({ code: 0 });
    expect(kvctl(['delete', 'cli-key'])).toMatchObject({ code: 0 });
  });

  it('runs as `npx kvctl` does after a fresh build: the package bin, executable, by its own shebang', () => {
    // tsc writes it without the execute bit; `npm run build`'s postbuild sets it. Without it, npx
    // kvctl said "Permission denied" on a fresh clone.
    const r = spawnSync(dist('cli/kvctl.js'), ['--address', cluster.address, '--timeout', '3000', 'put', 'bin-key', 'v'], { encoding: 'utf8', timeout: 20_000 });
    expect(r.error).toBeUndefined();
    expect({ code: r.status, stdout: r.stdout }).toEqual({ code: 0, stdout: 'OK\n' });
  });

  it('exits 3 for a missing key, naming it', () => {
    const r = kvctl(['get', 'missing-key']);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/NOT_FOUND: .*missing-key/);
  });

  it('exits 2 for bad input and for usage errors', () => {
    const r = kvctl(['put', 'k'.repeat(129), 'v']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/INVALID_ARGUMENT: key: .*129/);
    expect(kvctl(['get']).code).toBe(2);
    expect(kvctl(['frobnicate']).code).toBe(2);
  });

  it('exits 2, not 5 ("busy or full"), for a key or value past the gateway\'s 64 KiB message limit', () => {
    // Before: "kvctl: RESOURCE_EXHAUSTED: Received message larger than max (100010 vs 65536)", exit 5.
    const big = kvctl(['put', 'big-value', '-'], 'v'.repeat(100_000));
    expect(big).toMatchObject({ code: 2, stderr: 'kvctl: INVALID_ARGUMENT: value: must be 0 to 2048 bytes, got 100000 bytes\n' });
    for (const cmd of ['get', 'delete']) {
      const r = kvctl([cmd, 'k'.repeat(100_000)]);
      expect(r, cmd).toMatchObject({ code: 2, stderr: 'kvctl: INVALID_ARGUMENT: key: must be 1 to 128 bytes, got 100000 bytes\n' });
    }
  });

  it('exits 2 for a bad flag value, naming the flag or env var, before calling anything', () => {
    for (const [args, env, says] of [
      [['--timeout', 'abc', 'get', 'x'], {}, /option '-t, --timeout <ms>' argument 'abc' is invalid\. expected a positive integer/],
      [['--timeout', '0', 'get', 'x'], {}, /argument '0' is invalid/],
      [['get', 'x'], { KV_TIMEOUT_MS: 'soon' }, /value 'soon' from env 'KV_TIMEOUT_MS' is invalid/],
      [['restore', 'x', '--workers', '0'], {}, /option '--workers <n>' argument '0' is invalid\. expected 1 to 1024/],
      // Before: accepted, and --wait waited forever (a NaN deadline is never passed).
      [['cluster', 'add', 'worker-5=127.0.0.1:1', '--wait', '--wait-timeout', 'abc'], {}, /option '--wait-timeout <ms>' argument 'abc' is invalid/],
      [['cluster', 'remove', 'worker-5', '--wait', '--wait-timeout', '-1'], {}, /option '--wait-timeout <ms>' argument '-1' is invalid/],
      // Before: exit 1, "kvctl: --cert and --key go together".
      [['--cert', '/nonexistent/client.crt', 'get', 'x'], {}, /--cert \(KV_CLIENT_CERT\) and --key \(KV_CLIENT_KEY\) go together/],
      [['get', 'x'], { KV_CLIENT_KEY: '/nonexistent/client.key' }, /--cert \(KV_CLIENT_CERT\) and --key \(KV_CLIENT_KEY\) go together/],
    ] as const) {
      // The address answers nothing: a call would fail with 4, not 2.
      const r = spawnSync(process.execPath, [dist('cli/kvctl.js'), '--address', '127.0.0.1:1', ...args], { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 20_000 });
      const what = `${args.join(' ')} ${JSON.stringify(env)}`;
      expect(r.status, `${what}: ${r.stderr}`).toBe(2);
      expect(r.stderr, what).toMatch(says);
      expect(r.stderr, what).not.toMatch(/\n\s+at /);
    }
  });

  it('exits 4 when the store is unreachable, saying which address it tried and how to choose another', () => {
    for (const args of [['get', 'x'], ['cluster', 'status']]) {
      const r = spawnSync(process.execPath, [dist('cli/kvctl.js'), '--address', '127.0.0.1:1', '--timeout', '2000', ...args], { encoding: 'utf8', timeout: 20_000 });
      expect(r.status).toBe(4);
      // Before: "kvctl: UNAVAILABLE: No connection established. Last error: Error: connect
      // ECONNREFUSED 127.0.0.1:1. Resolution note: " and nothing about what to do.
      expect(r.stderr).toMatch(/^kvctl: UNAVAILABLE: cannot reach the gateway at 127\.0\.0\.1:1 \(.*ECONNREFUSED.*\)\n/);
      expect(r.stderr).toMatch(/is the store running there\? .*--address or KV_ADDRESS/);
      expect(r.stderr).not.toMatch(/Resolution note/);
    }
  });

  it('passes on an UNAVAILABLE the gateway itself answered as it is, without the "cannot reach" hint', async () => {
    // A gateway whose only worker never answers: it listens, but refuses calls until it knows the membership.
    const dir = mkdtempSync(join(tmpdir(), 'kvctl-unready-'));
    const gw = spawn(process.execPath, [dist('gateway/main.js'), '--host', '127.0.0.1', '--port', '0', '--metrics-port', '0', '--members', 'w-0=127.0.0.1:1', '--data-dir', dir], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const port = await new Promise<number>((resolve, reject) => {
        let out = '';
        gw.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          const m = /"port":(\d+).*"gateway listening"/.exec(out);
          if (m) resolve(Number(m[1]));
        });
        gw.once('exit', (c) => reject(new Error(`gateway exited (${c}): ${out}`)));
      });
      const r = spawnSync(process.execPath, [dist('cli/kvctl.js'), '--address', `127.0.0.1:${port}`, '--timeout', '3000', 'get', 'x'], { encoding: 'utf8', timeout: 20_000 });
      expect(r.status).toBe(4);
      expect(r.stderr).toBe('kvctl: UNAVAILABLE: the gateway has not learned the cluster membership yet; retry shortly\n');
    } finally {
      gw.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);

  it('backup prints the id and location and exits 0', () => {
    const r = kvctl(['--timeout', '60000', 'backup']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^backup \d{8}T\d{9}Z complete\n {2}location: .+\n {2}keys: +\d+\n {2}bytes: +[1-9]\d*\n$/);
    expect(r.stdout).toContain(cluster.backupDir);
  });

  it('exits quietly when the reader of its output goes away (kvctl list | head -1): 0, or a failed command\'s code', async () => {
    const kv = kvClient(cluster.address);
    await Promise.all(Array.from({ length: 50 }, (_, i) => kv.put(`epipe/${i}`, 'v')));
    kv.close();
    // A gateway whose backups fail at once (no folder can be made under /proc): a failed command
    // keeps its exit code when its output goes nowhere (`kvctl backup | true` under pipefail).
    const failing = await cluster.startExtraGateway(['--backup-dir', '/proc/kvstore-no-such-dir']);
    const cases: [string, string[], number][] = [
      [cluster.address, ['list'], 0],
      [cluster.address, ['get', 'epipe/0'], 0],
      [failing.address, ['backup'], 1],
    ];
    for (const [address, args, expected] of cases) {
      // The reading end is closed before kvctl writes anything: every write fails with EPIPE.
      const child = spawn(process.execPath, [dist('cli/kvctl.js'), '--address', address, '--timeout', '10000', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      child.stdout.destroy();
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      const code = await new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)));
      clearTimeout(timer);
      expect(code, `${args.join(' ')}: ${stderr}`).toBe(expected);
      // A failed command still says why, on stderr, which the reader going away does not touch.
      expect(stderr).toMatch(expected === 0 ? /^$/ : /^kvctl: backup failed: cannot create backup directory/);
    }
    await failing.proc.stop();
  });

  it('a failed backup says why on stderr, not stdout (id=$(kvctl backup) must not swallow it); --json keeps stdout', async () => {
    const failing = await cluster.startExtraGateway(['--backup-dir', '/proc/kvstore-no-such-dir']);
    try {
      const run = (args: string[]) => spawnSync(process.execPath, [dist('cli/kvctl.js'), '--address', failing.address, '--timeout', '10000', ...args], { encoding: 'utf8', timeout: 20_000 });
      const human = run(['backup']);
      expect(human.status).toBe(1);
      // Before: stdout held the message and stderr was empty.
      expect(human.stdout).toBe('');
      expect(human.stderr).toMatch(/^kvctl: backup failed: cannot create backup directory "\/proc\/kvstore-no-such-dir".*\n$/);
      const json = run(['--json', 'backup']);
      expect(json.status).toBe(1);
      expect(JSON.parse(json.stdout)).toMatchObject({ success: false, message: expect.stringMatching(/^backup failed: /) });
    } finally {
      await failing.proc.stop();
    }
  });

  it('KV_CLIENT_TLS=false and =0 keep TLS off; another value is a usage error', () => {
    // The gateway here is plaintext: with TLS on, the call could not connect (exit 4).
    for (const value of ['false', '0', 'no', 'off']) {
      const r = kvctl(['get', 'missing-key'], undefined, { KV_CLIENT_TLS: value });
      expect(r.code, `KV_CLIENT_TLS=${value}: ${r.stderr}`).toBe(3);
    }
    expect(kvctl(['get', 'missing-key'], undefined, { KV_CLIENT_TLS: 'true' }).code).toBe(4);
    const bad = kvctl(['get', 'x'], undefined, { KV_CLIENT_TLS: 'sure' });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/value 'sure' from env 'KV_CLIENT_TLS' is invalid/);
  });

  it('names --admin-token-file when its file cannot be read, like --ca', () => {
    // Before: "kvctl: ENOENT: no such file or directory, open '/…'", naming no setting.
    for (const [args, env] of [
      [['--admin-token-file', '/nonexistent/kv-token', 'cluster', 'status'], {}],
      [['cluster', 'status'], { KV_ADMIN_TOKEN_FILE: '/nonexistent/kv-token' }],
    ] as const) {
      const r = kvctl([...args], undefined, env);
      expect(r.code, r.stderr).toBe(1);
      expect(r.stderr).toBe('kvctl: --admin-token-file (KV_ADMIN_TOKEN_FILE): cannot read /nonexistent/kv-token: ENOENT\n');
    }
  });

  it('--help lists the exit codes', () => {
    const r = kvctl(['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('3  key not found');
  });
});

describe('kvctl cluster', () => {
  it('adds and removes a worker online, waiting for the keys to move, and shows status', async () => {
    const kv = kvClient(cluster.address);
    const keys = Array.from({ length: 300 }, (_, i) => `cluster/${i}`);
    await Promise.all(keys.map((k) => kv.put(k, `v:${k}`)));
    const w = await cluster.startWorker('worker-9');
    const added = kvctl(['--timeout', '60000', 'cluster', 'add', `worker-9=127.0.0.1:${w.listening!.port}`, '--wait', '--wait-timeout', '60000']);
    expect(added.code, added.stderr).toBe(0);
    expect(added.stdout).toMatch(/epoch \d+, stable/);
    const status = kvctl(['--json', 'cluster', 'status']);
    const s = JSON.parse(status.stdout) as { phase: string; members: { name: string }[] };
    expect(s.phase).toBe('stable');
    expect(s.members.map((m) => m.name)).toEqual(['worker-0', 'worker-1', 'worker-9']);
    expect(kvctl(['cluster', 'add', `worker-0=127.0.0.1:1`]).stderr).toMatch(/ALREADY_EXISTS: worker worker-0 is already a member/);
    // A bad address is the caller's mistake (exit 2), not an internal error.
    expect(kvctl(['cluster', 'add', 'worker-8=127.0.0.1:99999'])).toMatchObject({ code: 2, stderr: expect.stringMatching(/INVALID_ARGUMENT: worker worker-8: port 99999/) });
    const removed = kvctl(['--timeout', '60000', 'cluster', 'remove', 'worker-9', '--wait', '--wait-timeout', '60000']);
    expect(removed.code, removed.stderr).toBe(0);
    expect(kvctl(['cluster', 'status']).stdout).not.toContain('worker-9');
    expect(await Promise.all(keys.map((k) => kv.get(k)))).toEqual(keys.map((k) => `v:${k}`));
    kv.close();
  }, 120_000);
});

describe('kvctl cluster --wait', () => {
  it('says how far the migration got when --wait-timeout runs out, and exits 4', async () => {
    // A mover held to 1 key a second cannot finish 40 keys within the 1 ms kvctl waits.
    const slow = await TestCluster.start({ workers: 2, gatewayArgs: ['--migration-rate', '1'] });
    try {
      const kv = kvClient(slow.address);
      await Promise.all(Array.from({ length: 40 }, (_, i) => kv.put(`wait/${i}`, 'v')));
      kv.close();
      const w = await slow.startWorker('worker-7');
      const r = spawnSync(
        process.execPath,
        [dist('cli/kvctl.js'), '--address', slow.address, '--timeout', '20000', 'cluster', 'add', `worker-7=127.0.0.1:${w.listening!.port}`, '--wait', '--wait-timeout', '1'],
        { encoding: 'utf8', timeout: 30_000 },
      );
      expect(r.status, r.stderr).toBe(4);
      // Before: "kvctl: DEADLINE_EXCEEDED: timeout".
      expect(r.stderr).toMatch(/^kvctl: migration still running after 1 ms \(--wait-timeout\): \d+ keys remaining; it goes on in the background, see kvctl cluster status\n$/);
    } finally {
      await slow.stop();
    }
  }, 60_000);
});
