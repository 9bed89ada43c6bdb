/**
 * What `switchyard dev` shows: one snapshot of the whole pipeline, taken every second from what
 * each part reports itself — the simulators' counts, each child's `/metrics` and `/readyz`, and the
 * hub stream's info and sources (cloud/hub-stream.ts). Rates come from the differences between
 * snapshots.
 */
import type { JetStreamManager } from '@nats-io/jetstream';
import { RunnerMetric } from '../cloud/runner-metrics.ts';
import { listSites, type SiteSourceStatus } from '../cloud/hub-stream.ts';
import { HUB_STREAM } from '../schemas/streams.ts';
import { CounterAcrossRestarts, RateMeter, scrapeMetrics, type MetricsSnapshot } from './metrics-scrape.ts';
import type { SiteSimulator } from './site-simulator.ts';
import { Lifecycle, type SupervisedProcess, type SupervisorEvent } from './supervisor.ts';

/** The bridge's metrics, as edge/bridge.ts registers them. */
export const EdgeMetric = {
  received: 'switchyard_edge_received_total',
  published: 'switchyard_edge_published_total',
  invalid: 'switchyard_edge_invalid_total',
  inFlight: 'switchyard_edge_in_flight',
} as const;

/** How a child process looks from outside. */
export const ProcessState = {
  /** Spawned, not answering on its ops port yet. */
  starting: 'starting',
  /** Answers, and `/readyz` says ready. */
  up: 'up',
  /** Answers, but a dependency is missing (`/readyz` 503: its broker, NATS or sink is down). */
  notReady: 'not ready',
  /** Died unexpectedly; dev starts it again after a backoff. */
  restarting: 'restarting',
  /** Exited with a usage error; dev does not restart it. */
  down: 'down',
  stopped: 'stopped',
} as const;
export type ProcessState = (typeof ProcessState)[keyof typeof ProcessState];

export interface ProcessStatus {
  state: ProcessState;
  pid: number | null;
  restarts: number;
  /** How the last process ended (`exit 1`), if one did. */
  lastExit: string | null;
  /** Why `/readyz` says not ready. */
  notReady: string[];
}

export interface SiteStatus {
  site: string;
  simulator: {
    state: string;
    /** Messages handed to the site's broker since dev started. */
    published: number;
    perS: number;
    restarts: number;
    lastError: string | null;
  };
  bridge: ProcessStatus & {
    /** MQTT messages received since dev started (all bridge processes of the site together). */
    received: number;
    receivedPerS: number;
    /** Messages stored in the site streams. */
    published: number;
    publishedPerS: number;
    /** Payloads kept aside as kind invalid. */
    invalid: number;
    /** Received and not yet acknowledged to the broker; null when the bridge does not answer. */
    inFlight: number | null;
  };
  /** Messages the hub has yet to source from the site; null when the hub does not answer. */
  hubLag: number | null;
  /** Time since the hub last heard from the site's streams (ms); null if never or unknown. */
  lastContactMs: number | null;
  /** Sourcing errors the hub reports for the site. */
  hubErrors: string[];
}

export interface ConsumerStatus extends ProcessStatus {
  name: string;
  /** Messages fetched and handled, per second. */
  processedPerS: number;
  /** Messages acked since dev started. */
  acked: number;
  ackedPerS: number;
  retried: number;
  deadLettered: number;
  /** Messages in the stream not yet delivered to the consumer; null when it does not answer. */
  lag: number | null;
}

export interface DevEvent extends SupervisorEvent {
  /** ISO-8601. */
  at: string;
}

/** One snapshot of everything dev runs; also the JSON status line of `--no-view`. */
export interface DevStatus {
  /** ISO-8601 time of the snapshot. */
  at: string;
  phase: 'starting' | 'running' | 'stopping';
  uptimeS: number;
  dir: string;
  logsDir: string;
  hub: {
    /** Messages in the hub stream BSU; null when the hub does not answer. */
    messages: number | null;
    perS: number;
  };
  sites: SiteStatus[];
  consumers: ConsumerStatus[];
  /** The latest events (exits, restarts), oldest first. */
  events: DevEvent[];
}

