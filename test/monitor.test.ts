/**
 * `switchyard monitor` against real servers: nats-server (a plain stream `BSU`) and redis-server.
 * Each test has its own site token, durable and key prefix; assertions read Redis itself.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect, headers, type NatsConnection } from '@nats-io/transport-node';
import { Registry } from 'prom-client';
import { createClient, type RedisClientType } from 'redis';
import { monitorConsumer } from '../cloud/monitor/consumer.ts';
import { loadConsumerConfig, startConsumer } from '../cloud/consumer.ts';
import { monitorKeys } from '../cloud/monitor/keys.ts';
import { entryOf, type MonitorUpdate } from '../cloud/monitor/conflate.ts';
import {
  APPLY_ARGS_PER_ENTRY,
  APPLY_KEYS_PER_ENTRY,
  applyCall,
  monitorScripts,
} from '../cloud/monitor/scripts.ts';
import { MonitorMetric, RedisMonitorSink } from '../cloud/monitor/sink.ts';
import { silentLogger } from '../lib/log.ts';
import { sleep, waitUntil } from '../lib/timers.ts';
import { Header } from '../schemas/headers.ts';
import { freePort } from '../lib/process.ts';
import { redisSpec } from '../stack/server-specs.ts';
import { killServer, stopServer, type RunningServer } from '../stack/server-process.ts';
import { TestServers, waitFor } from './support/servers.ts';
import { sinkMessage } from './support/sink-conformance.ts';

const T0 = Date.UTC(2026, 10, 26, 3, 0, 0);

const telemetry = (ts: number, seq: number, SoC: number, W = 1000) =>
  JSON.stringify({ ts, seq, SoC, V: 780.5, A: 1.25, W, SoH: 97.5 });
const status = (ts: number, seq: number, State: string, ChaSt = 'HOLDING', firmware = '1.4.2') =>
  JSON.stringify({ ts: new Date(ts).toISOString(), seq, State, ChaSt, firmware, uptimeS: seq * 10 });
const event = (ts: number, seq: number, alarm: string, action: 'raised' | 'cleared') =>
  JSON.stringify({ ts, seq, alarm, action });

/** A monitor sink's settings for a test: an hour between sweeps, a minute until offline. */
const sinkDefaults = (redisUrl: string, redisKeyPrefix: string) => ({
  redisUrl,
  redisKeyPrefix,
  offlineAfterMs: 60_000,
  sweepIntervalMs: 3_600_000,
  changesMaxLen: 1000,
  consumer: 'monitor',
  log: silentLogger,
  registry: new Registry(),
});

