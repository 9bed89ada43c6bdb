/**
 * The archive's layout in S3: what the archive writes and what replay, backfill and audit read.
 *
 * Two layouts, told apart by their keys. Readers read both; `s3Layout` picks what the archive
 * writes:
 *
 * - `batch` (manifest version 2, the default): one data object per batch and hour of receive time
 *   (the bridge's `Switchyard-Received-At`, else the time the hub stored it), every site in it:
 *
 *     raw/hour=<YYYY-MM-DDTHH>/<first seq, 20 digits>-<last seq, 20 digits>-<sha256, 16 hex>.ndjson.gz
 *
 *   Each site's records are a gzip member of their own, so the object is one gzip stream and one
 *   site is read with a ranged GET of the byte range its manifest part gives. Two PUTs a batch,
 *   whatever the size of the fleet.
 * - `site` (manifest version 1): one data object per batch, site and hour:
 *
 *     raw/site=<site>/hour=<YYYY-MM-DDTHH>/<first seq, 20 digits>-<last seq, 20 digits>.ndjson.gz
 *
 *   Every site under its own prefix (per-site lifecycle rules, deleting a site), at two PUTs per
 *   site a batch: a fleet of tens of sites, not a thousand (docs/scale.md).
 *
 * Records are NDJSON, one ArchiveRecord per line, in stream-sequence order within a site. A
 * manifest sits next to its data object, `….manifest.json`, written after it: a data object
 * without a manifest, or whose bytes do not hash to the manifest's sha256, is not trusted (a write
 * cut short). Keys and bytes depend only on the records, so writing the same batch again yields the
 * same object. A redelivered batch may overlap an earlier object; the manifests' `seqRanges` show
 * it, and records carry `seq`, so a reader keeps the first record of each sequence.
 */
import { createHash } from 'node:crypto';
import { promisify } from 'node:util';
import { gunzip as gunzipCallback, gzip as gzipCallback, gzipSync } from 'node:zlib';
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

/** The layouts the archive writes (module comment). */
export const ArchiveLayout = { batch: 'batch', site: 'site' } as const;
export type ArchiveLayout = (typeof ArchiveLayout)[keyof typeof ArchiveLayout];

/**
 * One site's records in a data object, as readers see them: a gzip member of its own (`batch`), or
 * the whole object (`site`).
 */
export interface ArchivePart {
  site: string;
  /** Where its bytes are in the data object, and how many (compressed). */
  offset: number;
  bytes: number;
  /** Hex SHA-256 of those bytes. */
  sha256: string;
  count: number;
  firstSeq: number;
  lastSeq: number;
  /** Its sequences as inclusive runs `[from, to]` (other sites' messages fall between). */
  seqRanges: [number, number][];
}

