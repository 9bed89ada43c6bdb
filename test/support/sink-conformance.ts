/**
 * The conformance suite every cloud Sink passes against its real server (cloud/sink.ts has the
 * contract). It checks, by reading back from the server itself:
 *
 * - a batch written twice changes nothing the second time (exact records and values),
 * - an empty batch resolves and writes nothing,
 * - a device payload that does not decode is rejected with a reason, and the rest of its batch is
 *   written — or, for a sink that declares it has no bad data (`noBadData`, with the reason, which
 *   becomes part of the test's name), kept with the rest of its batch, bytes that are not even
 *   UTF-8 included,
 * - with the server killed mid-stream, writes throw transient errors (never PermanentSinkError)
 *   and readiness says not ready; once it is back, everything the sink acknowledged is there.
 *
 * Adding a sink: write an adapter and call `sinkConformance` from a `test/sinks-<name>.test.ts`:
 *
 *   sinkConformance('influx2 sink (VictoriaMetrics)', async () => {
 *     const servers = new TestServers('sink-influx2');
 *     let vm = await servers.victoriaMetrics();
 *     const sink = createInflux2Sink(settingsFor(vm), silentLogger);
 *     await sink.open();
 *     return {
 *       sink,
 *       // What the store holds for one site, canonical (sorted) and comparable with deepEqual.
 *       readBack: (site) => readVictoriaMetrics(vm.url, site),
 *       // What readBack must return once these (accepted) messages are durable.
 *       expected: (messages) => samplesOf(messages),
 *       rejectsUndecodable: true,
 *       kill: async () => {
 *         await stopServer(vm);
 *         return async () => void (vm = await servers.restart(vm));
 *       },
 *       stop: () => servers.stopAll(),
 *     };
 *   });
 *
 * A sink for which no input is bad data says so, with why (test/sinks-archive-monitor.test.ts):
 *
 *   sinkConformance('archive sink (s3rver)', start, { noBadData: 'it archives every payload as sent' });
 *
 * Every test uses its own site id, so `readBack(site)` sees only that test's data. Messages are
 * real device payloads (fixture below) with device times within the last hour, which every store
 * here accepts (VictoriaMetrics refuses points older than its retention or in the future).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { PermanentSinkError, type Sink, type SinkMessage } from '../../cloud/sink.ts';
import { deadline, sleep } from '../../lib/timers.ts';
import { Header, messageId, schemaTag, subjectFor, type DeviceKind } from '../../schemas/index.ts';
import { waitFor } from './servers.ts';

/** A sink started against its own real server, with what the suite needs to check it. */
export interface SinkUnderTest {
  /** Opened and ready. The suite closes it at the end. */
  sink: Sink;
  /** Everything the store holds for `site`, in a canonical order, comparable with deepEqual. */
  readBack(site: string): Promise<unknown[]>;
  /** What `readBack` must return once `messages` (all accepted ones, in order) are durable. */
  expected(messages: readonly SinkMessage[]): unknown[];
  /**
   * True if a device payload that does not decode is rejected; false if the sink keeps it, which
   * it must then declare with `noBadData` (ConformanceOptions) and the reason.
   */
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
  const end = deadline(timeoutMs);
  for (;;) {
    try {
      const result = await sink.write(batch, AbortSignal.timeout(10_000));
      assert.deepEqual(result.rejected, [], 'valid messages must not be rejected');
      return { failures };
    } catch (err) {
      if (err instanceof PermanentSinkError) throw err;
      failures.push(err);
      if (end.expired()) throw err;
      await sleep(200);
    }
  }
}

let siteCounter = 0;
const freshSite = (): string => `conf-${process.pid}-${++siteCounter}`;

/** What a sink declares about itself when its suite is defined (test names depend on it). */
export interface ConformanceOptions {
  /**
   * No input is bad data for this sink, and why (e.g. the archive keeps every payload as sent).
   * The bad-data case then checks that payloads that do not decode, or are not UTF-8, are kept
   * with the rest of their batch, instead of expecting a rejection.
   */
  noBadData?: string;
}

/** Defines the conformance tests of one sink; `start` runs once, before them. */
export function sinkConformance(
  name: string,
  start: () => Promise<SinkUnderTest>,
  options: ConformanceOptions = {},
): void {
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

    if (options.noBadData !== undefined) {
      test(`has no bad data (${options.noBadData}): payloads that do not decode or are not UTF-8 are kept with their batch`, async () => {
        assert.equal(t.rejectsUndecodable, false, 'a sink with no bad data rejects nothing');
        const site = freshSite();
        const good = deviceMessages(site, 6);
        const wrongType = sinkMessage(site, 'bsu-1', 'telemetry', {
          ts: Date.now() - 1000,
          seq: 1,
          SoC: 'full',
        });
        const notUtf8 = {
          ...sinkMessage(site, 'bsu-2', 'status', ''),
          payload: new Uint8Array([0xff, 0xfe, 0x7b, 0x00, 0xc3]),
        };
        const batch = [...good.slice(0, 3), wrongType, notUtf8, ...good.slice(3)];
        assert.deepEqual(await t.sink.write(batch, AbortSignal.timeout(10_000)), { rejected: [] });
        await settled(site, batch);
      });
    } else {
      test('a payload that does not decode is rejected with a reason; the rest of the batch is written', async () => {
        assert.ok(
          t.rejectsUndecodable,
          'a sink that keeps undecodable payloads declares it: sinkConformance(name, start, { noBadData: why })',
        );
        const site = freshSite();
        const good = deviceMessages(site, 6);
        const bad = sinkMessage(site, 'bsu-1', 'telemetry', { ts: Date.now() - 1000, seq: 1, SoC: 'full' });
        const batch = [...good.slice(0, 3), bad, ...good.slice(3)];
        const result = await t.sink.write(batch, AbortSignal.timeout(10_000));
        assert.equal(result.rejected.length, 1);
        assert.equal(result.rejected[0]!.seq, bad.seq);
        assert.match(result.rejected[0]!.reason, /SoC/);
        await settled(site, good);
      });
    }

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
          restart = sleep(1500).then(startAgain);
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