describe('monitor to Redis', () => {
  const servers = new TestServers('monitor');
  let nats: RunningServer;
  let redisServer: RunningServer;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  let redis: RedisClientType;
  const stops: (() => Promise<void>)[] = [];

  before(async () => {
    nats = await servers.nats();
    redisServer = await servers.redis();
    nc = await connect({ servers: nats.url });
    jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: 'BSU', subjects: ['bsu.>'] });
    redis = createClient({ url: redisServer.url });
    redis.on('error', () => undefined);
    await redis.connect();
  });

  after(async () => {
    await Promise.allSettled(stops.map((stop) => stop()));
    redis?.destroy();
    await nc?.close();
    await servers.stopAll();
  });

  async function publish(site: string, device: string, kind: string, payload: string | Uint8Array) {
    const h = headers();
    h.set(Header.site, site);
    h.set(Header.receivedAt, new Date().toISOString());
    return (await jetstream(nc).publish(`bsu.${site}.${device}.${kind}`, payload, { headers: h })).seq;
  }

  /** Starts a monitor reading site `site` into keys `<site>:`. */
  async function startMonitor(site: string, extra: Record<string, string> = {}) {
    const controller = new AbortController();
    const registry = new Registry();
    const config = loadConsumerConfig(monitorConsumer, {
      env: {},
      flags: {
        natsUrl: nats.url,
        redisUrl: redisServer.url,
        redisKeyPrefix: `${site}:`,
        durable: `mon-${site}`,
        filterSubjects: `bsu.${site}.>`,
        fetchExpiresMs: '1000',
        backoffMs: '200,400,800',
        lagRefreshMs: '200',
        ...extra,
      },
    });
    const run = await startConsumer(monitorConsumer, config, {
      log: silentLogger,
      registry,
      signal: controller.signal,
    });
    const stop = async () => {
      controller.abort();
      await run.done;
    };
    stops.push(stop);
    return { run, registry, stop, durable: config.durable };
  }

  const settled = async (durable: string) => {
    const info = await jsm.consumers.info('BSU', durable).catch(() => undefined);
    return (
      info !== undefined &&
      info.num_pending === 0 &&
      info.num_ack_pending === 0 &&
      info.delivered.stream_seq > 0
    );
  };
  const unit = (site: string, device: string) => redis.hGetAll(`${site}:unit:${site}:${device}`);
  const siteCounts = async (site: string) =>
    Object.fromEntries(
      Object.entries(await redis.hGetAll(`${site}:site:${site}`)).map(([k, v]) => [k, Number(v)]),
    );
  const metric = async (registry: Registry, name: string, labels: Record<string, string>) =>
    (await registry.getSingleMetric(name)!.get()).values.find((v) =>
      Object.entries(labels).every(([k, x]) => v.labels[k] === x),
    )?.value ?? 0;

  test('keeps the exact latest state of each unit, an index by last-seen time and per-site counts', async () => {
    const site = 'latest';
    let lastSeq = 0;
    for (let n = 1; n <= 20; n++)
      for (const device of ['u1', 'u2', 'u3'])
        lastSeq = await publish(site, device, 'telemetry', telemetry(T0 + n * 1000, n, 40 + n, n * 10));
    await publish(site, 'u1', 'status', status(T0 + 500, 1, 'CONNECTED', 'CHARGING', '2.0.1'));
    await publish(site, 'u2', 'status', status(T0 + 500, 1, 'FAULT', 'OFF'));
    await publish(site, 'u3', 'event', event(T0 + 700, 1, 'OVER_TEMP_WARNING', 'raised'));
    lastSeq = await publish(site, 'u3', 'event', event(T0 + 800, 2, 'GROUND_FAULT', 'raised'));
    const monitor = await startMonitor(site);
    await waitFor('the monitor to settle', () => settled(monitor.durable));

    const u1 = await unit(site, 'u1');
    assert.equal(u1.SoC, '60');
    assert.equal(u1.W, '200');
    assert.equal(u1.SoH, '97.5');
    assert.equal(u1.V, '780.5');
    assert.equal(u1.telemetryTsMs, String(T0 + 20_000));
    assert.equal(u1.telemetrySeq !== undefined, true);
    assert.equal(u1.State, 'CONNECTED');
    assert.equal(u1.ChaSt, 'CHARGING');
    assert.equal(u1.firmware, '2.0.1');
    assert.equal(u1.uptimeS, '10');
    assert.equal(u1.statusTsMs, String(T0 + 500));
    assert.equal(u1.health, 'online');
    assert.equal(u1.site, site);
    assert.equal(u1.device, 'u1');
    assert.equal((await unit(site, 'u2')).health, 'faulted');
    const u3 = await unit(site, 'u3');
    assert.deepEqual(JSON.parse(u3.alarms!), ['GROUND_FAULT', 'OVER_TEMP_WARNING']);
    assert.equal(u3.activeAlarms, '2');
    assert.equal(u3.severeAlarms, '1');
    assert.equal(u3.health, 'faulted');
    assert.equal(u3.lastSeq, String(lastSeq));
    assert.deepEqual(await siteCounts(site), { units: 3, online: 1, offline: 0, faulted: 2 });

    const index = await redis.zRangeWithScores(`${site}:lastseen`, 0, -1);
    assert.deepEqual(index.map((e) => e.value).sort(), ['latest:u1', 'latest:u2', 'latest:u3']);
    for (const e of index) assert.ok(Math.abs(e.score - Date.now()) < 60_000, 'scored by receive time');
    assert.deepEqual((await redis.zRange(`${site}:lastseen:${site}`, 0, -1)).sort(), ['u1', 'u2', 'u3']);
    assert.deepEqual(await redis.sMembers(`${site}:sites`), [site]);
    // The readings came in one or a few batches: most were folded into the newest of their unit.
    const applied = await metric(monitor.registry, MonitorMetric.applied, { kind: 'telemetry' });
    const conflated = await metric(monitor.registry, MonitorMetric.conflated, { kind: 'telemetry' });
    assert.equal(applied + conflated, 60, `applied ${applied} + conflated ${conflated}`);
    assert.ok(conflated > 0, 'a backlog is conflated');
  });

  test('never moves state backwards: late, out-of-order and replayed messages', async () => {
    const site = 'order';
    await publish(site, 'u1', 'telemetry', telemetry(T0 + 1000, 1, 50));
    await publish(site, 'u1', 'telemetry', telemetry(T0 + 3000, 3, 70));
    await publish(site, 'u1', 'telemetry', telemetry(T0 + 2000, 2, 60)); // late
    await publish(site, 'u1', 'telemetry', telemetry(T0 + 1000, 1, 50)); // replayed
    await publish(site, 'u1', 'status', status(T0 + 5000, 5, 'FAULT'));
    await publish(site, 'u1', 'status', status(T0 + 4000, 4, 'CONNECTED')); // late
    await publish(site, 'u1', 'event', event(T0 + 5000, 6, 'OVER_VOLT_ALARM', 'raised'));
    await publish(site, 'u1', 'event', event(T0 + 4500, 5, 'OVER_VOLT_ALARM', 'cleared')); // late
    await publish(site, 'u1', 'event', event(T0 + 5000, 7, 'UNDER_TEMP_WARNING', 'raised'));
    await publish(site, 'u1', 'event', event(T0 + 6000, 8, 'UNDER_TEMP_WARNING', 'cleared'));
    // One message per batch: the script alone keeps the order (no conflation in between).
    const monitor = await startMonitor(site, { batchSize: '1' });
    await waitFor('the monitor to settle', () => settled(monitor.durable));
    const state = await unit(site, 'u1');
    assert.equal(state.SoC, '70');
    assert.equal(state.telemetryTsMs, String(T0 + 3000));
    assert.equal(state.State, 'FAULT');
    assert.deepEqual(JSON.parse(state.alarms!), ['OVER_VOLT_ALARM']);
    assert.equal(await metric(monitor.registry, MonitorMetric.stale, { kind: 'telemetry' }), 2);
    assert.equal(await metric(monitor.registry, MonitorMetric.stale, { kind: 'status' }), 1);
    assert.equal(await metric(monitor.registry, MonitorMetric.stale, { kind: 'event' }), 1);

    // A second durable replays the whole history into the same keys (conflated, as a backlog is):
    // nothing changes.
    const before = { ...state, lastSeenMs: undefined };
    const changesBefore = await redis.xLen(`${site}:changes`);
    const replay = await startMonitor(site, { durable: 'mon-order-replay' });
    await waitFor('the replay to settle', () => settled(replay.durable));
    assert.deepEqual({ ...(await unit(site, 'u1')), lastSeenMs: undefined }, before);
    assert.equal(await redis.xLen(`${site}:changes`), changesBefore, 'a replay announces nothing');
    // Every replayed reading is stale, folded or not.
    assert.equal(await metric(replay.registry, MonitorMetric.stale, { kind: 'telemetry' }), 4);
    assert.equal(await metric(replay.registry, MonitorMetric.conflated, {}), 0);
    assert.deepEqual(await siteCounts(site), { units: 1, online: 0, offline: 0, faulted: 1 });
  });

  test('marks units offline after silence, counts per site and announces every change', async () => {
    const site = 'silence';
    const monitor = await startMonitor(site, { offlineAfterMs: '1500', sweepIntervalMs: '200' });
    await publish(site, 'u1', 'status', status(T0, 1, 'CONNECTED'));
    await publish(site, 'u2', 'status', status(T0, 1, 'FAULT'));
    await waitFor('two units', async () => (await siteCounts(site)).units === 2);
    assert.deepEqual(await siteCounts(site), { units: 2, online: 1, offline: 0, faulted: 1 });
    await waitFor('both offline', async () => (await siteCounts(site)).offline === 2, 10_000);
    assert.deepEqual(await siteCounts(site), { units: 2, online: 0, offline: 2, faulted: 0 });
    await publish(site, 'u1', 'telemetry', telemetry(T0 + 1000, 2, 55));
    await waitFor('u1 back online', async () => (await siteCounts(site)).online === 1);
    assert.equal((await unit(site, 'u1')).health, 'online');
    assert.equal(await metric(monitor.registry, MonitorMetric.offline, {}), 2);

    const changes = (await redis.xRange(`${site}:changes`, '-', '+')).map((e) => e.message);
    const health = changes.filter((c) => c.change === 'health').map((c) => `${c.device} ${c.from}→${c.to}`);
    assert.deepEqual(
      health.sort(),
      ['u1 offline→online', 'u1 online→offline', 'u1 →online', 'u2 faulted→offline', 'u2 →faulted'].sort(),
    );
    const states = changes.filter((c) => c.change === 'State').map((c) => `${c.device} ${c.from}→${c.to}`);
    assert.deepEqual(states.sort(), ['u1 →CONNECTED', 'u2 →FAULT']);
    const first = changes.find((c) => c.change === 'State' && c.device === 'u2')!;
    assert.equal(first.unit, 'silence:u2');
    assert.equal(first.tsMs, String(T0));
  });

  test('counts invalid and undecodable payloads and moves on, without dead letters', async () => {
    const site = 'junk';
    await publish(site, 'u1', 'invalid', new Uint8Array([0xff, 0x00]));
    await publish(site, 'u1', 'telemetry', '{"ts": "yesterday", "seq": 1}');
    await publish(site, 'u1', 'telemetry', telemetry(T0, 2, 42));
    const monitor = await startMonitor(site);
    await waitFor('the monitor to settle', () => settled(monitor.durable));
    assert.equal(await metric(monitor.registry, MonitorMetric.invalid, { reason: 'kind-invalid' }), 1);
    assert.equal(await metric(monitor.registry, MonitorMetric.invalid, { reason: 'undecodable' }), 1);
    const state = await unit(site, 'u1');
    assert.equal(state.SoC, '42');
    assert.ok(Number(state.lastSeenMs) > 0);
    const dlq = await jsm.streams.info('BSU_DLQ');
    assert.equal(dlq.state.messages, 0);
  });

  test('one script call applies many messages; a message that fails is reported alone', async () => {
    const sha = await redis.scriptLoad(monitorScripts().apply);
    const site = 'chunk';
    const keys = monitorKeys(`${site}:`);
    const now = Date.now();
    // One message per entry, nothing folded: the script alone.
    const message = (
      device: string,
      kind: MonitorUpdate['kind'],
      seq: number,
      fields: Record<string, string>,
    ) => entryOf({ kind, site, device, seq, tsMs: now - 1000 + seq, seenMs: now - 1000 + seq, fields });
    const call = applyCall(keys, { nowMs: now, offlineAfterMs: 120_000, changesMaxLen: 1000 }, [
      message('u1', 'telemetry', 1, { SoC: '50.5' }),
      // An event without an action: applying it fails in the script.
      message('u1', 'event', 2, { alarm: 'OVER_TEMP' }),
      message('u2', 'telemetry', 3, { SoC: '61' }),
      message('u1', 'telemetry', 1, { SoC: '50.5' }),
    ]);
    assert.equal(call.keys.length, 4 + 4 * APPLY_KEYS_PER_ENTRY);
    assert.equal(call.arguments.length, 3 + 4 * APPLY_ARGS_PER_ENTRY);
    const results = (await redis.evalSha(sha, call)) as unknown[];
    assert.equal(results.length, 4);
    assert.deepEqual([results[0], results[2], results[3]], [1, 1, 0], 'applied, applied, replayed (stale)');
    assert.match(String(results[1]), /^error: /, 'the failing message is reported as an error');
    assert.equal((await unit(site, 'u1')).SoC, '50.5');
    assert.equal((await unit(site, 'u2')).SoC, '61');
    assert.deepEqual(await siteCounts(site), { units: 2, online: 2, offline: 0, faulted: 0 });
    // Every key the script wrote is one it was given: Redis Cluster routes a call by its KEYS.
    const written = await redis.keys(`${site}:*`);
    assert.equal(written.length, 8);
    assert.deepEqual(
      written.filter((key) => !call.keys.includes(key)),
      [],
    );
  });

  test('a conflated backlog leaves exactly the state, indexes and changes of one message at a time', async () => {
    const site = 'fold';
    const withoutSoH = (ts: number, seq: number, SoC: number) =>
      JSON.stringify({ ts, seq, SoC, V: 770, A: -2, W: -1500 });
    // Readings in order, late, replayed and with varying fields, between status changes and alarms.
    let n = 0;
    for (let round = 1; round <= 6; round++)
      for (const device of ['u1', 'u2', 'u3', 'u4']) {
        n++;
        await publish(site, device, 'telemetry', telemetry(T0 + round * 1000, n, 30 + round, round * 100));
        if (round === 2) await publish(site, device, 'telemetry', telemetry(T0 + 500, n, 10)); // late
        if (round === 3 && device === 'u2')
          await publish(site, device, 'status', status(T0 + 3100, n, 'FAULT'));
        if (round === 4 && device === 'u3')
          await publish(site, device, 'telemetry', withoutSoH(T0 + 4200, n, 77));
        if (round === 5 && device === 'u3')
          await publish(site, device, 'event', event(T0 + 5100, n, 'OVER_VOLT_ALARM', 'raised'));
        if (round === 5 && device === 'u4')
          await publish(site, device, 'telemetry', telemetry(T0 + 2000, n, 32, 200)); // replayed
        // Messages that only say the unit was heard from, between its readings.
        if (round === 3 && device === 'u1') await publish(site, device, 'invalid', new Uint8Array([0xff]));
        if (round === 4 && device === 'u4') await publish(site, device, 'telemetry', '{"ts": "later"}');
      }
    await publish(site, 'u1', 'status', status(T0 + 7000, 99, 'CONNECTED', 'CHARGING'));
    await publish(site, 'u3', 'telemetry', withoutSoH(T0 + 3500, 100, 5)); // late, fewer fields
    await publish(site, 'u2', 'telemetry', telemetry(T0 + 9000, 101, 99));
    // A newer reading without SoH cannot stand for an older one with it.
    await publish(site, 'u5', 'telemetry', telemetry(T0 + 1000, 102, 50));
    await publish(site, 'u5', 'telemetry', withoutSoH(T0 + 2000, 103, 51));

    const batched = await startMonitor(site, { redisKeyPrefix: 'fold-batched:', durable: 'fold-batched' });
    const single = await startMonitor(site, {
      redisKeyPrefix: 'fold-single:',
      durable: 'fold-single',
      batchSize: '1',
    });
    await waitFor(
      'both monitors to settle',
      async () => (await settled(batched.durable)) && (await settled(single.durable)),
    );
    assert.ok(
      (await metric(batched.registry, MonitorMetric.conflated, { kind: 'telemetry' })) > 0,
      'the backlog was conflated',
    );
    assert.equal(await metric(single.registry, MonitorMetric.conflated, {}), 0);

    /** Everything a monitor wrote under a prefix, with the prefix taken out. */
    const snapshot = async (prefix: string) => {
      const out: Record<string, unknown> = {};
      for (const key of (await redis.keys(`${prefix}*`)).sort()) {
        const name = key.slice(prefix.length);
        const type = await redis.type(key);
        if (type === 'hash') out[name] = await redis.hGetAll(key);
        else if (type === 'set') out[name] = (await redis.sMembers(key)).sort();
        else if (type === 'zset') out[name] = await redis.zRangeWithScores(key, 0, -1);
        else if (type === 'stream') out[name] = (await redis.xRange(key, '-', '+')).map((e) => e.message);
        else out[name] = type;
      }
      return out;
    };
    const folded = await snapshot('fold-batched:');
    assert.deepEqual(folded, await snapshot('fold-single:'));
    assert.equal((folded['unit:fold:u3'] as Record<string, string>).SoC, '36', 'the newest reading won');
    assert.equal((folded['unit:fold:u2'] as Record<string, string>).health, 'faulted');
    assert.equal(
      (folded['unit:fold:u5'] as Record<string, string>).SoH,
      '97.5',
      'kept from the older reading',
    );
    assert.ok((folded.changes as unknown[]).length >= 6, 'changes were announced');
  });

  test('loses nothing when Redis is killed and restarted under load', async (t) => {
    const site = 'outage';
    const devices = Array.from({ length: 20 }, (_, i) => `u${i + 1}`);
    const rounds = 100;
    const monitor = await startMonitor(site, { batchSize: '100' });
    const load = (async () => {
      for (let n = 1; n <= rounds; n++) {
        await Promise.all(
          devices.map((d) => publish(site, d, 'telemetry', telemetry(T0 + n * 1000, n, n % 100, n))),
        );
        await sleep(20);
      }
    })();
    await waitFor('some state', async () => (await siteCounts(site)).units === devices.length);
    await killServer(redisServer);
    await waitFor('readiness to drop', async () => !(await monitor.run.readiness()).ready, 10_000);
    await sleep(2_000);
    redisServer = await servers.restart(redisServer);
    await load;
    await waitFor('all settled', () => settled(monitor.durable), 60_000, 250);
    await waitFor('ready again', async () => (await monitor.run.readiness()).ready, 10_000);
    for (const d of devices) {
      const state = await unit(site, d);
      assert.equal(state.telemetryTsMs, String(T0 + rounds * 1000), `${d} holds its last reading`);
      assert.equal(state.SoC, String(rounds % 100));
      assert.equal(state.W, String(rounds));
    }
    assert.deepEqual(await siteCounts(site), { units: 20, online: 20, offline: 0, faulted: 0 });
    const retried = (
      await monitor.registry.getSingleMetric('switchyard_consumer_messages_retried_total')!.get()
    ).values[0]?.value;
    t.diagnostic(`${retried ?? 0} messages retried across the Redis outage`);
  });
});

