/**
 * `DIR/stack.json`, the record of a local stack (every server's spec, PID and start time), and
 * `Stack`, the model read from it that every other verb and in-process caller works with.
 */
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { UsageError } from '../lib/errors.ts';
import { LOCAL_STACK, toEnv, type CloudSettings, type SiteSettings } from './env-vars.ts';
import { bridgeMqttUser } from './mosquitto.ts';
import type { RunningServer } from './server-process.ts';
import { ServerRole, type ServerSpec } from './server-specs.ts';
import type { StackTrust } from './trust.ts';

/** Where `switchyard stack` keeps a stack unless told otherwise (relative to the working dir). */
export const DEFAULT_STACK_DIR = '.switchyard/stack';
/** The record of a stack, inside its DIR. */
export const STACK_FILE = 'stack.json';
/** Written by `up`: marks DIR as a stack's own, so that `down --purge` may delete it whole. */
export const MARKER_FILE = '.switchyard-stack';

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
  /** Keys, certificates and credentials of the stack's secure setup. */
  trust: StackTrust;
  servers: StackServer[];
}

/** There is no `stack.json` in DIR. */
export class NoStackError extends UsageError {
  override name = 'NoStackError';
  constructor(readonly dir: string) {
    super(`no stack in ${dir}: run 'switchyard stack up --dir ${dir}' first`);
  }
}

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

  get trust(): StackTrust {
    return this.file.trust;
  }

  /** The settings of a site's edge processes (what `DIR/env/<site>.env` holds). */
  siteSettings(site: string): SiteSettings {
    this.checkSite(site);
    const broker = this.mqtt(site);
    const bridge = bridgeMqttUser(broker);
    const trust = this.trust.sites[site]!;
    return {
      site,
      mqttUrl: broker.url,
      mqttUsername: bridge.username,
      mqttPasswordFile: bridge.passwordFile ?? '',
      natsUrl: this.siteNats(site).url,
      natsCreds: trust.bridgeCreds,
      leafCreds: trust.leafCreds,
      msgIdKeyFile: trust.msgIdKeyFile,
    };
  }

  /** The settings of the cloud consumers (what `DIR/env/cloud.env` holds). */
  cloudSettings(): CloudSettings {
    return {
      natsUrl: this.hub.url,
      natsCreds: this.trust.cloudCreds,
      natsCa: this.trust.caFile,
      redisUrl: this.redis.url,
      redisUsername: this.trust.redisUser,
      redisPasswordFile: this.trust.redisPasswordFile,
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

/** Path of `stack.json` in DIR. */
export const stackFilePath = (dir: string): string => join(resolve(dir), STACK_FILE);

/** Writes DIR's `stack.json` through a rename, so that a reader never sees half a file. */
export function writeStackFile(dir: string, file: StackFile): void {
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
  if (file.version !== 1 || !Array.isArray(file.servers) || !file.trust)
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
export function updateServer(dir: string, server: StackServer): Stack {
  const stack = readStack(dir);
  const servers = stack.servers.map((s) => (s.name === server.name ? server : s));
  const file = { ...stack.file, servers };
  writeStackFile(dir, file);
  return new Stack(dir, file);
}
