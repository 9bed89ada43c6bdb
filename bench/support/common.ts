/** What every benchmark shares: figures, rates, payloads, and waiting on real servers. */
import mqtt, { type MqttClient } from 'mqtt';
import { TrafficGenerator, SimClock } from '../../simulate/traffic.ts';
import { processCpuMs, processRssBytes } from '../../lib/process.ts';
import { sleep } from '../../lib/timers.ts';

/** One measured figure. `ratio` is value ÷ baseline when the figure is relative to a raw limit. */
export interface Figure {
  stage: string;
  name: string;
  value: number;
  unit: string;
  baseline?: { name: string; value: number };
  ratio?: number;
  /** The target: `>=` for ratios and rates, `<=` for latencies and memory. */
  target?: { op: '>=' | '<='; value: number; of: 'ratio' | 'value' };
  note?: string;
}

export const met = (f: Figure): boolean | undefined => {
  if (!f.target) return undefined;
  const v = f.target.of === 'ratio' ? (f.ratio ?? NaN) : f.value;
  return f.target.op === '>=' ? v >= f.target.value : v <= f.target.value;
};

/** Polls `read` every `everyMs` until it returns ≥ `target`; returns the times of first progress and of reaching it. */
export async function timeUntil(
  what: string,
  read: () => Promise<number>,
  target: number,
  options: { from?: number; everyMs?: number; timeoutMs?: number } = {},
): Promise<{ firstMs: number; doneMs: number; startMs: number }> {
  const startMs = performance.now();
  const from = options.from ?? 0;
  let firstMs = NaN;
  const deadline = startMs + (options.timeoutMs ?? 300_000);
  for (;;) {
    const n = await read().catch(() => -1);
    const now = performance.now();
    if (Number.isNaN(firstMs) && n > from) firstMs = now;
    if (n >= target) return { firstMs, doneMs: now, startMs };
    if (now > deadline)
      throw new Error(`${what}: reached ${n} of ${target} in ${options.timeoutMs ?? 300_000} ms`);
    await sleep(options.everyMs ?? 10);
  }
}

/** Simulated devices sending telemetry (about 300 bytes) once a second each, on the wall clock. */
export function telemetryTraffic(devices: number, devicePrefix: string, seed: number): TrafficGenerator {
  return new TrafficGenerator({
    devices,
    devicePrefix,
    seed,
    telemetryEveryMs: 1000,
    statusEveryMs: 1e12,
    detailEvery: 0,
    clock: SimClock.wall,
    startTimeMs: Date.now(),
    invalidRatio: 0,
  });
}

/** `count` simulated telemetry readings (about 300 bytes each) from `devices` devices. */
export function telemetryMessages(
  count: number,
  devices = 50,
  seed = 7,
): { topic: string; payload: Buffer }[] {
  const gen = telemetryTraffic(devices, 'bench', seed);
  const out: { topic: string; payload: Buffer }[] = [];
  while (out.length < count) {
    const m = gen.next();
    if (m.kind === 'telemetry') out.push({ topic: m.topic, payload: m.payload });
  }
  return out;
}

/** Publishes messages QoS 1 with up to `inflight` unacknowledged, resolving when all are PUBACKed. */
export async function publishAll(
  url: string,
  messages: { topic: string; payload: Buffer }[],
  inflight = 1000,
): Promise<number> {
  const client = await mqtt.connectAsync(url, {
    clientId: `bench-pub-${process.pid}-${Date.now()}`,
    clean: true,
  });
  const t0 = performance.now();
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < messages.length) {
      const m = messages[next++]!;
      await client.publishAsync(m.topic, m.payload, { qos: 1 });
    }
  };
  await Promise.all(Array.from({ length: inflight }, worker));
  const ms = performance.now() - t0;
  await client.endAsync();
  return (messages.length / ms) * 1000;
}

/** Connects a persistent-session subscriber once so the broker queues for it while it is away. */
export async function createSession(url: string, clientId: string, filter: string): Promise<void> {
  const client: MqttClient = await mqtt.connectAsync(url, { clientId, clean: false });
  await client.subscribeAsync(filter, { qos: 1 });
  await client.endAsync();
}

/** Resident memory of a process (bytes). */
export const rssBytes = processRssBytes;

/** CPU used per message, µs, by process name. */
export type CpuPerMessage = Record<string, number>;

/**
 * CPU used from now on by other processes (from /proc) and, if `self` names it, by this one; per
 * message when asked.
 */
export function cpuMeter(
  pids: Record<string, number>,
  self?: string,
): { perMessage(messages: number): CpuPerMessage } {
  const start = Object.fromEntries(Object.entries(pids).map(([name, pid]) => [name, processCpuMs(pid)]));
  const selfStart = process.cpuUsage();
  return {
    perMessage(messages) {
      const out: CpuPerMessage = {};
      if (self) {
        const used = process.cpuUsage(selfStart);
        out[self] = (used.user + used.system) / messages;
      }
      for (const [name, pid] of Object.entries(pids))
        out[name] = ((processCpuMs(pid) - start[name]!) * 1000) / messages;
      return out;
    },
  };
}

export const perSecond = (count: number, ms: number): number => (count / ms) * 1000;
