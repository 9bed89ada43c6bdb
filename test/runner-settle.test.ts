/**
 * How the runner settles what a sink could not fully write, against a real nats-server: a partial
 * failure, the store's retry hint, and a dead-letter stream that is full. The file owns its server,
 * so it owns `BSU` and `BSU_DLQ`; every test has its own site token and durable.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { DiscardPolicy, jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { Registry } from 'prom-client';
import { DLQ_STREAM, ensureDlqStream } from '../cloud/dlq.ts';
import { runConsumer, type ConsumerRun } from '../cloud/runner.ts';
import { RunnerMetric } from '../cloud/runner-metrics.ts';
import { TransientSinkError, type Sink, type SinkMessage, type WriteResult } from '../cloud/sink.ts';
import { silentLogger } from '../lib/log.ts';
import { TestServers, waitFor } from './support/servers.ts';

/** A sink whose every write is decided by the test; it records what it was given and when. */
class ScriptedSink implements Sink {
  readonly name = 'scripted';
  readonly writes: { atMs: number; seqs: number[] }[] = [];
  constructor(private readonly behave: (batch: readonly SinkMessage[], n: number) => WriteResult) {}
  async open(): Promise<void> {}
  async write(batch: readonly SinkMessage[]): Promise<WriteResult> {
    this.writes.push({ atMs: performance.now(), seqs: batch.map((m) => m.seq) });
    return this.behave(batch, this.writes.length);
  }
  async readiness() {
    return { ready: true as const };
  }
  async close(): Promise<void> {}
  /** How many times the sink was given `seq`. */
  timesGiven(seq: number): number {
    return this.writes.filter((w) => w.seqs.includes(seq)).length;
  }
}

const sampleValue = async (registry: Registry, name: string, labels: Record<string, string>) => {
  const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === name);
  const values = (metric?.values ?? []) as { value: number; labels: Record<string, string | number> }[];
  const hit = values.find((v) => Object.entries(labels).every(([k, want]) => v.labels[k] === want));
  return hit?.value ?? 0;
};

