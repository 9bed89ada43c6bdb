/**
 * Every long-running command ends when it should, as real processes of the CLI against real
 * servers: started against an unreachable NATS it says so and exits 0 soon after SIGTERM; against
 * a reachable NATS but a dead store it either says so and stops on SIGTERM, or fails at once with
 * one line; running normally, SIGTERM stops it cleanly within its grace.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { jetstreamManager } from '@nats-io/jetstream';
import { addSite } from '../cloud/hub-stream.ts';
import { freePort } from '../lib/process.ts';
import type { RunningServer } from '../stack/server-process.ts';
import { natsConnect } from './support/jetstream.ts';
import { startSwitchyard, type SwitchyardProcess } from './support/process.ts';
import { TestServers, waitFor } from './support/servers.ts';

const COMMANDS = ['edge', 'archive', 'monitor', 'ingest', 'console'] as const;
type CommandName = (typeof COMMANDS)[number];

/** How long a command may take to exit after SIGTERM, or to fail a start on its own (ms). */
const EXIT_WITHIN_MS = 10_000;
/** Start-up of a tsx process on a busy 2-core machine, before it can say anything (ms). */
const START_WITHIN_MS = 60_000;

/** Where each command finds its servers: NATS and its store(s). */
interface Endpoints {
  natsUrl: string;
  /** The edge's own (site) NATS: its stream budgets are not the hub's to share. */
  siteNatsUrl: string;
  mqttUrl: string;
  s3Url: string;
  redisUrl: string;
  influxUrl: string;
}

/** The environment of `command` against `endpoints`, with its own ops port. */
function commandEnv(command: CommandName, e: Endpoints, opsPort: number): Record<string, string> {
  const common = { SWITCHYARD_NATS_URL: e.natsUrl, SWITCHYARD_OPS_PORT: String(opsPort) };
  switch (command) {
    case 'edge':
      return {
        ...common,
        SWITCHYARD_NATS_URL: e.siteNatsUrl,
        SWITCHYARD_SITE: 'site-1',
        SWITCHYARD_GATEWAY: 'gw-1',
        SWITCHYARD_MQTT_URL: e.mqttUrl,
      };
    case 'archive':
      return {
        ...common,
        SWITCHYARD_S3_ENDPOINT: e.s3Url,
        SWITCHYARD_S3_ACCESS_KEY_ID: 'S3RVER',
        SWITCHYARD_S3_SECRET_ACCESS_KEY: 'S3RVER',
        SWITCHYARD_S3_FORCE_PATH_STYLE: 'true',
      };
    case 'monitor':
      return { ...common, SWITCHYARD_REDIS_URL: e.redisUrl };
    case 'ingest':
      return {
        ...common,
        SWITCHYARD_SINK: 'influx2',
        SWITCHYARD_INFLUX2_URL: e.influxUrl,
        SWITCHYARD_INFLUX2_TOKEN: 'local',
      };
    case 'console':
      return { ...common, SWITCHYARD_REDIS_URL: e.redisUrl };
  }
}

interface Started {
  command: CommandName;
  process: SwitchyardProcess;
  opsUrl: string;
}

async function start(command: CommandName, endpoints: Endpoints): Promise<Started> {
  const opsPort = await freePort();
  const env = commandEnv(command, endpoints, opsPort);
  const args = command === 'console' ? ['console', '--port', '0'] : [command];
  return { command, process: startSwitchyard(args, env), opsUrl: `http://127.0.0.1:${opsPort}` };
}

/** Sends SIGTERM and returns the exit code and how long the exit took (ms). */
async function terminate(p: SwitchyardProcess): Promise<{ code: number | string; ms: number }> {
  const t0 = performance.now();
  const code = await p.stop('SIGTERM');
  return { code, ms: performance.now() - t0 };
}

/** Waits for a log line matching `pattern`; fails with the output if the process exits first. */
async function waitForLine(s: Started, what: string, pattern: RegExp): Promise<string> {
  return waitFor(
    `${s.command}: ${what}`,
    () => {
      const line = s.process
        .output()
        .split('\n')
        .find((l) => pattern.test(l));
      if (line) return line;
      if (s.process.child.exitCode !== null)
        throw new Error(`${s.command} exited ${s.process.child.exitCode}:\n${s.process.output()}`);
      return undefined;
    },
    START_WITHIN_MS,
    100,
  );
}

