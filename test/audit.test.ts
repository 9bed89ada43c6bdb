/**
 * `switchyard audit` against real servers: readings of two sites over three past hours are published
 * into the hub stream with their receive times, the real archive and ingest consumers (InfluxDB 1.x
 * and VictoriaMetrics) take them in, and the audit runs as operators run it, a child process with an
 * env file. Then data is taken away where it lives (an archive object, an engine's points, the
 * stream's own history) and the audit must name exactly that, and nothing else.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect, headers, type NatsConnection } from '@nats-io/transport-node';
import { Registry } from 'prom-client';
import type { TObject } from 'typebox';
import { archiveConsumer } from '../cloud/archive/consumer.ts';
import { partsOf, type ArchiveManifest } from '../cloud/archive/layout.ts';
import { createS3Client, listManifests } from '../cloud/archive/s3.ts';
import {
  firstSeqPerPoint,
  SeqSet,
  streamHeldFromMs,
  unionSeqRanges,
  type AuditRow,
  type EngineCell,
} from '../cloud/audit.ts';
import { loadConsumerConfig, startConsumer, type ConsumerSpec } from '../cloud/consumer.ts';
import { ingestConsumer } from '../cloud/ingest/consumer.ts';
import { silentLogger } from '../lib/log.ts';
import { Header, subjectFor, type DeviceKind } from '../schemas/index.ts';
import { envFileText } from '../stack/env-vars.ts';
import type { RunningServer } from '../stack/server-process.ts';
import { runReport, runSwitchyard } from './support/process.ts';
import { readArchive } from './support/archive.ts';
import { devicePayload } from './support/sink-conformance.ts';
import { s3rverSettings, TestServers, waitFor } from './support/servers.ts';

const HOUR_MS = 3_600_000;
const MINUTE_MS = 60_000;
const SITES = ['north', 'south'];
const DEVICES = ['bsu-0', 'bsu-1', 'bsu-2'];
/** Device readings per site and hour; the kinds cycle telemetry, telemetry, status, event. */
const PER_HOUR = 24;
const KINDS: readonly DeviceKind[] = ['telemetry', 'telemetry', 'status', 'event'];
const ENGINES = ['influx1', 'influx2'];

// ---------------------------------------------------------------------------------------------
// The pure parts

describe('audit ledger helpers', () => {
  test('unionSeqRanges merges overlapping and adjacent runs, in order', () => {
    assert.deepEqual(
      unionSeqRanges([
        [5, 7],
        [1, 2],
        [3, 3],
        [6, 9],
        [12, 12],
      ]),
      [
        [1, 3],
        [5, 9],
        [12, 12],
      ],
    );
    assert.deepEqual(unionSeqRanges([]), []);
  });

  test('SeqSet counts each sequence once however often runs overlap, and finds members', () => {
    const set = new SeqSet([
      [10, 20],
      [15, 25],
      [30, 30],
    ]);
    assert.equal(set.countUpTo(Number.MAX_SAFE_INTEGER), 17);
    assert.equal(set.countUpTo(22), 13);
    assert.deepEqual(
      [9, 10, 25, 26, 30, 31].map((s) => set.has(s)),
      [false, true, true, false, true, false],
    );
  });

  test('streamHeldFromMs: all of time for an untrimmed stream, none once emptied, else its first time plus the skew', () => {
    const at = '2026-03-01T10:20:00Z';
    const state = (first_seq: number, last_seq: number, messages: number) => ({
      first_seq,
      last_seq,
      messages,
      first_ts: at,
    });
    assert.equal(streamHeldFromMs(state(1, 500, 500), 60_000), Number.NEGATIVE_INFINITY);
    assert.equal(streamHeldFromMs(state(0, 0, 0), 60_000), Number.NEGATIVE_INFINITY);
    assert.equal(streamHeldFromMs(state(501, 500, 0), 60_000), Number.POSITIVE_INFINITY);
    assert.equal(streamHeldFromMs(state(120, 500, 381), 60_000), Date.parse(at) + 60_000);
  });

  test('firstSeqPerPoint: one entry per distinct time, the lowest sequence that maps to it', () => {
    // Times 100 (seqs 7 and 3), 200 (seq 5), 100 again (seq 9).
    assert.deepEqual(firstSeqPerPoint([100, 7, 200, 5, 100, 3, 100, 9]), [3, 5]);
    assert.deepEqual(firstSeqPerPoint([]), []);
  });
});

