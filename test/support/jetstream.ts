/** Reading what really reached a stream, for assertions. */
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { isStreamNotFound } from '../../lib/nats.ts';

export interface StoredMessage {
  seq: number;
  subject: string;
  headers: Record<string, string>;
  payload: Uint8Array;
  /** When the stream stored it (ms since the epoch). */
  storedAtMs: number;
}

export const natsConnect = (url: string): Promise<NatsConnection> =>
  connect({ servers: url, maxReconnectAttempts: -1, reconnectTimeWait: 250 });

/** Number of messages a stream holds now; 0 if it does not exist, -1 if the server does not answer. */
export async function streamCount(nc: NatsConnection, stream: string): Promise<number> {
  try {
    const jsm = await jetstreamManager(nc, { checkAPI: false });
    return (await jsm.streams.info(stream)).state.messages;
  } catch (err) {
    return isStreamNotFound(err) ? 0 : -1;
  }
}

/** Every message the stream holds, in sequence order (read with an ordered consumer). */
export async function readStream(
  nc: NatsConnection,
  stream: string,
  options: { filter?: string } = {},
): Promise<StoredMessage[]> {
  const jsm = await jetstreamManager(nc);
  const info = await jsm.streams.info(stream);
  const total = info.state.messages;
  const out: StoredMessage[] = [];
  if (total === 0) return out;
  // nats-server 2.9 takes one filter subject per consumer and the client offers only the 2.10 list:
  // read everything and filter here.
  const consumer = await jetstream(nc).consumers.get(stream);
  const lastSeq = info.state.last_seq;
  const iter = await consumer.consume({ max_messages: 1000 });
  for await (const m of iter) {
    const headers: Record<string, string> = {};
    for (const k of m.headers?.keys() ?? []) headers[k] = m.headers!.get(k);
    if (!options.filter || subjectMatches(options.filter, m.subject)) {
      out.push({
        seq: m.seq,
        subject: m.subject,
        headers,
        payload: m.data,
        storedAtMs: m.info.timestampNanos / 1e6,
      });
    }
    if (m.seq >= lastSeq || m.info.pending === 0) break;
  }
  await iter.close();
  return out;
}

/** NATS subject matching with `*` and `>`. */
export function subjectMatches(filter: string, subject: string): boolean {
  const f = filter.split('.');
  const s = subject.split('.');
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '>') return s.length > i;
    if (i >= s.length || (f[i] !== '*' && f[i] !== s[i])) return false;
  }
  return f.length === s.length;
}
