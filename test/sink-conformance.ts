/**
 * The conformance suite every cloud Sink passes against its real server (cloud/sink.ts has the
 * contract). It checks, by reading back from the server itself:
 *
 * - a batch written twice changes nothing the second time (exact records and values),
 * - an empty batch resolves and writes nothing,
 * - a device payload that does not decode is rejected with a reason (or, for a sink that keeps
 *   everything, kept), and the rest of its batch is written,
 * - with the server killed mid-stream, writes throw transient errors (never PermanentSinkError)
 *   and readiness says not ready; once it is back, everything the sink acknowledged is there.
 *
 * Adding a sink: write an adapter and call `sinkConformance` from a `test/sinks-<name>.test.ts`:
 *
 *   sinkConformance('monitor sink (Redis)', async () => {
 *     const servers = new TestServers('sink-redis');
 *     let redis = await servers.redis();
 *     const sink = createMonitorSink({ redisUrl: redis.url }, silentLogger);
 *     await sink.open();
 *     return {
 *       sink,
 *       // What the store holds for one site, canonical (sorted) and comparable with deepEqual.
 *       readBack: (site) => readRedisState(redis.url, site),
 *       // What readBack must return once these (accepted) messages are durable.
 *       expected: (messages) => latestStatePerDevice(messages),
 *       rejectsUndecodable: true,
 *       kill: async () => {
 *         await killServer(redis);
 *         return async () => void (redis = await servers.restart(redis));
 *       },
 *       stop: () => servers.stopAll(),
 *     };
 *   });
 *
 * Every test uses its own site id, so `readBack(site)` sees only that test's data. Messages are
 * real device payloads (fixture below) with device times within the last hour, which every store
 * here accepts (VictoriaMetrics refuses points older than its retention or in the future).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { PermanentSinkError, type Sink, type SinkMessage } from '../cloud/sink.ts';
import { Header, messageId, schemaTag, subjectFor, type DeviceKind } from '../schemas/index.ts';
import { waitFor } from './support/servers.ts';

/** A sink started against its own real server, with what the suite needs to check it. */
export interface SinkUnderTest {
  /** Opened and ready. The suite closes it at the end. */
  sink: Sink;
  /** Everything the store holds for `site`, in a canonical order, comparable with deepEqual. */
  readBack(site: string): Promise<unknown[]>;
  /** What `readBack` must return once `messages` (all accepted ones, in order) are durable. */
  expected(messages: readonly SinkMessage[]): unknown[];
  /** True if a device payload that does not decode is rejected; false if the sink keeps it. */
  rejectsUndecodable: boolean;
  /** Stops the server abruptly; resolves to a function that starts it again (same port, same data). */
  kill(): Promise<() => Promise<void>>;
  /** Stops every server the adapter started. */
  stop(): Promise<void>;
}

let streamSeq = 0;

/** One stream message as the runner hands it to a sink. */
export function sinkMessage(site: string, device: string, kind: string, payload: unknown): SinkMessage {
  const body = payload as { seq?: number; ts?: number };
  const seq = ++streamSeq;
  const deviceKind = kind as DeviceKind;
  return {
    seq,
    subject: subjectFor(site, device, kind as Parameters<typeof subjectFor>[2]),
    site,
    device,
    kind,
    storedAtMs: Date.now(),
    headers: {
      [Header.msgId]: messageId(site, device, kind, body.seq ?? seq, body.ts ?? 0),
      [Header.site]: site,
      [Header.schema]: schemaTag(deviceKind),
    },
    payload: new TextEncoder().encode(typeof payload === 'string' ? payload : JSON.stringify(payload)),
    deliveryCount: 1,
  };
}

/**
 * `count` readings of two devices of `site`, cycling telemetry (with strings, modules and AC),
 * status and event, one second apart in device time, the first at `startMs`.
 */
export function deviceMessages(site: string, count: number, startMs = Date.now() - 3_600_000): SinkMessage[] {
  const messages: SinkMessage[] = [];
  for (let i = 0; i < count; i++) {
    const device = `bsu-${(i % 2) + 1}`;
    const ts = startMs + i * 1000;
    const kind = (['telemetry', 'status', 'event'] as const)[i % 3]!;
    messages.push(sinkMessage(site, device, kind, devicePayload(kind, i, ts)));
  }
  return messages;
}

/** A valid payload of `kind` whose values vary with `i`. */
export function devicePayload(kind: DeviceKind, i: number, ts: number): Record<string, unknown> {
  switch (kind) {
    case 'telemetry':
      return {
        ts,
        seq: i,
        SoC: 50 + (i % 50) / 2,
        SoH: 97.5,
        V: 768.25 + i,
        A: -12.5,
        W: -9600 - i,
        NCyc: 412,
        strings: [
          { Idx: 1, SoC: 50.5, A: -6.25, V: 768.5 },
          { Idx: 2, SoC: 49.5, A: -6.25, ConFail: 'NO_FAILURE' },
        ],
        modules: [{ Str: 1, Idx: 1, ModSoC: 50.5, ModCellTmpMax: 29.5 }],
        ac: { W: -9800, PF: -0.995, Hz: 50.01, InvSt: 'RUNNING', TotWhInj: 1_250_000 + i },
      };
    case 'status':
      return {
        ts,
        seq: i,
        State: 'CONNECTED',
        ChaSt: 'CHARGING',
        LocRemCtl: 'REMOTE',
        Hb: i,
        firmware: '2.4.1',
      };
    case 'event':
      return { ts, seq: i, alarm: 'OVER_TEMP_WARNING', action: i % 2 === 0 ? 'raised' : 'cleared' };
  }
}

