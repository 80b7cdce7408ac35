// The API reference's Python example, verbatim (test/fixtures/reference_example.py), against the
// embedded store, with client code generated from proto/kvstore.proto by stock grpcio tools.
// Needs Debian's python3-grpcio and python3-grpc-tools (.ci/run installs them); outside CI the test
// is skipped with a note when they are missing.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT, startEmbedded } from './helpers/processes.js';

const PYTHON = '/usr/bin/python3';
const hasTools = spawnSync(PYTHON, ['-c', 'import grpc, grpc_tools.protoc'], { encoding: 'utf8' }).status === 0;
if (!hasTools && process.env.CI) throw new Error('CI must install python3-grpcio and python3-grpc-tools for this test');

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

describe.skipIf(!hasTools)('reference Python client', () => {
  it('runs the API reference example unchanged and prints hello', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kvstore-python-'));
    // The example dials localhost:50051 as written; only if that port is taken here is the address
    // in a copy of it replaced, and the code is otherwise untouched.
    const onDefaultPort = await portFree(50051);
    const store = await startEmbedded(onDefaultPort ? ['--port', '50051'] : []);
    try {
      const gen = spawnSync(PYTHON, ['-m', 'grpc_tools.protoc', `-I${join(ROOT, 'proto')}`, `--python_out=${dir}`, `--grpc_python_out=${dir}`, 'kvstore.proto'], {
        encoding: 'utf8',
      });
      expect(gen.status, gen.stderr).toBe(0);
      const example = join(dir, 'example.py');
      if (onDefaultPort) copyFileSync(join(ROOT, 'test/fixtures/reference_example.py'), example);
      else writeFileSync(example, readFileSync(join(ROOT, 'test/fixtures/reference_example.py'), 'utf8').replace('localhost:50051', store.address));
      const run = spawnSync(PYTHON, [example], { cwd: dir, encoding: 'utf8', timeout: 30_000 });
      expect(run.stderr).toBe('');
      expect(run.status).toBe(0);
      expect(run.stdout).toBe('hello\n');
    } finally {
      await store.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
