/**
 * Consumer benchmarks, each against the raw limit of the server behind it, in the same run, on
 * the same stream and the same messages:
 * - archive (→ s3rver) and monitor (→ redis-server) msgs/s ÷ a bare fetch-and-ack of the same
 *   stream on the same nats-server;
 * - ingest points/s ÷ the same points written raw, in batched HTTP POSTs of the same size, to the
 *   same database (influx2 → VictoriaMetrics, influx1 → InfluxDB 1.x);
 * - each consumer's own CPU per message ÷ the naive script's (bench/naive/): what a user would write
 *   with nats.js and the store's own client, on the same stream (ingest: VictoriaMetrics);
 * - end-to-end latency at 1,000 msgs/s, MQTT publish → the monitor's Redis state.
 *
 * Fairness on a shared machine: every measured run sits between two baseline runs made just
 * before and just after it (A-B-A), and its ratio uses their mean, so load that drifts during the
 * suite weighs on both sides alike. The consumers run as deployed: `node dist/cli/main.js <command>`
 * child processes with their default settings, configured through SWITCHYARD_* variables; the
 * benchmark only reads their /metrics (every 50 ms), never consumer info.
 */
import { availableParallelism, loadavg } from 'node:os';
import { DEFAULT_RUNNER_SETTINGS } from '../cloud/runner-settings.ts';
import { archiveConsumer } from '../cloud/archive/consumer.ts';
import { ingestConsumer } from '../cloud/ingest/consumer.ts';
import { monitorConsumer } from '../cloud/monitor/consumer.ts';
import { natsConnect } from '../test/support/jetstream.ts';
import { TestServers } from '../test/support/servers.ts';
import { endToEndLatency, percentile } from './consumers-latency.ts';
import {
  AckMode,
  archiveSettings,
  bareFetchAck,
  drainWithConsumer,
  drainWithNaive,
  fleetMessages,
  lineProtocolBodies,
  POINTS,
  preloadHubStream,
  rawWrite,
  type ConsumerDrain,
  type Drain,
  type FleetMessage,
  type NaiveScript,
  type RawBodies,
} from './support/consumers.ts';
import { cpuMeter, type CpuPerMessage, type Figure } from './support/common.ts';

export interface ConsumersBenchOptions {
  /** Messages preloaded into `BSU` for the throughput runs. */
  messages: number;
  /** Length of the measured end-to-end run, s. */
  e2eS: number;
  /** Publish rate of the end-to-end run, msgs/s. */
  e2eRate: number;
  log: (line: string) => void;
}

/** How often the consumers' /metrics are read while they drain, ms. */
const SAMPLE_EVERY_MS = 50;
/**
 * The stream's fleet: 10 sites × 50 units. No detailed readings (804 strings and modules, several
 * kB and ~30 points each): the simulator sends them from every unit on the same tick, so they
 * would all land in one batch and make that batch, not the run, decide the figures. One point per
 * telemetry message is also ingest's hardest case: the per-message costs weigh the most.
 */
const FLEET = { sites: 10, devicesPerSite: 50, seed: 11, detailEvery: 0 } as const;

const mean = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
const round = (x: number): number => Math.round(x);
const fmt = (x: number): string => Math.round(x).toLocaleString('en-US');
/** The machine's 1-minute load average: on 2 cores, anything above ~3 means other work competed. */
const load = (): string => loadavg()[0]!.toFixed(1);

/** Runs the consumers suite on servers of its own; resolves with its figures (docs/benchmarks.md). */
export async function benchConsumers(options: ConsumersBenchOptions): Promise<Figure[]> {
  const timed = { ...options, log: timedLog(options.log) };
  return [...(await throughput(timed)), ...(await endToEnd(timed))];
}