const servers = new TestServers('lifecycle');
const running: Started[] = [];
let nats: RunningServer;
let real: Endpoints;
/** Endpoints where nothing listens. */
let dead: Endpoints;

before(async () => {
  const [n, site, mosquitto, s3, redis, vm] = await Promise.all([
    servers.nats({ domain: 'hub' }),
    servers.nats({ domain: 'site-1' }),
    servers.mosquitto(),
    servers.s3(),
    servers.redis(),
    servers.victoriaMetrics(),
  ]);
  nats = n;
  real = {
    natsUrl: n.url,
    siteNatsUrl: site.url,
    mqttUrl: mosquitto.url,
    s3Url: s3.url,
    redisUrl: redis.url,
    influxUrl: vm.url,
  };
  const ports = await Promise.all(Array.from({ length: 5 }, () => freePort()));
  dead = {
    natsUrl: `nats://127.0.0.1:${ports[0]}`,
    siteNatsUrl: `nats://127.0.0.1:${ports[0]}`,
    mqttUrl: `mqtt://127.0.0.1:${ports[1]}`,
    s3Url: `http://127.0.0.1:${ports[2]}`,
    redisUrl: `redis://127.0.0.1:${ports[3]}`,
    influxUrl: `http://127.0.0.1:${ports[4]}`,
  };
  const nc = await natsConnect(nats.url);
  await addSite(await jetstreamManager(nc), 'site-1', {
    hubMaxAgeS: 3600,
    hubMaxBytes: -1,
    hubDuplicateWindowS: 900,
  });
  await nc.close();
});

after(async () => {
  await Promise.all(running.map((s) => s.process.stop('SIGKILL')));
  await servers.stopAll();
});

describe('lifecycle of every long-running command', () => {
  test('unreachable NATS: each says so, and exits 0 soon after SIGTERM', async () => {
    const started = await Promise.all(COMMANDS.map((c) => start(c, dead)));
    running.push(...started);
    const natsPort = new URL(dead.natsUrl).port;
    await Promise.all(
      started.map(async (s) => {
        const line = await waitForLine(s, 'cannot reach NATS', /cannot reach NATS/);
        assert.match(line, new RegExp(`127\\.0\\.0\\.1:${natsPort}`), `${s.command} names the server`);
        const { code, ms } = await terminate(s.process);
        console.log(`${s.command}: unreachable NATS, exit ${code} ${Math.round(ms)} ms after SIGTERM`);
        assert.equal(code, 0, `${s.command} exit code:\n${s.process.output()}`);
        assert.ok(ms < EXIT_WITHIN_MS, `${s.command} took ${ms} ms to exit`);
      }),
    );
  });

  test('NATS up, store down: each fails at once with one line, or says so and stops on SIGTERM', async () => {
    const started = await Promise.all(
      COMMANDS.map((c) => start(c, { ...dead, natsUrl: real.natsUrl, siteNatsUrl: real.siteNatsUrl })),
    );
    running.push(...started);
    await Promise.all(
      started.map(async (s) => {
        // The line that names the store's address, in a warning or an error.
        const storePort = new URL(storeUrl(s.command, dead)).port;
        const line = await waitForLine(
          s,
          'the dead store named',
          new RegExp(`"level":"(warn|error)".*127\\.0\\.0\\.1:${storePort}`),
        );
        if (s.command === 'edge') {
          // Its broker is needed to start at all: a failed start, one error line, exit 1.
          const t0 = performance.now();
          const code = await Promise.race([
            s.process.exited,
            new Promise<string>((resolve) => setTimeout(() => resolve('still running'), EXIT_WITHIN_MS)),
          ]);
          console.log(
            `edge: dead broker, exit ${code} ${Math.round(performance.now() - t0)} ms after its line`,
          );
          assert.equal(code, 1, s.process.output());
          const errors = s.process
            .output()
            .split('\n')
            .filter((l) => l.includes('"level":"error"'));
          assert.equal(errors.length, 1, `one error line:\n${s.process.output()}`);
          assert.match(errors[0]!, /cannot start: /);
          assert.doesNotMatch(errors[0]!, /\n\s+at /, 'no stack trace');
          return;
        }
        // Still waiting for its store when told to stop: SIGTERM, not a failure, ends it (exit 0).
        assert.equal(s.process.child.exitCode, null, `${s.command} keeps waiting for its store: ${line}`);
        const { code, ms } = await terminate(s.process);
        console.log(`${s.command}: dead store, exit ${code} ${Math.round(ms)} ms after SIGTERM`);
        assert.equal(code, 0, `${s.command} exit code:\n${s.process.output()}`);
        assert.ok(ms < EXIT_WITHIN_MS, `${s.command} took ${ms} ms to exit`);
      }),
    );
  });

  test('running normally: SIGTERM stops each cleanly within its grace', async () => {
    const started = await Promise.all(COMMANDS.map((c) => start(c, real)));
    running.push(...started);
    await Promise.all(
      started.map(async (s) => {
        await waitFor(
          `${s.command} ready`,
          async () => {
            if (s.process.child.exitCode !== null)
              throw new Error(`${s.command} exited:\n${s.process.output()}`);
            const res = await fetch(`${s.opsUrl}/readyz`);
            // Thrown, so that a timeout names the last reasons.
            if (!res.ok) throw new Error(`not ready: ${await res.text()}`);
            return true;
          },
          START_WITHIN_MS,
          200,
        );
        const { code, ms } = await terminate(s.process);
        console.log(`${s.command}: running, exit ${code} ${Math.round(ms)} ms after SIGTERM`);
        assert.equal(code, 0, `${s.command} exit code:\n${s.process.output()}`);
        assert.ok(ms < EXIT_WITHIN_MS, `${s.command} took ${ms} ms to exit`);
        assert.match(s.process.output(), /"msg":"stopped cleanly"/);
      }),
    );
  });
});

