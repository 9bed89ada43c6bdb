/**
 * `switchyard ingest`: device readings from the hub stream into a time-series database, through
 * the InfluxDB v2 write API (InfluxDB 2/3, VictoriaMetrics) or InfluxDB 1.x (docs/ingest.md).
 */
import { consumerCommand, type ConsumerCommandSpec } from '../../cloud/consumer-command.ts';
import { createIngestSink, IngestSinkConfigSchema } from '../../cloud/sinks/influx-config.ts';
import { kindFilter, MessageKind } from '../../schemas/index.ts';

/** The ingest consumer: its settings, defaults and sink (also run in-process by `dev` and tests). */
export const ingestSpec = {
  name: 'ingest',
  summary: 'write device readings from the hub stream to InfluxDB (v2 API or 1.x) or VictoriaMetrics',
  description:
    'Consumes telemetry, status and event messages of the hub stream BSU with its own durable and writes ' +
    'them as points (measurements telemetry, telemetry_string, telemetry_module, status, event; tags site ' +
    'and device) to the engine chosen by --sink: influx2 (the v2 write API of InfluxDB 2/3 and ' +
    'VictoriaMetrics) or influx1 (InfluxDB 1.x). The durable defaults to ingest-<sink>, so two engines can ' +
    'ingest side by side during an engine swap. A payload that does not decode, or that the database ' +
    'refuses, is dead-lettered with the reason; a database that is down or misconfigured is retried.',
  sinkConfigSchema: IngestSinkConfigSchema,
  runnerDefaults: {
    // Invalid payloads stay with the archive. nats-server 2.9 takes one filter: the runner then asks
    // for bsu.*.*.* and acks the rest itself.
    filterSubjects: [MessageKind.telemetry, MessageKind.status, MessageKind.event].map(kindFilter),
    batchSize: 1_000,
    opsPort: 9466,
  },
  // One durable per engine: switching --sink never continues from another engine's position.
  defaultDurable: (config) => `ingest-${config.sink}`,
  createSink: (config, log, registry) =>
    createIngestSink(config, log, { registry, consumer: config.durable }),
} satisfies ConsumerCommandSpec<typeof IngestSinkConfigSchema>;

export const registerIngest = consumerCommand(ingestSpec);
