/**
 * S3 access shared by the archive sink and whatever reads the archive back (backfill, tests): the
 * client settings that work against AWS, MinIO and s3rver alike, and a verified read of a data
 * object through its manifest.
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
  parseArchiveObject,
  verifyArchiveObject,
  type ArchiveManifest,
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

/** Every key under `prefix`, in key order. */
export async function listKeys(client: S3Client, bucket: string, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page: ListObjectsV2CommandOutput = await client.send(
      new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }),
    );
    for (const o of page.Contents ?? []) if (o.Key) keys.push(o.Key);
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return keys;
}

/** Manifest keys under `prefix` (one per trusted-or-not data object), in key order. */
export async function listManifests(client: S3Client, bucket: string, prefix: string): Promise<string[]> {
  return (await listKeys(client, bucket, prefix)).filter(isManifestKey);
}

async function getBytes(client: S3Client, bucket: string, key: string): Promise<Uint8Array> {
  const out = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  if (!out.Body) throw new ArchiveIntegrityError(`${key}: empty response`);
  return out.Body.transformToByteArray();
}

/**
 * A manifest alone, checked to be JSON that names the data object beside it; ArchiveIntegrityError
 * otherwise. A manifest cut short is an integrity error like any other: S3 never shows a PUT that did
 * not complete, but s3rver keeps whatever arrived before its client died.
 */
export async function readManifest(client: S3Client, bucket: string, key: string): Promise<ArchiveManifest> {
  const bytes = await getBytes(client, bucket, key);
  let manifest: ArchiveManifest;
  try {
    manifest = JSON.parse(Buffer.from(bytes).toString('utf8')) as ArchiveManifest;
  } catch (err) {
    throw new ArchiveIntegrityError(`${key}: manifest is not valid JSON (${(err as Error).message})`);
  }
  if (typeof manifest?.object !== 'string' || manifestKeyOf(manifest.object) !== key)
    throw new ArchiveIntegrityError(`${key}: manifest names another object, ${String(manifest?.object)}`);
  if (!Array.isArray(manifest.seqRanges))
    throw new ArchiveIntegrityError(`${key}: manifest has no seqRanges`);
  return manifest;
}

/**
 * Reads a data object through its manifest and checks it; throws ArchiveIntegrityError when the
 * bytes do not match (a backfill must skip such an object: a later one holds the same records).
 */
export async function readArchiveObject(
  client: S3Client,
  bucket: string,
  manifestKey: string,
): Promise<{ manifest: ArchiveManifest; records: ArchiveRecord[] }> {
  const manifest = await readManifest(client, bucket, manifestKey);
  const body = await getBytes(client, bucket, manifest.object);
  if (!verifyArchiveObject(body, manifest))
    throw new ArchiveIntegrityError(`${manifest.object}: bytes do not match the sha256 of its manifest`);
  const records = await parseArchiveObject(body);
  if (records.length !== manifest.count)
    throw new ArchiveIntegrityError(
      `${manifest.object}: ${records.length} records, manifest says ${manifest.count}`,
    );
  return { manifest, records };
}
