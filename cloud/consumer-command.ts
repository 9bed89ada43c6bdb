/**
 * One factory for every consumer command (`switchyard archive`, `monitor`, `ingest`): the runner's
 * settings plus the sink's own, loaded from flags, `SWITCHYARD_*` environment and `--config FILE`
 * (lib/config.ts); JSON logs; `/metrics`, `/healthz`, `/readyz`; a clean stop on SIGTERM (the batch
 * in hand is finished or nak-ed, the sink closed, exit 0). A consumer command is this factory plus
 * a Sink:
 *
 * ```ts
 * export const registerArchive = consumerCommand({
 *   name: 'archive',
 *   description: '…',
 *   sinkConfigSchema: ArchiveConfigSchema,
 *   runnerDefaults: { batchSize: 5000, fillBatch: true },
 *   defaultOpsPort: 9464,
 *   createSink: (config, log, registry) => new S3ArchiveSink({ ...config, log, registry }),
 * });
 * ```
 */
import { Command } from 'commander';
import type { Registry } from 'prom-client';
import Type, { type Static, type TObject, type TProperties } from 'typebox';
import { addConfigOptions, loadConfig, type ConfigSources } from '../lib/config.ts';
import type { Logger } from '../lib/log.ts';
import { runService } from '../lib/service.ts';
import type { RegisterCommand } from '../cli/commands/index.ts';
import { DEFAULT_RUNNER_SETTINGS, runConsumer, type ConsumerRun, type RunnerSettings } from './runner.ts';
import type { Sink } from './sink.ts';

/** Runner defaults a command may override, plus its ops port. */
export type ConsumerDefaults = Partial<RunnerSettings> & { opsPort?: number };

/** The settings every consumer command shares, with `defaults` applied. */
export function consumerConfigProperties(defaults: ConsumerDefaults = {}) {
  const d = { ...DEFAULT_RUNNER_SETTINGS, ...defaults };
  const ms = (def: number, description: string, minimum = 1) =>
    Type.Integer({ minimum, default: def, description: `${description} (ms)` });
  return {
    natsUrl: Type.String({
      minLength: 1,
      default: 'nats://127.0.0.1:4222',
      description: 'NATS server URL(s) of the hub, comma-separated',
    }),
    stream: Type.String({ minLength: 1, default: d.stream, description: 'stream to consume' }),
    durable: Type.Optional(
      Type.String({
        pattern: '^[A-Za-z0-9_-]+$',
        description: 'durable consumer name (default: the command name, e.g. archive)',
      }),
    ),
    filterSubjects: Type.Array(Type.String({ minLength: 1 }), {
      minItems: 1,
      default: d.filterSubjects,
      description: 'subject filters, comma-separated',
    }),
    ackWaitMs: ms(d.ackWaitMs, 'redeliver a message not acked within this', 1000),
    maxAckPending: Type.Integer({
      minimum: -1,
      default: d.maxAckPending,
      description: 'messages delivered and not yet acked, at most (≥ batchSize)',
    }),
    maxDeliver: Type.Integer({
      minimum: 1,
      default: d.maxDeliver,
      description: 'deliveries after which a failing message is dead-lettered',
    }),
    backoffMs: Type.Array(Type.Integer({ minimum: 0 }), {
      minItems: 1,
      default: d.backoffMs,
      description: 'retry delays for attempts 1, 2, 3 … in ms, comma-separated; the last repeats',
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
      description: 'bytes per sink write; a larger fetch is written in parts',
    }),
    fetchExpiresMs: ms(d.fetchExpiresMs, 'how long one fetch waits for messages', 1000),
    fillBatch: Type.Boolean({
      default: d.fillBatch,
      description: 'wait up to fetchExpiresMs for a full batch (true) or take what is pending (false)',
    }),
    writeTimeoutMs: ms(d.writeTimeoutMs, 'abort and retry a sink write that takes longer'),
    shutdownGraceMs: ms(d.shutdownGraceMs, 'on SIGTERM, let the write in hand finish within this', 0),
    lagRefreshMs: ms(d.lagRefreshMs, 'refresh the lag gauges this often', 100),
    dlqStream: Type.String({ minLength: 1, default: d.dlqStream, description: 'dead-letter stream' }),
    opsHost: Type.String({ default: '127.0.0.1', description: 'address of /metrics, /healthz, /readyz' }),
    opsPort: Type.Integer({
      minimum: 0,
      maximum: 65535,
      default: defaults.opsPort ?? 9464,
      description: 'port of /metrics, /healthz, /readyz (0: any free port)',
    }),
    logLevel: Type.String({ default: 'info', description: 'log level (trace, debug, info, warn, error)' }),
  };
}

