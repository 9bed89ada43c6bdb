/**
 * `influx1`: InfluxDB 1.x's own write API (`POST /write?db=&precision=ms`), the old engine of an
 * engine swap, through Node's fetch. Credentials, when set, go as HTTP basic auth.
 */
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import type { Logger } from '../../lib/log.ts';
import { InfluxHttpError, serverReason } from './errors.ts';
import { retryAfterOf } from '../../lib/retry-after.ts';
import {
  DEFAULT_INFLUX_SINK_OPTIONS,
  InfluxSink,
  type InfluxEngine,
  type InfluxSinkOptions,
} from './sink.ts';

const gzipAsync = promisify(gzip);

export interface Influx1Settings {
  /** Base URL, e.g. `http://127.0.0.1:8086`. */
  url: string;
  database: string;
  /** Optional retention policy; the database's default when omitted. */
  retentionPolicy?: string;
  username?: string;
  password?: string;
  /** Timeout of one request, ms. */
  requestTimeoutMs: number;
  /** Gzip request bodies larger than this many bytes; `Infinity` never. */
  gzipMinBytes: number;
}

export class Influx1Engine implements InfluxEngine {
  readonly name = 'influx1';
  readonly target: string;
  private readonly writeUrl: string;
  private readonly headers: Record<string, string>;

  constructor(private readonly settings: Influx1Settings) {
    const base = settings.url.replace(/\/+$/, '');
    this.target = `${base} db=${settings.database}`;
    const query = new URLSearchParams({ db: settings.database, precision: 'ms' });
    if (settings.retentionPolicy) query.set('rp', settings.retentionPolicy);
    this.writeUrl = `${base}/write?${query}`;
    this.headers = { 'content-type': 'text/plain; charset=utf-8' };
    if (settings.username !== undefined && settings.username !== '') {
      const credentials = `${settings.username}:${settings.password ?? ''}`;
      this.headers.authorization = `Basic ${Buffer.from(credentials).toString('base64')}`;
    }
  }

  async writeLines(body: string, signal: AbortSignal): Promise<void> {
    const bytes = Buffer.from(body, 'utf8');
    const zipped = bytes.length > this.settings.gzipMinBytes;
    const res = await fetch(this.writeUrl, {
      method: 'POST',
      headers: zipped ? { ...this.headers, 'content-encoding': 'gzip' } : this.headers,
      body: zipped ? await gzipAsync(bytes) : bytes,
      signal: AbortSignal.any([signal, AbortSignal.timeout(this.settings.requestTimeoutMs)]),
    });
    const text = await res.text();
    if (!res.ok)
      throw new InfluxHttpError(res.status, serverReason(text), { retryAfterMs: retryAfterOf(res.headers) });
  }

  /**
   * `GET /ping`, then an empty write: 1.x answers it 204 only if the database exists and the
   * credentials may write to it (404 database not found, 401/403 otherwise).
   */
  async probe(signal: AbortSignal): Promise<void> {
    const ping = await fetch(`${this.settings.url.replace(/\/+$/, '')}/ping`, { signal });
    await ping.arrayBuffer();
    if (!ping.ok) throw new InfluxHttpError(ping.status, `ping: ${ping.statusText}`);
    await this.writeLines('', signal);
  }

  async close(): Promise<void> {
    // fetch's connections belong to the process-wide pool and close themselves when idle.
  }
}

/** The `influx1` sink. */
export function createInflux1Sink(
  settings: Influx1Settings,
  log: Logger,
  options: Partial<Omit<InfluxSinkOptions, 'log'>> = {},
): InfluxSink {
  return new InfluxSink(new Influx1Engine(settings), { ...DEFAULT_INFLUX_SINK_OPTIONS, ...options, log });
}
