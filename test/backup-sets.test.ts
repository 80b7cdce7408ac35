// The retention rule and manifest checks, without processes.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { backupIdTime, listSets, newBackupId, readManifest, setsToPrune, type SetInfo } from '../shared/backup-sets.js';

const set = (id: string, state: SetInfo['state']): SetInfo => ({ id, dir: `/b/${id}`, state });
const ids = (s: SetInfo[]): string[] => s.map((x) => x.id);
const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

describe('retention', () => {
  it('keeps the newest N complete sets', () => {
    const sets = ['1', '2', '3', '4'].map((n) => set(`2026010${n}T000000000Z`, 'complete'));
    expect(ids(setsToPrune(sets, 2))).toEqual(['20260101T000000000Z', '20260102T000000000Z']);
    expect(setsToPrune(sets, 7)).toEqual([]);
  });

  it('never deletes the only good set, whatever keep says', () => {
    const sets = [set('20260101T000000000Z', 'complete'), set('20260102T000000000Z', 'failed'), set('20260103T000000000Z', 'incomplete')];
    for (const keep of [1, 0, -3]) expect(ids(setsToPrune(sets, keep))).not.toContain('20260101T000000000Z');
    // No complete set at all: nothing is deleted, not even failed ones (they may be all there is).
    expect(setsToPrune([set('20260102T000000000Z', 'failed')], 1)).toEqual([]);
  });

  it('drops failed and incomplete sets older than the newest complete one, keeps newer ones', () => {
    const sets = [
      set('20260101T000000000Z', 'failed'),
      set('20260102T000000000Z', 'complete'),
      set('20260103T000000000Z', 'incomplete'),
      set('20260104T000000000Z', 'complete'),
      set('20260105T000000000Z', 'incomplete'),
    ];
    expect(ids(setsToPrune(sets, 5))).toEqual(['20260101T000000000Z', '20260103T000000000Z']);
  });

  it('keeps an older incomplete set while its backup may still run (another gateway, an older id)', () => {
    const now = Date.parse('2026-11-27T12:00:00.000Z');
    const at = (msAgo: number): string => newBackupId(new Date(now - msAgo));
    const window = 11 * 60_000;
    const sets = [
      set(at(20 * 60_000), 'incomplete'), // abandoned long ago: goes
      set(at(30_000), 'failed'), // finished, failed: goes
      set(at(20_000), 'incomplete'), // started 20 s ago and not done yet: stays
      set(at(10_000), 'complete'),
    ];
    expect(ids(setsToPrune(sets, 1, window, now))).toEqual([at(20 * 60_000), at(30_000)]);
    // Without a window (or once it has passed) the superseded incomplete set goes too.
    expect(ids(setsToPrune(sets, 1, 0, now))).toEqual([at(20 * 60_000), at(30_000), at(20_000)]);
    expect(backupIdTime(at(20_000))).toBe(now - 20_000);
    expect(backupIdTime('not-an-id')).toBeNaN();
  });
});

describe('manifests', () => {
  it('ids sort by time', () => {
    expect(newBackupId(new Date('2026-11-26T19:37:42.123Z'))).toBe('20261126T193742123Z');
  });

  it('refuses a manifest that names a file outside its folder or misses a ring member', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kvstore-sets-'));
    dirs.push(dir);
    const base = { format: 1, id: '20260101T000000000Z', complete: true, ring: { members: ['worker-0', 'worker-1'] } };
    const w0 = { worker: 'worker-0', file: 'worker-0.sqlite', keys: 1, bytes: 1, sha256: 'x' };
    const write = (m: object): string => {
      const f = join(dir, 'manifest.json');
      writeFileSync(f, JSON.stringify(m));
      return f;
    };
    expect(() => readManifest(write({ ...base, workers: [w0, { ...w0, worker: 'worker-1', file: '../../etc/passwd' }] }))).toThrow(/expected worker-1.sqlite/);
    expect(() => readManifest(write({ ...base, workers: [w0] }))).toThrow(/differ from ring members/);
    expect(() => readManifest(write({ ...base, complete: false, workers: [w0] }))).toThrow(/complete: true/);
  });

  it('lists sets by state, oldest first, ignoring other folders', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kvstore-sets-'));
    dirs.push(dir);
    mkdirSync(join(dir, '20260102T000000000Z'));
    writeFileSync(join(dir, '20260102T000000000Z', 'failed.json'), '{"failed":[]}');
    mkdirSync(join(dir, '20260101T000000000Z'));
    writeFileSync(join(dir, '20260101T000000000Z', 'manifest.json'), '{ broken');
    mkdirSync(join(dir, 'not-a-backup'));
    const sets = listSets(dir);
    expect(sets.map((s) => [s.id, s.state])).toEqual([
      ['20260101T000000000Z', 'incomplete'],
      ['20260102T000000000Z', 'failed'],
    ]);
    expect(sets[0].problem).toMatch(/cannot read backup manifest/);
    expect(listSets(join(dir, 'missing'))).toEqual([]);
  });
});
