/**
 * `switchyard archive` against real servers: nats-server (a plain stream `BSU`) and s3rver. What
 * reached S3 is read back through the manifests and counted by stream sequence.
 */
import assert from 'node:assert/strict';
import { createConnection } from 'node:net';
import { after, before, beforeEach, describe, test } from 'node:test';
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect, headers, type NatsConnection } from '@nats-io/transport-node';
import { GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { Registry } from 'prom-client';
import { archiveConsumer } from '../cloud/archive/consumer.ts';
import {
  buildArchiveObjects,
  decodeRuns,
  encodeRuns,
  parseArchiveKey,
  parseArchiveObject,
  partsOf,
  recordPayload,
  sha256Hex,
} from '../cloud/archive/layout.ts';
import type { SinkMessage } from '../cloud/sink.ts';
import {
  ArchiveIntegrityError,
  createS3Client,
  listKeys,
  listManifests,
  readArchiveParts,
} from '../cloud/archive/s3.ts';
import { loadConsumerConfig, startConsumer } from '../cloud/consumer.ts';
import { silentLogger } from '../lib/log.ts';
import { sleep } from '../lib/timers.ts';
import { Header } from '../schemas/headers.ts';
import { killServer, type RunningServer } from '../stack/server-process.ts';
import { overlapFromParts, readArchive } from './support/archive.ts';
import { startSwitchyard, type SwitchyardProcess } from './support/process.ts';
import { s3rverSettings, TestServers, waitFor } from './support/servers.ts';

const BUCKET = 'switchyard';
const HOURS = ['2026-11-26T03:15:00.000Z', '2026-11-26T04:45:00.000Z'];

describe('archive layout', () => {
  const message = (seq: number, site: string, receivedAt: string): SinkMessage => ({
    seq,
    subject: `bsu.${site}.u1.telemetry`,
    site,
    device: 'u1',
    kind: 'telemetry',
    storedAtMs: Date.parse('2026-11-26T05:00:00Z') + seq,
    headers: { [Header.receivedAt]: receivedAt },
    payload: new TextEncoder().encode(`{"seq":${seq}}`),
    deliveryCount: 1,
  });
  const options = { prefix: 'raw/', stream: 'BSU', consumer: 'archive' };

  const batch = [1, 2, 3, 4, 5, 6].map((seq) =>
    message(seq, seq % 2 ? 'a' : 'b', HOURS[seq % 3 === 0 ? 1 : 0]!),
  );
  // Redelivered in another order, one message twice.
  const redelivered = [...batch].reverse().concat(batch[0]!);

  test('batch layout: one object per hour, each site a gzip member at the offset its part gives', async () => {
    const first = await buildArchiveObjects(batch, options);
    const again = await buildArchiveObjects(redelivered, options);
    const view = (objects: typeof first) => objects.map((o) => [o.key, o.body.toString('hex')]).sort();
    assert.deepEqual(view(again), view(first), 'the same keys and the same bytes');
    assert.deepEqual(first.map((o) => o.key.replace(/-[0-9a-f]{16}\./, '-<sha>.')).sort(), [
      'raw/hour=2026-11-26T03/00000000000000000001-00000000000000000005-<sha>.ndjson.gz',
      'raw/hour=2026-11-26T04/00000000000000000003-00000000000000000006-<sha>.ndjson.gz',
    ]);
    const h03 = first.find((o) => o.manifest.hour === '2026-11-26T03')!;
    assert.equal(h03.manifest.version, 2);
    assert.ok(h03.key.includes(`-${h03.manifest.sha256.slice(0, 16)}.`));
    assert.deepEqual(parseArchiveKey(h03.manifestKey), {
      layout: 'batch',
      hour: '2026-11-26T03',
      firstSeq: 1,
      lastSeq: 5,
    });
    const parts = partsOf(h03.manifest);
    assert.deepEqual(
      parts.map((p) => [p.site, p.seqRanges, p.count]),
      [
        [
          'a',
          [
            [1, 1],
            [5, 5],
          ],
          2,
        ],
        [
          'b',
          [
            [2, 2],
            [4, 4],
          ],
          2,
        ],
      ],
    );
    // As the manifest lists them: sequence runs relative to its first sequence, in text.
    assert.deepEqual(h03.manifest.version === 2 && h03.manifest.parts.map((p) => [p.site, p.runs]), [
      ['a', '0,4'],
      ['b', '1,3'],
    ]);
    assert.equal(h03.manifest.byKind.telemetry, 4);
    assert.equal(parts[0]!.offset, 0);
    assert.equal(parts[1]!.offset, parts[0]!.bytes);
    assert.equal(parts[1]!.offset + parts[1]!.bytes, h03.body.byteLength);
    for (const p of parts) {
      const member = h03.body.subarray(p.offset, p.offset + p.bytes);
      assert.equal(sha256Hex(member), p.sha256);
      assert.deepEqual(
        (await parseArchiveObject(member)).map((r) => r.seq),
        p.seqRanges.map(([from]) => from),
      );
    }
    assert.deepEqual(
      (await parseArchiveObject(h03.body)).map((r) => r.seq),
      [1, 5, 2, 4],
      'the object is one gzip stream of its members',
    );
    // Another object of the same range (a redelivery without message 2) gets a key of its own.
    const without2 = await buildArchiveObjects(
      batch.filter((m) => m.seq !== 2),
      options,
    );
    const other03 = without2.find((o) => o.manifest.hour === '2026-11-26T03')!;
    assert.deepEqual([other03.manifest.firstSeq, other03.manifest.lastSeq], [1, 5]);
    assert.notEqual(other03.key, h03.key);
  });

  test('sequence runs round-trip through their text relative to a base', () => {
    const runs: [number, number][] = [
      [1_000_000_007, 1_000_000_007],
      [1_000_000_010, 1_000_000_013],
      [1_000_000_020, 1_000_000_020],
    ];
    const text = encodeRuns(runs, 1_000_000_007);
    assert.equal(text, '0,3-6,13');
    assert.deepEqual(decodeRuns(text, 1_000_000_007), runs);
    for (const bad of ['', '1,,2', '3-', 'a', '1-2-3'])
      assert.throws(() => decodeRuns(bad, 0), RangeError, JSON.stringify(bad));
  });

  test('site layout: one object per site and hour, as archives before the batch layout hold', async () => {
    const siteOptions = { ...options, layout: 'site' as const };
    const first = await buildArchiveObjects(batch, siteOptions);
    const again = await buildArchiveObjects(redelivered, siteOptions);
    const view = (objects: typeof first) => objects.map((o) => [o.key, o.body.toString('hex')]).sort();
    assert.deepEqual(view(again), view(first));
    assert.deepEqual(first.map((o) => o.key).sort(), [
      'raw/site=a/hour=2026-11-26T03/00000000000000000001-00000000000000000005.ndjson.gz',
      'raw/site=a/hour=2026-11-26T04/00000000000000000003-00000000000000000003.ndjson.gz',
      'raw/site=b/hour=2026-11-26T03/00000000000000000002-00000000000000000004.ndjson.gz',
      'raw/site=b/hour=2026-11-26T04/00000000000000000006-00000000000000000006.ndjson.gz',
    ]);
    const a03 = first.find((o) => o.key.includes('site=a/hour=2026-11-26T03'))!;
    assert.equal(a03.manifest.version, 1);
    assert.deepEqual(partsOf(a03.manifest), [
      {
        site: 'a',
        offset: 0,
        bytes: a03.body.byteLength,
        sha256: sha256Hex(a03.body),
        count: 2,
        firstSeq: 1,
        lastSeq: 5,
        seqRanges: [
          [1, 1],
          [5, 5],
        ],
      },
    ]);
    assert.deepEqual(a03.manifest.byKind, { telemetry: 2 });
    assert.equal(a03.manifest.firstReceivedAt, HOURS[0]);
    assert.deepEqual(
      (await parseArchiveObject(a03.body)).map((r) => r.seq),
      [1, 5],
    );
  });
});

describe('archive to S3', () => {
  const servers = new TestServers('archive');
  let nats: RunningServer;
  let s3server: RunningServer;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  let s3: S3Client;
  /** Payload bytes by stream sequence, as published. */
  let sent: Map<number, Uint8Array>;

  before(async () => {
    nats = await servers.nats();
    s3server = await servers.s3([BUCKET]);
    nc = await connect({ servers: nats.url });
    jsm = await jetstreamManager(nc);
    s3 = createS3Client(s3rverSettings(s3server));
  });

  beforeEach(async () => {
    // A fresh stream per test: sequences start at 1 and no durable carries over.
    await jsm.streams.delete('BSU').catch(() => undefined);
    await jsm.streams.add({ name: 'BSU', subjects: ['bsu.>'] });
    sent = new Map();
  });

  after(async () => {
    s3?.destroy();
    await nc?.close();
    await servers.stopAll();
  });

  /** Publishes `count` messages round-robin over sites s1..s3, two receive hours and three kinds. */
  async function publish(count: number, from = 0): Promise<void> {
    const js = jetstream(nc);
    const kinds = ['telemetry', 'status', 'invalid'];
    const pending = [];
    for (let i = from; i < from + count; i++) {
      const site = `s${(i % 3) + 1}`;
      const h = headers();
      h.set(Header.site, site);
      h.set(Header.receivedAt, HOURS[Math.floor(i / 7) % 2]!);
      const payload = new TextEncoder().encode(
        JSON.stringify({ ts: 1_700_000_000_000 + i, seq: i, SoC: 50 }),
      );
      pending.push(
        js
          .publish(`bsu.${site}.unit-${i % 5}.${kinds[i % 3]}`, payload, { headers: h })
          .then((ack) => sent.set(ack.seq, payload)),
      );
      if (pending.length >= 200) await Promise.all(pending.splice(0));
    }
    await Promise.all(pending);
  }

  function config(extra: Record<string, unknown>) {
    return loadConsumerConfig(archiveConsumer, {
      env: {},
      flags: {
        natsUrl: nats.url,
        s3Endpoint: s3server.url,
        s3AccessKeyId: 'S3RVER',
        s3SecretAccessKey: 'S3RVER',
        batchSize: '400',
        fetchExpiresMs: '1000',
        backoffMs: '200,400,800',
        lagRefreshMs: '200',
        ...extra,
      },
    });
  }

  async function startArchive(extra: Record<string, unknown>) {
    const controller = new AbortController();
    const run = await startConsumer(archiveConsumer, config(extra), {
      log: silentLogger,
      registry: new Registry(),
      signal: controller.signal,
    });
    return {
      run,
      stop: async () => {
        controller.abort();
        await run.done;
      },
    };
  }

  const settled = async (durable: string, total: number) => {
    const info = await jsm.consumers.info('BSU', durable).catch(() => undefined);
    return info !== undefined && info.ack_floor.stream_seq === total && info.num_ack_pending === 0;
  };

  /** Everything under `prefix`, read back through the manifests (each verified). */
  async function archived(prefix: string, options: { skipTorn?: boolean } = {}) {
    return readArchive(s3, BUCKET, prefix, options);
  }

  /** Asserts sequences 1..total are all archived (no gap) and returns the ones archived twice. */
  function assertNoGap(counts: Map<number, number>, total: number): number[] {
    const missing = [];
    for (let seq = 1; seq <= total; seq++) if (!counts.has(seq)) missing.push(seq);
    assert.deepEqual(missing, [], `missing sequences: ${missing.slice(0, 20).join(', ')}`);
    assert.equal(Math.max(...counts.keys()), total);
    return [...counts].filter(([, n]) => n > 1).map(([seq]) => seq);
  }

  test('archives every message exactly once in verified objects per batch and hour, bytes intact', async (t) => {
    await publish(600);
    const js = jetstream(nc);
    // Not UTF-8, and UTF-8 with a byte-order mark: both must come back byte for byte.
    const odd = [
      new Uint8Array([0xff, 0xfe, 0x00, 0x41, 0xc3]),
      new Uint8Array([0xef, 0xbb, 0xbf, 0x7b, 0x7d]),
    ];
    for (const payload of odd) {
      const h = headers();
      h.set(Header.receivedAt, HOURS[0]!);
      h.set(Header.invalidReason, 'payload is not valid UTF-8');
      sent.set((await js.publish('bsu.s1.unit-0.invalid', payload, { headers: h })).seq, payload);
    }
    const total = 602;
    const started = Date.now();
    const archive = await startArchive({ durable: 'arch-once', s3Prefix: 'once/' });
    await waitFor('all acked', () => settled('arch-once', total), 60_000, 200);
    t.diagnostic(`${total} messages archived in ${Date.now() - started} ms`);
    await archive.stop();

    const { manifests, parts, records, counts } = await archived('once/');
    assert.equal(records.length, total, 'no record twice');
    assert.deepEqual(assertNoGap(counts, total), []);
    for (const r of records) {
      assert.deepEqual(
        Buffer.from(recordPayload(r)),
        Buffer.from(sent.get(r.seq)!),
        `payload of seq ${r.seq}`,
      );
      assert.match(r.subject, /^bsu\.s[123]\.unit-\d\.(telemetry|status|invalid)$/);
      assert.ok(r.headers[Header.receivedAt]);
    }
    const base64 = records.filter((r) => r.payloadEncoding === 'base64');
    assert.equal(base64.length, 1, 'only the non-UTF-8 payload is base64');

    const keys = await listKeys(s3, BUCKET, 'once/');
    assert.equal(keys.length, manifests.length * 2, 'one manifest per data object');
    const hours = new Set<string>();
    for (const m of manifests) {
      assert.equal(m.version, 2);
      assert.match(m.object, /^once\/hour=2026-11-26T0[34]\/\d{20}-\d{20}-[0-9a-f]{16}\.ndjson\.gz$/);
      assert.deepEqual(parseArchiveKey(m.object), {
        layout: 'batch',
        hour: m.hour,
        firstSeq: m.firstSeq,
        lastSeq: m.lastSeq,
      });
      assert.equal(m.consumer, 'arch-once');
      hours.add(m.hour);
    }
    // One object per batch and hour, every site in it, in site order.
    for (const m of manifests)
      assert.deepEqual(
        partsOf(m).map((p) => p.site),
        ['s1', 's2', 's3'],
      );
    for (const p of parts) {
      assert.equal(p.seqRanges[0]![0], p.firstSeq);
      assert.equal(p.seqRanges.at(-1)![1], p.lastSeq);
    }
    for (const m of manifests) {
      assert.equal(
        Object.values(m.byKind).reduce((a, b) => a + b, 0),
        m.count,
      );
      assert.ok(m.firstReceivedAt.startsWith(m.hour) && m.lastReceivedAt.startsWith(m.hour));
    }
    assert.deepEqual([...new Set(parts.map((p) => p.site))].sort(), ['s1', 's2', 's3']);
    assert.deepEqual([...hours].sort(), ['2026-11-26T03', '2026-11-26T04']);
    const meta = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: manifests[0]!.object }));
    assert.equal(meta.Metadata?.['switchyard-sha256'], manifests[0]!.sha256);
    await meta.Body?.transformToByteArray();
  });

  test("a site's part is read alone with a ranged GET and checked against its own sha256", async () => {
    const batch: SinkMessage[] = Array.from({ length: 200 }, (_, i) => {
      const site = `r${i % 10}`;
      return {
        seq: i + 1,
        subject: `bsu.${site}.u${i % 4}.telemetry`,
        site,
        device: `u${i % 4}`,
        kind: 'telemetry',
        storedAtMs: Date.parse(HOURS[0]!) + i,
        headers: { [Header.receivedAt]: HOURS[0]! },
        payload: new TextEncoder().encode(JSON.stringify({ ts: i, SoC: i % 100 })),
        deliveryCount: 1,
      };
    });
    const [object] = await buildArchiveObjects(batch, { prefix: 'ranged/', stream: 'BSU', consumer: 'a' });
    const put = (key: string, body: Uint8Array | string) =>
      s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: body }));
    // One byte of site r7's member flipped: the object as a whole no longer matches its manifest.
    const r7 = partsOf(object!.manifest).find((p) => p.site === 'r7')!;
    const damaged = Buffer.from(object!.body);
    damaged[r7.offset + Math.floor(r7.bytes / 2)]! ^= 0xff;
    await put(object!.key, damaged);
    await put(object!.manifestKey, JSON.stringify(object!.manifest));

    const r2 = await readArchiveParts(s3, BUCKET, object!.manifestKey, (p) => p.site === 'r2');
    assert.deepEqual(
      r2.parts.map((p) => p.part.site),
      ['r2'],
    );
    assert.deepEqual(
      r2.parts[0]!.records.map((r) => r.seq),
      batch.filter((m) => m.site === 'r2').map((m) => m.seq),
      'r2 read from its own bytes, which are intact',
    );
    await assert.rejects(
      readArchiveParts(s3, BUCKET, object!.manifestKey, (p) => p.site === 'r7'),
      /site r7\) do not match the sha256 of its manifest/,
    );
    await assert.rejects(
      readArchiveParts(s3, BUCKET, object!.manifestKey),
      /bytes do not match the sha256 of its manifest/,
    );
    // Cut short before site r9's member (a rewrite killed mid-PUT, which s3rver keeps): an
    // integrity error like any other, not a failure of the reader.
    const r9 = partsOf(object!.manifest).find((p) => p.site === 'r9')!;
    await put(object!.key, object!.body.subarray(0, r9.offset));
    await assert.rejects(
      readArchiveParts(s3, BUCKET, object!.manifestKey, (p) => p.site === 'r9'),
      (err: Error) =>
        err instanceof ArchiveIntegrityError && /shorter than its manifest says/.test(err.message),
    );
  });

  test('waits while S3 is down under load, then archives everything without a gap', async (t) => {
    const total = 2_000;
    const archive = await startArchive({ durable: 'arch-outage', s3Prefix: 'outage/', batchSize: '200' });
    t.after(() => archive.stop());
    const load = (async () => {
      for (let i = 0; i < total; i += 100) {
        await publish(100, i);
        await sleep(40);
      }
    })();
    await waitFor(
      'the first objects',
      async () => (await listManifests(s3, BUCKET, 'outage/')).length > 0,
      60_000,
    );
    await killServer(s3server);
    await waitFor('readiness to drop', async () => !(await archive.run.readiness()).ready, 30_000);
    await sleep(2_500);
    s3server = await servers.restart(s3server);
    await load;
    await waitFor('all acked', () => settled('arch-outage', total), 90_000, 250);
    assert.equal((await archive.run.readiness()).ready, true);
    await archive.stop();

    const { counts, manifests, parts } = await archived('outage/');
    const twice = assertNoGap(counts, total);
    assert.deepEqual(twice.sort(), overlapFromParts(parts).sort(), 'every overlap shows in the manifests');
    t.diagnostic(`${manifests.length} objects, ${twice.length} sequences archived twice after the outage`);
    const dlq = await jsm.streams.info('BSU_DLQ');
    assert.equal(dlq.state.messages, 0, 'nothing dead-lettered');
  });

  test('a manifest whose PUT was cut short is an integrity error, skipped like any torn object', async () => {
    // What a SIGKILL mid-PUT leaves in s3rver: the request's head and part of its body, then a
    // closed socket. s3rver stores the bytes that arrived (S3 would refuse the PUT).
    const key = 'torn/raw/site=s1/hour=2026-11-26T10/1-2.manifest.json';
    const { hostname, port } = new URL(s3server.url);
    await new Promise<void>((resolve, reject) => {
      const socket = createConnection(Number(port), hostname, () => {
        socket.write(
          `PUT /${BUCKET}/${key} HTTP/1.1\r\nHost: ${hostname}:${port}\r\nContent-Length: 400\r\n\r\n{"object":`,
          () => setTimeout(() => socket.destroy(), 200),
        );
      });
      socket.on('close', () => resolve());
      socket.on('error', reject);
    });
    await waitFor(
      'the cut PUT stored',
      async () => (await listManifests(s3, BUCKET, 'torn/')).includes(key),
      10_000,
      50,
    );

    await assert.rejects(readArchive(s3, BUCKET, 'torn/'), (err: Error) => {
      assert.ok(err instanceof ArchiveIntegrityError, `${err.name}: ${err.message}`);
      assert.match(err.message, /manifest is not valid JSON/);
      return true;
    });
    const { torn, records } = await readArchive(s3, BUCKET, 'torn/', { skipTorn: true });
    assert.deepEqual(
      torn.map((o) => o.manifestKey),
      [key],
    );
    assert.equal(records.length, 0);
  });

  test('a consumer killed mid-batch and restarted leaves no gap; any overlap shows in the manifests', async (t) => {
    const total = 3_000;
    await publish(total);
    const args = [
      'archive',
      '--nats-url',
      nats.url,
      '--s3-endpoint',
      s3server.url,
      '--s3-prefix',
      'crash/',
      '--batch-size',
      '500',
      '--fetch-expires-ms',
      '1000',
      '--ack-wait-ms',
      '3000',
      '--ops-port',
      '0',
      '--durable',
      'arch-crash',
    ];
    const env = { SWITCHYARD_S3_ACCESS_KEY_ID: 'S3RVER', SWITCHYARD_S3_SECRET_ACCESS_KEY: 'S3RVER' };
    const started: SwitchyardProcess[] = [];
    // A failed wait must not leave an archive running past the test.
    t.after(() => Promise.all(started.map((p) => p.stop('SIGKILL'))));
    const startChild = (): SwitchyardProcess => {
      const p = startSwitchyard(args, env);
      started.push(p);
      return p;
    };
    const first = startChild();
    await waitFor(
      'the first object',
      async () => (await listManifests(s3, BUCKET, 'crash/')).length > 0,
      60_000,
      20,
    );
    await first.stop('SIGKILL');
    const info = await jsm.consumers.info('BSU', 'arch-crash');
    assert.ok(info.ack_floor.stream_seq < total, 'killed before the end');

    const second = startChild();
    await waitFor('all acked', () => settled('arch-crash', total), 60_000, 250);
    assert.equal(await second.stop('SIGTERM'), 0, `exits 0 on SIGTERM; it printed:\n${second.output()}`);

    // The kill may cut a PUT short, which s3rver (unlike S3) keeps: such an object fails
    // verification and a backfill skips it. Its messages were never acked, so they are in later
    // objects, which the no-gap check below proves.
    const { counts, parts, torn } = await archived('crash/', { skipTorn: true });
    const twice = assertNoGap(counts, total);
    t.diagnostic(
      `killed at ack floor ${info.ack_floor.stream_seq}; ${twice.length} sequences archived twice; ` +
        `${torn.length} object(s) cut short by the kill: ${torn.map((o) => o.reason).join('; ')}`,
    );
    assert.deepEqual(twice.sort(), overlapFromParts(parts).sort(), 'every overlap shows in the manifests');
  });
});
