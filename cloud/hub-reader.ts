/**
 * Reading a range of the hub stream without touching any durable: an ordered consumer (no acks,
 * recreated by the client after a hiccup) from `fromSeq`, stopped at `toSeq`. What replay, the
 * engine swap's backfill and the audit read the stream with.
 */
import { DeliverPolicy, jetstream, type JsMsg } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { parseSubject } from '../schemas/subjects.ts';
import { HubMessage } from './hub-message.ts';

export interface HubRange {
  stream: string;
  /** First stream sequence to read (inclusive). */
  fromSeq: number;
  /** Last stream sequence to read (inclusive). */
  toSeq: number;
  /** One subject filter, e.g. `bsu.site-1.>` (default every message). */
  filter?: string;
  /** Messages per fetch (default 1,000). */
  batchSize?: number;
  /** Read only the headers (the audit counts; no payloads cross the wire). */
  headersOnly?: boolean;
  signal?: AbortSignal;
}

/**
 * Messages the range holds that match its filter, nothing read: what is pending from its start less
 * what is pending after its end (consumer info counts to the end of the stream). The end is counted
 * first, so messages stored meanwhile can only make the figure a little high, and it is capped by
 * the range's length.
 */
export async function countHubRange(nc: NatsConnection, range: HubRange): Promise<number> {
  if (range.toSeq < range.fromSeq) return 0;
  const pendingFrom = async (fromSeq: number): Promise<number> => {
    const consumer = await orderedConsumer(nc, { ...range, fromSeq });
    const pending = (await consumer.info(true)).num_pending;
    await consumer.delete().catch(() => undefined);
    return pending;
  };
  const after = await pendingFrom(range.toSeq + 1);
  const from = await pendingFrom(range.fromSeq);
  return Math.max(0, Math.min(range.toSeq - range.fromSeq + 1, from - after));
}

/**
 * The range's messages in sequence order, in batches. Messages whose subject is not
 * `bsu.<site>.<device>.<kind>` come in `unparsed` (the runner dead-letters those; a reader only
 * counts them).
 */
export async function* readHubRange(
  nc: NatsConnection,
  range: HubRange,
): AsyncGenerator<{ messages: HubMessage[]; unparsed: JsMsg[] }> {
  if (range.toSeq < range.fromSeq) return;
  const consumer = await orderedConsumer(nc, range);
  const batchSize = range.batchSize ?? 1_000;
  for (;;) {
    range.signal?.throwIfAborted();
    const messages: HubMessage[] = [];
    const unparsed: JsMsg[] = [];
    let done = false;
    let last: JsMsg | undefined;
    const iter = await consumer.fetch({ max_messages: batchSize, expires: 2_000 });
    for await (const msg of iter) {
      last = msg;
      if (msg.seq > range.toSeq) {
        done = true;
        iter.stop();
        break;
      }
      const parts = parseSubject(msg.subject);
      if (parts) messages.push(new HubMessage(msg, parts));
      else unparsed.push(msg);
      if (msg.seq === range.toSeq || msg.info.pending === 0) {
        // The range is read: do not wait out the fetch's expiry for messages that cannot come.
        done = true;
        iter.stop();
        break;
      }
    }
    if (messages.length > 0 || unparsed.length > 0) yield { messages, unparsed };
    if (done) return;
    // An empty fetch: either nothing matches any more, or the server was slow to answer.
    if (!last && (await consumer.info()).num_pending === 0) return;
  }
}

function orderedConsumer(nc: NatsConnection, range: HubRange) {
  return jetstream(nc).consumers.get(range.stream, {
    deliver_policy: DeliverPolicy.StartSequence,
    opt_start_seq: Math.max(1, range.fromSeq),
    ...(range.filter ? { filter_subjects: range.filter } : {}),
    ...(range.headersOnly ? { headers_only: true } : {}),
  });
}