describe('monitor on a Redis Cluster node', () => {
  const servers = new TestServers('monitor-cluster');
  let admin: RedisClientType;
  let url: string;

  before(async () => {
    const spec = redisSpec({
      name: 'redis-cluster',
      dir: join(servers.dir, 'cluster'),
      port: await freePort(),
    });
    const node = await servers.start({
      ...spec,
      args: [
        ...spec.args,
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        join(spec.dataDir, 'nodes.conf'),
      ],
    });
    url = node.url;
    admin = createClient({ url });
    admin.on('error', () => undefined);
    await admin.connect();
    // One node holding every slot: a cluster that checks each call's keys like a large one does.
    await admin.sendCommand(['CLUSTER', 'ADDSLOTSRANGE', '0', '16383']);
    await waitUntil('the cluster state to be ok', async () =>
      String(await admin.sendCommand(['CLUSTER', 'INFO'])).includes('cluster_state:ok'),
    );
  });
  after(async () => {
    admin?.destroy();
    await servers.stopAll();
  });

  const monitorSink = (redisKeyPrefix: string, now: () => number) =>
    new RedisMonitorSink({ ...sinkDefaults(url, redisKeyPrefix), now });
  const batch = () => [
    sinkMessage('cl', 'u1', 'telemetry', { ts: Date.now() - 1000, seq: 1, SoC: 51, V: 770, A: 1, W: 770 }),
    sinkMessage('cl', 'u2', 'status', { ts: Date.now() - 1000, seq: 1, State: 'FAULT' }),
    sinkMessage('cl', 'u2', 'event', {
      ts: Date.now() - 900,
      seq: 2,
      alarm: 'GROUND_FAULT',
      action: 'raised',
    }),
  ];

  test('applies and sweeps when its key prefix is a hash tag, and cannot without one', async (t) => {
    let now = Date.now();
    const sink = monitorSink('{mon}:', () => now);
    const untagged = monitorSink('mon:', () => now);
    t.after(() => Promise.all([sink.close(), untagged.close()]));
    await sink.open();
    assert.deepEqual(await sink.write(batch(), AbortSignal.timeout(5_000)), { rejected: [] });
    const keys = monitorKeys('{mon}:');
    assert.equal((await admin.hGetAll(keys.unit('cl', 'u1'))).SoC, '51');
    assert.equal((await admin.hGetAll(keys.unit('cl', 'u2'))).health, 'faulted');
    now += 120_000;
    assert.equal(await sink.sweep(), 2, 'both units went offline');
    assert.deepEqual(
      { ...(await admin.hGetAll(keys.site('cl'))) },
      {
        units: '2',
        online: '0',
        offline: '2',
        faulted: '0',
      },
    );

    // Without a hash tag the keys of one call fall in different slots: Redis refuses the call.
    await untagged.open();
    await assert.rejects(untagged.write(batch(), AbortSignal.timeout(5_000)), /CROSSSLOT/);
  });
});

