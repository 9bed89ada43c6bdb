/**
 * `DIR/dev.json`: the record of a running `switchyard dev` (its PID and the PIDs of the processes
 * it spawned), so that a second dev on the same DIR is refused while the first runs, and a dev that
 * was killed outright (SIGKILL, a closed terminal) is cleaned up after by the next one. The servers
 * have their own record, `DIR/stack.json` (stack/stack.ts).
 */
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isAlive, processStartTicks } from '../lib/process.ts';
import { stopServer } from '../stack/server-process.ts';

/** The record's file name inside DIR. */
export const DEV_FILE = 'dev.json';

/** A process as recorded: its PID and start time, which together tell it from a later PID reuse. */
export interface RecordedProcess {
  name: string;
  pid: number;
  /** Start time in clock ticks since boot (`/proc/PID/stat`, field 22), where known. */
  startTicks?: number;
}

export interface DevRecord {
  version: 1;
  /** dev itself. */
  dev: RecordedProcess;
  /** ISO-8601 time dev started. */
  startedAt: string;
  /** Every child process dev spawned (bridges, consumers), restarts included. */
  processes: RecordedProcess[];
}

/** `pid` as a record entry, with its start time. */
export function recordProcess(name: string, pid: number): RecordedProcess {
  const startTicks = processStartTicks(pid);
  return startTicks === undefined ? { name, pid } : { name, pid, startTicks };
}

/** True while the recorded process runs (not a later process that got its PID). */
export function isRecordedRunning(p: RecordedProcess): boolean {
  if (!isAlive(p.pid)) return false;
  if (p.startTicks === undefined) return true;
  const ticks = processStartTicks(p.pid);
  return ticks === undefined || ticks === p.startTicks;
}

const recordPath = (dir: string): string => join(dir, DEV_FILE);

/** The record in DIR, or undefined when there is none (or it is unreadable: nothing to trust). */
export function readDevRecord(dir: string): DevRecord | undefined {
  const path = recordPath(dir);
  if (!existsSync(path)) return undefined;
  try {
    const record = JSON.parse(readFileSync(path, 'utf8')) as DevRecord;
    return record.version === 1 && Array.isArray(record.processes) ? record : undefined;
  } catch {
    return undefined;
  }
}

/** Writes the record through a rename, so that a reader never sees half a file. */
export function writeDevRecord(dir: string, record: DevRecord): void {
  const path = recordPath(dir);
  writeFileSync(`${path}.tmp`, `${JSON.stringify(record, null, 2)}\n`);
  renameSync(`${path}.tmp`, path);
}

export function removeDevRecord(dir: string): void {
  rmSync(recordPath(dir), { force: true });
}

/**
 * Stops the recorded child processes of a dev that is gone (SIGTERM, SIGKILL after `graceMs`) and
 * returns their names. Only processes whose identity matches the record are signalled.
 */
export async function stopLeftovers(record: DevRecord, graceMs = 10_000): Promise<string[]> {
  const leftovers = record.processes.filter(isRecordedRunning);
  await Promise.all(leftovers.map((p) => stopServer(p, graceMs)));
  return leftovers.map((p) => p.name);
}
