/**
 * The ordering logic of edge/ordered-publisher.ts against a target whose every answer the test
 * decides (the real-server behaviour is in edge-publisher.test.ts and edge-bridge.test.ts).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { JetStreamPublishError, type StoredAck } from '../edge/async-publisher.ts';
import { OrderedPublisher } from '../edge/ordered-publisher.ts';
import { silentLogger } from '../lib/log.ts';
import { wireHeaders } from '../lib/nats.ts';
import { waitUntil } from '../lib/timers.ts';

interface Call {
  subject: string;
  answer(): void;
  fail(err?: Error): void;
}

/** A publish target that records each attempt and answers only when told to. */
class ScriptedTarget {
  readonly calls: Call[] = [];
  private seq = 0;

  publish(subject: string): Promise<StoredAck> {
    return new Promise<StoredAck>((resolve, reject) => {
      this.calls.push({
        subject,
        answer: () => resolve({ stream: 'S', seq: ++this.seq, duplicate: false }),
        fail: (err = new JetStreamPublishError('no PubAck within 5000 ms', 'timeout')) => reject(err),
      });
    });
  }

  get subjects(): string[] {
    return this.calls.map((c) => c.subject);
  }

  /** The latest attempt to publish `subject`. */
  last(subject: string): Call {
    const call = this.calls.findLast((c) => c.subject === subject);
    assert.ok(call, `${subject} was never sent`);
    return call;
  }

  /** Resolves once `n` attempts were made. */
  attempts(n: number): Promise<boolean> {
    return waitUntil(
      `${n} publish attempts (made: ${this.subjects.join(', ')})`,
      () => this.calls.length >= n,
      {
        timeoutMs: 5000,
        everyMs: 1,
      },
    );
  }
}

/** A publisher over `target`, with what it resolved and rejected, in the order it did. */
function orderedOver(target: ScriptedTarget, signal = new AbortController().signal) {
  const publisher = new OrderedPublisher(target, {
    log: silentLogger,
    signal,
    minBackoffMs: 1,
    maxBackoffMs: 2,
  });
  const resolved: string[] = [];
  const rejected: string[] = [];
  const publish = (subject: string): Promise<void> =>
    publisher.publish({ subject, payload: new Uint8Array(), headers: wireHeaders([]) }).then(
      () => void resolved.push(subject),
      () => void rejected.push(subject),
    );
  return { publisher, resolved, rejected, publish };
}

/** Lets every settled promise run its callbacks. */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

