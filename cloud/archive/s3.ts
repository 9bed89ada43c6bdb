/**
 * S3 access shared by the archive sink and whatever reads the archive back (replay, backfill,
 * audit, tests): the client settings that work against AWS, MinIO and s3rver alike, and verified
 * reads of data objects, whole or one site's part, through their manifests.
 */
import {
  GetObjectCommand,
  ListObjectsV2Command,
  S3Client,
  type ListObjectsV2CommandOutput,
} from '@aws-sdk/client-s3';
import {
  isManifestKey,
  manifestKeyOf,
  matchesDigest,
  parseArchiveObject,
  partsOf,
  type ArchiveManifest,
  type ArchivePart,
  type ArchiveRecord,
} from './layout.ts';

export interface S3Settings {
  /** Empty for AWS itself; e.g. `http://127.0.0.1:4569` for s3rver or MinIO. */
  s3Endpoint: string;
  s3Region: string;
  /** Empty: the AWS default credential chain (environment, instance role, …). */
  s3AccessKeyId: string;
  s3SecretAccessKey: string;
  /** Path-style URLs (`endpoint/bucket/key`): needed by s3rver and most MinIO setups. */
  s3ForcePathStyle: boolean;
}

/**
 * An S3 client with no retries of its own (the consumer runner is the one retry layer) and
 * checksums only where S3 requires them (otherwise the SDK frames streamed bodies as aws-chunked,
 * which s3rver stores verbatim while reporting success).
 */
export function createS3Client(settings: S3Settings, options: { requestTimeoutMs?: number } = {}): S3Client {
  return new S3Client({
    region: settings.s3Region,
    ...(settings.s3Endpoint ? { endpoint: settings.s3Endpoint } : {}),
    forcePathStyle: settings.s3ForcePathStyle,
    ...(settings.s3AccessKeyId
      ? { credentials: { accessKeyId: settings.s3AccessKeyId, secretAccessKey: settings.s3SecretAccessKey } }
      : {}),
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: 1,
    requestHandler: { connectionTimeout: 5_000, requestTimeout: options.requestTimeoutMs ?? 30_000 },
  });
}

/** A data object whose bytes do not match its manifest, or a manifest that cannot be read. */
export class ArchiveIntegrityError extends Error {
  override name = 'ArchiveIntegrityError';
}

/** Where a listing starts and stops, in key order. */
export interface KeyRange {
  /** Only keys after this one. */
  startAfter?: string;
  /** Only keys up to and including this one. */
  through?: string;
}

/** Every key under `prefix` (within `range`), in key order. */
export async function listKeys(
  client: S3Client,
  bucket: string,
  prefix: string,
  range: KeyRange = {},
): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page: ListObjectsV2CommandOutput = await client.send(
      new ListObjectsV2Command({
        Bucket: bucket,
        Prefix: prefix,
        ContinuationToken: token,
        ...(token === undefined && range.startAfter !== undefined ? { StartAfter: range.startAfter } : {}),
      }),
    );
    for (const o of page.Contents ?? []) {
      if (!o.Key) continue;
      if (range.through !== undefined && o.Key > range.through) return keys;
      keys.push(o.Key);
    }
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return keys;
}

/** Manifest keys under `prefix` (one per trusted-or-not data object), in key order. */
export async function listManifests(
  client: S3Client,
  bucket: string,
  prefix: string,
  range: KeyRange = {},
): Promise<string[]> {
  return (await listKeys(client, bucket, prefix, range)).filter(isManifestKey);
}

