/**
 * Operating the dead-letter stream (cloud/dlq.ts): listing dead letters, reading one in full, and
 * redriving them through their consumer's own sink (docs/dead-letters.md). No durable is touched:
 * the stream is read with an ordered consumer or by sequence.
 *
 * A redrive writes each dead letter as the message its consumer once failed to write — original
 * subject, sequence and headers, the same payload bytes — through the replay path (SinkWriter).
 * What the sink takes is deleted from the DLQ; what it refuses again is kept, with the new reason,
 * as a replacement dead letter, and the old one is deleted only once the replacement is stored.
 */
import { randomUUID } from 'node:crypto';
import {
  DeliverPolicy,
  jetstream,
  jetstreamManager,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  type StoredMsg,
} from '@nats-io/jetstream';
import { headers as natsHeaders, type MsgHdrs, type NatsConnection } from '@nats-io/transport-node';
import { describeError, UsageError } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import { isStreamNotFound } from '../lib/nats.ts';
import type { Progress } from '../lib/progress.ts';
import { Header } from '../schemas/headers.ts';
import { parseSubject } from '../schemas/subjects.ts';
import type { ConsumerConfig } from './consumer.ts';
import { consumerEntry } from './consumers.ts';
import { DeadLetterReason, deadLetterHeaders, dlqMessageId, dlqSubject, DLQ_SUBJECT_ROOT } from './dlq.ts';
import { subjectMatches } from './runner-filters.ts';
import type { Sink, SinkMessage } from './sink.ts';
import { SinkUnavailableError, SinkWriter } from './sink-writer.ts';

/** A dead letter as `dlq list` shows it: where it came from and why, without its payload. */
export interface DeadLetterSummary {
  /** Sequence of the dead letter in the dead-letter stream. */
  dlqSeq: number;
  /** Its subject there, `dlq.<consumer>.<original subject>`. */
  dlqSubject: string;
  /** The durable that gave up on it (`archive`, `monitor`, `ingest-influx1`, …). */
  consumer: string;
  /** Stream of the original (`BSU`). */
  stream: string;
  /** Stream sequence of the original; undefined if the header is missing or not a number. */
  seq: number | undefined;
  /** Subject of the original. */
  subject: string;
  /** `<class>: <detail>`, as the consumer wrote it. */
  reason: string;
  /** The first word of `reason` (`rejected`, `permanent`, `bad-subject`, `max-deliveries`). */
  reasonClass: string;
  /** Deliveries of the original when it was dead-lettered. */
  deliveries: number | undefined;
  /** When the dead-letter stream stored it, ISO-8601 UTC. */
  deadLetteredAt: string;
  /** Size of the payload, in bytes. */
  payloadBytes: number;
}

/** One dead letter in full. */
export interface DeadLetterDetail extends DeadLetterSummary {
  /** Every header, every value, as stored. */
  headers: Record<string, string[]>;
  payload: Uint8Array;
}

/** Where a list or a redrive reads. */
export interface DlqSelection {
  /** The dead-letter stream (`BSU_DLQ`). */
  stream: string;
  /** Only this consumer's dead letters (subjects `dlq.<consumer>.>`). */
  consumer?: string;
}

const CONSUMER_NAME = /^[A-Za-z0-9_-]+$/;

/** Subject filter of a selection: `dlq.>` or `dlq.<consumer>.>`; UsageError for a bad name. */
export function dlqFilter(consumer?: string): string {
  if (consumer === undefined) return `${DLQ_SUBJECT_ROOT}.>`;
  if (!CONSUMER_NAME.test(consumer))
    throw new UsageError(`--consumer must be a durable name (letters, digits, - and _), got ${consumer}`);
  return `${DLQ_SUBJECT_ROOT}.${consumer}.>`;
}

/** Class of a reason: the text before its first colon. */
export const reasonClassOf = (reason: string): string => {
  const colon = reason.indexOf(':');
  return (colon >= 0 ? reason.slice(0, colon) : reason).trim() || 'unknown';
};

const intOrUndefined = (text: string): number | undefined => {
  const n = Number(text);
  return text !== '' && Number.isSafeInteger(n) ? n : undefined;
};

