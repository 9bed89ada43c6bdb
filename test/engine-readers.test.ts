/**
 * The engine readers against their real servers: InfluxQL against InfluxDB 1.x, export against
 * VictoriaMetrics. The same fleet's telemetry goes into both through the real ingest sinks; each
 * reader must return exactly the hourly figures computed here from the readings themselves, and
 * both the same.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Measurement, toLines, type Point } from '../cloud/ingest/line-protocol.ts';
import type { SinkMessage } from '../cloud/sink.ts';
import type { IngestSinkConfig } from '../cloud/ingest/config.ts';
import { Influx1Engine } from '../cloud/ingest/influx1.ts';
import { Influx2Engine } from '../cloud/ingest/influx2.ts';
import {
  createEngineReader,
  EngineReadError,
  seriesSelector,
  type EngineReader,
  type HourlyStats,
  type SiteHourCount,
} from '../cloud/ingest/readers/index.ts';
import { freePort } from '../lib/process.ts';
import { HOUR_MS, hourText, ingestConfig, ingestIntoBoth, stats, type Reading } from './support/engines.ts';
import { TestServers } from './support/servers.ts';
import { sinkMessage } from './support/sink-conformance.ts';

const HOUR = HOUR_MS;
const MINUTE = 60_000;

// ---------------------------------------------------------------------------------------------
// A fleet's readings, and what they should read back as

/**
 * Telemetry of every device of `sites` × `devices`, one reading every `everyMs` from two readings
 * before `startMs` to two after `startMs + hours`, so that the window's edges have readings on
 * both sides. Values are multiples of 1/4, so every sum is exact in any order and the engines
 * must agree to the last bit. Every fifth reading carries strings (whose SoC, 99.75, is above any
 * bank SoC, and must not be counted as the bank's) and every tenth has a status message besides.
 */
function fleet(sites: string[], devices: string[], startMs: number, hours: number, everyMs: number) {
  const readings: Reading[] = [];
  const messages: SinkMessage[] = [];
  sites.forEach((site, s) =>
    devices.forEach((device, d) => {
      for (
        let i = 0, ts = startMs - 2 * everyMs;
        ts <= startMs + hours * HOUR + 2 * everyMs;
        i++, ts += everyMs
      ) {
        const SoC = 10 + ((i * 7 + d * 11 + s * 5) % 320) / 4;
        const W = (((i * 37 + d * 101) % 2000) - 1000) / 2;
        readings.push({ site, device, ts, SoC, W });
        messages.push(
          sinkMessage(site, device, 'telemetry', {
            ts,
            seq: i,
            SoC,
            V: 700 + (i % 10) / 4,
            A: -12.5,
            W,
            ac: { W: W * 2, PF: -0.995, InvSt: 'RUNNING' },
            ...(i % 5 === 0
              ? {
                  strings: [
                    { Idx: 1, SoC: 99.75, A: -6.25 },
                    { Idx: 2, SoC: 99.75, ConFail: 'NO_FAILURE' },
                  ],
                }
              : {}),
          }),
        );
        if (i % 10 === 0)
          messages.push(
            sinkMessage(site, device, 'status', { ts, seq: i, State: 'CONNECTED', ChaSt: 'CHARGING' }),
          );
      }
    }),
  );
  return { readings, messages };
}

/** The rows a reader must return for `readings` in [sinceMs, untilMs), sorted by site, device, hour. */
function expectedStats(readings: readonly Reading[], sinceMs: number, untilMs: number): HourlyStats[] {
  const groups = new Map<string, Reading[]>();
  for (const r of readings) {
    if (r.ts < sinceMs || r.ts >= untilMs) continue;
    const key = JSON.stringify([r.site, r.device, hourText(r.ts)]);
    groups.set(key, [...(groups.get(key) ?? []), r]);
  }
  return [...groups.keys()].sort().map((key) => {
    const [site, device, hour] = JSON.parse(key) as [string, string, string];
    const rs = groups.get(key)!;
    return {
      site,
      device,
      hour,
      count: rs.length,
      fields: { SoC: stats(rs.map((r) => r.SoC)), W: stats(rs.map((r) => r.W)) },
    };
  });
}

