/**
 * `switchyard archive`: every message of the hub stream into S3, as gzip NDJSON objects by site and
 * hour with a manifest each (docs/consumers.md).
 */
import { consumerCommand, type ConsumerCommandSpec } from '../../cloud/consumer-command.ts';
import { ArchiveConfigSchema, S3ArchiveSink } from '../../cloud/sinks/s3-archive.ts';

/** The archive consumer: its settings, defaults and sink (also run in-process by `dev` and tests). */
export const archiveSpec = {
  name: 'archive',
  summary: 'archive every message of the hub stream to S3 (long-term replay and backfill)',
  description:
    'Consumes the hub stream BSU with its own durable and writes every message, invalid ones included, to S3 ' +
    'as gzip NDJSON objects keyed by site, hour and stream sequence, each with a manifest (counts, sequence ' +
    'ranges, sha256). Acks only after S3 has the object.',
  sinkConfigSchema: ArchiveConfigSchema,
  // Few, large objects: S3 charges per request and s3rver manages a few hundred PUTs a second. The
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
} satisfies ConsumerCommandSpec<typeof ArchiveConfigSchema>;

export const registerArchive = consumerCommand(archiveSpec);
