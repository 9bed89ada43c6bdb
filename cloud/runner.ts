/**
 * The consumer runner: the one loop every cloud consumer (archive, monitor, ingest) runs. A
 * consumer is this runner plus a Sink (cloud/sink.ts); cloud/settle.ts settles each batch (the only
 * code that acks, naks or terms), cloud/durable.ts sets up the durable, cloud/runner-settings.ts
 * holds the settings.
 *
 * Batches flow fetch → write → ack as a pipeline: up to `writesInFlight` batches are being written
 * while the next one is fetched (pull, don't buffer: at most `writesInFlight + 1` batches in hand).
 * After a failed write the runner goes back to one batch at a time, and waits (the retry delay,
 * then until the sink says it is ready) before it fetches again, so a dead store is not hammered
 * and messages do not burn through their deliveries while it is down. Long writes are heartbeated
 * (`working()`) so they never outlive `ackWaitMs`.
 *
 * On `signal` (SIGTERM): stop fetching, finish the write in hand (at most `shutdownGraceMs`, then
 * abort it and nak what is left, without delay so another instance takes it at once), give the
 * prefetched batch back the same way, close the sink, resolve `done`.
 */
import {
  jetstream,
  jetstreamManager,
  type Consumer,
  type ConsumerMessages,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
} from '@nats-io/jetstream';
import type { KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Registry } from 'prom-client';
import { describeError, UsageError } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import { connectNats, type NatsAuth } from '../lib/nats.ts';
import type { Readiness } from '../lib/ops.ts';
import { untilAborted } from '../lib/start-context.ts';
import { sleep, withTimeout } from '../lib/timers.ts';
import { announcePresence, controlBucket, readMoveMarker } from './control.ts';
import { ensureDlqStream } from './dlq.ts';
import { RetentionLimit, RetentionWatch, type ConsumerProgress } from './retention-watch.ts';
import { ensureDurable } from './durable.ts';
import { retryDelayMs } from './runner-backoff.ts';
import { consumerFilter, type ConsumerFilter } from './runner-filters.ts';
import { runnerMetrics, type RunnerMetrics } from './runner-metrics.ts';
import { resolveSettings, type RunnerSettings } from './runner-settings.ts';
import { BatchSettler } from './settle.ts';
import type { Sink } from './sink.ts';

