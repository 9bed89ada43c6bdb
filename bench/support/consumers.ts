/**
 * What the consumers benchmark is made of: the preloaded hub stream, the bare fetch-and-ack loop
 * (the raw limit of nats-server), a consumer command as a child process sampled through its
 * /metrics, and raw line-protocol writes (the raw limit of a time-series database).
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import {
  AckPolicy,
  DeliverPolicy,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  type JsMsg,
  StorageType,
} from '@nats-io/jetstream';
import { headers as natsHeaders, nanos, type MsgHdrs, type NatsConnection } from '@nats-io/transport-node';
import { messagePoints, toLine } from '../../cloud/ingest/line-protocol.ts';
import { AsyncPublisher } from '../../edge/async-publisher.ts';
import { envName } from '../../lib/config.ts';
import {
  deviceTimeMs,
  Header,
  messageId,
  schemaTag,
  subjectFor,
  type DeviceKind,
} from '../../schemas/index.ts';
import { HUB_STREAM } from '../../schemas/streams.ts';
import { SimClock, TrafficGenerator, type SimMessage } from '../../simulate/traffic.ts';
import { freePort } from '../../lib/process.ts';
import { startSwitchyard } from '../../test/support/process.ts';
import { waitFor } from '../../test/support/servers.ts';
import { sleep } from '../../lib/timers.ts';
import type { NaiveResult, NaiveSettings } from '../naive/loop.ts';
import { cpuMeter, perSecond } from './common.ts';

const execFileAsync = promisify(execFile);

/** One device message as the bridge stores it in the hub stream. */
export interface FleetMessage {
  subject: string;
  site: string;
  device: string;
  kind: DeviceKind;
  /** The MQTT topic the device published on. */
  topic: string;
  payload: Buffer;
  /** Device time (`ts`), epoch ms. */
  tsMs: number;
  /** Device counter (`seq`). */
  seq: number;
}

export interface FleetOptions {
  sites: number;
  devicesPerSite: number;
  seed: number;
  /** Every n-th reading of a device carries per-string and per-module rows (several kB). */
  detailEvery: number;
}

/** Site id of the i-th site (0-based): `site-01`. */
export const siteId = (i: number): string => `site-${String(i + 1).padStart(2, '0')}`;

/**
 * `count` messages of a simulated fleet (TrafficGenerator, wall clock): telemetry every second per
 * device, a status every 10 s and on each state change, an event per alarm raised or cleared.
 * Device `i` belongs to site `i mod sites`, so every site's devices interleave as on the hub.
 */
export function fleetMessages(count: number, options: FleetOptions): FleetMessage[] {
  const gen = new TrafficGenerator({
    devices: options.sites * options.devicesPerSite,
    devicePrefix: 'bsu',
    seed: options.seed,
    telemetryEveryMs: 1000,
    statusEveryMs: 10_000,
    detailEvery: options.detailEvery,
    clock: SimClock.wall,
    startTimeMs: Date.now(),
    invalidRatio: 0,
  });
  const out: FleetMessage[] = [];
  while (out.length < count) {
    const m = gen.next();
    out.push(asStored(m, siteId(m.deviceIndex % options.sites)));
  }
  return out;
}

/** A simulated device message as the bridge of `site` stores it. */
export function asStored(m: SimMessage, site: string): FleetMessage {
  const body = JSON.parse(m.payload.toString('utf8')) as { ts: string | number; seq: number };
  return {
    subject: subjectFor(site, m.device, m.kind),
    site,
    device: m.device,
    kind: m.kind,
    topic: m.topic,
    payload: m.payload,
    tsMs: deviceTimeMs(body.ts),
    seq: body.seq,
  };
}

/** The headers the bridge stores a message with (message id included). */
export function bridgeHeaders(m: FleetMessage): MsgHdrs {
  const h = natsHeaders();
  h.set(Header.site, m.site);
  h.set(Header.gateway, `gw-${m.site}`);
  h.set(Header.receivedAt, new Date(m.tsMs).toISOString());
  h.set(Header.mqttTopic, m.topic);
  h.set(Header.schema, schemaTag(m.kind));
  h.set(Header.msgId, messageId(m.site, m.device, m.kind, m.seq, m.tsMs));
  return h;
}

