/** InfluxDB 1.x as tests read and prepare it: InfluxQL over /query, line protocol over /write. */
import assert from 'node:assert/strict';

export interface InfluxQLResult {
  results: {
    error?: string;
    series?: { name: string; tags?: Record<string, string>; values: unknown[][] }[];
  }[];
}

/** Runs one InfluxQL statement against database `db`; asserts HTTP 200. */
export async function influxQuery(url: string, db: string, q: string): Promise<InfluxQLResult> {
  const res = await fetch(`${url}/query?db=${encodeURIComponent(db)}&epoch=ms`, {
    method: 'POST',
    body: new URLSearchParams({ q }),
  });
  assert.equal(res.status, 200, `${q}: ${res.status}`);
  return (await res.json()) as InfluxQLResult;
}

/** The single number a `SELECT count(…)` answers, 0 when there is nothing. */
export async function influxCount(url: string, db: string, q: string): Promise<number> {
  const body = await influxQuery(url, db, q);
  return Number(body.results[0]?.series?.[0]?.values[0]?.[1] ?? 0);
}

/** Points of `telemetry` (each carries `SoC`). */
export const telemetryCount = (url: string, db: string): Promise<number> =>
  influxCount(url, db, 'SELECT count(SoC) FROM telemetry');

export async function createDatabase(url: string, db: string): Promise<void> {
  await influxQuery(url, db, `CREATE DATABASE "${db}"`);
}

/** Writes line protocol (ms precision); asserts 204. */
export async function influxWrite(url: string, db: string, lines: string): Promise<void> {
  const res = await fetch(`${url}/write?db=${encodeURIComponent(db)}&precision=ms`, {
    method: 'POST',
    body: lines,
  });
  assert.equal(res.status, 204, await res.text());
}
