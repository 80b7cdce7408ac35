// The embedded supervisor's stop waits as long as it was told (npm start: the children's
// --shutdown-grace-ms plus a margin) before SIGKILL; a fixed 15 s used to cut a longer grace short.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Supervised, stopTimeoutFor } from '../cli/supervisor.js';
import { createLogger } from '../shared/logger.js';

const dir = mkdtempSync(join(tmpdir(), 'kvstore-supervisor-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// A child that reports listening and takes 1.5 s to stop after SIGTERM, as a draining server does.
const script = join(dir, 'slow-stop.mjs');
writeFileSync(
  script,
  `process.on('SIGTERM', () => setTimeout(() => process.exit(0), 1500));
process.on('disconnect', () => process.exit(0));
process.send({ type: 'listening', name: 'slow', port: 1, metricsPort: 2 });
setInterval(() => {}, 1000);
`,
);

/** Starts the child, stops it, and says how it ended. */
async function stopWith(stopTimeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  const proc = new Supervised({ name: 'slow', script, args: [], stopTimeoutMs }, createLogger('test', 'silent'));
  await proc.start();
  const child = proc.child!;
  try {
    await proc.stop();
    return { code: child.exitCode, signal: child.signalCode };
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
}

describe('Supervised.stop', () => {
  it('waits up to its stop timeout for the child to exit by itself', async () => {
    expect(await stopWith(10_000)).toEqual({ code: 0, signal: null });
  });

  it('kills a child that is still stopping when the timeout is up', async () => {
    expect(await stopWith(300)).toEqual({ code: null, signal: 'SIGKILL' });
  });

  it('waits the grace plus a margin, never past what a Node timer can hold', async () => {
    expect(stopTimeoutFor(12_000)).toBe(17_000);
    // The largest grace the servers accept: grace + margin would overflow the timer, which then
    // fires at once and killed every child the moment the store stopped.
    expect(stopTimeoutFor(2_147_483_647)).toBe(2_147_483_647);
    expect(await stopWith(stopTimeoutFor(2_147_483_647))).toEqual({ code: 0, signal: null });
  });
});
