/** Everything the archive holds under a prefix, read through its verified manifests. */
import type { S3Client } from '@aws-sdk/client-s3';
import type { ArchiveManifest, ArchiveRecord } from '../../cloud/archive/layout.ts';
import { listManifests, readArchiveObject } from '../../cloud/archive/s3.ts';

export interface ArchiveContents {
  manifests: ArchiveManifest[];
  records: ArchiveRecord[];
  /** How many times each stream sequence was archived. */
  counts: Map<number, number>;
}

export async function readArchive(s3: S3Client, bucket: string, prefix: string): Promise<ArchiveContents> {
  const manifests: ArchiveManifest[] = [];
  const records: ArchiveRecord[] = [];
  for (const key of await listManifests(s3, bucket, prefix)) {
    const object = await readArchiveObject(s3, bucket, key);
    manifests.push(object.manifest);
    records.push(...object.records);
  }
  const counts = new Map<number, number>();
  for (const r of records) counts.set(r.seq, (counts.get(r.seq) ?? 0) + 1);
  return { manifests, records, counts };
}
