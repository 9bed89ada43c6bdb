/** NATS connections with the settings every Switchyard process shares. */
import { readFileSync } from 'node:fs';
import { JetStreamApiCodes, JetStreamApiError, type JsMsg } from '@nats-io/jetstream';
import {
  AuthorizationError,
  connect,
  credsAuthenticator,
  nkeyAuthenticator,
  type ConnectionOptions,
  type MsgHdrs,
  type NatsConnection,
} from '@nats-io/transport-node';
import Type, { type Static } from 'typebox';
import type { Logger } from './log.ts';
import { isLoopbackUrl } from './secure.ts';
import { startContext, unreachableReporter } from './start-context.ts';
import { sleep } from './timers.ts';

/**
 * How a process proves who it is to NATS and checks the server, as config properties every
 * command that connects declares (`natsUrl` plus these). Secrets come from the environment or a
 * file, never a flag (lib/config.ts).
 */
export const NatsAuthSchema = Type.Object({
  natsCreds: Type.String({
    default: '',
    description: 'NATS credentials file (user JWT and nkey seed, as `switchyard site add` writes them)',
  }),
  natsNkeySeed: Type.String({ default: '', secret: true, description: 'NATS nkey seed (SU…)' }),
  natsUser: Type.String({ default: '', description: 'NATS user name (with natsPassword)' }),
  natsPassword: Type.String({ default: '', secret: true, description: 'NATS password' }),
  natsCa: Type.String({
    default: '',
    description: "CA file that signed the NATS server's certificate (turns TLS on)",
  }),
  natsCert: Type.String({ default: '', description: 'Client certificate for mutual TLS (PEM)' }),
  natsKey: Type.String({ default: '', description: "Client certificate's key (PEM)" }),
});
export type NatsAuth = Static<typeof NatsAuthSchema>;

/** No credentials and no TLS: what a process gets when it sets none of NatsAuthSchema. */
export const NO_NATS_AUTH: Readonly<NatsAuth> = {
  natsCreds: '',
  natsNkeySeed: '',
  natsUser: '',
  natsPassword: '',
  natsCa: '',
  natsCert: '',
  natsKey: '',
};

/** The NATS settings of `config` (any object with NatsAuthSchema's keys), without the rest. */
export function natsAuthOf(config: Partial<NatsAuth>): NatsAuth {
  const out = { ...NO_NATS_AUTH };
  for (const key of Object.keys(out) as (keyof NatsAuth)[]) out[key] = config[key] ?? '';
  return out;
}

/**
 * Why a connection with `auth` to `url` is not secure: no credentials (anonymous), or plain text to
 * another machine. Empty when it is.
 */
export function natsInsecurities(url: string, auth: NatsAuth): string[] {
  const out: string[] = [];
  if (!auth.natsCreds && !auth.natsNkeySeed && !(auth.natsUser && auth.natsPassword))
    out.push(
      'NATS: no credentials (set SWITCHYARD_NATS_CREDS, SWITCHYARD_NATS_NKEY_SEED or SWITCHYARD_NATS_USER and _PASSWORD)',
    );
  for (const server of url.split(',').map((s) => s.trim()))
    if (!auth.natsCa && !server.startsWith('tls://') && !isLoopbackUrl(server))
      out.push(`NATS: ${server} is plain text to another machine (set SWITCHYARD_NATS_CA or use tls://)`);
  return out;
}

/** nats.js connection options for `auth`: its authenticator and TLS settings. */
export function natsAuthOptions(auth: NatsAuth): Partial<ConnectionOptions> {
  const out: Partial<ConnectionOptions> = {};
  // Read on every (re)connect, so that rotated credentials are picked up without a restart.
  if (auth.natsCreds) out.authenticator = credsAuthenticator(() => readFileSync(auth.natsCreds));
  else if (auth.natsNkeySeed)
    out.authenticator = nkeyAuthenticator(new TextEncoder().encode(auth.natsNkeySeed));
  else if (auth.natsUser) Object.assign(out, { user: auth.natsUser, pass: auth.natsPassword });
  if (auth.natsCa || auth.natsCert)
    out.tls = {
      ...(auth.natsCa ? { caFile: auth.natsCa } : {}),
      ...(auth.natsCert ? { certFile: auth.natsCert, keyFile: auth.natsKey } : {}),
    };
  return out;
}