/** The throughput figures: one nats-server, one preloaded stream, every consumer in turn. */
async function throughput(options: ConsumersBenchOptions): Promise<Figure[]> {
  const figures: Figure[] = [];
  const log = options.log;
  const servers = new TestServers('bench-consumers');
  const loadAtStart = load();
  try {
    const nats = await servers.nats();
    const s3 = await servers.s3();
    const redis = await servers.redis();
    const vm = await servers.victoriaMetrics();
    const influxdb = await servers.influxdb();
    const nc = await natsConnect(nats.url);

    const messages = fleetMessages(options.messages, FLEET);
    const mix = describeMix(messages);
    const preloadRate = await preloadHubStream(nc, messages);
    log(`BSU holds ${mix} (preloaded at ${fmt(preloadRate)} msgs/s)`);

    // The baseline loop: the filter archive and monitor use; the runner's default batch, or the
    // batch of the consumer it brackets (a larger fetch is a faster bare loop too).
    const bareRuns: Record<AckMode, (Drain & { batchSize: number })[]> = {
      batched: [],
      'as-arrives': [],
      confirmed: [],
    };
    let bareCount = 0;
    const bare = async (
      mode: AckMode,
      batchSize = DEFAULT_RUNNER_SETTINGS.batchSize,
    ): Promise<Drain & { cpu: CpuPerMessage }> => {
      // The loop runs in this process: its CPU is the bare client's.
      const cpu = cpuMeter({ 'nats-server': nats.pid }, 'bare client');
      const d = await bareFetchAck(nc, {
        durable: `bench-bare-${++bareCount}`,
        messages: messages.length,
        batchSize,
        mode,
        filterSubject: DEFAULT_RUNNER_SETTINGS.filterSubjects[0]!,
      });
      const used = cpu.perMessage(messages.length);
      bareRuns[mode].push({ ...d, batchSize });
      log(
        `bare fetch, ${mode} acks, batches of ${fmt(batchSize)}: ${fmt(d.rate)} msgs/s (${describeCpu(used)})`,
      );
      return { ...d, cpu: used };
    };

    let naiveRuns = 0;
    /**
     * The naive script before the consumer (`againstNaive`) and after it (`after`): the figure is the
     * consumer's own CPU per message against the mean of the two.
     */
    const againstNaive = async (script: NaiveScript, storeUrl: string, batchSize: number) => {
      const once = () =>
        drainWithNaive(
          script,
          {
            natsUrl: nats.url,
            durable: `naive-${script}-${++naiveRuns}`,
            filter: DEFAULT_RUNNER_SETTINGS.filterSubjects[0]!,
            messages: messages.length,
            batchSize,
            storeUrl,
          },
          180_000,
        );
      const before = await once();
      return {
        after: async (consumerUs: number): Promise<Figure> => {
          const after = await once();
          const naiveUs = mean([before.cpuUsPerMessage, after.cpuUsPerMessage]);
          log(
            `naive ${script}: ${fmt(before.rate)}/${fmt(after.rate)} msgs/s, ${before.cpuUsPerMessage.toFixed(1)}/` +
              `${after.cpuUsPerMessage.toFixed(1)} µs per message; ${script} ${consumerUs.toFixed(1)} µs (${(consumerUs / naiveUs).toFixed(2)} ×)`,
          );
          return {
            stage: 'cloud',
            name: `${script}: own CPU per message`,
            value: Number(consumerUs.toFixed(1)),
            unit: 'µs',
            baseline: {
              name: `the naive script (bench/naive/${script}.ts: nats.js fetch, the store's own client, ack after the write)`,
              value: Number(naiveUs.toFixed(1)),
            },
            ratio: consumerUs / naiveUs,
            target: { op: '<=', value: 1.0, of: 'ratio' },
            note:
              `same stream, batches of ${fmt(batchSize)}; naive before/after: ${fmt(before.rate)}/${fmt(after.rate)} msgs/s, ` +
              `${before.cpuUsPerMessage.toFixed(1)}/${after.cpuUsPerMessage.toFixed(1)} µs per message`,
          };
        },
      };
    };

    /** bare, the consumer, bare: the baseline brackets the measured run, the ratio uses the mean. */
    const bracketed = async (
      name: 'archive' | 'monitor',
      sink: string,
      store: { name: string; pid: number; url: string },
      run: () => Promise<ConsumerDrain>,
      batchSize: number,
    ): Promise<{ figure: Figure; naive: Figure; rate: number }> => {
      const naive = await againstNaive(name, store.url, batchSize);
      const before = await bare(AckMode.batched, batchSize);
      const cpu = cpuMeter({ 'nats-server': nats.pid, [store.name]: store.pid });
      const drain = await run();
      const servers = cpu.perMessage(messages.length);
      const after = await bare(AckMode.batched, batchSize);
      const naiveFigure = await naive.after(drain.cpuUsPerMessage);
      const baseline = mean([before.rate, after.rate]);
      const rate = drain.messages.rate;
      const used = { [name]: drain.cpuUsPerMessage, ...servers };
      log(`${name}: ${fmt(rate)} msgs/s (${(rate / baseline).toFixed(2)} × bare; ${describeCpu(used)})`);
      const figure: Figure = {
        stage: 'cloud',
        name: `${name} throughput (${sink}, acked after the write)`,
        value: round(rate),
        unit: 'msgs/s',
        baseline: {
          name: 'bare fetch + batched acks of the same stream, same server',
          value: round(baseline),
        },
        ratio: rate / baseline,
        target: { op: '>=', value: 0.8, of: 'ratio' },
        note:
          `${fmt(drain.messages.counted)} messages in ${(drain.messages.ms / 1000).toFixed(2)} s, first fetched batch to last ack, ` +
          `batches of ${fmt(batchSize)}; bare before/after, same batches: ${fmt(before.rate)}/${fmt(after.rate)} msgs/s; ` +
          `process start to first fetched batch ${(drain.startMs / 1000).toFixed(1)} s; ` +
          `CPU per message: ${describeCpu(used)}, so ${describeCeiling(used)}; ` +
          `the bare loop before: ${describeCpu(before.cpu)}`,
      };
      return { figure, naive: naiveFigure, rate };
    };

    // The other ack modes, for comparison with batched acks at the runner's default batch: once
    // before and once after both consumers.
    await bare(AckMode.batched);
    await bare(AckMode.asArrives);
    await bare(AckMode.confirmed);
    const archive = await bracketed(
      'archive',
      'S3: s3rver',
      { name: 's3rver', pid: s3.pid, url: s3.url },
      () =>
        drainWithConsumer({
          command: 'archive',
          settings: archiveSettings(nats, s3),
          messages: messages.length,
          everyMs: SAMPLE_EVERY_MS,
          timeoutMs: 180_000,
        }),
      archiveConsumer.runnerDefaults.batchSize,
    );
    const monitor = await bracketed(
      'monitor',
      'Redis: redis-server',
      { name: 'redis-server', pid: redis.pid, url: redis.url },
      () =>
        drainWithConsumer({
          command: 'monitor',
          settings: { natsUrl: nats.url, redisUrl: redis.url },
          messages: messages.length,
          everyMs: SAMPLE_EVERY_MS,
          timeoutMs: 180_000,
        }),
      monitorConsumer.runnerDefaults.batchSize,
    );
    await bare(AckMode.confirmed);
    await bare(AckMode.asArrives);
    await bare(AckMode.batched);

    const defaultBatch = (d: { batchSize: number }): boolean =>
      d.batchSize === DEFAULT_RUNNER_SETTINGS.batchSize;
    const rates = (mode: AckMode): number[] => bareRuns[mode].filter(defaultBatch).map((d) => d.rate);
    const batched = mean(rates(AckMode.batched));
    const runs = (mode: AckMode): string =>
      `mean of ${rates(mode).length} run(s): ${rates(mode).map(fmt).join(', ')}`;
    const compared = (mode: AckMode, name: string, note: string): Figure => {
      const rate = mean(rates(mode));
      return {
        stage: 'cloud',
        name,
        value: round(rate),
        unit: 'msgs/s',
        baseline: { name: 'bare fetch + batched acks', value: round(batched) },
        ratio: rate / batched,
        note: `${note}; ${runs(mode)}`,
      };
    };
    figures.push(
      {
        stage: 'cloud',
        name: 'baseline: bare fetch + batched acks, same stream',
        value: round(batched),
        unit: 'msgs/s',
        note:
          `durable pull consumer, batches of ${DEFAULT_RUNNER_SETTINGS.batchSize} (the runner's default), filter ` +
          `${DEFAULT_RUNNER_SETTINGS.filterSubjects[0]}; once a batch is in, ack() each and ackAck() the last while the next ` +
          `batch is fetched, as the runner acks; ${runs(AckMode.batched)}; the archive and the monitor are compared ` +
          `with the same loop at their own batch size, run just before and after each; stream: ${mix}; ` +
          `load average ${loadAtStart} at the start, ${load()} after the monitor`,
      },
      compared(
        AckMode.asArrives,
        'bare fetch + ack() each message as it arrives',
        'each ack leaves in a socket write of its own',
      ),
      compared(
        AckMode.confirmed,
        'bare fetch + ackAck() each (every ack confirmed)',
        "each batch's confirmations awaited before the next fetch",
      ),
      archive.figure,
      archive.naive,
      monitor.figure,
      monitor.naive,
    );

    // Ingest, per engine: raw POSTs, the ingest process, raw POSTs again, each run into fresh series.
    const batch = ingestConsumer.runnerDefaults.batchSize;
    // Built once, outside every timed run; only VictoriaMetrics needs its own names per run.
    const bodies = lineProtocolBodies(messages, batch);
    const totalPoints = bodies.points.reduce((a, b) => a + b, 0);
    const engines: {
      sink: string;
      label: string;
      /** The database server's process. */
      server: { name: string; pid: number };
      settings: Record<string, string>;
      raw: (run: string) => Promise<{ url: string; bodies: RawBodies }>;
    }[] = [
      {
        sink: 'influx2',
        label: 'influx2 → VictoriaMetrics 1.79',
        server: { name: 'victoria-metrics', pid: vm.pid },
        settings: { sink: 'influx2', influx2Url: vm.url },
        // VictoriaMetrics has no databases: fresh measurement names keep the raw runs apart.
        raw: async (run: string) => ({
          url: `${vm.url}/api/v2/write?org=switchyard&bucket=switchyard&precision=ms`,
          bodies: lineProtocolBodies(messages, batch, `raw${run}_`),
        }),
      },
      {
        sink: 'influx1',
        label: 'influx1 → InfluxDB 1.6.7',
        server: { name: 'influxd', pid: influxdb.pid },
        settings: { sink: 'influx1', influx1Url: influxdb.url, influx1Database: 'switchyard' },
        raw: async (run: string) => {
          const db = `bench_raw_${run}`;
          const res = await fetch(`${influxdb.url}/query`, {
            method: 'POST',
            body: new URLSearchParams({ q: `CREATE DATABASE ${db}` }),
          });
          if (!res.ok) throw new Error(`CREATE DATABASE ${db}: ${res.status} ${await res.text()}`);
          return { url: `${influxdb.url}/write?db=${db}&precision=ms`, bodies };
        },
      },
    ];
    for (const engine of engines) {
      let runs = 0;
      const raw = async (gzip: boolean): Promise<Drain & { cpu: CpuPerMessage }> => {
        const target = await engine.raw(String.fromCharCode(97 + runs++));
        const cpu = cpuMeter({ [engine.server.name]: engine.server.pid }, 'raw client');
        const d = await rawWrite(target.url, target.bodies, { gzip });
        const used = cpu.perMessage(totalPoints);
        log(
          `raw ${engine.sink} POSTs, ${gzip ? 'gzip' : 'plain'}: ${fmt(d.rate)} points/s (per point: ${describeCpu(used)})`,
        );
        return { ...d, cpu: used };
      };
      // plain, gzip, ingest, gzip, plain: the faster encoding is the raw limit.
      const plainA = await raw(false);
      const gzipA = await raw(true);
      // The naive script writes with the client's v2 API, which InfluxDB 1.6 does not serve.
      const naive = engine.sink === 'influx2' ? await againstNaive('ingest', vm.url, batch) : undefined;
      const cpu = cpuMeter({ 'nats-server': nats.pid, [engine.server.name]: engine.server.pid });
      const drain = await drainWithConsumer({
        command: 'ingest',
        settings: { natsUrl: nats.url, ...engine.settings },
        messages: messages.length,
        everyMs: SAMPLE_EVERY_MS,
        timeoutMs: 180_000,
        withPoints: true,
      });
      const servers = cpu.perMessage(totalPoints);
      if (naive) figures.push(await naive.after(drain.cpuUsPerMessage));
      const gzipB = await raw(true);
      const plainB = await raw(false);
      const plainRate = mean([plainA.rate, plainB.rate]);
      const gzipRate = mean([gzipA.rate, gzipB.rate]);
      const rawRate = Math.max(plainRate, gzipRate);
      const points = drain.points!;
      const written = drain.totals[POINTS]!;
      if (written !== totalPoints)
        throw new Error(`ingest ${engine.sink} wrote ${written} points, the messages make ${totalPoints}`);
      const perPoint = {
        ingest: (drain.cpuUsPerMessage * drain.messages.counted) / points.counted,
        ...servers,
      };
      log(
        `ingest ${engine.sink}: ${fmt(points.rate)} points/s (${(points.rate / rawRate).toFixed(2)} × raw; per point: ${describeCpu(perPoint)})`,
      );
      figures.push({
        stage: 'cloud',
        name: `ingest throughput (${engine.label})`,
        value: round(points.rate),
        unit: 'points/s',
        baseline: {
          name: `same points, batched POSTs of ${fmt(batch)} messages, ${gzipRate > plainRate ? 'gzip' : 'plain'}, same server`,
          value: round(rawRate),
        },
        ratio: points.rate / rawRate,
        target: { op: '>=', value: 0.8, of: 'ratio' },
        note:
          `${fmt(points.counted)} points (${fmt(drain.messages.counted)} messages, ${fmt(drain.messages.rate)} msgs/s) in ` +
          `${(points.ms / 1000).toFixed(2)} s, first fetched batch to last ack; raw before/after: plain ${fmt(plainA.rate)}/${fmt(plainB.rate)}, ` +
          `gzip ${fmt(gzipA.rate)}/${fmt(gzipB.rate)} points/s (ingest sends plain bodies by default); ` +
          `CPU per point: ${describeCpu(perPoint)}, so ${describeCeiling(perPoint, 'points/s')}; the raw plain POSTs before: ` +
          `${describeCpu(plainA.cpu)}; load average ${load()} after`,
      });
    }
    await nc.close();
  } finally {
    await servers.stopAll();
  }
  return figures;
}

