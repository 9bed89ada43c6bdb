/**
 * The archive's layout in S3: what the archive writes and what a backfill or a replay reads.
 *
 * Data object: gzip-compressed NDJSON, one ArchiveRecord per line, in stream-sequence order, all
 * of one site and one hour of receive time (the bridge's `Switchyard-Received-At`, else the time
 * the hub stored it):
 *
 *   raw/site=<site>/hour=<YYYY-MM-DDTHH>/<first seq, 20 digits>-<last seq, 20 digits>.ndjson.gz
 *
 * Its manifest sits next to it, `….manifest.json` (ArchiveManifest), written after the data object:
 * a data object without a manifest, or whose bytes do not hash to the manifest's sha256, is not
 * trusted (a write that was cut short). Keys and bytes depend only on the records, so writing the
 * same batch again yields the same key and the same object. A redelivered batch may overlap an
 * earlier object; `seqRanges` in the manifests show it, and records carry `seq`, so a reader keeps
 * the first record of each sequence.
 */
import { createHash } from 'node:crypto';
import { promisify } from 'node:util';
import { gunzip as gunzipCallback, gzip as gzipCallback } from 'node:zlib';
import { Header } from '../../schemas/headers.ts';
import type { SinkMessage } from '../sink.ts';

const gzip = promisify(gzipCallback);
const gunzip = promisify(gunzipCallback);

/** One archived message: a line of a data object. */
export interface ArchiveRecord {
  /** Stream sequence in `BSU`. */
  seq: number;
  subject: string;
  /** When the hub stream stored it, ISO-8601 UTC. */
  time: string;
  /** NATS headers (first value of each), as the bridge sent them. */
  headers: Record<string, string>;
  /** The payload: the device's bytes as text when they are valid UTF-8, else base64. */
  payload: string;
  /** Present (`base64`) only when the payload is not valid UTF-8. */
  payloadEncoding?: 'base64';
}

/** The sidecar of a data object. */
export interface ArchiveManifest {
  version: 1;
  /** Key of the data object. */
  object: string;
  stream: string;
  /** Durable that wrote it. */
  consumer: string;
  site: string;
  /** `YYYY-MM-DDTHH` (UTC) of the receive time of every record. */
  hour: string;
  /** Records in the object. */
  count: number;
  byKind: Record<string, number>;
  firstSeq: number;
  lastSeq: number;
  /** Sequences in the object as inclusive runs `[from, to]` (other sites' messages fall between). */
  seqRanges: [number, number][];
  /** Receive-time range, ISO-8601 UTC. */
  firstReceivedAt: string;
  lastReceivedAt: string;
  /** Stored-time range on the hub, ISO-8601 UTC. */
  firstStoredAt: string;
  lastStoredAt: string;
  /** Size of the data object (compressed), and of its NDJSON before compression, in bytes. */
  bytes: number;
  uncompressedBytes: number;
  /** Hex SHA-256 of the data object's bytes. */
  sha256: string;
}

/** Default key prefix of data objects. */
export const DEFAULT_ARCHIVE_PREFIX = 'raw/';
const DATA_SUFFIX = '.ndjson.gz';
const MANIFEST_SUFFIX = '.manifest.json';

// fatal: invalid UTF-8 must go to base64, not be "repaired"; ignoreBOM: keep a leading BOM, so the
// text round-trips to the very same bytes.
const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

const seq20 = (seq: number): string => String(seq).padStart(20, '0');

/** `YYYY-MM-DDTHH` (UTC) of an epoch-ms time. */
export const hourOf = (timeMs: number): string => new Date(timeMs).toISOString().slice(0, 13);

/** Receive time of a message: the bridge's header, else when the hub stored it (epoch ms). */
export function receivedAtMs(message: Pick<SinkMessage, 'headers' | 'storedAtMs'>): number {
  const header = message.headers[Header.receivedAt];
  const parsed = header === undefined ? NaN : Date.parse(header);
  return Number.isFinite(parsed) ? parsed : message.storedAtMs;
}

/** Key of a data object. */
export function archiveKey(
  prefix: string,
  site: string,
  hour: string,
  firstSeq: number,
  lastSeq: number,
): string {
  return `${prefix}site=${site}/hour=${hour}/${seq20(firstSeq)}-${seq20(lastSeq)}${DATA_SUFFIX}`;
}

/** Key of the manifest of a data object. */
export const manifestKeyOf = (dataKey: string): string =>
  `${dataKey.slice(0, -DATA_SUFFIX.length)}${MANIFEST_SUFFIX}`;

/** Key of the data object a manifest sits beside. */
export const dataKeyOf = (manifestKey: string): string =>
  `${manifestKey.slice(0, -MANIFEST_SUFFIX.length)}${DATA_SUFFIX}`;

/** Is this the key of a manifest? */
export const isManifestKey = (key: string): boolean => key.endsWith(MANIFEST_SUFFIX);

/** Site, hour and sequence range from a data or manifest key; undefined if it is not one. */
export function parseArchiveKey(
  key: string,
): { site: string; hour: string; firstSeq: number; lastSeq: number } | undefined {
  const m =
    /site=([^/]+)\/hour=(\d{4}-\d{2}-\d{2}T\d{2})\/(\d{20})-(\d{20})\.(?:ndjson\.gz|manifest\.json)$/.exec(
      key,
    );
  if (!m) return undefined;
  return { site: m[1]!, hour: m[2]!, firstSeq: Number(m[3]), lastSeq: Number(m[4]) };
}

