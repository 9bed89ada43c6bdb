/**
 * What each server is: its binary, config file, arguments, ports and directories, as a
 * `ServerSpec`. A spec is plain data, so that `stack restart NAME` can start a server again from
 * what `stack.json` recorded, on the same port and data.
 */
import { createHash, randomBytes } from 'node:crypto';
import { accessSync, constants, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { binOverride } from '../lib/env.ts';
import { writeSecretFile } from '../lib/secret-file.ts';

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

export const HOST = '127.0.0.1';

export function prepare(dataDir: string, logDir: string): void {
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
  /** Largest message the server takes; default 1 MiB. */
  maxPayloadBytes?: number;
  /** Operator, resolver and preloaded accounts (cloud/accounts/server-config.ts); none: no auth. */
  trust?: string[];
  /** TLS on the client port. */
  tls?: ServerTls;
  /** Hub: TLS on the leaf listener (`verify`: leaves must show a certificate of the CA). */
  leafTls?: ServerTls;
  /** Site: how its leaf proves itself to the hub and checks the hub. */
  leafRemote?: {
    /** Credentials file of a leaf user of the site's account at the hub (none: anonymous). */
    credentials?: string;
    /** Public key of the local account the leaf binds (the gateway's own account). */
    account: string;
    /** CA of the hub's certificate, and the site's client certificate. */
    tls?: { ca: string; cert?: string; key?: string };
  };
}

/** A server's certificate, key, and the CA it checks clients against when `verify` is set. */
export interface ServerTls {
  cert: string;
  key: string;
  ca?: string;
  verify?: boolean;
}

const q = (value: string): string => JSON.stringify(value);

function tlsBlock(
  indent: string,
  t: { cert?: string; key?: string; ca?: string; verify?: boolean },
): string[] {
  return [
    `${indent}tls {`,
    ...(t.cert ? [`${indent}  cert_file: ${q(t.cert)}`, `${indent}  key_file: ${q(t.key ?? '')}`] : []),
    ...(t.ca ? [`${indent}  ca_file: ${q(t.ca)}`] : []),
    ...(t.verify ? [`${indent}  verify: true`] : []),
    `${indent}  timeout: 5`,
    `${indent}}`,
  ];
}

/** A nats-server with JetStream in its own domain, optionally a leaf node hub or remote. */
export function natsSpec(o: NatsOptions): ServerSpec {
  const dataDir = join(o.dir, 'data');
  prepare(dataDir, o.dir);
  const lines = [
    `server_name: ${JSON.stringify(o.name)}`,
    `listen: "${HOST}:${o.port}"`,
    `http: "${HOST}:${o.monitorPort}"`,
    `max_payload: ${o.maxPayloadBytes ?? 1048576}`,
    `jetstream {`,
    `  store_dir: ${JSON.stringify(dataDir)}`,
    `  domain: ${JSON.stringify(o.domain)}`,
    `  max_memory_store: 268435456`,
    `  max_file_store: ${o.maxFileStoreBytes ?? 10737418240}`,
    `}`,
    ...(o.trust ?? []),
    ...(o.tls ? tlsBlock('', o.tls) : []),
  ];
  if (o.leafListenPort !== undefined) {
    // A leaf remote adds the address the hub advertises to its reconnect list; on 2.9 no_advertise
    // does not stop that. Advertising a refused address keeps every site on its own (cuttable) link.
    lines.push(
      `leafnodes {`,
      `  listen: "${HOST}:${o.leafListenPort}"`,
      `  advertise: "${HOST}:1"`,
      ...(o.leafTls ? tlsBlock('  ', o.leafTls) : []),
      `}`,
    );
  }
  if (o.leafRemoteUrl !== undefined) {
    const r = o.leafRemote;
    lines.push(
      `leafnodes {`,
      `  reconnect: 1`,
      `  remotes: [ {`,
      `    url: ${q(o.leafRemoteUrl)}`,
      ...(r?.credentials ? [`    credentials: ${q(r.credentials)}`] : []),
      ...(r ? [`    account: ${q(r.account)}`] : []),
      ...(r?.tls ? tlsBlock('    ', r.tls) : []),
      `  } ]`,
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

/**
 * Redis with an append-only file, so a killed Redis comes back with the state it acknowledged. With
 * `acl`, `acl.user` is the only user anyone can log in as, its password given to Redis as a SHA-256
 * hash in a 0600 config file (neither on the command line nor in plain text).
 */
export function redisSpec(o: {
  name: string;
  dir: string;
  port: number;
  acl?: { user: string; passwordFile: string };
}): ServerSpec {
  const dataDir = join(o.dir, 'data');
  prepare(dataDir, o.dir);
  const configFile = join(o.dir, 'redis.conf');
  const acl = o.acl;
  if (acl) {
    const sha256 = (secret: string | Buffer): string => createHash('sha256').update(secret).digest('hex');
    // The default user stays on, behind a password nobody keeps: Redis replays its append-only file
    // as the default user, and up to 7.2 drops every MULTI/EXEC (the monitor's scripts) when it is off.
    writeSecretFile(
      configFile,
      [
        `user default on #${sha256(randomBytes(32))} ~* &* +@all`,
        `user ${acl.user} on #${sha256(readFileSync(acl.passwordFile, 'utf8'))} ~* &* +@all`,
        '',
      ].join('\n'),
    );
  }
  return {
    name: o.name,
    role: ServerRole.redis,
    command: findBinary('redis-server'),
    args: [
      ...(acl ? [configFile] : []),
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
