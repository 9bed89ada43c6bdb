/** Everything the archive holds under a prefix, read through its verified manifests. */
import type { S3Client } from '@aws-sdk/client-s3';
import type { ArchiveManifest, ArchiveRecord } from '../../cloud/archive/layout.ts';
import { ArchiveIntegrityError, listManifests, readArchiveObject } from '../../cloud/archive/s3.ts';

export interface ArchiveContents {
  manifests: ArchiveManifest[];
  records: ArchiveRecord[];
  /** How many times each stream sequence was archived. */
  counts: Map<number, number>;
  /** Objects that failed verification and were skipped (only with `skipTorn`). */
  torn: { manifestKey: string; reason: string }[];
}

/**
 * Everything the archive holds under a prefix, read through its verified manifests. An object that
 * fails verification throws, unless `skipTorn`: then it is skipped, as a backfill skips it, and
 * listed in `torn`. Only a test that kills the archive mid-write should expect any.
 */
export async function readArchive(
  s3: S3Client,
  bucket: string,
  prefix: string,
  options: { skipTorn?: boolean } = {},
): Promise<ArchiveContents> {
  const manifests: ArchiveManifest[] = [];
  const records: ArchiveRecord[] = [];
  const torn: ArchiveContents['torn'] = [];
  for (const key of await listManifests(s3, bucket, prefix)) {
    try {
      const object = await readArchiveObject(s3, bucket, key);
      manifests.push(object.manifest);
      records.push(...object.records);
    } catch (err) {
      if (!(options.skipTorn && err instanceof ArchiveIntegrityError)) throw err;
      torn.push({ manifestKey: key, reason: err.message });
    }
  }
  const counts = new Map<number, number>();
  for (const r of records) counts.set(r.seq, (counts.get(r.seq) ?? 0) + 1);
  return { manifests, records, counts, torn };
}
