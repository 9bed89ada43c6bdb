/**
 * The monitor sink: the latest state of every unit in Redis (docs/consumers.md; keys:
 * cloud/monitor/keys.ts; update rules: cloud/monitor/apply.lua).
 *
 * A batch is one pipeline of EVALSHA calls of up to APPLY_CHUNK entries: one round trip, and no
 * MULTI, because each message is applied atomically and idempotently, so a batch cut short and
 * retried is harmless.
 */
import type { Counter, Registry } from 'prom-client';
import { registeredCounter as counter } from '../../lib/metrics.ts';
import { createClient, MultiErrorReply, type RedisClientType } from 'redis';
import Type, { type Static } from 'typebox';
import { describeError } from '../../lib/errors.ts';
import {
  redactUrl,
  redisClientOptions,
  RedisConnectionSchema,
  type RedisConnection,
  type RedisSettings,
} from '../../lib/redis.ts';
import type { Logger } from '../../lib/log.ts';
import type { Readiness } from '../../lib/ops.ts';
import { waitUntil, withTimeout } from '../../lib/timers.ts';
import { decodePayload, severityOf, type Evt1Alarm } from '../../schemas/index.ts';
import { receivedAtMs } from '../archive/layout.ts';
import {
  DEFAULT_KEY_PREFIX,
  monitorKeys,
  STATUS_FIELDS,
  TELEMETRY_FIELDS,
  type MonitorKeys,
} from './keys.ts';
import { conflate, type ApplyEntry, type MonitorUpdate } from './conflate.ts';
import {
  APPLY_CHUNK,
  applyCall,
  monitorScripts,
  sweepCall,
  type ScriptCall,
  type ScriptSettings,
} from './scripts.ts';
import type { Sink, SinkMessage, SinkRejection, WriteResult } from '../sink.ts';

/** Settings of the monitor sink (the runner's: cloud/runner-settings.ts). */
export const MonitorConfigSchema = Type.Object({
  ...RedisConnectionSchema.properties,
  redisKeyPrefix: Type.String({ default: DEFAULT_KEY_PREFIX, description: 'prefix of every monitor key' }),
  offlineAfterMs: Type.Integer({
    minimum: 1000,
    default: 120_000,
    description: 'a unit not heard from for this long is offline (ms)',
  }),
  sweepIntervalMs: Type.Integer({
    minimum: 100,
    default: 5_000,
    description: 'how often to look for offline units (ms)',
  }),
  changesMaxLen: Type.Integer({
    minimum: 100,
    default: 100_000,
    description: 'entries kept in the changes stream, about',
  }),
});
export type MonitorConfig = Static<typeof MonitorConfigSchema>;

export interface RedisMonitorOptions extends Omit<MonitorConfig, keyof RedisConnection>, RedisSettings {
  /** Durable name, for metric labels. */
  consumer: string;
  log: Logger;
  registry: Registry;
  /** The clock, in epoch ms (tests move it). */
  now?: () => number;
}

/** Names of the monitor's own metrics (labelled `consumer`). */
export const MonitorMetric = {
  applied: 'switchyard_monitor_updates_total',
  stale: 'switchyard_monitor_stale_total',
  conflated: 'switchyard_monitor_conflated_total',
  invalid: 'switchyard_monitor_invalid_total',
  offline: 'switchyard_monitor_units_gone_offline_total',
} as const;

const SWEEP_LIMIT = 1_000;

type Client = RedisClientType;

/**
 * What one message becomes: the script's update (the fields the monitor keeps, as strings, stored
 * verbatim), or why it only marks the unit as heard from.
 */
export function updateOf(
  message: SinkMessage,
): MonitorUpdate | { invalid: 'kind-invalid' | 'undecodable'; reason: string } {
  if (message.kind === 'invalid') return { invalid: 'kind-invalid', reason: 'kept aside by the bridge' };
  const decoded = decodePayload(message.kind, message.payload);
  if (!decoded.ok) return { invalid: 'undecodable', reason: decoded.reason };
  const fields: Record<string, string> = {};
  const pick = (value: Record<string, unknown>, names: readonly string[]): void => {
    for (const name of names) {
      const v = value[name];
      if (typeof v === 'number' || typeof v === 'string') fields[name] = String(v);
    }
  };
  switch (decoded.kind) {
    case 'telemetry':
      pick(decoded.value, TELEMETRY_FIELDS);
      break;
    case 'status':
      pick(decoded.value, STATUS_FIELDS);
      break;
    case 'event':
      fields.alarm = decoded.value.alarm;
      fields.action = decoded.value.action;
      fields.severity = decoded.value.severity ?? severityOf(decoded.value.alarm as Evt1Alarm);
  }
  const { site, device, seq } = message;
  return { kind: decoded.kind, site, device, seq, tsMs: decoded.tsMs, seenMs: receivedAtMs(message), fields };
}

