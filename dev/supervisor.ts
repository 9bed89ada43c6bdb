/**
 * The child processes of `switchyard dev`: each one a `switchyard <command>` run the way an operator
 * runs it, with its JSON logs appended to its own file, restarted with backoff when it dies
 * unexpectedly, and stopped (SIGTERM, then SIGKILL) only by the PID it was given.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { childEnv } from '../lib/env.ts';
import { ExitCode } from '../lib/errors.ts';
import { freePort } from '../lib/process.ts';
import { waitUntil, withTimeout } from '../lib/timers.ts';

/**
 * The `switchyard` entry point to run children with: the sources' launcher in a checkout, or the
 * compiled CLI next to this module when running from dist/.
 */
export const SWITCHYARD_ENTRY = ((): string => {
  const bin = fileURLToPath(new URL('../bin/switchyard.mjs', import.meta.url));
  return existsSync(bin) ? bin : fileURLToPath(new URL('../cli/main.js', import.meta.url));
})();

/** What dev knows of a child without asking it. */
export const Lifecycle = {
  /** Spawned and not exited. */
  running: 'running',
  /** Died unexpectedly; starts again after a backoff. */
  restarting: 'restarting',
  /** Exited with a usage error (exit 2): restarting would fail the same way. */
  down: 'down',
  /** Stopped by dev. */
  stopped: 'stopped',
} as const;
export type Lifecycle = (typeof Lifecycle)[keyof typeof Lifecycle];

/** Restart delays after consecutive unexpected exits (ms); the last one repeats. */
export const RESTART_BACKOFF_MS = [1000, 2000, 5000, 10_000, 30_000] as const;
/** A child that ran this long before dying starts again from the first delay (ms). */
const STABLE_AFTER_MS = 30_000;

export interface ChildSpec {
  /** Name in the view and the log file's name (`logs/<name>.log`). */
  name: string;
  /** `switchyard` arguments without `--ops-port`: every start gets a free port of its own. */
  args: string[];
  /** `SWITCHYARD_*` settings on top of this process's environment. */
  env: Record<string, string>;
  /** File the child's stdout and stderr are appended to. */
  logFile: string;
}

/** Something dev's operator should hear about (an exit, a restart). */
export interface SupervisorEvent {
  name: string;
  level: 'info' | 'warn' | 'error';
  message: string;
}

export interface SupervisorHooks {
  onEvent(event: SupervisorEvent): void;
  /** Called with the PID of every process spawned, so a record of them can be kept. */
  onSpawn(name: string, pid: number): void;
}

const exitText = (code: number | null, signal: NodeJS.Signals | null): string =>
  code !== null ? `exit ${code}` : `signal ${signal ?? 'unknown'}`;