async function getBytes(
  client: S3Client,
  bucket: string,
  key: string,
  range?: { offset: number; bytes: number },
): Promise<Uint8Array> {
  const out = await client
    .send(
      new GetObjectCommand({
        Bucket: bucket,
        Key: key,
        ...(range ? { Range: `bytes=${range.offset}-${range.offset + range.bytes - 1}` } : {}),
      }),
    )
    .catch((err: unknown) => {
      // 416: the object is shorter than the manifest says (a rewrite cut short, on s3rver).
      if (range && (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 416)
        throw new ArchiveIntegrityError(
          `${key}: shorter than its manifest says (no bytes at ${range.offset})`,
        );
      throw err;
    });
  if (!out.Body) throw new ArchiveIntegrityError(`${key}: empty response`);
  return out.Body.transformToByteArray();
}

/**
 * A manifest alone and its parts, checked to be JSON that names the data object beside it and
 * lists parts that read; ArchiveIntegrityError otherwise. A manifest cut short is an integrity error like any other: S3
 * never shows a PUT that did not complete, but s3rver keeps whatever arrived before its client died.
 */
export async function readManifest(
  client: S3Client,
  bucket: string,
  key: string,
): Promise<{ manifest: ArchiveManifest; parts: ArchivePart[] }> {
  const bytes = await getBytes(client, bucket, key);
  let manifest: ArchiveManifest;
  try {
    manifest = JSON.parse(Buffer.from(bytes).toString('utf8')) as ArchiveManifest;
  } catch (err) {
    throw new ArchiveIntegrityError(`${key}: manifest is not valid JSON (${(err as Error).message})`);
  }
  if (typeof manifest?.object !== 'string' || manifestKeyOf(manifest.object) !== key)
    throw new ArchiveIntegrityError(`${key}: manifest names another object, ${String(manifest?.object)}`);
  if (manifest.version !== 1 && manifest.version !== 2)
    throw new ArchiveIntegrityError(
      `${key}: manifest version ${String((manifest as { version?: unknown }).version)} is not one this reads`,
    );
  if (manifest.version === 1 && !Array.isArray(manifest.seqRanges))
    throw new ArchiveIntegrityError(`${key}: manifest has no seqRanges`);
  if (manifest.version === 2 && !Array.isArray(manifest.parts))
    throw new ArchiveIntegrityError(`${key}: manifest has no parts`);
  try {
    return { manifest, parts: partsOf(manifest) };
  } catch (err) {
    throw new ArchiveIntegrityError(`${key}: manifest parts do not read: ${(err as Error).message}`);
  }
}

/** The records of one part of an object. */
export interface PartRecords {
  part: ArchivePart;
  records: ArchiveRecord[];
}

/**
 * Reads the parts `select` picks (every part by default) of the object a manifest names, each
 * checked against the manifest: the whole object's sha256 when it is read whole, a part's own when
 * only that part's bytes are fetched (a ranged GET, when the parts picked are a small share of the
 * object). Throws ArchiveIntegrityError when bytes do not match: a reader must skip such an object,
 * a later one holds the same records.
 */
export async function readArchiveParts(
  client: S3Client,
  bucket: string,
  manifestKey: string,
  select: (part: ArchivePart) => boolean = () => true,
): Promise<{ manifest: ArchiveManifest; parts: PartRecords[] }> {
  const { manifest, parts: all } = await readManifest(client, bucket, manifestKey);
  const picked = all.filter(select);
  if (picked.length === 0) return { manifest, parts: [] };
  const pickedBytes = picked.reduce((n, p) => n + p.bytes, 0);
  const ranged = picked.length <= RANGED_PARTS_MAX && pickedBytes * 2 < manifest.bytes;
  const parts: PartRecords[] = [];
  if (ranged) {
    for (const part of picked) {
      const bytes = await getBytes(client, bucket, manifest.object, part);
      if (!matchesDigest(bytes, part))
        throw new ArchiveIntegrityError(
          `${manifest.object}: bytes ${part.offset}+${part.bytes} (site ${part.site}) do not match the sha256 of its manifest`,
        );
      parts.push({ part, records: await partRecords(manifest, part, bytes) });
    }
    return { manifest, parts };
  }
  const body = await getBytes(client, bucket, manifest.object);
  if (!matchesDigest(body, manifest))
    throw new ArchiveIntegrityError(`${manifest.object}: bytes do not match the sha256 of its manifest`);
  for (const part of picked)
    parts.push({
      part,
      records: await partRecords(manifest, part, body.subarray(part.offset, part.offset + part.bytes)),
    });
  return { manifest, parts };
}

/** Above this many parts of one object, reading it whole costs fewer requests than ranges. */
const RANGED_PARTS_MAX = 4;

async function partRecords(
  manifest: ArchiveManifest,
  part: ArchivePart,
  bytes: Uint8Array,
): Promise<ArchiveRecord[]> {
  let records: ArchiveRecord[];
  try {
    records = await parseArchiveObject(bytes);
  } catch (err) {
    throw new ArchiveIntegrityError(`${manifest.object}: site ${part.site}: ${(err as Error).message}`);
  }
  if (records.length !== part.count)
    throw new ArchiveIntegrityError(
      `${manifest.object}: ${records.length} records of site ${part.site}, manifest says ${part.count}`,
    );
  return records;
}

/** Every record of the object a manifest names (verified as readArchiveParts does). */
export async function readArchiveObject(
  client: S3Client,
  bucket: string,
  manifestKey: string,
): Promise<{ manifest: ArchiveManifest; records: ArchiveRecord[] }> {
  const { manifest, parts } = await readArchiveParts(client, bucket, manifestKey);
  return { manifest, records: parts.flatMap((p) => p.records) };
}
