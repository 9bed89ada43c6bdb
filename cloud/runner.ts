/**
 * The consumer runner: the one loop every cloud consumer (archive, monitor, ingest) runs, and the
 * only code that acks, naks or terms a message. A consumer is this runner plus a Sink
 * (cloud/sink.ts).
 *
 * Per batch:
 * 1. Fetch up to `batchSize` messages from the durable pull consumer. Batches flow fetch → write →
 *    ack as a pipeline: up to `writesInFlight` batches are being written while the next one is
 *    fetched (pull, don't buffer: at most `writesInFlight + 1` batches in hand), so neither NATS
 *    nor the store waits for the other. After a failed write the runner goes back to one batch at
 *    a time until a write succeeds again.
 * 2. Split it into writes of at most `maxBatchBytes` and hand each to `sink.write(batch, signal)`.
 * 3. Settle every message:
 *    - written → ack; the batch's last ack is confirmed by the server (`ackAck`) before the batch
 *      counts as settled (the fetch ahead does not wait for it);
 *    - listed in `rejected`, or the write threw PermanentSinkError → dead letter (BSU_DLQ), then term;
 *    - any other error → nak with a growing delay (`backoffMs`, jittered), or dead letter once the
 *      message has been delivered `maxDeliver` times; the runner then waits (the same delay, then
 *      until the sink says it is ready) before it fetches again, so a dead store is not hammered
 *      and messages do not burn through their deliveries while it is down.
 *    A message whose subject does not parse is dead-lettered without reaching the sink.
 * 4. Long writes are heartbeated (`working()`) so they never outlive `ackWaitMs`.
 *
 * On `signal` (SIGTERM): stop fetching, finish the write in hand (at most `shutdownGraceMs`, then
 * abort it and nak what is left, without delay so another instance takes it at once), give the
 * prefetched batch back the same way, close the sink, resolve `done`.
 */
import {
  AckPolicy,
  DeliverPolicy,
  jetstream,
  jetstreamManager,
  type Consumer,
  type ConsumerConfig,
  type ConsumerInfo,
  type ConsumerMessages,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
} from '@nats-io/jetstream';
import { nanos, type NatsConnection } from '@nats-io/transport-node';
import type { Registry } from 'prom-client';
import { describeError, UsageError } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import type { Readiness } from '../lib/ops.ts';
import { connectNats, firstHeaderValues, headerBytes } from '../lib/nats.ts';
import { sleep } from '../lib/timers.ts';
import { HUB_STREAM } from '../schemas/streams.ts';
import { parseSubject, type SubjectParts } from '../schemas/subjects.ts';
import { DeadLetterReason, DLQ_STREAM, ensureDlqStream, publishDeadLetter } from './dlq.ts';
import { DEFAULT_BACKOFF_MS, retryDelayMs } from './runner-backoff.ts';
import { consumerFilter, subjectMatches, type ConsumerFilter } from './runner-filters.ts';
import { runnerMetrics, type RunnerMetrics } from './runner-metrics.ts';
import { PermanentSinkError, type Sink, type SinkMessage } from './sink.ts';

/** Tunables of a runner; every one has a default in DEFAULT_RUNNER_SETTINGS. */
export interface RunnerSettings {
  /** Stream to read (`BSU`). */
  stream: string;
  /** Subject filters of the durable; several are narrowed to one on nats-server < 2.10. */
  filterSubjects: string[];
  /** A message not acked (nor heartbeated) within this is redelivered, in ms. */
  ackWaitMs: number;
  /** Messages delivered and not yet acked, at most; at least `batchSize`. */
  maxAckPending: number;
  /** Deliveries after which a message that still fails is dead-lettered. */
  maxDeliver: number;
  /** Retry delays for attempts 1, 2, 3 … in ms; the last one repeats (jittered ±20%). */
  backoffMs: number[];
  /** Messages per fetch. */
  batchSize: number;
  /**
   * Batches written at once, each acked as soon as its own write resolved (the sink's writes must
   * not depend on each other's order: they are idempotent and monotonic). 1: strictly one at a time.
   */
  writesInFlight: number;
  /** Bytes (payloads and headers) per sink.write; a larger fetch is written in several parts. */
  maxBatchBytes: number;
  /** How long one fetch waits for messages, in ms (at least 1000). */
  fetchExpiresMs: number;
  /**
   * true: wait up to `fetchExpiresMs` for a full batch (the archive: few large objects, the expiry
   * bounds their age). false: take what is pending now, at least one message (low latency).
   */
  fillBatch: boolean;
  /** A write that takes longer is aborted and retried, in ms. */
  writeTimeoutMs: number;
  /** After a stop signal, the write in hand may run this much longer before it is aborted, in ms. */
  shutdownGraceMs: number;
  /** How often the lag gauges are refreshed from consumer info, in ms. */
  lagRefreshMs: number;
  /** Dead-letter stream (created if missing). */
  dlqStream: string;
}

