/**
 * The archive sink (S3, against s3rver) and the monitor sink (Redis, against redis-server) through
 * the shared Sink conformance suite (test/support/sink-conformance.ts). Each adapter reads back
 * exactly what its store holds for a site — the archive's records by stream sequence, through
 * verified manifests; the monitor's unit hashes, alarms, site counts, indexes and change entries —
 * and computes what that must be from the messages alone. Neither sink has bad data: both declare
 * it, with the reason, instead of faking a rejection. Below the suites, what is particular to the
 * archive: a write that fails for some of its objects.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { S3Client } from '@aws-sdk/client-s3';
import { Registry } from 'prom-client';
import { createClient, type RedisClientType } from 'redis';
import { ArchiveLayout, DEFAULT_ARCHIVE_PREFIX, partsOf, recordPayload } from '../cloud/archive/layout.ts';
import { createS3Client, listKeys, listManifests, readArchiveParts } from '../cloud/archive/s3.ts';
import { monitorKeys } from '../cloud/monitor/keys.ts';
import { TransientSinkError, type SinkMessage } from '../cloud/sink.ts';
import { S3ArchiveSink } from '../cloud/archive/sink.ts';
import { RedisMonitorSink } from '../cloud/monitor/sink.ts';
import { silentLogger } from '../lib/log.ts';
import { Header } from '../schemas/headers.ts';
import { killServer, type RunningServer } from '../stack/server-process.ts';
import { readArchive as readArchiveContents, s3FaultProxy, type S3FaultProxy } from './support/archive.ts';
import { deviceMessages, sinkConformance } from './support/sink-conformance.ts';
import { canonical, expectedMonitorState, readMonitorState, type Row } from './support/monitor-state.ts';
import { s3rverSettings, TestServers } from './support/servers.ts';

// ---------------------------------------------------------------------------------------------
// Archive: every record of a site, once per object it is in, payload bytes as base64

const BUCKET = 'switchyard';
const ARCHIVE_PREFIX = `conformance-${DEFAULT_ARCHIVE_PREFIX}`;

/** What the archive must hold for `messages`: one record each, bytes exactly as sent. */
const archiveRecords = (messages: readonly SinkMessage[]): Row[] =>
  canonical(
    messages.map((m) => ({
      seq: m.seq,
      subject: m.subject,
      time: new Date(m.storedAtMs).toISOString(),
      headers: m.headers,
      payload: Buffer.from(m.payload).toString('base64'),
    })),
  );

/** Every record of a site, read through its objects' manifests (sha256 and count checked). */
async function readArchive(s3: S3Client, prefix: string, site: string): Promise<Row[]> {
  const rows: Row[] = [];
  for (const key of await listManifests(s3, BUCKET, prefix)) {
    const { parts } = await readArchiveParts(s3, BUCKET, key, (p) => p.site === site);
    for (const r of parts.flatMap((p) => p.records))
      rows.push({
        seq: r.seq,
        subject: r.subject,
        time: r.time,
        headers: r.headers,
        payload: Buffer.from(recordPayload(r)).toString('base64'),
      });
  }
  return canonical(rows);
}

for (const layout of [ArchiveLayout.batch, ArchiveLayout.site])
  sinkConformance(
    `archive sink (s3rver, ${layout} layout)`,
    async () => {
      const servers = new TestServers(`sink-s3-${layout}`);
      let s3server = await servers.s3([BUCKET]);
      const settings = s3rverSettings(s3server);
      const reader = createS3Client(settings);
      const sink = new S3ArchiveSink({
        ...settings,
        s3Bucket: BUCKET,
        s3Prefix: ARCHIVE_PREFIX,
        s3Layout: layout,
        putConcurrency: 8,
        gzipLevel: 6,
        s3RequestTimeoutMs: 5_000,
        consumer: 'archive',
        stream: 'BSU',
        log: silentLogger,
        registry: new Registry(),
      });
      await sink.open();
      return {
        sink,
        readBack: (site) => readArchive(reader, ARCHIVE_PREFIX, site),
        expected: archiveRecords,
        rejectsUndecodable: false,
        // s3rver keeps each object in files of its own: a SIGKILL loses nothing it answered 200 for.
        kill: async () => {
          await killServer(s3server);
          return async () => void (s3server = await servers.restart(s3server));
        },
        stop: async () => {
          reader.destroy();
          await servers.stopAll();
        },
      };
    },
    { noBadData: 'the archive keeps every payload as sent, invalid ones included' },
  );

// ---------------------------------------------------------------------------------------------
// Monitor: the state of every unit of a site, and what was announced about it

const PREFIX = 'conformance:';

