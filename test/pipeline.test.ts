/**
 * The whole pipeline through real servers: devices → mosquitto → `switchyard edge` → site
 * JetStream → leaf link → hub stream BSU → `switchyard archive` (s3rver), `switchyard monitor`
 * (Redis) and `switchyard ingest` (VictoriaMetrics), each consumer a child process with its own
 * durable and ops port. After every step each store is compared with what the hub holds: S3 has
 * every hub sequence once (an overlap only where the manifests show it), Redis has exactly the state
 * those messages make (test/support/monitor-state.ts), VictoriaMetrics has exactly one sample per
 * reading. Each test runs its own pipeline (servers, bridge, consumers), so what it asserts is what
 * it caused.
 */
import assert from 'node:assert/strict';
import { describe, test, type TestContext } from 'node:test';
import { isDeepStrictEqual } from 'node:util';
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { headers, type NatsConnection } from '@nats-io/transport-node';
import type { S3Client } from '@aws-sdk/client-s3';
import { createClient, type RedisClientType } from 'redis';
import { recordPayload } from '../cloud/archive/layout.ts';
import { createS3Client } from '../cloud/archive/s3.ts';
import { addSite } from '../cloud/hub-stream.ts';
import { monitorKeys } from '../cloud/monitor/keys.ts';
import { decodePayload, Header, messageId } from '../schemas/index.ts';
import { DLQ_STREAM, HUB_STREAM } from '../schemas/streams.ts';
import { freePort } from '../lib/process.ts';
import { killServer, stopServer, type RunningServer } from '../stack/server-process.ts';
import {
  DevicePublisher,
  startBridge,
  statusJson,
  SteadyLoad,
  telemetryJson,
  type BridgeProcess,
} from './support/edge.ts';
import { natsConnect, readStream, streamCount, type StoredMessage } from './support/jetstream.ts';
import { asSinkMessage, expectedMonitorState, readMonitorState } from './support/monitor-state.ts';
import { startSwitchyard, type SwitchyardProcess } from './support/process.ts';
import { overlapFromParts, readArchive } from './support/archive.ts';
import { s3rverSettings, TestServers, waitFor } from './support/servers.ts';
import { deadline } from '../lib/timers.ts';

const SITE = 'site-1';
const BUCKET = 'switchyard';
/** How long each store stays down under load. */
const OUTAGE_MS = 20_000;
/**
 * Rate asked of SteadyLoad: it waits for each tick's PUBACKs, so it reaches ~100–200 msg/s here.
 * It sends 8 messages per 20 ms tick, one device after the other: with at least 8 devices no
 * device sends two readings in the same millisecond (the device clock is the key of a point).
 */
const LOAD_PER_S = 400;

type ConsumerName = 'archive' | 'monitor' | 'ingest';
const DURABLE: Record<ConsumerName, string> = {
  archive: 'archive',
  monitor: 'monitor',
  ingest: 'ingest-influx2',
};

interface RunningConsumer {
  name: ConsumerName;
  opsUrl: string;
  env: Record<string, string>;
  process: SwitchyardProcess;
}