/** The update of a message that only says its unit was heard from. */
function heardFrom(message: SinkMessage): MonitorUpdate {
  const { site, device, seq } = message;
  return { kind: 'seen', site, device, seq, tsMs: 0, seenMs: receivedAtMs(message), fields: {} };
}

export class RedisMonitorSink implements Sink {
  readonly name = 'redis';
  private client: Client | undefined;
  private readonly keys: MonitorKeys;
  private readonly now: () => number;
  private applySha = '';
  private sweepSha = '';
  private sweepTimer: NodeJS.Timeout | undefined;
  private sweeping = false;
  private lastError = '';
  private readonly applied: Counter<'consumer' | 'kind'>;
  private readonly stale: Counter<'consumer' | 'kind'>;
  private readonly conflated: Counter<'consumer' | 'kind'>;
  private readonly invalid: Counter<'consumer' | 'reason'>;
  private readonly offline: Counter<'consumer'>;

  constructor(private readonly options: RedisMonitorOptions) {
    // Read now: a script missing from the build stops the consumer at start, not at every open.
    monitorScripts();
    this.keys = monitorKeys(options.redisKeyPrefix);
    this.now = options.now ?? Date.now;
    const r = options.registry;
    this.applied = counter(r, MonitorMetric.applied, 'Messages that moved a unit forward', [
      'consumer',
      'kind',
    ]);
    this.stale = counter(r, MonitorMetric.stale, 'Messages older than the state held (late or replayed)', [
      'consumer',
      'kind',
    ]);
    this.conflated = counter(
      r,
      MonitorMetric.conflated,
      'Readings a newer reading of the same unit in the same batch superseded, applied in their place (never sent to Redis)',
      ['consumer', 'kind'],
    );
    this.invalid = counter(
      r,
      MonitorMetric.invalid,
      'Invalid or undecodable payloads (only mark the unit seen)',
      ['consumer', 'reason'],
    );
    this.offline = counter(r, MonitorMetric.offline, 'Units the sweep marked offline', ['consumer']);
  }

  async open(): Promise<void> {
    if (!this.client) {
      const client: Client = createClient({
        ...redisClientOptions(this.options),
        // Fail fast while disconnected: the runner is the one retry layer, and a queue here would
        // hold a batch (and its acks) for as long as Redis is away.
        disableOfflineQueue: true,
        socket: {
          ...redisClientOptions(this.options).socket,
          connectTimeout: 5_000,
          reconnectStrategy: (retries: number) => Math.min(100 * 2 ** retries, 5_000),
        },
      });
      client.on('error', (err: Error) => {
        // node-redis reconnects by itself; log each distinct problem once.
        if (err.message !== this.lastError)
          this.options.log.warn({ err: err.message }, 'redis connection problem');
        this.lastError = err.message;
      });
      client.on('ready', () => {
        if (this.lastError) this.options.log.info('redis connection is back');
        this.lastError = '';
      });
      client.connect().catch(() => undefined);
      this.client = client;
    }
    const client = this.client;
    await waitUntil('redis to be ready', () => client.isReady, { timeoutMs: 5_000, everyMs: 50 }).catch(
      () => {
        throw new Error(`redis at ${redactUrl(this.options.redisUrl)} is not reachable: ${this.lastError}`);
      },
    );
    await this.loadScripts(client);
    this.sweepTimer = setInterval(() => void this.sweep(), this.options.sweepIntervalMs);
    this.sweepTimer.unref();
    this.options.log.info({ prefix: this.options.redisKeyPrefix }, 'monitoring into redis');
  }

  private async loadScripts(client: Client): Promise<void> {
    const scripts = monitorScripts();
    this.applySha = await client.scriptLoad(scripts.apply);
    this.sweepSha = await client.scriptLoad(scripts.sweep);
  }

  private scriptSettings(): ScriptSettings {
    const { offlineAfterMs, changesMaxLen } = this.options;
    return { nowMs: this.now(), offlineAfterMs, changesMaxLen };
  }