/** Reads a dead letter's headers; subject tokens stand in for a missing consumer or subject. */
function summaryOf(
  dlqSeq: number,
  subject: string,
  hdrs: MsgHdrs | undefined,
  storedAtMs: number,
  payloadBytes: number,
): DeadLetterSummary {
  const get = (key: string): string => (hdrs?.has(key) ? hdrs.get(key) : '');
  const tokens = subject.split('.');
  const reason = get(Header.dlqReason);
  return {
    dlqSeq,
    dlqSubject: subject,
    consumer: get(Header.dlqConsumer) || (tokens[1] ?? ''),
    stream: get(Header.dlqStream),
    seq: intOrUndefined(get(Header.dlqSeq)),
    subject: get(Header.dlqSubject) || tokens.slice(2).join('.'),
    reason,
    reasonClass: reasonClassOf(reason),
    deliveries: intOrUndefined(get(Header.dlqDeliveries)),
    deadLetteredAt: new Date(storedAtMs).toISOString(),
    payloadBytes,
  };
}

/** A MsgHdrs with every value of `headers`. */
function hdrsOf(headers: Record<string, string[]>): MsgHdrs {
  const h = natsHeaders();
  for (const [key, values] of Object.entries(headers)) for (const value of values) h.append(key, value);
  return h;
}

function headersOf(hdrs: MsgHdrs | undefined): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  if (hdrs) for (const [key, values] of hdrs) out[key] = [...values];
  return out;
}

const jsMsgTimeMs = (msg: JsMsg): number => Math.floor(msg.info.timestampNanos / 1e6);

function detailOfJsMsg(msg: JsMsg): DeadLetterDetail {
  return {
    ...summaryOf(msg.seq, msg.subject, msg.headers, jsMsgTimeMs(msg), msg.data.byteLength),
    headers: headersOf(msg.headers),
    payload: msg.data,
  };
}

function detailOfStored(msg: StoredMsg): DeadLetterDetail {
  return {
    ...summaryOf(msg.seq, msg.subject, msg.header, msg.time.getTime(), msg.data.byteLength),
    headers: headersOf(msg.header),
    payload: msg.data,
  };
}

/** The stream's last sequence and whether it exists. */
async function streamState(jsm: JetStreamManager, stream: string) {
  try {
    const { state } = await jsm.streams.info(stream);
    return { exists: true, messages: state.messages, lastSeq: state.last_seq };
  } catch (err) {
    if (isStreamNotFound(err)) return { exists: false, messages: 0, lastSeq: 0 };
    throw err;
  }
}

interface ScanOptions extends DlqSelection {
  /** Last sequence to read: dead letters stored after the scan began are left out. */
  toSeq: number;
  /** Only headers (a list needs no payloads: a full DLQ holds up to a GiB of them). */
  headersOnly: boolean;
  batchSize?: number;
  signal?: AbortSignal;
}

/**
 * The selection's messages up to `toSeq`, in sequence order, in batches, through an ordered
 * consumer (no durable, no acks, recreated by the client after a hiccup).
 */
async function* scanDlq(nc: NatsConnection, o: ScanOptions): AsyncGenerator<JsMsg[]> {
  if (o.toSeq < 1) return;
  const consumer = await jetstream(nc).consumers.get(o.stream, {
    deliver_policy: DeliverPolicy.StartSequence,
    opt_start_seq: 1,
    filter_subjects: dlqFilter(o.consumer),
    ...(o.headersOnly ? { headers_only: true } : {}),
  });
  // One info up front spares an empty selection a fetch that waits out its expiry.
  if ((await consumer.info(true)).num_pending === 0) return;
  for (;;) {
    o.signal?.throwIfAborted();
    const batch: JsMsg[] = [];
    let done = false;
    let received = false;
    const iter = await consumer.fetch({ max_messages: o.batchSize ?? 1_000, expires: 2_000 });
    for await (const msg of iter) {
      received = true;
      if (msg.seq > o.toSeq) {
        done = true;
        iter.stop();
        break;
      }
      batch.push(msg);
      if (msg.seq === o.toSeq || msg.info.pending === 0) {
        // Without stopping, the fetch would wait out its expiry for messages that will not come.
        done = true;
        iter.stop();
        break;
      }
    }
    if (batch.length > 0) yield batch;
    if (done) return;
    // An empty fetch: nothing matches any more, or the server was slow to answer.
    if (!received && (await consumer.info()).num_pending === 0) return;
  }
}