/** One supervised `switchyard <command>` child process. */
export class SupervisedProcess {
  lifecycle: Lifecycle = Lifecycle.running;
  /** PID of the current process; undefined before the first spawn and while restarting. */
  pid: number | undefined;
  /** `/metrics`, `/healthz`, `/readyz` of the current process. */
  opsUrl: string | undefined;
  /** Restarts after unexpected exits so far. */
  restarts = 0;
  /** How the last process ended (`exit 1`, `signal SIGKILL`). */
  lastExit: string | undefined;
  /** When a pending restart happens (epoch ms). */
  restartAtMs: number | undefined;

  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private stopping = false;
  private consecutiveFailures = 0;
  private startedAtMs = 0;
  private restartTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly spec: ChildSpec,
    private readonly hooks: SupervisorHooks,
  ) {}

  /** Spawns the process on a fresh free ops port. */
  async start(): Promise<void> {
    const port = await freePort();
    if (this.stopping) return;
    const fd = openSync(this.spec.logFile, 'a');
    let child: ChildProcess;
    try {
      const env = childEnv(this.spec.env);
      // dev's own config file holds dev's settings, which no other command accepts.
      delete env.SWITCHYARD_CONFIG;
      child = spawn(process.execPath, [SWITCHYARD_ENTRY, ...this.spec.args, '--ops-port', String(port)], {
        env,
        stdio: ['ignore', fd, fd],
        // Its own process group: Ctrl-C in the terminal reaches dev alone, which stops the children
        // in order (simulators first, the stack last).
        detached: true,
      });
    } finally {
      closeSync(fd);
    }
    this.child = child;
    this.pid = child.pid;
    this.opsUrl = `http://127.0.0.1:${port}`;
    this.lifecycle = Lifecycle.running;
    this.restartAtMs = undefined;
    this.startedAtMs = Date.now();
    if (child.pid !== undefined) this.hooks.onSpawn(this.spec.name, child.pid);
    this.exited = new Promise((resolve) => {
      let done = false;
      const finish = (code: number | null, signal: NodeJS.Signals | null): void => {
        if (done) return;
        done = true;
        this.onExit(child, code, signal);
        resolve();
      };
      child.once('exit', finish);
      // A failed spawn emits 'error' and maybe never 'exit'.
      child.once('error', (err) => {
        this.hooks.onEvent({ name: this.spec.name, level: 'error', message: `cannot start: ${err.message}` });
        finish(null, null);
      });
    });
  }

  private onExit(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.child !== child) return;
    this.child = undefined;
    this.pid = undefined;
    this.lastExit = exitText(code, signal);
    if (this.stopping) {
      this.lifecycle = Lifecycle.stopped;
      return;
    }
    const log = `see ${this.spec.logFile}`;
    if (code === ExitCode.usage) {
      this.lifecycle = Lifecycle.down;
      this.hooks.onEvent({
        name: this.spec.name,
        level: 'error',
        message: `exited 2 (bad usage or config): not restarting; ${log}`,
      });
      return;
    }
    if (Date.now() - this.startedAtMs >= STABLE_AFTER_MS) this.consecutiveFailures = 0;
    const delayMs =
      RESTART_BACKOFF_MS[Math.min(this.consecutiveFailures, RESTART_BACKOFF_MS.length - 1)] ?? 30_000;
    this.consecutiveFailures++;
    this.lifecycle = Lifecycle.restarting;
    this.restartAtMs = Date.now() + delayMs;
    this.hooks.onEvent({
      name: this.spec.name,
      level: 'warn',
      message: `died (${this.lastExit}): restarting in ${delayMs / 1000} s; ${log}`,
    });
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (this.stopping) return;
      this.restarts++;
      this.start().catch((err: unknown) => {
        this.hooks.onEvent({
          name: this.spec.name,
          level: 'error',
          message: `restart failed: ${String(err)}`,
        });
      });
    }, delayMs);
  }

  /**
   * Resolves true once `/readyz` answers 200; false after `timeoutMs` (ms), once the process is
   * being stopped, or when `signal` aborts.
   */
  async waitReady(timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
    // waitUntil rejects only at the deadline or on the signal: both mean not ready.
    const outcome = await waitUntil(
      `${this.spec.name} to be ready`,
      async () => (this.stopping ? 'stopping' : (await this.answersReady()) && 'ready'),
      { timeoutMs, everyMs: 250, signal },
    ).catch(() => undefined);
    return outcome === 'ready';
  }

  private async answersReady(): Promise<boolean> {
    if (!this.opsUrl || this.lifecycle !== Lifecycle.running) return false;
    try {
      return (await fetch(`${this.opsUrl}/readyz`, { signal: AbortSignal.timeout(1000) })).ok;
    } catch {
      return false; // not listening yet
    }
  }

  /**
   * Stops the process for good: SIGTERM (it settles its work in hand), SIGKILL after `graceMs`, or
   * at once with `graceMs` 0. Resolves once it has exited. A pending restart is cancelled.
   */
  async stop(graceMs: number): Promise<void> {
    this.stopping = true;
    clearTimeout(this.restartTimer);
    this.restartAtMs = undefined;
    const child = this.child;
    if (!child) {
      if (this.lifecycle !== Lifecycle.down) this.lifecycle = Lifecycle.stopped;
      return;
    }
    child.kill(graceMs > 0 ? 'SIGTERM' : 'SIGKILL');
    const exited = this.exited;
    const timedOut = await withTimeout(
      exited.then(() => false),
      graceMs,
      () => true,
    );
    if (timedOut && this.child === child) {
      this.hooks.onEvent({
        name: this.spec.name,
        level: 'warn',
        message: `did not stop within ${graceMs / 1000} s: killed`,
      });
      child.kill('SIGKILL');
      await exited;
    }
  }

  /** Speeds up a stop in progress: SIGKILL now. */
  kill(): void {
    this.stopping = true;
    clearTimeout(this.restartTimer);
    this.child?.kill('SIGKILL');
  }
}
