/**
 * Pipelined JetStream publishing: many publishes in flight on one connection, PubAcks matched by
 * reply subject on a single inbox subscription, timeouts swept by one timer. `js.publish()` costs a
 * full request per message (a timer and two pre-built errors), a large share of the bridge's CPU.
 * `send` answers a listener object instead of a promise, so that a publish in flight holds no
 * promise and no closure of its own; `publish` is the same with a promise.
 *
 * A lost connection fails every publish in flight at once (their PubAcks went with it), and
 * publishes fail at once until the client has reconnected (it would drop what it buffered
 * meanwhile), so the caller can publish them again in order (edge/ordered-publisher.ts).
 */
import {
  createInbox,
  InvalidArgumentError,
  type MsgHdrs,
  type NatsConnection,
  type Status,
  type Subscription,
} from '@nats-io/transport-node';

/** What the stream answered. */
export interface StoredAck {
  stream: string;
  seq: number;
  /** The message id was seen within the duplicate window: stored earlier, not again. */
  duplicate: boolean;
}

/** JetStream refused or did not answer a publish. */
export class JetStreamPublishError extends Error {
  override name = 'JetStreamPublishError';
  constructor(
    message: string,
    /**
     * JetStream's error code, `503` for no responders, `timeout` when no answer came, `disconnected`
     * when the connection was lost before it came, `closed` when the publisher stopped, `refused`
     * when the client would not send it (larger than the server's max_payload).
     */
    readonly code: number | 'timeout' | 'disconnected' | 'closed' | 'refused',
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** Told, once, how a publish ended. Called from the connection's callback: it must not throw. */
export interface PublishListener {
  stored(stream: string, seq: number, duplicate: boolean): void;
  failed(err: JetStreamPublishError): void;
}

class Pending {
  constructor(
    readonly listener: PublishListener,
    readonly deadlineMs: number,
  ) {}
}

/** A listener that settles a promise. */
class PromiseListener implements PublishListener {
  constructor(
    private readonly resolve: (ack: StoredAck) => void,
    readonly failed: (err: JetStreamPublishError) => void,
  ) {}

  stored(stream: string, seq: number, duplicate: boolean): void {
    this.resolve({ stream, seq, duplicate });
  }
}

export class AsyncPublisher {
  private readonly inbox: string;
  private readonly prefixLength: number;
  private readonly pending = new Map<number, Pending>();
  private readonly sub: Subscription;
  private readonly sweeper: NodeJS.Timeout;
  private readonly statuses: AsyncIterable<Status> & { stop?: () => void };
  private next = 0;
  private connected = true;

  constructor(
    private readonly nc: NatsConnection,
    private readonly timeoutMs: number,
  ) {
    this.inbox = createInbox();
    this.prefixLength = this.inbox.length + 1;
    this.sub = nc.subscribe(`${this.inbox}.*`, {
      callback: (err, msg) => {
        if (err) return;
        const id = Number(msg.subject.slice(this.prefixLength));
        const waiting = this.pending.get(id);
        if (!waiting) return;
        this.pending.delete(id);
        const listener = waiting.listener;
        if (msg.headers?.code === 503) {
          listener.failed(new JetStreamPublishError('no stream answered (no responders)', 503));
          return;
        }
        let body: {
          stream?: string;
          seq?: number;
          duplicate?: boolean;
          error?: { code: number; description: string };
        };
        try {
          body = msg.json();
        } catch (cause) {
          listener.failed(new JetStreamPublishError('unreadable PubAck', 500, { cause }));
          return;
        }
        if (body.error) listener.failed(new JetStreamPublishError(body.error.description, body.error.code));
        else listener.stored(body.stream ?? '', body.seq ?? 0, body.duplicate === true);
      },
    });
    this.sweeper = setInterval(() => this.sweep(), Math.max(10, Math.floor(timeoutMs / 4)));
    this.sweeper.unref();
    this.statuses = nc.status();
    void this.watchConnection();
  }

  /**
   * Fails what is in flight as soon as the connection is lost. The client announces it in the same
   * turn of the event loop in which the socket closed, before any new message can be handed over.
   */
  private async watchConnection(): Promise<void> {
    for await (const status of this.statuses) {
      if (status.type === 'disconnect') {
        this.connected = false;
        this.rejectAll(() => disconnected('connection lost before the PubAck came'));
      } else if (status.type === 'reconnect') {
        this.connected = true;
      }
    }
  }

  /** Publishes and resolves with the stream's PubAck; rejects with JetStreamPublishError. */
  publish(subject: string, payload: Uint8Array, headers: MsgHdrs): Promise<StoredAck> {
    return new Promise<StoredAck>((resolve, reject) =>
      this.send(subject, payload, headers, new PromiseListener(resolve, reject)),
    );
  }

  /**
   * Publishes and tells `listener` the stream's PubAck or why there is none, once. A publish that
   * cannot go out fails in a microtask, never before `send` returns.
   */
  send(subject: string, payload: Uint8Array, headers: MsgHdrs, listener: PublishListener): void {
    if (!this.connected) {
      failLater(listener, disconnected('not connected: the client would drop it on reconnecting'));
      return;
    }
    const id = ++this.next;
    this.pending.set(id, new Pending(listener, Date.now() + this.timeoutMs));
    try {
      this.nc.publish(subject, payload, { reply: `${this.inbox}.${id}`, headers });
    } catch (cause) {
      this.pending.delete(id);
      failLater(
        listener,
        cause instanceof InvalidArgumentError
          ? new JetStreamPublishError(`not sent: ${cause.message}`, 'refused', { cause })
          : new JetStreamPublishError('connection refused the publish', 'closed', { cause }),
      );
    }
  }

  get inFlight(): number {
    return this.pending.size;
  }

  private sweep(): void {
    const now = Date.now();
    // Map iteration follows insertion order, which is publish order: stop at the first live one.
    for (const [id, p] of this.pending) {
      if (p.deadlineMs > now) break;
      this.pending.delete(id);
      p.listener.failed(new JetStreamPublishError(`no PubAck within ${this.timeoutMs} ms`, 'timeout'));
    }
  }

  /** Rejects everything in flight and stops listening. */
  close(): void {
    clearInterval(this.sweeper);
    this.statuses.stop?.();
    this.sub.unsubscribe();
    this.rejectAll(() => new JetStreamPublishError('publisher closed', 'closed'));
  }

  /** Rejects everything in flight, in publish order. */
  private rejectAll(error: () => JetStreamPublishError): void {
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      p.listener.failed(error());
    }
  }
}

/**
 * Whether sending the same message again can never succeed: the client would not send it, or
 * JetStream answered a 4xx (larger than the stream's max_msg_size, a bad header …). No responders,
 * timeouts, a lost connection and 5xx answers are transient.
 */
export const isPermanentPublishError = (err: unknown): err is JetStreamPublishError =>
  err instanceof JetStreamPublishError &&
  (err.code === 'refused' || (typeof err.code === 'number' && err.code >= 400 && err.code < 500));

const failLater = (listener: PublishListener, err: JetStreamPublishError): void =>
  queueMicrotask(() => listener.failed(err));

const disconnected = (message: string): JetStreamPublishError =>
  new JetStreamPublishError(message, 'disconnected');
