/**
 * Processes by PID: free ports to start them on, and what Linux's `/proc` tells of them (alive,
 * start time, CPU time, memory). `/proc` is read here and nowhere else.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { createServer } from 'node:net';

/** A TCP port that is free on 127.0.0.1 right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      srv.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}

/** PIDs of every process this one can see now. */
export function listPids(): number[] {
  return readdirSync('/proc').flatMap((entry) => (/^\d+$/.test(entry) ? [Number(entry)] : []));
}

/** Working directory of a process; undefined when it is gone or not ours to read. */
export function processCwd(pid: number): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/cwd`);
  } catch {
    return undefined;
  }
}

/** USER_HZ: what `/proc` counts CPU time and start times in, 100 on Linux. */
const CLOCK_TICKS_PER_S = 100;

/**
 * The fields of `/proc/PID/stat` after the command name (which may itself hold spaces and
 * parentheses): [0] is the state, [1] the parent PID, [11] and [12] user and system time, [19] the
 * start time. Undefined when there is no such process.
 */
function procStatFields(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(') ') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** True while a process with this PID exists (and is not a zombie we could reap). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  return procStatFields(pid)?.[0] !== 'Z';
}

/** Start time of a process in clock ticks since boot, where `/proc` tells it. */
export function processStartTicks(pid: number): number | undefined {
  const ticks = Number(procStatFields(pid)?.[19]);
  return Number.isFinite(ticks) ? ticks : undefined;
}

/** The parent PID of a process, where `/proc` tells it. */
export function parentPid(pid: number): number | undefined {
  const ppid = Number(procStatFields(pid)?.[1]);
  return Number.isFinite(ppid) ? ppid : undefined;
}

/** CPU time a process has used so far, user and system, in ms (10 ms resolution). Throws if it is gone. */
export function processCpuMs(pid: number): number {
  const fields = procStatFields(pid);
  if (!fields) throw new Error(`no process ${pid}`);
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS_PER_S;
}

/** Resident memory of a process, in bytes; NaN when `/proc` does not tell it. Throws if it is gone. */
export function processRssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = /VmRSS:\s+(\d+) kB/.exec(status)?.[1];
  return kb ? Number(kb) * 1024 : NaN;
}

/**
 * A process as recorded when it was started: its PID, and its start time (clock ticks since boot)
 * where known. A PID is reused once its process is gone (pid_max is 32,768 here); the start time
 * tells the recorded process from a stranger that got its PID.
 */
export interface ProcessIdentity {
  pid: number;
  startTicks?: number;
}

/** The identity of a running process, to record. */
export function processIdentity(pid: number): ProcessIdentity {
  const startTicks = processStartTicks(pid);
  return startTicks === undefined ? { pid } : { pid, startTicks };
}

/** True while the recorded process runs (not a later one with its PID). */
export function isRunning(recorded: ProcessIdentity): boolean {
  if (!isAlive(recorded.pid)) return false;
  if (recorded.startTicks === undefined) return true;
  const ticks = processStartTicks(recorded.pid);
  return ticks === undefined || ticks === recorded.startTicks;
}
