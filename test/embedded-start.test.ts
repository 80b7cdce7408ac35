// `npm start` as a user runs it: the supervisor brings up a gateway and workers, and SIGINT / SIGTERM
// stops every one of them cleanly with exit code 0. A bad flag or KV_* value is a one-line usage error.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { kvClient } from './helpers/client.js';
import { dist, startEmbedded, waitFor } from './helpers/processes.js';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('server command lines', () => {
  it('refuse a bad number or port in one line naming the flag or env var, exit 1, and start nothing', () => {
    for (const [script, args, env, says] of [
      ['cli/start.js', ['--workers', 'x'], {}, /option '--workers <n>' argument 'x' is invalid\. expected 1 to 64/],
      ['gateway/main.js', ['--port', '50o51'], {}, /option '--port <port>' argument '50o51' is invalid/],
      ['worker/main.js', ['--name', 'w', '--port', '70000'], {}, /option '--port <port>' argument '70000' is invalid\. expected 0 to 65535/],
      ['cli/start.js', [], { KV_WORKERS: '0' }, /value '0' from env 'KV_WORKERS' is invalid\. expected 1 to 64/],
      ['cli/start.js', [], { KV_PORT: '99999' }, /value '99999' from env 'KV_PORT' is invalid/],
      // Before: accepted, and a worker died on port 65536, which nobody had typed.
      ['cli/start.js', ['--port', '65535'], {}, /3 workers need gRPC ports 65536 to 65538 \(from --port 65535 \+ 1\), past 65535/],
      ['cli/start.js', ['--metrics-port', '65534', '--workers', '2'], {}, /2 workers need metrics ports 65535 to 65536 \(after --metrics-port 65534\), past 65535/],
      // Before: accepted, and the gateway never became ready (0 ms deadlines) or refused every call.
      ['gateway/main.js', ['--members', 'w-0=127.0.0.1:1', '--request-timeout-ms', '0'], {}, /option '--request-timeout-ms <ms>' argument '0' is invalid\. expected 1 to 2147483647/],
      ['gateway/main.js', ['--members', 'w-0=127.0.0.1:1'], { KV_MAX_INFLIGHT: '0' }, /value '0' from env 'KV_MAX_INFLIGHT' is invalid\. expected a positive integer/],
      ['gateway/main.js', ['--members', 'w-0=127.0.0.1:1', '--fanout-timeout-ms', '0'], {}, /option '--fanout-timeout-ms <ms>' argument '0' is invalid/],
      ['gateway/main.js', ['--members', 'w-0=127.0.0.1:1'], { KV_BACKUP_TIMEOUT_MS: '99999999999' }, /value '99999999999' from env 'KV_BACKUP_TIMEOUT_MS' is invalid/],
      ['gateway/main.js', ['--members', 'w-0=127.0.0.1:1', '--migration-rate', '0'], {}, /option '--migration-rate <keys\/s>' argument '0' is invalid/],
      ['gateway/main.js', ['--members', 'w-0=127.0.0.1:1', '--backup-keep', '0'], {}, /option '--backup-keep <n>' argument '0' is invalid/],
    ] as const) {
      const r = spawnSync(process.execPath, [dist(script), ...args], { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 15_000 });
      const what = `${script} ${args.join(' ')} ${JSON.stringify(env)}`;
      expect(r.status, what).toBe(1);
      expect(r.stderr, what).toMatch(says);
      expect(r.stderr, what).not.toMatch(/\n\s+at /); // no stack trace
      // The error line and a pointer to --help, not the error followed by 80 lines of help.
      expect(r.stderr.trim().split('\n'), what).toEqual([expect.stringMatching(says), '(--help lists every setting)']);
    }
  });
});

