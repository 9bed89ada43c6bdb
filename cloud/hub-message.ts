/** A message fetched from the hub stream, as a sink sees it (cloud/sink.ts `SinkMessage`). */
import type { JsMsg } from '@nats-io/jetstream';
import { firstHeaderValues } from '../lib/nats.ts';
import type { SubjectParts } from '../schemas/subjects.ts';
import type { SinkMessage } from './sink.ts';

/**
 * Headers and the stored time are parsed on first use: a sink that never reads them (ingest) does
 * not pay for them.
 */
export class HubMessage implements SinkMessage {
  readonly seq: number;
  readonly subject: string;
  readonly site: string;
  readonly device: string;
  readonly kind: string;
  readonly payload: Uint8Array;
  readonly deliveryCount: number;
  readonly #msg: JsMsg;
  #headers: Record<string, string> | undefined;

  constructor(msg: JsMsg, parts: SubjectParts) {
    const info = msg.info;
    this.#msg = msg;
    this.seq = info.streamSequence;
    this.subject = msg.subject;
    this.site = parts.site;
    this.device = parts.device;
    this.kind = parts.kind;
    this.payload = msg.data;
    this.deliveryCount = info.deliveryCount;
  }

  get headers(): Record<string, string> {
    return (this.#headers ??= firstHeaderValues(this.#msg));
  }

  get storedAtMs(): number {
    return Math.floor(this.#msg.info.timestampNanos / 1e6);
  }
}
