/**
 * The soak's faults: which ones, when (deterministic from the seed, spread over the run), and how
 * each is done and undone. Faults run one at a time; each reports how long the pipeline took to
 * recover from it.
 */
import type { JetStreamManager } from '@nats-io/jetstream';
import { describeError } from '../lib/errors.ts';
import { sleep, waitUntil } from '../lib/timers.ts';
import type { SupervisedProcess } from '../dev/supervisor.ts';
import { integer, mulberry32, type Random } from '../simulate/random.ts';
import { cutLink, healLink } from '../stack/link.ts';
import type { Stack } from '../stack/stack-file.ts';
import { stopServer } from '../stack/server-process.ts';
import { restartServerByName } from '../stack/verbs.ts';
import type { SoakDevices } from './devices.ts';

export interface SoakTargets {
  stack: Stack;
  processes: readonly SupervisedProcess[];
  devices: SoakDevices;
  jsm: JetStreamManager;
}

export const FaultKind = {
  kill: 'SIGKILL',
  link: 'uplink cut',
  store: 'store stop',
  bad: 'bad payloads',
  flood: 'flood',
} as const;
export type FaultKind = (typeof FaultKind)[keyof typeof FaultKind];

export interface Fault {
  kind: FaultKind;
  /** What it hits (a process, site or server name). */
  target: string;
  /** When it starts, ms after the devices started. */
  atMs: number;
  /** How long it is held before it is undone (cuts and stopped stores), ms. */
  holdMs: number;
}

export interface FaultOutcome {
  kind: FaultKind;
  target: string;
  /** From undoing the fault (or from the kill) until the target works again, ms. */
  recoverMs: number;
  recovered: boolean;
  error?: string;
}

/** A payload over the bridge's `maxPayloadBytes` (64 KiB by default) but under mosquitto's packet limit. */
export const OVERSIZE_BYTES = 100_000;
/** Readings the flooding device sends as fast as its broker acknowledges them. */
export const FLOOD_READINGS = 3000;

function shuffle<T>(rng: Random, items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = integer(rng, 0, i);
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}

/**
 * Every fault kind on every target, in a seeded order, spread evenly between 10 % and 80 % of the
 * run so that the last one has time to settle before the devices stop.
 */
export function buildSchedule(targets: SoakTargets, seed: number, durationMs: number): Fault[] {
  const rng = mulberry32(seed);
  const { stack } = targets;
  const faults: Omit<Fault, 'atMs'>[] = [
    ...targets.processes.map((p) => ({ kind: FaultKind.kill, target: p.spec.name, holdMs: 0 })),
    ...stack.sites.map((site) => ({ kind: FaultKind.link, target: site, holdMs: integer(rng, 2000, 6000) })),
    ...[stack.redis, stack.victoriaMetrics, stack.influxdb, stack.s3, stack.siteNats(stack.sites[0]!)].map(
      (s) => ({ kind: FaultKind.store, target: s.name, holdMs: integer(rng, 1000, 4000) }),
    ),
    ...stack.sites.map((site) => ({ kind: FaultKind.bad, target: site, holdMs: 0 })),
    { kind: FaultKind.flood, target: stack.sites[1]!, holdMs: 0 },
  ];
  shuffle(rng, faults);
  const first = durationMs * 0.1;
  const step = (durationMs * 0.7) / Math.max(1, faults.length);
  return faults.map((f, i) => ({ ...f, atMs: Math.round(first + i * step + rng() * step * 0.3) }));
}

async function killProcess(p: SupervisedProcess): Promise<number> {
  const pid = p.pid;
  if (pid === undefined) throw new Error(`${p.spec.name} is not running`);
  process.kill(pid, 'SIGKILL');
  const startMs = Date.now();
  await waitUntil(`${p.spec.name} to be restarted`, () => p.pid !== undefined && p.pid !== pid, {
    timeoutMs: 60_000,
    everyMs: 100,
  });
  if (!(await p.waitReady(60_000))) throw new Error(`${p.spec.name} not ready after its restart`);
  return Date.now() - startMs;
}

/** Does the fault, holds it, undoes it, and waits until its target works again. */
export async function runFault(fault: Fault, targets: SoakTargets): Promise<FaultOutcome> {
  const { stack, devices } = targets;
  const outcome = (recoverMs: number): FaultOutcome => ({
    kind: fault.kind,
    target: fault.target,
    recoverMs,
    recovered: true,
  });
  try {
    switch (fault.kind) {
      case FaultKind.kill: {
        const p = targets.processes.find((x) => x.spec.name === fault.target)!;
        return outcome(await killProcess(p));
      }
      case FaultKind.link: {
        await cutLink(stack.dir, fault.target);
        await sleep(fault.holdMs);
        return outcome((await healLink(stack.dir, fault.target)).elapsedMs);
      }
      case FaultKind.store: {
        // A clean stop (SIGTERM), as an operator or a host shutdown stops a store.
        await stopServer(stack.server(fault.target), 30_000);
        await sleep(fault.holdMs);
        const startMs = Date.now();
        await restartServerByName(stack.dir, fault.target);
        return outcome(Date.now() - startMs);
      }
      case FaultKind.bad: {
        const startMs = Date.now();
        await devices.injectBad(fault.target, OVERSIZE_BYTES);
        return outcome(Date.now() - startMs);
      }
      case FaultKind.flood: {
        const startMs = Date.now();
        await devices.flood(fault.target, FLOOD_READINGS);
        return outcome(Date.now() - startMs);
      }
    }
  } catch (err) {
    return {
      kind: fault.kind,
      target: fault.target,
      recoverMs: -1,
      recovered: false,
      error: describeError(err),
    };
  }
}
