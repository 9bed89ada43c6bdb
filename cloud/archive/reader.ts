/**
 * Reading the archive back as hub messages: what replay (sequences the stream no longer holds) and
 * backfill (a time range) feed to a consumer's sink.
 *
 * The unit of reading is a group: one site and one hour. Every record of a message lands in the
 * same group (its key depends on the site and the receive time, which never change), so keeping
 * the first record of each sequence within a group removes every overlap that redelivered batches
 * left, and a group's records are fed in sequence order. Objects are verified against their
 * manifests; one that fails is reported by key and nothing of it is fed.
 */
import { NoSuchKey, type S3Client } from '@aws-sdk/client-s3';
import { parseSubject } from '../../schemas/subjects.ts';
import type { SinkMessage } from '../sink.ts';
import { hourOf, parseArchiveKey, receivedAtMs, type ArchiveRecord } from './layout.ts';
import { ArchiveIntegrityError, listManifests, readArchiveObject } from './s3.ts';

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

/** One site and one hour of the archive: the objects that hold it. */
export interface ArchiveGroup {
  /** `<site>/<YYYY-MM-DDTHH>`: stable, for checkpoints and reports. */
  id: string;
  site: string;
  hour: string;
  manifestKeys: string[];
  /** Lowest first sequence of its objects (groups are listed in this order). */
  firstSeq: number;
}

/** An object that could not be used, and why. */
export interface SkippedObject {
  key: string;
  reason: string;
}

/** The groups that may hold what `selection` asks for, from the object keys alone. */
export async function listArchiveGroups(
  client: S3Client,
  bucket: string,
  prefix: string,
  selection: ArchiveSelection,
): Promise<ArchiveGroup[]> {
  const listPrefix = selection.site ? `${prefix}site=${selection.site}/` : prefix;
  const sinceHour = selection.sinceMs !== undefined ? hourOf(selection.sinceMs) : undefined;
  const untilHour = selection.untilMs !== undefined ? hourOf(selection.untilMs - 1) : undefined;
  const groups = new Map<string, ArchiveGroup>();
  for (const key of await listManifests(client, bucket, listPrefix)) {
    const parts = parseArchiveKey(key);
    if (!parts) continue;
    if (selection.fromSeq !== undefined && parts.lastSeq < selection.fromSeq) continue;
    if (selection.toSeq !== undefined && parts.firstSeq > selection.toSeq) continue;
    if (sinceHour !== undefined && parts.hour < sinceHour) continue;
    if (untilHour !== undefined && parts.hour > untilHour) continue;
    const id = `${parts.site}/${parts.hour}`;
    const group = groups.get(id) ?? {
      id,
      site: parts.site,
      hour: parts.hour,
      manifestKeys: [],
      firstSeq: parts.firstSeq,
    };
    group.manifestKeys.push(key);
    group.firstSeq = Math.min(group.firstSeq, parts.firstSeq);
    groups.set(id, group);
  }
  return [...groups.values()].sort((a, b) => a.firstSeq - b.firstSeq || a.id.localeCompare(b.id));
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
  const skipped: SkippedObject[] = [];
  const bySeq = new Map<number, ArchiveRecord>();
  for (const key of group.manifestKeys) {
    let records: ArchiveRecord[];
    try {
      records = (await readArchiveObject(client, bucket, key)).records;
    } catch (err) {
      if (err instanceof ArchiveIntegrityError) skipped.push({ key, reason: err.message });
      else if (err instanceof NoSuchKey)
        skipped.push({ key, reason: 'the data object named by this manifest is missing' });
      else throw err;
      continue;
    }
    for (const r of records) if (!bySeq.has(r.seq) && selected(r, selection)) bySeq.set(r.seq, r);
  }
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
