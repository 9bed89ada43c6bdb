/**
 * Publishes a simulated fleet's traffic (traffic.ts) to an MQTT broker at a steady rate: QoS 1,
 * topics `bsu/<device>/<kind>`, in small bursts per timer tick, never more than `maxInflight`
 * unacknowledged messages per connection, and it returns only once every message sent has its
 * PUBACK. Used by `switchyard simulate`, and in-process by `dev` and the benchmarks.
 *
 * Anonymous by default, over `connections` shared connections (a plain broker, as tests and
 * benchmarks run). With `devicesFile`, every device connects as its own MQTT user, as a real BSU
 * does on a broker whose ACL lets a device publish only under its own id.
 */
import { performance } from 'node:perf_hooks';
import { setImmediate as yieldToIo } from 'node:timers/promises';
import mqtt, { type MqttClient } from 'mqtt';
import { DEVICE_KINDS, type DeviceKind } from '../schemas/index.ts';
import { sleep, waitUntil, WaitTimeoutError } from '../lib/timers.ts';
import { parseStartTime, type SimulateConfig } from './config.ts';
import { ConfigError } from '../lib/errors.ts';
import { readDevicesFile } from './devices-file.ts';
import { CORRUPTIONS, type Corruption } from './payloads.ts';
import { deviceId, TrafficGenerator, type SimMessage } from './traffic.ts';

export interface SimulatorOptions extends SimulateConfig {
  /** Wall clock (epoch ms) for `startTime: now` and `clock: wall`; tests pin it. */
  now?: () => number;
  /** Longest wait for the last PUBACKs once sending stops, ms. */
  drainTimeoutMs?: number;
  /** Longest time a connection may stay down mid-run before the run fails, ms. */
  maxOfflineMs?: number;
  /** Called with each message as it is handed to MQTT (tests, progress displays). */
  onPublish?: (message: SimMessage) => void;
}

/** What a run sent. Counts are of messages the broker acknowledged (PUBACK). */
export interface SimulatorReport {
  mqtt: string;
  devices: number;
  seed: number;
  /** Messages acknowledged, all kinds. */
  sent: number;
  byKind: Record<DeviceKind, number>;
  /**
   * Messages made invalid on purpose (included in `sent` and `byKind`), `byReason` counting them by
   * how they were spoiled (a Corruption, not the bridge's InvalidReason).
   */
  invalid: { total: number; byReason: Record<Corruption, number> };
  /** Published but not acknowledged when the run ended (0 unless the broker went away). */
  unacknowledged: number;
  /** Wall time from the first publish to the last PUBACK, ms. */
  elapsedMs: number;
  /** `sent` per second of `elapsedMs`. */
  ratePerS: number;
  /** Why sending stopped. */
  stoppedBy: 'count' | 'duration' | 'signal';
}

/** The run could not do its job (broker unreachable, PUBACKs missing): `switchyard` exits 1. */
export class SimulatorError extends Error {
  override name = 'SimulatorError';
}

/** `url` without its password, for messages. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString().replace(/\/$/, '');
  } catch {
    return url;
  }
}

// Timer ticks are ~1 ms at best; a burst is what is due since the last tick, bounded so that a stall
// (GC, slow broker) is caught up over several ticks rather than in one flood.
const MAX_BURST = 500;
const MAX_SLEEP_MS = 50;

interface Connection {
  client: MqttClient;
  inflight: number;
  waiters: (() => void)[];
  offlineSince?: number;
}

/** CONNACK codes of a refused login: bad user name or password, not authorised (3.1.1 and 5). */
const REFUSED_LOGIN = new Set([4, 5, 134, 135]);

/** An MQTT user name and password. */
interface Login {
  username: string;
  password: string;
}

/**
 * The login of each device, by device index, from `devicesFile`; a ConfigError naming the devices
 * the file has no password for.
 */
function deviceLogins(options: SimulatorOptions): Login[] {
  const passwords = readDevicesFile(options.devicesFile);
  const ids = Array.from({ length: options.devices }, (_, i) => deviceId(options.devicePrefix, i));
  const missing = ids.filter((id) => passwords[id] === undefined);
  if (missing.length > 0)
    throw new ConfigError([
      `devicesFile: ${options.devicesFile} has no password for ${missing.length} of the ${ids.length} ` +
        `devices (${missing.slice(0, 3).join(', ')}${missing.length > 3 ? ', …' : ''}): enrol them ` +
        `(switchyard stack add-device <site> <device>)`,
    ]);
  return ids.map((id) => ({ username: id, password: passwords[id]! }));
}