/** Sum of the samples of `name` whose labels include every one of `labels`, from /metrics. */
async function metric(opsUrl: string, name: string, ...labels: string[]): Promise<number> {
  const text = await (await fetch(`${opsUrl}/metrics`)).text();
  return text
    .split('\n')
    .filter((l) => l.startsWith(`${name}{`) && labels.every((label) => l.includes(label)))
    .reduce((n, l) => n + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
}

const readyStatus = async (opsUrl: string): Promise<number> =>
  (await fetch(`${opsUrl}/readyz`).catch(() => undefined))?.status ?? 0;

/**
 * One whole pipeline for one test: its own servers (hub and site nats-server, mosquitto, Redis,
 * s3rver, VictoriaMetrics), bridge and consumers, all stopped when the test ends.
 */
class Pipeline {
  readonly servers = new TestServers('pipeline');
  hubServer!: RunningServer;
  siteServer!: RunningServer;
  redisServer!: RunningServer;
  s3Server!: RunningServer;
  vm!: RunningServer;
  hub!: NatsConnection;
  jsm!: JetStreamManager;
  s3!: S3Client;
  redis!: RedisClientType;
  bridge: BridgeProcess | undefined;
  devices: DevicePublisher | undefined;
  readonly consumers = {} as Record<ConsumerName, RunningConsumer>;
  /** Messages the hub must hold so far. */
  published = 0;

  /** Starts a pipeline that stops when `t` ends. */
  static async start(t: TestContext): Promise<Pipeline> {
    const pipeline = new Pipeline();
    t.after(() => pipeline.stop());
    await pipeline.setUp();
    return pipeline;
  }

  private async setUp(): Promise<void> {
    const { servers } = this;
    const [topo, mosquitto] = await Promise.all([servers.hubAndSite(SITE), servers.mosquitto()]);
    [this.redisServer, this.s3Server, this.vm] = await Promise.all([
      servers.redis(),
      servers.s3([BUCKET]),
      servers.victoriaMetrics(),
    ]);
    [this.hubServer, this.siteServer] = [topo.hub, topo.site];
    this.hub = await natsConnect(this.hubServer.url);
    this.jsm = await jetstreamManager(this.hub);
    await addSite(this.jsm, SITE, {
      hubMaxAgeS: 3600,
      hubMaxBytes: -1,
      hubDuplicateWindowS: 900,
    });
    this.s3 = createS3Client(s3rverSettings(this.s3Server));
    this.redis = createClient({ url: this.redisServer.url });
    this.redis.on('error', () => undefined);
    await this.redis.connect();

    const common = {
      SWITCHYARD_NATS_URL: this.hubServer.url,
      SWITCHYARD_LOG_LEVEL: 'warn',
      // Short retry delays: the test sees each recovery soon after its store is back.
      SWITCHYARD_BACKOFF_MS: '200,500,1000',
    };
    // The bridge first, on its own: on a busy machine four processes starting at once can keep it
    // from being ready within startBridge's deadline.
    this.bridge = await startBridge({ site: SITE, mqttUrl: mosquitto.url, natsUrl: this.siteServer.url });
    await Promise.all([
      this.startConsumer('archive', {
        ...common,
        SWITCHYARD_OPS_PORT: String(await freePort()),
        SWITCHYARD_S3_ENDPOINT: this.s3Server.url,
        SWITCHYARD_S3_ACCESS_KEY_ID: 'S3RVER',
        SWITCHYARD_S3_SECRET_ACCESS_KEY: 'S3RVER',
        SWITCHYARD_S3_BUCKET: BUCKET,
        // Small objects that close within a second: many objects, each checked.
        SWITCHYARD_BATCH_SIZE: '500',
        SWITCHYARD_FETCH_EXPIRES_MS: '1000',
      }),
      this.startConsumer('monitor', {
        ...common,
        SWITCHYARD_OPS_PORT: String(await freePort()),
        SWITCHYARD_REDIS_URL: this.redisServer.url,
        // No unit goes offline while the file runs (health is online or faulted, exactly), so no
        // offline sweep either: the monitor's only script calls are its writes.
        SWITCHYARD_OFFLINE_AFTER_MS: '600000',
        SWITCHYARD_SWEEP_INTERVAL_MS: '600000',
        // Messages held by a killed monitor come back within seconds.
        SWITCHYARD_ACK_WAIT_MS: '5000',
      }),
      this.startConsumer('ingest', {
        ...common,
        SWITCHYARD_OPS_PORT: String(await freePort()),
        SWITCHYARD_SINK: 'influx2',
        SWITCHYARD_INFLUX2_URL: this.vm.url,
        SWITCHYARD_INFLUX2_TOKEN: 'local',
      }),
    ]);
    this.devices = await DevicePublisher.connect(mosquitto.url);
  }

  private async stop(): Promise<void> {
    await this.devices?.close();
    await Promise.all(Object.values(this.consumers).map((c) => c.process.stop()));
    await this.bridge?.stop();
    this.redis?.destroy();
    this.s3?.destroy();
    await this.hub?.close();
    await this.servers.stopAll();
  }

  /** Starts a consumer and waits until /readyz (or, with `until: 'healthz'`, /healthz) says 200. */
  async startConsumer(
    name: ConsumerName,
    env: Record<string, string>,
    until: 'readyz' | 'healthz' = 'readyz',
  ): Promise<RunningConsumer> {
    const opsUrl = `http://127.0.0.1:${env.SWITCHYARD_OPS_PORT}`;
    const command = startSwitchyard([name], env);
    // Recorded before it is up, so that the test's end stops it whatever happens.
    this.consumers[name] = { name, opsUrl, env, process: command };
    await waitFor(
      `${name} ${until}`,
      async () => {
        if (command.child.exitCode !== null) throw new Error(`${name} exited: ${command.output()}`);
        return (await fetch(`${opsUrl}/${until}`).catch(() => undefined))?.status === 200;
      },
      30_000,
    );
    return this.consumers[name];
  }

  /** Publishes through MQTT and counts what the hub must now hold. */
  async publish(topic: string, payload: string): Promise<void> {
    this.published++;
    await this.devices!.publish(topic, payload);
  }

  /** The durable of consumer `name`, as the hub has it. */
  durable(name: ConsumerName) {
    return this.jsm.consumers.info(HUB_STREAM, DURABLE[name]);
  }

  // -------------------------------------------------------------------------------------------
  // Reading back

  /** Waits until the hub holds `published` messages, and returns them all. */
  async hubMessages(): Promise<StoredMessage[]> {
    await waitFor(
      `BSU to hold ${this.published} messages`,
      async () => (await streamCount(this.hub, HUB_STREAM)) >= this.published,
      30_000,
      200,
    );
    const messages = await readStream(this.hub, HUB_STREAM);
    assert.equal(messages.length, this.published, 'the hub holds each published message once');
    return messages;
  }

  /** Waits until every durable has settled everything up to `lastSeq`. */
  async settled(lastSeq: number, timeoutMs = 60_000): Promise<void> {
    const names = Object.keys(DURABLE) as ConsumerName[];
    await waitFor(
      `every consumer to settle up to ${lastSeq}`,
      async () => {
        const infos = await Promise.all(names.map((n) => this.durable(n)));
        return infos.every(
          (i) => i.ack_floor.stream_seq >= lastSeq && i.num_ack_pending === 0 && i.num_pending === 0,
        );
      },
      timeoutMs,
      500,
    );
  }

  /** Timestamps of every sample of `metric` in VictoriaMetrics, by the values of `labels`. */
  async vmSamples(metric: string, labels: string[]): Promise<Record<string, number[]>> {
    await fetch(`${this.vm.url}/internal/force_flush`);
    const match = encodeURIComponent(`${metric}{site="${SITE}"}`);
    const text = await (await fetch(`${this.vm.url}/api/v1/export?match[]=${match}`)).text();
    const out: Record<string, number[]> = {};
    for (const line of text.split('\n')) {
      if (!line.trim()) continue;
      const series = JSON.parse(line) as { metric: Record<string, string>; timestamps: number[] };
      const key = labels.map((l) => series.metric[l]).join('/');
      out[key] = [...(out[key] ?? []), ...series.timestamps].sort((a, b) => a - b);
    }
    return out;
  }

  async storedSamples() {
    return {
      telemetry: await this.vmSamples('telemetry_SoC', ['device']),
      status: await this.vmSamples('status_State_code', ['device']),
      event: await this.vmSamples('event_raised', ['device', 'alarm']),
    };
  }

  /**
   * Waits until every consumer has settled what the hub holds, then compares each store with it.
   * `overlap`: whether an archive sequence may be in two objects (after a failure), as long as the
   * manifests show it.
   */
  async assertStoresMatchHub(t: TestContext, options: { overlap: boolean }): Promise<StoredMessage[]> {
    const messages = await this.hubMessages();
    const lastSeq = messages.at(-1)!.seq;
    await this.settled(lastSeq);

    // Archive: every hub sequence, bytes and subject intact.
    const { records, counts, manifests, parts } = await readArchive(this.s3, BUCKET, 'raw/');
    const bySeq = new Map(messages.map((m) => [m.seq, m]));
    assert.deepEqual(
      [...counts.keys()].sort((a, b) => a - b),
      messages.map((m) => m.seq),
      'S3 holds exactly the sequences of the hub',
    );
    for (const r of records) {
      const m = bySeq.get(r.seq)!;
      assert.equal(r.subject, m.subject, `subject of seq ${r.seq}`);
      assert.deepEqual(Buffer.from(recordPayload(r)), Buffer.from(m.payload), `payload of seq ${r.seq}`);
      assert.equal(r.headers[Header.receivedAt], m.headers[Header.receivedAt]);
    }
    const bySeqNumber = (a: number, b: number) => a - b;
    const twice = [...counts]
      .filter(([, n]) => n > 1)
      .map(([seq]) => seq)
      .sort(bySeqNumber);
    if (options.overlap)
      assert.deepEqual(
        twice,
        overlapFromParts(parts).sort(bySeqNumber),
        'every overlap shows in the manifests',
      );
    else assert.deepEqual(twice, [], 'no sequence archived twice');

    // Monitor: exactly the state these messages make, change announcements included.
    assert.deepEqual(
      await readMonitorState(this.redis, monitorKeys(), SITE),
      expectedMonitorState(messages.map(asSinkMessage)),
    );

    // Ingest: one sample per reading, at the device's time.
    const want = expectedSamples(messages);
    let got = await this.storedSamples();
    await waitFor(
      'VictoriaMetrics to show every sample',
      async () => isDeepStrictEqual((got = await this.storedSamples()), want),
      20_000,
      500,
    ).catch(() => undefined);
    assert.deepEqual(got, want);

    t.diagnostic(
      `${messages.length} messages; ${manifests.length} archive objects, ${twice.length} sequences in two`,
    );
    return messages;
  }
}

/** What VictoriaMetrics must hold for the hub's messages: one sample per reading. */
function expectedSamples(messages: StoredMessage[]) {
  const want = {
    telemetry: {} as Record<string, number[]>,
    status: {} as Record<string, number[]>,
    event: {} as Record<string, number[]>,
  };
  for (const m of messages) {
    const message = asSinkMessage(m);
    const decoded = decodePayload(message.kind, m.payload);
    if (!decoded.ok) continue;
    const key = decoded.kind === 'event' ? `${message.device}/${decoded.value.alarm}` : message.device;
    const into = want[decoded.kind];
    into[key] = [...(into[key] ?? []), decoded.tsMs].sort((a, b) => a - b);
  }
  return want;
}

describe('the pipeline from MQTT to S3, Redis and VictoriaMetrics', () => {
  test('every message published over MQTT reaches S3, Redis and VictoriaMetrics, counted exactly', async (t) => {
    const p = await Pipeline.start(t);
    const T0 = Date.now() - 600_000;
    const alarms: Record<string, [string, 'raised' | 'cleared'][]> = {
      'unit-1': [
        ['OVER_TEMP_WARNING', 'raised'],
        ['OVER_TEMP_WARNING', 'cleared'],
      ],
      'unit-2': [
        ['GROUND_FAULT', 'raised'],
        ['UNDER_TEMP_WARNING', 'raised'],
      ],
      'unit-3': [
        ['OVER_VOLT_ALARM', 'raised'],
        ['OVER_VOLT_ALARM', 'cleared'],
      ],
      'unit-4': [
        ['UNDER_SOC_MIN_WARNING', 'raised'],
        ['COMMUNICATION_ERROR', 'raised'],
      ],
    };
    const work: Promise<void>[] = [];
    const K = 30;
    for (const [device, events] of Object.entries(alarms)) {
      let clock = 0;
      const at = () => T0 + ++clock * 1000;
      for (let n = 1; n <= K; n++) {
        work.push(p.publish(`bsu/${device}/telemetry`, telemetryJson(n, at())));
        if (n % 6 === 0) work.push(p.publish(`bsu/${device}/status`, statusJson(n, at())));
        if (n % 10 === 0 && events[n / 10 - 1]) {
          const [alarm, action] = events[n / 10 - 1]!;
          work.push(p.publish(`bsu/${device}/event`, JSON.stringify({ ts: at(), seq: n, alarm, action })));
        }
      }
    }
    await Promise.all(work);
    const messages = await p.assertStoresMatchHub(t, { overlap: false });

    // The same, spelled out for one series and one unit.
    const telemetry = messages.filter((m) => m.subject.endsWith('.telemetry'));
    assert.equal(telemetry.length, 4 * K);
    const samples = await p.vmSamples('telemetry_SoC', ['device']);
    assert.equal(samples['unit-1']?.length, K, `exactly ${K} telemetry samples for unit-1`);
    const unit2 = await p.redis.hGetAll(monitorKeys().unit(SITE, 'unit-2'));
    const last2 = messages.filter((m) => m.subject === `bsu.${SITE}.unit-2.telemetry`).at(-1)!;
    assert.equal(unit2.telemetrySeq, String(last2.seq));
    assert.equal(unit2.health, 'faulted', 'GROUND_FAULT is an alarm');
    assert.deepEqual(JSON.parse(unit2.alarms!), ['GROUND_FAULT', 'UNDER_TEMP_WARNING']);
    assert.equal(await streamCount(p.hub, DLQ_STREAM), 0, 'nothing dead-lettered');
  });

  test('a payload ingest cannot write is dead-lettered with its reason; archive and monitor take it', async (t) => {
    const p = await Pipeline.start(t);
    // No device payload passes the bridge and fails ingest (both decode with the same schemas):
    // the poison goes into the site stream directly, with the headers the bridge would add.
    const site = await natsConnect(p.siteServer.url);
    const ts = Date.now() - 5_000;
    const poison = JSON.stringify({ ts, seq: 1, SoC: 'full', V: 800.5, A: 1.5, W: 1200 });
    const h = headers();
    h.set(Header.site, SITE);
    h.set(Header.gateway, `gw-${SITE}`);
    h.set(Header.receivedAt, new Date().toISOString());
    h.set(Header.mqttTopic, 'bsu/poison-1/telemetry');
    h.set(Header.schema, 'telemetry/1');
    h.set(Header.msgId, messageId(SITE, 'poison-1', 'telemetry', 1, ts));
    await jetstream(site).publish(`bsu.${SITE}.poison-1.telemetry`, poison, { headers: h });
    p.published++;
    await site.close();
    // Then the same device sends a good reading, and a payload the bridge keeps aside as invalid.
    await p.publish('bsu/poison-1/telemetry', telemetryJson(2, ts + 1000));
    await p.publish('bsu/poison-1/status', 'not json');

    const messages = await p.assertStoresMatchHub(t, { overlap: false });
    const original = messages.find((m) => Buffer.from(m.payload).toString() === poison);
    assert.ok(original, 'the hub sourced the poison from the site stream');
    assert.ok(messages.some((m) => m.subject === `bsu.${SITE}.poison-1.invalid`));

    const letters = await readStream(p.hub, DLQ_STREAM);
    assert.equal(letters.length, 1, 'one dead letter: ingest, for the poison');
    const [letter] = letters;
    assert.equal(letter!.subject, `dlq.ingest-influx2.bsu.${SITE}.poison-1.telemetry`);
    assert.match(letter!.headers[Header.dlqReason]!, /^rejected: payload does not decode: telemetry\.SoC/);
    assert.equal(letter!.headers[Header.dlqConsumer], 'ingest-influx2');
    assert.equal(letter!.headers[Header.dlqStream], HUB_STREAM);
    assert.equal(letter!.headers[Header.dlqSeq], String(original.seq));
    assert.equal(letter!.headers[Header.dlqSubject], original.subject);
    assert.equal(letter!.headers[Header.receivedAt], original.headers[Header.receivedAt]);
    assert.equal(Buffer.from(letter!.payload).toString(), poison);

    const { archive, monitor, ingest } = p.consumers;
    const monitorInvalid = (reason: string) =>
      metric(monitor.opsUrl, 'switchyard_monitor_invalid_total', `reason="${reason}"`);
    assert.equal(await monitorInvalid('undecodable'), 1, 'the monitor counted the poison');
    assert.equal(await monitorInvalid('kind-invalid'), 1, 'and the payload the bridge kept aside');
    const good = messages.find((m) => m.subject === original.subject && m.seq !== original.seq)!;
    const unit = await p.redis.hGetAll(monitorKeys().unit(SITE, 'poison-1'));
    assert.equal(unit.telemetrySeq, String(good.seq), 'the good reading after the poison is applied');
    assert.equal(unit.lastSeq, String(messages.at(-1)!.seq), 'the invalid payload marked the unit seen');
    assert.equal(
      await metric(ingest.opsUrl, 'switchyard_consumer_messages_skipped_total'),
      1,
      'ingest acked the invalid payload without writing it',
    );
    for (const c of [archive, monitor])
      assert.equal(await metric(c.opsUrl, 'switchyard_consumer_messages_dead_lettered_total'), 0);
  });

  test(`archive, monitor and ingest each wait out a ${OUTAGE_MS / 1000} s outage of their store under load while the others carry on`, async (t) => {
    const p = await Pipeline.start(t);
    const loadDevices = Array.from({ length: 10 }, (_, i) => `load-${i + 1}`);
    const load = new SteadyLoad(p.devices!, loadDevices, LOAD_PER_S);
    const loadStartedAt = Date.now();
    const names = Object.keys(DURABLE) as ConsumerName[];
    const counter = (c: ConsumerName, name: string) => metric(p.consumers[c].opsUrl, name);
    const acked = (c: ConsumerName) => counter(c, 'switchyard_consumer_messages_acked_total');
    const ackedByAll = async () =>
      Object.fromEntries(await Promise.all(names.map(async (n) => [n, await acked(n)] as const)));

    async function outage(
      store: string,
      down: ConsumerName,
      stop: () => Promise<void>,
      start: () => Promise<void>,
    ): Promise<void> {
      const retried = () => counter(down, 'switchyard_consumer_messages_retried_total');
      const retriedBefore = await retried();
      const stoppedAt = Date.now();
      const outageOver = deadline(OUTAGE_MS);
      await stop();
      const { opsUrl } = p.consumers[down];
      await waitFor(
        `${down} /readyz to fail while ${store} is down`,
        async () => (await readyStatus(opsUrl)) === 503,
        10_000,
      );
      // A write already under way when the store died may still succeed and be acked. Once a
      // batch has failed and no write is left in flight, the runner waits for the store without
      // fetching: from then on it must ack nothing.
      await waitFor(
        `${down} to fail a batch and settle every write in flight`,
        async () =>
          (await retried()) > retriedBefore &&
          (await counter(down, 'switchyard_consumer_writes_in_flight')) === 0,
        OUTAGE_MS,
      );
      const from = await ackedByAll();
      // The store stays down for the whole outage; the others must ack more meanwhile.
      let to = from;
      await waitFor(
        `the ${store} outage to last ${OUTAGE_MS} ms with the others acking`,
        async () => {
          to = await ackedByAll();
          return outageOver.expired() && names.every((n) => n === down || to[n]! > from[n]!);
        },
        OUTAGE_MS + 30_000,
        500,
      );
      const readyz = await fetch(`${opsUrl}/readyz`);
      assert.equal(readyz.status, 503, `${down} is not ready at the end of the ${store} outage`);
      assert.match(await readyz.text(), /"ready":false/);
      assert.equal(to[down], from[down], `${down} acked nothing while ${store} was down`);
      await start();
      const backAt = Date.now();
      await waitFor(`${down} ready again`, async () => (await readyStatus(opsUrl)) === 200, 30_000);
      const lastSeq = (await p.jsm.streams.info(HUB_STREAM)).state.last_seq;
      await waitFor(
        `${down} to catch up with the hub`,
        async () => (await p.durable(down)).ack_floor.stream_seq >= lastSeq,
        30_000,
        500,
      );
      t.diagnostic(
        `${store} down ${backAt - stoppedAt} ms; ${down} caught up ${Date.now() - backAt} ms after the restart; others acked ${names
          .filter((n) => n !== down)
          .map((n) => `${n} +${to[n]! - from[n]!}`)
          .join(', ')} meanwhile`,
      );
    }

    try {
      await waitFor('the load to reach every store', async () =>
        (await Promise.all(names.map((n) => acked(n)))).every((n) => n > 100),
      );
      // Redis: killed outright (it keeps an append-only file).
      await outage(
        'Redis',
        'monitor',
        () => killServer(p.redisServer),
        async () => void (p.redisServer = await p.servers.restart(p.redisServer)),
      );
      // S3: killed outright.
      await outage(
        's3rver',
        'archive',
        () => killServer(p.s3Server),
        async () => void (p.s3Server = await p.servers.restart(p.s3Server)),
      );
      // VictoriaMetrics: stopped, not killed. 1.79 acknowledges writes before they are on disk and
      // loses the last seconds on SIGKILL (docs/ingest.md); that window is the archive's to refill.
      await outage(
        'VictoriaMetrics',
        'ingest',
        () => stopServer(p.vm),
        async () => void (p.vm = await p.servers.restart(p.vm)),
      );
    } finally {
      await load.stop();
      p.published += load.total;
    }
    t.diagnostic(
      `load: ${load.total} messages at ${Math.round((load.total * 1000) / (Date.now() - loadStartedAt))} msg/s`,
    );
    const messages = await p.assertStoresMatchHub(t, { overlap: true });
    for (const device of loadDevices) {
      const count = messages.filter((m) => m.subject === `bsu.${SITE}.${device}.telemetry`).length;
      assert.equal(count, load.sent.get(device), `${device}: every reading on the hub once`);
    }
    assert.equal(await streamCount(p.hub, DLQ_STREAM), 0, 'the outages dead-lettered nothing');
  });

  test('a monitor killed after writing a batch it had not acked is restarted without a gap or a duplicate effect', async (t) => {
    const p = await Pipeline.start(t);
    const { redis } = p;
    const crashDevices = Array.from({ length: 10 }, (_, i) => `crash-${i + 1}`);
    const load = new SteadyLoad(p.devices!, crashDevices, LOAD_PER_S);
    const { env } = p.consumers.monitor;
    const scriptCalls = async () =>
      Number(/cmdstat_evalsha:calls=(\d+)/.exec(await redis.info('commandstats'))?.[1] ?? 0);
    let held = 0;
    try {
      await waitFor('the monitor to take the new units', async () =>
        (await Promise.all(crashDevices.map((d) => redis.exists(monitorKeys().unit(SITE, d))))).every(
          Boolean,
        ),
      );
      // A stopped monitor leaves a backlog. The load pauses once it is there and the hub holds it
      // all, so that the next monitor sends the whole backlog to Redis (nothing arrives later to be
      // fetched ahead and held back unwritten).
      assert.equal(await p.consumers.monitor.process.stop('SIGTERM'), 0, 'the monitor stops cleanly');
      await waitFor(
        'a backlog of 200 for the monitor',
        async () => (await p.durable('monitor')).num_pending >= 200,
        30_000,
      );
      await load.pause();
      await waitFor(
        'the hub to hold the backlog',
        async () => (await streamCount(p.hub, HUB_STREAM)) >= p.published + load.total,
        30_000,
      );
      // Redis holds back script calls (PING and SCRIPT LOAD still answer): the next monitor opens,
      // fetches the backlog and sends it, and the write waits.
      await redis.sendCommand(['CLIENT', 'PAUSE', '30000', 'WRITE']);
      let monitor: RunningConsumer | undefined;
      try {
        // Not /readyz: its PING queues behind the held write on the same connection.
        monitor = await p.startConsumer('monitor', env, 'healthz');
        const { opsUrl } = monitor;
        // The first script call of the write waits in Redis, the client blocked (flags=b: script
        // calls are the only commands held back, and this monitor runs no offline sweep here).
        await waitFor(
          'the write to wait in Redis',
          async () => / flags=b /.test(String(await redis.sendCommand(['CLIENT', 'LIST']))),
          15_000,
          50,
        );
        // The whole backlog is in that one write: fetched in one batch (nothing is left for the
        // durable to deliver) and written as one pipeline, which node-redis sends in one socket
        // write. Its first call has reached Redis, so the rest has too, or sits in the kernel's
        // buffers, delivered whether the monitor runs or not.
        await waitFor(
          'the backlog in one write',
          async () => {
            const info = await p.durable('monitor');
            held = await metric(opsUrl, 'switchyard_consumer_in_flight_messages');
            return (
              info.num_pending === 0 &&
              held === info.num_ack_pending &&
              (await metric(opsUrl, 'switchyard_consumer_writes_in_flight')) === 1
            );
          },
          15_000,
          50,
        );
        assert.ok(held >= 100, `the monitor holds the backlog (${held})`);
        // Frozen before it reads Redis's answer, the monitor cannot ack what Redis then applies.
        process.kill(monitor.process.child.pid!, 'SIGSTOP');
        const before = await scriptCalls();
        await redis.sendCommand(['CLIENT', 'UNPAUSE']);
        // Applied: the held script call ran, and no client has a script call waiting or unread
        // (conflation may have folded the backlog into fewer calls than one per 100 messages).
        const scriptsPending = async () =>
          String(await redis.sendCommand(['CLIENT', 'LIST']))
            .split('\n')
            .some((c) => / cmd=evalsha /.test(c) && (/ flags=\S*b/.test(c) || !/ qbuf=0 /.test(c)));
        let calls = before;
        await waitFor(
          'Redis to apply the batch',
          async () => (calls = await scriptCalls()) > before && !(await scriptsPending()),
          10_000,
          50,
        ).catch((err: Error) =>
          assert.fail(`${err.message}: ${calls - before} script calls for ${held} messages`),
        );
      } finally {
        await redis.sendCommand(['CLIENT', 'UNPAUSE']);
        monitor?.process.child.kill('SIGKILL');
      }
      assert.equal(await monitor.process.exited, 'SIGKILL');
      const info = await p.durable('monitor');
      assert.ok(info.num_ack_pending >= held, `the written batch was never acked (${info.num_ack_pending})`);
      await p.startConsumer('monitor', env);
    } finally {
      await load.stop();
      p.published += load.total;
    }
    await p.assertStoresMatchHub(t, { overlap: true });
    const { opsUrl } = p.consumers.monitor;
    // Every redelivered message is stale (folded or not: conflation counts those folded into a
    // stale entry as stale too).
    const stale = await metric(opsUrl, 'switchyard_monitor_stale_total');
    assert.ok(stale >= held, `the redelivered batch changed nothing (${stale} stale of ${held})`);
    t.diagnostic(
      `killed with ${held} messages written and unacked; the next monitor found ${stale} stale and applied ${await metric(opsUrl, 'switchyard_monitor_updates_total')}`,
    );
  });
});
