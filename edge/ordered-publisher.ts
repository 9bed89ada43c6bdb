/**
 * JetStream publishing that is pipelined while the server answers and strictly ordered while it
 * does not.
 *
 * What holds:
 * - Publishes resolve in the order they were made, and none resolves before every earlier one is
 *   stored: a publish that failed (timed out, refused by JetStream, lost with the connection) is
 *   retried, alone and with backoff, until stored, and every later publish waits for it.
 * - Once one has failed, publishes made since are held, then sent one at a time in publish order
 *   once everything before them is stored; publishing is pipelined again when none is left.
 * - Stored order follows publish order across a lost connection: everything in flight fails at
 *   once (edge/async-publisher.ts) and is retried in order. After a timeout or a JetStream error of
 *   one message, the later messages already sent may be stored before its retry: they cannot be
 *   recalled without giving up pipelining.
 * - Only transient failures are retried. A publish the server refuses for good (isPermanentPublishError)
 *   is replaced once by what `onRefused` gives (the bridge: the message kept as invalid); when there
 *   is none, or that is refused too, it is dropped (`onDropped`) and resolves as such, so that no
 *   message can stall the ones after it.
 */
import type { MsgHdrs } from '@nats-io/transport-node';
import type { Logger } from '../lib/log.ts';
import { sleep } from '../lib/timers.ts';
import {
  isPermanentPublishError,
  type AsyncPublisher,
  type JetStreamPublishError,
  type StoredAck,
} from './async-publisher.ts';

export interface PublishRequest {
  subject: string;
  payload: Uint8Array;
  /** Including `Nats-Msg-Id`, which makes a retry of a stored message harmless. */
  headers: MsgHdrs;
}

/** The PubAck, and which request it answers (a refused one's replacement), or that it was dropped. */
export interface Published<R extends PublishRequest = PublishRequest> extends StoredAck {
  request: R;
  /** Refused for good, and nothing could be kept in its place. */
  dropped: boolean;
}

const State = {
  /** Not sent yet: made while recovering. */
  queued: 0,
  inFlight: 1,
  stored: 2,
  failed: 3,
} as const;
type State = (typeof State)[keyof typeof State];

interface Entry<R extends PublishRequest> {
  request: R;
  /** Set once `request` is the replacement of a refused one: it is not replaced again. */
  replaced?: boolean;
  state: State;
  ack?: Published<R>;
  error?: unknown;
  /** The attempt in flight: true once stored, false once failed (never rejects). */
  attempt?: Promise<boolean>;
  resolve: (ack: Published<R>) => void;
  reject: (err: Error) => void;
}

export interface OrderedPublisherOptions<R extends PublishRequest = PublishRequest> {
  /** First retry delay (ms); doubles up to `maxBackoffMs`. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  log: Logger;
  /** Called on every failed attempt (for metrics). */
  onRetry?: (err: unknown) => void;
  /** What to publish instead of a request the server refuses for good; none: it is dropped. */
  onRefused?: (request: R, err: JetStreamPublishError) => R | undefined;
  /** Called when a publish is refused for good and nothing replaces it. */
  onDropped?: (request: R, err: JetStreamPublishError) => void;
  /** Aborting stops retrying: waiting publishes reject. */
  signal: AbortSignal;
}

export class OrderedPublisher<R extends PublishRequest = PublishRequest> {
  /** Every publish not yet resolved, in publish order. */
  private readonly entries: Entry<R>[] = [];
  private recovering = false;

  constructor(
    private readonly target: Pick<AsyncPublisher, 'publish'>,
    private readonly options: OrderedPublisherOptions<R>,
  ) {}

  /** True while publishes are being retried one by one. */
  get degraded(): boolean {
    return this.recovering;
  }

  /**
   * Resolves with the PubAck once this and every earlier publish are stored (or dropped as refused
   * for good); rejects only when stopped.
   */
  publish(request: R): Promise<Published<R>> {
    return new Promise<Published<R>>((resolve, reject) => {
      const entry: Entry<R> = { request, state: State.queued, resolve, reject };
      this.entries.push(entry);
      if (!this.recovering) void this.send(entry);
    });
  }

  private send(entry: Entry<R>): Promise<boolean> {
    entry.state = State.inFlight;
    const { subject, payload, headers } = entry.request;
    entry.attempt = this.target.publish(subject, payload, headers).then(
      (ack) => this.stored(entry, { ...ack, request: entry.request, dropped: false }),
      (err: unknown) => {
        if (isPermanentPublishError(err)) {
          const instead = entry.replaced ? undefined : this.options.onRefused?.(entry.request, err);
          if (instead) {
            entry.request = instead;
            entry.replaced = true;
            return this.send(entry);
          }
          this.options.onDropped?.(entry.request, err);
          return this.stored(entry, {
            stream: '',
            seq: 0,
            duplicate: false,
            request: entry.request,
            dropped: true,
          });
        }
        entry.state = State.failed;
        entry.error = err;
        this.options.onRetry?.(err);
        if (!this.recovering) this.startRecovery(err);
        return false;
      },
    );
    return entry.attempt;
  }

  private stored(entry: Entry<R>, ack: Published<R>): true {
    entry.state = State.stored;
    entry.ack = ack;
    if (!this.recovering) this.release();
    return true;
  }

  /** Resolves the stored publishes at the head, in order. */
  private release(): void {
    while (this.entries.length > 0 && this.entries[0]!.state === State.stored) {
      const entry = this.entries.shift()!;
      entry.resolve(entry.ack!);
    }
  }

  private startRecovery(cause: unknown): void {
    this.recovering = true;
    this.options.log.warn(
      { err: describe(cause) },
      'publish failed: retrying in order until JetStream answers',
    );
    void this.recover();
  }

  /**
   * Walks the publishes in order: waits for the answer to one in flight, resolves one stored, and
   * sends one failed or queued alone until it is stored.
   */
  private async recover(): Promise<void> {
    const { signal, log } = this.options;
    const minMs = this.options.minBackoffMs ?? 100;
    const maxMs = this.options.maxBackoffMs ?? 5000;
    let delayMs = minMs;
    while (this.entries.length > 0) {
      const head = this.entries[0]!;
      if (head.state === State.inFlight) {
        await head.attempt;
        continue;
      }
      if (head.state === State.stored) {
        this.release();
        continue;
      }
      if (signal.aborted) {
        for (const entry of this.entries.splice(0))
          entry.reject(new Error('stopped before JetStream stored the message'));
        break;
      }
      // Failed or queued: one attempt, alone; backoff only after a retry failed too.
      if (await this.send(head)) {
        delayMs = minMs;
        continue;
      }
      log.debug({ err: describe(head.error), delayMs }, 'publish retry failed');
      await sleep(delayMs + Math.random() * delayMs * 0.2, signal);
      delayMs = Math.min(maxMs, delayMs * 2);
    }
    this.recovering = false;
    if (!signal.aborted) log.info('JetStream answers again: publishing pipelined');
  }
}

const describe = (err: unknown): string => (err instanceof Error ? err.message : String(err));