/**
 * Publishes `messages` into the hub stream (which must exist) with the headers the bridge sets,
 * `window` in flight; resolves once every one is stored.
 */
export async function publishToHub(
  nc: NatsConnection,
  messages: readonly FleetMessage[],
  window = 2000,
): Promise<void> {
  const publisher = new AsyncPublisher(nc, 30_000);
  try {
    const inFlight: Promise<unknown>[] = [];
    for (const m of messages) {
      inFlight.push(publisher.publish(m.subject, m.payload, bridgeHeaders(m)));
      if (inFlight.length >= window) await Promise.all(inFlight.splice(0));
    }
    await Promise.all(inFlight);
  } finally {
    publisher.close();
  }
}

/**
 * Creates the hub stream `BSU` (file storage, the hub's 15 min duplicate window) with subjects
 * `bsu.>` and publishes `messages` into it with the headers the bridge sets, many in flight.
 * Production's `BSU` sources site streams instead of taking subjects; what a consumer reads is the
 * same.
 */
export async function preloadHubStream(
  nc: NatsConnection,
  messages: readonly FleetMessage[],
): Promise<number> {
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({
    name: HUB_STREAM,
    subjects: ['bsu.>'],
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    duplicate_window: nanos(900_000),
  });
  const t0 = performance.now();
  await publishToHub(nc, messages);
  const stored = (await jsm.streams.info(HUB_STREAM)).state.messages;
  if (stored !== messages.length)
    throw new Error(`preload: the stream holds ${stored} messages, expected ${messages.length}`);
  return perSecond(messages.length, performance.now() - t0);
}

/** A drain measured from the first settled batch to the last. */
export interface Drain {
  /** Messages (or points) per second between the two. */
  rate: number;
  /** Counted between the two. */
  counted: number;
  ms: number;
}

const drainOf = (fromCount: number, fromMs: number, toCount: number, toMs: number): Drain => ({
  rate: perSecond(toCount - fromCount, toMs - fromMs),
  counted: toCount - fromCount,
  ms: toMs - fromMs,
});

/** How the bare loop acks. */
export const AckMode = {
  /**
   * Once a batch is in, `ack()` each message and `ackAck()` the last, while the next batch is
   * fetched: how the runner acks (the server handles one connection's acks in order, so the last
   * one confirmed covers the batch). The acks of a batch leave in a few large socket writes. The
   * fastest loop, and the baseline.
   */
  batched: 'batched',
  /**
   * `ack()` each message as it arrives: each ack is flushed in a socket write of its own (the
   * client flushes between two iterations of the fetch), which costs nats-server and the client
   * about twice the CPU per message of `batched`.
   */
  asArrives: 'as-arrives',
  /** `ackAck()` each message as it arrives, all awaited before the next fetch. */
  confirmed: 'confirmed',
} as const;
export type AckMode = (typeof AckMode)[keyof typeof AckMode];

/**
 * The raw limit of the hub for one consumer: a durable pull consumer (same filter as the
 * consumers', ack explicit) fetched in batches of `batchSize` and acked (`mode`), and nothing
 * else. Timed from the end of the first batch to the last ack confirmed, like the consumers.
 */
