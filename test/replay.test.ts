/**
 * `switchyard replay` against real servers: a hub `BSU` on nats-server, the archive in s3rver, and
 * InfluxDB 1.x as the engine the range is replayed into (it counts points exactly). Replay runs as
 * the operator runs it, a child process reading its settings from an env file.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect, headers, type NatsConnection } from '@nats-io/transport-node';
import { archiveConsumer } from '../cloud/archive/consumer.ts';
import { ingestConsumer } from '../cloud/ingest/consumer.ts';
import { Header, subjectFor } from '../schemas/index.ts';
import type { RunningServer } from '../stack/server-process.ts';
import { s3Env, startTestConsumer, writeCloudEnv } from './support/consumers.ts';
import { createDatabase, telemetryCount } from './support/influx1.ts';
import { runReport, runSwitchyard } from './support/process.ts';
import { devicePayload } from './support/sink-conformance.ts';
import { TestServers, waitFor } from './support/servers.ts';

const TOTAL = 60;

describe('switchyard replay', () => {
  const servers = new TestServers('replay');
  let nats: RunningServer;
  let influx: RunningServer;
  let s3: RunningServer;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  let dir: string;

  /** An env file with the settings of the cloud commands, pointing InfluxDB 1.x at a new database `db`. */
  async function envFile(db: string): Promise<string> {
    await createDatabase(influx.url, db);
    return writeCloudEnv(join(dir, `${db}.env`), {
      natsUrl: nats.url,
      ...s3Env(s3),
      influx1Url: influx.url,
      influx1Database: db,
      sink: 'influx1',
    });
  }

  const replay = (args: string[]) => runReport(['replay', ...args]);
  /** `replay --to ingest --sink influx1 <args> --env-file <env>`. */
  const replayIngest = (env: string, ...args: string[]) =>
    replay(['--to', 'ingest', '--sink', 'influx1', ...args, '--env-file', env]);
  /** `replay --consumer ingest-influx1 --from-seq <seq> --yes --env-file <env>`. */
  const moveIngest = (env: string, fromSeq: number) =>
    replay(['--consumer', 'ingest-influx1', '--from-seq', String(fromSeq), '--yes', '--env-file', env]);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'switchyard-replay-'));
    [nats, influx, s3] = await Promise.all([servers.nats(), servers.influxdb(), servers.s3()]);
    nc = await connect({ servers: nats.url });
    jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: 'BSU', subjects: ['bsu.>'] });
    const js = jetstream(nc);
    const t0 = Date.now() - 3_600_000;
    for (let i = 0; i < TOTAL; i++) {
      const h = headers();
      h.set(Header.receivedAt, new Date(t0 + i * 1000).toISOString());
      await js.publish(
        subjectFor('north', `bsu-${i % 3}`, 'telemetry'),
        JSON.stringify(devicePayload('telemetry', i, t0 + i * 1000)),
        {
          headers: h,
        },
      );
    }
  });

  after(async () => {
    await nc?.close();
    await servers.stopAll();
  });

  test('a replayed range lands exactly once in a fresh engine, however often it runs', async () => {
    const env = await envFile('fresh');
    const first = await replayIngest(env, '--from-seq', '11', '--to-seq', '40');
    assert.equal(first.code, 0, first.output);
    assert.equal(first.report.fromStream, 30);
    assert.equal(first.report.written, 30);
    assert.equal(await telemetryCount(influx.url, 'fresh'), 30);
    const again = await replayIngest(env, '--from-seq', '1');
    assert.equal(again.code, 0, again.output);
    assert.equal(again.report.written, TOTAL);
    assert.equal(await telemetryCount(influx.url, 'fresh'), TOTAL);
  });

  test('a dry run reads the range and writes nothing', async () => {
    const r = await replayIngest(await envFile('dry'), '--from-seq', '1', '--dry-run');
    assert.equal(r.code, 0, r.output);
    assert.equal(r.report.fromStream, TOTAL);
    assert.equal(r.report.written, 0);
    assert.equal(await telemetryCount(influx.url, 'dry'), 0);
  });

  test('a range older than the stream comes from the archive, with no gap or overlap at the seam', async () => {
    // Archive everything, then let the stream keep only its newest 25 messages.
    const archive = await startTestConsumer(archiveConsumer, {
      natsUrl: nats.url,
      ...s3Env(s3),
      batchSize: '20',
      fetchExpiresMs: '1000',
    });
    await waitFor(
      'everything archived',
      async () => (await jsm.consumers.info('BSU', 'archive')).ack_floor.stream_seq === TOTAL,
    );
    await archive.stop();
    const stream = await jsm.streams.info('BSU');
    await jsm.streams.update('BSU', { ...stream.config, max_msgs: 25 });
    assert.equal((await jsm.streams.info('BSU')).state.first_seq, TOTAL - 24);

    const r = await replayIngest(await envFile('seam'), '--from-seq', '5');
    assert.equal(r.code, 0, r.output);
    assert.deepEqual(r.report.plan.archive, { fromSeq: 5, toSeq: TOTAL - 25 });
    assert.equal(r.report.fromArchive, TOTAL - 25 - 4, 'sequences 5..35 from the archive');
    assert.equal(r.report.fromStream, 25, 'sequences 36..60 from the stream');
    assert.equal(r.report.missingFromArchive, 0);
    assert.equal(r.report.written, TOTAL - 4);
    assert.equal(await telemetryCount(influx.url, 'seam'), TOTAL - 4);
  });

  test('moving a durable back re-processes exactly from there; refused while its consumer runs', async () => {
    const env = await envFile('moved');
    const startIngest = () =>
      startTestConsumer(ingestConsumer, {
        natsUrl: nats.url,
        sink: 'influx1',
        influx1Url: influx.url,
        influx1Database: 'moved',
        fetchExpiresMs: '1000',
      });
    const first = (await jsm.streams.info('BSU')).state.first_seq;
    const ingest = await startIngest();
    await waitFor(
      'ingest caught up',
      async () => (await jsm.consumers.info('BSU', 'ingest-influx1')).ack_floor.stream_seq === TOTAL,
    );
    const held = await telemetryCount(influx.url, 'moved');
    assert.equal(held, TOTAL - first + 1);

    const refused = await moveIngest(env, first + 10);
    assert.equal(refused.code, 2, refused.output);
    assert.match(refused.output, /instances attached/);
    assert.equal(
      (await jsm.consumers.info('BSU', 'ingest-influx1')).num_pending,
      0,
      'the refused move changed nothing',
    );

    await ingest.stop();
    const moved = await moveIngest(env, first + 10);
    assert.equal(moved.code, 0, moved.output);
    assert.equal(moved.report.plan.toProcess, TOTAL - first - 9);
    assert.equal((await jsm.consumers.info('BSU', 'ingest-influx1')).num_pending, TOTAL - first - 9);

    const again = await startIngest();
    await waitFor(
      're-processed',
      async () => (await jsm.consumers.info('BSU', 'ingest-influx1')).ack_floor.stream_seq === TOTAL,
    );
    assert.equal(await again.processed(), TOTAL - first - 9, 'exactly the messages from the new start');
    await again.stop();
    assert.equal(await telemetryCount(influx.url, 'moved'), held, 'no duplicates');
  });

  test('bad usage exits 2 with one line saying why', async () => {
    const r = await runSwitchyard(['replay', '--to', 'ingest']);
    assert.equal(r.code, 2);
    assert.match(r.output, /--from-seq/);
    const both = await runSwitchyard([
      'replay',
      '--to',
      'ingest',
      '--consumer',
      'archive',
      '--from-seq',
      '1',
    ]);
    assert.equal(both.code, 2);
  });
});
