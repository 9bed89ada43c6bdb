/** The archive consumer: every message of the hub stream into S3 (docs/consumers.md). */
import type { ConsumerSpec } from '../consumer.ts';
import { ArchiveConfigSchema, S3ArchiveSink } from './sink.ts';

export const archiveConsumer = {
  name: 'archive',
  description:
    'Consumes the hub stream BSU with its own durable and writes every message, invalid ones included, to S3 ' +
    'as gzip NDJSON objects keyed by site, hour and stream sequence, each with a manifest (counts, sequence ' +
    'ranges, sha256). Acks only after S3 has the object.',
  sinkConfigSchema: ArchiveConfigSchema,
  // Few, large objects: S3 charges per request, and an object per site and hour per batch. The
  // fetch waits up to fetchExpiresMs for a full batch, which bounds an object's age.
  runnerDefaults: {
    batchSize: 5_000,
    maxBatchBytes: 4 * 1024 * 1024,
    fillBatch: true,
    fetchExpiresMs: 15_000,
    maxAckPending: 20_000,
    opsPort: 9464,
  },
  createSink: (config, log, registry) =>
    new S3ArchiveSink({ ...config, consumer: config.durable, stream: config.stream, log, registry }),
} satisfies ConsumerSpec<typeof ArchiveConfigSchema>;
