/**
 * End-to-end latency: a device publishes over MQTT at a steady rate, and each message is timed
 * until the monitor's Redis state reflects it. The whole path is real: mosquitto → bridge (dist/)
 * → site nats-server → leaf link → hub nats-server (`BSU` sourcing the site) → `switchyard
 * monitor` (dist/) → redis-server.
 *
 * "Reflects it" is read from Redis itself: keyspace notifications on the unit hashes say which
 * unit changed, and an HMGET on a separate connection reads its `telemetryTsMs` / `statusTsMs`.
 * Those only move forward in device time, so a message with `ts` T of a unit is reflected once the
 * stored time of its kind is ≥ T. The change stream `bsu:changes` would not do: it announces state
 * changes, not telemetry values. The reading connection's round trip is part of each figure (tens
 * of microseconds when idle, a few ms under load): the figures err on the slow side.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { jetstreamManager } from '@nats-io/jetstream';
import mqtt from 'mqtt';
import { createClient } from 'redis';
import { addSite } from '../cloud/hub-stream.ts';
import { monitorKeys, UnitField } from '../cloud/monitor/keys.ts';
import { deviceTimeMs } from '../schemas/index.ts';
import { SimClock, TrafficGenerator } from '../simulate/traffic.ts';
import { freePort } from '../lib/process.ts';
import { startBridge } from '../test/support/edge.ts';
import { natsConnect } from '../test/support/jetstream.ts';
import { startSwitchyard } from '../test/support/process.ts';
import { waitFor, type TestServers } from '../test/support/servers.ts';
import { ACKED, envOf, scrape } from './support/consumers.ts';
import { sleep } from '../lib/timers.ts';

export interface LatencyOptions {
  /** Messages per second, all devices together. */
  rate: number;
  /** Length of the measured run, s. */
  seconds: number;
  /** Length of the unmeasured run before it (sourcing set up, connections warm), s. */
  warmupS: number;
  devices: number;
  log: (line: string) => void;
}

export interface LatencyResult {
  /** Publish → Redis reflects it, ms, sorted. */
  latenciesMs: number[];
  /** Measured messages never reflected within the wait after the run. */
  unresolved: number;
  /** Publish → PUBACK (the bridge has it in the site stream), ms, sorted. */
  pubackMs: number[];
  /** Rate the publisher achieved, msgs/s. */
  achievedRate: number;
  /** Messages published in the measured run (events included; only telemetry and status are timed). */
  published: number;
  /** The monitor during the measured run, from its /metrics: batches written, mean batch, mean write. */
  monitor: { batches: number; meanBatch: number; meanWriteMs: number };
  /** This process's own event-loop delay during the measured run (p99, max), ms: the harness kept up. */
  harnessDelayMs: { p99: number; max: number };
}

const WRITE_SUM = 'switchyard_consumer_batch_write_seconds_sum';
const WRITE_COUNT = 'switchyard_consumer_batch_write_seconds_count';

/** Nearest-rank percentile of sorted values. */
export const percentile = (sorted: readonly number[], p: number): number =>
  sorted.length === 0 ? NaN : sorted[Math.max(0, Math.ceil(p * sorted.length) - 1)]!;

interface Waiting {
  tsMs: number;
  publishedMs: number;
  measured: boolean;
}

/** Messages published and not yet seen in Redis, per unit hash and kind, in publish order. */
class Reflections {
  private readonly waiting = new Map<string, { telemetry: Waiting[]; status: Waiting[] }>();
  private readonly dirty = new Set<string>();
  private reading = false;
  readonly latenciesMs: number[] = [];

  constructor(private readonly read: (key: string) => Promise<(string | null)[]>) {}

  expect(key: string, kind: 'telemetry' | 'status', w: Waiting): void {
    let unit = this.waiting.get(key);
    if (!unit) this.waiting.set(key, (unit = { telemetry: [], status: [] }));
    unit[kind].push(w);
  }

  /** A unit hash changed: read it, and read again if it changed meanwhile. */
  changed(key: string): void {
    if (!this.waiting.has(key)) return;
    this.dirty.add(key);
    if (!this.reading) void this.readDirty();
  }

  private async readDirty(): Promise<void> {
    this.reading = true;
    try {
      while (this.dirty.size > 0) {
        const keys = [...this.dirty];
        this.dirty.clear();
        // node-redis pipelines concurrent commands on the one connection.
        const rows = await Promise.all(keys.map((k) => this.read(k)));
        const now = performance.now();
        for (const [i, key] of keys.entries()) {
          const unit = this.waiting.get(key)!;
          const [telemetryTs, statusTs] = rows[i]!.map((v) => (v === null ? -Infinity : Number(v)));
          this.settle(unit.telemetry, telemetryTs!, now);
          this.settle(unit.status, statusTs!, now);
        }
      }
    } finally {
      this.reading = false;
    }
  }

  private settle(queue: Waiting[], storedTsMs: number, now: number): void {
    while (queue.length > 0 && queue[0]!.tsMs <= storedTsMs) {
      const w = queue.shift()!;
      if (w.measured) this.latenciesMs.push(now - w.publishedMs);
    }
  }

  /** Measured messages still waiting. */
  outstanding(): number {
    let n = 0;
    for (const unit of this.waiting.values())
      for (const w of [...unit.telemetry, ...unit.status]) if (w.measured) n++;
    return n;
  }

  /** Any message (warm-up included) still waiting. */
  anyOutstanding(): number {
    let n = 0;
    for (const unit of this.waiting.values()) n += unit.telemetry.length + unit.status.length;
    return n;
  }
}

