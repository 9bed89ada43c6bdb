/**
 * The archive sink: every message of the hub stream, `invalid` ones included, into S3 as gzip
 * NDJSON objects with a manifest each (docs/consumers.md; layout: cloud/archive/layout.ts).
 *
 * The runner's batch is the unit: it becomes one object per hour (or per site and hour, with the
 * `site` layout), each written (data object, then manifest) before `write` settles, so nothing is
 * held across batches and no ack ever waits on a later flush.
 */
import { HeadBucketCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { createHash } from 'node:crypto';
import type { Counter, Registry } from 'prom-client';
import { registeredCounter } from '../../lib/metrics.ts';
import Type, { type Static } from 'typebox';
import { describeError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import type { Readiness } from '../../lib/ops.ts';
import { ArchiveLayout, buildArchiveObjects, DEFAULT_ARCHIVE_PREFIX, type ArchiveObject } from './layout.ts';
import { createS3Client, type S3Settings } from './s3.ts';
import { accepted, TransientSinkError, type Sink, type SinkMessage, type WriteResult } from '../sink.ts';
import { retryAfterOf } from '../../lib/retry-after.ts';

/** Settings of the archive sink (the runner's: cloud/runner-settings.ts). */
export const ArchiveConfigSchema = Type.Object({
  s3Endpoint: Type.String({ default: '', description: 'S3 endpoint URL; empty for AWS' }),
  s3Region: Type.String({ minLength: 1, default: 'us-east-1', description: 'S3 region' }),
  s3Bucket: Type.String({ minLength: 1, default: 'switchyard', description: 'bucket of the archive' }),
  s3AccessKeyId: Type.String({
    default: '',
    description: 'S3 access key; empty for the AWS credential chain',
  }),
  s3SecretAccessKey: Type.String({ default: '', secret: true, description: 'S3 secret key' }),
  s3ForcePathStyle: Type.Boolean({ default: true, description: 'path-style URLs (s3rver, MinIO)' }),
  s3Prefix: Type.String({ default: DEFAULT_ARCHIVE_PREFIX, description: 'key prefix of data objects' }),
  s3Layout: Type.Enum([ArchiveLayout.batch, ArchiveLayout.site] as const, {
    default: ArchiveLayout.batch,
    description:
      'objects: batch (one per batch and hour, every site in it) or site (one per site and hour: ' +
      'per-site prefixes, two PUTs per site a batch)',
  }),
  putConcurrency: Type.Integer({ minimum: 1, default: 8, description: 'objects written at once' }),
  gzipLevel: Type.Integer({ minimum: 1, maximum: 9, default: 6, description: 'gzip level of data objects' }),
  s3RequestTimeoutMs: Type.Integer({
    minimum: 100,
    default: 30_000,
    description: 'one S3 request, at most (ms)',
  }),
});
export type ArchiveConfig = Static<typeof ArchiveConfigSchema>;

export interface S3ArchiveOptions extends ArchiveConfig {
  /** Durable name, recorded in each manifest. */
  consumer: string;
  /** Stream name, recorded in each manifest. */
  stream: string;
  log: Logger;
  registry: Registry;
  /** A client to use instead of one built from the settings (the sink then does not destroy it). */
  client?: S3Client;
}

/** Names of the archive's own metrics (labelled `consumer`). */
export const ArchiveMetric = {
  objects: 'switchyard_archive_objects_total',
  bytes: 'switchyard_archive_bytes_total',
  records: 'switchyard_archive_records_total',
} as const;

const counter = (registry: Registry, name: string, help: string): Counter<'consumer'> =>
  registeredCounter(registry, name, help, ['consumer']);

export class S3ArchiveSink implements Sink {
  readonly name = 's3';
  private client: S3Client | undefined;
  private readonly objects: Counter<'consumer'>;
  private readonly bytes: Counter<'consumer'>;
  private readonly records: Counter<'consumer'>;

  constructor(private readonly options: S3ArchiveOptions) {
    this.objects = counter(options.registry, ArchiveMetric.objects, 'Data objects written to S3');
    this.bytes = counter(options.registry, ArchiveMetric.bytes, 'Bytes of data objects written (compressed)');
    this.records = counter(
      options.registry,
      ArchiveMetric.records,
      'Records written (a redelivered one again)',
    );
  }

  private s3(): S3Client {
    this.client ??=
      this.options.client ??
      createS3Client(this.options satisfies S3Settings, {
        requestTimeoutMs: this.options.s3RequestTimeoutMs,
      });
    return this.client;
  }

  async open(): Promise<void> {
    await this.s3().send(new HeadBucketCommand({ Bucket: this.options.s3Bucket }), {
      abortSignal: AbortSignal.timeout(5_000),
    });
    this.options.log.info(
      { bucket: this.options.s3Bucket, prefix: this.options.s3Prefix },
      'archiving to S3',
    );
  }

  async write(batch: readonly SinkMessage[], signal: AbortSignal): Promise<WriteResult> {
    if (batch.length === 0) return accepted();
    const objects = await buildArchiveObjects(batch, {
      prefix: this.options.s3Prefix,
      stream: this.options.stream,
      consumer: this.options.consumer,
      layout: this.options.s3Layout,
      gzipLevel: this.options.gzipLevel,
    });
    // Every object is tried even after one failed: S3 throttles per key prefix (503 SlowDown), so
    // one object's failure says little about the others, and each one written is not retried.
    const failures: unknown[] = [];
    const notWritten = new Set(objects);
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < objects.length && !signal.aborted) {
        const object = objects[next++]!;
        try {
          await this.put(object, signal);
          notWritten.delete(object);
        } catch (err) {
          failures.push(err);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.options.putConcurrency, objects.length) }, worker));
    if (notWritten.size === 0) return accepted();
    throw this.partialFailure(objects.length, [...notWritten], failures, signal);
  }

  /**
   * What a write that left `notWritten` out of S3 throws: only their messages fail (the others are
   * durable, the runner acks them), retried no sooner than the longest `Retry-After` S3 sent.
   */
  private partialFailure(
    total: number,
    notWritten: ArchiveObject[],
    failures: unknown[],
    signal: AbortSignal,
  ): TransientSinkError {
    const cause = failures[0] ?? signal.reason;
    const hints = failures.map(retryAfterOfS3).filter((ms) => ms !== undefined);
    const failedSeqs = notWritten.flatMap((o) => o.seqs);
    this.options.log.debug(
      { failed: notWritten.map((o) => o.key), messages: failedSeqs.length },
      'archive objects not written',
    );
    return new TransientSinkError(
      `${notWritten.length} of ${total} archive objects not written (${failedSeqs.length} messages): ` +
        describeError(cause),
      {
        cause,
        failedSeqs,
        ...(hints.length > 0 ? { retryAfterMs: Math.max(...hints) } : {}),
      },
    );
  }

  /** The data object, then its manifest: a manifest never names an object that is not there. */
  private async put(object: ArchiveObject, signal: AbortSignal): Promise<void> {
    const { manifest } = object;
    await this.s3().send(
      new PutObjectCommand({
        Bucket: this.options.s3Bucket,
        Key: object.key,
        Body: object.body,
        ContentType: 'application/gzip',
        // S3 checks the bytes it received against this and refuses a damaged upload.
        ContentMD5: createHash('md5').update(object.body).digest('base64'),
        Metadata: {
          'switchyard-sha256': manifest.sha256,
          'switchyard-first-seq': String(manifest.firstSeq),
          'switchyard-last-seq': String(manifest.lastSeq),
          'switchyard-count': String(manifest.count),
        },
      }),
      { abortSignal: signal },
    );
    await this.s3().send(
      new PutObjectCommand({
        Bucket: this.options.s3Bucket,
        Key: object.manifestKey,
        Body: `${JSON.stringify(manifest)}\n`,
        ContentType: 'application/json',
      }),
      { abortSignal: signal },
    );
    const labels = { consumer: this.options.consumer };
    this.objects.inc(labels);
    this.bytes.inc(labels, manifest.bytes);
    this.records.inc(labels, manifest.count);
    this.options.log.debug(
      { key: object.key, count: manifest.count, bytes: manifest.bytes },
      'wrote archive object',
    );
  }

  async readiness(): Promise<Readiness> {
    try {
      await this.s3().send(new HeadBucketCommand({ Bucket: this.options.s3Bucket }), {
        abortSignal: AbortSignal.timeout(3_000),
      });
      return { ready: true };
    } catch (err) {
      const name = err instanceof Error ? err.name : 'Error';
      return {
        ready: false,
        reasons: [`bucket ${this.options.s3Bucket}: ${name} ${describeError(err)}`.trim()],
      };
    }
  }

  async close(): Promise<void> {
    if (this.client && !this.options.client) this.client.destroy();
    this.client = undefined;
  }
}

/** The `Retry-After` of an S3 error answer (the SDK keeps the raw response on `$response`). */
function retryAfterOfS3(err: unknown): number | undefined {
  const response = (err as { $response?: { headers?: Record<string, string> } } | undefined)?.$response;
  return retryAfterOf(response?.headers);
}
