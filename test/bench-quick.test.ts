// Runs `npm run bench -- --quick` against real gateway and worker processes and checks that the
// report is complete and its numbers are sane. Never asserts a speed: the machine is shared and noisy.
import { execFile, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import type { Report } from '../bench/report.js';

const BENCH = fileURLToPath(new URL('../dist/bench/main.js', import.meta.url));
const WAKEUP = fileURLToPath(new URL('../dist/bench/wakeup-cost.js', import.meta.url));
const out = mkdtempSync(join(tmpdir(), 'kvbench-test-'));
afterAll(() => rmSync(out, { recursive: true, force: true }));

/** The JSON report a bench run wrote into `dir` (it must have written exactly one). */
function readReport(dir: string): Report {
  const json = readdirSync(dir).filter((f) => f.endsWith('.json'));
  expect(json, `reports in ${dir}`).toHaveLength(1);
  return JSON.parse(readFileSync(join(dir, json[0]), 'utf8')) as Report;
}

/** Runs a compiled bench script to its end (killed after `timeoutMs`): exit code and output. */
const runScript = (file: string, args: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> =>
  new Promise((resolve) => {
    const child = execFile(process.execPath, [file, ...args], { timeout: timeoutMs }, (_err, so, se) => resolve({ code: child.exitCode, stdout: so, stderr: se }));
  });

describe('npm run bench: usage errors', () => {
  it('refuses a bad flag value in one line naming the flag, before starting anything', async () => {
    for (const [flag, value, says] of [
      ['--concurrency', '8,x', /expected a whole number of at least 1/],
      ['--workloads', 'get,foo', /unknown workload "foo"; choose from get, put/],
      ['--value-size', '5000', /at most 2048/],
      ['--idle', 'soon', /expected a non-negative number/],
      // 0 clients left no load level (the highest became -Infinity); a fraction of a worker was taken.
      ['--concurrency', '0', /whole number of at least 1/],
      ['--workers', '2.5', /whole number of at least 1/],
      ['--duration', '0', /seconds above 0/],
    ] as const) {
      const r = await runScript(BENCH, [flag, value, '--out', out], 20_000);
      expect(r.code, `${flag} ${value}`).toBe(1);
      expect(r.stderr, `${flag} ${value}`).toMatch(new RegExp(`option '${flag} <[^>]+>' argument '${value}' is invalid`));
      expect(r.stderr, `${flag} ${value}`).toMatch(says);
      expect(r.stderr, `${flag} ${value}`).not.toMatch(/ at .*main\.js/); // no stack trace
    }
    // --bare needs servers the bench starts itself.
    const r = await runScript(BENCH, ['--bare', '--address', '127.0.0.1:1', '--out', out], 20_000);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^kv-bench: --bare compares with the servers the bench starts; it cannot be used with --address\n$/);
    // So do the extra phases: against --address they were skipped without a word.
    for (const flag of ['--compare-metrics', '--compare-sync', '--migration']) {
      const x = await runScript(BENCH, [flag, '--address', '127.0.0.1:1', '--out', out], 20_000);
      expect(x.code, flag).toBe(1);
      expect(x.stderr, flag).toBe(`kv-bench: ${flag} starts servers of its own; it cannot be used with --address\n`);
    }
    const scale = await runScript(BENCH, ['--scale', '1000', '--address', '127.0.0.1:1', '--out', out], 20_000);
    expect(scale.stderr).toBe('kv-bench: --scale starts servers of its own; it cannot be used with --address\n');
  });
});

describe('npm run bench: the phases beyond the main ones (--compare-metrics, --migration, --scale)', () => {
  // Each starts servers of its own. They once shared the default servers' database files: the
  // variant's workers were refused by the instance lock while the default ones ran (the bench died
  // with "worker-2 exited before listening" and no reason), and the --scale cluster started on the
  // membership the --migration run left in the files, with a fourth worker that was gone.
  it('runs each on its own servers, without errors', async () => {
    const dir = mkdtempSync(join(out, 'extra-'));
    const r = await runScript(
      BENCH,
      ['--workloads', 'mix', '--concurrency', '8', '--keys', '1000', '--duration', '1', '--warmup', '0', '--idle', '0', '--server-warmup', '1', '--compare-metrics', '--migration', '--scale', '2000', '--out', dir],
      150_000,
    );
    expect(r.code, r.stderr.slice(-2000)).toBe(0);
    // Each set was warmed up once before its first phase: the two main ones, the metrics-off gateway
    // and direct worker, the migration's gateway, and the 2,000-key gateway and direct worker.
    expect(r.stderr.match(/warmed (gateway|direct) up: [1-9]\d* requests in 1 s, 0 errors/g)).toHaveLength(7);
    const report = readReport(dir);
    const extra = [
      ['gateway/metrics-off', 'mix', 1000],
      ['direct/metrics-off', 'mix', 1000],
      ['gateway/migrating', 'mix', 1000],
      ['gateway', 'mix', 2000],
      ['gateway', 'listkeys', 2000],
      ['direct', 'mix', 2000],
      ['direct', 'listkeys', 2000],
    ] as const;
    for (const [target, workload, keys] of extra) {
      const where = `${target} ${workload} ${keys} keys`;
      const p = report.phases.find((x) => x.target === target && x.workload === workload && x.keys === keys);
      expect(p, where).toBeDefined();
      expect(p!.result.ops, where).toBeGreaterThan(0);
      expect(p!.result.errors, `${where}: ${p!.result.lastError}`).toBe(0);
    }
    expect(report.phases.find((x) => x.target === 'gateway/migrating')?.extra?.keysMoved as number).toBeGreaterThan(0);
    const variants = report.comparisons.map((c) => c.variant);
    for (const v of ['gateway/metrics-off ÷ gateway', 'direct/metrics-off ÷ direct', 'gateway/metrics-off ÷ direct/metrics-off', 'gateway/migrating ÷ gateway']) {
      expect(variants).toContain(v);
    }
  }, 160_000);
});

describe('npm run bench: delete', () => {
  // A delete phase once left its servers with the key space half empty, and the phases after it ran
  // on that: the --compare-metrics reference phase (run after the main workloads) answered about half
  // its Gets with NOT_FOUND while the fresh metrics-off servers it was compared with found every key.
  it('puts the keys back, so later phases and the variants\' reference phases find every key', async () => {
    const dir = mkdtempSync(join(out, 'delete-'));
    const r = await runScript(
      BENCH,
      ['--workloads', 'delete,get', '--concurrency', '8', '--keys', '500', '--duration', '1', '--warmup', '0', '--idle', '0', '--server-warmup', '0', '--no-direct', '--compare-metrics', '--out', dir],
      120_000,
    );
    expect(r.code, r.stderr.slice(-2000)).toBe(0);
    const report = readReport(dir);
    const del = report.phases.find((p) => p.workload === 'delete');
    expect(del?.result.ops).toBeGreaterThan(0);
    const reads = report.phases.filter((p) => p.workload === 'get' || p.workload === 'mix');
    expect(reads.map((p) => `${p.target} ${p.workload}`)).toEqual(['gateway get', 'gateway mix', 'gateway/metrics-off mix']);
    for (const p of reads) {
      expect(p.result.ops, p.target).toBeGreaterThan(0);
      expect(p.result.notFound, `${p.target} ${p.workload}${p.note ? ` (${p.note})` : ''}`).toBe(0);
    }
  }, 130_000);
});

describe('npm run bench: failed requests', () => {
  // Failed requests count as ops and in the latencies. With a worker gone, a third of the gateway's
  // requests failed fast and the ratios and Targets over that phase read as if nothing had happened.
  it('are counted in the ratios, and a Target over them is not met', async () => {
    const dir = mkdtempSync(join(out, 'errors-'));
    const child = spawn(
      process.execPath,
      [BENCH, '--workloads', 'mix', '--keys', '1000', '--concurrency', '8', '--duration', '2', '--warmup', '0', '--idle', '0', '--server-warmup', '0', '--out', dir],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const worker = await new Promise<number>((resolve, reject) => {
      child.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
        const m = /started direct/.test(stderr) ? /worker-2=(\d+)/.exec(stderr) : null;
        if (m) resolve(Number(m[1]));
      });
      void exited.then(() => reject(new Error(`bench ended early: ${stderr}`)));
    });
    // The one process of the store this test kills: a worker its own bench started.
    process.kill(worker, 'SIGKILL');
    expect(await exited, stderr.slice(-2000)).toBe(0);
    const report = readReport(dir);
    const gw = report.phases.find((p) => p.target === 'gateway' && p.workload === 'mix');
    expect(gw?.result.errors).toBeGreaterThan(0);
    const cmp = report.comparisons.find((c) => c.variant === 'gateway ÷ direct' && c.workload === 'mix');
    expect(cmp?.errors).toBe(gw!.result.errors);
    const t = report.targets.find((x) => x.name === 'mix c=8: gateway p99 ÷ direct');
    expect(t?.met).toBe(false);
    expect(t?.errors).toBe(gw!.result.errors);
  }, 90_000);
});

