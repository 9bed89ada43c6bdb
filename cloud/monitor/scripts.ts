/**
 * The monitor's Redis scripts: their Lua lives beside this file (`apply.lua`, `sweep.lua`, each
 * with its KEYS, ARGV and result documented in its header); this module loads them and builds the
 * KEYS and ARGV of a call, so their order is written down in one place on each side.
 *
 * The build compiles only TypeScript: the `.lua` files must be shipped next to the compiled
 * `scripts.js` (dist/cloud/monitor/), or the monitor refuses to start.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { ApplyEntry } from './conflate.ts';
import type { MonitorKeys } from './keys.ts';

/** A script's source, read once from `<name>.lua` beside this module. */
export interface MonitorScripts {
  apply: string;
  sweep: string;
}

let loaded: MonitorScripts | undefined;

/** The scripts' sources; throws, naming the missing file, if a `.lua` was not shipped. */
export function monitorScripts(): MonitorScripts {
  loaded ??= { apply: readScript('apply'), sweep: readScript('sweep') };
  return loaded;
}

function readScript(name: string): string {
  const url = new URL(`./${name}.lua`, import.meta.url);
  try {
    return readFileSync(url, 'utf8');
  } catch (err) {
    throw new Error(
      `monitor script ${fileURLToPath(url)} cannot be read: the .lua files of cloud/monitor/ must sit beside ` +
        `the module that loads them`,
      { cause: err },
    );
  }
}

/** Keys per entry in apply.lua's KEYS (after the 4 global ones). */
export const APPLY_KEYS_PER_ENTRY = 4;
/** Values per entry in apply.lua's ARGV (after the 3 of the head). */
export const APPLY_ARGS_PER_ENTRY = 10;

/**
 * Entries per apply call: a call runs alone on Redis, so this bounds how long other clients
 * (dashboards) wait behind it, while sparing a command per message.
 */
export const APPLY_CHUNK = 100;

/** What every apply and sweep call carries besides its entries. */
export interface ScriptSettings {
  /** The clock, epoch ms. */
  nowMs: number;
  offlineAfterMs: number;
  changesMaxLen: number;
}

/** One EVALSHA's keys and arguments. */
export interface ScriptCall {
  keys: string[];
  arguments: string[];
}

/** An entry's values in apply.lua's ARGV, in the order the script reads them. */
export function applyArgs(e: ApplyEntry): string[] {
  const { kind, site, device, seq, tsMs, fields } = e.content;
  return [
    kind,
    site,
    device,
    String(seq),
    String(tsMs),
    JSON.stringify(fields),
    String(e.atSeq),
    String(e.atSeenMs),
    String(e.lastSeq),
    String(e.lastSeenMs),
  ];
}

/** An entry's keys in apply.lua's KEYS, in the order the script reads them. */
export function applyKeys(keys: MonitorKeys, e: ApplyEntry): string[] {
  const { site, device } = e.content;
  return [keys.unit(site, device), keys.alarms(site, device), keys.site(site), keys.siteLastSeen(site)];
}

/** The call of apply.lua for `entries` (at most APPLY_CHUNK). */
export function applyCall(
  keys: MonitorKeys,
  settings: ScriptSettings,
  entries: readonly ApplyEntry[],
): ScriptCall {
  const call: ScriptCall = {
    keys: [keys.sites, keys.lastSeen, keys.online, keys.changes],
    arguments: head(settings),
  };
  for (const e of entries) {
    call.keys.push(...applyKeys(keys, e));
    call.arguments.push(...applyArgs(e));
  }
  return call;
}

/**
 * The call of sweep.lua for `members` of `online` (`<site>:<device>`; site ids never contain `:`,
 * schemas/subjects.ts).
 */
export function sweepCall(
  keys: MonitorKeys,
  settings: ScriptSettings,
  members: readonly string[],
): ScriptCall {
  const call: ScriptCall = { keys: [keys.online, keys.changes], arguments: head(settings) };
  for (const member of members) {
    const at = member.indexOf(':');
    if (at <= 0) continue;
    const site = member.slice(0, at);
    const device = member.slice(at + 1);
    call.keys.push(keys.unit(site, device), keys.site(site));
    call.arguments.push(site, device);
  }
  return call;
}

const head = (s: ScriptSettings): string[] => [
  String(s.nowMs),
  String(s.offlineAfterMs),
  String(s.changesMaxLen),
];