describe('--help of the servers', () => {
  it('says, for every port flag, that 0 picks a free port (README: "a port may be 0 where --help says so")', () => {
    // Every <port> flag accepts 0; the gateway's --metrics-port and npm start's --port did not say so.
    for (const script of ['cli/start.js', 'gateway/main.js', 'worker/main.js']) {
      const help = spawnSync(process.execPath, [dist(script), '--help'], { encoding: 'utf8', timeout: 15_000 }).stdout.replace(/\s+/g, ' ');
      const portFlags = help.split(/ (?=--[a-z-]+ <)/).filter((o) => /^--[a-z-]+ <port>/.test(o));
      expect(portFlags.length, script).toBeGreaterThan(0);
      for (const o of portFlags) expect(o, script).toMatch(/0 = (pick a free one|free ports)/);
    }
  });

  it("npm start's --internal-tls-cert says that the gateway and the workers share it, with both usages", () => {
    // Before: "PEM client certificate the gateway presents to workers", the gateway's own text; npm start
    // also gives it to every worker as its server certificate (docs/security.md, step 5).
    const help = spawnSync(process.execPath, [dist('cli/start.js'), '--help'], { encoding: 'utf8', timeout: 15_000 }).stdout.replace(/\s+/g, ' ');
    const cert = help.split(/ (?=--[a-z-]+ <)/).find((o) => o.startsWith('--internal-tls-cert '));
    expect(cert).toMatch(/gateway and the workers/);
    expect(cert).toMatch(/serverAuth and clientAuth/);
  });
});

describe('gateway members', () => {
  it('a bad member list stops the gateway at start-up with exit 1: one usage line naming --members or KV_MEMBERS and the worker', () => {
    // Before: it started and redialled 127.0.0.1:99999 for ever (ERR_SOCKET_BAD_PORT). Then: a fatal
    // JSON log line with a stack trace that named the worker but not the setting to fix.
    const base = ['--host', '127.0.0.1', '--port', '0', '--metrics-port', '0'];
    for (const [args, env, says] of [
      [['--members', 'w-0=127.0.0.1:99999'], {}, /option '--members <list>' argument 'w-0=127\.0\.0\.1:99999' is invalid\. worker w-0: port 99999 in .* is not 1 to 65535/],
      [[], { KV_MEMBERS: 'w-0=127.0.0.1:99999' }, /option '--members <list>' value 'w-0=127\.0\.0\.1:99999' from env 'KV_MEMBERS' is invalid\. worker w-0: port 99999/],
      [['--members', 'worker-0'], {}, /option '--members <list>' argument 'worker-0' is invalid\. worker worker-0 has no address: write "worker-0=host:port" or set --worker-address-template/],
      [['--members', 'Worker_0=h:1'], {}, /option '--members <list>' argument 'Worker_0=h:1' is invalid\. worker name "Worker_0" must be a DNS label/],
    ] as const) {
      const r = spawnSync(process.execPath, [dist('gateway/main.js'), ...base, ...args], { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 15_000 });
      const what = `${args.join(' ')} ${JSON.stringify(env)}`;
      expect(r.status, what + r.stdout + r.stderr).toBe(1);
      expect(r.stderr, what).toMatch(says);
      expect(r.stderr, what).not.toMatch(/\n\s+at |"stack"/); // no stack trace
      expect(r.stdout, what).not.toMatch(/gateway listening/);
    }
  });
});