export async function bareFetchAck(
  nc: NatsConnection,
  options: { durable: string; messages: number; batchSize: number; mode: AckMode; filterSubject: string },
): Promise<Drain> {
  const jsm = await jetstreamManager(nc);
  await jsm.consumers.add(HUB_STREAM, {
    durable_name: options.durable,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    filter_subject: options.filterSubject,
    ack_wait: nanos(60_000),
    max_ack_pending: 10_000,
  });
  try {
    const consumer = await jetstream(nc).consumers.get(HUB_STREAM, options.durable);
    const fetchBatch = async (max: number): Promise<JsMsg[]> => {
      const batch: JsMsg[] = [];
      const confirmations: Promise<boolean>[] = [];
      for await (const m of await consumer.fetch({ max_messages: max, expires: 5_000 })) {
        batch.push(m);
        if (options.mode === AckMode.asArrives) m.ack();
        else if (options.mode === AckMode.confirmed) confirmations.push(m.ackAck());
      }
      if (!(await Promise.all(confirmations)).every(Boolean))
        throw new Error(`${options.durable}: an ack was not confirmed`);
      return batch;
    };
    const ackBatch = async (batch: JsMsg[]): Promise<void> => {
      const last = batch.at(-1);
      if (!last || options.mode === AckMode.confirmed) return;
      // As they arrived: the server has a connection's acks once it answers a ping sent after them.
      if (options.mode === AckMode.asArrives) return nc.flush();
      for (const m of batch) if (m !== last) m.ack();
      if (!(await last.ackAck())) throw new Error(`${options.durable}: an ack was not confirmed`);
    };
    let fetched = 0;
    let firstMs = NaN;
    let firstCount = 0;
    const more = (): Promise<JsMsg[]> | undefined =>
      fetched < options.messages
        ? fetchBatch(Math.min(options.batchSize, options.messages - fetched))
        : undefined;
    let acking: Promise<void> = Promise.resolve();
    let next = more();
    while (next) {
      const batch = await next;
      fetched += batch.length;
      if (options.mode === AckMode.batched) {
        // The next fetch goes out while this batch is acked, as the runner fetches ahead; at most
        // one batch's confirmation is awaited at a time.
        next = more();
        const previous = acking;
        acking = ackBatch(batch);
        await previous;
      } else {
        await ackBatch(batch);
        next = more();
      }
      if (Number.isNaN(firstMs)) {
        firstMs = performance.now();
        firstCount = fetched;
      }
    }
    await acking;
    await nc.flush();
    const lastMs = performance.now();
    // One look after the run (never during it): every ack must have landed.
    const info = await jsm.consumers.info(HUB_STREAM, options.durable);
    if (info.num_ack_pending !== 0 || info.num_pending !== 0)
      throw new Error(
        `${options.durable}: ${info.num_ack_pending} unacked, ${info.num_pending} undelivered after the run`,
      );
    return drainOf(firstCount, firstMs, fetched, lastMs);
  } finally {
    await jsm.consumers.delete(HUB_STREAM, options.durable).catch(() => undefined);
  }
}

