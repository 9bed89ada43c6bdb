/**
 * `switchyard console` as a service: connects to the hub and Redis with the consumers' settings,
 * refreshes the shared snapshot every `refreshIntervalMs` (one refresh whatever the number of
 * viewers), and serves the pages until SIGTERM.
 */
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import type { FastifyInstance } from 'fastify';
import { Histogram, type Registry } from 'prom-client';
import { createClient, type RedisClientType } from 'redis';
import { describeError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import { connectNats, natsAuthOf, natsInsecurities } from '../../lib/nats.ts';
import type { Readiness } from '../../lib/ops.ts';
import { redactUrl, redisClientOptions, redisInsecurities } from '../../lib/redis.ts';
import { requireSecure } from '../../lib/secure.ts';
import { runService } from '../../lib/service.ts';
import { waitUntil } from '../../lib/timers.ts';
import type { ConsoleConfig } from './config.ts';
import { readSiteSeries, type UnitSeries } from './series.ts';
import { buildConsoleServer, TtlCache } from './server.ts';
import { readSiteUnits, SnapshotSource, type UnitRow } from './snapshot.ts';

/** Why the console's settings are not safe to run with; empty when they are. */
export function consoleInsecurities(config: ConsoleConfig): string[] {
  const out = [...natsInsecurities(config.natsUrl, natsAuthOf(config)), ...redisInsecurities(config)];
  if (!config.consoleToken && !config.consoleBehindProxy)
    out.push('console: no token (set SWITCHYARD_CONSOLE_TOKEN or _FILE), and consoleBehindProxy is not set');
  return out;
}

/** Series reads are heavier than the snapshot: each site's chart is read at most this often (ms). */
const SERIES_TTL_MS = 30_000;
/** Sites whose units or chart are cached at once. */
const SITE_CACHE_ENTRIES = 200;

export interface RunningConsole {
  /** `http://host:port` the pages are served at. */
  url: string;
  readiness(): Promise<Readiness>;
  stop(): Promise<void>;
}

/** Connects, takes the first snapshot and listens; for the command and for tests. */
export async function startConsole(
  config: ConsoleConfig,
  context: { log: Logger; registry: Registry; signal?: AbortSignal },
): Promise<RunningConsole> {
  const { log, registry, signal } = context;
  let nc: NatsConnection | undefined;
  let redis: RedisClientType | undefined;
  let app: FastifyInstance | undefined;
  let timer: NodeJS.Timeout | undefined;
  try {
    nc = await connectHub(config, log, signal);
    const jsm = await jetstreamManager(nc, { timeout: 5_000 });
    let lastRedisError = '';
    redis = createClient({
      ...redisClientOptions(config),
      // A page shows what it could read: no queue of commands while Redis is away.
      disableOfflineQueue: true,
      socket: {
        ...redisClientOptions(config).socket,
        connectTimeout: 5_000,
        reconnectStrategy: (retries: number) => Math.min(100 * 2 ** retries, 5_000),
      },
    }) as RedisClientType;
    redis.on('error', (err: Error) => {
      if (err.message !== lastRedisError) log.warn({ err: err.message }, 'redis connection problem');
      lastRedisError = err.message;
    });
    // Not awaited: with Redis away the pages still show the hub's side, and say what is missing;
    // node-redis keeps reconnecting by itself.
    redis.connect().catch(() => undefined);
    const client = redis;
    // A moment for Redis, so that the first snapshot is usually whole.
    await waitUntil('redis', () => client.isReady, { timeoutMs: 2_000, everyMs: 50, signal }).catch(() =>
      signal?.throwIfAborted(),
    );
    const snapshots = new SnapshotSource({
      redis: client,
      nc,
      jsm,
      keyPrefix: config.redisKeyPrefix,
      stream: config.stream,
      dlqStream: config.dlqStream,
      staleAfterMs: config.staleAfterMs,
      lagWarnMessages: config.lagWarnMessages,
      countsIntervalMs: config.countsIntervalMs,
      deadLetterLimit: config.deadLetterLimit,
      log,
    });
    const refreshSeconds = new Histogram({
      name: 'switchyard_console_refresh_seconds',
      help: 'Time to take one shared snapshot (Redis, hub, dead letters)',
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [registry],
    });
    const refresh = async (): Promise<void> => {
      const end = refreshSeconds.startTimer();
      await snapshots.refresh().catch((err) => log.warn({ err: describeError(err) }, 'snapshot failed'));
      end();
    };
    await refresh();
    timer = setInterval(() => void refresh(), config.refreshIntervalMs);
    const units = new TtlCache<UnitRow[]>(config.refreshIntervalMs, SITE_CACHE_ENTRIES, (site) =>
      readSiteUnits(client, config.redisKeyPrefix, site),
    );
    const series = new TtlCache<UnitSeries[]>(
      Math.max(SERIES_TTL_MS, config.refreshIntervalMs),
      SITE_CACHE_ENTRIES,
      (site) => readSiteSeries(config, site, config.chartHours, Date.now()),
    );
    const natsConnection = nc;
    const readiness = async (): Promise<Readiness> => {
      const reasons: string[] = [];
      if (natsConnection.isClosed()) reasons.push('the hub connection is closed');
      if (!client.isReady) reasons.push(`redis at ${redactUrl(config.redisUrl)} is not connected`);
      const ageMs = Date.now() - snapshots.fleet.takenAtMs;
      if (ageMs > 3 * config.refreshIntervalMs)
        reasons.push(`the snapshot is ${Math.round(ageMs / 1000)} s old`);
      return reasons.length ? { ready: false, reasons } : { ready: true };
    };
    app = await buildConsoleServer({
      snapshots,
      siteUnits: (site) => units.get(site),
      siteSeries: (site) => series.get(site),
      token: config.consoleToken,
      refreshIntervalMs: config.refreshIntervalMs,
      chartHours: config.chartHours,
      registry,
      readiness,
      log,
    });
    await app.listen({ host: config.host, port: config.port });
    const address = app.server.address();
    const port = typeof address === 'object' && address ? address.port : config.port;
    const host = config.host.includes(':') ? `[${config.host}]` : config.host;
    const url = `http://${host}:${port}`;
    log.info({ url, auth: config.consoleToken ? 'token' : 'none' }, 'console listening');
    const server = app;
    return {
      url,
      readiness,
      stop: async () => {
        clearInterval(timer);
        await server.close();
        client.destroy();
        await natsConnection.close().catch(() => undefined);
      },
    };
  } catch (err) {
    clearInterval(timer);
    await app?.close().catch(() => undefined);
    redis?.destroy();
    await nc?.close().catch(() => undefined);
    throw err;
  }
}

/**
 * Connects to the hub, trying again until it answers or `signal` aborts (then rejects with its
 * reason), and saying now and then that it cannot reach it.
 */
function connectHub(config: ConsoleConfig, log: Logger, signal?: AbortSignal): Promise<NatsConnection> {
  return connectNats({
    url: config.natsUrl,
    name: 'switchyard-console',
    auth: natsAuthOf(config),
    connectTimeoutMs: 5_000,
    log,
    ...(signal ? { signal } : {}),
  });
}

/** Runs the console until SIGTERM/SIGINT. */
export function runConsoleService(config: ConsoleConfig): Promise<void> {
  return runService({
    name: 'switchyard-console',
    opsHost: config.opsHost,
    opsPort: config.opsPort,
    logLevel: config.logLevel,
    start: async ({ log, registry, signal }) => {
      requireSecure(consoleInsecurities(config), config.insecure, log);
      if (!config.consoleToken && config.consoleBehindProxy)
        log.info('no console token: the auth proxy in front decides who may look');
      try {
        const running = await startConsole(config, { log, registry, signal });
        return { readiness: () => running.readiness(), stop: () => running.stop() };
      } catch (err) {
        // Stopped while still waiting for the hub or Redis: a clean stop, nothing to release.
        if (signal.aborted) return { readiness: () => ({ ready: false }), stop: async () => undefined };
        throw err;
      }
    },
  });
}
