/**
 * The loop every naive script shares, as a user would write it with nats.js alone: a durable pull
 * consumer, `fetch` a batch, hand it to the store, then `ack()` each message. No validation, no
 * dead letters, no metrics. Settings come as one JSON argument (`NaiveSettings`); the result is one
 * JSON line on stdout: messages, wall time and this process's CPU from the end of the first batch
 * to the last ack, the window the consumers are measured over (bench/support/consumers.ts).
 */
import { AckPolicy, jetstream, jetstreamManager, type JsMsg } from '@nats-io/jetstream';
import { connect, nanos } from '@nats-io/transport-node';

export interface NaiveResult {
  messages: number;
  ms: number;
  cpuUs: number;
}

export interface NaiveSettings {
  natsUrl: string;
  stream: string;
  durable: string;
  filter: string;
  messages: number;
  batchSize: number;
  /** The store: S3 endpoint, Redis URL or the database's base URL. */
  storeUrl: string;
}

export const settings = JSON.parse(process.argv[2] ?? '{}') as NaiveSettings;

export async function naiveDrain(write: (batch: JsMsg[]) => Promise<void>): Promise<void> {
  const { stream, durable, messages: total, batchSize } = settings;
  const nc = await connect({ servers: settings.natsUrl });
  const jsm = await jetstreamManager(nc);
  await jsm.consumers.add(stream, {
    durable_name: durable,
    ack_policy: AckPolicy.Explicit,
    filter_subject: settings.filter,
    ack_wait: nanos(60_000),
    max_ack_pending: 10_000,
  });
  const consumer = await jetstream(nc).consumers.get(stream, durable);
  let done = 0;
  let window: { count: number; ms: number; cpu: NodeJS.CpuUsage } | undefined;
  while (done < total) {
    const batch: JsMsg[] = [];
    for await (const m of await consumer.fetch({
      max_messages: Math.min(batchSize, total - done),
      expires: 5000,
    }))
      batch.push(m);
    await write(batch);
    for (const m of batch) m.ack();
    done += batch.length;
    window ??= { count: done, ms: performance.now(), cpu: process.cpuUsage() };
  }
  await nc.flush();
  const cpu = process.cpuUsage(window!.cpu);
  const result: NaiveResult = {
    messages: done - window!.count,
    ms: performance.now() - window!.ms,
    cpuUs: cpu.user + cpu.system,
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
  await jsm.consumers.delete(stream, durable);
  await nc.close();
}