/** Counts of dead letters by consumer and by reason class. */
export class DeadLetterTally {
  total = 0;
  readonly byConsumer: Record<string, number> = {};
  readonly byReason: Record<string, number> = {};

  add(letter: Pick<DeadLetterSummary, 'consumer' | 'reasonClass'>): void {
    this.total++;
    this.byConsumer[letter.consumer] = (this.byConsumer[letter.consumer] ?? 0) + 1;
    this.byReason[letter.reasonClass] = (this.byReason[letter.reasonClass] ?? 0) + 1;
  }

  toJSON() {
    return { total: this.total, byConsumer: this.byConsumer, byReason: this.byReason };
  }
}

/**
 * Every dead letter of the selection stored when the call began, oldest first, without payloads:
 * the stream is read in batches of headers only, so memory stays flat whatever it holds.
 * Yields nothing when the stream does not exist (nothing was ever dead-lettered).
 */
export async function* listDeadLetters(
  nc: NatsConnection,
  selection: DlqSelection,
  options: { signal?: AbortSignal } = {},
): AsyncGenerator<DeadLetterSummary> {
  const filter = dlqFilter(selection.consumer);
  const state = await streamState(await jetstreamManager(nc), selection.stream);
  if (!state.exists || state.messages === 0) return;
  for await (const batch of scanDlq(nc, {
    ...selection,
    toSeq: state.lastSeq,
    headersOnly: true,
    signal: options.signal,
  })) {
    for (const msg of batch) {
      if (!subjectMatches(filter, msg.subject)) continue;
      // Headers-only delivery carries the payload's size in Nats-Msg-Size.
      const size = msg.headers?.has('Nats-Msg-Size') ? Number(msg.headers.get('Nats-Msg-Size')) : 0;
      yield summaryOf(msg.seq, msg.subject, msg.headers, jsMsgTimeMs(msg), size);
    }
  }
}

/** The dead letter at `dlqSeq`, in full; undefined if there is none (or no such stream). */
export async function getDeadLetter(
  nc: NatsConnection,
  stream: string,
  dlqSeq: number,
): Promise<DeadLetterDetail | undefined> {
  const jsm = await jetstreamManager(nc);
  try {
    const msg = await jsm.streams.getMessage(stream, { seq: dlqSeq });
    return msg ? detailOfStored(msg) : undefined;
  } catch (err) {
    if (isStreamNotFound(err)) return undefined;
    throw err;
  }
}

/** Payload as text when it is valid UTF-8, else base64 (as the archive stores records). */
export function payloadText(payload: Uint8Array): { payload: string; payloadEncoding: 'utf8' | 'base64' } {
  try {
    return { payload: new TextDecoder('utf-8', { fatal: true }).decode(payload), payloadEncoding: 'utf8' };
  } catch {
    return { payload: Buffer.from(payload).toString('base64'), payloadEncoding: 'base64' };
  }
}

/** The consumer (cloud/consumers.ts) behind a dead letter's consumer name, and its settings. */
export interface RedriveTarget {
  /** Registry name: `archive`, `monitor`, `ingest`. */
  consumer: string;
  /** Settings that make the consumer the one that dead-lettered (e.g. `{ sink: 'influx1' }`). */
  overrides: Record<string, unknown>;
}

/**
 * Maps a durable name to the consumer that owns it: `archive` and `monitor` (and `ingest`) by
 * name, `ingest-<sink>` to ingest writing through `<sink>` — the default durables of
 * cloud/consumers.ts. Undefined for any other name (a custom durable cannot be told apart).
 */
