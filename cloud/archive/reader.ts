/**
 * Reading the archive back as hub messages: what replay (sequences the stream no longer holds) and
 * backfill (a time range) feed to a consumer's sink.
 *
 * The unit of reading is a group, within one hour of receive time (every record of a message lands
 * in the same hour, so overlaps never cross hours):
 * - an hour of `site` objects only: one group per site, its objects;
 * - an hour with `batch` objects: one group per run of objects whose sequence ranges overlap, so
 *   a redelivered batch is read with the batch it overlaps (and, in the hour a fleet changed layout,
 *   with the `site` objects it overlaps).
 * Keeping the first record of each sequence within a group removes every overlap, and a group's
 * records are fed in sequence order. Objects are verified against their manifests; one that fails is
 * reported by key and nothing of it is fed.
 */
import { NoSuchKey, type S3Client } from '@aws-sdk/client-s3';
import { parseSubject } from '../../schemas/subjects.ts';
import type { SinkMessage } from '../sink.ts';
import {
  ArchiveLayout,
  hourOf,
  layoutPrefix,
  parseArchiveKey,
  receivedAtMs,
  type ArchiveKeyParts,
  type ArchivePart,
  type ArchiveRecord,
} from './layout.ts';
import { ArchiveIntegrityError, listManifests, readArchiveParts, type PartRecords } from './s3.ts';

export interface ArchiveSelection {
  /** Only this site. */
  site?: string;
  /** Only this device. */
  device?: string;
  /** Stream sequences, inclusive. */
  fromSeq?: number;
  toSeq?: number;
  /** Receive time, ms since epoch: `sinceMs` inclusive, `untilMs` exclusive. */
  sinceMs?: number;
  untilMs?: number;
}

/** Objects of one hour read together (module comment). */
export interface ArchiveGroup {
  /** `<site>/<hour>` or `<hour>/<first seq>-<last seq>`: stable, for checkpoints and reports. */
  id: string;
  hour: string;
  /** The site of a group of `site` objects; a group with `batch` objects may hold any site. */
  site?: string;
  manifestKeys: string[];
  /** Lowest first sequence of its objects (groups are listed in this order). */
  firstSeq: number;
}

/** An object that could not be used, and why. */
export interface SkippedObject {
  key: string;
  reason: string;
}

type ListedKey = ArchiveKeyParts & { key: string };

/** The groups that may hold what `selection` asks for, from the object keys alone. */
export async function listArchiveGroups(
  client: S3Client,
  bucket: string,
  prefix: string,
  selection: ArchiveSelection,
): Promise<ArchiveGroup[]> {
  const sinceHour = selection.sinceMs !== undefined ? hourOf(selection.sinceMs) : undefined;
  const untilHour = selection.untilMs !== undefined ? hourOf(selection.untilMs - 1) : undefined;
  const sitePrefix = layoutPrefix(prefix, ArchiveLayout.site);
  const batchPrefix = layoutPrefix(prefix, ArchiveLayout.batch);
  // `batch` keys sort by hour: a time range lists only its hours.
  const listed = [
    ...(await listManifests(client, bucket, selection.site ? `${sitePrefix}${selection.site}/` : sitePrefix)),
    ...(await listManifests(client, bucket, batchPrefix, {
      ...(sinceHour !== undefined ? { startAfter: `${batchPrefix}${sinceHour}/` } : {}),
      ...(untilHour !== undefined ? { through: `${batchPrefix}${untilHour}/~` } : {}),
    })),
  ];
  const hours = new Map<string, ListedKey[]>();
  for (const key of listed) {
    const parts = parseArchiveKey(key);
    if (!parts) continue;
    if (selection.fromSeq !== undefined && parts.lastSeq < selection.fromSeq) continue;
    if (selection.toSeq !== undefined && parts.firstSeq > selection.toSeq) continue;
    if (sinceHour !== undefined && parts.hour < sinceHour) continue;
    if (untilHour !== undefined && parts.hour > untilHour) continue;
    const hour = hours.get(parts.hour) ?? [];
    hour.push({ ...parts, key });
    hours.set(parts.hour, hour);
  }
  const groups: ArchiveGroup[] = [];
  for (const [hour, keys] of hours)
    groups.push(
      ...(keys.some((k) => k.layout === ArchiveLayout.batch)
        ? overlapGroups(hour, keys)
        : siteGroups(hour, keys)),
    );
  return groups.sort((a, b) => a.firstSeq - b.firstSeq || a.id.localeCompare(b.id));
}

/** One group per site: an hour of `site` objects. */
function siteGroups(hour: string, keys: ListedKey[]): ArchiveGroup[] {
  const groups = new Map<string, ArchiveGroup>();
  for (const { key, site, firstSeq } of keys) {
    const id = `${site!}/${hour}`;
    const group = groups.get(id) ?? { id, hour, site, manifestKeys: [], firstSeq };
    group.manifestKeys.push(key);
    group.firstSeq = Math.min(group.firstSeq, firstSeq);
    groups.set(id, group);
  }
  return [...groups.values()];
}

