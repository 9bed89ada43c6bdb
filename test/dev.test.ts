/**
 * `switchyard dev` end to end, as `npm run dev` runs it: a child process with two sites, messages
 * flowing from simulated devices through the bridges and the hub to every consumer, what reached
 * Redis, S3 and VictoriaMetrics read back with real clients, and SIGINT stopping exactly everything
 * dev started.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient } from 'redis';
import { loadConfig } from '../lib/config.ts';
import { redisClientOptions, RedisConnectionSchema } from '../lib/redis.ts';
import { createS3Client, listKeys } from '../cloud/archive/s3.ts';
import type { DevStatus } from '../dev/status.ts';
import { isAlive, listPids, parentPid } from '../lib/process.ts';
import { withTimeout } from '../lib/timers.ts';
import { readStack } from '../stack/stack-file.ts';
import { stackDown } from '../stack/verbs.ts';
import { readDevRecord, stopLeftovers } from '../dev/dev-record.ts';
import { startSwitchyard, type SwitchyardProcess } from './support/process.ts';
import { waitFor } from './support/servers.ts';

/** Every process below `root` (children, grandchildren …), from /proc. */
function descendants(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const pid of listPids()) {
    const ppid = parentPid(pid); // undefined: gone meanwhile
    if (ppid !== undefined) children.set(ppid, [...(children.get(ppid) ?? []), pid]);
  }
  const out: number[] = [];
  const queue = [root];
  while (queue.length > 0) {
    for (const child of children.get(queue.shift()!) ?? []) {
      out.push(child);
      queue.push(child);
    }
  }
  return out;
}

describe('switchyard dev', () => {
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-dev-'));
  let dev: SwitchyardProcess | undefined;

  after(async () => {
    // A failed test must not leave the pipeline running: dev's own stop first, its records next.
    if (dev && dev.child.exitCode === null && dev.child.signalCode === null) {
      dev.child.kill('SIGINT');
      await withTimeout(dev.exited, 30_000, () => 'still running');
    }
    const record = readDevRecord(dir);
    if (record) await stopLeftovers(record, 2000);
    await stackDown(dir, { graceMs: 2000 });
    rmSync(dir, { recursive: true, force: true });
  });

  test('runs the pipeline end to end, then SIGINT stops everything it started and exits 0', async () => {
    dev = startSwitchyard([
      'dev',
      ...['--dir', dir, '--sites', '2', '--rate', '100', '--devices', '10'],
      ...['--no-view', '--status-interval-ms', '1000'],
    ]);
    const p = dev;
    const latest = (): DevStatus | undefined => {
      const line = p
        .output()
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .at(-1);
      return line ? (JSON.parse(line) as DevStatus) : undefined;
    };
    const flowing = (s: DevStatus | undefined): s is DevStatus =>
      s !== undefined && (s.hub.messages ?? 0) > 0 && s.consumers.every((c) => c.acked > 0);

    const first = await waitFor(
      'messages acked by every consumer',
      () => {
        if (p.child.exitCode !== null) throw new Error(`dev exited early:\n${p.output()}`);
        const s = latest();
        return flowing(s) ? s : undefined;
      },
      80_000,
      500,
    ).catch((err: unknown) => {
      throw new Error(`${String(err)}\n--- dev output (tail):\n${p.output().slice(-3000)}`);
    });
    const before = first?.hub.messages ?? 0;
    await waitFor('the hub stream to grow', () => (latest()?.hub.messages ?? 0) > before, 15_000);
    const status = latest()!;
    assert.deepEqual(
      status.sites.map((s) => s.site),
      ['site-1', 'site-2'],
    );
    for (const s of status.sites) {
      assert.equal(s.bridge.state, 'up', `${s.site}'s bridge`);
      assert.ok(s.bridge.published > 0, `${s.site}'s bridge stored messages`);
    }
    for (const c of status.consumers) assert.equal(c.state, 'up', `${c.name}`);
    assert.deepEqual(
      status.consumers.map((c) => c.name),
      ['archive', 'monitor', 'ingest'],
    );

    const stack = readStack(dir);
    const record = readDevRecord(dir);
    assert.ok(record, 'dev.json records the processes dev started');

    // Redis: the monitor's latest state of units of both sites.
    const redis = createClient(
      redisClientOptions(loadConfig(RedisConnectionSchema, { env: stack.cloudEnv() })),
    );
    await redis.connect();
    try {
      assert.deepEqual((await redis.sMembers('bsu:sites')).sort(), ['site-1', 'site-2']);
      const unit = await redis.hGetAll('bsu:unit:site-1:bsu-0001');
      assert.equal(unit.site, 'site-1');
      assert.equal(unit.device, 'bsu-0001');
    } finally {
      await redis.quit();
    }

    // S3: archive objects in the bucket.
    const cloud = stack.cloudSettings();
    const s3 = createS3Client({ ...cloud, s3ForcePathStyle: true });
    try {
      const keys = await listKeys(s3, cloud.s3Bucket, '');
      assert.ok(keys.length > 0, 'the archive wrote objects to S3');
    } finally {
      s3.destroy();
    }

    // VictoriaMetrics: telemetry series of both sites.
    const vm = stack.victoriaMetrics.url;
    await fetch(`${vm}/internal/force_flush`);
    const exported = await (await fetch(`${vm}/api/v1/export?match[]=telemetry_SoC`)).text();
    const series = exported
      .split('\n')
      .filter((l) => l.trim())
      .map((l) => JSON.parse(l) as { metric: Record<string, string> });
    assert.ok(series.length > 0, 'ingest wrote series to VictoriaMetrics');
    assert.deepEqual([...new Set(series.map((s) => s.metric.site))].sort(), ['site-1', 'site-2']);

    // Stop: everything below dev, the detached servers and children included, must go.
    const below = descendants(p.child.pid!);
    const servers = stack.servers.map((s) => s.pid);
    for (const pid of servers) assert.ok(below.includes(pid), `server ${pid} was started by dev`);
    const code = await p.stop('SIGINT');
    assert.equal(code, 0, p.output().slice(-2000));
    await waitFor(
      'every process dev started to be gone',
      () => [...below, ...servers, ...record.processes.map((r) => r.pid)].every((pid) => !isAlive(pid)),
      10_000,
    );
    assert.equal(existsSync(join(dir, 'stack.json')), false, 'stack.json removed');
    assert.equal(existsSync(join(dir, 'dev.json')), false, 'dev.json removed');
    assert.match(p.output(), /stopped 6 processes and \d+ servers/);
  });
});