describe('ordered publishing', () => {
  test('pipelines while every publish is answered, and resolves in publish order', async () => {
    const target = new ScriptedTarget();
    const { publisher, resolved, publish } = orderedOver(target);
    const done = ['m1', 'm2', 'm3'].map(publish);
    assert.deepEqual(target.subjects, ['m1', 'm2', 'm3'], 'all three in flight at once');
    // Answers can come out of order (two streams): resolutions still follow publish order.
    target.last('m2').answer();
    await settle();
    assert.deepEqual(resolved, [], 'm2 waits for m1');
    target.last('m1').answer();
    target.last('m3').answer();
    await Promise.all(done);
    assert.deepEqual(resolved, ['m1', 'm2', 'm3']);
    assert.equal(publisher.degraded, false);
  });

  test('retries a timed-out publish before anything newer is resolved', async () => {
    const target = new ScriptedTarget();
    const { publisher, resolved, publish } = orderedOver(target);
    const done = ['m1', 'm2', 'm3'].map(publish);
    target.last('m2').answer();
    target.last('m3').answer();
    target.last('m1').fail();
    await target.attempts(4);
    assert.deepEqual(target.subjects, ['m1', 'm2', 'm3', 'm1'], 'm1 sent again');
    await settle();
    assert.deepEqual(resolved, [], 'm2 and m3 are stored, but wait for m1');
    assert.equal(publisher.degraded, true);

    target.last('m1').answer();
    await Promise.all(done);
    assert.deepEqual(resolved, ['m1', 'm2', 'm3']);
    assert.equal(publisher.degraded, false);
  });

  test('retries failures in publish order, whichever failed first, and sends nothing newer meanwhile', async () => {
    const target = new ScriptedTarget();
    const { publisher, resolved, publish } = orderedOver(target);
    const done = ['m1', 'm2', 'm3'].map(publish);
    // m3 is refused at once; m1 times out later; m2 is stored.
    target.last('m3').fail(new JetStreamPublishError('no stream answered (no responders)', 503));
    await settle();
    done.push(publish('m4'));
    assert.deepEqual(target.subjects, ['m1', 'm2', 'm3'], 'm4 is held while m1 is unanswered');
    target.last('m2').answer();
    target.last('m1').fail();

    await target.attempts(4);
    assert.deepEqual(target.subjects.slice(3), ['m1'], 'm1, the oldest failure, is retried first');
    target.last('m1').fail(); // and fails again: backoff, then m1 again, still before m3
    await target.attempts(5);
    assert.equal(target.subjects[4], 'm1');
    target.last('m1').answer();
    await target.attempts(6);
    assert.equal(target.subjects[5], 'm3');
    target.last('m3').answer();
    await target.attempts(7);
    assert.equal(target.subjects[6], 'm4', 'then what was made meanwhile, one at a time');
    target.last('m4').answer();
    await Promise.all(done);
    assert.deepEqual(resolved, ['m1', 'm2', 'm3', 'm4']);

    assert.equal(publisher.degraded, false);
    const more = ['m5', 'm6'].map(publish);
    assert.deepEqual(target.subjects.slice(7), ['m5', 'm6'], 'pipelined again');
    target.last('m5').answer();
    target.last('m6').answer();
    await Promise.all(more);
    assert.deepEqual(resolved.slice(4), ['m5', 'm6']);
  });

  test('rejects what waits, in order, once stopped', async () => {
    const target = new ScriptedTarget();
    const controller = new AbortController();
    const { resolved, rejected, publish } = orderedOver(target, controller.signal);
    const done = ['m1', 'm2'].map(publish);
    target.last('m2').answer();
    target.last('m1').fail();
    await target.attempts(3);
    controller.abort();
    target.last('m1').fail();
    await Promise.all(done);
    assert.deepEqual(resolved, []);
    assert.deepEqual(rejected, ['m1', 'm2']);
  });

  test('a permanent refusal is replaced once, then dropped, without retrying or holding later ones', async () => {
    const target = new ScriptedTarget();
    const dropped: string[] = [];
    const publisher = new OrderedPublisher(target, {
      log: silentLogger,
      signal: new AbortController().signal,
      minBackoffMs: 1,
      maxBackoffMs: 2,
      // Only m1 has a replacement; the replacement itself is never replaced again.
      onRefused: (r) =>
        r.subject === 'm1' || r.subject === 'm1-invalid' ? request(`${r.subject}-invalid`) : undefined,
      onDropped: (request) => void dropped.push(request.subject),
    });
    const request = (subject: string) => ({ subject, payload: new Uint8Array(), headers: wireHeaders([]) });
    const results = [request('m1'), request('m2'), request('m3')].map((r) => publisher.publish(r));
    const tooBig = new JetStreamPublishError('message size exceeds maximum allowed', 400);
    target.last('m1').fail(tooBig);
    await target.attempts(4);
    assert.equal(target.subjects[3], 'm1-invalid', 'the replacement is sent at once');
    assert.equal(publisher.degraded, false, 'a permanent refusal is not retried');
    target.last('m2').answer();
    target.last('m3').fail(new JetStreamPublishError('not sent: max_payload size exceeded', 'refused'));
    target.last('m1-invalid').fail(tooBig);
    const [r1, r2, r3] = await Promise.all(results);
    assert.equal(r1!.request.subject, 'm1-invalid');
    assert.equal(r1!.dropped, true, 'the replacement refused too: dropped, not replaced again');
    assert.equal(r2!.request.subject, 'm2');
    assert.equal(r2!.dropped, false);
    assert.equal(r3!.dropped, true, 'nothing replaces m3: dropped');
    assert.deepEqual(dropped, ['m3', 'm1-invalid']);
    assert.equal(target.calls.length, 4, 'nothing retried');
  });
});