  async write(batch: readonly SinkMessage[], signal: AbortSignal): Promise<WriteResult> {
    const client = this.client;
    if (!client?.isReady)
      throw new Error(`redis is not connected${this.lastError ? `: ${this.lastError}` : ''}`);
    const { keys, options } = this;
    const settings = this.scriptSettings();
    const updates = batch.map((message): MonitorUpdate => {
      const update = updateOf(message);
      if (!('invalid' in update)) return update;
      this.invalid.inc({ consumer: options.consumer, reason: update.invalid });
      options.log.debug({ seq: message.seq, reason: update.reason }, 'payload not applied');
      return heardFrom(message);
    });
    const entries = conflate(updates);
    const calls: ScriptCall[] = [];
    for (let start = 0; start < entries.length; start += APPLY_CHUNK)
      calls.push(applyCall(keys, settings, entries.slice(start, start + APPLY_CHUNK)));
    const run = async (): Promise<unknown[]> => {
      const pipeline = client.multi();
      for (const call of calls) pipeline.evalSha(this.applySha, call);
      return pipeline.execAsPipeline();
    };
    let replies: unknown[];
    try {
      replies = await run();
    } catch (err) {
      if (!isNoScript(err)) throw err;
      // Redis restarted and lost its script cache: load again and apply the batch once more.
      signal.throwIfAborted();
      await this.loadScripts(client);
      replies = await run();
    }
    return this.resultOf(entries, replies.flat());
  }

  /**
   * Per entry: 1 applied, 0 older than the state held, or the error the script met applying it
   * (about that message, and it will not change on retry: rejected, so it is dead-lettered, with
   * the readings folded into it). Readings folded into an applied entry count as conflated; into a
   * stale one, as stale: they were older still.
   */
  private resultOf(entries: ApplyEntry[], results: unknown[]): WriteResult {
    const consumer = this.options.consumer;
    const rejected: SinkRejection[] = [];
    entries.forEach(({ content, folded }, i) => {
      const result = results[i];
      if (typeof result === 'string') {
        for (const seq of [content.seq, ...folded])
          rejected.push({ seq, reason: `monitor script failed: ${result}` });
        return;
      }
      const { kind } = content;
      if (kind === 'seen') return;
      if (result === 1) {
        this.applied.inc({ consumer, kind });
        if (folded.length > 0) this.conflated.inc({ consumer, kind }, folded.length);
      } else if (result === 0) this.stale.inc({ consumer, kind }, 1 + folded.length);
    });
    return { rejected };
  }

  /**
   * Marks silent units offline and resolves to how many; runs on its own timer, and is safe to run
   * from several monitors. The candidates are read first, so that the script is handed every key
   * it touches; it checks each again before it moves it.
   */
  async sweep(): Promise<number> {
    const client = this.client;
    if (this.sweeping || !client?.isReady || !this.sweepSha) return 0;
    this.sweeping = true;
    let total = 0;
    try {
      for (;;) {
        const settings = this.scriptSettings();
        const silentSince = settings.nowMs - settings.offlineAfterMs;
        const candidates = await client.zRangeByScore(this.keys.online, '-inf', `(${silentSince}`, {
          LIMIT: { offset: 0, count: SWEEP_LIMIT },
        });
        if (candidates.length === 0) break;
        total += (await client.evalSha(this.sweepSha, sweepCall(this.keys, settings, candidates))) as number;
        if (candidates.length < SWEEP_LIMIT) break;
      }
      if (total > 0) this.offline.inc({ consumer: this.options.consumer }, total);
    } catch (err) {
      if (isNoScript(err)) await this.loadScripts(client).catch(() => undefined);
      else this.options.log.debug({ err: describeError(err) }, 'offline sweep failed; next round will retry');
    } finally {
      this.sweeping = false;
    }
    return total;
  }

  async readiness(): Promise<Readiness> {
    if (!this.client?.isReady)
      return {
        ready: false,
        reasons: [
          `not connected to ${redactUrl(this.options.redisUrl)}${this.lastError ? `: ${this.lastError}` : ''}`,
        ],
      };
    try {
      await withTimeout(this.client.ping(), 2_000, () => {
        throw new Error('PING timed out');
      });
      return { ready: true };
    } catch (err) {
      return { ready: false, reasons: [describeError(err)] };
    }
  }

  async close(): Promise<void> {
    clearInterval(this.sweepTimer);
    const client = this.client;
    this.client = undefined;
    if (!client) return;
    // Every write already resolved: nothing to flush, drop the connection.
    client.destroy();
  }
}

function isNoScript(err: unknown): boolean {
  if (err instanceof MultiErrorReply)
    return err.replies.some((r) => /^NOSCRIPT/.test(String(r?.message ?? r)));
  return err instanceof Error && /^NOSCRIPT/.test(err.message);
}
