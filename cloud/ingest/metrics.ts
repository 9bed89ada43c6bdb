/**
 * Metrics of the ingest sinks, labelled by `consumer` (the durable, e.g. `ingest-influx2`), next to
 * the runner's `switchyard_consumer_*`. Created once per registry: several sinks may share one.
 */
import type { Counter, Registry } from 'prom-client';
import { registeredCounter as counter } from '../../lib/metrics.ts';

export const IngestMetric = {
  points: 'switchyard_ingest_points_written_total',
  requests: 'switchyard_ingest_write_requests_total',
  splits: 'switchyard_ingest_batch_splits_total',
  skipped: 'switchyard_ingest_messages_skipped_total',
  rejected: 'switchyard_ingest_messages_rejected_total',
} as const;

export interface IngestMetrics {
  /** Points the store acknowledged (a replay counts again). */
  points: Counter<'consumer'>;
  /** Write requests by outcome: `ok`, `refused` (bad data, split), `failed` (transient). */
  requests: Counter<'consumer' | 'outcome'>;
  /** Times a refused request was split in halves. */
  splits: Counter<'consumer'>;
  /** Messages of a kind ingest does not write (`invalid`). */
  skipped: Counter<'consumer'>;
  /** Messages rejected (dead-lettered by the runner), by `reason`: `undecodable` or `refused`. */
  rejected: Counter<'consumer' | 'reason'>;
}

export function ingestMetrics(registry: Registry): IngestMetrics {
  return {
    points: counter(registry, IngestMetric.points, 'Points the store acknowledged', ['consumer']),
    requests: counter(registry, IngestMetric.requests, 'Write requests, by outcome (ok, refused, failed)', [
      'consumer',
      'outcome',
    ]),
    splits: counter(registry, IngestMetric.splits, 'Refused write requests split in halves', ['consumer']),
    skipped: counter(registry, IngestMetric.skipped, 'Messages of a kind ingest does not write', [
      'consumer',
    ]),
    rejected: counter(registry, IngestMetric.rejected, 'Messages rejected for good, by reason', [
      'consumer',
      'reason',
    ]),
  };
}
