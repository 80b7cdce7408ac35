// k8s/monitoring: the PrometheusRule passes `promtool check rules`, its unit tests pass `promtool test
// rules`, every alert has a test, and every dashboard query is PromQL that promtool accepts. (That the
// metric names in both exist is proved against live processes in metrics.test.ts.)
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { ROOT } from './helpers/processes.js';
import { promTool, runPromtool } from './helpers/prometheus.js';

const MONITORING = join(ROOT, 'k8s', 'monitoring');
const promtool = promTool('promtool');
const dir = mkdtempSync(join(tmpdir(), 'kvstore-rules-'));

afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  labels?: Record<string, string>;
}

function ruleResource(): { apiVersion: string; kind: string; spec: { groups: { name: string; rules: Rule[] }[] } } {
  return parse(readFileSync(join(MONITORING, 'alerts.yaml'), 'utf8'));
}

/** Every PromQL expression of the dashboard, with Grafana's variables replaced by values. */
export function dashboardQueries(): { panel: string; expr: string }[] {
  const dash = JSON.parse(readFileSync(join(MONITORING, 'dashboard.json'), 'utf8')) as {
    panels: { title: string; targets?: { expr: string }[] }[];
  };
  return dash.panels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr })));
}

describe.skipIf(!promtool)('alert rules (k8s/monitoring/alerts.yaml)', () => {
  it('is a PrometheusRule whose spec passes promtool check rules', () => {
    const res = ruleResource();
    expect(res.apiVersion).toBe('monitoring.coreos.com/v1');
    expect(res.kind).toBe('PrometheusRule');
    writeFileSync(join(dir, 'alerts.rules.yaml'), stringify(res.spec));
    const r = runPromtool(promtool!, ['check', 'rules', join(dir, 'alerts.rules.yaml')]);
    expect(r.out).toContain('SUCCESS');
    expect(r.code, r.out).toBe(0);
  });

  it('covers a worker down, error ratio, p99 latency, backup age and disk filling, each with a severity', () => {
    const alerts = ruleResource().spec.groups.flatMap((g) => g.rules);
    const names = alerts.map((a) => a.alert);
    for (const required of ['KvWorkerDown', 'KvErrorRatioHigh', 'KvLatencyP99High', 'KvBackupTooOld', 'KvWorkerDiskFilling']) {
      expect(names).toContain(required);
    }
    for (const a of alerts) expect(['warning', 'critical'], a.alert).toContain(a.labels?.severity);
  });

  it('passes promtool test rules, and every alert has at least one firing test case', () => {
    writeFileSync(join(dir, 'alerts.rules.yaml'), stringify(ruleResource().spec));
    copyFileSync(join(MONITORING, 'alerts.test.yaml'), join(dir, 'alerts.test.yaml'));
    const r = runPromtool(promtool!, ['test', 'rules', join(dir, 'alerts.test.yaml')]);
    expect(r.code, r.out).toBe(0);

    const tests = parse(readFileSync(join(MONITORING, 'alerts.test.yaml'), 'utf8')) as {
      tests: { alert_rule_test?: { alertname: string; exp_alerts: unknown[] }[] }[];
    };
    const fired = new Set(tests.tests.flatMap((t) => (t.alert_rule_test ?? []).filter((a) => a.exp_alerts.length > 0).map((a) => a.alertname)));
    for (const a of ruleResource().spec.groups.flatMap((g) => g.rules)) expect([...fired], `no firing test for ${a.alert}`).toContain(a.alert);
  });
});

describe.skipIf(!promtool)('dashboard (k8s/monitoring/dashboard.json)', () => {
  it('parses, and shows request rate, error ratio, p50/p99 by method, per-worker load and keys, backup age', () => {
    const titles = dashboardQueries().map((q) => q.panel);
    for (const t of ['Request rate by method', 'Error ratio', 'Latency p50 by method', 'Latency p99 by method', 'Load per worker', 'Keys per worker', 'Backup age']) {
      expect(titles).toContain(t);
    }
  });

  it('has only PromQL that promtool accepts', () => {
    // promtool parses rule expressions, so each query becomes a recording rule of a throwaway file.
    const rules = dashboardQueries().map((q, i) => ({
      record: `dashboard:query_${i}`,
      expr: q.expr.replaceAll('$__rate_interval', '1m').replaceAll('$worker', '.*').replaceAll('$job', 'kv-gateway|kv-worker'),
    }));
    expect(rules.length).toBeGreaterThan(10);
    writeFileSync(join(dir, 'dashboard.rules.yaml'), stringify({ groups: [{ name: 'dashboard', rules }] }));
    const r = runPromtool(promtool!, ['check', 'rules', join(dir, 'dashboard.rules.yaml')]);
    expect(r.code, r.out).toBe(0);
  });
});