sinkConformance(
  'monitor sink (Redis)',
  async () => {
    const servers = new TestServers('sink-redis');
    let redisServer = await servers.redis();
    const connectReader = async (): Promise<RedisClientType> => {
      const client: RedisClientType = createClient({ url: redisServer.url });
      client.on('error', () => undefined);
      await client.connect();
      return client;
    };
    let reader = await connectReader();
    const sink = new RedisMonitorSink({
      redisUrl: redisServer.url,
      redisKeyPrefix: PREFIX,
      // Health is then only ever online or faulted while the suite runs: its state is exact.
      offlineAfterMs: 3_600_000,
      sweepIntervalMs: 5_000,
      changesMaxLen: 100_000,
      consumer: 'monitor',
      log: silentLogger,
      registry: new Registry(),
    });
    await sink.open();
    return {
      sink,
      readBack: async (site) => {
        if (!reader.isReady) {
          reader.destroy();
          reader = await connectReader();
        }
        return readMonitorState(reader, monitorKeys(PREFIX), site);
      },
      expected: expectedMonitorState,
      rejectsUndecodable: false,
      // Redis runs with an append-only file (stack/server-specs.ts): a SIGKILL loses nothing it answered.
      kill: async () => {
        await killServer(redisServer);
        return async () => void (redisServer = await servers.restart(redisServer));
      },
      stop: async () => {
        reader.destroy();
        await servers.stopAll();
      },
    };
  },
  {
    noBadData:
      'the monitor counts an undecodable payload and marks its unit as heard from; the archive keeps it',
  },
);

// ---------------------------------------------------------------------------------------------
// Particular to the archive

describe('archive sink', () => {
  const servers = new TestServers('sink-s3-partial');
  let s3server: RunningServer;
  let reader: S3Client;
  let proxy: S3FaultProxy;

  before(async () => {
    s3server = await servers.s3([BUCKET]);
    reader = createS3Client(s3rverSettings(s3server));
    proxy = await s3FaultProxy(s3server.url, () => false, { retryAfter: '2' });
  });
  after(async () => {
    reader?.destroy();
    await proxy?.close();
    await servers.stopAll();
  });

  test('a write that fails for some objects names exactly their messages; the other objects are durable', async () => {
    const prefix = 'partial/';
    const sink = new S3ArchiveSink({
      ...s3rverSettings(s3server),
      s3Endpoint: proxy.url,
      s3Bucket: BUCKET,
      s3Prefix: prefix,
      s3Layout: ArchiveLayout.batch,
      putConcurrency: 2,
      gzipLevel: 6,
      s3RequestTimeoutMs: 5_000,
      consumer: 'archive',
      stream: 'BSU',
      log: silentLogger,
      registry: new Registry(),
    });
    await sink.open();
    // Three hours' messages interleaved in one batch, three sites in each: an object per hour.
    const hours = ['2026-11-26T03', '2026-11-26T04', '2026-11-26T05'];
    const byHour = hours.map((hour, h) =>
      ['pa', 'pb', 'pc'].flatMap((site) =>
        deviceMessages(site, 4).map((m) => ({
          ...m,
          headers: {
            ...m.headers,
            [Header.receivedAt]: `${hour}:${String(10 + h).padStart(2, '0')}:00.000Z`,
          },
        })),
      ),
    );
    const batch = byHour[0]!.flatMap((m, i) => [m, byHour[1]![i]!, byHour[2]![i]!]);
    const seqsOf = (messages: readonly SinkMessage[]) => messages.map((m) => m.seq).sort((a, b) => a - b);
    // S3 throttles the second hour's data object, and the third hour's manifest after its data object went in.
    proxy.refuse = (key) =>
      key.startsWith(`${prefix}hour=${hours[1]}/`) ||
      (key.startsWith(`${prefix}hour=${hours[2]}/`) && key.endsWith('.manifest.json'));

    const err = await sink.write(batch, AbortSignal.timeout(10_000)).then(
      () => assert.fail('the write resolved'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof TransientSinkError, String(err));
    assert.deepEqual(
      [...err.failedSeqs!].sort((a, b) => a - b),
      seqsOf([...byHour[1]!, ...byHour[2]!]),
      'exactly the messages of the objects not written',
    );
    assert.equal(err.retryAfterMs, 2_000, "S3's Retry-After");
    assert.ok(proxy.refused.some((key) => key.includes(`hour=${hours[1]}/`)));
    assert.ok(
      proxy.refused.some((key) => key.includes(`hour=${hours[2]}/`) && key.endsWith('.manifest.json')),
    );

    // In S3 itself: the first hour whole, and nothing a reader trusts of the others (the third
    // hour's data object is there, without the manifest that would make it count).
    assert.ok(
      (await listKeys(reader, BUCKET, `${prefix}hour=${hours[2]}/`)).some((k) => k.endsWith('.ndjson.gz')),
    );
    const durable = await readArchiveContents(reader, BUCKET, prefix);
    assert.deepEqual(
      durable.manifests.map((m) => m.hour),
      [hours[0]],
    );
    assert.deepEqual(
      durable.manifests.flatMap((m) => partsOf(m).map((p) => p.site)),
      ['pa', 'pb', 'pc'],
    );
    assert.deepEqual(
      durable.records.map((r) => r.seq).sort((a, b) => a - b),
      seqsOf(byHour[0]!),
    );

    // The runner redelivers only the failed messages; once S3 takes them, every site is whole once.
    proxy.refuse = () => false;
    const failed = new Set(err.failedSeqs);
    assert.deepEqual(
      await sink.write(
        batch.filter((m) => failed.has(m.seq)),
        AbortSignal.timeout(10_000),
      ),
      { rejected: [] },
    );
    const all = await readArchiveContents(reader, BUCKET, prefix);
    assert.deepEqual(
      all.records.map((r) => r.seq).sort((a, b) => a - b),
      seqsOf(batch),
    );
    await sink.close();
  });
});
