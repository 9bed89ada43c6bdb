/**
 * Writing messages through a consumer's sink outside the runner: replay, backfill and the redrive
 * of dead letters use the very sink code the consumer uses. No durable is involved, so nothing is
 * acked: a batch counts once `write` resolved, a rejection is reported with its reason, and a
 * transient failure is retried here with backoff (writes are idempotent, so a retried batch, or
 * one that overlaps the live consumer, changes nothing).
 */
import { describeError } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import { sleep } from '../lib/timers.ts';
import { retryDelayMs } from './runner-backoff.ts';
import { subjectMatcher } from './runner-filters.ts';
import {
  PermanentSinkError,
  TransientSinkError,
  type Sink,
  type SinkMessage,
  type SinkRejection,
} from './sink.ts';

/** Too many transient failures in a row: the store is down. */
export class SinkUnavailableError extends Error {
  override name = 'SinkUnavailableError';
}

export interface SinkWriterOptions {
  sink: Sink;
  log: Logger;
  /** Retry delays for attempts 1, 2, 3 …, in ms; the last repeats. */
  backoffMs?: readonly number[];
  /** Transient failures of one batch before giving up (SinkUnavailableError). */
  maxAttempts?: number;
  /** A write that takes longer is aborted and retried, in ms. */
  writeTimeoutMs?: number;
  signal?: AbortSignal;
}

/** What became of one batch. */
export interface BatchOutcome {
  written: number;
  rejected: SinkRejection[];
}

/** What a run of `feed` calls did, for a command's report. */
export interface FeedTally {
  written: number;
  /** Messages outside the consumer's own filters (e.g. invalid ones for ingest), not written. */
  skipped: number;
  /** The first `MAX_LISTED_REJECTIONS` rejections with their reasons; `rejectedCount` counts all. */
  rejected: SinkRejection[];
  rejectedCount: number;
}

/** Rejections a report lists one by one. */
export const MAX_LISTED_REJECTIONS = 100;

export const emptyTally = (): FeedTally => ({ written: 0, skipped: 0, rejected: [], rejectedCount: 0 });

export class SinkWriter {
  constructor(private readonly o: SinkWriterOptions) {}

  /**
   * Writes `batch` until the sink took it: resolves with what it rejected (the rest is durable).
   * Throws SinkUnavailableError after `maxAttempts` transient failures, or the signal's reason.
   */
  async write(batch: readonly SinkMessage[]): Promise<BatchOutcome> {
    const { sink, log } = this.o;
    const backoffMs = this.o.backoffMs ?? [250, 500, 1_000, 2_000, 5_000];
    const maxAttempts = this.o.maxAttempts ?? 10;
    let pending = batch;
    let written = 0;
    for (let attempt = 1; ; attempt++) {
      this.o.signal?.throwIfAborted();
      try {
        const result = await this.writeOnce(pending);
        return { written: written + pending.length - result.rejected.length, rejected: result.rejected };
      } catch (err) {
        if (err instanceof PermanentSinkError)
          return { written, rejected: pending.map((m) => ({ seq: m.seq, reason: describeError(err) })) };
        if (this.o.signal?.aborted) throw this.o.signal.reason;
        if (attempt >= maxAttempts)
          throw new SinkUnavailableError(
            `${sink.name}: ${attempt} attempts failed, last: ${describeError(err)}`,
            {
              cause: err,
            },
          );
        let delayMs = retryDelayMs(backoffMs, attempt);
        if (err instanceof TransientSinkError) {
          delayMs = Math.max(delayMs, err.retryAfterMs ?? 0);
          if (err.failedSeqs) {
            const failed = new Set(err.failedSeqs);
            written += pending.filter((m) => !failed.has(m.seq)).length;
            pending = pending.filter((m) => failed.has(m.seq));
          }
        }
        log.warn(
          { err: describeError(err), attempt, delayMs, messages: pending.length },
          `${sink.name} write failed: retrying`,
        );
        await sleep(delayMs, this.o.signal);
      }
    }
  }

  /**
   * Writes the messages that match `filters` (as the consumer's own filter would pass them) in
   * batches of `batchSize`, adding what happened to `tally`; `dryRun` writes nothing.
   */
  async feed(
    messages: readonly SinkMessage[],
    options: { filters: readonly string[]; batchSize: number; tally: FeedTally; dryRun?: boolean },
  ): Promise<void> {
    const { tally } = options;
    const keeps = subjectMatcher(options.filters);
    const mine = messages.filter((m) => keeps(m.subject));
    tally.skipped += messages.length - mine.length;
    if (options.dryRun) return;
    for (let i = 0; i < mine.length; i += options.batchSize) {
      const outcome = await this.write(mine.slice(i, i + options.batchSize));
      tally.written += outcome.written;
      tally.rejectedCount += outcome.rejected.length;
      tally.rejected.push(
        ...outcome.rejected.slice(0, Math.max(0, MAX_LISTED_REJECTIONS - tally.rejected.length)),
      );
    }
  }

  private async writeOnce(batch: readonly SinkMessage[]) {
    const controller = new AbortController();
    const onAbort = (): void => controller.abort(this.o.signal?.reason);
    this.o.signal?.addEventListener('abort', onAbort, { once: true });
    const timer = setTimeout(
      () => controller.abort(new Error(`write took longer than ${this.o.writeTimeoutMs ?? 60_000} ms`)),
      this.o.writeTimeoutMs ?? 60_000,
    );
    try {
      return await this.o.sink.write(batch, controller.signal);
    } finally {
      clearTimeout(timer);
      this.o.signal?.removeEventListener('abort', onAbort);
    }
  }
}