/** Writes `batch` the way the runner does: again and again while it fails transiently. */
async function writeUntilAccepted(
  sink: Sink,
  batch: readonly SinkMessage[],
  timeoutMs: number,
): Promise<{ failures: unknown[] }> {
  const failures: unknown[] = [];
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const result = await sink.write(batch, AbortSignal.timeout(10_000));
      assert.deepEqual(result.rejected, [], 'valid messages must not be rejected');
      return { failures };
    } catch (err) {
      if (err instanceof PermanentSinkError) throw err;
      failures.push(err);
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

let siteCounter = 0;
const freshSite = (): string => `conf-${process.pid}-${++siteCounter}`;

/** Defines the conformance tests of one sink; `start` runs once, before them. */
export function sinkConformance(name: string, start: () => Promise<SinkUnderTest>): void {
  describe(`${name} keeps the Sink contract`, () => {
    let t: SinkUnderTest;
    before(async () => {
      t = await start();
    });
    after(async () => {
      await t?.sink.close();
      await t?.stop();
    });

    const settled = async (site: string, messages: readonly SinkMessage[]): Promise<void> => {
      const want = t.expected(messages);
      let got: unknown[] = [];
      // Some stores make writes visible to reads a moment later; durable is not the same as searchable.
      await waitFor(
        `${site} to hold what was written`,
        async () => {
          got = await t.readBack(site);
          return got.length >= want.length;
        },
        10_000,
        200,
      ).catch(() => undefined);
      assert.deepEqual(got, want);
    };

    test('writes a batch, and the same batch again changes nothing', async () => {
      const site = freshSite();
      const batch = deviceMessages(site, 12);
      assert.deepEqual(await t.sink.write(batch, AbortSignal.timeout(10_000)), { rejected: [] });
      await settled(site, batch);
      const first = await t.readBack(site);
      assert.deepEqual(await t.sink.write(batch, AbortSignal.timeout(10_000)), { rejected: [] });
      assert.deepEqual(await t.readBack(site), first);
    });

    test('an empty batch resolves and writes nothing', async () => {
      const site = freshSite();
      assert.deepEqual(await t.sink.write([], AbortSignal.timeout(10_000)), { rejected: [] });
      assert.deepEqual(await t.readBack(site), []);
    });

    test('a payload that does not decode is rejected with a reason; the rest of the batch is written', async () => {
      const site = freshSite();
      const good = deviceMessages(site, 6);
      const bad = sinkMessage(site, 'bsu-1', 'telemetry', { ts: Date.now() - 1000, seq: 1, SoC: 'full' });
      const batch = [...good.slice(0, 3), bad, ...good.slice(3)];
      const result = await t.sink.write(batch, AbortSignal.timeout(10_000));
      if (t.rejectsUndecodable) {
        assert.equal(result.rejected.length, 1);
        assert.equal(result.rejected[0]!.seq, bad.seq);
        assert.match(result.rejected[0]!.reason, /SoC/);
        await settled(site, good);
      } else {
        assert.deepEqual(result.rejected, []);
        await settled(site, batch);
      }
    });

    test('with the server killed mid-stream, writes fail transiently and nothing acknowledged is lost', async () => {
      const site = freshSite();
      const batches = Array.from({ length: 8 }, (_, b) =>
        deviceMessages(site, 6, Date.now() - 3_000_000 + b * 6000),
      );
      const failures: unknown[] = [];
      let restart: Promise<void> | undefined;
      for (const [b, batch] of batches.entries()) {
        if (b === 3) {
          const startAgain = await t.kill();
          const readiness = await t.sink.readiness();
          assert.equal(readiness.ready, false, 'readiness while the server is down');
          assert.ok(readiness.reasons?.length, 'readiness gives a reason');
          // Down for a while, then back, while the writes keep being tried.
          restart = new Promise((r) => setTimeout(r, 1500)).then(startAgain);
        }
        failures.push(...(await writeUntilAccepted(t.sink, batch, 60_000)).failures);
      }
      await restart;
      assert.ok(failures.length > 0, 'some write failed while the server was down');
      for (const err of failures) assert.ok(!(err instanceof PermanentSinkError));
      assert.deepEqual(await t.sink.readiness(), { ready: true });
      await settled(site, batches.flat());
    });

    test('closes, opens again and writes', async () => {
      const site = freshSite();
      await t.sink.close();
      await t.sink.open();
      const batch = deviceMessages(site, 3);
      assert.deepEqual(await t.sink.write(batch, AbortSignal.timeout(10_000)), { rejected: [] });
      await settled(site, batch);
    });
  });
}
