/**
 * The hub's control plane, in two JetStream key-value buckets:
 *
 * - `switchyard_presence` (entries expire after `PRESENCE_TTL_MS`): every running consumer puts
 *   `<durable>.<instance>` there every `PRESENCE_EVERY_MS`, so an operation that must not run
 *   under a live consumer (moving its durable) can see who is attached, as Kafka sees a group's
 *   members.
 * - `switchyard_control` (kept): operations in progress and their state, e.g. `move.<durable>`
 *   while a durable is being recreated at another sequence (a runner that finds its durable
 *   missing waits instead of creating it at the start of the stream), and `migrate.<from>.<to>`,
 *   the engine swap's recorded start sequence.
 */
import { Kvm, type KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';

export const PRESENCE_BUCKET = 'switchyard_presence';
export const CONTROL_BUCKET = 'switchyard_control';
/** A consumer not seen for this long is gone (ms). */
export const PRESENCE_TTL_MS = 15_000;
/** How often a running consumer says it is there (ms). */
export const PRESENCE_EVERY_MS = 5_000;

/** What a running consumer says about itself. */
export interface Presence {
  durable: string;
  instance: string;
  host: string;
  pid: number;
  startedAt: string;
}

/** A durable being moved: the runner must not recreate it meanwhile. */
export interface MoveMarker {
  durable: string;
  toSeq: number;
  startedAt: string;
}

export const presenceBucket = (nc: NatsConnection): Promise<KV> =>
  new Kvm(nc).create(PRESENCE_BUCKET, { ttl: PRESENCE_TTL_MS, history: 1 });

export const controlBucket = (nc: NatsConnection): Promise<KV> =>
  new Kvm(nc).create(CONTROL_BUCKET, { history: 5 });

/** KV keys may not hold every character a durable name may: durables are `[A-Za-z0-9_-]+`. */
const moveKey = (durable: string): string => `move.${durable}`;

/** The consumers attached to `durable` now (seen within the presence TTL). */
export async function attachedInstances(kv: KV, durable: string): Promise<Presence[]> {
  const out: Presence[] = [];
  for await (const key of await kv.keys(`${durable}.*`)) {
    const entry = await kv.get(key);
    if (entry && entry.operation === 'PUT' && Date.now() - entry.created.getTime() < PRESENCE_TTL_MS)
      out.push(entry.json<Presence>());
  }
  return out;
}

export async function readMoveMarker(kv: KV, durable: string): Promise<MoveMarker | undefined> {
  const entry = await kv.get(moveKey(durable));
  return entry && entry.operation === 'PUT' ? entry.json<MoveMarker>() : undefined;
}

export const putMoveMarker = (kv: KV, marker: MoveMarker): Promise<number> =>
  kv.put(moveKey(marker.durable), JSON.stringify(marker));

export const clearMoveMarker = (kv: KV, durable: string): Promise<void> => kv.delete(moveKey(durable));

/**
 * Announces a running consumer until the returned function is called (which withdraws it). A
 * failed put is only logged by the caller's `onError`: presence must never stop consumption.
 */
export async function announcePresence(
  nc: NatsConnection,
  presence: Presence,
  onError: (err: unknown) => void,
): Promise<() => Promise<void>> {
  const kv = await presenceBucket(nc);
  const key = `${presence.durable}.${presence.instance}`;
  const put = (): void => void kv.put(key, JSON.stringify(presence)).catch(onError);
  put();
  const timer = setInterval(put, PRESENCE_EVERY_MS);
  timer.unref();
  return async () => {
    clearInterval(timer);
    await kv.delete(key).catch(onError);
  };
}
