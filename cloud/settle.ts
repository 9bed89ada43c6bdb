/**
 * Settling a fetched batch: the only code that acks, naks or terms a hub message.
 *
 * - written → ack; the last ack of a part is confirmed by the server (`ackAck`);
 * - listed in `rejected`, or the write threw PermanentSinkError → dead letter (BSU_DLQ), then term;
 * - any other error → nak with a growing delay (never shorter than the store's `retryAfterMs`, up
 *   to the longest `backoffMs`), or
 *   dead letter once its writes have failed `maxDeliver` times in this process. A
 *   TransientSinkError with `failedSeqs` naks only those; the rest of its part is durable and acked.
 * - a subject that does not parse → dead letter without reaching the sink.
 *
 * Failures are counted here, not taken from the server's delivery count: nats-server 2.9 counts
 * deliveries to a client that has just gone, thousands in a second, so a message can arrive
 * "delivered 4,000 times" without ever having been written. One that arrives past `maxDeliver`
 * without failing here (perhaps a crash loop, perhaps that count) is written alone, after the rest of
 * its batch, so that it can never take its batch-mates down with it.
 */
import type { JetStreamClient, JetStreamManager, JsMsg } from '@nats-io/jetstream';
import { describeError } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import { headerBytes } from '../lib/nats.ts';
import { parseSubject } from '../schemas/subjects.ts';
import { DeadLetterReason, isDlqFull, storeDeadLetter } from './dlq.ts';
import { HubMessage } from './hub-message.ts';
import { retryDelayMs } from './runner-backoff.ts';
import type { ConsumerFilter } from './runner-filters.ts';
import type { RunnerMetrics } from './runner-metrics.ts';
import type { RunnerSettings } from './runner-settings.ts';
import { PermanentSinkError, TransientSinkError, type Sink, type SinkMessage } from './sink.ts';

/** A sink.write that outlived `writeTimeoutMs`. */
export class SinkWriteTimeoutError extends Error {
  override name = 'SinkWriteTimeoutError';
}

/** The stop signal's grace ran out while a write was in hand. */
export class ShutdownAbortError extends Error {
  override name = 'ShutdownAbortError';
}

/** What became of one fetched batch. */
export interface SettleResult {
  /** Something could not be written or dead-lettered: the store (or the DLQ) is failing. */
  failed: boolean;
  /** Messages given back for redelivery after a delay (they come back together). */
  retried: number;
  /** The store's own hint of how long to leave it alone, in ms (0: none). */
  retryAfterMs: number;
}

export interface SettlerOptions {
  durable: string;
  sink: Sink;
  settings: RunnerSettings;
  metrics: RunnerMetrics;
  log: Logger;
}

/** One message in hand, with what the sink sees of it. */
interface InHand {
  msg: JsMsg;
  sinkMessage: SinkMessage;
  bytes: number;
  /** Written in a part of its own (see the header). */
  alone: boolean;
}

/** Failure counts kept at most, oldest forgotten first (a message another instance took never returns). */
const FAILURES_KEPT = 100_000;

interface DeadLetterItem {
  msg: JsMsg;
  reason: DeadLetterReason;
  detail: string;
}

type WriteOutcome =
  | { kind: 'written'; rejected: Map<number, string> }
  | { kind: 'permanent'; error: unknown }
  | { kind: 'transient'; error: unknown }
  | { kind: 'aborted' };

export class BatchSettler {
  /** Messages fetched and not yet settled: heartbeated, and nak-ed if the loop trips. */
  readonly unsettled = new Set<JsMsg>();
  private readonly labels: { consumer: string };
  private readonly writeControllers = new Set<AbortController>();
  private graceExpired = false;
  /** Failed writes per stream sequence, for messages not settled yet. */
  private readonly failures = new Map<number, number>();

  constructor(
    private readonly o: SettlerOptions,
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
  ) {
    this.labels = { consumer: o.durable };
  }

  /** Tells the server that every message in hand is still being worked on. */
  heartbeat(): void {
    for (const msg of this.unsettled) msg.working();
  }

  /** Aborts the writes in progress and gives back what was not written yet (shutdown grace over). */
  abortWrites(): void {
    this.graceExpired = true;
    for (const controller of this.writeControllers)
      controller.abort(new ShutdownAbortError('shutdown grace expired during a write'));
  }

