/**
 * `switchyard backfill` against real servers: readings of two sites over three past hours go
 * through the real archive consumer into s3rver, then backfill loads them into InfluxDB 1.x, run as
 * the operator runs it (a child process with an env file). InfluxDB counts points exactly.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DeleteObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, headers, type NatsConnection } from '@nats-io/transport-node';
import { archiveConsumer } from '../cloud/archive/consumer.ts';
import { hourOf, parseArchiveKey } from '../cloud/archive/layout.ts';
import { createS3Client, listManifests, readArchiveObject } from '../cloud/archive/s3.ts';
import { Header, subjectFor } from '../schemas/index.ts';
import type { RunningServer } from '../stack/server-process.ts';
import { s3Env, startTestConsumer, writeCloudEnv } from './support/consumers.ts';
import { createDatabase, influxCount, telemetryCount } from './support/influx1.ts';
import { runReport, startSwitchyard } from './support/process.ts';
import { devicePayload } from './support/sink-conformance.ts';
import { s3rverSettings, TestServers, waitFor } from './support/servers.ts';

const SITES = ['north', 'south'];
const PER_SITE_HOUR = 40;
const HOUR_MS = 3_600_000;

describe('switchyard backfill', () => {
  const servers = new TestServers('backfill');
  let nats: RunningServer;
  let influx: RunningServer;
  let s3server: RunningServer;
  let s3: S3Client;
  let nc: NatsConnection;
  let dir: string;
  /** Start of the first of the three hours. */
  let t0: number;
  const total = SITES.length * 3 * PER_SITE_HOUR;

  /** An env file with the settings of the cloud commands, pointing InfluxDB 1.x at a new database `db`. */
  async function envFile(db: string): Promise<string> {
    await createDatabase(influx.url, db);
    return writeCloudEnv(join(dir, `${db}.env`), {
      natsUrl: nats.url,
      ...s3Env(s3server),
      influx1Url: influx.url,
      influx1Database: db,
      sink: 'influx1',
    });
  }

  const range = (fromHour: number, toHour: number) => [
    '--since',
    new Date(t0 + fromHour * HOUR_MS).toISOString(),
    '--until',
    new Date(t0 + toHour * HOUR_MS).toISOString(),
  ];

  const backfill = (args: string[]) =>
    runReport(['backfill', '--to', 'ingest', '--sink', 'influx1', ...args]);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'switchyard-backfill-'));
    [nats, influx, s3server] = await Promise.all([servers.nats(), servers.influxdb(), servers.s3()]);
    s3 = createS3Client(s3rverSettings(s3server));
    nc = await connect({ servers: nats.url });
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: 'BSU', subjects: ['bsu.>'] });
    const js = jetstream(nc);
    t0 = Math.floor((Date.now() - 5 * HOUR_MS) / HOUR_MS) * HOUR_MS;
    const publish = async (fromMinute: number, toMinute: number): Promise<void> => {
      for (let minute = fromMinute; minute < toMinute; minute++)
        for (const site of SITES) {
          const hour = Math.floor(minute / PER_SITE_HOUR);
          const i = minute % PER_SITE_HOUR;
          const at = t0 + hour * HOUR_MS + i * 60_000;
          const h = headers();
          h.set(Header.receivedAt, new Date(at).toISOString());
          await js.publish(
            subjectFor(site, `bsu-${i % 4}`, 'telemetry'),
            JSON.stringify(devicePayload('telemetry', i, at)),
            {
              headers: h,
            },
          );
        }
    };
    const archive = async (flags: Record<string, string>, upTo: number) => {
      const consumer = await startTestConsumer(archiveConsumer, {
        natsUrl: nats.url,
        ...s3Env(s3server),
        batchSize: '30',
        fetchExpiresMs: '1000',
        ...flags,
      });
      await waitFor(
        `${flags.durable} archived up to ${upTo}`,
        async () => (await jsm.consumers.info('BSU', flags.durable!)).ack_floor.stream_seq === upTo,
      );
      await consumer.stop();
    };
    // The archive as a fleet upgrades it: the first hour and a half in the site layout of older
    // versions, the rest in the batch layout, starting ten messages back (a redelivery), so that the
    // second hour holds both layouts and overlapping objects.
    const switchAt = 1.5 * PER_SITE_HOUR * SITES.length;
    await publish(0, 1.5 * PER_SITE_HOUR);
    await archive({ durable: 'archive-site', s3Layout: 'site' }, switchAt);
    await publish(1.5 * PER_SITE_HOUR, 3 * PER_SITE_HOUR);
    await jsm.consumers.add('BSU', {
      durable_name: 'archive',
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: switchAt - 9,
      // The archive's own filter: nats-server 2.9 delivers nothing to a durable whose filter an
      // update added.
      filter_subject: 'bsu.>',
    });
    await archive({ durable: 'archive' }, total);
    const layouts = (await listManifests(s3, 'switchyard', 'raw/')).map((k) => parseArchiveKey(k)!);
    assert.deepEqual(
      [...new Set(layouts.map((k) => `${k.layout} ${k.hour.slice(-2)}`))].sort(),
      [0, 1, 2]
        .map((h) => `batch ${hourOf(t0 + h * HOUR_MS).slice(-2)}`)
        .slice(1)
        .concat([0, 1].map((h) => `site ${hourOf(t0 + h * HOUR_MS).slice(-2)}`))
        .sort(),
    );
  });

  after(async () => {
    await nc?.close();
    await servers.stopAll();
  });

  test('loads exactly the records of the time range, each once across layouts; a second run finds everything done', async () => {
    const env = await envFile('window');
    const checkpoint = join(dir, 'window.json');
    const first = await backfill([...range(1, 3), '--env-file', env, '--checkpoint', checkpoint]);
    assert.equal(first.code, 0, first.output);
    assert.equal(first.report.written, SITES.length * 2 * PER_SITE_HOUR);
    assert.equal(first.report.records, SITES.length * 2 * PER_SITE_HOUR, 'the overlap read once');
    assert.equal(await telemetryCount(influx.url, 'window'), SITES.length * 2 * PER_SITE_HOUR);
    const again = await backfill([...range(1, 3), '--env-file', env, '--checkpoint', checkpoint]);
    assert.equal(again.code, 0, again.output);
    assert.equal(again.report.resumed, first.report.groups);
    assert.equal(again.report.written, 0);
  });

  test('one site: its records alone, from its parts of the batch objects and its own site objects', async () => {
    const r = await backfill([
      ...range(0, 3),
      '--site',
      'south',
      '--env-file',
      await envFile('south'),
      '--checkpoint',
      join(dir, 'south.json'),
    ]);
    assert.equal(r.code, 0, r.output);
    assert.equal(r.report.records, 3 * PER_SITE_HOUR);
    assert.equal(await telemetryCount(influx.url, 'south'), 3 * PER_SITE_HOUR);
    assert.equal(
      await influxCount(influx.url, 'south', `SELECT count(SoC) FROM telemetry WHERE "site" = 'south'`),
      3 * PER_SITE_HOUR,
    );
  });

  test('a backfill killed half way resumes where it stopped and ends with exact counts', async () => {
    const env = await envFile('killed');
    const checkpoint = join(dir, 'killed.json');
    const args = ['backfill', '--to', 'ingest', '--sink', 'influx1', ...range(0, 3), '--batch-size', '1'];
    const p = startSwitchyard([...args, '--env-file', env, '--checkpoint', checkpoint, '--json']);
    await waitFor(
      'the first group checkpointed',
      () =>
        existsSync(checkpoint) &&
        (JSON.parse(readFileSync(checkpoint, 'utf8')) as { done: string[] }).done.length >= 1,
      60_000,
      5,
    );
    p.child.kill('SIGKILL');
    await p.exited;
    const done = (JSON.parse(readFileSync(checkpoint, 'utf8')) as { done: string[] }).done.length;

    const resumed = await backfill([...range(0, 3), '--env-file', env, '--checkpoint', checkpoint]);
    assert.equal(resumed.code, 0, resumed.output);
    assert.ok(
      done < resumed.report.groups,
      `killed before the end (${done} of ${resumed.report.groups} groups done)`,
    );
    assert.ok(resumed.report.resumed >= done, `resumed ${resumed.report.resumed}, checkpoint had ${done}`);
    assert.ok(
      resumed.report.written > 0 && resumed.report.written < total,
      'the finished groups not read again',
    );
    assert.equal(await telemetryCount(influx.url, 'killed'), total);
  });

  test('a tampered and a deleted object are reported by key, nothing of them is written', async () => {
    // A site object of the first hour, and a batch object of the last (neither overlapped).
    const keys = await listManifests(s3, 'switchyard', 'raw/');
    const lastHour = hourOf(t0 + 2 * HOUR_MS);
    const tampered = keys.find((k) => k.startsWith('raw/site=south/'))!;
    const deleted = keys.filter((k) => k.startsWith(`raw/hour=${lastHour}/`)).at(-1)!;
    const lost = [];
    for (const key of [tampered, deleted]) lost.push(await readArchiveObject(s3, 'switchyard', key));
    await s3.send(
      new PutObjectCommand({
        Bucket: 'switchyard',
        Key: lost[0]!.manifest.object,
        Body: Buffer.from('not what was archived'),
      }),
    );
    await s3.send(new DeleteObjectCommand({ Bucket: 'switchyard', Key: lost[1]!.manifest.object }));

    const r = await backfill([
      ...range(0, 3),
      '--env-file',
      await envFile('damaged'),
      '--checkpoint',
      join(dir, 'damaged.json'),
    ]);
    assert.equal(r.code, 1, r.output);
    const reasons = new Map(
      (r.report.skippedObjects as { key: string; reason: string }[]).map((o) => [o.key, o.reason]),
    );
    assert.equal(reasons.size, 2);
    assert.match(reasons.get(tampered)!, /sha256/);
    assert.match(reasons.get(deleted)!, /missing/);
    const lostRecords = lost[0]!.records.length + lost[1]!.records.length;
    assert.ok(lost[1]!.manifest.version === 2 && lost[0]!.manifest.version === 1);
    assert.equal(r.report.written, total - lostRecords);
    assert.equal(await telemetryCount(influx.url, 'damaged'), total - lostRecords);
  });
});
