/** `stack up`: starts every server of a local stack, records it in `stack.json`, writes the env files. */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { OperatorStore } from '../cloud/accounts/operator-store.ts';
import { gatewayTrustLines, hubTrustLines } from '../cloud/accounts/server-config.ts';
import { UsageError } from '../lib/errors.ts';
import { freePort, isRunning } from '../lib/process.ts';
import { envFileText, LOCAL_STACK } from './env-vars.ts';
import { startServer, stopServer } from './server-process.ts';
import { prepareStackTrust, type StackTrust } from './trust.ts';
import { mosquittoSpec } from './mosquitto.ts';
import {
  findBinary,
  influxdbSpec,
  linkSpec,
  natsSpec,
  redisSpec,
  s3rverSpec,
  ServerRole,
  victoriaMetricsSpec,
  type ServerSpec,
} from './server-specs.ts';
import {
  MARKER_FILE,
  Stack,
  stackFilePath,
  tryReadStack,
  writeStackFile,
  type StackFile,
  type StackServer,
} from './stack-file.ts';

/** The most sites one local stack starts (each site is three processes). */
export const MAX_SITES = 50;

/** `up` was asked to start a stack in a DIR whose recorded servers still run. */
export class StackRunningError extends UsageError {
  override name = 'StackRunningError';
  constructor(readonly dir: string) {
    super(`a stack is already running in ${dir}: run 'switchyard stack down --dir ${dir}' first`);
  }
}

/** The site ids of a stack of `count` sites: `site-1 … site-N`. */
export const siteIds = (count: number): string[] => Array.from({ length: count }, (_, i) => `site-${i + 1}`);

export interface StackUpOptions {
  /** The stack's directory; created if missing. */
  dir: string;
  /** Number of sites, 1 … MAX_SITES; default 1. */
  sites?: number;
  /** How long each server may take to answer, in ms; default 30 000. */
  readyTimeoutMs?: number;
  /** Aborting stops every server started so far, and `stackUp` rejects. */
  signal?: AbortSignal;
  /** Called as each server answers, with the time since `up` began (ms). */
  onReady?: (server: StackServer, elapsedMs: number) => void;
}

/** Binaries the stack needs, checked before anything starts so a missing one leaves nothing behind. */
const BINARIES = ['nats-server', 'mosquitto', 'redis-server', 'victoria-metrics', 'influxd'] as const;

/** Free loopback ports, all distinct (two `freePort()` calls may hand out the same port). */
async function distinctPorts(count: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < count) ports.add(await freePort());
  return [...ports];
}

/** The specs of a whole stack, in start order within each group; writes each server's config. */
async function stackSpecs(
  dir: string,
  sites: string[],
  trust: StackTrust,
): Promise<{ shared: ServerSpec[]; siteNats: ServerSpec[] }> {
  const ports = await distinctPorts(8 + sites.length * 4);
  const port = (): number => ports.pop()!;
  const hubLeafPort = port();
  const store = await OperatorStore.open(trust.operatorDir);
  const shared: ServerSpec[] = [
    natsSpec({
      name: 'hub',
      role: ServerRole.hubNats,
      dir: join(dir, 'hub'),
      port: port(),
      monitorPort: port(),
      domain: 'hub',
      leafListenPort: hubLeafPort,
      trust: hubTrustLines(store, join(dir, 'hub', 'jwt')),
      tls: trust.hubCert,
      leafTls: { ...trust.hubCert, ca: trust.caFile, verify: true },
    }),
    redisSpec({
      name: 'redis',
      dir: join(dir, 'redis'),
      port: port(),
      acl: { user: trust.redisUser, passwordFile: trust.redisPasswordFile },
    }),
    victoriaMetricsSpec({ name: 'victoria-metrics', dir: join(dir, 'victoria-metrics'), port: port() }),
    influxdbSpec({ name: 'influxdb', dir: join(dir, 'influxdb'), port: port(), rpcPort: port() }),
    s3rverSpec({ name: 's3', dir: join(dir, 's3'), port: port(), buckets: [LOCAL_STACK.s3Bucket] }),
  ];
  const siteNats: ServerSpec[] = [];
  for (const site of sites) {
    const linkPort = port();
    shared.push(
      linkSpec({
        name: `link-${site}`,
        site,
        dir: join(dir, `link-${site}`),
        port: linkPort,
        target: `127.0.0.1:${hubLeafPort}`,
      }),
      mosquittoSpec({ name: `mqtt-${site}`, site, dir: join(dir, `mqtt-${site}`), port: port() }),
    );
    siteNats.push(
      natsSpec({
        name: site,
        role: ServerRole.siteNats,
        site,
        dir: join(dir, site),
        port: port(),
        monitorPort: port(),
        domain: site,
        leafRemoteUrl: `nats-leaf://127.0.0.1:${linkPort}`,
        trust: gatewayTrustLines(store, site),
        leafRemote: {
          credentials: trust.sites[site]!.leafCreds,
          account: store.siteLocalAccount(site).publicKey,
          tls: { ca: trust.caFile, ...trust.sites[site]!.leafCert },
        },
      }),
    );
  }
  return { shared, siteNats };
}

