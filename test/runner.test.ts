/**
 * The consumer runner against a real nats-server, with a tiny in-test sink (it tests the runner,
 * not a store). Every test has its own site token, durable and filter in one stream `BSU`.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  AckPolicy,
  jetstream,
  jetstreamManager,
  type JetStreamManager,
  type JsMsg,
} from '@nats-io/jetstream';
import { connect, headers, type NatsConnection } from '@nats-io/transport-node';
import { Registry } from 'prom-client';
import { DLQ_STREAM } from '../cloud/dlq.ts';
import { runConsumer, type ConsumerRun, type RunnerOptions } from '../cloud/runner.ts';
import { retryDelayMs } from '../cloud/runner-backoff.ts';
import { consumerFilter, coveringFilter, subjectMatches } from '../cloud/runner-filters.ts';
import { RunnerMetric } from '../cloud/runner-metrics.ts';
import { PermanentSinkError, type Sink, type SinkMessage, type WriteResult } from '../cloud/sink.ts';
import { silentLogger } from '../lib/log.ts';
import { sleep } from '../lib/timers.ts';
import { firstHeaderValues, wireHeaders } from '../lib/nats.ts';
import type { Readiness } from '../lib/ops.ts';
import { Header } from '../schemas/headers.ts';
import { stopServer, type RunningServer } from '../stack/server-process.ts';
import { natsConnect } from './support/jetstream.ts';
import { TestServers, waitFor } from './support/servers.ts';

/** A sink whose every write is decided by the test. */
class ScriptedSink implements Sink {
  readonly name = 'scripted';
  readonly writes: { at: number; batch: SinkMessage[] }[] = [];
  ready = true;
  /** Calls of readiness(): the runner polls it while it waits for the sink. */
  readinessChecks = 0;
  opened = 0;
  closed = 0;
  constructor(
    private readonly behave: (batch: SinkMessage[], n: number, signal: AbortSignal) => Promise<WriteResult>,
  ) {}
  async open(): Promise<void> {
    this.opened++;
  }
  write(batch: readonly SinkMessage[], signal: AbortSignal): Promise<WriteResult> {
    this.writes.push({ at: Date.now(), batch: [...batch] });
    return this.behave([...batch], this.writes.length, signal);
  }
  async readiness(): Promise<Readiness> {
    this.readinessChecks++;
    return this.ready ? { ready: true } : { ready: false, reasons: ['down in this test'] };
  }
  async close(): Promise<void> {
    this.closed++;
  }
  deliveriesOf(seq: number): SinkMessage[] {
    return this.writes.flatMap((w) => w.batch.filter((m) => m.seq === seq));
  }
}

const ok = async (): Promise<WriteResult> => ({ rejected: [] });

/** The value of a runner metric (one consumer per registry), or undefined before its first sample. */
const metricValue = async (registry: Registry, name: string): Promise<number | undefined> =>
  (await registry.getSingleMetric(name)!.get()).values[0]?.value;

/** A sink whose writes all hang until `release()`, then succeed. */
function heldSink(): { sink: ScriptedSink; release: () => void } {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const sink = new ScriptedSink(async () => {
    await gate;
    return { rejected: [] };
  });
  return { sink, release };
}

