/**
 * The runner's settings: one TypeBox schema holds each setting's type, minimum, default and
 * description. The consumer commands build their config from it (with their own defaults), and
 * the runner checks what it is given against the same schema, so a limit is written once.
 */
import Type, { type Static } from 'typebox';
import { Compile } from 'typebox/compile';
import Value from 'typebox/value';
import { UsageError } from '../lib/errors.ts';
import { formatErrors } from '../schemas/format-errors.ts';
import { DLQ_STREAM, HUB_STREAM } from '../schemas/streams.ts';
import { DEFAULT_BACKOFF_MS } from './runner-backoff.ts';

const base = {
  stream: HUB_STREAM,
  filterSubjects: ['bsu.>'],
  ackWaitMs: 60_000,
  maxAckPending: 10_000,
  maxDeliver: 20,
  backoffMs: [...DEFAULT_BACKOFF_MS] as number[],
  batchSize: 500,
  writesInFlight: 3,
  maxBatchBytes: 4 * 1024 * 1024,
  fetchExpiresMs: 5_000,
  fillBatch: false,
  writeTimeoutMs: 30_000,
  shutdownGraceMs: 10_000,
  lagRefreshMs: 5_000,
  retentionCheckMs: 60_000,
  retentionAlertRatio: 0.5,
  dlqStream: DLQ_STREAM,
};

/**
 * The runner's settings with `defaults` in place of the generic ones (a consumer's own: large
 * batches for the archive, low latency for the monitor).
 */
export function runnerSettingsSchema(defaults: Partial<typeof base> = {}) {
  const d = { ...base, ...defaults };
  const ms = (def: number, description: string, minimum: number) =>
    Type.Integer({ minimum, default: def, description: `${description} (ms)` });
  return Type.Object({
    stream: Type.String({ minLength: 1, default: d.stream, description: 'stream to consume' }),
    filterSubjects: Type.Array(Type.String({ minLength: 1 }), {
      minItems: 1,
      default: d.filterSubjects,
      description: 'subject filters, comma-separated (one covering filter on nats-server < 2.10)',
    }),
    ackWaitMs: ms(d.ackWaitMs, 'redeliver a message not acked within this', 1000),
    maxAckPending: Type.Integer({
      minimum: -1,
      default: d.maxAckPending,
      description: 'messages delivered and not yet acked, at most (≥ batchSize, or -1)',
    }),
    maxDeliver: Type.Integer({
      minimum: 1,
      default: d.maxDeliver,
      description: 'deliveries after which a failing message is dead-lettered',
    }),
    backoffMs: Type.Array(Type.Integer({ minimum: 0 }), {
      minItems: 1,
      default: d.backoffMs,
      description: 'retry delays for attempts 1, 2, 3 … in ms, comma-separated; the last repeats (±20 %)',
    }),
    batchSize: Type.Integer({ minimum: 1, default: d.batchSize, description: 'messages per fetch' }),
    writesInFlight: Type.Integer({
      minimum: 1,
      default: d.writesInFlight,
      description: 'batches written at once while the next is fetched (1: one at a time)',
    }),
    maxBatchBytes: Type.Integer({
      minimum: 1,
      default: d.maxBatchBytes,
      description: 'bytes (payloads and headers) per sink write; a larger fetch is written in parts',
    }),
    fetchExpiresMs: ms(d.fetchExpiresMs, 'how long one fetch waits for messages', 1000),
    fillBatch: Type.Boolean({
      default: d.fillBatch,
      description: 'wait up to fetchExpiresMs for a full batch (true) or take what is pending (false)',
    }),
    writeTimeoutMs: ms(d.writeTimeoutMs, 'abort and retry a sink write that takes longer', 1),
    shutdownGraceMs: ms(d.shutdownGraceMs, 'on SIGTERM, let the write in hand finish within this', 0),
    lagRefreshMs: ms(d.lagRefreshMs, 'refresh the lag gauges this often', 100),
    retentionCheckMs: ms(
      d.retentionCheckMs,
      "compare what is not acked yet with the stream's limits this often",
      100,
    ),
    retentionAlertRatio: Type.Number({
      exclusiveMinimum: 0,
      maximum: 1,
      default: d.retentionAlertRatio,
      description:
        "alert (metric and log) when unacked messages take this share of any of the stream's limits",
    }),
    dlqStream: Type.String({ minLength: 1, default: d.dlqStream, description: 'dead-letter stream' }),
    // No default: a consumer started without it must not shrink a replicated dead-letter stream.
    dlqReplicas: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 5,
        description:
          'copies of the dead-letter stream on a clustered hub (3 in production); unset: a new stream has 1, an existing one keeps its own',
      }),
    ),
  });
}

const RunnerSettingsSchema = runnerSettingsSchema();
const checkSettings = Compile(RunnerSettingsSchema);

/**
 * Tunables of a runner (units in the names). `writesInFlight`: batches written at once, each acked
 * as soon as its own write resolved, so a sink's writes must not depend on each other's order.
 */
export type RunnerSettings = Static<typeof RunnerSettingsSchema>;

export const DEFAULT_RUNNER_SETTINGS: Readonly<RunnerSettings> = Object.freeze(
  Value.Default(RunnerSettingsSchema, {}) as RunnerSettings,
);

/** The names of the runner's settings, to pick them out of a command's config. */
export const RUNNER_SETTING_KEYS = Object.keys(RunnerSettingsSchema.properties) as (keyof RunnerSettings &
  string)[];

/** `given` over the defaults, checked; throws UsageError listing every problem. */
export function resolveSettings(given: Partial<RunnerSettings>): RunnerSettings {
  const s = { ...DEFAULT_RUNNER_SETTINGS } as Record<string, unknown>;
  for (const key of RUNNER_SETTING_KEYS) if (given[key] !== undefined) s[key] = given[key];
  const problems = checkSettings.Check(s)
    ? []
    : formatErrors('', s, checkSettings.Errors(s)).map((m) => m.replace(/^\./, ''));
  const settings = s as RunnerSettings;
  if (settings.maxAckPending !== -1 && settings.maxAckPending < settings.batchSize)
    problems.push(
      `maxAckPending (${settings.maxAckPending}) must be at least batchSize (${settings.batchSize}), or -1`,
    );
  if (problems.length > 0) throw new UsageError(`bad consumer settings: ${problems.join('; ')}`);
  return settings;
}
