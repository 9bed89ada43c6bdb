/** The ingest consumer: device readings into a time-series engine (docs/ingest.md). */
import { kindFilter, MessageKind } from '../../schemas/index.ts';
import type { ConsumerSpec } from '../consumer.ts';
import { createIngestSink, IngestSinkConfigSchema } from './config.ts';

export const ingestConsumer = {
  name: 'ingest',
  description:
    'Consumes telemetry, status and event messages of the hub stream BSU with its own durable and writes ' +
    'them as points (measurements telemetry, telemetry_string, telemetry_module, status, event; tags site ' +
    'and device) to the engine chosen by --sink: influx2 (the v2 write API of InfluxDB 2/3 and ' +
    'VictoriaMetrics) or influx1 (InfluxDB 1.x). The durable defaults to ingest-<sink>, so two engines can ' +
    'ingest side by side during an engine swap. A payload that does not decode, or that the database ' +
    'refuses, is dead-lettered with the reason; a database that is down or misconfigured is retried.',
  sinkConfigSchema: IngestSinkConfigSchema,
  runnerDefaults: {
    // Invalid payloads stay with the archive. On nats-server 2.9 (one filter per consumer) the
    // runner asks for bsu.*.*.* and acks the rest itself.
    filterSubjects: [MessageKind.telemetry, MessageKind.status, MessageKind.event].map(kindFilter),
    batchSize: 1_000,
    opsPort: 9466,
  },
  // One durable per engine: switching --sink never continues from another engine's position.
  defaultDurable: (config) => `ingest-${config.sink}`,
  createSink: (config, log, registry) =>
    createIngestSink(config, log, { registry, consumer: config.durable }),
} satisfies ConsumerSpec<typeof IngestSinkConfigSchema>;
