/**
 * The operations endpoint every long-running command serves: `/metrics` (Prometheus text),
 * `/healthz` (the process is alive and its loop turns) and `/readyz` (its dependencies answer).
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { collectDefaultMetrics, Registry } from 'prom-client';
import Type from 'typebox';
import type { Logger } from './log.ts';

/** What `/readyz` reports: ready, or the reasons why not. */
/** The settings every long-running command shares: its ops endpoint and log level. */
export function serviceProperties(defaultOpsPort: number, extraPortNote = '') {
  return {
    opsHost: Type.String({ default: '127.0.0.1', description: 'address of /metrics, /healthz, /readyz' }),
    opsPort: Type.Integer({
      minimum: 0,
      maximum: 65535,
      default: defaultOpsPort,
      description: `port of /metrics, /healthz, /readyz (0: any free port${extraPortNote})`,
    }),
    logLevel: Type.String({ default: 'info', description: 'log level (trace, debug, info, warn, error)' }),
  };
}

export interface Readiness {
  ready: boolean;
  reasons?: string[];
}

export interface OpsServerOptions {
  host: string;
  /** 0 picks a free port; the bound address is in `url`. */
  port: number;
  registry: Registry;
  readiness: () => Readiness | Promise<Readiness>;
  log: Logger;
}

export interface OpsServer {
  url: string;
  close(): Promise<void>;
}

/** A fresh metrics registry with Node's default process metrics, labelled with the service. */
export function createRegistry(service: string): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ service });
  collectDefaultMetrics({ register: registry });
  return registry;
}

export async function startOpsServer(options: OpsServerOptions): Promise<OpsServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const reply = (status: number, type: string, body: string): void => {
      res.writeHead(status, { 'content-type': type }).end(body);
    };
    const fail = (err: unknown): void => reply(500, 'text/plain', String(err));
    if (path === '/metrics') {
      options.registry.metrics().then((text) => reply(200, options.registry.contentType, text), fail);
    } else if (path === '/healthz') {
      reply(200, 'application/json', '{"status":"ok"}\n');
    } else if (path === '/readyz') {
      Promise.resolve(options.readiness()).then(
        (r) => reply(r.ready ? 200 : 503, 'application/json', `${JSON.stringify(r)}\n`),
        fail,
      );
    } else {
      reply(404, 'text/plain', 'not found: try /metrics, /healthz or /readyz\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://${options.host}:${port}`;
  options.log.info({ url }, 'ops endpoint listening');
  return {
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
