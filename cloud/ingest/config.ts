/**
 * Configuration of `switchyard ingest`'s sink, and the factory that builds the chosen engine. The
 * property names are the ones the local stack writes to cloud.env (stack/env-vars.ts).
 */
import type { Registry } from 'prom-client';
import Type, { type Static } from 'typebox';
import { ConfigError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import { createInflux1Sink } from './influx1.ts';
import { createInflux2Sink } from './influx2.ts';
import type { InfluxSink } from './sink.ts';

/** The engines ingest can write to. */
export const IngestEngine = { influx2: 'influx2', influx1: 'influx1' } as const;
export type IngestEngine = (typeof IngestEngine)[keyof typeof IngestEngine];

/** Bodies above this size are gzipped when `influxGzip` is on (the client library's own default). */
export const GZIP_MIN_BYTES = 1000;

export const IngestSinkConfigSchema = Type.Object({
  sink: Type.Enum([IngestEngine.influx2, IngestEngine.influx1] as const, {
    default: IngestEngine.influx2,
    description: 'engine to write to: influx2 (v2 write API: InfluxDB 2/3, VictoriaMetrics) or influx1',
  }),
  influx2Url: Type.Optional(Type.String({ description: 'influx2: base URL, e.g. http://127.0.0.1:8428' })),
  influx2Token: Type.String({
    default: '',
    secret: true,
    description: 'influx2: API token (VictoriaMetrics ignores it)',
  }),
  influx2Org: Type.String({ default: 'switchyard', description: 'influx2: organization' }),
  influx2Bucket: Type.String({ default: 'switchyard', description: 'influx2: bucket' }),
  influx1Url: Type.Optional(Type.String({ description: 'influx1: base URL, e.g. http://127.0.0.1:8086' })),
  influx1Database: Type.String({ default: 'switchyard', description: 'influx1: database (must exist)' }),
  influx1RetentionPolicy: Type.Optional(
    Type.String({ description: "influx1: retention policy (the database's default when unset)" }),
  ),
  influx1Username: Type.Optional(Type.String({ description: 'influx1: user name (basic auth)' })),
  influx1Password: Type.Optional(
    Type.String({ secret: true, description: 'influx1: password (basic auth)' }),
  ),
  influxRequestTimeoutMs: Type.Integer({
    minimum: 100,
    default: 10_000,
    description: 'timeout of one write request, ms',
  }),
  influxMaxRequestBytes: Type.Integer({
    minimum: 1024,
    default: 4 * 1024 * 1024,
    description: 'largest write request body, bytes (a batch is sent in several requests above it)',
  }),
  influxGzip: Type.Boolean({
    // Off by default: next to the database, compressing costs the consumer more CPU than it saves
    // on the wire (docs/benchmarks.md). Turn it on across a WAN.
    default: false,
    description: `gzip request bodies above ${GZIP_MIN_BYTES} bytes (for a database across a slow link)`,
  }),
});
export type IngestSinkConfig = Static<typeof IngestSinkConfigSchema>;

/**
 * The sink `config.sink` names; ConfigError (exit 2) if that engine's URL is missing. Its metrics
 * go to `registry`, labelled with `consumer` (the durable).
 */
export function createIngestSink(
  config: IngestSinkConfig,
  log: Logger,
  metrics: { registry?: Registry; consumer?: string } = {},
): InfluxSink {
  const common = {
    requestTimeoutMs: config.influxRequestTimeoutMs,
    gzipMinBytes: config.influxGzip ? GZIP_MIN_BYTES : Number.POSITIVE_INFINITY,
  };
  const options = { maxRequestBytes: config.influxMaxRequestBytes, ...metrics };
  if (config.sink === IngestEngine.influx1) {
    if (!config.influx1Url) throw new ConfigError(['influx1Url: required when sink is influx1']);
    return createInflux1Sink(
      {
        ...common,
        url: config.influx1Url,
        database: config.influx1Database,
        ...(config.influx1RetentionPolicy ? { retentionPolicy: config.influx1RetentionPolicy } : {}),
        ...(config.influx1Username ? { username: config.influx1Username } : {}),
        ...(config.influx1Password ? { password: config.influx1Password } : {}),
      },
      log,
      options,
    );
  }
  if (!config.influx2Url) throw new ConfigError(['influx2Url: required when sink is influx2']);
  return createInflux2Sink(
    {
      ...common,
      url: config.influx2Url,
      token: config.influx2Token,
      org: config.influx2Org,
      bucket: config.influx2Bucket,
    },
    log,
    options,
  );
}
