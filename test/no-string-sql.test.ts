// No SQL built from strings: every SQL text handed to better-sqlite3 (prepare, exec, pragma) in the
// product's code is a string literal; values travel as bound parameters. The one kind of exception is
// a PRAGMA whose interpolations are all provably safe: a choice between two literals, or an integer
// from Math.floor (SQLite cannot bind parameters in a PRAGMA). The TypeScript parser finds the calls,
// so formatting, comments or line breaks cannot hide one.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { ROOT } from './helpers/processes.js';
import { reportFigures } from './helpers/verifier.js';

const SQL_METHODS = new Set(['prepare', 'exec', 'pragma']);
const PRODUCT_DIRS = ['gateway', 'worker', 'shared', 'cli', 'bench'];

function sourceFiles(dir: string): string[] {
  let out: string[] = [];
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return out;
  }
  for (const e of entries) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) out = out.concat(sourceFiles(p));
    else if (/\.(ts|mts|js|mjs)$/.test(e) && !e.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/** An interpolation that cannot carry SQL: `cond ? 'A' : 'B'` or `Math.floor(...)`. */
function safeInterpolation(e: ts.Expression): boolean {
  while (ts.isParenthesizedExpression(e)) e = e.expression;
  if (ts.isConditionalExpression(e)) return ts.isStringLiteral(e.whenTrue) && ts.isStringLiteral(e.whenFalse);
  return ts.isCallExpression(e) && e.expression.getText() === 'Math.floor';
}

export interface SqlCall {
  where: string;
  method: string;
  text: string;
  verdict: 'literal' | 'safe pragma' | 'built from strings';
}

export function sqlCalls(fileName: string, source: string): SqlCall[] {
  const sf = ts.createSourceFile(fileName, source, ts.ScriptTarget.ES2022, true);
  const out: SqlCall[] = [];
  const visit = (node: ts.Node): void => {
    if (ts.isCallExpression(node) && ts.isPropertyAccessExpression(node.expression) && SQL_METHODS.has(node.expression.name.text)) {
      const method = node.expression.name.text;
      const arg = node.arguments[0];
      const { line } = sf.getLineAndCharacterOfPosition(node.getStart());
      let verdict: SqlCall['verdict'] = 'built from strings';
      if (arg && (ts.isStringLiteral(arg) || ts.isNoSubstitutionTemplateLiteral(arg))) verdict = 'literal';
      else if (arg && method === 'pragma' && ts.isTemplateExpression(arg) && arg.templateSpans.every((s) => safeInterpolation(s.expression))) verdict = 'safe pragma';
      // exec() on a child process or a RegExp is not SQL; only calls with an argument we can judge count.
      if (arg && !(method === 'exec' && !ts.isStringLiteralLike(arg) && !ts.isTemplateExpression(arg) && !ts.isBinaryExpression(arg))) {
        out.push({ where: `${fileName}:${line + 1}`, method, text: node.getText().slice(0, 120), verdict });
      }
    }
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return out;
}

describe('no SQL built from strings', () => {
  it('the checker flags string-built SQL and accepts literals and the safe PRAGMA forms', () => {
    const verdicts = sqlCalls(
      'sample.ts',
      [
        "db.prepare('SELECT value FROM kv WHERE key = ?');",
        'db.prepare(`SELECT * FROM kv WHERE key = \'${key}\'`);',
        "db.exec('DELETE FROM kv WHERE key = ' + key);",
        'db.prepare(sql);',
        'db.pragma(`max_page_count = ${Math.floor(n)}`);',
        "db.pragma(`synchronous = ${full ? 'FULL' : 'NORMAL'}`);",
        'db.pragma(`cache_size = ${size}`);',
      ].join('\n'),
    ).map((c) => c.verdict);
    expect(verdicts).toEqual(['literal', 'built from strings', 'built from strings', 'built from strings', 'safe pragma', 'safe pragma', 'built from strings']);
  });

  it('finds none in the product code', () => {
    const files = PRODUCT_DIRS.flatMap((d) => sourceFiles(join(ROOT, d)));
    const calls = files.flatMap((f) => sqlCalls(relative(ROOT, f), readFileSync(f, 'utf8')));
    const bad = calls.filter((c) => c.verdict === 'built from strings');
    reportFigures('no-string-sql', {
      filesScanned: files.length,
      sqlCalls: calls.length,
      literal: calls.filter((c) => c.verdict === 'literal').length,
      safePragma: calls.filter((c) => c.verdict === 'safe pragma').map((c) => c.where),
      builtFromStrings: bad.length,
    });
    expect(files.length).toBeGreaterThan(10);
    expect(calls.length).toBeGreaterThan(5);
    expect(bad.map((c) => `${c.where}: ${c.text}`)).toEqual([]);
  });
});
