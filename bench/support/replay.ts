/**
 * What the replay benchmark is made of: an operator command (`backfill`, `replay`, `migrate
 * verify`, `audit`) run once as a child process and measured from the outside (wall time, and the
 * /proc CPU of it and of every server it talks to over the same window), and a day of a fleet's
 * readings made in chunks, so that 720,000 of them never sit in memory at once.
 */
import { processCpuMs } from '../../lib/process.ts';
import { SimClock, TrafficGenerator } from '../../simulate/traffic.ts';
import { startSwitchyard } from '../../test/support/process.ts';
import { asStored, siteId, type FleetMessage } from './consumers.ts';

/** One run of a command, measured from its start to its report. */
export interface CommandRun {
  /** Exit code (or the signal that ended it). */
  code: number | string;
  /** The `--json` report: the last line of stdout, parsed; undefined when there is none. */
  report: Record<string, unknown> | undefined;
  /** Process start to the report on stdout (to the exit when it printed none), ms. */
  wallMs: number;
  /** CPU used over the same window, ms (from /proc, 10 ms ticks): the command under its name, and each server. */
  cpuMs: Record<string, number>;
  /** Everything it printed. */
  output: string;
}

/**
 * Runs `switchyard <args>` from dist/ (compiled, as deployed) and measures it: the window opens
 * when the process is started and closes when its report arrives on stdout, where the command's
 * work is done and only closing connections is left. /proc is read every `everyMs` and once more
 * at the report; a command that exits before that last read keeps the one before it (at most
 * `everyMs` of its CPU is then missing).
 */
export async function measureCommand(options: {
  /** The name its CPU is reported under. */
  name: string;
  args: string[];
  /** Servers whose CPU is measured over the same window, by name. */
  pids: Record<string, number>;
  timeoutMs: number;
  everyMs?: number;
}): Promise<CommandRun> {
  const cpuOf = (): Record<string, number> =>
    Object.fromEntries(Object.entries(options.pids).map(([name, pid]) => [name, processCpuMs(pid)]));
  const startServers = cpuOf();
  const startMs = performance.now();
  const p = startSwitchyard(options.args, {}, { compiled: true });
  const pid = p.child.pid!;
  interface Sample {
    ms: number;
    command: number;
    servers: Record<string, number>;
  }
  let last: Sample = { ms: startMs, command: 0, servers: startServers };
  let atReport: Sample | undefined;
  const sample = (): void => {
    try {
      last = { ms: performance.now(), command: processCpuMs(pid), servers: cpuOf() };
    } catch {
      // It exited between two reads: the previous read stands.
    }
  };
  p.child.stdout!.on('data', () => {
    if (atReport === undefined && p.stdout().includes('\n')) {
      sample();
      atReport = last;
    }
  });
  const timer = setInterval(sample, options.everyMs ?? 50);
  const timeout = setTimeout(() => void p.stop('SIGKILL'), options.timeoutMs);
  let code: number | string;
  try {
    code = await p.exited;
  } finally {
    clearInterval(timer);
    clearTimeout(timeout);
  }
  const end = atReport ?? last;
  const lastLine = p.stdout().trim().split('\n').at(-1) ?? '';
  return {
    code,
    report: lastLine.startsWith('{') ? (JSON.parse(lastLine) as Record<string, unknown>) : undefined,
    wallMs: end.ms - startMs,
    cpuMs: {
      [options.name]: end.command,
      ...Object.fromEntries(Object.entries(end.servers).map(([n, ms]) => [n, ms - startServers[n]!])),
    },
    output: p.output(),
  };
}

/** Throws with the command's output unless it exited with `want` and printed a report. */
export function expectReport(what: string, run: CommandRun, want = 0): Record<string, unknown> {
  if (run.code !== want || !run.report)
    throw new Error(`${what}: exit ${run.code}, expected ${want}: ${run.output.slice(-3000)}`);
  return run.report;
}

/** Start of the UTC day `daysAgo` days before today, epoch ms. */
export const utcDayStartMs = (daysAgo: number): number => {
  const now = new Date();
  return Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() - daysAgo);
};

/** A day of one fleet's telemetry, one reading per unit per `everyMs`. */
export interface DayOptions {
  units: number;
  sites: number;
  /** Epoch ms of the day's start (device time 0). */
  dayStartMs: number;
  /** Device time between two readings of a unit, ms. */
  everyMs: number;
  seed: number;
  /** Messages per chunk. */
  chunk: number;
}

/** Readings in the day: every unit reads `24 h ÷ everyMs` times. */
export const dayReadings = (o: Pick<DayOptions, 'units' | 'everyMs'>): number =>
  o.units * Math.floor(86_400_000 / o.everyMs);

/**
 * The day's telemetry messages in device-time order, `chunk` at a time, as the bridge would store
 * them (receive time = device time). Units are staggered across the interval, so each one's last
 * reading still falls in the day. Status messages and events are left out: the day is readings.
 */
export function* dayOfTelemetry(o: DayOptions): Generator<FleetMessage[]> {
  const gen = new TrafficGenerator({
    devices: o.units,
    devicePrefix: 'bsu',
    seed: o.seed,
    telemetryEveryMs: o.everyMs,
    statusEveryMs: 1e15,
    detailEvery: 0,
    clock: SimClock.virtual,
    startTimeMs: o.dayStartMs,
    invalidRatio: 0,
  });
  let left = dayReadings(o);
  let chunk: FleetMessage[] = [];
  while (left > 0) {
    const m = gen.next();
    if (m.kind !== 'telemetry') continue;
    chunk.push(asStored(m, siteId(m.deviceIndex % o.sites)));
    left--;
    if (chunk.length === o.chunk || left === 0) {
      yield chunk;
      chunk = [];
    }
  }
}