/** The record of a message. */
export function toRecord(message: SinkMessage): ArchiveRecord {
  const seq = message.seq;
  const subject = message.subject;
  const time = new Date(message.storedAtMs).toISOString();
  const headers = message.headers;
  try {
    return { seq, subject, time, headers, payload: UTF8.decode(message.payload) };
  } catch {
    const payload = Buffer.from(message.payload).toString('base64');
    return { seq, subject, time, headers, payload, payloadEncoding: 'base64' };
  }
}

/** The payload bytes of a record, exactly as the device sent them. */
export function recordPayload(record: ArchiveRecord): Uint8Array {
  return record.payloadEncoding === 'base64'
    ? new Uint8Array(Buffer.from(record.payload, 'base64'))
    : new TextEncoder().encode(record.payload);
}

/** Inclusive runs of sorted sequences: [1,2,3,7] → [[1,3],[7,7]]. */
export function seqRanges(sortedSeqs: readonly number[]): [number, number][] {
  const out: [number, number][] = [];
  for (const seq of sortedSeqs) {
    const last = out.at(-1);
    if (last && seq === last[1] + 1) last[1] = seq;
    else out.push([seq, seq]);
  }
  return out;
}

/** One data object to write: its key, bytes and manifest. */
export interface ArchiveObject {
  key: string;
  manifestKey: string;
  body: Buffer;
  manifest: ArchiveManifest;
  /** Stream sequences of its records, ascending. */
  seqs: number[];
}

export interface BuildOptions {
  prefix: string;
  stream: string;
  consumer: string;
  gzipLevel?: number;
}

/**
 * Splits a batch by site and hour of receive time and builds one data object per part. A message
 * seen twice in the batch (a redelivery) is written once.
 */
export async function buildArchiveObjects(
  batch: readonly SinkMessage[],
  options: BuildOptions,
): Promise<ArchiveObject[]> {
  type Group = {
    site: string;
    hour: string;
    messages: Map<number, SinkMessage>;
    received: Map<number, number>;
  };
  const groups = new Map<string, Group>();
  const hours = new Map<number, string>();
  for (const message of batch) {
    const received = receivedAtMs(message);
    // A batch spans a few hours at most: format each once.
    const hourNumber = Math.floor(received / 3_600_000);
    let hour = hours.get(hourNumber);
    if (hour === undefined) hours.set(hourNumber, (hour = hourOf(received)));
    const id = `${message.site}/${hour}`;
    let group = groups.get(id);
    if (!group)
      groups.set(id, (group = { site: message.site, hour, messages: new Map(), received: new Map() }));
    if (!group.messages.has(message.seq)) {
      group.messages.set(message.seq, message);
      group.received.set(message.seq, received);
    }
  }
  return Promise.all(
    [...groups.values()].map(async ({ site, hour, messages, received: receivedOf }) => {
      const sorted = [...messages.values()].sort((a, b) => a.seq - b.seq);
      const seqs = sorted.map((m) => m.seq);
      let text = '';
      for (const m of sorted) text += `${JSON.stringify(toRecord(m))}\n`;
      const ndjson = Buffer.from(text);
      // Node's gzip header carries no time or name: the same records give the same bytes.
      const body = await gzip(ndjson, { level: options.gzipLevel ?? 6 });
      const first = sorted[0]!;
      const last = sorted.at(-1)!;
      const received = sorted.map((m) => receivedOf.get(m.seq)!);
      const byKind: Record<string, number> = {};
      for (const m of sorted) byKind[m.kind] = (byKind[m.kind] ?? 0) + 1;
      const key = archiveKey(options.prefix, site, hour, first.seq, last.seq);
      const iso = (ms: number): string => new Date(ms).toISOString();
      const manifest: ArchiveManifest = {
        version: 1,
        object: key,
        stream: options.stream,
        consumer: options.consumer,
        site,
        hour,
        count: sorted.length,
        byKind,
        firstSeq: first.seq,
        lastSeq: last.seq,
        seqRanges: seqRanges(seqs),
        firstReceivedAt: iso(Math.min(...received)),
        lastReceivedAt: iso(Math.max(...received)),
        firstStoredAt: iso(Math.min(...sorted.map((m) => m.storedAtMs))),
        lastStoredAt: iso(Math.max(...sorted.map((m) => m.storedAtMs))),
        bytes: body.byteLength,
        uncompressedBytes: ndjson.byteLength,
        sha256: sha256Hex(body),
      };
      return { key, manifestKey: manifestKeyOf(key), body, manifest, seqs };
    }),
  );
}

export const sha256Hex = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

/** Does a data object match its manifest (size and sha256)? Only then may a backfill use it. */
export const verifyArchiveObject = (body: Uint8Array, manifest: ArchiveManifest): boolean =>
  body.byteLength === manifest.bytes && sha256Hex(body) === manifest.sha256;

/** The records of a data object's bytes. */
export async function parseArchiveObject(body: Uint8Array): Promise<ArchiveRecord[]> {
  const text = (await gunzip(body)).toString('utf8');
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as ArchiveRecord);
}
