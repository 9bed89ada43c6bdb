/**
 * `switchyard dev`: the local stack, a bridge and simulated devices per site, and the three
 * consumers, supervised, with a live view (docs/dev.md). Every process it starts is recorded, the
 * servers in `DIR/stack.json` and the children in `DIR/dev.json`: dev stops exactly those, and a
 * later dev cleans up after one that was killed.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, openSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { addSite, HubStreamConfigSchema } from '../cloud/hub-stream.ts';
import { loadConfig } from '../lib/config.ts';
import { describeError, UsageError } from '../lib/errors.ts';
import { createLogger, type Logger } from '../lib/log.ts';
import { connectNats, natsAuthOf } from '../lib/nats.ts';
import { freePort, isRunning } from '../lib/process.ts';
import { sleep } from '../lib/timers.ts';
import { SimClock } from '../simulate/traffic.ts';
import { tryReadStack, type Stack } from '../stack/stack-file.ts';
import { stackUp } from '../stack/up.ts';
import { stackDown } from '../stack/verbs.ts';
import type { DevConfig } from './config.ts';
import {
  readDevRecord,
  recordProcess,
  removeDevRecord,
  stopLeftovers,
  writeDevRecord,
  type DevRecord,
} from './dev-record.ts';
import { SiteSimulator } from './site-simulator.ts';
import {
  StatusCollector,
  type ConsumerUnit,
  type DevEvent,
  type DevStatus,
  type SiteUnit,
} from './status.ts';
import { SupervisedProcess, type ChildSpec, type SupervisorEvent } from './supervisor.ts';

/** The consumers dev runs, with the arguments that suit a machine where someone watches. */
export const DEV_CONSUMERS: readonly { name: string; args: string[] }[] = [
  // The archive waits up to fetchExpiresMs to fill a batch, one object per batch: 5 s instead of
  // 15 s shows objects landing in S3 while one watches, at a few objects a minute per site.
  { name: 'archive', args: ['archive', '--fetch-expires-ms', '5000'] },
  { name: 'monitor', args: ['monitor'] },
  // SWITCHYARD_SINK in the stack's cloud env picks the engine: influx2, into VictoriaMetrics.
  { name: 'ingest', args: ['ingest'] },
];

/** How long a bridge or consumer may take to stop on SIGTERM before SIGKILL (ms). */
const CHILD_GRACE_MS = 15_000;
/** How long dev waits for a bridge to be ready before its site's devices start anyway (ms). */
const BRIDGE_READY_TIMEOUT_MS = 30_000;
/** Events the view keeps on screen. */
const MAX_EVENTS = 6;

/** Where dev writes what it shows. */
export interface DevOutput {
  /** One snapshot, every second (view) or every `statusIntervalMs` (JSON lines). */
  status(status: DevStatus): void;
  /** One line of progress or news (stack starting, a child died, stopping …). */
  note(line: string): void;
  /** A URL to keep in view (the console's), once it is known. */
  link?(name: string, url: string): void;
}

/** What a finished dev run stopped. */
export interface DevSummary {
  /** Servers of the stack that were running and were stopped. */
  servers: string[];
  /** Child processes (bridges, consumers) that were stopped. */
  processes: number;
  dir: string;
}

/**
 * One run of `switchyard dev`. `run()` resolves once everything it started has stopped, after
 * `stop()` (or rejects when start-up fails, after stopping what it had started); `stop()` a second
 * time kills the children at once instead of waiting for them.
 */
export class DevSession {
  readonly dir: string;
  readonly logsDir: string;
  private readonly stopController = new AbortController();
  private forced = false;
  private phase: DevStatus['phase'] = 'starting';
  private readonly events: DevEvent[] = [];
  private log: Logger | undefined;
  private record: DevRecord | undefined;
  private stack: Stack | undefined;
  private nc: NatsConnection | undefined;
  private jsm: JetStreamManager | undefined;
  private readonly sites: SiteUnit[] = [];
  private readonly consumers: ConsumerUnit[] = [];
  private consoleProcess: SupervisedProcess | undefined;
  private readonly startedAtMs = Date.now();

  constructor(
    private readonly config: DevConfig,
    private readonly output: DevOutput,
  ) {
    this.dir = resolve(config.dir);
    this.logsDir = join(this.dir, 'logs');
  }

  /** Asks the run to stop; a second call stops the children with SIGKILL instead of SIGTERM. */
  stop(): void {
    if (this.stopController.signal.aborted) {
      this.forced = true;
      for (const p of this.allProcesses()) p.kill();
      return;
    }
    this.stopController.abort();
  }

  /** True once `stop()` was called. */
  get stopRequested(): boolean {
    return this.stopController.signal.aborted;
  }