/** Per site and hour: the sum of the devices' counts. */
function expectedCounts(rows: readonly HourlyStats[]): SiteHourCount[] {
  const counts = new Map<string, number>();
  for (const r of rows) {
    const key = JSON.stringify([r.site, r.hour]);
    counts.set(key, (counts.get(key) ?? 0) + r.count);
  }
  return [...counts.keys()].sort().map((key) => {
    const [site, hour] = JSON.parse(key) as [string, string];
    return { site, hour, count: counts.get(key)! };
  });
}

// ---------------------------------------------------------------------------------------------

describe('engine readers', () => {
  const servers = new TestServers('engine-readers');
  let config: IngestSinkConfig;
  let readers: EngineReader[];
  const sites = ['rd-north', 'rd-south'];
  const devices = ['bsu-1', 'bsu-2', 'bsu-3'];
  // Three whole hours that ended at least an hour ago: within VictoriaMetrics' retention, and
  // aligned to UTC hours as the readers' buckets are.
  const startMs = Math.floor(Date.now() / HOUR) * HOUR - 5 * HOUR;
  const untilMs = startMs + 3 * HOUR;
  let readings: Reading[];
  let messages: SinkMessage[];

  before(async () => {
    const [vm, influxdb] = await Promise.all([servers.victoriaMetrics(), servers.influxdb()]);
    config = ingestConfig(vm, influxdb);
    readers = [createEngineReader('influx1', config), createEngineReader('influx2', config)];
    ({ readings, messages } = fleet(sites, devices, startMs, 3, MINUTE));
    await ingestIntoBoth(config, messages);
  });
  after(async () => {
    await Promise.all(readers.map((r) => r.close()));
    await servers.stopAll();
  });

  test('both readers return the hourly count, min, max and sum of what was written, per device and hour', async () => {
    const want = expectedStats(readings, startMs, untilMs);
    assert.equal(want.length, 2 * 3 * 3);
    assert.ok(
      want.every((r) => r.count === 60),
      'a reading a minute, each hour',
    );
    for (const reader of readers) {
      const got = await reader.hourlyStats({
        sinceMs: startMs,
        untilMs,
        measurement: Measurement.telemetry,
        fields: ['SoC', 'W'],
      });
      assert.deepEqual(got, want, reader.engine);
    }
  });

  test('the window is half-open and need not be aligned: a reading at since counts, one at until does not', async () => {
    // Both edges fall on readings, in the middle of an hour.
    const since = startMs + 30 * MINUTE;
    const until = startMs + 2 * HOUR + 15 * MINUTE;
    const want = expectedStats(readings, since, until);
    assert.deepEqual(
      want.filter((r) => r.site === sites[0] && r.device === devices[0]).map((r) => r.count),
      [30, 60, 15],
    );
    for (const reader of readers) {
      const got = await reader.hourlyStats({
        sinceMs: since,
        untilMs: until,
        measurement: Measurement.telemetry,
        fields: ['SoC', 'W'],
      });
      assert.deepEqual(got, want, reader.engine);
    }
  });

  test('a window of several days reads the same as its hours (VictoriaMetrics exports it a day at a time)', async () => {
    // Two days back and an hour on: the fleet's readings before and after its three hours count too.
    const since = startMs - 2 * 24 * HOUR;
    const until = untilMs + HOUR;
    const want = expectedStats(readings, since, until).filter((r) => r.site === 'rd-north');
    assert.deepEqual(
      want.filter((r) => r.device === 'bsu-1').map((r) => r.count),
      [2, 60, 60, 60, 3],
    );
    for (const reader of readers) {
      const got = await reader.hourlyStats({
        sinceMs: since,
        untilMs: until,
        site: 'rd-north',
        measurement: Measurement.telemetry,
        fields: ['SoC', 'W'],
      });
      assert.deepEqual(got, want, reader.engine);
    }
  });

  test('site and device narrow the rows to that device', async () => {
    const want = expectedStats(readings, startMs, untilMs).filter(
      (r) => r.site === 'rd-south' && r.device === 'bsu-2',
    );
    assert.equal(want.length, 3);
    for (const reader of readers) {
      const got = await reader.hourlyStats({
        sinceMs: startMs,
        untilMs,
        site: 'rd-south',
        device: 'bsu-2',
        measurement: Measurement.telemetry,
        fields: ['SoC', 'W'],
      });
      assert.deepEqual(got, want, reader.engine);
    }
  });

  test('countPoints gives per site and hour the points of every device', async () => {
    const want = expectedCounts(expectedStats(readings, startMs, untilMs));
    assert.deepEqual(
      want.map((r) => r.count),
      [180, 180, 180, 180, 180, 180],
    );
    for (const reader of readers) {
      assert.deepEqual(
        await reader.countPoints({ sinceMs: startMs, untilMs, measurement: Measurement.telemetry }),
        want,
        reader.engine,
      );
      // Status messages are their own measurement: one every ten readings.
      const status = await reader.countPoints({
        sinceMs: startMs,
        untilMs,
        site: 'rd-north',
        measurement: Measurement.status,
      });
      assert.deepEqual(
        status.map((r) => r.count),
        [18, 18, 18],
        reader.engine,
      );
    }
  });

  test('listFields: the same telemetry fields from both, text marked where the engine keeps it', async () => {
    const [influx1, influx2] = await Promise.all(
      readers.map((r) => r.listFields({ measurement: Measurement.telemetry, sinceMs: startMs, untilMs })),
    );
    const names = ['A', 'SoC', 'V', 'W', 'ac_InvSt', 'ac_InvSt_code', 'ac_PF', 'ac_W', 'seq'];
    // String rows (telemetry_string_SoC …) are not fields of telemetry, although their names begin alike.
    assert.deepEqual(
      influx1!.map((f) => f.name),
      names,
    );
    assert.deepEqual(
      influx2!.map((f) => f.name),
      names,
    );
    assert.equal(influx1!.find((f) => f.name === 'ac_InvSt')?.type, 'string');
    assert.ok(influx1!.filter((f) => f.name !== 'ac_InvSt').every((f) => f.type === 'number'));
    assert.ok(
      influx2!.every((f) => f.type === 'number'),
      'VictoriaMetrics stores text as 0',
    );
    const strings = await readers[1]!.listFields({
      measurement: Measurement.telemetryString,
      sinceMs: startMs,
      untilMs,
    });
    assert.deepEqual(
      strings.map((f) => f.name),
      ['A', 'ConFail', 'ConFail_code', 'SoC'],
    );
  });

  test('count counts points, not the values of one field, when points carry different fields', async () => {
    const site = 'rd-sparse';
    // An hour of its own, before the fleet's readings, so no other test sees these points.
    const hourMs = startMs - 3 * HOUR;
    const t0 = hourMs + 10 * MINUTE;
    // Raw line protocol: ten points, all with seq, SoC on every other one, W on the first three.
    const points: Point[] = Array.from({ length: 10 }, (_, i) => ({
      measurement: Measurement.telemetry,
      tags: { site, device: 'bsu-1' },
      fields: { seq: i, ...(i % 2 === 0 ? { SoC: 40 + i } : {}), ...(i < 3 ? { W: -100 * i } : {}) },
      timeMs: t0 + i * 1000,
    }));
    const body = toLines(points);
    const common = { requestTimeoutMs: 5000, gzipMinBytes: Infinity };
    await new Influx1Engine({ ...common, url: config.influx1Url!, database: 'switchyard' }).writeLines(
      body,
      AbortSignal.timeout(5000),
    );
    const influx2 = new Influx2Engine({
      ...common,
      url: config.influx2Url!,
      token: '',
      org: 'o',
      bucket: 'b',
    });
    await influx2.writeLines(body, AbortSignal.timeout(5000));
    await influx2.close();
    const want: HourlyStats[] = [
      {
        site,
        device: 'bsu-1',
        hour: hourText(t0),
        count: 10,
        fields: {
          SoC: { count: 5, min: 40, max: 48, sum: 220 },
          W: { count: 3, min: -200, max: 0, sum: -300 },
        },
      },
    ];
    for (const reader of readers) {
      const got = await reader.hourlyStats({
        sinceMs: hourMs,
        untilMs: hourMs + HOUR,
        site,
        measurement: Measurement.telemetry,
        fields: ['SoC', 'W', 'nope'],
      });
      assert.deepEqual(got, want, reader.engine);
    }
  });

  test('measurements without a field every point carries need a countField', async () => {
    for (const reader of readers) {
      await assert.rejects(
        reader.countPoints({ sinceMs: startMs, untilMs, measurement: Measurement.telemetryString }),
        /telemetry_string has no field every point carries/,
      );
      // Two string rows on every fifth reading: 12 readings an hour.
      const rows = await reader.countPoints({
        sinceMs: startMs,
        untilMs,
        site: 'rd-north',
        measurement: Measurement.telemetryString,
        countField: 'SoC',
      });
      assert.deepEqual(
        rows.map((r) => r.count),
        [72, 72, 72],
        reader.engine,
      );
      await assert.rejects(
        reader.countPoints({ sinceMs: untilMs, untilMs, measurement: Measurement.telemetry }),
        RangeError,
      );
    }
  });

  test('a server error is an EngineReadError with the status and the server’s words', async () => {
    const missing = createEngineReader('influx1', { ...config, influx1Database: 'nope' });
    await assert.rejects(
      missing.countPoints({ sinceMs: startMs, untilMs, measurement: Measurement.telemetry }),
      (err) => {
        assert.ok(err instanceof EngineReadError);
        assert.match(
          err.message,
          /^influx1 query at http:\/\/127\.0\.0\.1:\d+ db=nope: database not found: nope$/,
        );
        return true;
      },
    );
    // Text has no sum: InfluxDB refuses the query, and says why.
    await assert.rejects(
      readers[0]!.hourlyStats({
        sinceMs: startMs,
        untilMs,
        measurement: Measurement.telemetry,
        fields: ['ac_InvSt'],
      }),
      /unsupported .* iterator type/,
    );
    // VictoriaMetrics' reader pointed at InfluxDB, which has no such API.
    const wrong = createEngineReader('influx2', { ...config, influx2Url: config.influx1Url });
    await assert.rejects(
      wrong.countPoints({ sinceMs: startMs, untilMs, measurement: Measurement.telemetry }),
      (err) => {
        assert.ok(err instanceof EngineReadError);
        assert.equal(err.status, 404);
        assert.match(err.message, /: HTTP 404: 404 page not found$/);
        return true;
      },
    );
    const refused = createEngineReader('influx1', {
      ...config,
      influx1Url: `http://127.0.0.1:${await freePort()}`,
    });
    await assert.rejects(
      refused.listFields({ measurement: 'telemetry', sinceMs: startMs, untilMs }),
      (err) => {
        assert.ok(err instanceof EngineReadError);
        assert.equal(err.status, undefined);
        assert.match(err.message, /ECONNREFUSED/);
        return true;
      },
    );
  });

  test('a read gives up after its timeout, and a cancelled one rejects with the reason', async () => {
    // A server that takes the request and never answers, as a wedged database would.
    const silent = createServer(() => {});
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(silent.address() as AddressInfo).port}`;
      for (const sink of ['influx1', 'influx2'] as const) {
        const reader = createEngineReader(
          sink,
          { ...config, influx1Url: url, influx2Url: url },
          { requestTimeoutMs: 300 },
        );
        await assert.rejects(
          reader.countPoints({ sinceMs: startMs, untilMs, measurement: 'telemetry' }),
          (err) => {
            assert.ok(err instanceof EngineReadError, String(err));
            assert.match(err.message, /no answer within 300 ms$/);
            return true;
          },
        );
        const controller = new AbortController();
        const stopping = new Error('stopping');
        setTimeout(() => controller.abort(stopping), 50);
        await assert.rejects(
          reader.countPoints({
            sinceMs: startMs,
            untilMs,
            measurement: 'telemetry',
            signal: controller.signal,
          }),
          (err) => err === stopping,
        );
      }
    } finally {
      silent.closeAllConnections();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  });
});

describe('seriesSelector', () => {
  test('tells a measurement’s fields from those of measurements whose names begin alike', () => {
    assert.equal(
      seriesSelector('telemetry', ['SoC', 'W'], { site: 'a"b' }),
      '{__name__=~"telemetry_(SoC|W)",string="",module="",alarm="",severity="",site="a\\"b"}',
    );
    assert.equal(
      seriesSelector('telemetry_string', 'all'),
      '{__name__=~"telemetry_string_.+",string!="",module="",alarm="",severity=""}',
    );
    assert.equal(seriesSelector('odd.name', ['a+b']), '{__name__=~"odd\\\\.name_(a\\\\+b)"}');
  });
});