describe('a port in use', () => {
  it('stops the process with exit 1, naming the port, the setting that chose it and what to do', async () => {
    // Before: "gateway failed to start: listen EADDRINUSE: address already in use 127.0.0.1:9100", and
    // from npm start only "gateway exited before listening (code 1, signal null)".
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    const port = (holder.address() as { port: number }).port;
    const dir = mkdtempSync(join(tmpdir(), 'kvstore-port-in-use-'));
    try {
      const inUse = `cannot listen on 127\\.0\\.0\\.1:${port} \\(%s\\): listen EADDRINUSE: address already in use 127\\.0\\.0\\.1:${port}: another process is using it \\(another kvstore\\?\\); stop it or choose another port`;
      const grpcPort = new RegExp(inUse.replace('%s', 'gRPC port, --port / KV_PORT'));
      const metricsPort = new RegExp(inUse.replace('%s', 'metrics port, --metrics-port / KV_METRICS_PORT'));
      const local = ['--host', '127.0.0.1'];
      for (const [script, args, says] of [
        ['gateway/main.js', [...local, '--port', String(port), '--metrics-port', '0', '--members', 'w-0=127.0.0.1:1'], grpcPort],
        ['worker/main.js', [...local, '--name', 'w', '--port', String(port), '--metrics-port', '0', '--data-dir', join(dir, 'a')], grpcPort],
        ['worker/main.js', [...local, '--name', 'w', '--port', '0', '--metrics-port', String(port), '--data-dir', join(dir, 'b')], metricsPort],
        ['cli/start.js', ['--workers', '1', '--port', '0', '--metrics-port', String(port), '--data-dir', join(dir, 'c')], metricsPort],
      ] as const) {
        const r = await new Promise<{ status: number | null; output: string }>((resolve) => {
          const child = spawn(process.execPath, [dist(script), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
          let output = '';
          child.stdout.on('data', (d: Buffer) => (output += d.toString()));
          child.stderr.on('data', (d: Buffer) => (output += d.toString()));
          const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
          child.once('close', (status) => {
            clearTimeout(timer);
            resolve({ status, output });
          });
        });
        const what = `${script} ${args.join(' ')}`;
        expect(r.status, `${what}: ${r.output}`).toBe(1);
        expect(r.output, what).toMatch(says);
        if (script === 'cli/start.js') expect(r.output, what).toMatch(/gateway exited before listening \(exit code 1; its own log line above says why\)/);
      }
    } finally {
      holder.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});

/** How `exited` settles, or 'hung' if it has not after `ms`. */
function orHung(exited: Promise<number | string>, ms: number): Promise<number | string> {
  return Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('hung'), ms).unref())]);
}

/** The PIDs of `pid`'s children now (Linux /proc). */
function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(' ').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/**
 * Starts a server with stdout on a pipe, waits until its output matches `ready`, then closes the
 * pipe's reading end (a `| head -1`, or a log shipper that died) and sends `signal`: the exit code,
 * or 'hung'.
 */
async function stopWithStdoutGone(script: string, args: string[], ready: RegExp, signal: NodeJS.Signals): Promise<number | string> {
  const child = spawn(process.execPath, [dist(script), ...args], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, KV_LOG_LEVEL: 'info' } });
  const exited = new Promise<number | string>((resolve) => child.once('exit', (code, sig) => resolve(code ?? String(sig))));
  try {
    let out = '';
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        if (ready.test(out)) resolve();
      });
      void exited.then((c) => reject(new Error(`${script} exited (${c}) before logging ${ready}`)));
    });
    child.stdout!.removeAllListeners('data');
    await new Promise((r) => setTimeout(r, 200)); // so the stop path, not start-up, does the next logging
    child.stdout!.destroy();
    child.kill(signal);
    return await orHung(exited, 15_000);
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
}