// ---------------------------------------------------------------------------------------------
// Against the real pipeline

/** What the test published for one site and receive hour (device time is in the same hour). */
interface Published {
  messages: number;
  /** Distinct points per measurement. */
  points: Record<'telemetry' | 'status' | 'event', number>;
}

describe('switchyard audit', () => {
  const servers = new TestServers('audit');
  let nats: RunningServer;
  let s3server: RunningServer;
  let influx: RunningServer;
  let vm: RunningServer;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  let s3: S3Client;
  let dir: string;
  let env: string;
  /** Start of the first of the three hours; the last one ended at least an hour ago. */
  const t0 = Math.floor((Date.now() - 4 * HOUR_MS) / HOUR_MS) * HOUR_MS;
  const hourLabel = (h: number): string => new Date(t0 + h * HOUR_MS).toISOString().slice(0, 13);
  const window = ['--since', new Date(t0).toISOString(), '--until', new Date(t0 + 3 * HOUR_MS).toISOString()];
  const published = new Map<string, Published>();
  const consumers = new Map<string, { stop: () => Promise<void> }>();
  /** The gaps of the deep audit of hours the stream no longer holds, for the test after it. */
  let deepGapsBefore: unknown[] = [];

  const audit = (args: string[] = []) => runReport(['audit', ...window, ...args, '--env-file', env]);

  const entry = (site: string, h: number): Published => {
    const key = `${site} ${hourLabel(h)}`;
    let p = published.get(key);
    if (!p) published.set(key, (p = { messages: 0, points: { telemetry: 0, status: 0, event: 0 } }));
    return p;
  };

  /** Publishes into BSU as the hub stores a site's message: payload as sent, receive time in a header. */
  async function publish(subject: string, payload: string, receivedAtMs: number): Promise<number> {
    const h = headers();
    h.set(Header.receivedAt, new Date(receivedAtMs).toISOString());
    return (await jetstream(nc).publish(subject, payload, { headers: h })).seq;
  }

  /** Readings `from`…`to - 1` of every site in hour `h`: device time i minutes into it, received 0.5 s later. */
  async function publishReadings(h: number, from: number, to: number): Promise<void> {
    for (let i = from; i < to; i++)
      for (const site of SITES) {
        const kind = KINDS[i % KINDS.length]!;
        const ts = t0 + h * HOUR_MS + i * MINUTE_MS;
        const device = DEVICES[i % DEVICES.length]!;
        await publish(subjectFor(site, device, kind), JSON.stringify(devicePayload(kind, i, ts)), ts + 500);
        const p = entry(site, h);
        p.messages++;
        p.points[kind]++;
      }
  }

  async function startOne<S extends TObject>(
    name: string,
    spec: ConsumerSpec<S>,
    flags: Record<string, unknown>,
  ) {
    const controller = new AbortController();
    const config = loadConsumerConfig(spec, {
      env: {},
      flags: { natsUrl: nats.url, fetchExpiresMs: '1000', ...flags },
    });
    const run = await startConsumer(spec, config, {
      log: silentLogger,
      registry: new Registry(),
      signal: controller.signal,
    });
    consumers.set(name, {
      stop: async () => {
        controller.abort();
        await run.done;
      },
    });
  }

  const startArchive = () =>
    startOne('archive', archiveConsumer, { ...s3rverSettings(s3server), batchSize: '30' });
  const startIngest = (sink: string) =>
    startOne(`ingest-${sink}`, ingestConsumer, {
      sink,
      influx1Url: influx.url,
      influx2Url: vm.url,
      influx2Token: 'local',
    });
  async function stopConsumer(name: string): Promise<void> {
    await consumers.get(name)?.stop();
    consumers.delete(name);
  }

  /** Waits until each durable acknowledged everything the stream holds. */
  async function caughtUp(durables: string[]): Promise<void> {
    await waitFor(
      `${durables.join(', ')} caught up`,
      async () => {
        const last = (await jsm.streams.info('BSU')).state.last_seq;
        for (const d of durables) {
          const info = await jsm.consumers.info('BSU', d);
          if (info.ack_floor.stream_seq !== last || info.num_ack_pending !== 0) return false;
        }
        return true;
      },
      60_000,
      250,
    );
  }
  const allDurables = ['archive', 'ingest-influx1', 'ingest-influx2'];

  /** The rows a clean pipeline shows: everything published, in every place. */
  function cleanRows(): AuditRow[] {
    const rows: AuditRow[] = [];
    for (const site of SITES)
      for (let h = 0; h < 3; h++) {
        const p = entry(site, h);
        const points = p.points.telemetry + p.points.status + p.points.event;
        const cell: EngineCell = { compared: true, expected: points, found: points, notYet: 0, missing: 0 };
        rows.push({
          site,
          hour: hourLabel(h),
          held: true,
          hub: p.messages,
          archive: p.messages,
          archiveObjects: -1,
          archiveLost: 0,
          archiveNotYet: 0,
          engines: { influx1: cell, influx2: { ...cell } },
        });
      }
    return rows;
  }
  /** Rows without the object counts, which depend on how the archive batched. */
  const comparable = (rows: AuditRow[]) => rows.map((r) => ({ ...r, archiveObjects: -1 }));

  async function getBytes(key: string): Promise<Uint8Array> {
    const out = await s3.send(new GetObjectCommand({ Bucket: 'switchyard', Key: key }));
    return out.Body!.transformToByteArray();
  }
  const putBytes = (key: string, body: Uint8Array) =>
    s3.send(new PutObjectCommand({ Bucket: 'switchyard', Key: key, Body: body }));
  const deleteKey = (key: string) => s3.send(new DeleteObjectCommand({ Bucket: 'switchyard', Key: key }));

  /** Manifests of one hour's objects. */
  async function manifestsOf(h: number): Promise<{ key: string; manifest: ArchiveManifest }[]> {
    const keys = await listManifests(s3, 'switchyard', `raw/hour=${hourLabel(h)}/`);
    return Promise.all(
      keys.map(async (key) => ({
        key,
        manifest: JSON.parse(Buffer.from(await getBytes(key)).toString('utf8')) as ArchiveManifest,
      })),
    );
  }

  /** Sequences of `site` in `manifest` that no other manifest of the list holds, ascending. */
  function onlyIn(manifest: ArchiveManifest, all: { manifest: ArchiveManifest }[], site: string): number[] {
    const runs = (m: ArchiveManifest) => partsOf(m).flatMap((p) => (p.site === site ? p.seqRanges : []));
    const others = new SeqSet(all.filter((m) => m.manifest !== manifest).flatMap((m) => runs(m.manifest)));
    const seqs: number[] = [];
    for (const [from, to] of runs(manifest))
      for (let s = from; s <= to; s++) if (!others.has(s)) seqs.push(s);
    return seqs;
  }

  /**
   * The archive gaps an object's loss leaves in hour `h`: one per site it holds that no other
   * object covers, with the object itself when `reason` (what --deep says of it) is given.
   */
  function gapsOfLost(
    victim: { key: string; manifest: ArchiveManifest },
    h: number,
    group: (typeof victim)[],
    reason?: string,
  ) {
    return SITES.map((site) => ({ site, missing: onlyIn(victim.manifest, group, site) }))
      .filter(({ missing }) => missing.length > 0)
      .map(({ site, missing }) => ({
        site,
        hour: hourLabel(h),
        where: 'archive',
        missing: missing.length,
        sequences: missing.slice(0, 20),
        ...(reason === undefined
          ? {}
          : {
              objects: [
                {
                  key: victim.manifest.object,
                  manifestKey: victim.key,
                  reason,
                  uncovered: missing.length,
                  sequences: missing.slice(0, 20),
                },
              ],
            }),
      }));
  }

  async function influxql(q: string): Promise<void> {
    const res = await fetch(`${influx.url}/query?db=switchyard`, {
      method: 'POST',
      body: new URLSearchParams({ q }),
    });
    const body = await res.text();
    assert.equal(res.status, 200, body);
    assert.doesNotMatch(body, /"error"/);
  }

  /** Points of a measurement in InfluxDB 1.x, counted by the server. */
  async function influxCount(measurement: string): Promise<number> {
    const res = await fetch(`${influx.url}/query?db=switchyard`, {
      method: 'POST',
      body: new URLSearchParams({ q: `SELECT count("seq") FROM "${measurement}"` }),
    });
    const body = (await res.json()) as { results: { series?: { values: [string, number][] }[] }[] };
    return body.results[0]?.series?.[0]?.values[0]?.[1] ?? 0;
  }

  /** Replays one device through one engine's ingest sink, as an operator repairs a gap. */
  async function repair(sink: string, site: string, device: string): Promise<void> {
    const r = await runSwitchyard([
      'replay',
      '--to',
      'ingest',
      '--sink',
      sink,
      '--from-seq',
      '1',
      '--site',
      site,
      '--device',
      device,
      '--env-file',
      env,
    ]);
    assert.equal(r.code, 0, r.output);
  }

  before(async () => {
    [nats, s3server, influx, vm] = await Promise.all([
      servers.nats(),
      servers.s3(),
      servers.influxdb(),
      servers.victoriaMetrics(),
    ]);
    nc = await connect({ servers: nats.url });
    jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: 'BSU', subjects: ['bsu.>'] });
    s3 = createS3Client(s3rverSettings(s3server));
    dir = mkdtempSync(join(tmpdir(), 'switchyard-audit-'));
    env = join(dir, 'cloud.env');
    writeFileSync(
      env,
      envFileText({
        natsUrl: nats.url,
        s3Endpoint: s3server.url,
        s3AccessKeyId: 'S3RVER',
        s3SecretAccessKey: 'S3RVER',
        influx1Url: influx.url,
        influx2Url: vm.url,
        influx2Token: 'local',
        sink: 'influx1',
      }),
    );

    for (let h = 0; h < 3; h++) {
      await publishReadings(h, 0, PER_HOUR);
      for (const site of SITES) {
        // A payload the bridge kept aside: archived, never ingested.
        await publish(
          subjectFor(site, 'bsu-0', 'invalid'),
          '{"ts": "not a reading"',
          t0 + h * HOUR_MS + 59 * MINUTE_MS,
        );
        entry(site, h).messages++;
      }
    }
    // The same reading stored twice (an MQTT redelivery after the dedup window): two messages, one point.
    const ts = t0 + HOUR_MS + 2 * MINUTE_MS;
    await publish(
      subjectFor('north', 'bsu-2', 'status'),
      JSON.stringify(devicePayload('status', 2, ts)),
      ts + 9_000,
    );
    entry('north', 1).messages++;

    await Promise.all([startArchive(), startIngest('influx1'), startIngest('influx2')]);
    await caughtUp(allDurables);
  });

  after(async () => {
    for (const name of [...consumers.keys()]) await stopConsumer(name);
    await nc?.close();
    await servers.stopAll();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('a clean pipeline: every place holds what was published, exit 0', async () => {
    // What reached the servers, read without the audit: every message archived once, and each
    // measurement's points in InfluxDB 1.x.
    const archived = await readArchive(s3, 'switchyard', 'raw/');
    const publishedMessages = [...published.values()].reduce((n, p) => n + p.messages, 0);
    assert.equal(archived.counts.size, publishedMessages);
    for (const measurement of ['telemetry', 'status', 'event'] as const) {
      const want = [...published.values()].reduce((n, p) => n + p.points[measurement], 0);
      assert.equal(await influxCount(measurement), want, measurement);
    }

    const { code, output, report } = await audit();
    assert.equal(code, 0, output);
    assert.deepEqual(report.gaps, []);
    assert.deepEqual(report.notYet, []);
    assert.deepEqual(report.engines, ENGINES);
    assert.deepEqual(comparable(report.rows), cleanRows());
    const last = (await jsm.streams.info('BSU')).state.last_seq;
    assert.deepEqual(
      report.durables.map((d: { durable: string; exists: boolean; ackFloorSeq: number }) => [
        d.durable,
        d.exists,
        d.ackFloorSeq,
      ]),
      allDurables.map((d) => [d, true, last]),
    );
    assert.equal(report.summary.hubMessages, last);

    // Narrowed to one site, only its rows; and the text report says the same.
    const south = await audit(['--site', 'south']);
    assert.equal(south.code, 0, south.output);
    assert.deepEqual(
      comparable(south.report.rows),
      cleanRows().filter((r) => r.site === 'south'),
    );
    const text = await runSwitchyard(['audit', ...window, '--env-file', env]);
    assert.equal(text.code, 0, text.output);
    assert.match(text.stdout, /^site\s+hour\s+hub\s+archive\s+influx1\s+influx2$/m);
    assert.match(
      text.stdout,
      new RegExp(`^north\\s+${hourLabel(1)}\\s+${entry('north', 1).messages}\\s`, 'm'),
    );
    assert.match(text.stdout, /no gaps/);
  });

  test('an archive object deleted: names each site and hour it held with the missing sequences, exit 1', async () => {
    const group = await manifestsOf(1);
    const victim = group[0]!;
    const expected = gapsOfLost(victim, 1, group);
    assert.deepEqual(
      expected.map((g) => g.site),
      SITES,
      'the object holds sequences of both sites that no other object holds',
    );
    const saved = { data: await getBytes(victim.manifest.object), manifest: await getBytes(victim.key) };
    await deleteKey(victim.manifest.object);
    await deleteKey(victim.key);
    try {
      const { code, output, report } = await audit();
      assert.equal(code, 1, output);
      assert.deepEqual(report.gaps, expected);
      for (const gap of expected) {
        const row = report.rows.find((r: AuditRow) => r.site === gap.site && r.hour === hourLabel(1));
        assert.equal(row.archive, entry(gap.site, 1).messages - gap.missing);
        assert.equal(row.archiveLost, gap.missing);
      }
      // Narrowed to one site, only that site's loss.
      const south = await audit(['--site', 'south']);
      assert.equal(south.code, 1, south.output);
      assert.deepEqual(
        south.report.gaps,
        expected.filter((g) => g.site === 'south'),
      );
    } finally {
      await putBytes(victim.manifest.object, saved.data);
      await putBytes(victim.key, saved.manifest);
    }
    const restored = await audit();
    assert.equal(restored.code, 0, restored.output);
    assert.deepEqual(restored.report.gaps, []);
  });

  test('a data object gone but its manifest kept: only --deep sees it, and names the object', async () => {
    const group = await manifestsOf(2);
    const victim = group.at(-1)!;
    const saved = await getBytes(victim.manifest.object);
    await deleteKey(victim.manifest.object);
    try {
      // The manifests still list the sequences: the cheap audit cannot tell.
      const cheap = await audit();
      assert.equal(cheap.code, 0, cheap.output);
      const deep = await audit(['--deep']);
      assert.equal(deep.code, 1, deep.output);
      const expected = gapsOfLost(victim, 2, group, 'the data object named by this manifest is missing');
      assert.ok(expected.length > 0);
      assert.deepEqual(deep.report.gaps, expected);
      assert.equal(deep.report.summary.objectsVerified, deep.report.summary.manifestsRead);
      // With one site, only its part is read (a ranged GET): the loss is still found.
      const north = await audit(['--deep', '--site', 'north']);
      assert.deepEqual(
        north.report.gaps,
        expected.filter((g) => g.site === 'north'),
      );
    } finally {
      await putBytes(victim.manifest.object, saved);
    }
  });

  test('points deleted from each engine: names the site, hour and engine, exit 1; a replay repairs it', async () => {
    // InfluxDB 1.x loses north bsu-1's telemetry of the third hour.
    await influxql(
      `DELETE FROM "telemetry" WHERE "site" = 'north' AND "device" = 'bsu-1' ` +
        `AND time >= ${t0 + 2 * HOUR_MS}ms AND time < ${t0 + 3 * HOUR_MS}ms`,
    );
    // VictoriaMetrics deletes whole series: south bsu-2's status, every hour.
    const res = await fetch(`${vm.url}/api/v1/admin/tsdb/delete_series`, {
      method: 'POST',
      body: new URLSearchParams({ 'match[]': '{__name__=~"status_.+",site="south",device="bsu-2"}' }),
    });
    assert.equal(res.status, 204, await res.text());

    // What each of them held, from what was published.
    const northTelemetry = (device: string) =>
      Array.from({ length: PER_HOUR }, (_, i) => i).filter(
        (i) => KINDS[i % KINDS.length] === 'telemetry' && DEVICES[i % DEVICES.length] === device,
      ).length;
    const southStatus = (device: string) =>
      Array.from({ length: PER_HOUR }, (_, i) => i).filter(
        (i) => KINDS[i % KINDS.length] === 'status' && DEVICES[i % DEVICES.length] === device,
      ).length;
    const lostTelemetry = northTelemetry('bsu-1');
    const lostStatus = southStatus('bsu-2');
    assert.ok(lostTelemetry > 0 && lostStatus > 0);

    const { code, output, report } = await audit();
    assert.equal(code, 1, output);
    const telemetry = entry('north', 2).points.telemetry;
    const status = entry('south', 0).points.status;
    assert.deepEqual(report.gaps, [
      {
        site: 'north',
        hour: hourLabel(2),
        where: 'influx1',
        measurement: 'telemetry',
        expected: telemetry,
        found: telemetry - lostTelemetry,
        missing: lostTelemetry,
        deadLettered: 0,
        devices: [{ device: 'bsu-1', expected: lostTelemetry, found: 0, deadLettered: 0 }],
      },
      ...[0, 1, 2].map((h) => ({
        site: 'south',
        hour: hourLabel(h),
        where: 'influx2',
        measurement: 'status',
        expected: status,
        found: status - lostStatus,
        missing: lostStatus,
        deadLettered: 0,
        devices: [{ device: 'bsu-2', expected: lostStatus, found: 0, deadLettered: 0 }],
      })),
    ]);
    const north2 = report.rows.find((r: AuditRow) => r.site === 'north' && r.hour === hourLabel(2));
    assert.equal(north2.engines.influx1.missing, lostTelemetry);
    assert.equal(north2.engines.influx2.missing, 0);

    await repair('influx1', 'north', 'bsu-1');
    await repair('influx2', 'south', 'bsu-2');
    const repaired = await audit();
    assert.equal(repaired.code, 0, repaired.output);
    assert.deepEqual(comparable(repaired.report.rows), cleanRows());
  });

  test('what a stopped consumer has not taken yet is "not yet", not a gap: exit 0', async () => {
    await stopConsumer('archive');
    await stopConsumer('ingest-influx2');
    const late = 8;
    // Late readings of the third hour, received in it.
    await publishReadings(2, PER_HOUR, PER_HOUR + late);
    await caughtUp(['ingest-influx1']);

    const { code, output, report } = await audit();
    assert.equal(code, 0, output);
    assert.deepEqual(report.gaps, []);
    assert.deepEqual(
      report.notYet.map((n: { site: string; hour: string; where: string; count: number }) => [
        n.site,
        n.hour,
        n.where,
        n.count,
      ]),
      SITES.flatMap((site) => [
        [site, hourLabel(2), 'archive', late],
        // Every late reading is a device reading: one point each.
        [site, hourLabel(2), 'influx2', late],
      ]),
    );
    const archive = report.durables.find((d: { durable: string }) => d.durable === 'archive');
    assert.equal(archive.pending, late * SITES.length, 'the archive durable has the late readings pending');
    for (const site of SITES) {
      const row = report.rows.find((r: AuditRow) => r.site === site && r.hour === hourLabel(2));
      assert.equal(row.hub, entry(site, 2).messages);
      assert.equal(row.archive, entry(site, 2).messages - late);
      assert.equal(row.archiveNotYet, late);
      assert.equal(row.engines.influx1.found, row.engines.influx1.expected);
      assert.equal(row.engines.influx2.notYet, late);
      assert.equal(row.engines.influx2.found + late, row.engines.influx1.found);
    }

    await Promise.all([startArchive(), startIngest('influx2')]);
    await caughtUp(allDurables);
    const done = await audit();
    assert.equal(done.code, 0, done.output);
    assert.deepEqual(done.report.notYet, []);
    assert.deepEqual(comparable(done.report.rows), cleanRows());
  });

  test('hours the stream no longer holds: only --deep compares them, from verified archive objects', async () => {
    // A tampered object (bytes that do not match its manifest) and a lost engine hour.
    const group = await manifestsOf(0);
    const victim = group[0]!;
    const tampered = gapsOfLost(
      victim,
      0,
      group,
      `${victim.manifest.object}: bytes do not match the sha256 of its manifest`,
    );
    await putBytes(victim.manifest.object, new TextEncoder().encode('not what the manifest hashed'));
    await influxql(
      `DELETE FROM "event" WHERE "site" = 'south' AND "device" = 'bsu-0' ` +
        `AND time >= ${t0 + HOUR_MS}ms AND time < ${t0 + 2 * HOUR_MS}ms`,
    );
    await jsm.streams.purge('BSU');

    const cheap = await audit();
    assert.equal(cheap.code, 0, cheap.output);
    assert.deepEqual(cheap.report.gaps, []);
    assert.equal(cheap.report.streamState.heldFrom, null);
    for (const row of cheap.report.rows as AuditRow[]) {
      assert.equal(row.held, false);
      assert.equal(row.hub, 0);
      assert.equal(row.engines.influx1!.compared, false);
    }

    const deep = await audit(['--deep']);
    assert.equal(deep.code, 1, deep.output);
    const lostEvents = Array.from({ length: PER_HOUR }, (_, i) => i).filter(
      (i) => KINDS[i % KINDS.length] === 'event' && DEVICES[i % DEVICES.length] === 'bsu-0',
    ).length;
    const events = entry('south', 1).points.event;
    assert.deepEqual(deep.report.gaps, [
      ...tampered,
      {
        site: 'south',
        hour: hourLabel(1),
        where: 'influx1',
        measurement: 'event',
        expected: events,
        found: events - lostEvents,
        missing: lostEvents,
        deadLettered: 0,
        devices: [{ device: 'bsu-0', expected: lostEvents, found: 0, deadLettered: 0 }],
      },
    ]);
    deepGapsBefore = deep.report.gaps;
  });
  test('a reading the database refused is a gap of that engine alone, counted as dead-lettered', async () => {
    // The stream no longer holds the hour (purged above): the deep audit reads the archive for it.
    // A field that is a number in one reading and text in the next: InfluxDB 1.x refuses one of
    // them for good (field type conflict) and ingest dead-letters it; VictoriaMetrics takes both.
    const h = 2;
    const at = (minute: number) => t0 + h * HOUR_MS + minute * MINUTE_MS + 30_000;
    const first = { ...devicePayload('telemetry', 900, at(40)), note: 1 };
    const second = { ...devicePayload('telemetry', 901, at(41)), note: 'text' };
    const firstSeq = await publish(
      subjectFor('south', 'bsu-9', 'telemetry'),
      JSON.stringify(first),
      at(40) + 500,
    );
    const secondSeq = await publish(
      subjectFor('south', 'bsu-9', 'telemetry'),
      JSON.stringify(second),
      at(41) + 500,
    );
    await caughtUp(allDurables);

    const { code, output, report } = await audit(['--deep']);
    assert.equal(code, 1, output);
    const telemetry = entry('south', h).points.telemetry + 2;
    const refused = report.gaps.filter(
      (g: { site: string; hour: string; where: string }) =>
        g.site === 'south' && g.hour === hourLabel(h) && g.where !== 'archive',
    );
    assert.deepEqual(refused, [
      {
        site: 'south',
        hour: hourLabel(h),
        where: 'influx1',
        measurement: 'telemetry',
        expected: telemetry,
        found: telemetry - 1,
        missing: 1,
        deadLettered: 1,
        devices: [{ device: 'bsu-9', expected: 2, found: 1, deadLettered: 1 }],
      },
    ]);
    const influx1 = report.durables.find((d: { durable: string }) => d.durable === 'ingest-influx1');
    assert.equal(influx1.deadLetters, 1);
    const letters = await runReport(['dlq', 'list', '--consumer', 'ingest-influx1', '--env-file', env]);
    assert.equal(letters.code, 0, letters.output);
    // Which of the two InfluxDB refuses depends on whether they reach it in one write (it may take
    // the text first) or in two (the number first): exactly one of them is dead-lettered.
    const lettered = (letters.report.deadLetters as { seq: number }[]).map((l) => l.seq);
    assert.equal(lettered.length, 1, letters.output);
    assert.ok([firstSeq, secondSeq].includes(lettered[0]!), `dead-lettered seq ${lettered[0]}`);
    // The gaps found before stay as they were, and nothing else appears.
    assert.deepEqual(
      report.gaps.filter((g: (typeof refused)[number]) => !refused.includes(g)),
      deepGapsBefore,
    );
  });
});
