/**
 * `influx2`: the InfluxDB v2 write API (`POST /api/v2/write?org=&bucket=&precision=ms`), spoken by
 * InfluxDB 2.x and 3.x and by VictoriaMetrics, through `@influxdata/influxdb-client`.
 *
 * The client's WriteApi is not used: it buffers, flushes on its own timer, retries on its own and
 * swallows the errors of the batches it flushes by itself, and it cannot be cancelled. Switchyard
 * has one retry layer (the runner) and a write that must resolve only once durable, so this engine
 * sends each request through the client's transport (`transport.request`), which does exactly one
 * HTTP request, honours an AbortSignal, and rejects with the server's status and body.
 */
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { HttpError, InfluxDB } from '@influxdata/influxdb-client';
import type { Logger } from '../../lib/log.ts';
import { InfluxHttpError, serverReason } from './errors.ts';
import { retryAfterOf } from '../../lib/retry-after.ts';
import {
  DEFAULT_INFLUX_SINK_OPTIONS,
  InfluxSink,
  type InfluxEngine,
  type InfluxSinkOptions,
} from './sink.ts';

export interface Influx2Settings {
  /** Base URL, e.g. `http://127.0.0.1:8428` (VictoriaMetrics) or `http://influxdb:8086`. */
  url: string;
  /** API token (`Authorization: Token …`); VictoriaMetrics ignores it. */
  token: string;
  org: string;
  bucket: string;
  /** Socket timeout of one request, ms. */
  requestTimeoutMs: number;
  /** Gzip request bodies larger than this many bytes; `Infinity` never. */
  gzipMinBytes: number;
}

const isHttpError = (err: unknown): err is HttpError => err instanceof HttpError;

/**
 * Wraps a client error so the shared classification sees the HTTP status and the `Retry-After`
 * (the client's own `retryAfter()` reads only delay-seconds); others pass through.
 */
function translate(err: unknown): unknown {
  if (!isHttpError(err)) return err;
  return new InfluxHttpError(err.statusCode, serverReason(err.body ?? err.message), {
    cause: err,
    retryAfterMs: retryAfterOf(err.headers),
  });
}

export class Influx2Engine implements InfluxEngine {
  readonly name = 'influx2';
  readonly target: string;
  private readonly agent: HttpAgent;
  private readonly client: InfluxDB;
  private readonly writePath: string;

  constructor(private readonly settings: Influx2Settings) {
    this.target = `${settings.url} org=${settings.org} bucket=${settings.bucket}`;
    // Our own agent, so close() can release its sockets.
    this.agent = settings.url.startsWith('https:')
      ? new HttpsAgent({ keepAlive: true, maxSockets: 4 })
      : new HttpAgent({ keepAlive: true, maxSockets: 4 });
    this.client = new InfluxDB({
      url: settings.url,
      token: settings.token,
      timeout: settings.requestTimeoutMs,
      transportOptions: { agent: this.agent },
    });
    const query = new URLSearchParams({ org: settings.org, bucket: settings.bucket, precision: 'ms' });
    this.writePath = `/api/v2/write?${query}`;
  }

  async writeLines(body: string, signal: AbortSignal): Promise<void> {
    try {
      await this.client.transport.request(this.writePath, body, {
        method: 'POST',
        headers: { 'content-type': 'text/plain; charset=utf-8' },
        gzipThreshold: this.settings.gzipMinBytes,
        signal,
      });
    } catch (err) {
      throw translate(err);
    }
  }

  /** `GET /health`: InfluxDB 2.x/3.x and VictoriaMetrics all serve it. */
  async probe(signal: AbortSignal): Promise<void> {
    try {
      await this.client.transport.request('/health', '', { method: 'GET', signal });
    } catch (err) {
      throw translate(err);
    }
  }

  async close(): Promise<void> {
    this.agent.destroy();
  }
}

/** The `influx2` sink. */
export function createInflux2Sink(
  settings: Influx2Settings,
  log: Logger,
  options: Partial<Omit<InfluxSinkOptions, 'log'>> = {},
): InfluxSink {
  return new InfluxSink(new Influx2Engine(settings), { ...DEFAULT_INFLUX_SINK_OPTIONS, ...options, log });
}