export interface NatsOptions {
  /** One or more server URLs, comma-separated. */
  url: string;
  /** Credentials and TLS (none by default). */
  auth?: NatsAuth;
  /** Connection name shown in the server's monitor (`/connz`). */
  name: string;
  /** Give up the first connection after this long (ms); reconnects after that are unbounded. */
  connectTimeoutMs?: number;
  /**
   * Services (true) keep trying to make the first connection, so they outlive a server that starts
   * after them; one-shot commands (false) fail at once with a clear error.
   */
  waitForServer?: boolean;
  /**
   * Calls off the wait for the first connection (the promise rejects with its reason). Default:
   * the stop signal of the service starting (lib/start-context.ts), if any.
   */
  signal?: AbortSignal;
  /** Where the wait says it cannot reach the server. Default: the starting service's logger. */
  log?: Logger;
}

/** Pause between two attempts at a first connection (ms). */
const FIRST_CONNECT_RETRY_MS = 1_000;

/**
 * Connects and keeps reconnecting forever: a service outlives any outage of its server, and reports
 * the outage through `/readyz` rather than by exiting. The first connection is tried here, not by
 * nats.js's own wait (which cannot be called off and says nothing): it stops on `signal` and logs
 * that the server cannot be reached. Refused credentials fail at once: retrying cannot fix them.
 */
export async function connectNats(options: NatsOptions): Promise<NatsConnection> {
  const servers = options.url.split(',').map((s) => s.trim());
  const context = startContext();
  const signal = options.signal ?? context?.signal;
  const log = options.log ?? context?.log;
  const unreachable = unreachableReporter(log, `NATS at ${servers.map(withoutUserInfo).join(',')}`);
  // Read once (a creds or key file), not on every attempt.
  const auth = natsAuthOptions(options.auth ?? NO_NATS_AUTH);
  for (let attempt = 1; ; attempt++) {
    signal?.throwIfAborted();
    try {
      const nc = await connect({
        servers,
        name: options.name,
        timeout: options.connectTimeoutMs ?? 10_000,
        maxReconnectAttempts: -1,
        reconnectTimeWait: 500,
        waitOnFirstConnect: false,
        pingInterval: 10_000,
        ...auth,
        // Outbound bytes buffered before a write is forced (nats.js's hidden option, 32 KiB by
        // default): at tens of thousands of small messages a second, fewer and larger socket writes.
        ...({ pendingLimit: 256 * 1024 } as object),
      });
      if (signal?.aborted) {
        await nc.close().catch(() => undefined);
        signal.throwIfAborted();
      }
      if (attempt > 1) log?.info({ attempt }, `reached NATS at ${nc.getServer()}`);
      return nc;
    } catch (err) {
      if (signal?.aborted) signal.throwIfAborted();
      if (!(options.waitForServer ?? true) || err instanceof AuthorizationError) throw err;
      unreachable(attempt, err);
      await sleep(FIRST_CONNECT_RETRY_MS, signal);
    }
  }
}

/** A server URL without the user and password it may carry, for logs. */
function withoutUserInfo(url: string): string {
  return url.replace(/\/\/[^/@]*@/, '//');
}

/**
 * JetStream API error codes that nats.js's `JetStreamApiCodes` does not name (nats-server's
 * errors.json).
 */
export const NatsServerErrorCode = {
  /** JSStreamStoreFailedF: the stream could not store a message (e.g. full, with discard new). */
  streamStoreFailed: 10077,
  /** JSStreamReplicasNotSupportedErr: replicas > 1 on a server that is not clustered. */
  replicasNotSupported: 10074,
  /** JSInsufficientResourcesErr. */
  insufficientResources: 10023,
  /** JSStorageResourcesExceededErr: the account's storage limit would be exceeded. */
  accountStorageExceeded: 10028,
  /** JSStreamStoreExceeded…: insufficient storage resources available (the server's max_file_store). */
  storageResourcesExceeded: 10047,
} as const;

/** A stream asked for more than one replica on a server that is not clustered. */
export class ReplicasNotSupportedError extends Error {
  override name = 'ReplicasNotSupportedError';
}

/**
 * Runs a stream create or update asking for `replicas`. A single server refuses replicas above 1
 * with an error that does not say which setting to change; this names it.
 */
