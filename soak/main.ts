/**
 * `npm run soak -- --minutes N [--seed S] [--dir DIR] [--no-faults]`: the whole pipeline on real
 * local servers (the secure stack, 2 sites, simulated devices, 2 bridges, archive, monitor, ingest
 * into VictoriaMetrics and InfluxDB 1.x) under a seeded schedule of faults; at the end it drains
 * and checks that every valid reading sent is everywhere exactly once (docs/reliability.md).
 * Exit 0 when every check passes, 1 otherwise.
 */
import { mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { addSite, HubStreamConfigSchema } from '../cloud/hub-stream.ts';
import { loadConfig } from '../lib/config.ts';
import { describeError } from '../lib/errors.ts';
import { connectNats, natsAuthOf } from '../lib/nats.ts';
import { waitUntil } from '../lib/timers.ts';
import { SupervisedProcess, type SupervisorEvent } from '../dev/supervisor.ts';
import type { Stack } from '../stack/stack-file.ts';
import { stackUp } from '../stack/up.ts';
import { stackDown } from '../stack/verbs.ts';
import {
  checkArchive,
  checkEngine,
  checkHub,
  checkRedis,
  invalidKept,
  readHub,
  type CheckResult,
} from './checks.ts';
import { SoakDevices } from './devices.ts';
import { buildSchedule, runFault, type FaultOutcome, type SoakTargets } from './schedule.ts';

export interface SoakOptions {
  minutes: number;
  seed: number;
  dir: string;
  faults: boolean;
  /** Messages per second per site from the steady devices. */
  ratePerS: number;
  /** Devices per site. */
  devices: number;
  /** Longest wait for the pipeline to drain once the devices stop, ms. */
  drainTimeoutMs: number;
  log(line: string): void;
}

export interface SoakReport {
  ok: boolean;
  checks: CheckResult[];
  faults: FaultOutcome[];
  perDevice: { site: string; device: string; valid: number; invalid: number }[];
  drainMs: number;
}

const CHILD_GRACE_MS = 15_000;

/** The consumers, each a `switchyard` command as an operator runs it, with the stack's cloud env. */
const CONSUMERS = [
  { name: 'archive', args: ['archive', '--fetch-expires-ms', '1000'] },
  { name: 'monitor', args: ['monitor'] },
  { name: 'ingest-influx2', args: ['ingest', '--sink', 'influx2'] },
  { name: 'ingest-influx1', args: ['ingest', '--sink', 'influx1'] },
] as const;

/** Every durable of BSU has nothing pending and every site source has no lag. */
async function drained(jsm: JetStreamManager): Promise<boolean> {
  const info = await jsm.streams.info('BSU');
  if ((info.sources ?? []).some((s) => s.lag > 0)) return false;
  for await (const c of jsm.consumers.list('BSU'))
    if (c.num_pending > 0 || c.num_ack_pending > 0) return false;
  return true;
}

export async function runSoak(options: SoakOptions): Promise<SoakReport> {
  const dir = resolve(options.dir);
  const logsDir = join(dir, 'logs');
  mkdirSync(logsDir, { recursive: true });
  const processes: SupervisedProcess[] = [];
  let stack: Stack | undefined;
  let nc: NatsConnection | undefined;
  let devices: SoakDevices | undefined;
  const keepAlive = setInterval(() => undefined, 60_000);
  try {
    options.log(`stack up in ${dir} …`);
    stack = await stackUp({ dir, sites: 2 });
    nc = await connectNats({
      url: stack.hub.url,
      name: 'switchyard-soak',
      connectTimeoutMs: 5000,
      waitForServer: false,
      auth: natsAuthOf(stack.cloudSettings()),
    });
    const jsm = await jetstreamManager(nc, { timeout: 5000 });
    const hubConfig = loadConfig(HubStreamConfigSchema, { env: {}, flags: { natsUrl: stack.hub.url } });
    for (const site of stack.sites) await addSite(jsm, site, hubConfig);

    const hooks = {
      onEvent: (e: SupervisorEvent) => options.log(`${e.name}: ${e.message}`),
      onSpawn: () => undefined,
    };
    const child = (name: string, args: string[], env: Record<string, string>) =>
      new SupervisedProcess({ name, args, env, logFile: join(logsDir, `${name}.log`) }, hooks);
    const bridges = stack.sites.map((site) => child(`edge-${site}`, ['edge'], stack!.siteEnv(site)));
    const consumers = CONSUMERS.map((c) => child(c.name, [...c.args], stack!.cloudEnv()));
    processes.push(...bridges, ...consumers);
    await Promise.all(processes.map((p) => p.start()));
    for (const p of processes)
      if (!(await p.waitReady(60_000))) throw new Error(`${p.spec.name} not ready; see ${p.spec.logFile}`);
    options.log(`pipeline ready: ${bridges.length} bridges, ${consumers.length} consumers`);

    const startMs = Date.now();
    devices = new SoakDevices(stack, {
      seed: options.seed,
      ratePerS: options.ratePerS,
      devices: options.devices,
    });
    await devices.start();
    const durationMs = options.minutes * 60_000;
    const targets: SoakTargets = { stack, processes, devices, jsm };
    const schedule = options.faults ? buildSchedule(targets, options.seed, durationMs) : [];
    options.log(`devices running for ${options.minutes} min; ${schedule.length} faults scheduled`);
    const faults: FaultOutcome[] = [];
    for (const fault of schedule) {
      const wait = startMs + fault.atMs - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      options.log(`fault: ${fault.kind} ${fault.target}`);
      faults.push(await runFault(fault, targets));
    }
    const rest = startMs + durationMs - Date.now();
    if (rest > 0) await new Promise((r) => setTimeout(r, rest));
    options.log('stopping the devices …');
    const sent = await devices.stop();
    devices = undefined;

    const drainStart = Date.now();
    const validSent = sent.filter((s) => !s.invalid).length;
    const totalSent = sent.length;
    // What BSU ends with: every valid reading, and the invalid ones the bridge keeps.
    const toStore = validSent + invalidKept(sent);
    await waitUntil(
      'the pipeline to drain',
      async () => {
        const info = await jsm.streams.info('BSU');
        return info.state.messages >= toStore && (await drained(jsm));
      },
      { timeoutMs: options.drainTimeoutMs, everyMs: 500 },
    ).catch((err: unknown) => options.log(`not drained: ${describeError(err)}`));
    const drainMs = Date.now() - drainStart;
    options.log(
      `drained in ${(drainMs / 1000).toFixed(1)} s; checking ${validSent} valid of ${totalSent} sent …`,
    );

    const hub = await readHub(nc);
    const window = { sinceMs: startMs - 3_600_000, untilMs: Date.now() + 3_600_000 };
    const checks: CheckResult[] = [checkHub(sent, hub)];
    for (const check of [
      () => checkArchive(stack!, hub),
      () => checkRedis(stack!, sent),
      () => checkEngine(stack!, 'influx2', sent, window),
      () => checkEngine(stack!, 'influx1', sent, window),
    ])
      checks.push(
        await check().catch((err: unknown) => ({
          name: 'check',
          ok: false,
          figures: {},
          problems: [describeError(err)],
        })),
      );
    const perDevice = new Map<string, { site: string; device: string; valid: number; invalid: number }>();
    for (const s of sent) {
      const d = perDevice.get(s.device) ?? { site: s.site, device: s.device, valid: 0, invalid: 0 };
      if (s.invalid) d.invalid++;
      else d.valid++;
      perDevice.set(s.device, d);
    }
    return {
      ok: checks.every((c) => c.ok) && faults.every((f) => f.recovered),
      checks,
      faults,
      perDevice: [...perDevice.values()].sort((a, b) => (a.device < b.device ? -1 : 1)),
      drainMs,
    };
  } finally {
    await devices?.stop().catch(() => undefined);
    await Promise.all(processes.map((p) => p.stop(CHILD_GRACE_MS)));
    await nc?.close().catch(() => undefined);
    if (stack) await stackDown(dir, { graceMs: 10_000 }).catch(() => undefined);
    clearInterval(keepAlive);
  }
}

/** The report as the tables the soak prints. */
export function formatReport(report: SoakReport): string {
  const lines: string[] = [];
  lines.push('fault                              count  recover (ms, max)  ok');
  const byKind = new Map<string, FaultOutcome[]>();
  for (const f of report.faults) byKind.set(f.kind, [...(byKind.get(f.kind) ?? []), f]);
  for (const [name, fs] of byKind)
    lines.push(
      `${name.padEnd(34)} ${String(fs.length).padStart(5)}  ${String(Math.max(...fs.map((f) => f.recoverMs))).padStart(17)}  ${fs.every((f) => f.recovered) ? 'yes' : 'NO'}`,
    );
  for (const f of report.faults.filter((x) => !x.recovered))
    lines.push(`NOT RECOVERED ${f.kind} ${f.target}: ${f.error ?? ''}`);
  lines.push('', 'device                 valid  invalid');
  for (const d of report.perDevice)
    lines.push(
      `${`${d.site}/${d.device}`.padEnd(22)} ${String(d.valid).padStart(5)}  ${String(d.invalid).padStart(7)}`,
    );
  lines.push('', `drained in ${(report.drainMs / 1000).toFixed(1)} s`);
  for (const c of report.checks) {
    const figures = Object.entries(c.figures)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ');
    lines.push(`${c.ok ? 'PASS' : 'FAIL'} ${c.name}: ${figures}`);
    for (const p of c.problems) lines.push(`     ${p}`);
  }
  return lines.join('\n');
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      minutes: { type: 'string', default: '5' },
      seed: { type: 'string', default: '1' },
      dir: { type: 'string' },
      'no-faults': { type: 'boolean', default: false },
      rate: { type: 'string', default: '40' },
      devices: { type: 'string', default: '5' },
      json: { type: 'boolean', default: false },
    },
  });
  const report = await runSoak({
    minutes: Number(values.minutes),
    seed: Number(values.seed),
    dir: values.dir ?? mkdtempSync(join(tmpdir(), 'switchyard-soak-')),
    faults: !values['no-faults'],
    ratePerS: Number(values.rate),
    devices: Number(values.devices),
    drainTimeoutMs: 120_000,
    log: (line) => console.error(`[soak ${new Date().toISOString().slice(11, 19)}] ${line}`),
  });
  console.log(formatReport(report));
  if (values.json) console.log(JSON.stringify({ ...report, perDevice: undefined }));
  console.log(report.ok ? 'soak passed' : 'soak FAILED');
  return report.ok ? 0 : 1;
}

if (import.meta.url === `file://${process.argv[1]}`)
  main().then(
    (code) => process.exit(code),
    (err: unknown) => {
      console.error(`soak failed: ${describeError(err)}`);
      process.exit(1);
    },
  );