/** Connects one client, retrying `retries` times; rejects with a one-line reason. */
function connect(
  url: string,
  clientId: string,
  retries: number,
  signal: AbortSignal,
  login?: Login,
): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(url, {
      clientId,
      ...login,
      clean: true,
      protocolVersion: 4,
      reconnectPeriod: 500,
      connectTimeout: 5000,
    });
    let attempts = 0;
    let lastError = 'connection closed';
    const giveUp = (reason: string): void => {
      client.removeAllListeners('connect');
      client.end(true);
      reject(new SimulatorError(reason));
    };
    const onAbort = (): void => giveUp('stopped before the broker connection was up');
    signal.addEventListener('abort', onAbort, { once: true });
    client.on('error', (err) => {
      lastError = err.message.split('\n')[0] ?? String(err);
      // A refused login (CONNACK 4/5, or 134/135 in MQTT 5) will not pass on a retry, and MQTT.js
      // stops reconnecting after it: fail now.
      if (REFUSED_LOGIN.has((err as { code?: unknown }).code as number))
        giveUp(
          `the MQTT broker at ${redactUrl(url)} refused ${login ? `the login of ${login.username}` : 'an anonymous client'}: ${lastError}`,
        );
    });
    client.on('close', () => {
      if (client.connected) return;
      attempts++;
      if (attempts > retries)
        giveUp(`cannot reach the MQTT broker at ${redactUrl(url)} after ${attempts} attempts: ${lastError}`);
    });
    client.once('connect', () => {
      signal.removeEventListener('abort', onAbort);
      resolve(client);
    });
  });
}

/**
 * Runs the simulation until `count` messages, `duration` seconds, or `signal` aborts, then waits
 * for every PUBACK and closes the connections. Resolves with what was sent; rejects with a
 * SimulatorError when the broker cannot be reached or stops acknowledging.
 */