/** Publish → Redis at `e2eRate`, on a stack of its own (the throughput servers are stopped). */
async function endToEnd(options: ConsumersBenchOptions): Promise<Figure[]> {
  const log = options.log;
  const servers = new TestServers('bench-e2e');
  const loadAtStart = load();
  try {
    const r = await endToEndLatency(servers, {
      rate: options.e2eRate,
      seconds: options.e2eS,
      warmupS: 3,
      devices: 200,
      log,
    });
    // A message never reflected counts as infinitely late, so it weighs on the percentiles.
    const l = [...r.latenciesMs, ...Array<number>(r.unresolved).fill(Infinity)];
    const note =
      `${fmt(l.length)} telemetry/status messages timed (${fmt(r.published)} published at ${fmt(r.achievedRate)} msgs/s ` +
      `for ${options.e2eS} s, ${r.unresolved} never reflected); mosquitto → bridge → site nats → leaf → hub BSU ` +
      `(sourced) → monitor → Redis; publish → PUBACK (in the site stream) p50 ${percentile(r.pubackMs, 0.5).toFixed(1)} ms, ` +
      `p99 ${percentile(r.pubackMs, 0.99).toFixed(1)} ms; the monitor wrote ${fmt(r.monitor.batches)} batches of ` +
      `${r.monitor.meanBatch.toFixed(1)} messages on average, ${r.monitor.meanWriteMs.toFixed(1)} ms each; ` +
      `this process's event-loop delay p99 ${r.harnessDelayMs.p99.toFixed(1)} ms, max ${r.harnessDelayMs.max.toFixed(1)} ms; ` +
      `load average ${loadAtStart} before, ${load()} after`;
    const at = (p: number): number => Number(percentile(l, p).toFixed(1));
    log(`e2e: p50 ${at(0.5)} ms, p99 ${at(0.99)} ms, max ${at(1)} ms, ${l.length} timed`);
    const stage = 'end to end';
    const what = `MQTT publish → Redis, ${fmt(options.e2eRate)} msgs/s`;
    return [
      { stage, name: `${what}, p50`, value: at(0.5), unit: 'ms' },
      { stage, name: `${what}, p95`, value: at(0.95), unit: 'ms' },
      {
        stage,
        name: `${what}, p99`,
        value: at(0.99),
        unit: 'ms',
        target: { op: '<=', value: 250, of: 'value' },
        note,
      },
      { stage, name: `${what}, max`, value: at(1), unit: 'ms' },
    ];
  } finally {
    await servers.stopAll();
  }
}

