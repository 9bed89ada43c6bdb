/**
 * The ingest sinks against their real servers: `influx2` against VictoriaMetrics (the v2 write
 * API), `influx1` against InfluxDB 1.x. Both pass the shared conformance suite; below it, what is
 * particular to line-protocol engines (server-side refusals, a missing database, request size, the
 * server's Retry-After).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { messagePoints, type Point } from '../cloud/ingest/line-protocol.ts';
import { TransientSinkError, type SinkMessage } from '../cloud/sink.ts';
import { createInflux1Sink, type Influx1Settings } from '../cloud/ingest/influx1.ts';
import { createInflux2Sink, type Influx2Settings } from '../cloud/ingest/influx2.ts';
import { InfluxUnavailableError } from '../cloud/ingest/errors.ts';
import { parseRetryAfter } from '../lib/retry-after.ts';
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

const influx2Settings = (vm: { url: string }): Influx2Settings => ({
  url: vm.url,
  token: 'local',
  org: 'switchyard',
  bucket: 'switchyard',
  requestTimeoutMs: 5000,
  gzipMinBytes: 1000,
});

const influx1Settings = (influxdb: { url: string }, database = 'switchyard'): Influx1Settings => ({
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
    // SIGTERM, not SIGKILL: VictoriaMetrics 1.79 acknowledges a write before it is on disk, so a
    // SIGKILL loses the last seconds of acknowledged points, which no client can see (docs/ingest.md).
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

// ---------------------------------------------------------------------------------------------
// The server's retry hint

describe('Retry-After', () => {
  test('is read as delay-seconds or an HTTP date, and nothing else', () => {
    const now = Date.parse('2026-12-04T12:00:00Z');
    assert.equal(parseRetryAfter('120', now), 120_000);
    assert.equal(parseRetryAfter(' 0 ', now), 0);
    assert.equal(parseRetryAfter('Fri, 04 Dec 2026 12:00:30 GMT', now), 30_000);
    assert.equal(parseRetryAfter('Friday, 04-Dec-26 12:01:00 GMT', now), 60_000);
    assert.equal(parseRetryAfter('Fri, 04 Dec 2026 11:00:00 GMT', now), 0, 'a date gone by: at once');
    for (const junk of [undefined, null, '', '1.5', '-3', '2027-01-01', 'soon', 'Fri, 04 Dec 2026 12:00:30'])
      assert.equal(parseRetryAfter(junk, now), undefined, String(junk));
  });

  // No database here can be made to answer 429 or 503: a local HTTP server answers as one would.
  describe('from the database', () => {
    interface Answer {
      status: number;
      headers: OutgoingHttpHeaders;
      body: string;
    }
    let answer: Answer;
    const received: { method: string; path: string; headers: IncomingHttpHeaders; body: string }[] = [];
    const server = createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (chunk: string) => (body += chunk));
      req.on('end', () => {
        received.push({ method: req.method ?? '', path: req.url ?? '', headers: req.headers, body });
        res.writeHead(answer.status, answer.headers).end(answer.body);
      });
    });
    let url: string;
    before(async () => {
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    });
    after(() => new Promise<void>((resolve) => server.close(() => resolve())));

    const sinks = {
      influx2: () => createInflux2Sink({ ...influx2Settings({ url }), gzipMinBytes: Infinity }, silentLogger),
      influx1: () => createInflux1Sink({ ...influx1Settings({ url }), gzipMinBytes: Infinity }, silentLogger),
    };
    /** What a write through `engine` throws while the server gives `given`. */
    async function failure(engine: keyof typeof sinks, given: Answer): Promise<TransientSinkError> {
      answer = given;
      received.length = 0;
      const sink = sinks[engine]();
      const batch = deviceMessages(`retry-${engine}`, 3);
      const err = await sink.write(batch, AbortSignal.timeout(5_000)).then(
        () => assert.fail('the write resolved'),
        (e: unknown) => e,
      );
      await sink.close();
      // The request reached the server, points and all.
      assert.equal(received.length, 1);
      assert.equal(received[0]!.method, 'POST');
      assert.match(received[0]!.path, engine === 'influx2' ? /^\/api\/v2\/write\?/ : /^\/write\?/);
      assert.match(received[0]!.body, new RegExp(`site=retry-${engine}`));
      assert.ok(err instanceof InfluxUnavailableError, String(err));
      assert.ok(err instanceof TransientSinkError);
      assert.equal(err.failedSeqs, undefined, 'the whole batch is retried');
      return err;
    }

    for (const engine of ['influx2', 'influx1'] as const) {
      test(`${engine}: 429 with Retry-After in seconds throws a transient error carrying the hint`, async () => {
        const err = await failure(engine, {
          status: 429,
          headers: { 'content-type': 'application/json', 'retry-after': '7' },
          body: JSON.stringify({ code: 'too many requests', message: 'slow down', error: 'slow down' }),
        });
        assert.equal(err.retryAfterMs, 7_000);
        assert.match(err.message, /HTTP 429: slow down/);
      });

      test(`${engine}: 503 with Retry-After as an HTTP date throws a transient error carrying the hint`, async () => {
        // HTTP dates have whole seconds: 30 s from now is 29-30 s away once it arrives.
        const at = new Date(Math.floor(Date.now() / 1000) * 1000 + 30_000);
        const err = await failure(engine, {
          status: 503,
          headers: { 'content-type': 'text/plain', 'retry-after': at.toUTCString() },
          body: 'overloaded',
        });
        assert.ok(
          err.retryAfterMs !== undefined && err.retryAfterMs > 25_000 && err.retryAfterMs <= 30_000,
          `retryAfterMs ${err.retryAfterMs}`,
        );
        assert.match(err.message, /HTTP 503: overloaded/);
      });

      test(`${engine}: 503 without Retry-After leaves the delay to the runner`, async () => {
        const err = await failure(engine, { status: 503, headers: {}, body: '' });
        assert.equal(err.retryAfterMs, undefined);
      });
    }
  });
});