export const DEFAULT_RUNNER_SETTINGS: Readonly<RunnerSettings> = {
  stream: HUB_STREAM,
  filterSubjects: ['bsu.>'],
  ackWaitMs: 60_000,
  maxAckPending: 10_000,
  maxDeliver: 20,
  backoffMs: [...DEFAULT_BACKOFF_MS],
  batchSize: 500,
  writesInFlight: 3,
  maxBatchBytes: 4 * 1024 * 1024,
  fetchExpiresMs: 5_000,
  fillBatch: false,
  writeTimeoutMs: 30_000,
  shutdownGraceMs: 10_000,
  lagRefreshMs: 5_000,
  dlqStream: DLQ_STREAM,
};

export interface RunnerOptions extends Partial<RunnerSettings> {
  /** Durable consumer name, e.g. `archive`. */
  durable: string;
  /** An open connection (the caller closes it) … */
  nc?: NatsConnection;
  /** … or server URLs, comma-separated (the runner connects, reconnects forever, and closes). */
  natsUrl?: string;
  sink: Sink;
  log: Logger;
  /** Where the runner's metrics go (cloud/runner-metrics.ts). */
  registry: Registry;
  /** Aborting it stops the runner cleanly. */
  signal: AbortSignal;
}

/** A running consumer. */
export interface ConsumerRun {
  /**
   * Resolves once the runner stopped after `signal` and closed the sink. Rejects only on bad
   * settings (UsageError), never because a server is down.
   */
  done: Promise<void>;
  /** Ready while NATS is connected, the durable is set up and the sink says it is ready. */
  readiness(): Promise<Readiness>;
}

/** A sink.write that outlived `writeTimeoutMs`. */
export class SinkWriteTimeoutError extends Error {
  override name = 'SinkWriteTimeoutError';
}

/** The stop signal's grace ran out while a write was in hand. */
export class ShutdownAbortError extends Error {
  override name = 'ShutdownAbortError';
}

/** The durable exists with settings the runner cannot change (e.g. a push consumer). */
export class ConsumerConfigError extends UsageError {
  override name = 'ConsumerConfigError';
}

/** Starts a consumer; see the module comment for the semantics. */
export function runConsumer(options: RunnerOptions): ConsumerRun {
  const settings = resolveSettings(options);
  const runner = new Runner(options, settings);
  return { done: runner.run(), readiness: () => runner.readiness() };
}

/** Settings with defaults applied; throws UsageError listing every problem. */
export function resolveSettings(options: RunnerOptions): RunnerSettings {
  const s: RunnerSettings = { ...DEFAULT_RUNNER_SETTINGS };
  for (const key of Object.keys(DEFAULT_RUNNER_SETTINGS) as (keyof RunnerSettings)[]) {
    if (options[key] !== undefined) (s as unknown as Record<string, unknown>)[key] = options[key];
  }
  const problems: string[] = [];
  const positive = (key: keyof RunnerSettings, min = 1): void => {
    const v = s[key];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min)
      problems.push(`${key} must be at least ${min}`);
  };
  if (!/^[A-Za-z0-9_-]+$/.test(options.durable)) problems.push('durable: use letters, digits, - and _');
  if ((options.nc === undefined) === (options.natsUrl === undefined))
    problems.push('give either nc or natsUrl');
  positive('batchSize');
  positive('writesInFlight');
  positive('maxBatchBytes');
  positive('maxDeliver');
  positive('ackWaitMs', 1000);
  positive('fetchExpiresMs', 1000);
  positive('writeTimeoutMs', 1);
  positive('shutdownGraceMs', 0);
  positive('lagRefreshMs', 100);
  if (s.maxAckPending !== -1 && s.maxAckPending < s.batchSize)
    problems.push(`maxAckPending (${s.maxAckPending}) must be at least batchSize (${s.batchSize}), or -1`);
  if (s.backoffMs.length === 0 || s.backoffMs.some((ms) => !Number.isFinite(ms) || ms < 0))
    problems.push('backoffMs must be a non-empty list of delays ≥ 0');
  if (s.filterSubjects.length === 0) problems.push('filterSubjects must not be empty');
  if (problems.length > 0) throw new UsageError(`bad consumer settings: ${problems.join('; ')}`);
  return s;
}