describe('npm run bench: stopped by a signal', () => {
  // SIGTERM once ended the bench without its cleanup: etcd (which does not end with its parent, as the
  // Node servers do) kept running, and the temporary folder with its databases stayed.
  it('on SIGTERM stops every server it started and removes its folder', async () => {
    const tmp = mkdtempSync(join(out, 'signal-'));
    const withEtcd = spawnSync('etcd', ['--version']).status === 0;
    const child = spawn(
      process.execPath,
      [BENCH, '--workloads', 'get', '--keys', '200', '--concurrency', '8', '--no-direct', '--idle', '60', '--out', tmp, ...(withEtcd ? ['--etcd'] : [])],
      { env: { ...process.env, TMPDIR: tmp }, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    await new Promise<void>((resolve, reject) => {
      child.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
        if (stderr.includes('measuring')) resolve();
      });
      void exited.then(() => reject(new Error(`bench ended early: ${stderr}`)));
    });
    const pids = [...stderr.matchAll(/=(\d+)/g)].map((m) => Number(m[1]));
    expect(pids.length, stderr).toBe(withEtcd ? 5 : 4);
    expect(readdirSync(tmp).filter((f) => f.startsWith('kvbench-'))).toHaveLength(1);
    child.kill('SIGTERM');
    expect(await exited).toBe(143);
    const alive = (pid: number): boolean => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    expect(pids.filter(alive), stderr).toEqual([]);
    expect(readdirSync(tmp).filter((f) => f.startsWith('kvbench-'))).toEqual([]);
  }, 60_000);
});

