/**
 * A short soak (soak/main.ts) through `npm run soak`, as CI runs it: the whole pipeline on real
 * servers, every fault kind at least once, then the exactly-once checks against every store.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { invalidKept, type SentMessage } from '../soak/checks.ts';

/** About two minutes of schedule: every fault kind at least once, within CI's budget. */
const MINUTES = '2';

test('a short soak with every fault kind: nothing lost, nothing duplicated', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-soak-test-'));
  const child = spawn(
    'npm',
    ['run', '--silent', 'soak', '--', '--minutes', MINUTES, '--seed', '7', '--dir', dir, '--json'],
    {
      cwd: join(import.meta.dirname, '..'),
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  assert.equal(code, 0, `${stdout}\n${stderr.slice(-4000)}`);

  const json = stdout.split('\n').find((l) => l.startsWith('{'));
  assert.ok(json, stdout);
  const report = JSON.parse(json) as {
    ok: boolean;
    checks: { name: string; ok: boolean; figures: Record<string, number> }[];
    faults: { kind: string; target: string; recovered: boolean }[];
  };
  assert.equal(report.ok, true);
  const hub = report.checks.find((c) => c.name === 'hub (BSU)')!;
  assert.ok(hub.figures.validSent! > 1000, 'the devices sent at a steady rate');
  assert.equal(hub.figures.validAtHub, hub.figures.validSent);
  assert.equal(hub.figures.invalidAtHub, hub.figures.invalidSent);
  assert.deepEqual(
    report.checks.map((c) => [c.name, c.ok]),
    [
      ['hub (BSU)', true],
      ['archive (S3)', true],
      ['monitor (Redis)', true],
      ['VictoriaMetrics', true],
      ['InfluxDB 1.x', true],
    ],
  );
  const kinds = new Set(report.faults.map((f) => f.kind));
  for (const kind of ['SIGKILL', 'uplink cut', 'store stop', 'bad payloads', 'flood'])
    assert.ok(kinds.has(kind), `fault ${kind} ran`);
  for (const name of ['edge-site-1', 'edge-site-2', 'archive', 'monitor', 'ingest-influx2', 'ingest-influx1'])
    assert.ok(
      report.faults.some((f) => f.kind === 'SIGKILL' && f.target === name && f.recovered),
      `${name} killed and back`,
    );
});

test('the soak expects byte-identical garbage from one device within the window to be kept once', () => {
  const bad = (device: string, text: string, sentAtMs: number): SentMessage => ({
    site: 's',
    device,
    kind: 'telemetry',
    payload: Buffer.from(text),
    invalid: true,
    sentAtMs,
  });
  const sent = [
    bad('u1', '{', 0),
    bad('u1', '{', 1_000), // the same evidence: stored once
    bad('u2', '{', 1_000), // another device: another topic
    bad('u1', '{"t', 2_000),
    bad('u1', '{', 901_000), // past the window of the first: stored again
  ];
  assert.equal(invalidKept(sent, 900_000), 4);
});