export function redriveTarget(durable: string): RedriveTarget | undefined {
  if (consumerEntry(durable)) return { consumer: durable, overrides: { durable } };
  const m = /^ingest-(.+)$/.exec(durable);
  if (m) return { consumer: 'ingest', overrides: { sink: m[1], durable } };
  return undefined;
}

/** Headers the original carried: the dead letter's, without the dead-letter and JetStream ones. */
function originalHeaders(headers: Record<string, string[]>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, values] of Object.entries(headers)) {
    if (/^switchyard-dlq-/i.test(key) || /^nats-/i.test(key)) continue;
    if (values[0] !== undefined) out[key] = values[0];
  }
  return out;
}

/**
 * The message the consumer failed to write, rebuilt from its dead letter; a string says why it
 * cannot be (the subject is not a hub subject, the original sequence is missing).
 */
export function sinkMessageOf(letter: DeadLetterDetail, storedAtMs: number): SinkMessage | string {
  const parts = parseSubject(letter.subject);
  if (!parts) return `subject ${letter.subject} is not bsu.<site>.<device>.<kind>`;
  if (letter.seq === undefined) return `no original sequence (${Header.dlqSeq})`;
  return {
    seq: letter.seq,
    subject: letter.subject,
    site: parts.site,
    device: parts.device,
    kind: parts.kind,
    storedAtMs,
    headers: originalHeaders(letter.headers),
    payload: letter.payload,
    deliveryCount: 1,
  };
}

/**
 * Message id of a replacement dead letter. Not the consumer's `<consumer>.<seq>`: that id was
 * used when the letter was first stored, and inside the duplicate window the replacement would be
 * dropped as its duplicate while the old letter is deleted. Naming the letter it replaces keeps a
 * retried attempt (the same old letter) de-duplicated.
 */
export const redriveMessageId = (consumer: string, seq: number, replacesDlqSeq: number): string =>
  `${dlqMessageId(consumer, seq)}.redrive-${replacesDlqSeq}`;

/** What a redrive needs of the consumers: their settings and their sinks. */
export interface RedriveSinks {
  /** The consumer's settings (throws when the name or the overrides are not valid). */
  config(consumer: string, overrides: Record<string, unknown>): Promise<{ config: ConsumerConfig }>;
  /** Its sink, opened (closed by the caller). */
  open(consumer: string, overrides: Record<string, unknown>): Promise<{ sink: Sink; config: ConsumerConfig }>;
}

export interface RedriveRequest extends DlqSelection {
  /** Only these DLQ sequences (with `consumer`, only those of that consumer). */
  seqs?: readonly number[];
}

/** How many dead letters a redrive would read, and the last sequence it reads up to. */
export interface RedrivePlan extends RedriveRequest {
  /** False when the dead-letter stream does not exist. */
  exists: boolean;
  /** Dead letters selected (with `seqs`: how many sequences were given). */
  selected: number;
  /** Dead letters stored after this (replacements among them) are not read. */
  toSeq: number;
}

/**
 * Counts what a redrive of `request` would read (one consumer info: nothing is read) and fixes the
 * last sequence it reads, so the replacements it stores are not redriven again in the same run.
 */
export async function planRedrive(nc: NatsConnection, request: RedriveRequest): Promise<RedrivePlan> {
  const filter = dlqFilter(request.consumer);
  const jsm = await jetstreamManager(nc);
  const state = await streamState(jsm, request.stream);
  const plan: RedrivePlan = { ...request, exists: state.exists, selected: 0, toSeq: state.lastSeq };
  if (!state.exists || state.messages === 0) return plan;
  if (request.seqs) {
    plan.selected = request.seqs.length;
    return plan;
  }
  // Counting takes one consumer info, nothing read.
  const consumer = await jetstream(nc).consumers.get(request.stream, {
    deliver_policy: DeliverPolicy.StartSequence,
    opt_start_seq: 1,
    filter_subjects: filter,
    headers_only: true,
  });
  plan.selected = (await consumer.info(true)).num_pending;
  return plan;
}

/** A dead letter the redrive wrote (or, in a dry run, would write) and removed. */
export interface RedrivenLetter {
  dlqSeq: number;
  consumer: string;
  seq: number;
  subject: string;
}

