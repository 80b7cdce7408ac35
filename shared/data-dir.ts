// Creating a directory whose path comes from the user (--data-dir, --backup-dir and the folders under
// it) without mkdir({ recursive: true }): Node 20's recursive mkdir loops forever when mkdir fails with
// ENOENT although the parent exists (any path under /proc does that). The sync form hung the process at
// start, deaf to SIGTERM; the async form never settled, so a Backup call never answered. Here each
// missing level is made one at a time, and any failure is an error naming the path.
import { accessSync, constants, mkdirSync, readlinkSync, statSync, type Stats } from 'node:fs';
import { dirname, resolve } from 'node:path';

const codeOf = (err: unknown): string | undefined => (err as { code?: string }).code;

function symlinkTarget(path: string): string | undefined {
  try {
    return readlinkSync(path);
  } catch {
    return undefined; // not a link, or gone
  }
}

function explain(err: unknown): string {
  const message = (err as Error).message ?? String(err);
  const code = codeOf(err);
  // Node's fs messages already start with the code ("ENOENT: no such file or directory, mkdir '/x'").
  return code && !message.startsWith(code) ? `${code}: ${message}` : message;
}

/**
 * Makes sure `path` is a writable directory, creating it and any missing parents. `what` names it in
 * errors ("data directory"): `cannot create data directory "/proc/nope": ENOENT: ...`.
 */
export function ensureDir(path: string, what: string): void {
  const target = resolve(path);
  const missing: string[] = [];
  // No `cause`: the detail is in the message already, and pino would print it twice.
  const fail = (detail: string): never => {
    throw new Error(`cannot ${missing.length > 0 ? 'create' : 'use'} ${what} ${JSON.stringify(path)}: ${detail}`);
  };

  // Walk up to the nearest existing ancestor (or the target itself).
  let dir = target;
  let stats: Stats;
  for (;;) {
    try {
      stats = statSync(dir);
      break;
    } catch (err) {
      const code = codeOf(err);
      // ENOTDIR: a component further up is a file; keep walking up to name it.
      if ((code === 'ENOENT' || code === 'ENOTDIR') && dirname(dir) !== dir) {
        missing.unshift(dir);
        dir = dirname(dir);
        continue;
      }
      return fail(explain(err));
    }
  }
  if (!stats.isDirectory()) fail(dir === target ? 'not a directory' : `${JSON.stringify(dir)} is not a directory`);
  try {
    accessSync(dir, constants.W_OK);
  } catch (err) {
    fail(`${dir === target ? 'not writable' : `${JSON.stringify(dir)} is not writable`} (${explain(err)})`);
  }

  for (const level of missing) {
    try {
      mkdirSync(level);
    } catch (err) {
      if (codeOf(err) !== 'EEXIST') fail(explain(err));
      // Made meanwhile by someone else: fine if it is a directory.
      let isDir = false;
      try {
        isDir = statSync(level).isDirectory();
      } catch (statErr) {
        // EEXIST yet stat finds nothing: a symbolic link whose target is missing (an unmounted volume).
        const link = symlinkTarget(level);
        fail(link === undefined ? explain(statErr) : `${JSON.stringify(level)} is a symbolic link to ${JSON.stringify(link)}, which does not exist`);
      }
      if (!isDir) fail(`${JSON.stringify(level)} is not a directory`);
    }
  }
}