  /**
   * Settles one fetched batch: dead-letters what cannot be written, writes the rest in parts of at
   * most `maxBatchBytes`. `attempt` is this batch's place in a run of failures (for the log).
   */
  async settle(fetched: JsMsg[], filter: ConsumerFilter | undefined, attempt: number): Promise<SettleResult> {
    const s = this.o.settings;
    this.o.metrics.processed.inc(this.labels, fetched.length);
    const toWrite: InHand[] = [];
    const suspects: InHand[] = [];
    const dead: DeadLetterItem[] = [];
    const skipped: JsMsg[] = [];
    for (const msg of fetched) {
      const parts = parseSubject(msg.subject);
      if (!parts) {
        dead.push({
          msg,
          reason: DeadLetterReason.badSubject,
          detail: `subject ${msg.subject} is not bsu.<site>.<device>.<kind>`,
        });
      } else if (filter?.clientSide && !filter.clientSide(msg.subject)) {
        skipped.push(msg);
      } else {
        const alone = msg.info.deliveryCount > s.maxDeliver && !this.failures.has(msg.seq);
        const inHand = {
          msg,
          bytes: msg.data.byteLength + msg.subject.length + headerBytes(msg),
          sinkMessage: new HubMessage(msg, parts),
          alone,
        };
        if (!alone) toWrite.push(inHand);
        else {
          suspects.push(inHand);
          this.o.log.warn(
            {
              seq: msg.seq,
              subject: msg.subject,
              deliveries: msg.info.deliveryCount,
              maxDeliver: s.maxDeliver,
            },
            'arrived with more deliveries than maxDeliver without failing here: written alone',
          );
        }
      }
    }
    toWrite.push(...suspects);
    if (skipped.length > 0) {
      await this.ack(skipped);
      this.o.metrics.skipped.inc(this.labels, skipped.length);
    }
    const result: SettleResult = { failed: await this.deadLetter(dead), retried: 0, retryAfterMs: 0 };

    const random = Math.random();
    for (let start = 0; start < toWrite.length;) {
      const part: InHand[] = [];
      let bytes = 0;
      while (start < toWrite.length) {
        const next = toWrite[start]!;
        if (part.length > 0 && (bytes + next.bytes > s.maxBatchBytes || next.alone)) break;
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
        const rejected: DeadLetterItem[] = [];
        const ok: JsMsg[] = [];
        for (const p of part) {
          const reason = outcome.rejected.get(p.msg.seq);
          if (reason === undefined) ok.push(p.msg);
          else rejected.push({ msg: p.msg, reason: DeadLetterReason.rejected, detail: reason });
        }
        if (await this.deadLetter(rejected)) result.failed = true;
        await this.ack(ok);
      } else if (outcome.kind === 'permanent') {
        const detail = describeError(outcome.error);
        this.o.log.error(
          { err: detail, messages: part.length },
          'sink refused the batch for good: dead-lettering it',
        );
        const items = part.map((p) => ({ msg: p.msg, reason: DeadLetterReason.permanent, detail }));
        if (await this.deadLetter(items)) result.failed = true;
      } else if (outcome.kind === 'aborted') {
        // Stopping: give the rest back at once, another instance (or the next start) takes it.
        this.nakAll(
          toWrite.slice(start - part.length).map((p) => p.msg),
          0,
        );
        break;
      } else {
        result.failed = true;
        const error = outcome.error;
        const detail = describeError(error);
        const partial = error instanceof TransientSinkError ? error.failedSeqs : undefined;
        // A hint of hours would hold the messages (and the consumer's lag alarm) that long: the
        // store's wish is honoured up to the runner's own longest delay.
        const hint = error instanceof TransientSinkError ? (error.retryAfterMs ?? 0) : 0;
        result.retryAfterMs = Math.min(hint, Math.max(...s.backoffMs));
        let failedPart = part;
        if (partial) {
          const failedSeqs = new Set(partial);
          failedPart = part.filter((p) => failedSeqs.has(p.msg.seq));
          await this.ack(part.filter((p) => !failedSeqs.has(p.msg.seq)).map((p) => p.msg));
        }
        this.o.log.warn(
          {
            err: detail,
            messages: failedPart.length,
            attempt,
            retryAfterMs: result.retryAfterMs || undefined,
          },
          `${this.o.sink.name} write failed: retrying with backoff`,
        );
        for (const p of failedPart) this.countFailure(p.msg.seq);
        const exhausted = failedPart.filter((p) => this.failuresOf(p.msg) >= s.maxDeliver);
        await this.deadLetter(
          exhausted.map((p) => ({
            msg: p.msg,
            reason: DeadLetterReason.maxDeliveries,
            detail: `failed ${this.failuresOf(p.msg)} writes, last: ${detail}`,
          })),
        );
        // The rest of the fetch would meet the same store: give it back unwritten.
        const retry = [
          ...failedPart.filter((p) => this.failuresOf(p.msg) < s.maxDeliver),
          ...toWrite.slice(start),
        ];
        for (const p of retry)
          this.nak(
            p.msg,
            Math.max(result.retryAfterMs, retryDelayMs(s.backoffMs, this.failuresOf(p.msg), random)),
          );
        result.retried = retry.length;
        break;
      }
    }
    return result;
  }

