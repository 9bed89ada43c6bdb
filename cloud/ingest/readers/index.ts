/**
 * The reader of an ingest engine, built from the very settings `switchyard ingest` writes with
 * (cloud/ingest/config.ts), so `migrate verify` and `audit` read what the consumers wrote.
 */
import { ConfigError } from '../../../lib/errors.ts';
import { IngestEngine, type IngestSinkConfig } from '../config.ts';
import { InfluxQLReader } from './influxql.ts';
import type { EngineReader } from './reader.ts';
import { VictoriaMetricsReader } from './victoria-metrics.ts';

export * from './reader.ts';
export { InfluxQLReader, type InfluxQLSettings } from './influxql.ts';
export { VictoriaMetricsReader, type VictoriaMetricsSettings, seriesSelector } from './victoria-metrics.ts';

/** How the server behind `influx2` is read: it speaks the v2 write API, but not one read API. */
export const Influx2ReadApi = {
  /** VictoriaMetrics: `/api/v1/export` (the server here). */
  victoriaMetrics: 'victoria-metrics',
  /** InfluxDB 3: InfluxQL over its v1 `/query`, database = the bucket, the token as credentials. */
  influxql: 'influxql',
} as const;
export type Influx2ReadApi = (typeof Influx2ReadApi)[keyof typeof Influx2ReadApi];

export interface EngineReaderOptions {
  /**
   * Timeout of one read request, answer included, ms. Reads cover hours of a fleet, so this is
   * not the sink's write timeout. Default 300 000.
   */
  requestTimeoutMs?: number;
  /** How to read `influx2`; default VictoriaMetrics. */
  influx2ReadApi?: Influx2ReadApi;
}

export const DEFAULT_READ_TIMEOUT_MS = 300_000;

type ReaderConfig = Pick<
  IngestSinkConfig,
  | 'influx1Url'
  | 'influx1Database'
  | 'influx1RetentionPolicy'
  | 'influx1Username'
  | 'influx1Password'
  | 'influx2Url'
  | 'influx2Token'
  | 'influx2Bucket'
  | 'influxGzip'
>;

/**
 * The reader of engine `sink` (`influx1`: InfluxQL; `influx2`: VictoriaMetrics, or InfluxQL for
 * InfluxDB 3) from an ingest sink configuration; `config.sink` itself is not looked at, so one
 * configuration serves both sides of an engine swap. `influxGzip` asks VictoriaMetrics for gzipped
 * exports, as it gzips writes. ConfigError (exit 2) if that engine's URL is missing.
 */
export function createEngineReader(
  sink: IngestEngine,
  config: ReaderConfig,
  options: EngineReaderOptions = {},
): EngineReader {
  const requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_READ_TIMEOUT_MS;
  if (sink === IngestEngine.influx1) {
    if (!config.influx1Url) throw new ConfigError(['influx1Url: required to read influx1']);
    return new InfluxQLReader({
      engine: sink,
      url: config.influx1Url,
      database: config.influx1Database,
      ...(config.influx1RetentionPolicy ? { retentionPolicy: config.influx1RetentionPolicy } : {}),
      ...(config.influx1Username ? { username: config.influx1Username } : {}),
      ...(config.influx1Password ? { password: config.influx1Password } : {}),
      requestTimeoutMs,
    });
  }
  if (!config.influx2Url) throw new ConfigError(['influx2Url: required to read influx2']);
  if (options.influx2ReadApi === Influx2ReadApi.influxql)
    return new InfluxQLReader({
      engine: sink,
      url: config.influx2Url,
      database: config.influx2Bucket,
      ...(config.influx2Token ? { token: config.influx2Token } : {}),
      requestTimeoutMs,
    });
  return new VictoriaMetricsReader({
    engine: sink,
    url: config.influx2Url,
    ...(config.influx2Token ? { token: config.influx2Token } : {}),
    gzip: config.influxGzip,
    requestTimeoutMs,
  });
}
