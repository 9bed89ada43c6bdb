/**
 * A site's simulated devices, run in dev's own process (simulate/simulator.ts): no extra process
 * to start, and dev counts every message as it is handed to the site's MQTT broker. A run that
 * fails (the broker went away) starts again after a backoff, like a supervised child process.
 */
import { sleep } from '../lib/timers.ts';
import { simulateConfig, type SimulateConfig } from '../simulate/config.ts';
import { runSimulator } from '../simulate/simulator.ts';
import { deviceId } from '../simulate/traffic.ts';
import { brokerHasAuth } from '../stack/mosquitto.ts';
import { readStack } from '../stack/stack-file.ts';
import { addDevices } from '../stack/verbs.ts';
import { RESTART_BACKOFF_MS, type SupervisorEvent } from './supervisor.ts';

/** What dev knows of a site's simulator. */
export const SimulatorState = {
  /** Connecting or publishing. */
  running: 'running',
  /** The last run failed; the next starts after a backoff. */
  restarting: 'restarting',
  stopped: 'stopped',
} as const;
export type SimulatorState = (typeof SimulatorState)[keyof typeof SimulatorState];

export interface SiteSimulatorOptions {
  /** Name in the view and in events (`sim-site-1`). */
  name: string;
  /** Settings of every run (`mqtt`, `rate`, `devices` …), over simulate's defaults. */
  settings: Partial<SimulateConfig>;
  /**
   * The stack and site whose broker the devices publish to: each device is enrolled there
   * (`stack add-device`) and connects as its own user. Left out, or a broker without users:
   * anonymous.
   */
  stack?: { dir: string; site: string };
  onEvent(event: SupervisorEvent): void;
}

export class SiteSimulator {
  state: SimulatorState = SimulatorState.running;
  /** Messages handed to the broker since dev started, across runs. */
  published = 0;
  /** Runs started again after a failure. */
  restarts = 0;
  /** Why the last run failed. */
  lastError: string | undefined;

  private readonly controller = new AbortController();
  private loop: Promise<void> | undefined;
  private config: SimulateConfig;

  /** Throws ConfigError when the settings are not valid simulate settings. */
  constructor(private readonly options: SiteSimulatorOptions) {
    this.config = simulateConfig(options.settings);
  }

  /** Starts publishing; returns at once. */
  start(): void {
    this.loop ??= this.run();
  }

  private async run(): Promise<void> {
    const signal = this.controller.signal;
    let failures = 0;
    while (!signal.aborted) {
      this.state = SimulatorState.running;
      const startedAtMs = Date.now();
      try {
        await this.enrol();
        await runSimulator(
          { ...this.config, drainTimeoutMs: 5000, onPublish: () => this.published++ },
          signal,
        );
        // A run without count or duration ends only when stopped.
        if (signal.aborted) break;
      } catch (err) {
        if (signal.aborted) break;
        this.lastError = (err as Error).message;
      }
      if (Date.now() - startedAtMs >= 30_000) failures = 0;
      const delayMs = RESTART_BACKOFF_MS[Math.min(failures, RESTART_BACKOFF_MS.length - 1)] ?? 30_000;
      failures++;
      this.state = SimulatorState.restarting;
      this.options.onEvent({
        name: this.options.name,
        level: 'warn',
        message: `stopped (${this.lastError ?? 'ended'}): restarting in ${delayMs / 1000} s`,
      });
      await sleep(delayMs, signal);
      if (!signal.aborted) this.restarts++;
    }
    this.state = SimulatorState.stopped;
  }

  /** Enrols the devices at the stack's broker once (idempotent), as `stack add-device` does. */
  private async enrol(): Promise<void> {
    const at = this.options.stack;
    if (!at || this.config.devicesFile) return;
    if (!brokerHasAuth(readStack(at.dir).mqtt(at.site))) return;
    const ids = Array.from({ length: this.config.devices }, (_, i) => deviceId(this.config.devicePrefix, i));
    const { devicesFile } = await addDevices(at.dir, at.site, ids);
    this.config = { ...this.config, devicesFile };
  }

  /** Stops sending and resolves once the messages in flight have their PUBACK (at most ~5 s). */
  async stop(): Promise<void> {
    this.controller.abort();
    await this.loop;
    this.state = SimulatorState.stopped;
  }
}
