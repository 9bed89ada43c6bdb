/**
 * What a consumer is: a spec (its sink's settings schema, its runner defaults, its sink factory)
 * that turns into a process through the shared runner. Each consumer defines its spec beside its
 * sink (cloud/<name>/consumer.ts) and is listed in cloud/consumers.ts; the command line, `dev`,
 * replay and tests all build consumers from the spec, never from the CLI.
 */
import type { Registry } from 'prom-client';
import Type, { type Static, type TObject, type TProperties } from 'typebox';
import { loadConfig, type ConfigSources } from '../lib/config.ts';
import { natsAuthOf, natsInsecurities, NatsAuthSchema } from '../lib/nats.ts';
import { serviceProperties } from '../lib/ops.ts';
import { InsecureSchema, requireSecure } from '../lib/secure.ts';
import type { Logger } from '../lib/log.ts';
import { runService } from '../lib/service.ts';
import { runConsumer, type ConsumerRun } from './runner.ts';
import { RUNNER_SETTING_KEYS, runnerSettingsSchema, type RunnerSettings } from './runner-settings.ts';
import type { Sink } from './sink.ts';

/** Runner defaults a consumer may override, plus its ops port. */
export type ConsumerDefaults = Partial<RunnerSettings> & { opsPort?: number };

/** How the cloud's commands reach the hub: URL(s), credentials, TLS (`--insecure` to go without). */
export const HubConnectionSchema = Type.Object({
  natsUrl: Type.String({
    minLength: 1,
    default: 'nats://127.0.0.1:4222',
    description: 'NATS server URL(s) of the hub, comma-separated',
  }),
  ...NatsAuthSchema.properties,
  ...InsecureSchema.properties,
});

/** The settings every consumer shares (connection, durable, ops, the runner's), with `defaults` applied. */
export function consumerConfigProperties(defaults: ConsumerDefaults = {}) {
  const { opsPort, ...runner } = defaults;
  return {
    ...HubConnectionSchema.properties,
    durable: Type.Optional(
      Type.String({
        pattern: '^[A-Za-z0-9_-]+$',
        description: 'durable consumer name (default: the consumer name, e.g. archive)',
      }),
    ),
    ...runnerSettingsSchema(runner).properties,
    ...serviceProperties(opsPort ?? 9464),
  };
}

/** The settings every consumer command shares. */
export const ConsumerConfigSchema = Type.Object(consumerConfigProperties());
/** Loaded settings of a consumer command: the shared ones, the sink's, and the resolved durable. */
export type ConsumerConfig<S extends TObject = TObject> = Static<typeof ConsumerConfigSchema> &
  Static<S> & { durable: string };

export interface ConsumerSpec<S extends TObject> {
  /** Consumer name (`archive`); also the default durable and the service name `switchyard-<name>`. */
  name: string;
  /** What the consumer does, for `switchyard <name> --help`. */
  description: string;
  /** The sink's own settings (flat TypeBox object, described, with defaults). */
  sinkConfigSchema: S;
  /** Runner defaults that suit this sink (e.g. large batches for the archive). */
  runnerDefaults?: ConsumerDefaults;
  /** Durable name when none is configured (default: `name`). */
  defaultDurable?: (config: Omit<ConsumerConfig<S>, 'durable'>) => string;
  /**
   * Why the sink's connection settings are not secure (no password, plain text to another machine);
   * the command refuses to start on any unless `--insecure`.
   */
  insecurities?(config: ConsumerConfig<S>): string[];
  /** Builds the sink (not opened: the runner opens and closes it). */
  createSink(config: ConsumerConfig<S>, log: Logger, registry: Registry): Sink | Promise<Sink>;
}

/** The full config schema of a consumer: shared settings and the sink's. */
export function consumerSchema<S extends TObject>(spec: ConsumerSpec<S>) {
  const shared = consumerConfigProperties(spec.runnerDefaults);
  const own = spec.sinkConfigSchema.properties as TProperties;
  const clash = Object.keys(own).filter((k) => k in shared);
  if (clash.length > 0)
    throw new Error(`${spec.name}: sink settings ${clash.join(', ')} clash with the runner's`);
  return Type.Object({ ...shared, ...own });
}

/** Loads and checks the config of a consumer command (ConfigError lists every problem). */
export function loadConsumerConfig<S extends TObject>(
  spec: ConsumerSpec<S>,
  sources: ConfigSources = {},
): ConsumerConfig<S> {
  const loaded = loadConfig(consumerSchema(spec), sources) as Omit<ConsumerConfig<S>, 'durable'> & {
    durable?: string;
  };
  const durable = loaded.durable ?? spec.defaultDurable?.(loaded) ?? spec.name;
  return { ...loaded, durable } as ConsumerConfig<S>;
}

/** The runner settings within a loaded config. */
export function runnerSettingsOf(config: ConsumerConfig): RunnerSettings {
  const out = {} as Record<string, unknown>;
  for (const key of RUNNER_SETTING_KEYS) out[key] = (config as Record<string, unknown>)[key];
  return out as RunnerSettings;
}

/**
 * Builds the sink and starts the runner in this process, without an ops server or signal
 * handling: for the `dev` command and tests. The caller aborts `signal` and awaits `done`.
 */
export async function startConsumer<S extends TObject>(
  spec: ConsumerSpec<S>,
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
    natsAuth: natsAuthOf(config),
    sink,
    log,
    registry: context.registry,
    signal: context.signal,
  });
}

/** Why a consumer's settings (NATS and its sink's) are not secure; empty when they are. */
export function consumerInsecurities<S extends TObject>(
  spec: ConsumerSpec<S>,
  config: ConsumerConfig<S>,
): string[] {
  return [...natsInsecurities(config.natsUrl, natsAuthOf(config)), ...(spec.insecurities?.(config) ?? [])];
}

/** Time a consumer has to close its sink and NATS after its batch settled or was given back (ms). */
const CLOSE_GRACE_MS = 5_000;

/** Runs a consumer as a service until SIGTERM/SIGINT, then ends the process (lib/service.ts). */
export function runConsumerService<S extends TObject>(
  spec: ConsumerSpec<S>,
  config: ConsumerConfig<S>,
): Promise<void> {
  return runService({
    name: `switchyard-${spec.name}`,
    opsHost: config.opsHost,
    opsPort: config.opsPort,
    logLevel: config.logLevel,
    // The runner's own grace for the write in hand, then closing the sink and NATS.
    stopGraceMs: config.shutdownGraceMs + CLOSE_GRACE_MS,
    start: async ({ log, registry, signal }) => {
      requireSecure(consumerInsecurities(spec, config), config.insecure, log);
      const run = await startConsumer(spec, config, { log, registry, signal });
      log.info({ durable: config.durable, stream: config.stream }, 'starting the consumer');
      // The runner stops on the same signal and settles its batch; `done` resolves after that.
      return { readiness: () => run.readiness(), stop: () => run.done, done: run.done };
    },
  });
}