describe("monitor on the stack's Redis (one ACL user, append-only file)", () => {
  const servers = new TestServers('monitor-acl');
  after(() => servers.stopAll());

  test('anonymous clients are refused, and the state written through scripts survives a restart', async (t) => {
    const passwordFile = join(servers.dir, 'redis-password');
    writeFileSync(passwordFile, 'correct horse battery staple', { mode: 0o600 });
    let server = await servers.start(
      redisSpec({
        name: 'redis-acl',
        dir: join(servers.dir, 'redis-acl'),
        port: await freePort(),
        acl: { user: 'switchyard', passwordFile },
      }),
    );
    const anonymous = createClient({ url: server.url });
    anonymous.on('error', () => undefined);
    await anonymous.connect();
    await assert.rejects(anonymous.ping(), /NOAUTH/);
    await assert.rejects(anonymous.auth({ username: 'default', password: '' }), /WRONGPASS/);
    anonymous.destroy();

    const sink = new RedisMonitorSink({
      ...sinkDefaults(server.url, 'acl:'),
      redisUsername: 'switchyard',
      redisPassword: 'correct horse battery staple',
    });
    t.after(() => sink.close());
    await sink.open();
    const ts = Date.now() - 1000;
    const written = await sink.write(
      [
        sinkMessage('s', 'u1', 'telemetry', { ts, seq: 1, SoC: 51, V: 770, A: 1, W: 770 }),
        sinkMessage('s', 'u2', 'status', { ts, seq: 1, State: 'CONNECTED', ChaSt: 'DISCHARGING' }),
      ],
      AbortSignal.timeout(5_000),
    );
    assert.deepEqual(written, { rejected: [] });

    const admin = createClient({
      url: server.url,
      username: 'switchyard',
      password: 'correct horse battery staple',
    });
    admin.on('error', () => undefined);
    t.after(() => admin.destroy());
    await admin.connect();
    const state = async () => ({
      u1: await admin.hGetAll('acl:unit:s:u1'),
      u2: await admin.hGetAll('acl:unit:s:u2'),
      site: await admin.hGetAll('acl:site:s'),
    });
    const before = await state();
    assert.equal(before.u1.SoC, '51');
    assert.equal(before.u2.State, 'CONNECTED');

    // A clean stop, as a host shutdown does, then the same data directory again.
    await stopServer(server, 10_000);
    server = await servers.restart(server);
    await waitFor('Redis to answer again', async () => {
      try {
        return (await admin.ping()) === 'PONG';
      } catch {
        return false;
      }
    });
    assert.deepEqual(await state(), before, 'the append-only file brought every key back');
  });
});
