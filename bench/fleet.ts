/**
 * `npm run bench -- fleet [--sites N,N,...]`: what one hub costs per site. For each N, a local stack
 * of N sites (each its own nats-server in its own account, leaf-connected through a cuttable link),
 * a publisher per site standing in for a bridge at a steady rate, the hub's `BSU` sourcing every
 * site, and the three consumers (archive, monitor, ingest) reading it, as child processes.
 *
 * Per N it reports the hub's CPU and memory per site, the sourcing and consumer lag in steady
 * state, and a regional outage: every uplink cut at once while the sites keep producing, then
 * healed at once — how long the herd takes to drain and how unevenly the sites catch up.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { addSite, HubStreamConfigSchema } from '../cloud/hub-stream.ts';
import { SiteStreamConfigSchema } from '../edge/config.ts';
import { ensureSiteStreams } from '../edge/site-streams.ts';
import { loadConfig } from '../lib/config.ts';
import { connectNats, natsAuthOf, type NatsAuth } from '../lib/nats.ts';
import { freePort, processCpuMs, processRssBytes } from '../lib/process.ts';
import { sleep, waitUntil } from '../lib/timers.ts';
import { SUBJECT_ROOT } from '../schemas/index.ts';
import { HUB_STREAM } from '../schemas/streams.ts';
import type { TrafficGenerator } from '../simulate/traffic.ts';
import { cutLink, healLink } from '../stack/link.ts';
import type { Stack } from '../stack/stack-file.ts';
import { stackUp } from '../stack/up.ts';
import { stackDown } from '../stack/verbs.ts';
import { startSwitchyard, type SwitchyardProcess } from '../test/support/process.ts';
import { asStored, bridgeHeaders, scrape } from './support/consumers.ts';
import { telemetryTraffic, type Figure } from './support/common.ts';

export interface FleetBenchOptions {
  /** Fleet sizes to run, one stack each. */
  siteCounts: number[];
  /** Messages per second each site's stand-in bridge stores. */
  ratePerSite: number;
  /** Steady-state window the hub's cost is measured over (s). */
  steadyS: number;
  /** How long every uplink stays cut (s). */
  cutS: number;
  log: (line: string) => void;
}

const CONSUMERS = ['archive', 'monitor', 'ingest'] as const;
const LAG = 'switchyard_consumer_lag_messages';
const ACKED = 'switchyard_consumer_messages_acked_total';
/** How often lag is sampled in steady state (ms): each sample costs the hub a stream info. */
const SAMPLE_MS = 1000;
/** How often catch-up is sampled after the outage (ms). */
const HERD_SAMPLE_MS = 500;
/** Idle window: every site connected and sourced, nothing published (ms). */
const IDLE_MS = 10_000;

/** A site's stand-in bridge: publishes simulated device readings with the bridge's headers. */
class SitePublisher {
  published = 0;
  failed = 0;
  private readonly gen: TrafficGenerator;
  private readonly js;
  private timer?: NodeJS.Timeout;
  private inFlight = new Set<Promise<unknown>>();

  constructor(
    readonly site: string,
    readonly nc: NatsConnection,
    private readonly rate: number,
    seed: number,
  ) {
    this.js = jetstream(nc, { timeout: 10_000 });
    // One reading a second per device: as many devices as messages a second.
    this.gen = telemetryTraffic(rate, `${site}-bsu`, seed);
  }

  /** Publishes `rate` messages every second, in ten slices, until stopped. */
  start(): void {
    const slice = Math.max(1, Math.round(this.rate / 10));
    this.timer = setInterval(() => {
      for (let i = 0; i < slice; i++) this.publishOne();
    }, 100);
  }

  private publishOne(): void {
    const m = asStored(this.gen.next(), this.site);
    // The site's stream stores it while the uplink is down: publishes only fail if the site does.
    const p = this.js
      .publish(m.subject, m.payload, { headers: bridgeHeaders(m) })
      .then(
        () => void this.published++,
        () => void this.failed++,
      )
      .finally(() => this.inFlight.delete(p));
    this.inFlight.add(p);
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await Promise.all(this.inFlight);
  }
}

/** Messages in `BSU`. */
const storedInBsu = async (jsm: JetStreamManager): Promise<number> =>
  (await jsm.streams.info(HUB_STREAM)).state.messages;