describe('runner helpers', () => {
  test('retry delays grow along backoffMs, capped by its last entry, jittered ±20%', () => {
    const backoff = [100, 200, 400];
    assert.deepEqual(
      [1, 2, 3, 4, 10].map((n) => retryDelayMs(backoff, n, 0.5)),
      [100, 200, 400, 400, 400],
    );
    assert.equal(retryDelayMs(backoff, 1, 0), 80);
    assert.equal(retryDelayMs(backoff, 1, 0.999999), 120);
  });

  test('several filters become one covering filter on nats-server 2.9, or are rejected', () => {
    assert.equal(coveringFilter(['bsu.*.*.telemetry', 'bsu.*.*.status']), 'bsu.*.*.*');
    assert.equal(coveringFilter(['bsu.s1.>', 'bsu.s2.>']), 'bsu.>');
    assert.equal(coveringFilter(['bsu.s1.a.telemetry', 'bsu.s1.>']), 'bsu.s1.>');
    assert.throws(() => coveringFilter(['bsu.>', 'other.>']), /share no leading token/);
    assert.deepEqual(consumerFilter(['bsu.>'], '2.9.10'), { server: { filter_subject: 'bsu.>' } });
    assert.deepEqual(consumerFilter(['a.b', 'a.c'], '2.10.4'), {
      server: { filter_subjects: ['a.b', 'a.c'] },
    });
    const kinds = consumerFilter(['bsu.*.*.telemetry', 'bsu.*.*.status'], '2.9.10');
    assert.deepEqual(kinds.server, { filter_subject: 'bsu.*.*.*' });
    assert.deepEqual(
      ['bsu.s.d.telemetry', 'bsu.s.d.status', 'bsu.s.d.event', 'bsu.s.telemetry'].map((s) =>
        kinds.clientSide!(s),
      ),
      [true, true, false, false],
    );
    assert.equal(subjectMatches('bsu.*.*.telemetry', 'bsu.s.d.telemetry'), true);
    assert.equal(subjectMatches('bsu.>', 'bsu'), false);
    assert.equal(subjectMatches('bsu.s.>', 'bsu.s.d.event'), true);
    assert.equal(subjectMatches('bsu.*.d', 'bsu.s.d.event'), false);
  });
});