/** A dead letter whose consumer refused it again, or that could not be tried. */
export interface FailedLetter extends RedrivenLetter {
  /** Why: the sink's new reason, or what kept the redrive from writing it. */
  reason: string;
  /**
   * `replaced`: kept as a new dead letter (`replacedBy`) with the new reason, the old one deleted;
   * `unchanged`: kept as it was (the sink could not be reached, or the replacement not stored).
   */
  kept: 'replaced' | 'unchanged';
  replacedBy?: number;
}

/** A dead letter the redrive left alone: it cannot go through any consumer's sink. */
export interface SkippedLetter {
  dlqSeq: number;
  consumer?: string;
  seq?: number;
  subject?: string;
  reason: string;
}

/** At most this many of each kind of outcome are listed; the counts are always complete. */
export const REDRIVE_LIST_LIMIT = 1_000;

export interface RedriveReport {
  stream: string;
  consumer: string | undefined;
  dryRun: boolean;
  /** Dead letters read. */
  selected: number;
  redrivenCount: number;
  failedCount: number;
  skippedCount: number;
  /** In a dry run: those that would be redriven. */
  redriven: RedrivenLetter[];
  failed: FailedLetter[];
  skipped: SkippedLetter[];
}

export interface RedriveRun {
  nc: NatsConnection;
  plan: RedrivePlan;
  sinks: RedriveSinks;
  log: Logger;
  /** Dead letters written per request (default 100). */
  batchSize?: number;
  /** The SinkWriter's retry delays, in ms (default its own). */
  backoffMs?: readonly number[];
  /** Transient failures of one batch before the sink counts as unavailable. */
  maxAttempts?: number;
  progress?: Progress;
  signal?: AbortSignal;
  dryRun?: boolean;
}

interface Pending {
  letter: DeadLetterDetail;
  message: SinkMessage;
}

interface TargetState {
  target: RedriveTarget;
  /** Set once the settings or the sink failed: every letter of the target is kept unchanged. */
  broken?: string;
  filters?: readonly string[];
  writer?: SinkWriter;
  pending: Pending[];
}

/**
 * Redrives the planned dead letters through their consumers' sinks, oldest first, in batches per
 * consumer. A letter the sink takes is deleted from the DLQ; one it refuses is stored again with the
 * new reason (a replacement dead letter) and only then deleted; one whose sink cannot be reached
 * (after the SinkWriter's retries) is left as it was. Letters that cannot be rebuilt (an unknown
 * consumer, a subject that is not a hub subject, outside the consumer's filter) are skipped.
 * A dry run reads and sorts them, and writes and deletes nothing.
 */