export async function runSimulator(options: SimulatorOptions, signal: AbortSignal): Promise<SimulatorReport> {
  const now = options.now ?? Date.now;
  const generator = new TrafficGenerator({
    devices: options.devices,
    devicePrefix: options.devicePrefix,
    seed: options.seed,
    telemetryEveryMs: options.telemetryEveryMs,
    statusEveryMs: options.statusEveryMs,
    detailEvery: options.detailEvery,
    clock: options.clock,
    startTimeMs: parseStartTime(options.startTime, now),
    ...(options.count !== undefined ? { count: options.count } : {}),
    invalidRatio: options.invalidRatio,
    now,
  });
  const byKind = Object.fromEntries(DEVICE_KINDS.map((k) => [k, 0])) as Record<DeviceKind, number>;
  const byReason = Object.fromEntries(CORRUPTIONS.map((c) => [c, 0])) as Record<Corruption, number>;
  let acked = 0;
  let invalidAcked = 0;
  let failure: SimulatorError | undefined;

  const runId = `${process.pid.toString(36)}${now().toString(36)}`;
  // With logins, one connection per device: device i publishes on connection i (see below).
  const logins = options.devicesFile ? deviceLogins(options) : undefined;
  let t0 = performance.now();
  const connections: Connection[] = [];
  try {
    const settled = await Promise.allSettled(
      Array.from({ length: logins?.length ?? options.connections }, (_, i) =>
        connect(
          options.mqtt,
          logins ? `${logins[i]!.username}-${runId}` : `switchyard-sim-${runId}-${i}`,
          options.connectRetries,
          signal,
          logins?.[i],
        ),
      ),
    );
    const failed = settled.find((r) => r.status === 'rejected');
    if (failed) {
      // Those that did connect would keep the process alive.
      for (const r of settled) if (r.status === 'fulfilled') r.value.end(true);
      throw failed.reason;
    }
    for (const client of settled.map((r) => (r as PromiseFulfilledResult<MqttClient>).value)) {
      const conn: Connection = { client, inflight: 0, waiters: [] };
      client.on('offline', () => (conn.offlineSince ??= performance.now()));
      client.on('connect', () => (conn.offlineSince = undefined));
      connections.push(conn);
    }
  } catch (err) {
    if (signal.aborted) return report(0, 'signal');
    throw err;
  }

  const maxOfflineMs = options.maxOfflineMs ?? 30_000;
  const checkHealth = (): void => {
    for (const conn of connections)
      if (conn.offlineSince !== undefined && performance.now() - conn.offlineSince > maxOfflineMs)
        failure ??= new SimulatorError(
          `lost the MQTT broker at ${redactUrl(options.mqtt)} for over ${Math.round(maxOfflineMs / 1000)} s`,
        );
  };
  // Wakes every waiter now and then so a run whose broker went away notices instead of waiting forever.
  const watchdog = setInterval(() => {
    checkHealth();
    if (failure) for (const conn of connections) conn.waiters.splice(0).forEach((wake) => wake());
  }, 250);

  const publish = (conn: Connection, message: SimMessage): void => {
    conn.inflight++;
    conn.client.publish(message.topic, message.payload, { qos: 1 }, (err) => {
      conn.inflight--;
      conn.waiters.shift()?.();
      if (err) {
        failure ??= new SimulatorError(`publish to ${message.topic} failed: ${err.message}`);
        return;
      }
      acked++;
      byKind[message.kind]++;
      if (message.invalid) {
        invalidAcked++;
        byReason[message.invalid]++;
      }
    });
    options.onPublish?.(message);
  };

  const rate = options.rate;
  const total = options.count ?? Infinity;
  t0 = performance.now();
  const deadline = options.duration !== undefined ? t0 + options.duration * 1000 : Infinity;
  let sent = 0;
  let stoppedBy: SimulatorReport['stoppedBy'] = 'count';
  try {
    while (sent < total) {
      if (signal.aborted) {
        stoppedBy = 'signal';
        break;
      }
      if (failure) throw failure;
      const t = performance.now();
      if (t >= deadline) {
        stoppedBy = 'duration';
        break;
      }
      // Messages due by now: the first at t0, then one every 1/rate s.
      const due = Math.min(total, Math.floor(((t - t0) * rate) / 1000) + 1);
      let burst = Math.min(due - sent, MAX_BURST);
      if (burst <= 0) {
        const nextDueAt = t0 + (sent * 1000) / rate;
        await sleep(Math.max(1, Math.min(MAX_SLEEP_MS, nextDueAt - t, deadline - t)), signal);
        continue;
      }
      while (burst-- > 0) {
        const message = generator.next();
        // With logins there is a connection per device, so this is the device's own.
        const conn = connections[message.deviceIndex % connections.length] as Connection;
        // Back-pressure: wait for a PUBACK rather than queue without bound inside MQTT.js.
        while (conn.inflight >= options.maxInflight && !failure)
          await new Promise<void>((wake) => conn.waiters.push(wake));
        if (failure) throw failure;
        publish(conn, message);
        sent++;
      }
      await yieldToIo();
    }

    // Every message sent must be acknowledged before we report it sent; what is still missing at
    // the timeout is reported below.
    await waitUntil(
      'the last PUBACKs',
      () => failure !== undefined || connections.every((c) => c.inflight === 0),
      { timeoutMs: options.drainTimeoutMs ?? 30_000, everyMs: 5 },
    ).catch((err: unknown) => {
      if (!(err instanceof WaitTimeoutError)) throw err;
    });
    if (failure) throw failure;
    // n messages at rate r take n/r seconds: the last one's interval is part of the run, so a run
    // reports the rate it was asked for.
    if (stoppedBy === 'count') await sleep(t0 + (sent * 1000) / rate - performance.now(), signal);
    const unacked = connections.reduce((n, c) => n + c.inflight, 0);
    if (unacked > 0)
      throw new SimulatorError(
        `${unacked} of ${sent} messages not acknowledged by the broker at ${redactUrl(options.mqtt)}`,
      );
    return report(unacked, stoppedBy);
  } finally {
    clearInterval(watchdog);
    await Promise.all(
      connections.map((c) => c.client.endAsync(failure !== undefined).catch(() => undefined)),
    );
  }

  function report(unacknowledged: number, stopped: SimulatorReport['stoppedBy']): SimulatorReport {
    const elapsedMs = Math.round(performance.now() - t0);
    return {
      mqtt: redactUrl(options.mqtt),
      devices: options.devices,
      seed: options.seed,
      sent: acked,
      byKind,
      invalid: { total: invalidAcked, byReason },
      unacknowledged,
      elapsedMs,
      ratePerS: elapsedMs > 0 ? Math.round((acked * 1000 * 10) / elapsedMs) / 10 : 0,
      stoppedBy: stopped,
    };
  }
}