export interface RunnerOptions extends Partial<RunnerSettings> {
  /** Durable consumer name, e.g. `archive`. */
  durable: string;
  /** An open connection (the caller closes it) … */
  nc?: NatsConnection;
  /** … or server URLs, comma-separated (the runner connects, reconnects forever, and closes) … */
  natsUrl?: string;
  /** … with these credentials and TLS settings. */
  natsAuth?: NatsAuth;
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

/** Starts a consumer; see the module comment for the semantics. */
export function runConsumer(options: RunnerOptions): ConsumerRun {
  const problems: string[] = [];
  if (!/^[A-Za-z0-9_-]+$/.test(options.durable)) problems.push('durable: use letters, digits, - and _');
  if ((options.nc === undefined) === (options.natsUrl === undefined))
    problems.push('give either nc or natsUrl');
  if (problems.length > 0) throw new UsageError(`bad consumer settings: ${problems.join('; ')}`);
  const settings = resolveSettings(options);
  const runner = new Runner(options, settings);
  return { done: runner.run(), readiness: () => runner.readiness() };
}

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
  private settler: BatchSettler | undefined;
  private natsConnected = false;
  private setupProblem: string | undefined = 'starting';
  /** Failed batches in a row; drives the runner's own wait. */
  private consecutiveFailures = 0;
  /** The store's own hint of how long to leave it alone after the last failure (ms). */
  private retryAfterMs = 0;
  /** How many messages the next fetch may expect at once (fillBatch false). */
  private fetchHint = 1;
  /** When the last fetch delivered something (epoch ms). */
  private lastDeliveryAtMs = 0;
  /** Stream sequence and pending count of the last message fetched. */
  private lastDelivered: { seq: number; pending: number } | undefined;
  private stopFetch: (() => void) | undefined;
  private withdrawPresence: (() => Promise<void>) | undefined;
  private controlKv: KV | undefined;

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
    try {
      return await withTimeout(this.options.sink.readiness(), 5_000, () => ({
        ready: false,
        reasons: ['readiness check timed out'],
      }));
    } catch (err) {
      return { ready: false, reasons: [describeError(err)] };
    }
  }

  async run(): Promise<void> {
    const { sink } = this.options;
    const onStop = (): void => {
      this.log.info('stop requested: no more fetches, settling the batch in hand');
      this.stopFetch?.();
      const grace = setTimeout(() => this.settler?.abortWrites(), this.s.shutdownGraceMs);
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
    const heartbeat = setInterval(
      () => this.settler?.heartbeat(),
      Math.max(500, Math.floor(this.s.ackWaitMs / 3)),
    );
    let lagTimer: NodeJS.Timeout | undefined;
    let retentionTimer: NodeJS.Timeout | undefined;
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
      const retention = this.retentionWatch();
      const checkRetention = (): void => void retention.sample(this.progressFromDeliveries());
      retentionTimer = setInterval(checkRetention, this.s.retentionCheckMs);
      retentionTimer.unref();
      checkRetention();
      this.log.info({ stream: this.s.stream, filter: this.filter?.server }, 'consuming');
      await this.consume();
    } finally {
      this.signal.removeEventListener('abort', onStop);
      clearInterval(heartbeat);
      clearInterval(lagTimer);
      clearInterval(retentionTimer);
      await this.withdrawPresence?.();
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
    if (next) this.settler?.nakAll(await next, 0);
    await this.nc?.flush().catch(() => undefined);
  }

  /** Settles a batch, never throwing: an unexpected error gives the batch back and counts as a failure. */
  private async settleSafely(fetched: JsMsg[]): Promise<void> {
    const settler = this.settler!;
    try {
      const result = await settler.settle(fetched, this.filter, this.consecutiveFailures + 1);
      this.consecutiveFailures = result.failed ? this.consecutiveFailures + 1 : 0;
      this.retryAfterMs = result.retryAfterMs;
      // They come back together after the delay: fetch them as one batch.
      this.fetchHint += result.retried;
      this.metrics.sinkUp.set(this.labels, result.failed ? 0 : 1);
    } catch (err) {
      // A bug or an unexpected client error: give the messages back and carry on rather than exit
      // (a crash loop would redeliver the same batch forever).
      this.log.error({ err }, 'unexpected error in the consumer loop');
      const delayMs = retryDelayMs(this.s.backoffMs, ++this.consecutiveFailures);
      settler.nakAll(
        fetched.filter((msg) => settler.unsettled.has(msg)),
        delayMs,
      );
    }
    // Naks and terms are fire-and-forget: make sure the server has them before the next fetch.
    await this.nc!.flush().catch(() => undefined);
    for (const msg of fetched) settler.unsettled.delete(msg);
    this.metrics.inFlight.set(this.labels, settler.unsettled.size);
  }

  private async connect(): Promise<NatsConnection | undefined> {
    // Keeps trying until the first connection succeeds (and reconnects forever after), saying so
    // now and then: a consumer started before its NATS server waits for it rather than exiting.
    try {
      return await connectNats({
        url: this.options.natsUrl!,
        name: `switchyard-${this.options.durable}`,
        ...(this.options.natsAuth ? { auth: this.options.natsAuth } : {}),
        signal: this.signal,
        log: this.log,
      });
    } catch (err) {
      if (this.signal.aborted) return undefined;
      throw err;
    }
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
        // A sink's open may wait seconds for its store: a stop signal does not wait with it.
        const attempted = fn().then(() => true);
        if (!(await untilAborted(attempted, this.signal))) return false;
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
      this.settler ??= new BatchSettler(
        {
          durable: this.options.durable,
          sink: this.options.sink,
          settings: this.s,
          metrics: this.metrics,
          log: this.log,
        },
        this.js,
        this.jsm,
      );
      await ensureDlqStream(
        this.jsm,
        { stream: this.s.dlqStream, ...(this.s.dlqReplicas ? { replicas: this.s.dlqReplicas } : {}) },
        this.log,
      );
      this.controlKv ??= await controlBucket(nc);
      this.withdrawPresence ??= await announcePresence(
        nc,
        {
          durable: this.options.durable,
          instance: randomUUID().slice(0, 8),
          host: hostname(),
          pid: process.pid,
          startedAt: new Date().toISOString(),
        },
        (err) => this.log.debug({ err: describeError(err) }, 'could not announce presence'),
      );
      this.filter = consumerFilter(this.s.filterSubjects, nc.info?.version);
      await ensureDurable(
        this.jsm,
        {
          stream: this.s.stream,
          durable: this.options.durable,
          ackWaitMs: this.s.ackWaitMs,
          maxAckPending: this.s.maxAckPending,
          filter: this.filter,
          isMoving: async () => (await readMoveMarker(this.controlKv!, this.options.durable)) !== undefined,
        },
        this.log,
      );
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

  /**
   * While messages flow, where the consumer stands from its own deliveries: what it holds unsettled
   * (the oldest is the ack floor's next) and the pending count of the last one. Undefined when idle:
   * then consumer info is cheap and exact.
   */
  private progressFromDeliveries(): ConsumerProgress | undefined {
    if (Date.now() - this.lastDeliveryAtMs >= this.s.lagRefreshMs || !this.lastDelivered) return undefined;
    const unsettled = this.settler!.unsettled;
    const oldest: JsMsg | undefined = unsettled.values().next().value;
    return {
      pending: this.lastDelivered.pending,
      ackPending: unsettled.size,
      ackFloor: (oldest?.seq ?? this.lastDelivered.seq + 1) - 1,
    };
  }

  private retentionWatch(): RetentionWatch {
    const { retentionUsed, retentionAlert, evictedUnacked } = this.metrics;
    return new RetentionWatch(this.jsm!, {
      stream: this.s.stream,
      durable: this.options.durable,
      alertRatio: this.s.retentionAlertRatio,
      log: this.log,
      report: (use, evicted) => {
        for (const limit of Object.values(RetentionLimit))
          retentionUsed.set({ ...this.labels, limit }, use.used[limit] ?? 0);
        retentionAlert.set(this.labels, use.worst >= this.s.retentionAlertRatio ? 1 : 0);
        evictedUnacked.inc(this.labels, evicted);
      },
    });
  }

  /**
   * Consumer info on nats-server 2.9 is expensive for a filtered consumer and stalls its deliveries
   * while it runs. While messages flow, every delivery carries the lag (`info.pending`) for free;
   * ask the server only when none came for `lagRefreshMs` (idle, or waiting for the sink).
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
    const first = retryDelayMs(this.s.backoffMs, this.consecutiveFailures);
    await sleep(Math.max(first, this.retryAfterMs), this.signal);
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
      for await (const msg of iter) got.push(msg);
    } catch (err) {
      this.log.warn({ err: describeError(err), received: got.length }, 'fetch failed');
      if (got.length === 0) {
        await sleep(retryDelayMs(this.s.backoffMs, 1), this.signal);
        // The durable may have been deleted or the stream recreated: set it up again.
        if (!this.signal.aborted) await this.retrying('set up the durable', () => this.setUp());
      }
    } finally {
      clearTimeout(guard);
      this.stopFetch = undefined;
    }
    for (const msg of got) this.settler!.unsettled.add(msg);
    this.metrics.inFlight.set(this.labels, this.settler!.unsettled.size);
    const last = got.at(-1);
    this.fetchHint = last ? last.info.pending : 1;
    if (last) {
      this.lastDeliveryAtMs = Date.now();
      this.lastDelivered = { seq: last.seq, pending: last.info.pending };
      this.metrics.lag.set(this.labels, last.info.pending);
    }
    return got;
  }
}