/**
 * A fetched message as a sink sees it. Headers and the stored time are parsed on first use: a sink
 * that never reads them (ingest) does not pay for them.
 */
class HubMessage implements SinkMessage {
  readonly seq: number;
  readonly subject: string;
  readonly site: string;
  readonly device: string;
  readonly kind: string;
  readonly payload: Uint8Array;
  readonly deliveryCount: number;
  readonly #msg: JsMsg;
  #headers: Record<string, string> | undefined;

  constructor(msg: JsMsg, parts: SubjectParts) {
    const info = msg.info;
    this.#msg = msg;
    this.seq = info.streamSequence;
    this.subject = msg.subject;
    this.site = parts.site;
    this.device = parts.device;
    this.kind = parts.kind;
    this.payload = msg.data;
    this.deliveryCount = info.deliveryCount;
  }

  get headers(): Record<string, string> {
    return (this.#headers ??= firstHeaderValues(this.#msg));
  }

  get storedAtMs(): number {
    return Math.floor(this.#msg.info.timestampNanos / 1e6);
  }
}

/** One message in hand, with what the sink sees of it. */
interface InHand {
  msg: JsMsg;
  sinkMessage: SinkMessage;
  bytes: number;
}

/** What happened to one write. */
type WriteOutcome =
  | { kind: 'written'; rejected: Map<number, string> }
  | { kind: 'permanent'; error: unknown }
  | { kind: 'transient'; error: unknown }
  | { kind: 'aborted' };

class Runner {
  private readonly log: Logger;
  private readonly metrics: RunnerMetrics;
  private readonly labels: { consumer: string };
  private readonly signal: AbortSignal;
  private nc: NatsConnection | undefined;
  private js: JetStreamClient | undefined;
  private jsm: JetStreamManager | undefined;
  private consumer: Consumer | undefined;
  private filter: ConsumerFilter | undefined;
  private natsConnected = false;
  private setupProblem: string | undefined = 'starting';
  /** Messages fetched and not yet settled: heartbeated, and nak-ed if the loop trips. */
  private readonly unsettled = new Set<JsMsg>();
  /** Failed batches in a row; drives the runner's own wait. */
  private consecutiveFailures = 0;
  /** How many messages the next fetch may expect at once (fillBatch false). */
  private fetchHint = 1;
  /** When the last fetch delivered something (epoch ms). */
  private lastDeliveryAtMs = 0;
  private stopFetch: (() => void) | undefined;
  /** The writes in progress (aborted when the stop signal's grace runs out). */
  private readonly writeControllers = new Set<AbortController>();
  private graceExpired = false;

  constructor(
    private readonly options: RunnerOptions,
    private readonly s: RunnerSettings,
  ) {
    this.log = options.log.child({ component: 'runner', consumer: options.durable });
    this.metrics = runnerMetrics(options.registry);
    this.labels = { consumer: options.durable };
    this.signal = options.signal;
  }

  async readiness(): Promise<Readiness> {
    const reasons: string[] = [];
    if (!this.natsConnected) reasons.push('NATS is not connected');
    if (this.setupProblem) reasons.push(`consumer ${this.options.durable}: ${this.setupProblem}`);
    const sink = await this.sinkReadiness();
    if (!sink.ready)
      reasons.push(
        ...(sink.reasons?.length ? sink.reasons : ['not ready']).map(
          (r) => `${this.options.sink.name}: ${r}`,
        ),
      );
    return reasons.length === 0 ? { ready: true } : { ready: false, reasons };
  }

  private async sinkReadiness(): Promise<Readiness> {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        this.options.sink.readiness(),
        new Promise<Readiness>((resolve) => {
          timer = setTimeout(() => resolve({ ready: false, reasons: ['readiness check timed out'] }), 5_000);
        }),
      ]);
    } catch (err) {
      return { ready: false, reasons: [describeError(err)] };
    } finally {
      clearTimeout(timer);
    }
  }

  async run(): Promise<void> {
    const { sink } = this.options;
    const onStop = (): void => {
      this.log.info('stop requested: no more fetches, settling the batch in hand');
      this.stopFetch?.();
      const grace = setTimeout(() => {
        this.graceExpired = true;
        for (const controller of this.writeControllers)
          controller.abort(new ShutdownAbortError('shutdown grace expired during a write'));
      }, this.s.shutdownGraceMs);
      grace.unref();
    };
    this.signal.addEventListener('abort', onStop, { once: true });
    const inHand = this.s.batchSize * (this.s.writesInFlight + 1);
    if (this.s.maxAckPending !== -1 && this.s.maxAckPending < inHand)
      this.log.warn(
        {
          maxAckPending: this.s.maxAckPending,
          batchSize: this.s.batchSize,
          writesInFlight: this.s.writesInFlight,
        },
        `maxAckPending is below batchSize × (writesInFlight + 1) = ${inHand}: fetches ahead will come short`,
      );
    const heartbeat = setInterval(() => this.heartbeat(), Math.max(500, Math.floor(this.s.ackWaitMs / 3)));
    let lagTimer: NodeJS.Timeout | undefined;
    try {
      this.nc = this.options.nc ?? (await this.connect());
      if (!this.nc) return;
      this.natsConnected = !this.nc.isClosed();
      void this.watchConnection(this.nc);
      if (!(await this.retrying(`open ${sink.name} sink`, () => sink.open()))) return;
      this.metrics.sinkUp.set(this.labels, 1);
      if (!(await this.retrying('set up the durable', () => this.setUp()))) return;
      lagTimer = setInterval(() => void this.refreshLag(), this.s.lagRefreshMs);
      lagTimer.unref();
      void this.refreshLag();
      this.log.info({ stream: this.s.stream, filter: this.filter?.server }, 'consuming');
      await this.consume();
    } finally {
      this.signal.removeEventListener('abort', onStop);
      clearInterval(heartbeat);
      clearInterval(lagTimer);
      // Also after a failed open: it may have left a client reconnecting in the background.
      await sink.close().catch((err) => this.log.warn({ err }, 'closing the sink failed'));
      if (this.nc && !this.options.nc) {
        await this.nc.flush().catch(() => undefined);
        await this.nc.close().catch(() => undefined);
      }
      this.log.info('stopped');
    }
  }

  /**
   * The loop: fetch a batch, start writing it, fetch the next while it is written; at most
   * `writesInFlight` writes at once. Returns once stopped, with every batch settled.
   */
  private async consume(): Promise<void> {
    const writing = new Set<Promise<void>>();
    let next: Promise<JsMsg[]> | undefined;
    while (!this.signal.aborted) {
      if (this.consecutiveFailures > 0) {
        // The store is failing: one batch at a time, and only once the sink says it is ready.
        await Promise.all(writing);
        if (this.consecutiveFailures > 0) await this.waitForSink();
        if (this.signal.aborted) break;
      }
      const fetched = await (next ?? this.fetch());
      next = undefined;
      if (fetched.length === 0) continue;
      const settling: Promise<void> = this.settleSafely(fetched).finally(() => {
        writing.delete(settling);
        this.metrics.writesInFlight.set(this.labels, writing.size);
      });
      writing.add(settling);
      this.metrics.writesInFlight.set(this.labels, writing.size);
      if (this.consecutiveFailures === 0 && !this.signal.aborted) next = this.fetch();
      while (writing.size >= this.s.writesInFlight) await Promise.race(writing);
    }
    await Promise.all(writing);
    // Stopping: a batch fetched ahead is given back untouched, for another instance to take.
    if (next) this.nakAll(await next, 0);
    await this.nc?.flush().catch(() => undefined);
  }

  /** settle(), never throwing: an unexpected error gives the batch back and counts as a failure. */
  private async settleSafely(fetched: JsMsg[]): Promise<void> {
    try {
      await this.settle(fetched);
    } catch (err) {
      // A bug or an unexpected client error: give the messages back and carry on rather than exit
      // (a crash loop would redeliver the same batch forever).
      this.log.error({ err }, 'unexpected error in the consumer loop');
      const delayMs = retryDelayMs(this.s.backoffMs, ++this.consecutiveFailures);
      for (const msg of fetched) if (this.unsettled.has(msg)) this.nak(msg, delayMs);
      this.metrics.inFlight.set(this.labels, this.unsettled.size);
    }
  }

  private async connect(): Promise<NatsConnection | undefined> {
    // Keeps trying until the first connection succeeds (and reconnects forever after): a consumer
    // started before its NATS server waits for it rather than exiting.
    const attempt = connectNats({ url: this.options.natsUrl!, name: `switchyard-${this.options.durable}` });
    const aborted = new Promise<undefined>((resolve) =>
      this.signal.addEventListener('abort', () => resolve(undefined), { once: true }),
    );
    const nc = await Promise.race([attempt, aborted]);
    if (!nc) void attempt.then((late) => late.close()).catch(() => undefined);
    return nc;
  }

  private async watchConnection(nc: NatsConnection): Promise<void> {
    for await (const status of nc.status()) {
      if (status.type === 'disconnect') {
        this.natsConnected = false;
        this.log.warn({ server: status.server }, 'NATS disconnected');
      } else if (status.type === 'reconnect') {
        this.natsConnected = true;
        this.log.info({ server: status.server }, 'NATS reconnected');
      }
    }
    this.natsConnected = false;
  }

  /** Retries `fn` with backoff until it succeeds (true) or the runner stops (false). */
  private async retrying(what: string, fn: () => Promise<unknown>): Promise<boolean> {
    for (let attempt = 1; !this.signal.aborted; attempt++) {
      try {
        await fn();
        if (attempt > 1) this.log.info(`${what}: done`);
        return true;
      } catch (err) {
        if (err instanceof UsageError) throw err;
        const delayMs = retryDelayMs(this.s.backoffMs, attempt);
        this.setupProblem = `${what}: ${describeError(err)}`;
        this.log.warn({ err: describeError(err), attempt, delayMs }, `${what} failed, retrying`);
        await sleep(delayMs, this.signal);
      }
    }
    return false;
  }

  /** Creates or updates the durable and the dead-letter stream. */
  private async setUp(): Promise<void> {
    const nc = this.nc!;
    this.setupProblem = 'setting up';
    try {
      this.jsm ??= await jetstreamManager(nc);
      this.js ??= jetstream(nc);
      await ensureDlqStream(this.jsm, { stream: this.s.dlqStream });
      this.filter = consumerFilter(this.s.filterSubjects, nc.info?.version);
      await this.ensureDurable(this.jsm, this.filter);
      this.consumer = await this.js.consumers.get(this.s.stream, this.options.durable);
      // Start with what is waiting (a backlog, or redeliveries after a crash) as one batch.
      const info = await this.consumer.info(true);
      this.fetchHint = info.num_pending + info.num_ack_pending;
      this.setupProblem = undefined;
    } catch (err) {
      this.setupProblem = describeError(err);
      throw err;
    }
  }

  private async ensureDurable(jsm: JetStreamManager, filter: ConsumerFilter): Promise<void> {
    const { stream } = this.s;
    const durable = this.options.durable;
    const want: Partial<ConsumerConfig> = {
      durable_name: durable,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ack_wait: nanos(this.s.ackWaitMs),
      max_ack_pending: this.s.maxAckPending,
      // Unlimited on the server: at the server's limit a message would silently stop being
      // delivered; the runner counts deliveries itself and dead-letters instead.
      max_deliver: -1,
      ...filter.server,
    };
    let info: ConsumerInfo | undefined;
    try {
      info = await jsm.consumers.info(stream, durable);
    } catch (err) {
      if ((err as { code?: number }).code !== 10014) throw err;
    }
    if (!info) {
      await jsm.consumers.add(stream, want);
      this.log.info({ stream, durable }, 'created the durable consumer');
      return;
    }
    const have = info.config;
    if (have.deliver_subject)
      throw new ConsumerConfigError(
        `durable ${durable} on ${stream} is a push consumer: delete it or pick another name`,
      );
    if (have.ack_policy !== AckPolicy.Explicit)
      throw new ConsumerConfigError(
        `durable ${durable} on ${stream} has ack policy ${have.ack_policy}, not explicit`,
      );
    const sameFilter =
      'filter_subject' in filter.server
        ? (have.filter_subject ?? '') === filter.server.filter_subject && !have.filter_subjects?.length
        : JSON.stringify(have.filter_subjects ?? []) === JSON.stringify(filter.server.filter_subjects);
    if (
      have.ack_wait !== want.ack_wait ||
      have.max_ack_pending !== want.max_ack_pending ||
      have.max_deliver !== want.max_deliver ||
      !sameFilter
    ) {
      const { durable_name: _, ack_policy: _a, deliver_policy: _d, ...update } = want;
      await jsm.consumers.update(stream, durable, update);
      this.log.info({ stream, durable, update }, 'updated the durable consumer');
    }
  }

  /**
   * Consumer info on nats-server 2.9 is expensive for a filtered consumer and stalls its deliveries
   * while it runs (measured: a 200 ms poll cut delivery from ~30k to ~1.3k msg/s). While messages
   * flow, every delivery carries the lag (`info.pending`) for free; ask the server only when none
   * came for `lagRefreshMs` (idle, or waiting for the sink).
   */
  private async refreshLag(): Promise<void> {
    if (Date.now() - this.lastDeliveryAtMs < this.s.lagRefreshMs) return;
    try {
      const info = await this.consumer?.info(false);
      if (!info) return;
      this.metrics.lag.set(this.labels, info.num_pending);
      this.metrics.ackPending.set(this.labels, info.num_ack_pending);
    } catch (err) {
      this.log.debug({ err: describeError(err) }, 'could not refresh consumer lag');
    }
  }

  /** Waits, without fetching, until the sink answers again (after a failed batch). */
  private async waitForSink(): Promise<void> {
    await sleep(retryDelayMs(this.s.backoffMs, this.consecutiveFailures), this.signal);
    for (let attempt = 1; !this.signal.aborted; attempt++) {
      const r = await this.sinkReadiness();
      if (r.ready) {
        this.metrics.sinkUp.set(this.labels, 1);
        if (attempt > 1) this.log.info(`${this.options.sink.name} sink is ready again`);
        return;
      }
      this.metrics.sinkUp.set(this.labels, 0);
      const delayMs = retryDelayMs(this.s.backoffMs, attempt + this.consecutiveFailures - 1);
      if (attempt === 1 || attempt % 10 === 0)
        this.log.warn(
          { reasons: r.reasons, delayMs },
          `${this.options.sink.name} sink is not ready: waiting`,
        );
      await sleep(delayMs, this.signal);
    }
  }

  private heartbeat(): void {
    for (const msg of this.unsettled) msg.working();
  }

  /** One fetch; resolves with what arrived (possibly nothing). */
  private async fetch(): Promise<JsMsg[]> {
    const consumer = this.consumer!;
    const max = this.s.fillBatch ? this.s.batchSize : Math.min(this.s.batchSize, Math.max(1, this.fetchHint));
    const got: JsMsg[] = [];
    let iter: ConsumerMessages | undefined;
    // The client ends a fetch on its own (expiry, missed heartbeats); this guard only covers a
    // fetch left hanging across a reconnect.
    const guard = setTimeout(() => iter?.stop(), this.s.fetchExpiresMs + 15_000);
    try {
      iter = await consumer.fetch({ max_messages: max, expires: this.s.fetchExpiresMs });
      this.stopFetch = () => iter?.stop();
      if (this.signal.aborted) iter.stop();
      for await (const msg of iter) {
        got.push(msg);
        this.unsettled.add(msg);
      }
    } catch (err) {
      this.log.warn({ err: describeError(err), received: got.length }, 'fetch failed');
      if (got.length === 0) {
        const delayMs = retryDelayMs(this.s.backoffMs, 1);
        await sleep(delayMs, this.signal);
        // The durable may have been deleted or the stream recreated: set it up again.
        if (!this.signal.aborted) await this.retrying('set up the durable', () => this.setUp());
      }
    } finally {
      clearTimeout(guard);
      this.stopFetch = undefined;
      this.metrics.inFlight.set(this.labels, this.unsettled.size);
    }
    const last = got.at(-1);
    this.fetchHint = last ? last.info.pending : 1;
    if (last) {
      this.lastDeliveryAtMs = Date.now();
      this.metrics.lag.set(this.labels, last.info.pending);
    }
    return got;
  }

  /** Settles a fetched batch: dead-letters what cannot be written, writes the rest in parts. */
  private async settle(fetched: JsMsg[]): Promise<void> {
    this.metrics.processed.inc(this.labels, fetched.length);
    const toWrite: InHand[] = [];
    const dead: { msg: JsMsg; reason: DeadLetterReason; detail: string }[] = [];
    const skipped: JsMsg[] = [];
    for (const msg of fetched) {
      const parts = parseSubject(msg.subject);
      if (!parts) {
        dead.push({
          msg,
          reason: DeadLetterReason.badSubject,
          detail: `subject ${msg.subject} is not bsu.<site>.<device>.<kind>`,
        });
      } else if (
        this.filter?.clientSide &&
        !this.filter.clientSide.some((f) => subjectMatches(f, msg.subject))
      ) {
        skipped.push(msg);
      } else if (msg.info.deliveryCount > this.s.maxDeliver) {
        // Redelivered past the limit without ever failing here: the process died while holding it
        // (a crash loop). Set it aside rather than crash again.
        dead.push({
          msg,
          reason: DeadLetterReason.maxDeliveries,
          detail: `delivered ${msg.info.deliveryCount} times without being settled (max ${this.s.maxDeliver})`,
        });
      } else {
        toWrite.push({
          msg,
          bytes: msg.data.byteLength + msg.subject.length + headerBytes(msg),
          sinkMessage: new HubMessage(msg, parts),
        });
      }
    }
    if (skipped.length > 0) {
      await this.ack(skipped);
      this.metrics.skipped.inc(this.labels, skipped.length);
    }
    let failed = await this.deadLetter(dead);

    const random = Math.random();
    for (let start = 0; start < toWrite.length;) {
      const part: InHand[] = [];
      let bytes = 0;
      while (start < toWrite.length) {
        const next = toWrite[start]!;
        if (part.length > 0 && bytes + next.bytes > this.s.maxBatchBytes) break;
        part.push(next);
        bytes += next.bytes;
        start++;
      }
      if (this.graceExpired) {
        this.nakAll(
          part.map((p) => p.msg),
          0,
        );
        continue;
      }
      const outcome = await this.write(part);
      if (outcome.kind === 'written') {
        const rejected = part.filter((p) => outcome.rejected.has(p.msg.seq));
        const ok = part.filter((p) => !outcome.rejected.has(p.msg.seq));
        failed =
          (await this.deadLetter(
            rejected.map((p) => ({
              msg: p.msg,
              reason: DeadLetterReason.rejected,
              detail: outcome.rejected.get(p.msg.seq) ?? 'rejected',
            })),
          )) || failed;
        await this.ack(ok.map((p) => p.msg));
      } else if (outcome.kind === 'permanent') {
        const detail = describeError(outcome.error);
        this.log.error(
          { err: detail, messages: part.length },
          'sink refused the batch for good: dead-lettering it',
        );
        failed =
          (await this.deadLetter(
            part.map((p) => ({ msg: p.msg, reason: DeadLetterReason.permanent, detail })),
          )) || failed;
      } else if (outcome.kind === 'aborted') {
        // Stopping: give the rest back at once, another instance (or the next start) takes it.
        this.nakAll(
          toWrite.slice(start - part.length).map((p) => p.msg),
          0,
        );
        break;
      } else {
        failed = true;
        const attempt = this.consecutiveFailures + 1;
        const detail = describeError(outcome.error);
        this.log.warn(
          { err: detail, messages: part.length, attempt },
          `${this.options.sink.name} write failed: retrying with backoff`,
        );
        const exhausted = part.filter((p) => p.msg.info.deliveryCount >= this.s.maxDeliver);
        await this.deadLetter(
          exhausted.map((p) => ({
            msg: p.msg,
            reason: DeadLetterReason.maxDeliveries,
            detail: `failed ${p.msg.info.deliveryCount} deliveries, last: ${detail}`,
          })),
        );
        // The rest of the fetch would meet the same store: give it back unwritten.
        const retry = [
          ...part.filter((p) => p.msg.info.deliveryCount < this.s.maxDeliver),
          ...toWrite.slice(start),
        ];
        for (const p of retry)
          this.nak(p.msg, retryDelayMs(this.s.backoffMs, p.msg.info.deliveryCount, random));
        // They come back together after the delay: fetch them as one batch.
        this.fetchHint += retry.length;
        this.metrics.sinkUp.set(this.labels, 0);
        break;
      }
    }
    this.consecutiveFailures = failed ? this.consecutiveFailures + 1 : 0;
    if (!failed) this.metrics.sinkUp.set(this.labels, 1);
    // Naks and terms are fire-and-forget: make sure the server has them before the next fetch.
    await this.nc!.flush().catch(() => undefined);
    for (const msg of fetched) this.unsettled.delete(msg);
    this.metrics.inFlight.set(this.labels, this.unsettled.size);
  }

  private async write(part: InHand[]): Promise<WriteOutcome> {
    const controller = new AbortController();
    this.writeControllers.add(controller);
    const timeout = setTimeout(
      () => controller.abort(new SinkWriteTimeoutError(`write took longer than ${this.s.writeTimeoutMs} ms`)),
      this.s.writeTimeoutMs,
    );
    // A sink that ignores its signal must not hold the runner: the race gives up on it (the write
    // may still land later, which is harmless: writes are idempotent).
    const aborted = new Promise<never>((_, reject) =>
      controller.signal.addEventListener('abort', () => reject(controller.signal.reason), { once: true }),
    );
    aborted.catch(() => undefined);
    const end = this.metrics.writeSeconds.startTimer(this.labels);
    try {
      const result = await Promise.race([
        this.options.sink.write(
          part.map((p) => p.sinkMessage),
          controller.signal,
        ),
        aborted,
      ]);
      const rejected = new Map(result.rejected.map((r) => [r.seq, r.reason] as const));
      end({ outcome: rejected.size > 0 ? 'rejected' : 'ok' });
      return { kind: 'written', rejected };
    } catch (error) {
      if (error instanceof ShutdownAbortError || controller.signal.reason instanceof ShutdownAbortError) {
        end({ outcome: 'aborted' });
        return { kind: 'aborted' };
      }
      if (error instanceof PermanentSinkError) {
        end({ outcome: 'permanent' });
        return { kind: 'permanent', error };
      }
      end({ outcome: 'transient' });
      return { kind: 'transient', error };
    } finally {
      clearTimeout(timeout);
      this.writeControllers.delete(controller);
    }
  }

  /**
   * Acks every message and waits for the server to confirm the last one. The server handles one
   * connection's acks in order, so the last confirmation covers the whole batch: one round trip per
   * batch instead of one per message (which capped every consumer near 8,000 msgs/s).
   */
  private async ack(msgs: JsMsg[]): Promise<void> {
    if (msgs.length === 0) return;
    const last = msgs[msgs.length - 1]!;
    for (const m of msgs) if (m !== last) m.ack();
    const confirmed = await last.ackAck().catch(() => false);
    for (const m of msgs) this.unsettled.delete(m);
    if (confirmed) {
      this.metrics.acked.inc(this.labels, msgs.length);
    } else {
      // The write is durable; an unconfirmed ack only means a redelivery, which the sink absorbs.
      this.log.warn({ unconfirmed: msgs.length }, 'acks were not confirmed: the batch may be redelivered');
    }
  }

  private nak(msg: JsMsg, delayMs: number): void {
    msg.nak(delayMs);
    this.unsettled.delete(msg);
    this.metrics.retried.inc(this.labels);
  }

  private nakAll(msgs: JsMsg[], delayMs: number): void {
    for (const msg of msgs) this.nak(msg, delayMs);
  }

  /**
   * Publishes each to the dead-letter stream and terms it once stored. One that could not be
   * stored is nak-ed with backoff instead (never termed unstored). Returns true if any failed.
   */
  private async deadLetter(
    items: { msg: JsMsg; reason: DeadLetterReason; detail: string }[],
  ): Promise<boolean> {
    if (items.length === 0) return false;
    const js = this.js!;
    let failed = false;
    const concurrency = 64;
    for (let i = 0; i < items.length; i += concurrency) {
      await Promise.all(
        items.slice(i, i + concurrency).map(async ({ msg, reason, detail }) => {
          try {
            await publishDeadLetter(js, {
              consumer: this.options.durable,
              stream: this.s.stream,
              seq: msg.seq,
              subject: msg.subject,
              deliveries: msg.info.deliveryCount,
              reason,
              detail,
              payload: msg.data,
              headers: msg.headers,
            });
            msg.term();
            this.unsettled.delete(msg);
            this.metrics.deadLettered.inc({ ...this.labels, reason });
            this.log.warn({ seq: msg.seq, subject: msg.subject, reason, detail }, 'dead-lettered');
          } catch (err) {
            failed = true;
            this.log.error(
              { err: describeError(err), seq: msg.seq },
              'could not publish a dead letter: the message will be retried',
            );
            this.nak(msg, retryDelayMs(this.s.backoffMs, msg.info.deliveryCount));
          }
        }),
      );
    }
    return failed;
  }
}