describe('stopping with nobody reading stdout', () => {
  it('a worker on SIGTERM and npm start on SIGINT still exit 0', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kvstore-epipe-'));
    try {
      const worker = ['--name', 'w', '--host', '127.0.0.1', '--port', '0', '--metrics-port', '0', '--data-dir', join(dir, 'w')];
      expect(await stopWithStdoutGone('worker/main.js', worker, /worker listening/, 'SIGTERM')).toBe(0);
      const store = ['--workers', '2', '--port', '0', '--metrics-port', '0', '--data-dir', join(dir, 'store')];
      expect(await stopWithStdoutGone('cli/start.js', store, /kvstore ready/, 'SIGINT')).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});

interface LogLine {
  msg: string;
  time: string;
  signal?: string;
}

/**
 * `npm start` (cli/start.js) with 2 workers on free ports and its output collected. `group`: it leads
 * its own process group, as a shell's foreground job does, so a terminal's Ctrl-C can be imitated.
 */
function launchStore(group = false) {
  const dir = mkdtempSync(join(tmpdir(), 'kvstore-stop-'));
  const child = spawn(process.execPath, [dist('cli/start.js'), '--workers', '2', '--port', '0', '--metrics-port', '0', '--data-dir', dir], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, KV_LOG_LEVEL: 'info' },
    detached: group,
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  // 'close', not 'exit': by then every last line is in (the children share the pipe).
  const closed = new Promise<number | string>((resolve) => child.once('close', (code, sig) => resolve(code ?? String(sig))));
  const kids = new Set<number>();
  return {
    child,
    kids,
    out: () => out,
    lines: () => out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as LogLine),
    /** The children now, remembered for the checks and the clean-up. */
    track(): number[] {
      const now = childrenOf(child.pid!);
      for (const pid of now) kids.add(pid);
      return now;
    },
    exitCode: (): Promise<number | string> => orHung(closed, 30_000),
    allGone: (): Promise<boolean> => waitFor('every child to be gone', async () => [...kids].every((pid) => !alive(pid)), 20_000),
    cleanup(): void {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      for (const pid of kids) if (alive(pid)) process.kill(pid, 'SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

describe('Ctrl-C in a terminal, or the terminal closing (a signal to the whole process group)', () => {
  it.each(['SIGINT', 'SIGHUP'] as const)('%s stops the gateway first, then the workers, restarts none of them, and exits 0', async (signal) => {
    const store = launchStore(true);
    try {
      await waitFor('kvstore ready', async () => /kvstore ready/.test(store.out()), 30_000);
      expect(store.track().length).toBe(3);
      process.kill(-store.child.pid!, signal);
      expect(await store.exitCode(), store.out()).toBe(0);
      expect(store.out()).toMatch(/store stopped/);
      // Before: the workers got the SIGINT too and stopped at once, before the gateway had drained,
      // and the supervisor, still waiting for the gateway, could take them for crashed and restart
      // them. SIGHUP killed the supervisor outright.
      expect(store.out()).not.toMatch(/restarting/);
      const at = (msg: string): number[] => store.lines().filter((l) => l.msg === msg).map((l) => Date.parse(l.time));
      expect(at('gateway stopped').length).toBe(1);
      expect(at('worker draining').length).toBe(2);
      expect(Math.min(...at('worker draining'))).toBeGreaterThanOrEqual(at('gateway stopped')[0]);
      await store.allGone();
    } finally {
      store.cleanup();
    }
  }, 60_000);
});

describe('the supervisor killed (kill -9)', () => {
  it.each(['once the store is ready', 'while the gateway is starting'] as const)('%s: no child keeps running, each stops itself when the IPC channel closes', async (when) => {
    const store = launchStore();
    try {
      if (when === 'once the store is ready') await waitFor('kvstore ready', async () => /kvstore ready/.test(store.out()), 30_000);
      // The gateway is forked once every worker is listening; while it starts, it waits for them.
      await waitFor('the gateway process', async () => store.track().length === 3, 20_000, 5);
      store.child.kill('SIGKILL');
      // The children are in their own process groups: nothing but the closed channel tells them.
      // Before, a gateway still starting had no handler for that yet, and waited for its (gone)
      // workers forever, holding its port.
      await store.allGone();
      expect(store.out()).toMatch(/supervisor gone|stopped during start-up/);
    } finally {
      store.cleanup();
    }
  }, 60_000);
});

describe('stopping during start-up', () => {
  it('SIGINT while the gateway is starting stops every child started so far, in order, and exits 0', async () => {
    const store = launchStore();
    try {
      await waitFor('the gateway process', async () => store.track().length === 3, 20_000, 5);
      store.child.kill('SIGINT');
      const code = await store.exitCode();
      expect(store.out(), 'the signal must land during start-up').not.toMatch(/kvstore ready/);
      // Before: the gateway, stopped before it listened, failed start-up and npm start exited 1.
      expect(code, store.out()).toBe(0);
      expect(store.out()).not.toMatch(/failed to start/);
      // The supervisor stopped the workers itself (not the IPC channel closing), before it ended.
      const lines = store.lines();
      const draining = lines.filter((l) => l.msg === 'worker draining');
      expect(draining.map((l) => l.signal)).toEqual(['SIGTERM', 'SIGTERM']);
      const stopped = lines.findIndex((l) => l.msg === 'store stopped');
      expect(stopped).toBeGreaterThan(lines.lastIndexOf(draining[1]));
      await store.allGone();
    } finally {
      store.cleanup();
    }
  }, 60_000);
});

describe('supervision', () => {
  it('retries a restart that dies before listening (its port held for a while) until the worker is back', async () => {
    const store = await startEmbedded(['--workers', '2']);
    // Whatever connects to the held port (the gateway's link redials it) is cut at once.
    const holder = createServer((socket) => socket.destroy());
    try {
      const pid = store.workerPids.get('worker-0')!;
      const port = store.workerPorts.get('worker-0')!;
      process.kill(pid, 'SIGKILL');
      await waitFor('worker-0 to die', async () => !alive(pid), 5_000, 2);
      // The supervisor restarts it on the same port after 100 ms: hold the port first.
      await new Promise<void>((resolve, reject) => holder.once('error', reject).listen(port, '127.0.0.1', () => resolve()));
      await waitFor('a refused restart', async () => /restart failed/.test(store.proc.output.join('')), 15_000);
      holder.close();
      // Before: one failed restart and the worker stayed down for good.
      await waitFor('worker-0 back', async () => store.workerPids.get('worker-0') !== pid, 20_000);
      const kv = kvClient(store.address);
      try {
        // Keys on both workers (20 random-ish keys miss one of two workers with odds 2^-19).
        await waitFor('the store to take writes for every key again', async () => {
          for (let i = 0; i < 20; i++) await kv.put(`after-restart-${i}`, 'v');
          return true;
        }, 20_000, 200);
        for (let i = 0; i < 20; i++) expect(await kv.get(`after-restart-${i}`)).toBe('v');
      } finally {
        kv.close();
      }
    } finally {
      holder.close();
      await store.stop();
    }
  }, 90_000);
});

/** A process's command line (Linux /proc), as its arguments. */
function commandLine(pid: number): string[] {
  return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
}

/** Whether `args` has `flag` followed by `value`. */
function hasFlag(args: string[], flag: string, value: string): boolean {
  return args.some((a, i) => a === flag && args[i + 1] === value);
}

describe('npm start passes the gateway\'s and workers\' settings on', () => {
  it('from its command line and env vars, each to the processes it is for', async () => {
    const store = await startEmbedded(
      ['--workers', '1', '--backup-keep', '3', '--request-timeout-ms', '1234', '--max-db-pages', '100000', '--shutdown-grace-ms', '12000', '--metrics', 'off'],
      undefined,
      { KV_MIGRATION_RATE: '77' },
    );
    try {
      const lines = store.proc.output
        .join('')
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as { msg: string; pid: number; backupKeep?: number; stopTimeoutMs?: number });
      // Stopping, the supervisor waits out the children's grace (plus a margin) before SIGKILL.
      expect(lines.find((l) => l.msg.startsWith('kvstore ready'))!.stopTimeoutMs).toBe(12_000 + 5_000);
      const listening = lines.find((l) => l.msg === 'gateway listening')!;
      // The gateway runs with it, not just was given it.
      expect(listening.backupKeep).toBe(3);
      const gateway = commandLine(listening.pid);
      for (const [flag, value] of [['--backup-keep', '3'], ['--request-timeout-ms', '1234'], ['--migration-rate', '77'], ['--shutdown-grace-ms', '12000'], ['--metrics', 'off']]) {
        expect(hasFlag(gateway, flag, value), `gateway ${flag} ${value}: ${gateway.join(' ')}`).toBe(true);
      }
      expect(gateway).not.toContain('--max-db-pages');
      const worker = commandLine(store.workerPids.get('worker-0')!);
      for (const [flag, value] of [['--max-db-pages', '100000'], ['--shutdown-grace-ms', '12000'], ['--metrics', 'off']]) {
        expect(hasFlag(worker, flag, value), `worker ${flag} ${value}: ${worker.join(' ')}`).toBe(true);
      }
      expect(worker).not.toContain('--backup-keep');
      // Settings left at their defaults stay off the children's command lines.
      expect(gateway).not.toContain('--max-inflight');
    } finally {
      await store.stop();
    }
  });
});

describe('embedded store', () => {
  it.each(['SIGINT', 'SIGTERM'] as const)('serves with KV_WORKERS workers and stops everything on %s with exit 0', async (signal) => {
    const store = await startEmbedded(['--workers', '2']);
    try {
      expect([...store.workerPids.keys()].sort()).toEqual(['worker-0', 'worker-1']);
      const kv = kvClient(store.address);
      await kv.put('hello', 'world');
      expect(await kv.get('hello')).toBe('world');
      kv.close();
      const pids = [...store.workerPids.values()];
      expect(await store.proc.stop(signal)).toBe(0);
      await waitFor('every worker to exit', async () => pids.every((p) => !alive(p)), 10_000);
    } finally {
      await store.stop();
    }
  });
});