  private get stopping(): boolean {
    return this.stopController.signal.aborted;
  }

  private allProcesses(): SupervisedProcess[] {
    return [
      ...this.sites.map((s) => s.bridge),
      ...this.consumers.map((c) => c.process),
      ...(this.consoleProcess ? [this.consoleProcess] : []),
    ];
  }

  async run(): Promise<DevSummary> {
    await this.checkDir();
    mkdirSync(this.logsDir, { recursive: true });
    this.log = createLogger('switchyard-dev', { fd: openSync(join(this.logsDir, 'dev.log'), 'a') });
    this.record = {
      version: 1,
      dev: recordProcess('dev', process.pid),
      startedAt: new Date(this.startedAtMs).toISOString(),
      processes: [],
    };
    writeDevRecord(this.dir, this.record);
    let failure: unknown;
    let summary: DevSummary | undefined;
    // stackUp's readiness probes wait on handles that do not hold the event loop (detached
    // children, AbortSignal.timeout): interrupted early, it would let the loop drain and the
    // process exit (13) before it settled and stopped its servers. This timer holds the loop.
    const keepAlive = setInterval(() => undefined, 60_000);
    try {
      await this.start();
      if (!this.stopping) await this.watch();
    } catch (err) {
      // A failure after a stop request is the stop interrupting start-up, not a fault.
      if (!this.stopping) failure = err;
    } finally {
      summary = await this.shutdown();
      clearInterval(keepAlive);
    }
    if (failure) throw failure;
    return summary;
  }

  /** Refuses a DIR where another dev or a stack runs; cleans up after a dev that was killed. */
  private async checkDir(): Promise<void> {
    const previous = readDevRecord(this.dir);
    if (previous && previous.dev.pid !== process.pid && isRunning(previous.dev))
      throw new UsageError(
        `switchyard dev is already running in ${this.dir} (pid ${previous.dev.pid}): ` +
          `stop it (Ctrl-C in its terminal, or kill -TERM ${previous.dev.pid}) or use another --dir`,
      );
    if (previous) {
      // That dev was killed before it could stop what it started: its children and its stack.
      const stopped = await stopLeftovers(previous);
      const { stopped: servers } = await stackDown(this.dir);
      removeDevRecord(this.dir);
      this.output.note(
        `cleaned up after a dev that did not stop (pid ${previous.dev.pid}): ` +
          `${stopped.length} processes, ${servers.length} servers`,
      );
      return;
    }
    if (tryReadStack(this.dir)?.servers.some(isRunning))
      throw new UsageError(
        `a stack started by 'switchyard stack up' is running in ${this.dir}: ` +
          `stop it with 'switchyard stack down --dir ${this.dir}', or give dev another --dir`,
      );
  }

  private event(e: SupervisorEvent): void {
    this.events.push({ ...e, at: new Date().toISOString() });
    if (this.events.length > MAX_EVENTS) this.events.shift();
    this.log?.[e.level]({ process: e.name }, e.message);
    this.output.note(`${e.name}: ${e.message}`);
  }

