/**
 * Conflation (docs/consumers.md: when it pays): the monitor keeps the latest state of a unit, so a
 * telemetry reading that a newer reading of the same unit in the same write overwrites completely
 * never needs to reach Redis. The result is the one the messages would leave applied one by one:
 * - a reading is folded into another only if the other is newer (device time, then stream
 *   sequence) and carries every field it carries (SoH is optional), so no field it would have
 *   set survives it;
 * - the entry that remains stands where the group's first reading stood, so health moves in the
 *   same order relative to the unit's status and events (their fields never overlap telemetry's);
 * - it carries the group's latest receive time and highest stream sequence, which only ever grow
 *   (`lastSeenMs`, `lastSeq`), and a change it makes (a unit heard from again) names the group's
 *   first message, the one that made it.
 * Status and events, which announce changes, are never folded. One difference remains: readings
 * applied alone more than `offlineAfterMs` after they arrived would mark the unit offline until a
 * recent one comes; folded with that one, the offline spell is not announced.
 */

/** One message as the apply script takes it. */
export interface MonitorUpdate {
  kind: 'telemetry' | 'status' | 'event' | 'seen';
  site: string;
  device: string;
  seq: number;
  tsMs: number;
  seenMs: number;
  fields: Record<string, string>;
}

/** What the script applies: one message, or a group of readings of one unit folded together. */
export interface ApplyEntry {
  /** The newest message of the group: what is applied (kind, unit, stream seq, device time, fields). */
  content: MonitorUpdate;
  /** The group's first message: where the entry stands, and what a change it makes names. */
  atSeq: number;
  atSeenMs: number;
  /** The highest stream sequence and the latest receive time in the group. */
  lastSeq: number;
  lastSeenMs: number;
  /** Stream sequences of the messages folded into it, superseded before they reached Redis. */
  folded: number[];
}

/** The entry of one message, nothing folded into it yet. */
export const entryOf = (update: MonitorUpdate): ApplyEntry => ({
  content: update,
  atSeq: update.seq,
  atSeenMs: update.seenMs,
  lastSeq: update.seq,
  lastSeenMs: update.seenMs,
  folded: [],
});

const newer = (a: MonitorUpdate, b: MonitorUpdate): boolean =>
  a.tsMs !== b.tsMs ? a.tsMs > b.tsMs : a.seq > b.seq;

function covers(wider: Record<string, string>, narrower: Record<string, string>): boolean {
  for (const name in narrower) if (!(name in wider)) return false;
  return true;
}

/** The entries to apply, in write order, with superseded telemetry folded away. */
export function conflate(updates: readonly MonitorUpdate[]): ApplyEntry[] {
  const entries: ApplyEntry[] = [];
  /** Per unit, the entry its later readings may be folded into (its latest telemetry entry). */
  const telemetryOf = new Map<string, ApplyEntry>();
  for (const update of updates) {
    const unit = `${update.site}:${update.device}`;
    const held = update.kind === 'telemetry' ? telemetryOf.get(unit) : undefined;
    if (held && !newer(update, held.content) && covers(held.content.fields, update.fields)) {
      held.folded.push(update.seq);
      absorb(held, update);
    } else if (held && newer(update, held.content) && covers(update.fields, held.content.fields)) {
      // The newer reading takes the place of the one held: same position, its content.
      held.folded.push(held.content.seq);
      held.content = update;
      absorb(held, update);
    } else {
      const entry = entryOf(update);
      if (update.kind === 'telemetry') telemetryOf.set(unit, entry);
      entries.push(entry);
    }
  }
  return entries;
}

/** The entry now also stands for this message: its receive time and sequence. */
function absorb(entry: ApplyEntry, update: MonitorUpdate): void {
  entry.lastSeenMs = Math.max(entry.lastSeenMs, update.seenMs);
  entry.lastSeq = Math.max(entry.lastSeq, update.seq);
}
