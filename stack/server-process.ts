/**
 * Starting a server from its spec, and stopping or killing it by the PID and start time recorded
 * when it started, so that a process that later reused the PID is never signalled.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import { dyingWithParent } from '../lib/child-process.ts';
import { isRunning, processIdentity, type ProcessIdentity } from '../lib/process.ts';
import { waitUntil, WaitTimeoutError } from '../lib/timers.ts';
import { repairS3rverStore } from './s3rver-store.ts';
import { ServerRole, type ServerSpec } from './server-specs.ts';
import { isReady } from './server-readiness.ts';

/** A running server: its spec, PID and process start time. */
export interface RunningServer extends ServerSpec, ProcessIdentity {}

function tail(file: string, lines = 15): string {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

export interface StartOptions {
  /** Leave the server running after this process exits (the stack CLI); default true. */
  detached?: boolean;
  readyTimeoutMs?: number;
  /** Called once the process exists, before it is ready: lets a caller record its PID early. */
  onSpawn?: (server: RunningServer) => void;
}

/**
 * Starts a server and resolves once it answers its own protocol (a site nats-server: once its leaf
 * link is up too). Rejects with the tail of its log if it exits or does not answer in time.
 */
export async function startServer(spec: ServerSpec, options: StartOptions = {}): Promise<RunningServer> {
  const detached = options.detached ?? true;
  const readyTimeoutMs = options.readyTimeoutMs ?? 30_000;
  const repaired = spec.role === ServerRole.s3 ? repairS3rverStore(spec.dataDir) : [];
  const out = openSync(spec.logFile, 'a');
  for (const line of repaired)
    writeSync(out, `switchyard: removed a torn object left by a kill mid-PUT: ${line}\n`);
  // A server that is not left running (tests, benchmarks) dies with this process, even a killed one.
  const [command, args] = detached ? [spec.command, spec.args] : dyingWithParent(spec.command, spec.args);
  const child = spawn(command, args, { detached, stdio: ['ignore', out, out], cwd: spec.dataDir });
  closeSync(out);
  let exited: string | undefined;
  child.once('exit', (code, signal) => (exited = `exited with ${signal ?? code}`));
  child.once('error', (err) => (exited = err.message));
  if (detached) child.unref();
  const pid = child.pid;
  if (pid === undefined) throw new Error(`${spec.name}: could not start ${spec.command}`);
  const running: RunningServer = { ...spec, ...processIdentity(pid) };
  options.onSpawn?.(running);
  // A detached child is unref'd and the probes' timeouts are too: without a timer of our own, an
  // interrupted start could leave this process with nothing pending and exit mid-await.
  const keepAlive = setInterval(() => undefined, 1000);
  try {
    const outcome = await waitUntil(
      `${spec.name} to answer`,
      async () => (exited ? 'exited' : (await isReady(running)) && 'ready'),
      { timeoutMs: readyTimeoutMs, everyMs: 100 },
    ).catch(async (err: unknown) => {
      if (!(err instanceof WaitTimeoutError)) throw err;
      await stopServer(running);
      throw new Error(
        `${spec.name} did not answer within ${readyTimeoutMs} ms; its log ends:\n${tail(spec.logFile)}`,
      );
    });
    if (outcome === 'exited') throw new Error(`${spec.name} ${exited}; its log ends:\n${tail(spec.logFile)}`);
    return running;
  } finally {
    clearInterval(keepAlive);
  }
}

/** Resolves true once the recorded process is gone, false if it still runs after `timeoutMs`. */
async function gone(server: ProcessIdentity, timeoutMs: number, everyMs: number): Promise<boolean> {
  try {
    await waitUntil(`process ${server.pid} to exit`, () => !isRunning(server), { timeoutMs, everyMs });
    return true;
  } catch (err) {
    if (err instanceof WaitTimeoutError) return false;
    throw err;
  }
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
export async function stopServer(server: ProcessIdentity, graceMs = 10_000): Promise<void> {
  if (!isRunning(server)) return;
  try {
    process.kill(server.pid, 'SIGTERM');
  } catch {
    return;
  }
  if (!(await gone(server, graceMs, 50))) await killServer(server);
}

/** SIGKILL; resolves once the process is gone. */
export async function killServer(server: ProcessIdentity): Promise<void> {
  if (!isRunning(server)) return;
  try {
    process.kill(server.pid, 'SIGKILL');
  } catch {
    return;
  }
  // SIGKILL cannot be caught: the only wait is the kernel's, so this one has no deadline.
  await gone(server, Infinity, 20);
}
