/** The archive a user would write: each batch as gzipped JSON lines, one S3 PutObject, then ack. */
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { naiveDrain, settings } from './loop.ts';

const gzipAsync = promisify(gzip);
const s3 = new S3Client({
  endpoint: settings.storeUrl,
  region: 'us-east-1',
  forcePathStyle: true,
  credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
});

await naiveDrain(async (batch) => {
  let lines = '';
  for (const m of batch) {
    const headers: Record<string, string> = {};
    for (const [k, v] of m.headers ?? []) headers[k] = v[0]!;
    lines += `${JSON.stringify({ seq: m.seq, subject: m.subject, time: m.time.toISOString(), headers, payload: m.string() })}\n`;
  }
  await s3.send(
    new PutObjectCommand({
      Bucket: 'switchyard',
      Key: `naive/${batch[0]!.seq}-${batch.at(-1)!.seq}.ndjson.gz`,
      Body: await gzipAsync(lines),
    }),
  );
});
s3.destroy();