export interface SiteUnit {
  site: string;
  bridge: SupervisedProcess;
  simulator?: SiteSimulator;
}

export interface ConsumerUnit {
  name: string;
  process: SupervisedProcess;
}

/** Rates to a tenth: the status line is for people and tests, not for arithmetic. */
const round1 = (n: number): number => Math.round(n * 10) / 10;

/**
 * Rate windows (ms). Consumers work in batches (the archive writes one every few seconds), so their
 * rates are averaged over longer than the steady flow at the edge.
 */
const EDGE_RATE_WINDOW_MS = 5000;
const CONSUMER_RATE_WINDOW_MS = 10_000;

/** A counter of one process, kept across its restarts, with its rate. */
class TrackedCounter {
  private readonly total = new CounterAcrossRestarts();
  private readonly rate: RateMeter;

  constructor(windowMs: number) {
    this.rate = new RateMeter(windowMs);
  }

  observe(pid: number | undefined, atMs: number, value: number | undefined): void {
    if (pid !== undefined && value !== undefined) this.total.observe(pid, value);
    this.rate.add(atMs, this.total.total);
  }

  get value(): number {
    return this.total.total;
  }

  get perS(): number {
    return round1(this.rate.perS);
  }
}

interface Probe {
  metrics: MetricsSnapshot | undefined;
  ready: boolean;
  reasons: string[];
}

async function probe(p: SupervisedProcess): Promise<Probe> {
  if (p.lifecycle !== Lifecycle.running || !p.opsUrl)
    return { metrics: undefined, ready: false, reasons: [] };
  const readyz = fetch(`${p.opsUrl}/readyz`, { signal: AbortSignal.timeout(1000) })
    .then(async (res) => ({
      ready: res.ok,
      reasons: ((await res.json()) as { reasons?: string[] }).reasons ?? [],
    }))
    .catch(() => ({ ready: false, reasons: [] }));
  const [metrics, r] = await Promise.all([scrapeMetrics(p.opsUrl, 1000), readyz]);
  return { metrics, ...r };
}

function processStatus(p: SupervisedProcess, probed: Probe): ProcessStatus {
  let state: ProcessState;
  if (p.lifecycle === Lifecycle.restarting) state = ProcessState.restarting;
  else if (p.lifecycle === Lifecycle.down) state = ProcessState.down;
  else if (p.lifecycle === Lifecycle.stopped) state = ProcessState.stopped;
  else if (!probed.metrics) state = ProcessState.starting;
  else state = probed.ready ? ProcessState.up : ProcessState.notReady;
  return {
    state,
    pid: p.pid ?? null,
    restarts: p.restarts,
    lastExit: p.lastExit ?? null,
    notReady: state === ProcessState.notReady ? probed.reasons : [],
  };
}

export interface StatusCollectorOptions {
  dir: string;
  logsDir: string;
  sites: readonly SiteUnit[];
  consumers: readonly ConsumerUnit[];
  /** The hub's JetStream manager, once connected. */
  hub: () => JetStreamManager | undefined;
  startedAtMs: number;
}

/** Takes snapshots; call `sample` about once a second, the rates span the last few seconds. */
export class StatusCollector {
  private readonly counters = new Map<string, TrackedCounter>();
  private readonly hubRate = new RateMeter();

  constructor(private readonly options: StatusCollectorOptions) {}

  private counter(key: string, windowMs = EDGE_RATE_WINDOW_MS): TrackedCounter {
    let c = this.counters.get(key);
    if (!c) this.counters.set(key, (c = new TrackedCounter(windowMs)));
    return c;
  }