/** One group per run of objects whose sequence ranges overlap. */
function overlapGroups(hour: string, keys: ListedKey[]): ArchiveGroup[] {
  const groups: ArchiveGroup[] = [];
  let open: { keys: string[]; firstSeq: number; lastSeq: number } | undefined;
  const close = (): void => {
    if (!open) return;
    const id = `${hour}/${open.firstSeq}-${open.lastSeq}`;
    groups.push({ id, hour, manifestKeys: open.keys, firstSeq: open.firstSeq });
  };
  for (const k of [...keys].sort((a, b) => a.firstSeq - b.firstSeq || a.lastSeq - b.lastSeq)) {
    if (open && k.firstSeq <= open.lastSeq) {
      open.keys.push(k.key);
      open.lastSeq = Math.max(open.lastSeq, k.lastSeq);
    } else {
      close();
      open = { keys: [k.key], firstSeq: k.firstSeq, lastSeq: k.lastSeq };
    }
  }
  close();
  return groups;
}

/** Does a part hold anything `selection` may want, by its manifest alone? */
export function partSelected(part: ArchivePart, selection: ArchiveSelection): boolean {
  if (selection.site !== undefined && part.site !== selection.site) return false;
  if (selection.fromSeq !== undefined && part.lastSeq < selection.fromSeq) return false;
  if (selection.toSeq !== undefined && part.firstSeq > selection.toSeq) return false;
  return true;
}

/**
 * The parts of a group's objects that `selection` may want, each object verified; and the objects
 * that failed verification or could not be read (nothing of those is returned).
 */
export async function readGroupParts(
  client: S3Client,
  bucket: string,
  group: ArchiveGroup,
  selection: ArchiveSelection,
): Promise<{ parts: PartRecords[]; skipped: SkippedObject[] }> {
  const parts: PartRecords[] = [];
  const skipped: SkippedObject[] = [];
  for (const key of group.manifestKeys) {
    try {
      parts.push(...(await readArchiveParts(client, bucket, key, (p) => partSelected(p, selection))).parts);
    } catch (err) {
      if (err instanceof ArchiveIntegrityError) skipped.push({ key, reason: err.message });
      else if (err instanceof NoSuchKey)
        skipped.push({ key, reason: 'the data object named by this manifest is missing' });
      else throw err;
    }
  }
  return { parts, skipped };
}

/**
 * The selected messages of one group, in sequence order, each sequence once; and the objects that
 * failed verification or could not be read (nothing of those is returned).
 */
export async function readArchiveGroup(
  client: S3Client,
  bucket: string,
  group: ArchiveGroup,
  selection: ArchiveSelection,
): Promise<{ messages: SinkMessage[]; skipped: SkippedObject[] }> {
  const { parts, skipped } = await readGroupParts(client, bucket, group, selection);
  const bySeq = new Map<number, ArchiveRecord>();
  for (const { records } of parts)
    for (const r of records) if (!bySeq.has(r.seq) && selected(r, selection)) bySeq.set(r.seq, r);
  const messages: SinkMessage[] = [];
  for (const seq of [...bySeq.keys()].sort((a, b) => a - b)) {
    const message = archiveRecordMessage(bySeq.get(seq)!);
    if (message && (selection.device === undefined || message.device === selection.device))
      messages.push(message);
  }
  return { messages, skipped };
}

function selected(r: ArchiveRecord, s: ArchiveSelection): boolean {
  if (s.fromSeq !== undefined && r.seq < s.fromSeq) return false;
  if (s.toSeq !== undefined && r.seq > s.toSeq) return false;
  if (s.sinceMs !== undefined || s.untilMs !== undefined) {
    const at = recordReceivedAtMs(r);
    if (s.sinceMs !== undefined && at < s.sinceMs) return false;
    if (s.untilMs !== undefined && at >= s.untilMs) return false;
  }
  return true;
}

/** Receive time of a record, as the archive keys it. */
export const recordReceivedAtMs = (r: ArchiveRecord): number =>
  receivedAtMs({ headers: r.headers, storedAtMs: Date.parse(r.time) });

/** An archived record as the message the hub delivered; undefined if its subject does not parse. */
export function archiveRecordMessage(r: ArchiveRecord): SinkMessage | undefined {
  const parts = parseSubject(r.subject);
  if (!parts) return undefined;
  return {
    seq: r.seq,
    subject: r.subject,
    site: parts.site,
    device: parts.device,
    kind: parts.kind,
    storedAtMs: Date.parse(r.time),
    headers: r.headers,
    payload:
      r.payloadEncoding === 'base64' ? Buffer.from(r.payload, 'base64') : Buffer.from(r.payload, 'utf8'),
    deliveryCount: 1,
  };
}
