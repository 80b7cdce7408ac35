// What waking a process after it idled costs on this machine: a loopback echo between this process
// and a child, back to back and with an idle gap before each message. The child sleeps and is woken
// once per round trip in both modes; its extra CPU per round trip after a gap is what idling cost it
// (cold caches, on a VM a halted virtual CPU). The bench's wake-ups per request, times this, bounds
// what the gateway path's extra wake-ups cost (docs/performance.md, "Where the time goes").
// Prints figures; asserts nothing. Run: npm run bench:wakeup -- [--seconds N] [--gap-ms 1,3,20] [--rounds N]
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { parseArgs } from 'node:util';
import { switchesBetween, threadSwitches } from './procstat.js';
import { median } from './report.js';

const MESSAGE = Buffer.alloc(100, 'x');

function serve(): void {
  const server = createServer((s) => {
    s.setNoDelay(true);
    s.on('data', (d) => s.write(d));
  });
  server.listen(0, '127.0.0.1', () => process.send!((server.address() as AddressInfo).port));
  // getrusage in microseconds: /proc/<pid>/stat counts in 10 ms ticks, too coarse for a few hundred
  // sparse round trips.
  process.on('message', () => {
    const { user, system } = process.cpuUsage();
    process.send!(user + system);
  });
  // Ends with its parent, also when the parent is killed.
  process.on('disconnect', () => process.exit(0));
}

interface Sample {
  roundTrips: number;
  childCpuUs: number;
  childWakeups: number;
}

/** The child's CPU microseconds so far, asked outside the measured window. */
async function childCpuUs(child: ChildProcess): Promise<number> {
  const reply = once(child, 'message') as Promise<[number]>;
  child.send('cpu');
  return (await reply)[0];
}

async function echo(socket: Socket, child: ChildProcess, seconds: number, gapMs: number): Promise<Sample> {
  const pid = child.pid!;
  const cpu0 = await childCpuUs(child);
  const sw0 = threadSwitches(pid);
  const until = performance.now() + seconds * 1000;
  let n = 0;
  while (performance.now() < until) {
    if (gapMs > 0) await new Promise((r) => setTimeout(r, gapMs));
    const reply = once(socket, 'data');
    socket.write(MESSAGE);
    await reply;
    n++;
  }
  const woke = switchesBetween(sw0, threadSwitches(pid)).woken;
  return { roundTrips: n, childCpuUs: ((await childCpuUs(child)) - cpu0) / n, childWakeups: woke / n };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string', default: '2' },
      'gap-ms': { type: 'string', default: '1,3,20' },
      rounds: { type: 'string', default: '3' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log('usage: npm run bench:wakeup -- [--seconds N per mode and round, default 2] [--gap-ms idle gaps, default 1,3,20] [--rounds N, default 3]');
    return;
  }
  const seconds = Number(values.seconds);
  const gaps = values['gap-ms'].split(',').map(Number);
  const rounds = Number(values.rounds);
  if (!(seconds > 0) || !gaps.every((g) => g > 0) || !Number.isInteger(rounds) || rounds < 1) {
    throw new Error(`--seconds must be a positive number, --gap-ms positive numbers separated by commas and --rounds a positive integer (got ${values.seconds}, ${values['gap-ms']}, ${values.rounds})`);
  }
  const child = fork(new URL(import.meta.url), ['--serve'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  try {
    const [port] = (await once(child, 'message')) as [number];
    const socket = connect(port, '127.0.0.1');
    socket.setNoDelay(true);
    await once(socket, 'connect');
    console.log(`loopback echo of ${MESSAGE.length} bytes to a child process, ${seconds} s per mode, medians of ${rounds} rounds`);
    // A process's first seconds include its own start-up work (compilation, GC): not a wake-up cost.
    await echo(socket, child, Math.min(1, seconds), 0);
    const busy: number[] = [];
    const after = gaps.map((): Sample[] => []);
    for (let r = 0; r < rounds; r++) {
      busy.push((await echo(socket, child, seconds, 0)).childCpuUs);
      for (const [i, gap] of gaps.entries()) after[i].push(await echo(socket, child, seconds, gap));
    }
    const b = median(busy);
    console.log(`back to back: the child uses ${b.toFixed(1)} µs of CPU per round trip`);
    console.log('idle gap ms | child CPU µs per round trip | wake-ups per round trip | extra CPU of waking after the gap, µs');
    for (const [i, gap] of gaps.entries()) {
      const cpu = median(after[i].map((s) => s.childCpuUs));
      // Both modes wake the child once per round trip; only the idle time before it differs.
      console.log(`${String(gap).padStart(11)} | ${cpu.toFixed(1).padStart(27)} | ${median(after[i].map((s) => s.childWakeups)).toFixed(2).padStart(23)} | ${(cpu - b).toFixed(1).padStart(37)}`);
    }
    socket.destroy();
  } finally {
    child.disconnect();
    if (child.exitCode === null) await once(child, 'exit');
  }
}

if (process.argv.includes('--serve')) serve();
else {
  main().catch((err: unknown) => {
    console.error((err as Error).message);
    process.exit(1);
  });
}