/** What every manifest gives. */
interface ManifestCommon {
  /** Key of the data object. */
  object: string;
  stream: string;
  /** Durable that wrote it. */
  consumer: string;
  /** `YYYY-MM-DDTHH` (UTC) of the receive time of every record. */
  hour: string;
  /** Records in the object. */
  count: number;
  byKind: Record<string, number>;
  firstSeq: number;
  lastSeq: number;
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

/** The manifest of a `site` object: one site, the whole object its one part. */
export interface SiteManifest extends ManifestCommon {
  version: 1;
  site: string;
  /** The object's sequences as inclusive runs `[from, to]`. */
  seqRanges: [number, number][];
}

/**
 * A part as a `batch` manifest lists it. A manifest has one per site of the batch, so it is kept
 * short: `runs` gives the part's sequences as runs relative to the manifest's `firstSeq`, in text,
 * `"0,7,9-11"` for firstSeq+0, +7 and +9 to +11 (interleaved sites make runs of one sequence, and
 * stream sequences run to ten digits and more).
 */
export interface BatchPartEntry {
  site: string;
  offset: number;
  bytes: number;
  count: number;
  runs: string;
  sha256: string;
}

/** The manifest of a `batch` object: one part per site, in site order. */
export interface BatchManifest extends ManifestCommon {
  version: 2;
  parts: BatchPartEntry[];
}

/** The sidecar of a data object. */
export type ArchiveManifest = SiteManifest | BatchManifest;

/** The site parts of an object, whichever its layout. */
export function partsOf(manifest: ArchiveManifest): ArchivePart[] {
  if (manifest.version === 1) {
    const { site, bytes, sha256, count, firstSeq, lastSeq, seqRanges } = manifest;
    return [{ site, offset: 0, bytes, sha256, count, firstSeq, lastSeq, seqRanges }];
  }
  return manifest.parts.map(({ site, offset, bytes, count, runs, sha256 }) => {
    const seqRanges = decodeRuns(runs, manifest.firstSeq);
    return {
      site,
      offset,
      bytes,
      sha256,
      count,
      firstSeq: seqRanges[0]![0],
      lastSeq: seqRanges.at(-1)![1],
      seqRanges,
    };
  });
}

/** Runs as a `batch` manifest writes them, relative to `base`: [[10,10],[17,17],[19,21]], 10 → "0,7,9-11". */
export function encodeRuns(ranges: readonly (readonly [number, number])[], base: number): string {
  return ranges
    .map(([from, to]) => (from === to ? `${from - base}` : `${from - base}-${to - base}`))
    .join(',');
}

/** The runs of encodeRuns' text; throws RangeError on anything else. */
export function decodeRuns(runs: string, base: number): [number, number][] {
  if (!/^\d+(-\d+)?(,\d+(-\d+)?)*$/.test(runs))
    throw new RangeError(`not sequence runs: ${runs.slice(0, 40)}`);
  return runs.split(',').map((run) => {
    const dash = run.indexOf('-');
    return dash === -1
      ? [base + Number(run), base + Number(run)]
      : [base + Number(run.slice(0, dash)), base + Number(run.slice(dash + 1))];
  });
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

/** Key of a `site` data object. */
export function siteObjectKey(
  prefix: string,
  site: string,
  hour: string,
  firstSeq: number,
  lastSeq: number,
): string {
  return `${prefix}site=${site}/hour=${hour}/${seq20(firstSeq)}-${seq20(lastSeq)}${DATA_SUFFIX}`;
}

/**
 * Key of a `batch` data object. The digest keeps two different objects of the same sequence range
 * (a redelivered batch that lacks a message the first one held) from overwriting each other.
 */
export function batchObjectKey(
  prefix: string,
  hour: string,
  firstSeq: number,
  lastSeq: number,
  sha256: string,
): string {
  return `${prefix}hour=${hour}/${seq20(firstSeq)}-${seq20(lastSeq)}-${sha256.slice(0, 16)}${DATA_SUFFIX}`;
}

/** Where each layout's keys start under the archive's prefix. */
export const layoutPrefix = (prefix: string, layout: ArchiveLayout): string =>
  `${prefix}${layout === ArchiveLayout.batch ? 'hour=' : 'site='}`;

/** Key of the manifest of a data object. */
export const manifestKeyOf = (dataKey: string): string =>
  `${dataKey.slice(0, -DATA_SUFFIX.length)}${MANIFEST_SUFFIX}`;

/** Key of the data object a manifest sits beside. */
export const dataKeyOf = (manifestKey: string): string =>
  `${manifestKey.slice(0, -MANIFEST_SUFFIX.length)}${DATA_SUFFIX}`;

/** Is this the key of a manifest? */
export const isManifestKey = (key: string): boolean => key.endsWith(MANIFEST_SUFFIX);

/** What a data or manifest key says of its object. */
export interface ArchiveKeyParts {
  layout: ArchiveLayout;
  /** `site` objects only: a `batch` object's sites are in its manifest. */
  site?: string;
  hour: string;
  firstSeq: number;
  lastSeq: number;
}

const SITE_KEY =
  /site=([^/]+)\/hour=(\d{4}-\d{2}-\d{2}T\d{2})\/(\d{20})-(\d{20})\.(?:ndjson\.gz|manifest\.json)$/;
const BATCH_KEY =
  /hour=(\d{4}-\d{2}-\d{2}T\d{2})\/(\d{20})-(\d{20})-[0-9a-f]{16}\.(?:ndjson\.gz|manifest\.json)$/;

/** Layout, hour, sequence range (and site) from a data or manifest key; undefined if it is not one. */
export function parseArchiveKey(key: string): ArchiveKeyParts | undefined {
  const site = SITE_KEY.exec(key);
  if (site)
    return {
      layout: ArchiveLayout.site,
      site: site[1]!,
      hour: site[2]!,
      firstSeq: Number(site[3]),
      lastSeq: Number(site[4]),
    };
  const batch = BATCH_KEY.exec(key);
  if (batch)
    return {
      layout: ArchiveLayout.batch,
      hour: batch[1]!,
      firstSeq: Number(batch[2]),
      lastSeq: Number(batch[3]),
    };
  return undefined;
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
  /** Stream sequences of its records. */
  seqs: number[];
}

export interface BuildOptions {
  prefix: string;
  stream: string;
  consumer: string;
  layout?: ArchiveLayout;
  gzipLevel?: number;
}

/** A message to archive, with its receive time. */
type Entry = { message: SinkMessage; receivedMs: number };

/** One site's records of one hour, encoded. */
interface EncodedPart {
  part: ArchivePart;
  body: Buffer;
  uncompressedBytes: number;
  byKind: Record<string, number>;
  firstReceivedMs: number;
  lastReceivedMs: number;
  firstStoredMs: number;
  lastStoredMs: number;
  seqs: number[];
}
/**
 * Splits a batch by hour of receive time and site and builds its data objects: one per hour
 * (`batch`) or one per site and hour (`site`). A message seen twice in the batch (a redelivery) is
 * written once.
 */
export async function buildArchiveObjects(
  batch: readonly SinkMessage[],
  options: BuildOptions,
): Promise<ArchiveObject[]> {
  const objects: ArchiveObject[] = [];
  for (const [hour, sites] of groupByHourAndSite(batch)) {
    const parts = await Promise.all(
      [...sites.keys()].sort().map((site) => encodePart(site, sites.get(site)!, options.gzipLevel ?? 6)),
    );
    if ((options.layout ?? ArchiveLayout.batch) === ArchiveLayout.batch)
      objects.push(batchObject(hour, parts, options));
    else for (const part of parts) objects.push(siteObject(hour, part, options));
  }
  return objects;
}

/** hour → site → entries. A batch spans a few hours at most: each is formatted once. */
function groupByHourAndSite(batch: readonly SinkMessage[]): Map<string, Map<string, Entry[]>> {
  const out = new Map<string, Map<string, Entry[]>>();
  const hours = new Map<number, Map<string, Entry[]>>();
  for (const message of batch) {
    const receivedMs = receivedAtMs(message);
    const hourNumber = Math.floor(receivedMs / 3_600_000);
    let sites = hours.get(hourNumber);
    if (sites === undefined) {
      hours.set(hourNumber, (sites = new Map()));
      out.set(hourOf(receivedMs), sites);
    }
    let entries = sites.get(message.site);
    if (entries === undefined) sites.set(message.site, (entries = []));
    entries.push({ message, receivedMs });
  }
  return out;
}

async function encodePart(site: string, entries: Entry[], gzipLevel: number): Promise<EncodedPart> {
  entries.sort((a, b) => a.message.seq - b.message.seq);
  const seqs: number[] = [];
  const byKind: Record<string, number> = {};
  let text = '';
  let firstReceived = Infinity;
  let lastReceived = -Infinity;
  let firstStoredMs = Infinity;
  let lastStoredMs = -Infinity;
  for (const { message, receivedMs } of entries) {
    if (message.seq === seqs.at(-1)) continue;
    seqs.push(message.seq);
    text += `${JSON.stringify(toRecord(message))}\n`;
    byKind[message.kind] = (byKind[message.kind] ?? 0) + 1;
    firstReceived = Math.min(firstReceived, receivedMs);
    lastReceived = Math.max(lastReceived, receivedMs);
    firstStoredMs = Math.min(firstStoredMs, message.storedAtMs);
    lastStoredMs = Math.max(lastStoredMs, message.storedAtMs);
  }
  const ndjson = Buffer.from(text);
  const body = await gzipMember(ndjson, gzipLevel);
  const part: ArchivePart = {
    site,
    offset: 0,
    bytes: body.byteLength,
    sha256: sha256Hex(body),
    count: seqs.length,
    firstSeq: seqs[0]!,
    lastSeq: seqs.at(-1)!,
    seqRanges: seqRanges(seqs),
  };
  return {
    part,
    body,
    uncompressedBytes: ndjson.byteLength,
    byKind,
    firstReceivedMs: firstReceived,
    lastReceivedMs: lastReceived,
    firstStoredMs,
    lastStoredMs,
    seqs,
  };
}

const iso = (ms: number): string => new Date(ms).toISOString();

/** Below this size a part is compressed on the event loop: a thread-pool hop costs more than it. */
const SYNC_GZIP_MAX_BYTES = 64 * 1024;

/**
 * The gzip member of one part. A part of a few records (a site's share of a batch, in a large
 * fleet) gets a window and hash table fitted to its size: zlib's defaults allocate and clear about
 * 256 KiB per stream, which costs far more than compressing a few hundred bytes. Window and hash
 * size follow from the size alone, and Node's gzip header carries no time or name, so the same
 * records still give the same bytes.
 */
async function gzipMember(ndjson: Buffer, level: number): Promise<Buffer> {
  if (ndjson.byteLength > SYNC_GZIP_MAX_BYTES) return gzip(ndjson, { level });
  const windowBits = Math.min(15, Math.max(9, Math.ceil(Math.log2(ndjson.byteLength + 1))));
  return gzipSync(ndjson, { level, windowBits, memLevel: Math.max(1, windowBits - 7) });
}

function siteObject(hour: string, encoded: EncodedPart, options: BuildOptions): ArchiveObject {
  const { part, body } = encoded;
  const key = siteObjectKey(options.prefix, part.site, hour, part.firstSeq, part.lastSeq);
  const manifest: SiteManifest = {
    version: 1,
    object: key,
    stream: options.stream,
    consumer: options.consumer,
    site: part.site,
    hour,
    count: part.count,
    byKind: encoded.byKind,
    firstSeq: part.firstSeq,
    lastSeq: part.lastSeq,
    seqRanges: part.seqRanges,
    firstReceivedAt: iso(encoded.firstReceivedMs),
    lastReceivedAt: iso(encoded.lastReceivedMs),
    firstStoredAt: iso(encoded.firstStoredMs),
    lastStoredAt: iso(encoded.lastStoredMs),
    bytes: part.bytes,
    uncompressedBytes: encoded.uncompressedBytes,
    sha256: part.sha256,
  };
  return { key, manifestKey: manifestKeyOf(key), body, manifest, seqs: encoded.seqs };
}

function batchObject(hour: string, encoded: EncodedPart[], options: BuildOptions): ArchiveObject {
  const body = Buffer.concat(encoded.map((e) => e.body));
  const sha256 = sha256Hex(body);
  const byKind: Record<string, number> = {};
  let firstSeq = Infinity;
  let lastSeq = -Infinity;
  let firstReceivedMs = Infinity;
  let lastReceivedMs = -Infinity;
  let firstStoredMs = Infinity;
  let lastStoredMs = -Infinity;
  let uncompressedBytes = 0;
  let count = 0;
  for (const e of encoded) {
    firstSeq = Math.min(firstSeq, e.part.firstSeq);
    lastSeq = Math.max(lastSeq, e.part.lastSeq);
    firstReceivedMs = Math.min(firstReceivedMs, e.firstReceivedMs);
    lastReceivedMs = Math.max(lastReceivedMs, e.lastReceivedMs);
    firstStoredMs = Math.min(firstStoredMs, e.firstStoredMs);
    lastStoredMs = Math.max(lastStoredMs, e.lastStoredMs);
    uncompressedBytes += e.uncompressedBytes;
    count += e.part.count;
    for (const [kind, n] of Object.entries(e.byKind)) byKind[kind] = (byKind[kind] ?? 0) + n;
  }
  const parts: BatchPartEntry[] = [];
  let offset = 0;
  for (const { part } of encoded) {
    parts.push({
      site: part.site,
      offset,
      bytes: part.bytes,
      count: part.count,
      runs: encodeRuns(part.seqRanges, firstSeq),
      sha256: part.sha256,
    });
    offset += part.bytes;
  }
  const key = batchObjectKey(options.prefix, hour, firstSeq, lastSeq, sha256);
  const manifest: BatchManifest = {
    version: 2,
    object: key,
    stream: options.stream,
    consumer: options.consumer,
    hour,
    count,
    byKind,
    firstSeq,
    lastSeq,
    firstReceivedAt: iso(firstReceivedMs),
    lastReceivedAt: iso(lastReceivedMs),
    firstStoredAt: iso(firstStoredMs),
    lastStoredAt: iso(lastStoredMs),
    bytes: body.byteLength,
    uncompressedBytes,
    sha256,
    parts,
  };
  return { key, manifestKey: manifestKeyOf(key), body, manifest, seqs: encoded.flatMap((e) => e.seqs) };
}

export const sha256Hex = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

/** Do these bytes match what a manifest (or one of its parts) says of them? */
export const matchesDigest = (body: Uint8Array, expected: { bytes: number; sha256: string }): boolean =>
  body.byteLength === expected.bytes && sha256Hex(body) === expected.sha256;

/** The records of a data object's bytes, or of one part's (gzip reads concatenated members as one). */
export async function parseArchiveObject(body: Uint8Array): Promise<ArchiveRecord[]> {
  const text = (await gunzip(body)).toString('utf8');
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as ArchiveRecord);
}