/**
 * Starts a whole stack in DIR and resolves once every server answers (each site's leaf link to the
 * hub included), with `stack.json` and the env files written.
 *
 * Servers that do not depend on each other start in parallel; a site's nats-server starts once the
 * hub and the site's link answer. Throws StackRunningError when DIR's recorded servers still run,
 * MissingBinaryError (before starting anything) when a server is not installed; when a server fails
 * to start, stops every server started so far and removes `stack.json` before rethrowing.
 */
export async function stackUp(options: StackUpOptions): Promise<Stack> {
  const started = Date.now();
  const dir = resolve(options.dir);
  const siteCount = options.sites ?? 1;
  if (!Number.isInteger(siteCount) || siteCount < 1 || siteCount > MAX_SITES)
    throw new UsageError(`sites must be a whole number from 1 to ${MAX_SITES}, not ${siteCount}`);
  const sites = siteIds(siteCount);
  const previous = tryReadStack(dir);
  if (previous?.servers.some(isRunning)) throw new StackRunningError(dir);
  for (const binary of BINARIES) findBinary(binary);

  mkdirSync(dir, { recursive: true });
  const trust = await prepareStackTrust(dir, sites);
  const { shared, siteNats } = await stackSpecs(dir, sites, trust);
  writeFileSync(join(dir, MARKER_FILE), 'A Switchyard local stack: see docs/stack.md\n');
  rmSync(join(dir, 'env'), { recursive: true, force: true });
  const file: StackFile = {
    version: 1,
    state: 'starting',
    createdAt: new Date().toISOString(),
    sites,
    trust,
    servers: [],
  };
  writeStackFile(dir, file);

  // stack.json lists the hub, then each site's servers, then the cloud's stores.
  const order = ['hub', ...sites.flatMap((site) => [site, `mqtt-${site}`, `link-${site}`])];
  const rank = (name: string): number => (order.includes(name) ? order.indexOf(name) : order.length);
  const record = (server: StackServer): void => {
    const others = file.servers.filter((s) => s.name !== server.name);
    file.servers = [...others, server].sort((a, b) => rank(a.name) - rank(b.name));
    writeStackFile(dir, file);
  };
  // Abort: stop what runs now, which makes each pending start fail fast.
  const onAbort = (): void => {
    for (const s of file.servers) if (isRunning(s)) process.kill(s.pid, 'SIGTERM');
  };
  options.signal?.addEventListener('abort', onAbort, { once: true });

  const start = async (spec: ServerSpec): Promise<StackServer> => {
    if (options.signal?.aborted) throw new Error(`stopped before ${spec.name} started`);
    const running = await startServer(spec, {
      detached: true,
      readyTimeoutMs: options.readyTimeoutMs ?? 30_000,
      onSpawn: record,
    });
    const server = file.servers.find((s) => s.name === spec.name) ?? running;
    options.onReady?.(server, Date.now() - started);
    return server;
  };
  const first = new Map(shared.map((spec) => [spec.name, start(spec)]));
  const starts = [...first.values()];
  for (const spec of siteNats)
    starts.push(Promise.all([first.get('hub')!, first.get(`link-${spec.site}`)!]).then(() => start(spec)));

  // The first failure in time is the cause; later ones are mostly servers that waited on it.
  let firstFailure: unknown;
  const results = await Promise.allSettled(
    starts.map((p) =>
      p.catch((err: unknown) => {
        firstFailure ??= err;
        throw err;
      }),
    ),
  );
  options.signal?.removeEventListener('abort', onAbort);
  const failed = results.some((r) => r.status === 'rejected');
  if (failed || options.signal?.aborted) {
    await Promise.all(file.servers.map((s) => (isRunning(s) ? stopServer(s, 5000) : undefined)));
    rmSync(stackFilePath(dir), { force: true });
    if (options.signal?.aborted) throw new Error('stack up was interrupted: stopped every server it started');
    throw new Error('stack up failed (stopped every server it started)', { cause: firstFailure });
  }

  file.state = 'up';
  writeStackFile(dir, file);
  const stack = new Stack(dir, file);
  writeEnvFiles(stack);
  return stack;
}

/** Writes `DIR/env/<site>.env` for every site and `DIR/env/cloud.env`. */
export function writeEnvFiles(stack: Stack): void {
  mkdirSync(join(stack.dir, 'env'), { recursive: true });
  for (const site of stack.sites) writeFileSync(stack.envFile(site), envFileText(stack.siteSettings(site)));
  writeFileSync(stack.envFile(), envFileText(stack.cloudSettings()));
}
