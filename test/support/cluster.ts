/**
 * A hub that is a JetStream cluster: `size` nats-servers on loopback, each with its own store, the
 * hub's JetStream domain, and routes to the others. Built on the test's TestServers, so `stopAll()`
 * stops the nodes (by PID) like any other server.
 */
import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort } from '../../lib/process.ts';
import { natsSpec, ServerRole } from '../../stack/server-specs.ts';
import type { RunningServer } from '../../stack/server-process.ts';
import { HUB_DOMAIN } from '../../schemas/streams.ts';
import type { TestServers } from './servers.ts';

export interface HubCluster {
  /** The nodes, by server name (`hub-1` …); a restarted node replaces its entry. */
  nodes: Map<string, RunningServer>;
  /** Every node's client URL: what a client lists to survive the loss of one. */
  urls: string[];
}

export async function startHubCluster(servers: TestServers, size = 3, name = 'hub'): Promise<HubCluster> {
  const ports = await Promise.all(
    Array.from({ length: size }, async () => ({
      client: await freePort(),
      monitor: await freePort(),
      route: await freePort(),
    })),
  );
  const routes = ports.map((p) => `nats-route://127.0.0.1:${p.route}`);
  const specs = ports.map((p, i) => {
    const spec = natsSpec({
      name: `${name}-${i + 1}`,
      role: ServerRole.hubNats,
      dir: join(servers.dir, `${name}-${i + 1}`),
      port: p.client,
      monitorPort: p.monitor,
      domain: HUB_DOMAIN,
    });
    // natsSpec writes a standalone config; the cluster block turns it into a node of `name`.
    appendFileSync(
      spec.args[1]!,
      [
        `cluster {`,
        `  name: ${JSON.stringify(name)}`,
        `  listen: "127.0.0.1:${p.route}"`,
        `  routes: [${routes.map((r) => JSON.stringify(r)).join(', ')}]`,
        `}`,
        '',
      ].join('\n'),
    );
    return spec;
  });
  // A node is healthy only once the cluster has a JetStream leader: start them together.
  const started = await Promise.all(specs.map((spec) => servers.start(spec)));
  return { nodes: new Map(started.map((s) => [s.name, s])), urls: started.map((s) => s.url) };
}

/** What one node's own replica of `stream` holds (its monitor's /jsz, not the leader's answer). */
export async function replicaState(
  node: RunningServer,
  stream: string,
): Promise<{ messages: number; first_seq: number; last_seq: number } | undefined> {
  const res = await fetch(`${node.monitorUrl}/jsz?accounts=true&streams=true`).catch(() => undefined);
  if (!res?.ok) return undefined;
  const body = (await res.json()) as {
    account_details?: {
      stream_detail?: { name: string; state: { messages: number; first_seq: number; last_seq: number } }[];
    }[];
  };
  for (const account of body.account_details ?? [])
    for (const s of account.stream_detail ?? []) if (s.name === stream) return s.state;
  return undefined;
}