describe('settling what a sink could not fully write', () => {
  const servers = new TestServers('runner-settle');
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  const running: { controller: AbortController; run: ConsumerRun }[] = [];

  before(async () => {
    const nats = await servers.nats();
    nc = await connect({ servers: nats.url });
    jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: 'BSU', subjects: ['bsu.>'] });
  });

  after(async () => {
    for (const r of running) r.controller.abort();
    await Promise.allSettled(running.map((r) => r.run.done));
    await nc?.close();
    await servers.stopAll();
  });

  function start(site: string, sink: Sink, backoffMs: number[], registry = new Registry()) {
    const controller = new AbortController();
    const run = runConsumer({
      nc,
      durable: `t-${site}`,
      filterSubjects: [`bsu.${site}.>`],
      ackWaitMs: 10_000,
      backoffMs,
      batchSize: 100,
      maxAckPending: 200,
      fetchExpiresMs: 1_000,
      sink,
      log: silentLogger,
      registry,
      signal: controller.signal,
    });
    running.push({ controller, run });
    return { controller, run, registry };
  }

  async function publish(site: string, count: number, payload = '{}'): Promise<number[]> {
    const js = jetstream(nc);
    const seqs: number[] = [];
    for (let i = 0; i < count; i++)
      seqs.push((await js.publish(`bsu.${site}.u${i % 4}.telemetry`, payload)).seq);
    return seqs;
  }

  const settled = async (site: string) => {
    const info = await jsm.consumers.info('BSU', `t-${site}`);
    return info.num_pending === 0 && info.num_ack_pending === 0;
  };

  test('a partial failure acks the durable part and redelivers only the failed messages', async () => {
    const seqs = await publish('partial', 20);
    const failed = new Set(seqs.filter((_, i) => i % 5 === 0));
    const sink = new ScriptedSink((batch, n) => {
      if (n === 1)
        throw new TransientSinkError('one object failed', {
          failedSeqs: batch.map((m) => m.seq).filter((s) => failed.has(s)),
        });
      return { rejected: [] };
    });
    start('partial', sink, [100]);
    await waitFor('every message settled', () => settled('partial'));
    assert.equal(sink.writes[0]!.seqs.length, 20, 'the first write had the whole batch');
    for (const seq of seqs) assert.equal(sink.timesGiven(seq), failed.has(seq) ? 2 : 1, `seq ${seq}`);
  });

  test("the retry delay never undercuts the store's Retry-After", async () => {
    await publish('hint', 5);
    const sink = new ScriptedSink((_, n) => {
      if (n === 1) throw new TransientSinkError('429 Too Many Requests', { retryAfterMs: 1_500 });
      return { rejected: [] };
    });
    // The first retry would come after 50 ms; the hint is within the longest delay, so it holds.
    start('hint', sink, [50, 5_000]);
    await waitFor('every message settled', () => settled('hint'));
    assert.ok(sink.writes.length >= 2);
    const waitedMs = sink.writes[1]!.atMs - sink.writes[0]!.atMs;
    assert.ok(waitedMs >= 1_450, `came back after ${waitedMs.toFixed(0)} ms, expected at least 1,500`);
  });

  test('a full dead-letter stream refuses new dead letters: nothing is evicted, nothing is lost', async () => {
    // Small, and evicting its oldest when full, as the stream used to be created.
    await ensureDlqStream(jsm);
    await jsm.streams.update(DLQ_STREAM, {
      ...(await jsm.streams.info(DLQ_STREAM)).config,
      max_bytes: 64 * 1024,
      discard: DiscardPolicy.Old,
    });
    const before = await jsm.streams.info(DLQ_STREAM);
    const payload = JSON.stringify({ pad: 'x'.repeat(10_000) });
    const seqs = await publish('poison', 12, payload);
    const sink = new ScriptedSink((batch) => ({
      rejected: batch.map((m) => ({ seq: m.seq, reason: 'never accepted' })),
    }));
    const { registry } = start('poison', sink, [200]);

    await waitFor(
      'refusals counted',
      async () =>
        (await sampleValue(registry, RunnerMetric.deadLetterFailures, {
          consumer: 't-poison',
          cause: 'full',
        })) > 0,
    );
    const dlq = await jsm.streams.info(DLQ_STREAM);
    assert.equal(dlq.config.discard, DiscardPolicy.New, 'the runner switched the stream to refusing');
    assert.ok(dlq.state.first_seq <= before.state.last_seq + 1, 'no dead letter was evicted');
    const stored = dlq.state.messages - before.state.messages;
    assert.ok(stored > 0 && stored < seqs.length, `${stored} of ${seqs.length} dead letters stored`);
    const consumer = await jsm.consumers.info('BSU', 't-poison');
    assert.equal(
      consumer.num_ack_pending + consumer.num_pending,
      seqs.length - stored,
      'every refused message is still held in BSU',
    );

    // Room again: every message ends up dead-lettered, once.
    await jsm.streams.update(DLQ_STREAM, { ...dlq.config, max_bytes: 16 * 1024 * 1024 });
    await waitFor('every message settled', () => settled('poison'), 30_000);
    const after = await jsm.streams.info(DLQ_STREAM);
    assert.equal(after.state.messages - before.state.messages, seqs.length);
    assert.equal(
      await sampleValue(registry, RunnerMetric.deadLettered, { consumer: 't-poison', reason: 'rejected' }),
      seqs.length,
    );
  });

  test('a dead letter deleted (redriven) and dead-lettered again within the duplicate window is stored again', async () => {
    const [seq] = await publish('again', 1);
    const rejectAll = () =>
      new ScriptedSink((batch) => ({
        rejected: batch.map((m) => ({ seq: m.seq, reason: 'never accepted' })),
      }));
    const lettersOf = async () => {
      const dlq = await jsm.streams.info(DLQ_STREAM);
      const out: number[] = [];
      for (let s = dlq.state.first_seq; s <= dlq.state.last_seq; s++) {
        const m = await jsm.streams.getMessage(DLQ_STREAM, { seq: s }).catch(() => undefined);
        if (m?.subject.startsWith('dlq.t-again.')) out.push(s);
      }
      return out;
    };
    const first = start('again', rejectAll(), [100]);
    await waitFor('dead-lettered', async () => (await lettersOf()).length === 1);
    first.controller.abort();
    await first.run.done;
    // As a redrive does once the letter is written: the dead letter is deleted.
    await jsm.streams.deleteMessage(DLQ_STREAM, (await lettersOf())[0]!);
    // The same consumer meets the same message again (its durable started over).
    await jsm.consumers.delete('BSU', 't-again');
    start('again', rejectAll(), [100]);
    await waitFor('dead-lettered again', async () => (await lettersOf()).length === 1);
    const letter = await jsm.streams.getMessage(DLQ_STREAM, { seq: (await lettersOf())[0]! });
    assert.equal(letter?.header.get('Switchyard-Dlq-Seq'), String(seq));
    await waitFor('settled', () => settled('again'));
  });
});