/** Log lines prefixed with the suite's elapsed time. */
function timedLog(log: (line: string) => void): (line: string) => void {
  const t0 = performance.now();
  return (line) => log(`consumers [${((performance.now() - t0) / 1000).toFixed(0).padStart(3)} s] ${line}`);
}

/** `50,000 messages (45,012 telemetry, …), 392 B on average`. */
function describeMix(messages: readonly FleetMessage[]): string {
  const kinds: Record<string, number> = {};
  let bytes = 0;
  for (const m of messages) {
    kinds[m.kind] = (kinds[m.kind] ?? 0) + 1;
    bytes += m.payload.length;
  }
  const parts = Object.entries(kinds).map(([k, n]) => `${fmt(n)} ${k}`);
  return `${fmt(messages.length)} messages (${parts.join(', ')}), ${Math.round(bytes / messages.length)} B payloads on average, ${FLEET.sites} sites × ${FLEET.devicesPerSite} units`;
}

/** `monitor 44.0 µs, nats-server 15.2 µs, redis-server 8.1 µs`. */
const describeCpu = (used: CpuPerMessage): string =>
  Object.entries(used)
    .map(([name, us]) => `${name} ${us.toFixed(1)} µs`)
    .join(', ');

/** The fastest rate these per-message costs allow on this machine's cores. */
const describeCeiling = (used: CpuPerMessage, unit = 'msgs/s'): string => {
  const cores = availableParallelism();
  const total = Object.values(used).reduce((a, b) => a + b, 0);
  return `${total.toFixed(0)} µs in all, at most ${fmt((cores * 1e6) / total)} ${unit} on ${cores} cores`;
};
