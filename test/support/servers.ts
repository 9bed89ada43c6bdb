/**
 * Real servers owned by one test file or one benchmark suite: each gets free loopback ports and a
 * fresh temp directory, and `stopAll()` (call it from `after`) stops exactly what was started
 * here, by PID.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, isRunning } from '../../lib/process.ts';
import { mosquittoSpec } from '../../stack/mosquitto.ts';
import {
  influxdbSpec,
  linkSpec,
  natsSpec,
  redisSpec,
  s3rverSpec,
  ServerRole,
  victoriaMetricsSpec,
  type ServerSpec,
} from '../../stack/server-specs.ts';
import { startServer, stopServer, type RunningServer } from '../../stack/server-process.ts';
import { LOCAL_STACK } from '../../stack/env-vars.ts';
import { waitUntil } from '../../lib/timers.ts';
import type { S3Settings } from '../../cloud/archive/s3.ts';

export class TestServers {
  readonly dir: string;
  readonly running: RunningServer[] = [];
  private counter = 0;

  constructor(label: string) {
    this.dir = mkdtempSync(join(tmpdir(), `switchyard-${label}-`));
    // If the test process exits before `after` runs (a runner timeout), take the servers with it.
    // A killed test process runs no handler: the servers then die of their parent-death signal
    // (startServer, not detached).
    process.once('exit', () => {
      for (const s of this.running) {
        try {
          if (isRunning(s)) process.kill(s.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    });
  }

  private sub(name: string): string {
    return join(this.dir, `${name}-${++this.counter}`);
  }

  async start(spec: ServerSpec): Promise<RunningServer> {
    const server = await startServer(spec, { detached: false });
    this.running.push(server);
    return server;
  }

  /** Starts a server again from its spec (same port, same data). */
  async restart(server: RunningServer): Promise<RunningServer> {
    const index = this.running.indexOf(server);
    const again = await startServer(server, { detached: false });
    if (index >= 0) this.running[index] = again;
    else this.running.push(again);
    return again;
  }

  /** A standalone nats-server with JetStream (domain `hub` unless given). */
  async nats(
    options: {
      domain?: string;
      mqtt?: boolean;
      leafListen?: boolean;
      maxFileStoreBytes?: number;
      maxPayloadBytes?: number;
    } = {},
  ) {
    const [port, monitorPort] = [await freePort(), await freePort()];
    return this.start(
      natsSpec({
        name: `nats-${this.counter + 1}`,
        role: ServerRole.hubNats,
        dir: this.sub('nats'),
        port,
        monitorPort,
        domain: options.domain ?? 'hub',
        ...(options.leafListen ? { leafListenPort: await freePort() } : {}),
        ...(options.mqtt ? { mqttPort: await freePort() } : {}),
        ...(options.maxFileStoreBytes ? { maxFileStoreBytes: options.maxFileStoreBytes } : {}),
        ...(options.maxPayloadBytes ? { maxPayloadBytes: options.maxPayloadBytes } : {}),
      }),
    );
  }

  /**
   * A hub with a leaf listener and one site nats-server connected to it through a cuttable link.
   * `hubLeafPort` lets further sites join the same hub.
   */
  async hubAndSite(site = 'site-1', existingHub?: { hub: RunningServer; hubLeafPort: number }) {
    let hub = existingHub?.hub;
    let hubLeafPort = existingHub?.hubLeafPort;
    if (!hub || hubLeafPort === undefined) {
      hubLeafPort = await freePort();
      hub = await this.start(
        natsSpec({
          name: 'hub',
          role: ServerRole.hubNats,
          dir: this.sub('hub'),
          port: await freePort(),
          monitorPort: await freePort(),
          domain: 'hub',
          leafListenPort: hubLeafPort,
        }),
      );
    }
    const linkPort = await freePort();
    const link = await this.start(
      linkSpec({
        name: `link-${site}`,
        site,
        dir: this.sub(`link-${site}`),
        port: linkPort,
        target: `127.0.0.1:${hubLeafPort}`,
      }),
    );
    const siteNats = await this.start(
      natsSpec({
        name: site,
        role: ServerRole.siteNats,
        site,
        dir: this.sub(site),
        port: await freePort(),
        monitorPort: await freePort(),
        domain: site,
        leafRemoteUrl: `nats-leaf://127.0.0.1:${linkPort}`,
      }),
    );
    return { hub, hubLeafPort, link, site: siteNats };
  }

  /**
   * A mosquitto broker; anonymous unless `auth` (then with the stack's password file and per-device
   * ACL: stack/mosquitto.ts).
   */
  async mosquitto(options: { auth?: boolean } = {}) {
    return this.start(
      mosquittoSpec({
        name: 'mosquitto',
        dir: this.sub('mosquitto'),
        port: await freePort(),
        auth: options.auth ?? false,
      }),
    );
  }

  async redis() {
    return this.start(redisSpec({ name: 'redis', dir: this.sub('redis'), port: await freePort() }));
  }

  async victoriaMetrics() {
    return this.start(
      victoriaMetricsSpec({ name: 'victoria-metrics', dir: this.sub('vm'), port: await freePort() }),
    );
  }

  /** InfluxDB 1.x with the database `switchyard` created. */
  async influxdb() {
    return this.start(
      influxdbSpec({
        name: 'influxdb',
        dir: this.sub('influxdb'),
        port: await freePort(),
        rpcPort: await freePort(),
      }),
    );
  }

  async s3(buckets: string[] = ['switchyard']) {
    return this.start(s3rverSpec({ name: 's3', dir: this.sub('s3'), port: await freePort(), buckets }));
  }

  /** Stops every server started here (SIGTERM, then SIGKILL) and removes the temp directory. */
  async stopAll(): Promise<void> {
    await Promise.all(this.running.map((s) => stopServer(s, 5000)));
    this.running.length = 0;
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** How a client reaches a test s3rver: the local stack's keys and region, path-style URLs. */
export const s3rverSettings = (server: { url: string }): S3Settings => ({
  s3Endpoint: server.url,
  s3Region: LOCAL_STACK.s3Region,
  s3AccessKeyId: LOCAL_STACK.s3AccessKeyId,
  s3SecretAccessKey: LOCAL_STACK.s3SecretAccessKey,
  s3ForcePathStyle: true,
});

/** Resolves once `check` returns a truthy value; rejects after `timeoutMs` with `what`. */
export const waitFor = <T>(
  what: string,
  check: () => T | Promise<T>,
  timeoutMs = 20_000,
  everyMs = 100,
): Promise<NonNullable<T>> => waitUntil(what, check, { timeoutMs, everyMs });