describe('consumer runner', () => {
  const servers = new TestServers('runner');
  let nats: RunningServer;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  const running: { controller: AbortController; run: ConsumerRun }[] = [];

  before(async () => {
    nats = await servers.nats();
    nc = await connect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 250 });
    jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: 'BSU', subjects: ['bsu.>'] });
  });

  after(async () => {
    for (const r of running) r.controller.abort();
    await Promise.allSettled(running.map((r) => r.run.done));
    await nc?.close();
    await servers.stopAll();
  });

  /** Starts a runner for site token `site` (durable `t-<site>`); stop it with the returned controller. */
  function start(site: string, sink: Sink, extra: Partial<RunnerOptions> = {}) {
    const controller = new AbortController();
    const registry = new Registry();
    const run = runConsumer({
      nc,
      durable: `t-${site}`,
      filterSubjects: [`bsu.${site}.>`],
      ackWaitMs: 5_000,
      backoffMs: [200, 400, 800],
      batchSize: 50,
      maxAckPending: 200,
      fetchExpiresMs: 1_000,
      lagRefreshMs: 200,
      sink,
      log: silentLogger,
      registry,
      signal: controller.signal,
      ...extra,
    });
    running.push({ controller, run });
    return { controller, run, registry };
  }

  async function publish(site: string, count: number, kind = 'telemetry'): Promise<number[]> {
    const js = jetstream(nc);
    const seqs: number[] = [];
    for (let i = 1; i <= count; i++) {
      const h = headers();
      h.set(Header.site, site);
      h.set('X-Test', `n${i}`);
      const ack = await js.publish(`bsu.${site}.unit-${i % 3}.${kind}`, JSON.stringify({ n: i }), {
        headers: h,
      });
      seqs.push(ack.seq);
    }
    return seqs;
  }

  const consumerInfo = (site: string) => jsm.consumers.info('BSU', `t-${site}`);

  test("a stalled consumer's unacked messages are measured against the stream's limits, alerted, and evictions counted", async () => {
    // A server of its own, whose BSU has a count limit: at 1,000 stored, the oldest is evicted.
    const own = await natsConnect((await servers.nats()).url);
    const ownJsm = await jetstreamManager(own);
    await ownJsm.streams.add({ name: 'BSU', subjects: ['bsu.>'], max_msgs: 1000 });
    const { sink, release } = heldSink();
    const { registry, controller, run } = start('retain', sink, {
      nc: own,
      retentionCheckMs: 200,
      retentionAlertRatio: 0.5,
    });
    const gauge = async (name: string, labels: Record<string, string> = {}): Promise<number | undefined> =>
      (await registry.getSingleMetric(name)!.get()).values.find((v) =>
        Object.entries(labels).every(([k, x]) => v.labels[k] === x),
      )?.value;
    const js = jetstream(own);
    const send = async (count: number): Promise<void> => {
      for (let i = 0; i < count; i++) await js.publish('bsu.retain.unit.telemetry', JSON.stringify({ i }));
    };

    await send(400);
    await waitFor(
      '400 unacked: 0.4 of max_msgs',
      async () => (await gauge(RunnerMetric.retentionUsed, { limit: 'messages' })) === 0.4,
    );
    assert.equal(await gauge(RunnerMetric.retentionAlert), 0);
    await send(300);
    await waitFor(
      '700 unacked: 0.7 of max_msgs',
      async () => (await gauge(RunnerMetric.retentionUsed, { limit: 'messages' })) === 0.7,
    );
    assert.equal(await gauge(RunnerMetric.retentionAlert), 1);
    assert.equal(
      await gauge(RunnerMetric.retentionUsed, { limit: 'bytes' }),
      0,
      'no byte limit: not measured',
    );
    // 500 more: the stream keeps 1,000 and evicts the 200 oldest, none of them acked.
    await send(500);
    await waitFor('200 evictions counted', async () => (await gauge(RunnerMetric.evictedUnacked)) === 200);
    assert.equal((await ownJsm.streams.info('BSU')).state.first_seq, 201);

    release();
    await waitFor('every message acked, the alert off', async () => {
      const info = await ownJsm.consumers.info('BSU', 't-retain');
      return (
        info.num_pending + info.num_ack_pending === 0 && (await gauge(RunnerMetric.retentionAlert)) === 0
      );
    });
    assert.equal(await gauge(RunnerMetric.retentionUsed, { limit: 'messages' }), 0);
    assert.equal(await gauge(RunnerMetric.evictedUnacked), 200, 'evictions are counted once');
    controller.abort();
    await run.done;
    await own.close();
  });

  async function deadLetters(durable: string) {
    const info = await jsm.streams.info(DLQ_STREAM);
    const out = [];
    for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
      const m = await jsm.streams.getMessage(DLQ_STREAM, { seq }).catch(() => null);
      if (m && m.subject.startsWith(`dlq.${durable}.`)) out.push(m);
    }
    return out;
  }

  test('acks only after the write resolved', async () => {
    // The first write hangs; a message published after it starts is written and acked meanwhile,
    // which shows the runner acking while the first five stay unacked.
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const sink = new ScriptedSink(async (_batch, n) => {
      if (n === 1) await gate;
      return { rejected: [] };
    });
    const seqs = await publish('ack', 5);
    const { controller, run, registry } = start('ack', sink);
    await waitFor('the write to start', () => sink.writes.length === 1);
    assert.equal(sink.writes[0]!.batch.length, 5);
    const [marker] = await publish('ack', 1);
    // Counted once the server confirmed the ack (ackAck).
    await waitFor(
      'the later message acked',
      async () => (await metricValue(registry, RunnerMetric.acked)) === 1,
    );
    let info = await consumerInfo('ack');
    assert.equal(info.delivered.stream_seq, marker);
    assert.equal(info.num_ack_pending, 5, 'the five being written are in hand, unacked');
    assert.ok(info.ack_floor.stream_seq < seqs[0]!, `ack floor ${info.ack_floor.stream_seq}`);
    release();
    await waitFor('the acks', async () => (await consumerInfo('ack')).num_ack_pending === 0);
    info = await consumerInfo('ack');
    assert.equal(info.ack_floor.stream_seq, marker);
    assert.equal(info.num_redelivered, 0);
    assert.deepEqual(
      sink.writes.map((w) => w.batch.map((m) => m.seq)),
      [seqs, [marker]],
    );
    const first = sink.writes[0]!.batch[0]!;
    assert.equal(first.site, 'ack');
    assert.equal(first.kind, 'telemetry');
    assert.equal(first.headers['X-Test'], 'n1');
    assert.equal(first.deliveryCount, 1);
    assert.deepEqual(JSON.parse(Buffer.from(first.payload).toString()), { n: 1 });
    controller.abort();
    await run.done;
    assert.equal(sink.opened, 1);
    assert.equal(sink.closed, 1);
  });

  test('naks with a growing delay when the sink fails transiently, then acks', async () => {
    const sink = new ScriptedSink(async (_batch, n) => {
      if (n <= 3) throw new Error(`store hiccup ${n}`);
      return { rejected: [] };
    });
    const [seq] = await publish('retry', 1);
    const { registry } = start('retry', sink);
    await waitFor('the fourth delivery', () => sink.writes.length >= 4, 30_000);
    await waitFor('the ack', async () => (await consumerInfo('retry')).num_ack_pending === 0);
    const deliveries = sink.deliveriesOf(seq!);
    assert.deepEqual(
      deliveries.map((d) => d.deliveryCount),
      [1, 2, 3, 4],
    );
    const gaps = sink.writes.slice(1).map((w, i) => w.at - sink.writes[i]!.at);
    // backoffMs 200, 400, 800 with ±20% jitter (the runner waits at least as long as the nak).
    assert.ok(gaps[0]! >= 150 && gaps[1]! >= 300 && gaps[2]! >= 600, `gaps ${gaps.join(', ')} ms`);
    assert.ok(gaps[2]! > gaps[0]!, `delays grow: ${gaps.join(', ')} ms`);
    const retried = await registry.getSingleMetric(RunnerMetric.retried)!.get();
    assert.equal(retried.values[0]!.value, 3);
    assert.equal((await deadLetters('t-retry')).length, 0);
  });

  test('dead-letters rejected messages with reason, consumer and original sequence, terms them, acks the rest', async () => {
    const seqs = await publish('reject', 6);
    const rejectSeqs = new Set([seqs[1]!, seqs[4]!]);
    const sink = new ScriptedSink(async (batch) => ({
      rejected: batch
        .filter((m) => rejectSeqs.has(m.seq))
        .map((m) => ({ seq: m.seq, reason: `no room for ${m.seq}` })),
    }));
    const { registry } = start('reject', sink);
    await waitFor('the dead letters', async () => (await deadLetters('t-reject')).length === 2);
    // The ack floor passes a message only once it is acked or termed: none of the six can come back.
    await waitFor('everything settled', async () => {
      const info = await consumerInfo('reject');
      return info.ack_floor.stream_seq === seqs.at(-1) && info.num_ack_pending === 0;
    });
    const letters = await deadLetters('t-reject');
    for (const letter of letters) {
      const seq = Number(letter.header.get(Header.dlqSeq));
      assert.ok(rejectSeqs.has(seq), `dead letter for seq ${seq}`);
      assert.equal(letter.header.get(Header.dlqReason), `rejected: no room for ${seq}`);
      assert.equal(letter.header.get(Header.dlqConsumer), 't-reject');
      assert.equal(letter.header.get(Header.dlqStream), 'BSU');
      assert.equal(letter.header.get(Header.dlqDeliveries), '1');
      const original = (await jsm.streams.getMessage('BSU', { seq }))!;
      assert.equal(letter.header.get(Header.dlqSubject), original.subject);
      assert.equal(letter.subject, `dlq.t-reject.${original.subject}`);
      assert.deepEqual(Buffer.from(letter.data), Buffer.from(original.data), 'payload bytes unchanged');
      assert.equal(letter.header.get('X-Test'), original.header.get('X-Test'), 'original headers kept');
    }
    // Termed, not redelivered; the rest acked.
    assert.equal(sink.writes.length, 1);
    const info = await consumerInfo('reject');
    assert.equal(info.num_pending, 0);
    assert.equal(info.num_redelivered, 0);
    const dead = await registry.getSingleMetric(RunnerMetric.deadLettered)!.get();
    assert.deepEqual(
      dead.values.map((v) => [v.labels.reason, v.value]),
      [['rejected', 2]],
    );
    const acked = await registry.getSingleMetric(RunnerMetric.acked)!.get();
    assert.equal(acked.values[0]!.value, 4);
  });

  test('dead-letters the whole batch on PermanentSinkError, and an unparseable subject without writing it', async () => {
    const js = jetstream(nc);
    await js.publish('bsu.perm.not-a-kind', 'x');
    await publish('perm', 3);
    const sink = new ScriptedSink(async () => {
      throw new PermanentSinkError('schema will never fit', { cause: new Error('column type') });
    });
    start('perm', sink);
    await waitFor('four dead letters', async () => (await deadLetters('t-perm')).length === 4);
    const reasons = (await deadLetters('t-perm')).map((l) => l.header.get(Header.dlqReason)).sort();
    assert.equal(reasons[0], 'bad-subject: subject bsu.perm.not-a-kind is not bsu.<site>.<device>.<kind>');
    assert.deepEqual(reasons.slice(1), Array(3).fill('permanent: schema will never fit: column type'));
    assert.equal(sink.writes.length, 1);
    assert.equal(sink.writes[0]!.batch.length, 3, 'the bad subject never reached the sink');
  });

  test('dead-letters a message that reached maxDeliver deliveries instead of retrying it', async () => {
    const sink = new ScriptedSink(async () => {
      throw new Error('always failing');
    });
    const [seq] = await publish('maxdel', 1);
    start('maxdel', sink, { maxDeliver: 3, backoffMs: [100] });
    await waitFor('the dead letter', async () => (await deadLetters('t-maxdel')).length === 1, 20_000);
    const [letter] = await deadLetters('t-maxdel');
    assert.equal(letter!.header.get(Header.dlqDeliveries), '3');
    assert.match(
      letter!.header.get(Header.dlqReason),
      /^max-deliveries: failed 3 writes, last: always failing/,
    );
    assert.equal(Number(letter!.header.get(Header.dlqSeq)), seq);
    // Termed: past the ack floor, it is never delivered again.
    await waitFor('the term', async () => (await consumerInfo('maxdel')).ack_floor.stream_seq === seq);
    assert.equal(sink.deliveriesOf(seq!).length, 3);
    assert.equal((await consumerInfo('maxdel')).num_ack_pending, 0);
  });

  test('writes, alone, a message the server counts past maxDeliver that never failed here', async () => {
    // nats-server 2.9 counts deliveries to a consumer process that has just died, thousands at once:
    // such a count is no proof of a crash loop. Here the count is real: 7 fetches, each nak-ed.
    const suspects = await publish('inflated', 2);
    await jsm.consumers.add('BSU', {
      durable_name: 't-inflated',
      ack_policy: AckPolicy.Explicit,
      filter_subject: 'bsu.inflated.>',
    });
    const raw = await jetstream(nc).consumers.get('BSU', 't-inflated');
    for (let round = 1; round <= 7; round++) {
      const got: JsMsg[] = [];
      for await (const m of await raw.fetch({ max_messages: 2, expires: 1_000 })) got.push(m);
      assert.equal(got.length, 2);
      for (const m of got) m.nak();
      await nc.flush();
    }
    const fresh = await publish('inflated', 3);
    // The first suspect's first write fails: one failure here, far from maxDeliver, whatever the
    // server's count says. It is retried, not dead-lettered.
    const sink = new ScriptedSink(async (_batch, n) => {
      if (n === 2) throw new Error('store hiccup');
      return { rejected: [] };
    });
    start('inflated', sink, { maxDeliver: 5, backoffMs: [100] });
    await waitFor('all acked', async () => {
      const info = await consumerInfo('inflated');
      return (
        info.num_pending === 0 && info.num_ack_pending === 0 && info.ack_floor.stream_seq === fresh.at(-1)
      );
    });
    assert.equal((await deadLetters('t-inflated')).length, 0, 'nothing dead-lettered');
    const writes = sink.writes.map((w) => w.batch.map((m) => [m.seq, m.deliveryCount]));
    assert.deepEqual(writes.slice(0, 2), [fresh.map((seq) => [seq, 1]), [[suspects[0], 8]]]);
    assert.deepEqual(
      sink.deliveriesOf(suspects[0]!).map((m) => m.deliveryCount),
      [8, 9],
      'written again after its one failure',
    );
    const second = sink.writes.filter((w) => w.batch.some((m) => m.seq === suspects[1]));
    assert.deepEqual(
      second.map((w) => w.batch.map((m) => m.seq)),
      [[suspects[1]]],
      'never failed here: written once, alone',
    );
  });

  test('waits, without fetching, while the sink is down, then catches up', async () => {
    let down = true;
    const sink = new ScriptedSink(async () => {
      if (down) throw new Error('connection refused');
      return { rejected: [] };
    });
    await publish('down', 20);
    const { run } = start('down', sink, { backoffMs: [100, 200] });
    await waitFor('the first failure', () => sink.writes.length >= 1);
    sink.ready = false;
    const ready = await run.readiness();
    assert.equal(ready.ready, false);
    assert.deepEqual(ready.reasons, ['scripted: down in this test']);
    const before = sink.writes.length;
    // The runner asks the sink between its retry delays (100, 200 ms): several answers of "not
    // ready" show it waiting, and a batch already fetched is the most it may have written since.
    const checks = sink.readinessChecks;
    await waitFor('the runner to ask the sink 5 times', () => sink.readinessChecks >= checks + 5);
    assert.ok(
      sink.writes.length <= before + 1,
      `no spinning: ${sink.writes.length - before} writes while down`,
    );
    down = false;
    sink.ready = true;
    await waitFor('all acked', async () => {
      const info = await consumerInfo('down');
      return info.num_pending === 0 && info.num_ack_pending === 0 && info.ack_floor.stream_seq > 0;
    });
    const maxDeliveries = Math.max(...sink.writes.flatMap((w) => w.batch.map((m) => m.deliveryCount)));
    assert.ok(maxDeliveries <= 3, `deliveries stay low during an outage: ${maxDeliveries}`);
    assert.equal((await deadLetters('t-down')).length, 0);
  });

  test('on stop, finishes the write in hand, acks it and closes the sink', async () => {
    const { sink, release } = heldSink();
    const seqs = await publish('stop', 10);
    // One full batch of the ten, so that the write in hand holds them all.
    const { controller, run } = start('stop', sink, { batchSize: 10, fillBatch: true });
    await waitFor('the write to start', () => sink.writes.length === 1);
    // The runner takes the stop at once (no more fetches); the write in hand then completes.
    controller.abort();
    release();
    await run.done;
    assert.equal(sink.writes.length, 1);
    assert.deepEqual(
      sink.writes[0]!.batch.map((m) => m.seq),
      seqs,
    );
    assert.equal(sink.closed, 1);
    const info = await consumerInfo('stop');
    assert.equal(info.num_ack_pending, 0);
    assert.equal(info.ack_floor.stream_seq, seqs.at(-1), 'the batch in hand was acked');
  });

  test('on stop, gives a write that outlives the grace back at once (nak, no delay)', async () => {
    const sink = new ScriptedSink(
      (_batch, _n, signal) =>
        new Promise((_, reject) =>
          signal.addEventListener('abort', () => reject(signal.reason), { once: true }),
        ),
    );
    await publish('grace', 4);
    const first = start('grace', sink, { shutdownGraceMs: 100, ackWaitMs: 30_000 });
    await waitFor('the write to start', () => sink.writes.length === 1);
    first.controller.abort();
    await first.run.done;
    const again = new ScriptedSink(ok);
    const started = Date.now();
    start('grace', again);
    await waitFor('the redelivery', () => again.writes.length > 0);
    assert.ok(Date.now() - started < 5_000, 'redelivered long before ackWait');
    assert.equal(again.writes[0]!.batch[0]!.deliveryCount, 2);
    await waitFor('the acks', async () => (await consumerInfo('grace')).num_ack_pending === 0);
  });

  test('on stop, writes and acks the batch in hand and gives the batch fetched ahead back at once', async () => {
    const { sink, release } = heldSink();
    await publish('ahead', 30);
    // One write at a time: while the first batch (10) is written, the second (10) waits in hand.
    const first = start('ahead', sink, {
      batchSize: 10,
      fillBatch: true,
      writesInFlight: 1,
      ackWaitMs: 30_000,
    });
    await waitFor(
      'the batch fetched ahead',
      async () => (await consumerInfo('ahead')).num_ack_pending === 20,
    );
    first.controller.abort();
    release();
    await first.run.done;
    assert.equal(sink.writes.length, 1, 'only the batch in hand was written');
    assert.equal(sink.writes[0]!.batch.length, 10);
    assert.ok((await consumerInfo('ahead')).ack_floor.stream_seq > 0, 'the batch in hand was acked');
    const again = new ScriptedSink(ok);
    const started = Date.now();
    start('ahead', again);
    await waitFor('the rest', () => again.writes.flatMap((w) => w.batch).length === 20);
    assert.ok(Date.now() - started < 10_000, 'the batch fetched ahead came back long before ackWait');
    await waitFor('the acks', async () => (await consumerInfo('ahead')).num_ack_pending === 0);
    const seqs = [...sink.writes, ...again.writes].flatMap((w) => w.batch.map((m) => m.seq));
    assert.equal(new Set(seqs).size, 30, 'every message written once');
  });

  test('with several filters, writes only what they match and settles the rest', async () => {
    await publish('multi', 3, 'telemetry');
    await publish('multi', 2, 'event');
    const status = await publish('multi', 2, 'status');
    const filters = ['bsu.multi.*.telemetry', 'bsu.multi.*.status'];
    const sink = new ScriptedSink(ok);
    const { registry } = start('multi', sink, { filterSubjects: filters });
    await waitFor('all settled', async () => {
      const info = await consumerInfo('multi');
      return (
        info.num_pending === 0 && info.num_ack_pending === 0 && info.ack_floor.stream_seq === status.at(-1)
      );
    });
    const kinds = sink.writes.flatMap((w) => w.batch.map((m) => m.kind)).sort();
    assert.deepEqual(kinds, ['status', 'status', 'telemetry', 'telemetry', 'telemetry']);
    const { config } = await consumerInfo('multi');
    const skipped = (await metricValue(registry, RunnerMetric.skipped)) ?? 0;
    // Read from the server the runner talks to, not from the code under test.
    const [major, minor] = nc.info!.version.split('.').map(Number) as [number, number];
    if (major > 2 || (major === 2 && minor >= 10)) {
      // The server takes both filters and never delivers the events.
      assert.deepEqual(config.filter_subjects, filters);
      assert.equal(config.filter_subject, undefined);
      assert.equal(skipped, 0);
    } else {
      // nats-server 2.9 takes one filter: the covering one, and the runner acks the events unwritten.
      assert.equal(config.filter_subject, 'bsu.multi.*.*');
      assert.equal(skipped, 2);
    }
  });

  test('refuses a durable without a filter instead of adding one, which would skip what it holds', async () => {
    // nats-server 2.9 moves a durable past every message it has not delivered when an update adds
    // a filter to it: the runner must not be the one to do that.
    await publish('nofilter', 5);
    await jsm.consumers.add('BSU', { durable_name: 't-nofilter', ack_policy: AckPolicy.Explicit });
    const pending = (await consumerInfo('nofilter')).num_pending;
    assert.ok(pending >= 5);
    const { run } = start('nofilter', new ScriptedSink(async () => ({ rejected: [] })));
    const refused = await Promise.race([
      run.done.then(
        () => undefined,
        (err: unknown) => err,
      ),
      sleep(20_000).then(() => undefined),
    ]);
    assert.ok(refused instanceof Error, 'the runner took the durable over');
    assert.equal(refused.name, 'ConsumerConfigError');
    assert.match(refused.message, /t-nofilter on BSU has no filter subject/);
    const info = await consumerInfo('nofilter');
    assert.equal(info.config.filter_subject ?? '', '', 'the durable is left as it was');
    assert.equal(info.num_pending, pending, 'nothing skipped');
  });

  test('headers: read from the raw block as the client decodes them, written pre-encoded', async () => {
    const js = jetstream(nc);
    const h = headers();
    h.set(Header.site, 'hdr');
    h.set(Header.mqttTopic, 'bsu/ünit-7/telemetry');
    h.set('X-Colon', 'a: b:c');
    h.append('X-Twice', 'first');
    h.append('X-Twice', 'second');
    await js.publish('bsu.hdr.d1.telemetry', new Uint8Array([1]), { headers: h });
    await js.publish('bsu.hdr.d2.telemetry', new Uint8Array([2]));
    // Headers encoded once (the bridge's way): the same wire format, line breaks made spaces.
    nc.publish('bsu.hdr.d3.telemetry', new Uint8Array([3]), {
      headers: wireHeaders([
        [Header.site, 'hdr'],
        ['X-Broken', 'one\r\ntwo'],
        ['X-Twice', 'first'],
        ['X-Twice', 'second'],
      ]),
    });
    await nc.flush();
    await jsm.consumers.add('BSU', {
      durable_name: 't-hdr',
      filter_subject: 'bsu.hdr.>',
      ack_policy: AckPolicy.Explicit,
    });
    const consumer = await jetstream(nc).consumers.get('BSU', 't-hdr');
    const got: JsMsg[] = [];
    for await (const m of await consumer.fetch({ max_messages: 3, expires: 2_000 })) got.push(m);
    assert.equal(got.length, 3);
    const decoded = (m: JsMsg) => {
      const out: Record<string, string> = {};
      for (const [k, v] of m.headers ?? []) out[k] = v[0]!;
      return out;
    };
    assert.deepEqual(firstHeaderValues(got[0]!), decoded(got[0]!));
    assert.deepEqual(firstHeaderValues(got[0]!), {
      [Header.site]: 'hdr',
      [Header.mqttTopic]: 'bsu/ünit-7/telemetry',
      'X-Colon': 'a: b:c',
      'X-Twice': 'first',
    });
    assert.deepEqual(firstHeaderValues(got[1]!), {});
    assert.deepEqual(firstHeaderValues(got[2]!), decoded(got[2]!));
    assert.deepEqual(firstHeaderValues(got[2]!), {
      [Header.site]: 'hdr',
      'X-Broken': 'one  two',
      'X-Twice': 'first',
    });
    assert.deepEqual(got[2]!.headers?.values('X-Twice'), ['first', 'second']);
    for (const m of got) m.ack();
  });

  test('reports the consumer lag and the messages in flight; holds at most writesInFlight + 1 batches', async () => {
    const { sink, release } = heldSink();
    await publish('lag', 220);
    const { registry } = start('lag', sink, { batchSize: 50, fillBatch: true, writesInFlight: 2 });
    const value = async (name: string) => (await registry.getSingleMetric(name)!.get()).values[0]?.value;
    // Two batches being written, a third fetched ahead, the rest left in the stream.
    await waitFor('lag 70', async () => (await value(RunnerMetric.lag)) === 70);
    assert.equal(await value(RunnerMetric.inFlight), 150);
    assert.equal(sink.writes.length, 2, 'two writes at once');
    assert.equal(await value(RunnerMetric.writesInFlight), 2);
    // From consumer info once no messages have flowed for lagRefreshMs.
    await waitFor('ack pending 150', async () => (await value(RunnerMetric.ackPending)) === 150);
    assert.equal(await value(RunnerMetric.lag), 70, 'nothing more was fetched while the writes hang');
    release();
    await waitFor(
      'lag 0',
      async () => (await value(RunnerMetric.lag)) === 0 && (await value(RunnerMetric.ackPending)) === 0,
    );
    assert.equal(await value(RunnerMetric.writesInFlight), 0);
    const text = await registry.metrics();
    assert.match(text, /switchyard_consumer_batch_write_seconds_count\{consumer="t-lag",outcome="ok"\} 5/);
    assert.match(text, /switchyard_consumer_messages_processed_total\{consumer="t-lag"\} 220/);
    const written = sink.writes.flatMap((w) => w.batch.map((m) => m.seq));
    assert.equal(written.length, 220, 'every message written');
    assert.equal(new Set(written).size, 220, 'none written twice');
  });

  test('is not ready while NATS is down, and carries on by itself once it is back', async () => {
    const sink = new ScriptedSink(ok);
    // Its own connection this time (natsUrl): the runner connects, reconnects and closes it.
    const { run } = start('natsdown', sink, { nc: undefined, natsUrl: nats.url });
    await publish('natsdown', 3);
    await waitFor('the first batch', () => sink.writes.flatMap((w) => w.batch).length === 3);
    assert.equal((await run.readiness()).ready, true);
    await stopServer(nats);
    await waitFor('readiness to drop', async () => !(await run.readiness()).ready, 10_000);
    assert.ok((await run.readiness()).reasons?.includes('NATS is not connected'));
    nats = await servers.restart(nats);
    await waitFor('ready again', async () => (await run.readiness()).ready, 20_000);
    await publish('natsdown', 3);
    await waitFor('the new messages', () => sink.writes.flatMap((w) => w.batch).length >= 6, 20_000);
    await waitFor('all acked', async () => {
      const info = await consumerInfo('natsdown');
      return info.num_pending === 0 && info.num_ack_pending === 0;
    });
  });
});