const FIXTURE = fileURLToPath(new URL('./support/service-fixture.ts', import.meta.url));

/** The fixture service in `mode`, once it logged `ready` (a line matching it). */
async function startFixture(mode: string, ready: RegExp): Promise<Started> {
  const s: Started = {
    command: mode as CommandName,
    process: startSwitchyard([mode], {}, { entry: FIXTURE, nodeOptions: ['--import', 'tsx'] }),
    opsUrl: '',
  };
  running.push(s);
  await waitForLine(s, String(ready), ready);
  return s;
}

describe('a service ends its process whatever it leaves open', () => {
  test('a start that fails: one error line, exit 1 at once', async () => {
    const s = await startFixture('start-fails', /cannot start/);
    const code = await s.process.exited;
    const errors = s.process
      .output()
      .split('\n')
      .filter((l) => l.includes('"level":"error"'));
    assert.equal(code, 1, s.process.output());
    assert.equal(errors.length, 1, s.process.output());
    assert.match(
      errors[0]!,
      /"msg":"cannot start: cannot reach the store at 127\.0\.0\.1:9: connection refused"/,
    );
    assert.doesNotMatch(s.process.output(), /\n\s+at /, 'no stack trace');
  });

  test('a start that never ends: SIGTERM exits 0', async () => {
    const s = await startFixture('start-hangs', /ops endpoint listening/);
    const { code, ms } = await terminate(s.process);
    console.log(`start-hangs: exit ${code} ${Math.round(ms)} ms after SIGTERM`);
    assert.equal(code, 0, s.process.output());
    assert.ok(ms < EXIT_WITHIN_MS, `took ${ms} ms`);
    assert.match(s.process.output(), /"msg":"stopped while starting"/);
  });

  test('a stop that never ends: exit 1 after its grace', async () => {
    const s = await startFixture('stop-hangs', /"msg":"started"/);
    const { code, ms } = await terminate(s.process);
    console.log(`stop-hangs: exit ${code} ${Math.round(ms)} ms after SIGTERM (grace 500 ms)`);
    assert.equal(code, 1, s.process.output());
    assert.ok(ms >= 500 && ms < EXIT_WITHIN_MS, `took ${ms} ms`);
    assert.match(s.process.output(), /stop did not finish within 500 ms/);
  });
});

/** The store `command` cannot start or work without. */
function storeUrl(command: CommandName, e: Endpoints): string {
  switch (command) {
    case 'edge':
      return e.mqttUrl;
    case 'archive':
      return e.s3Url;
    case 'monitor':
    case 'console':
      return e.redisUrl;
    case 'ingest':
      return e.influxUrl;
  }
}
