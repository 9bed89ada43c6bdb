/**
 * `migrate verify`'s comparison: first the pure part (what is a mismatch, with what tolerance),
 * then old engine against new one on real servers, InfluxDB 1.x and VictoriaMetrics holding the
 * same readings written through the real ingest sinks; then with points deleted from one of them
 * through its own API, as an operator's mistake or a lost write would leave them.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { SinkMessage } from '../cloud/sink.ts';
import type { IngestSinkConfig } from '../cloud/ingest/config.ts';
import {
  createEngineReader,
  type EngineReader,
  type FieldStats,
  type HourlyStats,
} from '../cloud/ingest/readers/index.ts';
import { compareHourlyStats, fieldsToCompare, verifyEngines, type Mismatch } from '../cloud/ingest/verify.ts';
import type { RunningServer } from '../stack/server-process.ts';
import { HOUR_MS, hourText, ingestConfig, ingestIntoBoth, stats, type Reading } from './support/engines.ts';
import { TestServers } from './support/servers.ts';
import { sinkMessage } from './support/sink-conformance.ts';

const HOUR = HOUR_MS;
const MINUTE = 60_000;

// ---------------------------------------------------------------------------------------------
// The comparison alone

const fs = (count: number, min: number, max: number, sum: number): FieldStats => ({ count, min, max, sum });
const row = (
  device: string,
  hour: string,
  count: number,
  fields: Record<string, FieldStats> = {},
): HourlyStats => ({
  site: 'site-1',
  device,
  hour,
  count,
  fields,
});

describe('compareHourlyStats', () => {
  const fields = ['SoC', 'W'];
  const soc = fs(3600, 20, 80, 180_000.25);
  const w = fs(3600, -9600, 9600, 1234.5);

  test('identical rows: every row compared, no mismatch', () => {
    const rows = [
      row('bsu-1', '2026-03-01T10', 3600, { SoC: soc, W: w }),
      row('bsu-1', '2026-03-01T11', 3600, { SoC: soc }),
    ];
    assert.deepEqual(compareHourlyStats(rows, structuredClone(rows), { fields }), {
      compared: 2,
      mismatches: [],
    });
    assert.deepEqual(compareHourlyStats([], [], { fields }), { compared: 0, mismatches: [] });
  });

  test('a row one side lacks is one count mismatch, 0 on the side that lacks it', () => {
    const a = row('bsu-1', '2026-03-01T10', 3600, { SoC: soc });
    const b = row('bsu-2', '2026-03-01T10', 1800, { SoC: soc });
    assert.deepEqual(compareHourlyStats([a, b], [a], { fields }), {
      compared: 2,
      mismatches: [
        {
          site: 'site-1',
          device: 'bsu-2',
          hour: '2026-03-01T10',
          field: 'count',
          stat: 'count',
          old: 1800,
          new: 0,
          missing: 'new',
        },
      ],
    });
    assert.deepEqual(compareHourlyStats([a], [a, b], { fields }).mismatches, [
      {
        site: 'site-1',
        device: 'bsu-2',
        hour: '2026-03-01T10',
        field: 'count',
        stat: 'count',
        old: 0,
        new: 1800,
        missing: 'old',
      },
    ]);
  });

  test('every statistic that differs is listed, with both sides, the point count first', () => {
    const old = row('bsu-1', '2026-03-01T10', 3600, { SoC: soc, W: w });
    const changed = row('bsu-1', '2026-03-01T10', 3599, {
      SoC: fs(3599, 20.5, 80, 179_960.25),
      W: fs(3600, -9600, 9601, 1235.5),
    });
    const at = { site: 'site-1', device: 'bsu-1', hour: '2026-03-01T10' };
    assert.deepEqual(compareHourlyStats([old], [changed], { fields }).mismatches, [
      { ...at, field: 'count', stat: 'count', old: 3600, new: 3599 },
      { ...at, field: 'SoC', stat: 'count', old: 3600, new: 3599 },
      { ...at, field: 'SoC', stat: 'min', old: 20, new: 20.5 },
      { ...at, field: 'SoC', stat: 'sum', old: 180_000.25, new: 179_960.25 },
      { ...at, field: 'W', stat: 'max', old: 9600, new: 9601 },
      { ...at, field: 'W', stat: 'sum', old: 1234.5, new: 1235.5 },
    ]);
  });

  test('a field one side has no value of is one count mismatch; fields not asked for are not compared', () => {
    const old = row('bsu-1', '2026-03-01T10', 3600, { SoC: soc, W: w, V: fs(1, 1, 1, 1) });
    const without = row('bsu-1', '2026-03-01T10', 3600, { SoC: soc });
    assert.deepEqual(compareHourlyStats([old], [without], { fields }).mismatches, [
      {
        site: 'site-1',
        device: 'bsu-1',
        hour: '2026-03-01T10',
        field: 'W',
        stat: 'count',
        old: 3600,
        new: 0,
        missing: 'new',
      },
    ]);
  });

  test('min, max and sums agree within the relative tolerance, scaled by the magnitudes summed', () => {
    const three = [...fields, 'x'];
    const old = row('bsu-1', '2026-03-01T10', 3600, {
      SoC: soc,
      // Power that charges and discharges sums to almost nothing: its rounding error is relative to
      // the magnitudes added (3600 × 9600), not to the sum.
      W: fs(3600, -9600, 9600, 1e-10),
      x: fs(2, 0.30000000000000004, 1234.5678901234567, 0.30000000000000004 + 1234.5678901234567),
    });
    const near = row('bsu-1', '2026-03-01T10', 3600, {
      SoC: { ...soc, sum: soc.sum * (1 + 1e-12) },
      W: fs(3600, -9600, 9600, 3e-9),
      // VictoriaMetrics keeps about 14 significant digits.
      x: fs(2, 0.3, 1234.5678901234, 0.3 + 1234.5678901234),
    });
    assert.deepEqual(compareHourlyStats([old], [near], { fields: three }).mismatches, []);
    const far = row('bsu-1', '2026-03-01T10', 3600, {
      SoC: { ...soc, sum: soc.sum * (1 + 1e-8) },
      W: fs(3600, -9600, 9600, 0.5),
      x: old.fields.x!,
    });
    const differing = (a: HourlyStats, b: HourlyStats, relativeTolerance?: number): string[] =>
      compareHourlyStats([a], [b], { fields: three, relativeTolerance }).mismatches.map(
        (m) => `${m.field}.${m.stat}`,
      );
    assert.deepEqual(differing(old, far), ['SoC.sum', 'W.sum']);
    assert.deepEqual(differing(old, near, 0), ['SoC.sum', 'W.sum', 'x.min', 'x.max', 'x.sum']);
  });

  test('mismatches are sorted by site, device and hour; a row twice from one reader is an error', () => {
    const rows = [
      row('bsu-2', '2026-03-01T09', 1),
      row('bsu-1', '2026-03-01T11', 1),
      row('bsu-1', '2026-03-01T10', 1),
    ];
    assert.deepEqual(
      compareHourlyStats(rows, [], { fields }).mismatches.map((m) => `${m.device} ${m.hour}`),
      ['bsu-1 2026-03-01T10', 'bsu-1 2026-03-01T11', 'bsu-2 2026-03-01T09'],
    );
    assert.throws(
      () => compareHourlyStats([rows[0]!, rows[0]!], [], { fields }),
      /old engine returned site-1 bsu-2 2026-03-01T09 twice/,
    );
  });

  test('fieldsToCompare: every field either engine has, less what either stores as text', () => {
    assert.deepEqual(
      fieldsToCompare(
        [
          { name: 'SoC', type: 'number' },
          { name: 'ac_InvSt', type: 'string' },
          { name: 'seq', type: 'number' },
        ],
        [
          { name: 'SoC', type: 'number' },
          { name: 'ac_InvSt', type: 'number' },
          { name: 'W', type: 'number' },
        ],
      ),
      ['SoC', 'W', 'seq'],
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Old engine against new one

/**
 * A reading a minute of every device of `sites` × bsu-1..3, from two minutes before `startMs` to
 * two minutes after three hours later. Bank values are multiples of 1/4 (exact sums); `ac.PF`,
 * which is not, leaves the engines' sums to agree within the tolerance.
 */