  private async start(): Promise<void> {
    const { config } = this;
    const startedMs = Date.now();
    this.output.note(`starting the stack in ${this.dir} (${config.sites} site(s)) …`);
    this.stack = await stackUp({ dir: this.dir, sites: config.sites, signal: this.stopController.signal });
    const stack = this.stack;
    this.log?.info(
      { servers: stack.servers.map((s) => ({ name: s.name, pid: s.pid, url: s.url })) },
      'stack up',
    );
    this.output.note(
      `stack up: ${stack.servers.length} servers (${((Date.now() - startedMs) / 1000).toFixed(1)} s)`,
    );
    if (this.stopping) return;

    this.nc = await connectNats({
      url: stack.hub.url,
      name: 'switchyard-dev',
      connectTimeoutMs: 5000,
      waitForServer: false,
      auth: natsAuthOf(stack.cloudSettings()),
    });
    this.jsm = await jetstreamManager(this.nc, { timeout: 2000 });
    // The hub's defaults, whatever this shell's SWITCHYARD_* say: dev's hub is dev's own.
    const hubConfig = loadConfig(HubStreamConfigSchema, { env: {}, flags: { natsUrl: stack.hub.url } });
    for (const site of stack.sites) await addSite(this.jsm, site, hubConfig);
    this.log?.info({ sites: stack.sites }, 'sites sourced into BSU');

    const hooks = {
      onEvent: (e: SupervisorEvent) => this.event(e),
      onSpawn: (name: string, pid: number) => {
        if (!this.record) return;
        this.record.processes.push(recordProcess(name, pid));
        writeDevRecord(this.dir, this.record);
        this.log?.info({ process: name, childPid: pid }, 'started');
      },
    };
    const child = (name: string, args: string[], env: Record<string, string>): SupervisedProcess =>
      new SupervisedProcess(
        { name, args, env, logFile: join(this.logsDir, `${name}.log`) } satisfies ChildSpec,
        hooks,
      );

    for (const [i, site] of stack.sites.entries()) {
      const simulator = new SiteSimulator({
        name: `devices-${site}`,
        settings: {
          mqtt: stack.mqtt(site).url,
          rate: config.rate,
          devices: config.devices,
          invalidRatio: config.invalidRatio,
          // The bridge refuses readings stamped ahead of its clock: devices keep the wall clock.
          clock: SimClock.wall,
          seed: i + 1,
        },
        // Each device is enrolled at its site's broker and connects as its own user.
        stack: { dir: stack.dir, site },
        onEvent: hooks.onEvent,
      });
      this.sites.push({ site, bridge: child(`edge-${site}`, ['edge'], stack.siteEnv(site)), simulator });
    }
    for (const c of DEV_CONSUMERS)
      this.consumers.push({ name: c.name, process: child(c.name, c.args, stack.cloudEnv()) });
    // The fleet console (cloud/console/) on a port picked here, so that its URL is known now; its
    // token rides in the URL dev prints, which logs the browser in (an HttpOnly cookie).
    const consoleToken = randomBytes(18).toString('base64url');
    const consoleUrl = `http://127.0.0.1:${await freePort()}/?token=${consoleToken}`;
    this.consoleProcess = child('console', ['console', '--port', new URL(consoleUrl).port], {
      ...stack.cloudEnv(),
      SWITCHYARD_CONSOLE_TOKEN: consoleToken,
    });
    await Promise.all(this.allProcesses().map((p) => p.start()));
    this.output.note(`started ${this.sites.length} bridge(s) and ${this.consumers.length} consumers`);
    this.output.note(`console: ${consoleUrl}`);
    this.output.link?.('console', consoleUrl);
  }

  /** Draws snapshots until stopped; starts each site's devices once its bridge is ready. */
  private async watch(): Promise<void> {
    const signal = this.stopController.signal;
    const collector = new StatusCollector({
      dir: this.dir,
      logsDir: this.logsDir,
      sites: this.sites,
      consumers: this.consumers,
      hub: () => this.jsm,
      startedAtMs: this.startedAtMs,
    });
    // Devices publish only once their bridge has subscribed: the bridge's MQTT session does not
    // exist before its first connection, and the broker would drop what came before.
    const devices = Promise.all(
      this.sites.map(async (s) => {
        const ready = await s.bridge.waitReady(BRIDGE_READY_TIMEOUT_MS, signal);
        if (signal.aborted) return;
        if (!ready)
          this.event({
            name: s.bridge.spec.name,
            level: 'warn',
            message: 'not ready: starting its devices anyway',
          });
        s.simulator?.start();
      }),
    ).then(() => {
      if (!signal.aborted) this.phase = 'running';
    });

    const periodMs = Math.min(1000, this.config.statusIntervalMs);
    while (!signal.aborted) {
      const t0 = Date.now();
      const status = await collector.sample(this.phase, this.events);
      if (signal.aborted) break;
      this.output.status(status);
      await sleep(Math.max(0, periodMs - (Date.now() - t0)), signal);
    }
    await devices;
  }

  private async shutdown(): Promise<DevSummary> {
    this.phase = 'stopping';
    this.log?.info('stopping');
    const simulators = this.sites.flatMap((s) => (s.simulator ? [s.simulator] : []));
    if (simulators.length > 0) {
      this.output.note('stopping: devices …');
      await Promise.all(simulators.map((s) => s.stop()));
    }
    const processes = this.allProcesses();
    if (processes.length > 0) {
      this.output.note('stopping: bridges and consumers …');
      await Promise.all(processes.map((p) => p.stop(this.forced ? 0 : CHILD_GRACE_MS)));
    }
    await this.nc?.close().catch(() => undefined);
    let servers: string[] = [];
    // Only a stack this run started: one that stackUp refused belongs to someone else.
    if (this.stack) {
      this.output.note('stopping: the stack …');
      try {
        ({ stopped: servers } = await stackDown(this.dir, { graceMs: this.forced ? 2000 : 10_000 }));
      } catch (err) {
        this.output.note(`stack down failed: ${describeError(err)}`);
      }
    }
    removeDevRecord(this.dir);
    this.log?.info({ servers, processes: processes.length }, 'stopped');
    this.log?.flush();
    return { servers, processes: processes.length, dir: this.dir };
  }
}
