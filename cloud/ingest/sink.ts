/**
 * The ingest sink, shared by every line-protocol engine (docs/ingest.md). An engine (influx2.ts,
 * influx1.ts) only knows how to POST line protocol and how to ask the server whether it would take
 * a write; mapping, request sizing, error classification (influx-errors.ts) and the splitting that
 * isolates refused messages are done here, the same way for all of them.
 */
import type { Registry } from 'prom-client';
import { describeError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import type { Readiness } from '../../lib/ops.ts';
import { messagePoints, toLine } from './line-protocol.ts';
import type { Sink, SinkMessage, SinkRejection, WriteResult } from '../sink.ts';
import { FailureClass, failureClassOf, InfluxHttpError, InfluxUnavailableError } from './errors.ts';
import { ingestMetrics, type IngestMetrics } from './metrics.ts';

/** What an engine provides: one write endpoint and one probe. */
export interface InfluxEngine {
  /** `influx2`, `influx1`: the Sink's name. */
  readonly name: string;
  /** Where it writes, for logs and readiness (`http://host:8086 db=switchyard`); no secrets. */
  readonly target: string;
  /**
   * POSTs line protocol (precision ms). Resolves once the server answered 2xx, i.e. the points are
   * durable; throws InfluxHttpError for an error status, anything else for a failed request.
   */
  writeLines(body: string, signal: AbortSignal): Promise<void>;
  /** Resolves if the server answers and would take writes (credentials, database/bucket). */
  probe(signal: AbortSignal): Promise<void>;
  /** Releases connections. */
  close(): Promise<void>;
}

export interface InfluxSinkOptions {
  /** Largest request body in bytes (a single message larger than this is still sent alone). */
  maxRequestBytes: number;
  /** Timeout of the readiness probe, ms. */
  probeTimeoutMs: number;
  log: Logger;
  /** Where the sink's metrics go (cloud/ingest/metrics.ts); none when omitted. */
  registry?: Registry;
  /** The `consumer` label of those metrics: the durable. */
  consumer?: string;
}

export const DEFAULT_INFLUX_SINK_OPTIONS = {
  maxRequestBytes: 4 * 1024 * 1024,
  probeTimeoutMs: 2000,
} as const;

/** Counters since the sink was created, for metrics and tests. */
export interface InfluxSinkStats {
  /** Points the server acknowledged (a replay counts again). */
  pointsWritten: number;
  /** Write requests sent, including the ones of splits. */
  requests: number;
  /** Messages of kind `invalid` (or another kind ingest does not write) skipped. */
  skipped: number;
  /** Messages rejected: undecodable, or refused by the server. */
  rejected: number;
  /** Times a refused request was split in halves. */
  splits: number;
}

interface Prepared {
  seq: number;
  /** The message's lines, joined with `\n`. */
  body: string;
  points: number;
}

const utf8Bytes = (s: string): number => Buffer.byteLength(s, 'utf8');

/**
 * A Sink writing line protocol through an engine. A transient failure fails the whole batch
 * (InfluxUnavailableError, with the server's `Retry-After` when it sent one), even after some of
 * its requests went through: writing their points again lands on the same series and time.
 */
export class InfluxSink implements Sink {
  readonly name: string;
  readonly stats: InfluxSinkStats = { pointsWritten: 0, requests: 0, skipped: 0, rejected: 0, splits: 0 };
  private readonly log: Logger;
  private readonly metrics: IngestMetrics | undefined;
  private readonly labels: { consumer: string };

  constructor(
    private readonly engine: InfluxEngine,
    private readonly options: InfluxSinkOptions,
  ) {
    this.name = engine.name;
    this.log = options.log.child({ sink: engine.name, target: engine.target });
    this.metrics = options.registry ? ingestMetrics(options.registry) : undefined;
    this.labels = { consumer: options.consumer ?? engine.name };
  }

  /** Checks that the server answers and would take writes; throws InfluxUnavailableError if not. */
  async open(): Promise<void> {
    try {
      await this.engine.probe(AbortSignal.timeout(this.options.probeTimeoutMs));
    } catch (err) {
      throw new InfluxUnavailableError(`${this.name} at ${this.engine.target}: ${describeError(err)}`, {
        cause: err,
      });
    }
  }

  async write(batch: readonly SinkMessage[], signal: AbortSignal): Promise<WriteResult> {
    const rejected: SinkRejection[] = [];
    const prepared: Prepared[] = [];
    for (const message of batch) {
      const result = messagePoints(message);
      if (result.outcome === 'skip') {
        this.stats.skipped++;
        this.metrics?.skipped.inc(this.labels);
        this.log.debug({ seq: message.seq, subject: message.subject, reason: result.reason }, 'skipped');
      } else if (result.outcome === 'reject') {
        rejected.push({ seq: message.seq, reason: result.reason });
        this.metrics?.rejected.inc({ ...this.labels, reason: 'undecodable' });
      } else if (result.points.length > 0) {
        prepared.push({
          seq: message.seq,
          body: result.points.map(toLine).join('\n'),
          points: result.points.length,
        });
      }
    }
    for (const chunk of this.chunks(prepared)) rejected.push(...(await this.writeSplitting(chunk, signal)));
    this.stats.rejected += rejected.length;
    return { rejected };
  }

  async readiness(): Promise<Readiness> {
    try {
      await this.engine.probe(AbortSignal.timeout(this.options.probeTimeoutMs));
      return { ready: true };
    } catch (err) {
      return { ready: false, reasons: [`${this.name} at ${this.engine.target}: ${describeError(err)}`] };
    }
  }

  close(): Promise<void> {
    return this.engine.close();
  }

  /** Consecutive runs of messages whose bodies add up to at most `maxRequestBytes`. */
  private *chunks(prepared: readonly Prepared[]): Generator<Prepared[]> {
    let chunk: Prepared[] = [];
    let bytes = 0;
    for (const p of prepared) {
      const size = utf8Bytes(p.body) + 1;
      if (chunk.length > 0 && bytes + size > this.options.maxRequestBytes) {
        yield chunk;
        chunk = [];
        bytes = 0;
      }
      chunk.push(p);
      bytes += size;
    }
    if (chunk.length > 0) yield chunk;
  }

  /**
   * Writes `chunk`; if the server refuses it as bad data (or too large), writes each half in turn
   * until single messages are left, and returns those it still refuses. Points of the good halves
   * may already have been written by the refused request (a 1.x partial write): writing them again
   * is a no-op. Throws InfluxUnavailableError for anything transient.
   */
  private async writeSplitting(chunk: readonly Prepared[], signal: AbortSignal): Promise<SinkRejection[]> {
    try {
      signal.throwIfAborted();
      this.stats.requests++;
      await this.engine.writeLines(chunk.map((p) => p.body).join('\n'), signal);
      const points = chunk.reduce((n, p) => n + p.points, 0);
      this.stats.pointsWritten += points;
      this.metrics?.points.inc(this.labels, points);
      this.metrics?.requests.inc({ ...this.labels, outcome: 'ok' });
      return [];
    } catch (err) {
      const failure = failureClassOf(err);
      if (failure === FailureClass.data || failure === FailureClass.tooLarge) {
        this.metrics?.requests.inc({ ...this.labels, outcome: 'refused' });
        const reason = err instanceof InfluxHttpError ? err.serverReason : describeError(err);
        if (chunk.length === 1) {
          this.log.warn({ seq: chunk[0]!.seq, reason }, 'the store refuses a message');
          this.metrics?.rejected.inc({ ...this.labels, reason: 'refused' });
          return [{ seq: chunk[0]!.seq, reason: `${this.name} refused the points: ${reason}` }];
        }
        this.stats.splits++;
        this.metrics?.splits.inc(this.labels);
        const half = Math.ceil(chunk.length / 2);
        return [
          ...(await this.writeSplitting(chunk.slice(0, half), signal)),
          ...(await this.writeSplitting(chunk.slice(half), signal)),
        ];
      }
      this.metrics?.requests.inc({ ...this.labels, outcome: 'failed' });
      if (failure === FailureClass.config) {
        // Not bad data: a wrong token or a missing database refuses every message alike. Throwing
        // keeps them all in the stream (nak, retry) instead of dead-lettering the lot.
        this.log.error(
          { err: describeError(err) },
          'the store refuses every write: check the token, org and bucket, or database (retrying)',
        );
      }
      throw new InfluxUnavailableError(
        `${this.name} write to ${this.engine.target} failed: ${describeError(err)}`,
        {
          cause: err,
          retryAfterMs: err instanceof InfluxHttpError ? err.retryAfterMs : undefined,
        },
      );
    }
  }
}
