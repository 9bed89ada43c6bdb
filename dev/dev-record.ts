/**
 * `DIR/dev.json`: the record of a running `switchyard dev` (its PID and the PIDs of the processes
 * it spawned), so that a second dev on the same DIR is refused while the first runs, and a dev that
 * was killed outright (SIGKILL, a closed terminal) is cleaned up after by the next one. The servers
 * have their own record, `DIR/stack.json` (stack/stack-file.ts).
 */
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isRunning, processIdentity, type ProcessIdentity } from '../lib/process.ts';
import { stopServer } from '../stack/server-process.ts';

/** The record's file name inside DIR. */
export const DEV_FILE = 'dev.json';

/** A process as recorded: its name, PID and start time (which tell it from a later PID reuse). */
export interface RecordedProcess extends ProcessIdentity {
  name: string;
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
  return { name, ...processIdentity(pid) };
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
  const leftovers = record.processes.filter(isRunning);
  await Promise.all(leftovers.map((p) => stopServer(p, graceMs)));
  return leftovers.map((p) => p.name);
}