export async function withReplicaHint<T>(
  stream: string,
  setting: string,
  replicas: number,
  work: Promise<T>,
): Promise<T> {
  try {
    return await work;
  } catch (err) {
    if (
      replicas > 1 &&
      err instanceof JetStreamApiError &&
      err.code === NatsServerErrorCode.replicasNotSupported
    )
      throw new ReplicasNotSupportedError(
        `${stream} with ${replicas} replicas needs a clustered hub (JetStream cluster): set ${setting} to 1 on a single server`,
        { cause: err },
      );
    throw err;
  }
}

/** JetStream's "stream not found". */
export const isStreamNotFound = (err: unknown): boolean =>
  err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound;

/** The parts of nats.js's message classes that hold the raw header block (not public API). */
interface RawMsg {
  msg?: { _rdata?: unknown; _msg?: { hdr?: unknown } };
}

/**
 * The headers of a received message, the first value of each, as sent (keys not canonicalized).
 *
 * nats.js decodes headers into a MsgHdrs (validating and canonicalizing every key), which costs a
 * consumer more than everything else it does with a message. This reads the raw header block
 * (`NATS/1.0\r\nKey: value\r\n…`) instead when the client's message object has the shape it
 * expects, and falls back to `msg.headers` when it does not (another client version).
 */
export function firstHeaderValues(msg: JsMsg): Record<string, string> {
  const out: Record<string, string> = {};
  const inner = (msg as unknown as RawMsg).msg;
  const data = inner?._rdata;
  const length = inner?._msg?.hdr;
  if (data instanceof Uint8Array && typeof length === 'number') {
    if (length <= 0) return out;
    const block = Buffer.from(data.buffer, data.byteOffset, length).toString('utf8');
    let start = block.indexOf('\r\n') + 2;
    while (start > 1 && start < block.length) {
      let end = block.indexOf('\r\n', start);
      if (end === -1) end = block.length;
      const colon = block.indexOf(':', start);
      if (colon > start && colon < end) {
        const key = block.slice(start, colon);
        if (!Object.hasOwn(out, key)) out[key] = block.slice(colon + 1, end).trim();
      }
      start = end + 2;
    }
    return out;
  }
  if (msg.headers) for (const [key, values] of msg.headers) if (values[0] !== undefined) out[key] = values[0];
  return out;
}

/** Size of a received message's header block in bytes (0 without headers). */
export function headerBytes(msg: JsMsg): number {
  const length = (msg as unknown as RawMsg).msg?._msg?.hdr;
  if (typeof length === 'number') return Math.max(0, length);
  let bytes = 0;
  if (msg.headers)
    for (const [key, values] of msg.headers) bytes += key.length + (values[0]?.length ?? 0) + 4;
  return bytes;
}

/**
 * Message headers, encoded once in NATS's wire format (`NATS/1.0\r\nKey: value\r\n…\r\n`), for
 * publishing through `nc.publish(…, { headers })`.
 *
 * A MsgHdrs built with `headers()` validates and canonicalizes every key on each `set` and encodes
 * them all again on each publish: for the edge bridge, which sets six or seven headers on every
 * message, that was a tenth of its CPU. nats.js's publish only calls `encode()` on the headers it is
 * given, so this provides just that. Keys are used as given; a line break in a value (which the wire
 * format cannot carry) becomes a space.
 */
export function wireHeaders(entries: readonly (readonly [string, string])[]): MsgHdrs {
  let text = 'NATS/1.0\r\n';
  for (const [key, value] of entries) text += `${key}: ${headerValue(value)}\r\n`;
  return encodedHeaders(Buffer.from(`${text}\r\n`));
}

/** A header value as wireHeaders writes it: a line break becomes a space. */
export const headerValue = (value: string): string =>
  LINE_BREAK.test(value) ? value.replace(LINE_BREAKS, ' ') : value;

/** Headers already encoded in NATS's wire format (a whole block, as wireHeaders makes). */
export const encodedHeaders = (bytes: Uint8Array): MsgHdrs => new EncodedHeaders(bytes) as unknown as MsgHdrs;

/** All of MsgHdrs that nats.js's publish uses. */
class EncodedHeaders {
  constructor(private readonly bytes: Uint8Array) {}

  encode(): Uint8Array {
    return this.bytes;
  }
}

const LINE_BREAK = /[\r\n]/;
const LINE_BREAKS = /[\r\n]/g;
