/**
 * Metrics of the consumer runner, labelled by `consumer` (the durable). Several runners may share a
 * registry (the `dev` command runs every consumer in one process), so each metric is created once
 * per registry and reused.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { registered } from '../lib/metrics.ts';

/** Names of the runner's metrics (all labelled `consumer`). */
export const RunnerMetric = {
  processed: 'switchyard_consumer_messages_processed_total',
  acked: 'switchyard_consumer_messages_acked_total',
  retried: 'switchyard_consumer_messages_retried_total',
  deadLettered: 'switchyard_consumer_messages_dead_lettered_total',
  deadLetterFailures: 'switchyard_consumer_dead_letter_failures_total',
  skipped: 'switchyard_consumer_messages_skipped_total',
  writeSeconds: 'switchyard_consumer_batch_write_seconds',
  lag: 'switchyard_consumer_lag_messages',
  ackPending: 'switchyard_consumer_ack_pending_messages',
  inFlight: 'switchyard_consumer_in_flight_messages',
  writesInFlight: 'switchyard_consumer_writes_in_flight',
  sinkUp: 'switchyard_consumer_sink_up',
  retentionUsed: 'switchyard_consumer_retention_used_ratio',
  retentionAlert: 'switchyard_consumer_retention_alert',
  evictedUnacked: 'switchyard_consumer_evicted_unacked_total',
} as const;

export interface RunnerMetrics {
  processed: Counter<'consumer'>;
  acked: Counter<'consumer'>;
  retried: Counter<'consumer'>;
  deadLettered: Counter<'consumer' | 'reason'>;
  deadLetterFailures: Counter<'consumer' | 'cause'>;
  skipped: Counter<'consumer'>;
  writeSeconds: Histogram<'consumer' | 'outcome'>;
  lag: Gauge<'consumer'>;
  ackPending: Gauge<'consumer'>;
  inFlight: Gauge<'consumer'>;
  writesInFlight: Gauge<'consumer'>;
  sinkUp: Gauge<'consumer'>;
  retentionUsed: Gauge<'consumer' | 'limit'>;
  retentionAlert: Gauge<'consumer'>;
  evictedUnacked: Counter<'consumer'>;
}

export function runnerMetrics(registry: Registry): RunnerMetrics {
  const registers = [registry];
  const counter = <L extends string>(name: string, help: string, labelNames: L[]) =>
    registered(registry, name, () => new Counter<L>({ name, help, labelNames, registers }));
  const gauge = <L extends string = 'consumer'>(
    name: string,
    help: string,
    labelNames = ['consumer'] as L[],
  ) => registered(registry, name, () => new Gauge<L>({ name, help, labelNames, registers }));
  return {
    processed: counter(RunnerMetric.processed, 'Messages fetched and handled (each delivery)', ['consumer']),
    acked: counter(RunnerMetric.acked, 'Messages acked after the sink made them durable', ['consumer']),
    retried: counter(RunnerMetric.retried, 'Messages nak-ed for redelivery after a transient failure', [
      'consumer',
    ]),
    deadLettered: counter(
      RunnerMetric.deadLettered,
      'Messages published to the dead-letter stream and termed, by reason class',
      ['consumer', 'reason'],
    ),
    deadLetterFailures: counter(
      RunnerMetric.deadLetterFailures,
      'Dead letters the dead-letter stream did not store (cause full: it refuses new ones); the message stays and is retried',
      ['consumer', 'cause'],
    ),
    skipped: counter(RunnerMetric.skipped, 'Messages outside the filter subjects, acked unwritten', [
      'consumer',
    ]),
    writeSeconds: registered(
      registry,
      RunnerMetric.writeSeconds,
      () =>
        new Histogram<'consumer' | 'outcome'>({
          name: RunnerMetric.writeSeconds,
          help: 'Duration of sink.write per batch, by outcome (ok, rejected, permanent, transient, aborted)',
          labelNames: ['consumer', 'outcome'],
          buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
          registers,
        }),
    ),
    lag: gauge(
      RunnerMetric.lag,
      'Messages in the stream not yet delivered to the consumer (num_pending; from each delivery, or consumer info when idle)',
    ),
    ackPending: gauge(
      RunnerMetric.ackPending,
      'Messages delivered and not yet acked (num_ack_pending; from consumer info while no messages flow)',
    ),
    inFlight: gauge(RunnerMetric.inFlight, 'Messages fetched and not yet settled'),
    writesInFlight: gauge(
      RunnerMetric.writesInFlight,
      'Batches being written now (at writesInFlight the next fetched batch waits: the store sets the pace)',
    ),
    sinkUp: gauge(RunnerMetric.sinkUp, '1 when the sink answered its last readiness check or write'),
    retentionUsed: gauge<'consumer' | 'limit'>(
      RunnerMetric.retentionUsed,
      "Share of the stream's limit (messages, bytes, age) taken by messages the consumer has not acked; at 1 they are evicted",
      ['consumer', 'limit'],
    ),
    retentionAlert: gauge(
      RunnerMetric.retentionAlert,
      "1 while unacked messages take at least retentionAlertRatio of any of the stream's limits",
    ),
    evictedUnacked: counter(
      RunnerMetric.evictedUnacked,
      'Messages the stream evicted by its limits before the consumer acked them (seen at each retention check)',
      ['consumer'],
    ),
  };
}
