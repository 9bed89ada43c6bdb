/**
 * The local stack: every server Switchyard talks to, as real processes on loopback, described by
 * one file (`DIR/stack.json`) that any later process can read to find, stop, kill, restart or cut
 * them. `switchyard stack …` is a thin CLI over this module; `npm run dev` and the benchmarks call
 * it in-process.
 *
 * Layout of DIR: `stack.json`, `env/<site>.env`, `env/cloud.env`, and one directory per server
 * (`hub/`, `site-1/`, `mqtt-site-1/`, `link-site-1/`, `redis/`, …) with its config, `data/` and log.
 * Servers are started detached: they outlive the process that started them, and are stopped only
 * by the PIDs recorded here.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { UsageError } from '../lib/errors.ts';
import { sleep } from '../lib/timers.ts';
import { envFileText, LOCAL_STACK, toEnv, type CloudSettings, type SiteSettings } from './env-vars.ts';
import { siteLeafConnected } from './leafz.ts';
import {
  findBinary,
  freePort,
  influxdbSpec,
  isReady,
  isRunning,
  killServer,
  linkSpec,
  mosquittoSpec,
  natsSpec,
  redisSpec,
  s3rverSpec,
  ServerRole,
  startServer,
  stopServer,
  victoriaMetricsSpec,
  type RunningServer,
  type ServerSpec,
} from './servers.ts';

/** Where `switchyard stack` keeps a stack unless told otherwise (relative to the working dir). */
export const DEFAULT_STACK_DIR = '.switchyard/stack';
/** The record of a stack, inside its DIR. */
export const STACK_FILE = 'stack.json';
/** Written by `up`: marks DIR as a stack's own, so that `down --purge` may delete it whole. */
const MARKER_FILE = '.switchyard-stack';
/** The most sites one local stack starts (each site is three processes). */
export const MAX_SITES = 50;

/** A server of the stack: its full spec (so it can be started again), PID and process identity. */
export type StackServer = RunningServer;

/** The content of `DIR/stack.json`. */
export interface StackFile {
  version: 1;
  /** `starting` while `up` runs (servers are recorded as they spawn), `up` once all answered. */
  state: 'starting' | 'up';
  /** ISO-8601 time `up` began. */
  createdAt: string;
  sites: string[];
  servers: StackServer[];
}

/** What `status` reports of one server. */
export const ServerState = {
  /** The process runs and answers its own protocol. */
  up: 'up',
  /** The process is gone, or does not answer. */
  down: 'down',
  /** A link whose process runs, cut on purpose (`cut-link`). */
  cut: 'cut',
} as const;
export type ServerState = (typeof ServerState)[keyof typeof ServerState];

export interface ServerStatus {
  name: string;
  role: ServerSpec['role'];
  site?: string;
  pid: number;
  url: string;
  state: ServerState;
  /** A site nats-server: whether its leaf connection to the hub is up. */
  leaf?: 'up' | 'down';
}

export interface StackStatus {
  dir: string;
  servers: ServerStatus[];
  /** True when no server is down (a deliberately cut link counts as running). */
  allUp: boolean;
}

/** `up` was asked to start a stack in a DIR whose recorded servers still run. */
export class StackRunningError extends UsageError {
  override name = 'StackRunningError';
  constructor(readonly dir: string) {
    super(`a stack is already running in ${dir}: run 'switchyard stack down --dir ${dir}' first`);
  }
}

/** There is no `stack.json` in DIR. */
export class NoStackError extends UsageError {
  override name = 'NoStackError';
  constructor(readonly dir: string) {
    super(`no stack in ${dir}: run 'switchyard stack up --dir ${dir}' first`);
  }
}

/** The site ids of a stack of `count` sites: `site-1 … site-N`. */
export const siteIds = (count: number): string[] => Array.from({ length: count }, (_, i) => `site-${i + 1}`);

/** A stack read from its `stack.json`, with lookups by name, role and site. */
export class Stack {
  /** Absolute path of the stack's DIR. */
  readonly dir: string;
  readonly file: StackFile;

  constructor(dir: string, file: StackFile) {
    this.dir = resolve(dir);
    this.file = file;
  }

  get servers(): readonly StackServer[] {
    return this.file.servers;
  }

  get sites(): readonly string[] {
    return this.file.sites;
  }

  /** The server called `name`; a UsageError listing the names there are otherwise. */
  server(name: string): StackServer {
    const found = this.servers.find((s) => s.name === name);
    if (!found)
      throw new UsageError(
        `no server "${name}" in the stack in ${this.dir}: one of ${this.servers.map((s) => s.name).join(', ')}`,
      );
    return found;
  }

