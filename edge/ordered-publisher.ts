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
 *
 * A publish is one entry object from start to end: it listens to the target (AsyncPublisher.send)
 * and is itself the answer handed to the caller, so that no promise or closure is made per message
 * on the way (`publish` wraps it in a promise for callers that want one).
 */
import type { MsgHdrs } from '@nats-io/transport-node';
import type { Logger } from '../lib/log.ts';
import { sleep } from '../lib/timers.ts';
import {
  isPermanentPublishError,
  type AsyncPublisher,
  type JetStreamPublishError,
  type PublishListener,
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

/** Told how a publish ended, once: stored (or dropped as refused for good), or stopped first. */
export interface PublishCallbacks<R extends PublishRequest = PublishRequest> {
  published(ack: Published<R>): void;
  stopped(err: Error, request: R): void;
}

/**
 * Where publishes go: AsyncPublisher, whose `send` answers a listener; or anything with a `publish`
 * that returns a promise of the PubAck (tests).
 */
export type PublishTarget = Pick<AsyncPublisher, 'publish'> & Partial<Pick<AsyncPublisher, 'send'>>;

const State = {
  /** Not sent yet: made while recovering. */
  queued: 0,
  inFlight: 1,
  stored: 2,
  failed: 3,
} as const;
type State = (typeof State)[keyof typeof State];

/** One publish: the target's listener while in flight, then the answer handed to the caller. */
class Entry<R extends PublishRequest> implements PublishListener, Published<R> {
  /** Set once `request` is the replacement of a refused one: it is not replaced again. */
  replaced = false;
  state: State = State.queued;
  stream = '';
  seq = 0;
  duplicate = false;
  dropped = false;
  error?: unknown;
  /** The recovery waiting for the attempt in flight: true once stored, false once failed. */
  waiter?: (stored: boolean) => void;

  constructor(
    private readonly owner: OrderedPublisher<R>,
    public request: R,
    readonly callbacks: PublishCallbacks<R>,
  ) {}

  stored(stream: string, seq: number, duplicate: boolean): void {
    this.stream = stream;
    this.seq = seq;
    this.duplicate = duplicate;
    this.owner.attemptStored(this);
  }

  failed(err: unknown): void {
    this.owner.attemptFailed(this, err);
  }

  /** Settles the recovery's wait, if any. */
  settleAttempt(stored: boolean): void {
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.(stored);
  }
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
    private readonly target: PublishTarget,
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
    return new Promise<Published<R>>((resolve, reject) =>
      this.submit(request, { published: resolve, stopped: reject }),
    );
  }

  /**
   * As `publish`, answering `callbacks` instead of a promise: `published` once this and every
   * earlier publish are stored (or dropped as refused for good), `stopped` only when stopped. One
   * `callbacks` object may serve every publish: the answer carries the request.
   */
  submit(request: R, callbacks: PublishCallbacks<R>): void {
    const entry = new Entry(this, request, callbacks);
    this.entries.push(entry);
    if (!this.recovering) this.send(entry);
  }

  private send(entry: Entry<R>): void {
    entry.state = State.inFlight;
    const { subject, payload, headers } = entry.request;
    if (this.target.send) {
      this.target.send(subject, payload, headers, entry);
      return;
    }
    this.target.publish(subject, payload, headers).then(
      (ack) => entry.stored(ack.stream, ack.seq, ack.duplicate),
      (err: unknown) => entry.failed(err),
    );
  }

  /** @internal An attempt of `entry` was stored. */
  attemptStored(entry: Entry<R>): void {
    this.stored(entry);
    entry.settleAttempt(true);
  }

  /** @internal An attempt of `entry` failed. */
  attemptFailed(entry: Entry<R>, err: unknown): void {
    if (isPermanentPublishError(err)) {
      const instead = entry.replaced ? undefined : this.options.onRefused?.(entry.request, err);
      if (instead) {
        entry.request = instead;
        entry.replaced = true;
        // The recovery, if waiting, waits on for the replacement's answer.
        this.send(entry);
        return;
      }
      this.options.onDropped?.(entry.request, err);
      entry.stream = '';
      entry.seq = 0;
      entry.duplicate = false;
      entry.dropped = true;
      this.stored(entry);
      entry.settleAttempt(true);
      return;
    }
    entry.state = State.failed;
    entry.error = err;
    this.options.onRetry?.(err);
    if (!this.recovering) this.startRecovery(err);
    entry.settleAttempt(false);
  }

  private stored(entry: Entry<R>): void {
    entry.state = State.stored;
    if (!this.recovering) this.release();
  }

  /** Resolves the stored publishes at the head, in order. */
  private release(): void {
    const entries = this.entries;
    while (entries.length > 0 && entries[0]!.state === State.stored) {
      const entry = entries.shift()!;
      entry.callbacks.published(entry);
    }
  }

  /** Resolves once the attempt of `entry` now in flight is answered: true once stored. */
  private attempt(entry: Entry<R>): Promise<boolean> {
    return new Promise<boolean>((resolve) => {
      entry.waiter = resolve;
    });
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
        await this.attempt(head);
        continue;
      }
      if (head.state === State.stored) {
        this.release();
        continue;
      }
      if (signal.aborted) {
        for (const entry of this.entries.splice(0))
          entry.callbacks.stopped(new Error('stopped before JetStream stored the message'), entry.request);
        break;
      }
      // Failed or queued: one attempt, alone; backoff only after a retry failed too.
      const answered = this.attempt(head);
      this.send(head);
      if (await answered) {
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
