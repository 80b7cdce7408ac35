// `npm start` as a user runs it: the supervisor brings up a gateway and workers, and SIGINT / SIGTERM
// stops every one of them cleanly with exit code 0. A bad flag or KV_* value is a one-line usage error.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
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
      ['cli/start.js', ['--workers', 'x'], {}, /option '--workers <n>' argument 'x' is invalid\. expected a non-negative integer/],
      ['gateway/main.js', ['--port', '50o51'], {}, /option '--port <port>' argument '50o51' is invalid/],
      ['worker/main.js', ['--name', 'w', '--port', '70000'], {}, /option '--port <port>' argument '70000' is invalid\. expected 0 to 65535/],
      ['cli/start.js', [], { KV_WORKERS: '0' }, /value '0' from env 'KV_WORKERS' is invalid\. expected 1 to 64/],
      ['cli/start.js', [], { KV_PORT: '99999' }, /value '99999' from env 'KV_PORT' is invalid/],
    ] as const) {
      const r = spawnSync(process.execPath, [dist(script), ...args], { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 15_000 });
      const what = `${script} ${args.join(' ')} ${JSON.stringify(env)}`;
      expect(r.status, what).toBe(1);
      expect(r.stderr, what).toMatch(says);
      expect(r.stderr, what).not.toMatch(/\n\s+at /); // no stack trace
    }
  });
});

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
    return await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('hung'), 15_000))]);
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

describe('Ctrl-C in a terminal (SIGINT to the whole process group)', () => {
  it('stops the gateway first, then the workers, restarts none of them, and exits 0', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kvstore-ctrl-c-'));
    // detached: npm start leads its own process group here, as a shell's foreground job does.
    const child = spawn(process.execPath, [dist('cli/start.js'), '--workers', '2', '--port', '0', '--metrics-port', '0', '--data-dir', dir], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, KV_LOG_LEVEL: 'info' },
      detached: true,
    });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | string>((resolve) => child.once('exit', (code, sig) => resolve(code ?? String(sig))));
    let kids: number[] = [];
    try {
      await waitFor('kvstore ready', async () => /kvstore ready/.test(out), 30_000);
      kids = childrenOf(child.pid!);
      expect(kids.length).toBe(3);
      process.kill(-child.pid!, 'SIGINT');
      const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('hung'), 30_000))]);
      expect(code, out).toBe(0);
      expect(out).toMatch(/store stopped/);
      // Before: the workers got the SIGINT too and stopped at once, before the gateway had drained,
      // and the supervisor, still waiting for the gateway, could take them for crashed and restart them.
      expect(out).not.toMatch(/restarting/);
      const lines = out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { msg: string; time: string });
      const at = (msg: string): number[] => lines.filter((l) => l.msg === msg).map((l) => Date.parse(l.time));
      expect(at('worker draining').length).toBe(2);
      expect(Math.min(...at('worker draining'))).toBeGreaterThanOrEqual(Math.max(...at('gateway stopped')));
      await waitFor('every child to be gone', async () => kids.every((pid) => !alive(pid)), 10_000);
    } finally {
      if (child.exitCode === null && child.signalCode === null) process.kill(-child.pid!, 'SIGKILL');
      for (const pid of kids) if (alive(pid)) process.kill(pid, 'SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});

describe('the supervisor killed (kill -9)', () => {
  it('leaves no child running: each stops itself when the IPC channel closes', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kvstore-orphans-'));
    const child = spawn(process.execPath, [dist('cli/start.js'), '--workers', '2', '--port', '0', '--metrics-port', '0', '--data-dir', dir], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, KV_LOG_LEVEL: 'info' },
    });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    let kids: number[] = [];
    try {
      await waitFor('kvstore ready', async () => /kvstore ready/.test(out), 30_000);
      kids = childrenOf(child.pid!);
      expect(kids.length).toBe(3);
      child.kill('SIGKILL');
      // The children are in their own process groups, so nothing but the closed channel tells them.
      await waitFor('every child to stop by itself', async () => kids.every((pid) => !alive(pid)), 20_000);
      expect(out).toMatch(/supervisor gone/);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      for (const pid of kids) if (alive(pid)) process.kill(pid, 'SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});

describe('stopping during start-up', () => {
  it('SIGINT while the gateway is starting stops every child started so far and exits 0', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kvstore-early-stop-'));
    const workers = 2;
    const child = spawn(process.execPath, [dist('cli/start.js'), '--workers', String(workers), '--port', '0', '--metrics-port', '0', '--data-dir', dir], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, KV_LOG_LEVEL: 'info' },
    });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | string>((resolve) => child.once('exit', (code, sig) => resolve(code ?? String(sig))));
    const kids = new Set<number>();
    try {
      // The gateway is forked once every worker is listening; signal as soon as it exists.
      await waitFor('the gateway process', async () => {
        for (const pid of childrenOf(child.pid!)) kids.add(pid);
        return childrenOf(child.pid!).length === workers + 1;
      }, 20_000, 5);
      child.kill('SIGINT');
      const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('hung'), 30_000))]);
      expect(out, 'the signal must land during start-up').not.toMatch(/kvstore ready/);
      // Before: the gateway, stopped before it listened, failed start-up and npm start exited 1.
      expect(code, out).toBe(0);
      expect(out).toMatch(/store stopped/);
      expect(out).not.toMatch(/failed to start/);
      expect(kids.size).toBe(workers + 1);
      await waitFor('every child to be gone', async () => [...kids].every((pid) => !alive(pid)), 10_000);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      for (const pid of kids) if (alive(pid)) process.kill(pid, 'SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
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
