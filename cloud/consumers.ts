/**
 * Every consumer of the hub stream, by name. An entry loads its spec only when asked, so a process
 * that runs one consumer does not load the others' clients. A new consumer is one spec beside its
 * sink plus one line here.
 */
import type { TObject } from 'typebox';
import type { ConsumerSpec } from './consumer.ts';

export interface ConsumerEntry {
  name: string;
  /** One line for `switchyard --help`. */
  summary: string;
  load(): Promise<ConsumerSpec<TObject>>;
}

// Entries hold specs of different sink settings; the command line only needs what they share.
const erased = <S extends TObject>(spec: ConsumerSpec<S>) => spec as unknown as ConsumerSpec<TObject>;

export const consumers: readonly ConsumerEntry[] = [
  {
    name: 'archive',
    summary: 'archive every message of the hub stream to S3 (long-term replay and backfill)',
    load: async () => erased((await import('./archive/consumer.ts')).archiveConsumer),
  },
  {
    name: 'monitor',
    summary: 'keep the latest state of every unit in Redis (dashboards, alerting)',
    load: async () => erased((await import('./monitor/consumer.ts')).monitorConsumer),
  },
  {
    name: 'ingest',
    summary: 'write device readings from the hub stream to InfluxDB (v2 API or 1.x) or VictoriaMetrics',
    load: async () => erased((await import('./ingest/consumer.ts')).ingestConsumer),
  },
];

/** The consumer named `name`, or undefined. */
export const consumerEntry = (name: string): ConsumerEntry | undefined =>
  consumers.find((c) => c.name === name);
