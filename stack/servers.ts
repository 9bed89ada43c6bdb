/**
 * Real servers as child processes on loopback: how to start each one (a `ServerSpec`), how to tell
 * it is ready, and how to stop it by PID. The local stack, the tests and the benchmarks all start
 * their servers through this module, so they exercise exactly the same processes.
 *
 * A spec is plain data (command, args, ports, paths) so that `stack restart NAME` can start a server
 * again from what `stack.json` recorded, on the same port and data.
 */
import { spawn } from 'node:child_process';
import {
  accessSync,
  closeSync,
  constants,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { createServer, connect } from 'node:net';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { dyingWithParent } from '../lib/child-process.ts';
import { binOverride } from '../lib/env.ts';
import { sleep } from '../lib/timers.ts';
import { repairS3rverStore } from './s3rver-store.ts';

export const ServerRole = {
  hubNats: 'hub-nats',
  siteNats: 'site-nats',
  siteMqtt: 'site-mqtt',
  link: 'link',
  redis: 'redis',
  victoriaMetrics: 'victoria-metrics',
  influxdb: 'influxdb',
  s3: 's3',
} as const;
export type ServerRole = (typeof ServerRole)[keyof typeof ServerRole];

/** Everything needed to start a server, and to start it again on the same port and data. */
export interface ServerSpec {
  name: string;
  role: ServerRole;
  site?: string;
  command: string;
  args: string[];
  /** Client URL (nats://, mqtt://, redis://, http://, tcp:// for a link). */
  url: string;
  /** nats-server's HTTP monitor. */
  monitorUrl?: string;
  /** nats-server's own MQTT listener, when it has one. */
  mqttUrl?: string;
  dataDir: string;
  logFile: string;
  /** For a link: where it forwards to. */
  target?: string;
  /** For a site nats-server: it is ready only once its leaf link to the hub is up. */
  waitForLeaf?: boolean;
}

/** A running server: its spec and PID. */
export interface RunningServer extends ServerSpec {
  pid: number;
  /**
   * Start time of the process in clock ticks since boot (`/proc/PID/stat`, field 22). A PID is
   * reused once its process is gone (pid_max is 32,768 here); this tells the process that was
   * started from a stranger, so that stopping a server never signals a process it did not start.
   */
  startTicks?: number;
}

/** The Debian package that brings each binary, for a clear message when one is missing. */
const PACKAGE_OF: Record<string, string> = {
  'nats-server': 'nats-server',
  mosquitto: 'mosquitto',
  'redis-server': 'redis-server',
  'victoria-metrics': 'victoria-metrics',
  influxd: 'influxdb',
};
const SEARCH_PATH = ['/usr/sbin', '/usr/bin', '/usr/local/bin', '/usr/local/sbin', '/sbin', '/bin'];

export class MissingBinaryError extends Error {
  override name = 'MissingBinaryError';
}

/** Absolute path of a server binary, or a MissingBinaryError naming the install command. */
export function findBinary(name: string): string {
  const pkg = PACKAGE_OF[name] ?? name;
  const install = `run 'bash scripts/install-servers.sh' (or 'apt-get install -y ${pkg}')`;
  const override = binOverride(name);
  if (override) {
    // Checked here, not left to spawn: an ENOENT from a half-started stack is far less clear.
    if (isExecutable(override)) return override;
    throw new MissingBinaryError(
      `${name} is not installed at ${override} (set by the environment): ${install}`,
    );
  }
  for (const dir of SEARCH_PATH) {
    const path = join(dir, name);
    if (existsSync(path)) return path;
  }
  throw new MissingBinaryError(`${name} is not installed: ${install}`);
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/** A TCP port that is free on 127.0.0.1 right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      srv.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}

const HOST = '127.0.0.1';

function prepare(dataDir: string, logDir: string): void {
  mkdirSync(dataDir, { recursive: true });
  mkdirSync(logDir, { recursive: true });
}

export interface NatsOptions {
  name: string;
  role: typeof ServerRole.hubNats | typeof ServerRole.siteNats;
  site?: string;
  /** Directory for this server's config, data and log. */
  dir: string;
  port: number;
  monitorPort: number;
  /** JetStream domain: `hub` for the hub, the site id for a site. */
  domain: string;
  /** Hub: the port leaf nodes connect to. */
  leafListenPort?: number;
  /** Site: the hub's leaf URL (through the link, so it can be cut). */
  leafRemoteUrl?: string;
  /** MQTT listener port (only for the benchmark of nats-server's own MQTT). */
  mqttPort?: number;
  maxFileStoreBytes?: number;
}

/** A nats-server with JetStream in its own domain, optionally a leaf node hub or remote. */
export function natsSpec(o: NatsOptions): ServerSpec {
  const dataDir = join(o.dir, 'data');
  prepare(dataDir, o.dir);
  const lines = [
    `server_name: ${JSON.stringify(o.name)}`,
    `listen: "${HOST}:${o.port}"`,
    `http: "${HOST}:${o.monitorPort}"`,
    `max_payload: 1048576`,
    `jetstream {`,
    `  store_dir: ${JSON.stringify(dataDir)}`,
    `  domain: ${JSON.stringify(o.domain)}`,
    `  max_memory_store: 268435456`,
    `  max_file_store: ${o.maxFileStoreBytes ?? 10737418240}`,
    `}`,
  ];
  if (o.leafListenPort !== undefined) {
    // A leaf remote adds the address the hub advertises to its reconnect list; on 2.9 no_advertise
    // does not stop that. Advertising a refused address keeps every site on its own (cuttable) link.
    lines.push(`leafnodes {`, `  listen: "${HOST}:${o.leafListenPort}"`, `  advertise: "${HOST}:1"`, `}`);
  }
  if (o.leafRemoteUrl !== undefined) {
    lines.push(
      `leafnodes {`,
      `  reconnect: 1`,
      `  remotes: [ { url: ${JSON.stringify(o.leafRemoteUrl)} } ]`,
      `}`,
    );
  }
  if (o.mqttPort !== undefined) lines.push(`mqtt {`, `  listen: "${HOST}:${o.mqttPort}"`, `}`);
  const configFile = join(o.dir, 'nats-server.conf');
  writeFileSync(configFile, `${lines.join('\n')}\n`);
  return {
    name: o.name,
    role: o.role,
    ...(o.site ? { site: o.site } : {}),
    command: findBinary('nats-server'),
    args: ['-c', configFile],
    url: `nats://${HOST}:${o.port}`,
    monitorUrl: `http://${HOST}:${o.monitorPort}`,
    ...(o.mqttPort !== undefined ? { mqttUrl: `mqtt://${HOST}:${o.mqttPort}` } : {}),
    dataDir,
    logFile: join(o.dir, 'nats-server.log'),
    ...(o.leafRemoteUrl ? { waitForLeaf: true } : {}),
  };
}

export interface MosquittoOptions {
  name: string;
  site?: string;
  dir: string;
  port: number;
}

/** A mosquitto broker with persistence (queued QoS 1 messages of persistent sessions survive). */
export function mosquittoSpec(o: MosquittoOptions): ServerSpec {
  const dataDir = join(o.dir, 'data');
  prepare(dataDir, o.dir);
  const configFile = join(o.dir, 'mosquitto.conf');
  writeFileSync(
    configFile,
    [
      // As root mosquitto drops to user "mosquitto"; stay root so it can write the dirs it was given.
      `user root`,
      `listener ${o.port} ${HOST}`,
      `allow_anonymous true`,
      `persistence true`,
      `persistence_location ${dataDir}/`,
      `autosave_interval 5`,
      // A site keeps queueing for the bridge while it is down: well above the default of 1000.
      `max_queued_messages 1000000`,
      // The bridge acks in a window; the default of 20 in flight per client would throttle it.
      `max_inflight_messages 1000`,
      `log_dest stdout`,
      `log_type error`,
      `log_type warning`,
      '',
    ].join('\n'),
  );
  return {
    name: o.name,
    role: ServerRole.siteMqtt,
    ...(o.site ? { site: o.site } : {}),
    command: findBinary('mosquitto'),
    args: ['-c', configFile],
    url: `mqtt://${HOST}:${o.port}`,
    dataDir,
    logFile: join(o.dir, 'mosquitto.log'),
  };
}

/** Redis with an append-only file, so a killed Redis comes back with the state it acknowledged. */
export function redisSpec(o: { name: string; dir: string; port: number }): ServerSpec {
  const dataDir = join(o.dir, 'data');
  prepare(dataDir, o.dir);
  return {
    name: o.name,
    role: ServerRole.redis,
    command: findBinary('redis-server'),
    args: [
      '--bind',
      HOST,
      '--port',
      String(o.port),
      '--save',
      '',
      '--appendonly',
      'yes',
      '--appendfsync',
      'everysec',
      '--dir',
      dataDir,
      '--protected-mode',
      'no',
    ],
    url: `redis://${HOST}:${o.port}`,
    dataDir,
    logFile: join(o.dir, 'redis.log'),
  };
}

/** VictoriaMetrics: speaks the InfluxDB v2 write API; deduplicates replayed points. */
export function victoriaMetricsSpec(o: { name: string; dir: string; port: number }): ServerSpec {
  const dataDir = join(o.dir, 'data');
  prepare(dataDir, o.dir);
  return {
    name: o.name,
    role: ServerRole.victoriaMetrics,
    command: findBinary('victoria-metrics'),
    args: [
      `-storageDataPath=${dataDir}`,
      `-httpListenAddr=${HOST}:${o.port}`,
      '-search.latencyOffset=1s',
      '-dedup.minScrapeInterval=1ms',
      '-loggerLevel=WARN',
    ],
    url: `http://${HOST}:${o.port}`,
    dataDir,
    logFile: join(o.dir, 'victoria-metrics.log'),
  };
}

/** InfluxDB 1.x (the old engine of an engine swap): v1 `/write` and InfluxQL `/query`. */
export function influxdbSpec(o: { name: string; dir: string; port: number; rpcPort: number }): ServerSpec {
  const dataDir = join(o.dir, 'data');
  prepare(dataDir, o.dir);
  const configFile = join(o.dir, 'influxdb.conf');
  writeFileSync(
    configFile,
    [
      'reporting-disabled = true',
      `bind-address = "${HOST}:${o.rpcPort}"`,
      '[meta]',
      `  dir = "${join(dataDir, 'meta')}"`,
      '[data]',
      `  dir = "${join(dataDir, 'data')}"`,
      `  wal-dir = "${join(dataDir, 'wal')}"`,
      '  query-log-enabled = false',
      '[http]',
      `  bind-address = "${HOST}:${o.port}"`,
      '  log-enabled = false',
      '[monitor]',
      '  store-enabled = false',
      '[continuous_queries]',
      '  enabled = false',
      '',
    ].join('\n'),
  );
  return {
    name: o.name,
    role: ServerRole.influxdb,
    command: findBinary('influxd'),
    args: ['run', '-config', configFile],
    url: `http://${HOST}:${o.port}`,
    dataDir,
    logFile: join(o.dir, 'influxdb.log'),
  };
}

/** Path of s3rver's CLI inside node_modules. */
function s3rverScript(): string {
  try {
    return createRequire(import.meta.url).resolve('s3rver/bin/s3rver.js');
  } catch {
    throw new MissingBinaryError("s3rver is not installed: run 'npm install' in the Switchyard checkout");
  }
}

/** s3rver with `buckets` created at start. Keys S3RVER/S3RVER, region us-east-1. */
export function s3rverSpec(o: { name: string; dir: string; port: number; buckets: string[] }): ServerSpec {
  const dataDir = join(o.dir, 'data');
  prepare(dataDir, o.dir);
  return {
    name: o.name,
    role: ServerRole.s3,
    command: process.execPath,
    args: [
      '--openssl-legacy-provider',
      s3rverScript(),
      '-d',
      dataDir,
      '-a',
      HOST,
      '-p',
      String(o.port),
      '--silent',
      ...o.buckets.flatMap((b) => ['--configure-bucket', b]),
    ],
    url: `http://${HOST}:${o.port}`,
    dataDir,
    logFile: join(o.dir, 's3rver.log'),
  };
}

/** A cuttable TCP link (stack/link-proxy.ts): `url` listens, `target` is where it forwards. */
export function linkSpec(o: {
  name: string;
  site?: string;
  dir: string;
  port: number;
  target: string;
}): ServerSpec {
  prepare(o.dir, o.dir);
  const script = new URL('./link-proxy.ts', import.meta.url).pathname;
  const tsx = createRequire(import.meta.url).resolve('tsx');
  return {
    name: o.name,
    role: ServerRole.link,
    ...(o.site ? { site: o.site } : {}),
    command: process.execPath,
    args: [
      '--import',
      tsx,
      script,
      '--listen',
      `${HOST}:${o.port}`,
      '--target',
      o.target,
      '--state',
      join(o.dir, 'link.state'),
    ],
    url: `tcp://${HOST}:${o.port}`,
    dataDir: o.dir,
    logFile: join(o.dir, 'link.log'),
    target: o.target,
  };
}

// ---------------------------------------------------------------------------------------------
// Process control

/**
 * The fields of `/proc/PID/stat` after the command name (which may itself hold spaces and
 * parentheses): [0] is the state, [11] and [12] user and system time, [19] the start time.
 */
export function procStatFields(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(') ') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** True while a process with this PID exists (and is not a zombie we could reap). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  return procStatFields(pid)?.[0] !== 'Z';
}

/** True while the process started for `server` runs (not a later one with its PID). */
export function isRunning(server: { pid: number; startTicks?: number }): boolean {
  if (!isAlive(server.pid)) return false;
  if (server.startTicks === undefined) return true;
  const ticks = processStartTicks(server.pid);
  return ticks === undefined || ticks === server.startTicks;
}

function tail(file: string, lines = 15): string {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

export interface StartOptions {
  /** Leave the server running after this process exits (the stack CLI); default true. */
  detached?: boolean;
  readyTimeoutMs?: number;
  /** Called once the process exists, before it is ready: lets a caller record its PID early. */
  onSpawn?: (server: RunningServer) => void;
}

/**
 * Starts a server and resolves once it answers its own protocol (a site nats-server: once its leaf
 * link is up too). Rejects with the tail of its log if it exits or does not answer in time.
 */
export async function startServer(spec: ServerSpec, options: StartOptions = {}): Promise<RunningServer> {
  const detached = options.detached ?? true;
  const repaired = spec.role === ServerRole.s3 ? repairS3rverStore(spec.dataDir) : [];
  const out = openSync(spec.logFile, 'a');
  for (const line of repaired)
    writeSync(out, `switchyard: removed a torn object left by a kill mid-PUT: ${line}\n`);
  // A server that is not left running (tests, benchmarks) dies with this process, even a killed one.
  const [command, args] = detached ? [spec.command, spec.args] : dyingWithParent(spec.command, spec.args);
  const child = spawn(command, args, { detached, stdio: ['ignore', out, out], cwd: spec.dataDir });
  closeSync(out);
  let exited: string | undefined;
  child.once('exit', (code, signal) => (exited = `exited with ${signal ?? code}`));
  child.once('error', (err) => (exited = err.message));
  if (detached) child.unref();
  const pid = child.pid;
  if (pid === undefined) throw new Error(`${spec.name}: could not start ${spec.command}`);
  const startTicks = processStartTicks(pid);
  const running: RunningServer = { ...spec, pid, ...(startTicks !== undefined ? { startTicks } : {}) };
  options.onSpawn?.(running);
  // A detached child is unref'd and the probes' timeouts are too: without a timer of our own, an
  // interrupted start could leave this process with nothing pending and exit mid-await.
  const keepAlive = setInterval(() => undefined, 1000);
  try {
    const deadline = Date.now() + (options.readyTimeoutMs ?? 30_000);
    while (Date.now() < deadline) {
      if (exited) throw new Error(`${spec.name} ${exited}; its log ends:\n${tail(spec.logFile)}`);
      if (await isReady(running)) return running;
      await sleep(100);
    }
    await stopServer(running);
    throw new Error(
      `${spec.name} did not answer within ${options.readyTimeoutMs ?? 30_000} ms; its log ends:\n${tail(spec.logFile)}`,
    );
  } finally {
    clearInterval(keepAlive);
  }
}

/** Start time of a process in clock ticks since boot, where `/proc` tells it. */
export function processStartTicks(pid: number): number | undefined {
  const ticks = Number(procStatFields(pid)?.[19]);
  return Number.isFinite(ticks) ? ticks : undefined;
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
export async function stopServer(
  server: { pid: number; startTicks?: number },
  graceMs = 10_000,
): Promise<void> {
  if (!isRunning(server)) return;
  try {
    process.kill(server.pid, 'SIGTERM');
  } catch {
    return;
  }
  const deadline = Date.now() + graceMs;
  while (isRunning(server) && Date.now() < deadline) await sleep(50);
  if (isRunning(server)) await killServer(server);
}

/** SIGKILL; resolves once the process is gone. */
export async function killServer(server: { pid: number; startTicks?: number }): Promise<void> {
  if (!isRunning(server)) return;
  try {
    process.kill(server.pid, 'SIGKILL');
  } catch {
    return;
  }
  while (isRunning(server)) await sleep(20);
}

// ---------------------------------------------------------------------------------------------
// Readiness probes

function tcpOpen(url: string): Promise<boolean> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect({ host: hostname, port: Number(port) });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

async function httpOk(url: string, init?: RequestInit): Promise<Response | undefined> {
  try {
    const res = await fetch(url, { ...init, signal: AbortSignal.timeout(2000) });
    return res;
  } catch {
    return undefined;
  }
}

/** The number of leaf connections a nats-server's monitor reports. */
export async function leafCount(monitorUrl: string): Promise<number> {
  const res = await httpOk(`${monitorUrl}/leafz`);
  if (!res?.ok) return -1;
  const body = (await res.json()) as { leafnodes?: number };
  return body.leafnodes ?? 0;
}

/** Does the server answer its own protocol? */
export async function isReady(server: ServerSpec): Promise<boolean> {
  switch (server.role) {
    case ServerRole.hubNats:
    case ServerRole.siteNats: {
      const res = await httpOk(`${server.monitorUrl}/healthz?js-enabled=true`);
      if (!res?.ok) return false;
      return server.waitForLeaf ? (await leafCount(server.monitorUrl!)) > 0 : true;
    }
    case ServerRole.victoriaMetrics:
      return (await httpOk(`${server.url}/health`))?.ok ?? false;
    case ServerRole.influxdb: {
      if ((await httpOk(`${server.url}/ping`))?.status !== 204) return false;
      const res = await httpOk(`${server.url}/query`, {
        method: 'POST',
        body: new URLSearchParams({ q: 'CREATE DATABASE switchyard' }),
      });
      return res?.ok ?? false;
    }
    case ServerRole.s3:
      return (await httpOk(server.url)) !== undefined;
    case ServerRole.redis:
    case ServerRole.siteMqtt:
    case ServerRole.link:
      return tcpOpen(server.url.replace(/^\w+:/, 'tcp:'));
  }
}
