/**
 * Settings of `switchyard console`: the same connection settings as the consumers (hub NATS,
 * Redis, the ingest engine the chart reads), plus the console's own (where it listens, who may
 * look, how often it refreshes).
 */
import Type, { type Static } from 'typebox';
import { serviceProperties } from '../../lib/ops.ts';
import { RedisConnectionSchema } from '../../lib/redis.ts';
import { DLQ_STREAM, HUB_STREAM } from '../../schemas/streams.ts';
import { HubConnectionSchema } from '../consumer.ts';
import { IngestSinkConfigSchema } from '../ingest/config.ts';
import { DEFAULT_KEY_PREFIX } from '../monitor/keys.ts';

const engine = IngestSinkConfigSchema.properties;

export const ConsoleConfigSchema = Type.Object({
  ...HubConnectionSchema.properties,
  ...RedisConnectionSchema.properties,
  redisKeyPrefix: Type.String({ default: DEFAULT_KEY_PREFIX, description: "the monitor's key prefix" }),
  // The engine the chart reads: the ingest consumer's own settings (cloud/ingest/config.ts).
  sink: engine.sink,
  influx2Url: engine.influx2Url,
  influx2Token: engine.influx2Token,
  influx2Bucket: engine.influx2Bucket,
  influx1Url: engine.influx1Url,
  influx1Database: engine.influx1Database,
  influx1RetentionPolicy: engine.influx1RetentionPolicy,
  influx1Username: engine.influx1Username,
  influx1Password: engine.influx1Password,
  influxGzip: engine.influxGzip,
  stream: Type.String({ default: HUB_STREAM, description: 'the hub stream the consumers read' }),
  dlqStream: Type.String({ default: DLQ_STREAM, description: 'the dead-letter stream' }),
  host: Type.String({ default: '127.0.0.1', description: 'address the console listens on' }),
  port: Type.Integer({
    minimum: 0,
    maximum: 65535,
    default: 8080,
    description: 'port of the console (0: any free port; the URL is logged)',
  }),
  consoleToken: Type.String({
    default: '',
    secret: true,
    description: 'bearer token every page and API asks for (empty: none, see consoleBehindProxy)',
  }),
  consoleBehindProxy: Type.Boolean({
    default: false,
    description: "run without a token: the cluster's auth proxy in front decides who may look",
  }),
  refreshIntervalMs: Type.Integer({
    minimum: 500,
    default: 5_000,
    description: 'how often the shared snapshot is refreshed and pages poll it (ms)',
  }),
  countsIntervalMs: Type.Integer({
    minimum: 1_000,
    default: 30_000,
    description: "how often the hub stream's per-subject counts (rates, invalid share) are read (ms)",
  }),
  staleAfterMs: Type.Integer({
    minimum: 1_000,
    default: 60_000,
    description: 'a site not heard from for this long is silent (ms)',
  }),
  lagWarnMessages: Type.Integer({
    minimum: 1,
    default: 10_000,
    description: 'a site whose hub lag exceeds this many messages is lagging',
  }),
  chartHours: Type.Number({
    exclusiveMinimum: 0,
    maximum: 48,
    default: 3,
    description: 'hours of SoC and W the site chart shows',
  }),
  deadLetterLimit: Type.Integer({
    minimum: 1,
    maximum: 10_000,
    default: 500,
    description: 'newest dead letters the console lists',
  }),
  ...serviceProperties(9470, '; also served on the console port'),
});
export type ConsoleConfig = Static<typeof ConsoleConfigSchema>;