/** Runs the end-to-end stack on `servers` and measures; stops the processes it started. */
export async function endToEndLatency(servers: TestServers, options: LatencyOptions): Promise<LatencyResult> {
  const site = 'site-e2e';
  const topo = await servers.hubAndSite(site);
  const broker = await servers.mosquitto();
  const redisServer = await servers.redis();
  const hubNc = await natsConnect(topo.hub.url);
  await addSite(await jetstreamManager(hubNc), site, {
    hubMaxAgeS: 3600,
    hubMaxBytes: -1,
    hubDuplicateWindowS: 900,
  });
  const bridge = await startBridge({ site, mqttUrl: broker.url, natsUrl: topo.site.url, compiled: true });
  const opsPort = await freePort();
  const monitor = startSwitchyard(
    ['monitor'],
    envOf({ natsUrl: topo.hub.url, redisUrl: redisServer.url, opsPort, logLevel: 'warn' }),
    { compiled: true },
  );
  const reader = createClient({ url: redisServer.url });
  const subscriber = reader.duplicate();
  reader.on('error', () => undefined);
  subscriber.on('error', () => undefined);
  const device = await mqtt.connectAsync(broker.url, { clientId: `bench-e2e-${process.pid}`, clean: true });
  try {
    await waitFor(
      'monitor ready',
      async () => {
        if (monitor.child.exitCode !== null) throw new Error(`monitor exited: ${monitor.output()}`);
        return (await fetch(`http://127.0.0.1:${opsPort}/readyz`)).ok;
      },
      30_000,
    );
    await reader.connect();
    await subscriber.connect();
    // Keyspace events (K) for hash commands (h): the HSETs the monitor's script makes on a unit.
    await reader.configSet('notify-keyspace-events', 'Kh');
    const keys = monitorKeys();
    const reflections = new Reflections((key) =>
      reader.hmGet(key, [UnitField.telemetryTsMs, UnitField.statusTsMs]),
    );
    const channelPrefix = '__keyspace@0__:';
    await subscriber.pSubscribe(`${channelPrefix}${keys.unit(site, '*')}`, (_event, channel) =>
      reflections.changed(channel.slice(channelPrefix.length)),
    );

    const gen = new TrafficGenerator({
      devices: options.devices,
      devicePrefix: 'bsu',
      seed: 23,
      telemetryEveryMs: 1000,
      statusEveryMs: 5_000,
      detailEvery: 0,
      clock: SimClock.wall,
      startTimeMs: Date.now(),
      invalidRatio: 0,
    });
    const pubackMs: number[] = [];
    let publishing = 0;
    const run = async (seconds: number, measured: boolean): Promise<{ sent: number; ms: number }> => {
      const total = Math.round(seconds * options.rate);
      const t0 = performance.now();
      let sent = 0;
      while (sent < total) {
        const due = Math.min(total, Math.floor(((performance.now() - t0) / 1000) * options.rate) + 1);
        while (sent < due) {
          const m = gen.next();
          const publishedMs = performance.now();
          if (m.kind === 'telemetry' || m.kind === 'status') {
            const { ts } = JSON.parse(m.payload.toString('utf8')) as { ts: string | number };
            reflections.expect(keys.unit(site, m.device), m.kind, {
              tsMs: deviceTimeMs(ts),
              publishedMs,
              measured,
            });
          }
          publishing++;
          void device.publishAsync(m.topic, m.payload, { qos: 1 }).then(() => {
            publishing--;
            if (measured) pubackMs.push(performance.now() - publishedMs);
          });
          sent++;
        }
        await sleep(2);
      }
      return { sent, ms: performance.now() - t0 };
    };

    options.log(`e2e: warm-up, ${options.warmupS} s at ${options.rate} msgs/s`);
    await run(options.warmupS, false);
    // The hub sources the site once the bridge created its streams: wait until it all came through.
    await waitFor('warm-up messages in Redis', () => reflections.anyOutstanding() === 0, 60_000, 50);
    options.log(`e2e: measuring, ${options.seconds} s at ${options.rate} msgs/s`);
    const opsUrl = `http://127.0.0.1:${opsPort}`;
    const names = [ACKED, WRITE_SUM, WRITE_COUNT];
    const before = await scrape(opsUrl, names);
    const loopDelay = monitorEventLoopDelay({ resolution: 10 });
    loopDelay.enable();
    const measured = await run(options.seconds, true);
    const waitUntil = performance.now() + 30_000;
    while (reflections.outstanding() > 0 && performance.now() < waitUntil) await sleep(50);
    loopDelay.disable();
    const after = await scrape(opsUrl, names);
    await waitFor('PUBACKs', () => publishing === 0, 30_000, 20);
    const batches = after[WRITE_COUNT]! - before[WRITE_COUNT]!;
    return {
      monitor: {
        batches,
        meanBatch: (after[ACKED]! - before[ACKED]!) / batches,
        meanWriteMs: ((after[WRITE_SUM]! - before[WRITE_SUM]!) / batches) * 1000,
      },
      harnessDelayMs: { p99: loopDelay.percentile(99) / 1e6, max: loopDelay.max / 1e6 },
      latenciesMs: [...reflections.latenciesMs].sort((a, b) => a - b),
      unresolved: reflections.outstanding(),
      pubackMs: pubackMs.sort((a, b) => a - b),
      achievedRate: (measured.sent / measured.ms) * 1000,
      published: measured.sent,
    };
  } finally {
    await device.endAsync().catch(() => undefined);
    subscriber.destroy();
    reader.destroy();
    await monitor.stop();
    await bridge.stop();
    await hubNc.close();
  }
}
