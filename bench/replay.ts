/**
 * Replay, backfill and verify benchmarks (docs/benchmarks.md, "Replay, backfill and verify"). Every
 * operator command runs as deployed: its own process from dist/, its settings in an env file as
 * `stack up` writes it, its report printed with `--json`; the benchmark measures it from outside
 * (wall time from process start to report, and the /proc CPU of the command and of every server it
 * talks to over that window):
 * - backfill from the S3 archive into VictoriaMetrics (influx2) and into InfluxDB 1.x (influx1),
 *   points/s, next to the same points written raw to the same database just before and just after
 *   (A-B-A, as the consumers suite does), with the CPU per point of backfill, s3rver and the
 *   database. Target: backfill's own CPU per point at most half the database's;
 * - replay by sequence through ingest's sink into VictoriaMetrics, all from the stream, then all
 *   from the archive (the stream cut down to its last message), msgs/s and CPU per message;
 * - `migrate verify`, `audit` and `audit --deep` over a day of a fleet's readings held by both engines
 *   (and, for audit, by the stream and the archive).
 *
 * A command's fixed cost (starting Node, loading its modules, connecting, listing the archive's
 * manifests) is measured apart, in the same run, by the same command over a range with nothing in
 * it; the figures give both the whole run and the run less that cost.
 */
import { writeFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { join } from 'node:path';
import {
  AckPolicy,
  DeliverPolicy,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
} from '@nats-io/jetstream';
import { nanos, type NatsConnection } from '@nats-io/transport-node';
import { archiveConsumer } from '../cloud/archive/consumer.ts';
import { ingestConsumer } from '../cloud/ingest/consumer.ts';
import { engineDurable } from '../cloud/migrate.ts';
import { HUB_STREAM } from '../schemas/streams.ts';
import { envFileText, LOCAL_STACK } from '../stack/env-vars.ts';
import type { RunningServer } from '../stack/server-process.ts';
import { natsConnect } from '../test/support/jetstream.ts';
import { startSwitchyard } from '../test/support/process.ts';
import { TestServers } from '../test/support/servers.ts';
import { cpuMeter, perSecond, type Figure } from './support/common.ts';
import {
  drainWithConsumer,
  fleetMessages,
  lineProtocolBodies,
  preloadHubStream,
  publishToHub,
  rawWrite,
  type Drain,
  type RawBodies,
} from './support/consumers.ts';
import {
  dayOfTelemetry,
  dayReadings,
  expectReport,
  measureCommand,
  utcDayStartMs,
  type CommandRun,
} from './support/replay.ts';

export interface ReplayBenchOptions {
  /** Messages preloaded into `BSU` and archived, for backfill and replay. */
  messages: number;
  /** Units of the day that verify and audit read (one reading a minute each). */
  dayUnits: number;
  log: (line: string) => void;
}

/** The consumers suite's fleet: 10 sites × 50 units, one point per telemetry message. */
const FLEET = { sites: 10, devicesPerSite: 50, seed: 11, detailEvery: 0 } as const;
/** /proc reads while a command runs, ms. */
const SAMPLE_EVERY_MS = 50;
const STAGE = 'replay';
const COMMAND_TIMEOUT_MS = 900_000;

const mean = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
const fmt = (x: number): string => Math.round(x).toLocaleString('en-US');
const us = (x: number): number => Number(x.toFixed(1));
const seconds = (ms: number): string => `${(ms / 1000).toFixed(2)} s`;
const iso = (ms: number): string => new Date(ms).toISOString();
/** The machine's 1-minute load average: on 2 cores, anything above ~3 means other work competed. */
const load = (): string => loadavg()[0]!.toFixed(1);

/** Runs the replay suite on servers of its own; resolves with its figures (docs/benchmarks.md). */
export async function benchReplay(options: ReplayBenchOptions): Promise<Figure[]> {
  const timed = { ...options, log: timedLog(options.log) };
  return [...(await fromTheArchive(timed)), ...(await overADay(timed))];
}

/** The settings of every command, as `stack up` writes them to `DIR/env/cloud.env`. */
function writeEnvFile(
  dir: string,
  s: { nats: RunningServer; s3: RunningServer; vm: RunningServer; influxdb: RunningServer },
): string {
  const file = join(dir, 'cloud.env');
  writeFileSync(
    file,
    envFileText({
      natsUrl: s.nats.url,
      s3Endpoint: s.s3.url,
      s3Bucket: LOCAL_STACK.s3Bucket,
      s3Region: LOCAL_STACK.s3Region,
      s3AccessKeyId: LOCAL_STACK.s3AccessKeyId,
      s3SecretAccessKey: LOCAL_STACK.s3SecretAccessKey,
      influx2Url: s.vm.url,
      influx2Org: LOCAL_STACK.influx2Org,
      influx2Bucket: LOCAL_STACK.influx2Bucket,
      influx2Token: LOCAL_STACK.influx2Token,
      influx1Url: s.influxdb.url,
      influx1Database: LOCAL_STACK.influx1Database,
      sink: LOCAL_STACK.sink,
    }),
  );
  return file;
}

/** The archive consumer's settings for drainWithConsumer (SWITCHYARD_* variables). */
const archiveSettings = (s: { nats: RunningServer; s3: RunningServer }) => ({
  natsUrl: s.nats.url,
  s3Endpoint: s.s3.url,
  s3AccessKeyId: LOCAL_STACK.s3AccessKeyId,
  s3SecretAccessKey: LOCAL_STACK.s3SecretAccessKey,
  s3Bucket: LOCAL_STACK.s3Bucket,
});

/** CPU per unit of work, µs, from a run's CPU in ms. */
const perUnit = (cpuMs: Record<string, number>, units: number): Record<string, number> =>
  Object.fromEntries(Object.entries(cpuMs).map(([name, ms]) => [name, (ms * 1000) / units]));

/** `backfill 41.2 µs, s3rver 3.0 µs, victoria-metrics 24.9 µs`. */
const describeCpu = (used: Record<string, number>): string =>
  Object.entries(used)
    .map(([name, x]) => `${name} ${x.toFixed(1)} µs`)
    .join(', ');

/** The fastest rate these costs allow on this machine's cores. */
const describeCeiling = (used: Record<string, number>, unit: string): string => {
  const cores = availableParallelism();
  const total = Object.values(used).reduce((a, b) => a + b, 0);
  return `${total.toFixed(0)} µs in all, at most ${fmt((cores * 1e6) / total)} ${unit} on ${cores} cores`;
};

/** A command's run less its fixed cost (the same command with nothing to do). */
interface Net {
  wallMs: number;
  /** CPU per unit of the command alone, µs. */
  commandUs: number;
  rate: number;
}
const netOf = (name: string, run: CommandRun, fixed: CommandRun, units: number): Net => {
  const wallMs = run.wallMs - fixed.wallMs;
  return {
    wallMs,
    commandUs: ((run.cpuMs[name]! - fixed.cpuMs[name]!) * 1000) / units,
    rate: perSecond(units, wallMs),
  };
};
const describeFixed = (name: string, fixed: CommandRun): string =>
  `its fixed cost (the same command over a range with nothing in it): ${seconds(fixed.wallMs)}, ` +
  `${fmt(fixed.cpuMs[name]!)} ms of CPU`;

/** Backfill (both engines) and replay (stream, archive) of one archived stream. */
async function fromTheArchive(options: ReplayBenchOptions): Promise<Figure[]> {
  const { log } = options;
  const figures: Figure[] = [];
  const servers = new TestServers('bench-replay');
  let nc: NatsConnection | undefined;
  try {
    const nats = await servers.nats();
    const s3 = await servers.s3();
    const vm = await servers.victoriaMetrics();
    const influxdb = await servers.influxdb();
    nc = await natsConnect(nats.url);
    const envFile = writeEnvFile(servers.dir, { nats, s3, vm, influxdb });
    const common = ['--env-file', envFile, '--json'];

    // Set-up, not measured: the stream, archived by the real archive consumer.
    const messages = fleetMessages(options.messages, FLEET);
    const preloadRate = await preloadHubStream(nc, messages);
    log(`BSU holds ${fmt(messages.length)} messages (preloaded at ${fmt(preloadRate)} msgs/s)`);
    const archived = await drainWithConsumer({
      command: 'archive',
      settings: archiveSettings({ nats, s3 }),
      messages: messages.length,
      everyMs: SAMPLE_EVERY_MS,
      timeoutMs: COMMAND_TIMEOUT_MS,
    });
    log(`archive → s3rver: ${fmt(archived.messages.rate)} msgs/s`);

    const batch = ingestConsumer.runnerDefaults.batchSize;
    const bodies = lineProtocolBodies(messages, batch);
    const points = bodies.points.reduce((a, b) => a + b, 0);
    let sinceMs = Infinity;
    let untilMs = -Infinity;
    for (const m of messages) {
      sinceMs = Math.min(sinceMs, m.tsMs);
      untilMs = Math.max(untilMs, m.tsMs + 1);
    }
    const kinds = new Map<string, number>();
    for (const m of messages) kinds.set(m.kind, (kinds.get(m.kind) ?? 0) + 1);
    const mix =
      `${fmt(messages.length)} messages (${[...kinds].map(([k, n]) => `${fmt(n)} ${k}`).join(', ')}) of ` +
      `${FLEET.sites} sites × ${FLEET.devicesPerSite} units, ${fmt(points)} points`;
    log(`backfill window ${iso(sinceMs)} – ${iso(untilMs)}: ${mix}`);

    // ---- Backfill, per engine: raw POSTs, the empty backfill, the backfill, raw POSTs again.
    const engines: {
      sink: string;
      label: string;
      server: { name: string; pid: number };
      raw: (run: string) => Promise<{ url: string; bodies: RawBodies }>;
    }[] = [
      {
        sink: 'influx2',
        label: 'VictoriaMetrics 1.79',
        server: { name: 'victoria-metrics', pid: vm.pid },
        // VictoriaMetrics has no databases: fresh measurement names keep the raw runs apart.
        raw: async (run) => ({
          url: `${vm.url}/api/v2/write?org=${LOCAL_STACK.influx2Org}&bucket=${LOCAL_STACK.influx2Bucket}&precision=ms`,
          bodies: lineProtocolBodies(messages, batch, `raw${run}_`),
        }),
      },
      {
        sink: 'influx1',
        label: 'InfluxDB 1.6.7',
        server: { name: 'influxd', pid: influxdb.pid },
        raw: async (run) => {
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
      const db = engine.server.name;
      let runs = 0;
      const raw = async (warmUp = false): Promise<Drain & { dbUs: number }> => {
        const target = await engine.raw(
          warmUp ? 'warm' : `${engine.sink}${String.fromCharCode(97 + runs++)}`,
        );
        const cpu = cpuMeter({ [db]: engine.server.pid }, 'raw client');
        const d = await rawWrite(target.url, target.bodies, { gzip: false });
        const used = cpu.perMessage(points);
        log(
          `raw ${engine.sink} POSTs${warmUp ? ' (warm-up, not counted)' : ''}: ${fmt(d.rate)} points/s ` +
            `(per point: ${describeCpu(used)})`,
        );
        return { ...d, dbUs: used[db]! };
      };
      const backfill = (name: string, since: number, until: number): Promise<CommandRun> =>
        measureCommand({
          name: 'backfill',
          args: [
            'backfill',
            '--to',
            'ingest',
            '--sink',
            engine.sink,
            '--since',
            iso(since),
            '--until',
            iso(until),
            // A checkpoint of its own: a run never resumes an earlier one.
            '--checkpoint',
            join(servers.dir, `${name}-${engine.sink}.json`),
            ...common,
          ],
          pids: { s3rver: s3.pid, [db]: engine.server.pid },
          timeoutMs: COMMAND_TIMEOUT_MS,
          everyMs: SAMPLE_EVERY_MS,
        });

      // The first writes into a fresh server run slower (its caches, this process's HTTP client).
      await raw(true);
      const rawA = await raw();
      const loadBefore = load();
      const fixed = await backfill('empty', sinceMs - 2 * 86_400_000, sinceMs - 86_400_000);
      expectReport(`empty backfill ${engine.sink}`, fixed);
      const run = await backfill('backfill', sinceMs, untilMs);
      const loadAfter = load();
      const report = expectReport(`backfill ${engine.sink}`, run);
      const rawB = await raw();
      if (report.written !== messages.length || report.rejectedCount !== 0 || report.skipped !== 0)
        throw new Error(`backfill ${engine.sink} did not write every message: ${JSON.stringify(report)}`);

      const rawRate = mean([rawA.rate, rawB.rate]);
      const rate = perSecond(points, run.wallMs);
      const used = perUnit(run.cpuMs, points);
      const net = netOf('backfill', run, fixed, points);
      const dbUs = used[db]!;
      const netUsed = { ...used, backfill: net.commandUs };
      log(
        `backfill → ${engine.sink}: ${fmt(rate)} points/s (${(rate / rawRate).toFixed(2)} × raw), ` +
          `less the fixed cost ${fmt(net.rate)}; per point: ${describeCpu(used)}, backfill less the fixed cost ` +
          `${net.commandUs.toFixed(1)} µs (${(net.commandUs / dbUs).toFixed(2)} × ${db})`,
      );
      const conditions =
        `${mix}, in ${fmt(Number(report.groups))} site-hours, batches of ${fmt(batch)} messages; ` +
        `load average ${loadBefore} before, ${loadAfter} after`;
      figures.push(
        {
          stage: STAGE,
          name: `backfill throughput (S3 archive → ${engine.sink} → ${engine.label})`,
          value: Math.round(rate),
          unit: 'points/s',
          baseline: {
            name: `same points, raw POSTs of ${fmt(batch)} messages, plain, same server, before and after`,
            value: Math.round(rawRate),
          },
          ratio: rate / rawRate,
          note:
            `${fmt(points)} points in ${seconds(run.wallMs)}, process start to report; less ` +
            `${describeFixed('backfill', fixed)}: ${fmt(net.rate)} points/s (${(net.rate / rawRate).toFixed(2)} × raw); ` +
            `raw before/after ${fmt(rawA.rate)}/${fmt(rawB.rate)} points/s, ${db} ${rawA.dbUs.toFixed(1)}/` +
            `${rawB.dbUs.toFixed(1)} µs per point; ${conditions}`,
        },
        {
          stage: STAGE,
          name: `backfill's own CPU per point ÷ ${engine.label}'s`,
          value: us(net.commandUs),
          unit: 'µs/point',
          baseline: { name: `${db}'s CPU per point over the backfill`, value: us(dbUs) },
          ratio: net.commandUs / dbUs,
          target: { op: '<=', value: 0.5, of: 'ratio' },
          note:
            `backfill's CPU less its fixed cost, per point; the whole process: ${used.backfill!.toFixed(1)} µs ` +
            `(${(used.backfill! / dbUs).toFixed(2)} × ${db}); per point over the run: ${describeCpu(used)}, so ` +
            `${describeCeiling(netUsed, 'points/s')} (less the fixed cost); ${db} took the raw POSTs on ` +
            `${mean([rawA.dbUs, rawB.dbUs]).toFixed(1)} µs per point`,
        },
      );
    }

    // ---- Replay through ingest's sink into VictoriaMetrics: the stream, then the archive.
    const replay = (fromSeq: number): Promise<CommandRun> =>
      measureCommand({
        name: 'replay',
        args: ['replay', '--to', 'ingest', '--sink', 'influx2', '--from-seq', String(fromSeq), ...common],
        pids: { 'nats-server': nats.pid, s3rver: s3.pid, 'victoria-metrics': vm.pid },
        timeoutMs: COMMAND_TIMEOUT_MS,
        everyMs: SAMPLE_EVERY_MS,
      });
    const replayFigures = (
      from: string,
      run: CommandRun,
      fixed: CommandRun,
      loadBefore: string,
    ): Figure[] => {
      const report = run.report!;
      const n = messages.length;
      const rate = perSecond(n, run.wallMs);
      const used = perUnit(run.cpuMs, n);
      const net = netOf('replay', run, fixed, n);
      log(
        `replay from ${from}: ${fmt(rate)} msgs/s, less the fixed cost ${fmt(net.rate)}; per message: ` +
          `${describeCpu(used)}, replay less the fixed cost ${net.commandUs.toFixed(1)} µs`,
      );
      return [
        {
          stage: STAGE,
          name: `replay from ${from} (→ ingest influx2 → VictoriaMetrics)`,
          value: Math.round(rate),
          unit: 'msgs/s',
          note:
            `${fmt(n)} messages (${fmt(Number(report.fromStream))} from the stream, ${fmt(Number(report.fromArchive))} ` +
            `from the archive; ${fmt(points)} points, already in VictoriaMetrics from the backfill) in ` +
            `${seconds(run.wallMs)}, process start to report; less ${describeFixed('replay', fixed)}: ` +
            `${fmt(net.rate)} msgs/s; load average ${loadBefore} before, ${load()} after`,
        },
        {
          stage: STAGE,
          name: `replay from ${from}: the replay process's CPU per message`,
          value: us(net.commandUs),
          unit: 'µs/msg',
          note:
            `less its fixed cost; the whole process ${used.replay!.toFixed(1)} µs; per message over the run: ` +
            `${describeCpu(used)}, so ${describeCeiling({ ...used, replay: net.commandUs }, 'msgs/s')}`,
        },
      ];
    };
    // Cutting a stream of 100,000 messages down to one takes the file store longer than the default 5 s.
    const jsm = await jetstreamManager(nc, { timeout: 120_000 });
    const lastSeq = (await jsm.streams.info(HUB_STREAM)).state.last_seq;
    let loadBefore = load();
    const replayFixed = await replay(lastSeq + 1);
    expectReport('empty replay', replayFixed);
    const fromStream = await replay(1);
    const streamReport = expectReport('replay from the stream', fromStream);
    if (streamReport.fromStream !== messages.length || streamReport.written !== messages.length)
      throw new Error(`replay from the stream: ${JSON.stringify(streamReport)}`);
    figures.push(...replayFigures('the stream', fromStream, replayFixed, loadBefore));

    // The stream keeps only its last message: everything before comes from the archive.
    await jsm.streams.update(HUB_STREAM, { max_msgs: 1 });
    const state = (await jsm.streams.info(HUB_STREAM)).state;
    log(`BSU cut to max_msgs 1: holds sequences ${state.first_seq}–${state.last_seq}`);
    loadBefore = load();
    const fromArchive = await replay(1);
    const archiveReport = expectReport('replay from the archive', fromArchive);
    if (
      archiveReport.fromArchive !== messages.length - 1 ||
      archiveReport.written !== messages.length ||
      archiveReport.missingFromArchive !== 0
    )
      throw new Error(`replay from the archive: ${JSON.stringify(archiveReport)}`);
    figures.push(...replayFigures('the archive', fromArchive, replayFixed, loadBefore));
  } finally {
    await nc?.close();
    await servers.stopAll();
  }
  return figures;
}

/** True when this build has `switchyard audit` (for an unknown command, `--help` prints the program's help). */
async function auditAvailable(): Promise<boolean> {
  const p = startSwitchyard(['audit', '--help'], {}, { compiled: true });
  return (await p.exited) === 0 && p.stdout().includes('Usage: switchyard audit');
}

/** `migrate verify` (and `audit`, where this build has it) over a day of `dayUnits` units. */
async function overADay(options: ReplayBenchOptions): Promise<Figure[]> {
  const { log } = options;
  const figures: Figure[] = [];
  const servers = new TestServers('bench-day');
  let nc: NatsConnection | undefined;
  try {
    const nats = await servers.nats();
    const s3 = await servers.s3();
    const vm = await servers.victoriaMetrics();
    const influxdb = await servers.influxdb();
    nc = await natsConnect(nats.url);
    const envFile = writeEnvFile(servers.dir, { nats, s3, vm, influxdb });
    const withAudit = await auditAvailable();
    const jsm = await jetstreamManager(nc, { timeout: 120_000 });

    // Set-up, not measured: yesterday (UTC), one reading a minute per unit, in both engines (raw
    // line protocol, the points ingest would write), and with audit also in the stream and the archive.
    const day = {
      units: options.dayUnits,
      sites: FLEET.sites,
      dayStartMs: utcDayStartMs(1),
      everyMs: 60_000,
      seed: 13,
      chunk: 10_000,
    };
    const dayEndMs = day.dayStartMs + 86_400_000;
    const readings = dayReadings(day);
    if (withAudit)
      await jsm.streams.add({
        name: HUB_STREAM,
        subjects: ['bsu.>'],
        storage: StorageType.File,
        retention: RetentionPolicy.Limits,
        duplicate_window: nanos(900_000),
      });
    const batch = ingestConsumer.runnerDefaults.batchSize;
    const t0 = performance.now();
    let points = 0;
    for (const chunk of dayOfTelemetry(day)) {
      const bodies = lineProtocolBodies(chunk, batch);
      points += bodies.points.reduce((a, b) => a + b, 0);
      await Promise.all([
        rawWrite(
          `${vm.url}/api/v2/write?org=${LOCAL_STACK.influx2Org}&bucket=${LOCAL_STACK.influx2Bucket}&precision=ms`,
          bodies,
          { gzip: false },
        ),
        rawWrite(`${influxdb.url}/write?db=${LOCAL_STACK.influx1Database}&precision=ms`, bodies, {
          gzip: false,
        }),
        withAudit ? publishToHub(nc, chunk) : undefined,
      ]);
    }
    const what = `${fmt(day.units)} units × 1 reading a minute × 24 h = ${fmt(readings)} telemetry points (${iso(day.dayStartMs)} – ${iso(dayEndMs)}), ${day.sites} sites`;
    log(`the day written to both engines in ${seconds(performance.now() - t0)}: ${what}`);
    if (points !== readings) throw new Error(`the day made ${points} points, expected ${readings}`);

    const window = [
      '--since',
      iso(day.dayStartMs),
      '--until',
      iso(dayEndMs),
      '--env-file',
      envFile,
      '--json',
    ];
    const dbs = { 'victoria-metrics': vm.pid, influxd: influxdb.pid };
    let loadBefore = load();
    const verify = await measureCommand({
      name: 'verify',
      args: ['migrate', 'verify', '--from', 'influx1', '--to', 'influx2', ...window],
      pids: dbs,
      timeoutMs: COMMAND_TIMEOUT_MS,
      everyMs: SAMPLE_EVERY_MS,
    });
    const verifyReport = expectReport('migrate verify', verify);
    const mismatches = (verifyReport.mismatches as unknown[]).length;
    const compared = Number(verifyReport.compared);
    if (compared !== day.units * 24)
      throw new Error(`migrate verify compared ${compared} rows, expected ${day.units * 24}`);
    log(
      `migrate verify: ${seconds(verify.wallMs)}, ${fmt(compared)} site-device-hours, ${mismatches} mismatches; ` +
        `CPU ${describeMs(verify.cpuMs)}`,
    );
    figures.push({
      stage: STAGE,
      name: `migrate verify influx1 → influx2 over a day of ${fmt(day.units)} units`,
      value: Number((verify.wallMs / 1000).toFixed(2)),
      unit: 's',
      note:
        `${what}; process start to report; ${fmt(compared)} site-device-hours compared (SoC and W: count, min, ` +
        `max, sum), ${mismatches} mismatches; CPU over the run: ${describeMs(verify.cpuMs)}; ` +
        `load average ${loadBefore} before, ${load()} after`,
    });

    if (!withAudit) {
      log('audit: not in this build (switchyard audit --help failed): TODO figure');
      figures.push({
        stage: STAGE,
        name: `TODO: switchyard audit over a day of ${fmt(day.units)} units`,
        value: NaN,
        unit: 's',
        note: 'not measured: this build has no switchyard audit command',
      });
      return figures;
    }
    // What audit compares against: the archive written by its consumer, and an ingest durable per
    // engine whose ack floor is the stream's end (the engines were written raw).
    const archived = await drainWithConsumer({
      command: 'archive',
      settings: archiveSettings({ nats, s3 }),
      messages: readings,
      everyMs: 200,
      timeoutMs: COMMAND_TIMEOUT_MS,
    });
    log(`the day archived at ${fmt(archived.messages.rate)} msgs/s`);
    const lastSeq = (await jsm.streams.info(HUB_STREAM)).state.last_seq;
    // A durable's ack floor moves once it acks: each starts at the last message and acks it.
    for (const engine of ['influx1', 'influx2']) {
      const durable = engineDurable(engine);
      await jsm.consumers.add(HUB_STREAM, {
        durable_name: durable,
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.StartSequence,
        opt_start_seq: lastSeq,
        filter_subject: 'bsu.*.*.*',
      });
      const last = await (await jetstream(nc).consumers.get(HUB_STREAM, durable)).next({ expires: 10_000 });
      if (!last || !(await last.ackAck())) throw new Error(`${durable}: the last message was not acked`);
      const floor = (await jsm.consumers.info(HUB_STREAM, durable)).ack_floor.stream_seq;
      if (floor !== lastSeq) throw new Error(`${durable}: ack floor ${floor}, expected ${lastSeq}`);
    }
    for (const deep of [false, true]) {
      const name = `audit${deep ? ' --deep' : ''}`;
      loadBefore = load();
      const audit = await measureCommand({
        name: 'audit',
        args: ['audit', ...(deep ? ['--deep'] : []), ...window],
        pids: { 'nats-server': nats.pid, s3rver: s3.pid, ...dbs },
        timeoutMs: COMMAND_TIMEOUT_MS,
        everyMs: SAMPLE_EVERY_MS,
      });
      // Exit 1 is a gap found: still a timed audit, and the figure says so.
      if ((audit.code !== 0 && audit.code !== 1) || !audit.report) {
        log(`${name}: exit ${audit.code}, no report: TODO figure\n${audit.output.slice(-2000)}`);
        figures.push({
          stage: STAGE,
          name: `TODO: switchyard ${name} over a day of ${fmt(day.units)} units`,
          value: NaN,
          unit: 's',
          note: `not measured: ${name} exited ${audit.code} without a report: ${audit.output.slice(-300)}`,
        });
        continue;
      }
      const summary = JSON.stringify(audit.report.summary);
      log(
        `${name}: ${seconds(audit.wallMs)}, exit ${audit.code}; CPU ${describeMs(audit.cpuMs)}; ${summary}`,
      );
      figures.push({
        stage: STAGE,
        name: `${name} over a day of ${fmt(day.units)} units`,
        value: Number((audit.wallMs / 1000).toFixed(2)),
        unit: 's',
        note:
          `${what}, also in BSU (${fmt(lastSeq)} messages) and in the archive (written by the ` +
          `${archiveConsumer.name} consumer), both engines' ingest durables acked to the end; process start to ` +
          `report, exit ${audit.code}${audit.code === 1 ? ' (gaps reported)' : ''}; its summary: ${summary}; ` +
          `CPU over the run: ${describeMs(audit.cpuMs)}; load average ${loadBefore} before, ${load()} after`,
      });
    }
  } finally {
    await nc?.close();
    await servers.stopAll();
  }
  return figures;
}

/** `verify 4,210 ms, influxd 3,020 ms`. */
const describeMs = (cpuMs: Record<string, number>): string =>
  Object.entries(cpuMs)
    .map(([name, ms]) => `${name} ${fmt(ms)} ms`)
    .join(', ');

/** Log lines prefixed with the suite's elapsed time. */
function timedLog(log: (line: string) => void): (line: string) => void {
  const t0 = performance.now();
  return (line) => log(`replay [${((performance.now() - t0) / 1000).toFixed(0).padStart(3)} s] ${line}`);
}