describe('npm run bench -- --quick', () => {
  it('writes a JSON and Markdown report with non-zero figures for the gateway, the direct worker and the bare floor', async () => {
    const stderr = await new Promise<string>((resolve, reject) => {
      execFile(process.execPath, [BENCH, '--quick', '--bare', '--duration', '1', '--out', out], { timeout: 170_000, maxBuffer: 16 * 1024 * 1024 }, (err, _stdout, se) =>
        err ? reject(new Error(`bench failed: ${err.message}\n${se}`)) : resolve(se),
      );
    });
    expect(stderr).toMatch(/ops\/s/); // progress and phase lines went to stderr
    // Every set served a while before its first measured phase (--quick: 1 s).
    for (const t of ['gateway', 'direct', 'bare']) expect(stderr).toMatch(new RegExp(`warmed ${t} up: [1-9]\\d* requests in 1 s, 0 errors`));
    expect(readdirSync(out).some((f) => f.endsWith('.md'))).toBe(true);
    const report = readReport(out);
    // A flag given next to --quick wins over its smoke-test value (it was silently replaced by 2 s).
    expect(report.meta.durationS).toBe(1);

    const targets = new Set(report.phases.map((p) => p.target));
    expect(targets).toEqual(new Set(['gateway', 'direct', 'bare']));
    const workloads = new Set(report.phases.map((p) => p.workload));
    for (const w of ['get', 'put', 'mix', 'listkeys', 'backup']) expect(workloads).toContain(w);
    // The bare server answers the point calls only.
    expect(report.phases.filter((p) => p.target === 'bare').map((p) => p.workload)).toEqual(['get', 'put', 'mix']);

    for (const p of report.phases) {
      const where = `${p.target} ${p.workload}`;
      expect(p.result.ops, where).toBeGreaterThan(0);
      expect(p.result.opsPerSec, where).toBeGreaterThan(0);
      expect(p.result.errors, `${where}: ${p.result.lastError}`).toBe(0);
      const l = p.result.latencyUs;
      expect(l.p50, where).toBeGreaterThan(0);
      expect(l.p90, where).toBeGreaterThanOrEqual(l.p50);
      expect(l.p99, where).toBeGreaterThanOrEqual(l.p90);
      expect(l.p999, where).toBeGreaterThanOrEqual(l.p99);
      expect(p.servers.length, where).toBe(p.target === 'gateway' ? 4 : 1);
      if (p.target === 'bare' && p.workload === 'get') expect(p.result.notFound, where).toBe(0); // it was preloaded too
      for (const s of p.servers) {
        expect(s.pid, where).toBeGreaterThan(0);
        expect(Number.isFinite(s.cpuUsPerOp) && s.cpuUsPerOp >= 0, `${where} ${s.name} cpu ${s.cpuUsPerOp}`).toBe(true);
        expect(s.peakRssMiB, `${where} ${s.name}`).toBeGreaterThan(0);
        expect(Number.isFinite(s.wakeupsPerOp) && s.wakeupsPerOp >= 0, `${where} ${s.name} wake-ups ${s.wakeupsPerOp}`).toBe(true);
        expect(Number.isFinite(s.preemptionsPerOp) && s.preemptionsPerOp >= 0, `${where} ${s.name} preempted ${s.preemptionsPerOp}`).toBe(true);
        // Each worker owns a share of the keys, so it must have been woken to serve it.
        if (s.name.startsWith('worker-')) expect(s.wakeupsPerOp, `${where} ${s.name}`).toBeGreaterThan(0);
      }
      expect(p.serverCpuUsPerOp, where).toBeGreaterThan(0);
      expect(Number.isFinite(p.serverWakeupsPerOp), where).toBe(true);
    }
    for (const p of report.phases.filter((x) => x.workload === 'backup')) {
      expect(p.extra?.backupOk, p.target).toBe(true);
      expect(p.extra?.backupMiB as number, p.target).toBeGreaterThan(0);
    }
    // Idle: every server process was measured, and a kvstore process wakes at least for its timers
    // (the bare server has none, so it may not wake at all).
    expect(report.idle.map((i) => `${i.target}/${i.name}`).sort()).toEqual(['bare/bare', 'direct/direct-0', 'gateway/gateway', 'gateway/worker-0', 'gateway/worker-1', 'gateway/worker-2']);
    for (const i of report.idle) {
      if (i.target !== 'bare') expect(i.wakeupsPerSecond, i.name).toBeGreaterThan(0);
      expect(Number.isFinite(i.wakeupsPerSecond) && i.wakeupsPerSecond >= 0, `${i.name} wake-ups ${i.wakeupsPerSecond}`).toBe(true);
      expect(Number.isFinite(i.cpuMsPerSecond) && i.cpuMsPerSecond >= 0, `${i.name} cpu ${i.cpuMsPerSecond}`).toBe(true);
    }
    const mix = report.comparisons.find((c) => c.workload === 'mix' && c.variant === 'gateway ÷ direct');
    expect(mix).toBeDefined();
    expect(mix!.errors).toBe(0);
    expect(mix!.opsRatio).toBeGreaterThan(0);
    expect(mix!.cpuPerOpRatio).toBeGreaterThan(0);
    expect(mix!.p99Ratio).toBeGreaterThan(0);
    for (const variant of ['gateway ÷ bare', 'direct ÷ bare']) {
      const floor = report.comparisons.find((c) => c.workload === 'mix' && c.variant === variant);
      expect(floor?.cpuPerOpRatio, variant).toBeGreaterThan(0);
    }
    expect(report.targets.length).toBeGreaterThan(0);
  }, 180_000);
});