function fleet(sites: string[], startMs: number): { readings: Reading[]; messages: SinkMessage[] } {
  const readings: Reading[] = [];
  const messages: SinkMessage[] = [];
  sites.forEach((site, s) =>
    ['bsu-1', 'bsu-2', 'bsu-3'].forEach((device, d) => {
      for (let i = 0, ts = startMs - 2 * MINUTE; ts <= startMs + 3 * HOUR + 2 * MINUTE; i++, ts += MINUTE) {
        const SoC = 15 + ((i * 13 + d * 7 + s * 3) % 300) / 4;
        const W = (((i * 41 + d * 97) % 3000) - 1500) / 4;
        readings.push({ site, device, ts, SoC, W });
        messages.push(
          sinkMessage(site, device, 'telemetry', {
            ts,
            seq: i,
            SoC,
            V: 760 + (i % 8) / 4,
            A: W / 8,
            W,
            ac: { W: W + 12.5, PF: 0.9 + (i % 10) / 101, InvSt: 'RUNNING' },
          }),
        );
      }
    }),
  );
  return { readings, messages };
}

describe('verifyEngines: InfluxDB 1.x (old) against VictoriaMetrics (new)', () => {
  const servers = new TestServers('migrate-verify');
  let vm: RunningServer;
  let influxdb: RunningServer;
  let config: IngestSinkConfig;
  let oldReader: EngineReader;
  let newReader: EngineReader;
  // Each test has its own sites and its own three hours, all ended at least an hour ago.
  const hourNow = Math.floor(Date.now() / HOUR) * HOUR;

  before(async () => {
    [vm, influxdb] = await Promise.all([servers.victoriaMetrics(), servers.influxdb()]);
    config = ingestConfig(vm, influxdb);
    oldReader = createEngineReader('influx1', config);
    newReader = createEngineReader('influx2', config);
  });
  after(() => servers.stopAll());

  /** InfluxQL DELETE of a device's telemetry in [sinceMs, untilMs). */
  async function deleteFromInfluxdb(
    site: string,
    device: string,
    sinceMs: number,
    untilMs: number,
  ): Promise<void> {
    const q =
      `DELETE FROM "telemetry" WHERE "site" = '${site}' AND "device" = '${device}' ` +
      `AND time >= ${sinceMs}ms AND time < ${untilMs}ms`;
    const res = await fetch(`${influxdb.url}/query?db=switchyard`, {
      method: 'POST',
      body: new URLSearchParams({ q }),
    });
    const body = await res.text();
    assert.equal(res.status, 200, body);
    assert.doesNotMatch(body, /error/);
  }

  /** VictoriaMetrics deletes whole series: every sample of the device, whatever its time. */
  async function deleteFromVictoriaMetrics(site: string, device: string): Promise<void> {
    const res = await fetch(`${vm.url}/api/v1/admin/tsdb/delete_series`, {
      method: 'POST',
      body: new URLSearchParams({ 'match[]': `{site="${site}",device="${device}"}` }),
    });
    assert.equal(res.status, 204, await res.text());
  }

  test('reports no mismatch when both engines hold the same readings, for SoC and W or every field', async () => {
    const startMs = hourNow - 5 * HOUR;
    const window = { sinceMs: startMs, untilMs: startMs + 3 * HOUR };
    await ingestIntoBoth(config, fleet(['mv-same-1', 'mv-same-2'], startMs).messages);
    assert.deepEqual(await verifyEngines(oldReader, newReader, window), {
      measurement: 'telemetry',
      fields: ['SoC', 'W'],
      compared: 2 * 3 * 3,
      mismatches: [],
    });
    // Text (ac_InvSt) is left out: InfluxDB keeps it as text, VictoriaMetrics as 0.
    assert.deepEqual(await verifyEngines(oldReader, newReader, { ...window, allFields: true }), {
      measurement: 'telemetry',
      fields: ['A', 'SoC', 'V', 'W', 'ac_InvSt_code', 'ac_PF', 'ac_W', 'seq'],
      compared: 2 * 3 * 3,
      mismatches: [],
    });
  });

  test('after a device is deleted from one engine, reports exactly that device and those hours', async () => {
    const startMs = hourNow - 10 * HOUR;
    const window = { sinceMs: startMs, untilMs: startMs + 3 * HOUR };
    const hours = [0, 1, 2].map((h) => hourText(startMs + h * HOUR));
    await ingestIntoBoth(config, fleet(['mv-gap-1', 'mv-gap-2'], startMs).messages);
    assert.deepEqual((await verifyEngines(oldReader, newReader, window)).mismatches, []);

    // The new engine loses a device entirely; the old one loses another device's last two hours.
    await deleteFromVictoriaMetrics('mv-gap-1', 'bsu-2');
    await deleteFromInfluxdb('mv-gap-2', 'bsu-3', startMs + HOUR, startMs + 3 * HOUR);

    const lostInNew = (hour: string): Mismatch => ({
      site: 'mv-gap-1',
      device: 'bsu-2',
      hour,
      field: 'count',
      stat: 'count',
      old: 60,
      new: 0,
      missing: 'new',
    });
    const lostInOld = (hour: string): Mismatch => ({
      site: 'mv-gap-2',
      device: 'bsu-3',
      hour,
      field: 'count',
      stat: 'count',
      old: 0,
      new: 60,
      missing: 'old',
    });
    assert.deepEqual(await verifyEngines(oldReader, newReader, window), {
      measurement: 'telemetry',
      fields: ['SoC', 'W'],
      compared: 2 * 3 * 3,
      mismatches: [...hours.map(lostInNew), lostInOld(hours[1]!), lostInOld(hours[2]!)],
    });
    // Narrowed to a site, only that site's losses.
    assert.deepEqual(await verifyEngines(oldReader, newReader, { ...window, site: 'mv-gap-2' }), {
      measurement: 'telemetry',
      fields: ['SoC', 'W'],
      compared: 3 * 3,
      mismatches: [lostInOld(hours[1]!), lostInOld(hours[2]!)],
    });
  });

  test('half an hour missing from one engine shows as that hour’s counts and the statistics it changed', async () => {
    const startMs = hourNow - 15 * HOUR;
    const window = { sinceMs: startMs, untilMs: startMs + 3 * HOUR };
    const { readings, messages } = fleet(['mv-part-1'], startMs);
    await ingestIntoBoth(config, messages);
    await deleteFromInfluxdb('mv-part-1', 'bsu-1', startMs + 30 * MINUTE, startMs + HOUR);

    // What each side holds of bsu-1's first hour, from the readings themselves.
    const hourOne = readings.filter((r) => r.device === 'bsu-1' && r.ts >= startMs && r.ts < startMs + HOUR);
    const kept = hourOne.filter((r) => r.ts < startMs + 30 * MINUTE);
    const at = { site: 'mv-part-1', device: 'bsu-1', hour: hourText(startMs) };
    const want: Mismatch[] = [{ ...at, field: 'count', stat: 'count', old: 30, new: 60 }];
    for (const field of ['SoC', 'W'] as const) {
      const o = stats(kept.map((r) => r[field]));
      const n = stats(hourOne.map((r) => r[field]));
      for (const stat of ['count', 'min', 'max', 'sum'] as const)
        if (o[stat] !== n[stat]) want.push({ ...at, field, stat, old: o[stat], new: n[stat] });
    }
    assert.ok(
      want.some((m) => m.stat === 'sum'),
      'the fixture changes the sums',
    );
    assert.deepEqual(await verifyEngines(oldReader, newReader, window), {
      measurement: 'telemetry',
      fields: ['SoC', 'W'],
      compared: 3 * 3,
      mismatches: want,
    });
  });
});