/** Sums of Prometheus samples by metric name (all label sets), from a /metrics endpoint. */
export async function scrape(opsUrl: string, names: readonly string[]): Promise<Record<string, number>> {
  const text = await (await fetch(`${opsUrl}/metrics`)).text();
  const out: Record<string, number> = Object.fromEntries(names.map((n) => [n, 0]));
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const end = line.search(/[{ ]/);
    const name = line.slice(0, end);
    if (name in out) out[name]! += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return out;
}

/** Environment variables for a command's config, from its schema's property names. */
export const envOf = (settings: Record<string, string | number | boolean>): Record<string, string> =>
  Object.fromEntries(Object.entries(settings).map(([k, v]) => [envName(k), String(v)]));

/** The runner's confirmed acks (docs/consumers.md, Metrics). */
export const ACKED = 'switchyard_consumer_messages_acked_total';
/** Messages the runner has fetched and started to settle (docs/consumers.md, Metrics). */
export const PROCESSED = 'switchyard_consumer_messages_processed_total';
/** Points the database acknowledged to ingest (docs/ingest.md). */
export const POINTS = 'switchyard_ingest_points_written_total';

/** What a consumer command did while draining the stream. */
export interface ConsumerDrain {
  /**
   * Messages per second from the first sample that shows a fetched batch to the first that shows
   * every message acked, counting only what was fetched after that first sample (as the bare loop
   * counts from the end of its first batch).
   */
  messages: Drain;
  /** Points per second over the same window: the messages' rate × points per message (ingest only). */
  points?: Drain;
  /** Process start to the first fetched batch seen, ms. */
  startMs: number;
  /** /metrics samples taken. */
  samples: number;
  /** The sampled counters at the end. */
  totals: Record<string, number>;
  /** CPU the consumer process used per message over the window, µs (from /proc, 10 ms ticks). */
  cpuUsPerMessage: number;
}

/** The settings `switchyard archive` needs to drain `BSU` of `nats` into s3rver `s3`. */
export const archiveSettings = (nats: { url: string }, s3: { url: string }) => ({
  natsUrl: nats.url,
  s3Endpoint: s3.url,
  s3AccessKeyId: 'S3RVER',
  s3SecretAccessKey: 'S3RVER',
  s3Bucket: 'switchyard',
});

/**
 * Runs `switchyard <command>` from dist/ (as deployed: its own process, compiled JavaScript) with
 * `settings` as SWITCHYARD_* variables until it has acked `messages`, sampling its /metrics every
 * `everyMs` — never consumer info, which stalls a filtered consumer's deliveries on nats-server 2.9.
 * The window opens at the first sample that shows fetched messages (the runner fetches ahead, so
 * its first ack comes several batches in: timing from the first ack would leave those out) and
 * closes at the first that shows them all acked; the messages fetched before it opened are not
 * counted. Both ends are late by at most `everyMs`.
 */
export async function drainWithConsumer(options: {
  command: 'archive' | 'monitor' | 'ingest';
  settings: Record<string, string | number | boolean>;
  messages: number;
  everyMs: number;
  timeoutMs: number;
  withPoints?: boolean;
  /** Node flags for the child (a profile: `--cpu-prof`). */
  nodeOptions?: string[];
}): Promise<ConsumerDrain> {
  const opsPort = await freePort();
  const opsUrl = `http://127.0.0.1:${opsPort}`;
  const names = options.withPoints ? [PROCESSED, ACKED, POINTS] : [PROCESSED, ACKED];
  const startedMs = performance.now();
  const p = startSwitchyard([options.command], envOf({ logLevel: 'warn', opsPort, ...options.settings }), {
    compiled: true,
    nodeOptions: options.nodeOptions ?? [],
  });
  try {
    await waitFor(
      `${options.command} /metrics`,
      async () => {
        if (p.child.exitCode !== null) throw new Error(`${options.command} exited: ${p.output()}`);
        return (await fetch(`${opsUrl}/metrics`)).ok;
      },
      30_000,
      20,
    );
    let first: { ms: number; values: Record<string, number>; cpu: ReturnType<typeof cpuMeter> } | undefined;
    let samples = 0;
    const deadline = performance.now() + options.timeoutMs;
    for (;;) {
      const values = await scrape(opsUrl, names);
      const ms = performance.now();
      samples++;
      if (!first && values[PROCESSED]! > 0)
        first = { ms, values, cpu: cpuMeter({ [options.command]: p.child.pid! }) };
      if (first && values[ACKED]! >= options.messages) {
        const messages = drainOf(first.values[PROCESSED]!, first.ms, values[ACKED]!, ms);
        const pointsPerMessage = values[POINTS]! / values[ACKED]!;
        return {
          messages,
          ...(options.withPoints
            ? {
                points: {
                  rate: messages.rate * pointsPerMessage,
                  counted: Math.round(messages.counted * pointsPerMessage),
                  ms: messages.ms,
                },
              }
            : {}),
          startMs: first.ms - startedMs,
          samples,
          totals: values,
          cpuUsPerMessage: first.cpu.perMessage(messages.counted)[options.command]!,
        };
      }
      if (p.child.exitCode !== null) throw new Error(`${options.command} exited: ${p.output()}`);
      if (ms > deadline)
        throw new Error(
          `${options.command}: acked ${values[ACKED]} of ${options.messages} in ${options.timeoutMs} ms: ${p.output().slice(-2000)}`,
        );
      await sleep(options.everyMs);
    }
  } finally {
    await p.stop();
  }
}

/** Line-protocol request bodies: the points of each run of `batchSize` messages, one body per run. */
export interface RawBodies {
  bodies: string[];
  /** Points in each body. */
  points: number[];
}

/**
 * The points ingest would write for `messages` (cloud/ingest/line-protocol.ts, built once), grouped like
 * ingest's fetches: one request body per `batchSize` messages. `measurementPrefix` moves them to
 * fresh series (VictoriaMetrics has no databases to keep two runs apart).
 */
export function lineProtocolBodies(
  messages: readonly FleetMessage[],
  batchSize: number,
  measurementPrefix = '',
): RawBodies {
  const bodies: string[] = [];
  const points: number[] = [];
  for (let i = 0; i < messages.length; i += batchSize) {
    const lines: string[] = [];
    for (const m of messages.slice(i, i + batchSize)) {
      const result = messagePoints(m);
      if (result.outcome !== 'write') throw new Error(`${m.subject}: ${result.outcome}`);
      for (const p of result.points)
        lines.push(toLine({ ...p, measurement: measurementPrefix + p.measurement }));
    }
    bodies.push(lines.join('\n'));
    points.push(lines.length);
  }
  return { bodies, points };
}

/**
 * The raw limit of a database: `bodies` POSTed one after the other (as ingest sends them) over a
 * keep-alive connection, plain text or gzip; timed from the first answer to the last, like the
 * consumers.
 */
export async function rawWrite(url: string, raw: RawBodies, options: { gzip: boolean }): Promise<Drain> {
  let firstMs = NaN;
  let firstCount = 0;
  let written = 0;
  for (const [i, text] of raw.bodies.entries()) {
    const res = await fetch(url, {
      method: 'POST',
      headers: {
        'content-type': 'text/plain; charset=utf-8',
        ...(options.gzip ? { 'content-encoding': 'gzip' } : {}),
      },
      body: options.gzip ? gzipSync(text) : text,
    });
    const answer = await res.text();
    if (!res.ok) throw new Error(`raw write to ${url}: ${res.status} ${answer}`);
    written += raw.points[i]!;
    if (i === 0) {
      firstMs = performance.now();
      firstCount = written;
    }
  }
  return drainOf(firstCount, firstMs, written, performance.now());
}

/** The naive scripts of bench/naive/, one per consumer. */
export type NaiveScript = 'archive' | 'monitor' | 'ingest';

/**
 * Runs bench/naive/`script`.ts as a child process of plain node (TypeScript stripped by tsx at
 * load) with `settings` as its one argument; resolves with the result line it prints.
 */
export async function runNaive(script: string, settings: object, timeoutMs: number): Promise<NaiveResult> {
  const file = fileURLToPath(new URL(`../naive/${script}.ts`, import.meta.url));
  const { stdout } = await execFileAsync(
    process.execPath,
    ['--import', 'tsx', file, JSON.stringify(settings)],
    {
      timeout: timeoutMs,
    },
  );
  return JSON.parse(stdout.trim().split('\n').at(-1)!) as NaiveResult;
}

/**
 * Runs a naive consumer until it has acked `settings.messages`; its CPU is its own
 * `process.cpuUsage()` over the same window as a consumer's.
 */
export async function drainWithNaive(
  script: NaiveScript,
  settings: Omit<NaiveSettings, 'stream' | 'durable'> & { durable?: string },
  timeoutMs: number,
): Promise<Drain & { cpuUsPerMessage: number }> {
  const full: NaiveSettings = { stream: HUB_STREAM, durable: `naive-${script}`, ...settings };
  const result = await runNaive(script, full, timeoutMs);
  return {
    rate: perSecond(result.messages, result.ms),
    counted: result.messages,
    ms: result.ms,
    cpuUsPerMessage: result.cpuUs / result.messages,
  };
}
