/**
 * The simulated device clock: a point is its series and its time, so two readings of one device
 * must never carry the same `ts`, even when the wall clock has not moved between them.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SimClock, TrafficGenerator } from '../simulate/traffic.ts';

test('a burst on a frozen wall clock still gives each device strictly increasing times', () => {
  const frozenMs = Date.parse('2026-06-01T00:00:00.000Z');
  const g = new TrafficGenerator({
    devices: 3,
    devicePrefix: 'bsu',
    seed: 7,
    telemetryEveryMs: 200,
    statusEveryMs: 10_000,
    detailEvery: 0,
    clock: SimClock.wall,
    startTimeMs: frozenMs,
    invalidRatio: 0,
    now: () => frozenMs,
  });
  const last = new Map<string, number>();
  for (let i = 0; i < 300; i++) {
    const m = g.next();
    const ts = Date.parse((JSON.parse(m.payload.toString()) as { ts: string }).ts);
    assert.ok(ts > (last.get(m.device) ?? -Infinity), `${m.device} repeated or went back to ${ts}`);
    last.set(m.device, ts);
  }
  assert.equal(last.size, 3);
});
