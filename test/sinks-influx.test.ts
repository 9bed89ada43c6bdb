/**
 * The ingest sinks against their real servers: `influx2` against VictoriaMetrics (the v2 write
 * API), `influx1` against InfluxDB 1.x. Both pass the shared conformance suite; below it, what is
 * particular to line-protocol engines (server-side refusals, a missing database, request size).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { messagePoints, type Point } from '../cloud/line-protocol.ts';
import type { SinkMessage } from '../cloud/sink.ts';
import { createInflux1Sink, type Influx1Settings } from '../cloud/sinks/influx1.ts';
import { createInflux2Sink, type Influx2Settings } from '../cloud/sinks/influx2.ts';
import { InfluxUnavailableError } from '../cloud/sinks/influx-errors.ts';
import { silentLogger } from '../lib/log.ts';
import { killServer, stopServer, type RunningServer } from '../stack/server-process.ts';
import { TestServers } from './support/servers.ts';
import { deviceMessages, devicePayload, sinkConformance, sinkMessage } from './support/sink-conformance.ts';

// ---------------------------------------------------------------------------------------------
// Reading back

type Row = Record<string, string | number>;

/** Rows sorted by their JSON, keys sorted: a canonical form for deepEqual. */
function canonical(rows: Row[]): Row[] {
  const sorted = rows.map((r) => Object.fromEntries(Object.entries(r).sort(([a], [b]) => (a < b ? -1 : 1))));
  return sorted.sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1));
}

/** The points of accepted messages, merged as a store merges them (same series and time: last field wins). */
function storedPoints(messages: readonly SinkMessage[]): Point[] {
  const byKey = new Map<string, Point>();
  for (const m of messages) {
    const result = messagePoints(m);
    if (result.outcome !== 'write') continue;
    for (const p of result.points) {
      const key = JSON.stringify([p.measurement, Object.entries(p.tags).sort(), p.timeMs]);
      const prev = byKey.get(key);
      byKey.set(key, prev ? { ...p, fields: { ...prev.fields, ...p.fields } } : p);
    }
  }
  return [...byKey.values()];
}

/** InfluxDB 1.x: one row per point, tags and fields side by side. */
const influx1Rows = (messages: readonly SinkMessage[]): Row[] =>
  canonical(
    storedPoints(messages).map((p) => ({
      measurement: p.measurement,
      time: p.timeMs,
      ...p.tags,
      ...p.fields,
    })),
  );

async function influxQuery(url: string, q: string): Promise<InfluxQueryResult> {
  const res = await fetch(`${url}/query?db=switchyard&epoch=ms`, {
    method: 'POST',
    body: new URLSearchParams({ q }),
  });
  assert.equal(res.status, 200, await res.clone().text());
  return (await res.json()) as InfluxQueryResult;
}
interface InfluxQueryResult {
  results: {
    series?: { name: string; columns: string[]; values: (string | number | null)[][] }[];
    error?: string;
  }[];
}

async function readInflux1(url: string, site: string): Promise<Row[]> {
  const body = await influxQuery(url, `SELECT * FROM /.*/ WHERE "site" = '${site}'`);
  const rows: Row[] = [];
  for (const series of body.results[0]?.series ?? []) {
    for (const values of series.values) {
      const row: Row = { measurement: series.name };
      series.columns.forEach((column, i) => {
        const value = values[i];
        if (value !== null && value !== undefined) row[column] = value;
      });
      rows.push(row);
    }
  }
  return canonical(rows);
}

/** VictoriaMetrics: one sample per field, named `<measurement>_<field>`; text is stored as 0. */
const vmSamples = (messages: readonly SinkMessage[]): Row[] =>
  canonical(
    storedPoints(messages).flatMap((p) =>
      Object.entries(p.fields).map(([field, value]) => ({
        __name__: `${p.measurement}_${field}`,
        ...p.tags,
        t: p.timeMs,
        v: typeof value === 'number' ? value : 0,
      })),
    ),
  );

async function readVictoriaMetrics(url: string, site: string): Promise<Row[]> {
  await fetch(`${url}/internal/force_flush`);
  const match = encodeURIComponent(`{site="${site}"}`);
  const text = await (await fetch(`${url}/api/v1/export?match[]=${match}`)).text();
  const rows: Row[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const series = JSON.parse(line) as {
      metric: Record<string, string>;
      values: number[];
      timestamps: number[];
    };
    series.values.forEach((v, i) => rows.push({ ...series.metric, t: series.timestamps[i]!, v }));
  }
  return canonical(rows);
}

// ---------------------------------------------------------------------------------------------
// Adapters

const influx2Settings = (vm: RunningServer): Influx2Settings => ({
  url: vm.url,
  token: 'local',
  org: 'switchyard',
  bucket: 'switchyard',
  requestTimeoutMs: 5000,
  gzipMinBytes: 1000,
});

const influx1Settings = (influxdb: RunningServer, database = 'switchyard'): Influx1Settings => ({
  url: influxdb.url,
  database,
  requestTimeoutMs: 5000,
  gzipMinBytes: 1000,
});