  /** Gives messages back for redelivery after `delayMs`. */
  nakAll(msgs: readonly JsMsg[], delayMs: number): void {
    for (const msg of msgs) this.nak(msg, delayMs);
  }

  private countFailure(seq: number): void {
    const failed = (this.failures.get(seq) ?? 0) + 1;
    this.failures.delete(seq);
    this.failures.set(seq, failed);
    if (this.failures.size > FAILURES_KEPT) this.failures.delete(this.failures.keys().next().value!);
  }

  /** Failed writes of `msg` in this process. */
  private failuresOf(msg: JsMsg): number {
    return this.failures.get(msg.seq) ?? 0;
  }

  private nak(msg: JsMsg, delayMs: number): void {
    msg.nak(delayMs);
    this.unsettled.delete(msg);
    this.o.metrics.retried.inc(this.labels);
  }

  private async write(part: InHand[]): Promise<WriteOutcome> {
    const controller = new AbortController();
    this.writeControllers.add(controller);
    const { writeTimeoutMs } = this.o.settings;
    const timeout = setTimeout(
      () => controller.abort(new SinkWriteTimeoutError(`write took longer than ${writeTimeoutMs} ms`)),
      writeTimeoutMs,
    );
    // A sink that ignores its signal must not hold the runner: the race gives up on it (the write
    // may still land later, which is harmless: writes are idempotent).
    const aborted = new Promise<never>((_, reject) =>
      controller.signal.addEventListener('abort', () => reject(controller.signal.reason), { once: true }),
    );
    aborted.catch(() => undefined);
    const end = this.o.metrics.writeSeconds.startTimer(this.labels);
    try {
      const result = await Promise.race([
        this.o.sink.write(
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
   * connection's acks in order, so the last confirmation covers the whole part: one round trip per
   * part instead of one per message.
   */
  private async ack(msgs: JsMsg[]): Promise<void> {
    if (msgs.length === 0) return;
    const last = msgs[msgs.length - 1]!;
    for (const m of msgs) if (m !== last) m.ack();
    const confirmed = await last.ackAck().catch(() => false);
    for (const m of msgs) {
      this.unsettled.delete(m);
      this.failures.delete(m.seq);
    }
    if (confirmed) {
      this.o.metrics.acked.inc(this.labels, msgs.length);
    } else {
      // The write is durable; an unconfirmed ack only means a redelivery, which the sink absorbs.
      this.o.log.warn({ unconfirmed: msgs.length }, 'acks were not confirmed: the batch may be redelivered');
    }
  }

  /**
   * Publishes each to the dead-letter stream and terms it once stored. One that could not be
   * stored is nak-ed with backoff instead (never termed unstored). Returns true if any failed.
   */
  private async deadLetter(items: DeadLetterItem[]): Promise<boolean> {
    if (items.length === 0) return false;
    const { durable, settings, metrics, log } = this.o;
    let failed = false;
    const concurrency = 64;
    for (let i = 0; i < items.length; i += concurrency) {
      await Promise.all(
        items.slice(i, i + concurrency).map(async ({ msg, reason, detail }) => {
          try {
            await storeDeadLetter(this.js, this.jsm, settings.dlqStream, {
              consumer: durable,
              stream: settings.stream,
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
            this.failures.delete(msg.seq);
            metrics.deadLettered.inc({ ...this.labels, reason });
            log.warn({ seq: msg.seq, subject: msg.subject, reason, detail }, 'dead-lettered');
          } catch (err) {
            failed = true;
            const full = isDlqFull(err);
            metrics.deadLetterFailures.inc({ ...this.labels, cause: full ? 'full' : 'error' });
            log.error(
              {
                err: describeError(err),
                seq: msg.seq,
                subject: msg.subject,
                reason,
                dlqStream: settings.dlqStream,
              },
              full
                ? `dead-letter stream ${settings.dlqStream} is full: the message stays in ${settings.stream} and is retried; inspect, redrive or purge dead letters, or raise the stream's max_bytes`
                : 'could not publish a dead letter: the message will be retried',
            );
            this.nak(msg, retryDelayMs(settings.backoffMs, this.failuresOf(msg)));
          }
        }),
      );
    }
    return failed;
  }
}