  /** Every server of `role`, only those of `site` when given. */
  byRole(role: ServerSpec['role'], site?: string): StackServer[] {
    return this.servers.filter((s) => s.role === role && (site === undefined || s.site === site));
  }

  /** Every server of one site (its nats-server, mosquitto and link). */
  bySite(site: string): StackServer[] {
    return this.servers.filter((s) => s.site === site);
  }

  /** The one server of `role` (of `site`); throws if the stack has none. */
  one(role: ServerSpec['role'], site?: string): StackServer {
    const found = this.byRole(role, site)[0];
    if (!found) throw new UsageError(`the stack in ${this.dir} has no ${role}${site ? ` for ${site}` : ''}`);
    return found;
  }

  /** Throws a UsageError unless `site` is one of the stack's sites. */
  checkSite(site: string): void {
    if (!this.sites.includes(site))
      throw new UsageError(`no site "${site}" in the stack in ${this.dir}: one of ${this.sites.join(', ')}`);
  }

  get hub(): StackServer {
    return this.one(ServerRole.hubNats);
  }
  siteNats(site: string): StackServer {
    return this.one(ServerRole.siteNats, site);
  }
  mqtt(site: string): StackServer {
    return this.one(ServerRole.siteMqtt, site);
  }
  link(site: string): StackServer {
    return this.one(ServerRole.link, site);
  }
  get redis(): StackServer {
    return this.one(ServerRole.redis);
  }
  get victoriaMetrics(): StackServer {
    return this.one(ServerRole.victoriaMetrics);
  }
  get influxdb(): StackServer {
    return this.one(ServerRole.influxdb);
  }
  get s3(): StackServer {
    return this.one(ServerRole.s3);
  }

  /** The settings of a site's edge processes (what `DIR/env/<site>.env` holds). */
  siteSettings(site: string): SiteSettings {
    this.checkSite(site);
    return {
      site,
      mqttUrl: this.mqtt(site).url,
      natsUrl: this.siteNats(site).url,
      hubNatsUrl: this.hub.url,
    };
  }

  /** The settings of the cloud consumers (what `DIR/env/cloud.env` holds). */
  cloudSettings(): CloudSettings {
    return {
      natsUrl: this.hub.url,
      redisUrl: this.redis.url,
      s3Endpoint: this.s3.url,
      s3Bucket: LOCAL_STACK.s3Bucket,
      s3Region: LOCAL_STACK.s3Region,
      s3AccessKeyId: LOCAL_STACK.s3AccessKeyId,
      s3SecretAccessKey: LOCAL_STACK.s3SecretAccessKey,
      influx2Url: this.victoriaMetrics.url,
      influx2Org: LOCAL_STACK.influx2Org,
      influx2Bucket: LOCAL_STACK.influx2Bucket,
      influx2Token: LOCAL_STACK.influx2Token,
      influx1Url: this.influxdb.url,
      influx1Database: LOCAL_STACK.influx1Database,
      sink: LOCAL_STACK.sink,
    };
  }

  /** `SWITCHYARD_*` variables of a site's processes, for a child process's environment. */
  siteEnv(site: string): Record<string, string> {
    return toEnv(this.siteSettings(site));
  }

  /** `SWITCHYARD_*` variables of the cloud consumers, for a child process's environment. */
  cloudEnv(): Record<string, string> {
    return toEnv(this.cloudSettings());
  }

  /** Path of a site's env file, or of `cloud.env` when `site` is omitted. */
  envFile(site?: string): string {
    return join(this.dir, 'env', `${site ?? 'cloud'}.env`);
  }
}

// ---------------------------------------------------------------------------------------------
// stack.json

const stackFilePath = (dir: string): string => join(resolve(dir), STACK_FILE);

function writeStackFile(dir: string, file: StackFile): void {
  // Through a rename, so that a reader never sees half a file.
  const path = stackFilePath(dir);
  writeFileSync(`${path}.tmp`, `${JSON.stringify(file, null, 2)}\n`);
  renameSync(`${path}.tmp`, path);
}

/** The stack recorded in DIR, or undefined when DIR has no `stack.json`. */
export function tryReadStack(dir: string): Stack | undefined {
  const path = stackFilePath(dir);
  if (!existsSync(path)) return undefined;
  let file: StackFile;
  try {
    file = JSON.parse(readFileSync(path, 'utf8')) as StackFile;
  } catch (err) {
    throw new UsageError(`${path} is not a stack record (${(err as Error).message}): remove it`);
  }
  if (file.version !== 1 || !Array.isArray(file.servers))
    throw new UsageError(`${path} is not a stack record of this version: remove it`);
  return new Stack(dir, file);
}

/** The stack recorded in DIR; NoStackError (exit 2) when there is none. */
export function readStack(dir: string): Stack {
  const stack = tryReadStack(dir);
  if (!stack) throw new NoStackError(resolve(dir));
  return stack;
}

