/**
 * The archive as tests see it: everything under a prefix, read through its verified manifests, and
 * an S3 endpoint that refuses chosen PUTs.
 */
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { S3Client } from '@aws-sdk/client-s3';
import {
  partsOf,
  type ArchiveManifest,
  type ArchivePart,
  type ArchiveRecord,
} from '../../cloud/archive/layout.ts';
import { ArchiveIntegrityError, listManifests, readArchiveObject } from '../../cloud/archive/s3.ts';

export interface ArchiveContents {
  manifests: ArchiveManifest[];
  /** Every site part of every object, with the object's key. */
  parts: (ArchivePart & { object: string })[];
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
  const parts = manifests.flatMap((m) => partsOf(m).map((p) => ({ ...p, object: m.object })));
  return { manifests, parts, records, counts, torn };
}

/** Sequences that more than one object claims, from the manifests alone. */
export function overlapFromParts(parts: readonly Pick<ArchivePart, 'seqRanges'>[]): number[] {
  const seen = new Map<number, number>();
  for (const p of parts)
    for (const [from, to] of p.seqRanges)
      for (let s = from; s <= to; s++) seen.set(s, (seen.get(s) ?? 0) + 1);
  return [...seen].filter(([, n]) => n > 1).map(([seq]) => seq);
}

/** An S3 endpoint in front of a real one that refuses some PUTs (s3FaultProxy). */
export interface S3FaultProxy {
  /** Endpoint URL for the client under test. */
  url: string;
  /** Keys of the PUTs it refused, in order. */
  refused: string[];
  /** Which PUTs to refuse, by key; change it between writes. */
  refuse: (key: string) => boolean;
  close(): Promise<void>;
}

/**
 * Refuses the PUTs `refuse` picks (by object key) with 503 SlowDown, what S3 answers when it
 * throttles a key prefix, with `Retry-After: retryAfter` when given; every other request goes to
 * `target` (s3rver) untouched. Path-style URLs only. The Host header is forwarded as sent, so the
 * client's signature still holds.
 */
export async function s3FaultProxy(
  target: string,
  refuse: (key: string) => boolean,
  options: { retryAfter?: string } = {},
): Promise<S3FaultProxy> {
  const upstream = new URL(target);
  const proxy: S3FaultProxy = { url: '', refused: [], refuse, close: async () => undefined };
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://proxy').pathname;
    const key = decodeURIComponent(path.split('/').slice(2).join('/'));
    if (req.method === 'PUT' && key && proxy.refuse(key)) {
      proxy.refused.push(key);
      req.resume();
      req.on('end', () => {
        res.writeHead(503, {
          'content-type': 'application/xml',
          ...(options.retryAfter ? { 'retry-after': options.retryAfter } : {}),
        });
        res.end(
          '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>' +
            '<Message>Please reduce your request rate.</Message><RequestId>fault-proxy</RequestId></Error>',
        );
      });
      return;
    }
    const forward = request(
      {
        host: upstream.hostname,
        port: upstream.port,
        method: req.method,
        path: req.url,
        headers: req.headers,
      },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    forward.on('error', () => res.destroy());
    req.pipe(forward);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  proxy.url = `http://127.0.0.1:${port}`;
  proxy.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return proxy;
}
