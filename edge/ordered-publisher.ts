/**
 * JetStream publishing that is pipelined while the server answers and strictly ordered while it
 * does not. Normally many publishes are in flight at once (one TCP connection keeps them in order).
 * When one fails, it and every publish after it go into a recovery queue that is retried one message
 * at a time, in arrival order, with backoff, until the server takes them: a device's readings are
 * stored in the order they arrived, and nothing is given up on.
 */
import type { MsgHdrs } from '@nats-io/transport-node';
import type { Logger } from '../lib/log.ts';
import { sleep } from '../lib/timers.ts';
import type { AsyncPublisher, StoredAck } from './async-publisher.ts';

export interface PublishRequest {
  subject: string;
  payload: Uint8Array;
  /** Including `Nats-Msg-Id`, which makes a retry of a stored message harmless. */
  headers: MsgHdrs;
}

interface Waiting {
  request: PublishRequest;
  resolve: (ack: StoredAck) => void;
  reject: (err: Error) => void;
}

export interface OrderedPublisherOptions {
  /** First retry delay (ms); doubles up to `maxBackoffMs`. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  log: Logger;
  /** Called on every failed attempt (for metrics). */
  onRetry?: (err: unknown) => void;
  /** Aborting stops retrying: waiting publishes reject. */
  signal: AbortSignal;
}

export class OrderedPublisher {
  private readonly recovery: Waiting[] = [];
  private recovering = false;

  constructor(
    private readonly target: Pick<AsyncPublisher, 'publish'>,
    private readonly options: OrderedPublisherOptions,
  ) {}

  /** True while publishes are being retried one by one. */
  get degraded(): boolean {
    return this.recovering;
  }

  /** Resolves with the PubAck once stored; rejects only when stopped. */
  publish(request: PublishRequest): Promise<StoredAck> {
    if (this.recovering) return this.enqueue(request);
    return this.target.publish(request.subject, request.payload, request.headers).catch((err: unknown) => {
      this.options.onRetry?.(err);
      return this.enqueue(request, err);
    });
  }

  private enqueue(request: PublishRequest, cause?: unknown): Promise<StoredAck> {
    return new Promise<StoredAck>((resolve, reject) => {
      this.recovery.push({ request, resolve, reject });
      if (!this.recovering) {
        this.recovering = true;
        this.options.log.warn(
          { err: describe(cause) },
          'publish failed: retrying in order until JetStream answers',
        );
        void this.recover();
      }
    });
  }

  private async recover(): Promise<void> {
    const { signal, log } = this.options;
    const minMs = this.options.minBackoffMs ?? 100;
    const maxMs = this.options.maxBackoffMs ?? 5000;
    let delayMs = minMs;
    while (this.recovery.length > 0) {
      const head = this.recovery[0]!;
      if (signal.aborted) {
        for (const w of this.recovery.splice(0))
          w.reject(new Error('stopped before JetStream stored the message'));
        break;
      }
      try {
        const ack = await this.target.publish(
          head.request.subject,
          head.request.payload,
          head.request.headers,
        );
        this.recovery.shift();
        head.resolve(ack);
        delayMs = minMs;
      } catch (err) {
        this.options.onRetry?.(err);
        log.debug({ err: describe(err), delayMs }, 'publish retry failed');
        await sleep(delayMs + Math.random() * delayMs * 0.2, signal);
        delayMs = Math.min(maxMs, delayMs * 2);
      }
    }
    this.recovering = false;
    if (!signal.aborted) log.info('JetStream answers again: publishing pipelined');
  }
}

const describe = (err: unknown): string => (err instanceof Error ? err.message : String(err));