export async function redriveDeadLetters(run: RedriveRun): Promise<RedriveReport> {
  const { plan, nc } = run;
  const report: RedriveReport = {
    stream: plan.stream,
    consumer: plan.consumer,
    dryRun: run.dryRun ?? false,
    selected: 0,
    redrivenCount: 0,
    failedCount: 0,
    skippedCount: 0,
    redriven: [],
    failed: [],
    skipped: [],
  };
  if (!plan.exists) return report;
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);
  const batchSize = run.batchSize ?? 100;
  const targets = new Map<string, TargetState>();
  const filter = dlqFilter(plan.consumer);

  const done = (n = 1): void => run.progress?.increment(n);
  const skip = (letter: DeadLetterDetail | undefined, dlqSeq: number, reason: string): void => {
    report.skippedCount++;
    if (report.skipped.length < REDRIVE_LIST_LIMIT)
      report.skipped.push(
        letter
          ? { dlqSeq, consumer: letter.consumer, seq: letter.seq, subject: letter.subject, reason }
          : { dlqSeq, reason },
      );
    done();
  };
  const redriven = (p: Pending): void => {
    report.redrivenCount++;
    if (report.redriven.length < REDRIVE_LIST_LIMIT) report.redriven.push(identity(p));
    done();
  };
  const failed = (p: Pending, reason: string, replacedBy?: number): void => {
    report.failedCount++;
    if (report.failed.length < REDRIVE_LIST_LIMIT)
      report.failed.push({
        ...identity(p),
        reason,
        kept: replacedBy === undefined ? 'unchanged' : 'replaced',
        ...(replacedBy === undefined ? {} : { replacedBy }),
      });
    done();
  };

  const stateOf = async (consumer: string): Promise<TargetState | string> => {
    const known = targets.get(consumer);
    if (known) return known;
    const target = redriveTarget(consumer);
    if (!target) return `no consumer owns durable ${consumer} (archive, monitor, ingest-<sink>)`;
    const state: TargetState = { target, pending: [] };
    try {
      state.filters = (await run.sinks.config(target.consumer, target.overrides)).config.filterSubjects;
    } catch (err) {
      return `consumer ${consumer}: ${describeError(err)}`;
    }
    targets.set(consumer, state);
    return state;
  };

  const flush = async (state: TargetState): Promise<void> => {
    const batch = state.pending;
    state.pending = [];
    if (batch.length === 0) return;
    if (run.dryRun) {
      for (const p of batch) redriven(p);
      return;
    }
    if (!state.writer && !state.broken) {
      try {
        const { sink } = await run.sinks.open(state.target.consumer, state.target.overrides);
        state.writer = new SinkWriter({
          sink,
          log: run.log,
          signal: run.signal,
          ...(run.backoffMs ? { backoffMs: run.backoffMs } : {}),
          ...(run.maxAttempts ? { maxAttempts: run.maxAttempts } : {}),
        });
      } catch (err) {
        state.broken = `the sink could not be opened: ${describeError(err)}`;
      }
    }
    if (state.broken || !state.writer) {
      for (const p of batch) failed(p, state.broken ?? 'no sink');
      return;
    }
    let outcome;
    try {
      outcome = await state.writer.write(batch.map((p) => p.message));
    } catch (err) {
      if (!(err instanceof SinkUnavailableError)) throw err;
      // The store is down: the rest of this consumer's letters would meet the same store.
      state.broken = describeError(err);
      for (const p of batch) failed(p, state.broken);
      return;
    }
    const refused = new Map(outcome.rejected.map((r) => [r.seq, r.reason] as const));
    for (const p of batch) {
      const reason = refused.get(p.message.seq);
      if (reason === undefined) {
        await deleteLetter(jsm, plan.stream, p.letter.dlqSeq);
        redriven(p);
      } else {
        const newReason = `${DeadLetterReason.rejected}: ${reason}`;
        const replacedBy = await keepWithReason(js, jsm, plan.stream, p, reason, run.log);
        if (typeof replacedBy === 'number') failed(p, newReason, replacedBy);
        else failed(p, `${newReason} (the new reason not stored: ${replacedBy.notStored})`);
      }
    }
  };

  const take = async (letter: DeadLetterDetail): Promise<void> => {
    report.selected++;
    if (!subjectMatches(filter, letter.dlqSubject))
      return skip(letter, letter.dlqSeq, `not a dead letter of ${plan.consumer ?? 'any consumer'}`);
    if (!letter.reason)
      return skip(letter, letter.dlqSeq, `no ${Header.dlqReason} header: not a dead letter`);
    const state = await stateOf(letter.consumer);
    if (typeof state === 'string') return skip(letter, letter.dlqSeq, state);
    const message = sinkMessageOf(letter, await originalStoredAtMs(jsm, letter));
    if (typeof message === 'string') return skip(letter, letter.dlqSeq, message);
    if (state.filters && !state.filters.some((f) => subjectMatches(f, message.subject)))
      return skip(letter, letter.dlqSeq, `outside the filters of ${letter.consumer}`);
    // A sink reports rejections by sequence: two letters of one original go in separate batches.
    if (state.pending.some((p) => p.message.seq === message.seq)) await flush(state);
    state.pending.push({ letter, message });
    if (state.pending.length >= batchSize) await flush(state);
  };

  if (plan.seqs) {
    for (const dlqSeq of [...new Set(plan.seqs)].sort((a, b) => a - b)) {
      run.signal?.throwIfAborted();
      const letter = dlqSeq <= plan.toSeq ? await getDeadLetter(nc, plan.stream, dlqSeq) : undefined;
      if (letter) await take(letter);
      else {
        report.selected++;
        skip(undefined, dlqSeq, `no dead letter at sequence ${dlqSeq}`);
      }
    }
  } else {
    for await (const batch of scanDlq(nc, { ...plan, headersOnly: false, signal: run.signal })) {
      for (const msg of batch) await take(detailOfJsMsg(msg));
    }
  }
  for (const state of targets.values()) await flush(state);
  return report;
}