/** The settings every consumer command shares. */
export const ConsumerConfigSchema = Type.Object(consumerConfigProperties());
/** Loaded settings of a consumer command: the shared ones, the sink's, and the resolved durable. */
export type ConsumerConfig<S extends TObject = TObject> = Static<typeof ConsumerConfigSchema> &
  Static<S> & { durable: string };

export interface ConsumerCommandSpec<S extends TObject> {
  /** Command name (`archive`); also the default durable and the service name `switchyard-<name>`. */
  name: string;
  /** One line for `switchyard --help`. */
  summary?: string;
  /** What the command does, for `switchyard <name> --help`. */
  description: string;
  /** The sink's own settings (flat TypeBox object, described, with defaults). */
  sinkConfigSchema: S;
  /** Runner defaults that suit this sink (e.g. large batches for the archive). */
  runnerDefaults?: ConsumerDefaults;
  /** Durable name when none is configured (default: `name`). */
  defaultDurable?: (config: Omit<ConsumerConfig<S>, 'durable'>) => string;
  /** Builds the sink (not opened: the runner opens and closes it). */
  createSink(config: ConsumerConfig<S>, log: Logger, registry: Registry): Sink | Promise<Sink>;
}

/** The full config schema of a consumer command: shared settings and the sink's. */
export function consumerCommandSchema<S extends TObject>(spec: ConsumerCommandSpec<S>) {
  const shared = consumerConfigProperties(spec.runnerDefaults);
  const own = spec.sinkConfigSchema.properties as TProperties;
  const clash = Object.keys(own).filter((k) => k in shared);
  if (clash.length > 0)
    throw new Error(`${spec.name}: sink settings ${clash.join(', ')} clash with the runner's`);
  return Type.Object({ ...shared, ...own });
}

/** Loads and checks the config of a consumer command (ConfigError lists every problem). */
export function loadConsumerConfig<S extends TObject>(
  spec: ConsumerCommandSpec<S>,
  sources: ConfigSources = {},
): ConsumerConfig<S> {
  const loaded = loadConfig(consumerCommandSchema(spec), sources) as Omit<ConsumerConfig<S>, 'durable'> & {
    durable?: string;
  };
  const durable = loaded.durable ?? spec.defaultDurable?.(loaded) ?? spec.name;
  return { ...loaded, durable } as ConsumerConfig<S>;
}

/** The runner settings within a loaded config. */
export function runnerSettingsOf(config: ConsumerConfig): RunnerSettings {
  const out = {} as Record<string, unknown>;
  for (const key of Object.keys(DEFAULT_RUNNER_SETTINGS)) out[key] = (config as Record<string, unknown>)[key];
  return out as unknown as RunnerSettings;
}

/**
 * Builds the sink and starts the runner in this process, without an ops server or signal
 * handling: for the `dev` command and tests. The caller aborts `signal` and awaits `done`.
 */
export async function startConsumer<S extends TObject>(
  spec: ConsumerCommandSpec<S>,
  config: ConsumerConfig<S>,
  context: { log: Logger; registry: Registry; signal: AbortSignal },
): Promise<ConsumerRun> {
  const log = context.log;
  // The runner stamps `consumer` on its own lines.
  const sink = await spec.createSink(
    config,
    log.child({ component: 'sink', consumer: config.durable }),
    context.registry,
  );
  return runConsumer({
    ...runnerSettingsOf(config),
    durable: config.durable,
    natsUrl: config.natsUrl,
    sink,
    log,
    registry: context.registry,
    signal: context.signal,
  });
}

/** Runs a consumer command until SIGTERM/SIGINT; resolves once everything is closed. */
export function runConsumerCommand<S extends TObject>(
  spec: ConsumerCommandSpec<S>,
  config: ConsumerConfig<S>,
): Promise<void> {
  return runService({
    name: `switchyard-${spec.name}`,
    opsHost: config.opsHost,
    opsPort: config.opsPort,
    logLevel: config.logLevel,
    start: async ({ log, registry, signal }) => {
      const run = await startConsumer(spec, config, { log, registry, signal });
      log.info({ durable: config.durable, stream: config.stream }, 'consuming');
      // The runner stops on the same signal and settles its batch; `done` resolves after that.
      return { readiness: () => run.readiness(), stop: () => run.done, done: run.done };
    },
  });
}

/** A `switchyard <name>` command: see the module comment. */
export function consumerCommand<S extends TObject>(spec: ConsumerCommandSpec<S>): RegisterCommand {
  return (program) => {
    const schema = consumerCommandSchema(spec);
    const command = new Command(spec.name).description(spec.description);
    if (spec.summary) command.summary(spec.summary);
    addConfigOptions(command, schema).action(async (flags: Record<string, unknown>) => {
      // Settings the schema cannot check alone (maxAckPending ≥ batchSize …) are checked by the
      // runner before it connects, as a UsageError: exit 2 either way.
      await runConsumerCommand(spec, loadConsumerConfig(spec, { flags }));
    });
    program.addCommand(command);
  };
}