sinkConformance('influx2 sink (VictoriaMetrics)', async () => {
  const servers = new TestServers('sink-influx2');
  let vm = await servers.victoriaMetrics();
  const sink = createInflux2Sink(influx2Settings(vm), silentLogger);
  await sink.open();
  return {
    sink,
    readBack: (site) => readVictoriaMetrics(vm.url, site),
    expected: vmSamples,
    rejectsUndecodable: true,
    // SIGTERM, not SIGKILL: VictoriaMetrics 1.79 acknowledges a write before it is on disk and,
    // measured here, loses the last ~6-12 s of acknowledged points on SIGKILL. No client can see
    // that; docs/ingest.md says how to backfill such a window from the archive.
    kill: async () => {
      await stopServer(vm);
      return async () => void (vm = await servers.restart(vm));
    },
    stop: () => servers.stopAll(),
  };
});

sinkConformance('influx1 sink (InfluxDB 1.x)', async () => {
  const servers = new TestServers('sink-influx1');
  let influxdb = await servers.influxdb();
  const sink = createInflux1Sink(influx1Settings(influxdb), silentLogger);
  await sink.open();
  return {
    sink,
    readBack: (site) => readInflux1(influxdb.url, site),
    expected: influx1Rows,
    rejectsUndecodable: true,
    // InfluxDB 1.x fsyncs its WAL before it answers a write: a SIGKILL loses nothing acknowledged.
    kill: async () => {
      await killServer(influxdb);
      return async () => void (influxdb = await servers.restart(influxdb));
    },
    stop: () => servers.stopAll(),
  };
});

// ---------------------------------------------------------------------------------------------
// Particular to line-protocol engines

describe('line-protocol sinks', () => {
  const servers = new TestServers('sinks-influx');
  let vm: RunningServer;
  let influxdb: RunningServer;
  before(async () => {
    [vm, influxdb] = await Promise.all([servers.victoriaMetrics(), servers.influxdb()]);
  });
  after(() => servers.stopAll());

  test('influx1 isolates the messages the server refuses (field type conflict) and writes the rest', async () => {
    const sink = createInflux1Sink(influx1Settings(influxdb), silentLogger);
    const site = 'conflict';
    const ts = Date.now() - 600_000;
    const withMode = (i: number, mode: unknown): SinkMessage =>
      sinkMessage(site, 'bsu-1', 'telemetry', { ...devicePayload('telemetry', i, ts + i * 1000), mode });
    // A firmware update turns an extra field from text into a number: 1.x keeps a field's first type.
    assert.deepEqual((await sink.write([withMode(0, 'eco')], AbortSignal.timeout(5000))).rejected, []);
    const batch = [1, 2, 3, 4, 5, 6, 7, 8].map((i) => withMode(i, i === 6 ? 3 : 'eco'));
    const result = await sink.write(batch, AbortSignal.timeout(10_000));
    assert.equal(result.rejected.length, 1);
    assert.equal(result.rejected[0]!.seq, batch[5]!.seq);
    assert.match(
      result.rejected[0]!.reason,
      /^influx1 refused the points: partial write: field type conflict/,
    );
    assert.ok(sink.stats.splits >= 3, `split down to the message (${sink.stats.splits} splits)`);
    const count = await influxQuery(
      influxdb.url,
      `SELECT count(SoC) FROM telemetry WHERE "site" = '${site}'`,
    );
    assert.equal(count.results[0]?.series?.[0]?.values[0]?.[1], 8);
    await sink.close();
  });

  test('influx1 with a missing database throws transiently, rejects nothing, and is not ready', async () => {
    const sink = createInflux1Sink(influx1Settings(influxdb, 'nope'), silentLogger);
    await assert.rejects(sink.open(), InfluxUnavailableError);
    await assert.rejects(sink.write(deviceMessages('nodb', 3), AbortSignal.timeout(5000)), (err) => {
      assert.ok(err instanceof InfluxUnavailableError);
      assert.match(err.message, /HTTP 404: database not found/);
      return true;
    });
    const readiness = await sink.readiness();
    assert.equal(readiness.ready, false);
    assert.match(readiness.reasons?.[0] ?? '', /database not found/);
    assert.equal(sink.stats.rejected, 0);
  });

  test('messages of kind invalid are skipped and counted, not rejected', async () => {
    const sink = createInflux2Sink(influx2Settings(vm), silentLogger);
    const invalid = { ...sinkMessage('skip', 'bsu-1', 'telemetry', 'not json'), kind: 'invalid' };
    const result = await sink.write([invalid, ...deviceMessages('skip', 2)], AbortSignal.timeout(5000));
    assert.deepEqual(result, { rejected: [] });
    assert.equal(sink.stats.skipped, 1);
    await sink.close();
  });

  test('a batch over maxRequestBytes goes in several requests, all of it written', async () => {
    const sink = createInflux2Sink(influx2Settings(vm), silentLogger, { maxRequestBytes: 4096 });
    const site = 'big';
    const batch = deviceMessages(site, 60);
    assert.deepEqual(await sink.write(batch, AbortSignal.timeout(10_000)), { rejected: [] });
    assert.ok(sink.stats.requests > 3, `${sink.stats.requests} requests`);
    assert.deepEqual(await readVictoriaMetrics(vm.url, site), vmSamples(batch));
    await sink.close();
  });

  test('an aborted write throws and writes nothing more', async () => {
    const sink = createInflux1Sink(influx1Settings(influxdb), silentLogger);
    const controller = new AbortController();
    controller.abort(new Error('stopping'));
    await assert.rejects(sink.write(deviceMessages('aborted', 3), controller.signal));
    assert.deepEqual(await readInflux1(influxdb.url, 'aborted'), []);
  });
});
