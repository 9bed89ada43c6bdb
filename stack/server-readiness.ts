/** Whether a server answers its own protocol: the probe `up`, `restart` and `status` use. */
import { connect } from 'node:net';
import { ServerRole, type ServerSpec } from './server-specs.ts';

function tcpOpen(url: string): Promise<boolean> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect({ host: hostname, port: Number(port) });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

async function httpOk(url: string, init?: RequestInit): Promise<Response | undefined> {
  try {
    const res = await fetch(url, { ...init, signal: AbortSignal.timeout(2000) });
    return res;
  } catch {
    return undefined;
  }
}

/** The number of leaf connections a nats-server's monitor reports. */
export async function leafCount(monitorUrl: string): Promise<number> {
  const res = await httpOk(`${monitorUrl}/leafz`);
  if (!res?.ok) return -1;
  const body = (await res.json()) as { leafnodes?: number };
  return body.leafnodes ?? 0;
}

/** Does the server answer its own protocol? */
export async function isReady(server: ServerSpec): Promise<boolean> {
  switch (server.role) {
    case ServerRole.hubNats:
    case ServerRole.siteNats: {
      const res = await httpOk(`${server.monitorUrl}/healthz?js-enabled=true`);
      if (!res?.ok) return false;
      return server.waitForLeaf ? (await leafCount(server.monitorUrl!)) > 0 : true;
    }
    case ServerRole.victoriaMetrics:
      return (await httpOk(`${server.url}/health`))?.ok ?? false;
    case ServerRole.influxdb: {
      if ((await httpOk(`${server.url}/ping`))?.status !== 204) return false;
      const res = await httpOk(`${server.url}/query`, {
        method: 'POST',
        body: new URLSearchParams({ q: 'CREATE DATABASE switchyard' }),
      });
      return res?.ok ?? false;
    }
    case ServerRole.s3:
      return (await httpOk(server.url)) !== undefined;
    case ServerRole.redis:
    case ServerRole.siteMqtt:
    case ServerRole.link:
      return tcpOpen(server.url.replace(/^\w+:/, 'tcp:'));
  }
}