  private track(
    key: string,
    p: SupervisedProcess,
    probed: Probe,
    metric: string,
    windowMs = EDGE_RATE_WINDOW_MS,
  ): TrackedCounter {
    const c = this.counter(key, windowMs);
    c.observe(p.pid, probed.metrics?.atMs ?? Date.now(), probed.metrics?.sum(metric));
    return c;
  }

  async sample(phase: DevStatus['phase'], events: readonly DevEvent[]): Promise<DevStatus> {
    const { sites, consumers } = this.options;
    const [siteProbes, consumerProbes, hub] = await Promise.all([
      Promise.all(sites.map((s) => probe(s.bridge))),
      Promise.all(consumers.map((c) => probe(c.process))),
      this.hubSnapshot(),
    ]);
    const now = Date.now();
    if (hub.messages !== null) this.hubRate.add(now, hub.messages);

    const siteStatus = sites.map((unit, i): SiteStatus => {
      const probed = siteProbes[i]!;
      const b = unit.bridge;
      const received = this.track(`${unit.site}/received`, b, probed, EdgeMetric.received);
      const published = this.track(`${unit.site}/published`, b, probed, EdgeMetric.published);
      const invalid = this.track(`${unit.site}/invalid`, b, probed, EdgeMetric.invalid);
      const sim = unit.simulator;
      const simCounter = this.counter(`${unit.site}/simulated`);
      // One generation: the simulator's count already spans its restarts.
      if (sim) simCounter.observe(0, now, sim.published);
      const source = hub.sites?.find((s) => s.site === unit.site);
      return {
        site: unit.site,
        simulator: {
          state: sim?.state ?? 'not started',
          published: simCounter.value,
          perS: simCounter.perS,
          restarts: sim?.restarts ?? 0,
          lastError: sim?.lastError ?? null,
        },
        bridge: {
          ...processStatus(b, probed),
          received: received.value,
          receivedPerS: received.perS,
          published: published.value,
          publishedPerS: published.perS,
          invalid: invalid.value,
          inFlight: probed.metrics?.sum(EdgeMetric.inFlight) ?? null,
        },
        hubLag: source ? source.lag : null,
        lastContactMs: source?.lastContactMs ?? null,
        hubErrors: source?.streams.flatMap((s) => (s.error ? [s.error] : [])) ?? [],
      };
    });

    const consumerStatus = consumers.map((unit, i): ConsumerStatus => {
      const probed = consumerProbes[i]!;
      const p = unit.process;
      const track = (key: string, metric: string): TrackedCounter =>
        this.track(`${unit.name}/${key}`, p, probed, metric, CONSUMER_RATE_WINDOW_MS);
      const processed = track('processed', RunnerMetric.processed);
      const acked = track('acked', RunnerMetric.acked);
      const retried = track('retried', RunnerMetric.retried);
      const dead = track('dead', RunnerMetric.deadLettered);
      return {
        name: unit.name,
        ...processStatus(p, probed),
        processedPerS: processed.perS,
        acked: acked.value,
        ackedPerS: acked.perS,
        retried: retried.value,
        deadLettered: dead.value,
        lag: probed.metrics?.sum(RunnerMetric.lag) ?? null,
      };
    });

    return {
      at: new Date(now).toISOString(),
      phase,
      uptimeS: Math.round((now - this.options.startedAtMs) / 1000),
      dir: this.options.dir,
      logsDir: this.options.logsDir,
      hub: { messages: hub.messages, perS: hub.messages === null ? 0 : round1(this.hubRate.perS) },
      sites: siteStatus,
      consumers: consumerStatus,
      events: [...events],
    };
  }

  private async hubSnapshot(): Promise<{ messages: number | null; sites: SiteSourceStatus[] | undefined }> {
    const jsm = this.options.hub();
    if (!jsm) return { messages: null, sites: undefined };
    const [info, sites] = await Promise.all([
      jsm.streams.info(HUB_STREAM).catch(() => undefined),
      listSites(jsm).catch(() => undefined),
    ]);
    return { messages: info?.state.messages ?? null, sites };
  }
}
