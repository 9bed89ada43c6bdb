/**
 * What the operator's one-shot commands (replay, backfill, dlq, migrate, audit) share: their
 * connections come from the same settings as the consumers (`SWITCHYARD_*` environment, or the env
 * file `stack up` writes, `--env-file DIR/env/cloud.env`), a consumer's sink is built from its own
 * spec, Ctrl-C stops the work cleanly, and the final report goes to stdout as text or `--json`.
 */
import type { NatsConnection } from '@nats-io/transport-node';
import type { Command } from 'commander';
import { Registry } from 'prom-client';
import type { Static, TObject } from 'typebox';
import { archiveConsumer } from '../cloud/archive/consumer.ts';
import { createS3Client } from '../cloud/archive/s3.ts';
import {
  HubConnectionSchema,
  loadConsumerConfig,
  type ConsumerConfig,
  type ConsumerSpec,
} from '../cloud/consumer.ts';
import { consumerEntry } from '../cloud/consumers.ts';
import type { Sink } from '../cloud/sink.ts';
import { switchyardEnv } from '../lib/env.ts';
import { readEnvFile } from '../lib/env-file.ts';
import { loadConfig } from '../lib/config.ts';
import { UsageError } from '../lib/errors.ts';
import { createLogger, type Logger } from '../lib/log.ts';
import { connectNats, natsAuthOf, natsInsecurities } from '../lib/nats.ts';
import { requireSecure } from '../lib/secure.ts';

/** Options every operator command takes. */
export function addOperatorOptions(command: Command): Command {
  return command
    .option('--env-file <file>', 'KEY=value file with the SWITCHYARD_* settings (e.g. DIR/env/cloud.env)')
    .option('--json', 'print the final report as one JSON object')
    .option('--log-level <level>', 'log level of the JSON lines on stderr', 'warn');
}

export interface OperatorFlags {
  envFile?: string;
  json?: boolean;
  logLevel?: string;
}

/** A consumer's sink, built from its spec and settings, not opened yet. */
export interface ConsumerSink {
  spec: ConsumerSpec<TObject>;
  config: ConsumerConfig;
  sink: Sink;
}

export class OperatorContext {
  readonly env: Record<string, string>;
  readonly log: Logger;
  readonly signal: AbortSignal;
  private readonly controller = new AbortController();
  private nc: NatsConnection | undefined;
  private connection: Static<typeof HubConnectionSchema> | undefined;
  private readonly opened: Sink[] = [];

  constructor(
    readonly name: string,
    readonly flags: OperatorFlags,
  ) {
    // Settings in the environment win over the file, as for any command.
    this.env = { ...(flags.envFile ? readEnvFile(flags.envFile) : {}), ...switchyardEnv() };
    this.log = createLogger(`switchyard-${name}`, { level: flags.logLevel ?? 'warn', fd: 2 });
    this.signal = this.controller.signal;
    const onSignal = (signal: NodeJS.Signals): void => {
      if (this.signal.aborted) process.exit(130);
      process.stderr.write(`\n${name}: ${signal}: stopping after the batch in hand (again to quit now)\n`);
      this.controller.abort(new UsageError(`stopped by ${signal}`));
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  }

  /** How to reach the hub, as the consumers have it (URL, credentials, TLS); read once. */
  get hubConnection(): Static<typeof HubConnectionSchema> {
    this.connection ??= loadConfig(HubConnectionSchema, { env: this.env, file: '' });
    return this.connection;
  }

  /** The hub's NATS URL, as the consumers have it. */
  get natsUrl(): string {
    return this.hubConnection.natsUrl;
  }

  /** The hub connection (one-shot: fails at once when the hub cannot be reached). */
  async hub(): Promise<NatsConnection> {
    if (this.nc) return this.nc;
    const config = this.hubConnection;
    requireSecure(natsInsecurities(config.natsUrl, natsAuthOf(config)), config.insecure, this.log);
    this.nc = await connectNats({
      url: config.natsUrl,
      name: `switchyard-${this.name}`,
      connectTimeoutMs: 5_000,
      waitForServer: false,
      auth: natsAuthOf(config),
    }).catch((err: unknown) => {
      throw new Error(`cannot reach the hub at ${config.natsUrl}`, { cause: err });
    });
    return this.nc;
  }

  /** The consumer `name`'s settings (its spec's schema, from the environment and `overrides`). */
  async consumerConfig(name: string, overrides: Record<string, unknown> = {}) {
    const entry = consumerEntry(name);
    if (!entry) throw new UsageError(`unknown consumer ${name}: archive, monitor or ingest`);
    const spec = await entry.load();
    return { spec, config: loadConsumerConfig(spec, { flags: overrides, env: this.env, file: '' }) };
  }

  /** The sink the consumer `name` writes through, opened; closed by `close()`. */
  async openSink(name: string, overrides: Record<string, unknown> = {}): Promise<ConsumerSink> {
    const { spec, config } = await this.consumerConfig(name, overrides);
    const sink = await spec.createSink(config, this.log.child({ component: 'sink' }), new Registry());
    await sink.open();
    this.opened.push(sink);
    return { spec, config, sink };
  }

  /** The archive's bucket, as the archive consumer writes it. */
  archive() {
    const config = loadConsumerConfig(archiveConsumer, { env: this.env, file: '' });
    return { client: createS3Client(config), bucket: config.s3Bucket, prefix: config.s3Prefix };
  }

  /** Prints the report: `text` for people, the object itself with `--json`. */
  report(object: unknown, text: () => string): void {
    process.stdout.write(this.flags.json ? `${JSON.stringify(object)}\n` : `${text()}\n`);
  }

  async close(): Promise<void> {
    for (const sink of this.opened) await sink.close().catch(() => undefined);
    await this.nc?.close().catch(() => undefined);
    this.log.flush();
  }
}

/** Runs `work` with a context that is closed afterwards, whatever happens. */
export async function withOperator<T>(
  name: string,
  flags: OperatorFlags,
  work: (ctx: OperatorContext) => Promise<T>,
): Promise<T> {
  const ctx = new OperatorContext(name, flags);
  try {
    return await work(ctx);
  } finally {
    await ctx.close();
  }
}

/** A positive integer flag, or UsageError naming it. */
export function intFlag(name: string, value: unknown): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1)
    throw new UsageError(`--${name} must be a positive integer, got ${String(value)}`);
  return n;
}

/** A time flag (ISO-8601, or epoch ms), as epoch ms; UsageError naming it. */
export function timeFlag(name: string, value: unknown): number | undefined {
  if (value === undefined) return undefined;
  const text = String(value);
  const ms = /^\d+$/.test(text) ? Number(text) : Date.parse(text);
  if (!Number.isFinite(ms)) throw new UsageError(`--${name} must be an ISO-8601 time, got ${text}`);
  return ms;
}