/** Messages of each site in `BSU`, from its per-subject counts (`bsu.<site>.<device>.<kind>`). */
async function storedPerSite(jsm: JetStreamManager): Promise<Map<string, number>> {
  const info = await jsm.streams.info(HUB_STREAM, { subjects_filter: `${SUBJECT_ROOT}.>` });
  const counts = new Map<string, number>();
  for (const [subject, n] of Object.entries(info.state.subjects ?? {})) {
    const site = subject.split('.')[1]!;
    counts.set(site, (counts.get(site) ?? 0) + n);
  }
  return counts;
}

const percentile = (values: number[], p: number): number => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
};
const round = (v: number, digits = 1): number => Number(v.toFixed(digits));

async function benchSites(sites: number, options: FleetBenchOptions): Promise<Figure[]> {
  const { log } = options;
  const stage = `fleet ${sites} sites`;
  const dir = mkdtempSync(join(tmpdir(), `switchyard-fleet-${sites}-`));
  const ncs: NatsConnection[] = [];
  const consumers: { name: string; opsUrl: string; p: SwitchyardProcess }[] = [];
  let publishers: SitePublisher[] = [];
  try {
    const t0 = performance.now();
    const stack: Stack = await stackUp({ dir, sites, readyTimeoutMs: 120_000 });
    const hubNc = await connectNats({
      url: stack.hub.url,
      name: 'bench-fleet',
      waitForServer: false,
      auth: natsAuthOf(stack.cloudSettings() as Partial<NatsAuth>),
    });
    ncs.push(hubNc);
    const hub = await jetstreamManager(hubNc, { timeout: 10_000 });
    const hubConfig = loadConfig(HubStreamConfigSchema, { env: {}, flags: { natsUrl: stack.hub.url } });
    publishers = await Promise.all(
      stack.sites.map(async (site, i) => {
        const settings = stack.siteSettings(site);
        const nc = await connectNats({
          url: settings.natsUrl,
          name: `bench-fleet-${site}`,
          waitForServer: false,
          auth: natsAuthOf(settings as Partial<NatsAuth>),
        });
        ncs.push(nc);
        const streams = loadConfig(SiteStreamConfigSchema, {
          env: {},
          flags: { site, natsUrl: settings.natsUrl },
        });
        await ensureSiteStreams(await jetstreamManager(nc), streams);
        return new SitePublisher(site, nc, options.ratePerSite, i + 1);
      }),
    );
    for (const site of stack.sites) await addSite(hub, site, hubConfig);
    const setupS = (performance.now() - t0) / 1000;
    log(`${stage}: stack and sources up in ${setupS.toFixed(1)} s`);

    // Idle: what each connected, sourced site costs the hub with nothing to carry.
    await sleep(2000);
    const idle0 = processCpuMs(stack.hub.pid);
    await sleep(IDLE_MS);
    const hubIdlePct = ((processCpuMs(stack.hub.pid) - idle0) / IDLE_MS) * 100;
    for (const p of publishers) p.start();
    const published = (): number => publishers.reduce((n, p) => n + p.published, 0);
    await waitUntil(`${stage}: every site sourced`, async () => (await storedPerSite(hub)).size === sites, {
      timeoutMs: 120_000,
      everyMs: 500,
    });

    /** One steady-state window: CPU of `pids`, the backlog between the sites and BSU, consumer lag. */
    const measure = async (pids: Record<string, number>) => {
      const cpu0 = Object.fromEntries(Object.entries(pids).map(([n, pid]) => [n, processCpuMs(pid)]));
      const stored0 = await storedInBsu(hub);
      const w0 = performance.now();
      let maxBacklog = 0;
      let maxConsumerLag = 0;
      while (performance.now() - w0 < options.steadyS * 1000) {
        maxBacklog = Math.max(maxBacklog, published() - (await storedInBsu(hub)));
        const lags = await Promise.all(consumers.map((c) => scrape(c.opsUrl, [LAG])));
        maxConsumerLag = Math.max(maxConsumerLag, 0, ...lags.map((l) => l[LAG]!));
        await sleep(SAMPLE_MS);
      }
      const ms = performance.now() - w0;
      const stored = (await storedInBsu(hub)) - stored0;
      const cpuMs = Object.fromEntries(
        Object.entries(pids).map(([n, pid]) => [n, processCpuMs(pid) - cpu0[n]!]),
      );
      const cpuPct = (name: string): number => (cpuMs[name]! / ms) * 100;
      const usPerMsg = (name: string): number => (cpuPct(name) * ms * 10) / stored;
      return { rate: (stored / ms) * 1000, maxBacklog, maxConsumerLag, cpuPct, usPerMsg };
    };
    // Sourcing alone, then with the three consumers reading BSU as it fills.
    const sourcingOnly = await measure({ hub: stack.hub.pid });
    for (const name of CONSUMERS) {
      const opsPort = await freePort();
      const p = startSwitchyard(
        [name],
        { ...stack.cloudEnv(), SWITCHYARD_OPS_PORT: String(opsPort), SWITCHYARD_LOG_LEVEL: 'warn' },
        { compiled: true },
      );
      consumers.push({ name, opsUrl: `http://127.0.0.1:${opsPort}`, p });
    }
    await waitUntil(
      `${stage}: every consumer caught up`,
      async () => {
        const stored = await storedInBsu(hub);
        const acked = await Promise.all(
          consumers.map((c) => scrape(c.opsUrl, [ACKED]).catch(() => ({ [ACKED]: 0 }))),
        );
        return acked.every((a) => a[ACKED]! >= stored - 2 * options.ratePerSite * sites);
      },
      { timeoutMs: 120_000, everyMs: 500 },
    );
    const pids = {
      hub: stack.hub.pid,
      ...Object.fromEntries(consumers.map((c) => [c.name, c.p.child.pid!])),
    };
    const loaded = await measure(pids);
    const hubRssMiB = processRssBytes(stack.hub.pid) / 1024 ** 2;
    const totalRate = sites * options.ratePerSite;
    log(
      `${stage}: hub ${sourcingOnly.cpuPct('hub').toFixed(1)} % CPU sourcing, ` +
        `${loaded.cpuPct('hub').toFixed(1)} % with consumers, ${hubRssMiB.toFixed(0)} MiB, ` +
        `${loaded.rate.toFixed(0)} msgs/s into BSU`,
    );

    // A regional outage: every uplink cut at once, the sites keep storing, then all healed at once.
    await Promise.all(stack.sites.map((site) => cutLink(dir, site, { timeoutMs: 60_000 })));
    const cutStart = performance.now();
    await sleep(options.cutS * 1000);
    // What each site had stored when the links came back: its backlog is in BSU once BSU holds that many.
    const targets = new Map(publishers.map((p) => [p.site, p.published]));
    const backlogAtHeal = published() - (await storedInBsu(hub));
    await Promise.all(stack.sites.map((site) => healLink(dir, site, { timeoutMs: 60_000 })));
    const healMs = performance.now();
    log(`${stage}: ${options.cutS} s cut, ${backlogAtHeal} messages to catch up`);
    const caughtUpMs = new Map<string, number>();
    const herdDeadline = healMs + 600_000;
    let maxLagAfterHeal = 0;
    while (caughtUpMs.size < sites) {
      const counts = await storedPerSite(hub);
      const now = performance.now();
      for (const [site, target] of targets)
        if ((counts.get(site) ?? 0) >= target && !caughtUpMs.has(site)) caughtUpMs.set(site, now - healMs);
      const lags = await Promise.all(consumers.map((c) => scrape(c.opsUrl, [LAG])));
      maxLagAfterHeal = Math.max(maxLagAfterHeal, ...lags.map((l) => l[LAG]!));
      if (now > herdDeadline) {
        const behind = [...targets.keys()].filter((site) => !caughtUpMs.has(site));
        throw new Error(`${stage}: ${behind.join(', ')} not caught up in 600 s`);
      }
      await sleep(HERD_SAMPLE_MS);
    }
    const sourcedMs = performance.now() - healMs;
    for (const p of publishers) await p.stop();
    const total = published();
    const failed = publishers.reduce((n, p) => n + p.failed, 0);
    // Drained: BSU holds every message, and every consumer has acked all of them.
    for (;;) {
      const stored = await storedInBsu(hub);
      const acked = await Promise.all(consumers.map((c) => scrape(c.opsUrl, [ACKED])));
      if (stored >= total && acked.every((a) => a[ACKED]! >= stored)) break;
      if (performance.now() > herdDeadline) throw new Error(`${stage}: not drained in 600 s`);
      await sleep(HERD_SAMPLE_MS);
    }
    const drainedMs = performance.now() - healMs;
    const stored = await storedInBsu(hub);
    if (stored !== total)
      throw new Error(`${stage}: BSU holds ${stored} messages, the sites stored ${total} (${failed} failed)`);
    const catchUps = [...caughtUpMs.values()];
    log(
      `${stage}: sourced again in ${(sourcedMs / 1000).toFixed(1)} s, drained in ${(drainedMs / 1000).toFixed(1)} s` +
        ` (${((performance.now() - cutStart) / 1000).toFixed(0)} s since the cut)`,
    );

    return [
      { stage, name: 'setup (stack, streams, sources)', value: round(setupS), unit: 's' },
      { stage, name: 'offered rate', value: totalRate, unit: 'msgs/s' },
      { stage, name: 'rate into BSU, steady state', value: round(loaded.rate, 0), unit: 'msgs/s' },
      {
        stage,
        name: 'hub CPU, idle (sites connected, nothing sent)',
        value: round(hubIdlePct),
        unit: '% of a core',
      },
      {
        stage,
        name: 'hub CPU, sourcing only',
        value: round(sourcingOnly.cpuPct('hub')),
        unit: '% of a core',
      },
      {
        stage,
        name: 'hub CPU per message, sourcing only',
        value: round(sourcingOnly.usPerMsg('hub')),
        unit: 'µs',
      },
      {
        stage,
        name: 'hub CPU, with the three consumers',
        value: round(loaded.cpuPct('hub')),
        unit: '% of a core',
      },
      {
        stage,
        name: 'hub CPU per site, with the consumers',
        value: round(loaded.cpuPct('hub') / sites, 2),
        unit: '% of a core',
      },
      {
        stage,
        name: 'hub CPU per message, with the consumers',
        value: round(loaded.usPerMsg('hub')),
        unit: 'µs',
      },
      { stage, name: 'hub memory', value: round(hubRssMiB, 0), unit: 'MiB' },
      { stage, name: 'hub memory per site', value: round(hubRssMiB / sites, 2), unit: 'MiB' },
      ...CONSUMERS.map((c) => ({
        stage,
        name: `${c} CPU per message`,
        value: round(loaded.usPerMsg(c)),
        unit: 'µs',
      })),
      {
        stage,
        name: 'sourcing backlog, steady (max)',
        value: loaded.maxBacklog,
        unit: 'msgs',
        note: `${((loaded.maxBacklog / totalRate) * 1000).toFixed(0)} ms of traffic`,
      },
      { stage, name: 'consumer lag, steady (max)', value: loaded.maxConsumerLag, unit: 'msgs' },
      {
        stage,
        name: `outage: backlog after ${options.cutS} s cut of every uplink`,
        value: backlogAtHeal,
        unit: 'msgs',
      },
      { stage, name: 'outage: every site sourced again', value: round(sourcedMs / 1000), unit: 's' },
      {
        stage,
        name: 'outage: site catch-up, median / slowest',
        value: round(percentile(catchUps, 50) / 1000),
        unit: 's',
        note: `slowest ${(Math.max(...catchUps) / 1000).toFixed(1)} s, fastest ${(Math.min(...catchUps) / 1000).toFixed(1)} s`,
      },
      { stage, name: 'outage: consumer lag after heal (max)', value: maxLagAfterHeal, unit: 'msgs' },
      {
        stage,
        name: 'outage: drained (every consumer acked all)',
        value: round(drainedMs / 1000),
        unit: 's',
      },
      { stage, name: 'messages, all stored once in BSU', value: total, unit: 'msgs' },
    ];
  } finally {
    for (const p of publishers) await p.stop().catch(() => undefined);
    await Promise.all(consumers.map((c) => c.p.stop().catch(() => undefined)));
    await Promise.all(ncs.map((nc) => nc.close().catch(() => undefined)));
    await stackDown(dir).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Runs the fleet benchmark for each fleet size in turn. */
export async function benchFleet(options: FleetBenchOptions): Promise<Figure[]> {
  const figures: Figure[] = [];
  for (const sites of options.siteCounts) figures.push(...(await benchSites(sites, options)));
  return figures;
}