const identity = (p: Pending): RedrivenLetter => ({
  dlqSeq: p.letter.dlqSeq,
  consumer: p.letter.consumer,
  seq: p.message.seq,
  subject: p.message.subject,
});

/**
 * When the hub stored the original: from the stream while it still holds it (the archive keys and
 * records by it), else the bridge's receive time, else when it was dead-lettered.
 */
async function originalStoredAtMs(jsm: JetStreamManager, letter: DeadLetterDetail): Promise<number> {
  if (letter.stream && letter.seq !== undefined) {
    const original = await jsm.streams.getMessage(letter.stream, { seq: letter.seq }).catch(() => null);
    if (original && original.subject === letter.subject) return original.time.getTime();
  }
  const received = Date.parse(letter.headers[Header.receivedAt]?.[0] ?? '');
  return Number.isFinite(received) ? received : Date.parse(letter.deadLetteredAt);
}

/** Deletes a dead letter; one already gone (another redrive took it) counts as deleted. */
async function deleteLetter(jsm: JetStreamManager, stream: string, dlqSeq: number): Promise<void> {
  try {
    // No secure erase: a dead letter is a copy of what BSU and the archive hold.
    await jsm.streams.deleteMessage(stream, dlqSeq, false);
  } catch (err) {
    if (err instanceof JetStreamApiError && (await jsm.streams.getMessage(stream, { seq: dlqSeq })) === null)
      return;
    throw err;
  }
}

/**
 * Stores the letter again with the sink's new reason, then deletes the old one; resolves with the
 * replacement's sequence, or with why the replacement was not stored (a full dead-letter stream
 * refuses it): the old letter is then kept untouched.
 */
async function keepWithReason(
  js: JetStreamClient,
  jsm: JetStreamManager,
  stream: string,
  p: Pending,
  reason: string,
  log: Logger,
): Promise<number | { notStored: string }> {
  const { letter, message } = p;
  const headers = deadLetterHeaders({
    consumer: letter.consumer,
    stream: letter.stream,
    seq: message.seq,
    subject: message.subject,
    deliveries: letter.deliveries ?? 0,
    reason: DeadLetterReason.rejected,
    detail: reason,
    payload: letter.payload,
    headers: hdrsOf(letter.headers),
  });
  const publish = (msgID: string) =>
    js.publish(dlqSubject(letter.consumer, message.subject), letter.payload, {
      msgID,
      headers,
      timeout: 5_000,
    });
  let ack;
  try {
    const msgID = redriveMessageId(letter.consumer, message.seq, letter.dlqSeq);
    ack = await publish(msgID);
    // JetStream remembers an id after its message was deleted: a duplicate of a replacement that is
    // gone (redriven since) would leave nothing in its place. Store it under an id of its own then.
    if (ack.duplicate && (await jsm.streams.getMessage(stream, { seq: ack.seq })) === null)
      ack = await publish(`${msgID}.${randomUUID()}`);
  } catch (err) {
    log.error({ dlqSeq: letter.dlqSeq, err: describeError(err) }, 'refused again; the new reason not stored');
    return { notStored: describeError(err) };
  }
  if (ack.stream !== stream)
    throw new Error(`dead letters of ${letter.consumer} are stored in stream ${ack.stream}, not ${stream}`);
  await deleteLetter(jsm, stream, letter.dlqSeq);
  log.info({ dlqSeq: letter.dlqSeq, replacedBy: ack.seq, seq: message.seq, reason }, 'refused again: kept');
  return ack.seq;
}