/** Replaces one server's record (matched by name) in DIR's `stack.json`, re-reading it first. */
function updateServer(dir: string, server: StackServer): Stack {
  const stack = readStack(dir);
  const servers = stack.servers.map((s) => (s.name === server.name ? server : s));
  const file = { ...stack.file, servers };
  writeStackFile(dir, file);
  return new Stack(dir, file);
}

// ---------------------------------------------------------------------------------------------
// up

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
): Promise<{ shared: ServerSpec[]; siteNats: ServerSpec[] }> {
  const ports = await distinctPorts(8 + sites.length * 4);
  const port = (): number => ports.pop()!;
  const hubLeafPort = port();
  const shared: ServerSpec[] = [
    natsSpec({
      name: 'hub',
      role: ServerRole.hubNats,
      dir: join(dir, 'hub'),
      port: port(),
      monitorPort: port(),
      domain: 'hub',
      leafListenPort: hubLeafPort,
    }),
    redisSpec({ name: 'redis', dir: join(dir, 'redis'), port: port() }),
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
  const { shared, siteNats } = await stackSpecs(dir, sites);
  writeFileSync(join(dir, MARKER_FILE), 'A Switchyard local stack: see docs/stack.md\n');
  rmSync(join(dir, 'env'), { recursive: true, force: true });
  const file: StackFile = {
    version: 1,
    state: 'starting',
    createdAt: new Date().toISOString(),
    sites,
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

// ---------------------------------------------------------------------------------------------
// down, status, kill, restart

export interface StackDownOptions {
  /** Also delete DIR with every server's data; default false (data is kept for the next `up`). */
  purge?: boolean;
  /** How long each server may take to exit on SIGTERM before SIGKILL, in ms; default 10 000. */
  graceMs?: number;
}

export interface StackDownResult {
  /** Names of the servers that were running and are now stopped. */
  stopped: string[];
  /** Whether DIR was deleted. */
  purged: boolean;
}

/**
 * Stops exactly the processes `stack.json` records (SIGTERM, then SIGKILL after `graceMs`), then
 * removes `stack.json` and the env files. With `purge`, deletes DIR too, but only if `up` made it
 * a stack's directory. Without a `stack.json` there is nothing to stop: resolves with none stopped.
 */
export async function stackDown(dir: string, options: StackDownOptions = {}): Promise<StackDownResult> {
  const abs = resolve(dir);
  const stack = tryReadStack(abs);
  const stopped: string[] = [];
  if (stack) {
    await Promise.all(
      stack.servers.map(async (server) => {
        if (!isRunning(server)) return;
        await stopServer(server, options.graceMs ?? 10_000);
        stopped.push(server.name);
      }),
    );
    rmSync(stackFilePath(abs), { force: true });
    rmSync(join(abs, 'env'), { recursive: true, force: true });
  }
  let purged = false;
  if (options.purge && existsSync(join(abs, MARKER_FILE))) {
    rmSync(abs, { recursive: true, force: true });
    purged = true;
  }
  return { stopped, purged };
}

async function linkState(link: StackServer): Promise<'up' | 'cut' | undefined> {
  try {
    const text = readFileSync(join(link.dataDir, 'link.state'), 'utf8').trim();
    return text === 'cut' ? 'cut' : text === 'up' ? 'up' : undefined;
  } catch {
    return undefined;
  }
}

/** Probes one server: is its process the recorded one, and does it answer its own protocol? */
export async function serverStatus(stack: Stack, server: StackServer): Promise<ServerStatus> {
  const base = {
    name: server.name,
    role: server.role,
    ...(server.site ? { site: server.site } : {}),
    pid: server.pid,
    url: server.url,
  };
  if (!isRunning(server)) return { ...base, state: ServerState.down };
  if (server.role === ServerRole.link && (await linkState(server)) === 'cut')
    return { ...base, state: ServerState.cut };
  if (server.role === ServerRole.siteNats) {
    // Whether the server answers, and separately whether its leaf is up: a cut link is not a down site.
    const up = await isReady({ ...server, waitForLeaf: false });
    if (!up) return { ...base, state: ServerState.down };
    const leaf = await isReady(server);
    return { ...base, state: ServerState.up, leaf: leaf ? 'up' : 'down' };
  }
  return { ...base, state: (await isReady(server)) ? ServerState.up : ServerState.down };
}

/** Probes every server of the stack in DIR, in parallel. */
export async function stackStatus(dir: string): Promise<StackStatus> {
  const stack = readStack(dir);
  const servers = await Promise.all(stack.servers.map((s) => serverStatus(stack, s)));
  return { dir: stack.dir, servers, allUp: servers.every((s) => s.state !== ServerState.down) };
}

/**
 * SIGKILLs one server of the stack in DIR (a crash, not a clean stop) and resolves once it is gone.
 * `stack.json` keeps its record, so `status` shows it down and `restart` brings it back.
 */
export async function killServerByName(dir: string, name: string): Promise<StackServer> {
  const server = readStack(dir).server(name);
  if (isRunning(server)) await killServer(server);
  return server;
}

export interface RestartOptions {
  /** How long the server may take to answer, in ms; default 30 000. */
  readyTimeoutMs?: number;
  /** How long a running server may take to exit on SIGTERM, in ms; default 10 000. */
  graceMs?: number;
}

/**
 * Starts one server of the stack in DIR again from its recorded spec (same command, port and data)
 * and records its new PID. A server that still runs is stopped first (SIGTERM). A site nats-server
 * is awaited with its leaf link only when the hub answers and the site's link is not cut.
 */
export async function restartServerByName(
  dir: string,
  name: string,
  options: RestartOptions = {},
): Promise<StackServer> {
  const stack = readStack(dir);
  const server = stack.server(name);
  if (isRunning(server)) await stopServer(server, options.graceMs ?? 10_000);
  const { pid: _pid, startTicks: _ticks, ...spec } = server;
  let waitForLeaf = spec.waitForLeaf;
  if (waitForLeaf && spec.site) {
    const link = stack.link(spec.site);
    const hub = stack.hub;
    waitForLeaf =
      isRunning(link) && (await linkState(link)) !== 'cut' && isRunning(hub) && (await isReady(hub));
  }
  const running = await startServer(
    { ...spec, ...(waitForLeaf !== undefined ? { waitForLeaf } : {}) },
    { detached: true, readyTimeoutMs: options.readyTimeoutMs ?? 30_000 },
  );
  // Record the spec as it was (a site still waits for its leaf on the next restart).
  const { pid, startTicks } = running;
  const restarted: StackServer = { ...spec, pid, ...(startTicks !== undefined ? { startTicks } : {}) };
  updateServer(dir, restarted);
  return restarted;
}

// ---------------------------------------------------------------------------------------------
// Links

export interface LinkOptions {
  /** How long to wait for the hub to see the site's leaf gone (cut) or back (heal), in ms. */
  timeoutMs?: number;
}

export interface LinkResult {
  site: string;
  /** How long the hub took to see the change, in ms. */
  elapsedMs: number;
}

async function waitUntil(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

function runningLink(stack: Stack, site: string): StackServer {
  stack.checkSite(site);
  const link = stack.link(site);
  if (!isRunning(link))
    throw new UsageError(
      `${link.name} is not running: start it with 'switchyard stack restart ${link.name} --dir ${stack.dir}'`,
    );
  return link;
}

/**
 * Cuts a site's uplink (SIGUSR1 to its link: every connection dropped, new ones refused) and
 * resolves once the hub's `/leafz` no longer shows the site. When the hub does not answer, resolves
 * once the link reports itself cut.
 */
export async function cutLink(dir: string, site: string, options: LinkOptions = {}): Promise<LinkResult> {
  const stack = readStack(dir);
  const link = runningLink(stack, site);
  const started = Date.now();
  process.kill(link.pid, 'SIGUSR1');
  const hubMonitor = stack.hub.monitorUrl!;
  await waitUntil(
    `the hub to drop ${site}'s leaf`,
    async () => (await linkState(link)) === 'cut' && (await siteLeafConnected(hubMonitor, site)) !== true,
    options.timeoutMs ?? 15_000,
  );
  return { site, elapsedMs: Date.now() - started };
}

/**
 * Heals a site's uplink (SIGUSR2 to its link) and resolves once the hub's `/leafz` shows the site
 * again (nats-server 2.9 reconnects within about 1–2 s). When the hub or the site's nats-server is
 * not running, resolves once the link accepts connections again.
 */
export async function healLink(dir: string, site: string, options: LinkOptions = {}): Promise<LinkResult> {
  const stack = readStack(dir);
  const link = runningLink(stack, site);
  const started = Date.now();
  process.kill(link.pid, 'SIGUSR2');
  const hub = stack.hub;
  const expectLeaf = isRunning(hub) && isRunning(stack.siteNats(site));
  await waitUntil(
    expectLeaf ? `${site}'s leaf to reach the hub again` : `${link.name} to accept connections`,
    async () =>
      (await linkState(link)) === 'up' &&
      (expectLeaf ? (await siteLeafConnected(hub.monitorUrl!, site)) === true : await isReady(link)),
    options.timeoutMs ?? 20_000,
  );
  return { site, elapsedMs: Date.now() - started };
}
