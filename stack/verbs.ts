/**
 * The verbs on a running stack besides `up`: `down` (stop every recorded server), `status` (probe
 * each), `kill` (a crash), `restart` (start one again from its recorded spec), and `add-device` /
 * `remove-device` (a site broker's users, changed live).
 */
import { existsSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import mqtt from 'mqtt';
import { UsageError } from '../lib/errors.ts';
import { isRunning } from '../lib/process.ts';
import { waitUntil } from '../lib/timers.ts';
import { linkState } from './link.ts';
import {
  brokerDir,
  brokerHasAuth,
  devicesFileOf,
  enrolDevices,
  enrolledDevices,
  removeDeviceUser,
  type DeviceEnrolment,
} from './mosquitto.ts';
import { isReady } from './server-readiness.ts';
import { killServer, startServer, stopServer } from './server-process.ts';
import { ServerRole, type ServerSpec } from './server-specs.ts';
import {
  MARKER_FILE,
  readStack,
  stackFilePath,
  tryReadStack,
  updateServer,
  type Stack,
  type StackServer,
} from './stack-file.ts';

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

/** How long a broker may take to apply its users after SIGHUP, in ms. */
const RELOAD_TIMEOUT_MS = 10_000;

/** Whether the broker at `url` accepts `username` with `password` (a refused CONNACK: false). */
async function brokerAccepts(url: string, username: string, password: string): Promise<boolean> {
  try {
    const client = await mqtt.connectAsync(url, {
      username,
      password,
      clientId: `switchyard-check-${process.pid}-${Math.random().toString(36).slice(2, 8)}`,
      clean: true,
      reconnectPeriod: 0,
      connectTimeout: 2000,
    });
    await client.endAsync(true);
    return true;
  } catch (err) {
    // MQTT.js reports a refused CONNACK with its return code (4 bad password, 5 not authorised).
    const code = (err as { code?: number }).code;
    if (code === 4 || code === 5 || code === 134 || code === 135) return false;
    throw err;
  }
}

/**
 * Sends the site's running broker SIGHUP (mosquitto re-reads its password file and ACL, and closes
 * the connections of users whose password no longer holds) and resolves once a check login sees
 * the change. False when the broker is not running: it reads the files when it starts.
 */
async function reloadBroker(
  stack: Stack,
  site: string,
  check: { username: string; password: string; accepted: boolean },
): Promise<boolean> {
  const broker = stack.mqtt(site);
  if (!isRunning(broker)) return false;
  process.kill(broker.pid, 'SIGHUP');
  await waitUntil(
    `${broker.name} to apply its new users`,
    async () => (await brokerAccepts(broker.url, check.username, check.password)) === check.accepted,
    { timeoutMs: RELOAD_TIMEOUT_MS, everyMs: 50 },
  );
  return true;
}

function siteBroker(dir: string, site: string): { stack: Stack; brokerDir: string } {
  const stack = readStack(dir);
  stack.checkSite(site);
  const broker = stack.mqtt(site);
  if (!brokerHasAuth(broker))
    throw new UsageError(`the broker of ${site} runs without users (anonymous): it has no devices to manage`);
  return { stack, brokerDir: brokerDir(broker) };
}

/** What `addDevices` did. */
export interface AddDevicesResult {
  site: string;
  devices: DeviceEnrolment[];
  /** The devices file that now holds every enrolled device's password (mode 0600). */
  devicesFile: string;
  /** Whether the running broker took the change without a restart (false: it was not running). */
  live: boolean;
}

/**
 * Enrols `devices` as MQTT users of the site's broker in the stack in DIR (user name = device id,
 * a random password), live: the running broker is reloaded with SIGHUP, and this resolves once it
 * accepts the last one's password. Idempotent: a device already enrolled keeps its password unless
 * `rotate`, which gives it a new one (the old one is refused, its connections closed).
 */
export async function addDevices(
  dir: string,
  site: string,
  devices: readonly string[],
  options: { rotate?: boolean } = {},
): Promise<AddDevicesResult> {
  const { stack, brokerDir: bdir } = siteBroker(dir, site);
  const enrolled = enrolDevices(bdir, devices, options);
  const changed = enrolled.filter((e) => e.change !== 'kept');
  const last = changed.at(-1);
  const live = last
    ? await reloadBroker(stack, site, { username: last.device, password: last.password, accepted: true })
    : isRunning(stack.mqtt(site));
  return { site, devices: enrolled, devicesFile: devicesFileOf(stack.mqtt(site)), live };
}

/** What `removeDevice` did. */
export interface RemoveDeviceResult {
  site: string;
  device: string;
  /** False when the device was not enrolled (nothing changed). */
  removed: boolean;
  live: boolean;
}

/**
 * Removes a device's MQTT user from the site's broker in the stack in DIR, live: once this resolves
 * the broker refuses its password and has closed its connections. Idempotent.
 */
export async function removeDevice(dir: string, site: string, device: string): Promise<RemoveDeviceResult> {
  const { stack, brokerDir: bdir } = siteBroker(dir, site);
  const before = enrolledDevices(bdir)[device];
  const removed = removeDeviceUser(bdir, device);
  const live =
    removed && before !== undefined
      ? await reloadBroker(stack, site, { username: device, password: before, accepted: false })
      : isRunning(stack.mqtt(site));
  return { site, device, removed, live };
}