describe('npm run bench:wakeup', () => {
  const run = (args: string[]): ReturnType<typeof runScript> => runScript(WAKEUP, args, 30_000);

  it('prints, per idle gap, the child\'s CPU per round trip and one wake-up per round trip', async () => {
    const r = await run(['--seconds', '0.3', '--rounds', '1', '--gap-ms', '1,5']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/back to back: the child uses \d+\.\d µs of CPU per round trip/);
    for (const gap of ['1', '5']) {
      const row = new RegExp(`^\\s+${gap} \\|\\s+(\\d+\\.\\d) \\|\\s+(\\d+\\.\\d+) \\|\\s+(-?\\d+\\.\\d)$`, 'm').exec(r.stdout);
      expect(row, `gap ${gap}:\n${r.stdout}`).not.toBeNull();
      expect(Number(row![1]), `gap ${gap}`).toBeGreaterThan(0);
      // After an idle gap the child has always gone to sleep: it is woken for every message.
      expect(Number(row![2]), `gap ${gap}`).toBeGreaterThanOrEqual(0.9);
      expect(Number(row![2]), `gap ${gap}`).toBeLessThan(1.5);
    }
  });

  it('refuses bad arguments in one line', async () => {
    const r = await run(['--gap-ms', '1,x']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^--seconds must be a positive number, --gap-ms positive numbers separated by commas .*\(got 2, 1,x, 3\)\n$/);
  });
});
